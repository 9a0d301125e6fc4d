//! Scale-out figures: point selects through PgBouncer in transaction mode against direct, reads
//! spread over a primary and a replica against the primary alone, read-your-writes latency, and
//! failover time.
//!
//! ```sh
//! cargo run --release -p pgdbm-bench --bin scaleout [-- --secs 5 --rounds 3]
//! cargo run --release -p pgdbm-bench --bin scaleout -- --ryw   # read-your-writes latency only
//! ```
//!
//! Everything runs on one machine: PgBouncer, the replica and the clients share its cores with
//! the server, so the replica figure measures routing overhead, not added capacity.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgdbm::testing::{TempCluster, TempPgBouncer};
use pgdbm::{AsyncDatabaseManager, DatabaseConfig, Pooler};

const CONCURRENCY: usize = 16;
const ROWS: i32 = 10_000;

struct Figures {
    ops_per_sec: f64,
    errors: u64,
    first_error: Option<String>,
}

fn arg(name: &str, default: u64) -> u64 {
    std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `CONCURRENCY` tasks doing point selects on `pick(i)` for `secs`.
async fn point_selects(managers: &[AsyncDatabaseManager], secs: u64, sql: &'static str) -> Figures {
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None));
    let stop = Instant::now() + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|task| {
            let db = managers[task % managers.len()].clone();
            let (done, errors, first_error) = (done.clone(), errors.clone(), first_error.clone());
            tokio::spawn(async move {
                let mut id = task as i32;
                while Instant::now() < stop {
                    id = (id * 7919 + 13) % ROWS + 1;
                    match db.fetch_one(sql, &[&id]).await {
                        Ok(Some(_)) => {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(None) => panic!("row {id} missing"),
                        Err(e) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            first_error
                                .lock()
                                .unwrap()
                                .get_or_insert_with(|| e.to_string());
                        }
                    }
                }
            })
        })
        .collect();
    let started = Instant::now();
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let first_error = first_error.lock().unwrap().take();
    Figures {
        ops_per_sec: done.load(Ordering::Relaxed) as f64 / elapsed,
        errors: errors.load(Ordering::Relaxed),
        first_error,
    }
}

