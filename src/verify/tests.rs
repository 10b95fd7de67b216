//! Verdicts on real signatures: keys made by ssh-keygen and gpg, commits
//! signed by `git commit -S`, raw objects read back with `git cat-file`.

use std::path::Path;

use super::testkit::{splice_signature, strip_signature, Sandbox, SshKeyPair, DEFAULT_DATE};
use super::{RefusalReason, SignatureKind, TrustedKeys};

fn ssh_keys(sandbox: &Sandbox, text: &str) -> TrustedKeys {
    TrustedKeys::load(Some(&sandbox.allowed_signers(text)), None).expect("load allowed signers")
}

fn refusal(keys: &TrustedKeys, raw: &[u8]) -> super::Refusal {
    match keys.verify_commit(raw) {
        Ok(s) => panic!("expected a refusal, got {s}"),
        Err(r) => r,
    }
}

/// `git verify-commit` with the same allowed-signers file: our verdict must
/// agree with git's on which bytes were signed.
fn git_accepts_ssh(sandbox: &Sandbox, signers: &Path, id: &str) -> bool {
    sandbox
        .command("git")
        .arg("-c")
        .arg(format!("gpg.ssh.allowedSignersFile={}", signers.display()))
        .args(["verify-commit", id])
        .output()
        .expect("git verify-commit")
        .status
        .success()
}

fn good_ssh(kind: &str, extra: &[&str]) {
    let sb = Sandbox::new();
    let key = sb.ssh_key("alice", kind, extra);
    let signers = sb.allowed_signers(&format!(
        "# team\nalice@example.test {} alice's laptop\n",
        key.public_key()
    ));
    let keys = TrustedKeys::load(Some(&signers), None).unwrap();
    let id = sb.commit_ssh(&key, "deploy web", DEFAULT_DATE);
    let signer = keys.verify_commit(&sb.raw(&id)).unwrap();
    assert_eq!(signer.kind, SignatureKind::Ssh);
    assert_eq!(signer.signer, "alice@example.test");
    assert_eq!(signer.fingerprint, key.fingerprint(&sb));
    assert!(git_accepts_ssh(&sb, &signers, &id), "git agrees");
}

#[test]
fn good_ssh_ed25519_commit_is_accepted_with_principal_and_fingerprint() {
    good_ssh("ed25519", &[]);
}

#[test]
fn good_ssh_rsa_commit_signed_with_rsa_sha2_512_is_accepted() {
    let sb = Sandbox::new();
    let key = sb.ssh_key("alice", "rsa", &["-b", "3072"]);
    let keys = ssh_keys(&sb, &format!("alice@example.test {}\n", key.public_key()));
    let id = sb.commit_ssh(&key, "deploy", DEFAULT_DATE);
    let raw = sb.raw(&id);
    let sig = super::commit::split(&raw).signature.unwrap();
    let parsed = ssh_key::SshSig::from_pem(&sig).unwrap();
    assert_eq!(
        parsed.algorithm().as_str(),
        "rsa-sha2-512",
        "what ssh-keygen makes"
    );
    let signer = keys.verify_commit(&raw).unwrap();
    assert_eq!(signer.fingerprint, key.fingerprint(&sb));
}

#[test]
fn good_ssh_ecdsa_p256_and_p384_commits_are_accepted() {
    good_ssh("ecdsa", &["-b", "256"]);
    good_ssh("ecdsa", &["-b", "384"]);
}

#[test]
fn every_allowed_signers_line_for_the_key_names_its_principals() {
    let sb = Sandbox::new();
    let key = sb.ssh_key("alice", "ed25519", &[]);
    let k = key.public_key();
    let keys = ssh_keys(
        &sb,
        &format!(
            "alice@example.test {k}\n\"ops team,deployers\" namespaces=\"git\" {k}\nfile-only namespaces=\"file\" {k}\n"
        ),
    );
    let id = sb.commit_ssh(&key, "deploy", DEFAULT_DATE);
    let signer = keys.verify_commit(&sb.raw(&id)).unwrap();
    assert_eq!(signer.signer, "alice@example.test,ops team,deployers");
}

#[test]
fn unsigned_commit_is_refused() {
    let sb = Sandbox::new();
    let key = sb.ssh_key("alice", "ed25519", &[]);
    let keys = ssh_keys(&sb, &format!("alice {}\n", key.public_key()));
    let id = sb.commit_unsigned("no signature");
    let r = refusal(&keys, &sb.raw(&id));
    assert_eq!(r.reason, RefusalReason::Unsigned);
    assert_eq!(r.fingerprint, None);
}

#[test]
fn ssh_signature_by_a_key_not_in_allowed_signers_is_unknown_key() {
    let sb = Sandbox::new();
    let alice = sb.ssh_key("alice", "ed25519", &[]);
    let mallory = sb.ssh_key("mallory", "ed25519", &[]);
    let keys = ssh_keys(&sb, &format!("alice {}\n", alice.public_key()));
    let id = sb.commit_ssh(&mallory, "sneaky", DEFAULT_DATE);
    let r = refusal(&keys, &sb.raw(&id));
    assert_eq!(r.reason, RefusalReason::UnknownKey);
    assert_eq!(r.fingerprint, Some(mallory.fingerprint(&sb)));
    assert!(r.detail.contains(&mallory.fingerprint(&sb)), "{}", r.detail);
}

