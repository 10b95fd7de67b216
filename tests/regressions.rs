//! Regression tests named after the bug they pin down.

mod common;

use common::{bin, Origin};
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
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::read_link(state.join("current")).unwrap().ends_with(&second));
    assert!(!state.join("trees").join("stray").exists());
}
