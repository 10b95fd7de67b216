//! What a pass finds before it fetches: the state file of this repository, the
//! leftovers and the running attempt of a pass that died, and a deployed tree or
//! `current` link that went missing.

use anyhow::Result;
use chrono::{DateTime, Utc};

use super::entrypoint;
use crate::config::PassSettings;
use crate::decide;
use crate::git::{Cache, ObjectId};
use crate::log::{info, short};
use crate::state::{self, trees, AttemptResult, Deployed, Layout, State};

/// Load `state.json`, or start a new state. A changed repository URL or branch is
/// followed: the next classification decides whether what is deployed relates to it.
pub fn load_state(cfg: &PassSettings, layout: &Layout) -> Result<State> {
    let path = layout.state_file();
    let Some(mut st) = state::load(&path)? else {
        return Ok(State::new(&cfg.repo.redacted, &cfg.branch));
    };
    if crate::git::url::identity(&st.repo) != cfg.repo.identity() {
        info!(
            "repository changed from {} to {}; the deployed commit is compared with the new remote's tip (unrelated or rewritten history is refused like a rewrite)",
            st.repo, cfg.repo.redacted
        );
        st.repo = cfg.repo.redacted.clone();
        st.remote = None;
        st.deepened_for = None;
    }
    if st.branch != cfg.branch {
        info!(
            "branch changed from {} to {}; the deployed commit is compared with the new branch",
            st.branch, cfg.branch
        );
        st.branch = cfg.branch.clone();
    }
    Ok(st)
}

/// Remove leftovers of an interrupted pass and settle its attempt.
pub fn clean_up(layout: &Layout, st: &mut State, now: DateTime<Utc>) -> Result<()> {
    trees::clean_leftovers(layout)?;
    settle_interrupted_attempt(layout, st, now);
    Ok(())
}

/// A pass that died while applying left an attempt marked running. If `current`
/// already names the attempted commit, its entrypoint exited 0 and only the record
/// was lost: record it as deployed. Otherwise stop what is left of that entrypoint
/// and count the attempt as failed.
fn settle_interrupted_attempt(layout: &Layout, st: &mut State, now: DateTime<Utc>) {
    let pid_file = layout.pid_file();
    let Some(attempt) = st.attempt.as_mut() else {
        let _ = std::fs::remove_file(&pid_file);
        return;
    };
    if attempt.result != AttemptResult::Running {
        let _ = std::fs::remove_file(&pid_file);
        return;
    }
    let deployed = st.deployed.as_ref().map(|d| d.commit.as_str());
    let current = trees::current_commit(layout);
    if current.as_deref() == Some(attempt.commit.as_str()) && deployed != current.as_deref() {
        info!(
            "the previous pass ended after {}'s entrypoint exited 0 (current already points at it); recording it as deployed",
            short(&attempt.commit)
        );
        attempt.result = AttemptResult::Succeeded;
        attempt.finished_at.get_or_insert(now);
        attempt.pid = None;
        let d = Deployed {
            commit: attempt.commit.clone(),
            subject: attempt.subject.clone(),
            commit_time: None,
            deployed_at: now,
            reason: Some(attempt.reason),
            secrets: false,
            last_run_at: None,
            signed_by: attempt.signed_by.clone(),
        };
        st.mark_deployed(d);
        st.failing = None;
        let _ = std::fs::remove_file(&pid_file);
        return;
    }
    let recorded = attempt.pid.map(|pid| (pid, attempt.pid_start_ticks));
    let from_file = || entrypoint::read_pid_file(&pid_file).map(|pid| (pid, None));
    if let Some((pid, start_ticks)) = recorded.or_else(from_file) {
        entrypoint::stop_orphan(&entrypoint::Orphan {
            pid,
            start_ticks,
            boot: attempt.boot_id.as_deref(),
            commit: &attempt.commit,
        });
    }
    let _ = std::fs::remove_file(&pid_file);
    info!(
        "the previous pass ended while applying {}; counting that attempt as failed",
        short(&attempt.commit)
    );
    attempt.result = AttemptResult::Interrupted;
    attempt.finished_at = Some(now);
    attempt.pid = None;
    st.failing = Some(decide::plan::record_failure(
        st.failing.as_ref(),
        &attempt.commit,
        now,
    ));
}

/// Make `current` point at the deployed tree again if someone removed or moved it.
pub fn restore_current(
    layout: &Layout,
    cache: &Cache,
    deployed: ObjectId,
    paths: &[String],
) -> Result<()> {
    let hex = deployed.to_string();
    let tree_ok = layout.tree(&hex).is_dir();
    if tree_ok && trees::current_commit(layout).as_deref() == Some(hex.as_str()) {
        return Ok(());
    }
    if !tree_ok {
        if !cache.has_commit(&deployed) {
            info!("the deployed tree {} is missing and its commit is not in the cache; it will be replaced by the next successful apply", short(&hex));
            return Ok(());
        }
        info!(
            "the deployed tree {} is missing; checking it out again (the entrypoint is not re-run)",
            short(&hex)
        );
        trees::materialize(layout, cache, deployed, paths)?;
    }
    trees::switch_current(layout, &hex)?;
    info!("restored {} -> trees/{}", layout.current().display(), hex);
    Ok(())
}
