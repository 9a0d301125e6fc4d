use std::error::Error;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use postgres_types::{to_sql_checked, FromSql, IsNull, ToSql, Type};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use super::snippet;

const USECS_PER_SEC: i64 = 1_000_000;
const USECS_PER_MINUTE: i64 = 60 * USECS_PER_SEC;
const USECS_PER_HOUR: i64 = 60 * USECS_PER_MINUTE;
const USECS_PER_DAY: i128 = 24 * USECS_PER_HOUR as i128;

/// A PostgreSQL `interval`: months, days and microseconds kept apart, as the
/// server does, because a month has no fixed number of days and (with time
/// zones) a day no fixed number of hours.
///
/// Equality is field by field, so `1 day != 24:00:00` here although
/// PostgreSQL's `=` treats them as equal.
///
/// ```
/// # use pgdbm::types::Interval;
/// let iv = Interval::new(14, -1, 2 * 3_600_000_000);
/// assert_eq!(iv.to_string(), "1 year 2 mons -1 days +02:00:00");
/// assert_eq!("1 year 2 mons -1 days +02:00:00".parse::<Interval>().ok(), Some(iv));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Interval {
    /// Months (a year is 12 of them).
    pub months: i32,
    /// Days, kept apart from time because of daylight-saving shifts.
    pub days: i32,
    /// Time of day part, in microseconds; may exceed 24 hours.
    pub microseconds: i64,
}

/// Why an [`Interval`] could not be parsed or converted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IntervalError {
    /// Text that is not an interval this parser understands.
    #[error("invalid input syntax for interval: {0:?}")]
    Syntax(String),
    /// A field does not fit its integer type.
    #[error("interval out of range")]
    OutOfRange,
    /// Converting to `Duration` with a month part.
    #[error("interval has months, which have no fixed length")]
    HasMonths,
    /// Converting a negative total to `Duration`.
    #[error("interval is negative")]
    Negative,
    /// Converting `infinity` or `-infinity` to `Duration`.
    #[error("interval is infinite")]
    Infinite,
}

impl Interval {
    /// `infinity` as PostgreSQL 17+ stores it (every field at its maximum).
    pub const INFINITY: Interval = Interval::new(i32::MAX, i32::MAX, i64::MAX);
    /// `-infinity` as PostgreSQL 17+ stores it (every field at its minimum).
    pub const NEG_INFINITY: Interval = Interval::new(i32::MIN, i32::MIN, i64::MIN);

    /// From the three stored fields.
    pub const fn new(months: i32, days: i32, microseconds: i64) -> Self {
        Interval {
            months,
            days,
            microseconds,
        }
    }

    /// Time-only interval; nanoseconds below a microsecond are truncated
    /// because that is the server's resolution.
    pub fn from_std(d: Duration) -> Result<Self, IntervalError> {
        let micros = i64::try_from(d.as_micros()).map_err(|_| IntervalError::OutOfRange)?;
        Ok(Interval::new(0, 0, micros))
    }

    /// False for [`Interval::INFINITY`] and [`Interval::NEG_INFINITY`].
    pub fn is_finite(&self) -> bool {
        *self != Self::INFINITY && *self != Self::NEG_INFINITY
    }
}

/// Counts each day as exactly 24 hours (what PostgreSQL's interval
/// comparison does too); fails if there are months, if the total is
/// negative, or if the interval is infinite.
impl TryFrom<Interval> for Duration {
    type Error = IntervalError;

    fn try_from(iv: Interval) -> Result<Self, Self::Error> {
        if !iv.is_finite() {
            return Err(IntervalError::Infinite);
        }
        if iv.months != 0 {
            return Err(IntervalError::HasMonths);
        }
        let total = i128::from(iv.days) * USECS_PER_DAY + i128::from(iv.microseconds);
        let total = u128::try_from(total).map_err(|_| IntervalError::Negative)?;
        let secs =
            u64::try_from(total / USECS_PER_SEC as u128).map_err(|_| IntervalError::OutOfRange)?;
        // The remainder is below one million, so it fits and scales to nanos.
        let nanos = (total % USECS_PER_SEC as u128) as u32 * 1000;
        Ok(Duration::new(secs, nanos))
    }
}

