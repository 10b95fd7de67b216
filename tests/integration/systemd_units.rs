//! The shipped systemd units (`systemd/`), checked with the real
//! `systemd-analyze` and run as written against the built binary.
//!
//! Every check installs the units into a temporary root the way the package
//! does (`DIR/usr/lib/systemd/system/`, the binary at `DIR/usr/bin/gitops-run`)
//! and points `systemd-analyze --root=DIR` at it, so nothing on the host is
//! read or changed. `systemd-analyze` comes with the `systemd` package; these
//! tests fail, saying so, when it is missing.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::common::{
    bin, complaints, current_in, help_default, read_unit, run, systemd_analyze, unit_directives,
    unit_value, Origin, Run, UnitRoot, INSTALLED_BINARY,
};

/// The unit files shipped, as installed.
const UNIT_FILES: &[&str] = &[
    "gitops-run.service",
    "gitops-run.timer",
    "gitops-run@.service",
    "gitops-run@.timer",
];
/// The units to check: templates as an instance.
const UNITS: &[&str] = &[
    "gitops-run.service",
    "gitops-run.timer",
    "gitops-run@example.service",
    "gitops-run@example.timer",
];

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A root with the shipped units and the built binary installed.
fn shipped_root() -> UnitRoot {
    let root = UnitRoot::bare();
    for name in UNIT_FILES {
        root.add_unit(name, &read_unit(name));
    }
    root.add_binary();
    root
}

/// A systemd time span in microseconds, as `systemd-analyze timespan` reads it.
#[track_caller]
fn timespan_us(span: &str) -> u64 {
    let out = run(systemd_analyze().args(["timespan", span]));
    assert!(out.success(), "timespan {span:?}:\n{out}");
    let stdout = &out.stdout;
    stdout
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("μs:")
                .or_else(|| l.trim().strip_prefix("us:"))
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no μs line in timespan output:\n{stdout}"))
}

// ---------------------------------------------------------------------------
// systemd-analyze verify
// ---------------------------------------------------------------------------

#[test]
fn every_unit_passes_systemd_analyze_verify() {
    let root = shipped_root();
    for unit in UNITS {
        let out = root.verify(unit);
        let all = out.all_output();
        assert!(
            out.success(),
            "systemd-analyze verify {unit} failed ({:?}):\n{all}",
            out.code
        );
        assert!(
            complaints(&all).is_empty(),
            "systemd-analyze verify {unit} complained:\n{all}"
        );
    }
}

/// Proves the check above can fail: a unit with a key systemd does not know
/// makes `verify` fail and complain, naming the key.
#[test]
fn verify_rejects_unknown_keys() {
    let root = UnitRoot::bare();
    root.add_binary();
    let unit =
        read_unit("gitops-run.service").replacen("[Service]\n", "[Service]\nFrobnicate=yes\n", 1);
    assert!(unit.contains("Frobnicate=yes"));
    root.add_unit("gitops-run.service", &unit);
    let out = root.verify("gitops-run.service");
    let all = out.all_output();
    assert!(
        !out.success(),
        "verify should fail on Frobnicate=yes:\n{all}"
    );
    let found = complaints(&all);
    assert!(
        found
            .iter()
            .any(|l| l.contains("Unknown key") && l.contains("Frobnicate")),
        "verify should name the unknown key:\n{all}"
    );
}

/// `verify` checks ExecStart= inside the root: without the binary where the
/// package installs it, the unit fails. So the check above also proves that
/// ExecStart= names `/usr/bin/gitops-run`.
#[test]
fn verify_fails_without_the_binary_in_the_root() {
    let root = UnitRoot::bare();
    root.add_unit("gitops-run.service", &read_unit("gitops-run.service"));
    let out = root.verify("gitops-run.service");
    let all = out.all_output();
    assert!(
        !out.success(),
        "verify should fail without {INSTALLED_BINARY}:\n{all}"
    );
    assert!(
        all.contains(INSTALLED_BINARY),
        "the failure should name {INSTALLED_BINARY}:\n{all}"
    );
}

