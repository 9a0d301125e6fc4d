use std::error::Error;
use std::fmt;
use std::str::FromStr;

use bytes::{BufMut, BytesMut};
use postgres_types::{to_sql_checked, FromSql, IsNull, ToSql, Type};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{snippet, BoxError};

// Sign word of the binary format (src/backend/utils/adt/numeric.c).
const SIGN_POS: u16 = 0x0000;
const SIGN_NEG: u16 = 0x4000;
const SIGN_NAN: u16 = 0xC000;
const SIGN_PINF: u16 = 0xD000;
const SIGN_NINF: u16 = 0xF000;

/// Digits are base 10000, i.e. four decimal digits per wire digit.
const NBASE: u16 = 10_000;
const DEC_DIGITS: usize = 4;

/// The weight is an `int16`, so at most 32768 base-10000 integer digits.
const MAX_INT_DIGITS: usize = (i16::MAX as usize + 1) * DEC_DIGITS;
/// `NUMERIC_DSCALE_MAX`: the display scale shares a 16-bit word with flags.
const MAX_DSCALE: usize = 0x3FFF;
/// numeric_in rejects exponents this large before looking at the digits.
const MAX_EXPONENT: i64 = (i32::MAX / 2) as i64;

/// An exact PostgreSQL `numeric`, kept as the server's canonical text.
///
/// The scale is preserved (`1.000` stays `1.000`), so equality and hashing
/// are by representation: `1.0 != 1.00` here even though PostgreSQL's `=`
/// says they are equal.
///
/// ```
/// # use pgdbm::types::Numeric;
/// let n: Numeric = "-1.5e2".parse().unwrap();
/// assert_eq!(n.as_str(), "-150");
/// assert_eq!(Numeric::from(10_i32).to_string(), "10");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Numeric(String);

/// Why a string or float could not become a [`Numeric`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NumericParseError {
    /// Not a number PostgreSQL would accept.
    #[error("invalid input syntax for numeric: {0:?}")]
    Syntax(String),
    #[error("value overflows numeric format (max 131072 digits before and 16383 after the decimal point)")]
    /// Too many digits for PostgreSQL's `numeric` format.
    OutOfRange,
    /// A float NaN or infinity, which `TryFrom<f64>` refuses.
    #[error("only finite floats can become a numeric")]
    NotFinite,
}

impl Numeric {
    /// The canonical text, exactly as PostgreSQL prints it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Nearest `f64`; `NaN` and the infinities map to their float twins and
    /// values beyond the `f64` range become infinite.
    pub fn to_f64(&self) -> f64 {
        match self.0.as_str() {
            "NaN" => f64::NAN,
            "Infinity" => f64::INFINITY,
            "-Infinity" => f64::NEG_INFINITY,
            // The canonical text is always valid float syntax.
            s => s.parse().unwrap_or(f64::NAN),
        }
    }
}

impl fmt::Display for Numeric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Numeric {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Whitespace as PostgreSQL's `isspace` sees it (includes vertical tab).
fn is_pg_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

impl FromStr for Numeric {
    type Err = NumericParseError;

    /// Accepts what PostgreSQL 15's `numeric_in` accepts and normalises it
    /// the same way, so `"1.50e1"` becomes `"15.0"`.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let syntax = || NumericParseError::Syntax(snippet(input));
        let s = input.trim_matches(is_pg_space);

        if s.eq_ignore_ascii_case("nan") {
            return Ok(Numeric("NaN".into()));
        }
        let (negative, body) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        if body.eq_ignore_ascii_case("infinity") || body.eq_ignore_ascii_case("inf") {
            let text = if negative { "-Infinity" } else { "Infinity" };
            return Ok(Numeric(text.into()));
        }

