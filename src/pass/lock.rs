//! The pass lock: `flock(2)` on `<state-dir>/lock`, never waited for.

use anyhow::{Context, Result};
use nix::fcntl::{Flock, FlockArg};

use crate::exit::{Classify, Exit};
use crate::state::Layout;

/// The lock, held until dropped.
pub type Lock = Flock<std::fs::File>;

/// Take the lock, or `None` when another pass holds it.
pub fn acquire(layout: &Layout) -> Result<Option<Lock>> {
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
