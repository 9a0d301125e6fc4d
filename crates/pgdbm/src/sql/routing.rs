//! Which statements are plain reads, safe to send to a replica in automatic routing.
//!
//! The verdict is conservative: anything this cannot prove read-only goes to the primary. A
//! plain read is one statement that starts with `SELECT`, `WITH`, `VALUES` or `TABLE`; has no
//! `INSERT`, `UPDATE`, `DELETE`, `MERGE`, `INTO`, `COPY` or `CALL` outside strings, comments
//! and quoted identifiers; no locking clause (`FOR UPDATE`, `FOR SHARE`, `FOR NO KEY UPDATE`,
//! `FOR KEY SHARE`); and calls only functions known to be read-only built-ins. It reads the
//! text only: a view or an operator that calls a writing function is not seen (the replica
//! then refuses the statement with SQLSTATE `25006`).

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::sync::{Arc, RwLock};

use crate::sql::lexer::{tokens, TokenKind};
use crate::util::FxHasher;

/// Words that may start a plain read.
const FIRST_WORDS: &[&str] = &["select", "with", "values", "table"];

/// Words that make a statement a write (or not a single plain query) wherever they stand.
const WRITE_WORDS: &[&str] = &[
    "insert", "update", "delete", "merge", "into", "copy", "call",
];

/// Reserved (or never-function) keywords that a `(` may follow without it being a call.
/// Non-reserved ones that a user function may be named after (`filter`, `range`, `rows`,
/// `cube`, ...) count as keywords only where the grammar puts them (see `keyword_call`).
const KEYWORDS_BEFORE_PAREN: &[&str] = &[
    "all",
    "and",
    "any",
    "array",
    "as",
    "between",
    "by",
    "case",
    "cast",
    "distinct",
    "else",
    "except",
    "exists",
    "extract",
    "fetch",
    "from",
    "group",
    "grouping",
    "having",
    "in",
    "intersect",
    "is",
    "join",
    "lateral",
    "limit",
    "not",
    "offset",
    "on",
    "only",
    "or",
    "overlay",
    "position",
    "row",
    "select",
    "some",
    "substring",
    "then",
    "trim",
    "union",
    "using",
    "values",
    "when",
    "where",
    "with",
];

