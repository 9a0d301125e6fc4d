//! [`TempPgBouncer`]: a throwaway PgBouncer in front of any PostgreSQL server, started from the
//! installed `pgbouncer` binary (Debian's `pgbouncer` package) on a free loopback port.

use std::fs;
use std::io::Write;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::process::{
    free_port, io_error, local_config, local_connection_string, log_since, server_owner, tail,
    unique_dir, Owner, HOST, LOG_TAIL_LINES,
};
use crate::config::DatabaseConfig;
use crate::error::{Error, Result};

/// Overrides the path of the `pgbouncer` binary.
const BIN_ENV: &str = "PGDBM_PGBOUNCER";
const DEFAULT_BIN: &str = "/usr/sbin/pgbouncer";
const START_ATTEMPTS: usize = 5;
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A PgBouncer in a temporary directory, listening on `127.0.0.1` only, forwarding every
/// database to one server with `trust` authentication for the `postgres` user.
///
/// Defaults: transaction pooling, `default_pool_size = 5`, `max_client_conn = 500`. It runs
/// as the `postgres` OS user when the tests run as root (PgBouncer refuses root). Dropping it
/// stops the process and deletes the directory.
///
/// ```no_run
/// use pgdbm::testing::TempPgBouncer;
///
/// let bouncer = TempPgBouncer::builder().default_pool_size(2).start("127.0.0.1", 5432)?;
/// let config = bouncer.database_config("postgres"); // connect through it
/// # Ok::<(), pgdbm::Error>(())
/// ```
#[derive(Debug)]
pub struct TempPgBouncer {
    root: PathBuf,
    log_file: PathBuf,
    port: u16,
    child: Option<Child>,
}

/// Options for [`TempPgBouncer`]; finish with [`start`](TempPgBouncerBuilder::start).
#[derive(Debug, Clone)]
pub struct TempPgBouncerBuilder {
    binary: Option<PathBuf>,
    pool_mode: String,
    default_pool_size: u32,
    max_client_conn: u32,
    settings: Vec<(String, String)>,
}

impl Default for TempPgBouncerBuilder {
    fn default() -> Self {
        TempPgBouncerBuilder {
            binary: None,
            pool_mode: "transaction".into(),
            default_pool_size: 5,
            max_client_conn: 500,
            settings: Vec::new(),
        }
    }
}

impl TempPgBouncerBuilder {
    /// The `pgbouncer` binary. Default: `$PGDBM_PGBOUNCER`, else `/usr/sbin/pgbouncer`.
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// `session`, `transaction` (the default) or `statement`.
    pub fn pool_mode(mut self, mode: &str) -> Self {
        self.pool_mode = mode.to_owned();
        self
    }

    /// Server connections per user and database.
    pub fn default_pool_size(mut self, size: u32) -> Self {
        self.default_pool_size = size;
        self
    }

    /// Client connections accepted in all.
    pub fn max_client_conn(mut self, n: u32) -> Self {
        self.max_client_conn = n;
        self
    }

