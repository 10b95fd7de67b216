//! From a finished pass to messages: each channel's signal (the deployment, the
//! reboot request) is gated against the alerts already open, and what is due is
//! turned into an event and sent.

use chrono::{DateTime, Utc};
use std::path::PathBuf;
use std::time::Duration;

use super::gate::{gate, Alert, NotifyState};
use super::render::{log_tail, LOG_TAIL_LINES};
use super::{deliver, Event, Target};
use crate::decide::outcome::Label;
use crate::decide::{Classification, Kind, Signal};
use crate::exit::Exit;
use crate::git::CommitLine;

/// The attempt a message may talk about.
#[derive(Debug, Clone)]
pub struct AttemptFacts {
    pub commit: String,
    /// `succeeded`, `failed`, ... as in `state.json`.
    pub result: String,
    /// `initial`, `new`, ... as handed to the entrypoint.
    pub reason: String,
    pub log: Option<PathBuf>,
}

/// What the pass did, as far as a message needs to know.
#[derive(Debug, Clone)]
pub struct Facts {
    pub host: String,
    pub repo: String,
    pub branch: String,
    /// Deployed commit before the pass.
    pub previous: Option<String>,
    pub label: Label,
    /// One line: what the pass did, or the error that ended it.
    pub summary: String,
    pub remote: Option<String>,
    pub class: Option<Classification>,
    /// New commits of an apply (newest first, bounded) and how many more there were.
    pub commits: Vec<CommitLine>,
    pub commits_omitted: usize,
    /// The last attempt recorded in the state, whether or not this pass made it.
    pub attempt: Option<AttemptFacts>,
    /// What the reboot review said of the request, for reboot messages.
    pub reboot_detail: Option<String>,
    /// Who signed the deployed commit (verification on), as one line.
    pub signed_by: Option<String>,
    pub exit: Exit,
    pub elapsed: Duration,
    pub now: DateTime<Utc>,
}

/// Gate each channel, send what is due, and remember alerts and counters.
pub fn notify(
    target: &Target,
    facts: &Facts,
    state: &mut NotifyState,
    channels: [(&str, Signal); 3],
) {
    for (channel, signal) in channels {
        let open = state.alerts.get(channel).cloned();
        let (send, alert) = gate(open.as_ref(), &signal, facts.now, target.reminder);
        match alert {
            Some(a) => state.alerts.insert(channel.to_string(), a),
            None => state.alerts.remove(channel),
        };
        let Some((kind, reminder)) = send else {
            if !matches!(signal, Signal::Quiet) {
                state.suppressed += 1;
            }
            continue;
        };
        let event = event(facts, kind, reminder, open.as_ref());
        if deliver::send(target, &event) {
            state.sent += 1;
        } else {
            state.failed += 1;
        }
    }
}

/// The event for `kind`. The attempt is described only when this pass made it, or
/// when a failure is being reported; its log only for deployment events.
pub fn event(facts: &Facts, kind: Kind, reminder: bool, open: Option<&Alert>) -> Event {
    let attempted_now = facts.label.attempted();
    let attempt = facts
        .attempt
        .as_ref()
        .filter(|_| attempted_now || kind == Kind::Failed);
    let (commits, commits_omitted) = if attempted_now {
        (facts.commits.clone(), facts.commits_omitted)
    } else {
        (Vec::new(), 0)
    };
    let mut summary = facts.summary.clone();
    match kind {
        Kind::Unfrozen => summary = format!("the freeze ended by itself; {summary}"),
        Kind::Recovered => {
            let since =
                open.map(|a| format!(" (failing since {})", a.since.format("%Y-%m-%d %H:%M UTC")));
            summary = format!("recovered{}: {summary}", since.unwrap_or_default());
        }
        Kind::RebootScheduled
        | Kind::Rebooting
        | Kind::RebootMissed
        | Kind::RebootInvalid
        | Kind::RebootFailed => {
            summary = format!(
                "{}: {}",
                match kind {
                    Kind::RebootScheduled => "reboot scheduled",
                    Kind::Rebooting => "rebooting now",
                    Kind::RebootMissed => "reboot missed",
                    Kind::RebootFailed => "reboot failed",
                    _ => "invalid reboot request",
                },
                facts.reboot_detail.as_deref().unwrap_or("")
            );
        }
        _ => {}
    }
    if reminder {
        if let Some(a) = open {
            summary = format!(
                "{summary} (seen on {} passes since {})",
                a.passes + 1,
                a.since.format("%Y-%m-%d %H:%M UTC")
            );
        }
    }
    let log_path = attempt.and_then(|a| a.log.clone()).filter(|_| {
        matches!(
            kind,
            Kind::Applied | Kind::Recovered | Kind::Failed | Kind::InvalidEntrypoint
        )
    });
    let result = match (facts.label, attempt) {
        (Label::Error, _) => "error".to_string(),
        (_, Some(a)) if attempted_now => a.result.clone(),
        (label, _) => label.as_str().to_string(),
    };
    let reason = match attempt {
        Some(a) => a.reason.clone(),
        None if facts.label == Label::Error => String::new(),
        None => facts
            .class
            .map(|c| c.as_str().to_string())
            .unwrap_or_default(),
    };
    Event {
        event: kind,
        reminder,
        host: facts.host.clone(),
        repo: facts.repo.clone(),
        branch: facts.branch.clone(),
        previous_commit: facts.previous.clone(),
        commit: attempt
            .map(|a| a.commit.clone())
            .or_else(|| facts.remote.clone()),
        commits,
        commits_omitted,
        result,
        reason,
        summary,
        duration_ms: facts.elapsed.as_millis() as u64,
        exit_code: facts.exit.code(),
        log_tail: log_path
            .as_deref()
            .map(|p| log_tail(p, LOG_TAIL_LINES))
            .unwrap_or_default(),
        log_path,
        signed_by: facts
            .signed_by
            .clone()
            .filter(|_| matches!(kind, Kind::Applied | Kind::Recovered)),
        at: facts.now,
    }
}
