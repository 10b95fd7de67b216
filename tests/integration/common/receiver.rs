//! [`Receiver`]: a scripted HTTP/1.1 webhook receiver on 127.0.0.1.
//!
//! Tests of webhook notifications (Discord-style `multipart/form-data`,
//! Slack JSON, generic JSON) point the program under test at
//! [`Receiver::url`], script the answers with [`Reply`], and afterwards
//! inspect what arrived with [`Receiver::requests`] or
//! [`Receiver::wait_for`]. [`Recorded::multipart`] checks the encoding of a
//! form strictly (RFC 7578 / RFC 2046) instead of guessing leniently, so a
//! sloppy encoder fails the test.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long a connection may sit idle while a request is read or a
/// response is written.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Upper bound for the request line plus headers, against runaway clients.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Upper bound for one line of chunked framing (size line or trailer).
const MAX_CHUNK_LINE_BYTES: usize = 8 * 1024;

/// Upper bound for a request body.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// How often a [`Reply::Hang`] connection checks whether the receiver is
/// being dropped.
const HANG_POLL: Duration = Duration::from_millis(10);

/// How long a connection answered with `400` waits for the client to stop
/// sending before it is closed.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// How many bytes of a body a panic message shows.
const MAX_BODY_IN_MESSAGE: usize = 4096;

/// How the receiver answers one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// This status with an empty body. `204` is sent without
    /// `Content-Length`, which RFC 9110 §8.6 forbids in that response.
    Status(u16),
    /// This status with this body and `Content-Type: application/json`.
    /// The body is sent as given, so it may be deliberately invalid JSON.
    Json(u16, String),
    /// `429 Too Many Requests` the way Discord sends it: the JSON body
    /// `{"message":"You are being rate limited.","retry_after":X,"global":false}`
    /// and a `Retry-After` header with `X` rounded up to whole seconds.
    RateLimited { retry_after_secs: f64 },
    /// Read and record the request, then never answer: the socket stays
    /// open, without a byte written, until the [`Receiver`] is dropped.
    Hang,
    /// Read and record the request, then close the connection without
    /// writing anything.
    Close,
}

/// One request as the receiver read it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// The request target exactly as sent, query string included
    /// (e.g. `/api/webhooks/123/secrettoken?wait=true`).
    pub path: String,
    /// Header names are lower-cased; values have surrounding whitespace
    /// removed. Repeated headers appear repeatedly, in order.
    pub headers: Vec<(String, String)>,
    /// The body, with chunked transfer coding removed.
    pub body: Vec<u8>,
    /// When the request head (request line and headers) had been read.
    pub received_at: Instant,
}

/// One part of a `multipart/form-data` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The `name` parameter of `Content-Disposition: form-data`.
    pub name: String,
    /// The `filename` parameter, if any.
    pub filename: Option<String>,
    /// The part's `Content-Type` header value as sent, if any.
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// A real HTTP/1.1 server on 127.0.0.1 (ephemeral port) that records every
/// request and answers the n-th one with the n-th scripted [`Reply`].
///
/// Each connection is served by its own thread and carries one request:
/// every response has `Connection: close`. Request bodies may be framed by
/// `Content-Length` or `Transfer-Encoding: chunked`, and
/// `Expect: 100-continue` is answered with `100 Continue` before the body
/// is read. Requests whose HTTP framing is malformed are answered with
/// `400 Bad Request`, are not recorded, do not use up a reply, and are
/// listed by [`errors`](Self::errors).
///
/// Dropping the receiver stops accepting connections, closes the open ones
/// (including those held by [`Reply::Hang`]) and waits for their threads.
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

/// What the connection threads share with the receiver handle.
struct Shared {
    replies: Vec<Reply>,
    stop: AtomicBool,
    log: Mutex<Log>,
    /// Notified whenever a request is recorded.
    arrived: Condvar,
    connections: Mutex<Connections>,
}

#[derive(Default)]
struct Log {
    requests: Vec<Recorded>,
    errors: Vec<String>,
}

