//! [`HttpsGitServer`]: a real nginx terminating TLS in front of `fcgiwrap`
//! and `git http-backend`.

use std::fs::{self, File};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

use super::{free_port, git_env};

/// What to tell whoever runs the tests when a daemon is missing.
const INSTALL_HINT: &str = "run `apt-get install -y nginx-light fcgiwrap`";

/// How long nginx or fcgiwrap may take to start listening.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long nginx may take to shut down on SIGTERM before it is killed.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// How often to retry when the chosen port was taken in the meantime.
const START_ATTEMPTS: usize = 5;

/// The realm of the `WWW-Authenticate: Basic` challenge.
const REALM: &str = "gitops-run tests";

/// A real `git http-backend` served over HTTPS on 127.0.0.1.
///
/// Everything lives in one temporary directory: a throw-away CA and a server
/// certificate for `IP:127.0.0.1` signed by it (made with the `openssl`
/// CLI), an nginx configuration, nginx's logs, pid and temp directories, an
/// optional htpasswd file, and the Unix socket of `fcgiwrap`.
///
/// nginx (`nginx -p DIR -c DIR/nginx.conf -g 'daemon off;'`) listens on an
/// ephemeral port, terminates TLS and passes every request via FastCGI to
/// `fcgiwrap -s unix:DIR/fcgi.sock`, which runs `git http-backend` with
/// `GIT_PROJECT_ROOT` set to the project root and `GIT_HTTP_EXPORT_ALL`.
/// With basic auth, nginx checks the credentials itself (`auth_basic`) and
/// passes `REMOTE_USER` on. Dropping the server stops nginx and fcgiwrap.
pub struct HttpsGitServer {
    dir: TempDir,
    port: u16,
    nginx: Child,
    fcgiwrap: Child,
}

impl HttpsGitServer {
    /// Serves the repositories below `project_root` without authentication.
    ///
    /// # Panics
    ///
    /// Panics if nginx, fcgiwrap or openssl is not installed (with
    /// installation instructions), if the certificates cannot be made, or if
    /// a daemon exits or does not listen in time (showing its log).
    pub fn start(project_root: &Path) -> HttpsGitServer {
        Self::spawn(project_root, None)
    }

    /// Like [`start`](Self::start), but nginx demands HTTP Basic
    /// credentials `user`:`pass` (`auth_basic` with an htpasswd file written
    /// by `openssl passwd -apr1`); other requests get `401 Unauthorized`.
    /// Authenticated requests reach the backend with `REMOTE_USER` set.
    pub fn with_basic_auth(project_root: &Path, user: &str, pass: &str) -> HttpsGitServer {
        assert!(
            !user.is_empty() && !user.contains(':') && !user.contains('\n'),
            "unusable basic auth user name {user:?}"
        );
        Self::spawn(project_root, Some((user, pass)))
    }

