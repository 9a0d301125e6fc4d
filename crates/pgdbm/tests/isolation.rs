//! Nothing one caller leaves on a pooled connection reaches the next caller: an open
//! transaction, a setting, a role, a temporary table, a prepared statement, a lock, a LISTEN.
//! Each test uses a pool of one connection, so the next caller gets the same session (the
//! backend PID proves it where the connection must be reset rather than replaced).

mod common;

use common::*;
use pgdbm::{AsyncDatabaseManager, DatabaseConfig, Pool};

/// A shared pool of exactly one connection, and two tenants' managers on it.
async fn two_tenants() -> (
    Pool,
    AsyncDatabaseManager,
    AsyncDatabaseManager,
    [SchemaGuard; 2],
) {
    let (a, b) = (unique("tenant_a"), unique("tenant_b"));
    let guards = [SchemaGuard(a.clone()), SchemaGuard(b.clone())];
    let mut cfg = config();
    pool_of(1)(&mut cfg);
    let pool = AsyncDatabaseManager::create_shared_pool(&cfg)
        .await
        .expect("shared pool");
    let ma = AsyncDatabaseManager::from_pool(pool.clone(), Some(&a)).unwrap();
    let mb = AsyncDatabaseManager::from_pool(pool.clone(), Some(&b)).unwrap();
    for (m, name) in [(&ma, &a), (&mb, &b)] {
        m.execute(
            &format!(
                "CREATE SCHEMA \"{name}\"; CREATE TABLE {{{{tables.items}}}} (name text); \
                 INSERT INTO {{{{tables.items}}}} VALUES ('{name}')"
            ),
            &[],
        )
        .await
        .unwrap();
    }
    (pool, ma, mb, guards)
}

async fn pid(db: &AsyncDatabaseManager) -> i32 {
    db.fetch_value("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .unwrap()
}

/// A savepoint can only be made inside a transaction block.
async fn assert_outside_transaction(db: &AsyncDatabaseManager, what: &str) {
    let err = db.execute("SAVEPOINT probe", &[]).await.err();
    assert_eq!(
        err.as_ref().and_then(|e| e.code()),
        Some("25P01"),
        "{what}: the next caller ran inside a transaction"
    );
}

async fn text(db: &AsyncDatabaseManager, sql: &str) -> String {
    db.fetch_value::<String>(sql, &[]).await.unwrap().unwrap()
}

#[tokio::test]
async fn begin_sent_through_fetch_does_not_swallow_later_writes() {
    let (db, _g) = schema_db_with(pool_of(1)).await;
    let schema = db.schema().unwrap().to_owned();
    db.execute("CREATE TABLE {{tables.ledger}} (n int)", &[])
        .await
        .unwrap();
    db.fetch_all("BEGIN", &[]).await.unwrap();
    for i in 0..3i32 {
        let n = db
            .execute("INSERT INTO {{tables.ledger}} VALUES ($1)", &[&i])
            .await
            .unwrap();
        assert_eq!(n, 1);
    }
    // Acknowledged writes are visible to another session at once.
    let seen = admin_value(&format!("SELECT count(*) FROM \"{schema}\".ledger")).await;
    assert_eq!(seen.as_deref(), Some("3"));
    db.disconnect().await.unwrap();
    let kept = admin_value(&format!("SELECT count(*) FROM \"{schema}\".ledger")).await;
    assert_eq!(kept.as_deref(), Some("3"), "acknowledged rows were lost");
}

#[tokio::test]
async fn begin_through_every_method_is_rolled_back_before_reuse() {
    let (db, _g) = schema_db_with(pool_of(1)).await;
    for way in 0..4 {
        match way {
            0 => drop(db.fetch_one("BEGIN", &[]).await.unwrap()),
            1 => drop(db.fetch_value::<i32>("BEGIN", &[]).await),
            2 => drop(db.execute("START TRANSACTION", &[]).await.unwrap()),
            _ => drop(db.fetch_all("BEGIN; SELECT 1", &[]).await),
        }
        assert_outside_transaction(&db, &format!("way {way}")).await;
    }
    // A failed transaction left behind is rolled back too.
    db.fetch_all("BEGIN", &[]).await.unwrap();
    assert!(db.fetch_all("SELECT 1/0", &[]).await.is_err());
    assert_eq!(
        db.fetch_value::<i32>("SELECT 1", &[]).await.unwrap(),
        Some(1)
    );
}

#[tokio::test]
async fn search_path_set_by_one_tenant_does_not_reach_another() {
    let (_pool, a, b, _g) = two_tenants().await;
    let before = pid(&b).await;
    let set: String = text(
        &a,
        &format!(
            "SELECT set_config('search_path', '{}', false)",
            a.schema().unwrap()
        ),
    )
    .await;
    assert!(!set.is_empty());
    let err = b
        .fetch_all("SELECT name FROM items", &[])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("42P01"), "{err}");
    assert_eq!(text(&b, "SHOW search_path").await, "pg_catalog");
    assert_eq!(pid(&b).await, before, "reset, not replaced");
}

