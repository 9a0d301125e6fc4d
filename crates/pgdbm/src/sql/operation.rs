//! What a statement does and to which table, read from its text for span names and metric
//! labels: `db.operation.name` (the first keyword) and `db.collection.name` (the one table it
//! names, if it names exactly one).

use crate::sql::lexer::{tokens, TokenKind};

/// The operation and collection of one statement, borrowed from its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Statement<'a> {
    /// The first keyword, as written (upper-cased by the caller where it matters).
    pub(crate) operation: Option<&'a str>,
    /// The one table the statement names, schema prefix and quotes as written.
    pub(crate) collection: Option<&'a str>,
}

/// Words after which a table name follows.
fn introduces_table(word: &str) -> bool {
    ["from", "join", "into", "update", "table", "copy"]
        .iter()
        .any(|k| word.eq_ignore_ascii_case(k))
}

/// Words that may sit between the introducing word and the name (`TABLE IF NOT EXISTS x`,
/// `FROM ONLY x`, `DELETE FROM LATERAL`...).
fn skipped_before_name(word: &str) -> bool {
    ["if", "not", "exists", "only", "lateral"]
        .iter()
        .any(|k| word.eq_ignore_ascii_case(k))
}

/// Words that end a table reference rather than alias it.
fn is_clause_word(word: &str) -> bool {
    [
        "where",
        "join",
        "inner",
        "left",
        "right",
        "full",
        "cross",
        "natural",
        "on",
        "using",
        "group",
        "order",
        "limit",
        "offset",
        "having",
        "window",
        "union",
        "except",
        "intersect",
        "for",
        "returning",
        "set",
        "values",
        "select",
        "default",
        "tablesample",
    ]
    .iter()
    .any(|k| word.eq_ignore_ascii_case(k))
}

/// Reads `sql` once. A name followed by `(` is a function (`FROM generate_series(…)`) and a
/// name defined by `WITH name AS (` is a CTE: neither is a table. Two different tables (a join,
/// a subquery on another table) leave the collection unknown.
pub(crate) fn classify(sql: &str) -> Statement<'_> {
    let toks: Vec<_> = tokens(sql)
        .filter(|t| {
            !matches!(
                t.kind,
                TokenKind::Space | TokenKind::LineComment | TokenKind::BlockComment
            )
        })
        .collect();
    let text = |i: usize| &sql[toks[i].start..toks[i].end];
    let is_word = |i: usize| i < toks.len() && toks[i].kind == TokenKind::Word;
    let operation = toks
        .iter()
        .find(|t| t.kind == TokenKind::Word)
        .map(|t| &sql[t.start..t.end]);
    let mut ctes: Vec<&str> = Vec::new();
    let mut collection: Option<&str> = None;
    let mut several = false;
    // After a name in a FROM list, a `,` introduces another.
    let mut in_from_list = false;
    let mut i = 0;
    while i < toks.len() {
        // `name AS (` inside a WITH clause: a CTE.
        if is_word(i)
            && is_word(i + 1)
            && text(i + 1).eq_ignore_ascii_case("as")
            && toks.get(i + 2).is_some_and(|t| t.kind == TokenKind::Open)
        {
            ctes.push(text(i));
        }
        let introducer = if is_word(i) && introduces_table(text(i)) {
            Some(text(i))
        } else if in_from_list && text(i) == "," {
            Some("from")
        } else {
            None
        };
        in_from_list = false;
        let Some(introducer) = introducer else {
            i += 1;
            continue;
        };
        let mut j = i + 1;
        while is_word(j) && skipped_before_name(text(j)) {
            j += 1;
        }
        // A name: one or more parts, bare words or quoted identifiers, joined by `.`.
        let is_name = |k: usize| {
            k < toks.len()
                && (toks[k].kind == TokenKind::Word
                    || (toks[k].kind == TokenKind::Other && text(k).starts_with('"')))
        };
        if !is_name(j) {
            i = j;
            continue;
        }
        let start = toks[j].start;
        let mut end = toks[j].end;
        let mut k = j + 1;
        while k + 1 < toks.len() && text(k) == "." && is_name(k + 1) {
            end = toks[k + 1].end;
            k += 2;
        }
        // In FROM and JOIN, `name(` is a function; after INTO, TABLE or COPY it opens a
        // column list.
        let reads =
            introducer.eq_ignore_ascii_case("from") || introducer.eq_ignore_ascii_case("join");
        let is_function = reads && toks.get(k).is_some_and(|t| t.kind == TokenKind::Open);
        let name = &sql[start..end];
        let is_stdio = name.eq_ignore_ascii_case("stdin") || name.eq_ignore_ascii_case("stdout");
        if !is_function && !is_stdio && !ctes.contains(&name) {
            match collection {
                None => collection = Some(name),
                Some(c) if c != name => several = true,
                Some(_) => {}
            }
        }
        if reads {
            // Skip an alias (`t AS x`, `t x`) so that a following `,` is seen.
            if is_word(k) && text(k).eq_ignore_ascii_case("as") {
                k += 1;
            }
            if is_word(k) && !is_clause_word(text(k)) {
                k += 1;
            }
            in_from_list = k < toks.len() && text(k) == ",";
        }
        i = k;
    }
    Statement {
        operation,
        collection: if several { None } else { collection },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(sql: &str) -> (Option<&str>, Option<&str>) {
        let s = classify(sql);
        (s.operation, s.collection)
    }

    #[test]
    fn one_table_is_the_collection() {
        assert_eq!(
            c(r#"SELECT * FROM "app".users WHERE id = $1"#),
            (Some("SELECT"), Some(r#""app".users"#))
        );
        assert_eq!(
            c("insert into t (a) values ($1)"),
            (Some("insert"), Some("t"))
        );
        assert_eq!(c("UPDATE s.t SET a = 1"), (Some("UPDATE"), Some("s.t")));
        assert_eq!(c("DELETE FROM ONLY t"), (Some("DELETE"), Some("t")));
        assert_eq!(
            c(r#"COPY "Mixed"."Case" (a) FROM STDIN"#),
            (Some("COPY"), Some(r#""Mixed"."Case""#))
        );
        assert_eq!(
            c("CREATE TABLE IF NOT EXISTS x.y (id int)"),
            (Some("CREATE"), Some("x.y"))
        );
        assert_eq!(
            c("SELECT a FROM t WHERE b IN (SELECT b FROM t)"),
            (Some("SELECT"), Some("t"))
        );
        assert_eq!(
            c("WITH w AS (SELECT * FROM t) SELECT * FROM w"),
            (Some("WITH"), Some("t"))
        );
    }

    #[test]
    fn no_or_several_tables_is_no_collection() {
        assert_eq!(c("SELECT 1"), (Some("SELECT"), None));
        assert_eq!(
            c("SELECT * FROM generate_series(1, 3)"),
            (Some("SELECT"), None)
        );
        assert_eq!(
            c("SELECT * FROM a JOIN b ON a.id = b.id"),
            (Some("SELECT"), None)
        );
        assert_eq!(c("SELECT * FROM a, b"), (Some("SELECT"), None));
        assert_eq!(c("SELECT * FROM a x, b AS y"), (Some("SELECT"), None));
        assert_eq!(
            c("SELECT * FROM a x WHERE true"),
            (Some("SELECT"), Some("a"))
        );
        assert_eq!(c("SELECT 'from x' AS y"), (Some("SELECT"), None));
        assert_eq!(c("-- from t\n BEGIN"), (Some("BEGIN"), None));
        assert_eq!(c(""), (None, None));
    }
}
