//! The repository URL: validation, its transport, normalisation of local paths,
//! and redaction of credentials for everything that is printed, stored or passed on.

use anyhow::Result;
use std::path::Path;

use crate::exit::{fail, Exit};

/// How a repository is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Https,
    Http,
    /// `ssh://` and scp-like `user@host:path`: the system `ssh`.
    Ssh,
    /// The git protocol (`git://`).
    Git,
    /// `file://` and local paths: `git-upload-pack` on this host.
    File,
}

/// A repository location as configured, with what may be shown of it.
#[derive(Debug, Clone)]
pub struct RepoUrl {
    /// What gix connects to (credentials included).
    pub raw: String,
    /// Safe to print, store and hand to the entrypoint.
    pub redacted: String,
    /// The secret parts of `raw`, to scrub from any message that might echo them.
    pub secrets: Vec<String>,
    transport: Transport,
}

impl RepoUrl {
    /// Accepts https://, http://, ssh://, git://, file://, scp-like `user@host:path`,
    /// and local paths (made absolute against `cwd`).
    pub fn parse(text: &str, cwd: &Path) -> Result<RepoUrl> {
        let text = text.trim();
        if text.is_empty() {
            return Err(fail(Exit::Usage, "the repository URL is empty"));
        }
        let (raw, transport) = if let Some((scheme, rest)) = text.split_once("://") {
            match scheme {
                "https" | "http" | "ssh" | "git" | "file" => {}
                _ => {
                    return Err(fail(
                        Exit::Usage,
                        format!(
                            "unsupported repository URL scheme {scheme:?} in {}: use https://, http://, ssh://, git://, file://, user@host:path or a local path",
                            redact(text)
                        ),
                    ))
                }
            }
            let host_part = rest.split('/').next().unwrap_or("");
            if scheme != "file" && host_part.rsplit('@').next().unwrap_or("").is_empty() {
                return Err(fail(
                    Exit::Usage,
                    format!("malformed repository URL {}: no host", redact(text)),
                ));
            }
            let transport = match scheme {
                "https" => Transport::Https,
                "http" => Transport::Http,
                "ssh" => Transport::Ssh,
                "git" => Transport::Git,
                _ => Transport::File,
            };
            (text.to_string(), transport)
        } else if is_scp_like(text) {
            (text.to_string(), Transport::Ssh)
        } else {
            let p = Path::new(text);
            let abs = if p.is_absolute() {
                p.to_path_buf()
            } else {
                cwd.join(p)
            };
            (abs.to_string_lossy().into_owned(), Transport::File)
        };
        if raw.starts_with("http://") && userinfo(&raw).is_some() {
            return Err(fail(
                Exit::Usage,
                format!(
                    "refusing to send the credentials in {} in clear text over http://; use https:// or ssh",
                    redact(&raw)
                ),
            ));
        }
        gix::url::parse(gix::bstr::BStr::new(raw.as_str())).map_err(|e| {
            fail(
                Exit::Usage,
                format!("malformed repository URL {}: {e}", redact(&raw)),
            )
        })?;
        Ok(RepoUrl {
            redacted: redact(&raw),
            secrets: secrets_of(&raw),
            raw,
            transport,
        })
    }
}

impl RepoUrl {
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// What identifies the repository in the state file: the redacted URL, with
    /// `file://` and trailing slashes removed so `/srv/r` and `file:///srv/r/` agree.
    pub fn identity(&self) -> String {
        identity(&self.redacted)
    }
}

pub fn identity(url: &str) -> String {
    let s = url.strip_prefix("file://").unwrap_or(url);
    let trimmed = s.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    }
}

/// `user@host:path` or `host:path` where the part before the colon has no slash.
fn is_scp_like(text: &str) -> bool {
    match text.split_once(':') {
        Some((host, path)) => {
            !host.is_empty() && !host.contains('/') && !path.is_empty() && !Path::new(text).exists()
        }
        None => false,
    }
}

/// The userinfo of a `scheme://userinfo@host/...` URL, if any.
fn userinfo(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    let (info, _host) = authority.rsplit_once('@')?;
    Some((scheme, info))
}

/// Remove credentials: for http(s) the whole userinfo (tokens are often given as
/// the user name), for other schemes only a password.
pub fn redact(url: &str) -> String {
    match userinfo(url) {
        Some((scheme, info)) => {
            let replacement = match scheme {
                "http" | "https" => "***".to_string(),
                _ => match info.split_once(':') {
                    Some((user, _)) => format!("{user}:***"),
                    None => return url.to_string(),
                },
            };
            url.replacen(&format!("{info}@"), &format!("{replacement}@"), 1)
        }
        None => url.to_string(),
    }
}

