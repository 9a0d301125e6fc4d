//! The read-replica settings: what a read does without a healthy replica, and each replica's
//! driver config, completed from the primary's.

use std::time::Duration;

use serde::Deserialize;

use super::{mask_dsn, DatabaseConfig};
use crate::error::{Error, Result};
use crate::target::SessionAttrs;

/// What a replica read does when no replica is healthy (`replica_fallback`).
///
/// ```
/// let c: pgdbm::DatabaseConfig = serde_json::from_str(r#"{"replica_fallback": "error"}"#).unwrap();
/// assert_eq!(c.replica_fallback, pgdbm::ReplicaFallback::Error);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ReplicaFallback {
    /// Read from the primary (the default).
    #[default]
    Primary,
    /// Fail with [`Error::NoReplica`].
    Error,
}

/// Connect timeout of a replica connection when its string sets none: a replica that does
/// not answer must not hold a read for long before the primary takes it.
pub(crate) const REPLICA_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The driver config of one replica: its own string, with what it leaves out (user, password,
/// database, application name, connect timeout, TLS) taken from the primary's parsed config
/// (whose connection string may carry its own user and password). An address without a port
/// means 5432, as in libpq.
pub(crate) fn replica_target(config: &DatabaseConfig, dsn: &str) -> Result<tokio_postgres::Config> {
    let invalid = |why: String| Error::config("read_replicas", why);
    let (primary, _) = config.pg_target()?;
    // Which role a replica has is checked by its health checks, not at connect.
    let (stripped, _) = SessionAttrs::split_from(dsn).map_err(|e| match e {
        Error::Configuration { message, .. } => invalid(message),
        other => other,
    })?;
    let mut cfg: tokio_postgres::Config = stripped.parse().map_err(|e| {
        invalid(format!(
            "cannot parse {}: {e}. Expected postgresql://host:port or host=... port=...",
            mask_dsn(dsn)
        ))
    })?;
    if cfg.get_hosts().is_empty() {
        return Err(invalid(format!("{} names no host", mask_dsn(dsn))));
    }
    if cfg.get_user().is_none() {
        if let Some(user) = primary.get_user() {
            cfg.user(user);
        }
    }
    if cfg.get_password().is_none() {
        if let Some(pw) = primary.get_password() {
            cfg.password(pw);
        }
    }
    if cfg.get_dbname().is_none() {
        if let Some(db) = primary.get_dbname() {
            cfg.dbname(db);
        }
    }
    if cfg.get_application_name().is_none() {
        if let Some(name) = primary.get_application_name() {
            cfg.application_name(name);
        }
    }
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(
            primary
                .get_connect_timeout()
                .copied()
                .unwrap_or(REPLICA_CONNECT_TIMEOUT),
        );
    }
    // TLS for replicas follows the primary's settings (one connector serves both): a string
    // asking for something else must not be ignored silently, least of all for plaintext.
    if dsn.to_ascii_lowercase().contains("sslmode") && cfg.get_ssl_mode() != primary.get_ssl_mode()
    {
        return Err(invalid(format!(
            "{} sets sslmode, but replicas use the primary's TLS settings (ssl_enabled and \
             ssl_mode: {}); remove sslmode from the replica string or set ssl_mode to match",
            mask_dsn(dsn),
            if primary.get_ssl_mode() == tokio_postgres::config::SslMode::Disable {
                "TLS off"
            } else {
                "TLS on"
            }
        )));
    }
    cfg.ssl_mode(primary.get_ssl_mode());
    Ok(cfg)
}