    /// Adds `name = value` to the `[pgbouncer]` section; later settings win.
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// Starts PgBouncer in front of the server at `host:port` and waits until it accepts
    /// connections. Errors are [`Error::TestDatabase`] with the tail of PgBouncer's log.
    pub fn start(self, host: &str, port: u16) -> Result<TempPgBouncer> {
        if !["session", "transaction", "statement"].contains(&self.pool_mode.as_str()) {
            return Err(Error::TestDatabase(format!(
                "invalid pool_mode {:?}: use session, transaction or statement",
                self.pool_mode
            )));
        }
        let valid = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-/:".contains(c))
        };
        if !valid(host) {
            return Err(Error::TestDatabase(format!("invalid server host {host:?}")));
        }
        for (name, value) in &self.settings {
            if !valid(name) || value.contains('\n') {
                return Err(Error::TestDatabase(format!(
                    "invalid PgBouncer setting {name:?}: use a pgbouncer.ini key such as \"server_lifetime\""
                )));
            }
        }
        let binary = self
            .binary
            .clone()
            .or_else(|| {
                std::env::var_os(BIN_ENV)
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| PathBuf::from(DEFAULT_BIN));
        if !binary.is_file() {
            return Err(Error::TestDatabase(format!(
                "{} not found: install PgBouncer (Debian: apt-get install pgbouncer) or set {BIN_ENV}",
                binary.display()
            )));
        }
        let root = unique_dir("pgbouncer")?;
        let mut bouncer = TempPgBouncer {
            log_file: root.join("pgbouncer.log"),
            root,
            port: 0,
            child: None,
        };
        let owner = server_owner(&bouncer.root)?;
        chown(owner, &bouncer.root)?;
        let users = bouncer.root.join("userlist.txt");
        write_owned(owner, &users, "\"postgres\" \"\"\n")?;

        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            bouncer.port = free_port()?;
            let ini = bouncer.root.join("pgbouncer.ini");
            write_owned(owner, &ini, &self.ini(&bouncer, host, port, &users))?;
            let log_start = fs::metadata(&bouncer.log_file)
                .map(|m| m.len())
                .unwrap_or(0);
            let mut command = Command::new(&binary);
            command
                .arg(&ini)
                .current_dir(&bouncer.root)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if let Some(o) = owner {
                command.uid(o.uid).gid(o.gid);
            }
            let child = command.spawn().map_err(|e| {
                Error::TestDatabase(format!("cannot run {}: {e}", binary.display()))
            })?;
            bouncer.child = Some(child);
            match bouncer.wait_ready() {
                Ok(()) => return Ok(bouncer),
                Err(exited) => {
                    bouncer.kill();
                    let log = log_since(&bouncer.log_file, log_start);
                    last_error = format!(
                        "PgBouncer on port {} did not start ({exited}); log (last lines):\n{}",
                        bouncer.port,
                        tail(&log, LOG_TAIL_LINES)
                    );
                    if !log.contains("Address already in use") {
                        break;
                    }
                }
            }
        }
        Err(Error::TestDatabase(last_error))
    }

    fn ini(
        &self,
        bouncer: &TempPgBouncer,
        host: &str,
        port: u16,
        users: &std::path::Path,
    ) -> String {
        let mut ini = format!(
            "[databases]\n* = host={host} port={port}\n\n[pgbouncer]\n\
             listen_addr = {HOST}\nlisten_port = {}\nunix_socket_dir =\n\
             auth_type = trust\nauth_file = {}\nadmin_users = postgres\n\
             pool_mode = {}\ndefault_pool_size = {}\nmax_client_conn = {}\n\
             logfile = {}\npidfile = {}\n\
             ignore_startup_parameters = extra_float_digits\n",
            bouncer.port,
            users.display(),
            self.pool_mode,
            self.default_pool_size,
            self.max_client_conn,
            bouncer.log_file.display(),
            bouncer.root.join("pgbouncer.pid").display(),
        );
        for (name, value) in &self.settings {
            ini.push_str(&format!("{name} = {value}\n"));
        }
        ini
    }
}

impl TempPgBouncer {
    /// Options: pool mode, pool sizes, other settings.
    pub fn builder() -> TempPgBouncerBuilder {
        TempPgBouncerBuilder::default()
    }

    /// A transaction-pooling PgBouncer with the defaults in front of `host:port`.
    pub fn start(host: &str, port: u16) -> Result<TempPgBouncer> {
        TempPgBouncerBuilder::default().start(host, port)
    }

    /// The TCP port, on [`host`](Self::host).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Always `127.0.0.1`.
    pub fn host(&self) -> &str {
        HOST
    }

    /// `postgresql://postgres@127.0.0.1:PORT/{database}`.
    pub fn connection_string(&self, database: &str) -> String {
        local_connection_string(self.port, database)
    }

    /// A [`DatabaseConfig`] for `database` through this PgBouncer as `postgres`.
    pub fn database_config(&self, database: &str) -> DatabaseConfig {
        local_config(self.port, database)
    }

    /// Waits until the port accepts TCP connections; `Err` says why it never will.
    fn wait_ready(&mut self) -> std::result::Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("exited with {status}"));
                }
            }
            if TcpStream::connect((HOST, self.port)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("not listening after {START_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TempPgBouncer {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.root);
    }
}

fn chown(owner: Option<Owner>, path: &std::path::Path) -> Result<()> {
    match owner {
        Some(o) => std::os::unix::fs::chown(path, Some(o.uid), Some(o.gid))
            .map_err(|e| io_error("chown", path, e)),
        None => Ok(()),
    }
}

fn write_owned(owner: Option<Owner>, path: &std::path::Path, contents: &str) -> Result<()> {
    fs::File::create(path)
        .and_then(|mut f| f.write_all(contents.as_bytes()))
        .map_err(|e| io_error("write", path, e))?;
    chown(owner, path)
}
