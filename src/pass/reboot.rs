//! The reboot request at the end of a pass: read the deployed tree's request file
//! and the machine's facts for the review in `decide::reboot`, then carry a due
//! reboot out.

use anyhow::Result;
use chrono::{DateTime, Utc};
use std::time::Duration;

use crate::config::RebootSettings;
use crate::decide::reboot::{self, Note, Policy, RequestFile, Review};
use crate::exit::Exit;
use crate::host;
use crate::log::{debug, info, warn};
use crate::state::{self, Layout, State};

/// Review the request of the deployed commit (after following up a reboot command
/// an earlier pass did not see return); logs what the review says.
pub fn review(
    cfg: &RebootSettings,
    file: &str,
    layout: &Layout,
    st: &State,
    facts: &host::Facts,
    now: DateTime<Utc>,
    frozen: bool,
) -> (Review, bool) {
    let (before, failed, mut notes) = reboot::follow_up(
        &st.reboot,
        facts.boot_id.as_deref(),
        facts.boot_time.clone().ok(),
    );
    let request = match &st.deployed {
        None => RequestFile::NoDeployment,
        Some(d) => read_request(&layout.tree(&d.commit), file),
    };
    let mut review = reboot::review(
        request,
        file,
        &chrono::Local,
        facts.boot_time.clone(),
        &facts.machine_id,
        now,
        Policy {
            grace: cfg.grace,
            splay: cfg.splay,
            held: frozen,
        },
        &before,
    );
    notes.append(&mut review.notes);
    let reboot_failed = failed != crate::decide::Signal::Quiet;
    if reboot_failed {
        review.signal = failed;
    }
    review.notes = notes;
    for note in &review.notes {
        match note {
            Note::Info(m) => info!("{m}"),
            Note::Warn(m) => warn!("{m}"),
            Note::Debug(m) => debug!("{m}"),
        }
    }
    (review, reboot_failed)
}

fn read_request(tree: &std::path::Path, file: &str) -> RequestFile {
    if !tree.is_dir() {
        return RequestFile::TreeMissing;
    }
    match super::entrypoint::locate(tree, file) {
        Ok(None) => RequestFile::Absent,
        Err(msg) => RequestFile::Unusable(msg),
        Ok(Some(path)) => read_bounded(&path),
    }
}

/// The largest request file read: a timestamp and a few comment lines fit many
/// times over; anything larger is not a request.
pub const MAX_REQUEST_BYTES: u64 = 4096;

fn read_bounded(path: &std::path::Path) -> RequestFile {
    use std::io::Read;
    let mut bytes = Vec::new();
    let read = std::fs::File::open(path)
        .and_then(|f| f.take(MAX_REQUEST_BYTES + 1).read_to_end(&mut bytes));
    if let Err(e) = read {
        return RequestFile::Unusable(format!("cannot read it: {e}"));
    }
    if bytes.len() as u64 > MAX_REQUEST_BYTES {
        return RequestFile::Unusable(format!(
            "it is larger than {MAX_REQUEST_BYTES} bytes; a request is one timestamp"
        ));
    }
    match String::from_utf8(bytes) {
        Ok(text) => RequestFile::Text(text),
        Err(_) => RequestFile::Unusable("it is not UTF-8 text".into()),
    }
}

/// Run the reboot command. Its start is recorded first, so a pass stopped while it
/// runs (by the shutdown it caused, or because it hung) leaves a record the next
/// pass follows up. If it fails or hangs, the request is taken back from the done
/// list, the next pass within the grace tries again, and this pass exits 8.
pub fn carry_out(
    cfg: &RebootSettings,
    layout: &Layout,
    st: &mut State,
    requested: DateTime<Utc>,
    facts: &host::Facts,
    exit: Exit,
) -> Result<Exit> {
    st.reboot = reboot::start(
        &st.reboot,
        requested,
        Utc::now(),
        facts.boot_id.clone(),
        facts.boot_time.clone().ok(),
    );
    state::save(&layout.state_file(), st)?;
    let ran = host::run_reboot_command(
        &cfg.command,
        Duration::from_secs(REBOOT_COMMAND_TIMEOUT_SECS),
    );
    let failure = ran.as_ref().err().map(|e| format!("{e:#}"));
    st.reboot = reboot::returned(&st.reboot, requested, failure.as_deref());
    state::save(&layout.state_file(), st)?;
    match failure {
        None => Ok(exit),
        Some(why) => {
            warn!("reboot command failed: {why}");
            Ok(if exit == Exit::Ok { Exit::Reboot } else { exit })
        }
    }
}

/// How long the reboot command may take to return; `systemctl reboot` and
/// `reboot` return at once or are stopped by the shutdown they start.
pub const REBOOT_COMMAND_TIMEOUT_SECS: u64 = 120;
