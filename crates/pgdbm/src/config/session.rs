//! The SQL that sets up each session with the pool's settings.

use super::*;

impl DatabaseConfig {
    /// `SET` statements for a new connection, as one batch; `SET LOCAL` with `local`, for
    /// each transaction behind a transaction pooler.
    pub(crate) fn session_setup_sql(&self, search_path: Option<&str>, local: bool) -> String {
        let set_word = if local { "SET LOCAL " } else { "SET " };
        let mut sql = String::new();
        let mut set = |name: &str, value: &str| {
            sql.push_str(set_word);
            sql.push_str(name);
            sql.push_str(" = ");
            sql.push_str(&quote_literal(value));
            sql.push_str(";\n");
        };
        let settings = self.server_settings.as_ref();
        if !settings.is_some_and(|s| s.contains_key("jit")) {
            set("jit", "off");
        }
        if let Some(settings) = settings {
            let mut names: Vec<_> = settings.keys().collect();
            names.sort();
            for name in names {
                if name != "application_name" {
                    set(name, &settings[name]);
                }
            }
        }
        for (name, value) in [
            ("statement_timeout", self.statement_timeout_ms),
            (
                "idle_in_transaction_session_timeout",
                self.idle_in_transaction_session_timeout_ms,
            ),
            ("lock_timeout", self.lock_timeout_ms),
        ] {
            if let Some(ms) = value {
                set(name, &ms.to_string());
            }
        }
        if let Some(path) = search_path {
            // search_path takes identifiers, not a literal: the caller quoted them.
            sql.push_str(set_word);
            sql.push_str("search_path = ");
            sql.push_str(path);
            sql.push_str(";\n");
        }
        sql
    }
}

/// A SQL string literal, with `'` doubled and backslashes made safe via `E''` only when needed.
pub(crate) fn quote_literal(value: &str) -> String {
    let escaped = value.replace('\'', "''");
    if escaped.contains('\\') {
        format!("E'{}'", escaped.replace('\\', "\\\\"))
    } else {
        format!("'{escaped}'")
    }
}
