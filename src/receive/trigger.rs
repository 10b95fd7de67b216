//! The trigger file: how the receiver asks for a pass without running one.
//! The receiver creates it atomically (never through a symlink) at most once
//! per minimum interval; a path unit (or a short-interval check) sees it and
//! starts a pass; the pass removes it with [`consume_trigger`] before it
//! fetches, so a push that lands during a pass leaves the file behind and
//! causes exactly one more pass.

use anyhow::{Context, Result};
use nix::fcntl::{open, openat, renameat, OFlag};
use nix::sys::stat::{fstat, Mode};
use nix::unistd::{unlinkat, UnlinkatFlags};
use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::exit::{fail, Exit};

/// What the trigger file says to a person who looks at it.
const TRIGGER_TEXT: &[u8] = b"a push asked for a gitops-run pass\n";
/// A failed write of the trigger is tried this often before it is given up
/// (and logged); the timer's next pass then picks the push up.
pub const MAX_WRITE_ATTEMPTS: u32 = 3;

/// The pass side: remove the trigger file, if there is one. Call it once the
/// pass holds its lock and before it fetches: a push that arrives after this
/// point creates the file again and so leads to one more pass. Returns
/// whether a trigger was there. The last path component is never followed
/// (unlink removes a symlink, not its target).
pub fn consume_trigger(path: &Path) -> Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => {
            Err(e).with_context(|| format!("failed to remove the trigger file {}", path.display()))
        }
    }
}

/// The receiver's side: the trigger file and the directory that holds it.
#[derive(Debug, Clone)]
pub struct TriggerFile {
    dir: PathBuf,
    name: OsString,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl TriggerFile {
    /// Check the directory now, so that a receiver which could never ask for
    /// a pass refuses to start instead of answering 202 in vain.
    pub fn new(path: &Path) -> Result<TriggerFile> {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(fail(
                Exit::Usage,
                format!("invalid trigger file {}", path.display()),
            ));
        };
        if name.as_bytes().starts_with(b".") {
            return Err(fail(
                Exit::Usage,
                format!(
                    "the trigger file {} must not be hidden (path units ignore dot files)",
                    path.display()
                ),
            ));
        }
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let trigger = TriggerFile {
            dir: dir.to_path_buf(),
            name: name.to_owned(),
        };
        trigger
            .open_dir()
            .map_err(|e| fail(Exit::Usage, format!("{e:#}")))?;
        Ok(trigger)
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(&self.name)
    }

    /// Open the directory without following a symlink, and check that it
    /// belongs to this user and that nobody else may write to it: then no
    /// one else can plant anything in it.
    fn open_dir(&self) -> Result<OwnedFd> {
        let what = || format!("the trigger directory {}", self.dir.display());
        let fd = open(
            &self.dir,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| {
            format!(
                "failed to open {} (it must be a directory, not a symlink)",
                what()
            )
        })?;
        let st = fstat(&fd).with_context(|| format!("failed to inspect {}", what()))?;
        let me = nix::unistd::geteuid().as_raw();
        if st.st_uid != me {
            anyhow::bail!(
                "{} belongs to uid {}, not to this user (uid {me})",
                what(),
                st.st_uid
            );
        }
        if st.st_mode & 0o022 != 0 {
            anyhow::bail!(
                "{} is writable by group or others (mode {:o})",
                what(),
                st.st_mode & 0o7777
            );
        }
        Ok(fd)
    }

    /// Create the trigger file atomically: write a hidden temporary file in
    /// the same directory (O_EXCL, O_NOFOLLOW), then rename it over the
    /// trigger's name. A symlink planted under that name is replaced, never
    /// followed.
    pub fn write(&self) -> Result<()> {
        let dir = self.open_dir()?;
        let mut tmp = OsString::from(".");
        tmp.push(&self.name);
        tmp.push(format!(
            ".tmp-{}-{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let tmp = PathBuf::from(tmp);
        let result = (|| -> Result<()> {
            let fd = openat(
                dir.as_fd(),
                &tmp,
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o644),
            )
            .context("failed to create the temporary file")?;
            let mut file = std::fs::File::from(fd);
            std::io::Write::write_all(&mut file, TRIGGER_TEXT)
                .context("failed to write the temporary file")?;
            drop(file);
            renameat(dir.as_fd(), &tmp, dir.as_fd(), Path::new(&self.name))
                .context("failed to rename it into place")?;
            Ok(())
        })();
        if result.is_err() {
            let _ = unlinkat(dir.as_fd(), &tmp, UnlinkatFlags::NoRemoveDir);
        }
        result
            .with_context(|| format!("failed to write the trigger file {}", self.path().display()))
    }
}

/// What the writer should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Nothing is pending.
    Idle,
    /// Write the trigger now.
    WriteNow,
    /// A push is pending; the last write was too recent: wait this long.
    Wait(Duration),
}

/// Pure rate limit: a pending request is written at once unless the last
/// write was less than `min_interval` ago; then it waits for the rest. Any
/// number of pushes in between collapse into that one write.
pub fn next(
    now: Instant,
    last_write: Option<Instant>,
    pending: bool,
    min_interval: Duration,
) -> Next {
    if !pending {
        return Next::Idle;
    }
    match last_write {
        Some(last) => {
            let since = now.saturating_duration_since(last);
            if since >= min_interval {
                Next::WriteNow
            } else {
                Next::Wait(min_interval - since)
            }
        }
        None => Next::WriteNow,
    }
}

#[derive(Debug, Default)]
struct State {
    pending: bool,
    last_write: Option<Instant>,
    stopping: bool,
    writes: u64,
}

