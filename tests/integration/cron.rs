//! The cron entry of docs/operations.md, tested as documented.
//!
//! The entry is taken from the document itself (the code block between
//! `<!-- cron-entry -->` and `<!-- /cron-entry -->`), checked against the
//! syntax of Debian's cron (`/etc/cron.d` format: five time fields, a user,
//! a command), and its command is run with `/bin/sh -c` as cron runs it, in a
//! cron-like environment (nothing inherited; the file's SHELL= and PATH=),
//! with these substitutions only:
//!
//! * `/usr/bin/gitops-run` becomes a wrapper that runs the built binary and
//!   records its exit status (the documented pipe into `logger` hides it);
//! * `/etc/gitops-run/config` becomes a config file in a temporary directory,
//!   pointing at a real Git repository and a temporary state directory;
//! * `logger -t gitops-run` becomes `cat`, because no syslog daemon runs
//!   here: what the entry would log arrives on stdout instead;
//! * `shuf -i 0-59 -n 1` becomes `shuf -i 0-0 -n 1`, so the random delay
//!   sleeps 0 seconds (the `sleep $(shuf ...)` itself still runs).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::run::SAFETY_NET;
use crate::common::{bin_path, git_env, run, wait_until, Origin, Spawned, StateDir};

const OPERATIONS_MD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md");
const BEGIN: &str = "<!-- cron-entry -->";
const END: &str = "<!-- /cron-entry -->";

/// The substitutions described in the module documentation: (documented
/// text, replacement). `{wrapper}` and `{config}` are filled in per test.
const BINARY: &str = "/usr/bin/gitops-run";
const CONFIG: &str = "/etc/gitops-run/config";
const LOGGER: &str = "logger -t gitops-run";
const RANDOM_DELAY: &str = "shuf -i 0-59 -n 1";

// ---------------------------------------------------------------------------
// The documented entry
// ---------------------------------------------------------------------------

/// The cron.d file as documented: environment assignments and the entry.
struct CronFile {
    /// The file name from the `# /etc/cron.d/NAME` comment.
    name: String,
    env: Vec<(String, String)>,
    entry: Entry,
}

struct Entry {
    times: [String; 5],
    user: String,
    command: String,
}

fn documented_cron_file() -> CronFile {
    let doc = fs::read_to_string(OPERATIONS_MD).expect("read docs/operations.md");
    let start = doc
        .find(BEGIN)
        .unwrap_or_else(|| panic!("{BEGIN} not found in docs/operations.md"))
        + BEGIN.len();
    let len = doc[start..]
        .find(END)
        .unwrap_or_else(|| panic!("{END} not found after {BEGIN}"));
    let marked = &doc[start..start + len];
    let mut lines = marked.lines().skip_while(|l| l.trim().is_empty());
    let fence = lines.next().unwrap_or_default();
    assert!(
        fence.starts_with("```"),
        "the cron entry must be a code block right after {BEGIN}, found {fence:?}"
    );
    let body: Vec<&str> = lines.take_while(|l| !l.starts_with("```")).collect();

    let mut name = None;
    let mut env = Vec::new();
    let mut entries = Vec::new();
    for line in body {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        if let Some(comment) = trimmed.strip_prefix('#') {
            if let Some(rest) = comment.trim().strip_prefix("/etc/cron.d/") {
                name = rest.split(|c: char| c == ':' || c.is_whitespace()).next();
            }
            continue;
        }
        if let Some((key, val)) = env_assignment(trimmed) {
            env.push((key, val));
            continue;
        }
        entries.push(parse_entry(trimmed));
    }
    assert_eq!(
        entries.len(),
        1,
        "the documented cron file must hold exactly one entry"
    );
    CronFile {
        name: name
            .expect("the block should start with a `# /etc/cron.d/NAME` comment")
            .to_owned(),
        env,
        entry: entries.pop().unwrap(),
    }
}

