//! A network that hangs (a proxy that stops forwarding): deadlines fire and the manager recovers.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{unique, SchemaGuard};
use pgdbm::{AsyncDatabaseManager, DatabaseConfig, Error};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{check_own_results, server};

// ---------------------------------------------------------------------------------------------
// 4. A network that hangs: a TCP proxy that can stop forwarding
// ---------------------------------------------------------------------------------------------

/// Forwards TCP connections to `upstream`; [`freeze`](Proxy::freeze) stops moving bytes in
/// both directions while keeping every socket open, like a network that silently drops
/// packets. New connections are accepted while frozen, but nothing reaches the server.
struct Proxy {
    addr: SocketAddr,
    frozen: watch::Sender<bool>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (frozen, watch_rx) = watch::channel(false);
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let tasks2 = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let a = tokio::spawn(pump(cr, sw, watch_rx.clone()));
                let b = tokio::spawn(pump(sr, cw, watch_rx.clone()));
                tasks2.lock().unwrap().extend([a, b]);
            }
        });
        tasks.lock().unwrap().push(accept);
        Proxy {
            addr,
            frozen,
            tasks,
        }
    }

    fn freeze(&self, on: bool) {
        self.frozen.send_replace(on);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

/// Copies bytes from `from` to `to`, waiting while frozen before each read and each write.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if frozen.wait_for(|f| !*f).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        if frozen.wait_for(|f| !*f).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A call through a frozen network returns [`Error::Timeout`] at its deadline.
async fn times_out_at(db: &AsyncDatabaseManager, deadline: Duration, sql: &str) -> Duration {
    let started = Instant::now();
    let r = tokio::time::timeout(deadline * 4, db.fetch_value::<i32>(sql, &[])).await;
    let elapsed = started.elapsed();
    match r {
        Err(_) => panic!("{sql}: still hanging after {:?}", deadline * 4),
        Ok(Ok(v)) => panic!("{sql}: answered {v:?} through a frozen network"),
        Ok(Err(e)) => {
            assert!(e.is_timeout(), "{sql}: expected a timeout, got {e}");
            if let Error::Timeout { operation, .. } = &e {
                assert!(
                    operation.contains("SELECT"),
                    "{sql}: timed out on {operation:?}, not on the statement"
                );
            }
        }
    }
    assert!(
        elapsed >= deadline,
        "{sql}: returned early, after {elapsed:?}"
    );
    assert!(
        elapsed < deadline + Duration::from_millis(100),
        "{sql}: returned {elapsed:?} after the call for a {deadline:?} deadline"
    );
    elapsed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_network_times_out_at_the_deadline_and_the_manager_recovers() {
    let (upstream, pg) = server();
    let proxy = Proxy::start(upstream).await;
    let schema = unique("faults_net");
    let _guard = SchemaGuard(schema.clone());
    let cfg = DatabaseConfig {
        host: proxy.addr.ip().to_string(),
        port: proxy.addr.port(),
        user: pg.get_user().unwrap_or("postgres").to_owned(),
        password: pg
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
        database: pg.get_dbname().unwrap_or("postgres").to_owned(),
        schema: Some(schema),
        min_connections: 2,
        max_connections: 2,
        command_timeout: 2.0,
        retry_attempts: 0,
        ..Default::default()
    };
    let db = AsyncDatabaseManager::new(cfg).unwrap();
    db.connect().await.unwrap();
    assert_eq!(
        db.fetch_value::<i32>("SELECT 1", &[]).await.unwrap(),
        Some(1)
    );
    assert_eq!(db.get_pool_stats().await.unwrap().size, 2);

    proxy.freeze(true);
    let frozen_at = Instant::now();
    // command_timeout, on one pooled connection ...
    let by_command_timeout = times_out_at(&db, Duration::from_secs(2), "SELECT 2").await;
    // ... and a per-call timeout on the other.
    let by_call_timeout = times_out_at(
        &db.with_timeout(Duration::from_millis(300)),
        Duration::from_millis(300),
        "SELECT 3",
    )
    .await;

    // Their cancel requests go through the frozen proxy too and are never confirmed: both
    // connections must be closed, not returned to the pool.
    let mut closed_after = None;
    while frozen_at.elapsed() < Duration::from_secs(15) {
        if db.get_pool_stats().await.unwrap().size == 0 {
            closed_after = Some(frozen_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let Some(closed_after) = closed_after else {
        panic!(
            "the timed-out connections were not closed: {:?}",
            db.get_pool_stats().await
        )
    };

    proxy.freeze(false);
    let thawed = Instant::now();
    for i in 0..20 {
        let v: Option<i32> = db.fetch_value("SELECT $1::int4", &[&i]).await.unwrap();
        assert_eq!(v, Some(i));
    }
    let back_after = thawed.elapsed();
    check_own_results(&db, 50).await;
    db.disconnect().await.unwrap();
    drop(proxy);
    eprintln!(
        "network_hang: command_timeout 2 s returned after {by_command_timeout:?} (overrun {:?}), \
         with_timeout 300 ms after {by_call_timeout:?} (overrun {:?}); unconfirmed connections \
         closed {closed_after:?} after the freeze; 20 queries ok {back_after:?} after thawing",
        by_command_timeout - Duration::from_secs(2),
        by_call_timeout - Duration::from_millis(300),
    );
}
