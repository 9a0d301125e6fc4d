//! What the server says about the session, read from the protocol itself.
//!
//! The driver keeps the transaction status of `ReadyForQuery` and the server's `ParameterStatus`
//! reports to itself. [`Tapped`] sits on the stream beneath the driver (above TLS) and reads
//! both as the bytes go by, before the driver decodes them, so that by the time any statement's
//! result reaches its caller the [`Tap`] already knows what the server said with it:
//!
//! - the transaction status of the last `ReadyForQuery` (`I`, `T` or `E`), or that a response
//!   has started whose `ReadyForQuery` has not arrived yet (then nothing is known to be idle);
//! - the values the server reports for its `GUC_REPORT` settings (`session_authorization`,
//!   `is_superuser`, `TimeZone`, `DateStyle`, `application_name`, ...), compared against a
//!   baseline taken when the pool finished setting the session up.
//!
//! Only message boundaries are tracked; bodies are skipped without copying, except the one
//! status byte of `ReadyForQuery` and the short body of `ParameterStatus`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, TlsConnect, TlsStream};

/// No `ReadyForQuery` has followed the last response message read.
const PENDING: u8 = 0;

/// A `ParameterStatus` body longer than this is not kept (no real setting comes close).
const MAX_PARAM_BODY: usize = 4096;

/// The transaction status of a session, as the server last reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TxStatus {
    /// `I`: not in a transaction block.
    Idle,
    /// `T`: in a transaction block.
    InTransaction,
    /// `E`: in a failed transaction block.
    Failed,
    /// A response is still arriving: its `ReadyForQuery` has not been read.
    Pending,
}

/// The session facts read from one connection's stream, shared with its pooled connection.
#[derive(Debug, Default)]
pub(crate) struct Tap {
    /// The running statement's deadline, kept by the driver task beside the stream.
    pub(crate) watchdog: super::watchdog::Watchdog,
    status: AtomicU8,
    /// `ParameterStatus` messages read since the baseline was taken.
    reports: AtomicU64,
    params: Mutex<Params>,
    /// The connection's driver task: aborting it closes the socket now, whatever is in flight
    /// (a stalled shared connection).
    driver: std::sync::OnceLock<tokio::task::AbortHandle>,
}

#[derive(Debug, Default)]
struct Params {
    current: Vec<(String, String)>,
    baseline: Vec<(String, String)>,
}

impl Tap {
    pub(crate) fn new() -> Arc<Tap> {
        Arc::new(Tap::default())
    }

    pub(crate) fn set_driver(&self, driver: tokio::task::AbortHandle) {
        let _ = self.driver.set(driver);
    }

    /// Ends the connection's driver task, which closes the socket: every request still in
    /// flight fails as closed.
    pub(crate) fn kill(&self) {
        if let Some(driver) = self.driver.get() {
            driver.abort();
        }
    }

    /// The transaction status of the last `ReadyForQuery`, or [`TxStatus::Pending`].
    #[inline]
    pub(crate) fn status(&self) -> TxStatus {
        match self.status.load(Ordering::Acquire) {
            b'I' => TxStatus::Idle,
            b'T' => TxStatus::InTransaction,
            b'E' => TxStatus::Failed,
            _ => TxStatus::Pending,
        }
    }

    /// Takes the reported settings as they are now as the session's baseline.
    pub(crate) fn snapshot(&self) {
        let mut p = self.params.lock().unwrap_or_else(|e| e.into_inner());
        p.baseline = p.current.clone();
        self.reports.store(0, Ordering::Release);
    }

    /// Whether a reported setting differs from the baseline. Costs one atomic load unless the
    /// server reported something since the baseline was taken.
    #[inline]
    pub(crate) fn params_changed(&self) -> bool {
        if self.reports.load(Ordering::Acquire) == 0 {
            return false;
        }
        let p = self.params.lock().unwrap_or_else(|e| e.into_inner());
        let mut current = p.current.clone();
        let mut baseline = p.baseline.clone();
        current.sort();
        baseline.sort();
        current != baseline
    }

