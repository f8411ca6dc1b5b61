//! Walking a repository for its Markdown files: which files [`scan`] reads
//! ([`MarkdownConfig`]), what it found ([`Scan`]), and what it could not
//! read ([`ScanProblem`], [`ScanError`]).

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use ignore::WalkBuilder;

use super::{Document, parse};

/// A file (or directory) that could not be scanned; the scan went on without it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanProblem {
    /// Path relative to the scanned root, `/`-separated (empty when unknown).
    pub path: String,
    /// What went wrong, e.g. `not valid UTF-8 at byte 123`.
    pub message: String,
}

impl fmt::Display for ScanProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// The result of [`scan`].
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// Every selected, readable Markdown file (including those without items),
    /// sorted by path.
    pub documents: Vec<Document>,
    /// Files that were selected but could not be read, and walk errors, sorted
    /// by path. These files are absent from `documents`.
    pub problems: Vec<ScanProblem>,
}

/// Which files [`scan`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkdownConfig {
    /// Globs over root-relative, `/`-separated paths; `*` does not cross `/`
    /// (so `*.md` is top level only and `**/*.md` is everywhere).
    /// Default: `["**/*.md"]`.
    pub globs: Vec<String>,
    /// Larger files are reported as problems instead of parsed. Default: 8 MiB.
    pub max_file_bytes: u64,
}

impl Default for MarkdownConfig {
    fn default() -> Self {
        Self {
            globs: vec!["**/*.md".to_owned()],
            max_file_bytes: 8 * 1024 * 1024,
        }
    }
}

