//! OpenPGP commit signatures: loading trusted public keys from a directory,
//! judging each key's self-signatures once, and verifying detached signatures
//! (as `gpg --detach-sign` makes them for git) in process with rPGP.
//!
//! The directory holds `*.asc`, `*.gpg`, `*.pgp` and `*.key` files; each is
//! ASCII-armored or binary as its first byte says (`gpg --export [--armor]`),
//! with any number of keys and armor blocks (text between blocks is ignored).
//! A revocation certificate may be merged into its key or be a file of its
//! own. Names starting with a dot are skipped; any other file is an error.

use std::fmt::Write as _;
use std::io::Read;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::errors::Error as PgpError;
use pgp::packet::{
    Packet, PacketParser, PacketTrait, PublicKey, PublicSubkey, Signature, SignatureType,
    SubpacketData,
};
use pgp::ser::Serialize;
use pgp::types::{Fingerprint, KeyDetails, KeyId, Tag};
use sha2::{Digest, Sha256};

use super::{Refusal, RefusalReason, SignatureKind, Signer};

/// File name extensions read from the trusted keys directory. `.asc` is
/// usually armored and the others binary, but each file may be either: the
/// content decides.
pub const KEY_FILE_EXTENSIONS: &[&str] = &["asc", "gpg", "pgp", "key"];
/// A key file larger than this is refused rather than read into memory.
pub const MAX_KEY_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// One trusted OpenPGP key (a primary key, its subkeys and their
/// self-signatures), judged once when loaded.
#[derive(Debug, Clone)]
pub struct Key {
    /// Primary key fingerprint, uppercase hex (as in gpg's `fpr` records).
    pub fingerprint: String,
    /// The primary user id, or `(no user id)`.
    pub user_id: String,
    /// Where the key was read, `FILE` or `FILE:LINE` (its armor block).
    pub origin: String,
    primary: Component<PublicKey>,
    subkeys: Vec<Component<PublicSubkey>>,
    /// A valid self-revocation of the whole key, described.
    revoked: Option<String>,
    /// SHA-256 of the key as serialized, for the key-set digest.
    material_digest: String,
}

/// The primary key or a subkey, with the self-signatures that bind it.
#[derive(Debug, Clone)]
struct Component<K> {
    key: K,
    fingerprint: Fingerprint,
    key_id: KeyId,
    created: i64,
    /// Valid binding self-signatures, oldest first.
    bindings: Vec<Binding>,
    /// A valid revocation of this subkey, described (subkeys only).
    revoked: Option<String>,
}

/// What one valid self-signature says about the key it binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Binding {
    created: i64,
    /// The key expires at this time (seconds since the epoch), if ever.
    key_expires: Option<i64>,
    /// This self-signature itself stops counting at this time, if ever.
    sig_expires: Option<i64>,
    can_sign: bool,
}

impl Key {
    /// A canonical line for the key-set digest: any new self-signature,
    /// revocation or subkey changes it.
    pub fn canonical(&self) -> String {
        format!(
            "openpgp {} sha256={}",
            self.fingerprint, self.material_digest
        )
    }
}

/// What one key file holds.
#[derive(Debug)]
pub struct Parsed {
    pub keys: Vec<Key>,
    /// Key revocations standing alone (`gpg --gen-revoke` output), to be
    /// matched with their key once every file is read.
    pub revocations: Vec<LoneRevocation>,
}

/// A key revocation signature found outside its key, and where.
#[derive(Debug)]
pub struct LoneRevocation {
    pub origin: String,
    pub sig: Signature,
}

