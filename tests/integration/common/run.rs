//! Running programs in tests, the binary under test above all: output
//! collected, stdin closed, and a watchdog on every run and every wait, so a
//! hang fails its test instead of holding CI.
//!
//! [`run`] and [`gitops`] run to completion; [`Spawned`] is for tests that
//! start a pass and act on it while it runs (signal it, kill it, race it).

use std::fmt;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use super::bin;

/// How long any run or wait may take before the test fails. Only a safety
/// net against a hang (a password prompt, a stuck connection, a lost
/// signal), never an assertion of speed: the slowest run in the suite (a
/// webhook that never answers, retried with its delays) takes seconds.
pub const SAFETY_NET: Duration = Duration::from_secs(180);

/// The first and the longest pause between two polls of a wait. Most runs
/// end within milliseconds, so the pause starts short and doubles.
const FIRST_POLL: Duration = Duration::from_millis(1);
const MAX_POLL: Duration = Duration::from_millis(20);

/// How one invocation of a program ended.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "exit code {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Run {
    /// Whether the program exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    #[track_caller]
    pub fn assert_code(&self, code: i32) {
        assert_eq!(self.code, Some(code), "unexpected exit code:\n{self}");
    }

    /// Lines of stderr that report an error.
    pub fn error_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|line| line.starts_with("gitops-run: error:"))
            .collect()
    }

    /// Stdout followed by stderr, for assertions on either and for messages.
    pub fn all_output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Neither a panic nor a backtrace in stdout or stderr.
    #[track_caller]
    pub fn assert_no_panic(&self) {
        for bad in ["panicked", "RUST_BACKTRACE", "stack backtrace"] {
            assert!(!self.stderr.contains(bad), "{bad:?} in stderr:\n{self}");
            assert!(!self.stdout.contains(bad), "{bad:?} in stdout:\n{self}");
        }
    }

    /// One `gitops-run: error:` line and no panic or backtrace; returns the
    /// error text after that prefix up to the end of stderr.
    #[track_caller]
    pub fn assert_error_without_panic(&self) -> String {
        let errors = self.error_lines();
        assert_eq!(errors.len(), 1, "want one error line:\n{self}");
        self.assert_no_panic();
        let (_, error) = self
            .stderr
            .split_once("gitops-run: error: ")
            .expect("error prefix");
        error.trim_end().to_owned()
    }

    /// Like [`assert_error_without_panic`](Self::assert_error_without_panic),
    /// and the error is one clear line: every line of stderr carries the
    /// `gitops-run: ` prefix. Returns that line.
    #[track_caller]
    pub fn assert_one_clean_error(&self) -> String {
        self.assert_error_without_panic();
        let unprefixed: Vec<&str> = self
            .stderr
            .lines()
            .filter(|line| !line.starts_with("gitops-run: "))
            .collect();
        assert!(
            unprefixed.is_empty(),
            "the error is not one line: stderr has lines without the \
             `gitops-run: ` prefix {unprefixed:?}:\n{self}"
        );
        self.error_lines()[0].to_owned()
    }

    /// Exactly one `gitops-run: error:` line and no panic; returns that line.
    #[track_caller]
    pub fn one_error_line(&self) -> String {
        self.assert_error_without_panic();
        self.error_lines()[0].to_owned()
    }

    /// None of `secrets` occurs in stdout or stderr.
    #[track_caller]
    pub fn assert_no_secret(&self, secrets: &[&str]) {
        for secret in secrets {
            assert!(!self.stdout.contains(secret), "{secret} in stdout:\n{self}");
            assert!(!self.stderr.contains(secret), "{secret} in stderr:\n{self}");
        }
    }
}

/// Runs `gitops-run ARGS` (see [`bin`]) under the watchdog.
pub fn gitops(args: &[&str]) -> Run {
    run(bin().args(args))
}

/// Runs `cmd` with stdin closed and collects its output. A run still going
/// after [`SAFETY_NET`] is killed and the test fails, and so does one whose
/// output pipes stay open that long after it exited (a process it left
/// behind holds them).
pub fn run(cmd: &mut Command) -> Run {
    let deadline = Instant::now() + SAFETY_NET;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|err| panic!("failed to start {program}: {err}"));
    let stdout = read_in_background(child.stdout.take().expect("piped stdout"));
    let stderr = read_in_background(child.stderr.take().expect("piped stderr"));
    let Some(status) = wait_for_exit(&mut child, deadline) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{program} did not finish within {SAFETY_NET:?} (hung, or waiting for a prompt?); \
             killed it"
        );
    };
    let collect = |output: Receiver<Vec<u8>>, name: &str| {
        let bytes = output
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| {
                panic!(
                    "{program} exited ({status}), but its {name} was still open after \
                     {SAFETY_NET:?}: a process it left behind holds it"
                )
            });
        String::from_utf8_lossy(&bytes).into_owned()
    };
    Run {
        code: status.code(),
        stdout: collect(stdout, "stdout"),
        stderr: collect(stderr, "stderr"),
    }
}

/// Reads `pipe` to its end in a thread of its own; the bytes arrive on the
/// returned channel.
fn read_in_background(mut pipe: impl Read + Send + 'static) -> Receiver<Vec<u8>> {
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        let _ = sender.send(buf);
    });
    receiver
}

