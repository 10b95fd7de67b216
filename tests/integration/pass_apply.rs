//! Integration tests for the apply half of a pass: the entrypoint's
//! environment and output, failures and retry backoff, timeouts, invalid
//! entrypoints, the lock, recovery after a killed pass, tree housekeeping,
//! bad input, option precedence and `status`.
//!
//! Every test uses `file://` origins built with [`Origin`] and its own state
//! directory. Nothing here depends on timing: waits poll for a condition
//! with a bounded deadline.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::common::{bin, pid_alive, run, wait_until, Origin, Run, Spawned, StateDir};
use chrono::{DateTime, Utc};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// A succeeding entrypoint.
const OK_SCRIPT: &str = "#!/bin/sh\necho deployed\n";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The last attempt recorded in `state.json` (`attempt`, or `last_attempt`).
fn state_file_attempt(state: &StateDir) -> Value {
    let doc = state.state_json();
    doc.get("attempt")
        .or_else(|| doc.get("last_attempt"))
        .cloned()
        .unwrap_or(Value::Null)
}

fn parse_time(value: &Value) -> DateTime<Utc> {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("expected a timestamp, got {value}"));
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|err| panic!("bad timestamp {text:?}: {err}"))
        .with_timezone(&Utc)
}

/// Waits for a pid file (written atomically by the scripts) and reads it.
#[track_caller]
fn wait_for_pid(path: &Path) -> i32 {
    let mut pid = None;
    wait_until(&format!("pid file {}", path.display()), || {
        pid = fs::read_to_string(path)
            .ok()
            .and_then(|text| text.trim().parse().ok());
        pid.is_some()
    });
    pid.expect("pid read")
}

#[track_caller]
fn wait_pid_gone(pid: i32, what: &str) {
    wait_until(&format!("{what} (pid {pid}) to be gone"), || {
        !pid_alive(pid)
    });
}

