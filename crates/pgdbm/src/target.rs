//! Where a pool connects: the hosts of a connection string, each as its own driver config,
//! and libpq's `target_session_attrs`, which the driver only partly knows.

use tokio_postgres::config::{Host, TargetSessionAttrs};
use tokio_postgres::Config;

use crate::error::{Error, Result};

/// libpq's `target_session_attrs`: which of the listed servers a connection may settle on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionAttrs {
    Any,
    /// Accepts writes: `transaction_read_only` is off.
    ReadWrite,
    /// Refuses writes: `transaction_read_only` is on.
    ReadOnly,
    /// Not in recovery.
    Primary,
    /// In recovery (a hot standby).
    Standby,
    /// A standby if any answers, else any server.
    PreferStandby,
}

impl SessionAttrs {
    pub(crate) const KEY: &'static str = "target_session_attrs";

    fn parse(value: &str) -> Result<Self> {
        Ok(match value {
            "any" => SessionAttrs::Any,
            "read-write" => SessionAttrs::ReadWrite,
            "read-only" => SessionAttrs::ReadOnly,
            "primary" => SessionAttrs::Primary,
            "standby" => SessionAttrs::Standby,
            "prefer-standby" => SessionAttrs::PreferStandby,
            other => {
                return Err(Error::config(
                    "connection_string",
                    format!(
                        "{}={:?} is not supported: use any, read-write, read-only, primary, \
                         standby or prefer-standby",
                        Self::KEY,
                        crate::template::shorten(other)
                    ),
                ))
            }
        })
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SessionAttrs::Any => "any",
            SessionAttrs::ReadWrite => "read-write",
            SessionAttrs::ReadOnly => "read-only",
            SessionAttrs::Primary => "primary",
            SessionAttrs::Standby => "standby",
            SessionAttrs::PreferStandby => "prefer-standby",
        }
    }

    /// Takes `target_session_attrs` out of a connection string (URL query parameter or
    /// `key=value` pair): the driver knows only `any` and `read-write`, and pgdbm checks every
    /// value itself. Returns the string without it, and the value (default `any`).
    pub(crate) fn split_from(dsn: &str) -> Result<(String, SessionAttrs)> {
        let key = Self::KEY;
        let mut value = None;
        let rest = if dsn.contains("://") {
            match dsn.split_once('?') {
                None => dsn.to_owned(),
                Some((base, query)) => {
                    let kept: Vec<&str> = query
                        .split('&')
                        .filter(|pair| match pair.split_once('=') {
                            Some((k, v)) if k == key => {
                                value = Some(v.to_owned());
                                false
                            }
                            _ => true,
                        })
                        .collect();
                    if kept.is_empty() {
                        base.to_owned()
                    } else {
                        format!("{base}?{}", kept.join("&"))
                    }
                }
            }
        } else {
            // Only the pair itself is cut out, so the rest (a quoted password with spaces,
            // say) reaches the driver exactly as written.
            let start = dsn.match_indices(key).map(|(i, _)| i).find(|&i| {
                dsn[..i].chars().next_back().is_none_or(char::is_whitespace)
                    && dsn[i + key.len()..].trim_start().starts_with('=')
            });
            match start {
                None => dsn.to_owned(),
                Some(i) => {
                    let after_key = &dsn[i + key.len()..];
                    let after_eq = after_key.trim_start()[1..].trim_start();
                    let len = after_eq.find(char::is_whitespace).unwrap_or(after_eq.len());
                    value = Some(after_eq[..len].trim_matches('\'').to_owned());
                    let end = dsn.len() - after_eq.len() + len;
                    format!("{}{}", &dsn[..i], dsn[end..].trim_start())
                        .trim_end()
                        .to_owned()
                }
            }
        };
        let attrs = match value {
            Some(v) => Self::parse(&percent_encoding::percent_decode_str(&v).decode_utf8_lossy())?,
            None => SessionAttrs::Any,
        };
        Ok((rest, attrs))
    }

    /// The closest setting the driver itself understands, for connections pgdbm does not make
    /// host by host (a listener's).
    pub(crate) fn for_driver(self) -> TargetSessionAttrs {
        match self {
            SessionAttrs::ReadWrite | SessionAttrs::Primary => TargetSessionAttrs::ReadWrite,
            _ => TargetSessionAttrs::Any,
        }
    }
}

