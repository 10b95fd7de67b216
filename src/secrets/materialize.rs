//! Decrypting one commit's `*.age` files into `<root>/<commit>/`: find them in the
//! followed paths, decrypt each as a bounded stream into a temporary directory, and
//! rename that into place only when every file decrypted.

use anyhow::Context;
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;
use zeroize::Zeroizing;

use super::{
    check_commit, check_ram_backed, human_bytes, prepare_root, Identities, Limits, SecretsError,
    TMP_PREFIX,
};

/// Suffix of encrypted files; the decrypted file is named without it.
const AGE_SUFFIX: &[u8] = b".age";
/// How age files begin, binary and ASCII-armored.
const AGE_MAGIC: &[u8] = b"age-encryption.org/";
const AGE_ARMOR_BEGIN: &[u8] = b"-----BEGIN AGE ENCRYPTED FILE-----";
/// Most bytes of a file read before its age header must have parsed. A header with
/// dozens of ssh-rsa recipients stays far below this.
const MAX_AGE_HEADER_BYTES: u64 = 64 << 10;
/// age encrypts in chunks of 64 KiB plaintext, each with a 16-byte tag, after a
/// 16-byte nonce.
const AGE_CHUNK_BYTES: u64 = 64 << 10;
const AGE_TAG_BYTES: u64 = 16;
const AGE_NONCE_BYTES: u64 = 16;
/// Size of the buffer plaintext passes through on its way to the file.
const COPY_BUFFER_BYTES: usize = 64 << 10;

/// One commit's decrypted secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Materialized {
    /// `<root>/<commit>`: what the entrypoint gets as `GITOPS_SECRETS_DIR`.
    pub dir: PathBuf,
    /// Number of files decrypted.
    pub count: usize,
    /// Plaintext bytes written in all.
    pub bytes: u64,
}

/// An encrypted file found in the tree.
#[derive(Debug)]
struct Found {
    /// Path relative to the tree, with `.age`, for messages.
    rel: PathBuf,
    /// Path relative to the secrets directory, without `.age`.
    out: PathBuf,
    /// The file to read (a symlink's target inside the tree).
    source: PathBuf,
}

/// Relative paths (with `.age`) of the secrets in `tree` restricted to `paths`
/// (relative directories; empty means the whole tree), sorted. `.git` is skipped,
/// symlinked directories are not entered, and a `*.age` symlink must stay inside
/// the tree.
pub fn find(tree: &Path, paths: &[String]) -> Result<Vec<PathBuf>, SecretsError> {
    Ok(walk(tree, paths, usize::MAX)?
        .into_iter()
        .map(|f| f.rel)
        .collect())
}

/// Decrypt every `*.age` file of `tree` (restricted to `paths`) into
/// `<root>/<commit>/`, keeping relative paths without `.age`: files 0600,
/// directories 0700. Everything is decrypted into `<root>/.tmp-<commit>-XXXX` first
/// and renamed into place only when all succeeded; on failure nothing is left and an
/// existing `<root>/<commit>` is untouched. The root must be RAM-backed. (The pass
/// uses [`prepare`], which loads the identities only when there is a secret.)
#[cfg(test)]
pub fn materialize(
    tree: &Path,
    paths: &[String],
    ids: &Identities,
    root: &Path,
    commit: &str,
    limits: &Limits,
) -> Result<Materialized, SecretsError> {
    check_commit(commit)?;
    let found = walk(tree, paths, limits.max_files)?;
    write_all(&found, ids, root, commit, limits)
}

/// [`materialize`] that loads the identities only when the commit has secrets, so a
/// host without SSH host keys can deploy commits without any. With no secret the
/// directory is created empty and the root need not be RAM-backed (nothing secret
/// is written).
pub fn prepare(
    tree: &Path,
    paths: &[String],
    identity_files: &[PathBuf],
    host_keys: &[PathBuf],
    root: &Path,
    commit: &str,
    limits: &Limits,
) -> Result<Materialized, SecretsError> {
    check_commit(commit)?;
    let found = walk(tree, paths, limits.max_files)?;
    let ids = if found.is_empty() {
        Identities::empty()
    } else {
        Identities::load(identity_files, host_keys)?
    };
    write_all(&found, &ids, root, commit, limits)
}

fn write_all(
    found: &[Found],
    ids: &Identities,
    root: &Path,
    commit: &str,
    limits: &Limits,
) -> Result<Materialized, SecretsError> {
    prepare_root(root)?;
    if !found.is_empty() {
        check_ram_backed(root)?;
    }
    // The temporary directory is removed when dropped, that is on every error below.
    let tmp = tempfile::Builder::new()
        .prefix(&format!("{TMP_PREFIX}{commit}-"))
        .permissions(Permissions::from_mode(0o700))
        .tempdir_in(root)
        .with_context(|| {
            format!(
                "failed to create a temporary directory in {}",
                root.display()
            )
        })?;
    set_mode(tmp.path(), 0o700)?;
    let mut total = 0u64;
    for secret in found {
        total += decrypt_one(secret, ids, tmp.path(), limits, total)?;
    }
    let dest = root.join(commit);
    replace_dir(tmp.keep(), &dest, root, commit)?;
    Ok(Materialized {
        dir: dest,
        count: found.len(),
        bytes: total,
    })
}

