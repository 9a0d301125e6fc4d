//! Recovery under load: every backend terminated, and a throwaway server restarted.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{admin_value, schema_db_with, unique};
use pgdbm::testing::TempCluster;
use pgdbm::AsyncDatabaseManager;
use tokio::task::JoinHandle;

use super::{check_own_results, sessions, with_app};

// ---------------------------------------------------------------------------------------------
// Load: tasks running checked queries in a loop, recording successes and failures.
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct TaskLog {
    oks: u64,
    errors: u64,
    last_ok: Option<Instant>,
    last_err: Option<Instant>,
    first_error: Option<String>,
}

struct Load {
    stop: Arc<AtomicBool>,
    logs: Vec<Arc<Mutex<TaskLog>>>,
    handles: Vec<JoinHandle<()>>,
}

/// A call that takes longer than this counts as hung.
const HANG_LIMIT: Duration = Duration::from_secs(10);

impl Load {
    fn start(db: &AsyncDatabaseManager, tasks: i32) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let mut logs = Vec::new();
        let mut handles = Vec::new();
        for t in 0..tasks {
            let log = Arc::new(Mutex::new(TaskLog::default()));
            logs.push(log.clone());
            let (db, stop) = (db.clone(), stop.clone());
            handles.push(tokio::spawn(async move {
                let mut i: i32 = t * 1_000_000;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let r = tokio::time::timeout(
                        HANG_LIMIT,
                        db.fetch_value::<i32>("SELECT $1::int4", &[&i]),
                    )
                    .await;
                    let failure = match r {
                        Ok(Ok(Some(v))) if v == i => None,
                        Ok(Ok(other)) => panic!("asked for {i}, got {other:?}"),
                        Ok(Err(e)) => Some(e.to_string()),
                        Err(_) => Some(format!("hung for {HANG_LIMIT:?}")),
                    };
                    let failed = failure.is_some();
                    {
                        let now = Instant::now();
                        let mut l = log.lock().unwrap();
                        match failure {
                            None => {
                                l.oks += 1;
                                l.last_ok = Some(now);
                            }
                            Some(e) => {
                                l.errors += 1;
                                l.last_err = Some(now);
                                l.first_error.get_or_insert(e);
                            }
                        }
                    }
                    if failed {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }));
        }
        Load {
            stop,
            logs,
            handles,
        }
    }

    /// Whether every task has succeeded since `since` and after its last failure.
    fn recovered(&self, since: Instant) -> bool {
        self.logs.iter().all(|l| {
            let l = l.lock().unwrap();
            l.last_ok
                .is_some_and(|ok| ok > since && l.last_err.is_none_or(|e| ok > e))
        })
    }

