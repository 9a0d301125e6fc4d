//! The lexer's tests.

use super::*;

fn texts(sql: &str) -> Vec<&str> {
    lex(sql).pieces.into_iter().map(|p| p.text).collect()
}

fn statements(sql: &str) -> Vec<&str> {
    lex(sql)
        .pieces
        .into_iter()
        .filter(|p| p.significant)
        .map(|p| p.text.trim())
        .collect()
}

#[test]
fn plain_statements() {
    assert_eq!(
        texts("SELECT 1; SELECT 2;"),
        vec!["SELECT 1;", " SELECT 2;"]
    );
    assert_eq!(
        statements("SELECT 1;\nSELECT 2"),
        vec!["SELECT 1;", "SELECT 2"]
    );
    assert_eq!(statements(";;  ;"), vec![] as Vec<&str>);
    assert!(lex("").pieces.is_empty());
}

#[test]
fn single_quotes_with_doubled_quotes() {
    assert_eq!(
        statements("INSERT INTO t VALUES ('a;b', 'it''s; fine'); SELECT ';'"),
        vec!["INSERT INTO t VALUES ('a;b', 'it''s; fine');", "SELECT ';'"]
    );
    // A backslash is an ordinary character in a standard string.
    assert_eq!(
        statements(r"SELECT 'a\'; SELECT 2"),
        vec![r"SELECT 'a\';", "SELECT 2"]
    );
}

#[test]
fn escape_strings() {
    assert_eq!(
        statements(r"SELECT E'a\';b'; SELECT 2"),
        vec![r"SELECT E'a\';b';", "SELECT 2"]
    );
    assert_eq!(
        statements(r"SELECT e'\\'; SELECT 2"),
        vec![r"SELECT e'\\';", "SELECT 2"]
    );
    assert_eq!(
        statements(r"SELECT E'x''y;z\\'; SELECT 2"),
        vec![r"SELECT E'x''y;z\\';", "SELECT 2"]
    );
    // Only a lone E prefixes a string: `somee'…'` is an identifier then a standard string.
    assert_eq!(
        statements(r"SELECT somee'\'; SELECT 2"),
        vec![r"SELECT somee'\';", "SELECT 2"]
    );
    // An E string continued over a newline keeps its backslash escapes.
    assert_eq!(
        statements("SELECT E'a'\n  '\\';b'; SELECT 2"),
        vec!["SELECT E'a'\n  '\\';b';", "SELECT 2"]
    );
    // Without a newline it is not a continuation.
    assert_eq!(
        statements("SELECT E'a' '\\'; SELECT 2"),
        vec!["SELECT E'a' '\\';", "SELECT 2"]
    );
}

