//! Entrypoint logs under `<state-dir>/logs`: one file per attempt, named after its
//! start time and commit, the newest few kept.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use std::path::{Path, PathBuf};

use crate::log::short;

/// How many entrypoint logs are kept in `<state-dir>/logs`.
pub const MAX_LOGS: usize = 10;

/// A fresh log path for an attempt of `commit` started at `now`.
pub fn new_path(dir: &Path, commit: &str, now: DateTime<Utc>) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let stamp = now.format("%Y%m%dT%H%M%S%.3fZ");
    for n in 0..1000 {
        let suffix = if n == 0 {
            String::new()
        } else {
            format!("-{n}")
        };
        let p = dir.join(format!("{stamp}-{}{suffix}.log", short(commit)));
        if !p.exists() {
            return Ok(p);
        }
    }
    anyhow::bail!("too many logs for {stamp} in {}", dir.display())
}

/// Keep the newest `MAX_LOGS` logs, oldest by modification time removed first (names,
/// which start with a UTC timestamp, break ties).
pub fn prune(dir: &Path, keep: &[PathBuf]) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut logs: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().map(|e| e == "log").unwrap_or(false))
        .map(|p| {
            let t = std::fs::metadata(&p)
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            (t, p)
        })
        .collect();
    logs.sort();
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
    fn prune_removes_the_oldest_by_time_not_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let now = std::time::SystemTime::now();
        // Names sort the opposite way to their ages.
        let mut paths = Vec::new();
        for i in 0..(MAX_LOGS + 3) {
            let p = dir.path().join(format!("{:03}.log", 100 - i));
            let f = std::fs::File::create(&p).unwrap();
            f.set_modified(now - std::time::Duration::from_secs(1000 - i as u64))
                .unwrap();
            paths.push(p);
        }
        prune(dir.path(), &[]);
        for (i, p) in paths.iter().enumerate() {
            assert_eq!(p.exists(), i >= 3, "{}", p.display());
        }
    }
}
