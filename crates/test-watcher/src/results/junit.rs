//! JUnit XML, as cargo-nextest writes it to `target/nextest/<profile>/junit.xml`.
//!
//! nextest's layout (through its `quick-junit` crate): one `<testsuite>` per
//! test binary, named by the binary id (`my-crate`, `my-crate::api`,
//! `my-crate::bin/tool`); one `<testcase>` per test, whose `name` is the test
//! path and whose `classname` is the binary id again. A failed test has a
//! `<failure>` (or, when it could not even run, an `<error>`), followed by a
//! `<rerunFailure>` per retry; a flaky test that passed on a retry has
//! `<flakyFailure>` children only, and counts as passed, as nextest counts
//! it. nextest does not write skipped tests; other writers use `<skipped/>`.
//!
//! Counts come from the testcases, never from the `tests=`/`failures=`
//! attributes, which other writers leave out or get wrong.

use std::path::Path;

use quick_xml::Reader;
use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};

use super::{FailedNames, ResultsError, TestCounts};

/// Reports larger than this are refused rather than read into memory.
const MAX_REPORT_BYTES: u64 = 256 * 1024 * 1024;

/// Reads a JUnit XML report.
///
/// Every `<testcase>` counts once: with a `<failure>` or `<error>` child it
/// failed (named `<classname> <name>`, the way nextest prints a test, or
/// just `<name>` without a classname), with a `<skipped>` child it was
/// ignored, otherwise it passed. Malformed XML, a truncated document, or a
/// root element other than `<testsuites>`/`<testsuite>` is a
/// [`ResultsError::Junit`] saying where.
pub fn parse_junit(xml: &str) -> Result<TestCounts, ResultsError> {
    parse(xml).map_err(|message| ResultsError::Junit {
        path: None,
        message,
    })
}

/// Reads a JUnit XML report from a file; see [`parse_junit`]. A file that
/// cannot be read is a [`ResultsError::Read`] naming the path. This does
/// blocking I/O: from async code, call it on a blocking thread.
pub fn parse_junit_file(path: &Path) -> Result<TestCounts, ResultsError> {
    let read_error = |source| ResultsError::Read {
        path: path.to_path_buf(),
        source,
    };
    let junit_error = |message| ResultsError::Junit {
        path: Some(path.to_path_buf()),
        message,
    };
    let size = std::fs::metadata(path).map_err(read_error)?.len();
    if size > MAX_REPORT_BYTES {
        return Err(junit_error(format!(
            "the file is {size} bytes, over the limit of {MAX_REPORT_BYTES}"
        )));
    }
    let bytes = std::fs::read(path).map_err(read_error)?;
    let xml = std::str::from_utf8(&bytes).map_err(|e| {
        junit_error(format!(
            "not UTF-8 (invalid byte at offset {})",
            e.valid_up_to()
        ))
    })?;
    parse(xml).map_err(junit_error)
}

/// What a testcase came to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Passed,
    Failed,
    Ignored,
}

/// The testcase being read.
struct OpenCase {
    name: String,
    outcome: Outcome,
    /// Nesting depth of the `<testcase>` element: its status elements are at
    /// `depth + 1`, anything deeper (`<flakyFailure>`'s children) is not.
    depth: usize,
}

/// Accumulates testcases into counts.
#[derive(Default)]
struct Tally {
    counts: TestCounts,
    failed: FailedNames,
}

impl Tally {
    fn add(&mut self, case: OpenCase) {
        let counter = match case.outcome {
            Outcome::Passed => &mut self.counts.passed,
            Outcome::Failed => {
                self.failed.push(&case.name);
                &mut self.counts.failed
            }
            Outcome::Ignored => &mut self.counts.ignored,
        };
        *counter = counter.saturating_add(1);
    }

    fn finish(self) -> TestCounts {
        TestCounts {
            failed_tests: self.failed.into_vec(),
            ..self.counts
        }
    }
}

fn parse(xml: &str) -> Result<TestCounts, String> {
    let xml = xml.strip_prefix('\u{feff}').unwrap_or(xml);
    let mut reader = Reader::from_str(xml);
    let mut open: Vec<String> = Vec::new();
    let mut case: Option<OpenCase> = None;
    let mut tally = Tally::default();
    let mut root_seen = false;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("{e} (at {})", line_and_column(xml, reader.error_position())))?;
        let (element, is_start) = match event {
            Event::Start(element) => (element, true),
            Event::Empty(element) => (element, false),
            Event::End(_) => {
                open.pop();
                if let Some(done) = case.take_if(|c| c.depth == open.len()) {
                    tally.add(done);
                }
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        let at = || line_and_column(xml, reader.buffer_position());
        let name = local_name(&element);
        if open.is_empty() {
            if name != "testsuites" && name != "testsuite" {
                return Err(format!(
                    "the root element is <{name}>, not <testsuites> or <testsuite> (at {})",
                    at()
                ));
            }
            root_seen = true;
        } else {
            element_opened(&name, &element, open.len(), &mut case)
                .map_err(|e| format!("{e} (at {})", at()))?;
        }
        if is_start {
            open.push(name);
        } else if let Some(done) = case.take_if(|c| c.depth == open.len()) {
            // A self-closing <testcase/>.
            tally.add(done);
        }
    }
    if let Some(unclosed) = open.last() {
        return Err(format!(
            "the document ends inside <{unclosed}> (truncated?)"
        ));
    }
    if !root_seen {
        return Err("no <testsuites> or <testsuite> element (empty document?)".to_owned());
    }
    Ok(tally.finish())
}