/// Loads every key file of `dir` (see [`KEY_FILE_EXTENSIONS`]; names starting
/// with a dot are skipped). Anything else in the directory, a file that cannot
/// be parsed, a key without a valid self-signature, two different versions of
/// one key, or a directory without keys is an error naming the file (the same
/// key twice, byte for byte in substance, is kept once).
pub fn load_dir(dir: &Path) -> Result<Vec<Key>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| {
        format!(
            "failed to read the trusted keys directory {}",
            dir.display()
        )
    })? {
        let entry = entry.with_context(|| {
            format!(
                "failed to read the trusted keys directory {}",
                dir.display()
            )
        })?;
        names.push(entry.file_name());
    }
    names.sort();
    let mut keys: Vec<Key> = Vec::new();
    let mut revocations: Vec<LoneRevocation> = Vec::new();
    for name in names {
        let path = dir.join(&name);
        let shown = path.display().to_string();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !KEY_FILE_EXTENSIONS.contains(&ext) {
            bail!(
                "{shown}: unexpected file in the trusted keys directory (key files end in .{})",
                KEY_FILE_EXTENSIONS.join(", .")
            );
        }
        let meta = std::fs::metadata(&path).with_context(|| format!("failed to read {shown}"))?;
        if !meta.is_file() {
            bail!("{shown}: not a regular file");
        }
        if meta.len() > MAX_KEY_FILE_BYTES {
            bail!(
                "{shown}: {} bytes is more than the {MAX_KEY_FILE_BYTES} bytes a key file may have",
                meta.len()
            );
        }
        let bytes = std::fs::read(&path).with_context(|| format!("failed to read {shown}"))?;
        let parsed = parse_file(&bytes, &shown)?;
        for key in parsed.keys {
            if let Some(other) = keys.iter().find(|k| k.fingerprint == key.fingerprint) {
                // The same export twice (a whole keyring exported next to one of
                // its keys) is harmless; two different versions of one key (one
                // revoked or extended, the other not) are a mistake to resolve.
                if other.canonical() == key.canonical() {
                    continue;
                }
                bail!(
                    "{}: key {} is also in {}, in another version (other signatures or a revocation); keep one copy",
                    key.origin,
                    key.fingerprint,
                    other.origin
                );
            }
            keys.push(key);
        }
        revocations.extend(parsed.revocations);
    }
    for r in revocations {
        apply_standalone_revocation(&mut keys, &r.origin, &r.sig)?;
    }
    if keys.is_empty() {
        bail!("no keys in {}", dir.display());
    }
    Ok(keys)
}

/// Parses one key file, armored (possibly several blocks) or binary.
pub fn parse_file(bytes: &[u8], name: &str) -> Result<Parsed> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        bail!("{name}: empty key file");
    }
    // As gpg decides: binary OpenPGP data starts with a packet tag (high bit set).
    let parsed = if bytes[0] & 0x80 != 0 {
        parse_binary(bytes, name)?
    } else {
        parse_armored(bytes, name)?
    };
    if parsed.keys.is_empty() && parsed.revocations.is_empty() {
        bail!("{name}: no OpenPGP public key in the file");
    }
    Ok(parsed)
}

