//! What a `Listener` needs to open a connection of its own with the pool's settings, kept by
//! the pool so that managers over a shared pool can listen too.

use std::time::Duration;

use crate::config::DatabaseConfig;
use crate::error::Result;
use crate::tls::MakeTls;

/// Everything a listener needs to open its connection, kept by the pool so that managers over
/// a shared pool can listen too.
pub(crate) struct ListenSpec {
    /// The pool goes through a transaction pooler and no `listen_connection_string` says
    /// where a session of its own can be had.
    pub(crate) needs_direct: bool,
    pub(crate) pg_config: tokio_postgres::Config,
    pub(crate) tls: Option<MakeTls>,
    /// Settings and timeouts, as one batch; then the backend PID.
    pub(crate) setup_sql: String,
    pub(crate) init_commands: Vec<String>,
    pub(crate) retry_attempts: u32,
    pub(crate) retry_delay: f64,
    pub(crate) retry_backoff: f64,
    pub(crate) retry_max_delay: f64,
    pub(crate) buffer: usize,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) database: String,
}

impl ListenSpec {
    pub(crate) fn new(config: &DatabaseConfig, tls: Option<MakeTls>) -> Result<Self> {
        let mut pg_config = config.listen_pg_config()?;
        if pg_config.get_connect_timeout().is_none() {
            pg_config.connect_timeout(Duration::from_secs(10));
        }
        let (host, port, database) = crate::target::server_address(&pg_config);
        let mut setup_sql = config.session_setup_sql(None, false);
        setup_sql.push_str("SELECT pg_backend_pid()::text");
        Ok(ListenSpec {
            needs_direct: config.pooler.shares_server_connections()
                && config.listen_connection_string.is_none(),
            port,
            database,
            host,
            pg_config,
            tls,
            setup_sql,
            init_commands: config.init_commands.clone().unwrap_or_default(),
            retry_attempts: config.retry_attempts,
            retry_delay: config.retry_delay,
            retry_backoff: config.retry_backoff,
            retry_max_delay: config.retry_max_delay,
            buffer: config.listen_buffer_size.max(1),
        })
    }
}
