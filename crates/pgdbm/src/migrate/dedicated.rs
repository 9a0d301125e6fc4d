//! The connection a migration run holds: from the pool, or, when the pool goes through a
//! transaction pooler and `direct_connection_string` is set, straight to the server.

use std::sync::Arc;

use tokio_postgres::Client;

use super::migration_error;
use crate::error::Result;
use crate::manager::AsyncDatabaseManager;
use crate::pool::PoolConnection;
use crate::pool::{owned_search_path, Pool, PoolOptions};

/// The connection a run holds its lock on. It is never returned to the pool: the run changed
/// its timeouts, and migration files may change session state (SET, temp tables, DEALLOCATE).
/// When the run is cancelled halfway, the server-side work is cancelled before the connection
/// is closed, so the lock and any open transaction go away at once.
pub(super) struct Dedicated {
    conn: Option<PoolConnection>,
    finished: bool,
    /// Each transaction may run on another server connection (a transaction pooler, and no
    /// direct connection string): session locks and settings cannot be used.
    pub(super) serialised: bool,
    /// The one-connection pool of a direct connection, closed with the run.
    direct: Option<Pool>,
}

impl Dedicated {
    pub(super) async fn acquire(db: &AsyncDatabaseManager) -> Result<Self> {
        let failed = |e| {
            migration_error(
                None,
                format!("could not get a connection for the migration run: {e}"),
                Some(e),
            )
        };
        let pool = db.pool().map_err(failed)?;
        if let Some(direct) = pool.inner.direct.clone() {
            let direct = Self::direct_pool(db, &direct).await.map_err(failed)?;
            let conn = direct.get(None).await.map_err(failed)?;
            conn.conn()
                .set_state(crate::connection::SessionState::Unknown);
            return Ok(Dedicated {
                conn: Some(conn),
                finished: false,
                serialised: false,
                direct: Some(direct),
            });
        }
        let conn = db.acquire().await.map_err(failed)?;
        Ok(Dedicated {
            conn: Some(conn),
            finished: false,
            serialised: pool.inner.pooler.shares_server_connections(),
            direct: None,
        })
    }

    /// A pool of one connection to `direct`, with the manager's schema on its search_path.
    async fn direct_pool(
        db: &AsyncDatabaseManager,
        direct: &Arc<crate::DatabaseConfig>,
    ) -> Result<Pool> {
        let config = crate::DatabaseConfig {
            min_connections: 1,
            max_connections: 1,
            schema: db.schema().map(str::to_owned),
            ..(**direct).clone()
        };
        crate::replica::connect_pool(PoolOptions {
            search_path: db.schema().map(owned_search_path),
            expect_search_path: false,
            registry: Arc::default(),
            config: &config,
            replica: None,
        })
        .await
    }

    /// The statement that opens each file's transaction behind a transaction pooler: the
    /// pool's per-transaction settings (the schema's `search_path` among them), then no
    /// lock or statement timeout.
    pub(super) fn begin_untimed(&self) -> String {
        let setup = self
            .conn
            .as_ref()
            .and_then(|c| c.conn().transaction_setup().map(str::to_owned));
        match setup {
            Some(setup) => format!(
                "BEGIN;\n{setup}\nSET LOCAL lock_timeout = 0; SET LOCAL statement_timeout = 0"
            ),
            None => super::serialised::BEGIN_UNTIMED.to_owned(),
        }
    }

    pub(super) fn client(&self) -> &Client {
        self.conn.as_ref().expect("present until dropped")
    }

    pub(super) fn backend_pid(&self) -> i32 {
        self.conn.as_ref().map_or(0, PoolConnection::backend_pid)
    }

    pub(super) fn close(mut self) {
        self.finished = true;
    }
}

impl Drop for Dedicated {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if self.finished {
            drop(conn.detach());
        } else {
            conn.cancel_and_close();
        }
        if let Some(pool) = self.direct.take() {
            pool.close();
        }
    }
}