fn parse_armored(bytes: &[u8], name: &str) -> Result<Parsed> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| anyhow!("{name}: armored key file is not UTF-8 text ({e})"))?;
    let mut keys = Vec::new();
    let mut revocations = Vec::new();
    let mut block: Option<(usize, String)> = None;
    let mut blocks = 0;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let trimmed = line.trim();
        match &mut block {
            None => {
                if let Some(label) = trimmed.strip_prefix("-----BEGIN ") {
                    let label = label.trim_end_matches('-');
                    if label != "PGP PUBLIC KEY BLOCK" {
                        bail!(
                            "{name}:{number}: armor block {label:?} is not a public key{}",
                            if label.contains("PRIVATE") {
                                " (export the public key: gpg --export --armor KEYID)"
                            } else {
                                ""
                            }
                        );
                    }
                    block = Some((number, format!("{trimmed}\n")));
                } else if !trimmed.is_empty() && trimmed.starts_with("-----") {
                    bail!("{name}:{number}: armor line outside a block: {trimmed:?}");
                }
            }
            Some((begin, buf)) => {
                buf.push_str(trimmed);
                buf.push('\n');
                if trimmed.starts_with("-----END ") {
                    if trimmed != "-----END PGP PUBLIC KEY BLOCK-----" {
                        bail!("{name}:{number}: END line {trimmed:?} does not close the public key block opened at line {begin}");
                    }
                    let origin = format!("{name}:{begin}");
                    let binary = dearmor(buf).map_err(|e| anyhow!("{origin}: {e}"))?;
                    let parsed = parse_binary(&binary, &origin)?;
                    if parsed.keys.is_empty() && parsed.revocations.is_empty() {
                        bail!("{origin}: the armor block holds no public key");
                    }
                    keys.extend(parsed.keys);
                    revocations.extend(parsed.revocations);
                    blocks += 1;
                    block = None;
                }
            }
        }
    }
    if let Some((begin, _)) = block {
        bail!("{name}:{begin}: the armor block opened here has no END line");
    }
    if blocks == 0 {
        bail!("{name}: neither an ASCII-armored key (no -----BEGIN PGP PUBLIC KEY BLOCK----- line) nor binary OpenPGP data");
    }
    Ok(Parsed { keys, revocations })
}

fn dearmor(block: &str) -> Result<Vec<u8>> {
    let mut reader = pgp::armor::Dearmor::new(block.as_bytes());
    let mut out = Vec::new();
    reader
        .read_to_end(&mut out)
        .map_err(|e| anyhow!("broken armor: {e}"))?;
    Ok(out)
}

/// Parses binary OpenPGP data: transferable public keys, and revocation
/// certificates (a lone key revocation signature, as `gpg --gen-revoke` writes).
fn parse_binary(bytes: &[u8], origin: &str) -> Result<Parsed> {
    let mut packets = Vec::new();
    for (index, packet) in PacketParser::new(bytes).enumerate() {
        let number = index + 1;
        match packet {
            Ok(Packet::Marker(_) | Packet::Padding(_) | Packet::Trust(_)) => {}
            Ok(Packet::SecretKey(_) | Packet::SecretSubkey(_)) => bail!(
                "{origin}: packet {number} is secret key material; trusted keys must be public (gpg --export KEYID)"
            ),
            Ok(p) => packets.push(p),
            Err(e) if is_ignorable(&e) => {}
            Err(e) => bail!("{origin}: packet {number} cannot be parsed: {e}"),
        }
    }
    let mut revocations = Vec::new();
    let mut rest = packets.into_iter().peekable();
    // Signatures before the first key stand alone: only key revocations may.
    while let Some(Packet::Signature(_)) = rest.peek() {
        let Some(Packet::Signature(sig)) = rest.next() else {
            break;
        };
        if sig.typ() != Some(SignatureType::KeyRevocation) {
            bail!(
                "{origin}: a signature of type {:?} outside any key",
                sig.typ()
            );
        }
        revocations.push(LoneRevocation {
            origin: origin.to_string(),
            sig,
        });
    }
    if let Some(p) = rest.peek() {
        if p.tag() != Tag::PublicKey {
            bail!(
                "{origin}: expected a public key packet, found {:?}",
                p.tag()
            );
        }
    }
    let mut keys = Vec::new();
    for parsed in SignedPublicKey::from_packets(rest.map(Ok).peekable()) {
        let signed = parsed.map_err(|e| anyhow!("{origin}: invalid public key: {e}"))?;
        keys.push(judge(&signed, origin)?);
    }
    Ok(Parsed { keys, revocations })
}

/// Packets rPGP marks as safe to skip: unknown versions or algorithms it does
/// not implement (such a subkey can never verify anything here).
fn is_ignorable(e: &PgpError) -> bool {
    match e {
        PgpError::Unsupported { .. } => true,
        PgpError::InvalidPacketContent { source } => {
            matches!(**source, PgpError::Unsupported { .. })
        }
        _ => false,
    }
}

