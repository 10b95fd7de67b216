//! Test helpers for signatures made by the real tools: a sandbox with its own
//! HOME, GNUPGHOME and git repository, SSH and OpenPGP keys, signed commits,
//! and raw commit objects. Nothing here reads the developer's configuration.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tempfile::TempDir;

/// Committer date used unless a test gives one (git's internal format).
pub const DEFAULT_DATE: &str = "1704164645 +0000"; // 2024-01-02T03:04:05Z

/// A throwaway world for git, ssh-keygen and gpg.
pub struct Sandbox {
    dir: TempDir,
    pub home: PathBuf,
    pub gnupghome: PathBuf,
    pub repo: PathBuf,
}

/// An SSH key pair made by ssh-keygen.
#[derive(Debug, Clone)]
pub struct SshKeyPair {
    pub private: PathBuf,
    /// The `.pub` line: `type base64 comment`.
    pub public: String,
}

impl SshKeyPair {
    /// `type base64`, without the comment.
    pub fn public_key(&self) -> String {
        let mut words = self.public.split_whitespace();
        format!(
            "{} {}",
            words.next().unwrap_or_default(),
            words.next().unwrap_or_default()
        )
    }

    /// `SHA256:...` as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self, sandbox: &Sandbox) -> String {
        let out = sandbox.run(
            sandbox
                .command("ssh-keygen")
                .arg("-l")
                .arg("-E")
                .arg("sha256")
                .arg("-f")
                .arg(self.private.with_extension("pub")),
        );
        out.split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string()
    }
}

