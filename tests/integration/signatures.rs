//! Commit signature verification end to end (issue 12): commits signed by the
//! real `git commit -S` with keys made by `ssh-keygen` (ed25519, RSA) and GnuPG,
//! forged and spliced commit objects written with `git hash-object`, and what
//! the binary does with them: exit codes, the one-line log of a refusal,
//! `state.json`, `status`, `plan`, `rollback`, metrics and webhooks, and that a
//! refusal changes nothing on the host.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use tempfile::TempDir;

use crate::common::{bin, git, git_env, run, Host, Receiver, Run, StateDir};

/// Exit code of a pass whose new commits are not all signed by trusted keys.
const UNVERIFIED: i32 = 9;
/// Exit code of a configuration error (a key file that cannot be used).
const USAGE: i32 = 2;
/// Exit code of a refused history rewrite.
const REFUSED: i32 = 4;
/// Exit code of `plan` when there is something to apply.
const PENDING: i32 = 2;

/// The entrypoint: appends the commit it runs for to `runs` in the state
/// directory, so a test sees whether (and for what) it ran.
const RUN_SH: &str = "#!/bin/sh\necho \"$GITOPS_COMMIT\" >> \"$GITOPS_STATE_DIR/runs\"\n";
/// The file in the state directory [`RUN_SH`] writes.
const RUNS: &str = "runs";

const ALICE: &str = "alice@example.test";
const BOB: &str = "bob@example.test";
const CAROL: &str = "carol@example.test";
const ALICE_PGP: &str = "Alice Example <alice@example.test>";

/// How long to wait for a webhook that a finished pass has sent.
const WEBHOOK_WAIT: Duration = Duration::from_secs(5);

/// The 12-digit abbreviation the binary prints.
fn short(commit: &str) -> &str {
    &commit[..12]
}

/// A path as an argument.
fn arg(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// How long a key tool (ssh-keygen, gpg, git with input) may take before the
/// test fails instead of hanging.
const TOOL_DEADLINE: Duration = Duration::from_secs(60);

/// Runs `cmd` with `input` on stdin and returns its stdout; fails the test,
/// with the command's stderr, when it does not succeed or outlives
/// [`TOOL_DEADLINE`] (then it is killed).
#[track_caller]
fn exec(cmd: &mut Command, input: &[u8]) -> Vec<u8> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|err| panic!("failed to start {cmd:?}: {err}"));
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let data = input.to_vec();
    thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let collect = |pipe: Option<Box<dyn Read + Send>>| {
        let (sender, receiver) = mpsc::channel();
        if let Some(mut pipe) = pipe {
            thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = pipe.read_to_end(&mut bytes);
                let _ = sender.send(bytes);
            });
        }
        receiver
    };
    let stdout = collect(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = collect(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + TOOL_DEADLINE;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{cmd:?} did not end within {TOOL_DEADLINE:?}; killed it");
            }
        }
    };
    let read = |receiver: mpsc::Receiver<Vec<u8>>, name: &str| {
        receiver
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("{cmd:?} ended, but a process it left holds its {name}"))
    };
    let out = read(stdout, "stdout");
    let err = read(stderr, "stderr");
    assert!(
        status.success(),
        "{cmd:?} failed ({status}):\n{}",
        String::from_utf8_lossy(&err)
    );
    out
}

/// `git ARGS` in `dir` (isolated like every git the harness runs) with `input`
/// on stdin; its stdout, trimmed.
#[track_caller]
fn git_input(dir: &Path, args: &[&str], input: &[u8]) -> String {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir).args(args);
    git_env(&mut cmd);
    String::from_utf8_lossy(&exec(&mut cmd, input))
        .trim()
        .to_owned()
}

// ---------------------------------------------------------------------------
// Keys: ssh-keygen and GnuPG in a directory of their own
// ---------------------------------------------------------------------------

/// An SSH key pair made by `ssh-keygen`.
struct SshKey {
    private: PathBuf,
    /// `type base64`, as an allowed-signers line names the key.
    public: String,
    /// `SHA256:...`, as `ssh-keygen -l` prints it.
    fingerprint: String,
}

impl SshKey {
    /// An allowed-signers line for `principal`, with `options` ("" for none).
    fn line(&self, principal: &str, options: &str) -> String {
        if options.is_empty() {
            format!("{principal} {}", self.public)
        } else {
            format!("{principal} {options} {}", self.public)
        }
    }
}

/// A temporary directory for keys, allowed-signers files and a GnuPG home.
/// Nothing here reads the developer's `~/.ssh` or `~/.gnupg`.
struct Keys {
    dir: TempDir,
    gnupghome: PathBuf,
}

impl Keys {
    fn new() -> Keys {
        let dir = tempfile::Builder::new()
            .prefix("gitops-run-keys-")
            .tempdir()
            .expect("create the keys directory");
        let gnupghome = dir.path().join("gnupg");
        fs::create_dir(&gnupghome).expect("create the GnuPG home");
        fs::set_permissions(&gnupghome, fs::Permissions::from_mode(0o700))
            .expect("chmod the GnuPG home");
        Keys { dir, gnupghome }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A new key `ssh-keygen -t kind` (no passphrase) named after `name`.
    fn ssh(&self, name: &str, kind: &str) -> SshKey {
        let private = self.path().join(format!("{name}-{kind}"));
        let public_file = self.path().join(format!("{name}-{kind}.pub"));
        let mut keygen = Command::new("ssh-keygen");
        git_env(&mut keygen);
        keygen
            .args([
                "-q",
                "-t",
                kind,
                "-N",
                "",
                "-C",
                &format!("{name}@example.test"),
            ])
            .arg("-f")
            .arg(&private);
        exec(&mut keygen, b"");
        let text = fs::read_to_string(&public_file).expect("read the public key");
        let public = text
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let mut list = Command::new("ssh-keygen");
        git_env(&mut list);
        list.args(["-l", "-E", "sha256", "-f"]).arg(&public_file);
        let listed = String::from_utf8_lossy(&exec(&mut list, b"")).into_owned();
        let fingerprint = listed
            .split_whitespace()
            .nth(1)
            .expect("a fingerprint from ssh-keygen -l")
            .to_owned();
        assert!(fingerprint.starts_with("SHA256:"), "{listed}");
        SshKey {
            private,
            public,
            fingerprint,
        }
    }

    /// (Re)writes the allowed-signers file with `lines` and returns its path.
    fn allowed_signers(&self, lines: &[String]) -> PathBuf {
        let path = self.path().join("allowed_signers");
        fs::write(&path, lines.join("\n") + "\n").expect("write allowed_signers");
        path
    }

    /// `gpg` in this GnuPG home, in batch mode, without passphrases.
    fn gpg_cmd(&self) -> Command {
        let mut cmd = Command::new("gpg");
        git_env(&mut cmd);
        cmd.arg("--homedir").arg(&self.gnupghome).args([
            "--batch",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
        ]);
        cmd
    }

    fn gpg(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&exec(self.gpg_cmd().args(args), b"")).into_owned()
    }

    /// A new ed25519 signing key for `uid`, made at `created` (seconds since
    /// the epoch; now when `None`); its fingerprint as gpg prints it.
    fn gpg_key(&self, uid: &str, created: Option<i64>) -> String {
        let faked = created.map(|t| format!("{t}!"));
        let mut args = Vec::new();
        if let Some(t) = faked.as_deref() {
            args.extend(["--faked-system-time", t]);
        }
        args.extend(["--quick-gen-key", uid, "ed25519", "sign", "never"]);
        self.gpg(&args);
        let listing = self.gpg(&["--with-colons", "--list-keys", uid]);
        listing
            .lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .expect("a fingerprint in gpg --with-colons")
            .to_owned()
    }

