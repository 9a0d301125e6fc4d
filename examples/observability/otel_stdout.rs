//! pgdbm's spans exported through OpenTelemetry: `tracing-opentelemetry` turns each span into
//! an OpenTelemetry span (named by `otel.name`, kind client, with the `db.*` attributes), and
//! the stdout exporter prints them.
//!
//! ```text
//! DATABASE_URL=postgresql://postgres@127.0.0.1/postgres cargo run -p pgdbm-observability-examples --bin otel_stdout
//! ```

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use pgdbm::{AsyncDatabaseManager, DatabaseConfig};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(opentelemetry_stdout::SpanExporter::default())
        .build();
    let tracer = provider.tracer("pgdbm-example");
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .with(tracing_subscriber::filter::LevelFilter::INFO);
    tracing::subscriber::set_global_default(subscriber)?;

    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/postgres".into());
    let db = AsyncDatabaseManager::new(DatabaseConfig {
        connection_string: Some(url),
        schema: Some("otel_example".into()),
        ..Default::default()
    })?;
    db.connect().await?;

    // The application's own span: pgdbm's spans become its children.
    async {
        db.execute(
            "CREATE TABLE IF NOT EXISTS {{tables.orders}} (id serial PRIMARY KEY, item text)",
            &[],
        )
        .await?;
        let tx = db.transaction().await?;
        let id: i32 = tx
            .execute_and_return_id(
                "INSERT INTO {{tables.orders}} (item) VALUES ($1)",
                &[&"not exported: parameter values never reach a span"],
            )
            .await?;
        tx.commit().await?;
        let n: Option<i64> = db
            .fetch_value(
                "SELECT count(*) FROM {{tables.orders}} WHERE id <= $1",
                &[&id],
            )
            .await?;
        println!("orders so far: {n:?}");
        Ok::<_, pgdbm::Error>(())
    }
    .instrument(tracing::info_span!("checkout"))
    .await?;

    db.execute("DROP SCHEMA otel_example CASCADE", &[]).await?;
    db.disconnect().await?;
    // Flushes the exporter: every span is printed before the process ends.
    provider.shutdown()?;
    Ok(())
}
