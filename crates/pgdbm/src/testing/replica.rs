//! Streaming replicas of a [`TempCluster`]: `pg_basebackup -R` into a new temporary cluster
//! that runs as a hot standby, and promotion for failover tests.

use std::time::{Duration, Instant};

use super::cluster::{check, TempCluster, TempClusterBuilder};
use super::process::HOST;
use crate::error::{Error, Result};

impl TempCluster {
    /// Starts a hot-standby replica of this cluster: a base backup taken over the replication
    /// protocol (`pg_basebackup -R -X stream`) into a new temporary directory, started on its
    /// own free port. It streams from this cluster until [`promote`](Self::promote) and is
    /// stopped and deleted when dropped, like any [`TempCluster`].
    ///
    /// ```no_run
    /// use pgdbm::testing::TempCluster;
    ///
    /// let primary = TempCluster::start()?;
    /// let replica = primary.start_replica()?;
    /// // ... write on the primary, read on the replica ...
    /// # Ok::<(), pgdbm::Error>(())
    /// ```
    pub fn start_replica(&self) -> Result<TempCluster> {
        if !self.running {
            return Err(Error::TestDatabase(
                "cannot start a replica of a stopped cluster".into(),
            ));
        }
        let mut replica = TempCluster::in_new_dir("replica", self.bin_dir.clone())?;
        replica.create_dir(&replica.socket_dir)?;
        replica.chown(&replica.root)?;
        let backup = replica
            .command("pg_basebackup")
            .args(["-h", HOST, "-p", &self.port.to_string(), "-U", "postgres"])
            .arg("-D")
            .arg(&replica.data_dir)
            .args(["-R", "-X", "stream", "-c", "fast", "--no-sync"])
            .output();
        check("pg_basebackup", backup, &replica)?;
        // The backup copied the primary's postgresql.conf; the settings appended now win over
        // its listen address and socket directory.
        replica.write_config(&TempClusterBuilder::default().setting("hot_standby", "on"))?;
        replica.start_on_free_port()?;
        Ok(replica)
    }

    /// Promotes a replica to a primary (`pg_ctl promote`) and waits until it accepts writes.
    pub fn promote(&self) -> Result<()> {
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-w", "-t", "60", "promote"])
            .output();
        check("pg_ctl promote", out, self)
    }

    /// Waits until `replica` has replayed everything this cluster had written when the call
    /// began, or `timeout` passes.
    ///
    /// ```no_run
    /// # async fn f(primary: &pgdbm::testing::TempCluster, replica: &pgdbm::testing::TempCluster) -> pgdbm::Result<()> {
    /// primary.wait_for_replica(replica, std::time::Duration::from_secs(10)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn wait_for_replica(&self, replica: &TempCluster, timeout: Duration) -> Result<()> {
        // The insert position, not the write position: with `synchronous_commit = off` (as a
        // TempCluster runs) a committed record may not have been written yet.
        // Just past a page header (the last record ended on a page boundary, as after
        // pg_basebackup's segment switch), the insert position is one that an idle replica's
        // replay position, the end of the last record, never reaches: use the boundary.
        let lsn: String = query_text(
            self,
            "SELECT (CASE \
               WHEN (l - '0/0') % pg_size_bytes(current_setting('wal_segment_size')) = 40 THEN l - 40 \
               WHEN (l - '0/0') % current_setting('wal_block_size')::numeric = 24 THEN l - 24 \
               ELSE l END)::text FROM pg_current_wal_insert_lsn() AS l",
        )
        .await?;
        let deadline = Instant::now() + timeout;
        let sql = format!("SELECT (pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn)::text");
        loop {
            if query_text(replica, &sql).await? == "true" {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::TestDatabase(format!(
                    "the replica on port {} did not replay up to {lsn} within {timeout:?}",
                    replica.port
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// One text value from a throwaway connection to `cluster`'s `postgres` database.
async fn query_text(cluster: &TempCluster, sql: &str) -> Result<String> {
    let url = cluster.connection_string("postgres");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    let task = tokio::spawn(connection);
    let rows = client.simple_query(sql).await;
    drop(client);
    let _ = task.await;
    rows?
        .into_iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .ok_or_else(|| Error::TestDatabase(format!("{sql} returned no value")))
}
