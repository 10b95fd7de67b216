//! The `--config` file: `KEY=VALUE` lines with the `GITOPS_*` variable names.

use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::Path;

use super::cli::CONFIG_KEYS;
use crate::exit::{fail, Classify, Exit};

/// Read `KEY=VALUE` lines. Blank lines and `#` comments are allowed; values may be
/// wrapped in single or double quotes. Unknown keys are an error that names them.
pub fn read(path: &Path) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read config file {}", path.display()))
        .class(Exit::Usage)?;
    parse(&text).map_err(|msg| {
        fail(
            Exit::Usage,
            format!("config file {}: {msg}", path.display()),
        )
    })
}

/// Parse the file's text. Blank lines and `#` comments are allowed, also after a
/// value (`KEY=value # why`, `KEY="value" # why`); a `#` inside quotes, or not
/// preceded by a space, belongs to the value. A key given twice is an error naming
/// both lines: which one was meant cannot be guessed.
pub fn parse(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {n}: expected KEY=VALUE, found {line:?}"));
        };
        let key = key.trim();
        if key == "GITOPS_CONFIG" {
            return Err(format!(
                "line {n}: GITOPS_CONFIG cannot be set from a config file"
            ));
        }
        if !CONFIG_KEYS.contains(&key) {
            return Err(format!(
                "line {n}: unknown key {key:?} (known keys: {})",
                CONFIG_KEYS.join(", ")
            ));
        }
        if let Some(first) = seen.insert(key.to_string(), n) {
            return Err(format!(
                "line {n}: {key} is set again (first on line {first}); keep one of them"
            ));
        }
        let value = parse_value(value.trim())
            .map_err(|why| format!("line {n}: {why} in the value of {key}"))?;
        out.insert(key.to_string(), value);
    }
    Ok(out)
}

/// A value: quoted with `"` or `'` (then only a comment may follow), or plain up to
/// a ` #` comment.
fn parse_value(v: &str) -> Result<String, String> {
    for q in ['"', '\''] {
        if let Some(rest) = v.strip_prefix(q) {
            let Some(end) = rest.find(q) else {
                return Err(format!("unbalanced quotes (no closing {q})"));
            };
            let after = rest[end + 1..].trim_start();
            if !after.is_empty() && !after.starts_with('#') {
                return Err(format!(
                    "unexpected text {after:?} after the closing quote (a comment starts with #)"
                ));
            }
            return Ok(rest[..end].to_string());
        }
    }
    let plain = match v.find(" #").or_else(|| v.find("\t#")) {
        Some(i) => v[..i].trim_end(),
        None => v,
    };
    if plain.ends_with('"') || plain.ends_with('\'') {
        return Err("unbalanced quotes (no opening quote)".into());
    }
    Ok(plain.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_accepts_comments_quotes_and_blank_lines() {
        let cfg = parse("# a comment\n\nGITOPS_REPO=https://example.com/r.git\nGITOPS_BRANCH = \"prod\"\nGITOPS_TIMEOUT='5m'\n").unwrap();
        assert_eq!(cfg["GITOPS_REPO"], "https://example.com/r.git");
        assert_eq!(cfg["GITOPS_BRANCH"], "prod");
        assert_eq!(cfg["GITOPS_TIMEOUT"], "5m");
    }

    #[test]
    fn config_names_unknown_key_and_bad_line() {
        let err = parse("GITOPS_REPO=x\nGITOPS_BRANHC=main\n").unwrap_err();
        assert!(
            err.contains("line 2") && err.contains("GITOPS_BRANHC"),
            "{err}"
        );
        let err = parse("just words\n").unwrap_err();
        assert!(err.contains("line 1"), "{err}");
        assert!(parse("GITOPS_BRANCH=\"main\n").is_err());
    }

    #[test]
    fn trailing_comments_are_allowed_after_plain_and_quoted_values() {
        let cfg = parse(
            "GITOPS_BRANCH=\"prod\" # the production branch\nGITOPS_TIMEOUT=5m   # long enough\nGITOPS_REPO=https://h/r.git#frag\nGITOPS_ENTRYPOINT='a # b'\n",
        )
        .unwrap();
        assert_eq!(cfg["GITOPS_BRANCH"], "prod");
        assert_eq!(cfg["GITOPS_TIMEOUT"], "5m");
        assert_eq!(cfg["GITOPS_REPO"], "https://h/r.git#frag");
        assert_eq!(cfg["GITOPS_ENTRYPOINT"], "a # b");
        let err = parse("GITOPS_BRANCH=\"prod\" oops\n").unwrap_err();
        assert!(err.contains("after the closing quote"), "{err}");
    }

    #[test]
    fn a_key_set_twice_names_both_lines() {
        let err = parse("GITOPS_BRANCH=a\n# x\nGITOPS_BRANCH=b\n").unwrap_err();
        assert!(err.contains("line 3") && err.contains("line 1"), "{err}");
    }
}
