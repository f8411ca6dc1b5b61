//! Line-coverage reports: LCOV, Cobertura XML and llvm-cov JSON export.
//!
//! [`read`] / [`parse`] turn a report into a [`Coverage`] (covered and valid
//! line counts); [`discover`] looks for a report in the usual places of a
//! repository and [`load`] ties both together.
//!
//! The format is detected from the content, never from the file name: the
//! first non-whitespace byte `{` means llvm-cov JSON, `<` means Cobertura XML
//! and a first line starting with `TN:` or `SF:` means LCOV.
//!
//! Layout: one module per format (`lcov`, `cobertura`, `llvm_json`), each
//! turning a report into covered and valid line counts.

mod cobertura;
mod lcov;
mod llvm_json;
#[cfg(test)]
mod test_support;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use cobertura::parse_cobertura;
use lcov::parse_lcov;
use llvm_json::parse_llvm_json;

/// Reports larger than this are rejected rather than read into memory.
const DEFAULT_SIZE_LIMIT: u64 = 256 * 1024 * 1024;

/// Where [`discover`] looks for a report, relative to the repository root, in
/// order of preference.
const CANDIDATES: &[&str] = &[
    "lcov.info",
    "coverage/lcov.info",
    "target/llvm-cov/lcov.info",
    "coverage.json",
    "coverage/coverage.json",
    "target/llvm-cov/coverage.json",
    "target/llvm-cov.json",
    "cobertura.xml",
    "coverage.xml",
    "coverage/cobertura.xml",
    "coverage/cobertura-coverage.xml",
    "target/cobertura.xml",
    "target/tarpaulin/cobertura.xml",
];

/// A coverage report format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// LCOV tracefile (`SF:`, `DA:`, `LF:`, `LH:`, `end_of_record`).
    Lcov,
    /// Cobertura XML (`<coverage lines-covered=… lines-valid=…>`).
    Cobertura,
    /// `llvm-cov export` / `cargo llvm-cov --json` output.
    LlvmCovJson,
}

impl Format {
    /// The canonical name: `"lcov"`, `"cobertura"` or `"llvm-cov-json"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Lcov => "lcov",
            Format::Cobertura => "cobertura",
            Format::LlvmCovJson => "llvm-cov-json",
        }
    }

    /// Parses a format name, case-insensitively. Accepts the canonical names
    /// of [`Format::as_str`] plus the aliases `xml`, `llvm-cov` and `json`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "lcov" => Some(Format::Lcov),
            "cobertura" | "xml" => Some(Format::Cobertura),
            "llvm-cov-json" | "llvm-cov" | "json" => Some(Format::LlvmCovJson),
            _ => None,
        }
    }
}

/// Line coverage read from one report.
#[derive(Debug, Clone, PartialEq)]
pub struct Coverage {
    /// The report the figures come from.
    pub path: PathBuf,
    /// The report's format.
    pub format: Format,
    /// Lines executed at least once.
    pub lines_covered: u64,
    /// Lines that could be executed (instrumented lines).
    pub lines_valid: u64,
}

impl Coverage {
    /// `lines_covered / lines_valid * 100`, or `None` when there are no valid
    /// lines at all ("0 of 0" means no coverage, never NaN).
    pub fn percent(&self) -> Option<f64> {
        if self.lines_valid == 0 {
            None
        } else {
            Some(self.lines_covered as f64 / self.lines_valid as f64 * 100.0)
        }
    }
}

