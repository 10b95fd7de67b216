//! Tests with files made by the real tools: `ssh-keygen` host keys, `age` and
//! `age-keygen`, and roots on /dev/shm (tmpfs) or under target/ (disk).

use super::identity::{recipient_lines, recipient_of_public_key};
use super::materialize::{materialize, Materialized};
use super::*;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use tempfile::TempDir;

/// A string that must never show up in an error.
const MARKER: &str = "hunter2-plaintext-marker-7f3a";

fn commit(c: char) -> String {
    c.to_string().repeat(40)
}

/// A throwaway HOME, so no tool reads the developer's configuration.
fn tool(name: &str, home: &Path) -> Command {
    let mut cmd = Command::new(name);
    cmd.env("HOME", home).env_remove("SSH_AUTH_SOCK");
    cmd
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("failed to start a test tool");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A host with an SSH host key made by `ssh-keygen` (`ed25519` or `rsa`).
struct Host {
    dir: TempDir,
    key: PathBuf,
    pubkey: PathBuf,
}

impl Host {
    fn new(kind: &str) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join(format!("ssh_host_{kind}_key"));
        let mut cmd = tool("ssh-keygen", dir.path());
        cmd.args(["-q", "-t", kind, "-N", "", "-C", "root@testhost", "-f"])
            .arg(&key);
        if kind == "rsa" {
            cmd.args(["-b", "2048"]);
        }
        run(&mut cmd);
        let pubkey = dir.path().join(format!("ssh_host_{kind}_key.pub"));
        assert!(pubkey.exists());
        Host { dir, key, pubkey }
    }

    fn ids(&self) -> Identities {
        Identities::load(std::slice::from_ref(&self.key), &[]).unwrap()
    }

    fn public_line(&self) -> String {
        std::fs::read_to_string(&self.pubkey).unwrap()
    }
}

/// Encrypt `plain` with the real `age`, to the recipients `args` (`-R FILE`, `-r age1...`).
fn encrypt(home: &Path, args: &[&str], plain: &[u8], out: &Path) {
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let mut child = tool("age", home)
        .args(args)
        .arg("-o")
        .arg(out)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("failed to start age");
    child.stdin.take().unwrap().write_all(plain).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "age failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn to_host(host: &Host) -> Vec<String> {
    vec!["-R".into(), host.pubkey.display().to_string()]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A secrets root on tmpfs, not yet created (materialize creates it).
fn shm_root() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir_in("/dev/shm").expect("failed to create a temp dir in /dev/shm");
    let root = dir.path().join("secrets");
    (dir, root)
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|e| {
            e.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn expect_commit_error(r: Result<Materialized, SecretsError>) -> String {
    match r {
        Err(e @ SecretsError::Commit(_)) => {
            let text = e.to_string();
            assert!(!text.contains('\n'), "not one line: {text}");
            assert!(!text.contains(MARKER), "plaintext in error: {text}");
            assert!(!format!("{e:?}").contains(MARKER), "plaintext in {e:?}");
            text
        }
        Err(e) => panic!("expected a commit error, got a host error: {e}"),
        Ok(m) => panic!("expected an error, got {m:?}"),
    }
}

#[test]
fn decrypts_into_private_dirs_with_relative_paths() {
    let host = Host::new("ed25519");
    let tree = tempfile::tempdir().unwrap();
    let t = tree.path();
    let to = to_host(&host);
    encrypt(
        host.dir.path(),
        &strs(&to),
        b"db-password\n",
        &t.join("db.age"),
    );
    encrypt(
        host.dir.path(),
        &strs(&to),
        b"api-token",
        &t.join("app/api/token.age"),
    );
    std::fs::write(t.join("app/config.toml"), "plain = true\n").unwrap();
    // A secret inside .git is never looked at.
    encrypt(
        host.dir.path(),
        &strs(&to),
        b"x",
        &t.join(".git/hidden.age"),
    );
    let (_keep, root) = shm_root();

    let ids = host.ids();
    let m = materialize(t, &[], &ids, &root, &commit('a'), &Limits::default()).unwrap();

    assert_eq!(m.dir, root.join(commit('a')));
    assert_eq!(m.count, 2);
    assert_eq!(m.bytes, ("db-password\n".len() + "api-token".len()) as u64);
    assert_eq!(
        std::fs::read(m.dir.join("db")).unwrap(),
        b"db-password\n".to_vec()
    );
    assert_eq!(
        std::fs::read(m.dir.join("app/api/token")).unwrap(),
        b"api-token".to_vec()
    );
    assert_eq!(names(&m.dir), ["app", "db"]);
    assert_eq!(
        names(&m.dir.join("app")),
        ["api"],
        "only secrets are copied"
    );
    for file in ["db", "app/api/token"] {
        assert_eq!(mode(&m.dir.join(file)), 0o600, "{file}");
    }
    for dir in [
        root.clone(),
        m.dir.clone(),
        m.dir.join("app"),
        m.dir.join("app/api"),
    ] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
    let me = nix::unistd::geteuid().as_raw();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(m.dir.join("db")).unwrap()),
        me
    );
    assert_eq!(names(&root), [commit('a')], "no temporary directory left");
    assert!(present(&root, &commit('a')));
    assert!(!present(&root, &commit('b')));
}

