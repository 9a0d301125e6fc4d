//! Round trips `Numeric`, `Interval` and `Inet` through a real server and
//! compares with PostgreSQL's own text output. Needs a running PostgreSQL;
//! set `DATABASE_URL` to point elsewhere than the local default.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use pgdbm::types::{Inet, Interval, Numeric};
use tokio_postgres::types::{FromSqlOwned, ToSql, Type};
use tokio_postgres::{Client, NoTls};

async fn connect() -> Client {
    // DATABASE_URL, else the local server, else a throwaway one for this test process.
    let url = pgdbm::testing::server_url().expect("a PostgreSQL server");
    let (client, connection) = tokio_postgres::connect(&url, NoTls)
        .await
        .expect("connect to PostgreSQL");
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("connection error: {e}");
        }
    });
    client
}

/// SQL rendering `expr` with the type's output function, which is what
/// `Display` mirrors. That is `::text` except for inet/cidr, whose text cast
/// is the `text(inet)` function and always shows the prefix (`1.2.3.4/32`).
fn as_text(sql_type: &str, expr: &str) -> String {
    match sql_type {
        "inet" | "cidr" => format!("format('%s', {expr})"),
        _ => format!("{expr}::text"),
    }
}

/// For each literal: the server's value must decode to something printing
/// like the server's `::text`, and sending it back must give that text again.
async fn check_literals<T>(client: &Client, sql_type: &str, ty: Type, literals: &[&str])
where
    T: FromSqlOwned + ToSql + Sync + std::fmt::Display + std::fmt::Debug + PartialEq,
{
    // The literal travels as text and is cast server-side, exactly like
    // 'literal'::type in SQL.
    let from_server = client
        .prepare(&format!(
            "SELECT $1::text::{sql_type}, {}",
            as_text(sql_type, &format!("$1::text::{sql_type}"))
        ))
        .await
        .expect("prepare");
    let to_server = client
        .prepare_typed(
            &format!(
                "SELECT {}, $1::{sql_type}",
                as_text(sql_type, &format!("$1::{sql_type}"))
            ),
            &[ty],
        )
        .await
        .expect("prepare");
    for literal in literals {
        let row = client
            .query_one(&from_server, &[literal])
            .await
            .unwrap_or_else(|e| panic!("{literal}: {e}"));
        let value: T = row.get(0);
        let server_text: String = row.get(1);
        assert_eq!(
            value.to_string(),
            server_text,
            "{sql_type} {literal:?}: decoded {value:?}"
        );

        let row = client
            .query_one(&to_server, &[&value])
            .await
            .unwrap_or_else(|e| panic!("{literal}: {e}"));
        assert_eq!(
            row.get::<_, String>(0),
            server_text,
            "{sql_type} {literal:?} sent back"
        );
        assert_eq!(
            row.get::<_, T>(1),
            value,
            "{sql_type} {literal:?} binary round trip"
        );
    }
}

