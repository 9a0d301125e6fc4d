//! Connection strings: built from the fields, masked, and parsed into the driver's configs.

use super::*;

impl DatabaseConfig {
    /// The connection string: `connection_string` as given, or one built from the fields with
    /// the user and password percent-encoded. It contains the password; see [`get_dsn_masked`].
    ///
    /// [`get_dsn_masked`]: DatabaseConfig::get_dsn_masked
    pub fn get_dsn(&self) -> String {
        if let Some(cs) = &self.connection_string {
            return cs.clone();
        }
        let user = utf8_percent_encode(&self.user, USERINFO);
        let auth = match &self.password {
            Some(pw) => format!("{user}:{}@", utf8_percent_encode(pw, USERINFO)),
            None => format!("{user}@"),
        };
        let host = if self.host.starts_with('/') {
            // A socket directory goes into the query string, as libpq accepts it.
            return format!(
                "postgresql://{auth}/{}?host={}&port={}",
                utf8_percent_encode(&self.database, USERINFO),
                utf8_percent_encode(&self.host, USERINFO),
                self.port
            );
        } else if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!(
            "postgresql://{auth}{host}:{}/{}",
            self.port,
            utf8_percent_encode(&self.database, USERINFO)
        )
    }

    /// The connection string with the whole password replaced by `****`, safe to log.
    ///
    /// ```
    /// let c = pgdbm::DatabaseConfig {
    ///     connection_string: Some("postgresql://app:p@ss:w/rd@db:5432/app".into()),
    ///     ..Default::default()
    /// };
    /// assert_eq!(c.get_dsn_masked(), "postgresql://app:****@db:5432/app");
    /// ```
    pub fn get_dsn_masked(&self) -> String {
        let mut dsn = mask_dsn(&self.get_dsn());
        // Belt and braces: a password that the structural masking could not find is still cut.
        for pw in [self.password.as_deref(), self.url_password().as_deref()]
            .into_iter()
            .flatten()
        {
            if pw.len() >= 3 {
                dsn = dsn.replace(pw, "****");
                dsn = dsn.replace(&utf8_percent_encode(pw, USERINFO).to_string(), "****");
            }
        }
        dsn
    }

    fn url_password(&self) -> Option<String> {
        let cs = self.connection_string.as_deref()?;
        let cfg: tokio_postgres::Config = cs.parse().ok()?;
        cfg.get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
    }

    /// The driver's config: the connection string or the fields, plus the application name.
    pub(crate) fn pg_config(&self) -> Result<tokio_postgres::Config> {
        let (mut cfg, attrs) = self.pg_target()?;
        cfg.target_session_attrs(attrs.for_driver());
        Ok(cfg)
    }

    /// The driver's config as [`pg_config`](Self::pg_config) builds it, and the
    /// `target_session_attrs` of the connection string, which pgdbm checks itself.
    pub(crate) fn pg_target(&self) -> Result<(tokio_postgres::Config, SessionAttrs)> {
        let mut attrs = SessionAttrs::Any;
        let mut cfg = match &self.connection_string {
            Some(cs) => {
                let (cs, found) = SessionAttrs::split_from(cs).map_err(|e| match e {
                    // The value is short and never a secret; the string may hold a password.
                    Error::Configuration { message, .. } => {
                        Error::config("connection_string", message)
                    }
                    other => other,
                })?;
                attrs = found;
                cs.parse::<tokio_postgres::Config>().map_err(|e| {
                Error::config(
                    "connection_string",
                    format!(
                        "cannot parse {}: {e}. Expected postgresql://user:password@host:port/database \
                         with special characters in the password percent-encoded",
                        mask_dsn(&cs)
                    ),
                )
            })?
            }
            None => {
                let mut c = tokio_postgres::Config::new();
                c.host(&self.host)
                    .port(self.port)
                    .dbname(&self.database)
                    .user(&self.user);
                c
            }
        };
        if cfg.get_password().is_none() {
            if let Some(pw) = &self.password {
                cfg.password(pw.as_str());
            }
        }
        if cfg.get_user().is_none() {
            cfg.user(&self.user);
        }
        if cfg.get_hosts().is_empty() {
            cfg.host(&self.host);
        }
        if cfg.get_ports().is_empty() {
            cfg.port(self.port);
        }
        if cfg.get_dbname().is_none() {
            // libpq defaults the database to the user name; do the same.
            let user = cfg.get_user().unwrap_or("postgres").to_owned();
            cfg.dbname(&user);
        }
        if cfg.get_application_name().is_none() {
            let name = self
                .server_settings
                .as_ref()
                .and_then(|s| s.get("application_name").cloned())
                .unwrap_or_else(|| self.default_application_name());
            cfg.application_name(&name);
        }
        // TLS is negotiated by our own connector; the mode only says whether to ask for it.
        cfg.ssl_mode(if self.ssl_mode()?.is_some() {
            tokio_postgres::config::SslMode::Require
        } else {
            tokio_postgres::config::SslMode::Disable
        });
        Ok((cfg, attrs))
    }

    /// The driver's config for a listener's connection: `listen_connection_string` when set
    /// (with this config's password, user and TLS mode filling what it leaves out), else the
    /// pool's.
    pub(crate) fn listen_pg_config(&self) -> Result<tokio_postgres::Config> {
        match &self.listen_connection_string {
            None => self.pg_config(),
            Some(cs) => self
                .with_connection_string(cs, "listen_connection_string")?
                .pg_config(),
        }
    }

    /// The config migrations use through a transaction pooler: this one, reaching the server
    /// at `direct_connection_string` with no pooler in between. `None` when it is not set.
    pub(crate) fn direct_config(&self) -> Result<Option<DatabaseConfig>> {
        let Some(cs) = &self.direct_connection_string else {
            return Ok(None);
        };
        let direct = DatabaseConfig {
            pooler: Pooler::Direct,
            direct_connection_string: None,
            // Migrations read and write the primary only.
            read_replicas: Vec::new(),
            ..self.with_connection_string(cs, "direct_connection_string")?
        };
        Ok(Some(direct))
    }

    /// This config with `cs` as its connection string, checked; errors name `field`.
    fn with_connection_string(&self, cs: &str, field: &'static str) -> Result<DatabaseConfig> {
        let config = DatabaseConfig {
            connection_string: Some(cs.to_owned()),
            ..self.clone()
        };
        config.pg_config().map_err(|e| match e {
            Error::Configuration { message, .. } => Error::config(field, message),
            other => other,
        })?;
        Ok(config)
    }

    /// Python pgdbm's name, so `pg_stat_activity` dashboards keep working: `<schema>_pool`, or
    /// `app_pool` without a schema (a shared pool has none). The server keeps the first 63
    /// bytes in `pg_stat_activity`.
    pub(crate) fn default_application_name(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{schema}_pool"),
            None => "app_pool".to_owned(),
        }
    }
}
