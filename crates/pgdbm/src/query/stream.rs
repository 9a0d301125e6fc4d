//! Streaming results: `fetch_stream` (rows, the connection travelling with the stream), its
//! owned form [`RecordStream`], and the per-item timeout that `copy_to` shares.

use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures_util::{Stream, TryStreamExt};
use tokio_postgres::types::ToSql;

use super::instrument::{Call, Method, Op};
use super::{query_error, ConnRef, Runner, StatementLog};
use crate::connection::PgConn;
use crate::error::{shorten_sql, Error, Result};
use crate::record::Record;
use crate::replica::Intent;

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
    /// Whom to tell of a failure (the executor's `note_error`).
    note: N,
}

/// Who hears of a streaming call's failures: the executor that started it.
pub(crate) trait NoteError: Send {
    fn note(&self, error: &Error);
}

impl<E: Runner> NoteError for &E {
    fn note(&self, error: &Error) {
        self.note_error(error)
    }
}

/// An executor that can hand a stream a pooled connection of its own and travel with it, so
/// that the stream is `'static`: the manager.
pub(crate) trait Owner: Runner + Clone + Send + Sync + 'static {
    /// A connection for a call that `intent`s to read or write with `sql`, owned by the caller.
    fn owned_conn(
        &self,
        deadline: Option<Instant>,
        intent: Intent,
        sql: &str,
    ) -> impl Future<Output = Result<ConnRef<'static>>> + Send;
}

/// An [`Owner`] hears of the failures of the streams it started.
pub(crate) struct Noted<D>(D);

impl<D: Owner> NoteError for Noted<D> {
    fn note(&self, error: &Error) {
        self.0.note_error(error)
    }
}

/// What a streaming call sends: the statement that starts the stream, and how its errors are
/// wrapped.
pub(crate) trait Opener {
    type Items: Stream<Item = Result<Self::Item, tokio_postgres::Error>> + Send;
    type Item;
    fn open<'c>(
        &'c self,
        conn: &'c PgConn,
        sql: &'c str,
    ) -> impl Future<Output = Result<Self::Items, tokio_postgres::Error>> + Send + 'c;
    fn error(&self, e: tokio_postgres::Error, sql: &str) -> Error;
    /// The statement's parameters, for the statement log.
    fn params(&self) -> &[&(dyn ToSql + Sync)] {
        &[]
    }
}

/// Starts `opener`'s statement on `conn` under the call's `deadline`, which also covers the
/// wait for the first item. On a timeout the connection is left cancelling. With a `context`
/// (a `with_settings`/`with_role` view) the statement runs in a `READ ONLY` transaction that
/// starts with it, rolled back when the connection is released.
pub(crate) async fn start<O: Opener, C, N>(
    conn: C,
    sql: String,
    timeout: Option<Duration>,
    deadline: Option<Instant>,
    (note, context): (N, Option<&str>),
    opener: &O,
) -> Result<Streaming<O::Items, C, N>>
where
    C: Deref<Target = PgConn> + Send,
    N: NoteError,
{
    let started = Instant::now();
    let opened = match conn.begin_op() {
        Err(e) => Err(e),
        Ok(()) => {
            // Logged when the first response arrives: the rest is read at the caller's pace.
            let log = StatementLog::start(&sql, opener.params().iter().copied());
            let opening = async {
                // Rare (reset_on_release = "always"), and a stream is long: a round trip of
                // its own here.
                if conn.take_reset_pending() {
                    Box::pin(conn.reset_pending_now()).await?;
                }
                let Some(context) = context else {
                    return opener.open(&conn, &sql).await;
                };
                // Boxed: inline, this rare path would grow every stream's future.
                Box::pin(async {
                    conn.enter_transaction();
                    let begin = conn.begin_sql("BEGIN READ ONLY", Some(context));
                    let (begun, items) = futures_util::future::join(
                        conn.client.batch_execute(&begin),
                        opener.open(&conn, &sql),
                    )
                    .await;
                    begun?;
                    items
                })
                .await
            };
            let opened = match deadline {
                Some(d) => tokio::time::timeout_at(d.into(), opening).await.ok(),
                None => Some(opening.await),
            };
            match &opened {
                Some(r) => log.finish_driver(r.as_ref()),
                None => log.timed_out(),
            }
            match opened {
                Some(Ok(items)) => Ok(items),
                Some(Err(e)) => {
                    conn.forget_if_stale(&sql, &e);
                    conn.end_op();
                    Err(opener.error(e, &sql))
                }
                None => {
                    conn.start_cancelling();
                    Err(Error::Timeout {
                        operation: shorten_sql(&sql),
                        after: started.elapsed(),
                    })
                }
            }
        }
    };
    match opened {
        Ok(items) => Ok(Streaming {
            items: Box::pin(items),
            conn,
            sql,
            timeout,
            deadline,
            note,
        }),
        Err(e) => {
            note.note(&e);
            Err(e)
        }
    }
}