/// The same point selects on raw tokio-postgres clients, one per task, with unnamed
/// statements (`query_typed`): what the driver itself does through a transaction pooler.
async fn raw_point_selects(url: &str, secs: u64) -> Figures {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(secs);
    let mut clients = Vec::new();
    for _ in 0..CONCURRENCY {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("raw connect");
        tokio::spawn(conn);
        clients.push(client);
    }
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(task, client)| {
            let done = done.clone();
            tokio::spawn(async move {
                let mut id = task as i32;
                while Instant::now() < stop {
                    id = (id * 7919 + 13) % ROWS + 1;
                    let rows = client
                        .query_typed(POINT, &[(&id, tokio_postgres::types::Type::INT4)])
                        .await
                        .expect("raw point select");
                    assert_eq!(rows.len(), 1);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    Figures {
        ops_per_sec: done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64(),
        errors: 0,
        first_error: None,
    }
}

async fn manager(config: DatabaseConfig) -> AsyncDatabaseManager {
    let db = AsyncDatabaseManager::new(DatabaseConfig {
        min_connections: CONCURRENCY,
        max_connections: CONCURRENCY,
        retry_attempts: 0,
        ..config
    })
    .expect("config");
    db.connect().await.expect("connect");
    db
}

async fn seed(db: &AsyncDatabaseManager) {
    db.execute(
        &format!(
            "DROP TABLE IF EXISTS scaleout_items;
             CREATE TABLE scaleout_items (id int4 PRIMARY KEY, name text NOT NULL);
             INSERT INTO scaleout_items SELECT i, 'item ' || i FROM generate_series(1, {ROWS}) i;
             ANALYZE scaleout_items"
        ),
        &[],
    )
    .await
    .expect("seed");
}

const POINT: &str = "SELECT id, name FROM scaleout_items WHERE id = $1";

fn row(name: &str, f: &Figures, base: f64) {
    println!(
        "{:<52} {:>10.0} {:>8.2} {:>8}",
        name,
        f.ops_per_sec,
        f.ops_per_sec / base,
        f.errors
    );
    if let Some(e) = &f.first_error {
        println!(
            "    first error: {}",
            e.chars().take(160).collect::<String>()
        );
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

async fn pgbouncer(secs: u64, rounds: u64) {
    let cluster = TempCluster::start().expect("cluster");
    let bouncer = TempPgBouncer::builder()
        .default_pool_size(CONCURRENCY as u32)
        .max_client_conn(200)
        .start(cluster.host(), cluster.port())
        .expect("pgbouncer");
    let direct = manager(cluster.database_config("postgres")).await;
    seed(&direct).await;
    let through = manager(DatabaseConfig {
        pooler: Pooler::Transaction,
        ..bouncer.database_config("postgres")
    })
    .await;
    // What a user got before `pooler`: the default statement cache through the pooler.
    let cached = manager(bouncer.database_config("postgres")).await;

    let (mut d, mut t, mut c, mut raw) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        d.push(point_selects(std::slice::from_ref(&direct), secs, POINT).await);
        t.push(point_selects(std::slice::from_ref(&through), secs, POINT).await);
        c.push(point_selects(std::slice::from_ref(&cached), secs, POINT).await);
        raw.push(raw_point_selects(&bouncer.connection_string("postgres"), secs).await);
    }
    let summarise = |v: &mut Vec<Figures>| Figures {
        ops_per_sec: median(v.iter().map(|f| f.ops_per_sec).collect()),
        errors: v.iter().map(|f| f.errors).sum(),
        first_error: v.iter_mut().find_map(|f| f.first_error.take()),
    };
    let (d, t, c, raw) = (
        summarise(&mut d),
        summarise(&mut t),
        summarise(&mut c),
        summarise(&mut raw),
    );
    println!(
        "\npoint select, concurrency {CONCURRENCY}, {rounds} rounds of {secs} s (median ops/s)"
    );
    println!(
        "{:<52} {:>10} {:>8} {:>8}",
        "way", "ops/s", "ratio", "errors"
    );
    row("direct (statement cache)", &d, d.ops_per_sec);
    row(
        "PgBouncer transaction mode, pooler = \"transaction\"",
        &t,
        d.ops_per_sec,
    );
    row(
        "PgBouncer transaction mode, raw driver (query_typed)",
        &raw,
        d.ops_per_sec,
    );
    row(
        "PgBouncer transaction mode, default cache (no pooler)",
        &c,
        d.ops_per_sec,
    );
    for db in [direct, through, cached] {
        db.disconnect().await.unwrap();
    }
}

async fn replicas(secs: u64, rounds: u64) {
    let primary = TempCluster::start().expect("primary");
    let replica = primary.start_replica().expect("replica");
    let alone = manager(primary.database_config("postgres")).await;
    seed(&alone).await;
    primary
        .wait_for_replica(&replica, Duration::from_secs(30))
        .await
        .expect("replay");
    let routed = manager(DatabaseConfig {
        read_replicas: vec![replica.connection_string("postgres")],
        ..primary.database_config("postgres")
    })
    .await;
    // Let the first health check mark the replica usable.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spread = [routed.clone(), routed.replica()];
    let only_replica = [routed.replica()];
    let (mut a, mut s, mut r) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        a.push(point_selects(std::slice::from_ref(&alone), secs, POINT).await);
        s.push(point_selects(&spread, secs, POINT).await);
        r.push(point_selects(&only_replica, secs, POINT).await);
    }
    let med = |v: &Vec<Figures>| Figures {
        ops_per_sec: median(v.iter().map(|f| f.ops_per_sec).collect()),
        errors: v.iter().map(|f| f.errors).sum(),
        first_error: v.iter().find_map(|f| f.first_error.clone()),
    };
    let (a, s, r) = (med(&a), med(&s), med(&r));
    println!(
        "\nreads, concurrency {CONCURRENCY}, {rounds} rounds of {secs} s (median ops/s); one machine: \
         the replica shares the primary's cores, so this measures routing overhead, not capacity"
    );
    println!(
        "{:<52} {:>10} {:>8} {:>8}",
        "way", "ops/s", "ratio", "errors"
    );
    row("primary alone", &a, a.ops_per_sec);
    row("half on the primary, half via replica()", &s, a.ops_per_sec);
    row("all via replica()", &r, a.ops_per_sec);
    let stats = routed.get_pool_stats().await.unwrap();
    for host in &stats.hosts {
        println!(
            "    host {} {:?} healthy={} lag={:?}",
            host.label, host.role, host.healthy, host.lag
        );
    }
    alone.disconnect().await.unwrap();
    routed.disconnect().await.unwrap();
}

/// Read-your-writes latency: `PAIRS` writes each followed by a read of the row through
/// `replica()`, against the same reads from the primary, with synchronous commit on and off.
async fn read_your_writes() {
    const PAIRS: i32 = 500;
    println!("\nread-your-writes, {PAIRS} write-then-read pairs (read latency, ms)");
    println!(
        "{:<34} {:>7} {:>7} {:>7} {:>7} {:>7} {:>9}",
        "way", "median", "p90", "p99", "max", "misses", "replica"
    );
    for sync in ["on", "off"] {
        let primary = TempCluster::builder()
            .setting("synchronous_commit", sync)
            .start()
            .expect("primary");
        let replica = primary.start_replica().expect("replica");
        let alone = manager(primary.database_config("postgres")).await;
        alone
            .execute(
                "CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY)",
                &[],
            )
            .await
            .unwrap();
        primary
            .wait_for_replica(&replica, Duration::from_secs(30))
            .await
            .expect("replay");
        let routed = manager(DatabaseConfig {
            read_replicas: vec![replica.connection_string("postgres")],
            ..primary.database_config("postgres")
        })
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        for (way, db, reader, table) in [
            ("primary alone", &alone, alone.clone(), "a"),
            (
                "replica() with read-your-writes",
                &routed,
                routed.replica(),
                "b",
            ),
        ] {
            let (mut lat, mut misses, mut on_replica) = (Vec::new(), 0, 0);
            let insert = format!("INSERT INTO {table} VALUES ($1)");
            let select = format!("SELECT pg_is_in_recovery() FROM {table} WHERE id = $1");
            for i in 0..PAIRS {
                db.execute(&insert, &[&i]).await.unwrap();
                let t = Instant::now();
                let r: Option<bool> = reader.fetch_value(&select, &[&i]).await.unwrap();
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                match r {
                    None => misses += 1,
                    Some(true) => on_replica += 1,
                    Some(false) => {}
                }
            }
            lat.sort_by(f64::total_cmp);
            let at = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize];
            println!(
                "{:<34} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>7} {:>9}",
                format!("sync commit {sync}: {way}"),
                at(0.5),
                at(0.9),
                at(0.99),
                lat[lat.len() - 1],
                misses,
                on_replica
            );
        }
        alone.disconnect().await.unwrap();
        routed.disconnect().await.unwrap();
    }
}

async fn failover() {
    let primary = TempCluster::start().expect("primary");
    let replica = primary.start_replica().expect("replica");
    let cs = format!(
        "host={h},{h} port={p},{r} user=postgres dbname=postgres target_session_attrs=read-write",
        h = primary.host(),
        p = primary.port(),
        r = replica.port()
    );
    let db = AsyncDatabaseManager::new(DatabaseConfig {
        connection_string: Some(cs),
        min_connections: 2,
        max_connections: 4,
        retry_attempts: 0,
        command_timeout: 2.0,
        ..Default::default()
    })
    .expect("config");
    db.connect().await.expect("connect");
    db.execute("CREATE TABLE failover_t (id serial, at timestamptz)", &[])
        .await
        .unwrap();
    primary
        .wait_for_replica(&replica, Duration::from_secs(10))
        .await
        .unwrap();
    drop(primary);
    replica.promote().expect("promote");
    let promoted = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        if db
            .execute("INSERT INTO failover_t (at) VALUES (now())", &[])
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            promoted.elapsed() < Duration::from_secs(60),
            "no write within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "\nfailover: first successful write {:.3} s after the promotion completed ({attempts} attempts)",
        promoted.elapsed().as_secs_f64()
    );
    db.disconnect().await.unwrap();
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let secs = arg("--secs", 5);
    let rounds = arg("--rounds", 3);
    if std::env::args().any(|a| a == "--ryw") {
        read_your_writes().await;
        return;
    }
    pgbouncer(secs, rounds).await;
    replicas(secs, rounds).await;
    read_your_writes().await;
    failover().await;
}
