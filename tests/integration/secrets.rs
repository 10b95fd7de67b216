//! Secrets in Git (issue 18) through the binary: `*.age` files made by the
//! real `age` CLI for throwaway SSH host keys from the real `ssh-keygen`,
//! decrypted by a pass with `--age-identity` into a `--secrets-root` on a
//! tmpfs (`/dev/shm`, a directory of its own per test, removed afterwards).
//!
//! Entrypoints write what they saw next to the state directory
//! (`$GITOPS_STATE_DIR/..`), never into it, so that the search for leaked
//! plaintext in the state directory finds only what gitops-run put there.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::common::{bin, git_env, run, Host, Receiver, Run, StateDir};

/// Where the per-test secrets roots go: a tmpfs on every Linux machine.
const RAM_DIR: &str = "/dev/shm";

/// An entrypoint that records `<commit> <GITOPS_SECRETS_DIR or unset>` in
/// `env`, and copies the secret `db-password` (when there is a secrets dir)
/// to `seen-<commit>`, both next to the state directory.
const READER: &str = "#!/bin/sh\n\
out=\"$GITOPS_STATE_DIR/..\"\n\
echo \"$GITOPS_COMMIT ${GITOPS_SECRETS_DIR-unset}\" >> \"$out/env\"\n\
if [ -n \"$GITOPS_SECRETS_DIR\" ]; then\n\
  cat \"$GITOPS_SECRETS_DIR/hosts/web1/db-password\" > \"$out/seen-$GITOPS_COMMIT\"\n\
fi\n";

/// The path of the secret in the repositories of these tests.
const SECRET: &str = "hosts/web1/db-password.age";

/// A throwaway SSH key pair made by `ssh-keygen`.
struct SshKey {
    private: PathBuf,
    public: PathBuf,
}

/// Scratch space of a test: keys and plaintext inputs, outside the state
/// directory and the origin.
struct Scratch {
    dir: TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix("gitops-run-secrets-scratch-")
            .tempdir()
            .expect("create a scratch directory");
        Scratch { dir }
    }

    /// A new key pair of `kind` (`ed25519` or `rsa`) named `name`.
    fn key(&self, name: &str, kind: &str) -> SshKey {
        let private = self.dir.path().join(name);
        let mut cmd = Command::new("ssh-keygen");
        git_env(&mut cmd);
        cmd.args(["-q", "-t", kind, "-N", "", "-C", name, "-f"])
            .arg(&private);
        if kind == "rsa" {
            cmd.args(["-b", "2048"]);
        }
        let out = run(&mut cmd);
        assert!(out.success(), "ssh-keygen -t {kind}: {out}");
        SshKey {
            public: private.with_extension("pub"),
            private,
        }
    }

    /// A file holding `content`, to encrypt.
    fn plaintext(&self, name: &str, content: &[u8]) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.plain"));
        fs::write(&path, content).expect("write the plaintext");
        path
    }
}

