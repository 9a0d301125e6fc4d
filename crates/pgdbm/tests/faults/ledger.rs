//! A ledger of transactions that fail in every way: its counts match the successful commits.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use crate::common::{schema_db_with, unique};
use pgdbm::{AsyncDatabaseManager, Error};

use super::{assert_no_open_transaction, check_own_results, seed, settle, with_app, Rng};

// ---------------------------------------------------------------------------------------------
// 5. A ledger of transactions that fail in every way
// ---------------------------------------------------------------------------------------------

const BUMP: &str = "UPDATE {{tables.counter}} SET n = n + 1 WHERE id = 1";
const ENTRY: &str = "INSERT INTO {{tables.ledger}} (key, amount) VALUES ($1, $2)";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fate {
    Commit,
    UniqueViolation,
    CheckViolation,
    SavepointRecovers,
    Rollback,
    Dropped,
    TimeoutBeforeLock,
    TimeoutHoldingLock,
    DroppedHalfway,
}

fn pick_fate(rng: &mut Rng) -> Fate {
    match rng.below(100) {
        0..55 => Fate::Commit,
        55..61 => Fate::UniqueViolation,
        61..67 => Fate::CheckViolation,
        67..73 => Fate::SavepointRecovers,
        73..79 => Fate::Rollback,
        79..85 => Fate::Dropped,
        85..90 => Fate::TimeoutBeforeLock,
        90..92 => Fate::TimeoutHoldingLock,
        _ => Fate::DroppedHalfway,
    }
}