    /// The names of the reported settings that differ from the baseline, for logs.
    pub(crate) fn changed_params(&self) -> Vec<String> {
        let p = self.params.lock().unwrap_or_else(|e| e.into_inner());
        p.current
            .iter()
            .filter(|(name, value)| !p.baseline.iter().any(|(n, v)| n == name && v == value))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// A reported setting's current value.
    #[cfg(test)]
    pub(crate) fn param(&self, name: &str) -> Option<String> {
        let p = self.params.lock().unwrap_or_else(|e| e.into_inner());
        p.current
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    fn report(&self, body: &[u8]) {
        let mut parts = body.split(|b| *b == 0);
        let (Some(name), Some(value)) = (parts.next(), parts.next()) else {
            return;
        };
        let name = String::from_utf8_lossy(name).into_owned();
        let value = String::from_utf8_lossy(value).into_owned();
        let mut p = self.params.lock().unwrap_or_else(|e| e.into_inner());
        match p.current.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => p.current.push((name, value)),
        }
        drop(p);
        self.reports.fetch_add(1, Ordering::AcqRel);
    }

    fn set_status(&self, status: u8) {
        self.status.store(status, Ordering::Release);
    }
}

/// Where the reader stands in the stream of backend messages.
#[derive(Debug, Default)]
struct Reader {
    /// The 5-byte header (type and length) of the message being read, as far as read.
    header: [u8; 5],
    header_len: u8,
    /// Body bytes of the current message still to come.
    remaining: usize,
    kind: u8,
    /// The body of a `ParameterStatus` or `ReadyForQuery` being read.
    body: Vec<u8>,
    keep_body: bool,
}

impl Reader {
    fn feed(&mut self, tap: &Tap, mut bytes: &[u8]) {
        // The status after these bytes, stored once at the end rather than per message.
        let mut status = None;
        while !bytes.is_empty() {
            if self.header_len == 0 && self.remaining == 0 {
                let at = Self::whole_messages(bytes, &mut status);
                bytes = &bytes[at..];
                if bytes.is_empty() {
                    break;
                }
            }
            bytes = self.feed_partial(tap, bytes, &mut status);
        }
        if let Some(status) = status {
            tap.set_status(status);
        }
    }

    /// Skips the whole messages at the start of `bytes` without copying anything (the common
    /// case: a read holds whole messages); returns where the first one that does not fit, or
    /// a `ParameterStatus` (kept by the slow path), starts.
    #[inline]
    fn whole_messages(bytes: &[u8], status: &mut Option<u8>) -> usize {
        let mut at = 0;
        while let Some(header) = bytes.get(at..at + 5) {
            let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
            let end = at + 1 + len.max(4);
            if end > bytes.len() {
                break;
            }
            match header[0] {
                // Rows first: a large result is almost all of them.
                b'D' => *status = Some(PENDING),
                b'Z' => *status = Some(bytes.get(at + 5).copied().unwrap_or(PENDING)),
                b'S' => break,
                b'A' | b'N' => {}
                _ => *status = Some(PENDING),
            }
            at = end;
        }
        at
    }

    /// Reads from a message split across reads; returns what is left of `bytes`.
    fn feed_partial<'b>(
        &mut self,
        tap: &Tap,
        mut bytes: &'b [u8],
        status: &mut Option<u8>,
    ) -> &'b [u8] {
        if self.remaining == 0 && (self.header_len as usize) < self.header.len() {
            let want = self.header.len() - self.header_len as usize;
            let n = want.min(bytes.len());
            let at = self.header_len as usize;
            self.header[at..at + n].copy_from_slice(&bytes[..n]);
            self.header_len += n as u8;
            bytes = &bytes[n..];
            if (self.header_len as usize) < self.header.len() {
                return bytes;
            }
            self.start_message(status);
            if self.remaining == 0 {
                self.end_message(tap, status);
            }
            return bytes;
        }
        let n = self.remaining.min(bytes.len());
        if self.keep_body {
            self.body.extend_from_slice(&bytes[..n]);
        }
        self.remaining -= n;
        bytes = &bytes[n..];
        if self.remaining == 0 {
            self.end_message(tap, status);
        }
        bytes
    }

    fn start_message(&mut self, status: &mut Option<u8>) {
        self.kind = self.header[0];
        let len = i32::from_be_bytes([
            self.header[1],
            self.header[2],
            self.header[3],
            self.header[4],
        ]);
        self.remaining = usize::try_from(len).unwrap_or(4).saturating_sub(4);
        self.body.clear();
        self.keep_body = match self.kind {
            b'Z' => true,
            b'S' => self.remaining <= MAX_PARAM_BODY,
            // Notifications and notices may come at any time; they say nothing of the status.
            b'A' | b'N' => false,
            _ => {
                *status = Some(PENDING);
                false
            }
        };
    }

    fn end_message(&mut self, tap: &Tap, status: &mut Option<u8>) {
        match self.kind {
            b'Z' => *status = Some(self.body.first().copied().unwrap_or(PENDING)),
            b'S' if self.keep_body => tap.report(&self.body),
            _ => {}
        }
        self.header_len = 0;
        self.keep_body = false;
    }
}

