//! `Record`: one result row, in column order, with typed access by name or index.

use std::fmt;

use postgres_types::{FromSql, Kind, Type};
use serde::ser::{Serialize, SerializeMap, Serializer};
use tokio_postgres::Row;

use crate::error::{Error, Result};
use crate::value::{RawColumn, Value};

/// A row as returned by `fetch_one` / `fetch_all`. Columns keep the query's order.
///
/// ```no_run
/// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
/// let row = db.fetch_one("SELECT 1::int4 AS id, 'a' AS name", &[]).await?.unwrap();
/// let id: i32 = row.get("id")?;
/// let name: String = row.get(1)?;
/// let json = serde_json::to_string(&row).unwrap(); // {"id":1,"name":"a"}
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Record {
    row: Row,
}

/// A struct read from a row by [`fetch_one_as`](crate::AsyncDatabaseManager::fetch_one_as) and
/// [`fetch_all_as`](crate::AsyncDatabaseManager::fetch_all_as): each field from the column of
/// its name, decoded from the wire with the field type's `FromSql` (no text round trip).
/// Derive it (feature `derive`, on by default); a missing column or a mismatched type is
/// [`Error::Decode`] naming the column (a missing one also lists the row's columns).
///
/// Field attributes, `#[pgdbm(...)]`:
///
/// | attribute | the field is |
/// |---|---|
/// | `rename = "col"` | read from column `col` |
/// | `default` | `Default::default()` when the row has no such column (a NULL in a present column is decoded as usual) |
/// | `json` | a json or jsonb column deserialized into any `serde::Deserialize` type (with `rename` and `default` too) |
/// | `flatten` | a type that implements `FromRow` itself, read from the same row |
/// | `skip` | not read: `Default::default()` |
///
/// On the struct, `#[pgdbm(crate = "path")]` names the pgdbm crate when it is renamed or
/// re-exported (default `::pgdbm`). Generic fields get the bounds their attribute needs.
///
/// ```no_run
/// #[derive(serde::Deserialize, Default)]
/// struct Prefs { theme: String }
///
/// #[derive(pgdbm::FromRow)]
/// struct Address { city: String, zip: Option<String> }
///
/// #[derive(pgdbm::FromRow)]
/// struct Customer {
///     id: i64,
///     #[pgdbm(rename = "full_name")]
///     name: String,
///     #[pgdbm(json)]
///     prefs: Prefs,                     // a jsonb column
///     #[pgdbm(flatten)]
///     address: Address,                 // city and zip from the same row
///     #[pgdbm(default)]
///     orders: i64,                      // 0 when the query does not select it
///     #[pgdbm(skip)]
///     cache: Vec<u8>,
/// }
/// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
/// let all: Vec<Customer> = db
///     .fetch_all_as("SELECT id, full_name, prefs, city, zip FROM {{tables.customers}}", &[])
///     .await?;
/// # Ok(()) }
/// ```
///
/// **One struct, two read paths.** `fetch_*_as` follow these `#[pgdbm(...)]` attributes;
/// [`fetch_as_model`](crate::AsyncDatabaseManager::fetch_as_model) and
/// [`fetch_all_as_model`](crate::AsyncDatabaseManager::fetch_all_as_model) go through serde and
/// follow serde's (`#[serde(rename = "...")]`). A struct read both ways needs both renames. On
/// the serde path a field with no column, while the row has a column that no field reads (a
/// column named only through `#[pgdbm(rename)]`), is an error naming both, not a silent
/// `None`; when every column is read, serde's own rules apply to an absent one (`Option` gives
/// `None`, `#[serde(default)]` its default).
///
/// Attributes that cannot go together are refused at compile time, as are unknown ones:
///
/// ```compile_fail
/// #[derive(pgdbm::FromRow)]
/// struct S { #[pgdbm(skip, rename = "x")] a: i32 }   // a skipped field reads no column
/// ```
/// ```compile_fail
/// # #[derive(pgdbm::FromRow)] struct T { x: i32 }
/// #[derive(pgdbm::FromRow)]
/// struct S { #[pgdbm(json, flatten)] a: T }          // flatten reads no single column
/// ```
/// ```compile_fail
/// #[derive(pgdbm::FromRow)]
/// struct S { #[pgdbm(rename_all = "camelCase")] a: i32 }   // unknown: lists the valid keys
/// ```
/// ```compile_fail
/// #[derive(pgdbm::FromRow)]
/// #[pgdbm(crate = "no_such_crate")]
/// struct S { a: i32 }
/// ```
pub trait FromRow: Sized {
    /// Reads one row.
    fn from_row(row: &Record) -> Result<Self>;
}

