//! Regression tests for issue 9 ("No pass may hang, crash, forget a success or
//! stay stuck"): one test per point of the issue, named after it, each on the
//! real binary with real Git repositories, real servers on 127.0.0.1 and, for
//! the disk-full cases, a real small tmpfs.
//!
//! Every pass runs under the harness's watchdog: [`run`] for passes that run
//! to their end, [`Spawned`] for passes that a test signals or watches from
//! outside. A hang fails the test; it never hangs CI. Every pass gets a
//! reboot command that only records its calls ([`Machine::cmd`]).
//!
//! `GITOPS_RUN_BIN` points these tests (like all others) at another build of
//! the binary, e.g. the one before the fix, to see which tests catch the
//! defects (see `common::bin_path`).

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use chrono::Utc;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use crate::common::run::SAFETY_NET;
use crate::common::{
    bin, due_time, git, keygen, pid_alive, rfc3339, run, wait_until, HttpGitServer, HttpsGitServer,
    Origin, Receiver, Reply, Run, Spawned, StateDir,
};

/// The fetch timeout given to passes against stuck servers.
const FETCH_TIMEOUT_SECS: u64 = 3;

/// How long after `FETCH_TIMEOUT_SECS` a pass against a stuck server may take to
/// end: the timeout is the behaviour under test, so it is asserted, with a
/// margin for a loaded machine (and well below ssh's 30 s ConnectTimeout).
const FETCH_TIMEOUT_SLACK: Duration = Duration::from_secs(12);

/// The entrypoint most tests commit: appends the commit it applies to
/// `$GITOPS_STATE_DIR/ran`, one line per run.
const RECORD: &str = "#!/bin/sh\nprintf '%s\\n' \"$GITOPS_COMMIT\" >> \"$GITOPS_STATE_DIR/ran\"\n";

/// The file [`RECORD`] appends to, in the state directory.
const RAN: &str = "ran";

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

/// The lines of the file at `path` (none if it does not exist).
fn read_lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// One machine under test: a [`StateDir`] (created by the binary) whose
/// passes get a reboot command that records its calls and never reboots.
struct Machine {
    state: StateDir,
}

impl Machine {
    fn new() -> Machine {
        Machine {
            state: StateDir::new(),
        }
    }

    /// A path in the machine's temporary directory, outside the state
    /// directory.
    fn file(&self, name: &str) -> PathBuf {
        self.state.dir().join(name)
    }

    /// The reboot command every pass gets unless a test gives its own: it
    /// records the call, never reboots.
    fn reboot_command(&self) -> String {
        format!("echo reboot >> '{}'", self.file("reboots").display())
    }

    fn reboots(&self) -> usize {
        read_lines(&self.file("reboots")).len()
    }

    /// `gitops-run --repo REPO --state-dir STATE [--reboot-command ...] EXTRA`.
    fn cmd(&self, repo: &str, extra: &[&str]) -> Command {
        let mut cmd = self.state.pass_cmd(repo, &[]);
        if !extra.contains(&"--reboot-command") {
            cmd.arg("--reboot-command").arg(self.reboot_command());
        }
        cmd.args(extra);
        cmd
    }

    fn pass(&self, repo: &str, extra: &[&str]) -> Run {
        run(&mut self.cmd(repo, extra))
    }

    /// A pass with `GITOPS_FETCH_TIMEOUT` set. The variable rather than the
    /// flag: a build without the option ignores it, so there the test shows
    /// the hang itself instead of a usage error.
    fn pass_with_fetch_timeout(&self, repo: &str, extra: &[&str]) -> Run {
        run(self
            .cmd(repo, extra)
            .env("GITOPS_FETCH_TIMEOUT", format!("{FETCH_TIMEOUT_SECS}s")))
    }

    /// Starts a pass in the background, its output going to a log file in
    /// the machine's temporary directory.
    fn spawn(&self, repo: &str, extra: &[&str]) -> Spawned {
        Spawned::start(&mut self.cmd(repo, extra), &self.next_log())
    }

    /// A new log file name for a background pass.
    fn next_log(&self) -> PathBuf {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        self.file(&format!(
            "background-{}.log",
            NEXT.fetch_add(1, Ordering::SeqCst)
        ))
    }

    fn write_state(&self, state: &Value) {
        let text = serde_json::to_string_pretty(state).expect("serialize state.json");
        fs::write(self.state.path().join("state.json"), text).expect("write state.json");
    }

    /// What [`RECORD`] wrote: the commits the entrypoint ran for, in order.
    fn runs(&self) -> Vec<String> {
        self.state.lines(RAN)
    }

    fn cache(&self) -> PathBuf {
        self.state.path().join("cache.git")
    }

    /// `git --git-dir cache.git ARGS`.
    fn cache_git(&self, args: &[&str]) -> String {
        let cache = self.cache();
        let mut all = vec!["--git-dir", cache.to_str().expect("UTF-8 path")];
        all.extend_from_slice(args);
        git(self.state.dir(), &all)
    }
}

/// The exit status and peak RSS (KiB) of a pass, from `wait4(2)`: exact however
/// briefly the pass ran (a no-op over `file://` takes a few milliseconds).
fn finish_measuring_rss(pass: &mut Spawned) -> (ExitStatus, u64) {
    pass.wait_with_peak_rss()
}

/// A small tmpfs mounted for one test (root only), unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `16m`) at `path`; `None`, with the reason
    /// printed, when not root.
    fn mount(path: PathBuf, size: &str) -> Option<Tmpfs> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!(
                "skipped: mounting a tmpfs to fill a disk needs root (CI runs the tests as root)"
            );
            return None;
        }
        fs::create_dir_all(&path).expect("create the mount point");
        let out = run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("tmpfs")
            .arg(&path));
        assert!(
            out.success(),
            "mount -t tmpfs at {} failed:\n{out}",
            path.display()
        );
        Some(Tmpfs { path })
    }

    /// Puts the state directory of `host` on this file system.
    fn hold_state_of(&self, host: &mut Machine) {
        host.state.relocate(self.path.join("state"));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Not through the watchdog: a panic while dropping (during the
        // unwinding of a failed test) would abort the whole test binary.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Writes files until the file system holding `path` is full.
fn fill_disk(path: &Path) {
    let mut file = fs::File::create(path).expect("create the filler");
    let block = vec![0u8; 64 * 1024];
    loop {
        match file.write_all(&block) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
            Err(e) => panic!("fill {}: {e}", path.display()),
        }
    }
    let _ = file.sync_all();
}

/// An origin whose first commit holds [`RECORD`] as `run.sh` and `app.conf`.
fn recording_origin() -> (Origin, String) {
    let mut origin = Origin::new();
    let head = origin.commit(&[("run.sh", RECORD), ("app.conf", "version 1\n")], "first");
    (origin, head)
}

/// Pseudo-random bytes (xorshift), so packs do not compress.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Accepts connections on 127.0.0.1 and never completes a response: silent
/// (never a byte), or dripping `drip` one byte a second, so that no idle
/// timeout fires. Client input is read and dropped. Stops when dropped.
struct StuckServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl StuckServer {
    fn start(drip: Option<&'static [u8]>) -> StuckServer {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the stuck server");
        let addr = listener.local_addr().expect("local address");
        listener.set_nonblocking(true).expect("non-blocking accept");
        let stop = Arc::new(AtomicBool::new(false));
        {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let stop = Arc::clone(&stop);
                            thread::spawn(move || hold(stream, drip, &stop));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(10)),
                    }
                }
            });
        }
        StuckServer { addr, stop }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for StuckServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Keeps one connection open without answering (or dripping `drip`).
