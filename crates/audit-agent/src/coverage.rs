//! Line-coverage reports: LCOV, Cobertura XML and llvm-cov JSON export.
//!
//! [`read`] / [`parse`] turn a report into a [`Coverage`] (covered and valid
//! line counts); [`discover`] looks for a report in the usual places of a
//! repository and [`load`] ties both together.
//!
//! The format is detected from the content, never from the file name: the
//! first non-whitespace byte `{` means llvm-cov JSON, `<` means Cobertura XML
//! and a first line starting with `TN:` or `SF:` means LCOV.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use quick_xml::Reader;
use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};

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

fn invalid(path: &Path, message: String) -> CoverageError {
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

fn checked_sum(a: u64, b: u64, path: &Path, format: Format) -> Result<u64, CoverageError> {
    a.checked_add(b)
        .ok_or_else(|| invalid(path, format!("{}: line counts overflow", format.as_str())))
}

/// Parses a non-negative integer, describing what is wrong otherwise.
fn parse_u64(s: &str) -> Result<u64, String> {
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
fn parse_hits(s: &str) -> Result<bool, String> {
    let s = s.trim();
    if s.starts_with('-') {
        return Err(format!("negative hit count {s:?}"));
    }
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("hit count {s:?} is not a number"));
    }
    Ok(s.bytes().any(|b| b != b'0'))
}

// ---------------------------------------------------------------- LCOV

#[derive(Default)]
struct LcovFile {
    /// Line number → covered in any record.
    lines: HashMap<u64, bool>,
    /// Max LF / LH of records that had no DA lines.
    summary: Option<(u64, u64)>,
}

struct LcovRecord {
    file: usize,
    has_da: bool,
    /// Value and line number of the record's LF / LH.
    lf: Option<(u64, u64)>,
    lh: Option<(u64, u64)>,
}

fn parse_lcov(bytes: &[u8], path: &Path) -> Result<(u64, u64), CoverageError> {
    let err = |line: u64, message: String| CoverageError::Lcov {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut files: Vec<LcovFile> = Vec::new();
    let mut record: Option<LcovRecord> = None;

    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let lineno = i as u64 + 1;
        let line = raw.trim_ascii();
        if line.is_empty() {
            continue;
        }
        if line == b"end_of_record" {
            if let Some(done) = record.take() {
                finish_lcov_record(done, &mut files, path)?;
            }
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(err(
                lineno,
                format!(
                    "expected TAG:value or end_of_record, got {:?}",
                    String::from_utf8_lossy(line)
                ),
            ));
        };
        let (tag, value) = (&line[..colon], &line[colon + 1..]);
        let text = || {
            std::str::from_utf8(value).map_err(|_| {
                err(
                    lineno,
                    format!(
                        "{}: not valid UTF-8",
                        String::from_utf8_lossy(tag).into_owned()
                    ),
                )
            })
        };
        match tag {
            b"SF" => {
                if let Some(done) = record.take() {
                    finish_lcov_record(done, &mut files, path)?;
                }
                // The path is used as raw bytes: it need not be UTF-8.
                if value.is_empty() {
                    return Err(err(lineno, "SF: empty source file path".to_owned()));
                }
                let file = match index.get(value) {
                    Some(&file) => file,
                    None => {
                        files.push(LcovFile::default());
                        index.insert(value.to_vec(), files.len() - 1);
                        files.len() - 1
                    }
                };
                record = Some(LcovRecord {
                    file,
                    has_da: false,
                    lf: None,
                    lh: None,
                });
            }
            b"DA" => {
                let Some(current) = record.as_mut() else {
                    return Err(err(
                        lineno,
                        "DA: outside a record (no SF: before it)".into(),
                    ));
                };
                let value = text()?;
                let mut fields = value.splitn(3, ',');
                let (Some(number), Some(hits)) = (fields.next(), fields.next()) else {
                    return Err(err(
                        lineno,
                        format!("DA: expected line,hits, got {value:?}"),
                    ));
                };
                let number = parse_u64(number)
                    .map_err(|_| err(lineno, format!("DA: expected line,hits, got {value:?}")))?;
                let hit = parse_hits(hits).map_err(|e| err(lineno, format!("DA: {e}")))?;
                current.has_da = true;
                *files[current.file].lines.entry(number).or_insert(false) |= hit;
            }
            b"LF" | b"LH" => {
                let name = if tag == b"LF" { "LF" } else { "LH" };
                let Some(current) = record.as_mut() else {
                    return Err(err(
                        lineno,
                        format!("{name}: outside a record (no SF: before it)"),
                    ));
                };
                let count = parse_u64(text()?).map_err(|e| err(lineno, format!("{name}: {e}")))?;
                if tag == b"LF" {
                    current.lf = Some((count, lineno));
                } else {
                    current.lh = Some((count, lineno));
                }
            }
            // TN, FN, FNDA, FNF, FNH, BRDA, BRF, BRH, VER, FNL, FNA, … carry no line data.
            _ => {}
        }
    }
    if let Some(done) = record.take() {
        finish_lcov_record(done, &mut files, path)?;
    }

    let (mut covered, mut valid) = (0u64, 0u64);
    for file in &files {
        let mut file_valid = file.lines.len() as u64;
        let mut file_covered = file.lines.values().filter(|&&hit| hit).count() as u64;
        if let Some((lf, lh)) = file.summary {
            file_valid = file_valid.max(lf);
            file_covered = file_covered.max(lh);
        }
        covered = checked_sum(covered, file_covered, path, Format::Lcov)?;
        valid = checked_sum(valid, file_valid, path, Format::Lcov)?;
    }
    Ok((covered, valid))
}