    /// `gpg --armor --export FPR`.
    fn gpg_export(&self, fpr: &str) -> Vec<u8> {
        let key = exec(self.gpg_cmd().args(["--armor", "--export", fpr]), b"");
        assert!(!key.is_empty(), "gpg exported nothing for {fpr}");
        key
    }

    /// The revocation certificate gpg made with key `fpr`, made importable
    /// (gpg guards it with a leading `:`).
    fn gpg_revocation(&self, fpr: &str) -> Vec<u8> {
        let path = self
            .gnupghome
            .join("openpgp-revocs.d")
            .join(format!("{fpr}.rev"));
        fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("read {}: {err}", path.display()))
            .replacen(
                ":-----BEGIN PGP PUBLIC KEY BLOCK-----",
                "-----BEGIN PGP PUBLIC KEY BLOCK-----",
                1,
            )
            .into_bytes()
    }

    /// A script running gpg in this home, for git's `gpg.program`.
    fn gpg_program(&self) -> PathBuf {
        let path = self.path().join("gpg-here");
        fs::write(
            &path,
            format!(
                "#!/bin/sh\nexec gpg --homedir '{}' --batch --pinentry-mode loopback --passphrase '' \"$@\"\n",
                self.gnupghome.display()
            ),
        )
        .expect("write the gpg wrapper");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod the wrapper");
        path
    }

    /// The directory `name` holding exactly `files` (created or emptied first).
    fn keys_dir(&self, name: &str, files: &[(&str, &[u8])]) -> PathBuf {
        let dir = self.path().join(name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).expect("create the keys directory");
        for (file, bytes) in files {
            fs::write(dir.join(file), bytes).expect("write a key file");
        }
        dir
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        // The agent gpg started for this home; failures do not matter.
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(&self.gnupghome)
            .args(["--kill", "gpg-agent"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

// ---------------------------------------------------------------------------
// Signing in the origin: git's own configuration, so `Origin::commit` signs
// ---------------------------------------------------------------------------

fn set_config(h: &Host, pairs: &[(&str, &str)]) {
    for (key, value) in pairs {
        git(h.origin.path(), &["config", key, value]);
    }
}

/// From now on, commits in the origin are signed by `git commit -S` with `key`.
fn sign_with_ssh(h: &Host, key: &SshKey) {
    set_config(
        h,
        &[
            ("gpg.format", "ssh"),
            ("user.signingkey", arg(&key.private)),
            ("commit.gpgsign", "true"),
        ],
    );
}

/// From now on, commits in the origin are signed with the OpenPGP key `fpr`.
fn sign_with_gpg(h: &Host, keys: &Keys, fpr: &str) {
    let program = keys.gpg_program();
    set_config(
        h,
        &[
            ("gpg.format", "openpgp"),
            ("gpg.program", arg(&program)),
            ("user.signingkey", fpr),
            ("commit.gpgsign", "true"),
        ],
    );
}

/// From now on, commits in the origin are not signed.
fn stop_signing(h: &Host) {
    set_config(h, &[("commit.gpgsign", "false")]);
}

/// The commit object `id` of the origin, as `git cat-file commit` prints it.
fn raw_commit(h: &Host, id: &str) -> String {
    git(h.origin.path(), &["cat-file", "commit", id]) + "\n"
}

/// Whether commit `id` carries a signature at all.
fn is_signed(h: &Host, id: &str) -> bool {
    raw_commit(h, id).contains("\ngpgsig ")
}

/// A commit on the origin's current branch changing `version` to `subject`.
fn change(h: &mut Host, subject: &str) -> String {
    h.origin.commit(&[("version", subject)], subject)
}

/// Stores `raw` as a commit object in the origin and points `main` at it, as a
/// push of a hand-made commit would.
fn push_raw_commit(h: &Host, raw: &[u8]) -> String {
    let id = git_input(
        h.origin.path(),
        &["hash-object", "-t", "commit", "-w", "--stdin"],
        raw,
    );
    git(h.origin.path(), &["update-ref", "refs/heads/main", &id]);
    id
}

/// The commit object `raw` (unsigned) with a `gpgsig` header carrying
/// `armored` after its other headers, where git puts it.
fn splice_signature(raw: &str, armored: &str) -> String {
    let (headers, message) = raw.split_once("\n\n").expect("a commit has a message");
    let mut out = format!("{headers}\ngpgsig");
    for line in armored.trim_end().lines() {
        out.push(' ');
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out.push_str(message);
    out
}

/// A host whose origin's first commit (the entrypoint) is signed with `key`.
fn ssh_host(key: &SshKey) -> (Host, String) {
    let mut h = Host::new();
    sign_with_ssh(&h, key);
    let first = h.origin.commit(&[("run.sh", RUN_SH)], "first");
    assert!(is_signed(&h, &first));
    (h, first)
}

// ---------------------------------------------------------------------------
// What a test checks
// ---------------------------------------------------------------------------

/// What a pass may change on the host: `current`, the trees, the entrypoint's
/// runs.
#[derive(Debug, PartialEq, Eq)]
struct Deployment {
    current: Option<String>,
    trees: Vec<String>,
    runs: Vec<String>,
}

fn deployment(state: &StateDir) -> Deployment {
    let mut trees = state.trees();
    trees.sort();
    Deployment {
        current: state.current(),
        trees,
        runs: state.lines(RUNS),
    }
}

/// Asserts that `run` refused the branch for a signature: exit 9 and one log
/// line naming `commit`, its `subject` and `reason`. Returns that line.
#[track_caller]
fn assert_refused<'a>(run: &'a Run, commit: &str, subject: &str, reason: &str) -> &'a str {
    run.assert_code(UNVERIFIED);
    run.assert_no_panic();
    let quoted = format!("{subject:?}");
    let why = format!(": {reason}: ");
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains(short(commit)) && l.contains(&quoted) && l.contains(&why))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "one log line should name {} {quoted} and the reason {reason}:\n{run}",
        short(commit)
    );
    lines[0]
}

/// Asserts that `status --json` and `state.json` record the refusal of `tip`
/// for `commit` with `reason`; returns the `unverified` record.
#[track_caller]
fn assert_recorded(state: &StateDir, tip: &str, commit: &str, reason: &str) -> Value {
    let status = state.status_json();
    let u = status["unverified"].clone();
    assert_eq!(u["tip"], tip, "{status:#}");
    assert_eq!(u["commit"], commit, "{status:#}");
    assert_eq!(u["reason"], reason, "{status:#}");
    assert_eq!(status["last_pass"]["outcome"], "unverified", "{status:#}");
    assert_eq!(status["last_pass"]["exit_code"], UNVERIFIED, "{status:#}");
    // Not a failure: nothing is retried on a backoff.
    assert_eq!(status["consecutive_failures"], 0, "{status:#}");
    assert_eq!(status["next_retry_at"], Value::Null, "{status:#}");
    assert_eq!(
        state.state_json()["unverified"],
        u,
        "state.json and status agree"
    );
    u
}

/// Asserts that `status --json` says `commit` is deployed, signed by
/// `signer` with the key `fingerprint` of `kind`.
#[track_caller]
fn assert_signed_by(state: &StateDir, commit: &str, kind: &str, signer: &str, fingerprint: &str) {
    let status = state.status_json();
    assert_eq!(status["deployed"]["commit"], commit, "{status:#}");
    let s = &status["deployed"]["signed_by"];
    assert_eq!(s["kind"], kind, "{status:#}");
    assert_eq!(s["signer"], signer, "{status:#}");
    assert_eq!(s["fingerprint"], fingerprint, "{status:#}");
    assert_eq!(status["unverified"], Value::Null, "{status:#}");
}

/// A fresh state directory deploying from `h`'s origin: a second host.
fn second_host_pass(state: &StateDir, h: &Host, args: &[&str]) -> Run {
    state.pass(&h.origin.url(), args)
}

