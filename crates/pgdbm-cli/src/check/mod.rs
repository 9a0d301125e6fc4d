//! `pgdbm check`: every SQL statement in the project's Rust sources described by the server
//! against the project's migrations, without running the code.
//!
//! A throwaway database (on the configured server, or a throwaway cluster with
//! `--temp-cluster`) gets every module's migrations, as `migrate apply` would apply them. Each
//! string given as the SQL of a query method is rendered for its module's schema and sent as
//! Parse/Describe: the server reports syntax errors, unknown tables, columns, functions and
//! types, and ambiguous names, and the statement's parameters and columns come back to be
//! checked against the call site. Nothing is executed. The database is dropped at the end,
//! also on Ctrl-C.

mod describe;
mod find;
mod report;

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use pgdbm::AsyncDatabaseManager;

use crate::config::{Module, Settings};
use crate::error::{CliError, CliResult};
use describe::{Scratch, Verdict};
use report::{Checked, Totals};

/// Options of `pgdbm check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Source directories or files to search [default: [check] paths of pgdbm.toml, else src
    /// and each workspace member's src]
    #[arg(long = "path", value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Check against a throwaway PostgreSQL cluster started for the run instead of the
    /// configured server (needs the server binaries, e.g. Debian's postgresql package)
    #[arg(long)]
    temp_cluster: bool,
    /// Print the report as JSON
    #[arg(long)]
    json: bool,
    /// Also list the statements that could not be checked (SQL built at run time)
    #[arg(short, long)]
    verbose: bool,
}

pub async fn run(args: CheckArgs, settings: &Settings) -> CliResult {
    let started = Instant::now();
    // Listening from the start: a Ctrl-C at any point after this ends the run through the
    // clean-up below, never by the default action that would leave the database behind.
    let mut interrupted = Interrupt::listen()?;
    let roots = roots(&args, settings)?;
    let sources = find::scan(&roots)?;
    let modules = settings.ordered(None)?;
    // The throwaway server and database; dropped on every way out, Ctrl-C included.
    let cluster = match args.temp_cluster {
        true => Some(pgdbm::testing::TempCluster::start().map_err(|e| {
            CliError::Failed(format!("--temp-cluster: cannot start a cluster: {e}"))
        })?),
        false => None,
    };
    let server = match &cluster {
        Some(c) => {
            let mut db = c.database_config("postgres");
            db.min_connections = 1;
            db.max_connections = 4;
            db.retry_attempts = 0;
            db.shared_pool_search_path = None;
            db
        }
        None => settings.db()?.clone(),
    };
    let scratch = Scratch::create(&server).await?;
    let outcome = tokio::select! {
        r = check(&scratch, &modules, &sources, settings) => r,
        _ = interrupted.recv() => Err(CliError::Failed(format!(
            "interrupted; the scratch database {} is dropped",
            scratch.name
        ))),
    };
    let dropped = scratch.drop_now().await;
    drop(cluster);
    let checked = match (outcome, dropped) {
        (Ok(checked), Ok(())) => checked,
        (Err(e), Ok(())) | (Ok(_), Err(e)) => return Err(e),
        (Err(e), Err(left)) => {
            eprintln!("error: {left}");
            return Err(e);
        }
    };
    let totals = Totals {
        files: sources.files,
        modules: modules.len(),
        seconds: started.elapsed().as_secs_f64(),
    };
    let base = &settings.check.base;
    let errors = checked
        .iter()
        .filter(|c| matches!(c.verdict, Verdict::Errors(_)))
        .count();
    if args.verbose && !args.json {
        println!(
            "checked in the scratch database {}, now dropped",
            scratch.name
        );
    }
    if args.json {
        crate::util::print_json(&report::json(&checked, &sources.unseen, &totals, base));
    } else {
        print!(
            "{}",
            report::text(&checked, &sources.unseen, &totals, base, args.verbose)
        );
    }
    if errors > 0 {
        return Err(CliError::Failed(format!(
            "{errors} statement(s) failed the check"
        )));
    }
    Ok(())
}

/// Where to look: `--path`, else `[check] paths`, else `src` and each workspace member's `src`.
fn roots(args: &CheckArgs, settings: &Settings) -> CliResult<Vec<PathBuf>> {
    if !args.paths.is_empty() {
        return Ok(args.paths.clone());
    }
    if !settings.check.paths.is_empty() {
        return Ok(settings.check.paths.clone());
    }
    let base = &settings.check.base;
    let mut out = Vec::new();
    let src = base.join("src");
    if src.is_dir() {
        out.push(src);
    }
    for member in workspace_members(base) {
        let src = member.join("src");
        if src.is_dir() && !out.contains(&src) {
            out.push(src);
        }
    }
    if out.is_empty() {
        return Err(CliError::Config(format!(
            "no source to check: {} has no src/ and no workspace members with one (pass --path)",
            if base.as_os_str().is_empty() {
                Path::new(".").display()
            } else {
                base.display()
            }
        )));
    }
    Ok(out)
}

