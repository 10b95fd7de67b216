//! Fetching the followed branch into the cache: one refspec, no tags, the first
//! fetch shallow, and nothing received when the advertised tip is already here.

use anyhow::{Context, Result};
use std::sync::atomic::AtomicBool;

use super::{gix_err, Cache, ObjectId, RepoUrl, Transport};
use crate::exit::{fail, Classify, Exit};
use crate::log::debug;

/// How the first fetch limits history: one commit is all a deployment needs.
pub const INITIAL_DEPTH: u32 = 1;

/// How much history a fetch brings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum History {
    /// New commits only; the first fetch of a branch brings `INITIAL_DEPTH` commits.
    Needed,
    /// All of it: removes a shallow boundary.
    Full,
}

impl Cache {
    pub(super) fn tracking_ref(branch: &str) -> String {
        format!("refs/remotes/origin/{branch}")
    }

    /// The remote tip recorded by the last successful fetch, if any.
    fn known_tip(&self, branch: &str) -> Option<ObjectId> {
        self.repo
            .try_find_reference(Self::tracking_ref(branch).as_str())
            .ok()
            .flatten()
            .and_then(|mut r| r.peel_to_id().ok().map(|id| id.detach()))
    }

    /// Fetch `branch` from `url` into `refs/remotes/origin/<branch>` and return its tip.
    pub fn fetch(&self, url: &RepoUrl, branch: &str, history: History) -> Result<ObjectId> {
        use gix::remote::fetch::Shallow;
        let known = self.known_tip(branch);
        let depth = match history {
            History::Full => Some(Shallow::undo()),
            History::Needed if known.is_none() => Some(Shallow::DepthAtRemote(
                INITIAL_DEPTH.try_into().expect("non-zero"),
            )),
            History::Needed => None,
        };
        let hint = if url.transport() == Transport::Ssh {
            " (ssh's own message, if any, is printed above)"
        } else {
            ""
        };
        let what = || {
            format!(
                "failed to fetch branch {branch:?} from {}{hint}",
                url.redacted
            )
        };
        let spec = format!("+refs/heads/{branch}:{}", Self::tracking_ref(branch));
        let remote = self
            .repo
            .remote_at(url.raw.as_str())
            .map_err(gix_err)
            .with_context(what)
            .class(Exit::Fetch)?
            .with_refspecs(Some(spec.as_str()), gix::remote::Direction::Fetch)
            .map_err(gix_err)
            .with_context(what)
            .class(Exit::Fetch)?
            .with_fetch_tags(gix::remote::fetch::Tags::None);
        let connection = remote
            .connect(gix::remote::Direction::Fetch)
            .map_err(gix_err)
            .with_context(what)
            .class(Exit::Fetch)?;
        let mut prepare = connection
            .prepare_fetch(gix::progress::Discard, Default::default())
            .map_err(gix_err)
            .with_context(what)
            .class(Exit::Fetch)?;
        let wanted = format!("refs/heads/{branch}");
        let tip = prepare
            .ref_map()
            .mappings
            .iter()
            .find(|m| {
                m.remote
                    .as_name()
                    .map(|n| n == wanted.as_str())
                    .unwrap_or(false)
            })
            .and_then(|m| m.remote.as_id().map(|id| id.to_owned()));
        let Some(tip) = tip else {
            return Err(fail(
                Exit::Fetch,
                format!("branch {branch:?} does not exist in {}", url.redacted),
            ));
        };
        // Nothing new: the advertised tip is the one we have. Receiving would only
        // negotiate to find that out (and gix prepares a reflog identity for ref
        // updates, which reads the time-zone database): skip it.
        if depth.is_none() && known == Some(tip) && self.has_commit(&tip) {
            debug!("{branch} is still at {tip}; nothing to receive");
            return Ok(tip);
        }
        if let Some(depth) = depth {
            prepare = prepare.with_shallow(depth);
        }
        let interrupt = AtomicBool::new(false);
        let outcome = prepare
            .receive(gix::progress::Discard, &interrupt)
            .map_err(gix_err)
            .with_context(what)
            .class(Exit::Fetch)?;
        let received_pack = matches!(outcome.status, gix::remote::fetch::Status::Change { .. });
        debug!("fetched {branch} at {tip} (pack received: {received_pack})");
        Ok(tip)
    }
}
