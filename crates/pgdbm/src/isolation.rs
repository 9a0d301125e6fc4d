//! How a pooled connection is handed from one caller to the next.

use std::fmt;

use serde::{Deserialize, Serialize};

/// When a pooled connection's session is reset before the next caller gets it. Set it in
/// [`DatabaseConfig::reset_on_release`](crate::DatabaseConfig::reset_on_release), as
/// `reset_on_release = "always"` in `pgdbm.toml`, or with `DB_RESET_ON_RELEASE=always`.
///
/// Whatever the mode, a connection released inside a transaction (a `BEGIN` sent through
/// `fetch_all`, say) is rolled back before anyone else gets it: the transaction status comes
/// from the server's own `ReadyForQuery` messages, whichever method sent the statement.
///
/// The reset undoes everything a caller can leave on a session (`CLOSE ALL`, `UNLISTEN *`,
/// `pg_advisory_unlock_all()`, `SET SESSION AUTHORIZATION DEFAULT`, `RESET ROLE`, `RESET ALL`,
/// `DISCARD TEMP`, `DISCARD SEQUENCES`, and every statement made with SQL's `PREPARE`), then
/// applies the pool's own settings again (pinned `search_path`, timeouts, `server_settings`,
/// `init_commands`). The connection is out of the pool until that is done, and is closed if the
/// server then reports anything other than the session the pool set up.
///
/// ```
/// let config: pgdbm::DatabaseConfig =
///     serde_json::from_str(r#"{"reset_on_release": "always"}"#).unwrap();
/// assert_eq!(config.reset_on_release, pgdbm::ResetOnRelease::Always);
/// assert_eq!(pgdbm::DatabaseConfig::default().reset_on_release, pgdbm::ResetOnRelease::Auto);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ResetOnRelease {
    /// Reset after a caller ran a statement that changes the session (`SET` without `LOCAL`,
    /// `set_config(..., false)`, `SET ROLE`, `SET SESSION AUTHORIZATION`, `RESET`, temporary
    /// objects, `PREPARE`, `DECLARE ... WITH HOLD`, `LISTEN`, session advisory locks,
    /// `DISCARD`, `DEALLOCATE`), found by the statement's text once per text, or after the
    /// server reported a setting different from the pool's (`session_authorization`,
    /// `is_superuser`, `TimeZone`, `DateStyle`, `application_name`, ...). Statements that
    /// change nothing cost nothing more. A change made where the text cannot show it (dynamic
    /// SQL inside a function) and not reported by the server is not caught: use `Always`.
    #[default]
    Auto,
    /// Reset after every use as well. When nothing showed a change, the reset (without the
    /// deallocation of `PREPARE`d statements, which needs a scan of every prepared statement)
    /// goes out ahead of the connection's next statement, in the same round trip: no latency,
    /// only server work. With `init_commands` it runs when the connection is released, since
    /// those must run again after it. A statement `PREPARE`d by dynamic SQL inside a function
    /// is not deallocated by that quick reset (a later `PREPARE` of the name fails with
    /// `42P05`).
    Always,
}

impl fmt::Display for ResetOnRelease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResetOnRelease::Auto => "auto",
            ResetOnRelease::Always => "always",
        })
    }
}

impl std::str::FromStr for ResetOnRelease {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(ResetOnRelease::Auto),
            "always" => Ok(ResetOnRelease::Always),
            other => Err(format!(
                "reset_on_release must be \"auto\" or \"always\", not {other:?}"
            )),
        }
    }
}
