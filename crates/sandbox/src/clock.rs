//! The sandbox's wall clock: Unix seconds and RFC 3339 timestamps (`created_at`, `updated_at`,
//! expiry times). Its own small copy rather than the gateway's, so that the fake Composio
//! shares no code with what it checks.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix seconds now (0 if the clock is before the epoch).
pub(crate) fn now_secs() -> u64 {
    now_ms() / 1000
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Now, as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub(crate) fn now_rfc3339() -> String {
    let ms = now_ms();
    rfc3339(ms / 1000, (ms % 1000) as u32)
}

/// `secs` since the epoch, as `YYYY-MM-DDTHH:MM:SS.mmmZ` (past year 9999, its last instant).
pub(crate) fn rfc3339(secs: u64, millis: u32) -> String {
    match civil(secs) {
        Some((year, month, day, rem)) if year <= 9999 => format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            rem / 3600,
            (rem % 3600) / 60,
            rem % 60,
            millis.min(999)
        ),
        _ => "9999-12-31T23:59:59.999Z".to_owned(),
    }
}

/// Year, month, day and the seconds into that day of `secs` since the epoch (Howard
/// Hinnant's `civil_from_days`).
fn civil(secs: u64) -> Option<(i64, i64, i64, u64)> {
    let days = i64::try_from(secs / 86_400).ok()?;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    Some((year, month, day, secs % 86_400))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_767_225_600, 5), "2026-01-01T00:00:00.005Z");
        assert_eq!(rfc3339(951_782_400, 0), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(253_402_300_799, 999), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(253_402_300_800, 0), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(1_767_312_345, 120), "2026-01-02T00:05:45.120Z");
        assert_eq!(rfc3339(1_767_312_345, 5_000), "2026-01-02T00:05:45.999Z");
    }
}
