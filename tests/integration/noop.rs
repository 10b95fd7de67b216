//! Issue 10: a pass that finds nothing new writes nothing that must survive a
//! crash (no fsync, state.json untouched), status still shows it, and over
//! `file://` it reads the branch tip from the repository without starting
//! `git-upload-pack`.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use crate::common::{run, Origin, StateDir};

const ENTRYPOINT: &str = "#!/bin/sh\nexit 0\n";

/// Inode, size and modification time (ns) of `path`.
fn identity(path: &Path) -> (u64, u64, i64, i64) {
    let m = fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    (m.ino(), m.size(), m.mtime(), m.mtime_nsec())
}

fn last_pass_started(state: &StateDir) -> String {
    state.status_json()["last_pass"]["started_at"]
        .as_str()
        .expect("last_pass.started_at")
        .to_string()
}

#[test]
fn a_no_op_pass_leaves_state_json_untouched_and_status_still_shows_it() {
    let mut origin = Origin::new();
    origin.commit(&[("run.sh", ENTRYPOINT)], "first");
    let state = StateDir::new();
    state.pass(&origin.url(), &[]).assert_code(0);
    let file = state.path().join("state.json");
    let before = identity(&file);
    let bytes = fs::read(&file).unwrap();
    let first = last_pass_started(&state);

    let out = state.pass(&origin.url(), &[]);
    out.assert_code(0);
    assert!(out.stderr.contains("up to date"), "{out}");
    assert_eq!(
        identity(&file),
        before,
        "state.json was rewritten by a no-op pass"
    );
    assert_eq!(fs::read(&file).unwrap(), bytes);
    let second = last_pass_started(&state);
    assert!(
        second > first,
        "status must show the no-op pass ({second} after {first})"
    );
    let status = state.status_json();
    assert_eq!(status["last_pass"]["outcome"], "up-to-date");
    // state.json still says how the tip related before it was applied; status
    // shows what the no-op pass found.
    assert_eq!(status["classification"], "up-to-date", "{status:#}");

    // A pass that does change something writes state.json again.
    origin.commit(&[("app.conf", "v2\n")], "second");
    state.pass(&origin.url(), &[]).assert_code(0);
    assert_ne!(
        identity(&file),
        before,
        "an applying pass must record its result"
    );
}

/// Counts the fsync-family calls of one pass and its children with strace.
fn syncs_of(cmd: &mut Command, dir: &Path) -> u64 {
    let summary = dir.join("strace.txt");
    let program = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let mut traced = Command::new("strace");
    traced
        .args(["-f", "-c", "-U", "name,calls", "-o"])
        .arg(&summary)
        .args(["-e", "trace=fsync,fdatasync,sync_file_range,syncfs,sync"])
        .arg(&program)
        .args(&args);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => traced.env(k, v),
            None => traced.env_remove(k),
        };
    }
    run(&mut traced).assert_code(0);
    let text = fs::read_to_string(&summary).unwrap();
    text.lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let name = parts.next()?;
            let calls = parts.next()?.parse::<u64>().ok()?;
            (name != "total").then_some(calls)
        })
        .sum()
}

#[test]
fn a_no_op_pass_calls_no_fsync_while_an_applying_pass_does() {
    let mut origin = Origin::new();
    origin.commit(&[("run.sh", ENTRYPOINT)], "first");
    let state = StateDir::new();
    let scratch = tempfile::tempdir().unwrap();
    let metrics = scratch.path().join("gitops-run.prom");
    let extra = ["--metrics-file", metrics.to_str().unwrap()];
    let applying = syncs_of(&mut state.pass_cmd(&origin.url(), &extra), scratch.path());
    // The control: the tracer sees the syncs of a pass that records a deployment.
    assert!(
        applying > 0,
        "the first pass must sync its state ({applying} calls)"
    );
    let no_op = syncs_of(&mut state.pass_cmd(&origin.url(), &extra), scratch.path());
    assert_eq!(no_op, 0, "fsync-family calls in a no-op pass");
    assert!(
        metrics.exists(),
        "the no-op pass still writes its metrics textfile"
    );
}

/// A `git-upload-pack` first on PATH that logs each start, then runs git's.
fn logging_upload_pack(dir: &Path) -> (String, std::path::PathBuf) {
    let real = String::from_utf8(
        Command::new("git")
            .arg("--exec-path")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let log = dir.join("upload-pack.log");
    let bin = dir.join("bin");
    fs::create_dir(&bin).unwrap();
    let wrapper = bin.join("git-upload-pack");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho started >> '{}'\nexec '{}/git-upload-pack' \"$@\"\n",
            log.display(),
            real.trim()
        ),
    )
    .unwrap();
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    (path, log)
}

fn starts(log: &Path) -> usize {
    fs::read_to_string(log)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[test]
fn a_no_op_pass_over_file_starts_no_upload_pack_but_a_moved_branch_is_fetched() {
    let mut origin = Origin::new();
    origin.commit(&[("run.sh", ENTRYPOINT)], "first");
    let state = StateDir::new();
    let scratch = tempfile::tempdir().unwrap();
    let (path, log) = logging_upload_pack(scratch.path());
    let pass = || run(state.pass_cmd(&origin.url(), &[]).env("PATH", &path));

    pass().assert_code(0);
    assert_eq!(
        starts(&log),
        1,
        "the first pass fetches through git-upload-pack"
    );
    let out = pass();
    out.assert_code(0);
    assert!(out.stderr.contains("up to date"), "{out}");
    assert_eq!(
        starts(&log),
        1,
        "a no-op pass over file:// started git-upload-pack"
    );

    let mut origin = origin;
    let second = origin.commit(&[("app.conf", "v2\n")], "second");
    let pass = || run(state.pass_cmd(&origin.url(), &[]).env("PATH", &path));
    let out = pass();
    out.assert_code(0);
    assert_eq!(starts(&log), 2, "a moved branch is fetched: {out}");
    assert_eq!(
        state.status_json()["deployed"]["commit"].as_str(),
        Some(second.as_str())
    );

    // A branch deleted in the repository is not "up to date": the fetch proper
    // runs and reports it.
    crate::common::git(origin.path(), &["checkout", "-q", "-b", "other"]);
    crate::common::git(origin.path(), &["branch", "-q", "-D", "main"]);
    let out = pass();
    out.assert_code(3);
    assert!(out.stderr.contains("\"main\" does not exist"), "{out}");
}