/// Kills, at the end of a test, the process groups whose leaders' pids the
/// test's entrypoints wrote to these files, so a failing test leaves no
/// `sleep 1000` behind.
struct Reaper(Vec<PathBuf>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for file in &self.0 {
            let Some(pid) = fs::read_to_string(file)
                .ok()
                .and_then(|t| t.trim().parse::<i32>().ok())
            else {
                continue;
            };
            if pid > 1 && pid_alive(pid) {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

/// `KEY=VALUE` lines of an `env` dump.
fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn short(commit: &str) -> &str {
    &commit[..12]
}

/// Asserts a run failed with `code` and exactly one clear error line that
/// contains `needle`, without a panic.
#[track_caller]
fn expect_clean_error(out: &Run, code: i32, needle: &str) {
    out.assert_code(code);
    let line = out.one_error_line();
    assert!(
        line.contains(needle),
        "error line should mention {needle:?}:\n{out}"
    );
}

// ---------------------------------------------------------------------------
// 1. Environment contract
// ---------------------------------------------------------------------------

const ENV_DUMP_SCRIPT: &str = "#!/bin/sh\n\
out=\"$GITOPS_STATE_DIR/dump-$GITOPS_REASON\"\n\
env > \"$out.env\"\n\
pwd -P > \"$out.pwd\"\n\
umask > \"$out.umask\"\n\
readlink /proc/$$/fd/0 > \"$out.stdin\"\n\
echo $$ > \"$out.pid\"\n\
cat /proc/$$/stat > \"$out.stat\"\n";

const LEAKY_REPO: &str = "https://deploy:hunter2secret@example.com/leak.git";

fn read_dump(state: &Path, reason: &str) -> (BTreeMap<String, String>, String, String) {
    let base = state.join(format!("dump-{reason}"));
    let read = |ext: &str| {
        let path = base.with_extension(ext);
        fs::read_to_string(&path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()))
    };
    let env_text = read("env");
    assert!(
        !env_text.contains("hunter2secret") && !env_text.contains("leak.git"),
        "the parent's GITOPS_REPO leaked into the entrypoint:\n{env_text}"
    );
    assert_eq!(
        read("stdin").trim(),
        "/dev/null",
        "stdin of the {reason} entrypoint"
    );
    // Fields after the command name: state, ppid, pgrp, ...
    let pid = read("pid").trim().to_owned();
    let stat = read("stat");
    let pgrp = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(2))
        .unwrap_or_else(|| panic!("cannot parse /proc/PID/stat: {stat}"));
    assert_eq!(
        pgrp, pid,
        "the {reason} entrypoint should lead its own process group"
    );
    (
        parse_env(&env_text),
        read("pwd").trim().to_owned(),
        read("umask").trim().to_owned(),
    )
}

#[track_caller]
fn check_gitops_env(env: &BTreeMap<String, String>, expected: &[(&str, &str)], where_: &str) {
    let gitops: BTreeMap<&str, &str> = env
        .iter()
        .filter(|(k, _)| k.starts_with("GITOPS_"))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let want: BTreeMap<&str, &str> = expected.iter().copied().collect();
    assert_eq!(
        gitops, want,
        "GITOPS_* variables of the {where_} entrypoint"
    );
}

#[test]
fn entrypoint_environment_contract_on_initial_and_new_deploys() {
    let mut origin = Origin::new();
    let c1 = origin.commit(&[("run.sh", ENV_DUMP_SCRIPT)], "first");
    let state = StateDir::new();
    let url = origin.url();
    let state_str = state.arg().to_owned();
    // Issue 14: every run may report drift it corrected in this file.
    let drift = format!("{state_str}/drift");

    let go = || {
        let mut cmd = state.pass_cmd(&url, &[]);
        cmd.env("GITOPS_REPO", LEAKY_REPO)
            .env("GITOPS_FOO", "inherited-value")
            .env("UNRELATED_VAR", "kept");
        run(&mut cmd)
    };

    go().assert_code(0);
    let canonical_state = state.path().canonicalize().expect("canonical state dir");
    let (env, pwd, umask) = read_dump(state.path(), "initial");
    check_gitops_env(
        &env,
        &[
            ("GITOPS_COMMIT", &c1),
            ("GITOPS_PREVIOUS_COMMIT", ""),
            ("GITOPS_BRANCH", "main"),
            ("GITOPS_REPO", &url),
            ("GITOPS_REASON", "initial"),
            ("GITOPS_STATE_DIR", &state_str),
            ("GITOPS_DRIFT_FILE", &drift),
        ],
        "first",
    );
    assert_eq!(
        env.get("UNRELATED_VAR").map(String::as_str),
        Some("kept"),
        "ordinary variables are inherited"
    );
    assert_eq!(
        Path::new(&pwd),
        canonical_state.join("trees").join(&c1),
        "cwd of the first entrypoint"
    );
    assert_eq!(umask, "0077", "umask of the first entrypoint");

    let c2 = origin.commit(&[("app.conf", "v = 2\n")], "second");
    go().assert_code(0);
    let (env, pwd, umask) = read_dump(state.path(), "new");
    check_gitops_env(
        &env,
        &[
            ("GITOPS_COMMIT", &c2),
            ("GITOPS_PREVIOUS_COMMIT", &c1),
            ("GITOPS_BRANCH", "main"),
            ("GITOPS_REPO", &url),
            ("GITOPS_REASON", "new"),
            ("GITOPS_STATE_DIR", &state_str),
            ("GITOPS_DRIFT_FILE", &drift),
        ],
        "second",
    );
    assert_eq!(
        Path::new(&pwd),
        canonical_state.join("trees").join(&c2),
        "cwd of the second entrypoint"
    );
    assert_eq!(umask, "0077", "umask of the second entrypoint");
    assert_eq!(state.current().as_deref(), Some(c2.as_str()));
}

// ---------------------------------------------------------------------------
// 2. Output
// ---------------------------------------------------------------------------

#[test]
fn entrypoint_stdout_and_stderr_reach_stderr_and_the_log_file() {
    let mut origin = Origin::new();
    origin.commit(
        &[(
            "run.sh",
            "#!/bin/sh\necho 'line-on-stdout-4711'\necho 'line-on-stderr-4712' >&2\n",
        )],
        "noisy",
    );
    let state = StateDir::new();
    let out = state.pass(&origin.url(), &[]);
    out.assert_code(0);
    for line in ["line-on-stdout-4711", "line-on-stderr-4712"] {
        assert!(
            out.stderr.lines().any(|l| l.contains(line)),
            "{line} missing from gitops-run's stderr:\n{}",
            out
        );
        assert!(
            !out.stdout.contains(line),
            "{line} should go to stderr, not stdout:\n{}",
            out
        );
    }

    let status = state.status_json();
    let log = status["last_log"]
        .as_str()
        .unwrap_or_else(|| panic!("status has no last_log: {status:#}"));
    let log = Path::new(log);
    assert!(
        log.starts_with(state.path().join("logs")),
        "log {} should live in STATE/logs",
        log.display()
    );
    let name = log.file_name().unwrap().to_string_lossy().into_owned();
    let head = origin.head();
    assert!(
        name.ends_with(&format!("-{}.log", short(&head))),
        "log name {name} should end with -<short12>.log"
    );
    let text = fs::read_to_string(log).expect("read the log file");
    for line in ["line-on-stdout-4711", "line-on-stderr-4712"] {
        assert!(
            text.lines().any(|l| l.contains(line)),
            "{line} missing from {}:\n{text}",
            log.display()
        );
    }
}

// ---------------------------------------------------------------------------
// 3. Failing entrypoint and retry backoff
// ---------------------------------------------------------------------------

fn recording_script(exit_code: i32) -> String {
    format!(
        "#!/bin/sh\necho \"$GITOPS_REASON $GITOPS_COMMIT\" >> \"$GITOPS_STATE_DIR/runs\"\nexit {exit_code}\n"
    )
}

#[test]
fn failing_entrypoint_keeps_previous_commit_and_backs_off() {
    let mut origin = Origin::new();
    let c1 = origin.commit(&[("run.sh", &recording_script(0))], "good");
    let state = StateDir::new();
    state.pass(&origin.url(), &[]).assert_code(0);
    assert_eq!(state.current().as_deref(), Some(c1.as_str()));

    // A failing commit.
    let c2 = origin.commit(&[("run.sh", &recording_script(3))], "broken");
    let before = Utc::now();
    let out = state.pass(&origin.url(), &[]);
    let after = Utc::now();
    out.assert_code(5);
    assert_eq!(
        state.lines("runs"),
        vec![format!("initial {c1}"), format!("new {c2}")]
    );
    assert_eq!(
        state.current().as_deref(),
        Some(c1.as_str()),
        "current must stay on the previous commit"
    );
    let status = state.status_json();
    assert_eq!(status["deployed"]["commit"], c1.as_str(), "{status:#}");
    assert_eq!(status["current"], c1.as_str(), "{status:#}");
    let attempt = &status["last_attempt"];
    assert_eq!(attempt["commit"], c2.as_str(), "{status:#}");
    assert_eq!(attempt["result"], "failed", "{status:#}");
    assert_eq!(attempt["exit_code"], 3, "{status:#}");
    assert_eq!(attempt["reason"], "new", "{status:#}");
    assert_eq!(status["consecutive_failures"], 1, "{status:#}");
    let next = parse_time(&status["next_retry_at"]);
    let finished = parse_time(&attempt["finished_at"]);
    let five = chrono::Duration::minutes(5);
    assert!(
        next >= before + five - chrono::Duration::seconds(1)
            && next <= after + five + chrono::Duration::seconds(1),
        "next_retry_at {next} should be ~5 minutes after the failure ({before} .. {after})"
    );
    assert!(
        (next - finished - five).num_seconds().abs() <= 1,
        "next_retry_at {next} should be 5 minutes after finished_at {finished}"
    );

    // A plain pass waits for the backoff and does not run the entrypoint.
    let out = state.pass(&origin.url(), &[]);
    out.assert_code(5);
    assert!(
        out.stderr.contains("next retry"),
        "a waiting pass should say when the next retry is:\n{}",
        out
    );
    assert_eq!(
        state.lines("runs").len(),
        2,
        "the entrypoint must not run while backing off"
    );
    assert_eq!(state.current().as_deref(), Some(c1.as_str()));

    // --once retries at once.
    let out = state.pass(&origin.url(), &["--once"]);
    out.assert_code(5);
    assert_eq!(state.lines("runs").last(), Some(&format!("retry {c2}")));
    assert_eq!(state.lines("runs").len(), 3);
    let status = state.status_json();
    assert_eq!(status["consecutive_failures"], 2, "{status:#}");
    assert_eq!(status["last_attempt"]["reason"], "retry", "{status:#}");
    assert_eq!(status["deployed"]["commit"], c1.as_str(), "{status:#}");
    let next = parse_time(&status["next_retry_at"]);
    let finished = parse_time(&status["last_attempt"]["finished_at"]);
    assert!(
        (next - finished - chrono::Duration::minutes(10))
            .num_seconds()
            .abs()
            <= 1,
        "second failure backs off 10 minutes: next {next}, finished {finished}"
    );

    // A newer commit, failing too, is tried at once by a plain pass and
    // starts its own failure count.
    let c3 = origin.commit(&[("run.sh", &recording_script(4))], "still broken");
    let out = state.pass(&origin.url(), &[]);
    out.assert_code(5);
    assert_eq!(state.lines("runs").last(), Some(&format!("new {c3}")));
    let status = state.status_json();
    assert_eq!(status["consecutive_failures"], 1, "{status:#}");
    assert_eq!(status["last_attempt"]["exit_code"], 4, "{status:#}");
    assert_eq!(state.current().as_deref(), Some(c1.as_str()));

    // A fixing commit is applied at once and clears the failures.
    let c4 = origin.commit(&[("run.sh", &recording_script(0))], "fixed");
    let out = state.pass(&origin.url(), &[]);
    out.assert_code(0);
    assert_eq!(state.lines("runs").last(), Some(&format!("new {c4}")));
    assert_eq!(state.current().as_deref(), Some(c4.as_str()));
    let status = state.status_json();
    assert_eq!(status["deployed"]["commit"], c4.as_str(), "{status:#}");
    assert_eq!(status["last_attempt"]["result"], "succeeded", "{status:#}");
    assert_eq!(status["consecutive_failures"], 0, "{status:#}");
    assert!(status["next_retry_at"].is_null(), "{status:#}");

    // And the next plain pass is up to date.
    let before = state.lines("runs").len();
    state.pass(&origin.url(), &[]).assert_code(0);
    assert_eq!(
        state.lines("runs").len(),
        before,
        "nothing runs when up to date"
    );
}

// ---------------------------------------------------------------------------
// 4. Timeout
// ---------------------------------------------------------------------------

#[test]
fn timeout_kills_the_whole_process_group() {
    let mut origin = Origin::new();
    origin.commit(
        &[(
            "run.sh",
            "#!/bin/sh\n\
             sleep 1000 &\n\
             echo $! > \"$GITOPS_STATE_DIR/bg.pid.tmp\" && mv \"$GITOPS_STATE_DIR/bg.pid.tmp\" \"$GITOPS_STATE_DIR/bg.pid\"\n\
             echo $$ > \"$GITOPS_STATE_DIR/main.pid.tmp\" && mv \"$GITOPS_STATE_DIR/main.pid.tmp\" \"$GITOPS_STATE_DIR/main.pid\"\n\
             sleep 1000\n",
        )],
        "hangs",
    );
    let state = StateDir::new();
    let _reaper = Reaper(vec![
        state.path().join("main.pid"),
        state.path().join("bg.pid"),
    ]);

    let out = state.pass(&origin.url(), &["--timeout", "2s"]);
    out.assert_code(5);
    let status = state.status_json();
    assert_eq!(status["last_attempt"]["result"], "timed-out", "{status:#}");
    assert!(status["deployed"].is_null(), "{status:#}");
    assert!(state.current().is_none(), "nothing is deployed");

    let bg = wait_for_pid(&state.path().join("bg.pid"));
    let main = wait_for_pid(&state.path().join("main.pid"));
    wait_pid_gone(main, "the timed-out entrypoint");
    wait_pid_gone(bg, "the entrypoint's background child");
}

// ---------------------------------------------------------------------------
// 5. Invalid entrypoints
// ---------------------------------------------------------------------------

/// A script that creates `marker` when it runs.
fn marker_script(marker: &Path) -> String {
    format!("#!/bin/sh\ntouch '{}'\n", marker.display())
}

#[test]
fn invalid_entrypoints_are_refused_and_nothing_runs() {
    let mut origin = Origin::new();
    let c1 = origin.commit(&[("run.sh", OK_SCRIPT)], "good");
    let state = StateDir::new();
    state.pass(&origin.url(), &[]).assert_code(0);

    let markers = state.dir().join("markers");
    fs::create_dir(&markers).unwrap();
    // Executable scripts outside the tree that must never run.
    let outside = state.dir().join("outside.sh");
    fs::write(&outside, marker_script(&markers.join("outside"))).unwrap();
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o755)).unwrap();
    let trap = state.path().join("trap.sh");
    fs::write(&trap, marker_script(&markers.join("trap"))).unwrap();
    fs::set_permissions(&trap, fs::Permissions::from_mode(0o755)).unwrap();

    // Every script in the repository would leave a marker, too.
    origin.commit(
        &[("run.sh", &marker_script(&markers.join("run.sh")))],
        "run.sh leaves a marker",
    );

    let check = |origin: &Origin, entrypoint: &str, case: &str| {
        let head = origin.head();
        let out = state.pass(&origin.url(), &["--entrypoint", entrypoint]);
        assert_eq!(out.code, Some(6), "{case}: expected exit 6, got:\n{}", out);
        let ran: Vec<_> = fs::read_dir(&markers)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(ran.is_empty(), "{case}: something ran: {ran:?}");
        assert_eq!(
            state.current().as_deref(),
            Some(c1.as_str()),
            "{case}: current must not change"
        );
        let status = state.status_json();
        assert_eq!(
            status["deployed"]["commit"],
            c1.as_str(),
            "{case}: {status:#}"
        );
        assert_eq!(
            status["last_attempt"]["commit"],
            head.as_str(),
            "{case}: {status:#}"
        );
        assert_eq!(
            status["last_attempt"]["result"], "invalid-entrypoint",
            "{case}: {status:#}"
        );
        assert!(
            out.stderr.contains(entrypoint),
            "{case}: the message should name the entrypoint:\n{}",
            out
        );
    };

    // Missing file.
    origin.commit(&[("a.txt", "1\n")], "no such entrypoint");
    check(&origin, "missing.sh", "missing file");

    // Not executable (mode 0644), although it is a shell script.
    let noexec = origin.path().join("noexec.sh");
    fs::write(&noexec, marker_script(&markers.join("noexec"))).unwrap();
    fs::set_permissions(&noexec, fs::Permissions::from_mode(0o644)).unwrap();
    origin.commit(&[], "non-executable entrypoint");
    check(&origin, "noexec.sh", "not executable");

    // '..' leaving the tree (STATE/trees/<sha>/../../trap.sh exists).
    origin.commit(&[("a.txt", "2\n")], "dot-dot");
    check(&origin, "../../trap.sh", "'..'");

    // Absolute paths can never name a file in any commit: a usage error (exit 2),
    // not a failure of the commit, and nothing runs.
    origin.commit(&[("a.txt", "3\n")], "absolute /bin/true");
    for absolute in ["/bin/true", outside.to_str().unwrap()] {
        let out = state.pass(&origin.url(), &["--entrypoint", absolute]);
        assert_eq!(out.code, Some(2), "absolute {absolute}:\n{out}");
        assert!(out.stderr.contains("absolute"), "{out}");
        let ran: Vec<_> = fs::read_dir(&markers).unwrap().collect();
        assert!(ran.is_empty(), "absolute {absolute}: something ran");
        assert_eq!(state.current().as_deref(), Some(c1.as_str()));
    }

    // Symlinks in the repository escaping the tree.
    symlink("/bin/sh", origin.path().join("to-sh")).unwrap();
    origin.commit(&[], "symlink to /bin/sh");
    check(&origin, "to-sh", "symlink to /bin/sh");
    symlink(&outside, origin.path().join("to-outside")).unwrap();
    origin.commit(&[], "symlink to an outside script");
    check(&origin, "to-outside", "absolute symlink to a script");
    symlink("../../trap.sh", origin.path().join("to-trap")).unwrap();
    origin.commit(&[], "relative symlink escaping the tree");
    check(&origin, "to-trap", "relative symlink escaping the tree");
}

