//! The freeze record, `<state-dir>/freeze.json`: an operator's "apply nothing on
//! this host", with who, why, since when and until when. It lives in its own file,
//! written atomically and durably, so that nothing that can happen to `state.json`
//! (corruption, a crash while writing it, moving it aside) can lose it; a package
//! upgrade does not touch the state directory. A record that cannot be read fails
//! closed: the host counts as frozen until an operator clears it.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::Path;

use super::write_atomically_as;

/// Name prefix of the freeze record's temporary files (written without the pass
/// lock, so not named like a pass's leftovers).
const TMP_PREFIX: &str = ".freeze.json.tmp-";

/// The version of `freeze.json` this build writes and reads.
pub const FREEZE_FORMAT: u32 = 1;

/// Why a host is frozen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FreezeKind {
    /// `gitops-run freeze`.
    Operator,
    /// `gitops-run rollback`: pinned to the commit rolled back to.
    Rollback,
}

/// An operator's freeze.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freeze {
    pub format: u32,
    pub kind: FreezeKind,
    pub reason: String,
    /// The user who froze the host (`SUDO_USER`, else the name of the uid).
    pub by: String,
    pub since: DateTime<Utc>,
    /// When the freeze ends by itself; `None`: until `gitops-run unfreeze`.
    pub until: Option<DateTime<Utc>>,
    /// For a rollback: the commit rolled back to (the host is pinned to it).
    #[serde(default)]
    pub pinned: Option<String>,
}

/// What the freeze file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FreezeState {
    Thawed,
    Frozen(Freeze),
    /// The file exists but cannot be read or parsed: frozen, to be safe.
    Unreadable(String),
}

impl FreezeState {
    /// Whether the host is frozen at `now` (an expired freeze is not).
    pub fn holds(&self, now: DateTime<Utc>) -> bool {
        match self {
            FreezeState::Thawed => false,
            FreezeState::Frozen(f) => f.until.is_none_or(|u| now < u),
            FreezeState::Unreadable(_) => true,
        }
    }

    /// One line for the log: since when, by whom, why, until when.
    pub fn describe(&self, path: &Path) -> String {
        match self {
            FreezeState::Thawed => "not frozen".into(),
            FreezeState::Frozen(f) => describe(f),
            FreezeState::Unreadable(why) => format!(
                "frozen: the freeze record {} cannot be read ({why}); applying nothing until an operator runs `gitops-run unfreeze` (or removes the file)",
                path.display()
            ),
        }
    }
}

/// One line about a freeze.
pub fn describe(f: &Freeze) -> String {
    let until = f
        .until
        .map(|u| format!(" until {}", crate::log::utc(&u)))
        .unwrap_or_else(|| " until `gitops-run unfreeze`".into());
    format!(
        "frozen since {} by {}: {}{until}",
        crate::log::utc(&f.since),
        f.by,
        f.reason
    )
}

/// Read the freeze file at `path`.
pub fn load(path: &Path) -> FreezeState {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return FreezeState::Thawed,
        Err(e) => return FreezeState::Unreadable(e.to_string()),
    };
    match serde_json::from_str::<Freeze>(&text) {
        Ok(f) if f.format == FREEZE_FORMAT && !f.reason.trim().is_empty() => FreezeState::Frozen(f),
        Ok(f) if f.format != FREEZE_FORMAT => {
            FreezeState::Unreadable(format!("format {} is not {FREEZE_FORMAT}", f.format))
        }
        Ok(_) => FreezeState::Unreadable("it gives no reason".into()),
        Err(e) => FreezeState::Unreadable(e.to_string()),
    }
}

/// Write the freeze file atomically and durably.
pub fn save(path: &Path, f: &Freeze) -> Result<()> {
    let dir = path
        .parent()
        .context("freeze file has no parent directory")?;
    let mut json = serde_json::to_vec_pretty(f).context("failed to serialise the freeze")?;
    json.push(b'\n');
    remove_stale_temps(dir);
    write_atomically_as(dir, path, &json, TMP_PREFIX)
        .with_context(|| format!("failed to write the freeze record {}", path.display()))
}

/// Remove temporary files a `freeze` killed while writing left behind.
fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    for e in entries.flatten() {
        let stale = e.file_name().to_string_lossy().starts_with(TMP_PREFIX)
            && e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < old);
        if stale {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Remove the freeze file durably; `false` when there was none.
pub fn remove(path: &Path) -> Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("failed to remove the freeze record {}", path.display()))
        }
    }
    if let Some(dir) = path.parent() {
        super::sync_dir(dir)?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    fn freeze(until: Option<DateTime<Utc>>) -> Freeze {
        Freeze {
            format: FREEZE_FORMAT,
            kind: FreezeKind::Operator,
            reason: "change freeze for the audit".into(),
            by: "alice".into(),
            since: t(0),
            until,
            pinned: None,
        }
    }

    #[test]
    fn a_freeze_round_trips_and_holds_until_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("freeze.json");
        assert_eq!(load(&path), FreezeState::Thawed);
        save(&path, &freeze(Some(t(3600)))).unwrap();
        let st = load(&path);
        assert!(st.holds(t(10)));
        assert!(!st.holds(t(3600)), "ends at its time");
        assert!(st.describe(&path).contains("by alice"));
        assert!(remove(&path).unwrap());
        assert!(!remove(&path).unwrap());
    }

    #[test]
    fn a_damaged_record_fails_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("freeze.json");
        for text in ["{not json", "{\"format\": 9}", ""] {
            std::fs::write(&path, text).unwrap();
            let st = load(&path);
            assert!(matches!(st, FreezeState::Unreadable(_)), "{text}: {st:?}");
            assert!(st.holds(t(0)));
            assert!(st.describe(&path).contains("gitops-run unfreeze"));
        }
        let mut no_reason = freeze(None);
        no_reason.reason = " ".into();
        std::fs::write(&path, serde_json::to_string(&no_reason).unwrap()).unwrap();
        assert!(matches!(load(&path), FreezeState::Unreadable(_)));
    }
}
