//! Integration tests for the fetch side of a pass: transports (HTTP with and
//! without basic auth, ssh with a deploy key, file:// and local paths), the
//! shallow first fetch, refusals of rewritten history, and fetch failures.
//!
//! Every test runs the real `gitops-run` binary against real git servers from
//! `tests/common` and looks at the state directory, the exit code, stderr and
//! `status --json`.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::run::{run_watched, Run};
use crate::common::{bin, git, git_command, HttpGitServer, Origin, SshGitServer};
use serde_json::Value;
use tempfile::TempDir;

/// Upper bound for one `gitops-run` invocation. Only a safety net against a
/// hang (a password prompt, a stuck connection); never an assertion of speed.
const SAFETY_NET: Duration = Duration::from_secs(180);

/// The entrypoint every test commits: appends one `|`-separated record per
/// run to `$GITOPS_STATE_DIR/ran`.
const ENTRYPOINT: &str = "#!/bin/sh\n\
printf '%s|%s|%s|%s|%s\\n' \"$GITOPS_REASON\" \"$GITOPS_COMMIT\" \
\"$GITOPS_PREVIOUS_COMMIT\" \"$GITOPS_BRANCH\" \"$GITOPS_REPO\" >> \"$GITOPS_STATE_DIR/ran\"\n";

/// Runs `gitops-run ARGS`.
fn gitops(args: &[&str]) -> Run {
    let mut cmd = bin();
    cmd.args(args);
    run_watched(cmd, SAFETY_NET)
}

/// A state directory inside a temporary directory (the state directory
/// itself does not exist yet, so the binary creates it with its own mode).
struct StateDir {
    _tmp: TempDir,
    path: PathBuf,
}

impl StateDir {
    fn new() -> StateDir {
        let tmp = tempfile::Builder::new()
            .prefix("gitops-run-state-")
            .tempdir()
            .expect("create temporary directory");
        let path = tmp.path().join("state");
        StateDir { _tmp: tmp, path }
    }

    fn arg(&self) -> &str {
        self.path.to_str().expect("UTF-8 state dir")
    }

    /// One pass: `gitops-run --repo REPO --state-dir DIR EXTRA...`.
    fn pass(&self, repo: &str, extra: &[&str]) -> Run {
        let mut args = vec!["--repo", repo, "--state-dir", self.arg()];
        args.extend_from_slice(extra);
        gitops(&args)
    }

    /// `gitops-run status --json`, parsed.
    fn status_json(&self) -> Value {
        let run = gitops(&["status", "--json", "--state-dir", self.arg()]);
        run.assert_code(0);
        serde_json::from_str(&run.stdout)
            .unwrap_or_else(|err| panic!("status --json is not JSON ({err}):\n{run}"))
    }

    /// `gitops-run status` (text) and `status --json`, stdout and stderr.
    fn all_status_output(&self) -> String {
        let text = gitops(&["status", "--state-dir", self.arg()]);
        text.assert_code(0);
        let json = gitops(&["status", "--json", "--state-dir", self.arg()]);
        json.assert_code(0);
        format!(
            "{}{}{}{}",
            text.stdout, text.stderr, json.stdout, json.stderr
        )
    }

    /// The target of the `current` symlink, if there is one.
    fn current(&self) -> Option<PathBuf> {
        std::fs::read_link(self.path.join("current")).ok()
    }

    /// Asserts that `current` is the relative link `trees/<commit>` and that
    /// the tree behind it holds `app.conf` with `app_conf`.
    fn assert_deployed(&self, commit: &str, app_conf: &str) {
        assert_eq!(
            self.current(),
            Some(Path::new("trees").join(commit)),
            "current should point at trees/{commit}"
        );
        let content = std::fs::read_to_string(self.path.join("current").join("app.conf"))
            .expect("read current/app.conf");
        assert_eq!(content, app_conf);
        assert!(self.path.join("current").join("run.sh").is_file());
    }

