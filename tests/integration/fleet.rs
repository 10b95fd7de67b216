//! One repository for a fleet (issue 17) through the binary: hosts that follow
//! their own paths of one shared repository (`--path hosts/%l --path common`,
//! `--hostname`), commits that change nothing for a host, sparse trees, the
//! specifiers, secrets of other hosts, staged rollouts with `--soak`; and the
//! first-boot recipes of docs/fleet/ (cloud-init, kickstart, Packer), checked
//! with the real `cloud-init schema`, `sh -n` and `bash -n`.
//!
//! Each host is a state directory of its own; all follow one [`Origin`]. The
//! entrypoints source `common/lib.sh` by a path relative to their working
//! directory, and record `<host> <commit> <lib version> <GITOPS_PATHS> <cwd>`
//! in a file next to the state directory (`$GITOPS_STATE_DIR/../runs`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tempfile::TempDir;

use crate::common::{due_time, git, git_env, rfc3339, run, Origin, Run, StateDir};

/// The shared library, version `version`: `record NAME` appends one line to
/// `runs` next to the state directory.
fn lib(version: u32) -> String {
    format!(
        "# common/lib.sh: sourced by every host's run.sh\n\
         LIB_VERSION={version}\n\
         record() {{\n\
         \x20 printf '%s %s %s %s %s\\n' \"$1\" \"$GITOPS_COMMIT\" \"$LIB_VERSION\" \"${{GITOPS_PATHS-unset}}\" \"$(pwd -P)\" >> \"$GITOPS_STATE_DIR/../runs\"\n\
         }}\n"
    )
}

/// The entrypoint of host `name`: sources the library relative to its working
/// directory (`hosts/<name>`), then records its run.
fn host_script(name: &str) -> String {
    format!("#!/bin/sh\nset -eu\n. ../../common/lib.sh\nrecord {name}\n")
}

/// A repository for hosts `a` and `b`: their entrypoints, the library, and a
/// README that belongs to no host. Returns the origin and its first commit.
fn fleet_origin() -> (Origin, String) {
    let mut origin = Origin::new();
    let first = origin.commit(
        &[
            ("hosts/a/run.sh", &host_script("a")),
            ("hosts/b/run.sh", &host_script("b")),
            ("common/lib.sh", &lib(1)),
            ("README", "the fleet\n"),
        ],
        "a fleet of two",
    );
    (origin, first)
}

/// One entrypoint run, as the library recorded it.
#[derive(Debug, Clone, PartialEq)]
struct Record {
    host: String,
    commit: String,
    lib: String,
    paths: String,
    cwd: PathBuf,
}

/// A host of the fleet: its name (given with `--hostname`) and its state.
struct Member {
    name: String,
    state: StateDir,
}

impl Member {
    fn new(name: &str) -> Member {
        Member {
            name: name.to_owned(),
            state: StateDir::new(),
        }
    }

    /// A pass with `--hostname NAME --path hosts/%l --path common` and `extra`.
    fn pass(&self, origin: &Origin, extra: &[&str]) -> Run {
        let mut args = vec![
            "--hostname",
            &self.name,
            "--path",
            "hosts/%l",
            "--path",
            "common",
        ];
        args.extend_from_slice(extra);
        self.state.pass(&origin.url(), &args)
    }

    /// A pass that must exit 0.
    #[track_caller]
    fn deploy(&self, origin: &Origin, extra: &[&str]) -> Run {
        let out = self.pass(origin, extra);
        out.assert_code(0);
        out.assert_no_panic();
        out
    }

    /// What this host's entrypoints recorded, oldest first.
    fn runs(&self) -> Vec<Record> {
        runs_in(self.state.dir())
    }

    /// The commits whose entrypoint ran here, oldest first.
    fn ran(&self) -> Vec<String> {
        self.runs().into_iter().map(|r| r.commit).collect()
    }
}

fn runs_in(dir: &Path) -> Vec<Record> {
    fs::read_to_string(dir.join("runs"))
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.splitn(5, ' ').collect();
            assert_eq!(f.len(), 5, "a record has five fields: {line:?}");
            Record {
                host: f[0].to_owned(),
                commit: f[1].to_owned(),
                lib: f[2].to_owned(),
                paths: f[3].to_owned(),
                cwd: PathBuf::from(f[4]),
            }
        })
        .collect()
}

/// `commit` was recorded as deployed on `m` without running its entrypoint:
/// the pass said so, `status --json` has it deployed for reason `unchanged`,
/// `current` points at it, and no entrypoint ran (`runs_before` records).
#[track_caller]
fn assert_seen_not_run(m: &Member, out: &Run, commit: &str, runs_before: usize) {
    out.assert_code(0);
    assert!(
        out.stderr.contains("no change for this host"),
        "host {}: {out}",
        m.name
    );
    let st = m.state.status_json();
    assert_eq!(st["deployed"]["commit"], commit, "host {}: {st:#}", m.name);
    assert_eq!(st["deployed"]["reason"], "unchanged", "host {}", m.name);
    assert_eq!(st["last_pass"]["outcome"], "unchanged", "host {}", m.name);
    assert_eq!(
        m.state.current().as_deref(),
        Some(commit),
        "host {}",
        m.name
    );
    assert_eq!(
        m.runs().len(),
        runs_before,
        "host {}: an entrypoint ran: {:?}",
        m.name,
        m.runs()
    );
}

