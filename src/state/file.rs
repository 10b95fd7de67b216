//! `state.json`, the memory between passes: what is deployed, what was tried, how a
//! failing commit backs off, reboots carried out and open alerts. Written whole,
//! atomically; a file this build cannot read is an error, never silently reset.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use super::write_atomically;
use crate::decide::outcome::Label;
use crate::decide::reboot::RebootState;
use crate::decide::{Classification, Failing, Reason};
use crate::exit::{fail, Classify, Exit};

/// The version of `state.json` this build writes and reads.
pub const STATE_FORMAT: u32 = 1;
/// How many previously deployed commits `state.json` remembers.
pub const MAX_HISTORY: usize = 20;

/// A commit that is (or was) deployed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployed {
    pub commit: String,
    pub subject: String,
    pub commit_time: Option<DateTime<Utc>>,
    pub deployed_at: DateTime<Utc>,
    /// Why it was deployed (`initial`, `new`, `retry`, `rewrite`, `rollback`, ...);
    /// absent in records written before the reason was kept.
    #[serde(default)]
    pub reason: Option<Reason>,
    /// Whether it came with decrypted secrets (recreated after a reboot).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub secrets: bool,
    /// When its entrypoint last ran successfully (a reconcile run after the
    /// deployment); `None`: at `deployed_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_at: Option<DateTime<Utc>>,
    /// Who signed it, when signature verification was on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<crate::verify::Signer>,
}

/// The remote tip was refused because a commit it brings has no good signature
/// by a trusted key. Checked again only when the tip or the trusted keys change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unverified {
    /// The remote tip that was refused.
    pub tip: String,
    /// The commit whose signature was refused (the tip, or one before it).
    pub commit: String,
    pub subject: String,
    /// `unsigned`, `unknown-key`, `bad-signature`, `key-expired`,
    /// `key-not-yet-valid`, `key-revoked`, `wrong-namespace`, `weak-algorithm`,
    /// `unsupported`, `malformed`, or `incomplete-history` (the commits between
    /// the deployed commit and the tip could not all be read).
    pub reason: String,
    pub detail: String,
    /// The key the signature names, when one could be named.
    pub fingerprint: Option<String>,
    /// The digest of the trusted keys that refused it, and the `--verify` mode
    /// (`<sha256 hex>-all` or `-tip`).
    pub keys_digest: String,
    pub at: DateTime<Utc>,
}

/// A commit failed its health check and running the previous commit's entrypoint
/// to roll back failed too: nobody knows what state the host is in. Kept until a
/// deployment succeeds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnknownState {
    pub since: DateTime<Utc>,
    /// The commit whose health check failed.
    pub failed: String,
    /// The commit the rollback tried to go back to (what `current` names).
    pub rollback_to: String,
    pub detail: String,
}

/// Drift a reconcile run corrected: the lines the entrypoint wrote to
/// `GITOPS_DRIFT_FILE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    pub at: DateTime<Utc>,
    pub commit: String,
    pub lines: Vec<String>,
    /// Lines beyond those kept.
    #[serde(default)]
    pub omitted: usize,
}

/// How an attempt to apply a commit ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttemptResult {
    /// Still running, or the pass died (kill -9, power loss) before it could record the end.
    Running,
    Succeeded,
    Failed,
    TimedOut,
    /// The entrypoint was missing, not executable, or outside the tree; nothing ran.
    InvalidEntrypoint,
    /// gitops-run was stopped by SIGINT/SIGTERM while the entrypoint ran.
    Interrupted,
    /// A secret of the commit cannot be decrypted by this host; nothing ran.
    SecretsFailed,
    /// The entrypoint exited 0 but the health check failed; the host was rolled back.
    Unhealthy,
}

impl AttemptResult {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptResult::Running => "running",
            AttemptResult::Succeeded => "succeeded",
            AttemptResult::Failed => "failed",
            AttemptResult::TimedOut => "timed-out",
            AttemptResult::InvalidEntrypoint => "invalid-entrypoint",
            AttemptResult::Interrupted => "interrupted",
            AttemptResult::SecretsFailed => "secrets-failed",
            AttemptResult::Unhealthy => "unhealthy",
        }
    }
}

