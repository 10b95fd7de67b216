//! Fetching the followed branch into the cache: one refspec, no tags, the first
//! fetch shallow, and nothing received when the advertised tip is already here.

use anyhow::{Context, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

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

    /// What the tracking ref of `branch` names (a commit, or the tag object a branch
    /// may point at), as the last successful fetch recorded it.
    fn known_tip(&self, branch: &str) -> Option<ObjectId> {
        self.repo
            .try_find_reference(Self::tracking_ref(branch).as_str())
            .ok()
            .flatten()
            .and_then(|r| r.target().try_id().map(|id| id.to_owned()))
    }

    /// Remove the tracking refs of other branches: after `--branch` changes from
    /// `release` to `release/v2` (or back), the old ref's file would stand where
    /// the new one's directory must go.
    fn drop_other_tracking_refs(&self, branch: &str) -> Result<()> {
        use gix::refs::transaction::{Change, PreviousValue, RefEdit, RefLog};
        let ours = Self::tracking_ref(branch);
        let others: Vec<_> = self
            .repo
            .references()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .prefixed("refs/remotes/")
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .filter_map(Result::ok)
            .map(|r| r.name().to_owned())
            .filter(|name| name.as_bstr() != ours.as_str())
            .collect();
        if others.is_empty() {
            return Ok(());
        }
        debug!(
            "removing {} tracking ref(s) of other branches",
            others.len()
        );
        let edits = others.into_iter().map(|name| RefEdit {
            change: Change::Delete {
                expected: PreviousValue::Any,
                log: RefLog::AndReference,
            },
            name,
            deref: false,
        });
        self.repo
            .edit_references(edits)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("failed to remove the tracking refs of other branches")?;
        Ok(())
    }

    /// Fetch `branch` from `url` into `refs/remotes/origin/<branch>` and return the
    /// commit it names (a branch pointing at an annotated tag is peeled, as git does).
    /// The whole fetch is bounded by `deadline`.
    pub fn fetch(
        &self,
        url: &RepoUrl,
        branch: &str,
        history: History,
        deadline: Duration,
    ) -> Result<ObjectId> {
        use gix::remote::fetch::Shallow;
        self.drop_other_tracking_refs(branch)?;
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
        let watchdog = Watchdog::start(deadline);
        let fetched = self.fetch_within(url, branch, known, depth, watchdog.interrupt());
        if watchdog.finish() {
            return Err(fail(
                Exit::Fetch,
                format!(
                    "{}: timed out after {} (--fetch-timeout); the server accepted the connection but did not complete the fetch",
                    what(),
                    crate::duration::format(deadline)
                ),
            ));
        }
        let advertised = fetched.map_err(|e| e.context(what())).class(Exit::Fetch)?;
        self.peel_to_commit(advertised, branch, url)
    }

    fn fetch_within(
        &self,
        url: &RepoUrl,
        branch: &str,
        known: Option<ObjectId>,
        depth: Option<gix::remote::fetch::Shallow>,
        interrupt: &AtomicBool,
    ) -> Result<ObjectId> {
        if depth.is_none() {
            if let Some(tip) = known.filter(|k| self.local_tip_is(url, branch, *k)) {
                debug!("{branch} is still at {tip} in the local repository; nothing to receive");
                return Ok(tip);
            }
        }
        let spec = format!("+refs/heads/{branch}:{}", Self::tracking_ref(branch));
        let remote = self
            .repo
            .remote_at(url.raw.as_str())
            .map_err(gix_err)?
            .with_refspecs(Some(spec.as_str()), gix::remote::Direction::Fetch)
            .map_err(gix_err)?
            .with_fetch_tags(gix::remote::fetch::Tags::None);
        let connection = remote
            .connect(gix::remote::Direction::Fetch)
            .map_err(gix_err)?;
        let mut prepare = connection
            .prepare_fetch(gix::progress::Discard, Default::default())
            .map_err(gix_err)?;
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
        if depth.is_none() && known == Some(tip) && self.has_object(&tip) {
            debug!("{branch} is still at {tip}; nothing to receive");
            return Ok(tip);
        }
        let first_shallow = known.is_none() && depth.is_some();
        if let Some(depth) = depth {
            prepare = prepare.with_shallow(depth);
        }
        let outcome = prepare
            .receive(gix::progress::Discard, interrupt)
            .map_err(gix_err)?;
        let received_pack = matches!(outcome.status, gix::remote::fetch::Status::Change { .. });
        debug!("fetched {branch} at {tip} (pack received: {received_pack})");
        let old_protocol = !matches!(
            outcome.handshake.server_protocol_version,
            gix::protocol::transport::Protocol::V2
        );
        if old_protocol && first_shallow {
            crate::log::info!(
                "the server speaks Git protocol v0/v1, over which gix cannot limit the first fetch to one commit: the whole history of {branch} was fetched once (later fetches bring only new commits)"
            );
        }
        Ok(tip)
    }

    /// Whether a local repository (`file://` or a path) still has `branch` at `known`,
    /// read straight from its refs: git, too, bypasses the pack protocol for local
    /// repositories (`git clone --local`). A no-op pass then starts no
    /// `git-upload-pack`; anything else (another tip, a repository that cannot be
    /// opened, a missing branch, an object the cache lacks) is left to the fetch
    /// proper, which reports it as it always has.
    fn local_tip_is(&self, url: &RepoUrl, branch: &str, known: ObjectId) -> bool {
        if url.transport() != Transport::File || !self.has_object(&known) {
            return false;
        }
        let Ok(parsed) = gix::url::parse(gix::bstr::BStr::new(url.raw.as_str())) else {
            return false;
        };
        let Ok(path) = gix::path::from_bstring(parsed.path.clone()) else {
            return false;
        };
        // Isolated: the repository's own config (its format) and its refs, nothing
        // from the system's or the user's config or the environment.
        let options = gix::open::Options::isolated();
        let Ok(remote) = gix::open_opts(path, options) else {
            return false;
        };
        let name = format!("refs/heads/{branch}");
        let tip = remote
            .try_find_reference(name.as_str())
            .ok()
            .flatten()
            .and_then(|mut r| r.follow_to_object().ok().map(|id| id.detach()));
        // Compared as advertised: the ref's own target (symbolic refs followed, an
        // annotated tag not peeled), which is what the tracking ref holds.
        tip == Some(known)
    }

    /// The commit `id` names: itself, or the commit an annotated tag points at.
    fn peel_to_commit(&self, id: ObjectId, branch: &str, url: &RepoUrl) -> Result<ObjectId> {
        let object = self.repo.find_object(id).map_err(|e| {
            fail(
                Exit::Fetch,
                format!(
                    "branch {branch:?} of {} names {id}, which the fetch did not bring: {e}",
                    url.redacted
                ),
            )
        })?;
        let kind = object.kind;
        object
            .peel_to_kind(gix::object::Kind::Commit)
            .map(|c| c.id)
            .map_err(|_| {
                fail(
                    Exit::Fetch,
                    format!(
                        "branch {branch:?} of {} points at a {kind} ({id}) that does not lead to a commit",
                        url.redacted
                    ),
                )
            })
    }
}

