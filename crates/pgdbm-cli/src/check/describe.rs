//! Asking the server about each statement: a throwaway database with every module's
//! migrations applied, then Parse/Describe of each rendered statement (nothing is executed).

use std::collections::HashMap;

use pgdbm::tokio_postgres::types::{Kind, Type};
use pgdbm::{AsyncDatabaseManager, AsyncMigrationManager, DatabaseConfig, Pool};

use super::find::{Found, RowStruct};
use crate::config::Module;
use crate::error::{CliError, CliResult};
use crate::migrate::ensure_schema;
use crate::util;

/// What the server said of one statement.
#[derive(Debug, Clone)]
pub struct Problem {
    pub message: String,
    pub code: Option<String>,
    /// 1-based character position in the rendered SQL, as the server gives it.
    pub position: Option<usize>,
}

/// The outcome of describing one statement.
#[derive(Debug, Clone)]
pub enum Verdict {
    Ok,
    Errors(Vec<Problem>),
    /// Not described: several statements in one string (run by the simple protocol).
    Skipped(String),
}

/// The schema a module's statements render against.
pub fn schema_of(m: &Module) -> Option<String> {
    match &m.fleet {
        // A fleet module gets one schema of its own here, named after it.
        Some(_) => Some(format!("{}_fleet", m.name)),
        None => m.schema.clone(),
    }
}

/// Applies every module's migrations (in dependency order) into its schema on `pool`.
pub async fn migrate(pool: &Pool, modules: &[&Module]) -> CliResult {
    let plain = AsyncDatabaseManager::from_pool(pool.clone(), None)?;
    for m in modules {
        let schema = schema_of(m);
        if let Some(s) = &schema {
            ensure_schema(&plain, s).await?;
        }
        let db = AsyncDatabaseManager::from_pool(pool.clone(), schema.as_deref())?;
        if !m.migrations_path.is_dir() {
            return Err(CliError::Config(format!(
                "migrations directory {} of module {:?} does not exist",
                m.migrations_path.display(),
                m.name
            )));
        }
        AsyncMigrationManager::new(&db, &m.migrations_path)
            .apply_pending_migrations()
            .await
            .map_err(|e| {
                CliError::Failed(format!(
                    "module {}: its migrations do not apply: {}",
                    m.name,
                    CliError::Lib(e)
                ))
            })?;
    }
    Ok(())
}

/// Describes `s`, rendered as `rendered`, on `client`, and checks it against its call site.
pub async fn describe(
    client: &pgdbm::tokio_postgres::Client,
    s: &Found,
    rendered: &str,
    row: Option<&RowStruct>,
) -> Verdict {
    let st = match client.prepare(rendered).await {
        Ok(st) => st,
        Err(e) => {
            let Some(db) = e.as_db_error() else {
                return Verdict::Errors(vec![Problem {
                    message: e.to_string(),
                    code: None,
                    position: None,
                }]);
            };
            if db.code().code() == "42601" && db.message().contains("multiple commands") {
                return Verdict::Skipped(
                    "several statements in one string (sent by the simple protocol)".into(),
                );
            }
            let position = match db.position() {
                Some(pgdbm::tokio_postgres::error::ErrorPosition::Original(p)) => Some(*p as usize),
                _ => None,
            };
            return Verdict::Errors(vec![Problem {
                message: db.message().to_owned(),
                code: Some(db.code().code().to_owned()),
                position,
            }]);
        }
    };
    let mut problems = Vec::new();
    if let Some(n) = s.args {
        let want = st.params().len();
        if n != want {
            problems.push(Problem {
                message: format!(
                    "the statement takes {want} parameter{} but the call passes {n}",
                    if want == 1 { "" } else { "s" }
                ),
                code: None,
                position: None,
            });
        }
    }
    if let (Some(row), Some(name)) = (row, &s.row_type) {
        let columns: HashMap<&str, &Type> =
            st.columns().iter().map(|c| (c.name(), c.type_())).collect();
        for f in row.fields.iter().filter(|f| !f.unchecked) {
            match columns.get(f.column.as_str()) {
                None => {
                    let mut have: Vec<&str> = st.columns().iter().map(|c| c.name()).collect();
                    have.dedup();
                    problems.push(Problem {
                        message: format!(
                            "{name}.{} reads column \"{}\", which the statement does not return \
                             (it returns: {})",
                            f.name,
                            f.column,
                            have.join(", ")
                        ),
                        code: None,
                        position: None,
                    });
                }
                Some(ty) if !f.json && !decodes(&f.ty, ty) => problems.push(Problem {
                    message: format!(
                        "{name}.{}: a Rust `{}` cannot be read from column \"{}\" of type {}",
                        f.name,
                        f.ty,
                        f.column,
                        ty.name()
                    ),
                    code: None,
                    position: None,
                }),
                Some(_) => {}
            }
        }
    }
    if problems.is_empty() {
        Verdict::Ok
    } else {
        Verdict::Errors(problems)
    }
}

