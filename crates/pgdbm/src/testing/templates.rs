//! Template databases: one per migration plan, built once under an advisory lock, cloned per
//! test (with a few spare clones made ahead in the background), and dropped when the last
//! test process using it is done, unless `PGDBM_KEEP_TEMPLATES=1` keeps it for the next run.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use super::plan::{Migrations, Plan, TEMPLATE_PREFIX};
use super::server::{background, for_database, maintenance, server_key, unique_name, wrap};
use crate::config::DatabaseConfig;
use crate::error::{Error, Result};
use crate::manager::AsyncDatabaseManager;
use crate::template::quote_ident;

/// Ready-made clones of a template, claimed by renaming; they live as long as the template.
const SPARE_PREFIX: &str = "pgdbm_spare_";
/// Spare clones kept per template.
const SPARES_PER_TEMPLATE: i64 = 2;
/// Set to `1` (or `true`) to keep templates and their spares after the run, for faster runs.
pub(super) const KEEP_TEMPLATES_VAR: &str = "PGDBM_KEEP_TEMPLATES";

/// The template for a migration set: built once, under an advisory lock so that parallel test
/// processes wait for one builder, and renamed into place only when complete.
pub(super) async fn ensure_template(
    server: &DatabaseConfig,
    maint: &AsyncDatabaseManager,
    plan: &Plan,
    name: &str,
    schema: Option<&str>,
) -> Result<()> {
    let hash = name.trim_start_matches(TEMPLATE_PREFIX).to_owned();
    if database_exists(maint, name).await? {
        return Ok(());
    }
    let lock = maint.acquire().await?;
    let key = format!("pgdbm template {name}");
    lock.execute("SELECT pg_advisory_lock(hashtext($1))", &[&key])
        .await
        .map_err(|e| Error::TestDatabase(format!("locking the template build: {e}")))?;
    let built = async {
        if database_exists(maint, name).await? {
            return Ok(());
        }
        let building = format!("pgdbm_tplbuild_{hash}_{}", std::process::id());
        // A build of this process cut off halfway released the lock when its connection
        // closed, but its `CREATE DATABASE` may still run until its cancel lands.
        super::server::wait_for_statements_naming(maint, &building).await?;
        maint
            .execute(
                &format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    quote_ident(&building)
                ),
                &[],
            )
            .await?;
        maint
            .execute(&format!("CREATE DATABASE {}", quote_ident(&building)), &[])
            .await?;
        let db = AsyncDatabaseManager::new(DatabaseConfig {
            schema: schema.map(str::to_owned),
            min_connections: 1,
            max_connections: 2,
            ..for_database(server, &building)?
        })?;
        let migrated = async {
            db.connect().await?;
            plan.apply(&db).await
        }
        .await;
        db.disconnect().await?;
        if let Err(e) = migrated {
            let _ = maint
                .execute(
                    &format!(
                        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                        quote_ident(&building)
                    ),
                    &[],
                )
                .await;
            return Err(wrap("migrating the template database", e));
        }
        // Connections close asynchronously; FORCE-free rename needs none left.
        let rename = format!(
            "ALTER DATABASE {} RENAME TO {}",
            quote_ident(&building),
            quote_ident(name)
        );
        retry_while_in_use(maint, &rename).await?;
        maint
            .execute(
                &format!(
                    "ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false",
                    quote_ident(name)
                ),
                &[],
            )
            .await?;
        Ok(())
    }
    .await;
    let unlocked = lock
        .execute("SELECT pg_advisory_unlock(hashtext($1))", &[&key])
        .await;
    if unlocked.is_err() {
        // Never hand a connection that may still hold the lock back to the pool.
        drop(lock.detach());
    }
    built.map_err(|e| wrap("building the template database", e))
}

fn spare_pattern(template: &str) -> String {
    let hash = template.trim_start_matches(TEMPLATE_PREFIX);
    format!("{SPARE_PREFIX}{hash}\\_%")
}

