//! Signature verification in a pass: the trusted keys as configured, the commits
//! a new tip brings (all of them, or the tip alone), and the refusal record that
//! keeps a refused tip from being checked again until the tip or the keys change.
//! The verdict on one commit is `crate::verify`'s.

use anyhow::Result;
use chrono::{DateTime, Utc};

use crate::config::{PassSettings, VerifyMode, VerifySettings};
use crate::exit::{Classify, Exit};
use crate::git::{Cache, History, ObjectId};
use crate::log::{debug, info, short};
use crate::state::{State, Unverified};
use crate::verify::{Signer, TrustedKeys};

/// The reason recorded when the commits between the deployed commit and the tip
/// cannot all be read (so not all can be verified).
pub const INCOMPLETE_HISTORY: &str = "incomplete-history";

/// The trusted keys of a pass, loaded from the configured files.
pub struct Keys {
    pub trusted: TrustedKeys,
    /// The key set's digest and the mode: what a refusal is recorded against, so
    /// that it stands until either changes (a tip refused under `all` for a commit
    /// before it may be deployable under `tip`).
    pub digest: String,
    pub mode: VerifyMode,
}

/// Read the trusted keys. A file that cannot be read or parsed is a configuration
/// error (exit 2) naming the file and line: never "no keys", never "off".
pub fn load(settings: &VerifySettings, now: DateTime<Utc>) -> Result<Keys> {
    let trusted = TrustedKeys::load(
        settings.allowed_signers.as_deref(),
        settings.trusted_keys.as_deref(),
    )
    .class(Exit::Usage)?
    .at(now);
    let digest = format!("{}-{}", trusted.digest(), settings.mode.as_str());
    let (ssh, pgp) = trusted.counts();
    debug!(
        "signature verification ({}): {ssh} SSH key line(s), {pgp} OpenPGP key(s), key set {}",
        settings.mode.as_str(),
        &digest[..12.min(digest.len())]
    );
    Ok(Keys {
        trusted,
        digest,
        mode: settings.mode,
    })
}

/// One line on how verification is configured: `off`, or the mode and the key
/// sources (what `status` shows for the last pass, and `plan`).
pub fn describe(settings: Option<&VerifySettings>) -> String {
    let Some(v) = settings else {
        return "off".to_string();
    };
    let mut sources = Vec::new();
    if let Some(f) = &v.allowed_signers {
        sources.push(format!("SSH keys in {}", f.display()));
    }
    if let Some(d) = &v.trusted_keys {
        sources.push(format!("OpenPGP keys in {}", d.display()));
    }
    let what = match v.mode {
        VerifyMode::All => "every new commit",
        VerifyMode::Tip => "the tip only",
    };
    format!("{} ({what}; {})", v.mode.as_str(), sources.join(", "))
}

/// Whether `st` records a refusal of `tip` by exactly these keys: then the verdict
/// stands and nothing is verified again.
pub fn refused_before(st: &State, tip: &str, keys: Option<&Keys>) -> bool {
    match (&st.unverified, keys) {
        (Some(u), Some(k)) => u.tip == tip && u.keys_digest == k.digest,
        _ => false,
    }
}

/// The verdict on deploying `tip` over `deployed`.
pub enum Verdict {
    /// Every commit that had to be signed is; the tip's signer.
    Signed(Signer),
    Refused(Unverified),
}

/// Verify what deploying `tip` brings: with mode `all`, every commit reachable
/// from the tip and not from the deployed commit (merges' other parents too);
/// with mode `tip`, or on a first deployment (nothing deployed to start the range
/// from, and a shallow history), the tip alone. When the range reaches a shallow
/// boundary, the branch's whole history is fetched once and the walk repeated.
pub fn check(
    cfg: &PassSettings,
    keys: &Keys,
    cache: &Cache,
    deployed: Option<ObjectId>,
    tip: ObjectId,
    now: DateTime<Utc>,
) -> Result<Verdict> {
    let refuse = |commit: ObjectId, reason: &str, detail: String, fingerprint: Option<String>| {
        let subject = cache
            .commit_info(commit)
            .map(|i| i.subject)
            .unwrap_or_default();
        Verdict::Refused(Unverified {
            tip: tip.to_string(),
            commit: commit.to_string(),
            subject,
            reason: reason.to_string(),
            detail,
            fingerprint,
            keys_digest: keys.digest.clone(),
            at: now,
        })
    };
    let mut commits = match (keys.mode, deployed) {
        (VerifyMode::Tip, _) => vec![tip],
        (VerifyMode::All, None) => {
            info!(
                "first deployment: only the tip {} can be verified (there is no deployed commit to start the range from)",
                short(&tip.to_string())
            );
            vec![tip]
        }
        (VerifyMode::All, Some(d)) => match cache.range(Some(d), tip) {
            Ok(c) => c,
            Err(first) => {
                info!(
                    "the history here does not reach the deployed commit ({first:#}); fetching all of {} to verify every new commit",
                    cfg.branch
                );
                cache.fetch(&cfg.repo, &cfg.branch, History::Full, cfg.fetch_timeout)?;
                match cache.range(Some(d), tip) {
                    Ok(c) => c,
                    Err(e) => {
                        return Ok(refuse(
                            tip,
                            INCOMPLETE_HISTORY,
                            format!(
                                "the commits between the deployed {} and the tip cannot all be read, so not all can be verified: {e:#}",
                                short(&d.to_string())
                            ),
                            None,
                        ))
                    }
                }
            }
        },
    };
    // A branch reset back to an ancestor of the deployed commit (deployed with
    // --allow-rewrite) brings no new commit, but the tip it deploys must still
    // carry a good signature.
    if !commits.contains(&tip) {
        commits.insert(0, tip);
    }
    debug!(
        "verifying the signatures of {} commit(s) up to {}",
        commits.len(),
        short(&tip.to_string())
    );
    let mut tip_signer = None;
    for id in commits {
        let raw = cache.raw_commit(id)?;
        match keys.trusted.verify_commit(&raw) {
            Ok(signer) => {
                if id == tip {
                    tip_signer = Some(signer);
                }
            }
            Err(r) => {
                return Ok(refuse(
                    id,
                    r.reason.as_str(),
                    r.detail.clone(),
                    r.fingerprint.clone(),
                ))
            }
        }
    }
    match tip_signer {
        Some(s) => Ok(Verdict::Signed(s)),
        // Not reached: the tip is always in the list (see above). Should that
        // change, refuse rather than deploy unverified.
        None => Ok(refuse(
            tip,
            INCOMPLETE_HISTORY,
            "the tip was not among the commits walked".into(),
            None,
        )),
    }
}

/// The one line a refusal is logged and summarised with.
pub fn refusal_line(u: &Unverified, again: bool) -> String {
    let which = if u.commit == u.tip {
        format!("its tip {} {:?}", short(&u.commit), u.subject)
    } else {
        format!(
            "{} {:?} (before the tip {})",
            short(&u.commit),
            u.subject,
            short(&u.tip)
        )
    };
    let key = u
        .fingerprint
        .as_deref()
        .map(|f| format!(" [key {f}]"))
        .unwrap_or_default();
    let next = "nothing was checked out or run; checked again when the branch moves or the trusted keys change";
    let lead = if again { "still refusing" } else { "refused" };
    format!(
        "{lead} the branch: {which} has no good signature by a trusted key: {}: {}{key}; {next}",
        u.reason, u.detail
    )
}
