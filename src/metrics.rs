//! The Prometheus textfile: which commit a host runs, how its passes go, whether
//! it is frozen or waits to reboot, in node_exporter's text format, written
//! atomically at the end of every pass and by every operator command that changes
//! state. Also the counters behind its `*_total` series. Rendering is a pure
//! function of the state, the freeze record and the last pass; one table row
//! per metric.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::decide::outcome::Label;
use crate::decide::reboot::RequestStatus;
use crate::decide::Classification;
use crate::log::{debug, warn};
use crate::state::freeze::{self, FreezeState};
use crate::state::{AttemptResult, Behind, Deployed, LastPass, Layout, State};

/// node_exporter's textfile directory in Debian's `prometheus-node-exporter`.
pub const DEFAULT_TEXTFILE_DIR: &str = "/var/lib/prometheus/node-exporter";
/// The file's mode: node_exporter runs as its own user and must read it.
pub const FILE_MODE: u32 = 0o644;
/// The label naming the instance of a template unit in queries. Prometheus sets
/// `instance` on every scraped series (node_exporter's host:port) and renames an
/// `instance` label of the file to `exported_instance`, so this one is the label
/// to query by.
pub const INSTANCE_LABEL: &str = "gitops_instance";
/// The instance is also written as `instance`, the name tools that read the file
/// itself (and the `exported_instance` label in Prometheus) know it by.
pub const PLAIN_INSTANCE_LABEL: &str = "instance";
/// What `--metrics-file` takes to write no file.
pub const OFF: &str = "off";

/// Where the textfile goes and the instance its series are labelled with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub file: PathBuf,
    pub instance: Option<String>,
}

/// The file for `--metrics-file` (`option`): `off` writes none, a path is used as
/// given (relative to `cwd`), and without the option the file is
/// `gitops-run.prom` (`gitops-run-<instance>.prom` for an instance) in
/// node_exporter's textfile directory, when that exists and this user may write
/// to it (`default_dir_usable`): otherwise no file.
pub fn resolve_file(
    option: Option<&str>,
    instance: Option<&str>,
    cwd: &Path,
    default_dir_usable: bool,
) -> Option<PathBuf> {
    match option.map(str::trim) {
        Some(o) if o.eq_ignore_ascii_case(OFF) => None,
        Some(path) => Some(cwd.join(path)),
        None if default_dir_usable => {
            let name = match instance {
                Some(i) => format!("gitops-run-{i}.prom"),
                None => "gitops-run.prom".to_string(),
            };
            Some(Path::new(DEFAULT_TEXTFILE_DIR).join(name))
        }
        None => None,
    }
}

/// Whether the default textfile directory exists and this user may write to it.
pub fn default_dir_usable() -> bool {
    let dir = Path::new(DEFAULT_TEXTFILE_DIR);
    dir.is_dir() && nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_ok()
}

// ---------------------------------------------------------------------------
// Counting
// ---------------------------------------------------------------------------

/// Whether an attempt that ended so counts as failed.
fn failed(result: AttemptResult) -> bool {
    matches!(
        result,
        AttemptResult::Failed
            | AttemptResult::TimedOut
            | AttemptResult::InvalidEntrypoint
            | AttemptResult::Interrupted
            | AttemptResult::SecretsFailed
            | AttemptResult::Unhealthy
    )
}

/// Bump the durable counters of `st` for what changed since `loaded` (the state as
/// read from disk; `None`: there was none): a deployment, a failed attempt, a newly
/// refused tip (`label` is how the pass or command ended). Nothing is bumped when
/// nothing else changed, so counting never makes a pass write `state.json`.
pub fn count(loaded: Option<&State>, st: &mut State, label: Label) {
    if let Some(l) = loaded {
        let mut same = l.clone();
        same.last_pass = st.last_pass.clone();
        same.counters = st.counters.clone();
        if same == *st {
            return;
        }
    }
    let key = |d: &Deployed| (d.commit.clone(), d.deployed_at);
    let deployed_before = loaded.and_then(|l| l.deployed.as_ref()).map(key);
    let attempt_key = |a: &crate::state::Attempt| (a.commit.clone(), a.started_at, a.result);
    let attempt_before = loaded.and_then(|l| l.attempt.as_ref()).map(attempt_key);
    let remote_before = loaded.and_then(|l| l.remote.clone());

    let c = &mut st.counters;
    if let Some(d) = &st.deployed {
        if Some(key(d)) != deployed_before {
            c.deployments = c.deployments.saturating_add(1);
            if d.reason == Some(crate::decide::Reason::Rollback) {
                c.rollbacks = c.rollbacks.saturating_add(1);
            }
        }
    }
    if let Some(a) = &st.attempt {
        if failed(a.result) && Some(attempt_key(a)) != attempt_before {
            c.failed_attempts = c.failed_attempts.saturating_add(1);
            if a.result == AttemptResult::Unhealthy
                && matches!(label, Label::Unhealthy | Label::RollbackFailed)
                && st.deployed.is_some()
            {
                c.health_rollbacks = c.health_rollbacks.saturating_add(1);
            }
        }
    }
    if label == Label::Refused && st.remote != remote_before {
        c.refusals = c.refusals.saturating_add(1);
    }
    // A signature refusal counts once per verdict: a new tip, or new keys.
    let verdict = |u: &crate::state::Unverified| (u.tip.clone(), u.keys_digest.clone());
    if label == Label::Unverified
        && st.unverified.as_ref().map(verdict)
            != loaded.and_then(|l| l.unverified.as_ref()).map(verdict)
    {
        c.refusals = c.refusals.saturating_add(1);
    }
}

