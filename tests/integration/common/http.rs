//! [`HttpGitServer`]: `git http-backend` behind a tiny HTTP/1.1 server.

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::git_env;

/// How long a connection may sit idle while a request is read or a
/// response is written.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// Upper bound for the request line plus headers, against runaway clients.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// A real `git http-backend` served over plain HTTP on 127.0.0.1.
///
/// A background thread accepts connections on an ephemeral port; each
/// connection is handled in its own thread, which reads one request (body
/// sized by `Content-Length` or sent with `Transfer-Encoding: chunked`),
/// runs `git http-backend` as a CGI program and answers with
/// `Connection: close`. Dropping the server stops accepting connections.
pub struct HttpGitServer {
    addr: SocketAddr,
    state: Arc<State>,
    acceptor: Option<JoinHandle<()>>,
}

/// What the connection threads share with the server handle.
struct State {
    project_root: PathBuf,
    backend: PathBuf,
    port: u16,
    /// The exact `Authorization` header value required, and the user name.
    auth: Option<(String, String)>,
    stop: AtomicBool,
    requests: AtomicUsize,
    chunked_requests: AtomicUsize,
    bytes_sent: AtomicU64,
}

/// A parsed request line and headers.
struct Request {
    method: String,
    target: String,
    /// Header names are lower-cased.
    headers: Vec<(String, String)>,
}

impl Request {
    /// The first value of header `name` (lower-case).
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn is_chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|value| value.to_ascii_lowercase().contains("chunked"))
    }

    fn expects_continue(&self) -> bool {
        self.header("expect")
            .is_some_and(|value| value.eq_ignore_ascii_case("100-continue"))
    }

    fn has_body(&self) -> bool {
        self.is_chunked() || self.header("content-length").is_some()
    }
}

/// A response ready to be written.
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) reason: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Response {
    fn plain(status: u16, reason: &str, body: &str) -> Response {
        Response {
            status,
            reason: reason.to_owned(),
            headers: vec![("Content-Type".to_owned(), "text/plain".to_owned())],
            body: body.as_bytes().to_vec(),
        }
    }
}

impl HttpGitServer {
    /// Serves the repositories below `project_root` (the CGI
    /// `GIT_PROJECT_ROOT`, with `GIT_HTTP_EXPORT_ALL=1`) without
    /// authentication.
    ///
    /// # Panics
    ///
    /// Panics if the listener cannot be bound or `git http-backend` cannot
    /// be found.
    pub fn start(project_root: &Path) -> HttpGitServer {
        Self::spawn(project_root, None)
    }

    /// Like [`start`](Self::start), but every request must carry HTTP Basic
    /// credentials `user`:`pass`; other requests get `401 Unauthorized` with
    /// a `WWW-Authenticate: Basic` challenge. Authenticated requests are
    /// passed to the backend with `REMOTE_USER` set, which also enables
    /// pushing (`git-receive-pack`).
    pub fn with_basic_auth(project_root: &Path, user: &str, pass: &str) -> HttpGitServer {
        let expected = format!("Basic {}", base64(format!("{user}:{pass}").as_bytes()));
        Self::spawn(project_root, Some((expected, user.to_owned())))
    }

    fn spawn(project_root: &Path, auth: Option<(String, String)>) -> HttpGitServer {
        let project_root = project_root.canonicalize().unwrap_or_else(|err| {
            panic!(
                "canonicalize project root {}: {err}",
                project_root.display()
            )
        });
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0 for HTTP");
        let addr = listener
            .local_addr()
            .expect("local address of HTTP listener");
        let state = Arc::new(State {
            project_root,
            backend: http_backend_path(),
            port: addr.port(),
            auth,
            stop: AtomicBool::new(false),
            requests: AtomicUsize::new(0),
            chunked_requests: AtomicUsize::new(0),
            bytes_sent: AtomicU64::new(0),
        });
        let acceptor = {
            let state = Arc::clone(&state);
            thread::Builder::new()
                .name(format!("http-git-accept-{}", addr.port()))
                .spawn(move || accept_loop(&listener, &state))
                .expect("spawn HTTP accept thread")
        };
        HttpGitServer {
            addr,
            state,
            acceptor: Some(acceptor),
        }
    }

    /// The URL of the repository at `repo_path` relative to the project
    /// root, e.g. `url("origin/.git")` gives
    /// `http://127.0.0.1:PORT/origin/.git`.
    pub fn url(&self, repo_path: &str) -> String {
        format!("http://{}/{}", self.addr, repo_path.trim_start_matches('/'))
    }

