//! `gitops-run status`: what is deployed, what was tried, what the last pass saw.
//! The JSON form is a stable interface (documented in docs/design.md).

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::path::PathBuf;

use crate::decide::{Classification, Reason};
use crate::log::{short, utc};
use crate::state::freeze::{self, FreezeKind, FreezeState};
use crate::state::{self, Layout, State};

/// Version of the `status --json` document.
/// Fields may be added to schema 1 (as `frozen`, `history` and `deployed.reason`
/// were); a field is never removed or given another meaning without a new schema.
pub const STATUS_SCHEMA: u32 = 1;

#[derive(Debug, Serialize)]
pub struct StatusDoc {
    pub schema: u32,
    pub state_dir: PathBuf,
    pub repo: Option<String>,
    pub branch: Option<String>,
    pub deployed: Option<DeployedDoc>,
    pub current: Option<String>,
    pub last_attempt: Option<AttemptDoc>,
    pub remote_commit: Option<String>,
    pub classification: Option<Classification>,
    /// While the remote tip soaks (`--soak`): when this host applies it.
    pub soak_until: Option<DateTime<Utc>>,
    pub last_pass: Option<PassDoc>,
    pub consecutive_failures: u32,
    pub next_retry_at: Option<DateTime<Utc>>,
    pub last_log: Option<PathBuf>,
    /// The reboot request in the deployed tree as the last pass saw it.
    pub reboot: Option<crate::decide::reboot::RebootRequest>,
    /// Requested times of reboots carried out, newest first.
    pub reboots_done: Vec<DateTime<Utc>>,
    /// The operator's freeze (or a rollback's pin), if any.
    pub frozen: Option<FrozenDoc>,
    /// Previously deployed commits, newest first.
    pub history: Vec<DeployedDoc>,
    /// Set when a commit failed its health check and the rollback failed too, until
    /// a deployment succeeds.
    pub unknown_state: Option<crate::state::UnknownState>,
    /// The last drift a reconcile run corrected, and how many runs corrected any.
    pub last_drift: Option<crate::state::Drift>,
    pub drift_corrections: u64,
    /// Signature verification as the last pass had it: `off`, or the mode and
    /// where the keys are (`null` before a pass recorded it).
    pub verification: Option<String>,
    /// The remote tip refused for a commit's signature, while it is refused.
    pub unverified: Option<crate::state::Unverified>,
    /// Why `state.json` could not be read, when it could not (status exits 7).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct DeployedDoc {
    pub commit: String,
    pub subject: String,
    pub commit_time: Option<DateTime<Utc>>,
    pub deployed_at: DateTime<Utc>,
    /// Why it was deployed: `initial`, `new`, `retry`, `rewrite`, `rollback`, ...
    pub reason: Option<Reason>,
    /// Who signed it (`{kind, signer, fingerprint}`), when verification was on.
    pub signed_by: Option<crate::verify::Signer>,
}

#[derive(Debug, Serialize)]
pub struct FrozenDoc {
    /// `operator` (`gitops-run freeze`), `rollback`, or `unreadable` (the record
    /// cannot be read: frozen until `unfreeze`).
    pub kind: &'static str,
    pub reason: String,
    pub by: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// For a rollback: the commit the host is pinned to.
    pub pinned: Option<String>,
}

fn deployed_doc(d: &crate::state::Deployed) -> DeployedDoc {
    DeployedDoc {
        commit: d.commit.clone(),
        subject: d.subject.clone(),
        commit_time: d.commit_time,
        deployed_at: d.deployed_at,
        reason: d.reason,
        signed_by: d.signed_by.clone(),
    }
}

fn frozen_doc(f: &FreezeState) -> Option<FrozenDoc> {
    match f {
        FreezeState::Thawed => None,
        FreezeState::Frozen(f) => Some(FrozenDoc {
            kind: match f.kind {
                FreezeKind::Operator => "operator",
                FreezeKind::Rollback => "rollback",
            },
            reason: f.reason.clone(),
            by: Some(f.by.clone()),
            since: Some(f.since),
            until: f.until,
            pinned: f.pinned.clone(),
        }),
        FreezeState::Unreadable(why) => Some(FrozenDoc {
            kind: "unreadable",
            reason: format!("the freeze record cannot be read ({why}); passes hold as if frozen"),
            by: None,
            since: None,
            until: None,
            pinned: None,
        }),
    }
}

