//! `gitops-run freeze` and `gitops-run unfreeze`: stop applying commits on this
//! host (it keeps fetching), and resume. The record is `freeze.json` in the state
//! directory; see `state::freeze`.

use anyhow::Result;
use chrono::{DateTime, Utc};
use std::time::{Duration, Instant};

use super::{announce, check_state_dir};
use crate::config::Control;
use crate::decide::Kind;
use crate::exit::{fail, Exit};
use crate::log::{info, short, utc, warn};
use crate::state::freeze::{self, Freeze, FreezeKind, FreezeState, FREEZE_FORMAT};
use crate::state::{self, AttemptResult, Layout};

/// `gitops-run freeze --reason TEXT [--until TIME|DURATION]`.
pub fn freeze(
    layout: &Layout,
    reason: &str,
    until: Option<&str>,
    wait: Duration,
    control: Option<&Control>,
) -> Result<Exit> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(fail(
            Exit::Usage,
            "a freeze needs a reason (--reason TEXT): every pass and `status` show it",
        ));
    }
    let now = Utc::now();
    let until = until.map(|u| parse_until(u, now)).transpose()?;
    let seen_a_pass = check_state_dir(layout)?;
    let path = layout.freeze_file();
    let record = Freeze {
        format: FREEZE_FORMAT,
        kind: FreezeKind::Operator,
        reason: reason.to_string(),
        by: crate::host::invoking_user(),
        since: now,
        until,
        pinned: None,
    };
    match freeze::load(&path) {
        FreezeState::Frozen(f) if f.reason == record.reason && f.until == record.until => {
            info!("already {}", freeze::describe(&f));
            return Ok(Exit::Ok);
        }
        FreezeState::Frozen(f) => info!("replacing the freeze ({})", freeze::describe(&f)),
        FreezeState::Unreadable(why) => {
            info!("replacing a freeze record that could not be read ({why})")
        }
        FreezeState::Thawed => {}
    }
    freeze::save(&path, &record)?;
    publish(layout, control);
    if !seen_a_pass {
        info!(
            "no pass has run in {} yet: the first pass will fetch, and apply nothing",
            layout.root.display()
        );
    }
    let waited = wait_for_running_apply(layout, wait)?;
    info!("{}", freeze::describe(&record));
    announce(control, Kind::Frozen, &freeze::describe(&record));
    if let Some(running) = waited {
        warn!("{running}");
        return Err(fail(
            Exit::Internal,
            format!("{running}; the freeze is recorded and holds for every later pass"),
        ));
    }
    Ok(Exit::Ok)
}

/// `gitops-run unfreeze`.
pub fn unfreeze(layout: &Layout, control: Option<&Control>) -> Result<Exit> {
    let seen_a_pass = check_state_dir(layout)?;
    let path = layout.freeze_file();
    let was = freeze::load(&path);
    if !freeze::remove(&path)? {
        if seen_a_pass {
            info!("not frozen: nothing to do");
        } else {
            info!(
                "not frozen: nothing to do (no pass has run in {} yet)",
                layout.root.display()
            );
        }
        return Ok(Exit::Ok);
    }
    let by = crate::host::invoking_user();
    let what = match &was {
        FreezeState::Frozen(f) if f.kind == FreezeKind::Rollback => format!(
            "unfrozen by {by}: the host follows the branch again (it was pinned to {} after a rollback by {} on {})",
            f.pinned.as_deref().map(short).unwrap_or("?"),
            f.by,
            utc(&f.since)
        ),
        FreezeState::Frozen(f) => format!(
            "unfrozen by {by} (was {})",
            freeze::describe(f)
        ),
        _ => format!("unfrozen by {by} (the freeze record could not be read)"),
    };
    publish(layout, control);
    info!("{what}; the next pass follows the branch again");
    announce(control, Kind::Unfrozen, &what);
    Ok(Exit::Ok)
}

/// Update the metrics file, when one is configured, to show the freeze as it is now.
fn publish(layout: &Layout, control: Option<&Control>) {
    if let Some(c) = control {
        crate::metrics::publish_from_disk(c.metrics.as_ref(), layout, &c.repo, &c.branch);
    }
}