// ---------------------------------------------------------------------------
// 1. Good SSH signatures (ed25519, RSA)
// ---------------------------------------------------------------------------

#[test]
fn ssh_ed25519_and_rsa_signed_commits_deploy_and_status_names_the_signer() {
    let keys = Keys::new();
    let alice = keys.ssh("alice", "ed25519");
    let bob = keys.ssh("bob", "rsa");
    let signers =
        keys.allowed_signers(&[alice.line(ALICE, ""), bob.line(BOB, "namespaces=\"git\"")]);
    let (mut h, first) = ssh_host(&alice);
    let verify = ["--allowed-signers", arg(&signers)];

    let out = h.pass(&verify);
    out.assert_code(0);
    h.state.assert_deployed(&first);
    assert!(
        out.stderr.lines().any(|l| l.contains("first deployment")
            && l.contains("only the tip")
            && l.contains(short(&first))),
        "a first deployment says that only the tip is verified:\n{out}"
    );
    assert_signed_by(&h.state, &first, "ssh", ALICE, &alice.fingerprint);
    let status = h.state.status_json();
    let mode = status["verification"].as_str().expect("verification");
    assert!(
        mode.starts_with("all") && mode.contains(arg(&signers)),
        "{status:#}"
    );
    let text = h.state.status_text().stdout;
    assert!(
        text.lines().any(|l| l.starts_with("signed by:")
            && l.contains(ALICE)
            && l.contains(&alice.fingerprint)),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("verification:") && l.contains("all (")),
        "{text}"
    );

    // RSA: git signs with ssh-keygen, which makes rsa-sha2-512 signatures.
    sign_with_ssh(&h, &bob);
    let second = change(&mut h, "signed with RSA");
    assert!(is_signed(&h, &second));
    let out = h.pass(&verify);
    out.assert_code(0);
    h.state.assert_deployed(&second);
    assert_signed_by(&h.state, &second, "ssh", BOB, &bob.fingerprint);

    let third = change(&mut h, "signed with RSA, tip mode");
    let out = h.pass(&["--allowed-signers", arg(&signers), "--verify", "tip"]);
    out.assert_code(0);
    assert_signed_by(&h.state, &third, "ssh", BOB, &bob.fingerprint);
    let status = h.state.status_json();
    let mode = status["verification"].as_str().expect("verification");
    assert!(mode.starts_with("tip"), "{status:#}");
    assert_eq!(h.state.lines(RUNS), [first, second, third]);
}

// ---------------------------------------------------------------------------
// 2. Good OpenPGP signatures
// ---------------------------------------------------------------------------

#[test]
fn openpgp_signed_commit_deploys_and_status_names_the_user_id() {
    let keys = Keys::new();
    let fpr = keys.gpg_key(ALICE_PGP, None);
    let trusted = keys.keys_dir("trusted", &[("alice.asc", &keys.gpg_export(&fpr))]);
    let mut h = Host::new();
    sign_with_gpg(&h, &keys, &fpr);
    let first = h.origin.commit(&[("run.sh", RUN_SH)], "first");
    assert!(raw_commit(&h, &first).contains("-----BEGIN PGP SIGNATURE-----"));

    let out = h.pass(&["--trusted-keys", arg(&trusted)]);
    out.assert_code(0);
    h.state.assert_deployed(&first);
    assert_signed_by(&h.state, &first, "openpgp", ALICE_PGP, &fpr);
    let text = h.state.status_text().stdout;
    assert!(
        text.lines()
            .any(|l| l.starts_with("signed by:") && l.contains(ALICE_PGP) && l.contains(&fpr)),
        "{text}"
    );

    // Both kinds of keys at once; an SSH-signed commit on top.
    let bob = keys.ssh("bob", "ed25519");
    let signers = keys.allowed_signers(&[bob.line(BOB, "")]);
    sign_with_ssh(&h, &bob);
    let second = change(&mut h, "signed with SSH");
    let out = h.pass(&[
        "--trusted-keys",
        arg(&trusted),
        "--allowed-signers",
        arg(&signers),
    ]);
    out.assert_code(0);
    assert_signed_by(&h.state, &second, "ssh", BOB, &bob.fingerprint);
    let status = h.state.status_json();
    let mode = status["verification"].as_str().expect("verification");
    assert!(
        mode.contains(arg(&signers)) && mode.contains(arg(&trusted)),
        "{status:#}"
    );
    assert_eq!(h.state.lines(RUNS), [first, second]);
}

// ---------------------------------------------------------------------------
// 3. An unsigned tip: refused, recorded, not checked again until it moves
// ---------------------------------------------------------------------------

#[test]
fn unsigned_tip_is_refused_recorded_and_not_checked_again_until_the_branch_moves() {
    let keys = Keys::new();
    let alice = keys.ssh("alice", "ed25519");
    let signers = keys.allowed_signers(&[alice.line(ALICE, "")]);
    let (mut h, _) = ssh_host(&alice);
    let verify = ["--allowed-signers", arg(&signers)];
    h.pass(&verify).assert_code(0);
    let before = deployment(&h.state);

    stop_signing(&h);
    let unsigned = change(&mut h, "unsigned change");
    let metrics = h.state.dir().join("gitops-run.prom");
    let out = h.pass(&[
        "--allowed-signers",
        arg(&signers),
        "--metrics-file",
        arg(&metrics),
        "-v",
    ]);
    let line = assert_refused(&out, &unsigned, "unsigned change", "unsigned");
    assert!(line.contains("refused"), "{out}");
    assert!(
        out.stderr.contains("verifying the signatures"),
        "the first refusing pass verifies:\n{out}"
    );
    assert_eq!(deployment(&h.state), before, "a refusal changes nothing");
    let u = assert_recorded(&h.state, &unsigned, &unsigned, "unsigned");
    assert_eq!(u["subject"], "unsigned change");
    assert_eq!(u["fingerprint"], Value::Null);
    let text = h.state.status_text().stdout;
    assert!(
        text.lines().any(|l| l.starts_with("REFUSED")
            && l.contains(short(&unsigned))
            && l.contains("unsigned")),
        "{text}"
    );
    let prom = fs::read_to_string(&metrics).expect("the metrics file");
    assert!(
        prom.lines().any(|l| l.starts_with("gitops_run_refused{")
            && l.contains("reason=\"signature\"")
            && l.ends_with(" 1")),
        "{prom}"
    );

    // Neither the next pass nor --once checks it again or writes state.json.
    let state_file = h.state.path().join("state.json");
    let recorded = h.state.state_json_text();
    let mtime = |p: &Path| -> SystemTime {
        fs::metadata(p)
            .and_then(|m| m.modified())
            .expect("mtime of state.json")
    };
    let written = mtime(&state_file);
    for extra in [None, Some("--once")] {
        let mut args = vec!["--allowed-signers", arg(&signers), "-v"];
        args.extend(extra);
        let out = h.pass(&args);
        let line = assert_refused(&out, &unsigned, "unsigned change", "unsigned");
        assert!(line.contains("still refusing"), "{out}");
        assert!(
            !out.stderr.contains("verifying the signatures"),
            "the verdict stands without a new check ({extra:?}):\n{out}"
        );
        assert_eq!(h.state.state_json_text(), recorded, "{extra:?}");
        assert_eq!(
            mtime(&state_file),
            written,
            "state.json rewritten ({extra:?})"
        );
        assert_eq!(deployment(&h.state), before, "{extra:?}");
    }

    // A signed commit on top: every commit the tip brings must be signed.
    sign_with_ssh(&h, &alice);
    let tip = change(&mut h, "signed on top");
    let out = h.pass(&verify);
    let line = assert_refused(&out, &unsigned, "unsigned change", "unsigned");
    assert!(line.contains(short(&tip)), "names the tip too: {line}");
    assert_recorded(&h.state, &tip, &unsigned, "unsigned");
    assert_eq!(deployment(&h.state), before);
}

