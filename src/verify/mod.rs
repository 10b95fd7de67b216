//! Commit signature verification, in process: the trusted keys (an SSH
//! allowed-signers file and a directory of OpenPGP public keys), and the
//! verdict on one raw commit object: who signed it, or why it is refused.
//!
//! Only [`TrustedKeys::load`] does I/O; [`TrustedKeys::verify_commit`] is a
//! pure function of the loaded keys and the commit's bytes.
//!
//! What is checked, and how:
//!
//! - **Signed bytes.** The commit object without its `gpgsig` header and
//!   continuation lines, and without any other `gpgsig*` header such as
//!   `gpgsig-sha256`, byte for byte as git computes it ([`commit::split`]).
//!   More than one `gpgsig` header is refused (git would join them).
//! - **SSH** (`-----BEGIN SSH SIGNATURE-----`): SSHSIG version 1, namespace
//!   `git`, message hash sha256 or sha512 (sha1 is `weak-algorithm`), RSA only
//!   as rsa-sha2-256/512 (`ssh-rsa` is `weak-algorithm`). The key must be on a
//!   line of the allowed-signers file ([`allowed_signers`]) whose
//!   `namespaces` admit `git` and whose `valid-after`/`valid-before` (both
//!   inclusive, as in ssh-keygen) contain the commit's committer time. Keys:
//!   ed25519, rsa, ecdsa-sha2-nistp256/384, and the `sk-` (FIDO) forms of
//!   ed25519 and nistp256. The signer is reported as the principals of every
//!   admitting line and the key's `SHA256:` fingerprint.
//! - **OpenPGP** (`-----BEGIN PGP SIGNATURE-----`): one detached signature
//!   over binary or text data, hash not MD5, SHA-1 or RIPEMD-160, by a
//!   trusted primary key or a signing subkey bound to it with a valid
//!   back-signature ([`pgp`]). At the signature's creation time the key (and
//!   subkey) must have existed and not have expired, judged by the newest
//!   self-signature made at or before that time. A valid revocation of the
//!   key or the subkey refuses every signature, whatever its reason code or
//!   date. The signer is reported as the primary user id and the primary
//!   key's fingerprint in uppercase hex (as gpg's `--with-colons` `fpr`).
//! - **Anything else** in `gpgsig`: X.509 (gpgsm) and OpenPGP messages are
//!   `unsupported`; unknown armor is `malformed`.
//!
//! Not checked, because they need a clock and verdicts here have none: the
//! expiry of a data signature itself. Certificates (`cert-authority`,
//! `*-cert-v01` keys) and designated OpenPGP revokers are not supported.

pub mod allowed_signers;
pub mod commit;
pub mod pgp;
pub mod ssh;
#[cfg(test)]
pub mod testkit;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use commit::committer_time;

/// Which kind of signature a commit carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SignatureKind {
    #[serde(rename = "ssh")]
    Ssh,
    #[serde(rename = "openpgp")]
    OpenPgp,
}

impl fmt::Display for SignatureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SignatureKind::Ssh => "SSH",
            SignatureKind::OpenPgp => "OpenPGP",
        })
    }
}

/// Who signed a commit whose signature was accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signer {
    pub kind: SignatureKind,
    /// SSH: the principals of the allowed-signers lines that admit the key,
    /// joined with `,`. OpenPGP: the key's primary user id.
    pub signer: String,
    /// SSH: `SHA256:<base64>` as `ssh-keygen -l` prints it. OpenPGP: the
    /// primary key's fingerprint in uppercase hex without spaces (40 digits
    /// for v4 keys), as in the `fpr` records of `gpg --with-colons`, even
    /// when a subkey made the signature.
    pub fingerprint: String,
}

impl fmt::Display for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} signature by {} ({})",
            self.kind, self.signer, self.fingerprint
        )
    }
}

