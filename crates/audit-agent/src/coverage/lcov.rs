//! LCOV (`lcov.info`): `SF:`/`end_of_record` records, with `DA:` lines or
//! only `LF:`/`LH:` summaries; a file's records are merged across test names.

use std::collections::HashMap;
use std::path::Path;

use super::{CoverageError, Format, checked_sum, parse_hits, parse_u64};

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

pub(super) fn parse_lcov(bytes: &[u8], path: &Path) -> Result<(u64, u64), CoverageError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coverage::parse;
    use crate::coverage::test_support::{assert_percent, err, ok, p};

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
}
