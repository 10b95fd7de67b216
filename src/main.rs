//! gitops-run: one pull-based GitOps pass for a plain Linux host, then exit.

mod cli;
mod decide;
mod duration;
mod entrypoint;
mod exit;
mod generate;
mod git;
mod log;
mod notify;
mod pass;
mod reboot;
mod repo_url;
mod report;
mod state;
mod status;
mod trees;
mod verify;

use anyhow::Result;
use std::process::ExitCode;

use crate::exit::{fail, Exit};

fn main() -> ExitCode {
    match run() {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(err) => {
            let text = git::one_line(&format!("{err:#}"));
            log::emit(&format!("gitops-run: error: {}", log::scrub(&text)));
            ExitCode::from(exit::class_of(&err).code())
        }
    }
}

fn run() -> Result<Exit> {
    let cli = cli::parse()?;
    log::set_verbose(cli.common.verbose);
    let cwd = std::env::current_dir().unwrap_or_else(|_| "/".into());
    let root = if cli.common.state_dir.is_absolute() {
        cli.common.state_dir.clone()
    } else {
        cwd.join(&cli.common.state_dir)
    };
    let layout = state::Layout::new(&root);

    match &cli.command {
        Some(cli::Command::Status { json }) => {
            status::show(&layout, *json)?;
            return Ok(Exit::Ok);
        }
        Some(cli::Command::Generate { what, dir }) => {
            generate::run(*what, dir)?;
            return Ok(Exit::Ok);
        }
        None => {}
    }

    let p = cli.pass;
    let Some(repo) = p.repo.as_deref() else {
        return Err(fail(Exit::Usage, "no repository configured: pass --repo URL, set GITOPS_REPO, or name a --config file that sets it"));
    };
    let repo = repo_url::RepoUrl::parse(repo, &cwd)?;
    let webhook = notify::resolve(
        p.webhook_url.clone(),
        p.webhook_url_file.as_deref(),
        std::env::var_os("CREDENTIALS_DIRECTORY")
            .as_deref()
            .map(std::path::Path::new),
        p.webhook_secret_file.as_deref(),
        p.webhook_format,
        p.webhook_timeout,
        p.webhook_reminder,
    );
    let mut secrets = repo.secrets.clone();
    if let Some(w) = &webhook {
        secrets.extend(notify::secrets_of(&w.url));
    }
    log::set_secrets(secrets);
    if p.branch.trim().is_empty()
        || gix::validate::reference::name_partial(p.branch.as_str().into()).is_err()
    {
        return Err(fail(
            Exit::Usage,
            format!("invalid branch name {:?}", p.branch),
        ));
    }
    entrypoint::survive_hangup();
    // Trees, state and logs are for root only; the entrypoint inherits this umask.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let cfg = pass::Config {
        repo,
        branch: p.branch,
        layout,
        entrypoint: p.entrypoint,
        timeout: p.timeout,
        ssh: git::SshOptions {
            key: p.ssh_key,
            known_hosts: p.known_hosts,
        },
        allow_rewrite: p.allow_rewrite,
        keep_trees: p.keep_trees,
        once: p.once,
        reboot: pass::RebootConfig {
            file: p.reboot_file,
            command: p.reboot_command.unwrap_or_else(reboot::default_command),
            grace: p.reboot_grace,
            splay: p.reboot_splay,
        },
        notify: webhook,
    };
    pass::run(&cfg)
}
