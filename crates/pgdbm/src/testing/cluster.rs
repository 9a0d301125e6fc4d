//! [`TempCluster`]: a throwaway PostgreSQL server started from the locally installed binaries.
//!
//! It is synchronous (plain `std::process`) so any test, async or not, can start one, and cheap:
//! `initdb --no-sync`, `fsync=off`, about a second to start. Everything lives in one temporary
//! directory that is deleted, with the server stopped, when the cluster is dropped, including
//! when a test panics.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::process::{
    conf_quote, free_port, io_error, local_config, local_connection_string, log_since, output_text,
    runuser, server_owner, tail, unique_dir, Owner, HOST, LOG_TAIL_LINES, SERVER_OS_USER,
};
use crate::config::DatabaseConfig;
use crate::error::{Error, Result};

/// Where Debian and Ubuntu install the server binaries, one directory per major version.
const DEBIAN_PG_ROOT: &str = "/usr/lib/postgresql";
/// Overrides the directory holding `initdb`, `pg_ctl` and `postgres`.
const BIN_ENV: &str = "PGDBM_PG_BIN";
/// Start attempts; a fresh port is picked after a port clash.
const START_ATTEMPTS: usize = 5;

/// Settings that make a disposable cluster fast; crash safety is pointless here.
const FAST_SETTINGS: &[(&str, &str)] = &[
    ("fsync", "off"),
    ("synchronous_commit", "off"),
    ("full_page_writes", "off"),
];

/// A throwaway PostgreSQL cluster in a temporary directory, listening on `127.0.0.1` only.
///
/// The superuser is `postgres`, authentication is `trust` unless [`TempClusterBuilder::hba`]
/// says otherwise. [`stop_server`](Self::stop_server) and [`start_server`](Self::start_server)
/// take the server down and bring it back on the same port, to test how clients survive a
/// restart. Dropping it stops the server (`pg_ctl -m immediate`) and deletes the directory.
///
/// ```no_run
/// let cluster = pgdbm::testing::TempCluster::start()?;
/// let url = cluster.connection_string("postgres"); // postgresql://postgres@127.0.0.1:PORT/postgres
/// # Ok::<(), pgdbm::Error>(())
/// ```
#[derive(Debug)]
pub struct TempCluster {
    pub(super) root: PathBuf,
    pub(super) data_dir: PathBuf,
    pub(super) socket_dir: PathBuf,
    pub(super) log_file: PathBuf,
    pub(super) bin_dir: PathBuf,
    pub(super) owner: Option<Owner>,
    pub(super) port: u16,
    pub(super) running: bool,
    pub(super) cleaned_up: bool,
}

/// Options for [`TempCluster`]; finish with [`start`](TempClusterBuilder::start).
#[derive(Debug, Default, Clone)]
pub struct TempClusterBuilder {
    bin_dir: Option<PathBuf>,
    ssl: Option<SslFiles>,
    hba: Option<Vec<String>>,
    settings: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
struct SslFiles {
    cert_pem: String,
    key_pem: String,
    ca_pem: Option<String>,
}

impl TempClusterBuilder {
    /// The directory holding `initdb` and `pg_ctl`. Default: `$PGDBM_PG_BIN`, else the highest
    /// version under `/usr/lib/postgresql/*/bin`, else the directory of `initdb` on `PATH`.
    pub fn bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = Some(dir.into());
        self
    }

    /// Turns on TLS (`ssl = on`) with this server certificate and key (PEM). With `ca_pem`, the
    /// server also asks for client certificates signed by that CA (`ssl_ca_file`), which
    /// `clientcert=verify-ca|verify-full` lines in [`hba`](Self::hba) can then require.
    pub fn ssl(
        mut self,
        server_cert_pem: &str,
        server_key_pem: &str,
        ca_pem: Option<&str>,
    ) -> Self {
        self.ssl = Some(SslFiles {
            cert_pem: server_cert_pem.to_owned(),
            key_pem: server_key_pem.to_owned(),
            ca_pem: ca_pem.map(str::to_owned),
        });
        self
    }

    /// Replaces `pg_hba.conf` with these lines, e.g.
    /// `hostssl all all 127.0.0.1/32 trust clientcert=verify-full`.
    pub fn hba<I, S>(mut self, lines: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.hba = Some(lines.into_iter().map(Into::into).collect());
        self
    }

