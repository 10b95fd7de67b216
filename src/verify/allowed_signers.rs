//! The SSH allowed-signers file (git's `gpg.ssh.allowedSignersFile`, the
//! "ALLOWED SIGNERS" format of ssh-keygen(1)): parsing each line into a key and
//! its constraints, with errors that name the file and line.

use anyhow::{anyhow, bail, Result};
use chrono::{LocalResult, NaiveDate, NaiveDateTime, TimeZone};
use ssh_key::{Algorithm, EcdsaCurve, HashAlg, PublicKey};

/// The namespace git signs commits in (`ssh-keygen -Y sign -n git`).
pub const GIT_NAMESPACE: &str = "git";

/// One key line of an allowed-signers file.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The principals field as written (comma-separated, quotes removed).
    pub principals: String,
    pub key: PublicKey,
    /// `SHA256:...` as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// The `namespaces="..."` pattern list, if any (none admits every namespace).
    pub namespaces: Option<String>,
    /// `valid-after`, in seconds since the Unix epoch.
    pub valid_after: Option<i64>,
    /// `valid-before`, in seconds since the Unix epoch.
    pub valid_before: Option<i64>,
    /// `FILE:LINE`, for messages.
    pub origin: String,
}

impl Entry {
    /// Whether this line lets its key sign in `namespace`.
    pub fn admits_namespace(&self, namespace: &str) -> bool {
        self.namespaces
            .as_deref()
            .is_none_or(|list| match_pattern_list(namespace, list))
    }

    /// A canonical one-line description of the key and everything that limits
    /// it, for the key-set digest.
    pub fn canonical(&self) -> String {
        format!(
            "ssh {} principals={:?} namespaces={:?} valid-after={:?} valid-before={:?}",
            self.fingerprint, self.principals, self.namespaces, self.valid_after, self.valid_before
        )
    }
}

/// Parses the text of an allowed-signers file. `name` is how messages name
/// the file; timestamps without `Z` are read in `local` (ssh-keygen reads them
/// in the system's time zone). A line that cannot be parsed is an error naming
/// `name:line`; so is a file without a single key.
pub fn parse<Tz: TimeZone>(text: &str, name: &str, local: &Tz) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let origin = format!("{name}:{}", index + 1);
        let line = line.trim_start_matches([' ', '\t']);
        let line = line.trim_end_matches(['\r', ' ', '\t']);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let entry = parse_line(line, &origin, local).map_err(|e| anyhow!("{origin}: {e}"))?;
        entries.push(entry);
    }
    if entries.is_empty() {
        bail!("{name}: no keys in the allowed signers file (only comments and blank lines)");
    }
    Ok(entries)
}

fn parse_line<Tz: TimeZone>(line: &str, origin: &str, local: &Tz) -> Result<Entry> {
    let mut rest = line;
    let principals = next_token(&mut rest)?.ok_or_else(|| anyhow!("no principals"))?;
    let principals = dequote(&principals)?;
    if principals.is_empty() {
        bail!("empty principals field");
    }
    let second = next_token(&mut rest)?
        .ok_or_else(|| anyhow!("no key after the principals {principals:?}"))?;
    let (options, key_type) = if is_key_type(&second) {
        (None, second)
    } else {
        let key_type =
            next_token(&mut rest)?.ok_or_else(|| anyhow!("no key after the options {second:?}"))?;
        (Some(second), key_type)
    };
    let key_type = key_type.to_string();
    let base64 = next_token(&mut rest)?
        .ok_or_else(|| anyhow!("key type {key_type:?} is not followed by the key"))?;

    let mut entry_opts = Options::default();
    if let Some(options) = options {
        entry_opts = parse_options(&options, local)?;
    }

    if key_type.ends_with("-cert-v01@openssh.com") {
        bail!("certificate key type {key_type:?} is not supported; list the signing key itself");
    }
    if !is_key_type(&key_type) {
        bail!("unknown key type {key_type:?}");
    }
    let key = PublicKey::from_openssh(&format!("{key_type} {base64}"))
        .map_err(|e| anyhow!("invalid {key_type} key: {e}"))?;
    check_supported(&key.algorithm())?;
    let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
    Ok(Entry {
        principals,
        key,
        fingerprint,
        namespaces: entry_opts.namespaces,
        valid_after: entry_opts.valid_after,
        valid_before: entry_opts.valid_before,
        origin: origin.to_string(),
    })
}

