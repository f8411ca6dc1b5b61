//! What the coverage module's tests share: parsing a report that must
//! (or must not) parse, and comparing percentages.

use std::path::PathBuf;

use super::{Coverage, Format, parse};

pub(super) fn p(name: &str) -> PathBuf {
    PathBuf::from(name)
}

pub(super) fn ok(text: &str, name: &str) -> Coverage {
    parse(text.as_bytes(), None, &p(name)).unwrap_or_else(|e| panic!("{e}"))
}

pub(super) fn err(bytes: &[u8], format: Option<Format>, name: &str) -> String {
    match parse(bytes, format, &p(name)) {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e.to_string(),
    }
}

pub(super) fn assert_percent(c: &Coverage, expected: f64) {
    let got = c.percent().expect("percent");
    assert!((got - expected).abs() < 1e-9, "got {got}, want {expected}");
}
