//! The middle of a pass: fetch the branch, classify the remote tip against the
//! deployed commit, plan, and apply when the plan says so.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use super::apply::{self, Clock};
use super::recover::restore_current;
use super::verify::{self, Keys};
use crate::config::PassSettings;
use crate::decide::outcome::Ended;
use crate::decide::{self, Classification, Plan, Reason};
use crate::exit::{fail, Classify, Exit};
use crate::git::{Cache, CommitLine, History, ObjectId};
use crate::log::{debug, info, short, utc, warn};
use crate::notify::render::MAX_SUBJECTS;
use crate::state::{AttemptResult, Layout, RemoteTip, State};

/// What the middle of a pass did.
pub struct Synced {
    pub ended: Ended,
    /// One line for people: what happened and what comes next.
    pub summary: String,
    pub remote: Option<ObjectId>,
    pub class: Option<Classification>,
    /// New commits of an apply (newest first, bounded) and how many more there were.
    pub commits: Vec<CommitLine>,
    pub commits_omitted: usize,
}

pub fn sync(
    cfg: &PassSettings,
    layout: &Layout,
    st: &mut State,
    now: DateTime<Utc>,
    clock: Clock,
    frozen: bool,
) -> Result<Synced> {
    // The keys are read by every pass, so that a broken key file is found at once
    // and a changed key set is used at the next pass.
    let keys = cfg
        .verify
        .as_ref()
        .map(|v| super::verify::load(v, now))
        .transpose()?;
    let keys = keys.as_ref();
    let cache = Cache::open_or_init(&layout.cache(), &cfg.ssh, &cfg.repo).class(Exit::Internal)?;
    let attempt_before = st.attempt.clone();
    let first = match sync_with(cfg, layout, st, now, clock, frozen, keys, &cache) {
        Ok(synced) => return Ok(synced),
        Err(e) => e,
    };
    // A damaged cache (a truncated pack, a missing index, a ref naming a missing
    // commit) can fail the fetch, or let it succeed and fail what reads the cache
    // after it. It is only a cache: when the check finds damage and nothing has
    // run yet, build it again and do the pass's work once more.
    if crate::state::is_disk_full(&first) || st.attempt != attempt_before {
        return Err(disk_full_is_not_a_fetch_error(first, layout));
    }
    let Some(why) = cache.damage() else {
        return Err(first);
    };
    warn!(
        "the cache {} is damaged ({why}); rebuilding it and fetching again (the deployed tree and current are kept)",
        layout.cache().display()
    );
    let cache = cache.rebuild(&cfg.ssh, &cfg.repo).class(Exit::Internal)?;
    st.deepened_for = None;
    sync_with(cfg, layout, st, now, clock, frozen, keys, &cache)
        .map_err(|e| disk_full_is_not_a_fetch_error(e, layout))
}

