//! [`SshGitServer`]: a private OpenSSH `sshd` that only runs `git-shell`.

use std::fs::{self, File};
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::free_port;

/// Where Debian's `openssh-server` installs the daemon. sshd must be
/// started by absolute path (it re-executes itself).
const SSHD: &str = "/usr/sbin/sshd";

/// Privilege separation directory that sshd insists on.
const PRIVSEP_DIR: &str = "/run/sshd";

/// How long sshd may take to start listening.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// How often to retry when the chosen port was taken in the meantime.
const START_ATTEMPTS: usize = 5;

/// A real OpenSSH server on 127.0.0.1 for git-over-ssh tests.
///
/// Runs `sshd -D -e -f <config>` from a temporary directory holding a fresh
/// ed25519 host key, a fresh ed25519 client (deploy) key and an
/// `authorized_keys` file that restricts that key to
/// `git-shell -c "$SSH_ORIGINAL_COMMAND"`. The login user is the current
/// user. Dropping the server kills sshd.
pub struct SshGitServer {
    dir: TempDir,
    port: u16,
    user: String,
    child: Child,
}

impl SshGitServer {
    /// Generates keys and configuration and starts sshd on a free port,
    /// waiting (at most 10 s) until it accepts connections.
    ///
    /// # Panics
    ///
    /// Panics if `/usr/sbin/sshd` is missing (with installation
    /// instructions), if key generation fails, or if sshd exits or does not
    /// listen in time (showing sshd's log).
    pub fn start() -> SshGitServer {
        assert!(
            Path::new(SSHD).is_file(),
            "openssh-server is not installed: run `apt-get install -y openssh-server` \
             (.ci/run does this)"
        );
        ensure_privsep_dir();

        let dir = tempfile::Builder::new()
            .prefix("gitops-run-sshd-")
            .tempdir()
            .expect("create sshd's temporary directory");
        let base = dir.path();
        keygen(&base.join("host_ed25519"), "gitops-run-test-host");
        keygen(&base.join("client_ed25519"), "gitops-run-test-client");
        keygen(
            &base.join("wrong_host_ed25519"),
            "gitops-run-test-wrong-host",
        );
        let client_key = base.join("client_ed25519");
        fs::set_permissions(&client_key, fs::Permissions::from_mode(0o600))
            .expect("chmod 0600 the client key");

        let git_shell = git_shell_path();
        let client_public = read_public_key(&base.join("client_ed25519.pub"));
        fs::write(
            base.join("authorized_keys"),
            format!(
                "restrict,command=\"env GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null \
                 {git_shell} -c \\\"$SSH_ORIGINAL_COMMAND\\\"\" {client_public}\n"
            ),
        )
        .expect("write authorized_keys");

        let user = current_user();
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let config = base.join("sshd_config");
            fs::write(&config, sshd_config(base, port)).expect("write sshd_config");
            let log_path = base.join("sshd.log");
            let log = File::create(&log_path).expect("create sshd.log");
            let child = Command::new(SSHD)
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone sshd.log handle"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|err| panic!("failed to start {SSHD}: {err}"));
            if let Some(child) = wait_for_listener(child, port) {
                let server = SshGitServer {
                    dir,
                    port,
                    user,
                    child,
                };
                server.write_known_hosts();
                return server;
            }
            last_log = fs::read_to_string(&log_path).unwrap_or_default();
            let port_taken = last_log.contains("Address already in use")
                || last_log.contains("Cannot bind any address");
            if !port_taken {
                break;
            }
        }
        panic!("sshd did not start listening on 127.0.0.1; its log:\n{last_log}");
    }

    /// The `ssh://` URL of the repository at the absolute path `repo`, e.g.
    /// `ssh://root@127.0.0.1:PORT/tmp/.../origin/.git`.
    pub fn url(&self, repo: &Path) -> String {
        assert!(
            repo.is_absolute(),
            "SshGitServer::url needs an absolute path, got {}",
            repo.display()
        );
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            repo.display()
        )
    }

    /// The client's private key (mode 0600), accepted by the server.
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client_ed25519")
    }

    /// A known-hosts file holding the server's real host key for
    /// `[127.0.0.1]:PORT`.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// A known-hosts file for the same `[127.0.0.1]:PORT` pattern but with a
    /// different, freshly generated key, so host key verification fails.
    pub fn wrong_known_hosts(&self) -> PathBuf {
        self.dir.path().join("wrong_known_hosts")
    }

    /// The port sshd listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The user that logs in (the current user).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// sshd's log so far (`-e` sends it to a file here); handy in assertion
    /// messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    fn write_known_hosts(&self) {
        let base = self.dir.path();
        for (file, key) in [
            ("known_hosts", "host_ed25519.pub"),
            ("wrong_known_hosts", "wrong_host_ed25519.pub"),
        ] {
            let public = read_public_key(&base.join(key));
            fs::write(
                base.join(file),
                format!("[127.0.0.1]:{} {public}\n", self.port),
            )
            .unwrap_or_else(|err| panic!("write {file}: {err}"));
        }
    }
}