fn finish_lcov_record(
    record: LcovRecord,
    files: &mut [LcovFile],
    path: &Path,
) -> Result<(), CoverageError> {
    let err = |line: u64, message: String| CoverageError::Lcov {
        path: path.to_path_buf(),
        line,
        message,
    };
    match (record.lf, record.lh) {
        (Some((lf, _)), Some((lh, lh_line))) if lh > lf => {
            return Err(err(
                lh_line,
                format!("LH: {lh} lines hit is greater than LF: {lf} lines found"),
            ));
        }
        (None, Some((_, lh_line))) if !record.has_da => {
            return Err(err(lh_line, "LH: without LF: in the same record".into()));
        }
        _ => {}
    }
    if !record.has_da
        && let Some((lf, _)) = record.lf
    {
        let lh = record.lh.map_or(0, |(lh, _)| lh);
        let file = &mut files[record.file];
        file.summary = Some(match file.summary {
            Some((max_lf, max_lh)) => (max_lf.max(lf), max_lh.max(lh)),
            None => (lf, lh),
        });
    }
    Ok(())
}

// ----------------------------------------------------------- Cobertura

fn xml_position(text: &str, offset: u64) -> String {
    let offset = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = offset
        - before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1)
        + 1;
    format!("line {line}, column {column} (byte {offset})")
}

/// Value of attribute `name` of `element`, unescaped.
fn xml_attr(
    element: &BytesStart<'_>,
    name: &str,
    text: &str,
    offset: u64,
    path: &Path,
) -> Result<Option<String>, CoverageError> {
    let xml_err = |source: quick_xml::Error| CoverageError::Xml {
        path: path.to_path_buf(),
        position: xml_position(text, offset),
        source,
    };
    for attr in element.attributes() {
        let attr = attr.map_err(|e| xml_err(e.into()))?;
        if attr.key.as_ref() == name {
            let value = attr
                .normalized_value(XmlVersion::Implicit1_0)
                .map_err(xml_err)?;
            return Ok(Some(value.into_owned()));
        }
    }
    Ok(None)
}

