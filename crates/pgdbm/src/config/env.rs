//! `DatabaseConfig::from_env`: the settings the environment gives.

use super::DatabaseConfig;

impl DatabaseConfig {
    /// A config from the environment: `DATABASE_URL` as the connection string,
    /// `DB_PASSWORD` when the URL carries no password, `DB_RESET_ON_RELEASE` (`auto` or
    /// `always`) and `DB_MULTIPLEXING` (`true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`).
    /// Other fields keep their defaults.
    ///
    /// ```
    /// let config = pgdbm::DatabaseConfig::from_env();
    /// assert!(config.min_connections <= config.max_connections);
    /// ```
    pub fn from_env() -> Self {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    pub(super) fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let mut config = DatabaseConfig::default();
        if let Some(url) = var("DATABASE_URL").filter(|u| !u.trim().is_empty()) {
            config.connection_string = Some(url);
        }
        if let Some(pw) = var("DB_PASSWORD").filter(|p| !p.is_empty()) {
            config.password = Some(pw);
        }
        if let Some(mode) = var("DB_RESET_ON_RELEASE").and_then(|m| m.parse().ok()) {
            config.reset_on_release = mode;
        }
        if let Some(value) = var("DB_MULTIPLEXING") {
            match flag(&value) {
                Some(on) => config.multiplexing = on,
                None => tracing::warn!(
                    value = %value,
                    "DB_MULTIPLEXING is not true/false, 1/0, yes/no or on/off; ignored"
                ),
            }
        }
        config
    }
}

/// A yes/no environment value; `None` for anything else.
fn flag(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}
