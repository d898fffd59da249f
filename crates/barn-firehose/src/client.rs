//! The `subscribeRepos` websocket client: one task per host that connects,
//! decodes, orders and hands frames to a consumer, and keeps doing so
//! across disconnects, silent sockets, hostile frames and slow consumers.
//!
//! [`subscribe`] spawns the task and returns a [`Subscription`] to read
//! [`Delivery`]s from. The consumer (barn-mirror) owns durability: it
//! restarts from its own durable cursor after a crash. The client's job is
//! the live connection: within one process it never skips or repeats an
//! event it could have had.
//!
//! # Terminology
//! - *seq*: the host's stream sequence number, in `#commit`, `#sync`,
//!   `#identity` and `#account` bodies; positive and increasing.
//! - *cursor*: the seq sent as `?cursor=` on connect; the host replays
//!   every event with a greater seq, then goes live.
//! - *last seq*: the highest seq this client has received (delivered or
//!   dropped as a duplicate), the cursor of the next reconnect.
//! - *gap*: a frame whose seq is more than one above the last seq. Normal
//!   (a deleted account's events are removed from the host's log, and an
//!   outdated cursor starts at the oldest kept event), so it is reported,
//!   never an error.
//! - *budget*: the bytes of frames received but not yet released by the
//!   consumer, bounded by [`SubscribeConfig::queue_bytes`].
//!
//! # Tricky bits
//! - **Backpressure is a semaphore of bytes.** Each frame takes permits for
//!   its size before it is decoded, and the [`BytePermit`] travels with the
//!   [`Delivery::Frame`]: the consumer drops it when the frame is
//!   processed (stored), not when it is received. While the budget is
//!   spent the reader does not read the socket, so TCP flow control slows
//!   the host and memory stays at the budget plus one frame (the one whose
//!   permits are awaited) plus socket buffers. A frame larger than the
//!   whole budget takes the whole budget, so it cannot deadlock.
//! - **An oversized frame kills the connection.** tungstenite refuses it
//!   from its length, before reading it, and the socket is then
//!   unusable. Reconnecting at the last seq would get the same frame again,
//!   forever; so each oversized frame in a row moves the next cursor one
//!   further (`last + 1`, `last + 2`, …) until a frame gets through, and
//!   the skipped event shows up as a gap. (The host sends seqs greater than
//!   the cursor, so this skips exactly the events at those seqs.)
//! - **A malformed frame is rejected and the stream goes on.** The spec
//!   says to drop the connection on invalid framing, but reconnecting
//!   would replay the same frame forever; the frame is counted and
//!   reported as [`Delivery::Rejected`], and if it had a seq the next frame
//!   shows the gap.
//! - **`FutureCursor` resets the seq.** The host lost its log or was reset
//!   (seq started again from 1); resuming from barn's cursor can only fail
//!   again. The error frame is delivered, the last seq is forgotten and
//!   the client reconnects *without* a cursor (live from now). What to do
//!   about the events in between is the consumer's decision.
//! - **The watchdog pings before it gives up.** With no message for half
//!   the watchdog period the client sends a ping; any message (a pong
//!   included) proves the connection alive. A quiet but healthy host is
//!   not reconnected every minute; a hung one, or a TCP connection that
//!   died without a FIN or RST, is. Time spent waiting for the consumer's
//!   budget does not count as silence.
//! - **Backoff resets only after progress.** A host that accepts the
//!   connection and closes it at once is retried with growing delays; the
//!   delay returns to the minimum once a frame with a seq arrives.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use prometheus::IntGauge;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::frames::{DEFAULT_MAX_FRAME_BYTES, Event, Frame, decode_frame_with_limit};
use crate::metrics::{Metrics, Recorder};

/// The XRPC path of the firehose.
const SUBSCRIBE_PATH: &str = "/xrpc/com.atproto.sync.subscribeRepos";
/// Deliveries buffered in the channel, whatever their size (the byte budget
/// bounds frames; this bounds the small control deliveries too).
const CHANNEL_CAPACITY: usize = 1024;
/// The most permits one tokio semaphore acquisition can take.
const MAX_BUDGET: usize = u32::MAX as usize;

