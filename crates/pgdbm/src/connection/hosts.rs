//! The servers a pool connects to: one, or several tried in order (`host=a,b` or
//! `postgresql://a:5432,b:5433/db`), each checked against libpq's `target_session_attrs`. Every
//! host keeps its own failure, so that an error names each host tried and why it was passed
//! over, and every connection knows which server it reached (its cancel requests go there).

use std::sync::Arc;

use tokio_postgres::{Client, Config, SimpleQueryMessage};

use super::cancel::CancelTarget;
use super::socket::{connect_socket, Socket};
use super::tap::{Tap, TapTls, Tapped};
use crate::target::{split_hosts, SessionAttrs};
use crate::tls::MakeTls;

/// Why one host was passed over.
#[derive(Debug)]
pub(crate) enum HostFailure {
    Driver(tokio_postgres::Error),
    /// The socket could not be opened (refused, unreachable, timed out, no such socket file).
    Socket(std::io::Error),
    /// It answered, but not as `target_session_attrs` asks.
    Role(String),
}

/// The servers of a pool, each as a single-host driver config.
pub(crate) struct Servers {
    hosts: Vec<Server>,
    attrs: SessionAttrs,
}

struct Server {
    config: Config,
    label: String,
    cancel: Option<Arc<CancelTarget>>,
}

/// A connection made, and where its cancel requests go.
pub(crate) struct Connected {
    pub(crate) client: Client,
    pub(crate) cancel_target: Option<Arc<CancelTarget>>,
    /// The task driving the connection; it ends when the session does.
    pub(crate) driver: tokio::task::JoinHandle<()>,
    /// What the server says about the session, read beneath the driver.
    pub(crate) tap: Arc<Tap>,
}

impl Servers {
    pub(crate) fn new(config: &Config, attrs: SessionAttrs, tls: Option<&MakeTls>) -> Self {
        let hosts = split_hosts(config)
            .into_iter()
            .map(|(config, label)| Server {
                cancel: CancelTarget::new(&config, tls.cloned()).map(Arc::new),
                config,
                label,
            })
            .collect();
        Servers { hosts, attrs }
    }

    /// Connects to the first server that answers and fits `target_session_attrs`; with
    /// `prefer-standby`, to a standby if one answers, else to any server. On failure, each host
    /// with its own failure, in the order tried.
    pub(crate) async fn connect(
        &self,
        tls: Option<&MakeTls>,
    ) -> std::result::Result<Connected, Vec<(String, HostFailure)>> {
        let mut failures = Vec::new();
        let passes: &[SessionAttrs] = match self.attrs {
            SessionAttrs::PreferStandby => &[SessionAttrs::Standby, SessionAttrs::Any],
            other => &[other][..],
        };
        // A refused host is not tried again in the second pass.
        let mut unreachable = vec![false; self.hosts.len()];
        for &want in passes {
            for (i, server) in self.hosts.iter().enumerate() {
                if unreachable[i] {
                    continue;
                }
                let (client, driver, tap) = match connect_one(&server.config, tls).await {
                    Ok(made) => made,
                    Err(e) => {
                        unreachable[i] = true;
                        failures.push((server.label.clone(), e));
                        continue;
                    }
                };
                match check_role(&client, want).await {
                    Ok(()) => {
                        return Ok(Connected {
                            client,
                            cancel_target: server.cancel.clone(),
                            driver,
                            tap,
                        })
                    }
                    Err(failure) => failures.push((server.label.clone(), failure)),
                }
            }
        }
        Err(failures)
    }

    /// `host:port` of every server, for errors and statistics.
    pub(crate) fn labels(&self) -> Vec<&str> {
        self.hosts.iter().map(|s| s.label.as_str()).collect()
    }
}

