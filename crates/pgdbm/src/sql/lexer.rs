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
#[path = "lexer_tests.rs"]
mod tests;
