//! Test support: a throwaway PostgreSQL cluster.

mod cluster;
pub use cluster::{TempCluster, TempClusterBuilder};

/// Driver-level hooks for pgdbm's own integration tests, which connect with tokio-postgres
/// directly to prove the TLS layer in isolation. Not a stable API.
#[doc(hidden)]
pub mod driver {
    use crate::config::DatabaseConfig;
    use crate::error::{Error, Result};

    /// The tokio-postgres config pgdbm would connect with (`sslmode=require` when TLS is on).
    pub fn pg_config(config: &DatabaseConfig) -> Result<tokio_postgres::Config> {
        config.pg_config()
    }

    /// The TLS connector pgdbm would use for `config`'s `ssl_*` fields; an error when TLS is off.
    pub fn tls_connector(
        config: &DatabaseConfig,
    ) -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
        let mode = config
            .ssl_mode()?
            .ok_or_else(|| Error::config("ssl_enabled", "TLS is off: set ssl_enabled: true"))?;
        crate::tls::make_tls_connector(config, mode)
    }
}
