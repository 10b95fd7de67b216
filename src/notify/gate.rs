//! Deduplication of notifications: a failure is sent once, repeated at the
//! reminder interval while it lasts, and followed by one recovery message. Pure;
//! time is a parameter.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

use crate::decide::{Kind, Signal};

/// A failure being reported, remembered between passes so it is not repeated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub key: String,
    pub since: DateTime<Utc>,
    pub last_sent: Option<DateTime<Utc>>,
    /// Passes that saw this failure.
    pub passes: u32,
}

/// Notification memory in `state.json`: open alerts by channel (`deploy`, `reboot`),
/// and counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyState {
    #[serde(default)]
    pub alerts: BTreeMap<String, Alert>,
    #[serde(default)]
    pub sent: u64,
    #[serde(default)]
    pub failed: u64,
    #[serde(default)]
    pub suppressed: u64,
}

/// The decision for one channel: which kind to send (if any), whether it is a
/// reminder, and the alert to remember. Pure; time is a parameter.
pub fn gate(
    alert: Option<&Alert>,
    signal: &Signal,
    now: DateTime<Utc>,
    reminder: Duration,
) -> (Option<(Kind, bool)>, Option<Alert>) {
    let reminder = chrono::Duration::from_std(reminder).unwrap_or(chrono::Duration::MAX);
    match (signal, alert) {
        (Signal::Hold, alert) => (None, alert.cloned()),
        (Signal::Quiet, None) => (None, None),
        // The failure is gone and nothing new happened: say so once.
        (Signal::Quiet, Some(_)) => (Some((Kind::Recovered, false)), None),
        (Signal::Good(kind), Some(_)) if *kind == Kind::Applied => {
            (Some((Kind::Recovered, false)), None)
        }
        (Signal::Good(kind), _) => (Some((*kind, false)), None),
        (Signal::Bad(kind, key), Some(a)) if a.key == *key => {
            let due = a.last_sent.is_none_or(|t| now - t >= reminder);
            let next = Alert {
                key: key.clone(),
                since: a.since,
                last_sent: if due { Some(now) } else { a.last_sent },
                passes: a.passes.saturating_add(1),
            };
            (due.then_some((*kind, true)), Some(next))
        }
        (Signal::Bad(kind, key), _) => (
            Some((*kind, false)),
            Some(Alert {
                key: key.clone(),
                since: now,
                last_sent: Some(now),
                passes: 1,
            }),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(mins: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000, 0).unwrap() + chrono::Duration::minutes(mins)
    }

    const H6: Duration = Duration::from_secs(6 * 3600);

    fn bad(key: &str) -> Signal {
        Signal::Bad(Kind::Failed, key.into())
    }

    #[test]
    fn quiet_passes_send_nothing() {
        assert_eq!(gate(None, &Signal::Quiet, t(0), H6), (None, None));
    }

    #[test]
    fn first_failure_is_sent_repeats_wait_for_the_reminder() {
        let (send, alert) = gate(None, &bad("failed:a"), t(0), H6);
        assert_eq!(send, Some((Kind::Failed, false)));
        let alert = alert.unwrap();
        let (send, alert2) = gate(Some(&alert), &bad("failed:a"), t(5), H6);
        assert_eq!(send, None);
        let alert2 = alert2.unwrap();
        assert_eq!((alert2.passes, alert2.last_sent), (2, Some(t(0))));
        let (send, alert3) = gate(Some(&alert2), &bad("failed:a"), t(360), H6);
        assert_eq!(send, Some((Kind::Failed, true)), "reminder after 6h");
        assert_eq!(alert3.unwrap().last_sent, Some(t(360)));
    }

    #[test]
    fn a_held_channel_keeps_its_alert_and_says_nothing() {
        let (_, alert) = gate(None, &bad("failed:a"), t(0), H6);
        assert_eq!(
            gate(alert.as_ref(), &Signal::Hold, t(5), H6),
            (None, alert.clone())
        );
        assert_eq!(gate(None, &Signal::Hold, t(5), H6), (None, None));
    }

    #[test]
    fn a_different_failure_is_sent_at_once() {
        let (_, alert) = gate(None, &bad("failed:a"), t(0), H6);
        let (send, alert) = gate(alert.as_ref(), &bad("failed:b"), t(1), H6);
        assert_eq!(send, Some((Kind::Failed, false)));
        assert_eq!(alert.unwrap().since, t(1));
    }

    #[test]
    fn success_after_failure_is_a_recovery_and_clears_the_alert() {
        let (_, alert) = gate(None, &bad("failed:a"), t(0), H6);
        assert_eq!(
            gate(alert.as_ref(), &Signal::Good(Kind::Applied), t(1), H6),
            (Some((Kind::Recovered, false)), None)
        );
        assert_eq!(
            gate(alert.as_ref(), &Signal::Quiet, t(1), H6),
            (Some((Kind::Recovered, false)), None)
        );
        assert_eq!(
            gate(None, &Signal::Good(Kind::Applied), t(1), H6),
            (Some((Kind::Applied, false)), None)
        );
        // A good reboot event does not claim the deploy channel recovered.
        assert_eq!(
            gate(
                alert.as_ref(),
                &Signal::Good(Kind::RebootScheduled),
                t(1),
                H6
            ),
            (Some((Kind::RebootScheduled, false)), None)
        );
    }
}
