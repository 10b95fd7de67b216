//! The shared secret and the check of a request's credentials against it:
//! HMAC-SHA256 signatures of the raw body (GitHub, Gitea, Forgejo, generic)
//! and GitLab's plain token, every comparison in constant time.

use anyhow::{Context, Result};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use subtle::{Choice, ConstantTimeEq};

use super::http::Headers;
use super::SECRET_CREDENTIAL;
use crate::exit::{fail, Classify, Exit};

type HmacSha256 = Hmac<Sha256>;

/// A shorter secret draws a warning at start (a GitLab token is compared as
/// it is, so a short one could be guessed); an empty one is refused.
pub const MIN_SECRET_BYTES: usize = 16;
/// A secret file larger than this is not a secret but a mistake (or /dev/zero).
pub const MAX_SECRET_BYTES: u64 = 4096;
/// Length of an HMAC-SHA256 tag.
const TAG_BYTES: usize = 32;

/// The credential headers, by lower-case name, and how each is checked.
const CREDENTIAL_HEADERS: &[(&str, Kind)] = &[
    ("x-hub-signature-256", Kind::PrefixedHmac),
    ("x-gitea-signature", Kind::BareHmac),
    ("x-forgejo-signature", Kind::BareHmac),
    ("x-signature", Kind::PrefixedHmac),
    ("x-gitlab-token", Kind::Token),
];

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// `sha256=<hex>` of the body.
    PrefixedHmac,
    /// `<hex>` of the body.
    BareHmac,
    /// The secret itself.
    Token,
}

