//! barn-firehose: `com.atproto.sync.subscribeRepos`, the stream a PDS (or
//! relay) publishes every repo commit and account change on.
//!
//! - [`frames`]: the wire format. [`decode_frame`] turns one websocket
//!   message (a DAG-CBOR header and body, concatenated) into a typed
//!   [`Frame`], strictly and without panicking on hostile input;
//!   [`encode_frame`] writes the same bytes back.
//! - [`client`]: [`subscribe`] runs one host's websocket: reconnects with
//!   jittered backoff, resumes from the last seq, drops duplicates, reports
//!   gaps, replaces silent sockets, rejects oversized and malformed frames
//!   without stopping, and bounds memory by bytes (backpressure reaches the
//!   host through TCP).
//! - [`metrics`]: Prometheus counters for all of the above, each
//!   increment logged beside it.
//!
//! What a commit *means* (signature, MST inversion, `prevData`) is not
//! checked here: the `blocks` CAR slice is passed on unparsed to the
//! verifier in barn-mirror.

pub mod client;
mod error;
pub mod frames;
pub mod metrics;

pub use client::{
    BytePermit, Delivery, SubscribeConfig, Subscription, subscribe, subscribe_source, subscribe_url,
};
pub use error::{Error, Result};
pub use frames::{
    AccountEvent, CommitEvent, DEFAULT_MAX_FRAME_BYTES, ErrorFrame, Event, Frame, IdentityEvent,
    InfoEvent, OpAction, RepoOp, SyncEvent, decode_frame, decode_frame_with_limit, encode_frame,
};
pub use metrics::Metrics;
pub use tokio_util::sync::CancellationToken;
