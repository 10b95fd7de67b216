//! A commit's secrets for its entrypoint (see `crate::secrets`): decrypted into the
//! RAM-backed root before the entrypoint runs, made `current` when the commit is
//! deployed, removed when it is not, and recreated for the deployed commit after a
//! reboot emptied the root, without running the entrypoint again.

use anyhow::Result;
use std::path::{Path, PathBuf};

use crate::config::SecretsSettings;
use crate::log::{debug, info, short, warn};
use crate::secrets::{self, Limits};

/// What the entrypoint of a commit gets.
pub enum Prepared {
    /// The commit has no secret (or secrets are off): no `GITOPS_SECRETS_DIR`.
    Nothing,
    /// `GITOPS_SECRETS_DIR`: the commit's decrypted secrets.
    Ready(PathBuf),
    /// The commit holds a secret this host cannot use (one line: which, why).
    Refused(String),
}

fn host_keys() -> Vec<PathBuf> {
    secrets::DEFAULT_HOST_KEYS
        .iter()
        .map(PathBuf::from)
        .collect()
}

/// Decrypt the secrets of `commit` (checked out in `tree`), if it has any.
pub fn prepare(
    cfg: Option<&SecretsSettings>,
    paths: &[String],
    tree: &Path,
    commit: &str,
) -> Result<Prepared> {
    let Some(cfg) = cfg else {
        return Ok(Prepared::Nothing);
    };
    let found = match secrets::find(tree, paths) {
        Ok(f) => f,
        Err(e) if e.is_commit_fault() => return Ok(Prepared::Refused(e.to_string())),
        Err(e) => return Err(anyhow::anyhow!("{e}")),
    };
    if found.is_empty() {
        return Ok(Prepared::Nothing);
    }
    match secrets::prepare(
        tree,
        paths,
        &cfg.identities,
        &host_keys(),
        &cfg.root,
        commit,
        &Limits::default(),
    ) {
        Ok(m) => {
            info!(
                "decrypted {} secret(s) of {} into {}",
                m.count,
                short(commit),
                m.dir.display()
            );
            Ok(Prepared::Ready(m.dir))
        }
        Err(e) if e.is_commit_fault() => Ok(Prepared::Refused(e.to_string())),
        Err(e) => Err(anyhow::anyhow!(
            "failed to prepare the secrets of {}: {e}",
            short(commit)
        )),
    }
}

/// `commit` is deployed: its secrets become `current`, every other commit's go.
pub fn deployed(cfg: Option<&SecretsSettings>, commit: &str, prepared: &Prepared) {
    let Some(cfg) = cfg else { return };
    let result = match prepared {
        Prepared::Ready(_) => secrets::switch_current(&cfg.root, commit)
            .and_then(|_| secrets::prune(&cfg.root, &[commit])),
        _ if cfg.root.exists() => {
            // No secrets any more: the last deployment's must not linger.
            let _ = std::fs::remove_file(cfg.root.join(secrets::CURRENT));
            secrets::prune(&cfg.root, &[])
        }
        _ => Ok(()),
    };
    if let Err(e) = result {
        warn!("could not switch the secrets to {}: {e:#}", short(commit));
    }
}

/// The attempt of a commit failed: its decrypted secrets go, the deployed ones stay.
pub fn not_deployed(cfg: Option<&SecretsSettings>, deployed: Option<&str>) {
    let Some(cfg) = cfg else { return };
    if !cfg.root.exists() {
        return;
    }
    let keep: Vec<&str> = deployed.into_iter().collect();
    if let Err(e) = secrets::prune(&cfg.root, &keep) {
        warn!("could not remove the secrets of a failed attempt: {e:#}");
    }
}

/// After a reboot the RAM-backed root is empty: decrypt the deployed commit's
/// secrets again (its entrypoint is not run again). Returns an error line to
/// report when that fails.
pub fn recreate(
    cfg: Option<&SecretsSettings>,
    paths: &[String],
    tree: &Path,
    commit: &str,
) -> Option<String> {
    let cfg = cfg?;
    if !tree.is_dir() || secrets::present(&cfg.root, commit) {
        return None;
    }
    match prepare(Some(cfg), paths, tree, commit) {
        Ok(Prepared::Nothing) => None,
        Ok(prepared @ Prepared::Ready(_)) => {
            deployed(Some(cfg), commit, &prepared);
            info!(
                "recreated the secrets of the deployed commit {} (the entrypoint is not re-run)",
                short(commit)
            );
            None
        }
        Ok(Prepared::Refused(why)) => Some(format!(
            "the secrets of the deployed commit {} cannot be recreated: {why}",
            short(commit)
        )),
        Err(e) => {
            debug!("{e:#}");
            Some(format!("{e:#}"))
        }
    }
}

/// The decrypted secrets of `commit`, if they are there (for a run of an already
/// deployed commit: a rollback or a reconcile).
pub fn dir_of(cfg: Option<&SecretsSettings>, commit: &str) -> Option<PathBuf> {
    let cfg = cfg?;
    secrets::present(&cfg.root, commit).then(|| cfg.root.join(commit))
}
