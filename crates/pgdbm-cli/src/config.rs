//! `pgdbm.toml`: the Python pgdbm CLI's format, read unchanged.
//!
//! ```toml
//! [project]
//! name = "myapp"
//! default_env = "dev"
//!
//! [environments.dev]
//! url = "postgresql://postgres@localhost:5432/myapp_dev"   # or connection_string, or host/port/...
//! schema = "public"
//!
//! [modules.users]
//! migrations_path = "migrations/users"
//! schema = "users"
//! depends_on = []
//! ```
//!
//! `${VAR}` is expanded inside every string value; an unset variable is an error naming it.
//! Unknown keys are errors naming the key. Without a file, "simple mode" uses `DATABASE_URL`
//! and `./migrations`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pgdbm::DatabaseConfig;
use serde::Deserialize;

use crate::error::{CliError, CliResult};

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub project: Project,
    #[serde(default)]
    pub environments: BTreeMap<String, Environment>,
    #[serde(default)]
    pub modules: BTreeMap<String, ModuleConfig>,
    #[serde(default)]
    pub check: CheckConfig,
}

/// `[check]`: where `pgdbm check` looks for SQL, and which module each source file's SQL
/// belongs to.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    /// Source directories or files, relative to this file (default: `src` and each workspace
    /// member's `src`).
    #[serde(default)]
    pub paths: Vec<String>,
    /// The module of statements that name none.
    pub default_module: Option<String>,
    /// Source path (a file or a directory, relative to this file) -> module.
    #[serde(default)]
    pub modules: BTreeMap<String, String>,
}

/// `[check]`, resolved: paths made absolute against the file's directory.
#[derive(Debug, Default)]
pub struct CheckSettings {
    /// Where the project is: relative paths in reports start here.
    pub base: PathBuf,
    pub paths: Vec<PathBuf>,
    pub default_module: Option<String>,
    /// Longest prefix first.
    pub modules: Vec<(PathBuf, String)>,
}

/// `[project]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Project {
    /// Accepted for compatibility with the Python CLI; not used.
    #[allow(dead_code)]
    pub name: Option<String>,
    pub default_env: Option<String>,
}

/// A port written as a number, or as a string (so that `"${PGPORT}"` works).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Port {
    Number(u16),
    Text(String),
}

/// `[environments.NAME]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    pub url: Option<String>,
    pub connection_string: Option<String>,
    pub host: Option<String>,
    pub port: Option<Port>,
    pub database: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub schema: Option<String>,
    pub ssl_enabled: Option<bool>,
    pub ssl_mode: Option<String>,
    pub ssl_ca_file: Option<String>,
    pub ssl_cert_file: Option<String>,
    pub ssl_key_file: Option<String>,
    /// `"direct"`, `"session"` or `"transaction"`: see [`pgdbm::Pooler`].
    pub pooler: Option<pgdbm::Pooler>,
    /// Where migrations connect when `url` goes through a transaction pooler.
    #[serde(alias = "direct_url")]
    pub direct_connection_string: Option<String>,
    /// `"auto"` or `"always"`: see [`pgdbm::ResetOnRelease`].
    pub reset_on_release: Option<pgdbm::ResetOnRelease>,
    /// Share connections among callers' statements: see
    /// [`pgdbm::DatabaseConfig::multiplexing`].
    pub multiplexing: Option<bool>,
}

/// `[modules.NAME]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleConfig {
    pub migrations_path: Option<String>,
    pub schema: Option<String>,
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// A fleet module: its migrations go into every existing schema matching this `LIKE`
    /// pattern (`'tenant\_%'`), not into a schema of its own.
    pub schemas: Option<String>,
    /// A fleet module: its migrations go into every schema this query's first column names.
    pub schemas_query: Option<String>,
}

/// The schemas of a tenant fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// `LIKE` pattern on schema names (system schemas never match).
    Like(String),
    /// A query whose first column is the schema name.
    Query(String),
}

/// A module ready to migrate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Its name in `[modules.NAME]` (`default` in simple mode).
    pub name: String,
    /// Where its `.sql` files are.
    pub migrations_path: PathBuf,
    /// The schema its migrations go into; `None` = `public` (and module name `default`).
    /// Unused for a fleet module.
    pub schema: Option<String>,
    pub depends_on: Vec<String>,
    /// Set for a fleet module: the schemas its migrations go into instead of `schema`.
    pub fleet: Option<Selector>,
}

