//! Many schemas on one pool: a plain read that misses the statement cache, when its template
//! was prepared in another schema, costs one round trip, not two: it runs unprepared with that
//! template's parameter types alongside its own prepare. It runs in its own schema, and when
//! its own types differ, the prepared statement's answer is the one given.

mod common;

use std::time::{Duration, Instant};

use common::*;
use pgdbm::{AsyncDatabaseManager, DatabaseConfig, Pool};

const NAME_BY_ID: &str = "SELECT name FROM {{tables.items}} WHERE id = $1";

struct Tenants {
    pool: Pool,
    managers: Vec<AsyncDatabaseManager>,
    _guards: Vec<SchemaGuard>,
}

/// A shared pool of one connection with a statement cache of `cache`.
async fn one_connection_pool(url: &str, cache: usize, time_zone: Option<&str>) -> Pool {
    let cfg = DatabaseConfig {
        connection_string: Some(url.to_owned()),
        min_connections: 1,
        max_connections: 1,
        statement_cache_size: cache,
        retry_attempts: 0,
        server_settings: time_zone.map(|tz| [("TimeZone".to_owned(), tz.to_owned())].into()),
        ..Default::default()
    };
    AsyncDatabaseManager::create_shared_pool(&cfg)
        .await
        .unwrap()
}

/// `id_types.len()` schemas on one pool, each with `items(id <type> PRIMARY KEY, name text)`
/// holding one row whose name is the schema's index.
async fn tenants(url: &str, cache: usize, id_types: &[&str]) -> Tenants {
    let pool = one_connection_pool(url, cache, None).await;
    let mut managers = Vec::new();
    let mut guards = Vec::new();
    for (n, ty) in id_types.iter().enumerate() {
        let schema = unique("tm");
        guards.push(SchemaGuard(schema.clone()));
        let id = if *ty == "text" { "'7'" } else { "7" };
        admin(&format!(
            "CREATE SCHEMA \"{schema}\"; \
             CREATE TABLE \"{schema}\".items (id {ty} PRIMARY KEY, name text); \
             INSERT INTO \"{schema}\".items VALUES ({id}, 'tenant {n}')"
        ))
        .await;
        managers.push(AsyncDatabaseManager::from_pool(pool.clone(), Some(&schema)).unwrap());
    }
    Tenants {
        pool,
        managers,
        _guards: guards,
    }
}

async fn one_trip(db: &AsyncDatabaseManager) -> u64 {
    db.get_pool_stats().await.unwrap().one_trip_misses
}

async fn name_of(db: &AsyncDatabaseManager, id: i32) -> Option<String> {
    db.fetch_value::<String>(NAME_BY_ID, &[&id]).await.unwrap()
}

#[tokio::test]
async fn misses_take_one_round_trip_each_in_its_own_schema() {
    let t = tenants(&database_url(), 100, &["int4"; 6]).await;
    let m = &t.managers;
    // The first tenant prepares the template.
    assert_eq!(name_of(&m[0], 7).await.as_deref(), Some("tenant 0"));
    assert_eq!(one_trip(&m[0]).await, 0);
    // Every other tenant's text misses once: one round trip, rows its own; then cached.
    for (n, db) in m.iter().enumerate().skip(1) {
        assert_eq!(name_of(db, 7).await, Some(format!("tenant {n}")));
        assert_eq!(one_trip(&m[0]).await, n as u64);
        assert_eq!(name_of(db, 8).await, None, "cached now");
        assert_eq!(one_trip(&m[0]).await, n as u64);
    }

    // `fetch_all` takes the same path; a write never does (it would run before its types
    // are checked).
    let rename = "UPDATE {{tables.items}} SET name = $1 WHERE id = $2";
    let all = "SELECT id, name FROM {{tables.items}} WHERE id >= $1";
    m[0].execute(rename, &[&"zero", &7_i32]).await.unwrap();
    m[1].fetch_all(all, &[&0_i32]).await.unwrap();
    let n = m[3].execute(rename, &[&"three", &7_i32]).await.unwrap();
    assert_eq!(n, 1);
    let rows = m[4].fetch_all(all, &[&0_i32]).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<String>("name").unwrap(), "tenant 4");
    assert_eq!(one_trip(&m[0]).await, 6, "the fetch_all, not the UPDATE");
    for (n, db) in m.iter().enumerate() {
        let want = match n {
            0 => "zero".to_owned(),
            3 => "three".to_owned(),
            _ => format!("tenant {n}"),
        };
        let got: Option<String> = db
            .fetch_value("SELECT name FROM {{tables.items}}", &[])
            .await
            .unwrap();
        assert_eq!(got.as_deref(), Some(want.as_str()), "tenant {n}");
    }
    drop(t.pool);
}

