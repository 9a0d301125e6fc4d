//! The "+1 ms" cases: a [`LatencyProxy`] in front of the server, and a connection URL that
//! points every contender at it instead.

use std::str::FromStr;
use std::time::Duration;

use pgdbm::testing::LatencyProxy;
use tokio_postgres::config::Host;

use crate::BoxError;

/// A running proxy (stopped when dropped) and the URL that goes through it.
pub struct Far {
    _proxy: LatencyProxy,
    pub url: String,
}

/// Starts a proxy adding `one_way` in each direction in front of the server of `url` (TCP only).
pub async fn start(url: &str, one_way: Duration) -> Result<Far, BoxError> {
    let config = tokio_postgres::Config::from_str(url)?;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(_) => return Err("the latency proxy needs a TCP server address, not a socket".into()),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let upstream = tokio::net::lookup_host((host.as_str(), port))
        .await?
        .next()
        .ok_or_else(|| format!("{host}:{port} does not resolve"))?;
    let proxy = LatencyProxy::start(upstream, one_way).await?;
    let user = config.get_user().unwrap_or("postgres");
    let password = config
        .get_password()
        .map(|p| format!(":{}", encode(&String::from_utf8_lossy(p))))
        .unwrap_or_default();
    let dbname = config.get_dbname().unwrap_or(user);
    let url = format!(
        "postgresql://{}{password}@{}/{}",
        encode(user),
        proxy.addr(),
        encode(dbname)
    );
    Ok(Far { _proxy: proxy, url })
}

/// Percent-encodes everything but the unreserved characters of RFC 3986.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn encodes_url_parts() {
        assert_eq!(super::encode("a b@c/d:é"), "a%20b%40c%2Fd%3A%C3%A9");
        assert_eq!(super::encode("user-1.x_~"), "user-1.x_~");
    }
}