/// The files (not directories) below `dir`, relative to it, sorted.
fn files_below(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let entries =
            fs::read_dir(dir).unwrap_or_else(|err| panic!("read {}: {err}", dir.display()));
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).expect("below the root");
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn tree_of(m: &Member, commit: &str) -> PathBuf {
    m.state.path().join("trees").join(commit)
}

// ---------------------------------------------------------------------------
// Per-host paths
// ---------------------------------------------------------------------------

#[test]
fn a_commit_under_one_hosts_path_runs_only_that_hosts_entrypoint() {
    let (mut origin, first) = fleet_origin();
    let (a, b) = (Member::new("a"), Member::new("b"));
    a.deploy(&origin, &[]);
    b.deploy(&origin, &[]);
    assert_eq!(a.ran(), vec![first.clone()]);
    assert_eq!(b.ran(), vec![first.clone()]);

    let change = origin.commit(&[("hosts/a/motd", "hello a\n")], "a: motd");
    let out_a = a.deploy(&origin, &[]);
    let out_b = b.pass(&origin, &[]);

    assert_eq!(a.ran(), vec![first.clone(), change.clone()], "{out_a}");
    let st = a.state.status_json();
    assert_eq!(st["deployed"]["commit"], change.as_str());
    assert_eq!(st["deployed"]["reason"], "new");
    assert_seen_not_run(&b, &out_b, &change, 1);
    assert!(
        out_b.stderr.contains("(b)"),
        "the message names the host: {out_b}"
    );

    // Seen is deployed: the next pass of b is up to date and runs nothing.
    let again = b.deploy(&origin, &[]);
    assert_eq!(b.ran(), vec![first], "{again}");
    assert_eq!(b.state.status_json()["last_pass"]["outcome"], "up-to-date");
}

#[test]
fn a_commit_under_common_runs_every_host() {
    let (mut origin, first) = fleet_origin();
    let (a, b) = (Member::new("a"), Member::new("b"));
    a.deploy(&origin, &[]);
    b.deploy(&origin, &[]);

    let change = origin.commit(&[("common/lib.sh", &lib(2))], "common: lib 2");
    for m in [&a, &b] {
        m.deploy(&origin, &[]);
        let runs = m.runs();
        assert_eq!(runs.len(), 2, "host {}: {runs:?}", m.name);
        assert_eq!(runs[0].commit, first);
        assert_eq!(runs[1].commit, change, "host {}", m.name);
        assert_eq!(runs[1].host, m.name);
        assert_eq!(runs[1].lib, "2", "host {} sourced the new library", m.name);
        let st = m.state.status_json();
        assert_eq!(st["deployed"]["commit"], change.as_str());
        assert_eq!(st["deployed"]["reason"], "new");
    }
}

#[test]
fn a_commit_outside_every_path_runs_no_entrypoint_and_each_host_records_it() {
    let (mut origin, _) = fleet_origin();
    let (a, b) = (Member::new("a"), Member::new("b"));
    a.deploy(&origin, &[]);
    b.deploy(&origin, &[]);

    let readme = origin.commit(&[("README", "the fleet, documented\n")], "docs");
    for m in [&a, &b] {
        let out = m.pass(&origin, &[]);
        assert_seen_not_run(m, &out, &readme, 1);
    }
    // A commit that adds a host touches neither a nor b.
    let c = origin.commit(&[("hosts/c/run.sh", &host_script("c"))], "add c");
    for m in [&a, &b] {
        let out = m.pass(&origin, &[]);
        assert_seen_not_run(m, &out, &c, 1);
    }
}

/// What counts is the difference to the deployed commit: a commit for this
/// host that failed here, followed by one outside its paths, still runs (and
/// fails the same way), instead of being recorded as deployed.
#[test]
fn a_commit_outside_the_paths_after_one_that_failed_here_still_runs() {
    let (mut origin, first) = fleet_origin();
    let a = Member::new("a");
    a.deploy(&origin, &[]);
    let broken = "#!/bin/sh\n. ../../common/lib.sh\nrecord a\nexit 3\n";
    let bad = origin.commit(&[("hosts/a/run.sh", broken)], "a: broken");
    a.pass(&origin, &[]).assert_code(5);
    assert_eq!(a.ran(), vec![first.clone(), bad.clone()]);

    let readme = origin.commit(&[("README", "later\n")], "docs");
    let out = a.pass(&origin, &[]);
    out.assert_code(5);
    assert_eq!(a.ran(), vec![first.clone(), bad, readme.clone()], "{out}");
    let st = a.state.status_json();
    assert_eq!(st["deployed"]["commit"], first.as_str());
    assert_eq!(st["last_attempt"]["commit"], readme.as_str());
    assert_eq!(st["last_attempt"]["result"], "failed");
}

/// `plan` shows what the next pass would do: for a commit that changes
/// nothing under the host's paths, that is recording it (reason
/// `unchanged`), not running the entrypoint.
#[test]
fn plan_says_a_commit_outside_the_hosts_paths_is_recorded_without_a_run() {
    let (mut origin, _) = fleet_origin();
    let b = Member::new("b");
    b.deploy(&origin, &[]);
    let readme = origin.commit(&[("README", "the fleet, documented\n")], "docs");

    let plan = plan_json(&b, &origin, &[], 2);
    assert_eq!(plan["remote"], readme.as_str(), "{plan:#}");
    assert_eq!(
        plan["action"]["reason"], "unchanged",
        "plan announces a run of the entrypoint that the pass will not do:\n{:#}",
        plan["action"]
    );
    let out = b.pass(&origin, &[]);
    assert_seen_not_run(&b, &out, &readme, 1);
}

