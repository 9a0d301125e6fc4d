//! `fetch_stream`: rows one at a time, the connection travelling with the stream.

use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use tokio_postgres::types::ToSql;

use super::{query_error, ConnRef, Runner, StatementLog};
use crate::error::{shorten_sql, Error, Result};
use crate::record::Record;

/// Rows as a stream, for results too large to hold at once. The call's timeout covers the
/// wait for the first row (from the call) and then each wait for the next row. On expiry the
/// stream yields [`Error::Timeout`] and ends; a stream dropped before its end cancels its query.
pub(crate) async fn stream_rows<'e, E: Runner>(
    ex: &'e E,
    query: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<impl futures_util::Stream<Item = Result<Record>> + Send + 'e> {
    let sql = ex.templates().render(query)?.into_owned();
    let timeout = ex.timeout();
    let deadline = ex.deadline();
    let conn = ex.conn(deadline).await?;
    let started = Instant::now();
    conn.begin_op()?;
    // Logged when the first response arrives: the rest is read at the caller's pace.
    let log = StatementLog::start(&sql, params.iter().copied());
    let opened = match deadline {
        Some(d) => tokio::time::timeout_at(
            d.into(),
            conn.query_stream(&sql, params, ex.in_transaction()),
        )
        .await
        .ok(),
        None => Some(conn.query_stream(&sql, params, ex.in_transaction()).await),
    };
    match &opened {
        Some(r) => log.finish_driver(r.as_ref()),
        None => log.timed_out(),
    }
    let stream = match opened {
        Some(Ok(stream)) => stream,
        Some(Err(e)) => {
            conn.forget_if_stale(&sql, &e);
            conn.end_op();
            let err = query_error(e, &sql, params.iter().copied());
            ex.note_error(&err);
            return Err(err);
        }
        None => {
            conn.start_cancelling();
            let err = Error::Timeout {
                operation: shorten_sql(&sql),
                after: started.elapsed(),
            };
            ex.note_error(&err);
            return Err(err);
        }
    };
    // The connection travels with the stream: released when the stream ends or is dropped
    // (then, still active, it is cancelled and drained before anyone else gets it).
    let state = StreamState {
        rows: Box::pin(stream),
        conn,
        sql,
        timeout,
        deadline,
        ex,
    };
    Ok(futures_util::stream::unfold(
        Some(state),
        |state| async move {
            let mut st = state?;
            let next = match st.deadline {
                Some(d) => match tokio::time::timeout_at(d.into(), st.rows.try_next()).await {
                    Ok(r) => r,
                    Err(_) => {
                        st.conn.start_cancelling();
                        let err = Error::Timeout {
                            operation: shorten_sql(&st.sql),
                            after: st.timeout.unwrap_or_default(),
                        };
                        st.ex.note_error(&err);
                        return Some((Err(err), None));
                    }
                },
                None => st.rows.try_next().await,
            };
            match next {
                Ok(Some(row)) => {
                    st.deadline = st.timeout.map(|t| Instant::now() + t);
                    Some((Ok(Record::new(row)), Some(st)))
                }
                Ok(None) => {
                    st.conn.end_op();
                    None
                }
                Err(e) => {
                    st.conn.end_op();
                    let err = query_error(e, &st.sql, std::iter::empty());
                    st.ex.note_error(&err);
                    Some((Err(err), None))
                }
            }
        },
    ))
}

struct StreamState<'e, E> {
    rows: std::pin::Pin<Box<tokio_postgres::RowStream>>,
    conn: ConnRef<'e>,
    sql: String,
    timeout: Option<Duration>,
    deadline: Option<Instant>,
    ex: &'e E,
}
