//! How long it takes to get an isolated, migrated database for one test, three ways:
//! a fresh database migrated from scratch (the migration figure), a clone of a migrated
//! template, and a fresh schema. Used by the suite and by the `testdb` binary.

use std::path::Path;
use std::time::{Duration, Instant};

use pgdbm::testing::{Migrations, TestDatabase, TestDatabaseBuilder};

pub const FILES: usize = 10;

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

/// One way of getting a test database: median, fastest and slowest creation, median cleanup.
pub struct Way {
    pub name: &'static str,
    pub create: Duration,
    pub fastest: Duration,
    pub slowest: Duration,
    pub cleanup: Duration,
}

pub async fn measure(rounds: usize) -> Vec<Way> {
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
    // The template lives while a database cloned from it does; this one keeps it for the
    // whole measurement, as the other tests of a parallel run would.
    let anchor = make(1).create().await.expect("create test database");
    // Warm up: primes caches for every way.
    for way in 0..ways.len() {
        time_one(make(way)).await;
    }
    let mut times: Vec<(Vec<Duration>, Vec<Duration>)> = vec![(vec![], vec![]); ways.len()];
    // Alternate the ways round by round so machine noise hits them alike.
    for _ in 0..rounds {
        for (i, t) in times.iter_mut().enumerate() {
            let (c, d) = time_one(make(i)).await;
            t.0.push(c);
            t.1.push(d);
        }
    }
    anchor.cleanup().await.expect("cleanup");
    std::fs::remove_dir_all(&dir).ok();
    ways.iter()
        .zip(times)
        .map(|(name, (created, dropped))| Way {
            name,
            fastest: *created.iter().min().expect("rounds"),
            slowest: *created.iter().max().expect("rounds"),
            create: median(created),
            cleanup: median(dropped),
        })
        .collect()
}
