//! The contenders, and opening each with a pool of a given size.
//!
//! Every slice opens its contender's connections and closes them afterwards: at 64 connections
//! all contenders at once would not fit in a default server's `max_connections` of 100, and a
//! fresh pool per slice treats every contender alike. The timed window starts after a warm-in,
//! so statement preparation on the new connections is not counted.

use std::str::FromStr;
use std::sync::Arc;

use pgdbm::{AsyncDatabaseManager, DatabaseConfig};

pub use crate::live::Live;
use crate::live::{RawConn, Sqls};
use crate::setup::SESSION_OPTIONS;
use crate::workload::{Kind, Workload};
use crate::BoxError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Who {
    Pgdbm,
    /// pgdbm's serde path (`fetch_all_as_model`), for the typed workloads only.
    PgdbmSerde,
    /// pgdbm with its spans recorded by a `tracing` subscriber (point select and fetch 1k).
    PgdbmTraced,
    /// pgdbm with a query monitor attached (point select and fetch 1k).
    PgdbmMonitor,
    /// pgdbm with `reset_on_release = "always"` (point select and fetch 1k).
    PgdbmResetAlways,
    Raw,
    Deadpool,
    Sqlx,
    Python,
    Pgbench,
}

impl Who {
    pub const ALL: [Who; 10] = [
        Who::Pgdbm,
        Who::PgdbmSerde,
        Who::PgdbmTraced,
        Who::PgdbmMonitor,
        Who::PgdbmResetAlways,
        Who::Raw,
        Who::Deadpool,
        Who::Sqlx,
        Who::Python,
        Who::Pgbench,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Who::Pgdbm => "pgdbm",
            Who::PgdbmSerde => "pgdbm-serde",
            Who::PgdbmTraced => "pgdbm-traced",
            Who::PgdbmMonitor => "pgdbm-monitor",
            Who::PgdbmResetAlways => "pgdbm-reset-always",
            Who::Raw => "raw",
            Who::Deadpool => "deadpool",
            Who::Sqlx => "sqlx",
            Who::Python => "python",
            Who::Pgbench => "pgbench",
        }
    }

    /// The column header.
    pub fn label(self) -> &'static str {
        match self {
            Who::Pgdbm => "pgdbm-rs",
            Who::PgdbmSerde => "pgdbm-rs serde",
            Who::PgdbmTraced => "pgdbm-rs traced",
            Who::PgdbmMonitor => "pgdbm-rs monitor",
            Who::PgdbmResetAlways => "pgdbm-rs reset always",
            Who::Raw => "tokio-postgres",
            Who::Deadpool => "deadpool-pg",
            Who::Sqlx => "sqlx 0.9",
            Who::Python => "Python pgdbm",
            Who::Pgbench => "pgbench",
        }
    }

    pub fn from_key(key: &str) -> Option<Who> {
        Who::ALL.into_iter().find(|w| w.key() == key)
    }

    /// pgbench runs SQL scripts: no typed rows and no client-side bulk data.
    pub fn supports(self, w: Workload) -> bool {
        // Pipelined: pgdbm's pipeline and tokio-postgres's joined futures; sequential: every
        // in-process library. The tenant workloads: the pools that take any SQL text (raw
        // tokio-postgres would have to prepare 10,000 statements per connection up front).
        if w.is_ten_selects() {
            return match self {
                Who::Pgdbm | Who::Raw => true,
                Who::Deadpool | Who::Sqlx => !w.is_pipelined(),
                _ => false,
            };
        }
        if w.tenants().is_some() {
            return matches!(self, Who::Pgdbm | Who::Deadpool | Who::Sqlx);
        }
        match self {
            Who::Pgbench => {
                !matches!(w, Workload::Typed1k | Workload::Typed100k) && w.kind() == Kind::Timed
                    || w == Workload::Fetch100k
            }
            Who::PgdbmSerde => matches!(w, Workload::Typed1k | Workload::Typed100k),
            // What observability costs, on a one-row and a 1,000-row read.
            Who::PgdbmTraced | Who::PgdbmMonitor | Who::PgdbmResetAlways => {
                matches!(w, Workload::PointSelect | Workload::Fetch1k)
            }
            _ => true,
        }
    }
}

/// How a contender's pool is made: the default for the suite is [`Pool::of`].
#[derive(Debug, Clone, Copy)]
pub struct Pool<'a> {
    /// Connections, all connected before `open` returns.
    pub size: usize,
    /// pgdbm's `multiplexing` (pgdbm only).
    pub multiplexing: bool,
    /// The sessions' `application_name` (the library's default when `None`).
    pub application_name: Option<&'a str>,
}

impl Pool<'_> {
    /// `size` connections with the library's defaults.
    pub fn of(size: usize) -> Self {
        Pool {
            size,
            multiplexing: false,
            application_name: None,
        }
    }
}

