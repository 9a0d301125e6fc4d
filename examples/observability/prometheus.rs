//! pgdbm's metrics (feature `metrics`) served in Prometheus text: operation durations by
//! operation and table, and the pool's connections, waiters and waits.
//!
//! ```text
//! cargo run -p pgdbm-observability-examples --bin prometheus            # prints one scrape
//! cargo run -p pgdbm-observability-examples --bin prometheus -- --serve 127.0.0.1:9187
//! curl http://127.0.0.1:9187/metrics
//! ```

use metrics_exporter_prometheus::PrometheusBuilder;
use pgdbm::{AsyncDatabaseManager, DatabaseConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Install the recorder before the first pool, so that descriptions and units go with it.
    let prometheus = PrometheusBuilder::new().install_recorder()?;

    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/postgres".into());
    let db = AsyncDatabaseManager::new(DatabaseConfig {
        connection_string: Some(url),
        schema: Some("metrics_example".into()),
        min_connections: 1,
        max_connections: 4,
        ..Default::default()
    })?;
    db.connect().await?;
    db.execute(
        "CREATE TABLE IF NOT EXISTS {{tables.events}} (id serial PRIMARY KEY, kind text)",
        &[],
    )
    .await?;
    db.executemany(
        "INSERT INTO {{tables.events}} (kind) VALUES ($1)",
        (0..100).map(|i| (if i % 3 == 0 { "click" } else { "view" },)),
    )
    .await?;
    for _ in 0..20 {
        db.fetch_all(
            "SELECT kind, count(*) FROM {{tables.events}} GROUP BY kind",
            &[],
        )
        .await?;
    }
    // A failure is counted with its SQLSTATE as error.type.
    let _ = db.fetch_all("SELECT * FROM {{tables.missing}}", &[]).await;

    let serve = std::env::args().skip_while(|a| a != "--serve").nth(1);
    match serve {
        None => print!("{}", prometheus.render()),
        Some(addr) => {
            // A minimal scrape endpoint: every request gets the current text.
            let listener = tokio::net::TcpListener::bind(&addr).await?;
            println!("serving http://{addr}/metrics");
            loop {
                let (mut socket, _) = listener.accept().await?;
                let mut request = [0u8; 1024];
                let _ = socket.read(&mut request).await?;
                let body = prometheus.render();
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                socket.write_all(head.as_bytes()).await?;
                socket.write_all(body.as_bytes()).await?;
            }
        }
    }
    db.execute("DROP SCHEMA metrics_example CASCADE", &[])
        .await?;
    db.disconnect().await?;
    Ok(())
}