#[test]
fn verify_tip_deploys_a_signed_tip_over_an_unsigned_commit_that_verify_all_refuses() {
    let keys = Keys::new();
    let alice = keys.ssh("alice", "ed25519");
    let signers = keys.allowed_signers(&[alice.line(ALICE, "")]);
    let (mut h, _) = ssh_host(&alice);
    let tip_host = StateDir::new();
    let all = ["--allowed-signers", arg(&signers), "--verify", "all"];
    let tip = ["--allowed-signers", arg(&signers), "--verify", "tip"];
    h.pass(&all).assert_code(0);
    second_host_pass(&tip_host, &h, &tip).assert_code(0);

    stop_signing(&h);
    let unsigned = change(&mut h, "unsigned middle");
    sign_with_ssh(&h, &alice);
    let signed_tip = change(&mut h, "signed tip");

    let before = deployment(&h.state);
    let out = h.pass(&all);
    assert_refused(&out, &unsigned, "unsigned middle", "unsigned");
    assert_recorded(&h.state, &signed_tip, &unsigned, "unsigned");
    assert_eq!(deployment(&h.state), before);

    let out = second_host_pass(&tip_host, &h, &tip);
    out.assert_code(0);
    tip_host.assert_deployed(&signed_tip);
    assert_signed_by(&tip_host, &signed_tip, "ssh", ALICE, &alice.fingerprint);
}

/// The verdict of `--verify all` must not outlive it: a host switched to
/// `--verify tip` judges the refused tip again by the new mode.
#[test]
fn switching_from_verify_all_to_verify_tip_checks_a_refused_tip_again() {
    let keys = Keys::new();
    let alice = keys.ssh("alice", "ed25519");
    let signers = keys.allowed_signers(&[alice.line(ALICE, "")]);
    let (mut h, _) = ssh_host(&alice);
    h.pass(&["--allowed-signers", arg(&signers)]).assert_code(0);
    stop_signing(&h);
    let unsigned = change(&mut h, "unsigned middle");
    sign_with_ssh(&h, &alice);
    let signed_tip = change(&mut h, "signed tip");
    let out = h.pass(&["--allowed-signers", arg(&signers), "--verify", "all"]);
    assert_refused(&out, &unsigned, "unsigned middle", "unsigned");

    let out = h.pass(&["--allowed-signers", arg(&signers), "--verify", "tip"]);
    assert_eq!(
        out.code,
        Some(0),
        "with --verify tip the signed tip is deployable; a refusal made under --verify all \
         must not stand:\n{out}"
    );
    h.state.assert_deployed(&signed_tip);
}

// ---------------------------------------------------------------------------
// 4. Merges: every parent's commits are checked
// ---------------------------------------------------------------------------

#[test]
fn merge_whose_second_parent_brings_an_unsigned_commit_is_refused_naming_it() {
    let keys = Keys::new();
    let alice = keys.ssh("alice", "ed25519");
    let signers = keys.allowed_signers(&[alice.line(ALICE, "")]);
    let (mut h, _) = ssh_host(&alice);
    let verify = ["--allowed-signers", arg(&signers)];
    h.pass(&verify).assert_code(0);
    let before = deployment(&h.state);

    let work = h.origin.path().to_path_buf();
    git(&work, &["checkout", "-q", "-b", "feature"]);
    h.origin.commit(&[("feature", "1")], "feature signed 1");
    stop_signing(&h);
    let unsigned = h.origin.commit(&[("feature", "2")], "feature unsigned");
    sign_with_ssh(&h, &alice);
    h.origin.commit(&[("feature", "3")], "feature signed 3");
    git(&work, &["checkout", "-q", "main"]);
    let main_side = change(&mut h, "main signed");
    git(
        &work,
        &["merge", "-q", "--no-ff", "feature", "-m", "merge feature"],
    );
    let merge = h.origin.head();
    assert!(is_signed(&h, &merge) && is_signed(&h, &main_side));
    assert_eq!(
        git(&work, &["rev-parse", "HEAD^1"]),
        main_side,
        "the first parent is signed: only the second brings the unsigned commit"
    );

    let out = h.pass(&verify);
    let line = assert_refused(&out, &unsigned, "feature unsigned", "unsigned");
    assert!(line.contains(short(&merge)), "{line}");
    assert_recorded(&h.state, &merge, &unsigned, "unsigned");
    assert_eq!(deployment(&h.state), before);
}

// ---------------------------------------------------------------------------
// 5. SSH keys that may not sign this commit
// ---------------------------------------------------------------------------

#[test]
fn ssh_signatures_by_unknown_expired_not_yet_valid_or_other_namespace_keys_are_refused() {
    let keys = Keys::new();
    let alice = keys.ssh("alice", "ed25519");
    let carol = keys.ssh("carol", "ed25519");
    keys.allowed_signers(&[alice.line(ALICE, "")]);
    let (mut h, _) = ssh_host(&alice);
    let signers = keys.path().join("allowed_signers");
    let verify = ["--allowed-signers", arg(&signers)];
    h.pass(&verify).assert_code(0);
    let before = deployment(&h.state);

    // The origin's second commit: committed 2026-01-01T00:01:00Z.
    sign_with_ssh(&h, &carol);
    let tip = change(&mut h, "signed by carol");
    assert_eq!(
        git(h.origin.path(), &["log", "-1", "--format=%cI", &tip]),
        "2026-01-01T00:01:00Z"
    );
    let cases = [
        (String::new(), "unknown-key"),
        (
            carol.line(CAROL, "valid-before=\"20251231Z\""),
            "key-expired",
        ),
        (
            carol.line(CAROL, "valid-after=\"20260201Z\""),
            "key-not-yet-valid",
        ),
        (carol.line(CAROL, "namespaces=\"file\""), "wrong-namespace"),
    ];
    for (carol_line, reason) in cases {
        let mut lines = vec![alice.line(ALICE, "")];
        if !carol_line.is_empty() {
            lines.push(carol_line.clone());
        }
        keys.allowed_signers(&lines);
        let out = h.pass(&verify);
        assert_refused(&out, &tip, "signed by carol", reason);
        let u = assert_recorded(&h.state, &tip, &tip, reason);
        assert_eq!(
            u["fingerprint"], carol.fingerprint,
            "the key the signature names ({carol_line:?})"
        );
        assert_eq!(deployment(&h.state), before, "{carol_line:?}");
    }

    // Within its validity and for git: the same commit deploys.
    keys.allowed_signers(&[
        alice.line(ALICE, ""),
        carol.line(
            CAROL,
            "namespaces=\"file,git\",valid-after=\"20251231Z\",valid-before=\"20260102Z\"",
        ),
    ]);
    h.pass(&verify).assert_code(0);
    assert_signed_by(&h.state, &tip, "ssh", CAROL, &carol.fingerprint);
}