        let (mantissa, exponent) = match body.find(['e', 'E']) {
            Some(at) => (
                &body[..at],
                parse_exponent(&body[at + 1..]).ok_or_else(syntax)?,
            ),
            None => (body, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if int.len() + frac.len() == 0 || !all_digits(int) || !all_digits(frac) {
            return Err(syntax());
        }
        if exponent.abs() >= MAX_EXPONENT {
            return Err(NumericParseError::OutOfRange);
        }

        // Like numeric_in, the exponent only moves the point: the scale
        // shrinks by it but never below zero.
        let dscale = (frac.len() as i64 - exponent).max(0);
        if dscale > MAX_DSCALE as i64 {
            return Err(NumericParseError::OutOfRange);
        }
        let dscale = dscale as usize;

        let digits: Vec<u8> = int.bytes().chain(frac.bytes()).map(|b| b - b'0').collect();
        let leading = digits.iter().take_while(|&&d| d == 0).count();
        let digits = &digits[leading..];
        // Position of the decimal point within `digits`.
        let point = int.len() as i64 + exponent - leading as i64;

        let mut out = String::new();
        if digits.is_empty() {
            // Zero has no sign and no weight, so a huge exponent is fine.
            out.push('0');
        } else {
            if point > MAX_INT_DIGITS as i64 {
                return Err(NumericParseError::OutOfRange);
            }
            if negative {
                out.push('-');
            }
            if point <= 0 {
                out.push('0');
            }
            for i in 0..point.max(0) {
                out.push(digit_char(digits, i));
            }
        }
        if dscale > 0 {
            out.push('.');
            for i in point..point + dscale as i64 {
                out.push(digit_char(digits, i));
            }
        }
        Ok(Numeric(out))
    }
}

/// Digit `i` of `digits`, with implied zeros on both sides.
fn digit_char(digits: &[u8], i: i64) -> char {
    let d = usize::try_from(i)
        .ok()
        .and_then(|i| digits.get(i))
        .copied()
        .unwrap_or(0);
    char::from(b'0' + d)
}

/// `[+-]digits`, saturating so absurd exponents end up as "out of range"
/// rather than as a syntax error.
fn parse_exponent(s: &str) -> Option<i64> {
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let magnitude = digits.bytes().fold(0i64, |acc, b| {
        acc.saturating_mul(10).saturating_add(i64::from(b - b'0'))
    });
    Some(if negative { -magnitude } else { magnitude })
}

macro_rules! from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Numeric {
            fn from(v: $t) -> Self {
                // Integer Display is already canonical numeric text.
                Numeric(v.to_string())
            }
        }
    )*};
}
from_int!(i32, i64, u32);

impl TryFrom<f64> for Numeric {
    type Error = NumericParseError;

    /// Uses the shortest decimal that round-trips to the same `f64`, so
    /// `0.1_f64` becomes `0.1`, not `0.1000000000000000055…`.
    fn try_from(v: f64) -> Result<Self, Self::Error> {
        if !v.is_finite() {
            return Err(NumericParseError::NotFinite);
        }
        // f64's Display never uses exponent notation and is at most ~330
        // digits, well within numeric's limits.
        v.to_string().parse()
    }
}

impl<'a> FromSql<'a> for Numeric {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        decode(raw).map(Numeric)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

fn read_u16(raw: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*raw.get(at)?, *raw.get(at + 1)?]))
}

/// Binary `numeric` to canonical text, applying the same truncation to
/// `dscale` and zero normalisation as `numeric_recv` followed by
/// `numeric_out`, so non-canonical but valid input prints like the server.
fn decode(raw: &[u8]) -> Result<String, BoxError> {
    let header = |at| read_u16(raw, at).ok_or("numeric: binary value shorter than its header");
    // ndigits is read as unsigned by the server: it can exceed i16::MAX.
    let ndigits = usize::from(header(0)?);
    let weight = i64::from(header(2)? as i16);
    let sign = header(4)?;
    let dscale = usize::from(header(6)?);

    if raw.len() != 8 + 2 * ndigits {
        return Err(format!(
            "numeric: expected {} digit bytes, got {}",
            2 * ndigits,
            raw.len() - 8
        )
        .into());
    }
    if dscale > MAX_DSCALE {
        return Err("numeric: invalid scale".into());
    }
    match sign {
        SIGN_NAN => return Ok("NaN".into()),
        SIGN_PINF => return Ok("Infinity".into()),
        SIGN_NINF => return Ok("-Infinity".into()),
        SIGN_POS | SIGN_NEG => {}
        _ => return Err("numeric: invalid sign".into()),
    }
    let digits: Vec<u16> = raw[8..]
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    if digits.iter().any(|&d| d >= NBASE) {
        return Err("numeric: digit out of range".into());
    }
    let digit_at = |i: i64| {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i))
            .copied()
            .unwrap_or(0)
    };

    let mut int_part = String::new();
    for i in 0..=weight {
        push_group(&mut int_part, digit_at(i));
    }
    let int_part = int_part.trim_start_matches('0');

    let mut frac = String::new();
    let groups = dscale.div_ceil(DEC_DIGITS) as i64;
    for g in 0..groups {
        push_group(&mut frac, digit_at(weight + 1 + g));
    }
    frac.truncate(dscale);

    let is_zero = int_part.is_empty() && frac.bytes().all(|b| b == b'0');
    let mut out = String::with_capacity(int_part.len() + frac.len() + 3);
    if sign == SIGN_NEG && !is_zero {
        out.push('-');
    }
    out.push_str(if int_part.is_empty() { "0" } else { int_part });
    if dscale > 0 {
        out.push('.');
        out.push_str(&frac);
    }
    Ok(out)
}