/// The last commit tried, whether or not it succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub commit: String,
    pub subject: String,
    pub reason: Reason,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub result: AttemptResult,
    /// The entrypoint's exit status, or 128+signal when a signal ended it.
    pub exit_code: Option<i32>,
    pub log: Option<PathBuf>,
    /// The entrypoint's process (and group) id while it runs, with its start time in
    /// clock ticks since boot and the boot id, so a later pass can tell whether an
    /// orphan of a killed pass is still alive.
    #[serde(default)]
    pub pid: Option<i32>,
    #[serde(default)]
    pub pid_start_ticks: Option<u64>,
    #[serde(default)]
    pub boot_id: Option<String>,
    /// Who signed the commit, when signature verification was on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<crate::verify::Signer>,
}

/// Facts about the last pass, whatever it did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastPass {
    pub started_at: DateTime<Utc>,
    pub duration_ms: u64,
    pub remote_commit: Option<String>,
    pub classification: Option<Classification>,
    pub outcome: Label,
    pub exit_code: u8,
    pub error: Option<String>,
    /// What the metrics carry from pass to pass (see `metrics`).
    #[serde(default)]
    pub tally: PassTally,
    /// Signature verification as this pass had it: `off`, or the mode and keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<String>,
}

/// Facts about passes that change with every pass, carried from one last-pass
/// record to the next: a pass that changed nothing writes its record to the lock
/// file without fsync, so counting here costs no durable write. After a crash the
/// record may be an older one (or the one in `state.json`): Prometheus reads the
/// lower count as a counter reset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassTally {
    /// Passes by outcome label (`up-to-date`, `failed`, ...).
    #[serde(default)]
    pub passes: std::collections::BTreeMap<String, u64>,
    /// When the last pass that exited 0 ended.
    #[serde(default)]
    pub last_success_at: Option<DateTime<Utc>>,
    /// The commits between the deployed commit and the remote tip, as the last pass
    /// that walked them counted them.
    #[serde(default)]
    pub behind: Option<Behind>,
}

/// How many commits `remote` is ahead of `deployed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Behind {
    pub deployed: Option<String>,
    pub remote: String,
    pub commits: u64,
}

/// Events counted for the metrics' `*_total` series. Each is bumped only by a pass
/// or command that writes `state.json` anyway (see `metrics::count`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    /// Commits deployed (an entrypoint exited 0 and `current` was switched).
    pub deployments: u64,
    /// Deployments by `gitops-run rollback`.
    pub rollbacks: u64,
    /// Attempts whose entrypoint failed, timed out, was interrupted or could not run.
    pub failed_attempts: u64,
    /// Remote tips refused (each refused tip once, however many passes refuse it).
    pub refusals: u64,
    /// Reconcile runs that corrected drift.
    pub drift_corrected: u64,
    /// Automatic rollbacks after a failed health check, whether they worked or not.
    pub health_rollbacks: u64,
}

/// The remote tip at the last successful fetch and how it related to the deployed
/// commit then. Kept across failed passes: it is what the host last knew.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteTip {
    pub commit: String,
    pub classification: Classification,
    /// When this host first fetched this tip: the start of its `--soak` (never the
    /// commit's own date, which anyone can set).
    #[serde(default)]
    pub first_seen: Option<DateTime<Utc>>,
    /// When this host applies the tip, while it soaks (`--soak`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak_until: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub format: u32,
    /// The repository (redacted) this state belongs to.
    pub repo: String,
    pub branch: String,
    pub deployed: Option<Deployed>,
    /// Previously deployed commits, newest first.
    #[serde(default)]
    pub history: Vec<Deployed>,
    pub attempt: Option<Attempt>,
    pub failing: Option<Failing>,
    pub last_pass: Option<LastPass>,
    #[serde(default)]
    pub remote: Option<RemoteTip>,
    /// Set while the remote tip is refused for a commit's signature.
    #[serde(default)]
    pub unverified: Option<Unverified>,
    /// Set while the host is in an unknown state (a failed health rollback).
    #[serde(default)]
    pub unknown_state: Option<UnknownState>,
    /// The last drift a reconcile run corrected (how many times one did is in
    /// `counters.drift_corrected`).
    #[serde(default)]
    pub last_drift: Option<Drift>,
    /// The remote tip for which the full history was fetched to classify it: not
    /// fetched again for the same tip.
    #[serde(default)]
    pub deepened_for: Option<String>,
    #[serde(default)]
    pub reboot: RebootState,
    #[serde(default)]
    pub notify: crate::notify::gate::NotifyState,
    #[serde(default)]
    pub counters: Counters,
}

