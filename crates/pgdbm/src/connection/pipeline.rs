//! Statements pipelined on one connection: each made ready first (its prepared statement or
//! parameter types, so sending it needs no round trip of its own), then all sent in order and
//! their results read back in order.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use futures_util::{pin_mut, TryStreamExt};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Row, Statement};

use super::PgConn;

/// What one pipelined statement returns.
pub(crate) enum Output {
    Rows(Vec<Row>),
    First(Option<Row>),
    Affected(u64),
}

/// What the caller wants of a statement.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Want {
    Rows,
    First,
    Affected,
}

/// A statement that can be sent at once: no prepare or type lookup left to wait for.
pub(crate) enum Ready<'p> {
    Named(Statement),
    Typed(Vec<(&'p (dyn ToSql + Sync), Type)>),
    /// An `execute` without parameters: the simple protocol, as for a single call.
    Simple,
}

/// A driver future of one pipelined message sequence.
pub(crate) type Sent<'s> =
    Pin<Box<dyn Future<Output = Result<Output, tokio_postgres::Error>> + Send + 's>>;

impl PgConn {
    /// Makes `sql` ready to send: its cached (or newly prepared) statement, or without named
    /// statements the parameter types the server infers.
    pub(crate) async fn ready<'p>(
        &self,
        sql: &str,
        params: &[&'p (dyn ToSql + Sync)],
        want: Want,
        in_transaction: bool,
    ) -> Result<Ready<'p>, tokio_postgres::Error> {
        if want == Want::Affected && params.is_empty() {
            self.note_effects(crate::sql::Effects::of(sql));
            return Ok(Ready::Simple);
        }
        if self.uses_named_statements() {
            Ok(Ready::Named(self.statement(sql).await?))
        } else {
            Ok(Ready::Typed(
                self.typed_params(sql, params, in_transaction).await?,
            ))
        }
    }

    /// Sends a ready statement. The driver writes the request when the future is first polled,
    /// so futures polled in order go out in order.
    pub(crate) fn send<'s>(
        &'s self,
        sql: &'s str,
        params: &'s [&'s (dyn ToSql + Sync)],
        ready: &'s Ready<'s>,
        want: Want,
    ) -> Sent<'s> {
        self.count();
        let client = &self.client;
        match (ready, want) {
            (Ready::Simple, _) => Box::pin(async move {
                let msgs = client.simple_query(sql).await?;
                Ok(Output::Affected(affected(&msgs)))
            }),
            (Ready::Named(st), Want::Rows) => {
                Box::pin(async move { client.query(st, params).await.map(Output::Rows) })
            }
            (Ready::Named(st), Want::Affected) => {
                Box::pin(async move { client.execute(st, params).await.map(Output::Affected) })
            }
            (Ready::Named(st), Want::First) => Box::pin(async move {
                let stream = client.query_raw(st, params.iter().copied()).await?;
                first_of(stream).await.map(Output::First)
            }),
            (Ready::Typed(typed), Want::Rows) => {
                Box::pin(async move { client.query_typed(sql, typed).await.map(Output::Rows) })
            }
            (Ready::Typed(typed), Want::Affected) => {
                Box::pin(
                    async move { client.execute_typed(sql, typed).await.map(Output::Affected) },
                )
            }
            (Ready::Typed(typed), Want::First) => Box::pin(async move {
                let stream = client
                    .query_typed_raw(sql, typed.iter().map(|(v, t)| (*v, t.clone())))
                    .await?;
                first_of(stream).await.map(Output::First)
            }),
        }
    }

    /// A statement without parameters (`BEGIN`, `COMMIT`) in the same pipeline.
    pub(crate) fn send_control<'s>(&'s self, sql: &'s str) -> Sent<'s> {
        let client = &self.client;
        Box::pin(async move {
            client.batch_execute(sql).await?;
            Ok(Output::Affected(0))
        })
    }
}

/// The rows affected by the last statement of a simple-protocol response.
pub(crate) fn affected(msgs: &[tokio_postgres::SimpleQueryMessage]) -> u64 {
    msgs.iter()
        .rev()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .unwrap_or(0)
}

/// The first row; the rest is read and discarded, so the response ends here.
async fn first_of(stream: tokio_postgres::RowStream) -> Result<Option<Row>, tokio_postgres::Error> {
    pin_mut!(stream);
    let first = stream.try_next().await?;
    if first.is_some() {
        while stream.try_next().await?.is_some() {}
    }
    Ok(first)
}

/// Polls every future once, in order (each sends its request then), and from there on the
/// earliest unfinished one: the server answers in order, so a later future cannot finish
/// before the earlier ones. `done` gets each result as it comes, with its index.
pub(crate) async fn in_order<'s>(
    sent: Vec<Sent<'s>>,
    mut done: impl FnMut(usize, Result<Output, tokio_postgres::Error>),
) {
    let mut sent: Vec<Option<Sent<'s>>> = sent.into_iter().map(Some).collect();
    let mut started = false;
    let mut next = 0;
    std::future::poll_fn(|cx| {
        if !started {
            started = true;
            for (i, slot) in sent.iter_mut().enumerate() {
                if let Some(fut) = slot {
                    if let Poll::Ready(r) = fut.as_mut().poll(cx) {
                        *slot = None;
                        done(i, r);
                    }
                }
            }
        }
        while next < sent.len() {
            let Some(fut) = &mut sent[next] else {
                next += 1;
                continue;
            };
            match fut.as_mut().poll(cx) {
                Poll::Ready(r) => {
                    sent[next] = None;
                    done(next, r);
                    next += 1;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(())
    })
    .await
}
