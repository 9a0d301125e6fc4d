//! `copy_records_to_table`: binary `COPY … FROM STDIN`, encoded as the table's column types.

use super::widen::{CopyColumn, NotLossless, WidenedRow};
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
    let column_list = column_list(columns)?;
    let select = format!(
        "SELECT {} FROM {qualified} LIMIT 0",
        column_list.as_deref().unwrap_or("*")
    );
    let copy = format!("COPY {qualified} FROM STDIN (FORMAT binary)");
    all_or_nothing!(ex, &copy, |conn| copy_in(
        conn, &qualified, &select, records
    ))
}

/// The COPY's column list, each name checked: `None` for all columns.
pub(crate) fn column_list(columns: Option<&[&str]>) -> Result<Option<String>> {
    let Some(cols) = columns else {
        return Ok(None);
    };
    if cols.is_empty() {
        return Err(Error::Schema(
            "columns must not be empty; pass None for all columns".into(),
        ));
    }
    for c in cols {
        check_identifier(c, "column")?;
    }
    Ok(Some(cols.join(", ")))
}

async fn copy_in<P: Params>(
    conn: &PgConn,
    qualified: &str,
    select: &str,
    records: impl IntoIterator<Item = P>,
) -> Result<u64> {
    // The table's own column types, so values are encoded exactly as the columns expect.
    let columns: Vec<CopyColumn> = conn
        .describe(select, true, |probe| {
            probe
                .columns()
                .iter()
                .map(|c| CopyColumn::new(c.name().to_owned(), c.type_().clone()))
                .collect()
        })
        .await
        .map_err(|e| query_error(e, select, std::iter::empty()))?;
    let types: Vec<_> = columns.iter().map(|c| c.ty.clone()).collect();
    let names: Vec<String> = columns
        .iter()
        .map(|c| crate::template::quote_ident(&c.name))
        .collect();
    let copy_sql = format!(
        "COPY {qualified} ({}) FROM STDIN (FORMAT binary)",
        names.join(", ")
    );
    let sink = conn
        .client
        .copy_in(&copy_sql)
        .await
        .map_err(|e| query_error(e, &copy_sql, std::iter::empty()))?;
    in_copy(conn, async {
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
                .write_raw(WidenedRow::new(&row, &columns))
                .await
                .map_err(|e| {
                    // A type the column cannot take: the error names the column and both
                    // types, and no value is needed to see why.
                    let mismatch =
                        std::error::Error::source(&e).is_some_and(|c| c.is::<NotLossless>());
                    let mut err = query_error(e, &copy_sql, param_iter(&row));
                    if let Error::Query { params, .. } = &mut err {
                        *params = if mismatch {
                            format!("record {i}")
                        } else {
                            format!("record {i}: {params}")
                        };
                    }
                    err
                })?;
        }
        writer
            .finish()
            .await
            .map_err(|e| query_error(e, &copy_sql, std::iter::empty()))
    })
    .await
}

/// Runs `send`, which streams a started `COPY … FROM STDIN` and finishes it (or, failing,
/// drops its sink, which aborts the COPY on the server), in the `Copy` session state.
pub(crate) async fn in_copy(
    conn: &PgConn,
    send: impl std::future::Future<Output = Result<u64>>,
) -> Result<u64> {
    conn.set_copying(true);
    let copied = send.await;
    // Finished or aborted (the sink is gone): no longer streaming. Dropped before this line,
    // the state stays `Copy` and the connection is rolled back or closed.
    conn.set_copying(false);
    let n = copied?;
    conn.queries
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(n)
}
