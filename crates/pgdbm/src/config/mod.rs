//! `DatabaseConfig`: every field of Python pgdbm's config, with the same names and defaults.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::pooler::Pooler;
use crate::target::SessionAttrs;
use crate::template::validate_identifier;

mod dsn;
mod env;
pub(crate) mod replicas;
mod session;
mod validate;

pub(crate) use replicas::replica_target;
pub use replicas::ReplicaFallback;
pub(crate) use session::quote_literal;

pub(crate) use crate::mask::mask_dsn;

/// Characters that must be escaped inside the userinfo part of a URL. A space becomes `%20`,
/// never `+` (Python's `quote_plus` got that wrong).
const USERINFO: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b':')
    .add(b';')
    .add(b'<')
    .add(b'=')
    .add(b'>')
    .add(b'?')
    .add(b'@')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}')
    .add(b'\'')
    .add(b'&')
    .add(b'+')
    .add(b',');

/// How to reach PostgreSQL and how to run the pool.
///
/// Durations keep Python pgdbm's units (`f64` seconds, `Option<u64>` milliseconds) so a config file
/// written for Python pgdbm reads the same.
///
/// ```
/// use pgdbm::DatabaseConfig;
/// let config = DatabaseConfig {
///     connection_string: Some("postgresql://postgres@localhost/myapp".into()),
///     schema: Some("myapp".into()),
///     min_connections: 2,
///     max_connections: 10,
///     ..Default::default()
/// };
/// assert_eq!(config.statement_timeout_ms, Some(60_000));
/// ```
#[derive(Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// A `postgresql://` URL or a `key=value` string; when set, it wins over the fields below.
    pub connection_string: Option<String>,
    /// Host name, IP address, or socket directory (starting with `/`).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Database name.
    pub database: String,
    /// User name.
    pub user: String,
    /// Password; never printed.
    pub password: Option<String>,
    /// The schema this manager works in (`{{tables.x}}` renders to `"schema".x`).
    #[serde(alias = "schema_name")]
    pub schema: Option<String>,

    /// Connections opened at connect and kept open: one that is lost (closed by the server,
    /// discarded, detached) is replaced in the background.
    pub min_connections: usize,
    /// Upper bound of open connections.
    pub max_connections: usize,
    /// Queries a connection serves before it is replaced.
    pub max_queries: u64,
    /// Seconds an idle connection is kept (never reaping below `min_connections`); 0 = forever.
    pub max_inactive_connection_lifetime: f64,
    /// Default per-call timeout in seconds, covering the wait for a connection too; 0 = none.
    pub command_timeout: f64,

    /// `SET name = value` on every new connection. `jit=off` is added unless given, and
    /// `application_name` defaults to `<schema>_pool` (`app_pool` without a schema or for a
    /// shared pool) unless given here or in the connection string.
    pub server_settings: Option<HashMap<String, String>>,
    /// SQL run on every new connection, after the settings.
    pub init_commands: Option<Vec<String>>,

    /// Use TLS.
    pub ssl_enabled: bool,
    /// `require`, `verify-ca` or `verify-full` (the default when TLS is enabled).
    pub ssl_mode: Option<String>,
    /// CA certificate (PEM) to trust; the system roots when unset.
    pub ssl_ca_file: Option<String>,
    /// Client certificate (PEM) for mutual TLS.
    pub ssl_cert_file: Option<String>,
    /// Client key (PEM: PKCS#8, PKCS#1 or SEC1; encrypted PKCS#8 with `ssl_key_password`).
    pub ssl_key_file: Option<String>,
    /// Password of an encrypted client key; never printed.
    pub ssl_key_password: Option<String>,

    /// Server-side `statement_timeout` in ms; `None` leaves the server's value.
    pub statement_timeout_ms: Option<u64>,
    /// Server-side `idle_in_transaction_session_timeout` in ms; `None` leaves the server's value.
    pub idle_in_transaction_session_timeout_ms: Option<u64>,
    /// Server-side `lock_timeout` in ms; `None` leaves the server's value.
    pub lock_timeout_ms: Option<u64>,

    /// Retries after the first connect attempt, for connect-class failures only.
    pub retry_attempts: u32,
    /// First delay between attempts, seconds.
    pub retry_delay: f64,
    /// Multiplier applied to the delay after each attempt.
    pub retry_backoff: f64,
    /// Upper bound of one delay, seconds.
    pub retry_max_delay: f64,

    /// Prepared statements cached per connection; 0 = no named statements of ours. With 0, each
    /// connection learns a SQL text's parameter types from the server once (inside
    /// `BEGIN`/`ROLLBACK` outside a transaction, closing the statement again) and then sends
    /// unnamed statements, so values are checked and encoded exactly as in the default mode.
    /// Behind a transaction pooler set [`pooler`](Self::pooler) instead: it implies 0 and also
    /// keeps the driver's custom-type lookups and the session settings off shared server
    /// connections.
    pub statement_cache_size: usize,
    /// What sits between pgdbm and PostgreSQL: `"direct"` (the default), `"session"` or
    /// `"transaction"` (PgBouncer's `pool_mode`). `"transaction"` sends no named statement and
    /// no session setting at all; see [`Pooler`] for what changes.
    pub pooler: Pooler,
    /// When a pooled connection's session is reset before the next caller gets it:
    /// `"auto"` (the default) after a statement that changes the session, `"always"` after
    /// every use. See [`ResetOnRelease`](crate::ResetOnRelease) for what each covers and costs.
    pub reset_on_release: crate::ResetOnRelease,
    /// Show parameter values in the statement log, spans, the monitor and errors' `params`
    /// (short values as written, longer ones as their length). Off by default: each
    /// parameter shows only its placeholder and kind (`$1: text(12 chars)`), so e-mail
    /// addresses and tokens stay out of logs. Process-wide once a pool is made with it on.
    pub log_parameter_values: bool,
    /// Multiplexing: session-neutral statements sent outside a transaction (`execute`,
    /// `fetch_*`, `execute_and_return_id`, pipelines) share a few pooled connections with
    /// other callers' statements, pipelined, instead of holding a connection each for their
    /// round trip. Transactions, streams, COPY, `executemany`, `acquire()`, LISTEN,
    /// `with_settings` views and statements that change the session still get a connection
    /// of their own;
    /// `max_connections` bounds both kinds together. A timeout on a shared connection returns
    /// at its deadline without cancelling ([`Error::SharedTimeout`](crate::Error::SharedTimeout)).
    /// Off by default; refused with `pooler = "transaction"`, `reset_on_release = "always"`
    /// and `statement_cache_size = 0`. Env `DB_MULTIPLEXING`.
    pub multiplexing: bool,
    /// Where migrations connect when `connection_string` goes through a transaction pooler: the
    /// server itself (Prisma's and Rails' `directUrl`). Same forms as `connection_string`; the
    /// password, user and TLS settings of this config fill what it leaves out. `None` =
    /// migrate through the pool, serialised by transaction-scoped advisory locks.
    pub direct_connection_string: Option<String>,
    /// The `search_path` a shared pool pins so that unqualified names fail loudly; `None` = off.
    pub shared_pool_search_path: Option<String>,

    /// Where [`listen`](crate::AsyncDatabaseManager::listen) connects, when not where the pool
    /// does: LISTEN needs a session of its own, which a transaction pooler (PgBouncer in
    /// `pool_mode = transaction`) cannot give, so point this at the server directly while
    /// `connection_string` goes through the pooler. Same forms as `connection_string`; the
    /// password, TLS settings, timeouts and `init_commands` of this config apply to it too.
    /// `None` = the pool's own server.
    pub listen_connection_string: Option<String>,
    /// Notifications a [`Listener`](crate::Listener) holds for a slow consumer; past this it
    /// drops new ones and yields one [`ErrorKind::NotificationsMissed`](crate::ErrorKind) error
    /// instead of growing without bound or blocking its connection. At least 1.
    pub listen_buffer_size: usize,

    /// Streaming read replicas, each a connection string (URL or `key=value`); the user,
    /// password, database, TLS and settings a string leaves out come from this config. Reads
    /// of [`replica()`](crate::AsyncDatabaseManager::replica) (and plain reads in
    /// `replica_auto_routing`) go to a healthy one. Empty = no replicas.
    pub read_replicas: Vec<String>,
    /// What a replica read does when no replica is healthy: `"primary"` (read from the
    /// primary) or `"error"` ([`Error::NoReplica`](crate::Error::NoReplica)).
    pub replica_fallback: ReplicaFallback,
    /// Sends `fetch_*` and streams outside transactions to a replica when the statement is
    /// provably a plain read (see the README); everything else stays on the primary.
    pub replica_auto_routing: bool,
    /// Seconds of replay lag past which a replica is skipped until it catches up; 0 = no limit.
    pub max_replica_lag: f64,
    /// Seconds a replica read waits for the replica to replay this manager's last write before
    /// it reads from the primary instead (read-your-writes).
    pub read_your_writes_timeout: f64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            connection_string: None,
            host: "localhost".into(),
            port: 5432,
            database: "postgres".into(),
            user: "postgres".into(),
            password: None,
            schema: None,
            min_connections: 10,
            max_connections: 20,
            max_queries: 50_000,
            max_inactive_connection_lifetime: 300.0,
            command_timeout: 60.0,
            server_settings: None,
            init_commands: None,
            ssl_enabled: false,
            ssl_mode: None,
            ssl_ca_file: None,
            ssl_cert_file: None,
            ssl_key_file: None,
            ssl_key_password: None,
            statement_timeout_ms: Some(60_000),
            idle_in_transaction_session_timeout_ms: Some(60_000),
            lock_timeout_ms: Some(5_000),
            retry_attempts: 3,
            retry_delay: 1.0,
            retry_backoff: 2.0,
            retry_max_delay: 30.0,
            statement_cache_size: 1000,
            pooler: Pooler::Direct,
            reset_on_release: crate::ResetOnRelease::Auto,
            log_parameter_values: false,
            multiplexing: false,
            direct_connection_string: None,
            shared_pool_search_path: Some("pg_catalog".into()),
            listen_connection_string: None,
            listen_buffer_size: 1024,
            read_replicas: Vec::new(),
            replica_fallback: ReplicaFallback::Primary,
            replica_auto_routing: false,
            max_replica_lag: 30.0,
            read_your_writes_timeout: 2.0,
        }
    }
}

