//! Streaming results: `fetch_stream` (rows, the connection travelling with the stream), its
//! owned form [`RecordStream`], and the per-item timeout that `copy_to` shares.

use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::{Stream, TryStreamExt};
use tokio_postgres::types::ToSql;

use super::{log_query, query_error, ConnRef, Runner};
use crate::connection::PgConn;
use crate::error::{shorten_sql, Error, Result};
use crate::manager::AsyncDatabaseManager;
use crate::record::Record;

/// A streaming call whose statement has started: the items still to come, the connection that
/// travels with them, and the per-item timeout. Dropped before its end, its fields go in
/// order: the driver's stream first, then the connection, which is released still active, so
/// it is cancelled and drained before anyone else gets it.
pub(crate) struct Streaming<S, C, N> {
    items: Pin<Box<S>>,
    conn: C,
    sql: String,
    timeout: Option<Duration>,
    deadline: Option<Instant>,
    /// The executor's `note_error`.
    note: N,
}

/// Starts a streaming statement (`opening`) on `conn` under the call's `deadline`, which
/// also covers the wait for the first item. `on_error` wraps a driver error. On a timeout the
/// connection is left cancelling.
pub(crate) async fn open<S>(
    conn: &PgConn,
    sql: &str,
    deadline: Option<Instant>,
    opening: impl Future<Output = Result<S, tokio_postgres::Error>>,
    on_error: impl FnOnce(tokio_postgres::Error) -> Error,
) -> Result<S> {
    let started = Instant::now();
    conn.begin_op()?;
    let opened = match deadline {
        Some(d) => tokio::time::timeout_at(d.into(), opening).await.ok(),
        None => Some(opening.await),
    };
    match opened {
        Some(Ok(items)) => Ok(items),
        Some(Err(e)) => {
            conn.forget_if_stale(sql, &e);
            conn.end_op();
            Err(on_error(e))
        }
        None => {
            conn.start_cancelling();
            Err(Error::Timeout {
                operation: shorten_sql(sql),
                after: started.elapsed(),
            })
        }
    }
}

impl<S, T, C, N> Streaming<S, C, N>
where
    S: Stream<Item = Result<T, tokio_postgres::Error>> + Send,
    C: Deref<Target = PgConn> + Send,
    N: Fn(&Error) + Send,
{
    pub(crate) fn new(
        items: S,
        conn: C,
        sql: String,
        timeout: Option<Duration>,
        deadline: Option<Instant>,
        note: N,
    ) -> Self {
        Streaming {
            items: Box::pin(items),
            conn,
            sql,
            timeout,
            deadline,
            note,
        }
    }

    /// The items, each mapped by `map`, each wait for the next one under the timeout. On
    /// expiry the stream yields [`Error::Timeout`] and ends; the connection is then released
    /// cancelling, and recovered out of the pool.
    pub(crate) fn into_stream<U>(self, map: fn(T) -> U) -> impl Stream<Item = Result<U>> + Send {
        futures_util::stream::unfold(Some(self), move |state| async move {
            let mut st = state?;
            let next = match st.deadline {
                Some(d) => match tokio::time::timeout_at(d.into(), st.items.try_next()).await {
                    Ok(r) => r,
                    Err(_) => {
                        st.conn.start_cancelling();
                        let err = Error::Timeout {
                            operation: shorten_sql(&st.sql),
                            after: st.timeout.unwrap_or_default(),
                        };
                        (st.note)(&err);
                        return Some((Err(err), None));
                    }
                },
                None => st.items.try_next().await,
            };
            match next {
                Ok(Some(item)) => {
                    st.deadline = st.timeout.map(|t| Instant::now() + t);
                    Some((Ok(map(item)), Some(st)))
                }
                Ok(None) => {
                    st.conn.end_op();
                    None
                }
                Err(e) => {
                    st.conn.end_op();
                    let err = query_error(e, &st.sql, std::iter::empty());
                    (st.note)(&err);
                    Some((Err(err), None))
                }
            }
        })
    }
}