/// Reacts to an element opening at nesting `depth` (0 is the root).
fn element_opened(
    name: &str,
    element: &BytesStart<'_>,
    depth: usize,
    case: &mut Option<OpenCase>,
) -> Result<(), String> {
    if name == "testcase" {
        if case.is_some() {
            return Err("<testcase> inside <testcase>".to_owned());
        }
        *case = Some(OpenCase {
            name: case_name(element)?,
            outcome: Outcome::Passed,
            depth,
        });
        return Ok(());
    }
    let Some(case) = case.as_mut().filter(|c| depth == c.depth + 1) else {
        return Ok(());
    };
    match name {
        "failure" | "error" => case.outcome = Outcome::Failed,
        "skipped" if case.outcome == Outcome::Passed => case.outcome = Outcome::Ignored,
        _ => {}
    }
    Ok(())
}

/// `<classname> <name>`, as nextest prints a test (`my-crate::api tests::get`).
fn case_name(element: &BytesStart<'_>) -> Result<String, String> {
    let name = attribute(element, "name")?;
    let classname = attribute(element, "classname")?;
    Ok(match (classname.as_deref(), name.as_deref()) {
        (Some(class), Some(name)) if !class.is_empty() => format!("{class} {name}"),
        (_, Some(name)) if !name.is_empty() => name.to_owned(),
        (Some(class), _) if !class.is_empty() => format!("{class} (unnamed)"),
        _ => "(unnamed)".to_owned(),
    })
}

fn attribute(element: &BytesStart<'_>, key: &str) -> Result<Option<String>, String> {
    let bad = |e: &dyn std::fmt::Display| format!("bad attribute in <testcase>: {e}");
    let Some(attribute) = element.try_get_attribute(key).map_err(|e| bad(&e))? else {
        return Ok(None);
    };
    let value = attribute
        .normalized_value(XmlVersion::Implicit1_0)
        .map_err(|e| bad(&e))?;
    Ok(Some(value.into_owned()))
}

fn local_name(element: &BytesStart<'_>) -> String {
    element.local_name().as_ref().to_owned()
}

