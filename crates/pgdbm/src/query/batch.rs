//! `executemany`: multi-row `INSERT`s for plain inserts, a pipeline for anything else, all on
//! one connection and all-or-nothing outside a transaction.

use futures_util::StreamExt;
use tokio_postgres::types::ToSql;

use super::{batch_logged, logged, query_error, Runner};
use crate::connection::PgConn;
use crate::error::{Error, Result};
use crate::params::{param_iter, Params};

/// Statements kept in flight at once by `executemany`.
const PIPELINE_DEPTH: usize = 256;

pub(crate) async fn executemany<E: Runner, P: Params>(
    ex: &E,
    query: &str,
    rows: impl IntoIterator<Item = P>,
) -> Result<u64> {
    let rows: Vec<P> = rows.into_iter().collect();
    let sql: &str = &ex.templates().render(query)?;
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
    if !conn.uses_named_statements() {
        // Without named statements each text's parameter types are learned by a describe of
        // its own; two at once inside one transaction would collide (behind a transaction
        // pooler each recreates the driver's lookup statements), so each tier's text is
        // learned here, one after the other, and the chunks below all find it cached.
        for (tier, text) in &texts {
            let params: Vec<&(dyn ToSql + Sync)> =
                rows[..*tier].iter().flat_map(|r| param_iter(r)).collect();
            conn.typed_params(text, &params, true)
                .await
                .map_err(|e| query_error(e, sql, std::iter::empty()))?;
        }
    }
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
    tracing::debug!(target: "pgdbm::batch", rows = chunk.len(), first, "multi-row INSERT");
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
        match conn.typed_params(text, &params, true).await {
            Ok(typed) => conn.client.execute_typed(text, &typed).await,
            Err(e) => Err(e),
        }
    };
    r.map_err(|e| {
        conn.forget_if_stale(text, &e);
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
        // Learned once here, so the pipelined rows all find the types cached.
        let refs: Vec<_> = param_iter(&rows[0]).collect();
        conn.typed_params(sql, &refs, true)
            .await
            .map_err(|e| query_error(e, sql, param_iter(&rows[0])))?;
        None
    };
    let statement = statement.as_ref();
    tracing::debug!(target: "pgdbm::batch", rows = rows.len(), first, "row by row, pipelined");
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
            match conn.typed_params(sql, &refs, true).await {
                Ok(typed) => conn.client.execute_typed(sql, &typed).await,
                Err(e) => Err(e),
            }
        }
    };
    r.map_err(|e| {
        conn.forget_if_stale(sql, &e);
        let mut err = query_error(e, sql, param_iter(row));
        if let Error::Query { params, .. } = &mut err {
            *params = format!("row {i}: {params}");
        }
        err
    })
}

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
}
