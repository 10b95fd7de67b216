//! Reboot requests end to end: the binary, a real git repository, the machine's
//! real boot time, and a fake reboot command that records its calls.

use crate::common::{boot_time, due_time, rfc3339, run, Host, Run};
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use std::path::{Path, PathBuf};

const OK_RUN: &str = "#!/bin/sh\nexit 0\n";

/// The file the fake reboot command appends a line to per call.
fn reboots(h: &Host) -> PathBuf {
    h.state.dir().join("reboots")
}

/// One pass of `h` in time zone `tz`, whose reboot command records the call
/// in [`reboots`].
fn pass_with(h: &Host, extra: &[&str], tz: &str) -> Run {
    let reboot = format!("echo reboot >> '{}'", reboots(h).display());
    run(h
        .pass_cmd(&["--reboot-command", &reboot])
        .args(extra)
        .env("TZ", tz))
}

fn pass(h: &Host) -> Run {
    pass_with(h, &[], "UTC")
}

/// How often the reboot command ran.
fn reboot_count(h: &Host) -> usize {
    std::fs::read_to_string(reboots(h))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

fn time_of(v: &Value) -> DateTime<Utc> {
    v.as_str().unwrap().parse().unwrap()
}

#[test]
fn due_request_after_boot_reboots_exactly_once_over_several_passes() {
    let mut h = Host::new();
    h.origin.commit(
        &[
            ("run.sh", OK_RUN),
            ("reboot-at", &format!("{}\n", rfc3339(due_time()))),
        ],
        "reboot for the kernel",
    );
    for _ in 0..4 {
        let out = pass(&h);
        assert!(out.success(), "{}", out.stderr);
    }
    assert_eq!(reboot_count(&h), 1);
    let st = h.state.status_json();
    assert_eq!(st["reboot"]["status"], "done");
    assert_eq!(st["reboots_done"].as_array().unwrap().len(), 1);
}

#[test]
fn request_before_boot_never_reboots() {
    let mut h = Host::new();
    let before = boot_time() - Duration::minutes(30);
    h.origin.commit(
        &[("run.sh", OK_RUN), ("reboot-at", &rfc3339(before))],
        "old request",
    );
    for _ in 0..2 {
        assert!(pass(&h).success());
    }
    assert_eq!(reboot_count(&h), 0);
    assert_eq!(h.state.status_json()["reboot"]["status"], "spent");
}

#[test]
fn future_request_is_pending_and_reboots_nothing_now() {
    let mut h = Host::new();
    let later = Utc::now() + Duration::hours(2);
    h.origin.commit(
        &[("run.sh", OK_RUN), ("reboot-at", &rfc3339(later))],
        "reboot tonight",
    );
    let out = pass(&h);
    assert!(out.success());
    assert!(out.stderr.contains("reboot pending"), "{}", out.stderr);
    assert_eq!(reboot_count(&h), 0);
    let st = h.state.status_json();
    assert_eq!(st["reboot"]["status"], "pending");
    assert_eq!(
        time_of(&st["reboot"]["effective_at"]).timestamp(),
        later.timestamp()
    );
}

#[test]
fn malformed_request_reboots_nothing_and_exits_8_but_still_deploys() {
    let mut h = Host::new();
    let head = h.origin.commit(
        &[("run.sh", OK_RUN), ("reboot-at", "next tuesday\n")],
        "oops",
    );
    let out = pass(&h);
    assert_eq!(out.code, Some(8), "{}", out.stderr);
    assert!(
        out.stderr.contains("invalid reboot request"),
        "{}",
        out.stderr
    );
    assert_eq!(reboot_count(&h), 0);
    let st = h.state.status_json();
    assert_eq!(st["reboot"]["status"], "invalid");
    assert_eq!(st["deployed"]["commit"], head.as_str());
}

#[test]
fn request_past_its_grace_is_missed_not_carried_out() {
    let mut h = Host::new();
    let (b, now) = (boot_time(), Utc::now());
    let t = b + (now - b) / 2;
    h.origin
        .commit(&[("run.sh", OK_RUN), ("reboot-at", &rfc3339(t))], "late");
    let out = pass_with(&h, &["--reboot-grace", "0s"], "UTC");
    assert!(out.success());
    assert!(out.stderr.contains("missed"), "{}", out.stderr);
    assert_eq!(reboot_count(&h), 0);
    assert_eq!(h.state.status_json()["reboot"]["status"], "missed");
}

#[test]
fn request_in_a_commit_whose_entrypoint_fails_reboots_nothing() {
    let mut h = Host::new();
    h.origin.commit(&[("run.sh", OK_RUN)], "base");
    assert!(pass(&h).success());
    h.origin.commit(
        &[
            ("run.sh", "#!/bin/sh\nexit 1\n"),
            ("reboot-at", &rfc3339(due_time())),
        ],
        "broken, with a reboot",
    );
    let out = pass(&h);
    assert_eq!(out.code, Some(5));
    assert_eq!(reboot_count(&h), 0);
    assert!(h.state.status_json()["reboot"].is_null());
}

#[test]
fn pending_request_moved_then_removed_is_moved_then_cancelled() {
    let mut h = Host::new();
    let first = Utc::now() + Duration::hours(2);
    h.origin.commit(
        &[("run.sh", OK_RUN), ("reboot-at", &rfc3339(first))],
        "plan",
    );
    assert!(pass(&h).success());

    let second = first + Duration::hours(1);
    h.origin.commit(&[("reboot-at", &rfc3339(second))], "move");
    let out = pass(&h);
    assert!(out.stderr.contains("reboot moved"), "{}", out.stderr);
    assert_eq!(
        time_of(&h.state.status_json()["reboot"]["effective_at"]).timestamp(),
        second.timestamp()
    );

    h.origin.remove(&["reboot-at"], "cancel");
    let out = pass(&h);
    assert!(out.stderr.contains("cancelled"), "{}", out.stderr);
    assert!(h.state.status_json()["reboot"].is_null());
    assert_eq!(reboot_count(&h), 0);
}

#[test]
fn splay_adds_a_fixed_delay_per_host_within_the_window() {
    let mut h = Host::new();
    let at = Utc::now() + Duration::hours(3);
    h.origin.commit(
        &[("run.sh", OK_RUN), ("reboot-at", &rfc3339(at))],
        "fleet reboot",
    );
    let mut delays = Vec::new();
    for _ in 0..2 {
        assert!(pass_with(&h, &["--reboot-splay", "1h"], "UTC").success());
        let st = h.state.status_json();
        let d = time_of(&st["reboot"]["effective_at"]) - time_of(&st["reboot"]["requested_at"]);
        delays.push(d.num_seconds());
    }
    assert!((0..=3600).contains(&delays[0]), "{delays:?}");
    assert_eq!(delays[0], delays[1], "the same host gets the same delay");
}

fn local(tz: &str, t: DateTime<Utc>) -> String {
    let out = std::process::Command::new("date")
        .env("TZ", tz)
        .args(["-d", &format!("@{}", t.timestamp()), "+%Y-%m-%d %H:%M:%S"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn requested_at_for(request: &str, tz: &str) -> Value {
    let mut h = Host::new();
    h.origin
        .commit(&[("run.sh", OK_RUN), ("reboot-at", request)], "local time");
    let _ = pass_with(&h, &[], tz);
    assert_eq!(reboot_count(&h), 0);
    h.state.status_json()["reboot"].clone()
}

#[test]
fn local_time_form_honours_the_time_zone() {
    if !Path::new("/usr/share/zoneinfo/Europe/Berlin").exists() {
        eprintln!("skipped: tzdata is not installed");
        return;
    }
    let at = Utc::now() + Duration::hours(5);
    for tz in ["Europe/Berlin", "America/New_York", "Asia/Kolkata"] {
        let r = requested_at_for(&local(tz, at), tz);
        assert_eq!(r["status"], "pending", "{tz}: {r}");
        assert_eq!(
            time_of(&r["requested_at"]).timestamp(),
            at.timestamp(),
            "{tz}"
        );
    }
}

#[test]
fn local_time_form_honours_daylight_saving() {
    if !Path::new("/usr/share/zoneinfo/Europe/Berlin").exists() {
        eprintln!("skipped: tzdata is not installed");
        return;
    }
    // Summer time (UTC+2) and winter time (UTC+1) in the same zone.
    let r = requested_at_for("2026-07-01 12:00:00", "Europe/Berlin");
    assert_eq!(r["requested_at"], "2026-07-01T10:00:00Z");
    let r = requested_at_for("2026-12-01 12:00:00", "Europe/Berlin");
    assert_eq!(r["requested_at"], "2026-12-01T11:00:00Z");
    // Clocks went back at 03:00 on 2026-10-25: 02:30 happened twice; the first counts.
    let r = requested_at_for("2026-10-25 02:30:00", "Europe/Berlin");
    assert_eq!(r["requested_at"], "2026-10-25T00:30:00Z");
    // Clocks went forward at 02:00 on 2026-03-29: 02:30 never happened.
    let r = requested_at_for("2026-03-29 02:30:00", "Europe/Berlin");
    assert_eq!(r["status"], "invalid");
    assert!(
        r["detail"].as_str().unwrap().contains("does not exist"),
        "{r}"
    );
}

#[test]
fn failing_reboot_command_leaves_the_request_open_and_exits_8() {
    let mut h = Host::new();
    h.origin.commit(
        &[("run.sh", OK_RUN), ("reboot-at", &rfc3339(due_time()))],
        "reboot",
    );
    let out = run(&mut h.pass_cmd(&["--reboot-command", "exit 3"]));
    assert_eq!(out.code, Some(8), "{}", out.stderr);
    let st = h.state.status_json();
    assert_eq!(st["reboot"]["status"], "pending");
    assert_eq!(st["reboots_done"].as_array().unwrap().len(), 0);
    // With a working command the next pass carries it out, once.
    assert!(pass(&h).success());
    assert!(pass(&h).success());
    assert_eq!(reboot_count(&h), 1);
}

/// The pass returned early on a fetch error and skipped a due reboot, although a
/// Git outage must not cancel one.
#[test]
fn a_due_reboot_happens_even_when_the_fetch_fails() {
    let mut h = Host::new();
    h.origin.commit(
        &[("run.sh", OK_RUN), ("reboot-at", &rfc3339(due_time()))],
        "reboot",
    );
    // First pass: the reboot command fails, so the request stays open.
    let out = run(&mut h.pass_cmd(&["--reboot-command", "false"]));
    assert_eq!(out.code, Some(8), "{}", out.stderr);
    // The Git server goes away.
    let gone = h.origin.path().with_extension("gone");
    std::fs::rename(h.origin.path(), &gone).unwrap();
    let out = pass(&h);
    assert_eq!(out.code, Some(3), "the fetch failed: {}", out.stderr);
    assert_eq!(
        reboot_count(&h),
        1,
        "the reboot happened anyway: {}",
        out.stderr
    );
    std::fs::rename(&gone, h.origin.path()).unwrap();
}

/// `systemctl reboot` returns and systemd then stops the service with SIGTERM
/// before gitops-run exits: the unit of every rebooting pass was marked failed.
#[test]
fn sigterm_after_the_reboot_command_started_is_a_clean_exit() {
    let mut h = Host::new();
    h.origin.commit(
        &[("run.sh", OK_RUN), ("reboot-at", &rfc3339(due_time()))],
        "reboot",
    );
    // The "reboot" stops its caller the way a shutting-down systemd would.
    let out = run(&mut h.pass_cmd(&["--reboot-command", "kill -TERM $PPID; sleep 1"]));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let st = h.state.status_json();
    assert_eq!(st["reboot"]["status"], "rebooting");
    assert_eq!(st["reboots_done"].as_array().unwrap().len(), 1);
}