/// Move the finished directory to `dest`. An older copy of the same commit (a retry
/// after a failed entrypoint) is moved aside first and removed after.
fn replace_dir(tmp: PathBuf, dest: &Path, root: &Path, commit: &str) -> Result<(), SecretsError> {
    let result = (|| -> anyhow::Result<()> {
        let aside = root.join(format!("{TMP_PREFIX}old-{commit}"));
        let had_old = std::fs::symlink_metadata(dest).is_ok();
        if had_old {
            if std::fs::symlink_metadata(&aside).is_ok() {
                std::fs::remove_dir_all(&aside)
                    .with_context(|| format!("failed to remove {}", aside.display()))?;
            }
            std::fs::rename(dest, &aside)
                .with_context(|| format!("failed to move {} aside", dest.display()))?;
        }
        if let Err(err) = std::fs::rename(&tmp, dest) {
            if had_old {
                // Put the previous copy back rather than leave the commit without one.
                let _ = std::fs::rename(&aside, dest);
            }
            return Err(anyhow::Error::new(err).context(format!(
                "failed to move secrets into place at {}",
                dest.display()
            )));
        }
        if had_old {
            std::fs::remove_dir_all(&aside)
                .with_context(|| format!("failed to remove {}", aside.display()))?;
        }
        Ok(())
    })();
    if result.is_err() && tmp.exists() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(result?)
}

/// Decrypt one file into `dir`; returns the plaintext size. `used` bytes of the total
/// budget are already spent.
fn decrypt_one(
    secret: &Found,
    ids: &Identities,
    dir: &Path,
    limits: &Limits,
    used: u64,
) -> Result<u64, SecretsError> {
    let rel = shown(&secret.rel);
    let fail = |why: &str| {
        SecretsError::Commit(format!(
            "failed to decrypt secret {rel} for this host ({}): {why}",
            ids.describe()
        ))
    };
    let too_big = || {
        SecretsError::Commit(format!(
            "secret {rel} is larger than the limit of {} per secret file",
            human_bytes(limits.max_file_bytes)
        ))
    };
    let over_total = || {
        SecretsError::Commit(format!(
            "secrets exceed the limit of {} in total (reached at {rel})",
            human_bytes(limits.max_total_bytes)
        ))
    };

    let file = File::open(&secret.source)
        .with_context(|| format!("failed to open {}", secret.source.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("failed to inspect {}", secret.source.display()))?;
    if !meta.is_file() {
        return Err(SecretsError::Commit(format!(
            "secret {rel} is not a regular file"
        )));
    }
    let payload_cap = encrypted_cap(limits.max_file_bytes);
    if meta.len() > MAX_AGE_HEADER_BYTES + payload_cap {
        return Err(too_big());
    }

    // Only the header's worth may be read until the header parsed; then the payload.
    let budget = Rc::new(Cell::new(MAX_AGE_HEADER_BYTES));
    let counted = Budgeted {
        inner: file,
        left: Rc::clone(&budget),
    };
    let mut buffered = BufReader::new(counted);
    let head = buffered
        .fill_buf()
        .with_context(|| format!("failed to read {}", secret.source.display()))?;
    if let Some(why) = not_age(head) {
        return Err(fail(why));
    }
    let input = age::armor::ArmoredReader::new(buffered);
    let decryptor = match age::Decryptor::new_buffered(input) {
        Ok(d) => d,
        Err(_) if budget.get() == 0 => {
            return Err(fail(&format!(
                "its age header is larger than {}",
                human_bytes(MAX_AGE_HEADER_BYTES)
            )))
        }
        Err(err) => return Err(fail(decrypt_error_reason(&err))),
    };
    budget.set(payload_cap);
    if decryptor.is_scrypt() {
        return Err(fail(
            "it is encrypted with a passphrase, not to this host's key",
        ));
    }
    let mut plain = decryptor
        .decrypt(ids.as_age())
        .map_err(|err| fail(decrypt_error_reason(&err)))?;

    let out = dir.join(&secret.out);
    if let Some(parent) = out.parent() {
        create_private_dirs(dir, parent)?;
    }
    let mut dest = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(open_flags())
        .open(&out)
        .with_context(|| format!("failed to create {}", out.display()))?;
    dest.set_permissions(Permissions::from_mode(0o600))
        .with_context(|| format!("failed to set mode 0600 on {}", out.display()))?;

    let mut buf = Zeroizing::new(vec![0u8; COPY_BUFFER_BYTES]);
    let mut written = 0u64;
    loop {
        let n = match plain.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) if budget.get() == 0 => return Err(too_big()),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(fail("it is truncated"))
            }
            Err(_) => return Err(fail("it is corrupt (its payload failed authentication)")),
        };
        written += n as u64;
        if written > limits.max_file_bytes {
            return Err(too_big());
        }
        if used + written > limits.max_total_bytes {
            return Err(over_total());
        }
        dest.write_all(&buf[..n])
            .with_context(|| format!("failed to write {}", out.display()))?;
    }
    Ok(written)
}

