//! A PostgreSQL lexer deep enough to split a script into statements the way the server and
//! psql see them.
//!
//! It knows `'…'` strings with `''`, `E'…'` strings with backslash escapes (including their
//! continuation over a newline), `B''`/`X''`/`N''`/`U&''` strings, `"…"` identifiers (`U&"…"`
//! too), `$tag$…$tag$` bodies, `$1` parameters, `--` comments, nested `/* */` comments,
//! parentheses, and psql's rule for SQL-standard function bodies (`CREATE FUNCTION … BEGIN ATOMIC
//! … END`), whose inner `;` do not end the statement. It assumes `standard_conforming_strings =
//! on`, the default since PostgreSQL 9.1.
//!
//! The lexer never fails and never loses input: the pieces it returns, joined, are exactly the
//! input. Unterminated quotes or comments run to the end of the input, so the server reports
//! them with its own message.

/// One statement of a script: its exact text, up to and including its terminating `;` (the
/// last piece may have none), with the whitespace and comments that precede it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Piece<'a> {
    pub(crate) text: &'a str,
    /// Byte offset of `text` in the script.
    pub(crate) offset: usize,
    /// Whether it holds anything but whitespace and comments.
    pub(crate) significant: bool,
    /// Byte offset of its first token in the script (`offset` when it has none).
    pub(crate) start: usize,
    /// The first three tokens of the statement, lower-cased when they are bare words; `None`
    /// for any other token. Enough to recognise transaction control statements.
    pub(crate) head: [Option<String>; 3],
}

/// A `--` comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LineComment<'a> {
    pub(crate) text: &'a str,
    pub(crate) offset: usize,
    /// It comes before the first token of the script (the leading comment block).
    pub(crate) leading: bool,
}

/// A lexed script.
#[derive(Debug, Clone, Default)]
pub(crate) struct Lexed<'a> {
    pub(crate) pieces: Vec<Piece<'a>>,
    pub(crate) line_comments: Vec<LineComment<'a>>,
}

fn ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn ident_cont(b: u8) -> bool {
    ident_start(b) || b.is_ascii_digit() || b == b'$'
}

fn dolq_cont(b: u8) -> bool {
    ident_start(b) || b.is_ascii_digit()
}

/// Per-statement state, reset after every top-level `;`.
#[derive(Default)]
struct StatementState {
    paren_depth: u32,
    begin_depth: u32,
    /// psql's `identifiers[]`: the first letters of the leading words when they are one of
    /// create / or / replace / function / procedure.
    identifiers: [u8; 4],
    identifier_count: usize,
    head: [Option<String>; 3],
    head_len: usize,
    significant: bool,
    start: Option<usize>,
}

impl StatementState {
    fn token(&mut self, at: usize, word: Option<&str>) {
        self.significant = true;
        self.start.get_or_insert(at);
        if self.head_len < 3 {
            self.head[self.head_len] = word.map(str::to_ascii_lowercase);
            self.head_len += 1;
        }
    }

    /// psql's heuristic (psqlscan.l): inside `CREATE [OR REPLACE] FUNCTION|PROCEDURE`, outside
    /// parentheses, BEGIN … END (and CASE … END within it) nest, and `;` inside do not end
    /// the statement.
    fn identifier(&mut self, word: &str) {
        let lower = word.to_ascii_lowercase();
        if self.identifier_count == 0 {
            self.identifiers = [0; 4];
        }
        if matches!(
            lower.as_str(),
            "create" | "function" | "procedure" | "or" | "replace"
        ) && self.identifier_count < self.identifiers.len()
        {
            self.identifiers[self.identifier_count] = lower.as_bytes()[0];
        }
        self.identifier_count += 1;
        let ids = self.identifiers;
        let in_routine = ids[0] == b'c'
            && (ids[1] == b'f'
                || ids[1] == b'p'
                || (ids[1] == b'o' && ids[2] == b'r' && (ids[3] == b'f' || ids[3] == b'p')));
        if in_routine && self.paren_depth == 0 {
            match lower.as_str() {
                "begin" => self.begin_depth += 1,
                "case" if self.begin_depth >= 1 => self.begin_depth += 1,
                "end" if self.begin_depth > 0 => self.begin_depth -= 1,
                _ => {}
            }
        }
    }
}