#[test]
fn a_host_whose_path_is_missing_fails_with_exit_6_naming_path_and_host_then_deploys_once_added() {
    let (mut origin, _) = fleet_origin();
    let c = Member::new("c");

    // plan foresees the failure, and changes nothing.
    let plan = plan_json(&c, &origin, &[], 6);
    assert_eq!(plan["action"]["kind"], "invalid", "{plan:#}");
    assert!(
        plan["action"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("hosts/c") && d.contains("host c")),
        "{plan:#}"
    );
    assert_eq!(plan["paths"], serde_json::json!(["hosts/c", "common"]));

    let out = c.pass(&origin, &[]);
    out.assert_code(6);
    out.assert_no_panic();
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("hosts/c"))
        .unwrap_or_else(|| panic!("no line names hosts/c:\n{out}"));
    assert!(line.contains("host c"), "the line names host c: {line}");
    assert!(c.runs().is_empty(), "an entrypoint ran: {:?}", c.runs());
    assert_eq!(c.state.current(), None);
    assert!(c.state.trees().is_empty(), "{:?}", c.state.trees());

    // Adding the host's directory is a new commit: tried at once, not after
    // the failure's backoff.
    let added = origin.commit(&[("hosts/c/run.sh", &host_script("c"))], "add c");
    c.deploy(&origin, &[]);
    assert_eq!(c.ran(), vec![added.clone()]);
    assert_eq!(c.state.current().as_deref(), Some(added.as_str()));
}

#[test]
fn removing_a_hosts_directory_fails_that_host_and_keeps_what_it_deployed() {
    let (mut origin, first) = fleet_origin();
    let (a, b) = (Member::new("a"), Member::new("b"));
    a.deploy(&origin, &[]);
    b.deploy(&origin, &[]);

    let retired = origin.remove(&["hosts/a"], "retire a");
    let out = a.pass(&origin, &[]);
    out.assert_code(6);
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("hosts/a"))
        .unwrap_or_else(|| panic!("no line names hosts/a:\n{out}"));
    assert!(line.contains("host a"), "{line}");
    assert_eq!(a.ran(), vec![first.clone()]);
    assert_eq!(a.state.current().as_deref(), Some(first.as_str()));

    let out = b.pass(&origin, &[]);
    assert_seen_not_run(&b, &out, &retired, 1);
}

#[test]
fn each_host_checks_out_only_its_own_paths() {
    let (mut origin, first) = fleet_origin();
    let (a, b) = (Member::new("a"), Member::new("b"));
    a.deploy(&origin, &[]);
    b.deploy(&origin, &[]);
    assert_eq!(
        files_below(&tree_of(&a, &first)),
        vec!["common/lib.sh", "hosts/a/run.sh"]
    );
    assert_eq!(
        files_below(&tree_of(&b, &first)),
        vec!["common/lib.sh", "hosts/b/run.sh"]
    );

    // The tree of a commit recorded without a run is sparse too.
    let change = origin.commit(&[("hosts/a/motd", "hello a\n")], "a: motd");
    a.deploy(&origin, &[]);
    b.deploy(&origin, &[]);
    assert_eq!(
        files_below(&tree_of(&a, &change)),
        vec!["common/lib.sh", "hosts/a/motd", "hosts/a/run.sh"]
    );
    assert_eq!(
        files_below(&tree_of(&b, &change)),
        vec!["common/lib.sh", "hosts/b/run.sh"]
    );
    assert_eq!(b.state.current().as_deref(), Some(change.as_str()));
}

#[test]
fn the_entrypoint_runs_in_the_first_path_and_gets_gitops_paths() {
    let (origin, first) = fleet_origin();
    let a = Member::new("a");
    a.deploy(&origin, &[]);
    let runs = a.runs();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].host, "a");
    assert_eq!(runs[0].paths, "hosts/a:common");
    let expected = fs::canonicalize(tree_of(&a, &first).join("hosts/a")).expect("the tree");
    assert_eq!(runs[0].cwd, expected);

    // In the other order, common is the first path: the entrypoint is looked
    // up there (and there is none).
    let other = StateDir::new();
    let out = other.pass(
        &origin.url(),
        &["--hostname", "a", "--path", "common", "--path", "hosts/%l"],
    );
    out.assert_code(6);
    assert!(out.stderr.contains("common/run.sh"), "{out}");
    assert!(runs_in(other.dir()).is_empty());
}

