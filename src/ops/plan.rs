//! `gitops-run plan`: fetch and show what the next pass would do, changing nothing
//! on the host (no tree, no `current`, no attempt, no `state.json`; only the cache
//! learns the new objects). Exit codes follow `terraform plan -detailed-exitcode`:
//! 0 nothing to do, 2 changes pending, otherwise what a pass would exit with.

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::time::Duration;

use crate::config::PassSettings;
use crate::decide::plan::{self as decide_plan, Plan, Situation};
use crate::decide::{Classification, Reason};
use crate::exit::{fail, Exit};
use crate::git::{Cache, FileChange, History, ObjectId};
use crate::log::{info, short, utc};
use crate::pass::sync::ForThisHost;
use crate::state::freeze::{self, FreezeState};
use crate::state::{self, Layout, State};

/// How long `plan` waits for a running pass to release the lock.
pub const LOCK_WAIT: Duration = Duration::from_secs(10);
/// Commits listed at most.
pub const MAX_COMMITS: usize = 50;
/// Version of the `plan --json` document.
pub const PLAN_SCHEMA: u32 = 1;

#[derive(Debug, Serialize)]
pub struct PlanDoc {
    pub schema: u32,
    pub state_dir: String,
    pub repo: String,
    pub branch: String,
    pub deployed: Option<String>,
    pub remote: String,
    pub classification: Classification,
    /// The host name and the paths it follows (`--path`, expanded); no paths: the
    /// whole tree.
    pub host: String,
    pub paths: Vec<String>,
    pub frozen: Option<FrozenDoc>,
    /// `off`, or the `--verify` mode and where the trusted keys are.
    pub verification: String,
    /// Commits the pass would apply, newest first.
    pub commits: Vec<CommitDoc>,
    pub commits_omitted: usize,
    /// Files changed under the followed paths (all of them without `--path`).
    pub files: Vec<FileChange>,
    pub entrypoint_changed: bool,
    pub reboot_file_changed: bool,
    pub action: ActionDoc,
    pub exit_code: u8,
}

#[derive(Debug, Serialize)]
pub struct FrozenDoc {
    pub reason: String,
    pub by: String,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize)]
pub struct CommitDoc {
    pub commit: String,
    pub subject: String,
    pub author: String,
    pub signature: String,
}

/// What the pass would do.
#[derive(Debug, Serialize)]
pub struct ActionDoc {
    /// `nothing`, `apply`, `invalid`, `unverified`, `wait`, `refuse`, `held`,
    /// `unhealthy`, `reconcile` or `soak`.
    pub kind: &'static str,
    pub reason: Option<Reason>,
    pub until: Option<DateTime<Utc>>,
    pub detail: String,
}

