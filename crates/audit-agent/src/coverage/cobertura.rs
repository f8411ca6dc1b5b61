//! Cobertura XML: the root `<coverage>` element's `lines-covered` and
//! `lines-valid`, else its `<line>` elements, each line counted once per
//! class file.

use std::collections::HashMap;
use std::path::Path;

use quick_xml::Reader;
use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};

use super::{CoverageError, invalid, parse_hits, parse_u64};

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

pub(super) fn parse_cobertura(text: &str, path: &Path) -> Result<(u64, u64), CoverageError> {
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

#[cfg(test)]
mod tests {
    use crate::coverage::Format;
    use crate::coverage::test_support::{assert_percent, err, ok};

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
}