#[test]
fn a_reboot_request_is_read_from_the_hosts_own_directory() {
    let (mut origin, _) = fleet_origin();
    let (a, b) = (Member::new("a"), Member::new("b"));
    let due = format!("{}\n", rfc3339(due_time()));
    origin.commit(
        &[("hosts/a/reboot-at", &due), ("reboot-at", &due)],
        "reboot a",
    );
    let reboots = |m: &Member| m.state.dir().join("reboots");
    for m in [&a, &b] {
        let command = format!("echo reboot >> '{}'", reboots(m).display());
        for _ in 0..2 {
            m.deploy(&origin, &["--reboot-command", &command]);
        }
    }
    let count = |m: &Member| {
        fs::read_to_string(reboots(m))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    assert_eq!(count(&a), 1, "host a rebooted for hosts/a/reboot-at");
    assert_eq!(a.state.status_json()["reboot"]["status"], "done");
    assert_eq!(
        count(&b),
        0,
        "host b follows neither hosts/a nor the root's reboot-at"
    );
    assert_eq!(b.state.status_json()["reboot"], Value::Null);
}

/// The machine id as systemd keeps it (the binary reads the same files).
fn machine_id() -> String {
    for path in ["/etc/machine-id", "/var/lib/dbus/machine-id"] {
        if let Ok(id) = fs::read_to_string(path) {
            if !id.trim().is_empty() {
                return id.trim().to_owned();
            }
        }
    }
    panic!("this test needs a machine id in /etc/machine-id or /var/lib/dbus/machine-id");
}

#[test]
fn path_specifiers_expand_host_name_machine_id_and_percent() {
    let id = machine_id();
    let by_id = format!("by-id/{id}");
    let mut origin = Origin::new();
    let script = "#!/bin/sh\nprintf '%s %s\\n' \"$GITOPS_PATHS\" \"$(pwd -P)\" > \"$GITOPS_STATE_DIR/../seen\"\n";
    let commit = origin.commit(
        &[
            (&format!("{by_id}/run.sh"), script),
            ("by-id/someone-else/run.sh", script),
            ("100%/share", "all of it\n"),
            ("fqdn/web-1.example.com/name", "web-1\n"),
            ("hosts/web-1/name", "short\n"),
        ],
        "by machine id",
    );
    let state = StateDir::new();
    let out = state.pass(
        &origin.url(),
        &[
            "--hostname",
            "web-1.example.com",
            "--path",
            "by-id/%m",
            "--path",
            "100%%",
            "--path",
            "fqdn/%H",
            "--path",
            "hosts/%l",
        ],
    );
    out.assert_code(0);
    let seen = fs::read_to_string(state.dir().join("seen")).expect("the entrypoint ran");
    let tree = state.path().join("trees").join(&commit);
    let cwd = fs::canonicalize(tree.join(&by_id)).expect("the tree");
    assert_eq!(
        seen,
        format!(
            "{by_id}:100%:fqdn/web-1.example.com:hosts/web-1 {}\n",
            cwd.display()
        )
    );
    assert_eq!(
        files_below(&tree),
        vec![
            "100%/share".to_owned(),
            format!("{by_id}/run.sh"),
            "fqdn/web-1.example.com/name".to_owned(),
            "hosts/web-1/name".to_owned(),
        ]
    );

    let out = state.pass(&origin.url(), &["--hostname", "x", "--path", "hosts/%q"]);
    out.assert_code(2);
    assert!(out.stderr.contains("%q"), "{out}");
}

/// A specifier that expands to nothing must not widen the path: with an
/// empty host name, `hosts/%l` would be `hosts`, every host's directory.
#[test]
fn a_host_name_that_makes_a_path_empty_is_refused_not_widened() {
    let (mut origin, _) = fleet_origin();
    // A dispatcher at hosts/run.sh: what a widened path would run.
    let dispatcher = "#!/bin/sh\nset -eu\n. ../common/lib.sh\nrecord all\n";
    origin.commit(&[("hosts/run.sh", dispatcher)], "dispatcher");
    for name in ["", ".example.com"] {
        let state = StateDir::new();
        let out = state.pass(
            &origin.url(),
            &["--hostname", name, "--path", "hosts/%l", "--path", "common"],
        );
        assert!(
            runs_in(state.dir()).is_empty(),
            "--hostname {name:?} ran hosts/run.sh"
        );
        out.assert_code(2);
        assert!(out.stderr.contains("hosts/%l"), "{out}");
        assert!(state.trees().is_empty(), "{:?}", state.trees());
    }
}

// ---------------------------------------------------------------------------
// Secrets of other hosts
// ---------------------------------------------------------------------------

/// Throwaway keys (real `ssh-keygen`) and a secrets root on a tmpfs.
struct Keys {
    dir: TempDir,
    ram: TempDir,
}

impl Keys {
    fn new() -> Keys {
        Keys {
            dir: tempfile::Builder::new()
                .prefix("gitops-run-fleet-keys-")
                .tempdir()
                .expect("create a key directory"),
            ram: tempfile::Builder::new()
                .prefix("gitops-run-fleet-secrets-")
                .tempdir_in("/dev/shm")
                .expect("create a directory on /dev/shm"),
        }
    }

    /// A new ed25519 key pair `name`; returns the private key's path.
    fn key(&self, name: &str) -> PathBuf {
        let private = self.dir.path().join(name);
        let mut cmd = Command::new("ssh-keygen");
        git_env(&mut cmd);
        cmd.args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&private);
        let out = run(&mut cmd);
        assert!(out.success(), "ssh-keygen: {out}");
        private
    }

    /// Encrypts `plain` with the real `age` to the public half of `key`,
    /// into `out`.
    fn encrypt(&self, plain: &str, key: &Path, out: &Path) {
        let input = self.dir.path().join("plain");
        fs::write(&input, plain).expect("write the plaintext");
        fs::create_dir_all(out.parent().expect("a parent")).expect("mkdir");
        let _ = fs::remove_file(out);
        let mut cmd = Command::new("age");
        git_env(&mut cmd);
        cmd.arg("-R")
            .arg(key.with_extension("pub"))
            .arg("-o")
            .arg(out)
            .arg(&input);
        let result = run(&mut cmd);
        assert!(result.success(), "age: {result}");
    }

    fn root(&self, name: &str) -> PathBuf {
        self.ram.path().join(name)
    }
}