    /// Like [`url`](Self::url) with `user:pass@` credentials embedded.
    pub fn url_with_credentials(&self, user: &str, pass: &str, repo_path: &str) -> String {
        format!(
            "http://{user}:{pass}@{}/{}",
            self.addr,
            repo_path.trim_start_matches('/')
        )
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Number of requests received so far (including rejected ones).
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Number of requests whose body arrived with
    /// `Transfer-Encoding: chunked`.
    pub fn chunked_requests(&self) -> usize {
        self.state.chunked_requests.load(Ordering::SeqCst)
    }

    /// Total response body bytes sent so far.
    pub fn bytes_sent(&self) -> u64 {
        self.state.bytes_sent.load(Ordering::SeqCst)
    }
}

impl Drop for HttpGitServer {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop up so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// `git http-backend` inside `git --exec-path`.
pub(crate) fn http_backend_path() -> PathBuf {
    let output = Command::new("git")
        .arg("--exec-path")
        .output()
        .expect("run git --exec-path");
    assert!(output.status.success(), "git --exec-path failed");
    let exec_path = String::from_utf8(output.stdout).expect("UTF-8 git exec path");
    let backend = Path::new(exec_path.trim()).join("git-http-backend");
    assert!(
        backend.is_file(),
        "git http-backend not found at {}",
        backend.display()
    );
    backend
}

fn accept_loop(listener: &TcpListener, state: &Arc<State>) {
    for stream in listener.incoming() {
        if state.stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let state = Arc::clone(state);
        let spawned = thread::Builder::new()
            .name("http-git-conn".to_owned())
            .spawn(move || {
                if let Err(err) = handle_connection(&state, stream) {
                    eprintln!("test HTTP server: connection error: {err}");
                }
            });
        if let Err(err) = spawned {
            eprintln!("test HTTP server: cannot spawn connection thread: {err}");
        }
    }
}

fn handle_connection(state: &State, stream: TcpStream) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let peer = stream.peer_addr()?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);

    let Some(request) = read_head(&mut reader)? else {
        // Closed without a request: the wake-up connection made on drop.
        return Ok(());
    };
    state.requests.fetch_add(1, Ordering::SeqCst);

    let mut remote_user = None;
    if let Some((expected, user)) = &state.auth {
        if request.header("authorization") != Some(expected.as_str()) {
            if !request.expects_continue() && request.has_body() {
                // Drain the body so that closing does not reset the
                // connection before the client has read the 401.
                read_body(&mut reader, &request)?;
            }
            let mut response = Response::plain(401, "Unauthorized", "authentication required\n");
            response.headers.push((
                "WWW-Authenticate".to_owned(),
                "Basic realm=\"gitops-run tests\"".to_owned(),
            ));
            return send(state, &mut writer, &response);
        }
        remote_user = Some(user.as_str());
    }

    if request.expects_continue() {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        writer.flush()?;
    }
    if request.is_chunked() {
        state.chunked_requests.fetch_add(1, Ordering::SeqCst);
    }
    let body = read_body(&mut reader, &request)?;
    let response = run_backend(state, &request, body, peer, remote_user)?;
    send(state, &mut writer, &response)
}

/// Reads the request line and headers; `None` if the peer closed first.
fn read_head(reader: &mut impl BufRead) -> io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(invalid(format!("bad request line {line:?}")));
    };
    let mut request = Request {
        method: method.to_owned(),
        target: target.to_owned(),
        headers: Vec::new(),
    };
    let mut total = line.len();
    loop {
        line.clear();
        let read = reader.read_line(&mut line)?;
        total += read;
        if read == 0 {
            return Err(invalid("connection closed inside the headers"));
        }
        if total > MAX_HEAD_BYTES {
            return Err(invalid("request head too large"));
        }
        let header = line.trim_end_matches(['\r', '\n']);
        if header.is_empty() {
            return Ok(Some(request));
        }
        let Some((name, value)) = header.split_once(':') else {
            return Err(invalid(format!("bad header line {header:?}")));
        };
        request
            .headers
            .push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
}

/// Reads the request body: chunked, by `Content-Length`, or empty.
fn read_body(reader: &mut impl BufRead, request: &Request) -> io::Result<Vec<u8>> {
    if request.is_chunked() {
        return read_chunked(reader);
    }
    let Some(length) = request.header("content-length") else {
        return Ok(Vec::new());
    };
    let length: usize = length
        .parse()
        .map_err(|_| invalid(format!("bad Content-Length {length:?}")))?;
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(body)
}

/// Decodes a `Transfer-Encoding: chunked` body, discarding any trailers.
pub(crate) fn read_chunked(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(invalid("connection closed inside a chunked body"));
        }
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| invalid(format!("bad chunk size line {line:?}")))?;
        if size == 0 {
            break;
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let mut crlf = [0; 2];
        reader.read_exact(&mut crlf)?;
        if &crlf != b"\r\n" {
            return Err(invalid("chunk not followed by CRLF"));
        }
    }
    // Trailers, up to and including the final empty line.
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line.trim_end_matches(['\r', '\n']).is_empty() {
            return Ok(body);
        }
    }
}

