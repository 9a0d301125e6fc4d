//! `RETURNING id` for `execute_and_return_id`: appended unless the statement has its own.

use super::lexer::{tokens, TokenKind};

/// `INSERT …` gets `RETURNING id` unless the statement has a `RETURNING` clause of its own.
///
/// Only the keyword at the top level counts. The word inside a string (`'…'`, `E'…'`,
/// `$$…$$`), a quoted identifier, a comment, or after `.` / `AS` (a column label) is not the
/// keyword. A `RETURNING` inside parentheses belongs to a data-modifying CTE or a subquery,
/// not to the statement itself, which then returns no row: `RETURNING id` is appended there
/// too. Trailing `;`, whitespace and comments are dropped first, so the clause never lands
/// inside a `--` comment.
pub(crate) fn with_returning_id(query: &str) -> String {
    let mut depth = 0u32;
    let mut has_returning = false;
    // The end of the statement: its last token that is not a comment or a trailing `;`.
    let mut end = 0;
    let mut prev = "";
    for t in tokens(query) {
        let text = &query[t.start..t.end];
        match t.kind {
            TokenKind::LineComment | TokenKind::BlockComment | TokenKind::Space => continue,
            TokenKind::Semicolon if depth == 0 => continue,
            TokenKind::Open => depth += 1,
            TokenKind::Close => depth = depth.saturating_sub(1),
            TokenKind::Word
                if depth == 0
                    && text.eq_ignore_ascii_case("returning")
                    && prev != "."
                    && !prev.eq_ignore_ascii_case("as") =>
            {
                has_returning = true
            }
            _ => {}
        }
        prev = text;
        end = t.end;
    }
    let statement = &query[..end];
    if has_returning {
        statement.to_owned()
    } else {
        format!("{statement} RETURNING id")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returning_is_appended_once() {
        assert_eq!(
            with_returning_id("INSERT INTO t (a) VALUES ($1)"),
            "INSERT INTO t (a) VALUES ($1) RETURNING id"
        );
        assert_eq!(
            with_returning_id("INSERT INTO t (a) VALUES ($1);  "),
            "INSERT INTO t (a) VALUES ($1) RETURNING id"
        );
        assert_eq!(
            with_returning_id("insert into t (a) values ($1) Returning user_id"),
            "insert into t (a) values ($1) Returning user_id"
        );
        assert_eq!(
            with_returning_id("INSERT INTO returning_things (a) VALUES ($1)"),
            "INSERT INTO returning_things (a) VALUES ($1) RETURNING id"
        );
    }

    #[test]
    fn returning_in_literals_comments_and_subqueries_is_not_the_clause() {
        for (sql, want) in [
            (
                "INSERT INTO t (note) VALUES ('returning soon')",
                "INSERT INTO t (note) VALUES ('returning soon') RETURNING id",
            ),
            (
                "INSERT INTO t (note) VALUES (E'it\\'s returning');",
                "INSERT INTO t (note) VALUES (E'it\\'s returning') RETURNING id",
            ),
            (
                "INSERT INTO t (note) VALUES ($$ returning $$)",
                "INSERT INTO t (note) VALUES ($$ returning $$) RETURNING id",
            ),
            (
                "INSERT INTO t (note) VALUES ($f$ ' returning $f$)",
                "INSERT INTO t (note) VALUES ($f$ ' returning $f$) RETURNING id",
            ),
            (
                "INSERT INTO t (\"returning\") VALUES (1)",
                "INSERT INTO t (\"returning\") VALUES (1) RETURNING id",
            ),
            (
                "INSERT INTO t /* returning */ (a) VALUES (1)",
                "INSERT INTO t /* returning */ (a) VALUES (1) RETURNING id",
            ),
            (
                "INSERT INTO t (a) VALUES (1) -- returning later\n",
                "INSERT INTO t (a) VALUES (1) RETURNING id",
            ),
            (
                "INSERT INTO t (a) VALUES (1); -- done",
                "INSERT INTO t (a) VALUES (1) RETURNING id",
            ),
            (
                "WITH d AS (DELETE FROM s RETURNING a) INSERT INTO t (a) SELECT a FROM d",
                "WITH d AS (DELETE FROM s RETURNING a) INSERT INTO t (a) SELECT a FROM d RETURNING id",
            ),
            (
                "INSERT INTO t (a) SELECT x.returning FROM x",
                "INSERT INTO t (a) SELECT x.returning FROM x RETURNING id",
            ),
            (
                "INSERT INTO t (a) VALUES (1) RETURNING a -- the key",
                "INSERT INTO t (a) VALUES (1) RETURNING a",
            ),
            (
                "insert into t (a) values ('x;y') returning *;",
                "insert into t (a) values ('x;y') returning *",
            ),
        ] {
            assert_eq!(with_returning_id(sql), want, "{sql}");
        }
    }
}
