//! One HTTP/1.1 request read from a connection within limits (head size,
//! body size, a timeout per read and a deadline for the whole request), and
//! the answer written back. Every connection carries one request and is then
//! closed.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

/// The request line and headers together may not exceed this.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// More headers than this is not a webhook.
pub const MAX_HEADERS: usize = 64;
/// Longest chunk-size line or trailer line of a chunked body.
const MAX_CHUNK_LINE_BYTES: usize = 1024;
/// Most trailer lines after a chunked body.
const MAX_TRAILERS: usize = 16;
/// Longest wait for the next bytes from the client.
pub const READ_TIMEOUT_SECS: u64 = 5;
/// Longest wait for the client to take the answer.
pub const WRITE_TIMEOUT_SECS: u64 = 5;
/// After an answer sent before the body was read, how much of the rest is
/// read and dropped (so the client sees the answer, not a reset), and for
/// how long at most.
const DRAIN_MAX_BYTES: usize = 64 * 1024;
const DRAIN_MAX_MILLIS: u64 = 500;
/// Size of one read.
const READ_CHUNK_BYTES: usize = 8 * 1024;

/// The headers of a request: lower-case names, raw values, in order.
#[derive(Debug, Default, Clone)]
pub struct Headers(Vec<(String, Vec<u8>)>);

impl Headers {
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, Vec<u8>)>) -> Headers {
        Headers(
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
        )
    }

    /// Every value of the header `name` (lower case).
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of `name`, as trimmed text (lossy).
    pub fn text(&self, name: &str) -> Option<String> {
        self.all(name)
            .next()
            .map(|v| String::from_utf8_lossy(v.trim_ascii()).into_owned())
    }
}

/// A request read whole.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

/// Why no request could be read. Each maps to an answer (or to none).
#[derive(Debug)]
pub enum ReadError {
    /// The deadline passed or the client went quiet: 408, then close.
    Timeout,
    /// The client closed the connection before a whole request: no answer.
    Closed,
    /// The head exceeded [`MAX_HEAD_BYTES`] or [`MAX_HEADERS`]: 431.
    HeadTooLarge,
    /// The body exceeds the limit: 413, without reading the rest.
    BodyTooLarge,
    /// Not valid HTTP/1.x, or ambiguous framing: 400.
    Malformed(&'static str),
    /// A transfer coding other than chunked: 501.
    UnsupportedCoding,
    /// Reading or writing failed otherwise: no answer.
    Io(io::Error),
}

/// What a connection must offer: a byte stream whose reads can be bounded
/// in time.
pub trait Conn: Read + Write {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()>;
}

impl Conn for TcpStream {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }
}

/// Buffered input bound to a deadline.
struct Input<'a, C: Conn> {
    conn: &'a mut C,
    buf: Vec<u8>,
    pos: usize,
    deadline: Instant,
}

impl<C: Conn> Input<'_, C> {
    /// Read more bytes into the buffer; at least one, or an error.
    fn fill(&mut self) -> Result<(), ReadError> {
        let mut chunk = [0u8; READ_CHUNK_BYTES];
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ReadError::Timeout);
            }
            let wait = left.min(Duration::from_secs(READ_TIMEOUT_SECS));
            self.conn
                .set_read_timeout(Some(wait))
                .map_err(ReadError::Io)?;
            match self.conn.read(&mut chunk) {
                Ok(0) => return Err(ReadError::Closed),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(ReadError::Timeout)
                }
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
    }

    fn available(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Append exactly `n` bytes to `out`.
    fn take_into(&mut self, mut n: u64, out: &mut Vec<u8>) -> Result<(), ReadError> {
        while n > 0 {
            if self.available().is_empty() {
                self.buf.clear();
                self.pos = 0;
                self.fill()?;
            }
            let have = self.available();
            let take = have.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            out.extend_from_slice(&have[..take]);
            self.pos += take;
            n -= take as u64;
        }
        Ok(())
    }

    /// One CRLF- (or LF-) terminated line, without its end, at most `max` bytes.
    fn line(&mut self, max: usize) -> Result<Vec<u8>, ReadError> {
        loop {
            if let Some(i) = self.available().iter().position(|&b| b == b'\n') {
                let mut line = self.available()[..i].to_vec();
                self.pos += i + 1;
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(line);
            }
            if self.available().len() > max {
                return Err(ReadError::Malformed("chunk line too long"));
            }
            self.fill()?;
        }
    }
}