/// What a decryption error means for the operator. age's own texts are not used:
/// they are localised and some carry more than a reason.
fn decrypt_error_reason(err: &age::DecryptError) -> &'static str {
    use age::DecryptError as E;
    match err {
        E::NoMatchingKeys => "it is not encrypted to this host's key",
        E::UnknownFormat => "it is not in a known age format version",
        E::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => "it is truncated",
        E::Io(_) => "it could not be read as an age file",
        E::InvalidHeader => "it is not an age file or its header is corrupt",
        E::InvalidMac => "its header is corrupt (MAC mismatch)",
        E::DecryptionFailed => "it is corrupt (the key for this host did not decrypt)",
        E::ExcessiveWork { .. } => "it is encrypted with a passphrase, not to this host's key",
        E::KeyDecryptionFailed => "the host key could not be unlocked",
        #[allow(unreachable_patterns)]
        _ => "age could not decrypt it",
    }
}

/// Why a file starting with `head` cannot be an age file (binary or armored), if so.
fn not_age(head: &[u8]) -> Option<&'static str> {
    let fits = |magic: &[u8]| {
        let n = head.len().min(magic.len());
        head[..n] == magic[..n]
    };
    if head.is_empty() {
        Some("it is empty")
    } else if !fits(AGE_MAGIC) && !fits(AGE_ARMOR_BEGIN) {
        Some("it is not an age file")
    } else {
        None // a short prefix of either is reported as truncated by the parser
    }
}

/// Largest encrypted payload (after the header) of a plaintext of `max_plain` bytes,
/// allowing for ASCII armor (base64 with line breaks grows it by less than a half).
fn encrypted_cap(max_plain: u64) -> u64 {
    let chunks = max_plain / AGE_CHUNK_BYTES + 1;
    let binary = AGE_NONCE_BYTES + max_plain + chunks * AGE_TAG_BYTES;
    binary.saturating_add(binary / 2).saturating_add(1 << 10)
}

/// A reader that stops (end of file) once its shared budget of bytes is spent.
struct Budgeted<R> {
    inner: R,
    left: Rc<Cell<u64>>,
}

impl<R: Read> Read for Budgeted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.left.get();
        if left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left.set(left - n as u64);
        Ok(n)
    }
}

/// Never write through a symlink; never leak the descriptor into the entrypoint.
fn open_flags() -> i32 {
    nix::fcntl::OFlag::O_NOFOLLOW.bits() | nix::fcntl::OFlag::O_CLOEXEC.bits()
}

/// Create the directories from `base` down to `dir`, each mode 0700.
fn create_private_dirs(base: &Path, dir: &Path) -> Result<(), SecretsError> {
    let rel = dir.strip_prefix(base).unwrap_or(Path::new(""));
    let mut path = base.to_path_buf();
    for part in rel.components() {
        path.push(part);
        match DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => set_mode(&path, 0o700)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("failed to create {}", path.display()))
                    .into())
            }
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<(), SecretsError> {
    std::fs::set_permissions(path, Permissions::from_mode(mode))
        .with_context(|| format!("failed to set mode {mode:o} on {}", path.display()))?;
    Ok(())
}

