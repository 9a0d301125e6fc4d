//! A library that ships its own migrations inside its binary and works in "dual mode": it
//! either owns its database connection or borrows the host application's pool, and in both
//! cases keeps its tables in a schema of its own.
//!
//! ```sh
//! cargo run -p pgdbm --example migrations_embedded
//! DATABASE_URL=postgresql://user:pass@host:5432/db cargo run -p pgdbm --example migrations_embedded
//! ```

/// What would be a separate crate (`billing`) in a real project.
mod billing {
    use pgdbm::{
        AsyncDatabaseManager, AsyncMigrationManager, DatabaseConfig, EmbeddedMigrations, Pool,
    };

    /// Compiled into the binary: the library needs no files at run time. (A real crate would
    /// use "$CARGO_MANIFEST_DIR/migrations" and add `cargo:rerun-if-changed=migrations` to its
    /// build.rs so that new files are picked up.)
    static MIGRATIONS: EmbeddedMigrations =
        pgdbm::embed_migrations!("$CARGO_MANIFEST_DIR/examples/billing_migrations");

    /// The module name the library records its migrations under, whatever the schema.
    const MODULE: &str = "billing";

    /// The library's handle.
    pub struct Billing {
        db: AsyncDatabaseManager,
    }

    impl Billing {
        /// Standalone mode: the library owns its pool (and its schema, from `config.schema`).
        pub async fn standalone(config: DatabaseConfig) -> pgdbm::Result<Self> {
            let db = AsyncDatabaseManager::new(config)?;
            db.connect().await?;
            Self::install(db).await
        }

        /// Embedded mode: the host application lends its pool; the library stays in `schema`.
        pub async fn with_pool(pool: Pool, schema: &str) -> pgdbm::Result<Self> {
            Self::install(AsyncDatabaseManager::from_pool(pool, Some(schema))?).await
        }

        async fn install(db: AsyncDatabaseManager) -> pgdbm::Result<Self> {
            let report = AsyncMigrationManager::from_embedded(&db, MIGRATIONS)
                .module_name(MODULE)?
                .apply_pending_migrations()
                .await?;
            println!(
                "billing in schema {:?}: applied {:?}, already there {:?}",
                db.schema().unwrap_or("public"),
                report
                    .applied
                    .iter()
                    .map(|a| &a.filename)
                    .collect::<Vec<_>>(),
                report.skipped
            );
            Ok(Billing { db })
        }

        /// Records an invoice; returns its id.
        pub async fn charge(&self, customer: &str, cents: i32) -> pgdbm::Result<i32> {
            self.db
                .execute_and_return_id(
                    "INSERT INTO {{tables.invoices}} (customer, amount_cents) VALUES ($1, $2)",
                    &[&customer, &cents],
                )
                .await
        }

        /// The customer's total in cents.
        pub async fn total(&self, customer: &str) -> pgdbm::Result<i64> {
            let total: Option<i64> = self
                .db
                .fetch_value(
                    "SELECT coalesce(sum(amount_cents), 0)::int8 FROM {{tables.invoices}} WHERE customer = $1",
                    &[&customer],
                )
                .await?;
            Ok(total.unwrap_or(0))
        }

        /// The manager, for cleanup in this example.
        pub fn db(&self) -> &AsyncDatabaseManager {
            &self.db
        }
    }
}

use pgdbm::{AsyncDatabaseManager, DatabaseConfig};

#[tokio::main]
async fn main() -> pgdbm::Result<()> {
    // DATABASE_URL, else the local server, else a throwaway one (feature `testing`).
    let url = pgdbm::testing::server_url()?;
    let config = DatabaseConfig {
        connection_string: Some(url),
        min_connections: 1,
        max_connections: 4,
        ..Default::default()
    };
    let hosted_schema = format!("billing_hosted_{}", std::process::id());
    let own_schema = format!("billing_own_{}", std::process::id());

    // 1. The host application shares its pool; the library migrates its own schema.
    let pool = AsyncDatabaseManager::create_shared_pool(&config).await?;
    let hosted = billing::Billing::with_pool(pool.clone(), &hosted_schema).await?;
    // 2. The same library on its own.
    let own = billing::Billing::standalone(DatabaseConfig {
        schema: Some(own_schema.clone()),
        ..config.clone()
    })
    .await?;

    let result = async {
        hosted.charge("ada", 1200).await?;
        hosted.charge("ada", 300).await?;
        own.charge("ada", 50).await?;
        println!("hosted total for ada: {} cents", hosted.total("ada").await?);
        println!(
            "standalone total for ada: {} cents",
            own.total("ada").await?
        );
        // Installing again applies nothing: the files are recorded.
        billing::Billing::with_pool(pool.clone(), &hosted_schema).await?;
        Ok::<_, pgdbm::Error>(())
    }
    .await;

    // Clean up even when the tour failed.
    let admin = AsyncDatabaseManager::from_pool(pool.clone(), None)?;
    for schema in [&hosted_schema, &own_schema] {
        admin
            .execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"), &[])
            .await?;
    }
    own.db().disconnect().await?;
    pool.close();
    println!("dropped schemas {hosted_schema:?} and {own_schema:?}");
    result
}