/// Everything a command needs: the connection and the modules.
#[derive(Debug)]
pub struct Settings {
    /// Where the settings came from, for messages.
    pub source: String,
    pub env_name: String,
    /// `None` in simple mode without `DATABASE_URL`: see [`Settings::db`].
    db: Option<DatabaseConfig>,
    /// In file order (sorted by name); see [`Settings::ordered`].
    pub modules: Vec<Module>,
    pub check: CheckSettings,
}

const DEFAULT_FILE: &str = "pgdbm.toml";

/// Reads the settings: `--config` (or `PGDBM_CONFIG`), else `./pgdbm.toml` when present, else
/// simple mode.
pub fn load(config: Option<&Path>, env: Option<&str>) -> CliResult<Settings> {
    let path = match config {
        Some(p) => Some(p.to_path_buf()),
        None => Some(PathBuf::from(DEFAULT_FILE)).filter(|p| p.exists()),
    };
    match path {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| CliError::Config(format!("cannot read {}: {e}", path.display())))?;
            let file = parse(&text, &path, |k| std::env::var(k).ok())?;
            resolve(file, &path, env)
        }
        None => simple_mode(env),
    }
}

/// Simple mode: `DATABASE_URL` (and `DB_PASSWORD`), the migrations in `./migrations`.
fn simple_mode(env: Option<&str>) -> CliResult<Settings> {
    if let Some(env) = env {
        return Err(CliError::Config(format!(
            "environment {env:?} requested but there is no {DEFAULT_FILE} here (pass --config FILE)"
        )));
    }
    let mut db = DatabaseConfig::from_env();
    tune(&mut db);
    Ok(Settings {
        source: "DATABASE_URL".into(),
        env_name: "DATABASE_URL".into(),
        db: db.connection_string.is_some().then_some(db),
        modules: vec![Module {
            name: "default".into(),
            migrations_path: PathBuf::from("migrations"),
            schema: None,
            depends_on: Vec::new(),
            fleet: None,
        }],
        check: CheckSettings {
            base: PathBuf::from("."),
            ..CheckSettings::default()
        },
    })
}

/// Settings suited to a short-lived command: few connections, fail fast.
fn tune(db: &mut DatabaseConfig) {
    db.min_connections = 1;
    db.max_connections = 4;
    db.retry_attempts = 0;
    // The server's own search_path, as an application's schemaless manager has it, so that a
    // module without a schema creates its tables in `public` like the application would.
    db.shared_pool_search_path = None;
}

/// Parses the file text, expanding `${VAR}` in every string value.
pub fn parse(
    text: &str,
    path: &Path,
    var: impl Fn(&str) -> Option<String>,
) -> CliResult<FileConfig> {
    let name = path.display();
    let mut table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| CliError::Config(format!("{name}: {}", one_line(&e))))?;
    for (key, value) in table.iter_mut() {
        expand_value(value, key, &var).map_err(|m| CliError::Config(format!("{name}: {m}")))?;
    }
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| CliError::Config(format!("{name}: {}", one_line(&e))))
}

fn one_line(e: &toml::de::Error) -> String {
    let msg = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => format!("{msg} (at byte {})", span.start),
        None => msg,
    }
}