    /// Adds `name = 'value'` to `postgresql.conf`; later settings win over earlier ones and
    /// over the defaults (`fsync = off`, ...).
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// Runs `initdb` and starts the server; blocks until it accepts connections.
    ///
    /// Errors are [`Error::TestDatabase`] with the command's output or the server log's tail.
    pub fn start(self) -> Result<TempCluster> {
        for (name, _) in &self.settings {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            {
                return Err(Error::TestDatabase(format!(
                    "invalid setting name {name:?}: use a postgresql.conf parameter such as \"work_mem\""
                )));
            }
        }
        let bin_dir = match self.bin_dir.clone() {
            Some(dir) => dir,
            None => find_bin_dir()?,
        };
        for tool in ["initdb", "pg_ctl"] {
            if !bin_dir.join(tool).is_file() {
                return Err(Error::TestDatabase(format!(
                    "{} not found; set {BIN_ENV} to the directory holding initdb and pg_ctl",
                    bin_dir.join(tool).display()
                )));
            }
        }

        let mut cluster = TempCluster::in_new_dir("cluster", bin_dir)?;
        cluster.create_dir(&cluster.socket_dir)?;
        cluster.chown(&cluster.root)?;

        let initdb = cluster
            .command("initdb")
            .arg("-D")
            .arg(&cluster.data_dir)
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output();
        check("initdb", initdb, &cluster)?;

        cluster.write_config(&self)?;
        cluster.start_on_free_port()?;
        Ok(cluster)
    }
}

impl TempCluster {
    /// A cluster not yet created in a new temporary directory owned by the server's OS user.
    /// From here on Drop removes the directory (and stops the server) whatever fails.
    pub(super) fn in_new_dir(kind: &str, bin_dir: PathBuf) -> Result<TempCluster> {
        let root = unique_dir(kind)?;
        let mut cluster = TempCluster {
            data_dir: root.join("data"),
            socket_dir: root.join("socket"),
            log_file: root.join("server.log"),
            root,
            bin_dir,
            owner: None,
            port: 0,
            running: false,
            cleaned_up: false,
        };
        cluster.owner = server_owner(&cluster.root)?;
        Ok(cluster)
    }

    /// Options for a cluster: TLS, `pg_hba.conf`, settings.
    pub fn builder() -> TempClusterBuilder {
        TempClusterBuilder::default()
    }

    /// Starts a cluster with the defaults (`trust` authentication, no TLS).
    pub fn start() -> Result<TempCluster> {
        TempClusterBuilder::default().start()
    }

    /// The TCP port, on [`host`](Self::host).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Always `127.0.0.1`: the server listens on the loopback address only.
    pub fn host(&self) -> &str {
        HOST
    }

    /// The directory of the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The data directory (`PGDATA`).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// `postgresql://postgres@127.0.0.1:PORT/{database}`.
    pub fn connection_string(&self, database: &str) -> String {
        local_connection_string(self.port, database)
    }

    /// A [`DatabaseConfig`] for `database` on this cluster as `postgres`, other fields default.
    pub fn database_config(&self, database: &str) -> DatabaseConfig {
        local_config(self.port, database)
    }

    /// Stops the server and deletes the directory, reporting failures that `Drop` would ignore.
    pub fn stop(mut self) -> Result<()> {
        self.cleanup()
    }