/// Fill in the tally of `pass` (the record of the pass that just ended), carried
/// over from `before` (the last pass's record): one more pass of its outcome, the
/// time of the last pass that exited 0, and the commits pending between the
/// deployed commit and the remote tip when this pass walked them (`walked`: it
/// does when it tried to apply the tip and failed).
pub fn carry_over(before: Option<&LastPass>, pass: &mut LastPass, st: &State, walked: Option<u64>) {
    let mut tally = before.map(|b| b.tally.clone()).unwrap_or_default();
    let n = tally
        .passes
        .entry(pass.outcome.as_str().to_string())
        .or_default();
    *n = n.saturating_add(1);
    if pass.exit_code == 0 {
        tally.last_success_at = Some(ended_at(pass));
    }
    // Passes that walked the commits between the deployed commit and a tip they
    // could not deploy; and those that hold a tip back (frozen, soaking, refused
    // by signature), which walk them only when the tip descends from the
    // deployed commit (else they walked nothing, and nothing is known).
    let tried = matches!(
        pass.outcome,
        Label::Failed | Label::Interrupted | Label::InvalidEntrypoint
    ) || (matches!(
        pass.outcome,
        Label::Frozen | Label::Soaking | Label::Unverified
    ) && walked.is_some_and(|n| n > 0));
    if let (true, Some(commits), Some(remote)) = (tried, walked, &pass.remote_commit) {
        tally.behind = Some(Behind {
            deployed: st.deployed.as_ref().map(|d| d.commit.clone()),
            remote: remote.clone(),
            commits,
        });
    }
    pass.tally = tally;
}

/// When a pass ended.
pub fn ended_at(p: &LastPass) -> DateTime<Utc> {
    let took = chrono::Duration::milliseconds(i64::try_from(p.duration_ms).unwrap_or(i64::MAX));
    p.started_at
        .checked_add_signed(took)
        .unwrap_or(p.started_at)
}

// ---------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------

/// What a metrics file is rendered from.
pub struct Facts<'a> {
    /// `state.json`, when a pass has written one.
    pub state: Option<&'a State>,
    /// The newest last-pass record (the lock file's or `state.json`'s).
    pub last_pass: Option<&'a LastPass>,
    pub freeze: &'a FreezeState,
    pub now: DateTime<Utc>,
}

impl Facts<'_> {
    fn deployed(&self) -> Option<&Deployed> {
        self.state.and_then(|s| s.deployed.as_ref())
    }
}

/// The labels every series carries.
pub struct Labels<'a> {
    pub repo: &'a str,
    pub branch: &'a str,
    pub instance: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Gauge,
    Counter,
}

/// One sample: the labels beyond the common ones, and the value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