/// Built-in functions (and type names used with a modifier, `numeric(10, 2)`) that only
/// read. Session-bound or writing ones (`nextval`, `setval`, `currval`, `set_config`,
/// `pg_advisory_lock`, `txid_current`, `pg_notify`, ...) are deliberately absent.
const READ_ONLY_FUNCTIONS: &[&str] = &[
    // Aggregates and window functions.
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "array_agg",
    "string_agg",
    "bool_and",
    "bool_or",
    "every",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "variance",
    "var_pop",
    "var_samp",
    "percentile_cont",
    "percentile_disc",
    "mode",
    "row_number",
    "rank",
    "dense_rank",
    "percent_rank",
    "cume_dist",
    "ntile",
    "lag",
    "lead",
    "first_value",
    "last_value",
    "nth_value",
    "json_agg",
    "jsonb_agg",
    "json_object_agg",
    "jsonb_object_agg",
    // Conditionals.
    "coalesce",
    "nullif",
    "greatest",
    "least",
    // Strings.
    "lower",
    "upper",
    "length",
    "char_length",
    "character_length",
    "octet_length",
    "concat",
    "concat_ws",
    "substr",
    "btrim",
    "ltrim",
    "rtrim",
    "replace",
    "split_part",
    "strpos",
    "left",
    "right",
    "lpad",
    "rpad",
    "initcap",
    "reverse",
    "repeat",
    "format",
    "md5",
    "encode",
    "decode",
    "starts_with",
    "regexp_replace",
    "regexp_match",
    "regexp_matches",
    "regexp_split_to_array",
    "translate",
    "quote_ident",
    "quote_literal",
    "to_hex",
    // Numbers.
    "abs",
    "round",
    "ceil",
    "ceiling",
    "floor",
    "trunc",
    "mod",
    "power",
    "sqrt",
    "exp",
    "ln",
    "log",
    "sign",
    "div",
    "width_bucket",
    // Dates and times.
    "now",
    "statement_timestamp",
    "transaction_timestamp",
    "clock_timestamp",
    "date_trunc",
    "date_part",
    "age",
    "make_date",
    "make_time",
    "make_timestamp",
    "make_timestamptz",
    "make_interval",
    "to_char",
    "to_date",
    "to_timestamp",
    "to_number",
    "date_bin",
    // JSON.
    "to_json",
    "to_jsonb",
    "row_to_json",
    "array_to_json",
    "json_build_object",
    "jsonb_build_object",
    "json_build_array",
    "jsonb_build_array",
    "json_array_length",
    "jsonb_array_length",
    "json_array_elements",
    "jsonb_array_elements",
    "json_array_elements_text",
    "jsonb_array_elements_text",
    "json_each",
    "jsonb_each",
    "json_each_text",
    "jsonb_each_text",
    "json_extract_path",
    "jsonb_extract_path",
    "json_extract_path_text",
    "jsonb_extract_path_text",
    "json_object_keys",
    "jsonb_object_keys",
    "json_typeof",
    "jsonb_typeof",
    "jsonb_strip_nulls",
    "jsonb_pretty",
    "jsonb_path_query",
    "jsonb_path_query_array",
    "jsonb_path_query_first",
    "jsonb_path_exists",
    "jsonb_path_match",
    "jsonb_set",
    "jsonb_insert",
    // Arrays and sets.
    "array_length",
    "array_position",
    "array_positions",
    "array_append",
    "array_prepend",
    "array_cat",
    "array_remove",
    "array_replace",
    "array_to_string",
    "string_to_array",
    "cardinality",
    "unnest",
    "generate_series",
    "generate_subscripts",
    // Full-text search.
    "to_tsvector",
    "to_tsquery",
    "plainto_tsquery",
    "phraseto_tsquery",
    "websearch_to_tsquery",
    "ts_rank",
    "ts_rank_cd",
    "ts_headline",
    "setweight",
    // System information (read-only, valid on a standby).
    "version",
    "current_setting",
    "current_database",
    "current_schema",
    "pg_is_in_recovery",
    "pg_backend_pid",
    "pg_last_wal_replay_lsn",
    "pg_last_wal_receive_lsn",
    "pg_last_xact_replay_timestamp",
    "gen_random_uuid",
    "random",
    // Type names with a modifier.
    "bit",
    "char",
    "character",
    "decimal",
    "float",
    "interval",
    "numeric",
    "time",
    "timestamp",
    "timestamptz",
    "varchar",
    "varying",
];

fn is_one_of(word: &str, list: &[&str]) -> bool {
    list.iter().any(|k| word.eq_ignore_ascii_case(k))
}

/// Names of functions that attribute notation can call (`j.claim` is `claim(j)`): functions
/// outside `pg_catalog` whose one required argument is a row or pseudo type. Read from a
/// replica's catalog by the health checks; `None` until first read, when any `x.name` counts
/// as a possible call.
pub(crate) type AttributeCalls = Option<Arc<HashSet<Box<str>>>>;

/// The health checks' query for [`AttributeCalls`]: the names, tab-separated.
pub(crate) const ATTRIBUTE_CALLS_SQL: &str =
    "SELECT coalesce(string_agg(DISTINCT p.proname, E'\\t'), '') \
     FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_type t ON t.oid = p.proargtypes[0] \
     WHERE p.pronargs >= 1 AND p.pronargs - p.pronargdefaults <= 1 \
     AND (t.typrelid <> 0 OR t.typtype = 'p') \
     AND p.pronamespace <> 'pg_catalog'::pg_catalog.regnamespace";

