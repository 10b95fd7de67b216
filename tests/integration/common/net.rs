//! Ports on 127.0.0.1: a free one to hand to a daemon, and a closed one that
//! refuses connections for as long as a test holds it.

use std::io;
use std::mem;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::libc;

/// A port on 127.0.0.1 that was free a moment ago.
///
/// The port is picked, not held: a daemon told to listen on it can lose it
/// to another process in between. Callers start the daemon again on a new
/// port when it reports the address in use (see
/// [`SshGitServer::start`](super::SshGitServer::start) and
/// [`HttpsGitServer::start`](super::HttpsGitServer::start)).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("bind 127.0.0.1:0 to find a free port")
        .port()
}

/// A TCP port on 127.0.0.1 that refuses every connection for as long as the
/// value lives.
///
/// Picking a free port and closing it again (bind, drop) leaves a window in
/// which another test's server takes the port, and the "closed" URL then
/// reaches that server. Instead, a socket stays bound to the port without
/// listening. A connection attempt finds no listener and is reset, exactly as
/// on a closed port. As the socket does not keep `SO_REUSEADDR`, no other
/// socket can listen on the port while it is held, and the kernel does not
/// pick an explicitly bound port as the local end of an outgoing connection
/// either (which could otherwise connect to itself).
pub struct ClosedPort {
    _socket: OwnedFd,
    port: u16,
}

impl ClosedPort {
    /// Reserves a port the kernel picks, and checks both promises:
    /// connecting is refused, and nobody else can listen on the port, even
    /// with `SO_REUSEADDR` (which [`TcpListener::bind`] sets).
    ///
    /// # Panics
    ///
    /// Panics if the socket cannot be made or a check fails.
    pub fn new() -> ClosedPort {
        let closed = bind_without_listening(0)
            .unwrap_or_else(|err| panic!("failed to reserve a port on 127.0.0.1: {err}"));
        closed.check()
    }

    /// Reserves `port`, which a test server listened on until a moment ago
    /// (so the port of a URL the test keeps using stays closed), and checks
    /// the same promises as [`new`](Self::new).
    ///
    /// # Panics
    ///
    /// Panics if someone else took the port in between, or a check fails.
    pub fn take(port: u16) -> ClosedPort {
        let closed = bind_without_listening(port)
            .unwrap_or_else(|err| panic!("failed to reserve port {port} on 127.0.0.1: {err}"));
        closed.check()
    }

    fn check(self) -> ClosedPort {
        let port = self.port;
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        match TcpStream::connect(addr) {
            Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => {}
            other => panic!("connecting to the closed port {port} should be refused: {other:?}"),
        }
        match TcpListener::bind(addr) {
            Err(err) if err.kind() == io::ErrorKind::AddrInUse => {}
            other => panic!("listening on the closed port {port} should fail: {other:?}"),
        }
        self
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// A TCP socket bound to 127.0.0.1 on `port` (0: one the kernel picks), not
/// listening. The standard library binds only to listen (`TcpListener`) or
/// to connect, hence the system calls.
///
/// The socket ends up without `SO_REUSEADDR`, so that no other socket can
/// bind the port and listen on it. To bind a given port it needs the option
/// for a moment, though: the connections of the server that had the port
/// linger in `TIME_WAIT`, and without the option they block the bind.
fn bind_without_listening(port: u16) -> io::Result<ClosedPort> {
    // SAFETY: socket(2) takes no pointers; the result is checked below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new, open descriptor that nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };

    // SAFETY: sockaddr_in is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_in = unsafe { mem::zeroed() };
    addr.sin_family = libc::sa_family_t::try_from(libc::AF_INET).expect("AF_INET fits");
    addr.sin_port = port.to_be();
    addr.sin_addr = libc::in_addr {
        s_addr: u32::from(Ipv4Addr::LOCALHOST).to_be(),
    };
    let mut len = libc::socklen_t::try_from(mem::size_of::<libc::sockaddr_in>())
        .expect("the size of sockaddr_in fits socklen_t");
    if port != 0 {
        set_reuse_address(&socket, true)?;
    }
    // SAFETY: `addr` is a valid sockaddr_in of `len` bytes, read only.
    let bound = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            std::ptr::from_ref(&addr).cast::<libc::sockaddr>(),
            len,
        )
    };
    if bound != 0 {
        return Err(io::Error::last_os_error());
    }
    if port != 0 {
        set_reuse_address(&socket, false)?;
    }
    // SAFETY: `addr` is writable storage of `len` bytes, and `len` is
    // writable; getsockname(2) writes at most that many bytes.
    let named = unsafe {
        libc::getsockname(
            socket.as_raw_fd(),
            std::ptr::from_mut(&mut addr).cast::<libc::sockaddr>(),
            &mut len,
        )
    };
    if named != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ClosedPort {
        _socket: socket,
        port: u16::from_be(addr.sin_port),
    })
}

/// Sets or clears `SO_REUSEADDR` on `socket`.
fn set_reuse_address(socket: &OwnedFd, on: bool) -> io::Result<()> {
    let value: libc::c_int = on.into();
    let len = libc::socklen_t::try_from(mem::size_of::<libc::c_int>())
        .expect("the size of c_int fits socklen_t");
    // SAFETY: `value` is a readable c_int of `len` bytes.
    let set = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            std::ptr::from_ref(&value).cast::<libc::c_void>(),
            len,
        )
    };
    if set == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
