//! Tests of `numeric`.

use super::*;

fn n(s: &str) -> String {
    match s.parse::<Numeric>() {
        Ok(v) => v.0,
        Err(e) => panic!("{s:?} failed to parse: {e}"),
    }
}

fn roundtrip(s: &str) -> String {
    let v: Numeric = s.parse().expect("parse");
    let mut buf = BytesMut::new();
    v.to_sql(&Type::NUMERIC, &mut buf).expect("encode");
    Numeric::from_sql(&Type::NUMERIC, &buf).expect("decode").0
}

#[test]
fn parses_like_numeric_in() {
    // Expected values are what PostgreSQL 15 prints for the same input.
    let cases = [
        ("0", "0"),
        ("-0", "0"),
        ("-0.00", "0.00"),
        ("007.10", "7.10"),
        (".5", "0.5"),
        ("5.", "5"),
        ("+5", "5"),
        ("  12\t", "12"),
        ("1.5e3", "1500"),
        ("1.50e3", "1500"),
        ("1.500e1", "15.00"),
        ("15e-1", "1.5"),
        ("1E+2", "100"),
        ("1e-0", "1"),
        ("1.e5", "100000"),
        ("0.0e5", "0"),
        ("0e200000", "0"),
        ("1e-20", "0.00000000000000000001"),
        ("-12.3400", "-12.3400"),
        ("nan", "NaN"),
        ("NaN", "NaN"),
        ("inf", "Infinity"),
        ("-INF", "-Infinity"),
        ("+infinity", "Infinity"),
        ("-Infinity", "-Infinity"),
    ];
    for (input, expected) in cases {
        assert_eq!(n(input), expected, "input {input:?}");
    }
}

#[test]
fn rejects_junk() {
    for bad in [
        "", " ", ".", "-", "+", "e5", ".e5", "1e", "1e+", "1.2.3", "1,5", "--1", "-nan", "+nan",
        "0x10", "1_000", "١", "1e5x", "infinit", "- 1",
    ] {
        assert!(
            matches!(bad.parse::<Numeric>(), Err(NumericParseError::Syntax(_))),
            "{bad:?} should be rejected"
        );
    }
}

#[test]
fn enforces_postgres_limits() {
    assert_eq!(n("1e131071").len(), 131_072);
    assert_eq!(n("1e-16383").len(), 16_385);
    for too_big in [
        "1e131072",
        "1e-16384",
        "0e-20000",
        "0.00001e-16379",
        "1e99999999999999999999",
        "0e1073741823",
    ] {
        assert_eq!(
            too_big.parse::<Numeric>(),
            Err(NumericParseError::OutOfRange),
            "{too_big}"
        );
    }
}

#[test]
fn conversions() {
    assert_eq!(Numeric::from(-7_i32).as_str(), "-7");
    assert_eq!(Numeric::from(i64::MIN).as_str(), "-9223372036854775808");
    assert_eq!(Numeric::from(u32::MAX).as_str(), "4294967295");
    assert_eq!(Numeric::try_from(0.1).map(|v| v.0), Ok("0.1".into()));
    assert_eq!(Numeric::try_from(-0.0).map(|v| v.0), Ok("0".into()));
    assert_eq!(
        Numeric::try_from(1e-20).map(|v| v.0),
        Ok("0.00000000000000000001".into())
    );
    assert_eq!(
        Numeric::try_from(f64::NAN),
        Err(NumericParseError::NotFinite)
    );
    assert_eq!(
        Numeric::try_from(f64::INFINITY),
        Err(NumericParseError::NotFinite)
    );
    assert!(Numeric::try_from(f64::MAX).is_ok());
    assert!(Numeric::try_from(f64::MIN_POSITIVE / 1e10).is_ok());
    assert_eq!(n("2.5").parse::<f64>().ok(), Some(2.5));
    assert_eq!(Numeric(n("-12.5")).to_f64(), -12.5);
    assert!(Numeric(n("NaN")).to_f64().is_nan());
    assert_eq!(Numeric(n("-inf")).to_f64(), f64::NEG_INFINITY);
    assert_eq!(Numeric(n("1e400")).to_f64(), f64::INFINITY);
}

#[test]
fn binary_roundtrip() {
    for s in [
        "0",
        "0.0",
        "0.00000",
        "-0.5",
        "1",
        "10000",
        "9999.9999",
        "10000.0001",
        "0.0001",
        "0.00001",
        "12345678.87654321",
        "123456789012345678901234567890.123456789",
        "1.000",
        "-1.000",
        "100000000",
        "0.00000000000000000001",
        "NaN",
        "Infinity",
        "-Infinity",
    ] {
        assert_eq!(roundtrip(s), s);
    }
    assert_eq!(roundtrip("1e131071").len(), 131_072);
    assert_eq!(roundtrip("-1e-16383").len(), 16_386);
    let widest = format!("{}.{}", "9".repeat(MAX_INT_DIGITS), "9".repeat(MAX_DSCALE));
    assert_eq!(roundtrip(&widest), widest);
}

#[test]
fn binary_layout() {
    let mut buf = BytesMut::new();
    n_val("-12.3400")
        .to_sql(&Type::NUMERIC, &mut buf)
        .expect("encode");
    // ndigits 2, weight 0, negative, dscale 4, digits 12 and 3400.
    assert_eq!(&buf[..], &[0, 2, 0, 0, 0x40, 0, 0, 4, 0, 12, 0x0D, 0x48]);
}

