//! [`LatencyProxy`]: a TCP proxy that delays every byte by a fixed time each way, to see how
//! code behaves where the network has latency (a server in another zone, say).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Forwards TCP connections to a server, each byte delayed by `one_way` in each direction.
/// Bytes are not held back by the ones before them: like a long cable, many requests can be
/// on their way at once. Stopped when dropped.
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// use std::time::Duration;
/// let proxy = pgdbm::testing::LatencyProxy::start(
///     "127.0.0.1:5432".parse().unwrap(), Duration::from_millis(1)).await?;
/// let url = format!("postgresql://postgres@{}/postgres", proxy.addr());
/// # Ok(()) }
/// ```
pub struct LatencyProxy {
    addr: SocketAddr,
    accept: JoinHandle<()>,
    stalled: Arc<AtomicBool>,
}

impl LatencyProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr, one_way: Duration) -> std::io::Result<LatencyProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stalled = Arc::new(AtomicBool::new(false));
        let held = stalled.clone();
        let accept = tokio::spawn(async move {
            let mut pumps = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                pumps.spawn(delayed(cr, sw, one_way, held.clone()));
                pumps.spawn(delayed(sr, cw, one_way, held.clone()));
            }
        });
        Ok(LatencyProxy {
            addr,
            accept,
            stalled,
        })
    }

    /// Stalls the network (`true`): connections stay open but no byte gets through either way
    /// until it is resumed (`false`), as when a route fails without a reset.
    pub fn set_stalled(&self, stalled: bool) {
        self.stalled.store(stalled, Ordering::Release);
    }

    /// The address to connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for LatencyProxy {
    fn drop(&mut self) {
        // The pumps live in the accept task's set and are aborted with it.
        self.accept.abort();
    }
}

impl std::fmt::Debug for LatencyProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyProxy")
            .field("addr", &self.addr)
            .finish()
    }
}

/// Copies `from` to `to`, each chunk written `delay` after it was read, and none while
/// `stalled`.
async fn delayed(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    stalled: Arc<AtomicBool>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            while stalled.load(Ordering::Acquire) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    };
    tokio::join!(reader, writer);
}
