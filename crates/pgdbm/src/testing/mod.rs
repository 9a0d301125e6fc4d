//! Test support for your own test suites (feature `testing`): isolated test databases,
//! `#[pgdbm::test]`, fixtures, table snapshots, and throwaway servers: a PostgreSQL cluster
//! ([`TempCluster`]), its streaming replicas ([`TempCluster::start_replica`]) and a PgBouncer
//! ([`TempPgBouncer`]).
//!
//! With migrations, a template database (`pgdbm_tpl_<hash>`) is migrated once and each test
//! takes a clone of it, a few of which are made ahead (`pgdbm_spare_<hash>_…`). A run leaves
//! nothing behind: the template and its spares are dropped when the last test database cloned
//! from them in the process is gone, unless another test process still uses them (it drops
//! them when it is done). `PGDBM_KEEP_TEMPLATES=1` keeps them for the next run instead, which
//! then starts without migrating; set it too when tests using a template do not overlap
//! (`--test-threads=1`), since the template would otherwise be rebuilt for each of them. A
//! killed process can leave test databases or templates: [`drop_leftover_databases`] and
//! [`drop_stale_templates`] (or `pgdbm test cleanup --templates`) remove them.
//!
//! ```no_run
//! #[pgdbm::test(migrations = "migrations")]
//! async fn creates_users(db: pgdbm::AsyncDatabaseManager) {
//!     db.execute("INSERT INTO {{tables.users}} (email) VALUES ('a@x')", &[]).await.unwrap();
//!     assert_eq!(pgdbm::testing::count_rows(&db, "users").await.unwrap(), 1);
//! }
//! ```

mod cluster;
mod database;
mod fixtures;
mod local;
mod pgbouncer;
mod plan;
mod process;
mod proxy;
mod replica;
mod server;
mod templates;

pub use cluster::{TempCluster, TempClusterBuilder};
pub use database::{
    drop_leftover_databases, list_leftover_databases, server_config_from_env, LeftoverDatabase,
    TestDatabase, TestDatabaseBuilder,
};
pub use fixtures::{
    assert_table_unchanged, count_rows, load_json_fixture, load_sql_fixture, snapshot_table,
    truncate, TableSnapshot,
};
pub use local::{server_url, DEFAULT_SERVER_URL};
pub use pgbouncer::{TempPgBouncer, TempPgBouncerBuilder};
pub use plan::Migrations;
pub use proxy::LatencyProxy;
pub use templates::drop_stale_templates;

/// What `#[pgdbm::test]` expands to; not a stable API.
#[doc(hidden)]
pub mod __private {
    use std::future::Future;
    use std::panic::{resume_unwind, AssertUnwindSafe};

    use futures_util::FutureExt;

    use super::{TestDatabase, TestDatabaseBuilder};
    use crate::AsyncDatabaseManager;

    /// A test's return value: `()` or a `Result` whose error fails the test.
    pub trait TestOutcome {
        /// Panics on failure.
        fn check(self);
    }

    impl TestOutcome for () {
        fn check(self) {}
    }

    impl<E: std::fmt::Debug> TestOutcome for Result<(), E> {
        fn check(self) {
            if let Err(e) = self {
                panic!("test returned an error: {e:?}");
            }
        }
    }

    /// Runs one test body against a fresh database, dropping it afterwards even if the body
    /// panics, then re-raises the panic.
    pub fn run<F, Fut, R>(builder: TestDatabaseBuilder, body: F)
    where
        F: FnOnce(AsyncDatabaseManager) -> Fut,
        Fut: Future<Output = R>,
        R: TestOutcome,
    {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime for the test");
        let (outcome, cleanup) = rt.block_on(async move {
            let tdb: TestDatabase = match builder.create().await {
                Ok(t) => t,
                Err(e) => panic!("could not create the test database: {e}"),
            };
            let outcome = AssertUnwindSafe(body(tdb.manager().clone()))
                .catch_unwind()
                .await;
            let cleanup = tdb.cleanup().await;
            (outcome, cleanup)
        });
        drop(rt);
        match outcome {
            Err(panic) => resume_unwind(panic),
            Ok(r) => r.check(),
        }
        if let Err(e) = cleanup {
            panic!("test database cleanup failed: {e}");
        }
    }
}

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
