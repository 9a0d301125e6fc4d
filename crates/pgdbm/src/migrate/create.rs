//! `create_migration`: a new numbered file in the migrations directory.

use super::*;

impl AsyncMigrationManager {
    /// Writes a new migration file `<UTC timestamp>_<name>.sql` with `content`, exactly as
    /// given (pgdbm wraps files in a transaction itself, so never add `BEGIN`/`COMMIT`; content
    /// that has them is refused). The name is sanitised to letters, digits and underscores; a
    /// name with a path in it is refused. The timestamp is `YYYYMMDD_HHMMSS` as Python pgdbm
    /// writes it, or `YYYYMMDDHHMMSS` when the directory's files use that longer form, so the
    /// new file sorts last. Never overwrites a file.
    ///
    /// ```no_run
    /// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
    /// let m = pgdbm::AsyncMigrationManager::new(db, "./migrations");
    /// let path = m.create_migration("add user email", "ALTER TABLE {{tables.users}} ADD email text;").await?;
    /// # Ok(()) }
    /// ```
    pub async fn create_migration(&self, name: &str, content: &str) -> Result<PathBuf> {
        let Source::Dir(dir) = &self.source else {
            return Err(migration_error(
                None,
                "these migrations are embedded in the binary; add the file to the source directory \
                 named in embed_migrations! and rebuild",
                None,
            ));
        };
        let clean = source::sanitize_name(name)?;
        if content.trim().is_empty() {
            return Err(migration_error(
                Some(&clean),
                "the content is empty; an empty migration is refused when applied, so pass its SQL",
                None,
            ));
        }
        if let Some(piece) = lexer::lex(content)
            .pieces
            .iter()
            .find(|p| lexer::transaction_control(p).is_some())
        {
            let words = lexer::transaction_control(piece).unwrap_or_default();
            return Err(migration_error(
                Some(&clean),
                format!(
                    "the content has `{words}` (line {}): pgdbm runs each migration in a transaction itself, \
                     so remove the transaction statements",
                    lexer::line_at(content, piece.start)
                ),
                None,
            ));
        }
        std::fs::create_dir_all(dir).map_err(|e| {
            migration_error(
                None,
                format!(
                    "cannot create the migrations directory {}: {e}",
                    dir.display()
                ),
                None,
            )
        })?;
        let now = chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now());
        let mut filename = format!("{}_{clean}.sql", now.format("%Y%m%d_%H%M%S"));
        let existing: Vec<String> = std::fs::read_dir(dir)
            .map(|it| {
                it.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        let sorts_first = |f: &str| {
            existing
                .iter()
                .any(|e| e.ends_with(".sql") && compare_filenames(f, e).is_lt())
        };
        if sorts_first(&filename) {
            filename = format!("{}_{clean}.sql", now.format("%Y%m%d%H%M%S"));
            if sorts_first(&filename) {
                tracing::warn!(
                    target: "pgdbm::migrations",
                    file = %filename,
                    "the new migration sorts before existing files in {}; rename it with a higher version",
                    dir.display()
                );
            }
        }
        let path = dir.join(&filename);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| {
                migration_error(
                    Some(&filename),
                    format!(
                        "cannot create {}: {e}. Choose another name or wait a second",
                        path.display()
                    ),
                    None,
                )
            })?;
        f.write_all(content.as_bytes()).map_err(|e| {
            migration_error(
                Some(&filename),
                format!("cannot write {}: {e}", path.display()),
                None,
            )
        })?;
        tracing::info!(target: "pgdbm::migrations", path = %path.display(), "created migration");
        Ok(path)
    }
}