/// `ssh-keygen -Y sign -n file` over the commit's payload, spliced into the
/// commit as its `gpgsig`: a real signature by a trusted key, made for files.
#[test]
fn ssh_signature_made_for_the_file_namespace_and_spliced_into_a_commit_is_refused() {
    let keys = Keys::new();
    let alice = keys.ssh("alice", "ed25519");
    let signers = keys.allowed_signers(&[alice.line(ALICE, "")]);
    let (mut h, _) = ssh_host(&alice);
    let verify = ["--allowed-signers", arg(&signers)];
    h.pass(&verify).assert_code(0);
    let before = deployment(&h.state);

    stop_signing(&h);
    let unsigned = change(&mut h, "spliced");
    let payload = raw_commit(&h, &unsigned);
    let sign = |namespace: &str| -> String {
        let mut cmd = Command::new("ssh-keygen");
        git_env(&mut cmd);
        cmd.args(["-q", "-Y", "sign", "-n", namespace, "-f"])
            .arg(&alice.private);
        String::from_utf8(exec(&mut cmd, payload.as_bytes())).expect("armored signature")
    };
    let git_verifies = |id: &str| {
        run(&mut crate::common::git_command(
            h.origin.path(),
            &[
                "-c",
                &format!("gpg.ssh.allowedSignersFile={}", arg(&signers)),
                "verify-commit",
                id,
            ],
        ))
        .success()
    };

    let for_files = push_raw_commit(&h, splice_signature(&payload, &sign("file")).as_bytes());
    assert!(!git_verifies(&for_files), "git refuses it too");
    let out = h.pass(&verify);
    assert_refused(&out, &for_files, "spliced", "wrong-namespace");
    let u = assert_recorded(&h.state, &for_files, &for_files, "wrong-namespace");
    assert_eq!(u["fingerprint"], alice.fingerprint);
    assert_eq!(deployment(&h.state), before);

    // The same splice with namespace git is a good signature: the splice is sound.
    let for_git = push_raw_commit(&h, splice_signature(&payload, &sign("git")).as_bytes());
    assert!(git_verifies(&for_git));
    h.pass(&verify).assert_code(0);
    assert_signed_by(&h.state, &for_git, "ssh", ALICE, &alice.fingerprint);
}

// ---------------------------------------------------------------------------
// 6. A signed commit rewritten with other content and the old signature
// ---------------------------------------------------------------------------

#[test]
fn signed_commit_rewritten_with_another_tree_or_message_is_a_bad_signature() {
    let keys = Keys::new();
    let alice = keys.ssh("alice", "ed25519");
    let signers = keys.allowed_signers(&[alice.line(ALICE, "")]);
    let (mut h, _) = ssh_host(&alice);
    let verify = ["--allowed-signers", arg(&signers)];
    h.pass(&verify).assert_code(0);
    let before = deployment(&h.state);

    let genuine = change(&mut h, "version 1");
    let raw = raw_commit(&h, &genuine);
    let work = h.origin.path().to_path_buf();

    // Another tree: an entrypoint that leaves a mark, under the old signature.
    let evil = "#!/bin/sh\ntouch \"$GITOPS_STATE_DIR/pwned\"\n";
    let blob = git_input(&work, &["hash-object", "-w", "--stdin"], evil.as_bytes());
    let tree = git_input(
        &work,
        &["mktree"],
        format!("100755 blob {blob}\trun.sh\n").as_bytes(),
    );
    let old_tree = git(&work, &["rev-parse", &format!("{genuine}^{{tree}}")]);
    let other_tree = raw.replacen(&format!("tree {old_tree}"), &format!("tree {tree}"), 1);
    assert_ne!(other_tree, raw);
    let forged = push_raw_commit(&h, other_tree.as_bytes());
    let out = h.pass(&verify);
    assert_refused(&out, &forged, "version 1", "bad-signature");
    let u = assert_recorded(&h.state, &forged, &forged, "bad-signature");
    assert_eq!(u["fingerprint"], alice.fingerprint);
    assert_eq!(deployment(&h.state), before);
    assert!(
        !h.state.path().join("pwned").exists(),
        "the forged tree ran"
    );

    // Another message.
    let other_message = raw.replace("version 1", "version 6");
    let forged = push_raw_commit(&h, other_message.as_bytes());
    let out = h.pass(&verify);
    assert_refused(&out, &forged, "version 6", "bad-signature");
    assert_recorded(&h.state, &forged, &forged, "bad-signature");
    assert_eq!(deployment(&h.state), before);

    // The genuine commit deploys.
    git(&work, &["update-ref", "refs/heads/main", &genuine]);
    h.pass(&verify).assert_code(0);
    assert_signed_by(&h.state, &genuine, "ssh", ALICE, &alice.fingerprint);
}

// ---------------------------------------------------------------------------
// 7. Revoked and expired OpenPGP keys
// ---------------------------------------------------------------------------

/// A host whose first commit is signed with the OpenPGP key `fpr`, deployed
/// with `trusted`.
fn gpg_host(keys: &Keys, fpr: &str, trusted: &Path) -> Host {
    let mut h = Host::new();
    sign_with_gpg(&h, keys, fpr);
    h.origin.commit(&[("run.sh", RUN_SH)], "first");
    h.pass(&["--trusted-keys", arg(trusted)]).assert_code(0);
    h
}

#[test]
fn revoked_openpgp_key_is_refused_as_a_separate_certificate_or_merged_into_the_key() {
    let keys = Keys::new();
    let fpr = keys.gpg_key(ALICE_PGP, None);
    let key = keys.gpg_export(&fpr);
    let trusted = keys.keys_dir("trusted", &[("alice.asc", &key)]);
    let mut h = gpg_host(&keys, &fpr, &trusted);
    let before = deployment(&h.state);
    let tip = change(&mut h, "signed before the revocation");

    let revocation = keys.gpg_revocation(&fpr);
    let trusted = keys.keys_dir(
        "trusted",
        &[("alice.asc", &key), ("alice-revocation.asc", &revocation)],
    );
    let out = h.pass(&["--trusted-keys", arg(&trusted)]);
    assert_refused(&out, &tip, "signed before the revocation", "key-revoked");
    let u = assert_recorded(&h.state, &tip, &tip, "key-revoked");
    assert_eq!(u["fingerprint"], fpr.as_str());
    assert_eq!(deployment(&h.state), before);

    // The certificate imported into the key: one file that carries it.
    exec(keys.gpg_cmd().arg("--import"), &revocation);
    let merged = keys.keys_dir("merged", &[("alice.asc", &keys.gpg_export(&fpr))]);
    let other = StateDir::new();
    let out = second_host_pass(&other, &h, &["--trusted-keys", arg(&merged)]);
    assert_refused(&out, &tip, "signed before the revocation", "key-revoked");
    other.assert_nothing_deployed(&[RUNS]);
}

#[test]
fn openpgp_key_expired_when_it_signed_is_refused() {
    let keys = Keys::new();
    let day = 86_400;
    let created = chrono::Utc::now().timestamp() - 10 * day;
    let fpr = keys.gpg_key(ALICE_PGP, Some(created));
    let trusted = keys.keys_dir("trusted", &[("alice.asc", &keys.gpg_export(&fpr))]);
    let mut h = gpg_host(&keys, &fpr, &trusted);
    let before = deployment(&h.state);
    let tip = change(&mut h, "signed ten days after");

    // A self-signature made an hour after the key gives it one day of life: it
    // had expired nine days before it signed the tip.
    let an_hour_after = format!("{}!", created + 3600);
    keys.gpg(&[
        "--faked-system-time",
        &an_hour_after,
        "--quick-set-expire",
        &fpr,
        "1d",
    ]);
    let trusted = keys.keys_dir("trusted", &[("alice.asc", &keys.gpg_export(&fpr))]);
    let out = h.pass(&["--trusted-keys", arg(&trusted)]);
    assert_refused(&out, &tip, "signed ten days after", "key-expired");
    let u = assert_recorded(&h.state, &tip, &tip, "key-expired");
    assert_eq!(u["fingerprint"], fpr.as_str());
    assert_eq!(deployment(&h.state), before);
}

// ---------------------------------------------------------------------------
// 8. Key files that cannot be used: exit 2, never "no keys"
// ---------------------------------------------------------------------------

/// Arguments and environment of a pass with unusable keys, and what its error
/// must name.
type BadConfig<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, Vec<String>);

