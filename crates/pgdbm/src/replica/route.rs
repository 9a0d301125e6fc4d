//! Where one call runs when the pool has replicas: a replica for the replica view's reads and
//! (in automatic routing) for plain reads; the primary for everything else, counted as a write
//! unless it is a plain read. A replica read after a write of the same manager waits until the
//! replica has replayed that write, or reads from the primary.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::SimpleQueryMessage;

use super::ConnRef;
use super::{parse_lsn, ReplicaHost, ReplicaSet, WriteTracker};
use crate::config::ReplicaFallback;
use crate::error::{Error, Result};
use crate::pool::Pool;
use crate::pool::PoolConnection;

/// What a call does, as its method says: reads may go to a replica, writes never do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Intent {
    /// `fetch_*` and row streams.
    Read,
    /// `execute`, batches, COPY, `execute_and_return_id`.
    Write,
}

/// Longest wait between two checks of a replica's replay position.
const MAX_POLL: Duration = Duration::from_millis(16);
/// Longest wait for the answer to one such check.
const POLL_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection for one call on a pool with replicas: for a manager that is a replica view
/// (`replica_view`) or not, whose writes `tracker` counts (read-your-writes).
pub(crate) async fn route(
    replica_view: bool,
    tracker: &WriteTracker,
    pool: Pool,
    set: Arc<ReplicaSet>,
    deadline: Option<Instant>,
    intent: Intent,
    sql: &str,
) -> Result<ConnRef<'static>> {
    let to_replica = intent == Intent::Read
        && (replica_view || (set.auto_routing && set.verdicts.is_plain_read(sql)));
    if to_replica {
        if let Some((conn, host)) = replica_conn(tracker, &pool, &set, deadline).await? {
            return Ok(ConnRef::Replica(conn, host));
        }
    }
    let mut conn = pool.get(deadline).await?;
    if intent == Intent::Write || !set.verdicts.is_plain_read(sql) {
        conn.count_release(tracker.writes.clone());
    }
    Ok(ConnRef::Pooled(conn))
}

/// A connection to a healthy replica that has replayed the manager's writes; `None` when the
/// read goes to the primary instead.
async fn replica_conn(
    tracker: &WriteTracker,
    primary: &Pool,
    set: &ReplicaSet,
    deadline: Option<Instant>,
) -> Result<Option<(PoolConnection, Arc<ReplicaHost>)>> {
    let needed = tracker.needed_lsn(primary, deadline).await?;
    let n = set.hosts.len();
    let start = set.start();
    let order = || (0..n).map(|i| &set.hosts[(start + i) % n]);
    // A replica known to have replayed the writes needs no wait: try those first.
    let first = match needed {
        Some(lsn) => order().find(|h| h.is_healthy() && h.replayed() >= lsn),
        None => None,
    };
    let candidates = first.into_iter().chain(order().filter(|h| h.is_healthy()));
    for host in candidates {
        if !host.is_healthy() {
            continue;
        }
        let conn = match host.pool.get(deadline).await {
            Ok(c) => c,
            Err(e) if host.fails_over(&e) => continue,
            Err(e) => return Err(e),
        };
        if let Some(lsn) = needed {
            match host
                .wait_replayed(&conn, lsn, set.ryw_timeout, deadline)
                .await?
            {
                Replay::Caught => {}
                // Read-your-writes first: the primary has the write.
                Replay::Late => return Ok(None),
                Replay::Lost => continue,
            }
        }
        return Ok(Some((conn, host.clone())));
    }
    match set.fallback {
        ReplicaFallback::Primary => Ok(None),
        ReplicaFallback::Error => Err(set.no_replica()),
    }
}

/// How a wait for a replica to replay a write ended.
enum Replay {
    Caught,
    /// Not within `read_your_writes_timeout`.
    Late,
    /// The replica stopped answering; it is marked down.
    Lost,
}

impl ReplicaHost {
    /// Waits until this replica has replayed `lsn`, polling on `conn`, for at most `timeout`.
    async fn wait_replayed(
        &self,
        conn: &PoolConnection,
        lsn: u64,
        timeout: Duration,
        deadline: Option<Instant>,
    ) -> Result<Replay> {
        if self.replayed() >= lsn {
            return Ok(Replay::Caught);
        }
        let give_up = Instant::now() + timeout;
        let mut pause = Duration::from_micros(500);
        loop {
            // One poll never waits long: a replica that stops answering is left for another.
            let poll_by = Instant::now() + POLL_TIMEOUT;
            let poll_by = deadline.map_or(poll_by, |d| d.min(poll_by));
            let at = match query_lsn(conn, "SELECT pg_last_wal_replay_lsn()::text", Some(poll_by))
                .await
            {
                Ok(at) => at,
                Err(Error::Timeout { .. }) if deadline.is_none_or(|d| Instant::now() < d) => {
                    self.mark_down("no answer to a replay position check");
                    return Ok(Replay::Lost);
                }
                Err(e) if self.fails_over(&e) => return Ok(Replay::Lost),
                Err(e) => return Err(e),
            };
            self.note_replayed(at);
            if at >= lsn {
                return Ok(Replay::Caught);
            }
            if Instant::now() + pause >= give_up {
                return Ok(Replay::Late);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_POLL);
        }
    }
}

