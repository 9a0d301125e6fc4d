//! A primary with a streaming replica, and a manager that reads from it.
#![allow(dead_code, unreachable_pub)]

use pgdbm::testing::{TempCluster, TempClusterBuilder};
use pgdbm::{AsyncDatabaseManager, DatabaseConfig};

/// A primary and a hot standby streaming from it.
pub fn pair_with(builder: TempClusterBuilder) -> (TempCluster, TempCluster) {
    let primary = builder.start().expect("primary");
    let replica = primary.start_replica().expect("replica");
    (primary, replica)
}

pub fn pair() -> (TempCluster, TempCluster) {
    pair_with(TempCluster::builder())
}

/// The primary's config with `replica` as its one read replica.
pub fn config(primary: &TempCluster, replica: &TempCluster) -> DatabaseConfig {
    DatabaseConfig {
        min_connections: 1,
        max_connections: 4,
        retry_attempts: 0,
        read_replicas: vec![replica.connection_string("postgres")],
        ..primary.database_config("postgres")
    }
}

pub async fn connect(config: DatabaseConfig) -> AsyncDatabaseManager {
    let db = AsyncDatabaseManager::new(config).expect("config");
    db.connect().await.expect("connect");
    db
}