/// Whether `sig` names `key` as its issuer (or names no issuer at all).
fn issued_by(sig: &Signature, fingerprint: &Fingerprint, key_id: &KeyId) -> bool {
    let fps = sig.issuer_fingerprint();
    let ids = sig.issuer_key_id();
    (fps.is_empty() && ids.is_empty()) || fps.contains(&fingerprint) || ids.contains(&key_id)
}

fn secs(t: pgp::types::Timestamp) -> i64 {
    i64::from(t.as_secs())
}

/// The binding facts of a valid self-signature made by `sig` over a key
/// created at `key_created`.
fn binding_of(sig: &Signature, key_created: i64, flags_default: bool) -> Option<Binding> {
    let created = secs(sig.created()?);
    let key_expires = sig
        .key_expiration_time()
        .map(|d| i64::from(d.as_secs()))
        .filter(|&d| d > 0)
        .map(|d| key_created + d);
    let sig_expires = sig
        .signature_expiration_time()
        .map(|d| i64::from(d.as_secs()))
        .filter(|&d| d > 0)
        .map(|d| created + d);
    let has_flags = sig.config().is_some_and(|c| {
        c.hashed_subpackets()
            .any(|p| matches!(p.data, SubpacketData::KeyFlags(_)))
    });
    let can_sign = if has_flags {
        sig.key_flags().sign()
    } else {
        flags_default
    };
    Some(Binding {
        created,
        key_expires,
        sig_expires,
        can_sign,
    })
}

fn describe_revocation(sig: &Signature) -> String {
    use pgp::packet::RevocationCode;
    let when = sig
        .created()
        .map(|t| super::show_time(secs(t)))
        .unwrap_or_else(|| "an unknown time".into());
    let code = match sig.revocation_reason_code() {
        None | Some(RevocationCode::NoReason) => "no reason given".to_string(),
        Some(RevocationCode::KeySuperseded) => "key superseded".to_string(),
        Some(RevocationCode::KeyCompromised) => "key compromised".to_string(),
        Some(RevocationCode::KeyRetired) => "key retired".to_string(),
        Some(other) => format!("{other:?}"),
    };
    let text = sig
        .revocation_reason_string()
        .map(|b| String::from_utf8_lossy(b).trim().to_string())
        .filter(|s| !s.is_empty())
        .map(|s| format!(": {}", super::one_line(&s)))
        .unwrap_or_default();
    format!("revoked at {when} ({code}{text})")
}

