//! `Value`: any column decoded without knowing its type in advance, plus parameter encoding for
//! dynamic rows.

use std::error::Error as StdError;
use std::fmt;

use bytes::BytesMut;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use postgres_types::{to_sql_checked, FromSql, IsNull, Kind, ToSql, Type};
use serde::ser::{Serialize, SerializeSeq, Serializer};

use crate::types::{Inet, Interval, Numeric};

type BoxError = Box<dyn StdError + Sync + Send>;

/// A dynamically typed PostgreSQL value.
///
/// Enums decode as [`Value::Text`]; one-dimensional arrays as [`Value::Array`]. `infinity`
/// dates and timestamps decode as text, since chrono cannot hold them.
///
/// ```
/// use pgdbm::Value;
/// let v = Value::from(42_i32);
/// assert_eq!(v.as_i64(), Some(42));
/// assert_eq!(serde_json::to_string(&Value::Null).unwrap(), "null");
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Value {
    /// SQL NULL.
    Null,
    /// `bool`
    Bool(bool),
    /// `int2`
    Int2(i16),
    /// `int4`
    Int4(i32),
    /// `int8`
    Int8(i64),
    /// `oid`
    Oid(u32),
    /// `float4`
    Float4(f32),
    /// `float8`
    Float8(f64),
    /// `numeric`, exact.
    Numeric(Numeric),
    /// `text`, `varchar`, `char`, `name`, enums, and other text-like types.
    Text(String),
    /// `bytea`
    Bytes(Vec<u8>),
    /// `json` / `jsonb`
    Json(serde_json::Value),
    /// `uuid`
    Uuid(uuid::Uuid),
    /// `date`
    Date(NaiveDate),
    /// `time`
    Time(NaiveTime),
    /// `timestamp`
    Timestamp(NaiveDateTime),
    /// `timestamptz`
    TimestampTz(DateTime<Utc>),
    /// `interval`
    Interval(Interval),
    /// `inet` / `cidr`
    Inet(Inet),
    /// A one-dimensional array.
    Array(Vec<Value>),
}

impl Value {
    /// Whether this is SQL NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The value as an `i64`, for any integer type.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::Int2(v) => Some(v.into()),
            Value::Int4(v) => Some(v.into()),
            Value::Int8(v) => Some(v),
            Value::Oid(v) => Some(v.into()),
            _ => None,
        }
    }

    /// The value as an `f64`, for any numeric type.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float4(v) => Some((*v).into()),
            Value::Float8(v) => Some(*v),
            Value::Numeric(n) => n.as_str().parse().ok(),
            other => other.as_i64().map(|v| v as f64),
        }
    }

    /// The value as a string slice, for text-like values.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    /// The value as JSON (numerics as strings, bytea as `\x` hex, times in ISO 8601).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// Decodes one column from its wire bytes.
    pub(crate) fn decode(ty: &Type, raw: Option<&[u8]>) -> Result<Value, BoxError> {
        let Some(raw) = raw else {
            return Ok(Value::Null);
        };
        let v = match *ty {
            Type::BOOL => Value::Bool(bool::from_sql(ty, raw)?),
            Type::INT2 => Value::Int2(i16::from_sql(ty, raw)?),
            Type::INT4 => Value::Int4(i32::from_sql(ty, raw)?),
            Type::INT8 => Value::Int8(i64::from_sql(ty, raw)?),
            Type::OID => Value::Oid(u32::from_sql(ty, raw)?),
            Type::FLOAT4 => Value::Float4(f32::from_sql(ty, raw)?),
            Type::FLOAT8 => Value::Float8(f64::from_sql(ty, raw)?),
            Type::NUMERIC => Value::Numeric(Numeric::from_sql(ty, raw)?),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN | Type::XML => {
                Value::Text(std::str::from_utf8(raw)?.to_owned())
            }
            Type::CHAR => Value::Text(char::from(i8::from_sql(ty, raw)? as u8).to_string()),
            Type::BYTEA => Value::Bytes(raw.to_vec()),
            Type::JSON | Type::JSONB => Value::Json(serde_json::Value::from_sql(ty, raw)?),
            Type::UUID => Value::Uuid(uuid::Uuid::from_sql(ty, raw)?),
            Type::DATE => match NaiveDate::from_sql(ty, raw) {
                Ok(d) => Value::Date(d),
                Err(_) => Value::Text(infinity(i32::from_sql(&Type::INT4, raw)? as i64)?),
            },
            Type::TIME => Value::Time(NaiveTime::from_sql(ty, raw)?),
            Type::TIMESTAMP => match NaiveDateTime::from_sql(ty, raw) {
                Ok(d) => Value::Timestamp(d),
                Err(_) => Value::Text(infinity(i64::from_sql(&Type::INT8, raw)?)?),
            },
            Type::TIMESTAMPTZ => match DateTime::<Utc>::from_sql(ty, raw) {
                Ok(d) => Value::TimestampTz(d),
                Err(_) => Value::Text(infinity(i64::from_sql(&Type::INT8, raw)?)?),
            },
            Type::INTERVAL => Value::Interval(Interval::from_sql(ty, raw)?),
            Type::INET | Type::CIDR => Value::Inet(Inet::from_sql(ty, raw)?),
            _ => match ty.kind() {
                Kind::Enum(_) => Value::Text(std::str::from_utf8(raw)?.to_owned()),
                Kind::Domain(inner) => Value::decode(inner, Some(raw))?,
                Kind::Array(elem) => {
                    let array = postgres_protocol::types::array_from_sql(raw)?;
                    if fallible_iterator::FallibleIterator::count(array.dimensions())? > 1 {
                        return Err(
                            "multi-dimensional arrays are not supported; unnest them in SQL".into(),
                        );
                    }
                    let mut out = Vec::new();
                    let mut values = array.values();
                    while let Some(v) = fallible_next(&mut values)? {
                        out.push(Value::decode(elem, v)?);
                    }
                    Value::Array(out)
                }
                _ if ty.name() == "citext" || ty.name() == "ltree" => {
                    Value::Text(std::str::from_utf8(raw)?.to_owned())
                }
                _ => {
                    return Err(
                        "no decoder for this type; cast it in SQL (e.g. `col::text`) or read \
                                it with Record::get::<T>() for a T that implements FromSql"
                            .into(),
                    )
                }
            },
        };
        Ok(v)
    }
}