/// Bounds a fetch in time. gix checks its interrupt flag only between steps, and a
/// read from a server that accepted the connection and went silent never returns:
/// at the deadline the watchdog sets the flag, kills the processes the fetch runs
/// (ssh, git-upload-pack) and shuts down this process's TCP connections, so every
/// blocked read returns with an error.
struct Watchdog {
    interrupt: Arc<AtomicBool>,
    fired: Arc<AtomicBool>,
    done: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    fn start(limit: Duration) -> Watchdog {
        let interrupt = Arc::new(AtomicBool::new(false));
        let fired = Arc::new(AtomicBool::new(false));
        let done = Arc::new((Mutex::new(false), Condvar::new()));
        let thread = {
            let (interrupt, fired, done) = (interrupt.clone(), fired.clone(), done.clone());
            std::thread::spawn(move || {
                let (lock, cvar) = &*done;
                let Ok(guard) = lock.lock() else { return };
                let Ok((guard, _)) = cvar.wait_timeout_while(guard, limit, |finished| !*finished)
                else {
                    return;
                };
                if *guard {
                    return;
                }
                fired.store(true, Ordering::SeqCst);
                interrupt.store(true, Ordering::SeqCst);
                crate::host::kill_children();
                crate::host::shut_down_inet_sockets();
            })
        };
        Watchdog {
            interrupt,
            fired,
            done,
            thread: Some(thread),
        }
    }

    fn interrupt(&self) -> &AtomicBool {
        &self.interrupt
    }

    /// Stop watching; whether the deadline had passed.
    fn finish(mut self) -> bool {
        {
            let (lock, cvar) = &*self.done;
            if let Ok(mut finished) = lock.lock() {
                *finished = true;
            }
            cvar.notify_all();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.fired.load(Ordering::SeqCst)
    }
}
