//! Checked-out trees, one per commit, and the `current` symlink that names the
//! deployed one. Every change is a rename, so a crash leaves the old or the new
//! state, never a mix.

use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::{sync_dir, Layout};
use crate::git::{Cache, ObjectId};
use crate::log::debug;

/// Prefix of anything half-made by a pass; the next pass removes such leftovers.
const TMP_PREFIX: &str = ".tmp-";

/// Check `commit` out into `trees/<commit>`, replacing a stale tree of the same commit
/// (for example one a failed entrypoint modified). Returns the tree's path.
pub fn materialize(
    layout: &Layout,
    cache: &Cache,
    commit: ObjectId,
    paths: &[String],
) -> Result<PathBuf> {
    let trees = layout.trees();
    std::fs::create_dir_all(&trees)
        .with_context(|| format!("failed to create {}", trees.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!("{TMP_PREFIX}{commit}-"))
        .tempdir_in(&trees)
        .with_context(|| format!("failed to create a temporary tree in {}", trees.display()))?;
    cache.checkout(commit, tmp.path(), paths)?;
    let dest = layout.tree(&commit.to_string());
    if dest.exists() {
        remove_tree(&dest)?;
    }
    let tmp = tmp.keep();
    std::fs::rename(&tmp, &dest).with_context(|| {
        format!(
            "failed to move checked-out tree into place at {}",
            dest.display()
        )
    })?;
    sync_dir(&trees)?;
    Ok(dest)
}

/// Point `current` at `trees/<commit>` with one rename(2).
pub fn switch_current(layout: &Layout, commit: &str) -> Result<()> {
    let target = Path::new("trees").join(commit);
    let tmp = layout.root.join(format!("{TMP_PREFIX}current"));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&target, &tmp)
        .with_context(|| format!("failed to create symlink {}", tmp.display()))?;
    std::fs::rename(&tmp, layout.current()).with_context(|| {
        format!(
            "failed to switch {} to {}",
            layout.current().display(),
            target.display()
        )
    })?;
    sync_dir(&layout.root)
}

/// The commit `current` points at, if it points into `trees/`.
pub fn current_commit(layout: &Layout) -> Option<String> {
    let target = std::fs::read_link(layout.current()).ok()?;
    let name = target.file_name()?.to_str()?.to_string();
    (target.parent() == Some(Path::new("trees"))).then_some(name)
}

/// Remove leftovers of an interrupted pass: temporary trees, symlinks, state files, caches.
pub fn clean_leftovers(layout: &Layout) -> Result<()> {
    for dir in [layout.root.clone(), layout.trees()] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !name.to_string_lossy().starts_with(TMP_PREFIX) {
                continue;
            }
            let path = entry.path();
            debug!("removing leftover {}", path.display());
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_tree(&path)?;
            } else {
                std::fs::remove_file(&path)
                    .with_context(|| format!("failed to remove leftover {}", path.display()))?;
            }
        }
    }
    Ok(())
}

/// Remove every tree not in `keep`.
pub fn prune(layout: &Layout, keep: &BTreeSet<String>) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(layout.trees()) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if keep.contains(&name) || name.starts_with(TMP_PREFIX) {
            continue;
        }
        debug!("pruning tree {name}");
        let path = entry.path();
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            remove_tree(&path)?;
        } else {
            // Not ours (trees are directories); a stray file must not linger forever.
            std::fs::remove_file(&path)
                .with_context(|| format!("failed to remove {}", path.display()))?;
        }
    }
    Ok(())
}

/// Remove a directory tree. Entrypoints may leave read-only directories behind, so
/// permissions are restored on the way down when a plain removal fails.
fn remove_tree(path: &Path) -> Result<()> {
    if std::fs::remove_dir_all(path).is_ok() {
        return Ok(());
    }
    make_writable(path);
    std::fs::remove_dir_all(path).with_context(|| format!("failed to remove {}", path.display()))
}

fn make_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_dir() {
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700));
        if let Ok(entries) = std::fs::read_dir(path) {
            for e in entries.flatten() {
                make_writable(&e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_current_replaces_the_link_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        std::fs::create_dir_all(layout.tree("aaa")).unwrap();
        std::fs::create_dir_all(layout.tree("bbb")).unwrap();
        switch_current(&layout, "aaa").unwrap();
        assert_eq!(current_commit(&layout).as_deref(), Some("aaa"));
        switch_current(&layout, "bbb").unwrap();
        assert_eq!(current_commit(&layout).as_deref(), Some("bbb"));
        assert!(layout.current().join(".").exists());
    }

    #[test]
    fn leftovers_and_unkept_trees_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        for t in ["keep", "old", ".tmp-half"] {
            std::fs::create_dir_all(layout.tree(t).join("sub")).unwrap();
        }
        std::fs::write(layout.tree("stray-file"), "junk").unwrap();
        std::fs::write(dir.path().join(".tmp-state"), "x").unwrap();
        clean_leftovers(&layout).unwrap();
        prune(&layout, &BTreeSet::from(["keep".to_string()])).unwrap();
        let mut left: Vec<_> = std::fs::read_dir(layout.trees())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, vec!["keep"]);
        assert!(!dir.path().join(".tmp-state").exists());
    }
}
