//! `gitops-run receive` against real HTTP clients on 127.0.0.1: curl and a
//! small Rust client, payloads shaped like each forge's push event, signed
//! with the real secret (and, once, with `openssl dgst`), and the shipped
//! units checked with `systemd-analyze`.
//!
//! Each test starts its own receiver (`--listen 127.0.0.1:0`, or a socket
//! passed as fd 3 with LISTEN_FDS/LISTEN_PID) with its own secret and
//! trigger directory. Where a test needs passes, a "pass" is simulated the
//! way systemd's path unit and the real pass behave together: whenever the
//! trigger file exists (checked again each time a pass ends), remove it,
//! count one pass, and take some time.
//!
//! Receivers run as [`Spawned`] processes (killed and reaped when a test
//! ends, their log in a file); every other program runs under the watchdog
//! of [`run`], and every wait polls with the harness's deadline.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tempfile::TempDir;

use crate::common::run::SAFETY_NET;
use crate::common::{
    bin, bin_path, complaints, git_env, help_default, poll_until, read_unit, run, test_home,
    unit_value, Run, Spawned, UnitRoot, UNITS_DIR,
};

/// The secret every test receiver uses.
const SECRET: &str = "test-secret-0123456789abcdef";
/// The receiver's per-request deadline (src/receive/server.rs).
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// The receiver's connection bound (src/receive/server.rs).
const MAX_CONNECTIONS: usize = 8;
/// Body every authentication failure gets.
const AUTH_FAILED: &str = "authentication failed\n";

// ---------------------------------------------------------------------------
// Payloads shaped like each forge's documented push event (abridged)
// ---------------------------------------------------------------------------

const AFTER: &str = "6113728f27ae82c7b1a177c8d03f9e96e0adf246";
const BEFORE: &str = "0000000000000000000000000000000000000000";

fn github_push(reference: &str) -> String {
    format!(
        r#"{{"ref":"{reference}","before":"{BEFORE}","after":"{AFTER}","created":false,"deleted":false,"forced":false,"base_ref":null,"compare":"https://github.com/octo/host/compare/000000000000...6113728f27ae","commits":[{{"id":"{AFTER}","tree_id":"f9d2a07e9488b91af2641b26b9407fe22a451433","distinct":true,"message":"deploy: nginx 1.24","timestamp":"2026-05-02T10:00:00+02:00","url":"https://github.com/octo/host/commit/{AFTER}","author":{{"name":"Octo","email":"octo@example.com","username":"octo"}},"committer":{{"name":"Octo","email":"octo@example.com","username":"octo"}},"added":[],"removed":[],"modified":["run.sh"]}}],"head_commit":{{"id":"{AFTER}","message":"deploy: nginx 1.24"}},"repository":{{"id":1296269,"name":"host","full_name":"octo/host","private":true,"default_branch":"main"}},"pusher":{{"name":"octo","email":"octo@example.com"}},"sender":{{"login":"octo","id":1}}}}"#
    )
}

fn gitea_push(reference: &str) -> String {
    format!(
        r#"{{"ref":"{reference}","before":"{BEFORE}","after":"{AFTER}","compare_url":"https://gitea.example.com/ops/host/compare/000000...6113728","commits":[{{"id":"{AFTER}","message":"deploy: nginx 1.24\n","url":"https://gitea.example.com/ops/host/commit/{AFTER}","author":{{"name":"Ops","email":"ops@example.com","username":"ops"}},"committer":{{"name":"Ops","email":"ops@example.com","username":"ops"}},"verification":null,"timestamp":"2026-05-02T10:00:00+02:00","added":[],"removed":[],"modified":["run.sh"]}}],"total_commits":1,"head_commit":{{"id":"{AFTER}"}},"repository":{{"id":7,"owner":{{"login":"ops"}},"name":"host","full_name":"ops/host","private":true,"default_branch":"main"}},"pusher":{{"login":"ops","id":3}},"sender":{{"login":"ops","id":3}}}}"#
    )
}

fn gitlab_push(reference: &str) -> String {
    format!(
        r#"{{"object_kind":"push","event_name":"push","before":"{BEFORE}","after":"{AFTER}","ref":"{reference}","ref_protected":true,"checkout_sha":"{AFTER}","user_id":4,"user_name":"Ops","user_username":"ops","project_id":15,"project":{{"id":15,"name":"host","path_with_namespace":"ops/host","default_branch":"main","git_ssh_url":"git@gitlab.example.com:ops/host.git"}},"commits":[{{"id":"{AFTER}","message":"deploy: nginx 1.24","title":"deploy: nginx 1.24","timestamp":"2026-05-02T10:00:00+02:00","author":{{"name":"Ops","email":"ops@example.com"}},"added":[],"modified":["run.sh"],"removed":[]}}],"total_commits_count":1,"repository":{{"name":"host","url":"git@gitlab.example.com:ops/host.git"}}}}"#
    )
}