/// How to subscribe to one host.
#[derive(Debug, Clone)]
pub struct SubscribeConfig {
    /// `http(s)://host[:port]` (or `ws(s)://`); `http` becomes `ws` and
    /// `https` becomes `wss`.
    pub host: String,
    /// The seq to resume after; `None` starts live.
    pub cursor: Option<i64>,
    /// Largest websocket message accepted. Default 5 MiB.
    pub max_frame_bytes: usize,
    /// Bytes of frames that may be received but not yet released by the
    /// consumer. Default 64 MiB.
    pub queue_bytes: usize,
    /// With no message for this long the connection is replaced (a ping is
    /// sent halfway). Also bounds the connect handshake. Default 60 s.
    pub watchdog: Duration,
    /// First reconnect delay (before jitter). Default 500 ms.
    pub backoff_min: Duration,
    /// Largest reconnect delay (before jitter). Default 60 s.
    pub backoff_max: Duration,
    /// Where to count; `None` only logs.
    pub metrics: Option<Metrics>,
}

impl SubscribeConfig {
    /// A configuration with the defaults for `host`.
    pub fn new(host: impl Into<String>) -> SubscribeConfig {
        SubscribeConfig {
            host: host.into(),
            cursor: None,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            queue_bytes: 64 * 1024 * 1024,
            watchdog: Duration::from_secs(60),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            metrics: None,
        }
    }
}

/// What the subscription hands the consumer, in stream order.
// Frames dominate the stream; boxing them would allocate per frame.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Delivery {
    /// A decoded frame. Keep `permit` until the frame is processed: it is
    /// the frame's share of the byte budget.
    Frame {
        /// The frame.
        frame: Frame,
        /// Its size on the wire.
        bytes: usize,
        /// Released (dropped) when the consumer is done with the frame.
        permit: BytePermit,
    },
    /// A connection is open; `cursor` is what was asked for.
    Connected {
        /// The cursor sent, if any.
        cursor: Option<i64>,
    },
    /// A connection that was [`Delivery::Connected`] ended; the client
    /// reconnects after a backoff.
    Disconnected {
        /// Why, for logs.
        reason: String,
    },
    /// A frame that failed to decode or was too large. Counted; the stream
    /// goes on.
    Rejected {
        /// [`crate::Error::reason`], or `text_message`.
        reason: &'static str,
        /// The decode error.
        detail: String,
        /// Its size on the wire.
        bytes: usize,
    },
    /// The next frame's seq is not `after + 1`.
    Gap {
        /// The last seq received before.
        after: i64,
        /// The seq of the frame that follows this delivery.
        next: i64,
    },
}

impl Delivery {
    /// Releases the delivery's share of the byte budget (same as dropping
    /// it; spelled out where the consumer is done with a frame).
    pub fn done(self) {}
}

/// A frame's share of the subscription's byte budget; released on drop.
#[derive(Debug)]
pub struct BytePermit {
    _permit: OwnedSemaphorePermit,
    bytes: usize,
    held: Arc<AtomicUsize>,
    gauge: Option<IntGauge>,
}

impl BytePermit {
    /// The bytes it holds.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for BytePermit {
    fn drop(&mut self) {
        self.held.fetch_sub(self.bytes, Ordering::Relaxed);
        if let Some(g) = &self.gauge {
            g.sub(self.bytes as i64);
        }
    }
}

/// The consumer's end of a subscription.
#[derive(Debug)]
pub struct Subscription {
    rx: mpsc::Receiver<Delivery>,
    held: Arc<AtomicUsize>,
}

impl Subscription {
    /// The next delivery; `None` once the subscription task has ended
    /// (shutdown, or a host that is not a valid URL).
    pub async fn recv(&mut self) -> Option<Delivery> {
        self.rx.recv().await
    }

    /// Bytes currently held by frames not yet released. (Not the
    /// semaphore's free permits: a waiting acquisition already holds the
    /// permits it has been assigned so far.)
    pub fn queued_bytes(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }
}