#[derive(Default)]
struct Connections {
    next_id: u64,
    /// A handle on every open connection, to shut it down on drop.
    open: HashMap<u64, TcpStream>,
    threads: Vec<JoinHandle<()>>,
}

impl Shared {
    fn log(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn connections(&self) -> MutexGuard<'_, Connections> {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Records `request` and returns the reply scripted for it.
    fn record(&self, request: Recorded) -> Reply {
        let mut log = self.log();
        let index = log.requests.len();
        log.requests.push(request);
        self.arrived.notify_all();
        self.replies
            .get(index)
            .cloned()
            .unwrap_or(Reply::Status(204))
    }

    fn error(&self, message: String) {
        if !self.stopping() {
            eprintln!("webhook receiver: {message}");
            self.log().errors.push(message);
        }
    }
}

impl Receiver {
    /// Starts a receiver whose n-th request gets `replies[n]`; once the list
    /// is exhausted every request gets `Reply::Status(204)`.
    ///
    /// # Panics
    ///
    /// Panics if a reply is nonsensical (a status outside `200..=599`, a
    /// `204` with a body, a negative or non-finite `retry_after_secs`) or
    /// the listener cannot be bound.
    pub fn start(replies: Vec<Reply>) -> Receiver {
        for reply in &replies {
            validate(reply);
        }
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .expect("bind 127.0.0.1:0 for the webhook receiver");
        let addr = listener
            .local_addr()
            .expect("local address of the webhook receiver");
        let shared = Arc::new(Shared {
            replies,
            stop: AtomicBool::new(false),
            log: Mutex::default(),
            arrived: Condvar::new(),
            connections: Mutex::default(),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("webhook-accept-{}", addr.port()))
                .spawn(move || accept_loop(&listener, &shared))
                .expect("spawn the webhook receiver's accept thread")
        };
        Receiver {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// The URL of `path` on this receiver, e.g.
    /// `url("/api/webhooks/123/secrettoken")` gives
    /// `http://127.0.0.1:PORT/api/webhooks/123/secrettoken`. The leading
    /// slash is optional.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    /// The address the receiver listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request recorded so far, in the order the replies were
    /// assigned (including those answered with `Hang` or `Close`).
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.log().requests.clone()
    }

    /// Waits until at least `n` requests have been recorded or `timeout`
    /// has passed, and returns the requests recorded by then.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        let log = self.shared.log();
        let (log, _) = self
            .shared
            .arrived
            .wait_timeout_while(log, timeout, |log| log.requests.len() < n)
            .unwrap_or_else(PoisonError::into_inner);
        log.requests.clone()
    }

