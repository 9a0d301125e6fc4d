//! Migration files: reading them from disk or from the binary, checksums, ordering.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::embed::EmbeddedMigrations;
use super::migration_error;
use crate::error::{Error, Result};
use crate::sql::lexer;

/// The marker that makes a file run statement by statement, outside a transaction.
pub(crate) const NO_TRANSACTION_MARKER: &str = "-- pgdbm:no-transaction";

/// The longest filename the tracking table's `VARCHAR(255)` column holds.
const MAX_FILENAME_CHARS: usize = 255;

/// One migration file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Migration {
    /// The file's name, e.g. `001_create_users.sql`; the key in the tracking table.
    pub filename: String,
    /// Lowercase hex SHA-256, computed exactly as Python pgdbm does (see
    /// [`Migration::checksum_of`]).
    pub checksum: String,
    /// The file's text with line endings normalised to `\n`, before templates are applied.
    pub content: String,
}

impl Migration {
    /// The checksum pgdbm (Python and Rust) records for a file with this text: lowercase hex
    /// SHA-256 of the text after `\r\n` and lone `\r` become `\n` and surrounding whitespace is
    /// removed as Python's `str.strip()` does (Unicode whitespace, including U+001C–U+001F; a
    /// byte-order mark is not whitespace and stays part of the text).
    ///
    /// ```
    /// use pgdbm::Migration;
    /// assert_eq!(Migration::checksum_of("SELECT 1;\r\n"), Migration::checksum_of("  SELECT 1;\n"));
    /// assert_eq!(Migration::checksum_of("SELECT 1;").len(), 64);
    /// ```
    pub fn checksum_of(text: &str) -> String {
        checksum_normalized(&normalize_newlines(text))
    }

    /// The version prefix of the filename as written (`"001"` for `001_users.sql`, `"3"` for
    /// `V3__x.sql`), or `None` when it has none. Files are applied in numeric version order,
    /// ties by filename; files without a version come last.
    pub fn version(&self) -> Option<&str> {
        version_of(&self.filename)
    }

    /// Whether the file's leading comment block holds `-- pgdbm:no-transaction`, so that its
    /// statements run one by one outside a transaction.
    pub fn is_no_transaction(&self) -> bool {
        has_no_transaction_marker(&lexer::lex(strip_bom(&self.content)))
    }
}

/// `\r\n` and lone `\r` become `\n`, as Python's universal-newline reading does.
pub(crate) fn normalize_newlines(text: &str) -> Cow<'_, str> {
    if text.contains('\r') {
        Cow::Owned(text.replace("\r\n", "\n").replace('\r', "\n"))
    } else {
        Cow::Borrowed(text)
    }
}

/// Python's `str.isspace()`: Unicode White_Space plus the four ASCII information separators.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fn checksum_normalized(normalized: &str) -> String {
    let digest = Sha256::digest(normalized.trim_matches(is_py_space).as_bytes());
    format!("{digest:x}")
}

/// The server would read a byte-order mark as part of the first word.
pub(crate) fn strip_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

pub(crate) fn has_no_transaction_marker(lexed: &lexer::Lexed<'_>) -> bool {
    lexed
        .line_comments
        .iter()
        .any(|c| c.leading && is_marker(c.text))
}

/// `-- pgdbm:no-transaction`, alone or followed by whitespace and a note, as Python pgdbm
/// accepts it.
pub(crate) fn is_marker(comment: &str) -> bool {
    comment
        .strip_prefix(NO_TRANSACTION_MARKER)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace))
}

fn version_of(filename: &str) -> Option<&str> {
    let digits = |s: &str| s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n = digits(filename);
    if n > 0 {
        return Some(&filename[..n]);
    }
    let rest = filename.strip_prefix('V')?;
    let n = digits(rest);
    (n > 0 && rest[n..].starts_with("__")).then(|| &rest[..n])
}

