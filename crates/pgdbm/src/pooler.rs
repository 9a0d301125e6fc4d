//! What sits between pgdbm and PostgreSQL: nothing, or a connection pooler such as PgBouncer.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The connection pooler in front of the server, as PgBouncer's `pool_mode` names it. Set it
/// in [`DatabaseConfig::pooler`](crate::DatabaseConfig::pooler), or as `pooler = "transaction"`
/// in `pgdbm.toml` (`"pooler": "transaction"` in JSON).
///
/// With [`Pooler::Transaction`] each transaction (or statement outside one) may run on a
/// different server connection, so pgdbm keeps nothing on the server between them:
/// - no named prepared statements: each SQL text's parameter types are learned once per
///   connection inside a `BEGIN`/`ROLLBACK` that closes everything it prepared, and queries
///   then run as unnamed statements. Custom types (enums, domains, composites) are looked up
///   inside that same transaction, and the lookup statements are removed before it ends;
/// - no settings sent when connecting: `server_settings`, the three timeouts and an owned
///   pool's `search_path` go into every transaction pgdbm opens as `SET LOCAL`. Statements
///   outside a transaction run with the role's and database's own settings, so set them there
///   too (`ALTER ROLE app IN DATABASE app SET statement_timeout = '60s'`), and write table
///   names as `{{tables.x}}` or qualified; a shared pool does not pin `search_path`;
/// - per-call timeouts still cancel the server query: the cancel goes to the pooler, which
///   forwards it to the server connection running the query;
/// - migrations take transaction-scoped advisory locks, or connect to
///   [`direct_connection_string`](crate::DatabaseConfig::direct_connection_string) when set;
/// - pool statistics count connections to the pooler, not to the server.
///
/// [`Pooler::Session`] changes only the statistics: a session pooler hands each client one
/// server connection for as long as it stays connected, so everything else works as directly.
///
/// ```
/// let config: pgdbm::DatabaseConfig = serde_json::from_str(r#"{"pooler": "transaction"}"#).unwrap();
/// assert_eq!(config.pooler, pgdbm::Pooler::Transaction);
/// assert_eq!(pgdbm::DatabaseConfig::default().pooler, pgdbm::Pooler::Direct);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Pooler {
    /// Connections go straight to PostgreSQL.
    #[default]
    Direct,
    /// A session pooler (PgBouncer `pool_mode = session`).
    Session,
    /// A transaction pooler (PgBouncer `pool_mode = transaction`, RDS Proxy, Supavisor's
    /// transaction mode).
    Transaction,
}

impl Pooler {
    /// Whether server connections may change between transactions, so nothing may be left
    /// on them.
    pub fn shares_server_connections(self) -> bool {
        self == Pooler::Transaction
    }

    /// Whether connections go to a pooler rather than to PostgreSQL itself.
    pub fn is_pooled(self) -> bool {
        self != Pooler::Direct
    }
}

impl fmt::Display for Pooler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Pooler::Direct => "direct",
            Pooler::Session => "session",
            Pooler::Transaction => "transaction",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Pooler;
    use crate::DatabaseConfig;

    #[test]
    fn every_mode_reads_from_json() {
        for (text, mode) in [
            ("direct", Pooler::Direct),
            ("session", Pooler::Session),
            ("transaction", Pooler::Transaction),
        ] {
            let json: DatabaseConfig =
                serde_json::from_str(&format!(r#"{{"pooler": "{text}"}}"#)).unwrap();
            assert_eq!(json.pooler, mode);
            assert_eq!(mode.to_string(), text);
        }
        let err = serde_json::from_str::<DatabaseConfig>(r#"{"pooler": "statement"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant `statement`"), "{err}");
        assert!(err.contains("transaction"), "{err}");
    }
}
