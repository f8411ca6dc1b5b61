//! Small formatters shared by the commands: times, durations, numbers,
//! bytes, and proto enum values as short lowercase names.

use prost_types::Timestamp;

/// `2026-03-01T12:00:00Z` (UTC, whole seconds); `-` when unset.
pub fn time(timestamp: Option<&Timestamp>) -> String {
    timestamp.map_or_else(|| "-".to_owned(), |t| rfc3339(t.seconds))
}

/// The same as [`time`], or JSON `null` when unset.
pub fn time_json(timestamp: Option<&Timestamp>) -> serde_json::Value {
    timestamp.map_or(serde_json::Value::Null, |t| rfc3339(t.seconds).into())
}

/// Unix seconds as RFC 3339 in UTC; `@<seconds>` outside the years 1970
/// to 9999.
pub fn rfc3339(unix: i64) -> String {
    match u64::try_from(unix) {
        Ok(seconds) if seconds <= 253_402_300_799 => {
            let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds);
            humantime::format_rfc3339_seconds(time).to_string()
        }
        _ => format!("@{unix}"),
    }
}

/// Seconds for people: `850ms`, `1.25s`, `3m 20s`.
pub fn seconds(value: f64) -> String {
    if !value.is_finite() || value < 0.0 {
        return "-".to_owned();
    }
    if value < 1.0 {
        return format!("{:.0}ms", value * 1_000.0);
    }
    if value < 60.0 {
        return format!("{value:.2}s");
    }
    let whole = value.round() as u64;
    format!("{}m {}s", whole / 60, whole % 60)
}

/// A number without needless decimals: `3`, `0.0125`.
pub fn number(value: f64) -> String {
    if value.is_nan() {
        return "NaN".to_owned();
    }
    if value.fract() == 0.0 && value.abs() < 1e15 {
        return format!("{value:.0}");
    }
    let text = format!("{value:.6}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "0" || text == "-0" {
        format!("{value:e}")
    } else {
        text.to_owned()
    }
}

/// Bytes for people: `512 B`, `12.0 MiB`.
pub fn bytes(value: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut size = value as f64;
    let mut unit = 0;
    while size >= 1024.0 && unit + 1 < UNITS.len() {
        size /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value} B")
    } else {
        format!("{size:.1} {}", UNITS[unit])
    }
}

/// A proto enum value's name without its prefix, lowercase
/// (`RUN_RESULT_PASSED` → `passed`); `unknown(7)` for a value this client
/// does not know (a newer server).
pub fn enum_name<E>(value: i32, name: impl Fn(&E) -> &'static str, prefix: &str) -> String
where
    E: TryFrom<i32>,
{
    match E::try_from(value) {
        Ok(known) => name(&known)
            .strip_prefix(prefix)
            .unwrap_or_default()
            .to_ascii_lowercase(),
        Err(_) => format!("unknown({value})"),
    }
}

#[cfg(test)]
mod tests {
    use automation_proto::v1::RunResult;

    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(253_402_300_799), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(-1), "@-1");
        assert_eq!(rfc3339(i64::MAX), format!("@{}", i64::MAX));
        assert_eq!(time(None), "-");
    }

    #[test]
    fn numbers_and_durations() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.0125), "0.0125");
        assert_eq!(number(0.000_000_2), "2e-7");
        assert_eq!(seconds(0.25), "250ms");
        assert_eq!(seconds(1.5), "1.50s");
        assert_eq!(seconds(200.0), "3m 20s");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(12 << 20), "12.0 MiB");
    }

    #[test]
    fn enum_names() {
        let name = |v| enum_name::<RunResult>(v, RunResult::as_str_name, "RUN_RESULT_");
        assert_eq!(name(RunResult::Passed as i32), "passed");
        assert_eq!(name(99), "unknown(99)");
    }
}
