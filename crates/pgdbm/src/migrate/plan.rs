//! Planning a run: which files are pending, checked against what was applied, and each file prepared (rendered, split, checked for transaction control).

use super::*;

impl AsyncMigrationManager {
    /// Compares files with the recorded rows: what is pending, what was applied, what looks
    /// wrong. A changed applied file is an error.
    pub(super) fn plan(&self, files: Vec<Migration>, applied: &[MigrationRecord]) -> Result<Plan> {
        let mut by_name: HashMap<&str, &MigrationRecord> = HashMap::new();
        for r in applied {
            // A row of this module wins over a module-less one for the same file.
            let replace = match by_name.get(r.filename.as_str()) {
                None => true,
                Some(old) => old.module_name.is_none() && r.module_name.is_some(),
            };
            if replace {
                by_name.insert(&r.filename, r);
            }
        }
        let mut skipped: Vec<String> = by_name.keys().map(|s| (*s).to_owned()).collect();
        skipped.sort_by(|a, b| compare_filenames(a, b));
        let last_applied = skipped.last().cloned();

        let mut warnings = Vec::new();
        for name in &skipped {
            if !files.iter().any(|f| &f.filename == name) {
                warnings.push(format!(
                    "migration {name} is recorded as applied (module {:?}, table {}) but its file is missing \
                     from {}; restore the file if it was removed by mistake",
                    self.module,
                    self.qualified_table(),
                    self.source_description()
                ));
            }
        }

        let mut pending = Vec::new();
        for file in files {
            match by_name.get(file.filename.as_str()) {
                Some(rec) if rec.checksum != file.checksum => {
                    return Err(migration_error(
                        Some(&file.filename),
                        format!(
                            "the file was changed after it was applied: the tracking table {} recorded checksum \
                             {} but the file now has checksum {}. Nothing was applied. Applied migrations must \
                             not be edited: restore the original file and put the change in a new migration \
                             (in development only, you may delete its row to re-apply it)",
                            self.qualified_table(),
                            rec.checksum,
                            file.checksum
                        ),
                        None,
                    ));
                }
                Some(_) => {}
                None => {
                    if let Some(last) = &last_applied {
                        if compare_filenames(&file.filename, last).is_lt() {
                            warnings.push(format!(
                                "migration {} is new but sorts before the already applied {last}; it will be \
                                 applied now, out of order. Give it a higher version number if it depends on \
                                 later migrations",
                                file.filename
                            ));
                        }
                    }
                    pending.push(file);
                }
            }
        }
        Ok(Plan {
            pending,
            skipped,
            warnings,
        })
    }

    pub(super) fn log_warnings(&self, plan: &Plan) {
        for w in &plan.warnings {
            tracing::warn!(target: "pgdbm::migrations", module = %self.module, "{w}");
        }
    }

    /// Renders and checks a pending file before anything of the run is applied.
    pub(super) fn prepare<'m>(&self, m: &'m Migration) -> Result<Prepared<'m>> {
        let file = Some(m.filename.as_str());
        // The manager's own renderer caches every query it renders; a throwaway one with the
        // same schema keeps (possibly large) files out of that cache.
        let templates = Templates::new(self.db.schema());
        let sql = templates
            .render(strip_bom(&m.content))
            .map(|s| s.into_owned())
            .map_err(|e| {
                migration_error(
                    file,
                    format!("the file has an invalid template placeholder: {e}"),
                    Some(e),
                )
            })?;
        let lexed = lexer::lex(&sql);
        if let Some(c) = lexed
            .line_comments
            .iter()
            .find(|c| !c.leading && is_marker(c.text))
        {
            return Err(migration_error(
                file,
                format!(
                    "line {}: `{NO_TRANSACTION_MARKER}` only takes effect in the file's leading comment block, \
                     before the first statement; move it to the top of the file",
                    lexer::line_at(&sql, c.offset)
                ),
                None,
            ));
        }
        for piece in &lexed.pieces {
            if let Some(words) = lexer::transaction_control(piece) {
                return Err(migration_error(
                    file,
                    format!(
                        "line {}: `{words}` is not allowed in a migration. pgdbm runs each file in one transaction \
                         together with its tracking row, so the file is applied completely or not at all, and a \
                         transaction statement in the file would break that. Remove it. For statements that cannot \
                         run inside a transaction (CREATE INDEX CONCURRENTLY), put `{NO_TRANSACTION_MARKER}` in \
                         the file's leading comment block instead",
                        lexer::line_at(&sql, piece.start)
                    ),
                    None,
                ));
            }
        }
        let no_transaction = has_no_transaction_marker(&lexed);
        let statements = if no_transaction {
            lexed
                .pieces
                .iter()
                .filter(|p| p.significant)
                .map(|p| (lexer::line_at(&sql, p.start), p.text.to_owned()))
                .collect()
        } else {
            Vec::new()
        };
        Ok(Prepared {
            migration: m,
            sql,
            no_transaction,
            statements,
        })
    }
}
