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

pub fn parse(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
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
        let value = value.trim();
        let value = unquote(value)
            .ok_or_else(|| format!("line {n}: unbalanced quotes in the value of {key}"))?;
        out.insert(key.to_string(), value.to_string());
    }
    Ok(out)
}

fn unquote(v: &str) -> Option<&str> {
    for q in ['"', '\''] {
        if let Some(rest) = v.strip_prefix(q) {
            return rest.strip_suffix(q);
        }
    }
    if v.ends_with('"') || v.ends_with('\'') {
        return None;
    }
    Some(v)
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
}
