//! Notifications end to end: the binary posts to a real HTTP receiver on 127.0.0.1.

use crate::common::{run, Host, Receiver, Recorded, Reply, Run};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::path::Path;
use std::thread;
use std::time::Duration;

const TOKEN: &str = "T0kenInThePathMustNeverBePrinted";
const OK: &str = "#!/bin/sh\necho deployed\n";
const FAIL: &str = "#!/bin/sh\necho 'something broke'\nexit 1\n";

/// A host whose origin's first commit holds the entrypoint `run_sh`.
fn host(run_sh: &str) -> Host {
    let mut host = Host::new();
    host.origin.commit(&[("run.sh", run_sh)], "first");
    host
}

/// One pass of `h` notifying `rx`, with a 2 s webhook timeout unless
/// `extra` sets one.
fn pass(h: &Host, rx: &Receiver, extra: &[&str]) -> Run {
    let url = rx.url(&format!("/api/webhooks/42/{TOKEN}"));
    let mut cmd = h.pass_cmd(&["--webhook-url", &url]);
    if !extra.contains(&"--webhook-timeout") {
        cmd.args(["--webhook-timeout", "2s"]);
    }
    run(cmd.args(extra))
}

fn payload(r: &Recorded) -> Value {
    let parts = r.multipart();
    let p = parts
        .iter()
        .find(|p| p.name == "payload_json")
        .expect("payload_json part");
    assert_eq!(p.content_type.as_deref(), Some("application/json"));
    p.json()
}

fn utf16(s: &str) -> usize {
    s.encode_utf16().count()
}

const WAIT: Duration = Duration::from_secs(5);

#[test]
fn discord_message_is_multipart_with_payload_and_log_within_limits() {
    // 100 KB of output with @everyone in it.
    let noisy = "#!/bin/sh\necho '@everyone look at this'\ni=0\nwhile [ $i -lt 2000 ]; do echo \"line $i: $(printf '%040d' $i)\"; i=$((i+1)); done\necho 'the very last line'\nexit 1\n";
    let h = host(noisy);
    let rx = Receiver::start(vec![]);
    let out = pass(&h, &rx, &[]);
    assert_eq!(out.code, Some(5), "{}", out.stderr);

    let reqs = rx.wait_for(1, WAIT);
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.header("x-gitops-run-event"), Some("failed"));
    let parts = r.multipart();
    assert_eq!(parts.len(), 2, "payload_json and files[0]");
    let p = payload(r);
    let content = p["content"].as_str().unwrap();
    assert!(utf16(content) <= 2000, "content is {} long", utf16(content));
    assert!(content.ends_with("```"), "code block closed: {content}");
    assert_eq!(content.matches("```").count(), 2);
    assert!(
        content.contains("the very last line"),
        "the newest log lines are kept"
    );
    assert!(content.contains(&h.origin.head()[..12]), "names the commit");
    assert_eq!(p["allowed_mentions"], serde_json::json!({ "parse": [] }));
    let user = p["username"].as_str().unwrap();
    assert!(!user.is_empty() && user.chars().count() <= 80);

    let file = parts
        .iter()
        .find(|p| p.name == "files[0]")
        .expect("files[0] part");
    assert_eq!(file.filename.as_deref(), Some("gitops-run.log"));
    let log = String::from_utf8_lossy(&file.body);
    assert!(
        file.body.len() > 90_000,
        "the whole log is attached: {}",
        file.body.len()
    );
    assert!(log.contains("@everyone look at this") && log.contains("the very last line"));
}

#[test]
fn rate_limit_is_honoured_then_delivered() {
    let h = host(OK);
    let rx = Receiver::start(vec![Reply::RateLimited {
        retry_after_secs: 0.5,
    }]);
    let out = pass(&h, &rx, &[]);
    assert!(out.success(), "{}", out.stderr);
    let reqs = rx.wait_for(2, WAIT);
    assert_eq!(reqs.len(), 2, "retried once after the 429");
    let waited = reqs[1].received_at - reqs[0].received_at;
    assert!(
        waited >= Duration::from_millis(450),
        "waited only {waited:?} of retry_after 0.5s"
    );
    assert_eq!(reqs[1].header("x-gitops-run-event"), Some("applied"));
}

