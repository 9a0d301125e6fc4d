//! The two statement modes (named statements with a cache, and `statement_cache_size = 0` for
//! transaction poolers) must give the same result or the same error for the same parameters,
//! and connections must survive types being recreated and statements being deallocated.

#[path = "../common/mod.rs"]
mod common;

mod agreement;
mod invalidation;

use common::*;
use pgdbm::AsyncDatabaseManager;
use postgres_types::{FromSql, ToSql};

const NAMED: usize = 1000;
const UNNAMED: usize = 0;

#[derive(Debug, Clone, Copy, PartialEq, ToSql, FromSql)]
#[postgres(name = "mood")]
enum Mood {
    #[postgres(name = "sad")]
    Sad,
    #[postgres(name = "happy")]
    Happy,
}

#[derive(Debug, Clone, Copy, PartialEq, ToSql, FromSql)]
#[postgres(name = "colour")]
enum Colour {
    #[postgres(name = "red")]
    Red,
    #[postgres(name = "green")]
    Green,
}

async fn mode_db(cache: usize, pool: usize) -> (AsyncDatabaseManager, SchemaGuard) {
    schema_db_with(|c| {
        c.statement_cache_size = cache;
        c.max_connections = pool;
        c.min_connections = 1;
    })
    .await
}