fn parse_cobertura(text: &str, path: &Path) -> Result<(u64, u64), CoverageError> {
    let cob = |message: String| invalid(path, format!("cobertura: {message}"));
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_end_names = true;

    let mut root_seen = false;
    let mut depth: usize = 0;
    let mut totals: Option<(u64, u64)> = None;
    // Current <class>: index into `classes` and the depth it was opened at.
    let mut class: Option<(usize, usize)> = None;
    let mut class_index: HashMap<String, usize> = HashMap::new();
    let mut classes: Vec<HashMap<u64, bool>> = Vec::new();
    let mut saw_line = false;

    loop {
        let start_offset = reader.buffer_position();
        let event = reader.read_event().map_err(|source| CoverageError::Xml {
            path: path.to_path_buf(),
            position: xml_position(text, reader.error_position()),
            source,
        })?;
        let (element, is_start) = match event {
            Event::Start(e) => (e, true),
            Event::Empty(e) => (e, false),
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                if class.is_some_and(|(_, at)| depth < at) {
                    class = None;
                }
                continue;
            }
            Event::Eof => break,
            // Declaration, DOCTYPE, comments, processing instructions, text.
            _ => continue,
        };
        let name = element.name();
        let name = name.as_ref();
        if !root_seen {
            root_seen = true;
            if element.local_name().as_ref() != "coverage" {
                return Err(invalid(
                    path,
                    format!("not a Cobertura report: root element is <{name}>"),
                ));
            }
            let covered = xml_attr(&element, "lines-covered", text, start_offset, path)?;
            let valid = xml_attr(&element, "lines-valid", text, start_offset, path)?;
            if let (Some(covered), Some(valid)) = (covered, valid) {
                let covered =
                    parse_u64(&covered).map_err(|e| cob(format!("lines-covered: {e}")))?;
                let valid = parse_u64(&valid).map_err(|e| cob(format!("lines-valid: {e}")))?;
                totals = Some((covered, valid));
            }
        } else if depth == 0 {
            return Err(invalid(
                path,
                format!(
                    "malformed XML at {}: second root element <{name}>",
                    xml_position(text, start_offset)
                ),
            ));
        } else if totals.is_none() {
            match element.local_name().as_ref() {
                "class" if is_start => {
                    let file = match xml_attr(&element, "filename", text, start_offset, path)? {
                        Some(file) => file,
                        None => xml_attr(&element, "name", text, start_offset, path)?
                            .unwrap_or_default(),
                    };
                    let index = match class_index.get(&file) {
                        Some(&index) => index,
                        None => {
                            classes.push(HashMap::new());
                            class_index.insert(file, classes.len() - 1);
                            classes.len() - 1
                        }
                    };
                    class = Some((index, depth + 1));
                }
                "line" => {
                    if let Some((index, _)) = class {
                        let number = xml_attr(&element, "number", text, start_offset, path)?
                            .ok_or_else(|| cob("<line> without a number attribute".into()))?;
                        let number =
                            parse_u64(&number).map_err(|e| cob(format!("<line number>: {e}")))?;
                        let hits = xml_attr(&element, "hits", text, start_offset, path)?
                            .ok_or_else(|| {
                                cob(format!("<line number=\"{number}\"> without hits"))
                            })?;
                        let hit = parse_hits(&hits)
                            .map_err(|e| cob(format!("<line number=\"{number}\">: {e}")))?;
                        saw_line = true;
                        *classes[index].entry(number).or_insert(false) |= hit;
                    }
                }
                _ => {}
            }
        }
        if is_start {
            depth += 1;
        }
    }

    if !root_seen {
        return Err(cob("no root element".into()));
    }
    if depth > 0 {
        return Err(invalid(
            path,
            format!("malformed XML at end of file: {depth} element(s) not closed"),
        ));
    }
    if let Some(totals) = totals {
        return Ok(totals);
    }
    if !saw_line {
        return Err(cob(
            "no lines-covered/lines-valid and no <line> elements".into()
        ));
    }
    let (mut covered, mut valid) = (0u64, 0u64);
    for lines in &classes {
        valid += lines.len() as u64;
        covered += lines.values().filter(|&&hit| hit).count() as u64;
    }
    Ok((covered, valid))
}

// ------------------------------------------------------- llvm-cov JSON

