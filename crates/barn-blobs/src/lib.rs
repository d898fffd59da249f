//! barn-blobs: the blobs barn's records reference, fetched from the
//! accounts' PDSes and kept in an object store.
//!
//! - The queue is durable, in barn-store: a commit that references a blob
//!   queues it in the same atomic batch (barn-store's `blobs` module).
//! - [`BlobWorkers`] drain it: `com.atproto.sync.getBlob` from the
//!   account's current host, at most `concurrency` at once and `per_host`
//!   per host, each body hashed and size-checked while it streams into
//!   [`BlobStorage`] (an [`object_store`]: a local directory by default, S3
//!   at scale), kept only when its sha-256 is the CID's.
//! - Failures are sorted by what to do next ([`Failure`], [`RetryPolicy`]):
//!   `BlobNotFound`, wrong bytes, too large or an inactive account make the
//!   blob *missing* (recorded with the reason, retried slowly); server and
//!   network errors retry with exponential backoff and jitter; 429 pauses
//!   the host until `Retry-After`; an object store outage pauses fetching.
//! - Blobs are stored as they come, uncompressed: media is already
//!   compressed (see `benches/README.md`, "Blob compression").

mod error;
mod fetch;
pub mod metrics;
mod storage;
mod worker;

pub use error::{Error, Result};
pub use fetch::{Failure, Fetched};
pub use metrics::Metrics;
pub use storage::{BlobStorage, StorageConfig, StoredBlob};
pub use worker::{BlobConfig, BlobWorkers, RetryPolicy};
