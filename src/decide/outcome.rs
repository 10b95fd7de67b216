//! From what a pass did to its exit code, its label in `state.json` and `status`,
//! and the deployment channel's notification signal: the one place that mapping
//! is written.

use serde::{Deserialize, Serialize};

use super::{Classification, Kind, Signal};
use crate::exit::Exit;

/// What the part of a pass from the fetch to the entrypoint ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The remote tip is deployed; nothing ran.
    UpToDate,
    /// The entrypoint of a new commit exited 0 and the commit is deployed.
    Applied,
    /// The entrypoint of `commit` failed (exit status, signal, timeout).
    Failed { commit: String },
    /// The pass was stopped by SIGINT/SIGTERM while the entrypoint of `commit` ran.
    Interrupted { commit: String },
    /// The entrypoint of `commit` is missing, not executable or outside the tree.
    InvalidEntrypoint { commit: String },
    /// A commit failed before (`after`: how) and waits for its retry (or, after a
    /// health rollback, for a newer commit). A wait is not a new failure: it keeps
    /// the exit code and the alert of the failure it waits after.
    Waiting { after: Box<Ended> },
    /// `commit` (the remote tip `tip`, or a commit before it) has no good
    /// signature by a trusted key (`reason`): the tip was refused.
    Unverified {
        tip: String,
        commit: String,
        reason: String,
    },
    /// Upstream history was rewritten and the pass refused to follow it.
    Refused {
        class: Classification,
        remote: String,
    },
    /// The host is frozen: the remote tip was not applied (`pending`: it differs
    /// from the deployed commit).
    Held { pending: bool },
    /// `commit` failed its health check; the previous commit's entrypoint ran again
    /// and the host is back on it (`None`: there was nothing to roll back to).
    Unhealthy {
        commit: String,
        rolled_back_to: Option<String>,
    },
    /// `commit` was unhealthy and the rollback to `to` failed: unknown state.
    RollbackFailed { commit: String, to: String },
    /// A reconcile run of the deployed commit succeeded, correcting `drift` things.
    Reconciled { commit: String, drift: usize },
    /// A reconcile run of the deployed commit failed (nothing else changed).
    ReconcileFailed { commit: String },
    /// A new commit waits for this host's `--soak`.
    Soaking { commit: String },
    /// A new commit changed nothing under this host's paths: recorded as deployed
    /// without running the entrypoint.
    Unchanged,
    /// An error of the given class ended the pass early.
    Error(Exit),
}

/// A pass's label: `last_pass.outcome` in `state.json` and `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Label {
    UpToDate,
    Applied,
    Failed,
    Interrupted,
    InvalidEntrypoint,
    Waiting,
    Refused,
    /// A new commit has no good signature by a trusted key; nothing was applied.
    Unverified,
    /// The host is frozen; nothing was applied.
    Frozen,
    /// A commit failed its health check and the host was rolled back.
    Unhealthy,
    /// The health rollback failed: the host is in an unknown state.
    RollbackFailed,
    /// The deployed commit's entrypoint ran again (drift correction).
    Reconciled,
    /// That reconcile run failed.
    ReconcileFailed,
    /// A new commit soaks before it is applied.
    Soaking,
    /// A new commit did not touch this host's paths.
    Unchanged,
    Error,
}

impl Label {
    pub fn as_str(self) -> &'static str {
        match self {
            Label::UpToDate => "up-to-date",
            Label::Applied => "applied",
            Label::Failed => "failed",
            Label::Interrupted => "interrupted",
            Label::InvalidEntrypoint => "invalid-entrypoint",
            Label::Waiting => "waiting",
            Label::Refused => "refused",
            Label::Unverified => "unverified",
            Label::Frozen => "frozen",
            Label::Unhealthy => "unhealthy",
            Label::RollbackFailed => "rollback-failed",
            Label::Reconciled => "reconciled",
            Label::ReconcileFailed => "reconcile-failed",
            Label::Soaking => "soaking",
            Label::Unchanged => "unchanged",
            Label::Error => "error",
        }
    }

    /// Whether this pass tried a commit (ran, or refused to run, its entrypoint).
    pub fn attempted(self) -> bool {
        matches!(
            self,
            Label::Applied
                | Label::Failed
                | Label::Interrupted
                | Label::InvalidEntrypoint
                | Label::Unhealthy
                | Label::RollbackFailed
                | Label::Reconciled
                | Label::ReconcileFailed
        )
    }
}

