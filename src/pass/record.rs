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
/// and the relation of an unchanged remote tip
/// (a state file that did not exist has changed).
pub fn changed(loaded: Option<&State>, st: &State) -> bool {
    let Some(loaded) = loaded else {
        return true;
    };
    let mut a = loaded.clone();
    a.last_pass = st.last_pass.clone();
    // How the same remote tip relates to the deployed commit now, when the last
    // pass's record carries it (it goes to the lock file, and status reads the newer
    // record): `behind` turning into `up-to-date` on the pass after the tip was
    // applied is no reason to write.
    if let (Some(was), Some(now), Some(pass)) =
        (a.remote.as_mut(), st.remote.as_ref(), st.last_pass.as_ref())
    {
        let recorded = pass.remote_commit.as_deref() == Some(now.commit.as_str())
            && pass.classification == Some(now.classification);
        if was.commit == now.commit && recorded {
            was.classification = now.classification;
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::Classification;
    use crate::state::{LastPass, RemoteTip};

    fn with(class: Classification, recorded: Option<Classification>) -> State {
        let mut st = State::new("r", "main");
        st.remote = Some(RemoteTip {
            commit: "t".into(),
            classification: class,
            first_seen: None,
            soak_until: None,
        });
        st.last_pass = Some(LastPass {
            started_at: chrono::DateTime::from_timestamp(0, 0).unwrap(),
            duration_ms: 0,
            remote_commit: recorded.map(|_| "t".to_string()),
            classification: recorded,
            outcome: crate::decide::outcome::Label::UpToDate,
            exit_code: 0,
            error: None,
            tally: Default::default(),
            verification: None,
        });
        st
    }

    #[test]
    fn a_new_relation_of_the_same_tip_is_a_change_only_when_the_pass_record_lacks_it() {
        let disk = with(Classification::Behind, Some(Classification::Behind));
        // The no-op after the apply: its record says up-to-date; no write.
        let no_op = with(Classification::UpToDate, Some(Classification::UpToDate));
        assert!(!changed(Some(&disk), &no_op));
        // A pass whose fetch failed carries no relation: the state keeps it.
        let failed = with(Classification::UpToDate, None);
        assert!(changed(Some(&disk), &failed));
        // Another tip is always a change; so is a first state.
        let mut moved = no_op.clone();
        moved.remote.as_mut().unwrap().commit = "u".into();
        assert!(changed(Some(&disk), &moved));
        assert!(changed(None, &no_op));
        assert!(!changed(Some(&disk), &disk.clone()));
    }
}