/// Runs `git http-backend` for `request` as a CGI program.
fn run_backend(
    state: &State,
    request: &Request,
    body: Vec<u8>,
    peer: SocketAddr,
    remote_user: Option<&str>,
) -> io::Result<Response> {
    let (path, query) = request
        .target
        .split_once('?')
        .unwrap_or((request.target.as_str(), ""));

    let mut cmd = Command::new(&state.backend);
    git_env(&mut cmd);
    cmd.env("GIT_PROJECT_ROOT", &state.project_root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("SERVER_SOFTWARE", "gitops-run-test-harness")
        .env("SERVER_NAME", "127.0.0.1")
        .env("SERVER_PORT", state.port.to_string())
        .env("REQUEST_METHOD", &request.method)
        .env("REQUEST_URI", &request.target)
        .env("SCRIPT_NAME", "")
        .env("PATH_INFO", percent_decode(path))
        .env("QUERY_STRING", query)
        .env("REMOTE_ADDR", peer.ip().to_string())
        .env("REMOTE_PORT", peer.port().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if request.has_body() {
        cmd.env("CONTENT_LENGTH", body.len().to_string());
    }
    if let Some(content_type) = request.header("content-type") {
        cmd.env("CONTENT_TYPE", content_type);
    }
    if let Some(user) = remote_user {
        cmd.env("REMOTE_USER", user).env("AUTH_TYPE", "Basic");
    }
    for (name, value) in &request.headers {
        let skip = matches!(
            name.as_str(),
            "authorization" | "content-length" | "content-type" | "transfer-encoding"
        );
        let valid = name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !skip && valid {
            let var = format!("HTTP_{}", name.to_ascii_uppercase().replace('-', "_"));
            cmd.env(var, value);
        }
    }

    let mut child = cmd.spawn()?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    // Feed stdin and drain stderr concurrently with stdout, so that a large
    // request or response can never deadlock on a full pipe.
    let feeder = thread::spawn(move || {
        // The backend may legitimately stop reading early (e.g. on errors).
        let _ = stdin.write_all(&body);
    });
    let errors = thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        text
    });
    let mut output = Vec::new();
    stdout.read_to_end(&mut output)?;
    let status = child.wait()?;
    let _ = feeder.join();
    let errors = errors.join().unwrap_or_default();
    if !errors.is_empty() {
        eprintln!(
            "git http-backend ({} {}): {}",
            request.method,
            request.target,
            String::from_utf8_lossy(&errors).trim_end()
        );
    }

    Ok(parse_cgi_output(&output).unwrap_or_else(|| {
        Response::plain(
            502,
            "Bad Gateway",
            &format!("git http-backend exited with {status} without a valid response\n"),
        )
    }))
}

/// Splits CGI output into status, headers and body; `None` if the header
/// block is malformed or unterminated.
pub(crate) fn parse_cgi_output(output: &[u8]) -> Option<Response> {
    let mut response = Response {
        status: 200,
        reason: "OK".to_owned(),
        headers: Vec::new(),
        body: Vec::new(),
    };
    let mut rest = output;
    loop {
        let newline = rest.iter().position(|&b| b == b'\n')?;
        let line = std::str::from_utf8(&rest[..newline]).ok()?;
        let line = line.strip_suffix('\r').unwrap_or(line);
        rest = &rest[newline + 1..];
        if line.is_empty() {
            response.body = rest.to_vec();
            return Some(response);
        }
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let (code, reason) = value.split_once(' ').unwrap_or((value, ""));
            response.status = code.parse().ok()?;
            reason.trim().clone_into(&mut response.reason);
        } else if !matches!(
            name.to_ascii_lowercase().as_str(),
            "content-length" | "connection" | "transfer-encoding"
        ) {
            response.headers.push((name.to_owned(), value.to_owned()));
        }
    }
}

fn send(state: &State, writer: &mut TcpStream, response: &Response) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", response.status, response.reason);
    for (name, value) in &response.headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    let _ = write!(
        head,
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        response.body.len()
    );
    writer.write_all(head.as_bytes())?;
    writer.write_all(&response.body)?;
    writer.flush()?;
    state
        .bytes_sent
        .fetch_add(response.body.len() as u64, Ordering::SeqCst);
    Ok(())
}

/// Decodes `%XX` escapes in a URL path; malformed escapes are kept as-is.
pub(crate) fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        if let Some(byte) = escaped {
            decoded.push(byte);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// Standard base64 with padding (RFC 4648), for `Authorization: Basic`.
pub(crate) fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let bytes = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let triple = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]);
        for i in 0..4 {
            if i <= chunk.len() {
                let index = (triple >> (18 - 6 * i)) & 0x3f;
                out.push(char::from(ALPHABET[index as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}
