//! Hostile callers on a shared pool, and probes between them: 16 tasks × 300 operations, each
//! either a statement that changes the session (through every method, some of them dropped
//! at a random moment) or a probe of the session it lands on. No probe may see anything
//! another caller left. Seeded: `LEAKS_SEED=N` replays a run.

mod common;

use std::time::Duration;

use common::*;
use futures_util::TryStreamExt;
use pgdbm::{AsyncDatabaseManager, Executor};

/// What a clean session of the pool looks like, in one row.
const PROBE: &str = "SELECT current_user::text || '|' || session_user::text || '|' \
    || current_setting('search_path') || '|' || current_setting('statement_timeout') || '|' \
    || coalesce(current_setting('app.leak', true), '') || '|' \
    || (SELECT count(*) FROM pg_catalog.pg_class WHERE relnamespace = pg_my_temp_schema()) \
    || '|' || (SELECT count(*) FROM pg_catalog.pg_prepared_statements WHERE from_sql) || '|' \
    || (SELECT count(*) FROM pg_catalog.pg_locks WHERE pid = pg_backend_pid() \
        AND locktype = 'advisory') || '|' \
    || (SELECT count(*) FROM pg_catalog.pg_listening_channels()) || '|' \
    || (SELECT count(*) FROM pg_catalog.pg_cursors WHERE is_holdable)";

const CLEAN: &str = "postgres|postgres|pg_catalog|1min||0|0|0|0|0";

/// One session-changing statement, unique where the server wants unique names.
fn hostile(rng: &mut Rng, role: &str, n: u64) -> String {
    match rng.below(13) {
        0 => format!("SET ROLE \"{role}\""),
        1 => format!("SET SESSION AUTHORIZATION \"{role}\""),
        2 => "SELECT set_config('search_path', 'public', false)".into(),
        3 => "SET statement_timeout = 1234".into(),
        4 => "SELECT set_config('app.leak', 'yes', false)".into(),
        5 => format!("CREATE TEMP TABLE leak_{n} (x int)"),
        6 => format!("PREPARE leak_{n} AS SELECT 1"),
        7 => format!("SELECT pg_advisory_lock({n})::text"),
        8 => format!("LISTEN leak_{n}"),
        9 => "BEGIN".into(),
        10 => "RESET ALL".into(),
        11 => "SELECT pg_catalog.set_config('app.leak', 'yes', false); SET ROLE NONE".into(),
        _ => format!("DECLARE leak_{n} CURSOR WITH HOLD FOR SELECT 1"),
    }
}

/// Sends `sql` through one of the methods (a transaction commits; a held cursor needs one).
async fn send(db: &AsyncDatabaseManager, how: u64, sql: &str) -> pgdbm::Result<()> {
    if sql.starts_with("DECLARE") {
        let tx = db.transaction().await?;
        tx.execute(sql, &[]).await?;
        return tx.commit().await;
    }
    match how {
        0 => db.execute(sql, &[]).await.map(drop),
        1 => db.fetch_all(sql, &[]).await.map(drop),
        2 => db.fetch_one(sql, &[]).await.map(drop),
        3 => db.fetch_value::<String>(sql, &[]).await.map(drop),
        4 => {
            let rows: Vec<pgdbm::Record> = db.fetch_stream(sql, &[]).await?.try_collect().await?;
            drop(rows);
            Ok(())
        }
        5 => {
            let tx = db.transaction().await?;
            tx.execute(sql, &[]).await?;
            tx.commit().await
        }
        _ => through_executor(db, sql).await,
    }
}

async fn through_executor(ex: &impl Executor, sql: &str) -> pgdbm::Result<()> {
    ex.fetch_all(sql, &[]).await.map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_probe_sees_what_another_caller_left() {
    run(pgdbm::ResetOnRelease::Auto, false).await;
}

/// The same with a reset after every use, sent ahead of the next statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_probe_sees_what_another_caller_left_with_reset_always() {
    run(pgdbm::ResetOnRelease::Always, false).await;
}

/// The same with multiplexing: the probes share connections with each other (and with
/// whatever the classification lets through), the hostile statements get their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_probe_sees_what_another_caller_left_multiplexed() {
    run(pgdbm::ResetOnRelease::Auto, true).await;
}

async fn run(mode: pgdbm::ResetOnRelease, multiplexing: bool) {
    let seed = std::env::var("LEAKS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x1eed_5eed_u64);
    let role = unique("leak_role");
    let _r = RoleGuard(role.clone());
    admin(&format!("CREATE ROLE \"{role}\"")).await;
    let mut cfg = config();
    cfg.min_connections = 2;
    cfg.max_connections = 4;
    cfg.reset_on_release = mode;
    cfg.multiplexing = multiplexing;
    let pool = AsyncDatabaseManager::create_shared_pool(&cfg)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for task in 0..16u64 {
        let db = AsyncDatabaseManager::from_pool(pool.clone(), None).unwrap();
        let role = role.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng((seed ^ (task + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1);
            let (mut probes, mut dropped) = (0, 0);
            for i in 0..300u64 {
                if rng.below(2) == 0 {
                    let seen: Option<String> = db.fetch_value(PROBE, &[]).await.unwrap();
                    assert_eq!(
                        seen.as_deref(),
                        Some(CLEAN),
                        "seed {seed}: task {task} op {i} saw another caller's session"
                    );
                    // Outside any transaction: a savepoint is refused.
                    let sp = db.execute("SAVEPOINT probe", &[]).await;
                    assert_eq!(
                        sp.as_ref().err().and_then(|e| e.code()),
                        Some("25P01"),
                        "seed {seed}: task {task} op {i} ran inside a leftover transaction"
                    );
                    probes += 1;
                    continue;
                }
                let n = task * 1000 + i;
                let sql = hostile(&mut rng, &role, n);
                let how = rng.below(7);
                if rng.below(4) == 0 {
                    // Dropped at a random moment.
                    let after = Duration::from_micros(rng.below(3000));
                    if tokio::time::timeout(after, send(&db, how, &sql))
                        .await
                        .is_err()
                    {
                        dropped += 1;
                    }
                } else {
                    let _ = send(&db, how, &sql).await;
                }
            }
            (probes, dropped)
        }));
    }
    let (mut probes, mut dropped) = (0, 0);
    for t in tasks {
        let (p, d) = t.await.unwrap();
        probes += p;
        dropped += d;
    }
    let shared = AsyncDatabaseManager::from_pool(pool.clone(), None)
        .unwrap()
        .get_pool_stats()
        .await
        .unwrap()
        .shared_calls;
    eprintln!(
        "seed {seed} ({mode}, multiplexing {multiplexing}): {probes} probes ({shared} on shared \
         connections), {dropped} hostile calls dropped midway"
    );
    assert!(probes > 1000, "{probes}");
    // The path named: with multiplexing the probes ran on shared connections.
    assert_eq!(
        shared > 0,
        multiplexing,
        "{shared} calls on shared connections"
    );
    pool.close();
}