/// Key types of OpenSSH public keys (the word before the base64 blob).
const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

fn is_key_type(word: &str) -> bool {
    KEY_TYPES.contains(&word) || word.ends_with("-cert-v01@openssh.com")
}

/// Only the algorithms compiled into ssh-key here can verify.
fn check_supported(algorithm: &Algorithm) -> Result<()> {
    match algorithm {
        Algorithm::Ed25519
        | Algorithm::SkEd25519
        | Algorithm::SkEcdsaSha2NistP256
        | Algorithm::Rsa { .. }
        | Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP256 | EcdsaCurve::NistP384,
        } => Ok(()),
        other => bail!(
            "key type {} is not supported (ed25519, rsa, ecdsa-sha2-nistp256/384 and their sk- forms are)",
            other.as_str()
        ),
    }
}

#[derive(Default)]
struct Options {
    namespaces: Option<String>,
    valid_after: Option<i64>,
    valid_before: Option<i64>,
}

fn parse_options<Tz: TimeZone>(options: &str, local: &Tz) -> Result<Options> {
    let mut out = Options::default();
    for option in split_options(options)? {
        let (name, value) = match option.split_once('=') {
            Some((n, v)) => (n, Some(dequote(v)?)),
            None => (option.as_str(), None),
        };
        let lower = name.to_ascii_lowercase();
        match (lower.as_str(), value) {
            ("cert-authority", _) => bail!(
                "option \"cert-authority\" is not supported: certificates are not accepted, list the signing keys themselves"
            ),
            ("namespaces", Some(v)) => {
                if out.namespaces.is_some() {
                    bail!("option \"namespaces\" given twice");
                }
                if v.is_empty() {
                    bail!("option \"namespaces\" is empty");
                }
                out.namespaces = Some(v);
            }
            ("valid-after", Some(v)) => {
                if out.valid_after.is_some() {
                    bail!("option \"valid-after\" given twice");
                }
                out.valid_after = Some(
                    parse_time(&v, local).map_err(|e| anyhow!("option \"valid-after\": {e}"))?,
                );
            }
            ("valid-before", Some(v)) => {
                if out.valid_before.is_some() {
                    bail!("option \"valid-before\" given twice");
                }
                out.valid_before = Some(
                    parse_time(&v, local).map_err(|e| anyhow!("option \"valid-before\": {e}"))?,
                );
            }
            ("namespaces" | "valid-after" | "valid-before", None) => {
                bail!("option {name:?} needs a value ({name}=\"...\")")
            }
            _ => bail!(
                "unknown option {name:?} (allowed: namespaces=, valid-after=, valid-before=)"
            ),
        }
    }
    if let (Some(after), Some(before)) = (out.valid_after, out.valid_before) {
        if before <= after {
            bail!("valid-before is not later than valid-after");
        }
    }
    Ok(out)
}

/// Splits `a,b="x,y",c` at the commas outside double quotes.
fn split_options(options: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in options.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            ',' if !quoted => out.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    if quoted {
        bail!("unterminated quote in options {options:?}");
    }
    out.push(current);
    if out.iter().any(String::is_empty) {
        bail!("empty option in {options:?}");
    }
    Ok(out)
}