    /// Asserts that nothing was deployed and the entrypoint never ran.
    fn assert_nothing_deployed(&self) {
        assert_eq!(self.current(), None, "current must not exist");
        assert!(self.runs().is_empty(), "entrypoint ran: {:?}", self.runs());
        let trees: Vec<_> = std::fs::read_dir(self.path.join("trees"))
            .map(|entries| entries.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(trees.is_empty(), "trees were checked out: {trees:?}");
    }

    /// The entrypoint's records, oldest first.
    fn runs(&self) -> Vec<Record> {
        let text = std::fs::read_to_string(self.path.join("ran")).unwrap_or_default();
        text.lines().map(Record::parse).collect()
    }

    fn state_json_text(&self) -> String {
        std::fs::read_to_string(self.path.join("state.json")).expect("read state.json")
    }

    /// `for-each-ref` of the cache repository, one ref name per line.
    fn cache_refs(&self) -> Vec<String> {
        let cache = self.path.join("cache.git");
        let out = git(
            &self.path,
            &[
                "--git-dir",
                cache.to_str().expect("UTF-8"),
                "for-each-ref",
                "--format=%(refname)",
            ],
        );
        out.lines().map(str::to_owned).collect()
    }

    /// Whether the cache repository holds `commit`.
    fn cache_has(&self, commit: &str) -> bool {
        let cache = self.path.join("cache.git");
        git_command(
            &self.path,
            &[
                "--git-dir",
                cache.to_str().expect("UTF-8"),
                "cat-file",
                "-e",
                &format!("{commit}^{{commit}}"),
            ],
        )
        .output()
        .expect("run git cat-file")
        .status
        .success()
    }

    /// Number of commits reachable from the cache's tracking ref.
    fn cache_commit_count(&self) -> usize {
        let cache = self.path.join("cache.git");
        git(
            &self.path,
            &[
                "--git-dir",
                cache.to_str().expect("UTF-8"),
                "rev-list",
                "--count",
                "refs/remotes/origin/main",
            ],
        )
        .parse()
        .expect("a count")
    }
}

/// One run of [`ENTRYPOINT`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    reason: String,
    commit: String,
    previous: String,
    branch: String,
    repo: String,
}

impl Record {
    fn parse(line: &str) -> Record {
        let fields: Vec<&str> = line.splitn(5, '|').collect();
        assert_eq!(fields.len(), 5, "bad record {line:?}");
        Record {
            reason: fields[0].to_owned(),
            commit: fields[1].to_owned(),
            previous: fields[2].to_owned(),
            branch: fields[3].to_owned(),
            repo: fields[4].to_owned(),
        }
    }
}

fn short(commit: &str) -> &str {
    &commit[..12]
}

/// An origin whose first commit holds the entrypoint and `app.conf`.
fn origin_with_entrypoint() -> (Origin, String) {
    let mut origin = Origin::new();
    let first = origin.commit(
        &[("run.sh", ENTRYPOINT), ("app.conf", "version 1\n")],
        "first",
    );
    (origin, first)
}

/// An origin with `count` commits, the N-th (1-based) setting `app.conf` to
/// `version N`. Returns the ids, oldest first.
fn origin_with_history(count: usize) -> (Origin, Vec<String>) {
    let (mut origin, first) = origin_with_entrypoint();
    let mut ids = vec![first];
    for n in 2..=count {
        let content = format!("version {n}\n");
        ids.push(origin.commit(&[("app.conf", content.as_str())], &format!("commit {n}")));
    }
    (origin, ids)
}

/// A `http://127.0.0.1:PORT/...` URL on which nothing listens.
fn closed_port_url() -> String {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    let port = listener.local_addr().expect("local address").port();
    drop(listener);
    format!("http://127.0.0.1:{port}/origin/.git")
}

// 1. HTTP (real git http-backend)