/// Starts a subscription task for `config.host` (on the current tokio
/// runtime). It runs until `shutdown` is cancelled or the [`Subscription`]
/// is dropped; a host that is not a valid URL ends it at once, after one
/// [`Delivery::Disconnected`] saying why.
///
/// The first delivery of each connection is [`Delivery::Connected`]. A
/// connection attempt that fails is logged and counted
/// (`reconnects_total{reason="connect_failed"}`) but not delivered: the
/// consumer hears of the next success.
pub fn subscribe(
    config: SubscribeConfig,
    shutdown: CancellationToken,
) -> (Subscription, JoinHandle<()>) {
    let (sub, worker) = Worker::new(config, shutdown);
    (sub, tokio::spawn(worker.run()))
}

/// Like [`subscribe`], but the binary messages come from `source` instead
/// of a websocket: for replaying recorded streams and for benchmarks that
/// must not depend on a network. Everything after the socket is the same:
/// the byte budget, decoding, the seq order (duplicates dropped, gaps
/// reported), and the frame size limit (an oversized message is
/// rejected and the stream goes on, as there is no connection to lose).
///
/// One [`Delivery::Connected`] comes first; the subscription ends when
/// `source` is closed and drained, or at shutdown.
pub fn subscribe_source(
    config: SubscribeConfig,
    source: mpsc::Receiver<bytes::Bytes>,
    shutdown: CancellationToken,
) -> (Subscription, JoinHandle<()>) {
    let (sub, worker) = Worker::new(config, shutdown);
    (sub, tokio::spawn(worker.run_source(source)))
}

/// The `ws(s)://…/xrpc/com.atproto.sync.subscribeRepos[?cursor=N]` URL for
/// a host.
pub fn subscribe_url(host: &str, cursor: Option<i64>) -> Result<String> {
    let bad = |reason| Error::BadHost {
        url: host.to_owned(),
        reason,
    };
    let (scheme, rest) = host.split_once("://").ok_or(bad("no scheme"))?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => "ws",
        "https" | "wss" => "wss",
        _ => return Err(bad("scheme is not http, https, ws or wss")),
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        return Err(bad("no host"));
    }
    if rest.contains(['?', '#']) {
        return Err(bad("has a query or fragment"));
    }
    let mut url = format!("{scheme}://{rest}{SUBSCRIBE_PATH}");
    if let Some(c) = cursor {
        url.push_str(&format!("?cursor={c}"));
    }
    Ok(url)
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a connection ended.
enum End {
    Shutdown,
    ConsumerGone,
    ConnectFailed(String),
    Closed(String),
    Eof,
    Failed(String),
    Watchdog,
    ErrorFrame(String),
    Oversized(String),
}

impl End {
    fn reason(&self) -> &'static str {
        match self {
            End::Shutdown => "shutdown",
            End::ConsumerGone => "consumer_gone",
            End::ConnectFailed(_) => "connect_failed",
            End::Closed(_) => "closed",
            End::Eof => "eof",
            End::Failed(_) => "error",
            End::Watchdog => "watchdog",
            End::ErrorFrame(_) => "error_frame",
            End::Oversized(_) => "oversized",
        }
    }

    fn detail(&self) -> String {
        match self {
            End::Shutdown => "shutdown".into(),
            End::ConsumerGone => "consumer gone".into(),
            End::ConnectFailed(e) => format!("connect failed: {e}"),
            End::Closed(why) => format!("closed by host: {why}"),
            End::Eof => "connection ended without a close frame".into(),
            End::Failed(e) => format!("connection failed: {e}"),
            End::Watchdog => "watchdog: no message from the host".into(),
            End::ErrorFrame(e) => format!("error frame {e}"),
            End::Oversized(e) => format!("oversized frame: {e}"),
        }
    }
}

struct Worker {
    config: SubscribeConfig,
    rec: Recorder,
    gauge: Option<IntGauge>,
    /// The last seq received (or the configured cursor).
    last: Option<i64>,
    /// Oversized frames in a row since `last`: how far to move the cursor.
    skip: i64,
    queue_bytes: usize,
    budget: Arc<Semaphore>,
    /// Bytes held by permits handed out (shared with the consumer's end).
    held: Arc<AtomicUsize>,
    tx: mpsc::Sender<Delivery>,
    shutdown: CancellationToken,
}

