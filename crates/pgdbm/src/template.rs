//! `{{tables.x}}` and `{{schema}}` templates, and identifier validation.
//!
//! `{{tables.t}}` → `"schema".t` (or `t` without a schema); `{{tables.s.t}}` → `"s".t`;
//! `{{schema}}` → `"schema"` (without a schema, `{{schema}}.` disappears and a bare `{{schema}}`
//! becomes `public`). Anything that starts like a placeholder but is not a valid one is an
//! [`Error::Schema`](crate::Error::Schema): it never reaches the server as SQL the user did not
//! mean to write.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use lru::LruCache;

use crate::util::FxHasher;

use crate::error::{Error, Result};

const MAX_IDENT: usize = 63;
/// Rendered queries kept per manager; past this the cache is cleared and refilled.
const CACHE_LIMIT: usize = 4096;

/// Checks `^[A-Za-z_][A-Za-z0-9_]{0,62}$`.
pub(crate) fn validate_identifier(name: &str) -> std::result::Result<(), ()> {
    let bytes = name.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= MAX_IDENT
        && (bytes[0].is_ascii_alphabetic() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_');
    if ok {
        Ok(())
    } else {
        Err(())
    }
}

/// Validates an identifier, naming `what` it is in the error.
pub(crate) fn check_identifier(name: &str, what: &str) -> Result<()> {
    validate_identifier(name).map_err(|_| {
        Error::Schema(format!(
            "{what} {:?} is not a valid identifier: use letters, digits and underscores, starting \
             with a letter or underscore, at most 63 characters",
            shorten(name)
        ))
    })
}

/// Double-quotes an already validated identifier.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Cuts a user-supplied string for display in an error.
pub(crate) fn shorten(s: &str) -> Cow<'_, str> {
    if s.chars().count() <= 80 {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(format!("{}…", s.chars().take(80).collect::<String>()))
    }
}

/// Resolves a `table` or `schema.table` name the way `{{tables.…}}` does: the schema quoted, the
/// (validated) table name not, so it folds to lower case exactly like the templates.
pub(crate) fn qualify_table(name: &str, schema: Option<&str>) -> Result<String> {
    match name.split_once('.') {
        Some((s, t)) => {
            check_identifier(s, "schema")?;
            check_identifier(t, "table")?;
            Ok(format!("{}.{t}", quote_ident(s)))
        }
        None => {
            check_identifier(name, "table")?;
            Ok(match schema {
                Some(s) => format!("{}.{name}", quote_ident(s)),
                None => name.to_owned(),
            })
        }
    }
}

/// A rendered query: the caller's text when it had no templates, else the cached rendering.
#[derive(Debug, Clone)]
pub(crate) enum Rendered<'q> {
    Borrowed(&'q str),
    Shared(Arc<str>),
}

impl Rendered<'_> {
    pub(crate) fn into_owned(self) -> String {
        self.to_string()
    }

    pub(crate) fn into_arc(self) -> Arc<str> {
        match self {
            Rendered::Borrowed(s) => Arc::from(s),
            Rendered::Shared(s) => s,
        }
    }
}

impl std::ops::Deref for Rendered<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            Rendered::Borrowed(s) => s,
            Rendered::Shared(s) => s,
        }
    }
}

impl std::fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

impl PartialEq<&str> for Rendered<'_> {
    fn eq(&self, other: &&str) -> bool {
        &**self == *other
    }
}

/// Renders templates for one schema and remembers the results.
#[derive(Debug)]
pub(crate) struct Templates {
    schema: Option<String>,
    quoted_schema: Option<String>,
    cache: RwLock<HashMap<Box<str>, Arc<str>, BuildHasherDefault<FxHasher>>>,
}

impl Templates {
    pub(crate) fn new(schema: Option<&str>) -> Self {
        Templates {
            schema: schema.map(str::to_owned),
            quoted_schema: schema.map(quote_ident),
            cache: RwLock::new(HashMap::default()),
        }
    }

