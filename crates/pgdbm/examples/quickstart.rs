//! pgdbm quickstart: a schema-isolated manager on the local server.
//!
//! ```sh
//! cargo run --example quickstart
//! DATABASE_URL=postgresql://user:pass@host:5432/db cargo run --example quickstart
//! ```

use pgdbm::{AsyncDatabaseManager, DatabaseConfig};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct User {
    id: i32,
    email: String,
    name: Option<String>,
}

#[tokio::main]
async fn main() -> pgdbm::Result<()> {
    // DATABASE_URL; else the local server on 127.0.0.1:5432; else, on a machine that has only
    // the PostgreSQL binaries, a throwaway server for this run (feature `testing`).
    let url = pgdbm::testing::server_url()?;
    let schema = format!("quickstart_{}", std::process::id());
    let db = AsyncDatabaseManager::new(DatabaseConfig {
        connection_string: Some(url),
        schema: Some(schema.clone()),
        min_connections: 1,
        max_connections: 4,
        ..Default::default()
    })?;
    db.connect().await?;
    println!("connected; working in schema {schema:?}");

    let result = tour(&db).await;

    // Clean up even when the tour failed.
    db.execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"), &[])
        .await?;
    db.disconnect().await?;
    println!("dropped schema {schema:?} and disconnected");
    result
}

async fn tour(db: &AsyncDatabaseManager) -> pgdbm::Result<()> {
    db.execute(
        "CREATE TABLE {{tables.users}} (id serial PRIMARY KEY, email text UNIQUE NOT NULL, name text)",
        &[],
    )
    .await?;
    println!(
        "rendered: {}",
        db.prepare_query("SELECT * FROM {{tables.users}}")?
    );

    let id: i32 = db
        .execute_and_return_id(
            "INSERT INTO {{tables.users}} (email, name) VALUES ($1, $2)",
            &[&"alice@example.com", &"Alice"],
        )
        .await?;
    println!("inserted alice with id {id}");

    let n = db
        .executemany(
            "INSERT INTO {{tables.users}} (email, name) VALUES ($1, $2)",
            vec![("bob@example.com", "Bob"), ("carol@example.com", "Carol")],
        )
        .await?;
    println!("executemany inserted {n} rows");

    let records: Vec<(String, Option<String>)> = (0..1000)
        .map(|i| (format!("bulk{i}@example.com"), None))
        .collect();
    let copied = db
        .copy_records_to_table("users", records, Some(&["email", "name"]))
        .await?;
    println!("COPY loaded {copied} rows");

    let tx = db.transaction().await?;
    tx.execute(
        "UPDATE {{tables.users}} SET name = 'Alice A.' WHERE id = $1",
        &[&id],
    )
    .await?;
    {
        let sp = tx.transaction().await?;
        sp.execute("DELETE FROM {{tables.users}}", &[]).await?;
        sp.rollback().await?; // the DELETE is undone, the UPDATE stays
    }
    tx.commit().await?;

    let count: Option<i64> = db
        .fetch_value("SELECT count(*) FROM {{tables.users}}", &[])
        .await?;
    println!("users after the nested transaction: {}", count.unwrap_or(0));

    let alice: Option<User> = db
        .fetch_as_model(
            "SELECT id, email, name FROM {{tables.users}} WHERE id = $1",
            &[&id],
        )
        .await?;
    if let Some(u) = &alice {
        println!("typed row: id={} email={} name={:?}", u.id, u.email, u.name);
    }
    let named: Vec<User> = db
        .fetch_all_as_model(
            "SELECT id, email, name FROM {{tables.users}} WHERE name IS NOT NULL ORDER BY id",
            &[],
        )
        .await?;
    println!(
        "{} named users: {:?}",
        named.len(),
        named.iter().map(|u| &u.email).collect::<Vec<_>>()
    );

    let row = db
        .fetch_one("SELECT * FROM {{tables.users}} WHERE id = $1", &[&id])
        .await?;
    if let Some(row) = row {
        println!(
            "as JSON: {}",
            serde_json::to_string(&row).expect("a record serializes")
        );
        let _: i32 = row.get("id")?;
    }

    let stats = db.get_pool_stats().await?;
    println!(
        "pool: status={} size={} free={} used={} max={} server={}",
        stats.status,
        stats.size,
        stats.free_size,
        stats.used_size,
        stats.max_size,
        stats
            .version
            .as_deref()
            .unwrap_or("?")
            .split(" on ")
            .next()
            .unwrap_or("?")
    );
    Ok(())
}
