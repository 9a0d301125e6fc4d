//! What a test database is migrated with: one or more migration sets, each into its schema.

use std::path::{Path, PathBuf};

pub(super) const TEMPLATE_PREFIX: &str = "pgdbm_tpl_";

use sha2::{Digest, Sha256};

use crate::config::DatabaseConfig;
use crate::error::{Error, Result};
use crate::manager::AsyncDatabaseManager;
use crate::migrate::{AsyncMigrationManager, EmbeddedMigrations};

/// Migrations to apply to a test database: a directory on disk or an embedded set.
#[derive(Debug, Clone)]
pub enum Migrations {
    /// A directory of `.sql` files.
    Dir(PathBuf),
    /// Migrations compiled into the binary with [`embed_migrations!`](crate::embed_migrations).
    Embedded(EmbeddedMigrations),
}

impl From<&str> for Migrations {
    fn from(p: &str) -> Self {
        Migrations::Dir(p.into())
    }
}

impl From<PathBuf> for Migrations {
    fn from(p: PathBuf) -> Self {
        Migrations::Dir(p)
    }
}

impl From<&Path> for Migrations {
    fn from(p: &Path) -> Self {
        Migrations::Dir(p.to_owned())
    }
}

impl From<EmbeddedMigrations> for Migrations {
    fn from(m: EmbeddedMigrations) -> Self {
        Migrations::Embedded(m)
    }
}

impl Migrations {
    pub(super) fn manager(&self, db: &AsyncDatabaseManager) -> AsyncMigrationManager {
        match self {
            Migrations::Dir(p) => AsyncMigrationManager::new(db, p),
            Migrations::Embedded(m) => AsyncMigrationManager::from_embedded(db, *m),
        }
    }

    /// The name of the template database built for this set applied into `schema`:
    /// `pgdbm_tpl_` and a hash of the file names, their checksums and the schema, so a new
    /// template is built whenever any of it changes.
    pub fn template_name(&self, schema: Option<&str>) -> Result<String> {
        let probe = AsyncDatabaseManager::new(DatabaseConfig {
            schema: schema.map(str::to_owned),
            ..DatabaseConfig::default()
        })?;
        let files = self.manager(&probe).find_migration_files()?;
        let mut h = Sha256::new();
        h.update(schema.unwrap_or("").as_bytes());
        for f in files {
            h.update(b"\n");
            h.update(f.filename.as_bytes());
            h.update(b":");
            h.update(f.checksum.as_bytes());
        }
        Ok(format!("{TEMPLATE_PREFIX}{}", short_hash(h)))
    }
}
/// The migration sets of one test database, in the order they are applied.
#[derive(Debug, Clone, Default)]
pub(super) struct Plan {
    /// `(schema, migrations, module name)`; `None` module = the migration manager's default.
    steps: Vec<(Option<String>, Migrations, Option<String>)>,
}

impl Plan {
    /// `migrations` into the manager's `schema`, then each module into the schema of its name.
    pub(super) fn new(
        schema: Option<&str>,
        migrations: Option<&Migrations>,
        modules: &[(String, Migrations)],
    ) -> Result<Plan> {
        let mut steps = Vec::new();
        if let Some(m) = migrations {
            steps.push((schema.map(str::to_owned), m.clone(), None));
        }
        for (name, m) in modules {
            crate::template::check_identifier(name, "module")
                .map_err(|e| Error::TestDatabase(e.to_string()))?;
            if steps.iter().any(|(s, _, _)| s.as_deref() == Some(name)) {
                return Err(Error::TestDatabase(format!(
                    "two migration sets for schema {name:?}: give each module its own name, \
                     e.g. migrations = [(\"users\", \"migrations/users\"), (\"orders\", \
                     \"migrations/orders\")]"
                )));
            }
            steps.push((Some(name.clone()), m.clone(), Some(name.clone())));
        }
        Ok(Plan { steps })
    }

    pub(super) fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The template database for this plan: a single set keeps
    /// [`Migrations::template_name`]; several hash all of theirs together.
    pub(super) fn template_name(&self) -> Result<String> {
        if let [(schema, m, _)] = &self.steps[..] {
            return m.template_name(schema.as_deref());
        }
        let mut h = Sha256::new();
        for (schema, m, _) in &self.steps {
            h.update(m.template_name(schema.as_deref())?.as_bytes());
            h.update(b"\n");
        }
        Ok(format!("{TEMPLATE_PREFIX}{}", short_hash(h)))
    }

    /// Applies every set, each through a manager of its schema on `db`'s pool, recorded under
    /// its module name.
    pub(super) async fn apply(&self, db: &AsyncDatabaseManager) -> Result<()> {
        for (schema, m, module) in &self.steps {
            let target = if schema.as_deref() == db.schema() {
                db.clone()
            } else {
                AsyncDatabaseManager::from_pool(db.pool()?, schema.as_deref())?
            };
            let mut manager = m.manager(&target);
            if let Some(module) = module {
                manager = manager.module_name(module)?;
            }
            manager.apply_pending_migrations().await?;
        }
        Ok(())
    }
}

fn short_hash(h: Sha256) -> String {
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}