    /// Keeps the cluster running until this process exits, then stops and deletes it: a
    /// detached watcher (its own process group, so a Ctrl-C of the process does not take it
    /// down too) waits for this process to end.
    pub fn keep_until_exit(mut self) -> Result<()> {
        let mut stop = self.command("pg_ctl");
        stop.arg("-D")
            .arg(&self.data_dir)
            .args(["-m", "immediate", "-w", "stop"]);
        let mut argv = vec![stop.get_program().to_owned()];
        argv.extend(stop.get_args().map(ToOwned::to_owned));
        let script = "pid=$1; root=$2; shift 2; \
                      while kill -0 \"$pid\" 2>/dev/null; do sleep 0.5; done; \
                      \"$@\" >/dev/null 2>&1; rm -rf \"$root\"";
        use std::os::unix::process::CommandExt;
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("pgdbm-cluster-watch")
            .arg(std::process::id().to_string())
            .arg(&self.root)
            .args(argv)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| io_error("start the clean-up watcher of", &self.root, e))?;
        // The watcher cleans up now; dropping would stop the server at once.
        self.cleaned_up = true;
        Ok(())
    }

    fn cleanup(&mut self) -> Result<()> {
        if self.cleaned_up {
            return Ok(());
        }
        self.cleaned_up = true;
        let mut problems = Vec::new();
        if self.running {
            let out = self
                .command("pg_ctl")
                .arg("-D")
                .arg(&self.data_dir)
                .args(["-m", "immediate", "-w", "stop"])
                .output();
            match out {
                Ok(o) if o.status.success() => self.running = false,
                Ok(o) => problems.push(format!("pg_ctl stop failed: {}", output_text(&o))),
                Err(e) => problems.push(format!("cannot run pg_ctl stop: {e}")),
            }
        }
        if let Err(e) = fs::remove_dir_all(&self.root) {
            if e.kind() != std::io::ErrorKind::NotFound {
                problems.push(format!("cannot delete {}: {e}", self.root.display()));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::TestDatabase(problems.join("; ")))
        }
    }

    /// A command for a server binary, run as the cluster's owner.
    pub(super) fn command(&self, tool: &str) -> Command {
        let program = self.bin_dir.join(tool);
        let mut cmd = match self.owner {
            Some(_) => {
                let mut c = Command::new(runuser());
                c.args(["-u", SERVER_OS_USER, "--"]).arg(program);
                c
            }
            None => Command::new(program),
        };
        // The server user may not be able to enter the caller's working directory.
        cmd.current_dir(&self.root)
            .env_remove("PGDATA")
            .env_remove("PGPORT");
        cmd
    }

    pub(super) fn create_dir(&self, dir: &Path) -> Result<()> {
        fs::create_dir(dir).map_err(|e| io_error("create", dir, e))?;
        self.chown(dir)
    }

    pub(super) fn chown(&self, path: &Path) -> Result<()> {
        match self.owner {
            Some(o) => std::os::unix::fs::chown(path, Some(o.uid), Some(o.gid))
                .map_err(|e| io_error("chown", path, e)),
            None => Ok(()),
        }
    }

    /// Writes a file owned by the server user, readable by it only when `private`.
    fn write_file(&self, path: &Path, contents: &str, private: bool) -> Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(if private { 0o600 } else { 0o644 })
            .open(path)
            .map_err(|e| io_error("create", path, e))?;
        file.write_all(contents.as_bytes())
            .map_err(|e| io_error("write", path, e))?;
        self.chown(path)
    }

    pub(super) fn write_config(&self, options: &TempClusterBuilder) -> Result<()> {
        let mut settings: Vec<(String, String)> = vec![
            ("listen_addresses".into(), HOST.into()),
            (
                "unix_socket_directories".into(),
                self.socket_dir.display().to_string(),
            ),
        ];
        settings.extend(
            FAST_SETTINGS
                .iter()
                .map(|&(n, v)| (n.to_owned(), v.to_owned())),
        );

        if let Some(ssl) = &options.ssl {
            let dir = self.root.join("ssl");
            self.create_dir(&dir)?;
            let cert = dir.join("server.crt");
            let key = dir.join("server.key");
            self.write_file(&cert, &ssl.cert_pem, false)?;
            // The server refuses a key that others can read.
            self.write_file(&key, &ssl.key_pem, true)?;
            settings.push(("ssl".into(), "on".into()));
            settings.push(("ssl_cert_file".into(), cert.display().to_string()));
            settings.push(("ssl_key_file".into(), key.display().to_string()));
            if let Some(ca_pem) = &ssl.ca_pem {
                let ca = dir.join("ca.crt");
                self.write_file(&ca, ca_pem, false)?;
                settings.push(("ssl_ca_file".into(), ca.display().to_string()));
            }
        }
        settings.extend(options.settings.iter().cloned());

        let mut conf = String::from("\n# pgdbm TempCluster\n");
        for (name, value) in &settings {
            conf.push_str(&format!("{name} = {}\n", conf_quote(value)));
        }
        let path = self.data_dir.join("postgresql.conf");
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(conf.as_bytes()))
            .map_err(|e| io_error("append to", &path, e))?;

        if let Some(lines) = &options.hba {
            let mut hba = lines.join("\n");
            hba.push('\n');
            self.write_file(&self.data_dir.join("pg_hba.conf"), &hba, true)?;
        }
        Ok(())
    }

    /// `pg_ctl -w start` on a free port, retrying with another port after a clash.
    pub(super) fn start_on_free_port(&mut self) -> Result<()> {
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            self.port = free_port()?;
            match self.pg_ctl_start() {
                Ok(()) => return Ok(()),
                Err(StartFailure::PortInUse(message)) => last_error = message,
                Err(StartFailure::Other(message)) => {
                    last_error = message;
                    break;
                }
            }
        }
        Err(Error::TestDatabase(last_error))
    }

    /// `pg_ctl -w start` on [`port`](Self::port); on failure no server is left running.
    fn pg_ctl_start(&mut self) -> std::result::Result<(), StartFailure> {
        let log_start = fs::metadata(&self.log_file).map(|m| m.len()).unwrap_or(0);
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&self.log_file)
            .args(["-w", "-t", "60", "-o"])
            .arg(format!("-p {}", self.port))
            .arg("start")
            .output();
        // Even a failed start may leave a postmaster behind (e.g. after the wait timed out).
        self.running = true;
        match out {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => {
                let log = log_since(&self.log_file, log_start);
                let _ = self
                    .command("pg_ctl")
                    .arg("-D")
                    .arg(&self.data_dir)
                    .args(["-m", "immediate", "-w", "stop"])
                    .output();
                self.running = false;
                let message = format!(
                    "pg_ctl start on port {} failed: {}\nserver log (last lines):\n{}",
                    self.port,
                    output_text(&o),
                    tail(&log, LOG_TAIL_LINES)
                );
                if log.contains("Address already in use") || log.contains("could not bind") {
                    Err(StartFailure::PortInUse(message))
                } else {
                    Err(StartFailure::Other(message))
                }
            }
            Err(e) => {
                self.running = false;
                Err(StartFailure::Other(format!("cannot run pg_ctl: {e}")))
            }
        }
    }

    /// Stops the server (`pg_ctl -m fast`: open sessions are terminated, as in a planned
    /// restart) but keeps the data directory, so [`start_server`](Self::start_server) can
    /// bring it back. Does nothing when the server is already stopped.
    pub fn stop_server(&mut self) -> Result<()> {
        if !self.running {
            return Ok(());
        }
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-m", "fast", "-w", "-t", "60", "stop"])
            .output();
        match out {
            Ok(o) if o.status.success() => {
                self.running = false;
                Ok(())
            }
            Ok(o) => Err(Error::TestDatabase(format!(
                "pg_ctl stop failed: {}",
                output_text(&o)
            ))),
            Err(e) => Err(Error::TestDatabase(format!("cannot run pg_ctl stop: {e}"))),
        }
    }

    /// Starts a server stopped with [`stop_server`](Self::stop_server) again, on the same port
    /// and data directory, so clients configured for it reconnect without changes; blocks until
    /// it accepts connections. Does nothing when the server is running. Fails if another
    /// process took the port meanwhile.
    pub fn start_server(&mut self) -> Result<()> {
        if self.running {
            return Ok(());
        }
        if self.cleaned_up {
            return Err(Error::TestDatabase(
                "the cluster was already stopped and deleted".into(),
            ));
        }
        self.pg_ctl_start().map_err(|f| match f {
            StartFailure::PortInUse(m) | StartFailure::Other(m) => Error::TestDatabase(m),
        })
    }

    /// [`stop_server`](Self::stop_server), then [`start_server`](Self::start_server).
    pub fn restart(&mut self) -> Result<()> {
        self.stop_server()?;
        self.start_server()
    }
}

