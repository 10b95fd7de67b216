//! Integration tests for fetching over HTTPS: a real nginx terminating TLS
//! with a throw-away CA, in front of fcgiwrap and `git http-backend`
//! ([`crate::common::HttpsGitServer`]), with and without HTTP basic auth.
//!
//! They check that the CA given by `GIT_SSL_CAINFO` is trusted and nothing
//! else is, that credentials in the URL are used but never printed, stored
//! or handed to the entrypoint, and that refused credentials fail the pass
//! instead of waiting for a prompt.

use std::path::Path;

use crate::common::{run, HttpsGitServer, Origin, Run, StateDir};

/// The entrypoint every test commits: records the `GITOPS_REPO` it was given
/// and appends the deployed commit to `runs`.
const ENTRYPOINT: &str = "#!/bin/sh\n\
echo \"$GITOPS_REPO\" > \"$GITOPS_STATE_DIR/repo-seen\"\n\
echo \"$GITOPS_COMMIT\" >> \"$GITOPS_STATE_DIR/runs\"\n";

/// The files [`ENTRYPOINT`] writes to.
const RECORDS: &[&str] = &["runs", "repo-seen"];

const USER: &str = "deployer";
const PASSWORD: &str = "Sup3rS3cretPassw0rd";
const WRONG_PASSWORD: &str = "Wr0ngPassw0rdGuess";

/// Variables that make curl (or gix) trust some CA or skip verification;
/// removed from every run so that only what a test sets counts.
const TLS_VARS: &[&str] = &[
    "GIT_SSL_CAINFO",
    "GIT_SSL_CAPATH",
    "GIT_SSL_NO_VERIFY",
    "GIT_SSL_CERT",
    "GIT_SSL_KEY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "CURL_CA_BUNDLE",
];

/// One pass of `state` against `repo`, trusting the CA `ca` (through
/// `GIT_SSL_CAINFO`) if given and no other TLS settings from the
/// environment.
fn pass(state: &StateDir, repo: &str, ca: Option<&Path>, extra: &[&str]) -> Run {
    let mut cmd = state.pass_cmd(repo, extra);
    for var in TLS_VARS {
        cmd.env_remove(var);
    }
    if let Some(ca) = ca {
        cmd.env("GIT_SSL_CAINFO", ca);
    }
    run(&mut cmd)
}

/// Commits the entrypoint ran for, oldest first.
fn runs(state: &StateDir) -> Vec<String> {
    state.lines("runs")
}

/// The `GITOPS_REPO` the entrypoint saw last, if it ran.
fn repo_seen(state: &StateDir) -> Option<String> {
    std::fs::read_to_string(state.path().join("repo-seen"))
        .ok()
        .map(|text| text.trim_end().to_owned())
}

/// Asserts that nothing was deployed and the entrypoint never ran.
#[track_caller]
fn assert_nothing_deployed(state: &StateDir) {
    state.assert_nothing_deployed(RECORDS);
    assert_eq!(repo_seen(state), None, "entrypoint ran");
}

/// Asserts that none of `secrets` is in state.json or in the output of
/// `status` / `status --json`.
#[track_caller]
fn assert_no_secret_stored(state: &StateDir, secrets: &[&str]) {
    let state_json = state.state_json_text();
    let status = state.all_status_output();
    for secret in secrets {
        assert!(
            !state_json.contains(secret),
            "{secret} in state.json:\n{state_json}"
        );
        assert!(!status.contains(secret), "{secret} in status:\n{status}");
    }
}

/// An origin whose first commit holds the entrypoint.
fn origin_with_entrypoint() -> (Origin, String) {
    let mut origin = Origin::new();
    let first = origin.commit(
        &[("run.sh", ENTRYPOINT), ("app.conf", "version 1\n")],
        "first",
    );
    (origin, first)
}