pub fn plan(layout: &Layout, cfg: &PassSettings, json: bool) -> Result<Exit> {
    crate::state::prepare_dir(&layout.root)?;
    let Some(_lock) = crate::pass::lock_within(layout, LOCK_WAIT)? else {
        return Err(fail(
            Exit::Internal,
            format!(
                "a pass holds the lock on {} (it is fetching or applying now); plan again when it has ended",
                layout.lock().display()
            ),
        ));
    };
    let now = Utc::now();
    let keys = cfg
        .verify
        .as_ref()
        .map(|v| crate::pass::verify::load(v, now))
        .transpose()?;
    let loaded = state::load(&layout.state_file())?;
    if loaded.is_none() {
        info!(
            "no pass has run in {} yet: this is what the first pass would do",
            layout.root.display()
        );
    }
    let mut st = loaded.unwrap_or_else(|| State::new(&cfg.repo.redacted, &cfg.branch));
    let frozen = freeze::load(&layout.freeze_file());
    let cache = Cache::open_or_init(&layout.cache(), &cfg.ssh, &cfg.repo)?;
    let deployed = crate::pass::sync::deployed_id(&st)?;
    let remote = cache.fetch(&cfg.repo, &cfg.branch, History::Needed, cfg.fetch_timeout)?;
    let class = crate::pass::sync::classify(cfg, &cache, &mut st, deployed, remote)?;
    let remote_hex = remote.to_string();
    let decision = decide_plan::plan(&Situation {
        class,
        remote: &remote_hex,
        failing: st.failing.as_ref(),
        allow_rewrite: cfg.allow_rewrite,
        force_retry: false,
        frozen: frozen.holds(now),
        reconcile_every: cfg.reconcile_every,
        last_run: st
            .deployed
            .as_ref()
            .map(|d| d.last_run_at.unwrap_or(d.deployed_at)),
        soak_until: cfg.soak.and_then(|d| {
            let seen = st
                .remote
                .as_ref()
                .filter(|r| r.commit == remote_hex)
                .and_then(|r| r.first_seen)
                .unwrap_or(now);
            chrono::Duration::from_std(d)
                .ok()
                .and_then(|d| seen.checked_add_signed(d))
        }),
        unverified: crate::pass::verify::refused_before(&st, &remote_hex, keys.as_ref()),
        now,
    });
    // What the pass would verify before applying: a refusal is what it would do.
    let decision = match (&decision, &keys) {
        (Plan::Apply(_), Some(k)) => {
            match crate::pass::verify::check(cfg, k, &cache, deployed, remote, now)? {
                crate::pass::verify::Verdict::Refused(u) => {
                    st.unverified = Some(u);
                    Plan::Unverified
                }
                crate::pass::verify::Verdict::Signed(_) => decision,
            }
        }
        _ => decision,
    };
    let here = match decision {
        Plan::Apply(reason) => {
            crate::pass::sync::for_this_host(cfg, &cache, deployed, remote, reason)?
        }
        _ => ForThisHost::Applies,
    };
    // The entrypoint as the pass would find it after the checkout.
    let entrypoint_problem = match here {
        ForThisHost::Applies => cache.entrypoint_problem(remote, &cfg.rel(&cfg.entrypoint))?,
        _ => None,
    };
    let exit = match here {
        ForThisHost::Missing(_) => Exit::EntrypointInvalid,
        _ if entrypoint_problem.is_some() => Exit::EntrypointInvalid,
        _ => exit_of(&decision),
    };
    let doc = document(
        layout,
        cfg,
        &cache,
        (deployed, remote, class),
        &frozen,
        (&decision, &here, exit, entrypoint_problem.as_deref()),
        (keys.as_ref(), st.unverified.as_ref()),
    )?;
    let text = if json {
        serde_json::to_string_pretty(&doc)? + "\n"
    } else {
        render(&doc)
    };
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    Ok(exit)
}

fn exit_of(p: &Plan) -> Exit {
    match p {
        Plan::Nothing => Exit::Ok,
        Plan::Apply(_) | Plan::Held(_) => Exit::Pending,
        Plan::Wait { .. } | Plan::Unhealthy { .. } => Exit::EntrypointFailed,
        Plan::Refuse(_) => Exit::Refused,
        Plan::Unverified => Exit::Unverified,
        Plan::Reconcile | Plan::Soaking { .. } => Exit::Pending,
    }
}

/// The signature status of one listed commit, as the next pass would judge it.
fn signature_of(
    cache: &Cache,
    keys: Option<&crate::pass::verify::Keys>,
    deployed: Option<ObjectId>,
    id: &str,
    tip: ObjectId,
) -> String {
    let Some(k) = keys else {
        return "not verified (verification is off)".into();
    };
    let is_tip = ObjectId::from_hex(id.as_bytes()).is_ok_and(|o| o == tip);
    if !is_tip && deployed.is_none() && k.mode == crate::config::VerifyMode::All {
        return "not verified (a first deployment verifies the tip only)".into();
    }
    let verdict = match ObjectId::from_hex(id.as_bytes())
        .map_err(|e| anyhow::anyhow!("{e}"))
        .and_then(|oid| cache.raw_commit(oid))
    {
        Err(e) => format!("cannot be read: {e:#}"),
        Ok(raw) => match k.trusted.verify_commit(&raw) {
            Ok(s) => format!("good: {s}"),
            Err(r) => {
                let key = r
                    .fingerprint
                    .as_deref()
                    .map(|f| format!(" [key {f}]"))
                    .unwrap_or_default();
                format!("refused: {}: {}{key}", r.reason, r.detail)
            }
        },
    };
    if !is_tip && k.mode == crate::config::VerifyMode::Tip {
        format!("{verdict} (not required with --verify tip)")
    } else {
        verdict
    }
}

