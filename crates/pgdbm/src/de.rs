//! A serde `Deserializer` that reads a struct straight from a row's wire bytes: no JSON round
//! trip, no intermediate `Value` for scalar columns, and borrowed `&str` where serde allows it.

use std::fmt;

use postgres_types::{FromSql, Kind, Type};
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};
use tokio_postgres::Row;

use crate::error::Error;
use crate::value::{hex_bytea, RawColumn, Value};

/// Deserializes `T` from `row`, fields matched to columns by name. A field with no column is
/// an error when the row also has a column that no field reads: serde would otherwise quietly
/// fill a missing `Option` field with `None`, hiding a misspelt or renamed column.
pub(crate) fn from_row<T: DeserializeOwned>(row: &Row) -> Result<T, Error> {
    let mut current = None;
    let mut missing = None;
    T::deserialize(RowDe {
        row,
        current: &mut current,
        missing: &mut missing,
    })
    .map_err(|e: DeError| {
        if let Some(field) = missing {
            return missing_field(row, field);
        }
        let Some(i) = current.filter(|&i| i < row.len()) else {
            return Error::decode("-", "-", e.0);
        };
        let col = &row.columns()[i];
        let is_null = row
            .try_get::<_, RawColumn<'_>>(i)
            .is_ok_and(|r| r.0.is_none());
        let message = if is_null && e.0.starts_with("invalid type: Option value") {
            "unexpected NULL; use an Option field for nullable columns".to_owned()
        } else {
            e.0
        };
        Error::decode(col.name(), col.type_(), message)
    })
}

fn missing_field(row: &Row, field: &str) -> Error {
    let names: Vec<&str> = row.columns().iter().map(|c| c.name()).collect();
    Error::decode(
        field,
        "-",
        format!(
            "missing field `{field}`: the row has no such column (it has {names:?}, and not \
             every one of them is read). fetch_*_as_model reads columns by serde's field names \
             (#[serde(rename = \"...\")]); #[pgdbm(...)] attributes serve fetch_*_as (FromRow). \
             Rename the field or the column, or select only the columns the struct reads"
        ),
    )
}

#[derive(Debug)]
pub(crate) struct DeError(String);

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for DeError {}
impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError(msg.to_string())
    }
}

type BoxError = Box<dyn std::error::Error + Sync + Send>;

fn wire(e: BoxError) -> DeError {
    DeError(e.to_string())
}

struct RowDe<'r, 'c> {
    row: &'r Row,
    current: &'c mut Option<usize>,
    /// The first struct field with no column of its name.
    missing: &'c mut Option<&'static str>,
}

impl<'de, 'r: 'de, 'c> de::Deserializer<'de> for RowDe<'r, 'c> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_map(RowMap {
            row: self.row,
            next: 0,
            current: self.current,
        })
    }

    /// A tuple struct or tuple reads columns by position.
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_seq(RowSeq {
            row: self.row,
            next: 0,
            current: self.current,
        })
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    /// `fields` are the names serde will look for (aliases included): each must be a column.
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        // A field without its column, while the row has a column no field reads, is most
        // likely a misspelt or renamed field (a name only `#[pgdbm(rename)]` knows, say): an
        // error. Without such a column, serde's own rules stand (`Option` gives `None`,
        // `#[serde(default)]` its default), and an alias that the row does not use is fine.
        let columns = self.row.columns();
        let unread = columns.iter().any(|c| !fields.contains(&c.name()));
        if unread {
            if let Some(field) = fields
                .iter()
                .find(|f| !columns.iter().any(|c| c.name() == **f))
            {
                *self.missing = Some(field);
                return Err(DeError(format!("missing field `{field}`")));
            }
        }
        self.deserialize_any(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct map enum identifier ignored_any
    }
}

struct RowMap<'r, 'c> {
    row: &'r Row,
    next: usize,
    current: &'c mut Option<usize>,
}