/// Numeric version order (any number of digits), ties and unversioned files by filename.
pub(crate) fn compare_filenames(a: &str, b: &str) -> Ordering {
    let key = |f: &str| {
        version_of(f).map(|v| {
            let v = v.trim_start_matches('0');
            (v.len(), v.to_owned())
        })
    };
    match (key(a), key(b)) {
        (Some(x), Some(y)) => x.cmp(&y).then_with(|| a.cmp(b)),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

/// Builds a migration from a file's bytes; every problem names the file.
pub(crate) fn build(filename: &str, bytes: &[u8]) -> Result<Migration> {
    if filename.chars().count() > MAX_FILENAME_CHARS {
        return Err(migration_error(
            Some(filename),
            format!("the filename is longer than {MAX_FILENAME_CHARS} characters, the size of the tracking table's filename column; rename the file"),
            None,
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        migration_error(
            Some(filename),
            format!(
                "the file is not valid UTF-8 (invalid byte at offset {}); save it with UTF-8 encoding",
                e.valid_up_to()
            ),
            None,
        )
    })?;
    let content = normalize_newlines(text).into_owned();
    if strip_bom(&content).trim_matches(is_py_space).is_empty() {
        return Err(migration_error(
            Some(filename),
            "the file is empty: write the migration's SQL in it, or delete it",
            None,
        ));
    }
    Ok(Migration {
        filename: filename.to_owned(),
        checksum: checksum_normalized(&content),
        content,
    })
}

fn sorted(mut migrations: Vec<Migration>) -> Vec<Migration> {
    migrations.sort_by(|a, b| compare_filenames(&a.filename, &b.filename));
    migrations
}

fn is_candidate(name: &str) -> bool {
    name.ends_with(".sql") && !name.starts_with('.')
}

/// Reads `*.sql` files (not hidden ones) directly inside `dir`. Symlinks must stay inside it.
pub(crate) fn load_dir(dir: &Path) -> Result<Vec<Migration>> {
    let root = dir.canonicalize().map_err(|e| {
        let cwd = std::env::current_dir()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        migration_error(
            None,
            format!(
                "cannot open the migrations directory {} ({e}; the current directory is {cwd}): \
                 create it, or pass the right path to AsyncMigrationManager::new",
                dir.display()
            ),
            None,
        )
    })?;
    let list_error = |e: std::io::Error| {
        migration_error(
            None,
            format!(
                "cannot list the migrations directory {}: {e}",
                root.display()
            ),
            None,
        )
    };
    let entries = std::fs::read_dir(&root).map_err(list_error)?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(list_error)?;
        let os_name = entry.file_name();
        let Some(name) = os_name.to_str() else {
            if os_name.to_string_lossy().ends_with(".sql") {
                return Err(migration_error(
                    Some(&os_name.to_string_lossy()),
                    "the filename is not valid UTF-8; rename the file",
                    None,
                ));
            }
            continue;
        };
        if !is_candidate(name) {
            continue;
        }
        let path = entry.path();
        let real = resolve_inside(&root, &path, name)?;
        if !real.is_file() {
            continue;
        }
        let bytes = std::fs::read(&real).map_err(|e| {
            migration_error(
                Some(name),
                format!("cannot read {}: {e}", path.display()),
                None,
            )
        })?;
        out.push(build(name, &bytes)?);
    }
    Ok(sorted(out))
}

/// The file's real path, refusing symlinks that lead outside the migrations directory.
fn resolve_inside(root: &Path, path: &Path, name: &str) -> Result<PathBuf> {
    let real = path.canonicalize().map_err(|e| {
        migration_error(
            Some(name),
            format!(
                "cannot resolve {} ({e}); a symlink pointing to a missing file? Fix or remove it",
                path.display()
            ),
            None,
        )
    })?;
    if !real.starts_with(root) {
        return Err(migration_error(
            Some(name),
            format!(
                "{} resolves to {}, outside the migrations directory {}; symlinks must point inside it. \
                 Copy the file into the directory instead",
                path.display(),
                real.display(),
                root.display()
            ),
            None,
        ));
    }
    Ok(real)
}

pub(crate) fn load_embedded(embedded: &EmbeddedMigrations) -> Result<Vec<Migration>> {
    let mut out = Vec::new();
    for (name, bytes) in embedded.files() {
        if is_candidate(name) {
            if out.iter().any(|m: &Migration| m.filename == name) {
                return Err(migration_error(
                    Some(name),
                    "this filename is embedded twice; give each file a unique name",
                    None,
                ));
            }
            out.push(build(name, bytes)?);
        }
    }
    Ok(sorted(out))
}

/// A migration name safe to use in a filename: letters, digits and underscores.
pub(crate) fn sanitize_name(name: &str) -> Result<String> {
    let bad = |why: &str| Error::Migration {
        file: Some(name.to_owned()),
        message: format!(
            "invalid migration name {:?}: {why}. Use a short description of letters, digits and \
                 underscores, such as \"add_user_email\"; pgdbm adds the timestamp and .sql",
            crate::template::shorten(name)
        ),
        source: None,
    };
    let trimmed = name.trim();
    let trimmed = trimmed.strip_suffix(".sql").unwrap_or(trimmed);
    if trimmed.is_empty() {
        return Err(bad("it is empty"));
    }
    if trimmed.contains(['/', '\\', '\0']) || trimmed.contains("..") || trimmed.starts_with('.') {
        return Err(bad("a name must not contain a path"));
    }
    let mut out = String::with_capacity(trimmed.len());
    for c in trimmed.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c);
        } else if c.is_whitespace() || c == '-' {
            if !out.ends_with('_') {
                out.push('_');
            }
        } else {
            return Err(bad(&format!("{c:?} is not allowed")));
        }
    }
    if out.len() > 200 {
        return Err(bad("it is too long"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known answers computed with Python: hashlib.sha256(text.strip().encode()).hexdigest()
    /// after universal-newline reading.
    #[test]
    fn checksums_match_python() {
        let base = Migration::checksum_of("CREATE TABLE t (id int);");
        assert_eq!(
            base,
            "32a1db02f656154be7fa359e4878a6f2770ee9269d598f0557c940690d614a23"
        );
        for variant in [
            "CREATE TABLE t (id int);\n",
            "\n\n  CREATE TABLE t (id int);  \t\n",
            "CREATE TABLE t (id int);\r\n",
            "\u{a0}\u{3000}CREATE TABLE t (id int);\u{2028}\u{1c}\u{1f}\u{85}",
        ] {
            assert_eq!(Migration::checksum_of(variant), base, "{variant:?}");
        }
        // CRLF, lone CR and LF inside the text are all the same line break.
        let lf = Migration::checksum_of("SELECT 1;\nSELECT 2;");
        assert_eq!(Migration::checksum_of("SELECT 1;\r\nSELECT 2;"), lf);
        assert_eq!(Migration::checksum_of("SELECT 1;\rSELECT 2;"), lf);
        assert_ne!(Migration::checksum_of("SELECT 1;\n\nSELECT 2;"), lf);
        assert_eq!(
            Migration::checksum_of("SELECT 1;\r\r\nSELECT 2;"),
            Migration::checksum_of("SELECT 1;\n\nSELECT 2;")
        );
        // A BOM is not whitespace for Python's str.strip(), so it changes the checksum.
        assert_eq!(
            Migration::checksum_of("\u{feff}CREATE TABLE t (id int);\n"),
            "e526c4987f2e126d64f710c6d4835152b0708de5598013845cea2e2b142ac1da"
        );
        // Zero-width space is not whitespace either.
        assert_ne!(
            Migration::checksum_of("\u{200b}CREATE TABLE t (id int);"),
            base
        );
    }

    #[test]
    fn versions_and_order() {
        let m = |f: &str| Migration {
            filename: f.into(),
            checksum: String::new(),
            content: String::new(),
        };
        assert_eq!(m("001_a.sql").version(), Some("001"));
        assert_eq!(m("V3__x.sql").version(), Some("3"));
        assert_eq!(m("V3_x.sql").version(), None);
        assert_eq!(m("20240101120000_ts.sql").version(), Some("20240101120000"));
        assert_eq!(m("init.sql").version(), None);
        let mut names = vec![
            "init.sql",
            "20240101120000_ts.sql",
            "10_ten.sql",
            "V3__three.sql",
            "2_two.sql",
            "2_alpha.sql",
            "001_one.sql",
            "99999999999999999999999_huge.sql",
            "0_zero.sql",
        ];
        names.sort_by(|a, b| compare_filenames(a, b));
        assert_eq!(
            names,
            vec![
                "0_zero.sql",
                "001_one.sql",
                "2_alpha.sql",
                "2_two.sql",
                "V3__three.sql",
                "10_ten.sql",
                "20240101120000_ts.sql",
                "99999999999999999999999_huge.sql",
                "init.sql",
            ]
        );
    }

    #[test]
    fn build_rejects_bad_files() {
        for (bytes, needle) in [
            (&b""[..], "empty"),
            (b" \n\t\r\n ", "empty"),
            (b"\xef\xbb\xbf \n", "empty"),
            (b"SELECT 1; \xff\xfe", "UTF-8"),
        ] {
            match build("001_x.sql", bytes) {
                Err(Error::Migration { file, message, .. }) => {
                    assert_eq!(file.as_deref(), Some("001_x.sql"));
                    assert!(message.contains(needle), "{message}");
                }
                other => panic!("{other:?}"),
            }
        }
        let long = format!("{}.sql", "a".repeat(300));
        assert!(build(&long, b"SELECT 1").is_err());
        let m = build("001_x.sql", b"SELECT 1;\r\n").unwrap();
        assert_eq!(m.content, "SELECT 1;\n");
    }

    #[test]
    fn marker() {
        let m = |c: &str| Migration {
            filename: "1_x.sql".into(),
            checksum: String::new(),
            content: c.into(),
        };
        assert!(
            m("-- pgdbm:no-transaction\nCREATE INDEX CONCURRENTLY i ON t (a);").is_no_transaction()
        );
        assert!(
            m("\u{feff}-- header\n/* c */\n-- pgdbm:no-transaction because CIC\nSELECT 1")
                .is_no_transaction()
        );
        assert!(!m("SELECT 1;\n-- pgdbm:no-transaction\n").is_no_transaction());
        assert!(!m("-- pgdbm:no-transactional\nSELECT 1").is_no_transaction());
        assert!(!m("SELECT '\n-- pgdbm:no-transaction\n'").is_no_transaction());
    }

    #[test]
    fn names() {
        assert_eq!(sanitize_name("add users").unwrap(), "add_users");
        assert_eq!(
            sanitize_name(" add-user  email.sql ").unwrap(),
            "add_user_email"
        );
        for bad in [
            "../x",
            "a/b",
            "..",
            ".hidden",
            "",
            "   ",
            "a\\b",
            "drop;table",
            "naïve",
            "a\0b",
        ] {
            assert!(
                matches!(sanitize_name(bad), Err(Error::Migration { .. })),
                "{bad:?}"
            );
        }
    }
}