/// Access-log lines for the repository (one per request).
fn repo_requests(server: &HttpsGitServer) -> Vec<String> {
    server
        .access_log()
        .lines()
        .filter(|line| line.contains("/origin/.git/"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn https_with_trusted_ca_deploys_head_then_noop_then_new_commit() {
    let (mut origin, first) = origin_with_entrypoint();
    let server = HttpsGitServer::start(origin.root());
    let url = server.url("origin/.git");
    let ca = server.ca_cert();
    let state = StateDir::new();

    let run = pass(&state, &url, Some(&ca), &[]);
    assert_eq!(run.code, Some(0), "{run}\n{}", server.error_log());
    state.assert_deployed(&first);
    assert_eq!(runs(&state), std::slice::from_ref(&first), "{run}");
    assert_eq!(repo_seen(&state).as_deref(), Some(url.as_str()));
    assert!(
        !repo_requests(&server).is_empty(),
        "the fetch did not go through nginx: {}",
        server.access_log()
    );

    let run = pass(&state, &url, Some(&ca), &[]);
    run.assert_code(0);
    assert!(run.stderr.contains("up to date"), "{run}");
    state.assert_deployed(&first);
    assert_eq!(runs(&state).len(), 1, "entrypoint ran again:\n{run}");

    let second = origin.commit(&[("app.conf", "version 2\n")], "second");
    let run = pass(&state, &url, Some(&ca), &[]);
    assert_eq!(run.code, Some(0), "{run}\n{}", server.error_log());
    state.assert_deployed(&second);
    assert_eq!(runs(&state), [first, second.clone()], "{run}");
    let status = state.status_json();
    assert_eq!(status["deployed"]["commit"], second.as_str(), "{status:#}");
}

#[test]
fn https_without_trusted_ca_fails_with_exit_3_and_a_certificate_error() {
    let (origin, _first) = origin_with_entrypoint();
    let server = HttpsGitServer::start(origin.root());
    let url = server.url("origin/.git");
    let state = StateDir::new();

    let run = pass(&state, &url, None, &[]);
    run.assert_code(3);
    let line = run.one_error_line().to_ascii_lowercase();
    assert!(
        line.contains("certificate") || line.contains("ssl"),
        "the error should name the certificate problem:\n{run}"
    );
    assert_nothing_deployed(&state);
    assert!(
        repo_requests(&server).is_empty(),
        "a request got past TLS: {}",
        server.access_log()
    );
    let status = state.status_json();
    assert!(status["deployed"]["commit"].is_null(), "{status:#}");
    assert!(
        status["last_pass"]["error"]
            .as_str()
            .is_some_and(|error| !error.is_empty()),
        "{status:#}"
    );
}

#[test]
fn https_without_cainfo_verifies_against_the_system_roots() {
    // Without GIT_SSL_CAINFO the server certificate must still be verified,
    // against the system's trusted roots (which do not hold the test CA):
    // the pass fails because the issuer is unknown, not because TLS has no
    // way to verify anything (which would break every public https remote,
    // e.g. the README's https://git.example.com/...).
    let (origin, _first) = origin_with_entrypoint();
    let server = HttpsGitServer::start(origin.root());
    let url = server.url("origin/.git");
    let state = StateDir::new();

    let run = pass(&state, &url, None, &[]);
    run.assert_code(3);
    let line = run.one_error_line();
    assert!(
        !line.contains("no server certificate verifier"),
        "no trusted roots were configured at all (the system store was not \
         loaded), so no https remote could ever be verified:\n{run}"
    );
    assert!(
        line.to_ascii_lowercase().contains("certificate"),
        "the error should name the certificate problem:\n{run}"
    );
    assert_nothing_deployed(&state);
}

#[test]
fn https_with_another_ca_trusted_is_refused_as_unknown_issuer() {
    // Unlike the test above, a verifier exists here: this checks that the
    // server certificate is really verified against GIT_SSL_CAINFO.
    let (origin, _first) = origin_with_entrypoint();
    let server = HttpsGitServer::start(origin.root());
    let stranger = HttpsGitServer::start(origin.root());
    let url = server.url("origin/.git");
    let state = StateDir::new();

    let run = pass(&state, &url, Some(&stranger.ca_cert()), &[]);
    run.assert_code(3);
    let line = run.one_error_line().to_ascii_lowercase();
    assert!(
        line.contains("certificate"),
        "the error should name the certificate problem:\n{run}"
    );
    assert_nothing_deployed(&state);
    assert!(
        repo_requests(&server).is_empty(),
        "a request got past TLS: {}",
        server.access_log()
    );
}

#[test]
fn https_basic_auth_deploys_and_never_reveals_the_credentials() {
    let (origin, first) = origin_with_entrypoint();
    let server = HttpsGitServer::with_basic_auth(origin.root(), USER, PASSWORD);
    let url = server.url_with_credentials(USER, PASSWORD, "origin/.git");
    let ca = server.ca_cert();
    let host_port = format!("127.0.0.1:{}", server.port());
    let state = StateDir::new();

    let run = pass(&state, &url, Some(&ca), &["-v"]);
    assert_eq!(run.code, Some(0), "{run}\n{}", server.error_log());
    state.assert_deployed(&first);
    assert_eq!(runs(&state), std::slice::from_ref(&first), "{run}");
    let requests = repo_requests(&server);
    assert!(
        requests
            .iter()
            .any(|line| line.contains(" 200 ") && line.contains(&format!("user=\"{USER}\""))),
        "no authenticated request in the access log:\n{}",
        server.access_log()
    );

    let secrets = [USER, PASSWORD];
    run.assert_no_secret(&secrets);
    assert_no_secret_stored(&state, &secrets);

    let seen = repo_seen(&state).expect("the entrypoint recorded GITOPS_REPO");
    for secret in secrets {
        assert!(!seen.contains(secret), "{secret} in GITOPS_REPO {seen:?}");
    }
    assert!(seen.starts_with("https://"), "GITOPS_REPO {seen:?}");
    assert!(
        seen.contains(&host_port),
        "GITOPS_REPO {seen:?} should name {host_port}"
    );

    let status = state.status_json();
    assert_eq!(status["deployed"]["commit"], first.as_str(), "{status:#}");
    let repo = status["repo"].as_str().unwrap_or_default();
    assert!(repo.contains(&host_port), "status repo {repo:?}");

    // A second pass (fetch of an up-to-date branch) leaks nothing either.
    let run = pass(&state, &url, Some(&ca), &["-v"]);
    run.assert_code(0);
    run.assert_no_secret(&secrets);
    assert_no_secret_stored(&state, &secrets);
}

#[test]
fn https_basic_auth_with_wrong_password_fails_with_exit_3_without_prompting() {
    let (origin, _first) = origin_with_entrypoint();
    let server = HttpsGitServer::with_basic_auth(origin.root(), USER, PASSWORD);
    let url = server.url_with_credentials(USER, WRONG_PASSWORD, "origin/.git");
    let ca = server.ca_cert();
    let state = StateDir::new();

    let run = pass(&state, &url, Some(&ca), &["-v"]);
    run.assert_code(3);
    run.one_error_line();

    let requests = repo_requests(&server);
    let with_credentials: Vec<&String> = requests
        .iter()
        .filter(|line| line.contains(&format!("user=\"{USER}\"")) && line.contains("auth=Basic"))
        .collect();
    assert!(
        !with_credentials.is_empty(),
        "no request carried the credentials:\n{}",
        server.access_log()
    );
    assert!(
        with_credentials.iter().all(|line| line.contains(" 401 ")),
        "the wrong password was not answered 401:\n{}",
        server.access_log()
    );

    let secrets = [WRONG_PASSWORD];
    run.assert_no_secret(&secrets);
    assert_no_secret_stored(&state, &secrets);
    assert_nothing_deployed(&state);
}

#[test]
fn https_without_credentials_to_auth_server_fails_with_exit_3_without_prompting() {
    let (origin, _first) = origin_with_entrypoint();
    let server = HttpsGitServer::with_basic_auth(origin.root(), USER, PASSWORD);
    let url = server.url("origin/.git");
    let ca = server.ca_cert();
    let state = StateDir::new();

    let run = pass(&state, &url, Some(&ca), &[]);
    run.assert_code(3);
    run.one_error_line();
    let requests = repo_requests(&server);
    assert!(
        !requests.is_empty() && requests.iter().all(|line| line.contains(" 401 ")),
        "expected only 401 answers:\n{}",
        server.access_log()
    );
    assert_nothing_deployed(&state);
}

#[test]
fn https_missing_credentials_error_is_one_clean_line() {
    // Like every other fetch failure, the error is one line: no unprefixed
    // continuation lines on stderr, no line breaks in state.json's error.
    let (origin, _first) = origin_with_entrypoint();
    let server = HttpsGitServer::with_basic_auth(origin.root(), USER, PASSWORD);
    let url = server.url("origin/.git");
    let ca = server.ca_cert();
    let state = StateDir::new();

    let run = pass(&state, &url, Some(&ca), &[]);
    run.assert_code(3);
    run.one_error_line();
    let unprefixed: Vec<&str> = run
        .stderr
        .lines()
        .filter(|line| !line.starts_with("gitops-run: "))
        .collect();
    let status = state.status_json();
    let error = status["last_pass"]["error"].as_str().unwrap_or_default();
    assert!(
        unprefixed.is_empty() && !error.is_empty() && !error.contains('\n'),
        "the error is not one line: stderr has lines without the \
         `gitops-run: ` prefix {unprefixed:?}; last_pass.error is {error:?}:\n{run}"
    );
}