    /// Connection-level problems so far: malformed HTTP framing (answered
    /// with `400`), I/O errors and timeouts while reading a request.
    pub fn errors(&self) -> Vec<String> {
        self.shared.log().errors.clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop up so that it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        // No new connections now. Unblock the threads still reading a
        // request; hung ones notice the flag within `HANG_POLL`.
        let (open, threads) = {
            let mut connections = self.shared.connections();
            (
                std::mem::take(&mut connections.open),
                std::mem::take(&mut connections.threads),
            )
        };
        for stream in open.values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        drop(open);
        for thread in threads {
            let _ = thread.join();
        }
    }
}

fn validate(reply: &Reply) {
    match reply {
        Reply::Status(status) => assert!(
            (200..=599).contains(status),
            "Reply::Status({status}): the status must be in 200..=599"
        ),
        Reply::Json(status, body) => {
            assert!(
                (200..=599).contains(status),
                "Reply::Json({status}, ..): the status must be in 200..=599"
            );
            assert!(
                *status != 204 || body.is_empty(),
                "Reply::Json(204, ..): a 204 response cannot have a body"
            );
        }
        Reply::RateLimited { retry_after_secs } => assert!(
            retry_after_secs.is_finite() && *retry_after_secs >= 0.0,
            "Reply::RateLimited: retry_after_secs must be finite and >= 0, not {retry_after_secs}"
        ),
        Reply::Hang | Reply::Close => {}
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping() {
            break;
        }
        let stream = match stream {
            Ok(stream) => stream,
            Err(err) => {
                shared.error(format!("accept failed: {err}"));
                continue;
            }
        };
        let handle = match stream.try_clone() {
            Ok(handle) => handle,
            Err(err) => {
                shared.error(format!("cannot clone a connection handle: {err}"));
                continue;
            }
        };
        let mut connections = shared.connections();
        connections.threads.retain(|thread| !thread.is_finished());
        let id = connections.next_id;
        connections.next_id += 1;
        connections.open.insert(id, handle);
        let spawned = {
            let shared = Arc::clone(shared);
            thread::Builder::new()
                .name(format!("webhook-conn-{id}"))
                .spawn(move || {
                    serve(&shared, &stream);
                    shared.connections().open.remove(&id);
                })
        };
        match spawned {
            Ok(thread) => connections.threads.push(thread),
            Err(err) => {
                connections.open.remove(&id);
                drop(connections);
                shared.error(format!("cannot spawn a connection thread: {err}"));
            }
        }
    }
}

/// Serves the one request of a connection, then closes it.
fn serve(shared: &Shared, stream: &TcpStream) {
    let configured = stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
        .and_then(|()| stream.set_nodelay(true));
    let result = configured.and_then(|()| handle(shared, stream));
    if let Err(err) = result {
        shared.error(format!("connection error: {err}"));
    }
    // Shut down explicitly: the clone kept for `Drop` must not keep the
    // connection open after this thread is done with it.
    let _ = stream.shutdown(Shutdown::Both);
}

fn handle(shared: &Shared, stream: &TcpStream) -> io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut writer = stream;

    let head = match read_head(&mut reader) {
        Ok(Some(head)) => head,
        // Closed before sending anything, like the wake-up connection.
        Ok(None) => return Ok(()),
        Err(err) => return bad_request(shared, stream, &mut reader, err),
    };
    let received_at = Instant::now();
    let framing = match body_framing(&head.headers) {
        Ok(framing) => framing,
        Err(err) => return bad_request(shared, stream, &mut reader, err),
    };
    let expects_continue = head
        .headers
        .iter()
        .any(|(name, value)| name == "expect" && value.eq_ignore_ascii_case("100-continue"));
    if expects_continue && framing != Framing::Empty {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        writer.flush()?;
    }
    let body = match read_body(&mut reader, framing) {
        Ok(body) => body,
        Err(err) => return bad_request(shared, stream, &mut reader, err),
    };

    let reply = shared.record(Recorded {
        method: head.method,
        path: head.target,
        headers: head.headers,
        body,
        received_at,
    });
    match reply {
        Reply::Status(status) => respond(&mut writer, status, &[], b""),
        Reply::Json(status, body) => respond(
            &mut writer,
            status,
            &[("Content-Type", "application/json".to_owned())],
            body.as_bytes(),
        ),
        Reply::RateLimited { retry_after_secs } => {
            let retry_after =
                serde_json::to_string(&retry_after_secs).expect("a finite f64 serialises to JSON");
            let body = format!(
                "{{\"message\":\"You are being rate limited.\",\"retry_after\":{retry_after},\
                 \"global\":false}}"
            );
            // Validated as finite and non-negative in `Receiver::start`.
            let whole_secs = retry_after_secs.ceil() as u64;
            respond(
                &mut writer,
                429,
                &[
                    ("Content-Type", "application/json".to_owned()),
                    ("Retry-After", whole_secs.to_string()),
                ],
                body.as_bytes(),
            )
        }
        Reply::Hang => {
            while !shared.stopping() {
                thread::sleep(HANG_POLL);
            }
            Ok(())
        }
        Reply::Close => Ok(()),
    }
}