fn hold(mut stream: TcpStream, drip: Option<&[u8]>, stop: &AtomicBool) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let mut next_byte = Instant::now();
    let mut sent = 0;
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        if let Some(bytes) = drip {
            if sent < bytes.len() && Instant::now() >= next_byte {
                if stream.write_all(&bytes[sent..=sent]).is_err() {
                    return;
                }
                sent += 1;
                next_byte += Duration::from_secs(1);
            }
        }
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

/// A TCP front on 127.0.0.1 that forwards to a real server until told to go
/// silent; from then on it accepts connections and never answers. The URL of
/// the repository stays the same while what serves it stops answering.
struct Switch {
    addr: SocketAddr,
    silent: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Switch {
    fn start(backend: SocketAddr) -> Switch {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the switch");
        let addr = listener.local_addr().expect("local address");
        listener.set_nonblocking(true).expect("non-blocking accept");
        let silent = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (silent, stop) = (Arc::clone(&silent), Arc::clone(&stop));
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let Ok((client, _)) = listener.accept() else {
                        thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    let stop = Arc::clone(&stop);
                    if silent.load(Ordering::SeqCst) {
                        thread::spawn(move || hold(client, None, &stop));
                    } else {
                        thread::spawn(move || forward(client, backend));
                    }
                }
            });
        }
        Switch { addr, silent, stop }
    }

    fn go_silent(&self) {
        self.silent.store(true, Ordering::SeqCst);
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Copies bytes both ways between `client` and a new connection to `backend`.
fn forward(client: TcpStream, backend: SocketAddr) {
    let _ = client.set_nonblocking(false);
    let Ok(server) = TcpStream::connect(backend) else {
        return;
    };
    let (Ok(mut client_r), Ok(mut server_w)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let upstream = thread::spawn(move || {
        let _ = std::io::copy(&mut client_r, &mut server_w);
        let _ = server_w.shutdown(Shutdown::Write);
    });
    let (mut server_r, mut client_w) = (server, client);
    let _ = std::io::copy(&mut server_r, &mut client_w);
    let _ = client_w.shutdown(Shutdown::Write);
    let _ = upstream.join();
}

// ---------------------------------------------------------------------------
// 1. A Git server that accepts the connection and never answers
// ---------------------------------------------------------------------------

/// What the dripping servers send, a byte a second: the start of a git://
/// ref advertisement, of an HTTP response, of an SSH banner. The client keeps
/// reading and never gets enough.
const GIT_DRIP: &[u8] = b"0100000000000000000000000000000000000000000 refs/heads/main\0";
const HTTP_DRIP: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-git-upload-pack-advertisement\r\n\r\n";
const SSH_DRIP: &[u8] = b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n";

/// A pass against `url` (served by a stuck server) ends soon after the fetch
/// timeout with exit 3, one error line saying the fetch timed out, and that
/// error in state.json.
fn assert_fetch_times_out(url: &str, extra: &[&str]) {
    let host = Machine::new();
    let started = Instant::now();
    let run = host.pass_with_fetch_timeout(url, extra);
    let took = started.elapsed();
    run.assert_code(3);
    let limit = Duration::from_secs(FETCH_TIMEOUT_SECS) + FETCH_TIMEOUT_SLACK;
    assert!(
        took < limit,
        "{url}: the pass took {took:?} with --fetch-timeout {FETCH_TIMEOUT_SECS}s (limit {limit:?}):\n{run}"
    );
    let line = run.one_error_line();
    assert!(
        line.contains("timed out"),
        "the error should say the fetch timed out:\n{run}"
    );
    let st = host.state.state_json();
    let error = st["last_pass"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("timed out"),
        "state.json should record the timeout: {st:#}"
    );
    assert_eq!(st["last_pass"]["exit_code"], 3, "{st:#}");
}

/// Runs `check` for a silent and a dripping server at once (they only wait).
fn against_silent_and_dripping(drip: &'static [u8], check: impl Fn(&StuckServer) + Sync) {
    thread::scope(|scope| {
        let silent = scope.spawn(|| check(&StuckServer::start(None)));
        check(&StuckServer::start(Some(drip)));
        if let Err(panic) = silent.join() {
            std::panic::resume_unwind(panic);
        }
    });
}

#[test]
fn silent_or_dripping_git_daemon_times_out_with_exit_3() {
    against_silent_and_dripping(GIT_DRIP, |server| {
        assert_fetch_times_out(&format!("git://127.0.0.1:{}/r", server.port()), &[]);
    });
}

#[test]
fn silent_or_dripping_http_server_times_out_with_exit_3() {
    against_silent_and_dripping(HTTP_DRIP, |server| {
        assert_fetch_times_out(&format!("http://127.0.0.1:{}/r", server.port()), &[]);
    });
}

#[test]
fn silent_or_dripping_ssh_server_times_out_with_exit_3() {
    let keys = tempfile::tempdir().expect("temporary directory");
    let key = keys.path().join("id_ed25519");
    keygen(&key, "hardening-test");
    let known_hosts = keys.path().join("known_hosts");
    fs::write(&known_hosts, "").expect("write known_hosts");
    let (key, known_hosts) = (key.to_str().unwrap(), known_hosts.to_str().unwrap());
    against_silent_and_dripping(SSH_DRIP, |server| {
        assert_fetch_times_out(
            &format!("ssh://git@127.0.0.1:{}/r", server.port()),
            &["--ssh-key", key, "--known-hosts", known_hosts],
        );
    });
}

/// The repository URL must stay the same (another URL is another repository:
/// exit 7), so the repository is served over HTTP through a [`Switch`] that
/// forwards to a real `git http-backend` for the first pass and goes silent
/// for the second. The first pass deploys a commit with a due `reboot-at` and
/// its reboot command fails, so the request stays open; the second pass, whose
/// fetch times out, must still review it and run the reboot command.
#[test]
fn silent_git_server_times_out_with_exit_3_and_the_reboot_review_still_runs() {
    let mut origin = Origin::new();
    let head = origin.commit(
        &[
            ("run.sh", RECORD),
            ("reboot-at", &format!("{}\n", rfc3339(due_time()))),
        ],
        "reboot for the kernel",
    );
    let backend = HttpGitServer::start(origin.root());
    let front = Switch::start(backend.addr());
    let url = format!("http://{}/origin/.git", front.addr);
    let host = Machine::new();

    let first = host.pass(&url, &["--reboot-command", "false"]);
    first.assert_code(8);
    let status = host.state.status_json();
    assert_eq!(status["deployed"]["commit"], head.as_str(), "{status:#}");
    assert_eq!(status["reboot"]["status"], "pending", "{status:#}");
    assert_eq!(host.reboots(), 0);

    front.go_silent();
    let second = host.pass_with_fetch_timeout(&url, &[]);
    second.assert_code(3);
    assert!(second.stderr.contains("timed out"), "{second}");
    assert_eq!(
        host.reboots(),
        1,
        "the reboot review must run after a fetch that timed out:\n{second}"
    );
    assert_eq!(host.runs(), vec![head]);
}

// ---------------------------------------------------------------------------
// 2. reboot-at at the ends of the calendar
// ---------------------------------------------------------------------------

#[test]
fn reboot_at_at_the_ends_of_the_calendar_is_an_invalid_request_not_a_crash() {
    for far in ["+262142-12-31 23:59:59", "-262143-01-01 00:00:00"] {
        let mut origin = Origin::new();
        let head = origin.commit(
            &[("run.sh", RECORD), ("reboot-at", &format!("{far}\n"))],
            "a reboot far away",
        );
        let host = Machine::new();
        let first = host.pass(&origin.url(), &[]);
        first.assert_code(8);
        first.assert_no_panic();
        assert!(
            first.stderr.contains("invalid reboot request"),
            "{far}:\n{first}"
        );
        let status = host.state.status_json();
        assert_eq!(
            status["deployed"]["commit"],
            head.as_str(),
            "{far}: {status:#}"
        );
        assert_eq!(status["reboot"]["status"], "invalid", "{far}: {status:#}");

        let second = host.pass(&origin.url(), &[]);
        second.assert_code(8);
        assert_eq!(
            host.runs(),
            vec![head.clone()],
            "{far}: the entrypoint ran again"
        );
        assert_eq!(host.reboots(), 0, "{far}");
    }
}

// ---------------------------------------------------------------------------
// 3. Durations that parse but overflow later
// ---------------------------------------------------------------------------

#[test]
fn durations_that_would_overflow_later_are_refused_when_options_are_read() {
    let (origin, _) = recording_origin();
    for (option, value) in [
        ("--timeout", "9223372036854775808"),
        ("--webhook-timeout", "18446744073709551615"),
        ("--reboot-grace", "9999999999d"),
        ("--reboot-splay", "99999999999999999"),
    ] {
        let host = Machine::new();
        let run = host.pass(&origin.url(), &[option, value]);
        run.assert_code(2);
        let line = run.assert_one_clean_error();
        assert!(
            line.contains(value),
            "{option} {value}: the error should name the value:\n{run}"
        );
        assert!(
            host.runs().is_empty(),
            "{option} {value}: the entrypoint ran"
        );
        assert!(
            !host.state.path().join("state.json").exists(),
            "{option} {value}: a usage error must not record a pass"
        );
    }
}

// ---------------------------------------------------------------------------
// 4. A success could be forgotten
// ---------------------------------------------------------------------------

/// The webhook receiver never answers; the pass is killed while it waits, after
/// its entrypoint exited 0.
#[test]
fn success_is_kept_when_the_pass_is_killed_while_notifying() {
    let (origin, head) = recording_origin();
    let receiver = Receiver::start(vec![Reply::Hang]);
    let host = Machine::new();
    let hook = receiver.url("/hook");
    let mut pass = host.spawn(
        &origin.url(),
        &["--webhook-url", &hook, "--webhook-timeout", "5m"],
    );
    let got = receiver.wait_for(1, SAFETY_NET);
    assert_eq!(got.len(), 1, "the pass never notified");
    assert!(
        pass.is_running(),
        "the pass should still wait for the receiver"
    );
    let killed = pass.kill();
    assert_eq!(killed.signal(), Some(9), "{killed}:\n{}", pass.log());
    assert_eq!(host.runs(), vec![head.clone()]);

    let next = host.pass(&origin.url(), &[]);
    next.assert_code(0);
    assert_eq!(
        host.runs(),
        vec![head.clone()],
        "the entrypoint ran again:\n{next}"
    );
    let status = host.state.status_json();
    assert_eq!(status["deployed"]["commit"], head.as_str(), "{status:#}");
    assert_eq!(status["current"], head.as_str(), "{status:#}");
    assert_eq!(status["consecutive_failures"], 0, "{status:#}");
}

/// The entrypoint's last act fills the disk holding the state directory, so
/// the success cannot be saved. One clear error says the disk is full; the next
/// pass, disk still full, runs nothing (and kills nothing); once there is room,
/// the commit is recorded as deployed without running it again.
#[test]
fn success_is_kept_when_the_entrypoint_fills_the_disk() {
    let mut host = Machine::new();
    let Some(disk) = Tmpfs::mount(host.file("disk"), "8m") else {
        return;
    };
    disk.hold_state_of(&mut host);
    let filler = disk.path.join("filler");
    let runs = host.file("entrypoint-runs");
    let script = format!(
        "#!/bin/sh\necho \"start $GITOPS_COMMIT\" >> '{runs}'\nhead -c 64000000 /dev/zero > '{filler}' 2>/dev/null\necho \"end $GITOPS_COMMIT\" >> '{runs}'\nexit 0\n",
        runs = runs.display(),
        filler = filler.display()
    );
    // The pass frees one page when it removes entrypoint.pid after the
    // entrypoint; a long subject makes the state it saves larger than that.
    let subject = format!("fills the disk {}", "x".repeat(2000));
    let mut origin = Origin::new();
    let head = origin.commit(&[("run.sh", &script)], &subject);
    let expected = vec![format!("start {head}"), format!("end {head}")];

    let first = host.pass(&origin.url(), &[]);
    assert_ne!(first.code, Some(0), "{first}");
    let line = first.one_error_line();
    assert!(
        line.contains("disk full"),
        "the error should say the disk is full:\n{first}"
    );
    assert_eq!(read_lines(&runs), expected);
    assert_eq!(host.state.current().as_deref(), Some(head.as_str()));

    let second = host.pass(&origin.url(), &[]);
    assert!(second.stderr.contains("disk full"), "{second}");
    assert_eq!(
        read_lines(&runs),
        expected,
        "nothing may run while the disk is full:\n{second}"
    );

    fs::remove_file(&filler).expect("make room");
    let third = host.pass(&origin.url(), &[]);
    third.assert_code(0);
    assert_eq!(
        read_lines(&runs),
        expected,
        "the entrypoint ran again:\n{third}"
    );
    let status = host.state.status_json();
    assert_eq!(status["deployed"]["commit"], head.as_str(), "{status:#}");
    drop(disk);
}

// ---------------------------------------------------------------------------
// 5. A pass killed while recording the attempt
// ---------------------------------------------------------------------------

/// The first copy's first act is to SIGKILL the pass that started it, so the
/// pass dies at the earliest moment after the fork, whatever it recorded by
/// then; that copy stays (sleeping). Each copy registers its pid
/// and records any other copy it finds alive, so two copies at once would show.
///
/// The orphaned copy is re-parented to init, which reaps it once the next
/// pass stops it. (This test does not make the test process a child
/// subreaper: that setting is process-wide, and in the one test binary it
/// would adopt the orphans of every other test running at the same time.)
#[test]
fn pass_killed_right_after_starting_the_entrypoint_never_leaves_two_copies_running() {
    let host = Machine::new();
    let marks = host.file("marks");
    fs::create_dir_all(marks.join("pids")).expect("create the marks directory");
    let script = format!(
        r#"#!/bin/sh
d='{d}'
if mkdir "$d/first" 2>/dev/null; then
  kill -9 $PPID
  echo $$ > "$d/first/pid"
fi
echo $$ > "$d/pids/$$"
for f in "$d"/pids/*; do
  p=${{f##*/}}
  [ "$p" = "$$" ] && continue
  if [ -r "/proc/$p/stat" ] && ! sed 's/^.*) //' "/proc/$p/stat" | grep -q '^Z'; then
    echo "$$ started while $p was alive" >> "$d/overlap"
  fi
done
if [ "$(cat "$d/first/pid")" = "$$" ]; then
  sleep 30
fi
rm -f "$d/pids/$$"
echo $$ >> "$d/done"
"#,
        d = marks.display()
    );
    let mut origin = Origin::new();
    let head = origin.commit(&[("run.sh", &script)], "kills its pass");

    let mut first = host.spawn(&origin.url(), &[]);
    let status = first.wait();
    assert_eq!(
        status.signal(),
        Some(9),
        "the entrypoint should have killed its pass ({status}):\n{}",
        first.log()
    );
    let pid_file = marks.join("first").join("pid");
    wait_until("the first copy's pid", || {
        fs::read_to_string(&pid_file).is_ok_and(|t| t.ends_with('\n'))
    });
    let orphan: i32 = fs::read_to_string(&pid_file)
        .expect("the first copy's pid")
        .trim()
        .parse()
        .expect("a pid");
    assert!(pid_alive(orphan), "the first copy should still be running");

    let next = host.pass(&origin.url(), &["--once"]);
    let overlap = fs::read_to_string(marks.join("overlap")).unwrap_or_default();
    let orphan_alive = pid_alive(orphan);
    let _ = kill(Pid::from_raw(-orphan), Signal::SIGKILL);
    assert!(
        overlap.is_empty(),
        "two copies of the entrypoint ran at once: {overlap}\n{next}"
    );
    assert!(
        !orphan_alive,
        "the orphan of the killed pass is still running:\n{next}"
    );
    next.assert_code(0);
    assert_eq!(read_lines(&marks.join("done")).len(), 1, "{next}");
    assert_eq!(
        host.state.status_json()["deployed"]["commit"],
        head.as_str()
    );
}