struct Lexer<'a> {
    src: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Lexer<'a> {
    fn peek(&self, at: usize) -> Option<u8> {
        self.b.get(at).copied()
    }

    /// From just after an opening `'`: to just after the closing one. `''` is a quote; with
    /// `backslash`, `\` escapes the next byte (E'' strings).
    fn quoted(&mut self, backslash: bool) {
        while self.i < self.b.len() {
            match self.b[self.i] {
                b'\\' if backslash => self.i += 2,
                b'\'' => {
                    if self.peek(self.i + 1) == Some(b'\'') {
                        self.i += 2;
                    } else {
                        self.i += 1;
                        return;
                    }
                }
                _ => self.i += 1,
            }
        }
        self.i = self.b.len();
    }

    /// After a closed string: whitespace containing a newline (comments allowed) followed by
    /// `'` continues the same string. Returns whether it does, positioned after that quote.
    fn continuation(&mut self) -> bool {
        let mut j = self.i;
        let mut newline = false;
        loop {
            match self.peek(j) {
                Some(b' ' | b'\t' | b'\x0c' | b'\x0b') => j += 1,
                Some(b'\n' | b'\r') => {
                    newline = true;
                    j += 1;
                }
                Some(b'-') if self.peek(j + 1) == Some(b'-') => {
                    while !matches!(self.peek(j), None | Some(b'\n' | b'\r')) {
                        j += 1;
                    }
                }
                Some(b'\'') if newline => {
                    self.i = j + 1;
                    return true;
                }
                _ => return false,
            }
        }
    }

    /// From just after an opening `"`: to just after the closing one (`""` is a quote).
    fn quoted_ident(&mut self) {
        while self.i < self.b.len() {
            if self.b[self.i] == b'"' {
                if self.peek(self.i + 1) == Some(b'"') {
                    self.i += 2;
                } else {
                    self.i += 1;
                    return;
                }
            } else {
                self.i += 1;
            }
        }
    }

    /// At a `/*`: to just after its matching `*/`, nesting like the server does.
    fn block_comment(&mut self) {
        let mut depth = 0u32;
        while self.i < self.b.len() {
            if self.b[self.i] == b'/' && self.peek(self.i + 1) == Some(b'*') {
                depth += 1;
                self.i += 2;
            } else if self.b[self.i] == b'*' && self.peek(self.i + 1) == Some(b'/') {
                depth -= 1;
                self.i += 2;
                if depth == 0 {
                    return;
                }
            } else {
                self.i += 1;
            }
        }
        self.i = self.b.len();
    }

    /// At a `$`: a dollar-quoted body (to after its closing tag), a `$n` parameter, or a lone
    /// `$` character.
    fn dollar(&mut self) {
        let start = self.i;
        let mut j = start + 1;
        if self.peek(j).is_some_and(|c| c.is_ascii_digit()) {
            while self.peek(j).is_some_and(|c| c.is_ascii_digit()) {
                j += 1;
            }
            self.i = j;
            return;
        }
        if self.peek(j).is_some_and(ident_start) {
            while self.peek(j).is_some_and(dolq_cont) {
                j += 1;
            }
        }
        if self.peek(j) != Some(b'$') {
            self.i = start + 1;
            return;
        }
        let tag = &self.src[start..=j];
        match self.src[j + 1..].find(tag) {
            Some(k) => self.i = j + 1 + k + tag.len(),
            None => self.i = self.b.len(),
        }
    }
}

/// What [`Lexer::next_token`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenKind {
    /// A `--` comment (without its newline).
    LineComment,
    /// A `/* */` comment, nested ones included.
    BlockComment,
    /// One whitespace byte.
    Space,
    /// A bare word: keyword or unquoted identifier.
    Word,
    /// `(`
    Open,
    /// `)`
    Close,
    /// `;`
    Semicolon,
    /// Anything else: a string of any kind, a quoted identifier, a dollar-quoted body, a
    /// number, a `$n` parameter, an operator or punctuation byte.
    Other,
}

/// One token of [`tokens`]: its kind and its byte range in the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token {
    pub(crate) kind: TokenKind,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

impl Lexer<'_> {
    /// The next token, `None` at the end of the input.
    fn next_token(&mut self) -> Option<Token> {
        let c = *self.b.get(self.i)?;
        let start = self.i;
        let kind = match c {
            b'-' if self.peek(self.i + 1) == Some(b'-') => {
                while !matches!(self.peek(self.i), None | Some(b'\n' | b'\r')) {
                    self.i += 1;
                }
                TokenKind::LineComment
            }
            b'/' if self.peek(self.i + 1) == Some(b'*') => {
                self.block_comment();
                TokenKind::BlockComment
            }
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' | b'\x0b' => {
                self.i += 1;
                TokenKind::Space
            }
            b'\'' => {
                self.i += 1;
                self.quoted(false);
                TokenKind::Other
            }
            b'"' => {
                self.i += 1;
                self.quoted_ident();
                TokenKind::Other
            }
            b'$' => {
                self.dollar();
                TokenKind::Other
            }
            b'0'..=b'9' => {
                while self
                    .peek(self.i)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.')
                {
                    self.i += 1;
                }
                TokenKind::Other
            }
            c if ident_start(c) => {
                while self.peek(self.i).is_some_and(ident_cont) {
                    self.i += 1;
                }
                let word = &self.src[start..self.i];
                let next = self.peek(self.i);
                if word.eq_ignore_ascii_case("e") && next == Some(b'\'') {
                    self.i += 1;
                    self.quoted(true);
                    while self.continuation() {
                        self.quoted(true);
                    }
                    TokenKind::Other
                } else if matches!(word, "b" | "B" | "x" | "X" | "n" | "N") && next == Some(b'\'') {
                    self.i += 1;
                    self.quoted(false);
                    TokenKind::Other
                } else if word.eq_ignore_ascii_case("u")
                    && next == Some(b'&')
                    && self.peek(self.i + 2) == Some(b'\'')
                {
                    self.i += 2;
                    self.quoted(false);
                    TokenKind::Other
                } else if word.eq_ignore_ascii_case("u")
                    && next == Some(b'&')
                    && self.peek(self.i + 2) == Some(b'"')
                {
                    self.i += 2;
                    self.quoted_ident();
                    TokenKind::Other
                } else {
                    TokenKind::Word
                }
            }
            b'(' => {
                self.i += 1;
                TokenKind::Open
            }
            b')' => {
                self.i += 1;
                TokenKind::Close
            }
            b';' => {
                self.i += 1;
                TokenKind::Semicolon
            }
            _ => {
                self.i += 1;
                TokenKind::Other
            }
        };
        Some(Token {
            kind,
            start,
            end: self.i,
        })
    }
}

