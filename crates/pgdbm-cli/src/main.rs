//! `pgdbm`: migrations, databases, schemas and test-database housekeeping, configured by
//! `pgdbm.toml` (the Python pgdbm CLI's format) or `DATABASE_URL`.

mod check;
mod config;
mod db;
mod error;
mod fleet;
mod fleet_status;
mod generate;
mod migrate;
mod schema;
mod util;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::error::CliResult;

/// PostgreSQL migrations, databases and schemas, configured by pgdbm.toml.
#[derive(Debug, Parser)]
#[command(name = "pgdbm", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options accepted before or after the subcommand.
#[derive(Debug, Args)]
pub struct Global {
    /// The configuration file [default: ./pgdbm.toml when present, else DATABASE_URL and ./migrations]
    #[arg(short, long, global = true, env = "PGDBM_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// The environment in the configuration file [default: project.default_env, then dev]
    #[arg(short, long, global = true, env = "PGDBM_ENV", value_name = "NAME")]
    env: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply, inspect, create and verify migrations.
    #[command(subcommand)]
    Migrate(migrate::MigrateCommand),
    /// Create, drop, reset, test and describe the database.
    #[command(subcommand)]
    Db(db::DbCommand),
    /// List, create and drop schemas.
    #[command(subcommand)]
    Schema(schema::SchemaCommand),
    /// Housekeeping for the testing utilities.
    #[command(subcommand)]
    Test(db::TestCommand),
    /// Generate a commented pgdbm.toml, or a Rust struct for a table.
    #[command(subcommand)]
    Generate(generate::GenerateCommand),
    /// Check every SQL statement in the sources against the migrations, without running it.
    Check(check::CheckArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> CliResult {
    let load = || config::load(cli.global.config.as_deref(), cli.global.env.as_deref());
    match cli.command {
        Command::Migrate(c) => migrate::run(c, &load()?).await,
        Command::Db(c) => db::run(c, &load()?).await,
        Command::Schema(c) => schema::run(c, &load()?).await,
        Command::Test(c) => db::run_test(c, &load()?).await,
        Command::Check(c) => check::run(c, &load()?).await,
        Command::Generate(c) => {
            let settings = match generate::needs_settings(&c) {
                true => Some(load()?),
                false => None,
            };
            generate::run(c, settings.as_ref()).await
        }
    }
}