// ---------------------------------------------------------------------------
// 6. Killed fetches leaked temporary packs
// ---------------------------------------------------------------------------

/// Files in `dir` that look like the temporary files of an unfinished fetch.
fn temporary_files(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp") || n.starts_with("tmp_") || n.starts_with("incoming-"))
        .collect();
    names.sort();
    names
}

#[test]
fn temporary_packs_of_killed_fetches_are_removed_by_the_next_pass() {
    let mut origin = Origin::new();
    fs::write(
        origin.path().join("blob.bin"),
        noise(6 << 20, 0x9e37_79b9_7f4a_7c15),
    )
    .expect("write the big file");
    let head = origin.commit(&[("run.sh", RECORD)], "a big random file");
    let host = Machine::new();
    let pack_dir = host.cache().join("objects").join("pack");

    let mut seen = Vec::new();
    for round in 0..3 {
        let before = temporary_files(&pack_dir);
        let mut pass = host.spawn(&origin.url(), &[]);
        let mut fresh = Vec::new();
        wait_until("a temporary pack or the end of the pass", || {
            fresh = temporary_files(&pack_dir)
                .into_iter()
                .filter(|n| !before.contains(n))
                .collect();
            !fresh.is_empty() || !pass.is_running()
        });
        assert!(
            !fresh.is_empty(),
            "round {round}: the pass ended before a temporary pack appeared (fetch too quick to interrupt?)"
        );
        pass.kill();
        seen.extend(fresh);
    }
    assert!(
        !temporary_files(&pack_dir).is_empty(),
        "the killed fetches should have left temporary packs (saw {seen:?})"
    );
    assert!(host.runs().is_empty());

    let run = host.pass(&origin.url(), &[]);
    run.assert_code(0);
    assert_eq!(
        temporary_files(&pack_dir),
        Vec::<String>::new(),
        "left over after a normal pass:\n{run}"
    );
    assert_eq!(host.runs(), vec![head]);
}

