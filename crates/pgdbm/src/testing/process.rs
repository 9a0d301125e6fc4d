//! Process and file helpers shared by the throwaway servers: temporary directories, the OS
//! user servers run as when the tests run as root, free ports and command output.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::DatabaseConfig;
use crate::error::{Error, Result};

/// The OS user servers run as when the tests run as root (PostgreSQL and PgBouncer refuse root).
pub(super) const SERVER_OS_USER: &str = "postgres";
pub(super) const HOST: &str = "127.0.0.1";
/// Lines of a log or of a command's output quoted in an error.
pub(super) const LOG_TAIL_LINES: usize = 30;

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// The OS user that owns a server's files when it is not the current one (we run as root).
#[derive(Debug, Clone, Copy)]
pub(super) struct Owner {
    pub(super) uid: u32,
    pub(super) gid: u32,
}

/// A new, empty directory under the system temp directory.
pub(super) fn unique_dir(kind: &str) -> Result<PathBuf> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = format!(
        "pgdbm-{kind}-{}-{}-{nanos:x}",
        std::process::id(),
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    );
    let dir = std::env::temp_dir().join(name);
    fs::create_dir(&dir).map_err(|e| io_error("create", &dir, e))?;
    Ok(dir)
}

/// `Some(postgres)` when we run as root, whom PostgreSQL refuses to run as.
pub(super) fn server_owner(our_dir: &Path) -> Result<Option<Owner>> {
    // A directory we just created is owned by our effective uid.
    let uid = fs::metadata(our_dir)
        .map_err(|e| io_error("stat", our_dir, e))?
        .uid();
    if uid != 0 {
        return Ok(None);
    }
    let id = |flag: &str| -> Result<u32> {
        let out = Command::new("id")
            .args([flag, SERVER_OS_USER])
            .output()
            .map_err(|e| Error::TestDatabase(format!("cannot run `id`: {e}")))?;
        String::from_utf8_lossy(&out.stdout).trim().parse().map_err(|_| {
            Error::TestDatabase(format!(
                "running as root, so the server must run as the `{SERVER_OS_USER}` OS user, which \
                 does not exist; create it (useradd {SERVER_OS_USER}) or run the tests as a normal user"
            ))
        })
    };
    Ok(Some(Owner {
        uid: id("-u")?,
        gid: id("-g")?,
    }))
}

/// `runuser` lives in sbin, which is not always on a root shell's `PATH` inside containers.
pub(super) fn runuser() -> PathBuf {
    [
        "/usr/sbin/runuser",
        "/sbin/runuser",
        "/usr/bin/runuser",
        "/bin/runuser",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
    .unwrap_or_else(|| PathBuf::from("runuser"))
}

/// A loopback port that was free a moment ago.
pub(super) fn free_port() -> Result<u16> {
    TcpListener::bind((HOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::TestDatabase(format!("cannot find a free port on {HOST}: {e}")))
}

/// A postgresql.conf string literal; quoting works for every parameter type.
pub(super) fn conf_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

pub(super) fn output_text(out: &Output) -> String {
    let text = format!(
        "{} {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    tail(text.trim(), LOG_TAIL_LINES)
}

pub(super) fn log_since(path: &Path, offset: u64) -> String {
    let bytes = fs::read(path).unwrap_or_default();
    let start = usize::try_from(offset).unwrap_or(0).min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

pub(super) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub(super) fn io_error(action: &str, path: &Path, e: std::io::Error) -> Error {
    Error::TestDatabase(format!("cannot {action} {}: {e}", path.display()))
}

/// `postgresql://postgres@127.0.0.1:{port}/{database}`.
pub(super) fn local_connection_string(port: u16, database: &str) -> String {
    format!("postgresql://postgres@{HOST}:{port}/{database}")
}

/// `database` on `127.0.0.1:{port}` as `postgres`, other fields default.
pub(super) fn local_config(port: u16, database: &str) -> DatabaseConfig {
    DatabaseConfig {
        host: HOST.to_owned(),
        port,
        user: "postgres".to_owned(),
        database: database.to_owned(),
        ..DatabaseConfig::default()
    }
}
