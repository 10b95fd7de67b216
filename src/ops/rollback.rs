//! `gitops-run rollback [COMMIT]`: deploy a previously deployed commit again, out
//! of band, and pin the host there with a freeze, so that the next timer pass does
//! not deploy the branch's tip again. `unfreeze` resumes following the branch.

use anyhow::Result;
use chrono::Utc;
use std::time::Duration;

use super::{announce, check_state_dir};
use crate::config::{Control, PassSettings};
use crate::decide::outcome::{Ended, Label};
use crate::decide::{Kind, Reason};
use crate::exit::{fail, Exit};
use crate::git::{Cache, ObjectId};
use crate::log::{info, short};
use crate::pass::apply::{self, How};
use crate::state::freeze::{self, Freeze, FreezeKind, FREEZE_FORMAT};
use crate::state::{self, Deployed, Layout, State};

/// Roll back to `commit` (or the commit deployed before the current one).
pub fn rollback(
    layout: &Layout,
    cfg: &PassSettings,
    commit: Option<&str>,
    wait: Duration,
) -> Result<Exit> {
    crate::log::set_context(&cfg.repo.redacted, &cfg.branch, cfg.instance.as_deref());
    if !check_state_dir(layout)? {
        return Err(fail(
            Exit::State,
            format!(
                "no pass has run in {} yet: there is nothing to roll back",
                layout.root.display()
            ),
        ));
    }
    let Some(_lock) = crate::pass::lock_within(layout, wait)? else {
        return Err(fail(
            Exit::Internal,
            format!(
                "a pass still holds the lock on {} after waiting {}; nothing was changed, try again when it has ended",
                layout.lock().display(),
                crate::duration::format(wait)
            ),
        ));
    };
    let mut st = state::load(&layout.state_file())?.ok_or_else(|| {
        fail(
            Exit::State,
            format!("{} disappeared", layout.state_file().display()),
        )
    })?;
    let Some(deployed) = st.deployed.clone() else {
        return Err(fail(
            Exit::State,
            "nothing is deployed on this host yet: there is nothing to roll back",
        ));
    };
    let target = pick(&st, commit)?;
    if target.commit == deployed.commit {
        return Err(fail(
            Exit::Usage,
            format!(
                "{} is what is deployed: nothing to roll back (`gitops-run freeze` keeps a host where it is)",
                short(&target.commit)
            ),
        ));
    }
    let id = ObjectId::from_hex(target.commit.as_bytes()).map_err(|_| {
        fail(
            Exit::State,
            format!("the history names an invalid commit {:?}", target.commit),
        )
    })?;
    let cache = Cache::open_or_init(&layout.cache(), &cfg.ssh, &cfg.repo)?;
    if !cache.has_commit(&id) && !layout.tree(&target.commit).is_dir() {
        return Err(fail(
            Exit::State,
            format!(
                "{} is neither kept as a tree nor in the cache any more; it cannot be checked out again (nothing was changed)",
                short(&target.commit)
            ),
        ));
    }
    // With verification on, the target must carry a good signature by the keys
    // trusted now: a key revoked since it was deployed makes it undeployable.
    let signer = match cfg.verify.as_ref() {
        None => None,
        Some(v) => {
            let keys = crate::pass::verify::load(v, Utc::now())?;
            let raw = cache.raw_commit(id).map_err(|e| {
                fail(
                    Exit::Unverified,
                    format!(
                        "{} is not in the cache any more, so its signature cannot be verified; nothing was changed ({e:#})",
                        short(&target.commit)
                    ),
                )
            })?;
            match keys.trusted.verify_commit(&raw) {
                Ok(s) => {
                    info!("{} carries a good {s}", short(&target.commit));
                    Some(s)
                }
                Err(r) => {
                    let key = r
                        .fingerprint
                        .as_deref()
                        .map(|f| format!(" [key {f}]"))
                        .unwrap_or_default();
                    return Err(fail(
                        Exit::Unverified,
                        format!(
                            "refusing to roll back to {} {:?}: it has no good signature by a trusted key: {}: {}{key}; nothing was changed",
                            short(&target.commit),
                            target.subject,
                            r.reason,
                            r.detail
                        ),
                    ));
                }
            }
        }
    };
    info!(
        "rolling back from {} {:?} to {} {:?}",
        short(&deployed.commit),
        deployed.subject,
        short(&target.commit),
        target.subject
    );
    let failing = st.failing.clone();
    let before = st.clone();
    let how = How {
        clock: Utc::now,
        honour_freeze: false,
        reuse_tree: true,
        signed_by: signer.as_ref(),
    };
    let applied = apply::apply(cfg, layout, &mut st, &cache, id, Reason::Rollback, how)?;
    let control = cfg.notify.as_ref().map(|target| Control {
        target: Some(target.clone()),
        metrics: None,
        repo: cfg.repo.redacted.clone(),
        branch: cfg.branch.clone(),
    });
    if applied.ended != Ended::Applied {
        // A failed rollback changes nothing: the deployed commit stays, and the
        // branch's failure record is not the rollback's business.
        st.failing = failing;
        crate::metrics::count(Some(&before), &mut st, Label::Failed);
        state::save(&layout.state_file(), &st)?;
        crate::metrics::publish(cfg.metrics.as_ref(), layout, &st);
        let exit = crate::decide::outcome::outcome(&applied.ended, false).exit;
        return Err(fail(
            exit,
            format!(
                "rollback to {} failed, {} stays deployed and no freeze was added: {}",
                short(&target.commit),
                short(&deployed.commit),
                // A rollback is not retried by the passes: drop the pass's retry note.
                applied
                    .summary
                    .split("; next retry at")
                    .next()
                    .unwrap_or(&applied.summary)
            ),
        ));
    }
    let signed = signer
        .as_ref()
        .map(|s| format!(" ({s})"))
        .unwrap_or_default();
    let reason = format!(
        "rolled back from {} to {}{signed}",
        short(&deployed.commit),
        short(&target.commit)
    );
    let pin = Freeze {
        format: FREEZE_FORMAT,
        kind: FreezeKind::Rollback,
        reason: reason.clone(),
        by: crate::host::invoking_user(),
        since: Utc::now(),
        until: None,
        pinned: Some(target.commit.clone()),
    };
    crate::metrics::count(Some(&before), &mut st, Label::Applied);
    state::save(&layout.state_file(), &st)?;
    freeze::save(&layout.freeze_file(), &pin)?;
    crate::metrics::publish(cfg.metrics.as_ref(), layout, &st);
    info!("{}", applied.summary);
    info!(
        "{}; the host is frozen there so that passes do not deploy the branch's tip again: `gitops-run unfreeze` resumes following the branch",
        freeze::describe(&pin)
    );
    announce(
        control.as_ref(),
        Kind::RolledBack,
        &format!(
            "{reason} by {}; frozen there until `gitops-run unfreeze`",
            pin.by
        ),
    );
    Ok(Exit::Ok)
}

