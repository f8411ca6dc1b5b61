//! What changed in the repository's history since the last audit.
//!
//! We read the repository in process with libgit2 (the `git2` crate, built
//! without network features and linked statically): the audit-agent's
//! production image is distroless and carries no `git` binary, a revision
//! walk over 10,000 commits takes milliseconds, and errors come back typed
//! rather than as text to parse. gix was the other candidate; it builds a far
//! larger dependency tree for the two operations we need.

use std::path::Path;

use git2::{ErrorCode, Oid, Repository, RepositoryOpenFlags};

/// The history facts of one audit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitFacts {
    /// The HEAD commit, or `None` in a repository without commits.
    pub head: Option<String>,
    /// The branch HEAD points at, if any (not detached).
    pub branch: Option<String>,
    /// Commits reachable from HEAD and not from the previous head. On the
    /// first audit, every commit of HEAD's history.
    pub new_commits: u64,
    /// The previous head is no longer an ancestor of HEAD (a force push, a
    /// rebase, a reset).
    pub history_rewritten: bool,
    /// Set when the rewrite left the previous head unknown to the
    /// repository, so new commits could not be counted.
    pub note: Option<String>,
}

/// Why the history could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The path is not (the top of) a git repository.
    #[error("{path} is not a git repository ({reason})")]
    NotARepository {
        /// The configured path.
        path: String,
        /// libgit2's words.
        reason: String,
    },
    /// The repository could not be read.
    #[error("reading the git history of {path}: {reason}")]
    Read {
        /// The configured path.
        path: String,
        /// libgit2's words.
        reason: String,
    },
}

/// Opens the repository whose working tree (or bare directory) is `path`
/// itself; parent directories are not searched, so a folder that is not a
/// repository is reported as such even inside another one.
pub fn open(path: &Path) -> Result<Repository, GitError> {
    Repository::open_ext(path, RepositoryOpenFlags::NO_SEARCH, &[] as &[&Path]).map_err(|e| {
        GitError::NotARepository {
            path: path.display().to_string(),
            reason: e.message().to_owned(),
        }
    })
}

/// Reads HEAD and counts the commits since `previous` (the head of the last
/// audit, `None` on the first).
pub fn inspect(path: &Path, previous: Option<&str>) -> Result<GitFacts, GitError> {
    let repo = open(path)?;
    let read = |e: git2::Error| GitError::Read {
        path: path.display().to_string(),
        reason: e.message().to_owned(),
    };
    let head_ref = match repo.head() {
        Ok(head) => head,
        Err(e) if e.code() == ErrorCode::UnbornBranch || e.code() == ErrorCode::NotFound => {
            return Ok(GitFacts::default());
        }
        Err(e) => return Err(read(e)),
    };
    let branch = head_ref
        .is_branch()
        .then(|| head_ref.shorthand().ok().map(str::to_owned))
        .flatten();
    let head = head_ref.peel_to_commit().map_err(read)?.id();

    let mut facts = GitFacts {
        head: Some(head.to_string()),
        branch,
        ..GitFacts::default()
    };
    let previous = match previous {
        Some(p) => Some(Oid::from_str(p).map_err(|_| GitError::Read {
            path: path.display().to_string(),
            reason: format!("the stored previous head {p:?} is not a commit id"),
        })?),
        None => None,
    };
    if previous == Some(head) {
        return Ok(facts);
    }

    let mut walk = repo.revwalk().map_err(read)?;
    walk.push(head).map_err(read)?;
    if let Some(previous) = previous {
        let known = repo.find_commit(previous).is_ok();
        let ancestor = known && repo.graph_descendant_of(head, previous).map_err(read)?;
        if !ancestor {
            facts.history_rewritten = true;
        }
        if !known {
            facts.note = Some(format!(
                "the previously audited head {previous} is no longer in the repository; \
                 commits since it cannot be counted"
            ));
            return Ok(facts);
        }
        walk.hide(previous).map_err(read)?;
    }
    let mut count = 0u64;
    for oid in walk {
        oid.map_err(read)?;
        count += 1;
    }
    facts.new_commits = count;
    Ok(facts)
}