#[test]
fn http_first_pass_deploys_head_second_is_noop_then_new_commit_applies() {
    let (mut origin, first) = origin_with_entrypoint();
    let server = HttpGitServer::start(origin.root());
    let url = server.url("origin/.git");
    let state = StateDir::new();

    let run = state.pass(&url, &[]);
    run.assert_code(0);
    state.assert_deployed(&first, "version 1\n");
    let runs = state.runs();
    assert_eq!(runs.len(), 1, "{run}");
    assert_eq!(runs[0].reason, "initial");
    assert_eq!(runs[0].commit, first);
    assert_eq!(runs[0].previous, "");
    assert_eq!(runs[0].branch, "main");
    assert_eq!(runs[0].repo, url);

    let run = state.pass(&url, &[]);
    run.assert_code(0);
    assert!(run.stderr.contains("up to date"), "{run}");
    assert_eq!(state.runs().len(), 1, "entrypoint ran again:\n{run}");
    state.assert_deployed(&first, "version 1\n");

    let second = origin.commit(&[("app.conf", "version 2\n")], "second");
    let run = state.pass(&url, &[]);
    run.assert_code(0);
    state.assert_deployed(&second, "version 2\n");
    let runs = state.runs();
    assert_eq!(runs.len(), 2, "{run}");
    assert_eq!(runs[1].reason, "new");
    assert_eq!(runs[1].commit, second);
    assert_eq!(runs[1].previous, first);
}

// 2. ssh with a deploy key

#[test]
fn ssh_with_deploy_key_and_known_hosts_deploys_head() {
    let (mut origin, first) = origin_with_entrypoint();
    let server = SshGitServer::start();
    let url = server.url(&origin.git_dir());
    let key = server.client_key();
    let known_hosts = server.known_hosts();
    let ssh_args = [
        "--ssh-key",
        key.to_str().expect("UTF-8"),
        "--known-hosts",
        known_hosts.to_str().expect("UTF-8"),
    ];
    let state = StateDir::new();

    let run = state.pass(&url, &ssh_args);
    assert_eq!(run.code, Some(0), "{run}\nsshd log:\n{}", server.log());
    state.assert_deployed(&first, "version 1\n");
    let runs = state.runs();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].reason, "initial");
    assert_eq!(runs[0].repo, url);

    let second = origin.commit(&[("app.conf", "version 2\n")], "second");
    let run = state.pass(&url, &ssh_args);
    assert_eq!(run.code, Some(0), "{run}\nsshd log:\n{}", server.log());
    state.assert_deployed(&second, "version 2\n");
    assert_eq!(state.runs().len(), 2);
}

#[test]
fn ssh_with_wrong_known_hosts_fails_host_key_verification_with_exit_3() {
    let (origin, _first) = origin_with_entrypoint();
    let server = SshGitServer::start();
    let url = server.url(&origin.git_dir());
    let key = server.client_key();
    let wrong = server.wrong_known_hosts();
    let state = StateDir::new();

    let run = state.pass(
        &url,
        &[
            "--ssh-key",
            key.to_str().expect("UTF-8"),
            "--known-hosts",
            wrong.to_str().expect("UTF-8"),
        ],
    );
    run.assert_code(3);
    assert!(
        run.stderr
            .to_ascii_lowercase()
            .contains("host key verification"),
        "stderr should mention host key verification:\n{run}"
    );
    state.assert_nothing_deployed();
}

#[test]
fn ssh_without_known_hosts_does_not_trust_on_first_use_and_exits_3() {
    let (origin, _first) = origin_with_entrypoint();
    let server = SshGitServer::start();
    let url = server.url(&origin.git_dir());
    let key = server.client_key();
    let state = StateDir::new();

    let run = state.pass(&url, &["--ssh-key", key.to_str().expect("UTF-8")]);
    run.assert_code(3);
    state.assert_nothing_deployed();
    // And still not on a second try: nothing was learnt the first time.
    let run = state.pass(&url, &["--ssh-key", key.to_str().expect("UTF-8")]);
    run.assert_code(3);
    state.assert_nothing_deployed();
}

// 3. HTTP basic auth