/// The exit code, label and deployment signal of a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub exit: Exit,
    pub label: Label,
    pub signal: Signal,
}

/// Map what happened to the pass's outcome. An invalid reboot request turns an
/// otherwise clean pass into exit 8; it never hides another failure.
pub fn outcome(ended: &Ended, reboot_invalid: bool) -> Outcome {
    let failed = |commit: &str| Signal::Bad(Kind::Failed, format!("failed:{commit}"));
    let invalid = |commit: &str| Signal::Bad(Kind::InvalidEntrypoint, format!("invalid:{commit}"));
    let (exit, label, signal) = match ended {
        Ended::UpToDate => (Exit::Ok, Label::UpToDate, Signal::Quiet),
        Ended::Applied => (Exit::Ok, Label::Applied, Signal::Good(Kind::Applied)),
        Ended::Failed { commit } => (Exit::EntrypointFailed, Label::Failed, failed(commit)),
        Ended::Interrupted { commit } => (Exit::Interrupted, Label::Interrupted, failed(commit)),
        Ended::InvalidEntrypoint { commit } => (
            Exit::EntrypointInvalid,
            Label::InvalidEntrypoint,
            invalid(commit),
        ),
        Ended::Waiting { after } => {
            let failure = outcome(after, false);
            (failure.exit, Label::Waiting, failure.signal)
        }
        Ended::Refused { class, remote } => (
            Exit::Refused,
            Label::Refused,
            Signal::Bad(
                Kind::Refused,
                format!("refused:{}:{remote}", class.as_str()),
            ),
        ),
        Ended::Unverified {
            tip,
            commit,
            reason,
        } => (
            Exit::Unverified,
            Label::Unverified,
            Signal::Bad(
                Kind::Unverified,
                format!("unverified:{tip}:{commit}:{reason}"),
            ),
        ),
        Ended::Held { .. } => (Exit::Ok, Label::Frozen, Signal::Hold),
        Ended::Unhealthy { commit, .. } => (
            Exit::EntrypointFailed,
            Label::Unhealthy,
            Signal::Bad(Kind::Unhealthy, format!("unhealthy:{commit}")),
        ),
        Ended::RollbackFailed { commit, to } => (
            Exit::UnknownState,
            Label::RollbackFailed,
            Signal::Bad(
                Kind::RollbackFailed,
                format!("rollback-failed:{commit}:{to}"),
            ),
        ),
        Ended::Reconciled { drift: 0, .. } => (Exit::Ok, Label::Reconciled, Signal::Quiet),
        Ended::Reconciled { .. } => (
            Exit::Ok,
            Label::Reconciled,
            Signal::Good(Kind::DriftCorrected),
        ),
        Ended::Soaking { .. } => (Exit::Ok, Label::Soaking, Signal::Hold),
        Ended::Unchanged => (Exit::Ok, Label::Unchanged, Signal::Quiet),
        Ended::ReconcileFailed { commit } => (
            Exit::EntrypointFailed,
            Label::ReconcileFailed,
            Signal::Bad(Kind::ReconcileFailed, format!("reconcile-failed:{commit}")),
        ),
        Ended::Error(exit) => (
            *exit,
            Label::Error,
            Signal::Bad(Kind::Error, format!("error:{}", exit.code())),
        ),
    };
    let exit = if reboot_invalid && exit == Exit::Ok {
        Exit::Reboot
    } else {
        exit
    };
    Outcome {
        exit,
        label,
        signal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(e: Ended) -> (u8, &'static str, Signal) {
        let o = outcome(&e, false);
        (o.exit.code(), o.label.as_str(), o.signal)
    }

    #[test]
    fn every_ending_has_its_code_label_and_signal() {
        let c = || "c0ffee".to_string();
        assert_eq!(of(Ended::UpToDate), (0, "up-to-date", Signal::Quiet));
        assert_eq!(
            of(Ended::Applied),
            (0, "applied", Signal::Good(Kind::Applied))
        );
        assert_eq!(
            of(Ended::Failed { commit: c() }),
            (
                5,
                "failed",
                Signal::Bad(Kind::Failed, "failed:c0ffee".into())
            )
        );
        assert_eq!(
            of(Ended::Interrupted { commit: c() }),
            (
                130,
                "interrupted",
                Signal::Bad(Kind::Failed, "failed:c0ffee".into())
            )
        );
        assert_eq!(
            of(Ended::InvalidEntrypoint { commit: c() }),
            (
                6,
                "invalid-entrypoint",
                Signal::Bad(Kind::InvalidEntrypoint, "invalid:c0ffee".into())
            )
        );
        assert_eq!(
            of(Ended::Refused {
                class: Classification::Diverged,
                remote: c()
            }),
            (
                4,
                "refused",
                Signal::Bad(Kind::Refused, "refused:diverged:c0ffee".into())
            )
        );
        assert_eq!(
            of(Ended::Unverified {
                tip: "t".into(),
                commit: c(),
                reason: "unsigned".into()
            }),
            (
                9,
                "unverified",
                Signal::Bad(Kind::Unverified, "unverified:t:c0ffee:unsigned".into())
            )
        );
        assert_eq!(
            of(Ended::Error(Exit::Fetch)),
            (3, "error", Signal::Bad(Kind::Error, "error:3".into()))
        );
    }

    #[test]
    fn waiting_keeps_the_kind_of_the_failure_it_waits_after() {
        let after = |e: Ended| Ended::Waiting { after: Box::new(e) };
        assert_eq!(
            of(after(Ended::Failed { commit: "a".into() })),
            (5, "waiting", Signal::Bad(Kind::Failed, "failed:a".into()))
        );
        assert_eq!(
            of(after(Ended::InvalidEntrypoint { commit: "a".into() })),
            (
                6,
                "waiting",
                Signal::Bad(Kind::InvalidEntrypoint, "invalid:a".into())
            ),
            "the same key as the invalid attempt: a wait is not a new failure"
        );
        assert_eq!(
            of(after(Ended::Unhealthy {
                commit: "a".into(),
                rolled_back_to: Some("b".into())
            })),
            (
                5,
                "waiting",
                Signal::Bad(Kind::Unhealthy, "unhealthy:a".into())
            )
        );
        assert_eq!(
            of(after(Ended::RollbackFailed {
                commit: "a".into(),
                to: "b".into()
            })),
            (
                10,
                "waiting",
                Signal::Bad(Kind::RollbackFailed, "rollback-failed:a:b".into())
            ),
            "an unknown state stays the loudest thing until it is resolved"
        );
        assert_eq!(
            of(after(Ended::ReconcileFailed { commit: "a".into() })).2,
            Signal::Bad(Kind::ReconcileFailed, "reconcile-failed:a".into())
        );
    }

    #[test]
    fn an_invalid_reboot_request_only_changes_a_clean_exit() {
        assert_eq!(outcome(&Ended::UpToDate, true).exit, Exit::Reboot);
        assert_eq!(outcome(&Ended::Applied, true).exit, Exit::Reboot);
        assert_eq!(
            outcome(&Ended::Failed { commit: "a".into() }, true).exit,
            Exit::EntrypointFailed
        );
        assert_eq!(outcome(&Ended::Error(Exit::Fetch), true).exit, Exit::Fetch);
    }

    #[test]
    fn labels_serialise_to_the_strings_state_json_always_had() {
        for l in [
            Label::UpToDate,
            Label::Applied,
            Label::Failed,
            Label::Interrupted,
            Label::InvalidEntrypoint,
            Label::Waiting,
            Label::Refused,
            Label::Unverified,
            Label::Frozen,
            Label::Unhealthy,
            Label::RollbackFailed,
            Label::Reconciled,
            Label::ReconcileFailed,
            Label::Soaking,
            Label::Unchanged,
            Label::Error,
        ] {
            assert_eq!(
                serde_json::to_value(l).unwrap(),
                serde_json::json!(l.as_str())
            );
        }
    }
}