/// Answers a request whose framing could not be parsed (an
/// `InvalidData` error) with `400` after noting the error; passes any other
/// error on.
fn bad_request(
    shared: &Shared,
    stream: &TcpStream,
    reader: &mut impl Read,
    err: io::Error,
) -> io::Result<()> {
    if err.kind() != io::ErrorKind::InvalidData {
        return Err(err);
    }
    // Noted before answering, so that a client that has its answer can
    // rely on `Receiver::errors` already listing it.
    shared.error(format!("malformed request: {err}"));
    let text = format!("malformed request: {err}\n");
    let mut writer = stream;
    respond(
        &mut writer,
        400,
        &[("Content-Type", "text/plain".to_owned())],
        text.as_bytes(),
    )?;
    // Closing with unread input would reset the connection and could
    // destroy the answer before the client reads it: signal the end of
    // the answer, then drain what the client still sends, for a while.
    stream.shutdown(Shutdown::Write)?;
    stream.set_read_timeout(Some(DRAIN_TIMEOUT))?;
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let mut sink = [0; 8192];
    while Instant::now() < deadline && !shared.stopping() {
        match reader.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    Ok(())
}

fn respond(
    writer: &mut impl Write,
    status: u16,
    headers: &[(&str, String)],
    body: &[u8],
) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status));
    for (name, value) in headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    if status != 204 {
        let _ = write!(head, "Content-Length: {}\r\n", body.len());
    }
    head.push_str("Connection: close\r\n\r\n");
    writer.write_all(head.as_bytes())?;
    writer.write_all(body)?;
    writer.flush()
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

// ---------------------------------------------------------------------------
// HTTP/1.1 request framing (strict: CRLF line endings, no folding).

/// A parsed request line and headers.
struct Head {
    method: String,
    target: String,
    /// Header names are lower-cased.
    headers: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(usize),
    Chunked,
}

/// Reads one CRLF-terminated line of at most `*budget` bytes and returns it
/// without the CRLF; `None` at end of input before the first byte.
fn read_line(reader: &mut impl BufRead, budget: &mut usize) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    let limit = u64::try_from(*budget).unwrap_or(u64::MAX).saturating_add(1);
    let read = reader.by_ref().take(limit).read_until(b'\n', &mut line)?;
    if read == 0 {
        return Ok(None);
    }
    if read > *budget {
        return Err(invalid("line too long"));
    }
    *budget -= read;
    let Some(content) = line.strip_suffix(b"\n") else {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed in the middle of a line",
        ));
    };
    let Some(content) = content.strip_suffix(b"\r") else {
        return Err(invalid(format!(
            "line ends with a bare LF instead of CRLF: {:?}",
            String::from_utf8_lossy(content)
        )));
    };
    if content.contains(&b'\r') {
        return Err(invalid(format!(
            "bare CR inside a line: {:?}",
            String::from_utf8_lossy(content)
        )));
    }
    String::from_utf8(content.to_vec())
        .map(Some)
        .map_err(|_| invalid("line is not UTF-8"))
}

/// Reads the request line and headers; `None` if the peer closed first.
fn read_head(reader: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut budget = MAX_HEAD_BYTES;
    let Some(request_line) = read_line(reader, &mut budget)? else {
        return Ok(None);
    };
    let fields: Vec<&str> = request_line.split(' ').collect();
    let [method, target, version] = fields[..] else {
        return Err(invalid(format!("bad request line {request_line:?}")));
    };
    if !is_token(method) || target.is_empty() || !matches!(version, "HTTP/1.1" | "HTTP/1.0") {
        return Err(invalid(format!("bad request line {request_line:?}")));
    }
    let mut head = Head {
        method: method.to_owned(),
        target: target.to_owned(),
        headers: Vec::new(),
    };
    loop {
        let line = read_line(reader, &mut budget)?
            .ok_or_else(|| invalid("connection closed inside the request headers"))?;
        if line.is_empty() {
            return Ok(Some(head));
        }
        head.headers.push(parse_header_line(&line)?);
    }
}

/// Splits `name: value`, lower-casing the name and trimming the value.
fn parse_header_line(line: &str) -> io::Result<(String, String)> {
    if line.starts_with([' ', '\t']) {
        return Err(invalid(format!("obsolete header line folding: {line:?}")));
    }
    let Some((name, value)) = line.split_once(':') else {
        return Err(invalid(format!("header line without a colon: {line:?}")));
    };
    if !is_token(name) {
        return Err(invalid(format!("bad header name in {line:?}")));
    }
    Ok((
        name.to_ascii_lowercase(),
        value.trim_matches([' ', '\t']).to_owned(),
    ))
}

