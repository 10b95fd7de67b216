//! The repository's entrypoint: where it may live, how it runs (its own process
//! group, a timeout, a documented environment), and where its output goes.

use anyhow::{Context, Result};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use crate::host::signals::{stop_requested, StopSignals};
use crate::host::{boot_id, process_start_ticks};
use crate::log::{debug, info};

/// Time between SIGTERM and SIGKILL when the entrypoint must stop.
pub const KILL_GRACE_SECS: u64 = 10;
/// Largest entrypoint log kept on disk per attempt; the rest still reaches stderr.
pub const MAX_LOG_BYTES: u64 = 4 * 1024 * 1024;
/// How long to wait for output after the entrypoint exited, in case a background
/// child it left behind still holds the pipes open.
pub const OUTPUT_DRAIN_MS: u64 = 2000;

/// Find the entrypoint inside `tree` (see [`locate`]); refuses a missing file,
/// non-files and non-executables as well.
pub fn resolve(tree: &Path, rel: &str) -> Result<PathBuf, String> {
    let real = locate(tree, rel)
        .map_err(|e| format!("entrypoint {e}"))?
        .ok_or_else(|| format!("entrypoint {rel:?} does not exist in this commit"))?;
    let meta = std::fs::metadata(&real).map_err(|e| format!("entrypoint {rel:?}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("entrypoint {rel:?} is not a regular file"));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(format!(
            "entrypoint {rel:?} is not executable; commit it with its executable bit (git update-index --chmod=+x {rel})"
        ));
    }
    Ok(real)
}

/// Find `rel` inside `tree`: `Ok(None)` when it does not exist; an error for an
/// empty or absolute path, `..`, or a real path (symlinks followed) outside the tree.
pub fn locate(tree: &Path, rel: &str) -> Result<Option<PathBuf>, String> {
    let p = Path::new(rel);
    if rel.is_empty() {
        return Err("path is empty".into());
    }
    if p.is_absolute() {
        return Err(format!(
            "{rel:?} is an absolute path; it must be relative to the repository root"
        ));
    }
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!(
            "{rel:?} contains '..'; it must stay inside the repository"
        ));
    }
    let root = tree
        .canonicalize()
        .map_err(|e| format!("{rel:?}: cannot resolve the tree {}: {e}", tree.display()))?;
    let joined = root.join(p);
    if std::fs::symlink_metadata(&joined).is_err() {
        return Ok(None);
    }
    let real = joined
        .canonicalize()
        .map_err(|e| format!("{rel:?} cannot be resolved (dangling symlink?): {e}"))?;
    if !real.starts_with(&root) {
        return Err(format!(
            "{rel:?} resolves outside the checked-out tree (to {})",
            real.display()
        ));
    }
    Ok(Some(real))
}

/// How the entrypoint ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    Signaled(i32),
    TimedOut,
    Interrupted,
    /// The kernel refused to execute it (missing interpreter, CRLF after `#!`, no
    /// `#!` line...): nothing ran. The string says why, for people.
    NotStarted(String),
}

impl Ended {
    pub fn success(&self) -> bool {
        *self == Ended::Exited(0)
    }
    /// The shell convention: the exit status, or 128 + signal number.
    pub fn code(&self) -> Option<i32> {
        match self {
            Ended::Exited(c) => Some(*c),
            Ended::Signaled(s) => Some(128 + s),
            Ended::TimedOut | Ended::Interrupted | Ended::NotStarted(_) => None,
        }
    }
}

/// Why `program` is neither a script with a `#!` line nor an ELF binary, if it is
/// not: such a file cannot be executed by the kernel.
fn not_a_program(program: &Path) -> Option<String> {
    let mut head = [0u8; 4];
    let n = std::fs::File::open(program)
        .and_then(|mut f| f.read(&mut head))
        .ok()?;
    let head = &head[..n];
    if head.starts_with(b"#!") || head == b"\x7fELF" {
        return None;
    }
    Some(
        "it has no #! line naming an interpreter (add one, e.g. #!/bin/sh) and is not a program for this machine"
            .into(),
    )
}

