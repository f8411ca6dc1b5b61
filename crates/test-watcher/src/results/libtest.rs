//! libtest's human output, as `cargo test` prints it.
//!
//! Every test binary (unit tests, each integration test, the doc-tests) ends
//! with one summary line:
//!
//! ```text
//! test result: FAILED. 3 passed; 1 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.01s
//! ```
//!
//! The counts are the sum of those lines. Failed names come from the
//! per-test lines (`test some::name ... FAILED`) and from the `failures:`
//! list printed just before a binary's summary line.

use std::borrow::Cow;

use super::{FailedNames, TestCounts};

/// Reads the output of `cargo test` (stdout and stderr, in any interleaving,
/// with or without ANSI colours).
///
/// Sums every `test result:` line across test binaries and collects the names
/// of failed tests. Returns `None` when there is no `test result:` line at
/// all: nothing ran, or the build failed, or a test binary crashed before its
/// summary; what that means is for the caller to decide with the exit code.
pub fn parse_libtest(output: &str) -> Option<TestCounts> {
    let lines: Vec<Cow<'_, str>> = output.lines().map(strip_ansi).collect();
    let mut counts = TestCounts::default();
    let mut failed = FailedNames::default();
    let mut found = false;
    let mut i = 0;
    while let Some(line) = lines.get(i) {
        let line = line.trim_end();
        if let Some(summary) = summary_line(line) {
            found = true;
            counts.passed = counts.passed.saturating_add(summary.passed);
            counts.failed = counts.failed.saturating_add(summary.failed);
            counts.ignored = counts.ignored.saturating_add(summary.ignored);
        } else if let Some(name) = failed_test_line(line) {
            failed.push(name);
        } else if line == "failures:"
            && let Some((names, next)) = failures_list(&lines, i + 1)
        {
            for name in names {
                failed.push(name);
            }
            // `next` is the summary line that closes the list.
            i = next;
            continue;
        }
        i += 1;
    }
    found.then(|| TestCounts {
        failed_tests: failed.into_vec(),
        ..counts
    })
}

/// The counts of one `test result:` line.
struct Summary {
    passed: u64,
    failed: u64,
    ignored: u64,
}

/// Parses `test result: ok. 3 passed; 1 failed; 2 ignored; ...`; the line
/// may carry other text before it (output of a test interleaved with it).
fn summary_line(line: &str) -> Option<Summary> {
    let start = line.find("test result:")?;
    let rest = line.get(start + "test result:".len()..)?.trim_start();
    let (status, fields) = rest.split_once('.')?;
    if status != "ok" && status != "FAILED" {
        return None;
    }
    let (mut passed, mut failed, mut ignored) = (None, None, None);
    for field in fields.split(';') {
        let mut words = field.split_whitespace();
        let (Some(number), Some(label)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(number) = number.parse::<u64>() else {
            continue;
        };
        match label {
            "passed" => passed = Some(number),
            "failed" => failed = Some(number),
            "ignored" => ignored = Some(number),
            _ => {}
        }
    }
    Some(Summary {
        passed: passed?,
        failed: failed?,
        ignored: ignored.unwrap_or(0),
    })
}

/// The name in `test some::name ... FAILED`, without the mode libtest appends
/// (`- should panic`, `- compile fail`), so it matches the `failures:` list.
fn failed_test_line(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("test ")?;
    let (name, status) = rest.rsplit_once(" ... ")?;
    if !status.trim_start().starts_with("FAILED") {
        return None;
    }
    let name = name.trim();
    let name = [" - should panic", " - compile fail", " - compile"]
        .iter()
        .find_map(|mode| name.strip_suffix(mode))
        .unwrap_or(name);
    Some(name)
}

/// The names listed under a `failures:` header that starts at `start`, and
/// the index of the summary line that must follow them. The first
/// `failures:` block of a binary (the captured output of each failed test,
/// `---- name stdout ----`) is not a list and yields `None`, as does anything
/// that is not closed by a summary line.
fn failures_list<'a>(lines: &'a [Cow<'a, str>], start: usize) -> Option<(Vec<&'a str>, usize)> {
    let blank = |i: &usize| lines.get(*i).is_some_and(|l| l.trim().is_empty());
    let mut i = start;
    while blank(&i) {
        i += 1;
    }
    let mut names = Vec::new();
    while let Some(name) = lines
        .get(i)
        .and_then(|l| l.strip_prefix("    "))
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        names.push(name);
        i += 1;
    }
    while blank(&i) {
        i += 1;
    }
    let closed = lines.get(i).is_some_and(|l| summary_line(l).is_some());
    (closed && !names.is_empty()).then_some((names, i))
}

