//! Secrets in Git: `*.age` files of the followed paths, decrypted with the host's
//! identity into a private RAM-backed directory per commit, with a `current` link.
//!
//! Layout under the secrets root (default `/run/gitops-run/secrets`):
//!
//! ```text
//! <root>/.tmp-<commit>-XXXX/   being decrypted; removed on any failure
//! <root>/<commit>/             one commit's secrets (files 0600, directories 0700)
//! <root>/current -> <commit>   the deployed commit's secrets, switched with rename(2)
//! ```
//!
//! Plaintext is only ever written below the root, which must be on tmpfs or ramfs,
//! and never appears in an error or a log line: errors name files, limits and
//! recipients, nothing read from a decrypted stream.

// The pass does not call into this module yet; the lead removes this when wiring it.

mod identity;
mod materialize;

#[cfg(test)]
mod tests;

use anyhow::{bail, Context, Result};
use std::fmt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub use identity::{run_recipient, Identities, DEFAULT_HOST_KEYS};
pub use materialize::{find, prepare};

/// Largest plaintext of one secret file.
pub const MAX_SECRET_FILE_BYTES: u64 = 1 << 20;
/// Largest plaintext of all secrets of one commit together.
pub const MAX_SECRETS_TOTAL_BYTES: u64 = 16 << 20;
/// Most secret files one commit may carry (each is an inode in RAM).
pub const MAX_SECRET_FILES: usize = 10_000;

/// Where the secrets root goes when systemd gives no `RuntimeDirectory=` and the
/// state directory is the default one.
pub const FALLBACK_ROOT: &str = "/run/gitops-run/secrets";
const FALLBACK_PARENT: &str = "/run/gitops-run";
/// gitops-run's default `--state-dir`.
const DEFAULT_STATE_DIR: &str = "/var/lib/gitops-run";
/// Name of the link to the deployed commit's secrets.
pub const CURRENT: &str = "current";
/// Prefix of directories being decrypted; anything so named is a leftover.
const TMP_PREFIX: &str = ".tmp-";

/// `statfs(2)` magic numbers of the RAM-backed file systems (linux/magic.h).
const TMPFS_MAGIC: u64 = 0x0102_1994;
const RAMFS_MAGIC: u64 = 0x8584_58f6;

/// Size bounds enforced while decrypting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_file_bytes: u64,
    pub max_total_bytes: u64,
    pub max_files: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_bytes: MAX_SECRET_FILE_BYTES,
            max_total_bytes: MAX_SECRETS_TOTAL_BYTES,
            max_files: MAX_SECRET_FILES,
        }
    }
}

/// Why a commit's secrets could not be materialised.
#[derive(Debug)]
pub enum SecretsError {
    /// The commit is at fault: a `*.age` file this host cannot decrypt (not for its
    /// key, corrupt, truncated), a limit exceeded, a symlink out of the tree.
    /// Retrying the same commit fails the same way; a new commit can fix it.
    Commit(String),
    /// The host is at fault: no usable identity, the root is not RAM-backed, I/O.
    Host(anyhow::Error),
}

impl SecretsError {
    /// Whether the commit's content (rather than the host) caused the failure.
    pub fn is_commit_fault(&self) -> bool {
        matches!(self, SecretsError::Commit(_))
    }
}

impl fmt::Display for SecretsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretsError::Commit(msg) => f.write_str(msg),
            SecretsError::Host(err) => write!(f, "{err:#}"),
        }
    }
}

impl std::error::Error for SecretsError {}

impl From<anyhow::Error> for SecretsError {
    fn from(err: anyhow::Error) -> Self {
        SecretsError::Host(err)
    }
}

/// Default secrets root. Under systemd, `<RuntimeDirectory>/secrets` (the first
/// directory if `$RUNTIME_DIRECTORY` lists several). Otherwise [`FALLBACK_ROOT`] for
/// the default state directory, and for any other state directory a root of its own
/// below `/run/gitops-run/`, so that passes for different repositories (each with
/// its own state directory) never prune each other's secrets.
pub fn default_root(runtime_dir: Option<&Path>, state_dir: &Path) -> PathBuf {
    let first = runtime_dir
        .and_then(|d| {
            d.to_str()
                .map(|s| s.split(':').next().unwrap_or(s).to_owned())
        })
        .filter(|s| Path::new(s).is_absolute());
    if let Some(dir) = first {
        return Path::new(&dir).join("secrets");
    }
    if state_dir == Path::new(DEFAULT_STATE_DIR) {
        return PathBuf::from(FALLBACK_ROOT);
    }
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(state_dir.as_os_str().as_encoded_bytes());
    let tag: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    Path::new(FALLBACK_PARENT)
        .join(format!("state-{tag}"))
        .join("secrets")
}

/// Whether `<root>/<commit>` holds that commit's secrets (after a reboot it does not).
pub fn present(root: &Path, commit: &str) -> bool {
    check_commit(commit).is_ok()
        && std::fs::symlink_metadata(root.join(commit))
            .map(|m| m.is_dir())
            .unwrap_or(false)
}