#[test]
fn ssh_signature_without_an_allowed_signers_file_is_unknown_key() {
    let sb = Sandbox::new();
    let key = sb.ssh_key("alice", "ed25519", &[]);
    let fpr = sb.gpg_key(
        "Alice <alice@example.test>",
        "ed25519",
        "sign",
        "never",
        None,
    );
    let dir = sb.keys_dir("keys", &[("alice.asc", &sb.gpg_export(&[&fpr], true))]);
    let keys = TrustedKeys::load(None, Some(&dir)).unwrap();
    let id = sb.commit_ssh(&key, "deploy", DEFAULT_DATE);
    let r = refusal(&keys, &sb.raw(&id));
    assert_eq!(r.reason, RefusalReason::UnknownKey);
    assert!(r.detail.contains("no allowed signers"), "{}", r.detail);
}

#[test]
fn ssh_key_outside_valid_after_or_valid_before_at_committer_time_is_refused() {
    let sb = Sandbox::new();
    let key = sb.ssh_key("alice", "ed25519", &[]);
    let k = key.public_key();
    // Committed 2024-06-01T12:00:00Z.
    let id = sb.commit_ssh(&key, "deploy", "2024-06-01T12:00:00Z");
    let raw = sb.raw(&id);
    let verdict = |opts: &str| ssh_keys(&sb, &format!("alice {opts} {k}\n")).verify_commit(&raw);

    let r = verdict("valid-before=\"20240601115959Z\"").unwrap_err();
    assert_eq!(r.reason, RefusalReason::KeyExpired);
    assert!(r.detail.contains("2024-06-01T11:59:59Z"), "{}", r.detail);
    assert!(r.detail.contains("allowed_signers:1"), "{}", r.detail);
    assert_eq!(r.fingerprint, Some(key.fingerprint(&sb)));

    let r = verdict("valid-after=\"202406011201Z\"").unwrap_err();
    assert_eq!(r.reason, RefusalReason::KeyNotYetValid);

    // Both bounds are inclusive, as in ssh-keygen.
    verdict("valid-after=\"20240601120000Z\"").unwrap();
    verdict("valid-before=\"20240601120000Z\"").unwrap();
    verdict("valid-after=\"20240101\",valid-before=\"20250101Z\"").unwrap();
}

#[test]
fn ssh_key_whose_namespaces_exclude_git_does_not_verify_commits() {
    let sb = Sandbox::new();
    let key = sb.ssh_key("alice", "ed25519", &[]);
    let k = key.public_key();
    let id = sb.commit_ssh(&key, "deploy", DEFAULT_DATE);
    let raw = sb.raw(&id);
    let r = ssh_keys(&sb, &format!("alice namespaces=\"file\" {k}\n"))
        .verify_commit(&raw)
        .unwrap_err();
    assert_eq!(r.reason, RefusalReason::WrongNamespace);
    assert!(r.detail.contains("\"file\""), "{}", r.detail);
    ssh_keys(&sb, &format!("alice namespaces=\"file,git\" {k}\n"))
        .verify_commit(&raw)
        .unwrap();
}

#[test]
fn ssh_signature_made_in_another_namespace_is_refused() {
    let sb = Sandbox::new();
    let key = sb.ssh_key("alice", "ed25519", &[]);
    let signers = sb.allowed_signers(&format!("alice {}\n", key.public_key()));
    let keys = TrustedKeys::load(Some(&signers), None).unwrap();
    let unsigned = sb.raw(&sb.commit_unsigned("deploy"));
    let sig = sb.ssh_sign(&key, "file", &unsigned);
    let id = sb.write_commit(&splice_signature(&unsigned, &sig));
    let r = refusal(&keys, &sb.raw(&id));
    assert_eq!(r.reason, RefusalReason::WrongNamespace);
    assert!(r.detail.contains("\"file\""), "{}", r.detail);
    assert_eq!(
        r.fingerprint,
        Some(key.fingerprint(&sb)),
        "the key it claims"
    );
    assert!(!git_accepts_ssh(&sb, &signers, &id), "git refuses it too");

    // The same splice with namespace git is a good signature: the splice is sound.
    let sig = sb.ssh_sign(&key, "git", &unsigned);
    let id = sb.write_commit(&splice_signature(&unsigned, &sig));
    keys.verify_commit(&sb.raw(&id)).unwrap();
    assert!(git_accepts_ssh(&sb, &signers, &id));
}

