//! The background health checks of the replicas: each one about once a second, under a short
//! timeout, so that a replica that stops answering is skipped within a few seconds and one
//! that comes back is used again.

use std::sync::Weak;
use std::time::{Duration, Instant};

use tokio_postgres::SimpleQueryMessage;

use super::{parse_lsn, ReplicaHost, ReplicaSet};
use crate::error::{Error, Result};
use crate::sql::routing::ATTRIBUTE_CALLS_SQL;

/// Time between two checks of the same replica.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long one check may take; with [`CHECK_EVERY`], a replica that stops answering is
/// skipped within 3 s.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// One round trip: the role, the positions received and replayed, the age of the last
/// transaction replayed, and whether WAL streams in (no receiver, or one known not to be
/// streaming, counts as not; a role that may not see the status is taken at its word).
const CHECK_SQL: &str = "SELECT pg_is_in_recovery(), pg_last_wal_receive_lsn(), \
     pg_last_wal_replay_lsn(), EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), \
     EXISTS (SELECT 1 FROM pg_catalog.pg_stat_wal_receiver \
             WHERE status = 'streaming' OR status IS NULL)";

/// Received positions remembered while a replica is behind (one per check at most).
const MAX_SAMPLES: usize = 3600;

/// Checks every replica once a second until the set is closed or dropped.
pub(super) fn spawn(set: Weak<ReplicaSet>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate, and `connect` has just checked.
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(set) = set.upgrade() else { return };
            if set.is_closed() {
                return;
            }
            set.check_all().await;
        }
    });
}

/// What one check found.
struct Probe {
    in_recovery: bool,
    received: Option<u64>,
    replayed: Option<u64>,
    /// Seconds since the last transaction replayed was committed on the primary.
    last_replay_age: Option<f64>,
    /// WAL streams in from the primary.
    streaming: bool,
    /// The functions attribute notation could call (see `sql::routing::AttributeCalls`).
    attribute_calls: Option<String>,
}

/// What earlier checks saw of a replica that is behind: when each received position not yet
/// replayed was first seen, and the replay position at the last check.
#[derive(Default)]
pub(super) struct Behind {
    samples: std::collections::VecDeque<(u64, Instant)>,
    last_replayed: Option<u64>,
    /// Since when no WAL streams in: a replica cut off from its primary replays all it
    /// received and then looks caught up, however far behind it falls.
    cut_off_since: Option<Instant>,
}

impl Behind {
    /// The replay lag: how long the oldest position received but not yet replayed has been
    /// waiting; and, when replay has not moved since the last check while WAL waits, the
    /// age of the last transaction replayed. (That age alone overstates the lag of a replica
    /// that is merely a moment behind after a quiet spell on the primary.)
    fn lag(&mut self, p: &Probe, now: Instant) -> Duration {
        let replayed = p.replayed.unwrap_or(0);
        let waiting = p.received.is_some_and(|r| r > replayed);
        if let Some(received) = p.received.filter(|_| waiting) {
            if self.samples.len() < MAX_SAMPLES
                && self.samples.back().is_none_or(|s| s.0 < received)
            {
                self.samples.push_back((received, now));
            }
        }
        while self.samples.front().is_some_and(|s| s.0 <= replayed) {
            self.samples.pop_front();
        }
        let sampled = self
            .samples
            .front()
            .map_or(Duration::ZERO, |s| now.saturating_duration_since(s.1));
        let stuck = waiting && self.last_replayed == Some(replayed);
        self.last_replayed = Some(replayed);
        let age = p
            .last_replay_age
            .filter(|a| stuck && a.is_finite() && *a > 0.0)
            .map_or(Duration::ZERO, Duration::from_secs_f64);
        let cut_off = if p.streaming {
            self.cut_off_since = None;
            Duration::ZERO
        } else {
            now.saturating_duration_since(*self.cut_off_since.get_or_insert(now))
        };
        sampled.max(age).max(cut_off)
    }
}

impl ReplicaSet {
    /// Checks every replica at once.
    pub(super) async fn check_all(&self) {
        let max_lag = self.max_lag;
        let found =
            futures_util::future::join_all(self.hosts.iter().map(|h| h.check(max_lag))).await;
        // Every replica has the primary's catalog: any answer will do.
        if let Some(names) = found.into_iter().flatten().next() {
            self.verdicts.set_attribute_calls(&names);
        }
    }
}