/// Point `<root>/current` at `<root>/<commit>` with one rename(2) of a symlink.
pub fn switch_current(root: &Path, commit: &str) -> Result<()> {
    check_commit(commit)?;
    let dir = root.join(commit);
    if !std::fs::symlink_metadata(&dir)
        .map(|m| m.is_dir())
        .unwrap_or(false)
    {
        bail!(
            "failed to switch {}: {} is not a directory of secrets",
            root.join(CURRENT).display(),
            dir.display()
        );
    }
    let tmp = root.join(format!("{TMP_PREFIX}{CURRENT}"));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(commit, &tmp)
        .with_context(|| format!("failed to create symlink {}", tmp.display()))?;
    // No fsync: the root is RAM-backed and does not survive a reboot anyway.
    std::fs::rename(&tmp, root.join(CURRENT)).with_context(|| {
        format!(
            "failed to switch {} to {commit}",
            root.join(CURRENT).display()
        )
    })
}

/// The commit `<root>/current` points at, if any.
pub fn current_commit(root: &Path) -> Option<String> {
    let target = std::fs::read_link(root.join(CURRENT)).ok()?;
    let name = target.to_str()?.to_owned();
    check_commit(&name).is_ok().then_some(name)
}

/// Remove everything under `root` except `current`, the directory it points at and
/// the commits in `keep`; leftovers of interrupted runs (`.tmp-*`) go too.
pub fn prune(root: &Path, keep: &[&str]) -> Result<()> {
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("failed to list {}", root.display())),
    };
    let current = current_commit(root);
    for entry in entries {
        let entry = entry.with_context(|| format!("failed to list {}", root.display()))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == CURRENT || keep.contains(&name.as_ref()) || current.as_deref() == Some(&name) {
            continue;
        }
        let path = entry.path();
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if is_dir {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        }
        .with_context(|| format!("failed to remove {}", path.display()))?;
    }
    Ok(())
}

/// Refuse a directory that is not on a RAM-backed file system (tmpfs or ramfs).
pub fn check_ram_backed(dir: &Path) -> Result<()> {
    let fs = nix::sys::statfs::statfs(dir)
        .with_context(|| format!("failed to inspect the file system of {}", dir.display()))?;
    // The magic's integer type differs between targets; every value fits in u64.
    #[allow(clippy::useless_conversion, clippy::unnecessary_cast)]
    let magic = fs.filesystem_type().0 as u64;
    if magic == TMPFS_MAGIC || magic == RAMFS_MAGIC {
        return Ok(());
    }
    bail!(
        "refusing to decrypt secrets into {}: it is on {}, not on a RAM-backed file \
         system (tmpfs or ramfs), and plaintext must never reach persistent storage; \
         mount a tmpfs there or choose a secrets root on one (such as /run)",
        dir.display(),
        fs_name(magic)
    )
}

/// A name for the file systems people are likely to meet, else the magic number.
fn fs_name(magic: u64) -> String {
    let known = [
        (0xef53, "ext2/3/4"),
        (0x5846_5342, "xfs"),
        (0x9123_683e, "btrfs"),
        (0x794c_7630, "overlayfs"),
        (0x2fc1_2fc1, "zfs"),
        (0x6969, "nfs"),
        (0x4d44, "vfat"),
        (0xf2f5_2010, "f2fs"),
    ];
    match known.iter().find(|(m, _)| *m == magic) {
        Some((_, name)) => format!("{name} (file system type {magic:#x})"),
        None => format!("file system type {magic:#x}"),
    }
}

/// Commit ids name directories under the root: lowercase hex only, so no id can be
/// `current`, start with a dot or contain a slash.
fn check_commit(commit: &str) -> Result<()> {
    if commit.is_empty()
        || commit.len() > 64
        || !commit
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        bail!("invalid commit id {commit:?} for a secrets directory");
    }
    Ok(())
}

/// Create the root (mode 0700) if needed, and refuse one that is a symlink, not a
/// directory, or owned by another user.
fn prepare_root(root: &Path) -> Result<()> {
    if let Some(parent) = root.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("failed to create {}", parent.display()))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(root) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("failed to create {}", root.display())),
    }
    let meta = std::fs::symlink_metadata(root)
        .with_context(|| format!("failed to inspect {}", root.display()))?;
    if !meta.is_dir() {
        bail!(
            "refusing secrets root {}: it is not a directory (a symlink or a file)",
            root.display()
        );
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        bail!(
            "refusing secrets root {}: it is owned by uid {}, not by this user (uid {me})",
            root.display(),
            meta.uid()
        );
    }
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("failed to set mode 0700 on {}", root.display()))
}

/// A byte count for messages: `1 MiB`, `64 KiB`, `1000 bytes`.
pub(crate) fn human_bytes(n: u64) -> String {
    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= KIB && n.is_multiple_of(KIB) {
        format!("{} KiB", n / KIB)
    } else {
        format!("{n} bytes")
    }
}
