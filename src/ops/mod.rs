//! Commands for operators beside the pass: `status`, `plan`, `freeze`,
//! `unfreeze` and `rollback`.

pub mod freeze;
pub mod plan;
pub mod rollback;
pub mod status;

use anyhow::Result;
use std::os::unix::fs::MetadataExt;

use crate::config::Control;
use crate::decide::Kind;
use crate::exit::{fail, Exit};
use crate::state::Layout;

/// A command that changes what a host does may only be run by root or by the
/// owner of the state directory (whose passes it controls), on a state directory
/// that exists. Returns whether a pass has run there (`state.json` exists).
pub fn check_state_dir(layout: &Layout) -> Result<bool> {
    let root = &layout.root;
    let meta = match std::fs::metadata(root) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(fail(
                Exit::State,
                format!(
                    "state directory {} does not exist: no pass has run here (check --state-dir or GITOPS_STATE_DIR in the config)",
                    root.display()
                ),
            ))
        }
        Err(e) => {
            return Err(fail(
                Exit::State,
                format!("failed to read state directory {}: {e}", root.display()),
            ))
        }
    };
    let me = nix::unistd::geteuid();
    if !me.is_root() && meta.uid() != me.as_raw() {
        return Err(fail(
            Exit::State,
            format!(
                "state directory {} belongs to uid {}: only root or its owner may change what its passes do",
                root.display(),
                meta.uid()
            ),
        ));
    }
    if meta.mode() & 0o022 != 0 || !meta.is_dir() {
        crate::state::check_dir_safety(root)?;
    }
    Ok(layout.state_file().exists())
}

/// Send one message about an operator's act, when a webhook is configured.
pub fn announce(control: Option<&Control>, kind: Kind, summary: &str) {
    let Some(c) = control else { return };
    let Some(target) = &c.target else { return };
    let event = crate::notify::Event {
        event: kind,
        reminder: false,
        host: crate::host::hostname(),
        repo: c.repo.clone(),
        branch: c.branch.clone(),
        previous_commit: None,
        commit: None,
        commits: Vec::new(),
        commits_omitted: 0,
        result: kind.as_str().to_string(),
        reason: String::new(),
        summary: summary.to_string(),
        duration_ms: 0,
        exit_code: 0,
        log_tail: String::new(),
        log_path: None,
        signed_by: None,
        at: chrono::Utc::now(),
    };
    crate::notify::deliver::send(target, &event);
}