const USER: &str = "deployer";
const PASSWORD: &str = "Sup3rS3cretPassw0rd";

#[test]
fn http_url_with_credentials_is_refused_before_sending_them_in_clear_text() {
    let (origin, _first) = origin_with_entrypoint();
    let server = HttpGitServer::with_basic_auth(origin.root(), USER, PASSWORD);
    let url = server.url_with_credentials(USER, PASSWORD, "origin/.git");
    let state = StateDir::new();

    let run = state.pass(&url, &["-v"]);
    run.assert_code(2);
    let line = run.assert_one_clean_error();
    assert!(
        line.contains("clear text") && line.contains("https://"),
        "{run}"
    );
    assert_eq!(
        server.requests(),
        0,
        "credentials must not reach the wire:\n{run}"
    );
    assert!(!run.stderr.contains(PASSWORD), "password in stderr:\n{run}");
    assert!(!run.stdout.contains(PASSWORD), "password in stdout:\n{run}");
    state.assert_nothing_deployed();
}

#[test]
fn https_credentials_are_redacted_in_errors_and_state() {
    // Nothing listens on port 1: the fetch fails, and the error path must not leak.
    let url = format!("https://{USER}:{PASSWORD}@127.0.0.1:1/origin/.git");
    let state = StateDir::new();
    let run = state.pass(&url, &["-v"]);
    run.assert_code(3);
    run.assert_one_clean_error();
    for secret in [USER, PASSWORD] {
        assert!(!run.stderr.contains(secret), "{secret} in stderr:\n{run}");
        assert!(!run.stdout.contains(secret), "{secret} in stdout:\n{run}");
        let state_json = state.state_json_text();
        assert!(
            !state_json.contains(secret),
            "{secret} in state.json:\n{state_json}"
        );
        let status = state.all_status_output();
        assert!(!status.contains(secret), "{secret} in status:\n{status}");
    }
    assert!(run.stderr.contains("https://***@127.0.0.1:1/"), "{run}");
}

// 4. Force-push (diverged history)

#[test]
fn force_push_is_refused_with_exit_4_and_allow_rewrite_deploys_it() {
    let (mut origin, _a) = origin_with_entrypoint();
    let b = origin.commit(&[("app.conf", "version 2\n")], "B");
    let url = origin.url();
    let state = StateDir::new();
    state.pass(&url, &[]).assert_code(0);
    state.assert_deployed(&b, "version 2\n");

    let amended = origin.amend("B, amended");
    let run = state.pass(&url, &[]);
    run.assert_code(4);
    assert!(run.stderr.contains(short(&b)), "names deployed:\n{run}");
    assert!(run.stderr.contains(short(&amended)), "names remote:\n{run}");
    assert!(run.stderr.contains("--allow-rewrite"), "{run}");
    state.assert_deployed(&b, "version 2\n");
    assert_eq!(state.runs().len(), 1, "entrypoint ran:\n{run}");
    let status = state.status_json();
    assert_eq!(status["classification"], "diverged", "{status:#}");
    assert_eq!(status["remote_commit"], amended.as_str(), "{status:#}");
    assert_eq!(status["deployed"]["commit"], b.as_str(), "{status:#}");
    assert_eq!(status["last_pass"]["exit_code"], 4, "{status:#}");

    let run = state.pass(&url, &["--allow-rewrite"]);
    run.assert_code(0);
    state.assert_deployed(&amended, "version 2\n");
    let runs = state.runs();
    assert_eq!(runs.len(), 2, "{run}");
    assert_eq!(runs[1].reason, "rewrite");
    assert_eq!(runs[1].commit, amended);
    assert_eq!(runs[1].previous, b);
}

// 5. Reset backwards (remote behind)