/// Checks every self-signature of `signed` once and keeps what they say.
fn judge(signed: &SignedPublicKey, origin: &str) -> Result<Key> {
    let primary = &signed.primary_key;
    let fp = primary.fingerprint();
    let key_id = primary.legacy_key_id();
    let fingerprint = format!("{fp:X}");
    let created = secs(primary.created_at());

    let mut bindings = Vec::new();
    for sig in &signed.details.direct_signatures {
        if sig.typ() == Some(SignatureType::Key)
            && issued_by(sig, &fp, &key_id)
            && sig.verify_key(primary).is_ok()
        {
            bindings.extend(binding_of(sig, created, true));
        }
    }
    // (user id, self-signature time, marked primary) of each valid, unrevoked user id.
    let mut user_ids: Vec<(String, i64, bool)> = Vec::new();
    for user in &signed.details.users {
        let mut newest: Option<(i64, bool)> = None;
        let mut revoked = false;
        for sig in &user.signatures {
            if !issued_by(sig, &fp, &key_id)
                || sig
                    .verify_certification(primary, Tag::UserId, &user.id)
                    .is_err()
            {
                continue;
            }
            if sig.typ() == Some(SignatureType::CertRevocation) {
                revoked = true;
                continue;
            }
            if let Some(b) = binding_of(sig, created, true) {
                bindings.push(b);
                if newest.is_none_or(|(t, _)| b.created >= t) {
                    newest = Some((b.created, sig.is_primary()));
                }
            }
        }
        if let (Some((t, is_primary)), false) = (newest, revoked) {
            let id = super::one_line(&String::from_utf8_lossy(user.id.id()));
            user_ids.push((id, t, is_primary));
        }
    }
    if bindings.is_empty() {
        bail!("{origin}: key {fingerprint} has no valid self-signature (neither on a user id nor a direct key signature)");
    }
    bindings.sort_by_key(|b| b.created);
    // The primary user id: the one marked primary (newest such), else the first.
    let user_id = user_ids
        .iter()
        .filter(|u| u.2)
        .max_by_key(|u| u.1)
        .or(user_ids.first())
        .map_or_else(|| "(no user id)".to_string(), |u| u.0.clone());

    let mut revoked = None;
    for sig in &signed.details.revocation_signatures {
        if issued_by(sig, &fp, &key_id) && sig.verify_key(primary).is_ok() {
            revoked = Some(describe_revocation(sig));
            break;
        }
    }

    let mut subkeys = Vec::new();
    for sub in &signed.public_subkeys {
        let sub_created = secs(sub.key.created_at());
        let mut sub_bindings = Vec::new();
        let mut sub_revoked = None;
        for sig in &sub.signatures {
            if !issued_by(sig, &fp, &key_id)
                || sig.verify_subkey_binding(primary, &sub.key).is_err()
            {
                continue;
            }
            match sig.typ() {
                Some(SignatureType::SubkeyRevocation) => {
                    sub_revoked.get_or_insert_with(|| describe_revocation(sig));
                }
                Some(SignatureType::SubkeyBinding) => {
                    if let Some(mut b) = binding_of(sig, sub_created, false) {
                        // A signing subkey must sign back its primary key
                        // (RFC 9580, 5.2.1): otherwise anyone could claim it.
                        if b.can_sign {
                            b.can_sign = sig.embedded_signature().is_some_and(|back| {
                                back.verify_primary_key_binding(&sub.key, primary).is_ok()
                            });
                        }
                        sub_bindings.push(b);
                    }
                }
                _ => {}
            }
        }
        if sub_bindings.is_empty() && sub_revoked.is_none() {
            // Not bound to this key: it cannot vouch for anything.
            continue;
        }
        sub_bindings.sort_by_key(|b| b.created);
        subkeys.push(Component {
            fingerprint: sub.key.fingerprint(),
            key_id: sub.key.legacy_key_id(),
            created: sub_created,
            key: sub.key.clone(),
            bindings: sub_bindings,
            revoked: sub_revoked,
        });
    }

    let material = signed
        .to_bytes()
        .map_err(|e| anyhow!("{origin}: cannot serialize key {fingerprint}: {e}"))?;
    Ok(Key {
        fingerprint,
        user_id,
        origin: origin.to_string(),
        primary: Component {
            key: primary.clone(),
            fingerprint: fp,
            key_id,
            created,
            bindings,
            revoked: None,
        },
        subkeys,
        revoked,
        material_digest: hex(&Sha256::digest(&material)),
    })
}

/// Applies a revocation certificate found outside its key; one that matches
/// no loaded key is an error (it was meant for something).
fn apply_standalone_revocation(keys: &mut [Key], origin: &str, sig: &Signature) -> Result<()> {
    for key in keys.iter_mut() {
        let p = &key.primary;
        if issued_by(sig, &p.fingerprint, &p.key_id) && sig.verify_key(&p.key).is_ok() {
            key.revoked = Some(describe_revocation(sig));
            let mut bytes = Vec::new();
            sig.to_writer_with_header(&mut bytes)
                .map_err(|e| anyhow!("{origin}: cannot serialize a revocation: {e}"))?;
            key.material_digest = hex(&Sha256::digest(
                format!("{} {}", key.material_digest, hex(&bytes)).as_bytes(),
            ));
            return Ok(());
        }
    }
    bail!("{origin}: a revocation certificate for a key that is not in the trusted keys (or whose signature is not valid)")
}

pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The self-signature in force at `t`: the newest one made at or before `t`
/// that has not itself expired by then.
fn binding_at(bindings: &[Binding], t: i64) -> Option<&Binding> {
    bindings
        .iter()
        .rev()
        .find(|b| b.created <= t && b.sig_expires.is_none_or(|e| t < e))
}

/// A signing key found for a signature: the key and, if a subkey signed, which.
struct Candidate<'a> {
    key: &'a Key,
    subkey: Option<&'a Component<PublicSubkey>>,
}

/// Verifies the armored detached signature `armored` over `payload`.
/// `now`, when given, is the time of the verification: a key (or signing subkey)
/// expired by then is refused as `gpg` and `git verify-commit` refuse it.
pub fn verify(
    keys: &[Key],
    payload: &[u8],
    armored: &[u8],
    now: Option<i64>,
) -> Result<Signer, Refusal> {
    let sig = parse_signature(armored)?;
    let issuer = issuer_text(&sig);
    let with_issuer = |r: Refusal| {
        if issuer.is_empty() {
            r
        } else {
            r.with_fingerprint(&issuer)
        }
    };
    match sig.typ() {
        Some(SignatureType::Binary | SignatureType::Text) => {}
        other => {
            return Err(with_issuer(Refusal::new(
                RefusalReason::Malformed,
                format!("the OpenPGP signature has type {other:?}, not a signature over data"),
            )))
        }
    }
    match sig.hash_alg() {
        Some(h @ (HashAlgorithm::Md5 | HashAlgorithm::Sha1 | HashAlgorithm::Ripemd160)) => {
            return Err(with_issuer(Refusal::new(
                RefusalReason::WeakAlgorithm,
                format!(
                    "the OpenPGP signature uses the broken hash {h}; SHA-2 or SHA-3 is required"
                ),
            )))
        }
        Some(_) => {}
        None => {
            return Err(with_issuer(Refusal::new(
                RefusalReason::Unsupported,
                format!(
                    "OpenPGP signature version {:?} is not supported",
                    sig.version()
                ),
            )))
        }
    }
    let Some(created) = sig.created().map(secs) else {
        return Err(with_issuer(Refusal::new(
            RefusalReason::Malformed,
            "the OpenPGP signature has no creation time",
        )));
    };

    let candidates = candidates(keys, &sig);
    if candidates.is_empty() {
        return Err(with_issuer(Refusal::new(
            RefusalReason::UnknownKey,
            format!("OpenPGP key {issuer} is not among the trusted keys"),
        )));
    }
    let found = candidates.iter().find(|c| match c.subkey {
        Some(sub) => sig.verify(&sub.key, payload).is_ok(),
        None => sig.verify(&c.key.primary.key, payload).is_ok(),
    });
    let Some(c) = found else {
        let key = candidates[0].key;
        return Err(Refusal::new(
            RefusalReason::BadSignature,
            format!(
                "the OpenPGP signature by {} ({:?}) does not match the commit",
                key.fingerprint, key.user_id
            ),
        )
        .with_fingerprint(&key.fingerprint));
    };
    check_validity(c, created)
        .and_then(|()| match now {
            Some(now) => check_not_expired(c, now),
            None => Ok(()),
        })
        .map_err(|r| r.with_fingerprint(&c.key.fingerprint))?;
    Ok(Signer {
        kind: SignatureKind::OpenPgp,
        signer: c.key.user_id.clone(),
        fingerprint: c.key.fingerprint.clone(),
    })
}