// ---------------------------------------------------------------------------
// 6. Lock
// ---------------------------------------------------------------------------

#[test]
fn concurrent_pass_exits_zero_while_another_holds_the_lock() {
    let mut origin = Origin::new();
    let c1 = origin.commit(
        &[(
            "run.sh",
            "#!/bin/sh\n\
             echo \"$GITOPS_REASON\" >> \"$GITOPS_STATE_DIR/runs\"\n\
             n=0\n\
             while [ ! -e \"$GITOPS_STATE_DIR/release\" ] && [ $n -lt 1200 ]; do sleep 0.05; n=$((n+1)); done\n\
             [ -e \"$GITOPS_STATE_DIR/release\" ]\n",
        )],
        "blocks until released",
    );
    let state = StateDir::new();

    let mut first = Spawned::start(
        &mut state.pass_cmd(&origin.url(), &[]),
        &state.dir().join("first.stderr"),
    );
    wait_until("the first pass's entrypoint to start", || {
        state.lines("runs").len() == 1
    });

    let second = state.pass(&origin.url(), &[]);
    second.assert_code(0);
    assert!(
        second
            .stderr
            .lines()
            .any(|l| l.contains("another") && l.contains("pass holds the lock")),
        "the second pass should say another pass holds the lock:\n{}",
        second
    );
    assert_eq!(
        state.lines("runs").len(),
        1,
        "the second pass must not run the entrypoint"
    );

    fs::write(state.path().join("release"), "").unwrap();
    let status = first.wait();
    assert_eq!(status.code(), Some(0), "first pass:\n{}", first.log());
    assert_eq!(state.lines("runs"), vec!["initial".to_owned()]);
    assert_eq!(state.current().as_deref(), Some(c1.as_str()));
}