impl fmt::Display for Interval {
    /// Mirrors `EncodeInterval` for `IntervalStyle = postgres`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Self::INFINITY {
            return f.write_str("infinity");
        }
        if *self == Self::NEG_INFINITY {
            return f.write_str("-infinity");
        }
        // C division truncates toward zero, and so does Rust's, which keeps
        // every unit carrying the sign of its source field.
        let t = self.microseconds;
        let hours = t / USECS_PER_HOUR;
        let minutes = t % USECS_PER_HOUR / USECS_PER_MINUTE;
        let seconds = t % USECS_PER_MINUTE / USECS_PER_SEC;
        let fraction = t % USECS_PER_SEC;

        let mut state = PartState {
            is_zero: true,
            is_before: false,
        };
        state.add(f, i64::from(self.months / 12), "year")?;
        state.add(f, i64::from(self.months % 12), "mon")?;
        state.add(f, i64::from(self.days), "day")?;
        if state.is_zero || t != 0 {
            let sep = if state.is_zero { "" } else { " " };
            // The time gets an explicit '+' only right after a negative
            // date part, like the per-part signs below.
            let sign = if t < 0 {
                "-"
            } else if state.is_before {
                "+"
            } else {
                ""
            };
            write!(
                f,
                "{sep}{sign}{:02}:{:02}:{:02}",
                hours.unsigned_abs(),
                minutes.unsigned_abs(),
                seconds.unsigned_abs()
            )?;
            if fraction != 0 {
                let digits = format!("{:06}", fraction.unsigned_abs());
                write!(f, ".{}", digits.trim_end_matches('0'))?;
            }
        }
        Ok(())
    }
}

/// State of `AddPostgresIntPart`: whether anything was printed yet, and
/// whether the previous part was negative (the next positive one then
/// gets a '+').
struct PartState {
    is_zero: bool,
    is_before: bool,
}

impl PartState {
    fn add(&mut self, f: &mut fmt::Formatter<'_>, value: i64, unit: &str) -> fmt::Result {
        if value == 0 {
            return Ok(());
        }
        let sep = if self.is_zero { "" } else { " " };
        let plus = if self.is_before && value > 0 { "+" } else { "" };
        // PostgreSQL pluralises everything but exactly 1, hence "-1 days".
        let plural = if value != 1 { "s" } else { "" };
        write!(f, "{sep}{plus}{value} {unit}{plural}")?;
        self.is_before = value < 0;
        self.is_zero = false;
        Ok(())
    }
}

impl FromStr for Interval {
    type Err = IntervalError;

    /// Parses the `postgres` style that `Display` writes, plus the usual
    /// unit spellings (`years`, `month`, `weeks`, `hours`, `min`, `seconds`,
    /// ...), a leading `@` and a trailing `ago`. Unit quantities must be
    /// integers; the time part may have up to six fractional digits.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let syntax = || IntervalError::Syntax(snippet(input));
        let s = input.trim();
        match s.to_ascii_lowercase().as_str() {
            "infinity" | "+infinity" => return Ok(Self::INFINITY),
            "-infinity" => return Ok(Self::NEG_INFINITY),
            _ => {}
        }

        let mut tokens: Vec<&str> = s.split_ascii_whitespace().collect();
        if tokens.first() == Some(&"@") {
            tokens.remove(0);
        }
        let ago = tokens.last().is_some_and(|t| t.eq_ignore_ascii_case("ago"));
        if ago {
            tokens.pop();
        }
        if tokens.is_empty() {
            return Err(syntax());
        }