/// Takes the next whitespace-separated word off `rest`; double quotes group
/// words (the quotes stay in the word). `None` at the end of the line.
fn next_token(rest: &mut &str) -> Result<Option<String>> {
    let s = rest.trim_start_matches([' ', '\t']);
    if s.is_empty() {
        *rest = s;
        return Ok(None);
    }
    let mut quoted = false;
    let mut end = s.len();
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ' ' | '\t' if !quoted => {
                end = i;
                break;
            }
            _ => {}
        }
    }
    if quoted {
        bail!("unterminated quote in {s:?}");
    }
    *rest = &s[end..];
    Ok(Some(s[..end].to_string()))
}

/// `"a b"` -> `a b`; a word without quotes is returned as it is.
fn dequote(word: &str) -> Result<String> {
    if let Some(inner) = word.strip_prefix('"') {
        let inner = inner
            .strip_suffix('"')
            .ok_or_else(|| anyhow!("text after the closing quote in {word:?}"))?;
        if inner.contains('"') {
            bail!("stray quote in {word:?}");
        }
        Ok(inner.to_string())
    } else if word.contains('"') {
        bail!("stray quote in {word:?}");
    } else {
        Ok(word.to_string())
    }
}

/// An allowed-signers timestamp, `YYYYMMDD[HHMM[SS]]` with an optional `Z`
/// (OpenSSH also takes `UTC`) for UTC; otherwise the time is in `local`.
/// Returns seconds since the Unix epoch.
pub fn parse_time<Tz: TimeZone>(text: &str, local: &Tz) -> Result<i64> {
    let (digits, utc) = if let Some(d) = text.strip_suffix(['Z', 'z']) {
        (d, true)
    } else if text.len() > 3 && text.as_bytes()[text.len() - 3..].eq_ignore_ascii_case(b"UTC") {
        // The last three bytes are ASCII, so this cut is on a character boundary.
        (&text[..text.len() - 3], true)
    } else {
        (text, false)
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) || ![8, 12, 14].contains(&digits.len()) {
        bail!("timestamp {text:?} is not YYYYMMDD[HHMM[SS]][Z]");
    }
    let num = |from: usize, to: usize| -> u32 {
        // Only ASCII digits reach here, at most 4 of them.
        digits[from..to].parse().unwrap_or(u32::MAX)
    };
    let year = i32::try_from(num(0, 4)).unwrap_or(i32::MAX);
    let date = NaiveDate::from_ymd_opt(year, num(4, 6), num(6, 8))
        .ok_or_else(|| anyhow!("timestamp {text:?} is not a valid date"))?;
    let (hour, minute, second) = match digits.len() {
        8 => (0, 0, 0),
        12 => (num(8, 10), num(10, 12), 0),
        _ => (num(8, 10), num(10, 12), num(12, 14)),
    };
    let naive: NaiveDateTime = date
        .and_hms_opt(hour, minute, second)
        .ok_or_else(|| anyhow!("timestamp {text:?} is not a valid time of day"))?;
    if utc {
        return Ok(naive.and_utc().timestamp());
    }
    match local.from_local_datetime(&naive) {
        LocalResult::Single(t) => Ok(t.timestamp()),
        // A repeated hour (end of daylight saving time): the first one, as mktime does by default.
        LocalResult::Ambiguous(first, _) => Ok(first.timestamp()),
        LocalResult::None => bail!(
            "timestamp {text:?} does not exist in the local time zone (daylight saving gap); add Z for UTC"
        ),
    }
}

/// OpenSSH's `match_pattern_list`: a comma-separated list of patterns with `*`
/// and `?`, each optionally negated with `!`. True when some pattern matches
/// and no negated one does. Case-sensitive, as for signature namespaces.
pub fn match_pattern_list(s: &str, list: &str) -> bool {
    let mut positive = false;
    for pattern in list.split(',') {
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pattern),
        };
        if match_pattern(s.as_bytes(), pattern.as_bytes()) {
            if negated {
                return false;
            }
            positive = true;
        }
    }
    positive
}

