//! LISTEN/NOTIFY against the real server: completeness and order under concurrent senders,
//! payload limits, transactions, schema isolation, run-time channel changes, back-pressure,
//! reconnects after a terminated backend and a restarted server, and the listener's own
//! connection. Every test works in schemas (channel namespaces) of its own, or in a throwaway
//! cluster, so they run in parallel. Run with `--nocapture` to read the measured figures.

#[path = "support/certs.rs"]
mod certs;
mod common;

use std::time::{Duration, Instant};

use common::{admin_value, config, database_url, schema_db_with, unique};
use futures_util::StreamExt;
use pgdbm::testing::TempCluster;
use pgdbm::{AsyncDatabaseManager, DatabaseConfig, Error, ErrorKind, Executor, Listener};

/// The next item, or a panic after `limit`.
async fn next(listener: &mut Listener, limit: Duration) -> pgdbm::Result<pgdbm::Notification> {
    tokio::time::timeout(limit, listener.next())
        .await
        .unwrap_or_else(|_| panic!("nothing arrived within {limit:?}"))
        .expect("the stream ended")
}

/// The next notification, which must be one (not an error).
async fn next_ok(listener: &mut Listener) -> pgdbm::Notification {
    next(listener, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("expected a notification, got {e}"))
}

/// Asserts that nothing arrives for `quiet`.
async fn assert_quiet(listener: &mut Listener, quiet: Duration) {
    if let Ok(item) = tokio::time::timeout(quiet, listener.next()).await {
        panic!("expected nothing, got {item:?}");
    }
}

fn reconnecting(c: &mut DatabaseConfig) {
    c.retry_attempts = 10;
    c.retry_delay = 0.05;
    c.retry_backoff = 1.5;
    c.retry_max_delay = 0.5;
}

/// Whether a server process exists, by PID.
async fn backend_exists(pid: i32) -> bool {
    admin_value(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}"
    ))
    .await
    .as_deref()
        == Some("1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_notifications_from_four_senders_arrive_complete_and_in_order() {
    const SENDERS: usize = 4;
    const EACH: usize = 2500;
    let (db, _guard) = schema_db_with(|c| {
        c.max_connections = SENDERS;
        // Room for everything: this test is about completeness, not back-pressure.
        c.listen_buffer_size = SENDERS * EACH;
    })
    .await;
    let mut listener = db.listen(&["orders"]).await.unwrap();
    let started = Instant::now();
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let db = db.clone();
            tokio::spawn(async move {
                for i in 0..EACH {
                    db.notify("orders", &format!("{s}:{i}")).await.unwrap();
                }
            })
        })
        .collect();
    let mut next_seq = vec![0usize; SENDERS];
    let mut received = 0;
    let deadline = Duration::from_secs(60);
    while received < SENDERS * EACH {
        let n = next(&mut listener, deadline)
            .await
            .unwrap_or_else(|e| panic!("after {received} notifications: {e}"));
        assert_eq!(n.channel(), "orders");
        let (s, i) = n.payload().split_once(':').expect("sender:seq");
        let (s, i): (usize, usize) = (s.parse().unwrap(), i.parse().unwrap());
        assert_eq!(i, next_seq[s], "sender {s} out of order or lost one");
        next_seq[s] += 1;
        received += 1;
    }
    for s in senders {
        s.await.unwrap();
    }
    let elapsed = started.elapsed();
    assert_eq!(next_seq, vec![EACH; SENDERS]);
    assert_quiet(&mut listener, Duration::from_millis(200)).await;
    eprintln!(
        "notify throughput: {} notifications from {SENDERS} senders in {elapsed:?} ({:.0}/s)",
        SENDERS * EACH,
        (SENDERS * EACH) as f64 / elapsed.as_secs_f64()
    );
}

