//! Everything gix does for us: the bare cache repository, fetching one branch,
//! merge bases, commit metadata, and checking a commit out into an empty directory.

use anyhow::{anyhow, Context, Result};
use chrono::{DateTime, TimeZone, Utc};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use crate::exit::{fail, Classify, Exit};
use crate::log::debug;
use crate::repo_url::RepoUrl;

pub use gix::ObjectId;

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

/// How to reach the Git server over ssh.
#[derive(Debug, Clone, Default)]
pub struct SshOptions {
    pub key: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
}

impl SshOptions {
    /// The ssh command line: never prompt, never trust an unknown host key.
    pub fn command(&self) -> String {
        let mut cmd = String::from("ssh -o BatchMode=yes -o StrictHostKeyChecking=yes");
        if let Some(key) = &self.key {
            cmd.push_str(&format!(" -o IdentitiesOnly=yes -i {}", shell_quote(key)));
        }
        if let Some(kh) = &self.known_hosts {
            cmd.push_str(&format!(" -o UserKnownHostsFile={}", shell_quote(kh)));
        }
        cmd
    }
}

fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.to_string_lossy().replace('\'', r"'\''"))
}

/// The bare repository under the state directory that holds fetched objects.
pub struct Cache {
    repo: gix::Repository,
}

/// Commit metadata shown in status and passed on in notifications.
#[derive(Debug, Clone)]
pub struct CommitInfo {
    pub subject: String,
    pub time: Option<DateTime<Utc>>,
}

/// gix errors as one line: each distinct message of the source chain, outermost first.
fn gix_err(e: gix::Error) -> anyhow::Error {
    anyhow!("{}", error_chain(&e))
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    one_line(&parts.join(": "))
}

/// Fold multi-line messages (gix prints credential contexts over several lines).
pub fn one_line(text: &str) -> String {
    text.split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Where distributions keep their CA bundle: `SSL_CERT_FILE` first (the OpenSSL
/// convention), then Debian/Ubuntu/Alpine, Fedora/RHEL, openSUSE, and others.
pub const CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

pub fn system_ca_bundle() -> Option<PathBuf> {
    std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .into_iter()
        .chain(CA_BUNDLES.iter().map(PathBuf::from))
        .find(|p| p.is_file())
}

/// Remove `*.lock` files that a killed fetch left in the cache (ref, packed-refs,
/// shallow and config locks). Only called under the pass's own lock, so no other
/// writer can be using them; left in place, they would fail every later fetch.
pub fn remove_stale_locks(cache: &Path) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            let ty = entry.file_type()?;
            if ty.is_dir() && entry.file_name() != "objects" {
                walk(&path, found)?;
            } else if ty.is_file() && path.extension().is_some_and(|e| e == "lock") {
                std::fs::remove_file(&path)?;
                found.push(path);
            }
        }
        Ok(())
    }
    let mut found = Vec::new();
    if cache.is_dir() {
        walk(cache, &mut found)
            .with_context(|| format!("failed to remove stale lock files in {}", cache.display()))?;
    }
    Ok(found)
}

impl Cache {
    /// Open the cache at `path`, creating it first when missing. Creation goes through a
    /// temporary directory and a rename, so an interrupted first pass leaves no half-made repo.
    /// `https` says whether the repository is fetched over https, the only case
    /// that needs a CA bundle.
    pub fn open_or_init(path: &Path, ssh: &SshOptions, https: bool) -> Result<Cache> {
        for stale in remove_stale_locks(path)? {
            crate::log::info!(
                "removed stale lock {} left by an interrupted fetch",
                stale.display()
            );
        }
        if !path.exists() {
            let parent = path.parent().context("cache path has no parent")?;
            let tmp = tempfile::Builder::new()
                .prefix(".tmp-cache-")
                .tempdir_in(parent)
                .with_context(|| format!("failed to create a directory in {}", parent.display()))?;
            gix::init_bare(tmp.path())
                .map_err(gix_err)
                .with_context(|| {
                    format!(
                        "failed to initialise cache repository in {}",
                        tmp.path().display()
                    )
                })?;
            let tmp = tmp.keep();
            std::fs::rename(&tmp, path).with_context(|| {
                format!(
                    "failed to move cache repository into place at {}",
                    path.display()
                )
            })?;
        }
        let overrides = [
            format!("core.sshCommand={}", ssh.command()),
            "ssh.variant=ssh".to_string(),
            "gitoxide.credentials.terminalPrompt=false".to_string(),
            // Objects only ever arrive through our fetches; no background gc in the pass.
            "gc.auto=0".to_string(),
        ];
        let opts =
            gix::open::Options::default().config_overrides(overrides.iter().map(String::as_str));
        let mut repo = gix::open_opts(path, opts)
            .map_err(gix_err)
            .with_context(|| format!("failed to open cache repository {}", path.display()))?;
        // curl's rustls backend has no default trust store and gix only names one when
        // configured: without this, https would fail everywhere. Users' settings win.
        let ca_needed = https
            && std::env::var_os("GIT_SSL_CAINFO").is_none()
            && repo.config_snapshot().string("http.sslCAInfo").is_none();
        if ca_needed {
            if let Some(bundle) = system_ca_bundle() {
                debug!("trusting the system CA bundle {}", bundle.display());
                let value = format!("http.sslCAInfo={}", bundle.display());
                let mut config = repo.config_snapshot_mut();
                config
                    .append_config([value.as_str()], gix::config::Source::Api)
                    .map_err(gix_err)?;
                config.commit().map_err(gix_err)?;
            }
        }
        Ok(Cache { repo })
    }

    fn tracking_ref(branch: &str) -> String {
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
        let over_ssh =
            url.raw.starts_with("ssh://") || !url.raw.contains("://") && !url.raw.starts_with('/');
        let hint = if over_ssh {
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
    ) -> (Vec<crate::notify::CommitLine>, usize) {
        const COUNT_LIMIT: usize = 10_000;
        let line = |id: ObjectId| crate::notify::CommitLine {
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