fn generic_push(reference: &str) -> String {
    format!(r#"{{"ref":"{reference}","after":"{AFTER}"}}"#)
}

/// The forges as the receiver tells them apart.
#[derive(Debug, Clone, Copy)]
enum Forge {
    GitHub,
    Gitea,
    Forgejo,
    GitLab,
    Generic,
}

/// Hex HMAC-SHA256 of `body` under `key`.
fn hmac_hex(key: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A push of `forge` to `reference`: the headers the forge sends (its
/// credentials made with `key`) and the body.
fn push(forge: Forge, reference: &str, key: &str) -> (Vec<(String, String)>, Vec<u8>) {
    let h = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let delivery = "f0e1d2c3-b4a5-4697-8899-aabbccddeeff";
    match forge {
        Forge::GitHub => {
            let body = github_push(reference).into_bytes();
            let sig = format!("sha256={}", hmac_hex(key, &body));
            (
                h(&[
                    ("User-Agent", "GitHub-Hookshot/5b6b1a4"),
                    ("Content-Type", "application/json"),
                    ("X-GitHub-Event", "push"),
                    ("X-GitHub-Delivery", delivery),
                    ("X-GitHub-Hook-ID", "292430182"),
                    ("X-Hub-Signature-256", &sig),
                ]),
                body,
            )
        }
        Forge::Gitea | Forge::Forgejo => {
            let body = gitea_push(reference).into_bytes();
            let hex = hmac_hex(key, &body);
            let sig = format!("sha256={hex}");
            let mut headers = h(&[
                ("Content-Type", "application/json"),
                ("X-GitHub-Event", "push"),
                ("X-GitHub-Delivery", delivery),
                ("X-Gitea-Event", "push"),
                ("X-Gitea-Event-Type", "push"),
                ("X-Gitea-Delivery", delivery),
                ("X-Gitea-Signature", &hex),
                ("X-Gogs-Event", "push"),
                ("X-Gogs-Signature", &hex),
                ("X-Hub-Signature-256", &sig),
            ]);
            if let Forge::Forgejo = forge {
                headers.extend(h(&[
                    ("X-Forgejo-Event", "push"),
                    ("X-Forgejo-Event-Type", "push"),
                    ("X-Forgejo-Delivery", delivery),
                    ("X-Forgejo-Signature", &hex),
                ]));
            }
            (headers, body)
        }
        Forge::GitLab => (
            h(&[
                ("Content-Type", "application/json"),
                ("User-Agent", "GitLab/17.0.0"),
                ("X-Gitlab-Event", "Push Hook"),
                ("X-Gitlab-Event-UUID", delivery),
                ("X-Gitlab-Instance", "https://gitlab.example.com"),
                ("X-Gitlab-Token", key),
            ]),
            gitlab_push(reference).into_bytes(),
        ),
        Forge::Generic => {
            let body = generic_push(reference).into_bytes();
            let sig = format!("sha256={}", hmac_hex(key, &body));
            (
                h(&[("Content-Type", "application/json"), ("X-Signature", &sig)]),
                body,
            )
        }
    }
}

// ---------------------------------------------------------------------------
// A receiver under test
// ---------------------------------------------------------------------------

/// A receiver under test, started in the background; killed and reaped when
/// dropped.
struct Rx {
    receiver: Spawned,
    addr: SocketAddr,
    /// The runtime directory (mode 0755) holding the trigger file.
    run_dir: PathBuf,
    trigger: PathBuf,
    _dir: TempDir,
}

/// A temporary directory with the secret file and an empty runtime dir.
fn rx_dir() -> (TempDir, PathBuf, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("gitops-run-receive-")
        .tempdir()
        .unwrap();
    let secret = dir.path().join("receiver-secret");
    fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let run_dir = dir.path().join("run");
    fs::create_dir(&run_dir).unwrap();
    fs::set_permissions(&run_dir, fs::Permissions::from_mode(0o755)).unwrap();
    (dir, secret, run_dir)
}

/// The complete lines a receiver logged so far (a line it is still writing
/// is left out), joined by newlines.
fn logged(receiver: &Spawned) -> String {
    let mut log = receiver.log();
    let complete = log.rfind('\n').unwrap_or(0);
    log.truncate(complete);
    log
}

impl Rx {
    /// A receiver bound with `--listen 127.0.0.1:0`, plus `extra` options.
    fn start(extra: &[&str]) -> Rx {
        let (dir, secret, run_dir) = rx_dir();
        let trigger = run_dir.join("trigger");
        let mut cmd = bin();
        cmd.arg("receive")
            .args(["--listen", "127.0.0.1:0"])
            .arg("--secret-file")
            .arg(&secret)
            .arg("--trigger-file")
            .arg(&trigger)
            .args(extra);
        let mut receiver = Spawned::start(&mut cmd, &dir.path().join("receiver.log"));
        let addr = wait_for_address(&mut receiver);
        Rx {
            receiver,
            addr,
            run_dir,
            trigger,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        logged(&self.receiver)
    }

    /// Wait until a log line contains `needle`; whether one did.
    fn wait_log(&self, needle: &str) -> bool {
        poll_until(|| self.log().contains(needle))
    }

    /// The request lines of the log (one per request).
    fn request_lines(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(" event="))
            .map(str::to_owned)
            .collect()
    }

    /// Wait until `n` request lines were logged; the lines.
    fn wait_lines(&self, n: usize) -> Vec<String> {
        poll_until(|| self.request_lines().len() >= n);
        self.request_lines()
    }

    fn send(&self, headers: &[(String, String)], body: &[u8]) -> Reply {
        post(self.addr, headers, body)
    }
}

/// The address `receiver` logs that it listens on; fails the test if it
/// exits first.
fn wait_for_address(receiver: &mut Spawned) -> SocketAddr {
    let mut addr = None;
    poll_until(|| {
        addr = logged(receiver).lines().find_map(|l| {
            let rest = l.split_once("listening on ")?.1;
            rest.split_whitespace().next()?.parse().ok()
        });
        addr.is_some() || !receiver.is_running()
    });
    addr.unwrap_or_else(|| {
        if receiver.is_running() {
            panic!("the receiver never listened:\n{}", receiver.log());
        }
        panic!(
            "the receiver exited ({}) before listening:\n{}",
            receiver.wait(),
            receiver.log()
        )
    })
}

// ---------------------------------------------------------------------------
// A small HTTP/1.1 client
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct Reply {
    status: u16,
    body: String,
}

/// Read a whole answer from `stream` and parse its status and body.
fn read_reply(stream: &mut TcpStream) -> std::io::Result<Reply> {
    stream.set_read_timeout(Some(SAFETY_NET))?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    Ok(Reply {
        status,
        body: body.to_owned(),
    })
}

fn request_bytes(headers: &[(String, String)], body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST /hooks/gitops-run HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn post(addr: SocketAddr, headers: &[(String, String)], body: &[u8]) -> Reply {
    post_raw(addr, &request_bytes(headers, body))
}

fn post_raw(addr: SocketAddr, raw: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).expect("connect to the receiver");
    stream.write_all(raw).expect("send the request");
    read_reply(&mut stream).expect("read the answer")
}

/// curl with the given headers and body (from a file), as a forge would
/// post; returns (status, body) and what curl reports it uploaded.
fn curl(addr: SocketAddr, headers: &[(String, String)], body_file: &Path) -> (u16, String, u64) {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("body");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-X", "POST", "--max-time", "30", "-o"])
        .arg(&out_file)
        .args(["-w", "%{http_code} %{size_upload}"])
        .arg("--data-binary")
        .arg(format!("@{}", body_file.display()));
    for (k, v) in headers {
        cmd.arg("-H").arg(format!("{k}: {v}"));
    }
    cmd.arg(format!("http://{addr}/hooks/gitops-run"))
        .env("HOME", test_home())
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY");
    let out = run(&mut cmd);
    assert!(out.success(), "curl failed (apt-get install curl):\n{out}");
    let mut parts = out.stdout.split_whitespace();
    let status = parts.next().and_then(|s| s.parse().ok()).unwrap();
    let uploaded = parts.next().and_then(|s| s.parse().ok()).unwrap();
    let body = fs::read_to_string(&out_file).unwrap_or_default();
    (status, body, uploaded)
}

// ---------------------------------------------------------------------------
// A simulated pass consumer (the path unit plus the pass's removal)
// ---------------------------------------------------------------------------

struct Passes {
    starts: Arc<Mutex<Vec<Instant>>>,
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Passes {
    /// Watch `trigger`: when it exists and no pass runs, start a "pass" that
    /// removes it first and then takes `pass_time`.
    fn watch(trigger: &Path, pass_time: Duration) -> Passes {
        let starts = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (t, s, st) = (
            trigger.to_path_buf(),
            Arc::clone(&starts),
            Arc::clone(&stop),
        );
        let handle = thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                if fs::symlink_metadata(&t).is_ok() {
                    fs::remove_file(&t).expect("the pass removes the trigger");
                    s.lock().unwrap().push(Instant::now());
                    thread::sleep(pass_time);
                } else {
                    thread::sleep(Duration::from_millis(5));
                }
            }
        });
        Passes {
            starts,
            stop,
            handle: Some(handle),
        }
    }

    fn starts(&self) -> Vec<Instant> {
        self.starts.lock().unwrap().clone()
    }
}

impl Drop for Passes {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

// ---------------------------------------------------------------------------
// Each forge's push
// ---------------------------------------------------------------------------

/// A push of `forge` to main is answered 202, writes the trigger file, and
/// is logged as accepted with the forge's name.
fn assert_push_triggers(forge: Forge, forge_name: &str) {
    let rx = Rx::start(&[]);
    let (headers, body) = push(forge, "refs/heads/main", SECRET);
    let reply = rx.send(&headers, &body);
    assert_eq!(reply.status, 202, "{forge:?}: {reply:?}\n{}", rx.log());
    assert_eq!(reply.body, "pass requested\n");
    assert!(
        poll_until(|| rx.trigger.is_file()),
        "{forge:?}: no trigger file:\n{}",
        rx.log()
    );
    let lines = rx.wait_lines(1);
    assert_eq!(lines.len(), 1, "{}", rx.log());
    assert!(
        lines[0].contains(&format!("event={forge_name}/"))
            && lines[0].contains("ref=refs/heads/main")
            && lines[0].contains("accepted")
            && lines[0].contains("127.0.0.1:"),
        "{}",
        lines[0]
    );
}

#[test]
fn github_push_to_the_branch_asks_for_a_pass() {
    assert_push_triggers(Forge::GitHub, "github");
}

#[test]
fn gitea_push_to_the_branch_asks_for_a_pass() {
    assert_push_triggers(Forge::Gitea, "gitea");
}

#[test]
fn forgejo_push_to_the_branch_asks_for_a_pass() {
    assert_push_triggers(Forge::Forgejo, "forgejo");
}

#[test]
fn gitlab_push_hook_with_its_token_asks_for_a_pass() {
    assert_push_triggers(Forge::GitLab, "gitlab");
}

#[test]
fn generic_signed_json_asks_for_a_pass() {
    assert_push_triggers(Forge::Generic, "generic");
}

/// curl posts a body signed by `openssl dgst` (an HMAC made independently
/// of the receiver's code); the log names the request and never contains
/// the secret or the signature.
#[test]
fn curl_with_an_openssl_signature_is_accepted_and_the_log_keeps_secrets_out() {
    let rx = Rx::start(&["--branch", "production"]);
    let dir = tempfile::tempdir().unwrap();
    let body_file = dir.path().join("body.json");
    fs::write(&body_file, github_push("refs/heads/production")).unwrap();
    let out = run(Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", SECRET])
        .arg(&body_file));
    assert!(out.success(), "{out}");
    let text = out.stdout;
    let hex = text.split_whitespace().last().unwrap().to_owned();
    assert_eq!(hex.len(), 64, "{text}");
    let headers = vec![
        ("X-GitHub-Event".to_string(), "push".to_string()),
        ("X-Hub-Signature-256".to_string(), format!("sha256={hex}")),
        ("Content-Type".to_string(), "application/json".to_string()),
    ];
    let (status, body, _) = curl(rx.addr, &headers, &body_file);
    assert_eq!(
        (status, body.as_str()),
        (202, "pass requested\n"),
        "{}",
        rx.log()
    );
    assert!(poll_until(|| rx.trigger.is_file()), "{}", rx.log());

    // A wrong one too, so the refusal is in the log as well.
    let wrong = vec![
        ("X-GitHub-Event".to_string(), "push".to_string()),
        (
            "X-Hub-Signature-256".to_string(),
            format!("sha256={}", hmac_hex("another-secret-0123456789", b"x")),
        ),
    ];
    let (status, _, _) = curl(rx.addr, &wrong, &body_file);
    assert_eq!(status, 403);
    assert!(rx.wait_log("refused: wrong credentials"), "{}", rx.log());
    let log = rx.log();
    assert!(
        !log.contains(SECRET),
        "the secret leaked into the log:\n{log}"
    );
    assert!(
        !log.contains(&hex),
        "the signature leaked into the log:\n{log}"
    );
    assert!(
        !log.contains(&hex[..16]),
        "part of the signature in the log:\n{log}"
    );
    let lines = rx.wait_lines(2);
    assert_eq!(lines.len(), 2, "one line per request:\n{log}");
    assert!(
        lines[0].contains(
            "POST /hooks/gitops-run 202 event=github/push ref=refs/heads/production: accepted"
        ),
        "{}",
        lines[0]
    );
}

// ---------------------------------------------------------------------------
// Authentication
// ---------------------------------------------------------------------------

/// Requests without credentials get 401, with any wrong credential 403; all
/// with the same body; none writes the trigger. Then a right one does, so
/// the absence above was not for another reason.
#[test]
fn missing_and_wrong_credentials_get_401_and_403_with_one_body_and_change_nothing() {
    let rx = Rx::start(&[]);
    let (mut no_creds, body) = push(Forge::GitHub, "refs/heads/main", SECRET);
    no_creds.retain(|(k, _)| k != "X-Hub-Signature-256");
    let reply = rx.send(&no_creds, &body);
    assert_eq!((reply.status, reply.body.as_str()), (401, AUTH_FAILED));

    let mut refused = Vec::new();
    for forge in [
        Forge::GitHub,
        Forge::Gitea,
        Forge::Forgejo,
        Forge::GitLab,
        Forge::Generic,
    ] {
        // Signed or tokened with another secret.
        let (headers, body) = push(forge, "refs/heads/main", "wrong-secret-0123456789abc");
        refused.push((format!("{forge:?} wrong secret"), headers, body));
    }
    // The right signature of another body (the payload was altered).
    let (headers, _) = push(Forge::GitHub, "refs/heads/main", SECRET);
    refused.push((
        "altered body".into(),
        headers,
        github_push("refs/heads/main")
            .replace("nginx 1.24", "nginx 1.25")
            .into_bytes(),
    ));
    // Gitea's right signature next to a wrong GitHub one.
    let (mut headers, body) = push(Forge::Gitea, "refs/heads/main", SECRET);
    for (k, v) in headers.iter_mut() {
        if k == "X-Hub-Signature-256" {
            *v = format!("sha256={}", "0".repeat(64));
        }
    }
    refused.push(("one of several headers wrong".into(), headers, body.clone()));
    // A malformed signature, and a prefix only.
    for bad in ["sha256=xyz", "sha256=", "md5=00"] {
        let (mut headers, body) = push(Forge::GitHub, "refs/heads/main", SECRET);
        headers.retain(|(k, _)| k != "X-Hub-Signature-256");
        headers.push(("X-Hub-Signature-256".into(), bad.into()));
        refused.push((format!("malformed {bad}"), headers, body));
    }
    for (what, headers, body) in &refused {
        let reply = rx.send(headers, body);
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (403, AUTH_FAILED),
            "{what}"
        );
    }
    assert_eq!(
        rx.wait_lines(1 + refused.len()).len(),
        1 + refused.len(),
        "{}",
        rx.log()
    );
    assert!(!rx.trigger.exists(), "a refused request wrote the trigger");
    assert!(!rx.log().contains("asked for a pass"), "{}", rx.log());

    let (headers, body) = push(Forge::GitHub, "refs/heads/main", SECRET);
    assert_eq!(rx.send(&headers, &body).status, 202);
    assert!(poll_until(|| rx.trigger.is_file()), "{}", rx.log());
}

/// Whatever the method, a request without any credential header gets the
/// same 401 as a POST without one; only a request that presents a
/// credential learns that POST is wanted (405).
#[test]
fn other_methods_without_credentials_get_401_and_with_them_405() {
    let rx = Rx::start(&[]);
    for method in ["GET", "PUT", "DELETE", "OPTIONS"] {
        let raw = format!(
            "{method} /hooks/gitops-run HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        );
        let reply = post_raw(rx.addr, raw.as_bytes());
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (401, AUTH_FAILED),
            "{method}"
        );
    }
    let (headers, _) = push(Forge::GitHub, "refs/heads/main", SECRET);
    let mut raw =
        String::from("GET /hooks/gitops-run HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in &headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    raw.push_str("\r\n");
    let reply = post_raw(rx.addr, raw.as_bytes());
    assert_eq!(reply.status, 405, "{reply:?}");
    // curl's GET, as a person would try it.
    let out = run(Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "30",
        ])
        .arg(format!("http://{}/hooks/gitops-run", rx.addr))
        .env("HOME", test_home())
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY"));
    assert_eq!(out.stdout.trim(), "401", "{out}");
    assert_eq!(rx.wait_lines(6).len(), 6, "{}", rx.log());
    assert!(!rx.trigger.exists());
}

/// Authentication comes first: an unauthenticated push to another branch
/// gets the same 403 as one to the followed branch (nothing tells a caller
/// without the secret which branch is followed).
#[test]
fn unauthenticated_requests_learn_nothing_about_the_branch() {
    let rx = Rx::start(&[]);
    let mut replies = Vec::new();
    for reference in ["refs/heads/main", "refs/heads/other"] {
        let (headers, body) = push(Forge::GitHub, reference, "wrong-secret-0123456789abc");
        let r = rx.send(&headers, &body);
        replies.push((r.status, r.body));
    }
    assert_eq!(replies[0], replies[1]);
    assert_eq!(replies[0], (403, AUTH_FAILED.to_string()));
    assert_eq!(rx.wait_lines(2).len(), 2);
    assert!(
        rx.log().contains("ref=-"),
        "no ref logged before authentication:\n{}",
        rx.log()
    );
}

// ---------------------------------------------------------------------------
// Events and branches
// ---------------------------------------------------------------------------

#[test]
fn pings_other_events_and_other_refs_answer_without_asking_for_a_pass() {
    let rx = Rx::start(&[]);
    let signed = |event_header: &str, event: &str, body: String| {
        let sig = format!("sha256={}", hmac_hex(SECRET, body.as_bytes()));
        let headers = vec![
            (event_header.to_string(), event.to_string()),
            ("X-Hub-Signature-256".to_string(), sig),
        ];
        rx.send(&headers, body.as_bytes())
    };
    let ping = signed(
        "X-GitHub-Event",
        "ping",
        r#"{"zen":"Keep it logically awesome.","hook_id":1}"#.into(),
    );
    assert_eq!((ping.status, ping.body.as_str()), (200, "pong\n"));
    for (header, event, body) in [
        ("X-GitHub-Event", "push", github_push("refs/heads/feature")),
        ("X-GitHub-Event", "push", github_push("refs/tags/v1.0")),
        ("X-GitHub-Event", "push", github_push("refs/heads/main-old")),
        ("X-Gitea-Event", "push", gitea_push("refs/heads/develop")),
        ("X-GitHub-Event", "issues", r#"{"action":"opened"}"#.into()),
        ("X-Gitea-Event", "create", gitea_push("refs/heads/main")),
    ] {
        let reply = signed(header, event, body);
        assert_eq!(reply.status, 204, "{header}: {event}");
        assert!(reply.body.is_empty());
    }
    let (mut headers, body) = push(Forge::GitLab, "refs/heads/main", SECRET);
    for (k, v) in headers.iter_mut() {
        if k == "X-Gitlab-Event" {
            *v = "Tag Push Hook".into();
        }
    }
    assert_eq!(rx.send(&headers, &body).status, 204);
    let (headers, body) = push(Forge::GitLab, "refs/heads/staging", SECRET);
    assert_eq!(rx.send(&headers, &body).status, 204);
    // A signed body that is not a push payload.
    let bad = signed("X-GitHub-Event", "push", "not json".into());
    assert_eq!(bad.status, 400);

    let lines = rx.wait_lines(10);
    assert_eq!(lines.len(), 10, "{}", rx.log());
    assert!(
        lines
            .iter()
            .any(|l| l.contains("ignored: ref \"refs/heads/feature\" is not refs/heads/main")),
        "{}",
        rx.log()
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("ignored: event \"issues\" is not a push")),
        "{}",
        rx.log()
    );
    assert!(!rx.trigger.exists());
    assert!(!rx.log().contains("asked for a pass"), "{}", rx.log());
}

// ---------------------------------------------------------------------------
// Limits: body size, slow clients, connections
// ---------------------------------------------------------------------------

/// A declared body over the limit is refused before the client sends it:
/// the test sends only the head (claiming 10 GiB) and gets 413; curl, which
/// waits for `100 Continue` before a large upload, gets 413 and uploads
/// nothing.
#[test]
fn an_oversized_body_is_refused_before_it_is_sent() {
    let rx = Rx::start(&[]);
    let mut stream = TcpStream::connect(rx.addr).unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\nContent-Length: 10737418240\r\n\r\n")
        .unwrap();
    let reply = read_reply(&mut stream).unwrap();
    assert_eq!(reply.status, 413, "{reply:?}");

    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.json");
    let mut body = github_push("refs/heads/main").into_bytes();
    body.resize(2 * 1024 * 1024, b' ');
    fs::write(&big, &body).unwrap();
    let headers = vec![
        ("X-GitHub-Event".to_string(), "push".to_string()),
        (
            "X-Hub-Signature-256".to_string(),
            format!("sha256={}", hmac_hex(SECRET, &body)),
        ),
    ];
    let (status, _, uploaded) = curl(rx.addr, &headers, &big);
    assert_eq!(status, 413);
    assert!(
        uploaded < 1024 * 1024,
        "curl uploaded {uploaded} bytes: the receiver should refuse before the body"
    );

    // The limit is an option: the same body within a raised limit is accepted.
    let rx = Rx::start(&["--max-body-bytes", "4194304"]);
    let (status, _, _) = curl(rx.addr, &headers, &big);
    assert_eq!(status, 202, "{}", rx.log());
    assert!(!rx.log().contains("panicked"));
}

/// A chunked body is cut off as soon as it passes the limit: the client
/// sends just over the limit and never ends the body, and still gets 413.
#[test]
fn a_chunked_body_over_the_limit_is_refused_without_waiting_for_its_end() {
    let rx = Rx::start(&["--max-body-bytes", "1000"]);
    let mut stream = TcpStream::connect(rx.addr).unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    for _ in 0..3 {
        stream.write_all(b"190\r\n").unwrap(); // 400 bytes a chunk
        stream.write_all(&[b'a'; 400]).unwrap();
        stream.write_all(b"\r\n").unwrap();
    }
    let started = Instant::now();
    let reply = read_reply(&mut stream).unwrap();
    assert_eq!(reply.status, 413, "{reply:?}");
    assert!(
        started.elapsed() < REQUEST_DEADLINE,
        "the answer waited for the deadline instead of the limit"
    );
    assert!(
        rx.wait_log("refused: body larger than 1000 bytes"),
        "{}",
        rx.log()
    );
}

/// A client sending its request a byte a second is cut off by the
/// per-request deadline, long before it would finish; meanwhile other
/// clients are served at once.
#[test]
fn a_slow_client_is_cut_off_by_the_deadline_while_others_are_served() {
    let rx = Rx::start(&[]);
    let (headers, body) = push(Forge::GitHub, "refs/heads/main", SECRET);
    let request = request_bytes(&headers, &body);
    let addr = rx.addr;
    let closed_at = Arc::new(Mutex::new(None::<(Instant, usize)>));
    let closed = Arc::clone(&closed_at);
    let started = Instant::now();
    let slow = thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(1000)))
            .unwrap();
        let mut sent = 0;
        let mut answer = Vec::new();
        for byte in request.iter() {
            if stream.write_all(&[*byte]).is_err() {
                break;
            }
            sent += 1;
            // Wait a second, watching for the server's answer or close.
            let mut buf = [0u8; 512];
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    let _ = stream.read_to_end(&mut answer);
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
            if started.elapsed() > SAFETY_NET {
                break;
            }
        }
        *closed.lock().unwrap() = Some((Instant::now(), sent));
        String::from_utf8_lossy(&answer).into_owned()
    });

    // While the slow client holds its connection, others get answers.
    thread::sleep(Duration::from_secs(2));
    for _ in 0..3 {
        let (headers, body) = push(Forge::GitHub, "refs/heads/main", SECRET);
        assert_eq!(rx.send(&headers, &body).status, 202);
    }
    assert!(
        closed_at.lock().unwrap().is_none(),
        "the slow client should still be connected while the others were served"
    );

    let answer = slow.join().unwrap();
    let (when, sent) = closed_at.lock().unwrap().expect("slow client finished");
    let held = when.duration_since(started);
    assert!(
        held < REQUEST_DEADLINE + Duration::from_secs(5),
        "the slow client was held for {held:?}"
    );
    assert!(
        sent < request_bytes(&headers, &body).len() / 2,
        "sent {sent} bytes"
    );
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer:?}");
    assert!(
        rx.wait_log("refused: request not received in time"),
        "{}",
        rx.log()
    );
}

