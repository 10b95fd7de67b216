//! Continuous reconciliation: with nothing new on the branch, run the deployed
//! commit's entrypoint again once its last successful run is older than
//! `--reconcile-every`, so that a change made by hand on the host (drift) is
//! corrected. What the entrypoint reports in `GITOPS_DRIFT_FILE` is drift
//! corrected. A failed run changes nothing that is deployed and is retried on the
//! usual backoff.

use anyhow::{Context, Result};

use super::apply::{Applied, Clock};
use super::entrypoint;
use super::job::{self, Health};
use crate::config::PassSettings;
use crate::decide::outcome::Ended;
use crate::decide::{self, Reason};
use crate::exit::{fail, Exit};
use crate::log::{info, short, utc};
use crate::state::{self, logs, Attempt, AttemptResult, Drift, Layout, State};

pub fn reconcile(
    cfg: &PassSettings,
    layout: &Layout,
    st: &mut State,
    clock: Clock,
) -> Result<Applied> {
    let Some(deployed) = st.deployed.clone() else {
        return Err(fail(Exit::Internal, "nothing is deployed to reconcile"));
    };
    let hex = deployed.commit.clone();
    let tree = layout.tree(&hex);
    let started = clock();
    let log = logs::new_path(&layout.logs(), &hex, started)?;
    let failed = |st: &mut State, why: String| {
        let now = clock();
        st.failing = Some(decide::plan::record_failure(st.failing.as_ref(), &hex, now));
        let retry = st
            .failing
            .as_ref()
            .map(|f| utc(&f.next_retry_at))
            .unwrap_or_default();
        Applied {
            ended: Ended::ReconcileFailed {
                commit: hex.clone(),
            },
            summary: format!(
                "reconciling {} failed: {why}; what is deployed is unchanged; next try at {retry}; log: {}",
                short(&hex),
                log.display()
            ),
        }
    };
    let program = match entrypoint::resolve(&tree, &cfg.rel(&cfg.entrypoint)) {
        Ok(p) => p,
        Err(msg) => return Ok(failed(st, msg)),
    };
    info!(
        "reconciling {} {:?}: its last successful run was at {} (--reconcile-every {})",
        short(&hex),
        deployed.subject,
        utc(&deployed.last_run_at.unwrap_or(deployed.deployed_at)),
        crate::duration::format(cfg.reconcile_every.unwrap_or_default())
    );
    let attempt_before = st.attempt.replace(Attempt {
        commit: hex.clone(),
        subject: deployed.subject.clone(),
        reason: Reason::Reconcile,
        started_at: started,
        finished_at: None,
        result: AttemptResult::Running,
        exit_code: None,
        log: Some(log.clone()),
        pid: None,
        pid_start_ticks: None,
        boot_id: crate::host::boot_id(),
        signed_by: deployed.signed_by.clone(),
    });
    let state_path = layout.state_file();
    state::save(&state_path, st)
        .context("failed to record the reconcile run before starting it; nothing was run")?;
    if super::freeze::holds_now(layout, clock()) {
        st.attempt = attempt_before;
        state::save(&state_path, st)?;
        return Ok(Applied {
            ended: Ended::Held { pending: false },
            summary: format!("frozen: {} was not reconciled", short(&hex)),
        });
    }
    let secrets_dir = super::secrets::dir_of(cfg.secrets.as_ref(), &hex);
    let env = job::contract(
        cfg,
        layout,
        &hex,
        Some(&hex),
        Reason::Reconcile,
        secrets_dir.as_deref(),
    );
    job::reset_drift(layout);
    let exited = job::run(
        layout,
        job::Job {
            label: "entrypoint (reconcile)",
            program: &program,
            tree: &cfg.workdir(&tree),
            env: env.clone(),
            timeout: cfg.timeout,
            log: &log,
        },
        |pid| {
            let a = st.attempt.as_mut().expect("attempt set above");
            a.pid = Some(pid);
            a.pid_start_ticks = crate::host::process_start_ticks(pid);
            state::save(&state_path, st)
        },
    )?;
    let health = if exited.success() {
        job::health_check(cfg, layout, &tree, &env, &log)?
    } else {
        Health::NoCheck
    };
    let finished = clock();
    let a = st.attempt.as_mut().expect("attempt set above");
    job::close_attempt(a, &exited, &health, finished);
    logs::prune(&layout.logs(), std::slice::from_ref(&log));
    if !exited.success() {
        let why = format!("{} {}", cfg.entrypoint, job::describe(&exited, cfg.timeout));
        return Ok(failed(st, why));
    }
    if let Health::Failed(why) = health {
        return Ok(failed(st, format!("the health check failed: {why}")));
    }
    st.failing = None;
    if let Some(d) = st.deployed.as_mut() {
        d.last_run_at = Some(finished);
    }
    let (lines, omitted) = job::read_drift(layout);
    let count = lines.len() + omitted;
    let summary = if lines.is_empty() {
        format!("reconciled {}: nothing had drifted", short(&hex))
    } else {
        st.counters.drift_corrected = st.counters.drift_corrected.saturating_add(1);
        let shown = lines
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ");
        let more = if count > 10 {
            format!(" (and {} more)", count - 10)
        } else {
            String::new()
        };
        st.last_drift = Some(Drift {
            at: finished,
            commit: hex.clone(),
            lines,
            omitted,
        });
        format!(
            "reconciled {}: corrected {count} drift(s): {shown}{more}",
            short(&hex)
        )
    };
    Ok(Applied {
        ended: Ended::Reconciled {
            commit: hex.clone(),
            drift: count,
        },
        summary,
    })
}