/// `NAME=value` (cron allows blanks around `=` and quotes around the value).
fn env_assignment(line: &str) -> Option<(String, String)> {
    let (key, val) = line.split_once('=')?;
    let key = key.trim();
    let is_name = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !is_name {
        return None;
    }
    let val = val.trim();
    let val = val
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| val.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        .unwrap_or(val);
    Some((key.to_owned(), val.to_owned()))
}

/// Five time fields, the user, then the command: the rest of the line.
fn parse_entry(line: &str) -> Entry {
    let mut rest = line;
    let mut fields = Vec::new();
    for _ in 0..6 {
        rest = rest.trim_start();
        let end = rest
            .find(char::is_whitespace)
            .unwrap_or_else(|| panic!("too few fields in cron entry {line:?}"));
        fields.push(rest[..end].to_owned());
        rest = &rest[end..];
    }
    let command = rest.trim().to_owned();
    assert!(!command.is_empty(), "no command in cron entry {line:?}");
    let user = fields.pop().unwrap();
    Entry {
        times: fields.try_into().unwrap(),
        user,
        command,
    }
}

const MONTHS: &[&str] = &[
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// Checks one time field as Debian's cron (Vixie cron) reads it: lists of
/// `*`, `N` or `N-M`, a `/STEP` after `*` or a range, and (single) month or
/// weekday names.
fn check_time_field(field: &str, min: u32, max: u32, names: &[&str]) -> Result<(), String> {
    let number = |s: &str| -> Result<u32, String> {
        let n: u32 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
        if (min..=max).contains(&n) {
            Ok(n)
        } else {
            Err(format!("{n} is outside {min}-{max}"))
        }
    };
    for item in field.split(',') {
        let (base, step) = match item.split_once('/') {
            Some((b, s)) => (b, Some(s)),
            None => (item, None),
        };
        if let Some(step) = step {
            let n: u32 = step
                .parse()
                .map_err(|_| format!("step {step:?} is not a number"))?;
            if n == 0 {
                return Err("a step of 0".into());
            }
        }
        if base == "*" {
            continue;
        }
        if let Some((a, b)) = base.split_once('-') {
            let (a, b) = (number(a)?, number(b)?);
            if a > b {
                return Err(format!("range {a}-{b} runs backwards"));
            }
            continue;
        }
        if step.is_some() {
            return Err(format!("a step needs `*` or a range, not {base:?}"));
        }
        if names.contains(&base.to_ascii_lowercase().as_str()) {
            if field.contains(',') {
                return Err("lists of names are not allowed".into());
            }
            continue;
        }
        number(base)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Running the entry's command
// ---------------------------------------------------------------------------

/// A temporary host: an origin repository, a config file naming it, a state
/// directory, and the wrapper standing in for `/usr/bin/gitops-run`.
struct CronHost {
    state: StateDir,
    origin: Origin,
    cron: CronFile,
}

impl CronHost {
    fn new(run_sh: &str) -> CronHost {
        let mut origin = Origin::new();
        origin.commit(&[("run.sh", run_sh)], "first");
        let host = CronHost {
            state: StateDir::new(),
            origin,
            cron: documented_cron_file(),
        };
        let wrapper = host.wrapper();
        fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\n\
                 # Stands in for {BINARY}: the built binary, with its exit status recorded.\n\
                 '{}' \"$@\"\n\
                 rc=$?\n\
                 echo \"$rc\" > \"$CRON_TEST_RC\"\n\
                 exit \"$rc\"\n",
                bin_path().display()
            ),
        )
        .unwrap();
        fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(
            host.config(),
            format!(
                "GITOPS_REPO={}\nGITOPS_STATE_DIR={}\nGITOPS_METRICS_FILE=off\n",
                host.origin.url(),
                host.state().display()
            ),
        )
        .unwrap();
        host
    }

    fn state(&self) -> &Path {
        self.state.path()
    }

    fn config(&self) -> PathBuf {
        self.state.dir().join("config")
    }

    fn wrapper(&self) -> PathBuf {
        self.state.dir().join("gitops-run")
    }

    /// A file in the temporary directory.
    fn file(&self, name: &str) -> PathBuf {
        self.state.dir().join(name)
    }

    /// The documented command with the substitutions of the module docs.
    fn command(&self) -> String {
        let documented = &self.cron.entry.command;
        let mut command = documented.clone();
        for (from, to) in [
            (BINARY, self.wrapper().display().to_string()),
            (CONFIG, self.config().display().to_string()),
            (LOGGER, "cat".to_owned()),
            (RANDOM_DELAY, "shuf -i 0-0 -n 1".to_owned()),
        ] {
            assert_eq!(
                documented.matches(from).count(),
                1,
                "the documented command should contain {from:?} once: {documented}"
            );
            command = command.replace(from, &to);
        }
        command
    }

    /// `/bin/sh -c COMMAND` with cron's environment: nothing inherited but the
    /// test isolation of git (HOME, no global git config), LOGNAME, and the
    /// assignments of the cron file. `rc` receives gitops-run's exit status.
    fn cron_job(&self, rc: &Path) -> Command {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(self.command()).env_clear();
        git_env(&mut cmd);
        cmd.env("LOGNAME", "root")
            .env("SHELL", "/bin/sh")
            .env("PATH", "/usr/bin:/bin");
        for (key, val) in &self.cron.env {
            cmd.env(key, val);
        }
        cmd.env("CRON_TEST_RC", rc).stdin(Stdio::null());
        cmd
    }
}

fn recorded_rc(path: &Path) -> Option<i32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The first, blocking cron command. Dropping it (also when an assertion
/// fails) releases the entrypoint and waits for the command to end, before
/// the temporary directory it works in is removed; a command that still runs
/// then is killed.
struct Blocked {
    job: Spawned,
    release: PathBuf,
}

impl Blocked {
    fn release(&self) {
        fs::write(&self.release, "").expect("write the release flag");
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        let _ = fs::write(&self.release, "");
        let _ = self.job.wait_at_most(SAFETY_NET);
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn documented_entry_is_valid_for_debian_cron() {
    let cron = documented_cron_file();
    let e = &cron.entry;
    let limits: [(&str, u32, u32, &[&str]); 5] = [
        ("minute", 0, 59, &[]),
        ("hour", 0, 23, &[]),
        ("day of month", 1, 31, &[]),
        ("month", 1, 12, MONTHS),
        ("day of week", 0, 7, DAYS),
    ];
    for (field, (what, min, max, names)) in e.times.iter().zip(limits) {
        check_time_field(field, min, max, names)
            .unwrap_or_else(|err| panic!("{what} field {field:?}: {err}"));
    }
    assert_eq!(e.user, "root", "the pass must run as root");
    assert!(
        e.command.contains(&format!("{BINARY} --config {CONFIG}")),
        "the entry should run {BINARY} --config {CONFIG}: {}",
        e.command
    );
    assert!(
        !e.command.contains("--once"),
        "periodic passes must keep the retry backoff"
    );
    // cron turns an unescaped % into a newline and cuts the command there.
    assert!(
        !e.command.replace("\\%", "").contains('%'),
        "unescaped % in the command: {}",
        e.command
    );
    // run-parts naming: cron ignores files in /etc/cron.d with other names.
    assert!(
        !cron.name.is_empty()
            && cron
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "cron ignores /etc/cron.d/{} (only letters, digits, - and _)",
        cron.name
    );
    for (key, val) in &cron.env {
        if key == "PATH" {
            for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
                assert!(
                    val.split(':').any(|d| d == dir),
                    "PATH should include {dir}: {val}"
                );
            }
        }
    }
    // The time fields themselves: every five minutes.
    assert_eq!(e.times, ["*/5", "*", "*", "*", "*"].map(String::from));
}

/// Proves the time field check can fail.
#[test]
fn time_field_check_rejects_what_cron_rejects() {
    for (field, min, max) in [
        ("60", 0, 59),
        ("*/0", 0, 59),
        ("5-1", 0, 23),
        ("0", 1, 31),
        ("x", 0, 59),
        ("5/10", 0, 59),
        ("", 0, 59),
    ] {
        assert!(
            check_time_field(field, min, max, &[]).is_err(),
            "{field:?} should be rejected"
        );
    }
    assert!(check_time_field("mon,tue", 0, 7, DAYS).is_err());
    assert!(check_time_field("mon", 0, 7, DAYS).is_ok());
    assert!(check_time_field("1-5,*/15,30", 0, 59, &[]).is_ok());
}

#[test]
fn documented_entry_deploys() {
    let host = CronHost::new("#!/bin/sh\necho deployed by cron\n");
    let head = host.origin.head();
    let rc = host.file("rc");
    let out = run(&mut host.cron_job(&rc));
    let stdout = &out.stdout;
    let all = format!("--- stdout ---\n{stdout}\n--- stderr ---\n{}", out.stderr);
    assert!(out.success(), "the cron command failed:\n{all}");
    assert_eq!(
        recorded_rc(&rc),
        Some(0),
        "gitops-run's exit status:\n{all}"
    );
    assert_eq!(
        host.state.current().as_deref(),
        Some(head.as_str()),
        "{all}"
    );
    // What would go to syslog: the entrypoint's output and the summary line.
    assert!(stdout.contains("deployed by cron"), "{all}");
    assert!(stdout.contains("gitops-run: applied"), "{all}");
}

#[test]
fn overlapping_entries_exit_0_and_say_the_lock_is_held() {
    let host = CronHost::new(
        "#!/bin/sh\n\
         echo started > \"$GITOPS_STATE_DIR/started\"\n\
         n=0\n\
         while [ ! -e \"$GITOPS_STATE_DIR/release\" ] && [ $n -lt 2400 ]; do sleep 0.05; n=$((n+1)); done\n\
         [ -e \"$GITOPS_STATE_DIR/release\" ]\n",
    );
    let head = host.origin.head();

    let rc1 = host.file("rc1");
    let out1 = host.file("first.out");
    let mut first = Blocked {
        job: Spawned::start(&mut host.cron_job(&rc1), &out1),
        release: host.state().join("release"),
    };
    wait_until("the first pass's entrypoint to start", || {
        host.state().join("started").exists()
    });

    // The second firing while the first still runs its entrypoint.
    let rc2 = host.file("rc2");
    let began = Instant::now();
    let second = run(&mut host.cron_job(&rc2));
    let took = began.elapsed();
    let stdout = &second.stdout;
    let all = format!(
        "--- stdout ---\n{stdout}\n--- stderr ---\n{}",
        second.stderr
    );
    assert!(second.success(), "{all}");
    assert_eq!(recorded_rc(&rc2), Some(0), "second gitops-run:\n{all}");
    assert!(
        stdout.contains("another gitops-run pass holds the lock"),
        "the second pass should say the lock is held:\n{all}"
    );
    // The lock is not waited for: the entrypoint would block the second
    // command for up to 120 s.
    assert!(
        took < Duration::from_secs(30),
        "the second cron command took {took:?}"
    );
    assert!(first.job.is_running(), "the first must still run");

    first.release();
    let status = first.job.wait();
    let first_out = fs::read_to_string(&out1).unwrap_or_default();
    assert!(status.success(), "first:\n{first_out}");
    assert_eq!(recorded_rc(&rc1), Some(0), "first gitops-run:\n{first_out}");
    assert_eq!(
        host.state.current().as_deref(),
        Some(head.as_str()),
        "{first_out}"
    );
}

/// Every `sh` code block in docs/operations.md is valid shell (`sh -n`): the
/// recipes for cron, OpenRC and runit are meant to be pasted.
#[test]
fn shell_blocks_in_operations_md_parse() {
    let doc = fs::read_to_string(OPERATIONS_MD).unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        match &mut current {
            None if line.trim_start() == "```sh" => current = Some(String::new()),
            Some(block) if line.trim_start().starts_with("```") => {
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
    assert!(current.is_none(), "unterminated code block");
    assert!(
        blocks.len() >= 5,
        "expected the shell recipes, found {}",
        blocks.len()
    );
    for block in blocks {
        let out = Command::new("/bin/sh")
            .args(["-n", "-c", &block])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "not valid sh:\n{block}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