/// An entrypoint that copies its host's secret `token` next to the state
/// directory.
fn secret_reader(name: &str) -> String {
    format!(
        "#!/bin/sh\nset -eu\ncat \"$GITOPS_SECRETS_DIR/hosts/{name}/token\" > \"$GITOPS_STATE_DIR/../token\"\n"
    )
}

#[test]
fn secrets_under_another_hosts_path_are_never_read() {
    let keys = Keys::new();
    let key_a = keys.key("a");
    let key_b = keys.key("b");
    let mut origin = Origin::new();
    keys.encrypt(
        "token-of-a-5e1f\n",
        &key_a,
        &origin.path().join("hosts/a/token.age"),
    );
    keys.encrypt(
        "token-of-b-93c2\n",
        &key_b,
        &origin.path().join("hosts/b/token.age"),
    );
    let first = origin.commit(
        &[
            ("hosts/a/run.sh", &secret_reader("a")),
            ("hosts/b/run.sh", &secret_reader("b")),
            ("common/lib.sh", &lib(1)),
        ],
        "secrets for a and b",
    );
    let key_arg = key_a.to_str().expect("UTF-8 path");

    // The control: a host that follows the whole repository fails on b's
    // secret, which it cannot decrypt. So a must never try.
    let whole = StateDir::new();
    let root = keys.root("whole");
    let out = whole.pass(
        &origin.url(),
        &[
            "--entrypoint",
            "hosts/a/run.sh",
            "--age-identity",
            key_arg,
            "--secrets-root",
            root.to_str().expect("UTF-8"),
        ],
    );
    out.assert_code(5);
    assert!(out.stderr.contains("hosts/b/token.age"), "{out}");

    let a = Member::new("a");
    let root = keys.root("a");
    let root_arg = root.to_str().expect("UTF-8");
    let args = ["--age-identity", key_arg, "--secrets-root", root_arg];
    let out = a.deploy(&origin, &args);
    out.assert_no_secret(&["token-of-a-5e1f", "token-of-b-93c2"]);
    let token = a.state.dir().join("token");
    assert_eq!(
        fs::read_to_string(&token).expect("ran").as_str(),
        "token-of-a-5e1f\n"
    );
    assert_eq!(
        files_below(&root.join(&first)),
        vec!["hosts/a/token"],
        "only a's secret was decrypted"
    );

    // A new secret for b is a commit that changes nothing for a: recorded,
    // not run, and a's secret stays where services read it.
    fs::remove_file(&token).expect("remove the copy");
    keys.encrypt(
        "token-of-b-v2-0d7a\n",
        &key_b,
        &origin.path().join("hosts/b/token.age"),
    );
    let second = origin.commit(&[], "rotate b's token");
    let out = a.pass(&origin, &args);
    out.assert_code(0);
    assert!(out.stderr.contains("no change for this host"), "{out}");
    assert_eq!(a.state.current().as_deref(), Some(second.as_str()));
    assert!(!token.exists(), "a's entrypoint ran for b's secret");
    let current = root.join("current/hosts/a/token");
    assert_eq!(
        fs::read_to_string(&current).ok().as_deref(),
        Some("token-of-a-5e1f\n")
    );
    a.deploy(&origin, &args);
    assert_eq!(
        fs::read_to_string(&current).ok().as_deref(),
        Some("token-of-a-5e1f\n")
    );
    assert!(!root.join("current/hosts/b").exists());
}

// ---------------------------------------------------------------------------
// Staged rollouts
// ---------------------------------------------------------------------------

/// When the host first saw the remote tip (state.json), the start of its soak.
#[track_caller]
fn first_seen(m: &Member, commit: &str) -> DateTime<Utc> {
    let st = m.state.state_json();
    assert_eq!(st["remote"]["commit"], commit, "{st:#}");
    st["remote"]["first_seen"]
        .as_str()
        .unwrap_or_else(|| panic!("no first_seen: {st:#}"))
        .parse()
        .expect("an RFC 3339 time")
}

/// `plan --json` with the host's options and `extra`; exit code `code`.
#[track_caller]
fn plan_json(m: &Member, origin: &Origin, extra: &[&str], code: i32) -> Value {
    let url = origin.url();
    let mut args = vec![
        "plan",
        "--json",
        "--repo",
        &url,
        "--state-dir",
        m.state.arg(),
        "--hostname",
        &m.name,
        "--path",
        "hosts/%l",
        "--path",
        "common",
    ];
    args.extend_from_slice(extra);
    let out = crate::common::run::gitops(&args);
    out.assert_code(code);
    serde_json::from_str(&out.stdout).unwrap_or_else(|err| panic!("not JSON ({err}):\n{out}"))
}

