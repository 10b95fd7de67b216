//! Running programs of a commit under the entrypoint's contract: the environment
//! every run gets, one run with its output appended to the attempt's log under a
//! header, and the health check with its retries.

use anyhow::Result;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::entrypoint::{self, Ended};
use crate::config::PassSettings;
use crate::decide::Reason;
use crate::host::signals::stop_requested;
use crate::log::info;
use crate::state::{Attempt, AttemptResult, Layout};

/// Longest drift report read back from `GITOPS_DRIFT_FILE`.
pub const MAX_DRIFT_LINES: usize = 100;
/// Longest line of a drift report kept.
pub const MAX_DRIFT_LINE_CHARS: usize = 300;

/// The environment of a run: the documented `GITOPS_*` variables.
pub fn contract(
    cfg: &PassSettings,
    layout: &Layout,
    commit: &str,
    previous: Option<&str>,
    reason: Reason,
    secrets_dir: Option<&Path>,
) -> Vec<(String, String)> {
    let mut env = vec![
        ("GITOPS_COMMIT".to_string(), commit.to_string()),
        (
            "GITOPS_PREVIOUS_COMMIT".to_string(),
            previous.unwrap_or_default().to_string(),
        ),
        ("GITOPS_BRANCH".to_string(), cfg.branch.clone()),
        ("GITOPS_REPO".to_string(), cfg.repo.redacted.clone()),
        ("GITOPS_REASON".to_string(), reason.as_str().to_string()),
        (
            "GITOPS_STATE_DIR".to_string(),
            layout.root.to_string_lossy().into_owned(),
        ),
        (
            "GITOPS_DRIFT_FILE".to_string(),
            layout.drift_file().to_string_lossy().into_owned(),
        ),
    ];
    if let Some(dir) = secrets_dir {
        env.push((
            "GITOPS_SECRETS_DIR".to_string(),
            dir.to_string_lossy().into_owned(),
        ));
    }
    if !cfg.paths.is_empty() {
        env.push(("GITOPS_PATHS".to_string(), cfg.paths.join(":")));
    }
    env
}

/// One run of a program in a tree.
pub struct Job<'a> {
    /// What the log and the journal call it: "entrypoint", "health check", ...
    pub label: &'a str,
    pub program: &'a Path,
    pub tree: &'a Path,
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
    pub log: &'a Path,
}

/// Run `job`; its output goes to stderr and is appended to the log after a header.
pub fn run(
    layout: &Layout,
    job: Job<'_>,
    on_spawn: impl FnOnce(i32) -> Result<()>,
) -> Result<Ended> {
    let header = format!(
        "# gitops-run: {} {} started {}",
        job.label,
        job.program.display(),
        chrono::Utc::now().to_rfc3339()
    );
    info!("running the {} {}", job.label, job.program.display());
    entrypoint::run(
        entrypoint::Spec {
            program: job.program,
            cwd: job.tree,
            env: job.env,
            timeout: job.timeout,
            log: job.log,
            header,
            pid_file: &layout.pid_file(),
        },
        on_spawn,
    )
}

/// How a commit's health check went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// The commit has no health check: it counts as healthy.
    NoCheck,
    Passed {
        tries: u32,
    },
    Failed(String),
}