#[allow(clippy::too_many_arguments)]
fn sync_with(
    cfg: &PassSettings,
    layout: &Layout,
    st: &mut State,
    now: DateTime<Utc>,
    clock: Clock,
    frozen: bool,
    keys: Option<&Keys>,
    cache: &Cache,
) -> Result<Synced> {
    let deployed = deployed_id(st)?;
    // The deployed tree comes back from the cache before the fetch: a Git outage
    // must not leave the host without it (nor its reboot request unread).
    if let Some(d) = deployed {
        restore_current(layout, cache, d, &cfg.paths)?;
        let hex = d.to_string();
        let had_secrets = st.deployed.as_ref().is_some_and(|d| d.secrets);
        if had_secrets {
            if let Some(why) =
                super::secrets::recreate(cfg.secrets.as_ref(), &cfg.paths, &layout.tree(&hex), &hex)
            {
                warn!("{why}");
            }
        }
    }
    debug!("fetching {} from {}", cfg.branch, cfg.repo.redacted);
    let remote = cache.fetch(&cfg.repo, &cfg.branch, History::Needed, cfg.fetch_timeout)?;
    let class = classify(cfg, cache, st, deployed, remote)?;
    debug!(
        "deployed {}, remote {remote}: {}",
        deployed.map(|d| d.to_string()).as_deref().unwrap_or("none"),
        class.as_str()
    );
    let first_seen = match &st.remote {
        Some(r) if remote.to_hex() == r.commit => r.first_seen.unwrap_or(now),
        _ => now,
    };
    st.remote = Some(RemoteTip {
        commit: remote.to_string(),
        classification: class,
        first_seen: Some(first_seen),
        soak_until: None,
    });
    if let Some(d) = deployed {
        restore_current(layout, cache, d, &cfg.paths)?;
    }

    let remote_hex = remote.to_string();
    // A signature refusal is about one tip and one key set: once the branch has
    // moved, or verification is off, it no longer applies.
    if st
        .unverified
        .as_ref()
        .is_some_and(|u| u.tip != remote_hex || keys.is_none())
    {
        st.unverified = None;
    }
    let synced = |ended, summary: String| Synced {
        ended,
        summary,
        remote: Some(remote),
        class: Some(class),
        commits: Vec::new(),
        commits_omitted: 0,
    };
    let plan = decide::plan::plan(&decide::plan::Situation {
        class,
        remote: &remote_hex,
        failing: st.failing.as_ref(),
        allow_rewrite: cfg.allow_rewrite,
        force_retry: cfg.once,
        frozen,
        reconcile_every: cfg.reconcile_every,
        last_run: st
            .deployed
            .as_ref()
            .map(|d| d.last_run_at.unwrap_or(d.deployed_at)),
        soak_until: cfg
            .soak
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .and_then(|d| first_seen.checked_add_signed(d)),
        unverified: verify::refused_before(st, &remote_hex, keys),
        now,
    });
    // How far behind a host is that does not apply the tip (frozen, soaking,
    // refused by signature): walked so the metrics can say it.
    let walk_behind = |ended, summary: String| {
        let (commits, commits_omitted) = match (deployed, class) {
            (Some(_), Classification::Behind) => {
                cache.commits_between(deployed, remote, MAX_SUBJECTS)
            }
            _ => (Vec::new(), 0),
        };
        Synced {
            commits,
            commits_omitted,
            ..synced(ended, summary)
        }
    };
    match plan {
        Plan::Nothing => {
            st.failing = None;
            let subject = st
                .deployed
                .as_ref()
                .map(|d| d.subject.clone())
                .unwrap_or_default();
            Ok(synced(
                Ended::UpToDate,
                format!(
                    "up to date at {} ({subject:?}) on {}",
                    short(&remote_hex),
                    cfg.branch
                ),
            ))
        }
        Plan::Wait { until, failures } => {
            let after = failure_waited_after(st, &remote_hex);
            let what = match &after {
                Ended::ReconcileFailed { .. } => "reconciling it",
                _ => "applying it",
            };
            let summary = match unknown_state(st) {
                Some(line) => line,
                None => format!(
                    "{} has failed {failures} time(s) ({what}); next retry at {} (run `gitops-run --once` to retry now)",
                    short(&remote_hex),
                    utc(&until)
                ),
            };
            Ok(synced(
                Ended::Waiting {
                    after: Box::new(after),
                },
                summary,
            ))
        }
        Plan::Unhealthy { failures } => {
            let summary = match unknown_state(st) {
                Some(line) => line,
                None => format!(
                    "{} failed its health check ({failures} time(s)) and the host was rolled back to {}; it is not retried: push a fix, or run `gitops-run --once`",
                    short(&remote_hex),
                    st.deployed.as_ref().map(|d| short(&d.commit)).unwrap_or("the deployed commit")
                ),
            };
            Ok(synced(
                Ended::Waiting {
                    after: Box::new(failure_waited_after(st, &remote_hex)),
                },
                summary,
            ))
        }
        Plan::Soaking { until } => {
            if let Some(r) = st.remote.as_mut() {
                r.soak_until = Some(until);
            }
            Ok(walk_behind(
            Ended::Soaking {
                commit: remote_hex.clone(),
            },
            format!(
                "{} was first seen on {} at {}; it soaks until {} (--soak {}) before this host applies it (`gitops-run --no-soak` applies it now)",
                short(&remote_hex),
                cfg.branch,
                utc(&first_seen),
                utc(&until),
                crate::duration::format(cfg.soak.unwrap_or_default())
            ),
            ))
        }
        Plan::Reconcile => {
            let done = super::reconcile::reconcile(cfg, layout, st, clock)?;
            Ok(synced(done.ended, done.summary))
        }
        Plan::Held(c) => Ok(walk_behind(
            Ended::Held { pending: true },
            format!(
                "frozen: remote {} on {} is not applied ({}); `gitops-run plan` shows what would change, `gitops-run unfreeze` resumes",
                short(&remote_hex),
                cfg.branch,
                c.as_str()
            ),
        )),
        Plan::Refuse(c) => {
            let d = deployed.map(|d| d.to_string()).unwrap_or_default();
            Ok(synced(
                Ended::Refused {
                    class: c,
                    remote: remote_hex.clone(),
                },
                refusal(cfg, c, &d, &remote_hex),
            ))
        }
        Plan::Unverified => {
            let u = st
                .unverified
                .clone()
                .context("no refusal is recorded for the refused tip")?;
            Ok(walk_behind(
                Ended::Unverified {
                    tip: u.tip.clone(),
                    commit: u.commit.clone(),
                    reason: u.reason.clone(),
                },
                verify::refusal_line(&u, true),
            ))
        }
        Plan::Apply(reason) => {
            let verdict = match keys {
                None => None,
                Some(k) => Some(verify::check(cfg, k, cache, deployed, remote, now)?),
            };
            // After the check, which may have fetched the history a shallow cache
            // lacked to tell the new commits from the deployed commit's ancestors.
            let (commits, commits_omitted) = cache.commits_between(deployed, remote, MAX_SUBJECTS);
            let signer = match verdict {
                None => None,
                Some(verify::Verdict::Signed(s)) => {
                    info!("{} carries a good {s}", short(&remote_hex));
                    st.unverified = None;
                    Some(s)
                }
                Some(verify::Verdict::Refused(u)) => {
                    let line = verify::refusal_line(&u, false);
                    let ended = Ended::Unverified {
                        tip: u.tip.clone(),
                        commit: u.commit.clone(),
                        reason: u.reason.clone(),
                    };
                    st.unverified = Some(u);
                    return Ok(Synced {
                        commits,
                        commits_omitted,
                        ..synced(ended, line)
                    });
                }
            };
            if let Some(seen) =
                unchanged_here(cfg, layout, st, cache, deployed, remote, reason, signer.as_ref())?
            {
                return Ok(Synced {
                    commits,
                    commits_omitted,
                    ..synced(Ended::Unchanged, seen)
                });
            }
            let how = apply::How {
                signed_by: signer.as_ref(),
                ..apply::How::pass(clock)
            };
            let applied = apply::apply(cfg, layout, st, cache, remote, reason, how)?;
            Ok(Synced {
                commits,
                commits_omitted,
                ..synced(applied.ended, applied.summary)
            })
        }
    }
}

