//! Build-time outputs derived from the CLI definition, so they cannot drift from it:
//! the man page gitops-run(8) and shell completions. `gitops-run generate man|completions
//! DIR` writes them (run by `just deb`); it is parsed apart from the real command line
//! so that it appears in neither the help, the man page nor the completions.

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser, ValueEnum};
use clap_mangen::roff::{bold, italic, roman, Roff};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::cli::Cli;
use crate::exit::EXIT_CODES_HELP;

/// What `generate` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum What {
    /// gitops-run.8
    Man,
    /// gitops-run.bash, _gitops-run (zsh), gitops-run.fish
    Completions,
}

/// `gitops-run generate`: packaging outputs (not part of the documented interface).
#[derive(Debug, Parser)]
#[command(name = "gitops-run generate")]
struct Generate {
    #[arg(value_enum)]
    what: What,
    /// Output directory
    dir: PathBuf,
}

/// Whether `args` (the whole command line) asks for `generate`.
pub fn requested(args: &[OsString]) -> bool {
    args.get(1).is_some_and(|a| a == "generate")
}

/// Run `gitops-run generate ...`; `args` is the whole command line.
pub fn main(args: &[OsString]) -> Result<()> {
    let g = match Generate::try_parse_from(args.iter().skip(1)) {
        Ok(g) => g,
        Err(e) if matches!(e.kind(), clap::error::ErrorKind::DisplayHelp) => {
            let _ = e.print();
            return Ok(());
        }
        Err(e) => {
            return Err(crate::exit::fail(
                crate::exit::Exit::Usage,
                e.render()
                    .to_string()
                    .lines()
                    .next()
                    .unwrap_or("invalid arguments"),
            ))
        }
    };
    run(g.what, &g.dir)
}

/// Environment variables read besides the options' own (which the OPTIONS section lists).
const OTHER_ENVIRONMENT: &[(&str, &str)] = &[
    ("CREDENTIALS_DIRECTORY", "Set by systemd; the credential webhook-url in it is a fallback source of the webhook URL, receiver-secret the receiver's shared secret."),
    ("RUNTIME_DIRECTORY", "Set by systemd; decrypted secrets go to its secrets/ subdirectory unless --secrets-root says otherwise."),
    ("JOURNAL_STREAM", "Set by systemd when stderr is the journal: lines then go to the journal with GITOPS_* fields."),
    ("LISTEN_FDS, LISTEN_PID", "Set by systemd socket activation: the socket gitops-run receive serves."),
    ("SUDO_USER", "Who froze or rolled back the host, as freeze.json records it (else the user name)."),
    ("GIT_SSL_CAINFO", "CA bundle for https repositories; without it (or http.sslCAInfo) the system bundle is used."),
    ("SSL_CERT_FILE", "Preferred system CA bundle when GIT_SSL_CAINFO and http.sslCAInfo are not set."),
    ("TZ", "Time zone of reboot requests written as local time."),
    ("https_proxy, http_proxy, no_proxy", "Proxies for fetches and webhooks."),
];

/// Variables the entrypoint and the health check get (every inherited GITOPS_*
/// variable removed first). The test below checks this list against the code.
const ENTRYPOINT_ENVIRONMENT: &[(&str, &str)] = &[
    ("GITOPS_COMMIT", "Full id of the commit being applied."),
    ("GITOPS_PREVIOUS_COMMIT", "Full id of the deployed commit; empty on the first deployment."),
    ("GITOPS_BRANCH", "The branch followed."),
    ("GITOPS_REPO", "The repository URL, credentials removed."),
    ("GITOPS_REASON", "Why it runs: initial, new, retry, rewrite, rollback, health-rollback or reconcile."),
    ("GITOPS_STATE_DIR", "The state directory."),
    ("GITOPS_DRIFT_FILE", "A file, empty at the start, for one line per thing the run corrected (reported as drift by reconcile runs)."),
    ("GITOPS_SECRETS_DIR", "The commit's decrypted secrets, when it has any."),
    ("GITOPS_PATHS", "The --path values this host follows, expanded, separated by colons."),
    ("GITOPS_HEALTHCHECK_ATTEMPT", "In the health check only: which try this is (1, 2, ...)."),
];

