//! Notifications: which events of a pass are worth a message (and which repeat a
//! failure already reported), how each format renders them, and delivery over HTTP
//! with bounded retries. Nothing here can change the outcome of a pass.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::log::{debug, info, short};

/// Discord's limit for `content`, in UTF-16 code units as its API counts them.
pub const DISCORD_CONTENT_MAX: usize = 2000;
/// Discord's limit for `username`.
pub const DISCORD_USERNAME_MAX: usize = 80;
/// The largest log attached to a Discord message; longer logs keep their end.
pub const MAX_ATTACHMENT_BYTES: usize = 1024 * 1024;
/// Lines of the log tail shown inside a message.
pub const LOG_TAIL_LINES: usize = 20;
/// Commit subjects listed in a message; more are summarised as "and N more".
pub const MAX_SUBJECTS: usize = 10;
/// Slack messages are cut to this many characters.
pub const SLACK_TEXT_MAX: usize = 3000;
/// Delivery attempts for one message (429, 5xx and connection errors are retried).
pub const MAX_ATTEMPTS: u32 = 3;
/// Wait before the second and third attempt after a 5xx or connection error.
pub const RETRY_DELAY_MS: [u64; 2] = [1000, 3000];
/// Longest `retry_after` honoured for a 429; a longer one gives up.
pub const MAX_RETRY_AFTER_SECS: f64 = 10.0;
/// Time allowed to connect to the webhook's host.
pub const CONNECT_TIMEOUT_SECS: u64 = 5;
/// Header carrying the HMAC-SHA256 of the body when a secret is configured.
pub const SIGNATURE_HEADER: &str = "X-Gitops-Run-Signature-256";
/// Header naming the event.
pub const EVENT_HEADER: &str = "X-Gitops-Run-Event";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Discord,
    Slack,
    Json,
}

/// Where and how to send.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub format: Format,
    pub secret: Option<Vec<u8>>,
    /// Total time for one HTTP request.
    pub timeout: Duration,
    /// How often a failure that persists is reported again.
    pub reminder: Duration,
}

/// Name of the systemd credential that may hold the webhook URL.
pub const CREDENTIAL_NAME: &str = "webhook-url";

/// Work out the webhook from the options: `--webhook-url`, else `--webhook-url-file`,
/// else the systemd credential `webhook-url` in `$CREDENTIALS_DIRECTORY`. A webhook
/// that is configured but unusable is reported and disables notifications; it never
/// stops a pass.
pub fn resolve(
    url: Option<String>,
    url_file: Option<&Path>,
    credentials_dir: Option<&Path>,
    secret_file: Option<&Path>,
    format: Format,
    timeout: Duration,
    reminder: Duration,
) -> Option<Target> {
    let read = |p: &Path, what: &str| match std::fs::read_to_string(p) {
        Ok(t) => Some(t.trim().to_string()),
        Err(e) => {
            info!(
                "warning: cannot read the {what} {}: {e}; notifications are off",
                p.display()
            );
            None
        }
    };
    let url = match (url, url_file) {
        (Some(u), _) => u.trim().to_string(),
        (None, Some(f)) => read(f, "webhook URL file")?,
        (None, None) => {
            let cred = credentials_dir?.join(CREDENTIAL_NAME);
            if !cred.exists() {
                return None;
            }
            read(&cred, "systemd credential")?
        }
    };
    if url.is_empty() {
        return None;
    }
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        info!(
            "warning: the webhook URL {} is not http(s); notifications are off",
            redact_url(&url)
        );
        return None;
    }
    let secret = match secret_file {
        Some(f) => Some(read(f, "webhook secret file")?.into_bytes()),
        None => None,
    };
    if secret.as_ref().is_some_and(|s| s.is_empty()) {
        info!("warning: the webhook secret file is empty; notifications are off");
        return None;
    }
    Some(Target {
        url,
        format,
        secret,
        timeout,
        reminder,
    })
}

