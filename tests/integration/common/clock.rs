//! Times for reboot requests: this machine's boot time, a request that is
//! due now, and the RFC 3339 text a `reboot-at` file holds.

use std::fs;

use chrono::{DateTime, Duration, Utc};

/// The kernel's boot time (`btime` in `/proc/stat`).
pub fn boot_time() -> DateTime<Utc> {
    let stat = fs::read_to_string("/proc/stat").expect("read /proc/stat");
    let secs: i64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .expect("btime in /proc/stat")
        .trim()
        .parse()
        .expect("btime is a number");
    DateTime::from_timestamp(secs, 0).expect("a valid boot time")
}

/// `t` as RFC 3339 in UTC, to the second (`2026-05-02T10:00:00Z`).
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A reboot time after this boot and before now: a request that is due.
pub fn due_time() -> DateTime<Utc> {
    std::cmp::max(
        boot_time() + Duration::seconds(1),
        Utc::now() - Duration::seconds(60),
    )
}