impl State {
    pub fn new(repo: &str, branch: &str) -> State {
        State {
            format: STATE_FORMAT,
            repo: repo.to_string(),
            branch: branch.to_string(),
            deployed: None,
            history: Vec::new(),
            attempt: None,
            failing: None,
            last_pass: None,
            remote: None,
            unverified: None,
            unknown_state: None,
            last_drift: None,
            deepened_for: None,
            reboot: RebootState::default(),
            notify: Default::default(),
            counters: Counters::default(),
        }
    }

    /// Record `d` as deployed, moving the previous one into the history.
    pub fn mark_deployed(&mut self, d: Deployed) {
        if let Some(prev) = self.deployed.take() {
            if prev.commit != d.commit {
                self.history.insert(0, prev);
                self.history.truncate(MAX_HISTORY);
            }
        }
        self.deployed = Some(d);
    }
}

/// Read `state.json`; `None` when there is none yet. A file that cannot be parsed,
/// or was written by a newer format, is an error: history is never reset silently.
pub fn load(path: &Path) -> Result<Option<State>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(anyhow::Error::new(e))
                .with_context(|| format!("failed to read state file {}", path.display()))
                .class(Exit::State)
        }
    };
    let probe: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        fail(
            Exit::State,
            format!(
                "state file {} is corrupt ({e}); move it aside to start over (deployed trees are kept)",
                path.display()
            ),
        )
    })?;
    match probe.get("format") {
        Some(f) if f.as_u64() == Some(u64::from(STATE_FORMAT)) => {}
        Some(f) if f.as_u64().is_some() => {
            return Err(fail(
                Exit::State,
                format!(
                    "state file {} has format {f}; this gitops-run reads format {STATE_FORMAT}",
                    path.display()
                ),
            ))
        }
        Some(f) => {
            return Err(fail(
                Exit::State,
                format!(
                    "state file {} is corrupt: its \"format\" is {f}, not a number; this gitops-run reads format {STATE_FORMAT}",
                    path.display()
                ),
            ))
        }
        None => {
            return Err(fail(
                Exit::State,
                format!(
                    "{} is not a gitops-run state file (no \"format\" field)",
                    path.display()
                ),
            ))
        }
    }
    let state: State = serde_json::from_value(probe).map_err(|e| {
        fail(
            Exit::State,
            format!(
                "state file {} is corrupt ({e}); move it aside to start over (deployed trees are kept)",
                path.display()
            ),
        )
    })?;
    Ok(Some(state))
}

/// The record of the last pass that the pass keeps in the lock file (see
/// `pass::lock`), or `None` when there is none or it cannot be read.
pub fn last_pass_in_lock(lock: &Path) -> Option<LastPass> {
    let text = std::fs::read_to_string(lock).ok()?;
    serde_json::from_str(text.trim()).ok()
}

/// The newer of the last pass recorded in `state.json` and the one in the lock file.
pub fn latest_pass(st: Option<&State>, lock: &Path) -> Option<LastPass> {
    newer(
        st.and_then(|s| s.last_pass.clone()),
        last_pass_in_lock(lock),
    )
}

