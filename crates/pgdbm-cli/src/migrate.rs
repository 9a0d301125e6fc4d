//! `pgdbm migrate ...`: each module in its own schema, recorded under the library's default
//! module name (the schema, or `default` without one), so the CLI and the application write and
//! read the same tracking rows.

use std::collections::BTreeMap;
use std::path::Path;

use clap::Subcommand;
use pgdbm::{AsyncDatabaseManager, AsyncMigrationManager, Migration, Pool};
use serde_json::json;

use crate::config::{Module, Settings};
use crate::error::{CliError, CliResult};
use crate::{fleet, fleet_status, util};

#[derive(Debug, Subcommand)]
pub enum MigrateCommand {
    /// Apply pending migrations, dependencies first (all modules unless --module).
    Apply {
        /// Only this module (and the modules it depends on).
        #[arg(long, short, conflicts_with = "all")]
        module: Option<String>,
        /// All modules (the default).
        #[arg(long)]
        all: bool,
        /// Show what would be applied; write nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        fleet: FleetArgs,
        /// Schemas migrated at the same time (with --schemas or --schemas-query).
        #[arg(long, short, default_value_t = 4)]
        jobs: usize,
    },
    /// Applied and pending migrations per module (writes nothing). For a fleet, a line per
    /// schema, and a non-zero exit when any schema has a pending migration.
    Status {
        /// Only this module.
        #[arg(long, short)]
        module: Option<String>,
        #[command(flatten)]
        fleet: FleetArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The most recently applied migrations, newest first (per schema for a fleet).
    History {
        /// Only this module.
        #[arg(long, short)]
        module: Option<String>,
        #[command(flatten)]
        fleet: FleetArgs,
        /// How many per module.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a new, empty migration file with the next numeric prefix.
    Create {
        /// What it does, e.g. "add user email" (becomes add_user_email).
        name: String,
        /// The module whose directory gets the file (needed when there are several).
        #[arg(long, short)]
        module: Option<String>,
    },
    /// Compare the checksums of applied migrations with the files on disk (per schema for a
    /// fleet); a non-zero exit on any difference.
    Verify {
        /// Only this module.
        #[arg(long, short)]
        module: Option<String>,
        #[command(flatten)]
        fleet: FleetArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// A tenant fleet named on the command line: every existing schema matching a LIKE pattern
/// (e.g. 'tenant\_%'), or named by a query; each schema under its own module name.
#[derive(Debug, clap::Args)]
pub struct FleetArgs {
    /// Tenant fleet: every existing schema matching this LIKE pattern (needs --module).
    #[arg(
        long,
        requires = "module",
        conflicts_with = "schemas_query",
        value_name = "PATTERN"
    )]
    schemas: Option<String>,
    /// Tenant fleet: the schemas this query's first column names (needs --module).
    #[arg(long, requires = "module", value_name = "SQL")]
    schemas_query: Option<String>,
}

impl FleetArgs {
    fn selector(self) -> Option<fleet::Selector> {
        match (self.schemas, self.schemas_query) {
            (Some(p), _) => Some(fleet::Selector::Like(p)),
            (None, Some(q)) => Some(fleet::Selector::Query(q)),
            (None, None) => None,
        }
    }
}

pub async fn run(cmd: MigrateCommand, settings: &Settings) -> CliResult {
    match cmd {
        MigrateCommand::Apply {
            module,
            dry_run,
            fleet,
            jobs,
            ..
        } => match fleet.selector() {
            Some(sel) => {
                let m = settings.single(module.as_deref())?;
                fleet::apply(settings, m, sel, jobs, dry_run).await
            }
            None => apply(settings, module.as_deref(), dry_run, jobs).await,
        },
        MigrateCommand::Status {
            module,
            fleet,
            json,
        } => status(settings, module.as_deref(), fleet.selector(), json).await,
        MigrateCommand::History {
            module,
            fleet,
            limit,
            json,
        } => history(settings, module.as_deref(), fleet.selector(), limit, json).await,
        MigrateCommand::Create { name, module } => create(settings, &name, module.as_deref()),
        MigrateCommand::Verify {
            module,
            fleet,
            json,
        } => verify(settings, module.as_deref(), fleet.selector(), json).await,
    }
}

/// The fleet a module's migrations go to: the command's --schemas (for its one module), else
/// the module's own `schemas`/`schemas_query` in pgdbm.toml; `None` for a plain module.
fn fleet_of(m: &Module, given: &Option<fleet::Selector>) -> Option<fleet::Selector> {
    given.clone().or_else(|| m.fleet.clone())
}

/// The modules in scope, with their directories checked (no database I/O yet): all, in
/// dependency order; or `only` (with its dependencies first when `with_deps`).
fn modules<'s>(
    settings: &'s Settings,
    only: Option<&str>,
    with_deps: bool,
) -> CliResult<Vec<&'s Module>> {
    let mut modules = settings.ordered(only)?;
    if let (Some(name), false) = (only, with_deps) {
        modules.retain(|m| m.name == name);
    }
    for m in &modules {
        check_dir(m)?;
    }
    Ok(modules)
}