/// Where one template names columns of different types, the guess gives the answer a
/// prepared statement gives, not the guessed types' answer: a `timestamp` column compared
/// with a `SystemTime` guessed as `timestamptz` would be shifted by the session's time zone.
#[tokio::test]
async fn a_guess_with_other_types_gives_the_prepared_answer() {
    let pool = one_connection_pool(&database_url(), 100, Some("America/New_York")).await;
    let mut managers = Vec::new();
    let mut guards = Vec::new();
    for ty in ["timestamptz", "timestamp", "timestamp"] {
        let schema = unique("tz");
        guards.push(SchemaGuard(schema.clone()));
        admin(&format!(
            "CREATE SCHEMA \"{schema}\"; CREATE TABLE \"{schema}\".items (ts {ty}); \
             INSERT INTO \"{schema}\".items VALUES ('2020-01-01 00:00:00+00')"
        ))
        .await;
        managers.push(AsyncDatabaseManager::from_pool(pool.clone(), Some(&schema)).unwrap());
    }
    let at = std::time::UNIX_EPOCH + Duration::from_secs(1_577_836_800); // 2020-01-01T00:00:00Z
    let count = "SELECT count(*) FROM {{tables.items}} WHERE ts = $1";
    let n: Option<i64> = managers[0].fetch_value(count, &[&at]).await.unwrap();
    assert_eq!(n, Some(1));
    // The timestamp column holds 2020-01-01 00:00 (the insert's +00 dropped): the prepared
    // statement binds the SystemTime as that wall-clock time and finds it.
    let n: Option<i64> = managers[1].fetch_value(count, &[&at]).await.unwrap();
    assert_eq!(n, Some(1), "the guessed timestamptz answer would be 0");
    let stats = managers[0].get_pool_stats().await.unwrap();
    assert_eq!(stats.one_trip_misses, 0, "the guess was not the answer");
    // The last prepare taught the template `timestamp`: for another such schema the guess
    // matches and is the answer, in one round trip.
    let n: Option<i64> = managers[2].fetch_value(count, &[&at]).await.unwrap();
    assert_eq!(n, Some(1));
    let stats = managers[0].get_pool_stats().await.unwrap();
    assert_eq!(stats.one_trip_misses, 1);
}

/// Inside a transaction a failed unprepared run would abort it: misses are prepared first.
#[tokio::test]
async fn inside_a_transaction_misses_are_prepared() {
    let t = tenants(&database_url(), 1, &["int4"; 3]).await;
    let m = &t.managers;
    name_of(&m[0], 7).await;
    let tx = m[1].transaction().await.unwrap();
    let got: Option<String> = tx.fetch_value(NAME_BY_ID, &[&7_i32]).await.unwrap();
    assert_eq!(got.as_deref(), Some("tenant 1"));
    tx.commit().await.unwrap();
    assert_eq!(one_trip(&m[0]).await, 0);
    // Outside one, the next tenant's miss takes one round trip.
    assert_eq!(name_of(&m[2], 7).await.as_deref(), Some("tenant 2"));
    assert_eq!(one_trip(&m[0]).await, 1);
}