fn fallible_next<'a>(
    it: &mut postgres_protocol::types::ArrayValues<'a>,
) -> Result<Option<Option<&'a [u8]>>, BoxError> {
    use fallible_iterator::FallibleIterator;
    it.next()
}

fn infinity(v: i64) -> Result<String, BoxError> {
    match v {
        i64::MAX | 0x7fff_ffff => Ok("infinity".into()),
        i64::MIN | -0x8000_0000 => Ok("-infinity".into()),
        _ => Err("date/time value out of range for chrono".into()),
    }
}

/// Raw access to a column's bytes, whatever its type.
pub(crate) struct RawColumn<'a>(pub(crate) Option<&'a [u8]>);

impl<'a> FromSql<'a> for RawColumn<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(RawColumn(Some(raw)))
    }
    fn from_sql_null(_: &Type) -> Result<Self, BoxError> {
        Ok(RawColumn(None))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(v) => s.serialize_bool(*v),
            Value::Int2(v) => s.serialize_i16(*v),
            Value::Int4(v) => s.serialize_i32(*v),
            Value::Int8(v) => s.serialize_i64(*v),
            Value::Oid(v) => s.serialize_u32(*v),
            Value::Float4(v) => s.serialize_f32(*v),
            Value::Float8(v) => s.serialize_f64(*v),
            Value::Numeric(v) => s.serialize_str(v.as_str()),
            Value::Text(v) => s.serialize_str(v),
            Value::Bytes(v) => s.serialize_str(&hex_bytea(v)),
            Value::Json(v) => v.serialize(s),
            Value::Uuid(v) => s.collect_str(v),
            Value::Date(v) => s.collect_str(v),
            Value::Time(v) => s.collect_str(v),
            Value::Timestamp(v) => s.collect_str(&v.format("%Y-%m-%dT%H:%M:%S%.f")),
            Value::TimestampTz(v) => s.serialize_str(&v.to_rfc3339()),
            Value::Interval(v) => s.collect_str(v),
            Value::Inet(v) => s.collect_str(v),
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
        }
    }
}

pub(crate) fn hex_bytea(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(2 + bytes.len() * 2);
    out.push_str("\\x");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Text(s) => f.write_str(s),
            other => write!(f, "{}", other.to_json()),
        }
    }
}

macro_rules! value_from {
    ($($t:ty => $v:ident),* $(,)?) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Self { Value::$v(v.into()) }
        }
    )*};
}

