//! The Prometheus textfile (`--metrics-file`), checked with the real tools an
//! operator uses: `promtool check metrics` on the file after passes that end in
//! every outcome, a real `prometheus-node-exporter` serving it on 127.0.0.1, a
//! real Prometheus scraping that exporter with the shipped alerting rules and
//! answering the shipped dashboard's queries, and `promtool check rules` /
//! `promtool test rules` on `contrib/prometheus/`. The tools come with Debian's
//! `prometheus` and `prometheus-node-exporter` packages; these tests fail, saying
//! so, when they are missing.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{bin, free_port, run, wait_until, Host, Run, Spawned};

const CONTRIB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/prometheus");
const RULES: &str = "gitops-run.rules.yml";
const RULE_TESTS: &str = "gitops-run.rules.test.yml";
const DASHBOARD: &str = "gitops-run.dashboard.json";

/// An entrypoint that succeeds, one that fails, and one that runs until stopped.
const GOOD: &str = "#!/bin/sh\necho applying\n";
const BAD: &str = "#!/bin/sh\necho deliberate failure >&2\nexit 1\n";
const SLOW: &str = "#!/bin/sh\necho started\nexec sleep 60\n";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A program from the Prometheus packages, or a failure naming the package.
fn tool(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} not found: install the `{package}` package (apt-get install {package})")
        })
}

fn promtool() -> Command {
    let mut cmd = Command::new(tool("promtool", "prometheus"));
    cmd.env_clear().env("PATH", "/usr/bin:/bin");
    cmd
}

/// `promtool check metrics` of `path`: no parse error and no lint complaint.
#[track_caller]
fn assert_promtool_accepts(path: &Path) {
    let file = fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let out = run(promtool().args(["check", "metrics"]).stdin(file));
    assert!(
        out.success() && out.stdout.trim().is_empty() && out.stderr.trim().is_empty(),
        "promtool check metrics rejects {}:\n{out}\n--- file ---\n{}",
        path.display(),
        fs::read_to_string(path).unwrap_or_default()
    );
}

/// Series of a text exposition: (name, labels, value), comments skipped.
fn parse(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("NAME{...} VALUE");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}').expect("closing brace")),
            None => (series, ""),
        };
        let mut map = BTreeMap::new();
        let mut rest = labels;
        while !rest.is_empty() {
            let (key, after) = rest.split_once("=\"").expect("key=\"value\"");
            let mut val = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => val.push('\n'),
                        Some((_, c)) => val.push(c),
                        None => panic!("dangling escape in {line}"),
                    },
                    Some((i, '"')) => break i,
                    Some((_, c)) => val.push(c),
                    None => panic!("unterminated value in {line}"),
                }
            };
            map.insert(key.trim_start_matches(',').to_string(), val);
            rest = after[end + 1..].trim_start_matches(',');
        }
        out.push((name.to_string(), map, value));
    }
    out
}

