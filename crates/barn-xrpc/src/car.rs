//! CAR responses, streamed: a blocking task walks the tree
//! ([`barn_repo::export::RepoBlocks`]) and writes the CAR into 64 KiB
//! chunks that go through a channel of four to the socket. The socket's
//! pace is the walk's pace (backpressure), and memory per export is a
//! few chunks plus the walk's stack, whatever the repo's size.
//!
//! # Tricky bits
//!
//! - The status line goes out before the walk starts, so a failure half
//!   way (a missing block: corruption) cannot become an error answer; the
//!   body ends with an error instead, the connection is cut, and the
//!   client sees a truncated CAR, which no reader accepts. It is logged
//!   and counted.
//! - A client that stops reading holds a slot; after
//!   `car_stall_timeout` without taking a chunk the export is abandoned.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use barn_repo::Cid;
use barn_repo::car::CarWriter;
use barn_repo::export::RepoBlocks;
use barn_store::Store;
use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use crate::error::{ErrorCode, XrpcError};
use crate::{Gateway, Metrics};

/// Bytes per chunk sent to the socket.
const CHUNK: usize = 64 * 1024;
/// Chunks buffered between the walk and the socket.
const CHANNEL: usize = 4;

/// The media type of CAR answers.
pub(crate) const CAR_TYPE: &str = "application/vnd.ipld.car";

/// What to export.
pub(crate) enum Plan {
    /// The whole repo at a commit.
    Full { commit: Cid, data: Cid },
    /// The commit and the paths to `changed` keys.
    Diff {
        commit: Cid,
        data: Cid,
        changed: Vec<Vec<u8>>,
    },
}

impl Gateway {
    /// Waits (a bounded time) for a CAR slot.
    pub(crate) async fn car_slot(&self) -> Result<OwnedSemaphorePermit, XrpcError> {
        let slots = self.inner.car_slots.clone();
        match tokio::time::timeout(self.inner.config.car_queue_timeout, slots.acquire_owned()).await
        {
            Ok(Ok(permit)) => Ok(permit),
            _ => {
                self.inner.metrics.rejected("busy");
                tracing::warn!(
                    limit = self.inner.config.max_concurrent_cars,
                    "gateway: every CAR slot busy"
                );
                Err(XrpcError::new(
                    ErrorCode::ServerBusy,
                    format!(
                        "{} CAR exports are already streaming; retry shortly",
                        self.inner.config.max_concurrent_cars
                    ),
                )
                .retry_after(5))
            }
        }
    }

    /// Streams `plan` as a CAR whose root is the commit; `kind` labels the
    /// bytes in the metrics; `extra` headers go on the answer.
    pub(crate) fn stream_car(
        &self,
        permit: OwnedSemaphorePermit,
        plan: Plan,
        kind: &'static str,
        extra: Vec<(&'static str, String)>,
    ) -> Response {
        let (tx, mut rx) = mpsc::channel::<std::io::Result<Bytes>>(CHANNEL);
        let store = self.inner.store.clone();
        let metrics = self.inner.metrics.clone();
        let stall = self.inner.config.car_stall_timeout;
        let handle = tokio::runtime::Handle::current();
        // Set only once the last byte is handed over: a body that ends
        // without it was cut, and must end in an error, not look whole.
        let complete = Arc::new(AtomicBool::new(false));
        let done = complete.clone();
        metrics.car_started();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let _gauge = InFlight(metrics.clone());
            let mut out = Chunks {
                buf: Vec::with_capacity(CHUNK + 4096),
                tx,
                handle,
                stall,
                sent: 0,
            };
            let result = write_plan(&store, &plan, &mut out);
            let sent = out.sent + out.buf.len() as u64;
            match result {
                Ok(()) => {
                    if out.flush_chunk().is_err() {
                        metrics.rejected("client_gone");
                    } else {
                        done.store(true, Ordering::Release);
                    }
                }
                Err(e) if is_client_gone(&e) => {
                    metrics.rejected("client_gone");
                    tracing::debug!(error = %e, "gateway: CAR client went away");
                }
                Err(e) => {
                    metrics.rejected("car_failed");
                    tracing::error!(error = %e, kind, "gateway: CAR export failed mid-stream");
                    // Bounded like every send: a reader that stopped must
                    // not hold the slot.
                    let tx = &out.tx;
                    let _ = out
                        .handle
                        .block_on(async { tokio::time::timeout(stall, tx.send(Err(e))).await });
                }
            }
            metrics.car_bytes(kind, sent);
        });
        let mut ended = false;
        let stream = futures_util::stream::poll_fn(move |cx| {
            if ended {
                return std::task::Poll::Ready(None);
            }
            match rx.poll_recv(cx) {
                std::task::Poll::Ready(None) => {
                    ended = true;
                    if complete.load(Ordering::Acquire) {
                        std::task::Poll::Ready(None)
                    } else {
                        std::task::Poll::Ready(Some(Err(std::io::Error::other(
                            "CAR export abandoned before its end",
                        ))))
                    }
                }
                other => other,
            }
        });
        let mut resp = (
            [(header::CONTENT_TYPE, CAR_TYPE)],
            Body::from_stream(stream),
        )
            .into_response();
        for (name, value) in extra {
            if let Ok(v) = axum::http::HeaderValue::from_str(&value) {
                resp.headers_mut().insert(name, v);
            }
        }
        resp
    }
}

