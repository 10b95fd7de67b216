//! The accept loop: at most [`MAX_CONNECTIONS`] connections at once (the
//! rest wait in the kernel's backlog), each handled on its own thread within
//! a deadline, one log line per request, and an exit after the idle period or
//! on SIGTERM/SIGINT.

use anyhow::{Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::auth::{self, Outcome, Secret};
use super::event::{self, Verdict};
use super::http::{self, ReadError, Response};
use super::trigger::{Scheduler, TriggerFile};

/// Connections handled at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 8;
/// A request must arrive whole within this time after it was accepted.
pub const REQUEST_DEADLINE_SECS: u64 = 10;
/// How often the accept loop looks at the idle timer and the stop flag.
const TICK_MILLIS: u64 = 250;
/// The same body for every authentication failure, missing or wrong.
pub const AUTH_FAILED_BODY: &str = "authentication failed\n";

/// Settings of a running receiver.
#[derive(Debug, Clone)]
pub struct Config {
    pub branch: String,
    pub max_body_bytes: u64,
    pub idle_exit: Option<Duration>,
    pub min_interval: Duration,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: nix::libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Whether an idle receiver may exit now: nothing in flight, no pass request
/// waiting to be written, and no connection for the whole idle period.
pub fn idle_exit_due(
    now: Instant,
    last_activity: Instant,
    active: usize,
    pending: bool,
    idle: Option<Duration>,
) -> bool {
    match idle {
        Some(idle) => {
            active == 0 && !pending && now.saturating_duration_since(last_activity) >= idle
        }
        None => false,
    }
}

struct Slots {
    state: Mutex<SlotState>,
    freed: Condvar,
}

struct SlotState {
    active: usize,
    last_activity: Instant,
}

impl Slots {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait up to `wait` for a free slot; whether one is free.
    fn wait_free(&self, wait: Duration) -> bool {
        let guard = self.lock();
        let (guard, _) = self
            .freed
            .wait_timeout_while(guard, wait, |s| s.active >= MAX_CONNECTIONS)
            .unwrap_or_else(|p| p.into_inner());
        guard.active < MAX_CONNECTIONS
    }

    fn release(&self) {
        let mut s = self.lock();
        s.active -= 1;
        s.last_activity = Instant::now();
        drop(s);
        self.freed.notify_all();
    }
}

/// Serve until idle or stopped; then write any pending trigger and return.
pub fn serve(
    listener: TcpListener,
    activated: bool,
    cfg: Config,
    secret: Secret,
    trigger: TriggerFile,
) -> Result<()> {
    let local = listener
        .local_addr()
        .context("failed to read the listening address")?;
    listener
        .set_nonblocking(true)
        .context("failed to make the listening socket non-blocking")?;
    let handler = SigAction::new(
        SigHandler::Handler(on_stop),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(sig, &handler) }
            .with_context(|| format!("failed to install the {sig} handler"))?;
    }
    let (scheduler, writer) = Scheduler::start(trigger.clone(), cfg.min_interval)?;
    crate::log::emit(&format!(
        "gitops-run receive: listening on {local} ({}), branch {}, trigger {}, idle exit {}",
        if activated {
            "socket from systemd"
        } else {
            "--listen"
        },
        cfg.branch,
        trigger.path().display(),
        match cfg.idle_exit {
            Some(d) => format!("after {}s", d.as_secs()),
            None => "never".into(),
        }
    ));

    let slots = Arc::new(Slots {
        state: Mutex::new(SlotState {
            active: 0,
            last_activity: Instant::now(),
        }),
        freed: Condvar::new(),
    });
    let shared = Arc::new((cfg, secret));
    let tick = Duration::from_millis(TICK_MILLIS);
    let why = loop {
        if STOP.load(Ordering::SeqCst) {
            break "stopped by a signal".to_string();
        }
        {
            let s = slots.lock();
            if idle_exit_due(
                Instant::now(),
                s.last_activity,
                s.active,
                scheduler.pending(),
                shared.0.idle_exit,
            ) {
                break format!(
                    "idle for {}s",
                    shared.0.idle_exit.unwrap_or_default().as_secs()
                );
            }
        }
        if !slots.wait_free(tick) {
            continue;
        }
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(TICK_MILLIS as u16)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(e).context("failed to wait for connections"),
        }
        let (stream, peer) = match listener.accept() {
            Ok(c) => c,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                // ECONNABORTED, EMFILE and the like: note it, wait a tick, go on.
                crate::log::emit(&format!(
                    "gitops-run receive: warning: failed to accept a connection: {e}"
                ));
                std::thread::sleep(tick);
                continue;
            }
        };
        {
            let mut s = slots.lock();
            s.active += 1;
            s.last_activity = Instant::now();
        }
        let (slots2, shared2, scheduler2) = (
            Arc::clone(&slots),
            Arc::clone(&shared),
            Arc::clone(&scheduler),
        );
        let spawned = std::thread::Builder::new()
            .name("connection".into())
            .spawn(move || {
                handle(stream, peer, &shared2.0, &shared2.1, &scheduler2);
                slots2.release();
            });
        if let Err(e) = spawned {
            crate::log::emit(&format!(
                "gitops-run receive: warning: failed to start a connection thread: {e}"
            ));
            slots.release();
        }
    };

    // Let the connections in flight finish (each ends by its deadline), then
    // write any request still held back by the interval.
    let until = Instant::now() + Duration::from_secs(REQUEST_DEADLINE_SECS + 2);
    {
        let guard = slots.lock();
        let _ = slots.freed.wait_timeout_while(
            guard,
            until.saturating_duration_since(Instant::now()),
            |s| s.active > 0,
        );
    }
    scheduler.stop();
    let _ = writer.join();
    crate::log::emit(&format!("gitops-run receive: exiting: {why}"));
    Ok(())
}

