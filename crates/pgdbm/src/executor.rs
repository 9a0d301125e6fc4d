//! [`Executor`]: the query methods as a trait, so one function can take the manager, a timed
//! view of it, or a transaction.

use std::future::Future;

use bytes::Bytes;
use futures_util::Stream;
use postgres_types::FromSqlOwned;
use tokio::io::AsyncRead;
use tokio_postgres::types::ToSql;

use crate::error::Result;
use crate::manager::AsyncDatabaseManager;
use crate::params::Params;
use crate::query::BoxFuture;
use crate::record::Record;
use crate::transaction::Transaction;
use crate::{CopyFormat, FromRow};

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::AsyncDatabaseManager {}
    impl Sealed for crate::Transaction<'_> {}
}

/// Anything that runs queries: [`AsyncDatabaseManager`] (also its
/// [`with_timeout`](AsyncDatabaseManager::with_timeout) views) and [`Transaction`] (also
/// savepoints). Like tokio-postgres's `GenericClient`, it lets a function, or a library that
/// either owns its database or borrows the host application's pool, work inside or outside a
/// transaction alike. The methods behave exactly as the inherent ones of the same name.
///
/// ```no_run
/// use pgdbm::{Executor, Result};
///
/// async fn add_user(db: &impl Executor, email: &str) -> Result<i32> {
///     db.execute_and_return_id("INSERT INTO {{tables.users}} (email) VALUES ($1)", &[&email]).await
/// }
///
/// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> Result<()> {
/// add_user(db, "a@x.org").await?;                       // autocommit
/// let tx = db.transaction().await?;
/// add_user(&tx, "b@x.org").await?;                      // inside the transaction
/// tx.commit().await?;
/// # Ok(()) }
/// ```
///
/// The methods generic over their result type (`fetch_value`, `execute_and_return_id`,
/// `fetch_*_as`, ...) return boxed futures: unboxed, a generic helper like `add_user` above
/// could not be called inside `tokio::spawn`, an axum handler or a `transaction_with_retry`
/// closure (rustc's "lifetime bound not satisfied", issue 100013). This compiles:
///
/// ```no_run
/// # use pgdbm::{Executor, Result};
/// # async fn add_user(db: &impl Executor, email: &str) -> Result<i32> {
/// #     db.execute_and_return_id("INSERT INTO {{tables.users}} (email) VALUES ($1)", &[&email]).await
/// # }
/// # async fn f(db: pgdbm::AsyncDatabaseManager) -> Result<()> {
/// let id = tokio::spawn(async move { add_user(&db, "c@x.org").await }).await.unwrap()?;
/// # Ok(()) }
/// ```
pub trait Executor: Send + Sync + sealed::Sealed {
    /// See [`AsyncDatabaseManager::execute`].
    fn execute<'a>(
        &'a self,
        query: &'a str,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<u64>> + Send + 'a;

