//! Integration tests for the fetch side of a pass: transports (HTTP with and
//! without basic auth, ssh with a deploy key, file:// and local paths), the
//! shallow first fetch, refusals of rewritten history, and fetch failures.
//!
//! Every test runs the real `gitops-run` binary against real git servers from
//! [`crate::common`] and looks at the state directory, the exit code, stderr and
//! `status --json`.

use std::fs;

use crate::common::{
    git, git_command, run, ClosedPort, HttpGitServer, Origin, SshGitServer, StateDir,
};
use serde_json::Value;

/// The entrypoint every test commits: appends one `|`-separated record per
/// run to `$GITOPS_STATE_DIR/ran`.
const ENTRYPOINT: &str = "#!/bin/sh\n\
printf '%s|%s|%s|%s|%s\\n' \"$GITOPS_REASON\" \"$GITOPS_COMMIT\" \
\"$GITOPS_PREVIOUS_COMMIT\" \"$GITOPS_BRANCH\" \"$GITOPS_REPO\" >> \"$GITOPS_STATE_DIR/ran\"\n";

/// The file [`ENTRYPOINT`] appends its records to.
const RECORDS: &str = "ran";

/// Asserts that `current` is the relative link `trees/<commit>` and that
/// the tree behind it holds the entrypoint and `app.conf` with `app_conf`.
#[track_caller]
fn assert_deployed(state: &StateDir, commit: &str, app_conf: &str) {
    state.assert_deployed(commit);
    let content = fs::read_to_string(state.path().join("current").join("app.conf"))
        .expect("read current/app.conf");
    assert_eq!(content, app_conf);
}

/// Asserts that nothing was deployed and the entrypoint never ran.
#[track_caller]
fn assert_nothing_deployed(state: &StateDir) {
    state.assert_nothing_deployed(&[RECORDS]);
}

/// The entrypoint's records, oldest first.
fn records(state: &StateDir) -> Vec<Record> {
    state
        .lines(RECORDS)
        .iter()
        .map(|line| Record::parse(line))
        .collect()
}

/// `--git-dir` of the cache repository in `state`.
fn cache_git_dir(state: &StateDir) -> String {
    let cache = state.path().join("cache.git");
    cache.to_str().expect("UTF-8").to_owned()
}

/// `for-each-ref` of the cache repository, one ref name per line.
fn cache_refs(state: &StateDir) -> Vec<String> {
    let out = git(
        state.path(),
        &[
            "--git-dir",
            &cache_git_dir(state),
            "for-each-ref",
            "--format=%(refname)",
        ],
    );
    out.lines().map(str::to_owned).collect()
}

/// Whether the cache repository holds `commit`.
fn cache_has(state: &StateDir, commit: &str) -> bool {
    run(&mut git_command(
        state.path(),
        &[
            "--git-dir",
            &cache_git_dir(state),
            "cat-file",
            "-e",
            &format!("{commit}^{{commit}}"),
        ],
    ))
    .success()
}

/// Number of commits reachable from the cache's tracking ref.
fn cache_commit_count(state: &StateDir) -> usize {
    git(
        state.path(),
        &[
            "--git-dir",
            &cache_git_dir(state),
            "rev-list",
            "--count",
            "refs/remotes/origin/main",
        ],
    )
    .parse()
    .expect("a count")
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

// 1. HTTP (real git http-backend)

#[test]
fn http_first_pass_deploys_head_second_is_noop_then_new_commit_applies() {
    let (mut origin, first) = origin_with_entrypoint();
    let server = HttpGitServer::start(origin.root());
    let url = server.url("origin/.git");
    let state = StateDir::new();

    let run = state.pass(&url, &[]);
    run.assert_code(0);
    assert_deployed(&state, &first, "version 1\n");
    let runs = records(&state);
    assert_eq!(runs.len(), 1, "{run}");
    assert_eq!(runs[0].reason, "initial");
    assert_eq!(runs[0].commit, first);
    assert_eq!(runs[0].previous, "");
    assert_eq!(runs[0].branch, "main");
    assert_eq!(runs[0].repo, url);

    let run = state.pass(&url, &[]);
    run.assert_code(0);
    assert!(run.stderr.contains("up to date"), "{run}");
    assert_eq!(records(&state).len(), 1, "entrypoint ran again:\n{run}");
    assert_deployed(&state, &first, "version 1\n");

    let second = origin.commit(&[("app.conf", "version 2\n")], "second");
    let run = state.pass(&url, &[]);
    run.assert_code(0);
    assert_deployed(&state, &second, "version 2\n");
    let runs = records(&state);
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
    assert_deployed(&state, &first, "version 1\n");
    let runs = records(&state);
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].reason, "initial");
    assert_eq!(runs[0].repo, url);

    let second = origin.commit(&[("app.conf", "version 2\n")], "second");
    let run = state.pass(&url, &ssh_args);
    assert_eq!(run.code, Some(0), "{run}\nsshd log:\n{}", server.log());
    assert_deployed(&state, &second, "version 2\n");
    assert_eq!(records(&state).len(), 2);
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
    assert_nothing_deployed(&state);
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
    assert_nothing_deployed(&state);
    // And still not on a second try: nothing was learnt the first time.
    let run = state.pass(&url, &["--ssh-key", key.to_str().expect("UTF-8")]);
    run.assert_code(3);
    assert_nothing_deployed(&state);
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
    assert_nothing_deployed(&state);
}