/// Takes a ready-made clone of `template` by renaming it to `name`. Renaming is atomic, so
/// parallel test processes never get the same one.
pub(super) async fn claim_spare(
    maint: &AsyncDatabaseManager,
    template: &str,
    name: &str,
) -> Result<bool> {
    let spares = maint
        .fetch_all(
            "SELECT datname::text FROM pg_database WHERE datname LIKE $1 ORDER BY datname",
            &[&spare_pattern(template)],
        )
        .await?;
    for row in spares {
        let spare: String = row.get(0)?;
        let rename = format!(
            "ALTER DATABASE {} RENAME TO {}",
            quote_ident(&spare),
            quote_ident(name)
        );
        match maint.execute(&rename, &[]).await {
            Ok(_) => return Ok(true),
            // Taken by another process first (gone), or still being connected to: next one.
            Err(e) if matches!(e.code(), Some("3D000" | "55006")) => continue,
            Err(e) => return Err(wrap("claiming a spare test database", e)),
        }
    }
    Ok(false)
}

/// Tops the stock of spare clones of `template` up to `SPARES_PER_TEMPLATE`, in the background.
pub(super) fn refill_spares(server: DatabaseConfig, template: String) {
    static IN_FLIGHT: OnceLock<Mutex<HashMap<String, i64>>> = OnceLock::new();
    let in_flight = IN_FLIGHT.get_or_init(Default::default);
    {
        let mut map = in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(template.clone()).or_insert(0);
        if *n >= SPARES_PER_TEMPLATE {
            return;
        }
        *n += 1;
    }
    background().spawn(async move {
        let made = async {
            let maint = maintenance(&server).await?;
            let have = maint
                .fetch_value::<i64>(
                    "SELECT count(*) FROM pg_database WHERE datname LIKE $1",
                    &[&spare_pattern(&template)],
                )
                .await?
                .unwrap_or(0);
            if have >= SPARES_PER_TEMPLATE {
                return Ok(());
            }
            let hash = template.trim_start_matches(TEMPLATE_PREFIX);
            let spare = unique_name(&format!("{SPARE_PREFIX}{hash}"));
            maint
                .execute(
                    &format!(
                        "CREATE DATABASE {} TEMPLATE {}",
                        quote_ident(&spare),
                        quote_ident(&template)
                    ),
                    &[],
                )
                .await
                .map(|_| ())
        }
        .await;
        if let Err(e) = made {
            tracing::debug!(error = %e, "could not make a spare test database");
        }
        if let Some(n) = in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&template)
        {
            *n -= 1;
        }
    });
}

async fn database_exists(maint: &AsyncDatabaseManager, name: &str) -> Result<bool> {
    Ok(maint
        .fetch_value::<bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
            &[&name],
        )
        .await?
        .unwrap_or(false))
}

/// Runs a statement that fails while other sessions still use a database (55006), retrying
/// briefly: just-closed connections end asynchronously on the server.
pub(super) async fn retry_while_in_use(maint: &AsyncDatabaseManager, sql: &str) -> Result<()> {
    let mut last = None;
    for _ in 0..50 {
        match maint.execute(sql, &[]).await {
            Ok(_) => return Ok(()),
            Err(e) if e.code() == Some("55006") => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::TestDatabase("database still in use".into())))
}

/// Drops template databases built for migration sets other than `keep` (pass the migrations
/// you still use; `None` drops them all), with their spare clones. Templates that a running
/// test process uses are left alone (that process drops them when done). Returns the names
/// of the templates dropped.
pub async fn drop_stale_templates(
    server: &DatabaseConfig,
    keep: Option<(&Migrations, Option<&str>)>,
) -> Result<Vec<String>> {
    let keep_name = match keep {
        Some((m, schema)) => Some(m.template_name(schema)?),
        None => None,
    };
    let maint = maintenance(server).await?;
    let rows = maint
        .fetch_all(
            "SELECT datname::text FROM pg_database \
             WHERE datname LIKE 'pgdbm\\_tpl\\_%' OR datname LIKE 'pgdbm\\_spare\\_%'",
            &[],
        )
        .await?;
    // Holds the exclusive use locks of what it drops, so no test process starts cloning those
    // halfway; closing it at the end releases them.
    let locks = maint.acquire().await?.detach();
    let mut free: HashMap<String, bool> = HashMap::new();
    let mut dropped = Vec::new();
    for row in rows {
        let name: String = row.get(0)?;
        // A spare's template shares its hash: "pgdbm_spare_<hash>_…".
        let template = match name.strip_prefix(SPARE_PREFIX) {
            Some(rest) => format!("{TEMPLATE_PREFIX}{}", rest.split('_').next().unwrap_or("")),
            None => name.clone(),
        };
        if Some(&template) == keep_name.as_ref() {
            continue;
        }
        let is_free = match free.get(&template) {
            Some(f) => *f,
            None => {
                let f = locks
                    .query_one(
                        "SELECT pg_try_advisory_lock(hashtext($1))",
                        &[&use_key(&template)],
                    )
                    .await
                    .map_err(|e| lock_error("testing", e))?
                    .get::<_, bool>(0);
                free.insert(template.clone(), f);
                f
            }
        };
        if !is_free {
            continue;
        }
        drop_database(&maint, &name).await?;
        if name.starts_with(TEMPLATE_PREFIX) {
            dropped.push(name);
        }
    }
    drop(locks);
    dropped.sort();
    Ok(dropped)
}