#[test]
fn reset_backwards_is_refused_with_exit_4_and_allow_rewrite_deploys_it() {
    let (mut origin, a) = origin_with_entrypoint();
    let b = origin.commit(&[("app.conf", "version 2\n")], "B");
    let url = origin.url();
    let state = StateDir::new();
    state.pass(&url, &[]).assert_code(0);
    state.assert_deployed(&b, "version 2\n");
    let state_before = state.state_json_text();

    origin.reset_hard(&a);
    let run = state.pass(&url, &[]);
    run.assert_code(4);
    assert!(run.stderr.contains(short(&a)), "names remote:\n{run}");
    assert!(run.stderr.contains(short(&b)), "names deployed:\n{run}");
    assert!(run.stderr.contains("--allow-rewrite"), "{run}");
    state.assert_deployed(&b, "version 2\n");
    assert_eq!(state.runs().len(), 1, "entrypoint ran:\n{run}");
    let status = state.status_json();
    assert_eq!(status["classification"], "remote-behind", "{status:#}");
    assert_eq!(status["remote_commit"], a.as_str(), "{status:#}");
    assert_eq!(status["deployed"]["commit"], b.as_str(), "{status:#}");
    // Deployed commit and last attempt are unchanged; only the pass record differs.
    let before: Value = serde_json::from_str(&state_before).expect("state.json");
    let after: Value = serde_json::from_str(&state.state_json_text()).expect("state.json");
    assert_eq!(before["deployed"], after["deployed"]);
    assert_eq!(before["attempt"], after["attempt"]);

    let run = state.pass(&url, &["--allow-rewrite"]);
    run.assert_code(0);
    state.assert_deployed(&a, "version 1\n");
    let runs = state.runs();
    assert_eq!(runs.len(), 2, "{run}");
    assert_eq!(runs[1].reason, "rewrite");
    assert_eq!(runs[1].commit, a);
    assert_eq!(runs[1].previous, b);
}

// 6. Shallow history

#[test]
fn shallow_first_fetch_then_rewrite_far_back_is_diverged_not_an_error() {
    let (mut origin, ids) = origin_with_history(30);
    let server = HttpGitServer::start(origin.root());
    let url = server.url("origin/.git");
    let state = StateDir::new();
    state.pass(&url, &[]).assert_code(0);
    state.assert_deployed(&ids[29], "version 30\n");
    assert_eq!(state.cache_commit_count(), 1, "the first fetch is shallow");

    origin.reset_hard("HEAD~20");
    assert_eq!(origin.head(), ids[9]);
    let rewritten = origin.commit(&[("app.conf", "rewritten\n")], "rewritten");

    let run = state.pass(&url, &[]);
    run.assert_code(4);
    assert!(run.error_lines().is_empty(), "no error line:\n{run}");
    assert!(!run.stderr.contains("panicked"), "{run}");
    assert!(run.stderr.contains(short(&ids[29])), "{run}");
    assert!(run.stderr.contains(short(&rewritten)), "{run}");
    let status = state.status_json();
    assert_eq!(status["classification"], "diverged", "{status:#}");
    assert_eq!(status["last_pass"]["outcome"], "refused", "{status:#}");
    state.assert_deployed(&ids[29], "version 30\n");
    assert_eq!(state.runs().len(), 1);
}

#[test]
fn shallow_first_fetch_then_multi_commit_advance_is_behind_and_applies() {
    let (mut origin, ids) = origin_with_history(30);
    let server = HttpGitServer::start(origin.root());
    let url = server.url("origin/.git");
    let state = StateDir::new();
    state.pass(&url, &[]).assert_code(0);
    state.assert_deployed(&ids[29], "version 30\n");
    assert_eq!(state.cache_commit_count(), 1, "the first fetch is shallow");

    let mut head = String::new();
    for n in 31..=35 {
        let content = format!("version {n}\n");
        head = origin.commit(&[("app.conf", content.as_str())], &format!("commit {n}"));
    }

    let run = state.pass(&url, &[]);
    run.assert_code(0);
    state.assert_deployed(&head, "version 35\n");
    let status = state.status_json();
    assert_eq!(status["classification"], "behind", "{status:#}");
    let runs = state.runs();
    assert_eq!(runs.len(), 2, "{run}");
    assert_eq!(runs[1].reason, "new");
    assert_eq!(runs[1].commit, head);
    assert_eq!(runs[1].previous, ids[29]);
}