impl<'de, 'r: 'de> MapAccess<'de> for RowMap<'r, '_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        if self.next >= self.row.len() {
            return Ok(None);
        }
        let name: &'r str = self.row.columns()[self.next].name();
        seed.deserialize(name.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let i = self.next;
        self.next += 1;
        *self.current = Some(i);
        let v = seed.deserialize(column(self.row, i)?)?;
        *self.current = None;
        Ok(v)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.row.len() - self.next)
    }
}

struct RowSeq<'r, 'c> {
    row: &'r Row,
    next: usize,
    current: &'c mut Option<usize>,
}

impl<'de, 'r: 'de> SeqAccess<'de> for RowSeq<'r, '_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        if self.next >= self.row.len() {
            return Ok(None);
        }
        let i = self.next;
        self.next += 1;
        *self.current = Some(i);
        let v = seed.deserialize(column(self.row, i)?)?;
        *self.current = None;
        Ok(Some(v))
    }
}

fn column(row: &Row, i: usize) -> Result<ColumnDe<'_>, DeError> {
    let raw = row
        .try_get::<_, RawColumn<'_>>(i)
        .map_err(|e| DeError(e.to_string()))?;
    Ok(ColumnDe {
        ty: row.columns()[i].type_(),
        raw: raw.0,
    })
}

/// One value: its type and wire bytes (`None` = NULL).
struct ColumnDe<'a> {
    ty: &'a Type,
    raw: Option<&'a [u8]>,
}

impl<'a> ColumnDe<'a> {
    fn bytes(&self) -> Result<&'a [u8], DeError> {
        self.raw.ok_or_else(|| {
            DeError("unexpected NULL; use an Option field for nullable columns".into())
        })
    }

    fn decode<T: FromSql<'a>>(&self) -> Result<T, DeError> {
        T::from_sql(self.ty, self.bytes()?).map_err(wire)
    }

    fn text(&self) -> Result<&'a str, DeError> {
        std::str::from_utf8(self.bytes()?).map_err(|e| DeError(e.to_string()))
    }

    fn is_text_like(&self) -> bool {
        matches!(
            *self.ty,
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN | Type::XML
        ) || matches!(self.ty.kind(), Kind::Enum(_))
            || self.ty.name() == "citext"
    }

    /// Reads through the dynamic decoder, for the less common types.
    fn value(&self) -> Result<Value, DeError> {
        Value::decode(self.ty, self.raw).map_err(wire)
    }

    /// The general path: decode to a `Value` first.
    fn any_via_value<'de, V: Visitor<'de>>(&self, visitor: V) -> Result<V::Value, DeError> {
        match self.value()? {
            Value::Array(items) => visitor.visit_seq(de::value::SeqDeserializer::new(
                items.into_iter().map(ValueDe),
            )),
            Value::Text(s) => visitor.visit_string(s),
            Value::Bytes(b) => visitor.visit_byte_buf(b),
            other => visitor.visit_string(scalar_text(&other)),
        }
    }

    /// Dates, times and uuids as text without allocating: chrono and uuid fields parse them
    /// from these ISO 8601 / hyphenated forms. `None` for values chrono cannot hold
    /// (`infinity`, years past 9999), which take the general path.
    fn fast_text(&self) -> Option<StackText> {
        use chrono::{Datelike, Timelike};
        let raw = self.raw?;
        let mut out = StackText::default();
        let date = |out: &mut StackText, d: chrono::NaiveDate| -> Option<()> {
            let y = u32::try_from(d.year()).ok().filter(|y| *y <= 9999)?;
            out.digits(y, 4);
            out.push(b'-');
            out.digits(d.month(), 2);
            out.push(b'-');
            out.digits(d.day(), 2);
            Some(())
        };
        let time = |out: &mut StackText, t: chrono::NaiveTime| {
            out.digits(t.hour(), 2);
            out.push(b':');
            out.digits(t.minute(), 2);
            out.push(b':');
            out.digits(t.second(), 2);
            let micros = t.nanosecond() / 1000;
            if micros != 0 {
                out.push(b'.');
                out.digits(micros, 6);
            }
        };
        match *self.ty {
            Type::TIMESTAMPTZ => {
                let v = chrono::DateTime::<chrono::Utc>::from_sql(self.ty, raw)
                    .ok()?
                    .naive_utc();
                date(&mut out, v.date())?;
                out.push(b'T');
                time(&mut out, v.time());
                out.extend(b"+00:00");
            }
            Type::TIMESTAMP => {
                let v = chrono::NaiveDateTime::from_sql(self.ty, raw).ok()?;
                date(&mut out, v.date())?;
                out.push(b'T');
                time(&mut out, v.time());
            }
            Type::DATE => date(&mut out, chrono::NaiveDate::from_sql(self.ty, raw).ok()?)?,
            Type::TIME => time(&mut out, chrono::NaiveTime::from_sql(self.ty, raw).ok()?),
            Type::UUID => {
                let u = uuid::Uuid::from_sql(self.ty, raw).ok()?;
                let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
                out.extend(u.hyphenated().encode_lower(&mut buf).as_bytes());
            }
            _ => return None,
        }
        Some(out)
    }

    fn number_text(&self) -> Result<String, DeError> {
        match self.value()? {
            Value::Numeric(n) => Ok(n.as_str().to_owned()),
            Value::Text(s) => Ok(s),
            other => Err(DeError(format!("expected a number, found {other:?}"))),
        }
    }
}

