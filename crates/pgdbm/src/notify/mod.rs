//! LISTEN/NOTIFY: [`AsyncDatabaseManager::listen`] returns a [`Listener`], a stream of
//! [`Notification`]s on a dedicated connection that reconnects and re-subscribes by itself;
//! [`AsyncDatabaseManager::notify`] (also on a [`Transaction`]) sends with `pg_notify($1, $2)`.
//!
//! # Channels follow the schema
//!
//! With a manager schema `app`, channel `orders` is `app.orders` on the wire, so tenants sharing
//! one database never hear each other. Channel names are checked like table names (letters,
//! digits, `_`; [`Error::Schema`] before any I/O) and are case-sensitive: LISTEN quotes the wire
//! name (`LISTEN "app.orders"`) and `pg_notify` takes it as text, so `Orders` and `orders` are
//! two channels. The `_raw` variants use the name as given (any text of 1 to 63 bytes, still
//! quoted, never spliced). A plain SQL `NOTIFY orders` from another client folds to lower case:
//! use lower-case channel names to interoperate with it.
//!
//! # The listener's task
//!
//! `listen` opens a connection outside the pool (it does not count against `max_connections`)
//! with the pool's TLS, server settings, timeouts and `init_commands`, at
//! `listen_connection_string` when set, and spawns one task on the caller's runtime that owns it.
//! The task drives the connection itself (`Connection::poll_message`) and forwards
//! notifications into a bounded buffer (`listen_buffer_size`) with `try_send`: it never waits
//! for the consumer, so the socket is always read. When the buffer is full, new notifications
//! are dropped and counted, and as soon as there is room the stream yields one
//! [`Error::NotificationsMissed`] before anything newer.
//!
//! When the connection is lost (server restart, backend terminated, network error, or no answer
//! to the health check sent every 30 s within 10 s) the task reconnects with the config's retry
//! policy (`retry_attempts`, `retry_delay`, `retry_backoff`, `retry_max_delay`; the first attempt
//! at once), issues LISTEN for every channel again, and yields one
//! [`Error::NotificationsMissed`] saying what happened and how long it took; then the stream goes
//! on. Only when the retries are exhausted (or the failure cannot be cured by retrying, such as
//! a rejected password) does it yield a final [`Error::Connection`] and end.
//!
//! Dropping the [`Listener`] stops the task, which closes the connection politely (Terminate)
//! or, at worst, drops the socket; the server session ends either way.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tokio_postgres::AsyncMessage;

use crate::error::{Error, Result};
use crate::manager::AsyncDatabaseManager;
pub(crate) use crate::query::notify::{check_raw, notify, notify_raw, wire_name};
use crate::transaction::Transaction;

mod worker;

use worker::{Command, Op, Worker};

/// How often an otherwise quiet listener checks that its server still answers.
const HEALTH_CHECK_EVERY: Duration = Duration::from_secs(30);
/// How long the server has to answer that check before the connection counts as lost.
const HEALTH_CHECK_LIMIT: Duration = Duration::from_secs(10);
/// How long a closing listener waits for its connection to say goodbye.
const CLOSE_LIMIT: Duration = Duration::from_secs(5);

type PgError = tokio_postgres::Error;
type Messages = Pin<Box<dyn Stream<Item = Result<AsyncMessage, PgError>> + Send>>;
type Item = Result<Notification>;

// ---------------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------------

/// One notification received by a [`Listener`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    channel: String,
    raw_channel: String,
    payload: String,
    process_id: i32,
}

impl Notification {
    /// The channel as the application listened on it: without the manager's schema for
    /// [`listen`](AsyncDatabaseManager::listen), as given for
    /// [`listen_raw`](AsyncDatabaseManager::listen_raw).
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The channel's name on the wire (`app.orders` for channel `orders` in schema `app`).
    pub fn raw_channel(&self) -> &str {
        &self.raw_channel
    }

    /// The payload (`""` when none was sent).
    pub fn payload(&self) -> &str {
        &self.payload
    }

    /// The server process ID of the session that sent it.
    pub fn process_id(&self) -> i32 {
        self.process_id
    }
}

