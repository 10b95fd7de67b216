//! The host's age identities (SSH host keys, native `AGE-SECRET-KEY-1` files) and
//! the recipient strings that name them, converted "ssh-to-age style" for ed25519.

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha512};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use zeroize::{Zeroize, Zeroizing};

use super::human_bytes;

/// Host private keys tried when no `--age-identity` is given, in this order.
pub const DEFAULT_HOST_KEYS: &[&str] =
    &["/etc/ssh/ssh_host_ed25519_key", "/etc/ssh/ssh_host_rsa_key"];
/// Host public keys `gitops-run recipient` reads; the first that exists wins.
pub const DEFAULT_HOST_PUBLIC_KEYS: &[&str] = &[
    "/etc/ssh/ssh_host_ed25519_key.pub",
    "/etc/ssh/ssh_host_rsa_key.pub",
];
/// Identity and public key files are small; a 16384-bit RSA key is about 13 KiB.
const MAX_KEY_FILE_BYTES: u64 = 64 << 10;

/// Human-readable part of age's X25519 recipients and identities.
const AGE_RECIPIENT_HRP: &str = "age";
const AGE_SECRET_KEY_HRP: &str = "age-secret-key-";

/// Everything this host can decrypt with, and how to name it.
pub struct Identities {
    keys: Vec<Box<dyn age::Identity + Send + Sync>>,
    recipients: Vec<String>,
    /// Default host keys that exist but could not be used, with why (for debug logs).
    skipped: Vec<String>,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys themselves.
        f.debug_struct("Identities")
            .field("recipients", &self.recipients)
            .field("skipped", &self.skipped)
            .finish_non_exhaustive()
    }
}

impl Identities {
    /// The `files` given with `--age-identity` (each must load), or when there are
    /// none, those of `host_keys` that exist and are usable. No usable identity at
    /// all is an error naming every file tried and why it did not help.
    pub fn load(files: &[PathBuf], host_keys: &[PathBuf]) -> Result<Identities> {
        let mut ids = Identities::empty();
        if !files.is_empty() {
            for file in files {
                ids.add_file(file)
                    .with_context(|| format!("failed to load age identity {}", file.display()))?;
            }
            return Ok(ids);
        }
        let mut tried = Vec::new();
        for key in host_keys {
            if !key.exists() {
                tried.push(format!("{} (missing)", key.display()));
                continue;
            }
            if let Err(err) = ids.add_file(key) {
                let why = format!("{} ({err:#})", key.display());
                tried.push(why.clone());
                ids.skipped.push(why);
            }
        }
        if ids.keys.is_empty() {
            bail!(
                "no usable age identity to decrypt secrets with: tried {}; give one with --age-identity",
                if tried.is_empty() {
                    "nothing".to_owned()
                } else {
                    tried.join(", ")
                }
            );
        }
        Ok(ids)
    }

    pub(super) fn empty() -> Identities {
        Identities {
            keys: Vec::new(),
            recipients: Vec::new(),
            skipped: Vec::new(),
        }
    }

    /// Recipient strings of these identities, for messages and for encrypting to this
    /// host: `age1...` for ed25519 and native keys, `ssh-rsa ...` for RSA keys.
    pub fn recipients(&self) -> Vec<String> {
        self.recipients.clone()
    }

    /// Default host keys that exist but were skipped, each with the reason.
    #[cfg(test)]
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    /// The identities as age wants them.
    pub(super) fn as_age(&self) -> impl Iterator<Item = &dyn age::Identity> {
        self.keys.iter().map(|k| k.as_ref() as &dyn age::Identity)
    }

    /// `recipients()` joined for a one-line message.
    pub(super) fn describe(&self) -> String {
        if self.recipients.is_empty() {
            "no identity".to_owned()
        } else {
            self.recipients.join(", ")
        }
    }

    fn add_file(&mut self, path: &Path) -> Result<()> {
        let data = read_small(path)?;
        let text = data.trim_ascii_start();
        if text.starts_with(b"-----BEGIN") {
            self.add_ssh_key(path, &data)
        } else {
            self.add_native(&data)
        }
    }