/// Polls `child` until it exits; `None` if it still runs at `deadline` (or
/// cannot be waited for).
fn wait_for_exit(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    let mut pause = FIRST_POLL;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => {
                thread::sleep(pause);
                pause = (pause * 2).min(MAX_POLL);
            }
            // Ok(None) past the deadline, or an error: not known to have ended.
            _ => return None,
        }
    }
}

/// Polls `cond` until it holds; fails the test after [`SAFETY_NET`].
#[track_caller]
pub fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    assert!(poll_until(cond), "timed out waiting for {what}");
}

/// Polls `cond` until it holds, at most [`SAFETY_NET`]; whether it did. For
/// a test that fails with a message of its own (what a server logged, ...).
pub fn poll_until(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + SAFETY_NET;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(MAX_POLL);
    }
}

/// Whether `pid` is a live process: it exists and is not a zombie (`Z`) or
/// dead (`X`), by its state in `/proc/<pid>/stat`.
pub fn pid_alive(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may
    // itself contain spaces and parentheses.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, None | Some("Z") | Some("X"))
}

/// A program started in the background, for tests that act on a pass while
/// it runs. Stdin is closed; stdout and stderr go to a log file. Every wait
/// has a deadline, and a process still running when the value is dropped
/// (the test failed half-way) is killed and reaped.
pub struct Spawned {
    child: Child,
    log: PathBuf,
}

impl Spawned {
    /// Starts `cmd` with stdout and stderr written to the file `log`.
    pub fn start(cmd: &mut Command, log: &Path) -> Spawned {
        let file = File::create(log)
            .unwrap_or_else(|err| panic!("failed to create {}: {err}", log.display()));
        let err_file = file
            .try_clone()
            .unwrap_or_else(|err| panic!("failed to clone the handle of {}: {err}", log.display()));
        cmd.stdin(Stdio::null()).stdout(file).stderr(err_file);
        Self::spawn(cmd, log)
    }

    /// Starts `cmd` with its stderr a pipe that is closed at once: every
    /// write to stderr fails with `EPIPE`, as when the reader of a pipeline
    /// died. Stdout goes to the file `log`.
    pub fn with_closed_stderr(cmd: &mut Command, log: &Path) -> Spawned {
        let mut spawned = Self::with_stderr(cmd, log, Stdio::piped());
        drop(spawned.child.stderr.take());
        spawned
    }

    /// Starts `cmd` with stderr thrown away (`/dev/null`), for a pass that
    /// relays more output than a test should keep. Stdout goes to the file
    /// `log`.
    pub fn with_stderr_discarded(cmd: &mut Command, log: &Path) -> Spawned {
        Self::with_stderr(cmd, log, Stdio::null())
    }

    fn with_stderr(cmd: &mut Command, log: &Path, stderr: Stdio) -> Spawned {
        let file = File::create(log)
            .unwrap_or_else(|err| panic!("failed to create {}: {err}", log.display()));
        cmd.stdin(Stdio::null()).stdout(file).stderr(stderr);
        Self::spawn(cmd, log)
    }

    fn spawn(cmd: &mut Command, log: &Path) -> Spawned {
        let child = cmd.spawn().unwrap_or_else(|err| {
            panic!(
                "failed to start {}: {err}",
                cmd.get_program().to_string_lossy()
            )
        });
        Spawned {
            child,
            log: log.to_path_buf(),
        }
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("a pid fits i32")
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// What the process wrote so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit; fails the test (after killing it) if
    /// it is still running after [`SAFETY_NET`].
    #[track_caller]
    pub fn wait(&mut self) -> ExitStatus {
        match self.wait_at_most(SAFETY_NET) {
            Some(status) => status,
            None => {
                self.kill();
                panic!(
                    "the process did not end within {SAFETY_NET:?}; killed it. Its output:\n{}",
                    self.log()
                );
            }
        }
    }

    /// Waits for the process to exit, at most `limit` (`None` if it still
    /// runs).
    pub fn wait_at_most(&mut self, limit: Duration) -> Option<ExitStatus> {
        wait_for_exit(&mut self.child, Instant::now() + limit)
    }

    /// Waits for the process to exit and reaps it with `wait4(2)`, which also gives
    /// its peak resident set size in KiB (`ru_maxrss`): exact however briefly it ran,
    /// unlike sampling `/proc`. Fails the test (after killing it) if it still runs
    /// after [`SAFETY_NET`]. Once reaped, `try_wait` reports an error, so neither
    /// [`Spawned::is_running`] nor the drop signals the (possibly reused) pid.
    #[track_caller]
    pub fn wait_with_peak_rss(&mut self) -> (ExitStatus, u64) {
        use std::os::unix::process::ExitStatusExt;
        let pid = self.pid();
        let deadline = Instant::now() + SAFETY_NET;
        loop {
            let mut status = 0;
            // SAFETY: an all-zero rusage is a valid value of the plain C struct.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: both pointers are valid for writes for the duration of the call.
            let got = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
            if got == pid {
                let kib = u64::try_from(usage.ru_maxrss).unwrap_or(0);
                return (ExitStatus::from_raw(status), kib);
            }
            assert_eq!(
                got,
                0,
                "wait4({pid}) failed: {}",
                std::io::Error::last_os_error()
            );
            if Instant::now() >= deadline {
                self.kill();
                panic!(
                    "the process did not end within {SAFETY_NET:?}; killed it. Its output:\n{}",
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// SIGKILLs the process and reaps it.
    pub fn kill(&mut self) -> ExitStatus {
        let _ = self.child.kill();
        self.child.wait().expect("reap a killed child process")
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
