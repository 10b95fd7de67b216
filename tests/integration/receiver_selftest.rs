//! Self-tests for the webhook `Receiver` in `common/receiver.rs`,
//! talking to it over real TCP with a tiny hand-written HTTP client.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use crate::common::{Part, Receiver, Recorded, Reply};

const TIMEOUT: Duration = Duration::from_secs(10);

/// A response as the test client read it.
#[derive(Debug)]
struct Response {
    status: u16,
    /// The whole status line, e.g. `HTTP/1.1 204 No Content`.
    status_line: String,
    /// Names lower-cased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect to the receiver");
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
    stream
}

/// Everything the server sends until it closes the connection.
fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .expect("read the response until the server closes");
    raw
}

/// Parses one response, checking that it is framed as the receiver promises:
/// `Connection: close`, and a body of exactly `Content-Length` bytes.
fn parse_response(raw: &[u8]) -> Response {
    let end = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {:?}", String::from_utf8_lossy(raw)));
    let head = std::str::from_utf8(&raw[..end]).expect("UTF-8 response head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap().to_owned();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .map(|line| {
            let (name, value) = line.split_once(": ").expect("header line");
            (name.to_ascii_lowercase(), value.to_owned())
        })
        .collect();
    let response = Response {
        status,
        status_line,
        headers,
        body: raw[end + 4..].to_vec(),
    };
    assert_eq!(response.header("connection"), Some("close"), "{response:?}");
    if status == 204 {
        assert_eq!(response.header("content-length"), None, "{response:?}");
        assert!(response.body.is_empty(), "{response:?}");
    } else {
        let length: usize = response
            .header("content-length")
            .expect("Content-Length")
            .parse()
            .expect("numeric Content-Length");
        assert_eq!(response.body.len(), length, "{response:?}");
    }
    response
}

/// Sends `request` as is and reads the whole response.
fn exchange(addr: SocketAddr, request: &[u8]) -> Response {
    let mut stream = connect(addr);
    stream.write_all(request).unwrap();
    parse_response(&read_to_close(&mut stream))
}

/// A request with `Content-Length` framing.
fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (name, value) in headers {
        raw.push_str(&format!("{name}: {value}\r\n"));
    }
    raw.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut raw = raw.into_bytes();
    raw.extend_from_slice(body);
    raw
}

fn post_json(addr: SocketAddr, path: &str, json: &str) -> Response {
    exchange(
        addr,
        &request(
            "POST",
            path,
            &[("Content-Type", "application/json")],
            json.as_bytes(),
        ),
    )
}

/// A recorded request built directly, for parser-only tests.
fn recorded(content_type: &str, body: &[u8]) -> Recorded {
    Recorded {
        method: "POST".to_owned(),
        path: "/hook".to_owned(),
        headers: vec![("content-type".to_owned(), content_type.to_owned())],
        body: body.to_vec(),
        received_at: Instant::now(),
    }
}