fn push_group(s: &mut String, group: u16) {
    for div in [1000, 100, 10, 1] {
        // group < NBASE, so each quotient is a single decimal digit.
        s.push(char::from(b'0' + ((group / div) % 10) as u8));
    }
}

impl ToSql for Numeric {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        let (ndigits, weight, sign, dscale, digits) = encode(&self.0)?;
        out.reserve(8 + 2 * digits.len());
        out.put_u16(ndigits);
        out.put_i16(weight);
        out.put_u16(sign);
        out.put_u16(dscale);
        for d in digits {
            out.put_u16(d);
        }
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }

    to_sql_checked!();
}

type Encoded = (u16, i16, u16, u16, Vec<u16>);

/// Canonical text to the binary fields, stripping leading and trailing
/// zero groups like `numeric_send` does.
fn encode(text: &str) -> Result<Encoded, BoxError> {
    let special = |sign| Ok((0, 0, sign, 0, Vec::new()));
    let (sign, unsigned) = match text {
        "NaN" => return special(SIGN_NAN),
        "Infinity" => return special(SIGN_PINF),
        "-Infinity" => return special(SIGN_NINF),
        s => match s.strip_prefix('-') {
            Some(rest) => (SIGN_NEG, rest),
            None => (SIGN_POS, s),
        },
    };
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let valid = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    // The type's constructors guarantee canonical text; this only guards
    // against that invariant ever being broken.
    if int.is_empty() || !valid(int) || !valid(frac) || frac.len() > MAX_DSCALE {
        return Err(format!("numeric: not canonical numeric text: {:?}", snippet(text)).into());
    }

    let int_pad = (DEC_DIGITS - int.len() % DEC_DIGITS) % DEC_DIGITS;
    let frac_pad = (DEC_DIGITS - frac.len() % DEC_DIGITS) % DEC_DIGITS;
    let decimal: Vec<u16> = std::iter::repeat_n(0, int_pad)
        .chain(int.bytes().map(|b| u16::from(b - b'0')))
        .chain(frac.bytes().map(|b| u16::from(b - b'0')))
        .chain(std::iter::repeat_n(0, frac_pad))
        .collect();
    let groups: Vec<u16> = decimal
        .chunks_exact(DEC_DIGITS)
        .map(|c| c.iter().fold(0, |acc, &d| acc * 10 + d))
        .collect();

    let int_groups = (int.len() + int_pad) / DEC_DIGITS;
    let leading = groups.iter().take_while(|&&g| g == 0).count();
    let trailing = groups[leading..]
        .iter()
        .rev()
        .take_while(|&&g| g == 0)
        .count();
    let significant = groups[leading..groups.len() - trailing].to_vec();

    let (sign, weight) = if significant.is_empty() {
        (SIGN_POS, 0)
    } else {
        (sign, int_groups as i64 - 1 - leading as i64)
    };
    let weight = i16::try_from(weight).map_err(|_| "numeric: value overflows numeric format")?;
    let ndigits = u16::try_from(significant.len()).map_err(|_| "numeric: too many digits")?;
    // frac.len() <= MAX_DSCALE was checked above.
    Ok((ndigits, weight, sign, frac.len() as u16, significant))
}

impl Serialize for Numeric {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // A string, because a JSON number would lose precision in most
        // consumers.
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Numeric {
    /// Accepts a numeric string or any number.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NumericVisitor)
    }
}

struct NumericVisitor;

impl Visitor<'_> for NumericVisitor {
    type Value = Numeric;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a numeric string or a number")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Numeric, E> {
        v.parse().map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Numeric, E> {
        Ok(Numeric(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Numeric, E> {
        Ok(Numeric(v.to_string()))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Numeric, E> {
        Ok(Numeric(v.to_string()))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Numeric, E> {
        Ok(Numeric(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Numeric, E> {
        Numeric::try_from(v).map_err(E::custom)
    }
}

#[cfg(test)]
#[path = "numeric_tests.rs"]
mod tests;
