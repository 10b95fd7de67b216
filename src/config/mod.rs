//! Configuration: the command line, the environment and the `--config` file,
//! resolved once (flag > environment > file) into a typed [`Settings`] that the
//! rest of the program reads. Also the man page and completions derived from it.

pub mod cli;
mod file;
pub mod generate;

use anyhow::Result;
use clap::parser::ValueSource;
use clap::CommandFactory;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::exit::{fail, Exit};
use crate::git::{RepoUrl, SshOptions};
use crate::notify::Target;

/// Everything the program was asked to do, resolved and validated.
#[derive(Debug)]
pub struct Settings {
    /// Absolute path of the state directory.
    pub state_dir: PathBuf,
    pub verbose: bool,
    pub action: Action,
}

#[derive(Debug)]
pub enum Action {
    Pass(Box<PassSettings>),
    Status {
        json: bool,
    },
    Plan {
        json: bool,
        settings: Box<PassSettings>,
    },
    Freeze {
        reason: String,
        until: Option<String>,
        wait: Duration,
        notify: Option<Box<Control>>,
    },
    Unfreeze {
        notify: Option<Box<Control>>,
    },
    Rollback {
        commit: Option<String>,
        wait: Duration,
        settings: Box<PassSettings>,
    },
    Receive(Box<crate::receive::ReceiveArgs>),
    Recipient {
        host_key: Option<PathBuf>,
    },
}

/// The health check run after an entrypoint succeeded.
#[derive(Debug, Clone)]
pub struct HealthSettings {
    /// Relative to the repository root; used when the commit has this file.
    pub path: String,
    pub timeout: Duration,
    pub retries: u32,
    pub interval: Duration,
}

/// Where a commit's secrets are decrypted, and with what.
#[derive(Debug, Clone)]
pub struct SecretsSettings {
    /// `--age-identity` files; empty: the SSH host keys.
    pub identities: Vec<PathBuf>,
    /// The RAM-backed directory holding `<commit>/` and `current`.
    pub root: PathBuf,
}

/// Which new commits must carry a trusted signature (`--verify`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum VerifyMode {
    /// Every commit reachable from the tip and not from the deployed commit.
    All,
    /// Only the commit to deploy.
    Tip,
}

impl VerifyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            VerifyMode::All => "all",
            VerifyMode::Tip => "tip",
        }
    }
}

/// Where the trusted signing keys are and which commits they must have signed.
#[derive(Debug, Clone)]
pub struct VerifySettings {
    pub allowed_signers: Option<PathBuf>,
    pub trusted_keys: Option<PathBuf>,
    pub mode: VerifyMode,
}

/// What an operator command needs to tell the world about itself: where to send
/// the message (when a webhook is configured), the metrics file to update, and
/// the repository and branch it names (when configured).
#[derive(Debug, Clone)]
pub struct Control {
    pub target: Option<Target>,
    pub metrics: Option<crate::metrics::Target>,
    pub repo: String,
    pub branch: String,
}

/// What one pass needs to know.
#[derive(Debug, Clone)]
pub struct PassSettings {
    pub repo: RepoUrl,
    pub branch: String,
    pub entrypoint: String,
    pub timeout: Duration,
    pub health: HealthSettings,
    /// `--reconcile-every`; `None`: never.
    pub reconcile_every: Option<Duration>,
    pub fetch_timeout: Duration,
    pub ssh: SshOptions,
    pub allow_rewrite: bool,
    pub keep_trees: u32,
    /// `--once`: retry a failing commit now instead of waiting for its backoff.
    pub once: bool,
    /// The parts of the repository this host follows, specifiers expanded; empty:
    /// all of it. The entrypoint, health check and reboot file are looked up
    /// relative to the first.
    pub paths: Vec<String>,
    /// The host name the specifiers used (for messages).
    pub host: String,
    /// `--soak`; `None` when 0 or `--no-soak`.
    pub soak: Option<Duration>,
    pub reboot: RebootSettings,
    /// Where to send notifications; `None` when no webhook is configured.
    pub notify: Option<Target>,
    /// The push receiver's trigger file, removed by each pass before it fetches.
    pub trigger_file: Option<PathBuf>,
    /// `None` with `--secrets off`: `*.age` files are ordinary files then.
    pub secrets: Option<SecretsSettings>,
    /// The Prometheus textfile; `None`: none is written.
    pub metrics: Option<crate::metrics::Target>,
    /// `--instance`: the name of a template unit's instance.
    pub instance: Option<String>,
    /// Signature verification; `None`: off (no keys configured).
    pub verify: Option<VerifySettings>,
}