#[test]
fn shallow_first_fetch_then_reset_below_shallow_boundary_is_remote_behind() {
    let (origin, ids) = origin_with_history(30);
    let server = HttpGitServer::start(origin.root());
    let url = server.url("origin/.git");
    let state = StateDir::new();
    state.pass(&url, &[]).assert_code(0);
    state.assert_deployed(&ids[29], "version 30\n");
    assert_eq!(state.cache_commit_count(), 1, "the first fetch is shallow");

    origin.reset_hard(&ids[9]);
    let run = state.pass(&url, &[]);
    run.assert_code(4);
    assert!(run.error_lines().is_empty(), "no error line:\n{run}");
    assert!(run.stderr.contains(short(&ids[9])), "{run}");
    assert!(run.stderr.contains(short(&ids[29])), "{run}");
    let status = state.status_json();
    assert_eq!(status["classification"], "remote-behind", "{status:#}");
    state.assert_deployed(&ids[29], "version 30\n");
    assert_eq!(state.runs().len(), 1);
}

// 7. Fetch failures

#[test]
fn nonexistent_branch_fails_with_exit_3_naming_the_branch() {
    let (origin, _first) = origin_with_entrypoint();
    let state = StateDir::new();
    let run = state.pass(&origin.url(), &["--branch", "no-such-branch"]);
    run.assert_code(3);
    let line = run.assert_one_clean_error();
    assert!(line.contains("no-such-branch"), "{run}");
    state.assert_nothing_deployed();
}

#[test]
fn nonexistent_repository_path_fails_with_exit_3() {
    let missing = tempfile::tempdir().expect("tempdir");
    let repo = missing.path().join("does-not-exist");
    let state = StateDir::new();
    let run = state.pass(repo.to_str().expect("UTF-8"), &[]);
    run.assert_code(3);
    run.assert_one_clean_error();
    state.assert_nothing_deployed();
}

#[test]
fn http_url_to_closed_port_fails_with_exit_3() {
    let state = StateDir::new();
    let run = state.pass(&closed_port_url(), &[]);
    run.assert_code(3);
    run.assert_one_clean_error();
    state.assert_nothing_deployed();
}

#[test]
fn http_url_to_missing_repository_fails_with_exit_3() {
    let (origin, _first) = origin_with_entrypoint();
    let server = HttpGitServer::start(origin.root());
    let state = StateDir::new();
    let run = state.pass(&server.url("no-such-repo/.git"), &[]);
    run.assert_code(3);
    run.assert_one_clean_error();
    state.assert_nothing_deployed();
}

#[test]
fn fetch_failure_keeps_deployed_commit_and_status_records_the_error() {
    let (origin, first) = origin_with_entrypoint();
    let server = HttpGitServer::start(origin.root());
    let url = server.url("origin/.git");
    let state = StateDir::new();
    state.pass(&url, &[]).assert_code(0);
    state.assert_deployed(&first, "version 1\n");

    // The server goes away; the same URL now points at a closed port.
    drop(server);
    let run = state.pass(&url, &[]);
    run.assert_code(3);
    let printed = run.assert_error_without_panic();
    state.assert_deployed(&first, "version 1\n");
    assert_eq!(state.runs().len(), 1, "entrypoint ran:\n{run}");

    let status = state.status_json();
    assert_eq!(status["deployed"]["commit"], first.as_str(), "{status:#}");
    assert_eq!(status["current"], first.as_str(), "{status:#}");
    assert_eq!(status["last_pass"]["outcome"], "error", "{status:#}");
    assert_eq!(status["last_pass"]["exit_code"], 3, "{status:#}");
    let error = status["last_pass"]["error"]
        .as_str()
        .unwrap_or_else(|| panic!("last_pass.error is not a string: {status:#}"));
    assert!(!error.is_empty(), "{status:#}");
    assert_eq!(error, printed, "status error vs printed error");
}

