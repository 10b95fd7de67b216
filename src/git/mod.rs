//! Everything gix does for us: the bare cache repository under the state
//! directory, fetching one branch (`fetch`), walking history (`history`), and
//! checking a commit out into an empty directory (`checkout`).

mod checkout;
mod fetch;
mod history;
pub mod url;

pub use fetch::History;
pub use history::CommitLine;
pub use url::{RepoUrl, Transport};

use anyhow::{anyhow, Context, Result};
use std::path::{Path, PathBuf};

use crate::log::debug;

pub use gix::ObjectId;

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
    /// Only a repository fetched over https needs a CA bundle.
    pub fn open_or_init(path: &Path, ssh: &SshOptions, url: &RepoUrl) -> Result<Cache> {
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
