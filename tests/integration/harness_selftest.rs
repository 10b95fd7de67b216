//! Self-tests for the shared harness in `common`, using only the plain
//! git and ssh command line tools (never the `gitops-run` binary).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;

use crate::common::http::{base64, parse_cgi_output, percent_decode, read_chunked};
use crate::common::{
    bin, git, git_command, run, ssh_command_for, test_home, HttpGitServer, Origin, Run,
    SshGitServer, AUTHOR_EMAIL, AUTHOR_NAME,
};
use tempfile::TempDir;

/// Runs `git args...` in `dir` with extra environment and returns how it
/// ended, for tests that expect failure.
fn git_output(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Run {
    run(git_command(dir, args).envs(envs.iter().copied()))
}

/// Deterministic pseudo-random text (`SplitMix64` over a 64-character
/// alphabet): 6 bits of entropy per byte, so it barely compresses.
fn pseudo_random_text(seed: u64, len: usize) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut state = seed;
    let mut text = String::with_capacity(len);
    while text.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        for shift in (0..60).step_by(6) {
            if text.len() == len {
                break;
            }
            text.push(char::from(ALPHABET[((z >> shift) & 0x3f) as usize]));
        }
    }
    text
}

/// Builds the same small history on `origin` and returns the commit ids.
fn sample_history(origin: &mut Origin) -> Vec<String> {
    vec![
        origin.commit(
            &[
                ("run.sh", "#!/bin/sh\necho hello\n"),
                ("config/app.conf", "key = value\n"),
            ],
            "initial",
        ),
        origin.commit(&[("config/app.conf", "key = other\n")], "change config"),
        origin.remove(&["config"], "drop config"),
        origin.commit(&[], "empty"),
    ]
}

#[test]
fn origin_commits_are_deterministic() {
    let mut first = Origin::new();
    let mut second = Origin::new();
    let first_ids = sample_history(&mut first);
    let second_ids = sample_history(&mut second);
    assert_eq!(first_ids, second_ids);
    assert_eq!(first.head(), first_ids[3]);
    assert_eq!(first_ids[0].len(), 40);

    // 2026-01-01T00:00:00Z plus one minute per commit, author and committer.
    let dates = git(first.path(), &["log", "--reverse", "--format=%at %ct"]);
    let expected: Vec<String> = (0..4)
        .map(|n| {
            let secs = 1_767_225_600 + 60 * n;
            format!("{secs} {secs}")
        })
        .collect();
    assert_eq!(dates.lines().collect::<Vec<_>>(), expected);
    let first_date = git(
        first.path(),
        &[
            "log",
            "-1",
            "--date=format-local:%Y-%m-%dT%H:%M:%SZ",
            "--format=%ad",
            &first_ids[0],
        ],
    );
    assert_eq!(first_date, "2026-01-01T00:00:00Z");
    let identity = git(
        first.path(),
        &["log", "-1", "--format=%an <%ae> / %cn <%ce>"],
    );
    assert_eq!(
        identity,
        format!("{AUTHOR_NAME} <{AUTHOR_EMAIL}> / {AUTHOR_NAME} <{AUTHOR_EMAIL}>")
    );
    assert_eq!(git(first.path(), &["branch", "--show-current"]), "main");

    let tree = git(first.path(), &["ls-tree", "-r", &first_ids[0]]);
    assert!(tree.contains("100755 blob"), "run.sh is executable: {tree}");
    assert!(tree.contains("100644 blob"), "app.conf is not: {tree}");
    assert!(tree.contains("config/app.conf"), "{tree}");
    let tree = git(first.path(), &["ls-tree", "-r", "--name-only", "HEAD"]);
    assert_eq!(tree, "run.sh");

    assert!(first.git_dir().join("HEAD").is_file());
    assert_eq!(first.url(), format!("file://{}", first.path().display()));
    assert_eq!(first.root(), first.path().parent().unwrap());
}

