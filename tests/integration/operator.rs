//! Operator controls (issue 13) on the real binary and real repositories:
//! `freeze`, `unfreeze`, `rollback` and `plan`, and what `status` shows of
//! them.
//!
//! Entrypoints append one line per run to `<state>/runs` (commit, reason,
//! previous commit); reboot commands append one line per call to a file next
//! to the state directory; webhooks go to a real receiver on 127.0.0.1.
//! Operator commands take their options after the command, like the pass's
//! (`gitops-run freeze --reason X --state-dir DIR`).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::common::{
    bin, git_env, run, wait_until, Host, Receiver, Run, Spawned, StateDir, AUTHOR_NAME,
};

/// An entrypoint that records each run as `<commit> <reason> <previous|none>`.
const RECORD: &str = "#!/bin/sh\n\
echo \"$GITOPS_COMMIT $GITOPS_REASON ${GITOPS_PREVIOUS_COMMIT:-none}\" >> \"$GITOPS_STATE_DIR/runs\"\n";

/// The uid commands run as when a test needs someone who is not root
/// (`nobody` on Debian).
const OTHER_UID: u32 = 65534;

/// One run of an entrypoint, as [`RECORD`] wrote it.
#[derive(Debug, PartialEq)]
struct Ran {
    commit: String,
    reason: String,
    previous: String,
}

fn runs(h: &Host) -> Vec<Ran> {
    h.state
        .lines("runs")
        .iter()
        .map(|line| {
            let words: Vec<&str> = line.split(' ').collect();
            assert_eq!(words.len(), 3, "unexpected record line {line:?}");
            Ran {
                commit: words[0].to_owned(),
                reason: words[1].to_owned(),
                previous: words[2].to_owned(),
            }
        })
        .collect()
}

fn ran(commit: &str, reason: &str, previous: &str) -> Ran {
    Ran {
        commit: commit.to_owned(),
        reason: reason.to_owned(),
        previous: previous.to_owned(),
    }
}

/// The 12-digit abbreviation the binary prints.
fn short(commit: &str) -> &str {
    &commit[..12]
}

/// `gitops-run ARGS --state-dir DIR`, without a `SUDO_USER` inherited from
/// whoever runs the tests (it names the operator in freeze records).
fn ctl(state: &StateDir, args: &[&str]) -> Command {
    let mut cmd = bin();
    cmd.args(args)
        .args(["--state-dir", state.arg()])
        .env_remove("SUDO_USER");
    cmd
}

fn op(state: &StateDir, args: &[&str]) -> Run {
    run(&mut ctl(state, args))
}

/// Like [`op`], with `--repo` of the host's origin (for `plan` and `rollback`).
fn op_repo(h: &Host, args: &[&str]) -> Run {
    let url = h.origin.url();
    run(ctl(&h.state, args).args(["--repo", &url]))
}

#[track_caller]
fn freeze(state: &StateDir, reason: &str) -> Run {
    let out = op(state, &["freeze", "--reason", reason]);
    out.assert_code(0);
    out
}

#[track_caller]
fn unfreeze(state: &StateDir) -> Run {
    let out = op(state, &["unfreeze"]);
    out.assert_code(0);
    out
}

#[track_caller]
fn deploy(h: &Host) -> Run {
    let out = h.pass(&[]);
    out.assert_code(0);
    out
}

fn freeze_file(state: &StateDir) -> PathBuf {
    state.path().join("freeze.json")
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .unwrap_or_else(|| panic!("not a time: {v}"))
        .parse()
        .unwrap_or_else(|err| panic!("not a time ({err}): {v}"))
}

/// `plan --json` (with the origin's `--repo`), parsed; the exit code must be
/// `code` and equal the document's `exit_code`.
#[track_caller]
fn plan_json(h: &Host, code: i32) -> Value {
    let out = op_repo(h, &["plan", "--json"]);
    out.assert_code(code);
    let doc: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|err| panic!("plan --json is not JSON ({err}):\n{out}"));
    assert_eq!(doc["exit_code"], code, "{doc:#}");
    doc
}

/// `plan` as text; the exit code must be `code`.
#[track_caller]
fn plan_text(h: &Host, code: i32) -> String {
    let out = op_repo(h, &["plan"]);
    out.assert_code(code);
    out.stdout
}

/// Everything `plan` must leave alone.
#[derive(Debug, PartialEq)]
struct Snapshot {
    trees: Vec<String>,
    current: Option<PathBuf>,
    state_json: Option<Vec<u8>>,
    logs: Vec<String>,
}

fn snapshot(state: &StateDir) -> Snapshot {
    let mut trees = state.trees();
    trees.sort();
    let mut logs: Vec<String> = fs::read_dir(state.path().join("logs"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    logs.sort();
    Snapshot {
        trees,
        current: fs::read_link(state.path().join("current")).ok(),
        state_json: fs::read(state.path().join("state.json")).ok(),
        logs,
    }
}

/// One entry of a plan's `files`.
#[track_caller]
fn file_entry<'a>(doc: &'a Value, path: &str) -> &'a Value {
    doc["files"]
        .as_array()
        .expect("files is a list")
        .iter()
        .find(|f| f["path"] == path)
        .unwrap_or_else(|| panic!("{path} is not among the files:\n{doc:#}"))
}

// ---------------------------------------------------------------------------
// freeze and unfreeze