/// Parts of a webhook URL that must never be printed (its path and query carry tokens).
pub fn secrets_of(url: &str) -> Vec<String> {
    let mut out = vec![url.to_string()];
    if let Some((_, rest)) = url.split_once("://") {
        if let Some(slash) = rest.find('/') {
            let path = &rest[slash..];
            if path.len() > 1 {
                out.push(path.to_string());
            }
        }
    }
    out
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Applied,
    Recovered,
    Failed,
    InvalidEntrypoint,
    Refused,
    Error,
    RebootScheduled,
    Rebooting,
    RebootMissed,
    RebootInvalid,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Applied => "applied",
            Kind::Recovered => "recovered",
            Kind::Failed => "failed",
            Kind::InvalidEntrypoint => "invalid-entrypoint",
            Kind::Refused => "refused",
            Kind::Error => "error",
            Kind::RebootScheduled => "reboot-scheduled",
            Kind::Rebooting => "rebooting",
            Kind::RebootMissed => "reboot-missed",
            Kind::RebootInvalid => "reboot-invalid",
        }
    }

    fn icon(self) -> &'static str {
        match self {
            Kind::Applied | Kind::Recovered => "✅",
            Kind::Failed | Kind::InvalidEntrypoint | Kind::Error | Kind::RebootInvalid => "❌",
            Kind::Refused | Kind::RebootMissed => "⚠️",
            Kind::RebootScheduled | Kind::Rebooting => "🔄",
        }
    }
}

/// A commit listed in a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommitLine {
    pub id: String,
    pub subject: String,
}

/// One message's facts, whatever the format.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub event: Kind,
    /// True when this repeats a failure reported before.
    pub reminder: bool,
    pub host: String,
    pub repo: String,
    pub branch: String,
    pub previous_commit: Option<String>,
    pub commit: Option<String>,
    /// New commits, newest first, at most `MAX_SUBJECTS`.
    pub commits: Vec<CommitLine>,
    /// How many more new commits there are beyond `commits`.
    pub commits_omitted: usize,
    pub result: String,
    pub reason: String,
    pub summary: String,
    pub duration_ms: u64,
    pub exit_code: u8,
    pub log_tail: String,
    #[serde(skip)]
    pub log_path: Option<PathBuf>,
    pub at: DateTime<Utc>,
}

/// A failure being reported, remembered between passes so it is not repeated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub key: String,
    pub since: DateTime<Utc>,
    pub last_sent: Option<DateTime<Utc>>,
    /// Passes that saw this failure.
    pub passes: u32,
}

/// Notification memory in `state.json`: open alerts by channel (`deploy`, `reboot`),
/// and counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyState {
    #[serde(default)]
    pub alerts: BTreeMap<String, Alert>,
    #[serde(default)]
    pub sent: u64,
    #[serde(default)]
    pub failed: u64,
    #[serde(default)]
    pub suppressed: u64,
}

/// What the pass found, as far as messages go, on one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// Nothing happened on this channel (up to date, no reboot request).
    Quiet,
    /// A good event (applied, reboot scheduled...): always sent; clears an alert.
    Good(Kind),
    /// A failure identified by `key`; repeats are reported at the reminder interval.
    Bad(Kind, String),
}

/// The decision for one channel: which kind to send (if any), whether it is a
/// reminder, and the alert to remember. Pure; time is a parameter.
pub fn gate(
    alert: Option<&Alert>,
    signal: &Signal,
    now: DateTime<Utc>,
    reminder: Duration,
) -> (Option<(Kind, bool)>, Option<Alert>) {
    let reminder = chrono::Duration::from_std(reminder).unwrap_or(chrono::Duration::MAX);
    match (signal, alert) {
        (Signal::Quiet, None) => (None, None),
        // The failure is gone and nothing new happened: say so once.
        (Signal::Quiet, Some(_)) => (Some((Kind::Recovered, false)), None),
        (Signal::Good(kind), Some(_)) if *kind == Kind::Applied => {
            (Some((Kind::Recovered, false)), None)
        }
        (Signal::Good(kind), _) => (Some((*kind, false)), None),
        (Signal::Bad(kind, key), Some(a)) if a.key == *key => {
            let due = a.last_sent.is_none_or(|t| now - t >= reminder);
            let next = Alert {
                key: key.clone(),
                since: a.since,
                last_sent: if due { Some(now) } else { a.last_sent },
                passes: a.passes.saturating_add(1),
            };
            (due.then_some((*kind, true)), Some(next))
        }
        (Signal::Bad(kind, key), _) => (
            Some((*kind, false)),
            Some(Alert {
                key: key.clone(),
                since: now,
                last_sent: Some(now),
                passes: 1,
            }),
        ),
    }
}

