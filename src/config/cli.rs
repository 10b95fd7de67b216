//! The command line: options, their environment variables and defaults, and the
//! subcommands; merged with the `--config` file with the precedence flag >
//! environment > file.

use anyhow::Result;
use clap::{ArgAction, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::exit::{fail, Exit, EXIT_CODES_HELP};

#[derive(Debug, Parser)]
#[command(
    name = "gitops-run",
    version,
    about = "Pull-based GitOps for plain Linux hosts: fetch a branch, run its entrypoint, exit",
    long_about = "Does one pass and exits: fetches the configured branch, compares the deployed \
commit with the remote one, checks a new commit out into its own tree, runs the \
repository's entrypoint there, and records the result under the state directory. \
A systemd timer or cron runs it periodically.",
    after_help = EXIT_CODES_HELP,
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Run one pass now; retry a failed commit immediately, ignoring backoff
    #[arg(long)]
    pub once: bool,

    /// Apply a new commit now, without waiting for --soak
    #[arg(long)]
    pub no_soak: bool,

    #[command(flatten)]
    pub pass: PassArgs,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// Options shared by the pass and `status`.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Read options from FILE: KEY=VALUE lines named like the options' environment variables (GITOPS_REPO=...)
    #[arg(long, env = "GITOPS_CONFIG", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,

    /// Directory for the cache repository, trees, logs, lock and state
    #[arg(
        long,
        env = "GITOPS_STATE_DIR",
        value_name = "DIR",
        default_value = "/var/lib/gitops-run",
        global = true
    )]
    pub state_dir: PathBuf,

    /// Print debug detail
    #[arg(short, long, env = "GITOPS_VERBOSE", global = true, action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_value = "false", default_missing_value = "true", value_name = "BOOL", value_parser = clap::builder::BoolishValueParser::new())]
    pub verbose: bool,
}

/// The options a config file can hold, taken by the pass and by the commands
/// that act on the same repository and state (`plan`, `rollback`, `freeze`,
/// `unfreeze`): written after the command, `gitops-run plan --repo URL`.
#[derive(Debug, Args)]
pub struct PassArgs {
    /// Repository to follow: https://, http://, ssh://, git://, user@host:path, file:// or a path
    #[arg(long, env = "GITOPS_REPO", value_name = "URL")]
    pub repo: Option<String>,