/// Waits until the wall clock is past `t` (the soak is measured by the
/// clock, so the test waits for the clock).
fn sleep_past(t: DateTime<Utc>) {
    let left = t - Utc::now();
    if let Ok(left) = left.to_std() {
        std::thread::sleep(left + std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_soaking_host_holds_a_new_commit_and_shows_it_in_status_and_plan() {
    let (mut origin, first) = fleet_origin();
    let b = Member::new("b");
    let soak = ["--soak", "1h"];
    b.deploy(&origin, &soak);
    assert_eq!(
        b.ran(),
        vec![first.clone()],
        "a first deployment does not soak"
    );

    let change = origin.commit(&[("common/lib.sh", &lib(2))], "common: lib 2");
    let out = b.deploy(&origin, &soak);
    assert!(out.stderr.contains("soaks until"), "{out}");
    let seen = first_seen(&b, &change);
    let until = seen + chrono::Duration::hours(1);

    // --once retries failed commits now; it does not cut a soak short.
    let out = b.deploy(&origin, &["--soak", "1h", "--once"]);
    assert!(out.stderr.contains("soaks until"), "{out}");
    assert_eq!(first_seen(&b, &change), seen, "the soak did not restart");
    assert_eq!(b.ran(), vec![first.clone()]);

    let st = b.state.status_json();
    assert_eq!(st["deployed"]["commit"], first.as_str());
    assert_eq!(st["remote_commit"], change.as_str());
    assert_eq!(st["last_pass"]["outcome"], "soaking");
    let shown: DateTime<Utc> = st["soak_until"]
        .as_str()
        .expect("status names the end of the soak")
        .parse()
        .expect("a time");
    assert_eq!(shown, until, "{st:#}");
    let text = b.state.status_text().stdout;
    assert!(text.contains(&change[..12]), "{text}");
    assert!(text.contains("soaking"), "{text}");
    assert!(text.contains("soaks until"), "{text}");

    let plan = plan_json(&b, &origin, &soak, 2);
    assert_eq!(plan["action"]["kind"], "soak", "{plan:#}");
    let planned: DateTime<Utc> = plan["action"]["until"]
        .as_str()
        .expect("until")
        .parse()
        .expect("a time");
    assert_eq!(planned, until, "{plan:#}");
    assert!(
        plan["action"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&change[..12])),
        "{plan:#}"
    );
    // plan changed nothing.
    assert_eq!(first_seen(&b, &change), seen);

    // --no-soak applies it now.
    b.deploy(&origin, &["--soak", "1h", "--no-soak"]);
    assert_eq!(b.ran(), vec![first, change.clone()]);
    let st = b.state.status_json();
    assert_eq!(st["deployed"]["commit"], change.as_str());
    assert_eq!(st["deployed"]["reason"], "new");
    assert!(st["soak_until"].is_null(), "{st:#}");
}

#[test]
fn a_soaking_host_applies_the_commit_once_the_soak_has_passed() {
    let (mut origin, first) = fleet_origin();
    let b = Member::new("b");
    let soak = ["--soak", "3s"];
    b.deploy(&origin, &soak);

    let change = origin.commit(&[("common/lib.sh", &lib(2))], "common: lib 2");
    let out = b.deploy(&origin, &soak);
    let until = first_seen(&b, &change) + chrono::Duration::seconds(3);
    assert!(out.stderr.contains("soaks until"), "{out}");
    let out = b.deploy(&origin, &soak);
    assert!(
        Utc::now() < until,
        "two passes took longer than the 3s soak; nothing can be said about the soak"
    );
    assert!(out.stderr.contains("soaks until"), "{out}");
    assert_eq!(b.ran(), vec![first.clone()]);

    sleep_past(until);
    b.deploy(&origin, &soak);
    assert_eq!(b.ran(), vec![first, change.clone()]);
    assert_eq!(b.state.status_json()["deployed"]["commit"], change.as_str());
}

#[test]
fn a_revert_inside_the_soak_window_keeps_the_bad_commit_off_the_soaking_host() {
    let (mut origin, first) = fleet_origin();
    let canary = Member::new("a");
    let rest = Member::new("b");
    canary.deploy(&origin, &["--soak", "0"]);
    rest.deploy(&origin, &["--soak", "3s"]);

    let bad = origin.commit(&[("common/lib.sh", &lib(666))], "common: lib 666");
    canary.deploy(&origin, &["--soak", "0"]);
    assert_eq!(canary.ran(), vec![first.clone(), bad.clone()]);
    assert_eq!(canary.runs()[1].lib, "666", "the canary ran the bad commit");
    let out = rest.deploy(&origin, &["--soak", "3s"]);
    assert!(out.stderr.contains("soaks until"), "{out}");
    let bad_until = first_seen(&rest, &bad) + chrono::Duration::seconds(3);

    git(origin.path(), &["revert", "--no-edit", "HEAD"]);
    let revert = origin.head();
    canary.deploy(&origin, &["--soak", "0"]);
    assert_eq!(
        canary.ran(),
        vec![first.clone(), bad.clone(), revert.clone()]
    );

    // The revert is a new tip: its own soak starts now.
    let out = rest.deploy(&origin, &["--soak", "3s"]);
    assert!(out.stderr.contains("soaks until"), "{out}");
    let revert_until = first_seen(&rest, &revert) + chrono::Duration::seconds(3);
    assert!(revert_until > bad_until);
    sleep_past(revert_until);
    let out = rest.deploy(&origin, &["--soak", "3s"]);

    assert!(
        !rest.ran().contains(&bad),
        "the bad commit ran on the soaking host: {:?}",
        rest.runs()
    );
    // The revert restores exactly what b runs: nothing changed for b.
    assert_seen_not_run(&rest, &out, &revert, 1);
    let history = rest.state.status_json()["history"].clone();
    assert!(
        !history.to_string().contains(&bad),
        "the bad commit was deployed: {history:#}"
    );
}

// ---------------------------------------------------------------------------
// First-boot recipes (docs/fleet/)
// ---------------------------------------------------------------------------

const RECIPES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/fleet");

fn recipe(name: &str) -> PathBuf {
    Path::new(RECIPES).join(name)
}

fn read_recipe(name: &str) -> String {
    fs::read_to_string(recipe(name)).unwrap_or_else(|err| panic!("read docs/fleet/{name}: {err}"))
}

/// The config every recipe writes to /etc/gitops-run/config.
const CONFIG_PATH: &str = "/etc/gitops-run/config";

/// `cloud-init schema --config-file FILE`.
fn cloud_init_schema(file: &Path) -> Run {
    run(Command::new("cloud-init")
        .args(["schema", "--config-file"])
        .arg(file))
}

/// The Python interpreter that runs `cloud-init` (it has PyYAML, which
/// cloud-init needs): from the `#!` line of the `cloud-init` program.
fn cloud_init_python() -> PathBuf {
    let paths = std::env::var_os("PATH").expect("PATH is set");
    let program = std::env::split_paths(&paths)
        .map(|dir| dir.join("cloud-init"))
        .find(|p| p.is_file())
        .expect("cloud-init is installed (apt-get install cloud-init)");
    let text = fs::read_to_string(&program).expect("read the cloud-init program");
    let first = text.lines().next().unwrap_or_default();
    let interpreter = first
        .strip_prefix("#!")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{} starts with {first:?}", program.display()));
    PathBuf::from(interpreter)
}

/// The YAML document `file` as JSON, parsed by PyYAML as cloud-init does.
fn yaml_as_json(file: &Path) -> Value {
    let out = run(Command::new(cloud_init_python())
        .args([
            "-c",
            "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)",
        ])
        .arg(file));
    assert!(out.success(), "YAML of {}: {out}", file.display());
    serde_json::from_str(&out.stdout).expect("JSON from python")
}

/// `SHELL -n` on `script`: whether it parses, and why not.
fn shell_parses(shell: &str, script: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("script");
    fs::write(&file, script).expect("write the script");
    let out = run(Command::new(shell).arg("-n").arg(&file));
    if out.success() {
        Ok(())
    } else {
        Err(out.to_string())
    }
}

/// The body of the one `%post` ... `%end` section of a kickstart file.
fn kickstart_post(text: &str) -> String {
    let mut body: Option<String> = None;
    let mut sections = 0;
    for line in text.lines() {
        match &mut body {
            None if line.starts_with("%post") => {
                sections += 1;
                body = Some(String::new());
            }
            Some(b) if line.trim() == "%end" => {
                assert!(!b.is_empty(), "an empty %post section");
                return std::mem::take(b);
            }
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
            None => {}
        }
    }
    panic!("no %post section ended by %end ({sections} started)");
}

/// The lines of the here-document that `script` writes to `path` with
/// `cat > PATH <<'EOF'`.
fn heredoc_to(script: &str, path: &str) -> String {
    let opener = format!("cat > {path} <<'EOF'");
    let mut lines = script.lines().skip_while(|l| l.trim() != opener);
    assert!(lines.next().is_some(), "no `{opener}` in the script");
    let mut out = String::new();
    for line in lines.by_ref() {
        if line == "EOF" {
            return out;
        }
        out.push_str(line);
        out.push('\n');
    }
    panic!("the here-document to {path} has no EOF line");
}

/// The `write_files` entry for `path` in the parsed cloud-config.
#[track_caller]
fn written_file<'a>(doc: &'a Value, path: &str) -> &'a Value {
    doc["write_files"]
        .as_array()
        .expect("write_files is a list")
        .iter()
        .find(|f| f["path"] == path)
        .unwrap_or_else(|| panic!("write_files has no {path}"))
}