/// Tuples read columns by position: `(i32, String)` takes the first two columns; a row with
/// another number of columns is [`Error::Decode`].
///
/// ```no_run
/// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
/// let pairs: Vec<(i32, String)> = db.fetch_all_as("SELECT id, email FROM {{tables.users}}", &[]).await?;
/// # Ok(()) }
/// ```
macro_rules! tuple_from_row {
    ($n:expr; $($idx:tt $t:ident),+) => {
        impl<$($t: postgres_types::FromSqlOwned),+> FromRow for ($($t,)+) {
            fn from_row(row: &Record) -> Result<Self> {
                if row.len() != $n {
                    return Err(Error::decode(
                        "-",
                        "-",
                        format!(
                            "the query returns {} column(s) but the tuple has {}",
                            row.len(),
                            $n
                        ),
                    ));
                }
                Ok(($(row.get::<$t>($idx)?,)+))
            }
        }
    };
}

tuple_from_row!(1; 0 A);
tuple_from_row!(2; 0 A, 1 B);
tuple_from_row!(3; 0 A, 1 B, 2 C);
tuple_from_row!(4; 0 A, 1 B, 2 C, 3 D);
tuple_from_row!(5; 0 A, 1 B, 2 C, 3 D, 4 E);
tuple_from_row!(6; 0 A, 1 B, 2 C, 3 D, 4 E, 5 F);
tuple_from_row!(7; 0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G);
tuple_from_row!(8; 0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G, 7 H);
tuple_from_row!(9; 0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G, 7 H, 8 I);
tuple_from_row!(10; 0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G, 7 H, 8 I, 9 J);
tuple_from_row!(11; 0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G, 7 H, 8 I, 9 J, 10 K);
tuple_from_row!(12; 0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G, 7 H, 8 I, 9 J, 10 K, 11 L);

/// A column position: a name (`&str`) or an index (`usize`).
pub trait ColumnIndex: fmt::Display + Copy {
    /// The column's index in `row`, if present.
    fn index_in(self, row: &Row) -> Option<usize>;
}

impl ColumnIndex for usize {
    fn index_in(self, row: &Row) -> Option<usize> {
        (self < row.len()).then_some(self)
    }
}

impl ColumnIndex for &str {
    fn index_in(self, row: &Row) -> Option<usize> {
        row.columns().iter().position(|c| c.name() == self)
    }
}

impl Record {
    pub(crate) fn new(row: Row) -> Self {
        Record { row }
    }

    /// A column decoded as `T`. A missing column or an incompatible type is
    /// [`Error::Decode`] naming the column and its PostgreSQL type. An enum reads as text
    /// (`String`, `&str`), and a domain as its base type.
    pub fn get<'a, T: FromSql<'a>>(&'a self, idx: impl ColumnIndex) -> Result<T> {
        let i = self.index(idx)?;
        match self.row.try_get::<_, T>(i) {
            Ok(v) => Ok(v),
            // An enum's value, and a domain's, is its base's on the wire: a type that reads
            // text reads an enum's label, one that reads a domain's base reads the domain.
            Err(e) => self.get_as_base(i, e),
        }
    }

    /// [`get`](Self::get) by name, looking first at column `hint`: derived `FromRow` code
    /// passes each field's position, which usually is its column's, so a row decodes without
    /// searching its columns by name for every field.
    #[inline]
    pub(crate) fn get_hinted<'a, T: FromSql<'a>>(&'a self, name: &str, hint: usize) -> Result<T> {
        let i = match self.row.columns().get(hint) {
            Some(c) if c.name() == name => hint,
            _ => self.index(name)?,
        };
        match self.row.try_get::<_, T>(i) {
            Ok(v) => Ok(v),
            Err(e) => self.get_as_base(i, e),
        }
    }