impl Drop for SshGitServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sshd configuration for a server whose files live in `base`.
fn sshd_config(base: &Path, port: u16) -> String {
    let base = base.display();
    format!(
        "ListenAddress 127.0.0.1:{port}\n\
         HostKey {base}/host_ed25519\n\
         AuthorizedKeysFile {base}/authorized_keys\n\
         PidFile {base}/sshd.pid\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         PubkeyAuthentication yes\n\
         PermitRootLogin prohibit-password\n\
         StrictModes no\n\
         UsePAM no\n\
         UseDNS no\n\
         PrintMotd no\n\
         PermitUserEnvironment no\n\
         AcceptEnv GIT_PROTOCOL\n\
         LogLevel VERBOSE\n"
    )
}

/// Polls until sshd accepts a TCP connection on `port`; gives the child
/// back on success and `None` (after reaping it) if it exits or times out.
fn wait_for_listener(mut child: Child, port: u16) -> Option<Child> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Some(child);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// sshd refuses to start without its privilege separation directory, which
/// is normally created by the init system.
fn ensure_privsep_dir() {
    let dir = Path::new(PRIVSEP_DIR);
    if dir.is_dir() {
        return;
    }
    match fs::create_dir_all(dir) {
        Ok(()) => {
            let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o755));
        }
        // Another test thread may have created it at the same moment.
        Err(err) if err.kind() == ErrorKind::AlreadyExists => {}
        Err(err) => panic!("create {PRIVSEP_DIR} for sshd: {err}"),
    }
}

/// Generates an ed25519 key pair at `path` and `path.pub` without a
/// passphrase, with the real `ssh-keygen`.
pub fn keygen(path: &Path, comment: &str) {
    let output = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("failed to run ssh-keygen: {err}"));
    assert!(
        output.status.success(),
        "ssh-keygen for {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `<type> <base64>` of an OpenSSH public key file, without its comment.
fn read_public_key(path: &Path) -> String {
    let text =
        fs::read_to_string(path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
    let mut fields = text.split_whitespace();
    match (fields.next(), fields.next()) {
        (Some(kind), Some(key)) => format!("{kind} {key}"),
        _ => panic!("malformed public key in {}", path.display()),
    }
}

/// `git-shell` by absolute path when git's exec path has it, so that the
/// forced command does not depend on the login session's `PATH`.
fn git_shell_path() -> String {
    let output = Command::new("git")
        .arg("--exec-path")
        .output()
        .expect("run git --exec-path");
    let exec_path = String::from_utf8_lossy(&output.stdout);
    let candidate = Path::new(exec_path.trim()).join("git-shell");
    let plain = candidate.to_str().is_some_and(|s| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b))
    });
    if output.status.success() && candidate.is_file() && plain {
        candidate.to_string_lossy().into_owned()
    } else {
        "git-shell".to_owned()
    }
}

/// The current user's login name (`id -un`).
fn current_user() -> String {
    let output = Command::new("id").arg("-un").output().expect("run id -un");
    assert!(output.status.success(), "id -un failed");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}
