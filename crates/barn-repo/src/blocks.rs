//! Where blocks come from: the [`BlockSource`] trait and an in-memory map.
//!
//! The MST, commit and diff code read blocks only through [`BlockSource`],
//! so the same code walks a CAR held in memory, a firehose commit's partial
//! block set, or barn's on-disk store.

use std::cell::RefCell;
use std::collections::HashSet;
use std::hash::BuildHasher;

use bytes::Bytes;
use cid::Cid;
use hashbrown::{HashTable, hash_table};

use crate::Result;

/// Read access to content-addressed blocks.
///
/// Implementations return `Ok(None)` for an absent block and `Err` only when
/// the backend itself failed. Blocks returned must already be
/// hash-verified (or come from a source that verified them on the way in).
pub trait BlockSource {
    /// The block's bytes, if present.
    fn get_block(&self, cid: &Cid) -> Result<Option<Bytes>>;

    /// Calls `f` with the block's bytes if present, and says whether it
    /// was. For readers that only look at a block: a source holding
    /// `Bytes` can lend them without the reference-count round trip of
    /// [`get_block`](BlockSource::get_block) (measurable when a diff reads
    /// hundreds of nodes).
    fn with_block(&self, cid: &Cid, f: &mut dyn FnMut(&[u8])) -> Result<bool> {
        match self.get_block(cid)? {
            Some(bytes) => {
                f(&bytes);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

impl<T: BlockSource + ?Sized> BlockSource for &T {
    fn get_block(&self, cid: &Cid) -> Result<Option<Bytes>> {
        (**self).get_block(cid)
    }

    fn with_block(&self, cid: &Cid, f: &mut dyn FnMut(&[u8])) -> Result<bool> {
        (**self).with_block(cid, f)
    }
}

/// An in-memory block map.
///
/// Laid out like an index map: the `(cid, bytes)` entries sit in one dense
/// `Vec` (128 bytes each), and the hash table holds only their positions
/// and hashes (16 bytes a slot). A `HashMap<Cid, Bytes>` stores the 128-byte
/// entries in its own slots, so a CAR's worth of blocks meant tens of MB of
/// table that was rehashed while growing and page-faulted in on the way:
/// that cost more than checking every block's SHA-256 (see
/// `benches/README.md`). The hash is kept in the slot so that growing the
/// table never goes back to the entries, which would be a cache miss each.
///
/// The table is keyed by the CID's digest only: it is already a uniform
/// SHA-256, so hashing it (foldhash, randomly seeded per process, so keys
/// still cannot be ground into one bucket) is cheap. Lookups still compare
/// whole CIDs, so a raw and a DAG-CBOR CID with the same digest stay two
/// entries, exactly as before.
#[derive(Clone, Default)]
pub struct BlockMap {
    entries: Vec<(Cid, Bytes)>,
    index: HashTable<Slot>,
    hasher: foldhash::fast::RandomState,
    bytes: u64,
}

/// A hash table slot: where the entry is, and its hash.
#[derive(Debug, Clone, Copy)]
struct Slot {
    at: usize,
    hash: u64,
}

impl std::fmt::Debug for BlockMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl BlockMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty map with room for `n` blocks.
    pub fn with_capacity(n: usize) -> Self {
        BlockMap {
            entries: Vec::with_capacity(n),
            index: HashTable::with_capacity(n),
            ..Self::default()
        }
    }

    /// Inserts a block without checking its hash: callers either computed
    /// the CID themselves or verified it.
    pub fn insert(&mut self, cid: Cid, bytes: Bytes) {
        let BlockMap {
            entries,
            index,
            hasher,
            bytes: total,
        } = self;
        *total += bytes.len() as u64;
        let hash = hash_cid(hasher, &cid);
        match index.entry(
            hash,
            |s| s.hash == hash && entries[s.at].0 == cid,
            |s| s.hash,
        ) {
            hash_table::Entry::Occupied(slot) => {
                let old = std::mem::replace(&mut entries[slot.get().at].1, bytes);
                *total -= old.len() as u64;
            }
            hash_table::Entry::Vacant(slot) => {
                slot.insert(Slot {
                    at: entries.len(),
                    hash,
                });
                entries.push((cid, bytes));
            }
        }
    }

    /// Builds a map from blocks whose CIDs are already verified, keeping
    /// their order; a repeated CID keeps its last bytes, as [`insert`] would.
    ///
    /// [`insert`]: BlockMap::insert
    pub(crate) fn from_entries(entries: Vec<(Cid, Bytes)>) -> Self {
        let mut map = BlockMap {
            index: HashTable::with_capacity(entries.len()),
            ..Self::default()
        };
        let BlockMap { index, hasher, .. } = &mut map;
        let mut bytes = 0u64;
        for (at, (cid, data)) in entries.iter().enumerate() {
            let hash = hash_cid(hasher, cid);
            let seen = index
                .find(hash, |s| s.hash == hash && entries[s.at].0 == *cid)
                .is_some();
            if seen {
                // Duplicates are legal in a CAR but rare: take the general
                // path rather than compacting the vector in place.
                return Self::from_entries_slow(entries);
            }
            index.insert_unique(hash, Slot { at, hash }, |s| s.hash);
            bytes += data.len() as u64;
        }
        map.entries = entries;
        map.bytes = bytes;
        map
    }

    fn from_entries_slow(entries: Vec<(Cid, Bytes)>) -> Self {
        let mut map = BlockMap::with_capacity(entries.len());
        for (cid, data) in entries {
            map.insert(cid, data);
        }
        map
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
        let hash = hash_cid(&self.hasher, cid);
        let slot = self
            .index
            .find(hash, |s| s.hash == hash && self.entries[s.at].0 == *cid)?;
        Some(&self.entries[slot.at].1)
    }

    /// Whether the block is present.
    pub fn contains(&self, cid: &Cid) -> bool {
        self.get(cid).is_some()
    }

    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no blocks.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Total bytes of block data.
    pub fn byte_len(&self) -> u64 {
        self.bytes
    }

    /// Iterates over all blocks, in the order they were first inserted.
    pub fn iter(&self) -> impl Iterator<Item = (&Cid, &Bytes)> {
        self.entries.iter().map(|(c, b)| (c, b))
    }

    /// Moves all blocks of `other` into `self`.
    pub fn extend(&mut self, other: BlockMap) {
        self.entries.reserve(other.len());
        for (cid, bytes) in other.entries {
            self.insert(cid, bytes);
        }
    }
}

/// The table's hash of a CID: its digest (all atproto CIDs are SHA-256, so
/// the digest alone spreads keys; other hashes still work, only slower to
/// tell apart).
fn hash_cid(hasher: &foldhash::fast::RandomState, cid: &Cid) -> u64 {
    hasher.hash_one(cid.hash().digest())
}

impl BlockSource for BlockMap {
    fn get_block(&self, cid: &Cid) -> Result<Option<Bytes>> {
        Ok(self.get(cid).cloned())
    }

    fn with_block(&self, cid: &Cid, f: &mut dyn FnMut(&[u8])) -> Result<bool> {
        Ok(self.get(cid).map(|b| f(b)).is_some())
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

    fn with_block(&self, cid: &Cid, f: &mut dyn FnMut(&[u8])) -> Result<bool> {
        if self.first.with_block(cid, f)? {
            return Ok(true);
        }
        self.second.with_block(cid, f)
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

    fn with_block(&self, cid: &Cid, f: &mut dyn FnMut(&[u8])) -> Result<bool> {
        self.seen.borrow_mut().insert(*cid);
        self.inner.with_block(cid, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{cid_for_cbor, cid_for_raw, verify_block};

    #[test]
    fn same_digest_under_two_codecs_stays_two_blocks() {
        // The table hashes only the digest; whole CIDs still decide.
        let data = Bytes::from_static(b"\x63abc");
        let cbor = cid_for_cbor(&data);
        let raw = cid_for_raw(&data);
        assert_eq!(cbor.hash(), raw.hash());
        let mut map = BlockMap::new();
        map.insert(cbor, data.clone());
        assert!(map.contains(&cbor));
        assert!(!map.contains(&raw));
        assert_eq!(map.get_block(&raw).unwrap(), None);
        map.insert(raw, data.clone());
        assert_eq!(map.len(), 2);
        assert_eq!(map.byte_len(), 8);
    }

    #[test]
    fn insert_replaces_and_keeps_first_insertion_order() {
        let mut map = BlockMap::with_capacity(1);
        let cids: Vec<Cid> = (0..1000u32)
            .map(|i| map.put_cbor(i.to_be_bytes().to_vec()))
            .collect();
        assert_eq!(map.len(), 1000);
        assert_eq!(map.byte_len(), 4000);
        // Re-inserting a CID replaces its bytes without adding an entry.
        map.insert(cids[10], Bytes::from_static(b"xy"));
        assert_eq!(map.len(), 1000);
        assert_eq!(map.byte_len(), 3998);
        assert_eq!(map.get(&cids[10]).unwrap().as_ref(), b"xy");
        let order: Vec<Cid> = map.iter().map(|(c, _)| *c).collect();
        assert_eq!(order, cids);
        for (i, cid) in cids.iter().enumerate() {
            if i != 10 {
                assert_eq!(map.get(cid).unwrap().as_ref(), (i as u32).to_be_bytes());
            }
        }
        assert!(map.get(&cid_for_cbor(b"absent")).is_none());
    }

    #[test]
    fn from_entries_collapses_duplicates_like_insert() {
        let blocks: Vec<(Cid, Bytes)> = (0..100u32)
            .map(|i| {
                let b = Bytes::from(i.to_be_bytes().to_vec());
                (cid_for_cbor(&b), b)
            })
            .collect();
        let unique = BlockMap::from_entries(blocks.clone());
        assert_eq!(unique.len(), 100);
        assert_eq!(unique.byte_len(), 400);
        let mut doubled = blocks.clone();
        doubled.extend(blocks.iter().rev().cloned());
        let collapsed = BlockMap::from_entries(doubled.clone());
        let mut by_insert = BlockMap::new();
        for (c, b) in doubled {
            by_insert.insert(c, b);
        }
        assert_eq!(collapsed.len(), 100);
        assert_eq!(collapsed.byte_len(), by_insert.byte_len());
        assert!(collapsed.iter().eq(by_insert.iter()));
        for (c, b) in &blocks {
            assert_eq!(collapsed.get(c), Some(b));
            verify_block(c, collapsed.get(c).unwrap()).unwrap();
        }
    }

    struct OnlyGet<'a>(&'a BlockMap);

    impl BlockSource for OnlyGet<'_> {
        fn get_block(&self, cid: &Cid) -> Result<Option<Bytes>> {
            self.0.get_block(cid)
        }
    }

    #[test]
    fn with_block_lends_what_get_block_returns_through_every_source() {
        let mut a = BlockMap::new();
        let mut b = BlockMap::new();
        let ca = a.put_cbor(b"\x01".to_vec());
        let cb = b.put_cbor(b"\x02".to_vec());
        let missing = cid_for_cbor(b"\x03");
        let layered = Layered {
            first: &a,
            second: &b,
        };
        let recording = Recording::new(&layered);
        for cid in [ca, cb, missing] {
            let mut lent = None;
            let found = recording
                .with_block(&cid, &mut |bytes| lent = Some(bytes.to_vec()))
                .unwrap();
            let got = layered.get_block(&cid).unwrap();
            assert_eq!(found, got.is_some());
            assert_eq!(lent, got.map(|g| g.to_vec()));
            // The default method, for a source that only has `get_block`.
            let mut direct = None;
            let found = OnlyGet(&a).with_block(&cid, &mut |bytes| direct = Some(bytes.to_vec()));
            assert_eq!(found.unwrap(), cid == ca);
            assert_eq!(direct, a.get(&cid).map(|g| g.to_vec()));
        }
        assert_eq!(recording.seen().len(), 3);
    }

    #[test]
    fn extend_and_clone_keep_lookups_working() {
        let mut a = BlockMap::new();
        let mut b = BlockMap::new();
        let ca = a.put_cbor(b"\x01".to_vec());
        let cb = b.put_cbor(b"\x02".to_vec());
        b.put_cbor(b"\x01".to_vec());
        a.extend(b);
        assert_eq!(a.len(), 2);
        let c = a.clone();
        assert_eq!(c.get(&ca).unwrap().as_ref(), b"\x01");
        assert_eq!(c.get(&cb).unwrap().as_ref(), b"\x02");
        assert!(format!("{c:?}").contains(&ca.to_string()));
    }
}