/// Read one request from `conn` before `deadline`: the head, then the body
/// as its framing says, refusing a declared length above `max_body` before
/// reading any of it, and stopping a chunked body as soon as it passes
/// `max_body`. Answers `Expect: 100-continue` once the head is acceptable.
pub fn read_request<C: Conn>(
    conn: &mut C,
    max_body: u64,
    deadline: Instant,
) -> Result<Request, ReadError> {
    let mut input = Input {
        conn,
        buf: Vec::with_capacity(READ_CHUNK_BYTES),
        pos: 0,
        deadline,
    };
    let (method, path, headers, head_len) = loop {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut slots);
        match req.parse(&input.buf) {
            Ok(httparse::Status::Complete(len)) => {
                let headers = Headers::from_pairs(
                    req.headers
                        .iter()
                        .map(|h| (h.name.to_string(), h.value.to_vec())),
                );
                break (
                    req.method.unwrap_or_default().to_string(),
                    req.path.unwrap_or_default().to_string(),
                    headers,
                    len,
                );
            }
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => return Err(ReadError::HeadTooLarge),
            Err(_) => return Err(ReadError::Malformed("invalid request head")),
        }
        if input.buf.len() >= MAX_HEAD_BYTES {
            return Err(ReadError::HeadTooLarge);
        }
        match input.fill() {
            // A client that connects and closes without a byte is no request.
            Err(ReadError::Closed) if input.buf.is_empty() => return Err(ReadError::Closed),
            Err(ReadError::Closed) => return Err(ReadError::Malformed("incomplete request head")),
            other => other?,
        }
    };
    if head_len > MAX_HEAD_BYTES {
        return Err(ReadError::HeadTooLarge);
    }
    input.pos = head_len;

    let framing = framing(&headers, max_body)?;
    let expects_continue = headers
        .text("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    if expects_continue && input.available().is_empty() && framing != Framing::Length(0) {
        input
            .conn
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .and_then(|_| input.conn.flush())
            .map_err(ReadError::Io)?;
    }

    let mut body = Vec::new();
    match framing {
        Framing::Length(n) => {
            body.reserve(usize::try_from(n).unwrap_or(0));
            input.take_into(n, &mut body).map_err(incomplete)?;
        }
        Framing::Chunked => read_chunked(&mut input, max_body, &mut body).map_err(incomplete)?,
    }
    Ok(Request {
        method,
        path,
        headers,
        body,
    })
}