#[tokio::test]
async fn payloads_up_to_the_server_limit_round_trip_exactly() {
    let (db, _guard) = schema_db_with(|_| {}).await;
    let mut listener = db.listen(&["big"]).await.unwrap();
    let max = format!("{}x", "é".repeat(3999)); // 7999 bytes, multibyte characters
    assert_eq!(max.len(), 7999);
    let payloads = [
        String::new(),
        "a".into(),
        "quote ' and \" and $1 and \\ and ; DROP".into(),
        "x".repeat(7998),
        max.clone(),
    ];
    for p in &payloads {
        db.notify("big", p).await.unwrap();
    }
    for p in &payloads {
        let n = next_ok(&mut listener).await;
        assert_eq!(n.payload(), p, "payload of {} bytes changed", p.len());
    }

    // 8000 bytes and more: a clear error before anything is sent...
    for len in [8000, 100_000] {
        let e = db.notify("big", &"y".repeat(len)).await.unwrap_err();
        assert!(matches!(e, Error::Notify(_)), "{e:?}");
        let text = e.to_string();
        assert!(
            text.contains(&format!("{len} bytes")) && text.contains("at most 7999"),
            "{text}"
        );
    }
    // ...so a transaction it was meant for goes on and commits.
    let tx = db.transaction().await.unwrap();
    assert!(matches!(
        tx.notify("big", &"z".repeat(8000)).await,
        Err(Error::Notify(_))
    ));
    tx.notify("big", "still committed").await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(next_ok(&mut listener).await.payload(), "still committed");
    assert_quiet(&mut listener, Duration::from_millis(200)).await;
}

#[tokio::test]
async fn notify_in_a_transaction_is_delivered_on_commit_never_on_rollback() {
    let (db, _guard) = schema_db_with(|_| {}).await;
    let mut listener = db.listen(&["events"]).await.unwrap();

    let tx = db.transaction().await.unwrap();
    tx.notify("events", "committed").await.unwrap();
    // Through the Executor trait too.
    Executor::notify(&tx, "events", "committed too")
        .await
        .unwrap();
    assert_quiet(&mut listener, Duration::from_millis(300)).await;
    tx.commit().await.unwrap();
    assert_eq!(next_ok(&mut listener).await.payload(), "committed");
    assert_eq!(next_ok(&mut listener).await.payload(), "committed too");

    let tx = db.transaction().await.unwrap();
    tx.notify("events", "rolled back").await.unwrap();
    tx.rollback().await.unwrap();
    let tx = db.transaction().await.unwrap();
    tx.notify("events", "dropped").await.unwrap();
    drop(tx);
    // A savepoint rolled back takes its notification with it; the outer one commits.
    let tx = db.transaction().await.unwrap();
    let sp = tx.transaction().await.unwrap();
    sp.notify("events", "savepoint rolled back").await.unwrap();
    sp.rollback().await.unwrap();
    tx.notify("events", "outer").await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(next_ok(&mut listener).await.payload(), "outer");
    assert_quiet(&mut listener, Duration::from_millis(500)).await;
}

#[tokio::test]
async fn schemas_isolate_channels_on_a_shared_pool() {
    let pool = AsyncDatabaseManager::create_shared_pool(&config())
        .await
        .unwrap();
    // Channels need no schema object: unique names keep parallel runs apart.
    let (sa, sb) = (unique("a"), unique("b"));
    let a = AsyncDatabaseManager::from_pool(pool.clone(), Some(&sa)).unwrap();
    let b = AsyncDatabaseManager::from_pool(pool.clone(), Some(&sb)).unwrap();
    let mut la = a.listen(&["events"]).await.unwrap();
    let mut lb = b.listen(&["events"]).await.unwrap();
    // A raw listener on a's wire name hears a's notifications, by their wire name.
    let wire = format!("{sa}.events");
    let mut raw = a.listen_raw(&[&wire]).await.unwrap();

    a.notify("events", "for a").await.unwrap();
    b.notify("events", "for b").await.unwrap();
    b.notify_raw(&wire, "for a, sent raw").await.unwrap();

    let n = next_ok(&mut la).await;
    assert_eq!(
        (n.channel(), n.raw_channel(), n.payload()),
        ("events", wire.as_str(), "for a")
    );
    assert_eq!(next_ok(&mut la).await.payload(), "for a, sent raw");
    let n = next_ok(&mut lb).await;
    assert_eq!((n.channel(), n.payload()), ("events", "for b"));
    let n = next_ok(&mut raw).await;
    assert_eq!((n.channel(), n.payload()), (wire.as_str(), "for a"));
    assert_eq!(next_ok(&mut raw).await.payload(), "for a, sent raw");
    assert_quiet(&mut la, Duration::from_millis(300)).await;
    assert_quiet(&mut lb, Duration::from_millis(100)).await;
    assert_quiet(&mut raw, Duration::from_millis(100)).await;
    pool.close();
}