    fn spawn(project_root: &Path, auth: Option<(&str, &str)>) -> HttpsGitServer {
        let nginx = find_program("nginx");
        let fcgiwrap = find_program("fcgiwrap");
        let openssl = find_program("openssl");
        let (Some(nginx), Some(fcgiwrap)) = (nginx, fcgiwrap) else {
            panic!("HttpsGitServer needs nginx and fcgiwrap: {INSTALL_HINT}");
        };
        let openssl = openssl.unwrap_or_else(|| {
            panic!("HttpsGitServer needs the openssl CLI: run `apt-get install -y openssl`")
        });

        let project_root = project_root.canonicalize().unwrap_or_else(|err| {
            panic!(
                "canonicalize project root {}: {err}",
                project_root.display()
            )
        });
        let dir = tempfile::Builder::new()
            .prefix("gitops-run-https-")
            .tempdir()
            .expect("create the HTTPS server's temporary directory");
        let base = dir.path().to_path_buf();
        for path in [&base, &project_root] {
            check_config_safe(path);
        }
        let backend = super::http::http_backend_path();
        check_config_safe(&backend);

        make_certificates(&openssl, &base);
        if let Some((user, pass)) = auth {
            write_htpasswd(&openssl, &base, user, pass);
        }
        for temp in ["body", "fastcgi", "proxy", "scgi", "uwsgi"] {
            fs::create_dir_all(base.join("tmp").join(temp)).expect("create nginx temp dir");
        }

        let fcgiwrap = start_fcgiwrap(&fcgiwrap, &base);
        // Never leak fcgiwrap when nginx cannot be started.
        let mut fcgiwrap = KillOnDrop(Some(fcgiwrap));

        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let config = base.join("nginx.conf");
            let text = nginx_config(&base, port, &project_root, &backend, auth.is_some());
            fs::write(&config, text).expect("write nginx.conf");
            let _ = fs::remove_file(base.join("nginx.pid"));
            let error_log = base.join("error.log");
            let _ = fs::remove_file(&error_log);
            let output = File::create(base.join("nginx.out")).expect("create nginx.out");
            let child = Command::new(&nginx)
                .arg("-p")
                .arg(&base)
                .arg("-e")
                .arg(&error_log)
                .arg("-c")
                .arg(&config)
                .args(["-g", "daemon off;"])
                .stdin(Stdio::null())
                .stdout(output.try_clone().expect("clone nginx.out handle"))
                .stderr(output)
                .spawn()
                .unwrap_or_else(|err| panic!("failed to start {}: {err}", nginx.display()));
            if let Some(child) = wait_for_nginx(child, port, &base.join("nginx.pid")) {
                return HttpsGitServer {
                    dir,
                    port,
                    nginx: child,
                    fcgiwrap: fcgiwrap.0.take().expect("fcgiwrap child"),
                };
            }
            last_log = format!(
                "{}{}",
                fs::read_to_string(base.join("nginx.out")).unwrap_or_default(),
                fs::read_to_string(&error_log).unwrap_or_default()
            );
            if !last_log.contains("Address already in use") {
                break;
            }
        }
        panic!("nginx did not start listening on 127.0.0.1; its log:\n{last_log}");
    }

    /// The URL of the repository at `repo_path` relative to the project
    /// root, e.g. `url("origin/.git")` gives
    /// `https://127.0.0.1:PORT/origin/.git`.
    pub fn url(&self, repo_path: &str) -> String {
        format!(
            "https://127.0.0.1:{}/{}",
            self.port,
            repo_path.trim_start_matches('/')
        )
    }

    /// Like [`url`](Self::url) with `user:pass@` credentials embedded
    /// (used verbatim: pass URL-safe values).
    pub fn url_with_credentials(&self, user: &str, pass: &str, repo_path: &str) -> String {
        format!(
            "https://{user}:{pass}@127.0.0.1:{}/{}",
            self.port,
            repo_path.trim_start_matches('/')
        )
    }

    /// The PEM certificate of the CA that signed the server certificate;
    /// trust it with `GIT_SSL_CAINFO`.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// nginx's access log so far, one line per request:
    /// `ADDR "METHOD URI PROTO" STATUS user="USER" auth=SCHEME`, where
    /// `USER` is the user name of any `Authorization: Basic` header (checked
    /// or not, `-` without one) and `SCHEME` the header's scheme (`-`
    /// without one). Passwords are never logged.
    pub fn access_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// nginx's error log plus fcgiwrap's and `git http-backend`'s stderr;
    /// handy in assertion messages.
    pub fn error_log(&self) -> String {
        let base = self.dir.path();
        format!(
            "--- nginx ---\n{}{}--- fcgiwrap ---\n{}",
            fs::read_to_string(base.join("nginx.out")).unwrap_or_default(),
            fs::read_to_string(base.join("error.log")).unwrap_or_default(),
            fs::read_to_string(base.join("fcgiwrap.log")).unwrap_or_default(),
        )
    }

    /// The port nginx listens on.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for HttpsGitServer {
    fn drop(&mut self) {
        stop_nginx(&mut self.nginx);
        let _ = self.fcgiwrap.kill();
        let _ = self.fcgiwrap.wait();
    }
}

/// Kills and reaps a child when dropped, unless taken out.
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Fast shutdown (SIGTERM) of the master, which stops its workers; if that
/// takes too long, SIGKILL for the master and the workers it had.
fn stop_nginx(master: &mut Child) {
    let workers = children_of(master.id());
    let pid = Pid::from_raw(i32::try_from(master.id()).expect("pid fits i32"));
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = master.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = master.kill();
    let _ = master.wait();
    for worker in workers {
        if let Ok(worker) = i32::try_from(worker) {
            let _ = kill(Pid::from_raw(worker), Signal::SIGKILL);
        }
    }
}

/// The pids of the direct children of `pid` (Linux `/proc`).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// `name` on `PATH`, else in `/usr/sbin` or `/sbin` (often missing from a
/// non-root `PATH`).
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(name))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