/// Removes ANSI escape sequences (colours from `--color always` or a TTY).
fn strip_ansi(line: &str) -> Cow<'_, str> {
    if !line.contains('\x1b') {
        return Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        match chars.next() {
            // CSI: parameters, then one final byte in '@'..='~'.
            Some('[') => {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            // OSC (hyperlinks, titles): up to BEL or ESC '\'.
            Some(']') => {
                while let Some(c) = chars.next() {
                    if c == '\x07' {
                        break;
                    }
                    if c == '\x1b' && chars.peek() == Some(&'\\') {
                        chars.next();
                        break;
                    }
                }
            }
            // Any other escape is two characters long.
            _ => {}
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cargo test --no-fail-fast` on a crate with unit tests, two integration
    /// test binaries and doc-tests, as cargo and libtest print it.
    const WORKSPACE_RUN: &str = r#"   Compiling demo v0.1.0 (/src/demo)
    Finished `test` profile [unoptimized + debuginfo] target(s) in 1.32s
     Running unittests src/lib.rs (target/debug/deps/demo-0a4c3c5e1b2f7d8e)

running 5 tests
test parser::tests::empty_input ... ok
test parser::tests::nested ... ignored, needs network
test parser::tests::unicode ... ok
test parser::tests::rejects_garbage - should panic ... ok
test parser::tests::round_trip ... FAILED

failures:

---- parser::tests::round_trip stdout ----

thread 'parser::tests::round_trip' (4242) panicked at src/parser.rs:88:9:
assertion `left == right` failed
  left: "a"
 right: "b"
note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace


failures:
    parser::tests::round_trip

test result: FAILED. 3 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.02s

error: test failed, to rerun pass `--lib`
     Running tests/api.rs (target/debug/deps/api-5f1e2d3c4b5a6978)

running 3 tests
test get_returns_item ... ok
test slow_path ... ignored
test put_then_get ... ok

test result: ok. 2 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.31s

     Running tests/cli.rs (target/debug/deps/cli-9a8b7c6d5e4f3a2b)

running 2 tests
test prints_help ... ok
test exits_with_64_on_bad_config - should panic ... FAILED

failures:

---- exits_with_64_on_bad_config stdout ----
note: test did not panic as expected at tests/cli.rs:20:4

failures:
    exits_with_64_on_bad_config

test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.05s

error: test failed, to rerun pass `--test cli`
   Doc-tests demo

running 3 tests
test src/lib.rs - parse (line 12) ... ok
test src/lib.rs - Parser (line 40) - compile fail ... ok
test src/lib.rs - Parser::new (line 55) ... FAILED

failures:

---- src/lib.rs - Parser::new (line 55) stdout ----
Test executable failed (exit status: 101).

failures:
    src/lib.rs - Parser::new (line 55)

test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.40s

all doctests ran in 0.52s; merged doctests compilation took 0.11s
error: 3 targets failed:
    `--lib`
    `--test cli`
    `--doc`
"#;

    #[test]
    fn sums_every_binary_and_collects_failed_names() {
        let counts = parse_libtest(WORKSPACE_RUN).expect("has result lines");
        assert_eq!(
            counts,
            TestCounts {
                passed: 8,
                failed: 3,
                ignored: 2,
                failed_tests: vec![
                    "parser::tests::round_trip".into(),
                    "exits_with_64_on_bad_config".into(),
                    "src/lib.rs - Parser::new (line 55)".into(),
                ],
            }
        );
    }

    #[test]
    fn a_passing_run_has_no_failed_names() {
        let output = "\nrunning 2 tests\ntest a ... ok\ntest b ... ok\n\n\
                      test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; \
                      0 filtered out; finished in 0.00s\n\n";
        let counts = parse_libtest(output).expect("has a result line");
        assert_eq!((counts.passed, counts.failed, counts.ignored), (2, 0, 0));
        assert!(counts.failed_tests.is_empty());
    }

    #[test]
    fn colours_do_not_hide_results() {
        let output = "running 2 tests\r\n\
            test tests::good ... \x1b[32mok\x1b[0m\r\n\
            test tests::bad ... \x1b[31mFAILED\x1b[0m\r\n\
            \r\n\
            failures:\r\n\
            \r\n\
            failures:\r\n    tests::bad\r\n\r\n\
            test result: \x1b[31mFAILED\x1b[0m. 1 passed; 1 failed; 0 ignored; 0 measured; \
            0 filtered out; finished in 0.00s\r\n\
            \x1b]8;;file:///src\x1b\\link\x1b]8;;\x1b\\\r\n";
        let counts = parse_libtest(output).expect("has a result line");
        assert_eq!((counts.passed, counts.failed, counts.ignored), (1, 1, 0));
        assert_eq!(counts.failed_tests, ["tests::bad"]);
        assert_eq!(strip_ansi("\x1b]8;;file:///src\x1b\\link"), "link");
    }

    #[test]
    fn the_failures_list_alone_names_failures() {
        // Output of a test printed on the same line hides the FAILED marker;
        // the list before the summary still names the test.
        let output = "test slow ... some output FAILED-ish\n\nfailures:\n    slow\n\n\
                      test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; \
                      0 filtered out; finished in 1.00s\n";
        let counts = parse_libtest(output).expect("has a result line");
        assert_eq!(counts.failed_tests, ["slow"]);
    }

    #[test]
    fn no_result_line_is_none() {
        let build_failure = "   Compiling demo v0.1.0 (/src/demo)\n\
            error[E0425]: cannot find value `x` in this scope\n\
            error: could not compile `demo` (lib test) due to 1 previous error\n";
        assert_eq!(parse_libtest(build_failure), None);
        assert_eq!(parse_libtest(""), None);
        assert_eq!(parse_libtest("test result: maybe. 3 passed"), None);
        assert_eq!(
            parse_libtest("test result: ok. lots passed; 0 failed"),
            None
        );
    }

    #[test]
    fn odd_input_never_panics() {
        for input in [
            "failures:",
            "failures:\n    a",
            "failures:\n\n\n",
            "test  ...  FAILED",
            "test result:",
            "test result: ok.",
            "\x1b",
            "\x1b[",
            "\x1b]8;;",
            "test result: ok. 18446744073709551615 passed; 0 failed\n\
             test result: ok. 1 passed; 0 failed",
            "é\x1b[31mé",
        ] {
            let _ = parse_libtest(input);
        }
        let huge = parse_libtest(
            "test result: ok. 18446744073709551615 passed; 0 failed\n\
             test result: ok. 1 passed; 0 failed",
        );
        assert_eq!(huge.map(|c| c.passed), Some(u64::MAX));
    }
}
