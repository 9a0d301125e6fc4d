use std::error::Error;
use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use bytes::{BufMut, BytesMut};
use postgres_types::{to_sql_checked, FromSql, IsNull, ToSql, Type};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use super::snippet;

// PostgreSQL's own family codes (PGSQL_AF_INET = AF_INET + 0,
// PGSQL_AF_INET6 = AF_INET + 1), not the platform's AF_INET6.
const PGSQL_AF_INET: u8 = 2;
const PGSQL_AF_INET6: u8 = 3;

/// A PostgreSQL `inet` or `cidr`: an address plus a prefix length.
///
/// `is_cidr` records which of the two it is; it changes only how the value
/// prints (a `cidr` always shows its prefix) and takes part in equality.
/// When sending, the parameter's type decides, not this flag.
///
/// ```
/// # use pgdbm::types::Inet;
/// let host: Inet = "192.168.0.1".parse().unwrap();
/// assert_eq!(host.prefix, 32);
/// let net = Inet::new_cidr("10.0.0.0".parse().unwrap(), 8).unwrap();
/// assert_eq!(net.to_string(), "10.0.0.0/8");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Inet {
    /// The address; for a `cidr`, the network address.
    pub addr: IpAddr,
    /// Prefix length in bits, at most 32 (IPv4) or 128 (IPv6).
    pub prefix: u8,
    /// Came from (or is meant as) a `cidr` rather than an `inet`.
    pub is_cidr: bool,
}

/// Why an [`Inet`] could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InetError {
    /// Not an `address` or `address/prefix`.
    #[error("invalid input syntax for inet: {0:?}")]
    Syntax(String),
    /// The prefix is longer than the address.
    #[error("prefix length {prefix} exceeds the address width of {max} bits")]
    PrefixTooLong {
        /// The rejected prefix length.
        prefix: u32,
        /// 32 or 128.
        max: u8,
    },
    /// A `cidr` whose address has bits set past the prefix.
    #[error("cidr value has bits set to the right of its prefix length")]
    HostBitsSet,
}

impl Inet {
    /// An `inet` (host address with an optional network size).
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, InetError> {
        check_prefix(&addr, u32::from(prefix))?;
        Ok(Inet {
            addr,
            prefix,
            is_cidr: false,
        })
    }

    /// A `cidr` network; like the server, refuses addresses with bits set
    /// past the prefix.
    pub fn new_cidr(addr: IpAddr, prefix: u8) -> Result<Self, InetError> {
        check_prefix(&addr, u32::from(prefix))?;
        if !host_bits_clear(&addr, prefix) {
            return Err(InetError::HostBitsSet);
        }
        Ok(Inet {
            addr,
            prefix,
            is_cidr: true,
        })
    }
}

fn max_prefix(addr: &IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn check_prefix(addr: &IpAddr, prefix: u32) -> Result<(), InetError> {
    let max = max_prefix(addr);
    if prefix > u32::from(max) {
        return Err(InetError::PrefixTooLong { prefix, max });
    }
    Ok(())
}

fn host_bits_clear(addr: &IpAddr, prefix: u8) -> bool {
    // checked_shr: a shift by the full width (prefix 0 on the other side)
    // would overflow.
    match addr {
        IpAddr::V4(a) => u32::from(*a) & u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0) == 0,
        IpAddr::V6(a) => {
            u128::from(*a) & u128::MAX.checked_shr(u32::from(prefix)).unwrap_or(0) == 0
        }
    }
}

/// A single host: full-length prefix, `inet`.
impl From<IpAddr> for Inet {
    fn from(addr: IpAddr) -> Self {
        Inet {
            addr,
            prefix: max_prefix(&addr),
            is_cidr: false,
        }
    }
}