#[test]
fn modes_are_exact_whatever_the_umask() {
    let host = Host::new("ed25519");
    let tree = tempfile::tempdir().unwrap();
    encrypt(
        host.dir.path(),
        &strs(&to_host(&host)),
        b"s",
        &tree.path().join("a/b.age"),
    );
    let (_keep, root) = shm_root();
    // A permissive umask would make 0666/0777 of plain creates; ours are exact.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o000));
    let m = materialize(
        tree.path(),
        &[],
        &host.ids(),
        &root,
        &commit('a'),
        &Limits::default(),
    );
    nix::sys::stat::umask(old);
    let m = m.unwrap();
    assert_eq!(mode(&m.dir.join("a/b")), 0o600);
    assert_eq!(mode(&m.dir.join("a")), 0o700);
    assert_eq!(mode(&m.dir), 0o700);
}

#[test]
fn file_for_another_host_fails_naming_the_file_and_this_hosts_recipient() {
    let host = Host::new("ed25519");
    let other = Host::new("ed25519");
    let tree = tempfile::tempdir().unwrap();
    let t = tree.path();
    encrypt(
        host.dir.path(),
        &strs(&to_host(&host)),
        b"ok",
        &t.join("a.age"),
    );
    encrypt(
        other.dir.path(),
        &strs(&to_host(&other)),
        MARKER.as_bytes(),
        &t.join("hosts/other/db.age"),
    );
    let (_keep, root) = shm_root();
    let ids = host.ids();
    let err = expect_commit_error(materialize(
        t,
        &[],
        &ids,
        &root,
        &commit('a'),
        &Limits::default(),
    ));
    let recipient = recipient_of_public_key(&host.public_line()).unwrap();
    assert!(err.contains("hosts/other/db.age"), "{err}");
    assert!(err.contains(&recipient), "{err}");
    assert!(err.contains("not encrypted to this host"), "{err}");
    assert!(names(&root).is_empty(), "left behind: {:?}", names(&root));
}

#[test]
fn corrupt_truncated_and_garbage_files_fail_cleanly_and_keep_the_deployed_secrets() {
    let host = Host::new("ed25519");
    let ids = host.ids();
    let to = to_host(&host);
    let (_keep, root) = shm_root();

    // A deployed commit whose secrets must survive the failures below.
    let good = tempfile::tempdir().unwrap();
    encrypt(
        host.dir.path(),
        &strs(&to),
        b"v1",
        &good.path().join("s.age"),
    );
    materialize(
        good.path(),
        &[],
        &ids,
        &root,
        &commit('a'),
        &Limits::default(),
    )
    .unwrap();
    switch_current(&root, &commit('a')).unwrap();

    // Two chunks of plaintext: the first decrypts fine before the damage is found.
    let plain = format!("{MARKER}\n").repeat(70 * 1024 / (MARKER.len() + 1) + 1);
    type Damage = fn(&mut Vec<u8>);
    let cases: [(&str, &str, Damage); 4] = [
        ("truncated", "truncated", |b| b.truncate(b.len() - 100)),
        ("corrupt", "corrupt", |b| {
            let i = b.len() - 10;
            b[i] ^= 0x01
        }),
        ("cut-header", "truncated", |b| b.truncate(40)),
        ("garbage", "not an age file", |b| {
            *b = b"this is not age at all\n".to_vec()
        }),
    ];
    for (name, why, damage) in cases {
        let tree = tempfile::tempdir().unwrap();
        let file = tree.path().join(format!("x/{name}.age"));
        encrypt(host.dir.path(), &strs(&to), plain.as_bytes(), &file);
        encrypt(
            host.dir.path(),
            &strs(&to),
            b"fine",
            &tree.path().join("a.age"),
        );
        let mut bytes = std::fs::read(&file).unwrap();
        damage(&mut bytes);
        std::fs::write(&file, bytes).unwrap();

        let err = expect_commit_error(materialize(
            tree.path(),
            &[],
            &ids,
            &root,
            &commit('b'),
            &Limits::default(),
        ));
        assert!(err.contains(&format!("x/{name}.age")), "{name}: {err}");
        assert!(err.contains(why), "{name}: {err}");
        assert!(err.contains(&ids.recipients()[0]), "{name}: {err}");
        assert_eq!(
            names(&root),
            [commit('a'), "current".to_owned()],
            "{name}: nothing half-decrypted may remain"
        );
        assert_eq!(current_commit(&root), Some(commit('a')));
        assert_eq!(std::fs::read(root.join("current/s")).unwrap(), b"v1");
    }
}

