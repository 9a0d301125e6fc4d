//! Migrations compiled into the binary, so a library crate can ship and apply its own.

use std::fmt;

/// A set of migration files baked into the binary at compile time, made by
/// [`embed_migrations!`](crate::embed_migrations) (a whole directory) or
/// [`EmbeddedMigrations::from_files`] (an explicit list). Apply it with
/// [`AsyncMigrationManager::from_embedded`](crate::AsyncMigrationManager::from_embedded).
///
/// ```no_run
/// static MIGRATIONS: pgdbm::EmbeddedMigrations =
///     // The directory of `.sql` files, relative to the crate's Cargo.toml.
///     pgdbm::embed_migrations!("$CARGO_MANIFEST_DIR/tests/fixtures/migrations");
///
/// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
/// pgdbm::AsyncMigrationManager::from_embedded(db, MIGRATIONS)
///     .module_name("billing")?
///     .apply_pending_migrations()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Copy)]
pub struct EmbeddedMigrations {
    inner: Inner,
}

#[derive(Clone, Copy)]
enum Inner {
    Dir(&'static include_dir::Dir<'static>),
    Files(&'static [(&'static str, &'static str)]),
}

impl EmbeddedMigrations {
    /// Used by [`embed_migrations!`](crate::embed_migrations); not part of the stable API.
    #[doc(hidden)]
    pub const fn __from_dir(dir: &'static include_dir::Dir<'static>) -> Self {
        EmbeddedMigrations {
            inner: Inner::Dir(dir),
        }
    }

    /// Migrations from an explicit list of `(filename, content)` pairs, for example built with
    /// `include_str!`. Filenames follow the same rules as on disk (`NNN_name.sql`).
    ///
    /// ```
    /// static MIGRATIONS: pgdbm::EmbeddedMigrations = pgdbm::EmbeddedMigrations::from_files(&[
    ///     ("001_users.sql", "CREATE TABLE {{tables.users}} (id serial PRIMARY KEY);"),
    /// ]);
    /// assert_eq!(MIGRATIONS.files().count(), 1);
    /// ```
    pub const fn from_files(files: &'static [(&'static str, &'static str)]) -> Self {
        EmbeddedMigrations {
            inner: Inner::Files(files),
        }
    }

    /// The embedded files at the top level of the directory, as `(filename, bytes)`, in no
    /// particular order. Subdirectories are not migrations and are left out.
    pub fn files(&self) -> impl Iterator<Item = (&'static str, &'static [u8])> {
        let (dir, list): (
            Option<&'static include_dir::Dir<'static>>,
            &'static [(&'static str, &'static str)],
        ) = match self.inner {
            Inner::Dir(d) => (Some(d), &[]),
            Inner::Files(f) => (None, f),
        };
        let from_dir = dir.into_iter().flat_map(|d| d.files()).filter_map(|f| {
            let name = f.path().file_name()?.to_str()?;
            Some((name, f.contents()))
        });
        from_dir.chain(list.iter().map(|(n, c)| (*n, c.as_bytes())))
    }
}

impl fmt::Debug for EmbeddedMigrations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.files().map(|(name, _)| name))
            .finish()
    }
}

/// Embeds a migrations directory in the binary at compile time and evaluates to an
/// [`EmbeddedMigrations`](crate::EmbeddedMigrations), usable in a `static`.
///
/// The path is resolved by the compiler, so start it with `$CARGO_MANIFEST_DIR` (expanded to
/// the directory of the crate's `Cargo.toml`). File contents are tracked, so editing a file
/// rebuilds the crate; a file *added* to the directory is only picked up on the next build of
/// the crate, so add `println!("cargo:rerun-if-changed=migrations");` to its `build.rs`.
///
/// ```no_run
/// static MIGRATIONS: pgdbm::EmbeddedMigrations =
///     // The directory of `.sql` files, relative to the crate's Cargo.toml.
///     pgdbm::embed_migrations!("$CARGO_MANIFEST_DIR/tests/fixtures/migrations");
/// ```
#[macro_export]
macro_rules! embed_migrations {
    ($path:tt) => {{
        use $crate::__include_dir as include_dir;
        static DIR: include_dir::Dir<'static> = include_dir::include_dir!($path);
        $crate::EmbeddedMigrations::__from_dir(&DIR)
    }};
}
