//! `pgdbm migrate status|history|verify` for a tenant fleet: one module's migrations looked up
//! in every schema of the fleet, a line (or a JSON object) per schema. Status and verify exit
//! non-zero when any schema has a pending file or a file changed after it was applied.

use std::collections::BTreeMap;

use pgdbm::{AsyncDatabaseManager, AsyncMigrationManager, Migration, Pool};
use serde_json::{json, Value};

use crate::config::{Module, Selector};
use crate::error::CliResult;
use crate::fleet;

/// What one schema of the fleet has of the module's migrations.
struct SchemaState {
    schema: String,
    applied: usize,
    pending: Vec<String>,
    /// Applied files whose checksum differs from the file on disk.
    changed: Vec<String>,
    /// Applied files no longer on disk.
    missing: Vec<String>,
}

async fn schemas(pool: &Pool, selector: &Selector) -> CliResult<Vec<String>> {
    let plain = AsyncDatabaseManager::from_pool(pool.clone(), None)?;
    fleet::select(&plain, selector).await
}

fn manager(pool: &Pool, schema: &str, m: &Module) -> CliResult<AsyncMigrationManager> {
    pgdbm::validate_identifier(schema, "schema")?;
    let db = AsyncDatabaseManager::from_pool(pool.clone(), Some(schema))?;
    Ok(AsyncMigrationManager::new(&db, &m.migrations_path))
}

async fn inspect(pool: &Pool, m: &Module, selector: &Selector) -> CliResult<Vec<SchemaState>> {
    let mut out = Vec::new();
    for schema in schemas(pool, selector).await? {
        let mm = manager(pool, &schema, m)?;
        let files: BTreeMap<String, Migration> = mm
            .find_migration_files()?
            .into_iter()
            .map(|f| (f.filename.clone(), f))
            .collect();
        let applied = mm.get_applied_migrations().await?;
        // Pending by name, from the files, so that a changed file is reported as such rather
        // than stopping the look-up (as `get_pending_migrations` rightly does before applying).
        let pending = files
            .keys()
            .filter(|f| !applied.iter().any(|r| &r.filename == *f))
            .cloned()
            .collect();
        let mut state = SchemaState {
            schema,
            applied: applied.len(),
            pending,
            changed: Vec::new(),
            missing: Vec::new(),
        };
        for r in applied {
            match files.get(&r.filename) {
                None => state.missing.push(r.filename),
                Some(f) if f.checksum != r.checksum => state.changed.push(r.filename),
                Some(_) => {}
            }
        }
        out.push(state);
    }
    Ok(out)
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "-".into()
    } else {
        names.join(", ")
    }
}

/// A fleet report, and what is wrong with the fleet, if anything (the command then fails).
pub type Report = (Value, Option<String>);

/// `migrate status` over the fleet: applied and pending per schema.
pub async fn status(pool: &Pool, m: &Module, selector: &Selector, json: bool) -> CliResult<Report> {
    let states = inspect(pool, m, selector).await?;
    if !json {
        println!("{} (fleet of {} schema(s)):", m.name, states.len());
        println!(
            "  {:<32} {:>8} {:>8}  pending files",
            "schema", "applied", "pending"
        );
        for s in &states {
            println!(
                "  {:<32} {:>8} {:>8}  {}",
                s.schema,
                s.applied,
                s.pending.len(),
                list(&s.pending)
            );
        }
    }
    let behind = states.iter().filter(|s| !s.pending.is_empty()).count();
    let report = json!({
        "module": m.name,
        "schemas": states.iter().map(|s| json!({
            "schema": s.schema,
            "applied": s.applied,
            "pending": s.pending,
        })).collect::<Vec<_>>(),
    });
    let problem = (behind > 0).then(|| {
        format!(
            "{behind} of {} schema(s) of module {} have pending migrations",
            states.len(),
            m.name
        )
    });
    Ok((report, problem))
}

/// `migrate verify` over the fleet: applied files changed or missing on disk, per schema.
pub async fn verify(pool: &Pool, m: &Module, selector: &Selector, json: bool) -> CliResult<Report> {
    let states = inspect(pool, m, selector).await?;
    let mut problems = Vec::new();
    for s in &states {
        for f in &s.changed {
            problems.push(format!("{}: {f} changed after it was applied", s.schema));
        }
        for f in &s.missing {
            problems.push(format!(
                "{}: {f} is applied but missing from {}",
                s.schema,
                m.migrations_path.display()
            ));
        }
        if !json {
            println!(
                "{} (schema {}): {} of {} applied migrations match",
                m.name,
                s.schema,
                s.applied - s.changed.len() - s.missing.len(),
                s.applied
            );
        }
    }
    let report = json!({
        "module": m.name,
        "schemas": states.iter().map(|s| json!({
            "schema": s.schema,
            "applied": s.applied,
            "changed": s.changed,
            "missing": s.missing,
        })).collect::<Vec<_>>(),
    });
    let problem = (!problems.is_empty()).then(|| {
        format!(
            "verify found {} problem(s):\n  {}",
            problems.len(),
            problems.join("\n  ")
        )
    });
    Ok((report, problem))
}

/// `migrate history` over the fleet: the newest `limit` rows of each schema.
pub async fn history(
    pool: &Pool,
    m: &Module,
    selector: &Selector,
    limit: usize,
    json: bool,
) -> CliResult<Vec<Value>> {
    let mut out = Vec::new();
    for schema in schemas(pool, selector).await? {
        let mm = manager(pool, &schema, m)?;
        let rows = mm.get_migration_history(limit).await?;
        if !json {
            println!("{} (schema {schema}):", m.name);
            if rows.is_empty() {
                println!("  nothing applied yet");
            }
        }
        for r in rows {
            if json {
                out.push(crate::migrate::history_row(&m.name, &schema, &r));
            } else {
                println!(
                    "  {}  {}  {} ms",
                    r.applied_at,
                    r.filename,
                    r.execution_time_ms.unwrap_or(0)
                );
            }
        }
    }
    Ok(out)
}
