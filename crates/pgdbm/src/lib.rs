//! # pgdbm
//!
//! An async PostgreSQL database manager: one pooled manager per schema over a shared connection
//! pool, `{{tables.x}}` schema templates, execute/fetch helpers, typed rows through serde, binary
//! COPY, nested transactions with isolation options and serialization-failure retries, pool
//! statistics, TLS, server-side timeouts and connection retry.
//! A Rust version of the Python library pgdbm, with the same names where Rust allows.
//!
//! ```no_run
//! use pgdbm::{AsyncDatabaseManager, DatabaseConfig};
//!
//! # async fn run() -> pgdbm::Result<()> {
//! let db = AsyncDatabaseManager::new(DatabaseConfig {
//!     connection_string: Some("postgresql://postgres@localhost/postgres".into()),
//!     schema: Some("myapp".into()),
//!     min_connections: 2,
//!     max_connections: 10,
//!     ..Default::default()
//! })?;
//! db.connect().await?;
//! db.execute("CREATE TABLE IF NOT EXISTS {{tables.users}} (id serial PRIMARY KEY, email text UNIQUE)", &[]).await?;
//! let id: i32 = db.execute_and_return_id("INSERT INTO {{tables.users}} (email) VALUES ($1)", &[&"a@x.org"]).await?;
//!
//! #[derive(serde::Deserialize)]
//! struct User { id: i32, email: String }
//! let user: Option<User> = db.fetch_as_model("SELECT * FROM {{tables.users}} WHERE id = $1", &[&id]).await?;
//! db.disconnect().await?;
//! # Ok(()) }
//! ```
//!
//! Modules by capability: [`config`](DatabaseConfig), templates, [`pool`](Pool),
//! [`manager`](AsyncDatabaseManager), [`transaction`](Transaction), rows and values
//! ([`Record`], [`Value`], [`types`]), streams ([`RecordStream`]), COPY and batches ([`Params`],
//! [`CopyFormat`]), [`Error`]s, and
//! [`Executor`] for code that runs on the manager or inside a transaction alike,
//! LISTEN/NOTIFY ([`Listener`], [`AsyncDatabaseManager::notify`]), and observability: a
//! `tracing` span per operation with OpenTelemetry's database attribute names, a query monitor
//! ([`MonitoredAsyncDatabaseManager`]), a [`DatabaseDebugger`], and metrics (feature `metrics`).

#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub, rust_2018_idioms)]

mod config;
mod connection;
mod context;
mod de;
mod durations;
mod error;
mod executor;
mod from_row;
mod isolation;
mod manager;
mod mask;
mod migrate;
mod notify;
mod observe;
mod otel;
mod params;
mod pool;
mod pooler;
mod query;
mod record;
mod replica;
mod sql;
mod stats;
mod target;
mod template;
mod tls;
mod transaction;
pub mod types;
mod util;
mod value;

#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

/// `#[pgdbm::test]`: a fresh (optionally migrated) database per async test, dropped afterwards
/// even when the test panics. The function takes the connected manager (or nothing) and
/// returns `()` or a `Result`. See [`testing`].
///
/// Options: `migrations = "dir"` (relative to the crate's `Cargo.toml`; applied once to a
/// template database that each test clones), `schema = "name"` (the manager's schema, where
/// those migrations go), `schema_per_test = true` (one database, a fresh schema per test),
/// `template = false` (migrate every test database from scratch), `prefix = "test"`.
///
/// Several modules, each migrated into the schema of its name and recorded under that module
/// name: `migrations = [("users", "migrations/users"), ("orders", "migrations/orders")]`,
/// applied in that order. The manager works in `schema` when given, else in the first
/// module's schema; managers for the other schemas share its pool:
///
/// ```no_run
/// use pgdbm::AsyncDatabaseManager;
///
/// #[pgdbm::test(migrations = [("users", "migrations/users"), ("orders", "migrations/orders")])]
/// async fn places_an_order(db: AsyncDatabaseManager) -> pgdbm::Result<()> {
///     let orders = AsyncDatabaseManager::from_pool(db.pool()?, Some("orders"))?;
///     let id: i32 = db.execute_and_return_id("INSERT INTO {{tables.accounts}} (email) VALUES ('a@x')", &[]).await?;
///     orders.execute("INSERT INTO {{tables.orders}} (account_id) VALUES ($1)", &[&id]).await?;
///     Ok(())
/// }
/// ```
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub use pgdbm_macros::test;