/// After the record is written, no pass may start an entrypoint (it reads the
/// record right after recording its attempt). A pass that recorded its attempt
/// before may be running it: wait for that pass to end, at most `wait`. Returns a
/// description of the pass still applying when the wait ran out.
fn wait_for_running_apply(layout: &Layout, wait: Duration) -> Result<Option<String>> {
    let deadline = Instant::now() + wait;
    let mut told = false;
    loop {
        if let Some(lock) = crate::pass::lock_now(layout)? {
            drop(lock);
            return Ok(None);
        }
        let running = state::load(&layout.state_file())
            .ok()
            .flatten()
            .and_then(|st| st.attempt)
            .filter(|a| a.result == AttemptResult::Running);
        let Some(a) = running else {
            // The pass holding the lock has not started an entrypoint; it reads the
            // freeze before it would.
            return Ok(None);
        };
        if Instant::now() >= deadline {
            return Ok(Some(format!(
                "a pass has been applying {} since {} and is still running after waiting {}",
                short(&a.commit),
                utc(&a.started_at),
                crate::duration::format(wait)
            )));
        }
        if !told {
            info!(
                "a pass is applying {} right now; waiting for it to end (at most {})",
                short(&a.commit),
                crate::duration::format(wait)
            );
            told = true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `--until`: a duration from now (`2h`), or a time (RFC 3339, or a local
/// `YYYY-MM-DD HH:MM[:SS]` (space or `T`), or a day `YYYY-MM-DD` from its
/// midnight); it must lie in the future.
pub fn parse_until(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    let at = if let Ok(d) = crate::duration::parse(text) {
        chrono::Duration::from_std(d)
            .ok()
            .and_then(|d| now.checked_add_signed(d))
    } else {
        crate::decide::reboot::parse_request(text, &chrono::Local)
            .ok()
            .or_else(|| local_time(text.trim(), &chrono::Local))
    };
    match at {
        Some(t) if t > now => Ok(t),
        Some(t) => Err(fail(
            Exit::Usage,
            format!("--until {text:?} ({}) is not in the future", utc(&t)),
        )),
        None => Err(fail(
            Exit::Usage,
            format!("--until {text:?} is neither a duration (2h, 1d) nor a time (2026-12-24T18:00:00Z; or in local time 2026-12-24 18:00, 2026-12-24T18:00:00 or 2026-12-24)"),
        )),
    }
}

/// The other ways people write a local time: without seconds, with a `T`, or a
/// day alone (its midnight). A time that a DST change skips has no meaning.
fn local_time<Tz: chrono::TimeZone>(text: &str, zone: &Tz) -> Option<DateTime<Utc>> {
    use chrono::{NaiveDate, NaiveDateTime};
    let naive = ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
        .or_else(|| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })?;
    zone.from_local_datetime(&naive)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn until_takes_local_times_without_seconds_or_zone_and_days() {
        let zone = chrono::FixedOffset::east_opt(3600).unwrap();
        let at = |y, mo, d, h, mi| Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap();
        assert_eq!(
            local_time("2030-01-01T10:00:00", &zone),
            Some(at(2030, 1, 1, 9, 0))
        );
        assert_eq!(
            local_time("2030-01-01 10:00", &zone),
            Some(at(2030, 1, 1, 9, 0))
        );
        assert_eq!(
            local_time("2030-01-01T10:30", &zone),
            Some(at(2030, 1, 1, 9, 30))
        );
        assert_eq!(
            local_time("2030-01-01", &zone),
            Some(at(2029, 12, 31, 23, 0))
        );
        assert_eq!(local_time("2030-13-01", &zone), None);
        assert_eq!(local_time("tomorrow", &zone), None);
    }

    #[test]
    fn until_is_a_duration_or_a_future_time() {
        let now = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        assert_eq!(
            parse_until("2h", now).unwrap(),
            now + chrono::Duration::hours(2)
        );
        assert_eq!(
            parse_until("2027-01-15T12:00:00Z", now).unwrap(),
            Utc.with_ymd_and_hms(2027, 1, 15, 12, 0, 0).unwrap()
        );
        assert!(parse_until("2020-01-01T00:00:00Z", now).is_err());
        assert!(parse_until("0", now).is_err());
        assert!(parse_until("soon", now).is_err());
    }
}
