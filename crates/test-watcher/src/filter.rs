//! Which paths matter: everything under the watch root except what git
//! ignores (`.gitignore` at any depth, `.ignore`, `.git/info/exclude`),
//! what is always ignored (`target/`, `.git/`, `.automation/` at any depth:
//! build output, git's own files, the platform's state), and, when an
//! extension filter is set, files with other extensions.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use ignore::Match;
use ignore::gitignore::{Gitignore, GitignoreBuilder};

/// Directory names ignored wherever they appear.
pub const ALWAYS_IGNORED: &[&str] = &["target", ".git", ".automation"];

/// Files whose change reloads the ignore rules of their directory.
const IGNORE_FILES: &[&str] = &[".gitignore", ".ignore"];

/// The path filter of one watch root.
#[derive(Debug)]
pub struct Filter {
    root: PathBuf,
    extensions: Vec<String>,
    /// Ignore rules by the directory they apply under (root included).
    rules: BTreeMap<PathBuf, Gitignore>,
}

impl Filter {
    /// A filter for `root` (absolute) with optional extensions (without the
    /// dot; empty = every file). Reads the root's ignore files and
    /// `.git/info/exclude`; nested ones are added by [`Filter::load_dir`].
    pub fn new(root: &Path, extensions: &[String]) -> Self {
        let mut filter = Self {
            root: root.to_path_buf(),
            extensions: extensions
                .iter()
                .map(|e| e.trim_start_matches('.').to_ascii_lowercase())
                .filter(|e| !e.is_empty())
                .collect(),
            rules: BTreeMap::new(),
        };
        filter.load_dir(root);
        filter
    }

    /// The watch root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// (Re)reads the ignore files of `dir`.
    pub fn load_dir(&mut self, dir: &Path) {
        let mut builder = GitignoreBuilder::new(dir);
        let mut any = false;
        let mut files: Vec<PathBuf> = IGNORE_FILES.iter().map(|f| dir.join(f)).collect();
        if dir == self.root {
            files.push(dir.join(".git/info/exclude"));
        }
        for file in files.iter().filter(|f| f.is_file()) {
            match builder.add(file) {
                None => any = true,
                Some(error) => {
                    // A bad line is skipped by the builder; the rest still applies.
                    tracing::warn!(file = %file.display(), %error, "ignore file has an error");
                    any = true;
                }
            }
        }
        if !any {
            self.rules.remove(dir);
            return;
        }
        match builder.build() {
            Ok(rules) => {
                self.rules.insert(dir.to_path_buf(), rules);
            }
            Err(error) => tracing::warn!(dir = %dir.display(), %error, "cannot use ignore rules"),
        }
    }

    /// Whether a change of `path` is an ignore file whose rules must reload.
    pub fn is_ignore_file(&self, path: &Path) -> bool {
        path.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| IGNORE_FILES.contains(&n))
            || path.ends_with(".git/info/exclude")
    }

    /// Whether a directory is left out entirely (not watched, not walked).
    pub fn skips_dir(&self, dir: &Path) -> bool {
        self.always_ignored(dir) || self.git_ignored(dir, true)
    }

    /// Whether a change of `path` must not trigger a run.
    pub fn ignores(&self, path: &Path, is_dir: bool) -> bool {
        if self.always_ignored(path) || self.git_ignored(path, is_dir) {
            return true;
        }
        if is_dir || self.extensions.is_empty() {
            return false;
        }
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        !ext.is_some_and(|e| self.extensions.contains(&e))
    }

    fn always_ignored(&self, path: &Path) -> bool {
        let Ok(relative) = path.strip_prefix(&self.root) else {
            // Outside the root: nothing to do with us.
            return true;
        };
        relative.components().any(|c| match c {
            Component::Normal(name) => name.to_str().is_some_and(|n| ALWAYS_IGNORED.contains(&n)),
            _ => false,
        })
    }

    fn git_ignored(&self, path: &Path, is_dir: bool) -> bool {
        // The deepest rules that say anything win, as in git.
        for (dir, rules) in self.rules.iter().rev() {
            if !path.starts_with(dir) || path == dir {
                continue;
            }
            match rules.matched_path_or_any_parents(path, is_dir) {
                Match::Ignore(_) => return true,
                Match::Whitelist(_) => return false,
                Match::None => {}
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join(".git/info")).unwrap();
        std::fs::create_dir_all(root.join("src/gen")).unwrap();
        std::fs::create_dir_all(root.join("sub/target")).unwrap();
        std::fs::write(root.join(".gitignore"), "*.log\n/build/\n!keep.log\n").unwrap();
        std::fs::write(root.join(".ignore"), "scratch/\n").unwrap();
        std::fs::write(root.join(".git/info/exclude"), "local.txt\n").unwrap();
        std::fs::write(root.join("src/.gitignore"), "gen/\n").unwrap();
        dir
    }

    #[test]
    fn honours_every_ignore_source() {
        let dir = tree();
        let root = dir.path().canonicalize().unwrap();
        let mut filter = Filter::new(&root, &[]);
        filter.load_dir(&root.join("src"));
        assert!(!filter.ignores(&root.join("src/lib.rs"), false));
        assert!(filter.ignores(&root.join("debug.log"), false));
        assert!(!filter.ignores(&root.join("keep.log"), false));
        assert!(filter.ignores(&root.join("build/out.rs"), false));
        assert!(filter.ignores(&root.join("scratch/a.rs"), false));
        assert!(filter.ignores(&root.join("local.txt"), false));
        assert!(filter.ignores(&root.join("src/gen/x.rs"), false));
        assert!(filter.skips_dir(&root.join("src/gen")));
        assert!(filter.ignores(&root.join("target/debug/x"), false));
        assert!(filter.ignores(&root.join("sub/target/x"), false));
        assert!(filter.ignores(&root.join(".git/index"), false));
        assert!(filter.ignores(&root.join(".automation/audit-agent.db"), false));
        assert!(filter.ignores(Path::new("/elsewhere/x.rs"), false));
    }

    #[test]
    fn the_extension_filter_applies_to_files_only() {
        let dir = tree();
        let root = dir.path().canonicalize().unwrap();
        let filter = Filter::new(&root, &["rs".into(), ".toml".into()]);
        assert!(!filter.ignores(&root.join("src/lib.rs"), false));
        assert!(!filter.ignores(&root.join("Cargo.toml"), false));
        assert!(filter.ignores(&root.join("README.md"), false));
        assert!(!filter.ignores(&root.join("src"), true));
    }

    #[test]
    fn ignore_rules_reload() {
        let dir = tree();
        let root = dir.path().canonicalize().unwrap();
        let mut filter = Filter::new(&root, &[]);
        assert!(!filter.ignores(&root.join("notes.md"), false));
        std::fs::write(root.join(".gitignore"), "*.md\n").unwrap();
        assert!(filter.is_ignore_file(&root.join(".gitignore")));
        filter.load_dir(&root);
        assert!(filter.ignores(&root.join("notes.md"), false));
        assert!(!filter.ignores(&root.join("debug.log"), false));
    }
}
