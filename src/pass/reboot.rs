//! The reboot request at the end of a pass: read the deployed tree's request file
//! and the machine's facts for the review in `decide::reboot`, then carry a due
//! reboot out.

use anyhow::Result;
use chrono::{DateTime, Utc};

use crate::config::RebootSettings;
use crate::decide::reboot::{self, Note, Policy, RequestFile, RequestStatus, Review};
use crate::exit::Exit;
use crate::host;
use crate::log::{debug, info, warn};
use crate::state::{self, Layout, State};

/// Review the request of the deployed commit; logs what the review says.
pub fn review(
    cfg: &RebootSettings,
    layout: &Layout,
    st: &State,
    facts: &host::Facts,
    now: DateTime<Utc>,
) -> Review {
    let file = match &st.deployed {
        None => RequestFile::NoDeployment,
        Some(d) => read_request(&layout.tree(&d.commit), &cfg.file),
    };
    let review = reboot::review(
        file,
        &cfg.file,
        &chrono::Local,
        facts.boot_time.clone(),
        &facts.machine_id,
        now,
        Policy {
            grace: cfg.grace,
            splay: cfg.splay,
        },
        &st.reboot,
    );
    for note in &review.notes {
        match note {
            Note::Info(m) => info!("{m}"),
            Note::Warn(m) => warn!("{m}"),
            Note::Debug(m) => debug!("{m}"),
        }
    }
    review
}

fn read_request(tree: &std::path::Path, file: &str) -> RequestFile {
    match super::entrypoint::locate(tree, file) {
        Ok(None) => RequestFile::Absent,
        Err(msg) => RequestFile::Unusable(msg),
        Ok(Some(path)) => match std::fs::read_to_string(&path) {
            Ok(text) => RequestFile::Text(text),
            Err(e) => RequestFile::Unusable(format!("cannot read it: {e}")),
        },
    }
}

/// Run the reboot command. If it fails, the request is taken back from the done list
/// so the next pass within the grace tries again, and the pass exits 8.
pub fn carry_out(
    cfg: &RebootSettings,
    layout: &Layout,
    st: &mut State,
    requested: DateTime<Utc>,
    exit: Exit,
) -> Result<Exit> {
    let Err(e) = host::run_reboot_command(&cfg.command) else {
        return Ok(exit);
    };
    info!(
        "reboot command failed: {e:#}; the request stays open and is tried again by the next pass"
    );
    st.reboot.done.retain(|d| *d != requested);
    if let Some(r) = st.reboot.request.as_mut() {
        r.status = RequestStatus::Pending;
        r.detail = format!("the reboot command failed: {e:#}");
    }
    state::save(&layout.state_file(), st)?;
    Ok(if exit == Exit::Ok { Exit::Reboot } else { exit })
}
