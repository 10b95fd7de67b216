//! Regression tests named after the bug they pin down.

use std::thread;
use std::time::Duration;

use crate::common::{bin, run, wait_until, Host, Spawned, StateDir};

/// A host whose origin's first commit has an entrypoint that succeeds.
fn host() -> Host {
    let mut host = Host::new();
    host.origin
        .commit(&[("run.sh", "#!/bin/sh\nexit 0\n")], "first");
    host
}

/// A fetch killed with SIGKILL leaves gix's `*.lock` files behind; they must not
/// block every later fetch.
#[test]
fn stale_git_lock_files_from_a_killed_fetch_do_not_block_later_passes() {
    let mut h = host();
    h.pass(&[]).assert_code(0);

    let second = h.origin.commit(&[("file.txt", "two\n")], "second");
    let cache = h.state.path().join("cache.git");
    for lock in [
        "refs/remotes/origin/main.lock",
        "shallow.lock",
        "packed-refs.lock",
        "config.lock",
    ] {
        std::fs::write(cache.join(lock), "").unwrap();
    }

    let out = h.pass(&[]);
    assert!(out.success(), "second pass failed: {}", out.stderr);
    assert!(out.stderr.contains("removed stale lock"), "{}", out.stderr);
    assert_eq!(h.state.current(), Some(second));
}

/// Something that is not a tree in `trees/` made pruning fail after a successful
/// deploy, turning the pass into exit 1 although the commit was deployed.
#[test]
fn stray_file_in_trees_does_not_fail_a_successful_deploy() {
    let mut h = host();
    h.pass(&[]).assert_code(0);

    let trees = h.state.path().join("trees");
    std::fs::write(trees.join("stray"), "junk").unwrap();
    let second = h.origin.commit(&[("file.txt", "two\n")], "second");
    let out = h.pass(&[]);
    assert!(out.success(), "{}", out.stderr);
    assert_eq!(h.state.current(), Some(second));
    assert!(!trees.join("stray").exists());
}

/// `eprintln!` panics when stderr is a closed pipe (cron piping to a `logger` that
/// died, `| head`): the pass aborted with exit 101 after running the entrypoint
/// and before recording the result.
#[test]
fn closed_stderr_does_not_abort_a_pass() {
    let mut h = Host::new();
    let loud = "#!/bin/sh\ni=0\nwhile [ $i -lt 500 ]; do echo \"line $i\"; i=$((i+1)); done\n";
    let head = h.origin.commit(&[("run.sh", loud)], "loud");
    let mut pass =
        Spawned::with_closed_stderr(&mut h.pass_cmd(&["-v"]), &h.state.dir().join("pass.out"));
    let status = pass.wait();
    assert_eq!(status.code(), Some(0));
    assert_eq!(h.state.current().as_deref(), Some(head.as_str()));
    let st = h.state.state_json();
    assert_eq!(st["deployed"]["commit"], head.as_str());
}

/// Boolean variables accepted only `true`/`false`; the docs promise 1/yes/on too.
#[test]
fn boolean_environment_values_accept_the_usual_spellings() {
    let h = host();
    for (value, verbose) in [
        ("1", true),
        ("yes", true),
        ("on", true),
        ("0", false),
        ("off", false),
        ("no", false),
    ] {
        let state = StateDir::new();
        let out = run(state
            .pass_cmd(&h.origin.url(), &[])
            .env("GITOPS_VERBOSE", value));
        assert!(out.success(), "{value}: {}", out.stderr);
        let debug = out.stderr.contains("debug:");
        assert_eq!(debug, verbose, "GITOPS_VERBOSE={value}");
    }
    let out = run(bin()
        .args([
            "--repo",
            &h.origin.url(),
            "--state-dir",
            "/nonexistent-never-created",
        ])
        .env("GITOPS_ALLOW_REWRITE", "perhaps"));
    assert_eq!(out.code, Some(2));
}

/// A pass typed in an ssh session died on SIGHUP when the session dropped, leaving
/// its entrypoint orphaned half-way. It now finishes the pass.
#[test]
fn sighup_from_a_dropped_session_does_not_abort_a_pass() {
    let mut h = Host::new();
    let flag = h.state.dir().join("go");
    let script = format!(
        "#!/bin/sh\necho started > '{0}.started'\nwhile [ ! -e '{0}' ]; do sleep 0.05; done\necho finished\n",
        flag.display()
    );
    let head = h.origin.commit(&[("run.sh", &script)], "waits for a flag");
    let mut pass = Spawned::start(&mut h.pass_cmd(&[]), &h.state.dir().join("pass.out"));
    let started = h.state.dir().join("go.started");
    wait_until("the entrypoint to start", || started.exists());
    let pid = nix::unistd::Pid::from_raw(pass.pid());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    thread::sleep(Duration::from_millis(200));
    std::fs::write(&flag, "").unwrap();
    let status = pass.wait();
    assert_eq!(
        status.code(),
        Some(0),
        "the pass survived SIGHUP and finished"
    );
    assert_eq!(h.state.current().as_deref(), Some(head.as_str()));
}