/// The tokens of `sql`, comments and whitespace included; joined, they are exactly the input.
pub(crate) fn tokens(sql: &str) -> impl Iterator<Item = Token> + '_ {
    let mut lx = Lexer {
        src: sql,
        b: sql.as_bytes(),
        i: 0,
    };
    std::iter::from_fn(move || lx.next_token())
}

/// Splits `sql` into statements and collects its line comments.
pub(crate) fn lex(sql: &str) -> Lexed<'_> {
    let n = sql.len();
    let mut out = Lexed::default();
    let mut st = StatementState::default();
    let mut piece_start = 0;
    let mut any_token = false;

    for tok in tokens(sql) {
        let at = tok.start;
        match tok.kind {
            TokenKind::LineComment => {
                out.line_comments.push(LineComment {
                    text: &sql[tok.start..tok.end],
                    offset: tok.start,
                    leading: !any_token,
                });
            }
            TokenKind::BlockComment | TokenKind::Space => {}
            TokenKind::Word => {
                let word = &sql[tok.start..tok.end];
                st.token(at, Some(word));
                st.identifier(word);
            }
            TokenKind::Open => {
                st.paren_depth += 1;
                st.token(at, None);
            }
            TokenKind::Close => {
                st.paren_depth = st.paren_depth.saturating_sub(1);
                st.token(at, None);
            }
            TokenKind::Semicolon => {
                if st.paren_depth == 0 && st.begin_depth == 0 {
                    let head = std::mem::take(&mut st.head);
                    out.pieces.push(Piece {
                        text: &sql[piece_start..tok.end],
                        offset: piece_start,
                        significant: st.significant,
                        start: st.start.unwrap_or(piece_start),
                        head,
                    });
                    piece_start = tok.end;
                    st = StatementState::default();
                    any_token = true;
                    continue;
                }
                st.token(at, None);
            }
            TokenKind::Other => st.token(at, None),
        }
        any_token |= st.significant;
    }
    if piece_start < n {
        out.pieces.push(Piece {
            text: &sql[piece_start..],
            offset: piece_start,
            significant: st.significant,
            start: st.start.unwrap_or(piece_start),
            head: st.head,
        });
    }
    out
}

/// Whether a statement ends or opens a transaction (which would break the per-file atomicity);
/// returns the words that make it so. Savepoints are fine.
pub(crate) fn transaction_control(piece: &Piece<'_>) -> Option<String> {
    let w = |k: usize| piece.head[k].as_deref();
    let found = match w(0)? {
        "begin" | "commit" | "end" | "abort" => true,
        "start" | "prepare" => w(1) == Some("transaction"),
        "rollback" => {
            !(w(1) == Some("to")
                || (matches!(w(1), Some("work" | "transaction")) && w(2) == Some("to")))
        }
        _ => false,
    };
    found.then(|| {
        piece
            .head
            .iter()
            .map_while(|x| x.as_deref())
            .collect::<Vec<_>>()
            .join(" ")
            .to_ascii_uppercase()
    })
}

/// 1-based line number of byte `offset` in `text`.
pub(crate) fn line_at(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    let end = (0..=end)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    text[..end].bytes().filter(|&b| b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
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
        let body =
            "CREATE FUNCTION f() RETURNS int AS $$ BEGIN RETURN 1; END; $$ LANGUAGE plpgsql;";
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
        let proc = "create or replace procedure p() language sql begin atomic insert into t values (1); end;";
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
            found("SAVEPOINT a; ROLLBACK TO SAVEPOINT a; ROLLBACK WORK TO a; RELEASE a;")
                .is_empty()
        );
        assert!(found(
            "DO $$ BEGIN COMMIT; END $$; PREPARE q AS SELECT 1; SELECT 'BEGIN'; -- BEGIN\n"
        )
        .is_empty());
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
}