#[test]
fn the_cloud_init_recipe_is_valid_cloud_config() {
    let out = cloud_init_schema(&recipe("cloud-init.yaml"));
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains("Valid cloud-config"), "{out}");
}

#[test]
fn cloud_init_schema_rejects_broken_copies_of_the_recipe() {
    let text = read_recipe("cloud-init.yaml");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let broken: [(&str, &str, &str); 3] = [
        ("no #cloud-config header", "#cloud-config\n", "\n"),
        (
            "a mode that is not a string",
            "permissions: '0600'",
            "permissions: 0600",
        ),
        (
            "runcmd that is not a list",
            "runcmd:\n",
            "runcmd: now\nx:\n",
        ),
    ];
    for (what, from, to) in broken {
        assert!(text.contains(from), "the recipe has no {from:?}");
        let file = dir.path().join("broken.yaml");
        fs::write(&file, text.replacen(from, to, 1)).expect("write the broken copy");
        let out = cloud_init_schema(&file);
        assert!(!out.success(), "{what}: accepted:\n{out}");
    }
}

#[test]
fn the_cloud_init_recipe_writes_private_files_and_starts_the_timer() {
    let doc = yaml_as_json(&recipe("cloud-init.yaml"));
    // `cloud-init schema` accepts unknown top-level keys: a misspelt module
    // would be skipped silently on the host. Only these are used.
    let mut keys: Vec<&str> = doc
        .as_object()
        .expect("a mapping")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        vec!["package_update", "packages", "runcmd", "write_files"]
    );

    let config = written_file(&doc, CONFIG_PATH);
    assert_eq!(config["permissions"], "0600");
    let content = config["content"].as_str().expect("content");
    assert!(
        content.lines().any(|l| l == "GITOPS_PATH=hosts/%l,common"),
        "{content}"
    );
    let key = written_file(&doc, "/etc/gitops-run/deploy_key");
    assert_eq!(key["permissions"], "0600");
    let known = written_file(&doc, "/etc/gitops-run/known_hosts");
    assert!(known["content"].as_str().is_some_and(|c| !c.is_empty()));

    let runcmd: Vec<String> = doc["runcmd"]
        .as_array()
        .expect("runcmd is a list")
        .iter()
        .map(|c| match c {
            Value::String(s) => s.clone(),
            Value::Array(words) => words
                .iter()
                .map(|w| w.as_str().expect("a word").to_owned())
                .collect::<Vec<_>>()
                .join(" "),
            other => panic!("a runcmd item that is neither text nor a list: {other}"),
        })
        .collect();
    let script = runcmd.join("\n");
    shell_parses("sh", &script).unwrap_or_else(|why| panic!("runcmd: {why}\n{script}"));
    assert!(script.contains("set -eu"), "{script}");
    assert!(
        runcmd
            .iter()
            .any(|c| c == "systemctl enable --now gitops-run.timer"),
        "{runcmd:?}"
    );
}