#[tokio::test]
async fn listen_and_unlisten_at_run_time() {
    let (db, _guard) = schema_db_with(|_| {}).await;
    let mut listener = db.listen(&[]).await.unwrap();
    listener.listen("a").await.unwrap();
    db.notify("a", "1").await.unwrap();
    let n = next_ok(&mut listener).await;
    assert_eq!((n.channel(), n.payload()), ("a", "1"));

    listener.listen("b").await.unwrap();
    listener.unlisten("a").await.unwrap();
    db.notify("a", "2").await.unwrap();
    db.notify("b", "3").await.unwrap();
    let n = next_ok(&mut listener).await;
    assert_eq!((n.channel(), n.payload()), ("b", "3"));
    assert_quiet(&mut listener, Duration::from_millis(300)).await;

    // Invalid names are refused by the listener too, before anything is sent.
    assert!(matches!(
        listener.listen("no such-name").await,
        Err(Error::Schema(_))
    ));
    listener.unlisten("b").await.unwrap();
    db.notify("b", "4").await.unwrap();
    assert_quiet(&mut listener, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn invalid_channel_names_are_schema_errors_before_any_io() {
    // Never connected, and pointing at a port where nothing listens: any I/O would fail
    // with another error.
    let db = AsyncDatabaseManager::new(DatabaseConfig {
        connection_string: Some("postgresql://postgres@127.0.0.1:1/postgres".into()),
        schema: Some("app".into()),
        ..Default::default()
    })
    .unwrap();
    let long = "c".repeat(60); // valid alone, too long as app.<name>
    for bad in [
        "",
        "a-b",
        "a.b",
        "Ünïcode",
        "x\"; DROP TABLE t; --",
        long.as_str(),
    ] {
        let e = db.listen(&["ok", bad]).await.unwrap_err();
        assert!(matches!(e, Error::Schema(_)), "listen {bad:?}: {e:?}");
        let e = db.notify(bad, "p").await.unwrap_err();
        assert!(matches!(e, Error::Schema(_)), "notify {bad:?}: {e:?}");
    }
    for bad in ["", "nul\0byte"] {
        assert!(matches!(db.listen_raw(&[bad]).await, Err(Error::Schema(_))));
        assert!(matches!(
            db.notify_raw(bad, "p").await,
            Err(Error::Schema(_))
        ));
    }
    // A valid name gets as far as the (missing) pool.
    assert!(matches!(db.listen(&["ok"]).await, Err(Error::Pool(_))));
}

#[tokio::test]
async fn raw_names_are_quoted_never_spliced() {
    let (db, _guard) = schema_db_with(|_| {}).await;
    let evil = "x\"; CREATE TABLE pwned (); --'";
    let mut listener = db.listen_raw(&[evil]).await.unwrap();
    db.notify_raw(evil, "payload'); DROP TABLE x; --")
        .await
        .unwrap();
    let n = next_ok(&mut listener).await;
    assert_eq!(
        (n.channel(), n.payload()),
        (evil, "payload'); DROP TABLE x; --")
    );
    listener.unlisten_raw(evil).await.unwrap();
    let pwned = admin_value("SELECT count(*) FROM pg_class WHERE relname = 'pwned'").await;
    assert_eq!(pwned.as_deref(), Some("0"));
}

#[tokio::test]
async fn dropping_the_listener_closes_its_connection_outside_the_pool() {
    let (db, _guard) = schema_db_with(|c| {
        c.min_connections = 1;
        c.max_connections = 1;
    })
    .await;
    let listener = db.listen(&["events"]).await.unwrap();
    let pid = listener.backend_pid().expect("connected");
    assert!(backend_exists(pid).await);
    // The only pooled connection is still free: the listener has its own.
    let stats = db.get_pool_stats().await.unwrap();
    assert_eq!((stats.size, stats.free_size), (1, 1));
    assert_ne!(stats.pid, Some(pid));
    db.notify("events", "x").await.unwrap();

    drop(listener);
    let started = Instant::now();
    while backend_exists(pid).await {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the listener's backend {pid} is still there 5 s after the drop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "drop: listener backend gone {:?} after the drop",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_slow_consumer_gets_a_missed_marker_and_bounded_memory() {
    let (db, _guard) = schema_db_with(|c| c.listen_buffer_size = 8).await;
    let mut listener = db.listen(&["flood"]).await.unwrap();
    for i in 0..100 {
        db.notify("flood", &i.to_string()).await.unwrap();
    }
    // Let the listener read everything the server sends while nobody consumes.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // What fitted in the buffer, in order, then one report of the rest. (With the listener
    // this far ahead, 8 and 92; a slower machine may fit a few more before the report.)
    let mut before = Vec::new();
    let report = loop {
        match next(&mut listener, Duration::from_secs(5)).await {
            Ok(n) => before.push(n.payload().parse::<usize>().unwrap()),
            Err(e) => break e,
        }
    };
    assert_eq!(report.kind(), ErrorKind::NotificationsMissed, "{report}");
    let text = report.to_string();
    assert!(text.contains("buffer of 8"), "{text}");
    let dropped: usize = text
        .split("so ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no dropped count in {text}"));
    assert!(before.len() >= 8, "{before:?}");
    assert_eq!(before, (0..before.len()).collect::<Vec<_>>());
    // Whatever arrived after the report is newer than the gap; nothing is lost silently.
    let mut after = Vec::new();
    while let Ok(Some(item)) =
        tokio::time::timeout(Duration::from_millis(300), listener.next()).await
    {
        after.push(
            item.expect("one report per gap")
                .payload()
                .parse::<usize>()
                .unwrap(),
        );
    }
    assert_eq!(before.len() + dropped + after.len(), 100, "{text}");
    eprintln!(
        "overflow: buffer 8, {} delivered before the report, {dropped} dropped, {} after",
        before.len(),
        after.len()
    );
    // The stream goes on.
    db.notify("flood", "after").await.unwrap();
    assert_eq!(next_ok(&mut listener).await.payload(), "after");
    assert_quiet(&mut listener, Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_terminated_backend_is_replaced_and_the_gap_reported() {
    let (db, _guard) = schema_db_with(reconnecting).await;
    let mut listener = db.listen(&["jobs", "other"]).await.unwrap();
    let mut recoveries = Vec::new();
    for round in 0..3 {
        let pid = listener.backend_pid().expect("connected");
        let killed_at = Instant::now();
        let killed = admin_value(&format!("SELECT pg_terminate_backend({pid})::text")).await;
        assert_eq!(killed.as_deref(), Some("true"));
        let e = next(&mut listener, Duration::from_secs(10))
            .await
            .expect_err("the gap is reported");
        let recovered = killed_at.elapsed();
        assert_eq!(e.kind(), ErrorKind::NotificationsMissed, "{e}");
        assert!(e.to_string().contains("re-established"), "{e}");
        let new_pid = listener.backend_pid().expect("reconnected");
        assert_ne!(new_pid, pid);
        // Every channel was subscribed again.
        db.notify("jobs", &format!("after {round}")).await.unwrap();
        db.notify("other", "o").await.unwrap();
        let n = next_ok(&mut listener).await;
        assert_eq!(
            (n.channel(), n.payload()),
            ("jobs", &*format!("after {round}"))
        );
        assert_eq!(next_ok(&mut listener).await.channel(), "other");
        recoveries.push(recovered);
    }
    eprintln!("terminate: gap reported (reconnected and re-subscribed) after {recoveries:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_is_rejoined_and_the_gap_reported_and_exhausted_retries_end_the_stream()
{
    let mut cluster = tokio::task::spawn_blocking(TempCluster::start)
        .await
        .unwrap()
        .expect("start a throwaway cluster");
    let mut cfg = cluster.database_config("postgres");
    cfg.min_connections = 1;
    cfg.max_connections = 2;
    reconnecting(&mut cfg);
    cfg.retry_attempts = 60; // about 30 s at 0.5 s
    let db = AsyncDatabaseManager::new(DatabaseConfig {
        schema: Some("app".into()),
        ..cfg.clone()
    })
    .unwrap();
    db.connect().await.unwrap();
    let mut listener = db.listen(&["events"]).await.unwrap();
    // A second listener whose retries run out quickly.
    let short = AsyncDatabaseManager::new(DatabaseConfig {
        retry_attempts: 2,
        retry_delay: 0.05,
        ..cfg.clone()
    })
    .unwrap();
    short.connect().await.unwrap();
    let mut short_listener = short.listen(&["events"]).await.unwrap();

    let down_at = Instant::now();
    tokio::task::block_in_place(|| cluster.stop_server()).expect("stop the server");
    // The short listener gives up: a final error, then the end of the stream.
    let end = next(&mut short_listener, Duration::from_secs(10))
        .await
        .expect_err("a final error");
    assert!(matches!(end, Error::Connection { .. }), "{end:?}");
    assert_ne!(end.kind(), ErrorKind::NotificationsMissed);
    assert!(end.to_string().contains("could not reconnect"), "{end}");
    let gave_up = down_at.elapsed();
    assert!(
        tokio::time::timeout(Duration::from_secs(5), short_listener.next())
            .await
            .expect("the stream ends")
            .is_none()
    );
    assert!(short_listener.listen("more").await.is_err());

    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::task::block_in_place(|| cluster.start_server()).expect("start the server again");
    let up_at = Instant::now();
    let e = next(&mut listener, Duration::from_secs(30))
        .await
        .expect_err("the gap is reported");
    let recovered_after_up = up_at.elapsed();
    assert_eq!(e.kind(), ErrorKind::NotificationsMissed, "{e}");
    // The pool may hand out a connection that died with the old server once: retry briefly.
    let mut sent = false;
    for _ in 0..20 {
        if db.notify("events", "after restart").await.is_ok() {
            sent = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(sent, "the pool did not recover");
    let n = next_ok(&mut listener).await;
    assert_eq!((n.channel(), n.payload()), ("events", "after restart"));
    drop(listener);
    db.disconnect().await.unwrap();
    short.disconnect().await.unwrap();
    tokio::task::spawn_blocking(move || cluster.stop())
        .await
        .unwrap()
        .expect("delete the cluster");
    eprintln!(
        "restart: listener re-subscribed and reported the gap {recovered_after_up:?} after the \
         server was up again ({:?} after it went down); the 2-retry listener gave up after \
         {gave_up:?}",
        up_at.duration_since(down_at) + recovered_after_up
    );
}

#[tokio::test]
async fn the_listener_connects_through_listen_connection_string() {
    let app = unique("direct");
    let url = database_url();
    let sep = if url.contains('?') { '&' } else { '?' };
    let (db, _guard) = schema_db_with(|c| {
        c.listen_connection_string = Some(format!("{url}{sep}application_name={app}"));
    })
    .await;
    let mut listener = db.listen(&["events"]).await.unwrap();
    let pid = listener.backend_pid().unwrap();
    let name = admin_value(&format!(
        "SELECT application_name FROM pg_stat_activity WHERE pid = {pid}"
    ))
    .await;
    assert_eq!(name.as_deref(), Some(app.as_str()));
    // The pool does not use it.
    let pool_pid: i32 = db
        .fetch_value("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .unwrap();
    let pool_name = admin_value(&format!(
        "SELECT application_name FROM pg_stat_activity WHERE pid = {pool_pid}"
    ))
    .await;
    assert_ne!(pool_name.as_deref(), Some(app.as_str()));
    db.notify("events", "direct").await.unwrap();
    assert_eq!(next_ok(&mut listener).await.payload(), "direct");

    // A malformed one is a configuration error before any I/O.
    let e = AsyncDatabaseManager::new(DatabaseConfig {
        listen_connection_string: Some("postgresql://[broken".into()),
        ..config()
    })
    .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Configuration {
                field: "listen_connection_string",
                ..
            }
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn the_listener_uses_the_pools_tls() {
    let dir = certs::TempDir::new();
    let ca = certs::Ca::new("pgdbm test CA");
    let server = ca.server(&["localhost", "127.0.0.1"]);
    let cluster = tokio::task::spawn_blocking(move || {
        TempCluster::builder()
            .ssl(&server.cert_pem, &server.key_pem, None)
            // TLS only: a plain-text listener connection would be refused.
            .hba(vec!["hostssl all all 127.0.0.1/32 trust".to_owned()])
            .start()
    })
    .await
    .unwrap()
    .expect("start a TLS cluster");
    let db = AsyncDatabaseManager::new(DatabaseConfig {
        ssl_enabled: true,
        ssl_mode: Some("verify-full".into()),
        ssl_ca_file: Some(dir.write("ca.crt", &ca.cert_pem)),
        min_connections: 1,
        max_connections: 2,
        schema: Some("app".into()),
        ..cluster.database_config("postgres")
    })
    .unwrap();
    db.connect().await.unwrap();
    let mut listener = db.listen(&["events"]).await.unwrap();
    let pid = listener.backend_pid().unwrap();
    let ssl: Option<bool> = db
        .fetch_value("SELECT ssl FROM pg_stat_ssl WHERE pid = $1", &[&pid])
        .await
        .unwrap();
    assert_eq!(ssl, Some(true));
    db.notify("events", "over tls").await.unwrap();
    assert_eq!(next_ok(&mut listener).await.payload(), "over tls");
    drop(listener);
    db.disconnect().await.unwrap();
    tokio::task::spawn_blocking(move || cluster.stop())
        .await
        .unwrap()
        .expect("delete the cluster");
}