    /// An OpenSSH or PEM private key. An ed25519 key yields two identities: age's own
    /// ssh-ed25519 one (files encrypted to the `ssh-ed25519 ...` line) and the X25519
    /// key ssh-to-age derives from it (files encrypted to the `age1...` recipient).
    fn add_ssh_key(&mut self, path: &Path, data: &[u8]) -> Result<()> {
        use age::ssh::{Identity as SshIdentity, Recipient as SshRecipient, UnsupportedKey};
        let identity = SshIdentity::from_buffer(data, Some(path.display().to_string()))
            .map_err(|_| anyhow::anyhow!("not an SSH private key age can read"))?;
        match &identity {
            SshIdentity::Unencrypted(_) => {}
            SshIdentity::Encrypted(_) => {
                bail!("the key is protected by a passphrase, which an unattended pass cannot enter")
            }
            SshIdentity::Unsupported(UnsupportedKey::EncryptedPem)
            | SshIdentity::Unsupported(UnsupportedKey::EncryptedSsh(_)) => {
                bail!("the key is encrypted in a way age cannot open")
            }
            SshIdentity::Unsupported(
                UnsupportedKey::Type(kind) | UnsupportedKey::Hardware(kind),
            ) => bail!("age cannot decrypt with {kind} keys (only ssh-ed25519 and ssh-rsa)"),
        }
        let recipient = SshRecipient::try_from(identity.clone())
            .map_err(|e| anyhow::anyhow!("unusable SSH key: {}", ssh_parse_error(&e)))?;
        match recipient {
            SshRecipient::SshEd25519(..) => {
                // age keeps the seed to itself; read it from the OpenSSH container.
                let x25519 = x25519_from_openssh_ed25519(data)?;
                self.recipients.push(x25519.to_public().to_string());
                self.keys.push(Box::new(identity));
                self.keys.push(Box::new(x25519));
            }
            SshRecipient::SshRsa(..) => {
                self.recipients.push(recipient.to_string());
                self.keys.push(Box::new(identity));
            }
        }
        Ok(())
    }

    /// A native identity file: `AGE-SECRET-KEY-1...` lines, `#` comments, blank lines.
    fn add_native(&mut self, data: &[u8]) -> Result<()> {
        let text = std::str::from_utf8(data)
            .map_err(|_| anyhow::anyhow!("neither an SSH private key nor an age identity file"))?;
        let mut found = 0;
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // The line is secret: report only its number.
            let identity = age::x25519::Identity::from_str(line).map_err(|_| {
                anyhow::anyhow!(
                    "line {} is not an AGE-SECRET-KEY-1 identity (plugin identities are not supported)",
                    index + 1
                )
            })?;
            self.recipients.push(identity.to_public().to_string());
            self.keys.push(Box::new(identity));
            found += 1;
        }
        if found == 0 {
            bail!("the file holds no identity");
        }
        Ok(())
    }
}

/// The X25519 identity of an OpenSSH ed25519 private key, as ssh-to-age derives it.
fn x25519_from_openssh_ed25519(data: &[u8]) -> Result<age::x25519::Identity> {
    let key = ssh_key::PrivateKey::from_openssh(data)
        .map_err(|e| anyhow::anyhow!("failed to read the ed25519 key: {e}"))?;
    let Some(keypair) = key.key_data().ed25519() else {
        bail!("failed to read the ed25519 key: the file holds another key type");
    };
    x25519_from_ed25519_seed(keypair.private.as_ref())
}

/// The X25519 identity ssh-to-age derives from an ed25519 seed: SHA-512 of the
/// seed, first half, clamped (RFC 8032 section 5.1.5 and RFC 7748).
fn x25519_from_ed25519_seed(seed: &[u8; 32]) -> Result<age::x25519::Identity> {
    let mut digest = Sha512::digest(seed);
    let mut scalar = Zeroizing::new([0u8; 32]);
    scalar.copy_from_slice(&digest[..32]);
    digest.as_mut_slice().zeroize();
    scalar[0] &= 248;
    scalar[31] &= 127;
    scalar[31] |= 64;
    // age offers no constructor from bytes: go through its own text form.
    let mut groups = to_base32(scalar.as_slice());
    let mut encoded = Zeroizing::new(String::with_capacity(128));
    let written = bech32::encode_to_fmt(
        &mut *encoded,
        AGE_SECRET_KEY_HRP,
        &groups,
        bech32::Variant::Bech32,
    );
    wipe_base32(&mut groups);
    match written {
        Ok(Ok(())) => {}
        _ => bail!("failed to encode the converted ed25519 key"),
    }
    age::x25519::Identity::from_str(&encoded)
        .map_err(|e| anyhow::anyhow!("failed to convert the ed25519 key for age: {e}"))
}

/// Bytes as 5-bit groups for bech32, allocated once so no copy is left behind.
fn to_base32(bytes: &[u8]) -> Vec<bech32::u5> {
    let mut out = Vec::with_capacity((bytes.len() * 8).div_ceil(5));
    let (mut acc, mut bits) = (0u16, 0u32);
    let push = |v: u16, out: &mut Vec<bech32::u5>| {
        // Masked to five bits, so the conversion cannot fail.
        if let Ok(g) = bech32::u5::try_from_u8((v & 31) as u8) {
            out.push(g);
        }
    };
    for &b in bytes {
        acc = (acc << 8) | u16::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            push(acc >> bits, &mut out);
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        push(acc << (5 - bits), &mut out);
    }
    out
}

fn wipe_base32(groups: &mut [bech32::u5]) {
    for g in groups.iter_mut() {
        *g = bech32::u5::default();
    }
    std::hint::black_box(groups);
}

