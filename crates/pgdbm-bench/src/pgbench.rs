//! `pgbench -M prepared`: the server's own limit, run on the same SQL as the other contenders.
//! A slice is one pgbench run with `-t` transactions per client, sized from the previous run's
//! rate so that it lasts about as long as the other contenders' slices; its rate excludes the
//! connection time.

use std::collections::HashMap;
use std::path::PathBuf;

use tokio::process::Command;

use crate::measure::{Budget, Sample};
use crate::setup::SESSION_OPTIONS;
use crate::workload::{render, Workload, SQL_TX_INSERT, SQL_TX_UPDATE};
use crate::BoxError;

pub struct Pgbench {
    bin: PathBuf,
    url: String,
    schema: String,
    dir: PathBuf,
    /// Last measured tps per (workload, clients): sizes the next run.
    tps: HashMap<(Workload, usize), f64>,
}

impl Pgbench {
    /// Finds `pgbench` on PATH or among the server's installed binaries.
    pub fn find(url: &str, schema: &str) -> Option<Pgbench> {
        let on_path = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("pgbench"))
                .find(|p| p.is_file())
        });
        let installed = || {
            let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
                .ok()?
                .filter_map(|e| Some(e.ok()?.path().join("bin/pgbench")))
                .filter(|p| p.is_file())
                .collect();
            found.sort();
            found.pop()
        };
        let bin = on_path.or_else(installed)?;
        let dir = std::env::temp_dir().join(format!("pgdbm-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        Some(Pgbench {
            bin,
            url: url.to_owned(),
            schema: schema.to_owned(),
            dir,
            tps: HashMap::new(),
        })
    }

    fn script(&self, w: Workload) -> String {
        let s = |sql: &str| render(sql, &self.schema);
        // pgbench sends `:variables` as parameters of the prepared statement.
        match w {
            Workload::PointSelect => format!(
                "\\set id random(1, {})\nSELECT * FROM \"{}\".bench_rows WHERE id = :id;\n",
                crate::workload::TABLE_ROWS,
                self.schema
            ),
            Workload::PgType => {
                let sql = w
                    .read_sql()
                    .expect("read")
                    .replace("$1", ":m")
                    .replace("$2", ":d");
                format!("\\set m -1\n\\set d true\n{sql};\n")
            }
            Workload::Series => format!(
                "\\set n 1000\n{};\n",
                w.read_sql().expect("read").replace("$1", ":n")
            ),
            Workload::Transaction => format!(
                "\\set a random(1, {})\n\\set d random(-100, 100)\nBEGIN;\n{};\n{};\nEND;\n",
                crate::workload::TABLE_ROWS,
                s(SQL_TX_INSERT).replace("$1", ":a").replace("$2", ":d"),
                s(SQL_TX_UPDATE).replace("$1", ":a").replace("$2", ":d"),
            ),
            _ => format!("{};\n", s(w.read_sql().expect("a read workload"))),
        }
    }

    /// One run; returns (transactions, tps without connection time).
    async fn run(
        &self,
        w: Workload,
        clients: usize,
        per_client: Per,
    ) -> Result<(u64, f64), BoxError> {
        let file = self.dir.join(format!("{}.sql", w.key()));
        std::fs::write(&file, self.script(w))?;
        let threads = clients.min(std::thread::available_parallelism().map_or(2, |n| n.get()));
        let mut cmd = Command::new(&self.bin);
        cmd.args(["-n", "-M", "prepared", "-c", &clients.to_string()])
            .args(["-j", &threads.to_string()])
            .arg("-f")
            .arg(&file)
            .env("PGOPTIONS", SESSION_OPTIONS)
            .kill_on_drop(true);
        match per_client {
            Per::Secs(s) => cmd.args(["-T", &s.to_string()]),
            Per::Transactions(t) => cmd.args(["-t", &t.to_string()]),
        };
        let out = cmd.arg(&self.url).output().await?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!(
                "pgbench failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )
            .into());
        }
        let field = |prefix: &str| -> Option<f64> {
            let line = stdout.lines().find(|l| l.starts_with(prefix))?;
            // "tps = 9968.1 (without …)", "… processed: 100/100"
            let token = line[prefix.len()..].split_whitespace().next()?;
            token.split('/').next()?.parse().ok()
        };
        let tps = field("tps = ").ok_or("pgbench printed no tps")?;
        let done = field("number of transactions actually processed: ")
            .ok_or("pgbench printed no transaction count")?;
        Ok((done as u64, tps))
    }

    pub async fn slice(
        &mut self,
        w: Workload,
        conc: usize,
        budget: Budget,
    ) -> Result<Sample, BoxError> {
        let per_client = match budget {
            Budget::Time(d) => {
                let tps = match self.tps.get(&(w, conc)) {
                    Some(&tps) => tps,
                    // Calibration run, not counted.
                    None => self.run(w, conc, Per::Secs(1)).await?.1,
                };
                let t = (tps * d.as_secs_f64() / conc as f64).ceil().max(1.0);
                Per::Transactions(t as u64)
            }
            Budget::Ops(n) => Per::Transactions(n.div_ceil(conc as u64).max(1)),
            Budget::Rows(..) => return Err("pgbench has no bulk workloads".into()),
        };
        let (done, tps) = self.run(w, conc, per_client).await?;
        self.tps.insert((w, conc), tps);
        Ok(Sample {
            ops: done,
            secs: done as f64 / tps,
            all_ops: done,
            cpu_ns: None,
            memory: None,
        })
    }
}

impl Drop for Pgbench {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(Clone, Copy)]
enum Per {
    Secs(u64),
    Transactions(u64),
}
