//! barn-store: everything barn keeps on disk, in fjall. The only crate that
//! knows fjall.
//!
//! | keyspace | key | value |
//! | --- | --- | --- |
//! | `blocks` | CID bytes | codec header ‖ block, raw or zstd (never overwritten or deleted) |
//! | `repos` | DID | [`RepoState`]: head, rev, status, host, sync state |
//! | `commits` | DID ‖ 0 ‖ rev | [`CommitEntry`]: commit CID, MST root, seen-at, source, ops |
//! | `records` | DID ‖ 0 ‖ collection/rkey | record CID (current state only) |
//! | `hosts` | host URL | [`HostState`]: cursor, last event time, `listRepos` pass |
//! | `events` | barn seq (u64 BE) | (DID, rev): global order of stored revisions |
//! | `ops` | DID ‖ 0 ‖ rev ‖ 0 ‖ chunk (u32 BE) | ops of a revision too large to inline (an import), in chunks of 4096 |
//! | `blobs` | CID | [`BlobState`]: queued / stored / missing, account to fetch through, attempts, reason |
//! | `blob_refs` | DID ‖ 0 ‖ CID | first seen (ms): blobs an account's records referenced, ever |
//! | `blob_queue` | due ms (u64 BE) ‖ CID | (empty): the fetch queue, one entry per queued or missing blob |
//! | `meta` | `format`; `dict` ‖ id; `pending` ‖ DID | store format (1); zstd dictionaries of block values; an import changing the record index (rev) |
//!
//! Writes go through [`Batch`] and [`Store::write`]: atomic and durable
//! (one fsync per batch). See the `store` module for the rules.

mod admin;
mod blobs;
mod codec;
mod error;
pub mod metrics;
mod model;
mod query;
mod revision;
mod store;

pub use admin::{DeleteReport, Tracking};
pub use blobs::{
    BlobCounts, BlobHint, BlobOutcome, BlobState, BlobStatus, DueBlob, DueChoice, DuePosition,
    DueScan,
};
pub use codec::{BlockCodec, DictionarySource};
pub use error::{Error, Result};
pub use model::{
    ChunkedOps, CommitEntry, HostState, ListPass, Op, OpAction, OpCounts, PassKind, RepoState,
    Source, SyncState,
};
pub use query::Order;
pub use revision::{CHUNK_OPS, LargeRevision};
pub use store::{
    Batch, EncodedBlocks, INGEST_LEVEL0_LIMIT, Store, StoreBlocks, StoreOptions, now_ms,
};
