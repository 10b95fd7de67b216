//! Shared integration-test harness for `gitops-run`.
//!
//! * [`git_env`], [`git`] and [`git_command`]: run the git CLI isolated from
//!   the user's and the system's configuration, with a fixed identity.
//! * [`bin`]: the `gitops-run` binary under test ([`bin_path`]), with a
//!   clean environment; [`run`] runs it (or anything else) under a watchdog,
//!   and [`Spawned`] starts it in the background with a deadline on every
//!   wait; [`wait_until`] and [`poll_until`] poll a condition, also with a
//!   deadline.
//! * [`StateDir`] and [`Host`]: a state directory that does not exist yet,
//!   in a temporary directory, with passes, `status` and the `current` link
//!   at hand; a host adds the [`Origin`] it deploys from.
//! * [`Origin`]: an upstream repository with deterministic commits.
//! * [`HttpGitServer`]: `git http-backend` served over HTTP on 127.0.0.1.
//! * [`HttpsGitServer`]: nginx terminating TLS in front of fcgiwrap and
//!   `git http-backend` on 127.0.0.1, with an optional basic auth.
//! * [`SshGitServer`]: a throw-away OpenSSH `sshd` on 127.0.0.1 that only
//!   lets a generated deploy key run `git-shell`.
//! * [`Receiver`]: a scripted HTTP/1.1 webhook receiver on 127.0.0.1 that
//!   records requests and checks `multipart/form-data` strictly.
//! * [`ClosedPort`]: a port on 127.0.0.1 that refuses connections.
//! * [`boot_time`], [`due_time`] and [`rfc3339`]: times for reboot requests.
//! * [`UnitRoot`] and its helpers: the shipped systemd units, installed in a
//!   temporary root and checked with the real `systemd-analyze`.
//!
//! `GITOPS_RUN_BIN=/path/to/gitops-run` runs the tests against another
//! build of the binary (the one before a fix, say, to see which tests catch
//! the defect); see [`bin_path`].

mod clock;
pub mod http;
mod https;
mod net;
mod origin;
mod receiver;
pub mod run;
mod ssh;
mod state;
mod units;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use tempfile::TempDir;

pub use self::clock::{boot_time, due_time, rfc3339};
pub use self::https::HttpsGitServer;
pub use self::net::{free_port, ClosedPort};
pub use self::receiver::{Part, Receiver, Recorded, Reply};
pub use self::run::{pid_alive, poll_until, run, wait_until, Run, Spawned};
pub use self::ssh::{keygen, SshGitServer};
pub use self::state::{current_in, Host, StateDir};
pub use self::units::{
    complaints, help_default, read_unit, systemd_analyze, unit_directives, unit_value, UnitRoot,
    INSTALLED_BINARY, UNITS_DIR,
};
pub use self::{http::HttpGitServer, origin::Origin};

/// Author and committer name used for every commit made by the harness.
pub const AUTHOR_NAME: &str = "Test Author";
/// Author and committer e-mail used for every commit made by the harness.
pub const AUTHOR_EMAIL: &str = "author@example.test";

/// Environment variables that point git at a particular repository, object
/// store, configuration or credential source, and that must therefore never
/// leak from the environment of whoever runs the tests.
const GIT_VARS_TO_REMOVE: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
    "GIT_CEILING_DIRECTORIES",
    "GIT_DISCOVERY_ACROSS_FILESYSTEM",
    "GIT_CONFIG",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
    "GIT_CONFIG_SYSTEM",
    "GIT_AUTHOR_DATE",
    "GIT_COMMITTER_DATE",
    "GIT_SSH",
    "GIT_SSH_COMMAND",
    "GIT_SSH_VARIANT",
    "GIT_ASKPASS",
    "SSH_ASKPASS",
    "SSH_AUTH_SOCK",
    "GIT_PROTOCOL",
    "GIT_TRACE",
    "GIT_TRACE_PACKET",
    "GIT_TRACE2",
    "GIT_TRACE2_EVENT",
    "GIT_CURL_VERBOSE",
    "GIT_HTTP_PROXY_AUTHMETHOD",
    "http_proxy",
    "https_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "XDG_CONFIG_HOME",
];

/// A fixed, empty home directory shared by everything this test process
/// runs, so that neither git nor ssh ever reads the real user's dot files.
///
/// The directory is created on first use and lives for the whole process.
/// Statics are never dropped, so it is made inside cargo's
/// `CARGO_TARGET_TMPDIR` (under `target/`) rather than in `/tmp`.
pub fn test_home() -> &'static Path {
    static HOME: OnceLock<TempDir> = OnceLock::new();
    HOME.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("test-home-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("create the temporary HOME for tests")
    })
    .path()
}

