//! What a pass leaves behind about itself: the `last_pass` record and the facts a
//! notification is made of.

use chrono::{DateTime, Utc};
use std::time::Duration;

use super::sync::Synced;
use crate::config::PassSettings;
use crate::decide::outcome::Outcome;
use crate::notify::report::{AttemptFacts, Facts};
use crate::state::{LastPass, State};

/// The `last_pass` record of a pass that ended with `out`.
pub fn last_pass(
    synced: &anyhow::Result<Synced>,
    out: &Outcome,
    started_at: DateTime<Utc>,
    elapsed: Duration,
) -> LastPass {
    let (remote_commit, classification, error) = match synced {
        Ok(s) => (s.remote.map(|r| r.to_string()), s.class, None),
        Err(e) => (None, None, Some(error_line(e))),
    };
    LastPass {
        started_at,
        duration_ms: elapsed.as_millis() as u64,
        remote_commit,
        classification,
        outcome: out.label,
        exit_code: out.exit.code(),
        error,
        tally: Default::default(),
        verification: None,
    }
}

/// Whether `st` differs from what was loaded in anything but the last pass's record
/// (a state file that did not exist has changed).
pub fn changed(loaded: Option<&State>, st: &State) -> bool {
    let Some(loaded) = loaded else {
        return true;
    };
    let mut a = loaded.clone();
    a.last_pass = st.last_pass.clone();
    a != *st
}

fn error_line(e: &anyhow::Error) -> String {
    crate::log::scrub(&crate::log::one_line(&format!("{e:#}")))
}

/// The facts of this pass's notifications.
pub fn facts(
    cfg: &PassSettings,
    st: &State,
    previous: Option<String>,
    synced: &anyhow::Result<Synced>,
    out: &Outcome,
    elapsed: Duration,
) -> Facts {
    let (summary, remote, class, commits, commits_omitted) = match synced {
        Ok(s) => (
            s.summary.clone(),
            s.remote.map(|r| r.to_string()),
            s.class,
            s.commits.clone(),
            s.commits_omitted,
        ),
        Err(e) => (
            crate::log::scrub(&format!("{e:#}")),
            None,
            None,
            Vec::new(),
            0,
        ),
    };
    Facts {
        host: crate::host::hostname(),
        repo: cfg.repo.redacted.clone(),
        branch: cfg.branch.clone(),
        previous,
        label: out.label,
        summary,
        remote,
        class,
        commits,
        commits_omitted,
        attempt: st.attempt.as_ref().map(|a| AttemptFacts {
            commit: a.commit.clone(),
            result: a.result.as_str().to_string(),
            reason: a.reason.as_str().to_string(),
            log: a.log.clone(),
        }),
        reboot_detail: st.reboot.request.as_ref().map(|r| r.detail.clone()),
        signed_by: st
            .deployed
            .as_ref()
            .and_then(|d| d.signed_by.as_ref())
            .map(|s| s.to_string()),
        exit: out.exit,
        elapsed,
        now: Utc::now(),
    }
}
