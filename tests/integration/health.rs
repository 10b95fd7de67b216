//! Health checks, automatic rollback and continuous reconciliation (issue 14),
//! end to end: the real binary against real `file://` repositories whose
//! commits carry a `run.sh` and a `healthcheck`.
//!
//! The scripts model a small service. `run.sh` "starts" it by writing the
//! commit it serves to `$GITOPS_STATE_DIR/serving`; the health check probes
//! the service (reads that file) and passes when the commit it checks is the
//! one being served. A broken commit's `run.sh` exits 0 but serves nothing
//! useful, so only its health check finds out. Every run appends a line to
//! `runs` and every health check a line to `checks`, so a test sees what ran,
//! why, and in which order.
//!
//! Reconciliation is due after `--reconcile-every`, measured from the last
//! successful run of the deployed commit; tests let that much time pass with
//! a sleep before the pass that must reconcile. The sleeps only let time pass;
//! nothing asserts how fast anything is.

use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use crate::common::run::gitops;
use crate::common::{pid_alive, run, wait_until, Host, Receiver, Run};

/// A healthy service: serves the commit it belongs to.
const SERVE: &str = r#"#!/bin/sh
printf '%s %s %s\n' "$GITOPS_REASON" "$GITOPS_COMMIT" "${GITOPS_PREVIOUS_COMMIT:--}" >> "$GITOPS_STATE_DIR/runs"
echo "entrypoint of $GITOPS_COMMIT ($GITOPS_REASON)"
echo "$GITOPS_COMMIT" > "$GITOPS_STATE_DIR/serving"
"#;

/// A broken service: the entrypoint exits 0, but what it serves is wrong.
const BROKEN: &str = r#"#!/bin/sh
printf '%s %s %s\n' "$GITOPS_REASON" "$GITOPS_COMMIT" "${GITOPS_PREVIOUS_COMMIT:--}" >> "$GITOPS_STATE_DIR/runs"
echo "entrypoint of $GITOPS_COMMIT ($GITOPS_REASON)"
echo "garbage" > "$GITOPS_STATE_DIR/serving"
"#;

/// A service whose set-up works once: a second run refuses (its marker
/// exists), as a non-idempotent entrypoint would.
const SERVE_ONCE: &str = r#"#!/bin/sh
printf '%s %s %s\n' "$GITOPS_REASON" "$GITOPS_COMMIT" "${GITOPS_PREVIOUS_COMMIT:--}" >> "$GITOPS_STATE_DIR/runs"
if [ -e "$GITOPS_STATE_DIR/set-up-once" ]; then
    echo "refusing: the database was already initialised" >&2
    exit 1
fi
touch "$GITOPS_STATE_DIR/set-up-once"
echo "$GITOPS_COMMIT" > "$GITOPS_STATE_DIR/serving"
"#;

/// A service that corrects drift: when someone changed the host by hand (the
/// marker `hand-edited`), it puts things back and says what it corrected.
const SERVE_AND_CORRECT: &str = r#"#!/bin/sh
printf '%s %s %s\n' "$GITOPS_REASON" "$GITOPS_COMMIT" "${GITOPS_PREVIOUS_COMMIT:--}" >> "$GITOPS_STATE_DIR/runs"
echo "$GITOPS_COMMIT" > "$GITOPS_STATE_DIR/serving"
if [ -e "$GITOPS_STATE_DIR/hand-edited" ]; then
    echo "restored /etc/motd (edited by hand)" >> "$GITOPS_DRIFT_FILE"
    echo "started nginx.service (was stopped)" >> "$GITOPS_DRIFT_FILE"
    rm "$GITOPS_STATE_DIR/hand-edited"
fi
"#;

/// A service whose entrypoint deploys but fails whenever it reconciles.
const FAILS_ON_RECONCILE: &str = r#"#!/bin/sh
printf '%s %s %s\n' "$GITOPS_REASON" "$GITOPS_COMMIT" "${GITOPS_PREVIOUS_COMMIT:--}" >> "$GITOPS_STATE_DIR/runs"
if [ "$GITOPS_REASON" = reconcile ]; then
    echo "cannot reach the package mirror" >&2
    exit 3
fi
echo "$GITOPS_COMMIT" > "$GITOPS_STATE_DIR/serving"
"#;