#[test]
fn https_credentials_are_redacted_in_errors_and_state() {
    // Nothing listens on the port: the fetch fails, and the error path must
    // not leak.
    let closed = ClosedPort::new();
    let port = closed.port();
    let url = format!("https://{USER}:{PASSWORD}@127.0.0.1:{port}/origin/.git");
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
    assert!(
        run.stderr
            .contains(&format!("https://***@127.0.0.1:{port}/")),
        "{run}"
    );
}

// 4. Force-push (diverged history)

#[test]
fn force_push_is_refused_with_exit_4_and_allow_rewrite_deploys_it() {
    let (mut origin, _a) = origin_with_entrypoint();
    let b = origin.commit(&[("app.conf", "version 2\n")], "B");
    let url = origin.url();
    let state = StateDir::new();
    state.pass(&url, &[]).assert_code(0);
    assert_deployed(&state, &b, "version 2\n");

    let amended = origin.amend("B, amended");
    let run = state.pass(&url, &[]);
    run.assert_code(4);
    assert!(run.stderr.contains(short(&b)), "names deployed:\n{run}");
    assert!(run.stderr.contains(short(&amended)), "names remote:\n{run}");
    assert!(run.stderr.contains("--allow-rewrite"), "{run}");
    assert_deployed(&state, &b, "version 2\n");
    assert_eq!(records(&state).len(), 1, "entrypoint ran:\n{run}");
    let status = state.status_json();
    assert_eq!(status["classification"], "diverged", "{status:#}");
    assert_eq!(status["remote_commit"], amended.as_str(), "{status:#}");
    assert_eq!(status["deployed"]["commit"], b.as_str(), "{status:#}");
    assert_eq!(status["last_pass"]["exit_code"], 4, "{status:#}");

    let run = state.pass(&url, &["--allow-rewrite"]);
    run.assert_code(0);
    assert_deployed(&state, &amended, "version 2\n");
    let runs = records(&state);
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
    assert_deployed(&state, &b, "version 2\n");
    let state_before = state.state_json_text();

    origin.reset_hard(&a);
    let run = state.pass(&url, &[]);
    run.assert_code(4);
    assert!(run.stderr.contains(short(&a)), "names remote:\n{run}");
    assert!(run.stderr.contains(short(&b)), "names deployed:\n{run}");
    assert!(run.stderr.contains("--allow-rewrite"), "{run}");
    assert_deployed(&state, &b, "version 2\n");
    assert_eq!(records(&state).len(), 1, "entrypoint ran:\n{run}");
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
    assert_deployed(&state, &a, "version 1\n");
    let runs = records(&state);
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
    assert_deployed(&state, &ids[29], "version 30\n");
    assert_eq!(cache_commit_count(&state), 1, "the first fetch is shallow");

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
    assert_deployed(&state, &ids[29], "version 30\n");
    assert_eq!(records(&state).len(), 1);
}

#[test]
fn shallow_first_fetch_then_multi_commit_advance_is_behind_and_applies() {
    let (mut origin, ids) = origin_with_history(30);
    let server = HttpGitServer::start(origin.root());
    let url = server.url("origin/.git");
    let state = StateDir::new();
    state.pass(&url, &[]).assert_code(0);
    assert_deployed(&state, &ids[29], "version 30\n");
    assert_eq!(cache_commit_count(&state), 1, "the first fetch is shallow");

    let mut head = String::new();
    for n in 31..=35 {
        let content = format!("version {n}\n");
        head = origin.commit(&[("app.conf", content.as_str())], &format!("commit {n}"));
    }

    let run = state.pass(&url, &[]);
    run.assert_code(0);
    assert_deployed(&state, &head, "version 35\n");
    let status = state.status_json();
    assert_eq!(status["classification"], "behind", "{status:#}");
    let runs = records(&state);
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
    assert_deployed(&state, &ids[29], "version 30\n");
    assert_eq!(cache_commit_count(&state), 1, "the first fetch is shallow");

    origin.reset_hard(&ids[9]);
    let run = state.pass(&url, &[]);
    run.assert_code(4);
    assert!(run.error_lines().is_empty(), "no error line:\n{run}");
    assert!(run.stderr.contains(short(&ids[9])), "{run}");
    assert!(run.stderr.contains(short(&ids[29])), "{run}");
    let status = state.status_json();
    assert_eq!(status["classification"], "remote-behind", "{status:#}");
    assert_deployed(&state, &ids[29], "version 30\n");
    assert_eq!(records(&state).len(), 1);
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
    assert_nothing_deployed(&state);
}

