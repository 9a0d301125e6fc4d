//! `pgdbm schema ...`.

use clap::Subcommand;
use pgdbm::AsyncDatabaseManager;
use serde_json::json;

use crate::config::Settings;
use crate::error::{CliError, CliResult};
use crate::util;

#[derive(Debug, Subcommand)]
pub enum SchemaCommand {
    /// Schemas (system schemas left out) with their table counts.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create a schema (an error if it exists).
    Create {
        /// Letters, digits, underscores; starting with a letter or underscore.
        name: String,
    },
    /// Drop a schema (asks on a terminal; --yes otherwise).
    Drop {
        /// The schema.
        name: String,
        /// Also drop everything in it (DROP SCHEMA ... CASCADE).
        #[arg(long)]
        cascade: bool,
        /// Do not ask.
        #[arg(long, short)]
        yes: bool,
    },
}

pub async fn run(cmd: SchemaCommand, settings: &Settings) -> CliResult {
    match cmd {
        SchemaCommand::List { json } => {
            let m = util::manager(settings.db()?).await?;
            let schemas = list_schemas(&m).await?;
            if json {
                util::print_json(&json!(schemas
                    .iter()
                    .map(|(s, n)| json!({"name": s, "tables": n}))
                    .collect::<Vec<_>>()));
            } else {
                for (s, n) in &schemas {
                    println!("{s:<32} {n} table(s)");
                }
            }
        }
        SchemaCommand::Create { name } => {
            pgdbm::validate_identifier(&name, "schema")?;
            let m = util::manager(settings.db()?).await?;
            m.execute(&format!("CREATE SCHEMA {}", util::quote(&name)), &[])
                .await?;
            println!("created schema {name}");
        }
        SchemaCommand::Drop { name, cascade, yes } => {
            pgdbm::validate_identifier(&name, "schema")?;
            util::confirm(
                yes,
                &format!(
                    "drop schema {name}{}",
                    if cascade { " and everything in it" } else { "" }
                ),
            )?;
            let m = util::manager(settings.db()?).await?;
            let exists: bool = util::value(
                &m,
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1)",
                &[&name],
            )
            .await?;
            if !exists {
                return Err(CliError::Failed(format!("schema {name} does not exist")));
            }
            let cascade_sql = if cascade { " CASCADE" } else { "" };
            m.execute(
                &format!("DROP SCHEMA {}{cascade_sql}", util::quote(&name)),
                &[],
            )
            .await?;
            println!("dropped schema {name}");
        }
    }
    Ok(())
}

/// Non-system schemas and their table counts (ordinary and partitioned tables), by name.
pub async fn list_schemas(m: &AsyncDatabaseManager) -> CliResult<Vec<(String, i64)>> {
    let rows = m
        .fetch_all(
            "SELECT n.nspname::text, count(c.oid) \
             FROM pg_catalog.pg_namespace n \
             LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relkind IN ('r', 'p') \
             WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') \
               AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%' \
             GROUP BY n.nspname ORDER BY n.nspname",
            &[],
        )
        .await?;
    let mut out = Vec::new();
    for r in rows {
        out.push((r.get::<String>(0)?, r.get::<i64>(1)?));
    }
    Ok(out)
}