/// Starts a stream on a connection of `ex`: the stream borrows it.
pub(crate) async fn start_on<'e, E: Runner, O: Opener>(
    ex: &'e E,
    sql: String,
    intent: Intent,
    opener: O,
) -> Result<Streaming<O::Items, ConnRef<'e>, &'e E>> {
    let deadline = ex.deadline();
    let context = ex.local_context().filter(|_| !ex.in_transaction());
    let conn = ex.conn(deadline, intent, &sql).await?;
    if let ConnRef::Replica(_, host) = &conn {
        let host = host.clone();
        return match start(
            conn,
            sql.clone(),
            ex.timeout(),
            deadline,
            (ex, context),
            &opener,
        )
        .await
        {
            // The replica went away before the first row: once more, on another server.
            Err(e) if host.fails_over(&e) => {
                let conn = ex.conn(deadline, intent, &sql).await?;
                start(conn, sql, ex.timeout(), deadline, (ex, context), &opener).await
            }
            other => other,
        };
    }
    start(conn, sql, ex.timeout(), deadline, (ex, context), &opener).await
}

/// Starts a stream on a connection of its own from the manager's pool: the stream owns it,
/// and a handle on the manager, and is `'static`.
pub(crate) async fn start_owned<D: Owner, O: Opener>(
    db: &D,
    sql: String,
    intent: Intent,
    opener: O,
) -> Result<Streaming<O::Items, ConnRef<'static>, Noted<D>>> {
    let deadline = db.deadline();
    let conn = db.owned_conn(deadline, intent, &sql).await?;
    if let ConnRef::Replica(_, host) = &conn {
        let host = host.clone();
        return match start(
            conn,
            sql.clone(),
            db.timeout(),
            deadline,
            (Noted(db.clone()), db.local_context()),
            &opener,
        )
        .await
        {
            Err(e) if host.fails_over(&e) => {
                let conn = db.owned_conn(deadline, intent, &sql).await?;
                start(
                    conn,
                    sql,
                    db.timeout(),
                    deadline,
                    (Noted(db.clone()), db.local_context()),
                    &opener,
                )
                .await
            }
            other => other,
        };
    }
    start(
        conn,
        sql,
        db.timeout(),
        deadline,
        (Noted(db.clone()), db.local_context()),
        &opener,
    )
    .await
}

impl<S, T, C, N> Streaming<S, C, N>
where
    S: Stream<Item = Result<T, tokio_postgres::Error>> + Send,
    C: Deref<Target = PgConn> + Send,
    N: NoteError,
{
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
                        st.note.note(&err);
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
                    st.note.note(&err);
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
    let opener = Rows {
        params,
        // A `with_settings`/`with_role` view's stream runs in a transaction of its own.
        in_transaction: ex.in_transaction() || ex.local_context().is_some(),
    };
    Ok(start_on(ex, sql, Intent::Read, opener)
        .await?
        .into_stream(Record::new))
}

/// A query's rows. The driver encodes the parameters before it returns the stream, so the
/// stream borrows nothing of them.
struct Rows<'p> {
    params: &'p [&'p (dyn ToSql + Sync)],
    in_transaction: bool,
}

impl Opener for Rows<'_> {
    type Items = tokio_postgres::RowStream;
    type Item = tokio_postgres::Row;

    fn open<'c>(
        &'c self,
        conn: &'c PgConn,
        sql: &'c str,
    ) -> impl Future<Output = Result<Self::Items, tokio_postgres::Error>> + Send + 'c {
        conn.query_stream(sql, self.params, self.in_transaction)
    }

    fn error(&self, e: tokio_postgres::Error, sql: &str) -> Error {
        query_error(e, sql, self.params.iter().copied())
    }

    fn params(&self) -> &[&(dyn ToSql + Sync)] {
        self.params
    }
}

/// A public stream type that owns its pooled connection: a boxed stream of `$item`.
macro_rules! owned_stream {
    ($(#[$doc:meta])* $name:ident, $item:ty) => {
        $(#[$doc])*
        #[must_use = "a stream does nothing unless polled; dropping it cancels its statement"]
        pub struct $name {
            inner: std::pin::Pin<Box<dyn futures_util::Stream<Item = crate::Result<$item>> + Send>>,
        }

        impl $name {
            pub(crate) fn new(
                inner: impl futures_util::Stream<Item = crate::Result<$item>> + Send + 'static,
            ) -> Self {
                $name { inner: Box::pin(inner) }
            }
        }

        impl futures_util::Stream for $name {
            type Item = crate::Result<$item>;

            fn poll_next(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<Self::Item>> {
                self.inner.as_mut().poll_next(cx)
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name)).finish_non_exhaustive()
            }
        }
    };
}

pub(crate) use owned_stream;

owned_stream!(
    /// Rows as a stream that owns its pooled connection: `Send + 'static`, so it can be
    /// returned from a function, moved into a spawned task or become an HTTP response body.
    /// Made by [`AsyncDatabaseManager::fetch_stream_owned`](crate::AsyncDatabaseManager::fetch_stream_owned); it behaves exactly as
    /// [`fetch_stream`](crate::AsyncDatabaseManager::fetch_stream)'s stream.
    RecordStream,
    Record
);

/// `fetch_stream` whose stream owns its connection, and `db` with it.
pub(crate) async fn fetch_stream_owned<D: Owner>(
    db: &D,
    query: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<RecordStream> {
    let open = async {
        let sql = db.templates().render(query)?.into_owned();
        let opener = Rows {
            params,
            // A `with_settings`/`with_role` view's stream runs in a transaction of its own.
            in_transaction: db.local_context().is_some(),
        };
        let rows = start_owned(db, sql, Intent::Read, opener).await?;
        Ok(rows.into_stream(Record::new))
    };
    let op = Op::new(Method::FetchStreamOwned, query, params);
    match Call::begin(db, op) {
        None => open.await.map(RecordStream::new),
        Some(call) => call.stream(open).await.map(RecordStream::new),
    }
}