/// A metric: its name, help text, type and how its samples follow from the facts.
pub struct Metric {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Type,
    pub samples: fn(&Facts<'_>) -> Vec<Sample>,
}

fn value(v: f64) -> Vec<Sample> {
    vec![Sample {
        labels: Vec::new(),
        value: v,
    }]
}

fn maybe(v: Option<f64>) -> Vec<Sample> {
    v.map(value).unwrap_or_default()
}

fn info(label: &'static str, v: &str) -> Vec<Sample> {
    vec![Sample {
        labels: vec![(label, v.to_string())],
        value: 1.0,
    }]
}

fn flag(on: bool) -> f64 {
    if on {
        1.0
    } else {
        0.0
    }
}

/// Seconds since the epoch, to the millisecond.
fn secs(t: &DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// Every outcome a pass can end with, in the order the file lists them.
pub const OUTCOMES: [Label; 16] = [
    Label::UpToDate,
    Label::Applied,
    Label::Unchanged,
    Label::Failed,
    Label::Interrupted,
    Label::InvalidEntrypoint,
    Label::Waiting,
    Label::Refused,
    Label::Unverified,
    Label::Frozen,
    Label::Soaking,
    Label::Unhealthy,
    Label::RollbackFailed,
    Label::Reconciled,
    Label::ReconcileFailed,
    Label::Error,
];

/// A reason a pass refuses the remote tip, and whether the last pass did for it.
pub type Refusal = (&'static str, fn(&LastPass) -> bool);

/// Why a pass refuses the remote tip: the reason label and whether a pass refused
/// for it.
pub const REFUSALS: &[Refusal] = &[
    ("rewrite", |p| {
        p.outcome == Label::Refused
            && matches!(
                p.classification,
                Some(Classification::RemoteBehind | Classification::Diverged)
            )
    }),
    ("signature", |p| p.outcome == Label::Unverified),
];

/// One sample per outcome: the label `outcome` and `f` of it.
fn per_outcome(f: impl Fn(Label) -> f64) -> Vec<Sample> {
    OUTCOMES
        .iter()
        .map(|o| Sample {
            labels: vec![("outcome", o.as_str().to_string())],
            value: f(*o),
        })
        .collect()
}

fn reboot_pending<'a>(f: &Facts<'a>) -> Option<&'a crate::decide::reboot::RebootRequest> {
    f.state.and_then(|s| s.reboot.request.as_ref()).filter(|r| {
        matches!(
            r.status,
            RequestStatus::Pending | RequestStatus::Held | RequestStatus::Rebooting
        )
    })
}

/// The commits the remote tip is ahead of the deployed commit, when known: none
/// when they are the same commit, else the count of the last pass that walked them
/// from this deployed commit to this tip.
fn commits_behind(f: &Facts<'_>) -> Option<u64> {
    let st = f.state?;
    let remote = &st.remote.as_ref()?.commit;
    let deployed = st.deployed.as_ref().map(|d| &d.commit);
    if deployed == Some(remote) {
        return Some(0);
    }
    let b = f.last_pass?.tally.behind.as_ref()?;
    (&b.remote == remote && b.deployed.as_ref() == deployed).then_some(b.commits)
}

fn counter(f: &Facts<'_>, pick: fn(&crate::state::Counters) -> u64) -> Vec<Sample> {
    value(f.state.map(|s| pick(&s.counters)).unwrap_or(0) as f64)
}

/// The metrics, in the order the file lists them. Adding one is adding a row.
pub const METRICS: &[Metric] = &[
    Metric {
        name: "gitops_run_build_info",
        help: "Always 1: the version of gitops-run that wrote this file.",
        kind: Type::Gauge,
        samples: |_| info("version", env!("CARGO_PKG_VERSION")),
    },
    Metric {
        name: "gitops_run_deployed_info",
        help: "Always 1: the deployed commit (the last one whose entrypoint exited 0).",
        kind: Type::Gauge,
        samples: |f| {
            f.deployed()
                .map(|d| info("commit", &d.commit))
                .unwrap_or_default()
        },
    },
    Metric {
        name: "gitops_run_deployed_timestamp_seconds",
        help: "When the deployed commit was deployed.",
        kind: Type::Gauge,
        samples: |f| maybe(f.deployed().map(|d| secs(&d.deployed_at))),
    },
    Metric {
        name: "gitops_run_deployed_commit_timestamp_seconds",
        help: "The committer time of the deployed commit.",
        kind: Type::Gauge,
        samples: |f| maybe(f.deployed().and_then(|d| d.commit_time.as_ref()).map(secs)),
    },
    Metric {
        name: "gitops_run_remote_info",
        help: "Always 1: the branch tip the last successful fetch found.",
        kind: Type::Gauge,
        samples: |f| {
            f.state
                .and_then(|s| s.remote.as_ref())
                .map(|r| info("commit", &r.commit))
                .unwrap_or_default()
        },
    },
    Metric {
        name: "gitops_run_commits_behind",
        help: "Commits on the branch not yet deployed (present when known).",
        kind: Type::Gauge,
        samples: |f| maybe(commits_behind(f).map(|n| n as f64)),
    },
    Metric {
        name: "gitops_run_last_pass_timestamp_seconds",
        help: "When the last pass ended.",
        kind: Type::Gauge,
        samples: |f| maybe(f.last_pass.map(|p| secs(&ended_at(p)))),
    },
    Metric {
        name: "gitops_run_last_pass_duration_seconds",
        help: "How long the last pass took.",
        kind: Type::Gauge,
        samples: |f| maybe(f.last_pass.map(|p| p.duration_ms as f64 / 1000.0)),
    },
    Metric {
        name: "gitops_run_last_pass_outcome",
        help: "1 for the outcome the last pass ended with, 0 for the others.",
        kind: Type::Gauge,
        samples: |f| match f.last_pass {
            Some(p) => per_outcome(|o| flag(o == p.outcome)),
            None => Vec::new(),
        },
    },
    Metric {
        name: "gitops_run_last_pass_exit_code",
        help: "The exit code of the last pass (see docs/design.md).",
        kind: Type::Gauge,
        samples: |f| maybe(f.last_pass.map(|p| f64::from(p.exit_code))),
    },
    Metric {
        name: "gitops_run_last_success_timestamp_seconds",
        help: "When the last pass that exited 0 ended.",
        kind: Type::Gauge,
        samples: |f| {
            maybe(
                f.last_pass
                    .and_then(|p| p.tally.last_success_at)
                    .map(|t| secs(&t)),
            )
        },
    },
    Metric {
        name: "gitops_run_failing_consecutive",
        help: "Consecutive failed attempts of the commit that fails (0: none fails).",
        kind: Type::Gauge,
        samples: |f| {
            value(
                f.state
                    .and_then(|s| s.failing.as_ref())
                    .map_or(0.0, |x| f64::from(x.consecutive)),
            )
        },
    },
    Metric {
        name: "gitops_run_next_retry_timestamp_seconds",
        help: "When the failing commit is tried again (present while one waits for its backoff).",
        kind: Type::Gauge,
        samples: |f| {
            maybe(
                f.state
                    .and_then(|s| s.failing.as_ref())
                    .filter(|x| !x.unhealthy)
                    .map(|x| secs(&x.next_retry_at)),
            )
        },
    },
    Metric {
        name: "gitops_run_refused",
        help: "1 when the last pass refused the remote tip for this reason.",
        kind: Type::Gauge,
        samples: |f| match f.last_pass {
            Some(p) => REFUSALS
                .iter()
                .map(|(reason, holds)| Sample {
                    labels: vec![("reason", reason.to_string())],
                    value: flag(holds(p)),
                })
                .collect(),
            None => Vec::new(),
        },
    },
    Metric {
        name: "gitops_run_frozen",
        help: "1 while the host is frozen (gitops-run freeze, or a rollback's pin).",
        kind: Type::Gauge,
        samples: |f| value(flag(f.freeze.holds(f.now))),
    },
    Metric {
        name: "gitops_run_frozen_timestamp_seconds",
        help: "When the host was frozen (present while a freeze is recorded).",
        kind: Type::Gauge,
        samples: |f| match f.freeze {
            FreezeState::Frozen(x) => value(secs(&x.since)),
            _ => Vec::new(),
        },
    },
    Metric {
        name: "gitops_run_frozen_until_timestamp_seconds",
        help: "When the freeze ends by itself (present for a freeze with --until).",
        kind: Type::Gauge,
        samples: |f| match f.freeze {
            FreezeState::Frozen(x) => maybe(x.until.as_ref().map(secs)),
            _ => Vec::new(),
        },
    },
    Metric {
        name: "gitops_run_unknown_state",
        help: "1 while the host is in an unknown state: a health rollback failed (see gitops-run status).",
        kind: Type::Gauge,
        samples: |f| value(flag(f.state.is_some_and(|s| s.unknown_state.is_some()))),
    },
    Metric {
        name: "gitops_run_reboot_pending",
        help: "1 while the deployed commit requests a reboot that has not happened.",
        kind: Type::Gauge,
        samples: |f| value(flag(reboot_pending(f).is_some())),
    },
    Metric {
        name: "gitops_run_reboot_at_timestamp_seconds",
        help: "When the pending reboot is due (the requested time plus this host's splay).",
        kind: Type::Gauge,
        samples: |f| {
            maybe(
                reboot_pending(f)
                    .and_then(|r| r.effective_at.as_ref())
                    .map(secs),
            )
        },
    },
    Metric {
        name: "gitops_run_passes_total",
        help: "Passes by outcome (kept in the unsynced last-pass record: may reset after a crash).",
        kind: Type::Counter,
        samples: |f| {
            let passes = f.last_pass.map(|p| &p.tally.passes);
            per_outcome(|o| passes.and_then(|m| m.get(o.as_str())).copied().unwrap_or(0) as f64)
        },
    },
    Metric {
        name: "gitops_run_deployments_total",
        help: "Commits deployed (entrypoint exited 0, current switched), rollbacks included.",
        kind: Type::Counter,
        samples: |f| counter(f, |c| c.deployments),
    },
    Metric {
        name: "gitops_run_rollbacks_total",
        help: "Deployments by gitops-run rollback.",
        kind: Type::Counter,
        samples: |f| counter(f, |c| c.rollbacks),
    },
    Metric {
        name: "gitops_run_failed_attempts_total",
        help: "Attempts that failed: the entrypoint failed, timed out, was interrupted or could not run, or the health check failed.",
        kind: Type::Counter,
        samples: |f| counter(f, |c| c.failed_attempts),
    },
    Metric {
        name: "gitops_run_refusals_total",
        help: "Remote tips refused (each tip once, however many passes refuse it).",
        kind: Type::Counter,
        samples: |f| counter(f, |c| c.refusals),
    },
    Metric {
        name: "gitops_run_drift_corrected_total",
        help: "Reconcile runs that corrected drift.",
        kind: Type::Counter,
        samples: |f| counter(f, |c| c.drift_corrected),
    },
    Metric {
        name: "gitops_run_health_rollbacks_total",
        help: "Automatic rollbacks after a failed health check, whether they worked or not.",
        kind: Type::Counter,
        samples: |f| counter(f, |c| c.health_rollbacks),
    },
];

/// The name of every metric the file can hold.
#[cfg(test)]
pub fn names() -> impl Iterator<Item = &'static str> {
    METRICS.iter().map(|m| m.name)
}

