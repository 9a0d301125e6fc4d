//! `pgdbm db ...` and `pgdbm test cleanup`.

use std::time::Duration;

use clap::Subcommand;
use pgdbm::AsyncDatabaseManager;
use serde_json::json;

use crate::config::Settings;
use crate::error::{CliError, CliResult};
use crate::{schema, util};

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Create the configured database (an error if it exists).
    Create,
    /// Drop the configured database (asks on a terminal; --yes otherwise).
    Drop {
        /// Do not ask.
        #[arg(long, short)]
        yes: bool,
        /// Disconnect other sessions first (DROP DATABASE ... WITH (FORCE)).
        #[arg(long)]
        force: bool,
    },
    /// Drop the configured database if it exists and create it empty (asks; --yes otherwise).
    /// Run `pgdbm migrate apply` afterwards.
    Reset {
        /// Do not ask.
        #[arg(long, short)]
        yes: bool,
    },
    /// Connect, run a query, and print the server version.
    TestConnection,
    /// Server version, database size, schemas with table counts, pool statistics.
    Info {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TestCommand {
    /// Drop test databases left behind by crashed test runs (and, with --templates, template
    /// databases of the testing utilities).
    Cleanup {
        /// Only test databases created more than this long ago: 90s, 30m, 1h, 2d.
        #[arg(long, default_value = "1h", value_parser = parse_age)]
        older_than: Duration,
        /// The test database name prefix (TestDatabase's default is `test`).
        #[arg(long, default_value = "test")]
        prefix: String,
        /// Also drop every pgdbm template database and spare clone. Templates are rebuilt on
        /// demand, but a test suite running right now against this server may fail.
        #[arg(long)]
        templates: bool,
        /// List what would be dropped; drop nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub async fn run(cmd: DbCommand, settings: &Settings) -> CliResult {
    let db = settings.db()?;
    let name = util::database_name(db)?;
    let maintenance = || util::with_database(db, "postgres");
    match cmd {
        DbCommand::Create => {
            let m = util::manager(&maintenance()).await?;
            if exists(&m, &name).await? {
                return Err(CliError::Failed(format!("database {name} already exists")));
            }
            m.execute(&format!("CREATE DATABASE {}", util::quote(&name)), &[])
                .await?;
            println!("created database {name}");
        }
        DbCommand::Drop { yes, force } => {
            util::confirm(yes, &format!("drop database {name} and all its data"))?;
            let m = util::manager(&maintenance()).await?;
            if !exists(&m, &name).await? {
                return Err(CliError::Failed(format!("database {name} does not exist")));
            }
            let with = if force { " WITH (FORCE)" } else { "" };
            m.execute(&format!("DROP DATABASE {}{with}", util::quote(&name)), &[])
                .await?;
            println!("dropped database {name}");
        }
        DbCommand::Reset { yes } => {
            util::confirm(
                yes,
                &format!("drop database {name} and all its data, then create it empty"),
            )?;
            let m = util::manager(&maintenance()).await?;
            m.execute(
                &format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    util::quote(&name)
                ),
                &[],
            )
            .await?;
            m.execute(&format!("CREATE DATABASE {}", util::quote(&name)), &[])
                .await?;
            println!("reset database {name} (now empty; run `pgdbm migrate apply`)");
        }
        DbCommand::TestConnection => {
            let m = util::manager(db).await?;
            let version: String = util::value(&m, "SHOW server_version", &[]).await?;
            println!(
                "connected to {} (PostgreSQL {version})",
                db.get_dsn_masked()
            );
        }
        DbCommand::Info { json } => info(db, &name, json).await?,
    }
    Ok(())
}

async fn exists(m: &AsyncDatabaseManager, name: &str) -> CliResult<bool> {
    util::value(
        m,
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1)",
        &[&name],
    )
    .await
}

async fn info(db: &pgdbm::DatabaseConfig, name: &str, as_json: bool) -> CliResult {
    let m = util::manager(db).await?;
    let version: String = util::value(&m, "SHOW server_version", &[]).await?;
    let size: i64 = util::value(
        &m,
        "SELECT pg_catalog.pg_database_size(current_database())",
        &[],
    )
    .await?;
    let pretty: String =
        util::value(&m, "SELECT pg_catalog.pg_size_pretty($1::bigint)", &[&size]).await?;
    let schemas = schema::list_schemas(&m).await?;
    let stats = m.get_pool_stats().await?;
    if as_json {
        util::print_json(&json!({
            "database": name,
            "dsn": db.get_dsn_masked(),
            "server_version": version,
            "size_bytes": size,
            "size": pretty,
            "schemas": schemas.iter().map(|(s, n)| json!({"name": s, "tables": n})).collect::<Vec<_>>(),
            "pool": {
                "size": stats.size,
                "free": stats.free_size,
                "used": stats.used_size,
                "min_size": stats.min_size,
                "max_size": stats.max_size,
                "waiting": stats.waiting,
            },
        }));
    } else {
        println!("database:  {name}");
        println!("dsn:       {}", db.get_dsn_masked());
        println!("server:    PostgreSQL {version}");
        println!("size:      {pretty}");
        println!("schemas:");
        for (s, n) in &schemas {
            println!("  {s:<32} {n} table(s)");
        }
        println!(
            "pool:      {} open ({} free, {} in use), min {}, max {}, {} waiting",
            stats.size,
            stats.free_size,
            stats.used_size,
            stats.min_size,
            stats.max_size,
            stats.waiting
        );
    }
    Ok(())
}

pub async fn run_test(cmd: TestCommand, settings: &Settings) -> CliResult {
    let TestCommand::Cleanup {
        older_than,
        prefix,
        templates,
        dry_run,
    } = cmd;
    pgdbm::validate_identifier(&prefix, "test database prefix")?;
    let server = util::with_database(settings.db()?, "postgres");
    if dry_run {
        let found = pgdbm::testing::list_leftover_databases(&server, &prefix, older_than).await?;
        for l in &found {
            println!("would drop {} (age {}s)", l.name, l.age.as_secs());
        }
        println!("{} leftover test database(s)", found.len());
        return Ok(());
    }
    let dropped = pgdbm::testing::drop_leftover_databases(&server, &prefix, older_than).await?;
    for d in &dropped {
        println!("dropped {d}");
    }
    println!("{} leftover test database(s) dropped", dropped.len());
    if templates {
        let t = pgdbm::testing::drop_stale_templates(&server, None).await?;
        for d in &t {
            println!("dropped template {d}");
        }
        println!("{} template database(s) dropped", t.len());
    }
    Ok(())
}

/// `90s`, `30m`, `1h`, `2d`, or plain seconds.
pub fn parse_age(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 90s, 30m, 1h or 2d"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use s, m, h or d)")),
    };
    Ok(Duration::from_secs(secs))
}