        let (mut months, mut days, mut micros) = (0i128, 0i128, 0i128);
        let mut seen_time = false;
        let mut it = tokens.into_iter();
        while let Some(token) = it.next() {
            if token.contains(':') {
                if seen_time {
                    return Err(syntax());
                }
                seen_time = true;
                micros += parse_time(token).ok_or_else(syntax)?;
                continue;
            }
            let value = i128::from(parse_int(token).ok_or_else(syntax)?);
            let unit = it.next().ok_or_else(syntax)?.to_ascii_lowercase();
            match unit.as_str() {
                "year" | "years" | "yr" | "yrs" => months += value * 12,
                "mon" | "mons" | "month" | "months" => months += value,
                "week" | "weeks" => days += value * 7,
                "day" | "days" => days += value,
                "hour" | "hours" | "hr" | "hrs" => micros += value * i128::from(USECS_PER_HOUR),
                "min" | "mins" | "minute" | "minutes" => {
                    micros += value * i128::from(USECS_PER_MINUTE)
                }
                "sec" | "secs" | "second" | "seconds" => {
                    micros += value * i128::from(USECS_PER_SEC)
                }
                "millisecond" | "milliseconds" | "ms" => micros += value * 1000,
                "microsecond" | "microseconds" | "us" => micros += value,
                _ => return Err(syntax()),
            }
        }
        if ago {
            (months, days, micros) = (-months, -days, -micros);
        }
        let out_of_range = |_| IntervalError::OutOfRange;
        Ok(Interval::new(
            i32::try_from(months).map_err(out_of_range)?,
            i32::try_from(days).map_err(out_of_range)?,
            i64::try_from(micros).map_err(out_of_range)?,
        ))
    }
}

/// `[+-]digits` that fits an `i64`; the i128 sums in the caller cannot
/// overflow with a handful of such values.
fn parse_int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `[+-]H:MM[:SS[.ffffff]]` in microseconds; the sign covers the whole
/// field, as in PostgreSQL.
fn parse_time(s: &str) -> Option<i128> {
    let (negative, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (hms, fraction) = match body.split_once('.') {
        Some((hms, fraction)) => (hms, Some(fraction)),
        None => (body, None),
    };
    let mut parts = hms.split(':');
    let number = |p: &str, max_len: usize| -> Option<i128> {
        if p.is_empty() || p.len() > max_len || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse().ok()
    };
    let hours = number(parts.next()?, 19)?;
    let minutes = number(parts.next()?, 2).filter(|&m| m < 60)?;
    let seconds = match parts.next() {
        Some(p) => number(p, 2).filter(|&s| s < 60)?,
        None => 0,
    };
    if parts.next().is_some() {
        return None;
    }
    let micros = match fraction {
        // A fraction needs the seconds field, or "01:02.5" would be ambiguous.
        Some(_) if hms.matches(':').count() != 2 => return None,
        Some(fr) => number(fr, 6)? * 10i128.pow(6 - fr.len() as u32),
        None => 0,
    };
    let total = hours * i128::from(USECS_PER_HOUR)
        + minutes * i128::from(USECS_PER_MINUTE)
        + seconds * i128::from(USECS_PER_SEC)
        + micros;
    Some(if negative { -total } else { total })
}

impl<'a> FromSql<'a> for Interval {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        // Wire order is time, then days, then months (interval_send).
        let raw: &[u8; 16] = raw
            .try_into()
            .map_err(|_| format!("interval: expected 16 bytes, got {}", raw.len()))?;
        let [t0, t1, t2, t3, t4, t5, t6, t7, d0, d1, d2, d3, m0, m1, m2, m3] = *raw;
        Ok(Interval::new(
            i32::from_be_bytes([m0, m1, m2, m3]),
            i32::from_be_bytes([d0, d1, d2, d3]),
            i64::from_be_bytes([t0, t1, t2, t3, t4, t5, t6, t7]),
        ))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }
}

