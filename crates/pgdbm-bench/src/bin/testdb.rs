//! How long it takes to get an isolated, migrated database for one test, three ways:
//! a fresh database migrated from scratch, a clone of a migrated template, and a fresh schema.
//!
//! ```sh
//! cargo run --release -p pgdbm-bench --bin testdb [-- --rounds N]
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

use pgdbm::testing::{Migrations, TestDatabase, TestDatabaseBuilder};

const FILES: usize = 10;

fn write_migrations(dir: &Path) {
    std::fs::create_dir_all(dir).expect("migrations dir");
    for i in 1..=FILES {
        let sql = format!(
            "CREATE TABLE {{{{tables.t{i}}}}} (
                 id bigserial PRIMARY KEY,
                 name text NOT NULL,
                 amount numeric(12, 2) NOT NULL DEFAULT 0,
                 payload jsonb,
                 created_at timestamptz NOT NULL DEFAULT now()
             );
             CREATE INDEX t{i}_name_idx ON {{{{tables.t{i}}}}} (name);
             INSERT INTO {{{{tables.t{i}}}}} (name, payload)
                 SELECT 'row ' || g, jsonb_build_object('g', g) FROM generate_series(1, 50) g;"
        );
        std::fs::write(dir.join(format!("{i:03}_table_{i}.sql")), sql).expect("write migration");
    }
}

async fn time_one(builder: TestDatabaseBuilder) -> (Duration, Duration) {
    let started = Instant::now();
    let tdb: TestDatabase = builder.create().await.expect("create test database");
    let created = started.elapsed();
    let n: Option<i64> = tdb
        .manager()
        .fetch_value("SELECT count(*) FROM {{tables.t10}}", &[])
        .await
        .expect("migrated table");
    assert_eq!(n, Some(50));
    let started = Instant::now();
    tdb.cleanup().await.expect("cleanup");
    (created, started.elapsed())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let rounds: usize = std::env::args()
        .skip_while(|a| a != "--rounds")
        .nth(1)
        .and_then(|r| r.parse().ok())
        .unwrap_or(7);
    let dir = std::env::temp_dir().join(format!("pgdbm_testdb_bench_{}", std::process::id()));
    write_migrations(&dir);
    let migrations = Migrations::Dir(dir.clone());
    let ways = [
        "fresh database + 10 migrations",
        "clone of the migrated template",
        "fresh schema + 10 migrations",
    ];
    let make = |way: usize| -> TestDatabaseBuilder {
        let m = migrations.clone();
        match way {
            0 => TestDatabase::builder()
                .schema("app")
                .migrations(m)
                .without_template(),
            1 => TestDatabase::builder().schema("app").migrations(m),
            _ => TestDatabase::builder().schema_per_test().migrations(m),
        }
    };
    // Warm up: builds the template once and primes caches for every way.
    for way in 0..ways.len() {
        time_one(make(way)).await;
    }
    let mut results: Vec<(&str, Vec<Duration>, Vec<Duration>)> =
        ways.iter().map(|n| (*n, vec![], vec![])).collect();
    // Alternate the ways round by round so machine noise hits them alike.
    for _ in 0..rounds {
        for (i, _) in ways.iter().enumerate() {
            let (c, d) = time_one(make(i)).await;
            results[i].1.push(c);
            results[i].2.push(d);
        }
    }
    let fresh = median(results[0].1.clone());
    println!("isolated, migrated database for one test ({FILES}-file migration set, {rounds} rounds, medians)");
    println!(
        "{:<34} {:>12} {:>12} {:>14} {:>10}",
        "way", "create ms", "range ms", "cleanup ms", "speed-up"
    );
    for (name, created, dropped) in &results {
        let (lo, hi) = (created.iter().min().unwrap(), created.iter().max().unwrap());
        let m = median(created.clone());
        println!(
            "{:<34} {:>12.1} {:>5.0}..{:<6.0} {:>14.1} {:>9.1}x",
            name,
            m.as_secs_f64() * 1e3,
            lo.as_secs_f64() * 1e3,
            hi.as_secs_f64() * 1e3,
            median(dropped.clone()).as_secs_f64() * 1e3,
            fresh.as_secs_f64() / m.as_secs_f64()
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