const FILES: &[(&str, &str)] = &[
    ("/etc/gitops-run/config", "Configuration read by the shipped systemd units (KEY=VALUE lines with the GITOPS_* names); /etc/gitops-run/INSTANCE.conf for gitops-run@INSTANCE."),
    ("/etc/gitops-run/allowed_signers, /etc/gitops-run/trusted-keys/", "Conventional places of the keys trusted to sign commits (--allowed-signers, --trusted-keys); read by every pass."),
    ("/etc/gitops-run/webhook-url, /etc/gitops-run/receiver-secret", "Loaded by the units as systemd credentials: the webhook URL, the push receiver's shared secret."),
    ("/var/lib/gitops-run/state.json", "State: deployed and attempted commits, failures, last pass, reboots, notifications, counters."),
    ("/var/lib/gitops-run/freeze.json", "The operator's freeze, or a rollback's pin; while it exists (or cannot be read) nothing is applied."),
    ("/var/lib/gitops-run/current", "Symlink to the checked-out tree of the deployed commit."),
    ("/var/lib/gitops-run/trees/", "One checked-out tree per commit (only the followed --path directories); the newest few are kept."),
    ("/var/lib/gitops-run/cache.git/", "Bare cache of the fetched branch."),
    ("/var/lib/gitops-run/logs/", "Entrypoint output, one file per attempt; the newest 10 are kept."),
    ("/var/lib/gitops-run/lock", "Lock taken by every pass; also holds the record of the last pass that changed nothing else."),
    ("/var/lib/gitops-run/entrypoint.pid", "The running entrypoint's process, for the next pass after a crash."),
    ("/var/lib/gitops-run/drift", "GITOPS_DRIFT_FILE of the current run."),
    ("/run/gitops-run/secrets/", "Decrypted secrets (mode 0700, files 0600), on tmpfs; see --secrets-root."),
    ("/etc/ssh/ssh_host_ed25519_key, /etc/ssh/ssh_host_rsa_key", "Default age identities for secrets; their .pub files give the recipient command's answer."),
    ("/var/lib/prometheus/node-exporter/gitops-run.prom", "Metrics for node_exporter's textfile collector, when that directory exists; see --metrics-file."),
    ("/run/gitops-run-receiver/trigger", "Written by the push receiver, consumed by the pass (--trigger-file)."),
    ("/proc/stat", "The kernel's boot time, for reboot decisions."),
    ("/etc/machine-id", "Seed of the per-host reboot splay; %m in --path."),
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
        What::Completions => completions(dir)?,
    }
    Ok(())
}

fn completions(dir: &Path) -> Result<()> {
    use clap_complete::Shell;
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("failed to write {}", path.display()))
    };
    // clap_complete's bash script names its functions after the binary and turns a
    // hyphen into two different separators in two places, so subcommand options of
    // `gitops-run` never complete. Generated for a name without a hyphen, the script
    // is consistent; only the final `complete` line must name the real binary.
    let mut bash = Vec::new();
    clap_complete::generate(Shell::Bash, &mut Cli::command(), "gitopsrun", &mut bash);
    let bash = String::from_utf8(bash).context("bash completions are not UTF-8")?;
    let bash = bash
        .lines()
        .map(|l| match l.trim_start().starts_with("complete -F") {
            true => l.replace(" gitopsrun", " gitops-run"),
            false => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    write("gitops-run.bash", bash.as_bytes())?;
    for (shell, name) in [
        (Shell::Zsh, "_gitops-run"),
        (Shell::Fish, "gitops-run.fish"),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "gitops-run", &mut out);
        write(name, &out)?;
    }
    Ok(())
}