// ---------------------------------------------------------------------------
// Rendering and writing
// ---------------------------------------------------------------------------

/// A label value in the text format: backslash, double quote and newline escaped.
fn escape_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The file's text: every metric with at least one sample, with its help and type.
pub fn render(facts: &Facts<'_>, labels: &Labels<'_>) -> String {
    let mut common: Vec<(&str, &str)> = vec![("repo", labels.repo), ("branch", labels.branch)];
    if let Some(i) = labels.instance {
        common.push((PLAIN_INSTANCE_LABEL, i));
        common.push((INSTANCE_LABEL, i));
    }
    let mut out = String::new();
    for m in METRICS {
        let samples = (m.samples)(facts);
        if samples.is_empty() {
            continue;
        }
        let kind = match m.kind {
            Type::Gauge => "gauge",
            Type::Counter => "counter",
        };
        let _ = writeln!(out, "# HELP {} {}", m.name, m.help);
        let _ = writeln!(out, "# TYPE {} {kind}", m.name);
        for s in samples {
            let pairs: Vec<String> = common
                .iter()
                .map(|(k, v)| (*k, *v))
                .chain(s.labels.iter().map(|(k, v)| (*k, v.as_str())))
                .map(|(k, v)| format!("{k}=\"{}\"", escape_value(v)))
                .collect();
            let _ = writeln!(out, "{}{{{}}} {}", m.name, pairs.join(","), s.value);
        }
    }
    out
}