/// Drops a template or spare database, template flag and all; a database already gone is fine.
async fn drop_database(maint: &AsyncDatabaseManager, name: &str) -> Result<()> {
    let unflag = format!(
        "ALTER DATABASE {} WITH IS_TEMPLATE false",
        quote_ident(name)
    );
    match maint.execute(&unflag, &[]).await {
        Ok(_) => {}
        Err(e) if e.code() == Some("3D000") => return Ok(()),
        Err(e) => return Err(e),
    }
    let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(name));
    maint.execute(&drop, &[]).await.map(|_| ())
}

/// This process's use of templates on one server: one session holds a shared advisory lock
/// per template in use, and a count of live test databases per template says when to let go.
/// The server releases the locks of a process that dies, so a crash never pins a template.
#[derive(Default)]
struct Users {
    holder: Option<tokio_postgres::Client>,
    counts: HashMap<String, usize>,
}

fn users() -> &'static tokio::sync::Mutex<HashMap<String, Users>> {
    static USERS: OnceLock<tokio::sync::Mutex<HashMap<String, Users>>> = OnceLock::new();
    USERS.get_or_init(Default::default)
}

fn use_key(template: &str) -> String {
    format!("pgdbm template in use {template}")
}

fn lock_error(what: &str, e: tokio_postgres::Error) -> Error {
    Error::TestDatabase(format!("{what} the test template's use lock: {e}"))
}

/// This process's use of a template, from [`retain_template`] until
/// [`release`](TemplateUse::release)d; dropping it releases it in the background.
#[derive(Debug)]
pub(super) struct TemplateUse {
    server: DatabaseConfig,
    template: Option<String>,
    /// Whether spare clones pay off: other tests of this process use the template at the
    /// same time, or it is kept for later runs. Tests that never overlap would only make
    /// spares to drop them with the template.
    spares: bool,
}

impl TemplateUse {
    pub(super) fn name(&self) -> &str {
        self.template.as_deref().unwrap_or_default()
    }

    pub(super) fn wants_spares(&self) -> bool {
        self.spares
    }

    /// See [`release`].
    pub(super) async fn release(mut self) -> Result<()> {
        match self.template.take() {
            Some(t) => release_template(self.server.clone(), t).await,
            None => Ok(()),
        }
    }
}

impl Drop for TemplateUse {
    fn drop(&mut self) {
        if let Some(template) = self.template.take() {
            let server = self.server.clone();
            background().spawn(async move {
                if let Err(e) = release(&server, &template).await {
                    tracing::warn!(error = %e, "could not release a test template");
                }
            });
        }
    }
}

/// Marks `template` as in use by this process until the returned value is released or
/// dropped. Waits while another process is dropping it; the caller then builds it anew. Runs
/// on the background runtime: a caller that gives up halfway drops the finished use, which
/// releases it, so the count never drifts.
pub(super) async fn retain_template(
    server: &DatabaseConfig,
    template: String,
) -> Result<TemplateUse> {
    let server = server.clone();
    background()
        .spawn(async move {
            let users = retain(&server, &template).await?;
            Ok(TemplateUse {
                server,
                template: Some(template),
                spares: users > 1 || keep_templates(),
            })
        })
        .await
        .map_err(|e| Error::TestDatabase(format!("housekeeping task failed: {e}")))?
}