// ---------------------------------------------------------------------------
// 7. Short https passwords leaked
// ---------------------------------------------------------------------------

#[test]
fn short_https_password_appears_nowhere() {
    let (origin, head) = recording_origin();
    let server = HttpsGitServer::with_basic_auth(origin.root(), "deploy", "pw1");
    let receiver = Receiver::start(Vec::new());
    // The right password, and a wrong one that the server refuses.
    for (password, code) in [("pw1", 0), ("pw2", 3)] {
        let host = Machine::new();
        let url = server.url_with_credentials("deploy", password, "origin/.git");
        let run = run(host
            .cmd(&url, &["--webhook-url", &receiver.url("/hook")])
            .env("GIT_SSL_CAINFO", server.ca_cert()));
        run.assert_code(code);
        if code == 0 {
            assert_eq!(host.runs(), vec![head.clone()]);
        }
        let places = [
            ("the pass's stdout", run.stdout.clone()),
            ("the pass's stderr", run.stderr.clone()),
            ("state.json", host.state.state_json_text()),
            ("status and status --json", host.state.all_status_output()),
        ];
        for (place, content) in places {
            assert!(
                !content.contains(password),
                "{password} in {place}:\n{content}"
            );
        }
    }
    let requests = receiver.wait_for(2, SAFETY_NET);
    assert_eq!(requests.len(), 2, "one notification per pass");
    for request in requests {
        let body = String::from_utf8_lossy(&request.body);
        for password in ["pw1", "pw2"] {
            assert!(
                !body.contains(password),
                "{password} in a webhook body:\n{body}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// 8. Output without newlines, and a huge reboot-at, kept memory bounded
// ---------------------------------------------------------------------------

/// Peak memory allowed to a pass whatever its entrypoint prints.
const MAX_PASS_RSS_KIB: u64 = 64 * 1024;

#[test]
fn entrypoint_output_without_newlines_keeps_the_pass_small() {
    let mut origin = Origin::new();
    let head = origin.commit(
        &[(
            "run.sh",
            "#!/bin/sh\nhead -c 200000000 /dev/zero | tr '\\0' x\n",
        )],
        "200 MB without a newline",
    );
    let host = Machine::new();
    // 200 MB of output to the journal: nowhere, here.
    let mut pass =
        Spawned::with_stderr_discarded(&mut host.cmd(&origin.url(), &[]), &host.next_log());
    let (status, peak) = finish_measuring_rss(&mut pass);
    assert_eq!(status.code(), Some(0), "{status}:\n{}", pass.log());
    assert_eq!(
        host.state.status_json()["deployed"]["commit"],
        head.as_str()
    );
    assert!(
        peak < MAX_PASS_RSS_KIB,
        "peak RSS {peak} KiB while relaying 200 MB without a newline (limit {MAX_PASS_RSS_KIB} KiB)"
    );
}

/// Peak RSS of a second pass (nothing new to fetch or check out) on
/// `origin`, and what that pass wrote.
fn peak_rss_of_a_no_op_pass(host: &Machine, origin: &Origin, code: i32) -> (String, u64) {
    host.pass(&origin.url(), &[]).assert_code(code);
    let mut pass = host.spawn(&origin.url(), &[]);
    let (status, peak) = finish_measuring_rss(&mut pass);
    let log = pass.log();
    assert_eq!(status.code(), Some(code), "{status}:\n{log}");
    (log, peak)
}

/// An 8 MB `reboot-at` is an invalid request, and reviewing it does not read
/// it whole: a pass with nothing to fetch or check out peaks well below a
/// like pass without the file plus the file's size.
#[test]
fn huge_reboot_at_is_an_invalid_request_read_bounded() {
    const SIZE: usize = 8 << 20;
    let mut origin = Origin::new();
    let head = origin.commit(
        &[("run.sh", RECORD), ("reboot-at", &"x".repeat(SIZE))],
        "an 8 MB reboot-at",
    );
    let host = Machine::new();
    let (second, peak) = peak_rss_of_a_no_op_pass(&host, &origin, 8);
    assert!(second.contains("invalid reboot request"), "{second}");
    let status = host.state.status_json();
    assert_eq!(status["deployed"]["commit"], head.as_str(), "{status:#}");
    assert_eq!(status["reboot"]["status"], "invalid", "{status:#}");
    assert_eq!(host.reboots(), 0);
    assert_eq!(host.runs(), vec![head]);

    let (control_origin, _) = recording_origin();
    let (_, control) = peak_rss_of_a_no_op_pass(&Machine::new(), &control_origin, 0);
    let limit = control + (SIZE / 2 / 1024) as u64;
    assert!(
        peak < limit,
        "peak RSS {peak} KiB reviewing a {SIZE}-byte reboot-at; {control} KiB without it (limit {limit} KiB)"
    );
}

// ---------------------------------------------------------------------------
// 9. A hanging reboot command followed by SIGTERM
// ---------------------------------------------------------------------------

#[test]
fn hanging_reboot_command_stopped_by_sigterm_is_a_failed_reboot_and_is_run_again() {
    let mut origin = Origin::new();
    let head = origin.commit(
        &[
            ("run.sh", RECORD),
            ("reboot-at", &format!("{}\n", rfc3339(due_time()))),
        ],
        "reboot for the kernel",
    );
    let host = Machine::new();
    let calls = host.file("reboot-calls");
    let hang = format!("echo $$ >> '{}'; exec sleep 60", calls.display());
    let mut pass = host.spawn(&origin.url(), &["--reboot-command", &hang]);
    wait_until("the reboot command", || !read_lines(&calls).is_empty());
    // What a shutdown does to the unit; here the host does not go down.
    kill(Pid::from_raw(pass.pid()), Signal::SIGTERM).expect("signal the pass");
    let first = pass.wait();
    let hung: i32 = read_lines(&calls)[0].parse().expect("a pid");
    let _ = kill(Pid::from_raw(-hung), Signal::SIGKILL);
    let _ = kill(Pid::from_raw(hung), Signal::SIGKILL);
    assert_eq!(first.code(), Some(0), "{first}:\n{}", pass.log());
    assert_eq!(host.runs(), vec![head]);

    let again = format!("echo again >> '{}'", calls.display());
    let second = host.pass(&origin.url(), &["--reboot-command", &again]);
    second.assert_code(8);
    assert!(
        second.stderr.contains("did not reboot"),
        "the pass should say the host did not reboot:\n{second}"
    );
    assert_eq!(
        read_lines(&calls).len(),
        2,
        "the reboot command should run again:\n{second}"
    );
}

// ---------------------------------------------------------------------------
// 10. Unclear messages
// ---------------------------------------------------------------------------

#[test]
fn disk_full_while_fetching_says_disk_full_and_where() {
    let mut host = Machine::new();
    let Some(disk) = Tmpfs::mount(host.file("disk"), "16m") else {
        return;
    };
    disk.hold_state_of(&mut host);
    let (mut origin, first) = recording_origin();
    host.pass(&origin.url(), &[]).assert_code(0);
    fs::write(origin.path().join("blob.bin"), noise(4 << 20, 7)).expect("write a big file");
    origin.commit(&[("app.conf", "version 2\n")], "a big file");
    fill_disk(&disk.path.join("filler"));

    let run = host.pass(&origin.url(), &[]);
    assert_ne!(run.code, Some(0), "{run}");
    let line = run.one_error_line();
    assert!(
        line.contains("disk full"),
        "the error should say the disk is full:\n{run}"
    );
    assert!(
        line.contains(host.state.arg()),
        "the error should say where (in {}):\n{run}",
        host.state.arg()
    );
    assert_eq!(host.runs(), vec![first.clone()]);
    assert_eq!(host.state.current().as_deref(), Some(first.as_str()));
    drop(disk);
}

#[test]
fn non_numeric_state_format_is_called_not_a_number() {
    let (origin, _) = recording_origin();
    let host = Machine::new();
    host.pass(&origin.url(), &[]).assert_code(0);
    let mut state = host.state.state_json();
    state["format"] = Value::String("1".into());
    host.write_state(&state);
    let run = host.pass(&origin.url(), &[]);
    run.assert_code(7);
    let line = run.one_error_line();
    assert!(line.contains("not a number"), "{run}");
}

/// A config file in the directory of `host`, holding `text`.
fn config_file(host: &Machine, text: &str) -> PathBuf {
    let path = host.file("config");
    fs::write(&path, text).expect("write the config file");
    path
}

/// `gitops-run --config FILE --state-dir STATE` (the repository comes from the file).
fn pass_with_config(host: &Machine, config: &Path) -> Run {
    run(bin()
        .arg("--config")
        .arg(config)
        .args(["--state-dir", host.state.arg()])
        .arg("--reboot-command")
        .arg(host.reboot_command()))
}

#[test]
fn config_value_followed_by_a_comment_is_read_without_the_comment() {
    let (origin, head) = recording_origin();
    let host = Machine::new();
    let config = config_file(
        &host,
        &format!(
            "GITOPS_REPO=\"{}\" # where this host's configuration lives\nGITOPS_BRANCH=\"main\" # production\nGITOPS_TIMEOUT=5m   # long enough\n",
            origin.url()
        ),
    );
    let run = pass_with_config(&host, &config);
    run.assert_code(0);
    assert_eq!(host.runs(), vec![head]);
    assert_eq!(host.state.status_json()["branch"], "main");
}

#[test]
fn duplicate_config_keys_exit_2_naming_both_lines() {
    let (origin, _) = recording_origin();
    let host = Machine::new();
    let config = config_file(
        &host,
        &format!(
            "GITOPS_REPO={}\nGITOPS_BRANCH=main\n# later, someone adds:\nGITOPS_BRANCH=release\n",
            origin.url()
        ),
    );
    let run = pass_with_config(&host, &config);
    run.assert_code(2);
    let line = run.assert_one_clean_error();
    for needle in ["GITOPS_BRANCH", "line 2", "line 4"] {
        assert!(
            line.contains(needle),
            "the error should name {needle}:\n{run}"
        );
    }
    assert!(host.runs().is_empty());
    assert!(!host.state.path().join("state.json").exists());
}

#[test]
fn dangling_symlink_as_state_dir_is_named_as_such() {
    let (origin, _) = recording_origin();
    let host = Machine::new();
    let missing = host.file("gone");
    std::os::unix::fs::symlink(&missing, host.state.path()).expect("make the dangling link");
    let run = host.pass(&origin.url(), &[]);
    run.assert_code(7);
    let line = run.one_error_line();
    assert!(
        line.contains("symlink") && line.contains("does not exist"),
        "the error should say the state directory is a symlink to a missing target:\n{run}"
    );
    assert!(
        line.contains(missing.to_str().unwrap()),
        "and name the target:\n{run}"
    );
}

#[test]
fn entrypoint_with_a_trailing_slash_exits_2_saying_it_names_a_directory() {
    let (origin, _) = recording_origin();
    let host = Machine::new();
    let run = host.pass(&origin.url(), &["--entrypoint", "run.sh/"]);
    run.assert_code(2);
    let line = run.assert_one_clean_error();
    assert!(
        line.contains("--entrypoint") && line.contains("directory"),
        "{run}"
    );
    assert!(host.runs().is_empty());
}

#[test]
fn empty_or_absolute_entrypoint_exits_2() {
    let (origin, _) = recording_origin();
    for entrypoint in ["", "/bin/true"] {
        let host = Machine::new();
        let run = host.pass(&origin.url(), &["--entrypoint", entrypoint]);
        run.assert_code(2);
        let line = run.assert_one_clean_error();
        assert!(line.contains("--entrypoint"), "{entrypoint:?}:\n{run}");
        assert!(host.runs().is_empty());
        assert!(
            !host.state.path().join("state.json").exists(),
            "{entrypoint:?}"
        );
    }
}

#[test]
fn timed_out_entrypoint_summary_says_timed_out_once() {
    let mut origin = Origin::new();
    origin.commit(&[("run.sh", "#!/bin/sh\nexec sleep 30\n")], "too slow");
    let host = Machine::new();
    let run = host.pass(&origin.url(), &["--timeout", "1s"]);
    run.assert_code(5);
    let summary: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("failed for"))
        .collect();
    assert_eq!(summary.len(), 1, "one summary line:\n{run}");
    let line = summary[0];
    assert_eq!(line.matches("timed out").count(), 1, "{line}");
    assert!(line.matches("after").count() <= 1, "'after' twice: {line}");
    assert_eq!(
        host.state.status_json()["last_attempt"]["result"],
        "timed-out"
    );
}

/// A file name longer than any file system allows (NAME_MAX is 255 bytes):
/// Git stores it; no checkout can create it.
fn commit_an_uncheckoutable_file(origin: &Origin) -> String {
    let dir = origin.path();
    // The content comes from a file beside the work tree, not in it.
    let content = origin.root().join("uncheckoutable-blob");
    fs::write(&content, "cannot be checked out\n").expect("write the blob's content");
    let blob = git(
        dir,
        &["hash-object", "-w", content.to_str().expect("UTF-8 path")],
    );
    let name = "n".repeat(300);
    git(
        dir,
        &[
            "update-index",
            "--add",
            "--cacheinfo",
            &format!("100644,{blob},{name}"),
        ],
    );
    git(
        dir,
        &["commit", "-q", "-m", "a name too long for any file system"],
    );
    git(dir, &["rev-parse", "HEAD"])
}

#[test]
fn remote_commit_is_kept_when_the_checkout_fails_after_a_good_fetch() {
    let (origin, first) = recording_origin();
    let host = Machine::new();
    host.pass(&origin.url(), &[]).assert_code(0);
    let second = commit_an_uncheckoutable_file(&origin);

    let run = host.pass(&origin.url(), &[]);
    assert_ne!(run.code, Some(0), "the checkout should have failed:\n{run}");
    assert_eq!(
        host.state.current().as_deref(),
        Some(first.as_str()),
        "{run}"
    );
    let status = host.state.status_json();
    assert_eq!(
        status["remote_commit"],
        second.as_str(),
        "{status:#}\n{run}"
    );
    assert_eq!(status["classification"], "behind", "{status:#}");
    assert_eq!(host.runs(), vec![first]);
}

/// With `-v`, a retry would show (`retrying in ... ms`); the URL must be
/// named once, when the options are read, and never tried.
#[test]
fn malformed_webhook_url_is_reported_once_and_never_retried() {
    let (origin, head) = recording_origin();
    let receiver = Receiver::start(Vec::new());
    let near_miss = format!("{} x", receiver.url("/hook"));
    let receiver_host = format!("http://{}", receiver.addr());
    for (url, shown) in [
        ("http://exa mple.com/x", "http://exa mple.com"),
        (near_miss.as_str(), receiver_host.as_str()),
    ] {
        let host = Machine::new();
        let run = host.pass(&origin.url(), &["-v", "--webhook-url", url]);
        run.assert_code(0);
        let mentions: Vec<&str> = run.stderr.lines().filter(|l| l.contains(shown)).collect();
        assert_eq!(mentions.len(), 1, "{url:?} should be reported once:\n{run}");
        assert!(
            !run.stderr.contains("retrying"),
            "{url:?} was retried:\n{run}"
        );
        assert_eq!(host.runs(), vec![head.clone()]);
    }
    assert_eq!(receiver.requests().len(), 0);
}

// ---------------------------------------------------------------------------
// 11. An entrypoint the kernel cannot execute
// ---------------------------------------------------------------------------

/// Runs every case even when one fails, then fails naming all that did.
fn each_case<T>(cases: Vec<(&str, T)>, check: impl Fn(T)) {
    let mut failed = Vec::new();
    for (name, case) in cases {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(case)));
        if outcome.is_err() {
            failed.push(name.to_owned());
        }
    }
    assert!(failed.is_empty(), "failed cases (see above): {failed:?}");
}

#[test]
fn entrypoint_that_cannot_be_executed_is_invalid_with_the_reason() {
    let cases: Vec<(&str, (&str, &[&str]))> = vec![
        (
            "CRLF after #!",
            ("#!/bin/sh\r\necho hi\r\n", &["CRLF", "carriage return"]),
        ),
        (
            "missing interpreter",
            ("#!/usr/bin/python4\nprint('hi')\n", &["/usr/bin/python4"]),
        ),
        (
            "no #! line",
            ("echo this script names no interpreter\n", &["#!"]),
        ),
    ];
    each_case(cases, |(content, hints)| {
        let mut origin = Origin::new();
        origin.commit(&[("run.sh", content)], "cannot be executed");
        git(origin.path(), &["update-index", "--chmod=+x", "run.sh"]);
        origin.amend("cannot be executed, executable");
        let host = Machine::new();
        let run = host.pass(&origin.url(), &[]);
        run.assert_code(6);
        run.assert_no_panic();
        assert!(
            hints.iter().any(|h| run.stderr.contains(h)),
            "the message should mention one of {hints:?}:\n{run}"
        );
        let status = host.state.status_json();
        assert_eq!(
            status["last_attempt"]["result"], "invalid-entrypoint",
            "{status:#}\n{run}"
        );
        assert!(status["deployed"].is_null(), "{status:#}");
    });
}

// ---------------------------------------------------------------------------
// 12. Switching --branch between release and release/v2
// ---------------------------------------------------------------------------

#[test]
fn switching_branch_between_release_and_release_slash_v2_works_both_ways() {
    let (mut origin, first) = recording_origin();
    let url = origin.url();
    let host = Machine::new();
    origin.branch("release");
    let run = host.pass(&url, &["--branch", "release"]);
    run.assert_code(0);
    assert_eq!(host.runs(), vec![first.clone()]);

    // `release` and `release/v2` cannot exist side by side: one replaces the other.
    let second = origin.commit(&[("app.conf", "version 2\n")], "second");
    git(origin.path(), &["branch", "-D", "release"]);
    origin.branch("release/v2");
    for n in 0..2 {
        let run = host.pass(&url, &["--branch", "release/v2"]);
        run.assert_code(0);
        run.assert_no_panic();
        assert_eq!(
            host.state.current().as_deref(),
            Some(second.as_str()),
            "pass {n}:\n{run}"
        );
    }

    let third = origin.commit(&[("app.conf", "version 3\n")], "third");
    git(origin.path(), &["branch", "-D", "release/v2"]);
    origin.branch("release");
    for n in 0..2 {
        let run = host.pass(&url, &["--branch", "release"]);
        run.assert_code(0);
        assert_eq!(
            host.state.current().as_deref(),
            Some(third.as_str()),
            "pass {n}:\n{run}"
        );
    }
    assert_eq!(host.runs(), vec![first, second, third]);
}

// ---------------------------------------------------------------------------
// 13. A damaged cache heals
// ---------------------------------------------------------------------------

/// The pack files (`*.pack`, `*.idx`) of the cache.
fn pack_files(host: &Machine, ext: &str) -> Vec<PathBuf> {
    let dir = host.cache().join("objects").join("pack");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("read objects/pack")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.{ext} in {}", dir.display());
    files
}

#[test]
fn damaged_cache_heals_and_the_deployed_tree_stays_until_the_new_commit_applies() {
    type Damage = fn(&Machine);
    let cases: Vec<(&str, Damage)> = vec![
        ("truncated pack", |host| {
            for pack in pack_files(host, "pack") {
                let len = fs::metadata(&pack).expect("pack size").len();
                let file = fs::OpenOptions::new()
                    .write(true)
                    .open(&pack)
                    .expect("open the pack");
                file.set_len(len / 2).expect("truncate the pack");
            }
        }),
        ("deleted .idx", |host| {
            for idx in pack_files(host, "idx") {
                fs::remove_file(idx).expect("remove the index");
            }
        }),
        ("deleted refs", |host| {
            fs::remove_dir_all(host.cache().join("refs")).expect("remove refs");
            let _ = fs::remove_file(host.cache().join("packed-refs"));
        }),
        ("deleted HEAD", |host| {
            fs::remove_file(host.cache().join("HEAD")).expect("remove HEAD");
        }),
        ("garbage config", |host| {
            fs::write(
                host.cache().join("config"),
                "[core\n\0\u{1}garbage = = =\n[[[\n",
            )
            .expect("write garbage");
        }),
        ("a file instead of cache.git", |host| {
            fs::remove_dir_all(host.cache()).expect("remove the cache");
            fs::write(host.cache(), "not a repository\n").expect("write a file");
        }),
    ];
    each_case(cases, |damage| {
        let (mut origin, first) = recording_origin();
        let host = Machine::new();
        host.pass(&origin.url(), &[]).assert_code(0);
        damage(&host);
        let second = origin.commit(&[("app.conf", "version 2\n")], "second");

        let run = host.pass(&origin.url(), &[]);
        run.assert_code(0);
        run.assert_no_panic();
        assert_eq!(
            host.state.current().as_deref(),
            Some(second.as_str()),
            "{run}"
        );
        assert_eq!(host.runs(), vec![first.clone(), second.clone()], "{run}");
        let kept = host
            .state
            .path()
            .join("trees")
            .join(&first)
            .join("app.conf");
        assert_eq!(
            fs::read_to_string(&kept).expect("the previously deployed tree"),
            "version 1\n"
        );
        host.pass(&origin.url(), &[]).assert_code(0);
    });
}

// ---------------------------------------------------------------------------
// 14. A retry time far ahead
// ---------------------------------------------------------------------------

#[test]
fn retry_time_recorded_while_the_clock_was_far_ahead_does_not_pin_the_retry() {
    let host = Machine::new();
    let ok = host.file("ok");
    let script = format!(
        "#!/bin/sh\nprintf '%s\\n' \"$GITOPS_COMMIT\" >> \"$GITOPS_STATE_DIR/ran\"\n[ -e '{}' ]\n",
        ok.display()
    );
    let mut origin = Origin::new();
    let head = origin.commit(&[("run.sh", &script)], "fails until ok exists");
    host.pass(&origin.url(), &[]).assert_code(5);
    // Within the backoff, a plain pass waits.
    host.pass(&origin.url(), &[]).assert_code(5);
    assert_eq!(host.runs().len(), 1);

    let mut state = host.state.state_json();
    let year_ahead = Utc::now() + chrono::Duration::days(365);
    state["failing"]["next_retry_at"] = Value::String(year_ahead.to_rfc3339());
    host.write_state(&state);
    fs::write(&ok, "").expect("let the entrypoint succeed");

    let run = host.pass(&origin.url(), &[]);
    run.assert_code(0);
    assert_eq!(host.runs(), vec![head.clone(), head.clone()], "{run}");
    assert_eq!(
        host.state.status_json()["deployed"]["commit"],
        head.as_str()
    );
}

// ---------------------------------------------------------------------------
// 15. A deployed tree missing during a Git outage
// ---------------------------------------------------------------------------

/// Makes the origin unreachable (its directory moves away) until dropped.
struct Outage<'a> {
    origin: &'a Origin,
    aside: PathBuf,
}