/// Sockets `pid` holds open, from /proc.
fn open_sockets(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| {
            entries
                .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
                .filter(|target| target.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0)
}

/// Twenty idle connections: the receiver takes eight (the listening socket
/// plus eight accepted ones are all it holds), the rest wait in the backlog;
/// a push queued behind them is served once they go, not dropped.
#[test]
fn at_most_eight_connections_are_held_and_the_rest_wait() {
    let rx = Rx::start(&[]);
    let pid = rx.receiver.pid();
    let base = open_sockets(pid);
    assert_eq!(base, 1, "only the listening socket at first");
    let idle: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(rx.addr).unwrap())
        .collect();
    assert!(
        poll_until(|| open_sockets(pid) == 1 + MAX_CONNECTIONS),
        "expected {} sockets, found {}",
        1 + MAX_CONNECTIONS,
        open_sockets(pid)
    );
    let mut most = 0;
    for _ in 0..20 {
        most = most.max(open_sockets(pid));
        thread::sleep(Duration::from_millis(25));
    }
    assert_eq!(
        most,
        1 + MAX_CONNECTIONS,
        "more connections held than allowed"
    );

    let (headers, body) = push(Forge::GitHub, "refs/heads/main", SECRET);
    let addr = rx.addr;
    let queued = thread::spawn(move || post(addr, &headers, &body));
    thread::sleep(Duration::from_millis(200));
    drop(idle); // the clients give up; the receiver frees its slots
    let reply = queued.join().unwrap();
    assert_eq!(reply.status, 202, "{}", rx.log());
    assert!(poll_until(|| rx.trigger.is_file()), "{}", rx.log());
}

