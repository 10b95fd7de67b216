//! Running the binary in tests: output collected, stdin closed, a watchdog that
//! turns a hang into a failed test, and assertions on how the run ended.

use std::fmt;
use std::io::Read;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How one invocation of the binary ended.
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

    /// One `gitops-run: error:` line and no panic or backtrace; returns the
    /// error text after that prefix up to the end of stderr.
    pub fn assert_error_without_panic(&self) -> String {
        let errors = self.error_lines();
        assert_eq!(errors.len(), 1, "want one error line:\n{self}");
        for bad in ["panicked", "RUST_BACKTRACE", "stack backtrace"] {
            assert!(!self.stderr.contains(bad), "{bad:?} in stderr:\n{self}");
            assert!(!self.stdout.contains(bad), "{bad:?} in stdout:\n{self}");
        }
        let (_, error) = self
            .stderr
            .split_once("gitops-run: error: ")
            .expect("error prefix");
        error.trim_end().to_owned()
    }

    /// Like [`assert_error_without_panic`](Self::assert_error_without_panic),
    /// and the error is one clear line: every line of stderr carries the
    /// `gitops-run: ` prefix. Returns that line.
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
    pub fn one_error_line(&self) -> String {
        self.assert_error_without_panic();
        self.error_lines()[0].to_owned()
    }

    /// None of `secrets` occurs in stdout or stderr.
    pub fn assert_no_secret(&self, secrets: &[&str]) {
        for secret in secrets {
            assert!(!self.stdout.contains(secret), "{secret} in stdout:\n{self}");
            assert!(!self.stderr.contains(secret), "{secret} in stderr:\n{self}");
        }
    }
}

/// Runs `cmd` with stdin closed and collects its output. A run still going after
/// `limit` is killed and the test fails: only a safety net against a hang (a
/// password prompt, a stuck connection), never an assertion of speed.
pub fn run_watched(mut cmd: Command, limit: Duration) -> Run {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start gitops-run");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for gitops-run") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("gitops-run did not finish within {limit:?} (hung, or waiting for a prompt?); killed it");
        }
        thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&out_reader.join().expect("stdout reader")).into_owned(),
        stderr: String::from_utf8_lossy(&err_reader.join().expect("stderr reader")).into_owned(),
    }
}
