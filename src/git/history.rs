//! Questions about history in the cache: whether a commit is here, merge bases,
//! the commits between two points, commit metadata.

use anyhow::{Context, Result};
use chrono::{DateTime, TimeZone, Utc};

use super::{gix_err, Cache, ObjectId};
use crate::log::debug;

/// Commit metadata shown in status and passed on in notifications.
#[derive(Debug, Clone)]
pub struct CommitInfo {
    pub subject: String,
    pub time: Option<DateTime<Utc>>,
    /// `Name <email>` of the author.
    pub author: String,
}

/// One file changed between two commits, as `git diff --stat` counts it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileChange {
    pub path: String,
    /// `added`, `deleted`, `modified` or `renamed` (from `old_path`).
    pub change: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_path: Option<String>,
    /// Lines added and removed; `None` for binary files.
    pub insertions: Option<u32>,
    pub deletions: Option<u32>,
    /// The file mode before and after, when it changed (`100755 => 100644`: the
    /// executable bit dropped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode_change: Option<String>,
}

/// A commit listed in a notification: its id and subject.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CommitLine {
    pub id: String,
    pub subject: String,
}

impl Cache {
    pub fn is_shallow(&self) -> bool {
        self.repo.is_shallow().unwrap_or(false)
    }

    pub fn has_object(&self, id: &ObjectId) -> bool {
        self.repo.has_object(id)
    }

    pub fn has_commit(&self, id: &ObjectId) -> bool {
        self.repo.find_commit(*id).is_ok()
    }

    /// The merge base of `a` and `b`. An incomplete (shallow) history that cannot
    /// answer counts as no merge base; the caller deepens and asks again.
    pub fn merge_base(&self, a: ObjectId, b: ObjectId) -> Option<ObjectId> {
        match self.repo.merge_base(a, b) {
            Ok(base) => base.map(|id| id.detach()),
            Err(e) => {
                debug!("no merge base of {a} and {b}: {e:#}");
                None
            }
        }
    }

    /// Every commit reachable from `to` and not from `from` (all parents of merges
    /// followed), newest first: what deploying `to` over `from` brings. An error
    /// when the history in the cache cannot say (a missing commit, a shallow
    /// boundary inside the range, a root commit reached in a shallow history),
    /// never a shorter or a longer list.
    pub fn range(&self, from: Option<ObjectId>, to: ObjectId) -> Result<Vec<ObjectId>> {
        let walk = self
            .repo
            .rev_walk([to])
            .with_hidden(from.filter(|f| self.has_commit(f)))
            .all()
            .map_err(|e| anyhow::anyhow!("{}", super::error_chain(&e)))
            .with_context(|| format!("failed to walk the commits up to {to}"))?;
        let shallow: Vec<ObjectId> = self
            .repo
            .shallow_commits()
            .ok()
            .flatten()
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        let mut out = Vec::new();
        for info in walk {
            let info = info
                .map_err(|e| anyhow::anyhow!("{}", super::error_chain(&e)))
                .with_context(|| format!("failed to walk the commits up to {to}"))?;
            // A shallow commit's parents are not here: whatever lies beyond it is
            // unknown, so the range cannot be complete (unless it is `from`'s side).
            if shallow.contains(&info.id) {
                anyhow::bail!(
                    "the history in the cache ends at {} (a shallow boundary) before reaching {}",
                    info.id,
                    from.map(|f| f.to_string())
                        .unwrap_or_else(|| "the root".into())
                );
            }
            // Hiding `from` stops at the shallow boundary too, so a merged branch
            // that forked below it leads the walk into `from`'s own ancestors and
            // on to a root commit: in a shallow history, a root means the walk
            // cannot tell old commits from new ones.
            if !shallow.is_empty() && info.parent_ids.is_empty() {
                anyhow::bail!(
                    "the history in the cache is shallow and the walk up to {to} reached the root commit {}: it cannot tell which commits {} already has",
                    info.id,
                    from.map(|f| f.to_string())
                        .unwrap_or_else(|| "the deployed commit".into())
                );
            }
            out.push(info.id);
        }
        Ok(out)
    }