/// The shared secret, kept as a keyed MAC and as a digest (for the token
/// comparison, which then does not depend on the token's length).
pub struct Secret {
    mac: HmacSha256,
    token_digest: [u8; 32],
    len: usize,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// What a request's credentials say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No credential header at all (401).
    Missing,
    /// At least one credential header is present and not every one is right
    /// (403). Lists the headers presented, for the log.
    Invalid(Vec<&'static str>),
    /// Every credential header presented is right.
    Valid(Vec<&'static str>),
}

/// Where the secret comes from: `--secret-file`, else the systemd credential
/// in `$CREDENTIALS_DIRECTORY` when that directory is set.
pub fn secret_source(flag: Option<&Path>, creds_dir: Option<&Path>) -> Option<PathBuf> {
    match (flag, creds_dir) {
        (Some(file), _) => Some(file.to_path_buf()),
        (None, Some(dir)) => Some(dir.join(SECRET_CREDENTIAL)),
        (None, None) => None,
    }
}

/// Whether the request carries any credential header (whatever its value).
pub fn presents_credentials(headers: &Headers) -> bool {
    CREDENTIAL_HEADERS
        .iter()
        .any(|(name, _)| headers.all(name).next().is_some())
}

impl Secret {
    /// Load the secret from `--secret-file` or the systemd credential.
    pub fn load(flag: Option<&Path>, creds_dir: Option<&Path>) -> Result<Secret> {
        let Some(path) = secret_source(flag, creds_dir) else {
            return Err(fail(
                Exit::Usage,
                format!(
                    "no webhook secret: pass --secret-file FILE, set GITOPS_RECEIVE_SECRET_FILE, \
                     or provide the systemd credential {SECRET_CREDENTIAL}"
                ),
            ));
        };
        let mut raw = Vec::new();
        std::fs::File::open(&path)
            .and_then(|f| f.take(MAX_SECRET_BYTES + 1).read_to_end(&mut raw))
            .with_context(|| format!("failed to read the webhook secret {}", path.display()))
            .class(Exit::Usage)?;
        if raw.len() as u64 > MAX_SECRET_BYTES {
            return Err(fail(
                Exit::Usage,
                format!(
                    "the webhook secret {} is larger than {MAX_SECRET_BYTES} bytes",
                    path.display()
                ),
            ));
        }
        let secret = Secret::from_bytes(&raw).map_err(|why| {
            fail(
                Exit::Usage,
                format!("the webhook secret {}: {why}", path.display()),
            )
        })?;
        if let Some(warning) = secret.short_warning(&path) {
            crate::log::emit(&format!("gitops-run receive: warning: {warning}"));
        }
        Ok(secret)
    }

    /// The warning for a secret shorter than [`MIN_SECRET_BYTES`] read from
    /// `path`; `None` when it is long enough.
    pub fn short_warning(&self, path: &Path) -> Option<String> {
        (self.len < MIN_SECRET_BYTES).then(|| {
            format!(
                "the webhook secret {} is short ({} bytes); use at least {MIN_SECRET_BYTES} \
                 random bytes, e.g. `openssl rand -hex 32`",
                path.display(),
                self.len
            )
        })
    }

    /// The secret from the bytes of its file, surrounding whitespace (the
    /// final newline of `echo` or an editor) removed. An empty secret is
    /// refused; a short one is accepted ([`Secret::short_warning`]).
    pub fn from_bytes(raw: &[u8]) -> Result<Secret, String> {
        let secret = raw.trim_ascii();
        if secret.is_empty() {
            return Err("is empty; generate one with `openssl rand -hex 32`".to_string());
        }
        let mac = HmacSha256::new_from_slice(secret)
            .map_err(|_| "cannot be used as an HMAC key".to_string())?;
        Ok(Secret {
            mac,
            token_digest: Sha256::digest(secret).into(),
            len: secret.len(),
        })
    }

    /// Check every credential header of the request. The MAC is computed
    /// once over the raw body; each presented value is compared with it (or,
    /// for a token, its digest with the secret's) in constant time, and the
    /// results are combined without branching, so neither the time taken nor
    /// the outcome tells which header or which byte was wrong.
    pub fn check(&self, headers: &Headers, body: &[u8]) -> Outcome {
        let presented: Vec<(&'static str, Kind, &[u8])> = CREDENTIAL_HEADERS
            .iter()
            .flat_map(|(name, kind)| headers.all(name).map(move |v| (*name, *kind, v)))
            .collect();
        if presented.is_empty() {
            return Outcome::Missing;
        }
        let mut mac = self.mac.clone();
        mac.update(body);
        let tag = mac.finalize().into_bytes();
        let mut all_good = Choice::from(1u8);
        for (_, kind, value) in &presented {
            let good = match kind {
                Kind::PrefixedHmac => {
                    let (hex, prefixed) = match strip_prefix_ignore_case(value, b"sha256=") {
                        Some(rest) => (rest, Choice::from(1u8)),
                        None => (*value, Choice::from(0u8)),
                    };
                    prefixed & hex_tag_matches(hex, &tag)
                }
                Kind::BareHmac => hex_tag_matches(value, &tag),
                Kind::Token => {
                    let digest: [u8; 32] = Sha256::digest(value.trim_ascii()).into();
                    digest.ct_eq(&self.token_digest)
                }
            };
            all_good &= good;
        }
        let names: Vec<&'static str> = presented.iter().map(|(n, _, _)| *n).collect();
        if bool::from(all_good) {
            Outcome::Valid(names)
        } else {
            Outcome::Invalid(names)
        }
    }
}

fn strip_prefix_ignore_case<'a>(value: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let value = value.trim_ascii();
    if value.len() >= prefix.len() && value[..prefix.len()].eq_ignore_ascii_case(prefix) {
        Some(&value[prefix.len()..])
    } else {
        None
    }
}

/// Whether `hex` spells `tag`. Malformed hex compares a zero tag, so the
/// work done is the same whatever was sent.
fn hex_tag_matches(hex: &[u8], tag: &[u8]) -> Choice {
    let hex = hex.trim_ascii();
    let mut decoded = [0u8; TAG_BYTES];
    let mut well_formed = Choice::from(u8::from(hex.len() == 2 * TAG_BYTES));
    for (i, byte) in decoded.iter_mut().enumerate() {
        let hi = hex.get(2 * i).copied().and_then(nibble);
        let lo = hex.get(2 * i + 1).copied().and_then(nibble);
        well_formed &= Choice::from(u8::from(hi.is_some() && lo.is_some()));
        *byte = (hi.unwrap_or(0) << 4) | lo.unwrap_or(0);
    }
    well_formed & decoded.as_slice().ct_eq(tag)
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef-test-secret";

    fn secret() -> Secret {
        Secret::from_bytes(SECRET).unwrap()
    }

    fn sign(body: &[u8]) -> String {
        let mut mac = HmacSha256::new_from_slice(SECRET).unwrap();
        mac.update(body);
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        Headers::from_pairs(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())),
        )
    }