/// The primary's WAL insert position: past the end of every transaction committed before it
/// is read, even with `synchronous_commit = off`, and as a record's end position (see
/// [`as_end_position`]), which is what a replica reports as replayed.
///
/// With `synchronous_commit = off` that position may not be flushed yet, and a replica only
/// receives flushed WAL: it would get there when the WAL writer next flushes
/// (`wal_writer_delay`, 200 ms by default). So when the position is past the flushed one, a
/// tiny transaction that commits synchronously flushes it now: one more round trip instead of
/// up to 200 ms.
pub(super) async fn primary_insert_lsn(primary: &Pool, deadline: Option<Instant>) -> Result<u64> {
    const SQL: &str = "SELECT pg_current_wal_insert_lsn()::text, \
         current_setting('wal_block_size'), \
         pg_size_bytes(current_setting('wal_segment_size'))::text, \
         pg_current_wal_flush_lsn()::text";
    // A transaction that writes a WAL record (an empty logical-decoding message, which any
    // role may emit at any wal_level) and commits synchronously flushes everything before it.
    const FLUSH: &str = "BEGIN; SET LOCAL synchronous_commit = on; \
         SELECT pg_catalog.pg_logical_emit_message(true, 'pgdbm', ''); COMMIT";
    let conn = primary.get(deadline).await?;
    let row = query_row(&conn, SQL, deadline).await?;
    let number = |i: usize| row.get(i).and_then(|v| v.parse::<u64>().ok());
    let lsn = match (row.first().and_then(|v| parse_lsn(v)), number(1), number(2)) {
        (Some(lsn), Some(block), Some(segment)) => as_end_position(lsn, block, segment),
        _ => return Err(Error::Pool(format!("{SQL} returned {row:?}"))),
    };
    let flushed = row.get(3).and_then(|v| parse_lsn(v)).unwrap_or(0);
    if lsn > flushed && query_rows(&conn, FLUSH, deadline).await.is_err() {
        // Not allowed here (a revoked function, say): the replica gets it with the WAL
        // writer's next flush instead.
        query_rows(&conn, "ROLLBACK", deadline).await?;
    }
    Ok(lsn)
}

/// `sql` as a simple query under `deadline`.
async fn query_rows(
    conn: &PoolConnection,
    sql: &str,
    deadline: Option<Instant>,
) -> Result<Vec<SimpleQueryMessage>> {
    let pg = conn.conn();
    pg.timed(deadline, sql, || async {
        pg.client
            .simple_query(sql)
            .await
            .map_err(|e| crate::connection::query_error(e, sql, std::iter::empty()))
    })
    .await
}

/// Sizes of the page headers of a WAL page: the first page of a segment has the long one.
const LONG_PAGE_HEADER: u64 = 40;
const SHORT_PAGE_HEADER: u64 = 24;

/// The insert position reported just past a page header (when the last record ended exactly at
/// a page boundary) as the boundary itself: a replica's replay position is the end of the
/// last record replayed, so on an idle primary it would never reach the insert position.
/// No record can end right after a header (a record or its continuation has data), so nothing
/// is skipped.
fn as_end_position(lsn: u64, block: u64, segment: u64) -> u64 {
    if segment > 0 && lsn % segment == LONG_PAGE_HEADER {
        lsn - LONG_PAGE_HEADER
    } else if block > 0
        && lsn % block == SHORT_PAGE_HEADER
        // A segment's first page has the long header.
        && (segment == 0 || lsn % segment >= block)
    {
        lsn - SHORT_PAGE_HEADER
    } else {
        lsn
    }
}

async fn query_lsn(conn: &PoolConnection, sql: &str, deadline: Option<Instant>) -> Result<u64> {
    let row = query_row(conn, sql, deadline).await?;
    row.first()
        .and_then(|v| parse_lsn(v))
        .ok_or_else(|| Error::Pool(format!("{sql} returned no WAL position")))
}

/// The first row of a simple query, as text.
async fn query_row(
    conn: &PoolConnection,
    sql: &str,
    deadline: Option<Instant>,
) -> Result<Vec<String>> {
    let msgs = query_rows(conn, sql, deadline).await?;
    msgs.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or_default().to_owned())
                    .collect(),
            ),
            _ => None,
        })
        .ok_or_else(|| Error::Pool(format!("{sql} returned no row")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_positions_after_a_page_header_become_the_page_boundary() {
        let (block, segment) = (8192, 16 << 20);
        assert_eq!(as_end_position(0x300_0028, block, segment), 0x300_0000);
        assert_eq!(as_end_position(0x300_2018, block, segment), 0x300_2000);
        assert_eq!(as_end_position(0x300_2030, block, segment), 0x300_2030);
        assert_eq!(as_end_position(0x300_0060, block, segment), 0x300_0060);
        // Offset 24 of a segment's first page is inside its long header: never reported.
        assert_eq!(as_end_position(0x300_0018, block, segment), 0x300_0018);
    }
}
