//! The public query methods, written once as a macro for the manager and transactions.

/// The public query methods, identical on the manager and on transactions.
macro_rules! query_methods {
    () => {
        /// Runs a statement; returns the number of rows affected. Without parameters it uses
        /// the simple protocol, so a script of several statements runs in one call.
        ///
        /// A session-level change (`SET`, `SET ROLE`, `set_config(..., false)`, a temporary
        /// table, `PREPARE`, `LISTEN`, a session advisory lock) lasts only until the connection
        /// goes back to the pool, where it is reset before the next caller; a `BEGIN` left
        /// open is rolled back. For a per-tenant setting or role, use
        /// [`with_settings`](crate::AsyncDatabaseManager::with_settings),
        /// [`with_role`](crate::AsyncDatabaseManager::with_role) or
        /// [`Transaction::set_local`](crate::Transaction::set_local) instead.
        ///
        /// ```no_run
        /// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
        /// let n = db.execute("DELETE FROM {{tables.users}} WHERE id = $1", &[&7_i32]).await?;
        /// # Ok(()) }
        /// ```
        pub async fn execute(&self, query: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
            crate::query::instrument::observed!(
                self,
                crate::query::instrument::Op::new(crate::query::instrument::Method::Execute, query, params),
                crate::query::execute(self, query, params),
            )
        }

        /// Runs an `INSERT` and returns its `id`, appending `RETURNING id` unless the
        /// statement already has a top-level `RETURNING` clause (the word in a string, a
        /// quoted identifier, a comment, or a CTE/subquery does not count).
        ///
        /// ```no_run
        /// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
        /// let id: i32 = db.execute_and_return_id(
        ///     "INSERT INTO {{tables.users}} (email) VALUES ($1)", &[&"a@x.org"]).await?;
        /// # Ok(()) }
        /// ```
        pub async fn execute_and_return_id<T: postgres_types::FromSqlOwned>(
            &self,
            query: &str,
            params: &[&(dyn ToSql + Sync)],
        ) -> Result<T> {
            crate::query::instrument::observed!(
                one: self,
                crate::query::instrument::Op::new(crate::query::instrument::Method::ExecuteAndReturnId, query, params),
                crate::query::execute_and_return_id(self, query, params),
            )
        }

        /// Runs one statement once per row of parameters, pipelined on one connection. Outside a
        /// transaction it runs in its own transaction: all rows or none. Returns rows affected.
        ///
        /// A plain `INSERT … VALUES ($1, …, $n)` (no `ON CONFLICT`, no `RETURNING`) goes as
        /// multi-row `INSERT`s of up to 1,024 rows, several times faster; statement-level
        /// triggers then fire once per chunk, and an error names the chunk's rows.
        ///
        /// ```no_run
        /// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
        /// db.executemany("INSERT INTO {{tables.users}} (email, name) VALUES ($1, $2)",
        ///     vec![("a@x.org", "A"), ("b@x.org", "B")]).await?;
        /// # Ok(()) }
        /// ```
        // Boxed, like `copy_records_to_table`: see there.
        pub fn executemany<'c, P, I>(
            &'c self,
            query: &'c str,
            rows: I,
        ) -> crate::query::BoxFuture<'c, Result<u64>>
        where
            P: crate::params::Params + Send + 'c,
            I: IntoIterator<Item = P> + Send + 'c,
            I::IntoIter: Send,
        {
            Box::pin(async move {
                let rows: Vec<P> = rows.into_iter().collect();
                let op = crate::query::instrument::Op {
                    batch_size: Some(rows.len()),
                    ..crate::query::instrument::Op::new(crate::query::instrument::Method::Executemany, query, &[])
                };
                crate::query::instrument::observed!(self, op, crate::query::executemany(self, query, rows))
            })
        }

        /// A [`Pipeline`](crate::Pipeline): statements queued here are sent together on one
        /// connection when it is run, each with a result of its own.
        ///
        /// ```no_run
        /// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
        /// let mut p = db.pipeline();
        /// let a = p.fetch_value::<i64>("SELECT count(*) FROM {{tables.users}}", &[]);
        /// let b = p.execute("DELETE FROM {{tables.sessions}} WHERE expires < now()", &[]);
        /// let r = p.run().await?;
        /// let (users, expired) = (r.get(a)?, r.get(b)?);
        /// # Ok(()) }
        /// ```
        pub fn pipeline(&self) -> crate::Pipeline<'_, Self> {
            crate::Pipeline::new(self, crate::query::Runner::templates(self))
        }

        /// The first column of the first row; `None` for no row and for SQL NULL.
        ///
        /// ```no_run
        /// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
        /// let count: Option<i64> = db.fetch_value("SELECT count(*) FROM {{tables.users}}", &[]).await?;
        /// # Ok(()) }
        /// ```
        pub async fn fetch_value<T: postgres_types::FromSqlOwned>(
            &self,
            query: &str,
            params: &[&(dyn ToSql + Sync)],
        ) -> Result<Option<T>> {
            crate::query::instrument::observed!(
                self,
                crate::query::instrument::Op::new(crate::query::instrument::Method::FetchValue, query, params),
                crate::query::fetch_value_at(self, query, params, 0),
            )
        }

        /// Column `column` (0-based) of the first row; `None` for no row and for SQL NULL.
        pub async fn fetch_value_at<T: postgres_types::FromSqlOwned>(
            &self,
            query: &str,
            params: &[&(dyn ToSql + Sync)],
            column: usize,
        ) -> Result<Option<T>> {
            crate::query::instrument::observed!(
                self,
                crate::query::instrument::Op::new(crate::query::instrument::Method::FetchValueAt, query, params),
                crate::query::fetch_value_at(self, query, params, column),
            )
        }

        /// The first row, if any.
        pub async fn fetch_one(
            &self,
            query: &str,
            params: &[&(dyn ToSql + Sync)],
        ) -> Result<Option<crate::Record>> {
            crate::query::instrument::observed!(
                self,
                crate::query::instrument::Op::new(crate::query::instrument::Method::FetchOne, query, params),
                crate::query::fetch_one(self, query, params),
            )
        }

        /// All rows.
        pub async fn fetch_all(
            &self,
            query: &str,
            params: &[&(dyn ToSql + Sync)],
        ) -> Result<Vec<crate::Record>> {
            crate::query::instrument::observed!(
                self,
                crate::query::instrument::Op::new(crate::query::instrument::Method::FetchAll, query, params),
                crate::query::fetch_all(self, query, params),
            )
        }

        /// The first row deserialized into `T` through serde, each field from the column of
        /// its serde name (`#[serde(rename = "...")]`; `#[pgdbm(...)]` attributes serve
        /// [`fetch_one_as`](Self::fetch_one_as) instead). A field with no column, while the row
        /// has a column that no field reads, is [`Error::Decode`](crate::Error::Decode) naming
        /// the field and listing the row's columns (a misspelt field, or a column named only by
        /// `#[pgdbm(rename)]`); when every column is read, an absent one follows serde's rules
        /// (`Option` gives `None`, `#[serde(default)]` its default). A struct with a
        /// `#[serde(flatten)]` field is read as a map and is not checked.
        ///
        /// ```no_run
        /// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
        /// #[derive(serde::Deserialize)]
        /// struct User { id: i32, email: String }
        /// let u: Option<User> = db.fetch_as_model("SELECT * FROM {{tables.users}} WHERE id = $1", &[&1_i32]).await?;
        /// # Ok(()) }
        /// ```
        pub async fn fetch_as_model<T: serde::de::DeserializeOwned>(
            &self,
            query: &str,
            params: &[&(dyn ToSql + Sync)],
        ) -> Result<Option<T>> {
            crate::query::instrument::observed!(
                self,
                crate::query::instrument::Op::new(crate::query::instrument::Method::FetchAsModel, query, params),
                crate::query::fetch_one_mapped(self, query, params, |r| {
                    crate::de::from_row(r.as_row())
                }),
            )
        }

        /// All rows deserialized into `T`; fields follow serde's names, strictly, as in
        /// [`fetch_as_model`](Self::fetch_as_model).
        pub async fn fetch_all_as_model<T: serde::de::DeserializeOwned>(
            &self,
            query: &str,
            params: &[&(dyn ToSql + Sync)],
        ) -> Result<Vec<T>> {
            crate::query::instrument::observed!(
                self,
                crate::query::instrument::Op::new(crate::query::instrument::Method::FetchAllAsModel, query, params),
                crate::query::fetch_all_mapped(self, query, params, |r| {
                    crate::de::from_row(r.as_row())
                }),
            )
        }

        /// The first row as `T` through its [`FromRow`](crate::FromRow) impl: each field decoded
        /// straight from the wire, the fastest typed fetch. `None` when there is no row. Fields
        /// follow the `#[pgdbm(...)]` attributes (`rename`, `default`, `json`, `flatten`,
        /// `skip`); serde's attributes serve [`fetch_as_model`](Self::fetch_as_model).
        ///
        /// ```no_run
        /// #[derive(pgdbm::FromRow)]
        /// struct User { id: i32, email: String }
        /// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
        /// let user: Option<User> = db
        ///     .fetch_one_as("SELECT id, email FROM {{tables.users}} WHERE id = $1", &[&1_i32])
        ///     .await?;
        /// # Ok(()) }
        /// ```
        pub async fn fetch_one_as<T: crate::FromRow>(
            &self,
            query: &str,
            params: &[&(dyn ToSql + Sync)],
        ) -> Result<Option<T>> {
            crate::query::instrument::observed!(
                self,
                crate::query::instrument::Op::new(crate::query::instrument::Method::FetchOneAs, query, params),
                crate::query::fetch_one_mapped(self, query, params, |r| T::from_row(&r)),
            )
        }

        /// The one row of a query that must return exactly one (an `INSERT … RETURNING`, a
        /// lookup by key): [`Error::RowCount`](crate::Error::RowCount), which says "no row" or
        /// how many, otherwise. The whole result is read to count it.
        ///
        /// ```no_run
        /// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
        /// let row = db
        ///     .fetch_exactly_one("INSERT INTO {{tables.users}} (email) VALUES ($1) RETURNING id", &[&"a@x.org"])
        ///     .await?;
        /// let id: i32 = row.get("id")?;
        /// # Ok(()) }
        /// ```
        pub async fn fetch_exactly_one(
            &self,
            query: &str,
            params: &[&(dyn ToSql + Sync)],
        ) -> Result<crate::Record> {
            crate::query::instrument::observed!(
                one: self,
                crate::query::instrument::Op::new(crate::query::instrument::Method::FetchExactlyOne, query, params),
                crate::query::fetch_exactly_one(self, query, params),
            )
        }

        /// [`fetch_exactly_one`](Self::fetch_exactly_one) as `T` through its
        /// [`FromRow`](crate::FromRow) impl.
        pub async fn fetch_exactly_one_as<T: crate::FromRow>(
            &self,
            query: &str,
            params: &[&(dyn ToSql + Sync)],
        ) -> Result<T> {
            crate::query::instrument::observed!(
                one: self,
                crate::query::instrument::Op::new(crate::query::instrument::Method::FetchExactlyOneAs, query, params),
                async { T::from_row(&crate::query::fetch_exactly_one(self, query, params).await?) },
            )
        }

        /// All rows as `T` through its [`FromRow`](crate::FromRow) impl.
        pub async fn fetch_all_as<T: crate::FromRow>(
            &self,
            query: &str,
            params: &[&(dyn ToSql + Sync)],
        ) -> Result<Vec<T>> {
            crate::query::instrument::observed!(
                self,
                crate::query::instrument::Op::new(crate::query::instrument::Method::FetchAllAs, query, params),
                crate::query::fetch_all_mapped(self, query, params, |r| T::from_row(&r)),
            )
        }

        /// The first column of every row (`SELECT id FROM …` → `Vec<i64>`); SQL NULLs need
        /// `T = Option<_>`.
        ///
        /// ```no_run
        /// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
        /// let ids: Vec<i32> = db.fetch_column("SELECT id FROM {{tables.users}} ORDER BY id", &[]).await?;
        /// # Ok(()) }
        /// ```
        pub async fn fetch_column<T: postgres_types::FromSqlOwned>(
            &self,
            query: &str,
            params: &[&(dyn ToSql + Sync)],
        ) -> Result<Vec<T>> {
            crate::query::instrument::observed!(
                self,
                crate::query::instrument::Op::new(crate::query::instrument::Method::FetchColumn, query, params),
                crate::query::fetch_all_mapped(self, query, params, |r| r.get::<T>(0)),
            )
        }

        /// Rows one at a time, for results too large to hold in memory. The connection is held
        /// until the stream ends or is dropped. The call's timeout covers the wait for the first
        /// row (counted from the call) and then each wait for the next row: on expiry the stream
        /// yields [`Error::Timeout`](crate::Error::Timeout) and ends. A stream dropped before
        /// its end cancels its query on the server.
        ///
        /// ```no_run
        /// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
        /// use futures_util::TryStreamExt;
        /// let rows = db.fetch_stream("SELECT * FROM {{tables.events}}", &[]).await?;
        /// futures_util::pin_mut!(rows);
        /// while let Some(row) = rows.try_next().await? {
        ///     let id: i64 = row.get("id")?;
        /// }
        /// # Ok(()) }
        /// ```
        pub async fn fetch_stream(
            &self,
            query: &str,
            params: &[&(dyn ToSql + Sync)],
        ) -> Result<impl futures_util::Stream<Item = Result<crate::Record>> + Send + '_> {
            crate::query::instrument::observed!(stream:
                self,
                crate::query::instrument::Op::new(crate::query::instrument::Method::FetchStream, query, params),
                crate::query::stream_rows(self, query, params),
            )
        }

        /// Bulk-loads rows with binary `COPY`. `table` is a plain name (the manager's schema is
        /// applied) or `schema.table`; values are encoded as the table's column types. Returns
        /// the number of rows copied. Outside a transaction it is all-or-nothing.
        ///
        /// A value is widened to its column's type where that loses nothing: `i16`/`i32`
        /// into `bigint`, `i16` into `integer`, `f32` (and `i16`/`i32`) into `double
        /// precision`, `i16`/`i32`/`i64` into `numeric`. Anything else that does not match, a
        /// narrowing (`i64` into `integer`) included, is an error naming the column, its type
        /// and the Rust type. Rows may borrow (`&str` from the caller's data), also in a
        /// spawned task.
        ///
        /// ```no_run
        /// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
        /// let n = db.copy_records_to_table("users", vec![("c@x.org", "C")], Some(&["email", "name"])).await?;
        ///
        /// struct User { id: i64, email: String }
        /// let users: Vec<User> = Vec::new();
        /// db.copy_records_to_table("users", users.iter().map(|u| (u.id, u.email.as_str())),
        ///     Some(&["id", "email"])).await?;
        /// # Ok(()) }
        /// ```
        // The future is boxed (and so `Send` by its type): generic over rows that borrow, an
        // unboxed one makes the caller's future fail `tokio::spawn`'s `Send` check (a rustc
        // limitation with higher-ranked lifetimes, "FnOnce is not general enough").
        pub fn copy_records_to_table<'c, P, I>(
            &'c self,
            table: &'c str,
            records: I,
            columns: Option<&'c [&'c str]>,
        ) -> crate::query::BoxFuture<'c, Result<u64>>
        where
            P: crate::params::Params + Send + 'c,
            I: IntoIterator<Item = P> + Send + 'c,
            I::IntoIter: Send,
        {
            Box::pin(async move {
                let op = crate::query::instrument::Op {
                    text: crate::query::instrument::Text::CopyInto(table),
                    ..crate::query::instrument::Op::new(crate::query::instrument::Method::CopyRecordsToTable, table, &[])
                };
                crate::query::instrument::observed!(
                    self,
                    op,
                    crate::query::copy_records_to_table(self, table, records, columns),
                )
            })
        }

        /// Streams CSV from `reader` (a file, a request body, anything `AsyncRead`) into
        /// `table` with `COPY … FROM STDIN (FORMAT csv)`. `table` is a plain name (the
        /// manager's schema is applied) or `schema.table`; `columns` are the CSV's columns in
        /// order (`None`: all, in table order); `header`: the first line holds column names and
        /// is skipped. Returns the number of rows written. All-or-nothing: a malformed line is an
        /// [`Error::Query`](crate::Error::Query) with the server's SQLSTATE (its `params` name
        /// the line), a failing reader is [`Error::Io`](crate::Error::Io), and nothing is
        /// written. The call's timeout covers the whole load.
        ///
        /// ```no_run
        /// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
        /// let csv: &[u8] = b"email,name\na@x.org,A\nb@x.org,B\n";
        /// let n = db.copy_from_csv("users", Some(&["email", "name"]), true, csv).await?;
        /// assert_eq!(n, 2);
        /// # Ok(()) }
        /// ```
        pub async fn copy_from_csv<R>(
            &self,
            table: &str,
            columns: Option<&[&str]>,
            header: bool,
            reader: R,
        ) -> Result<u64>
        where
            R: tokio::io::AsyncRead + Unpin + Send,
        {
            let format = crate::CopyFormat::Csv { header };
            let op = crate::query::instrument::Op {
                text: crate::query::instrument::Text::CopyCsvInto(table),
                ..crate::query::instrument::Op::new(crate::query::instrument::Method::CopyFromCsv, table, &[])
            };
            crate::query::instrument::observed!(
                self,
                op,
                crate::query::copy_from(self, table, columns, format, reader),
            )
        }

        /// Exports with `COPY … TO STDOUT`: a stream of bytes in `format` (CSV, text or
        /// binary). `source` is a table name (`users`, `schema.users`) or a query (`SELECT …`,
        /// templates applied; COPY takes no parameters). The timeout covers the wait for the
        /// first chunk and then each wait for the next one; a stream dropped before its end
        /// cancels the COPY on the server, and its connection is reused only once idle.
        ///
        /// ```no_run
        /// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
        /// use futures_util::TryStreamExt;
        /// use pgdbm::CopyFormat;
        /// let csv = db
        ///     .copy_to("SELECT id, email FROM {{tables.users}} ORDER BY id", CopyFormat::Csv { header: true })
        ///     .await?;
        /// let chunks: Vec<bytes::Bytes> = csv.try_collect().await?;
        /// # Ok(()) }
        /// ```
        pub async fn copy_to(
            &self,
            source: &str,
            format: crate::CopyFormat,
        ) -> Result<impl futures_util::Stream<Item = Result<bytes::Bytes>> + Send + '_> {
            let sql = || crate::query::copy_out_sql(self, source, format).ok();
            crate::query::instrument::observed!(stream:
                self,
                crate::query::instrument::Op::copy_out(crate::query::instrument::Method::CopyTo, source, &sql),
                crate::query::copy_to(self, source, format),
            )
        }

        /// Whether a table (or view) exists: `name` in the manager's schema (`public` without
        /// one), or `schema.name`.
        pub async fn table_exists(&self, name: &str) -> Result<bool> {
            crate::query::instrument::observed!(
                self,
                crate::query::instrument::Op::new(
                    crate::query::instrument::Method::TableExists,
                    crate::query::TABLE_EXISTS,
                    &[],
                ),
                crate::query::table_exists(self, name),
            )
        }

        /// The query with templates applied, as it would be sent.
        ///
        /// ```
        /// let db = pgdbm::AsyncDatabaseManager::new(pgdbm::DatabaseConfig {
        ///     schema: Some("app".into()), ..Default::default() }).unwrap();
        /// assert_eq!(db.prepare_query("SELECT * FROM {{tables.users}}").unwrap(), r#"SELECT * FROM "app".users"#);
        /// ```
        pub fn prepare_query(&self, query: &str) -> Result<String> {
            Ok(crate::query::Runner::templates(self)
                .render(query)?
                .into_owned())
        }
    };
}

pub(crate) use query_methods;