fn secrets_of(url: &str) -> Vec<String> {
    let Some((scheme, info)) = userinfo(url) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    // A user name over http(s) is often a token; a short one ("git") is a name, and
    // scrubbing it would mangle ordinary words (URLs are redacted whole anyway).
    let user_is_secret = |user: &str| {
        matches!(scheme, "http" | "https")
            && user.chars().count() >= crate::log::SCRUB_ANYWHERE_MIN_CHARS
    };
    match info.split_once(':') {
        Some((user, password)) => {
            if user_is_secret(user) {
                out.push(user.to_string());
            }
            if !password.is_empty() {
                out.push(password.to_string());
            }
        }
        None if user_is_secret(info) => out.push(info.to_string()),
        None => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_http_userinfo_entirely() {
        assert_eq!(
            redact("https://user:tok3n@example.com/r.git"),
            "https://***@example.com/r.git"
        );
        assert_eq!(
            redact("https://ghp_abcdef@example.com/r.git"),
            "https://***@example.com/r.git"
        );
        assert_eq!(
            redact("http://example.com/r.git"),
            "http://example.com/r.git"
        );
    }

    #[test]
    fn keeps_ssh_user_but_drops_password() {
        assert_eq!(
            redact("ssh://git@example.com/r.git"),
            "ssh://git@example.com/r.git"
        );
        assert_eq!(
            redact("ssh://git:pw@example.com/r.git"),
            "ssh://git:***@example.com/r.git"
        );
        assert_eq!(redact("git@example.com:r.git"), "git@example.com:r.git");
    }

    #[test]
    fn parse_accepts_supported_forms() {
        let cwd = Path::new("/srv");
        for ok in [
            "https://example.com/r.git",
            "http://127.0.0.1:8080/r.git",
            "ssh://git@example.com:2222/r.git",
            "git@example.com:ops/r.git",
            "file:///srv/r.git",
            "/srv/r.git",
        ] {
            RepoUrl::parse(ok, cwd).unwrap_or_else(|e| panic!("{ok}: {e:#}"));
        }
        assert_eq!(RepoUrl::parse("repos/r", cwd).unwrap().raw, "/srv/repos/r");
    }

    #[test]
    fn each_form_knows_its_transport() {
        let cwd = Path::new("/srv");
        for (url, t) in [
            ("https://example.com/r.git", Transport::Https),
            ("http://127.0.0.1:8080/r.git", Transport::Http),
            ("ssh://git@example.com:2222/r.git", Transport::Ssh),
            ("git@example.com:ops/r.git", Transport::Ssh),
            ("git://example.com/r.git", Transport::Git),
            ("file:///srv/r.git", Transport::File),
            ("/srv/r.git", Transport::File),
            ("repos/r", Transport::File),
        ] {
            assert_eq!(RepoUrl::parse(url, cwd).unwrap().transport(), t, "{url}");
        }
    }

    #[test]
    fn parse_refuses_credentials_over_plain_http() {
        let err =
            RepoUrl::parse("http://u:secretpw@example.com/r.git", Path::new("/")).unwrap_err();
        assert_eq!(crate::exit::class_of(&err), Exit::Usage);
        let text = format!("{err:#}");
        assert!(
            text.contains("clear text") && !text.contains("secretpw"),
            "{text}"
        );
        assert!(RepoUrl::parse("https://u:secretpw@example.com/r.git", Path::new("/")).is_ok());
    }

    #[test]
    fn parse_rejects_malformed() {
        let cwd = Path::new("/");
        for bad in ["", "ftp://example.com/r", "https:///r.git", "ssh://@/x"] {
            let err = RepoUrl::parse(bad, cwd).unwrap_err();
            assert_eq!(crate::exit::class_of(&err), Exit::Usage, "{bad}");
        }
    }

    #[test]
    fn identity_ignores_file_scheme_and_trailing_slash() {
        assert_eq!(identity("file:///srv/r/"), identity("/srv/r"));
        assert_ne!(
            identity("https://example.com/a"),
            identity("https://example.com/b")
        );
    }

    #[test]
    fn secrets_are_collected_for_scrubbing() {
        let u = RepoUrl::parse(
            "https://deploy:s3cr3tpass@example.com/r.git",
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(
            u.secrets,
            vec!["deploy".to_string(), "s3cr3tpass".to_string()]
        );
        assert!(!u.redacted.contains("s3cr3t"));
    }
}