// ---------------------------------------------------------------------------
// Time spans against the binary's defaults
// ---------------------------------------------------------------------------

/// TimeoutStartSec= leaves gitops-run's own entrypoint timeout room to act
/// (and the fetch, the 10 s kill grace and the webhooks after it), and a timer
/// period fits well inside the reboot grace (docs/reboots.md: the grace must
/// be longer than the timer interval).
#[test]
fn time_spans_fit_the_binary_defaults() {
    let entrypoint_timeout = timespan_us(&help_default(&[], "--timeout"));
    let reboot_grace = timespan_us(&help_default(&[], "--reboot-grace"));
    let five_minutes = timespan_us("5min");

    for unit in ["gitops-run.service", "gitops-run@.service"] {
        let text = read_unit(unit);
        let start = timespan_us(&unit_value(&text, "Service", "TimeoutStartSec"));
        assert!(
            start >= entrypoint_timeout + five_minutes,
            "{unit}: TimeoutStartSec ({start} us) must exceed the entrypoint timeout \
             ({entrypoint_timeout} us) by at least 5 minutes"
        );
    }

    for unit in ["gitops-run.timer", "gitops-run@.timer"] {
        let text = read_unit(unit);
        let boot = timespan_us(&unit_value(&text, "Timer", "OnBootSec"));
        let every = timespan_us(&unit_value(&text, "Timer", "OnUnitInactiveSec"));
        let random = timespan_us(&unit_value(&text, "Timer", "RandomizedDelaySec"));
        let accuracy = timespan_us(&unit_value(&text, "Timer", "AccuracySec"));
        assert!(boot > 0 && every > 0 && random > 0);
        let longest_gap = every + random + accuracy;
        assert!(
            2 * longest_gap < reboot_grace,
            "{unit}: the gap between passes ({longest_gap} us) must fit well inside the \
             default reboot grace ({reboot_grace} us)"
        );
    }
}

// ---------------------------------------------------------------------------
// The template and the plain units stay in step
// ---------------------------------------------------------------------------

#[test]
fn template_and_plain_units_differ_only_where_they_must() {
    let plain = read_unit("gitops-run.service");
    let template = read_unit("gitops-run@.service");

    // The plain unit skips until configured, on the file it then reads.
    let config = unit_value(&plain, "Unit", "ConditionPathExists");
    assert_eq!(config, "/etc/gitops-run/config");
    let exec = unit_value(&plain, "Service", "ExecStart");
    assert_eq!(exec, format!("{INSTALLED_BINARY} --config {config}"));
    assert!(
        !exec.contains("--once"),
        "timer passes must keep the retry backoff"
    );

    // The template: its own config, state directory and webhook.
    let state_dir = unit_value(&template, "Service", "StateDirectory");
    assert_eq!(state_dir, "gitops-run/instances/%i");
    let environment: Vec<String> = unit_directives(&template)
        .into_iter()
        .filter(|(s, k, _)| s == "Service" && k == "Environment")
        .map(|(_, _, v)| v)
        .collect();
    assert_eq!(
        environment,
        [
            format!("GITOPS_STATE_DIR=/var/lib/{state_dir}"),
            "GITOPS_INSTANCE=%i".to_string()
        ],
        "the pinned state directory must be the one systemd creates; the instance names itself"
    );
    // Environment: the template pins its state directory; the plain unit names the
    // push receiver's trigger, which only the main configuration has.
    let expected: Vec<(String, String, String)> = unit_directives(&plain)
        .into_iter()
        .filter(|(_, k, _)| k != "ConditionPathExists" && k != "Environment")
        .map(|(s, k, v)| {
            let v = match k.as_str() {
                "Description" => format!("{v} for %i"),
                "ExecStart" => v.replace("/etc/gitops-run/config", "/etc/gitops-run/%i.conf"),
                "StateDirectory" => state_dir.clone(),
                "RuntimeDirectory" => format!("{v}/instances/%i"),
                "LoadCredential" => v.replace(
                    "/etc/gitops-run/webhook-url",
                    "/etc/gitops-run/%i.webhook-url",
                ),
                _ => v,
            };
            (s, k, v)
        })
        .collect();
    let actual: Vec<(String, String, String)> = unit_directives(&template)
        .into_iter()
        .filter(|(_, k, _)| k != "Environment")
        .collect();
    assert_eq!(
        actual, expected,
        "gitops-run@.service differs from gitops-run.service beyond the instance settings"
    );

    let plain = unit_directives(&read_unit("gitops-run.timer"));
    let template = unit_directives(&read_unit("gitops-run@.timer"));
    let strip = |d: Vec<(String, String, String)>| -> Vec<(String, String, String)> {
        d.into_iter()
            .filter(|(_, k, _)| k != "Description")
            .collect()
    };
    assert_eq!(
        strip(template),
        strip(plain),
        "gitops-run@.timer differs from gitops-run.timer"
    );
}