// ---------------------------------------------------------------------------
// Coalescing: bursts, pushes during a pass, replays
// ---------------------------------------------------------------------------

/// The receiver's quiet period that ends a burst (src/receive/trigger.rs).
const BURST_QUIET: Duration = Duration::from_millis(1_000);
/// The default --min-interval.
const MIN_INTERVAL: Duration = Duration::from_secs(5);
/// The pushes of the burst test are spread over at least this long: longer
/// than --min-interval, so that a rate limit alone would make three passes.
const BURST_SPREAD: Duration = Duration::from_secs(7);

/// 1,000 valid pushes sent one after the other over more than the default
/// --min-interval (5s), while "passes" remove the trigger as they start:
/// the first push asks for a pass at once, the rest are merged into one more
/// written once the burst is over. At most two passes, at least one, and the
/// last one starts after the last push was answered, so no push is lost.
#[test]
fn a_burst_of_1000_pushes_leads_to_at_most_two_passes() {
    let rx = Rx::start(&[]);
    let passes = Passes::watch(&rx.trigger, Duration::from_millis(300));
    let (headers, body) = push(Forge::GitHub, "refs/heads/main", SECRET);
    let request = request_bytes(&headers, &body);
    let started = Instant::now();
    let pace = BURST_SPREAD / 1000;
    let mut statuses = Vec::with_capacity(1000);
    let mut longest_gap = Duration::ZERO;
    let mut previous = Instant::now();
    for i in 0..1000u32 {
        // Pace the pushes so that the burst lasts BURST_SPREAD even on a fast
        // machine (a slow one simply takes longer).
        let due = started + pace * i;
        thread::sleep(due.saturating_duration_since(Instant::now()));
        statuses.push(post_raw(rx.addr, &request).status);
        longest_gap = longest_gap.max(previous.elapsed());
        previous = Instant::now();
    }
    let last_answer = Instant::now();
    let burst = last_answer.duration_since(started);
    eprintln!("1000 pushes answered in {burst:?}, longest gap {longest_gap:?}");
    assert_eq!(statuses.len(), 1000);
    assert!(statuses.iter().all(|s| *s == 202), "not all accepted");
    assert!(
        burst > MIN_INTERVAL,
        "the burst took {burst:?}: it cannot show more than the rate limit"
    );
    // The merged request is written once the pushes stopped.
    assert!(
        poll_until(|| rx.log().matches("asked for a pass").count() >= 2),
        "{}",
        rx.log()
    );
    assert!(poll_until(|| !rx.trigger.exists()));
    // Nothing more comes: wait longer than a quiet period and an interval.
    thread::sleep(MIN_INTERVAL + BURST_QUIET);
    let starts = passes.starts();
    assert!(
        (1..=2).contains(&starts.len()),
        "{} passes for one burst (longest gap between pushes {longest_gap:?}):\n{}",
        starts.len(),
        rx.log()
    );
    assert_eq!(rx.log().matches("asked for a pass").count(), starts.len());
    assert!(
        *starts.last().unwrap() > last_answer,
        "the last pass started before the last push was answered"
    );
    assert_eq!(rx.wait_lines(1000).len(), 1000);
}