/// Where reboot requests are read from and how a reboot is carried out.
#[derive(Debug, Clone)]
pub struct RebootSettings {
    pub file: String,
    pub command: String,
    pub grace: Duration,
    pub splay: Duration,
}

/// Parse `args`; when a config file is named, parse again with the file's values
/// as the options' defaults. A default is what clap uses when neither a flag nor
/// the environment set an option, so flag > environment > file holds for every
/// key, wherever the option appears (a pass, or after a command). The process
/// environment is never written.
fn parse(args: Vec<OsString>) -> Result<cli::Cli> {
    let (cli, matches) = cli::parse_from(args.clone())?;
    refuse_pass_flags_with_a_command(&matches)?;
    let Some(path) = cli.common.config.clone() else {
        return Ok(cli);
    };
    let entries = file::read(&path)?;
    let cmd = with_defaults(cli::Cli::command(), &entries);
    Ok(cli::parse_with(cmd, args)?.0)
}

/// `cmd` with the default of every option whose variable is in `entries` set to
/// the entry's value, in the command and all its subcommands.
fn with_defaults(
    mut cmd: clap::Command,
    entries: &std::collections::BTreeMap<String, String>,
) -> clap::Command {
    let ids: Vec<(String, String)> = cmd
        .get_arguments()
        .filter_map(|a| {
            let key = a.get_env()?.to_str()?;
            entries
                .get(key)
                .map(|v| (a.get_id().to_string(), v.clone()))
        })
        .collect();
    for (id, value) in ids {
        cmd = cmd.mut_arg(id, |a| a.default_value(value));
    }
    let subs: Vec<String> = cmd
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect();
    for name in subs {
        cmd = cmd.mut_subcommand(name, |c| with_defaults(c, entries));
    }
    cmd
}

/// Options of a pass typed before a command that does not do a pass (`gitops-run
/// --once status`) would be silently ignored: refuse them.
fn refuse_pass_flags_with_a_command(matches: &clap::ArgMatches) -> Result<()> {
    use clap::Args;
    let Some((sub, _)) = matches.subcommand() else {
        return Ok(());
    };
    let pass = cli::PassArgs::augment_args(clap::Command::new("pass"))
        .arg(
            clap::Arg::new("once")
                .long("once")
                .action(clap::ArgAction::SetTrue),
        )
        .arg(
            clap::Arg::new("no_soak")
                .long("no-soak")
                .action(clap::ArgAction::SetTrue),
        );
    for arg in pass.get_arguments() {
        let id = arg.get_id().as_str();
        if matches.value_source(id) == Some(ValueSource::CommandLine) {
            let name = arg.get_long().unwrap_or(id);
            return Err(fail(
                Exit::Usage,
                format!("--{name} before `{sub}` is an option of a pass; options of a command go after it (`gitops-run {sub} --{name} ...`), and --once only makes sense for a pass"),
            ));
        }
    }
    Ok(())
}

/// The configuration the shipped systemd units read.
const SYSTEM_CONFIG: &str = "/etc/gitops-run/config";

/// Resolve `args` (with the environment and the config file) into settings.
/// `cwd` makes relative paths absolute; `credentials_dir` is systemd's
/// `$CREDENTIALS_DIRECTORY`.
pub fn resolve(
    args: Vec<OsString>,
    cwd: &Path,
    credentials_dir: Option<&Path>,
) -> Result<Settings> {
    let cli = parse(args)?;
    let state_dir = if cli.common.state_dir.is_absolute() {
        cli.common.state_dir.clone()
    } else {
        cwd.join(&cli.common.state_dir)
    };
    let creds = credentials_dir;
    let config = cli.common.config.as_deref();
    let announces = matches!(
        cli.command,
        Some(cli::Command::Freeze { .. } | cli::Command::Unfreeze { .. })
    );
    if announces && config.is_none() && Path::new(SYSTEM_CONFIG).is_file() {
        crate::log::info!(
            "{SYSTEM_CONFIG} exists but is not read without --config: this command acts on {} and sends no notification from it (add --config {SYSTEM_CONFIG} to use the state directory and webhook the timer's passes use)",
            state_dir.display()
        );
    }
    let action = match cli.command {
        Some(cli::Command::Status { json }) => Action::Status { json },
        Some(cli::Command::Plan { json, pass }) => Action::Plan {
            json,
            settings: Box::new(pass_settings(pass, false, cwd, creds, &state_dir, config)?),
        },
        Some(cli::Command::Freeze {
            reason,
            until,
            wait,
            pass,
        }) => Action::Freeze {
            reason,
            until,
            wait,
            notify: Some(control(pass, cwd, creds)?),
        },
        Some(cli::Command::Unfreeze { pass }) => Action::Unfreeze {
            notify: Some(control(pass, cwd, creds)?),
        },
        Some(cli::Command::Rollback { commit, wait, pass }) => Action::Rollback {
            commit,
            wait,
            settings: Box::new(pass_settings(pass, false, cwd, creds, &state_dir, config)?),
        },
        Some(cli::Command::Receive(args)) => Action::Receive(Box::new(args)),
        Some(cli::Command::Recipient { host_key }) => Action::Recipient { host_key },
        None => {
            let mut settings = pass_settings(cli.pass, cli.once, cwd, creds, &state_dir, config)?;
            if cli.no_soak {
                settings.soak = None;
            }
            Action::Pass(Box::new(settings))
        }
    };
    Ok(Settings {
        state_dir,
        verbose: cli.common.verbose,
        action,
    })
}

