//! What a statement does to the session it runs on, read from its text once.
//!
//! A pooled connection serves many callers, and whatever one of them leaves on the session
//! (a setting, a role, a temporary table, a prepared statement, a held cursor, a `LISTEN`, a
//! session advisory lock) would reach the next. [`Effects::of`] finds the statements that do
//! so, conservatively: a word that might be a session change counts as one. A change the text
//! cannot show (dynamic SQL inside a function) is what `reset_on_release = "always"` is for.

use crate::sql::lexer::{tokens, TokenKind};

/// The session effects of one SQL text (one statement or a script).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Effects(u8);

impl Effects {
    const SESSION: u8 = 1;
    const STATEMENTS: u8 = 2;
    const TRANSACTION: u8 = 4;

    /// Whether something may outlive the caller: the session needs a reset before reuse.
    pub(crate) fn changes_session(self) -> bool {
        self.0 & Self::SESSION != 0
    }

    /// `DISCARD ALL` or `DEALLOCATE ALL`: every named statement of the session is gone,
    /// the pool's own included.
    pub(crate) fn drops_statements(self) -> bool {
        self.0 & Self::STATEMENTS != 0
    }

    /// It opens, ends or marks a transaction (`BEGIN`, `COMMIT`, `SAVEPOINT`, ...).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn controls_transaction(self) -> bool {
        self.0 & Self::TRANSACTION != 0
    }

    pub(crate) fn is_none(self) -> bool {
        self.0 == 0
    }

    /// Classifies `sql`.
    ///
    /// ```text
    /// SET search_path = x                      session
    /// SET LOCAL statement_timeout = 0          none (ends with the transaction)
    /// SELECT set_config('a.b', $1, false)      session
    /// SELECT set_config('a.b', $1, true)       none
    /// CREATE TEMP TABLE t (x int)              session
    /// SELECT pg_advisory_lock(1)               session
    /// DISCARD ALL                              session, drops statements
    /// BEGIN                                    transaction
    /// ```
    pub(crate) fn of(sql: &str) -> Effects {
        let mut fx = 0u8;
        let mut words: Vec<(TokenKind, &str)> = Vec::new();
        let mut depth = 0u32;
        let mut statement = |words: &mut Vec<(TokenKind, &str)>| {
            fx |= statement_effects(words);
            words.clear();
        };
        for t in tokens(sql) {
            let text = &sql[t.start..t.end];
            match t.kind {
                TokenKind::LineComment | TokenKind::BlockComment | TokenKind::Space => continue,
                TokenKind::Semicolon if depth == 0 => {
                    statement(&mut words);
                    continue;
                }
                TokenKind::Open => depth += 1,
                TokenKind::Close => depth = depth.saturating_sub(1),
                _ => {}
            }
            words.push((t.kind, text));
        }
        statement(&mut words);
        Effects(fx)
    }
}

fn is(word: Option<&(TokenKind, &str)>, expected: &str) -> bool {
    matches!(word, Some((TokenKind::Word, w)) if w.eq_ignore_ascii_case(expected))
}

fn word_in(word: Option<&(TokenKind, &str)>, expected: &[&str]) -> bool {
    expected.iter().any(|e| is(word, e))
}

/// The session-level advisory lock functions (the `_xact_` ones end with the transaction).
const SESSION_LOCKS: &[&str] = &[
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
    "pg_advisory_unlock",
    "pg_advisory_unlock_shared",
    "pg_advisory_unlock_all",
    "dblink_connect",
    "dblink_connect_u",
];