#[test]
fn key_files_that_cannot_be_used_fail_the_pass_with_exit_2_naming_them() {
    let keys = Keys::new();
    let alice = keys.ssh("alice", "ed25519");
    let bob = keys.ssh("bob", "ed25519");
    let signers = keys.allowed_signers(&[alice.line(ALICE, "")]);
    let (mut h, _) = ssh_host(&alice);
    h.pass(&["--allowed-signers", arg(&signers)]).assert_code(0);
    // A deployable commit, so that a pass that went on would deploy it.
    let pending = change(&mut h, "pending");
    let before = deployment(&h.state);

    let bad_file = |name: &str, second_line: &str| -> PathBuf {
        let path = keys.path().join(name);
        fs::write(&path, format!("{}\n{second_line}\n", alice.line(ALICE, ""))).unwrap();
        path
    };
    let unknown_option = bad_file("unknown_option", &bob.line(BOB, "frobnicate=\"yes\""));
    let cert_authority = bad_file("cert_authority", &bob.line(BOB, "cert-authority"));
    let missing = keys.path().join("no-such-file");
    let empty_dir = keys.keys_dir("empty", &[]);
    let junk_dir = keys.keys_dir("junk", &[("junk.asc", b"not a key\n".as_slice())]);

    let line2 = |p: &Path| format!("{}:2", p.display());
    let cases: Vec<BadConfig> = vec![
        (
            vec!["--allowed-signers", arg(&unknown_option)],
            vec![],
            vec![line2(&unknown_option), "frobnicate".into()],
        ),
        (
            vec!["--allowed-signers", arg(&cert_authority)],
            vec![],
            vec![line2(&cert_authority), "cert-authority".into()],
        ),
        (
            vec!["--allowed-signers", arg(&missing)],
            vec![],
            vec![arg(&missing).into()],
        ),
        (
            vec!["--trusted-keys", arg(&empty_dir)],
            vec![],
            vec![arg(&empty_dir).into()],
        ),
        (
            vec!["--trusted-keys", arg(&junk_dir)],
            vec![],
            vec!["junk.asc".into()],
        ),
        (
            vec!["--verify", "tip"],
            vec![],
            vec!["--allowed-signers".into()],
        ),
        (
            vec![],
            vec![("GITOPS_VERIFY", "tip")],
            vec!["--allowed-signers".into()],
        ),
        (
            vec![],
            vec![("GITOPS_ALLOWED_SIGNERS", arg(&unknown_option))],
            vec![line2(&unknown_option)],
        ),
    ];
    for (args, env, wanted) in cases {
        let out = run(h.pass_cmd(&args).envs(env.iter().copied()));
        out.assert_code(USAGE);
        let error = out.one_error_line();
        for w in &wanted {
            assert!(
                error.contains(w.as_str()),
                "{args:?} {env:?}: {w:?} in\n{out}"
            );
        }
        assert_eq!(deployment(&h.state), before, "{args:?} {env:?}");
    }

    // The same pass with usable keys deploys the pending commit.
    h.pass(&["--allowed-signers", arg(&signers)]).assert_code(0);
    h.state.assert_deployed(&pending);
}

// ---------------------------------------------------------------------------
// 9. A key added after a refusal takes effect at the next pass
// ---------------------------------------------------------------------------

#[test]
fn key_added_after_a_refusal_takes_effect_at_the_next_plain_pass() {
    let keys = Keys::new();
    let alice = keys.ssh("alice", "ed25519");
    let bob = keys.ssh("bob", "ed25519");
    let signers = keys.allowed_signers(&[alice.line(ALICE, "")]);
    let (mut h, _) = ssh_host(&alice);
    let verify = ["--allowed-signers", arg(&signers)];
    h.pass(&verify).assert_code(0);
    let before = deployment(&h.state);

    sign_with_ssh(&h, &bob);
    let tip = change(&mut h, "signed by bob");
    for _ in 0..2 {
        let out = h.pass(&verify);
        assert_refused(&out, &tip, "signed by bob", "unknown-key");
        let u = assert_recorded(&h.state, &tip, &tip, "unknown-key");
        assert_eq!(u["fingerprint"], bob.fingerprint);
        assert_eq!(deployment(&h.state), before);
    }

    keys.allowed_signers(&[alice.line(ALICE, ""), bob.line(BOB, "")]);
    let out = h.pass(&verify);
    out.assert_code(0);
    h.state.assert_deployed(&tip);
    assert_signed_by(&h.state, &tip, "ssh", BOB, &bob.fingerprint);
    assert_eq!(h.state.lines(RUNS).last(), Some(&tip));
}

// ---------------------------------------------------------------------------
// 10. History rewrites are refused as rewrites, signed or not
// ---------------------------------------------------------------------------

#[test]
fn branch_reset_back_to_an_older_signed_commit_is_refused_as_a_rewrite_not_as_unverified() {
    let keys = Keys::new();
    let alice = keys.ssh("alice", "ed25519");
    let signers = keys.allowed_signers(&[alice.line(ALICE, "")]);
    let (mut h, first) = ssh_host(&alice);
    let verify = ["--allowed-signers", arg(&signers)];
    h.pass(&verify).assert_code(0);
    change(&mut h, "second");
    h.pass(&verify).assert_code(0);
    let before = deployment(&h.state);

    h.origin.reset_hard(&first);
    let out = h.pass(&verify);
    out.assert_code(REFUSED);
    assert!(out.stderr.contains("reset backwards"), "{out}");
    assert!(!out.stderr.contains("no good signature"), "{out}");
    let status = h.state.status_json();
    assert_eq!(status["classification"], "remote-behind", "{status:#}");
    assert_eq!(status["last_pass"]["outcome"], "refused", "{status:#}");
    assert_eq!(status["unverified"], Value::Null, "{status:#}");
    assert_eq!(deployment(&h.state), before);
}

/// `--allow-rewrite` accepts a rewrite, not an unsigned commit: a branch reset
/// back to an older commit that carries a good signature deploys it.
#[test]
fn allow_rewrite_deploys_a_signed_rewrite_including_a_reset_to_an_older_signed_commit() {
    let keys = Keys::new();
    let alice = keys.ssh("alice", "ed25519");
    let signers = keys.allowed_signers(&[alice.line(ALICE, "")]);
    let (mut h, first) = ssh_host(&alice);
    let rewrite = ["--allowed-signers", arg(&signers), "--allow-rewrite"];
    h.pass(&rewrite).assert_code(0);
    change(&mut h, "second");
    h.pass(&rewrite).assert_code(0);

    // Diverged: the tip amended, signed.
    let amended = h.origin.amend("second, amended");
    assert!(is_signed(&h, &amended));
    h.pass(&rewrite).assert_code(0);
    assert_signed_by(&h.state, &amended, "ssh", ALICE, &alice.fingerprint);

    // Diverged again, unsigned: --allow-rewrite does not lift verification.
    stop_signing(&h);
    let unsigned = h.origin.amend("second, amended unsigned");
    let before = deployment(&h.state);
    let out = h.pass(&rewrite);
    assert_refused(&out, &unsigned, "second, amended unsigned", "unsigned");
    assert_eq!(deployment(&h.state), before);

    // Reset back to the first commit, which is signed.
    h.origin.reset_hard(&first);
    let out = h.pass(&rewrite);
    assert_eq!(
        out.code,
        Some(0),
        "the first commit carries a good signature; --allow-rewrite deploys it:\n{out}"
    );
    h.state.assert_deployed(&first);
    assert_signed_by(&h.state, &first, "ssh", ALICE, &alice.fingerprint);
}

// ---------------------------------------------------------------------------
// 11. A shallow first deployment, then a merge of a branch forked before it
// ---------------------------------------------------------------------------

