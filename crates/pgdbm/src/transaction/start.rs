//! How a manager starts a transaction.

use super::{Transaction, TransactionOptions};
use crate::error::Result;
use crate::manager::AsyncDatabaseManager;

impl AsyncDatabaseManager {
    /// Starts a transaction. Commit it with [`Transaction::commit`]; dropping it uncommitted
    /// rolls it back. [`Transaction::transaction`] nests a savepoint.
    ///
    /// ```no_run
    /// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
    /// let tx = db.transaction().await?;
    /// tx.execute("UPDATE {{tables.users}} SET name = 'x' WHERE id = $1", &[&1_i32]).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn transaction(&self) -> Result<Transaction<'static>> {
        Transaction::begin(self.clone(), TransactionOptions::default()).await
    }

    /// Starts a transaction with an isolation level, read-only or deferrable, all sent in the
    /// `BEGIN` itself. Nested transactions (savepoints) share their parent's options, so only
    /// a top-level transaction takes them.
    ///
    /// ```no_run
    /// use pgdbm::{IsolationLevel, TransactionOptions};
    /// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
    /// let tx = db
    ///     .transaction_with(TransactionOptions::new().isolation_level(IsolationLevel::RepeatableRead))
    ///     .await?;
    /// let n: Option<i64> = tx.fetch_value("SELECT count(*) FROM {{tables.users}}", &[]).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn transaction_with(
        &self,
        options: TransactionOptions,
    ) -> Result<Transaction<'static>> {
        Transaction::begin(self.clone(), options).await
    }
}