/// One ledger transaction; `Ok(true)` when its commit returned `Ok`. Every failure the fate
/// calls for is asserted, and so is the failure of the commit that must follow it.
async fn ledger_tx(
    db: &AsyncDatabaseManager,
    fate: Fate,
    key: &str,
    rng: &mut Rng,
) -> pgdbm::Result<bool> {
    let amount = 1 + rng.below(100) as i32;
    match fate {
        Fate::Commit => {
            let tx = db.transaction().await?;
            tx.execute(BUMP, &[]).await?;
            tx.execute(ENTRY, &[&key, &amount]).await?;
            tx.commit().await?;
            Ok(true)
        }
        Fate::UniqueViolation | Fate::CheckViolation => {
            let tx = db.transaction().await?;
            tx.execute(BUMP, &[]).await?;
            let err = if fate == Fate::UniqueViolation {
                tx.execute(ENTRY, &[&key, &amount]).await?;
                let e = tx.execute(ENTRY, &[&key, &amount]).await.unwrap_err();
                assert!(e.is_unique_violation(), "{e}");
                e
            } else {
                let e = tx.execute(ENTRY, &[&key, &-1_i32]).await.unwrap_err();
                assert!(e.is_check_violation(), "{e}");
                e
            };
            let c = tx.commit().await;
            assert!(
                matches!(c, Err(Error::Transaction(_))),
                "commit after {err} returned {c:?}"
            );
            Ok(false)
        }
        Fate::SavepointRecovers => {
            let tx = db.transaction().await?;
            tx.execute(BUMP, &[]).await?;
            let sp = tx.transaction().await?;
            let e = sp.execute(ENTRY, &[&key, &-1_i32]).await.unwrap_err();
            assert!(e.is_check_violation(), "{e}");
            if rng.below(2) == 0 {
                sp.rollback().await?;
            } else {
                drop(sp);
            }
            tx.execute(ENTRY, &[&key, &amount]).await?;
            tx.commit().await?;
            Ok(true)
        }
        Fate::Rollback => {
            let tx = db.transaction().await?;
            tx.execute(BUMP, &[]).await?;
            tx.execute(ENTRY, &[&key, &amount]).await?;
            tx.rollback().await?;
            Ok(false)
        }
        Fate::Dropped => {
            let tx = db.transaction().await?;
            tx.execute(BUMP, &[]).await?;
            tx.execute(ENTRY, &[&key, &amount]).await?;
            drop(tx);
            Ok(false)
        }
        Fate::TimeoutBeforeLock | Fate::TimeoutHoldingLock => {
            let limit = Duration::from_millis(40);
            // Under a 40 ms limit any step may time out, the wait for a connection or the
            // row lock included; what matters is that nothing commits.
            let Ok(tx) = db.with_timeout(limit).transaction().await else {
                return Ok(false);
            };
            if fate == Fate::TimeoutHoldingLock {
                let _ = tx.execute(BUMP, &[]).await;
                let _ = tx.execute(ENTRY, &[&key, &amount]).await;
            }
            let slept = tx.execute("SELECT pg_sleep(5)", &[]).await;
            assert!(slept.is_err(), "pg_sleep(5) finished within {limit:?}");
            if fate == Fate::TimeoutBeforeLock {
                assert!(slept.as_ref().unwrap_err().is_timeout(), "{slept:?}");
                let after = tx.execute(BUMP, &[]).await;
                assert!(after.is_err(), "a statement ran after a timeout: {after:?}");
            }
            let c = tx.commit().await;
            assert!(c.is_err(), "commit after a timeout returned {c:?}");
            Ok(false)
        }
        Fate::DroppedHalfway => {
            let tx = db.transaction().await?;
            let cut = Duration::from_micros(rng.below(3_000));
            let body = async {
                tx.execute(BUMP, &[]).await?;
                tx.execute(ENTRY, &[&key, &amount]).await?;
                Ok::<(), pgdbm::Error>(())
            };
            match tokio::time::timeout(cut, body).await {
                Ok(r) => {
                    r?;
                    tx.commit().await?;
                    Ok(true)
                }
                Err(_) => {
                    let c = tx.commit().await;
                    assert!(
                        matches!(c, Err(Error::Transaction(_))),
                        "commit after a statement dropped halfway returned {c:?}"
                    );
                    Ok(false)
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_counts_match_successful_commits() {
    const TASKS: u64 = 16;
    const PER_TASK: u64 = 150;
    let seed = seed(0xFA17_0005);
    let app = unique("faults_ledger");
    let (db, _guard) = schema_db_with(|c| {
        c.min_connections = 2;
        c.max_connections = 6;
        with_app(c, &app);
    })
    .await;
    db.execute(
        "CREATE TABLE {{tables.counter}} (id int4 PRIMARY KEY, n int8 NOT NULL); \
         INSERT INTO {{tables.counter}} VALUES (1, 0); \
         CREATE TABLE {{tables.ledger}} (key text PRIMARY KEY, amount int4 NOT NULL CHECK (amount >= 0))",
        &[],
    )
    .await
    .unwrap();

    let started = Instant::now();
    let tasks = (0..TASKS).map(|t| {
        let db = db.clone();
        tokio::spawn(async move {
            let mut rng = Rng::new(seed ^ (t + 1).wrapping_mul(0xA076_1D64_78BD_642F));
            let mut committed = Vec::new();
            let mut fates: BTreeMap<(Fate, bool), u32> = BTreeMap::new();
            for i in 0..PER_TASK {
                let fate = pick_fate(&mut rng);
                let key = format!("t{t}-{i}");
                let ok = ledger_tx(&db, fate, &key, &mut rng)
                    .await
                    .unwrap_or_else(|e| panic!("{key} ({fate:?}) failed unexpectedly: {e}"));
                *fates.entry((fate, ok)).or_default() += 1;
                if ok {
                    committed.push(key);
                }
            }
            (committed, fates)
        })
    });
    let mut committed = HashSet::new();
    let mut fates: BTreeMap<(Fate, bool), u32> = BTreeMap::new();
    for r in futures_util::future::join_all(tasks).await {
        let (keys, f) = r.expect("ledger task panicked");
        committed.extend(keys);
        for (k, v) in f {
            *fates.entry(k).or_default() += v;
        }
    }
    let ran_for = started.elapsed();
    let settled = settle(&db, &app, Duration::from_secs(15)).await;
    assert_no_open_transaction(&app).await;
    let settled = settled.unwrap_or_else(|s| panic!("the pool did not settle: {s:?}"));

    let counter: i64 = db
        .fetch_value("SELECT n FROM {{tables.counter}} WHERE id = 1", &[])
        .await
        .unwrap()
        .unwrap();
    let keys: HashSet<String> = db
        .fetch_all("SELECT key FROM {{tables.ledger}}", &[])
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.get::<String>(0).unwrap())
        .collect();
    let missing: Vec<_> = committed.difference(&keys).take(5).collect();
    let extra: Vec<_> = keys.difference(&committed).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "committed but missing: {missing:?}; present but not committed: {extra:?}"
    );
    assert_eq!(
        counter,
        committed.len() as i64,
        "counter vs successful commits"
    );
    for fate in [
        Fate::Commit,
        Fate::UniqueViolation,
        Fate::CheckViolation,
        Fate::SavepointRecovers,
        Fate::Rollback,
        Fate::Dropped,
        Fate::TimeoutBeforeLock,
        Fate::TimeoutHoldingLock,
        Fate::DroppedHalfway,
    ] {
        assert!(
            fates.keys().any(|(f, _)| *f == fate),
            "{fate:?} never happened"
        );
    }
    assert!(
        fates.contains_key(&(Fate::DroppedHalfway, false)),
        "no transaction was dropped halfway: {fates:?}"
    );
    check_own_results(&db, 100).await;
    eprintln!(
        "ledger: seed {seed}, {} transactions in {ran_for:?}, {} committed, counter {counter}, \
         settled in {settled:?}; (fate, committed) counts: {fates:?}",
        TASKS * PER_TASK,
        committed.len()
    );
}