/// Why `program` could not be executed, in words that point at the fix: the
/// interpreter named by its `#!` line, a carriage return after it, or no such line.
pub fn why_not_executable(program: &Path, err: &std::io::Error) -> String {
    let mut head = [0u8; 256];
    let n = std::fs::File::open(program)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    let head = &head[..n];
    let Some(rest) = head.strip_prefix(b"#!") else {
        return format!(
            "the kernel cannot execute it ({err}): it has no #! line naming an interpreter (add one, e.g. #!/bin/sh) and is not a program for this machine"
        );
    };
    let line = rest.split(|b| *b == b'\n').next().unwrap_or_default();
    let text = String::from_utf8_lossy(line);
    if text.ends_with('\r') {
        return format!(
            "its #! line {:?} ends with a carriage return: the file has Windows (CRLF) line endings; convert it to LF (dos2unix, or `git config core.autocrlf input`)",
            format!("#!{}", text.trim_end_matches('\r'))
        );
    }
    let interpreter = text.split_whitespace().next().unwrap_or("");
    if interpreter.is_empty() {
        return "its #! line names no interpreter".into();
    }
    if !Path::new(interpreter).exists() {
        return format!(
            "its interpreter {interpreter} (from the #! line) does not exist on this host"
        );
    }
    format!("the kernel cannot execute it with the interpreter {interpreter}: {err}")
}

pub struct Spec<'a> {
    pub program: &'a Path,
    pub cwd: &'a Path,
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
    pub log: &'a Path,
    pub header: String,
    /// A file the child writes its own pid into before it executes the program, so
    /// a pass killed right after the fork still leaves a trace of its orphan.
    pub pid_file: &'a Path,
}

/// Where the entrypoint's output goes: our stderr (or the journal, see `log`) and a
/// capped log file.
struct Sink {
    file: std::fs::File,
    written: u64,
    truncated: bool,
    /// `GITOPS_COMMIT` of the attempt, for the journal.
    commit: String,
}

impl Sink {
    fn write_line(&mut self, line: &[u8]) {
        crate::log::output(&self.commit, line);
        if self.truncated {
            return;
        }
        if self.written + line.len() as u64 > MAX_LOG_BYTES {
            self.truncated = true;
            let _ = writeln!(self.file, "\n[gitops-run: log truncated at {MAX_LOG_BYTES} bytes; the rest went to stderr only]");
            return;
        }
        let _ = self.file.write_all(line);
        self.written += line.len() as u64;
    }
}

/// Longest piece of output handled as one line: a longer line (or output without
/// any newline) is passed on in pieces of this size, so memory stays bounded
/// whatever the entrypoint prints.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

fn pump(mut reader: impl Read, sink: Arc<Mutex<Sink>>) {
    let mut chunk = vec![0u8; 16 * 1024];
    let mut line: Vec<u8> = Vec::with_capacity(1024);
    let flush = |line: &mut Vec<u8>| {
        if let Ok(mut s) = sink.lock() {
            s.write_line(line);
        }
        line.clear();
    };
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        for piece in chunk[..n].split_inclusive(|b| *b == b'\n') {
            let mut piece = piece;
            while line.len() + piece.len() > MAX_LINE_BYTES {
                let room = MAX_LINE_BYTES - line.len();
                line.extend_from_slice(&piece[..room]);
                flush(&mut line);
                piece = &piece[room..];
            }
            line.extend_from_slice(piece);
            if line.ends_with(b"\n") {
                flush(&mut line);
            }
        }
    }
    if !line.is_empty() {
        flush(&mut line);
    }
}