#[test]
fn other_string_prefixes() {
    assert_eq!(
        statements("SELECT B'01', X'ff', N'a;b'; SELECT 2"),
        vec!["SELECT B'01', X'ff', N'a;b';", "SELECT 2"]
    );
    assert_eq!(
        statements(r"SELECT U&'d\0061t;a'; SELECT 2"),
        vec![r"SELECT U&'d\0061t;a';", "SELECT 2"]
    );
    assert_eq!(
        statements(r#"SELECT 1 AS U&"a;b"; SELECT 2"#),
        vec![r#"SELECT 1 AS U&"a;b";"#, "SELECT 2"]
    );
}

#[test]
fn quoted_identifiers() {
    assert_eq!(
        statements(r#"CREATE TABLE "a;b" ("c""d;" int); SELECT 2"#),
        vec![r#"CREATE TABLE "a;b" ("c""d;" int);"#, "SELECT 2"]
    );
}

#[test]
fn dollar_quotes() {
    let body = "CREATE FUNCTION f() RETURNS int AS $$ BEGIN RETURN 1; END; $$ LANGUAGE plpgsql;";
    assert_eq!(
        statements(&format!("{body} SELECT 2;")),
        vec![body, "SELECT 2;"]
    );
    let tagged = "DO $body$ BEGIN RAISE NOTICE '$$;'; END $body$;";
    assert_eq!(
        statements(&format!("{tagged}\nSELECT 2")),
        vec![tagged, "SELECT 2"]
    );
    // Nested different tags.
    let nested = "DO $a$ BEGIN EXECUTE $b$ SELECT ';' $b$; END $a$;";
    assert_eq!(
        statements(&format!("{nested} SELECT 3")),
        vec![nested, "SELECT 3"]
    );
    // $1 is a parameter, not a quote; `a$b$` is one identifier.
    assert_eq!(
        statements("PREPARE p AS SELECT $1; SELECT a$b$c FROM t;"),
        vec!["PREPARE p AS SELECT $1;", "SELECT a$b$c FROM t;"]
    );
    // A lone $ is just a character.
    assert_eq!(
        statements("SELECT '$' || $ ; SELECT 2"),
        vec!["SELECT '$' || $ ;", "SELECT 2"]
    );
}

#[test]
fn comments() {
    assert_eq!(
        statements("-- a; b\nSELECT 1; -- c; d\nSELECT 2"),
        vec!["-- a; b\nSELECT 1;", "-- c; d\nSELECT 2"]
    );
    assert_eq!(
        statements("/* outer /* inner; */ still; comment */ SELECT 1; SELECT 2"),
        vec![
            "/* outer /* inner; */ still; comment */ SELECT 1;",
            "SELECT 2"
        ]
    );
    // A comment-only tail is not a statement.
    let lexed = lex("SELECT 1; -- done\n/* bye */");
    assert_eq!(lexed.pieces.len(), 2);
    assert!(!lexed.pieces[1].significant);
    // `--` inside a string is not a comment.
    assert_eq!(
        statements("SELECT '--'; SELECT 2"),
        vec!["SELECT '--';", "SELECT 2"]
    );
    // A line comment ends at a lone CR too.
    assert_eq!(
        statements("-- x;\rSELECT 1; SELECT 2"),
        vec!["-- x;\rSELECT 1;", "SELECT 2"]
    );
}

#[test]
fn parentheses_and_atomic_bodies() {
    assert_eq!(
        statements("SELECT (1; 2); SELECT 3"),
        vec!["SELECT (1; 2);", "SELECT 3"]
    );
    let atomic = "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true THEN 2 END; END;";
    assert_eq!(
        statements(&format!("{atomic} SELECT 3;")),
        vec![atomic, "SELECT 3;"]
    );
    let proc =
        "create or replace procedure p() language sql begin atomic insert into t values (1); end;";
    assert_eq!(
        statements(&format!("{proc} SELECT 3;")),
        vec![proc, "SELECT 3;"]
    );
    // BEGIN elsewhere does not nest.
    assert_eq!(
        statements("BEGIN; SELECT 1; COMMIT;"),
        vec!["BEGIN;", "SELECT 1;", "COMMIT;"]
    );
}

#[test]
fn unterminated_runs_to_the_end() {
    for sql in [
        "SELECT 'abc; SELECT 2",
        "SELECT \"abc; SELECT 2",
        "SELECT $$abc; SELECT 2",
        "/* abc; SELECT 2",
        "SELECT E'\\",
    ] {
        let lexed = lex(sql);
        assert_eq!(lexed.pieces.len(), 1, "{sql}");
        assert_eq!(lexed.pieces[0].text, sql);
    }
}

#[test]
fn leading_comment_block() {
    let lexed = lex("-- one\n/* two */\n-- pgdbm:no-transaction\nCREATE INDEX; -- later\n");
    let leading: Vec<_> = lexed
        .line_comments
        .iter()
        .filter(|c| c.leading)
        .map(|c| c.text)
        .collect();
    assert_eq!(leading, vec!["-- one", "-- pgdbm:no-transaction"]);
    assert_eq!(lexed.line_comments.iter().filter(|c| !c.leading).count(), 1);
    let lexed = lex("SELECT 1;\n-- pgdbm:no-transaction\n");
    assert!(!lexed.line_comments[0].leading);
    // An empty statement (`;`) ends the leading block too.
    assert!(!lex(";\n-- x").line_comments[0].leading);
}

#[test]
fn transaction_control_is_recognised() {
    let found = |sql: &str| -> Vec<String> {
        lex(sql)
            .pieces
            .iter()
            .filter_map(transaction_control)
            .collect()
    };
    assert_eq!(
        found("BEGIN; CREATE TABLE t (); COMMIT;"),
        vec!["BEGIN", "COMMIT"]
    );
    assert_eq!(
        found("begin transaction isolation level serializable; end;"),
        vec!["BEGIN TRANSACTION ISOLATION", "END"]
    );
    assert_eq!(
        found("START TRANSACTION; ROLLBACK; ABORT"),
        vec!["START TRANSACTION", "ROLLBACK", "ABORT"]
    );
    assert_eq!(
        found("PREPARE TRANSACTION 'x'; COMMIT PREPARED 'x'"),
        vec!["PREPARE TRANSACTION", "COMMIT PREPARED"]
    );
    assert!(
        found("SAVEPOINT a; ROLLBACK TO SAVEPOINT a; ROLLBACK WORK TO a; RELEASE a;").is_empty()
    );
    assert!(
        found("DO $$ BEGIN COMMIT; END $$; PREPARE q AS SELECT 1; SELECT 'BEGIN'; -- BEGIN\n")
            .is_empty()
    );
    assert!(
        found("CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END;")
            .is_empty()
    );
    assert_eq!(found("/* c */ -- x\n  Commit  ;"), vec!["COMMIT"]);
}

#[test]
fn lines() {
    assert_eq!(line_at("a\nb\nc", 0), 1);
    assert_eq!(line_at("a\nb\nc", 2), 2);
    assert_eq!(line_at("a\nb\nc", 99), 3);
    assert_eq!(line_at("é\nx", 1), 1);
}

/// Deterministic xorshift, so a failure reproduces.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const FRAGMENTS: &[&str] = &[
    "'",
    "''",
    "E'",
    "e'",
    "\\",
    "\\'",
    "\"",
    "\"\"",
    "$",
    "$$",
    "$a$",
    "$ab$",
    "$1",
    "a$b",
    ";",
    ";;",
    "--",
    "/*",
    "*/",
    "\n",
    "\r",
    "\r\n",
    " ",
    "\t",
    "(",
    ")",
    "BEGIN",
    "begin",
    "END",
    "CASE",
    "ATOMIC",
    "CREATE",
    "OR",
    "REPLACE",
    "FUNCTION",
    "PROCEDURE",
    "SELECT",
    "1",
    "x",
    "U&",
    "B'",
    "é",
    "€",
    "😀",
    "\u{feff}",
    "-",
    "/",
    "*",
    "E",
    "u&\"",
    ".",
    "{{tables.t}}",
];

fn check(sql: &str) {
    let lexed = lex(sql);
    let joined: String = lexed.pieces.iter().map(|p| p.text).collect();
    assert_eq!(joined, sql, "pieces must re-join to the input");
    let mut offset = 0;
    for (k, p) in lexed.pieces.iter().enumerate() {
        assert_eq!(p.offset, offset);
        assert!(p.start >= p.offset && p.start <= p.offset + p.text.len());
        offset += p.text.len();
        assert!(!p.text.is_empty());
        if k + 1 < lexed.pieces.len() {
            assert!(
                p.text.ends_with(';'),
                "{sql:?}: inner piece {:?} must end at a ;",
                p.text
            );
        }
        // A statement lexed on its own is still one statement.
        let again = lex(p.text);
        assert_eq!(
            again.pieces.len(),
            1,
            "{sql:?}: piece {:?} re-lexed into {:?}",
            p.text,
            again.pieces
        );
        let _ = transaction_control(p);
    }
    for c in &lexed.line_comments {
        assert!(c.text.starts_with("--"));
        assert_eq!(&sql[c.offset..c.offset + c.text.len()], c.text);
    }
    // Tokens are contiguous, non-empty, on char boundaries, and cover the input.
    let mut end = 0;
    for t in tokens(sql) {
        assert_eq!(t.start, end, "{sql:?}");
        assert!(t.end > t.start, "{sql:?}");
        assert!(sql.get(t.start..t.end).is_some(), "{sql:?}: {t:?}");
        end = t.end;
    }
    assert_eq!(end, sql.len(), "{sql:?}");
}

#[test]
fn fuzz_never_panics_and_loses_nothing() {
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    for _ in 0..40_000 {
        let len = rng.below(24);
        let sql: String = (0..len)
            .map(|_| FRAGMENTS[rng.below(FRAGMENTS.len())])
            .collect();
        check(&sql);
    }
}

#[test]
fn exhaustive_short_inputs() {
    // Every string of up to 5 characters over an alphabet of the lexer's special
    // characters.
    const ALPHABET: &[char] = &[
        '\'', '"', '$', ';', '-', '/', '*', '\\', 'E', '\n', '(', 'a',
    ];
    let mut current = vec![0usize; 0];
    loop {
        let sql: String = current.iter().map(|&k| ALPHABET[k]).collect();
        check(&sql);
        // Next string in shortlex order.
        let mut pos = current.len();
        loop {
            if pos == 0 {
                current.insert(0, 0);
                current.iter_mut().for_each(|k| *k = 0);
                break;
            }
            pos -= 1;
            current[pos] += 1;
            if current[pos] < ALPHABET.len() {
                break;
            }
            current[pos] = 0;
        }
        if current.len() > 5 {
            break;
        }
    }
}

#[test]
fn random_bytes_as_text() {
    let mut rng = Rng(42);
    for _ in 0..5_000 {
        let len = rng.below(64);
        let bytes: Vec<u8> = (0..len).map(|_| (rng.next() & 0xff) as u8).collect();
        check(&String::from_utf8_lossy(&bytes));
    }
}

/// Splitting statements that are known to be whole returns them unchanged.
#[test]
fn statements_round_trip() {
    let known = [
        "SELECT 'a;b'",
        "SELECT E'\\';'",
        r#"CREATE TABLE "x;y" (a int)"#,
        "DO $f$ BEGIN PERFORM 1; END $f$",
        "SELECT /* ; /* ; */ ; */ 1",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END",
        "SELECT (1;2)",
        "SELECT $$;$$ || $q$;$q$",
    ];
    let mut rng = Rng(7);
    for _ in 0..2_000 {
        let n = 1 + rng.below(6);
        let picked: Vec<&str> = (0..n).map(|_| known[rng.below(known.len())]).collect();
        let script = picked.iter().map(|s| format!("{s};\n")).collect::<String>();
        let got: Vec<String> = statements(&script)
            .into_iter()
            .map(|s| s.trim_end_matches(';').to_owned())
            .collect();
        assert_eq!(got, picked, "{script}");
    }
}