/// The health check: the service answers for the commit being checked.
const CHECK: &str = r#"#!/bin/sh
printf '%s %s %s\n' "$GITOPS_REASON" "$GITOPS_COMMIT" "$GITOPS_HEALTHCHECK_ATTEMPT" >> "$GITOPS_STATE_DIR/checks"
echo "health check of $GITOPS_COMMIT, try $GITOPS_HEALTHCHECK_ATTEMPT ($GITOPS_REASON)"
[ "$(cat "$GITOPS_STATE_DIR/serving")" = "$GITOPS_COMMIT" ]
"#;

/// A health check for a service that needs a while: it fails twice, then
/// passes, recording each try's number and start time.
const PASSES_THIRD_TIME: &str = r#"#!/bin/sh
n=$(cat "$GITOPS_STATE_DIR/check-count" 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > "$GITOPS_STATE_DIR/check-count"
echo "$n $GITOPS_HEALTHCHECK_ATTEMPT $(date +%s.%N)" >> "$GITOPS_STATE_DIR/check-tries"
[ "$n" -ge 3 ]
"#;

/// A health check that never answers: it waits on a child for two minutes.
const HANGS: &str = r#"#!/bin/sh
sleep 120 &
echo $! > "$GITOPS_STATE_DIR/check-sleep.pid.tmp"
mv "$GITOPS_STATE_DIR/check-sleep.pid.tmp" "$GITOPS_STATE_DIR/check-sleep.pid"
wait
"#;

/// Failing health checks are tried twice, back to back, so tests with an
/// unhealthy commit take no longer than they must.
const FAST_CHECKS: &[&str] = &["--healthcheck-retries", "2", "--healthcheck-interval", "0s"];

/// How long a webhook may take to answer.
const WEBHOOK_TIMEOUT: &str = "2s";

/// One run of an entrypoint: its reason, commit and previous commit (`-`
/// when empty), as `runs` records it.
fn runs(h: &Host) -> Vec<(String, String, String)> {
    h.state
        .lines("runs")
        .iter()
        .map(|line| {
            let mut words = line.split(' ').map(str::to_owned);
            let mut next = || words.next().unwrap_or_default();
            (next(), next(), next())
        })
        .collect()
}

/// The run `(reason, commit, previous)` as [`runs`] returns it.
fn ran(reason: &str, commit: &str, previous: &str) -> (String, String, String) {
    (reason.to_owned(), commit.to_owned(), previous.to_owned())
}

/// One health check try: its reason, commit and try number, as `checks`
/// records it.
fn checks(h: &Host) -> Vec<String> {
    h.state.lines("checks")
}

fn checked(reason: &str, commit: &str, attempt: u32) -> String {
    format!("{reason} {commit} {attempt}")
}

/// The commit the service serves now.
fn serving(h: &Host) -> String {
    h.state.lines("serving").join("\n")
}

/// A pass of `h` with `extra`, notifying `rx` in the generic JSON format.
fn pass_notifying(h: &Host, rx: &Receiver, extra: &[&str]) -> Run {
    let url = rx.url("/hooks/gitops");
    let mut cmd = h.pass_cmd(&[
        "--webhook-url",
        &url,
        "--webhook-format",
        "json",
        "--webhook-timeout",
        WEBHOOK_TIMEOUT,
    ]);
    run(cmd.args(extra))
}

/// The JSON bodies `rx` received, in order.
fn messages(rx: &Receiver) -> Vec<Value> {
    rx.requests().iter().map(|r| r.json()).collect()
}

/// The `event` of every message `rx` received, in order.
fn events(rx: &Receiver) -> Vec<String> {
    messages(rx)
        .iter()
        .map(|m| m["event"].as_str().unwrap_or("<no event>").to_owned())
        .collect()
}

/// Lets `every` (and a little more) pass, so that a reconcile measured from
/// a run that ended before this call is due.
fn let_pass(every: Duration) {
    thread::sleep(every + Duration::from_millis(150));
}

/// Moves the failure record's next retry an hour into the past, as if its
/// backoff had expired (the binary reads the clock; the test cannot wait
/// five minutes).
fn expire_backoff(h: &Host) {
    let path = h.state.path().join("state.json");
    let mut doc = h.state.state_json();
    let past = (Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    assert!(
        doc["failing"].is_object(),
        "no failure record in state.json:\n{doc:#}"
    );
    doc["failing"]["next_retry_at"] = Value::String(past);
    let text = serde_json::to_string_pretty(&doc).expect("serialise state.json");
    fs::write(&path, text).unwrap_or_else(|err| panic!("write {}: {err}", path.display()));
}

fn parse_time(value: &Value) -> DateTime<Utc> {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("expected a timestamp, got {value}"));
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|err| panic!("bad timestamp {text:?}: {err}"))
        .with_timezone(&Utc)
}

