//! `gitops-run receive`: an unprivileged HTTP receiver that turns an
//! authenticated push to the followed branch into a request for a pass (a
//! trigger file). It never fetches and never runs the entrypoint itself.
//!
//! The pieces: [`listen`] takes the listening socket (from systemd, or binds
//! `--listen`), [`server`] accepts a bounded number of connections, [`http`]
//! reads one request within limits and a deadline, [`auth`] checks the
//! forge's signature or token over the raw body, [`event`] decides what the
//! payload asks for, and [`trigger`] writes the trigger file (at once for a
//! push after a quiet period, once more after a burst, never twice within
//! `--min-interval`).

mod auth;
mod event;
mod http;
mod listen;
mod server;
pub mod trigger;

use anyhow::Result;
use clap::Args;
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::exit::{fail, Exit};

/// Where the receiver writes its trigger by default when systemd did not
/// hand it a runtime directory: the one systemd creates for
/// gitops-run-receiver.service, watched by gitops-run-trigger.path.
pub const DEFAULT_TRIGGER_FILE: &str = "/run/gitops-run-receiver/trigger";
/// The trigger's name inside `$RUNTIME_DIRECTORY`.
pub const TRIGGER_NAME: &str = "trigger";

/// How long a socket-activated receiver waits without requests before it
/// exits (systemd starts it again on the next connection).
pub const DEFAULT_IDLE_EXIT_SECS: u64 = 60;

/// The systemd credential that holds the shared secret when no
/// `--secret-file` is given.
pub const SECRET_CREDENTIAL: &str = "receiver-secret";

/// Largest request body accepted by default; bigger ones get 413.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;

/// Options of `gitops-run receive`.
#[derive(Debug, Args)]
pub struct ReceiveArgs {
    /// Bind ADDR:PORT instead of using the socket passed by systemd (LISTEN_FDS)
    #[arg(long, env = "GITOPS_RECEIVE_LISTEN", value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,

    /// File holding the shared webhook secret [fallback: systemd credential `receiver-secret`]
    #[arg(long, env = "GITOPS_RECEIVE_SECRET_FILE", value_name = "FILE")]
    pub secret_file: Option<PathBuf>,

    /// Branch whose pushes ask for a pass (the branch the pass follows)
    #[arg(
        long,
        env = "GITOPS_BRANCH",
        value_name = "NAME",
        default_value = "main"
    )]
    pub branch: String,

    /// File created to ask for a pass; gitops-run-trigger.path watches it and the pass removes it [default: $RUNTIME_DIRECTORY/trigger (its first directory), else /run/gitops-run-receiver/trigger]
    #[arg(long, env = "GITOPS_TRIGGER_FILE", value_name = "PATH")]
    pub trigger_file: Option<PathBuf>,

    /// Shortest time between two requests for a pass; pushes in between (and a burst after its first push) are merged into the next one
    #[arg(long, env = "GITOPS_RECEIVE_MIN_INTERVAL", value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub min_interval: Duration,

    /// Exit after this long without requests; 0 never exits [default: 60s with a socket from systemd, never with --listen]
    #[arg(long, env = "GITOPS_RECEIVE_IDLE_EXIT", value_name = "DURATION", value_parser = parse_duration)]
    pub idle_exit: Option<Duration>,

    /// Largest request body accepted, in bytes (larger ones get 413 unread)
    #[arg(long, env = "GITOPS_RECEIVE_MAX_BODY_BYTES", value_name = "BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES, value_parser = clap::value_parser!(u64).range(1..=64 * 1024 * 1024))]
    pub max_body_bytes: u64,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::duration::parse(s)
}

/// The idle period in force: an explicit `--idle-exit` wins (0 = never);
/// otherwise a socket-activated receiver exits after
/// [`DEFAULT_IDLE_EXIT_SECS`] and one that bound `--listen` never does (no one
/// would start it again).
pub fn idle_exit(explicit: Option<Duration>, socket_activated: bool) -> Option<Duration> {
    match explicit {
        Some(d) if d.is_zero() => None,
        Some(d) => Some(d),
        None if socket_activated => Some(Duration::from_secs(DEFAULT_IDLE_EXIT_SECS)),
        None => None,
    }
}

/// The trigger file in force: `--trigger-file` when given; else `trigger` in
/// the first directory of `runtime_directory` (systemd's
/// `$RUNTIME_DIRECTORY`, colon-separated when a unit has several) when that
/// is an absolute path; else [`DEFAULT_TRIGGER_FILE`].
pub fn trigger_file(explicit: Option<&Path>, runtime_directory: Option<&OsStr>) -> PathBuf {
    if let Some(path) = explicit {
        return path.to_path_buf();
    }
    let first = runtime_directory
        .and_then(|dirs| dirs.as_bytes().split(|b| *b == b':').next())
        .map(|dir| Path::new(OsStr::from_bytes(dir)))
        .filter(|dir| dir.is_absolute());
    match first {
        Some(dir) => dir.join(TRIGGER_NAME),
        None => PathBuf::from(DEFAULT_TRIGGER_FILE),
    }
}

/// Run the receiver until it is idle for the idle period, or is stopped by
/// SIGTERM or SIGINT. Problems with the options, the secret, the trigger
/// directory or the socket end it at once with exit 2.
pub fn run(args: &ReceiveArgs) -> Result<Exit> {
    let branch = args.branch.trim();
    if branch.is_empty() || gix::validate::reference::name_partial(branch.into()).is_err() {
        return Err(fail(
            Exit::Usage,
            format!("invalid branch name {:?}", args.branch),
        ));
    }
    let creds = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
    let secret = auth::Secret::load(args.secret_file.as_deref(), creds.as_deref())?;
    let runtime_directory = std::env::var_os("RUNTIME_DIRECTORY");
    let trigger = trigger::TriggerFile::new(&trigger_file(
        args.trigger_file.as_deref(),
        runtime_directory.as_deref(),
    ))?;
    let (listener, activated) = listen::take(args.listen)?;
    let cfg = server::Config {
        branch: branch.to_owned(),
        max_body_bytes: args.max_body_bytes,
        idle_exit: idle_exit(args.idle_exit, activated),
        min_interval: args.min_interval,
    };
    server::serve(listener, activated, cfg, secret, trigger)?;
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trigger_file_follows_the_flag_then_the_runtime_directory() {
        let flag = Path::new("/srv/t/trigger");
        let rd = |s: &str| Some(OsStr::new(s).to_owned());
        assert_eq!(
            trigger_file(Some(flag), rd("/run/x").as_deref()),
            flag.to_path_buf()
        );
        assert_eq!(
            trigger_file(None, rd("/run/x").as_deref()),
            PathBuf::from("/run/x/trigger")
        );
        assert_eq!(
            trigger_file(None, rd("/run/a:/run/b").as_deref()),
            PathBuf::from("/run/a/trigger")
        );
        for unusable in [None, rd(""), rd(":/run/b"), rd("relative/dir")] {
            assert_eq!(
                trigger_file(None, unusable.as_deref()),
                PathBuf::from(DEFAULT_TRIGGER_FILE),
                "{unusable:?}"
            );
        }
    }

    #[test]
    fn idle_exit_defaults_depend_on_socket_activation() {
        let sixty = Some(Duration::from_secs(DEFAULT_IDLE_EXIT_SECS));
        assert_eq!(idle_exit(None, true), sixty);
        assert_eq!(idle_exit(None, false), None);
        assert_eq!(idle_exit(Some(Duration::ZERO), true), None);
        assert_eq!(
            idle_exit(Some(Duration::from_secs(5)), false),
            Some(Duration::from_secs(5))
        );
    }
}
