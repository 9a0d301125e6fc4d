//! Lossless Rust counterparts of PostgreSQL types that `postgres-types` has
//! no exact mapping for: `numeric`, `interval`, `inet` and `cidr`.
//!
//! Each type encodes and decodes PostgreSQL's binary wire format and prints
//! itself exactly as the server's output function does (PostgreSQL 15,
//! default `IntervalStyle = postgres`). That equals `::text` except for
//! `inet`, whose text cast always appends the prefix (`1.2.3.4/32`).

mod inet;
mod interval;
mod numeric;

pub use inet::{Inet, InetError};
pub use interval::{Interval, IntervalError};
pub use numeric::{Numeric, NumericParseError};
/// The conversion traits these types implement, re-exported so callers can
/// write `pgdbm::types::ToSql` without naming `postgres-types`.
pub use postgres_types::{FromSql, Json, ToSql, Type};

/// The error type `postgres-types` expects from `FromSql`/`ToSql`.
type BoxError = Box<dyn std::error::Error + Sync + Send>;

/// Keeps error messages bounded when the rejected input is huge.
fn snippet(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}