fn n_val(s: &str) -> Numeric {
    Numeric(n(s))
}

#[test]
fn decodes_non_canonical_input_like_the_server() {
    // Leading/trailing zero groups, digits hidden by dscale, negative zero.
    let raw = |ndigits: u16, weight: i16, sign: u16, dscale: u16, digits: &[u16]| {
        let mut v = Vec::new();
        for w in [ndigits, weight as u16, sign, dscale]
            .into_iter()
            .chain(digits.iter().copied())
        {
            v.extend_from_slice(&w.to_be_bytes());
        }
        decode(&v).expect("decode")
    };
    assert_eq!(raw(3, 1, SIGN_POS, 0, &[0, 12, 0]), "12");
    assert_eq!(raw(2, -1, SIGN_POS, 2, &[1234, 5678]), "0.12");
    assert_eq!(raw(1, -2, SIGN_NEG, 2, &[1]), "0.00");
    assert_eq!(raw(0, 5, SIGN_NEG, 0, &[]), "0");
    assert_eq!(raw(1, 2, SIGN_POS, 1, &[7]), "700000000.0");
    assert_eq!(raw(2, 0, SIGN_NAN, 3, &[1, 2]), "NaN");
}

#[test]
fn malformed_binary_is_an_error() {
    let bad: [&[u8]; 6] = [
        &[],
        &[0, 0, 0, 0, 0, 0, 0],
        &[0, 1, 0, 0, 0, 0, 0, 0],
        &[0, 0, 0, 0, 0x12, 0x34, 0, 0],
        &[0, 0, 0, 0, 0, 0, 0x40, 0],
        &[0, 1, 0, 0, 0, 0, 0, 0, 0x27, 0x10],
    ];
    for raw in bad {
        assert!(Numeric::from_sql(&Type::NUMERIC, raw).is_err(), "{raw:?}");
    }
}

/// Small deterministic generator so the test needs no extra crates.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn random_binary_never_panics_and_decodes_canonically() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut decoded = 0;
    for round in 0..20_000 {
        let mut raw: Vec<u8>;
        if round % 2 == 0 {
            let len = (rng.next() % 24) as usize;
            raw = (0..len).map(|_| rng.next() as u8).collect();
        } else {
            // Mostly well-formed headers, so decoding gets past the checks.
            let nd = (rng.next() % 6) as u16;
            let signs = [SIGN_POS, SIGN_NEG, SIGN_NAN, SIGN_PINF, SIGN_NINF, 0x1234];
            let sign = signs[(rng.next() % 6) as usize];
            let weight = (rng.next() % 20) as i16 - 10;
            let dscale = (rng.next() % 30) as u16;
            raw = Vec::new();
            for w in [nd, weight as u16, sign, dscale] {
                raw.extend_from_slice(&w.to_be_bytes());
            }
            for _ in 0..nd {
                raw.extend_from_slice(&((rng.next() % 10_050) as u16).to_be_bytes());
            }
            raw.truncate(raw.len() - (rng.next() % 3) as usize);
        }
        if let Ok(v) = Numeric::from_sql(&Type::NUMERIC, &raw) {
            decoded += 1;
            // Whatever decodes must be canonical text and survive a round trip.
            assert_eq!(n(v.as_str()), v.0, "{raw:?}");
            let mut buf = BytesMut::new();
            v.to_sql(&Type::NUMERIC, &mut buf).expect("encode");
            assert_eq!(Numeric::from_sql(&Type::NUMERIC, &buf).ok(), Some(v));
        }
    }
    // Guards against the generator drifting into only-garbage input.
    assert!(decoded > 2_000, "only {decoded} inputs decoded");
}

#[test]
fn truncated_encodings_are_errors() {
    for s in ["123456789.123456789", "-1", "0.0001", "NaN"] {
        let mut buf = BytesMut::new();
        n_val(s).to_sql(&Type::NUMERIC, &mut buf).expect("encode");
        for cut in 0..buf.len() {
            assert!(
                Numeric::from_sql(&Type::NUMERIC, &buf[..cut]).is_err(),
                "{s} cut at {cut}"
            );
        }
    }
}

#[test]
fn serde() {
    assert_eq!(
        serde_json::to_string(&n_val("-1.50")).ok(),
        Some("\"-1.50\"".into())
    );
    let from = |json: &str| serde_json::from_str::<Numeric>(json).map(|v| v.0).ok();
    assert_eq!(from("\"1.5e1\""), Some("15".into()));
    assert_eq!(from("\"NaN\""), Some("NaN".into()));
    assert_eq!(from("-42"), Some("-42".into()));
    assert_eq!(
        from("18446744073709551615"),
        Some("18446744073709551615".into())
    );
    assert_eq!(from("2.25"), Some("2.25".into()));
    assert_eq!(from("1e-7"), Some("0.0000001".into()));
    assert_eq!(from("\"abc\""), None);
    assert_eq!(from("true"), None);
    assert_eq!(from("null"), None);
}

#[test]
fn accepts_only_numeric() {
    assert!(<Numeric as FromSql>::accepts(&Type::NUMERIC));
    assert!(!<Numeric as FromSql>::accepts(&Type::FLOAT8));
    assert!(<Numeric as ToSql>::accepts(&Type::NUMERIC));
    assert!(!<Numeric as ToSql>::accepts(&Type::TEXT));
}