/// Kills, when the test ends, a process whose pid a health check wrote, so a
/// failing test leaves no `sleep 120` behind.
struct Reaper(PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        let pid = fs::read_to_string(&self.0)
            .ok()
            .and_then(|text| text.trim().parse::<i32>().ok());
        if let Some(pid) = pid.filter(|&pid| pid > 1 && pid_alive(pid)) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

fn read_pid(path: &Path) -> i32 {
    let text =
        fs::read_to_string(path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
    text.trim()
        .parse()
        .unwrap_or_else(|err| panic!("pid in {}: {err}: {text:?}", path.display()))
}

// ---------------------------------------------------------------------------
// Health checks on deploy
// ---------------------------------------------------------------------------

#[test]
fn a_healthy_commit_is_deployed_after_its_health_check_passes() {
    let mut h = Host::new();
    let a = h
        .origin
        .commit(&[("run.sh", SERVE), ("healthcheck", CHECK)], "serve");
    let out = h.pass(&[]);
    out.assert_code(0);
    assert!(out.stderr.contains("health check passed"), "{out}");
    h.state.assert_deployed(&a);
    assert_eq!(checks(&h), [checked("initial", &a, 1)]);
    let status = h.state.status_json();
    assert_eq!(status["last_attempt"]["result"], "succeeded", "{status:#}");
    assert_eq!(status["last_attempt"]["commit"], a.as_str(), "{status:#}");

    let b = h.origin.commit(&[("version", "2\n")], "version 2");
    h.pass(&[]).assert_code(0);
    h.state.assert_deployed(&b);
    assert_eq!(serving(&h), b);
    assert_eq!(
        checks(&h),
        [checked("initial", &a, 1), checked("new", &b, 1)],
        "the health check runs once per deploy and sees the new commit"
    );
    let status = h.state.status_json();
    assert_eq!(status["last_attempt"]["result"], "succeeded", "{status:#}");
    assert_eq!(status["deployed"]["commit"], b.as_str(), "{status:#}");
    assert_eq!(status["current"], b.as_str(), "{status:#}");
}

#[test]
fn an_unhealthy_commit_is_rolled_back_and_waits_for_once_or_a_newer_commit() {
    let mut h = Host::new();
    let a = h
        .origin
        .commit(&[("run.sh", SERVE), ("healthcheck", CHECK)], "serve");
    h.pass(FAST_CHECKS).assert_code(0);

    let b = h.origin.commit(&[("run.sh", BROKEN)], "break the service");
    let out = h.pass(FAST_CHECKS);
    out.assert_code(5);
    assert_eq!(
        runs(&h),
        [
            ran("initial", &a, "-"),
            ran("new", &b, &a),
            ran("health-rollback", &a, &b),
        ],
        "the previous tree's entrypoint ran again, told why and what failed"
    );
    assert_eq!(
        checks(&h),
        [
            checked("initial", &a, 1),
            checked("new", &b, 1),
            checked("new", &b, 2),
            checked("health-rollback", &a, 1),
        ],
        "two tries of the new commit's check, then the rolled-back commit's check"
    );
    assert_eq!(serving(&h), a, "the rollback really restored the service");
    h.state.assert_deployed(&a);
    let status = h.state.status_json();
    assert_eq!(status["last_attempt"]["commit"], b.as_str(), "{status:#}");
    assert_eq!(status["last_attempt"]["result"], "unhealthy", "{status:#}");
    assert_eq!(status["deployed"]["commit"], a.as_str(), "{status:#}");
    assert_eq!(status["last_pass"]["outcome"], "unhealthy", "{status:#}");
    assert!(status["unknown_state"].is_null(), "{status:#}");

    // A plain pass does not try it again, however long it waits: not even
    // once its backoff has expired.
    let out = h.pass(FAST_CHECKS);
    out.assert_code(5);
    assert!(out.stderr.contains("--once"), "says how to retry:\n{out}");
    expire_backoff(&h);
    h.pass(FAST_CHECKS).assert_code(5);
    assert_eq!(runs(&h).len(), 3, "nothing ran while it waits");
    h.state.assert_deployed(&a);

    // --once tries it again, and it is rolled back again.
    h.pass(&[FAST_CHECKS, &["--once"]].concat()).assert_code(5);
    assert_eq!(
        runs(&h)[3..],
        [ran("retry", &b, &a), ran("health-rollback", &a, &b)]
    );
    assert_eq!(serving(&h), a);
    h.state.assert_deployed(&a);
    let status = h.state.status_json();
    assert_eq!(status["consecutive_failures"], 2, "{status:#}");
    assert_eq!(status["last_attempt"]["reason"], "retry", "{status:#}");
    // No retry is announced that no pass would make.
    assert!(status["next_retry_at"].is_null(), "{status:#}");
    let text = h.state.status_text().stdout;
    assert!(
        text.contains("not retried until a newer commit") && !text.contains("next retry at"),
        "{text}"
    );

    // A newer commit is tried at once.
    let c = h.origin.commit(&[("run.sh", SERVE)], "fix the service");
    h.pass(FAST_CHECKS).assert_code(0);
    assert_eq!(runs(&h)[5..], [ran("new", &c, &a)]);
    h.state.assert_deployed(&c);
    assert_eq!(serving(&h), c);
    let status = h.state.status_json();
    assert_eq!(status["last_attempt"]["result"], "succeeded", "{status:#}");
    assert_eq!(status["consecutive_failures"], 0, "{status:#}");
}

#[test]
fn an_unhealthy_commit_is_notified_once_and_not_again_while_it_waits() {
    let mut h = Host::new();
    h.origin
        .commit(&[("run.sh", SERVE), ("healthcheck", CHECK)], "serve");
    let rx = Receiver::start(vec![]);
    pass_notifying(&h, &rx, FAST_CHECKS).assert_code(0);
    let b = h.origin.commit(&[("run.sh", BROKEN)], "break the service");
    pass_notifying(&h, &rx, FAST_CHECKS).assert_code(5);
    assert_eq!(events(&rx), ["applied", "unhealthy"]);
    let unhealthy = &messages(&rx)[1];
    assert_eq!(unhealthy["commit"], b.as_str(), "{unhealthy:#}");
    assert_eq!(unhealthy["exit_code"], 5, "{unhealthy:#}");

    // The passes that wait are the same failure, not a new one.
    let out = pass_notifying(&h, &rx, FAST_CHECKS);
    out.assert_code(5);
    pass_notifying(&h, &rx, FAST_CHECKS).assert_code(5);
    assert_eq!(
        events(&rx),
        ["applied", "unhealthy"],
        "a pass waiting after an unhealthy commit sent another message: {:#?}",
        messages(&rx)[2..].to_vec()
    );
}

#[test]
fn a_health_check_that_passes_on_its_third_try_deploys() {
    let mut h = Host::new();
    let a = h.origin.commit(
        &[("run.sh", SERVE), ("healthcheck", PASSES_THIRD_TIME)],
        "slow to start",
    );
    let out = h.pass(&["--healthcheck-interval", "1s"]);
    out.assert_code(0);
    assert!(out.stderr.contains("health check passed (try 3)"), "{out}");
    h.state.assert_deployed(&a);
    assert_eq!(h.state.lines("check-count"), ["3"]);
    let tries: Vec<(String, String, f64)> = h
        .state
        .lines("check-tries")
        .iter()
        .map(|line| {
            let words: Vec<&str> = line.split(' ').collect();
            let at = words[2]
                .parse()
                .unwrap_or_else(|err| panic!("time in {line:?}: {err}"));
            (words[0].to_owned(), words[1].to_owned(), at)
        })
        .collect();
    let numbers: Vec<(&str, &str)> = tries
        .iter()
        .map(|(n, attempt, _)| (n.as_str(), attempt.as_str()))
        .collect();
    assert_eq!(
        numbers,
        [("1", "1"), ("2", "2"), ("3", "3")],
        "GITOPS_HEALTHCHECK_ATTEMPT counts the tries"
    );
    for pair in tries.windows(2) {
        let gap = pair[1].2 - pair[0].2;
        assert!(
            gap >= 0.95,
            "tries {} and {} were {gap:.3}s apart, less than --healthcheck-interval 1s",
            pair[0].0,
            pair[1].0
        );
    }
    let status = h.state.status_json();
    assert_eq!(status["last_attempt"]["result"], "succeeded", "{status:#}");
}

#[test]
fn a_health_check_that_hangs_is_stopped_at_its_timeout_and_rolled_back() {
    let mut h = Host::new();
    let a = h.origin.commit(&[("run.sh", SERVE)], "serve");
    h.pass(&[]).assert_code(0);
    let b = h
        .origin
        .commit(&[("healthcheck", HANGS)], "a health check that hangs");
    let pid_file = h.state.path().join("check-sleep.pid");
    let _reaper = Reaper(pid_file.clone());

    let started = Instant::now();
    let out = h.pass(&["--healthcheck-timeout", "1s", "--healthcheck-retries", "1"]);
    let took = started.elapsed();
    out.assert_code(5);
    assert!(
        took < Duration::from_secs(60),
        "the pass waited {took:?}, for the health check's sleep rather than its timeout"
    );
    assert!(out.stderr.contains("timed out (1s)"), "{out}");
    let status = h.state.status_json();
    assert_eq!(status["last_attempt"]["commit"], b.as_str(), "{status:#}");
    assert_eq!(status["last_attempt"]["result"], "unhealthy", "{status:#}");
    assert_eq!(
        runs(&h)[1..],
        [ran("new", &b, &a), ran("health-rollback", &a, &b)]
    );
    h.state.assert_deployed(&a);
    let sleeper = read_pid(&pid_file);
    wait_until("the timed-out health check's child to be gone", || {
        !pid_alive(sleeper)
    });
}

#[test]
fn a_first_deployment_that_is_unhealthy_is_retried_on_backoff() {
    let mut h = Host::new();
    let a = h
        .origin
        .commit(&[("run.sh", BROKEN), ("healthcheck", CHECK)], "broken");
    let out = h.pass(FAST_CHECKS);
    out.assert_code(5);
    assert!(out.stderr.contains("nothing to roll back"), "{out}");
    assert_eq!(runs(&h), [ran("initial", &a, "-")], "no rollback ran");
    assert_eq!(h.state.current(), None, "nothing is deployed");
    let status = h.state.status_json();
    assert_eq!(status["last_attempt"]["result"], "unhealthy", "{status:#}");
    assert!(status["deployed"].is_null(), "{status:#}");
    assert_eq!(status["consecutive_failures"], 1, "{status:#}");
    let next = parse_time(&status["next_retry_at"]);
    let finished = parse_time(&status["last_attempt"]["finished_at"]);
    assert!(
        (next - finished - chrono::Duration::minutes(5))
            .num_seconds()
            .abs()
            <= 1,
        "retried after the first backoff of 5 minutes: next {next}, finished {finished}"
    );

    // The next pass waits for the backoff.
    h.pass(FAST_CHECKS).assert_code(5);
    assert_eq!(runs(&h).len(), 1, "nothing ran while it waits");

    // --once retries now.
    h.pass(&[FAST_CHECKS, &["--once"]].concat()).assert_code(5);
    assert_eq!(runs(&h)[1..], [ran("retry", &a, "-")]);

    // Once the backoff has expired, a plain pass retries it too.
    expire_backoff(&h);
    h.pass(FAST_CHECKS).assert_code(5);
    assert_eq!(runs(&h)[2..], [ran("retry", &a, "-")]);
    assert_eq!(h.state.current(), None);
    let status = h.state.status_json();
    assert_eq!(status["consecutive_failures"], 3, "{status:#}");
}

// ---------------------------------------------------------------------------
// A rollback that fails: the unknown state
// ---------------------------------------------------------------------------

#[test]
fn a_failed_rollback_is_an_unknown_state_until_a_deployment_succeeds() {
    let mut h = Host::new();
    let a = h
        .origin
        .commit(&[("run.sh", SERVE_ONCE), ("healthcheck", CHECK)], "serve");
    let rx = Receiver::start(vec![]);
    pass_notifying(&h, &rx, FAST_CHECKS).assert_code(0);

    let b = h.origin.commit(&[("run.sh", BROKEN)], "break the service");
    let out = pass_notifying(&h, &rx, FAST_CHECKS);
    out.assert_code(10);
    assert!(out.stderr.contains("UNKNOWN STATE"), "{out}");
    assert_eq!(
        runs(&h),
        [
            ran("initial", &a, "-"),
            ran("new", &b, &a),
            ran("health-rollback", &a, &b),
        ]
    );
    assert_eq!(
        h.state.current().as_deref(),
        Some(a.as_str()),
        "current still names the last deployed commit"
    );

    let text = h.state.status_text();
    assert!(text.stdout.contains("UNKNOWN STATE"), "{text}");
    let status = h.state.status_json();
    let unknown = &status["unknown_state"];
    assert_eq!(unknown["failed"], b.as_str(), "{status:#}");
    assert_eq!(unknown["rollback_to"], a.as_str(), "{status:#}");
    assert!(
        unknown["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{status:#}"
    );
    assert_eq!(
        status["last_pass"]["outcome"], "rollback-failed",
        "{status:#}"
    );

    assert_eq!(events(&rx), ["applied", "rollback-failed"]);
    let alarm = &messages(&rx)[1];
    assert_eq!(alarm["commit"], b.as_str(), "{alarm:#}");
    assert_eq!(alarm["exit_code"], 10, "{alarm:#}");
    let summary = alarm["summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("UNKNOWN STATE") && summary.contains("gitops-run rollback"),
        "the message says what happened and what to do: {summary}"
    );

    // A fix that deploys clears it.
    let c = h.origin.commit(&[("run.sh", SERVE)], "fix the service");
    pass_notifying(&h, &rx, FAST_CHECKS).assert_code(0);
    h.state.assert_deployed(&c);
    let status = h.state.status_json();
    assert!(status["unknown_state"].is_null(), "{status:#}");
    let text = h.state.status_text();
    assert!(!text.stdout.contains("UNKNOWN STATE"), "{text}");
    assert_eq!(events(&rx).last().map(String::as_str), Some("recovered"));
}

#[test]
fn a_pass_after_a_failed_rollback_does_not_say_the_host_was_rolled_back() {
    let mut h = Host::new();
    h.origin
        .commit(&[("run.sh", SERVE_ONCE), ("healthcheck", CHECK)], "serve");
    h.pass(FAST_CHECKS).assert_code(0);
    h.origin.commit(&[("run.sh", BROKEN)], "break the service");
    h.pass(FAST_CHECKS).assert_code(10);

    let out = h.pass(FAST_CHECKS);
    assert_ne!(out.code, Some(0), "{out}");
    assert_eq!(runs(&h).len(), 3, "nothing ran");
    let status = h.state.status_json();
    assert!(!status["unknown_state"].is_null(), "{status:#}");
    assert!(
        !out.stderr.contains("was rolled back"),
        "the rollback failed, yet the pass says it happened:\n{out}"
    );
}

// ---------------------------------------------------------------------------
// The attempt's log
// ---------------------------------------------------------------------------

#[test]
fn the_log_holds_the_entrypoint_the_health_check_and_the_rollback_in_order() {
    let mut h = Host::new();
    let a = h
        .origin
        .commit(&[("run.sh", SERVE), ("healthcheck", CHECK)], "serve");
    let one_try = ["--healthcheck-retries", "1"];
    h.pass(&one_try).assert_code(0);
    let b = h.origin.commit(&[("run.sh", BROKEN)], "break the service");
    h.pass(&one_try).assert_code(5);

    let status = h.state.status_json();
    let log_path = status["last_attempt"]["log"]
        .as_str()
        .unwrap_or_else(|| panic!("no log for the attempt: {status:#}"))
        .to_owned();
    let log = fs::read_to_string(&log_path).unwrap_or_else(|err| panic!("read {log_path}: {err}"));
    let lines: Vec<&str> = log.lines().collect();
    // Each output line, and the header it must be written under.
    let expected = [
        (format!("entrypoint of {b} (new)"), "entrypoint"),
        (
            format!("health check of {b}, try 1 (new)"),
            "health check (1 of 1)",
        ),
        (
            format!("entrypoint of {a} (health-rollback)"),
            "rollback entrypoint (health-rollback)",
        ),
        (
            format!("health check of {a}, try 1 (health-rollback)"),
            "health check (1 of 1)",
        ),
    ];
    let mut after = 0;
    for (output, label) in &expected {
        let at = lines
            .iter()
            .position(|line| line == output)
            .unwrap_or_else(|| panic!("{output:?} is not in the log:\n{log}"));
        assert!(at >= after, "{output:?} is out of order in the log:\n{log}");
        let header = lines[..at]
            .iter()
            .rev()
            .find(|line| line.starts_with("# gitops-run: "))
            .unwrap_or_else(|| panic!("{output:?} is under no header:\n{log}"));
        assert!(
            header.starts_with(&format!("# gitops-run: {label} ")),
            "{output:?} is under {header:?}, not a {label:?} header:\n{log}"
        );
        after = at + 1;
    }
    let headers = lines
        .iter()
        .filter(|line| line.starts_with("# gitops-run: "))
        .count();
    assert_eq!(headers, 4, "one header per run:\n{log}");
}

// ---------------------------------------------------------------------------
// Continuous reconciliation
// ---------------------------------------------------------------------------

const EVERY: Duration = Duration::from_secs(1);

#[test]
fn a_reconcile_runs_when_due_and_not_before() {
    let mut h = Host::new();
    let a = h
        .origin
        .commit(&[("run.sh", SERVE), ("healthcheck", CHECK)], "serve");
    let every = ["--reconcile-every", "2s"];
    h.pass(&every).assert_code(0);
    // Right after the deploy, nothing is due.
    h.pass(&every).assert_code(0);
    assert_eq!(runs(&h), [ran("initial", &a, "-")]);

    let_pass(Duration::from_secs(2));
    let out = h.pass(&every);
    out.assert_code(0);
    assert_eq!(
        runs(&h),
        [ran("initial", &a, "-"), ran("reconcile", &a, &a)],
        "the deployed commit's entrypoint ran again, its own previous commit"
    );
    assert_eq!(
        checks(&h),
        [checked("initial", &a, 1), checked("reconcile", &a, 1)],
        "a reconcile runs the health check too"
    );
    h.state.assert_deployed(&a);
    let status = h.state.status_json();
    assert_eq!(status["last_attempt"]["reason"], "reconcile", "{status:#}");
    assert_eq!(status["last_attempt"]["result"], "succeeded", "{status:#}");
    assert_eq!(status["last_pass"]["outcome"], "reconciled", "{status:#}");

    // The interval starts again from the reconcile.
    h.pass(&every).assert_code(0);
    assert_eq!(runs(&h).len(), 2, "a reconcile right after a reconcile");
}

#[test]
fn corrected_drift_is_reported_once() {
    let mut h = Host::new();
    let a = h.origin.commit(&[("run.sh", SERVE_AND_CORRECT)], "serve");
    let rx = Receiver::start(vec![]);
    let every = ["--reconcile-every", "1s"];
    pass_notifying(&h, &rx, &every).assert_code(0);

    // Someone changes the host by hand; the next reconcile puts it back.
    fs::write(h.state.path().join("hand-edited"), "").expect("write the marker");
    let_pass(EVERY);
    pass_notifying(&h, &rx, &every).assert_code(0);
    assert_eq!(runs(&h)[1..], [ran("reconcile", &a, &a)]);
    let drift = [
        "restored /etc/motd (edited by hand)",
        "started nginx.service (was stopped)",
    ];
    let status = h.state.status_json();
    assert_eq!(
        status["last_drift"]["lines"],
        serde_json::json!(drift),
        "{status:#}"
    );
    assert_eq!(status["last_drift"]["commit"], a.as_str(), "{status:#}");
    assert_eq!(status["drift_corrections"], 1, "{status:#}");
    let text = h.state.status_text();
    assert!(text.stdout.contains(drift[0]), "{text}");

    assert_eq!(events(&rx), ["applied", "drift-corrected"]);
    let message = &messages(&rx)[1];
    assert_eq!(message["commit"], a.as_str(), "{message:#}");
    let summary = message["summary"].as_str().unwrap_or_default();
    for line in drift {
        assert!(summary.contains(line), "{line:?} not in {summary:?}");
    }

    // A reconcile with nothing to correct says nothing.
    let_pass(EVERY);
    pass_notifying(&h, &rx, &every).assert_code(0);
    assert_eq!(runs(&h).len(), 3, "it reconciled again");
    assert_eq!(events(&rx), ["applied", "drift-corrected"]);
    let status = h.state.status_json();
    assert_eq!(status["drift_corrections"], 1, "{status:#}");
    assert_eq!(
        status["last_drift"]["lines"],
        serde_json::json!(drift),
        "{status:#}"
    );
}

#[test]
fn a_failed_reconcile_changes_nothing_and_backs_off() {
    let mut h = Host::new();
    let a = h.origin.commit(&[("run.sh", FAILS_ON_RECONCILE)], "serve");
    let rx = Receiver::start(vec![]);
    let every = ["--reconcile-every", "1s"];
    pass_notifying(&h, &rx, &every).assert_code(0);
    let deployed = h.state.status_json()["deployed"].clone();

    let_pass(EVERY);
    let out = pass_notifying(&h, &rx, &every);
    out.assert_code(5);
    assert_eq!(
        runs(&h),
        [ran("initial", &a, "-"), ran("reconcile", &a, &a)]
    );
    h.state.assert_deployed(&a);
    let status = h.state.status_json();
    assert_eq!(status["deployed"], deployed, "{status:#}");
    assert_eq!(status["last_attempt"]["reason"], "reconcile", "{status:#}");
    assert_eq!(status["last_attempt"]["result"], "failed", "{status:#}");
    assert_eq!(status["last_attempt"]["exit_code"], 3, "{status:#}");
    assert_eq!(
        status["last_pass"]["outcome"], "reconcile-failed",
        "{status:#}"
    );
    assert_eq!(status["consecutive_failures"], 1, "{status:#}");

    // Due again by --reconcile-every, but the failure's backoff holds it.
    let_pass(EVERY);
    pass_notifying(&h, &rx, &every).assert_code(5);
    assert_eq!(runs(&h).len(), 2, "the entrypoint ran while backing off");
    h.state.assert_deployed(&a);
    assert_eq!(h.state.status_json()["deployed"], deployed);

    assert_eq!(events(&rx)[..2], ["applied", "reconcile-failed"]);
    assert_eq!(messages(&rx)[1]["commit"], a.as_str());
    assert_eq!(
        events(&rx),
        ["applied", "reconcile-failed"],
        "the waiting pass sent another message: {:#?}",
        messages(&rx)[2..].to_vec()
    );
}

#[test]
fn a_new_commit_comes_before_a_due_reconcile() {
    let mut h = Host::new();
    let a = h.origin.commit(&[("run.sh", SERVE)], "serve");
    let every = ["--reconcile-every", "1s"];
    h.pass(&every).assert_code(0);
    let_pass(EVERY);
    let b = h.origin.commit(&[("version", "2\n")], "version 2");
    h.pass(&every).assert_code(0);
    assert_eq!(
        runs(&h),
        [ran("initial", &a, "-"), ran("new", &b, &a)],
        "the new commit is applied, and nothing is reconciled in that pass"
    );
    h.state.assert_deployed(&b);
    let status = h.state.status_json();
    assert_eq!(status["last_pass"]["outcome"], "applied", "{status:#}");
}

#[test]
fn a_frozen_host_does_not_reconcile() {
    let mut h = Host::new();
    let a = h.origin.commit(&[("run.sh", SERVE)], "serve");
    let every = ["--reconcile-every", "1s"];
    h.pass(&every).assert_code(0);
    let url = h.origin.url();
    gitops(&[
        "freeze",
        "--reason",
        "x",
        "--repo",
        &url,
        "--state-dir",
        h.state.arg(),
    ])
    .assert_code(0);

    let_pass(EVERY);
    h.pass(&every).assert_code(0);
    assert_eq!(
        runs(&h),
        [ran("initial", &a, "-")],
        "reconciled while frozen"
    );

    // The reconcile was due: it runs as soon as the host is thawed.
    gitops(&["unfreeze", "--repo", &url, "--state-dir", h.state.arg()]).assert_code(0);
    h.pass(&every).assert_code(0);
    assert_eq!(runs(&h)[1..], [ran("reconcile", &a, &a)]);
}

/// Found by an audit: with `--path`, the health rollback looked for the
/// entrypoint at the top of the sparse tree (where it is not) and reported an
/// unknown state although the last good commit was fine.
#[test]
fn an_unhealthy_commit_on_a_host_with_a_path_is_rolled_back_to_that_paths_entrypoint() {
    let mut h = Host::new();
    let a = h.origin.commit(
        &[("web/run.sh", SERVE), ("web/healthcheck", CHECK)],
        "serve",
    );
    let path = ["--path", "web"];
    let extra = [&path[..], FAST_CHECKS].concat();
    h.pass(&extra).assert_code(0);

    let b = h
        .origin
        .commit(&[("web/run.sh", BROKEN)], "break the service");
    let out = h.pass(&extra);
    out.assert_code(5);
    assert_eq!(
        runs(&h),
        [
            ran("initial", &a, "-"),
            ran("new", &b, &a),
            ran("health-rollback", &a, &b),
        ],
        "{out}"
    );
    assert_eq!(serving(&h), a, "the rollback really restored the service");
    let status = h.state.status_json();
    assert!(status["unknown_state"].is_null(), "{status:#}");
    assert_eq!(status["last_pass"]["outcome"], "unhealthy", "{status:#}");
}
