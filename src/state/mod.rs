//! The state directory: its layout and safety checks, and how files in it are
//! written durably. Everything gitops-run remembers between passes lives here.

mod file;
pub mod freeze;
pub mod logs;
pub mod trees;

pub use file::*;

use anyhow::{Context, Result};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::exit::{fail, Classify, Exit};

/// Paths inside the state directory.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Layout {
        Layout {
            root: root.to_path_buf(),
        }
    }
    pub fn lock(&self) -> PathBuf {
        self.root.join("lock")
    }
    pub fn state_file(&self) -> PathBuf {
        self.root.join("state.json")
    }
    pub fn cache(&self) -> PathBuf {
        self.root.join("cache.git")
    }
    pub fn trees(&self) -> PathBuf {
        self.root.join("trees")
    }
    pub fn tree(&self, commit: &str) -> PathBuf {
        self.trees().join(commit)
    }
    pub fn current(&self) -> PathBuf {
        self.root.join("current")
    }
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    /// Where the entrypoint writes one line per thing it had to correct
    /// (`GITOPS_DRIFT_FILE`); emptied before each run.
    pub fn drift_file(&self) -> PathBuf {
        self.root.join("drift")
    }
    /// The operator's freeze, apart from `state.json` so that nothing can lose it.
    pub fn freeze_file(&self) -> PathBuf {
        self.root.join("freeze.json")
    }
    /// Written by the entrypoint's own process before it starts, removed when it ends.
    pub fn pid_file(&self) -> PathBuf {
        self.root.join("entrypoint.pid")
    }
}

/// Create the state directory if needed (mode 0700) and refuse one that another
/// user owns or that others may write to: it holds what runs as root.
pub fn prepare_dir(root: &Path) -> Result<()> {
    if let Ok(target) = std::fs::read_link(root) {
        if !root.exists() {
            return Err(fail(
                Exit::State,
                format!(
                    "state directory {} is a symlink to {}, which does not exist; create that directory or remove the link",
                    root.display(),
                    target.display()
                ),
            ));
        }
    }
    if !root.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .with_context(|| format!("failed to create state directory {}", root.display()))
            .class(Exit::State)?;
    }
    check_dir_safety(root)
}

pub fn check_dir_safety(root: &Path) -> Result<()> {
    let meta = std::fs::metadata(root)
        .with_context(|| format!("failed to read state directory {}", root.display()))
        .class(Exit::State)?;
    if !meta.is_dir() {
        return Err(fail(
            Exit::State,
            format!("state directory {} is not a directory", root.display()),
        ));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(fail(
            Exit::State,
            format!(
                "state directory {} is owned by uid {}, not by uid {me} running gitops-run; fix with chown or use another --state-dir",
                root.display(),
                meta.uid()
            ),
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(fail(
            Exit::State,
            format!(
                "state directory {} is writable by group or others (mode {:o}); fix with chmod 700",
                root.display(),
                meta.mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

/// Write `path` atomically: temp file in `dir` (the same directory), fsync, rename,
/// fsync of the directory.
pub fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomically_as(dir, path, bytes, ".tmp-")
}

/// [`write_atomically`] with the temporary file's name prefix: files written
/// without the pass lock (the freeze record) must not look like the leftovers of
/// an interrupted pass, which every pass removes.
pub fn write_atomically_as(dir: &Path, path: &Path, bytes: &[u8], prefix: &str) -> Result<()> {
    let write = || -> std::io::Result<()> {
        let mut tmp = tempfile::Builder::new().prefix(prefix).tempfile_in(dir)?;
        tmp.write_all(bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    };
    write().map_err(|e| io_error(e, dir))?;
    sync_dir(dir)
}

/// Whether an I/O error (or one it wraps, as `tempfile` wraps errors with the
/// file's path) is the file system running out of space or quota.
fn io_is_disk_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    ) || matches!(
        e.raw_os_error(),
        Some(nix::libc::ENOSPC) | Some(nix::libc::EDQUOT)
    ) || e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<std::io::Error>())
        .is_some_and(io_is_disk_full)
}

/// An I/O error with a plain explanation when the file system is full.
pub fn io_error(e: std::io::Error, dir: &Path) -> anyhow::Error {
    if io_is_disk_full(&e) {
        anyhow::Error::new(e).context(format!(
            "disk full: the file system holding {} has no space left",
            dir.display()
        ))
    } else {
        anyhow::Error::new(e)
    }
}

/// Whether `err` (anywhere in its chain) is the file system running out of space.
pub fn is_disk_full(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(io_is_disk_full)
            || e.to_string().contains("No space left on device")
    })
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("failed to fsync directory {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_directories_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = check_dir_safety(dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains("writable by group or others"));
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        check_dir_safety(dir.path()).unwrap();
    }
}
