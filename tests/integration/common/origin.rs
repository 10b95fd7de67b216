//! [`Origin`]: an upstream repository with deterministic history.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::{git, git_with_env};

/// Unix time of 2026-01-01T00:00:00Z, the date of an origin's first commit.
const FIRST_COMMIT_EPOCH: u64 = 1_767_225_600;

/// Name of the work tree directory inside the origin's temporary directory.
const WORK_TREE_NAME: &str = "origin";

/// A non-bare upstream repository on branch `main` in its own temporary
/// directory.
///
/// The work tree is `<root>/origin`, so `root()` can serve as the project
/// root of an [`HttpGitServer`](super::HttpGitServer), which then exposes
/// the repository as `origin/.git`.
///
/// Commits are deterministic: identity comes from
/// [`git_env`](super::git_env), and the N-th commit-creating operation
/// (counting from 0) on an `Origin` is dated 2026-01-01T00:00:00Z plus N
/// minutes, for author and committer alike. Two origins given the same
/// sequence of operations therefore have identical commit ids.
pub struct Origin {
    dir: TempDir,
    work_tree: PathBuf,
    commits: u64,
}

impl Origin {
    /// Creates an empty repository (`git init -b main`).
    ///
    /// # Panics
    ///
    /// Panics if the temporary directory or the repository cannot be
    /// created.
    pub fn new() -> Origin {
        let dir = tempfile::Builder::new()
            .prefix("gitops-run-origin-")
            .tempdir()
            .expect("create the origin's temporary directory");
        let work_tree = dir.path().join(WORK_TREE_NAME);
        fs::create_dir(&work_tree).expect("create the origin's work tree");
        git(&work_tree, &["init", "-q", "-b", "main"]);
        Origin {
            dir,
            work_tree,
            commits: 0,
        }
    }

    /// The directory holding the work tree (named `origin`).
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The work tree.
    pub fn path(&self) -> &Path {
        &self.work_tree
    }

    /// The repository's `.git` directory.
    pub fn git_dir(&self) -> PathBuf {
        self.work_tree.join(".git")
    }

    /// A `file://` URL for the repository.
    pub fn url(&self) -> String {
        format!("file://{}", self.work_tree.display())
    }

    /// Writes `files` (path relative to the work tree, content), stages
    /// everything with `git add -A` and commits with `message`.
    ///
    /// Parent directories are created as needed. Content starting with `#!`
    /// is written with mode 0755, anything else with 0644. An empty `files`
    /// slice makes an empty commit. Returns the new commit's full id.
    pub fn commit(&mut self, files: &[(&str, &str)], message: &str) -> String {
        for (path, content) in files {
            let full = self.work_tree.join(path);
            if let Some(parent) = full.parent() {
                fs::create_dir_all(parent)
                    .unwrap_or_else(|err| panic!("create {}: {err}", parent.display()));
            }
            fs::write(&full, content)
                .unwrap_or_else(|err| panic!("write {}: {err}", full.display()));
            let mode = if content.starts_with("#!") {
                0o755
            } else {
                0o644
            };
            fs::set_permissions(&full, fs::Permissions::from_mode(mode))
                .unwrap_or_else(|err| panic!("chmod {}: {err}", full.display()));
        }
        git(&self.work_tree, &["add", "-A"]);
        self.git_dated(&["commit", "-q", "--allow-empty", "-m", message]);
        self.head()
    }

    /// Removes `paths` with `git rm -r` and commits with `message`, dated
    /// like [`commit`](Self::commit). Returns the new commit's full id.
    pub fn remove(&mut self, paths: &[&str], message: &str) -> String {
        let mut args = vec!["rm", "-r", "-q", "--"];
        args.extend_from_slice(paths);
        git(&self.work_tree, &args);
        self.git_dated(&["commit", "-q", "-m", message]);
        self.head()
    }

    /// The full id of the commit `main` points at.
    pub fn head(&self) -> String {
        git(&self.work_tree, &["rev-parse", "HEAD"])
    }

    /// Moves `main` (and the work tree) to `rev`, e.g. back to an older
    /// commit, as if the branch had been reset and force-pushed.
    pub fn reset_hard(&self, rev: &str) {
        git(&self.work_tree, &["reset", "-q", "--hard", rev]);
    }

    /// Replaces the tip of `main` by a commit with the same tree and parents
    /// but the new `message` and a new date, so the old tip is no longer an
    /// ancestor (a diverged, force-pushed history). Returns the new id.
    pub fn amend(&mut self, message: &str) -> String {
        self.git_dated(&["commit", "-q", "--amend", "--allow-empty", "-m", message]);
        self.head()
    }

    /// Creates branch `name` at the current `HEAD`.
    pub fn branch(&self, name: &str) {
        git(&self.work_tree, &["branch", name]);
    }

    /// Runs a commit-creating git command with the next deterministic date.
    fn git_dated(&mut self, args: &[&str]) {
        // Git's internal date format: "<unix seconds> <utc offset>".
        let date = format!("{} +0000", FIRST_COMMIT_EPOCH + self.commits * 60);
        self.commits += 1;
        git_with_env(
            &self.work_tree,
            args,
            &[
                ("GIT_AUTHOR_DATE", date.as_str()),
                ("GIT_COMMITTER_DATE", date.as_str()),
            ],
        );
    }
}

impl Default for Origin {
    fn default() -> Self {
        Self::new()
    }
}