#[test]
fn freeze_holds_a_new_commit_over_several_passes_and_unfreeze_applies_it() {
    let mut h = Host::new();
    let a = h.origin.commit(&[("run.sh", RECORD)], "A");
    deploy(&h);
    freeze(&h.state, "change freeze for the audit");
    let b = h.origin.commit(&[("b.txt", "b\n")], "B");

    for _ in 0..3 {
        let out = h.pass(&[]);
        out.assert_code(0);
        assert!(
            out.stderr.contains("change freeze for the audit"),
            "a frozen pass says why:\n{out}"
        );
        assert!(
            out.stderr.contains(short(&b)) && out.stderr.contains("not applied"),
            "a frozen pass names the commit it holds back:\n{out}"
        );
        h.state.assert_deployed(&a);
    }
    assert_eq!(runs(&h), vec![ran(&a, "initial", "none")]);
    let st = h.state.status_json();
    assert_eq!(st["frozen"]["reason"], "change freeze for the audit");
    assert_eq!(
        st["remote_commit"],
        b.as_str(),
        "a frozen host still fetches"
    );
    assert_eq!(st["last_pass"]["outcome"], "frozen");

    unfreeze(&h.state);
    assert!(!freeze_file(&h.state).exists());
    deploy(&h);
    h.state.assert_deployed(&b);
    assert_eq!(
        runs(&h),
        vec![ran(&a, "initial", "none"), ran(&b, "new", &a)]
    );
}

