//! The listener's side: opening its connection with the pool's settings and the retry policy,
//! and the task that owns the connection, forwards notifications and reconnects.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::sync::oneshot;
use tokio_postgres::{AsyncMessage, Client, SimpleQueryMessage};
use tracing::Instrument;

use super::{
    Item, Messages, Notification, PgError, CLOSE_LIMIT, HEALTH_CHECK_EVERY, HEALTH_CHECK_LIMIT,
};
use crate::error::{Error, Result};
use crate::pool::ListenSpec;
use crate::pool::{db_message, ConnectFailure};
use crate::template::quote_ident;

// ---------------------------------------------------------------------------------------------
// Connecting
// ---------------------------------------------------------------------------------------------

impl ListenSpec {
    /// One attempt: connect, apply the settings, run `init_commands`, LISTEN on every channel.
    async fn open(&self, wires: &[String]) -> Result<Session, Attempt> {
        let (client, mut messages): (Client, Messages) = match &self.tls {
            Some(tls) => {
                let (client, mut conn) = self
                    .pg_config
                    .connect(tls.clone())
                    .await
                    .map_err(Attempt::connect)?;
                let stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
                (client, Box::pin(stream))
            }
            None => {
                let (client, mut conn) = self
                    .pg_config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(Attempt::connect)?;
                let stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
                (client, Box::pin(stream))
            }
        };
        let mut early = Vec::new();
        let msgs = drive(
            &mut messages,
            client.simple_query(&self.setup_sql),
            &mut early,
        )
        .await
        .map_err(|e| e.setup("applying server settings and timeouts"))?;
        let pid = msgs
            .iter()
            .find_map(|m| match m {
                SimpleQueryMessage::Row(r) => r.get(0).and_then(|p| p.parse().ok()),
                _ => None,
            })
            .unwrap_or(0);
        for cmd in &self.init_commands {
            drive(&mut messages, client.batch_execute(cmd), &mut early)
                .await
                .map_err(|e| e.setup("running init_commands"))?;
        }
        if !wires.is_empty() {
            let sql: String = wires
                .iter()
                .map(|w| format!("LISTEN {};", quote_ident(w)))
                .collect();
            drive(&mut messages, client.batch_execute(&sql), &mut early)
                .await
                .map_err(|e| e.setup("subscribing (LISTEN)"))?;
        }
        Ok(Session {
            client,
            messages,
            pid,
            early,
        })
    }

    fn connection_error(&self, attempts: u32, message: String, source: Option<PgError>) -> Error {
        Error::Connection {
            host: self.host.clone(),
            port: self.port,
            database: self.database.clone(),
            attempts,
            message,
            source,
        }
    }
}

/// A live listener connection.
struct Session {
    client: Client,
    messages: Messages,
    pid: i32,
    /// Notifications that arrived while subscribing.
    early: Vec<tokio_postgres::Notification>,
}

/// Why one connect attempt failed.
struct Attempt {
    retryable: bool,
    message: String,
    source: Option<PgError>,
}

impl Attempt {
    fn connect(e: PgError) -> Attempt {
        let failure = ConnectFailure::Driver(e);
        Attempt {
            retryable: failure.is_retryable(),
            message: failure.message(),
            source: failure.into_source(),
        }
    }
}

/// A request on a listener connection that did not complete.
enum Drive {
    /// The server or the driver reported an error.
    Failed(PgError),
    /// The connection ended.
    Closed,
}

