//! Output for people and the journal: phase lines and the summary on stderr,
//! detail only with `-v`. Every line passes through the redactor. When stderr is
//! the journal (a systemd service), lines go to journald over its native protocol
//! instead, with a priority and structured fields; the entrypoint's output takes
//! the same path, so the journal keeps every line in the order it was written.

use std::ffi::OsStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use crate::decide::outcome::Label;

static VERBOSE: AtomicBool = AtomicBool::new(false);
static SECRETS: OnceLock<Vec<String>> = OnceLock::new();

pub fn set_verbose(on: bool) {
    VERBOSE.store(on, Ordering::Relaxed);
}

pub fn verbose() -> bool {
    VERBOSE.load(Ordering::Relaxed)
}

/// Register strings that must never be printed (URL passwords and tokens).
/// Only the first call takes effect; it happens once, after the config is read.
pub fn set_secrets(secrets: Vec<String>) {
    let _ = SECRETS.set(secrets.into_iter().filter(|s| !s.is_empty()).collect());
}

/// Secrets at least this long are replaced wherever they occur; shorter ones only
/// where they stand as a word of their own, so a 3-letter password cannot turn
/// every word that contains it into `***`.
pub const SCRUB_ANYWHERE_MIN_CHARS: usize = 4;

/// Replace every registered secret in `text` with `***`, and the credentials of
/// any URL in it.
pub fn scrub(text: &str) -> String {
    let mut out = redact_url_credentials(text);
    if let Some(secrets) = SECRETS.get() {
        for s in secrets {
            out = if s.chars().count() >= SCRUB_ANYWHERE_MIN_CHARS {
                out.replace(s.as_str(), "***")
            } else {
                replace_word(&out, s)
            };
        }
    }
    out
}

/// `text` with each occurrence of `word` that is not part of a longer word
/// (letters, digits, `_`) replaced by `***`.
fn replace_word(text: &str, word: &str) -> String {
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(word) {
        let before = rest[..i].chars().next_back();
        let after = rest[i + word.len()..].chars().next();
        out.push_str(&rest[..i]);
        if before.is_some_and(is_word) || after.is_some_and(is_word) {
            out.push_str(word);
        } else {
            out.push_str("***");
        }
        rest = &rest[i + word.len()..];
    }
    out.push_str(rest);
    out
}

/// Remove the credentials of every URL in `text`, whoever registered them: the
/// whole user-info of an http(s) URL (tokens are often given as the user name),
/// the password of any other (`ssh://git:***@host`).
pub fn redact_url_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let scheme_start = rest[..i]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '+' || c == '-' || c == '.'))
            .map_or(0, |p| p + 1);
        let web = matches!(
            rest[scheme_start..i].to_ascii_lowercase().as_str(),
            "http" | "https"
        );
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let authority_end = tail
            .find(|c: char| {
                matches!(c, '/' | '?' | '#' | '"' | '\'' | '<' | '>') || c.is_whitespace()
            })
            .unwrap_or(tail.len());
        rest = match tail[..authority_end].rfind('@') {
            Some(at) if web && at > 0 => {
                out.push_str("***");
                &tail[at..]
            }
            Some(at) => match tail[..at].find(':') {
                Some(colon) => {
                    out.push_str(&tail[..=colon]);
                    out.push_str("***");
                    &tail[at..]
                }
                None => tail,
            },
            None => tail,
        };
    }
    out.push_str(rest);
    out
}

/// Write one line to stderr, or to the journal with the priority its prefix
/// gives (`gitops-run: error: ...`, `... warning: ...`). A closed or broken stderr
/// (a dead `logger` behind a cron pipe, `| head`) must never abort a pass
/// half-way, so errors are ignored.
pub fn emit(text: &str) {
    write(level_of(text), text, &[]);
}

/// How important a line is; its journal priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// err (3): what ends a pass or a command with an error.
    Error,
    /// warning (4): warnings, and the summary of a pass that did not succeed.
    Warning,
    /// notice (5): gitops-run's own lines.
    Notice,
    /// info (6): the entrypoint's output.
    Output,
    /// debug (7): `-v` detail.
    Debug,
}