#[test]
fn tampered_ssh_signed_commit_is_a_bad_signature() {
    let sb = Sandbox::new();
    let key = sb.ssh_key("alice", "ed25519", &[]);
    let signers = sb.allowed_signers(&format!("alice {}\n", key.public_key()));
    let keys = TrustedKeys::load(Some(&signers), None).unwrap();
    let id = sb.commit_ssh(&key, "deploy version 1", DEFAULT_DATE);
    let raw = sb.raw(&id);
    let text = String::from_utf8(raw).unwrap();
    let forged = text.replace("deploy version 1", "deploy version 6");
    let forged_id = sb.write_commit(forged.as_bytes());
    assert_ne!(forged_id, id);
    let r = refusal(&keys, &sb.raw(&forged_id));
    assert_eq!(r.reason, RefusalReason::BadSignature);
    assert_eq!(r.fingerprint, Some(key.fingerprint(&sb)));
    assert!(
        !git_accepts_ssh(&sb, &signers, &forged_id),
        "git refuses it too"
    );
}

// ---- SSH signatures no tool makes: SHA-1 hash, ssh-rsa scheme. ----
//
// ssh-keygen -Y sign only hashes with sha256/sha512 and signs RSA with
// rsa-sha2-512, so these blobs are assembled here by hand (PROTOCOL.sshsig),
// signed with the private key ssh-keygen made. Each weak variant has a
// control built by the same code with an accepted algorithm, which both
// ssh-keygen -Y verify and our verifier accept.

fn wire_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&u32::try_from(bytes.len()).unwrap().to_be_bytes());
    out.extend_from_slice(bytes);
}

fn sshsig_armor(
    public: &ssh_key::PublicKey,
    namespace: &str,
    hash_alg: &str,
    sig_alg: &str,
    sig_bytes: &[u8],
) -> Vec<u8> {
    use base64::Engine;
    let mut blob = b"SSHSIG".to_vec();
    blob.extend_from_slice(&1u32.to_be_bytes());
    wire_string(&mut blob, &public.to_bytes().unwrap());
    wire_string(&mut blob, namespace.as_bytes());
    wire_string(&mut blob, b"");
    wire_string(&mut blob, hash_alg.as_bytes());
    let mut sig = Vec::new();
    wire_string(&mut sig, sig_alg.as_bytes());
    wire_string(&mut sig, sig_bytes);
    wire_string(&mut blob, &sig);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&blob);
    let mut armored = String::from("-----BEGIN SSH SIGNATURE-----\n");
    for chunk in b64.as_bytes().chunks(70) {
        armored.push_str(std::str::from_utf8(chunk).unwrap());
        armored.push('\n');
    }
    armored.push_str("-----END SSH SIGNATURE-----\n");
    armored.into_bytes()
}

/// The bytes an SSHSIG signature signs (PROTOCOL.sshsig).
fn sshsig_signed_data(namespace: &str, hash_alg: &str, hash: &[u8]) -> Vec<u8> {
    let mut data = b"SSHSIG".to_vec();
    wire_string(&mut data, namespace.as_bytes());
    wire_string(&mut data, b"");
    wire_string(&mut data, hash_alg.as_bytes());
    wire_string(&mut data, hash);
    data
}

fn load_private(key: &SshKeyPair) -> ssh_key::PrivateKey {
    ssh_key::PrivateKey::read_openssh_file(&key.private).unwrap()
}

/// A hand-made ed25519 SSHSIG over `msg` hashed with `hash_alg`.
fn hand_made_ed25519(key: &SshKeyPair, hash_alg: &str, msg: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    use signature::Signer;
    let private = load_private(key);
    let hash = match hash_alg {
        "sha1" => sha1::Sha1::digest(msg).to_vec(),
        "sha512" => sha2::Sha512::digest(msg).to_vec(),
        other => panic!("no hash {other}"),
    };
    let sig: ssh_key::Signature = private
        .try_sign(&sshsig_signed_data("git", hash_alg, &hash))
        .unwrap();
    sshsig_armor(
        private.public_key(),
        "git",
        hash_alg,
        sig.algorithm().as_str(),
        sig.as_bytes(),
    )
}

#[test]
fn ssh_signature_hashing_with_sha1_is_a_weak_algorithm() {
    let sb = Sandbox::new();
    let key = sb.ssh_key("alice", "ed25519", &[]);
    let signers = sb.allowed_signers(&format!("alice {}\n", key.public_key()));
    let keys = TrustedKeys::load(Some(&signers), None).unwrap();
    let unsigned = sb.raw(&sb.commit_unsigned("deploy"));

    let control = hand_made_ed25519(&key, "sha512", &unsigned);
    assert!(sb.ssh_keygen_accepts(&signers, "alice", &control, &unsigned));
    let id = sb.write_commit(&splice_signature(&unsigned, &control));
    keys.verify_commit(&sb.raw(&id)).unwrap();

    let weak = hand_made_ed25519(&key, "sha1", &unsigned);
    let id = sb.write_commit(&splice_signature(&unsigned, &weak));
    let r = refusal(&keys, &sb.raw(&id));
    assert_eq!(r.reason, RefusalReason::WeakAlgorithm);
    assert!(r.detail.contains("SHA-1"), "{}", r.detail);
    assert_eq!(r.fingerprint, Some(key.fingerprint(&sb)));
}