fn expand_value(
    value: &mut toml::Value,
    key: &str,
    var: &impl Fn(&str) -> Option<String>,
) -> Result<(), String> {
    match value {
        toml::Value::String(s) => *s = expand(s, key, var)?,
        toml::Value::Array(items) => {
            for item in items {
                expand_value(item, key, var)?;
            }
        }
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                expand_value(v, &format!("{key}.{k}"), var)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// `${VAR}` → its value; `$$` → `$`; an unset variable is an error naming it and the key.
pub fn expand(s: &str, key: &str, var: &impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('{') {
            let end = inner
                .find('}')
                .ok_or_else(|| format!("`{key}`: unterminated ${{ in {s:?}"))?;
            let name = &inner[..end];
            let value = var(name).ok_or_else(|| {
                format!("`{key}` uses ${{{name}}} but the environment variable {name} is not set")
            })?;
            out.push_str(&value);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Picks the environment and builds the settings.
pub fn resolve(file: FileConfig, path: &Path, env: Option<&str>) -> CliResult<Settings> {
    let name = path.display().to_string();
    let env_name = env
        .map(str::to_owned)
        .or_else(|| file.project.default_env.clone())
        .unwrap_or_else(|| "dev".to_owned());
    let Some(e) = file.environments.get(&env_name) else {
        let known: Vec<&str> = file.environments.keys().map(String::as_str).collect();
        return Err(CliError::Config(format!(
            "{name}: no [environments.{env_name}] (defined: {})",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        )));
    };
    let mut db = environment_config(e, &format!("{name}: [environments.{env_name}]"))?;
    tune(&mut db);
    let base = path.parent().unwrap_or(Path::new("."));
    let modules = if file.modules.is_empty() {
        vec![Module {
            name: "default".into(),
            migrations_path: base.join("migrations"),
            schema: e.schema.clone(),
            depends_on: Vec::new(),
            fleet: None,
        }]
    } else {
        let mut out = Vec::new();
        for (mname, m) in &file.modules {
            pgdbm::validate_identifier(mname, "module name")
                .map_err(|err| CliError::Config(format!("{name}: [modules.{mname}]: {err}")))?;
            let schema = m.schema.clone().unwrap_or_else(|| mname.clone());
            pgdbm::validate_identifier(&schema, "schema").map_err(|err| {
                CliError::Config(format!("{name}: [modules.{mname}] schema: {err}"))
            })?;
            for d in &m.depends_on {
                if !file.modules.contains_key(d) {
                    return Err(CliError::Config(format!(
                        "{name}: [modules.{mname}] depends_on {d:?}, which is not a module"
                    )));
                }
            }
            let rel = m
                .migrations_path
                .clone()
                .unwrap_or_else(|| format!("migrations/{mname}"));
            let fleet = match (&m.schemas, &m.schemas_query) {
                (Some(_), Some(_)) => {
                    return Err(CliError::Config(format!(
                        "{name}: [modules.{mname}] sets both schemas and schemas_query; keep one"
                    )))
                }
                (Some(p), None) => Some(Selector::Like(p.clone())),
                (None, Some(q)) => Some(Selector::Query(q.clone())),
                (None, None) => None,
            };
            out.push(Module {
                name: mname.clone(),
                migrations_path: base.join(rel),
                schema: Some(schema),
                depends_on: m.depends_on.clone(),
                fleet,
            });
        }
        out
    };
    let check = check_settings(&file.check, base, &modules, &name)?;
    Ok(Settings {
        source: name,
        env_name,
        db: Some(db),
        modules,
        check,
    })
}

fn check_settings(
    c: &CheckConfig,
    base: &Path,
    modules: &[Module],
    name: &str,
) -> CliResult<CheckSettings> {
    let known = |m: &str| -> CliResult<()> {
        if modules.iter().any(|x| x.name == m) {
            return Ok(());
        }
        Err(CliError::Config(format!(
            "{name}: [check] names module {m:?}, which is not a module"
        )))
    };
    if let Some(m) = &c.default_module {
        known(m)?;
    }
    let mut mapped = Vec::new();
    for (path, module) in &c.modules {
        known(module)?;
        mapped.push((base.join(path), module.clone()));
    }
    mapped.sort_by_key(|(p, _)| std::cmp::Reverse(p.as_os_str().len()));
    Ok(CheckSettings {
        base: base.to_path_buf(),
        paths: c.paths.iter().map(|p| base.join(p)).collect(),
        default_module: c.default_module.clone(),
        modules: mapped,
    })
}

fn environment_config(e: &Environment, at: &str) -> CliResult<DatabaseConfig> {
    let mut db = DatabaseConfig::default();
    if e.url.is_some() && e.connection_string.is_some() {
        return Err(CliError::Config(format!(
            "{at}: set `url` or `connection_string`, not both"
        )));
    }
    db.connection_string = e.url.clone().or_else(|| e.connection_string.clone());
    if let Some(h) = &e.host {
        db.host = h.clone();
    }
    match &e.port {
        Some(Port::Number(p)) => db.port = *p,
        Some(Port::Text(t)) => {
            db.port = t
                .trim()
                .parse()
                .map_err(|_| CliError::Config(format!("{at}: `port` {t:?} is not a port number")))?
        }
        None => {}
    }
    if let Some(d) = &e.database {
        db.database = d.clone();
    }
    if let Some(u) = &e.user {
        db.user = u.clone();
    }
    db.password = e.password.clone().filter(|p| !p.is_empty());
    if let Some(s) = &e.schema {
        pgdbm::validate_identifier(s, "schema")
            .map_err(|err| CliError::Config(format!("{at}: `schema`: {err}")))?;
    }
    // The environment's schema is the default module's; the pool itself is schemaless.
    db.schema = None;
    // libpq's modes: `disable` turns TLS off; `allow`/`prefer` (no verification, optional TLS)
    // become `require` when ssl_enabled is set and off otherwise; the verifying modes turn it on.
    let enabled = e.ssl_enabled.unwrap_or(false);
    (db.ssl_enabled, db.ssl_mode) = match e.ssl_mode.as_deref() {
        None => (enabled, None),
        Some("disable") => (false, None),
        Some("allow" | "prefer") => (enabled, enabled.then(|| "require".to_owned())),
        Some(mode) => (true, Some(mode.to_owned())),
    };
    db.ssl_ca_file = e.ssl_ca_file.clone();
    db.ssl_cert_file = e.ssl_cert_file.clone();
    db.ssl_key_file = e.ssl_key_file.clone();
    db.pooler = e.pooler.unwrap_or_default();
    db.direct_connection_string = e.direct_connection_string.clone();
    if let Some(mode) = e.reset_on_release {
        db.reset_on_release = mode;
    }
    if let Some(on) = e.multiplexing {
        db.multiplexing = on;
    }
    Ok(db)
}

impl Settings {
    /// The connection settings; in simple mode, an error when `DATABASE_URL` is not set.
    pub fn db(&self) -> CliResult<&DatabaseConfig> {
        self.db.as_ref().ok_or_else(|| {
            CliError::Config(format!(
                "no {DEFAULT_FILE} found and DATABASE_URL is not set: pass --config FILE or set DATABASE_URL"
            ))
        })
    }

    /// The modules to work on, dependencies first: all of them, or `only` and what it depends
    /// on. A cycle is an error naming it.
    pub fn ordered(&self, only: Option<&str>) -> CliResult<Vec<&Module>> {
        let by_name: BTreeMap<&str, &Module> =
            self.modules.iter().map(|m| (m.name.as_str(), m)).collect();
        let roots: Vec<&str> = match only {
            Some(name) => {
                pgdbm::validate_identifier(name, "module name")?;
                if !by_name.contains_key(name) {
                    return Err(CliError::Config(format!(
                        "{}: no module {name:?} (modules: {})",
                        self.source,
                        by_name.keys().copied().collect::<Vec<_>>().join(", ")
                    )));
                }
                vec![name]
            }
            None => by_name.keys().copied().collect(),
        };
        let mut done: Vec<&str> = Vec::new();
        let mut stack: Vec<&str> = Vec::new();
        for r in roots {
            visit(r, &by_name, &mut done, &mut stack)?;
        }
        Ok(done.into_iter().map(|n| by_name[n]).collect())
    }

    /// The one module `--module` names, or the only one there is.
    pub fn single(&self, only: Option<&str>) -> CliResult<&Module> {
        match only {
            Some(name) => Ok(*self
                .ordered(Some(name))?
                .last()
                .expect("ordered() includes the named module")),
            None if self.modules.len() == 1 => Ok(&self.modules[0]),
            None => Err(CliError::Usage(format!(
                "several modules are configured ({}); pass --module NAME",
                self.modules
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }
}

fn visit<'a>(
    name: &'a str,
    by_name: &BTreeMap<&'a str, &'a Module>,
    done: &mut Vec<&'a str>,
    stack: &mut Vec<&'a str>,
) -> CliResult<()> {
    if done.contains(&name) {
        return Ok(());
    }
    if let Some(at) = stack.iter().position(|s| *s == name) {
        let mut cycle: Vec<&str> = stack[at..].to_vec();
        cycle.push(name);
        return Err(CliError::Config(format!(
            "module dependency cycle: {}",
            cycle.join(" -> ")
        )));
    }
    stack.push(name);
    for d in &by_name[name].depends_on {
        let (key, _) = by_name
            .get_key_value(d.as_str())
            .ok_or_else(|| CliError::Config(format!("module {name:?} depends on unknown {d:?}")))?;
        visit(key, by_name, done, stack)?;
    }
    stack.pop();
    done.push(name);
    Ok(())
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
