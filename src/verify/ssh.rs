//! SSH commit signatures (OpenSSH's SSHSIG format, as `ssh-keygen -Y sign -n git`
//! writes them): checked against the allowed-signers entries, in process.

use base64::Engine;
use ssh_key::{HashAlg, SshSig};

use super::allowed_signers::{Entry, GIT_NAMESPACE};
use super::{show_time, Refusal, RefusalReason, SignatureKind, Signer};

const PEM_BEGIN: &str = "-----BEGIN SSH SIGNATURE-----";
const PEM_END: &str = "-----END SSH SIGNATURE-----";
/// The six bytes every SSHSIG blob starts with.
const MAGIC: &[u8] = b"SSHSIG";
/// The only SSHSIG version there is.
const SSHSIG_VERSION: u32 = 1;

/// The outer fields of an SSHSIG blob, read without judging them, so that a
/// weak algorithm or a foreign namespace gets its own reason rather than a
/// decoding error.
struct Outer<'a> {
    version: u32,
    public_key: &'a [u8],
    namespace: &'a [u8],
    hash_alg: &'a [u8],
    /// The algorithm named inside the signature field (`rsa-sha2-512`, ...).
    signature_alg: &'a [u8],
}

/// Verifies the armored SSHSIG `armored` over `payload` against `entries`, at
/// the commit's `committer_time` (needed only by entries with validity limits).
pub fn verify(
    entries: &[Entry],
    payload: &[u8],
    armored: &[u8],
    committer_time: Option<i64>,
) -> Result<Signer, Refusal> {
    let blob = dearmor(armored)?;
    let outer = read_outer(&blob).ok_or_else(|| {
        Refusal::new(
            RefusalReason::Malformed,
            "the SSH signature is not a well-formed SSHSIG blob",
        )
    })?;
    // The key the signature claims, for messages: not yet proven to have signed.
    let claimed = ssh_key::PublicKey::from_bytes(outer.public_key)
        .map(|k| k.fingerprint(HashAlg::Sha256).to_string())
        .ok();
    let with_claimed = |r: Refusal| match &claimed {
        Some(fp) => r.with_fingerprint(fp),
        None => r,
    };
    if outer.version != SSHSIG_VERSION {
        return Err(with_claimed(Refusal::new(
            RefusalReason::Unsupported,
            format!("SSH signature version {} is not supported", outer.version),
        )));
    }
    match outer.hash_alg {
        b"sha256" | b"sha512" => {}
        b"sha1" => return Err(with_claimed(Refusal::new(
            RefusalReason::WeakAlgorithm,
            "the SSH signature hashes the commit with SHA-1; only sha256 and sha512 are accepted",
        ))),
        other => {
            return Err(with_claimed(Refusal::new(
                RefusalReason::Unsupported,
                format!(
                "the SSH signature uses hash algorithm {:?}; only sha256 and sha512 are accepted",
                String::from_utf8_lossy(other)
            ),
            )))
        }
    }
    if outer.signature_alg == b"ssh-rsa" {
        return Err(with_claimed(Refusal::new(
            RefusalReason::WeakAlgorithm,
            "the RSA signature uses the ssh-rsa (SHA-1) scheme; only rsa-sha2-256 and rsa-sha2-512 are accepted",
        )));
    }
    if outer.namespace != GIT_NAMESPACE.as_bytes() {
        return Err(with_claimed(Refusal::new(
            RefusalReason::WrongNamespace,
            format!(
                "the SSH signature was made in namespace {:?}, not {GIT_NAMESPACE:?}",
                String::from_utf8_lossy(outer.namespace)
            ),
        )));
    }

    let sig = decode(armored)?;
    let fingerprint = sig.public_key().fingerprint(HashAlg::Sha256).to_string();
    let matching: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.key.key_data() == sig.public_key())
        .collect();
    let Some(first) = matching.first() else {
        return Err(Refusal::new(
            RefusalReason::UnknownKey,
            format!("SSH key {fingerprint} is not in the allowed signers"),
        )
        .with_fingerprint(&fingerprint));
    };
    if first.key.verify(GIT_NAMESPACE, payload, &sig).is_err() {
        return Err(Refusal::new(
            RefusalReason::BadSignature,
            format!("the SSH signature by {fingerprint} does not match the commit"),
        )
        .with_fingerprint(&fingerprint));
    }

    // The signature is genuine; now what the allowed-signers lines allow.
    let mut admitted: Vec<&str> = Vec::new();
    let mut first_refusal: Option<Refusal> = None;
    for entry in &matching {
        match admits(entry, committer_time) {
            Ok(()) => {
                if !admitted.contains(&entry.principals.as_str()) {
                    admitted.push(&entry.principals);
                }
            }
            Err(r) => {
                first_refusal.get_or_insert(r);
            }
        }
    }
    if admitted.is_empty() {
        let mut refusal = first_refusal.unwrap_or_else(|| {
            Refusal::new(
                RefusalReason::UnknownKey,
                "no allowed signers line admits the key",
            )
        });
        if matching.len() > 1 {
            refusal.detail.push_str(&format!(
                " (and {} more lines for this key refuse it too)",
                matching.len() - 1
            ));
        }
        return Err(refusal.with_fingerprint(&fingerprint));
    }
    Ok(Signer {
        kind: SignatureKind::Ssh,
        signer: admitted.join(","),
        fingerprint,
    })
}