// ---------------------------------------------------------------------------
// 7. SIGKILL of gitops-run, and of the entrypoint
// ---------------------------------------------------------------------------

/// Records its reason; unless `STATE/no-sleep` exists, writes its pid and
/// its background sleep's pid and waits forever.
fn sleepy_script(variant: &str) -> String {
    format!(
        "#!/bin/sh\n\
         # variant {variant}\n\
         echo \"$GITOPS_REASON\" >> \"$GITOPS_STATE_DIR/runs\"\n\
         if [ -e \"$GITOPS_STATE_DIR/no-sleep\" ]; then exit 0; fi\n\
         sleep 1000 &\n\
         echo $! > \"$GITOPS_STATE_DIR/sleep.pid.tmp\" && mv \"$GITOPS_STATE_DIR/sleep.pid.tmp\" \"$GITOPS_STATE_DIR/sleep.pid\"\n\
         echo $$ > \"$GITOPS_STATE_DIR/ep.pid.tmp\" && mv \"$GITOPS_STATE_DIR/ep.pid.tmp\" \"$GITOPS_STATE_DIR/ep.pid\"\n\
         wait\n"
    )
}

/// Starts a plain pass, waits until its entrypoint runs and is recorded as
/// running in `state.json`, then SIGKILLs gitops-run. Returns the pids of the
/// orphaned entrypoint and its background sleep.
fn start_and_kill_pass(origin: &Origin, state: &StateDir, capture: &Path) -> (i32, i32) {
    let _ = fs::remove_file(state.path().join("ep.pid"));
    let _ = fs::remove_file(state.path().join("sleep.pid"));
    let mut pass = Spawned::start(&mut state.pass_cmd(&origin.url(), &[]), capture);
    let ep = wait_for_pid(&state.path().join("ep.pid"));
    let sleeper = wait_for_pid(&state.path().join("sleep.pid"));
    wait_until("state.json to record the running attempt's pid", || {
        let attempt = state_file_attempt(state);
        attempt["result"] == "running" && attempt["pid"] == ep
    });
    let status = pass.kill();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "gitops-run should have died of SIGKILL:\n{}",
        pass.log()
    );
    // The entrypoint survives its pass: it is in its own process group.
    assert!(
        pid_alive(ep),
        "the entrypoint should outlive the killed pass"
    );
    assert!(
        pid_alive(sleeper),
        "its child should outlive the killed pass"
    );
    let attempt = state_file_attempt(state);
    assert_eq!(attempt["result"], "running", "{attempt:#}");
    assert_eq!(attempt["pid"], ep, "{attempt:#}");
    (ep, sleeper)
}

