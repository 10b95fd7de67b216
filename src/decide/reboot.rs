//! Timestamped reboot requests: parsing the `reboot-at` file, the decision table
//! against the kernel's boot time, and the review of a pass's request with the
//! notification it is worth. The caller reads the file, the boot time and the
//! machine id; nothing here does I/O.

use chrono::{DateTime, Duration, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::{Kind, Signal};
use crate::log::utc;

/// How many carried-out requests `state.json` remembers.
pub const MAX_DONE: usize = 20;

/// Parse a request file: one timestamp, RFC 3339 or `YYYY-MM-DD HH:MM:SS` in `zone`
/// (the host's local zone in production). Blank lines and `#` comments are ignored.
pub fn parse_request<Tz: TimeZone>(text: &str, zone: &Tz) -> Result<DateTime<Utc>, String> {
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let Some(line) = lines.next() else {
        return Err("the file holds no timestamp".into());
    };
    if let Some(extra) = lines.next() {
        return Err(format!(
            "expected one timestamp, found a second line {extra:?}"
        ));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(line) {
        return in_range(line, t.naive_utc()).map(|_| t.with_timezone(&Utc));
    }
    let naive = NaiveDateTime::parse_from_str(line, "%Y-%m-%d %H:%M:%S").map_err(|_| {
        format!("{line:?} is not a timestamp: use RFC 3339 (2026-11-21T19:05:00Z) or YYYY-MM-DD HH:MM:SS in local time")
    })?;
    in_range(line, naive)?;
    local_to_utc(&naive, zone).ok_or_else(|| {
        format!(
            "{line:?} does not exist in the local time zone (skipped by a daylight saving change); use RFC 3339 with an offset"
        )
    })
}

/// Years a reboot request may name. Times outside cannot be meant, and near the
/// ends of what the calendar types hold, adding a splay or a grace would overflow.
pub const REQUEST_YEARS: std::ops::RangeInclusive<i32> = 1970..=9999;

fn in_range(line: &str, t: NaiveDateTime) -> Result<(), String> {
    use chrono::Datelike;
    if REQUEST_YEARS.contains(&t.year()) {
        Ok(())
    } else {
        Err(format!(
            "{line:?} is out of range: a reboot time must lie between the years {} and {}",
            REQUEST_YEARS.start(),
            REQUEST_YEARS.end()
        ))
    }
}

/// The instant a local wall-clock time stands for in `zone`. Around a daylight saving
/// change a time can exist twice (clocks went back: the first occurrence counts) or
/// not at all (clocks went forward: `None`). Worked out from UTC offsets, which every
/// zone answers reliably, rather than from the zone's own local-time lookup.
pub fn local_to_utc<Tz: TimeZone>(naive: &NaiveDateTime, zone: &Tz) -> Option<DateTime<Utc>> {
    use chrono::Offset;
    let as_utc = naive.and_utc();
    let shift = |t: DateTime<Utc>, secs: i64| t.checked_add_signed(Duration::seconds(secs));
    let mut candidates: Vec<DateTime<Utc>> = [-1i64, 0, 1]
        .iter()
        .filter_map(|days| shift(as_utc, days * 86_400))
        .map(|near| zone.offset_from_utc_datetime(&near.naive_utc()).fix())
        .filter_map(|off| shift(as_utc, -i64::from(off.local_minus_utc())))
        .filter(|u| {
            let off = zone.offset_from_utc_datetime(&u.naive_utc()).fix();
            shift(*u, i64::from(off.local_minus_utc())) == Some(as_utc)
        })
        .collect();
    candidates.sort();
    candidates.into_iter().next()
}

/// The host's fixed delay within `splay`, derived from its machine id: the same host
/// always gets the same delay, and a fleet spreads over the window.
pub fn splay_offset(machine_id: &str, splay: std::time::Duration) -> Duration {
    let window = splay.as_secs();
    if window == 0 {
        return Duration::zero();
    }
    // FNV-1a: stable across Rust versions and platforms, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in machine_id.trim().bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    Duration::seconds((hash % window.saturating_add(1)) as i64)
}

/// What to do about a valid request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// T <= boot time: the host has booted since the requested time.
    Spent,
    /// now < T: wait; the first pass at or after T reboots.
    Pending,
    /// boot < T <= now <= T + grace: reboot now.
    RebootNow,
    /// T + grace < now: too late; warn instead of rebooting at a surprising time.
    Missed,
    /// This request was carried out already (recorded in the state file).
    Done,
}

/// The decision table. `requested` is the time in the file, `effective` that time
/// plus the host's splay; `done` lists requests (by `requested`) carried out before.
pub fn decide(
    requested: DateTime<Utc>,
    effective: DateTime<Utc>,
    boot: DateTime<Utc>,
    now: DateTime<Utc>,
    grace: Duration,
    done: &[DateTime<Utc>],
) -> Verdict {
    if done.contains(&requested) {
        Verdict::Done
    } else if effective <= boot {
        Verdict::Spent
    } else if now < effective {
        Verdict::Pending
    } else if effective
        .checked_add_signed(grace)
        .is_none_or(|end| now <= end)
    {
        Verdict::RebootNow
    } else {
        Verdict::Missed
    }
}

/// What became of the request in the deployed tree; stored in `state.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RequestStatus {
    Pending,
    Rebooting,
    Done,
    Spent,
    Missed,
    Invalid,
    /// The reboot command failed or hung `MAX_REBOOT_TRIES` times.
    Failed,
    /// Due, but the host is frozen: it waits for the freeze to end.
    Held,
}