    pub(crate) fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// The query with templates applied. Queries without `{{` are returned as they are, without
    /// touching the cache; cached ones are shared, not copied.
    pub(crate) fn render<'q>(&self, query: &'q str) -> Result<Rendered<'q>> {
        if !has_braces(query) {
            return Ok(Rendered::Borrowed(query));
        }
        if let Some(hit) = self
            .cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(query)
        {
            return Ok(Rendered::Shared(hit.clone()));
        }
        let rendered: Arc<str> = Arc::from(self.render_uncached(query)?.as_str());
        if self.quoted_schema.is_some() {
            note_origin(&rendered, query);
        }
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(query.into(), rendered.clone());
        Ok(Rendered::Shared(rendered))
    }

    fn render_uncached(&self, query: &str) -> Result<String> {
        let mut out = String::with_capacity(query.len() + 32);
        let mut rest = query;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let tail = &rest[start..];
            if let Some(after) = tail.strip_prefix("{{tables.") {
                let end = after.find("}}").ok_or_else(|| malformed(tail))?;
                let inner = &after[..end];
                let (schema, table) = match inner.split_once('.') {
                    Some((s, t)) => (Some(s), t),
                    None => (None, inner),
                };
                if let Some(s) = schema {
                    validate_identifier(s).map_err(|_| malformed(tail))?;
                }
                validate_identifier(table).map_err(|_| malformed(tail))?;
                match (schema, &self.quoted_schema) {
                    (Some(s), _) => {
                        out.push_str(&quote_ident(s));
                        out.push('.');
                    }
                    (None, Some(q)) => {
                        out.push_str(q);
                        out.push('.');
                    }
                    (None, None) => {}
                }
                out.push_str(table);
                rest = &after[end + 2..];
            } else if let Some(after) = tail.strip_prefix("{{schema}}") {
                match &self.quoted_schema {
                    Some(q) => {
                        out.push_str(q);
                        rest = after;
                    }
                    None => match after.strip_prefix('.') {
                        Some(after_dot) => rest = after_dot,
                        None => {
                            out.push_str("public");
                            rest = after;
                        }
                    },
                }
            } else if tail.starts_with("{{schema") || tail.starts_with("{{tables") {
                return Err(malformed(tail));
            } else if let Some(inner) = placeholder_shaped(tail) {
                return Err(unknown_placeholder(inner));
            } else {
                // Not ours (e.g. a JSON literal): keep the braces and move on.
                out.push_str("{{");
                rest = &tail[2..];
            }
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// Whether `query` holds `{{`. A one-byte search (memchr) first: most queries have no brace
/// at all, and in a template the first brace usually opens a placeholder.
#[inline]
fn has_braces(query: &str) -> bool {
    let mut rest = query.as_bytes();
    while let Some(i) = memchr::memchr(b'{', rest) {
        rest = &rest[i + 1..];
        if rest.first() == Some(&b'{') {
            return true;
        }
    }
    false
}

/// Rendered texts remembered with their template; past this the least recently used go.
const ORIGINS_LIMIT: usize = 16_384;

type Origins = LruCache<Arc<str>, Arc<str>, BuildHasherDefault<FxHasher>>;

fn origins() -> &'static Mutex<Origins> {
    static ORIGINS: OnceLock<Mutex<Origins>> = OnceLock::new();
    // Unbounded for the crate, bounded here: `with_hasher(limit)` would allocate the whole
    // table up front.
    ORIGINS.get_or_init(|| Mutex::new(LruCache::unbounded_with_hasher(Default::default())))
}

fn note_origin(rendered: &Arc<str>, template: &str) {
    if &**rendered == template {
        return;
    }
    let mut origins = origins().lock().unwrap_or_else(|e| e.into_inner());
    origins.put(rendered.clone(), Arc::from(template));
    if origins.len() > ORIGINS_LIMIT {
        origins.pop_lru();
    }
}

