//! Cancelling a running query on the server and bringing the connection back to idle.

use super::{PgConn, DRAIN_LIMIT};

impl PgConn {
    pub(crate) async fn cancel_and_drain(&self, rollback: bool) {
        let token = self.client.cancel_token();
        let cancelled = match &self.tls {
            Some(tls) => token.cancel_query(tls.clone()).await,
            None => token.cancel_query(tokio_postgres::NoTls).await,
        };
        if let Err(e) = cancelled {
            tracing::warn!(error = %e, "could not send a cancel request; discarding the connection");
            self.mark_broken();
            return;
        }
        // The empty query's answer comes after the cancelled query's, so once it is back the
        // connection is idle (or in an aborted transaction the caller rolls back).
        let drain = if rollback { "ROLLBACK" } else { "" };
        match tokio::time::timeout(DRAIN_LIMIT, self.client.simple_query(drain)).await {
            Ok(Ok(_)) => {}
            _ => self.mark_broken(),
        }
    }
}
