//! `pgdbm migrate apply --module M --schemas PATTERN`: one module's migrations applied to every
//! matching tenant schema, `--jobs` at a time. A failing schema does not stop the others; a
//! re-run continues where each schema stopped (the tracking rows are per schema).

use std::io::IsTerminal;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};
use pgdbm::{AsyncDatabaseManager, AsyncMigrationManager, Pool};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub use crate::config::Selector;
use crate::config::{Module, Settings};
use crate::error::{CliError, CliResult};
use crate::util;

pub async fn apply(
    settings: &Settings,
    module: &Module,
    selector: Selector,
    jobs: usize,
    dry_run: bool,
) -> CliResult {
    if !module.migrations_path.is_dir() {
        return Err(CliError::Config(format!(
            "migrations directory {} of module {:?} does not exist",
            module.migrations_path.display(),
            module.name
        )));
    }
    let jobs = jobs.clamp(1, 64);
    let mut db = settings.db()?.clone();
    // Each run holds a dedicated connection for its lock and may need one more.
    db.max_connections = 2 * jobs + 1;
    let pool = util::connect(&db).await?;
    let plain = AsyncDatabaseManager::from_pool(pool.clone(), None)?;
    let schemas = select(&plain, &selector).await?;
    if schemas.is_empty() {
        println!("no schema matches; nothing to do");
        return Ok(());
    }

    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(schemas.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} schemas {msg} [{elapsed}]")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    });
    let limit = Arc::new(Semaphore::new(jobs));
    let mut set = JoinSet::new();
    for schema in schemas.iter().cloned() {
        let (pool, limit, path) = (pool.clone(), limit.clone(), module.migrations_path.clone());
        set.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let result = one(&pool, &schema, &path, dry_run).await;
            (schema, result)
        });
    }
    let mut failures = Vec::new();
    let mut ok = 0usize;
    while let Some(joined) = set.join_next().await {
        let (schema, result) = joined.map_err(|e| CliError::Failed(format!("task failed: {e}")))?;
        let line = match &result {
            Ok(summary) => {
                ok += 1;
                format!("ok     {schema}: {summary}")
            }
            Err(e) => {
                let first = e.to_string().lines().next().unwrap_or_default().to_owned();
                failures.push((schema.clone(), e.to_string()));
                format!("FAILED {schema}: {first}")
            }
        };
        match &bar {
            Some(bar) => {
                if result.is_err() {
                    bar.println(&line);
                }
                bar.inc(1);
            }
            None => println!("{line}"),
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    println!(
        "module {}: {} schema(s), {ok} ok, {} failed",
        module.name,
        schemas.len(),
        failures.len()
    );
    if failures.is_empty() {
        return Ok(());
    }
    failures.sort();
    Err(CliError::Failed(format!(
        "{} of {} schema(s) failed (run again to continue where they stopped):\n  {}",
        failures.len(),
        schemas.len(),
        failures
            .iter()
            .map(|(s, e)| format!("{s}: {}", e.replace('\n', "\n    ")))
            .collect::<Vec<_>>()
            .join("\n  ")
    )))
}

/// The schemas `selector` names, sorted, each a valid identifier.
pub async fn select(db: &AsyncDatabaseManager, selector: &Selector) -> CliResult<Vec<String>> {
    let rows = match selector {
        Selector::Like(pattern) => {
            db.fetch_all(
                "SELECT nspname::text FROM pg_catalog.pg_namespace \
                 WHERE nspname LIKE $1 AND nspname NOT IN ('pg_catalog', 'information_schema') \
                   AND nspname NOT LIKE 'pg\\_%' ORDER BY 1",
                &[pattern],
            )
            .await?
        }
        Selector::Query(sql) => db.fetch_all(sql, &[]).await?,
    };
    let mut out = Vec::new();
    for r in rows {
        let name: String = r.get(0).map_err(|e| {
            CliError::Failed(format!(
                "--schemas-query must return schema names as text in its first column: {e}"
            ))
        })?;
        out.push(name);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// One schema: validated, created if needed, migrated.
async fn one(
    pool: &Pool,
    schema: &str,
    path: &std::path::Path,
    dry_run: bool,
) -> Result<String, CliError> {
    pgdbm::validate_identifier(schema, "schema")?;
    let db = AsyncDatabaseManager::from_pool(pool.clone(), Some(schema))?;
    let mm = AsyncMigrationManager::new(&db, path);
    if dry_run {
        let plan = mm.dry_run().await?;
        return Ok(format!(
            "would apply {}, already applied {}",
            plan.pending.len(),
            plan.skipped.len()
        ));
    }
    let report = mm.apply_pending_migrations().await?;
    Ok(format!(
        "applied {}, already applied {}",
        report.applied.len(),
        report.skipped.len()
    ))
}