impl<'a> Outage<'a> {
    fn start(origin: &'a Origin) -> Outage<'a> {
        let aside = origin.root().join("away");
        fs::rename(origin.path(), &aside).expect("move the origin away");
        Outage { origin, aside }
    }
}

impl Drop for Outage<'_> {
    fn drop(&mut self) {
        let _ = fs::rename(&self.aside, self.origin.path());
    }
}

#[test]
fn missing_deployed_tree_during_a_git_outage_keeps_the_reboot_pending() {
    let later = Utc::now() + chrono::Duration::hours(2);
    let mut origin = Origin::new();
    let head = origin.commit(
        &[
            ("run.sh", RECORD),
            ("reboot-at", &format!("{}\n", rfc3339(later))),
        ],
        "reboot tonight",
    );
    let host = Machine::new();
    host.pass(&origin.url(), &[]).assert_code(0);
    assert_eq!(host.state.status_json()["reboot"]["status"], "pending");

    fs::remove_dir_all(host.state.path().join("trees").join(&head)).expect("remove the tree");
    fs::remove_file(host.state.path().join("current")).expect("remove current");
    let outage = Outage::start(&origin);
    let run = host.pass(&origin.url(), &[]);
    run.assert_code(3);
    let status = host.state.status_json();
    drop(outage);
    assert_eq!(status["reboot"]["status"], "pending", "{status:#}\n{run}");
    assert_eq!(
        host.state.current().as_deref(),
        Some(head.as_str()),
        "current was not restored:\n{run}"
    );
    assert!(
        host.state
            .path()
            .join("current")
            .join("reboot-at")
            .is_file(),
        "{run}"
    );
    assert_eq!(host.runs(), vec![head]);
    assert_eq!(host.reboots(), 0);
}

