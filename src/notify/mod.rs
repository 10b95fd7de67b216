//! Notifications: which events of a pass are worth a message (`gate`, which also
//! keeps a repeated failure quiet), the facts of a message (`report`), how each
//! format renders them (`render`), and delivery over HTTP with bounded retries
//! (`deliver`). Nothing here can change the outcome of a pass.

pub mod deliver;
pub mod gate;
pub mod render;
pub mod report;

use chrono::{DateTime, Utc};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::decide::Kind;
use crate::git::CommitLine;
use crate::log::warn;

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
            warn!(
                "cannot read the {what} {}: {e}; notifications are off",
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
    if let Err(why) = deliver::check_url(&url) {
        warn!(
            "the webhook URL {} {why}; notifications are off",
            deliver::redact_url(&url)
        );
        return None;
    }
    let secret = match secret_file {
        Some(f) => Some(read(f, "webhook secret file")?.into_bytes()),
        None => None,
    };
    if secret.as_ref().is_some_and(|s| s.is_empty()) {
        warn!("the webhook secret file is empty; notifications are off");
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
    /// Who signed the deployed commit, for deployment events with verification on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
    pub at: DateTime<Utc>,
}
