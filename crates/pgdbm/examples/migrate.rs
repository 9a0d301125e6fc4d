//! A small migration command line, used by `scripts/python_interop.sh` to check that pgdbm and
//! Python pgdbm read each other's tracking tables.
//!
//! ```sh
//! cargo run -p pgdbm --example migrate -- apply --dir ./migrations --schema app
//! cargo run -p pgdbm --example migrate -- status --dir ./migrations --schema app
//! cargo run -p pgdbm --example migrate -- checksums --dir ./migrations      # no database needed
//! ```
//!
//! Options: `--dir DIR` (default `./migrations`), `--schema NAME`, `--module NAME`,
//! `--table NAME`; the server is `DATABASE_URL` (default the local `postgres` database).
//! Output is one line per file: `applied|pending|skipped|checksum <file> <checksum> …`.
//! Any failure exits with status 1.

use pgdbm::{AsyncDatabaseManager, AsyncMigrationManager, DatabaseConfig};

struct Args {
    command: String,
    dir: String,
    schema: Option<String>,
    module: Option<String>,
    table: Option<String>,
}

fn parse() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let command = it.next().ok_or("usage: migrate <apply|status|dry-run|history|checksums> [--dir DIR] [--schema S] [--module M] [--table T]")?;
    let mut args = Args {
        command,
        dir: "./migrations".into(),
        schema: None,
        module: None,
        table: None,
    };
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--dir" => args.dir = value,
            "--schema" => args.schema = Some(value),
            "--module" => args.module = Some(value),
            "--table" => args.table = Some(value),
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(args)
}

async fn run(args: Args) -> pgdbm::Result<()> {
    let config = DatabaseConfig {
        connection_string: Some(
            std::env::var("DATABASE_URL")
                .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/postgres".into()),
        ),
        min_connections: 1,
        max_connections: 2,
        ..Default::default()
    };
    let db = if args.command == "checksums" {
        // Reading files needs no connection.
        AsyncDatabaseManager::new(DatabaseConfig {
            schema: args.schema.clone(),
            ..config
        })?
    } else {
        let pool = AsyncDatabaseManager::create_shared_pool(&config).await?;
        AsyncDatabaseManager::from_pool(pool, args.schema.as_deref())?
    };
    let mut mm = AsyncMigrationManager::new(&db, &args.dir);
    if let Some(t) = &args.table {
        mm = mm.table(t)?;
    }
    if let Some(m) = &args.module {
        mm = mm.module_name(m)?;
    }
    match args.command.as_str() {
        "apply" => {
            let report = mm.apply_pending_migrations().await?;
            for a in &report.applied {
                println!(
                    "applied {} {} {}",
                    a.filename, a.checksum, a.execution_time_ms
                );
            }
            for s in &report.skipped {
                println!("skipped {s}");
            }
            println!("total {}", report.total);
        }
        "status" => {
            for r in mm.get_applied_migrations().await? {
                println!(
                    "applied {} {} {}",
                    r.filename,
                    r.checksum,
                    r.module_name.as_deref().unwrap_or("NULL")
                );
            }
            for p in mm.get_pending_migrations().await? {
                println!("pending {} {}", p.filename, p.checksum);
            }
        }
        "dry-run" => {
            let plan = mm.dry_run().await?;
            for p in &plan.pending {
                println!("pending {} {}", p.filename, p.checksum);
            }
            println!("total {}", plan.total);
        }
        "history" => {
            for r in mm.get_migration_history(100).await? {
                println!(
                    "history {} {} {}",
                    r.filename,
                    r.applied_at,
                    r.execution_time_ms.unwrap_or(0)
                );
            }
        }
        "checksums" => {
            for m in mm.find_migration_files()? {
                println!("checksum {} {}", m.filename, m.checksum);
            }
        }
        other => {
            return Err(pgdbm::Error::Migration {
                file: None,
                message: format!(
                    "unknown command {other:?}: use apply, status, dry-run, history or checksums"
                ),
                source: None,
            })
        }
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(args).await {
        eprintln!("error: {e}");
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            eprintln!("  caused by: {s}");
            source = s.source();
        }
        std::process::exit(1);
    }
}
