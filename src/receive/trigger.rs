//! The trigger file: how the receiver asks for a pass without running one.
//! The receiver creates it atomically (never through a symlink), at once for
//! a push after a quiet period and once more after a burst ([`next`]), never
//! twice within the minimum interval; a path unit (or a short-interval check) sees it and
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
            dir: through_roots_symlink(dir)?,
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
}

/// The directory itself when `dir` is a symlink that root owns, else `dir`.
/// systemd makes one for the preserved runtime directory of a dynamic user
/// (`/run/gitops-run-receiver` -> `/run/private/gitops-run-receiver` with
/// `RuntimeDirectoryPreserve=yes`); a symlink anyone else owns stays refused
/// by [`TriggerFile::open_dir`], which never follows one.
fn through_roots_symlink(dir: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() && m.uid() == 0 => {
            std::fs::canonicalize(dir).map_err(|e| {
                fail(
                    Exit::Usage,
                    format!(
                        "failed to resolve the trigger directory {} (a symlink): {e}",
                        dir.display()
                    ),
                )
            })
        }
        _ => Ok(dir.to_path_buf()),
    }
}

impl TriggerFile {
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

/// Requests less than this apart form one burst: the requests of a burst
/// that were not written at once are written together once the stream of
/// requests has been quiet this long.
pub const BURST_QUIET_MILLIS: u64 = 1_000;
/// A request held back by a burst that never ends is written at the latest
/// this long after it arrived (and no sooner than the minimum interval after
/// the last write), so that a flood of requests cannot hold every pass off.
pub const MAX_DEFER_SECS: u64 = 60;

/// What the writer should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Nothing is pending.
    Idle,
    /// Write the trigger now.
    WriteNow,
    /// A request is pending and must wait this long (for the minimum
    /// interval after the last write, or for its burst to end).
    Wait(Duration),
}

/// What the writer knows about the requests and its own writes: the input of
/// [`next`], updated by [`Timing::request`] and [`Timing::written`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timing {
    /// A request waits to be written.
    pub pending: bool,
    /// When the oldest request that waits arrived.
    pub pending_since: Option<Instant>,
    /// Whether the oldest request that waits came after a quiet period (at
    /// least [`BURST_QUIET_MILLIS`] after the request before it, or as the
    /// first one): it is then written as soon as the minimum interval
    /// allows. Otherwise it is the tail of a burst, written once the burst
    /// is over.
    pub leading: bool,
    /// When the latest request arrived.
    pub last_request: Option<Instant>,
    /// When the trigger was last written (or a write was tried).
    pub last_write: Option<Instant>,
}

impl Timing {
    /// A request for a pass arrived at `now`.
    pub fn request(self, now: Instant) -> Timing {
        let quiet_before = self
            .last_request
            .is_none_or(|l| now.saturating_duration_since(l) >= burst_quiet());
        let mut t = self;
        if !t.pending {
            t.pending = true;
            t.pending_since = Some(now);
            t.leading = quiet_before;
        }
        t.last_request = Some(now);
        t
    }

    /// The writer takes every waiting request and writes the trigger at
    /// `now`; requests arriving from now on wait for the next write.
    pub fn written(self, now: Instant) -> Timing {
        Timing {
            pending: false,
            pending_since: None,
            leading: false,
            last_request: self.last_request,
            last_write: Some(now),
        }
    }
}

fn burst_quiet() -> Duration {
    Duration::from_millis(BURST_QUIET_MILLIS)
}

/// How much of `span` is left at `now` when it started at `since` (nothing
/// when there is no start).
fn left(now: Instant, since: Option<Instant>, span: Duration) -> Duration {
    since.map_or(Duration::ZERO, |s| {
        span.saturating_sub(now.saturating_duration_since(s))
    })
}

/// Pure scheduling rule, a leading edge plus a trailing debounce:
/// - a request that comes after a quiet period is written as soon as the
///   last write is `min_interval` old (at once, usually);
/// - the requests of a burst that were not written with its first one are
///   merged into one write, made when no request came for
///   [`BURST_QUIET_MILLIS`], and never sooner than `min_interval` after the
///   last write;
/// - in a burst that does not end, that write is made at the latest
///   [`MAX_DEFER_SECS`] after the oldest waiting request (still not sooner
///   than `min_interval` after the last write).
///
/// So a burst shorter than [`MAX_DEFER_SECS`] leads to at most two writes,
/// the last one after its last request.
pub fn next(now: Instant, t: &Timing, min_interval: Duration) -> Next {
    if !t.pending {
        return Next::Idle;
    }
    let interval = left(now, t.last_write, min_interval);
    let wait = if t.leading {
        interval
    } else {
        let quiet = left(now, t.last_request, burst_quiet());
        let deferred = left(now, t.pending_since, Duration::from_secs(MAX_DEFER_SECS));
        interval.max(quiet.min(deferred))
    };
    if wait.is_zero() {
        Next::WriteNow
    } else {
        Next::Wait(wait)
    }
}

