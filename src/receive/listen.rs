//! The listening socket: the one systemd passes (`LISTEN_FDS`/`LISTEN_PID`,
//! fd 3, `Accept=no`), or one bound to `--listen`.

use anyhow::{Context, Result};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, RawFd};

use crate::exit::{fail, Classify, Exit};

/// The first file descriptor systemd passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// The socket systemd passed to this process, if any, from the values of
/// `LISTEN_PID` and `LISTEN_FDS` and this process's id. Variables meant for
/// another process (a different `LISTEN_PID`) are ignored, as sd_listen_fds(3)
/// does; more than one socket is an error, since the receiver serves one.
pub fn passed_fd(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    pid: u32,
) -> Result<Option<RawFd>, String> {
    let Some(for_pid) = listen_pid else {
        return Ok(None);
    };
    if for_pid.trim().parse::<u32>().ok() != Some(pid) {
        return Ok(None);
    }
    let count: u32 = listen_fds
        .unwrap_or("0")
        .trim()
        .parse()
        .map_err(|_| format!("LISTEN_FDS={:?} is not a number", listen_fds.unwrap_or("")))?;
    match count {
        0 => Ok(None),
        1 => Ok(Some(LISTEN_FDS_START)),
        n => Err(format!(
            "systemd passed {n} sockets; the receiver serves exactly one (ListenStream= once)"
        )),
    }
}

/// The listener, and whether it came from systemd. The `LISTEN_*`
/// variables are removed so that nothing this process starts inherits them.
pub fn take(flag: Option<SocketAddr>) -> Result<(TcpListener, bool)> {
    let pid_var = std::env::var("LISTEN_PID").ok();
    let fds_var = std::env::var("LISTEN_FDS").ok();
    let fd = passed_fd(pid_var.as_deref(), fds_var.as_deref(), std::process::id())
        .map_err(|msg| fail(Exit::Usage, msg))?;
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(var);
    }
    match (fd, flag) {
        (Some(_), Some(addr)) => Err(fail(
            Exit::Usage,
            format!("--listen {addr} given, but systemd passed a socket too: use one or the other"),
        )),
        (Some(fd), None) => Ok((adopt(fd)?, true)),
        (None, Some(addr)) => {
            let listener = TcpListener::bind(addr)
                .with_context(|| format!("failed to listen on {addr}"))
                .class(Exit::Usage)?;
            Ok((listener, false))
        }
        (None, None) => Err(fail(
            Exit::Usage,
            "no socket: start through gitops-run-receiver.socket (systemd), or pass --listen ADDR:PORT",
        )),
    }
}

/// Check that `fd` is a listening TCP socket and take ownership of it.
fn adopt(fd: RawFd) -> Result<TcpListener> {
    use nix::sys::socket::{
        getsockname, getsockopt, sockopt, AddressFamily, SockaddrLike, SockaddrStorage,
    };
    use std::os::fd::BorrowedFd;

    let bad = |why: String| {
        fail(
            Exit::Usage,
            format!("the socket passed by systemd (fd {fd}) {why}"),
        )
    };
    // SAFETY: fd 3 was handed to this process by systemd (LISTEN_PID names
    // it); it stays open for the whole call.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let listening = getsockopt(&borrowed, sockopt::AcceptConn)
        .map_err(|e| bad(format!("is not a socket: {e}")))?;
    if !listening {
        return Err(bad(
            "is not listening (use ListenStream= with Accept=no)".into()
        ));
    }
    let addr: SockaddrStorage = getsockname(fd).map_err(|e| bad(format!("has no address: {e}")))?;
    if !matches!(
        addr.family(),
        Some(AddressFamily::Inet | AddressFamily::Inet6)
    ) {
        return Err(bad(
            "is not a TCP socket (use ListenStream=[ADDR:]PORT)".into()
        ));
    }
    let flags = nix::fcntl::fcntl(borrowed, nix::fcntl::FcntlArg::F_GETFD)
        .map_err(|e| bad(format!("cannot be inspected: {e}")))?;
    let flags = nix::fcntl::FdFlag::from_bits_truncate(flags) | nix::fcntl::FdFlag::FD_CLOEXEC;
    nix::fcntl::fcntl(borrowed, nix::fcntl::FcntlArg::F_SETFD(flags))
        .map_err(|e| bad(format!("cannot be marked close-on-exec: {e}")))?;
    // SAFETY: the fd is a listening TCP socket that nothing else in this
    // process owns; the TcpListener becomes its only owner.
    Ok(unsafe { TcpListener::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_variables_for_this_process_count() {
        assert_eq!(passed_fd(None, Some("1"), 42), Ok(None));
        assert_eq!(passed_fd(Some("41"), Some("1"), 42), Ok(None));
        assert_eq!(passed_fd(Some("42"), Some("1"), 42), Ok(Some(3)));
        assert_eq!(passed_fd(Some("42"), Some("0"), 42), Ok(None));
        assert!(passed_fd(Some("42"), Some("2"), 42).is_err());
        assert!(passed_fd(Some("42"), Some("x"), 42).is_err());
    }
}