#[test]
fn freeze_holds_a_due_reboot_and_the_first_pass_after_unfreeze_reboots_once() {
    let mut h = Host::new();
    let calls = h.state.dir().join("reboots");
    let reboot = format!("echo reboot >> '{}'", calls.display());
    // Due a few seconds from now: later than the boot, and later than the
    // first pass, which deploys it.
    let at = DateTime::from_timestamp(Utc::now().timestamp() + 4, 0).expect("a valid time");
    h.origin.commit(
        &[
            ("run.sh", RECORD),
            (
                "reboot-at",
                &format!("{}\n", at.format("%Y-%m-%dT%H:%M:%SZ")),
            ),
        ],
        "reboot for the new kernel",
    );
    let pass = || {
        let out = h.pass(&["--reboot-command", &reboot]);
        out.assert_code(0);
        out
    };
    let reboots = || {
        fs::read_to_string(&calls)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    pass();
    assert_eq!(
        h.state.status_json()["reboot"]["status"],
        "pending",
        "precondition: the request is deployed and not yet due"
    );
    freeze(&h.state, "no reboots during the sale");
    wait_until("the requested reboot time has passed", || Utc::now() > at);

    for _ in 0..2 {
        let out = pass();
        assert!(out.stderr.contains("frozen"), "{out}");
        assert_eq!(reboots(), 0, "a frozen host rebooted:\n{out}");
        assert_eq!(h.state.status_json()["reboot"]["status"], "held");
    }

    unfreeze(&h.state);
    pass();
    assert_eq!(
        reboots(),
        1,
        "the pass after unfreeze carries out the held reboot"
    );
    pass();
    assert_eq!(reboots(), 1, "and only once");
    assert_eq!(h.state.status_json()["reboot"]["status"], "done");
}

#[test]
fn a_freeze_with_until_ends_by_itself_and_the_next_pass_applies() {
    let mut h = Host::new();
    let a = h.origin.commit(&[("run.sh", RECORD)], "A");
    deploy(&h);
    let out = op(
        &h.state,
        &["freeze", "--reason", "brief pause", "--until", "2s"],
    );
    out.assert_code(0);
    let frozen = h.state.status_json()["frozen"].clone();
    let (since, until) = (time(&frozen["since"]), time(&frozen["until"]));
    assert_eq!(until - since, chrono::Duration::seconds(2), "{frozen:#}");

    let b = h.origin.commit(&[("b.txt", "b\n")], "B");
    deploy(&h);
    h.state.assert_deployed(&a);

    wait_until("the freeze has expired", || Utc::now() > until);
    let out = deploy(&h);
    assert!(
        out.stderr.contains("ended"),
        "the pass says that the freeze ended:\n{out}"
    );
    h.state.assert_deployed(&b);
    assert!(
        !freeze_file(&h.state).exists(),
        "the expired record is removed"
    );
    assert!(h.state.status_json()["frozen"].is_null());
    assert_eq!(runs(&h).len(), 2);
}

/// An entrypoint that records its start and its end in `started` and
/// `ended` in the state directory, and sleeps `secs` between them.
fn slow_entrypoint(secs: &str) -> String {
    format!(
        "#!/bin/sh\n\
         echo \"$GITOPS_COMMIT\" >> \"$GITOPS_STATE_DIR/started\"\n\
         sleep {secs}\n\
         echo \"$GITOPS_COMMIT\" >> \"$GITOPS_STATE_DIR/ended\"\n"
    )
}

#[test]
fn freeze_returns_only_after_the_pass_running_an_entrypoint_has_ended() {
    let mut h = Host::new();
    let a = h
        .origin
        .commit(&[("run.sh", &slow_entrypoint("1"))], "slow");
    let mut pass = Spawned::start(&mut h.pass_cmd(&[]), &h.state.dir().join("pass.log"));
    wait_until("the entrypoint has started", || {
        h.state.lines("started").len() == 1
    });

    let out = freeze(&h.state, "racing a pass");
    assert_eq!(
        h.state.lines("ended").len(),
        1,
        "freeze returned while the entrypoint still ran:\n{out}"
    );
    assert_ne!(
        h.state.state_json()["attempt"]["result"],
        "running",
        "freeze returned before the pass recorded how its attempt ended"
    );
    assert!(
        out.stderr.contains("waiting"),
        "freeze says it waits:\n{out}"
    );

    let status = pass.wait();
    assert!(status.success(), "{status}:\n{}", pass.log());
    h.state.assert_deployed(&a);

    h.origin.commit(&[("n", "1\n")], "next");
    deploy(&h);
    assert_eq!(
        h.state.lines("started").len(),
        1,
        "an entrypoint started after freeze"
    );
    h.state.assert_deployed(&a);
}

#[test]
fn no_pass_starts_an_entrypoint_after_freeze_returned() {
    // Freeze at various moments of a pass: before it fetched, while it checks
    // out, around the recording of its attempt, while its entrypoint runs.
    const DELAYS_MS: [u64; 8] = [0, 2, 5, 10, 20, 35, 60, 100];
    let mut h = Host::new();
    h.origin
        .commit(&[("run.sh", &slow_entrypoint("0.3"))], "slow");
    // The state directory exists before the first race: `freeze` refuses
    // one that does not (yet).
    fs::create_dir(h.state.path()).expect("create the state dir");
    fs::set_permissions(h.state.path(), fs::Permissions::from_mode(0o700)).expect("chmod");
    let mut pass_won = 0;
    for (i, delay) in DELAYS_MS.iter().enumerate() {
        if i > 0 {
            unfreeze(&h.state);
            h.origin
                .commit(&[("n", &format!("{i}\n"))], &format!("change {i}"));
        }
        let before = h.state.lines("started").len();
        let log = h.state.dir().join(format!("pass-{i}.log"));
        let mut pass = Spawned::start(&mut h.pass_cmd(&[]), &log);
        thread::sleep(Duration::from_millis(*delay));
        let out = freeze(&h.state, &format!("race {i}"));
        let started = h.state.lines("started").len();
        assert_eq!(
            h.state.lines("ended").len(),
            started,
            "run {i} (freeze after {delay} ms): freeze returned while an entrypoint ran:\n{out}"
        );
        let status = pass.wait();
        assert!(status.success(), "run {i}: {status}:\n{}", pass.log());
        // One more pass while frozen.
        deploy(&h);
        assert_eq!(
            h.state.lines("started").len(),
            started,
            "run {i} (freeze after {delay} ms): an entrypoint started after freeze returned.\n\
             freeze:\n{out}\nthe racing pass:\n{}",
            pass.log()
        );
        pass_won += started - before;
    }
    eprintln!(
        "the pass ran its entrypoint before the freeze in {pass_won} of {} runs",
        DELAYS_MS.len()
    );
}

#[test]
fn a_freeze_is_recorded_while_passes_keep_starting() {
    // Every pass starts by removing what interrupted passes left behind; a
    // freeze written at that moment must still be recorded.
    const FREEZES: usize = 20;
    let mut h = Host::new();
    h.origin.commit(&[("run.sh", RECORD)], "A");
    deploy(&h);
    let stop = AtomicBool::new(false);
    let failures = thread::scope(|scope| {
        let passes = scope.spawn(|| {
            let mut count = 0;
            while !stop.load(Ordering::SeqCst) {
                h.pass(&[]).assert_code(0);
                count += 1;
            }
            count
        });
        let mut failures = Vec::new();
        for i in 0..FREEZES {
            let reason = format!("freeze {i}");
            let out = op(&h.state, &["freeze", "--reason", &reason]);
            let recorded = h.state.status_json()["frozen"]["reason"] == reason.as_str();
            if !out.success() || !recorded {
                failures.push(format!("{reason}: recorded: {recorded}; {out}"));
            }
            let _ = op(&h.state, &["unfreeze"]);
        }
        stop.store(true, Ordering::SeqCst);
        let passes = passes.join().expect("the passes ran");
        eprintln!("{FREEZES} freezes while {passes} passes ran");
        failures
    });
    assert!(
        failures.is_empty(),
        "{} of {FREEZES} freezes were lost to a starting pass:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn freeze_with_a_short_wait_reports_the_pass_still_applying() {
    let mut h = Host::new();
    let gate = h.state.dir().join("gate");
    // Runs until the test opens the gate (at most a minute, so that nothing
    // is left behind if the test fails half-way).
    let entrypoint = format!(
        "#!/bin/sh\n\
         echo \"$GITOPS_COMMIT\" >> \"$GITOPS_STATE_DIR/started\"\n\
         i=0\n\
         while [ ! -e '{}' ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done\n",
        gate.display()
    );
    let a = h.origin.commit(&[("run.sh", &entrypoint)], "gated");
    let mut pass = Spawned::start(&mut h.pass_cmd(&[]), &h.state.dir().join("pass.log"));
    wait_until("the entrypoint has started", || {
        h.state.lines("started").len() == 1
    });

    let out = op(&h.state, &["freeze", "--reason", "hold on", "--wait", "1s"]);
    assert_ne!(
        out.code,
        Some(0),
        "freeze must report the running pass:\n{out}"
    );
    let error = out.one_error_line();
    assert!(
        error.contains("still running") && error.contains(short(&a)),
        "the error names the pass still applying: {error}"
    );
    assert!(
        error.contains("freeze is recorded"),
        "and says that the freeze holds: {error}"
    );
    assert!(freeze_file(&h.state).exists());

    fs::write(&gate, "").expect("open the gate");
    let status = pass.wait();
    assert!(status.success(), "{status}:\n{}", pass.log());
    h.state.assert_deployed(&a);
    assert_eq!(h.state.status_json()["frozen"]["reason"], "hold on");
    h.origin.commit(&[("n", "1\n")], "next");
    deploy(&h);
    assert_eq!(h.state.lines("started").len(), 1);
}

#[test]
fn a_freeze_survives_a_deleted_state_json() {
    let mut h = Host::new();
    let a = h.origin.commit(&[("run.sh", RECORD)], "A");
    deploy(&h);
    freeze(&h.state, "keep still");
    let record = fs::read(freeze_file(&h.state)).expect("read freeze.json");
    fs::remove_file(h.state.path().join("state.json")).expect("remove state.json");
    h.origin.commit(&[("b.txt", "b\n")], "B");

    let out = deploy(&h);
    assert!(out.stderr.contains("keep still"), "{out}");
    assert_eq!(runs(&h), vec![ran(&a, "initial", "none")], "{out}");
    h.state.assert_deployed(&a);
    assert_eq!(fs::read(freeze_file(&h.state)).ok(), Some(record));
    assert_eq!(h.state.status_json()["frozen"]["reason"], "keep still");
}

#[test]
fn a_freeze_survives_a_corrupt_state_json_and_status_still_shows_it() {
    let mut h = Host::new();
    let a = h.origin.commit(&[("run.sh", RECORD)], "A");
    deploy(&h);
    freeze(&h.state, "keep still");
    let record = fs::read(freeze_file(&h.state)).expect("read freeze.json");
    fs::write(h.state.path().join("state.json"), "{ this is not json").expect("corrupt it");
    h.origin.commit(&[("b.txt", "b\n")], "B");

    let out = h.pass(&[]);
    out.assert_code(7);
    assert_eq!(runs(&h), vec![ran(&a, "initial", "none")]);
    h.state.assert_deployed(&a);
    assert_eq!(
        fs::read(freeze_file(&h.state)).ok(),
        Some(record),
        "the freeze record is intact"
    );

    let status = op(&h.state, &["status"]);
    let shown = format!("{}{}", status.stdout, status.stderr);
    assert!(
        shown.contains("keep still"),
        "status does not show the freeze when state.json is corrupt:\n{status}"
    );
}

#[test]
fn a_corrupt_freeze_record_fails_closed_until_unfreeze() {
    let mut h = Host::new();
    let a = h.origin.commit(&[("run.sh", RECORD)], "A");
    deploy(&h);
    fs::write(freeze_file(&h.state), "{\"format\": 1, \"reason\": ").expect("write");
    let b = h.origin.commit(&[("b.txt", "b\n")], "B");

    let out = deploy(&h);
    h.state.assert_deployed(&a);
    assert_eq!(runs(&h).len(), 1, "{out}");
    assert!(
        out.stderr.contains("cannot be read") && out.stderr.contains("gitops-run unfreeze"),
        "the pass says the record is unreadable and how to clear it:\n{out}"
    );
    let st = h.state.status_json();
    assert_eq!(st["frozen"]["kind"], "unreadable", "{st:#}");
    let text = h.state.status_text().stdout;
    assert!(text.contains("gitops-run unfreeze"), "{text}");
    assert_eq!(plan_json(&h, 2)["action"]["kind"], "held");

    let out = unfreeze(&h.state);
    assert!(!freeze_file(&h.state).exists(), "{out}");
    deploy(&h);
    h.state.assert_deployed(&b);
}

// ---------------------------------------------------------------------------
// rollback

/// A host with three commits deployed one after the other (with `extra`
/// options on each pass).
fn three_deployed(extra: &[&str]) -> (Host, [String; 3]) {
    let mut h = Host::new();
    let a = h.origin.commit(&[("run.sh", RECORD)], "A");
    h.pass(extra).assert_code(0);
    let b = h.origin.commit(&[("b.txt", "b\n")], "B");
    h.pass(extra).assert_code(0);
    let c = h.origin.commit(&[("c.txt", "c\n")], "C");
    h.pass(extra).assert_code(0);
    h.state.assert_deployed(&c);
    (h, [a, b, c])
}

#[test]
fn rollback_to_the_previous_commit_uses_its_kept_tree_and_pins_the_host() {
    let (h, [_a, b, c]) = three_deployed(&[]);
    let tree = h.state.path().join("trees").join(&b);
    let inode = fs::metadata(&tree).expect("B's tree is kept").ino();

    let out = op_repo(&h, &["rollback"]);
    out.assert_code(0);
    assert!(out.stderr.contains("rolled back from"), "{out}");
    h.state.assert_deployed(&b);
    assert_eq!(
        fs::metadata(&tree).map(|m| m.ino()).ok(),
        Some(inode),
        "the kept tree is used, not checked out again"
    );
    assert_eq!(runs(&h).last(), Some(&ran(&b, "rollback", &c)));

    let st = h.state.status_json();
    assert_eq!(st["deployed"]["commit"], b.as_str());
    assert_eq!(st["deployed"]["reason"], "rollback");
    assert_eq!(st["frozen"]["kind"], "rollback", "{st:#}");
    assert_eq!(st["frozen"]["pinned"], b.as_str());
    let reason = st["frozen"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(short(&c)) && reason.contains(short(&b)),
        "{reason}"
    );
}

#[test]
fn rollback_to_an_older_commit_by_abbreviated_hash() {
    let (h, [a, _b, c]) = three_deployed(&[]);
    let out = op_repo(&h, &["rollback", &a[..7]]);
    out.assert_code(0);
    h.state.assert_deployed(&a);
    assert_eq!(runs(&h).last(), Some(&ran(&a, "rollback", &c)));
    assert_eq!(h.state.status_json()["frozen"]["pinned"], a.as_str());
}

#[test]
fn rollback_to_a_commit_whose_tree_was_pruned_checks_it_out_from_the_cache() {
    let (h, [a, _b, c]) = three_deployed(&["--keep-trees", "1"]);
    assert_eq!(h.state.trees(), vec![c.clone()], "precondition: pruned");

    let out = op_repo(&h, &["rollback", &a[..10], "--keep-trees", "1"]);
    out.assert_code(0);
    h.state.assert_deployed(&a);
    assert_eq!(runs(&h).last(), Some(&ran(&a, "rollback", &c)));
}

#[test]
fn a_failing_rollback_leaves_current_alone_and_does_not_freeze() {
    let mut h = Host::new();
    let flag = h.state.dir().join("flag");
    fs::write(&flag, "").expect("create the flag");
    let checks_flag = format!(
        "#!/bin/sh\ntest -e '{}' || {{ echo 'the flag is gone' >&2; exit 1; }}\n{}",
        flag.display(),
        RECORD.trim_start_matches("#!/bin/sh\n")
    );
    let a = h
        .origin
        .commit(&[("run.sh", &checks_flag)], "A checks the flag");
    deploy(&h);
    let b = h.origin.commit(&[("run.sh", RECORD)], "B does not");
    deploy(&h);
    fs::remove_file(&flag).expect("remove the flag");
    let history = h.state.status_json()["history"].clone();

    let out = op_repo(&h, &["rollback"]);
    out.assert_code(5);
    let error = out.one_error_line();
    assert!(
        error.contains(&format!("rollback to {} failed", short(&a)))
            && error.contains("stays deployed"),
        "{error}"
    );
    h.state.assert_deployed(&b);
    assert!(
        !freeze_file(&h.state).exists(),
        "a failed rollback froze the host"
    );
    let st = h.state.status_json();
    assert!(st["frozen"].is_null());
    assert_eq!(st["deployed"]["commit"], b.as_str());
    assert_eq!(st["history"], history);
    assert_eq!(st["consecutive_failures"], 0, "{st:#}");

    // The next pass finds the host up to date and runs nothing.
    let out = deploy(&h);
    h.state.assert_deployed(&b);
    assert_eq!(runs(&h).len(), 2, "{out}");
}

#[test]
fn the_pass_after_a_rollback_does_not_redeploy_the_tip_until_unfreeze() {
    let mut h = Host::new();
    let a = h.origin.commit(&[("run.sh", RECORD)], "A");
    deploy(&h);
    let b = h.origin.commit(&[("b.txt", "b\n")], "B");
    deploy(&h);
    op_repo(&h, &["rollback"]).assert_code(0);
    h.state.assert_deployed(&a);

    for _ in 0..2 {
        let out = deploy(&h);
        h.state.assert_deployed(&a);
        assert_eq!(runs(&h).len(), 3, "{out}");
    }
    assert_eq!(plan_json(&h, 2)["action"]["kind"], "held");

    let out = unfreeze(&h.state);
    assert!(out.stderr.contains("rollback"), "{out}");
    deploy(&h);
    h.state.assert_deployed(&b);
    let last = runs(&h).pop().expect("a run");
    assert_eq!((last.commit, last.previous), (b, a));
}

// ---------------------------------------------------------------------------
// plan

#[test]
fn plan_of_a_first_deployment_exits_2_with_commits_and_files_and_changes_nothing() {
    let mut h = Host::new();
    let a = h.origin.commit(
        &[("run.sh", RECORD), ("etc/motd", "one\ntwo\nthree\n")],
        "first",
    );

    let doc = plan_json(&h, 2);
    assert_eq!(doc["classification"], "initial");
    assert!(doc["deployed"].is_null());
    assert_eq!(doc["remote"], a.as_str());
    assert_eq!(doc["action"]["kind"], "apply");
    assert_eq!(doc["action"]["reason"], "initial");
    let commits = doc["commits"].as_array().expect("commits");
    assert_eq!(commits.len(), 1);
    assert_eq!(commits[0]["commit"], a.as_str());
    assert_eq!(commits[0]["subject"], "first");
    assert!(
        commits[0]["author"]
            .as_str()
            .is_some_and(|s| s.contains(AUTHOR_NAME)),
        "{doc:#}"
    );
    let motd = file_entry(&doc, "etc/motd");
    assert_eq!(
        (&motd["change"], &motd["insertions"], &motd["deletions"]),
        (&"added".into(), &3.into(), &0.into())
    );
    assert_eq!(file_entry(&doc, "run.sh")["insertions"], 2);
    assert_eq!(doc["entrypoint_changed"], true);
    assert_eq!(doc["reboot_file_changed"], false);

    let text = plan_text(&h, 2);
    for want in [
        "initial",
        "first",
        "etc/motd",
        "+3 -0",
        "next pass:     apply",
    ] {
        assert!(text.contains(want), "{want:?} missing:\n{text}");
    }

    assert_eq!(h.state.current(), None);
    assert!(h.state.trees().is_empty());
    assert!(!h.state.path().join("state.json").exists());
}

#[test]
fn plan_up_to_date_exits_0_and_behind_exits_2_listing_what_would_change() {
    let mut h = Host::new();
    let a = h.origin.commit(
        &[("run.sh", RECORD), ("etc/motd", "one\ntwo\nthree\n")],
        "first",
    );
    deploy(&h);

    let doc = plan_json(&h, 0);
    assert_eq!(doc["classification"], "up-to-date");
    assert_eq!(doc["action"]["kind"], "nothing");
    assert_eq!(doc["commits"], serde_json::json!([]));
    assert_eq!(doc["files"], serde_json::json!([]));
    let text = plan_text(&h, 0);
    assert!(
        text.contains("up-to-date") && text.contains("next pass:     nothing"),
        "{text}"
    );

    let b = h.origin.commit(
        &[
            ("etc/motd", "one\n2\nthree\nfour\n"),
            ("reboot-at", "2099-01-01T00:00:00Z\n"),
        ],
        "motd and a reboot",
    );
    let c = h
        .origin
        .commit(&[("run.sh", &format!("{RECORD}exit 0\n"))], "entrypoint");
    let before = snapshot(&h.state);

    let doc = plan_json(&h, 2);
    assert_eq!(doc["classification"], "behind");
    assert_eq!(doc["deployed"], a.as_str());
    assert_eq!(doc["remote"], c.as_str());
    let listed: Vec<&str> = doc["commits"]
        .as_array()
        .expect("commits")
        .iter()
        .map(|c| c["commit"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(listed, vec![c.as_str(), b.as_str()], "newest first");
    let motd = file_entry(&doc, "etc/motd");
    assert_eq!(
        (&motd["change"], &motd["insertions"], &motd["deletions"]),
        (&"modified".into(), &2.into(), &1.into())
    );
    assert_eq!(file_entry(&doc, "reboot-at")["change"], "added");
    assert_eq!(file_entry(&doc, "run.sh")["insertions"], 1);
    assert_eq!(doc["files"].as_array().map(Vec::len), Some(3));
    assert_eq!(doc["entrypoint_changed"], true);
    assert_eq!(doc["reboot_file_changed"], true);
    assert_eq!(doc["action"]["kind"], "apply");
    assert_eq!(doc["action"]["reason"], "new");

    let text = plan_text(&h, 2);
    for want in [
        "behind",
        short(&b),
        "motd and a reboot",
        "etc/motd",
        "+2 -1",
        "the entrypoint changes",
        "the reboot request file changes",
        "next pass:     apply",
    ] {
        assert!(text.contains(want), "{want:?} missing:\n{text}");
    }
    assert_eq!(snapshot(&h.state), before, "plan changed the host");
    assert_eq!(runs(&h).len(), 1);
}

#[test]
fn plan_exits_4_for_a_branch_reset_backwards_or_rewritten() {
    let mut h = Host::new();
    let a = h.origin.commit(&[("run.sh", RECORD)], "A");
    deploy(&h);
    h.origin.commit(&[("b.txt", "b\n")], "B");
    deploy(&h);
    let before = snapshot(&h.state);

    h.origin.reset_hard(&a);
    let doc = plan_json(&h, 4);
    assert_eq!(doc["classification"], "remote-behind");
    assert_eq!(doc["action"]["kind"], "refuse");
    let text = plan_text(&h, 4);
    assert!(
        text.contains("remote-behind") && text.contains("refuse"),
        "{text}"
    );

    h.origin.amend("A, rewritten");
    let doc = plan_json(&h, 4);
    assert_eq!(doc["classification"], "diverged");
    assert_eq!(doc["action"]["kind"], "refuse");
    let text = plan_text(&h, 4);
    assert!(
        text.contains("diverged") && text.contains("refuse"),
        "{text}"
    );

    assert_eq!(snapshot(&h.state), before, "plan changed the host");
}

#[test]
fn plan_exits_5_while_a_failed_commit_waits_for_its_retry() {
    let mut h = Host::new();
    h.origin.commit(&[("run.sh", RECORD)], "A");
    deploy(&h);
    let b = h
        .origin
        .commit(&[("run.sh", "#!/bin/sh\nexit 1\n")], "broken");
    h.pass(&[]).assert_code(5);
    let retry = time(&h.state.status_json()["next_retry_at"]);
    let before = snapshot(&h.state);

    let doc = plan_json(&h, 5);
    assert_eq!(doc["remote"], b.as_str());
    assert_eq!(doc["action"]["kind"], "wait");
    assert_eq!(doc["action"]["reason"], "retry");
    assert_eq!(time(&doc["action"]["until"]), retry);
    let text = plan_text(&h, 5);
    assert!(text.contains("next pass:     wait"), "{text}");
    assert_eq!(snapshot(&h.state), before, "plan changed the host");
}

#[test]
fn plan_on_a_frozen_host_exits_2_and_says_held() {
    let mut h = Host::new();
    h.origin.commit(&[("run.sh", RECORD)], "A");
    deploy(&h);
    freeze(&h.state, "audit");
    let b = h.origin.commit(&[("b.txt", "b\n")], "B");
    let before = snapshot(&h.state);

    let doc = plan_json(&h, 2);
    assert_eq!(doc["classification"], "behind");
    assert_eq!(doc["action"]["kind"], "held");
    assert_eq!(doc["frozen"]["reason"], "audit");
    assert_eq!(doc["frozen"]["by"], "root");
    assert_eq!(doc["commits"][0]["commit"], b.as_str());
    let text = plan_text(&h, 2);
    assert!(text.contains("held") && text.contains("audit"), "{text}");
    assert_eq!(snapshot(&h.state), before, "plan changed the host");
}

// ---------------------------------------------------------------------------
// status, who, and where the commands may run

#[test]
fn status_shows_the_freeze_and_the_deployment_history_with_reasons() {
    let mut h = Host::new();
    let a = h.origin.commit(&[("run.sh", RECORD)], "A");
    deploy(&h);
    let b = h.origin.commit(&[("b.txt", "b\n")], "B");
    deploy(&h);

    let out = run(ctl(
        &h.state,
        &["freeze", "--reason", "audit week", "--until", "1h"],
    )
    .env("SUDO_USER", "alice"));
    out.assert_code(0);

    let st = h.state.status_json();
    let frozen = &st["frozen"];
    assert_eq!(frozen["kind"], "operator");
    assert_eq!(frozen["reason"], "audit week");
    assert_eq!(frozen["by"], "alice");
    assert_eq!(
        time(&frozen["until"]) - time(&frozen["since"]),
        chrono::Duration::hours(1)
    );
    assert_eq!(st["deployed"]["commit"], b.as_str());
    assert_eq!(st["deployed"]["reason"], "new");
    assert_eq!(st["history"][0]["commit"], a.as_str());
    assert_eq!(st["history"][0]["reason"], "initial");

    let text = h.state.status_text().stdout;
    let line = text
        .lines()
        .find(|l| l.starts_with("frozen:"))
        .unwrap_or_else(|| panic!("no frozen line:\n{text}"));
    for want in ["audit week", "by alice", "since", "until"] {
        assert!(line.contains(want), "{want:?} missing from {line:?}");
    }
    for (commit, reason) in [(&a, "initial"), (&b, "new")] {
        assert!(
            text.lines()
                .any(|l| l.contains(short(commit)) && l.contains(reason)),
            "{} {reason} missing from the deployments:\n{text}",
            short(commit)
        );
    }

    unfreeze(&h.state);
    let out =
        run(ctl(&h.state, &["rollback", "--repo", &h.origin.url()]).env("SUDO_USER", "alice"));
    out.assert_code(0);
    let st = h.state.status_json();
    assert_eq!(st["deployed"]["commit"], a.as_str());
    assert_eq!(st["deployed"]["reason"], "rollback");
    assert_eq!(st["history"][0]["commit"], b.as_str());
    assert_eq!(st["history"][0]["reason"], "new");
    assert_eq!(st["frozen"]["by"], "alice");
    let text = h.state.status_text().stdout;
    assert!(
        text.lines()
            .any(|l| l.contains(short(&a)) && l.contains("rollback")),
        "{text}"
    );
}

#[test]
fn commands_on_a_state_dir_without_a_pass_say_so_or_work_with_a_note() {
    let mut h = Host::new();
    let missing = op(&h.state, &["freeze", "--reason", "early"]);
    missing.assert_code(7);
    assert!(
        missing.one_error_line().contains("does not exist"),
        "{missing}"
    );

    fs::create_dir(h.state.path()).expect("create the state dir");
    fs::set_permissions(h.state.path(), fs::Permissions::from_mode(0o700)).expect("chmod");
    h.origin.commit(&[("run.sh", RECORD)], "A");

    let out = op_repo(&h, &["rollback"]);
    out.assert_code(7);
    let error = out.one_error_line();
    assert!(
        error.contains("no pass has run") && error.contains("nothing to roll back"),
        "{error}"
    );

    let out = freeze(&h.state, "before the first pass");
    assert!(out.stderr.contains("no pass has run"), "the note:\n{out}");
    let text = h.state.status_text().stdout;
    assert!(
        text.contains("no pass has run yet") && text.contains("before the first pass"),
        "{text}"
    );
    deploy(&h);
    h.state.assert_nothing_deployed(&["runs"]);
}

/// `gitops-run ARGS --state-dir DIR` run as [`OTHER_UID`].
fn as_other_user(state: &StateDir, args: &[&str]) -> Run {
    let mut cmd = Command::new("setpriv");
    git_env(&mut cmd);
    for (name, _) in std::env::vars_os() {
        let text = name.to_string_lossy();
        if text.starts_with("GITOPS_") || text == "SUDO_USER" {
            cmd.env_remove(name);
        }
    }
    let id = OTHER_UID.to_string();
    cmd.args(["--reuid", &id, "--regid", &id, "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_gitops-run"))
        .args(args)
        .args(["--state-dir", state.arg()]);
    run(&mut cmd)
}

/// Lets [`OTHER_UID`] reach the state directory of `h` (the temporary
/// directory around it is private to root).
fn open_path_to_state(h: &Host) {
    fs::set_permissions(h.state.dir(), fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[test]
fn commands_on_a_state_dir_owned_by_another_user_are_refused() {
    let mut h = Host::new();
    h.origin.commit(&[("run.sh", RECORD)], "A");
    deploy(&h);
    h.origin.commit(&[("b.txt", "b\n")], "B");
    deploy(&h);
    open_path_to_state(&h);
    let repo = h.origin.url();

    for args in [
        vec!["freeze", "--reason", "not mine"],
        vec!["unfreeze"],
        vec!["rollback", "--repo", repo.as_str()],
    ] {
        let out = as_other_user(&h.state, &args);
        out.assert_code(7);
        let error = out.one_error_line();
        assert!(
            error.contains("belongs to uid 0") && error.contains("only root or its owner"),
            "{args:?}: {error}"
        );
    }
    assert!(!freeze_file(&h.state).exists());
    assert_eq!(runs(&h).len(), 2, "nothing ran");
}

#[test]
fn the_owner_of_a_state_dir_may_freeze_and_unfreeze_it() {
    let mut h = Host::new();
    h.origin.commit(&[("run.sh", RECORD)], "A");
    deploy(&h);
    open_path_to_state(&h);
    let owner = format!("{OTHER_UID}:{OTHER_UID}");
    let chown = run(Command::new("chown").args(["-R", &owner, h.state.arg()]));
    assert!(chown.success(), "{chown}");

    let out = as_other_user(&h.state, &["freeze", "--reason", "mine"]);
    out.assert_code(0);
    let meta = fs::metadata(freeze_file(&h.state)).expect("freeze.json written");
    assert_eq!(meta.uid(), OTHER_UID);
    let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(OTHER_UID))
        .ok()
        .flatten()
        .map_or_else(|| format!("uid {OTHER_UID}"), |u| u.name);
    assert_eq!(h.state.status_json()["frozen"]["by"], name.as_str());

    as_other_user(&h.state, &["unfreeze"]).assert_code(0);
    assert!(!freeze_file(&h.state).exists());
}

#[test]
fn freeze_refuses_a_missing_or_empty_reason_and_an_until_in_the_past() {
    let mut h = Host::new();
    h.origin.commit(&[("run.sh", RECORD)], "A");
    deploy(&h);

    for args in [
        vec!["freeze"],
        vec!["freeze", "--reason", ""],
        vec!["freeze", "--reason", "   "],
        vec!["freeze", "--reason", "x", "--until", "2020-01-01T00:00:00Z"],
        vec!["freeze", "--reason", "x", "--until", "soon"],
    ] {
        let out = op(&h.state, &args);
        out.assert_code(2);
        assert!(!freeze_file(&h.state).exists(), "{args:?} froze the host");
    }
    let past = op(
        &h.state,
        &["freeze", "--reason", "x", "--until", "2020-01-01T00:00:00Z"],
    );
    assert!(
        past.one_error_line().contains("not in the future"),
        "{past}"
    );
}

#[test]
fn freeze_unfreeze_and_rollback_each_send_one_message() {
    let rx = Receiver::start(vec![]);
    let url = rx.url("/hooks/ops");
    let hook = ["--webhook-url", url.as_str(), "--webhook-format", "json"];
    let mut h = Host::new();
    let a = h.origin.commit(&[("run.sh", RECORD)], "A");
    deploy(&h);
    let b = h.origin.commit(&[("b.txt", "b\n")], "B");
    deploy(&h);
    let events = || -> Vec<Value> { rx.requests().iter().map(|r| r.json()).collect() };

    let freeze_args = [&["freeze", "--reason", "db migration"][..], &hook[..]].concat();
    op(&h.state, &freeze_args).assert_code(0);
    let sent = events();
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert_eq!(sent[0]["event"], "frozen");
    assert!(
        sent[0]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("db migration")),
        "{:#}",
        sent[0]
    );

    op(&h.state, &freeze_args).assert_code(0);
    assert_eq!(events().len(), 1, "the same freeze again sent a message");

    op(&h.state, &[&["unfreeze"][..], &hook[..]].concat()).assert_code(0);
    let sent = events();
    assert_eq!(sent.len(), 2, "{sent:#?}");
    assert_eq!(sent[1]["event"], "unfrozen");

    let repo = h.origin.url();
    op(
        &h.state,
        &[&["rollback", "--repo", repo.as_str()][..], &hook[..]].concat(),
    )
    .assert_code(0);
    let sent = events();
    assert_eq!(sent.len(), 3, "{sent:#?}");
    assert_eq!(sent[2]["event"], "rolled-back");
    let summary = sent[2]["summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains(short(&b)) && summary.contains(short(&a)),
        "{summary}"
    );
    assert!(rx.errors().is_empty(), "{:?}", rx.errors());
}

/// Found by a new operator: `plan` promised "apply" for a commit whose `run.sh`
/// lost its executable bit, and the next pass failed with exit 6. Plan judges the
/// entrypoint in the tip's tree as the pass would, and lists the mode change.
#[test]
fn plan_of_a_tip_whose_entrypoint_lost_its_executable_bit_is_invalid_and_shows_the_mode() {
    let mut h = Host::new();
    h.origin.commit(&[("run.sh", RECORD)], "first");
    deploy(&h);
    crate::common::git(h.origin.path(), &["update-index", "--chmod=-x", "run.sh"]);
    crate::common::git(
        h.origin.path(),
        &["commit", "-q", "-m", "run.sh not executable"],
    );
    let before = snapshot(&h.state);

    let doc = plan_json(&h, 6);
    assert_eq!(doc["action"]["kind"], "invalid", "{doc:#}");
    let detail = doc["action"]["detail"].as_str().unwrap();
    assert!(detail.contains("not executable"), "{detail}");
    assert_eq!(
        file_entry(&doc, "run.sh")["mode_change"],
        "100755 => 100644"
    );
    let text = plan_text(&h, 6);
    assert!(text.contains("(mode 100755 => 100644)"), "{text}");
    assert!(text.contains("not executable"), "{text}");
    assert_eq!(snapshot(&h.state), before, "plan must change nothing");

    // What plan said is what the pass does.
    let out = h.pass(&[]);
    out.assert_code(6);
    assert!(out.stderr.contains("not executable"), "{out}");

    // A tip without the entrypoint at all is invalid too.
    crate::common::git(h.origin.path(), &["rm", "-q", "-f", "run.sh"]);
    crate::common::git(h.origin.path(), &["commit", "-q", "-m", "no entrypoint"]);
    let doc = plan_json(&h, 6);
    assert_eq!(doc["action"]["kind"], "invalid", "{doc:#}");
    assert!(
        doc["action"]["detail"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{doc:#}"
    );
}