// ---------------------------------------------------------------------------
// 16. Over protocol v0/v1 the first fetch was not shallow
// ---------------------------------------------------------------------------

#[test]
fn first_fetch_over_protocol_v1_says_it_cannot_be_shallow_and_v2_is_shallow() {
    let (mut origin, _) = recording_origin();
    origin.commit(&[("app.conf", "version 2\n")], "second");
    let head = origin.commit(&[("app.conf", "version 3\n")], "third");
    let notice = "protocol v0/v1";

    let v1 = Machine::new();
    let run = run(v1
        .cmd(&origin.url(), &[])
        .env("GIT_CONFIG_COUNT", "1")
        .env("GIT_CONFIG_KEY_0", "protocol.version")
        .env("GIT_CONFIG_VALUE_0", "1"));
    run.assert_code(0);
    assert_eq!(v1.runs(), vec![head.clone()]);
    assert!(
        run.stderr.contains(notice),
        "the log should say the fetch was not shallow:\n{run}"
    );

    let v2 = Machine::new();
    let run = v2.pass(&origin.url(), &[]);
    run.assert_code(0);
    assert!(!run.stderr.contains(notice), "{run}");
    assert!(
        v2.cache().join("shallow").is_file(),
        "the cache should be shallow"
    );
    assert_eq!(
        v2.cache_git(&["rev-list", "--count", "refs/remotes/origin/main"]),
        "1"
    );
}