/// Whether `sql` is provably a plain read (see the module docs), with no attribute-notation
/// function known.
#[cfg(test)]
pub(crate) fn is_plain_read(sql: &str) -> bool {
    is_plain_read_with(sql, &Some(Arc::default()))
}

/// Whether `sql` is provably a plain read, `calls` naming the functions that attribute
/// notation could call.
pub(crate) fn is_plain_read_with(sql: &str, calls: &AttributeCalls) -> bool {
    let mut significant: Vec<(TokenKind, &str)> = Vec::new();
    for t in tokens(sql) {
        let text = &sql[t.start..t.end];
        match t.kind {
            TokenKind::Space | TokenKind::LineComment => {}
            TokenKind::BlockComment if text.ends_with("*/") && text.len() >= 4 => {}
            // What the lexer ran to the end of the input is not understood.
            TokenKind::BlockComment => return false,
            TokenKind::Other if unterminated(text) => return false,
            kind => significant.push((kind, text)),
        }
    }
    // One statement: a `;` may only end it.
    let end = match significant.iter().position(|t| t.0 == TokenKind::Semicolon) {
        Some(at)
            if significant[at..]
                .iter()
                .all(|t| t.0 == TokenKind::Semicolon) =>
        {
            at
        }
        Some(_) => return false,
        None => significant.len(),
    };
    let toks = &significant[..end];
    match toks.first() {
        Some((TokenKind::Word, w)) if is_one_of(w, FIRST_WORDS) => {}
        _ => return false,
    }
    for (i, &(kind, text)) in toks.iter().enumerate() {
        let prev = i.checked_sub(1).map(|p| toks[p]);
        let next_is_paren = toks.get(i + 1).is_some_and(|t| t.0 == TokenKind::Open);
        // `x.name` may be `name(x)`: a function call in attribute notation.
        if prev.is_some_and(|p| p.1 == ".") && !next_is_paren {
            let name = text.trim_matches('"');
            let callable = match calls {
                Some(names) => names.contains(name),
                None => true,
            };
            if callable {
                return false;
            }
        }
        match kind {
            TokenKind::Word => {
                if is_one_of(text, WRITE_WORDS) {
                    return false;
                }
                // FOR UPDATE / FOR NO KEY UPDATE / FOR SHARE / FOR KEY SHARE.
                if prev.is_some_and(|p| p.1.eq_ignore_ascii_case("for"))
                    && is_one_of(text, &["share", "no", "key", "update"])
                {
                    return false;
                }
                if next_is_paren && !call_is_read_only(toks, i) {
                    return false;
                }
            }
            // A quoted name before `(` is a function call, unless it names an alias's columns.
            TokenKind::Other
                if next_is_paren
                    && text.starts_with('"')
                    && !prev.is_some_and(|p| p.1.eq_ignore_ascii_case("as")) =>
            {
                return false;
            }
            _ => {}
        }
    }
    true
}

/// Whether a quoted token (string, quoted identifier, dollar-quoted body) lacks its end.
fn unterminated(text: &str) -> bool {
    // The prefix of `E'…'`, `B'…'`, `X'…'`, `N'…'`, `U&'…'`, `U&"…"`.
    let body = text.trim_start_matches(|c: char| c.is_ascii_alphabetic() || c == '&');
    match body.as_bytes().first() {
        Some(&q @ (b'\'' | b'"')) => body.len() < 2 || body.as_bytes()[body.len() - 1] != q,
        // `$tag$…$tag$`, but not a `$1` parameter.
        Some(b'$') if !body[1..].starts_with(|c: char| c.is_ascii_digit()) => {
            match body[1..].find('$') {
                Some(end) => {
                    let tag = &body[..end + 2];
                    body.len() < 2 * tag.len() || !body.ends_with(tag)
                }
                None => true,
            }
        }
        _ => false,
    }
}