impl Drive {
    /// An error while setting up a fresh connection: worth retrying only when the connection
    /// itself failed (or the server is shutting down or starting up), not when a setting or an
    /// init command is wrong.
    fn setup(self, what: &str) -> Attempt {
        match self {
            Drive::Closed => Attempt {
                retryable: true,
                message: format!("{what}: the connection was closed"),
                source: None,
            },
            Drive::Failed(e) => {
                let retryable = match e.as_db_error() {
                    None => true,
                    Some(db) => matches!(db.code().code(), "57P01" | "57P02" | "57P03"),
                };
                Attempt {
                    retryable,
                    message: format!("{what}: {}", db_message(&e)),
                    source: Some(e),
                }
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Drive::Failed(e) => db_message(e),
            Drive::Closed => "the server closed the connection".into(),
        }
    }
}

/// Runs `request` while driving the connection (a request only progresses while the
/// connection is polled), keeping notifications that arrive meanwhile.
async fn drive<T>(
    messages: &mut Messages,
    request: impl Future<Output = Result<T, PgError>>,
    early: &mut Vec<tokio_postgres::Notification>,
) -> Result<T, Drive> {
    futures_util::pin_mut!(request);
    loop {
        tokio::select! {
            biased;
            r = &mut request => return r.map_err(Drive::Failed),
            m = messages.next() => match m {
                Some(Ok(AsyncMessage::Notification(n))) => early.push(n),
                Some(Ok(_)) => {}
                // Terminal: the connection must not be polled again, and the request would
                // never complete.
                Some(Err(e)) => return Err(Drive::Failed(e)),
                None => return Err(Drive::Closed),
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The listener's task
// ---------------------------------------------------------------------------------------------

pub(super) enum Op {
    Listen,
    Unlisten,
}

pub(super) struct Command {
    pub(super) op: Op,
    pub(super) wire: String,
    pub(super) shown: String,
    pub(super) reply: oneshot::Sender<Result<()>>,
}

/// A gap not yet reported to the consumer.
pub(super) struct Missed {
    pub(super) reasons: Vec<String>,
    pub(super) dropped: u64,
    pub(super) overflowed: bool,
}

pub(super) struct Worker {
    pub(super) spec: Arc<ListenSpec>,
    pub(super) schema: Option<String>,
    /// Wire name → the name the application used.
    pub(super) channels: BTreeMap<String, String>,
    pub(super) tx: mpsc::Sender<Item>,
    pub(super) commands: mpsc::Receiver<Command>,
    pub(super) pending: Option<Missed>,
    pub(super) pid: Arc<AtomicI32>,
}

/// How a session on one connection ended.
enum End {
    /// The listener was dropped.
    Closed,
    /// The connection was lost; why.
    Lost(String),
}

type Pending<'c> = Pin<Box<dyn Future<Output = Result<(), PgError>> + Send + 'c>>;

impl Worker {
    pub(super) async fn run(mut self, ready: oneshot::Sender<Result<()>>) {
        let mut session = match self.connect(None).await {
            Ok(Some(s)) => s,
            Ok(None) => return,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        if ready.send(Ok(())).is_err() {
            // `listen` was abandoned while connecting.
            close(session).await;
            return;
        }
        loop {
            self.started(&mut session);
            match self.session(&session.client, &mut session.messages).await {
                End::Closed => {
                    self.pid.store(0, Ordering::Release);
                    close(session).await;
                    return;
                }
                End::Lost(why) => {
                    self.pid.store(0, Ordering::Release);
                    drop(session);
                    session = match self.connect(Some(why)).await {
                        Ok(Some(s)) => s,
                        Ok(None) => return,
                        Err(e) => {
                            // Callers waiting on a command learn that the listener stopped,
                            // and the consumer gets the reason, then the end of the stream.
                            self.commands.close();
                            while self.commands.try_recv().is_ok() {}
                            let _ = self.tx.send(Err(e)).await;
                            return;
                        }
                    };
                }
            }
        }
    }

    /// A fresh session is live: publish its PID, deliver what arrived while subscribing.
    fn started(&mut self, session: &mut Session) {
        self.pid.store(session.pid, Ordering::Release);
        for n in std::mem::take(&mut session.early) {
            self.deliver(n);
        }
    }

    /// Connects with the retry policy. `lost` is why the previous connection ended (`None`
    /// for the first one). `Ok(None)`: the listener was dropped meanwhile.
    async fn connect(&mut self, lost: Option<String>) -> Result<Option<Session>> {
        let started = Instant::now();
        let span = match &lost {
            Some(why) => tracing::info_span!(
                "pgdbm_listener_reconnect",
                channels = self.channels.len(),
                reason = %why
            ),
            None => tracing::Span::none(),
        };
        if let Some(why) = &lost {
            span.in_scope(
                || tracing::warn!(reason = %why, "listener connection lost; reconnecting"),
            );
        }
        let spec = self.spec.clone();
        async {
            let mut attempts = 0u32;
            let mut delay = spec.retry_delay;
            loop {
                attempts += 1;
                let wires: Vec<String> = self.channels.keys().cloned().collect();
                let failure = match spec.open(&wires).await {
                    Ok(session) => {
                        if let Some(why) = &lost {
                            let after = started.elapsed();
                            tracing::info!(attempts, ?after, "listener reconnected");
                            self.missed(format!(
                                "the listener's connection was lost ({why}) and re-established \
                                 after {after:?} ({attempts} attempt(s)); notifications sent in \
                                 between were not received"
                            ));
                        }
                        return Ok(Some(session));
                    }
                    Err(f) => f,
                };
                if !failure.retryable || attempts > spec.retry_attempts {
                    let message = match &lost {
                        Some(why) => format!(
                            "the listener lost its connection ({why}) and could not reconnect \
                             within {:?}: {}; it has stopped and receives no more notifications",
                            started.elapsed(),
                            failure.message
                        ),
                        None => format!("opening the listener's connection: {}", failure.message),
                    };
                    tracing::error!(attempts, error = %message, "listener gave up");
                    return Err(spec.connection_error(attempts, message, failure.source));
                }
                let wait = Duration::from_secs_f64(delay.min(spec.retry_max_delay).max(0.0));
                tracing::warn!(
                    attempt = attempts,
                    retry_in = ?wait,
                    error = %failure.message,
                    "listener cannot connect yet, retrying"
                );
                if !self.wait(wait).await {
                    return Ok(None);
                }
                delay *= spec.retry_backoff;
            }
        }
        .instrument(span)
        .await
    }

    /// Sleeps between connect attempts, taking channel changes meanwhile (the next attempt
    /// subscribes to them). False when the listener was dropped.
    async fn wait(&mut self, wait: Duration) -> bool {
        let sleep = tokio::time::sleep(wait);
        futures_util::pin_mut!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return true,
                _ = self.tx.closed() => return false,
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => {
                        self.apply(&cmd);
                        let _ = cmd.reply.send(Ok(()));
                    }
                    None => return false,
                },
            }
        }
    }

    /// Records a command's change in the channel set; returns the entry it replaced.
    fn apply(&mut self, cmd: &Command) -> Option<String> {
        match cmd.op {
            Op::Listen => self.channels.insert(cmd.wire.clone(), cmd.shown.clone()),
            Op::Unlisten => self.channels.remove(&cmd.wire),
        }
    }

    /// Serves one connection until it is lost or the listener is dropped.
    async fn session(&mut self, client: &Client, messages: &mut Messages) -> End {
        let mut op: Option<(Command, Option<String>, Pending<'_>)> = None;
        let mut health: Option<Pin<Box<dyn Future<Output = Option<bool>> + Send + '_>>> = None;
        let mut ticker = tokio::time::interval_at(
            tokio::time::Instant::now() + HEALTH_CHECK_EVERY,
            HEALTH_CHECK_EVERY,
        );
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = self.tx.closed() => return End::Closed,
                r = async { op.as_mut().expect("guarded").2.as_mut().await }, if op.is_some() => {
                    let (cmd, previous, _) = op.take().expect("guarded");
                    match r {
                        Ok(()) => {
                            let _ = cmd.reply.send(Ok(()));
                        }
                        Err(e) if e.as_db_error().is_some() => {
                            // The server refused: undo the change to the set.
                            match (&cmd.op, previous) {
                                (Op::Listen, None) => {
                                    self.channels.remove(&cmd.wire);
                                }
                                (_, Some(p)) => {
                                    self.channels.insert(cmd.wire.clone(), p);
                                }
                                (Op::Unlisten, None) => {}
                            }
                            let sql = op_sql(&cmd);
                            let _ = cmd.reply.send(Err(crate::query::query_error(
                                e,
                                &sql,
                                std::iter::empty(),
                            )));
                        }
                        // The connection failed under it: the set already holds the change,
                        // and the reconnect (which the stream reports) subscribes accordingly.
                        Err(_) => {
                            let _ = cmd.reply.send(Ok(()));
                        }
                    }
                }
                r = async { health.as_mut().expect("guarded").as_mut().await }, if health.is_some() => {
                    health = None;
                    match r {
                        Some(true) => {}
                        Some(false) => {
                            return End::Lost("the health check failed".into());
                        }
                        None => {
                            return End::Lost(format!(
                                "the server did not answer a health check within \
                                 {HEALTH_CHECK_LIMIT:?}"
                            ));
                        }
                    }
                }
                // Owned: a borrowed permit would hold `self.tx` across every handler.
                permit = self.tx.clone().reserve_owned(), if self.pending.is_some() => {
                    if let Ok(permit) = permit {
                        permit.send(Err(take_missed(&mut self.pending, self.spec.buffer)));
                    }
                }
                cmd = self.commands.recv(), if op.is_none() => match cmd {
                    Some(cmd) => {
                        let previous = self.apply(&cmd);
                        let sql = op_sql(&cmd);
                        op = Some((cmd, previous, Box::pin(async move {
                            client.batch_execute(&sql).await
                        })));
                    }
                    None => return End::Closed,
                },
                _ = ticker.tick(), if health.is_none() => {
                    health = Some(Box::pin(async move {
                        tokio::time::timeout(HEALTH_CHECK_LIMIT, client.simple_query(""))
                            .await
                            .ok()
                            .map(|r| r.is_ok())
                    }));
                }
                m = messages.next() => match m {
                    Some(Ok(AsyncMessage::Notification(n))) => self.deliver(n),
                    Some(Ok(AsyncMessage::Notice(notice))) => {
                        tracing::debug!(
                            severity = notice.severity(),
                            message = notice.message(),
                            "notice on the listener's connection"
                        );
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return End::Lost(Drive::Failed(e).describe()),
                    None => return End::Lost(Drive::Closed.describe()),
                },
            }
        }
    }

    /// Hands a notification to the consumer without ever waiting for it.
    fn deliver(&mut self, n: tokio_postgres::Notification) {
        let shown = match self.channels.get(n.channel()) {
            Some(shown) => shown.clone(),
            None => match self
                .schema
                .as_deref()
                .and_then(|s| n.channel().strip_prefix(s))
                .and_then(|rest| rest.strip_prefix('.'))
            {
                Some(rest) => rest.to_owned(),
                None => n.channel().to_owned(),
            },
        };
        tracing::debug!(target: "pgdbm::notify", channel = %shown, "notification");
        if self.pending.is_some() {
            // The gap is reported before anything that came after it.
            let reported = match self.tx.try_reserve() {
                Ok(permit) => {
                    permit.send(Err(take_missed(&mut self.pending, self.spec.buffer)));
                    true
                }
                Err(_) => false,
            };
            if !reported {
                self.overflow();
                return;
            }
        }
        let item = Notification {
            channel: shown,
            raw_channel: n.channel().to_owned(),
            payload: n.payload().to_owned(),
            process_id: n.process_id(),
        };
        match self.tx.try_send(Ok(item)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.overflow(),
            // The consumer is gone; the session loop notices.
            Err(TrySendError::Closed(_)) => {}
        }
    }

    fn overflow(&mut self) {
        let pending = self.pending.get_or_insert_with(|| Missed {
            reasons: Vec::new(),
            dropped: 0,
            overflowed: false,
        });
        if !pending.overflowed {
            pending.overflowed = true;
            tracing::warn!(
                buffer = self.spec.buffer,
                "listener buffer full: the consumer is behind, dropping notifications"
            );
        }
        pending.dropped += 1;
    }

    fn missed(&mut self, reason: String) {
        self.pending
            .get_or_insert_with(|| Missed {
                reasons: Vec::new(),
                dropped: 0,
                overflowed: false,
            })
            .reasons
            .push(reason);
    }
}

fn op_sql(cmd: &Command) -> String {
    match cmd.op {
        Op::Listen => format!("LISTEN {}", quote_ident(&cmd.wire)),
        Op::Unlisten => format!("UNLISTEN {}", quote_ident(&cmd.wire)),
    }
}

pub(super) fn take_missed(pending: &mut Option<Missed>, buffer: usize) -> Error {
    let missed = pending.take().expect("a pending gap");
    let mut reasons = missed.reasons;
    if missed.overflowed {
        reasons.push(format!(
            "the listener's buffer of {buffer} notification(s) was full because the consumer \
             fell behind, so {} newer notification(s) were dropped (raise listen_buffer_size or \
             consume faster)",
            missed.dropped
        ));
    }
    Error::NotificationsMissed {
        reason: reasons.join("; then "),
    }
}

/// Closes a session: dropping the client makes the connection send Terminate and finish.
async fn close(session: Session) {
    let Session {
        client,
        mut messages,
        ..
    } = session;
    drop(client);
    let _ = tokio::time::timeout(CLOSE_LIMIT, async {
        while let Some(Ok(_)) = messages.next().await {}
    })
    .await;
}
