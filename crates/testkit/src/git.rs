//! Temporary git repositories, driven with the git CLI (what a user's
//! checkout is made with), with a fixed identity so commits work on a
//! machine without a git configuration.

use std::path::Path;
use std::process::Command;

/// Runs `git args` in `dir` with a test identity; its standard output,
/// trimmed. Panics with git's message when it fails.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.test")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.test")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A git repository (branch `main`) in a temporary folder, removed when
/// dropped.
#[derive(Debug)]
pub struct Repo {
    dir: tempfile::TempDir,
    commits: u32,
}

impl Default for Repo {
    fn default() -> Self {
        Self::new()
    }
}

impl Repo {
    /// An empty repository.
    pub fn new() -> Self {
        let repo = Self {
            dir: tempfile::tempdir().expect("a temporary folder"),
            commits: 0,
        };
        repo.git(&["init", "-q", "-b", "main"]);
        repo.git(&["config", "commit.gpgsign", "false"]);
        repo
    }

    /// Its working tree.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `git args` in it: see [`git`].
    pub fn git(&self, args: &[&str]) -> String {
        git(self.path(), args)
    }

    /// Writes `text` to `relative` (folders made as needed).
    pub fn write(&self, relative: &str, text: impl AsRef<[u8]>) {
        let path = self.path().join(relative);
        std::fs::create_dir_all(path.parent().expect("a parent folder")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    /// Commits everything as it stands, with `message`.
    pub fn commit_all(&self, message: &str) {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
    }

    /// Adds `n` commits, each changing `log.txt`.
    pub fn commit(&mut self, n: u32) {
        for _ in 0..n {
            self.commits += 1;
            self.write("log.txt", format!("change {}\n", self.commits));
            self.commit_all(&format!("change {}", self.commits));
        }
    }
}
