//! RFC 3339 timestamps in UTC (humantime), for people reading a report.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The last second humantime writes (9999-12-31T23:59:59Z).
const LATEST: Duration = Duration::from_secs(253_402_300_799);

/// Formats `time` as `YYYY-MM-DDTHH:MM:SS.mmmZ`; times before 1970 show as
/// the epoch, times after 9999 as its last second.
pub(crate) fn format(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time.clamp(UNIX_EPOCH, UNIX_EPOCH + LATEST)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64, millis: u64) -> String {
        format(UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_millis(millis))
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_700_000_000, 123), "2023-11-14T22:13:20.123Z");
        assert_eq!(at(1_735_689_599, 999), "2024-12-31T23:59:59.999Z");
        assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00.000Z");
    }

    #[test]
    fn times_out_of_range_are_clamped() {
        let before = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(format(before), "1970-01-01T00:00:00.000Z");
        let after = UNIX_EPOCH + LATEST + Duration::from_secs(86_400);
        assert_eq!(format(after), "9999-12-31T23:59:59.000Z");
    }
}