/// A guess the driver cannot encode (an i32 as text) or the server refuses (`text = int4`)
/// ends with the prepared statement's outcome: its rows, or its error.
#[tokio::test]
async fn a_refused_guess_ends_with_the_prepared_outcome() {
    // Tenants 0, 2 and 3 have text ids, tenant 1 int4 ids.
    let t = tenants(&database_url(), 1, &["text", "int4", "text", "text"]).await;
    let m = &t.managers;
    let by_text = m[0]
        .fetch_value::<String>(NAME_BY_ID, &[&"7"])
        .await
        .unwrap();
    assert_eq!(by_text.as_deref(), Some("tenant 0"));
    // The guess says text; the driver cannot send an i32 as text: the prepared answer.
    assert_eq!(name_of(&m[1], 7).await.as_deref(), Some("tenant 1"));
    assert_eq!(one_trip(&m[0]).await, 0);
    // Now the guess says int4; the server has no `text = integer`: the prepared statement's
    // error for an i32 against a text column.
    let guessed = m[2]
        .fetch_value::<String>(NAME_BY_ID, &[&7_i32])
        .await
        .unwrap_err();
    assert_eq!(one_trip(&m[0]).await, 0);
    let alone = tenants(&database_url(), 100, &["text"]).await;
    let prepared = alone.managers[0]
        .fetch_value::<String>(NAME_BY_ID, &[&7_i32])
        .await
        .unwrap_err();
    assert_eq!(guessed.kind(), prepared.kind());
    let strip = |e: &pgdbm::Error| e.to_string().replace(m[2].schema().unwrap(), "S");
    let alone_schema = alone.managers[0].schema().unwrap().to_owned();
    assert_eq!(
        strip(&guessed),
        prepared.to_string().replace(&alone_schema, "S")
    );
    // The tenant is fine after it, and the guess (text again) holds for the next tenant.
    let ok = m[2]
        .fetch_value::<String>(NAME_BY_ID, &[&"7"])
        .await
        .unwrap();
    assert_eq!(ok.as_deref(), Some("tenant 2"));
    let ok = m[3]
        .fetch_value::<String>(NAME_BY_ID, &[&"7"])
        .await
        .unwrap();
    assert_eq!(ok.as_deref(), Some("tenant 3"));
    assert_eq!(one_trip(&m[0]).await, 1);
}

/// The path by its cost: through 50 ms each way, a miss sent with its guess takes one round
/// trip, a miss prepared first takes two.
#[tokio::test]
async fn through_a_slow_network_a_guessed_miss_is_one_round_trip() {
    let (_proxy, url) = proxied_url(Duration::from_millis(50)).await;
    let t = tenants(&url, 1, &["int4"; 3]).await;
    let m = &t.managers;
    name_of(&m[0], 7).await;
    let started = Instant::now();
    assert_eq!(name_of(&m[1], 7).await.as_deref(), Some("tenant 1"));
    let guessed_miss = started.elapsed();
    assert_eq!(one_trip(&m[0]).await, 1);
    // A template never prepared before has nothing to guess from.
    let started = Instant::now();
    let got: Option<String> = m[2]
        .fetch_value(
            "SELECT name FROM {{tables.items}} WHERE id = $1 AND true",
            &[&7_i32],
        )
        .await
        .unwrap();
    let prepared_miss = started.elapsed();
    assert_eq!(got.as_deref(), Some("tenant 2"));
    assert_eq!(one_trip(&m[0]).await, 1);
    // One round trip is 100 ms here.
    assert!(
        guessed_miss >= Duration::from_millis(100) && guessed_miss < Duration::from_millis(190),
        "{guessed_miss:?}"
    );
    assert!(
        prepared_miss >= Duration::from_millis(200),
        "{prepared_miss:?}"
    );
}