/// A push that comes alone while a pass runs (2 s after the one that
/// started it) is not held back for a burst: it is written as soon as
/// --min-interval allows, within --min-interval plus the quiet period.
#[test]
fn an_isolated_push_during_a_pass_leads_to_a_pass_within_seconds() {
    let rx = Rx::start(&[]);
    let passes = Passes::watch(&rx.trigger, Duration::from_secs(7));
    let (headers, body) = push(Forge::GitHub, "refs/heads/main", SECRET);
    assert_eq!(rx.send(&headers, &body).status, 202);
    assert!(poll_until(|| passes.starts().len() == 1), "{}", rx.log());
    let first = passes.starts()[0];
    thread::sleep(Duration::from_secs(2));
    assert_eq!(rx.send(&headers, &body).status, 202);
    let pushed = Instant::now();
    // The "pass" still runs: the written trigger waits for it.
    assert!(poll_until(|| rx.trigger.exists()), "{}", rx.log());
    let written = Instant::now();
    assert!(
        written.duration_since(pushed) <= MIN_INTERVAL + BURST_QUIET,
        "written {:?} after the push",
        written.duration_since(pushed)
    );
    assert!(
        written >= first + MIN_INTERVAL - Duration::from_millis(100),
        "written within --min-interval of the first write"
    );
    assert_eq!(passes.starts().len(), 1, "the first pass still runs");
    assert!(
        poll_until(|| passes.starts().len() == 2),
        "no second pass:\n{}",
        rx.log()
    );
}

/// A push that arrives while a pass runs (the pass removed the trigger when
/// it started) leads to exactly one more pass after it.
#[test]
fn a_push_during_a_pass_leads_to_one_more_pass() {
    let rx = Rx::start(&["--min-interval", "1s"]);
    let passes = Passes::watch(&rx.trigger, Duration::from_secs(3));
    let (headers, body) = push(Forge::Gitea, "refs/heads/main", SECRET);
    assert_eq!(rx.send(&headers, &body).status, 202);
    assert!(poll_until(|| passes.starts().len() == 1));
    let first = passes.starts()[0];
    // During the first pass: two more pushes.
    thread::sleep(Duration::from_millis(500));
    assert_eq!(rx.send(&headers, &body).status, 202);
    assert_eq!(rx.send(&headers, &body).status, 202);
    let pushed = Instant::now();
    assert!(
        poll_until(|| passes.starts().len() == 2),
        "no second pass:\n{}",
        rx.log()
    );
    let second = passes.starts()[1];
    assert!(
        second >= first + Duration::from_secs(3),
        "passes overlapped"
    );
    assert!(second > pushed);
    // And no third one.
    thread::sleep(Duration::from_secs(5));
    assert_eq!(passes.starts().len(), 2, "{}", rx.log());
}

/// The same captured request sent again is accepted (it is authentic) and
/// can only lead to one more pass, which deploys what Git says
/// (docs/receive.md, "Replayed requests").
#[test]
fn a_replayed_request_leads_to_at_most_one_more_pass() {
    let rx = Rx::start(&["--min-interval", "1s"]);
    let passes = Passes::watch(&rx.trigger, Duration::from_millis(100));
    let (headers, body) = push(Forge::GitHub, "refs/heads/main", SECRET);
    let captured = request_bytes(&headers, &body);
    assert_eq!(post_raw(rx.addr, &captured).status, 202);
    assert!(poll_until(|| passes.starts().len() == 1));
    assert_eq!(post_raw(rx.addr, &captured).status, 202);
    assert!(poll_until(|| passes.starts().len() == 2));
    thread::sleep(Duration::from_secs(3));
    assert_eq!(passes.starts().len(), 2, "{}", rx.log());
}

// ---------------------------------------------------------------------------
// Socket activation, idle exit, start-up checks
// ---------------------------------------------------------------------------