value_from!(
    bool => Bool, i16 => Int2, i32 => Int4, i64 => Int8, f32 => Float4, f64 => Float8,
    String => Text, &str => Text, Vec<u8> => Bytes, serde_json::Value => Json, uuid::Uuid => Uuid,
    NaiveDate => Date, NaiveTime => Time, NaiveDateTime => Timestamp, DateTime<Utc> => TimestampTz,
    Numeric => Numeric, Interval => Interval, Inet => Inet,
);

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// Encodes a `Value` as a parameter: each variant accepts the types its Rust counterpart
/// accepts, and text also goes into enum columns.
impl ToSql for Value {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Bool(v) => v.to_sql(ty, out),
            Value::Int2(v) => v.to_sql(ty, out),
            Value::Int4(v) => v.to_sql(ty, out),
            Value::Int8(v) => v.to_sql(ty, out),
            Value::Oid(v) => v.to_sql(ty, out),
            Value::Float4(v) => v.to_sql(ty, out),
            Value::Float8(v) => v.to_sql(ty, out),
            Value::Numeric(v) => v.to_sql(ty, out),
            Value::Text(v) => {
                out.extend_from_slice(v.as_bytes());
                Ok(IsNull::No)
            }
            Value::Bytes(v) => v.to_sql(ty, out),
            Value::Json(v) => v.to_sql(ty, out),
            Value::Uuid(v) => v.to_sql(ty, out),
            Value::Date(v) => v.to_sql(ty, out),
            Value::Time(v) => v.to_sql(ty, out),
            Value::Timestamp(v) => v.to_sql(ty, out),
            Value::TimestampTz(v) => v.to_sql(ty, out),
            Value::Interval(v) => v.to_sql(ty, out),
            Value::Inet(v) => v.to_sql(ty, out),
            Value::Array(items) => {
                let Kind::Array(elem) = ty.kind() else {
                    return Err(format!("an array value cannot be sent as {ty}").into());
                };
                for item in items {
                    if !item.is_null() && !value_accepts(item, elem) {
                        return Err(
                            format!("array element {item:?} cannot be sent as {elem}").into()
                        );
                    }
                }
                items.as_slice().to_sql(ty, out)
            }
        }
    }

    fn accepts(_: &Type) -> bool {
        // The real check depends on the variant and happens in `to_sql_checked`.
        true
    }

    fn to_sql_checked(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        if !value_accepts(self, ty) {
            return Err(Box::new(postgres_types::WrongType::new::<Value>(
                ty.clone(),
            )));
        }
        self.to_sql(ty, out)
    }
}

fn value_accepts(v: &Value, ty: &Type) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(_) => <bool as ToSql>::accepts(ty),
        Value::Int2(_) => <i16 as ToSql>::accepts(ty),
        Value::Int4(_) => <i32 as ToSql>::accepts(ty),
        Value::Int8(_) => <i64 as ToSql>::accepts(ty),
        Value::Oid(_) => <u32 as ToSql>::accepts(ty),
        Value::Float4(_) => <f32 as ToSql>::accepts(ty),
        Value::Float8(_) => <f64 as ToSql>::accepts(ty),
        Value::Numeric(_) => <Numeric as ToSql>::accepts(ty),
        Value::Text(_) => <&str as ToSql>::accepts(ty) || matches!(ty.kind(), Kind::Enum(_)),
        Value::Bytes(_) => <Vec<u8> as ToSql>::accepts(ty),
        Value::Json(_) => <serde_json::Value as ToSql>::accepts(ty),
        Value::Uuid(_) => <uuid::Uuid as ToSql>::accepts(ty),
        Value::Date(_) => <NaiveDate as ToSql>::accepts(ty),
        Value::Time(_) => <NaiveTime as ToSql>::accepts(ty),
        Value::Timestamp(_) => <NaiveDateTime as ToSql>::accepts(ty),
        Value::TimestampTz(_) => <DateTime<Utc> as ToSql>::accepts(ty),
        Value::Interval(_) => <Interval as ToSql>::accepts(ty),
        Value::Inet(_) => <Inet as ToSql>::accepts(ty),
        Value::Array(_) => matches!(ty.kind(), Kind::Array(_)),
    }
}

/// Text that can be sent into a PostgreSQL enum column (or any text-like column).
///
/// ```no_run
/// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
/// use pgdbm::EnumText;
/// db.execute("INSERT INTO {{tables.moods}} (m) VALUES ($1)", &[&EnumText::new("happy")]).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EnumText(pub String);

impl EnumText {
    /// An enum label (or any text) to send.
    pub fn new(label: impl Into<String>) -> Self {
        EnumText(label.into())
    }

    /// The label.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for EnumText {
    fn from(label: &str) -> Self {
        EnumText(label.to_owned())
    }
}

impl From<String> for EnumText {
    fn from(label: String) -> Self {
        EnumText(label)
    }
}

impl ToSql for EnumText {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        out.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }
    fn accepts(ty: &Type) -> bool {
        matches!(ty.kind(), Kind::Enum(_)) || <&str as ToSql>::accepts(ty)
    }
    to_sql_checked!();
}

impl<'a> FromSql<'a> for EnumText {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(EnumText(std::str::from_utf8(raw)?.to_owned()))
    }
    fn accepts(ty: &Type) -> bool {
        matches!(ty.kind(), Kind::Enum(_)) || <&str as FromSql>::accepts(ty)
    }
}
