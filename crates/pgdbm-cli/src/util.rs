//! Helpers shared by the command groups: connecting, confirming, printing.

use std::io::{BufRead, IsTerminal, Write};

use pgdbm::{AsyncDatabaseManager, DatabaseConfig, Pool};

use crate::error::{CliError, CliResult};

/// A pool on the configured database. It pins a neutral `search_path`, so every query here
/// names its schema.
pub async fn connect(db: &DatabaseConfig) -> CliResult<Pool> {
    Ok(AsyncDatabaseManager::create_shared_pool(db).await?)
}

/// A schemaless manager over a fresh pool on `db`.
pub async fn manager(db: &DatabaseConfig) -> CliResult<AsyncDatabaseManager> {
    Ok(AsyncDatabaseManager::from_pool(connect(db).await?, None)?)
}

/// The first column of the first row of a query that always returns one non-NULL value.
pub async fn value<T: pgdbm::tokio_postgres::types::FromSqlOwned>(
    m: &AsyncDatabaseManager,
    query: &str,
    params: &[&(dyn pgdbm::tokio_postgres::types::ToSql + Sync)],
) -> CliResult<T> {
    m.fetch_value(query, params)
        .await?
        .ok_or_else(|| CliError::Failed(format!("no value from {query}")))
}

/// The database the configuration points at.
pub fn database_name(db: &DatabaseConfig) -> CliResult<String> {
    let name = match &db.connection_string {
        Some(cs) => {
            let parsed: pgdbm::tokio_postgres::Config = cs.parse().map_err(|e| {
                CliError::Config(format!(
                    "cannot parse the connection string {}: {e}",
                    db.get_dsn_masked()
                ))
            })?;
            parsed
                .get_dbname()
                .or(parsed.get_user())
                .unwrap_or("postgres")
                .to_owned()
        }
        None => db.database.clone(),
    };
    pgdbm::validate_identifier(&name, "database name")?;
    Ok(name)
}

/// The same server and credentials, another database (for CREATE/DROP DATABASE).
pub fn with_database(db: &DatabaseConfig, name: &str) -> DatabaseConfig {
    let mut out = db.clone();
    match &db.connection_string {
        Some(cs) if cs.starts_with("postgres://") || cs.starts_with("postgresql://") => {
            let (main, query) = match cs.find('?') {
                Some(i) => (&cs[..i], &cs[i..]),
                None => (cs.as_str(), ""),
            };
            let scheme_end = main.find("://").map_or(0, |i| i + 3);
            let authority_start = main[scheme_end..]
                .rfind('@')
                .map_or(scheme_end, |i| scheme_end + i + 1);
            let host_part = match main[authority_start..].find('/') {
                Some(i) => &main[..authority_start + i],
                None => main,
            };
            out.connection_string = Some(format!("{host_part}/{name}{query}"));
        }
        Some(cs) => out.connection_string = Some(format!("{cs} dbname={name}")),
        None => out.database = name.to_owned(),
    }
    out
}

/// Double-quotes an identifier already checked by [`pgdbm::validate_identifier`].
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// For destructive commands: `--yes`, or a "y" typed on a terminal.
pub fn confirm(yes: bool, what: &str) -> CliResult<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Usage(format!(
            "refusing to {what} without confirmation: pass --yes when not running on a terminal"
        )));
    }
    eprint!("This will {what}. Continue? [y/N] ");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).ok();
    if matches!(line.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        Ok(())
    } else {
        Err(CliError::Failed("aborted".into()))
    }
}

/// Prints a JSON value on stdout.
pub fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swaps_the_database() {
        let db = DatabaseConfig {
            connection_string: Some("postgresql://u:p%2Fw@h:5432/app?sslmode=require".into()),
            ..Default::default()
        };
        assert_eq!(
            with_database(&db, "postgres").connection_string.as_deref(),
            Some("postgresql://u:p%2Fw@h:5432/postgres?sslmode=require")
        );
        let db = DatabaseConfig {
            connection_string: Some("postgresql://h".into()),
            ..Default::default()
        };
        assert_eq!(
            with_database(&db, "x").connection_string.as_deref(),
            Some("postgresql://h/x")
        );
        assert_eq!(database_name(&db).ok(), Some("postgres".to_owned()));
    }
}