/// A client that closes half-way through the body sent a bad request.
fn incomplete(e: ReadError) -> ReadError {
    match e {
        ReadError::Closed => ReadError::Malformed("incomplete body"),
        other => other,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
}

/// How the body is delimited. Both a length and a transfer coding, several
/// lengths, or a length that is not a plain number are refused: a proxy in
/// front might read the request differently (request smuggling).
fn framing(headers: &Headers, max_body: u64) -> Result<Framing, ReadError> {
    let codings: Vec<&[u8]> = headers.all("transfer-encoding").collect();
    let lengths: Vec<&[u8]> = headers.all("content-length").collect();
    if !codings.is_empty() {
        if !lengths.is_empty() {
            return Err(ReadError::Malformed(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        if codings.len() == 1 && codings[0].trim_ascii().eq_ignore_ascii_case(b"chunked") {
            return Ok(Framing::Chunked);
        }
        return Err(ReadError::UnsupportedCoding);
    }
    match lengths.as_slice() {
        [] => Ok(Framing::Length(0)),
        [one] => {
            let text = one.trim_ascii();
            if text.is_empty() || text.len() > 19 || !text.iter().all(u8::is_ascii_digit) {
                return Err(ReadError::Malformed("invalid Content-Length"));
            }
            let n: u64 = std::str::from_utf8(text)
                .ok()
                .and_then(|t| t.parse().ok())
                .ok_or(ReadError::Malformed("invalid Content-Length"))?;
            if n > max_body {
                return Err(ReadError::BodyTooLarge);
            }
            Ok(Framing::Length(n))
        }
        _ => Err(ReadError::Malformed("several Content-Length headers")),
    }
}

fn read_chunked<C: Conn>(
    input: &mut Input<'_, C>,
    max_body: u64,
    body: &mut Vec<u8>,
) -> Result<(), ReadError> {
    loop {
        let line = input.line(MAX_CHUNK_LINE_BYTES)?;
        let size_text = line.split(|&b| b == b';').next().unwrap_or_default();
        let size_text = size_text.trim_ascii();
        if size_text.is_empty() || size_text.len() > 15 {
            return Err(ReadError::Malformed("invalid chunk size"));
        }
        let size = std::str::from_utf8(size_text)
            .ok()
            .and_then(|t| u64::from_str_radix(t, 16).ok())
            .ok_or(ReadError::Malformed("invalid chunk size"))?;
        if size == 0 {
            for _ in 0..=MAX_TRAILERS {
                if input.line(MAX_CHUNK_LINE_BYTES)?.is_empty() {
                    return Ok(());
                }
            }
            return Err(ReadError::Malformed("too many trailers"));
        }
        if body.len() as u64 + size > max_body {
            return Err(ReadError::BodyTooLarge);
        }
        input.take_into(size, body)?;
        if !input.line(2)?.is_empty() {
            return Err(ReadError::Malformed("chunk not followed by CRLF"));
        }
    }
}

/// An answer: status, reason and a short plain-text body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: &'static str,
    /// Extra header lines, each without CRLF.
    pub headers: Vec<String>,
}

impl Response {
    pub fn new(status: u16, body: &'static str) -> Response {
        Response {
            status,
            body,
            headers: Vec::new(),
        }
    }

    /// The bytes on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for h in &self.headers {
            out.push_str(h);
            out.push_str("\r\n");
        }
        out.push_str("Connection: close\r\n");
        if self.status != 204 {
            out.push_str("Content-Type: text/plain; charset=utf-8\r\n");
            out.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        out.push_str("\r\n");
        if self.status != 204 {
            out.push_str(self.body);
        }
        out.into_bytes()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        _ => "Unknown",
    }
}

/// Send `response` and close. When the request was not read to its end,
/// half-close first and drop a bounded amount of what the client still
/// sends, so that it reads the answer rather than a connection reset.
pub fn answer(stream: &mut TcpStream, response: &Response, read_whole: bool) -> io::Result<()> {
    stream.set_write_timeout(Some(Duration::from_secs(WRITE_TIMEOUT_SECS)))?;
    stream.write_all(&response.to_bytes())?;
    stream.flush()?;
    if !read_whole {
        let _ = stream.shutdown(Shutdown::Write);
        let until = Instant::now() + Duration::from_millis(DRAIN_MAX_MILLIS);
        let mut dropped = 0usize;
        let mut chunk = [0u8; READ_CHUNK_BYTES];
        while dropped < DRAIN_MAX_BYTES {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
                break;
            }
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => dropped += n,
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A scripted connection: each read returns the next piece; when the
    /// pieces run out, reads time out. Writes are collected.
    struct Script {
        pieces: VecDeque<Vec<u8>>,
        written: Vec<u8>,
        eof_at_end: bool,
    }

    impl Script {
        fn new(pieces: &[&[u8]], eof_at_end: bool) -> Script {
            Script {
                pieces: pieces.iter().map(|p| p.to_vec()).collect(),
                written: Vec::new(),
                eof_at_end,
            }
        }
    }

    impl Read for Script {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            match self.pieces.pop_front() {
                Some(mut p) => {
                    let n = p.len().min(out.len());
                    out[..n].copy_from_slice(&p[..n]);
                    if n < p.len() {
                        p.drain(..n);
                        self.pieces.push_front(p);
                    }
                    Ok(n)
                }
                None if self.eof_at_end => Ok(0),
                None => Err(io::ErrorKind::WouldBlock.into()),
            }
        }
    }

    impl Write for Script {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.written.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Conn for Script {
        fn set_read_timeout(&mut self, _: Option<Duration>) -> io::Result<()> {
            Ok(())
        }
    }

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(30)
    }

    #[test]
    fn reads_a_request_split_across_reads() {
        let mut c = Script::new(
            &[
                b"POST /hook HTTP/1.1\r\nHost: x\r\nX-GitHub-",
                b"Event: push\r\nContent-Length: 5\r\n\r\nhel",
                b"lo",
            ],
            true,
        );
        let req = read_request(&mut c, 100, later()).unwrap();
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, "/hook");
        assert_eq!(req.headers.text("x-github-event").as_deref(), Some("push"));
        assert_eq!(req.body, b"hello");
    }

    #[test]
    fn a_declared_length_above_the_limit_is_refused_before_reading() {
        let mut c = Script::new(
            &[b"POST / HTTP/1.1\r\nContent-Length: 101\r\nExpect: 100-continue\r\n\r\n"],
            false,
        );
        assert!(matches!(
            read_request(&mut c, 100, later()),
            Err(ReadError::BodyTooLarge)
        ));
        assert!(c.written.is_empty(), "no 100 Continue for a refused body");
    }

    #[test]
    fn expect_continue_is_answered_for_an_acceptable_body() {
        let mut c = Script::new(
            &[
                b"POST / HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n",
                b"{}",
            ],
            true,
        );
        let req = read_request(&mut c, 100, later()).unwrap();
        assert_eq!(req.body, b"{}");
        assert_eq!(c.written, b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn chunked_bodies_are_decoded_and_capped() {
        let mut c = Script::new(
            &[b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: 1\r\n\r\n"],
            true,
        );
        assert_eq!(read_request(&mut c, 5, later()).unwrap().body, b"abcde");

        let mut c = Script::new(
            &[b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n2\r\n"],
            false,
        );
        assert!(matches!(
            read_request(&mut c, 5, later()),
            Err(ReadError::BodyTooLarge)
        ));
    }

    #[test]
    fn ambiguous_or_broken_framing_is_refused() {
        let cases: &[&[u8]] = &[
            b"POST / HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY",
            b"NOT HTTP\r\n\r\n",
        ];
        for raw in cases {
            let mut c = Script::new(&[raw], true);
            let got = read_request(&mut c, 100, later());
            assert!(
                matches!(got, Err(ReadError::Malformed(_))),
                "{:?}: {got:?}",
                String::from_utf8_lossy(raw)
            );
        }
        let mut c = Script::new(
            &[b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"],
            true,
        );
        assert!(matches!(
            read_request(&mut c, 100, later()),
            Err(ReadError::UnsupportedCoding)
        ));
    }

    #[test]
    fn heads_are_bounded() {
        let mut big = b"POST / HTTP/1.1\r\nX-Pad: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEAD_BYTES));
        let mut c = Script::new(&[&big], false);
        assert!(matches!(
            read_request(&mut c, 100, later()),
            Err(ReadError::HeadTooLarge)
        ));
        let mut many = b"POST / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend(format!("X-{i}: 1\r\n").as_bytes());
        }
        many.extend(b"\r\n");
        let mut c = Script::new(&[&many], true);
        assert!(matches!(
            read_request(&mut c, 100, later()),
            Err(ReadError::HeadTooLarge)
        ));
    }

    #[test]
    fn silence_and_a_passed_deadline_time_out_and_early_close_is_noted() {
        let mut c = Script::new(&[b"POST / HTTP/1.1\r\n"], false);
        assert!(matches!(
            read_request(&mut c, 100, later()),
            Err(ReadError::Timeout)
        ));
        let mut c = Script::new(&[b"POST / HTTP/1.1\r\n\r\n"], true);
        assert!(matches!(
            read_request(&mut c, 100, Instant::now()),
            Err(ReadError::Timeout)
        ));
        let mut c = Script::new(&[], true);
        assert!(matches!(
            read_request(&mut c, 100, later()),
            Err(ReadError::Closed)
        ));
        let mut c = Script::new(&[b"POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\nabc"], true);
        assert!(matches!(
            read_request(&mut c, 100, later()),
            Err(ReadError::Malformed("incomplete body"))
        ));
    }

    #[test]
    fn responses_close_and_204_has_no_body() {
        let r = Response::new(202, "pass requested\n").to_bytes();
        let text = String::from_utf8(r).unwrap();
        assert!(text.starts_with("HTTP/1.1 202 Accepted\r\n"), "{text}");
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("Content-Length: 15\r\n\r\npass requested\n"));
        let text = String::from_utf8(Response::new(204, "ignored").to_bytes()).unwrap();
        assert_eq!(text, "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
    }
}