    /// [`get`](Self::get) after the driver refused the column's own type: through the type its
    /// values have on the wire, else the driver's error.
    #[cold]
    fn get_as_base<'a, T: FromSql<'a>>(&'a self, i: usize, e: tokio_postgres::Error) -> Result<T> {
        let col = &self.row.columns()[i];
        match wire_type(col.type_()).filter(|b| T::accepts(b)) {
            Some(base) => {
                let raw = self
                    .row
                    .try_get::<_, RawColumn<'a>>(i)
                    .map_err(|e| Error::decode(col.name(), col.type_(), source_message(&e)))?;
                T::from_sql_nullable(&base, raw.0)
                    .map_err(|e| Error::decode(col.name(), col.type_(), e.to_string()))
            }
            None => Err(Error::decode(col.name(), col.type_(), source_message(&e))),
        }
    }

    /// A column as a dynamic [`Value`].
    pub fn get_value(&self, idx: impl ColumnIndex) -> Result<Value> {
        let i = self.index(idx)?;
        let col = &self.row.columns()[i];
        let raw = self
            .row
            .try_get::<_, RawColumn<'_>>(i)
            .map_err(|e| Error::decode(col.name(), col.type_(), e))?;
        Value::decode(col.type_(), raw.0).map_err(|e| Error::decode(col.name(), col.type_(), e))
    }

    /// Column names, in order.
    pub fn columns(&self) -> impl ExactSizeIterator<Item = &str> {
        self.row.columns().iter().map(|c| c.name())
    }

    /// Number of columns.
    pub fn len(&self) -> usize {
        self.row.len()
    }

    /// Whether the row has no columns.
    pub fn is_empty(&self) -> bool {
        self.row.is_empty()
    }

    /// `(name, value)` pairs in column order.
    pub fn values(&self) -> Result<Vec<(String, Value)>> {
        (0..self.len())
            .map(|i| Ok((self.row.columns()[i].name().to_owned(), self.get_value(i)?)))
            .collect()
    }

    /// The row as a JSON object (see [`Value::to_json`] for the mapping).
    pub fn to_json(&self) -> Result<serde_json::Value> {
        let mut map = serde_json::Map::with_capacity(self.len());
        for i in 0..self.len() {
            map.insert(
                self.row.columns()[i].name().to_owned(),
                self.get_value(i)?.to_json(),
            );
        }
        Ok(serde_json::Value::Object(map))
    }

    /// Deserializes the row into `T` (see `fetch_as_model`).
    pub fn to_model<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        crate::de::from_row(&self.row)
    }

    /// The driver's row.
    pub fn as_row(&self) -> &Row {
        &self.row
    }

    /// Unwraps the driver's row.
    pub fn into_row(self) -> Row {
        self.row
    }

    fn index(&self, idx: impl ColumnIndex) -> Result<usize> {
        idx.index_in(&self.row).ok_or_else(|| {
            let names: Vec<_> = self.columns().collect();
            Error::decode(idx, "-", format!("no such column; the row has {names:?}"))
        })
    }
}

fn source_message(e: &tokio_postgres::Error) -> String {
    match std::error::Error::source(e) {
        Some(s) => s.to_string(),
        None => e.to_string(),
    }
}

impl From<Row> for Record {
    fn from(row: Row) -> Self {
        Record { row }
    }
}

impl Serialize for Record {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.len()))?;
        for (i, col) in self.row.columns().iter().enumerate() {
            let v = self.get_value(i).map_err(serde::ser::Error::custom)?;
            map.serialize_entry(col.name(), &v)?;
        }
        map.end()
    }
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (i, col) in self.row.columns().iter().enumerate() {
            match self.get_value(i) {
                Ok(v) => m.entry(&col.name(), &v),
                Err(_) => m.entry(&col.name(), &format_args!("<{}>", col.type_())),
            };
        }
        m.finish()
    }
}

/// The type a column's values have on the wire when it is not the column's own: `text` for an
/// enum, the base type for a domain (through nested domains).
fn wire_type(ty: &Type) -> Option<Type> {
    match ty.kind() {
        Kind::Enum(_) => Some(Type::TEXT),
        Kind::Domain(base) => Some(wire_type(base).unwrap_or_else(|| base.clone())),
        _ => None,
    }
}