/// Run the entrypoint in its own process group with `umask` inherited (the pass sets
/// 077), stdin from /dev/null, output to stderr and the log. `on_spawn` gets the pid
/// as soon as it exists, so it can be recorded before anything else can go wrong.
pub fn run(spec: Spec<'_>, on_spawn: impl FnOnce(i32) -> Result<()>) -> Result<Ended> {
    // One log per attempt: the entrypoint, its health checks and a rollback are
    // appended in order, each under its header.
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(spec.log)
        .with_context(|| format!("failed to open log file {}", spec.log.display()))?;
    let written = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = writeln!(file, "{}", spec.header);
    let commit = spec
        .env
        .iter()
        .find(|(k, _)| k == "GITOPS_COMMIT")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let sink = Arc::new(Mutex::new(Sink {
        file,
        written,
        truncated: written >= MAX_LOG_BYTES,
        commit,
    }));

    let mut cmd = Command::new(spec.program);
    cmd.current_dir(spec.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("GITOPS_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));

    let pid_file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(spec.pid_file)
        .with_context(|| format!("failed to create {}", spec.pid_file.display()))?;
    let pid_fd = std::os::fd::AsRawFd::as_raw_fd(&pid_file);
    // SAFETY: between fork and exec only async-signal-safe calls: getpid, write.
    unsafe {
        cmd.pre_exec(move || {
            write_pid(pid_fd, nix::libc::getpid());
            Ok(())
        });
    }

    // glibc's execvp runs a file it cannot execute through /bin/sh, so a script
    // without a #! line would run under a shell nobody chose: refuse it first.
    if let Some(why) = not_a_program(spec.program) {
        let _ = std::fs::remove_file(spec.pid_file);
        if let Ok(mut s) = sink.lock() {
            let line = format!("[gitops-run: could not start the entrypoint: {why}]\n");
            let _ = s.file.write_all(line.as_bytes());
        }
        return Ok(Ended::NotStarted(why));
    }
    let signals = StopSignals::install();
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            drop(signals);
            let why = why_not_executable(spec.program, &e);
            let _ = std::fs::remove_file(spec.pid_file);
            if let Ok(mut s) = sink.lock() {
                let line = format!("[gitops-run: could not start the entrypoint: {why}]\n");
                let _ = s.file.write_all(line.as_bytes());
            }
            return Ok(Ended::NotStarted(why));
        }
    };
    drop(pid_file);
    let pid = child.id() as i32;
    let pgid = Pid::from_raw(pid);
    if let Err(e) = on_spawn(pid) {
        // The attempt was recorded before the start; losing the pid only costs the
        // next pass a look at the pid file.
        crate::log::warn!("could not record the entrypoint's pid {pid}: {e:#}");
    }

    let mut pumps = Vec::new();
    if let Some(out) = child.stdout.take() {
        let s = sink.clone();
        pumps.push(std::thread::spawn(move || pump(out, s)));
    }
    if let Some(err) = child.stderr.take() {
        let s = sink.clone();
        pumps.push(std::thread::spawn(move || pump(err, s)));
    }

    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });

    // A deadline beyond what the clock can hold is no deadline.
    let deadline = Instant::now().checked_add(spec.timeout);
    let mut stopping: Option<(Ended, Instant)> = None;
    let status = loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(status) => break status.context("failed to wait for the entrypoint")?,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                anyhow::bail!("lost track of the entrypoint process")
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        let now = Instant::now();
        match stopping {
            None => {
                let why = if stop_requested() {
                    Some(Ended::Interrupted)
                } else if deadline.is_some_and(|d| now >= d) {
                    Some(Ended::TimedOut)
                } else {
                    None
                };
                if let Some(why) = why {
                    info!(
                        "{}; sending SIGTERM to the entrypoint's process group {pid}",
                        if why == Ended::TimedOut {
                            "entrypoint timed out"
                        } else {
                            "stop requested"
                        }
                    );
                    let _ = signal::killpg(pgid, Signal::SIGTERM);
                    stopping = Some((why, now));
                }
            }
            Some((_, since))
                if now.duration_since(since) >= Duration::from_secs(KILL_GRACE_SECS) =>
            {
                info!("entrypoint still running {KILL_GRACE_SECS}s after SIGTERM; sending SIGKILL");
                let _ = signal::killpg(pgid, Signal::SIGKILL);
                stopping = stopping.map(|(w, _)| (w, now + Duration::from_secs(3600)));
            }
            Some(_) => {}
        }
    };
    if stopping.is_some() {
        // Whatever is left of the group goes too: the run was cut short on purpose.
        let _ = signal::killpg(pgid, Signal::SIGKILL);
    }
    drop(signals);

    let drain_until = Instant::now() + Duration::from_millis(OUTPUT_DRAIN_MS);
    for p in pumps {
        while !p.is_finished() && Instant::now() < drain_until {
            std::thread::sleep(Duration::from_millis(5));
        }
        if p.is_finished() {
            let _ = p.join();
        } else {
            debug!("entrypoint left a process holding its output open; not waiting for it");
        }
    }
    if let Ok(s) = sink.lock() {
        let _ = s.file.sync_all();
    }

    let _ = std::fs::remove_file(spec.pid_file);
    Ok(match stopping {
        Some((why, _)) => why,
        None => match status.code() {
            Some(c) => Ended::Exited(c),
            None => Ended::Signaled(status.signal().unwrap_or(0)),
        },
    })
}