#[test]
fn origin_rewrites_history() {
    let mut origin = Origin::new();
    let one = origin.commit(&[("a", "1\n")], "one");
    let two = origin.commit(&[("a", "2\n")], "two");
    origin.branch("keep");
    assert_eq!(git(origin.path(), &["rev-parse", "keep"]), two);

    origin.reset_hard(&one);
    assert_eq!(origin.head(), one);
    assert_eq!(
        std::fs::read_to_string(origin.path().join("a")).unwrap(),
        "1\n"
    );

    let amended = origin.amend("one, amended");
    assert_ne!(amended, one);
    assert_eq!(git(origin.path(), &["rev-parse", "HEAD^{tree}"]), {
        git(origin.path(), &["rev-parse", &format!("{one}^{{tree}}")])
    });
    let merge_base = git_output(
        origin.path(),
        &["merge-base", "--is-ancestor", &one, "HEAD"],
        &[],
    );
    assert!(!merge_base.success(), "old tip is no longer an ancestor");

    // Deterministic too: the same operations elsewhere give the same ids.
    let mut again = Origin::new();
    again.commit(&[("a", "1\n")], "one");
    again.commit(&[("a", "2\n")], "two");
    again.reset_hard("HEAD~1");
    assert_eq!(again.amend("one, amended"), amended);
}

#[test]
fn file_url_clones() {
    let mut origin = Origin::new();
    let head = origin.commit(&[("run.sh", "#!/bin/sh\ntrue\n")], "initial");
    let work = TempDir::new().unwrap();
    git(work.path(), &["clone", "-q", &origin.url(), "clone"]);
    assert_eq!(
        git(&work.path().join("clone"), &["rev-parse", "HEAD"]),
        head
    );
}

#[test]
fn http_clone_then_fetch() {
    let mut origin = Origin::new();
    let first = origin.commit(&[("run.sh", "#!/bin/sh\necho one\n")], "one");
    let server = HttpGitServer::start(origin.root());
    let url = server.url("origin/.git");
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(url.ends_with("/origin/.git"), "{url}");

    let work = TempDir::new().unwrap();
    git(work.path(), &["clone", "-q", &url, "clone"]);
    let clone = work.path().join("clone");
    assert_eq!(git(&clone, &["rev-parse", "HEAD"]), first);
    let after_clone = server.requests();
    assert!(after_clone >= 2, "requests: {after_clone}");
    assert!(server.bytes_sent() > 0);

    // Protocol v2 fetches are POSTs carrying the client's haves.
    let second = origin.commit(&[("run.sh", "#!/bin/sh\necho two\n")], "two");
    git(&clone, &["fetch", "-q", "origin"]);
    assert_eq!(git(&clone, &["rev-parse", "origin/main"]), second);
    assert!(server.requests() > after_clone);

    // The older protocol (GET advertisement + POST negotiation) works too.
    let third = origin.commit(&[("notes.txt", "three\n")], "three");
    git(
        &clone,
        &["-c", "protocol.version=0", "fetch", "-q", "origin"],
    );
    assert_eq!(git(&clone, &["rev-parse", "origin/main"]), third);

    let missing = git_output(
        work.path(),
        &["ls-remote", &server.url("missing/.git")],
        &[],
    );
    assert!(!missing.success(), "unknown repository must fail");
}

#[test]
fn http_clone_of_large_content() {
    let mut origin = Origin::new();
    let files: Vec<(String, String)> = (0..4)
        .map(|i| {
            (
                format!("data/blob{i}.txt"),
                pseudo_random_text(i, 512 * 1024),
            )
        })
        .collect();
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(path, content)| (path.as_str(), content.as_str()))
        .collect();
    let head = origin.commit(&files, "two megabytes of noise");
    assert_eq!(pseudo_random_text(7, 100), pseudo_random_text(7, 100));
    assert_ne!(pseudo_random_text(7, 100), pseudo_random_text(8, 100));

    let server = HttpGitServer::start(origin.root());
    let work = TempDir::new().unwrap();
    git(
        work.path(),
        &["clone", "-q", &server.url("origin/.git"), "clone"],
    );
    let clone = work.path().join("clone");
    assert_eq!(git(&clone, &["rev-parse", "HEAD"]), head);
    let cloned = std::fs::read_to_string(clone.join("data/blob3.txt")).unwrap();
    assert_eq!(cloned, files[3].1);
    assert!(
        server.bytes_sent() > 1_000_000,
        "bytes sent: {}",
        server.bytes_sent()
    );
}

