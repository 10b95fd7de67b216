//! The freeze as a pass sees it: read once the pass holds the lock (an expired
//! freeze is removed then), and read again right before an entrypoint starts, so
//! that `gitops-run freeze` cannot race a pass into applying after it returned.

use anyhow::Result;
use chrono::{DateTime, Utc};

use crate::decide::{Kind, Signal};
use crate::log::info;
use crate::state::freeze::{self, FreezeState};
use crate::state::Layout;

/// The freeze at the start of a pass, and the signal for the freeze channel
/// (a freeze that ended by itself is announced once).
pub fn check(layout: &Layout, now: DateTime<Utc>) -> Result<(FreezeState, Signal)> {
    let path = layout.freeze_file();
    let state = freeze::load(&path);
    if let FreezeState::Frozen(f) = &state {
        if let Some(until) = f.until.filter(|u| now >= *u) {
            freeze::remove(&path)?;
            info!(
                "the freeze by {} ({}) ended at {}; following the branch again",
                f.by,
                f.reason,
                crate::log::utc(&until)
            );
            return Ok((FreezeState::Thawed, Signal::Good(Kind::Unfrozen)));
        }
    }
    if state.holds(now) {
        info!("{}", state.describe(&path));
    }
    Ok((state, Signal::Quiet))
}

/// Whether the host is frozen right now (the file is read again).
pub fn holds_now(layout: &Layout, now: DateTime<Utc>) -> bool {
    freeze::load(&layout.freeze_file()).holds(now)
}