/// Whether one allowed-signers line admits a genuine signature by its key on
/// a commit made at `committer_time`.
fn admits(entry: &Entry, committer_time: Option<i64>) -> Result<(), Refusal> {
    if !entry.admits_namespace(GIT_NAMESPACE) {
        return Err(Refusal::new(
            RefusalReason::WrongNamespace,
            format!(
                "SSH key {} may sign only in namespaces {:?}, not {GIT_NAMESPACE:?} ({})",
                entry.fingerprint,
                entry.namespaces.as_deref().unwrap_or_default(),
                entry.origin
            ),
        ));
    }
    if entry.valid_after.is_none() && entry.valid_before.is_none() {
        return Ok(());
    }
    let Some(time) = committer_time else {
        return Err(Refusal::new(
            RefusalReason::Malformed,
            format!(
                "the commit has no readable committer time to check the validity of SSH key {} ({})",
                entry.fingerprint, entry.origin
            ),
        ));
    };
    if let Some(after) = entry.valid_after {
        if time < after {
            return Err(Refusal::new(
                RefusalReason::KeyNotYetValid,
                format!(
                    "SSH key {} is valid only from {} and the commit was made at {} ({})",
                    entry.fingerprint,
                    show_time(after),
                    show_time(time),
                    entry.origin
                ),
            ));
        }
    }
    if let Some(before) = entry.valid_before {
        if time > before {
            return Err(Refusal::new(
                RefusalReason::KeyExpired,
                format!(
                    "SSH key {} was valid only until {} and the commit was made at {} ({})",
                    entry.fingerprint,
                    show_time(before),
                    show_time(time),
                    entry.origin
                ),
            ));
        }
    }
    Ok(())
}

/// The base64 body between the SSH SIGNATURE armor lines, decoded.
fn dearmor(armored: &[u8]) -> Result<Vec<u8>, Refusal> {
    let malformed = |why: &str| {
        Refusal::new(
            RefusalReason::Malformed,
            format!("the SSH signature armor is broken: {why}"),
        )
    };
    let text = std::str::from_utf8(armored).map_err(|_| malformed("not UTF-8"))?;
    let mut lines = text.lines().map(str::trim);
    if lines.next() != Some(PEM_BEGIN) {
        return Err(malformed("it does not start with the BEGIN line"));
    }
    let mut body = String::new();
    let mut ended = false;
    for line in lines.by_ref() {
        if line == PEM_END {
            ended = true;
            break;
        }
        body.push_str(line);
    }
    if !ended {
        return Err(malformed("no END line"));
    }
    if lines.any(|l| !l.is_empty()) {
        return Err(malformed("text after the END line"));
    }
    base64::engine::general_purpose::STANDARD
        .decode(body.as_bytes())
        .map_err(|e| malformed(&format!("bad base64 ({e})")))
}

