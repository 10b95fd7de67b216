//! gitops-run: one pull-based GitOps pass for a plain Linux host, then exit.

mod config;
mod decide;
mod duration;
mod exit;
mod git;
mod host;
mod log;
mod metrics;
mod notify;
mod ops;
mod pass;
mod receive;
mod secrets;
mod state;
mod verify;

use anyhow::Result;
use std::process::ExitCode;

use crate::config::Action;
use crate::exit::Exit;

fn main() -> ExitCode {
    match run() {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(err) => {
            let text = log::one_line(&format!("{err:#}"));
            log::emit(&format!("gitops-run: error: {}", log::scrub(&text)));
            ExitCode::from(exit::class_of(&err).code())
        }
    }
}

fn run() -> Result<Exit> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| "/".into());
    let credentials = std::env::var_os("CREDENTIALS_DIRECTORY").map(std::path::PathBuf::from);
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if config::generate::requested(&args) {
        return config::generate::main(&args).map(|_| Exit::Ok);
    }
    let settings = config::resolve(args, &cwd, credentials.as_deref())?;
    log::set_verbose(settings.verbose);
    let layout = state::Layout::new(&settings.state_dir);
    match settings.action {
        Action::Status { json } => ops::status::show(&layout, json).map(|_| Exit::Ok),
        Action::Receive(args) => receive::run(&args),
        Action::Recipient { host_key } => {
            secrets::run_recipient(host_key.as_deref()).map(|_| Exit::Ok)
        }
        Action::Plan { json, settings } => {
            log::set_secrets(settings.secrets());
            ops::plan::plan(&layout, &settings, json)
        }
        Action::Freeze {
            reason,
            until,
            wait,
            notify,
        } => ops::freeze::freeze(&layout, &reason, until.as_deref(), wait, notify.as_deref()),
        Action::Unfreeze { notify } => ops::freeze::unfreeze(&layout, notify.as_deref()),
        Action::Rollback {
            commit,
            wait,
            settings,
        } => {
            log::set_secrets(settings.secrets());
            host::signals::survive_hangup();
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
            ops::rollback::rollback(&layout, &settings, commit.as_deref(), wait)
        }
        Action::Pass(cfg) => {
            log::set_secrets(cfg.secrets());
            host::signals::survive_hangup();
            // Trees, state and logs are for root only; the entrypoint inherits this umask.
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
            pass::run(&cfg, &layout)
        }
    }
}
