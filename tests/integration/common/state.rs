//! The fixture every pass test starts from: a [`StateDir`] (a temporary
//! directory and a state directory path inside it that does not exist yet,
//! so the binary creates it with its own mode), and a [`Host`] (a state
//! directory plus the [`Origin`] it deploys from). Passes and `status` run
//! through the watchdog of [`run`](super::run).

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use tempfile::TempDir;

use super::run::{gitops, run, Run};
use super::{bin, Origin};

/// A state directory path inside its own temporary directory.
pub struct StateDir {
    tmp: TempDir,
    path: PathBuf,
}

impl StateDir {
    /// A new temporary directory; the state directory is `<it>/state` and
    /// does not exist yet.
    pub fn new() -> StateDir {
        let tmp = tempfile::Builder::new()
            .prefix("gitops-run-test-")
            .tempdir()
            .expect("create a temporary directory");
        let path = tmp.path().join("state");
        StateDir { tmp, path }
    }

    /// Puts the state directory at `path` (which does not exist yet) inside
    /// [`dir`](Self::dir), for a test that mounts a file system of its own
    /// there (a small disk to fill).
    #[track_caller]
    pub fn relocate(&mut self, path: PathBuf) {
        assert!(
            path.starts_with(self.tmp.path()),
            "{} is not inside {}",
            path.display(),
            self.tmp.path().display()
        );
        self.path = path;
    }

    /// The state directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The temporary directory around the state directory, for whatever
    /// else a test needs on disk (config files, markers, logs).
    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// The state directory as an argument.
    pub fn arg(&self) -> &str {
        self.path.to_str().expect("UTF-8 state dir")
    }

    /// `gitops-run --repo REPO --state-dir DIR EXTRA...`, to run with
    /// [`run`] after adding what the test needs (environment, ...).
    pub fn pass_cmd(&self, repo: &str, extra: &[&str]) -> Command {
        let mut cmd = bin();
        cmd.args(["--repo", repo, "--state-dir", self.arg()])
            .args(extra);
        cmd
    }

    /// One pass: `gitops-run --repo REPO --state-dir DIR EXTRA...`.
    pub fn pass(&self, repo: &str, extra: &[&str]) -> Run {
        run(&mut self.pass_cmd(repo, extra))
    }

    /// `gitops-run status --state-dir DIR` (text), which must succeed.
    #[track_caller]
    pub fn status_text(&self) -> Run {
        let run = gitops(&["status", "--state-dir", self.arg()]);
        run.assert_code(0);
        run
    }

    /// `gitops-run status --json --state-dir DIR`, parsed.
    #[track_caller]
    pub fn status_json(&self) -> Value {
        let run = gitops(&["status", "--json", "--state-dir", self.arg()]);
        run.assert_code(0);
        serde_json::from_str(&run.stdout)
            .unwrap_or_else(|err| panic!("status --json is not JSON ({err}):\n{run}"))
    }

    /// stdout and stderr of `status` and of `status --json`.
    #[track_caller]
    pub fn all_status_output(&self) -> String {
        let text = self.status_text();
        let json = gitops(&["status", "--json", "--state-dir", self.arg()]);
        json.assert_code(0);
        format!(
            "{}{}{}{}",
            text.stdout, text.stderr, json.stdout, json.stderr
        )
    }

    /// The text of `state.json`, which must exist.
    #[track_caller]
    pub fn state_json_text(&self) -> String {
        let path = self.path.join("state.json");
        fs::read_to_string(&path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()))
    }

    /// `state.json`, which must exist and be valid JSON.
    #[track_caller]
    pub fn state_json(&self) -> Value {
        let text = self.state_json_text();
        serde_json::from_str(&text)
            .unwrap_or_else(|err| panic!("state.json is not valid JSON ({err}):\n{text}"))
    }

    /// The commit `current` points at; `None` without a `current` link.
    /// See [`current_in`].
    #[track_caller]
    pub fn current(&self) -> Option<String> {
        current_in(&self.path)
    }

    /// The names in `trees/` (none if it does not exist).
    pub fn trees(&self) -> Vec<String> {
        fs::read_dir(self.path.join("trees"))
            .map(|entries| {
                entries
                    .flatten()
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The lines of the file `name` in the state directory, which
    /// entrypoints append records to (none if it does not exist).
    pub fn lines(&self, name: &str) -> Vec<String> {
        fs::read_to_string(self.path.join(name))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Asserts that `current` points at the tree of `commit` and that tree
    /// holds the entrypoint `run.sh`.
    #[track_caller]
    pub fn assert_deployed(&self, commit: &str) {
        assert_eq!(
            self.current().as_deref(),
            Some(commit),
            "current should point at trees/{commit}"
        );
        assert!(self.path.join("current").join("run.sh").is_file());
    }

    /// Asserts that nothing was deployed: no `current`, no checked-out tree,
    /// and the entrypoint never ran (none of the files in `records`, which
    /// it writes to, has a line).
    #[track_caller]
    pub fn assert_nothing_deployed(&self, records: &[&str]) {
        assert_eq!(self.current(), None, "current must not exist");
        for record in records {
            let lines = self.lines(record);
            assert!(lines.is_empty(), "the entrypoint ran ({record}): {lines:?}");
        }
        let trees = self.trees();
        assert!(trees.is_empty(), "trees were checked out: {trees:?}");
    }
}

/// The commit the `current` link in the state directory `state` points at,
/// or `None` if there is no such link. The link must be the relative
/// `trees/<commit>`.
#[track_caller]
pub fn current_in(state: &Path) -> Option<String> {
    let target = fs::read_link(state.join("current")).ok()?;
    assert_eq!(
        target.parent(),
        Some(Path::new("trees")),
        "current should point at trees/<commit>, points at {}",
        target.display()
    );
    target
        .file_name()
        .map(OsStr::to_string_lossy)
        .map(|name| name.into_owned())
}

/// A host deploying from its own origin: an [`Origin`] and a [`StateDir`].
pub struct Host {
    pub origin: Origin,
    pub state: StateDir,
}

impl Host {
    /// An empty origin and a fresh state directory.
    pub fn new() -> Host {
        Host {
            origin: Origin::new(),
            state: StateDir::new(),
        }
    }

    /// A pass command against the origin's `file://` URL, to run with
    /// [`run`] after adding what the test needs.
    pub fn pass_cmd(&self, extra: &[&str]) -> Command {
        self.state.pass_cmd(&self.origin.url(), extra)
    }

    /// One pass against the origin's `file://` URL.
    pub fn pass(&self, extra: &[&str]) -> Run {
        self.state.pass(&self.origin.url(), extra)
    }
}
