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
//! ([`Record`], [`Value`], [`types`]), COPY and batches ([`Params`]), [`Error`]s, and
//! [`Executor`] for code that runs on the manager or inside a transaction alike, and
//! LISTEN/NOTIFY ([`Listener`], [`AsyncDatabaseManager::notify`]).

#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub, rust_2018_idioms)]

mod config;
mod connection;
mod de;
mod error;
mod executor;
mod manager;
mod migrate;
mod notify;
mod params;
mod pool;
mod query;
mod record;
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
/// even when the test panics. See [`testing`].
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub use pgdbm_macros::test;

pub use config::DatabaseConfig;
pub use connection::PoolConnection;
pub use error::{Error, ErrorKind, Result};
pub use executor::Executor;
/// Used by [`embed_migrations!`]; not part of the stable API.
#[doc(hidden)]
pub use include_dir as __include_dir;
pub use manager::AsyncDatabaseManager;
pub use migrate::{
    AppliedMigration, AsyncMigrationManager, DryRun, EmbeddedMigrations, Migration,
    MigrationRecord, MigrationReport,
};
pub use notify::{Listener, Notification};
pub use params::Params;
/// `#[derive(FromRow)]`, with `#[pgdbm(rename = "column")]` on fields. See [`FromRow`].
#[cfg(feature = "derive")]
#[cfg_attr(docsrs, doc(cfg(feature = "derive")))]
pub use pgdbm_macros::FromRow;
pub use pool::Pool;
pub use record::{ColumnIndex, FromRow, Record};
pub use stats::{PoolStats, PoolStatus};
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

/// The driver underneath, for anything pgdbm does not wrap.
pub use tokio_postgres;
