//! llvm-cov JSON export (`cargo llvm-cov --json`): the line totals of each
//! `data` entry, summed.

use std::path::Path;

use super::{CoverageError, Format, checked_sum, invalid};

pub(super) fn parse_llvm_json(text: &str, path: &Path) -> Result<(u64, u64), CoverageError> {
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
    use crate::coverage::test_support::{assert_percent, err, ok};

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
}