/// The last `lines` lines of the log at `path`, reading only its end.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let bytes = read_end(path, 64 * 1024);
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn read_end(path: &Path, max: usize) -> Vec<u8> {
    use std::io::{Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max as u64);
    let _ = f.seek(SeekFrom::Start(start));
    let mut buf = Vec::new();
    let _ = f.take(max as u64).read_to_end(&mut buf);
    if start > 0 {
        // Drop the partial first line.
        if let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            buf.drain(..=nl);
        }
    }
    buf
}

fn utf16_len(s: &str) -> usize {
    s.encode_utf16().count()
}

/// Keep the end of `text` within `max` UTF-16 units, cutting at a line boundary
/// when there is one, so the newest output survives.
fn keep_end(text: &str, max: usize) -> String {
    if utf16_len(text) <= max {
        return text.to_string();
    }
    let mut used = 0;
    let mut start = text.len();
    for (i, c) in text.char_indices().rev() {
        used += c.len_utf16();
        if used > max {
            break;
        }
        start = i;
    }
    let kept = &text[start..];
    if text[..start].ends_with('\n') {
        return kept.to_string();
    }
    match kept.find('\n') {
        Some(nl) if nl + 1 < kept.len() => kept[nl + 1..].to_string(),
        _ => kept.to_string(),
    }
}

/// The message text shared by Discord and Slack, without the log.
fn headline(e: &Event) -> String {
    let mut out = Vec::new();
    let prefix = if e.reminder { "still failing: " } else { "" };
    out.push(format!(
        "{} **{}**: {prefix}{}",
        e.event.icon(),
        e.host,
        e.summary
    ));
    let mut facts = format!("repo {} · branch {}", e.repo, e.branch);
    match (&e.previous_commit, &e.commit) {
        (Some(p), Some(c)) if p != c => {
            facts.push_str(&format!(" · `{}` → `{}`", short(p), short(c)))
        }
        (None, Some(c)) => facts.push_str(&format!(" · `{}`", short(c))),
        _ => {}
    }
    out.push(facts);
    out.push(format!(
        "result {} · reason {} · exit {} · took {:.1}s",
        e.result,
        e.reason,
        e.exit_code,
        e.duration_ms as f64 / 1000.0
    ));
    for c in &e.commits {
        out.push(format!("• `{}` {}", short(&c.id), c.subject));
    }
    if e.commits_omitted > 0 {
        out.push(format!("• and {} more", e.commits_omitted));
    }
    out.join("\n")
}

/// A log excerpt safe inside a code block: no fence can be closed from inside.
fn fence_safe(log: &str) -> String {
    log.replace("```", "'''")
}

/// Discord `content`: the headline and as much of the log tail as fits, within
/// 2000 UTF-16 units, with the code block always closed.
pub fn discord_content(e: &Event) -> String {
    let head = keep_start(&headline(e), DISCORD_CONTENT_MAX);
    let tail = fence_safe(&e.log_tail);
    if tail.trim().is_empty() {
        return head;
    }
    let wrapper = "\n```\n\n```";
    let room = DISCORD_CONTENT_MAX.saturating_sub(utf16_len(&head) + utf16_len(wrapper));
    if room < 40 {
        return head;
    }
    format!("{head}\n```\n{}\n```", keep_end(&tail, room))
}

fn keep_start(text: &str, max: usize) -> String {
    if utf16_len(text) <= max {
        return text.to_string();
    }
    let mut used = 0;
    let mut end = 0;
    for (i, c) in text.char_indices() {
        used += c.len_utf16();
        if used > max.saturating_sub(1) {
            break;
        }
        end = i + c.len_utf8();
    }
    format!("{}…", &text[..end])
}

