//! One pass: lock, load state, fetch, classify, apply, record, exit code.
//! Reads like the README; the decisions live in `decide`, the effects in the
//! modules it calls.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::decide::{self, Classification, Plan, Reason};
use crate::entrypoint::{self, Ended};
use crate::exit::{fail, Classify, Exit};
use crate::git::{Cache, History, ObjectId, SshOptions};
use crate::log::{debug, info, short, utc};
use crate::notify::{Kind, Signal};
use crate::repo_url::RepoUrl;
use crate::state::{self, Attempt, AttemptResult, Deployed, LastPass, Layout, State};
use crate::trees;

/// Everything a pass needs to know, resolved from flags, environment and config file.
#[derive(Debug, Clone)]
pub struct Config {
    pub repo: RepoUrl,
    pub branch: String,
    pub layout: Layout,
    pub entrypoint: String,
    pub timeout: Duration,
    pub ssh: SshOptions,
    pub allow_rewrite: bool,
    pub keep_trees: u32,
    /// `--once`: retry a failing commit now instead of waiting for its backoff.
    pub once: bool,
    pub reboot: RebootConfig,
    /// Where to send notifications; `None` when no webhook is configured.
    pub notify: Option<crate::notify::Target>,
}

/// Where reboot requests are read from and how a reboot is carried out.
#[derive(Debug, Clone)]
pub struct RebootConfig {
    pub file: String,
    pub command: String,
    pub grace: Duration,
    pub splay: Duration,
}

/// What the reboot review asks of the end of the pass.
enum RebootAction {
    Nothing,
    Invalid,
    Reboot { requested: DateTime<Utc> },
}

/// What a pass ended with; recorded as `last_pass.outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    UpToDate,
    Applied,
    Failed,
    Interrupted,
    InvalidEntrypoint,
    Waiting,
    Refused,
}

impl Label {
    pub fn as_str(self) -> &'static str {
        match self {
            Label::UpToDate => "up-to-date",
            Label::Applied => "applied",
            Label::Failed => "failed",
            Label::Interrupted => "interrupted",
            Label::InvalidEntrypoint => "invalid-entrypoint",
            Label::Waiting => "waiting",
            Label::Refused => "refused",
        }
    }

    /// Whether this pass tried a commit (ran, or refused to run, its entrypoint).
    pub fn attempted(self) -> bool {
        matches!(
            self,
            Label::Applied | Label::Failed | Label::Interrupted | Label::InvalidEntrypoint
        )
    }
}

/// What a pass did, for the summary line, the state file and the exit code.
pub struct Outcome {
    pub exit: Exit,
    pub label: Label,
    pub summary: String,
    pub remote: Option<ObjectId>,
    pub class: Option<Classification>,
    /// New commits of an apply (newest first, bounded) and how many more there were.
    pub commits: Vec<crate::notify::CommitLine>,
    pub commits_omitted: usize,
}

pub fn run(cfg: &Config) -> Result<Exit> {
    let started = Instant::now();
    let started_at = Utc::now();
    state::prepare_dir(&cfg.layout.root)?;
    let Some(_lock) = acquire_lock(&cfg.layout)? else {
        info!(
            "another gitops-run pass holds the lock on {}; exiting",
            cfg.layout.lock().display()
        );
        return Ok(Exit::Ok);
    };
    let mut st = load_state(cfg)?;
    trees::clean_leftovers(&cfg.layout)?;
    settle_interrupted_attempt(&mut st, started_at);

    let previous = st.deployed.as_ref().map(|d| d.commit.clone());
    let result = pass(cfg, &mut st, started_at);
    if let Ok(o) = &result {
        info!("{} ({:.2}s)", o.summary, started.elapsed().as_secs_f64());
    }
    let (reboot, reboot_signal) = review_reboot(cfg, &mut st, Utc::now());
    let exit = exit_of(&result, &reboot);
    let elapsed = started.elapsed();
    st.last_pass = Some(last_pass(&result, exit, started_at, elapsed));
    if let Some(target) = &cfg.notify {
        let facts = crate::report::Facts {
            cfg,
            previous: previous.as_deref(),
            result: &result,
            exit,
            elapsed,
            now: Utc::now(),
        };
        crate::report::notify(target, &facts, &mut st, reboot_signal);
    }
    state::save(&cfg.layout.state_file(), &st)?;
    // A due reboot happens whatever else failed: a Git outage must not cancel it.
    let exit = match reboot {
        RebootAction::Reboot { requested } => carry_out_reboot(cfg, &mut st, requested, exit)?,
        _ => exit,
    };
    result.map(|_| exit)
}