impl Worker {
    /// A worker and the consumer's end of its deliveries.
    fn new(config: SubscribeConfig, shutdown: CancellationToken) -> (Subscription, Worker) {
        let queue_bytes = config.queue_bytes.clamp(1, MAX_BUDGET);
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let rec = Recorder::new(&config.host, config.metrics.clone());
        let held = Arc::new(AtomicUsize::new(0));
        let worker = Worker {
            held: held.clone(),
            gauge: rec.queued_gauge(),
            rec,
            last: config.cursor,
            skip: 0,
            config,
            queue_bytes,
            budget: Arc::new(Semaphore::new(queue_bytes)),
            tx,
            shutdown,
        };
        (Subscription { rx, held }, worker)
    }

    async fn run(mut self) {
        if let Err(e) = subscribe_url(&self.config.host, None) {
            tracing::error!(host = %self.config.host, error = %e, "firehose subscription not started");
            let _ = self
                .tx
                .send(Delivery::Disconnected {
                    reason: e.to_string(),
                })
                .await;
            return;
        }
        let connector = tls_connector();
        let ws_config = WebSocketConfig::default()
            .max_message_size(Some(self.config.max_frame_bytes))
            .max_frame_size(Some(self.config.max_frame_bytes));
        let mut attempt: u32 = 0;
        loop {
            let cursor = self.last.map(|l| l.saturating_add(self.skip));
            let end = match self.connect(cursor, ws_config, connector.clone()).await {
                Ok(None) => return,
                Ok(Some(ws)) => {
                    if !self.deliver(Delivery::Connected { cursor }).await {
                        return;
                    }
                    tracing::info!(host = %self.config.host, ?cursor, "firehose connected");
                    let (end, progressed) = self.read(ws).await;
                    if progressed {
                        attempt = 0;
                    }
                    if matches!(end, End::Shutdown | End::ConsumerGone) {
                        return;
                    }
                    if !self
                        .deliver(Delivery::Disconnected {
                            reason: end.detail(),
                        })
                        .await
                    {
                        return;
                    }
                    end
                }
                Err(e) => End::ConnectFailed(e),
            };
            let delay = backoff(attempt, self.config.backoff_min, self.config.backoff_max);
            attempt = attempt.saturating_add(1);
            self.rec
                .reconnect(end.reason(), &end.detail(), delay.as_millis());
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    async fn run_source(mut self, mut source: mpsc::Receiver<bytes::Bytes>) {
        if !self
            .deliver(Delivery::Connected { cursor: self.last })
            .await
        {
            return;
        }
        loop {
            let data = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                d = source.recv() => match d {
                    Some(d) => d,
                    None => return,
                },
            };
            // An oversized message is refused by the decoder's limit, as
            // a malformed one is: there is no connection to lose.
            if let Handled::End(End::Shutdown | End::ConsumerGone) = self.handle(data).await {
                return;
            }
        }
    }

    /// `Ok(None)`: shutdown while connecting.
    async fn connect(
        &self,
        cursor: Option<i64>,
        ws_config: WebSocketConfig,
        connector: Connector,
    ) -> Result<Option<Socket>, String> {
        let url = subscribe_url(&self.config.host, cursor).map_err(|e| e.to_string())?;
        let mut request = url.into_client_request().map_err(|e| e.to_string())?;
        request.headers_mut().insert(
            "user-agent",
            tokio_tungstenite::tungstenite::http::HeaderValue::from_static(concat!(
                "barn-firehose/",
                env!("CARGO_PKG_VERSION")
            )),
        );
        let connect = tokio_tungstenite::connect_async_tls_with_config(
            request,
            Some(ws_config),
            true,
            Some(connector),
        );
        tokio::select! {
            _ = self.shutdown.cancelled() => Ok(None),
            r = tokio::time::timeout(self.config.watchdog, connect) => match r {
                Ok(Ok((ws, _response))) => Ok(Some(ws)),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("handshake timed out".into()),
            },
        }
    }

    /// Reads one connection until it ends. Returns why, and whether any
    /// frame with a seq arrived (progress, which resets the backoff).
    async fn read(&mut self, mut ws: Socket) -> (End, bool) {
        let watchdog = self.config.watchdog;
        let mut progressed = false;
        let mut last_activity = Instant::now();
        let mut pinged = false;
        loop {
            let deadline = if pinged {
                last_activity + watchdog
            } else {
                last_activity + watchdog / 2
            };
            let msg = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                    return (End::Shutdown, progressed);
                }
                _ = tokio::time::sleep_until(deadline) => {
                    if pinged {
                        return (End::Watchdog, progressed);
                    }
                    pinged = true;
                    let ping = ws.send(Message::Ping(Default::default()));
                    match tokio::time::timeout_at(last_activity + watchdog, ping).await {
                        Ok(Ok(())) => continue,
                        Ok(Err(e)) => return (End::Failed(e.to_string()), progressed),
                        Err(_) => return (End::Watchdog, progressed),
                    }
                }
                msg = ws.next() => msg,
            };
            last_activity = Instant::now();
            pinged = false;
            let data = match msg {
                Some(Ok(Message::Binary(data))) => data,
                Some(Ok(Message::Text(text))) => {
                    let bytes = text.len();
                    self.rec
                        .rejected("text_message", "text websocket message", bytes);
                    let rejected = Delivery::Rejected {
                        reason: "text_message",
                        detail: "text websocket message (frames are binary)".into(),
                        bytes,
                    };
                    if !self.deliver(rejected).await {
                        return (End::ConsumerGone, progressed);
                    }
                    last_activity = Instant::now();
                    continue;
                }
                // tungstenite answers pings itself; either way the host is alive.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Close(frame))) => {
                    let why = frame.map_or_else(
                        || "no reason".to_owned(),
                        |f| format!("{} {}", f.code, f.reason),
                    );
                    return (End::Closed(why), progressed);
                }
                Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size }))) => {
                    let detail = format!("message of {size} bytes exceeds {max_size}");
                    self.rec.rejected("oversized", &detail, size);
                    if self.last.is_some() {
                        self.skip = self.skip.saturating_add(1);
                    }
                    let rejected = Delivery::Rejected {
                        reason: "oversized",
                        detail: detail.clone(),
                        bytes: size,
                    };
                    if !self.deliver(rejected).await {
                        return (End::ConsumerGone, progressed);
                    }
                    return (End::Oversized(detail), progressed);
                }
                Some(Err(
                    WsError::ConnectionClosed
                    | WsError::AlreadyClosed
                    | WsError::Protocol(
                        tokio_tungstenite::tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                    ),
                ))
                | None => return (End::Eof, progressed),
                Some(Err(e)) => return (End::Failed(e.to_string()), progressed),
            };
            match self.handle(data).await {
                Handled::Continue => {}
                Handled::Progress => progressed = true,
                Handled::End(end) => return (end, progressed),
            }
            // Waiting for the consumer's budget is not the host's silence.
            last_activity = Instant::now();
        }
    }

    /// Decodes, orders and delivers one binary message.
    async fn handle(&mut self, data: bytes::Bytes) -> Handled {
        let size = data.len();
        let permit = tokio::select! {
            _ = self.shutdown.cancelled() => return Handled::End(End::Shutdown),
            p = self.acquire(size) => match p {
                Some(p) => p,
                None => return Handled::End(End::Shutdown),
            },
        };
        let decoded = decode_frame_with_limit(&data, self.config.max_frame_bytes);
        // The decoded frame owns copies of what it needs.
        drop(data);
        let frame = match decoded {
            Ok(frame) => frame,
            Err(e) => {
                let detail = e.to_string();
                self.rec.rejected(e.reason(), &detail, size);
                let rejected = Delivery::Rejected {
                    reason: e.reason(),
                    detail,
                    bytes: size,
                };
                if !self.deliver(rejected).await {
                    return Handled::End(End::ConsumerGone);
                }
                return Handled::Continue;
            }
        };
        let mut outcome = Handled::Continue;
        if let Some(seq) = frame.seq {
            if let Some(last) = self.last {
                if seq <= last {
                    self.rec.duplicate(seq, last);
                    return Handled::Continue;
                }
                if seq > last.saturating_add(1) {
                    self.rec.gap(last, seq);
                    if !self
                        .deliver(Delivery::Gap {
                            after: last,
                            next: seq,
                        })
                        .await
                    {
                        return Handled::End(End::ConsumerGone);
                    }
                }
            }
            self.last = Some(seq);
            self.skip = 0;
            outcome = Handled::Progress;
        }
        self.rec.frame(frame.event.label(), frame.seq, size);
        let error = match &frame.event {
            Event::Error(e) => Some((e.error.clone(), e.message.clone().unwrap_or_default())),
            _ => None,
        };
        let delivery = Delivery::Frame {
            frame,
            bytes: size,
            permit,
        };
        if !self.deliver(delivery).await {
            return Handled::End(End::ConsumerGone);
        }
        if let Some((name, message)) = error {
            // The host closes the stream after an error frame.
            if name == "FutureCursor" {
                tracing::warn!(host = %self.config.host, last = ?self.last, "firehose cursor is in the host's future: reconnecting without a cursor");
                self.last = None;
                self.skip = 0;
            }
            return Handled::End(End::ErrorFrame(format!("{name}: {message}")));
        }
        outcome
    }

    /// Takes `size` bytes of budget (all of it, for a frame larger than the
    /// budget). `None` if the semaphore was closed (never, in practice).
    async fn acquire(&self, size: usize) -> Option<BytePermit> {
        let want = size.clamp(1, self.queue_bytes);
        let permits = u32::try_from(want).unwrap_or(u32::MAX);
        let permit = self.budget.clone().acquire_many_owned(permits).await.ok()?;
        self.held.fetch_add(want, Ordering::Relaxed);
        if let Some(g) = &self.gauge {
            g.add(want as i64);
        }
        Some(BytePermit {
            _permit: permit,
            bytes: want,
            held: self.held.clone(),
            gauge: self.gauge.clone(),
        })
    }

    /// Sends a delivery unless shutdown comes first; `false` when the
    /// consumer is gone or shutdown began.
    async fn deliver(&self, delivery: Delivery) -> bool {
        tokio::select! {
            _ = self.shutdown.cancelled() => false,
            r = self.tx.send(delivery) => r.is_ok(),
        }
    }
}

