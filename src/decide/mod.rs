//! Pure deciders: how the deployed commit relates to the remote one and what to
//! do about it, the reboot review, and how a pass's result maps to an exit code, a
//! label and a notification. Nothing here reads the clock, `/proc` or the
//! environment: every fact comes in as a value.

pub mod outcome;
pub mod plan;
pub mod reboot;
pub mod signal;

pub use plan::{Classification, Failing, Plan, Reason};
pub use signal::{Kind, Signal};