macro_rules! deserialize_int {
    ($method:ident, $visit:ident, $t:ty) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            match *self.ty {
                Type::INT2
                | Type::INT4
                | Type::INT8
                | Type::OID
                | Type::FLOAT4
                | Type::FLOAT8
                | Type::BOOL
                | Type::JSON
                | Type::JSONB => self.deserialize_any(visitor),
                _ => {
                    // numeric or text: parse, so `i64` fields can read `numeric` columns.
                    let s = self.number_text()?;
                    let v: $t = s.parse().map_err(|_| {
                        DeError(format!("{s:?} does not fit in {}", stringify!($t)))
                    })?;
                    visitor.$visit(v)
                }
            }
        }
    };
}

impl<'de, 'a: 'de> de::Deserializer<'de> for ColumnDe<'a> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.raw.is_none() {
            return visitor.visit_none();
        }
        match *self.ty {
            Type::BOOL => visitor.visit_bool(self.decode()?),
            Type::INT2 => visitor.visit_i16(self.decode()?),
            Type::INT4 => visitor.visit_i32(self.decode()?),
            Type::INT8 => visitor.visit_i64(self.decode()?),
            Type::OID => visitor.visit_u32(self.decode()?),
            Type::FLOAT4 => visitor.visit_f32(self.decode()?),
            Type::FLOAT8 => visitor.visit_f64(self.decode()?),
            Type::BYTEA => visitor.visit_borrowed_bytes(self.bytes()?),
            Type::JSON => {
                let mut d = serde_json::Deserializer::from_slice(self.bytes()?);
                de::Deserializer::deserialize_any(&mut d, visitor)
                    .map_err(|e| DeError(e.to_string()))
            }
            Type::JSONB => {
                let raw = self.bytes()?;
                match raw.split_first() {
                    Some((1, body)) => {
                        let mut d = serde_json::Deserializer::from_slice(body);
                        de::Deserializer::deserialize_any(&mut d, visitor)
                            .map_err(|e| DeError(e.to_string()))
                    }
                    _ => Err(DeError("unsupported jsonb version".into())),
                }
            }
            _ if self.is_text_like() => visitor.visit_borrowed_str(self.text()?),
            Type::TIMESTAMPTZ | Type::TIMESTAMP | Type::DATE | Type::TIME | Type::UUID => {
                match self.fast_text() {
                    Some(text) => visitor.visit_str(text.as_str()),
                    None => self.any_via_value(visitor),
                }
            }
            _ => self.any_via_value(visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.raw {
            None => visitor.visit_none(),
            Some(_) => visitor.visit_some(self),
        }
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match *self.ty {
            Type::NUMERIC => {
                let s = self.number_text()?;
                let v: f64 = s
                    .parse()
                    .map_err(|_| DeError(format!("{s:?} is not a number")))?;
                visitor.visit_f64(v)
            }
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_f64(visitor)
    }

    deserialize_int!(deserialize_i8, visit_i8, i8);
    deserialize_int!(deserialize_i16, visit_i16, i16);
    deserialize_int!(deserialize_i32, visit_i32, i32);
    deserialize_int!(deserialize_i64, visit_i64, i64);
    deserialize_int!(deserialize_i128, visit_i128, i128);
    deserialize_int!(deserialize_u8, visit_u8, u8);
    deserialize_int!(deserialize_u16, visit_u16, u16);
    deserialize_int!(deserialize_u32, visit_u32, u32);
    deserialize_int!(deserialize_u64, visit_u64, u64);
    deserialize_int!(deserialize_u128, visit_u128, u128);

    /// `Vec<u8>` fields read `bytea` as a sequence of bytes.
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if *self.ty == Type::BYTEA && self.raw.is_some() {
            let bytes = self.bytes()?;
            return visitor.visit_seq(de::value::SeqDeserializer::<_, DeError>::new(
                bytes.iter().copied(),
            ));
        }
        self.deserialize_any(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    /// Enums (e.g. a Rust enum for a PostgreSQL enum) read their variant from text.
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match *self.ty {
            Type::JSON | Type::JSONB => self.deserialize_any(visitor),
            _ => visitor.visit_enum(self.text()?.into_deserializer()),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool char str string bytes byte_buf unit unit_struct tuple tuple_struct map struct identifier
    }
}

/// A short ASCII string on the stack.
struct StackText {
    buf: [u8; 48],
    len: usize,
}

impl Default for StackText {
    fn default() -> Self {
        StackText {
            buf: [0; 48],
            len: 0,
        }
    }
}

impl StackText {
    fn push(&mut self, b: u8) {
        if self.len < self.buf.len() {
            self.buf[self.len] = b;
            self.len += 1;
        }
    }

    fn extend(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.push(*b);
        }
    }

    /// `v` in exactly `width` decimal digits, zero-padded.
    fn digits(&mut self, mut v: u32, width: usize) {
        let start = self.len;
        for _ in 0..width {
            self.push(b'0');
        }
        for i in (start..self.len).rev() {
            self.buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }

    fn as_str(&self) -> &str {
        // Only ASCII digits and punctuation are ever pushed.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

/// Text form of a scalar `Value` for string-typed fields (dates, uuids, numerics, …).
fn scalar_text(v: &Value) -> String {
    match v {
        Value::Numeric(n) => n.as_str().to_owned(),
        Value::Bytes(b) => hex_bytea(b),
        other => match other.to_json() {
            serde_json::Value::String(s) => s,
            j => j.to_string(),
        },
    }
}

/// Deserializer over an owned `Value`, for array elements.
struct ValueDe(Value);

impl<'de> IntoDeserializer<'de, DeError> for ValueDe {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de> de::Deserializer<'de> for ValueDe {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Int2(v) => visitor.visit_i16(v),
            Value::Int4(v) => visitor.visit_i32(v),
            Value::Int8(v) => visitor.visit_i64(v),
            Value::Oid(v) => visitor.visit_u32(v),
            Value::Float4(v) => visitor.visit_f32(v),
            Value::Float8(v) => visitor.visit_f64(v),
            Value::Text(s) => visitor.visit_string(s),
            Value::Bytes(b) => visitor.visit_byte_buf(b),
            Value::Json(j) => j
                .deserialize_any(visitor)
                .map_err(|e| DeError(e.to_string())),
            Value::Array(items) => visitor.visit_seq(de::value::SeqDeserializer::new(
                items.into_iter().map(ValueDe),
            )),
            other => visitor.visit_string(scalar_text(&other)),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.0 {
            Value::Numeric(n) => visitor.visit_f64(
                n.as_str()
                    .parse()
                    .map_err(|_| DeError(format!("{n} is not a number")))?,
            ),
            _ => self.deserialize_any(visitor),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 char str string
        bytes byte_buf unit unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}
