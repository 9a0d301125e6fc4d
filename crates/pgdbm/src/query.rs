//! The query methods, written once for both the manager and transactions: template rendering,
//! logging, timeouts, error wrapping.

use std::future::Future;
use std::ops::Deref;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt};
use postgres_types::FromSqlOwned;
use tokio_postgres::types::ToSql;

use crate::connection::{typed_params, PgConn, PoolConnection};
use crate::error::{shorten_sql, Error, Result};
use crate::params::{mask_params, param_iter, Params};
use crate::record::Record;
use crate::template::{check_identifier, qualify_table, Templates};

/// Statements kept in flight at once by `executemany`.
const PIPELINE_DEPTH: usize = 256;

/// A connection for one call: checked out of the pool, or borrowed from a transaction.
// Boxing the pooled variant would cost an allocation per query; the enum lives on the stack
// of one call only.
#[allow(clippy::large_enum_variant)]
pub(crate) enum ConnRef<'a> {
    Pooled(PoolConnection),
    Borrowed(&'a PgConn),
}

impl Deref for ConnRef<'_> {
    type Target = PgConn;
    fn deref(&self) -> &PgConn {
        match self {
            ConnRef::Pooled(c) => c.conn(),
            ConnRef::Borrowed(c) => c,
        }
    }
}

/// What the query methods need from whoever runs them.
pub(crate) trait Executor: Sync {
    fn templates(&self) -> &Templates;
    fn timeout(&self) -> Option<Duration>;
    fn conn(&self, deadline: Option<Instant>) -> impl Future<Output = Result<ConnRef<'_>>> + Send;
    /// Inside a transaction: no implicit BEGIN/COMMIT, and errors abort the transaction.
    fn in_transaction(&self) -> bool;
    /// Called with every failed call's error.
    fn note_error(&self, _error: &Error) {}

    fn deadline(&self) -> Option<Instant> {
        self.timeout().map(|t| Instant::now() + t)
    }
}

fn debug_env() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        std::env::var("DB_DEBUG")
            .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
    })
}

pub(crate) fn log_query<'a>(sql: &str, params: impl Iterator<Item = &'a (dyn ToSql + Sync)>) {
    if debug_env() {
        tracing::info!(target: "pgdbm::query", sql, params = %mask_params(params), "query");
    } else if tracing::enabled!(target: "pgdbm::query", tracing::Level::DEBUG) {
        tracing::debug!(target: "pgdbm::query", sql, params = %mask_params(params), "query");
    }
}

pub(crate) fn query_error<'a>(
    source: tokio_postgres::Error,
    sql: &str,
    params: impl Iterator<Item = &'a (dyn ToSql + Sync)>,
) -> Error {
    Error::Query {
        sql: shorten_sql(sql),
        params: mask_params(params),
        source,
    }
}

/// Renders, logs, checks out a connection and runs `$body` under the call's deadline, through
/// the connection's state choke point ([`PgConn::timed`]).
macro_rules! run {
    ($ex:expr, $query:expr, $params:expr, |$conn:ident, $sql:ident| $body:expr) => {{
        let ex = $ex;
        let $sql: &str = &ex.templates().render($query)?;
        let params: &[&(dyn ToSql + Sync)] = $params;
        log_query($sql, params.iter().copied());
        let deadline = ex.deadline();
        let pooled = !ex.in_transaction();
        let result = async {
            let $conn = ex.conn(deadline).await?;
            let $conn: &PgConn = &$conn;
            $conn
                .timed(deadline, $sql, async {
                    let mut r = $body.await;
                    // A cached statement went stale (the table changed under it): the cache
                    // has dropped it; outside a transaction one retry re-prepares it.
                    if pooled && r.as_ref().is_err_and(|e| $conn.forget_if_stale($sql, e)) {
                        r = $body.await;
                    }
                    r.map_err(|e| query_error(e, $sql, params.iter().copied()))
                })
                .await
        }
        .await;
        if let Err(e) = &result {
            ex.note_error(e);
        }
        result
    }};
}