/// Replace `path` with `text` atomically: a temporary file in the same directory
/// (hidden, not ending in `.prom`, so node_exporter never reads it), mode 0644,
/// renamed over the file. No fsync: a crash may lose the file's latest version,
/// never leave half of one, and the next pass writes it again.
pub fn write_file(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !dir.is_dir() {
        anyhow::bail!(
            "failed to write the metrics file {}: its directory {} does not exist",
            path.display(),
            dir.display()
        );
    }
    let write = || -> std::io::Result<()> {
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .tempfile_in(dir)?;
        tmp.write_all(text.as_bytes())?;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    };
    write().with_context(|| format!("failed to write the metrics file {}", path.display()))
}

/// Write the metrics file of `target` (nothing without one) from `st` (as just
/// recorded), the newest last-pass record and the freeze record as it is now. A
/// failure is logged and never fails a pass or a command.
pub fn publish(target: Option<&Target>, layout: &Layout, st: &State) {
    write_from(target, layout, Some(st), &st.repo, &st.branch);
}

/// [`publish`] for an operator command: the state as it is on disk now; `repo`
/// and `branch` (as configured) label the series while there is none.
pub fn publish_from_disk(target: Option<&Target>, layout: &Layout, repo: &str, branch: &str) {
    if target.is_none() {
        return;
    }
    let st = crate::state::load(&layout.state_file()).ok().flatten();
    let (repo, branch) = match &st {
        Some(s) => (s.repo.as_str(), s.branch.as_str()),
        None => (repo, branch),
    };
    write_from(target, layout, st.as_ref(), repo, branch);
}