/// The newer of two last-pass records; the lock file's (`in_lock`) on a tie.
fn newer(in_state: Option<LastPass>, in_lock: Option<LastPass>) -> Option<LastPass> {
    match (in_state, in_lock) {
        (Some(a), Some(b)) => Some(if b.started_at >= a.started_at { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// Fold into `st` what the newer record in the lock file knows: how the remote tip
/// `state.json` names relates to the deployed commit since (a no-op pass after an
/// apply finds `up-to-date` where the applying pass recorded `behind`, and writes
/// only the lock file). Returns the newer last-pass record, as [`latest_pass`]
/// does, from the one read of the lock file.
pub fn absorb_lock_record(st: &mut State, lock: &Path) -> Option<LastPass> {
    let latest = newer(st.last_pass.clone(), last_pass_in_lock(lock));
    if let (Some(p), Some(r)) = (&latest, st.remote.as_mut()) {
        if let Some(c) = p.classification {
            if p.remote_commit.as_deref() == Some(r.commit.as_str()) {
                r.classification = c;
            }
        }
    }
    latest
}

/// Write `state.json` atomically: temp file in the same directory, fsync, rename, fsync dir.
pub fn save(path: &Path, state: &State) -> Result<()> {
    let dir = path
        .parent()
        .context("state file has no parent directory")?;
    let mut json = serde_json::to_vec_pretty(state).context("failed to serialise state")?;
    json.push(b'\n');
    write_atomically(dir, path, &json)
        .with_context(|| format!("failed to write state file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut s = State::new("https://example.com/r.git", "main");
        s.mark_deployed(Deployed {
            commit: "a".into(),
            subject: "one".into(),
            commit_time: None,
            deployed_at: Utc::now(),
            reason: None,
            secrets: false,
            last_run_at: None,
            signed_by: None,
        });
        s.mark_deployed(Deployed {
            commit: "b".into(),
            subject: "two".into(),
            commit_time: None,
            deployed_at: Utc::now(),
            reason: None,
            secrets: false,
            last_run_at: None,
            signed_by: None,
        });
        save(&path, &s).unwrap();
        let back = load(&path).unwrap().unwrap();
        assert_eq!(back, s);
        assert_eq!(back.history[0].commit, "a");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "only state.json remains");
    }

    fn pass_at(secs: i64, tip: Option<&str>, class: Option<Classification>) -> LastPass {
        LastPass {
            started_at: DateTime::from_timestamp(secs, 0).unwrap(),
            duration_ms: 1,
            remote_commit: tip.map(str::to_string),
            classification: class,
            outcome: Label::UpToDate,
            exit_code: 0,
            error: None,
            tally: Default::default(),
            verification: None,
        }
    }

    #[test]
    fn the_newer_lock_record_updates_the_relation_of_the_same_tip_only() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("lock");
        let mut st = State::new("r", "main");
        st.remote = Some(RemoteTip {
            commit: "t".into(),
            classification: Classification::Behind,
            first_seen: None,
            soak_until: None,
        });
        st.last_pass = Some(pass_at(100, Some("t"), Some(Classification::Behind)));
        let class = |st: &State| st.remote.as_ref().unwrap().classification;
        let write = |p: &LastPass| std::fs::write(&lock, serde_json::to_vec(p).unwrap()).unwrap();

        // No lock record, an older one, or one about another tip: unchanged.
        let mut s = st.clone();
        absorb_lock_record(&mut s, &lock);
        assert_eq!(class(&s), Classification::Behind);
        write(&pass_at(50, Some("t"), Some(Classification::UpToDate)));
        absorb_lock_record(&mut s, &lock);
        assert_eq!(class(&s), Classification::Behind);
        write(&pass_at(200, Some("u"), Some(Classification::UpToDate)));
        absorb_lock_record(&mut s, &lock);
        assert_eq!(class(&s), Classification::Behind);
        // A failed fetch knows no relation.
        write(&pass_at(200, None, None));
        absorb_lock_record(&mut s, &lock);
        assert_eq!(class(&s), Classification::Behind);

        write(&pass_at(200, Some("t"), Some(Classification::UpToDate)));
        absorb_lock_record(&mut s, &lock);
        assert_eq!(class(&s), Classification::UpToDate);
    }

    #[test]
    fn corrupt_foreign_and_future_files_are_state_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        for (text, needle) in [
            ("{not json", "corrupt"),
            ("{\"hello\": 1}", "not a gitops-run state file"),
            ("{\"format\": 99}", "format 99"),
            ("{\"format\": \"1\"}", "\"format\" is \"1\", not a number"),
            ("{\"format\": 1, \"repo\": 5}", "corrupt"),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = load(&path).unwrap_err();
            assert_eq!(crate::exit::class_of(&err), Exit::State);
            assert!(format!("{err:#}").contains(needle), "{text}: {err:#}");
        }
    }
}