/// Run the commit's health check (when it has one) until it passes, at most
/// `--healthcheck-retries` times, `--healthcheck-interval` apart.
pub fn health_check(
    cfg: &PassSettings,
    layout: &Layout,
    tree: &Path,
    env: &[(String, String)],
    log: &Path,
) -> Result<Health> {
    let rel = cfg.rel(&cfg.health.path);
    let program = match entrypoint::locate(tree, &rel) {
        Ok(None) => return Ok(Health::NoCheck),
        Err(msg) => return Ok(Health::Failed(format!("health check {msg}"))),
        Ok(Some(_)) => match entrypoint::resolve(tree, &rel) {
            Ok(p) => p,
            Err(msg) => {
                return Ok(Health::Failed(msg.replacen(
                    "entrypoint",
                    "health check",
                    1,
                )))
            }
        },
    };
    let retries = cfg.health.retries.max(1);
    let mut last = String::new();
    for n in 1..=retries {
        let mut env = env.to_vec();
        env.push(("GITOPS_HEALTHCHECK_ATTEMPT".into(), n.to_string()));
        let label = format!("health check ({n} of {retries})");
        let ended = run(
            layout,
            Job {
                label: &label,
                program: &program,
                tree: &cfg.workdir(tree),
                env,
                timeout: cfg.health.timeout,
                log,
            },
            |_| Ok(()),
        )?;
        match ended {
            e if e.success() => return Ok(Health::Passed { tries: n }),
            Ended::Interrupted => return Ok(Health::Failed("interrupted".into())),
            other => last = describe(&other, cfg.health.timeout),
        }
        if n < retries && !sleep_unless_stopped(cfg.health.interval) {
            return Ok(Health::Failed(format!("{last}; then interrupted")));
        }
    }
    Ok(Health::Failed(format!(
        "{} failed {retries} time(s), the last time: {last}",
        cfg.health.path
    )))
}

/// How a run ended, for a summary line.
pub fn describe(e: &Ended, timeout: Duration) -> String {
    match e {
        Ended::Exited(c) => format!("exited {c}"),
        Ended::Signaled(s) => format!("was killed by signal {s}"),
        Ended::TimedOut => format!("timed out ({})", crate::duration::format(timeout)),
        Ended::Interrupted => "was interrupted".into(),
        Ended::NotStarted(why) => why.clone(),
    }
}

/// Sleep `d`, or less when SIGINT/SIGTERM arrived; whether the whole time passed.
fn sleep_unless_stopped(d: Duration) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if stop_requested() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
    }
    true
}

/// Start a run with an empty drift file (the entrypoint writes one line per thing
/// it had to correct).
pub fn reset_drift(layout: &Layout) -> PathBuf {
    let path = layout.drift_file();
    let _ = std::fs::write(&path, b"");
    path
}

/// The drift lines the entrypoint wrote, bounded, and how many more there were.
pub fn read_drift(layout: &Layout) -> (Vec<String>, usize) {
    use std::io::{BufRead, BufReader, Read};
    let Ok(f) = std::fs::File::open(layout.drift_file()) else {
        return (Vec::new(), 0);
    };
    let mut lines = Vec::new();
    let mut more = 0;
    let reader = BufReader::new(f.take(1024 * 1024));
    for line in reader.split(b'\n').map_while(Result::ok) {
        let text = String::from_utf8_lossy(&line).trim().to_string();
        if text.is_empty() {
            continue;
        }
        if lines.len() < MAX_DRIFT_LINES {
            lines.push(text.chars().take(MAX_DRIFT_LINE_CHARS).collect());
        } else {
            more += 1;
        }
    }
    (lines, more)
}

/// Close `a`, the record of a run that has ended (entrypoint, then its health
/// check when it exited 0): when, its exit code, and what it came to. The pid
/// fields a crashed pass would use to find the process are cleared.
pub fn close_attempt(
    a: &mut Attempt,
    exited: &Ended,
    health: &Health,
    finished: chrono::DateTime<chrono::Utc>,
) {
    a.finished_at = Some(finished);
    a.exit_code = exited.code();
    a.pid = None;
    a.pid_start_ticks = None;
    a.boot_id = None;
    a.result = match (exited, health) {
        (_, Health::Failed(_)) => AttemptResult::Unhealthy,
        (e, _) if e.success() => AttemptResult::Succeeded,
        (Ended::TimedOut, _) => AttemptResult::TimedOut,
        (Ended::Interrupted, _) => AttemptResult::Interrupted,
        (Ended::NotStarted(_), _) => AttemptResult::InvalidEntrypoint,
        _ => AttemptResult::Failed,
    };
}
