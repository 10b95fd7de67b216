//! Regression tests named after the bug they pin down.

use crate::common::{bin, Origin};
use std::path::Path;

fn pass(origin: &Origin, state: &Path) -> std::process::Output {
    bin()
        .args(["--repo", &origin.url(), "--state-dir"])
        .arg(state)
        .output()
        .expect("run gitops-run")
}

/// A fetch killed with SIGKILL leaves gix's `*.lock` files behind; they must not
/// block every later fetch.
#[test]
fn stale_git_lock_files_from_a_killed_fetch_do_not_block_later_passes() {
    let mut origin = Origin::new();
    origin.commit(&[("run.sh", "#!/bin/sh\nexit 0\n")], "first");
    let state = tempfile::tempdir().unwrap();
    let state = state.path().join("state");
    assert!(pass(&origin, &state).status.success());

    let second = origin.commit(&[("file.txt", "two\n")], "second");
    let cache = state.join("cache.git");
    for lock in [
        "refs/remotes/origin/main.lock",
        "shallow.lock",
        "packed-refs.lock",
        "config.lock",
    ] {
        std::fs::write(cache.join(lock), "").unwrap();
    }

    let out = pass(&origin, &state);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "second pass failed: {stderr}");
    assert!(stderr.contains("removed stale lock"), "{stderr}");
    let current = std::fs::read_link(state.join("current")).unwrap();
    assert!(
        current.ends_with(&second),
        "current -> {}",
        current.display()
    );
}

/// Something that is not a tree in `trees/` made pruning fail after a successful
/// deploy, turning the pass into exit 1 although the commit was deployed.
#[test]
fn stray_file_in_trees_does_not_fail_a_successful_deploy() {
    let mut origin = Origin::new();
    origin.commit(&[("run.sh", "#!/bin/sh\nexit 0\n")], "first");
    let state = tempfile::tempdir().unwrap();
    let state = state.path().join("state");
    assert!(pass(&origin, &state).status.success());

    std::fs::write(state.join("trees").join("stray"), "junk").unwrap();
    let second = origin.commit(&[("file.txt", "two\n")], "second");
    let out = pass(&origin, &state);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read_link(state.join("current"))
        .unwrap()
        .ends_with(&second));
    assert!(!state.join("trees").join("stray").exists());
}

/// `eprintln!` panics when stderr is a closed pipe (cron piping to a `logger` that
/// died, `| head`): the pass aborted with exit 101 after running the entrypoint
/// and before recording the result.
#[test]
fn closed_stderr_does_not_abort_a_pass() {
    let mut origin = Origin::new();
    let loud = "#!/bin/sh\ni=0\nwhile [ $i -lt 500 ]; do echo \"line $i\"; i=$((i+1)); done\n";
    let head = origin.commit(&[("run.sh", loud)], "loud");
    let state = tempfile::tempdir().unwrap();
    let state = state.path().join("state");
    let mut child = bin()
        .args(["--repo", &origin.url(), "--state-dir"])
        .arg(&state)
        .arg("-v")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(std::fs::read_link(state.join("current"))
        .unwrap()
        .ends_with(&head));
    let st: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("state.json")).unwrap()).unwrap();
    assert_eq!(st["deployed"]["commit"], head.as_str());
}

/// Boolean variables accepted only `true`/`false`; the docs promise 1/yes/on too.
#[test]
fn boolean_environment_values_accept_the_usual_spellings() {
    let mut origin = Origin::new();
    origin.commit(&[("run.sh", "#!/bin/sh\nexit 0\n")], "first");
    for (value, verbose) in [
        ("1", true),
        ("yes", true),
        ("on", true),
        ("0", false),
        ("off", false),
        ("no", false),
    ] {
        let state = tempfile::tempdir().unwrap();
        let out = bin()
            .args(["--repo", &origin.url(), "--state-dir"])
            .arg(state.path().join("s"))
            .env("GITOPS_VERBOSE", value)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{value}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let debug = String::from_utf8_lossy(&out.stderr).contains("debug:");
        assert_eq!(debug, verbose, "GITOPS_VERBOSE={value}");
    }
    let out = bin()
        .args([
            "--repo",
            &origin.url(),
            "--state-dir",
            "/nonexistent-never-created",
        ])
        .env("GITOPS_ALLOW_REWRITE", "perhaps")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// A pass typed in an ssh session died on SIGHUP when the session dropped, leaving
/// its entrypoint orphaned half-way. It now finishes the pass.
#[test]
fn sighup_from_a_dropped_session_does_not_abort_a_pass() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("go");
    let mut origin = Origin::new();
    let script = format!(
        "#!/bin/sh\necho started > '{0}.started'\nwhile [ ! -e '{0}' ]; do sleep 0.05; done\necho finished\n",
        flag.display()
    );
    let head = origin.commit(&[("run.sh", &script)], "waits for a flag");
    let state = dir.path().join("state");
    let mut child = bin()
        .args(["--repo", &origin.url(), "--state-dir"])
        .arg(&state)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = dir.path().join("go.started");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !started.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the entrypoint never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    std::fs::write(&flag, "").unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "the pass survived SIGHUP and finished"
    );
    assert!(std::fs::read_link(state.join("current"))
        .unwrap()
        .ends_with(&head));
}
