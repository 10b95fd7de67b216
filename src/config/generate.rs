//! Build-time outputs derived from the CLI definition, so they cannot drift from it:
//! the man page gitops-run(8) and shell completions. Run by `just deb`.

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_mangen::roff::{bold, italic, roman, Roff};
use std::path::Path;

use super::cli::{Cli, What};
use crate::exit::EXIT_CODES_HELP;

/// Environment variables read besides the options' own (which the OPTIONS section lists).
const OTHER_ENVIRONMENT: &[(&str, &str)] = &[
    ("CREDENTIALS_DIRECTORY", "Set by systemd; the credential webhook-url in it is a fallback source of the webhook URL."),
    ("GIT_SSL_CAINFO", "CA bundle for https repositories; without it (or http.sslCAInfo) the system bundle is used."),
    ("SSL_CERT_FILE", "Preferred system CA bundle when GIT_SSL_CAINFO and http.sslCAInfo are not set."),
    ("TZ", "Time zone of reboot requests written as local time."),
    ("https_proxy, http_proxy, no_proxy", "Proxies for fetches and webhooks."),
];

const FILES: &[(&str, &str)] = &[
    ("/etc/gitops-run/config", "Configuration read by the shipped systemd units (KEY=VALUE lines with the GITOPS_* names)."),
    ("/var/lib/gitops-run/state.json", "State: deployed and attempted commits, failures, last pass, reboots, notifications."),
    ("/var/lib/gitops-run/current", "Symlink to the checked-out tree of the deployed commit."),
    ("/var/lib/gitops-run/trees/", "One checked-out tree per commit; the newest few are kept."),
    ("/var/lib/gitops-run/cache.git/", "Bare cache of the fetched branch."),
    ("/var/lib/gitops-run/logs/", "Entrypoint output, one file per attempt; the newest 10 are kept."),
    ("/var/lib/gitops-run/lock", "Lock taken by every pass."),
    ("/proc/stat", "The kernel's boot time, for reboot decisions."),
    ("/etc/machine-id", "Seed of the per-host reboot splay."),
];

pub fn run(what: What, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    match what {
        What::Man => {
            let path = dir.join("gitops-run.8");
            let mut out = Vec::new();
            man_page(&mut out)?;
            std::fs::write(&path, out)
                .with_context(|| format!("failed to write {}", path.display()))?;
        }
        What::Completions => {
            use clap_complete::Shell;
            for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
                let mut cmd = Cli::command();
                clap_complete::generate_to(shell, &mut cmd, "gitops-run", dir).with_context(
                    || format!("failed to write {shell} completions to {}", dir.display()),
                )?;
            }
        }
    }
    Ok(())
}

pub fn man_page(w: &mut dyn std::io::Write) -> Result<()> {
    let cmd = Cli::command();
    let man = clap_mangen::Man::new(cmd.clone())
        .section("8")
        .manual("System Administration")
        .source(format!("gitops-run {}", env!("CARGO_PKG_VERSION")));
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    man.render_options_section(w)?;
    man.render_subcommands_section(w)?;

    let mut roff = Roff::new();
    roff.control("SH", ["EXIT STATUS"]);
    for line in EXIT_CODES_HELP.lines().skip(1) {
        let line = line.trim();
        let (code, text) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        roff.control("TP", [])
            .text([bold(code)])
            .text([roman(text.trim())]);
    }
    roff.control("SH", ["ENVIRONMENT"]);
    roff.text([roman(
        "Every option can also be set through the environment variable named in OPTIONS, or in the file named by --config. Precedence: flag, then environment, then file. Also read:",
    )]);
    for (name, text) in OTHER_ENVIRONMENT {
        roff.control("TP", [])
            .text([bold(*name)])
            .text([roman(*text)]);
    }
    roff.control("SH", ["FILES"]);
    roff.text([roman(
        "Paths under /var/lib/gitops-run move with --state-dir.",
    )]);
    for (path, text) in FILES {
        roff.control("TP", [])
            .text([italic(*path)])
            .text([roman(*text)]);
    }
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(
        "systemd.timer(5), journalctl(1). The documentation in /usr/share/doc/gitops-run: design, configuration, reboots, notifications, operations.",
    )]);
    roff.to_writer(w)?;
    man.render_version_section(w)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_page_documents_every_option_env_var_and_exit_code() {
        let mut out = Vec::new();
        man_page(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        for key in crate::config::cli::CONFIG_KEYS {
            assert!(text.contains(key), "{key} missing from the man page");
        }
        for code in ["0", "1", "2", "3", "4", "5", "6", "7", "8", "130"] {
            assert!(
                text.contains(&format!(".TP\n\\fB{code}\\fR")),
                "exit code {code} missing"
            );
        }
        assert!(text.contains(".TH gitops-run 8"), "{}", &text[..200]);
        assert!(
            !text.contains("generate"),
            "the hidden packaging subcommand stays out of the man page"
        );
    }

    #[test]
    fn completions_are_written_for_three_shells() {
        let dir = tempfile::tempdir().unwrap();
        run(What::Completions, dir.path()).unwrap();
        for f in ["gitops-run.bash", "_gitops-run", "gitops-run.fish"] {
            let text = std::fs::read_to_string(dir.path().join(f)).unwrap();
            assert!(text.contains("--webhook-url"), "{f}");
        }
    }
}