/// Why a commit's signature is not accepted. Serialised in kebab-case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefusalReason {
    /// No `gpgsig` header.
    Unsigned,
    /// Signed by a key that is not trusted.
    UnknownKey,
    /// The signature does not match the commit (or the key may not sign).
    BadSignature,
    /// The key had expired when the commit (SSH: its committer time) or the
    /// signature (OpenPGP: its creation time) was made.
    KeyExpired,
    /// The key was not valid yet at that time.
    KeyNotYetValid,
    /// The OpenPGP key or signing subkey is revoked.
    KeyRevoked,
    /// An SSH signature made for another purpose than git, or a key that its
    /// allowed-signers line limits to other namespaces.
    WrongNamespace,
    /// SHA-1 (or weaker) somewhere in the signature.
    WeakAlgorithm,
    /// A signature kind or version this build does not verify (x509/gpgsm, ...).
    Unsupported,
    /// The commit or the signature cannot be parsed.
    Malformed,
}

impl RefusalReason {
    /// The kebab-case name, as serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::Unsigned => "unsigned",
            RefusalReason::UnknownKey => "unknown-key",
            RefusalReason::BadSignature => "bad-signature",
            RefusalReason::KeyExpired => "key-expired",
            RefusalReason::KeyNotYetValid => "key-not-yet-valid",
            RefusalReason::KeyRevoked => "key-revoked",
            RefusalReason::WrongNamespace => "wrong-namespace",
            RefusalReason::WeakAlgorithm => "weak-algorithm",
            RefusalReason::Unsupported => "unsupported",
            RefusalReason::Malformed => "malformed",
        }
    }
}

impl fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused signature: the reason (for machines), one line for people, and
/// the fingerprint of the key involved when there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    pub reason: RefusalReason,
    pub detail: String,
    pub fingerprint: Option<String>,
}

impl Refusal {
    pub fn new(reason: RefusalReason, detail: impl Into<String>) -> Refusal {
        Refusal {
            reason,
            detail: one_line(&detail.into()),
            fingerprint: None,
        }
    }