/// Collects requests for a pass from the connection threads and writes the
/// trigger on its own thread, at most once per minimum interval.
pub struct Scheduler {
    state: Mutex<State>,
    wake: Condvar,
}

impl Scheduler {
    /// Start the writer thread.
    pub fn start(
        file: TriggerFile,
        min_interval: Duration,
    ) -> Result<(Arc<Scheduler>, std::thread::JoinHandle<()>)> {
        let scheduler = Arc::new(Scheduler {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let s = Arc::clone(&scheduler);
        let handle = std::thread::Builder::new()
            .name("trigger".into())
            .spawn(move || s.writer(&file, min_interval))
            .context("failed to start the trigger writer thread")?;
        Ok((scheduler, handle))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ask for a pass (from any thread). Returns at once.
    pub fn request(&self) {
        self.lock().pending = true;
        self.wake.notify_all();
    }

    /// Whether a request waits to be written.
    pub fn pending(&self) -> bool {
        self.lock().pending
    }

    /// Write what is pending now, whatever the interval, and end the writer.
    pub fn stop(&self) {
        self.lock().stopping = true;
        self.wake.notify_all();
    }

    fn writer(&self, file: &TriggerFile, min_interval: Duration) {
        let mut failures = 0u32;
        let mut state = self.lock();
        loop {
            let now = Instant::now();
            let interval = if state.stopping {
                Duration::ZERO
            } else {
                min_interval
            };
            match next(now, state.last_write, state.pending, interval) {
                Next::Idle if state.stopping => return,
                Next::Idle => {
                    state = self.wake.wait(state).unwrap_or_else(|p| p.into_inner());
                }
                Next::Wait(d) => {
                    state = self
                        .wake
                        .wait_timeout(state, d)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                Next::WriteNow => {
                    state.pending = false;
                    drop(state);
                    let result = file.write();
                    state = self.lock();
                    state.last_write = Some(Instant::now());
                    match result {
                        Ok(()) => {
                            failures = 0;
                            state.writes += 1;
                            crate::log::emit(&format!(
                                "gitops-run receive: asked for a pass: wrote {}",
                                file.path().display()
                            ));
                        }
                        Err(e) => {
                            failures += 1;
                            let retry = failures < MAX_WRITE_ATTEMPTS;
                            crate::log::emit(&format!(
                                "gitops-run receive: error: {e:#}{}",
                                if retry {
                                    "; trying again"
                                } else {
                                    "; giving up: the next timer pass will pick the push up"
                                }
                            ));
                            if retry {
                                state.pending = true;
                            } else {
                                failures = 0;
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_are_spaced_by_the_interval_and_merged() {
        let t0 = Instant::now();
        let i = Duration::from_secs(5);
        assert_eq!(next(t0, None, false, i), Next::Idle);
        assert_eq!(next(t0, None, true, i), Next::WriteNow);
        assert_eq!(
            next(t0 + Duration::from_secs(2), Some(t0), true, i),
            Next::Wait(Duration::from_secs(3))
        );
        assert_eq!(next(t0 + i, Some(t0), true, i), Next::WriteNow);
        assert_eq!(next(t0 + i, Some(t0), false, i), Next::Idle);
        assert_eq!(next(t0, Some(t0), true, Duration::ZERO), Next::WriteNow);
    }

    fn private_dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        d
    }

    #[test]
    fn write_creates_the_file_and_consume_removes_it() {
        let d = private_dir();
        let path = d.path().join("trigger");
        let t = TriggerFile::new(&path).unwrap();
        t.write().unwrap();
        assert!(path.is_file());
        t.write().unwrap();
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("trigger")], "no temp file left");
        assert!(consume_trigger(&path).unwrap());
        assert!(!path.exists());
        assert!(!consume_trigger(&path).unwrap());
    }

    #[test]
    fn a_planted_symlink_is_replaced_not_followed() {
        let d = private_dir();
        let victim = d.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let path = d.path().join("trigger");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        TriggerFile::new(&path).unwrap().write().unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert!(std::fs::symlink_metadata(&path).unwrap().is_file());

        // consume removes a symlink itself, never its target.
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        assert!(consume_trigger(&path).unwrap());
        assert!(victim.exists());
    }

    #[test]
    fn unsafe_or_odd_directories_are_refused() {
        let d = private_dir();
        let open = d.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = TriggerFile::new(&open.join("trigger")).unwrap_err();
        assert!(
            format!("{err:#}").contains("writable by group or others"),
            "{err:#}"
        );

        let link = d.path().join("link");
        std::os::unix::fs::symlink(d.path(), &link).unwrap();
        assert!(TriggerFile::new(&link.join("trigger")).is_err());
        assert!(TriggerFile::new(&d.path().join("missing/trigger")).is_err());
        assert!(TriggerFile::new(&d.path().join(".trigger")).is_err());
    }

    #[test]
    fn the_scheduler_merges_a_burst_into_two_writes_and_flushes_on_stop() {
        let d = private_dir();
        let path = d.path().join("trigger");
        let (s, handle) =
            Scheduler::start(TriggerFile::new(&path).unwrap(), Duration::from_secs(3600)).unwrap();
        for _ in 0..1000 {
            s.request();
        }
        // The first request is written at once; the rest wait for the interval.
        let deadline = Instant::now() + Duration::from_secs(10);
        while s.lock().writes == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(s.lock().writes, 1);
        assert!(consume_trigger(&path).unwrap());
        s.request();
        assert!(s.pending());
        s.stop();
        handle.join().unwrap();
        assert_eq!(
            s.lock().writes,
            2,
            "stop writes the pending request at once"
        );
        assert!(path.is_file());
    }
}