fn statement_effects(w: &[(TokenKind, &str)]) -> u8 {
    let first = w.first();
    let mut fx = 0;
    if word_in(
        first,
        &[
            "begin",
            "start",
            "commit",
            "end",
            "abort",
            "rollback",
            "savepoint",
            "release",
        ],
    ) {
        fx |= Effects::TRANSACTION;
    }
    if is(first, "set") {
        // SET LOCAL, SET TRANSACTION and SET CONSTRAINTS end with the transaction.
        if !word_in(w.get(1), &["local", "transaction", "constraints"]) {
            fx |= Effects::SESSION;
        }
    } else if is(first, "prepare") {
        fx |= if is(w.get(1), "transaction") {
            Effects::TRANSACTION
        } else {
            Effects::SESSION
        };
    } else if is(first, "discard") || is(first, "deallocate") {
        fx |= Effects::SESSION;
        let all = is(w.get(1), "all") || (is(w.get(1), "prepare") && is(w.get(2), "all"));
        if all && !is(w.get(1), "temp") {
            fx |= Effects::STATEMENTS;
        }
    } else if word_in(first, &["reset", "listen", "unlisten", "load"]) {
        fx |= Effects::SESSION;
    } else if is(first, "declare") {
        // Only a cursor WITH HOLD outlives its transaction.
        if w.windows(2)
            .any(|p| is(p.first(), "with") && is(p.get(1), "hold"))
        {
            fx |= Effects::SESSION;
        }
    }
    for (i, token) in w.iter().enumerate() {
        let t = Some(token);
        // A temporary table, view or sequence (CREATE TEMP ..., SELECT ... INTO TEMP ...),
        // or anything in the session's own temporary schema.
        let temporary = word_in(t, &["temp", "temporary", "pg_temp"]);
        let session_lock = word_in(t, SESSION_LOCKS) && is_call(w, i);
        let session_setting =
            is(t, "set_config") && is_call(w, i) && !local_set_config(&w[i + 1..]);
        if temporary || session_lock || session_setting {
            fx |= Effects::SESSION;
        }
    }
    fx
}

fn is_call(w: &[(TokenKind, &str)], i: usize) -> bool {
    matches!(w.get(i + 1), Some((TokenKind::Open, _)))
}

/// Whether the arguments after `set_config` (starting at its `(`) end with a literal true.
fn local_set_config(args: &[(TokenKind, &str)]) -> bool {
    let mut depth = 0u32;
    let mut commas = 0;
    let mut third: Vec<&str> = Vec::new();
    for (kind, text) in args {
        match kind {
            TokenKind::Open => {
                depth += 1;
                if depth == 1 {
                    continue;
                }
            }
            TokenKind::Close => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    break;
                }
            }
            TokenKind::Other if *text == "," && depth == 1 => {
                commas += 1;
                continue;
            }
            _ => {}
        }
        if commas == 2 {
            third.push(text);
        }
    }
    match third.as_slice() {
        [one] => {
            let v = one.trim_matches('\'').to_ascii_lowercase();
            matches!(v.as_str(), "true" | "t" | "on" | "yes" | "1")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::Effects;

    fn session(sql: &str) -> bool {
        Effects::of(sql).changes_session()
    }

    #[test]
    fn session_changes_are_found() {
        for sql in [
            "SET search_path = x",
            "set role some_role",
            "SET SESSION AUTHORIZATION bob",
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
            "RESET ALL",
            "reset statement_timeout",
            "SELECT set_config('search_path', 'tenant_a', false)",
            "SELECT pg_catalog.set_config('search_path', '', false)",
            "SELECT set_config('a.b', $1, $2)",
            "CREATE TEMP TABLE users (id int)",
            "create global temporary table t (x int)",
            "CREATE TABLE pg_temp.t (x int)",
            "SELECT * INTO TEMP t FROM x",
            "PREPARE report AS SELECT 1",
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            "LISTEN chan",
            "UNLISTEN *",
            "SELECT pg_advisory_lock(1)",
            "SELECT pg_try_advisory_lock_shared(1, 2)",
            "DISCARD TEMP",
            "DEALLOCATE report",
            "LOAD 'auto_explain'",
            "SELECT 1; SET statement_timeout = 0",
        ] {
            assert!(session(sql), "{sql}");
        }
        assert!(Effects::of("DISCARD ALL").drops_statements());
        assert!(Effects::of("deallocate all").drops_statements());
        assert!(!Effects::of("DEALLOCATE report").drops_statements());
    }

    #[test]
    fn plain_statements_change_nothing() {
        for sql in [
            "SELECT 1",
            "SET LOCAL statement_timeout = 0",
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "SELECT set_config('app.tenant', $1, true)",
            "SELECT set_config('app.tenant', '42', TRUE)",
            "SELECT pg_advisory_xact_lock(1)",
            "INSERT INTO settings (temperature) VALUES ($1)",
            "SELECT 'SET role x', \"temp\" FROM t -- set role x",
            "DECLARE c CURSOR FOR SELECT 1",
            "UPDATE t SET x = 1",
            "INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET x = 2",
        ] {
            assert!(!session(sql), "{sql}");
        }
        assert!(Effects::of("BEGIN").controls_transaction());
        assert!(Effects::of("SELECT 1;\nCOMMIT").controls_transaction());
        assert!(Effects::of("SELECT 1").is_none());
    }
}