/// The `rsa` crate's key for an OpenSSH RSA key pair. (ssh-key 0.6.7's own
/// conversion passes `p` twice instead of `p` and `q`, so it always fails.)
fn rsa_private_key(pair: &ssh_key::private::RsaKeypair) -> rsa::RsaPrivateKey {
    let big = |m: &ssh_key::Mpint| rsa::BigUint::from_bytes_be(m.as_positive_bytes().unwrap());
    rsa::RsaPrivateKey::from_components(
        big(&pair.public.n),
        big(&pair.public.e),
        big(&pair.private.d),
        vec![big(&pair.private.p), big(&pair.private.q)],
    )
    .unwrap()
}

#[test]
fn ssh_rsa_signature_with_the_ssh_rsa_sha1_scheme_is_a_weak_algorithm() {
    use rsa::signature::{SignatureEncoding, Signer};
    use sha2::Digest;
    let sb = Sandbox::new();
    let key = sb.ssh_key("alice", "rsa", &["-b", "2048"]);
    let signers = sb.allowed_signers(&format!("alice {}\n", key.public_key()));
    let keys = TrustedKeys::load(Some(&signers), None).unwrap();
    let unsigned = sb.raw(&sb.commit_unsigned("deploy"));
    let private = load_private(&key);
    let rsa_key = rsa_private_key(private.key_data().rsa().unwrap());
    let data = sshsig_signed_data("git", "sha512", &sha2::Sha512::digest(&unsigned));

    let control_sig = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(rsa_key.clone()).sign(&data);
    let control = sshsig_armor(
        private.public_key(),
        "git",
        "sha512",
        "rsa-sha2-256",
        &control_sig.to_bytes(),
    );
    assert!(sb.ssh_keygen_accepts(&signers, "alice", &control, &unsigned));
    let id = sb.write_commit(&splice_signature(&unsigned, &control));
    keys.verify_commit(&sb.raw(&id)).unwrap();

    let weak_sig = rsa::pkcs1v15::SigningKey::<sha1::Sha1>::new(rsa_key).sign(&data);
    let weak = sshsig_armor(
        private.public_key(),
        "git",
        "sha512",
        "ssh-rsa",
        &weak_sig.to_bytes(),
    );
    let id = sb.write_commit(&splice_signature(&unsigned, &weak));
    let r = refusal(&keys, &sb.raw(&id));
    assert_eq!(r.reason, RefusalReason::WeakAlgorithm);
    assert!(r.detail.contains("ssh-rsa"), "{}", r.detail);
}

#[test]
fn malformed_allowed_signers_line_is_a_load_error_naming_file_and_line() {
    let sb = Sandbox::new();
    let key = sb.ssh_key("alice", "ed25519", &[]);
    let path = sb.allowed_signers(&format!(
        "alice {k}\n\n# bob\nbob verify-required {k}\n",
        k = key.public_key()
    ));
    let err = format!("{:#}", TrustedKeys::load(Some(&path), None).unwrap_err());
    assert!(err.starts_with(&format!("{}:4: ", path.display())), "{err}");
    assert!(err.contains("unknown option \"verify-required\""), "{err}");

    let path = sb.allowed_signers("# nobody\n");
    let err = format!("{:#}", TrustedKeys::load(Some(&path), None).unwrap_err());
    assert!(err.contains("no keys"), "{err}");

    let missing = sb.path().join("missing");
    let err = format!("{:#}", TrustedKeys::load(Some(&missing), None).unwrap_err());
    assert!(
        err.contains("failed to read the allowed signers file"),
        "{err}"
    );
    assert!(TrustedKeys::load(None, None).is_err());
}

#[test]
fn refusal_reasons_and_kinds_serialise_in_kebab_case() {
    use RefusalReason::*;
    let all = [
        (Unsigned, "unsigned"),
        (UnknownKey, "unknown-key"),
        (BadSignature, "bad-signature"),
        (KeyExpired, "key-expired"),
        (KeyNotYetValid, "key-not-yet-valid"),
        (KeyRevoked, "key-revoked"),
        (WrongNamespace, "wrong-namespace"),
        (WeakAlgorithm, "weak-algorithm"),
        (Unsupported, "unsupported"),
        (Malformed, "malformed"),
    ];
    for (reason, name) in all {
        assert_eq!(
            serde_json::to_string(&reason).unwrap(),
            format!("\"{name}\"")
        );
        assert_eq!(reason.as_str(), name);
    }
    let r = super::Refusal::new(BadSignature, "two\nlines").with_fingerprint("SHA256:x");
    assert_eq!(r.detail, "two lines", "details are one line");
    assert_eq!(
        serde_json::to_value(&r).unwrap(),
        serde_json::json!({"reason": "bad-signature", "detail": "two lines", "fingerprint": "SHA256:x"})
    );
    assert_eq!(
        serde_json::to_string(&SignatureKind::OpenPgp).unwrap(),
        "\"openpgp\""
    );
    assert_eq!(
        serde_json::to_string(&SignatureKind::Ssh).unwrap(),
        "\"ssh\""
    );
}

// ---- OpenPGP ----

const ALICE: &str = "Alice <alice@example.test>";