#[test]
fn several_recipients_each_decrypt_and_a_native_identity_file_works() {
    let host = Host::new("ed25519");
    let home = tempfile::tempdir().unwrap();
    let admin_key = home.path().join("admin.txt");
    run(tool("age-keygen", home.path()).arg("-o").arg(&admin_key));
    let admin_out = tool("age-keygen", home.path())
        .arg("-y")
        .arg(&admin_key)
        .output()
        .unwrap();
    assert!(admin_out.status.success());
    let admin = String::from_utf8(admin_out.stdout)
        .unwrap()
        .trim()
        .to_owned();
    assert!(admin.starts_with("age1"));

    let tree = tempfile::tempdir().unwrap();
    let host_pub = host.pubkey.display().to_string();
    encrypt(
        home.path(),
        &["-R", &host_pub, "-r", &admin],
        b"shared",
        &tree.path().join("both.age"),
    );

    // The host decrypts it with its SSH key ...
    let (_k1, root1) = shm_root();
    let m = materialize(
        tree.path(),
        &[],
        &host.ids(),
        &root1,
        &commit('a'),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(std::fs::read(m.dir.join("both")).unwrap(), b"shared");

    // ... and the admin with a native AGE-SECRET-KEY-1 file from age-keygen.
    let admin_ids = Identities::load(std::slice::from_ref(&admin_key), &[]).unwrap();
    assert_eq!(admin_ids.recipients(), [admin.as_str()]);
    let (_k2, root2) = shm_root();
    let m = materialize(
        tree.path(),
        &[],
        &admin_ids,
        &root2,
        &commit('a'),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(std::fs::read(m.dir.join("both")).unwrap(), b"shared");

    // A file for the admin only is not for the host.
    let tree2 = tempfile::tempdir().unwrap();
    encrypt(
        home.path(),
        &["-r", &admin],
        b"admin",
        &tree2.path().join("admin.age"),
    );
    let (_k3, root3) = shm_root();
    let err = expect_commit_error(materialize(
        tree2.path(),
        &[],
        &host.ids(),
        &root3,
        &commit('a'),
        &Limits::default(),
    ));
    assert!(err.contains("admin.age"), "{err}");
}

#[test]
fn only_followed_paths_are_decrypted() {
    let host = Host::new("ed25519");
    let to = to_host(&host);
    let tree = tempfile::tempdir().unwrap();
    let t = tree.path();
    encrypt(
        host.dir.path(),
        &strs(&to),
        b"web1",
        &t.join("hosts/web1/db.age"),
    );
    encrypt(
        host.dir.path(),
        &strs(&to),
        b"common",
        &t.join("common/ca.age"),
    );
    // Not followed, and not even decryptable: must not be touched at all.
    std::fs::create_dir_all(t.join("hosts/web2")).unwrap();
    std::fs::write(t.join("hosts/web2/db.age"), "garbage").unwrap();
    std::fs::write(t.join("top.age"), "garbage").unwrap();
    let (_keep, root) = shm_root();

    let paths = vec![
        "hosts/web1".to_owned(),
        "./common/".to_owned(),
        "absent".to_owned(),
    ];
    assert_eq!(
        find(t, &paths).unwrap(),
        [
            PathBuf::from("common/ca.age"),
            PathBuf::from("hosts/web1/db.age")
        ]
    );
    let m = materialize(
        t,
        &paths,
        &host.ids(),
        &root,
        &commit('a'),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(m.count, 2);
    assert_eq!(std::fs::read(m.dir.join("hosts/web1/db")).unwrap(), b"web1");
    assert_eq!(std::fs::read(m.dir.join("common/ca")).unwrap(), b"common");
    assert!(!m.dir.join("hosts/web2").exists());
    assert!(!m.dir.join("top").exists());

    for bad in ["../etc", "/etc", "a/../../b"] {
        let r = materialize(
            t,
            &[bad.to_owned()],
            &host.ids(),
            &root,
            &commit('b'),
            &Limits::default(),
        );
        assert!(matches!(r, Err(SecretsError::Host(_))), "{bad}: {r:?}");
    }
}

#[test]
fn symlinks_never_lead_out_of_the_tree() {
    let host = Host::new("ed25519");
    let to = to_host(&host);
    let outside = tempfile::tempdir().unwrap();
    encrypt(
        host.dir.path(),
        &strs(&to),
        b"outside",
        &outside.path().join("o.age"),
    );
    let (_keep, root) = shm_root();

    // A *.age symlink to a file outside the tree fails the commit.
    let tree = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path().join("o.age"), tree.path().join("o.age")).unwrap();
    let err = expect_commit_error(materialize(
        tree.path(),
        &[],
        &host.ids(),
        &root,
        &commit('a'),
        &Limits::default(),
    ));
    assert!(
        err.contains("o.age") && err.contains("out of the tree"),
        "{err}"
    );

    // A followed path that is a symlink out of the tree fails too.
    let tree = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), tree.path().join("hosts")).unwrap();
    let err = expect_commit_error(materialize(
        tree.path(),
        &["hosts".to_owned()],
        &host.ids(),
        &root,
        &commit('a'),
        &Limits::default(),
    ));
    assert!(err.contains("out of the tree"), "{err}");

    // A symlinked directory met while walking is not entered; an in-tree *.age
    // symlink is decrypted under its own name.
    let tree = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), tree.path().join("linked-dir")).unwrap();
    encrypt(
        host.dir.path(),
        &strs(&to),
        b"real",
        &tree.path().join("real.age"),
    );
    std::os::unix::fs::symlink("real.age", tree.path().join("alias.age")).unwrap();
    let m = materialize(
        tree.path(),
        &[],
        &host.ids(),
        &root,
        &commit('b'),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(names(&m.dir), ["alias", "real"]);
    assert_eq!(std::fs::read(m.dir.join("alias")).unwrap(), b"real");
}

