//! Signals of the gitops-run process itself: surviving a hang-up, stopping the
//! entrypoint cleanly on SIGINT/SIGTERM, and a clean exit once a reboot started.

use nix::sys::signal::{self, SigHandler, Signal};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by SIGINT/SIGTERM while a [`StopSignals`] guard is alive.
pub static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: nix::libc::c_int) {
    STOP_REQUESTED.store(true, Ordering::SeqCst);
}

extern "C" fn on_hangup(_: nix::libc::c_int) {}

/// A pass typed in an ssh session must not die half-way when the session drops:
/// SIGHUP gets a handler that does nothing for the whole pass. (A handler, not
/// SIG_IGN: an ignored signal stays ignored across exec, and daemons the entrypoint
/// starts must still be able to reload on SIGHUP.) The entrypoint runs in its own
/// process group, so the terminal's SIGHUP does not reach it either.
pub fn survive_hangup() {
    // SAFETY: the handler does nothing, which is async-signal-safe.
    let _ = unsafe { signal::signal(Signal::SIGHUP, SigHandler::Handler(on_hangup)) };
}

extern "C" fn exit_cleanly(_: nix::libc::c_int) {
    // SAFETY: _exit is async-signal-safe; everything worth keeping is on disk.
    unsafe { nix::libc::_exit(0) }
}

/// Once the state is saved and the reboot command has been started, the system going
/// down stops this unit with SIGTERM before the pass can exit by itself. That is the
/// expected end of a rebooting pass, not a failure: exit 0 on it.
pub fn exit_cleanly_on_term() {
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only calls _exit.
        let _ = unsafe { signal::signal(sig, SigHandler::Handler(exit_cleanly)) };
    }
}

/// While alive, SIGINT and SIGTERM only set a flag, so the entrypoint's process group
/// can be stopped cleanly and the attempt recorded.
pub struct StopSignals;

impl StopSignals {
    pub fn install() -> StopSignals {
        STOP_REQUESTED.store(false, Ordering::SeqCst);
        for sig in [Signal::SIGINT, Signal::SIGTERM] {
            // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
            let _ = unsafe { signal::signal(sig, SigHandler::Handler(on_stop_signal)) };
        }
        StopSignals
    }
}

impl Drop for StopSignals {
    fn drop(&mut self) {
        for sig in [Signal::SIGINT, Signal::SIGTERM] {
            // SAFETY: restoring the default disposition.
            let _ = unsafe { signal::signal(sig, SigHandler::SigDfl) };
        }
    }
}

/// Whether SIGINT or SIGTERM arrived while a [`StopSignals`] guard was alive.
pub fn stop_requested() -> bool {
    STOP_REQUESTED.load(Ordering::SeqCst)
}