// ---------------------------------------------------------------------------
// systemd-analyze security
// ---------------------------------------------------------------------------

#[test]
fn security_review_reports_an_exposure_level() {
    let root = shipped_root();
    for unit in ["gitops-run.service", "gitops-run@example.service"] {
        let (score, all) = root.exposure(unit);
        assert!(
            (0.0..=10.0).contains(&score),
            "exposure level {score} of {unit} out of range:\n{all}"
        );
        // The hardening the units do set is in effect ("+" in the C locale).
        for option in ["LockPersonality=", "RestrictRealtime=", "UMask="] {
            assert!(
                all.lines().any(|l| {
                    let l = l.trim_start();
                    (l.starts_with('+') || l.starts_with('✓'))
                        && l[1..].trim_start().starts_with(option)
                }),
                "{unit}: {option} should be reported as set:\n{all}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// The units' ExecStart=, run as written
// ---------------------------------------------------------------------------

/// Runs the service `unit_file` (instance `example` for a template) the way
/// systemd would, with host paths moved into `tmp`: ExecStart= with the built
/// binary, Environment=, the StateDirectory= created with its mode, and the
/// `webhook-url` credential from LoadCredential=, else SetCredential=.
fn run_unit_as_written(unit_file: &str, tmp: &Path) -> Run {
    let text = read_unit(unit_file).replace("%i", "example");
    let moved = |s: &str| -> String {
        s.replace("/etc/", &format!("{}/etc/", tmp.display()))
            .replace("/var/lib/", &format!("{}/var/lib/", tmp.display()))
    };

    let exec = unit_value(&text, "Service", "ExecStart");
    let mut argv = exec.split_whitespace();
    assert_eq!(argv.next(), Some(INSTALLED_BINARY));
    let args: Vec<String> = argv.map(moved).collect();

    let state_dir = tmp
        .join("var/lib")
        .join(unit_value(&text, "Service", "StateDirectory"));
    let mode = u32::from_str_radix(&unit_value(&text, "Service", "StateDirectoryMode"), 8).unwrap();
    fs::create_dir_all(&state_dir).unwrap();
    fs::set_permissions(&state_dir, fs::Permissions::from_mode(mode)).unwrap();

    let (id, source) = unit_value(&text, "Service", "LoadCredential")
        .split_once(':')
        .map(|(a, b)| (a.to_owned(), moved(b)))
        .unwrap();
    let fallback = unit_value(&text, "Service", "SetCredential");
    let (fallback_id, data) = fallback.split_once(':').unwrap();
    assert_eq!(
        fallback_id, id,
        "SetCredential= must default LoadCredential="
    );
    // Only the escape the units use; systemd unescapes C-style.
    assert!(
        !data.replace("\\n", "").contains('\\'),
        "unexpected escape in {data:?}"
    );
    let creds = tmp.join("credentials");
    fs::create_dir_all(&creds).unwrap();
    let content = fs::read(&source).unwrap_or_else(|_| data.replace("\\n", "\n").into_bytes());
    fs::write(creds.join(&id), content).unwrap();

    let mut cmd = bin();
    cmd.args(&args).env("CREDENTIALS_DIRECTORY", &creds);
    for (section, key, v) in unit_directives(&text) {
        if section == "Service" && key == "Environment" {
            let (name, val) = v.split_once('=').unwrap();
            cmd.env(name, moved(val));
        }
    }
    for arg in cmd.get_args() {
        let arg = arg.to_string_lossy();
        assert!(
            !arg.starts_with("/etc/") && !arg.starts_with("/var/"),
            "a host path escaped the mapping: {arg}"
        );
    }
    run(&mut cmd)
}

/// gitops-run.service: the pass reads the config file named in ExecStart=,
/// accepts the state directory systemd creates (mode 0700), and takes the
/// empty SetCredential= default for "no webhook" without a warning.
#[test]
fn plain_unit_deploys_and_an_absent_webhook_is_quiet() {
    let mut origin = Origin::new();
    let head = origin.commit(&[("run.sh", "#!/bin/sh\necho deployed\n")], "first");
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("var/lib/gitops-run");
    fs::create_dir_all(tmp.path().join("etc/gitops-run")).unwrap();
    // The unit relies on the default --state-dir (/var/lib/gitops-run); here
    // the config file moves it into the temporary directory.
    fs::write(
        tmp.path().join("etc/gitops-run/config"),
        format!(
            "GITOPS_REPO={}\nGITOPS_STATE_DIR={}\n",
            origin.url(),
            state.display()
        ),
    )
    .unwrap();

    let out = run_unit_as_written("gitops-run.service", tmp.path());
    let all = out.all_output();
    assert!(out.success(), "the pass failed:\n{all}");
    assert_eq!(current_in(&state).as_deref(), Some(head.as_str()), "{all}");
    assert!(
        !all.to_ascii_lowercase().contains("webhook") && !all.contains("warning"),
        "no webhook configured must mean no webhook messages:\n{all}"
    );
}

/// gitops-run@.service: the instance's own config file, and its state
/// directory pinned by Environment= even when the config file names another.
#[test]
fn template_unit_keeps_the_instance_state_dir() {
    let mut origin = Origin::new();
    let head = origin.commit(&[("run.sh", "#!/bin/sh\necho deployed\n")], "first");
    let tmp = tempfile::tempdir().unwrap();
    let decoy = tmp.path().join("decoy-state");
    fs::create_dir_all(tmp.path().join("etc/gitops-run")).unwrap();
    fs::write(
        tmp.path().join("etc/gitops-run/example.conf"),
        format!(
            "GITOPS_REPO={}\nGITOPS_STATE_DIR={}\n",
            origin.url(),
            decoy.display()
        ),
    )
    .unwrap();

    let out = run_unit_as_written("gitops-run@.service", tmp.path());
    let all = out.all_output();
    assert!(out.success(), "the pass failed:\n{all}");
    let state = tmp.path().join("var/lib/gitops-run/instances/example");
    assert_eq!(current_in(&state).as_deref(), Some(head.as_str()), "{all}");
    assert!(
        !decoy.exists(),
        "Environment=GITOPS_STATE_DIR must outrank the config file"
    );
}

/// gitops-run@.service without its config file fails (exit 2) instead of
/// deploying anything.
#[test]
fn template_unit_without_its_config_file_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run_unit_as_written("gitops-run@.service", tmp.path());
    assert_eq!(out.code, Some(2), "{}", out.all_output());
    assert!(
        out.all_output().contains("example.conf"),
        "the error should name the missing file:\n{}",
        out.all_output()
    );
}

/// Sanity check of the helpers: each unit file parses into directives, with
/// at most one value per key except where systemd allows several.
#[test]
fn unit_files_have_no_repeated_keys() {
    for name in UNIT_FILES {
        let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
        for (s, k, _) in unit_directives(&read_unit(name)) {
            *seen.entry((s, k)).or_default() += 1;
        }
        // systemd reads every Environment= line; one assignment a line reads best.
        let repeated: Vec<_> = seen
            .iter()
            .filter(|((_, k), n)| **n > 1 && k != "Environment")
            .collect();
        assert!(repeated.is_empty(), "{name}: repeated keys {repeated:?}");
    }
}