/// Sends many values in one array and compares the server's text for each
/// with our `Display`, and the binary value the server returns with ours.
async fn check_batch<T>(client: &Client, sql_type: &str, values: &[T])
where
    T: FromSqlOwned + ToSql + Sync + std::fmt::Display + std::fmt::Debug + PartialEq,
{
    let text = as_text(sql_type, "v");
    let sql = format!(
        "SELECT {text}, v FROM unnest($1::{sql_type}[]) WITH ORDINALITY AS t(v, i) ORDER BY i"
    );
    let rows = client.query(&sql, &[&values]).await.expect("batch query");
    assert_eq!(rows.len(), values.len());
    for (row, value) in rows.iter().zip(values) {
        assert_eq!(
            value.to_string(),
            row.get::<_, String>(0),
            "{sql_type} {value:?}"
        );
        assert_eq!(&row.get::<_, T>(1), value, "{sql_type} binary round trip");
    }
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const NUMERIC_LITERALS: &[&str] = &[
    "0",
    "0.0",
    "-0",
    "-0.000",
    "-0.5",
    "0.00000000000000000001",
    "1e-20",
    "123456789012345678901234567890.123456789",
    "-123456789012345678901234567890.123456789",
    "10000",
    "9999.9999",
    "10000.0001",
    "0.0001",
    "0.00001",
    "1.000",
    "-1.000",
    "100000000",
    "12.3400",
    "1.5e3",
    "1.500e1",
    "15e-1",
    ".5",
    "5.",
    "007.10",
    "NaN",
    "Infinity",
    "-Infinity",
    "inf",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551616",
];

#[tokio::test]
async fn numeric_literals() {
    let client = connect().await;
    check_literals::<Numeric>(&client, "numeric", Type::NUMERIC, NUMERIC_LITERALS).await;
    // Our parser must agree with numeric_in, not only our decoder.
    for literal in NUMERIC_LITERALS {
        let row = client
            .query_one("SELECT $1::text::numeric::text", &[literal])
            .await
            .expect("query");
        let parsed: Numeric = literal.parse().expect("parse");
        assert_eq!(parsed.as_str(), row.get::<_, String>(0), "{literal}");
    }
}

#[tokio::test]
async fn numeric_extremes() {
    let client = connect().await;
    let widest = format!("-{}.{}", "9".repeat(131_072), "9".repeat(16_383));
    let values: Vec<Numeric> = ["1e131071", "1e-16383", widest.as_str(), "0e-16383"]
        .iter()
        .map(|s| s.parse().expect("parse"))
        .collect();
    check_batch(&client, "numeric", &values).await;
    // Beyond the limits the server and the parser both refuse.
    for s in ["1e131072", "1e-16384"] {
        assert!(s.parse::<Numeric>().is_err());
        assert!(client
            .query_one("SELECT $1::text::numeric", &[&s])
            .await
            .is_err());
    }
}

#[tokio::test]
async fn numeric_random() {
    let client = connect().await;
    let mut rng = XorShift(0xDEAD_BEEF_CAFE_F00D);
    let mut literals = Vec::new();
    for _ in 0..3000 {
        let digits = |rng: &mut XorShift, max: u64| -> String {
            // Runs of zeros and nines stress the base-10000 group edges.
            let pool =
                [b"0000000009".as_slice(), b"9999999990", b"0123456789"][rng.below(3) as usize];
            (0..rng.below(max))
                .map(|_| char::from(pool[rng.below(10) as usize]))
                .collect()
        };
        let mut s = String::new();
        s.push_str(["", "-", "+"][rng.below(3) as usize]);
        let int = digits(&mut rng, 30);
        let frac = digits(&mut rng, 30);
        s.push_str(if int.is_empty() && frac.is_empty() {
            "0"
        } else {
            &int
        });
        if rng.below(2) == 0 || int.is_empty() {
            s.push('.');
            s.push_str(&frac);
        }
        if rng.below(4) == 0 {
            s.push_str(&format!("e{}", rng.below(80) as i64 - 40));
        }
        literals.push(s);
    }
    let rows = client
        .query(
            "SELECT x::numeric::text FROM unnest($1::text[]) WITH ORDINALITY AS t(x, i) ORDER BY i",
            &[&literals],
        )
        .await
        .expect("query");
    let mut values = Vec::new();
    for (literal, row) in literals.iter().zip(&rows) {
        let parsed: Numeric = literal.parse().unwrap_or_else(|e| panic!("{literal}: {e}"));
        assert_eq!(parsed.as_str(), row.get::<_, String>(0), "{literal}");
        values.push(parsed);
    }
    check_batch(&client, "numeric", &values).await;
}

const INTERVAL_LITERALS: &[&str] = &[
    "1 year 2 mons",
    "-3 days",
    "1 day -02:00:00",
    "00:00:00.000001",
    "-00:00:00.000001",
    "-1 year -2 mons +3 days -04:05:06",
    "178000000 years",
    "-178000000 years",
    "0",
    "00:00:00",
    "1 mon",
    "-1 mon",
    "-1 day",
    "1 day",
    "-1 day +1 hour",
    "1 year -1 day",
    "-1 year +1 day",
    "-1 year 00:00:01",
    "-1 days -00:00:01",
    "123456789 hours",
    "0.5 seconds",
    "-0.5 seconds",
    "1 day 0.1 sec",
    "1.5 days",
    "@ 1 day ago",
    "2562047788:00:54.775807",
    "-2147483648 days",
    "2147483647 days",
    "-178956970 years -8 mons",
    "178956970 years 7 mons",
    "1 year 12:34:56.789",
];

#[tokio::test]
async fn interval_literals() {
    let client = connect().await;
    check_literals::<Interval>(&client, "interval", Type::INTERVAL, INTERVAL_LITERALS).await;
    // The server's text must parse back to the value it decodes to.
    for literal in INTERVAL_LITERALS {
        let row = client
            .query_one(
                "SELECT $1::text::interval, $1::text::interval::text",
                &[literal],
            )
            .await
            .expect("query");
        let text: String = row.get(1);
        assert_eq!(
            text.parse::<Interval>().ok(),
            Some(row.get::<_, Interval>(0)),
            "{text}"
        );
    }
}

#[tokio::test]
async fn interval_random() {
    let client = connect().await;
    let mut rng = XorShift(0x1234_5678_9ABC_DEF1);
    let mut values = vec![
        Interval::new(0, 0, i64::MIN),
        Interval::new(i32::MIN, i32::MIN, i64::MIN + 1),
    ];
    while values.len() < 3000 {
        // Random magnitudes, so that small and huge fields both show up.
        let iv = Interval::new(
            rng.next() as i32 >> rng.below(32),
            rng.next() as i32 >> rng.below(32),
            rng.next() as i64 >> rng.below(64),
        );
        let iv = match rng.below(4) {
            0 => Interval::new(0, iv.days, iv.microseconds),
            1 => Interval::new(iv.months, 0, iv.microseconds % 86_400_000_000),
            2 => Interval::new(0, 0, iv.microseconds),
            _ => iv,
        };
        // PostgreSQL 15 has no infinite intervals; these bit patterns print
        // as huge finite values there.
        if iv.is_finite() {
            values.push(iv);
        }
    }
    check_batch(&client, "interval", &values).await;
    for v in &values {
        assert_eq!(v.to_string().parse::<Interval>().ok(), Some(*v), "{v}");
    }
}

const INET_LITERALS: &[&str] = &[
    "1.2.3.4",
    "1.2.3.4/32",
    "10.0.0.0/8",
    "0.0.0.0/0",
    "255.255.255.255",
    "192.168.0.0/16",
    "::",
    "::/0",
    "::1",
    "::2",
    "2001:db8::/32",
    "2001:db8::/128",
    "::ffff:1.2.3.4",
    "::1.2.3.4",
    "::0.0.1.1",
    "1::",
    "1:0:0:2:0:0:0:3",
    "1:0:0:2:0:0:3:4",
    "0:0:1::",
    "1:2:3:4:5:6:7:0",
    "1:2:3:4:5:6:0:0",
    "::ffff:0:1.2.3.4",
    "::1:0:0:0:1",
    "::ffff:0.0.0.0/96",
    "fe80::/10",
    "ABCD::EF",
];

#[tokio::test]
async fn inet_and_cidr_literals() {
    let client = connect().await;
    let inet_only = ["10.1.2.3/8", "2001:db8::1/64", "192.168.1.1/24", "::1/64"];
    let all_inet: Vec<&str> = INET_LITERALS.iter().chain(&inet_only).copied().collect();
    check_literals::<Inet>(&client, "inet", Type::INET, &all_inet).await;
    check_literals::<Inet>(&client, "cidr", Type::CIDR, INET_LITERALS).await;

    // The text cast differs from the output function for inet only.
    let host: Inet = "1.2.3.4".parse().expect("parse");
    let row = client
        .query_one("SELECT $1::inet::text, format('%s', $1::inet)", &[&host])
        .await
        .expect("query");
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        ("1.2.3.4/32".into(), host.to_string())
    );

    // A host address with bits past the prefix is an inet, never a cidr.
    for literal in inet_only {
        let v: Inet = literal.parse().expect("parse");
        assert!(
            client.query_one("SELECT $1::cidr", &[&v]).await.is_err(),
            "{literal}"
        );
    }
}

