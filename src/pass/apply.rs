//! Applying a commit: check it out into its own tree, run the entrypoint there,
//! and only when it exits 0 switch `current` and record the commit as deployed.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use std::collections::BTreeSet;
use std::time::Instant;

use super::entrypoint::{self, Ended as Exited};
use super::job::{self, Health};
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
pub struct How<'a> {
    pub clock: Clock,
    /// Read the freeze record before the entrypoint starts (a pass does; a
    /// rollback, which freezes the host itself, does not).
    pub honour_freeze: bool,
    /// Use the commit's tree when one is kept (a rollback to a commit the cache no
    /// longer has); otherwise always check it out fresh.
    pub reuse_tree: bool,
    /// Who signed the commit (verification on, and it passed).
    pub signed_by: Option<&'a crate::verify::Signer>,
}

impl How<'_> {
    pub fn pass(clock: Clock) -> How<'static> {
        How {
            clock,
            honour_freeze: true,
            reuse_tree: false,
            signed_by: None,
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
    how: How<'_>,
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
        let missing = cache.missing_paths(commit, &cfg.paths)?;
        if !missing.is_empty() {
            let now = clock();
            st.failing = Some(decide::plan::record_failure(st.failing.as_ref(), &hex, now));
            return Ok(Applied {
                ended: Ended::InvalidEntrypoint {
                    commit: hex.clone(),
                },
                summary: format!(
                    "not running {}: the path(s) {} that host {} follows (--path) do not exist in this commit; a typo in --path would make the host ignore every commit, so this is an error",
                    short(&hex),
                    missing.join(", "),
                    cfg.host
                ),
            });
        }
        let tree = trees::materialize(layout, cache, commit, &cfg.paths)?;
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
        signed_by: how.signed_by.cloned(),
    };

    let program = match entrypoint::resolve(&tree, &cfg.rel(&cfg.entrypoint)) {
        Ok(p) => p,
        Err(msg) => {
            let ended = Ended::InvalidEntrypoint {
                commit: hex.clone(),
            };
            let result = AttemptResult::InvalidEntrypoint;
            return Ok(refused_before_run(
                cfg,
                layout,
                st,
                attempt,
                (result, ended),
                &msg,
                clock(),
            ));
        }
    };

    // Secrets first: a commit holding one this host cannot decrypt fails here,
    // before anything ran, and nothing half-decrypted is left.
    let prepared = super::secrets::prepare(cfg.secrets.as_ref(), &cfg.paths, &tree, &hex)?;
    if let super::secrets::Prepared::Refused(why) = &prepared {
        let ended = Ended::Failed {
            commit: hex.clone(),
        };
        let result = AttemptResult::SecretsFailed;
        return Ok(refused_before_run(
            cfg,
            layout,
            st,
            attempt,
            (result, ended),
            why,
            clock(),
        ));
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
    let secrets_dir = match &prepared {
        super::secrets::Prepared::Ready(dir) => Some(dir.as_path()),
        _ => None,
    };
    let env = job::contract(cfg, layout, &hex, previous.as_deref(), reason, secrets_dir);
    job::reset_drift(layout);
    let ran = Instant::now();
    let exited = job::run(
        layout,
        job::Job {
            label: &format!("entrypoint ({} of {})", reason.as_str(), info_of.subject),
            program: &program,
            tree: &cfg.workdir(&tree),
            env: env.clone(),
            timeout: cfg.timeout,
            log: &log_path,
        },
        |pid| {
            let a = st.attempt.as_mut().expect("attempt set above");
            a.pid = Some(pid);
            a.pid_start_ticks = crate::host::process_start_ticks(pid);
            state::save(&state_path, st)
        },
    )?;
    let took = ran.elapsed().as_secs_f64();
    // A commit is healthy when its entrypoint exited 0 and its health check (if it
    // has one) passed; only then is it deployed.
    let health = if exited.success() {
        job::health_check(cfg, layout, &tree, &env, &log_path)?
    } else {
        Health::NoCheck
    };
    let finished = clock();
    let a = st.attempt.as_mut().expect("attempt set above");
    job::close_attempt(a, &exited, &health, finished);
    logs::prune(&layout.logs(), std::slice::from_ref(&log_path));

    if let Exited::NotStarted(why) = &exited {
        st.failing = Some(decide::plan::record_failure(
            st.failing.as_ref(),
            &hex,
            finished,
        ));
        super::secrets::not_deployed(cfg.secrets.as_ref(), previous.as_deref());
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

    if let Health::Failed(why) = &health {
        super::secrets::not_deployed(cfg.secrets.as_ref(), previous.as_deref());
        let ended = roll_back(
            cfg,
            layout,
            st,
            &hex,
            previous.as_deref(),
            why,
            &log_path,
            clock,
        )?;
        prune_trees(cfg, layout, st);
        return Ok(ended);
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
            last_run_at: None,
            signed_by: how.signed_by.cloned(),
        });
        st.failing = None;
        st.unknown_state = None;
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
        let checked = match health {
            Health::Passed { tries } => format!(", health check passed (try {tries})"),
            _ => String::new(),
        };
        return Ok(Applied {
            ended: Ended::Applied,
            summary: format!(
                "applied {} {:?}{from}: {} exited 0 after {took:.2}s{checked}",
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
        Exited::TimedOut => job::describe(&exited, cfg.timeout),
        other => format!("{} after {took:.2}s", job::describe(other, cfg.timeout)),
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

/// `commit` ran but failed its health check: bring the host back to the
/// previously deployed commit by running that tree's entrypoint (and its health
/// check) again. `current` never moved. Without a previous deployment there is
/// nothing to roll back to: the commit is retried on backoff like a failure.
#[allow(clippy::too_many_arguments)]
fn roll_back(
    cfg: &PassSettings,
    layout: &Layout,
    st: &mut State,
    commit: &str,
    previous: Option<&str>,
    why: &str,
    log: &std::path::Path,
    clock: Clock,
) -> Result<Applied> {
    let now = clock();
    let mut failing = decide::plan::record_failure(st.failing.as_ref(), commit, now);
    let Some(prev) = previous else {
        st.failing = Some(failing);
        let retry = st
            .failing
            .as_ref()
            .map(|f| utc(&f.next_retry_at))
            .unwrap_or_default();
        return Ok(Applied {
            ended: Ended::Unhealthy {
                commit: commit.to_string(),
                rolled_back_to: None,
            },
            summary: format!(
                "{} is unhealthy: {why}; nothing was deployed before it, so there is nothing to roll back to; next retry at {retry}; log: {}",
                short(commit),
                log.display()
            ),
        });
    };
    failing.unhealthy = true;
    st.failing = Some(failing);
    warn!(
        "{} is unhealthy ({why}); rolling back: running the entrypoint of the deployed {} again",
        short(commit),
        short(prev)
    );
    let tree = layout.tree(prev);
    let rolled = match entrypoint::resolve(&tree, &cfg.rel(&cfg.entrypoint)) {
        Err(msg) => Err(msg),
        Ok(program) => {
            let secrets_dir = super::secrets::dir_of(cfg.secrets.as_ref(), prev);
            let env = job::contract(
                cfg,
                layout,
                prev,
                Some(commit),
                Reason::HealthRollback,
                secrets_dir.as_deref(),
            );
            let ended = job::run(
                layout,
                job::Job {
                    label: "rollback entrypoint (health-rollback)",
                    program: &program,
                    tree: &cfg.workdir(&tree),
                    env: env.clone(),
                    timeout: cfg.timeout,
                    log,
                },
                |_| Ok(()),
            )?;
            if !ended.success() {
                Err(format!(
                    "its entrypoint {}",
                    job::describe(&ended, cfg.timeout)
                ))
            } else {
                match job::health_check(cfg, layout, &tree, &env, log)? {
                    Health::Failed(w) => Err(format!("its health check failed: {w}")),
                    _ => Ok(()),
                }
            }
        }
    };
    match rolled {
        Ok(()) => {
            if let Some(d) = st.deployed.as_mut() {
                d.last_run_at = Some(clock());
            }
            Ok(Applied {
                ended: Ended::Unhealthy {
                    commit: commit.to_string(),
                    rolled_back_to: Some(prev.to_string()),
                },
                summary: format!(
                    "{} is unhealthy: {why}; rolled back: the entrypoint of {} ran again and it is healthy; {} is not retried until a newer commit or `gitops-run --once`; log: {}",
                    short(commit),
                    short(prev),
                    short(commit),
                    log.display()
                ),
            })
        }
        Err(failure) => {
            let detail = format!(
                "{} failed its health check ({why}), and rolling back to {} failed: {failure}",
                short(commit),
                short(prev)
            );
            st.unknown_state = Some(crate::state::UnknownState {
                since: clock(),
                failed: commit.to_string(),
                rollback_to: prev.to_string(),
                detail: detail.clone(),
            });
            Ok(Applied {
                ended: Ended::RollbackFailed {
                    commit: commit.to_string(),
                    to: prev.to_string(),
                },
                summary: format!(
                    "UNKNOWN STATE: {detail}. current still names {}, but the host may be half-configured. Read the log {}, then push a fix (a newer commit is applied at once) or run `gitops-run rollback <commit>`",
                    short(prev),
                    log.display()
                ),
            })
        }
    }
}

/// Record `attempt` as ended at `now` with `result` before anything ran (the
/// entrypoint is unusable, a secret cannot be decrypted): it counts as a failure
/// of the commit, with its backoff.
fn refused_before_run(
    cfg: &PassSettings,
    layout: &Layout,
    st: &mut State,
    mut attempt: Attempt,
    (result, ended): (AttemptResult, Ended),
    why: &str,
    now: DateTime<Utc>,
) -> Applied {
    let hex = attempt.commit.clone();
    attempt.result = result;
    attempt.finished_at = Some(now);
    attempt.log = None;
    st.attempt = Some(attempt);
    st.failing = Some(decide::plan::record_failure(st.failing.as_ref(), &hex, now));
    prune_trees(cfg, layout, st);
    Applied {
        ended,
        summary: format!("not running {}: {why}", short(&hex)),
    }
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
