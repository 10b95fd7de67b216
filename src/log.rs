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

/// Replace every registered secret in `text` with `***`.
pub fn scrub(text: &str) -> String {
    let mut out = text.to_string();
    if let Some(secrets) = SECRETS.get() {
        for s in secrets {
            out = out.replace(s.as_str(), "***");
        }
    }
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