fn document(
    layout: &Layout,
    cfg: &PassSettings,
    cache: &Cache,
    (deployed, remote, class): (Option<ObjectId>, ObjectId, Classification),
    frozen: &FreezeState,
    (decision, here, exit, entrypoint_problem): (&Plan, &ForThisHost, Exit, Option<&str>),
    (keys, unverified): (
        Option<&crate::pass::verify::Keys>,
        Option<&crate::state::Unverified>,
    ),
) -> Result<PlanDoc> {
    let pending = deployed != Some(remote);
    let (lines, omitted) = if pending {
        cache.commits_between(deployed, remote, MAX_COMMITS)
    } else {
        (Vec::new(), 0)
    };
    let commits = lines
        .into_iter()
        .map(|l| {
            let author = ObjectId::from_hex(l.id.as_bytes())
                .ok()
                .and_then(|id| cache.commit_info(id).ok())
                .map(|i| i.author)
                .unwrap_or_default();
            CommitDoc {
                signature: signature_of(cache, keys, deployed, &l.id, remote),
                commit: l.id,
                subject: l.subject,
                author,
            }
        })
        .collect();
    let mut files = if pending {
        cache.diff_stat(deployed.filter(|d| cache.has_commit(d)), remote)?
    } else {
        Vec::new()
    };
    if !cfg.paths.is_empty() {
        let followed = |p: &str| cfg.paths.iter().any(|dir| crate::git::under(p.into(), dir));
        files.retain(|f| followed(&f.path) || f.old_path.as_deref().is_some_and(followed));
    }
    let touches = |p: &str| {
        files
            .iter()
            .any(|f| f.path == p || f.old_path.as_deref() == Some(p))
    };
    let entrypoint = cfg.rel(&cfg.entrypoint);
    let entrypoint_changed = touches(&entrypoint);
    let reboot_file_changed = touches(&cfg.rel(&cfg.reboot.file));
    let action = match decision {
        Plan::Nothing => ActionDoc {
            kind: "nothing",
            reason: None,
            until: None,
            detail: format!("up to date at {}", short(&remote.to_string())),
        },
        Plan::Apply(reason) => match here {
            ForThisHost::Applies if entrypoint_problem.is_some() => ActionDoc {
                kind: "invalid",
                reason: Some(*reason),
                until: None,
                detail: format!(
                    "fail: {} in {}; nothing would run",
                    entrypoint_problem.unwrap_or_default(),
                    short(&remote.to_string())
                ),
            },
            ForThisHost::Applies => ActionDoc {
                kind: "apply",
                reason: Some(*reason),
                until: None,
                detail: format!(
                    "check out {} and run {entrypoint} (reason {})",
                    short(&remote.to_string()),
                    reason.as_str()
                ),
            },
            ForThisHost::Unchanged => ActionDoc {
                kind: "apply",
                reason: Some(Reason::Unchanged),
                until: None,
                detail: format!(
                    "record {} as deployed without running {entrypoint}: nothing under {} changed for host {}",
                    short(&remote.to_string()),
                    cfg.paths.join(", "),
                    cfg.host
                ),
            },
            ForThisHost::Missing(missing) => ActionDoc {
                kind: "invalid",
                reason: Some(*reason),
                until: None,
                detail: format!(
                    "fail: the path(s) {} that host {} follows (--path) do not exist in {}; nothing would run",
                    missing.join(", "),
                    cfg.host,
                    short(&remote.to_string())
                ),
            },
        },
        Plan::Wait { until, failures } => ActionDoc {
            kind: "wait",
            reason: Some(Reason::Retry),
            until: Some(*until),
            detail: format!(
                "{} failed {failures} time(s); retried at {} (or now with `gitops-run --once`)",
                short(&remote.to_string()),
                utc(until)
            ),
        },
        Plan::Unverified => ActionDoc {
            kind: "unverified",
            reason: None,
            until: None,
            detail: unverified
                .map(|u| crate::pass::verify::refusal_line(u, false))
                .unwrap_or_else(|| "a commit has no good signature".into()),
        },
        Plan::Refuse(c) => ActionDoc {
            kind: "refuse",
            reason: None,
            until: None,
            detail: format!(
                "history was rewritten ({}); nothing would change; deploy it with --allow-rewrite",
                c.as_str()
            ),
        },
        Plan::Unhealthy { failures } => ActionDoc {
            kind: "unhealthy",
            reason: None,
            until: None,
            detail: format!(
                "nothing: {} failed its health check ({failures} time(s)) and the host was rolled back; a newer commit or `gitops-run --once` tries again",
                short(&remote.to_string())
            ),
        },
        Plan::Soaking { until } => ActionDoc {
            kind: "soak",
            reason: None,
            until: Some(*until),
            detail: format!(
                "apply {} at {}, once this host has seen it for --soak (`gitops-run --no-soak` applies it now)",
                short(&remote.to_string()),
                utc(until)
            ),
        },
        Plan::Reconcile => ActionDoc {
            kind: "reconcile",
            reason: Some(Reason::Reconcile),
            until: None,
            detail: format!(
                "run the entrypoint of the deployed {} again to correct drift (--reconcile-every)",
                short(&remote.to_string())
            ),
        },
        Plan::Held(_) => ActionDoc {
            kind: "held",
            reason: None,
            until: match frozen {
                FreezeState::Frozen(f) => f.until,
                _ => None,
            },
            detail: format!("nothing: {}", frozen.describe(&layout.freeze_file())),
        },
    };
    let frozen = match frozen {
        FreezeState::Thawed => None,
        FreezeState::Frozen(f) => Some(FrozenDoc {
            reason: f.reason.clone(),
            by: f.by.clone(),
            since: Some(f.since),
            until: f.until,
        }),
        FreezeState::Unreadable(why) => Some(FrozenDoc {
            reason: format!("the freeze record cannot be read ({why})"),
            by: String::new(),
            since: None,
            until: None,
        }),
    };
    Ok(PlanDoc {
        schema: PLAN_SCHEMA,
        state_dir: layout.root.display().to_string(),
        repo: cfg.repo.redacted.clone(),
        branch: cfg.branch.clone(),
        deployed: deployed.map(|d| d.to_string()),
        remote: remote.to_string(),
        classification: class,
        host: cfg.host.clone(),
        paths: cfg.paths.clone(),
        frozen,
        verification: crate::pass::verify::describe(cfg.verify.as_ref()),
        commits,
        commits_omitted: omitted,
        files,
        entrypoint_changed,
        reboot_file_changed,
        action,
        exit_code: exit.code(),
    })
}

