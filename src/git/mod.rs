//! Everything gix does for us: the bare cache repository under the state
//! directory, fetching one branch (`fetch`), walking history (`history`), and
//! checking a commit out into an empty directory (`checkout`).

mod checkout;
mod fetch;
mod history;
pub mod url;

pub use checkout::under;
pub use fetch::History;
pub use history::{CommitInfo, CommitLine, FileChange};
pub use url::{RepoUrl, Transport};

use anyhow::{anyhow, Context, Result};
use std::path::{Path, PathBuf};

use crate::log::debug;

pub use gix::ObjectId;

/// Time allowed to connect to the Git server (http(s), and ssh's ConnectTimeout).
pub const CONNECT_TIMEOUT_SECS: u64 = 30;
/// An http transfer slower than this many bytes per second...
pub const HTTP_LOW_SPEED_BYTES: u64 = 1024;
/// ...for this long is abandoned.
pub const HTTP_LOW_SPEED_SECS: u64 = 60;
/// ssh asks a silent server for a sign of life this often...
pub const SSH_ALIVE_INTERVAL_SECS: u64 = 15;
/// ...and gives up after this many unanswered asks.
pub const SSH_ALIVE_COUNT: u64 = 3;

/// How to reach the Git server over ssh.
#[derive(Debug, Clone, Default)]
pub struct SshOptions {
    pub key: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
}

impl SshOptions {
    /// The ssh command line: never prompt, never trust an unknown host key.
    pub fn command(&self) -> String {
        let mut cmd = format!(
            "ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o ConnectTimeout={CONNECT_TIMEOUT_SECS} -o ServerAliveInterval={SSH_ALIVE_INTERVAL_SECS} -o ServerAliveCountMax={SSH_ALIVE_COUNT}"
        );
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

/// gix errors as one line: each distinct message of the source chain, outermost first.
pub(crate) fn gix_err(e: gix::Error) -> anyhow::Error {
    anyhow!("{}", error_chain(&e))
}

pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    crate::log::one_line(&parts.join(": "))
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

/// Remove what a killed fetch leaves in the cache: `*.lock` files (ref, packed-refs,
/// shallow and config locks), which would fail every later fetch, and temporary
/// pack and object files, which would pile up with every kill. Only called under
/// the pass's own lock, so no other writer can be using them.
pub fn remove_fetch_leftovers(cache: &Path) -> Result<Vec<PathBuf>> {
    fn is_temporary(name: &str) -> bool {
        name.starts_with(".tmp") || name.starts_with("tmp_") || name.starts_with("incoming-")
    }
    fn walk(dir: &Path, in_objects: bool, found: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            let ty = entry.file_type()?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if ty.is_dir() && in_objects && is_temporary(&name) {
                std::fs::remove_dir_all(&path)?;
                found.push(path);
            } else if ty.is_dir() {
                // Loose objects live in objects/xx/: no temporary files there to look for.
                let into_objects = in_objects || name == "objects";
                if !(in_objects && name.len() == 2) {
                    walk(&path, into_objects, found)?;
                }
            } else if name.ends_with(".lock") || (in_objects && is_temporary(&name)) {
                std::fs::remove_file(&path)?;
                found.push(path);
            }
        }
        Ok(())
    }
    let mut found = Vec::new();
    if cache.is_dir() {
        walk(cache, false, &mut found).with_context(|| {
            format!(
                "failed to remove leftovers of an interrupted fetch in {}",
                cache.display()
            )
        })?;
    }
    Ok(found)
}

impl Cache {
    /// Open the cache at `path`, creating it first when missing. Creation goes through a
    /// temporary directory and a rename, so an interrupted first pass leaves no half-made repo.
    /// A cache that cannot be opened (a damaged config, missing refs or HEAD, a file
    /// in its place) is only a cache: it is set aside and built again.
    pub fn open_or_init(path: &Path, ssh: &SshOptions, url: &RepoUrl) -> Result<Cache> {
        for left in remove_fetch_leftovers(path)? {
            let what = if left.extension().is_some_and(|e| e == "lock") {
                "stale lock"
            } else {
                "temporary file"
            };
            crate::log::info!(
                "removed {what} {} left by an interrupted fetch",
                left.display()
            );
        }
        match Self::open_or_init_once(path, ssh, url) {
            Ok(cache) => Ok(cache),
            Err(e) if path.exists() => {
                crate::log::warn!("the cache {} is damaged ({}); rebuilding it (the deployed tree and current are kept)", path.display(), crate::log::one_line(&format!("{e:#}")));
                set_aside(path)?;
                Self::open_or_init_once(path, ssh, url)
            }
            Err(e) => Err(e),
        }
    }

    /// Set this cache aside and start an empty one in its place.
    pub fn rebuild(self, ssh: &SshOptions, url: &RepoUrl) -> Result<Cache> {
        let path = self.path().to_path_buf();
        drop(self);
        set_aside(&path)?;
        Self::open_or_init_once(&path, ssh, url)
    }

    pub fn path(&self) -> &Path {
        self.repo.git_dir()
    }

    fn open_or_init_once(path: &Path, ssh: &SshOptions, url: &RepoUrl) -> Result<Cache> {
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
            // A server that stops sending is given up after a minute under 1 KiB/s
            // (the overall --fetch-timeout bounds everything else).
            format!("http.lowSpeedLimit={HTTP_LOW_SPEED_BYTES}"),
            format!("http.lowSpeedTime={HTTP_LOW_SPEED_SECS}"),
            format!(
                "gitoxide.http.connectTimeout={}",
                CONNECT_TIMEOUT_SECS * 1000
            ),
        ];
        let opts =
            gix::open::Options::default().config_overrides(overrides.iter().map(String::as_str));
        let mut repo = gix::open_opts(path, opts)
            .map_err(gix_err)
            .with_context(|| format!("failed to open cache repository {}", path.display()))?;
        if !repo.is_bare() {
            anyhow::bail!("{} is not a bare repository", path.display());
        }
        // curl's rustls backend has no default trust store and gix only names one when
        // configured: without this, https would fail everywhere. Users' settings win.
        let ca_needed = url.transport() == Transport::Https
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
}

/// Move a damaged cache out of the way; the next pass removes it as a leftover.
fn set_aside(path: &Path) -> Result<()> {
    let parent = path.parent().context("cache path has no parent")?;
    let aside = tempfile::Builder::new()
        .prefix(".tmp-damaged-cache-")
        .tempdir_in(parent)
        .with_context(|| format!("failed to create a directory in {}", parent.display()))?
        .keep();
    std::fs::rename(path, aside.join("cache.git"))
        .with_context(|| format!("failed to move the damaged cache {} aside", path.display()))?;
    Ok(())
}