/// Opens `who` with `size` connections, all of them connected before it returns.
pub async fn open(who: Who, url: &str, sqls: &Arc<Sqls>, size: usize) -> Result<Live, BoxError> {
    open_with(who, url, sqls, Pool::of(size)).await
}

/// Opens `who` with the pool `pool`.
pub async fn open_with(
    who: Who,
    url: &str,
    sqls: &Arc<Sqls>,
    pool: Pool<'_>,
) -> Result<Live, BoxError> {
    let Pool {
        size,
        multiplexing,
        application_name,
    } = pool;
    if multiplexing && who != Who::Pgdbm {
        return Err(format!("{} has no multiplexing", who.label()).into());
    }
    Ok(match who {
        Who::Pgdbm
        | Who::PgdbmSerde
        | Who::PgdbmTraced
        | Who::PgdbmMonitor
        | Who::PgdbmResetAlways => {
            let defaults = DatabaseConfig::default();
            let reset_on_release = match who {
                Who::PgdbmResetAlways => pgdbm::ResetOnRelease::Always,
                _ => pgdbm::ResetOnRelease::Auto,
            };
            let db = AsyncDatabaseManager::new(DatabaseConfig {
                connection_string: Some(url.to_owned()),
                schema: Some(sqls.schema.clone()),
                min_connections: size,
                max_connections: size,
                reset_on_release,
                multiplexing,
                server_settings: application_name
                    .map(|name| [("application_name".to_owned(), name.to_owned())].into()),
                ..defaults
            })?;
            db.connect().await?;
            match who {
                Who::PgdbmSerde => Live::PgdbmSerde(db),
                Who::PgdbmTraced => Live::PgdbmTraced(db, recording_subscriber()),
                // The monitor travels with the manager handle (and its clones).
                Who::PgdbmMonitor => Live::Pgdbm(
                    pgdbm::MonitoredAsyncDatabaseManager::new(&db, Default::default())?
                        .manager()
                        .clone(),
                ),
                _ => Live::Pgdbm(db),
            }
        }
        Who::Raw => {
            let mut config = tokio_postgres::Config::from_str(url)?;
            config.options(SESSION_OPTIONS);
            if let Some(name) = application_name {
                config.application_name(name);
            }
            let conns = futures_util::future::try_join_all((0..size).map(|_| async {
                let (client, conn) = config.connect(tokio_postgres::NoTls).await?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                RawConn::prepare(client, sqls).await
            }))
            .await?;
            Live::Raw(conns)
        }
        Who::Deadpool => {
            let mut config = tokio_postgres::Config::from_str(url)?;
            config.options(SESSION_OPTIONS);
            if let Some(name) = application_name {
                config.application_name(name);
            }
            let manager = deadpool_postgres::Manager::from_config(
                config,
                tokio_postgres::NoTls,
                deadpool_postgres::ManagerConfig {
                    recycling_method: deadpool_postgres::RecyclingMethod::Fast,
                },
            );
            let pool = deadpool_postgres::Pool::builder(manager)
                .max_size(size)
                .build()?;
            // deadpool connects lazily: hold `size` objects at once so that all exist.
            let held = futures_util::future::try_join_all((0..size).map(|_| pool.get())).await?;
            drop(held);
            Live::Deadpool(pool)
        }
        Who::Sqlx => {
            let mut options =
                sqlx::postgres::PgConnectOptions::from_str(url)?.options([("jit", "off")]);
            if let Some(name) = application_name {
                options = options.application_name(name);
            }
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(size as u32)
                .min_connections(size as u32)
                .connect_with(options)
                .await?;
            let held =
                futures_util::future::try_join_all((0..size).map(|_| pool.acquire())).await?;
            drop(held);
            Live::Sqlx(pool)
        }
        Who::Python | Who::Pgbench => unreachable!("{who:?} runs out of process"),
    })
}

impl Live {
    pub async fn close(self) {
        match self {
            Live::Pgdbm(db) | Live::PgdbmSerde(db) | Live::PgdbmTraced(db, _) => {
                let _ = db.disconnect().await;
            }
            Live::PgdbmTenants(pool, _) => {
                pool.close();
                tokio::task::yield_now().await;
            }
            Live::Raw(conns) => drop(conns),
            Live::Deadpool(pool) => pool.close(),
            Live::Sqlx(pool) => pool.close().await,
        }
    }
}

/// A subscriber that records every span's fields, as an exporter would, and writes nothing:
/// the fmt layer formats each span's fields when it is created and recorded.
fn recording_subscriber() -> tracing::Dispatch {
    use tracing_subscriber::layer::SubscriberExt;
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::sink))
        .with(tracing_subscriber::filter::LevelFilter::INFO);
    tracing::Dispatch::new(subscriber)
}