fn check_dir(m: &Module) -> CliResult {
    if !m.migrations_path.is_dir() {
        return Err(CliError::Config(format!(
            "migrations directory {} of module {:?} does not exist",
            m.migrations_path.display(),
            m.name
        )));
    }
    Ok(())
}

fn manager(pool: &Pool, m: &Module) -> CliResult<AsyncMigrationManager> {
    let db = AsyncDatabaseManager::from_pool(pool.clone(), m.schema.as_deref())?;
    Ok(AsyncMigrationManager::new(&db, &m.migrations_path))
}

fn schema_label(m: &Module) -> &str {
    m.schema.as_deref().unwrap_or("public")
}

/// Creates `schema` unless it exists (an existing schema needs no CREATE privilege).
pub async fn ensure_schema(db: &AsyncDatabaseManager, schema: &str) -> CliResult {
    let exists: bool = util::value(
        db,
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1)",
        &[&schema],
    )
    .await?;
    if !exists {
        db.execute(
            &format!("CREATE SCHEMA IF NOT EXISTS {}", util::quote(schema)),
            &[],
        )
        .await?;
    }
    Ok(())
}

async fn apply(settings: &Settings, only: Option<&str>, dry_run: bool, jobs: usize) -> CliResult {
    let modules = modules(settings, only, true)?;
    let pool = util::connect(settings.db()?).await?;
    let plain = AsyncDatabaseManager::from_pool(pool.clone(), None)?;
    for m in modules {
        // A fleet module goes into its tenants' schemas, never into one named after it.
        if let Some(sel) = m.fleet.clone() {
            fleet::apply(settings, m, sel, jobs, dry_run).await?;
            continue;
        }
        let mm = manager(&pool, m)?;
        let label = format!(
            "{} (schema {}, module {})",
            m.name,
            schema_label(m),
            mm.module()
        );
        if dry_run {
            let plan = mm.dry_run().await?;
            println!(
                "{label}: {} pending, {} applied",
                plan.pending.len(),
                plan.skipped.len()
            );
            for p in &plan.pending {
                println!("  would apply {}", p.filename);
            }
            continue;
        }
        if let Some(schema) = &m.schema {
            ensure_schema(&plain, schema).await?;
        }
        let report = mm.apply_pending_migrations().await.map_err(|e| {
            CliError::Failed(format!(
                "module {}: {}",
                m.name,
                CliError::Lib(e).to_string().replace('\n', "\n  ")
            ))
        })?;
        println!(
            "{label}: applied {}, already applied {}",
            report.applied.len(),
            report.skipped.len()
        );
        for a in &report.applied {
            println!("  applied {} ({} ms)", a.filename, a.execution_time_ms);
        }
    }
    Ok(())
}