/// The recipient for an SSH public key line (`ssh-ed25519 AAAA... comment`): the
/// `age1...` X25519 recipient ssh-to-age derives for ed25519 (Edwards to Montgomery
/// form of the public point), or the `ssh-rsa AAAA...` key itself for RSA.
pub fn recipient_of_public_key(line: &str) -> Result<String> {
    let recipient = age::ssh::Recipient::from_str(line.trim()).map_err(|e| {
        anyhow::anyhow!("not an SSH public key age can use: {}", ssh_parse_error(&e))
    })?;
    match &recipient {
        age::ssh::Recipient::SshEd25519(_, point) => {
            if point.is_small_order() {
                bail!("not an SSH public key age can use: the ed25519 point has small order");
            }
            let montgomery = point.to_montgomery().to_bytes();
            let encoded = bech32::encode(
                AGE_RECIPIENT_HRP,
                to_base32(&montgomery),
                bech32::Variant::Bech32,
            )
            .context("failed to encode the age recipient")?;
            // Round-trip through age so that only a recipient age accepts leaves here.
            let parsed = age::x25519::Recipient::from_str(&encoded)
                .map_err(|e| anyhow::anyhow!("converted recipient rejected by age: {e}"))?;
            Ok(parsed.to_string())
        }
        age::ssh::Recipient::SshRsa(..) => Ok(recipient.to_string()),
    }
}

fn ssh_parse_error(err: &age::ssh::ParseRecipientKeyError) -> String {
    use age::ssh::ParseRecipientKeyError as E;
    match err {
        E::Ignore => "unsupported key".to_owned(),
        E::Invalid(why) => (*why).to_owned(),
        E::RsaModulusTooLarge => "the RSA modulus is larger than age supports".to_owned(),
        E::RsaModulusTooSmall => "the RSA modulus is smaller than 2048 bits".to_owned(),
        E::Unsupported(kind) => {
            format!("{kind} keys are not supported (only ssh-ed25519 and ssh-rsa)")
        }
    }
}

/// The lines `gitops-run recipient` prints: the recipient of `host_key` if given (a
/// public key file, an SSH private key or an age identity file), else of the first
/// of `defaults` (public key files) that exists. One recipient per line.
pub fn recipient_lines(host_key: Option<&Path>, defaults: &[PathBuf]) -> Result<Vec<String>> {
    let file = match host_key {
        Some(file) => file.to_path_buf(),
        None => match defaults.iter().find(|p| p.exists()) {
            Some(file) => file.clone(),
            None => bail!(
                "no SSH host public key found (tried {}); name one with --host-key",
                defaults
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    };
    let data = read_small(&file)?;
    let start = data.trim_ascii_start();
    if start.starts_with(b"-----BEGIN") || start.starts_with(b"AGE-SECRET-KEY-") {
        return Ok(Identities::load(std::slice::from_ref(&file), &[])?.recipients());
    }
    let text = std::str::from_utf8(&data)
        .map_err(|_| anyhow::anyhow!("{} is not a text file", file.display()))?;
    let mut lines = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        lines
            .push(recipient_of_public_key(line).with_context(|| {
                format!("failed to read {} line {}", file.display(), index + 1)
            })?);
    }
    if lines.is_empty() {
        bail!("{} holds no public key", file.display());
    }
    Ok(lines)
}

/// `gitops-run recipient [--host-key FILE]`: print this host's recipient(s).
pub fn run_recipient(host_key: Option<&Path>) -> Result<()> {
    let defaults: Vec<PathBuf> = DEFAULT_HOST_PUBLIC_KEYS.iter().map(PathBuf::from).collect();
    for line in recipient_lines(host_key, &defaults)? {
        println!("{line}");
    }
    Ok(())
}

/// Read a key file whole, refusing anything larger than a key file can be. The
/// buffer is wiped when dropped.
fn read_small(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("failed to open {}", path.display()))?;
    // Room for all of it up front, so no reallocation leaves a copy behind.
    let mut data = Zeroizing::new(Vec::with_capacity(MAX_KEY_FILE_BYTES as usize + 1));
    file.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_end(&mut data)
        .with_context(|| format!("failed to read {}", path.display()))?;
    if data.len() as u64 > MAX_KEY_FILE_BYTES {
        bail!(
            "{} is larger than {}, too large for a key file",
            path.display(),
            human_bytes(MAX_KEY_FILE_BYTES)
        );
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bech32::ToBase32;

    #[test]
    fn base32_groups_match_the_bech32_crate() {
        let patterns: [&[u8]; 5] = [&[], &[0xff], &[0x01, 0x02, 0x03], &[0xa5; 32], &[0x5a; 33]];
        for bytes in patterns {
            assert_eq!(to_base32(bytes), bytes.to_base32(), "{bytes:?}");
        }
    }
}