fn pgp_keys(sb: &Sandbox, files: &[(&str, &[u8])]) -> TrustedKeys {
    TrustedKeys::load(None, Some(&sb.keys_dir("keys", files))).expect("load trusted keys")
}

#[test]
fn good_openpgp_commit_is_accepted_with_user_id_and_fingerprint() {
    let sb = Sandbox::new();
    let fpr = sb.gpg_key(ALICE, "ed25519", "sign", "never", None);
    let id = sb.commit_gpg(&fpr, "deploy", "gpg");
    let raw = sb.raw(&id);
    for (file, armored) in [("alice.asc", true), ("alice.gpg", false)] {
        let dir = sb.keys_dir(file, &[(file, &sb.gpg_export(&[&fpr], armored))]);
        let keys = TrustedKeys::load(None, Some(&dir)).unwrap();
        let signer = keys.verify_commit(&raw).unwrap();
        assert_eq!(signer.kind, SignatureKind::OpenPgp);
        assert_eq!(signer.signer, ALICE);
        assert_eq!(signer.fingerprint, fpr, "as gpg --with-colons prints it");
    }
    sb.git(&["verify-commit", &id]);
}

#[test]
fn good_openpgp_rsa_commit_is_accepted_and_a_sha1_one_is_weak() {
    let sb = Sandbox::new();
    let fpr = sb.gpg_key(ALICE, "rsa2048", "sign", "never", None);
    let keys = pgp_keys(&sb, &[("alice.asc", &sb.gpg_export(&[&fpr], true))]);
    let id = sb.commit_gpg(&fpr, "deploy", "gpg");
    assert_eq!(keys.verify_commit(&sb.raw(&id)).unwrap().fingerprint, fpr);

    let sha1_gpg = sb.gpg_wrapper("gpg-sha1", &["--digest-algo".into(), "SHA1".into()]);
    let id = sb.commit_gpg(&fpr, "deploy with sha1", &sha1_gpg);
    let r = refusal(&keys, &sb.raw(&id));
    assert_eq!(r.reason, RefusalReason::WeakAlgorithm);
    assert!(r.detail.contains("SHA1"), "{}", r.detail);
    assert_eq!(r.fingerprint, Some(fpr));
}

#[test]
fn openpgp_signature_by_a_signing_subkey_reports_the_primary_key() {
    let sb = Sandbox::new();
    let fpr = sb.gpg_key(ALICE, "ed25519", "cert", "never", None);
    sb.gpg(&["--quick-add-key", &fpr, "ed25519", "sign", "never"]);
    let keys = pgp_keys(&sb, &[("alice.asc", &sb.gpg_export(&[&fpr], true))]);
    let id = sb.commit_gpg(&fpr, "deploy", "gpg");
    let signer = keys.verify_commit(&sb.raw(&id)).unwrap();
    assert_eq!(signer.fingerprint, fpr);
    assert_eq!(signer.signer, ALICE);
}

#[test]
fn openpgp_signature_by_an_untrusted_key_is_unknown_key() {
    let sb = Sandbox::new();
    let alice = sb.gpg_key(ALICE, "ed25519", "sign", "never", None);
    let mallory = sb.gpg_key("Mallory <m@example.test>", "ed25519", "sign", "never", None);
    let keys = pgp_keys(&sb, &[("alice.asc", &sb.gpg_export(&[&alice], true))]);
    let id = sb.commit_gpg(&mallory, "sneaky", "gpg");
    let r = refusal(&keys, &sb.raw(&id));
    assert_eq!(r.reason, RefusalReason::UnknownKey);
    assert_eq!(r.fingerprint, Some(mallory));
}

#[test]
fn tampered_openpgp_signed_commit_is_a_bad_signature() {
    let sb = Sandbox::new();
    let fpr = sb.gpg_key(ALICE, "ed25519", "sign", "never", None);
    let keys = pgp_keys(&sb, &[("alice.asc", &sb.gpg_export(&[&fpr], true))]);
    let id = sb.commit_gpg(&fpr, "deploy version 1", "gpg");
    let text = String::from_utf8(sb.raw(&id)).unwrap();
    let forged_id = sb.write_commit(text.replace("version 1", "version 6").as_bytes());
    let r = refusal(&keys, &sb.raw(&forged_id));
    assert_eq!(r.reason, RefusalReason::BadSignature);
    assert_eq!(r.fingerprint, Some(fpr));
}