/// Whether a field of Rust type `rust` (as written) decodes a column of type `ty`, as pgdbm
/// reads rows: a domain as its base type, an enum as text. Types it does not know pass: only
/// a certain mismatch is reported.
fn decodes(rust: &str, ty: &Type) -> bool {
    let inner = rust
        .strip_prefix("Option<")
        .and_then(|r| r.strip_suffix('>'))
        .unwrap_or(rust);
    // The type's own path, without its generic arguments: `chrono::DateTime<chrono::Utc>`
    // is a `DateTime`.
    let head = inner.split('<').next().unwrap_or(inner);
    let last = head.rsplit("::").next().unwrap_or(head);
    let want: &[&str] = match last {
        "i16" => &["int2"],
        "i32" => &["int4"],
        "i64" => &["int8"],
        "f32" => &["float4"],
        "f64" => &["float8"],
        "bool" => &["bool"],
        "String" => &[
            "text",
            "varchar",
            "bpchar",
            "name",
            "citext",
            "unknown",
            "ltree",
            "lquery",
            "ltxtquery",
        ],
        "Uuid" => &["uuid"],
        "Decimal" => &["numeric"],
        "NaiveDate" => &["date"],
        "NaiveTime" => &["time"],
        "NaiveDateTime" => &["timestamp"],
        "DateTime" => &["timestamptz"],
        "Vec" if inner == "Vec<u8>" => &["bytea"],
        _ => return true,
    };
    let ty = base(ty);
    let name = match ty.kind() {
        Kind::Enum(_) => "text",
        _ => ty.name(),
    };
    want.contains(&name)
}

/// A domain's base type, through domains of domains.
fn base(ty: &Type) -> &Type {
    match ty.kind() {
        Kind::Domain(b) => base(b),
        _ => ty,
    }
}

/// A throwaway database on the configured server, dropped by [`Scratch::drop_now`].
pub struct Scratch {
    admin: DatabaseConfig,
    pub name: String,
    pub config: DatabaseConfig,
}

impl Scratch {
    /// Creates a database with a name of its own on the server of `db`.
    pub async fn create(db: &DatabaseConfig) -> CliResult<Scratch> {
        let name = format!(
            "pgdbm_check_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos() % 1_000_000)
                .unwrap_or(0)
        );
        let admin = util::with_database(db, "postgres");
        let m = util::manager(&admin).await?;
        m.execute(&format!("CREATE DATABASE {}", util::quote(&name)), &[])
            .await?;
        // Made: whatever happens from here, the caller drops it.
        let _ = m.disconnect().await;
        Ok(Scratch {
            config: util::with_database(db, &name),
            admin,
            name,
        })
    }

    /// Drops the database, ending whatever sessions are still on it. A failure names the
    /// database left behind.
    pub async fn drop_now(&self) -> CliResult {
        let sql = format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            util::quote(&self.name)
        );
        let dropped = async {
            let m = util::manager(&self.admin).await?;
            m.execute(&sql, &[]).await?;
            let _ = m.disconnect().await;
            Ok::<_, CliError>(())
        }
        .await;
        dropped.map_err(|e| {
            CliError::Failed(format!(
                "the scratch database {} was left on the server ({e}); drop it with {sql}",
                self.name
            ))
        })
    }
}