impl RequestStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestStatus::Pending => "pending",
            RequestStatus::Rebooting => "rebooting",
            RequestStatus::Done => "done",
            RequestStatus::Spent => "spent",
            RequestStatus::Missed => "missed",
            RequestStatus::Invalid => "invalid",
            RequestStatus::Failed => "failed",
            RequestStatus::Held => "held",
        }
    }
}

impl From<Verdict> for RequestStatus {
    fn from(v: Verdict) -> RequestStatus {
        match v {
            Verdict::Spent => RequestStatus::Spent,
            Verdict::Pending => RequestStatus::Pending,
            Verdict::RebootNow => RequestStatus::Rebooting,
            Verdict::Missed => RequestStatus::Missed,
            Verdict::Done => RequestStatus::Done,
        }
    }
}

/// The request found in the deployed tree and what was made of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebootRequest {
    pub status: RequestStatus,
    pub requested_at: Option<DateTime<Utc>>,
    pub effective_at: Option<DateTime<Utc>>,
    pub detail: String,
}

/// Reboot requests: the one seen by the last pass, and those carried out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebootState {
    pub request: Option<RebootRequest>,
    /// Requested times of reboots carried out, newest first: never carried out twice.
    #[serde(default)]
    pub done: Vec<DateTime<Utc>>,
    /// The last reboot command started, and whether it is still unconfirmed.
    #[serde(default)]
    pub started: Option<Started>,
}

/// How often the reboot command is run for one request before giving up on it.
pub const MAX_REBOOT_TRIES: u32 = 3;

/// A reboot command run for a request, with the boot it was run in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    pub requested: DateTime<Utc>,
    pub at: DateTime<Utc>,
    pub boot_id: Option<String>,
    pub boot_time: Option<DateTime<Utc>>,
    /// Times the command was run for this request.
    pub tries: u32,
    /// True from the start of the command until it returned: a pass that finds it
    /// true was stopped while the command ran (a shutdown, or a hang).
    pub open: bool,
}

/// Record that the reboot command is about to run for `requested`.
pub fn start(
    state: &RebootState,
    requested: DateTime<Utc>,
    now: DateTime<Utc>,
    boot_id: Option<String>,
    boot_time: Option<DateTime<Utc>>,
) -> RebootState {
    let tries = match &state.started {
        Some(s) if s.requested == requested => s.tries.saturating_add(1),
        _ => 1,
    };
    RebootState {
        started: Some(Started {
            requested,
            at: now,
            boot_id,
            boot_time,
            tries,
            open: true,
        }),
        ..state.clone()
    }
}

/// The reboot command for `requested` returned; `failure` says why it failed, if it
/// did. A failure takes the request back from the done list so it is tried again,
/// up to `MAX_REBOOT_TRIES` times.
pub fn returned(
    state: &RebootState,
    requested: DateTime<Utc>,
    failure: Option<&str>,
) -> RebootState {
    let mut next = state.clone();
    let tries = next.started.as_ref().map_or(1, |s| s.tries);
    if let Some(s) = next.started.as_mut() {
        s.open = false;
    }
    let Some(why) = failure else {
        return next;
    };
    let give_up = tries >= MAX_REBOOT_TRIES;
    if !give_up {
        next.done.retain(|d| *d != requested);
    }
    if let Some(r) = next.request.as_mut() {
        if give_up {
            r.status = RequestStatus::Failed;
            r.detail = format!("the reboot command failed {tries} times, the last time: {why}; not trying again for this request");
        } else {
            r.status = RequestStatus::Pending;
            r.detail = format!("the reboot command failed: {why}; tried again by the next pass");
        }
    }
    next
}