    pub fn with_fingerprint(mut self, fingerprint: &str) -> Refusal {
        self.fingerprint = Some(fingerprint.to_string());
        self
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

impl std::error::Error for Refusal {}

/// The keys commits may be signed with.
#[derive(Debug, Clone)]
pub struct TrustedKeys {
    ssh: Vec<allowed_signers::Entry>,
    pgp: Vec<pgp::Key>,
    /// When the verification happens (Unix seconds), if known: an OpenPGP key
    /// that has expired by then signs nothing any more, whenever the signature
    /// says it was made (its creation time is the signer's to choose).
    now: Option<i64>,
}

const X509_BEGIN: &[u8] = b"-----BEGIN SIGNED MESSAGE-----";
const SSH_BEGIN: &[u8] = b"-----BEGIN SSH SIGNATURE-----";
const PGP_SIGNATURE_BEGIN: &[u8] = b"-----BEGIN PGP SIGNATURE-----";
const PGP_MESSAGE_BEGIN: &[u8] = b"-----BEGIN PGP MESSAGE-----";

impl TrustedKeys {
    /// Loads the SSH allowed-signers file and/or the OpenPGP keys directory
    /// (at least one). Timestamps in the allowed-signers file without `Z` are
    /// read in the system's local time zone, as ssh-keygen reads them. Any line
    /// or file that cannot be used is an error naming it; so is a source
    /// without keys.
    pub fn load(
        allowed_signers: Option<&Path>,
        trusted_keys_dir: Option<&Path>,
    ) -> Result<TrustedKeys> {
        if allowed_signers.is_none() && trusted_keys_dir.is_none() {
            bail!(
                "no trusted keys: give an allowed signers file, a trusted keys directory, or both"
            );
        }
        let mut ssh = Vec::new();
        if let Some(path) = allowed_signers {
            let text = std::fs::read_to_string(path).with_context(|| {
                format!("failed to read the allowed signers file {}", path.display())
            })?;
            ssh = allowed_signers::parse(&text, &path.display().to_string(), &chrono::Local)?;
        }
        let mut pgp = Vec::new();
        if let Some(dir) = trusted_keys_dir {
            pgp = pgp::load_dir(dir)?;
        }
        Ok(TrustedKeys {
            ssh,
            pgp,
            now: None,
        })
    }

    /// A stable hex digest (SHA-256) of the key set: each key's fingerprint with
    /// everything that limits it (principals, namespaces, validity; for OpenPGP
    /// the key's complete serialized form, so new self-signatures and
    /// revocations count), sorted. The order of lines, files and comments does
    /// not change it; a change means earlier refusals must be re-checked.
    pub fn digest(&self) -> String {
        let mut lines: Vec<String> = self
            .ssh
            .iter()
            .map(allowed_signers::Entry::canonical)
            .chain(self.pgp.iter().map(pgp::Key::canonical))
            .collect();
        lines.sort();
        lines.dedup();
        let mut hasher = Sha256::new();
        for line in &lines {
            hasher.update(line.as_bytes());
            hasher.update(b"\n");
        }
        pgp::hex(&hasher.finalize())
    }

    /// The same keys, judged at `now`: see [`TrustedKeys::now`].
    pub fn at(mut self, now: chrono::DateTime<chrono::Utc>) -> TrustedKeys {
        self.now = Some(now.timestamp());
        self
    }

    /// Number of SSH keys (allowed-signers lines) and OpenPGP keys.
    pub fn counts(&self) -> (usize, usize) {
        (self.ssh.len(), self.pgp.len())
    }

    /// Verifies one commit. `raw` is the commit object's content exactly as
    /// `git cat-file commit <id>` prints it (gix: `repo.find_object(id)?.data`).
    pub fn verify_commit(&self, raw: &[u8]) -> Result<Signer, Refusal> {
        let split = commit::split(raw);
        let Some(signature) = split.signature else {
            return Err(Refusal::new(
                RefusalReason::Unsigned,
                "the commit is not signed (no gpgsig header)",
            ));
        };
        if split.signature_headers > 1 {
            return Err(Refusal::new(
                RefusalReason::Malformed,
                format!(
                    "the commit has {} gpgsig headers; exactly one is accepted",
                    split.signature_headers
                ),
            ));
        }
        if signature.starts_with(SSH_BEGIN) {
            if self.ssh.is_empty() {
                return Err(Refusal::new(
                    RefusalReason::UnknownKey,
                    "the commit has an SSH signature and no allowed signers file is configured",
                ));
            }
            ssh::verify(&self.ssh, &split.payload, &signature, committer_time(raw))
        } else if signature.starts_with(PGP_SIGNATURE_BEGIN) {
            if self.pgp.is_empty() {
                return Err(Refusal::new(
                    RefusalReason::UnknownKey,
                    "the commit has an OpenPGP signature and no trusted OpenPGP keys are configured",
                ));
            }
            pgp::verify(&self.pgp, &split.payload, &signature, self.now)
        } else if signature.starts_with(PGP_MESSAGE_BEGIN) {
            Err(Refusal::new(
                RefusalReason::Unsupported,
                "the commit carries an OpenPGP message, not a detached signature",
            ))
        } else if signature.starts_with(X509_BEGIN) {
            Err(Refusal::new(
                RefusalReason::Unsupported,
                "X.509 (gpgsm) commit signatures are not supported; use SSH or OpenPGP",
            ))
        } else {
            Err(Refusal::new(
                RefusalReason::Malformed,
                "the gpgsig header holds no known signature armor",
            ))
        }
    }
}

/// Text for a one-line message: control characters (newlines included) become spaces.
pub(crate) fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn show_time(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0).map_or_else(
        || format!("{secs} s after the epoch"),
        |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}
