//! Where blocks come from: the [`BlockSource`] trait and an in-memory map.
//!
//! The MST, commit and diff code read blocks only through [`BlockSource`],
//! so the same code walks a CAR held in memory, a firehose commit's partial
//! block set, or barn's on-disk store.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use cid::Cid;

use crate::Result;

/// Read access to content-addressed blocks.
///
/// Implementations return `Ok(None)` for an absent block and `Err` only when
/// the backend itself failed. Blocks returned must already be
/// hash-verified (or come from a source that verified them on the way in).
pub trait BlockSource {
    /// The block's bytes, if present.
    fn get_block(&self, cid: &Cid) -> Result<Option<Bytes>>;
}

impl<T: BlockSource + ?Sized> BlockSource for &T {
    fn get_block(&self, cid: &Cid) -> Result<Option<Bytes>> {
        (**self).get_block(cid)
    }
}

/// An in-memory block map.
///
/// Hashed with foldhash (randomly seeded per process): SipHash over an
/// 80-byte CID cost more than the SHA-256 check of a small record block when
/// loading a CAR (see `benches/README.md`).
#[derive(Debug, Clone, Default)]
pub struct BlockMap {
    map: HashMap<Cid, Bytes, foldhash::fast::RandomState>,
    bytes: u64,
}

impl BlockMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty map with room for `n` blocks.
    pub fn with_capacity(n: usize) -> Self {
        BlockMap {
            map: HashMap::with_capacity_and_hasher(n, foldhash::fast::RandomState::default()),
            bytes: 0,
        }
    }

    /// Inserts a block without checking its hash: callers either computed
    /// the CID themselves or verified it.
    pub fn insert(&mut self, cid: Cid, bytes: Bytes) {
        let len = bytes.len() as u64;
        if let Some(old) = self.map.insert(cid, bytes) {
            self.bytes -= old.len() as u64;
        }
        self.bytes += len;
    }

    /// Inserts a DAG-CBOR block and returns its CID.
    pub fn put_cbor(&mut self, bytes: impl Into<Bytes>) -> Cid {
        let bytes = bytes.into();
        let cid = crate::cid_for_cbor(&bytes);
        self.insert(cid, bytes);
        cid
    }

    /// The block, if present.
    pub fn get(&self, cid: &Cid) -> Option<&Bytes> {
        self.map.get(cid)
    }

    /// Whether the block is present.
    pub fn contains(&self, cid: &Cid) -> bool {
        self.map.contains_key(cid)
    }

    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are no blocks.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Total bytes of block data.
    pub fn byte_len(&self) -> u64 {
        self.bytes
    }

    /// Iterates over all blocks, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&Cid, &Bytes)> {
        self.map.iter()
    }

    /// Moves all blocks of `other` into `self`.
    pub fn extend(&mut self, other: BlockMap) {
        for (cid, bytes) in other.map {
            self.insert(cid, bytes);
        }
    }
}

impl BlockSource for BlockMap {
    fn get_block(&self, cid: &Cid) -> Result<Option<Bytes>> {
        Ok(self.map.get(cid).cloned())
    }
}

/// Reads from `first`, then from `second`: a commit's new blocks layered
/// over a store holding the previous state.
#[derive(Debug, Clone, Copy)]
pub struct Layered<A, B> {
    /// Consulted first.
    pub first: A,
    /// Consulted when `first` lacks the block.
    pub second: B,
}

impl<A: BlockSource, B: BlockSource> BlockSource for Layered<A, B> {
    fn get_block(&self, cid: &Cid) -> Result<Option<Bytes>> {
        match self.first.get_block(cid)? {
            Some(b) => Ok(Some(b)),
            None => self.second.get_block(cid),
        }
    }
}

/// Wraps a source and records every CID read through it: the proof set of
/// an operation (which blocks a verifier needs).
#[derive(Debug)]
pub struct Recording<S> {
    inner: S,
    seen: RefCell<HashSet<Cid>>,
}

impl<S> Recording<S> {
    /// Starts recording reads of `inner`.
    pub fn new(inner: S) -> Self {
        Recording {
            inner,
            seen: RefCell::new(HashSet::new()),
        }
    }

    /// The CIDs read so far (present or not).
    pub fn seen(&self) -> HashSet<Cid> {
        self.seen.borrow().clone()
    }
}

impl<S: BlockSource> BlockSource for Recording<S> {
    fn get_block(&self, cid: &Cid) -> Result<Option<Bytes>> {
        self.seen.borrow_mut().insert(*cid);
        self.inner.get_block(cid)
    }
}
