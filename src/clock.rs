//! Wall-clock helpers shared by the audit trail, the audit job, readiness and the sandbox:
//! Unix time that never panics on a clock before the epoch (it reads as 0, and callers that
//! decide on time treat that as an error), RFC 3339 timestamps without a date crate, and
//! [`Clock`]: the time source that what decides on expiries holds, so tests move time instead
//! of sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of Unix seconds. The gateway runs on [`SystemClock`]; tests hand a
/// [`ManualClock`] to what they want to age (approvals' requests and grants).
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Unix seconds now.
    fn unix_now(&self) -> u64;
}

/// The system's wall clock ([`unix_now`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn unix_now(&self) -> u64 {
        unix_now()
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock reading `at` Unix seconds.
    pub fn new(at: u64) -> Self {
        Self(AtomicU64::new(at))
    }

    /// Moves the clock `secs` forward.
    pub fn advance(&self, secs: u64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn unix_now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Unix seconds now (0 if the clock is before the epoch).
pub fn unix_now() -> u64 {
    unix_now_ms() / 1000
}

/// Unix milliseconds now (0 if the clock is before the epoch).
pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Now, as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn now_rfc3339() -> String {
    Rfc3339::now().to_string()
}

/// `secs` since the epoch, as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn rfc3339(secs: u64, millis: u32) -> String {
    Rfc3339::at(secs, millis).to_string()
}

/// An instant that formats as `YYYY-MM-DDTHH:MM:SS.mmmZ` wherever it is written, without a
/// string of its own (the audit line serialises it straight into its buffer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rfc3339 {
    secs: u64,
    millis: u32,
}

impl Rfc3339 {
    /// Now.
    pub fn now() -> Self {
        let ms = unix_now_ms();
        Self::at(ms / 1000, (ms % 1000) as u32)
    }

    /// `secs` and `millis` since the epoch.
    pub fn at(secs: u64, millis: u32) -> Self {
        Self { secs, millis }
    }

    /// The 24 bytes of the timestamp, written digit by digit (`core::fmt` with padding was a
    /// visible share of every audit line). `None` for a year past 9999.
    fn digits(self) -> Option<[u8; 24]> {
        let (year, month, day, rem) = civil(self.secs)?;
        let year = u64::try_from(year).ok().filter(|y| *y <= 9999)?;
        let mut out = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut n: u64| {
            for i in (at..at + width).rev() {
                out[i] = b'0' + (n % 10) as u8;
                n /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, month.unsigned_abs());
        put(8, 2, day.unsigned_abs());
        put(11, 2, rem / 3600);
        put(14, 2, (rem % 3600) / 60);
        put(17, 2, rem % 60);
        put(20, 3, u64::from(self.millis.min(999)));
        Some(out)
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

/// Unix milliseconds of a timestamp in the form [`Rfc3339`] writes
/// (`YYYY-MM-DDTHH:MM:SS.mmmZ`, the milliseconds optional); `None` for anything else.
pub fn parse_rfc3339_ms(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |from: usize, to: usize| -> Option<i64> {
        let digits = b.get(from..to)?;
        digits.iter().try_fold(0i64, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
        })
    };
    let seps = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if !seps.iter().all(|&(i, c)| b.get(i) == Some(&c)) {
        return None;
    }
    let millis = match (b.get(19), b.len()) {
        (Some(b'Z'), 20) => 0,
        (Some(b'.'), 24) if b[23] == b'Z' => num(20, 23)?,
        _ => return None,
    };
    let (y, m, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hh, mm, ss) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Howard Hinnant's `days_from_civil`, the inverse of [`civil`].
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    u64::try_from(secs * 1000 + millis).ok()
}

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.digits() {
            Some(d) => f.write_str(std::str::from_utf8(&d).map_err(|_| std::fmt::Error)?),
            // Beyond year 9999: no clock of this process gets there.
            None => f.write_str("9999-12-31T23:59:59.999Z"),
        }
    }
}

impl serde::Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.digits() {
            Some(d) => s.serialize_str(std::str::from_utf8(&d).unwrap_or_default()),
            None => s.collect_str(self),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_767_225_600, 5), "2026-01-01T00:00:00.005Z");
        assert_eq!(rfc3339(951_782_400, 0), "2000-02-29T00:00:00.000Z");
        let json = serde_json::to_string(&Rfc3339::at(1_767_225_600, 5)).unwrap();
        assert_eq!(json, "\"2026-01-01T00:00:00.005Z\"");
        assert_eq!(rfc3339(253_402_300_799, 999), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(1_767_312_345, 120), "2026-01-02T00:05:45.120Z");
    }

    #[test]
    fn parses_only_the_form_it_writes() {
        assert_eq!(
            parse_rfc3339_ms("2026-01-01T00:00:00.005Z"),
            Some(1_767_225_600_005)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-01-01T00:00:00Z"),
            Some(1_767_225_600_000)
        );
        for bad in [
            "",
            "2026-01-01 00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-01-01T00:00:00+01:00",
            "2026-01-01T00:00:00.5Z",
            "２026-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
        }
    }

    proptest::proptest! {
        /// The digit writer agrees with the same fields formatted by `format!`
        /// for any instant from 1970 to the end of 9999.
        #[test]
        fn what_is_written_parses_back_to_the_same_millisecond(
            secs in 0u64..=253_402_300_799, millis in 0u32..1000,
        ) {
            let text = rfc3339(secs, millis);
            proptest::prop_assert_eq!(
                parse_rfc3339_ms(&text),
                Some(secs * 1000 + u64::from(millis))
            );
        }

        #[test]
        fn digits_match_formatted_fields(secs in 0u64..=253_402_300_799, millis in 0u32..1000) {
            let (year, month, day, rem) = civil(secs).unwrap();
            let want = format!(
                "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
                rem / 3600,
                (rem % 3600) / 60,
                rem % 60
            );
            proptest::prop_assert_eq!(rfc3339(secs, millis), want);
        }
    }
}