/// Why a coverage report could not be read. Every message starts with the
/// report's path.
#[derive(Debug, thiserror::Error)]
pub enum CoverageError {
    /// The file is missing or could not be read.
    #[error("{path}: cannot read coverage report: {source}")]
    Io {
        /// The report.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is empty (or only whitespace).
    #[error("{path}: coverage report is empty")]
    Empty {
        /// The report.
        path: PathBuf,
    },
    /// The file is larger than the size limit.
    #[error("{path}: coverage report is {size} bytes, above the limit of {limit} bytes")]
    TooLarge {
        /// The report.
        path: PathBuf,
        /// Its size in bytes (at least this many).
        size: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// Text was needed but the bytes are not valid UTF-8.
    #[error("{path}: not valid UTF-8: {detail}")]
    NotUtf8 {
        /// The report.
        path: PathBuf,
        /// Where the bad bytes are.
        detail: String,
    },
    /// The content is none of the supported formats.
    #[error("{path}: unrecognised coverage format (expected LCOV, Cobertura XML or llvm-cov JSON)")]
    UnknownFormat {
        /// The report.
        path: PathBuf,
    },
    /// A malformed LCOV line.
    #[error("{path} line {line}: {message}")]
    Lcov {
        /// The report.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// Malformed XML.
    #[error("{path}: malformed XML at {position}: {source}")]
    Xml {
        /// The report.
        path: PathBuf,
        /// Human-readable position (line, column, byte offset).
        position: String,
        /// The quick-xml error.
        #[source]
        source: quick_xml::Error,
    },
    /// JSON that does not parse.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// The report.
        path: PathBuf,
        /// The serde_json error (with line and column).
        #[source]
        source: serde_json::Error,
    },
    /// Well-formed input with wrong or missing content.
    #[error("{path}: {message}")]
    Invalid {
        /// The report.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Reads and parses the report at `path`. `format` forces the format;
/// `None` detects it from the content.
pub fn read(path: &Path, format: Option<Format>) -> Result<Coverage, CoverageError> {
    read_with_limit(path, format, DEFAULT_SIZE_LIMIT)
}

/// Parses a report already in memory. `path` is only used in messages and in
/// the returned [`Coverage`]. `format` forces the format; `None` detects it.
pub fn parse(bytes: &[u8], format: Option<Format>, path: &Path) -> Result<Coverage, CoverageError> {
    parse_with_limit(bytes, format, path, DEFAULT_SIZE_LIMIT)
}

/// Looks for a coverage report under the repository `root`, returning the
/// first existing file of the usual locations (`lcov.info`,
/// `coverage/lcov.info`, `target/llvm-cov/lcov.info`, `coverage.json`, …,
/// `target/tarpaulin/cobertura.xml`).
pub fn discover(root: &Path) -> Option<PathBuf> {
    let found = CANDIDATES
        .iter()
        .map(|candidate| root.join(candidate))
        .find(|path| path.is_file());
    match &found {
        Some(path) => tracing::debug!(path = %path.display(), "coverage report discovered"),
        None => tracing::debug!(root = %root.display(), "no coverage report found"),
    }
    found
}

/// Loads the coverage of the repository at `root`.
///
/// `configured`: `Some(path)` (a relative path is resolved against `root`)
/// is read and must exist; `None` uses [`discover`] and returns `Ok(None)`
/// when no report is found.
pub fn load(
    root: &Path,
    configured: Option<&Path>,
    format: Option<Format>,
) -> Result<Option<Coverage>, CoverageError> {
    let path = match configured {
        Some(path) if path.is_absolute() => path.to_path_buf(),
        Some(path) => root.join(path),
        None => match discover(root) {
            Some(path) => path,
            None => return Ok(None),
        },
    };
    read(&path, format).map(Some)
}

fn read_with_limit(
    path: &Path,
    format: Option<Format>,
    limit: u64,
) -> Result<Coverage, CoverageError> {
    let io_err = |source| CoverageError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    let size = file.metadata().map_err(io_err)?.len();
    if size > limit {
        return Err(CoverageError::TooLarge {
            path: path.to_path_buf(),
            size,
            limit,
        });
    }
    // The file may grow between `metadata` and reading: never read past the limit.
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    parse_with_limit(&bytes, format, path, limit)
}

fn parse_with_limit(
    bytes: &[u8],
    format: Option<Format>,
    path: &Path,
    limit: u64,
) -> Result<Coverage, CoverageError> {
    let size = bytes.len() as u64;
    if size > limit {
        return Err(CoverageError::TooLarge {
            path: path.to_path_buf(),
            size,
            limit,
        });
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if bytes.trim_ascii().is_empty() {
        return Err(CoverageError::Empty {
            path: path.to_path_buf(),
        });
    }
    let format = match format {
        Some(format) => format,
        None => sniff(bytes, path)?,
    };
    let (lines_covered, lines_valid) = match format {
        Format::Lcov => parse_lcov(bytes, path)?,
        Format::Cobertura => parse_cobertura(utf8(bytes, path)?, path)?,
        Format::LlvmCovJson => parse_llvm_json(utf8(bytes, path)?, path)?,
    };
    if lines_covered > lines_valid {
        return Err(invalid(
            path,
            format!(
                "{}: {lines_covered} lines covered but only {lines_valid} valid",
                format.as_str()
            ),
        ));
    }
    tracing::debug!(
        path = %path.display(),
        format = format.as_str(),
        lines_covered,
        lines_valid,
        "coverage report parsed"
    );
    Ok(Coverage {
        path: path.to_path_buf(),
        format,
        lines_covered,
        lines_valid,
    })
}

/// Detects the format from the first non-whitespace bytes.
fn sniff(bytes: &[u8], path: &Path) -> Result<Format, CoverageError> {
    if bytes.starts_with(b"\xFF\xFE") || bytes.starts_with(b"\xFE\xFF") {
        return Err(CoverageError::NotUtf8 {
            path: path.to_path_buf(),
            detail: "starts with a UTF-16 byte-order mark".to_owned(),
        });
    }
    let trimmed = bytes.trim_ascii_start();
    match trimmed.first() {
        Some(b'{') => Ok(Format::LlvmCovJson),
        Some(b'<') => Ok(Format::Cobertura),
        _ if trimmed.starts_with(b"TN:") || trimmed.starts_with(b"SF:") => Ok(Format::Lcov),
        _ => Err(CoverageError::UnknownFormat {
            path: path.to_path_buf(),
        }),
    }
}

pub(super) fn invalid(path: &Path, message: String) -> CoverageError {
    CoverageError::Invalid {
        path: path.to_path_buf(),
        message,
    }
}

fn utf8<'a>(bytes: &'a [u8], path: &Path) -> Result<&'a str, CoverageError> {
    std::str::from_utf8(bytes).map_err(|e| {
        let offset = e.valid_up_to();
        let line = bytes[..offset].iter().filter(|&&b| b == b'\n').count() + 1;
        CoverageError::NotUtf8 {
            path: path.to_path_buf(),
            detail: format!("invalid byte at line {line} (byte offset {offset})"),
        }
    })
}

pub(super) fn checked_sum(
    a: u64,
    b: u64,
    path: &Path,
    format: Format,
) -> Result<u64, CoverageError> {
    a.checked_add(b)
        .ok_or_else(|| invalid(path, format!("{}: line counts overflow", format.as_str())))
}

/// Parses a non-negative integer, describing what is wrong otherwise.
pub(super) fn parse_u64(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if s.starts_with('-') {
        return Err(format!("negative number {s:?}"));
    }
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} is not a number"));
    }
    s.parse::<u64>()
        .map_err(|_| format!("number {s:?} is too large"))
}

/// Parses a hit count of arbitrary size, returning whether it is non-zero.
pub(super) fn parse_hits(s: &str) -> Result<bool, String> {
    let s = s.trim();
    if s.starts_with('-') {
        return Err(format!("negative hit count {s:?}"));
    }
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("hit count {s:?} is not a number"));
    }
    Ok(s.bytes().any(|b| b != b'0'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coverage::test_support::{assert_percent, err, ok, p};

    #[test]
    fn zero_of_zero_is_no_coverage() {
        let c = ok(r#"{"data":[]}"#, "c.json");
        assert_eq!((c.lines_covered, c.lines_valid), (0, 0));
        assert_eq!(c.percent(), None);
        let c = ok(r#"<coverage lines-covered="0" lines-valid="0"/>"#, "c.xml");
        assert_eq!(c.percent(), None);
    }

    #[test]
    fn empty_input() {
        assert_eq!(
            err(b"", None, "lcov.info"),
            "lcov.info: coverage report is empty"
        );
        assert_eq!(
            err(b" \n\t\r\n", Some(Format::Lcov), "lcov.info"),
            "lcov.info: coverage report is empty"
        );
    }

    #[test]
    fn sniffing() {
        let cases: &[(&str, Format)] = &[
            ("  \n{\"data\":[]}", Format::LlvmCovJson),
            (
                "\u{feff}<coverage lines-covered=\"0\" lines-valid=\"0\"/>",
                Format::Cobertura,
            ),
            ("\n\nTN:x\nSF:a\nDA:1,1\n", Format::Lcov),
            ("SF:a\nDA:1,1\n", Format::Lcov),
        ];
        for (text, format) in cases {
            assert_eq!(ok(text, "report").format, *format, "{text:?}");
        }
        let msg = err(b"hello world\n", None, "report.txt");
        assert!(
            msg.starts_with("report.txt: unrecognised coverage format"),
            "{msg}"
        );
        let msg = err(b"DA:1,1\n", None, "report");
        assert!(msg.contains("unrecognised coverage format"), "{msg}");
        let msg = err(b"\xff\xfe<\x00c\x00", None, "report");
        assert!(msg.contains("not valid UTF-8"), "{msg}");
    }

    #[test]
    fn forced_format_skips_sniffing() {
        // "DA:" first is not sniffed as LCOV but parses when forced (no SF → error
        // from the LCOV parser, proving it ran).
        let msg = err(b"DA:1,1\n", Some(Format::Lcov), "x");
        assert!(msg.contains("x line 1: DA: outside a record"), "{msg}");
        // JSON forced onto LCOV content.
        let msg = err(b"SF:a\n", Some(Format::LlvmCovJson), "x");
        assert!(msg.contains("invalid JSON"), "{msg}");
    }

    #[test]
    fn format_names_round_trip() {
        for format in [Format::Lcov, Format::Cobertura, Format::LlvmCovJson] {
            assert_eq!(Format::parse(format.as_str()), Some(format));
        }
        assert_eq!(Format::parse(" LCOV "), Some(Format::Lcov));
        assert_eq!(Format::parse("xml"), Some(Format::Cobertura));
        assert_eq!(Format::parse("json"), Some(Format::LlvmCovJson));
        assert_eq!(Format::parse("gcov"), None);
    }

    #[test]
    fn size_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lcov.info");
        std::fs::write(&path, "SF:a\nDA:1,1\nend_of_record\n").expect("write");
        let e = read_with_limit(&path, None, 10).expect_err("too large");
        let msg = e.to_string();
        assert!(msg.contains("lcov.info"), "{msg}");
        assert!(msg.contains("above the limit of 10 bytes"), "{msg}");
        let msg = parse_with_limit(b"SF:a\nDA:1,1\n", None, &p("l"), 4)
            .expect_err("too large")
            .to_string();
        assert!(msg.contains("above the limit of 4 bytes"), "{msg}");
        // Under the limit it reads fine.
        let c = read(&path, None).expect("read");
        assert_eq!((c.lines_covered, c.lines_valid), (1, 1));
        assert_eq!(c.path, path);
    }

    #[test]
    fn missing_file_is_an_io_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nope.info");
        let e = read(&path, None).expect_err("missing");
        assert!(matches!(e, CoverageError::Io { .. }));
        let msg = e.to_string();
        assert!(
            msg.contains("nope.info: cannot read coverage report: "),
            "{msg}"
        );
        // A directory is not readable as a report either.
        let msg = read(dir.path(), None).expect_err("directory").to_string();
        assert!(msg.contains("cannot read coverage report"), "{msg}");
    }

    #[test]
    fn discovery_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        assert_eq!(discover(root), None);
        assert!(matches!(load(root, None, None), Ok(None)));

        // Create candidates from the least to the most preferred; each new
        // one must win.
        for candidate in CANDIDATES.iter().rev() {
            let path = root.join(candidate);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, "SF:a\nDA:1,1\nDA:2,0\nend_of_record\n").expect("write");
            assert_eq!(discover(root), Some(path));
        }
        // A directory with a candidate's name does not count.
        let dir2 = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir2.path().join("lcov.info")).expect("mkdir");
        std::fs::create_dir_all(dir2.path().join("coverage")).expect("mkdir");
        std::fs::write(dir2.path().join("coverage/lcov.info"), "SF:a\n").expect("write");
        assert_eq!(
            discover(dir2.path()),
            Some(dir2.path().join("coverage/lcov.info"))
        );

        let c = load(root, None, None).expect("load").expect("found");
        assert_eq!(c.path, root.join("lcov.info"));
        assert_percent(&c, 50.0);
    }

    #[test]
    fn load_configured_paths() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir(root.join("out")).expect("mkdir");
        // 1 of 4 = 25%.
        std::fs::write(
            root.join("out/report.dat"),
            r#"<coverage lines-covered="1" lines-valid="4"/>"#,
        )
        .expect("write");
        let c = load(root, Some(Path::new("out/report.dat")), None)
            .expect("load")
            .expect("some");
        assert_eq!(c.path, root.join("out/report.dat"));
        assert_eq!(c.format, Format::Cobertura);
        assert_percent(&c, 25.0);

        let absolute = root.join("out/report.dat");
        let c = load(
            Path::new("/nonexistent"),
            Some(&absolute),
            Some(Format::Cobertura),
        )
        .expect("load")
        .expect("some");
        assert_eq!(c.path, absolute);

        // A configured file that is missing is an error, even if discovery
        // would find something.
        std::fs::write(root.join("lcov.info"), "SF:a\nDA:1,1\n").expect("write");
        let msg = load(root, Some(Path::new("missing.info")), None)
            .expect_err("missing")
            .to_string();
        assert!(
            msg.contains("missing.info: cannot read coverage report"),
            "{msg}"
        );
    }
}