/// The exit code: the pass's own, or 8 for an invalid reboot request when all else
/// went well.
fn exit_of(result: &Result<Outcome>, reboot: &RebootAction) -> Exit {
    let exit = match result {
        Ok(o) => o.exit,
        Err(e) => crate::exit::class_of(e),
    };
    if matches!(reboot, RebootAction::Invalid) && exit == Exit::Ok {
        return Exit::Reboot;
    }
    exit
}

fn last_pass(
    result: &Result<Outcome>,
    exit: Exit,
    started_at: DateTime<Utc>,
    elapsed: Duration,
) -> LastPass {
    let (remote_commit, classification, outcome, error) = match result {
        Ok(o) => (
            o.remote.map(|r| r.to_string()),
            o.class,
            o.label.as_str().to_string(),
            None,
        ),
        Err(e) => {
            let text = crate::log::scrub(&crate::git::one_line(&format!("{e:#}")));
            (None, None, "error".to_string(), Some(text))
        }
    };
    LastPass {
        started_at,
        duration_ms: elapsed.as_millis() as u64,
        remote_commit,
        classification,
        outcome,
        exit_code: exit.code(),
        error,
    }
}

/// Run the reboot command. If it fails, the request is taken back from the done list
/// so the next pass within the grace tries again, and the pass exits 8.
fn carry_out_reboot(
    cfg: &Config,
    st: &mut State,
    requested: DateTime<Utc>,
    exit: Exit,
) -> Result<Exit> {
    let Err(e) = run_reboot_command(&cfg.reboot.command) else {
        return Ok(exit);
    };
    info!(
        "reboot command failed: {e:#}; the request stays open and is tried again by the next pass"
    );
    st.reboot.done.retain(|d| *d != requested);
    if let Some(r) = st.reboot.request.as_mut() {
        r.status = "pending".into();
        r.detail = format!("the reboot command failed: {e:#}");
    }
    state::save(&cfg.layout.state_file(), st)?;
    Ok(if exit == Exit::Ok { Exit::Reboot } else { exit })
}

/// Read the reboot request of the deployed tree and decide about it (see `reboot`).
/// Records the verdict in the state; a reboot due now is recorded as done before it
/// is carried out, so it can never be carried out twice.
fn review_reboot(cfg: &Config, st: &mut State, now: DateTime<Utc>) -> (RebootAction, Signal) {
    use crate::reboot::{self, Verdict};
    use crate::state::RebootRequest;

    let previous = st.reboot.request.take();
    let Some(deployed) = &st.deployed else {
        return (RebootAction::Nothing, Signal::Quiet);
    };
    let tree = cfg.layout.tree(&deployed.commit);
    let file = &cfg.reboot.file;
    let invalid = |st: &mut State, msg: String| {
        info!("invalid reboot request {file}: {msg}; not rebooting");
        st.reboot.request = Some(RebootRequest {
            status: "invalid".into(),
            requested_at: None,
            effective_at: None,
            detail: msg.clone(),
        });
        (
            RebootAction::Invalid,
            Signal::Bad(Kind::RebootInvalid, format!("reboot-invalid:{msg}")),
        )
    };
    let path = match entrypoint::locate(&tree, file) {
        Ok(Some(p)) => p,
        Ok(None) => {
            if let Some(p) = previous.filter(|p| p.status == "pending") {
                let at = p.effective_at.map(|t| t.to_rfc3339()).unwrap_or_default();
                info!("the reboot request was removed; the reboot pending at {at} is cancelled");
            }
            return (RebootAction::Nothing, Signal::Quiet);
        }
        Err(msg) => return invalid(st, msg),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => return invalid(st, format!("cannot read it: {e}")),
    };
    let requested = match reboot::parse_request(&text, &chrono::Local) {
        Ok(t) => t,
        Err(msg) => return invalid(st, msg),
    };
    let boot = match reboot::boot_time() {
        Ok(b) => b,
        Err(msg) => return invalid(st, format!("cannot tell the boot time: {msg}")),
    };
    let effective = requested + reboot::splay_offset(&reboot::machine_id(), cfg.reboot.splay);
    let grace = chrono::Duration::from_std(cfg.reboot.grace).unwrap_or(chrono::Duration::MAX);
    let verdict = reboot::decide(requested, effective, boot, now, grace, &st.reboot.done);
    let when = |t: DateTime<Utc>| utc(&t);
    let detail = match verdict {
        Verdict::Spent => format!(
            "the host booted at {}, after the requested {}",
            when(boot),
            when(effective)
        ),
        Verdict::Pending => format!("the first pass at or after {} reboots", when(effective)),
        Verdict::RebootNow => format!(
            "{} is due and the host booted before it, at {}",
            when(effective),
            when(boot)
        ),
        Verdict::Missed => format!(
            "not rebooting: {} passed more than the grace of {} ago",
            when(effective),
            crate::duration::format(cfg.reboot.grace)
        ),
        Verdict::Done => format!("carried out for the request {}", when(requested)),
    };
    let was = previous
        .as_ref()
        .map(|p| (p.status.clone(), p.effective_at));
    let changed = was != Some((verdict.as_str().to_string(), Some(effective)));
    match verdict {
        Verdict::Pending => {
            let old = previous
                .as_ref()
                .filter(|p| p.status == "pending")
                .and_then(|p| p.effective_at);
            if let Some(old) = old.filter(|o| *o != effective) {
                info!("reboot moved from {} to {}", when(old), when(effective));
            }
            info!("reboot pending: {detail}");
        }
        Verdict::Missed if changed => {
            info!(
                "warning: reboot request {} missed: {detail}",
                when(requested)
            )
        }
        Verdict::RebootNow => info!("reboot requested for {}: {detail}", when(requested)),
        _ => debug!(
            "reboot request {}: {}: {detail}",
            when(requested),
            verdict.as_str()
        ),
    }
    st.reboot.request = Some(RebootRequest {
        status: verdict.as_str().into(),
        requested_at: Some(requested),
        effective_at: Some(effective),
        detail,
    });
    if verdict == Verdict::RebootNow {
        st.reboot.done.insert(0, requested);
        st.reboot.done.truncate(reboot::MAX_DONE);
        return (
            RebootAction::Reboot { requested },
            Signal::Good(Kind::Rebooting),
        );
    }
    let signal = match verdict {
        Verdict::Pending if changed => Signal::Good(Kind::RebootScheduled),
        Verdict::Missed if changed => Signal::Good(Kind::RebootMissed),
        _ => Signal::Quiet,
    };
    (RebootAction::Nothing, signal)
}

