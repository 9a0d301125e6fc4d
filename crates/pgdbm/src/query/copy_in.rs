//! `copy_from_csv`: data read from an `AsyncRead` streamed into `COPY … FROM STDIN`.

use bytes::BytesMut;
use futures_util::SinkExt;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::copy::{column_list, in_copy};
use super::copy_out::CopyFormat;
use super::{batch_logged, logged, query_error, Runner};
use crate::connection::PgConn;
use crate::error::{Error, Result};
use crate::template::qualify_table;

/// Bytes read from the source and sent per COPY data message.
const CHUNK: usize = 64 * 1024;

pub(crate) async fn copy_from<E: Runner, R: AsyncRead + Unpin + Send>(
    ex: &E,
    table: &str,
    columns: Option<&[&str]>,
    format: CopyFormat,
    reader: R,
) -> Result<u64> {
    let qualified = qualify_table(table, ex.templates().schema())?;
    let columns = column_list(columns)?
        .map(|c| format!(" ({c})"))
        .unwrap_or_default();
    let sql = format!("COPY {qualified}{columns} FROM STDIN {}", format.options());
    all_or_nothing!(ex, &sql, |conn| send(conn, &sql, reader))
}

/// Streams `reader` into the COPY. A failure (of the reader or the server) drops the sink
/// before it is finished, which aborts the COPY on the server: nothing is written.
async fn send<R: AsyncRead + Unpin>(conn: &PgConn, sql: &str, mut reader: R) -> Result<u64> {
    let sink = conn
        .client
        .copy_in::<_, bytes::Bytes>(sql)
        .await
        .map_err(|e| query_error(e, sql, std::iter::empty()))?;
    in_copy(conn, async {
        futures_util::pin_mut!(sink);
        let mut buf = BytesMut::with_capacity(CHUNK);
        loop {
            buf.reserve(CHUNK);
            let n = reader.read_buf(&mut buf).await.map_err(|e| Error::Io {
                operation: format!("reading the data for {}", crate::error::shorten_sql(sql)),
                source: e,
            })?;
            let end = n == 0;
            if buf.len() >= CHUNK || (end && !buf.is_empty()) {
                sink.send(buf.split().freeze())
                    .await
                    .map_err(|e| copy_error(e, sql))?;
            }
            if end {
                break;
            }
        }
        sink.as_mut().finish().await.map_err(|e| copy_error(e, sql))
    })
    .await
}

/// A server error in the data names the line it was found on (from the error's context,
/// which also quotes the line; only its number is kept).
fn copy_error(e: tokio_postgres::Error, sql: &str) -> Error {
    let line = e
        .as_db_error()
        .and_then(|db| db.where_())
        .and_then(|w| w.split(", line ").nth(1))
        .map(|rest| {
            rest.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        });
    let mut err = query_error(e, sql, std::iter::empty());
    if let (Error::Query { params, .. }, Some(line)) = (&mut err, line) {
        *params = format!("line {line}");
    }
    err
}