/// A stream whose backend messages are read into a [`Tap`] on their way to the driver.
#[derive(Debug)]
pub(crate) struct Tapped<S> {
    inner: S,
    tap: Arc<Tap>,
    reader: Reader,
}

impl<S> Tapped<S> {
    pub(crate) fn new(inner: S, tap: Arc<Tap>) -> Self {
        Tapped {
            inner,
            tap,
            reader: Reader::default(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tapped<S> {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.reader.feed(&this.tap, &buf.filled()[before..]);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tapped<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: TlsStream + Unpin> TlsStream for Tapped<S> {
    fn channel_binding(&self) -> ChannelBinding {
        self.inner.channel_binding()
    }
}

/// A TLS connector whose encrypted stream is tapped above TLS, where the messages are plain.
pub(crate) struct TapTls<T> {
    pub(crate) inner: T,
    pub(crate) tap: Arc<Tap>,
}

impl<S, T> TlsConnect<S> for TapTls<T>
where
    T: TlsConnect<S>,
    T::Future: Send + 'static,
    T::Stream: Send + 'static,
    T::Error: 'static,
{
    type Stream = Tapped<T::Stream>;
    type Error = T::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Stream, T::Error>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        let tap = self.tap;
        let handshake = self.inner.connect(stream);
        Box::pin(async move { handshake.await.map(|s| Tapped::new(s, tap)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn status_follows_ready_for_query_across_split_reads() {
        let tap = Tap::new();
        let mut reader = Reader::default();
        let mut bytes = message(b'C', b"BEGIN\0");
        bytes.extend(message(b'Z', b"T"));
        // Every split point, one byte at a time included.
        for chunk in bytes.chunks(1) {
            reader.feed(&tap, chunk);
        }
        assert_eq!(tap.status(), TxStatus::InTransaction);
        reader.feed(&tap, &message(b'D', &[0; 300]));
        assert_eq!(tap.status(), TxStatus::Pending);
        reader.feed(&tap, &message(b'N', b"notice"));
        assert_eq!(tap.status(), TxStatus::Pending);
        let mut tail = message(b'C', b"SELECT 1\0");
        tail.extend(message(b'Z', b"I"));
        let (a, b) = tail.split_at(7);
        reader.feed(&tap, a);
        assert_eq!(tap.status(), TxStatus::Pending);
        reader.feed(&tap, b);
        assert_eq!(tap.status(), TxStatus::Idle);
        reader.feed(&tap, &message(b'E', b"SERROR\0"));
        reader.feed(&tap, &message(b'Z', b"E"));
        assert_eq!(tap.status(), TxStatus::Failed);
    }

    #[test]
    fn parameter_reports_are_compared_with_the_baseline() {
        let tap = Tap::new();
        let mut reader = Reader::default();
        reader.feed(&tap, &message(b'S', b"TimeZone\0UTC\0"));
        reader.feed(&tap, &message(b'S', b"is_superuser\0on\0"));
        tap.snapshot();
        assert!(!tap.params_changed());
        reader.feed(&tap, &message(b'S', b"is_superuser\0off\0"));
        assert!(tap.params_changed());
        assert_eq!(tap.changed_params(), vec!["is_superuser".to_owned()]);
        assert_eq!(tap.param("is_superuser").as_deref(), Some("off"));
        // Set back (the end of a transaction with SET LOCAL): nothing differs any more.
        reader.feed(&tap, &message(b'S', b"is_superuser\0on\0"));
        assert!(!tap.params_changed());
        // A report between other messages of one read.
        let mut read = message(b'C', b"SET\0");
        read.extend(message(b'S', b"TimeZone\0Asia/Tokyo\0"));
        read.extend(message(b'Z', b"I"));
        reader.feed(&tap, &read);
        assert_eq!(tap.param("TimeZone").as_deref(), Some("Asia/Tokyo"));
        assert_eq!(tap.status(), TxStatus::Idle);
    }
}