/// The template a schema-qualified text was rendered from, if it was rendered recently: texts
/// of one template differ only in their schema (one per tenant, say), so what the server
/// inferred for one of them is a good first guess for the others.
///
/// A guess only: the same template may name different tables in different schemas, so callers
/// must be ready for the server to disagree.
pub(crate) fn template_of(rendered: &str) -> Option<Arc<str>> {
    origins()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(rendered)
        .cloned()
}

/// The inside of a `{{word}}` or `{{word.word…}}` at the start of `tail` (spaces allowed
/// around it), or `None` when the braces do not hold such a name (JSON in a literal, say).
fn placeholder_shaped(tail: &str) -> Option<&str> {
    let body = tail.strip_prefix("{{")?;
    let end = body.find("}}")?;
    let inner = body[..end].trim();
    let mut parts = inner.split('.');
    let first = parts.next()?;
    let word = |w: &str| {
        w.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && w.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    (word(first) && parts.all(word)).then_some(inner)
}

/// A placeholder-shaped text that is not one of ours, with the placeholder it probably meant.
fn unknown_placeholder(inner: &str) -> Error {
    let (head, rest) = match inner.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (inner, None),
    };
    let lower = head.to_ascii_lowercase();
    let suggestion = match rest {
        _ if lower.starts_with("schem") && rest.is_none() => "{{schema}}".to_owned(),
        Some(r) if lower.starts_with("tab") || lower.starts_with("tbl") => {
            format!("{{{{tables.{r}}}}}")
        }
        Some(r) => format!("{{{{tables.{head}.{r}}}}}"),
        None => format!("{{{{tables.{head}}}}}"),
    };
    Error::Schema(format!(
        "unknown template placeholder {{{{{}}}}}: did you mean `{suggestion}`? Placeholders are \
         {{{{tables.name}}}}, {{{{tables.schema.name}}}} and {{{{schema}}}}; they are recognised \
         anywhere in the text, string literals included, so send such text as a parameter",
        shorten(inner)
    ))
}