/// Whom `age` encrypts to: `-R FILE` or `-r RECIPIENT`.
enum To<'a> {
    KeyFile(&'a Path),
    Recipient(&'a str),
}

/// `age [-R FILE | -r RECIPIENT]... -o OUT INPUT` (OUT is replaced).
fn age_encrypt(input: &Path, out: &Path, to: &[To<'_>]) {
    if let Some(parent) = out.parent() {
        fs::create_dir_all(parent).expect("create the directory of the secret");
    }
    let _ = fs::remove_file(out);
    let mut cmd = Command::new("age");
    git_env(&mut cmd);
    for recipient in to {
        match recipient {
            To::KeyFile(file) => cmd.arg("-R").arg(file),
            To::Recipient(text) => cmd.args(["-r", text]),
        };
    }
    cmd.arg("-o").arg(out).arg(input);
    let result = run(&mut cmd);
    assert!(result.success(), "age: {result}");
}

/// A secrets root in its own directory on a tmpfs, removed with the value.
struct RamRoot {
    dir: TempDir,
}

impl RamRoot {
    fn new() -> RamRoot {
        assert_eq!(
            fs_type(Path::new(RAM_DIR)),
            "tmpfs",
            "these tests need {RAM_DIR} on a tmpfs"
        );
        let dir = tempfile::Builder::new()
            .prefix("gitops-run-secrets-test-")
            .tempdir_in(RAM_DIR)
            .expect("create a directory on the tmpfs");
        RamRoot { dir }
    }

    /// The secrets root; gitops-run creates it.
    fn path(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn arg(&self) -> String {
        self.path().to_string_lossy().into_owned()
    }

    /// Names in the root, sorted.
    fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.path())
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// The commit `<root>/current` points at.
    fn current(&self) -> Option<String> {
        fs::read_link(self.path().join("current"))
            .ok()
            .map(|t| t.to_string_lossy().into_owned())
    }
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}

/// The file system type of `dir` as `stat -f` names it.
fn fs_type(dir: &Path) -> String {
    let out = run(Command::new("stat").args(["-f", "-c", "%T"]).arg(dir));
    assert!(out.success(), "stat -f {}: {out}", dir.display());
    out.stdout.trim().to_owned()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|err| panic!("stat {}: {err}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// A pass of `h` with `--age-identity KEY --secrets-root ROOT` and `extra`.
fn pass(h: &Host, key: &Path, root: &str, extra: &[&str]) -> Run {
    run(h
        .pass_cmd(&["--secrets-root", root])
        .arg("--age-identity")
        .arg(key)
        .args(extra))
}

/// What the entrypoints of `h` recorded in `env`: (commit, secrets dir).
fn env_records(h: &Host) -> Vec<(String, String)> {
    fs::read_to_string(h.state.dir().join("env"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let (commit, dir) = l.split_once(' ').expect("two words");
            (commit.to_owned(), dir.to_owned())
        })
        .collect()
}

/// What the entrypoint of `commit` read from the secret, if it ran.
fn seen(state: &StateDir, commit: &str) -> Option<String> {
    fs::read_to_string(state.dir().join(format!("seen-{commit}"))).ok()
}

/// `gitops-run recipient --host-key FILE`: its lines.
fn recipient_of(key_file: &Path) -> Vec<String> {
    let mut cmd = bin();
    cmd.arg("recipient").arg("--host-key").arg(key_file);
    let out = run(&mut cmd);
    out.assert_code(0);
    out.stdout.lines().map(str::to_owned).collect()
}

/// Puts a secret encrypted to `to` at `path` in the work tree of `h`'s
/// origin (committed with the next commit).
fn put_secret(h: &Host, scratch: &Scratch, path: &str, plain: &[u8], to: &[To<'_>]) {
    let input = scratch.plaintext(&path.replace('/', "_"), plain);
    age_encrypt(&input, &h.origin.path().join(path), to);
}

#[test]
fn the_entrypoint_reads_decrypted_secrets_in_gitops_secrets_dir() {
    let scratch = Scratch::new();
    let key = scratch.key("host", "ed25519");
    let ram = RamRoot::new();
    let mut h = Host::new();
    put_secret(
        &h,
        &scratch,
        SECRET,
        b"correct horse\n",
        &[To::KeyFile(&key.public)],
    );
    let a = h.origin.commit(&[("run.sh", READER)], "with a secret");

    let out = pass(&h, &key.private, &ram.arg(), &[]);
    out.assert_code(0);
    out.assert_no_secret(&["correct horse"]);
    let dir = ram.path().join(&a);
    assert_eq!(
        env_records(&h),
        vec![(a.clone(), dir.to_string_lossy().into_owned())]
    );
    assert_eq!(seen(&h.state, &a).as_deref(), Some("correct horse\n"));

    let file = dir.join("hosts/web1/db-password");
    assert_eq!(mode(&file), 0o600, "{}", file.display());
    for d in [
        ram.path(),
        dir.clone(),
        dir.join("hosts"),
        dir.join("hosts/web1"),
    ] {
        assert_eq!(mode(&d), 0o700, "{}", d.display());
    }
    assert_eq!(ram.current().as_deref(), Some(a.as_str()));
    assert_eq!(ram.entries(), sorted(vec![a.clone(), "current".to_owned()]));
}

#[test]
fn an_rsa_host_key_decrypts_a_secret_encrypted_to_its_public_key() {
    let scratch = Scratch::new();
    let key = scratch.key("host", "rsa");
    let ram = RamRoot::new();
    let mut h = Host::new();
    put_secret(
        &h,
        &scratch,
        SECRET,
        b"rsa secret\n",
        &[To::KeyFile(&key.public)],
    );
    let a = h.origin.commit(&[("run.sh", READER)], "with a secret");

    pass(&h, &key.private, &ram.arg(), &[]).assert_code(0);
    assert_eq!(seen(&h.state, &a).as_deref(), Some("rsa secret\n"));
}

#[test]
fn a_secret_for_another_host_fails_the_deployment_before_the_entrypoint_runs() {
    let scratch = Scratch::new();
    let key = scratch.key("host", "ed25519");
    let other = scratch.key("other", "ed25519");
    let ram = RamRoot::new();
    let mut h = Host::new();
    let a = h.origin.commit(&[("run.sh", READER)], "no secrets yet");
    pass(&h, &key.private, &ram.arg(), &[]).assert_code(0);
    put_secret(
        &h,
        &scratch,
        SECRET,
        b"not for you\n",
        &[To::KeyFile(&other.public)],
    );
    let b = h
        .origin
        .commit(&[("b.txt", "b\n")], "a secret for another host");

    let out = pass(&h, &key.private, &ram.arg(), &[]);
    out.assert_code(5);
    let mine = recipient_of(&key.public);
    assert_eq!(mine.len(), 1, "{mine:?}");
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains(SECRET))
        .unwrap_or_else(|| panic!("no line names {SECRET}:\n{out}"));
    assert!(
        line.contains(&mine[0]),
        "the line names this host's recipient {}: {line}",
        mine[0]
    );
    assert_eq!(env_records(&h).len(), 1, "the entrypoint ran for {b}");
    h.state.assert_deployed(&a);
    let st = h.state.status_json();
    assert_eq!(st["last_attempt"]["commit"], b.as_str());
    assert_eq!(st["last_attempt"]["result"], "secrets-failed");
    assert!(
        ram.entries()
            .iter()
            .all(|e| e != &b && !e.starts_with(".tmp")),
        "something of {b} was left in the root: {:?}",
        ram.entries()
    );
}

#[test]
fn a_corrupt_or_truncated_secret_fails_cleanly() {
    let scratch = Scratch::new();
    let key = scratch.key("host", "ed25519");
    let ram = RamRoot::new();
    let mut h = Host::new();
    let a = h.origin.commit(&[("run.sh", READER)], "no secrets yet");
    pass(&h, &key.private, &ram.arg(), &[]).assert_code(0);

    // A good file, big enough for two payload chunks, to damage.
    let plain: Vec<u8> = (0..100_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let good = scratch.dir.path().join("good.age");
    age_encrypt(
        &scratch.plaintext("good", &plain),
        &good,
        &[To::KeyFile(&key.public)],
    );
    let bytes = fs::read(&good).expect("read the encrypted file");
    let mut flipped = bytes.clone();
    let middle = flipped.len() - 1000;
    flipped[middle] ^= 0x55;
    // What was done to the file, the result, and the words the reason may use.
    let damaged: [(&str, Vec<u8>, &[&str]); 4] = [
        ("a flipped byte in the payload", flipped, &["corrupt"]),
        (
            "cut in the payload",
            bytes[..bytes.len() / 2].to_vec(),
            &["truncated", "corrupt"],
        ),
        ("cut in the header", bytes[..40].to_vec(), &["truncated"]),
        (
            "not an age file",
            b"just some text\n".to_vec(),
            &["not an age file"],
        ),
    ];
    for (i, (what, content, reasons)) in damaged.iter().enumerate() {
        let path = h.origin.path().join(SECRET);
        fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        fs::write(&path, content).expect("write the damaged secret");
        let commit = h
            .origin
            .commit(&[("n", &format!("{i}\n"))], &format!("secret: {what}"));

        let out = pass(&h, &key.private, &ram.arg(), &[]);
        out.assert_code(5);
        let line = out
            .stderr
            .lines()
            .find(|l| l.contains(SECRET))
            .unwrap_or_else(|| panic!("{what}: no line names the file:\n{out}"));
        assert!(
            reasons.iter().any(|r| line.contains(r)),
            "{what}: the line says neither of {reasons:?}: {line}"
        );
        let st = h.state.status_json();
        assert_eq!(st["last_attempt"]["commit"], commit.as_str(), "{what}");
        assert_eq!(st["last_attempt"]["result"], "secrets-failed", "{what}");
        assert_eq!(env_records(&h).len(), 1, "{what}: the entrypoint ran");
        h.state.assert_deployed(&a);
        assert!(
            !ram.entries()
                .iter()
                .any(|e| e == &commit || e.starts_with(".tmp")),
            "{what}: left behind: {:?}",
            ram.entries()
        );
    }
}

#[test]
fn a_secret_for_several_recipients_decrypts_on_each_of_their_hosts() {
    let scratch = Scratch::new();
    let ed = scratch.key("web1", "ed25519");
    let rsa = scratch.key("web2", "rsa");
    let admin = scratch.key("admin", "ed25519");
    let admin_recipient = recipient_of(&admin.public).remove(0);
    let mut h = Host::new();
    put_secret(
        &h,
        &scratch,
        SECRET,
        b"shared\n",
        &[
            To::KeyFile(&ed.public),
            To::KeyFile(&rsa.public),
            To::Recipient(&admin_recipient),
        ],
    );
    let a = h.origin.commit(&[("run.sh", READER)], "shared secret");

    for key in [&ed, &rsa, &admin] {
        let ram = RamRoot::new();
        let state = StateDir::new();
        let out = run(state
            .pass_cmd(&h.origin.url(), &["--secrets-root", &ram.arg()])
            .arg("--age-identity")
            .arg(&key.private));
        out.assert_code(0);
        assert_eq!(
            seen(&state, &a).as_deref(),
            Some("shared\n"),
            "{}",
            key.private.display()
        );
    }
}

/// Every file below `dir` (symlinks are not followed) that contains `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let bytes = fs::read(&path).unwrap_or_default();
                if contains(&bytes, needle) {
                    found.push(path);
                }
            }
        }
    }
    found
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn no_plaintext_reaches_the_state_dir_stderr_or_the_webhook() {
    const PLAIN: &str = "pl41nt3xt-that-must-stay-in-ram";
    // Reads the secret and says only its checksum.
    const CHECKSUM: &str = "#!/bin/sh\nsha256sum \"$GITOPS_SECRETS_DIR/token\"\n";
    let scratch = Scratch::new();
    let key = scratch.key("host", "ed25519");
    let other = scratch.key("other", "ed25519");
    let ram = RamRoot::new();
    let rx = Receiver::start(vec![]);
    let url = rx.url("/api/webhooks/1/token");
    let mut h = Host::new();
    let hook = ["--webhook-url", url.as_str()];

    put_secret(
        &h,
        &scratch,
        "token.age",
        PLAIN.as_bytes(),
        &[To::KeyFile(&key.public)],
    );
    h.origin
        .commit(&[("run.sh", CHECKSUM)], "deploy with a token");
    let mut outputs = vec![pass(&h, &key.private, &ram.arg(), &hook)];
    outputs[0].assert_code(0);

    // A failing entrypoint: its log goes to the webhook as an attachment.
    h.origin.commit(
        &[("run.sh", &format!("{CHECKSUM}exit 1\n"))],
        "fail after reading the token",
    );
    outputs.push(pass(&h, &key.private, &ram.arg(), &hook));
    outputs[1].assert_code(5);

    // A secret this host cannot read, next to the readable one.
    put_secret(
        &h,
        &scratch,
        "other.age",
        PLAIN.as_bytes(),
        &[To::KeyFile(&other.public)],
    );
    h.origin
        .commit(&[("run.sh", CHECKSUM)], "a secret for another host");
    outputs.push(pass(&h, &key.private, &ram.arg(), &hook));
    outputs[2].assert_code(5);

    // The search finds the plaintext where it belongs, and only there.
    let deployed = h.state.current().expect("a deployed commit");
    let in_ram = files_containing(&ram.path(), PLAIN.as_bytes());
    assert_eq!(
        in_ram,
        vec![ram.path().join(&deployed).join("token")],
        "the plaintext is in the deployed commit's secrets"
    );

    let leaked = files_containing(h.state.path(), PLAIN.as_bytes());
    assert!(leaked.is_empty(), "plaintext in the state dir: {leaked:?}");
    for out in &outputs {
        out.assert_no_secret(&[PLAIN]);
    }
    let requests = rx.wait_for(3, std::time::Duration::from_secs(5));
    assert_eq!(requests.len(), 3, "one message per pass");
    for r in &requests {
        assert!(
            !contains(&r.body, PLAIN.as_bytes()),
            "plaintext in a webhook body: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
}

#[test]
fn the_secrets_dir_is_replaced_on_the_next_deployment() {
    // Records which secrets `current` pointed at while the entrypoint ran.
    const SWITCH: &str = "#!/bin/sh\n\
    out=\"$GITOPS_STATE_DIR/..\"\n\
    echo \"$GITOPS_COMMIT $(readlink \"$GITOPS_SECRETS_DIR/../current\" || echo none)\" >> \"$out/current-during\"\n\
    cat \"$GITOPS_SECRETS_DIR/hosts/web1/db-password\" > \"$out/seen-$GITOPS_COMMIT\"\n";
    let scratch = Scratch::new();
    let key = scratch.key("host", "ed25519");
    let ram = RamRoot::new();
    let mut h = Host::new();
    put_secret(
        &h,
        &scratch,
        SECRET,
        b"version 1\n",
        &[To::KeyFile(&key.public)],
    );
    let a = h.origin.commit(&[("run.sh", SWITCH)], "v1");
    pass(&h, &key.private, &ram.arg(), &[]).assert_code(0);
    assert_eq!(ram.current().as_deref(), Some(a.as_str()));

    put_secret(
        &h,
        &scratch,
        SECRET,
        b"version 2\n",
        &[To::KeyFile(&key.public)],
    );
    let b = h.origin.commit(&[], "v2");
    pass(&h, &key.private, &ram.arg(), &[]).assert_code(0);

    assert_eq!(seen(&h.state, &b).as_deref(), Some("version 2\n"));
    let during = fs::read_to_string(h.state.dir().join("current-during")).unwrap_or_default();
    assert_eq!(
        during.lines().last(),
        Some(format!("{b} {a}").as_str()),
        "while the new entrypoint ran, current still named the deployed secrets"
    );
    assert_eq!(ram.current().as_deref(), Some(b.as_str()));
    assert_eq!(ram.entries(), sorted(vec![b.clone(), "current".to_owned()]));
    assert_eq!(
        fs::read_to_string(ram.path().join("current/hosts/web1/db-password")).ok(),
        Some("version 2\n".to_owned())
    );
}

#[test]
fn after_a_reboot_the_pass_recreates_the_deployed_secrets_without_running_the_entrypoint() {
    let scratch = Scratch::new();
    let key = scratch.key("host", "ed25519");
    let ram = RamRoot::new();
    let mut h = Host::new();
    put_secret(
        &h,
        &scratch,
        SECRET,
        b"survives reboots\n",
        &[To::KeyFile(&key.public)],
    );
    let a = h.origin.commit(&[("run.sh", READER)], "with a secret");
    pass(&h, &key.private, &ram.arg(), &[]).assert_code(0);

    // A reboot empties the RAM-backed root.
    for name in ram.entries() {
        let path = ram.path().join(&name);
        if name == "current" {
            fs::remove_file(&path).expect("remove current");
        } else {
            fs::remove_dir_all(&path).expect("remove a commit's secrets");
        }
    }
    let out = pass(&h, &key.private, &ram.arg(), &[]);
    out.assert_code(0);
    assert_eq!(env_records(&h).len(), 1, "the entrypoint ran again:\n{out}");
    assert_eq!(ram.current().as_deref(), Some(a.as_str()));
    let file = ram.path().join(&a).join("hosts/web1/db-password");
    assert_eq!(
        fs::read_to_string(&file).ok().as_deref(),
        Some("survives reboots\n")
    );
    assert_eq!(mode(&file), 0o600);
}

/// A pass of a commit holding a secret, with secrets turned off by `off`
/// (which adds to the pass command): the entrypoint gets no
/// `GITOPS_SECRETS_DIR`, finds the `.age` file as it is in the commit, and
/// no secrets root is created.
fn secrets_off_leaves_age_files_alone(off: impl FnOnce(&mut Command)) {
    const LISTS: &str = "#!/bin/sh\n\
    echo \"${GITOPS_SECRETS_DIR-unset}\" > \"$GITOPS_STATE_DIR/../secrets-dir\"\n\
    test -f hosts/web1/db-password.age && echo present > \"$GITOPS_STATE_DIR/../age-file\"\n";
    let scratch = Scratch::new();
    let key = scratch.key("host", "ed25519");
    let ram = RamRoot::new();
    let mut h = Host::new();
    put_secret(
        &h,
        &scratch,
        SECRET,
        b"left alone\n",
        &[To::KeyFile(&key.public)],
    );
    let a = h.origin.commit(&[("run.sh", LISTS)], "with a secret");

    let mut cmd = h.pass_cmd(&["--secrets-root", &ram.arg()]);
    cmd.arg("--age-identity").arg(&key.private);
    off(&mut cmd);
    let out = run(&mut cmd);
    out.assert_code(0);
    h.state.assert_deployed(&a);
    let read = |name: &str| fs::read_to_string(h.state.dir().join(name)).unwrap_or_default();
    assert_eq!(read("secrets-dir"), "unset\n");
    assert_eq!(read("age-file"), "present\n");
    assert!(!ram.path().exists(), "the secrets root was created");
}

#[test]
fn secrets_off_leaves_age_files_as_ordinary_files() {
    secrets_off_leaves_age_files_alone(|cmd| {
        cmd.args(["--secrets", "off"]);
    });
}

#[test]
fn gitops_secrets_off_in_the_environment_leaves_age_files_as_ordinary_files() {
    secrets_off_leaves_age_files_alone(|cmd| {
        cmd.env("GITOPS_SECRETS", "off");
    });
}

#[test]
fn a_commit_without_age_files_needs_no_ram_backed_root() {
    let scratch = Scratch::new();
    let key = scratch.key("host", "ed25519");
    let disk = tempfile::Builder::new()
        .prefix("gitops-run-secrets-on-disk-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("create a directory on disk");
    let root = disk.path().join("root");
    assert_disk(disk.path());
    let mut h = Host::new();
    let a = h.origin.commit(&[("run.sh", READER)], "no secrets");

    let out = pass(&h, &key.private, &root.to_string_lossy(), &[]);
    out.assert_code(0);
    assert_eq!(env_records(&h), vec![(a, "unset".to_owned())]);
}

/// Fails the test when `dir` is on a RAM-backed file system, where the
/// tests of a disk-backed root would prove nothing.
fn assert_disk(dir: &Path) {
    let kind = fs_type(dir);
    assert!(
        kind != "tmpfs" && kind != "ramfs",
        "{} is on {kind}; this test needs a disk-backed directory",
        dir.display()
    );
}

#[test]
fn secrets_for_a_root_not_in_ram_are_refused_with_a_clear_message() {
    let scratch = Scratch::new();
    let key = scratch.key("host", "ed25519");
    let disk = tempfile::Builder::new()
        .prefix("gitops-run-secrets-on-disk-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("create a directory on disk");
    assert_disk(disk.path());
    let root = disk.path().join("root");
    let mut h = Host::new();
    put_secret(
        &h,
        &scratch,
        SECRET,
        b"never on disk\n",
        &[To::KeyFile(&key.public)],
    );
    h.origin.commit(&[("run.sh", READER)], "with a secret");

    let out = pass(&h, &key.private, &root.to_string_lossy(), &[]);
    assert_ne!(out.code, Some(0), "{out}");
    let error = out.one_error_line();
    assert!(
        error.contains(&root.to_string_lossy().into_owned())
            && error.contains("not on a RAM-backed file system"),
        "{error}"
    );
    assert!(env_records(&h).is_empty(), "the entrypoint ran");
    assert!(
        files_containing(disk.path(), b"never on disk").is_empty(),
        "plaintext reached the disk"
    );
}

#[test]
fn recipient_prints_what_age_encrypts_to_and_the_pass_decrypts() {
    let scratch = Scratch::new();
    for kind in ["ed25519", "rsa"] {
        let key = scratch.key(&format!("host-{kind}"), kind);
        let lines = recipient_of(&key.public);
        assert_eq!(lines.len(), 1, "{lines:?}");
        let recipient = &lines[0];
        let prefix = if kind == "rsa" { "ssh-rsa " } else { "age1" };
        assert!(recipient.starts_with(prefix), "{kind}: {recipient}");

        let ram = RamRoot::new();
        let mut h = Host::new();
        let secret = format!("for the {kind} host\n");
        put_secret(
            &h,
            &scratch,
            SECRET,
            secret.as_bytes(),
            &[To::Recipient(recipient)],
        );
        let a = h.origin.commit(&[("run.sh", READER)], "with a secret");
        pass(&h, &key.private, &ram.arg(), &[]).assert_code(0);
        assert_eq!(seen(&h.state, &a), Some(secret), "{kind}");
    }
}

#[test]
fn a_secret_over_the_per_file_limit_fails_and_names_the_limit() {
    let scratch = Scratch::new();
    let key = scratch.key("host", "ed25519");
    let ram = RamRoot::new();
    let mut h = Host::new();
    let big = vec![b'x'; 2 << 20];
    put_secret(&h, &scratch, SECRET, &big, &[To::KeyFile(&key.public)]);
    let a = h.origin.commit(&[("run.sh", READER)], "a 2 MiB secret");

    let out = pass(&h, &key.private, &ram.arg(), &[]);
    out.assert_code(5);
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains(SECRET))
        .unwrap_or_else(|| panic!("no line names {SECRET}:\n{out}"));
    assert!(line.contains("1 MiB"), "the line states the limit: {line}");
    assert_eq!(
        h.state.status_json()["last_attempt"]["result"],
        "secrets-failed"
    );
    assert!(env_records(&h).is_empty(), "the entrypoint ran");
    assert!(
        !ram.entries()
            .iter()
            .any(|e| e == &a || e.starts_with(".tmp")),
        "left behind: {:?}",
        ram.entries()
    );
}