/// Rows as a stream, for results too large to hold at once. The call's timeout covers the
/// wait for the first row (from the call) and then each wait for the next row. On expiry the
/// stream yields [`Error::Timeout`] and ends; a stream dropped before its end cancels its query.
pub(crate) async fn stream_rows<'e, E: Runner>(
    ex: &'e E,
    query: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<impl Stream<Item = Result<Record>> + Send + 'e> {
    let sql = ex.templates().render(query)?.into_owned();
    log_query(&sql, params.iter().copied());
    let deadline = ex.deadline();
    let conn = ex.conn(deadline).await?;
    let rows = match open_rows(ex, &conn, &sql, deadline, params).await {
        Ok(rows) => rows,
        Err(e) => {
            ex.note_error(&e);
            return Err(e);
        }
    };
    let note = move |e: &Error| ex.note_error(e);
    Ok(Streaming::new(rows, conn, sql, ex.timeout(), deadline, note).into_stream(Record::new))
}

/// Starts a row stream. The driver encodes the parameters before it returns the stream, so
/// the stream borrows nothing of them.
async fn open_rows<E: Runner>(
    ex: &E,
    conn: &PgConn,
    sql: &str,
    deadline: Option<Instant>,
    params: &[&(dyn ToSql + Sync)],
) -> Result<tokio_postgres::RowStream> {
    let opening = conn.query_stream(sql, params, ex.in_transaction());
    open(conn, sql, deadline, opening, |e| {
        query_error(e, sql, params.iter().copied())
    })
    .await
}

/// Rows as a stream that owns its pooled connection: `Send + 'static`, so it can be returned
/// from a function, moved into a spawned task or become an HTTP response body. Made by
/// [`AsyncDatabaseManager::fetch_stream_owned`]; it behaves exactly as
/// [`fetch_stream`](AsyncDatabaseManager::fetch_stream)'s stream.
#[must_use = "a stream does nothing unless polled; dropping it cancels its query"]
pub struct RecordStream {
    inner: Pin<Box<dyn Stream<Item = Result<Record>> + Send>>,
}

impl Stream for RecordStream {
    type Item = Result<Record>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl std::fmt::Debug for RecordStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordStream").finish_non_exhaustive()
    }
}

impl AsyncDatabaseManager {
    /// [`fetch_stream`](Self::fetch_stream) whose stream owns its connection (and a handle on
    /// the manager) instead of borrowing the manager: `Send + 'static`, for an HTTP handler's
    /// response body or a spawned task. The parameters are sent before this returns, so they
    /// need not outlive the call. Same timeout rules; dropped before its end, the stream
    /// cancels its query and its connection goes back to the pool only once it is idle.
    ///
    /// ```no_run
    /// use futures_util::TryStreamExt;
    ///
    /// async fn events(db: &pgdbm::AsyncDatabaseManager, kind: &str) -> pgdbm::Result<pgdbm::RecordStream> {
    ///     db.fetch_stream_owned("SELECT * FROM {{tables.events}} WHERE kind = $1", &[&kind]).await
    /// }
    /// # async fn f(db: pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
    /// let rows = events(&db, "login").await?;
    /// let task = tokio::spawn(rows.try_for_each(|row| async move {
    ///     println!("{:?}", row.get::<i64>("id"));
    ///     Ok(())
    /// }));
    /// # Ok(()) }
    /// ```
    pub async fn fetch_stream_owned(
        &self,
        query: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<RecordStream> {
        let sql = self.templates().render(query)?.into_owned();
        log_query(&sql, params.iter().copied());
        let deadline = self.deadline();
        let conn = ConnRef::Pooled(self.pool()?.get(deadline).await?);
        let rows = match open_rows(self, &conn, &sql, deadline, params).await {
            Ok(rows) => rows,
            Err(e) => {
                self.note_error(&e);
                return Err(e);
            }
        };
        let db = self.clone();
        let note = move |e: &Error| db.note_error(e);
        let rows = Streaming::new(rows, conn, sql, self.timeout(), deadline, note);
        Ok(RecordStream {
            inner: Box::pin(rows.into_stream(Record::new)),
        })
    }
}