// ---------------------------------------------------------------------------
// 17. status forgot the remote tip after a failed fetch
// ---------------------------------------------------------------------------

#[test]
fn status_keeps_the_remote_tip_after_a_failed_fetch() {
    let (origin, head) = recording_origin();
    let host = Machine::new();
    host.pass(&origin.url(), &[]).assert_code(0);
    host.pass(&origin.url(), &[]).assert_code(0);
    let before = host.state.status_json();
    assert_eq!(before["remote_commit"], head.as_str(), "{before:#}");
    assert_eq!(before["classification"], "up-to-date", "{before:#}");

    let outage = Outage::start(&origin);
    let run = host.pass(&origin.url(), &[]);
    drop(outage);
    run.assert_code(3);
    let after = host.state.status_json();
    assert_eq!(after["remote_commit"], head.as_str(), "{after:#}");
    assert_eq!(after["classification"], "up-to-date", "{after:#}");
    assert_eq!(after["last_pass"]["exit_code"], 3, "{after:#}");
}

// ---------------------------------------------------------------------------
// 18. A refused state deepened the whole history on every pass
// ---------------------------------------------------------------------------

#[test]
fn refused_unrelated_history_is_deepened_once_not_on_every_pass() {
    let (mut origin, _) = recording_origin();
    origin.commit(&[("app.conf", "version 2\n")], "second");
    let deployed = origin.commit(&[("app.conf", "version 3\n")], "third");
    let host = Machine::new();
    host.pass(&origin.url(), &[]).assert_code(0);

    // The branch now holds unrelated history; the old commits are gone upstream.
    let dir = origin.path().to_path_buf();
    git(&dir, &["checkout", "-q", "--orphan", "unrelated"]);
    origin.commit(&[("app.conf", "unrelated\n")], "unrelated root");
    git(&dir, &["branch", "-D", "main"]);
    git(&dir, &["branch", "-m", "main"]);
    git(&dir, &["reflog", "expire", "--expire=now", "--all"]);
    git(&dir, &["gc", "-q", "--prune=now"]);

    let needle = "history is incomplete here; fetching all of";
    let mut deepened = 0;
    for n in 0..3 {
        let run = host.pass(&origin.url(), &[]);
        run.assert_code(4);
        deepened += run.stderr.matches(needle).count();
        assert!(deepened <= 1, "pass {n} fetched all history again:\n{run}");
    }
    assert_eq!(deepened, 1);
    assert_eq!(host.state.current().as_deref(), Some(deployed.as_str()));
}