/// Isolates `cmd` from the user's and the system's git configuration.
///
/// Sets `GIT_CONFIG_GLOBAL=/dev/null`, `GIT_CONFIG_NOSYSTEM=1`, points `HOME`
/// at [`test_home`], fixes the author and committer identity
/// ([`AUTHOR_NAME`] / [`AUTHOR_EMAIL`]), disables terminal prompts, forces
/// the C locale and UTC, and removes variables such as `GIT_DIR`,
/// `GIT_WORK_TREE`, `GIT_SSH_COMMAND` or proxy settings that would otherwise
/// leak in from the caller's environment.
pub fn git_env(cmd: &mut Command) {
    for var in GIT_VARS_TO_REMOVE {
        cmd.env_remove(var);
    }
    cmd.env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", test_home())
        .env("GIT_AUTHOR_NAME", AUTHOR_NAME)
        .env("GIT_AUTHOR_EMAIL", AUTHOR_EMAIL)
        .env("GIT_COMMITTER_NAME", AUTHOR_NAME)
        .env("GIT_COMMITTER_EMAIL", AUTHOR_EMAIL)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .env("LANG", "C")
        .env("TZ", "UTC");
}

/// Returns a `git` command with `args`, running in `dir`, with [`git_env`]
/// applied. Use it with [`run`] when a test needs the exit status or stderr,
/// for example to check that an operation fails.
pub fn git_command(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir).args(args);
    git_env(&mut cmd);
    cmd
}

/// Runs `git args...` in `dir` with [`git_env`] applied, under the watchdog
/// of [`run`], and returns its stdout, trimmed.
///
/// # Panics
///
/// Panics, showing git's stderr, if git cannot be started, exits with a
/// non-zero status or hangs.
pub fn git(dir: &Path, args: &[&str]) -> String {
    git_with_env(dir, args, &[])
}

/// Like [`git`], with extra environment variables set after [`git_env`].
pub(crate) fn git_with_env(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> String {
    let mut cmd = git_command(dir, args);
    cmd.envs(envs.iter().copied());
    let output = run(&mut cmd);
    assert!(
        output.success(),
        "git {args:?} in {} failed (exit code {:?}):\n{}",
        dir.display(),
        output.code,
        output.stderr
    );
    output.stdout.trim().to_owned()
}

/// The variable naming another build of the binary to test.
const BIN_OVERRIDE: &str = "GITOPS_RUN_BIN";

/// The `gitops-run` binary under test: the one cargo built for these tests,
/// or the one `GITOPS_RUN_BIN` names when it is set and not empty. Every
/// test runs or installs the binary through here (or [`bin`]).
pub fn bin_path() -> PathBuf {
    match std::env::var_os(BIN_OVERRIDE) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_gitops-run")),
    }
}

/// Returns a command for the `gitops-run` binary under test ([`bin_path`]),
/// with [`git_env`] applied and every `GITOPS_*` variable removed from its
/// environment.
pub fn bin() -> Command {
    let mut cmd = Command::new(bin_path());
    git_env(&mut cmd);
    for (name, _) in std::env::vars_os() {
        if name.as_bytes().starts_with(b"GITOPS_") {
            cmd.env_remove(name);
        }
    }
    // Without it, a pass run as root writes node_exporter's textfile on this
    // machine when prometheus-node-exporter is installed; a test that wants the
    // file names one with --metrics-file (a flag outranks the environment).
    cmd.env("GITOPS_METRICS_FILE", "off");
    cmd
}

/// Returns a `GIT_SSH_COMMAND` value that authenticates with the private key
/// `key` only, trusts exactly the host keys in `known_hosts`, and never
/// prompts.
///
/// `-F /dev/null` additionally keeps the system-wide `ssh_config` out.
pub fn ssh_command_for(key: &Path, known_hosts: &Path) -> String {
    format!(
        "ssh -F /dev/null -i {} -o IdentitiesOnly=yes -o UserKnownHostsFile={} \
         -o StrictHostKeyChecking=yes -o BatchMode=yes -o GlobalKnownHostsFile=/dev/null",
        shell_quote(key.as_os_str()),
        shell_quote(known_hosts.as_os_str()),
    )
}

/// Quotes `arg` for a POSIX shell, leaving plain words untouched.
fn shell_quote(arg: &OsStr) -> String {
    let text = arg.to_string_lossy();
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:@,".contains(&b));
    if plain {
        text.into_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}