/// The paths are written into nginx.conf inside double quotes, where `"`,
/// `\` and `$` (variables) would change their meaning.
fn check_config_safe(path: &Path) {
    let text = path
        .to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 path {}", path.display()));
    assert!(
        !text.contains(['"', '\\', '$', '\n']),
        "path {text:?} cannot be written into nginx.conf"
    );
}

/// Runs `openssl ARGS` in `dir`, feeding `stdin`; panics with its stderr on
/// failure and returns its stdout.
fn openssl(openssl: &Path, dir: &Path, args: &[&str], stdin: &str) -> String {
    let mut child = Command::new(openssl)
        .current_dir(dir)
        .args(args)
        .env("OPENSSL_CONF", dir.join("openssl.cnf"))
        .env_remove("RANDFILE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("failed to start openssl {args:?}: {err}"));
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin.as_bytes())
        .expect("write openssl's stdin");
    let output = child.wait_with_output().expect("wait for openssl");
    assert!(
        output.status.success(),
        "openssl {args:?} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The OpenSSL configuration for the CA and the server certificate; used
/// instead of the system's, so its defaults cannot interfere.
const OPENSSL_CNF: &str = "\
[req]
distinguished_name = dn
prompt = no

[dn]
CN = gitops-run test

[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[v3_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
";

/// Writes `ca.key`/`ca.pem` (a self-signed CA) and `server.key`/`server.pem`
/// (for `IP:127.0.0.1`, signed by the CA) into `dir`, all P-256.
fn make_certificates(bin: &Path, dir: &Path) {
    fs::write(dir.join("openssl.cnf"), OPENSSL_CNF).expect("write openssl.cnf");
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    // A distinct subject per server, so that another server's CA is an
    // unknown issuer rather than a same-named CA with the wrong key.
    let ca_subject = format!(
        "/CN=gitops-run test CA {}",
        dir.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    );
    let mut ca = vec!["req", "-x509", "-nodes", "-config", "openssl.cnf"];
    ca.extend_from_slice(&ec);
    ca.extend_from_slice(&[
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "7",
        "-subj",
        &ca_subject,
        "-extensions",
        "v3_ca",
    ]);
    openssl(bin, dir, &ca, "");

    let mut csr = vec!["req", "-new", "-nodes", "-config", "openssl.cnf"];
    csr.extend_from_slice(&ec);
    csr.extend_from_slice(&[
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(bin, dir, &csr, "");

    let serial = format!(
        "0x{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(2)
            | 1
    );
    openssl(
        bin,
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            &serial,
            "-days",
            "7",
            "-extfile",
            "openssl.cnf",
            "-extensions",
            "v3_server",
            "-out",
            "server.pem",
        ],
        "",
    );
    for key in ["ca.key", "server.key"] {
        fs::set_permissions(dir.join(key), fs::Permissions::from_mode(0o600))
            .unwrap_or_else(|err| panic!("chmod 0600 {key}: {err}"));
    }
}

/// Writes `htpasswd` with one `user:$apr1$...` line. The password goes to
/// openssl on stdin, not on its command line.
fn write_htpasswd(bin: &Path, dir: &Path, user: &str, pass: &str) {
    let hash = openssl(
        bin,
        dir,
        &["passwd", "-apr1", "-stdin"],
        &format!("{pass}\n"),
    );
    let hash = hash.trim();
    assert!(hash.starts_with("$apr1$"), "unexpected hash {hash:?}");
    fs::write(dir.join("htpasswd"), format!("{user}:{hash}\n")).expect("write htpasswd");
}

/// Starts `fcgiwrap -s unix:DIR/fcgi.sock` and waits until the socket
/// accepts connections.
fn start_fcgiwrap(bin: &Path, base: &Path) -> Child {
    let socket = base.join("fcgi.sock");
    let log_path = base.join("fcgiwrap.log");
    let log = File::create(&log_path).expect("create fcgiwrap.log");
    let mut cmd = Command::new(bin);
    // fcgiwrap passes its environment on to the CGI programs; keep git away
    // from the user's and the system's configuration there too.
    git_env(&mut cmd);
    let mut child = cmd
        .arg("-s")
        .arg(format!("unix:{}", socket.display()))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone fcgiwrap.log handle"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|err| panic!("failed to start {}: {err}", bin.display()));
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "fcgiwrap exited ({status}) before listening; its log:\n{}",
                fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        if UnixStream::connect(&socket).is_ok() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "fcgiwrap did not listen on {} in time; its log:\n{}",
                socket.display(),
                fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
    // nginx workers may run as another user than fcgiwrap.
    let _ = fs::set_permissions(&socket, fs::Permissions::from_mode(0o777));
    child
}

/// The nginx configuration for a server whose files live in `base`.
fn nginx_config(
    base: &Path,
    port: u16,
    project_root: &Path,
    backend: &Path,
    basic_auth: bool,
) -> String {
    let base = base.display();
    let root = project_root.display();
    let backend = backend.display();
    // As root, nginx would run its workers as `nobody`, which could not
    // reach the temporary directory; keep them as the current user.
    let user = if nix::unistd::geteuid().is_root() {
        let group = nix::unistd::Group::from_gid(nix::unistd::getegid())
            .ok()
            .flatten()
            .map_or_else(|| "root".to_owned(), |g| g.name);
        let name = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map_or_else(|| "root".to_owned(), |u| u.name);
        format!("user {name} {group};\n")
    } else {
        String::new()
    };
    let auth = if basic_auth {
        [
            format!("auth_basic \"{REALM}\";"),
            format!("auth_basic_user_file \"{base}/htpasswd\";"),
            "fastcgi_param REMOTE_USER $remote_user;".to_owned(),
            "fastcgi_param AUTH_TYPE Basic;".to_owned(),
        ]
        .map(|line| format!("        {line}\n"))
        .concat()
    } else {
        String::new()
    };
    format!(
        r#"{user}worker_processes 1;
pid "{base}/nginx.pid";
error_log "{base}/error.log" info;

events {{
    worker_connections 64;
}}

http {{
    map $http_authorization $auth_scheme {{
        default "-";
        "~^(?<gitops_auth_scheme>[A-Za-z]+) " $gitops_auth_scheme;
    }}
    log_format gitops '$remote_addr "$request" $status user="$remote_user" auth=$auth_scheme';
    access_log "{base}/access.log" gitops;

    client_body_temp_path "{base}/tmp/body";
    fastcgi_temp_path "{base}/tmp/fastcgi";
    proxy_temp_path "{base}/tmp/proxy";
    scgi_temp_path "{base}/tmp/scgi";
    uwsgi_temp_path "{base}/tmp/uwsgi";

    server {{
        listen 127.0.0.1:{port} ssl;
        server_name 127.0.0.1;
        ssl_certificate "{base}/server.pem";
        ssl_certificate_key "{base}/server.key";
        client_max_body_size 0;

{auth}
        location / {{
            fastcgi_pass "unix:{base}/fcgi.sock";
            fastcgi_read_timeout 60s;
            fastcgi_param SCRIPT_FILENAME "{backend}";
            fastcgi_param GIT_PROJECT_ROOT "{root}";
            fastcgi_param GIT_HTTP_EXPORT_ALL 1;
            fastcgi_param PATH_INFO $uri;
            fastcgi_param QUERY_STRING $query_string;
            fastcgi_param REQUEST_METHOD $request_method;
            fastcgi_param REQUEST_URI $request_uri;
            fastcgi_param CONTENT_TYPE $content_type;
            fastcgi_param CONTENT_LENGTH $content_length;
            fastcgi_param SCRIPT_NAME "";
            fastcgi_param GATEWAY_INTERFACE CGI/1.1;
            fastcgi_param SERVER_SOFTWARE nginx;
            fastcgi_param SERVER_PROTOCOL $server_protocol;
            fastcgi_param SERVER_NAME $server_name;
            fastcgi_param SERVER_ADDR $server_addr;
            fastcgi_param SERVER_PORT $server_port;
            fastcgi_param REMOTE_ADDR $remote_addr;
            fastcgi_param REMOTE_PORT $remote_port;
            fastcgi_param HTTPS on;
        }}
    }}
}}
"#
    )
}

/// Polls until nginx has written its pid file (it does so after binding)
/// and accepts a TCP connection on `port`; gives the child back on success
/// and `None` (after reaping it) if it exits or times out.
fn wait_for_nginx(mut child: Child, port: u16, pid_file: &Path) -> Option<Child> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        if pid_file.is_file()
            && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        {
            // A bind failure makes nginx exit right away; make sure the
            // listener is really ours.
            thread::sleep(Duration::from_millis(50));
            if let Ok(None) = child.try_wait() {
                return Some(child);
            }
            return None;
        }
        if Instant::now() >= deadline {
            stop_nginx(&mut child);
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}
