//! What a pass tells the outside world: the kind of event, and whether it is good
//! news, bad news (deduplicated by its key) or nothing worth a message.

use serde::{Deserialize, Serialize};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Applied,
    Recovered,
    Failed,
    InvalidEntrypoint,
    Refused,
    /// A new commit has no good signature by a trusted key.
    Unverified,
    Error,
    RebootScheduled,
    Rebooting,
    RebootMissed,
    RebootInvalid,
    /// The reboot command failed, hung, or ran without the host rebooting.
    RebootFailed,
    /// An operator froze the host.
    Frozen,
    /// An operator (or the end of its --until) ended a freeze.
    Unfrozen,
    /// An operator rolled the host back to an earlier commit (and froze it there).
    RolledBack,
    /// A new commit failed its health check; the host was rolled back.
    Unhealthy,
    /// The health rollback failed too: the host is in an unknown state.
    RollbackFailed,
    /// A reconcile run corrected drift.
    DriftCorrected,
    /// A reconcile run failed.
    ReconcileFailed,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Applied => "applied",
            Kind::Recovered => "recovered",
            Kind::Failed => "failed",
            Kind::InvalidEntrypoint => "invalid-entrypoint",
            Kind::Refused => "refused",
            Kind::Unverified => "unverified",
            Kind::Error => "error",
            Kind::RebootScheduled => "reboot-scheduled",
            Kind::Rebooting => "rebooting",
            Kind::RebootMissed => "reboot-missed",
            Kind::RebootInvalid => "reboot-invalid",
            Kind::RebootFailed => "reboot-failed",
            Kind::Frozen => "frozen",
            Kind::Unfrozen => "unfrozen",
            Kind::RolledBack => "rolled-back",
            Kind::Unhealthy => "unhealthy",
            Kind::RollbackFailed => "rollback-failed",
            Kind::DriftCorrected => "drift-corrected",
            Kind::ReconcileFailed => "reconcile-failed",
        }
    }
}

/// What a pass found, as far as messages go, on one channel (the deployment, the
/// reboot request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// Nothing happened on this channel (up to date, no reboot request).
    Quiet,
    /// A good event (applied, reboot scheduled...): always sent; clears an alert.
    Good(Kind),
    /// A failure identified by `key`; repeats are reported at the reminder interval.
    Bad(Kind, String),
    /// Nothing was tried on this channel (the host is frozen): neither news nor a
    /// recovery; an open alert stays open.
    Hold,
}