/// Write `pid` as decimal text and a newline to `fd`, without allocating: this runs
/// in a forked child.
fn write_pid(fd: i32, pid: i32) {
    let mut buf = [0u8; 16];
    let mut i = buf.len() - 1;
    buf[i] = b'\n';
    let mut n = pid.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // SAFETY: write(2) on a valid fd with a pointer into a live buffer.
    unsafe {
        nix::libc::write(fd, buf[i..].as_ptr().cast(), buf.len() - i);
    }
}

/// The pid a child wrote into `path` before it executed the entrypoint.
pub fn read_pid_file(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// What identifies the entrypoint of an interrupted pass.
pub struct Orphan<'a> {
    pub pid: i32,
    /// Its start time in clock ticks after boot, when the pass lived long enough to
    /// record it.
    pub start_ticks: Option<u64>,
    /// The boot it ran in.
    pub boot: Option<&'a str>,
    /// The commit it applied: `GITOPS_COMMIT` in its environment.
    pub commit: &'a str,
}

/// Stop what is left of an entrypoint whose pass was killed: the process group of
/// `pid`, if it is provably the same process (same boot, and the same start time,
/// or `GITOPS_COMMIT` of the attempt in its environment) or if only the rest of its
/// group remains (a pid cannot be reused as a group id while the group exists).
pub fn stop_orphan(o: &Orphan<'_>) -> bool {
    if o.pid <= 1 || o.boot.is_none() || boot_id().as_deref() != o.boot {
        return false;
    }
    let pgid = Pid::from_raw(o.pid);
    let same = match (process_start_ticks(o.pid), o.start_ticks) {
        (Some(now), Some(then)) => now == then,
        (Some(_), None) => environ_has(o.pid, &format!("GITOPS_COMMIT={}", o.commit)),
        (None, _) => signal::killpg(pgid, None).is_ok(),
    };
    if !same {
        return false;
    }
    info!(
        "an entrypoint from an interrupted pass is still running (process group {}); stopping it",
        o.pid
    );
    let _ = signal::killpg(pgid, Signal::SIGTERM);
    let until = Instant::now() + Duration::from_secs(KILL_GRACE_SECS);
    while Instant::now() < until && signal::killpg(pgid, None).is_ok() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = signal::killpg(pgid, Signal::SIGKILL);
    true
}

fn environ_has(pid: i32, entry: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| env.split(|b| *b == 0).any(|e| e == entry.as_bytes()))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree_with(files: &[(&str, u32)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, mode) in files {
            let p = dir.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
        }
        dir
    }

    #[test]
    fn resolves_an_executable_inside_the_tree() {
        let t = tree_with(&[("run.sh", 0o755), ("bin/deploy", 0o700)]);
        assert!(resolve(t.path(), "run.sh").is_ok());
        assert!(resolve(t.path(), "bin/deploy").is_ok());
        assert!(resolve(t.path(), "./run.sh").is_ok());
    }

    #[test]
    fn refuses_escapes_missing_and_non_executables() {
        let t = tree_with(&[("run.sh", 0o644)]);
        symlink("/bin/sh", t.path().join("abs-link")).unwrap();
        symlink("../../../../bin/sh", t.path().join("rel-link")).unwrap();
        std::fs::create_dir(t.path().join("dir")).unwrap();
        for (rel, needle) in [
            ("run.sh", "not executable"),
            ("missing.sh", "does not exist"),
            ("/bin/sh", "absolute"),
            ("../run.sh", "'..'"),
            ("abs-link", "outside"),
            ("rel-link", "outside"),
            ("dir", "not a regular file"),
            ("", "empty"),
        ] {
            let err = resolve(t.path(), rel).unwrap_err();
            assert!(err.contains(needle), "{rel}: {err}");
        }
    }

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(Ended::Exited(3).code(), Some(3));
        assert_eq!(Ended::Signaled(9).code(), Some(137));
        assert_eq!(Ended::TimedOut.code(), None);
        assert!(Ended::Exited(0).success() && !Ended::Exited(1).success());
    }
}