pub fn discord_payload(e: &Event, with_file: bool) -> serde_json::Value {
    let mut username = format!("gitops-run on {}", e.host);
    if username.chars().count() > DISCORD_USERNAME_MAX {
        username = username.chars().take(DISCORD_USERNAME_MAX).collect();
    }
    let mut v = serde_json::json!({
        "username": username,
        "content": discord_content(e),
        "allowed_mentions": { "parse": [] },
    });
    if with_file {
        v["attachments"] = serde_json::json!([{ "id": 0, "filename": "gitops-run.log" }]);
    }
    v
}

pub fn slack_payload(e: &Event) -> serde_json::Value {
    let head = headline(e).replace("**", "*");
    let tail = fence_safe(&e.log_tail);
    let text = if tail.trim().is_empty() {
        keep_start(&head, SLACK_TEXT_MAX)
    } else {
        let room = SLACK_TEXT_MAX.saturating_sub(utf16_len(&head) + 10);
        format!("{head}\n```\n{}\n```", keep_end(&tail, room))
    };
    serde_json::json!({ "text": text })
}

pub fn json_payload(e: &Event) -> serde_json::Value {
    let mut v = serde_json::to_value(e).unwrap_or_default();
    v["schema"] = serde_json::json!(1);
    v
}

/// A request body and its content type.
pub struct Body {
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// Encode a Discord message: multipart/form-data with `payload_json` and, when a log
/// exists, its end (at most `MAX_ATTACHMENT_BYTES`) as `files[0]`.
pub fn discord_body(e: &Event, with_file: bool, boundary: &str) -> Body {
    let log = match (&e.log_path, with_file) {
        (Some(p), true) => Some(read_end(p, MAX_ATTACHMENT_BYTES)),
        _ => None,
    };
    let payload = discord_payload(e, log.is_some());
    let mut b = Vec::new();
    b.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
    b.extend_from_slice(b"Content-Disposition: form-data; name=\"payload_json\"\r\n");
    b.extend_from_slice(b"Content-Type: application/json\r\n\r\n");
    b.extend_from_slice(payload.to_string().as_bytes());
    b.extend_from_slice(b"\r\n");
    if let Some(log) = log {
        b.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        b.extend_from_slice(
            b"Content-Disposition: form-data; name=\"files[0]\"; filename=\"gitops-run.log\"\r\n",
        );
        b.extend_from_slice(b"Content-Type: text/plain; charset=utf-8\r\n\r\n");
        b.extend_from_slice(&log);
        b.extend_from_slice(b"\r\n");
    }
    b.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    Body {
        content_type: format!("multipart/form-data; boundary={boundary}"),
        bytes: b,
    }
}

pub fn body(target: &Target, e: &Event, with_file: bool) -> Body {
    match target.format {
        Format::Discord => discord_body(e, with_file, &boundary_for(e)),
        Format::Slack => json_body(slack_payload(e)),
        Format::Json => json_body(json_payload(e)),
    }
}

fn json_body(v: serde_json::Value) -> Body {
    Body {
        content_type: "application/json".into(),
        bytes: v.to_string().into_bytes(),
    }
}

/// A boundary that cannot occur in the parts: derived from the time and pid, and
/// long enough that a log containing it by chance is not a practical concern.
fn boundary_for(e: &Event) -> String {
    format!(
        "gitops-run-{:x}-{:x}-{:x}",
        e.at.timestamp_nanos_opt().unwrap_or_default(),
        std::process::id(),
        e.log_tail.len()
    )
}

/// `sha256=<hex>` of HMAC-SHA256 over `body` with `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Scheme and host of a URL: enough to recognise it in a log, never its token.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.split(['/', '?', '#']).next().unwrap_or("");
            let host = host.rsplit('@').next().unwrap_or(host);
            format!("{scheme}://{host}/…")
        }
        None => "(invalid URL)".into(),
    }
}

/// How one delivery attempt ended.
enum Attempt {
    Delivered,
    RetryAfter(f64),
    Retry(String),
    TooLarge,
    GiveUp(String),
}

