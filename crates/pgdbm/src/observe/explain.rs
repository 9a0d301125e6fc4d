//! `explain_query`: a plan as JSON, with `ANALYZE` run inside a transaction that is always
//! rolled back.

use tokio_postgres::types::ToSql;

use crate::error::{Error, Result};
use crate::manager::AsyncDatabaseManager;

/// `EXPLAIN (FORMAT JSON[, ANALYZE, BUFFERS]) query`: the plan object (the one element of the
/// array PostgreSQL returns). The statement goes through the extended protocol, which takes one
/// statement only, so nothing after a `;` can run outside the rolled-back transaction.
pub(crate) async fn explain_query(
    db: &AsyncDatabaseManager,
    query: &str,
    params: &[&(dyn ToSql + Sync)],
    analyze: bool,
) -> Result<serde_json::Value> {
    let body = query.trim_end().trim_end_matches(';').trim_end();
    if body.is_empty() {
        return Err(Error::Configuration {
            field: "query",
            message: "explain_query needs a statement to explain".into(),
        });
    }
    let options = if analyze {
        "FORMAT JSON, ANALYZE, BUFFERS"
    } else {
        "FORMAT JSON"
    };
    let sql = format!("EXPLAIN ({options}) {body}");
    let plan: Option<serde_json::Value> = if analyze {
        let tx = db.transaction().await?;
        let plan = tx.fetch_value(&sql, params).await;
        // Rolled back whatever happened: ANALYZE really ran the statement.
        let rolled_back = tx.rollback().await;
        let plan = plan?;
        rolled_back?;
        plan
    } else {
        db.fetch_value(&sql, params).await?
    };
    match plan {
        Some(serde_json::Value::Array(mut plans)) if plans.len() == 1 => Ok(plans.remove(0)),
        Some(other) => Ok(other),
        None => Err(Error::decode(0, "json", "EXPLAIN returned no plan")),
    }
}