async fn status(
    settings: &Settings,
    only: Option<&str>,
    given: Option<fleet::Selector>,
    json: bool,
) -> CliResult {
    let modules = modules(settings, only, false)?;
    let pool = util::connect(settings.db()?).await?;
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for m in modules {
        if let Some(sel) = fleet_of(m, &given) {
            let (report, problem) = fleet_status::status(&pool, m, &sel, json).await?;
            out.push(report);
            problems.extend(problem);
            continue;
        }
        let mm = manager(&pool, m)?;
        let applied = mm.get_applied_migrations().await?;
        let pending = mm.get_pending_migrations().await?;
        if json {
            out.push(json!({
                "module": m.name,
                "schema": schema_label(m),
                "module_name": mm.module(),
                "applied": applied.iter().map(|r| json!({
                    "filename": r.filename,
                    "applied_at": r.applied_at.to_string(),
                })).collect::<Vec<_>>(),
                "pending": pending.iter().map(|p| p.filename.clone()).collect::<Vec<_>>(),
            }));
        } else {
            println!(
                "{} (schema {}, module {}): {} applied, {} pending",
                m.name,
                schema_label(m),
                mm.module(),
                applied.len(),
                pending.len()
            );
            for r in &applied {
                println!("  [applied {}] {}", r.applied_at, r.filename);
            }
            for p in &pending {
                println!("  [pending] {}", p.filename);
            }
        }
    }
    if json {
        util::print_json(&json!({ "environment": settings.env_name, "modules": out }));
    }
    fail_on(problems)
}

/// The command's outcome: failed when any fleet reported a problem.
fn fail_on(problems: Vec<String>) -> CliResult {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CliError::Failed(problems.join("\n")))
    }
}

async fn history(
    settings: &Settings,
    only: Option<&str>,
    given: Option<fleet::Selector>,
    limit: usize,
    json: bool,
) -> CliResult {
    let modules = modules(settings, only, false)?;
    let pool = util::connect(settings.db()?).await?;
    let mut out = Vec::new();
    for m in modules {
        if let Some(sel) = fleet_of(m, &given) {
            out.extend(fleet_status::history(&pool, m, &sel, limit, json).await?);
            continue;
        }
        let mm = manager(&pool, m)?;
        let rows = mm.get_migration_history(limit).await?;
        if !json {
            println!("{} (schema {}):", m.name, schema_label(m));
            if rows.is_empty() {
                println!("  nothing applied yet");
            }
        }
        for r in rows {
            if json {
                out.push(history_row(&m.name, schema_label(m), &r));
            } else {
                println!(
                    "  {}  {}  {} ms  by {}",
                    r.applied_at,
                    r.filename,
                    r.execution_time_ms.unwrap_or(0),
                    r.applied_by.as_deref().unwrap_or("?")
                );
            }
        }
    }
    if json {
        util::print_json(&serde_json::Value::Array(out));
    }
    Ok(())
}

/// One applied migration as `migrate history --json` prints it.
pub fn history_row(module: &str, schema: &str, r: &pgdbm::MigrationRecord) -> serde_json::Value {
    json!({
        "module": module,
        "schema": schema,
        "filename": r.filename,
        "checksum": r.checksum,
        "module_name": r.module_name,
        "applied_at": r.applied_at.to_string(),
        "applied_by": r.applied_by,
        "execution_time_ms": r.execution_time_ms,
    })
}

/// `001_name.sql`, numbered after the highest numeric prefix in the directory.
fn create(settings: &Settings, name: &str, only: Option<&str>) -> CliResult {
    let m = settings.single(only)?;
    let clean = sanitize(name)?;
    let path = next_file(&m.migrations_path, &clean)?;
    std::fs::create_dir_all(&m.migrations_path).map_err(|e| {
        CliError::Failed(format!(
            "cannot create {}: {e}",
            m.migrations_path.display()
        ))
    })?;
    let body = format!(
        "-- {clean}\n\
         -- pgdbm runs this file in one transaction: do not add BEGIN/COMMIT.\n\
         -- Use {{{{tables.name}}}} for tables in the module's schema.\n\n"
    );
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, body.as_bytes()))
        .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", path.display())))?;
    println!("{}", path.display());
    Ok(())
}