#[test]
fn http_basic_auth_and_chunked_push() {
    let mut origin = Origin::new();
    let head = origin.commit(&[("run.sh", "#!/bin/sh\ntrue\n")], "initial");
    let server = HttpGitServer::with_basic_auth(origin.root(), "deploy", "s3cret");
    let work = TempDir::new().unwrap();

    let denied = git_output(
        work.path(),
        &["clone", "-q", &server.url("origin/.git"), "denied"],
        &[],
    );
    let stderr = &denied.stderr;
    assert!(!denied.success(), "clone without credentials: {stderr}");
    assert!(
        stderr.contains("Username") || stderr.contains("Authentication failed"),
        "{stderr}"
    );
    let wrong = git_output(
        work.path(),
        &[
            "clone",
            "-q",
            &server.url_with_credentials("deploy", "wrong", "origin/.git"),
            "wrong",
        ],
        &[],
    );
    assert!(!wrong.success(), "clone with a wrong password");
    assert!(
        wrong.stderr.contains("Authentication failed"),
        "{}",
        wrong.stderr
    );

    let url = server.url_with_credentials("deploy", "s3cret", "origin/.git");
    assert_eq!(
        url,
        server
            .url("origin/.git")
            .replace("http://", "http://deploy:s3cret@")
    );
    git(work.path(), &["clone", "-q", &url, "clone"]);
    let clone = work.path().join("clone");
    assert_eq!(git(&clone, &["rev-parse", "HEAD"]), head);

    // A push larger than http.postBuffer is sent with chunked encoding;
    // authenticated requests (REMOTE_USER) may push.
    std::fs::write(clone.join("noise.txt"), pseudo_random_text(42, 300_000)).unwrap();
    git(&clone, &["add", "noise.txt"]);
    git(&clone, &["commit", "-q", "-m", "noise"]);
    let pushed = git(&clone, &["rev-parse", "HEAD"]);
    assert_eq!(server.chunked_requests(), 0);
    git(
        &clone,
        &[
            "-c",
            "http.postBuffer=65536",
            "push",
            "-q",
            "origin",
            "HEAD:refs/heads/pushed",
        ],
    );
    assert!(server.chunked_requests() >= 1);
    assert_eq!(git(origin.path(), &["rev-parse", "pushed"]), pushed);
}

#[test]
fn http_raw_requests() {
    let mut origin = Origin::new();
    origin.commit(&[("a", "a\n")], "initial");
    let server = HttpGitServer::start(origin.root());
    let get = |path: &str| -> String {
        let mut stream = TcpStream::connect(server.addr()).unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        String::from_utf8_lossy(&response).into_owned()
    };

    let refs = get("/origin/.git/info/refs?service=git-upload-pack");
    assert!(refs.starts_with("HTTP/1.1 200 OK\r\n"), "{refs}");
    assert!(refs.contains("\r\nConnection: close\r\n"), "{refs}");
    assert!(
        refs.contains("Content-Type: application/x-git-upload-pack-advertisement"),
        "{refs}"
    );
    assert!(refs.contains("# service=git-upload-pack"), "{refs}");

    let missing = get("/nothing/here/info/refs?service=git-upload-pack");
    assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");

    let requests = server.requests();
    drop(TcpStream::connect(server.addr()).unwrap());
    assert_eq!(
        server.requests(),
        requests,
        "an empty connection is no request"
    );
}

#[test]
fn http_helpers() {
    for (input, expected) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(base64(input.as_bytes()), expected, "input {input:?}");
    }

    let wire = b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nTrailer: x\r\n\r\nnext";
    let mut reader = &wire[..];
    assert_eq!(read_chunked(&mut reader).unwrap(), b"Wikipedia");
    assert_eq!(reader, b"next");
    assert!(read_chunked(&mut &b"zz\r\n"[..]).is_err());
    assert!(read_chunked(&mut &b"4\r\nWi"[..]).is_err());

    let cgi = b"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nmissing";
    let response = parse_cgi_output(cgi).unwrap();
    assert_eq!(
        (response.status, response.reason.as_str()),
        (404, "Not Found")
    );
    assert_eq!(
        response.headers,
        [("Content-Type".to_owned(), "text/plain".to_owned())]
    );
    assert_eq!(response.body, b"missing");
    let response = parse_cgi_output(b"Content-Type: x\n\nbody").unwrap();
    assert_eq!(
        (response.status, response.body.as_slice()),
        (200, &b"body"[..])
    );
    assert!(parse_cgi_output(b"no blank line").is_none());

    assert_eq!(percent_decode("/a%20b/%zz%2"), "/a b/%zz%2");
}