impl Sandbox {
    /// A new sandbox with an empty repository (`main`, fixed identity).
    pub fn new() -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("verify-")
            .tempdir()
            .expect("create a temp dir");
        let home = dir.path().join("home");
        let gnupghome = dir.path().join("gnupg");
        let repo = dir.path().join("repo");
        for d in [&home, &gnupghome, &repo] {
            std::fs::create_dir(d).expect("create sandbox dir");
        }
        std::fs::set_permissions(&gnupghome, std::fs::Permissions::from_mode(0o700))
            .expect("chmod GNUPGHOME");
        let sandbox = Sandbox {
            dir,
            home,
            gnupghome,
            repo,
        };
        sandbox.git(&["init", "-q", "-b", "main"]);
        sandbox
    }

    /// The sandbox's directory, for files a test writes.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A command with nothing from the caller's environment but PATH.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("GNUPGHOME", &self.gnupghome)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("LC_ALL", "C")
            .env("TZ", "UTC")
            .env("GIT_AUTHOR_NAME", "A U Thor")
            .env("GIT_AUTHOR_EMAIL", "author@example.test")
            .env("GIT_COMMITTER_NAME", "C O Mitter")
            .env("GIT_COMMITTER_EMAIL", "committer@example.test")
            .env("GIT_AUTHOR_DATE", DEFAULT_DATE)
            .env("GIT_COMMITTER_DATE", DEFAULT_DATE)
            .current_dir(&self.repo)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `cmd`, panics with its stderr if it fails, returns its stdout.
    pub fn run(&self, cmd: &mut Command) -> String {
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        assert!(
            out.status.success(),
            "{cmd:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `cmd` with `input` on stdin; returns stdout as bytes.
    pub fn run_with_input(&self, cmd: &mut Command, input: &[u8]) -> Vec<u8> {
        use std::io::Write;
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("write stdin");
        let out = child.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{cmd:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// `git ARGS` in the repository.
    pub fn git(&self, args: &[&str]) -> String {
        self.run(self.command("git").args(args))
    }

    /// A new SSH key, `kind` as for `ssh-keygen -t` (`ed25519`, `rsa`,
    /// `ecdsa`), with extra arguments such as `-b 384`.
    pub fn ssh_key(&self, name: &str, kind: &str, extra: &[&str]) -> SshKeyPair {
        let private = self.path().join(format!("ssh-{name}"));
        self.run(
            self.command("ssh-keygen")
                .args(["-q", "-t", kind, "-N", "", "-C"])
                .arg(format!("{name}@example.test"))
                .args(extra)
                .arg("-f")
                .arg(&private),
        );
        let public = std::fs::read_to_string(private.with_extension("pub"))
            .expect("read public key")
            .trim()
            .to_string();
        SshKeyPair { private, public }
    }

    /// Writes an allowed-signers file and returns its path.
    pub fn allowed_signers(&self, text: &str) -> PathBuf {
        let path = self.path().join("allowed_signers");
        std::fs::write(&path, text).expect("write allowed_signers");
        path
    }

    /// An empty commit signed with SSH key `key` by `git commit -S`, committed
    /// at `date` (git's formats); returns its id.
    pub fn commit_ssh(&self, key: &SshKeyPair, message: &str, date: &str) -> String {
        self.run(
            self.command("git")
                .env("GIT_COMMITTER_DATE", date)
                .args(["-c", "gpg.format=ssh", "-c"])
                .arg(format!("user.signingkey={}", key.private.display()))
                .args(["commit", "-q", "-S", "--allow-empty", "-m", message]),
        );
        self.head()
    }

    /// An empty unsigned commit; returns its id.
    pub fn commit_unsigned(&self, message: &str) -> String {
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.head()
    }

    /// An empty commit signed by `git commit -S` with OpenPGP key `fingerprint`
    /// through `gpg_program` (`gpg`, or a wrapper from [`Sandbox::gpg_wrapper`]).
    pub fn commit_gpg(&self, fingerprint: &str, message: &str, gpg_program: &str) -> String {
        self.run(
            self.command("git")
                .args(["-c", "gpg.format=openpgp", "-c"])
                .arg(format!("gpg.program={gpg_program}"))
                .arg("-c")
                .arg(format!("user.signingkey={fingerprint}"))
                .args(["commit", "-q", "-S", "--allow-empty", "-m", message]),
        );
        self.head()
    }

    pub fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"]).trim().to_string()
    }

    /// The commit object as `git cat-file commit` prints it.
    pub fn raw(&self, id: &str) -> Vec<u8> {
        let out = self
            .command("git")
            .args(["cat-file", "commit", id])
            .output()
            .expect("git cat-file");
        assert!(out.status.success(), "git cat-file commit {id} failed");
        out.stdout
    }

    /// Stores `raw` as a commit object (`git hash-object -t commit -w`) and
    /// returns its id.
    pub fn write_commit(&self, raw: &[u8]) -> String {
        let out = self.run_with_input(
            self.command("git")
                .args(["hash-object", "-t", "commit", "-w", "--stdin"]),
            raw,
        );
        String::from_utf8_lossy(&out).trim().to_string()
    }

    /// `ssh-keygen -Y sign -n NAMESPACE` over `data`; returns the armored signature.
    pub fn ssh_sign(&self, key: &SshKeyPair, namespace: &str, data: &[u8]) -> Vec<u8> {
        self.run_with_input(
            self.command("ssh-keygen")
                .args(["-q", "-Y", "sign", "-n", namespace, "-f"])
                .arg(&key.private),
            data,
        )
    }

    /// Whether `ssh-keygen -Y verify` accepts `signature` over `data` for
    /// principal `principal` in `allowed_signers`, namespace `git`.
    pub fn ssh_keygen_accepts(
        &self,
        allowed_signers: &Path,
        principal: &str,
        signature: &[u8],
        data: &[u8],
    ) -> bool {
        let sig_path = self.path().join("check.sig");
        std::fs::write(&sig_path, signature).expect("write signature");
        let mut cmd = self.command("ssh-keygen");
        cmd.args(["-Y", "verify", "-n", "git", "-I", principal, "-f"])
            .arg(allowed_signers)
            .arg("-s")
            .arg(&sig_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("spawn ssh-keygen");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(data).expect("write data");
        }
        child.wait().expect("wait ssh-keygen").success()
    }

    /// `gpg ARGS` in batch mode without passphrases.
    pub fn gpg(&self, args: &[&str]) -> String {
        self.run(
            self.command("gpg")
                .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
                .args(args),
        )
    }

    /// Makes an OpenPGP key with `gpg --quick-gen-key UID ALGO USAGE EXPIRE`
    /// and returns its fingerprint; `faked_time` (seconds since the epoch)
    /// makes gpg believe it is that time.
    pub fn gpg_key(
        &self,
        uid: &str,
        algo: &str,
        usage: &str,
        expire: &str,
        faked_time: Option<i64>,
    ) -> String {
        let mut args: Vec<String> = Vec::new();
        if let Some(t) = faked_time {
            args.extend(["--faked-system-time".into(), format!("{t}!")]);
        }
        args.extend([
            "--quick-gen-key".into(),
            uid.into(),
            algo.into(),
            usage.into(),
            expire.into(),
        ]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.gpg(&refs);
        self.gpg_fingerprint(uid)
    }

    /// The primary key fingerprint of the key with user id `uid`.
    pub fn gpg_fingerprint(&self, uid: &str) -> String {
        let listing = self.gpg(&["--with-colons", "--list-keys", uid]);
        listing
            .lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .expect("a fingerprint in gpg --with-colons output")
            .to_string()
    }

    /// `gpg --export [--armor] FPR...`.
    pub fn gpg_export(&self, fingerprints: &[&str], armor: bool) -> Vec<u8> {
        let mut cmd = self.command("gpg");
        cmd.arg("--batch");
        if armor {
            cmd.arg("--armor");
        }
        cmd.arg("--export").args(fingerprints);
        let out = cmd.output().expect("gpg --export");
        assert!(
            out.status.success() && !out.stdout.is_empty(),
            "gpg --export failed"
        );
        out.stdout
    }

    /// The revocation certificate gpg made when it generated key `fingerprint`
    /// (with the `:` that guards it against accidental import removed).
    pub fn gpg_revocation_certificate(&self, fingerprint: &str) -> Vec<u8> {
        let path = self
            .gnupghome
            .join("openpgp-revocs.d")
            .join(format!("{fingerprint}.rev"));
        let text = std::fs::read_to_string(&path).expect("read the revocation certificate");
        text.replacen(
            ":-----BEGIN PGP PUBLIC KEY BLOCK-----",
            "-----BEGIN PGP PUBLIC KEY BLOCK-----",
            1,
        )
        .into_bytes()
    }

    /// Imports `data` into the keyring (`gpg --import`).
    pub fn gpg_import(&self, data: &[u8]) {
        self.run_with_input(self.command("gpg").args(["--batch", "--import"]), data);
    }

    /// A script that runs gpg with `args` before the ones git gives it, for
    /// `gpg.program`.
    pub fn gpg_wrapper(&self, name: &str, args: &[String]) -> String {
        let path = self.path().join(name);
        let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
        std::fs::write(
            &path,
            format!("#!/bin/sh\nexec gpg {} \"$@\"\n", quoted.join(" ")),
        )
        .expect("write gpg wrapper");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("chmod gpg wrapper");
        path.display().to_string()
    }

    /// A directory holding the given key files; returns its path.
    pub fn keys_dir(&self, name: &str, files: &[(&str, &[u8])]) -> PathBuf {
        let dir = self.path().join(name);
        std::fs::create_dir_all(&dir).expect("create keys dir");
        for (file, bytes) in files {
            std::fs::write(dir.join(file), bytes).expect("write key file");
        }
        dir
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Stop the gpg-agent this sandbox may have started; ignore failures.
        let _ = self
            .command("gpgconf")
            .args(["--kill", "gpg-agent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Inserts a `gpgsig` header carrying `armored` at the end of the headers of
/// the unsigned commit object `raw`, where git puts it.
pub fn splice_signature(raw: &[u8], armored: &[u8]) -> Vec<u8> {
    let end = raw
        .windows(2)
        .position(|w| w == b"\n\n")
        .map_or(raw.len(), |i| i + 1);
    let mut out = raw[..end].to_vec();
    out.extend_from_slice(b"gpgsig");
    let text = armored.strip_suffix(b"\n").unwrap_or(armored);
    for line in text.split(|&b| b == b'\n') {
        out.push(b' ');
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.extend_from_slice(&raw[end..]);
    out
}

/// Removes the `gpgsig` header (and its continuation lines) from `raw`.
pub fn strip_signature(raw: &[u8]) -> Vec<u8> {
    super::commit::split(raw).payload
}