#[test]
fn server_errors_are_retried_a_bounded_number_of_times() {
    // Two independent hosts; each spends seconds in the retry delays, so
    // they run side by side.
    thread::scope(|scope| {
        scope.spawn(|| {
            let h = host(OK);
            let rx = Receiver::start(vec![Reply::Status(500), Reply::Status(503)]);
            assert!(pass(&h, &rx, &[]).success());
            assert_eq!(
                rx.wait_for(3, WAIT).len(),
                3,
                "delivered on the third attempt"
            );
        });

        let mut h = host(OK);
        let rx = Receiver::start(vec![Reply::Status(500); 10]);
        assert!(pass(&h, &rx, &[]).success());
        h.origin.commit(&[("more.txt", "x")], "second");
        let out = pass(&h, &rx, &[]);
        assert!(
            out.success(),
            "a dead webhook never fails the pass: {}",
            out.stderr
        );
        assert_eq!(
            rx.requests().len(),
            6,
            "3 attempts per message, then give up"
        );
        let err = &out.stderr;
        assert!(err.contains("notification to http://127.0.0.1:"), "{err}");
        assert!(
            !err.contains(TOKEN),
            "the token in the URL is never printed: {err}"
        );
    });
}

#[test]
fn a_receiver_that_never_answers_does_not_hold_the_pass() {
    let h = host(OK);
    let rx = Receiver::start(vec![Reply::Hang, Reply::Hang, Reply::Hang]);
    let out = pass(&h, &rx, &["--webhook-timeout", "1s"]);
    assert!(out.success(), "{}", out.stderr);
    assert_eq!(rx.requests().len(), 3);
    assert!(out.stderr.contains("giving up"), "{}", out.stderr);
    assert!(
        h.state.path().join("current").exists(),
        "the deployment stands"
    );
}

#[test]
fn failures_are_sent_once_reminded_then_recovered_and_no_ops_are_silent() {
    let mut h = host(FAIL);
    let rx = Receiver::start(vec![]);
    let events = |rx: &Receiver| -> Vec<String> {
        rx.requests()
            .iter()
            .map(|r| {
                payload(r); // every message is a well-formed multipart body
                r.header("x-gitops-run-event").unwrap().to_string()
            })
            .collect()
    };

    assert_eq!(pass(&h, &rx, &[]).code, Some(5));
    assert_eq!(events(&rx), ["failed"]);
    // Waiting for the backoff, and a retry that fails the same way: not repeated.
    assert_eq!(pass(&h, &rx, &[]).code, Some(5));
    assert_eq!(pass(&h, &rx, &["--once"]).code, Some(5));
    assert_eq!(events(&rx), ["failed"]);
    // Once the reminder interval has passed, the same failure is reported again.
    assert_eq!(
        pass(&h, &rx, &["--once", "--webhook-reminder", "0s"]).code,
        Some(5)
    );
    assert_eq!(events(&rx), ["failed", "failed"]);
    let reminder = payload(&rx.requests()[1]);
    assert!(
        reminder["content"]
            .as_str()
            .unwrap()
            .contains("still failing"),
        "{reminder}"
    );
    // A fix: recovery.
    h.origin.commit(&[("run.sh", OK)], "fix");
    assert!(pass(&h, &rx, &[]).success());
    assert_eq!(events(&rx), ["failed", "failed", "recovered"]);
    // Nothing to do: nothing sent.
    assert!(pass(&h, &rx, &[]).success());
    assert!(pass(&h, &rx, &[]).success());
    assert_eq!(rx.requests().len(), 3);
}

#[test]
fn a_newer_failing_commit_is_a_new_failure_and_is_sent() {
    let mut h = host(FAIL);
    let rx = Receiver::start(vec![]);
    assert_eq!(pass(&h, &rx, &[]).code, Some(5));
    h.origin
        .commit(&[("run.sh", "#!/bin/sh\nexit 2\n")], "still broken");
    assert_eq!(pass(&h, &rx, &[]).code, Some(5));
    assert_eq!(rx.requests().len(), 2);
}

#[test]
fn signature_header_is_hmac_sha256_of_the_body() {
    let h = host(OK);
    let secret_file = h.state.dir().join("secret");
    std::fs::write(&secret_file, "sh4red-s3cret\n").unwrap();
    let rx = Receiver::start(vec![]);
    let out = pass(
        &h,
        &rx,
        &["--webhook-secret-file", secret_file.to_str().unwrap()],
    );
    assert!(out.success(), "{}", out.stderr);
    let r = &rx.wait_for(1, WAIT)[0];
    let mut mac = Hmac::<Sha256>::new_from_slice(b"sh4red-s3cret").unwrap();
    mac.update(&r.body);
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        r.header("x-gitops-run-signature-256"),
        Some(format!("sha256={want}").as_str())
    );

    // Without a secret there is no signature.
    let h2 = host(OK);
    let rx2 = Receiver::start(vec![]);
    assert!(pass(&h2, &rx2, &[]).success());
    assert_eq!(
        rx2.wait_for(1, WAIT)[0].header("x-gitops-run-signature-256"),
        None
    );
}