pub(crate) async fn execute<E: Executor>(
    ex: &E,
    query: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64> {
    run!(ex, query, params, |conn, sql| conn.execute(sql, params))
}

pub(crate) async fn fetch_all<E: Executor>(
    ex: &E,
    query: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Record>> {
    let rows = run!(ex, query, params, |conn, sql| conn.query(sql, params))?;
    Ok(rows.into_iter().map(Record::new).collect())
}

pub(crate) async fn fetch_one<E: Executor>(
    ex: &E,
    query: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<Record>> {
    let row = run!(ex, query, params, |conn, sql| conn.query_first(sql, params))?;
    Ok(row.map(Record::new))
}

pub(crate) async fn fetch_value_at<E: Executor, T: FromSqlOwned>(
    ex: &E,
    query: &str,
    params: &[&(dyn ToSql + Sync)],
    column: usize,
) -> Result<Option<T>> {
    match fetch_one(ex, query, params).await? {
        None => Ok(None),
        Some(row) => {
            if column >= row.len() {
                return Err(Error::decode(
                    column,
                    "-",
                    format!(
                        "column index out of range: the query returns {} column(s)",
                        row.len()
                    ),
                ));
            }
            row.get::<Option<T>>(column)
        }
    }
}

/// The first row mapped by `f` (serde or `FromRow`), if any.
pub(crate) async fn fetch_one_mapped<E: Executor, T>(
    ex: &E,
    query: &str,
    params: &[&(dyn ToSql + Sync)],
    f: fn(Record) -> Result<T>,
) -> Result<Option<T>> {
    fetch_one(ex, query, params).await?.map(f).transpose()
}

/// All rows mapped by `f` as they arrive.
pub(crate) async fn fetch_all_mapped<E: Executor, T>(
    ex: &E,
    query: &str,
    params: &[&(dyn ToSql + Sync)],
    f: fn(Record) -> Result<T>,
) -> Result<Vec<T>> {
    run!(ex, query, params, |conn, sql| conn
        .query_map(sql, params, f))?
}

/// `INSERT …` gets `RETURNING id` unless it already has a RETURNING clause.
pub(crate) fn with_returning_id(query: &str) -> String {
    let trimmed = query.trim_end().trim_end_matches(';').trim_end();
    if has_word(trimmed, "returning") {
        trimmed.to_owned()
    } else {
        format!("{trimmed} RETURNING id")
    }
}

fn has_word(haystack: &str, word: &str) -> bool {
    let lower = haystack.to_ascii_lowercase();
    let ident = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    lower.match_indices(word).any(|(i, _)| {
        !ident(lower[..i].chars().next_back()) && !ident(lower[i + word.len()..].chars().next())
    })
}

pub(crate) async fn execute_and_return_id<E: Executor, T: FromSqlOwned>(
    ex: &E,
    query: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<T> {
    let query = with_returning_id(query);
    match fetch_value_at::<E, T>(ex, &query, params, 0).await? {
        Some(id) => Ok(id),
        None => Err(Error::decode(
            "id",
            "-",
            "the statement returned no row or a NULL id (did the INSERT insert nothing?)",
        )),
    }
}

/// Runs `$body` on one connection, inside its own transaction unless the executor already is
/// one: committed when it succeeds, rolled back when it fails. A timeout or a drop halfway
/// leaves the connection's state in a transaction, so it is rolled back (or closed) before it
/// can be used again.
macro_rules! all_or_nothing {
    ($ex:expr, $operation:expr, |$conn:ident| $body:expr) => {{
        let ex = $ex;
        let deadline = ex.deadline();
        let implicit_tx = !ex.in_transaction();
        let result = async {
            let conn = ex.conn(deadline).await?;
            let $conn: &PgConn = &conn;
            $conn
                .timed(deadline, $operation, async {
                    if implicit_tx {
                        // In a transaction from before BEGIN is sent: dropped or timed out
                        // while it is on the wire, the connection must be rolled back.
                        $conn.enter_transaction();
                        if let Err(e) = $conn.client.batch_execute("BEGIN").await {
                            // BEGIN itself failed: no transaction was opened.
                            $conn.leave_transaction();
                            return Err(query_error(e, "BEGIN", std::iter::empty()));
                        }
                    }
                    let outcome = $body.await;
                    if implicit_tx {
                        let end = if outcome.is_ok() {
                            "COMMIT"
                        } else {
                            "ROLLBACK"
                        };
                        $conn
                            .client
                            .batch_execute(end)
                            .await
                            .map_err(|e| query_error(e, end, std::iter::empty()))?;
                        $conn.leave_transaction();
                    }
                    outcome
                })
                .await
        }
        .await;
        if let Err(e) = &result {
            ex.note_error(e);
        }
        result
    }};
}

pub(crate) async fn executemany<E: Executor, P: Params>(
    ex: &E,
    query: &str,
    rows: impl IntoIterator<Item = P>,
) -> Result<u64> {
    let rows: Vec<P> = rows.into_iter().collect();
    let sql: &str = &ex.templates().render(query)?;
    log_query(sql, std::iter::empty());
    if rows.is_empty() {
        return Ok(0);
    }
    match insert_values_prefix(sql).filter(|(_, n)| rows.iter().all(|r| r.param_count() == *n)) {
        Some((prefix, n)) => {
            all_or_nothing!(ex, sql, |conn| insert_values(conn, sql, prefix, n, &rows))
        }
        None => all_or_nothing!(ex, sql, |conn| pipeline(conn, sql, &rows, 0)),
    }
}

/// Rows per multi-row `INSERT`, largest first. A batch uses at most these three statement
/// texts per SQL (the rest goes row by row), so batches of varying sizes do not fill the
/// statement cache with one text per size.
const VALUES_TIERS: [usize; 3] = [1024, 128, 16];
/// The protocol's limit on the parameters of one statement.
const MAX_PARAMS: usize = 65_535;

/// For `INSERT … VALUES ($1, …, $n)` with nothing after the list: the text up to the list and
/// `n`. Such a statement's rows can go as one multi-row `INSERT` per chunk, which the server
/// runs as one statement instead of one per row (SQLAlchemy's "insertmanyvalues"). Anything
/// else (`ON CONFLICT`, `RETURNING`, expressions, `SELECT`) runs row by row: a multi-row
/// `ON CONFLICT DO UPDATE` fails on a key repeated within the chunk.
pub(crate) fn insert_values_prefix(sql: &str) -> Option<(&str, usize)> {
    let s = sql.trim();
    let s = s.strip_suffix(';').unwrap_or(s).trim_end();
    if !s.get(..6)?.eq_ignore_ascii_case("insert") || !s.ends_with(')') {
        return None;
    }
    let open = s.rfind('(')?;
    let mut n = 0;
    for (k, item) in s[open + 1..s.len() - 1].split(',').enumerate() {
        let index: usize = item.trim().strip_prefix('$')?.parse().ok()?;
        if index != k + 1 {
            return None;
        }
        n = index;
    }
    let head = s[..open].trim_end();
    let keyword = head.get(head.len().checked_sub(6)?..)?;
    let before = head[..head.len() - 6].chars().next_back()?;
    (n > 0 && keyword.eq_ignore_ascii_case("values") && (before.is_whitespace() || before == ')'))
        .then_some((&s[..open], n))
}

/// `rows` as multi-row `INSERT`s of the [`VALUES_TIERS`] sizes, the remainder pipelined.
async fn insert_values<P: Params>(
    conn: &PgConn,
    sql: &str,
    prefix: &str,
    n: usize,
    rows: &[P],
) -> Result<u64> {
    let (mut total, mut done) = (0, 0);
    let texts: Vec<(usize, String)> = VALUES_TIERS
        .into_iter()
        .filter(|t| t * n <= MAX_PARAMS && *t <= rows.len())
        .map(|t| (t, values_sql(prefix, n, t)))
        .collect();
    // Two chunks in flight: the next one is encoded and sent while the server inserts the
    // current one.
    let mut inflight = futures_util::stream::FuturesOrdered::new();
    for (tier, text) in &texts {
        while rows.len() - done >= *tier {
            if inflight.len() == 2 {
                total += inflight.next().await.expect("a chunk in flight")?;
            }
            let chunk = &rows[done..done + tier];
            inflight.push_back(values_chunk(conn, sql, text, chunk, done));
            done += tier;
        }
    }
    while let Some(n) = inflight.next().await {
        total += n?;
    }
    if done < rows.len() {
        total += pipeline(conn, sql, &rows[done..], done).await?;
    }
    Ok(total)
}

fn values_sql(prefix: &str, n: usize, rows: usize) -> String {
    use std::fmt::Write;
    let mut text = String::with_capacity(prefix.len() + rows * n * 7);
    text.push_str(prefix);
    for r in 0..rows {
        text.push_str(if r == 0 { "(" } else { ",(" });
        for c in 0..n {
            let sep = if c == 0 { "" } else { "," };
            let _ = write!(text, "{sep}${}", r * n + c + 1);
        }
        text.push(')');
    }
    text
}

/// One multi-row `INSERT`. Its error names the rows of the chunk; the server's detail names the
/// offending values (the key of a unique violation, say).
async fn values_chunk<P: Params>(
    conn: &PgConn,
    sql: &str,
    text: &str,
    chunk: &[P],
    first: usize,
) -> Result<u64> {
    let params: Vec<&(dyn ToSql + Sync)> = chunk.iter().flat_map(|r| param_iter(r)).collect();
    conn.queries
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let r = if conn.uses_named_statements() {
        let statement = conn
            .statement(text)
            .await
            .map_err(|e| query_error(e, sql, std::iter::empty()))?;
        conn.client
            .execute_raw(&statement, params.iter().copied())
            .await
    } else {
        conn.client
            .execute_typed(text, &typed_params(&params))
            .await
    };
    r.map_err(|e| {
        let mut err = query_error(e, sql, std::iter::empty());
        if let Error::Query { params, .. } = &mut err {
            *params = format!("one of rows {first}..={}", first + chunk.len() - 1);
        }
        err
    })
}

/// Sends every row's statement without waiting for the previous answer, keeping up to
/// `PIPELINE_DEPTH` in flight, and stops at the first failure.
async fn pipeline<P: Params>(conn: &PgConn, sql: &str, rows: &[P], first: usize) -> Result<u64> {
    let statement = if conn.uses_named_statements() {
        Some(
            conn.statement(sql)
                .await
                .map_err(|e| query_error(e, sql, std::iter::empty()))?,
        )
    } else {
        None
    };
    let statement = statement.as_ref();
    conn.queries
        .fetch_add(rows.len() as u64, std::sync::atomic::Ordering::Relaxed);
    // A queue driven by hand rather than `stream::iter(..).map(closure).buffered(..)`: a closure
    // returning a future that borrows a row makes the caller's future fail the `Send` check of
    // `tokio::spawn` (a higher-ranked lifetime rustc cannot prove), for borrowed rows.
    let mut inflight = futures_util::stream::FuturesOrdered::new();
    let mut total = 0;
    for (i, row) in rows.iter().enumerate() {
        if inflight.len() == PIPELINE_DEPTH {
            total += inflight.next().await.expect("a row in flight")?;
        }
        inflight.push_back(pipelined_row(conn, statement, sql, first + i, row));
    }
    while let Some(n) = inflight.next().await {
        total += n?;
    }
    Ok(total)
}

/// One row of [`pipeline`]: its error names the row.
async fn pipelined_row<P: Params>(
    conn: &PgConn,
    statement: Option<&tokio_postgres::Statement>,
    sql: &str,
    i: usize,
    row: &P,
) -> Result<u64> {
    let r = match statement {
        Some(st) => conn.client.execute_raw(st, param_iter(row)).await,
        None => {
            let refs: Vec<_> = param_iter(row).collect();
            let typed = typed_params(&refs);
            conn.client.execute_typed(sql, &typed).await
        }
    };
    r.map_err(|e| {
        let mut err = query_error(e, sql, param_iter(row));
        if let Error::Query { params, .. } = &mut err {
            *params = format!("row {i}: {params}");
        }
        err
    })
}

pub(crate) async fn copy_records_to_table<E: Executor, P: Params>(
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
    log_query(
        &format!("COPY {qualified} FROM STDIN (FORMAT binary)"),
        std::iter::empty(),
    );
    all_or_nothing!(ex, &select, |conn| copy_in(
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

pub(crate) async fn table_exists<E: Executor>(ex: &E, name: &str) -> Result<bool> {
    let (schema, table) = match name.split_once('.') {
        Some((s, t)) => (s.to_owned(), t),
        None => (ex.templates().schema().unwrap_or("public").to_owned(), name),
    };
    check_identifier(&schema, "schema")?;
    check_identifier(table, "table")?;
    // Unquoted table names fold to lower case in templates; do the same here.
    let table = table.to_ascii_lowercase();
    let exists: Option<bool> = fetch_value_at(
        ex,
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p', 'v', 'm', 'f'))",
        &[&schema, &table],
        0,
    )
    .await?;
    Ok(exists.unwrap_or(false))
}

/// Rows as a stream, for results too large to hold at once. The call's timeout covers the
/// wait for the first row (from the call) and then each wait for the next row. On expiry the
/// stream yields [`Error::Timeout`] and ends; a stream dropped before its end cancels its query.
pub(crate) async fn stream_rows<'e, E: Executor>(
    ex: &'e E,
    query: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<impl futures_util::Stream<Item = Result<Record>> + Send + 'e> {
    let sql = ex.templates().render(query)?.into_owned();
    log_query(&sql, params.iter().copied());
    let timeout = ex.timeout();
    let deadline = ex.deadline();
    let conn = ex.conn(deadline).await?;
    let started = Instant::now();
    conn.begin_op()?;
    let opened = match deadline {
        Some(d) => tokio::time::timeout_at(d.into(), conn.query_stream(&sql, params))
            .await
            .ok(),
        None => Some(conn.query_stream(&sql, params).await),
    };
    let stream = match opened {
        Some(Ok(stream)) => stream,
        Some(Err(e)) => {
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

/// The public query methods, identical on the manager and on transactions.
macro_rules! query_methods {
    () => {
        /// Runs a statement; returns the number of rows affected. Without parameters it uses
        /// the simple protocol, so a script of several statements runs in one call.
        ///
        /// ```no_run
        /// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
        /// let n = db.execute("DELETE FROM {{tables.users}} WHERE id = $1", &[&7_i32]).await?;
        /// # Ok(()) }
        /// ```
        pub async fn execute(&self, query: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
            crate::query::execute(self, query, params).await
        }

        /// Runs an `INSERT` and returns its `id`, appending `RETURNING id` unless the
        /// statement already has a `RETURNING` clause.
        ///
        /// ```no_run
        /// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
        /// let id: i32 = db.execute_and_return_id(
        ///     "INSERT INTO {{tables.users}} (email) VALUES ($1)", &[&"a@x.org"]).await?;
        /// # Ok(()) }
        /// ```
        pub async fn execute_and_return_id<T: postgres_types::FromSqlOwned>(
            &self,
            query: &str,
            params: &[&(dyn ToSql + Sync)],
        ) -> Result<T> {
            crate::query::execute_and_return_id(self, query, params).await
        }

        /// Runs one statement once per row of parameters, pipelined on one connection. Outside a
        /// transaction it runs in its own transaction: all rows or none. Returns rows affected.
        ///
        /// A plain `INSERT … VALUES ($1, …, $n)` (no `ON CONFLICT`, no `RETURNING`) goes as
        /// multi-row `INSERT`s of up to 1,024 rows, several times faster; statement-level
        /// triggers then fire once per chunk, and an error names the chunk's rows.
        ///
        /// ```no_run
        /// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
        /// db.executemany("INSERT INTO {{tables.users}} (email, name) VALUES ($1, $2)",
        ///     vec![("a@x.org", "A"), ("b@x.org", "B")]).await?;
        /// # Ok(()) }
        /// ```
        pub async fn executemany<P: crate::params::Params>(
            &self,
            query: &str,
            rows: impl IntoIterator<Item = P>,
        ) -> Result<u64> {
            crate::query::executemany(self, query, rows).await
        }

        /// The first column of the first row; `None` for no row and for SQL NULL.
        ///
        /// ```no_run
        /// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
        /// let count: Option<i64> = db.fetch_value("SELECT count(*) FROM {{tables.users}}", &[]).await?;
        /// # Ok(()) }
        /// ```
        pub async fn fetch_value<T: postgres_types::FromSqlOwned>(
            &self,
            query: &str,
            params: &[&(dyn ToSql + Sync)],
        ) -> Result<Option<T>> {
            crate::query::fetch_value_at(self, query, params, 0).await
        }

        /// Column `column` (0-based) of the first row; `None` for no row and for SQL NULL.
        pub async fn fetch_value_at<T: postgres_types::FromSqlOwned>(
            &self,
            query: &str,
            params: &[&(dyn ToSql + Sync)],
            column: usize,
        ) -> Result<Option<T>> {
            crate::query::fetch_value_at(self, query, params, column).await
        }

        /// The first row, if any.
        pub async fn fetch_one(
            &self,
            query: &str,
            params: &[&(dyn ToSql + Sync)],
        ) -> Result<Option<crate::Record>> {
            crate::query::fetch_one(self, query, params).await
        }

        /// All rows.
        pub async fn fetch_all(
            &self,
            query: &str,
            params: &[&(dyn ToSql + Sync)],
        ) -> Result<Vec<crate::Record>> {
            crate::query::fetch_all(self, query, params).await
        }

        /// The first row deserialized into `T` (fields matched to columns by name).
        ///
        /// ```no_run
        /// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
        /// #[derive(serde::Deserialize)]
        /// struct User { id: i32, email: String }
        /// let u: Option<User> = db.fetch_as_model("SELECT * FROM {{tables.users}} WHERE id = $1", &[&1_i32]).await?;
        /// # Ok(()) }
        /// ```
        pub async fn fetch_as_model<T: serde::de::DeserializeOwned>(
            &self,
            query: &str,
            params: &[&(dyn ToSql + Sync)],
        ) -> Result<Option<T>> {
            crate::query::fetch_one_mapped(self, query, params, |r| crate::de::from_row(r.as_row()))
                .await
        }

        /// All rows deserialized into `T`.
        pub async fn fetch_all_as_model<T: serde::de::DeserializeOwned>(
            &self,
            query: &str,
            params: &[&(dyn ToSql + Sync)],
        ) -> Result<Vec<T>> {
            crate::query::fetch_all_mapped(self, query, params, |r| crate::de::from_row(r.as_row()))
                .await
        }

        /// The first row as `T` through its [`FromRow`](crate::FromRow) impl: each field decoded
        /// straight from the wire, the fastest typed fetch. `None` when there is no row.
        ///
        /// ```no_run
        /// #[derive(pgdbm::FromRow)]
        /// struct User { id: i32, email: String }
        /// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
        /// let user: Option<User> = db
        ///     .fetch_one_as("SELECT id, email FROM {{tables.users}} WHERE id = $1", &[&1_i32])
        ///     .await?;
        /// # Ok(()) }
        /// ```
        pub async fn fetch_one_as<T: crate::FromRow>(
            &self,
            query: &str,
            params: &[&(dyn ToSql + Sync)],
        ) -> Result<Option<T>> {
            crate::query::fetch_one_mapped(self, query, params, |r| T::from_row(&r)).await
        }

        /// All rows as `T` through its [`FromRow`](crate::FromRow) impl.
        pub async fn fetch_all_as<T: crate::FromRow>(
            &self,
            query: &str,
            params: &[&(dyn ToSql + Sync)],
        ) -> Result<Vec<T>> {
            crate::query::fetch_all_mapped(self, query, params, |r| T::from_row(&r)).await
        }

        /// Rows one at a time, for results too large to hold in memory. The connection is held
        /// until the stream is dropped; the call's timeout covers only getting the first answer.
        pub async fn fetch_stream(
            &self,
            query: &str,
            params: &[&(dyn ToSql + Sync)],
        ) -> Result<impl futures_util::Stream<Item = Result<crate::Record>> + Send + '_> {
            crate::query::stream_rows(self, query, params).await
        }

        /// Bulk-loads rows with binary `COPY`. `table` is a plain name (the manager's schema is
        /// applied) or `schema.table`; values are encoded as the table's column types. Returns
        /// the number of rows copied. Outside a transaction it is all-or-nothing.
        ///
        /// ```no_run
        /// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
        /// let n = db.copy_records_to_table("users", vec![("c@x.org", "C")], Some(&["email", "name"])).await?;
        /// # Ok(()) }
        /// ```
        pub async fn copy_records_to_table<P: crate::params::Params>(
            &self,
            table: &str,
            records: impl IntoIterator<Item = P>,
            columns: Option<&[&str]>,
        ) -> Result<u64> {
            crate::query::copy_records_to_table(self, table, records, columns).await
        }

        /// Whether a table (or view) exists: `name` in the manager's schema (`public` without
        /// one), or `schema.name`.
        pub async fn table_exists(&self, name: &str) -> Result<bool> {
            crate::query::table_exists(self, name).await
        }

        /// The query with templates applied, as it would be sent.
        ///
        /// ```
        /// let db = pgdbm::AsyncDatabaseManager::new(pgdbm::DatabaseConfig {
        ///     schema: Some("app".into()), ..Default::default() }).unwrap();
        /// assert_eq!(db.prepare_query("SELECT * FROM {{tables.users}}").unwrap(), r#"SELECT * FROM "app".users"#);
        /// ```
        pub fn prepare_query(&self, query: &str) -> Result<String> {
            Ok(crate::query::Executor::templates(self)
                .render(query)?
                .into_owned())
        }
    };
}

pub(crate) use query_methods;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_insert_values_is_sent_as_multi_row() {
        let sql = r#"INSERT INTO "s".t (a, b) VALUES ($1, $2)"#;
        assert_eq!(
            insert_values_prefix(sql),
            Some((r#"INSERT INTO "s".t (a, b) VALUES "#, 2))
        );
        assert_eq!(
            insert_values_prefix(" insert into t(a)values($1);\n"),
            Some(("insert into t(a)values", 1))
        );
        for other in [
            "INSERT INTO t (a) VALUES ($1) ON CONFLICT DO NOTHING",
            "INSERT INTO t (a) VALUES ($1) ON CONFLICT (a) DO UPDATE SET a = EXCLUDED.a",
            "INSERT INTO t (a) VALUES ($1) RETURNING id",
            "INSERT INTO t (a, b) VALUES ($2, $1)",
            "INSERT INTO t (a, b) VALUES ($1, $1)",
            "INSERT INTO t (a, b) VALUES ($1, lower($2))",
            "INSERT INTO t (a, b) VALUES ($1, 'x')",
            "INSERT INTO t SELECT * FROM (VALUES ($1, $2))",
            "INSERT INTO t DEFAULT VALUES",
            "INSERT INTO t (a) VALUES ()",
            "UPDATE t SET a = $1 WHERE b IN ($2)",
            "WITH x AS (SELECT 1) INSERT INTO t (a) VALUES ($1)",
            "INSERT INTO tvalues($1)",
        ] {
            assert_eq!(insert_values_prefix(other), None, "{other}");
        }
        assert_eq!(
            values_sql("INSERT INTO t (a, b) VALUES ", 2, 3),
            "INSERT INTO t (a, b) VALUES ($1,$2),($3,$4),($5,$6)"
        );
    }

    #[test]
    fn returning_is_appended_once() {
        assert_eq!(
            with_returning_id("INSERT INTO t (a) VALUES ($1)"),
            "INSERT INTO t (a) VALUES ($1) RETURNING id"
        );
        assert_eq!(
            with_returning_id("INSERT INTO t (a) VALUES ($1);  "),
            "INSERT INTO t (a) VALUES ($1) RETURNING id"
        );
        assert_eq!(
            with_returning_id("insert into t (a) values ($1) Returning user_id"),
            "insert into t (a) values ($1) Returning user_id"
        );
        assert_eq!(
            with_returning_id("INSERT INTO returning_things (a) VALUES ($1)"),
            "INSERT INTO returning_things (a) VALUES ($1) RETURNING id"
        );
    }
}