fn run_reboot_command(command: &str) -> Result<()> {
    info!("running reboot command: {command}");
    entrypoint::exit_cleanly_on_term();
    let status = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .status()
        .with_context(|| format!("failed to start {command:?}"))?;
    if !status.success() {
        anyhow::bail!("{command:?} exited with {status}");
    }
    Ok(())
}

fn acquire_lock(layout: &Layout) -> Result<Option<nix::fcntl::Flock<std::fs::File>>> {
    use nix::fcntl::{Flock, FlockArg};
    let path = layout.lock();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("failed to open lock file {}", path.display()))
        .class(Exit::State)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(anyhow::Error::new(e))
            .with_context(|| format!("failed to lock {}", path.display()))
            .class(Exit::State),
    }
}

fn load_state(cfg: &Config) -> Result<State> {
    let path = cfg.layout.state_file();
    let Some(mut st) = state::load(&path)? else {
        return Ok(State::new(&cfg.repo.redacted, &cfg.branch));
    };
    if crate::repo_url::identity(&st.repo) != cfg.repo.identity() {
        return Err(fail(
            Exit::State,
            format!(
                "state directory {} belongs to repository {}, not {}; use another --state-dir, or move it aside to start over",
                cfg.layout.root.display(),
                st.repo,
                cfg.repo.redacted
            ),
        ));
    }
    if st.branch != cfg.branch {
        info!(
            "branch changed from {} to {}; the deployed commit is compared with the new branch",
            st.branch, cfg.branch
        );
        st.branch = cfg.branch.clone();
    }
    Ok(st)
}

/// A pass that died while its entrypoint ran left an attempt marked running. Stop
/// what is left of that entrypoint and count the attempt as failed.
fn settle_interrupted_attempt(st: &mut State, now: DateTime<Utc>) {
    let Some(attempt) = st.attempt.as_mut() else {
        return;
    };
    if attempt.result != AttemptResult::Running {
        return;
    }
    if let Some(pid) = attempt.pid {
        entrypoint::stop_orphan(pid, attempt.pid_start_ticks, attempt.boot_id.as_deref());
    }
    info!(
        "the previous pass ended while applying {}; counting that attempt as failed",
        short(&attempt.commit)
    );
    attempt.result = AttemptResult::Interrupted;
    attempt.finished_at = Some(now);
    attempt.pid = None;
    st.failing = Some(decide::record_failure(
        st.failing.as_ref(),
        &attempt.commit,
        now,
    ));
}

