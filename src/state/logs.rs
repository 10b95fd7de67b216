//! Entrypoint logs under `<state-dir>/logs`: one file per attempt, named after its
//! start time and commit, the newest few kept.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use std::path::{Path, PathBuf};

use crate::log::short;

/// How many entrypoint logs are kept in `<state-dir>/logs`.
pub const MAX_LOGS: usize = 10;

/// A fresh log path for an attempt of `commit` started at `now`:
/// `<sequence>-<UTC time>-<short commit>.log`. The sequence number, one more than
/// the highest in the directory, orders the logs by attempt whatever the clock said.
pub fn new_path(dir: &Path, commit: &str, now: DateTime<Utc>) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let next = list(dir).last().map_or(1, |(seq, _)| seq.saturating_add(1));
    let stamp = now.format("%Y%m%dT%H%M%S%.3fZ");
    Ok(dir.join(format!("{next:06}-{stamp}-{}.log", short(commit))))
}

/// The logs in `dir` with their sequence numbers, oldest attempt first. Logs named
/// before sequence numbers existed count as older than any numbered one.
fn list(dir: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut logs: Vec<(u64, PathBuf)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .map(|p| (sequence(&p).unwrap_or(0), p))
        .collect();
    logs.sort();
    logs
}

fn sequence(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let (seq, rest) = name.split_once('-')?;
    (seq.len() >= 6 && rest.contains('-')).then(|| seq.parse().ok())?
}

/// Keep the newest `MAX_LOGS` logs by attempt order; `keep` are never removed.
pub fn prune(dir: &Path, keep: &[PathBuf]) {
    let logs = list(dir);
    let mut excess = logs.len().saturating_sub(MAX_LOGS);
    for (_, old) in logs {
        if excess == 0 {
            break;
        }
        if !keep.contains(&old) {
            let _ = std::fs::remove_file(old);
            excess -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_follows_the_attempt_order_not_the_clock() {
        let dir = tempfile::tempdir().unwrap();
        let future = DateTime::parse_from_rfc3339("2099-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let past = DateTime::parse_from_rfc3339("2020-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let legacy = dir.path().join("20250101T000000.000Z-abc.log");
        std::fs::write(&legacy, "").unwrap();
        let mut paths = Vec::new();
        // Three attempts while the clock was far ahead, then the clock stepped back.
        for i in 0..(MAX_LOGS + 2) {
            let when = if i < 3 { future } else { past };
            let p = new_path(dir.path(), "0123456789abcdef", when).unwrap();
            std::fs::write(&p, "").unwrap();
            paths.push(p);
        }
        prune(dir.path(), &[]);
        assert!(
            !legacy.exists(),
            "logs from before sequence numbers go first"
        );
        for (i, p) in paths.iter().enumerate() {
            assert_eq!(p.exists(), i >= 2, "{}", p.display());
        }
        let newest = new_path(dir.path(), "0123456789abcdef", past).unwrap();
        assert!(
            newest
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with(&format!("{:06}-", MAX_LOGS + 3)),
            "{}",
            newest.display()
        );
    }
}
