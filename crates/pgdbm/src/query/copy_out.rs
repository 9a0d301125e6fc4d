//! `copy_to`: `COPY … TO STDOUT` as a stream of bytes, for exports.

use std::future::Future;

use bytes::Bytes;
use futures_util::Stream;

use super::instrument::{Call, Method, Op};
use super::stream::{start_on, start_owned, Opener, Owner};
use super::{query_error, Runner};
use crate::connection::PgConn;
use crate::error::{Error, Result};
use crate::replica::Intent;
use crate::template::qualify_table;

/// The data format of [`copy_to`](crate::AsyncDatabaseManager::copy_to) and
/// [`copy_from_csv`](crate::AsyncDatabaseManager::copy_from_csv).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CopyFormat {
    /// CSV. `header`: a first line of column names (written on export, skipped on import).
    Csv {
        /// Whether the first line holds the column names.
        header: bool,
    },
    /// PostgreSQL's text format: tab-separated, `\N` for NULL.
    Text,
    /// PostgreSQL's binary COPY format.
    Binary,
}

impl CopyFormat {
    /// The `COPY` options clause.
    pub(crate) fn options(self) -> &'static str {
        match self {
            CopyFormat::Csv { header: true } => "(FORMAT csv, HEADER true)",
            CopyFormat::Csv { header: false } => "(FORMAT csv)",
            CopyFormat::Text => "(FORMAT text)",
            CopyFormat::Binary => "(FORMAT binary)",
        }
    }
}

/// `COPY (query) TO STDOUT …`, or `COPY table TO STDOUT …` for a bare table name.
pub(crate) fn copy_out_sql<E: Runner>(ex: &E, source: &str, format: CopyFormat) -> Result<String> {
    let source = source.trim();
    // A query always has a space; a word (or `schema.table`) is a table name, checked as one;
    // `{{tables.t}}` is one too, checked by its rendering.
    let from = if source.contains(char::is_whitespace) {
        let query = ex.templates().render(source)?;
        format!("({})", query.trim_end().trim_end_matches(';'))
    } else if source.starts_with("{{") {
        ex.templates().render(source)?.into_owned()
    } else {
        qualify_table(source, ex.templates().schema())?
    };
    Ok(format!("COPY {from} TO STDOUT {}", format.options()))
}

/// The data of a `COPY … TO STDOUT`.
struct CopyOut {
    /// The caller's transaction is open on the connection.
    in_transaction: bool,
}

impl Opener for CopyOut {
    type Items = tokio_postgres::CopyOutStream;
    type Item = Bytes;

    fn open<'c>(
        &'c self,
        conn: &'c PgConn,
        sql: &'c str,
    ) -> impl Future<Output = Result<Self::Items, tokio_postgres::Error>> + Send + 'c {
        conn.queries
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        async move {
            if conn.shares_server() && !self.in_transaction {
                // The driver prepares a named statement for the COPY and closes it after:
                // behind a transaction pooler both must reach the same server connection, so
                // they run in a transaction, rolled back when the connection is released.
                conn.enter_transaction();
                let (begun, out) = futures_util::future::join(
                    conn.client.batch_execute("BEGIN"),
                    conn.client.copy_out(sql),
                )
                .await;
                begun?;
                return out;
            }
            conn.client.copy_out(sql).await
        }
    }

    fn error(&self, e: tokio_postgres::Error, sql: &str) -> Error {
        query_error(e, sql, std::iter::empty())
    }
}

fn same(b: Bytes) -> Bytes {
    b
}

pub(crate) async fn copy_to<'e, E: Runner>(
    ex: &'e E,
    source: &str,
    format: CopyFormat,
) -> Result<impl Stream<Item = Result<Bytes>> + Send + 'e> {
    let sql = copy_out_sql(ex, source, format)?;
    Ok(start_on(
        ex,
        sql,
        Intent::Write,
        CopyOut {
            in_transaction: ex.in_transaction(),
        },
    )
    .await?
    .into_stream(same))
}

super::stream::owned_stream!(
    /// The data of a `COPY … TO STDOUT` as a stream that owns its pooled connection:
    /// `Send + 'static`, for an HTTP response body. Made by
    /// [`AsyncDatabaseManager::copy_to_owned`](crate::AsyncDatabaseManager::copy_to_owned).
    CopyOutStream,
    Bytes
);

/// `copy_to` whose stream owns its connection, and `db` with it.
pub(crate) async fn copy_to_owned<D: Owner>(
    db: &D,
    source: &str,
    format: CopyFormat,
) -> Result<CopyOutStream> {
    let open = async {
        let sql = copy_out_sql(db, source, format)?;
        let data = start_owned(
            db,
            sql,
            Intent::Write,
            CopyOut {
                in_transaction: false,
            },
        )
        .await?;
        Ok(data.into_stream(same))
    };
    let sql = || copy_out_sql(db, source, format).ok();
    let op = Op::copy_out(Method::CopyToOwned, source, &sql);
    match Call::begin(db, op) {
        None => open.await.map(CopyOutStream::new),
        Some(call) => call.stream(open).await.map(CopyOutStream::new),
    }
}