/// `line L, column C` (1-based; the column counts bytes) of a byte offset.
fn line_and_column(text: &str, offset: u64) -> String {
    let offset = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(text.len());
    let before = text.as_bytes().get(..offset).unwrap_or_default();
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    format!("line {line}, column {}", offset - line_start + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape `cargo nextest run --profile ci` writes, with a failure that
    /// was retried, a flaky pass, an execution error and stored output.
    const NEXTEST_REPORT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="nextest-run" tests="7" skipped="0" failures="1" errors="1" uuid="0b4a3a05-66a4-4a52-9e5e-0f2d37b5b2a1" timestamp="2025-06-02T10:15:30.123+00:00" time="2.481">
    <testsuite name="demo" tests="4" skipped="0" errors="0" failures="1">
        <testcase name="parser::tests::empty_input" classname="demo" timestamp="2025-06-02T10:15:30.200+00:00" time="0.003">
        </testcase>
        <testcase name="parser::tests::round_trip" classname="demo" timestamp="2025-06-02T10:15:30.201+00:00" time="0.012">
            <failure message="thread &apos;parser::tests::round_trip&apos; (4242) panicked at src/parser.rs:88:9" type="test failure with exit code 101">thread &apos;parser::tests::round_trip&apos; (4242) panicked at src/parser.rs:88:9:
assertion `left == right` failed
  left: &quot;a&quot;
 right: &quot;b&quot;</failure>
            <rerunFailure timestamp="2025-06-02T10:15:30.300+00:00" time="0.011" type="test failure with exit code 101">thread &apos;parser::tests::round_trip&apos; (4242) panicked at src/parser.rs:88:9:
                <system-out></system-out>
                <system-err>thread &apos;parser::tests::round_trip&apos; (4242) panicked at src/parser.rs:88:9</system-err>
            </rerunFailure>
            <system-out>
running 1 test
test parser::tests::round_trip ... FAILED
</system-out>
            <system-err>thread &apos;parser::tests::round_trip&apos; (4242) panicked at src/parser.rs:88:9:
assertion `left == right` failed</system-err>
        </testcase>
        <testcase name="parser::tests::sometimes" classname="demo" timestamp="2025-06-02T10:15:30.202+00:00" time="0.004">
            <flakyFailure timestamp="2025-06-02T10:15:30.150+00:00" time="0.004" type="test failure with exit code 101">
                <failure>nested text is not the testcase's status</failure>
                <system-err>first try failed</system-err>
            </flakyFailure>
        </testcase>
        <testcase name="parser::tests::unicode" classname="demo" timestamp="2025-06-02T10:15:30.203+00:00" time="0.001"/>
    </testsuite>
    <testsuite name="demo::api" tests="2" skipped="0" errors="1" failures="0">
        <testcase name="get_returns_item" classname="demo::api" timestamp="2025-06-02T10:15:31.000+00:00" time="0.310">
        </testcase>
        <testcase name="needs_server" classname="demo::api" timestamp="2025-06-02T10:15:31.010+00:00" time="0.000">
            <error type="execution failure"/>
        </testcase>
    </testsuite>
    <testsuite name="demo::bin/tool" tests="1" skipped="1" errors="0" failures="0">
        <testcase name="tests::skipped_elsewhere" classname="demo::bin/tool">
            <skipped message="not run"/>
        </testcase>
    </testsuite>
</testsuites>
"#;

    #[test]
    fn counts_testcases_of_a_nextest_report() {
        let counts = parse_junit(NEXTEST_REPORT).expect("valid report");
        assert_eq!(
            counts,
            TestCounts {
                passed: 4,
                failed: 2,
                ignored: 1,
                failed_tests: vec![
                    "demo parser::tests::round_trip".into(),
                    "demo::api needs_server".into(),
                ],
            }
        );
    }

    #[test]
    fn a_single_testsuite_without_attributes_or_classnames() {
        let xml = r#"<testsuite><testcase name="a"/><testcase name="b"><failure/></testcase></testsuite>"#;
        let counts = parse_junit(xml).expect("valid report");
        assert_eq!((counts.passed, counts.failed, counts.ignored), (1, 1, 0));
        assert_eq!(counts.failed_tests, ["b"]);
        assert_eq!(
            parse_junit(r#"<testsuites name="nextest-run" tests="0"/>"#).expect("empty run"),
            TestCounts::default()
        );
    }

    #[test]
    fn malformed_xml_says_where() {
        let err = parse_junit("<testsuites>\n  <testsuite name=\"x\">\n  </testsuites>")
            .expect_err("mismatched end tag");
        let message = err.to_string();
        assert!(message.starts_with("invalid JUnit report: "), "{message}");
        assert!(message.contains("line 3"), "{message}");

        let err = parse_junit("<testsuites>\n<testcase name=\"a").expect_err("unclosed tag");
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn truncated_empty_and_foreign_documents_are_errors() {
        let truncated = &NEXTEST_REPORT[..NEXTEST_REPORT.len() / 2];
        let cut_at_element = truncated.rfind('>').map_or(truncated, |i| &truncated[..=i]);
        for (xml, expected) in [
            (cut_at_element, "ends inside"),
            ("", "no <testsuites>"),
            ("<?xml version=\"1.0\"?>\n", "no <testsuites>"),
            ("<html><body/></html>", "root element is <html>"),
        ] {
            let err = parse_junit(xml).expect_err(xml);
            assert!(err.to_string().contains(expected), "{err} for {xml:?}");
        }
    }

    #[test]
    fn reads_a_file_and_names_it_in_errors() {
        let dir = tempfile::tempdir().expect("temp dir");
        let good = dir.path().join("junit.xml");
        std::fs::write(&good, NEXTEST_REPORT).expect("write report");
        assert_eq!(parse_junit_file(&good).expect("valid").failed, 2);

        let missing = dir.path().join("missing.xml");
        let err = parse_junit_file(&missing).expect_err("missing file");
        assert!(matches!(err, ResultsError::Read { .. }));
        assert!(err.to_string().contains("missing.xml"), "{err}");

        let bad = dir.path().join("bad.xml");
        std::fs::write(&bad, b"<testsuites>\xff</testsuites>").expect("write");
        let err = parse_junit_file(&bad).expect_err("not UTF-8");
        assert!(err.to_string().contains("bad.xml"), "{err}");
        assert!(err.to_string().contains("UTF-8"), "{err}");
    }

    #[test]
    fn odd_input_never_panics() {
        for xml in [
            "<",
            "<testsuites",
            "<testsuites><testcase name='a'><testcase/></testcase></testsuites>",
            "<testsuites><testcase name=\"&bogus;\"/></testsuites>",
            "<testsuites><testcase name=a/></testsuites>",
            "</testsuites>",
            "<testsuites/><testsuites/>",
            "\u{feff}<testsuites/>",
            "<testsuites>é\u{0}</testsuites>",
        ] {
            let _ = parse_junit(xml);
        }
        assert_eq!(line_and_column("ab\ncd", 4), "line 2, column 2");
        assert_eq!(line_and_column("ab", u64::MAX), "line 1, column 3");
    }
}
