//! Timestamps: milliseconds since the Unix epoch, UTC, written as RFC 3339 in the API.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A point in time: milliseconds since 1970-01-01T00:00:00Z.
///
/// ```
/// use kat_core::clock::Timestamp;
/// let t = Timestamp::from_millis(1_700_000_000_123);
/// assert_eq!(t.to_string(), "2023-11-14T22:13:20.123Z");
/// assert_eq!(Timestamp::parse_rfc3339("2023-11-14T22:13:20.123Z"), Some(t));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Now.
    pub fn now() -> Self {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }

    /// From milliseconds.
    pub fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    /// From seconds.
    pub fn from_secs(s: i64) -> Self {
        Timestamp(s.saturating_mul(1000))
    }

    /// Milliseconds since the epoch.
    pub fn as_millis(self) -> i64 {
        self.0
    }

    /// Whole seconds since the epoch.
    pub fn as_secs(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// This time plus `ms` milliseconds.
    ///
    /// ```
    /// use kat_core::clock::Timestamp;
    /// assert_eq!(Timestamp::from_secs(1).plus_millis(-250).as_millis(), 750);
    /// ```
    pub fn plus_millis(self, ms: i64) -> Self {
        Timestamp(self.0.saturating_add(ms))
    }

    /// This time plus `secs` seconds.
    pub fn plus_secs(self, secs: i64) -> Self {
        Timestamp(self.0.saturating_add(secs.saturating_mul(1000)))
    }

    /// Parse `YYYY-MM-DDTHH:MM:SS[.fff]Z` (UTC only).
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() < 20
            || b[4] != b'-'
            || b[7] != b'-'
            || (b[10] != b'T' && b[10] != b't')
            || b[13] != b':'
            || b[16] != b':'
        {
            return None;
        }
        let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
        let (y, mo, d, h, mi, se) = (
            num(0..4)?,
            num(5..7)?,
            num(8..10)?,
            num(11..13)?,
            num(14..16)?,
            num(17..19)?,
        );
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
            return None;
        }
        let rest = &s[19..];
        let (ms, zone) = match rest.strip_prefix('.') {
            Some(frac) => {
                let digits: String = frac.chars().take_while(char::is_ascii_digit).collect();
                if digits.is_empty() {
                    return None;
                }
                let ms_str: String = format!("{digits:0<3}").chars().take(3).collect();
                (ms_str.parse::<i64>().ok()?, &frac[digits.len()..])
            }
            None => (0, rest),
        };
        if zone != "Z" && zone != "z" && zone != "+00:00" {
            return None;
        }
        let days = days_from_civil(y, mo, d);
        Some(Timestamp(
            ((days * 86_400 + h * 3600 + mi * 60 + se) * 1000) + ms,
        ))
    }
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.rem_euclid(1000);
        let secs = self.0.div_euclid(1000);
        let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (y, m, d) = civil_from_days(days);
        if !(0..=9999).contains(&y) {
            return write!(
                f,
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
                sod / 3600,
                (sod % 3600) / 60,
                sod % 60
            );
        }
        // Digits into a buffer: every stored object's JSON carries timestamps, and `write!` with
        // padding cost more than the rest of an object's serialization.
        let mut b = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut v: i64| {
            for i in (at..at + width).rev() {
                if let Some(c) = b.get_mut(i) {
                    *c = b'0' + (v % 10) as u8;
                }
                v /= 10;
            }
        };
        put(0, 4, y);
        put(5, 2, m);
        put(8, 2, d);
        put(11, 2, sod / 3600);
        put(14, 2, (sod % 3600) / 60);
        put(17, 2, sod % 60);
        put(20, 3, ms);
        f.write_str(std::str::from_utf8(&b).map_err(|_| fmt::Error)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_dates() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Timestamp(253_402_300_799_999).to_string(),
            "9999-12-31T23:59:59.999Z"
        );
        assert_eq!(
            Timestamp(253_402_300_800_000).to_string(),
            "10000-01-01T00:00:00.000Z",
            "years past 9999 keep every digit"
        );
        assert_eq!(
            Timestamp::from_secs(951_782_400).to_string(),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            Timestamp::parse_rfc3339("2026-11-22T03:00:00Z")
                .unwrap()
                .as_secs(),
            1_795_316_400
        );
        assert_eq!(
            Timestamp::parse_rfc3339("2026-11-22T03:00:00.5Z")
                .unwrap()
                .as_millis()
                % 1000,
            500
        );
        assert!(Timestamp::parse_rfc3339("2026-11-22 03:00:00Z").is_none());
        assert!(Timestamp::parse_rfc3339("2026-13-22T03:00:00Z").is_none());
        assert!(Timestamp::parse_rfc3339("2026-11-22T03:00:00+02:00").is_none());
        assert!(Timestamp::now() > Timestamp::from_secs(1_700_000_000));
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(ms in -62_167_219_200_000i64..253_402_300_800_000) {
            let t = Timestamp(ms);
            prop_assert_eq!(Timestamp::parse_rfc3339(&t.to_string()), Some(t));
        }
    }
}