fn malformed(at: &str) -> Error {
    let shown: String = at.chars().take(60).collect();
    Error::Schema(format!(
        "malformed template placeholder near {shown:?}: use {{{{tables.name}}}}, \
         {{{{tables.schema.name}}}} or {{{{schema}}}} with identifiers of letters, digits and \
         underscores"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_placeholders_are_errors_with_a_hint() {
        let t = Templates::new(Some("app"));
        for (query, hint) in [
            ("SELECT * FROM {{table.orders}}", "{{tables.orders}}"),
            ("SELECT * FROM {{ tables.orders }}", "{{tables.orders}}"),
            ("SELECT * FROM {{orders}}", "{{tables.orders}}"),
            ("SET search_path = {{schemas}}", "{{schema}}"),
            ("SELECT '{{tbl.x}}'", "{{tables.x}}"),
        ] {
            match t.render(query) {
                Err(Error::Schema(m)) => assert!(m.contains(hint), "{query}: {m}"),
                other => panic!("{query}: {other:?}"),
            }
        }
        // Not placeholder-shaped: left alone.
        for query in [
            r#"SELECT '{"a": {"b": 1}}'::jsonb, '{{"x": 1}}'"#,
            "SELECT '{{}}', '{{1}}', '{{ a b }}'",
        ] {
            assert_eq!(t.render(query).unwrap(), query);
        }
    }

    #[test]
    fn remembered_origins_stay_bounded() {
        for n in 0..ORIGINS_LIMIT + 10 {
            let rendered: Arc<str> = Arc::from(format!("SELECT * FROM \"bound_{n}\".t").as_str());
            note_origin(&rendered, "SELECT * FROM {{tables.t}}");
        }
        assert!(origins().lock().unwrap().len() <= ORIGINS_LIMIT);
        // The most recent ones are kept.
        let last = format!("SELECT * FROM \"bound_{}\".t", ORIGINS_LIMIT + 9);
        assert_eq!(
            template_of(&last).as_deref(),
            Some("SELECT * FROM {{tables.t}}")
        );
    }

    #[test]
    fn finds_double_braces_only() {
        for (q, want) in [
            ("SELECT 1", false),
            ("SELECT '{\"a\": {\"b\": 1}}'", false),
            ("{", false),
            ("{{", true),
            ("x { y {{tables.t}}", true),
            ("SELECT * FROM {{tables.t}}", true),
            ("{ {", false),
        ] {
            assert_eq!(has_braces(q), want, "{q}");
        }
    }

    #[test]
    fn renders_with_schema() {
        let t = Templates::new(Some("myapp"));
        assert_eq!(
            t.render("SELECT * FROM {{tables.users}} WHERE x > $1")
                .unwrap(),
            r#"SELECT * FROM "myapp".users WHERE x > $1"#
        );
        assert_eq!(
            t.render("SELECT * FROM {{tables.other.users}}").unwrap(),
            r#"SELECT * FROM "other".users"#
        );
        assert_eq!(
            t.render("CREATE SCHEMA {{schema}}").unwrap(),
            r#"CREATE SCHEMA "myapp""#
        );
        assert_eq!(
            t.render("SELECT 1 FROM {{schema}}.t").unwrap(),
            r#"SELECT 1 FROM "myapp".t"#
        );
        // cached path gives the same
        assert_eq!(
            t.render("SELECT * FROM {{tables.other.users}}").unwrap(),
            r#"SELECT * FROM "other".users"#
        );
    }

    #[test]
    fn renders_without_schema() {
        let t = Templates::new(None);
        assert_eq!(
            t.render("SELECT * FROM {{tables.users}}").unwrap(),
            "SELECT * FROM users"
        );
        assert_eq!(
            t.render("SELECT 1 FROM {{schema}}.t").unwrap(),
            "SELECT 1 FROM t"
        );
        assert_eq!(
            t.render("SET search_path TO {{schema}}").unwrap(),
            "SET search_path TO public"
        );
    }

    #[test]
    fn camel_case_schema_is_quoted() {
        let t = Templates::new(Some("CamelCaseSchema"));
        assert_eq!(t.render("{{tables.t}}").unwrap(), r#""CamelCaseSchema".t"#);
    }

    #[test]
    fn rejects_malformed() {
        let t = Templates::new(Some("s"));
        for q in [
            "SELECT * FROM {{tables.bad; DROP.users}}",
            "SELECT * FROM {{tables.}}",
            "SELECT * FROM {{tables.a.b.c}}",
            "SELECT * FROM {{tables.users",
            "SELECT * FROM {{tables.1abc}}",
            "SELECT * FROM {{schema }}.x",
            "SELECT * FROM {{tables.x-y}}",
        ] {
            assert!(matches!(t.render(q), Err(Error::Schema(_))), "{q}");
        }
        // A placeholder-shaped name is an error even inside a literal; other braces stay.
        assert!(matches!(t.render("SELECT '{{a}}'"), Err(Error::Schema(_))));
        assert_eq!(t.render("SELECT '{{a b}}'").unwrap(), "SELECT '{{a b}}'");
    }

    #[test]
    fn identifiers() {
        for ok in [
            "public",
            "my_schema",
            "schema123",
            "_private_schema",
            "CamelCaseSchema",
            &"a".repeat(63),
        ] {
            assert!(validate_identifier(ok).is_ok(), "{ok}");
        }
        for bad in [
            "public\"; DROP TABLE users; --",
            "public' OR '1'='1",
            "public; DELETE FROM users WHERE 1=1; --",
            "public/*comment*/",
            "public-- comment",
            "123_invalid_start",
            "contains-hyphen",
            "contains space",
            &"a".repeat(64),
            "",
            "é",
        ] {
            assert!(validate_identifier(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn qualify() {
        assert_eq!(
            qualify_table("users", Some("app")).unwrap(),
            r#""app".users"#
        );
        assert_eq!(
            qualify_table("s.users", Some("app")).unwrap(),
            r#""s".users"#
        );
        assert_eq!(qualify_table("users", None).unwrap(), "users");
        assert!(qualify_table("a;b", None).is_err());
    }
}