#[test]
fn slack_and_json_formats() {
    let h = host(FAIL);
    let rx = Receiver::start(vec![]);
    assert_eq!(pass(&h, &rx, &["--webhook-format", "slack"]).code, Some(5));
    let r = &rx.wait_for(1, WAIT)[0];
    assert_eq!(r.header("content-type"), Some("application/json"));
    let text = r.json()["text"].as_str().unwrap().to_string();
    assert!(
        text.contains("something broke") && text.contains("failed"),
        "{text}"
    );

    let mut h = host(OK);
    let first = h.origin.head();
    let quiet = Receiver::start(vec![]);
    assert!(pass(&h, &quiet, &[]).success());
    h.origin.commit(&[("a.txt", "a")], "second commit");
    h.origin.commit(&[("b.txt", "b")], "third commit");
    let rx = Receiver::start(vec![]);
    assert!(pass(&h, &rx, &["--webhook-format", "json"]).success());
    let v = rx.wait_for(1, WAIT)[0].json();
    assert_eq!(v["schema"], 1);
    assert_eq!(v["event"], "applied");
    assert_eq!(v["result"], "succeeded");
    assert_eq!(v["reason"], "new");
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["branch"], "main");
    assert_eq!(v["previous_commit"], first.as_str());
    assert_eq!(v["commit"], h.origin.head().as_str());
    let subjects: Vec<&str> = v["commits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["subject"].as_str().unwrap())
        .collect();
    assert_eq!(
        subjects,
        ["third commit", "second commit"],
        "new commits only, newest first"
    );
    assert!(v["log_tail"].as_str().unwrap().contains("deployed"));
    for field in [
        "host",
        "repo",
        "previous_commit",
        "summary",
        "duration_ms",
        "reminder",
        "at",
        "commits_omitted",
    ] {
        assert!(v.get(field).is_some(), "missing {field}: {v}");
    }
}

#[test]
fn url_comes_from_a_file_or_a_systemd_credential() {
    let h = host(OK);
    let rx = Receiver::start(vec![]);
    let url_file = h.state.dir().join("url");
    std::fs::write(
        &url_file,
        format!("{}\n", rx.url(&format!("/hook/{TOKEN}"))),
    )
    .unwrap();
    let pass_with = |args: &[&str], creds: Option<&Path>| {
        let mut cmd = h.pass_cmd(args);
        if let Some(c) = creds {
            cmd.env("CREDENTIALS_DIRECTORY", c);
        }
        run(&mut cmd)
    };
    pass_with(&["--webhook-url-file", url_file.to_str().unwrap()], None).assert_code(0);
    assert_eq!(rx.wait_for(1, WAIT).len(), 1);

    let mut h2 = host(OK);
    h2.origin.commit(&[], "empty");
    let creds = h.state.dir().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("webhook-url"), rx.url("/from-credential")).unwrap();
    run(h2.pass_cmd(&[]).env("CREDENTIALS_DIRECTORY", &creds)).assert_code(0);
    let reqs = rx.wait_for(2, WAIT);
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1].path, "/from-credential");
}

#[test]
fn unreadable_url_file_warns_and_the_pass_still_succeeds() {
    let h = host(OK);
    let out = h.pass(&["--webhook-url-file", "/nonexistent/webhook-url"]);
    assert!(out.success(), "{}", out.stderr);
    assert!(
        out.stderr.contains("notifications are off"),
        "{}",
        out.stderr
    );
}

#[test]
fn refusal_and_reboot_events_are_sent() {
    let mut h = host(OK);
    let rx = Receiver::start(vec![]);
    assert!(pass(&h, &rx, &[]).success());
    h.origin.amend("rewritten");
    assert_eq!(pass(&h, &rx, &[]).code, Some(4));
    let later = (chrono::Utc::now() + chrono::Duration::hours(3))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    // Undo the rewrite by deploying it, then schedule a reboot.
    assert!(pass(&h, &rx, &["--allow-rewrite"]).success());
    h.origin.commit(&[("reboot-at", &later)], "reboot later");
    assert!(pass(&h, &rx, &[]).success());
    let events: Vec<String> = rx
        .requests()
        .iter()
        .map(|r| r.header("x-gitops-run-event").unwrap().to_string())
        .collect();
    assert_eq!(
        events,
        [
            "applied",
            "refused",
            "recovered",
            "applied",
            "reboot-scheduled"
        ]
    );
}
