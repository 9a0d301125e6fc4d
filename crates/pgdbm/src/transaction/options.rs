//! Transaction options: isolation level, access mode and deferrability, sent in the `BEGIN`
//! statement itself (no extra round trip).

/// The isolation level of a transaction. PostgreSQL's default is
/// [`ReadCommitted`](Self::ReadCommitted) unless the server or role sets another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IsolationLevel {
    /// Each statement sees the data committed before it began.
    ReadCommitted,
    /// All statements see one snapshot, taken at the first statement.
    RepeatableRead,
    /// Like repeatable read, and the outcome is that of some serial order; a transaction that
    /// cannot be ordered fails with SQLSTATE `40001` and should be retried (see
    /// [`AsyncDatabaseManager::transaction_with_retry`](crate::AsyncDatabaseManager::transaction_with_retry)).
    Serializable,
}

impl IsolationLevel {
    fn sql(self) -> &'static str {
        match self {
            IsolationLevel::ReadCommitted => "ISOLATION LEVEL READ COMMITTED",
            IsolationLevel::RepeatableRead => "ISOLATION LEVEL REPEATABLE READ",
            IsolationLevel::Serializable => "ISOLATION LEVEL SERIALIZABLE",
        }
    }
}

/// How a top-level transaction starts: isolation level, read-only, deferrable. Unset options
/// keep the session's defaults. Built like tokio-postgres' `build_transaction`:
///
/// ```no_run
/// use pgdbm::{IsolationLevel, TransactionOptions};
/// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
/// // BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE
/// let options = TransactionOptions::new()
///     .isolation_level(IsolationLevel::Serializable)
///     .read_only(true)
///     .deferrable(true);
/// let tx = db.transaction_with(options).await?;
/// let total: Option<i64> = tx.fetch_value("SELECT sum(amount) FROM {{tables.payments}}", &[]).await?;
/// tx.commit().await?;
/// # Ok(()) }
/// ```
///
/// Options apply to a whole transaction, so only a top-level one takes them
/// ([`AsyncDatabaseManager::transaction_with`](crate::AsyncDatabaseManager::transaction_with));
/// a nested transaction (a savepoint) always shares its parent's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct TransactionOptions {
    /// `ISOLATION LEVEL …`; `None` = the session default.
    pub isolation_level: Option<IsolationLevel>,
    /// `READ ONLY` (`true`) or `READ WRITE` (`false`); `None` = the session default.
    pub read_only: Option<bool>,
    /// `DEFERRABLE` (`true`) or `NOT DEFERRABLE` (`false`); `None` = the session default.
    /// It only has an effect on a serializable, read-only transaction: that one then waits
    /// for a snapshot that cannot fail with a serialization error.
    pub deferrable: Option<bool>,
}

impl TransactionOptions {
    /// The session's defaults: a plain `BEGIN`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the isolation level.
    pub fn isolation_level(mut self, level: IsolationLevel) -> Self {
        self.isolation_level = Some(level);
        self
    }

    /// Makes the transaction read-only (`true`) or read-write (`false`). A write in a
    /// read-only transaction fails with SQLSTATE `25006`.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = Some(read_only);
        self
    }

    /// Makes the transaction deferrable (`true`) or not (`false`).
    pub fn deferrable(mut self, deferrable: bool) -> Self {
        self.deferrable = Some(deferrable);
        self
    }

    /// The `BEGIN` statement that starts a transaction with these options.
    pub(crate) fn begin_sql(&self) -> String {
        let modes = [
            self.isolation_level.map(IsolationLevel::sql),
            self.read_only
                .map(|r| if r { "READ ONLY" } else { "READ WRITE" }),
            self.deferrable
                .map(|d| if d { "DEFERRABLE" } else { "NOT DEFERRABLE" }),
        ];
        let modes: Vec<&str> = modes.into_iter().flatten().collect();
        if modes.is_empty() {
            "BEGIN".to_owned()
        } else {
            format!("BEGIN {}", modes.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn begin_carries_every_option() {
        assert_eq!(TransactionOptions::new().begin_sql(), "BEGIN");
        assert_eq!(
            TransactionOptions::new()
                .isolation_level(IsolationLevel::Serializable)
                .read_only(true)
                .deferrable(true)
                .begin_sql(),
            "BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE"
        );
        assert_eq!(
            TransactionOptions::new()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(false)
                .begin_sql(),
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ WRITE"
        );
        assert_eq!(
            TransactionOptions::new().deferrable(false).begin_sql(),
            "BEGIN NOT DEFERRABLE"
        );
    }
}