/// The webhook and metrics file of an operator command, if configured; the
/// repository need not be (a host can be frozen before it was ever configured).
fn control(p: cli::PassArgs, cwd: &Path, credentials_dir: Option<&Path>) -> Result<Box<Control>> {
    let metrics = metrics_target(p.metrics_file.as_deref(), p.instance.as_deref(), cwd)?;
    let target = crate::notify::resolve(
        p.webhook_url.clone(),
        p.webhook_url_file.as_deref(),
        credentials_dir,
        p.webhook_secret_file.as_deref(),
        p.webhook_format,
        p.webhook_timeout,
        p.webhook_reminder,
    );
    let repo = p
        .repo
        .as_deref()
        .and_then(|r| RepoUrl::parse(r, cwd).ok())
        .map(|r| r.redacted)
        .unwrap_or_default();
    Ok(Box::new(Control {
        target,
        metrics,
        repo,
        branch: p.branch,
    }))
}

/// Longest `--instance` name: a systemd instance name fits many times over.
pub const MAX_INSTANCE_CHARS: usize = 128;

/// `--instance`: a name that can be part of a file name and a label; empty is none.
fn instance_name(value: Option<&str>) -> Result<Option<String>> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let why = if v.contains('/') {
        "contains '/'"
    } else if v.starts_with('.') {
        "starts with '.'"
    } else if v.chars().any(char::is_control) {
        "contains a control character"
    } else if v.chars().count() > MAX_INSTANCE_CHARS {
        "is longer than 128 characters"
    } else {
        return Ok(Some(v.to_string()));
    };
    Err(fail(
        Exit::Usage,
        format!("--instance {v:?} {why}; it names a file and labels metrics"),
    ))
}

/// The metrics file and instance label from `--metrics-file` and `--instance`.
fn metrics_target(
    file: Option<&str>,
    instance: Option<&str>,
    cwd: &Path,
) -> Result<Option<crate::metrics::Target>> {
    let instance = instance_name(instance)?;
    if let Some(f) = file {
        if f.trim().is_empty() || f.ends_with('/') {
            return Err(fail(
                Exit::Usage,
                format!("--metrics-file {f:?} names no file; give a file, or `off` to write none"),
            ));
        }
    }
    let usable = file.is_none() && crate::metrics::default_dir_usable();
    Ok(
        crate::metrics::resolve_file(file, instance.as_deref(), cwd, usable)
            .map(|file| crate::metrics::Target { file, instance }),
    )
}

