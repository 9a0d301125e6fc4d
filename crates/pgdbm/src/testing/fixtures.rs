//! Fixtures, table snapshots and small table helpers for tests. Every table name is validated
//! (`table` or `schema.table`) and resolved like `{{tables.…}}`.

use std::fmt;
use std::path::Path;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};

use crate::error::{Error, Result};
use crate::manager::AsyncDatabaseManager;
use crate::template::{check_identifier, qualify_table};

fn qualified(db: &AsyncDatabaseManager, table: &str) -> Result<String> {
    qualify_table(table, db.schema())
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| Error::TestDatabase(format!("cannot read fixture {}: {e}", path.display())))
}

/// Runs a SQL fixture file (several statements allowed; templates apply).
pub async fn load_sql_fixture(db: &AsyncDatabaseManager, path: impl AsRef<Path>) -> Result<()> {
    let sql = read(path.as_ref())?;
    db.execute(&sql, &[]).await?;
    Ok(())
}

/// Tables in file order: `{"users": [{...}], "posts": [{...}]}` inserts users first.
struct OrderedTables(Vec<(String, Vec<serde_json::Value>)>);

impl<'de> Deserialize<'de> for OrderedTables {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedTables;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"an object of tables to rows: {"table": [{"column": value}]}"#)
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<OrderedTables, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Vec<serde_json::Value>>()? {
                    out.push((k, v));
                }
                Ok(OrderedTables(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Loads a JSON fixture `{"table": [{"column": value, …}, …], …}`: tables in file order,
/// columns matched by name; a key missing from a row gets the column's default. Values are
/// converted by the server to the columns' types, so timestamps, numerics and JSON columns take
/// their JSON form. Returns the number of rows inserted.
pub async fn load_json_fixture(db: &AsyncDatabaseManager, path: impl AsRef<Path>) -> Result<u64> {
    let path = path.as_ref();
    let text = read(path)?;
    let tables: OrderedTables = serde_json::from_str(&text).map_err(|e| {
        Error::TestDatabase(format!("invalid JSON fixture {}: {e}", path.display()))
    })?;
    let mut total = 0;
    for (table, rows) in tables.0 {
        let target = qualified(db, &table)?;
        // Consecutive rows with the same keys go in one INSERT, so row order is kept and each
        // row names exactly its own columns.
        let mut batch: Vec<serde_json::Value> = Vec::new();
        let mut batch_keys: Vec<String> = Vec::new();
        for row in rows {
            let obj = row.as_object().ok_or_else(|| {
                Error::TestDatabase(format!(
                    "fixture {}: rows of {table:?} must be JSON objects",
                    path.display()
                ))
            })?;
            let keys: Vec<String> = obj.keys().cloned().collect();
            for key in &keys {
                check_identifier(key, "column")?;
            }
            if keys != batch_keys && !batch.is_empty() {
                total += insert_rows(db, &target, &batch_keys, std::mem::take(&mut batch)).await?;
            }
            batch_keys = keys;
            batch.push(row);
        }
        if !batch.is_empty() {
            total += insert_rows(db, &target, &batch_keys, batch).await?;
        }
    }
    Ok(total)
}

async fn insert_rows(
    db: &AsyncDatabaseManager,
    target: &str,
    columns: &[String],
    rows: Vec<serde_json::Value>,
) -> Result<u64> {
    if columns.is_empty() {
        let mut n = 0;
        for _ in &rows {
            n += db
                .execute(&format!("INSERT INTO {target} DEFAULT VALUES"), &[])
                .await?;
        }
        return Ok(n);
    }
    let cols = columns.join(", ");
    let sql = format!(
        "INSERT INTO {target} ({cols}) SELECT {cols} FROM jsonb_populate_recordset(NULL::{target}, $1::jsonb)"
    );
    db.execute(&sql, &[&serde_json::Value::Array(rows)]).await
}

/// Rows in a table.
pub async fn count_rows(db: &AsyncDatabaseManager, table: &str) -> Result<i64> {
    let target = qualified(db, table)?;
    Ok(db
        .fetch_value::<i64>(&format!("SELECT count(*) FROM {target}"), &[])
        .await?
        .unwrap_or(0))
}

/// Empties tables (`TRUNCATE … RESTART IDENTITY CASCADE`).
pub async fn truncate(db: &AsyncDatabaseManager, tables: &[&str]) -> Result<()> {
    if tables.is_empty() {
        return Ok(());
    }
    let names = tables
        .iter()
        .map(|t| qualified(db, t))
        .collect::<Result<Vec<_>>>()?;
    db.execute(
        &format!("TRUNCATE {} RESTART IDENTITY CASCADE", names.join(", ")),
        &[],
    )
    .await?;
    Ok(())
}

/// The contents of a table at one moment, for [`assert_table_unchanged`].
///
/// Rows are kept as the server's JSON text of each row (`to_jsonb`), so timestamps, numerics,
/// JSON and NULLs compare exactly as the server sees them, whatever the column order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSnapshot {
    /// As the caller named it, to take the next snapshot the same way.
    name: String,
    table: String,
    rows: Vec<String>,
}

impl TableSnapshot {
    /// The qualified table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the table was empty.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// `None` when equal, else a readable diff (`-` rows only in `self`, `+` only in `other`).
    pub fn diff(&self, other: &TableSnapshot) -> Option<String> {
        let removed = multiset_minus(&self.rows, &other.rows);
        let added = multiset_minus(&other.rows, &self.rows);
        if removed.is_empty() && added.is_empty() {
            return None;
        }
        let mut out = format!(
            "table {} changed: {} row(s) removed, {} row(s) added\n",
            self.table,
            removed.len(),
            added.len()
        );
        for r in removed {
            out.push_str("- ");
            out.push_str(r);
            out.push('\n');
        }
        for r in added {
            out.push_str("+ ");
            out.push_str(r);
            out.push('\n');
        }
        Some(out)
    }
}

fn multiset_minus<'a>(a: &'a [String], b: &[String]) -> Vec<&'a String> {
    // Both are sorted: walk them together so duplicate rows count.
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() {
        if j >= b.len() || a[i] < b[j] {
            out.push(&a[i]);
            i += 1;
        } else if a[i] == b[j] {
            i += 1;
            j += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// Takes a snapshot of a table.
pub async fn snapshot_table(db: &AsyncDatabaseManager, table: &str) -> Result<TableSnapshot> {
    let target = qualified(db, table)?;
    let rows = db
        .fetch_all(
            &format!("SELECT to_jsonb(t)::text AS r FROM {target} t ORDER BY 1"),
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get::<String>(0))
        .collect::<Result<Vec<_>>>()?;
    let mut rows = rows;
    // The server's collation may order differently from byte order; diff needs byte order.
    rows.sort();
    Ok(TableSnapshot {
        name: table.to_owned(),
        table: target,
        rows,
    })
}

/// Panics with a readable diff if the table differs from `snapshot`.
pub async fn assert_table_unchanged(db: &AsyncDatabaseManager, snapshot: &TableSnapshot) {
    let now = match snapshot_table(db, &snapshot.name).await {
        Ok(s) => s,
        Err(e) => panic!("cannot snapshot {}: {e}", snapshot.table),
    };
    if let Some(diff) = snapshot.diff(&now) {
        panic!("{diff}");
    }
}