/// Glob match with `*` (any run) and `?` (one byte), iterative with one
/// backtrack point, so hostile patterns cannot blow up.
fn match_pattern(s: &[u8], p: &[u8]) -> bool {
    let (mut si, mut pi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            si += 1;
            pi += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{FixedOffset, Utc};

    // Public keys only; generated once with ssh-keygen for these tests.
    const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMWPWjQOlbWaJVoU9Dqz7TY9AMKacun0A1pJ9kd0EnVp";

    fn one(line: &str) -> Result<Entry> {
        parse(line, "signers", &Utc).map(|mut v| v.remove(0))
    }

    fn error_of(text: &str) -> String {
        format!("{:#}", parse(text, "signers", &Utc).unwrap_err())
    }

    #[test]
    fn plain_line_with_comment_and_principal_list() {
        let e = one(&format!(
            "alice@example.test,bob@example.test {ED25519} laptop key"
        ))
        .unwrap();
        assert_eq!(e.principals, "alice@example.test,bob@example.test");
        assert_eq!(e.namespaces, None);
        assert!(e.fingerprint.starts_with("SHA256:"), "{}", e.fingerprint);
        assert_eq!(e.origin, "signers:1");
        assert!(e.admits_namespace("git"));
    }

    #[test]
    fn comments_blank_lines_and_indentation_are_skipped() {
        let text = format!("# team keys\n\n   \n\t# more\n  alice {ED25519}\n");
        let entries = parse(&text, "signers", &Utc).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].origin, "signers:5");
    }

    #[test]
    fn quoted_principals_may_hold_spaces() {
        let e = one(&format!("\"alice smith,bob\" {ED25519}")).unwrap();
        assert_eq!(e.principals, "alice smith,bob");
    }

    #[test]
    fn options_are_parsed_case_insensitively_with_quoted_values() {
        let e = one(&format!(
            "alice NAMESPACES=\"git,file\",valid-after=\"20240101\",Valid-Before=20250102030405Z {ED25519}"
        ))
        .unwrap();
        assert_eq!(e.namespaces.as_deref(), Some("git,file"));
        assert_eq!(e.valid_after, Some(1_704_067_200));
        assert_eq!(e.valid_before, Some(1_735_787_045));
    }

    #[test]
    fn namespaces_decide_with_patterns_and_negation() {
        let with = |ns: &str| one(&format!("alice namespaces=\"{ns}\" {ED25519}")).unwrap();
        assert!(with("git").admits_namespace("git"));
        assert!(with("file,git").admits_namespace("git"));
        assert!(with("g*").admits_namespace("git"));
        assert!(with("g?t").admits_namespace("git"));
        assert!(!with("file").admits_namespace("git"));
        assert!(!with("*,!git").admits_namespace("git"));
        assert!(!with("gi").admits_namespace("git"));
        assert!(!with("Git").admits_namespace("git"));
    }

    #[test]
    fn pattern_matching_edge_cases() {
        assert!(match_pattern(b"", b""));
        assert!(match_pattern(b"", b"*"));
        assert!(!match_pattern(b"", b"?"));
        assert!(match_pattern(b"abcabd", b"*abd"));
        assert!(match_pattern(b"abc", b"a**c"));
        assert!(!match_pattern(b"abc", b"*b"));
        // A pathological pattern finishes at once.
        let s = "a".repeat(5000);
        let p = format!("{}b", "*a".repeat(200));
        assert!(!match_pattern(s.as_bytes(), p.as_bytes()));
    }

    #[test]
    fn timestamps_follow_ssh_keygen_formats() {
        let utc = Utc;
        assert_eq!(parse_time("19700101", &utc).unwrap(), 0);
        assert_eq!(parse_time("19700101Z", &utc).unwrap(), 0);
        assert_eq!(parse_time("197001010001", &utc).unwrap(), 60);
        assert_eq!(parse_time("19700101000102z", &utc).unwrap(), 62);
        assert_eq!(parse_time("19700101000102UTC", &utc).unwrap(), 62);
        let plus2 = FixedOffset::east_opt(2 * 3600).unwrap();
        assert_eq!(
            parse_time("19700101", &plus2).unwrap(),
            -7200,
            "no Z: local time"
        );
        assert_eq!(
            parse_time("19700101Z", &plus2).unwrap(),
            0,
            "Z: UTC whatever the zone"
        );
        for bad in [
            "",
            "2024",
            "2024010",
            "202401011",
            "20241301",
            "20240230",
            "202401012460",
            "2024-01-01",
            "20240101T1200",
            "+2024010",
            "20240101ZZ",
            "2024010é",
            "éUTC",
        ] {
            assert!(parse_time(bad, &utc).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn each_malformed_line_is_an_error_naming_its_line() {
        let cases: &[(&str, &str)] = &[
            ("alice", "no key after the principals"),
            ("alice ssh-ed25519", "is not followed by the key"),
            ("alice ssh-ed25519 AAAA-not-base64", "invalid ssh-ed25519 key"),
            ("alice frobnicate=\"x\" KEY", "unknown option \"frobnicate\""),
            ("alice no-touch-required KEY", "unknown option \"no-touch-required\""),
            ("alice cert-authority KEY", "\"cert-authority\" is not supported"),
            ("alice namespaces=\"git KEY", "unterminated quote"),
            ("alice namespaces=\"\" KEY", "\"namespaces\" is empty"),
            ("alice namespaces KEY", "needs a value"),
            ("alice namespaces=\"git\",namespaces=\"file\" KEY", "given twice"),
            ("alice valid-after=\"yesterday\" KEY", "option \"valid-after\": timestamp"),
            ("alice valid-before=\"2024\" KEY", "option \"valid-before\": timestamp"),
            (
                "alice valid-after=20250101,valid-before=20240101 KEY",
                "valid-before is not later than valid-after",
            ),
            ("alice ,, KEY", "empty option"),
            ("ali\"ce\" KEY", "stray quote"),
            ("alice namespaces=\"git\"x KEY", "text after the closing quote"),
            ("alice ssh-ed25519-cert-v01@openssh.com AAAA", "certificate key type"),
            ("alice namespaces=\"git\" ecdsa-sha2-nistp999 AAAA", "unknown key type"),
            (
                // The blob says ssh-ed25519, the text says ssh-rsa.
                "alice ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIMWPWjQOlbWaJVoU9Dqz7TY9AMKacun0A1pJ9kd0EnVp",
                "invalid ssh-rsa key",
            ),
        ];
        for (line, want) in cases {
            let line = line.replace("KEY", ED25519);
            let text = format!("# header\n\nalice {ED25519}\n{line}\n");
            let err = error_of(&text);
            assert!(
                err.starts_with("signers:4: "),
                "line {line:?}: error {err:?} must name signers:4"
            );
            assert!(
                err.contains(want),
                "line {line:?}: error {err:?} must say {want:?}"
            );
        }
    }

    #[test]
    fn unsupported_algorithms_are_refused_at_load() {
        // A real ecdsa-sha2-nistp521 public key (p521 is not compiled in).
        let p521 = "ecdsa-sha2-nistp521 AAAAE2VjZHNhLXNoYTItbmlzdHA1MjEAAAAIbmlzdHA1MjEAAACFBADFp1rBkLEYsEVIUEYvFCsBV387KtcoDxl+e8ctUetU9oSTnk/sRMIDtEw84OOgv/bgyl76sQM2A8Btiw1heQJiFgH23SQHEs7qdU3GhiDTjtl7Nerzsl7OiGJRmikfAjCnPkHGgxKE5JczPy7iuWWK9OgBZLYKBMOEi+oTXlsCO8zy0A==";
        let err = error_of(&format!("alice {p521}\n"));
        assert!(err.starts_with("signers:1: "), "{err}");
        assert!(err.contains("not supported"), "{err}");
    }

    #[test]
    fn a_file_without_keys_is_an_error() {
        let err = error_of("# nobody yet\n\n");
        assert!(err.contains("signers: no keys"), "{err}");
        let err = error_of("");
        assert!(err.contains("signers: no keys"), "{err}");
    }
}