fn pass(cfg: &Config, st: &mut State, now: DateTime<Utc>) -> Result<Outcome> {
    let https = cfg.repo.raw.starts_with("https://");
    let cache = Cache::open_or_init(&cfg.layout.cache(), &cfg.ssh, https).class(Exit::Internal)?;
    let deployed: Option<ObjectId> = match &st.deployed {
        Some(d) => Some(ObjectId::from_hex(d.commit.as_bytes()).map_err(|_| {
            fail(
                Exit::State,
                format!("state file names an invalid deployed commit {:?}", d.commit),
            )
        })?),
        None => None,
    };

    debug!("fetching {} from {}", cfg.branch, cfg.repo.redacted);
    let remote = cache.fetch(&cfg.repo, &cfg.branch, History::Needed)?;
    let class = classify(cfg, &cache, deployed, remote)?;
    debug!(
        "deployed {:?}, remote {remote}: {}",
        deployed.map(|d| d.to_string()),
        class.as_str()
    );

    if let Some(d) = deployed {
        restore_current(cfg, &cache, d)?;
    }

    let remote_hex = remote.to_string();
    let outcome = |exit, label, summary: String| Outcome {
        exit,
        label,
        summary,
        remote: Some(remote),
        class: Some(class),
        commits: Vec::new(),
        commits_omitted: 0,
    };
    match decide::plan(
        class,
        &remote_hex,
        st.failing.as_ref(),
        cfg.allow_rewrite,
        cfg.once,
        now,
    ) {
        Plan::Nothing => {
            st.failing = None;
            let subject = st
                .deployed
                .as_ref()
                .map(|d| d.subject.clone())
                .unwrap_or_default();
            Ok(outcome(
                Exit::Ok,
                Label::UpToDate,
                format!(
                    "up to date at {} ({subject:?}) on {}",
                    short(&remote_hex),
                    cfg.branch
                ),
            ))
        }
        Plan::Wait { until, failures } => {
            let exit = match st.attempt.as_ref().map(|a| a.result) {
                Some(AttemptResult::InvalidEntrypoint) => Exit::EntrypointInvalid,
                _ => Exit::EntrypointFailed,
            };
            Ok(outcome(
                exit,
                Label::Waiting,
                format!(
                    "{} has failed {failures} time(s); next retry at {} (run `gitops-run --once` to retry now)",
                    short(&remote_hex),
                    utc(&until)
                ),
            ))
        }
        Plan::Refuse(c) => {
            let d = deployed.map(|d| d.to_string()).unwrap_or_default();
            let what = if c == Classification::RemoteBehind {
                format!(
                    "refusing to deploy: branch {} of {} was reset backwards; remote {} is an ancestor of deployed {}",
                    cfg.branch,
                    cfg.repo.redacted,
                    short(&remote_hex),
                    short(&d)
                )
            } else {
                format!(
                    "refusing to deploy: history of branch {} of {} was rewritten (force-push?); remote {} does not descend from deployed {}",
                    cfg.branch,
                    cfg.repo.redacted,
                    short(&remote_hex),
                    short(&d)
                )
            };
            Ok(outcome(
                Exit::Refused,
                Label::Refused,
                format!("{what}. Nothing was changed. Push a commit on top of {} or, to deploy {} anyway, run with --allow-rewrite", short(&d), short(&remote_hex)),
            ))
        }
        Plan::Apply(reason) => {
            let (commits, commits_omitted) =
                cache.commits_between(deployed, remote, crate::notify::MAX_SUBJECTS);
            apply(cfg, st, &cache, remote, reason, now).map(|(exit, label, summary)| Outcome {
                commits,
                commits_omitted,
                ..outcome(exit, label, summary)
            })
        }
    }
}

/// Classify the remote tip against the deployed commit. In a shallow cache a missing
/// merge base may only mean missing history, so deepen before calling it diverged.
fn classify(
    cfg: &Config,
    cache: &Cache,
    deployed: Option<ObjectId>,
    remote: ObjectId,
) -> Result<Classification> {
    let base = |cache: &Cache| match deployed {
        Some(d) if d != remote && cache.has_commit(&d) => cache.merge_base(d, remote),
        _ => None,
    };
    let class = decide::classify(deployed.as_ref(), &remote, base(cache).as_ref());
    if class == Classification::Diverged
        && (cache.is_shallow() || !deployed.map(|d| cache.has_commit(&d)).unwrap_or(true))
    {
        info!(
            "history is incomplete here; fetching all of {} before concluding that it diverged",
            cfg.branch
        );
        cache.fetch(&cfg.repo, &cfg.branch, History::Full)?;
        return Ok(decide::classify(
            deployed.as_ref(),
            &remote,
            base(cache).as_ref(),
        ));
    }
    Ok(class)
}