/// A pass's look at a reboot command an earlier pass started and did not see
/// return: the host rebooted since (its boot id or boot time changed), or it did
/// not, and the command failed. Pure: the boot facts come in as values.
pub fn follow_up(
    state: &RebootState,
    boot_id: Option<&str>,
    boot_time: Option<DateTime<Utc>>,
) -> (RebootState, Signal, Vec<Note>) {
    let Some(s) = state.started.as_ref().filter(|s| s.open) else {
        return (state.clone(), Signal::Quiet, Vec::new());
    };
    let changed =
        |then: Option<&str>, now: Option<&str>| matches!((then, now), (Some(a), Some(b)) if a != b);
    let rebooted = changed(s.boot_id.as_deref(), boot_id)
        || matches!((s.boot_time, boot_time), (Some(a), Some(b)) if a != b);
    if rebooted {
        let mut next = state.clone();
        next.started = None;
        let note = Note::Debug(format!(
            "the host rebooted after the reboot command for {} started",
            utc(&s.requested)
        ));
        return (next, Signal::Quiet, vec![note]);
    }
    let why = format!(
        "the reboot command started at {} did not complete and the host did not reboot",
        utc(&s.at)
    );
    let next = returned(state, s.requested, Some(&why));
    let note = Note::Warn(format!(
        "{why}; {}",
        match next.request.as_ref().map(|r| r.status) {
            Some(RequestStatus::Failed) => "giving up on this request",
            _ => "trying again",
        }
    ));
    let signal = Signal::Bad(
        Kind::RebootFailed,
        format!("reboot-failed:{}", s.requested.to_rfc3339()),
    );
    (next, signal, vec![note])
}

/// The request file of the deployed tree, as the caller found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestFile {
    /// Nothing is deployed, so there is no tree to look in.
    NoDeployment,
    /// The deployed tree has no request file.
    Absent,
    /// The deployed tree is not on disk (and could not be restored): the request
    /// cannot be read, which says nothing about it.
    TreeMissing,
    /// The file exists but cannot be used (path outside the tree, unreadable).
    Unusable(String),
    /// The file's text.
    Text(String),
}

/// How to interpret the request and when to act on it.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub grace: std::time::Duration,
    pub splay: std::time::Duration,
    /// The host is frozen: a due reboot waits (it is not carried out, nor
    /// recorded as done) until the freeze ends, within its grace.
    pub held: bool,
}

/// What the end of the pass must do about the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Nothing,
    /// The request is invalid: a clean pass exits 8.
    Invalid,
    /// Reboot now; the request is already recorded as done.
    Reboot {
        requested: DateTime<Utc>,
    },
}

/// A line the caller should log, and at which level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    Info(String),
    Warn(String),
    Debug(String),
}

fn invalid_review(mut state: RebootState, notes: Vec<Note>, msg: String) -> Review {
    state.request = Some(RebootRequest {
        status: RequestStatus::Invalid,
        requested_at: None,
        effective_at: None,
        detail: msg.clone(),
    });
    Review {
        state,
        action: Action::Invalid,
        signal: Signal::Bad(Kind::RebootInvalid, format!("reboot-invalid:{msg}")),
        notes,
    }
}

/// The review of a pass's reboot request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Review {
    pub state: RebootState,
    pub action: Action,
    pub signal: Signal,
    pub notes: Vec<Note>,
}

