//! Python pgdbm 0.5.0 on asyncpg, from PyPI, in a venv the suite sets up. It runs as one
//! long-lived worker process (`python/worker.py`) that takes a command per line, so that its
//! slices alternate with the others' like any in-process contender; it measures its own slices
//! with the same window rules.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{json, Value as Json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::measure::{Budget, Sample};
use crate::workload::Workload;
use crate::BoxError;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/python");

/// Where the venv lives: `PGDBM_BENCH_VENV`, or `target/pgdbm-bench-venv` in the workspace.
pub fn venv_dir() -> PathBuf {
    std::env::var_os("PGDBM_BENCH_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(DIR).join("../../../target/pgdbm-bench-venv"))
}

/// Creates the venv (once; later runs reuse it) and returns its interpreter.
pub async fn setup() -> Result<PathBuf, BoxError> {
    let venv = venv_dir();
    let out = Command::new("bash")
        .arg(Path::new(DIR).join("setup_venv.sh"))
        .arg(&venv)
        .output()
        .await?;
    if !out.status.success() {
        return Err(format!(
            "setting up the Python venv failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(venv.join("bin/python"))
}

fn worker(python: &Path, url: &str, schema: &str) -> Command {
    let mut cmd = Command::new(python);
    cmd.arg(Path::new(DIR).join("worker.py"))
        .env("DATABASE_URL", url)
        .env("BENCH_SCHEMA", schema)
        .kill_on_drop(true);
    cmd
}

pub struct Python {
    _child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Python {
    pub fn start(python: &Path, url: &str, schema: &str) -> Result<Python, BoxError> {
        let mut child = worker(python, url, schema)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        Ok(Python {
            stdin: child.stdin.take().ok_or("no stdin")?,
            stdout: BufReader::new(child.stdout.take().ok_or("no stdout")?),
            _child: child,
        })
    }

    async fn call(&mut self, command: Json) -> Result<Json, BoxError> {
        let mut line = command.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await?;
        self.stdin.flush().await?;
        let mut reply = String::new();
        if self.stdout.read_line(&mut reply).await? == 0 {
            return Err("the Python worker exited".into());
        }
        let reply: Json = serde_json::from_str(&reply)?;
        if reply["ok"] != json!(true) {
            return Err(format!("Python worker: {}", reply["error"]).into());
        }
        Ok(reply)
    }

    /// One slice: open a pool of `conc`, run, close.
    pub async fn slice(
        &mut self,
        w: Workload,
        conc: usize,
        budget: Budget,
    ) -> Result<Sample, BoxError> {
        self.call(json!({"cmd": "open", "conc": conc})).await?;
        let command = match budget {
            Budget::Time(d) => json!({"cmd": "run", "workload": w.key(), "conc": conc,
                                      "budget": {"secs": d.as_secs_f64()}}),
            Budget::Ops(n) => json!({"cmd": "run", "workload": w.key(), "conc": conc,
                                     "budget": {"ops": n}}),
            Budget::Rows(rows, repeat) => json!({"cmd": "bulk", "workload": w.key(),
                                                 "conc": conc, "rows": rows, "repeat": repeat}),
        };
        let result = self.call(command).await;
        self.call(json!({"cmd": "close"})).await?;
        let reply = result?;
        let secs = reply["secs"].as_f64().ok_or("no secs in the reply")?;
        let ops = match budget {
            Budget::Rows(rows, repeat) => (rows * repeat) as u64,
            _ => reply["ops"].as_u64().ok_or("no ops in the reply")?,
        };
        Ok(Sample {
            ops,
            secs,
            all_ops: reply["all_ops"].as_u64().unwrap_or(ops),
            cpu_ns: None,
            memory: None,
        })
    }
}

/// Peak RSS of a fresh Python worker running `w` once: (baseline KiB, peak KiB).
pub async fn rss(python: &Path, url: &str, schema: &str, w: &str) -> Result<(u64, u64), BoxError> {
    let out = worker(python, url, schema)
        .args(["rss", w])
        .output()
        .await?;
    let text = String::from_utf8_lossy(&out.stdout);
    let reply: Json = serde_json::from_str(text.lines().last().unwrap_or("")).map_err(|e| {
        format!(
            "Python rss {w}: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    match (reply["baseline_kb"].as_u64(), reply["peak_kb"].as_u64()) {
        (Some(b), Some(p)) => Ok((b, p)),
        _ => Err(format!("Python rss {w}: {reply}").into()),
    }
}
