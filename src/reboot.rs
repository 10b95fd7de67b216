//! Timestamped reboot requests: parsing the `reboot-at` file, the pure decision
//! against the kernel's boot time, and the thin I/O around it (boot time, machine
//! id, the reboot command).

use chrono::{DateTime, Duration, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use std::path::Path;

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
        return Ok(t.with_timezone(&Utc));
    }
    let naive = NaiveDateTime::parse_from_str(line, "%Y-%m-%d %H:%M:%S").map_err(|_| {
        format!("{line:?} is not a timestamp: use RFC 3339 (2026-11-21T19:05:00Z) or YYYY-MM-DD HH:MM:SS in local time")
    })?;
    local_to_utc(&naive, zone).ok_or_else(|| {
        format!(
            "{line:?} does not exist in the local time zone (skipped by a daylight saving change); use RFC 3339 with an offset"
        )
    })
}

/// The instant a local wall-clock time stands for in `zone`. Around a daylight saving
/// change a time can exist twice (clocks went back: the first occurrence counts) or
/// not at all (clocks went forward: `None`). Worked out from UTC offsets, which every
/// zone answers reliably, rather than from the zone's own local-time lookup.
pub fn local_to_utc<Tz: TimeZone>(naive: &NaiveDateTime, zone: &Tz) -> Option<DateTime<Utc>> {
    use chrono::Offset;
    let as_utc = naive.and_utc();
    let mut candidates: Vec<DateTime<Utc>> = [-1, 0, 1]
        .iter()
        .map(|days| {
            zone.offset_from_utc_datetime(&(as_utc + Duration::days(*days)).naive_utc())
                .fix()
        })
        .map(|off| as_utc - Duration::seconds(i64::from(off.local_minus_utc())))
        .filter(|u| {
            let off = zone.offset_from_utc_datetime(&u.naive_utc()).fix();
            *u + Duration::seconds(i64::from(off.local_minus_utc())) == as_utc
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
    Duration::seconds((hash % (window + 1)) as i64)
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

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Spent => "spent",
            Verdict::Pending => "pending",
            Verdict::RebootNow => "rebooting",
            Verdict::Missed => "missed",
            Verdict::Done => "done",
        }
    }
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
    } else if now <= effective + grace {
        Verdict::RebootNow
    } else {
        Verdict::Missed
    }
}

/// The kernel's boot time, from the `btime` line of /proc/stat.
pub fn boot_time() -> Result<DateTime<Utc>, String> {
    let stat = std::fs::read_to_string("/proc/stat")
        .map_err(|e| format!("failed to read /proc/stat: {e}"))?;
    parse_btime(&stat)
}

pub fn parse_btime(stat: &str) -> Result<DateTime<Utc>, String> {
    let secs = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<i64>().ok())
        .ok_or("no btime line in /proc/stat")?;
    Utc.timestamp_opt(secs, 0)
        .single()
        .ok_or_else(|| "btime out of range".to_string())
}

/// The machine id (systemd's /etc/machine-id, or D-Bus's copy), else the host name.
pub fn machine_id() -> String {
    for p in ["/etc/machine-id", "/var/lib/dbus/machine-id"] {
        if let Ok(id) = std::fs::read_to_string(p) {
            if !id.trim().is_empty() {
                return id.trim().to_string();
            }
        }
    }
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `systemctl reboot` where systemd is the running init, `reboot` elsewhere.
pub fn default_command() -> String {
    if Path::new("/run/systemd/system").is_dir() {
        "systemctl reboot".into()
    } else {
        "reboot".into()
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

    #[test]
    fn btime_is_read_from_proc_stat_text() {
        assert_eq!(
            parse_btime("cpu 1 2 3\nbtime 1795291035\nprocesses 5\n"),
            Ok(t("2026-11-21T19:57:15Z"))
        );
        assert!(parse_btime("cpu 1\n").is_err());
        assert!(boot_time().is_ok(), "this machine has /proc/stat");
    }
}