impl fmt::Display for Inet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.addr {
            IpAddr::V4(a) => write!(f, "{a}")?,
            IpAddr::V6(a) => write_v6(f, a)?,
        }
        // inet hides a full-length prefix, cidr never does (network_out).
        if self.is_cidr || self.prefix != max_prefix(&self.addr) {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

/// Port of PostgreSQL's `inet_net_ntop_ipv6`. It differs from Rust's
/// formatting for IPv4-compatible addresses such as `::1.2.3.4`, which the
/// server prints in dotted form.
fn write_v6(f: &mut fmt::Formatter<'_>, addr: &Ipv6Addr) -> fmt::Result {
    let words = addr.segments();

    // Longest run of zero words (first wins a tie), only if 2+ long.
    let mut best: Option<(usize, usize)> = None;
    let mut cur: Option<(usize, usize)> = None;
    for (i, &w) in words.iter().enumerate() {
        if w == 0 {
            cur = Some(match cur {
                Some((base, len)) => (base, len + 1),
                None => (i, 1),
            });
        } else {
            best = longer(best, cur.take());
        }
    }
    let best = longer(best, cur).filter(|&(_, len)| len >= 2);

    for (i, &w) in words.iter().enumerate() {
        if let Some((base, len)) = best {
            if (base..base + len).contains(&i) {
                if i == base {
                    f.write_char(':')?;
                }
                continue;
            }
        }
        if i != 0 {
            f.write_char(':')?;
        }
        // ::a.b.c.d and ::ffff:a.b.c.d keep the dotted IPv4 tail.
        let embedded_v4 =
            matches!(best, Some((0, 6))) || (matches!(best, Some((0, 5))) && words[5] == 0xffff);
        if i == 6 && embedded_v4 {
            let [.., a, b, c, d] = addr.octets();
            return write!(f, "{}", Ipv4Addr::new(a, b, c, d));
        }
        write!(f, "{w:x}")?;
    }
    if best.is_some_and(|(base, len)| base + len == words.len()) {
        f.write_char(':')?;
    }
    Ok(())
}

fn longer(best: Option<(usize, usize)>, cur: Option<(usize, usize)>) -> Option<(usize, usize)> {
    match (best, cur) {
        (Some(b), Some(c)) if c.1 > b.1 => Some(c),
        (None, c) => c,
        (b, _) => b,
    }
}

impl FromStr for Inet {
    type Err = InetError;

    /// `addr` or `addr/prefix`, IPv4 or IPv6; the result is an `inet`. Use
    /// [`Inet::new_cidr`] on the parts to get a validated `cidr`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || InetError::Syntax(snippet(s));
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| syntax())?;
        let prefix = match prefix {
            None => u32::from(max_prefix(&addr)),
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse().map_err(|_| syntax())?
            }
            Some(_) => return Err(syntax()),
        };
        check_prefix(&addr, prefix)?;
        let prefix = u8::try_from(prefix).map_err(|_| syntax())?;
        Ok(Inet {
            addr,
            prefix,
            is_cidr: false,
        })
    }
}

impl<'a> FromSql<'a> for Inet {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        // family, bits, is_cidr, address length, address bytes.
        let [family, bits, _is_cidr, nb, address @ ..] = raw else {
            return Err("inet: binary value shorter than its header".into());
        };
        let addr = match (*family, *nb, address) {
            (PGSQL_AF_INET, 4, &[a, b, c, d]) => IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
            (PGSQL_AF_INET6, 16, bytes) => {
                let octets: [u8; 16] = bytes
                    .try_into()
                    .map_err(|_| "inet: address length mismatch")?;
                IpAddr::V6(Ipv6Addr::from(octets))
            }
            (PGSQL_AF_INET | PGSQL_AF_INET6, _, _) => {
                return Err("inet: address length mismatch".into())
            }
            _ => return Err(format!("inet: invalid address family {family}").into()),
        };
        // The type, not the flag byte, decides: the server ignores that
        // byte on input too.
        let value = if *ty == Type::CIDR {
            Inet::new_cidr(addr, *bits)?
        } else {
            Inet::new(addr, *bits)?
        };
        Ok(value)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::INET || *ty == Type::CIDR
    }
}

impl ToSql for Inet {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        let is_cidr = *ty == Type::CIDR;
        // Validate here so a bad value fails locally with a clear message
        // instead of as a server error.
        check_prefix(&self.addr, u32::from(self.prefix))?;
        if is_cidr && !host_bits_clear(&self.addr, self.prefix) {
            return Err(InetError::HostBitsSet.into());
        }
        match self.addr {
            IpAddr::V4(a) => {
                out.put_slice(&[PGSQL_AF_INET, self.prefix, u8::from(is_cidr), 4]);
                out.put_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                out.put_slice(&[PGSQL_AF_INET6, self.prefix, u8::from(is_cidr), 16]);
                out.put_slice(&a.octets());
            }
        }
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::INET || *ty == Type::CIDR
    }

    to_sql_checked!();
}

