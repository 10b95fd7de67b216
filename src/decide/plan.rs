//! Pure decisions: how the deployed commit relates to the remote one, and what a
//! pass should do about it. No I/O here; time comes in as a parameter.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// How the deployed commit relates to the remote branch tip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Classification {
    /// Nothing deployed yet.
    Initial,
    /// The deployed commit is the remote tip.
    UpToDate,
    /// The remote tip descends from the deployed commit: a normal update.
    Behind,
    /// The remote tip is an ancestor of the deployed commit: the branch was reset backwards.
    RemoteBehind,
    /// Neither descends from the other: history was rewritten (force-push).
    Diverged,
}

impl Classification {
    pub fn as_str(self) -> &'static str {
        match self {
            Classification::Initial => "initial",
            Classification::UpToDate => "up-to-date",
            Classification::Behind => "behind",
            Classification::RemoteBehind => "remote-behind",
            Classification::Diverged => "diverged",
        }
    }
}

/// Classify by merge base. `base` is the merge base of `deployed` and `remote`, if any.
pub fn classify<T: PartialEq>(
    deployed: Option<&T>,
    remote: &T,
    base: Option<&T>,
) -> Classification {
    match deployed {
        None => Classification::Initial,
        Some(d) if d == remote => Classification::UpToDate,
        Some(d) if base == Some(d) => Classification::Behind,
        Some(_) if base == Some(remote) => Classification::RemoteBehind,
        Some(_) => Classification::Diverged,
    }
}

/// First wait after a failure; doubles with each consecutive failure of the same commit.
pub const RETRY_BASE_SECS: i64 = 300;
/// Longest wait between two attempts of the same failing commit.
pub const RETRY_MAX_SECS: i64 = 3600;

/// The wait after `consecutive` failures (1 = the first failure): 5m, 10m, 20m, 40m, then 1h.
pub fn backoff(consecutive: u32) -> Duration {
    let doublings = consecutive.saturating_sub(1).min(20);
    let secs = RETRY_BASE_SECS
        .saturating_mul(1i64 << doublings)
        .min(RETRY_MAX_SECS);
    Duration::seconds(secs)
}

/// Why the entrypoint runs; handed to it as `GITOPS_REASON`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// First deployment on this host.
    Initial,
    /// A commit not tried before.
    New,
    /// A commit that failed before, tried again.
    Retry,
    /// Upstream history was rewritten and `--allow-rewrite` accepted it.
    Rewrite,
    /// `gitops-run rollback`: a previously deployed commit, deployed again by hand.
    Rollback,
    /// A new commit failed its health check: the previously deployed commit's
    /// entrypoint runs again to bring the host back.
    HealthRollback,
    /// Nothing new, but the deployed commit's entrypoint runs again to correct drift
    /// (`--reconcile-every`).
    Reconcile,
    /// A new commit that changes nothing under this host's `--path`s: recorded as
    /// deployed without running the entrypoint.
    Unchanged,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Initial => "initial",
            Reason::New => "new",
            Reason::Retry => "retry",
            Reason::Rewrite => "rewrite",
            Reason::Rollback => "rollback",
            Reason::HealthRollback => "health-rollback",
            Reason::Reconcile => "reconcile",
            Reason::Unchanged => "unchanged",
        }
    }
}

/// A commit that failed and how often, as remembered between passes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failing {
    pub commit: String,
    pub consecutive: u32,
    pub next_retry_at: DateTime<Utc>,
    /// The commit failed its health check and the host was rolled back: it is not
    /// retried on backoff, only by `--once` (or superseded by a newer commit).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unhealthy: bool,
}

/// What this pass does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The remote tip is deployed.
    Nothing,
    /// Check out and run the entrypoint for the remote tip.
    Apply(Reason),
    /// The remote tip failed before and its backoff has not expired.
    Wait { until: DateTime<Utc>, failures: u32 },
    /// History was rewritten upstream; leave everything as it is.
    Refuse(Classification),
    /// The host is frozen: the remote tip differs, and nothing is applied.
    Held(Classification),
    /// The remote tip failed its health check and was rolled back; it is not
    /// retried until `--once` or a newer commit.
    Unhealthy { failures: u32 },
    /// Nothing new: run the deployed commit's entrypoint again to correct drift.
    Reconcile,
    /// A new commit waits until this host has seen it on the branch for `--soak`.
    Soaking { until: DateTime<Utc> },
    /// The remote tip was refused for a commit's signature, by the same trusted
    /// keys: the verdict stands until the tip or the keys change.
    Unverified,
}