/// The history entry `commit` names (a full or abbreviated hash), or the commit
/// deployed before the current one.
fn pick(st: &State, commit: Option<&str>) -> Result<Deployed> {
    let history = || st.deployed.iter().chain(st.history.iter());
    let Some(wanted) = commit else {
        return st.history.first().cloned().ok_or_else(|| {
            fail(
                Exit::Usage,
                "only one commit was ever deployed here: there is no earlier one to roll back to",
            )
        });
    };
    let wanted = wanted.trim().to_ascii_lowercase();
    if wanted.len() < 4 || !wanted.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(fail(
            Exit::Usage,
            format!("{wanted:?} is not a commit hash (at least 4 hex digits)"),
        ));
    }
    let mut found: Vec<&Deployed> = Vec::new();
    for d in history().filter(|d| d.commit.starts_with(&wanted)) {
        if !found.iter().any(|f| f.commit == d.commit) {
            found.push(d);
        }
    }
    match found.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(fail(
            Exit::Usage,
            format!(
                "{wanted} is not in this host's deployment history (`gitops-run status` lists it); nothing was changed"
            ),
        )),
        many => Err(fail(
            Exit::Usage,
            format!(
                "{wanted} is ambiguous: it names {} deployed commits; give more digits",
                many.len()
            ),
        )),
    }
}