/// The member directories of the workspace whose Cargo.toml is in `base` (`dir/*` globs
/// expanded).
fn workspace_members(base: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string(base.join("Cargo.toml")) else {
        return Vec::new();
    };
    let Ok(table) = text.parse::<toml::Table>() else {
        return Vec::new();
    };
    let members = table
        .get("workspace")
        .and_then(|w| w.get("members"))
        .and_then(|m| m.as_array())
        .cloned()
        .unwrap_or_default();
    let mut out = Vec::new();
    for m in members.iter().filter_map(|m| m.as_str()) {
        match m.strip_suffix("/*") {
            Some(dir) => {
                if let Ok(entries) = std::fs::read_dir(base.join(dir)) {
                    let mut dirs: Vec<PathBuf> = entries
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| p.is_dir())
                        .collect();
                    dirs.sort();
                    out.extend(dirs);
                }
            }
            None => out.push(base.join(m)),
        }
    }
    out
}

/// The module of a statement, and whether that was a guess.
fn module_of<'m>(
    s: &find::Found,
    settings: &Settings,
    modules: &[&'m Module],
) -> CliResult<(&'m Module, bool)> {
    let by_name = |name: &str| {
        modules
            .iter()
            .copied()
            .find(|m| m.name == name)
            .ok_or_else(|| {
                CliError::Config(format!(
                    "{}:{}: `// pgdbm: module = {name}` names no module of {}",
                    s.file.display(),
                    s.line,
                    settings.source
                ))
            })
    };
    // Compared as absolute, resolved paths: `./src`, `src` and `/abs/src` are one place.
    let file = absolute(&s.file);
    if let Some((_, name)) = settings
        .check
        .modules
        .iter()
        .find(|(prefix, _)| file.starts_with(absolute(prefix)))
    {
        return Ok((by_name(name)?, false));
    }
    if let Some(name) = &s.module {
        return Ok((by_name(name)?, false));
    }
    if let Some(name) = &settings.check.default_module {
        return Ok((by_name(name)?, false));
    }
    // One module: no guess. Several: the first in dependency order, said in the report.
    let first = modules
        .first()
        .copied()
        .ok_or_else(|| CliError::Config("no module to check against".into()))?;
    Ok((first, modules.len() > 1))
}

/// `path` resolved (symbolic links, `.` and `..`), or made absolute if it does not exist.
fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    })
}

async fn check<'s>(
    scratch: &Scratch,
    modules: &[&Module],
    sources: &'s find::Sources,
    settings: &Settings,
) -> CliResult<Vec<Checked<'s>>> {
    let pool = AsyncDatabaseManager::create_shared_pool(&scratch.config).await?;
    describe::migrate(&pool, modules).await?;
    let plain = AsyncDatabaseManager::from_pool(pool.clone(), None)?;
    let conn = plain.acquire().await?;
    let mut out = Vec::with_capacity(sources.statements.len());
    let mut renderers = std::collections::HashMap::new();
    let mut search_path: Option<&str> = None;
    for s in &sources.statements {
        let (module, guessed) = module_of(s, settings, modules)?;
        // Unqualified names resolve as a manager of the module's own pool sees them: its
        // schema, then public.
        if search_path != Some(module.name.as_str()) {
            let path = match describe::schema_of(module) {
                Some(schema) => format!("{}, public", crate::util::quote(&schema)),
                None => "public".to_owned(),
            };
            conn.batch_execute(&format!("SET search_path = {path}"))
                .await
                .map_err(|e| CliError::Failed(format!("setting search_path: {e}")))?;
            search_path = Some(module.name.as_str());
        }
        let renderer = match renderers.get(&module.name) {
            Some(r) => r,
            None => {
                let schema = describe::schema_of(module);
                let db = AsyncDatabaseManager::from_pool(pool.clone(), schema.as_deref())?;
                renderers.entry(module.name.clone()).or_insert(db)
            }
        };
        let rendered = renderer
            .prepare_query(&s.sql)
            .map(|r| match s.method.as_str() {
                // What the method sends: `RETURNING id` appended unless the statement has one.
                "execute_and_return_id" => pgdbm::__cli::with_returning_id(&r),
                _ => r,
            });
        let (rendered, verdict) = match rendered {
            Ok(r) => {
                let row = s
                    .row_type
                    .as_ref()
                    .and_then(|t| sources.rows.get(&s.krate)?.get(t));
                let v = describe::describe(&conn, s, &r, row).await;
                (r, v)
            }
            Err(e) => (
                s.sql.clone(),
                Verdict::Errors(vec![describe::Problem {
                    message: e.to_string(),
                    code: None,
                    position: None,
                }]),
            ),
        };
        out.push(Checked {
            found: s,
            module: module.name.clone(),
            guessed,
            rendered,
            verdict,
        });
    }
    drop(conn);
    pool.close();
    Ok(out)
}

/// Ctrl-C (SIGINT), listened for from the moment it is made.
struct Interrupt {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl Interrupt {
    fn listen() -> CliResult<Interrupt> {
        #[cfg(unix)]
        {
            let signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
                .map_err(|e| CliError::Failed(format!("cannot listen for Ctrl-C: {e}")))?;
            Ok(Interrupt { signal })
        }
        #[cfg(not(unix))]
        Ok(Interrupt {})
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        self.signal.recv().await;
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
