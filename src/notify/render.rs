//! Rendering an event as a Discord message (multipart with the log attached), a
//! Slack message or a JSON document, within each service's limits.

use std::io::Read;
use std::path::Path;

use super::{Event, Format, Target};
use crate::decide::Kind;
use crate::log::short;

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
        icon(e.event),
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
    if let Some(s) = &e.signed_by {
        out.push(s.clone());
    }
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

fn icon(kind: Kind) -> &'static str {
    match kind {
        Kind::Applied | Kind::Recovered => "✅",
        Kind::Failed
        | Kind::InvalidEntrypoint
        | Kind::Error
        | Kind::RebootInvalid
        | Kind::RebootFailed
        | Kind::Unhealthy
        | Kind::ReconcileFailed => "❌",
        Kind::RollbackFailed => "🚨",
        Kind::DriftCorrected => "🔧",
        Kind::Refused | Kind::RebootMissed => "⚠️",
        Kind::Unverified => "⛔",
        Kind::RebootScheduled | Kind::Rebooting => "🔄",
        Kind::Frozen => "🧊",
        Kind::Unfrozen => "▶️",
        Kind::RolledBack => "⏪",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::git::CommitLine;
    use chrono::{DateTime, TimeZone, Utc};

    fn t(mins: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000, 0).unwrap() + chrono::Duration::minutes(mins)
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
            signed_by: None,
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
    fn keep_end_cuts_at_a_line_boundary() {
        assert_eq!(keep_end("aaa\nbbb\nccc", 7), "bbb\nccc");
        assert_eq!(keep_end("short", 100), "short");
    }
}
