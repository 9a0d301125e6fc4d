//! The server that tests and examples use when nothing says which: `DATABASE_URL`, else the
//! default address if something answers there, else a throwaway cluster started from the local
//! binaries for this process, stopped and removed when the process exits.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::OnceLock;
use std::time::Duration;

use super::cluster::TempCluster;
use crate::error::{Error, Result};

/// Where a server is looked for when `DATABASE_URL` is unset.
pub const DEFAULT_SERVER_URL: &str = "postgresql://postgres@127.0.0.1:5432/postgres";
/// Overrides [`DEFAULT_SERVER_URL`].
const DEFAULT_URL_ENV: &str = "PGDBM_DEFAULT_URL";

/// The connection string of the server to use: `DATABASE_URL` when set; else
/// `PGDBM_DEFAULT_URL` (default `postgresql://postgres@127.0.0.1:5432/postgres`) when a server
/// answers there; else a throwaway cluster started once per process from the locally installed
/// PostgreSQL binaries, which says so in one line on stderr, is given to child processes as
/// `DATABASE_URL`, and is stopped and deleted when the process exits. With no binaries either,
/// the error names the command that installs them.
///
/// ```no_run
/// let url = pgdbm::testing::server_url()?;
/// let config = pgdbm::DatabaseConfig { connection_string: Some(url), ..Default::default() };
/// # Ok::<(), pgdbm::Error>(())
/// ```
pub fn server_url() -> Result<String> {
    if let Some(url) = env("DATABASE_URL") {
        return Ok(url);
    }
    static SERVER: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            let default = env(DEFAULT_URL_ENV).unwrap_or_else(|| DEFAULT_SERVER_URL.to_owned());
            if answers(&default) {
                return Ok(default);
            }
            let cluster = TempCluster::start().map_err(|e| {
                format!(
                    "DATABASE_URL is not set, nothing answers at {}, and no throwaway server \
                     could be started: {e}",
                    crate::mask::mask_dsn(&default)
                )
            })?;
            let url = cluster.connection_string("postgres");
            eprintln!(
                "pgdbm: DATABASE_URL is not set and nothing answers at {}: using a throwaway \
                 PostgreSQL at {url}, removed when this process exits",
                crate::mask::mask_dsn(&default)
            );
            cluster.keep_until_exit().map_err(|e| e.to_string())?;
            // Child processes (a test that races two processes, say) use the same server.
            std::env::set_var("DATABASE_URL", &url);
            Ok(url)
        })
        .clone()
        .map_err(Error::TestDatabase)
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Whether something accepts connections at `url`'s first host (a TCP connect, or the socket
/// file of a Unix-domain socket), within a second.
fn answers(url: &str) -> bool {
    let Ok(config) = url.parse::<tokio_postgres::Config>() else {
        return false;
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => {
            let addrs: Vec<SocketAddr> = (host.as_str(), port)
                .to_socket_addrs()
                .map(Iterator::collect)
                .unwrap_or_default();
            addrs
                .iter()
                .any(|a| TcpStream::connect_timeout(a, Duration::from_secs(1)).is_ok())
        }
        Some(tokio_postgres::config::Host::Unix(dir)) => {
            dir.join(format!(".s.PGSQL.{port}")).exists()
        }
        None => false,
    }
}
