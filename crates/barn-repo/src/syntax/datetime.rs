//! Datetime strings: the RFC 3339 / ISO 8601 intersection that atproto uses.

use super::{SyntaxError, SyntaxKind, string_newtype};

/// Most fractional-second digits accepted; matches the reference syntax,
/// and is far beyond any clock's precision.
const MAX_FRACTION_DIGITS: usize = 20;

const MICROS_PER_SECOND: i64 = 1_000_000;
const SECONDS_PER_DAY: i64 = 86_400;
/// Days from 0000-03-01 to 1970-01-01 in the proleptic Gregorian calendar.
const DAYS_0000_03_01_TO_UNIX_EPOCH: i64 = 719_468;
/// Days in a 400-year Gregorian cycle.
const DAYS_PER_ERA: i64 = 146_097;

const fn err(reason: &'static str) -> SyntaxError {
    SyntaxError::new(SyntaxKind::Datetime, reason)
}

/// A valid atproto datetime such as `1985-04-12T23:20:50.123Z`.
///
/// Construction (parsing, `TryFrom`, deserializing) checks both the syntax
/// and that the fields name a real instant. The original string is kept as
/// is, so the derived ordering is lexical, not chronological: compare
/// [`Datetime::timestamp_micros`] for the latter.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Datetime(String);

string_newtype!(Datetime, Datetime::check);

/// The numeric fields of a syntactically valid datetime.
struct Fields {
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
    micros: i64,
    /// Sign of the offset from UTC: 1 east, -1 west.
    offset_sign: i64,
    offset_hours: i64,
    offset_minutes: i64,
}

impl Datetime {
    /// Checks the syntax of `s` without allocating.
    ///
    /// This is the shape check only (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`,
    /// uppercase `T` and `Z`, no `-00:00`); it accepts strings such as month
    /// 13 that [`Datetime::parse`] rejects.
    pub fn validate(s: &str) -> Result<(), SyntaxError> {
        scan(s.as_bytes()).map(|_| ())
    }

    /// Parses `s`, checking the syntax and that it is a real date and time
    /// at or after `0000-01-01T00:00:00Z`.
    pub fn parse(s: &str) -> Result<Datetime, SyntaxError> {
        s.parse()
    }

    /// Full check used by every constructor.
    fn check(s: &str) -> Result<(), SyntaxError> {
        to_unix_micros(&scan(s.as_bytes())?).map(|_| ())
    }

    /// Microseconds since the unix epoch (negative before 1970); extra
    /// fractional digits beyond microseconds are truncated.
    pub fn timestamp_micros(&self) -> i64 {
        // Constructors ran the same computation successfully.
        scan(self.0.as_bytes())
            .and_then(|f| to_unix_micros(&f))
            .unwrap_or_default()
    }

    /// The instant `millis` after the unix epoch, in UTC with millisecond
    /// precision (`2026-11-18T11:06:40.123Z`), as atproto writes times.
    pub fn from_unix_millis(millis: i64) -> Datetime {
        Datetime(format_utc(
            millis.div_euclid(1000),
            millis.rem_euclid(1000),
            3,
        ))
    }

    /// The instant `micros` after the unix epoch, in UTC with microsecond
    /// precision (`2026-11-18T11:06:40.123456Z`).
    pub fn from_unix_micros(micros: i64) -> Datetime {
        Datetime(format_utc(
            micros.div_euclid(1_000_000),
            micros.rem_euclid(1_000_000),
            6,
        ))
    }
}

/// `YYYY-MM-DDTHH:MM:SS.<fraction>Z` for `secs` since the epoch, the
/// fraction written with `digits` digits. Days to the civil date in the
/// proleptic Gregorian calendar (Howard Hinnant's algorithm).
fn format_utc(secs: i64, fraction: i64, digits: usize) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{fraction:0digits$}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
    )
}

/// Reads exactly `N` ASCII digits at `pos` as a number.
fn digits<const N: usize>(b: &[u8], pos: usize) -> Result<i64, SyntaxError> {
    let field = b
        .get(pos..pos + N)
        .ok_or(err("too short for yyyy-mm-ddThh:mm:ss"))?;
    field.iter().try_fold(0i64, |acc, &c| {
        if c.is_ascii_digit() {
            Ok(acc * 10 + i64::from(c - b'0'))
        } else {
            Err(err("expected a digit"))
        }
    })
}

fn expect(b: &[u8], pos: usize, want: u8, reason: &'static str) -> Result<(), SyntaxError> {
    if b.get(pos) == Some(&want) {
        Ok(())
    } else {
        Err(err(reason))
    }
}