/// TLS verification level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    Require,
    VerifyCa,
    VerifyFull,
}

pub(super) fn secs(v: f64) -> Option<Duration> {
    (v > 0.0).then(|| Duration::from_secs_f64(v))
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mask = |o: &Option<String>| o.as_ref().map(|_| "****");
        f.debug_struct("DatabaseConfig")
            .field(
                "connection_string",
                &self
                    .connection_string
                    .as_ref()
                    .map(|_| self.get_dsn_masked()),
            )
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &mask(&self.password))
            .field("schema", &self.schema)
            .field("min_connections", &self.min_connections)
            .field("max_connections", &self.max_connections)
            .field("max_queries", &self.max_queries)
            .field(
                "max_inactive_connection_lifetime",
                &self.max_inactive_connection_lifetime,
            )
            .field("command_timeout", &self.command_timeout)
            .field("server_settings", &self.server_settings)
            .field("init_commands", &self.init_commands.as_ref().map(Vec::len))
            .field("ssl_enabled", &self.ssl_enabled)
            .field("ssl_mode", &self.ssl_mode)
            .field("ssl_ca_file", &self.ssl_ca_file)
            .field("ssl_cert_file", &self.ssl_cert_file)
            .field("ssl_key_file", &self.ssl_key_file)
            .field("ssl_key_password", &mask(&self.ssl_key_password))
            .field("statement_timeout_ms", &self.statement_timeout_ms)
            .field(
                "idle_in_transaction_session_timeout_ms",
                &self.idle_in_transaction_session_timeout_ms,
            )
            .field("lock_timeout_ms", &self.lock_timeout_ms)
            .field("retry_attempts", &self.retry_attempts)
            .field("retry_delay", &self.retry_delay)
            .field("retry_backoff", &self.retry_backoff)
            .field("retry_max_delay", &self.retry_max_delay)
            .field("statement_cache_size", &self.statement_cache_size)
            .field("pooler", &self.pooler)
            .field("reset_on_release", &self.reset_on_release)
            .field("log_parameter_values", &self.log_parameter_values)
            .field("multiplexing", &self.multiplexing)
            .field(
                "direct_connection_string",
                &self.direct_connection_string.as_deref().map(mask_dsn),
            )
            .field("shared_pool_search_path", &self.shared_pool_search_path)
            .field(
                "listen_connection_string",
                &self.listen_connection_string.as_deref().map(mask_dsn),
            )
            .field("listen_buffer_size", &self.listen_buffer_size)
            .field(
                "read_replicas",
                &self
                    .read_replicas
                    .iter()
                    .map(|r| mask_dsn(r))
                    .collect::<Vec<_>>(),
            )
            .field("replica_fallback", &self.replica_fallback)
            .field("replica_auto_routing", &self.replica_auto_routing)
            .field("max_replica_lag", &self.max_replica_lag)
            .field("read_your_writes_timeout", &self.read_your_writes_timeout)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsn_encodes_space_as_percent20() {
        let c = DatabaseConfig {
            password: Some("a b@c:d/e%f".into()),
            host: "db".into(),
            ..Default::default()
        };
        assert_eq!(
            c.get_dsn(),
            "postgresql://postgres:a%20b%40c%3Ad%2Fe%25f@db:5432/postgres"
        );
        let parsed: tokio_postgres::Config = c.get_dsn().parse().unwrap();
        assert_eq!(parsed.get_password(), Some(&b"a b@c:d/e%f"[..]));
        assert!(!c.get_dsn_masked().contains("a b"));
        assert!(!format!("{c:?}").contains("a b@c"));
    }

    #[test]
    fn schema_name_alias_and_defaults() {
        let c: DatabaseConfig =
            serde_json::from_str(r#"{"schema_name": "app", "lock_timeout_ms": null}"#).unwrap();
        assert_eq!(c.schema.as_deref(), Some("app"));
        assert_eq!(c.lock_timeout_ms, None);
        assert_eq!(c.statement_timeout_ms, Some(60_000));
        assert_eq!(c.min_connections, 10);
        assert_eq!(c.max_connections, 20);
    }

    #[test]
    fn from_env_reads_url_and_password() {
        let vars = |name: &str| match name {
            "DATABASE_URL" => Some("postgresql://app@db:5433/app".to_string()),
            "DB_PASSWORD" => Some("s3 cret".to_string()),
            _ => None,
        };
        let c = DatabaseConfig::from_vars(vars);
        assert_eq!(
            c.connection_string.as_deref(),
            Some("postgresql://app@db:5433/app")
        );
        let pg = c.pg_config().unwrap();
        assert_eq!(
            pg.get_password(),
            Some(&b"s3 cret"[..]),
            "DB_PASSWORD fills a URL without one"
        );
        assert_eq!(pg.get_ports(), [5433]);
        // A password in the URL wins over DB_PASSWORD.
        let c = DatabaseConfig::from_vars(|name| match name {
            "DATABASE_URL" => Some("postgresql://app:inurl@db/app".to_string()),
            "DB_PASSWORD" => Some("other".to_string()),
            _ => None,
        });
        assert_eq!(c.pg_config().unwrap().get_password(), Some(&b"inurl"[..]));
        let empty = DatabaseConfig::from_vars(|_| None);
        assert_eq!(empty, DatabaseConfig::default());
    }

    #[test]
    fn from_env_reads_multiplexing() {
        for (value, want) in [("true", true), ("1", true), ("ON", true), ("no", false)] {
            let c = DatabaseConfig::from_vars(|name| {
                (name == "DB_MULTIPLEXING").then(|| value.to_string())
            });
            assert_eq!(c.multiplexing, want, "DB_MULTIPLEXING={value}");
        }
        let c =
            DatabaseConfig::from_vars(|name| (name == "DB_MULTIPLEXING").then(|| "maybe".into()));
        assert!(!c.multiplexing, "an unknown value leaves the default");
        assert!(!DatabaseConfig::default().multiplexing);
    }

    #[test]
    fn multiplexing_is_refused_behind_a_transaction_pooler_and_with_reset_always() {
        let refused = [
            (
                DatabaseConfig {
                    pooler: crate::Pooler::Transaction,
                    ..DatabaseConfig::default()
                },
                "pooler = \"transaction\"",
            ),
            (
                DatabaseConfig {
                    reset_on_release: crate::ResetOnRelease::Always,
                    ..DatabaseConfig::default()
                },
                "reset_on_release = \"always\"",
            ),
            (
                DatabaseConfig {
                    statement_cache_size: 0,
                    ..DatabaseConfig::default()
                },
                "statement_cache_size = 0",
            ),
        ];
        for (c, names) in refused {
            let c = DatabaseConfig {
                multiplexing: true,
                ..c
            };
            let e = c.validate().unwrap_err();
            let is_multiplexing =
                matches!(&e, crate::Error::Configuration { field, .. } if *field == "multiplexing");
            assert!(is_multiplexing, "{e}");
            assert!(e.to_string().contains(names), "{e}");
        }
    }

    #[test]
    fn a_shared_connection_runs_with_statement_timeout_bounded_by_command_timeout() {
        let c = DatabaseConfig {
            multiplexing: true,
            command_timeout: 5.0,
            ..DatabaseConfig::default()
        };
        assert_eq!(c.shared_statement_timeout_ms(), Some(5_000));
        // Exclusive connections keep the configured one.
        assert!(c
            .session_setup_sql(None, false)
            .contains("statement_timeout = '60000'"));
        let c = DatabaseConfig {
            multiplexing: true,
            command_timeout: 0.0,
            ..DatabaseConfig::default()
        };
        assert_eq!(c.shared_statement_timeout_ms(), Some(60_000));
        let c = DatabaseConfig {
            multiplexing: true,
            command_timeout: 0.0,
            statement_timeout_ms: None,
            ..DatabaseConfig::default()
        };
        assert_eq!(c.shared_statement_timeout_ms(), None);
    }

    #[test]
    fn application_name_defaults_to_schema_pool() {
        let name = |c: &DatabaseConfig| {
            c.pg_config()
                .unwrap()
                .get_application_name()
                .map(str::to_owned)
        };
        let mut c = DatabaseConfig {
            schema: Some("billing".into()),
            ..Default::default()
        };
        assert_eq!(name(&c).as_deref(), Some("billing_pool"));
        c.schema = None;
        assert_eq!(name(&c).as_deref(), Some("app_pool"));
        c.server_settings = Some([("application_name".to_string(), "mine".to_string())].into());
        assert_eq!(name(&c).as_deref(), Some("mine"));
        let c = DatabaseConfig {
            schema: Some("billing".into()),
            connection_string: Some("postgresql://u@h/db?application_name=url".into()),
            ..Default::default()
        };
        assert_eq!(name(&c).as_deref(), Some("url"));
    }

    #[test]
    fn validation() {
        let bad = DatabaseConfig {
            min_connections: 5,
            max_connections: 2,
            ..Default::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(Error::Configuration {
                field: "min_connections",
                ..
            })
        ));
        let bad = DatabaseConfig {
            ssl_enabled: true,
            ssl_mode: Some("prefer".into()),
            ..Default::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(Error::Configuration {
                field: "ssl_mode",
                ..
            })
        ));
        let bad = DatabaseConfig {
            schema: Some("a-b".into()),
            ..Default::default()
        };
        assert!(matches!(bad.validate(), Err(Error::Schema(_))));
    }
}