impl ToSql for Interval {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        out.reserve(16);
        out.put_i64(self.microseconds);
        out.put_i32(self.days);
        out.put_i32(self.months);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }

    to_sql_checked!();
}

impl Serialize for Interval {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Interval {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = USECS_PER_HOUR;

    #[test]
    fn displays_like_postgres() {
        // Expected strings are PostgreSQL 15 output for the same values.
        let cases = [
            (Interval::new(0, 0, 0), "00:00:00"),
            (Interval::new(14, 0, 0), "1 year 2 mons"),
            (Interval::new(0, -3, 0), "-3 days"),
            (Interval::new(0, 1, -2 * H), "1 day -02:00:00"),
            (Interval::new(0, 0, 1), "00:00:00.000001"),
            (
                Interval::new(-14, 3, -(4 * H + 5 * 60_000_000 + 6_000_000)),
                "-1 years -2 mons +3 days -04:05:06",
            ),
            (Interval::new(178_000_000 * 12, 0, 0), "178000000 years"),
            (Interval::new(0, 0, -1_000_000), "-00:00:01"),
            (Interval::new(1, 0, 0), "1 mon"),
            (Interval::new(-1, 0, 0), "-1 mons"),
            (Interval::new(0, -1, 0), "-1 days"),
            (Interval::new(0, 1, 0), "1 day"),
            (Interval::new(0, -1, H), "-1 days +01:00:00"),
            (Interval::new(12, -1, 0), "1 year -1 days"),
            (Interval::new(-12, 1, 0), "-1 years +1 day"),
            (Interval::new(0, 0, 123_456_789 * H), "123456789:00:00"),
            (Interval::new(0, 0, 500_000), "00:00:00.5"),
            (Interval::new(0, 0, -500_000), "-00:00:00.5"),
            (Interval::new(-12, 0, 1_000_000), "-1 years +00:00:01"),
            (Interval::new(0, -1, -1_000_000), "-1 days -00:00:01"),
            (Interval::new(0, 0, 3_723_000_100), "01:02:03.0001"),
            (Interval::new(0, 0, i64::MAX), "2562047788:00:54.775807"),
            (Interval::new(0, 0, i64::MIN), "-2562047788:00:54.775808"),
            (
                Interval::new(i32::MIN, i32::MIN, 0),
                "-178956970 years -8 mons -2147483648 days",
            ),
            (Interval::INFINITY, "infinity"),
            (Interval::NEG_INFINITY, "-infinity"),
        ];
        for (iv, text) in cases {
            assert_eq!(iv.to_string(), text, "{iv:?}");
            assert_eq!(text.parse::<Interval>(), Ok(iv), "{text}");
        }
    }

    #[test]
    fn parses_other_spellings() {
        let p = |s: &str| s.parse::<Interval>();
        assert_eq!(p("@ 1 day ago"), Ok(Interval::new(0, -1, 0)));
        assert_eq!(p("2 weeks 3 hours"), Ok(Interval::new(0, 14, 3 * H)));
        assert_eq!(p("1 Year 1 MONTH"), Ok(Interval::new(13, 0, 0)));
        assert_eq!(p("01:02"), Ok(Interval::new(0, 0, H + 2 * 60_000_000)));
        assert_eq!(p("  +1 day  "), Ok(Interval::new(0, 1, 0)));
        assert_eq!(
            p("90 min 5 sec 7 ms 3 us"),
            Ok(Interval::new(0, 0, 5_405_007_003))
        );
    }