/// What happened to one request, for its log line.
struct Line {
    /// Method and path, once the head was read.
    request: String,
    status: Option<u16>,
    event: String,
    reference: Option<String>,
    outcome: String,
}

/// Read, check and answer one request; log one line.
fn handle(
    mut stream: TcpStream,
    peer: SocketAddr,
    cfg: &Config,
    secret: &Secret,
    scheduler: &Scheduler,
) {
    let deadline = Instant::now() + Duration::from_secs(REQUEST_DEADLINE_SECS);
    let (response, read_whole, line) = respond(&mut stream, cfg, secret, scheduler, deadline);
    let mut line = line;
    if let Some(response) = &response {
        if let Err(e) = http::answer(&mut stream, response, read_whole) {
            line.outcome
                .push_str(&format!(" (answer not delivered: {e})"));
        }
        line.status = Some(response.status);
    }
    crate::log::emit(&format!(
        "gitops-run receive: {peer} {} {} event={} ref={}: {}",
        line.request,
        line.status.map_or("-".to_string(), |s| s.to_string()),
        line.event,
        line.reference.as_deref().unwrap_or("-"),
        line.outcome
    ));
}

fn respond(
    stream: &mut TcpStream,
    cfg: &Config,
    secret: &Secret,
    scheduler: &Scheduler,
    deadline: Instant,
) -> (Option<Response>, bool, Line) {
    let mut line = Line {
        request: "-".into(),
        status: None,
        event: "-".into(),
        reference: None,
        outcome: String::new(),
    };
    let refused = |line: &mut Line, why: &str, response: Option<Response>| {
        line.outcome = format!("refused: {why}");
        response
    };
    let req = match http::read_request(stream, cfg.max_body_bytes, deadline) {
        Ok(r) => r,
        Err(e) => {
            let response = match &e {
                ReadError::Timeout => refused(
                    &mut line,
                    "request not received in time",
                    Some(Response::new(408, "request timeout\n")),
                ),
                ReadError::Closed => refused(&mut line, "client closed the connection", None),
                ReadError::HeadTooLarge => refused(
                    &mut line,
                    "request head too large",
                    Some(Response::new(431, "request head too large\n")),
                ),
                ReadError::BodyTooLarge => refused(
                    &mut line,
                    &format!("body larger than {} bytes", cfg.max_body_bytes),
                    Some(Response::new(413, "body too large\n")),
                ),
                ReadError::Malformed(why) => refused(
                    &mut line,
                    &format!("bad request: {why}"),
                    Some(Response::new(400, "bad request\n")),
                ),
                ReadError::UnsupportedCoding => refused(
                    &mut line,
                    "unsupported Transfer-Encoding",
                    Some(Response::new(501, "unsupported transfer coding\n")),
                ),
                ReadError::Io(err) => refused(&mut line, &format!("read failed: {err}"), None),
            };
            return (response, false, line);
        }
    };
    line.request = format!(
        "{} {}",
        event::loggable(&req.method),
        event::loggable(&req.path)
    );
    let ev = event::event_of(&req.headers);
    line.event = format!("{}/{}", ev.forge.name(), ev.name);
    if req.method != "POST" {
        // Without any credential, every method gets the same 401 as a POST
        // without one; only a caller who presents one learns about POST.
        if !auth::presents_credentials(&req.headers) {
            let r = Response::new(401, AUTH_FAILED_BODY);
            return (refused(&mut line, "no credentials", Some(r)), true, line);
        }
        let why = format!("method {} is not POST", event::loggable(&req.method));
        let mut r = Response::new(405, "only POST\n");
        r.headers.push("Allow: POST".into());
        return (refused(&mut line, &why, Some(r)), true, line);
    }
    match secret.check(&req.headers, &req.body) {
        Outcome::Missing => {
            let r = Response::new(401, AUTH_FAILED_BODY);
            return (refused(&mut line, "no credentials", Some(r)), true, line);
        }
        Outcome::Invalid(names) => {
            let r = Response::new(403, AUTH_FAILED_BODY);
            let why = format!("wrong credentials ({})", names.join(", "));
            return (refused(&mut line, &why, Some(r)), true, line);
        }
        Outcome::Valid(_) => {}
    }
    let (verdict, reference) = event::decide(&ev, &req.body, &cfg.branch);
    line.reference = reference;
    let response = match verdict {
        Verdict::Trigger { after } => {
            scheduler.request();
            line.outcome = match after {
                Some(a) => format!("accepted: pass requested (after {})", crate::log::short(&a)),
                None => "accepted: pass requested".into(),
            };
            Response::new(202, "pass requested\n")
        }
        Verdict::Ping => {
            line.outcome = "ping answered".into();
            Response::new(200, "pong\n")
        }
        Verdict::Ignore(why) => {
            line.outcome = format!("ignored: {why}");
            Response::new(204, "")
        }
        Verdict::BadPayload(why) => {
            line.outcome = format!("refused: {}", event::loggable(&why));
            Response::new(400, "bad payload\n")
        }
    };
    (Some(response), true, line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_exit_waits_for_quiet_connections_and_pending_triggers() {
        let t0 = Instant::now();
        let idle = Some(Duration::from_secs(60));
        let later = t0 + Duration::from_secs(61);
        assert!(idle_exit_due(later, t0, 0, false, idle));
        assert!(!idle_exit_due(
            t0 + Duration::from_secs(59),
            t0,
            0,
            false,
            idle
        ));
        assert!(!idle_exit_due(later, t0, 1, false, idle));
        assert!(!idle_exit_due(later, t0, 0, true, idle));
        assert!(!idle_exit_due(later, t0, 0, false, None));
    }
}