    /// See [`AsyncDatabaseManager::execute_and_return_id`].
    fn execute_and_return_id<'a, T: FromSqlOwned + Send + 'a>(
        &'a self,
        query: &'a str,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> BoxFuture<'a, Result<T>>;

    /// See [`AsyncDatabaseManager::executemany`].
    fn executemany<'a, P, I>(&'a self, query: &'a str, rows: I) -> BoxFuture<'a, Result<u64>>
    where
        P: Params + Send + 'a,
        I: IntoIterator<Item = P> + Send + 'a,
        I::IntoIter: Send;

    /// See [`AsyncDatabaseManager::fetch_value`].
    fn fetch_value<'a, T: FromSqlOwned + Send + 'a>(
        &'a self,
        query: &'a str,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> BoxFuture<'a, Result<Option<T>>>;

    /// See [`AsyncDatabaseManager::fetch_value_at`].
    fn fetch_value_at<'a, T: FromSqlOwned + Send + 'a>(
        &'a self,
        query: &'a str,
        params: &'a [&'a (dyn ToSql + Sync)],
        column: usize,
    ) -> BoxFuture<'a, Result<Option<T>>>;

    /// See [`AsyncDatabaseManager::fetch_one`].
    fn fetch_one<'a>(
        &'a self,
        query: &'a str,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Option<Record>>> + Send + 'a;

    /// See [`AsyncDatabaseManager::fetch_all`].
    fn fetch_all<'a>(
        &'a self,
        query: &'a str,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Vec<Record>>> + Send + 'a;

    /// See [`AsyncDatabaseManager::fetch_as_model`].
    fn fetch_as_model<'a, T: serde::de::DeserializeOwned + Send + 'a>(
        &'a self,
        query: &'a str,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> BoxFuture<'a, Result<Option<T>>>;

    /// See [`AsyncDatabaseManager::fetch_all_as_model`].
    fn fetch_all_as_model<'a, T: serde::de::DeserializeOwned + Send + 'a>(
        &'a self,
        query: &'a str,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> BoxFuture<'a, Result<Vec<T>>>;

    /// See [`AsyncDatabaseManager::fetch_one_as`].
    fn fetch_one_as<'a, T: FromRow + Send + 'a>(
        &'a self,
        query: &'a str,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> BoxFuture<'a, Result<Option<T>>>;

    /// See [`AsyncDatabaseManager::fetch_all_as`].
    fn fetch_all_as<'a, T: FromRow + Send + 'a>(
        &'a self,
        query: &'a str,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> BoxFuture<'a, Result<Vec<T>>>;

    /// See [`AsyncDatabaseManager::fetch_exactly_one`].
    fn fetch_exactly_one<'a>(
        &'a self,
        query: &'a str,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Record>> + Send + 'a;

    /// See [`AsyncDatabaseManager::fetch_exactly_one_as`].
    fn fetch_exactly_one_as<'a, T: FromRow + Send + 'a>(
        &'a self,
        query: &'a str,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> BoxFuture<'a, Result<T>>;

    /// See [`AsyncDatabaseManager::fetch_column`].
    fn fetch_column<'a, T: FromSqlOwned + Send + 'a>(
        &'a self,
        query: &'a str,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> BoxFuture<'a, Result<Vec<T>>>;

    /// See [`AsyncDatabaseManager::fetch_stream`].
    fn fetch_stream<'a>(
        &'a self,
        query: &'a str,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<impl Stream<Item = Result<Record>> + Send + 'a>> + Send + 'a;

    /// See [`AsyncDatabaseManager::copy_records_to_table`].
    fn copy_records_to_table<'a, P, I>(
        &'a self,
        table: &'a str,
        records: I,
        columns: Option<&'a [&'a str]>,
    ) -> BoxFuture<'a, Result<u64>>
    where
        P: Params + Send + 'a,
        I: IntoIterator<Item = P> + Send + 'a,
        I::IntoIter: Send;

    /// See [`AsyncDatabaseManager::copy_from_csv`].
    fn copy_from_csv<'a, R>(
        &'a self,
        table: &'a str,
        columns: Option<&'a [&'a str]>,
        header: bool,
        reader: R,
    ) -> BoxFuture<'a, Result<u64>>
    where
        R: AsyncRead + Unpin + Send + 'a;

    /// See [`AsyncDatabaseManager::copy_to`].
    fn copy_to<'a>(
        &'a self,
        source: &'a str,
        format: CopyFormat,
    ) -> impl Future<Output = Result<impl Stream<Item = Result<Bytes>> + Send + 'a>> + Send + 'a;

    /// See [`AsyncDatabaseManager::table_exists`].
    fn table_exists<'a>(&'a self, name: &'a str) -> impl Future<Output = Result<bool>> + Send + 'a;

    /// A transaction: a new one on the manager, a savepoint inside a transaction.
    fn transaction(&self) -> impl Future<Output = Result<Transaction<'_>>> + Send + '_;

    /// See [`AsyncDatabaseManager::prepare_query`].
    fn prepare_query(&self, query: &str) -> Result<String>;

    /// See [`AsyncDatabaseManager::notify`]; inside a transaction, delivered on commit.
    fn notify<'a>(
        &'a self,
        channel: &'a str,
        payload: &'a str,
    ) -> impl Future<Output = Result<()>> + Send + 'a;

    /// See [`AsyncDatabaseManager::notify_raw`].
    fn notify_raw<'a>(
        &'a self,
        channel: &'a str,
        payload: &'a str,
    ) -> impl Future<Output = Result<()>> + Send + 'a;
}