/// Why [`scan`] could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// A glob in [`MarkdownConfig::globs`] does not parse.
    #[error("invalid Markdown glob {glob:?}: {}", source.kind())]
    Glob {
        /// The offending glob.
        glob: String,
        /// The parser's complaint.
        #[source]
        source: globset::Error,
    },
    /// The root does not exist, is not a directory, or cannot be listed.
    #[error("cannot read repository root {}: {source}", path.display())]
    Root {
        /// The root given to [`scan`].
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Scans the Markdown files under `root` selected by `config`.
///
/// Honours `.gitignore` files at any depth, `.git/info/exclude` and the global
/// git excludes (even outside a git repository); looks at hidden files but
/// never enters `.git/`, `target/` or `.automation/` directories; does not
/// follow symlinks. Files that cannot be read, are not UTF-8 or exceed
/// [`MarkdownConfig::max_file_bytes`] become [`ScanProblem`]s.
///
/// # Errors
///
/// [`ScanError::Glob`] when a glob does not parse, [`ScanError::Root`] when
/// `root` is missing, not a directory or cannot be listed.
pub fn scan(root: &Path, config: &MarkdownConfig) -> Result<Scan, ScanError> {
    let globs = build_globs(&config.globs)?;
    let root_error = |source| ScanError::Root {
        path: root.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(root).map_err(root_error)?;
    if !meta.is_dir() {
        return Err(root_error(std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            "not a directory",
        )));
    }
    std::fs::read_dir(root).map_err(root_error)?;

    let mut walker = WalkBuilder::new(root);
    walker
        .standard_filters(false)
        .git_ignore(true)
        .git_exclude(true)
        .git_global(true)
        .require_git(false)
        .follow_links(false)
        .filter_entry(|entry| {
            let skipped = entry.depth() > 0
                && entry.file_type().is_some_and(|t| t.is_dir())
                && matches!(
                    entry.file_name().to_str(),
                    Some(".git" | "target" | ".automation")
                );
            !skipped
        });

    let mut result = Scan::default();
    let mut buffer = Vec::new();
    for entry in walker.build() {
        let entry = match entry {
            Ok(entry) => entry,
            Err(error) => {
                let path = error_path(&error)
                    .map(|path| relative_path(root, path).unwrap_or_default())
                    .unwrap_or_default();
                problem(&mut result, path, error.to_string());
                continue;
            }
        };
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let Some(path) = relative_path(root, entry.path()) else {
            let shown = entry.path().to_string_lossy().into_owned();
            problem(&mut result, shown, "path is not valid UTF-8".to_owned());
            continue;
        };
        if !globs.is_match(&path) {
            continue;
        }
        match read_text(entry.path(), config.max_file_bytes, &mut buffer) {
            Ok(text) => {
                let items = parse(text);
                result.documents.push(Document { path, items });
            }
            Err(message) => problem(&mut result, path, message),
        }
    }
    result.documents.sort_by(|a, b| a.path.cmp(&b.path));
    result.problems.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(result)
}

fn build_globs(globs: &[String]) -> Result<GlobSet, ScanError> {
    let mut set = GlobSetBuilder::new();
    for glob in globs {
        let compiled = GlobBuilder::new(glob)
            .literal_separator(true)
            .build()
            .map_err(|source| ScanError::Glob {
                glob: glob.clone(),
                source,
            })?;
        set.add(compiled);
    }
    set.build().map_err(|source| ScanError::Glob {
        glob: globs.join(", "),
        source,
    })
}

fn problem(scan: &mut Scan, path: String, message: String) {
    tracing::debug!(%path, %message, "markdown scan problem");
    scan.problems.push(ScanProblem { path, message });
}

/// `path` relative to `root`, `/`-separated; `None` when not UTF-8 or not under
/// `root`.
fn relative_path(root: &Path, path: &Path) -> Option<String> {
    let relative = path.strip_prefix(root).ok()?;
    let mut out = String::new();
    for component in relative.components() {
        if !out.is_empty() {
            out.push('/');
        }
        out.push_str(component.as_os_str().to_str()?);
    }
    Some(out)
}

fn error_path(error: &ignore::Error) -> Option<&Path> {
    match error {
        ignore::Error::WithPath { path, .. } => Some(path),
        ignore::Error::Loop { child, .. } => Some(child),
        ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => {
            error_path(err)
        }
        ignore::Error::Partial(errors) => errors.iter().find_map(error_path),
        _ => None,
    }
}

/// Reads a file into `buffer` as UTF-8 text, or says why not.
fn read_text<'b>(path: &Path, max: u64, buffer: &'b mut Vec<u8>) -> Result<&'b str, String> {
    let too_big = |size: u64| format!("file is {size} bytes, more than the limit of {max} bytes");
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let size = file
        .metadata()
        .map_err(|e| format!("cannot read metadata: {e}"))?
        .len();
    if size > max {
        return Err(too_big(size));
    }
    buffer.clear();
    file.take(max.saturating_add(1))
        .read_to_end(buffer)
        .map_err(|e| format!("cannot read: {e}"))?;
    if buffer.len() as u64 > max {
        return Err(too_big(buffer.len() as u64));
    }
    std::str::from_utf8(buffer).map_err(|e| format!("not valid UTF-8 at byte {}", e.valid_up_to()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::markers::Item;
    use crate::model::{MarkerKind, TaskState};

    fn write(root: &Path, path: &str, contents: &[u8]) {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, contents).expect("write");
    }

    #[test]
    fn scan_walks_the_repository() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        write(root, ".gitignore", b"ignored.md\nbuild/\n");
        write(root, "README.md", b"- [x] one\n- [ ] two\n");
        write(root, "ignored.md", b"- [x] hidden by gitignore\n");
        write(root, "build/out.md", b"- [x] ignored dir\n");
        write(root, "target/doc.md", b"- [x] in target\n");
        write(root, "crates/x/target/doc.md", b"- [x] nested target\n");
        write(root, ".automation/state.md", b"- [x] automation\n");
        write(root, ".git/notes.md", b"- [x] in .git\n");
        write(
            root,
            "docs/deep/plan.md",
            b"# Plan\n\nStatus: in progress\n",
        );
        write(root, "docs/nested/.gitignore", b"local.md\n");
        write(root, "docs/nested/local.md", b"- [x] nested ignore\n");
        write(root, "docs/empty.md", b"no items here\n");
        write(
            root,
            ".github/hidden.md",
            b"\xE2\x9C\x85 hidden files are scanned\n",
        );
        write(root, "notes.txt", b"- [x] not markdown\n");
        write(root, "docs/bad.md", b"- [x] ok\n\xff\xfe broken\n");

        let scan = scan(root, &MarkdownConfig::default()).expect("scan");
        let paths: Vec<&str> = scan.documents.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                ".github/hidden.md",
                "README.md",
                "docs/deep/plan.md",
                "docs/empty.md"
            ]
        );
        assert_eq!(scan.documents[1].count(TaskState::Done), 1);
        assert_eq!(scan.documents[1].count(TaskState::Planned), 1);
        assert_eq!(
            scan.documents[2].items,
            vec![Item {
                key: "Plan".to_owned(),
                marker: MarkerKind::StatusLine,
                state: TaskState::InProgress,
                line: 3,
            }]
        );
        assert!(scan.documents[3].items.is_empty());
        assert_eq!(scan.problems.len(), 1, "{:?}", scan.problems);
        assert_eq!(scan.problems[0].path, "docs/bad.md");
        assert_eq!(scan.problems[0].message, "not valid UTF-8 at byte 9");
        assert_eq!(
            scan.problems[0].to_string(),
            "docs/bad.md: not valid UTF-8 at byte 9"
        );
    }

    #[test]
    fn scan_honours_git_info_exclude() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        write(root, ".git/info/exclude", b"private.md\n");
        write(root, "private.md", b"- [x] excluded\n");
        write(root, "public.md", b"- [x] kept\n");
        let scan = scan(root, &MarkdownConfig::default()).expect("scan");
        let paths: Vec<&str> = scan.documents.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, vec!["public.md"]);
    }

    #[test]
    fn scan_top_level_glob_and_size_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        write(root, "PLAN.md", b"- [x] top\n");
        write(root, "big.md", &b"- [ ] x\n".repeat(100));
        write(root, "docs/nested.md", b"- [x] nested\n");
        let config = MarkdownConfig {
            globs: vec!["*.md".to_owned()],
            max_file_bytes: 100,
        };
        let scan = scan(root, &config).expect("scan");
        let paths: Vec<&str> = scan.documents.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, vec!["PLAN.md"]);
        assert_eq!(scan.problems.len(), 1);
        assert_eq!(scan.problems[0].path, "big.md");
        assert_eq!(
            scan.problems[0].message,
            "file is 800 bytes, more than the limit of 100 bytes"
        );
    }

    #[test]
    fn scan_rejects_bad_glob_and_missing_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = MarkdownConfig {
            globs: vec!["**/*.md".to_owned(), "docs/[unclosed".to_owned()],
            ..MarkdownConfig::default()
        };
        let error = scan(dir.path(), &config).expect_err("bad glob");
        assert!(
            matches!(&error, ScanError::Glob { glob, .. } if glob == "docs/[unclosed"),
            "{error:?}"
        );
        assert!(error.to_string().contains("docs/[unclosed"), "{error}");

        let missing = dir.path().join("missing");
        let error = scan(&missing, &MarkdownConfig::default()).expect_err("missing root");
        assert!(matches!(error, ScanError::Root { .. }), "{error:?}");

        write(dir.path(), "file.md", b"x");
        let error =
            scan(&dir.path().join("file.md"), &MarkdownConfig::default()).expect_err("file root");
        assert!(matches!(error, ScanError::Root { .. }), "{error:?}");
    }

    #[cfg(unix)]
    #[test]
    fn scan_reports_unreadable_files_and_skips_symlinks() {
        use std::os::unix::fs::PermissionsExt;

        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        write(root, "ok.md", b"- [x] fine\n");
        write(root, "locked.md", b"- [x] locked\n");
        let outside = tempfile::tempdir().expect("tempdir");
        write(outside.path(), "far.md", b"- [x] far\n");
        std::os::unix::fs::symlink(outside.path().join("far.md"), root.join("link.md"))
            .expect("symlink");
        let locked = root.join("locked.md");
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).expect("chmod");
        let readable_anyway = std::fs::read(&locked).is_ok(); // e.g. running as root

        let scan = scan(root, &MarkdownConfig::default()).expect("scan");
        let paths: Vec<&str> = scan.documents.iter().map(|d| d.path.as_str()).collect();
        if readable_anyway {
            assert_eq!(paths, vec!["locked.md", "ok.md"]);
        } else {
            assert_eq!(paths, vec!["ok.md"]);
            assert_eq!(scan.problems.len(), 1);
            assert_eq!(scan.problems[0].path, "locked.md");
            assert!(scan.problems[0].message.starts_with("cannot open"));
        }
    }
}
