//! Cancelling a running query on the server, and bringing a connection whose state is not idle
//! back to idle (or closing it) before anyone else can use it.
//!
//! A cancel request is only a signal sent by the server's postmaster to the backend. If the
//! signal arrives after the cancelled query has finished, it interrupts whatever runs next on
//! that connection. So, like libpq's `PQcancel`, we wait until the server has closed the
//! cancel socket (by then the signal has been sent), and only then queue the statement that
//! drains the connection; a signal that arrives while the backend waits for input is ignored.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_postgres::config::Host;
use tokio_postgres::tls::MakeTlsConnect;

use super::socket::Socket;
use super::state::SessionState;
use super::tap::TxStatus;
use super::PgConn;
use super::StatementLog;
use crate::tls::MakeTls;

/// How long a cancel request may take, connect and confirmation included.
const CANCEL_LIMIT: Duration = Duration::from_secs(5);
/// How long we wait for a cancelled query's connection to become idle before closing it.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// Where cancel requests for a pool's connections go: its one server.
#[derive(Clone)]
pub(crate) struct CancelTarget {
    host: Host,
    port: u16,
    tls: Option<MakeTls>,
}

impl CancelTarget {
    /// The target of a single-host configuration (the pool keeps one per host it may reach);
    /// `None` when the config names several, so a cancel could not be confirmed.
    pub(crate) fn new(config: &tokio_postgres::Config, tls: Option<MakeTls>) -> Option<Self> {
        let [host] = config.get_hosts() else {
            return None;
        };
        let port = match config.get_ports() {
            [] => 5432,
            [port] => *port,
            _ => return None,
        };
        let host = match (host, config.get_hostaddrs()) {
            (h, []) => h.clone(),
            (Host::Tcp(_), [addr]) => Host::Tcp(addr.to_string()),
            _ => return None,
        };
        Some(CancelTarget { host, port, tls })
    }

    async fn connect(&self) -> io::Result<Socket> {
        match &self.host {
            Host::Tcp(h) => {
                let stream = TcpStream::connect((h.as_str(), self.port)).await?;
                stream.set_nodelay(true)?;
                Ok(Socket::Tcp(stream))
            }
            #[cfg(unix)]
            Host::Unix(dir) => {
                let path = dir.join(format!(".s.PGSQL.{}", self.port));
                Ok(Socket::Unix(tokio::net::UnixStream::connect(path).await?))
            }
        }
    }
}

impl PgConn {
    /// Sends a cancel request for this connection's running query and waits until the server
    /// has acted on it. `Err` when that could not be confirmed within [`CANCEL_LIMIT`].
    pub(crate) async fn cancel_confirmed(&self) -> Result<(), String> {
        let Some(target) = self.cancel_target.as_deref() else {
            // Still stop the query, but the caller must not reuse the connection.
            let token = self.client.cancel_token();
            let _ = match &self.tls {
                Some(tls) => token.cancel_query(tls.clone()).await,
                None => token.cancel_query(tokio_postgres::NoTls).await,
            };
            return Err("several hosts are configured, so the cancel cannot be confirmed".into());
        };
        let attempt = async {
            let shared = Shared(Arc::new(Mutex::new(target.connect().await?)));
            let token = self.client.cancel_token();
            let sent = match &target.tls {
                Some(tls) => {
                    let host = match &target.host {
                        Host::Tcp(h) => h.clone(),
                        #[cfg(unix)]
                        Host::Unix(_) => String::new(),
                    };
                    let connector =
                        MakeTlsConnect::<Shared>::make_tls_connect(&mut tls.clone(), &host)
                            .map_err(|e| io::Error::other(e.to_string()))?;
                    token.cancel_query_raw(shared.clone(), connector).await
                }
                None => {
                    token
                        .cancel_query_raw(shared.clone(), tokio_postgres::NoTls)
                        .await
                }
            };
            sent.map_err(io::Error::other)?;
            // The server closes the socket once it has signalled the backend.
            let mut reader = shared;
            let mut sink = [0u8; 64];
            loop {
                match reader.read(&mut sink).await {
                    Ok(0) => return Ok::<(), io::Error>(()),
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        };
        match tokio::time::timeout(CANCEL_LIMIT, attempt).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("the cancel request failed: {e}")),
            Err(_) => Err(format!(
                "the server did not confirm the cancel request within {CANCEL_LIMIT:?}"
            )),
        }
    }