/// Send `e`. Returns whether it was delivered; failures are logged, never raised.
pub fn send(target: &Target, e: &Event) -> bool {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(CONNECT_TIMEOUT_SECS)))
        .timeout_global(Some(target.timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(concat!("gitops-run/", env!("CARGO_PKG_VERSION")))
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::PlatformVerifier)
                .build(),
        )
        .build()
        .into();
    let shown = redact_url(&target.url);
    let mut with_file = true;
    let mut attempt = 1;
    loop {
        let body = body(target, e, with_file);
        let outcome = post(&agent, target, e, &body);
        let last = attempt >= MAX_ATTEMPTS;
        match outcome {
            Attempt::Delivered => {
                debug!("notification {} delivered to {shown}", e.event.as_str());
                return true;
            }
            Attempt::TooLarge if with_file => {
                info!("notification to {shown} was too large (413); sending it again without the log attachment");
                with_file = false;
                continue;
            }
            Attempt::TooLarge => {
                info!("notification to {shown} failed: 413 even without the attachment; giving up");
                return false;
            }
            Attempt::RetryAfter(secs) if !last && secs <= MAX_RETRY_AFTER_SECS => {
                debug!("rate limited by {shown}; retrying in {secs:.1}s");
                std::thread::sleep(Duration::from_secs_f64(secs.max(0.0)));
            }
            Attempt::RetryAfter(secs) => {
                info!("notification to {shown} failed: rate limited (retry after {secs:.1}s); giving up");
                return false;
            }
            Attempt::Retry(why) if !last => {
                let wait = RETRY_DELAY_MS[(attempt as usize - 1).min(RETRY_DELAY_MS.len() - 1)];
                debug!("notification to {shown} failed ({why}); retrying in {wait} ms");
                std::thread::sleep(Duration::from_millis(wait));
            }
            Attempt::Retry(why) | Attempt::GiveUp(why) => {
                info!("notification to {shown} failed: {why}; giving up (the pass's result is unaffected)");
                return false;
            }
        }
        attempt += 1;
    }
}