/// Checks the shape and extracts the fields, without range checks.
fn scan(b: &[u8]) -> Result<Fields, SyntaxError> {
    let year = digits::<4>(b, 0)?;
    expect(b, 4, b'-', "expected \"-\" after a 4-digit year")?;
    let month = digits::<2>(b, 5)?;
    expect(b, 7, b'-', "expected \"-\" after a 2-digit month")?;
    let day = digits::<2>(b, 8)?;
    expect(b, 10, b'T', "expected uppercase \"T\" after a 2-digit day")?;
    let hour = digits::<2>(b, 11)?;
    expect(b, 13, b':', "expected \":\" after a 2-digit hour")?;
    let minute = digits::<2>(b, 14)?;
    expect(b, 16, b':', "expected \":\" after 2-digit minutes")?;
    let second = digits::<2>(b, 17)?;

    let mut pos = 19;
    let mut micros = 0i64;
    if b.get(pos) == Some(&b'.') {
        pos += 1;
        let frac = b[pos..].iter().take_while(|c| c.is_ascii_digit()).count();
        if frac == 0 {
            return Err(err("expected digits after \".\""));
        }
        if frac > MAX_FRACTION_DIGITS {
            return Err(err("too many fractional second digits (max 20)"));
        }
        // Pad or truncate to exactly six digits.
        for i in 0..6 {
            let d = b.get(pos + i).filter(|_| i < frac).map_or(0, |&c| c - b'0');
            micros = micros * 10 + i64::from(d);
        }
        pos += frac;
    }

    let (offset_sign, offset_hours, offset_minutes) = match b.get(pos) {
        Some(b'Z') => {
            pos += 1;
            (1, 0, 0)
        }
        Some(&sign @ (b'+' | b'-')) => {
            let hours = digits::<2>(b, pos + 1)?;
            expect(b, pos + 3, b':', "timezone offset must be ±hh:mm")?;
            let minutes = digits::<2>(b, pos + 4)?;
            if sign == b'-' && hours == 0 && minutes == 0 {
                // RFC 3339's "unknown local offset" has no ISO 8601 meaning.
                return Err(err("timezone offset -00:00 is not allowed"));
            }
            pos += 6;
            (if sign == b'-' { -1 } else { 1 }, hours, minutes)
        }
        _ => return Err(err("timezone is required (\"Z\" or ±hh:mm)")),
    };
    if pos != b.len() {
        return Err(err("unexpected trailing characters"));
    }
    Ok(Fields {
        year,
        month,
        day,
        hour,
        minute,
        second,
        micros,
        offset_sign,
        offset_hours,
        offset_minutes,
    })
}

const fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

const fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (`year >= 0`).
fn days_since_unix_epoch(year: i64, month: i64, day: i64) -> i64 {
    // Count years from March so the leap day is the last day of the year and
    // month lengths before it do not depend on the year.
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let year_of_era = y.rem_euclid(400);
    // Days before month m in a March-based year: 31,30,31,30,31,31,30,31,30,31,31,29.
    let day_of_year = (153 * m + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * DAYS_PER_ERA + day_of_era - DAYS_0000_03_01_TO_UNIX_EPOCH
}

/// Checks the field ranges and converts to unix microseconds.
fn to_unix_micros(f: &Fields) -> Result<i64, SyntaxError> {
    if !(1..=12).contains(&f.month) {
        return Err(err("month out of range"));
    }
    if f.day < 1 || f.day > days_in_month(f.year, f.month) {
        return Err(err("day out of range for the month"));
    }
    if f.hour > 23 {
        return Err(err("hour out of range"));
    }
    if f.minute > 59 {
        return Err(err("minute out of range"));
    }
    // Leap seconds are not accepted: the reference implementations' date
    // parsers reject them too.
    if f.second > 59 {
        return Err(err("second out of range"));
    }
    if f.offset_hours > 23 || f.offset_minutes > 59 {
        return Err(err("timezone offset out of range"));
    }
    let offset_seconds = f.offset_sign * (f.offset_hours * 3600 + f.offset_minutes * 60);
    let days = days_since_unix_epoch(f.year, f.month, f.day);
    let seconds =
        days * SECONDS_PER_DAY + f.hour * 3600 + f.minute * 60 + f.second - offset_seconds;
    let micros = seconds * MICROS_PER_SECOND + f.micros;
    if micros < MIN_MICROS {
        return Err(err("normalizes to a time before year 0"));
    }
    Ok(micros)
}

/// 0000-01-01T00:00:00Z in unix microseconds.
const MIN_MICROS: i64 = -62_167_219_200 * MICROS_PER_SECOND;

#[cfg(test)]
mod tests {
    use super::*;

    fn micros(s: &str) -> i64 {
        Datetime::parse(s).unwrap().timestamp_micros()
    }

    #[test]
    fn formatting_from_timestamps_round_trips() {
        assert_eq!(
            Datetime::from_unix_millis(0).as_str(),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            Datetime::from_unix_millis(951_782_400_123).as_str(),
            "2000-02-29T00:00:00.123Z"
        );
        assert_eq!(
            Datetime::from_unix_millis(1_795_000_000_000).as_str(),
            "2026-11-18T11:06:40.000Z"
        );
        assert_eq!(
            Datetime::from_unix_micros(-1).as_str(),
            "1969-12-31T23:59:59.999999Z"
        );
        for us in [0i64, 1, -1, 951_782_400_123_456, 1_795_000_000_000_001] {
            let d = Datetime::from_unix_micros(us);
            assert_eq!(Datetime::parse(d.as_str()).unwrap().timestamp_micros(), us);
        }
    }

    #[test]
    fn epoch_and_known_instants() {
        assert_eq!(micros("1970-01-01T00:00:00Z"), 0);
        assert_eq!(micros("1970-01-01T00:00:00.000001Z"), 1);
        assert_eq!(micros("1969-12-31T23:59:59.999999Z"), -1);
        // 1985-04-12T23:20:50.52Z is 482196050.52 s.
        assert_eq!(micros("1985-04-12T23:20:50.52Z"), 482_196_050_520_000);
        assert_eq!(micros("2000-03-01T00:00:00Z"), 951_868_800_000_000);
        assert_eq!(micros("2024-02-29T12:00:00Z"), 1_709_208_000_000_000);
        assert_eq!(micros("9999-12-31T23:59:59Z"), 253_402_300_799_000_000);
        assert_eq!(micros("0000-01-01T00:00:00Z"), MIN_MICROS);
    }

    #[test]
    fn offsets_shift_to_utc() {
        let utc = micros("1985-04-12T23:20:50.123Z");
        assert_eq!(micros("1985-04-13T00:20:50.123+01:00"), utc);
        assert_eq!(micros("1985-04-12T16:20:50.123-07:00"), utc);
        assert_eq!(micros("1985-04-12T23:20:50.123+00:00"), utc);
        assert_eq!(micros("1985-04-13T01:05:50.123+01:45"), utc);
    }

    #[test]
    fn fraction_truncates_to_micros() {
        assert_eq!(micros("1970-01-01T00:00:00.1Z"), 100_000);
        assert_eq!(micros("1970-01-01T00:00:00.1234567899Z"), 123_456);
        let twenty = format!("1970-01-01T00:00:00.{}Z", "9".repeat(20));
        assert_eq!(micros(&twenty), 999_999);
        let too_many = format!("1970-01-01T00:00:00.{}Z", "9".repeat(21));
        assert!(Datetime::validate(&too_many).is_err());
    }

    #[test]
    fn calendar_matches_day_by_day_count() {
        // Walk every day from year 0 to 2400 and check the closed-form day
        // number against a running counter.
        let mut expected = days_since_unix_epoch(0, 1, 1);
        for year in 0..=2400 {
            for month in 1..=12 {
                for day in 1..=days_in_month(year, month) {
                    assert_eq!(days_since_unix_epoch(year, month, day), expected);
                    expected += 1;
                }
            }
        }
        assert_eq!(days_since_unix_epoch(1970, 1, 1), 0);
        assert_eq!(
            days_since_unix_epoch(0, 1, 1),
            MIN_MICROS / MICROS_PER_SECOND / 86_400
        );
    }

    #[test]
    fn leap_days() {
        assert!(Datetime::parse("2000-02-29T00:00:00Z").is_ok());
        assert!(Datetime::parse("2024-02-29T00:00:00Z").is_ok());
        assert!(Datetime::parse("0000-02-29T00:00:00Z").is_ok());
        assert!(Datetime::parse("1900-02-29T00:00:00Z").is_err());
        assert!(Datetime::parse("2023-02-29T00:00:00Z").is_err());
        assert!(Datetime::parse("2023-02-30T00:00:00Z").is_err());
        assert!(Datetime::parse("2023-04-31T00:00:00Z").is_err());
        assert!(Datetime::parse("2023-12-31T00:00:00Z").is_ok());
    }

    #[test]
    fn syntax_only_versus_full_parse() {
        let s = "1985-13-12T23:20:50.123Z";
        assert!(Datetime::validate(s).is_ok());
        assert_eq!(Datetime::parse(s), Err(err("month out of range")));
        assert!(Datetime::try_from(s).is_err());
        assert!(serde_json::from_str::<Datetime>("\"1985-13-12T23:20:50.123Z\"").is_err());
    }

    #[test]
    fn range_edges() {
        for bad in [
            "1985-04-12T24:00:00Z",
            "1985-04-12T23:60:00Z",
            "1985-04-12T23:59:60Z",
            "1985-04-12T23:59:59+24:00",
            "1985-04-12T23:59:59+00:60",
            "0000-01-01T00:00:00.000001+00:01",
        ] {
            assert!(Datetime::parse(bad).is_err(), "{bad} should be rejected");
        }
        for good in [
            "1985-04-12T23:59:59+23:59",
            "1985-04-12T23:59:59-23:59",
            "0000-01-01T00:59:59-00:01",
            "0000-01-01T01:00:00+01:00",
        ] {
            assert!(Datetime::parse(good).is_ok(), "{good} should be accepted");
        }
    }

    #[test]
    fn rejects_non_ascii_without_panicking() {
        for bad in [
            "1985-04-12T23:20:50.1é",
            "é",
            "1985-04-12T23:20:50.\u{0663}Z",
            "",
        ] {
            assert!(
                Datetime::validate(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }
}