/// How the request body is delimited (RFC 9112 §6.3, strictly).
fn body_framing(headers: &[(String, String)]) -> io::Result<Framing> {
    let values = |wanted: &str| -> Vec<&str> {
        headers
            .iter()
            .filter(|(name, _)| name == wanted)
            .map(|(_, value)| value.as_str())
            .collect()
    };
    let transfer_encodings = values("transfer-encoding");
    let lengths = values("content-length");
    if !transfer_encodings.is_empty() {
        if !lengths.is_empty() {
            return Err(invalid(
                "both Transfer-Encoding and Content-Length (RFC 9112 §6.3)",
            ));
        }
        return match transfer_encodings[..] {
            [coding] if coding.eq_ignore_ascii_case("chunked") => Ok(Framing::Chunked),
            _ => Err(invalid(format!(
                "unsupported Transfer-Encoding {transfer_encodings:?}"
            ))),
        };
    }
    let Some(first) = lengths.first() else {
        return Ok(Framing::Empty);
    };
    if lengths.iter().any(|value| value != first) {
        return Err(invalid(format!("conflicting Content-Length {lengths:?}")));
    }
    if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(format!("bad Content-Length {first:?}")));
    }
    match first.parse::<usize>() {
        Ok(length) if length <= MAX_BODY_BYTES => Ok(Framing::Length(length)),
        _ => Err(invalid(format!("Content-Length {first} is too large"))),
    }
}

fn read_body(reader: &mut impl BufRead, framing: Framing) -> io::Result<Vec<u8>> {
    match framing {
        Framing::Empty => Ok(Vec::new()),
        Framing::Length(length) => {
            let mut body = vec![0; length];
            reader.read_exact(&mut body)?;
            Ok(body)
        }
        Framing::Chunked => read_chunked(reader),
    }
}

/// Decodes a `Transfer-Encoding: chunked` body, checking and discarding
/// chunk extensions and trailers.
fn read_chunked(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut budget = MAX_CHUNK_LINE_BYTES;
        let line = read_line(reader, &mut budget)?
            .ok_or_else(|| invalid("connection closed inside a chunked body"))?;
        let size = line.split_once(';').map_or(line.as_str(), |(size, _)| size);
        let size = size.trim_end_matches([' ', '\t']);
        if size.is_empty() || !size.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(format!("bad chunk size line {line:?}")));
        }
        let size = usize::from_str_radix(size, 16)
            .ok()
            .filter(|size| body.len().saturating_add(*size) <= MAX_BODY_BYTES)
            .ok_or_else(|| invalid(format!("chunk too large: {line:?}")))?;
        if size == 0 {
            break;
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let mut crlf = [0; 2];
        reader.read_exact(&mut crlf)?;
        if &crlf != b"\r\n" {
            return Err(invalid("chunk data not followed by CRLF"));
        }
    }
    let mut budget = MAX_HEAD_BYTES;
    loop {
        let line = read_line(reader, &mut budget)?
            .ok_or_else(|| invalid("connection closed inside the chunked trailer"))?;
        if line.is_empty() {
            return Ok(body);
        }
        parse_header_line(&line)?;
    }
}

