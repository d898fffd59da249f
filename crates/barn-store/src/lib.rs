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
//! | `meta` | `format`; `dict` ‖ id | store format (1); zstd dictionaries of block values |
//!
//! Writes go through [`Batch`] and [`Store::write`]: atomic and durable
//! (one fsync per batch). See the `store` module for the rules.

mod codec;
mod error;
pub mod metrics;
mod model;
mod store;

pub use codec::{BlockCodec, DictionarySource};
pub use error::{Error, Result};
pub use model::{
    CommitEntry, HostState, ListPass, Op, OpAction, PassKind, RepoState, Source, SyncState,
};
pub use store::{Batch, Store, StoreBlocks, StoreOptions, now_ms};