#[tokio::test]
async fn inet_random() {
    let client = connect().await;
    let mut rng = XorShift(0x0F1E_2D3C_4B5A_6978);
    let (mut inets, mut cidrs) = (Vec::new(), Vec::new());
    for _ in 0..3000 {
        let addr = if rng.below(3) == 0 {
            IpAddr::V4(Ipv4Addr::from(rng.next() as u32))
        } else {
            // Mostly-zero words so the `::` compression logic gets exercised.
            let mut words = [0u16; 8];
            for w in &mut words {
                *w = match rng.below(4) {
                    0 => rng.next() as u16,
                    1 => 1,
                    _ => 0,
                };
            }
            if rng.below(8) == 0 {
                words[5] = 0xffff;
            }
            IpAddr::V6(Ipv6Addr::from(words))
        };
        let max = if addr.is_ipv4() { 33 } else { 129 };
        let prefix = if rng.below(2) == 0 {
            max - 1
        } else {
            rng.below(max)
        } as u8;
        inets.push(Inet::new(addr, prefix).expect("valid prefix"));
        let network = match addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(
                u32::from(a) & u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0),
            )),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(
                u128::from(a) & u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0),
            )),
        };
        cidrs.push(Inet::new_cidr(network, prefix).expect("host bits cleared"));
    }
    check_batch(&client, "inet", &inets).await;
    check_batch(&client, "cidr", &cidrs).await;
}