#[test]
fn colliding_names_fail() {
    let host = Host::new("ed25519");
    let to = to_host(&host);
    let tree = tempfile::tempdir().unwrap();
    encrypt(
        host.dir.path(),
        &strs(&to),
        b"1",
        &tree.path().join("a.age"),
    );
    encrypt(
        host.dir.path(),
        &strs(&to),
        b"2",
        &tree.path().join("a/b.age"),
    );
    let (_keep, root) = shm_root();
    let err = expect_commit_error(materialize(
        tree.path(),
        &[],
        &host.ids(),
        &root,
        &commit('a'),
        &Limits::default(),
    ));
    assert!(err.contains("a.age") && err.contains("a/b.age"), "{err}");
}

#[test]
fn per_file_limit_is_enforced_and_stated() {
    let host = Host::new("ed25519");
    let to = to_host(&host);
    let (_keep, root) = shm_root();

    // The shipped limit: 1 MiB exactly passes, one byte more fails.
    let tree = tempfile::tempdir().unwrap();
    let mut plain = MARKER.as_bytes().to_vec();
    plain.resize(MAX_SECRET_FILE_BYTES as usize, b'x');
    encrypt(
        host.dir.path(),
        &strs(&to),
        &plain,
        &tree.path().join("max.age"),
    );
    let m = materialize(
        tree.path(),
        &[],
        &host.ids(),
        &root,
        &commit('a'),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(m.bytes, MAX_SECRET_FILE_BYTES);

    plain.push(b'x');
    encrypt(
        host.dir.path(),
        &strs(&to),
        &plain,
        &tree.path().join("max.age"),
    );
    let err = expect_commit_error(materialize(
        tree.path(),
        &[],
        &host.ids(),
        &root,
        &commit('b'),
        &Limits::default(),
    ));
    assert!(err.contains("max.age"), "{err}");
    assert!(err.contains("1 MiB per secret file"), "{err}");
    assert_eq!(names(&root), [commit('a')]);

    // A small limit, enforced on the plaintext while decrypting.
    let limits = Limits {
        max_file_bytes: 1000,
        ..Limits::default()
    };
    let tree = tempfile::tempdir().unwrap();
    encrypt(
        host.dir.path(),
        &strs(&to),
        &[b'y'; 1001],
        &tree.path().join("big.age"),
    );
    let err = expect_commit_error(materialize(
        tree.path(),
        &[],
        &host.ids(),
        &root,
        &commit('c'),
        &limits,
    ));
    assert!(
        err.contains("big.age") && err.contains("1000 bytes per secret file"),
        "{err}"
    );
    assert_eq!(names(&root), [commit('a')]);

    // An encrypted file far beyond any plaintext limit is refused before decrypting.
    let tree = tempfile::tempdir().unwrap();
    let big = tree.path().join("huge.age");
    encrypt(host.dir.path(), &strs(&to), b"small", &big);
    let f = std::fs::OpenOptions::new().append(true).open(&big).unwrap();
    f.set_len(64 << 20).unwrap();
    let err = expect_commit_error(materialize(
        tree.path(),
        &[],
        &host.ids(),
        &root,
        &commit('c'),
        &Limits::default(),
    ));
    assert!(
        err.contains("huge.age") && err.contains("1 MiB per secret file"),
        "{err}"
    );
}

#[test]
fn total_limit_is_enforced_and_stated() {
    let host = Host::new("ed25519");
    let to = to_host(&host);
    let tree = tempfile::tempdir().unwrap();
    for name in ["a", "b", "c"] {
        encrypt(
            host.dir.path(),
            &strs(&to),
            &[b'z'; 400],
            &tree.path().join(format!("{name}.age")),
        );
    }
    let (_keep, root) = shm_root();
    let limits = Limits {
        max_file_bytes: 1000,
        max_total_bytes: 1000,
        max_files: 10,
    };
    let err = expect_commit_error(materialize(
        tree.path(),
        &[],
        &host.ids(),
        &root,
        &commit('a'),
        &limits,
    ));
    assert!(err.contains("1000 bytes in total"), "{err}");
    assert!(
        err.contains("c.age"),
        "the file that crossed the limit: {err}"
    );
    assert!(names(&root).is_empty());

    let shipped = Limits::default();
    assert_eq!(human_bytes(shipped.max_total_bytes), "16 MiB");
    assert_eq!(human_bytes(shipped.max_file_bytes), "1 MiB");

    let few = Limits {
        max_files: 2,
        ..Limits::default()
    };
    let err = expect_commit_error(materialize(
        tree.path(),
        &[],
        &host.ids(),
        &root,
        &commit('a'),
        &few,
    ));
    assert!(err.contains("more than 2 secret files"), "{err}");
}

#[test]
fn converted_age1_recipient_of_an_ed25519_key_decrypts_with_the_private_key() {
    let host = Host::new("ed25519");
    let recipient = recipient_of_public_key(&host.public_line()).unwrap();
    assert!(
        recipient.starts_with("age1") && recipient.len() == 62,
        "{recipient}"
    );
    // The private key converts to the same X25519 key pair.
    assert_eq!(host.ids().recipients(), [recipient.as_str()]);

    let tree = tempfile::tempdir().unwrap();
    // Through the converted recipient (an X25519 stanza) and the ssh line (an
    // ssh-ed25519 stanza), each on its own.
    encrypt(
        host.dir.path(),
        &["-r", &recipient],
        b"via-age1",
        &tree.path().join("x.age"),
    );
    encrypt(
        host.dir.path(),
        &["-R", &host.pubkey.display().to_string()],
        b"via-ssh",
        &tree.path().join("s.age"),
    );
    // ASCII armor, as `age -a` writes it, reads the same.
    encrypt(
        host.dir.path(),
        &["-a", "-r", &recipient],
        b"armored",
        &tree.path().join("a.age"),
    );
    let (_keep, root) = shm_root();
    let m = materialize(
        tree.path(),
        &[],
        &host.ids(),
        &root,
        &commit('a'),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(std::fs::read(m.dir.join("x")).unwrap(), b"via-age1");
    assert_eq!(std::fs::read(m.dir.join("s")).unwrap(), b"via-ssh");
    assert_eq!(std::fs::read(m.dir.join("a")).unwrap(), b"armored");

    // Another host's key converts to another recipient.
    let other = Host::new("ed25519");
    assert_ne!(
        recipient_of_public_key(&other.public_line()).unwrap(),
        recipient
    );
}

#[test]
fn rsa_host_key_decrypts_and_is_named_by_its_ssh_rsa_line() {
    let host = Host::new("rsa");
    let line = host.public_line();
    let recipient = recipient_of_public_key(&line).unwrap();
    assert!(recipient.starts_with("ssh-rsa AAAA"), "{recipient}");
    assert!(line.starts_with(&recipient), "the key without its comment");
    let ids = host.ids();
    assert_eq!(ids.recipients(), [recipient.as_str()]);

    let tree = tempfile::tempdir().unwrap();
    encrypt(
        host.dir.path(),
        &["-r", &recipient],
        b"rsa-secret",
        &tree.path().join("r.age"),
    );
    let (_keep, root) = shm_root();
    let m = materialize(
        tree.path(),
        &[],
        &ids,
        &root,
        &commit('a'),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(std::fs::read(m.dir.join("r")).unwrap(), b"rsa-secret");
}

#[test]
fn default_host_keys_load_those_that_exist_and_name_what_was_tried() {
    let ed = Host::new("ed25519");
    let rsa = Host::new("rsa");
    let missing = ed.dir.path().join("ssh_host_ecdsa_key");
    let ids = Identities::load(&[], &[missing.clone(), ed.key.clone(), rsa.key.clone()]).unwrap();
    let expected = vec![
        recipient_of_public_key(&ed.public_line()).unwrap(),
        recipient_of_public_key(&rsa.public_line()).unwrap(),
    ];
    assert_eq!(ids.recipients(), expected);

    // A file encrypted to the RSA key decrypts with both keys loaded.
    let tree = tempfile::tempdir().unwrap();
    encrypt(
        rsa.dir.path(),
        &strs(&to_host(&rsa)),
        b"r",
        &tree.path().join("r.age"),
    );
    let (_keep, root) = shm_root();
    materialize(
        tree.path(),
        &[],
        &ids,
        &root,
        &commit('a'),
        &Limits::default(),
    )
    .unwrap();

    // An existing but unusable host key is skipped; none usable is an error naming all.
    let junk = ed.dir.path().join("junk_key");
    std::fs::write(&junk, "not a key\n").unwrap();
    let ids = Identities::load(&[], &[junk.clone(), ed.key.clone()]).unwrap();
    assert_eq!(ids.recipients().len(), 1);
    assert_eq!(ids.skipped().len(), 1);
    let err = Identities::load(&[], &[missing.clone(), junk.clone()]).unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains(&missing.display().to_string()) && text.contains("missing"),
        "{text}"
    );
    assert!(text.contains(&junk.display().to_string()), "{text}");

    // Explicit files must all load.
    let err = Identities::load(&[ed.key.clone(), junk.clone()], &[]).unwrap_err();
    assert!(format!("{err:#}").contains(&junk.display().to_string()));
}

#[test]
fn passphrase_protected_and_secret_lines_are_reported_without_their_content() {
    let home = tempfile::tempdir().unwrap();
    let key = home.path().join("locked");
    run(tool("ssh-keygen", home.path())
        .args(["-q", "-t", "ed25519", "-N", "a passphrase", "-f"])
        .arg(&key));
    let err = format!(
        "{:#}",
        Identities::load(std::slice::from_ref(&key), &[]).unwrap_err()
    );
    assert!(err.contains("passphrase"), "{err}");

    // A native identity file with a damaged key line: the line number, not the line.
    let file = home.path().join("ids.txt");
    run(tool("age-keygen", home.path()).arg("-o").arg(&file));
    let good = std::fs::read_to_string(&file).unwrap();
    let key_line = good
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
        .unwrap();
    let damaged = format!(
        "{}{}",
        &key_line[..key_line.len() - 1],
        MARKER.to_uppercase()
    );
    std::fs::write(&file, format!("# comment\n\n{damaged}\n")).unwrap();
    let err = format!(
        "{:#}",
        Identities::load(std::slice::from_ref(&file), &[]).unwrap_err()
    );
    assert!(err.contains("line 3"), "{err}");
    assert!(
        !err.contains(&damaged) && !err.to_lowercase().contains(MARKER),
        "{err}"
    );
}

#[test]
fn a_root_not_on_ram_refuses_and_writes_nothing() {
    let host = Host::new("ed25519");
    let tree = tempfile::tempdir().unwrap();
    encrypt(
        host.dir.path(),
        &strs(&to_host(&host)),
        MARKER.as_bytes(),
        &tree.path().join("s.age"),
    );
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target).unwrap();
    let disk = tempfile::tempdir_in(&target).unwrap();
    let root = disk.path().join("secrets");

    let err = check_ram_backed(disk.path()).unwrap_err();
    assert!(
        format!("{err:#}").contains("not on a RAM-backed"),
        "{err:#}"
    );
    check_ram_backed(Path::new("/dev/shm")).unwrap();

    match materialize(
        tree.path(),
        &[],
        &host.ids(),
        &root,
        &commit('a'),
        &Limits::default(),
    ) {
        Err(SecretsError::Host(e)) => {
            let text = format!("{e:#}");
            assert!(text.contains("tmpfs or ramfs"), "{text}");
            assert!(text.contains(&root.display().to_string()), "{text}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(names(&root).is_empty(), "nothing may be written to disk");

    // A commit without secrets needs no identity and writes nothing secret.
    let plain = tempfile::tempdir().unwrap();
    std::fs::write(plain.path().join("run.sh"), "#!/bin/sh\n").unwrap();
    let m = prepare(
        plain.path(),
        &[],
        &[],
        &[],
        &root,
        &commit('b'),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(m.count, 0);
    assert!(names(&m.dir).is_empty());
}

#[test]
fn prepare_loads_identities_only_when_there_are_secrets() {
    let host = Host::new("ed25519");
    let tree = tempfile::tempdir().unwrap();
    encrypt(
        host.dir.path(),
        &strs(&to_host(&host)),
        b"p",
        &tree.path().join("p.age"),
    );
    let (_keep, root) = shm_root();
    let missing = host.dir.path().join("no_such_key");
    let err = prepare(
        tree.path(),
        &[],
        &[],
        std::slice::from_ref(&missing),
        &root,
        &commit('a'),
        &Limits::default(),
    )
    .unwrap_err();
    assert!(matches!(err, SecretsError::Host(_)));
    assert!(err.to_string().contains("no usable age identity"), "{err}");
    let m = prepare(
        tree.path(),
        &[],
        &[],
        &[missing, host.key.clone()],
        &root,
        &commit('a'),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(std::fs::read(m.dir.join("p")).unwrap(), b"p");
}

#[test]
fn switch_current_and_prune_keep_exactly_the_right_dirs() {
    let (_keep, root) = shm_root();
    std::fs::create_dir_all(&root).unwrap();
    for c in ['a', 'b', 'c'] {
        std::fs::create_dir(root.join(commit(c))).unwrap();
    }
    std::fs::create_dir(root.join(format!(".tmp-{}-x1y2", commit('d')))).unwrap();
    std::fs::write(root.join("stray"), "").unwrap();

    switch_current(&root, &commit('b')).unwrap();
    assert_eq!(
        std::fs::read_link(root.join("current")).unwrap(),
        PathBuf::from(commit('b'))
    );
    assert_eq!(current_commit(&root), Some(commit('b')));

    // `a` kept on request, `b` because current points at it.
    prune(&root, &[&commit('a')]).unwrap();
    assert_eq!(
        names(&root),
        [commit('a'), commit('b'), "current".to_owned()]
    );

    switch_current(&root, &commit('a')).unwrap();
    prune(&root, &[]).unwrap();
    assert_eq!(names(&root), [commit('a'), "current".to_owned()]);
    assert!(present(&root, &commit('a')));

    // Switching to a commit without secrets is refused and leaves current alone.
    assert!(switch_current(&root, &commit('f')).is_err());
    assert!(switch_current(&root, "current").is_err());
    assert!(switch_current(&root, "../x").is_err());
    assert_eq!(current_commit(&root), Some(commit('a')));

    // A root that does not exist (after a reboot) has nothing to prune.
    prune(&root.join("gone"), &[]).unwrap();
}

#[test]
fn after_a_reboot_the_deployed_commit_is_recreated_and_a_rerun_replaces_it() {
    let host = Host::new("ed25519");
    let tree = tempfile::tempdir().unwrap();
    encrypt(
        host.dir.path(),
        &strs(&to_host(&host)),
        b"v1",
        &tree.path().join("k.age"),
    );
    let (_keep, root) = shm_root();
    let ids = host.ids();
    materialize(
        tree.path(),
        &[],
        &ids,
        &root,
        &commit('a'),
        &Limits::default(),
    )
    .unwrap();
    switch_current(&root, &commit('a')).unwrap();

    // A reboot empties the RAM file system.
    std::fs::remove_dir_all(&root).unwrap();
    assert!(!present(&root, &commit('a')));
    materialize(
        tree.path(),
        &[],
        &ids,
        &root,
        &commit('a'),
        &Limits::default(),
    )
    .unwrap();
    switch_current(&root, &commit('a')).unwrap();
    assert_eq!(std::fs::read(root.join("current/k")).unwrap(), b"v1");

    // Materialising the same commit again replaces its directory (for example after
    // an entrypoint changed a file), and leaves no aside copy.
    std::fs::write(root.join(commit('a')).join("k"), "tampered").unwrap();
    materialize(
        tree.path(),
        &[],
        &ids,
        &root,
        &commit('a'),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(std::fs::read(root.join("current/k")).unwrap(), b"v1");
    assert_eq!(names(&root), [commit('a'), "current".to_owned()]);
}

#[test]
fn recipient_lines_read_the_host_public_key() {
    let ed = Host::new("ed25519");
    let rsa = Host::new("rsa");
    let ed_age = recipient_of_public_key(&ed.public_line()).unwrap();
    let rsa_line = recipient_of_public_key(&rsa.public_line()).unwrap();
    let missing = ed.dir.path().join("ssh_host_ecdsa_key.pub");

    // Defaults: the first public key that exists.
    assert_eq!(
        recipient_lines(None, &[ed.pubkey.clone(), rsa.pubkey.clone()]).unwrap(),
        [ed_age.as_str()]
    );
    assert_eq!(
        recipient_lines(None, &[missing.clone(), rsa.pubkey.clone()]).unwrap(),
        [rsa_line.as_str()]
    );
    let err = recipient_lines(None, std::slice::from_ref(&missing)).unwrap_err();
    assert!(format!("{err:#}").contains(&missing.display().to_string()));

    // An explicit file: a public key, or a private key.
    assert_eq!(recipient_lines(Some(&rsa.pubkey), &[]).unwrap(), [rsa_line]);
    assert_eq!(recipient_lines(Some(&ed.key), &[]).unwrap(), [ed_age]);

    // Keys age cannot use are refused by name.
    let home = tempfile::tempdir().unwrap();
    let ecdsa = home.path().join("ecdsa");
    run(tool("ssh-keygen", home.path())
        .args(["-q", "-t", "ecdsa", "-N", "", "-f"])
        .arg(&ecdsa));
    let line = std::fs::read_to_string(home.path().join("ecdsa.pub")).unwrap();
    let err = recipient_of_public_key(&line).unwrap_err();
    assert!(
        format!("{err:#}").contains("ecdsa-sha2-nistp256"),
        "{err:#}"
    );
    assert!(recipient_of_public_key("ssh-ed25519 AAAAnotbase64!").is_err());
    assert!(recipient_of_public_key("").is_err());
}

#[test]
fn default_root_follows_systemds_runtime_directory_and_the_state_dir() {
    let default_state = Path::new("/var/lib/gitops-run");
    assert_eq!(
        default_root(None, default_state),
        PathBuf::from("/run/gitops-run/secrets")
    );
    assert_eq!(
        default_root(
            Some(Path::new("/run/gitops-run/instances/mon")),
            default_state
        ),
        PathBuf::from("/run/gitops-run/instances/mon/secrets")
    );
    assert_eq!(
        default_root(Some(Path::new("/run/a:/run/b")), default_state),
        PathBuf::from("/run/a/secrets")
    );
    assert_eq!(
        default_root(Some(Path::new("relative")), default_state),
        PathBuf::from(FALLBACK_ROOT)
    );
    // Other state directories (other repositories under cron) get roots of their own.
    let a = default_root(None, Path::new("/srv/gitops/a"));
    let b = default_root(None, Path::new("/srv/gitops/b"));
    assert_ne!(a, b);
    assert_ne!(a, PathBuf::from(FALLBACK_ROOT));
    assert!(
        a.starts_with("/run/gitops-run/") && a.ends_with("secrets"),
        "{a:?}"
    );
    assert_eq!(a, default_root(None, Path::new("/srv/gitops/a")), "stable");
}

#[test]
fn plaintext_never_appears_in_errors_or_stays_behind() {
    let host = Host::new("ed25519");
    let to = to_host(&host);
    let ids = host.ids();
    let (_keep, root) = shm_root();
    // Two chunks of plaintext carrying the marker, so the first decrypts and is
    // written before a failure is found.
    let plain = format!("{MARKER}\n").repeat(70 * 1024 / (MARKER.len() + 1) + 1);

    let mut errors = Vec::new();
    // A good file written first, then a damaged one.
    let tree = tempfile::tempdir().unwrap();
    encrypt(
        host.dir.path(),
        &strs(&to),
        plain.as_bytes(),
        &tree.path().join("a-good.age"),
    );
    let bad = tree.path().join("b-bad.age");
    encrypt(host.dir.path(), &strs(&to), plain.as_bytes(), &bad);
    let mut bytes = std::fs::read(&bad).unwrap();
    let i = bytes.len() - 5;
    bytes[i] ^= 0x80;
    std::fs::write(&bad, bytes).unwrap();
    errors.push(materialize(
        tree.path(),
        &[],
        &ids,
        &root,
        &commit('a'),
        &Limits::default(),
    ));
    // Over the per-file and the total limit after some plaintext went through.
    let tree = tempfile::tempdir().unwrap();
    encrypt(
        host.dir.path(),
        &strs(&to),
        plain.as_bytes(),
        &tree.path().join("big.age"),
    );
    let small = Limits {
        max_file_bytes: 1000,
        ..Limits::default()
    };
    errors.push(materialize(
        tree.path(),
        &[],
        &ids,
        &root,
        &commit('b'),
        &small,
    ));
    let tight = Limits {
        max_total_bytes: 1000,
        ..Limits::default()
    };
    errors.push(materialize(
        tree.path(),
        &[],
        &ids,
        &root,
        &commit('c'),
        &tight,
    ));
    // Not for this host.
    let other = Host::new("ed25519");
    let tree = tempfile::tempdir().unwrap();
    encrypt(
        other.dir.path(),
        &strs(&to_host(&other)),
        plain.as_bytes(),
        &tree.path().join("o.age"),
    );
    errors.push(materialize(
        tree.path(),
        &[],
        &ids,
        &root,
        &commit('d'),
        &Limits::default(),
    ));

    for result in errors {
        let text = expect_commit_error(result);
        assert!(text.contains(".age"), "{text}");
    }
    assert!(names(&root).is_empty(), "left behind: {:?}", names(&root));
}

#[test]
fn a_file_name_with_a_newline_still_gives_one_line() {
    let host = Host::new("ed25519");
    let tree = tempfile::tempdir().unwrap();
    std::fs::write(tree.path().join("evil\nforged line.age"), "not age").unwrap();
    let (_keep, root) = shm_root();
    let err = expect_commit_error(materialize(
        tree.path(),
        &[],
        &host.ids(),
        &root,
        &commit('a'),
        &Limits::default(),
    ));
    assert!(err.contains("evil\\nforged line.age"), "{err}");
}
