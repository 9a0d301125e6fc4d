//! What `#[derive(FromRow)]` expands to, for the attributes beyond a plain column read.
//! Not a stable API.

pub use postgres_types::FromSqlOwned;
use postgres_types::Type;
pub use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::record::Record;
use crate::value::RawColumn;

fn has_column(row: &Record, column: &str) -> bool {
    row.columns().any(|c| c == column)
}

/// A plain field: its column by name, looked for first at the field's position.
#[inline]
pub fn get<T: FromSqlOwned>(row: &Record, column: &str, position: usize) -> Result<T> {
    row.get_hinted(column, position)
}

/// `#[pgdbm(default)]`: the column decoded as usual when the row has it, else the default.
pub fn get_or_default<T: FromSqlOwned + Default>(row: &Record, column: &str) -> Result<T> {
    if has_column(row, column) {
        row.get(column)
    } else {
        Ok(T::default())
    }
}

/// `#[pgdbm(json)]`: a json or jsonb column deserialized with serde_json.
pub fn json<T: DeserializeOwned>(row: &Record, column: &str) -> Result<T> {
    // Goes through `get` for its missing-column error, which lists the row's columns.
    let raw: RawColumn<'_> = row.get(column)?;
    let ty = row
        .as_row()
        .columns()
        .iter()
        .find(|c| c.name() == column)
        .map(|c| c.type_())
        .unwrap_or(&Type::UNKNOWN);
    let fail = |message: String| Error::decode(column, ty, message);
    let body = match (ty, raw.0) {
        (_, None) if *ty == Type::JSON || *ty == Type::JSONB => {
            // `Option<_>` and other types that accept JSON null read it; the rest cannot.
            return T::deserialize(serde_json::Value::Null).map_err(|_| {
                fail("unexpected NULL; use an Option field for nullable columns".into())
            });
        }
        (&Type::JSON, Some(b)) => b,
        (&Type::JSONB, Some(b)) => match b.split_first() {
            Some((1, body)) => body,
            _ => return Err(fail("unsupported jsonb version".into())),
        },
        _ => {
            return Err(fail(format!(
                "#[pgdbm(json)] reads json or jsonb columns; cast it in the query, e.g. \
                 `{column}::jsonb`"
            )))
        }
    };
    serde_json::from_slice(body).map_err(|e| {
        fail(format!(
            "the JSON does not fit {}: {e}",
            std::any::type_name::<T>()
        ))
    })
}

/// `#[pgdbm(json, default)]`.
pub fn json_or_default<T: DeserializeOwned + Default>(row: &Record, column: &str) -> Result<T> {
    if has_column(row, column) {
        json(row, column)
    } else {
        Ok(T::default())
    }
}
