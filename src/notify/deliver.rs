//! Delivery of a rendered message over HTTP: signing, a bounded retry policy
//! (a pure function of what the server answered), and the request itself.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::Duration;

use super::render::{body, Body};
use super::{Event, Target};
use crate::log::{debug, info};

/// Delivery attempts for one message (429, 5xx and connection errors are retried).
pub const MAX_ATTEMPTS: u32 = 3;
/// Wait before the second and third attempt after a 5xx or connection error.
pub const RETRY_DELAY_MS: [u64; 2] = [1000, 3000];
/// Longest `retry_after` honoured for a 429; a longer one gives up.
pub const MAX_RETRY_AFTER_SECS: f64 = 10.0;
/// Time allowed to connect to the webhook's host.
pub const CONNECT_TIMEOUT_SECS: u64 = 5;
/// Header carrying the HMAC-SHA256 of the body when a secret is configured.
pub const SIGNATURE_HEADER: &str = "X-Gitops-Run-Signature-256";
/// Header naming the event.
pub const EVENT_HEADER: &str = "X-Gitops-Run-Event";
/// `sha256=<hex>` of HMAC-SHA256 over `body` with `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Scheme and host of a URL: enough to recognise it in a log, never its token.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.split(['/', '?', '#']).next().unwrap_or("");
            let host = host.rsplit('@').next().unwrap_or(host);
            format!("{scheme}://{host}/…")
        }
        None => "(invalid URL)".into(),
    }
}

/// Whether `url` can be sent to at all: an http(s) URL with a host that the HTTP
/// client accepts. Checked once when the options are read, so a malformed URL is
/// reported once instead of being retried on every message.
pub fn check_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err("is not http(s)".into());
    }
    match ureq::http::Uri::try_from(url) {
        Ok(uri) if uri.host().is_some_and(|h| !h.is_empty()) => Ok(()),
        Ok(_) => Err("has no host".into()),
        Err(e) => Err(format!("is malformed ({e})")),
    }
}

/// How one delivery attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Delivered,
    /// 429 with the server's `retry_after` in seconds.
    RateLimited(f64),
    /// 413: the message is too large.
    TooLarge,
    /// A 5xx or a connection error: worth another try.
    Transient(String),
    /// Anything else (4xx): another try would get the same answer.
    Permanent(String),
}

/// When to try again. The default is the production policy; tests hand in zero delays.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all for one message (a resend without the attachment after a
    /// 413 is not counted).
    pub max_attempts: u32,
    /// Wait before the second, third... attempt after a transient failure.
    pub delays: Vec<Duration>,
    /// Longest `retry_after` honoured for a 429; a longer one gives up.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: MAX_ATTEMPTS,
            delays: RETRY_DELAY_MS
                .iter()
                .map(|ms| Duration::from_millis(*ms))
                .collect(),
            max_retry_after: Duration::from_secs_f64(MAX_RETRY_AFTER_SECS),
        }
    }
}

/// What to do after an answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Done,
    /// Send again after waiting this long.
    Wait(Duration),
    /// Send again at once, without the log attachment.
    WithoutAttachment,
    /// Stop trying; the string says why.
    GiveUp(String),
}

impl RetryPolicy {
    /// The step after attempt number `attempt` (1-based) got `answer`;
    /// `with_file` says whether that attempt carried the log attachment.
    pub fn next(&self, attempt: u32, answer: &Answer, with_file: bool) -> Step {
        let last = attempt >= self.max_attempts;
        match answer {
            Answer::Delivered => Step::Done,
            Answer::TooLarge if with_file => Step::WithoutAttachment,
            Answer::TooLarge => Step::GiveUp("413 even without the attachment".into()),
            Answer::RateLimited(secs) if !last && *secs <= self.max_retry_after.as_secs_f64() => {
                Step::Wait(Duration::from_secs_f64(secs.max(0.0)))
            }
            Answer::RateLimited(secs) => {
                Step::GiveUp(format!("rate limited (retry after {secs:.1}s)"))
            }
            Answer::Transient(_) if !last => {
                let i = (attempt as usize).saturating_sub(1);
                let wait = self
                    .delays
                    .get(i)
                    .or(self.delays.last())
                    .copied()
                    .unwrap_or_default();
                Step::Wait(wait)
            }
            Answer::Transient(why) | Answer::Permanent(why) => Step::GiveUp(why.clone()),
        }
    }
}

/// Send `e` with the production retry policy, sleeping between attempts. Returns
/// whether it was delivered; failures are logged, never raised.
pub fn send(target: &Target, e: &Event) -> bool {
    let agent = agent(target);
    send_with(
        &RetryPolicy::default(),
        |with_file| post(&agent, target, e, &body(target, e, with_file)),
        std::thread::sleep,
        &redact_url(&target.url),
        e.event.as_str(),
    )
}