fn parse_signature(armored: &[u8]) -> Result<Signature, Refusal> {
    let malformed = |why: String| Refusal::new(RefusalReason::Malformed, why);
    let (sigs, _) = DetachedSignature::from_armor_many(armored)
        .map_err(|e| malformed(format!("the OpenPGP signature cannot be read: {e}")))?;
    let mut sigs = sigs.take(2).collect::<Vec<_>>().into_iter();
    let first = match sigs.next() {
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            return Err(malformed(format!(
                "the OpenPGP signature cannot be parsed: {}",
                super::one_line(&e.to_string())
            )))
        }
        None => return Err(malformed("the OpenPGP armor holds no signature".into())),
    };
    if sigs.next().is_some() {
        return Err(Refusal::new(
            RefusalReason::Unsupported,
            "the OpenPGP armor holds more than one signature",
        ));
    }
    Ok(first.signature)
}

fn issuer_text(sig: &Signature) -> String {
    if let Some(fp) = sig.issuer_fingerprint().first() {
        return format!("{fp:X}");
    }
    if let Some(id) = sig.issuer_key_id().first() {
        return hex(id.as_ref()).to_uppercase();
    }
    String::new()
}

/// Keys and subkeys the signature names as its issuer (every key and subkey
/// if it names none).
fn candidates<'a>(keys: &'a [Key], sig: &Signature) -> Vec<Candidate<'a>> {
    let mut out = Vec::new();
    for key in keys {
        let p = &key.primary;
        if issued_by(sig, &p.fingerprint, &p.key_id) {
            out.push(Candidate { key, subkey: None });
        }
        for sub in &key.subkeys {
            if issued_by(sig, &sub.fingerprint, &sub.key_id) {
                out.push(Candidate {
                    key,
                    subkey: Some(sub),
                });
            }
        }
    }
    out
}

/// Whether the key (and subkey) that made a genuine signature was valid when
/// the signature was made, at `t`.
fn check_validity(c: &Candidate<'_>, t: i64) -> Result<(), Refusal> {
    let key = c.key;
    if let Some(how) = &key.revoked {
        return Err(Refusal::new(
            RefusalReason::KeyRevoked,
            format!(
                "OpenPGP key {} ({:?}) was {how}",
                key.fingerprint, key.user_id
            ),
        ));
    }
    if let Some(sub) = c.subkey {
        if let Some(how) = &sub.revoked {
            return Err(Refusal::new(
                RefusalReason::KeyRevoked,
                format!(
                    "signing subkey {:X} of OpenPGP key {} ({:?}) was {how}",
                    sub.fingerprint, key.fingerprint, key.user_id
                ),
            ));
        }
    }
    let when = super::show_time(t);
    let primary = &key.primary;
    let not_yet = |what: String| {
        Refusal::new(
            RefusalReason::KeyNotYetValid,
            format!("{what} was not valid yet when the signature was made ({when})"),
        )
    };
    let name = format!("OpenPGP key {} ({:?})", key.fingerprint, key.user_id);
    if t < primary.created {
        return Err(not_yet(format!(
            "{name}, created {},",
            super::show_time(primary.created)
        )));
    }
    let Some(pb) = binding_at(&primary.bindings, t) else {
        return Err(not_yet(format!(
            "{name} (no self-signature from before then)"
        )));
    };
    if let Some(exp) = pb.key_expires.filter(|&e| t >= e) {
        return Err(Refusal::new(
            RefusalReason::KeyExpired,
            format!(
                "{name} expired at {} and the signature was made at {when}",
                super::show_time(exp)
            ),
        ));
    }
    match c.subkey {
        None => {
            if !pb.can_sign {
                return Err(Refusal::new(
                    RefusalReason::BadSignature,
                    format!("{name} is not certified for signing"),
                ));
            }
        }
        Some(sub) => {
            let sub_name = format!("signing subkey {:X} of {name}", sub.fingerprint);
            if t < sub.created {
                return Err(not_yet(format!(
                    "{sub_name}, created {},",
                    super::show_time(sub.created)
                )));
            }
            let Some(sb) = binding_at(&sub.bindings, t) else {
                return Err(not_yet(format!(
                    "{sub_name} (no binding signature from before then)"
                )));
            };
            if let Some(exp) = sb.key_expires.filter(|&e| t >= e) {
                return Err(Refusal::new(
                    RefusalReason::KeyExpired,
                    format!(
                        "{sub_name} expired at {} and the signature was made at {when}",
                        super::show_time(exp)
                    ),
                ));
            }
            if !sb.can_sign {
                return Err(Refusal::new(
                    RefusalReason::BadSignature,
                    format!("{sub_name} is not bound for signing"),
                ));
            }
        }
    }
    Ok(())
}

