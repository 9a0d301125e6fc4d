//! The per-connection statement cache: prepared statements by SQL text, statements registered
//! with `add_prepared_statement`, stale-plan handling, and parameter types for the mode without
//! named statements.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Statement;

use super::PgConn;

impl PgConn {
    /// A prepared statement for `sql`, from the cache or freshly prepared.
    pub(crate) async fn statement(&self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(hit) = self.pinned_statement(sql) {
            return Ok(hit);
        }
        if let Some(cache) = &self.statements {
            if let Some(st) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(sql) {
                return Ok(st.clone());
            }
        }
        // Boxed: the driver's prepare future (with its type lookups) is large, and inline it
        // would be part of, and copied with, every query's future, cache hit or not.
        Box::pin(self.prepare_and_cache(sql)).await
    }

    async fn prepare_and_cache(&self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        let Some(cache) = &self.statements else {
            // Callers check `uses_named_statements` first; preparing here keeps this total.
            return self.client.prepare(sql).await;
        };
        let st = self.client.prepare(sql).await?;
        cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .put(sql.into(), st.clone());
        Ok(st)
    }

    /// Drops `sql` from the caches if `error` says its prepared statement is stale, so the next
    /// use prepares it again. Returns whether it did.
    pub(crate) fn forget_if_stale(&self, sql: &str, error: &tokio_postgres::Error) -> bool {
        let Some(db) = error.as_db_error() else {
            return false;
        };
        let stale = match db.code().code() {
            "0A000" => db
                .message()
                .contains("cached plan must not change result type"),
            "26000" => true,
            _ => false,
        };
        if !stale {
            return false;
        }
        if let Some(cache) = &self.statements {
            cache.lock().unwrap_or_else(|e| e.into_inner()).pop(sql);
        }
        self.pinned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(s, _)| &**s != sql);
        true
    }

    fn pinned_statement(&self, sql: &str) -> Option<Statement> {
        if !self.has_pinned.load(Ordering::Relaxed) {
            return None;
        }
        let pinned = self.pinned.lock().unwrap_or_else(|e| e.into_inner());
        if pinned.is_empty() {
            return None;
        }
        pinned
            .iter()
            .find(|(s, _)| &**s == sql)
            .map(|(_, st)| st.clone())
    }

    /// Prepares and pins a registered statement; failures are left for the first real use.
    pub(crate) async fn pin_statement(&self, sql: Arc<str>) {
        if self.statements.is_none() || self.pinned_statement(&sql).is_some() {
            return;
        }
        match self.client.prepare(&sql).await {
            Ok(st) => {
                self.pinned
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((sql, st));
                self.has_pinned.store(true, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::debug!(error = %e, "prepared statement not ready yet; it will be prepared on first use")
            }
        }
    }
}

/// Explicit parameter types for the unnamed-statement path. Text-like values go as `unknown`
/// so the server infers the column's type (varchar, enum, …) as it would for a literal.
pub(crate) fn typed_params<'a>(
    params: &[&'a (dyn ToSql + Sync)],
) -> Vec<(&'a (dyn ToSql + Sync), Type)> {
    const CANDIDATES: &[Type] = &[
        Type::UNKNOWN,
        Type::BOOL,
        Type::INT2,
        Type::INT4,
        Type::INT8,
        Type::FLOAT4,
        Type::FLOAT8,
        Type::NUMERIC,
        Type::BYTEA,
        Type::JSONB,
        Type::UUID,
        Type::DATE,
        Type::TIME,
        Type::TIMESTAMP,
        Type::TIMESTAMPTZ,
        Type::INTERVAL,
        Type::INET,
        Type::OID,
        Type::CHAR,
        Type::BOOL_ARRAY,
        Type::INT2_ARRAY,
        Type::INT4_ARRAY,
        Type::INT8_ARRAY,
        Type::FLOAT4_ARRAY,
        Type::FLOAT8_ARRAY,
        Type::NUMERIC_ARRAY,
        Type::TEXT_ARRAY,
        Type::BYTEA_ARRAY,
        Type::JSONB_ARRAY,
        Type::UUID_ARRAY,
        Type::DATE_ARRAY,
        Type::TIMESTAMP_ARRAY,
        Type::TIMESTAMPTZ_ARRAY,
        Type::INET_ARRAY,
    ];
    params
        .iter()
        .map(|p| {
            let ty = CANDIDATES
                .iter()
                .find(|t| p.accepts_dyn(t))
                .cloned()
                .unwrap_or(Type::UNKNOWN);
            (*p, ty)
        })
        .collect()
}

trait AcceptsDyn {
    fn accepts_dyn(&self, ty: &Type) -> bool;
}

impl AcceptsDyn for &(dyn ToSql + Sync) {
    fn accepts_dyn(&self, ty: &Type) -> bool {
        // `accepts` is not object safe; `to_sql_checked` runs it for us on an empty buffer.
        let mut buf = bytes::BytesMut::new();
        match self.to_sql_checked(ty, &mut buf) {
            Ok(_) => true,
            Err(e) => !e.is::<tokio_postgres::types::WrongType>(),
        }
    }
}