    /// Brings a connection that is not known to be idle and clean back to that: cancels what
    /// may still run, rolls back whatever transaction the server reports (waiting behind any
    /// response still arriving), and resets a session that may carry a caller's changes,
    /// putting the pool's own settings back. Returns whether the connection is now idle and
    /// clean, as the server's own messages confirm; if not, the caller closes it.
    pub(crate) async fn recover(&self) -> bool {
        let state = self.state();
        match state {
            SessionState::Broken => return false,
            SessionState::Idle if self.is_clean() && !self.reset.always => return true,
            _ => {}
        }
        if state.may_be_running() {
            if let Err(why) = self.cancel_confirmed().await {
                tracing::warn!(
                    backend_pid = self.backend_pid,
                    reason = %why,
                    "closing a connection whose query could not be cancelled"
                );
                return false;
            }
        }
        // Queued behind whatever may still be answered, so that afterwards the last
        // ReadyForQuery read is this statement's own, and its status is exact. ROLLBACK
        // outside a transaction only warns.
        // A shared connection ran only session-neutral statements, outside transactions: it
        // needs no ROLLBACK, only the wait for its last answers.
        let rollback = !matches!(state, SessionState::Idle | SessionState::Shared)
            || self.tap.status() != TxStatus::Idle;
        let check = if rollback { "ROLLBACK" } else { "" };
        if !self.drain(check).await || self.tap.status() != TxStatus::Idle {
            return false;
        }
        // A raw client may have done anything; otherwise only a marked or reported change
        // (or `reset_on_release = "always"`) needs the reset.
        let changed = self.take_dirty() || self.tap.params_changed();
        let reset = changed || state == SessionState::Unknown || self.reset.always;
        if reset && !self.reset_session().await {
            return false;
        }
        if self.client.is_closed() {
            return false;
        }
        self.set_state(SessionState::Idle);
        true
    }

    /// Runs `sql` as a simple query within [`DRAIN_LIMIT`]; whether it succeeded.
    async fn drain(&self, sql: &str) -> bool {
        let log = StatementLog::start(sql, std::iter::empty());
        let drained = tokio::time::timeout(DRAIN_LIMIT, self.client.simple_query(sql)).await;
        match &drained {
            Ok(r) => log.finish_driver(r.as_ref()),
            Err(_) => log.timed_out(),
        }
        matches!(drained, Ok(Ok(_)))
    }

    /// Undoes every session change and applies the pool's settings again; whether the server
    /// then reports the session exactly as the pool set it up.
    async fn reset_session(&self) -> bool {
        if !self.drain(&self.reset.script).await {
            return false;
        }
        for command in &self.reset.init_commands {
            if !self.drain(command).await {
                return false;
            }
        }
        let exact = self.tap.status() == TxStatus::Idle && !self.tap.params_changed();
        if !exact {
            tracing::warn!(
                backend_pid = self.backend_pid,
                settings = ?self.tap.changed_params(),
                "closing a connection whose session could not be reset exactly"
            );
        }
        exact
    }
}

/// A socket both the driver's cancel routine and we hold, so that we can read its end after
/// the driver has written the request and dropped its handle.
#[derive(Clone)]
struct Shared(Arc<Mutex<Socket>>);

impl Shared {
    fn with<R>(&self, f: impl FnOnce(Pin<&mut Socket>) -> R) -> R {
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(Pin::new(&mut *guard))
    }
}

impl AsyncRead for Shared {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.with(|s| s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Shared {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.with(|s| s.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.with(|s| s.poll_flush(cx))
    }

    /// Does not half-close the socket, as libpq's `PQcancel` does not: PgBouncer drops a
    /// cancel request whose client closed its side before the request was forwarded. The
    /// socket closes when the server (or pooler) closes it, or when dropped.
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