#[test]
fn ssh_clone_checks_host_key() {
    let mut origin = Origin::new();
    let head = origin.commit(&[("run.sh", "#!/bin/sh\ntrue\n")], "initial");
    let server = SshGitServer::start();
    let url = server.url(&origin.git_dir());
    assert_eq!(
        url,
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            server.user(),
            server.port(),
            origin.git_dir().display()
        )
    );
    let key = server.client_key();
    let mode = std::fs::metadata(&key).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    let known_hosts = std::fs::read_to_string(server.known_hosts()).unwrap();
    let prefix = format!("[127.0.0.1]:{} ssh-ed25519 AAAA", server.port());
    assert!(known_hosts.starts_with(&prefix), "{known_hosts}");
    let wrong = std::fs::read_to_string(server.wrong_known_hosts()).unwrap();
    assert!(wrong.starts_with(&prefix), "{wrong}");
    assert_ne!(known_hosts, wrong);

    let work = TempDir::new().unwrap();
    let good = ssh_command_for(&key, &server.known_hosts());
    let cloned = git_output(
        work.path(),
        &["clone", "-q", &url, "clone"],
        &[("GIT_SSH_COMMAND", &good)],
    );
    assert!(
        cloned.success(),
        "clone over ssh failed:\n{}\nsshd log:\n{}",
        cloned.stderr,
        server.log()
    );
    let clone = work.path().join("clone");
    assert_eq!(git(&clone, &["rev-parse", "HEAD"]), head);

    // Fetch a new commit with protocol v2 (GIT_PROTOCOL is accepted).
    let next = origin.commit(&[("b", "b\n")], "next");
    let fetched = git_output(
        &clone,
        &["-c", "protocol.version=2", "fetch", "-q", "origin"],
        &[("GIT_SSH_COMMAND", &good)],
    );
    assert!(fetched.success(), "{}", fetched.stderr);
    assert_eq!(git(&clone, &["rev-parse", "origin/main"]), next);

    let bad = ssh_command_for(&key, &server.wrong_known_hosts());
    let refused = git_output(
        work.path(),
        &["clone", "-q", &url, "refused"],
        &[("GIT_SSH_COMMAND", &bad)],
    );
    let stderr = &refused.stderr;
    assert!(!refused.success(), "wrong host key accepted");
    assert!(stderr.contains("Host key verification failed"), "{stderr}");
    assert!(!work.path().join("refused").exists());
}

#[test]
fn ssh_key_only_runs_git_shell() {
    let server = SshGitServer::start();
    let mut ssh = std::process::Command::new("sh");
    crate::common::git_env(&mut ssh);
    let output = run(ssh.arg("-c").arg(format!(
        "{} -p {} {}@127.0.0.1 id",
        ssh_command_for(&server.client_key(), &server.known_hosts()),
        server.port(),
        server.user()
    )));
    let stderr = &output.stderr;
    assert!(!output.success(), "arbitrary command ran: {stderr}");
    assert!(!output.stdout.contains("uid="), "{stderr}");
    assert!(stderr.contains("unrecognized command 'id'"), "{stderr}");
}

#[test]
fn environment_helpers() {
    let quoted = ssh_command_for(Path::new("/k ey"), Path::new("/known'hosts"));
    assert!(quoted.contains("-i '/k ey' "), "{quoted}");
    assert!(
        quoted.contains(r"UserKnownHostsFile='/known'\''hosts' "),
        "{quoted}"
    );

    let cmd = bin();
    assert!(cmd.get_program().to_string_lossy().ends_with("gitops-run"));
    let envs: Vec<_> = cmd.get_envs().collect();
    let value = |name: &str| {
        envs.iter()
            .find(|(key, _)| *key == name)
            .and_then(|(_, value)| *value)
            .map(|value| value.to_string_lossy().into_owned())
    };
    assert_eq!(value("GIT_CONFIG_GLOBAL").as_deref(), Some("/dev/null"));
    assert_eq!(value("GIT_CONFIG_NOSYSTEM").as_deref(), Some("1"));
    assert_eq!(
        value("HOME").as_deref(),
        Some(test_home().to_str().unwrap())
    );
    assert!(envs
        .iter()
        .any(|(key, value)| *key == "GIT_DIR" && value.is_none()));
    assert!(std::fs::read_dir(test_home()).is_ok());
}