/// Why `pg_ctl start` failed: a port clash is worth a retry on another port.
enum StartFailure {
    PortInUse(String),
    Other(String),
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        // Errors cannot be reported from Drop and a panic here would abort a panicking test.
        let _ = self.cleanup();
    }
}

/// `$PGDBM_PG_BIN`, else the highest `/usr/lib/postgresql/<version>/bin`, else `initdb` on
/// `PATH`, else `pg_config --bindir`.
fn find_bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(BIN_ENV).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir(DEBIAN_PG_ROOT)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version = name
                .split('.')
                .map(str::parse)
                .collect::<std::result::Result<Vec<u32>, _>>()
                .ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    if let Some(dir) = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
    {
        return Ok(dir);
    }
    // pg_config names the binaries' directory even when it is not on PATH (Homebrew, say).
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && dir.join("initdb").is_file() {
            return Ok(dir);
        }
    }
    Err(Error::TestDatabase(format!(
        "no PostgreSQL server binaries found (looked in {DEBIAN_PG_ROOT}/*/bin, PATH and \
         `pg_config --bindir`); install them with `apt-get install -y postgresql` (Debian, \
         Ubuntu; `brew install postgresql` on macOS), or set {BIN_ENV} to the directory holding \
         initdb and pg_ctl"
    )))
}

pub(super) fn check(what: &str, out: std::io::Result<Output>, cluster: &TempCluster) -> Result<()> {
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => {
            let hint = if cluster.owner.is_some() {
                format!(
                    " (running as root: the `{SERVER_OS_USER}` user must be able to enter {})",
                    cluster.root.display()
                )
            } else {
                String::new()
            };
            Err(Error::TestDatabase(format!(
                "{what} failed{hint}: {}",
                output_text(&o)
            )))
        }
        Err(e) => Err(Error::TestDatabase(format!("cannot run {what}: {e}"))),
    }
}

#[cfg(test)]
#[path = "cluster_tests.rs"]
mod tests;