/// The value of the one series `name` whose labels include `with`.
#[track_caller]
fn value_in(text: &str, name: &str, with: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<f64> = parse(text)
        .into_iter()
        .filter(|(n, labels, _)| {
            n == name
                && with
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .collect();
    assert!(
        found.len() <= 1,
        "{name} {with:?} matches {} series:\n{text}",
        found.len()
    );
    found.first().copied()
}

/// A host, and the metrics file its passes write.
struct Metered {
    host: Host,
    file: PathBuf,
}

impl Metered {
    fn new() -> Metered {
        let host = Host::new();
        let file = host.state.dir().join("textfile/gitops-run.prom");
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        Metered { host, file }
    }

    fn flag(&self) -> [&str; 2] {
        ["--metrics-file", self.file.to_str().unwrap()]
    }

    fn pass(&self, extra: &[&str]) -> Run {
        let mut args = self.flag().to_vec();
        args.extend_from_slice(extra);
        self.host.pass(&args)
    }

    /// An operator command (`freeze`, `unfreeze`, `rollback`) on this host.
    fn command(&self, command: &[&str]) -> Run {
        let mut cmd = bin();
        cmd.args(command)
            .args(["--state-dir", self.host.state.arg(), "--repo"])
            .arg(self.host.origin.url())
            .args(self.flag());
        run(&mut cmd)
    }

    /// The file, after checking it with promtool.
    #[track_caller]
    fn read(&self) -> String {
        assert_promtool_accepts(&self.file);
        fs::read_to_string(&self.file).unwrap()
    }

    #[track_caller]
    fn value(&self, name: &str, with: &[(&str, &str)]) -> Option<f64> {
        value_in(&self.read(), name, with)
    }

    /// Which outcome the file says the last pass ended with (exactly one is 1).
    #[track_caller]
    fn outcome(&self) -> String {
        let text = self.read();
        let set: Vec<String> = parse(&text)
            .into_iter()
            .filter(|(n, _, v)| n == "gitops_run_last_pass_outcome" && *v == 1.0)
            .map(|(_, l, _)| l["outcome"].clone())
            .collect();
        assert_eq!(set.len(), 1, "one outcome is 1:\n{text}");
        set[0].clone()
    }
}

/// A real node_exporter serving only the textfile collector of `dir` on
/// 127.0.0.1; killed when dropped.
struct NodeExporter {
    /// Held only to be killed when dropped.
    _process: Spawned,
    port: u16,
}

impl NodeExporter {
    fn start(dir: &Path, log: &Path) -> NodeExporter {
        let exe = tool("prometheus-node-exporter", "prometheus-node-exporter");
        for _ in 0..5 {
            let port = free_port();
            let mut cmd = Command::new(&exe);
            cmd.env_clear()
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--collector.disable-defaults")
                .arg("--collector.textfile")
                .arg(format!("--collector.textfile.directory={}", dir.display()));
            let mut process = Spawned::start(&mut cmd, log);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline && process.is_running() {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return NodeExporter {
                        _process: process,
                        port,
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(
                !process.is_running(),
                "node_exporter did not listen within 20s:\n{}",
                process.log()
            );
            // It lost the port to another process: try another.
        }
        panic!(
            "node_exporter could not listen on a free port:\n{}",
            fs::read_to_string(log).unwrap_or_default()
        );
    }

    fn scrape(&self) -> String {
        http_get(self.port, "/metrics")
    }
}

/// GET `path` from 127.0.0.1:`port` (HTTP/1.0, so the body ends with the
/// connection): the status code and the body.
fn http(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

/// The body of a 200 answer to GET `path`.
#[track_caller]
fn http_get(port: u16, path: &str) -> String {
    match http(port, path) {
        Ok((200, body)) => body,
        other => panic!("GET {path}: {other:?}"),
    }
}

/// `text` percent-encoded for a query string.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The file, pass by pass
// ---------------------------------------------------------------------------

/// Passes ending in every outcome, each leaving a file promtool accepts that
/// says what happened: the outcome, the deployed commit, the failure and its
/// retry, commits not yet deployed, the refusal, the freeze and the counters.
#[test]
fn every_outcome_leaves_a_file_promtool_accepts_with_the_right_values() {
    let mut m = Metered::new();
    let c1 = m.host.origin.commit(&[("run.sh", GOOD)], "first");
    m.pass(&[]).assert_code(0);
    assert_eq!(m.outcome(), "applied");
    assert_eq!(
        m.value("gitops_run_deployed_info", &[("commit", &c1)]),
        Some(1.0)
    );
    assert_eq!(m.value("gitops_run_deployments_total", &[]), Some(1.0));
    assert_eq!(m.value("gitops_run_commits_behind", &[]), Some(0.0));
    let mode = fs::metadata(&m.file).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o644,
        "node_exporter runs as another user and must read it"
    );

    // Up to date: counted in the last-pass record. The first such pass records
    // the tip's new classification; the next changes nothing durable, and its
    // count must not make it rewrite state.json.
    m.pass(&[]).assert_code(0);
    let state_file = m.host.state.path().join("state.json");
    let before = (
        fs::read(&state_file).unwrap(),
        fs::metadata(&state_file).unwrap().modified().unwrap(),
    );
    m.pass(&[]).assert_code(0);
    assert_eq!(m.outcome(), "up-to-date");
    assert_eq!(
        m.value("gitops_run_passes_total", &[("outcome", "up-to-date")]),
        Some(2.0)
    );
    assert_eq!(
        m.value("gitops_run_passes_total", &[("outcome", "applied")]),
        Some(1.0)
    );
    let after = (
        fs::read(&state_file).unwrap(),
        fs::metadata(&state_file).unwrap().modified().unwrap(),
    );
    assert!(
        before == after,
        "a pass that changed nothing must not write state.json to count itself"
    );
    let passed = m
        .value("gitops_run_last_pass_timestamp_seconds", &[])
        .unwrap();
    let succeeded = m
        .value("gitops_run_last_success_timestamp_seconds", &[])
        .unwrap();
    assert_eq!(passed, succeeded);

    // Failed: the previous commit stays, the failure waits for its retry.
    let c2 = m.host.origin.commit(&[("run.sh", BAD)], "breaks");
    m.pass(&[]).assert_code(5);
    assert_eq!(m.outcome(), "failed");
    assert_eq!(
        m.value("gitops_run_deployed_info", &[("commit", &c1)]),
        Some(1.0)
    );
    assert_eq!(
        m.value("gitops_run_remote_info", &[("commit", &c2)]),
        Some(1.0)
    );
    assert_eq!(m.value("gitops_run_failing_consecutive", &[]), Some(1.0));
    assert_eq!(m.value("gitops_run_failed_attempts_total", &[]), Some(1.0));
    assert_eq!(m.value("gitops_run_commits_behind", &[]), Some(1.0));
    assert_eq!(m.value("gitops_run_last_pass_exit_code", &[]), Some(5.0));
    let retry = m
        .value("gitops_run_next_retry_timestamp_seconds", &[])
        .unwrap();
    let last = m
        .value("gitops_run_last_pass_timestamp_seconds", &[])
        .unwrap();
    assert!(
        retry > last,
        "the retry ({retry}) comes after the pass ({last})"
    );
    assert_eq!(
        m.value("gitops_run_last_success_timestamp_seconds", &[]),
        Some(succeeded),
        "a failed pass keeps the last success"
    );

    // Waiting for the retry: the same failure, not counted again.
    m.pass(&[]).assert_code(5);
    assert_eq!(m.outcome(), "waiting");
    assert_eq!(m.value("gitops_run_failed_attempts_total", &[]), Some(1.0));
    assert_eq!(
        m.value("gitops_run_commits_behind", &[]),
        Some(1.0),
        "known from the failed pass"
    );

    // A newer commit whose entrypoint is not executable is tried at once.
    let _c3 = m
        .host
        .origin
        .commit(&[("run.sh", "echo not executable\n")], "no exec bit");
    m.pass(&[]).assert_code(6);
    assert_eq!(m.outcome(), "invalid-entrypoint");
    assert_eq!(m.value("gitops_run_failed_attempts_total", &[]), Some(2.0));
    assert_eq!(m.value("gitops_run_commits_behind", &[]), Some(2.0));

    let c4 = m.host.origin.commit(&[("run.sh", GOOD)], "fixed");
    m.pass(&[]).assert_code(0);
    assert_eq!(m.outcome(), "applied");
    assert_eq!(m.value("gitops_run_failing_consecutive", &[]), Some(0.0));
    assert_eq!(
        m.value("gitops_run_next_retry_timestamp_seconds", &[]),
        None
    );
    assert_eq!(m.value("gitops_run_deployments_total", &[]), Some(2.0));

    // Refused: a rewritten branch, counted once however many passes refuse it.
    m.host.origin.amend("rewritten");
    m.pass(&[]).assert_code(4);
    assert_eq!(m.outcome(), "refused");
    assert_eq!(
        m.value("gitops_run_refused", &[("reason", "rewrite")]),
        Some(1.0)
    );
    m.pass(&[]).assert_code(4);
    assert_eq!(m.value("gitops_run_refusals_total", &[]), Some(1.0));
    assert_eq!(
        m.value("gitops_run_passes_total", &[("outcome", "refused")]),
        Some(2.0)
    );
    assert_eq!(
        m.value("gitops_run_commits_behind", &[]),
        None,
        "a rewrite is not behind"
    );

    // Frozen: the freeze command writes the file itself; the pass then holds.
    let out = m.command(&["freeze", "--reason", "audit", "--until", "2h"]);
    assert!(out.success(), "{out}");
    assert_eq!(m.value("gitops_run_frozen", &[]), Some(1.0));
    assert_eq!(m.outcome(), "refused", "the command does not pass");
    let since = m.value("gitops_run_frozen_timestamp_seconds", &[]).unwrap();
    let until = m
        .value("gitops_run_frozen_until_timestamp_seconds", &[])
        .unwrap();
    assert!(
        (until - since - 7200.0).abs() < 5.0,
        "since {since}, until {until}"
    );
    m.host.origin.reset_hard(&c4);
    m.host.origin.commit(&[("run.sh", GOOD)], "while frozen");
    m.pass(&[]).assert_code(0);
    assert_eq!(m.outcome(), "frozen");
    assert_eq!(
        m.value("gitops_run_commits_behind", &[]),
        Some(1.0),
        "a frozen host knows how far behind it is"
    );
    assert_eq!(
        m.value("gitops_run_refused", &[("reason", "rewrite")]),
        Some(0.0)
    );
    let out = m.command(&["unfreeze"]);
    assert!(out.success(), "{out}");
    assert_eq!(m.value("gitops_run_frozen", &[]), Some(0.0));
    assert_eq!(m.value("gitops_run_frozen_timestamp_seconds", &[]), None);

    // Error: the repository is gone; what is deployed stays in the file.
    let origin = m.host.origin.path().to_path_buf();
    let moved = origin.with_extension("moved");
    fs::rename(&origin, &moved).unwrap();
    let out = m.pass(&[]);
    fs::rename(&moved, &origin).unwrap();
    out.assert_code(3);
    assert_eq!(m.outcome(), "error");
    assert_eq!(
        m.value("gitops_run_deployed_info", &[("commit", &c4)]),
        Some(1.0)
    );

    // Interrupted: SIGTERM while the entrypoint runs.
    m.host.origin.commit(&[("run.sh", SLOW)], "slow");
    let log = m.host.state.dir().join("slow.log");
    let mut args = m.flag().to_vec();
    args.push("--once");
    let mut pass = Spawned::start(&mut m.host.pass_cmd(&args), &log);
    wait_until("the entrypoint started", || pass.log().contains("started"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pass.pid()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(pass.wait().code(), Some(130), "{}", pass.log());
    assert_eq!(m.outcome(), "interrupted");
    assert_eq!(m.value("gitops_run_failed_attempts_total", &[]), Some(3.0));

    // Every outcome was seen, and counted.
    let text = m.read();
    for outcome in [
        "up-to-date",
        "applied",
        "failed",
        "interrupted",
        "invalid-entrypoint",
        "waiting",
        "refused",
        "frozen",
        "error",
    ] {
        let n = value_in(&text, "gitops_run_passes_total", &[("outcome", outcome)]).unwrap();
        assert!(n >= 1.0, "{outcome}: {n}\n{text}");
    }
}

/// `gitops-run rollback` writes the file: the commit rolled back to, the pin,
/// and one more deployment that is a rollback.
#[test]
fn a_rollback_shows_in_the_file() {
    let mut m = Metered::new();
    let c1 = m.host.origin.commit(&[("run.sh", GOOD)], "first");
    m.pass(&[]).assert_code(0);
    let c2 = m.host.origin.commit(&[("run.sh", GOOD)], "second");
    m.pass(&[]).assert_code(0);
    assert_eq!(
        m.value("gitops_run_deployed_info", &[("commit", &c2)]),
        Some(1.0)
    );
    let out = m.command(&["rollback"]);
    assert!(out.success(), "{out}");
    assert_eq!(
        m.value("gitops_run_deployed_info", &[("commit", &c1)]),
        Some(1.0)
    );
    assert_eq!(
        m.value("gitops_run_deployed_info", &[("commit", &c2)]),
        None
    );
    assert_eq!(m.value("gitops_run_rollbacks_total", &[]), Some(1.0));
    assert_eq!(m.value("gitops_run_deployments_total", &[]), Some(3.0));
    assert_eq!(m.value("gitops_run_frozen", &[]), Some(1.0), "pinned");
    assert_eq!(
        m.value("gitops_run_commits_behind", &[]),
        None,
        "not counted since the rollback"
    );
}

/// `--metrics-file off` writes nothing; a missing directory is a warning, not a
/// failed pass; `--instance` labels the series.
#[test]
fn off_writes_nothing_and_a_missing_directory_only_warns() {
    let mut m = Metered::new();
    m.host.origin.commit(&[("run.sh", GOOD)], "first");
    let out = m.host.pass(&["--metrics-file", "off"]);
    out.assert_code(0);
    assert!(!m.file.exists());
    let missing = m.host.state.dir().join("no-such-dir/gitops-run.prom");
    let out = m.host.pass(&["--metrics-file", missing.to_str().unwrap()]);
    out.assert_code(0);
    assert!(
        out.stderr
            .contains("warning: failed to write the metrics file")
            && out.stderr.contains("no-such-dir"),
        "{out}"
    );
    let out = m.pass(&["--instance", "web"]);
    out.assert_code(0);
    assert_eq!(
        m.value("gitops_run_frozen", &[("gitops_instance", "web")]),
        Some(0.0)
    );
    assert_eq!(
        m.value("gitops_run_frozen", &[("instance", "web")]),
        Some(0.0),
        "the file names the instance as `instance` too"
    );
    let out = m.pass(&["--instance", "../etc"]);
    out.assert_code(2);
}

/// Readers of the file (node_exporter) never see a partial one: a reader in a
/// loop while passes and commands replace it finds it whole every time, and no
/// temporary file is left.
#[test]
fn a_reader_never_sees_a_partial_file() {
    let mut m = Metered::new();
    m.host.origin.commit(&[("run.sh", GOOD)], "first");
    m.pass(&[]).assert_code(0);
    let complete = m.read();
    let first = complete.lines().next().unwrap().to_string();
    let last = complete.lines().last().unwrap().to_string();
    let last_name = last.split('{').next().unwrap().to_string();

    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, file) = (stop.clone(), m.file.clone());
        std::thread::spawn(move || {
            let mut reads = 0u64;
            let mut bad: Vec<String> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let text = match fs::read_to_string(&file) {
                    Ok(t) => t,
                    Err(e) => {
                        bad.push(format!("read failed: {e}"));
                        continue;
                    }
                };
                reads += 1;
                let whole = text.starts_with(&first)
                    && text.ends_with('\n')
                    && text
                        .lines()
                        .last()
                        .is_some_and(|l| l.starts_with(&last_name));
                if !whole && bad.len() < 3 {
                    bad.push(text);
                }
            }
            (reads, bad)
        })
    };
    for i in 0..10 {
        m.pass(&[]).assert_code(0);
        let reason = format!("round {i}");
        assert!(m.command(&["freeze", "--reason", &reason]).success());
        assert!(m.command(&["unfreeze"]).success());
    }
    stop.store(true, Ordering::Relaxed);
    let (reads, bad) = reader.join().unwrap();
    assert!(
        bad.is_empty(),
        "the reader saw a partial or missing file: {bad:#?}"
    );
    assert!(
        reads > 30,
        "the reader ran alongside the writers ({reads} reads)"
    );
    let left: Vec<_> = fs::read_dir(m.file.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["gitops-run.prom"], "no temporary file is left");
}

// ---------------------------------------------------------------------------
// node_exporter and Prometheus
// ---------------------------------------------------------------------------

/// A real node_exporter serves the files of two instances side by side, with
/// the values the passes recorded, and reports no textfile error.
#[test]
fn node_exporter_serves_the_file() {
    let mut m = Metered::new();
    let c1 = m.host.origin.commit(&[("run.sh", GOOD)], "first");
    m.pass(&[]).assert_code(0);
    let c2 = m.host.origin.commit(&[("run.sh", BAD)], "breaks");
    m.pass(&[]).assert_code(5);
    // A second instance on the same host, in the same directory.
    let web = Host::new();
    let w1 = {
        let mut origin = web.origin;
        let c = origin.commit(&[("run.sh", GOOD)], "web");
        let file = m.file.with_file_name("gitops-run-web.prom");
        let out = run(web
            .state
            .pass_cmd(
                &origin.url(),
                &[
                    "--instance",
                    "web",
                    "--metrics-file",
                    file.to_str().unwrap(),
                ],
            )
            .stdout(Stdio::null()));
        out.assert_code(0);
        c
    };

    let exporter = NodeExporter::start(
        m.file.parent().unwrap(),
        &m.host.state.dir().join("node-exporter.log"),
    );
    let text = exporter.scrape();
    let v = |name: &str, with: &[(&str, &str)]| value_in(&text, name, with);
    assert_eq!(v("node_textfile_scrape_error", &[]), Some(0.0), "{text}");
    assert_eq!(
        v("gitops_run_deployed_info", &[("commit", &c1)]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(v("gitops_run_remote_info", &[("commit", &c2)]), Some(1.0));
    let url = m.host.origin.url();
    assert_eq!(
        v("gitops_run_failing_consecutive", &[("repo", &url)]),
        Some(1.0)
    );
    assert_eq!(
        v(
            "gitops_run_last_pass_outcome",
            &[("repo", &url), ("outcome", "failed")]
        ),
        Some(1.0)
    );
    assert_eq!(
        v(
            "gitops_run_deployed_info",
            &[("gitops_instance", "web"), ("commit", &w1)]
        ),
        Some(1.0)
    );
    assert_eq!(
        v(
            "gitops_run_last_pass_outcome",
            &[("gitops_instance", "web"), ("outcome", "applied")]
        ),
        Some(1.0)
    );
    let mtimes = parse(&text)
        .into_iter()
        .filter(|(n, _, _)| n == "node_textfile_mtime_seconds")
        .count();
    assert_eq!(mtimes, 2, "both files are read:\n{text}");
}

/// The chain an operator builds: passes write the file, node_exporter serves
/// it, Prometheus scrapes it with the shipped rules. A failing host fires
/// GitopsRunFailing, and every query of the shipped dashboard is valid PromQL
/// that Prometheus answers (the fleet rollout panel with the deployed commit).
#[test]
fn prometheus_alerts_and_answers_the_dashboard() {
    let mut m = Metered::new();
    let c1 = m.host.origin.commit(&[("run.sh", GOOD)], "first");
    m.pass(&[]).assert_code(0);
    m.host.origin.commit(&[("run.sh", BAD)], "breaks");
    m.pass(&[]).assert_code(5);
    let dir = m.host.state.dir();
    let exporter = NodeExporter::start(m.file.parent().unwrap(), &dir.join("node-exporter.log"));

    let exe = tool("prometheus", "prometheus");
    let mut prometheus = None;
    for _ in 0..5 {
        let port = free_port();
        let config = dir.join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {CONTRIB}/{RULES}\n\
                 scrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
                exporter.port
            ),
        )
        .unwrap();
        let mut cmd = Command::new(&exe);
        cmd.env_clear()
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"));
        let mut process = Spawned::start(&mut cmd, &dir.join("prometheus.log"));
        // It listens before its storage is ready, answering 503 until then.
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline && process.is_running() {
            if matches!(http(port, "/-/ready"), Ok((200, _))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if process.is_running() {
            prometheus = Some((process, port));
            break;
        }
    }
    let (process, port) = prometheus.expect("Prometheus starts on a free port");

    let query = |q: &str| -> serde_json::Value {
        let body = http_get(port, &format!("/api/v1/query?query={}", encode(q)));
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{q}: {e}: {body}"))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let firing = loop {
        let alerts: serde_json::Value =
            serde_json::from_str(&http_get(port, "/api/v1/alerts")).unwrap();
        let firing: Vec<String> = alerts["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["state"] == "firing")
            .map(|a| {
                a["labels"]["alertname"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        if firing.contains(&"GitopsRunFailing".to_string()) || Instant::now() >= deadline {
            break firing;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        firing,
        ["GitopsRunFailing"],
        "only the failing host's alert fires:\n{}",
        process.log()
    );

    let dashboard: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(Path::new(CONTRIB).join(DASHBOARD)).unwrap())
            .unwrap();
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$repo", ".*")
                .replace("$branch", ".*");
            let answer = query(&expr);
            assert_eq!(
                answer["status"], "success",
                "panel {:?}: {expr}: {answer}",
                panel["title"]
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "{checked} queries");
    let rollout = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["title"] == "Fleet rollout by commit")
        .expect("the rollout panel");
    let expr = rollout["targets"][0]["expr"]
        .as_str()
        .unwrap()
        .replace("$repo", ".*")
        .replace("$branch", ".*");
    let answer = query(&expr);
    let result = &answer["data"]["result"];
    assert_eq!(result.as_array().map(Vec::len), Some(1), "{answer}");
    assert_eq!(result[0]["metric"]["commit"], c1.as_str());
    assert_eq!(result[0]["value"][1], "1");
}

// ---------------------------------------------------------------------------
// The shipped rules
// ---------------------------------------------------------------------------

/// `promtool check rules` accepts the rules and `promtool test rules` passes,
/// with a case where each alert fires and one where it does not.
#[test]
fn the_rules_pass_promtool_with_a_firing_and_a_quiet_case_for_every_alert() {
    let out = run(promtool()
        .current_dir(CONTRIB)
        .args(["check", "rules", RULES]));
    assert!(out.success(), "{out}");
    let out = run(promtool()
        .current_dir(CONTRIB)
        .args(["test", "rules", RULE_TESTS]));
    assert!(out.success() && out.stdout.contains("SUCCESS"), "{out}");

    let rules = fs::read_to_string(Path::new(CONTRIB).join(RULES)).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 6, "{alerts:?}");
    // Each `- eval_time:` block names an alert and expects none (`[]`) or some.
    let tests = fs::read_to_string(Path::new(CONTRIB).join(RULE_TESTS)).unwrap();
    let mut cases: Vec<(String, bool)> = Vec::new();
    for block in tests.split("- eval_time:").skip(1) {
        let name = block
            .lines()
            .find_map(|l| l.trim().strip_prefix("alertname: "))
            .expect("an alertname");
        let quiet = block.lines().any(|l| l.trim() == "exp_alerts: []");
        cases.push((name.to_string(), !quiet));
    }
    for alert in alerts {
        for fires in [true, false] {
            assert!(
                cases.contains(&(alert.to_string(), fires)),
                "{alert} has no case where it {}",
                if fires { "fires" } else { "stays quiet" }
            );
        }
    }
}