/// Whether the key that made a signature (and its signing subkey) is still
/// unexpired at `now`, by the newest self-signature or binding made by then.
/// The signature's own creation time does not help a key that has expired
/// since: anyone holding the old key can write any creation time.
fn check_not_expired(c: &Candidate<'_>, now: i64) -> Result<(), Refusal> {
    let name = format!("OpenPGP key {} ({:?})", c.key.fingerprint, c.key.user_id);
    let expired = |what: String, at: i64| {
        Refusal::new(
            RefusalReason::KeyExpired,
            format!(
                "{what} expired at {}, before this verification ({})",
                super::show_time(at),
                super::show_time(now)
            ),
        )
    };
    if let Some(exp) = binding_at(&c.key.primary.bindings, now)
        .and_then(|b| b.key_expires)
        .filter(|&e| now >= e)
    {
        return Err(expired(name, exp));
    }
    if let Some(sub) = c.subkey {
        if let Some(exp) = binding_at(&sub.bindings, now)
            .and_then(|b| b.key_expires)
            .filter(|&e| now >= e)
        {
            return Err(expired(
                format!("signing subkey {:X} of {name}", sub.fingerprint),
                exp,
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(created: i64, sig_expires: Option<i64>) -> Binding {
        Binding {
            created,
            key_expires: None,
            sig_expires,
            can_sign: true,
        }
    }

    #[test]
    fn binding_at_takes_the_newest_self_signature_not_after_t() {
        let list = [b(10, None), b(20, None), b(30, None)];
        assert_eq!(binding_at(&list, 5), None);
        assert_eq!(binding_at(&list, 10).map(|b| b.created), Some(10));
        assert_eq!(binding_at(&list, 25).map(|b| b.created), Some(20));
        assert_eq!(binding_at(&list, 99).map(|b| b.created), Some(30));
        let expiring = [b(10, None), b(20, Some(25))];
        assert_eq!(binding_at(&expiring, 24).map(|b| b.created), Some(20));
        assert_eq!(binding_at(&expiring, 25).map(|b| b.created), Some(10));
    }

    #[test]
    fn files_that_are_not_keys_are_errors_naming_the_file() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "k.asc: empty key file"),
            (b"  \n", "k.asc: empty key file"),
            (b"hello\n", "k.asc: neither an ASCII-armored key"),
            (
                b"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nAAAA\n-----END PGP PRIVATE KEY BLOCK-----\n",
                "k.asc:1: armor block \"PGP PRIVATE KEY BLOCK\" is not a public key",
            ),
            (
                b"comment\n\n-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQINBF\n",
                "k.asc:3: the armor block opened here has no END line",
            ),
            (
                b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n!!!!\n-----END PGP PUBLIC KEY BLOCK-----\n",
                "k.asc:1: broken armor",
            ),
            (
                b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nAAAA\n-----END PGP SIGNATURE-----\n",
                "k.asc:4: END line",
            ),
            (b"\x99\x01", "k.asc"),
        ];
        for (bytes, want) in cases {
            let err = format!("{:#}", parse_file(bytes, "k.asc").unwrap_err());
            assert!(
                err.starts_with(want),
                "{bytes:?}: {err:?} must start with {want:?}"
            );
        }
    }
}