    /// The commit object `id` as stored: the bytes a signature covers (with its
    /// `gpgsig` header).
    pub fn raw_commit(&self, id: ObjectId) -> Result<Vec<u8>> {
        let object = self
            .repo
            .find_object(id)
            .map_err(|e| anyhow::anyhow!("{}", super::error_chain(&e)))
            .with_context(|| format!("failed to read commit {id}"))?;
        if object.kind != gix::object::Kind::Commit {
            anyhow::bail!("{id} is a {}, not a commit", object.kind);
        }
        Ok(object.data.clone())
    }

    /// Commits reachable from `to` but not from `from`, newest first: at most `max`
    /// of them with their subjects, and how many more there are. A history that
    /// cannot tell which commits are new (a shallow cache: see [`Cache::range`])
    /// yields just `to`, rather than old commits listed as new.
    pub fn commits_between(
        &self,
        from: Option<ObjectId>,
        to: ObjectId,
        max: usize,
    ) -> (Vec<CommitLine>, usize) {
        let line = |id: ObjectId| CommitLine {
            id: id.to_string(),
            subject: self.commit_info(id).map(|i| i.subject).unwrap_or_default(),
        };
        let ids = match self.range(from, to) {
            Ok(ids) if !ids.is_empty() => ids,
            Ok(_) => vec![to],
            Err(e) => {
                debug!("listing only {to} as new: {e:#}");
                vec![to]
            }
        };
        let more = ids.len().saturating_sub(max);
        (ids.into_iter().take(max).map(line).collect(), more)
    }

    pub fn commit_info(&self, id: ObjectId) -> Result<CommitInfo> {
        let commit = self
            .repo
            .find_commit(id)
            .map_err(gix_err)
            .with_context(|| format!("failed to read commit {id}"))?;
        let subject = commit
            .message()
            .map(|m| m.summary().to_string())
            .unwrap_or_default();
        let time = commit
            .time()
            .ok()
            .and_then(|t| Utc.timestamp_opt(t.seconds, 0).single());
        let author = commit
            .author()
            .map(|a| format!("{} <{}>", a.name, a.email))
            .unwrap_or_default();
        Ok(CommitInfo {
            subject,
            time,
            author,
        })
    }
}