enum Handled {
    Continue,
    Progress,
    End(End),
}

/// The delay before reconnect attempt `attempt` (0-based): exponential from
/// `min`, capped at `max`, times a random factor in [0.5, 1] so that many
/// subscribers cut off together do not come back together.
fn backoff(attempt: u32, min: Duration, max: Duration) -> Duration {
    let exp = min.saturating_mul(1u32 << attempt.min(20));
    let capped = exp.min(max.max(min));
    capped.mul_f64(rand::random_range(0.5..=1.0))
}

/// TLS for `wss://`: rustls with the ring provider and the webpki roots.
/// Built explicitly because rustls cannot pick a process-wide default
/// provider when more than one is compiled in (aws-lc-rs comes with
/// reqwest elsewhere in the workspace).
fn tls_connector() -> Connector {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    match rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(builder) => Connector::Rustls(Arc::new(
            builder.with_root_certificates(roots).with_no_client_auth(),
        )),
        // The ring provider supports the default versions; kept total.
        Err(e) => {
            tracing::error!(error = %e, "firehose tls setup failed; wss:// hosts will not connect");
            Connector::Plain
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn urls_from_hosts() {
        assert_eq!(
            subscribe_url("http://localhost:2583", None).unwrap(),
            "ws://localhost:2583/xrpc/com.atproto.sync.subscribeRepos"
        );
        assert_eq!(
            subscribe_url("https://pds.example.com/", Some(42)).unwrap(),
            "wss://pds.example.com/xrpc/com.atproto.sync.subscribeRepos?cursor=42"
        );
        assert_eq!(
            subscribe_url("wss://relay.example", Some(0)).unwrap(),
            "wss://relay.example/xrpc/com.atproto.sync.subscribeRepos?cursor=0"
        );
        for bad in ["localhost:2583", "ftp://x", "http://", "http://x?y=1"] {
            assert_eq!(
                subscribe_url(bad, None).unwrap_err().reason(),
                "bad_host",
                "{bad}"
            );
        }
    }

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let min = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        for attempt in 0..40 {
            let d = backoff(attempt, min, max);
            let ceiling = (min * 2u32.pow(attempt.min(5))).min(max);
            assert!(d <= ceiling && d >= ceiling / 2, "{attempt}: {d:?}");
        }
    }
}