    /// Branch to follow
    #[arg(
        long,
        env = "GITOPS_BRANCH",
        value_name = "NAME",
        default_value = "main"
    )]
    pub branch: String,

    /// Program to run in the checked-out tree, relative to the repository root
    #[arg(
        long,
        env = "GITOPS_ENTRYPOINT",
        value_name = "PATH",
        default_value = "run.sh"
    )]
    pub entrypoint: String,

    /// Time limit for the entrypoint (e.g. 90s, 30m, 1h)
    #[arg(long, env = "GITOPS_TIMEOUT", value_name = "DURATION", default_value = "30m", value_parser = duration_up_to::<{ 7 * DAY }>)]
    pub timeout: Duration,

    /// Part of the repository this host follows (repeatable; %H host name, %l short host name, %m machine id, %%) [default: all of it]
    #[arg(
        long = "path",
        env = "GITOPS_PATH",
        value_name = "PATH",
        value_delimiter = ','
    )]
    pub paths: Vec<String>,

    /// Host name for the --path specifiers %H and %l [default: the kernel's host name]
    #[arg(long, env = "GITOPS_HOSTNAME", value_name = "NAME")]
    pub hostname: Option<String>,

    /// Apply a new commit only once this host has seen it on the branch for this long (staged rollouts)
    #[arg(long, env = "GITOPS_SOAK", value_name = "DURATION", default_value = "0", value_parser = duration_up_to::<{ 30 * DAY }>)]
    pub soak: Duration,

    /// Health check run after the entrypoint, relative to the repository root (used when the commit has it)
    #[arg(
        long,
        env = "GITOPS_HEALTHCHECK",
        value_name = "PATH",
        default_value = "healthcheck"
    )]
    pub healthcheck: String,

    /// Time limit for one run of the health check
    #[arg(long, env = "GITOPS_HEALTHCHECK_TIMEOUT", value_name = "DURATION", default_value = "2m", value_parser = duration_up_to::<{ DAY }>)]
    pub healthcheck_timeout: Duration,

    /// How often the health check is run before the commit counts as unhealthy
    #[arg(long, env = "GITOPS_HEALTHCHECK_RETRIES", value_name = "N", default_value = "5", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub healthcheck_retries: u32,

    /// Wait between two runs of a failing health check
    #[arg(long, env = "GITOPS_HEALTHCHECK_INTERVAL", value_name = "DURATION", default_value = "10s", value_parser = duration_up_to::<{ DAY }>)]
    pub healthcheck_interval: Duration,

    /// Run the deployed commit's entrypoint again when its last successful run is older than this, to correct drift (0: never)
    #[arg(long, env = "GITOPS_RECONCILE_EVERY", value_name = "DURATION", default_value = "0", value_parser = duration_up_to::<{ 365 * DAY }>)]
    pub reconcile_every: Duration,

    /// Time limit for fetching from the Git server, connection included
    #[arg(long, env = "GITOPS_FETCH_TIMEOUT", value_name = "DURATION", default_value = "5m", value_parser = duration_up_to::<{ DAY }>)]
    pub fetch_timeout: Duration,

    /// SSH keys trusted to sign commits, in git's allowed-signers format; turns signature verification on
    #[arg(long, env = "GITOPS_ALLOWED_SIGNERS", value_name = "FILE")]
    pub allowed_signers: Option<PathBuf>,

    /// Directory of OpenPGP public keys (*.asc, *.gpg, *.pgp, *.key) trusted to sign commits; turns signature verification on
    #[arg(long, env = "GITOPS_TRUSTED_KEYS", value_name = "DIR")]
    pub trusted_keys: Option<PathBuf>,

    /// Which new commits must carry a trusted signature: all (every commit between the deployed one and the tip) or tip
    #[arg(long, env = "GITOPS_VERIFY", value_name = "MODE", value_enum)]
    pub verify: Option<crate::config::VerifyMode>,

    /// Private key for ssh:// and user@host:path repositories (a deploy key)
    #[arg(long, env = "GITOPS_SSH_KEY", value_name = "FILE")]
    pub ssh_key: Option<PathBuf>,

    /// known_hosts file for the Git server's host key (checked strictly)
    #[arg(long, env = "GITOPS_KNOWN_HOSTS", value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,

    /// Deploy the remote commit even when upstream history was rewritten
    #[arg(long, env = "GITOPS_ALLOW_REWRITE", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_value = "false", default_missing_value = "true", value_name = "BOOL", value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_rewrite: bool,

    /// Reboot request file in the deployed tree, relative to the repository root
    #[arg(
        long,
        env = "GITOPS_REBOOT_FILE",
        value_name = "PATH",
        default_value = "reboot-at"
    )]
    pub reboot_file: String,

    /// Command that reboots the host [default: `systemctl reboot` under systemd, else `reboot`]
    #[arg(long, env = "GITOPS_REBOOT_COMMAND", value_name = "CMD")]
    pub reboot_command: Option<String>,

    /// How long after the requested time a reboot may still happen (later: missed)
    #[arg(long, env = "GITOPS_REBOOT_GRACE", value_name = "DURATION", default_value = "1h", value_parser = duration_up_to::<{ 365 * DAY }>)]
    pub reboot_grace: Duration,

    /// Spread reboots of a fleet: each host adds a fixed delay in [0, DURATION] from its machine id
    #[arg(long, env = "GITOPS_REBOOT_SPLAY", value_name = "DURATION", default_value = "0", value_parser = duration_up_to::<{ 7 * DAY }>)]
    pub reboot_splay: Duration,

    /// Webhook to notify (a secret: prefer --webhook-url-file)
    #[arg(
        long,
        env = "GITOPS_WEBHOOK_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub webhook_url: Option<String>,

    /// File holding the webhook URL [fallback: systemd credential `webhook-url`]
    #[arg(long, env = "GITOPS_WEBHOOK_URL_FILE", value_name = "FILE")]
    pub webhook_url_file: Option<PathBuf>,

    /// Message format of the webhook
    #[arg(
        long,
        env = "GITOPS_WEBHOOK_FORMAT",
        value_name = "FORMAT",
        value_enum,
        default_value = "discord"
    )]
    pub webhook_format: crate::notify::Format,

    /// File holding a secret; every request then carries an HMAC-SHA256 signature of its body
    #[arg(long, env = "GITOPS_WEBHOOK_SECRET_FILE", value_name = "FILE")]
    pub webhook_secret_file: Option<PathBuf>,

    /// Time limit for one webhook request
    #[arg(long, env = "GITOPS_WEBHOOK_TIMEOUT", value_name = "DURATION", default_value = "10s", value_parser = duration_up_to::<{ 10 * MINUTE }>)]
    pub webhook_timeout: Duration,

    /// How often a failure that persists is reported again
    #[arg(long, env = "GITOPS_WEBHOOK_REMINDER", value_name = "DURATION", default_value = "6h", value_parser = duration_up_to::<{ 365 * DAY }>)]
    pub webhook_reminder: Duration,

    /// File a push receiver creates to ask for a pass; the pass removes it before it fetches
    #[arg(long, env = "GITOPS_TRIGGER_FILE", value_name = "FILE")]
    pub trigger_file: Option<PathBuf>,

    /// Decrypt the commit's *.age files for the entrypoint (on), or treat them as ordinary files (off)
    #[arg(long, env = "GITOPS_SECRETS", value_name = "on|off", default_value = "on", action = ArgAction::Set, ignore_case = true, value_parser = on_off())]
    pub secrets: bool,

    /// age identity to decrypt secrets with (native AGE-SECRET-KEY file or SSH private key); repeatable [default: the SSH host key]
    #[arg(
        long = "age-identity",
        env = "GITOPS_AGE_IDENTITY",
        value_name = "FILE",
        value_delimiter = ','
    )]
    pub age_identities: Vec<PathBuf>,

    /// RAM-backed directory for decrypted secrets [default: $RUNTIME_DIRECTORY/secrets, else below /run/gitops-run]
    #[arg(long, env = "GITOPS_SECRETS_ROOT", value_name = "DIR")]
    pub secrets_root: Option<PathBuf>,

    /// Prometheus textfile written after every pass, or `off` [default: gitops-run.prom, or gitops-run-INSTANCE.prom, in /var/lib/prometheus/node-exporter when that directory exists]
    #[arg(long, env = "GITOPS_METRICS_FILE", value_name = "FILE|off")]
    pub metrics_file: Option<String>,

    /// Name of this instance (a template unit's %i): labels metrics and journal entries, names the default metrics file
    #[arg(long, env = "GITOPS_INSTANCE", value_name = "NAME")]
    pub instance: Option<String>,

    /// How many checked-out trees to keep, the deployed one included
    #[arg(long, env = "GITOPS_KEEP_TREES", value_name = "N", default_value = "3", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub keep_trees: u32,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show what is deployed, the last attempt and the last pass
    Status {
        /// Print a stable JSON document instead of text
        #[arg(long)]
        json: bool,
    },
    /// Fetch and show what a pass would do, changing nothing on the host (exit 0: nothing to do, 2: changes pending)
    Plan {
        /// Print a stable JSON document instead of text
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// Stop applying commits on this host (it keeps fetching), until `unfreeze` or --until
    Freeze {
        /// Why the host is frozen (shown by every pass, status and the notification)
        #[arg(long, value_name = "TEXT")]
        reason: String,
        /// End the freeze by itself: a duration (2h) or a time (RFC 3339, or YYYY-MM-DD HH:MM[:SS] or YYYY-MM-DD in local time)
        #[arg(long, value_name = "TIME|DURATION")]
        until: Option<String>,
        /// How long to wait for a pass that is applying a commit right now to end
        #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = duration_up_to::<{ DAY }>)]
        wait: Duration,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// End a freeze (or a rollback's pin): the next pass follows the branch again
    Unfreeze {
        #[command(flatten)]
        pass: PassArgs,
    },
    /// Deploy a previously deployed commit again (default: the one before the current) and freeze the host on it
    Rollback {
        /// A commit from the deployment history (full or abbreviated hash)
        #[arg(value_name = "COMMIT")]
        commit: Option<String>,
        /// How long to wait for a running pass to end
        #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = duration_up_to::<{ DAY }>)]
        wait: Duration,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// Receive authenticated push webhooks and ask for a pass (runs unprivileged)
    Receive(crate::receive::ReceiveArgs),
    /// Print this host's age recipient (from its SSH host key), to encrypt secrets for it
    Recipient {
        /// The host key to use, public (.pub) or private [default: /etc/ssh/ssh_host_ed25519_key.pub, then the RSA key]
        #[arg(long, value_name = "FILE")]
        host_key: Option<PathBuf>,
    },
}

const MINUTE: u64 = 60;
const DAY: u64 = 86_400;

/// A duration of at most `MAX_SECS` seconds: larger values are refused when the
/// options are read, so no later arithmetic on them can overflow.
fn duration_up_to<const MAX_SECS: u64>(s: &str) -> Result<Duration, String> {
    let d = crate::duration::parse(s)?;
    if d.as_secs() > MAX_SECS {
        return Err(format!(
            "{s:?} is longer than the maximum of {}",
            crate::duration::format(Duration::from_secs(MAX_SECS))
        ));
    }
    Ok(d)
}

/// The environment variable names a config file may set.
pub const CONFIG_KEYS: &[&str] = &[
    "GITOPS_REPO",
    "GITOPS_BRANCH",
    "GITOPS_STATE_DIR",
    "GITOPS_ENTRYPOINT",
    "GITOPS_TIMEOUT",
    "GITOPS_FETCH_TIMEOUT",
    "GITOPS_SSH_KEY",
    "GITOPS_KNOWN_HOSTS",
    "GITOPS_ALLOW_REWRITE",
    "GITOPS_KEEP_TREES",
    "GITOPS_REBOOT_FILE",
    "GITOPS_REBOOT_COMMAND",
    "GITOPS_REBOOT_GRACE",
    "GITOPS_REBOOT_SPLAY",
    "GITOPS_WEBHOOK_URL",
    "GITOPS_WEBHOOK_URL_FILE",
    "GITOPS_WEBHOOK_FORMAT",
    "GITOPS_WEBHOOK_SECRET_FILE",
    "GITOPS_WEBHOOK_TIMEOUT",
    "GITOPS_WEBHOOK_REMINDER",
    "GITOPS_VERBOSE",
    "GITOPS_TRIGGER_FILE",
    "GITOPS_SECRETS",
    "GITOPS_PATH",
    "GITOPS_HOSTNAME",
    "GITOPS_SOAK",
    "GITOPS_HEALTHCHECK",
    "GITOPS_HEALTHCHECK_TIMEOUT",
    "GITOPS_HEALTHCHECK_RETRIES",
    "GITOPS_HEALTHCHECK_INTERVAL",
    "GITOPS_RECONCILE_EVERY",
    "GITOPS_AGE_IDENTITY",
    "GITOPS_SECRETS_ROOT",
    "GITOPS_METRICS_FILE",
    "GITOPS_INSTANCE",
    "GITOPS_ALLOWED_SIGNERS",
    "GITOPS_TRUSTED_KEYS",
    "GITOPS_VERIFY",
];

pub fn parse_from(args: Vec<OsString>) -> Result<(Cli, clap::ArgMatches)> {
    parse_with(Cli::command(), args)
}

/// Parse with `cmd`, a version of [`Cli::command`] (e.g. with the config file's
/// values as defaults).
pub fn parse_with(cmd: clap::Command, args: Vec<OsString>) -> Result<(Cli, clap::ArgMatches)> {
    let matches = cmd.try_get_matches_from(args).map_err(clap_error)?;
    let cli = Cli::from_arg_matches(&matches).map_err(clap_error)?;
    Ok((cli, matches))
}

/// Help and version are printed by clap and end the process with 0; real usage
/// errors keep clap's message and become `Exit::Usage`.
fn clap_error(err: clap::Error) -> anyhow::Error {
    use clap::error::ErrorKind;
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = err.print();
            std::process::exit(0);
        }
        _ => {
            // The message is its first paragraph: the first line and any indented
            // lines under it (the missing arguments, the possible values).
            let text = err.render().to_string();
            let paragraph: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let message = match paragraph.split_first() {
                Some((first, rest)) => {
                    let first = first.strip_prefix("error: ").unwrap_or(first);
                    if rest.is_empty() {
                        first.to_string()
                    } else {
                        format!("{first} {}", rest.join(", "))
                    }
                }
                None => "invalid arguments".to_string(),
            };
            fail(Exit::Usage, format!("{message} (see --help)"))
        }
    }
}

/// `on`/`off` (as help and completions offer), also the other spellings of a
/// boolean the config file and environment accept: true/false, yes/no, 1/0.
fn on_off() -> impl clap::builder::TypedValueParser<Value = bool> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new([
        PossibleValue::new("on").aliases(["true", "yes", "1"]),
        PossibleValue::new("off").aliases(["false", "no", "0"]),
    ])
    .map(|v| matches!(v.to_ascii_lowercase().as_str(), "on" | "true" | "yes" | "1"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_config_key_is_an_option_of_the_cli() {
        let cmd = Cli::command();
        for key in CONFIG_KEYS {
            let found = cmd
                .get_arguments()
                .any(|a| a.get_env().map(|e| e == *key).unwrap_or(false));
            assert!(found, "{key} is not bound to any option");
        }
    }
}