/// Everything the plan depends on.
#[derive(Debug, Clone)]
pub struct Situation<'a> {
    pub class: Classification,
    /// The remote tip.
    pub remote: &'a str,
    pub failing: Option<&'a Failing>,
    pub allow_rewrite: bool,
    /// `--once`: retry a failing commit now.
    pub force_retry: bool,
    /// An operator froze the host (or rolled it back, which pins it).
    pub frozen: bool,
    /// `--reconcile-every`, and when the deployed commit's entrypoint last ran
    /// successfully.
    pub reconcile_every: Option<std::time::Duration>,
    pub last_run: Option<DateTime<Utc>>,
    /// When this host will have seen the remote tip for `--soak` (`None`: no soak).
    pub soak_until: Option<DateTime<Utc>>,
    /// The remote tip was refused for a signature by the keys configured now.
    pub unverified: bool,
    pub now: DateTime<Utc>,
}

/// Whether a failure record's retry is due at `now` (a retry time further away than
/// the longest backoff was recorded while the clock was wrong: it is due).
fn retry_due(f: &Failing, now: DateTime<Utc>) -> bool {
    now >= f.next_retry_at
        || f.next_retry_at.signed_duration_since(now) > Duration::seconds(RETRY_MAX_SECS)
}

/// Decide what a pass does. A frozen host applies nothing; a rewrite is refused
/// unless allowed; a failing commit waits for its backoff unless `--once`.
pub fn plan(s: &Situation<'_>) -> Plan {
    let (class, remote, now) = (s.class, s.remote, s.now);
    if class == Classification::UpToDate {
        return reconcile(s);
    }
    if s.frozen {
        return Plan::Held(class);
    }
    let (allow_rewrite, force_retry, failing) = (s.allow_rewrite, s.force_retry, s.failing);
    let fresh = match class {
        Classification::UpToDate => unreachable!("handled above"),
        Classification::RemoteBehind | Classification::Diverged if !allow_rewrite => {
            return Plan::Refuse(class)
        }
        Classification::RemoteBehind | Classification::Diverged => Reason::Rewrite,
        Classification::Initial => Reason::Initial,
        Classification::Behind => Reason::New,
    };
    // A commit soaks before this host applies it, the first deployment excepted
    // (a host with nothing deployed needs the branch's tip, which others soaked).
    let failing_here = failing.is_some_and(|f| f.commit == remote);
    if let Some(until) = s.soak_until.filter(|u| now < *u) {
        if class != Classification::Initial && !failing_here {
            return Plan::Soaking { until };
        }
    }
    // A signature refusal is not a failure to retry: `--once` does not lift it.
    if s.unverified {
        return Plan::Unverified;
    }
    match failing {
        Some(f) if f.commit == remote && f.unhealthy && !force_retry => Plan::Unhealthy {
            failures: f.consecutive,
        },
        Some(f) if f.commit == remote => {
            if force_retry || retry_due(f, now) {
                Plan::Apply(Reason::Retry)
            } else {
                Plan::Wait {
                    until: f.next_retry_at,
                    failures: f.consecutive,
                }
            }
        }
        _ => Plan::Apply(fresh),
    }
}

/// Nothing new on the branch: reconcile when it is due (never while frozen), a
/// failed reconcile again after its backoff.
fn reconcile(s: &Situation<'_>) -> Plan {
    let Some(every) = s.reconcile_every.filter(|_| !s.frozen) else {
        return Plan::Nothing;
    };
    if let Some(f) = s.failing.filter(|f| f.commit == s.remote) {
        return if s.force_retry || retry_due(f, s.now) {
            Plan::Reconcile
        } else {
            Plan::Wait {
                until: f.next_retry_at,
                failures: f.consecutive,
            }
        };
    }
    let every = Duration::from_std(every).unwrap_or(Duration::MAX);
    let due = s
        .last_run
        .and_then(|t| t.checked_add_signed(every))
        .is_none_or(|at| s.now >= at);
    if due {
        Plan::Reconcile
    } else {
        Plan::Nothing
    }
}