/// Opens one connection on a socket of our own, tapped beneath the driver (above TLS), and
/// drives it on the current runtime.
async fn connect_one(
    config: &Config,
    tls: Option<&MakeTls>,
) -> std::result::Result<(Client, tokio::task::JoinHandle<()>, Arc<Tap>), HostFailure> {
    let socket = connect_socket(config).await.map_err(HostFailure::Socket)?;
    let tap = Tap::new();
    let (client, driver) = match tls {
        Some(tls) => {
            let host = match config.get_hosts().first() {
                Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
                _ => String::new(),
            };
            let inner = tokio_postgres::tls::MakeTlsConnect::<Socket>::make_tls_connect(
                &mut tls.clone(),
                &host,
            )
            .map_err(|e| HostFailure::Socket(std::io::Error::other(e)))?;
            let connector = TapTls {
                inner,
                tap: tap.clone(),
            };
            let (client, conn) = config
                .connect_raw(socket, connector)
                .await
                .map_err(HostFailure::Driver)?;
            (client, tokio::spawn(drive(conn, tap.clone())))
        }
        None => {
            let (client, conn) = config
                .connect_raw(Tapped::new(socket, tap.clone()), tokio_postgres::NoTls)
                .await
                .map_err(HostFailure::Driver)?;
            (client, tokio::spawn(drive(conn, tap.clone())))
        }
    };
    // Aborting the driver drops the connection's socket: how a stalled connection is closed.
    tap.set_driver(driver.abort_handle());
    Ok((client, driver, tap))
}

/// Drives the connection; beside it, in a task of its own (so that the connection's many
/// wake-ups never poll a timer), the timer of its statements' deadlines.
async fn drive<F: std::future::Future<Output = std::result::Result<(), tokio_postgres::Error>>>(
    conn: F,
    tap: Arc<Tap>,
) {
    // Ends the timer task with the connection, also when this task is dropped unfinished.
    let _closing = super::watchdog::Closer(tap.clone());
    drop(tokio::spawn(super::watchdog::keep(tap.clone())));
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "connection closed with an error");
    }
}

/// Whether the server fits `want`; `Any` costs no round trip.
async fn check_role(client: &Client, want: SessionAttrs) -> std::result::Result<(), HostFailure> {
    if want == SessionAttrs::Any {
        return Ok(());
    }
    let msgs = client
        .simple_query(
            "SELECT pg_catalog.pg_is_in_recovery()::text, \
             pg_catalog.current_setting('transaction_read_only')",
        )
        .await
        .map_err(HostFailure::Driver)?;
    let row = msgs.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => Some(r),
        _ => None,
    });
    let in_recovery = row.and_then(|r| r.get(0)) == Some("true");
    let read_only = row.and_then(|r| r.get(1)) == Some("on");
    let fits = match want {
        SessionAttrs::ReadWrite => !read_only,
        SessionAttrs::ReadOnly => read_only,
        SessionAttrs::Primary => !in_recovery,
        SessionAttrs::Standby => in_recovery,
        SessionAttrs::Any | SessionAttrs::PreferStandby => true,
    };
    if fits {
        return Ok(());
    }
    let is = match (in_recovery, read_only) {
        (true, _) => "a standby (in recovery)",
        (false, true) => "read-only (default_transaction_read_only is on)",
        (false, false) => "a writable primary",
    };
    Err(HostFailure::Role(format!(
        "the server is {is}, and {}={} passes it over",
        SessionAttrs::KEY,
        want.as_str()
    )))
}

/// The message for a connect that failed on every host: each with its own reason.
pub(crate) fn describe_failures(failures: &[(String, HostFailure)]) -> String {
    let parts: Vec<String> = failures
        .iter()
        .map(|(host, failure)| {
            let why = match failure {
                HostFailure::Driver(e) => crate::error::db_message(e),
                HostFailure::Socket(e) => format!("cannot connect: {e}"),
                HostFailure::Role(why) => why.clone(),
            };
            format!("{host}: {why}")
        })
        .collect();
    if parts.len() == 1 {
        parts.into_iter().next().unwrap_or_default()
    } else {
        format!("no host could be used ({})", parts.join("; "))
    }
}