fn parse_llvm_json(text: &str, path: &Path) -> Result<(u64, u64), CoverageError> {
    let json = |message: String| invalid(path, format!("llvm-cov JSON: {message}"));
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|source| CoverageError::Json {
            path: path.to_path_buf(),
            source,
        })?;
    let Some(object) = value.as_object() else {
        return Err(json("top level is not an object".into()));
    };
    if let Some(kind) = object.get("type")
        && kind.as_str() != Some("llvm.coverage.json.export")
    {
        return Err(json(format!(
            "not an llvm-cov export: \"type\" is {kind}, expected \"llvm.coverage.json.export\""
        )));
    }
    let data = object
        .get("data")
        .ok_or_else(|| json("missing field \"data\"".into()))?
        .as_array()
        .ok_or_else(|| json("field \"data\" is not an array".into()))?;

    let (mut covered, mut valid) = (0u64, 0u64);
    for (i, entry) in data.iter().enumerate() {
        let mut node = entry;
        let mut field = format!("data[{i}]");
        for key in ["totals", "lines"] {
            field.push('.');
            field.push_str(key);
            node = node
                .get(key)
                .ok_or_else(|| json(format!("missing field {field}")))?;
        }
        let number = |key: &str| -> Result<u64, CoverageError> {
            let name = format!("{field}.{key}");
            let value = node
                .get(key)
                .ok_or_else(|| json(format!("missing field {name}")))?;
            if let Some(n) = value.as_u64() {
                Ok(n)
            } else if value.as_f64().is_some_and(|f| f < 0.0) {
                Err(json(format!("{name} is negative ({value})")))
            } else {
                Err(json(format!(
                    "{name} is not a non-negative integer ({value})"
                )))
            }
        };
        let count = number("count")?;
        let hit = number("covered")?;
        if hit > count {
            return Err(json(format!(
                "{field}: covered ({hit}) is greater than count ({count})"
            )));
        }
        covered = checked_sum(covered, hit, path, Format::LlvmCovJson)?;
        valid = checked_sum(valid, count, path, Format::LlvmCovJson)?;
    }
    Ok((covered, valid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str) -> PathBuf {
        PathBuf::from(name)
    }

    fn ok(text: &str, name: &str) -> Coverage {
        parse(text.as_bytes(), None, &p(name)).unwrap_or_else(|e| panic!("{e}"))
    }

    fn err(bytes: &[u8], format: Option<Format>, name: &str) -> String {
        match parse(bytes, format, &p(name)) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn assert_percent(c: &Coverage, expected: f64) {
        let got = c.percent().expect("percent");
        assert!((got - expected).abs() < 1e-9, "got {got}, want {expected}");
    }

    // ------------------------------------------------------------ LCOV

    #[test]
    fn lcov_single_record() {
        // 3 of 4 DA lines hit (hits 5, 1, 0, 12) → 75%.
        let c = ok(
            "TN:\nSF:src/a.rs\nFN:1,main\nFNDA:1,main\nFNF:1\nFNH:1\n\
             DA:1,5\nDA:2,1\nDA:3,0\nDA:4,12\nBRDA:2,0,0,1\nBRF:1\nBRH:1\n\
             LF:4\nLH:3\nend_of_record\n",
            "lcov.info",
        );
        assert_eq!(c.format, Format::Lcov);
        assert_eq!((c.lines_covered, c.lines_valid), (3, 4));
        assert_percent(&c, 75.0);
    }

    #[test]
    fn lcov_two_files_with_checksums_and_crlf() {
        // a.rs: 1 of 2; b.rs: 2 of 3 → 3 of 5 = 60%.
        let c = ok(
            "SF:a.rs\r\nDA:1,1,abcd==\r\nDA:2,0,ef==\r\nend_of_record\r\n\
             SF:b.rs\r\nDA:1,1\r\nDA:2,99999999999999999999999\r\nDA:3,0\r\nend_of_record\r\n",
            "lcov.info",
        );
        assert_eq!((c.lines_covered, c.lines_valid), (3, 5));
        assert_percent(&c, 60.0);
    }

    #[test]
    fn lcov_merges_same_file_across_test_names() {
        // Record 1 covers lines 1, 2 of 4; record 2 covers line 3 of the same
        // 4 lines → union: lines 1, 2, 3 covered of 4 = 75%.
        let c = ok(
            "TN:unit\nSF:src/lib.rs\nDA:1,1\nDA:2,3\nDA:3,0\nDA:4,0\nLF:4\nLH:2\nend_of_record\n\
             TN:integration\nSF:src/lib.rs\nDA:1,0\nDA:2,0\nDA:3,7\nDA:4,0\nLF:4\nLH:1\nend_of_record\n",
            "lcov.info",
        );
        assert_eq!((c.lines_covered, c.lines_valid), (3, 4));
        assert_percent(&c, 75.0);
    }

    #[test]
    fn lcov_lf_lh_only_takes_max_per_file() {
        // a.rs: records (LF 10, LH 4) and (LF 10, LH 6) → max 6 of 10;
        // b.rs: LF 10, LH 9 → totals 15 of 20 = 75%.
        let c = ok(
            "TN:t1\nSF:a.rs\nLF:10\nLH:4\nend_of_record\n\
             TN:t2\nSF:a.rs\nLF:10\nLH:6\nend_of_record\n\
             SF:b.rs\nLF:10\nLH:9\nend_of_record\n",
            "lcov.info",
        );
        assert_eq!((c.lines_covered, c.lines_valid), (15, 20));
        assert_percent(&c, 75.0);
    }

    #[test]
    fn lcov_records_without_lines_is_zero_of_zero() {
        let c = ok("TN:\nSF:a.rs\nFNF:0\nFNH:0\nend_of_record\n", "lcov.info");
        assert_eq!((c.lines_covered, c.lines_valid), (0, 0));
        assert_eq!(c.percent(), None);
    }

    #[test]
    fn lcov_missing_final_end_of_record_is_tolerated() {
        // 1 of 2.
        let c = ok("SF:a.rs\nDA:1,1\nDA:2,0", "lcov.info");
        assert_eq!((c.lines_covered, c.lines_valid), (1, 2));
        assert_percent(&c, 50.0);
    }

    #[test]
    fn lcov_malformed_da_names_file_and_line() {
        let text = "TN:\nSF:a.rs\nDA:1,1\nDA:2,1\nDA:3,1\nDA:4,1\nDA:abc,1\nend_of_record\n";
        let msg = err(text.as_bytes(), None, "lcov.info");
        assert!(
            msg.starts_with("lcov.info line 7: DA: expected line,hits"),
            "{msg}"
        );
        let msg = err(b"SF:a.rs\nDA:5\n", None, "lcov.info");
        assert!(msg.contains("line 2: DA: expected line,hits"), "{msg}");
        let msg = err(b"SF:a.rs\nDA:5,x\n", None, "lcov.info");
        assert!(
            msg.contains("line 2: DA: hit count \"x\" is not a number"),
            "{msg}"
        );
    }

    #[test]
    fn lcov_negative_numbers() {
        let msg = err(b"SF:a.rs\nDA:1,-1\n", None, "lcov.info");
        assert!(msg.contains("line 2: DA: negative hit count"), "{msg}");
        let msg = err(b"SF:a.rs\nLF:-3\n", None, "lcov.info");
        assert!(msg.contains("line 2: LF: negative number"), "{msg}");
    }

    #[test]
    fn lcov_lh_greater_than_lf() {
        let msg = err(b"SF:a.rs\nLF:3\nLH:5\nend_of_record\n", None, "lcov.info");
        assert!(
            msg.contains("lcov.info line 3: LH: 5 lines hit is greater than LF: 3"),
            "{msg}"
        );
    }

    #[test]
    fn lcov_structure_errors() {
        let msg = err(b"TN:\nDA:1,1\n", None, "lcov.info");
        assert!(msg.contains("line 2: DA: outside a record"), "{msg}");
        let msg = err(b"SF:a.rs\ngarbage\n", None, "lcov.info");
        assert!(msg.contains("line 2: expected TAG:value"), "{msg}");
    }

    #[test]
    fn lcov_non_utf8_in_data_line() {
        let msg = err(b"SF:a.rs\nDA:1,\xff\n", None, "lcov.info");
        assert!(msg.contains("line 2: DA: not valid UTF-8"), "{msg}");
        // A non-UTF-8 source path is fine: it is only a key.
        let c = parse(b"SF:\xe9.rs\nDA:1,1\n", None, &p("lcov.info")).expect("parse");
        assert_eq!((c.lines_covered, c.lines_valid), (1, 1));
    }

    // ------------------------------------------------------- Cobertura

    #[test]
    fn cobertura_attributes() {
        // 45 of 60 = 75%; the <line> elements disagree on purpose and are ignored.
        let c = ok(
            r#"<?xml version="1.0" ?>
<!DOCTYPE coverage SYSTEM "http://cobertura.sourceforge.net/xml/coverage-04.dtd">
<coverage line-rate="0.75" lines-covered="45" lines-valid="60" version="1.9" timestamp="1">
  <packages><package name="p"><classes>
    <class name="a" filename="a.rs"><lines><line number="1" hits="0"/></lines></class>
  </classes></package></packages>
</coverage>
"#,
            "coverage.xml",
        );
        assert_eq!(c.format, Format::Cobertura);
        assert_eq!((c.lines_covered, c.lines_valid), (45, 60));
        assert_percent(&c, 75.0);
    }

    #[test]
    fn cobertura_counts_line_elements() {
        // a.rs lines 1 (hit), 2 (miss), 3 (hit) — method lines repeat 1 and 2 and
        // are deduplicated; the same file in a second class adds line 4 (miss)
        // and re-hits line 2; b.rs line 1 (miss).
        // Covered: a.rs 1, 2, 3; valid: a.rs 1-4 + b.rs 1 → 3 of 5 = 60%.
        let c = ok(
            r#"<?xml version="1.0"?>
<coverage line-rate="0.6" version="1">
  <sources><source>/src</source></sources>
  <packages><package name="p" line-rate="0.6"><classes>
    <class name="A" filename="a.rs" line-rate="0.6">
      <methods><method name="f" signature="()">
        <lines><line number="1" hits="2"/><line number="2" hits="0"/></lines>
      </method></methods>
      <lines>
        <line number="1" hits="2"/>
        <line number="2" hits="0"/>
        <line number="3" hits="1" branch="true" condition-coverage="50% (1/2)"/>
      </lines>
    </class>
    <class name="A2" filename="a.rs">
      <lines><line number="2" hits="4"/><line number="4" hits="0"/></lines>
    </class>
    <class name="B" filename="b.rs"><lines><line number="1" hits="0"></line></lines></class>
  </classes></package></packages>
</coverage>"#,
            "coverage.xml",
        );
        assert_eq!((c.lines_covered, c.lines_valid), (3, 5));
        assert_percent(&c, 60.0);
    }

    #[test]
    fn cobertura_not_fooled_by_comment() {
        // The commented-out root claims 99 of 100; the real one says 1 of 4 = 25%.
        let c = ok(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- <coverage lines-covered="99" lines-valid="100"> -->
<!DOCTYPE coverage [ <!ELEMENT coverage ANY> ]>
<coverage lines-covered="1" lines-valid="4"><!-- <coverage lines-covered="7"> --></coverage>"#,
            "coverage.xml",
        );
        assert_eq!((c.lines_covered, c.lines_valid), (1, 4));
        assert_percent(&c, 25.0);
    }

    #[test]
    fn cobertura_only_line_rate_is_an_error() {
        let msg = err(
            br#"<coverage line-rate="0.5"><packages/></coverage>"#,
            None,
            "coverage.xml",
        );
        assert_eq!(
            msg,
            "coverage.xml: cobertura: no lines-covered/lines-valid and no <line> elements"
        );
    }

    #[test]
    fn cobertura_wrong_root() {
        let msg = err(b"<?xml version=\"1.0\"?>\n<foo/>", None, "x.xml");
        assert_eq!(msg, "x.xml: not a Cobertura report: root element is <foo>");
        // Forcing the format does not skip the root check.
        let msg = err(b"<html></html>", Some(Format::Cobertura), "x.xml");
        assert!(msg.contains("root element is <html>"), "{msg}");
    }

    #[test]
    fn cobertura_malformed_xml() {
        let msg = err(
            b"<coverage lines-covered=\"1\" lines-valid=\"2\">\n<packages></wrong></coverage>",
            None,
            "coverage.xml",
        );
        assert!(
            msg.starts_with("coverage.xml: malformed XML at line 2"),
            "{msg}"
        );
        let msg = err(b"<coverage lines-covered=\"1", None, "coverage.xml");
        assert!(msg.contains("malformed XML at line 1"), "{msg}");
        let msg = err(
            b"<coverage lines-covered=\"1\" lines-valid=\"2\"><packages>",
            None,
            "coverage.xml",
        );
        assert!(msg.contains("coverage.xml:"), "{msg}");
        assert!(msg.contains("end of file"), "{msg}");
    }

    #[test]
    fn cobertura_bad_numbers() {
        let msg = err(
            br#"<coverage lines-covered="5" lines-valid="4"/>"#,
            None,
            "c.xml",
        );
        assert_eq!(msg, "c.xml: cobertura: 5 lines covered but only 4 valid");
        let msg = err(
            br#"<coverage lines-covered="-1" lines-valid="4"/>"#,
            None,
            "c.xml",
        );
        assert!(msg.contains("lines-covered: negative number"), "{msg}");
        let msg = err(
            br#"<coverage><class filename="a"><line number="1" hits="-2"/></class></coverage>"#,
            None,
            "c.xml",
        );
        assert!(msg.contains("negative hit count"), "{msg}");
    }

    #[test]
    fn cobertura_not_utf8() {
        let msg = err(
            b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n<coverage name=\"\xe9\"/>",
            None,
            "c.xml",
        );
        assert!(msg.starts_with("c.xml: not valid UTF-8"), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
    }

    // --------------------------------------------------- llvm-cov JSON

    #[test]
    fn llvm_cov_two_data_entries() {
        // (30 of 40) + (15 of 20) = 45 of 60 = 75%.
        let c = ok(
            r#"{"type":"llvm.coverage.json.export","version":"2.0.1","data":[
                {"files":[],"totals":{"lines":{"count":40,"covered":30,"percent":75.0},
                 "functions":{"count":3,"covered":1}}},
                {"files":[],"totals":{"lines":{"count":20,"covered":15,"percent":75.0}}}
            ]}"#,
            "coverage.json",
        );
        assert_eq!(c.format, Format::LlvmCovJson);
        assert_eq!((c.lines_covered, c.lines_valid), (45, 60));
        assert_percent(&c, 75.0);
    }

    #[test]
    fn llvm_cov_missing_fields_are_named() {
        let msg = err(
            br#"{"type":"llvm.coverage.json.export","data":[{"totals":{"lines":{"count":1,"covered":1}}},{"totals":{}}]}"#,
            None,
            "c.json",
        );
        assert_eq!(
            msg,
            "c.json: llvm-cov JSON: missing field data[1].totals.lines"
        );
        let msg = err(
            br#"{"data":[{"totals":{"lines":{"count":3}}}]}"#,
            None,
            "c.json",
        );
        assert!(
            msg.contains("missing field data[0].totals.lines.covered"),
            "{msg}"
        );
        let msg = err(br#"{"version":"2"}"#, None, "c.json");
        assert!(msg.contains("missing field \"data\""), "{msg}");
        let msg = err(br#"{"type":"something-else","data":[]}"#, None, "c.json");
        assert!(msg.contains("not an llvm-cov export"), "{msg}");
    }

    #[test]
    fn llvm_cov_bad_values() {
        let msg = err(
            br#"{"data":[{"totals":{"lines":{"count":3,"covered":4}}}]}"#,
            None,
            "c.json",
        );
        assert!(
            msg.contains("covered (4) is greater than count (3)"),
            "{msg}"
        );
        let msg = err(
            br#"{"data":[{"totals":{"lines":{"count":-3,"covered":0}}}]}"#,
            None,
            "c.json",
        );
        assert!(
            msg.contains("data[0].totals.lines.count is negative"),
            "{msg}"
        );
    }

    #[test]
    fn llvm_cov_invalid_json() {
        let msg = err(b"{\"data\": [", None, "c.json");
        assert!(msg.starts_with("c.json: invalid JSON: "), "{msg}");
        assert!(msg.contains("line 1"), "{msg}");
    }

    // --------------------------------------------------------- general

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