fn pass_settings(
    p: cli::PassArgs,
    once: bool,
    cwd: &Path,
    credentials_dir: Option<&Path>,
    state_dir: &Path,
    config: Option<&Path>,
) -> Result<PassSettings> {
    let Some(repo) = p.repo.as_deref() else {
        return Err(fail(
            Exit::Usage,
            match config {
                Some(file) => format!(
                    "no repository configured: {} sets no GITOPS_REPO (are all its lines still commented out, as in the shipped example?); set GITOPS_REPO=URL there, or pass --repo URL",
                    file.display()
                ),
                None => "no repository configured: pass --repo URL, set GITOPS_REPO, or name a --config file that sets it".into(),
            },
        ));
    };
    let repo = RepoUrl::parse(repo, cwd)?;
    if p.branch.trim().is_empty()
        || gix::validate::reference::name_partial(p.branch.as_str().into()).is_err()
    {
        return Err(fail(
            Exit::Usage,
            format!("invalid branch name {:?}", p.branch),
        ));
    }
    let verify = verify_settings(&p, cwd)?;
    let entrypoint = tree_path("--entrypoint", p.entrypoint)?;
    let metrics = metrics_target(p.metrics_file.as_deref(), p.instance.as_deref(), cwd)?;
    let instance = instance_name(p.instance.as_deref())?;
    let reboot_file = tree_path("--reboot-file", p.reboot_file)?;
    let healthcheck = tree_path("--healthcheck", p.healthcheck)?;
    let host = p.hostname.clone().unwrap_or_else(crate::host::hostname);
    let paths = expand_paths(&p.paths, &host, &crate::host::machine_id())?;
    let notify = crate::notify::resolve(
        p.webhook_url.clone(),
        p.webhook_url_file.as_deref(),
        credentials_dir,
        p.webhook_secret_file.as_deref(),
        p.webhook_format,
        p.webhook_timeout,
        p.webhook_reminder,
    );
    Ok(PassSettings {
        repo,
        branch: p.branch,
        entrypoint,
        timeout: p.timeout,
        health: HealthSettings {
            path: healthcheck,
            timeout: p.healthcheck_timeout,
            retries: p.healthcheck_retries,
            interval: p.healthcheck_interval,
        },
        reconcile_every: (!p.reconcile_every.is_zero()).then_some(p.reconcile_every),
        fetch_timeout: p.fetch_timeout,
        ssh: SshOptions {
            key: p.ssh_key,
            known_hosts: p.known_hosts,
        },
        allow_rewrite: p.allow_rewrite,
        keep_trees: p.keep_trees,
        once,
        paths,
        host,
        soak: (!p.soak.is_zero()).then_some(p.soak),
        reboot: RebootSettings {
            file: reboot_file,
            command: p
                .reboot_command
                .unwrap_or_else(crate::host::default_reboot_command),
            grace: p.reboot_grace,
            splay: p.reboot_splay,
        },
        notify,
        trigger_file: p.trigger_file,
        secrets: p.secrets.then(|| SecretsSettings {
            identities: p
                .age_identities
                .iter()
                .map(|f| {
                    if f.is_absolute() {
                        f.clone()
                    } else {
                        cwd.join(f)
                    }
                })
                .collect(),
            root: match p.secrets_root {
                Some(r) if r.is_absolute() => r,
                Some(r) => cwd.join(r),
                None => crate::secrets::default_root(
                    std::env::var_os("RUNTIME_DIRECTORY")
                        .as_deref()
                        .map(Path::new),
                    state_dir,
                ),
            },
        }),
        metrics,
        instance,
        verify,
    })
}

/// `--allowed-signers`, `--trusted-keys` and `--verify`: either key source turns
/// verification on; a mode without keys, or an empty path, is a usage error
/// rather than verification silently off. The keys themselves are read by each
/// pass (so a change takes effect at the next one).
fn verify_settings(p: &cli::PassArgs, cwd: &Path) -> Result<Option<VerifySettings>> {
    let source = |option: &str, v: &Option<PathBuf>| -> Result<Option<PathBuf>> {
        match v {
            None => Ok(None),
            Some(path) if path.as_os_str().is_empty() => Err(fail(
                Exit::Usage,
                format!("{option} is empty; to turn signature verification off, do not set it"),
            )),
            Some(path) => Ok(Some(cwd.join(path))),
        }
    };
    let allowed_signers = source("--allowed-signers", &p.allowed_signers)?;
    let trusted_keys = source("--trusted-keys", &p.trusted_keys)?;
    if allowed_signers.is_none() && trusted_keys.is_none() {
        if let Some(mode) = p.verify {
            return Err(fail(
                Exit::Usage,
                format!(
                    "--verify {} needs trusted keys: set --allowed-signers FILE (SSH) or --trusted-keys DIR (OpenPGP)",
                    mode.as_str()
                ),
            ));
        }
        return Ok(None);
    }
    Ok(Some(VerifySettings {
        allowed_signers,
        trusted_keys,
        mode: p.verify.unwrap_or(VerifyMode::All),
    }))
}