#[test]
fn openpgp_key_expired_at_signature_time_is_refused() {
    let sb = Sandbox::new();
    let now = chrono::Utc::now().timestamp();
    let created = now - 10 * 86_400;
    // A key made ten days ago without expiry signs a commit now...
    let fpr = sb.gpg_key(ALICE, "ed25519", "sign", "never", Some(created));
    let id = sb.commit_gpg(&fpr, "deploy", "gpg");
    let raw = sb.raw(&id);
    let before = pgp_keys(&sb, &[("alice.asc", &sb.gpg_export(&[&fpr], true))]);
    before.verify_commit(&raw).unwrap();
    // ...then a self-signature dated an hour after creation gives it a one-day
    // lifetime: it had expired nine days before the commit was signed.
    sb.gpg(&[
        "--faked-system-time",
        &format!("{}!", created + 3600),
        "--quick-set-expire",
        &fpr,
        "1d",
    ]);
    let sb2_dir = sb.keys_dir("expired", &[("alice.asc", &sb.gpg_export(&[&fpr], true))]);
    let after = TrustedKeys::load(None, Some(&sb2_dir)).unwrap();
    let r = refusal(&after, &raw);
    assert_eq!(r.reason, RefusalReason::KeyExpired, "{}", r.detail);
    assert_eq!(r.fingerprint, Some(fpr));
    assert_ne!(
        before.digest(),
        after.digest(),
        "the new self-signature changes the digest"
    );
}

#[test]
fn openpgp_key_that_expired_after_signing_is_refused_at_verification_time() {
    let sb = Sandbox::new();
    let now = chrono::Utc::now();
    let created = now.timestamp() - 10 * 86_400;
    // A key made ten days ago with a one-day lifetime signs a commit while it is
    // still valid (nine days ago, as far as gpg and the signature know)...
    let fpr = sb.gpg_key(ALICE, "ed25519", "sign", "1d", Some(created));
    let then = sb.gpg_wrapper(
        "gpg-then",
        &["--faked-system-time".into(), format!("{}!", created + 3600)],
    );
    let id = sb.commit_gpg(&fpr, "signed while valid", &then);
    let raw = sb.raw(&id);
    let keys = pgp_keys(&sb, &[("alice.asc", &sb.gpg_export(&[&fpr], true))]);
    // ...which is good as of the signature's own time only.
    keys.verify_commit(&raw).unwrap();
    // Verified now, as a pass does, the key has expired: refused, as gpg and
    // `git verify-commit` refuse it (the signer picks the creation time).
    let r = refusal(&keys.at(now), &raw);
    assert_eq!(r.reason, RefusalReason::KeyExpired, "{}", r.detail);
    assert!(
        r.detail.contains("before this verification"),
        "{}",
        r.detail
    );
    assert_eq!(r.fingerprint, Some(fpr));
}

#[test]
fn openpgp_signature_older_than_the_key_is_not_yet_valid() {
    let sb = Sandbox::new();
    let fpr = sb.gpg_key(ALICE, "ed25519", "sign", "never", None);
    let keys = pgp_keys(&sb, &[("alice.asc", &sb.gpg_export(&[&fpr], true))]);
    let past = chrono::Utc::now().timestamp() - 86_400;
    let wrapper = sb.gpg_wrapper(
        "gpg-past",
        &[
            "--faked-system-time".into(),
            format!("{past}!"),
            "--ignore-time-conflict".into(),
        ],
    );
    let id = sb.commit_gpg(&fpr, "from the past", &wrapper);
    let r = refusal(&keys, &sb.raw(&id));
    assert_eq!(r.reason, RefusalReason::KeyNotYetValid, "{}", r.detail);
}

#[test]
fn revoked_openpgp_key_is_refused_whether_merged_or_a_separate_certificate() {
    let sb = Sandbox::new();
    let fpr = sb.gpg_key(ALICE, "ed25519", "sign", "never", None);
    let id = sb.commit_gpg(&fpr, "deploy", "gpg");
    let raw = sb.raw(&id);
    let key_before = sb.gpg_export(&[&fpr], true);
    let revocation = sb.gpg_revocation_certificate(&fpr);

    // The certificate next to the unrevoked key.
    let dir = sb.keys_dir(
        "separate",
        &[
            ("alice.asc", &key_before),
            ("alice-revoked.asc", &revocation),
        ],
    );
    let keys = TrustedKeys::load(None, Some(&dir)).unwrap();
    let r = refusal(&keys, &raw);
    assert_eq!(r.reason, RefusalReason::KeyRevoked, "{}", r.detail);

    // Imported into the key and exported again.
    sb.gpg_import(&revocation);
    let keys = pgp_keys(&sb, &[("alice.asc", &sb.gpg_export(&[&fpr], true))]);
    let r = refusal(&keys, &raw);
    assert_eq!(r.reason, RefusalReason::KeyRevoked, "{}", r.detail);
    assert_eq!(r.fingerprint, Some(fpr));

    // A certificate for no loaded key is an error, not silence.
    let dir = sb.keys_dir("orphan", &[("rev.asc", &revocation)]);
    let err = format!("{:#}", TrustedKeys::load(None, Some(&dir)).unwrap_err());
    assert!(
        err.contains("rev.asc") && err.contains("revocation"),
        "{err}"
    );
}