/// How the commit a pass waits for failed, from the state: so that a wait keeps
/// the exit code and the alert of that failure.
fn failure_waited_after(st: &State, commit: &str) -> Ended {
    let commit = commit.to_string();
    if let Some(u) = st.unknown_state.as_ref().filter(|u| u.failed == commit) {
        return Ended::RollbackFailed {
            commit,
            to: u.rollback_to.clone(),
        };
    }
    match st.attempt.as_ref().filter(|a| a.commit == commit) {
        Some(a) if a.reason == Reason::Reconcile => Ended::ReconcileFailed { commit },
        Some(a) if a.result == AttemptResult::InvalidEntrypoint => {
            Ended::InvalidEntrypoint { commit }
        }
        Some(a) if a.result == AttemptResult::Unhealthy => Ended::Unhealthy {
            commit,
            rolled_back_to: st.deployed.as_ref().map(|d| d.commit.clone()),
        },
        _ => Ended::Failed { commit },
    }
}

/// While a failed health rollback left the host in an unknown state, every pass
/// says so, and what to do.
fn unknown_state(st: &State) -> Option<String> {
    st.unknown_state.as_ref().map(|u| {
        format!(
            "UNKNOWN STATE since {}: {}. Push a fix (a newer commit is applied at once) or run `gitops-run rollback <commit>`",
            utc(&u.since),
            u.detail
        )
    })
}

/// What a new commit is to a host that follows `--path`s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForThisHost {
    /// Applied as usual: the host follows the whole tree, the commit changes
    /// something under its paths, or there is nothing deployed to compare with.
    Applies,
    /// Nothing under the host's paths changed: recorded as deployed without a run.
    Unchanged,
    /// Paths the host follows that the commit lacks: the pass fails (exit 6).
    Missing(Vec<String>),
}

/// Whether the new commit `remote` (to be applied for `reason`) concerns this
/// host: the check a pass makes before checking it out, and `plan` shows.
pub fn for_this_host(
    cfg: &PassSettings,
    cache: &Cache,
    deployed: Option<ObjectId>,
    remote: ObjectId,
    reason: Reason,
) -> Result<ForThisHost> {
    if cfg.paths.is_empty() {
        return Ok(ForThisHost::Applies);
    }
    let missing = cache.missing_paths(remote, &cfg.paths)?;
    if !missing.is_empty() {
        return Ok(ForThisHost::Missing(missing));
    }
    let Some(d) = deployed else {
        return Ok(ForThisHost::Applies);
    };
    if !matches!(reason, Reason::New | Reason::Rewrite) || !cache.has_commit(&d) {
        return Ok(ForThisHost::Applies);
    }
    let changed = cache.changed_paths(d, remote)?;
    let relevant = changed.iter().any(|p| {
        cfg.paths
            .iter()
            .any(|dir| crate::git::under(p.as_str().into(), dir))
    });
    Ok(if relevant {
        ForThisHost::Applies
    } else {
        ForThisHost::Unchanged
    })
}