    #[test]
    fn each_forge_credential_is_accepted() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let hex = sign(body);
        let s = secret();
        for (name, value) in [
            ("X-Hub-Signature-256", format!("sha256={hex}")),
            ("X-Gitea-Signature", hex.clone()),
            ("X-Forgejo-Signature", hex.to_uppercase()),
            ("X-Signature", format!("SHA256={hex}")),
            (
                "X-Gitlab-Token",
                String::from_utf8(SECRET.to_vec()).unwrap(),
            ),
        ] {
            let out = s.check(&headers(&[(name, &value)]), body);
            assert!(matches!(out, Outcome::Valid(_)), "{name}: {out:?}");
        }
    }

    #[test]
    fn missing_wrong_and_malformed_credentials_are_refused() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let hex = sign(body);
        let s = secret();
        assert_eq!(
            s.check(&headers(&[("X-GitHub-Event", "push")]), body),
            Outcome::Missing
        );
        let other_body_hex = sign(b"{}");
        let wrong = [
            ("X-Hub-Signature-256", format!("sha256={other_body_hex}")),
            ("X-Hub-Signature-256", hex.clone()), // prefix missing
            ("X-Hub-Signature-256", format!("sha1={hex}")),
            ("X-Hub-Signature-256", format!("sha256={}", &hex[..62])),
            ("X-Hub-Signature-256", format!("sha256={hex}00")),
            ("X-Gitea-Signature", format!("zz{}", &hex[2..])),
            ("X-Signature", format!("sha256={}", "0".repeat(64))),
            ("X-Gitlab-Token", "0123456789abcdef-test-secreT".into()),
            ("X-Gitlab-Token", "0123456789abcdef".into()),
            ("X-Gitlab-Token", "".into()),
        ];
        for (name, value) in wrong {
            let out = s.check(&headers(&[(name, &value)]), body);
            assert!(
                matches!(out, Outcome::Invalid(_)),
                "{name}: {value}: {out:?}"
            );
        }
    }

    #[test]
    fn credential_presence_ignores_other_headers_and_values() {
        assert!(!presents_credentials(&headers(&[
            ("X-GitHub-Event", "push"),
            ("Authorization", "Bearer x"),
        ])));
        for name in [
            "X-Hub-Signature-256",
            "X-Gitea-Signature",
            "X-Forgejo-Signature",
            "X-Signature",
            "X-Gitlab-Token",
        ] {
            assert!(presents_credentials(&headers(&[(name, "")])), "{name}");
        }
    }

    #[test]
    fn one_wrong_header_among_right_ones_refuses_the_request() {
        let body = b"{}";
        let hex = sign(body);
        let out = secret().check(
            &headers(&[
                ("X-Hub-Signature-256", &format!("sha256={hex}")),
                ("X-Gitea-Signature", &sign(b"other")),
            ]),
            body,
        );
        assert_eq!(
            out,
            Outcome::Invalid(vec!["x-hub-signature-256", "x-gitea-signature"])
        );
    }

    #[test]
    fn the_signature_covers_the_raw_body() {
        let body = br#"{"ref": "refs/heads/main"}"#;
        let hex = sign(br#"{"ref":"refs/heads/main"}"#);
        let out = secret().check(
            &headers(&[("X-Hub-Signature-256", &format!("sha256={hex}"))]),
            body,
        );
        assert!(matches!(out, Outcome::Invalid(_)), "{out:?}");
    }

    #[test]
    fn empty_secrets_are_refused_short_ones_warned_about_and_whitespace_is_trimmed() {
        assert!(Secret::from_bytes(b"").is_err());
        assert!(Secret::from_bytes(b" \n\t\n").is_err());
        let path = Path::new("/etc/x/secret");
        let short = Secret::from_bytes(b"  short\n").unwrap();
        assert_eq!(
            short.short_warning(path).as_deref(),
            Some(
                "the webhook secret /etc/x/secret is short (5 bytes); use at least 16 random \
                 bytes, e.g. `openssl rand -hex 32`"
            )
        );
        // A short secret still works.
        let out = short.check(&headers(&[("X-Gitlab-Token", "short")]), b"{}");
        assert!(matches!(out, Outcome::Valid(_)), "{out:?}");
        let exact = Secret::from_bytes(&[b'k'; MIN_SECRET_BYTES]).unwrap();
        assert_eq!(exact.short_warning(path), None);
        let s = Secret::from_bytes(b"0123456789abcdef-test-secret\n").unwrap();
        assert_eq!(s.short_warning(path), None);
        let body = b"x";
        let out = s.check(
            &headers(&[("X-Signature", &format!("sha256={}", sign(body)))]),
            body,
        );
        assert!(matches!(out, Outcome::Valid(_)));
        assert_eq!(format!("{s:?}"), "Secret(***)");
    }

    #[test]
    fn the_flag_wins_over_the_credential() {
        let flag = Path::new("/etc/x/secret");
        let creds = Path::new("/run/credentials/u");
        assert_eq!(
            secret_source(Some(flag), Some(creds)).as_deref(),
            Some(flag)
        );
        assert_eq!(
            secret_source(None, Some(creds)),
            Some(creds.join(SECRET_CREDENTIAL))
        );
        assert_eq!(secret_source(None, None), None);
    }
}
