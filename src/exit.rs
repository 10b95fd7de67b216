//! Exit codes: part of gitops-run's interface, documented in `docs/design.md`,
//! the man page and `--help`.

use std::fmt;

/// Why a pass ended. Each class maps to one documented exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Applied, nothing to do, or another pass holds the lock.
    Ok,
    /// An unexpected failure (I/O, checkout) not covered by a class below.
    Internal,
    /// Bad command line, environment or configuration file.
    Usage,
    /// The repository could not be fetched: unreachable, missing, no such branch, auth.
    Fetch,
    /// History was rewritten upstream (remote behind or diverged) and the pass refused it.
    Refused,
    /// The entrypoint ran and failed (non-zero exit, signal, timeout), or the commit
    /// is failing and waits for its next retry.
    EntrypointFailed,
    /// The entrypoint is missing, not executable, or resolves outside the tree.
    EntrypointInvalid,
    /// The state directory or state file is unsafe, corrupt or belongs to another repo.
    State,
    /// The reboot request is invalid, or the reboot command failed.
    Reboot,
    /// A commit the remote tip brings has no good signature by a trusted key: the
    /// tip was refused.
    Unverified,
    /// A commit failed its health check, and rolling back to the previous commit
    /// failed too: the host is in an unknown state.
    UnknownState,
    /// The pass was interrupted by SIGINT or SIGTERM.
    Interrupted,
    /// `plan` only: changes are pending (the convention of
    /// `terraform plan -detailed-exitcode`; a pass never exits with it).
    Pending,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Internal => 1,
            Exit::Usage => 2,
            Exit::Fetch => 3,
            Exit::Refused => 4,
            Exit::EntrypointFailed => 5,
            Exit::EntrypointInvalid => 6,
            Exit::State => 7,
            Exit::Reboot => 8,
            Exit::Unverified => 9,
            Exit::UnknownState => 10,
            Exit::Interrupted => 130,
            Exit::Pending => 2,
        }
    }
}

/// Text for `--help`, kept next to the codes so the two cannot drift apart.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0    all is well: applied, nothing to do, or another pass holds the lock
  1    internal error (I/O, checkout)
  2    usage error: bad option, environment variable or config file
  3    fetch failed: repository unreachable or missing, branch missing, auth
  4    refused: upstream history was rewritten (remote behind or diverged)
  5    entrypoint (or health check) failed, or the failing commit waits for its retry
  6    entrypoint missing, not executable, or outside the checked-out tree; or a --path missing
  7    state directory or state file unsafe, corrupt or foreign
  8    reboot request invalid, or the reboot command failed (when all else succeeded)
  9    unverified: a new commit has no good signature by a trusted key; nothing ran
  10   unknown state: a commit failed its health check and the rollback failed too
  130  interrupted by SIGINT or SIGTERM
`gitops-run plan` exits 0 when there is nothing to do, 2 when changes are pending,
and otherwise as a pass would (4 refused, 5 waiting for a retry, ...).";

/// An error that carries the exit class it should end the process with.
/// Attached with [`Classify::class`]; found again by [`class_of`].
#[derive(Debug)]
pub struct Classified(pub Exit);

impl fmt::Display for Classified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            Exit::Ok => "ok",
            Exit::Internal => "internal error",
            Exit::Usage => "usage error",
            Exit::Fetch => "fetch failed",
            Exit::Refused => "refused",
            Exit::EntrypointFailed => "entrypoint failed",
            Exit::EntrypointInvalid => "invalid entrypoint",
            Exit::State => "state error",
            Exit::Reboot => "reboot error",
            Exit::Unverified => "unverified commit",
            Exit::UnknownState => "unknown state",
            Exit::Interrupted => "interrupted",
            Exit::Pending => "changes pending",
        })
    }
}

impl std::error::Error for Classified {}

/// Attach an exit class to an error.
pub trait Classify<T> {
    fn class(self, exit: Exit) -> anyhow::Result<T>;
}

impl<T, E> Classify<T> for Result<T, E>
where
    E: Into<anyhow::Error>,
{
    fn class(self, exit: Exit) -> anyhow::Result<T> {
        self.map_err(|e| e.into().context(Classified(exit)))
    }
}

/// The exit class of an error: the outermost class attached, or `Internal`.
pub fn class_of(err: &anyhow::Error) -> Exit {
    // anyhow's downcast looks through every context layer, outermost first.
    err.downcast_ref::<Classified>()
        .map(|c| c.0)
        .unwrap_or(Exit::Internal)
}

/// Build a classified error from a message.
pub fn fail(exit: Exit, msg: impl fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{msg}").context(Classified(exit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_survives_added_context() {
        let err = fail(Exit::Fetch, "no route").context("while doing the pass");
        assert_eq!(class_of(&err), Exit::Fetch);
        let err: anyhow::Result<()> = Err(anyhow::anyhow!("disk")).class(Exit::State);
        assert_eq!(class_of(&err.unwrap_err()), Exit::State);
        assert_eq!(class_of(&anyhow::anyhow!("plain")), Exit::Internal);
    }

    #[test]
    fn codes_are_distinct_and_listed_in_help() {
        let all = [
            Exit::Ok,
            Exit::Internal,
            Exit::Usage,
            Exit::Fetch,
            Exit::Refused,
            Exit::EntrypointFailed,
            Exit::EntrypointInvalid,
            Exit::State,
            Exit::Reboot,
            Exit::UnknownState,
            Exit::Interrupted,
        ];
        let codes: std::collections::BTreeSet<u8> = all.iter().map(|e| e.code()).collect();
        assert_eq!(codes.len(), all.len());
        for c in codes {
            assert!(
                EXIT_CODES_HELP
                    .lines()
                    .any(|l| l.trim_start().starts_with(&format!("{c} "))),
                "{c} missing from help"
            );
        }
    }
}