macro_rules! executor_impl {
    ($ty:ty) => {
        impl Executor for $ty {
            fn execute<'a>(
                &'a self,
                query: &'a str,
                params: &'a [&'a (dyn ToSql + Sync)],
            ) -> impl Future<Output = Result<u64>> + Send + 'a {
                <$ty>::execute(self, query, params)
            }

            fn execute_and_return_id<'a, T: FromSqlOwned + Send + 'a>(
                &'a self,
                query: &'a str,
                params: &'a [&'a (dyn ToSql + Sync)],
            ) -> BoxFuture<'a, Result<T>> {
                Box::pin(<$ty>::execute_and_return_id(self, query, params))
            }

            fn executemany<'a, P, I>(
                &'a self,
                query: &'a str,
                rows: I,
            ) -> BoxFuture<'a, Result<u64>>
            where
                P: Params + Send + 'a,
                I: IntoIterator<Item = P> + Send + 'a,
                I::IntoIter: Send,
            {
                <$ty>::executemany(self, query, rows)
            }

            fn fetch_value<'a, T: FromSqlOwned + Send + 'a>(
                &'a self,
                query: &'a str,
                params: &'a [&'a (dyn ToSql + Sync)],
            ) -> BoxFuture<'a, Result<Option<T>>> {
                Box::pin(<$ty>::fetch_value(self, query, params))
            }

            fn fetch_value_at<'a, T: FromSqlOwned + Send + 'a>(
                &'a self,
                query: &'a str,
                params: &'a [&'a (dyn ToSql + Sync)],
                column: usize,
            ) -> BoxFuture<'a, Result<Option<T>>> {
                Box::pin(<$ty>::fetch_value_at(self, query, params, column))
            }

            fn fetch_one<'a>(
                &'a self,
                query: &'a str,
                params: &'a [&'a (dyn ToSql + Sync)],
            ) -> impl Future<Output = Result<Option<Record>>> + Send + 'a {
                <$ty>::fetch_one(self, query, params)
            }

            fn fetch_all<'a>(
                &'a self,
                query: &'a str,
                params: &'a [&'a (dyn ToSql + Sync)],
            ) -> impl Future<Output = Result<Vec<Record>>> + Send + 'a {
                <$ty>::fetch_all(self, query, params)
            }

            fn fetch_as_model<'a, T: serde::de::DeserializeOwned + Send + 'a>(
                &'a self,
                query: &'a str,
                params: &'a [&'a (dyn ToSql + Sync)],
            ) -> BoxFuture<'a, Result<Option<T>>> {
                Box::pin(<$ty>::fetch_as_model(self, query, params))
            }

            fn fetch_all_as_model<'a, T: serde::de::DeserializeOwned + Send + 'a>(
                &'a self,
                query: &'a str,
                params: &'a [&'a (dyn ToSql + Sync)],
            ) -> BoxFuture<'a, Result<Vec<T>>> {
                Box::pin(<$ty>::fetch_all_as_model(self, query, params))
            }

            fn fetch_one_as<'a, T: FromRow + Send + 'a>(
                &'a self,
                query: &'a str,
                params: &'a [&'a (dyn ToSql + Sync)],
            ) -> BoxFuture<'a, Result<Option<T>>> {
                Box::pin(<$ty>::fetch_one_as(self, query, params))
            }

            fn fetch_all_as<'a, T: FromRow + Send + 'a>(
                &'a self,
                query: &'a str,
                params: &'a [&'a (dyn ToSql + Sync)],
            ) -> BoxFuture<'a, Result<Vec<T>>> {
                Box::pin(<$ty>::fetch_all_as(self, query, params))
            }

            fn fetch_exactly_one<'a>(
                &'a self,
                query: &'a str,
                params: &'a [&'a (dyn ToSql + Sync)],
            ) -> impl Future<Output = Result<Record>> + Send + 'a {
                <$ty>::fetch_exactly_one(self, query, params)
            }

            fn fetch_exactly_one_as<'a, T: FromRow + Send + 'a>(
                &'a self,
                query: &'a str,
                params: &'a [&'a (dyn ToSql + Sync)],
            ) -> BoxFuture<'a, Result<T>> {
                Box::pin(<$ty>::fetch_exactly_one_as(self, query, params))
            }

            fn fetch_column<'a, T: FromSqlOwned + Send + 'a>(
                &'a self,
                query: &'a str,
                params: &'a [&'a (dyn ToSql + Sync)],
            ) -> BoxFuture<'a, Result<Vec<T>>> {
                Box::pin(<$ty>::fetch_column(self, query, params))
            }

            fn fetch_stream<'a>(
                &'a self,
                query: &'a str,
                params: &'a [&'a (dyn ToSql + Sync)],
            ) -> impl Future<Output = Result<impl Stream<Item = Result<Record>> + Send + 'a>>
                   + Send
                   + 'a {
                <$ty>::fetch_stream(self, query, params)
            }

            fn copy_records_to_table<'a, P, I>(
                &'a self,
                table: &'a str,
                records: I,
                columns: Option<&'a [&'a str]>,
            ) -> BoxFuture<'a, Result<u64>>
            where
                P: Params + Send + 'a,
                I: IntoIterator<Item = P> + Send + 'a,
                I::IntoIter: Send,
            {
                <$ty>::copy_records_to_table(self, table, records, columns)
            }

            fn copy_from_csv<'a, R>(
                &'a self,
                table: &'a str,
                columns: Option<&'a [&'a str]>,
                header: bool,
                reader: R,
            ) -> BoxFuture<'a, Result<u64>>
            where
                R: AsyncRead + Unpin + Send + 'a,
            {
                Box::pin(<$ty>::copy_from_csv(self, table, columns, header, reader))
            }

            fn copy_to<'a>(
                &'a self,
                source: &'a str,
                format: CopyFormat,
            ) -> impl Future<Output = Result<impl Stream<Item = Result<Bytes>> + Send + 'a>>
                   + Send
                   + 'a {
                <$ty>::copy_to(self, source, format)
            }

            fn table_exists<'a>(
                &'a self,
                name: &'a str,
            ) -> impl Future<Output = Result<bool>> + Send + 'a {
                <$ty>::table_exists(self, name)
            }

            fn transaction(&self) -> impl Future<Output = Result<Transaction<'_>>> + Send + '_ {
                async move {
                    // The manager's transaction is `'static`; narrow it to the trait's lifetime.
                    let tx: Transaction<'_> = <$ty>::transaction(self).await?;
                    Ok(tx)
                }
            }

            fn prepare_query(&self, query: &str) -> Result<String> {
                <$ty>::prepare_query(self, query)
            }

            fn notify<'a>(
                &'a self,
                channel: &'a str,
                payload: &'a str,
            ) -> impl Future<Output = Result<()>> + Send + 'a {
                crate::query::notify::notify(self, channel, payload)
            }

            fn notify_raw<'a>(
                &'a self,
                channel: &'a str,
                payload: &'a str,
            ) -> impl Future<Output = Result<()>> + Send + 'a {
                crate::query::notify::notify_raw(self, channel, payload)
            }
        }
    };
}

executor_impl!(AsyncDatabaseManager);
executor_impl!(Transaction<'_>);