#[test]
fn several_keys_per_file_in_one_block_or_several_blocks() {
    let sb = Sandbox::new();
    let alice = sb.gpg_key(ALICE, "ed25519", "sign", "never", None);
    let bob = sb.gpg_key("Bob <bob@example.test>", "ed25519", "sign", "never", None);
    let one_block = sb.gpg_export(&[&alice, &bob], true);
    let mut two_blocks = sb.gpg_export(&[&alice], true);
    two_blocks.extend(b"\n# Bob's key follows\n");
    two_blocks.extend(sb.gpg_export(&[&bob], true));
    let by_bob = sb.raw(&sb.commit_gpg(&bob, "by bob", "gpg"));
    let by_alice = sb.raw(&sb.commit_gpg(&alice, "by alice", "gpg"));
    for file in [&one_block, &two_blocks] {
        let keys = pgp_keys(&sb, &[("team.asc", file)]);
        assert_eq!(keys.counts(), (0, 2));
        assert_eq!(
            keys.verify_commit(&by_bob).unwrap().signer,
            "Bob <bob@example.test>"
        );
        assert_eq!(keys.verify_commit(&by_alice).unwrap().signer, ALICE);
    }
}

#[test]
fn key_files_that_cannot_be_used_are_errors_naming_them() {
    let sb = Sandbox::new();
    let fpr = sb.gpg_key(ALICE, "ed25519", "sign", "never", None);
    let good = sb.gpg_export(&[&fpr], true);
    let text = String::from_utf8(good.clone()).unwrap();

    // Truncate the base64 body in the middle of the key.
    let lines: Vec<&str> = text.lines().collect();
    let mut cut = lines[..lines.len() / 2].join("\n");
    cut.push_str("\n-----END PGP PUBLIC KEY BLOCK-----\n");
    let dir = sb.keys_dir("cut", &[("alice.asc", cut.as_bytes())]);
    let err = format!("{:#}", TrustedKeys::load(None, Some(&dir)).unwrap_err());
    assert!(err.contains("alice.asc:1: "), "{err}");

    let secret = sb.run(
        sb.command("gpg")
            .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(["--armor", "--export-secret-keys", &fpr]),
    );
    let dir = sb.keys_dir("secret", &[("alice.asc", secret.as_bytes())]);
    let err = format!("{:#}", TrustedKeys::load(None, Some(&dir)).unwrap_err());
    assert!(
        err.contains("alice.asc:1: ") && err.contains("PRIVATE"),
        "{err}"
    );

    // The same key exported twice (armored and binary) is kept once...
    let dir = sb.keys_dir(
        "twice",
        &[("a.asc", &good), ("b.gpg", &sb.gpg_export(&[&fpr], false))],
    );
    let keys = TrustedKeys::load(None, Some(&dir)).unwrap();
    assert_eq!(keys.counts(), (0, 1));
    // ...two versions of it (here one with a later expiry) are an error.
    sb.gpg(&["--quick-set-expire", &fpr, "2y"]);
    let dir = sb.keys_dir(
        "versions",
        &[("a.asc", &good), ("b.gpg", &sb.gpg_export(&[&fpr], false))],
    );
    let err = format!("{:#}", TrustedKeys::load(None, Some(&dir)).unwrap_err());
    assert!(
        err.contains("b.gpg") && err.contains("another version"),
        "{err}"
    );

    let dir = sb.keys_dir("stray", &[("a.asc", &good), ("README", b"keys for prod")]);
    let err = format!("{:#}", TrustedKeys::load(None, Some(&dir)).unwrap_err());
    assert!(err.contains("README: unexpected file"), "{err}");

    let dir = sb.keys_dir("dotfile", &[("a.asc", &good), (".keep", b"")]);
    assert_eq!(
        TrustedKeys::load(None, Some(&dir)).unwrap().counts(),
        (0, 1)
    );
}

#[test]
fn empty_keys_dir_is_an_error() {
    let sb = Sandbox::new();
    let dir = sb.keys_dir("empty", &[]);
    let err = format!("{:#}", TrustedKeys::load(None, Some(&dir)).unwrap_err());
    assert_eq!(err, format!("no keys in {}", dir.display()));
    let dir = sb.keys_dir("hidden-only", &[(".gitkeep", b"")]);
    assert!(TrustedKeys::load(None, Some(&dir)).is_err());
}

#[test]
fn x509_signature_is_unsupported_and_unknown_armor_malformed() {
    let sb = Sandbox::new();
    let key = sb.ssh_key("alice", "ed25519", &[]);
    let keys = ssh_keys(&sb, &format!("alice {}\n", key.public_key()));
    let unsigned = sb.raw(&sb.commit_unsigned("deploy"));
    let x509 = splice_signature(
        &unsigned,
        b"-----BEGIN SIGNED MESSAGE-----\nMIAGCSqGSIb3DQEHAqCAMIACAQEx\n-----END SIGNED MESSAGE-----\n",
    );
    assert_eq!(refusal(&keys, &x509).reason, RefusalReason::Unsupported);
    let odd = splice_signature(&unsigned, b"hello\n");
    assert_eq!(refusal(&keys, &odd).reason, RefusalReason::Malformed);
    let twice = splice_signature(
        &x509,
        b"-----BEGIN SSH SIGNATURE-----\n-----END SSH SIGNATURE-----\n",
    );
    assert_eq!(refusal(&keys, &twice).reason, RefusalReason::Malformed);
    assert_eq!(strip_signature(&x509), unsigned);
}