/// `token` of RFC 9110 §5.6.2.
fn is_token(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(is_tchar)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

// ---------------------------------------------------------------------------
// Inspecting recorded requests.

impl Recorded {
    /// The first value of header `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The body parsed as JSON.
    ///
    /// # Panics
    ///
    /// Panics, showing the body, if it is not valid JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "{} {}: the request body is not valid JSON ({err}):\n{}",
                self.method,
                self.path,
                excerpt(&self.body)
            )
        })
    }

    /// The body parsed as `multipart/form-data`, with the boundary from the
    /// `Content-Type` header.
    ///
    /// The parser is strict on purpose, to check the encoder under test:
    /// the media type must be exactly `multipart/form-data` with a valid
    /// `boundary` parameter and nothing else (RFC 7578 §8); the body must
    /// start with `--boundary` (no preamble) and end with the close
    /// delimiter `--boundary--`, optionally followed by one CRLF; every
    /// line break in the framing and part headers must be CRLF; a
    /// delimiter must be followed by CRLF or `--` (no transport padding,
    /// which also catches the boundary occurring inside data); every part
    /// needs `Content-Disposition: form-data; name=".."` (with an optional
    /// `filename`, but no `filename*`), may have `Content-Type`, and may
    /// have no other header (RFC 7578 §4.7, §4.8).
    ///
    /// # Panics
    ///
    /// Panics with a description of the first violation and an excerpt of
    /// the body.
    pub fn multipart(&self) -> Vec<Part> {
        let context = format!("{} {}", self.method, self.path);
        let Some(content_type) = self.header("content-type") else {
            panic!("{context}: multipart(): the request has no Content-Type header");
        };
        let boundary = multipart_boundary(content_type).unwrap_or_else(|message| {
            panic!("{context}: multipart(): bad Content-Type {content_type:?}: {message}")
        });
        parse_multipart(&self.body, &boundary).unwrap_or_else(|message| {
            panic!(
                "{context}: malformed multipart/form-data body (boundary {boundary:?}): \
                 {message}\n--- body ---\n{}",
                excerpt(&self.body)
            )
        })
    }
}

impl Part {
    /// The body as UTF-8 text.
    ///
    /// # Panics
    ///
    /// Panics if the body is not UTF-8.
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body)
            .unwrap_or_else(|err| panic!("multipart part {:?} is not UTF-8: {err}", self.name))
    }

    /// The body parsed as JSON.
    ///
    /// # Panics
    ///
    /// Panics, showing the body, if it is not valid JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "multipart part {:?} is not valid JSON ({err}):\n{}",
                self.name,
                excerpt(&self.body)
            )
        })
    }
}

/// The body as lossy text, cut after [`MAX_BODY_IN_MESSAGE`] bytes.
fn excerpt(body: &[u8]) -> String {
    if body.len() <= MAX_BODY_IN_MESSAGE {
        String::from_utf8_lossy(body).into_owned()
    } else {
        format!(
            "{}\n[... {} more bytes]",
            String::from_utf8_lossy(&body[..MAX_BODY_IN_MESSAGE]),
            body.len() - MAX_BODY_IN_MESSAGE
        )
    }
}

/// A header value `type *( OWS ";" OWS name=value )`, with the type
/// lower-cased, parameter names lower-cased and quoted values unescaped.
struct HeaderValue {
    kind: String,
    params: Vec<(String, String)>,
}

/// Parses a header value with parameters (RFC 9110 §5.6.6): parameter
/// values are tokens or quoted strings, with no whitespace around `=`.
fn parse_parameterised(value: &str) -> Result<HeaderValue, String> {
    let value = value.trim_matches([' ', '\t']);
    let end = value.find(';').unwrap_or(value.len());
    let kind = value[..end].trim_end_matches([' ', '\t']);
    let mut rest = &value[end..];
    let mut params: Vec<(String, String)> = Vec::new();
    while !rest.is_empty() {
        rest = rest
            .strip_prefix(';')
            .ok_or_else(|| format!("expected ';' at {rest:?}"))?
            .trim_start_matches([' ', '\t']);
        let name_end = rest
            .bytes()
            .position(|b| !is_tchar(b))
            .unwrap_or(rest.len());
        let name = &rest[..name_end];
        if name.is_empty() {
            return Err(format!("expected a parameter name at {rest:?}"));
        }
        rest = rest[name_end..]
            .strip_prefix('=')
            .ok_or_else(|| format!("parameter {name:?} has no '=' directly after its name"))?;
        let param_value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut unescaped = String::new();
            let mut chars = quoted.char_indices();
            let mut closed_at = None;
            while let Some((index, c)) = chars.next() {
                match c {
                    '"' => {
                        closed_at = Some(index);
                        break;
                    }
                    '\\' => match chars.next() {
                        Some((_, escaped)) => unescaped.push(escaped),
                        None => break,
                    },
                    '\r' | '\n' => {
                        return Err(format!("line break inside the value of {name:?}"));
                    }
                    c => unescaped.push(c),
                }
            }
            let closed_at =
                closed_at.ok_or_else(|| format!("unterminated quoted value of {name:?}"))?;
            param_value = unescaped;
            rest = &quoted[closed_at + 1..];
        } else {
            let value_end = rest
                .bytes()
                .position(|b| !is_tchar(b))
                .unwrap_or(rest.len());
            if value_end == 0 {
                return Err(format!("parameter {name:?} has an empty or unquoted value"));
            }
            param_value = rest[..value_end].to_owned();
            rest = &rest[value_end..];
        }
        let name = name.to_ascii_lowercase();
        if params.iter().any(|(seen, _)| *seen == name) {
            return Err(format!("parameter {name:?} appears twice"));
        }
        params.push((name, param_value));
        rest = rest.trim_start_matches([' ', '\t']);
    }
    Ok(HeaderValue {
        kind: kind.to_ascii_lowercase(),
        params,
    })
}

