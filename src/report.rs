//! From a finished pass to notifications: one signal per channel (the deployment,
//! the reboot request), gated against the alerts already open, rendered as events.

use chrono::{DateTime, Utc};
use std::time::Duration;

use crate::decide::Classification;
use crate::exit::Exit;
use crate::notify::{self, Event, Kind, Signal, Target};
use crate::pass::{Config, Label, Outcome};
use crate::state::{AttemptResult, State};

/// What the pass did, as far as a report needs to know.
pub struct Facts<'a> {
    pub cfg: &'a Config,
    /// Deployed commit before the pass.
    pub previous: Option<&'a str>,
    pub result: &'a anyhow::Result<Outcome>,
    pub exit: Exit,
    pub elapsed: Duration,
    pub now: DateTime<Utc>,
}

/// The deployment channel's signal.
pub fn deploy_signal(result: &anyhow::Result<Outcome>, st: &State) -> Signal {
    let attempt = st.attempt.as_ref();
    let failure_key = |prefix: &str| {
        format!(
            "{prefix}:{}",
            attempt.map(|a| a.commit.as_str()).unwrap_or("")
        )
    };
    match result {
        Err(e) => Signal::Bad(
            Kind::Error,
            format!("error:{}", crate::exit::class_of(e).code()),
        ),
        Ok(o) => match o.label {
            Label::UpToDate => Signal::Quiet,
            Label::Applied => Signal::Good(Kind::Applied),
            Label::Failed | Label::Interrupted => Signal::Bad(Kind::Failed, failure_key("failed")),
            Label::InvalidEntrypoint => {
                Signal::Bad(Kind::InvalidEntrypoint, failure_key("invalid"))
            }
            Label::Waiting => match attempt.map(|a| a.result) {
                Some(AttemptResult::InvalidEntrypoint) => {
                    Signal::Bad(Kind::InvalidEntrypoint, failure_key("invalid"))
                }
                _ => Signal::Bad(Kind::Failed, failure_key("failed")),
            },
            Label::Refused => Signal::Bad(
                Kind::Refused,
                format!(
                    "refused:{}:{}",
                    o.class.map(Classification::as_str).unwrap_or(""),
                    o.remote.map(|r| r.to_string()).unwrap_or_default()
                ),
            ),
        },
    }
}

/// Gate both channels, send what is due, and remember alerts and counters in `st`.
pub fn notify(target: &Target, facts: &Facts<'_>, st: &mut State, reboot: Signal) {
    let deploy = deploy_signal(facts.result, st);
    for (channel, signal) in [("deploy", deploy), ("reboot", reboot)] {
        let open = st.notify.alerts.get(channel).cloned();
        let (send, alert) = notify::gate(open.as_ref(), &signal, facts.now, target.reminder);
        match alert {
            Some(a) => st.notify.alerts.insert(channel.to_string(), a),
            None => st.notify.alerts.remove(channel),
        };
        let Some((kind, reminder)) = send else {
            if !matches!(signal, Signal::Quiet) {
                st.notify.suppressed += 1;
            }
            continue;
        };
        let event = event(facts, st, kind, reminder, open.as_ref());
        if notify::send(target, &event) {
            st.notify.sent += 1;
        } else {
            st.notify.failed += 1;
        }
    }
}

fn event(
    facts: &Facts<'_>,
    st: &State,
    kind: Kind,
    reminder: bool,
    open: Option<&notify::Alert>,
) -> Event {
    let cfg = facts.cfg;
    let attempted_now = matches!(
        facts.result,
        Ok(o) if o.label.attempted()
    );
    let attempt = st
        .attempt
        .as_ref()
        .filter(|_| attempted_now || kind == Kind::Failed);
    let (commits, commits_omitted) = match facts.result {
        Ok(o) if attempted_now => (o.commits.clone(), o.commits_omitted),
        _ => (Vec::new(), 0),
    };
    let mut summary = match facts.result {
        Ok(o) => o.summary.clone(),
        Err(e) => crate::log::scrub(&format!("{e:#}")),
    };
    match kind {
        Kind::Recovered => {
            let since =
                open.map(|a| format!(" (failing since {})", a.since.format("%Y-%m-%d %H:%M UTC")));
            summary = format!("recovered{}: {summary}", since.unwrap_or_default());
        }
        Kind::RebootScheduled | Kind::Rebooting | Kind::RebootMissed | Kind::RebootInvalid => {
            let r = st.reboot.request.as_ref();
            summary = format!(
                "{}: {}",
                match kind {
                    Kind::RebootScheduled => "reboot scheduled",
                    Kind::Rebooting => "rebooting now",
                    Kind::RebootMissed => "reboot missed",
                    _ => "invalid reboot request",
                },
                r.map(|r| r.detail.as_str()).unwrap_or("")
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
    Event {
        event: kind,
        reminder,
        host: hostname(),
        repo: cfg.repo.redacted.clone(),
        branch: cfg.branch.clone(),
        previous_commit: facts.previous.map(str::to_string),
        commit: attempt.map(|a| a.commit.clone()).or_else(|| {
            facts
                .result
                .as_ref()
                .ok()
                .and_then(|o| o.remote.map(|r| r.to_string()))
        }),
        commits,
        commits_omitted,
        result: match (facts.result, attempt) {
            (Err(_), _) => "error".into(),
            (Ok(_), Some(a)) if attempted_now => a.result.as_str().to_string(),
            (Ok(o), _) => o.label.as_str().to_string(),
        },
        reason: attempt
            .map(|a| a.reason.as_str().to_string())
            .unwrap_or_else(|| match facts.result {
                Ok(o) => o.class.map(|c| c.as_str().to_string()).unwrap_or_default(),
                Err(_) => String::new(),
            }),
        summary,
        duration_ms: facts.elapsed.as_millis() as u64,
        exit_code: facts.exit.code(),
        log_tail: log_path
            .as_deref()
            .map(|p| notify::log_tail(p, notify::LOG_TAIL_LINES))
            .unwrap_or_default(),
        log_path,
        at: facts.now,
    }
}

pub fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown-host".into())
}