#[derive(Debug, Default)]
struct State {
    timing: Timing,
    stopping: bool,
    writes: u64,
}

/// Collects requests for a pass from the connection threads and writes the
/// trigger on its own thread, when [`next`] says so.
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
        let mut state = self.lock();
        state.timing = state.timing.request(Instant::now());
        drop(state);
        self.wake.notify_all();
    }

    /// Whether a request waits to be written.
    pub fn pending(&self) -> bool {
        self.lock().timing.pending
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
            let decision = if state.stopping {
                // On the way out, a waiting request is written at once.
                if state.timing.pending {
                    Next::WriteNow
                } else {
                    return;
                }
            } else {
                next(Instant::now(), &state.timing, min_interval)
            };
            match decision {
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
                    let taken = state.timing;
                    state.timing = taken.written(Instant::now());
                    drop(state);
                    let result = file.write();
                    state = self.lock();
                    state.timing.last_write = Some(Instant::now());
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
                                // The requests taken wait again, as old as
                                // they were, with those that came meanwhile.
                                let t = &mut state.timing;
                                t.pending = true;
                                t.pending_since = taken.pending_since;
                                t.leading = taken.leading;
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

    #[test]
    fn a_directory_reached_through_roots_symlink_is_used_and_anyone_elses_refused() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: making a symlink owned by root needs root (CI runs as root)");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let real = t.path().join("private");
        std::fs::create_dir(&real).unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
        let link = t.path().join("runtime");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let f = TriggerFile::new(&link.join("trigger")).unwrap();
        assert_eq!(f.path(), real.canonicalize().unwrap().join("trigger"));
        f.write().unwrap();
        assert!(
            link.join("trigger").exists(),
            "seen through the symlink too"
        );

        nix::unistd::fchownat(
            nix::fcntl::AT_FDCWD,
            &link,
            Some(nix::unistd::Uid::from_raw(65534)),
            None,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .unwrap();
        let err = TriggerFile::new(&link.join("trigger")).unwrap_err();
        assert!(format!("{err:#}").contains("not a symlink"), "{err:#}");
    }
    use std::os::unix::fs::PermissionsExt;

    const MIN: Duration = Duration::from_secs(5);

    fn ms(m: u64) -> Duration {
        Duration::from_millis(m)
    }

    /// Feed requests at the given offsets (milliseconds) from `t0`, writing
    /// whenever [`next`] says so, at each request and at each wake-up it
    /// asks for; the offsets of the writes, up to `until_ms`.
    fn simulate(t0: Instant, requests: &[u64], until_ms: u64, min: Duration) -> Vec<Duration> {
        let mut t = Timing::default();
        let mut writes = Vec::new();
        let mut wake: Option<Duration> = None;
        let mut i = 0;
        loop {
            // The next event: a request, or the writer's wake-up.
            let req = requests.get(i).map(|r| ms(*r));
            let at = match (req, wake) {
                (Some(r), Some(w)) => r.min(w),
                (Some(r), None) => r,
                (None, Some(w)) => w,
                (None, None) => break,
            };
            if at > ms(until_ms) {
                break;
            }
            let now = t0 + at;
            if req == Some(at) {
                t = t.request(now);
                i += 1;
            }
            wake = None;
            match next(now, &t, min) {
                Next::Idle => {}
                Next::WriteNow => {
                    writes.push(at);
                    t = t.written(now);
                }
                Next::Wait(d) => wake = Some(at + d),
            }
        }
        writes
    }

    #[test]
    fn nothing_pending_is_idle() {
        let t0 = Instant::now();
        assert_eq!(next(t0, &Timing::default(), MIN), Next::Idle);
        let t = Timing::default().request(t0).written(t0);
        assert_eq!(next(t0 + ms(100_000), &t, MIN), Next::Idle);
    }

    #[test]
    fn a_first_or_isolated_request_is_written_at_once() {
        let t0 = Instant::now();
        let t = Timing::default().request(t0);
        assert!(t.leading);
        assert_eq!(next(t0, &t, MIN), Next::WriteNow);
        // Long after the last write and the last request: at once again.
        let t = t.written(t0).request(t0 + ms(30_000));
        assert!(t.leading);
        assert_eq!(next(t0 + ms(30_000), &t, MIN), Next::WriteNow);
    }

    #[test]
    fn an_isolated_request_soon_after_a_write_waits_for_the_interval_only() {
        let t0 = Instant::now();
        // Written at 0 (and consumed by a pass); another push at 2 s.
        let t = Timing::default()
            .request(t0)
            .written(t0)
            .request(t0 + ms(2_000));
        assert!(t.leading, "2 s of quiet: not part of a burst");
        assert_eq!(next(t0 + ms(2_000), &t, MIN), Next::Wait(ms(3_000)));
        assert_eq!(next(t0 + MIN, &t, MIN), Next::WriteNow);
        // More requests in the meantime do not push it back.
        let t = t.request(t0 + ms(2_500)).request(t0 + ms(4_900));
        assert_eq!(next(t0 + MIN, &t, MIN), Next::WriteNow);
        assert_eq!(
            simulate(t0, &[0, 2_000], 100_000, MIN),
            vec![ms(0), ms(5_000)]
        );
    }

    #[test]
    fn the_rest_of_a_burst_waits_for_quiet_and_the_interval() {
        let t0 = Instant::now();
        let t = Timing::default().request(t0).written(t0);
        // 0.5 s after the written one: the tail of a burst.
        let t = t.request(t0 + ms(500));
        assert!(!t.leading);
        // The interval is the longer wait here.
        assert_eq!(next(t0 + ms(500), &t, MIN), Next::Wait(ms(4_500)));
        // The burst goes on past the interval: wait for quiet.
        let t = t.request(t0 + ms(5_500));
        assert_eq!(next(t0 + ms(6_000), &t, MIN), Next::Wait(ms(500)));
        assert_eq!(next(t0 + ms(6_500), &t, MIN), Next::WriteNow);
    }

    #[test]
    fn requests_before_the_writer_looks_still_lead() {
        // All requests arrive before the writer looks: the first one still
        // counts as leading and is written at once.
        let t0 = Instant::now();
        let mut t = Timing::default();
        for i in 0..1000 {
            t = t.request(t0 + Duration::from_micros(i));
        }
        assert!(t.leading);
        assert_eq!(next(t0 + ms(1), &t, MIN), Next::WriteNow);
        let t = t.written(t0 + ms(1)).request(t0 + ms(2));
        assert!(!t.leading, "less than the quiet period after the last one");
    }

    #[test]
    fn a_burst_of_any_length_below_the_deferral_makes_two_writes() {
        let t0 = Instant::now();
        let quiet = ms(BURST_QUIET_MILLIS);
        for (len_ms, step_ms) in [(100, 10), (6_000, 6), (12_000, 500), (59_000, 900)] {
            let requests: Vec<u64> = (0..=len_ms / step_ms).map(|i| i * step_ms).collect();
            let last = ms(*requests.last().unwrap());
            let writes = simulate(t0, &requests, 1_000_000, MIN);
            assert_eq!(writes.len(), 2, "burst of {len_ms} ms: {writes:?}");
            assert_eq!(writes[0], ms(0), "the first push is written at once");
            assert!(writes[1] > last, "the last push is not lost: {writes:?}");
            assert!(writes[1] - writes[0] >= MIN, "{writes:?}");
            assert_eq!(
                writes[1],
                (last + quiet).max(MIN),
                "written once the burst is over"
            );
        }
    }

    #[test]
    fn a_flood_is_written_at_least_every_max_defer() {
        let t0 = Instant::now();
        let max = Duration::from_secs(MAX_DEFER_SECS);
        // A request every 0.5 s for 200 s.
        let requests: Vec<u64> = (0..400).map(|i| i * 500).collect();
        let writes = simulate(t0, &requests, 1_000_000, MIN);
        assert_eq!(writes[0], ms(0));
        for pair in writes.windows(2) {
            // At most the deferral after the first request held back.
            assert!(pair[1] - pair[0] <= max + ms(500), "{writes:?}");
            assert!(pair[1] - pair[0] >= MIN, "{writes:?}");
        }
        assert_eq!(writes.len(), 5, "{writes:?}");
        assert!(*writes.last().unwrap() > ms(*requests.last().unwrap()));
        // The pure rule: the tail waits for the deferral, no longer.
        let t = Timing::default()
            .request(t0)
            .written(t0)
            .request(t0 + ms(500))
            .request(t0 + ms(60_400));
        assert_eq!(next(t0 + ms(60_400), &t, MIN), Next::Wait(ms(100)));
        assert_eq!(next(t0 + ms(60_500), &t, MIN), Next::WriteNow);
    }

    #[test]
    fn the_interval_wins_over_the_deferral() {
        let t0 = Instant::now();
        let long = Duration::from_secs(120);
        let t = Timing::default()
            .request(t0)
            .written(t0)
            .request(t0 + ms(500))
            .request(t0 + ms(70_000));
        assert_eq!(next(t0 + ms(70_000), &t, long), Next::Wait(ms(50_000)));
        assert_eq!(next(t0 + long, &t, long), Next::WriteNow);
        // A zero interval with a quiet stream: at once.
        let t = Timing::default()
            .request(t0)
            .written(t0)
            .request(t0 + ms(100));
        assert_eq!(next(t0 + ms(1_100), &t, Duration::ZERO), Next::WriteNow);
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

        // A symlink that root does not own (root's own is followed: see
        // a_directory_reached_through_roots_symlink_is_used_and_anyone_elses_refused).
        let link = d.path().join("link");
        std::os::unix::fs::symlink(d.path(), &link).unwrap();
        if nix::unistd::geteuid().is_root() {
            nix::unistd::fchownat(
                nix::fcntl::AT_FDCWD,
                &link,
                Some(nix::unistd::Uid::from_raw(65534)),
                None,
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .unwrap();
        }
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
