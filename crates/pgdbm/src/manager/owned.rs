//! The manager's calls whose streams own their connection, and the manager with it.

use std::future::Future;
use std::time::Instant;

use tokio_postgres::types::ToSql;

use super::AsyncDatabaseManager;
use crate::error::Result;
use crate::query::{ConnRef, CopyFormat, CopyOutStream, Owner, RecordStream};
use crate::replica::Intent;

impl AsyncDatabaseManager {
    /// [`fetch_stream`](Self::fetch_stream) whose stream owns its connection (and a handle on
    /// the manager) instead of borrowing the manager: `Send + 'static`, for an HTTP handler's
    /// response body or a spawned task. The parameters are sent before this returns, so they
    /// need not outlive the call. Same timeout rules; dropped before its end, the stream
    /// cancels its query and its connection goes back to the pool only once it is idle.
    ///
    /// ```no_run
    /// use futures_util::TryStreamExt;
    ///
    /// async fn events(db: &pgdbm::AsyncDatabaseManager, kind: &str) -> pgdbm::Result<pgdbm::RecordStream> {
    ///     db.fetch_stream_owned("SELECT * FROM {{tables.events}} WHERE kind = $1", &[&kind]).await
    /// }
    /// # async fn f(db: pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
    /// let rows = events(&db, "login").await?;
    /// let task = tokio::spawn(rows.try_for_each(|row| async move {
    ///     println!("{:?}", row.get::<i64>("id"));
    ///     Ok(())
    /// }));
    /// # Ok(()) }
    /// ```
    pub async fn fetch_stream_owned(
        &self,
        query: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<RecordStream> {
        crate::query::fetch_stream_owned(self, query, params).await
    }

    /// [`copy_to`](Self::copy_to) whose stream owns its connection instead of borrowing the
    /// manager: `Send + 'static`, for an HTTP response body or a spawned task. Same timeout
    /// and cancellation rules.
    ///
    /// ```no_run
    /// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
    /// use pgdbm::CopyFormat;
    /// let csv = db.copy_to_owned("users", CopyFormat::Csv { header: true }).await?;
    /// tokio::spawn(async move {
    ///     use futures_util::TryStreamExt;
    ///     let bytes: Vec<bytes::Bytes> = csv.try_collect().await?;
    ///     Ok::<_, pgdbm::Error>(bytes)
    /// });
    /// # Ok(()) }
    /// ```
    pub async fn copy_to_owned(&self, source: &str, format: CopyFormat) -> Result<CopyOutStream> {
        crate::query::copy_to_owned(self, source, format).await
    }
}

impl Owner for AsyncDatabaseManager {
    fn owned_conn(
        &self,
        deadline: Option<Instant>,
        intent: Intent,
        sql: &str,
    ) -> impl Future<Output = Result<ConnRef<'static>>> + Send {
        self.route(deadline, intent, sql)
    }
}