// ---------------------------------------------------------------------------
// 19. A branch pointing at an annotated tag
// ---------------------------------------------------------------------------

/// Tags HEAD with an annotated tag and points `main` at the tag object, as a
/// server-side tool might; returns the tag object's id.
fn point_main_at_an_annotated_tag(origin: &Origin, name: &str) -> String {
    let dir = origin.path();
    git(dir, &["tag", "-a", name, "-m", &format!("release {name}")]);
    let tag = git(dir, &["rev-parse", &format!("refs/tags/{name}")]);
    assert_eq!(git(dir, &["cat-file", "-t", &tag]), "tag");
    // `git update-ref` refuses a non-commit for a branch; write the ref itself.
    fs::write(
        origin.git_dir().join("refs").join("heads").join("main"),
        format!("{tag}\n"),
    )
    .expect("point main at the tag");
    tag
}

#[test]
fn branch_pointing_at_an_annotated_tag_deploys_the_tagged_commit() {
    let (mut origin, first) = recording_origin();
    let host = Machine::new();
    host.pass(&origin.url(), &[]).assert_code(0);

    let second = origin.commit(&[("app.conf", "version 2\n")], "second");
    let tag = point_main_at_an_annotated_tag(&origin, "v2");
    for n in 0..2 {
        let run = host.pass(&origin.url(), &[]);
        run.assert_code(0);
        assert_eq!(
            host.state.current().as_deref(),
            Some(second.as_str()),
            "pass {n}:\n{run}"
        );
    }
    assert_eq!(host.runs(), vec![first, second.clone()]);
    let status = host.state.status_json();
    assert_eq!(status["deployed"]["commit"], second.as_str(), "{status:#}");
    assert_eq!(status["remote_commit"], second.as_str(), "{status:#}");
    let text = host.state.status_text().stdout;
    assert!(
        !text.contains(&tag[..12]),
        "status shows the tag id:\n{text}"
    );

    // A first deployment from such a branch, too.
    let fresh = Machine::new();
    fresh.pass(&origin.url(), &[]).assert_code(0);
    assert_eq!(fresh.runs(), vec![second]);
}

// ---------------------------------------------------------------------------
// 20. Logs written while the clock was ahead evicted new ones
// ---------------------------------------------------------------------------

#[test]
fn logs_from_a_clock_far_ahead_do_not_evict_the_newest_ones() {
    let mut origin = Origin::new();
    origin.commit(
        &[("run.sh", "#!/bin/sh\necho failing\nexit 1\n")],
        "always fails",
    );
    let host = Machine::new();
    host.pass(&origin.url(), &[]).assert_code(5);

    let logs = host.state.path().join("logs");
    let future = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(4_070_908_800); // 2099-01-01
    for n in 0..10 {
        let path = logs.join(format!("209901{:02}T000000.000Z-{:012x}.log", n + 1, n));
        fs::write(&path, "written while the clock was far ahead\n").expect("write a log");
        let file = fs::File::options()
            .write(true)
            .open(&path)
            .expect("open the log");
        file.set_modified(future).expect("date the log in 2099");
    }

    let mut attempts = Vec::new();
    for _ in 0..3 {
        host.pass(&origin.url(), &["--once"]).assert_code(5);
        let log = host.state.status_json()["last_log"]
            .as_str()
            .expect("a log")
            .to_owned();
        attempts.push(PathBuf::from(log));
    }
    let (before, newest) = (&attempts[1], &attempts[2]);
    assert_ne!(before, newest);
    assert!(
        newest.is_file(),
        "the newest attempt's log is gone: {}",
        newest.display()
    );
    assert!(
        before.is_file(),
        "the log of the attempt before is gone: {}",
        before.display()
    );
}