    #[test]
    fn rejects_junk() {
        for bad in [
            "",
            "@",
            "ago",
            "1",
            "1 fortnight",
            "day",
            "1.5 days",
            "1 day 2",
            "00:00:00 00:00:01",
            "00:60:00",
            "00:00:60",
            "00:00:00.1234567",
            "1:2:3:4",
            "12.5",
            "01:02.5",
            "--1 day",
            "+ 1 day",
            "1 day ago ago",
            "x",
        ] {
            assert!(
                matches!(bad.parse::<Interval>(), Err(IntervalError::Syntax(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            "2147483648 mons".parse::<Interval>(),
            Err(IntervalError::OutOfRange)
        );
        assert_eq!(
            "178956971 years".parse::<Interval>(),
            Err(IntervalError::OutOfRange)
        );
        assert_eq!(
            "2562047789:00:00".parse::<Interval>(),
            Err(IntervalError::OutOfRange)
        );
        assert!("99999999999999999999 days".parse::<Interval>().is_err());
    }

    #[test]
    fn std_duration() {
        let d = Duration::new(90_061, 1_500);
        assert_eq!(
            Interval::from_std(d),
            Ok(Interval::new(0, 0, 90_061_000_001))
        );
        assert_eq!(
            Interval::from_std(Duration::MAX),
            Err(IntervalError::OutOfRange)
        );
        let back = |iv| Duration::try_from(iv);
        assert_eq!(
            back(Interval::new(0, 1, -2 * H)),
            Ok(Duration::from_secs(22 * 3600))
        );
        assert_eq!(back(Interval::new(0, 0, 1)), Ok(Duration::from_micros(1)));
        assert_eq!(back(Interval::new(1, 0, 0)), Err(IntervalError::HasMonths));
        assert_eq!(back(Interval::new(0, 0, -1)), Err(IntervalError::Negative));
        assert_eq!(back(Interval::INFINITY), Err(IntervalError::Infinite));
        assert_eq!(
            back(Interval::new(0, i32::MAX, i64::MAX)).map(|d| d.as_secs()),
            Ok(i32::MAX as u64 * 86_400 + 9_223_372_036_854)
        );
    }

    #[test]
    fn binary_roundtrip_and_layout() {
        let iv = Interval::new(-14, 3, -14_706_000_000);
        let mut buf = BytesMut::new();
        iv.to_sql(&Type::INTERVAL, &mut buf).expect("encode");
        assert_eq!(&buf[..8], &(-14_706_000_000_i64).to_be_bytes());
        assert_eq!(&buf[8..12], &3_i32.to_be_bytes());
        assert_eq!(&buf[12..], &(-14_i32).to_be_bytes());
        assert_eq!(Interval::from_sql(&Type::INTERVAL, &buf).ok(), Some(iv));
        for cut in 0..buf.len() {
            assert!(Interval::from_sql(&Type::INTERVAL, &buf[..cut]).is_err());
        }
        let mut long = buf.to_vec();
        long.push(0);
        assert!(Interval::from_sql(&Type::INTERVAL, &long).is_err());
    }

    #[test]
    fn random_values_display_and_parse_back() {
        let mut x = 0x2545_F491_4F6C_DD1D_u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let iv = Interval::new(
                next() as i32 >> (next() % 32),
                next() as i32 >> (next() % 32),
                next() as i64 >> (next() % 64),
            );
            let text = iv.to_string();
            assert_eq!(text.parse::<Interval>(), Ok(iv), "{text}");
            // Any 16 bytes are a valid interval, and decoding must not panic.
            let raw: Vec<u8> = (0..(next() % 20)).map(|_| next() as u8).collect();
            assert_eq!(
                Interval::from_sql(&Type::INTERVAL, &raw).is_ok(),
                raw.len() == 16
            );
        }
    }

    #[test]
    fn serde() {
        let iv = Interval::new(0, 1, -2 * H);
        let json = serde_json::to_string(&iv).expect("serialize");
        assert_eq!(json, "\"1 day -02:00:00\"");
        assert_eq!(serde_json::from_str::<Interval>(&json).ok(), Some(iv));
        assert!(serde_json::from_str::<Interval>("\"soon\"").is_err());
        assert!(serde_json::from_str::<Interval>("5").is_err());
    }
}