// 8. file:// URL and plain path

#[test]
fn file_url_and_plain_path_are_the_same_repository_across_passes() {
    let (mut origin, first) = origin_with_entrypoint();
    let file_url = origin.url();
    let plain = origin.path().to_str().expect("UTF-8").to_owned();
    assert!(file_url.starts_with("file://"));
    let state = StateDir::new();

    state.pass(&file_url, &[]).assert_code(0);
    state.assert_deployed(&first, "version 1\n");

    let second = origin.commit(&[("app.conf", "version 2\n")], "second");
    let run = state.pass(&plain, &[]);
    run.assert_code(0);
    assert!(run.error_lines().is_empty(), "{run}");
    state.assert_deployed(&second, "version 2\n");
    let runs = state.runs();
    assert_eq!(runs.len(), 2, "{run}");
    assert_eq!(runs[1].reason, "new");

    let run = state.pass(&file_url, &[]);
    run.assert_code(0);
    assert!(run.stderr.contains("up to date"), "{run}");
    assert_eq!(state.runs().len(), 2, "entrypoint ran again:\n{run}");

    // The other way round, starting with the plain path.
    let other_state = StateDir::new();
    other_state.pass(&plain, &[]).assert_code(0);
    let third = origin.commit(&[("app.conf", "version 3\n")], "third");
    other_state.pass(&file_url, &[]).assert_code(0);
    other_state.assert_deployed(&third, "version 3\n");
}

// 9. Only the configured branch is fetched

#[test]
fn pass_fetches_only_the_configured_branch() {
    let (mut origin, _first) = origin_with_entrypoint();
    origin.branch("other");
    git(origin.path(), &["checkout", "-q", "other"]);
    let other_only = origin.commit(&[("other.txt", "other\n")], "only on other");
    git(origin.path(), &["checkout", "-q", "main"]);
    let main_head = origin.commit(&[("app.conf", "version 2\n")], "main 2");
    let state = StateDir::new();

    let run = state.pass(&origin.url(), &[]);
    run.assert_code(0);
    state.assert_deployed(&main_head, "version 2\n");
    let refs = state.cache_refs();
    assert!(
        refs.iter().all(|r| r == "refs/remotes/origin/main"),
        "only the main tracking ref is expected: {refs:?}"
    );
    assert!(
        !refs.iter().any(|r| r.contains("other")),
        "cache has a ref for other: {refs:?}"
    );
    assert!(
        !state.cache_has(&other_only),
        "cache holds a commit only on other"
    );

    // Likewise on a later pass that fetches new commits.
    let main_3 = origin.commit(&[("app.conf", "version 3\n")], "main 3");
    state.pass(&origin.url(), &[]).assert_code(0);
    state.assert_deployed(&main_3, "version 3\n");
    let refs = state.cache_refs();
    assert!(
        !refs.iter().any(|r| r.contains("other")),
        "cache has a ref for other: {refs:?}"
    );
    assert!(!state.cache_has(&other_only));
}

/// The server's cost of a poll that finds nothing new: the ref advertisement only,
/// no fetch negotiation and no pack.
#[test]
fn a_no_op_pass_over_http_stops_after_the_ref_advertisement() {
    let mut origin = Origin::new();
    origin.commit(&[("run.sh", "#!/bin/sh\nexit 0\n")], "first");
    let server = HttpGitServer::start(origin.root());
    let url = server.url("origin/.git");
    let state = tempfile::tempdir().unwrap();
    let run = || {
        crate::common::bin()
            .args(["--repo", &url, "--state-dir"])
            .arg(state.path().join("s"))
            .output()
            .unwrap()
    };
    assert!(run().status.success());
    let before = server.requests();
    let out = run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("up to date"));
    // Protocol v2: GET info/refs (capabilities) and POST ls-refs; no fetch command.
    assert_eq!(server.requests() - before, 2, "requests of a no-op pass");
}