/// Decodes the armored signature with ssh-key, which checks every field.
fn decode(armored: &[u8]) -> Result<SshSig, Refusal> {
    SshSig::from_pem(armored).map_err(|e| {
        Refusal::new(
            RefusalReason::Malformed,
            format!("the SSH signature cannot be decoded: {e}"),
        )
    })
}

/// Reads MAGIC, version, public key, namespace, reserved, hash algorithm and
/// the signature's own algorithm name; `None` if the blob is too short for them.
fn read_outer(blob: &[u8]) -> Option<Outer<'_>> {
    let mut r = blob.strip_prefix(MAGIC)?;
    let version = read_u32(&mut r)?;
    let public_key = read_string(&mut r)?;
    let namespace = read_string(&mut r)?;
    let _reserved = read_string(&mut r)?;
    let hash_alg = read_string(&mut r)?;
    let mut signature = read_string(&mut r)?;
    let signature_alg = read_string(&mut signature)?;
    Some(Outer {
        version,
        public_key,
        namespace,
        hash_alg,
        signature_alg,
    })
}

fn read_u32(r: &mut &[u8]) -> Option<u32> {
    let (head, tail) = r.split_first_chunk::<4>()?;
    *r = tail;
    Some(u32::from_be_bytes(*head))
}

fn read_string<'a>(r: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::try_from(read_u32(r)?).ok()?;
    if r.len() < len {
        return None;
    }
    let (s, tail) = r.split_at(len);
    *r = tail;
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(bytes: &[u8]) -> Vec<u8> {
        let mut v = (bytes.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(bytes);
        v
    }

    #[test]
    fn outer_fields_are_read_without_judging_them() {
        let mut blob = MAGIC.to_vec();
        blob.extend(1u32.to_be_bytes());
        blob.extend(string(b"key"));
        blob.extend(string(b"file"));
        blob.extend(string(b""));
        blob.extend(string(b"sha1"));
        let mut sig = string(b"ssh-rsa");
        sig.extend(string(b"bytes"));
        blob.extend(string(&sig));
        let outer = read_outer(&blob).unwrap();
        assert_eq!(outer.version, 1);
        assert_eq!(outer.namespace, b"file");
        assert_eq!(outer.hash_alg, b"sha1");
        assert_eq!(outer.signature_alg, b"ssh-rsa");
        // Every truncation is refused, none panics.
        for len in 0..blob.len() - 5 {
            assert!(read_outer(&blob[..len]).is_none(), "truncated at {len}");
        }
    }

    #[test]
    fn a_huge_length_prefix_is_refused() {
        let mut blob = MAGIC.to_vec();
        blob.extend(1u32.to_be_bytes());
        blob.extend(u32::MAX.to_be_bytes());
        assert!(read_outer(&blob).is_none());
    }

    #[test]
    fn broken_armor_is_malformed() {
        for armored in [
            &b"-----BEGIN SSH SIGNATURE-----\nU1NI\n"[..],
            b"U1NI\n-----END SSH SIGNATURE-----\n",
            b"-----BEGIN SSH SIGNATURE-----\n%%%\n-----END SSH SIGNATURE-----\n",
            b"-----BEGIN SSH SIGNATURE-----\nU1NI\n-----END SSH SIGNATURE-----\nmore\n",
            b"\xff\xfe",
        ] {
            let r = dearmor(armored).unwrap_err();
            assert_eq!(r.reason, RefusalReason::Malformed, "{armored:?}");
        }
    }
}