    /// Polls until [`recovered`](Self::recovered), at most `limit`; the time it took.
    async fn wait_recovered(&self, since: Instant, limit: Duration) -> Option<Duration> {
        loop {
            if self.recovered(since) {
                return Some(since.elapsed());
            }
            if since.elapsed() > limit {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn totals(&self) -> (u64, u64, Option<String>) {
        self.logs.iter().fold((0, 0, None), |(o, e, first), l| {
            let l = l.lock().unwrap();
            (
                o + l.oks,
                e + l.errors,
                first.or_else(|| l.first_error.clone()),
            )
        })
    }

    /// Failures after `t`.
    fn failed_after(&self, t: Instant) -> bool {
        self.logs
            .iter()
            .any(|l| l.lock().unwrap().last_err.is_some_and(|e| e > t))
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles {
            h.await.expect("load task panicked");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Terminate every backend under load
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_every_backend_under_load_recovers_within_seconds() {
    let app = unique("faults_term");
    let (db, _guard) = schema_db_with(|c| {
        c.min_connections = 4;
        c.max_connections = 4;
        with_app(c, &app);
    })
    .await;
    let load = Load::start(&db, 6);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before: HashSet<String> = sessions(&app)
        .await
        .into_iter()
        .map(|(p, _, _)| p)
        .collect();
    assert!(!before.is_empty());

    // A storm: every backend of the pool, three times over.
    let (_, errors_before, _) = load.totals();
    let mut terminated: HashSet<String> = HashSet::new();
    for _ in 0..3 {
        // FILTER, not WHERE: the terminate runs only for rows of this pool.
        let pids = admin_value(&format!(
            "SELECT coalesce(string_agg(pid::text, ',') FILTER (WHERE pg_terminate_backend(pid)), '') \
             FROM pg_stat_activity WHERE application_name = '{app}'"
        ))
        .await
        .unwrap();
        terminated.extend(pids.split(',').filter(|p| !p.is_empty()).map(str::to_owned));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // pg_terminate_backend only sends a signal: the storm is over once those backends are gone.
    let gone_by = Instant::now() + Duration::from_secs(5);
    while sessions(&app)
        .await
        .iter()
        .any(|(pid, _, _)| terminated.contains(pid))
    {
        assert!(
            Instant::now() < gone_by,
            "terminated backends still alive after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let terminated = terminated.len();
    let storm_over = Instant::now();
    let recovery = load
        .wait_recovered(storm_over, Duration::from_secs(5))
        .await;
    let recovered_at = Instant::now();
    // Keep the load on: nothing may fail once recovered.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let failed_later = load.failed_after(recovered_at);
    let (oks, errors, first_error) = load.totals();
    load.stop().await;

    let recovery = recovery.unwrap_or_else(|| {
        panic!("not all tasks succeeded within 5 s of the storm; first error: {first_error:?}")
    });
    assert!(
        !failed_later,
        "queries failed after recovery; first error: {first_error:?}"
    );
    assert_eq!(
        errors_before, 0,
        "failures before the storm: {first_error:?}"
    );
    assert!(terminated >= 4, "terminated only {terminated} backends");
    let after: HashSet<String> = sessions(&app)
        .await
        .into_iter()
        .map(|(p, _, _)| p)
        .collect();
    assert!(
        after.is_disjoint(&before),
        "a terminated backend is still there: {before:?} / {after:?}"
    );
    check_own_results(&db, 100).await;
    eprintln!(
        "terminate_storm: {terminated} backends terminated in 3 rounds; {errors} failed calls, \
         {oks} ok; all tasks succeeding again {recovery:?} after the terminated backends were \
         gone (first error: {first_error:?})"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Restart a throwaway server under load
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_the_server_under_load_recovers_within_seconds() {
    let mut cluster = tokio::task::spawn_blocking(TempCluster::start)
        .await
        .unwrap()
        .expect("start a throwaway cluster");
    let mut cfg = cluster.database_config("postgres");
    cfg.min_connections = 2;
    cfg.max_connections = 4;
    cfg.retry_attempts = 5;
    cfg.retry_delay = 0.1;
    cfg.command_timeout = 5.0;
    let db = AsyncDatabaseManager::new(cfg).unwrap();
    db.connect().await.unwrap();
    let load = Load::start(&db, 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(load.recovered(Instant::now() - Duration::from_millis(300)));

    let down_at = Instant::now();
    tokio::task::block_in_place(|| cluster.stop_server()).expect("stop the server");
    let stopped_in = down_at.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, errors_while_down, _) = load.totals();
    let up_at_start = Instant::now();
    tokio::task::block_in_place(|| cluster.start_server()).expect("start the server again");
    let up_at = Instant::now();
    let recovery = load.wait_recovered(up_at, Duration::from_secs(10)).await;
    let recovered_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let failed_later = load.failed_after(recovered_at);
    let (oks, errors, first_error) = load.totals();
    load.stop().await;
    let outage = up_at.duration_since(down_at);

    let recovery = recovery.unwrap_or_else(|| {
        panic!(
            "the manager did not recover within 10 s of the restart; first error: {first_error:?}"
        )
    });
    assert!(
        errors_while_down > 0,
        "no call failed while the server was down"
    );
    assert!(
        !failed_later,
        "queries failed after recovery; first error: {first_error:?}"
    );
    check_own_results(&db, 50).await;
    db.disconnect().await.unwrap();
    tokio::task::spawn_blocking(move || cluster.stop())
        .await
        .unwrap()
        .expect("delete the cluster");
    eprintln!(
        "server_restart: stop took {stopped_in:?}, start took {:?}, outage {outage:?}; {errors} \
         failed calls, {oks} ok; all tasks succeeding again {recovery:?} after the server was up \
         (first error: {first_error:?})",
        up_at.duration_since(up_at_start)
    );
}
