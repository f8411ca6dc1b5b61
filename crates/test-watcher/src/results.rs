//! Test results: how many tests passed, failed and were ignored in one run,
//! and which ones failed.
//!
//! Two sources are understood:
//! * [`parse_libtest`] reads the human output of `cargo test` (libtest's
//!   default format, the only stable one: `--format json` is unstable);
//! * [`parse_junit`] / [`parse_junit_file`] read the JUnit XML that
//!   cargo-nextest writes (`target/nextest/<profile>/junit.xml`), nextest's
//!   stable machine-readable output.
//!
//! Both yield a [`TestCounts`]. Deciding what a run *was* (passed, failed,
//! error) from the counts and the exit code is the caller's business.

mod junit;
mod libtest;

use std::collections::HashSet;
use std::path::PathBuf;

pub use junit::{parse_junit, parse_junit_file};
pub use libtest::parse_libtest;

/// What one test run passed, failed and ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestCounts {
    /// Tests that passed.
    pub passed: u64,
    /// Tests that failed (JUnit errors count as failures).
    pub failed: u64,
    /// Tests that were ignored (libtest) or skipped (JUnit).
    pub ignored: u64,
    /// Names of the failed tests, in the order they were first seen, without
    /// duplicates. libtest names are test paths (`module::test`, or
    /// `src/lib.rs - item (line 3)` for doc-tests); JUnit names are written
    /// the way nextest prints them: `<binary id> <test path>`.
    pub failed_tests: Vec<String>,
}

/// Why test results could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    /// The document is not well-formed XML, or not a JUnit report; the
    /// message says where (line and column) when the parser knows.
    #[error(
        "invalid JUnit report{}: {message}",
        .path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default()
    )]
    Junit {
        /// The file the report came from, when it came from a file.
        path: Option<PathBuf>,
        /// What is wrong, and where.
        message: String,
    },
    /// The JUnit report file could not be read.
    #[error("cannot read JUnit report {}: {source}", .path.display())]
    Read {
        /// The file that could not be read.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Failed test names in first-seen order, each once.
#[derive(Default)]
struct FailedNames {
    seen: HashSet<String>,
    names: Vec<String>,
}

impl FailedNames {
    fn push(&mut self, name: &str) {
        let name = name.trim();
        if !name.is_empty() && self.seen.insert(name.to_owned()) {
            self.names.push(name.to_owned());
        }
    }

    fn into_vec(self) -> Vec<String> {
        self.names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_names_keep_first_seen_order_without_duplicates() {
        let mut names = FailedNames::default();
        for name in ["b", "a", " b ", "", "c", "a"] {
            names.push(name);
        }
        assert_eq!(names.into_vec(), ["b", "a", "c"]);
    }

    #[test]
    fn errors_name_the_file() {
        let err = ResultsError::Junit {
            path: Some(PathBuf::from("target/nextest/default/junit.xml")),
            message: "bad".into(),
        };
        assert_eq!(
            err.to_string(),
            "invalid JUnit report target/nextest/default/junit.xml: bad"
        );
        let err = ResultsError::Junit {
            path: None,
            message: "bad".into(),
        };
        assert_eq!(err.to_string(), "invalid JUnit report: bad");
    }
}
