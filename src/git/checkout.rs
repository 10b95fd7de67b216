//! Checking a commit out into an empty directory (gix has no way to move an
//! existing work tree from one commit to another, and we never need one).

use anyhow::{anyhow, Context, Result};
use std::path::Path;
use std::sync::atomic::AtomicBool;

use super::{error_chain, gix_err, Cache, ObjectId};

impl Cache {
    /// Check `commit` out into `dest`, which must be empty or missing.
    pub fn checkout(&self, commit: ObjectId, dest: &Path) -> Result<()> {
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