/// Counts an export as under way until dropped (panics included).
struct InFlight(Metrics);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.car_ended();
    }
}

fn is_client_gone(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::TimedOut
    )
}

fn write_plan(store: &Arc<Store>, plan: &Plan, out: &mut Chunks) -> std::io::Result<()> {
    let source = store.block_source();
    let (commit, blocks) = match plan {
        Plan::Full { commit, data } => (*commit, RepoBlocks::full(source, *commit, *data)),
        Plan::Diff {
            commit,
            data,
            changed,
        } => (
            *commit,
            RepoBlocks::diff(source, *commit, *data, changed.clone()),
        ),
    };
    let mut w = CarWriter::new(&mut *out, &[commit])?;
    for block in blocks {
        let (cid, bytes) = block.map_err(|e| std::io::Error::other(e.to_string()))?;
        w.write_block(&cid, &bytes)?;
    }
    w.finish()?;
    Ok(())
}

/// The CAR writer's sink: fills a chunk, hands it to the socket.
struct Chunks {
    buf: Vec<u8>,
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    handle: tokio::runtime::Handle,
    stall: Duration,
    sent: u64,
}

impl Chunks {
    fn flush_chunk(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(CHUNK + 4096),
        ));
        let n = chunk.len() as u64;
        let tx = &self.tx;
        let sent = self
            .handle
            .block_on(async { tokio::time::timeout(self.stall, tx.send(Ok(chunk))).await });
        match sent {
            Ok(Ok(())) => {
                self.sent += n;
                Ok(())
            }
            Ok(Err(_)) => Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "client closed the connection",
            )),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "client stopped reading",
            )),
        }
    }
}

impl Write for Chunks {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush_chunk()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A small CAR held whole (record proofs).
pub(crate) fn small_car(root: Cid, blocks: &[(Cid, Bytes)], metrics: &Metrics) -> Response {
    let mut w = match CarWriter::new(Vec::new(), &[root]) {
        Ok(w) => w,
        Err(e) => return internal(e),
    };
    for (cid, bytes) in blocks {
        if let Err(e) = w.write_block(cid, bytes) {
            return internal(e);
        }
    }
    match w.finish() {
        Ok(bytes) => {
            metrics.car_bytes("record", bytes.len() as u64);
            ([(header::CONTENT_TYPE, CAR_TYPE)], bytes).into_response()
        }
        Err(e) => internal(e),
    }
}

fn internal(e: std::io::Error) -> Response {
    tracing::error!(error = %e, "gateway: writing a CAR failed");
    XrpcError::new(ErrorCode::InternalServerError, "writing the CAR failed").into_response()
}