fn render(d: &PlanDoc) -> String {
    let mut out = Vec::new();
    out.push(format!("repo:          {} (branch {})", d.repo, d.branch));
    out.push(format!(
        "deployed:      {}",
        d.deployed.as_deref().map(short).unwrap_or("nothing yet")
    ));
    out.push(format!(
        "remote:        {} ({})",
        short(&d.remote),
        d.classification.as_str()
    ));
    if !d.paths.is_empty() {
        out.push(format!(
            "paths:         {} (host {})",
            d.paths.join(", "),
            d.host
        ));
    }
    if let Some(f) = &d.frozen {
        let until = f
            .until
            .map(|u| format!(" until {}", utc(&u)))
            .unwrap_or_default();
        out.push(format!("frozen:        by {}: {}{until}", f.by, f.reason));
    }
    out.push(format!("verification:  {}", d.verification));
    if !d.commits.is_empty() {
        out.push(format!(
            "commits:       {}{}",
            d.commits.len(),
            if d.commits_omitted > 0 {
                format!(" (and {} more)", d.commits_omitted)
            } else {
                String::new()
            }
        ));
        for c in &d.commits {
            out.push(format!(
                "  {} {}  ({})",
                short(&c.commit),
                c.subject,
                c.author
            ));
            if d.verification != "off" {
                out.push(format!("      signature: {}", c.signature));
            }
        }
    }
    if !d.files.is_empty() {
        let (ins, del): (u32, u32) = d.files.iter().fold((0, 0), |(i, r), f| {
            (i + f.insertions.unwrap_or(0), r + f.deletions.unwrap_or(0))
        });
        out.push(format!(
            "files:         {} changed, {ins} insertions(+), {del} deletions(-)",
            d.files.len()
        ));
        let width = d.files.iter().map(|f| f.path.len()).max().unwrap_or(0);
        for f in &d.files {
            let counts = match (f.insertions, f.deletions) {
                (Some(i), Some(r)) => format!("+{i} -{r}"),
                _ => "binary".into(),
            };
            let letter = &f.change[..1].to_uppercase();
            let mode = f
                .mode_change
                .as_deref()
                .map(|m| format!(" (mode {m})"))
                .unwrap_or_default();
            out.push(format!("  {letter} {:width$} | {counts}{mode}", f.path));
        }
    }
    if d.entrypoint_changed {
        out.push("               the entrypoint changes".into());
    }
    if d.reboot_file_changed {
        out.push("               the reboot request file changes".into());
    }
    out.push(format!(
        "next pass:     {}: {}",
        d.action.kind, d.action.detail
    ));
    out.join("\n") + "\n"
}