/// Whether the word at `i`, followed by `(`, is a keyword, a type modifier, an alias's column
/// list, or a call of a read-only built-in.
fn call_is_read_only(toks: &[(TokenKind, &str)], i: usize) -> bool {
    let word = toks[i].1;
    let prev = |back: usize| i.checked_sub(back).map(|p| toks[p].1);
    // `x::numeric(10, 2)`: a type with its modifier.
    if prev(1) == Some(":") && prev(2) == Some(":") {
        return true;
    }
    // `AS t(a, b)`, `CAST(x AS varchar(10))`, `WITH d(a) AS (...)`.
    if prev(1).is_some_and(|p| is_one_of(p, &["as", "with", "recursive"])) {
        return true;
    }
    // A qualified name: only the catalog's own functions are known.
    if prev(1) == Some(".") {
        return prev(2).is_some_and(|s| s.eq_ignore_ascii_case("pg_catalog"))
            && is_one_of(word, READ_ONLY_FUNCTIONS);
    }
    is_one_of(word, KEYWORDS_BEFORE_PAREN)
        || keyword_call(word, prev(1))
        || is_one_of(word, READ_ONLY_FUNCTIONS)
}

/// A non-reserved keyword before `(` where the grammar puts it: `count(*) FILTER (...)`,
/// `OVER (...)`, `AS MATERIALIZED (...)`, `GROUP BY ROLLUP (...)`, `GROUPING SETS (...)`.
/// Anywhere else the same word is taken for a user function of that name.
fn keyword_call(word: &str, prev: Option<&str>) -> bool {
    let after = |words: &[&str]| prev.is_some_and(|p| is_one_of(p, words));
    if is_one_of(word, &["filter", "over"]) {
        prev == Some(")")
    } else if word.eq_ignore_ascii_case("materialized") {
        after(&["as", "not"])
    } else if is_one_of(word, &["rollup", "cube"]) {
        after(&["by"])
    } else if word.eq_ignore_ascii_case("sets") {
        after(&["grouping"])
    } else {
        false
    }
}

/// Verdicts by SQL text: an application sends the same few hundred texts over and over.
#[derive(Default)]
pub(crate) struct Verdicts {
    map: RwLock<HashMap<Box<str>, bool, BuildHasherDefault<FxHasher>>>,
    calls: RwLock<AttributeCalls>,
}

/// Texts remembered; past this the cache starts over (a workload of ever-new texts, say
/// with literals inlined, would otherwise grow it without bound).
const MAX_VERDICTS: usize = 4096;

impl Verdicts {
    pub(crate) fn is_plain_read(&self, sql: &str) -> bool {
        if let Some(&v) = self.map.read().unwrap_or_else(|e| e.into_inner()).get(sql) {
            return v;
        }
        let calls = self.calls.read().unwrap_or_else(|e| e.into_inner()).clone();
        let verdict = is_plain_read_with(sql, &calls);
        self.remember(sql, verdict);
        verdict
    }

    /// `sql` is not for replicas after all (a replica refused it): the primary from now on.
    pub(crate) fn not_for_replicas(&self, sql: &str) {
        self.remember(sql, false);
    }

    fn remember(&self, sql: &str, verdict: bool) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_VERDICTS {
            map.clear();
        }
        map.insert(sql.into(), verdict);
    }

    /// The functions attribute notation could call, as the health checks read them
    /// (tab-separated); verdicts drawn without them are dropped when they change.
    pub(crate) fn set_attribute_calls(&self, names: &str) {
        let set: HashSet<Box<str>> = names
            .split('\t')
            .filter(|n| !n.is_empty())
            .map(Box::from)
            .collect();
        let mut calls = self.calls.write().unwrap_or_else(|e| e.into_inner());
        if calls.as_deref() == Some(&set) {
            return;
        }
        *calls = Some(Arc::new(set));
        drop(calls);
        self.map.write().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

#[cfg(test)]
#[path = "routing_tests.rs"]
mod tests;