#[test]
fn killed_pass_leaves_an_orphan_that_the_next_pass_stops() {
    let mut origin = Origin::new();
    let c1 = origin.commit(&[("run.sh", OK_SCRIPT)], "good");
    let state = StateDir::new();
    let _reaper = Reaper(vec![
        state.path().join("ep.pid"),
        state.path().join("sleep.pid"),
    ]);
    state.pass(&origin.url(), &[]).assert_code(0);

    // Scenario A: the next pass is `--once` and the script no longer sleeps.
    let c2 = origin.commit(&[("run.sh", &sleepy_script("a"))], "sleepy a");
    let (ep, sleeper) = start_and_kill_pass(&origin, &state, &state.dir().join("a.stderr"));
    assert_eq!(state.current().as_deref(), Some(c1.as_str()));
    state.state_json();

    fs::write(state.path().join("no-sleep"), "").unwrap();
    let out = state.pass(&origin.url(), &["--once"]);
    out.assert_code(0);
    wait_pid_gone(ep, "the orphaned entrypoint");
    wait_pid_gone(sleeper, "the orphaned entrypoint's child");
    assert!(
        out.stderr.contains(short(&c2)) && out.stderr.contains("interrupted"),
        "the pass should report the interrupted attempt of {}:\n{}",
        short(&c2),
        out
    );
    assert_eq!(
        state.lines("runs"),
        vec!["new", "retry"],
        "the interrupted attempt counts as failed and is retried"
    );
    assert_eq!(state.current().as_deref(), Some(c2.as_str()));
    let status = state.status_json();
    assert_eq!(status["deployed"]["commit"], c2.as_str(), "{status:#}");
    assert_eq!(status["last_attempt"]["result"], "succeeded", "{status:#}");
    assert_eq!(status["consecutive_failures"], 0, "{status:#}");
    state.state_json();

    // Scenario B: a plain pass after the kill records the attempt as
    // interrupted and waits for the backoff.
    fs::remove_file(state.path().join("no-sleep")).unwrap();
    let c3 = origin.commit(&[("run.sh", &sleepy_script("b"))], "sleepy b");
    let (ep, sleeper) = start_and_kill_pass(&origin, &state, &state.dir().join("b.stderr"));
    let out = state.pass(&origin.url(), &[]);
    out.assert_code(5);
    wait_pid_gone(ep, "the second orphaned entrypoint");
    wait_pid_gone(sleeper, "the second orphaned entrypoint's child");
    let status = state.status_json();
    assert_eq!(status["last_attempt"]["commit"], c3.as_str(), "{status:#}");
    assert_eq!(
        status["last_attempt"]["result"], "interrupted",
        "{status:#}"
    );
    assert_eq!(status["consecutive_failures"], 1, "{status:#}");
    assert_eq!(status["deployed"]["commit"], c2.as_str(), "{status:#}");
    assert_eq!(state.current().as_deref(), Some(c2.as_str()));
    assert!(state_file_attempt(&state)["pid"].is_null());

    // Fixed by a new commit: deployed at once by a plain pass.
    let c4 = origin.commit(&[("run.sh", OK_SCRIPT)], "fixed");
    state.pass(&origin.url(), &[]).assert_code(0);
    assert_eq!(state.current().as_deref(), Some(c4.as_str()));
    let status = state.status_json();
    assert_eq!(status["deployed"]["commit"], c4.as_str(), "{status:#}");
    assert_eq!(status["consecutive_failures"], 0, "{status:#}");
    state.state_json();
}