#[test]
fn nonexistent_repository_path_fails_with_exit_3() {
    let missing = tempfile::tempdir().expect("tempdir");
    let repo = missing.path().join("does-not-exist");
    let state = StateDir::new();
    let run = state.pass(repo.to_str().expect("UTF-8"), &[]);
    run.assert_code(3);
    run.assert_one_clean_error();
    assert_nothing_deployed(&state);
}

#[test]
fn http_url_to_closed_port_fails_with_exit_3() {
    let closed = ClosedPort::new();
    let url = format!("http://127.0.0.1:{}/origin/.git", closed.port());
    let state = StateDir::new();
    let run = state.pass(&url, &[]);
    run.assert_code(3);
    run.assert_one_clean_error();
    assert_nothing_deployed(&state);
}

#[test]
fn http_url_to_missing_repository_fails_with_exit_3() {
    let (origin, _first) = origin_with_entrypoint();
    let server = HttpGitServer::start(origin.root());
    let state = StateDir::new();
    let run = state.pass(&server.url("no-such-repo/.git"), &[]);
    run.assert_code(3);
    run.assert_one_clean_error();
    assert_nothing_deployed(&state);
}

#[test]
fn fetch_failure_keeps_deployed_commit_and_status_records_the_error() {
    let (origin, first) = origin_with_entrypoint();
    let server = HttpGitServer::start(origin.root());
    let url = server.url("origin/.git");
    let state = StateDir::new();
    state.pass(&url, &[]).assert_code(0);
    assert_deployed(&state, &first, "version 1\n");

    // The server goes away; the same URL now points at a closed port, which
    // no other test's server can take while this test runs.
    let port = server.addr().port();
    drop(server);
    let _closed = ClosedPort::take(port);
    let run = state.pass(&url, &[]);
    run.assert_code(3);
    let printed = run.assert_error_without_panic();
    assert_deployed(&state, &first, "version 1\n");
    assert_eq!(records(&state).len(), 1, "entrypoint ran:\n{run}");

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
    assert_deployed(&state, &first, "version 1\n");

    let second = origin.commit(&[("app.conf", "version 2\n")], "second");
    let run = state.pass(&plain, &[]);
    run.assert_code(0);
    assert!(run.error_lines().is_empty(), "{run}");
    assert_deployed(&state, &second, "version 2\n");
    let runs = records(&state);
    assert_eq!(runs.len(), 2, "{run}");
    assert_eq!(runs[1].reason, "new");

    let run = state.pass(&file_url, &[]);
    run.assert_code(0);
    assert!(run.stderr.contains("up to date"), "{run}");
    assert_eq!(records(&state).len(), 2, "entrypoint ran again:\n{run}");

    // The other way round, starting with the plain path.
    let other_state = StateDir::new();
    other_state.pass(&plain, &[]).assert_code(0);
    let third = origin.commit(&[("app.conf", "version 3\n")], "third");
    other_state.pass(&file_url, &[]).assert_code(0);
    assert_deployed(&other_state, &third, "version 3\n");
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
    assert_deployed(&state, &main_head, "version 2\n");
    let refs = cache_refs(&state);
    assert!(
        refs.iter().all(|r| r == "refs/remotes/origin/main"),
        "only the main tracking ref is expected: {refs:?}"
    );
    assert!(
        !refs.iter().any(|r| r.contains("other")),
        "cache has a ref for other: {refs:?}"
    );
    assert!(
        !cache_has(&state, &other_only),
        "cache holds a commit only on other"
    );

    // Likewise on a later pass that fetches new commits.
    let main_3 = origin.commit(&[("app.conf", "version 3\n")], "main 3");
    state.pass(&origin.url(), &[]).assert_code(0);
    assert_deployed(&state, &main_3, "version 3\n");
    let refs = cache_refs(&state);
    assert!(
        !refs.iter().any(|r| r.contains("other")),
        "cache has a ref for other: {refs:?}"
    );
    assert!(!cache_has(&state, &other_only));
}

/// The server's cost of a poll that finds nothing new: the ref advertisement only,
/// no fetch negotiation and no pack.
#[test]
fn a_no_op_pass_over_http_stops_after_the_ref_advertisement() {
    let mut origin = Origin::new();
    origin.commit(&[("run.sh", "#!/bin/sh\nexit 0\n")], "first");
    let server = HttpGitServer::start(origin.root());
    let url = server.url("origin/.git");
    let state = StateDir::new();
    state.pass(&url, &[]).assert_code(0);
    let before = server.requests();
    let out = state.pass(&url, &[]);
    out.assert_code(0);
    assert!(out.stderr.contains("up to date"), "{out}");
    // Protocol v2: GET info/refs (capabilities) and POST ls-refs; no fetch command.
    assert_eq!(server.requests() - before, 2, "requests of a no-op pass");
}
