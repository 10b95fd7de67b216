//! One pass, as docs/design.md tells it: lock, load state, recover, fetch,
//! classify, plan, apply, review the reboot request, record, notify, reboot,
//! exit code. The decisions live in `decide`; each phase is a call into the
//! module that owns it.

pub mod apply;
pub mod entrypoint;
mod freeze;
mod job;
pub mod lock;
mod reboot;
mod reconcile;
mod record;
mod recover;
mod secrets;
pub(crate) mod sync;
pub(crate) mod verify;

use anyhow::Result;
use chrono::Utc;
use std::time::{Duration, Instant};

use crate::config::PassSettings;
use crate::decide::outcome::{outcome, Ended};
use crate::decide::reboot::Action;
use crate::exit::{class_of, Exit};
use crate::host;
use crate::log::{info, warn};
use crate::state::{self, Layout};

/// Take the pass lock if no pass holds it (for operator commands).
pub fn lock_now(layout: &Layout) -> Result<Option<lock::Lock>> {
    lock::acquire_within(layout, Duration::ZERO)
}

/// Take the pass lock, waiting up to `wait` for a running pass to end.
pub fn lock_within(layout: &Layout, wait: Duration) -> Result<Option<lock::Lock>> {
    lock::acquire_within(layout, wait)
}

/// How long a pass a push asked for waits for another pass to end.
pub const LOCK_WAIT_FOR_PUSH: Duration = Duration::from_secs(40 * 60);

pub fn run(cfg: &PassSettings, layout: &Layout) -> Result<Exit> {
    let started = Instant::now();
    let started_at = Utc::now();
    crate::log::set_context(&cfg.repo.redacted, &cfg.branch, cfg.instance.as_deref());
    state::prepare_dir(&layout.root)?;
    // A pass a push asked for waits for the pass that holds the lock instead of
    // leaving the push unanswered (the path unit would start it again at once).
    let pushed = cfg.trigger_file.as_deref().is_some_and(|t| t.exists());
    let wait = if pushed {
        LOCK_WAIT_FOR_PUSH
    } else {
        Duration::ZERO
    };
    let Some(lock) = lock::acquire_within(layout, wait)? else {
        info!(
            "another gitops-run pass holds the lock on {}; exiting",
            layout.lock().display()
        );
        return Ok(Exit::Ok);
    };
    if let Some(trigger) = &cfg.trigger_file {
        match crate::receive::trigger::consume_trigger(trigger) {
            Ok(true) => info!("a push asked for this pass"),
            Ok(false) => {}
            Err(e) => warn!("{e:#}"),
        }
    }
    let (freeze, freeze_signal) = freeze::check(layout, started_at)?;
    let frozen = freeze.holds(started_at);
    let mut st = recover::load_state(cfg, layout)?;
    let loaded = layout.state_file().exists().then(|| st.clone());
    // The record of the last pass (a no-op's is only in the lock file), read once.
    let before = state::absorb_lock_record(&mut st, &layout.lock());
    recover::clean_up(layout, &mut st, started_at)?;
    let previous = st.deployed.as_ref().map(|d| d.commit.clone());

    let synced = sync::sync(cfg, layout, &mut st, started_at, Utc::now, frozen);
    if let Ok(s) = &synced {
        let label = outcome(&s.ended, false).label;
        let tip = s.remote.map(|r| r.to_string());
        let took = started.elapsed().as_secs_f64();
        crate::log::summary(label, tip.as_deref(), format!("{} ({took:.2}s)", s.summary));
    }
    let machine = host::Facts::gather();
    let (review, reboot_failed) = reboot::review(
        &cfg.reboot,
        &cfg.rel(&cfg.reboot.file),
        layout,
        &st,
        &machine,
        Utc::now(),
        frozen,
    );
    st.reboot = review.state.clone();
    let ended = match &synced {
        Ok(s) => s.ended.clone(),
        Err(e) => Ended::Error(class_of(e)),
    };
    let out = outcome(&ended, review.action == Action::Invalid || reboot_failed);
    let elapsed = started.elapsed();
    let mut last_pass = record::last_pass(&synced, &out, started_at, elapsed);
    last_pass.verification = Some(verify::describe(cfg.verify.as_ref()));
    let walked = synced
        .as_ref()
        .ok()
        .map(|s| (s.commits.len() + s.commits_omitted) as u64);
    crate::metrics::carry_over(before.as_ref(), &mut last_pass, &st, walked);
    st.last_pass = Some(last_pass.clone());
    crate::metrics::count(loaded.as_ref(), &mut st, out.label);
    // The outcome is on disk before anything slow or optional (notifications). A
    // pass that changed nothing writes nothing durable: its record goes to the lock
    // file, unsynced, for `status`.
    if record::changed(loaded.as_ref(), &st) {
        if let Err(e) = state::save(&layout.state_file(), &st) {
            // Say what the pass itself ended with, too: its own error (a full disk
            // while fetching, say) explains why the state could not be written.
            return Err(match synced {
                Err(pass) => pass.context(format!("and the state could not be recorded: {e:#}")),
                Ok(_) => e,
            });
        }
    }
    lock::record(&lock, &last_pass);
    crate::metrics::publish(cfg.metrics.as_ref(), layout, &st);
    if let Some(target) = &cfg.notify {
        let alerts = st.notify.clone();
        let facts = record::facts(cfg, &st, previous, &synced, &out, elapsed);
        let channels = [
            ("deploy", out.signal.clone()),
            ("reboot", review.signal),
            ("freeze", freeze_signal),
        ];
        crate::notify::report::notify(target, &facts, &mut st.notify, channels);
        if st.notify != alerts {
            if let Err(e) = state::save(&layout.state_file(), &st) {
                warn!("could not record which notifications were sent: {e:#}");
            }
        }
    }
    // A due reboot happens whatever else failed: a Git outage must not cancel it.
    let exit = match review.action {
        Action::Reboot { requested } => {
            reboot::carry_out(&cfg.reboot, layout, &mut st, requested, &machine, out.exit)?
        }
        _ => out.exit,
    };
    synced.map(|_| exit)
}