impl Level {
    /// The syslog priority journald stores in `PRIORITY`: what
    /// systemd-journal-logger makes of [`Level::record_level`].
    #[cfg(test)]
    pub fn priority(self) -> u8 {
        match self {
            Level::Error => 3,
            Level::Warning => 4,
            Level::Notice => 5,
            Level::Output => 6,
            Level::Debug => 7,
        }
    }

    /// The `log` level systemd-journal-logger turns into this priority.
    fn record_level(self) -> ::log::Level {
        match self {
            Level::Error => ::log::Level::Error,
            Level::Warning => ::log::Level::Warn,
            Level::Notice => ::log::Level::Info,
            Level::Output => ::log::Level::Debug,
            Level::Debug => ::log::Level::Trace,
        }
    }
}

/// The level of a line from its prefix, for lines written with [`emit`].
fn level_of(text: &str) -> Level {
    let rest = text
        .split_once(": ")
        .filter(|(who, _)| who.starts_with("gitops-run"))
        .map_or(text, |(_, rest)| rest);
    if rest.starts_with("error:") {
        Level::Error
    } else if rest.starts_with("warning:") {
        Level::Warning
    } else if rest.starts_with("debug:") {
        Level::Debug
    } else {
        Level::Notice
    }
}

/// `SYSLOG_IDENTIFIER` of every journal entry (`journalctl -t gitops-run`).
pub const SYSLOG_IDENTIFIER: &str = "gitops-run";

/// Whether stderr is the journal: `$JOURNAL_STREAM` (set by systemd for a
/// service whose output goes to the journal) names stderr's device and inode.
/// A child whose stderr was redirected inherits the variable but not the stream.
pub fn journal_wanted(journal_stream: Option<&OsStr>, stderr: Option<(u64, u64)>) -> bool {
    let (Some(value), Some(stderr)) = (journal_stream.and_then(OsStr::to_str), stderr) else {
        return false;
    };
    let Some((dev, ino)) = value.trim().split_once(':') else {
        return false;
    };
    matches!((dev.parse::<u64>(), ino.parse::<u64>()), (Ok(d), Ok(i)) if (d, i) == stderr)
}

/// One journal entry: what the crate is handed (priority, identifier and message
/// become `PRIORITY`, `SYSLOG_IDENTIFIER` and `MESSAGE`) and our own fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub level: Level,
    pub identifier: &'static str,
    pub message: String,
    pub fields: Vec<(&'static str, String)>,
}