/// The panic message of `f`, which must panic.
fn panic_message(f: impl FnOnce()) -> String {
    let payload = catch_unwind(AssertUnwindSafe(f)).expect_err("expected a panic");
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

#[test]
fn url_points_at_the_receiver() {
    let receiver = Receiver::start(vec![]);
    let port = receiver.addr().port();
    let expected = format!("http://127.0.0.1:{port}/api/webhooks/123/secrettoken");
    assert_eq!(receiver.url("/api/webhooks/123/secrettoken"), expected);
    assert_eq!(receiver.url("api/webhooks/123/secrettoken"), expected);
    assert!(receiver.requests().is_empty());
}

#[test]
fn replies_in_order_then_204() {
    let receiver = Receiver::start(vec![
        Reply::Status(500),
        Reply::Json(200, r#"{"id":"42"}"#.to_owned()),
    ]);
    let addr = receiver.addr();

    let first = post_json(addr, "/api/webhooks/123/tok?wait=true", r#"{"n":1}"#);
    assert_eq!(first.status_line, "HTTP/1.1 500 Internal Server Error");
    assert_eq!(first.header("content-length"), Some("0"));
    assert!(first.body.is_empty());

    let second = post_json(addr, "/api/webhooks/123/tok", r#"{"n":2}"#);
    assert_eq!(second.status, 200);
    assert_eq!(second.header("content-type"), Some("application/json"));
    assert_eq!(second.body, br#"{"id":"42"}"#);

    for n in 3..=4 {
        let other = post_json(addr, "/slack", &format!(r#"{{"n":{n}}}"#));
        assert_eq!(other.status_line, "HTTP/1.1 204 No Content");
    }

    let requests = receiver.requests();
    assert_eq!(requests.len(), 4);
    let numbers: Vec<_> = requests.iter().map(|r| r.json()["n"].clone()).collect();
    assert_eq!(numbers, [1, 2, 3, 4]);
    let first = &requests[0];
    assert_eq!(first.method, "POST");
    assert_eq!(first.path, "/api/webhooks/123/tok?wait=true");
    assert_eq!(requests[2].path, "/slack");
    assert_eq!(first.header("Content-Type"), Some("application/json"));
    assert_eq!(first.header("CONTENT-LENGTH"), Some("7"));
    assert_eq!(first.header("x-missing"), None);
    assert!(first.headers.iter().any(|(name, _)| name == "host"));
    assert!(requests
        .windows(2)
        .all(|pair| pair[0].received_at <= pair[1].received_at));
    assert!(receiver.errors().is_empty(), "{:?}", receiver.errors());
}

#[test]
fn rate_limited_like_discord() {
    let receiver = Receiver::start(vec![
        Reply::RateLimited {
            retry_after_secs: 1.5,
        },
        Reply::RateLimited {
            retry_after_secs: 2.0,
        },
    ]);
    let response = post_json(receiver.addr(), "/hook", "{}");
    assert_eq!(response.status_line, "HTTP/1.1 429 Too Many Requests");
    assert_eq!(response.header("retry-after"), Some("2"));
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(
        std::str::from_utf8(&response.body).unwrap(),
        r#"{"message":"You are being rate limited.","retry_after":1.5,"global":false}"#
    );

    let response = post_json(receiver.addr(), "/hook", "{}");
    assert_eq!(response.status, 429);
    assert_eq!(response.header("retry-after"), Some("2"));
    let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(body["retry_after"], 2.0);
    assert_eq!(body["global"], false);

    assert_eq!(post_json(receiver.addr(), "/hook", "{}").status, 204);
    assert_eq!(receiver.wait_for(3, TIMEOUT).len(), 3);
}

#[test]
fn hang_records_then_never_answers_until_dropped() {
    let receiver = Receiver::start(vec![Reply::Hang]);
    let addr = receiver.addr();
    let mut hung = connect(addr);
    hung.write_all(&request("POST", "/hang", &[], b"{\"x\":1}"))
        .unwrap();

    let requests = receiver.wait_for(1, TIMEOUT);
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/hang");
    assert_eq!(requests[0].body, b"{\"x\":1}");

    hung.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0; 64];
    let err = hung
        .read(&mut buf)
        .expect_err("a hung request gets no answer");
    assert!(
        matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{err}"
    );

    // Other connections are served meanwhile, with the default reply.
    assert_eq!(post_json(addr, "/next", "{}").status, 204);
    assert_eq!(receiver.requests().len(), 2);

    // Dropping the receiver releases the hung connection promptly, without
    // a byte of response.
    let started = Instant::now();
    drop(receiver);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "drop took {:?}",
        started.elapsed()
    );
    hung.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    match hung.read(&mut buf) {
        Ok(n) => assert_eq!(n, 0, "unexpected data {:?}", &buf[..n]),
        Err(err) => assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}"),
    }
}

#[test]
fn drop_releases_a_connection_that_never_sends() {
    let receiver = Receiver::start(vec![]);
    let mut idle = connect(receiver.addr());
    // Make sure the connection has been accepted before dropping.
    assert_eq!(post_json(receiver.addr(), "/x", "{}").status, 204);
    let started = Instant::now();
    drop(receiver);
    assert!(started.elapsed() < Duration::from_secs(2));
    let mut buf = [0; 16];
    match idle.read(&mut buf) {
        Ok(n) => assert_eq!(n, 0),
        Err(err) => assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}"),
    }
}

#[test]
fn close_answers_nothing() {
    let receiver = Receiver::start(vec![Reply::Close]);
    let mut stream = connect(receiver.addr());
    stream
        .write_all(&request("POST", "/close", &[], b"{}"))
        .unwrap();
    let mut raw = Vec::new();
    match stream.read_to_end(&mut raw) {
        Ok(_) => assert!(raw.is_empty(), "{:?}", String::from_utf8_lossy(&raw)),
        Err(err) => assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}"),
    }
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/close");
    assert_eq!(post_json(receiver.addr(), "/after", "{}").status, 204);
}

/// A Discord-style form: `payload_json` plus a binary file whose data holds
/// CRLFs, `--`, and a near miss of the delimiter.
fn discord_form(boundary: &str, file: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
    body.extend_from_slice(
        b"Content-Disposition: form-data; name=\"payload_json\"\r\n\
          Content-Type: application/json\r\n\r\n",
    );
    body.extend_from_slice(br#"{"content":"deploy ok","attachments":[{"id":0}]}"#);
    body.extend_from_slice(format!("\r\n--{boundary}\r\n").as_bytes());
    body.extend_from_slice(
        b"content-disposition: form-data; name=\"files[0]\"; filename=\"pass \\\"1\\\".log\"\r\n\
          content-type: application/octet-stream\r\n\r\n",
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}\r\n").as_bytes());
    body.extend_from_slice(b"Content-Disposition: form-data; name=empty\r\n\r\n");
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

fn binary_file(boundary: &str) -> Vec<u8> {
    let mut file = b"\x00\xff\r\n--\r\n\r\n-- not a boundary\r\n".to_vec();
    // The boundary minus its last byte, right after CRLF "--".
    file.extend_from_slice(format!("\r\n--{}", &boundary[..boundary.len() - 1]).as_bytes());
    file.extend_from_slice(b"X\r\n--\x00\x01\x02\r\n");
    file
}

fn check_discord_parts(parts: &[Part], file: &[u8]) {
    assert_eq!(parts.len(), 3, "{parts:?}");
    assert_eq!(parts[0].name, "payload_json");
    assert_eq!(parts[0].filename, None);
    assert_eq!(parts[0].content_type.as_deref(), Some("application/json"));
    assert_eq!(parts[0].json()["content"], "deploy ok");
    assert_eq!(
        parts[1],
        Part {
            name: "files[0]".to_owned(),
            filename: Some("pass \"1\".log".to_owned()),
            content_type: Some("application/octet-stream".to_owned()),
            body: file.to_vec(),
        }
    );
    assert_eq!(parts[2].name, "empty");
    assert_eq!(parts[2].content_type, None);
    assert_eq!(parts[2].text(), "");
}

#[test]
fn multipart_over_tcp_with_expect_continue() {
    let receiver = Receiver::start(vec![Reply::Json(200, r#"{"id":"1"}"#.to_owned())]);
    let boundary = "----gitops-run-Boundary-1234";
    let file = binary_file(boundary);
    let body = discord_form(boundary, &file);

    let mut stream = connect(receiver.addr());
    let head = format!(
        "POST /api/webhooks/123/secrettoken?wait=true HTTP/1.1\r\n\
         Host: 127.0.0.1\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\n\
         Content-Length: {}\r\n\
         Expect: 100-continue\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    // The receiver must ask for the body before anything else happens.
    let interim = b"HTTP/1.1 100 Continue\r\n\r\n";
    let mut got = vec![0; interim.len()];
    stream.read_exact(&mut got).unwrap();
    assert_eq!(got, interim, "{:?}", String::from_utf8_lossy(&got));
    stream.write_all(&body).unwrap();
    let response = parse_response(&read_to_close(&mut stream));
    assert_eq!(response.status, 200);
    assert_eq!(response.body, br#"{"id":"1"}"#);

    let requests = receiver.wait_for(1, TIMEOUT);
    assert_eq!(requests[0].body, body);
    assert_eq!(requests[0].header("expect"), Some("100-continue"));
    check_discord_parts(&requests[0].multipart(), &file);
}

#[test]
fn multipart_with_a_quoted_boundary() {
    let boundary = "a'()+_,-./:=?b with space";
    let file = binary_file(boundary);
    let body = discord_form(boundary, &file);
    let request = recorded(
        &format!("Multipart/Form-Data ; boundary=\"{boundary}\""),
        &body,
    );
    check_discord_parts(&request.multipart(), &file);

    // Without the optional final CRLF as well.
    let request = recorded(
        &format!("multipart/form-data; boundary=\"{boundary}\""),
        body.strip_suffix(b"\r\n").unwrap(),
    );
    check_discord_parts(&request.multipart(), &file);
}

#[test]
fn chunked_request_body() {
    let receiver = Receiver::start(vec![]);
    let json = br#"{"text":"deployed abc123 to web-1","blocks":[]}"#;
    let mut raw = b"POST /services/T0/B0/XYZ HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                    Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        .to_vec();
    for (index, chunk) in json.chunks(7).enumerate() {
        if index == 1 {
            raw.extend_from_slice(format!("{:X};ext=1\r\n", chunk.len()).as_bytes());
        } else {
            raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        }
        raw.extend_from_slice(chunk);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\nX-Trailer: yes\r\n\r\n");

    // Sent in small pieces to exercise partial reads.
    let mut stream = connect(receiver.addr());
    for piece in raw.chunks(5) {
        stream.write_all(piece).unwrap();
        stream.flush().unwrap();
    }
    let response = parse_response(&read_to_close(&mut stream));
    assert_eq!(response.status, 204);

    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].body, json);
    assert_eq!(requests[0].header("transfer-encoding"), Some("chunked"));
    assert_eq!(requests[0].json()["text"], "deployed abc123 to web-1");
}

#[test]
fn malformed_http_gets_400_and_keeps_the_reply() {
    let receiver = Receiver::start(vec![Reply::Status(500)]);
    let addr = receiver.addr();
    let bad: &[&[u8]] = &[
        b"POST /hook HTTP/1.1\nHost: x\nContent-Length: 0\n\n",
        b"POST /hook HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST /hook HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        b"POST /hook HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST /hook HTTP/1.1\r\nBad Header: x\r\n\r\n",
    ];
    for raw in bad {
        let response = exchange(addr, raw);
        assert_eq!(
            response.status,
            400,
            "{:?}: {response:?}",
            String::from_utf8_lossy(raw)
        );
    }
    assert!(receiver.requests().is_empty());
    assert_eq!(
        receiver.errors().len(),
        bad.len(),
        "{:?}",
        receiver.errors()
    );
    // The scripted reply was not used up by the malformed requests.
    assert_eq!(post_json(addr, "/hook", "{}").status, 500);
}

#[test]
#[should_panic(expected = "missing")]
fn truncated_multipart_over_tcp_panics() {
    let receiver = Receiver::start(vec![]);
    let body = b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nvalue\r\n--b";
    let raw = request(
        "POST",
        "/hook",
        &[("Content-Type", "multipart/form-data; boundary=b")],
        body,
    );
    let mut stream = connect(receiver.addr());
    stream.write_all(&raw).unwrap();
    read_to_close(&mut stream);
    receiver.wait_for(1, TIMEOUT)[0].multipart();
}

/// A body with boundary `b`: `--b` CRLF, then `rest`.
fn form_b(rest: &str) -> String {
    format!("--b\r\n{rest}")
}

#[test]
fn malformed_multipart_panics() {
    const CT: &str = "multipart/form-data; boundary=b";
    const DISPOSITION: &str = "Content-Disposition: form-data; name=\"a\"";
    let ok_part = format!("{DISPOSITION}\r\n\r\nvalue");
    let good = form_b(&format!("{ok_part}\r\n--b--\r\n"));
    let parts = recorded(CT, good.as_bytes()).multipart();
    assert_eq!(parts[0].text(), "value");

    // (content type, body, expected part of the panic message)
    let cases: Vec<(&str, String, &str)> = vec![
        // The Content-Type header.
        ("application/json", good.clone(), "not multipart/form-data"),
        (
            "multipart/mixed; boundary=b",
            good.clone(),
            "not multipart/form-data",
        ),
        ("multipart/form-data", good.clone(), "no boundary"),
        (
            "multipart/form-data; boundary=b; charset=utf-8",
            good.clone(),
            "unexpected parameter",
        ),
        (
            "multipart/form-data; boundary=",
            good.clone(),
            "empty or unquoted",
        ),
        (
            "multipart/form-data; boundary=a:b",
            good.clone(),
            "expected ';'",
        ),
        (
            "multipart/form-data; boundary=\"b\"x",
            good.clone(),
            "expected ';'",
        ),
        (
            "multipart/form-data; boundary=\"b",
            good.clone(),
            "unterminated",
        ),
        // Delimiters and line endings.
        (
            "multipart/form-data; boundary=c",
            good.clone(),
            "does not start",
        ),
        (CT, format!("preamble\r\n{good}"), "does not start"),
        (CT, format!("\r\n{good}"), "does not start"),
        (CT, good.replace("\r\n", "\n"), "instead of CRLF"),
        (CT, format!("--b\n{ok_part}\r\n--b--"), "instead of CRLF"),
        (
            CT,
            form_b(&format!("{DISPOSITION}\n\nvalue\r\n--b--")),
            "not ended by an empty line",
        ),
        (
            CT,
            form_b(&format!("{DISPOSITION}\nX: y\r\n\r\nv\r\n--b--")),
            "bare CR or LF",
        ),
        (
            CT,
            format!("--b \r\n{ok_part}\r\n--b--"),
            "transport padding",
        ),
        (
            CT,
            form_b(&format!("{ok_part}\r\n--bb\r\n--b--")),
            "boundary inside",
        ),
        (CT, form_b(&format!("{ok_part}\r\n--b")), "missing"),
        (CT, form_b(&format!("{ok_part}--b--")), "missing"),
        (
            CT,
            form_b(&format!("{ok_part}\r\n--b--\r\nepilogue")),
            "after the close",
        ),
        (
            CT,
            form_b(&format!("{ok_part}\r\n--b--\r\n\r\n")),
            "after the close",
        ),
        (CT, "--b--".to_owned(), "no parts"),
        // Part headers.
        (CT, form_b("\r\nvalue\r\n--b--"), "no Content-Disposition"),
        (
            CT,
            form_b("Content-Type: text/plain\r\n\r\nvalue\r\n--b--"),
            "no Content-Disposition",
        ),
        (
            CT,
            form_b("Content-Disposition: attachment; name=\"a\"\r\n\r\nv\r\n--b--"),
            "not form-data",
        ),
        (
            CT,
            form_b("Content-Disposition: form-data; filename=\"a\"\r\n\r\nv\r\n--b--"),
            "no name parameter",
        ),
        (
            CT,
            form_b(&format!(
                "{DISPOSITION}; filename*=UTF-8''x\r\n\r\nv\r\n--b--"
            )),
            "filename*",
        ),
        (
            CT,
            form_b(&format!("{DISPOSITION}; name=\"c\"\r\n\r\nv\r\n--b--")),
            "twice",
        ),
        (
            CT,
            form_b("Content-Disposition: form-data; name = \"a\"\r\n\r\nv\r\n--b--"),
            "no '='",
        ),
        (
            CT,
            form_b(&format!(
                "Content-Transfer-Encoding: base64\r\n{ok_part}\r\n--b--"
            )),
            "not allowed",
        ),
        (
            CT,
            form_b(&format!(
                "{DISPOSITION}\r\n content-type: x/y\r\n\r\nv\r\n--b--"
            )),
            "folded",
        ),
        (
            CT,
            form_b(&format!(
                "{DISPOSITION}\r\nContent-Type: text\r\n\r\nv\r\n--b--"
            )),
            "type/subtype",
        ),
        (
            CT,
            form_b(&format!("{DISPOSITION}\r\n{ok_part}\r\n--b--")),
            "appears twice",
        ),
    ];
    for (content_type, body, expected) in &cases {
        let request = recorded(content_type, body.as_bytes());
        let message = panic_message(|| {
            request.multipart();
        });
        assert!(
            message.contains(expected),
            "Content-Type {content_type:?}, body {body:?}:\nexpected a panic mentioning \
             {expected:?}, got {message:?}"
        );
    }

    // Too long a boundary (71 characters) and a trailing space.
    let long = "x".repeat(71);
    let message = panic_message(|| {
        recorded(&format!("multipart/form-data; boundary={long}"), b"").multipart();
    });
    assert!(message.contains("1 to 70"), "{message}");
    let message = panic_message(|| {
        recorded("multipart/form-data; boundary=\"b \"", b"").multipart();
    });
    assert!(message.contains("1 to 70"), "{message}");

    // No Content-Type at all.
    let mut request = recorded("x/y", good.as_bytes());
    request.headers.clear();
    let message = panic_message(|| {
        request.multipart();
    });
    assert!(message.contains("no Content-Type"), "{message}");
}

#[test]
fn json_panics_with_the_body() {
    let request = recorded("application/json", b"{not json at all");
    let message = panic_message(|| {
        request.json();
    });
    assert!(message.contains("not valid JSON"), "{message}");
    assert!(message.contains("{not json at all"), "{message}");
}

#[test]
fn nonsensical_replies_are_refused() {
    let message = panic_message(|| {
        Receiver::start(vec![Reply::Status(99)]);
    });
    assert!(message.contains("200..=599"), "{message}");
    let message = panic_message(|| {
        Receiver::start(vec![Reply::Json(204, "{}".to_owned())]);
    });
    assert!(message.contains("204"), "{message}");
    let message = panic_message(|| {
        Receiver::start(vec![Reply::RateLimited {
            retry_after_secs: f64::NAN,
        }]);
    });
    assert!(message.contains("finite"), "{message}");
}