impl ReplicaHost {
    /// Checks this replica; the functions attribute notation could call, when it answered.
    async fn check(&self, max_lag: Option<Duration>) -> Option<String> {
        let probe = tokio::time::timeout(CHECK_TIMEOUT, self.probe()).await;
        let calls = match &probe {
            Ok(Ok(p)) => p.attribute_calls.clone(),
            _ => None,
        };
        match probe {
            Err(_) => self.mark_down(&format!(
                "no answer to a health check within {CHECK_TIMEOUT:?}"
            )),
            Ok(Err(e)) => self.mark_down(&e.to_string()),
            Ok(Ok(p)) => {
                if let Some(lsn) = p.replayed {
                    self.note_replayed(lsn);
                }
                let lag = self
                    .behind
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .lag(&p, Instant::now());
                if !p.in_recovery {
                    self.mark_down("not in recovery: the server is not a standby (promoted?)");
                } else if let Some(max) = max_lag.filter(|&m| lag > m) {
                    self.lag_micros
                        .store(lag.as_micros() as u64, std::sync::atomic::Ordering::Relaxed);
                    self.mark_down(&format!(
                        "replay lag {:.1} s is over max_replica_lag ({} s)",
                        lag.as_secs_f64(),
                        max.as_secs_f64()
                    ));
                } else {
                    self.mark_up(lag);
                }
            }
        }
        calls
    }

    async fn probe(&self) -> Result<Probe> {
        let deadline = Instant::now() + CHECK_TIMEOUT;
        let conn = self.checks.get(Some(deadline)).await?;
        let pg = conn.conn();
        let sql = format!("{CHECK_SQL};\n{ATTRIBUTE_CALLS_SQL}");
        let msgs = pg
            .timed(Some(deadline), &sql, || async {
                pg.client
                    .simple_query(&sql)
                    .await
                    .map_err(|e| crate::connection::query_error(e, &sql, std::iter::empty()))
            })
            .await?;
        let mut rows = msgs.iter().filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        });
        let row = rows
            .next()
            .ok_or_else(|| Error::Pool("the replica health check returned no row".into()))?;
        let attribute_calls = rows.next().and_then(|r| r.get(0)).map(str::to_owned);
        Ok(Probe {
            in_recovery: row.get(0) == Some("t"),
            received: row.get(1).and_then(parse_lsn),
            replayed: row.get(2).and_then(parse_lsn),
            last_replay_age: row.get(3).and_then(|s| s.parse::<f64>().ok()),
            streaming: row.get(4) != Some("f"),
            attribute_calls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(received: u64, replayed: u64, age: Option<f64>) -> Probe {
        Probe {
            in_recovery: true,
            received: Some(received),
            replayed: Some(replayed),
            last_replay_age: age,
            streaming: true,
            attribute_calls: None,
        }
    }

    #[test]
    fn a_replica_cut_off_from_its_primary_lags_from_when_streaming_stopped() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut b = Behind::default();
        let cut_off = |at| Probe {
            streaming: false,
            ..probe(at, at, None)
        };
        // Everything received is replayed, but nothing streams in any more.
        assert_eq!(b.lag(&cut_off(100), t0), Duration::ZERO);
        assert_eq!(b.lag(&cut_off(100), t0 + s(7)), s(7));
        // Streaming again: caught up.
        assert_eq!(b.lag(&probe(100, 100, None), t0 + s(8)), Duration::ZERO);
        assert_eq!(b.lag(&cut_off(100), t0 + s(9)), Duration::ZERO);
    }

    #[test]
    fn lag_counts_from_when_unreplayed_wal_was_first_seen() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut b = Behind::default();
        // Caught up: no lag, whatever the age of the last transaction.
        assert_eq!(b.lag(&probe(100, 100, Some(3600.0)), t0), Duration::ZERO);
        // A moment behind after a quiet hour: not an hour of lag.
        assert_eq!(
            b.lag(&probe(200, 150, Some(3600.0)), t0 + s(1)),
            Duration::ZERO
        );
        // Replay moved on: still counted from when 200 was first seen.
        assert_eq!(b.lag(&probe(300, 180, Some(1.0)), t0 + s(2)), s(1));
        // Replay stuck while WAL waits: the last transaction's age counts too.
        assert_eq!(b.lag(&probe(400, 180, Some(9.0)), t0 + s(3)), s(9));
        // Stuck with nothing replayed yet since start: the samples alone.
        assert_eq!(b.lag(&probe(500, 180, None), t0 + s(4)), s(3));
        // Replayed past 200 and 300: the oldest waiting is 400.
        assert_eq!(b.lag(&probe(500, 350, None), t0 + s(5)), s(2));
        assert_eq!(b.lag(&probe(500, 500, None), t0 + s(6)), Duration::ZERO);
        assert!(b.samples.is_empty());
    }
}