/// Make `current` point at the deployed tree again if someone removed or moved it.
fn restore_current(cfg: &Config, cache: &Cache, deployed: ObjectId) -> Result<()> {
    let hex = deployed.to_string();
    let tree_ok = cfg.layout.tree(&hex).is_dir();
    if tree_ok && trees::current_commit(&cfg.layout).as_deref() == Some(hex.as_str()) {
        return Ok(());
    }
    if !tree_ok {
        if !cache.has_commit(&deployed) {
            info!("the deployed tree {} is missing and its commit is not in the cache; it will be replaced by the next successful apply", short(&hex));
            return Ok(());
        }
        info!(
            "the deployed tree {} is missing; checking it out again (the entrypoint is not re-run)",
            short(&hex)
        );
        trees::materialize(&cfg.layout, cache, deployed)?;
    }
    trees::switch_current(&cfg.layout, &hex)?;
    info!(
        "restored {} -> trees/{}",
        cfg.layout.current().display(),
        hex
    );
    Ok(())
}

fn apply(
    cfg: &Config,
    st: &mut State,
    cache: &Cache,
    commit: ObjectId,
    reason: Reason,
    now: DateTime<Utc>,
) -> Result<(Exit, Label, String)> {
    let hex = commit.to_string();
    let info_of = cache.commit_info(commit)?;
    let previous = st.deployed.as_ref().map(|d| d.commit.clone());
    info!(
        "applying {} {:?} ({}; deployed: {})",
        short(&hex),
        info_of.subject,
        reason.as_str(),
        previous.as_deref().map(short).unwrap_or("none")
    );
    let tree = trees::materialize(&cfg.layout, cache, commit)?;
    debug!("checked out {hex} into {}", tree.display());

    let log_path = new_log_path(&cfg.layout, &hex, now)?;
    let mut attempt = Attempt {
        commit: hex.clone(),
        subject: info_of.subject.clone(),
        reason,
        started_at: now,
        finished_at: None,
        result: AttemptResult::Running,
        exit_code: None,
        log: Some(log_path.clone()),
        pid: None,
        pid_start_ticks: None,
        boot_id: None,
    };

    let program = match entrypoint::resolve(&tree, &cfg.entrypoint) {
        Ok(p) => p,
        Err(msg) => {
            attempt.result = AttemptResult::InvalidEntrypoint;
            attempt.finished_at = Some(Utc::now());
            attempt.log = None;
            st.attempt = Some(attempt);
            st.failing = Some(decide::record_failure(
                st.failing.as_ref(),
                &hex,
                Utc::now(),
            ));
            prune_trees(cfg, st)?;
            return Ok((
                Exit::EntrypointInvalid,
                Label::InvalidEntrypoint,
                format!("not running {}: {msg}", short(&hex)),
            ));
        }
    };

    st.attempt = Some(attempt.clone());
    let env = vec![
        ("GITOPS_COMMIT".to_string(), hex.clone()),
        (
            "GITOPS_PREVIOUS_COMMIT".to_string(),
            previous.clone().unwrap_or_default(),
        ),
        ("GITOPS_BRANCH".to_string(), cfg.branch.clone()),
        ("GITOPS_REPO".to_string(), cfg.repo.redacted.clone()),
        ("GITOPS_REASON".to_string(), reason.as_str().to_string()),
        (
            "GITOPS_STATE_DIR".to_string(),
            cfg.layout.root.to_string_lossy().into_owned(),
        ),
    ];
    let header = format!(
        "# gitops-run: {} {} commit {hex} ({}) started {}",
        cfg.entrypoint,
        reason.as_str(),
        info_of.subject,
        now.to_rfc3339()
    );
    info!("running {} in {}", cfg.entrypoint, tree.display());
    let ran = Instant::now();
    let state_path = cfg.layout.state_file();
    let ended = entrypoint::run(
        entrypoint::Spec {
            program: &program,
            cwd: &tree,
            env,
            timeout: cfg.timeout,
            log: &log_path,
            header,
        },
        |pid| {
            let a = st.attempt.as_mut().expect("attempt set above");
            a.pid = Some(pid);
            a.pid_start_ticks = entrypoint::process_start_ticks(pid);
            a.boot_id = entrypoint::boot_id();
            state::save(&state_path, st)
        },
    )?;
    let took = ran.elapsed().as_secs_f64();
    let finished = Utc::now();
    let a = st.attempt.as_mut().expect("attempt set above");
    a.finished_at = Some(finished);
    a.exit_code = ended.code();
    a.pid = None;
    a.pid_start_ticks = None;
    a.boot_id = None;
    a.result = match ended {
        e if e.success() => AttemptResult::Succeeded,
        Ended::TimedOut => AttemptResult::TimedOut,
        Ended::Interrupted => AttemptResult::Interrupted,
        _ => AttemptResult::Failed,
    };
    entrypoint::prune_logs(&cfg.layout.logs(), std::slice::from_ref(&log_path));

    if ended.success() {
        trees::switch_current(&cfg.layout, &hex)?;
        st.mark_deployed(Deployed {
            commit: hex.clone(),
            subject: info_of.subject.clone(),
            commit_time: info_of.time,
            deployed_at: finished,
        });
        st.failing = None;
        prune_trees(cfg, st)?;
        let from = previous
            .as_deref()
            .map(|p| format!(" (was {})", short(p)))
            .unwrap_or_default();
        return Ok((
            Exit::Ok,
            Label::Applied,
            format!(
                "applied {} {:?}{from}: {} exited 0 after {took:.2}s",
                short(&hex),
                info_of.subject,
                cfg.entrypoint
            ),
        ));
    }

    st.failing = Some(decide::record_failure(st.failing.as_ref(), &hex, finished));
    prune_trees(cfg, st)?;
    let kept = previous
        .as_deref()
        .map(|p| format!("; {} stays deployed", short(p)))
        .unwrap_or_default();
    let how = match ended {
        Ended::Exited(c) => format!("exited {c}"),
        Ended::Signaled(s) => format!("was killed by signal {s}"),
        Ended::TimedOut => format!("timed out after {}", crate::duration::format(cfg.timeout)),
        Ended::Interrupted => "was interrupted".to_string(),
    };
    let retry = st
        .failing
        .as_ref()
        .map(|f| utc(&f.next_retry_at))
        .unwrap_or_default();
    let summary = format!(
        "{} failed for {}: {how} after {took:.2}s{kept}; next retry at {retry}; log: {}",
        cfg.entrypoint,
        short(&hex),
        log_path.display()
    );
    if ended == Ended::Interrupted {
        return Ok((Exit::Interrupted, Label::Interrupted, summary));
    }
    Ok((Exit::EntrypointFailed, Label::Failed, summary))
}