/// A path inside the checked-out tree, as an option names it: relative, and naming
/// a file. What no commit could ever satisfy is a usage error (exit 2) rather than
/// a failure of each commit in turn.
fn tree_path(option: &str, value: String) -> Result<String> {
    let why = if value.trim().is_empty() {
        "is empty"
    } else if Path::new(&value).is_absolute() {
        "is an absolute path; it must be relative to the repository root"
    } else if value.ends_with('/') {
        "ends with '/', so it names a directory, not a file"
    } else {
        return Ok(value);
    };
    Err(fail(Exit::Usage, format!("{option} {value:?} {why}")))
}

/// Expand `--path` specifiers (`%H` host name, `%l` short host name, `%m` machine
/// id, `%%`) and check each result is a path inside the repository.
fn expand_paths(raw: &[String], host: &str, machine_id: &str) -> Result<Vec<String>> {
    let short = host.split('.').next().unwrap_or(host);
    let mut out: Vec<String> = Vec::new();
    for r in raw {
        let mut expanded = String::new();
        let mut chars = r.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                expanded.push(c);
                continue;
            }
            let (spec, value) = match chars.next() {
                Some('H') => ('H', host),
                Some('l') => ('l', short),
                Some('m') => ('m', machine_id),
                Some('%') => {
                    expanded.push('%');
                    continue;
                }
                other => {
                    return Err(fail(
                        Exit::Usage,
                        format!(
                            "--path {r:?}: unknown specifier %{} (use %H, %l, %m or %%)",
                            other.map(String::from).unwrap_or_default()
                        ),
                    ))
                }
            };
            // An empty value would widen `hosts/%l` to `hosts`: every host's files.
            if value.trim().is_empty() {
                return Err(fail(
                    Exit::Usage,
                    format!(
                        "--path {r:?}: %{spec} is empty here (host name {host:?}, machine id {machine_id:?}); set --hostname"
                    ),
                ));
            }
            expanded.push_str(value);
        }
        let trimmed = expanded.trim_matches('/').to_string();
        let bad = trimmed.is_empty()
            || Path::new(&expanded).is_absolute()
            || trimmed
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..");
        if bad {
            return Err(fail(
                Exit::Usage,
                format!(
                    "--path {r:?} (here {expanded:?}) must name a directory or file inside the repository, like hosts/%l"
                ),
            ));
        }
        if !out.contains(&trimmed) {
            out.push(trimmed);
        }
    }
    Ok(out)
}

impl PassSettings {
    /// `p` (from the repository root) as seen from the first followed path, where
    /// the entrypoint, the health check and the reboot file are looked up.
    pub fn rel(&self, p: &str) -> String {
        match self.paths.first() {
            Some(base) => format!("{base}/{p}"),
            None => p.to_string(),
        }
    }

    /// The directory the entrypoint runs in: the first followed path of `tree`
    /// when it is a directory, else the tree.
    pub fn workdir(&self, tree: &Path) -> PathBuf {
        match self.paths.first().map(|b| tree.join(b)) {
            Some(dir) if dir.is_dir() => dir,
            _ => tree.to_path_buf(),
        }
    }

    /// Strings that must never be printed: URL credentials, the webhook URL.
    pub fn secrets(&self) -> Vec<String> {
        let mut out = self.repo.secrets.clone();
        if let Some(w) = &self.notify {
            out.extend(crate::notify::secrets_of(&w.url));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        std::iter::once("gitops-run")
            .chain(a.iter().copied())
            .map(OsString::from)
            .collect()
    }

    #[test]
    fn config_file_values_fill_only_what_flags_did_not_set() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config");
        std::fs::write(
            &file,
            "GITOPS_REPO=/srv/from-file\nGITOPS_BRANCH=prod\nGITOPS_ALLOW_REWRITE=yes\nGITOPS_TIMEOUT=5m\n",
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let s = resolve(
            args(&["--config", f, "--branch", "flag"]),
            Path::new("/"),
            None,
        )
        .unwrap();
        let Action::Pass(p) = s.action else {
            panic!("a pass")
        };
        assert_eq!(p.repo.raw, "/srv/from-file");
        assert_eq!(p.branch, "flag", "the flag wins over the file");
        assert!(p.allow_rewrite);
        assert_eq!(p.timeout, Duration::from_secs(300));
    }

    #[test]
    fn config_file_values_reach_subcommands_without_being_their_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config");
        std::fs::write(&file, "GITOPS_REPO=/srv/r\nGITOPS_STATE_DIR=/srv/state\n").unwrap();
        let s = resolve(
            args(&["status", "--json", "--config", file.to_str().unwrap()]),
            Path::new("/"),
            None,
        )
        .unwrap();
        assert_eq!(s.state_dir, Path::new("/srv/state"));
        assert!(matches!(s.action, Action::Status { json: true }));
    }