#[derive(Debug, Serialize)]
pub struct AttemptDoc {
    pub commit: String,
    pub subject: String,
    pub reason: Reason,
    pub result: &'static str,
    pub exit_code: Option<i32>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub log: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct PassDoc {
    pub started_at: DateTime<Utc>,
    pub duration_ms: u64,
    pub outcome: String,
    pub exit_code: u8,
    pub error: Option<String>,
}

pub fn document(layout: &Layout, st: Option<&State>) -> StatusDoc {
    let mut doc = StatusDoc {
        schema: STATUS_SCHEMA,
        state_dir: layout.root.clone(),
        repo: None,
        branch: None,
        deployed: None,
        current: crate::state::trees::current_commit(layout),
        last_attempt: None,
        remote_commit: None,
        classification: None,
        soak_until: None,
        last_pass: None,
        consecutive_failures: 0,
        next_retry_at: None,
        last_log: None,
        reboot: None,
        reboots_done: Vec::new(),
        frozen: frozen_doc(&freeze::load(&layout.freeze_file()))
            .filter(|_| freeze::load(&layout.freeze_file()).holds(Utc::now())),
        history: Vec::new(),
        unknown_state: None,
        last_drift: None,
        drift_corrections: 0,
        verification: None,
        unverified: None,
        state_error: None,
    };
    let Some(st) = st else { return doc };
    // As a pass would read it: the newest pass's record (a no-op pass writes only
    // the lock file) and the tip's relation it found.
    let mut folded = st.clone();
    let latest = state::absorb_lock_record(&mut folded, &layout.lock());
    let st = &folded;
    doc.unknown_state = st.unknown_state.clone();
    doc.last_drift = st.last_drift.clone();
    doc.drift_corrections = st.counters.drift_corrected;
    doc.history = st.history.iter().map(deployed_doc).collect();
    doc.repo = Some(st.repo.clone());
    doc.branch = Some(st.branch.clone());
    doc.deployed = st.deployed.as_ref().map(deployed_doc);
    doc.last_attempt = st.attempt.as_ref().map(|a| AttemptDoc {
        commit: a.commit.clone(),
        subject: a.subject.clone(),
        reason: a.reason,
        result: a.result.as_str(),
        exit_code: a.exit_code,
        started_at: a.started_at,
        finished_at: a.finished_at,
        log: a.log.clone(),
    });
    doc.last_log = st.attempt.as_ref().and_then(|a| a.log.clone());
    if let Some(r) = &st.remote {
        doc.remote_commit = Some(r.commit.clone());
        doc.classification = Some(r.classification);
        doc.soak_until = r.soak_until;
    }
    if let Some(p) = &latest {
        if st.remote.is_none() {
            doc.remote_commit = p.remote_commit.clone();
            doc.classification = p.classification;
        }
        doc.last_pass = Some(PassDoc {
            started_at: p.started_at,
            duration_ms: p.duration_ms,
            outcome: p.outcome.as_str().to_string(),
            exit_code: p.exit_code,
            error: p.error.clone(),
        });
        doc.verification = p.verification.clone();
    }
    doc.unverified = st.unverified.clone();
    doc.reboot = st.reboot.request.clone();
    doc.reboots_done = st.reboot.done.clone();
    if let Some(f) = &st.failing {
        doc.consecutive_failures = f.consecutive;
        // An unhealthy commit (rolled back) is not retried on a backoff: only a
        // newer commit or `--once` tries it again.
        doc.next_retry_at = (!f.unhealthy).then_some(f.next_retry_at);
    }
    doc
}

pub fn render_text(doc: &StatusDoc) -> String {
    let mut out = Vec::new();
    let frozen_line = doc.frozen.as_ref().map(|f| {
        let who =
            f.by.as_deref()
                .map(|b| format!(" by {b}"))
                .unwrap_or_default();
        let since = f
            .since
            .map(|t| format!(" since {}", utc(&t)))
            .unwrap_or_default();
        let until = f
            .until
            .map(|u| format!(" until {}", utc(&u)))
            .unwrap_or_else(|| " until `gitops-run unfreeze`".into());
        format!("frozen:        {}{who}{since}{until}", f.reason)
    });
    let Some(repo) = &doc.repo else {
        let mut text = match &doc.state_error {
            Some(e) => format!("state:         cannot be read: {e}\n"),
            None => format!(
                "no pass has run yet (state directory {})\n",
                doc.state_dir.display()
            ),
        };
        if let Some(l) = frozen_line {
            text.push_str(&l);
            text.push('\n');
        }
        return text;
    };
    out.push(format!("repo:          {repo}"));
    out.push(format!(
        "branch:        {}",
        doc.branch.as_deref().unwrap_or("")
    ));
    out.push(match &doc.deployed {
        Some(d) => format!(
            "deployed:      {} {:?}{} deployed {}",
            short(&d.commit),
            d.subject,
            d.commit_time
                .map(|t| format!(" (committed {})", utc(&t)))
                .unwrap_or_default(),
            utc(&d.deployed_at)
        ),
        None => "deployed:      nothing yet".to_string(),
    });
    if let Some(s) = doc.deployed.as_ref().and_then(|d| d.signed_by.as_ref()) {
        out.push(format!(
            "signed by:     {} ({}, {})",
            s.signer, s.kind, s.fingerprint
        ));
    }
    match doc.verification.as_deref() {
        Some("off") => out.push(
            "verification:  OFF: commits are deployed without checking signatures (set --allowed-signers or --trusted-keys)".into(),
        ),
        Some(v) => out.push(format!("verification:  {v}")),
        None => {}
    }
    if let Some(u) = &doc.unverified {
        out.push(format!(
            "REFUSED:       since {}: {}",
            utc(&u.at),
            crate::pass::verify::refusal_line(u, false)
        ));
    }
    if let Some(l) = frozen_line {
        out.push(l);
    }
    if let Some(u) = &doc.unknown_state {
        out.push(format!(
            "UNKNOWN STATE: since {}: {} (push a fix or run `gitops-run rollback`)",
            utc(&u.since),
            u.detail
        ));
    }
    if let Some(a) = &doc.last_attempt {
        out.push(format!(
            "last attempt:  {} {:?} {}{} ({}, {})",
            short(&a.commit),
            a.subject,
            a.result,
            a.exit_code
                .map(|c| format!(" with exit code {c}"))
                .unwrap_or_default(),
            a.reason.as_str(),
            utc(&a.started_at)
        ));
    }
    if let Some(r) = &doc.remote_commit {
        let deployed = doc.deployed.as_ref().map(|d| d.commit.as_str());
        let relation = match doc.classification {
            _ if deployed == Some(r.as_str()) => "deployed",
            Some(Classification::Initial) => "nothing deployed yet",
            Some(Classification::UpToDate) => "deployed",
            Some(Classification::Behind) => "newer than the deployed commit, not deployed yet",
            Some(Classification::RemoteBehind) => {
                "older than the deployed commit (branch reset backwards), refused"
            }
            Some(Classification::Diverged) => {
                "does not descend from the deployed commit (history rewritten), refused"
            }
            None => "unknown",
        };
        let soak = match doc.soak_until {
            Some(u) if deployed != Some(r.as_str()) => {
                format!("; soaks until {} (--soak)", utc(&u))
            }
            _ => String::new(),
        };
        out.push(format!(
            "remote:        {} at the last fetch: {relation}{soak}",
            short(r)
        ));
    }
    if let Some(p) = &doc.last_pass {
        out.push(format!(
            "last pass:     {} took {:.2}s: {} (exit {})",
            utc(&p.started_at),
            p.duration_ms as f64 / 1000.0,
            p.outcome,
            p.exit_code
        ));
        if let Some(e) = &p.error {
            out.push(format!("last error:    {e}"));
        }
    }
    if doc.consecutive_failures > 0 {
        let next = match doc.next_retry_at {
            Some(t) => format!("next retry at {}", utc(&t)),
            None => "not retried until a newer commit or `gitops-run --once`".into(),
        };
        out.push(format!(
            "failures:      {} in a row; {next}",
            doc.consecutive_failures
        ));
    }
    if let Some(r) = &doc.reboot {
        out.push(format!(
            "reboot:        {}{}: {}",
            r.status.as_str(),
            r.requested_at
                .map(|t| format!(" (requested {})", utc(&t)))
                .unwrap_or_default(),
            r.detail
        ));
    }
    if let Some(d) = &doc.last_drift {
        out.push(format!(
            "last drift:    {} on {}: {}{}",
            utc(&d.at),
            short(&d.commit),
            d.lines.join("; "),
            if d.omitted > 0 {
                format!(" (and {} more)", d.omitted)
            } else {
                String::new()
            }
        ));
    }
    if let Some(l) = &doc.last_log {
        out.push(format!("last log:      {}", l.display()));
    }
    let deployments: Vec<&DeployedDoc> = doc.deployed.iter().chain(doc.history.iter()).collect();
    if deployments.len() > 1 {
        out.push("deployments:   (newest first)".to_string());
        for d in deployments {
            out.push(format!(
                "  {} {} {:<9} {:?}",
                short(&d.commit),
                utc(&d.deployed_at),
                d.reason.map(|r| r.as_str()).unwrap_or("-"),
                d.subject
            ));
        }
    }
    out.join("\n") + "\n"
}

/// Print the status of the state directory at `layout`.
pub fn show(layout: &Layout, json: bool) -> Result<()> {
    let (st, error) = match state::load(&layout.state_file()) {
        Ok(st) => (st, None),
        // What is not in state.json is still shown (a freeze lives apart), then
        // the error.
        Err(e) => (None, Some(e)),
    };
    let mut doc = document(layout, st.as_ref());
    doc.state_error = error
        .as_ref()
        .map(|e| crate::log::one_line(&format!("{e:#}")));
    let text = if json {
        serde_json::to_string_pretty(&doc)? + "\n"
    } else {
        render_text(&doc)
    };
    use std::io::Write;
    // A reader that goes away early (`| head`) is not an error worth a panic.
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    match error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