#[test]
fn sigkilled_entrypoint_is_a_failure_with_exit_code_137() {
    let mut origin = Origin::new();
    let c1 = origin.commit(&[("run.sh", OK_SCRIPT)], "good");
    let state = StateDir::new();
    let _reaper = Reaper(vec![state.path().join("ep.pid")]);
    state.pass(&origin.url(), &[]).assert_code(0);

    let c2 = origin.commit(
        &[(
            "run.sh",
            "#!/bin/sh\n\
             echo $$ > \"$GITOPS_STATE_DIR/ep.pid.tmp\" && mv \"$GITOPS_STATE_DIR/ep.pid.tmp\" \"$GITOPS_STATE_DIR/ep.pid\"\n\
             exec sleep 1000\n",
        )],
        "gets killed",
    );
    let mut running = Spawned::start(
        &mut state.pass_cmd(&origin.url(), &[]),
        &state.dir().join("pass.stderr"),
    );
    let ep = wait_for_pid(&state.path().join("ep.pid"));
    kill(Pid::from_raw(ep), Signal::SIGKILL).expect("SIGKILL the entrypoint");
    let status = running.wait();
    assert_eq!(status.code(), Some(5), "pass:\n{}", running.log());

    let doc = state.status_json();
    assert_eq!(doc["last_attempt"]["commit"], c2.as_str(), "{doc:#}");
    assert_eq!(doc["last_attempt"]["result"], "failed", "{doc:#}");
    assert_eq!(doc["last_attempt"]["exit_code"], 137, "{doc:#}");
    assert_eq!(doc["deployed"]["commit"], c1.as_str(), "{doc:#}");
    assert_eq!(doc["consecutive_failures"], 1, "{doc:#}");
    assert_eq!(state.current().as_deref(), Some(c1.as_str()));
    state.state_json();
}

// ---------------------------------------------------------------------------
// 8. Crash leftovers
// ---------------------------------------------------------------------------

#[test]
fn temporary_leftovers_are_removed_by_the_next_pass() {
    let mut origin = Origin::new();
    let c1 = origin.commit(&[("run.sh", OK_SCRIPT)], "good");
    let state = StateDir::new();
    fs::create_dir(state.path()).unwrap();
    fs::set_permissions(state.path(), fs::Permissions::from_mode(0o700)).unwrap();
    let tmp_tree = state.path().join("trees").join(".tmp-xyz");
    fs::create_dir_all(tmp_tree.join("sub")).unwrap();
    fs::write(tmp_tree.join("sub").join("file"), "half-made\n").unwrap();
    let tmp_file = state.path().join(".tmp-abc");
    fs::write(&tmp_file, "half-written state\n").unwrap();

    state.pass(&origin.url(), &[]).assert_code(0);
    assert!(!tmp_tree.exists(), "{} should be gone", tmp_tree.display());
    assert!(!tmp_file.exists(), "{} should be gone", tmp_file.display());
    assert_eq!(state.current().as_deref(), Some(c1.as_str()));

    // Also after a deploy, on an up-to-date pass.
    fs::create_dir_all(tmp_tree.join("sub")).unwrap();
    fs::write(&tmp_file, "again\n").unwrap();
    state.pass(&origin.url(), &[]).assert_code(0);
    assert!(!tmp_tree.exists(), "{} should be gone", tmp_tree.display());
    assert!(!tmp_file.exists(), "{} should be gone", tmp_file.display());
    let leftovers: Vec<_> = fs::read_dir(state.path())
        .unwrap()
        .chain(fs::read_dir(state.path().join("trees")).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "leftovers: {leftovers:?}");
}

// ---------------------------------------------------------------------------
// 9. keep-trees
// ---------------------------------------------------------------------------

