//! Output for people and the journal: phase lines and the summary on stderr,
//! detail only with `-v`. Every line passes through the redactor.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

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

/// Write one line to stderr. A closed or broken stderr (a dead `logger` behind a
/// cron pipe, `| head`) must never abort a pass half-way, so errors are ignored.
pub fn emit(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{text}");
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
    emit(&format!("gitops-run: {}", scrub(&msg.to_string())));
}

pub fn warn_line(msg: impl std::fmt::Display) {
    emit(&format!("gitops-run: warning: {}", scrub(&msg.to_string())));
}

pub fn debug_line(msg: impl std::fmt::Display) {
    if verbose() {
        emit(&format!("gitops-run: debug: {}", scrub(&msg.to_string())));
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
    fn short_secrets_are_replaced_as_words_only() {
        assert_eq!(
            replace_word("user pw1 said pw1x and xpw1", "pw1"),
            "user *** said pw1x and xpw1"
        );
        assert_eq!(replace_word("deploy:pw1@host", "pw1"), "deploy:***@host");
    }
}