/// Collect the `*.age` files of the followed paths, deduplicated and sorted.
fn walk(tree: &Path, paths: &[String], max_files: usize) -> Result<Vec<Found>, SecretsError> {
    let tree_real = tree
        .canonicalize()
        .with_context(|| format!("failed to resolve {}", tree.display()))?;
    let mut starts = Vec::new();
    for p in paths {
        starts.push(followed_path(p)?);
    }
    if starts.is_empty() {
        starts.push(PathBuf::new());
    }

    let mut found: BTreeMap<PathBuf, Found> = BTreeMap::new();
    for start in starts {
        let logical = tree.join(&start);
        if std::fs::symlink_metadata(&logical).is_err() {
            continue; // nothing of this path in this commit
        }
        let real = logical.canonicalize().map_err(|_| {
            SecretsError::Commit(format!(
                "followed path {} is a broken symlink",
                shown(&start)
            ))
        })?;
        if !real.starts_with(&tree_real) {
            return Err(SecretsError::Commit(format!(
                "followed path {} leads out of the tree through a symlink",
                shown(&start)
            )));
        }
        let meta = std::fs::metadata(&real)
            .with_context(|| format!("failed to inspect {}", real.display()))?;
        if !meta.is_dir() {
            if is_age_name(start.file_name()) {
                add(&mut found, &tree_real, start, &logical, max_files)?;
            }
            continue;
        }
        let mut stack = vec![(real, start)];
        while let Some((dir, rel_dir)) = stack.pop() {
            let entries = std::fs::read_dir(&dir)
                .with_context(|| format!("failed to list {}", dir.display()))?;
            for entry in entries {
                let entry = entry.with_context(|| format!("failed to list {}", dir.display()))?;
                let name = entry.file_name();
                if name == ".git" {
                    continue;
                }
                let kind = entry
                    .file_type()
                    .with_context(|| format!("failed to inspect {}", entry.path().display()))?;
                let rel = rel_dir.join(&name);
                if kind.is_dir() {
                    stack.push((entry.path(), rel));
                } else if is_age_name(Some(&name)) {
                    add(&mut found, &tree_real, rel, &entry.path(), max_files)?;
                }
                // Symlinked directories are not entered: no loops, no way out.
            }
        }
    }

    let found: Vec<Found> = found.into_values().collect();
    check_collisions(&found)?;
    Ok(found)
}

/// A `paths` entry: relative, without `..`; `.` or empty means the whole tree.
fn followed_path(p: &str) -> Result<PathBuf, SecretsError> {
    let mut out = PathBuf::new();
    for part in Path::new(p).components() {
        match part {
            Component::Normal(name) => out.push(name),
            Component::CurDir => {}
            _ => {
                return Err(SecretsError::Host(anyhow::anyhow!(
                    "invalid followed path {p:?}: it must be relative to the repository, without .."
                )))
            }
        }
    }
    Ok(out)
}

fn add(
    found: &mut BTreeMap<PathBuf, Found>,
    tree_real: &Path,
    rel: PathBuf,
    path: &Path,
    max_files: usize,
) -> Result<(), SecretsError> {
    if found.contains_key(&rel) {
        return Ok(());
    }
    let meta = std::fs::symlink_metadata(path)
        .with_context(|| format!("failed to inspect {}", path.display()))?;
    let source = if meta.file_type().is_symlink() {
        let real = path.canonicalize().map_err(|_| {
            SecretsError::Commit(format!("secret {} is a broken symlink", shown(&rel)))
        })?;
        if !real.starts_with(tree_real) {
            return Err(SecretsError::Commit(format!(
                "secret {} is a symlink that leads out of the tree",
                shown(&rel)
            )));
        }
        real
    } else {
        path.to_path_buf()
    };
    if !std::fs::metadata(&source)
        .map(|m| m.is_file())
        .unwrap_or(false)
    {
        return Err(SecretsError::Commit(format!(
            "secret {} is not a regular file",
            shown(&rel)
        )));
    }
    if found.len() >= max_files {
        return Err(SecretsError::Commit(format!(
            "more than {max_files} secret files in the followed paths"
        )));
    }
    let mut out = rel.clone();
    let name = rel.file_name().map(OsStr::as_bytes).unwrap_or_default();
    out.set_file_name(OsStr::from_bytes(&name[..name.len() - AGE_SUFFIX.len()]));
    found.insert(rel.clone(), Found { rel, out, source });
    Ok(())
}

/// `*.age` with something before the suffix.
fn is_age_name(name: Option<&OsStr>) -> bool {
    name.map(|n| n.as_bytes())
        .is_some_and(|n| n.len() > AGE_SUFFIX.len() && n.ends_with(AGE_SUFFIX))
}

/// `a.age` and `a/b.age` cannot both be decrypted: `a` would be a file and a directory.
fn check_collisions(found: &[Found]) -> Result<(), SecretsError> {
    let outs: BTreeMap<&Path, &Path> = found
        .iter()
        .map(|f| (f.out.as_path(), f.rel.as_path()))
        .collect();
    let mut dirs = BTreeSet::new();
    for f in found {
        for ancestor in f.out.ancestors().skip(1) {
            if ancestor.as_os_str().is_empty() || !dirs.insert(ancestor) {
                continue;
            }
            if let Some(file) = outs.get(ancestor) {
                return Err(SecretsError::Commit(format!(
                    "secrets {} and {} collide: {} would be both a file and a directory",
                    shown(file),
                    shown(&f.rel),
                    shown(ancestor)
                )));
            }
        }
    }
    Ok(())
}

/// A path from the commit for a one-line message: control characters (a file name
/// may hold a newline) are escaped.
fn shown(path: &Path) -> String {
    path.to_string_lossy()
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}