/// The failure record after `commit` failed at `now`.
pub fn record_failure(previous: Option<&Failing>, commit: &str, now: DateTime<Utc>) -> Failing {
    let consecutive = match previous {
        Some(f) if f.commit == commit => f.consecutive.saturating_add(1),
        _ => 1,
    };
    Failing {
        commit: commit.to_string(),
        consecutive,
        next_retry_at: now.checked_add_signed(backoff(consecutive)).unwrap_or(now),
        unhealthy: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use Classification::*;

    fn plan(
        class: Classification,
        remote: &str,
        failing: Option<&Failing>,
        allow_rewrite: bool,
        force_retry: bool,
        now: DateTime<Utc>,
    ) -> Plan {
        super::plan(&Situation {
            class,
            remote,
            failing,
            allow_rewrite,
            force_retry,
            frozen: false,
            reconcile_every: None,
            last_run: None,
            soak_until: None,
            unverified: false,
            now,
        })
    }

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn classify_covers_every_relation() {
        assert_eq!(classify(None, &"r", None), Initial);
        assert_eq!(classify(Some(&"a"), &"a", Some(&"a")), UpToDate);
        assert_eq!(classify(Some(&"d"), &"r", Some(&"d")), Behind);
        assert_eq!(classify(Some(&"d"), &"r", Some(&"r")), RemoteBehind);
        assert_eq!(classify(Some(&"d"), &"r", Some(&"b")), Diverged);
        assert_eq!(classify(Some(&"d"), &"r", None), Diverged);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let mins: Vec<i64> = (1..=7).map(|n| backoff(n).num_minutes()).collect();
        assert_eq!(mins, vec![5, 10, 20, 40, 60, 60, 60]);
        assert_eq!(backoff(u32::MAX).num_seconds(), RETRY_MAX_SECS);
        assert_eq!(backoff(0).num_seconds(), RETRY_BASE_SECS);
    }

    #[test]
    fn up_to_date_does_nothing_even_with_a_failure_record() {
        let f = Failing {
            commit: "x".into(),
            consecutive: 3,
            next_retry_at: t(0),
            unhealthy: false,
        };
        assert_eq!(
            plan(UpToDate, "r", Some(&f), false, true, t(10)),
            Plan::Nothing
        );
    }

    #[test]
    fn initial_and_behind_apply_with_their_reason() {
        assert_eq!(
            plan(Initial, "r", None, false, false, t(0)),
            Plan::Apply(Reason::Initial)
        );
        assert_eq!(
            plan(Behind, "r", None, false, false, t(0)),
            Plan::Apply(Reason::New)
        );
    }

    #[test]
    fn rewrites_are_refused_unless_allowed() {
        for c in [RemoteBehind, Diverged] {
            assert_eq!(plan(c, "r", None, false, false, t(0)), Plan::Refuse(c));
            assert_eq!(
                plan(c, "r", None, false, true, t(0)),
                Plan::Refuse(c),
                "--once does not override"
            );
            assert_eq!(
                plan(c, "r", None, true, false, t(0)),
                Plan::Apply(Reason::Rewrite)
            );
        }
    }

    #[test]
    fn failing_commit_waits_for_backoff_then_retries() {
        let f = Failing {
            commit: "r".into(),
            consecutive: 2,
            next_retry_at: t(600),
            unhealthy: false,
        };
        assert_eq!(
            plan(Behind, "r", Some(&f), false, false, t(599)),
            Plan::Wait {
                until: t(600),
                failures: 2
            }
        );
        assert_eq!(
            plan(Behind, "r", Some(&f), false, false, t(600)),
            Plan::Apply(Reason::Retry)
        );
        assert_eq!(
            plan(Initial, "r", Some(&f), false, false, t(601)),
            Plan::Apply(Reason::Retry)
        );
    }

    #[test]
    fn a_retry_time_beyond_the_longest_backoff_is_due() {
        // Recorded while the clock was a year ahead, then the clock was corrected.
        let f = Failing {
            commit: "r".into(),
            consecutive: 3,
            next_retry_at: t(365 * 86_400),
            unhealthy: false,
        };
        assert_eq!(
            plan(Behind, "r", Some(&f), false, false, t(0)),
            Plan::Apply(Reason::Retry)
        );
        let near = Failing {
            next_retry_at: t(RETRY_MAX_SECS),
            ..f
        };
        assert_eq!(
            plan(Behind, "r", Some(&near), false, false, t(0)),
            Plan::Wait {
                until: t(RETRY_MAX_SECS),
                failures: 3
            },
            "exactly the cap still waits"
        );
    }

    #[test]
    fn once_retries_immediately() {
        let f = Failing {
            commit: "r".into(),
            consecutive: 5,
            next_retry_at: t(3600),
            unhealthy: false,
        };
        assert_eq!(
            plan(Behind, "r", Some(&f), false, true, t(0)),
            Plan::Apply(Reason::Retry)
        );
    }

    #[test]
    fn newer_commit_is_not_stuck_behind_a_failing_one() {
        let f = Failing {
            commit: "old".into(),
            consecutive: 4,
            next_retry_at: t(3600),
            unhealthy: false,
        };
        assert_eq!(
            plan(Behind, "new", Some(&f), false, false, t(0)),
            Plan::Apply(Reason::New)
        );
    }

    #[test]
    fn a_frozen_host_applies_nothing_not_even_a_due_retry() {
        let f = Failing {
            commit: "r".into(),
            consecutive: 1,
            next_retry_at: t(0),
            unhealthy: false,
        };
        for class in [Initial, Behind, RemoteBehind, Diverged] {
            let s = Situation {
                class,
                remote: "r",
                failing: Some(&f),
                allow_rewrite: true,
                force_retry: true,
                frozen: true,
                reconcile_every: None,
                last_run: None,
                soak_until: None,
                unverified: false,
                now: t(10),
            };
            assert_eq!(super::plan(&s), Plan::Held(class));
        }
        let up = Situation {
            class: UpToDate,
            remote: "r",
            failing: None,
            allow_rewrite: false,
            force_retry: false,
            frozen: true,
            reconcile_every: Some(std::time::Duration::from_secs(60)),
            last_run: None,
            soak_until: None,
            unverified: false,
            now: t(0),
        };
        assert_eq!(super::plan(&up), Plan::Nothing);
    }

    fn situation<'a>(
        class: Classification,
        failing: Option<&'a Failing>,
        last: Option<i64>,
        now: i64,
    ) -> Situation<'a> {
        Situation {
            class,
            remote: "r",
            failing,
            allow_rewrite: false,
            force_retry: false,
            frozen: false,
            reconcile_every: Some(std::time::Duration::from_secs(3600)),
            last_run: last.map(t),
            soak_until: None,
            unverified: false,
            now: t(now),
        }
    }

    #[test]
    fn reconcile_runs_when_due_and_never_while_frozen_or_before_a_new_commit() {
        assert_eq!(
            super::plan(&situation(UpToDate, None, Some(0), 3599)),
            Plan::Nothing
        );
        assert_eq!(
            super::plan(&situation(UpToDate, None, Some(0), 3600)),
            Plan::Reconcile
        );
        assert_eq!(
            super::plan(&situation(UpToDate, None, None, 0)),
            Plan::Reconcile
        );
        let frozen = Situation {
            frozen: true,
            ..situation(UpToDate, None, Some(0), 9000)
        };
        assert_eq!(super::plan(&frozen), Plan::Nothing);
        let off = Situation {
            reconcile_every: None,
            ..situation(UpToDate, None, Some(0), 9000)
        };
        assert_eq!(super::plan(&off), Plan::Nothing);
        assert_eq!(
            super::plan(&situation(Behind, None, Some(0), 9000)),
            Plan::Apply(Reason::New),
            "a new commit takes precedence over a due reconcile"
        );
    }

    #[test]
    fn a_failed_reconcile_waits_for_its_backoff() {
        let f = record_failure(None, "r", t(0));
        assert_eq!(
            super::plan(&situation(UpToDate, Some(&f), Some(0), 60)),
            Plan::Wait {
                until: t(300),
                failures: 1
            }
        );
        assert_eq!(
            super::plan(&situation(UpToDate, Some(&f), Some(0), 300)),
            Plan::Reconcile
        );
    }

    #[test]
    fn an_unhealthy_commit_is_not_retried_on_backoff_but_by_once_or_a_newer_commit() {
        let f = Failing {
            unhealthy: true,
            ..record_failure(None, "r", t(0))
        };
        assert_eq!(
            super::plan(&situation(Behind, Some(&f), None, 99_999)),
            Plan::Unhealthy { failures: 1 }
        );
        let once = Situation {
            force_retry: true,
            ..situation(Behind, Some(&f), None, 10)
        };
        assert_eq!(super::plan(&once), Plan::Apply(Reason::Retry));
        let newer = Situation {
            remote: "newer",
            ..situation(Behind, Some(&f), None, 10)
        };
        assert_eq!(super::plan(&newer), Plan::Apply(Reason::New));
    }

    #[test]
    fn a_new_commit_soaks_but_a_first_deployment_does_not() {
        let soaking = Situation {
            soak_until: Some(t(3600)),
            ..situation(Behind, None, None, 10)
        };
        assert_eq!(super::plan(&soaking), Plan::Soaking { until: t(3600) });
        let done = Situation {
            soak_until: Some(t(3600)),
            ..situation(Behind, None, None, 3600)
        };
        assert_eq!(super::plan(&done), Plan::Apply(Reason::New));
        let first = Situation {
            soak_until: Some(t(3600)),
            ..situation(Initial, None, None, 10)
        };
        assert_eq!(super::plan(&first), Plan::Apply(Reason::Initial));
    }

    #[test]
    fn a_tip_refused_for_its_signature_stays_refused_even_with_once() {
        let f = record_failure(None, "r", t(0));
        for (class, failing, once) in [
            (Behind, None, false),
            (Behind, None, true),
            (Initial, None, false),
            (Behind, Some(&f), true),
        ] {
            let s = Situation {
                unverified: true,
                force_retry: once,
                ..situation(class, failing, None, 10)
            };
            assert_eq!(super::plan(&s), Plan::Unverified, "{class:?} once={once}");
        }
        // What comes before it still does: a rewrite is refused as a rewrite, a
        // frozen host is held, a soaking tip soaks, an up-to-date host does nothing.
        let rewrite = Situation {
            unverified: true,
            ..situation(Diverged, None, None, 10)
        };
        assert_eq!(super::plan(&rewrite), Plan::Refuse(Diverged));
        let frozen = Situation {
            unverified: true,
            frozen: true,
            ..situation(Behind, None, None, 10)
        };
        assert_eq!(super::plan(&frozen), Plan::Held(Behind));
        let soaking = Situation {
            unverified: true,
            soak_until: Some(t(3600)),
            ..situation(Behind, None, None, 10)
        };
        assert_eq!(super::plan(&soaking), Plan::Soaking { until: t(3600) });
        let same = Situation {
            unverified: true,
            ..situation(UpToDate, None, Some(0), 10)
        };
        assert_eq!(super::plan(&same), Plan::Nothing);
    }

    #[test]
    fn failure_record_counts_per_commit() {
        let first = record_failure(None, "a", t(0));
        assert_eq!((first.consecutive, first.next_retry_at), (1, t(300)));
        let second = record_failure(Some(&first), "a", t(300));
        assert_eq!((second.consecutive, second.next_retry_at), (2, t(900)));
        let other = record_failure(Some(&second), "b", t(400));
        assert_eq!((other.consecutive, other.next_retry_at), (1, t(700)));
    }
}
