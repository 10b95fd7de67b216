//! The pass lock: `flock(2)` on `<state-dir>/lock`, never waited for. The lock
//! file also holds the record of the last pass, written without fsync: a pass that
//! changed nothing must not cost a flash-backed host a synced write.

use anyhow::{Context, Result};
use nix::fcntl::{Flock, FlockArg};

use crate::exit::{Classify, Exit};
use crate::state::{LastPass, Layout};

/// The lock, held until dropped.
pub type Lock = Flock<std::fs::File>;

/// Take the lock, waiting up to `wait` for another pass to release it; `None`
/// when it is still held then.
pub fn acquire_within(layout: &Layout, wait: std::time::Duration) -> Result<Option<Lock>> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        if let Some(lock) = try_acquire(layout)? {
            return Ok(Some(lock));
        }
        if std::time::Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn try_acquire(layout: &Layout) -> Result<Option<Lock>> {
    let path = layout.lock();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("failed to open lock file {}", path.display()))
        .class(Exit::State)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(anyhow::Error::new(e))
            .with_context(|| format!("failed to lock {}", path.display()))
            .class(Exit::State),
    }
}

/// Write the last pass's record into the held lock file. Best effort: losing it in
/// a crash costs only what `status` shows about that pass.
pub fn record(lock: &Lock, pass: &LastPass) {
    use std::os::unix::fs::FileExt;
    let Ok(mut json) = serde_json::to_vec(pass) else {
        return;
    };
    json.push(b'\n');
    let file: &std::fs::File = lock;
    if file.write_all_at(&json, 0).is_ok() {
        let _ = file.set_len(json.len() as u64);
    }
}