impl Cache {
    /// The files changed from `from`'s tree (none: the empty tree) to `to`'s, with
    /// line counts, in path order.
    pub fn diff_stat(&self, from: Option<ObjectId>, to: ObjectId) -> Result<Vec<FileChange>> {
        use gix::object::tree::diff::ChangeDetached;
        use gix::prelude::TreeDiffChangeExt;
        let new = self.tree_of(to)?;
        let old = from.map(|id| self.tree_of(id)).transpose()?;
        let changes = self
            .repo
            .diff_tree_to_tree(old.as_ref(), &new, None)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("failed to compare the trees")?;
        let mut cache = self
            .repo
            .diff_resource_cache_for_tree_diff()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut out = Vec::new();
        for change in changes {
            let mode_change = match &change {
                ChangeDetached::Modification {
                    previous_entry_mode,
                    entry_mode,
                    ..
                }
                | ChangeDetached::Rewrite {
                    source_entry_mode: previous_entry_mode,
                    entry_mode,
                    ..
                } if previous_entry_mode != entry_mode => Some(format!(
                    "{} => {}",
                    previous_entry_mode.kind().as_octal_str(),
                    entry_mode.kind().as_octal_str()
                )),
                _ => None,
            };
            let (path, kind, old_path) = match &change {
                ChangeDetached::Addition {
                    location,
                    entry_mode,
                    ..
                } => {
                    if !entry_mode.is_blob_or_symlink() {
                        continue;
                    }
                    (location.to_string(), "added", None)
                }
                ChangeDetached::Deletion {
                    location,
                    entry_mode,
                    ..
                } => {
                    if !entry_mode.is_blob_or_symlink() {
                        continue;
                    }
                    (location.to_string(), "deleted", None)
                }
                ChangeDetached::Modification {
                    location,
                    entry_mode,
                    ..
                } => {
                    if !entry_mode.is_blob_or_symlink() {
                        continue;
                    }
                    (location.to_string(), "modified", None)
                }
                ChangeDetached::Rewrite {
                    source_location,
                    location,
                    entry_mode,
                    ..
                } => {
                    if !entry_mode.is_blob_or_symlink() {
                        continue;
                    }
                    (
                        location.to_string(),
                        "renamed",
                        Some(source_location.to_string()),
                    )
                }
            };
            let attached = change.attach(&self.repo, &self.repo);
            let counts = attached
                .diff(&mut cache)
                .ok()
                .and_then(|mut d| d.line_counts().ok().flatten());
            cache.clear_resource_cache_keep_allocation();
            out.push(FileChange {
                path,
                change: kind,
                old_path,
                insertions: counts.map(|c| c.insertions),
                deletions: counts.map(|c| c.removals),
                mode_change,
            });
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// What is wrong with the cache's own data, if anything: a pack without its index
    /// (or the reverse), a file that does not parse or whose checksum does not match
    /// (truncated, bit rot), or a ref naming a commit that is not there. Asked only
    /// after a fetch failed, to tell a damaged cache from a server problem.
    pub fn damage(&self) -> Option<String> {
        use gix::odb::pack;
        let dir = self.repo.objects.store_ref().path().join("pack");
        let interrupt = std::sync::atomic::AtomicBool::new(false);
        let kind = self.repo.object_hash();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Some(format!("{} is missing", dir.display()))
            }
            Err(e) => return Some(format!("cannot read {}: {e}", dir.display())),
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            let other = match ext {
                "idx" => path.with_extension("pack"),
                "pack" => path.with_extension("idx"),
                _ => continue,
            };
            if !other.exists() {
                return Some(format!("{} has no {}", path.display(), other.display()));
            }
            if ext != "idx" {
                continue;
            }
            let idx = match pack::index::File::at(&path, kind) {
                Ok(i) => i,
                Err(e) => return Some(format!("{}: {e}", path.display())),
            };
            if let Err(e) = idx.verify_checksum(&mut gix::progress::Discard, &interrupt) {
                return Some(format!("{}: {e}", path.display()));
            }
            let data = match pack::data::File::at(&other, kind) {
                Ok(d) => d,
                Err(e) => return Some(format!("{}: {e}", other.display())),
            };
            match data.verify_checksum(&mut gix::progress::Discard, &interrupt) {
                Ok(sum) if sum == idx.pack_checksum() => {}
                Ok(_) => {
                    return Some(format!(
                        "{} does not belong to {}",
                        other.display(),
                        path.display()
                    ))
                }
                Err(e) => return Some(format!("{}: {e}", other.display())),
            }
        }
        let refs = match self.repo.references() {
            Ok(r) => r,
            Err(e) => return Some(format!("cannot read its refs: {e}")),
        };
        let all = match refs.all() {
            Ok(a) => a,
            Err(e) => return Some(format!("cannot read its refs: {e}")),
        };
        for r in all {
            let mut r = match r {
                Ok(r) => r,
                Err(e) => return Some(format!("a ref cannot be read: {e}")),
            };
            let name = r.name().as_bstr().to_string();
            let Ok(id) = r.peel_to_id() else {
                return Some(format!("{name} names an object that is not there"));
            };
            let tree = self
                .repo
                .find_commit(id.detach())
                .ok()
                .and_then(|c| c.tree().ok());
            if tree.is_none() {
                return Some(format!(
                    "the commit {name} names, or its tree, is not there"
                ));
            }
        }
        None
    }
}