/// A stream of notifications on a dedicated connection, made by
/// [`AsyncDatabaseManager::listen`]. It reconnects and re-subscribes by itself when its
/// connection is lost, and holds at most `listen_buffer_size` notifications for a slow
/// consumer; past that it drops newer ones and reports the gap once as
/// [`ErrorKind::NotificationsMissed`](crate::ErrorKind::NotificationsMissed).
///
/// Items are `Ok(notification)`, or `Err(e)` with
/// [`e.kind()`](Error::kind) `==` [`ErrorKind::NotificationsMissed`](crate::ErrorKind) when some
/// may have been missed (the stream goes on), or a final [`Error::Connection`] when reconnecting
/// failed for good (the stream then ends). Dropping the listener closes its connection.
///
/// ```no_run
/// use futures_util::StreamExt;
/// use pgdbm::ErrorKind;
///
/// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
/// let mut listener = db.listen(&["orders"]).await?;
/// db.notify("orders", "42").await?;
/// while let Some(item) = listener.next().await {
///     match item {
///         Ok(n) => println!("{}: {}", n.channel(), n.payload()),
///         Err(e) if e.kind() == ErrorKind::NotificationsMissed => {
///             // Reload whatever the notifications were about.
///         }
///         Err(e) => return Err(e), // reconnecting failed for good; the stream ends
///     }
/// }
/// # Ok(()) }
/// ```
pub struct Listener {
    rx: mpsc::Receiver<Item>,
    commands: mpsc::Sender<Command>,
    schema: Option<String>,
    pid: Arc<AtomicI32>,
}

impl Listener {
    /// Subscribes to one more channel (in the manager's schema). Returns once the server has
    /// confirmed it, or, when the connection is being re-established, once the channel is in
    /// the set that the reconnect subscribes to.
    pub async fn listen(&self, channel: &str) -> Result<()> {
        let wire = wire_name(self.schema.as_deref(), channel)?;
        self.command(Op::Listen, wire, channel.to_owned()).await
    }

    /// Subscribes to a channel by its exact name on the wire (no schema prefix).
    pub async fn listen_raw(&self, channel: &str) -> Result<()> {
        check_raw(channel)?;
        self.command(Op::Listen, channel.to_owned(), channel.to_owned())
            .await
    }

    /// Unsubscribes from a channel (in the manager's schema). Notifications already buffered
    /// are still delivered.
    pub async fn unlisten(&self, channel: &str) -> Result<()> {
        let wire = wire_name(self.schema.as_deref(), channel)?;
        self.command(Op::Unlisten, wire, channel.to_owned()).await
    }

    /// Unsubscribes from a channel by its exact name on the wire.
    pub async fn unlisten_raw(&self, channel: &str) -> Result<()> {
        check_raw(channel)?;
        self.command(Op::Unlisten, channel.to_owned(), channel.to_owned())
            .await
    }

    /// The server process ID of the listener's current connection; `None` while it is
    /// reconnecting or after it stopped.
    pub fn backend_pid(&self) -> Option<i32> {
        Some(self.pid.load(Ordering::Acquire)).filter(|&p| p != 0)
    }

    async fn command(&self, op: Op, wire: String, shown: String) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        let cmd = Command {
            op,
            wire,
            shown,
            reply,
        };
        self.commands.send(cmd).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn stopped() -> Error {
    Error::Pool(
        "the listener has stopped: it could not reconnect (its stream yielded the reason); \
         call listen() again for a new one"
            .into(),
    )
}

impl Stream for Listener {
    type Item = Result<Notification>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("schema", &self.schema)
            .field("backend_pid", &self.backend_pid())
            .field("buffered", &self.rx.len())
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Names and payloads
// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// The manager's and the transaction's methods
// ---------------------------------------------------------------------------------------------

impl AsyncDatabaseManager {
    /// A [`Listener`] subscribed to `channels` (in this manager's schema: channel `orders` is
    /// `app.orders` on the wire with schema `app`). Names are checked before any I/O
    /// ([`Error::Schema`]). It connects (with the retry policy) and subscribes before it
    /// returns, so a notification sent after this returns is received. Works on a manager with
    /// an owned pool (after [`connect`](Self::connect)) or over a shared pool; the listener's
    /// connection is its own, outside `max_connections`.
    ///
    /// ```no_run
    /// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
    /// use futures_util::StreamExt;
    /// let mut listener = db.listen(&["orders", "users"]).await?;
    /// listener.unlisten("users").await?;
    /// if let Some(Ok(n)) = listener.next().await {
    ///     assert_eq!(n.channel(), "orders");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn listen(&self, channels: &[&str]) -> Result<Listener> {
        let schema = self.schema();
        let named = channels
            .iter()
            .map(|c| Ok((wire_name(schema, c)?, (*c).to_owned())))
            .collect::<Result<Vec<_>>>()?;
        self.start_listener(named).await
    }

    /// Like [`listen`](Self::listen), with channel names used exactly as given (no schema).
    pub async fn listen_raw(&self, channels: &[&str]) -> Result<Listener> {
        let named = channels
            .iter()
            .map(|c| {
                check_raw(c)?;
                Ok(((*c).to_owned(), (*c).to_owned()))
            })
            .collect::<Result<Vec<_>>>()?;
        self.start_listener(named).await
    }

    /// Sends a notification on `channel` (in this manager's schema) with `pg_notify($1, $2)`.
    /// A payload longer than 7999 bytes is [`Error::Notify`], before anything is sent.
    ///
    /// ```no_run
    /// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
    /// db.notify("orders", r#"{"id": 42}"#).await?;
    /// // In a transaction: delivered on commit, never on rollback.
    /// let tx = db.transaction().await?;
    /// tx.notify("orders", "43").await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<()> {
        notify(self, channel, payload).await
    }

