//! `copy_records_to_table`: binary `COPY … FROM STDIN`, encoded as the table's column types.

use super::{batch_logged, logged, query_error, Runner};
use crate::connection::PgConn;
use crate::error::{Error, Result};
use crate::params::{param_iter, Params};
use crate::template::{check_identifier, qualify_table};

pub(crate) async fn copy_records_to_table<E: Runner, P: Params>(
    ex: &E,
    table: &str,
    records: impl IntoIterator<Item = P>,
    columns: Option<&[&str]>,
) -> Result<u64> {
    let qualified = qualify_table(table, ex.templates().schema())?;
    let column_list = match columns {
        Some(cols) => {
            if cols.is_empty() {
                return Err(Error::Schema(
                    "columns must not be empty; pass None for all columns".into(),
                ));
            }
            for c in cols {
                check_identifier(c, "column")?;
            }
            Some(cols.join(", "))
        }
        None => None,
    };
    let select = format!(
        "SELECT {} FROM {qualified} LIMIT 0",
        column_list.as_deref().unwrap_or("*")
    );
    let copy = format!("COPY {qualified} FROM STDIN (FORMAT binary)");
    all_or_nothing!(ex, &copy, |conn| copy_in(
        conn, &qualified, &select, records
    ))
}

async fn copy_in<P: Params>(
    conn: &PgConn,
    qualified: &str,
    select: &str,
    records: impl IntoIterator<Item = P>,
) -> Result<u64> {
    // The table's own column types, so values are encoded exactly as the columns expect.
    let probe = conn
        .client
        .prepare(select)
        .await
        .map_err(|e| query_error(e, select, std::iter::empty()))?;
    let types: Vec<_> = probe.columns().iter().map(|c| c.type_().clone()).collect();
    let names: Vec<String> = probe
        .columns()
        .iter()
        .map(|c| crate::template::quote_ident(c.name()))
        .collect();
    drop(probe);
    let copy_sql = format!(
        "COPY {qualified} ({}) FROM STDIN (FORMAT binary)",
        names.join(", ")
    );
    let sink = conn
        .client
        .copy_in(&copy_sql)
        .await
        .map_err(|e| query_error(e, &copy_sql, std::iter::empty()))?;
    conn.set_copying(true);
    let copied = async {
        let writer = tokio_postgres::binary_copy::BinaryCopyInWriter::new(sink, &types);
        futures_util::pin_mut!(writer);
        for (i, row) in records.into_iter().enumerate() {
            if row.param_count() != types.len() {
                return Err(Error::decode(
                    format!("record {i}"),
                    "-",
                    format!(
                        "has {} value(s) but the COPY targets {} column(s)",
                        row.param_count(),
                        types.len()
                    ),
                ));
            }
            // Dropping the writer on error aborts the COPY on the server.
            writer
                .as_mut()
                .write_raw(param_iter(&row))
                .await
                .map_err(|e| {
                    let mut err = query_error(e, &copy_sql, param_iter(&row));
                    if let Error::Query { params, .. } = &mut err {
                        *params = format!("record {i}: {params}");
                    }
                    err
                })?;
        }
        writer
            .finish()
            .await
            .map_err(|e| query_error(e, &copy_sql, std::iter::empty()))
    }
    .await;
    // Finished or aborted by the driver (the writer is gone): no longer streaming. Dropped
    // before this line, the state stays `Copy` and the connection is rolled back or closed.
    conn.set_copying(false);
    let n = copied?;
    conn.queries
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(n)
}