fn write_from(
    target: Option<&Target>,
    layout: &Layout,
    st: Option<&State>,
    repo: &str,
    branch: &str,
) {
    let Some(target) = target else { return };
    let last = crate::state::latest_pass(st, &layout.lock());
    let freeze = freeze::load(&layout.freeze_file());
    let facts = Facts {
        state: st,
        last_pass: last.as_ref(),
        freeze: &freeze,
        now: Utc::now(),
    };
    let labels = Labels {
        repo,
        branch,
        instance: target.instance.as_deref(),
    };
    match write_file(&target.file, &render(&facts, &labels)) {
        Ok(()) => debug!("wrote the metrics to {}", target.file.display()),
        Err(e) => warn!("{e:#}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::Failing;
    use crate::state::freeze::{Freeze, FreezeKind, FREEZE_FORMAT};
    use crate::state::{Attempt, RemoteTip};
    use chrono::TimeZone;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    fn deployed(commit: &str, at: i64) -> Deployed {
        Deployed {
            commit: commit.into(),
            subject: "s".into(),
            commit_time: Some(t(-100)),
            deployed_at: t(at),
            reason: Some(crate::decide::Reason::New),
            secrets: false,
            last_run_at: None,
            signed_by: None,
        }
    }

    fn pass(outcome: Label, exit_code: u8) -> LastPass {
        LastPass {
            started_at: t(1000),
            duration_ms: 2500,
            remote_commit: Some("b".repeat(40)),
            classification: Some(Classification::Behind),
            outcome,
            exit_code,
            error: None,
            tally: Default::default(),
            verification: None,
        }
    }

    fn attempt(commit: &str, result: AttemptResult, at: i64) -> Attempt {
        Attempt {
            commit: commit.into(),
            subject: "s".into(),
            reason: crate::decide::Reason::New,
            started_at: t(at),
            finished_at: Some(t(at + 1)),
            result,
            exit_code: Some(1),
            log: None,
            pid: None,
            pid_start_ticks: None,
            boot_id: None,
            signed_by: None,
        }
    }

    fn labels() -> Labels<'static> {
        Labels {
            repo: "https://git.example/ops/host.git",
            branch: "main",
            instance: None,
        }
    }

    /// The value of the series `name` whose labels include `with`, from `text`.
    fn sample(text: &str, name: &str, with: &str) -> Option<String> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(with))
            .map(|l| l.rsplit(' ').next().unwrap().to_string())
    }

    #[test]
    fn the_default_file_needs_the_textfile_directory_and_names_the_instance() {
        let cwd = Path::new("/etc");
        assert_eq!(resolve_file(None, None, cwd, false), None);
        assert_eq!(
            resolve_file(None, None, cwd, true),
            Some(PathBuf::from(
                "/var/lib/prometheus/node-exporter/gitops-run.prom"
            ))
        );
        assert_eq!(
            resolve_file(None, Some("monitoring"), cwd, true),
            Some(PathBuf::from(
                "/var/lib/prometheus/node-exporter/gitops-run-monitoring.prom"
            ))
        );
        assert_eq!(resolve_file(Some("off"), None, cwd, true), None);
        assert_eq!(resolve_file(Some("OFF"), None, cwd, false), None);
        assert_eq!(
            resolve_file(Some("m/x.prom"), Some("i"), cwd, false),
            Some(PathBuf::from("/etc/m/x.prom")),
            "a given path is used as given, wherever the default directory is"
        );
    }

    #[test]
    fn a_state_that_did_not_change_bumps_no_counter() {
        let mut loaded = State::new("r", "main");
        loaded.deployed = Some(deployed("a", 0));
        loaded.attempt = Some(attempt("b", AttemptResult::Failed, 5));
        loaded.remote = Some(RemoteTip {
            commit: "b".into(),
            classification: Classification::Diverged,
            first_seen: None,
            soak_until: None,
        });
        let mut st = loaded.clone();
        st.last_pass = Some(pass(Label::Refused, 4));
        count(Some(&loaded), &mut st, Label::Refused);
        assert_eq!(st.counters, Default::default());
    }

    #[test]
    fn deployments_failures_rollbacks_and_new_refusals_are_counted_once() {
        let loaded = State::new("r", "main");
        let mut st = loaded.clone();
        st.mark_deployed(deployed("a", 0));
        count(Some(&loaded), &mut st, Label::Applied);
        assert_eq!((st.counters.deployments, st.counters.rollbacks), (1, 0));

        let loaded = st.clone();
        st.attempt = Some(attempt("b", AttemptResult::TimedOut, 10));
        count(Some(&loaded), &mut st, Label::Failed);
        assert_eq!(st.counters.failed_attempts, 1);
        let loaded = st.clone();
        count(Some(&loaded), &mut st, Label::Waiting);
        assert_eq!(st.counters.failed_attempts, 1, "the same attempt again");

        let loaded = st.clone();
        let mut back = deployed("z", 20);
        back.reason = Some(crate::decide::Reason::Rollback);
        st.mark_deployed(back);
        count(Some(&loaded), &mut st, Label::Applied);
        assert_eq!((st.counters.deployments, st.counters.rollbacks), (2, 1));

        let loaded = st.clone();
        st.remote = Some(RemoteTip {
            commit: "c".into(),
            classification: Classification::Diverged,
            first_seen: None,
            soak_until: None,
        });
        count(Some(&loaded), &mut st, Label::Refused);
        assert_eq!(st.counters.refusals, 1);

        // A running attempt settled as interrupted by the next pass is a failure.
        let mut loaded = st.clone();
        loaded.attempt = Some(attempt("d", AttemptResult::Running, 30));
        st.attempt = Some(attempt("d", AttemptResult::Interrupted, 30));
        count(Some(&loaded), &mut st, Label::UpToDate);
        assert_eq!(st.counters.failed_attempts, 2);
    }

    #[test]
    fn a_health_rollback_counts_a_failed_attempt_and_a_rollback_and_shows_unknown_state() {
        let mut st = State::new("r", "main");
        st.mark_deployed(deployed("a", 0));
        let loaded = st.clone();
        st.attempt = Some(attempt("b", AttemptResult::Unhealthy, 10));
        count(Some(&loaded), &mut st, Label::Unhealthy);
        assert_eq!(
            (st.counters.failed_attempts, st.counters.health_rollbacks),
            (1, 1)
        );
        let loaded = st.clone();
        st.attempt = Some(attempt("c", AttemptResult::Unhealthy, 20));
        st.unknown_state = Some(crate::state::UnknownState {
            since: t(21),
            failed: "c".into(),
            rollback_to: "a".into(),
            detail: "d".into(),
        });
        count(Some(&loaded), &mut st, Label::RollbackFailed);
        assert_eq!(st.counters.health_rollbacks, 2, "a failed rollback counts");
        let text = render(
            &Facts {
                state: Some(&st),
                last_pass: None,
                freeze: &FreezeState::Thawed,
                now: t(30),
            },
            &Labels {
                repo: "r",
                branch: "main",
                instance: None,
            },
        );
        assert!(text.contains("gitops_run_unknown_state{repo=\"r\",branch=\"main\"} 1\n"));
        assert!(text.contains("gitops_run_health_rollbacks_total{repo=\"r\",branch=\"main\"} 2\n"));

        // Unhealthy with nothing deployed before: no rollback happened.
        let mut st = State::new("r", "main");
        let loaded = st.clone();
        st.attempt = Some(attempt("b", AttemptResult::Unhealthy, 10));
        count(Some(&loaded), &mut st, Label::Unhealthy);
        assert_eq!(
            (st.counters.failed_attempts, st.counters.health_rollbacks),
            (1, 0)
        );
    }

    #[test]
    fn a_rolled_back_unhealthy_commit_announces_no_retry_time() {
        let mut st = State::new("r", "main");
        st.failing = Some(Failing {
            commit: "b".repeat(40),
            consecutive: 1,
            next_retry_at: t(300),
            unhealthy: true,
        });
        let text = |st: &State| {
            render(
                &Facts {
                    state: Some(st),
                    last_pass: None,
                    freeze: &FreezeState::Thawed,
                    now: t(0),
                },
                &Labels {
                    repo: "r",
                    branch: "main",
                    instance: None,
                },
            )
        };
        let unhealthy = text(&st);
        assert!(
            unhealthy.contains("gitops_run_failing_consecutive{"),
            "{unhealthy}"
        );
        assert!(
            !unhealthy.contains("gitops_run_next_retry_timestamp_seconds{"),
            "{unhealthy}"
        );
        st.failing.as_mut().unwrap().unhealthy = false;
        assert!(text(&st).contains("gitops_run_next_retry_timestamp_seconds{"));
    }

    #[test]
    fn the_tally_counts_passes_and_carries_the_last_success() {
        let st = State::new("r", "main");
        let mut first = pass(Label::UpToDate, 0);
        carry_over(None, &mut first, &st, Some(3));
        assert_eq!(
            first.tally.behind, None,
            "an up-to-date pass walked nothing"
        );
        assert_eq!(first.tally.passes.get("up-to-date"), Some(&1));
        assert_eq!(
            first.tally.last_success_at,
            Some(t(1002) + chrono::Duration::milliseconds(500))
        );
        let mut second = pass(Label::Error, 3);
        second.started_at = t(2000);
        carry_over(Some(&first), &mut second, &st, None);
        assert_eq!(second.tally.passes.get("up-to-date"), Some(&1));
        assert_eq!(second.tally.passes.get("error"), Some(&1));
        assert_eq!(
            second.tally.last_success_at, first.tally.last_success_at,
            "a failed pass keeps the last success"
        );
    }

    #[test]
    fn commits_behind_is_known_only_for_the_commits_it_was_counted_between() {
        let tip = "b".repeat(40);
        let mut st = State::new("r", "main");
        st.deployed = Some(deployed("a", 0));
        st.remote = Some(RemoteTip {
            commit: tip.clone(),
            classification: Classification::Behind,
            first_seen: None,
            soak_until: None,
        });
        let mut p = pass(Label::Failed, 5);
        p.tally.behind = Some(Behind {
            deployed: Some("a".into()),
            remote: tip.clone(),
            commits: 3,
        });
        let thawed = FreezeState::Thawed;
        let facts = |st: &State, p: &LastPass| -> Option<u64> {
            commits_behind(&Facts {
                state: Some(st),
                last_pass: Some(p),
                freeze: &thawed,
                now: t(0),
            })
        };
        assert_eq!(facts(&st, &p), Some(3));
        let mut rolled = st.clone();
        rolled.deployed = Some(deployed("z", 50));
        assert_eq!(
            facts(&rolled, &p),
            None,
            "another commit was deployed since"
        );
        let mut newer = st.clone();
        newer.remote.as_mut().unwrap().commit = "c".repeat(40);
        assert_eq!(facts(&newer, &p), None, "the tip moved since");
        let mut same = st.clone();
        same.deployed = Some(deployed(&tip, 60));
        assert_eq!(facts(&same, &p), Some(0));
    }

    #[test]
    fn the_file_shows_the_state_freeze_and_last_pass() {
        let mut st = State::new("https://git.example/ops/host.git", "main");
        st.deployed = Some(deployed(&"a".repeat(40), 0));
        st.failing = Some(Failing {
            commit: "b".repeat(40),
            consecutive: 2,
            next_retry_at: t(4000),
            unhealthy: false,
        });
        st.counters.deployments = 7;
        let mut p = pass(Label::Failed, 5);
        p.tally.passes.insert("failed".into(), 2);
        p.tally.passes.insert("up-to-date".into(), 40);
        let freeze = FreezeState::Frozen(Freeze {
            format: FREEZE_FORMAT,
            kind: FreezeKind::Operator,
            reason: "audit".into(),
            by: "alice".into(),
            since: t(10),
            until: None,
            pinned: None,
        });
        let facts = Facts {
            state: Some(&st),
            last_pass: Some(&p),
            freeze: &freeze,
            now: t(20),
        };
        let text = render(&facts, &labels());
        let common = "repo=\"https://git.example/ops/host.git\",branch=\"main\"";
        let a = "a".repeat(40);
        assert!(text.contains(&format!(
            "gitops_run_deployed_info{{{common},commit=\"{a}\"}} 1\n"
        )));
        let v = |name: &str, with: &str| sample(&text, name, with);
        assert_eq!(
            v("gitops_run_deployed_timestamp_seconds", "").as_deref(),
            Some("1800000000")
        );
        assert_eq!(
            v("gitops_run_last_pass_timestamp_seconds", "").as_deref(),
            Some("1800001002.5")
        );
        assert_eq!(
            v("gitops_run_last_pass_duration_seconds", "").as_deref(),
            Some("2.5")
        );
        assert_eq!(
            v("gitops_run_last_pass_outcome", "outcome=\"failed\"").as_deref(),
            Some("1")
        );
        assert_eq!(
            v("gitops_run_last_pass_outcome", "outcome=\"applied\"").as_deref(),
            Some("0")
        );
        assert_eq!(
            v("gitops_run_passes_total", "outcome=\"up-to-date\"").as_deref(),
            Some("40")
        );
        assert_eq!(
            v("gitops_run_passes_total", "outcome=\"error\"").as_deref(),
            Some("0")
        );
        assert_eq!(
            v("gitops_run_failing_consecutive", "").as_deref(),
            Some("2")
        );
        assert_eq!(
            v("gitops_run_next_retry_timestamp_seconds", "").as_deref(),
            Some("1800004000")
        );
        assert_eq!(v("gitops_run_frozen", "").as_deref(), Some("1"));
        assert_eq!(
            v("gitops_run_frozen_timestamp_seconds", "").as_deref(),
            Some("1800000010")
        );
        assert_eq!(
            v("gitops_run_refused", "reason=\"rewrite\"").as_deref(),
            Some("0")
        );
        assert_eq!(v("gitops_run_deployments_total", "").as_deref(), Some("7"));
        assert_eq!(v("gitops_run_reboot_pending", "").as_deref(), Some("0"));
        assert_eq!(v("gitops_run_frozen_until_timestamp_seconds", ""), None);
        assert_eq!(v("gitops_run_commits_behind", ""), None, "no remote known");
        assert!(
            !text.contains("# HELP gitops_run_remote_info"),
            "families without samples are left out"
        );
        // Every series carries the common labels, and every family its type.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.contains(&format!("{{{common}")), "{line}");
        }
        for m in METRICS {
            let has_samples = text
                .lines()
                .any(|l| l.starts_with(&format!("{}{{", m.name)));
            assert_eq!(
                has_samples,
                text.contains(&format!("# TYPE {} ", m.name)),
                "{}",
                m.name
            );
        }
    }

    #[test]
    fn label_values_are_escaped_and_the_instance_is_labelled() {
        let st = State::new("/srv/a \"b\"\\c\nd", "main");
        let thawed = FreezeState::Thawed;
        let facts = Facts {
            state: Some(&st),
            last_pass: None,
            freeze: &thawed,
            now: t(0),
        };
        let text = render(
            &facts,
            &Labels {
                repo: &st.repo,
                branch: "main",
                instance: Some("monitoring"),
            },
        );
        assert!(text.contains(
            "gitops_run_frozen{repo=\"/srv/a \\\"b\\\"\\\\c\\nd\",branch=\"main\",instance=\"monitoring\",gitops_instance=\"monitoring\"} 0\n"
        ), "{text}");
    }

    #[test]
    fn every_outcome_is_listed_once() {
        for o in OUTCOMES {
            // A new outcome fails to compile here until it is listed in OUTCOMES.
            match o {
                Label::UpToDate
                | Label::Applied
                | Label::Unchanged
                | Label::Failed
                | Label::Interrupted
                | Label::InvalidEntrypoint
                | Label::Waiting
                | Label::Refused
                | Label::Unverified
                | Label::Frozen
                | Label::Soaking
                | Label::Unhealthy
                | Label::RollbackFailed
                | Label::Reconciled
                | Label::ReconcileFailed
                | Label::Error => {}
            }
            assert_eq!(OUTCOMES.iter().filter(|x| **x == o).count(), 1);
        }
    }

    #[test]
    fn names_follow_the_prometheus_conventions() {
        let mut seen = std::collections::BTreeSet::new();
        for m in METRICS {
            assert!(seen.insert(m.name), "{} twice", m.name);
            assert!(m.name.starts_with("gitops_run_"), "{}", m.name);
            assert!(
                m.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{}",
                m.name
            );
            assert_eq!(
                m.kind == Type::Counter,
                m.name.ends_with("_total"),
                "{}",
                m.name
            );
            assert!(
                !m.help.contains('\n') && !m.help.contains('\\'),
                "{}",
                m.name
            );
        }
    }

    /// Every `gitops_run_*` name in `text`.
    fn referenced(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = text;
        while let Some(i) = rest.find("gitops_run_") {
            let before = rest[..i].chars().next_back();
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                out.push(tail[..end].to_string());
            }
            rest = &tail[end..];
        }
        out
    }

    fn contrib(name: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("contrib/prometheus")
            .join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    #[test]
    fn the_dashboard_and_the_rules_use_only_metrics_that_exist() {
        let known: Vec<&str> = names().collect();
        let dashboard: serde_json::Value =
            serde_json::from_str(&contrib("gitops-run.dashboard.json"))
                .expect("the dashboard is JSON");
        let mut exprs = Vec::new();
        fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(m) => {
                    for (k, v) in m {
                        match (k.as_str(), v) {
                            ("expr" | "query" | "definition", serde_json::Value::String(s)) => {
                                out.push(s.clone())
                            }
                            ("query", serde_json::Value::Object(q)) => {
                                if let Some(serde_json::Value::String(s)) = q.get("query") {
                                    out.push(s.clone());
                                }
                            }
                            _ => walk(v, out),
                        }
                    }
                }
                serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
                _ => {}
            }
        }
        walk(&dashboard, &mut exprs);
        let panel_exprs = exprs.iter().filter(|e| e.contains("gitops_run_")).count();
        assert!(
            panel_exprs >= 5,
            "the dashboard queries gitops-run's metrics ({panel_exprs})"
        );
        let mut used = std::collections::BTreeSet::new();
        for e in &exprs {
            used.extend(referenced(e));
        }
        used.extend(referenced(&contrib("gitops-run.rules.yml")));
        for name in &used {
            assert!(
                known.contains(&name.as_str()),
                "{name} is not a metric gitops-run writes"
            );
        }
        for needed in [
            "gitops_run_deployed_info",
            "gitops_run_last_pass_timestamp_seconds",
            "gitops_run_last_pass_duration_seconds",
            "gitops_run_failing_consecutive",
        ] {
            assert!(used.contains(needed), "{needed} is not used");
        }
    }
}