    /// Like [`notify`](Self::notify), with the channel name used exactly as given.
    pub async fn notify_raw(&self, channel: &str, payload: &str) -> Result<()> {
        notify_raw(self, channel, payload).await
    }

    async fn start_listener(&self, named: Vec<(String, String)>) -> Result<Listener> {
        let spec = self.pool()?.inner.listen.clone();
        if spec.needs_direct {
            return Err(Error::config(
                "listen_connection_string",
                "LISTEN needs a session of its own, which a transaction pooler does not keep \
                 (pooler = \"transaction\"): set listen_connection_string to the server itself",
            ));
        }
        let (tx, rx) = mpsc::channel(spec.buffer);
        let (commands, command_rx) = mpsc::channel(16);
        let pid = Arc::new(AtomicI32::new(0));
        let (ready, is_ready) = oneshot::channel();
        let worker = Worker {
            spec,
            schema: self.schema().map(str::to_owned),
            channels: named.into_iter().collect(),
            tx,
            commands: command_rx,
            pending: None,
            pid: pid.clone(),
        };
        tokio::spawn(worker.run(ready));
        match is_ready.await {
            Ok(Ok(())) => Ok(Listener {
                rx,
                commands,
                schema: self.schema().map(str::to_owned),
                pid,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Pool(
                "the listener's task ended before it connected (the runtime is shutting down)"
                    .into(),
            )),
        }
    }
}

impl Transaction<'_> {
    /// Sends a notification on `channel` (in the manager's schema) inside this transaction: it
    /// is delivered when the transaction commits, and never if it rolls back.
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<()> {
        notify(self, channel, payload).await
    }

    /// Like [`notify`](Self::notify), with the channel name used exactly as given.
    pub async fn notify_raw(&self, channel: &str, payload: &str) -> Result<()> {
        notify_raw(self, channel, payload).await
    }
}

#[cfg(test)]
mod tests {
    use super::worker::{take_missed, Missed};
    use super::*;
    use crate::query::notify::{check_payload, MAX_PAYLOAD};
    use crate::template::quote_ident;

    /// Compiles only if the futures can go to `tokio::spawn`.
    #[allow(dead_code)]
    fn futures_are_send(db: &AsyncDatabaseManager, l: &Listener) {
        fn send<T: Send>(_: T) {}
        send(db.listen(&["a"]));
        send(db.notify("a", "b"));
        send(l.listen("a"));
    }

    #[test]
    fn listener_is_send_sync_unpin() {
        fn check<T: Send + Sync + Unpin + 'static>() {}
        check::<Listener>();
        check::<Notification>();
    }

    #[test]
    fn wire_names() {
        assert_eq!(wire_name(Some("app"), "orders").unwrap(), "app.orders");
        assert_eq!(wire_name(None, "Orders").unwrap(), "Orders");
        for bad in ["", "a-b", "a.b", "x\"; DROP TABLE t; --", "1abc"] {
            assert!(
                matches!(wire_name(Some("app"), bad), Err(Error::Schema(_))),
                "{bad}"
            );
        }
        let long = "c".repeat(60);
        assert!(matches!(
            wire_name(Some("app"), &long),
            Err(Error::Schema(_))
        ));
        assert!(check_raw("any name \" ' ;").is_ok());
        assert!(check_raw("").is_err());
        assert!(check_raw(&"x".repeat(64)).is_err());
        assert!(check_raw("a\0b").is_err());
        assert_eq!(
            quote_ident("a\"b; x"),
            "\"a\"\"b; x\"",
            "raw names are quoted"
        );
    }

    #[test]
    fn payload_limit() {
        assert!(check_payload("c", &"x".repeat(MAX_PAYLOAD)).is_ok());
        let e = check_payload("c", &"x".repeat(MAX_PAYLOAD + 1)).unwrap_err();
        assert!(matches!(e, Error::Notify(_)));
        assert!(e.to_string().contains("at most 7999"), "{e}");
        assert!(check_payload("c", "a\0").is_err());
    }

    #[test]
    fn missed_messages_say_why() {
        let mut pending = Some(Missed {
            reasons: vec!["the connection was lost".into()],
            dropped: 3,
            overflowed: true,
        });
        let e = take_missed(&mut pending, 8);
        assert!(pending.is_none());
        assert_eq!(e.kind(), crate::ErrorKind::NotificationsMissed);
        let text = e.to_string();
        assert!(
            text.starts_with("notifications may have been missed: the connection was lost"),
            "{text}"
        );
        assert!(text.contains("buffer of 8"), "{text}");
        assert!(
            text.contains("3 newer notification(s) were dropped"),
            "{text}"
        );
    }
}