fn sanitize(name: &str) -> CliResult<String> {
    if name.contains('/') || name.contains('\\') {
        return Err(CliError::Usage(format!(
            "migration name {name:?} contains a path; pass only a name"
        )));
    }
    let mut clean = String::new();
    for c in name.trim().chars() {
        if c.is_ascii_alphanumeric() {
            clean.push(c.to_ascii_lowercase());
        } else if !clean.ends_with('_') {
            clean.push('_');
        }
    }
    let clean = clean.trim_matches('_').to_owned();
    if clean.is_empty() {
        return Err(CliError::Usage(format!(
            "migration name {name:?} has no letters or digits"
        )));
    }
    Ok(clean.chars().take(100).collect())
}

fn next_file(dir: &Path, clean: &str) -> CliResult<std::path::PathBuf> {
    let mut max: Option<(u128, usize)> = None;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".sql") {
                continue;
            }
            let digits: String = name
                .trim_start_matches(['V', 'v'])
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if let Ok(n) = digits.parse::<u128>() {
                if max.is_none_or(|(m, _)| n > m) {
                    max = Some((n, digits.len()));
                }
            }
        }
    }
    let (next, width) = match max {
        Some((n, w)) => (n + 1, w.max(3)),
        None => (1, 3),
    };
    Ok(dir.join(format!("{next:0width$}_{clean}.sql")))
}

async fn verify(
    settings: &Settings,
    only: Option<&str>,
    given: Option<fleet::Selector>,
    json: bool,
) -> CliResult {
    let modules = modules(settings, only, false)?;
    let pool = util::connect(settings.db()?).await?;
    let mut problems = Vec::new();
    let mut out = Vec::new();
    for m in modules {
        if let Some(sel) = fleet_of(m, &given) {
            let (report, problem) = fleet_status::verify(&pool, m, &sel, json).await?;
            out.push(report);
            problems.extend(problem);
            continue;
        }
        let mm = manager(&pool, m)?;
        let files: BTreeMap<String, Migration> = mm
            .find_migration_files()?
            .into_iter()
            .map(|f| (f.filename.clone(), f))
            .collect();
        let applied = mm.get_applied_migrations().await?;
        let (mut changed, mut missing) = (Vec::new(), Vec::new());
        for r in &applied {
            match files.get(&r.filename) {
                None => missing.push(r.filename.clone()),
                Some(f) if f.checksum != r.checksum => {
                    problems.push(format!(
                        "{}: {} changed after it was applied (recorded checksum {}, file {})",
                        m.name, r.filename, r.checksum, f.checksum
                    ));
                    changed.push(r.filename.clone());
                }
                Some(_) => {}
            }
        }
        for f in &missing {
            problems.push(format!(
                "{}: {f} is applied but missing from {}",
                m.name,
                m.migrations_path.display()
            ));
        }
        let ok = applied.len() - changed.len() - missing.len();
        if json {
            out.push(json!({
                "module": m.name,
                "schema": schema_label(m),
                "applied": applied.len(),
                "changed": changed,
                "missing": missing,
            }));
        } else {
            println!(
                "{} (schema {}): {ok} of {} applied migrations match",
                m.name,
                schema_label(m),
                applied.len()
            );
        }
    }
    if json {
        util::print_json(&json!({ "environment": settings.env_name, "modules": out }));
    } else {
        for p in &problems {
            println!("  MISMATCH {p}");
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CliError::Failed(format!(
            "verify found {} problem(s):\n  {}",
            problems.len(),
            problems.join("\n  ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sanitized() {
        assert_eq!(sanitize("Add user email!").unwrap(), "add_user_email");
        assert!(sanitize("../x").is_err());
        assert!(sanitize("  --- ").is_err());
    }
}