pub use config::DatabaseConfig;
pub use config::ReplicaFallback;
pub use error::{Error, ErrorKind, Result};
pub use executor::Executor;
/// Used by [`embed_migrations!`]; not part of the stable API.
#[doc(hidden)]
pub use include_dir as __include_dir;
pub use isolation::ResetOnRelease;
pub use manager::AsyncDatabaseManager;
pub use migrate::{
    AppliedMigration, AsyncMigrationManager, DryRun, EmbeddedMigrations, Migration,
    MigrationRecord, MigrationReport,
};
pub use notify::{Listener, Notification};
pub use observe::{
    BlockingQuery, ConnectivityCheck, DatabaseDebugger, HealthReport, HealthStatus,
    LongRunningQuery, MonitorConfig, MonitorMetrics, MonitoredAsyncDatabaseManager, PoolCheck,
    QueryRecord, TableSize,
};
pub use params::{Params, ToRow};
/// Derives [`FromRow`](trait@FromRow) for a struct with named fields; the `#[pgdbm(...)]`
/// attributes are documented on the trait.
#[cfg(feature = "derive")]
#[cfg_attr(docsrs, doc(cfg(feature = "derive")))]
pub use pgdbm_macros::FromRow;
/// `#[derive(pgdbm::ToRow)]`: see the [`ToRow`](trait@ToRow) trait.
#[cfg(feature = "derive")]
#[cfg_attr(docsrs, doc(cfg(feature = "derive")))]
pub use pgdbm_macros::ToRow;
pub use pool::Pool;
pub use pool::PoolConnection;
pub use pooler::Pooler;
pub use query::{CopyFormat, CopyOutStream, Handle, Pipeline, PipelineResults, RecordStream};
pub use record::{ColumnIndex, FromRow, Record};
/// Used by the `pgdbm` CLI; not part of the stable API.
#[doc(hidden)]
pub mod __cli {
    /// The statement `execute_and_return_id` sends for `query` (`RETURNING id` appended
    /// unless it has its own).
    pub fn with_returning_id(query: &str) -> String {
        crate::sql::with_returning_id(query)
    }
}

/// Used by `#[derive(FromRow)]`; not part of the stable API.
#[doc(hidden)]
pub mod __derive {
    pub use crate::from_row::{
        get, get_or_default, json, json_or_default, DeserializeOwned, FromSqlOwned,
    };
}
pub use stats::{HostRole, HostStats, PoolStats, PoolStatus, SharedConnectionStats};
pub use transaction::{IsolationLevel, RetryPolicy, Transaction, TransactionOptions};
pub use value::{EnumText, Value};

/// Checks a database, schema, table or other identifier by the rules pgdbm applies everywhere:
/// letters, digits and underscores, starting with a letter or underscore, at most 63
/// characters. `what` names the thing in the error ([`Error::Schema`]). No I/O.
///
/// ```
/// assert!(pgdbm::validate_identifier("billing_v2", "schema").is_ok());
/// assert!(pgdbm::validate_identifier("x; DROP TABLE users", "schema").is_err());
/// ```
pub fn validate_identifier(name: &str, what: &str) -> Result<()> {
    template::check_identifier(name, what)
}

/// `Ok(value)` typed as [`pgdbm::Result`](Result), for the end of an async block or closure
/// where the error type cannot be inferred (as anyhow's `Ok` does).
///
/// ```
/// let job = async { pgdbm::Ok(42) };
/// ```
#[allow(non_snake_case)]
pub fn Ok<T>(value: T) -> Result<T> {
    Result::Ok(value)
}

/// The driver underneath, for anything pgdbm does not wrap.
pub use tokio_postgres;

// The crates whose types pgdbm reads and writes, re-exported so that code using them (a model
// printed by `pgdbm generate model`, say) needs no dependency of its own on them, and gets the
// versions pgdbm was built with.
pub use chrono;
/// `numeric` as `Decimal`: `row.get::<rust_decimal::Decimal>(..)`, and as a parameter.
#[cfg(feature = "rust_decimal")]
pub use rust_decimal;
pub use serde;
pub use serde_json;
pub use uuid;

/// The guide's code samples (`docs/guide`), compiled by `cargo test --doc`.
#[cfg(doctest)]
mod guide {
    #[doc = include_str!("../../../docs/guide/src/multi_tenant.md")]
    struct MultiTenant;
    #[doc = include_str!("../../../docs/guide/src/testing.md")]
    struct Testing;
    #[doc = include_str!("../../../docs/guide/src/migrations.md")]
    struct Migrations;
    #[doc = include_str!("../../../docs/guide/src/deploying.md")]
    struct Deploying;
    #[doc = include_str!("../../../docs/guide/src/observability.md")]
    struct Observability;
    #[doc = include_str!("../../../docs/guide/src/from_sqlx.md")]
    struct FromSqlx;
}