/// How an argument is written in a synopsis: `--name VALUE`, `--flag`, `[ARG]`.
fn synopsis_of(arg: &clap::Arg) -> String {
    let value = arg
        .get_value_names()
        .map(|v| {
            v.iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| arg.get_id().as_str().to_uppercase());
    let takes_value = arg.get_num_args().is_some_and(|n| n.takes_values());
    let optional_value = arg.get_num_args().is_some_and(|n| n.min_values() == 0);
    match (arg.get_long(), takes_value) {
        (Some(long), true) if optional_value => format!("--{long}[={value}]"),
        (Some(long), true) => format!("--{long} {value}"),
        (Some(long), false) => format!("--{long}"),
        (None, _) => value,
    }
}

pub fn man_page(w: &mut dyn std::io::Write) -> Result<()> {
    let mut cmd = Cli::command();
    cmd.build();
    // Options of a pass, which several commands take too: documented once, in OPTIONS.
    let pass_ids: Vec<String> = {
        use clap::Args;
        super::cli::PassArgs::augment_args(clap::Command::new("pass"))
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .collect()
    };
    let takes_pass_options =
        |sub: &clap::Command| sub.get_arguments().any(|a| a.get_id().as_str() == "repo");
    let own = |sub: &clap::Command, a: &clap::Arg| {
        let documented_above =
            takes_pass_options(sub) && pass_ids.iter().any(|p| p == a.get_id().as_str());
        !(a.is_hide_set() || a.is_global_set() || a.get_id() == "help" || documented_above)
    };
    let man = clap_mangen::Man::new(cmd.clone())
        .section("8")
        .manual("System Administration")
        .source(format!("gitops-run {}", env!("CARGO_PKG_VERSION")));
    man.render_title(w)?;
    man.render_name_section(w)?;

    let visible = || {
        cmd.get_subcommands()
            .filter(|c| !c.is_hide_set() && c.get_name() != "help")
    };
    let mut roff = Roff::new();
    roff.control("SH", ["SYNOPSIS"]);
    roff.text([bold("gitops-run"), roman(" [OPTIONS]")]);
    for sub in visible() {
        let mut args: Vec<String> = sub
            .get_arguments()
            .filter(|a| own(sub, a))
            .map(|a| {
                if a.is_required_set() {
                    synopsis_of(a)
                } else {
                    format!("[{}]", synopsis_of(a))
                }
            })
            .collect();
        if takes_pass_options(sub) {
            args.push("[OPTIONS]".into());
        }
        roff.control("br", []);
        roff.text([
            bold(format!("gitops-run {}", sub.get_name())),
            roman(format!(" {}", args.join(" "))),
        ]);
    }
    roff.to_writer(w)?;
    man.render_description_section(w)?;
    man.render_options_section(w)?;

    let mut roff = Roff::new();
    roff.control("SH", ["COMMANDS"]);
    roff.text([roman(
        "Without a command, gitops-run does one pass. The commands below take the options above that concern the state directory and the configuration (--state-dir, --config, --verbose), and their own:",
    )]);
    for sub in visible() {
        roff.control("TP", [])
            .text([bold(format!("gitops-run {}", sub.get_name()))]);
        let about = sub
            .get_long_about()
            .or(sub.get_about())
            .map(|a| a.to_string())
            .unwrap_or_default();
        let about = if takes_pass_options(sub) {
            format!("{about}. Takes the options of a pass (OPTIONS above), after the command.")
        } else {
            about
        };
        roff.text([roman(about)]);
        for a in sub.get_arguments().filter(|a| own(sub, a)) {
            let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
            roff.control("RS", [])
                .control("TP", [])
                .text([bold(synopsis_of(a))])
                .text([roman(help)])
                .control("RE", []);
        }
    }
    roff.control("SH", ["EXIT STATUS"]);
    // The table's rows start with a code; the closing note about `plan` is a paragraph.
    let mut note = Vec::new();
    for line in EXIT_CODES_HELP.lines().skip(1) {
        let line = line.trim();
        let (code, text) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        if code.bytes().all(|b| b.is_ascii_digit()) {
            roff.control("TP", [])
                .text([bold(code)])
                .text([roman(text.trim())]);
        } else {
            note.push(line.replace('`', ""));
        }
    }
    if !note.is_empty() {
        roff.control("PP", []).text([roman(note.join(" "))]);
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
    roff.control("SH", ["ENTRYPOINT ENVIRONMENT"]);
    roff.text([roman(
        "The entrypoint and the health check run in the checked-out tree (the first --path in it, if any), with umask 077, stdin from /dev/null, and the environment of gitops-run without its GITOPS_* variables, plus:",
    )]);
    for (name, text) in ENTRYPOINT_ENVIRONMENT {
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
        "systemd.timer(5), journalctl(1), node_exporter(1). The documentation in /usr/share/doc/gitops-run: design, configuration, operations, reboots, notifications, security, metrics, health, secrets, receive, fleet.",
    )]);
    roff.to_writer(w)?;
    man.render_version_section(w)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_page_documents_every_option_env_var_exit_code_and_command() {
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
            text.contains("gitops\\-run status") && text.contains("\\fB\\-\\-json\\fR"),
            "status and --json are documented"
        );
        assert!(
            !text.contains("generate"),
            "the packaging subcommand stays out of the man page"
        );
        assert!(
            !text.contains("gitops-run-status(8)") && !text.contains("gitops-run-help"),
            "no references to pages that are not shipped"
        );
        assert!(
            !text.contains("[\\-\\-repo]"),
            "no option without its value in the synopsis"
        );
    }

    #[test]
    fn the_entrypoint_environment_section_lists_what_the_code_sets() {
        let code = concat!(
            include_str!("../pass/job.rs"),
            include_str!("../pass/entrypoint.rs")
        );
        let mut set: Vec<&str> = code
            .split('"')
            .skip(1)
            .step_by(2)
            .filter(|s| {
                s.len() > "GITOPS_".len()
                    && s.starts_with("GITOPS_")
                    && s.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
            })
            .collect();
        set.sort_unstable();
        set.dedup();
        let mut listed: Vec<&str> = ENTRYPOINT_ENVIRONMENT.iter().map(|(n, _)| *n).collect();
        listed.sort_unstable();
        assert_eq!(listed, set);
        let mut out = Vec::new();
        man_page(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("ENTRYPOINT ENVIRONMENT"));
        for (name, _) in ENTRYPOINT_ENVIRONMENT {
            assert!(text.contains(name), "{name}");
        }
    }

    #[test]
    fn completions_are_written_for_three_shells_without_generate() {
        let dir = tempfile::tempdir().unwrap();
        run(What::Completions, dir.path()).unwrap();
        for f in ["gitops-run.bash", "_gitops-run", "gitops-run.fish"] {
            let text = std::fs::read_to_string(dir.path().join(f)).unwrap();
            assert!(text.contains("--webhook-url"), "{f}");
            assert!(
                !text.contains("generate"),
                "{f} offers the packaging subcommand"
            );
        }
    }
}