/// One single-host config per host of `config` (one when it names one), in order, with the
/// port that libpq pairs with each host.
pub(crate) fn split_hosts(config: &Config) -> Vec<(Config, String)> {
    let hosts = config.get_hosts();
    let addrs = config.get_hostaddrs();
    let ports = config.get_ports();
    let count = hosts.len().max(addrs.len()).max(1);
    if count == 1 {
        let mut single = config.clone();
        single.target_session_attrs(TargetSessionAttrs::Any);
        let (host, port, _) = server_address(config);
        return vec![(single, format!("{host}:{port}"))];
    }
    (0..count)
        .map(|i| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            let mut c = copy_without_hosts(config);
            let label_host = match hosts.get(i) {
                Some(Host::Tcp(h)) => {
                    c.host(h);
                    h.clone()
                }
                #[cfg(unix)]
                Some(Host::Unix(p)) => {
                    c.host_path(p);
                    p.display().to_string()
                }
                None => String::new(),
            };
            let label_host = match addrs.get(i) {
                Some(addr) => {
                    c.hostaddr(*addr);
                    if label_host.is_empty() {
                        addr.to_string()
                    } else {
                        label_host
                    }
                }
                None => label_host,
            };
            c.port(port);
            (c, format!("{label_host}:{port}"))
        })
        .collect()
}

/// The driver has no way to remove hosts from a config, so a single-host one is built anew.
fn copy_without_hosts(config: &Config) -> Config {
    let mut c = Config::new();
    if let Some(user) = config.get_user() {
        c.user(user);
    }
    if let Some(password) = config.get_password() {
        c.password(password);
    }
    if let Some(db) = config.get_dbname() {
        c.dbname(db);
    }
    if let Some(options) = config.get_options() {
        c.options(options);
    }
    if let Some(name) = config.get_application_name() {
        c.application_name(name);
    }
    if let Some(t) = config.get_connect_timeout() {
        c.connect_timeout(*t);
    }
    if let Some(t) = config.get_tcp_user_timeout() {
        c.tcp_user_timeout(*t);
    }
    c.ssl_mode(config.get_ssl_mode())
        .keepalives(config.get_keepalives())
        .keepalives_idle(config.get_keepalives_idle())
        .channel_binding(config.get_channel_binding());
    if let Some(t) = config.get_keepalives_interval() {
        c.keepalives_interval(t);
    }
    if let Some(n) = config.get_keepalives_retries() {
        c.keepalives_retries(n);
    }
    c
}

/// Where a driver config points, for error messages: the first host (or socket directory),
/// the first port, and the database.
pub(crate) fn server_address(cfg: &tokio_postgres::Config) -> (String, u16, String) {
    let host = cfg
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_default();
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    let database = cfg.get_dbname().unwrap_or_default().to_owned();
    (host, port, database)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_attrs_leave_the_string_for_the_driver() {
        let (rest, attrs) = SessionAttrs::split_from(
            "postgresql://u@a:1,b:2/db?target_session_attrs=primary&sslmode=disable",
        )
        .unwrap();
        assert_eq!(rest, "postgresql://u@a:1,b:2/db?sslmode=disable");
        assert_eq!(attrs, SessionAttrs::Primary);
        let (rest, attrs) =
            SessionAttrs::split_from("host=a,b port=1,2 target_session_attrs=prefer-standby")
                .unwrap();
        assert_eq!(rest, "host=a,b port=1,2");
        assert_eq!(attrs, SessionAttrs::PreferStandby);
        // Everything else reaches the driver as written, spaces in quoted values included.
        let dsn = "host=a password='two  spaces' dbname=d";
        assert_eq!(
            SessionAttrs::split_from(dsn).unwrap(),
            (dsn.to_owned(), SessionAttrs::Any)
        );
        let (rest, attrs) = SessionAttrs::split_from(
            "password='two  spaces' target_session_attrs = read-only host=a",
        )
        .unwrap();
        assert_eq!(rest, "password='two  spaces' host=a");
        assert_eq!(attrs, SessionAttrs::ReadOnly);
        let (rest, attrs) = SessionAttrs::split_from("postgresql://u@a/db").unwrap();
        assert_eq!(
            (rest.as_str(), attrs),
            ("postgresql://u@a/db", SessionAttrs::Any)
        );
    }

    #[test]
    fn an_unknown_value_names_the_key() {
        let err = SessionAttrs::split_from("host=a target_session_attrs=leader").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("target_session_attrs"), "{text}");
        assert!(text.contains("prefer-standby"), "{text}");
    }

    #[test]
    fn several_hosts_become_single_host_configs_with_their_ports() {
        let config: Config = "host=a,b,c port=1,2,3 user=u dbname=d".parse().unwrap();
        let split = split_hosts(&config);
        let labels: Vec<&str> = split.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(labels, ["a:1", "b:2", "c:3"]);
        for (c, _) in &split {
            assert_eq!(c.get_hosts().len(), 1);
            assert_eq!(c.get_user(), Some("u"));
            assert_eq!(c.get_dbname(), Some("d"));
        }
        let config: Config = "host=a,b port=7 user=u".parse().unwrap();
        let labels: Vec<String> = split_hosts(&config).into_iter().map(|(_, l)| l).collect();
        assert_eq!(labels, ["a:7", "b:7"]);
    }
}
