//! TLS (placeholder until the connector lands).
use crate::config::{DatabaseConfig, SslMode};
use crate::error::{Error, Result};

pub(crate) type MakeTls = tokio_postgres_rustls::MakeRustlsConnect;

pub(crate) fn make_tls_connector(_config: &DatabaseConfig, _mode: SslMode) -> Result<MakeTls> {
    Err(Error::config("ssl_enabled", "TLS not built yet"))
}