/// The delivery loop: `post` makes one attempt, `sleep` waits.
pub fn send_with(
    policy: &RetryPolicy,
    mut post: impl FnMut(bool) -> Answer,
    sleep: impl Fn(Duration),
    shown: &str,
    event: &str,
) -> bool {
    let mut with_file = true;
    let mut attempt = 1;
    loop {
        let answer = post(with_file);
        match policy.next(attempt, &answer, with_file) {
            Step::Done => {
                debug!("notification {event} delivered to {shown}");
                return true;
            }
            Step::WithoutAttachment => {
                info!("notification to {shown} was too large (413); sending it again without the log attachment");
                with_file = false;
                continue;
            }
            Step::Wait(wait) => {
                debug!(
                    "notification to {shown} not delivered ({answer:?}); retrying in {} ms",
                    wait.as_millis()
                );
                sleep(wait);
            }
            Step::GiveUp(why) => {
                info!("notification to {shown} failed: {why}; giving up (the pass's result is unaffected)");
                return false;
            }
        }
        attempt += 1;
    }
}

fn agent(target: &Target) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(CONNECT_TIMEOUT_SECS)))
        .timeout_global(Some(target.timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(concat!("gitops-run/", env!("CARGO_PKG_VERSION")))
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::PlatformVerifier)
                .unversioned_rustls_crypto_provider(std::sync::Arc::new(
                    rustls::crypto::aws_lc_rs::default_provider(),
                ))
                .build(),
        )
        .build()
        .into()
}

fn post(agent: &ureq::Agent, target: &Target, e: &Event, body: &Body) -> Answer {
    let mut req = agent
        .post(&target.url)
        .header("Content-Type", &body.content_type)
        .header(EVENT_HEADER, e.event.as_str());
    if let Some(secret) = &target.secret {
        req = req.header(SIGNATURE_HEADER, &signature(secret, &body.bytes));
    }
    match req.send(&body.bytes[..]) {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            match status {
                200..=299 => Answer::Delivered,
                413 => Answer::TooLarge,
                429 => {
                    let header = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<f64>().ok());
                    let text = resp.body_mut().read_to_string().unwrap_or_default();
                    let body = serde_json::from_str::<serde_json::Value>(&text)
                        .ok()
                        .and_then(|v| v.get("retry_after").and_then(|r| r.as_f64()));
                    Answer::RateLimited(body.or(header).unwrap_or(1.0))
                }
                500..=599 => Answer::Transient(format!("HTTP {status}")),
                _ => Answer::Permanent(format!("HTTP {status}")),
            }
        }
        Err(err) => {
            let why = crate::log::scrub(&err.to_string());
            match err {
                // Another try would fail the same way.
                ureq::Error::BadUri(_) | ureq::Error::Http(_) | ureq::Error::InvalidProxyUrl => {
                    Answer::Permanent(why)
                }
                _ => Answer::Transient(why),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Run the loop against scripted answers; returns (delivered, attachments
    /// carried by each attempt, waits).
    fn script(answers: &[Answer]) -> (bool, Vec<bool>, Vec<Duration>) {
        let mut left = answers.iter().cloned();
        let sent = RefCell::new(Vec::new());
        let waits = RefCell::new(Vec::new());
        let ok = send_with(
            &RetryPolicy::default(),
            |with_file| {
                sent.borrow_mut().push(with_file);
                left.next().expect("no more scripted answers")
            },
            |d| waits.borrow_mut().push(d),
            "http://x/…",
            "failed",
        );
        (ok, sent.into_inner(), waits.into_inner())
    }

    const S: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn transient_failures_are_retried_with_growing_delays_then_given_up() {
        let t = || Answer::Transient("HTTP 500".into());
        assert_eq!(
            script(&[t(), t(), t()]),
            (false, vec![true; 3], vec![S(1000), S(3000)])
        );
        assert_eq!(
            script(&[t(), Answer::Delivered]),
            (true, vec![true; 2], vec![S(1000)])
        );
    }

    #[test]
    fn rate_limits_wait_as_told_unless_too_long() {
        assert_eq!(
            script(&[Answer::RateLimited(0.25), Answer::Delivered]),
            (true, vec![true; 2], vec![S(250)])
        );
        assert_eq!(
            script(&[Answer::RateLimited(60.0)]),
            (false, vec![true], vec![])
        );
    }

    #[test]
    fn too_large_is_sent_once_more_without_the_log() {
        assert_eq!(
            script(&[Answer::TooLarge, Answer::Delivered]),
            (true, vec![true, false], vec![])
        );
        assert_eq!(
            script(&[Answer::TooLarge, Answer::TooLarge]),
            (false, vec![true, false], vec![])
        );
    }

    #[test]
    fn permanent_errors_are_not_retried() {
        assert_eq!(
            script(&[Answer::Permanent("HTTP 404".into())]),
            (false, vec![true], vec![])
        );
    }

    #[test]
    fn malformed_urls_are_refused_before_any_request() {
        assert!(check_url("https://discord.com/api/webhooks/1/x").is_ok());
        assert!(check_url("http://127.0.0.1:8080/hook").is_ok());
        for bad in [
            "ftp://h/x",
            "https://",
            "https://exa mple.com/x",
            "http://[::1/x",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn signature_matches_a_known_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn redacted_url_keeps_scheme_and_host_only() {
        assert_eq!(
            redact_url("https://discord.com/api/webhooks/123/s3cr3t"),
            "https://discord.com/…"
        );
        assert_eq!(
            redact_url("http://user:pw@127.0.0.1:8080/hook?token=x"),
            "http://127.0.0.1:8080/…"
        );
    }
}
