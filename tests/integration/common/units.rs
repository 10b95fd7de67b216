//! The shipped systemd units (`systemd/`): their text, their directives, a
//! temporary root they are installed in as the package installs them, the
//! real `systemd-analyze` pointed at that root, and the defaults of the
//! binary they must agree with.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use super::run::{run, Run};
use super::{bin, bin_path};

/// Where the unit files live in the source tree.
pub const UNITS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd");

/// Where the package installs the binary; ExecStart= must name it.
pub const INSTALLED_BINARY: &str = "/usr/bin/gitops-run";

/// Where the package installs the units, relative to the root.
const UNIT_DIR_IN_ROOT: &str = "usr/lib/systemd/system";

/// The source text of the shipped unit file `name`.
#[track_caller]
pub fn read_unit(name: &str) -> String {
    let path = Path::new(UNITS_DIR).join(name);
    fs::read_to_string(&path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()))
}

/// A unit file as (section, key, value) in file order, comments dropped.
#[track_caller]
pub fn unit_directives(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        assert!(
            !line.ends_with('\\'),
            "line continuations are not expected in the units: {line}"
        );
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not KEY=VALUE: {line}"));
        out.push((
            section.clone(),
            key.trim().to_owned(),
            value.trim().to_owned(),
        ));
    }
    out
}

/// The single value of `key` in `section` of the unit text `text`.
#[track_caller]
pub fn unit_value(text: &str, section: &str, key: &str) -> String {
    let mut found: Vec<String> = unit_directives(text)
        .into_iter()
        .filter(|(s, k, _)| s == section && k == key)
        .map(|(_, _, v)| v)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one [{section}] {key}=, found {found:?} in:\n{text}"
    );
    found.remove(0)
}

/// A `systemd-analyze` command with a fixed, plain environment (C locale, so
/// its tables use ASCII marks; no pager, no colours).
///
/// # Panics
///
/// Panics, saying what to install, when `systemd-analyze` is missing.
pub fn systemd_analyze() -> Command {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/bin")])
        .map(|dir| dir.join("systemd-analyze"))
        .find(|p| p.is_file());
    let Some(exe) = found else {
        panic!(
            "systemd-analyze not found: install the `systemd` package \
             (apt-get install systemd); these tests check the shipped units with it"
        );
    };
    let mut cmd = Command::new(exe);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LC_ALL", "C")
        .env("SYSTEMD_PAGER", "")
        .env("SYSTEMD_COLORS", "0");
    cmd
}

/// Lines of `systemd-analyze verify` output that report a problem with the
/// unit files' contents: unknown keys or sections, bad values, anything
/// systemd ignores.
pub fn complaints(output: &str) -> Vec<&str> {
    output
        .lines()
        .filter(|line| {
            let lower = line.to_ascii_lowercase();
            lower.contains("unknown") || lower.contains("ignoring") || lower.contains("invalid")
        })
        .collect()
}

/// A temporary file system root that units (and the binary) are installed
/// in as the package installs them: units in `usr/lib/systemd/system/`, the
/// binary at [`INSTALLED_BINARY`]. `systemd-analyze --root` reads nothing
/// of the host's units.
pub struct UnitRoot {
    dir: TempDir,
}

impl UnitRoot {
    /// An empty root: add units and the binary yourself.
    pub fn bare() -> UnitRoot {
        let dir = tempfile::Builder::new()
            .prefix("gitops-run-units-")
            .tempdir()
            .expect("create the temporary root");
        let units = dir.path().join(UNIT_DIR_IN_ROOT);
        fs::create_dir_all(&units)
            .unwrap_or_else(|err| panic!("create {}: {err}", units.display()));
        UnitRoot { dir }
    }

    /// The root directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Installs the unit `name` with the text `text`.
    pub fn add_unit(&self, name: &str, text: &str) {
        let path = self.path().join(UNIT_DIR_IN_ROOT).join(name);
        fs::write(&path, text).unwrap_or_else(|err| panic!("write {}: {err}", path.display()));
    }

    /// Installs the binary under test (see [`bin_path`]) at
    /// [`INSTALLED_BINARY`].
    pub fn add_binary(&self) {
        let target = self.path().join(INSTALLED_BINARY.trim_start_matches('/'));
        let dir = target.parent().expect("the binary's directory");
        fs::create_dir_all(dir).unwrap_or_else(|err| panic!("create {}: {err}", dir.display()));
        fs::copy(bin_path(), &target)
            .unwrap_or_else(|err| panic!("copy the binary to {}: {err}", target.display()));
        fs::set_permissions(&target, fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|err| panic!("chmod {}: {err}", target.display()));
    }

    /// `systemd-analyze verify` of `unit` in this root. `--man=no`: the man
    /// page is built by the package, not installed from this tree, and `man`
    /// would look on the host anyway. `--recursive-errors=no`: only the named
    /// unit counts, not units it merely refers to (network-online.target, ...).
    pub fn verify(&self, unit: &str) -> Run {
        run(systemd_analyze()
            .arg("verify")
            .arg(format!("--root={}", self.path().display()))
            .args(["--recursive-errors=no", "--man=no", unit]))
    }

    /// The `Overall exposure level` that `systemd-analyze security` prints
    /// for `unit` in this root, and the whole output.
    #[track_caller]
    pub fn exposure(&self, unit: &str) -> (f64, String) {
        let out = run(systemd_analyze()
            .args(["security", "--offline=yes"])
            .arg(format!("--root={}", self.path().display()))
            .arg(unit));
        let all = out.all_output();
        assert!(out.success(), "security {unit}:\n{all}");
        let marker = format!("Overall exposure level for {unit}:");
        let level = all
            .lines()
            .find_map(|l| l.split_once(&marker).map(|(_, rest)| rest.to_owned()))
            .unwrap_or_else(|| panic!("no {marker:?} line:\n{all}"));
        let score = level
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("cannot parse the exposure level in {level:?}"));
        (score, all)
    }
}

/// The `[default: ...]` of `flag` in `gitops-run ARGS --help`: on the
/// flag's own line (short help) or on a line of its entry below it (long
/// help), before the next option.
#[track_caller]
pub fn help_default(args: &[&str], flag: &str) -> String {
    let out = run(bin().args(args).arg("--help"));
    assert!(out.success(), "gitops-run {args:?} --help:\n{out}");
    let help = out.stdout;
    let start = format!("{flag} ");
    let mut entry = help
        .lines()
        .skip_while(|l| !l.trim_start().starts_with(&start));
    let first = entry
        .next()
        .unwrap_or_else(|| panic!("{flag} not in gitops-run {args:?} --help:\n{help}"));
    std::iter::once(first)
        .chain(entry.take_while(|l| !l.trim_start().starts_with('-')))
        .find_map(|l| l.split_once("[default: "))
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(value, _)| value.to_owned())
        .unwrap_or_else(|| panic!("no default for {flag} in gitops-run {args:?} --help:\n{help}"))
}