/// Review the request file against the boot time and the record of earlier passes.
/// A reboot due now is recorded as done in the returned state before it is carried
/// out, so it can never be carried out twice. `zone` interprets local times.
#[allow(clippy::too_many_arguments)]
pub fn review<Tz: TimeZone>(
    file: RequestFile,
    file_name: &str,
    zone: &Tz,
    boot: Result<DateTime<Utc>, String>,
    machine_id: &str,
    now: DateTime<Utc>,
    policy: Policy,
    before: &RebootState,
) -> Review {
    let previous = before.request.as_ref();
    let mut state = RebootState {
        request: None,
        ..before.clone()
    };
    let mut notes = Vec::new();
    let quiet = |state, notes| Review {
        state,
        action: Action::Nothing,
        signal: Signal::Quiet,
        notes,
    };
    let text = match file {
        RequestFile::NoDeployment => return quiet(state, notes),
        RequestFile::Absent => {
            if let Some(p) = previous.filter(|p| p.status == RequestStatus::Pending) {
                let at = p.effective_at.map(|t| t.to_rfc3339()).unwrap_or_default();
                notes.push(Note::Info(format!(
                    "the reboot request was removed; the reboot pending at {at} is cancelled"
                )));
            }
            return quiet(state, notes);
        }
        RequestFile::TreeMissing => {
            notes.push(Note::Warn(
                "the deployed tree is missing, so its reboot request cannot be read; it is reviewed again once the tree is restored".into(),
            ));
            return quiet(before.clone(), notes);
        }
        RequestFile::Unusable(msg) => Err(msg),
        RequestFile::Text(text) => Ok(text),
    };
    let invalid = |state, mut notes: Vec<Note>, msg: String| {
        notes.push(Note::Info(format!(
            "invalid reboot request {file_name}: {msg}; not rebooting"
        )));
        invalid_review(state, notes, msg)
    };
    let parsed = text
        .and_then(|t| parse_request(&t, zone))
        .and_then(|requested| {
            boot.map(|b| (requested, b))
                .map_err(|msg| format!("cannot tell the boot time: {msg}"))
        });
    let (requested, boot) = match parsed {
        Ok(v) => v,
        Err(msg) => return invalid(state, notes, msg),
    };
    let Some(effective) = requested.checked_add_signed(splay_offset(machine_id, policy.splay))
    else {
        return invalid(
            state,
            notes,
            format!(
                "{} plus the reboot splay is beyond the last representable time",
                utc(&requested)
            ),
        );
    };
    let grace = Duration::from_std(policy.grace).unwrap_or(Duration::MAX);
    let verdict = decide(requested, effective, boot, now, grace, &before.done);
    let detail = match verdict {
        Verdict::Spent => format!(
            "the host booted at {}, after the requested {}",
            utc(&boot),
            utc(&effective)
        ),
        Verdict::Pending => format!("the first pass at or after {} reboots", utc(&effective)),
        Verdict::RebootNow => format!(
            "{} is due and the host booted before it, at {}",
            utc(&effective),
            utc(&boot)
        ),
        Verdict::Missed => format!(
            "not rebooting: {} passed more than the grace of {} ago",
            utc(&effective),
            crate::duration::format(policy.grace)
        ),
        Verdict::Done => format!("carried out for the request {}", utc(&requested)),
    };
    let gave_up = previous
        .filter(|p| p.status == RequestStatus::Failed && p.requested_at == Some(requested))
        .cloned();
    if let (Verdict::Done, Some(failed)) = (verdict, gave_up) {
        state.request = Some(failed);
        return quiet(state, notes);
    }
    if verdict == Verdict::RebootNow && policy.held {
        notes.push(Note::Info(format!(
            "reboot requested for {} is due, but the host is frozen: it waits for the freeze to end (within its grace)",
            utc(&requested)
        )));
        state.request = Some(RebootRequest {
            status: RequestStatus::Held,
            requested_at: Some(requested),
            effective_at: Some(effective),
            detail: format!("{} is due; held by the freeze", utc(&effective)),
        });
        return quiet(state, notes);
    }
    let status = RequestStatus::from(verdict);
    let changed = previous.map(|p| (p.status, p.effective_at)) != Some((status, Some(effective)));
    match verdict {
        Verdict::Pending => {
            let old = previous
                .filter(|p| p.status == RequestStatus::Pending)
                .and_then(|p| p.effective_at);
            if let Some(old) = old.filter(|o| *o != effective) {
                notes.push(Note::Info(format!(
                    "reboot moved from {} to {}",
                    utc(&old),
                    utc(&effective)
                )));
            }
            notes.push(Note::Info(format!("reboot pending: {detail}")));
        }
        Verdict::Missed if changed => notes.push(Note::Warn(format!(
            "reboot request {} missed: {detail}",
            utc(&requested)
        ))),
        Verdict::RebootNow => notes.push(Note::Info(format!(
            "reboot requested for {}: {detail}",
            utc(&requested)
        ))),
        _ => notes.push(Note::Debug(format!(
            "reboot request {}: {}: {detail}",
            utc(&requested),
            status.as_str()
        ))),
    }
    state.request = Some(RebootRequest {
        status,
        requested_at: Some(requested),
        effective_at: Some(effective),
        detail,
    });
    let (action, signal) = match verdict {
        Verdict::RebootNow => {
            state.done.insert(0, requested);
            state.done.truncate(MAX_DONE);
            (Action::Reboot { requested }, Signal::Good(Kind::Rebooting))
        }
        Verdict::Pending if changed => (Action::Nothing, Signal::Good(Kind::RebootScheduled)),
        Verdict::Missed if changed => (Action::Nothing, Signal::Good(Kind::RebootMissed)),
        _ => (Action::Nothing, Signal::Quiet),
    };
    Review {
        state,
        action,
        signal,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::FixedOffset;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    const B: &str = "2026-11-21T10:00:00Z";

    fn verdict(requested: &str, now: &str, done: &[&str]) -> Verdict {
        let done: Vec<_> = done.iter().map(|d| t(d)).collect();
        decide(
            t(requested),
            t(requested),
            t(B),
            t(now),
            Duration::hours(1),
            &done,
        )
    }

    #[test]
    fn table_rows_and_their_boundaries() {
        // T <= B: spent, whatever now is.
        assert_eq!(
            verdict("2026-11-21T09:00:00Z", "2026-11-21T09:30:00Z", &[]),
            Verdict::Spent
        );
        assert_eq!(
            verdict(B, "2026-11-21T10:00:00Z", &[]),
            Verdict::Spent,
            "T == B is spent"
        );
        assert_eq!(verdict(B, "2026-11-21T12:00:00Z", &[]), Verdict::Spent);
        // N < T: pending.
        assert_eq!(
            verdict("2026-11-21T11:00:00Z", "2026-11-21T10:59:59Z", &[]),
            Verdict::Pending
        );
        // B < T <= N <= T+G: reboot now, both ends included.
        assert_eq!(
            verdict("2026-11-21T11:00:00Z", "2026-11-21T11:00:00Z", &[]),
            Verdict::RebootNow,
            "T == N"
        );
        assert_eq!(
            verdict("2026-11-21T11:00:00Z", "2026-11-21T11:30:00Z", &[]),
            Verdict::RebootNow
        );
        assert_eq!(
            verdict("2026-11-21T11:00:00Z", "2026-11-21T12:00:00Z", &[]),
            Verdict::RebootNow,
            "N == T+G"
        );
        assert_eq!(
            verdict("2026-11-21T10:00:01Z", "2026-11-21T10:00:01Z", &[]),
            Verdict::RebootNow,
            "T just after B"
        );
        // T+G < N: missed.
        assert_eq!(
            verdict("2026-11-21T11:00:00Z", "2026-11-21T12:00:01Z", &[]),
            Verdict::Missed
        );
    }

    #[test]
    fn a_request_carried_out_is_never_repeated() {
        // The boot time reads wrong (container, clock jump): the state record still holds.
        for now in [
            "2026-11-21T11:00:00Z",
            "2026-11-21T11:59:00Z",
            "2026-11-21T13:00:00Z",
        ] {
            assert_eq!(
                verdict("2026-11-21T11:00:00Z", now, &["2026-11-21T11:00:00Z"]),
                Verdict::Done
            );
        }
        assert_eq!(
            verdict(
                "2026-11-21T11:00:00Z",
                "2026-11-21T11:00:00Z",
                &["2026-11-20T11:00:00Z"]
            ),
            Verdict::RebootNow
        );
    }

    #[test]
    fn clock_jumps_do_not_cause_surprise_reboots() {
        // Clock jumped backwards before T: pending, not a reboot.
        assert_eq!(
            verdict("2026-11-21T11:00:00Z", "2026-11-20T00:00:00Z", &[]),
            Verdict::Pending
        );
        // Clock jumped far forward past the grace: missed, not a reboot.
        assert_eq!(
            verdict("2026-11-21T11:00:00Z", "2027-01-01T00:00:00Z", &[]),
            Verdict::Missed
        );
    }

    #[test]
    fn splay_moves_the_effective_time_only() {
        let req = t("2026-11-21T11:00:00Z");
        let eff = req + Duration::minutes(10);
        let v = |now: &str| decide(req, eff, t(B), t(now), Duration::hours(1), &[]);
        assert_eq!(v("2026-11-21T11:05:00Z"), Verdict::Pending);
        assert_eq!(v("2026-11-21T11:10:00Z"), Verdict::RebootNow);
        assert_eq!(v("2026-11-21T12:10:00Z"), Verdict::RebootNow);
        assert_eq!(v("2026-11-21T12:10:01Z"), Verdict::Missed);
        // Done is keyed by the requested time, so splay cannot make it run twice.
        assert_eq!(
            decide(
                req,
                eff,
                t(B),
                t("2026-11-21T11:30:00Z"),
                Duration::hours(1),
                &[req]
            ),
            Verdict::Done
        );
    }

    #[test]
    fn splay_is_stable_per_host_and_within_the_window() {
        let w = std::time::Duration::from_secs(600);
        assert_eq!(splay_offset("abc", w), splay_offset("abc\n", w));
        assert_eq!(
            splay_offset("abc", std::time::Duration::ZERO),
            Duration::zero()
        );
        let offsets: std::collections::BTreeSet<i64> = (0..50)
            .map(|i| splay_offset(&format!("host-{i}"), w).num_seconds())
            .collect();
        assert!(offsets.iter().all(|s| (0..=600).contains(s)));
        assert!(offsets.len() > 40, "a fleet spreads out: {offsets:?}");
    }

    #[test]
    fn parses_rfc3339_with_any_offset() {
        let utc = FixedOffset::east_opt(0).unwrap();
        assert_eq!(
            parse_request("2026-11-21T19:05:00Z", &utc),
            Ok(t("2026-11-21T19:05:00Z"))
        );
        assert_eq!(
            parse_request("2026-11-21T20:05:00+01:00\n", &utc),
            Ok(t("2026-11-21T19:05:00Z"))
        );
        assert_eq!(
            parse_request(
                "# reboot for the kernel update\n\n2026-11-21T19:05:00-05:00\n",
                &utc
            ),
            Ok(t("2026-11-22T00:05:00Z"))
        );
    }

    #[test]
    fn local_form_uses_the_given_zone() {
        let plus2 = FixedOffset::east_opt(2 * 3600).unwrap();
        assert_eq!(
            parse_request("2026-11-21 20:05:00", &plus2),
            Ok(t("2026-11-21T18:05:00Z"))
        );
        let minus7 = FixedOffset::west_opt(7 * 3600).unwrap();
        assert_eq!(
            parse_request("2026-11-21 20:05:00", &minus7),
            Ok(t("2026-11-22T03:05:00Z"))
        );
    }

    #[test]
    fn malformed_requests_are_errors() {
        let utc = FixedOffset::east_opt(0).unwrap();
        for bad in [
            "",
            "# only a comment\n",
            "tomorrow",
            "2026-11-21",
            "2026-13-01 00:00:00",
            "2026-11-21T19:05:00Z\n2026-11-22T19:05:00Z",
        ] {
            assert!(parse_request(bad, &utc).is_err(), "{bad:?}");
        }
    }

    fn rev(file: RequestFile, now: &str, before: &RebootState) -> Review {
        review(
            file,
            "reboot-at",
            &Utc,
            Ok(t(B)),
            "machine",
            t(now),
            Policy {
                grace: std::time::Duration::from_secs(3600),
                splay: std::time::Duration::ZERO,
                held: false,
            },
            before,
        )
    }

    fn text(s: &str) -> RequestFile {
        RequestFile::Text(s.to_string())
    }

    #[test]
    fn review_without_a_deployment_or_a_file_is_quiet() {
        let r = rev(RequestFile::NoDeployment, B, &RebootState::default());
        assert_eq!(
            (r.action, r.signal, r.state.request),
            (Action::Nothing, Signal::Quiet, None)
        );
        let r = rev(RequestFile::Absent, B, &RebootState::default());
        assert_eq!(
            (r.action, r.signal, r.notes.len()),
            (Action::Nothing, Signal::Quiet, 0)
        );
    }

    #[test]
    fn review_of_a_removed_pending_request_says_it_is_cancelled() {
        let before = rev(
            text("2026-11-21T11:00:00Z"),
            "2026-11-21T10:30:00Z",
            &RebootState::default(),
        )
        .state;
        let r = rev(RequestFile::Absent, "2026-11-21T10:35:00Z", &before);
        assert_eq!(r.signal, Signal::Quiet);
        assert!(
            matches!(&r.notes[..], [Note::Info(m)] if m.contains("cancelled")),
            "{:?}",
            r.notes
        );
    }

    #[test]
    fn review_without_the_deployed_tree_keeps_what_it_knew() {
        let before = rev(
            text("2026-11-21T11:00:00Z"),
            "2026-11-21T10:30:00Z",
            &RebootState::default(),
        )
        .state;
        let r = rev(RequestFile::TreeMissing, "2026-11-21T10:35:00Z", &before);
        assert_eq!((r.action, r.signal), (Action::Nothing, Signal::Quiet));
        assert_eq!(
            r.state, before,
            "a pending request is not cancelled by a missing tree"
        );
    }

    #[test]
    fn review_of_an_invalid_request_is_bad_news_keyed_by_the_reason() {
        for file in [
            text("tomorrow"),
            RequestFile::Unusable("outside the tree".into()),
        ] {
            let r = rev(file, B, &RebootState::default());
            assert_eq!(r.action, Action::Invalid);
            let Signal::Bad(Kind::RebootInvalid, key) = &r.signal else {
                panic!("{:?}", r.signal)
            };
            assert!(key.starts_with("reboot-invalid:"), "{key}");
            assert_eq!(r.state.request.unwrap().status, RequestStatus::Invalid);
        }
    }

    #[test]
    fn review_without_a_boot_time_is_invalid_not_a_reboot() {
        let r = review(
            text("2026-11-21T11:00:00Z"),
            "reboot-at",
            &Utc,
            Err("no /proc".into()),
            "m",
            t("2026-11-21T11:00:00Z"),
            Policy {
                grace: std::time::Duration::from_secs(3600),
                splay: std::time::Duration::ZERO,
                held: false,
            },
            &RebootState::default(),
        );
        assert_eq!(r.action, Action::Invalid);
    }

    #[test]
    fn review_announces_a_pending_reboot_once_and_again_when_moved() {
        let r1 = rev(
            text("2026-11-21T11:00:00Z"),
            "2026-11-21T10:30:00Z",
            &RebootState::default(),
        );
        assert_eq!(r1.signal, Signal::Good(Kind::RebootScheduled));
        let r2 = rev(
            text("2026-11-21T11:00:00Z"),
            "2026-11-21T10:35:00Z",
            &r1.state,
        );
        assert_eq!(
            r2.signal,
            Signal::Quiet,
            "the same request is not announced twice"
        );
        let r3 = rev(
            text("2026-11-21T12:00:00Z"),
            "2026-11-21T10:40:00Z",
            &r2.state,
        );
        assert_eq!(r3.signal, Signal::Good(Kind::RebootScheduled));
        assert!(r3
            .notes
            .iter()
            .any(|n| matches!(n, Note::Info(m) if m.contains("moved"))));
    }

    #[test]
    fn review_of_a_due_request_reboots_and_records_it_done_first() {
        let r = rev(
            text("2026-11-21T11:00:00Z"),
            "2026-11-21T11:01:00Z",
            &RebootState::default(),
        );
        assert_eq!(
            r.action,
            Action::Reboot {
                requested: t("2026-11-21T11:00:00Z")
            }
        );
        assert_eq!(r.signal, Signal::Good(Kind::Rebooting));
        assert_eq!(r.state.done, vec![t("2026-11-21T11:00:00Z")]);
        assert_eq!(
            r.state.request.as_ref().unwrap().status,
            RequestStatus::Rebooting
        );
        // The next pass (same boot) finds it done and stays quiet.
        let again = rev(
            text("2026-11-21T11:00:00Z"),
            "2026-11-21T11:06:00Z",
            &r.state,
        );
        assert_eq!(
            (again.action, again.signal),
            (Action::Nothing, Signal::Quiet)
        );
        assert_eq!(again.state.request.unwrap().status, RequestStatus::Done);
    }

    #[test]
    fn review_warns_of_a_missed_request_once() {
        let r = rev(
            text("2026-11-21T11:00:00Z"),
            "2026-11-21T13:00:00Z",
            &RebootState::default(),
        );
        assert_eq!(
            (r.action, r.signal.clone()),
            (Action::Nothing, Signal::Good(Kind::RebootMissed))
        );
        assert!(matches!(&r.notes[..], [Note::Warn(_)]));
        let again = rev(
            text("2026-11-21T11:00:00Z"),
            "2026-11-21T13:05:00Z",
            &r.state,
        );
        assert_eq!(again.signal, Signal::Quiet);
    }

    #[test]
    fn review_of_times_at_the_ends_of_the_calendar_is_invalid_not_a_crash() {
        for line in [
            "+262142-12-31 23:59:59",
            "-262143-01-01 00:00:00",
            "9999-12-31T23:59:59+00:00",
        ] {
            let r = review(
                text(line),
                "reboot-at",
                &chrono::FixedOffset::east_opt(14 * 3600).unwrap(),
                Ok(t(B)),
                "m",
                t(B),
                Policy {
                    grace: std::time::Duration::from_secs(u32::MAX as u64),
                    splay: std::time::Duration::from_secs(7 * 86_400),
                    held: false,
                },
                &RebootState::default(),
            );
            if line.starts_with("9999") {
                assert_eq!(
                    r.action,
                    Action::Nothing,
                    "{line}: a far but valid time is pending"
                );
            } else {
                assert_eq!(r.action, Action::Invalid, "{line}");
            }
        }
    }

    fn started(tries: u32) -> RebootState {
        let r = rev(
            text("2026-11-21T11:00:00Z"),
            "2026-11-21T11:01:00Z",
            &RebootState::default(),
        );
        let mut st = r.state;
        for _ in 0..tries {
            st = start(
                &st,
                t("2026-11-21T11:00:00Z"),
                t("2026-11-21T11:01:00Z"),
                Some("boot-a".into()),
                Some(t(B)),
            );
        }
        st
    }

    #[test]
    fn a_command_seen_to_return_is_not_followed_up() {
        let st = returned(&started(1), t("2026-11-21T11:00:00Z"), None);
        let (next, signal, notes) = follow_up(&st, Some("boot-a"), Some(t(B)));
        assert_eq!((next, signal, notes.len()), (st, Signal::Quiet, 0));
    }

    #[test]
    fn a_command_cut_short_by_a_real_reboot_is_done() {
        let st = started(1);
        for (id, boot) in [
            (Some("boot-b"), Some(t(B))),
            (Some("boot-a"), Some(t("2026-11-21T11:02:00Z"))),
        ] {
            let (next, signal, _) = follow_up(&st, id, boot);
            assert_eq!(signal, Signal::Quiet);
            assert_eq!(next.started, None);
            assert_eq!(next.done, vec![t("2026-11-21T11:00:00Z")], "stays done");
        }
    }

    #[test]
    fn a_command_that_never_returned_without_a_reboot_is_an_error_and_retried() {
        let (next, signal, notes) = follow_up(&started(1), Some("boot-a"), Some(t(B)));
        assert!(
            matches!(signal, Signal::Bad(Kind::RebootFailed, _)),
            "{signal:?}"
        );
        assert!(
            next.done.is_empty(),
            "taken back, so the review can reboot again"
        );
        assert_eq!(next.request.unwrap().status, RequestStatus::Pending);
        assert!(matches!(&notes[..], [Note::Warn(m)] if m.contains("did not reboot")));
        let again = rev(
            text("2026-11-21T11:00:00Z"),
            "2026-11-21T11:06:00Z",
            &follow_up(&started(1), Some("boot-a"), Some(t(B))).0,
        );
        assert_eq!(
            again.action,
            Action::Reboot {
                requested: t("2026-11-21T11:00:00Z")
            }
        );
    }

    #[test]
    fn the_reboot_command_is_given_up_after_its_tries() {
        let (next, _, notes) = follow_up(&started(MAX_REBOOT_TRIES), Some("boot-a"), Some(t(B)));
        assert_eq!(
            next.done,
            vec![t("2026-11-21T11:00:00Z")],
            "never tried again"
        );
        assert_eq!(next.request.as_ref().unwrap().status, RequestStatus::Failed);
        assert!(matches!(&notes[..], [Note::Warn(m)] if m.contains("giving up")));
        let later = rev(text("2026-11-21T11:00:00Z"), "2026-11-21T11:10:00Z", &next);
        assert_eq!(later.action, Action::Nothing);
        assert_eq!(later.state.request.unwrap().status, RequestStatus::Failed);
    }

    #[test]
    fn a_due_reboot_is_held_by_a_freeze_and_happens_after_it() {
        let held = review(
            text("2026-11-21T11:00:00Z"),
            "reboot-at",
            &Utc,
            Ok(t(B)),
            "m",
            t("2026-11-21T11:01:00Z"),
            Policy {
                grace: std::time::Duration::from_secs(3600),
                splay: std::time::Duration::ZERO,
                held: true,
            },
            &RebootState::default(),
        );
        assert_eq!(held.action, Action::Nothing);
        assert!(held.state.done.is_empty(), "not recorded as done");
        assert_eq!(
            held.state.request.as_ref().unwrap().status,
            RequestStatus::Held
        );
        let after = rev(
            text("2026-11-21T11:00:00Z"),
            "2026-11-21T11:20:00Z",
            &held.state,
        );
        assert_eq!(
            after.action,
            Action::Reboot {
                requested: t("2026-11-21T11:00:00Z")
            }
        );
    }

    #[test]
    fn review_of_a_spent_request_is_quiet() {
        let r = rev(
            text("2026-11-21T09:00:00Z"),
            "2026-11-21T10:30:00Z",
            &RebootState::default(),
        );
        assert_eq!((r.action, r.signal), (Action::Nothing, Signal::Quiet));
        assert_eq!(r.state.request.unwrap().status, RequestStatus::Spent);
    }
}