#[test]
fn the_recipes_write_one_config_and_it_drives_a_fleet_pass() {
    let doc = yaml_as_json(&recipe("cloud-init.yaml"));
    let config = written_file(&doc, CONFIG_PATH)["content"]
        .as_str()
        .expect("content")
        .to_owned();
    let kickstart = kickstart_post(&read_recipe("kickstart-post.ks"));
    assert_eq!(heredoc_to(&kickstart, CONFIG_PATH), config);

    // The file as the binary reads it; the repository (an ssh URL of the
    // example) is replaced by a flag, which ranks above the file.
    let (origin, first) = fleet_origin();
    let a = StateDir::new();
    let file = a.dir().join("config");
    fs::write(&file, &config).expect("write the config");
    let out = a.pass(
        &origin.url(),
        &[
            "--config",
            file.to_str().expect("UTF-8"),
            "--hostname",
            "a.fleet.example.com",
        ],
    );
    out.assert_code(0);
    let runs = runs_in(a.dir());
    assert_eq!(runs.len(), 1, "{out}");
    assert_eq!(runs[0].host, "a");
    assert_eq!(runs[0].commit, first);
    assert_eq!(runs[0].paths, "hosts/a:common");
}

#[test]
fn the_kickstart_post_section_is_valid_bash_and_writes_the_files() {
    let text = read_recipe("kickstart-post.ks");
    let body = kickstart_post(&text);
    shell_parses("bash", &body).unwrap_or_else(|why| panic!("%post: {why}"));
    let header = text
        .lines()
        .find(|l| l.starts_with("%post"))
        .expect("a %post line");
    assert!(header.contains("--interpreter=/bin/bash"), "{header}");
    assert!(header.contains("--erroronfail"), "{header}");
    for needed in [
        "set -euo pipefail",
        "sha256sum -c",
        "/etc/gitops-run/deploy_key",
        "/etc/gitops-run/known_hosts",
        "systemctl enable gitops-run.timer",
    ] {
        assert!(body.contains(needed), "%post lacks {needed:?}");
    }
}

#[test]
fn the_packer_script_is_valid_shell_and_matches_the_template() {
    let script = read_recipe("packer-provision.sh");
    shell_parses("bash", &script).unwrap_or_else(|why| panic!("bash: {why}"));
    shell_parses("sh", &script).unwrap_or_else(|why| panic!("sh: {why}"));
    assert!(script.starts_with("#!/bin/sh\n"), "runs with /bin/sh");
    let hcl = read_recipe("packer.pkr.hcl");
    assert!(
        hcl.contains("\"${path.root}/packer-provision.sh\""),
        "the template runs the script"
    );
    // What the script takes from the template: its variables and uploads.
    for var in ["FLEET_REPO", "FLEET_BRANCH"] {
        assert!(
            script.contains(&format!("${{{var}")),
            "the script uses {var}"
        );
        assert!(
            hcl.contains(&format!("\"{var}=")),
            "the template sets {var}"
        );
    }
    for upload in [
        "/tmp/gitops-run.deb",
        "/tmp/gitops-run-deploy_key",
        "/tmp/gitops-run-known_hosts",
    ] {
        assert!(
            hcl.contains(&format!("destination = \"{upload}\"")),
            "{upload}"
        );
        assert!(script.contains(upload), "the script uses {upload}");
    }
    for needed in [
        "GITOPS_PATH=hosts/%l,common",
        "systemctl stop gitops-run.timer",
        "systemctl enable gitops-run.timer",
    ] {
        assert!(script.contains(needed), "the script lacks {needed:?}");
    }
}

/// The `sh` blocks of docs/fleet.md are meant to be pasted: valid `sh`.
#[test]
fn shell_blocks_in_fleet_md_parse() {
    let doc = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/fleet.md"))
        .expect("read docs/fleet.md");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        match &mut current {
            None if line == "```sh" => current = Some(String::new()),
            Some(block) if line.starts_with("```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    assert!(current.is_none(), "an unterminated code block");
    assert!(blocks.len() >= 3, "the shell examples: {}", blocks.len());
    for block in blocks {
        shell_parses("sh", &block).unwrap_or_else(|why| panic!("{why}\n{block}"));
    }
}

#[test]
fn the_shell_check_fails_on_broken_shell() {
    for shell in ["sh", "bash"] {
        assert!(
            shell_parses(shell, "if true; then echo\n").is_err(),
            "{shell}"
        );
        assert!(
            shell_parses(shell, "cat <<'EOF'\nx\nEOF\n").is_ok(),
            "{shell}"
        );
    }
    let broken = "%post --interpreter=/bin/bash\nfor x in; do\n%end\n";
    assert!(shell_parses("bash", &kickstart_post(broken)).is_err());
}