#[tokio::test]
async fn a_role_set_by_one_caller_does_not_reach_the_next() {
    let role = unique("iso_role");
    let _r = RoleGuard(role.clone());
    admin(&format!("CREATE ROLE \"{role}\"")).await;
    let (_pool, a, b, _g) = two_tenants().await;
    a.execute(&format!("SET ROLE \"{role}\""), &[])
        .await
        .unwrap();
    assert_eq!(text(&b, "SELECT current_user::text").await, "postgres");
    a.execute(&format!("SET SESSION AUTHORIZATION \"{role}\""), &[])
        .await
        .unwrap();
    assert_eq!(text(&b, "SELECT session_user::text").await, "postgres");
    assert_eq!(text(&b, "SELECT current_user::text").await, "postgres");
    // Through a fetch too, and through a transaction that commits.
    drop(
        a.fetch_all(&format!("SET ROLE \"{role}\""), &[])
            .await
            .unwrap(),
    );
    assert_eq!(text(&b, "SELECT current_user::text").await, "postgres");
    let tx = a.transaction().await.unwrap();
    tx.execute(&format!("SET ROLE \"{role}\""), &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(text(&b, "SELECT current_user::text").await, "postgres");
}

#[tokio::test]
async fn temp_tables_and_prepared_statements_do_not_reach_the_next_caller() {
    let mut cfg = config();
    pool_of(1)(&mut cfg);
    let pool = AsyncDatabaseManager::create_shared_pool(&cfg)
        .await
        .unwrap();
    let a = AsyncDatabaseManager::from_pool(pool.clone(), None).unwrap();
    let b = AsyncDatabaseManager::from_pool(pool, None).unwrap();
    a.execute("CREATE TEMP TABLE users (id int)", &[])
        .await
        .unwrap();
    let err = b
        .fetch_all("SELECT * FROM {{tables.users}}", &[])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("42P01"), "{err}");
    a.execute("PREPARE report AS SELECT 1", &[]).await.unwrap();
    b.execute("PREPARE report AS SELECT 2", &[]).await.unwrap();
    let left: i64 = b
        .fetch_value(
            "SELECT count(*) FROM pg_prepared_statements WHERE from_sql",
            &[],
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn reset_all_does_not_remove_the_pools_own_settings() {
    let (db, _g) = schema_db_with(|c| {
        pool_of(1)(c);
        c.statement_timeout_ms = Some(12_345);
    })
    .await;
    let path = text(&db, "SHOW search_path").await;
    db.execute("RESET ALL", &[]).await.unwrap();
    assert_eq!(text(&db, "SHOW statement_timeout").await, "12345ms");
    assert_eq!(text(&db, "SHOW search_path").await, path);
    drop(db.fetch_all("RESET statement_timeout", &[]).await.unwrap());
    assert_eq!(text(&db, "SHOW statement_timeout").await, "12345ms");
}

#[tokio::test]
async fn locks_listens_and_held_cursors_do_not_reach_the_next_caller() {
    let (db, _g) = schema_db_with(pool_of(1)).await;
    let before = pid(&db).await;
    drop(
        db.fetch_value::<String>("SELECT pg_advisory_lock(4242)::text", &[])
            .await
            .unwrap(),
    );
    db.execute("LISTEN isolation_probe", &[]).await.unwrap();
    let tx = db.transaction().await.unwrap();
    tx.execute("DECLARE held CURSOR WITH HOLD FOR SELECT 1", &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let locks: i64 = db
        .fetch_value(
            "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory'",
            &[],
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(locks, 0);
    let channels: i64 = db
        .fetch_value("SELECT count(*) FROM pg_listening_channels()", &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(channels, 0);
    let cursors: i64 = db
        // The statement's own protocol-level portal is listed too; it is not holdable.
        .fetch_value("SELECT count(*) FROM pg_cursors WHERE is_holdable", &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cursors, 0);
    assert_eq!(pid(&db).await, before, "reset, not replaced");
}

#[tokio::test]
async fn a_setting_the_server_reports_is_reset_even_when_the_text_hides_it() {
    let (db, _g) = schema_db_with(pool_of(1)).await;
    let zone = text(&db, "SHOW TimeZone").await;
    let other = if zone == "Asia/Tokyo" {
        "UTC"
    } else {
        "Asia/Tokyo"
    };
    db.execute(
        &format!(
            "CREATE FUNCTION {{{{tables.sneaky}}}}() RETURNS int LANGUAGE plpgsql AS $$ \
             BEGIN EXECUTE 'SET TimeZone = ''{other}'''; RETURN 1; END $$"
        ),
        &[],
    )
    .await
    .unwrap();
    let one: Option<i32> = db
        .fetch_value("SELECT {{tables.sneaky}}()", &[])
        .await
        .unwrap();
    assert_eq!(one, Some(1));
    assert_eq!(text(&db, "SHOW TimeZone").await, zone);
}

#[tokio::test]
async fn always_resets_what_neither_the_text_nor_the_server_shows() {
    let hidden = "CREATE FUNCTION {{tables.hide}}() RETURNS int LANGUAGE plpgsql AS $$ \
                  BEGIN EXECUTE 'SET app.leak = ''1'''; RETURN 1; END $$";
    let probe = "SELECT coalesce(current_setting('app.leak', true), '')";
    let (db, _g) = schema_db_with(|c| {
        pool_of(1)(c);
        c.reset_on_release = pgdbm::ResetOnRelease::Always;
    })
    .await;
    db.execute(hidden, &[]).await.unwrap();
    db.fetch_value::<i32>("SELECT {{tables.hide}}()", &[])
        .await
        .unwrap();
    assert_eq!(text(&db, probe).await, "");
    let before = pid(&db).await;
    assert_eq!(text(&db, probe).await, "", "a probe right after a probe");
    assert_eq!(pid(&db).await, before, "reset, not replaced");
    // With init_commands the reset runs when the connection is released, and they run again.
    let (eager, _g3) = schema_db_with(|c| {
        pool_of(1)(c);
        c.reset_on_release = pgdbm::ResetOnRelease::Always;
        c.init_commands = Some(vec!["SET work_mem = '7MB'".into()]);
    })
    .await;
    eager.execute(hidden, &[]).await.unwrap();
    eager
        .fetch_value::<i32>("SELECT {{tables.hide}}()", &[])
        .await
        .unwrap();
    assert_eq!(text(&eager, probe).await, "");
    assert_eq!(text(&eager, "SHOW work_mem").await, "7MB");
    // `auto` cannot see it: the documented limit that `always` is for.
    let (auto, _g2) = schema_db_with(pool_of(1)).await;
    auto.execute(hidden, &[]).await.unwrap();
    auto.fetch_value::<i32>("SELECT {{tables.hide}}()", &[])
        .await
        .unwrap();
    assert_eq!(text(&auto, probe).await, "1");
}

#[tokio::test]
async fn a_raw_connection_is_reset_rather_than_leaking() {
    let role = unique("iso_raw");
    let _r = RoleGuard(role.clone());
    admin(&format!("CREATE ROLE \"{role}\"")).await;
    let (db, _g) = schema_db_with(pool_of(1)).await;
    let before = pid(&db).await;
    {
        let conn = db.acquire().await.unwrap();
        conn.batch_execute(&format!(
            "SET ROLE \"{role}\"; SET statement_timeout = 1; BEGIN"
        ))
        .await
        .unwrap();
    }
    assert_eq!(text(&db, "SELECT current_user::text").await, "postgres");
    assert_eq!(text(&db, "SHOW statement_timeout").await, "1min");
    assert_eq!(pid(&db).await, before, "reset, not replaced");
}

#[tokio::test]
async fn what_a_transaction_sends_through_its_raw_client_is_reset() {
    let (db, _g) = schema_db_with(pool_of(1)).await;
    let path = text(&db, "SHOW search_path").await;
    let tx = db.transaction().await.unwrap();
    tx.connection()
        .batch_execute("SET search_path = public")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(text(&db, "SHOW search_path").await, path);
}

#[tokio::test]
async fn reset_on_release_reads_from_json_and_env() {
    let c: DatabaseConfig = serde_json::from_str(r#"{"reset_on_release": "always"}"#).unwrap();
    assert_eq!(c.reset_on_release, pgdbm::ResetOnRelease::Always);
    assert!(serde_json::from_str::<DatabaseConfig>(r#"{"reset_on_release": "never"}"#).is_err());
    assert_eq!("ALWAYS".parse(), Ok(pgdbm::ResetOnRelease::Always));
}