impl Serialize for Inet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Always yields an `inet` (`is_cidr == false`): the string alone does not
/// say which type it came from.
impl<'de> Deserialize<'de> for Inet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inet(s: &str) -> Inet {
        match s.parse() {
            Ok(v) => v,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    fn cidr(s: &str) -> Inet {
        let v = inet(s);
        match Inet::new_cidr(v.addr, v.prefix) {
            Ok(v) => v,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn displays_like_postgres() {
        // (input, inet output, cidr output or None if not a valid cidr),
        // all taken from PostgreSQL 15.
        let cases = [
            ("1.2.3.4", "1.2.3.4", Some("1.2.3.4/32")),
            ("1.2.3.4/32", "1.2.3.4", Some("1.2.3.4/32")),
            ("10.0.0.0/8", "10.0.0.0/8", Some("10.0.0.0/8")),
            ("10.1.2.3/8", "10.1.2.3/8", None),
            ("0.0.0.0/0", "0.0.0.0/0", Some("0.0.0.0/0")),
            ("::1", "::1", Some("::1/128")),
            ("::2", "::2", Some("::2/128")),
            ("::", "::", Some("::/128")),
            ("::/0", "::/0", Some("::/0")),
            ("2001:db8::/32", "2001:db8::/32", Some("2001:db8::/32")),
            ("2001:db8::1/64", "2001:db8::1/64", None),
            (
                "::ffff:1.2.3.4",
                "::ffff:1.2.3.4",
                Some("::ffff:1.2.3.4/128"),
            ),
            ("::1.2.3.4", "::1.2.3.4", Some("::1.2.3.4/128")),
            ("::0.0.1.1", "::101", Some("::101/128")),
            ("1::", "1::", Some("1::/128")),
            ("1:0:0:2:0:0:0:3", "1:0:0:2::3", Some("1:0:0:2::3/128")),
            ("1:0:0:2:0:0:3:4", "1::2:0:0:3:4", Some("1::2:0:0:3:4/128")),
            ("0:0:1::", "0:0:1::", Some("0:0:1::/128")),
            (
                "1:2:3:4:5:6:7:0",
                "1:2:3:4:5:6:7:0",
                Some("1:2:3:4:5:6:7:0/128"),
            ),
            (
                "1:2:3:4:5:6:0:0",
                "1:2:3:4:5:6::",
                Some("1:2:3:4:5:6::/128"),
            ),
            (
                "::ffff:0:1.2.3.4",
                "::ffff:0:102:304",
                Some("::ffff:0:102:304/128"),
            ),
            ("::1:0:0:0:1", "::1:0:0:0:1", Some("::1:0:0:0:1/128")),
            (
                "::ffff:0.0.0.0/96",
                "::ffff:0.0.0.0/96",
                Some("::ffff:0.0.0.0/96"),
            ),
            ("ABCD::EF", "abcd::ef", Some("abcd::ef/128")),
        ];
        for (input, as_inet, as_cidr) in cases {
            assert_eq!(inet(input).to_string(), as_inet, "{input}");
            let parsed = inet(input);
            match as_cidr {
                Some(text) => assert_eq!(cidr(input).to_string(), text, "{input}"),
                None => assert_eq!(
                    Inet::new_cidr(parsed.addr, parsed.prefix),
                    Err(InetError::HostBitsSet)
                ),
            }
            // Display output parses back to the same inet.
            assert_eq!(inet(as_inet), parsed);
        }
    }

    #[test]
    fn rejects_junk() {
        for bad in [
            "",
            "1.2.3",
            "1.2.3.4/",
            "1.2.3.4/-1",
            "1.2.3.4/+8",
            "1.2.3.4/0008",
            "1.2.3.4/8/8",
            "::1/",
            "::1%eth0",
            "10/8",
            "host",
            " 1.2.3.4",
        ] {
            assert!(
                matches!(bad.parse::<Inet>(), Err(InetError::Syntax(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            "1.2.3.4/33".parse::<Inet>(),
            Err(InetError::PrefixTooLong {
                prefix: 33,
                max: 32
            })
        );
        assert_eq!(
            "::/129".parse::<Inet>(),
            Err(InetError::PrefixTooLong {
                prefix: 129,
                max: 128
            })
        );
        assert!(Inet::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 33).is_err());
    }

    #[test]
    fn binary_layout_and_validation() {
        let mut buf = BytesMut::new();
        inet("10.0.0.0/8")
            .to_sql(&Type::CIDR, &mut buf)
            .expect("encode");
        assert_eq!(&buf[..], &[2, 8, 1, 4, 10, 0, 0, 0]);
        let back = Inet::from_sql(&Type::CIDR, &buf).expect("decode");
        assert_eq!(back, cidr("10.0.0.0/8"));

        buf.clear();
        inet("::1").to_sql(&Type::INET, &mut buf).expect("encode");
        assert_eq!(&buf[..4], &[3, 128, 0, 16]);
        assert_eq!(Inet::from_sql(&Type::INET, &buf).ok(), Some(inet("::1")));

        // Host bits are fine for inet but not for cidr.
        assert!(inet("10.1.0.0/8")
            .to_sql(&Type::CIDR, &mut BytesMut::new())
            .is_err());
        assert!(Inet::from_sql(&Type::CIDR, &[2, 8, 1, 4, 10, 1, 0, 0]).is_err());
        assert!(Inet::from_sql(&Type::INET, &[2, 8, 0, 4, 10, 1, 0, 0]).is_ok());
        let bad_prefix = Inet {
            addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            prefix: 40,
            is_cidr: false,
        };
        assert!(bad_prefix
            .to_sql(&Type::INET, &mut BytesMut::new())
            .is_err());

        for raw in [
            &[][..],
            &[2, 32, 0],
            &[2, 32, 0, 4, 1, 2, 3],
            &[2, 32, 0, 4, 1, 2, 3, 4, 5],
            &[2, 33, 0, 4, 1, 2, 3, 4],
            &[2, 32, 0, 16, 1, 2, 3, 4],
            &[
                10, 128, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
            ],
            &[
                3, 129, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
            ],
        ] {
            assert!(Inet::from_sql(&Type::INET, raw).is_err(), "{raw:?}");
        }
    }

    #[test]
    fn random_binary_never_panics() {
        let mut x = 0x0123_4567_89AB_CDEF_u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut decoded = 0;
        for round in 0..20_000 {
            let mut raw: Vec<u8> = (0..(next() % 24)).map(|_| next() as u8).collect();
            if round % 2 == 1 && raw.len() >= 4 {
                // Plausible headers so the address paths get exercised.
                raw[0] = 2 + (next() % 2) as u8;
                raw[1] %= 140;
                raw[3] = if raw[0] == 2 { 4 } else { 16 };
                raw.resize(4 + usize::from(raw[3]) - (next() % 2) as usize, 0);
            }
            for ty in [Type::INET, Type::CIDR] {
                if let Ok(v) = Inet::from_sql(&ty, &raw) {
                    decoded += 1;
                    // Anything accepted must encode back to the same bytes
                    // apart from the flag byte, which is ignored on input.
                    let mut buf = BytesMut::new();
                    v.to_sql(&ty, &mut buf).expect("encode");
                    assert_eq!((&buf[..2], &buf[3..]), (&raw[..2], &raw[3..]));
                    assert_eq!(inet(&v.to_string()).addr, v.addr);
                }
            }
        }
        // Guards against the generator drifting into only-garbage input.
        assert!(decoded > 2_000, "only {decoded} inputs decoded");
    }

    #[test]
    fn serde() {
        let v = cidr("2001:db8::/32");
        assert_eq!(
            serde_json::to_string(&v).ok(),
            Some("\"2001:db8::/32\"".into())
        );
        assert_eq!(
            serde_json::from_str::<Inet>("\"2001:db8::/32\"").ok(),
            Some(inet("2001:db8::/32"))
        );
        assert!(serde_json::from_str::<Inet>("\"nope\"").is_err());
        assert_eq!(Inet::from(IpAddr::V6(Ipv6Addr::LOCALHOST)), inet("::1/128"));
    }
}