/// A new commit that changes nothing under this host's paths is recorded as
/// deployed (its sparse tree checked out, `current` switched) without running the
/// entrypoint. Returns the summary when that is the case.
#[allow(clippy::too_many_arguments)]
fn unchanged_here(
    cfg: &PassSettings,
    layout: &Layout,
    st: &mut State,
    cache: &Cache,
    deployed: Option<ObjectId>,
    remote: ObjectId,
    reason: Reason,
    signed_by: Option<&crate::verify::Signer>,
) -> Result<Option<String>> {
    // A missing path is reported by apply.
    if for_this_host(cfg, cache, deployed, remote, reason)? != ForThisHost::Unchanged {
        return Ok(None);
    }
    let Some(d) = deployed else { return Ok(None) };
    let hex = remote.to_string();
    let info = cache.commit_info(remote)?;
    super::secrets::not_deployed(cfg.secrets.as_ref(), Some(&d.to_string()));
    crate::state::trees::materialize(layout, cache, remote, &cfg.paths)?;
    crate::state::trees::switch_current(layout, &hex)?;
    let secrets = st.deployed.as_ref().is_some_and(|x| x.secrets);
    st.mark_deployed(crate::state::Deployed {
        commit: hex.clone(),
        subject: info.subject.clone(),
        commit_time: info.time,
        deployed_at: Utc::now(),
        reason: Some(Reason::Unchanged),
        secrets,
        last_run_at: None,
        signed_by: signed_by.cloned(),
    });
    st.failing = None;
    crate::state::save(&layout.state_file(), st)?;
    Ok(Some(format!(
        "no change for this host ({}) in {} {:?}: nothing under {} changed; recorded as deployed without running {}",
        cfg.host,
        short(&hex),
        info.subject,
        cfg.paths.join(", "),
        cfg.entrypoint
    )))
}

/// A fetch that fails because the cache's disk is full is not the server's fault:
/// say so, and where, instead of "fetch failed".
fn disk_full_is_not_a_fetch_error(e: anyhow::Error, layout: &Layout) -> anyhow::Error {
    if !crate::state::is_disk_full(&e) {
        return e;
    }
    fail(
        Exit::Internal,
        format!(
            "disk full: no space left on the file system holding {} while fetching ({})",
            layout.cache().display(),
            crate::log::one_line(&format!("{e:#}"))
        ),
    )
}

pub(crate) fn deployed_id(st: &State) -> Result<Option<ObjectId>> {
    let Some(d) = &st.deployed else {
        return Ok(None);
    };
    ObjectId::from_hex(d.commit.as_bytes())
        .map(Some)
        .map_err(|_| {
            fail(
                Exit::State,
                format!("state file names an invalid deployed commit {:?}", d.commit),
            )
        })
}

fn refusal(cfg: &PassSettings, c: Classification, deployed: &str, remote: &str) -> String {
    let what = if c == Classification::RemoteBehind {
        format!(
            "refusing to deploy: branch {} of {} was reset backwards; remote {} is an ancestor of deployed {}",
            cfg.branch,
            cfg.repo.redacted,
            short(remote),
            short(deployed)
        )
    } else {
        format!(
            "refusing to deploy: history of branch {} of {} was rewritten (force-push?); remote {} does not descend from deployed {}",
            cfg.branch,
            cfg.repo.redacted,
            short(remote),
            short(deployed)
        )
    };
    format!(
        "{what}. Nothing was changed. Push a commit on top of {} or, to deploy {} anyway, run with --allow-rewrite",
        short(deployed),
        short(remote)
    )
}

/// Classify the remote tip against the deployed commit. In a shallow cache a missing
/// merge base may only mean missing history, so deepen before calling it diverged,
/// once per remote tip: a refused tip does not make every pass fetch all history.
pub(crate) fn classify(
    cfg: &PassSettings,
    cache: &Cache,
    st: &mut State,
    deployed: Option<ObjectId>,
    remote: ObjectId,
) -> Result<Classification> {
    let base = |cache: &Cache| match deployed {
        Some(d) if d != remote && cache.has_commit(&d) => cache.merge_base(d, remote),
        _ => None,
    };
    let class = decide::plan::classify(deployed.as_ref(), &remote, base(cache).as_ref());
    let incomplete = cache.is_shallow() || !deployed.map(|d| cache.has_commit(&d)).unwrap_or(true);
    let deepened = st.deepened_for.as_deref() == Some(remote.to_string().as_str());
    if class == Classification::Diverged && incomplete && !deepened {
        info!(
            "history is incomplete here; fetching all of {} before concluding that it diverged",
            cfg.branch
        );
        cache.fetch(&cfg.repo, &cfg.branch, History::Full, cfg.fetch_timeout)?;
        st.deepened_for = Some(remote.to_string());
        return Ok(decide::plan::classify(
            deployed.as_ref(),
            &remote,
            base(cache).as_ref(),
        ));
    }
    Ok(class)
}