/// A host that deployed (with a depth-1 first fetch) the tip of a history
/// whose root commit predates signing, and whose branch `feature` forked at
/// the second commit, before the deployed one. Returns the host, the
/// deployed commit and the root.
fn shallow_host(keys: &Keys, alice: &SshKey) -> (Host, String, String) {
    let signers = keys.path().join("allowed_signers");
    let mut h = Host::new();
    let root = h
        .origin
        .commit(&[("run.sh", RUN_SH)], "root, from before signing");
    sign_with_ssh(&h, alice);
    change(&mut h, "signed 1");
    h.origin.branch("feature");
    change(&mut h, "signed 2");
    let deployed = change(&mut h, "signed 3");
    h.pass(&["--allowed-signers", arg(&signers)]).assert_code(0);
    h.state.assert_deployed(&deployed);
    assert!(
        h.state.path().join("cache.git").join("shallow").is_file(),
        "the first fetch is shallow"
    );
    (h, deployed, root)
}

/// Commits `subjects` on `feature` (signed unless the subject says
/// "unsigned"), then merges `feature` into `main` with a signed merge.
fn merge_feature(h: &mut Host, alice: &SshKey, subjects: &[&str]) -> (String, Vec<String>) {
    let work = h.origin.path().to_path_buf();
    git(&work, &["checkout", "-q", "feature"]);
    let mut ids = Vec::new();
    for subject in subjects {
        if subject.contains("unsigned") {
            stop_signing(h);
        } else {
            sign_with_ssh(h, alice);
        }
        ids.push(h.origin.commit(&[("feature", subject)], subject));
    }
    sign_with_ssh(h, alice);
    git(&work, &["checkout", "-q", "main"]);
    git(
        &work,
        &["merge", "-q", "--no-ff", "feature", "-m", "merge feature"],
    );
    (h.origin.head(), ids)
}

#[test]
fn after_a_shallow_first_deployment_a_merged_old_branch_is_verified_by_its_new_commits_only() {
    let keys = Keys::new();
    let alice = keys.ssh("alice", "ed25519");
    let signers = keys.allowed_signers(&[alice.line(ALICE, "")]);
    let (mut h, deployed, root) = shallow_host(&keys, &alice);

    let (merge, _) = merge_feature(&mut h, &alice, &["feature 1", "feature 2"]);
    let out = h.pass(&["--allowed-signers", arg(&signers)]);
    assert_eq!(
        out.code,
        Some(0),
        "the merge brings three signed commits; the unsigned root {} is an ancestor of the \
         deployed {} and was never to be verified again:\n{out}",
        short(&root),
        short(&deployed)
    );
    h.state.assert_deployed(&merge);
    assert_signed_by(&h.state, &merge, "ssh", ALICE, &alice.fingerprint);
}

/// The same after a second, linear deployment: the deployed commit is no
/// longer the shallow boundary, but the merged branch still forked below it.
#[test]
fn after_a_shallow_first_and_a_linear_deployment_a_merged_old_branch_is_verified_by_its_new_commits_only(
) {
    let keys = Keys::new();
    let alice = keys.ssh("alice", "ed25519");
    let signers = keys.allowed_signers(&[alice.line(ALICE, "")]);
    let (mut h, _, root) = shallow_host(&keys, &alice);
    let linear = change(&mut h, "signed 4");
    h.pass(&["--allowed-signers", arg(&signers)]).assert_code(0);
    h.state.assert_deployed(&linear);
    assert!(
        h.state.path().join("cache.git").join("shallow").is_file(),
        "a linear deployment keeps the cache shallow"
    );

    let (merge, _) = merge_feature(&mut h, &alice, &["feature 1", "feature 2"]);
    let out = h.pass(&["--allowed-signers", arg(&signers)]);
    assert_eq!(
        out.code,
        Some(0),
        "the merge brings three signed commits; the unsigned root {} is an ancestor of the \
         deployed {} and was never to be verified again:\n{out}",
        short(&root),
        short(&linear)
    );
    h.state.assert_deployed(&merge);
}

/// The deployment's notification lists what the merge brings, not the
/// deployed commit's ancestors that the walk below the shallow boundary meets.
#[test]
fn after_a_shallow_first_deployment_the_notification_of_a_merge_lists_only_its_new_commits() {
    let keys = Keys::new();
    let alice = keys.ssh("alice", "ed25519");
    let signers = keys.allowed_signers(&[alice.line(ALICE, "")]);
    let (mut h, _, _) = shallow_host(&keys, &alice);
    let (merge, ids) = merge_feature(&mut h, &alice, &["feature 1", "feature 2"]);
    let rx = Receiver::start(vec![]);
    let url = rx.url("/hook");
    h.pass(&[
        "--allowed-signers",
        arg(&signers),
        "--webhook-url",
        &url,
        "--webhook-format",
        "json",
    ])
    .assert_code(0);
    let sent = rx.wait_for(1, WEBHOOK_WAIT);
    let v = sent[0].json();
    let listed: Vec<&str> = v["commits"]
        .as_array()
        .expect("commits")
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert_eq!(
        listed,
        [merge.as_str(), ids[1].as_str(), ids[0].as_str()],
        "{v:#}"
    );
    assert_eq!(v["commits_omitted"], 0, "{v:#}");
}

#[test]
fn after_a_shallow_first_deployment_an_unsigned_commit_of_a_merged_old_branch_is_refused() {
    let keys = Keys::new();
    let alice = keys.ssh("alice", "ed25519");
    let signers = keys.allowed_signers(&[alice.line(ALICE, "")]);
    let (mut h, _, _) = shallow_host(&keys, &alice);
    let before = deployment(&h.state);

    let (merge, ids) = merge_feature(&mut h, &alice, &["feature unsigned", "feature 2"]);
    let out = h.pass(&["--allowed-signers", arg(&signers)]);
    assert_refused(&out, &ids[0], "feature unsigned", "unsigned");
    assert_recorded(&h.state, &merge, &ids[0], "unsigned");
    assert_eq!(deployment(&h.state), before);
}

// ---------------------------------------------------------------------------
// 12. Notifications
// ---------------------------------------------------------------------------

#[test]
fn refusal_is_notified_once_and_a_deployment_names_its_signer() {
    let keys = Keys::new();
    let alice = keys.ssh("alice", "ed25519");
    let signers = keys.allowed_signers(&[alice.line(ALICE, "")]);
    let (mut h, first) = ssh_host(&alice);
    let rx = Receiver::start(vec![]);
    let url = rx.url("/hook");
    let pass = |h: &Host, extra: &[&str]| {
        let mut args = vec![
            "--allowed-signers",
            arg(&signers),
            "--webhook-url",
            &url,
            "--webhook-format",
            "json",
            "--webhook-timeout",
            "2s",
        ];
        args.extend_from_slice(extra);
        h.pass(&args)
    };

    pass(&h, &[]).assert_code(0);
    let sent = rx.wait_for(1, WEBHOOK_WAIT);
    assert_eq!(sent.len(), 1);
    let v = sent[0].json();
    assert_eq!(v["event"], "applied", "{v:#}");
    assert_eq!(v["commit"], first.as_str(), "{v:#}");
    let signed_by = v["signed_by"].as_str().unwrap_or_default();
    assert!(
        signed_by.contains(ALICE) && signed_by.contains(&alice.fingerprint),
        "{v:#}"
    );

    stop_signing(&h);
    let unsigned = change(&mut h, "unsigned change");
    let out = pass(&h, &[]);
    assert_refused(&out, &unsigned, "unsigned change", "unsigned");
    let sent = rx.wait_for(2, WEBHOOK_WAIT);
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].header("x-gitops-run-event"), Some("unverified"));
    let v = sent[1].json();
    assert_eq!(v["event"], "unverified", "{v:#}");
    assert_eq!(v["exit_code"], UNVERIFIED, "{v:#}");
    assert_eq!(v["commit"], unsigned.as_str(), "{v:#}");
    let summary = v["summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains(short(&unsigned)) && summary.contains("unsigned"),
        "{v:#}"
    );
    assert_eq!(v.get("signed_by"), None, "{v:#}");

    // The same refusal again, with or without --once: no second message.
    for extra in [None, Some("--once")] {
        let out = pass(&h, extra.as_slice());
        assert_refused(&out, &unsigned, "unsigned change", "unsigned");
        assert_eq!(rx.requests().len(), 2, "notified again ({extra:?})");
    }

    // The branch reset to the deployed commit and a signed commit pushed on
    // it: deployed, and the message names the signer.
    sign_with_ssh(&h, &alice);
    h.origin.reset_hard(&first);
    let tip = change(&mut h, "signed again");
    pass(&h, &[]).assert_code(0);
    let sent = rx.wait_for(3, WEBHOOK_WAIT);
    assert_eq!(sent.len(), 3);
    let v = sent[2].json();
    assert_eq!(v["commit"], tip.as_str(), "{v:#}");
    let signed_by = v["signed_by"].as_str().unwrap_or_default();
    assert!(
        signed_by.contains(ALICE) && signed_by.contains(&alice.fingerprint),
        "{v:#}"
    );
}