/// The receiver started the way systemd starts it: the listening socket as
/// fd 3, LISTEN_FDS=1, LISTEN_PID set to the receiver's own pid (through
/// `sh -c 'LISTEN_PID=$$ exec ...'`, since exec keeps the pid), and the
/// secret as a credential in $CREDENTIALS_DIRECTORY. It serves the socket,
/// exits 0 after --idle-exit, and a connection made after that waits in the
/// socket's backlog for the next start, as with systemd.
#[test]
fn socket_activation_serves_fd_3_and_exits_when_idle() {
    let (dir, _secret, run_dir) = rx_dir();
    let creds = dir.path().join("credentials");
    fs::create_dir(&creds).unwrap();
    fs::write(creds.join("receiver-secret"), SECRET).unwrap();
    let trigger = run_dir.join("trigger");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();

    let spawn = |listener: &TcpListener, log: &str| -> Spawned {
        use std::os::fd::AsRawFd;
        let fd = listener.as_raw_fd();
        // The binary in the clean environment of `bin()`, started through sh
        // so that LISTEN_PID can be the receiver's own pid.
        let mut sh = Command::new("/bin/sh");
        sh.env_clear();
        git_env(&mut sh);
        sh.arg("-c")
            .arg(r#"LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" receive --trigger-file "$1" --idle-exit 2s"#)
            .arg(bin_path())
            .arg(&trigger)
            .env("PATH", "/usr/bin:/bin")
            .env("CREDENTIALS_DIRECTORY", &creds);
        // SAFETY: between fork and exec only async-signal-safe calls (dup2,
        // fcntl) are made.
        unsafe {
            sh.pre_exec(move || {
                if fd == 3 {
                    let flags = nix::libc::fcntl(3, nix::libc::F_GETFD);
                    nix::libc::fcntl(3, nix::libc::F_SETFD, flags & !nix::libc::FD_CLOEXEC);
                } else if nix::libc::dup2(fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Spawned::start(&mut sh, &dir.path().join(log))
    };

    let mut receiver = spawn(&listener, "first.log");
    let found = wait_for_address(&mut receiver);
    assert_eq!(found, addr);
    assert!(
        logged(&receiver)
            .lines()
            .any(|l| l.contains("(socket from systemd)") && l.contains("idle exit after 2s")),
        "{}",
        receiver.log()
    );
    let (headers, body) = push(Forge::GitLab, "refs/heads/main", SECRET);
    assert_eq!(post(addr, &headers, &body).status, 202);
    assert!(poll_until(|| trigger.is_file()));

    // Idle for 2 s: it exits 0 on its own.
    let status = receiver
        .wait_at_most(SAFETY_NET)
        .unwrap_or_else(|| panic!("the receiver did not exit when idle:\n{}", receiver.log()));
    assert_eq!(status.code(), Some(0), "{}", receiver.log());
    // It has exited: the log is complete.
    assert!(
        logged(&receiver)
            .lines()
            .any(|l| l.contains("exiting: idle for 2s")),
        "{}",
        receiver.log()
    );

    // A push now waits in the backlog of the socket (systemd's, here the
    // test's) and is answered by the next receiver started on it.
    let addr2 = addr;
    let waiting = thread::spawn(move || post(addr2, &headers, &body));
    thread::sleep(Duration::from_millis(300));
    fs::remove_file(&trigger).unwrap();
    let _second = spawn(&listener, "second.log");
    assert_eq!(waiting.join().unwrap().status, 202);
    assert!(poll_until(|| trigger.is_file()));
}

/// `gitops-run receive ARGS` with `env` added, run to its end.
fn run_receiver(args: &[&str], env: &[(&str, &Path)]) -> Run {
    let mut cmd = bin();
    cmd.arg("receive").args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(&mut cmd)
}
/// Problems that would make every request fail stop the receiver at start,
/// with exit 2 and a message naming the problem; the secret cannot be given
/// as an option value.
#[test]
fn bad_setups_refuse_to_start() {
    let (dir, secret, run_dir) = rx_dir();
    let trigger = run_dir.join("trigger");
    let t = trigger.to_str().unwrap();
    let listen = ["--listen", "127.0.0.1:0"];

    let check = |out: Run, needle: &str| {
        let err = out.stderr;
        assert_eq!(out.code, Some(2), "{needle}: {err}");
        assert!(err.contains(needle), "want {needle:?} in: {err}");
        assert!(!err.contains("panicked"), "{err}");
    };
    check(
        run_receiver(&[&listen[..], &["--trigger-file", t]].concat(), &[]),
        "no webhook secret",
    );
    let empty = dir.path().join("empty");
    fs::write(&empty, " \n").unwrap();
    check(
        run_receiver(
            &[
                &listen[..],
                &[
                    "--trigger-file",
                    t,
                    "--secret-file",
                    empty.to_str().unwrap(),
                ],
            ]
            .concat(),
            &[],
        ),
        "is empty",
    );
    check(
        run_receiver(
            &[&listen[..], &["--trigger-file", t, "--secret", SECRET]].concat(),
            &[],
        ),
        "--secret",
    );
    let s = secret.to_str().unwrap();
    let open = dir.path().join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    check(
        run_receiver(
            &[
                &listen[..],
                &[
                    "--secret-file",
                    s,
                    "--trigger-file",
                    open.join("trigger").to_str().unwrap(),
                ],
            ]
            .concat(),
            &[],
        ),
        "writable by group or others",
    );
    check(
        run_receiver(&["--secret-file", s, "--trigger-file", t], &[]),
        "no socket",
    );
    check(
        run_receiver(
            &[
                &listen[..],
                &["--secret-file", s, "--trigger-file", t, "--branch", "a..b"],
            ]
            .concat(),
            &[],
        ),
        "invalid branch name",
    );
    // The credential directory without the credential names the file.
    let creds = dir.path().join("creds");
    fs::create_dir(&creds).unwrap();
    check(
        run_receiver(
            &[&listen[..], &["--trigger-file", t]].concat(),
            &[("CREDENTIALS_DIRECTORY", &creds)],
        ),
        "receiver-secret",
    );
}

/// A short secret is a warning at start, not a refusal: the receiver
/// names the file and its length on stderr, starts, and accepts a push
/// signed with that secret.
#[test]
fn a_short_secret_is_warned_about_and_works() {
    let (dir, _secret, run_dir) = rx_dir();
    let short = dir.path().join("short");
    fs::write(&short, "tiny-secret\n").unwrap();
    let trigger = run_dir.join("trigger");
    let mut cmd = bin();
    cmd.arg("receive")
        .args(["--listen", "127.0.0.1:0", "--secret-file"])
        .arg(&short)
        .arg("--trigger-file")
        .arg(&trigger);
    let mut receiver = Spawned::start(&mut cmd, &dir.path().join("receiver.log"));
    let addr = wait_for_address(&mut receiver);
    let log = logged(&receiver);
    let warning = format!(
        "warning: the webhook secret {} is short (11 bytes); use at least 16 random bytes, \
         e.g. `openssl rand -hex 32`",
        short.display()
    );
    assert!(log.contains(&warning), "want {warning:?} in:\n{log}");
    assert!(
        !log.contains("tiny-secret"),
        "the secret was logged:\n{log}"
    );
    let (headers, body) = push(Forge::GitHub, "refs/heads/main", "tiny-secret");
    assert_eq!(post(addr, &headers, &body).status, 202);
    assert!(poll_until(|| trigger.is_file()), "{}", receiver.log());
    // A long enough secret draws no warning.
    let rx = Rx::start(&[]);
    assert!(!rx.log().contains("is short"), "{}", rx.log());
}

/// Without --trigger-file, a receiver started by systemd writes `trigger`
/// in the first directory of $RUNTIME_DIRECTORY.
#[test]
fn the_default_trigger_goes_into_the_runtime_directory() {
    let (dir, secret, run_dir) = rx_dir();
    let other = dir.path().join("other");
    fs::create_dir(&other).unwrap();
    fs::set_permissions(&other, fs::Permissions::from_mode(0o755)).unwrap();
    let mut runtime = run_dir.clone().into_os_string();
    runtime.push(":");
    runtime.push(&other);
    let mut cmd = bin();
    cmd.arg("receive")
        .args(["--listen", "127.0.0.1:0", "--secret-file"])
        .arg(&secret)
        .env_remove("GITOPS_TRIGGER_FILE")
        .env("RUNTIME_DIRECTORY", &runtime);
    let mut receiver = Spawned::start(&mut cmd, &dir.path().join("receiver.log"));
    let addr = wait_for_address(&mut receiver);
    let trigger = run_dir.join("trigger");
    assert!(
        logged(&receiver).contains(&format!("trigger {},", trigger.display())),
        "{}",
        receiver.log()
    );
    let (headers, body) = push(Forge::Generic, "refs/heads/main", SECRET);
    assert_eq!(post(addr, &headers, &body).status, 202);
    assert!(poll_until(|| trigger.is_file()), "{}", receiver.log());
    assert_eq!(fs::read_dir(&other).unwrap().count(), 0);

    // Without it, the documented default. Where that directory does not
    // exist (no receiver unit ever ran here), the receiver refuses to start
    // and names it.
    let default_dir = Path::new(DOC_TRIGGER).parent().unwrap();
    if !default_dir.exists() {
        let out = run(bin()
            .arg("receive")
            .args(["--listen", "127.0.0.1:0", "--secret-file"])
            .arg(&secret)
            .env_remove("GITOPS_TRIGGER_FILE")
            .env_remove("RUNTIME_DIRECTORY"));
        assert_eq!(out.code, Some(2), "{out}");
        assert!(out.stderr.contains(default_dir.to_str().unwrap()), "{out}");
    }
}

/// A symlink planted under the trigger's name is replaced by the trigger,
/// never written through.
#[test]
fn the_trigger_is_never_written_through_a_planted_symlink() {
    let rx = Rx::start(&[]);
    let victim = rx.run_dir.parent().unwrap().join("victim");
    fs::write(&victim, "untouched\n").unwrap();
    std::os::unix::fs::symlink(&victim, &rx.trigger).unwrap();
    let (headers, body) = push(Forge::Generic, "refs/heads/main", SECRET);
    assert_eq!(rx.send(&headers, &body).status, 202);
    assert!(poll_until(|| fs::symlink_metadata(&rx.trigger)
        .map(|m| m.file_type().is_file())
        .unwrap_or(false)));
    assert_eq!(fs::read_to_string(&victim).unwrap(), "untouched\n");
    let leftovers: Vec<_> = fs::read_dir(&rx.run_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("trigger")]);
}

// ---------------------------------------------------------------------------
// Without systemd: the documented trigger checks of docs/receive.md
// ---------------------------------------------------------------------------

const RECEIVE_MD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/receive.md");
/// The documented paths, replaced in the tests by temporary ones.
const DOC_TRIGGER: &str = "/run/gitops-run-receiver/trigger";
const DOC_BINARY: &str = "/usr/bin/gitops-run";
const DOC_CONFIG: &str = "/etc/gitops-run/config";

/// The body of the code block between `<!-- NAME -->` and `<!-- /NAME -->`
/// in docs/receive.md.
fn documented_block(name: &str) -> String {
    let doc = fs::read_to_string(RECEIVE_MD).expect("read docs/receive.md");
    let begin = format!("<!-- {name} -->");
    let end = format!("<!-- /{name} -->");
    let start = doc
        .find(&begin)
        .unwrap_or_else(|| panic!("{begin} not in docs/receive.md"))
        + begin.len();
    let len = doc[start..]
        .find(&end)
        .unwrap_or_else(|| panic!("{end} not after {begin}"));
    let mut lines = doc[start..start + len]
        .lines()
        .skip_while(|l| l.trim().is_empty());
    let fence = lines.next().unwrap_or_default();
    assert!(
        fence.starts_with("```"),
        "{begin} must be followed by a code block"
    );
    let body: Vec<&str> = lines.take_while(|l| !l.starts_with("```")).collect();
    body.join("\n") + "\n"
}

/// A stand-in for the pass that keeps the pass's side of the contract: it
/// removes `$GITOPS_TRIGGER_FILE` before anything else, records its
/// arguments, and takes a moment.
fn fake_pass(dir: &Path) -> (PathBuf, PathBuf) {
    let record = dir.join("passes");
    let script = dir.join("fake-gitops-run");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ -n \"$GITOPS_TRIGGER_FILE\" ] && rm -f \"$GITOPS_TRIGGER_FILE\"\n\
             echo \"pass $* trigger=$GITOPS_TRIGGER_FILE\" >> '{}'\nsleep 1\n",
            record.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    (script, record)
}

fn passes_recorded(record: &Path) -> Vec<String> {
    fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The runit trigger service of docs/receive.md, run the way runsv runs it
/// (started again each time it exits), next to a receiver bound with
/// --listen: a push becomes one pass within seconds, the pass removed the
/// trigger, and nothing more runs without another push. Substitutions: the
/// documented paths become temporary ones, the binary the stand-in pass,
/// and `sleep 5` becomes `sleep 1`.
#[test]
fn the_documented_runit_trigger_service_turns_a_push_into_one_pass() {
    let rx = Rx::start(&["--min-interval", "1s"]);
    let dir = tempfile::tempdir().unwrap();
    let (pass, record) = fake_pass(dir.path());
    let config = dir.path().join("config");
    let script = documented_block("trigger-watch");
    for needle in [DOC_TRIGGER, DOC_BINARY, DOC_CONFIG, "sleep 5"] {
        assert!(
            script.contains(needle),
            "the run script should mention {needle}"
        );
    }
    let script = script
        .replace(DOC_TRIGGER, rx.trigger.to_str().unwrap())
        .replace(DOC_BINARY, pass.to_str().unwrap())
        .replace(DOC_CONFIG, config.to_str().unwrap())
        .replace("sleep 5", "sleep 1");
    let run = dir.path().join("run");
    fs::write(&run, script).unwrap();
    fs::set_permissions(&run, fs::Permissions::from_mode(0o755)).unwrap();

    // runsv: start `run` again whenever it exits, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let (stop2, run2, logs) = (Arc::clone(&stop), run.clone(), dir.path().to_owned());
    let supervisor = thread::spawn(move || {
        // Each start logs to a file of its own; the last one is killed and
        // reaped when `service` is dropped.
        let mut service: Option<Spawned> = None;
        let mut starts = 0;
        let started = Instant::now();
        while !stop2.load(Ordering::SeqCst) && started.elapsed() < SAFETY_NET {
            if !service.as_mut().is_some_and(Spawned::is_running) {
                starts += 1;
                service = Some(Spawned::start(
                    Command::new(&run2).env_clear().env("PATH", "/usr/bin:/bin"),
                    &logs.join(format!("run-{starts}.log")),
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    });

    thread::sleep(Duration::from_secs(2));
    assert!(passes_recorded(&record).is_empty(), "a pass without a push");
    let (headers, body) = push(Forge::GitHub, "refs/heads/main", SECRET);
    assert_eq!(rx.send(&headers, &body).status, 202);
    assert!(
        poll_until(|| passes_recorded(&record).len() == 1),
        "no pass after the push:\n{}",
        rx.log()
    );
    let recorded = passes_recorded(&record);
    assert_eq!(
        recorded[0],
        format!(
            "pass --config {} trigger={}",
            config.display(),
            rx.trigger.display()
        )
    );
    assert!(poll_until(|| !rx.trigger.exists()));
    thread::sleep(Duration::from_secs(3));
    assert_eq!(passes_recorded(&record).len(), 1, "passes without pushes");
    stop.store(true, Ordering::SeqCst);
    supervisor.join().unwrap();
}

/// The cron entry of docs/receive.md, its command run with /bin/sh as cron
/// runs it (nothing inherited but the file's SHELL= and PATH=): without a
/// trigger it does nothing; after a push it runs one pass, which removes
/// the trigger. Substitutions as above, and `logger -t gitops-run` becomes
/// `cat` (no syslog here).
#[test]
fn the_documented_cron_trigger_check_runs_a_pass_only_after_a_push() {
    let rx = Rx::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let (pass, record) = fake_pass(dir.path());
    let config = dir.path().join("config");
    let block = documented_block("trigger-cron");
    let mut path_var = None;
    let mut entry = None;
    for line in block.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(v) = line.strip_prefix("PATH=") {
            path_var = Some(v.to_owned());
        } else if line.starts_with("SHELL=") {
            assert_eq!(line, "SHELL=/bin/sh");
        } else {
            assert!(entry.is_none(), "one entry expected:\n{block}");
            entry = Some(line.to_owned());
        }
    }
    let entry = entry.expect("a cron entry");
    let fields: Vec<&str> = entry.splitn(7, ' ').collect();
    assert_eq!(fields.len(), 7, "five times, a user, a command: {entry}");
    assert_eq!(&fields[..6], &["*", "*", "*", "*", "*", "root"]);
    let command = fields[6]
        .replace(DOC_TRIGGER, rx.trigger.to_str().unwrap())
        .replace(DOC_BINARY, pass.to_str().unwrap())
        .replace(DOC_CONFIG, config.to_str().unwrap())
        .replace("logger -t gitops-run", "cat");
    assert!(!command.contains('%'), "cron would cut the line at %");
    let cron_run = || {
        run(Command::new("/bin/sh")
            .arg("-c")
            .arg(&command)
            .env_clear()
            .env("PATH", path_var.as_deref().expect("PATH= in the cron file"))
            .env("SHELL", "/bin/sh"))
    };

    cron_run();
    assert!(
        passes_recorded(&record).is_empty(),
        "a pass without a trigger"
    );
    let (headers, body) = push(Forge::GitLab, "refs/heads/main", SECRET);
    assert_eq!(rx.send(&headers, &body).status, 202);
    assert!(poll_until(|| rx.trigger.is_file()));
    cron_run();
    assert_eq!(
        passes_recorded(&record),
        vec![format!(
            "pass --config {} trigger={}",
            config.display(),
            rx.trigger.display()
        )]
    );
    assert!(!rx.trigger.exists(), "the pass removes the trigger");
    cron_run();
    assert_eq!(passes_recorded(&record).len(), 1);
}

// ---------------------------------------------------------------------------
// The shipped units
// ---------------------------------------------------------------------------

const RECEIVER_UNITS: &[&str] = &[
    "gitops-run-receiver.socket",
    "gitops-run-receiver.service",
    "gitops-run-trigger.path",
];
/// The units the receiver's refer to, installed beside them.
const OTHER_UNITS: &[&str] = &["gitops-run.service", "gitops-run.timer"];
const EXPOSURE_LIMIT: f64 = 2.0;

/// A root with `units` (name, text) and the built binary installed.
fn unit_root(units: &[(&str, String)]) -> UnitRoot {
    let root = UnitRoot::bare();
    for (name, text) in units {
        root.add_unit(name, text);
    }
    root.add_binary();
    root
}

fn shipped_units() -> Vec<(&'static str, String)> {
    RECEIVER_UNITS
        .iter()
        .chain(OTHER_UNITS)
        .map(|n| (*n, read_unit(n)))
        .collect()
}

#[test]
fn receiver_units_pass_systemd_analyze_verify() {
    let root = unit_root(&shipped_units());
    for unit in RECEIVER_UNITS {
        let out = root.verify(unit);
        let all = out.all_output();
        assert!(out.success(), "verify {unit}:\n{all}");
        assert!(
            complaints(&all).is_empty(),
            "verify {unit} complained:\n{all}"
        );
    }
    // The check can fail: an unknown key in the service is reported.
    let mut units = shipped_units();
    for (name, text) in units.iter_mut() {
        if *name == "gitops-run-receiver.service" {
            *text = text.replacen("[Service]\n", "[Service]\nFrobnicate=yes\n", 1);
        }
    }
    let root = unit_root(&units);
    let out = root.verify("gitops-run-receiver.service");
    assert!(
        !out.success() && out.all_output().contains("Frobnicate"),
        "{out}"
    );
}

#[test]
fn receiver_service_exposure_is_below_two() {
    let root = unit_root(&shipped_units());
    let (score, all) = root.exposure("gitops-run-receiver.service");
    assert!(
        score < EXPOSURE_LIMIT,
        "exposure {score} of gitops-run-receiver.service is not below {EXPOSURE_LIMIT}:\n{all}"
    );
    // The limit means something: the same service without its sandbox lines
    // (ExecStart=, the credential and the runtime directory only) is rated
    // far above it.
    let service = read_unit("gitops-run-receiver.service");
    let bare: String = service
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            l.starts_with('#')
                || l.starts_with('[')
                || l.is_empty()
                || [
                    "Description=",
                    "Documentation=",
                    "Requires=",
                    "ExecStart=",
                    "LoadCredential=",
                    "RuntimeDirectory=",
                ]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let root = unit_root(&[("gitops-run-receiver.service", bare)]);
    let (bare_score, all) = root.exposure("gitops-run-receiver.service");
    assert!(bare_score > EXPOSURE_LIMIT * 2.0, "{all}");
}

/// The units agree with each other and with the binary: the path unit
/// watches the file the receiver writes by default, inside the runtime
/// directory systemd creates for it, and starts the pass; the service reads
/// the credential the binary looks for; the socket is passed as one
/// listening socket.
#[test]
fn receiver_units_agree_with_each_other_and_the_binary() {
    let socket = read_unit("gitops-run-receiver.socket");
    let service = read_unit("gitops-run-receiver.service");
    let path = read_unit("gitops-run-trigger.path");

    assert_eq!(unit_value(&socket, "Socket", "Accept"), "no");
    let listen = unit_value(&socket, "Socket", "ListenStream");
    assert!(
        listen.starts_with("127.0.0.1:"),
        "loopback by default: {listen}"
    );
    assert_eq!(
        unit_value(&socket, "Install", "Also"),
        "gitops-run-trigger.path"
    );

    assert_eq!(
        unit_value(&service, "Service", "ExecStart"),
        "/usr/bin/gitops-run receive"
    );
    assert_eq!(unit_value(&service, "Service", "DynamicUser"), "yes");
    assert_eq!(
        unit_value(&service, "Service", "LoadCredential"),
        "receiver-secret:/etc/gitops-run/receiver-secret"
    );
    let runtime = unit_value(&service, "Service", "RuntimeDirectory");
    let trigger = unit_value(&path, "Path", "PathExists");
    // systemd sets $RUNTIME_DIRECTORY to /run/<RuntimeDirectory=>; the
    // receiver writes `trigger` there, and falls back to the same path.
    assert_eq!(trigger, format!("/run/{runtime}/trigger"));
    assert_eq!(
        help_default(&["receive"], "--trigger-file"),
        format!("$RUNTIME_DIRECTORY/trigger (its first directory), else {trigger}")
    );
    // Kept across the receiver's idle exits, so that a trigger written
    // during a long pass is not removed with it.
    assert_eq!(
        unit_value(&service, "Service", "RuntimeDirectoryPreserve"),
        "yes"
    );
    assert_eq!(unit_value(&path, "Path", "Unit"), "gitops-run.service");
    assert!(Path::new(UNITS_DIR).join("gitops-run.service").is_file());
    // Skipped like the service it starts when there is no config.
    assert_eq!(
        unit_value(&path, "Unit", "ConditionPathExists"),
        unit_value(
            &read_unit("gitops-run.service"),
            "Unit",
            "ConditionPathExists"
        )
    );
    // The documented port is the shipped one.
    let doc = fs::read_to_string(RECEIVE_MD).unwrap();
    assert!(
        doc.contains(&listen),
        "docs/receive.md should name {listen}"
    );
}