#[test]
fn keep_trees_limits_the_checked_out_trees() {
    let mut origin = Origin::new();
    let state = StateDir::new();
    let mut commits = Vec::new();
    for n in 1..=4 {
        commits.push(origin.commit(
            &[("run.sh", OK_SCRIPT), ("version", &format!("{n}\n"))],
            &format!("deploy {n}"),
        ));
        state
            .pass(&origin.url(), &["--keep-trees", "2"])
            .assert_code(0);
    }
    let mut trees: Vec<String> = fs::read_dir(state.path().join("trees"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    trees.sort();
    assert_eq!(trees.len(), 2, "trees: {trees:?}");
    let current = state.current().expect("current is set");
    assert_eq!(current, commits[3]);
    assert!(
        trees.contains(&current),
        "current's tree is kept: {trees:?}"
    );
    assert!(
        trees.contains(&commits[2]),
        "the previously deployed tree is the other one kept: {trees:?}"
    );
    assert!(state.path().join("current").join("version").is_file());
}

// ---------------------------------------------------------------------------
// 10. Bad input
// ---------------------------------------------------------------------------

#[test]
fn usage_errors_exit_2_with_one_clear_line() {
    let mut origin = Origin::new();
    origin.commit(&[("run.sh", OK_SCRIPT)], "good");
    let url = origin.url();
    let state = StateDir::new();

    let out = run(&mut state.pass_cmd(&url, &["--bogus-option"]));
    expect_clean_error(&out, 2, "--bogus-option");

    let out = run(bin().arg("--state-dir").arg(state.path()));
    expect_clean_error(&out, 2, "repo");

    let out = run(&mut state.pass_cmd("ftp://x/y", &[]));
    expect_clean_error(&out, 2, "ftp");

    let out = run(&mut state.pass_cmd(&url, &["--timeout", "bogus"]));
    expect_clean_error(&out, 2, "bogus");

    let config = state.dir().join("bad.conf");
    fs::write(&config, format!("GITOPS_REPO={url}\nGITOPS_BRANHC=main\n")).unwrap();
    let out = run(bin()
        .arg("--config")
        .arg(&config)
        .arg("--state-dir")
        .arg(state.path()));
    expect_clean_error(&out, 2, "GITOPS_BRANHC");

    let missing = state.dir().join("no-such.conf");
    let out = run(bin()
        .arg("--config")
        .arg(&missing)
        .arg("--state-dir")
        .arg(state.path()));
    expect_clean_error(&out, 2, "no-such.conf");

    // A directory cannot be read as a file, even by root.
    let unreadable = state.dir().join("conf-dir");
    fs::create_dir(&unreadable).unwrap();
    let out = run(bin()
        .arg("--config")
        .arg(&unreadable)
        .arg("--state-dir")
        .arg(state.path()));
    expect_clean_error(&out, 2, "conf-dir");

    assert!(
        !state.path().join("state.json").exists(),
        "usage errors must not record a pass"
    );
}

#[test]
fn corrupt_state_file_exits_7_and_is_left_untouched() {
    let mut origin = Origin::new();
    origin.commit(&[("run.sh", OK_SCRIPT)], "good");
    let state = StateDir::new();
    fs::create_dir(state.path()).unwrap();
    fs::set_permissions(state.path(), fs::Permissions::from_mode(0o700)).unwrap();
    let bytes = b"{\"format\": 1, \"repo\": \"x\", trailing garbage\n\x00\xff".to_vec();
    fs::write(state.path().join("state.json"), &bytes).unwrap();

    let out = state.pass(&origin.url(), &[]);
    expect_clean_error(&out, 7, "state");
    assert_eq!(
        fs::read(state.path().join("state.json")).unwrap(),
        bytes,
        "state.json must be left byte-for-byte unchanged"
    );
    assert!(state.current().is_none());
}

/// Issue 10: a typo in the URL (or a moved Git server) used to lock the state
/// directory to the old URL forever. Changing it now works like changing the branch:
/// the deployed commit is compared with the new remote's tip.
#[test]
fn changing_the_repository_url_compares_histories_like_a_branch_change() {
    let mut first = Origin::new();
    let c1 = first.commit(&[("run.sh", OK_SCRIPT)], "first repo");
    let state = StateDir::new();
    state.pass(&first.url(), &[]).assert_code(0);

    // The server moved: the same history at another URL, one commit ahead.
    let moved_dir = tempfile::tempdir().unwrap();
    let moved = moved_dir.path().join("moved.git");
    crate::common::git(
        first.path(),
        &["clone", "-q", "--bare", ".", moved.to_str().unwrap()],
    );
    let c2 = first.commit(
        &[(
            "more", "1
",
        )],
        "pushed to the new server",
    );
    crate::common::git(
        first.path(),
        &["push", "-q", moved.to_str().unwrap(), "main"],
    );
    let out = state.pass(moved.to_str().unwrap(), &[]);
    out.assert_code(0);
    assert!(out.stderr.contains("repository changed from"), "{out}");
    assert_eq!(state.current().as_deref(), Some(c2.as_str()));
    assert_ne!(c1, c2);

    // A typo or another repository: unrelated history is refused like a rewrite,
    // nothing changes, and --allow-rewrite accepts it.
    let mut other = Origin::new();
    let o1 = other.commit(
        &[
            ("run.sh", OK_SCRIPT),
            (
                "other", "x
",
            ),
        ],
        "second repo",
    );
    state.pass(&other.url(), &[]).assert_code(4);
    assert_eq!(state.current().as_deref(), Some(c2.as_str()));
    let status = state.status_json();
    assert_eq!(status["deployed"]["commit"], c2.as_str());
    state
        .pass(&other.url(), &["--allow-rewrite"])
        .assert_code(0);
    assert_eq!(state.current().as_deref(), Some(o1.as_str()));
}

#[test]
fn world_writable_state_dir_exits_7() {
    let mut origin = Origin::new();
    origin.commit(&[("run.sh", OK_SCRIPT)], "good");
    let state = StateDir::new();
    fs::create_dir(state.path()).unwrap();
    fs::set_permissions(state.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let out = state.pass(&origin.url(), &[]);
    expect_clean_error(&out, 7, "writable");
    assert!(!state.path().join("state.json").exists());
    assert!(state.current().is_none());
}

#[test]
fn state_dir_owned_by_another_user_exits_7() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("note: skipping state_dir_owned_by_another_user_exits_7: needs root to chown");
        return;
    }
    let mut origin = Origin::new();
    origin.commit(&[("run.sh", OK_SCRIPT)], "good");
    let state = StateDir::new();
    fs::create_dir(state.path()).unwrap();
    fs::set_permissions(state.path(), fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(state.path(), Some(65534), Some(65534)).expect("chown to 65534");
    let out = state.pass(&origin.url(), &[]);
    expect_clean_error(&out, 7, "owned by");
    assert!(!state.path().join("state.json").exists());
    assert!(state.current().is_none());
}

// ---------------------------------------------------------------------------
// 11. Precedence flag > env > file
// ---------------------------------------------------------------------------

#[test]
fn entrypoint_precedence_is_flag_then_env_then_config_file() {
    let mut origin = Origin::new();
    let which = |name: &str| format!("#!/bin/sh\necho {name} > \"$GITOPS_STATE_DIR/which\"\n");
    origin.commit(
        &[
            ("a.sh", &which("a")),
            ("b.sh", &which("b")),
            ("c.sh", &which("c")),
        ],
        "three entrypoints",
    );
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("gitops.conf");
    fs::write(
        &config,
        format!(
            "# test configuration\nGITOPS_REPO={}\nGITOPS_ENTRYPOINT=a.sh\n",
            origin.url()
        ),
    )
    .unwrap();

    let cases: [(&str, bool, bool, &str); 3] = [
        ("flag, env and file", true, true, "c"),
        ("env and file", true, false, "b"),
        ("file only", false, false, "a"),
    ];
    for (n, (case, env, flag, expected)) in cases.into_iter().enumerate() {
        let state = tmp.path().join(format!("state-{n}"));
        let mut cmd = bin();
        cmd.arg("--config")
            .arg(&config)
            .arg("--state-dir")
            .arg(&state);
        if env {
            cmd.env("GITOPS_ENTRYPOINT", "b.sh");
        }
        if flag {
            cmd.args(["--entrypoint", "c.sh"]);
        }
        let out = run(&mut cmd);
        assert_eq!(out.code, Some(0), "{case}:\n{}", out);
        let ran = fs::read_to_string(state.join("which"))
            .unwrap_or_else(|err| panic!("{case}: no entrypoint ran ({err}):\n{}", out));
        assert_eq!(ran.trim(), expected, "{case}");
    }
}

// ---------------------------------------------------------------------------
// 12. status text
// ---------------------------------------------------------------------------

#[test]
fn status_text_before_and_after_a_deploy() {
    let mut origin = Origin::new();
    let c1 = origin.commit(&[("run.sh", OK_SCRIPT)], "Deploy the frobnicator");
    let state = StateDir::new();

    // A state directory that does not exist yet, and an empty one.
    for dir in [state.path().to_path_buf(), state.dir().to_path_buf()] {
        let out = run(bin().args(["status", "--state-dir"]).arg(&dir));
        out.assert_code(0);
        assert!(
            out.stdout.contains("no pass has run"),
            "fresh state dir {}:\n{}",
            dir.display(),
            out
        );
    }

    state.pass(&origin.url(), &[]).assert_code(0);
    let out = run(bin().args(["status", "--state-dir"]).arg(state.path()));
    out.assert_code(0);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.contains(short(&c1)) && l.contains("Deploy the frobnicator")),
        "status should show the deployed commit and its subject:\n{}",
        out
    );
    assert!(!out.stdout.contains("no pass has run"), "{}", out);

    let doc = state.status_json();
    assert_eq!(doc["schema"], 1, "{doc:#}");
    assert_eq!(doc["deployed"]["commit"], c1.as_str(), "{doc:#}");
    assert_eq!(
        doc["deployed"]["subject"], "Deploy the frobnicator",
        "{doc:#}"
    );
    assert_eq!(doc["current"], c1.as_str(), "{doc:#}");
    assert_eq!(doc["last_pass"]["outcome"], "applied", "{doc:#}");
    assert_eq!(doc["last_pass"]["exit_code"], 0, "{doc:#}");
}

/// The shipped example config has every line commented out: a pass reading it
/// says which file sets no repository, not only that none is configured.
#[test]
fn a_config_file_without_a_repository_is_named_in_the_usage_error() {
    let state = StateDir::new();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("config");
    fs::write(&conf, "# GITOPS_REPO=ssh://git@git.example.com/ops.git\n").unwrap();
    let out = run(bin()
        .arg("--config")
        .arg(&conf)
        .arg("--state-dir")
        .arg(state.path()));
    expect_clean_error(&out, 2, "sets no GITOPS_REPO");
    assert!(out.stderr.contains(conf.to_str().unwrap()), "{out}");
}
