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

    /// Commits reachable from `to` but not from `from`, newest first: at most `max`
    /// of them with their subjects, and how many more there are (counted up to a bound).
    /// A history too shallow to walk yields just `to`.
    pub fn commits_between(
        &self,
        from: Option<ObjectId>,
        to: ObjectId,
        max: usize,
    ) -> (Vec<CommitLine>, usize) {
        const COUNT_LIMIT: usize = 10_000;
        let line = |id: ObjectId| CommitLine {
            id: id.to_string(),
            subject: self.commit_info(id).map(|i| i.subject).unwrap_or_default(),
        };
        let walk = self
            .repo
            .rev_walk([to])
            .with_hidden(from.filter(|f| self.has_commit(f)))
            .all();
        let Ok(walk) = walk else {
            return (vec![line(to)], 0);
        };
        let mut lines = Vec::new();
        let mut more = 0;
        for info in walk.take(COUNT_LIMIT) {
            let Ok(info) = info else { break };
            if lines.len() < max {
                lines.push(line(info.id));
            } else {
                more += 1;
            }
        }
        if lines.is_empty() {
            lines.push(line(to));
        }
        (lines, more)
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
        Ok(CommitInfo { subject, time })
    }
}