    #[test]
    fn paths_no_commit_can_satisfy_are_usage_errors() {
        for bad in ["", "/bin/true", "run.sh/"] {
            let err = resolve(
                args(&["--repo", "/srv/r", "--entrypoint", bad]),
                Path::new("/"),
                None,
            )
            .unwrap_err();
            assert_eq!(crate::exit::class_of(&err), Exit::Usage, "{bad:?}");
            assert!(format!("{err:#}").contains("--entrypoint"), "{err:#}");
        }
        let err = resolve(
            args(&["--repo", "/srv/r", "--reboot-file", "/etc/reboot-at"]),
            Path::new("/"),
            None,
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("absolute"), "{err:#}");
    }

    #[test]
    fn pass_flags_before_a_command_are_refused() {
        let err = resolve(args(&["--once", "status"]), Path::new("/"), None).unwrap_err();
        assert_eq!(crate::exit::class_of(&err), Exit::Usage);
        assert!(format!("{err:#}").contains("--once"), "{err:#}");
    }

    #[test]
    fn path_specifiers_expand_per_host() {
        assert_eq!(
            expand_paths(
                &[
                    "hosts/%l".into(),
                    "common/".into(),
                    "by-id/%m".into(),
                    "100%%".into(),
                    "fqdn/%H".into()
                ],
                "web-01.example.com",
                "abc123"
            )
            .unwrap(),
            vec![
                "hosts/web-01",
                "common",
                "by-id/abc123",
                "100%",
                "fqdn/web-01.example.com"
            ]
        );
        for bad in ["", "/etc", "hosts/../x", "%q", "./x"] {
            assert!(expand_paths(&[bad.into()], "h", "m").is_err(), "{bad:?}");
        }
        // A specifier that expands to nothing must not widen the path.
        for (host, id) in [("", "m"), (".example.com", "m")] {
            let err = expand_paths(&["hosts/%l".into()], host, id).unwrap_err();
            assert_eq!(crate::exit::class_of(&err), Exit::Usage);
            assert!(format!("{err:#}").contains("%l is empty"), "{err:#}");
        }
        assert!(expand_paths(&["by-id/%m/".into()], "h", "").is_err());
        assert!(expand_paths(&["hosts/%H".into()], "", "m").is_err());
    }

    #[test]
    fn the_metrics_file_is_a_path_or_off_and_reaches_operator_commands() {
        let pass = |extra: &[&str]| {
            let mut a = vec!["--repo", "/srv/r"];
            a.extend_from_slice(extra);
            match resolve(args(&a), Path::new("/cwd"), None).map(|s| s.action) {
                Ok(Action::Pass(p)) => Ok(p.metrics),
                Ok(other) => panic!("a pass: {other:?}"),
                Err(e) => Err(e),
            }
        };
        let t = pass(&["--metrics-file", "m/x.prom", "--instance", "web"])
            .unwrap()
            .unwrap();
        assert_eq!(t.file, Path::new("/cwd/m/x.prom"));
        assert_eq!(t.instance.as_deref(), Some("web"));
        assert_eq!(pass(&["--metrics-file", "off"]).unwrap(), None);
        for bad in [
            &["--metrics-file", ""][..],
            &["--metrics-file", "dir/"],
            &["--instance", "a/b"],
            &["--instance", ".hidden"],
        ] {
            let err = pass(bad).unwrap_err();
            assert_eq!(crate::exit::class_of(&err), Exit::Usage, "{bad:?}");
        }
        // An operator command knows the file without a webhook configured.
        let s = resolve(
            args(&["unfreeze", "--metrics-file", "/m/x.prom"]),
            Path::new("/"),
            None,
        )
        .unwrap();
        let Action::Unfreeze { notify: Some(c) } = s.action else {
            panic!("unfreeze with its control")
        };
        assert!(c.target.is_none());
        assert_eq!(c.metrics.unwrap().file, Path::new("/m/x.prom"));
    }

    #[test]
    fn relative_state_dir_is_made_absolute() {
        let s = resolve(
            args(&["status", "--state-dir", "st"]),
            Path::new("/cwd"),
            None,
        )
        .unwrap();
        assert_eq!(s.state_dir, Path::new("/cwd/st"));
    }
}