/// Returns how many test databases of this process now use the template.
async fn retain(server: &DatabaseConfig, template: &str) -> Result<usize> {
    let maint = maintenance(server).await?;
    let mut all = users().lock().await;
    let users = all.entry(server_key(server)).or_default();
    if users.counts.get(template).copied().unwrap_or(0) == 0 {
        if users.holder.is_none() {
            // Detached: the session's locks must never go back into the pool.
            users.holder = Some(maint.acquire().await?.detach());
        }
        let holder = users.holder.as_ref().expect("set above");
        holder
            .execute(
                "SELECT pg_advisory_lock_shared(hashtext($1))",
                &[&use_key(template)],
            )
            .await
            .map_err(|e| lock_error("taking", e))?;
    }
    let n = users.counts.entry(template.to_owned()).or_insert(0);
    *n += 1;
    Ok(*n)
}

/// One test database cloned from `template` is gone. When it was this process's last, the
/// template and its spares are dropped, unless another process still uses them (it drops them
/// when done) or `PGDBM_KEEP_TEMPLATES=1`. Runs on the background runtime, so a caller that
/// gives up halfway never leaves the lock state half changed.
async fn release_template(server: DatabaseConfig, template: String) -> Result<()> {
    background()
        .spawn(async move { release(&server, &template).await })
        .await
        .map_err(|e| Error::TestDatabase(format!("housekeeping task failed: {e}")))?
}

async fn release(server: &DatabaseConfig, template: &str) -> Result<()> {
    let maint = maintenance(server).await?;
    let mut all = users().lock().await;
    let Some(users) = all.get_mut(&server_key(server)) else {
        return Ok(());
    };
    match users.counts.get_mut(template) {
        Some(n) if *n > 1 => {
            *n -= 1;
            return Ok(());
        }
        Some(_) => {
            users.counts.remove(template);
        }
        None => return Ok(()),
    }
    let Some(holder) = users.holder.as_ref() else {
        return Ok(());
    };
    let key = use_key(template);
    let result = async {
        if !keep_templates() {
            // Exclusive beside our own shared lock: granted only when no other session holds it.
            let last = holder
                .query_one("SELECT pg_try_advisory_lock(hashtext($1))", &[&key])
                .await
                .map_err(|e| lock_error("testing", e))?
                .get::<_, bool>(0);
            if last {
                let dropped = drop_template_and_spares(&maint, template).await;
                holder
                    .execute("SELECT pg_advisory_unlock(hashtext($1))", &[&key])
                    .await
                    .map_err(|e| lock_error("releasing", e))?;
                dropped.map_err(|e| wrap("dropping the test template", e))?;
            }
        }
        holder
            .execute("SELECT pg_advisory_unlock_shared(hashtext($1))", &[&key])
            .await
            .map_err(|e| lock_error("releasing", e))
            .map(|_| ())
    }
    .await;
    if result.is_err() || users.counts.is_empty() {
        // Closing the session releases whatever it may still hold.
        users.holder = None;
    }
    result
}

/// The template first: that waits for spares being cloned from it right now, so the list of
/// spares taken afterwards is complete, and no new one can start.
async fn drop_template_and_spares(maint: &AsyncDatabaseManager, template: &str) -> Result<()> {
    drop_database(maint, template).await?;
    let spares = maint
        .fetch_all(
            "SELECT datname::text FROM pg_database WHERE datname LIKE $1",
            &[&spare_pattern(template)],
        )
        .await?;
    let names = spares
        .iter()
        .map(|r| r.get::<String>(0))
        .collect::<Result<Vec<_>>>()?;
    // Side by side: each drop waits for a checkpoint, which concurrent drops share.
    futures_util::future::try_join_all(names.iter().map(|n| drop_database(maint, n))).await?;
    Ok(())
}

fn keep_templates() -> bool {
    std::env::var(KEEP_TEMPLATES_VAR).is_ok_and(|v| matches!(v.trim(), "1" | "true" | "yes"))
}