// ---------------------------------------------------------------------------
// 13. plan
// ---------------------------------------------------------------------------

/// `gitops-run plan ARGS --repo URL --state-dir DIR`.
fn plan(h: &Host, args: &[&str]) -> Run {
    let url = h.origin.url();
    run(bin()
        .arg("plan")
        .args(args)
        .args(["--repo", &url, "--state-dir", h.state.arg()]))
}

#[test]
fn plan_shows_each_commits_signature_and_an_unsigned_tip_as_unverified_with_exit_9() {
    let keys = Keys::new();
    let alice = keys.ssh("alice", "ed25519");
    let signers = keys.allowed_signers(&[alice.line(ALICE, "")]);
    let (mut h, _) = ssh_host(&alice);
    let verify = ["--allowed-signers", arg(&signers)];
    h.pass(&verify).assert_code(0);
    let signed = change(&mut h, "signed change");
    stop_signing(&h);
    let unsigned = change(&mut h, "unsigned tip");
    let recorded = h.state.state_json_text();
    let before = deployment(&h.state);

    let out = plan(&h, &["--json", "--allowed-signers", arg(&signers)]);
    out.assert_code(UNVERIFIED);
    let doc: Value = serde_json::from_str(&out.stdout).expect("plan --json is JSON");
    assert_eq!(doc["exit_code"], UNVERIFIED, "{doc:#}");
    assert_eq!(doc["action"]["kind"], "unverified", "{doc:#}");
    let detail = doc["action"]["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(short(&unsigned)) && detail.contains("unsigned"),
        "{doc:#}"
    );
    assert!(
        doc["verification"]
            .as_str()
            .unwrap_or_default()
            .starts_with("all"),
        "{doc:#}"
    );
    let commits = doc["commits"].as_array().expect("commits");
    assert_eq!(commits.len(), 2, "{doc:#}");
    assert_eq!(commits[0]["commit"], unsigned.as_str());
    let verdict = commits[0]["signature"].as_str().unwrap_or_default();
    assert!(verdict.starts_with("refused: unsigned"), "{doc:#}");
    assert_eq!(commits[1]["commit"], signed.as_str());
    let verdict = commits[1]["signature"].as_str().unwrap_or_default();
    assert!(
        verdict.starts_with("good: ")
            && verdict.contains(ALICE)
            && verdict.contains(&alice.fingerprint),
        "{doc:#}"
    );
    // plan changes nothing.
    assert_eq!(h.state.state_json_text(), recorded);
    assert_eq!(deployment(&h.state), before);

    let out = plan(&h, &["--allowed-signers", arg(&signers)]);
    out.assert_code(UNVERIFIED);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.trim_start().starts_with("signature: refused: unsigned")),
        "{out}"
    );
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("next pass:") && l.contains("unverified")),
        "{out}"
    );

    // Without keys, plan says that verification is off.
    let out = plan(&h, &["--json"]);
    out.assert_code(PENDING);
    let doc: Value = serde_json::from_str(&out.stdout).expect("plan --json is JSON");
    assert_eq!(doc["verification"], "off", "{doc:#}");
    assert_eq!(doc["action"]["kind"], "apply", "{doc:#}");
    let verdict = doc["commits"][0]["signature"].as_str().unwrap_or_default();
    assert!(verdict.contains("verification is off"), "{doc:#}");
    let out = plan(&h, &[]);
    out.assert_code(PENDING);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("verification:") && l.contains("off")),
        "{out}"
    );
    assert_eq!(deployment(&h.state), before);
}

// ---------------------------------------------------------------------------
// 14. rollback
// ---------------------------------------------------------------------------

#[test]
fn rollback_needs_a_good_signature_by_a_key_trusted_now() {
    let keys = Keys::new();
    let alice = keys.ssh("alice", "ed25519");
    let bob = keys.ssh("bob", "ed25519");
    let signers = keys.allowed_signers(&[alice.line(ALICE, ""), bob.line(BOB, "")]);
    let (mut h, first) = ssh_host(&alice);
    let verify = ["--allowed-signers", arg(&signers)];
    h.pass(&verify).assert_code(0);
    sign_with_ssh(&h, &bob);
    let second = change(&mut h, "signed by bob");
    h.pass(&verify).assert_code(0);
    let before = deployment(&h.state);
    let url = h.origin.url();
    let rollback = || {
        run(bin()
            .args([
                "rollback",
                &first,
                "--repo",
                &url,
                "--state-dir",
                h.state.arg(),
            ])
            .args(verify)
            .env_remove("SUDO_USER"))
    };

    // Alice's key is no longer trusted.
    keys.allowed_signers(&[bob.line(BOB, "")]);
    let out = rollback();
    out.assert_code(UNVERIFIED);
    let error = out.one_error_line();
    assert!(
        error.contains("refusing to roll back")
            && error.contains(short(&first))
            && error.contains("unknown-key"),
        "{out}"
    );
    assert_eq!(deployment(&h.state), before);
    let status = h.state.status_json();
    assert_eq!(status["deployed"]["commit"], second.as_str(), "{status:#}");
    assert_eq!(status["frozen"], Value::Null, "{status:#}");

    // Trusted again: the rollback runs.
    keys.allowed_signers(&[alice.line(ALICE, ""), bob.line(BOB, "")]);
    rollback().assert_code(0);
    h.state.assert_deployed(&first);
    assert_signed_by(&h.state, &first, "ssh", ALICE, &alice.fingerprint);
    let status = h.state.status_json();
    assert_eq!(status["deployed"]["reason"], "rollback", "{status:#}");
    assert_eq!(h.state.lines(RUNS).last(), Some(&first));
}

// ---------------------------------------------------------------------------
// 15. Verification off
// ---------------------------------------------------------------------------

#[test]
fn without_keys_unsigned_commits_deploy_and_status_says_verification_is_off() {
    let mut h = Host::new();
    let first = h.origin.commit(&[("run.sh", RUN_SH)], "first");
    assert!(!is_signed(&h, &first));
    h.pass(&[]).assert_code(0);
    h.state.assert_deployed(&first);
    let second = change(&mut h, "unsigned change");
    h.pass(&[]).assert_code(0);
    h.state.assert_deployed(&second);
    assert_eq!(h.state.lines(RUNS), [first, second.clone()]);

    let status = h.state.status_json();
    assert_eq!(status["verification"], "off", "{status:#}");
    assert_eq!(status["deployed"]["signed_by"], Value::Null, "{status:#}");
    assert_eq!(status["unverified"], Value::Null, "{status:#}");
    let text = h.state.status_text().stdout;
    assert!(
        text.lines()
            .any(|l| l.starts_with("verification:") && l.contains("OFF")),
        "{text}"
    );
    assert!(!text.contains("signed by:"), "{text}");
}
