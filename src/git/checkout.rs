//! Checking a commit out into an empty directory (gix has no way to move an
//! existing work tree from one commit to another, and we never need one).

use anyhow::{anyhow, Context, Result};
use std::path::Path;
use std::sync::atomic::AtomicBool;

use super::{error_chain, gix_err, Cache, ObjectId};

impl Cache {
    /// Check `commit` out into `dest`, which must be empty or missing; with
    /// `paths`, only the files below those directories (a sparse tree: a host need
    /// not have the whole fleet's files on disk).
    pub fn checkout(&self, commit: ObjectId, dest: &Path, paths: &[String]) -> Result<()> {
        let what = || format!("failed to check out {commit} into {}", dest.display());
        let tree: ObjectId = self
            .repo
            .find_commit(commit)
            .map_err(gix_err)
            .with_context(what)?
            .tree_id()
            .map_err(|e| anyhow!("{}", error_chain(&e)))
            .with_context(what)?
            .detach();
        let mut index = self
            .repo
            .index_from_tree(&tree)
            .map_err(gix_err)
            .with_context(what)?;
        if !paths.is_empty() {
            index.remove_entries(|_, path, _| !paths.iter().any(|p| under(path, p)));
        }
        let mut opts = self
            .repo
            .checkout_options(gix::worktree::stack::state::attributes::Source::IdMapping)
            .map_err(gix_err)
            .with_context(what)?;
        opts.destination_is_initially_empty = true;
        let objects = self.repo.objects.clone().into_arc().with_context(what)?;
        let interrupt = AtomicBool::new(false);
        let outcome = gix::worktree::state::checkout(
            &mut index,
            dest,
            objects,
            &gix::progress::Discard,
            &gix::progress::Discard,
            &interrupt,
            opts,
        )
        .map_err(|e| anyhow!("{}", error_chain(&e)))
        .with_context(what)?;
        if let Some(err) = outcome.errors.first() {
            return Err(anyhow!("{}: {}", err.path, err.error)).with_context(what);
        }
        if let Some(c) = outcome.collisions.first() {
            return Err(anyhow!("path collision at {}", c.path)).with_context(what);
        }
        Ok(())
    }
}

/// Whether the repository path `path` is `dir` or below it.
pub fn under(path: &gix::bstr::BStr, dir: &str) -> bool {
    let dir = dir.as_bytes();
    path == dir || (path.starts_with(dir) && path.get(dir.len()) == Some(&b'/'))
}

impl Cache {
    /// The root tree of `commit`.
    pub(super) fn tree_of(&self, commit: ObjectId) -> Result<gix::Tree<'_>> {
        self.repo
            .find_commit(commit)
            .map_err(gix_err)?
            .tree()
            .map_err(|e| anyhow!("{e}"))
            .with_context(|| format!("failed to read the tree of {commit}"))
    }

    /// Which of `paths` (directories or files of the repository) `commit` lacks.
    pub fn missing_paths(&self, commit: ObjectId, paths: &[String]) -> Result<Vec<String>> {
        let tree = self.tree_of(commit)?;
        let mut missing = Vec::new();
        for p in paths {
            let found = tree
                .lookup_entry_by_path(p)
                .map_err(|e| anyhow!("{e}"))
                .with_context(|| format!("failed to look up {p} in {commit}"))?;
            if found.is_none() {
                missing.push(p.clone());
            }
        }
        Ok(missing)
    }

    /// What would keep the entrypoint at repository path `rel` from running in
    /// `commit`, judged from its tree as the pass judges the checked-out file: not
    /// there, not a regular file, or without its executable bit. A symbolic link is
    /// left to the pass, which resolves it in the checked-out tree; so is a path
    /// with `..`.
    pub fn entrypoint_problem(&self, commit: ObjectId, rel: &str) -> Result<Option<String>> {
        use gix::object::tree::EntryKind;
        let parts: Vec<&str> = rel
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        if parts.is_empty() || parts.contains(&"..") {
            return Ok(None);
        }
        let tree = self.tree_of(commit)?;
        let entry = tree
            .lookup_entry(parts.iter().copied())
            .map_err(|e| anyhow!("{e}"))
            .with_context(|| format!("failed to look up {rel} in {commit}"))?;
        Ok(match entry.map(|e| e.mode().kind()) {
            None => Some(format!("entrypoint {rel:?} does not exist in this commit")),
            Some(EntryKind::Blob) => Some(format!(
                "entrypoint {rel:?} is not executable; commit it with its executable bit (git update-index --chmod=+x {rel})"
            )),
            Some(EntryKind::Tree | EntryKind::Commit) => {
                Some(format!("entrypoint {rel:?} is not a regular file"))
            }
            Some(EntryKind::BlobExecutable | EntryKind::Link) => None,
        })
    }

    /// The repository paths of the files that differ between `from` and `to`.
    pub fn changed_paths(&self, from: ObjectId, to: ObjectId) -> Result<Vec<String>> {
        use gix::object::tree::diff::ChangeDetached;
        let tree = |id: ObjectId| -> Result<gix::Tree<'_>> {
            self.repo
                .find_commit(id)
                .map_err(gix_err)?
                .tree()
                .map_err(|e| anyhow!("{e}"))
                .with_context(|| format!("failed to read the tree of {id}"))
        };
        let (old, new) = (tree(from)?, tree(to)?);
        let mut opts = gix::diff::Options::default();
        opts.track_path();
        let changes = self
            .repo
            .diff_tree_to_tree(&old, &new, opts)
            .map_err(|e| anyhow!("{e}"))
            .context("failed to compare the trees")?;
        let mut out = Vec::new();
        for c in changes {
            match c {
                ChangeDetached::Rewrite {
                    source_location,
                    location,
                    ..
                } => {
                    out.push(source_location.to_string());
                    out.push(location.to_string());
                }
                ChangeDetached::Addition { location, .. }
                | ChangeDetached::Deletion { location, .. }
                | ChangeDetached::Modification { location, .. } => out.push(location.to_string()),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::under;

    #[test]
    fn under_means_the_directory_or_below_it() {
        assert!(under("hosts/a".into(), "hosts/a"));
        assert!(under("hosts/a/run.sh".into(), "hosts/a"));
        assert!(!under("hosts/ab/run.sh".into(), "hosts/a"));
        assert!(!under("hosts".into(), "hosts/a"));
    }
}