#[test]
fn both_kinds_load_together_and_the_digest_tracks_constraints_not_order() {
    let sb = Sandbox::new();
    let alice = sb.ssh_key("alice", "ed25519", &[]);
    let bob = sb.ssh_key("bob", "ed25519", &[]);
    let fpr = sb.gpg_key(ALICE, "ed25519", "sign", "never", None);
    let dir = sb.keys_dir("keys", &[("alice.asc", &sb.gpg_export(&[&fpr], true))]);
    let load = |text: &str| TrustedKeys::load(Some(&sb.allowed_signers(text)), Some(&dir)).unwrap();
    let (a, b) = (alice.public_key(), bob.public_key());
    let one = load(&format!("alice {a}\nbob {b}\n"));
    assert_eq!(one.counts(), (2, 1));
    let reordered = load(&format!("# same keys\nbob {b} comment\n\nalice {a}\n"));
    assert_eq!(one.digest(), reordered.digest());
    assert_eq!(one.digest().len(), 64);
    let limited = load(&format!("alice namespaces=\"git\" {a}\nbob {b}\n"));
    assert_ne!(one.digest(), limited.digest());
    let renamed = load(&format!("alice2 {a}\nbob {b}\n"));
    assert_ne!(one.digest(), renamed.digest());
    let dated = load(&format!("alice valid-before=\"20300101Z\" {a}\nbob {b}\n"));
    assert_ne!(one.digest(), dated.digest());

    let by_ssh = sb.raw(&sb.commit_ssh(&bob, "ssh", DEFAULT_DATE));
    let by_pgp = sb.raw(&sb.commit_gpg(&fpr, "pgp", "gpg"));
    assert_eq!(one.verify_commit(&by_ssh).unwrap().signer, "bob");
    assert_eq!(one.verify_commit(&by_pgp).unwrap().signer, ALICE);
}

/// Every truncation and byte flip of a real signed object: no panic, and
/// every change to the signed part is refused.
fn assert_hostile_variants_are_handled(keys: &TrustedKeys, raw: &[u8]) {
    keys.verify_commit(raw).unwrap();
    let split_at = raw.windows(2).position(|w| w == b"\n\n").unwrap();
    for len in 0..raw.len() {
        assert!(
            keys.verify_commit(&raw[..len]).is_err(),
            "truncated to {len} bytes"
        );
    }
    let mut refused_in_message = 0;
    for i in 0..raw.len() {
        let mut bytes = raw.to_vec();
        bytes[i] ^= 0x01;
        let verdict = keys.verify_commit(&bytes);
        // The message (after the headers) is signed byte for byte.
        if i > split_at {
            assert!(verdict.is_err(), "flip at {i} in the message accepted");
            refused_in_message += 1;
        }
    }
    assert!(refused_in_message > 0, "the object has a message");
}

#[test]
fn hostile_variants_of_signed_commits_never_panic_and_changes_are_refused() {
    let sb = Sandbox::new();
    let key = sb.ssh_key("alice", "ed25519", &[]);
    let fpr = sb.gpg_key(ALICE, "ed25519", "sign", "never", None);
    let dir = sb.keys_dir("keys", &[("alice.asc", &sb.gpg_export(&[&fpr], true))]);
    let keys = TrustedKeys::load(
        Some(&sb.allowed_signers(&format!("alice {}\n", key.public_key()))),
        Some(&dir),
    )
    .unwrap();
    let ssh = sb.raw(&sb.commit_ssh(&key, "ssh\n\nwith a body", DEFAULT_DATE));
    assert_hostile_variants_are_handled(&keys, &ssh);
    let pgp = sb.raw(&sb.commit_gpg(&fpr, "pgp\n\nwith a body", "gpg"));
    assert_hostile_variants_are_handled(&keys, &pgp);
}

/// Not a test of speed (nothing is asserted about time): prints how long
/// verifying 1,000 ed25519-signed commits takes. Run with
/// `cargo test --release verify::tests::bench -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark: makes 1,000 signed commits"]
fn bench_verify_1000_ed25519_commits() {
    const COMMITS: usize = 1000;
    let sb = Sandbox::new();
    let key = sb.ssh_key("alice", "ed25519", &[]);
    let signers = sb.allowed_signers(&format!("alice {}\n", key.public_key()));
    let started = std::time::Instant::now();
    let mut raws = Vec::with_capacity(COMMITS);
    for i in 0..COMMITS {
        let id = sb.commit_ssh(&key, &format!("commit {i}"), DEFAULT_DATE);
        raws.push(sb.raw(&id));
    }
    eprintln!("made {COMMITS} signed commits in {:?}", started.elapsed());
    let started = std::time::Instant::now();
    let keys = TrustedKeys::load(Some(&signers), None).unwrap();
    let loaded = started.elapsed();
    let started = std::time::Instant::now();
    for raw in &raws {
        keys.verify_commit(raw).unwrap();
    }
    let took = started.elapsed();
    eprintln!(
        "load: {loaded:?}; verify {COMMITS} commits: {took:?} ({:?} per commit)",
        took / u32::try_from(COMMITS).unwrap()
    );
}
