//! Applying a commit: check it out into its own tree, run the entrypoint there,
//! and only when it exits 0 switch `current` and record the commit as deployed.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use std::collections::BTreeSet;
use std::time::Instant;

use super::entrypoint::{self, Ended as Exited};
use crate::config::PassSettings;
use crate::decide::outcome::Ended;
use crate::decide::{self, Reason};
use crate::git::{Cache, ObjectId};
use crate::log::{debug, info, short, utc, warn};
use crate::state::{self, logs, trees, Attempt, AttemptResult, Deployed, Layout, State};

/// How an apply ended, and its summary line.
pub struct Applied {
    pub ended: Ended,
    pub summary: String,
}

/// The system clock; apply reads it for the start and the end of the entrypoint.
pub type Clock = fn() -> DateTime<Utc>;

/// How an apply goes about it.
#[derive(Clone, Copy)]
pub struct How {
    pub clock: Clock,
    /// Read the freeze record before the entrypoint starts (a pass does; a
    /// rollback, which freezes the host itself, does not).
    pub honour_freeze: bool,
    /// Use the commit's tree when one is kept (a rollback to a commit the cache no
    /// longer has); otherwise always check it out fresh.
    pub reuse_tree: bool,
}

impl How {
    pub fn pass(clock: Clock) -> How {
        How {
            clock,
            honour_freeze: true,
            reuse_tree: false,
        }
    }
}