/// Checks `type/subtype` syntax.
fn check_media_type(kind: &str) -> Result<(), String> {
    match kind.split_once('/') {
        Some((main, sub)) if is_token(main) && is_token(sub) => Ok(()),
        _ => Err(format!("{kind:?} is not a type/subtype media type")),
    }
}

/// The boundary of a `multipart/form-data` `Content-Type` value.
fn multipart_boundary(content_type: &str) -> Result<String, String> {
    let value = parse_parameterised(content_type)?;
    if value.kind != "multipart/form-data" {
        return Err(format!(
            "the media type is {:?}, not multipart/form-data",
            value.kind
        ));
    }
    let mut boundary = None;
    for (name, param) in value.params {
        if name == "boundary" {
            boundary = Some(param);
        } else {
            return Err(format!(
                "unexpected parameter {name:?}: multipart/form-data has only `boundary` \
                 (RFC 7578 §8)"
            ));
        }
    }
    let boundary = boundary.ok_or("no boundary parameter")?;
    // RFC 2046 §5.1.1: 1 to 70 `bchars`, not ending with a space.
    let bchar = |c: char| c.is_ascii_alphanumeric() || "'()+_,-./:=? ".contains(c);
    if boundary.is_empty()
        || boundary.len() > 70
        || !boundary.chars().all(bchar)
        || boundary.ends_with(' ')
    {
        return Err(format!(
            "boundary {boundary:?} is not 1 to 70 RFC 2046 bchars without a trailing space"
        ));
    }
    Ok(boundary)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Splits a `multipart/form-data` body (see [`Recorded::multipart`]).
fn parse_multipart(body: &[u8], boundary: &str) -> Result<Vec<Part>, String> {
    let dash_boundary = format!("--{boundary}").into_bytes();
    let delimiter = [b"\r\n".as_slice(), &dash_boundary].concat();
    if !body.starts_with(&dash_boundary) {
        return Err(format!(
            "the body does not start with the first delimiter {:?} \
             (a preamble, a leading line break or a different boundary?)",
            String::from_utf8_lossy(&dash_boundary)
        ));
    }
    let mut parts = Vec::new();
    let mut pos = dash_boundary.len();
    loop {
        let rest = &body[pos..];
        if let Some(after) = rest.strip_prefix(b"--") {
            if after.is_empty() || after == b"\r\n" {
                break;
            }
            return Err(format!(
                "{} unexpected bytes after the close delimiter at offset {pos}: {:?}",
                after.len(),
                String::from_utf8_lossy(&after[..after.len().min(64)])
            ));
        }
        if rest.is_empty() || rest == b"-" {
            return Err(format!(
                "the body ends right after a delimiter: the close delimiter \"--{boundary}--\" \
                 is missing"
            ));
        }
        if !rest.starts_with(b"\r\n") {
            return Err(format!(
                "the delimiter ending at offset {pos} is followed by {:?} instead of CRLF or \
                 \"--\" (transport padding, a bare LF, or the boundary inside part data?)",
                String::from_utf8_lossy(&rest[..rest.len().min(16)])
            ));
        }
        pos += 2;
        let Some(length) = find(&body[pos..], &delimiter) else {
            return Err(format!(
                "part {} starting at offset {pos} is not followed by a delimiter: \
                 the close delimiter \"--{boundary}--\" is missing",
                parts.len()
            ));
        };
        parts.push(parse_part(&body[pos..pos + length], parts.len())?);
        pos += length + delimiter.len();
    }
    if parts.is_empty() {
        return Err("the body has no parts".to_owned());
    }
    Ok(parts)
}

/// Parses the headers and body of part number `index`.
fn parse_part(bytes: &[u8], index: usize) -> Result<Part, String> {
    let (header_block, body) = if let Some(body) = bytes.strip_prefix(b"\r\n") {
        (&bytes[..0], body)
    } else {
        let end = find(bytes, b"\r\n\r\n").ok_or_else(|| {
            format!("part {index}: the headers are not ended by an empty line (CRLF CRLF)")
        })?;
        (&bytes[..end], &bytes[end + 4..])
    };
    let header_block = std::str::from_utf8(header_block)
        .map_err(|_| format!("part {index}: the headers are not UTF-8"))?;

    let mut disposition = None;
    let mut content_type = None;
    for line in header_block
        .split("\r\n")
        .filter(|_| !header_block.is_empty())
    {
        if line.contains(['\r', '\n']) {
            return Err(format!(
                "part {index}: bare CR or LF in header line {line:?}"
            ));
        }
        if line.starts_with([' ', '\t']) {
            return Err(format!("part {index}: folded header line {line:?}"));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("part {index}: header line without a colon: {line:?}"))?;
        if !is_token(name) {
            return Err(format!("part {index}: bad header name in {line:?}"));
        }
        let value = value.trim_matches([' ', '\t']);
        let slot = match name.to_ascii_lowercase().as_str() {
            "content-disposition" => &mut disposition,
            "content-type" => &mut content_type,
            _ => {
                return Err(format!(
                    "part {index}: header {name:?} is not allowed in a multipart/form-data \
                     part; only Content-Disposition and Content-Type are (RFC 7578 §4.7, §4.8)"
                ));
            }
        };
        if slot.is_some() {
            return Err(format!("part {index}: header {name:?} appears twice"));
        }
        *slot = Some(value.to_owned());
    }

    let disposition =
        disposition.ok_or_else(|| format!("part {index}: no Content-Disposition header"))?;
    let parsed = parse_parameterised(&disposition).map_err(|message| {
        format!("part {index}: Content-Disposition {disposition:?}: {message}")
    })?;
    if parsed.kind != "form-data" {
        return Err(format!(
            "part {index}: Content-Disposition {disposition:?} is not form-data"
        ));
    }
    let mut name = None;
    let mut filename = None;
    for (param, value) in parsed.params {
        match param.as_str() {
            "name" => name = Some(value),
            "filename" => filename = Some(value),
            "filename*" => {
                return Err(format!(
                    "part {index}: Content-Disposition uses filename*, which RFC 7578 §4.2 \
                     forbids"
                ));
            }
            _ => {
                return Err(format!(
                    "part {index}: unexpected Content-Disposition parameter {param:?}"
                ));
            }
        }
    }
    let name = name.ok_or_else(|| {
        format!("part {index}: Content-Disposition {disposition:?} has no name parameter")
    })?;
    if let Some(content_type) = &content_type {
        let parsed = parse_parameterised(content_type)
            .map_err(|message| format!("part {index}: Content-Type {content_type:?}: {message}"))?;
        check_media_type(&parsed.kind)
            .map_err(|message| format!("part {index}: Content-Type: {message}"))?;
    }
    Ok(Part {
        name,
        filename,
        content_type,
        body: body.to_vec(),
    })
}