fn post(agent: &ureq::Agent, target: &Target, e: &Event, body: &Body) -> Attempt {
    let mut req = agent
        .post(&target.url)
        .header("Content-Type", &body.content_type)
        .header(EVENT_HEADER, e.event.as_str());
    if let Some(secret) = &target.secret {
        req = req.header(SIGNATURE_HEADER, &signature(secret, &body.bytes));
    }
    match req.send(&body.bytes[..]) {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            match status {
                200..=299 => Attempt::Delivered,
                413 => Attempt::TooLarge,
                429 => {
                    let header = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<f64>().ok());
                    let text = resp.body_mut().read_to_string().unwrap_or_default();
                    let body = serde_json::from_str::<serde_json::Value>(&text)
                        .ok()
                        .and_then(|v| v.get("retry_after").and_then(|r| r.as_f64()));
                    Attempt::RetryAfter(body.or(header).unwrap_or(1.0))
                }
                500..=599 => Attempt::Retry(format!("HTTP {status}")),
                _ => Attempt::GiveUp(format!("HTTP {status}")),
            }
        }
        Err(err) => Attempt::Retry(crate::log::scrub(&err.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(mins: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000, 0).unwrap() + chrono::Duration::minutes(mins)
    }

    const H6: Duration = Duration::from_secs(6 * 3600);

    fn bad(key: &str) -> Signal {
        Signal::Bad(Kind::Failed, key.into())
    }

    #[test]
    fn quiet_passes_send_nothing() {
        assert_eq!(gate(None, &Signal::Quiet, t(0), H6), (None, None));
    }

    #[test]
    fn first_failure_is_sent_repeats_wait_for_the_reminder() {
        let (send, alert) = gate(None, &bad("failed:a"), t(0), H6);
        assert_eq!(send, Some((Kind::Failed, false)));
        let alert = alert.unwrap();
        let (send, alert2) = gate(Some(&alert), &bad("failed:a"), t(5), H6);
        assert_eq!(send, None);
        let alert2 = alert2.unwrap();
        assert_eq!((alert2.passes, alert2.last_sent), (2, Some(t(0))));
        let (send, alert3) = gate(Some(&alert2), &bad("failed:a"), t(360), H6);
        assert_eq!(send, Some((Kind::Failed, true)), "reminder after 6h");
        assert_eq!(alert3.unwrap().last_sent, Some(t(360)));
    }

    #[test]
    fn a_different_failure_is_sent_at_once() {
        let (_, alert) = gate(None, &bad("failed:a"), t(0), H6);
        let (send, alert) = gate(alert.as_ref(), &bad("failed:b"), t(1), H6);
        assert_eq!(send, Some((Kind::Failed, false)));
        assert_eq!(alert.unwrap().since, t(1));
    }

    #[test]
    fn success_after_failure_is_a_recovery_and_clears_the_alert() {
        let (_, alert) = gate(None, &bad("failed:a"), t(0), H6);
        assert_eq!(
            gate(alert.as_ref(), &Signal::Good(Kind::Applied), t(1), H6),
            (Some((Kind::Recovered, false)), None)
        );
        assert_eq!(
            gate(alert.as_ref(), &Signal::Quiet, t(1), H6),
            (Some((Kind::Recovered, false)), None)
        );
        assert_eq!(
            gate(None, &Signal::Good(Kind::Applied), t(1), H6),
            (Some((Kind::Applied, false)), None)
        );
        // A good reboot event does not claim the deploy channel recovered.
        assert_eq!(
            gate(
                alert.as_ref(),
                &Signal::Good(Kind::RebootScheduled),
                t(1),
                H6
            ),
            (Some((Kind::RebootScheduled, false)), None)
        );
    }

    fn event(tail: &str) -> Event {
        Event {
            event: Kind::Failed,
            reminder: false,
            host: "web-01".into(),
            repo: "https://***@git.example.com/ops.git".into(),
            branch: "main".into(),
            previous_commit: Some("a".repeat(40)),
            commit: Some("b".repeat(40)),
            commits: vec![CommitLine {
                id: "b".repeat(40),
                subject: "Fix @everyone things".into(),
            }],
            commits_omitted: 3,
            result: "failed".into(),
            reason: "new".into(),
            summary: "run.sh failed".into(),
            duration_ms: 1234,
            exit_code: 5,
            log_tail: tail.into(),
            log_path: None,
            at: t(0),
        }
    }

    #[test]
    fn discord_content_fits_and_keeps_the_fence_closed() {
        let long: String = (0..500)
            .map(|i| format!("line {i} ```not a fence``` ünïcödé 🚀\n"))
            .collect();
        let c = discord_content(&event(&long));
        assert!(utf16_len(&c) <= DISCORD_CONTENT_MAX, "{}", utf16_len(&c));
        assert!(c.ends_with("\n```"));
        assert_eq!(
            c.matches("```").count(),
            2,
            "exactly one opened and closed fence"
        );
        assert!(c.contains("line 499"), "the newest output is kept");
        assert!(c.contains("web-01") && c.contains("and 3 more"));
    }

    #[test]
    fn discord_payload_pings_nobody() {
        let p = discord_payload(&event("@everyone @here"), false);
        assert_eq!(p["allowed_mentions"]["parse"], serde_json::json!([]));
        assert!(p["username"].as_str().unwrap().chars().count() <= DISCORD_USERNAME_MAX);
    }

    #[test]
    fn multipart_body_has_payload_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        std::fs::write(&log, "hello\nworld\n").unwrap();
        let mut e = event("world");
        e.log_path = Some(log);
        let b = discord_body(&e, true, "BOUND");
        let text = String::from_utf8(b.bytes).unwrap();
        assert!(text
            .starts_with("--BOUND\r\nContent-Disposition: form-data; name=\"payload_json\"\r\n"));
        assert!(text.contains("name=\"files[0]\"; filename=\"gitops-run.log\"\r\n"));
        assert!(text.contains("\r\n\r\nhello\nworld\n\r\n--BOUND--\r\n"));
        assert_eq!(b.content_type, "multipart/form-data; boundary=BOUND");
    }

    #[test]
    fn signature_matches_a_known_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn redacted_url_keeps_scheme_and_host_only() {
        assert_eq!(
            redact_url("https://discord.com/api/webhooks/123/s3cr3t"),
            "https://discord.com/…"
        );
        assert_eq!(
            redact_url("http://user:pw@127.0.0.1:8080/hook?token=x"),
            "http://127.0.0.1:8080/…"
        );
    }

    #[test]
    fn keep_end_cuts_at_a_line_boundary() {
        assert_eq!(keep_end("aaa\nbbb\nccc", 7), "bbb\nccc");
        assert_eq!(keep_end("short", 100), "short");
    }
}