pub fn apply(
    cfg: &PassSettings,
    layout: &Layout,
    st: &mut State,
    cache: &Cache,
    commit: ObjectId,
    reason: Reason,
    how: How,
) -> Result<Applied> {
    let clock = how.clock;
    let hex = commit.to_string();
    let known = st
        .deployed
        .iter()
        .chain(st.history.iter())
        .find(|d| d.commit == hex)
        .map(|d| crate::git::CommitInfo {
            subject: d.subject.clone(),
            time: d.commit_time,
            author: String::new(),
        });
    let info_of = match (cache.commit_info(commit), known) {
        (Ok(i), _) => i,
        (Err(_), Some(k)) if how.reuse_tree && layout.tree(&hex).is_dir() => k,
        (Err(e), _) => return Err(e),
    };
    let previous = st.deployed.as_ref().map(|d| d.commit.clone());
    info!(
        "applying {} {:?} ({}; deployed: {})",
        short(&hex),
        info_of.subject,
        reason.as_str(),
        previous.as_deref().map(short).unwrap_or("none")
    );
    let tree = if how.reuse_tree && layout.tree(&hex).is_dir() {
        debug!("using the kept tree of {hex}");
        layout.tree(&hex)
    } else {
        let tree = trees::materialize(layout, cache, commit)?;
        debug!("checked out {hex} into {}", tree.display());
        tree
    };

    let started = clock();
    let log_path = logs::new_path(&layout.logs(), &hex, started)?;
    let mut attempt = Attempt {
        commit: hex.clone(),
        subject: info_of.subject.clone(),
        reason,
        started_at: started,
        finished_at: None,
        result: AttemptResult::Running,
        exit_code: None,
        log: Some(log_path.clone()),
        pid: None,
        pid_start_ticks: None,
        boot_id: None,
    };

    let program = match entrypoint::resolve(&tree, &cfg.entrypoint) {
        Ok(p) => p,
        Err(msg) => {
            let now = clock();
            attempt.result = AttemptResult::InvalidEntrypoint;
            attempt.finished_at = Some(now);
            attempt.log = None;
            st.attempt = Some(attempt);
            st.failing = Some(decide::plan::record_failure(st.failing.as_ref(), &hex, now));
            prune_trees(cfg, layout, st);
            return Ok(Applied {
                ended: Ended::InvalidEntrypoint {
                    commit: hex.clone(),
                },
                summary: format!("not running {}: {msg}", short(&hex)),
            });
        }
    };

    // Secrets first: a commit holding one this host cannot decrypt fails here,
    // before anything ran, and nothing half-decrypted is left.
    let prepared = super::secrets::prepare(cfg.secrets.as_ref(), &tree, &hex)?;
    if let super::secrets::Prepared::Refused(why) = &prepared {
        let now = clock();
        attempt.result = AttemptResult::SecretsFailed;
        attempt.finished_at = Some(now);
        attempt.log = None;
        st.attempt = Some(attempt);
        st.failing = Some(decide::plan::record_failure(st.failing.as_ref(), &hex, now));
        prune_trees(cfg, layout, st);
        return Ok(Applied {
            ended: Ended::Failed {
                commit: hex.clone(),
            },
            summary: format!("not running {}: {why}", short(&hex)),
        });
    }

    // The attempt is on disk before the entrypoint can start: a pass killed at any
    // moment after this leaves a record that the next pass settles, and a disk too
    // full to hold it stops here, before anything ran.
    attempt.boot_id = crate::host::boot_id();
    let attempt_before = st.attempt.replace(attempt);
    let state_path = layout.state_file();
    state::save(&state_path, st)
        .context("failed to record the attempt before starting the entrypoint; nothing was run")?;
    // `gitops-run freeze` writes its record, then looks for a running attempt; this
    // pass wrote its attempt, and now looks for a freeze: one of the two sees the
    // other, so no entrypoint starts after `freeze` returned.
    if how.honour_freeze && super::freeze::holds_now(layout, clock()) {
        st.attempt = attempt_before;
        state::save(&state_path, st)?;
        info!(
            "the host was frozen while this pass prepared {}; not running it",
            short(&hex)
        );
        return Ok(Applied {
            ended: Ended::Held { pending: true },
            summary: format!("frozen: {} was not applied", short(&hex)),
        });
    }
    let env = vec![
        ("GITOPS_COMMIT".to_string(), hex.clone()),
        (
            "GITOPS_PREVIOUS_COMMIT".to_string(),
            previous.clone().unwrap_or_default(),
        ),
        ("GITOPS_BRANCH".to_string(), cfg.branch.clone()),
        ("GITOPS_REPO".to_string(), cfg.repo.redacted.clone()),
        ("GITOPS_REASON".to_string(), reason.as_str().to_string()),
        (
            "GITOPS_STATE_DIR".to_string(),
            layout.root.to_string_lossy().into_owned(),
        ),
    ];
    let mut env = env;
    if let super::secrets::Prepared::Ready(dir) = &prepared {
        env.push((
            "GITOPS_SECRETS_DIR".to_string(),
            dir.to_string_lossy().into_owned(),
        ));
    }
    let header = format!(
        "# gitops-run: {} {} commit {hex} ({}) started {}",
        cfg.entrypoint,
        reason.as_str(),
        info_of.subject,
        started.to_rfc3339()
    );
    info!("running {} in {}", cfg.entrypoint, tree.display());
    let ran = Instant::now();
    let exited = entrypoint::run(
        entrypoint::Spec {
            program: &program,
            cwd: &tree,
            env,
            timeout: cfg.timeout,
            log: &log_path,
            header,
            pid_file: &layout.pid_file(),
        },
        |pid| {
            let a = st.attempt.as_mut().expect("attempt set above");
            a.pid = Some(pid);
            a.pid_start_ticks = crate::host::process_start_ticks(pid);
            state::save(&state_path, st)
        },
    )?;
    let took = ran.elapsed().as_secs_f64();
    let finished = clock();
    let a = st.attempt.as_mut().expect("attempt set above");
    a.finished_at = Some(finished);
    a.exit_code = exited.code();
    a.pid = None;
    a.pid_start_ticks = None;
    a.boot_id = None;
    a.result = match &exited {
        e if e.success() => AttemptResult::Succeeded,
        Exited::TimedOut => AttemptResult::TimedOut,
        Exited::Interrupted => AttemptResult::Interrupted,
        Exited::NotStarted(_) => AttemptResult::InvalidEntrypoint,
        _ => AttemptResult::Failed,
    };
    logs::prune(&layout.logs(), std::slice::from_ref(&log_path));

    if let Exited::NotStarted(why) = &exited {
        st.failing = Some(decide::plan::record_failure(
            st.failing.as_ref(),
            &hex,
            finished,
        ));
        prune_trees(cfg, layout, st);
        return Ok(Applied {
            ended: Ended::InvalidEntrypoint {
                commit: hex.clone(),
            },
            summary: format!(
                "not running {}: entrypoint {:?}: {why}",
                short(&hex),
                cfg.entrypoint
            ),
        });
    }

    if exited.success() {
        // Switching `current` is the moment of deployment; the state follows at
        // once, before anything slow (notifications). Should that save fail, the
        // next pass finds `current` naming the attempted commit and records it.
        trees::switch_current(layout, &hex)?;
        super::secrets::deployed(cfg.secrets.as_ref(), &hex, &prepared);
        st.mark_deployed(Deployed {
            commit: hex.clone(),
            subject: info_of.subject.clone(),
            commit_time: info_of.time,
            deployed_at: finished,
            reason: Some(reason),
            secrets: matches!(prepared, super::secrets::Prepared::Ready(_)),
        });
        st.failing = None;
        state::save(&state_path, st).with_context(|| {
            format!(
                "{} succeeded and current points at {}, but the state could not be recorded; the next pass records it as deployed",
                cfg.entrypoint,
                short(&hex)
            )
        })?;
        prune_trees(cfg, layout, st);
        let from = previous
            .as_deref()
            .map(|p| format!(" (was {})", short(p)))
            .unwrap_or_default();
        return Ok(Applied {
            ended: Ended::Applied,
            summary: format!(
                "applied {} {:?}{from}: {} exited 0 after {took:.2}s",
                short(&hex),
                info_of.subject,
                cfg.entrypoint
            ),
        });
    }

    st.failing = Some(decide::plan::record_failure(
        st.failing.as_ref(),
        &hex,
        finished,
    ));
    super::secrets::not_deployed(cfg.secrets.as_ref(), previous.as_deref());
    prune_trees(cfg, layout, st);
    let kept = previous
        .as_deref()
        .map(|p| format!("; {} stays deployed", short(p)))
        .unwrap_or_default();
    let how = match &exited {
        Exited::Exited(c) => format!("exited {c} after {took:.2}s"),
        Exited::Signaled(s) => format!("was killed by signal {s} after {took:.2}s"),
        Exited::TimedOut => format!(
            "timed out (--timeout {})",
            crate::duration::format(cfg.timeout)
        ),
        Exited::Interrupted => format!("was interrupted after {took:.2}s"),
        Exited::NotStarted(why) => why.clone(),
    };
    let retry = st
        .failing
        .as_ref()
        .map(|f| utc(&f.next_retry_at))
        .unwrap_or_default();
    let summary = format!(
        "{} failed for {}: {how}{kept}; next retry at {retry}; log: {}",
        cfg.entrypoint,
        short(&hex),
        log_path.display()
    );
    let ended = if exited == Exited::Interrupted {
        Ended::Interrupted { commit: hex }
    } else {
        Ended::Failed { commit: hex }
    };
    Ok(Applied { ended, summary })
}

/// Keep the deployed tree, the last failed attempt's tree (for inspection) and
/// previously deployed ones, `keep_trees` in all. Pruning is housekeeping: a
/// failure is reported but never changes the outcome of a pass whose real work
/// is done.
fn prune_trees(cfg: &PassSettings, layout: &Layout, st: &State) {
    let mut order: Vec<String> = Vec::new();
    order.extend(st.deployed.iter().map(|d| d.commit.clone()));
    if let Some(a) = &st.attempt {
        if a.result != AttemptResult::Succeeded {
            order.push(a.commit.clone());
        }
    }
    order.extend(st.history.iter().map(|d| d.commit.clone()));
    let mut keep = BTreeSet::new();
    for c in order {
        if keep.len() >= cfg.keep_trees as usize {
            break;
        }
        keep.insert(c);
    }
    if let Err(e) = trees::prune(layout, &keep) {
        warn!("could not prune old trees: {e:#}");
    }
}