/// Keep the deployed tree, the last failed attempt's tree (for inspection) and
/// previously deployed ones, `keep_trees` in all.
/// Pruning is housekeeping: a failure is reported but never changes the outcome of
/// a pass whose real work is done.
fn prune_trees(cfg: &Config, st: &State) -> Result<()> {
    if let Err(e) = prune_trees_inner(cfg, st) {
        info!("warning: could not prune old trees: {e:#}");
    }
    Ok(())
}

fn prune_trees_inner(cfg: &Config, st: &State) -> Result<()> {
    let mut order: Vec<String> = Vec::new();
    order.extend(st.deployed.iter().map(|d| d.commit.clone()));
    if let Some(a) = &st.attempt {
        if a.result != AttemptResult::Succeeded {
            order.push(a.commit.clone());
        }
    }
    order.extend(st.history.iter().map(|d| d.commit.clone()));
    let mut keep = BTreeSet::new();
    for c in order {
        if keep.len() >= cfg.keep_trees as usize {
            break;
        }
        keep.insert(c);
    }
    trees::prune(&cfg.layout, &keep)
}

fn new_log_path(layout: &Layout, commit: &str, now: DateTime<Utc>) -> Result<PathBuf> {
    let dir = layout.logs();
    std::fs::create_dir_all(&dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let stamp = now.format("%Y%m%dT%H%M%S%.3fZ");
    for n in 0..1000 {
        let suffix = if n == 0 {
            String::new()
        } else {
            format!("-{n}")
        };
        let p = dir.join(format!("{stamp}-{}{suffix}.log", short(commit)));
        if !p.exists() {
            return Ok(p);
        }
    }
    anyhow::bail!("too many logs for {stamp} in {}", dir.display())
}