/// The journal entry for `text` at `level`: the `gitops-run: ` prefix, which
/// `SYSLOG_IDENTIFIER` replaces, dropped; the context's fields (repository,
/// branch, instance), then the line's own (`GITOPS_OUTCOME`, `GITOPS_COMMIT`,
/// `GITOPS_STREAM`).
pub fn entry(
    level: Level,
    text: &str,
    context: &[(&'static str, String)],
    own: &[(&'static str, &str)],
) -> Entry {
    let message = text.strip_prefix("gitops-run: ").unwrap_or(text);
    let message = message.strip_suffix('\n').unwrap_or(message);
    let message = message.strip_suffix('\r').unwrap_or(message);
    Entry {
        level,
        identifier: SYSLOG_IDENTIFIER,
        message: message.to_string(),
        fields: context
            .iter()
            .cloned()
            .chain(own.iter().map(|(k, v)| (*k, v.to_string())))
            .filter(|(_, v)| !v.is_empty())
            .collect(),
    }
}

static CONTEXT: OnceLock<Vec<(&'static str, String)>> = OnceLock::new();

/// The repository (redacted), branch and instance every journal entry of this
/// process names. Only the first call takes effect.
pub fn set_context(repo: &str, branch: &str, instance: Option<&str>) {
    let _ = CONTEXT.set(vec![
        ("GITOPS_REPO", scrub(repo)),
        ("GITOPS_BRANCH", branch.to_string()),
        ("GITOPS_INSTANCE", instance.unwrap_or_default().to_string()),
    ]);
}

static JOURNAL: OnceLock<Option<systemd_journal_logger::JournalLog>> = OnceLock::new();

/// The journal connection, when stderr is the journal and journald answers.
fn journal() -> Option<&'static systemd_journal_logger::JournalLog> {
    JOURNAL
        .get_or_init(|| {
            // dev_t and ino_t are narrower than u64 on some targets.
            #[allow(clippy::unnecessary_cast)]
            let stderr = nix::sys::stat::fstat(std::io::stderr())
                .ok()
                .map(|st| (st.st_dev as u64, st.st_ino as u64));
            if !journal_wanted(std::env::var_os("JOURNAL_STREAM").as_deref(), stderr) {
                return None;
            }
            systemd_journal_logger::JournalLog::empty()
                .ok()
                .map(|j| j.with_syslog_identifier(SYSLOG_IDENTIFIER.to_string()))
        })
        .as_ref()
}

fn send(journal: &systemd_journal_logger::JournalLog, e: &Entry) -> std::io::Result<()> {
    let fields: Vec<(&str, &str)> = e.fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    journal.journal_send(
        &::log::Record::builder()
            .level(e.level.record_level())
            .target(e.identifier)
            .args(format_args!("{}", e.message))
            .key_values(&fields)
            .build(),
    )
}

/// Write `text` to the journal (with `own` fields) or, when stderr is not the
/// journal or journald refuses the entry, to stderr.
fn write(level: Level, text: &str, own: &[(&'static str, &str)]) {
    if let Some(j) = journal() {
        let context = CONTEXT.get().map(Vec::as_slice).unwrap_or_default();
        if send(j, &entry(level, text, context, own)).is_ok() {
            return;
        }
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// The summary line of a pass: on stderr as any other line; in the journal with
/// `GITOPS_OUTCOME` and `GITOPS_COMMIT` (the remote tip the pass was about), at
/// warning priority when the pass did not succeed.
pub fn summary(outcome: Label, commit: Option<&str>, msg: impl std::fmt::Display) {
    let level = match outcome {
        Label::UpToDate
        | Label::Applied
        | Label::Unchanged
        | Label::Frozen
        | Label::Soaking
        | Label::Reconciled => Level::Notice,
        Label::Failed
        | Label::Interrupted
        | Label::InvalidEntrypoint
        | Label::Waiting
        | Label::Refused
        | Label::Unverified
        | Label::Unhealthy
        | Label::ReconcileFailed
        | Label::Error => Level::Warning,
        Label::RollbackFailed => Level::Error,
    };
    let text = format!("gitops-run: {}", scrub(&msg.to_string()));
    let mut own = vec![("GITOPS_OUTCOME", outcome.as_str())];
    if let Some(c) = commit {
        own.push(("GITOPS_COMMIT", c));
    }
    write(level, &text, &own);
}

/// One line of the entrypoint's output (as read, newline included or not) for the
/// attempt of `commit`: on stderr as it came, or in the journal with
/// `GITOPS_STREAM=entrypoint` and `GITOPS_COMMIT`.
pub fn output(commit: &str, line: &[u8]) {
    if let Some(j) = journal() {
        let context = CONTEXT.get().map(Vec::as_slice).unwrap_or_default();
        let text = String::from_utf8_lossy(line);
        let own = [("GITOPS_STREAM", "entrypoint"), ("GITOPS_COMMIT", commit)];
        if send(j, &entry(Level::Output, &text, context, &own)).is_ok() {
            return;
        }
    }
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(line);
    if !line.ends_with(b"\n") {
        let _ = err.write_all(b"\n");
    }
}

/// Fold multi-line messages (gix prints credential contexts over several lines).
pub fn one_line(text: &str) -> String {
    text.split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The first 12 hex digits of a commit id, as every message shows it.
pub fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

/// A time as every message and `status` shows it.
pub fn utc(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

pub fn line(msg: impl std::fmt::Display) {
    let text = format!("gitops-run: {}", scrub(&msg.to_string()));
    write(Level::Notice, &text, &[]);
}

pub fn warn_line(msg: impl std::fmt::Display) {
    let text = format!("gitops-run: warning: {}", scrub(&msg.to_string()));
    write(Level::Warning, &text, &[]);
}

pub fn debug_line(msg: impl std::fmt::Display) {
    if verbose() {
        let text = format!("gitops-run: debug: {}", scrub(&msg.to_string()));
        write(Level::Debug, &text, &[]);
    }
}

macro_rules! info {
    ($($arg:tt)*) => { $crate::log::line(format_args!($($arg)*)) };
}
macro_rules! warning {
    ($($arg:tt)*) => { $crate::log::warn_line(format_args!($($arg)*)) };
}
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log::debug_line(format_args!($($arg)*)) };
}
pub(crate) use debug;
pub(crate) use info;
pub(crate) use warning as warn;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_credentials_of_any_length_are_removed() {
        assert_eq!(
            redact_url_credentials("fetch https://deploy:pw1@host/r.git: 401"),
            "fetch https://***@host/r.git: 401"
        );
        assert_eq!(
            redact_url_credentials("\"https://t@h/x\" and ssh://git@h:22/r and file:///srv/r"),
            "\"https://***@h/x\" and ssh://git@h:22/r and file:///srv/r"
        );
        assert_eq!(redact_url_credentials("no urls here"), "no urls here");
        assert_eq!(
            redact_url_credentials("ssh://git:pw@h/r and HTTPS://tok@h/r"),
            "ssh://git:***@h/r and HTTPS://***@h/r"
        );
    }

    #[test]
    fn the_journal_is_used_only_when_stderr_is_the_stream_systemd_named() {
        let s = |v: &str| Some(OsStr::new(v).to_owned());
        assert!(journal_wanted(s("8:12345").as_deref(), Some((8, 12345))));
        assert!(
            !journal_wanted(s("8:12345").as_deref(), Some((8, 12346))),
            "stderr redirected"
        );
        assert!(!journal_wanted(s("9:12345").as_deref(), Some((8, 12345))));
        assert!(!journal_wanted(None, Some((8, 12345))), "not a service");
        assert!(!journal_wanted(s("8:12345").as_deref(), None), "no stderr");
        for bad in ["", "8", "8:", ":1", "x:1", "8:1:2"] {
            assert!(!journal_wanted(s(bad).as_deref(), Some((8, 1))), "{bad:?}");
        }
    }

    #[test]
    fn lines_take_their_level_from_their_prefix() {
        assert_eq!(level_of("gitops-run: error: failed to fetch"), Level::Error);
        assert_eq!(level_of("gitops-run: warning: webhook"), Level::Warning);
        assert_eq!(level_of("gitops-run: debug: fetching"), Level::Debug);
        assert_eq!(level_of("gitops-run: applied abc"), Level::Notice);
        assert_eq!(
            level_of("gitops-run receive: warning: slow"),
            Level::Warning
        );
        assert_eq!(level_of("someone: error: not ours"), Level::Notice);
        let p: Vec<u8> = [
            Level::Error,
            Level::Warning,
            Level::Notice,
            Level::Output,
            Level::Debug,
        ]
        .iter()
        .map(|l| l.priority())
        .collect();
        assert_eq!(p, [3, 4, 5, 6, 7]);
    }

    #[test]
    fn journal_entries_carry_the_context_and_their_own_fields() {
        let context = vec![
            ("GITOPS_REPO", "https://***@git.example/r.git".to_string()),
            ("GITOPS_BRANCH", "main".to_string()),
            ("GITOPS_INSTANCE", String::new()),
        ];
        let e = entry(
            Level::Warning,
            "gitops-run: run.sh failed for abc",
            &context,
            &[("GITOPS_OUTCOME", "failed"), ("GITOPS_COMMIT", "abc")],
        );
        assert_eq!(e.level.priority(), 4);
        assert_eq!(e.identifier, "gitops-run");
        assert_eq!(e.message, "run.sh failed for abc");
        let names: Vec<&str> = e.fields.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            names,
            [
                "GITOPS_REPO",
                "GITOPS_BRANCH",
                "GITOPS_OUTCOME",
                "GITOPS_COMMIT"
            ],
            "an empty instance is left out"
        );
        let out = entry(
            Level::Output,
            "installing nginx\r\n",
            &context,
            &[("GITOPS_STREAM", "entrypoint"), ("GITOPS_COMMIT", "abc")],
        );
        assert_eq!(
            out.message, "installing nginx",
            "the line ending is not part of the message"
        );
        assert!(out
            .fields
            .contains(&("GITOPS_STREAM", "entrypoint".to_string())));
        assert_eq!(out.level.priority(), 6);
    }

    #[test]
    fn short_secrets_are_replaced_as_words_only() {
        assert_eq!(
            replace_word("user pw1 said pw1x and xpw1", "pw1"),
            "user *** said pw1x and xpw1"
        );
        assert_eq!(replace_word("deploy:pw1@host", "pw1"), "deploy:***@host");
    }
}
