//! The store: every keyspace, the atomic write batch, reads.
//!
//! # Terminology
//! - **block**: a content-addressed DAG-CBOR block (commit, MST node,
//!   record), keyed by its CID, shared by every repo that has it.
//! - **revision**: one [`CommitEntry`] per (repo, rev); the head is the
//!   newest one.
//! - **cursor**: the last host sequence number whose effects are durable.
//!
//! # Tricky bits
//! - **A cursor never leads durable data.** A host's cursor is only ever
//!   written in the same [`Batch`] as the effects of the events it covers,
//!   and a batch is one atomic fjall write batch followed by one `fsync`
//!   (group commit: many commits, one sync). After a crash, barn resumes
//!   from a cursor whose events are all stored; events after it are seen
//!   again and recognised by rev.
//! - **Nothing is deleted because the source deleted it.** Blocks are
//!   never removed or overwritten; a deleted record leaves the record
//!   index (current state) but stays reachable from older revisions; a
//!   deleted account only changes its status.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use cid::Cid;
use fjall::config::CompressionPolicy;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use barn_repo::BlockSource;
use barn_repo::car::CarWriter;
use barn_repo::export::RepoBlocks;

use crate::codec::{BlockCodec, Codec, DictionarySource};
use crate::error::{Error, Result};
use crate::model::{CommitEntry, HostState, RepoState};

const SEP: u8 = 0;

/// The on-disk format this code writes (`meta` key `format`). Format 1:
/// block values carry a codec header (see the `codec` module).
const FORMAT: u8 = 1;
const META_FORMAT: &[u8] = b"format";
const META_DICT: &[u8] = b"dict";

/// Options for [`Store::open`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Block cache size in bytes.
    pub cache_bytes: u64,
    /// Largest memtable of one keyspace before it is flushed to disk
    /// (fjall's default, 64 MiB, is a lot of memory for each of seven
    /// keyspaces).
    pub memtable_bytes: u64,
    /// How block values are encoded (new writes only; every stored value
    /// names its codec).
    pub blocks: BlockCodec,
    /// fjall's own LZ4 compression of the `blocks` keyspace's data blocks
    /// (fjall's default policy: levels 2 and below, so it runs at
    /// compaction, not on the write path). Fixed when the store is created;
    /// ignored when opening an existing one.
    pub blocks_lz4: bool,
    /// Compress MST nodes and commits with zstd too. They are mostly
    /// hashes and a signature (zstd saves ~16% of an MST node) and most of
    /// the blocks of a firehose commit, so by default they are stored raw
    /// and left to fjall's lz4.
    pub compress_structure: bool,
    /// fjall's background threads (memtable flushes and compactions);
    /// 0 leaves fjall's default (one per core, up to 4). Default 3:
    /// - never 1 in a store that takes a sustained stream of writes: a
    ///   lone worker also rotates full memtables, so during a long
    ///   compaction (seconds, growing with the store) the active memtable
    ///   grows past its size and memory with it, at the rate of the
    ///   writes (425 MiB of write buffer with 32 MiB memtables in the
    ///   ingest bench);
    /// - with two or more, fjall's first worker stays free for rotations
    ///   and flushes by handing every compaction request back to the
    ///   queue. After a flush fjall queues one request per worker; with
    ///   two, the one left over has no other taker while the second
    ///   worker compacts, so the first spins on it for the whole
    ///   compaction (a core, 1.2–1.4 s of CPU in a 1M-record import).
    ///   A third worker takes it, finds the tables already being
    ///   compacted and returns, and nothing spins.
    ///
    /// See `benches/README.md`, "fjall's worker threads".
    pub worker_threads: usize,
    /// Level-0 tables of the `blocks` keyspace before fjall compacts them
    /// into level 1 (fjall's default: 4). Blocks are keyed by hash, so
    /// every table spans the whole key range and each compaction rewrites
    /// all of level 1: merging 16 tables at a time instead of 4 cuts that
    /// rewriting (point reads check one more bloom filter per table). At
    /// most 16: fjall slows writers from 20 level-0 tables on, and
    /// [`Store::ingest_encoded`] waits there. Fixed when the store is
    /// created; ignored when opening an existing one.
    pub blocks_l0_threshold: u8,
}

impl Default for StoreOptions {
    /// The scheme chosen by the W1-3 storage figures (`benches/README.md`,
    /// "Storage"): zstd level 3 with a 64 KiB dictionary the store trains
    /// from the first 4 MiB of records it writes, MST nodes and commits
    /// raw, fjall's lz4 on the `blocks` keyspace.
    fn default() -> Self {
        StoreOptions {
            cache_bytes: 256 << 20,
            memtable_bytes: 32 << 20,
            blocks: BlockCodec::ZstdDict {
                level: 3,
                dictionary: DictionarySource::Train {
                    sample_bytes: 4 << 20,
                    max_bytes: 64 << 10,
                },
            },
            blocks_lz4: true,
            compress_structure: false,
            worker_threads: 3,
            blocks_l0_threshold: 16,
        }
    }
}

/// Level-0 tables of the `blocks` keyspace at which
/// [`Store::ingest_encoded`] waits for compaction: where fjall starts
/// slowing writers down (it halts them at 30). Public so that the import
/// bench's floor waits where barn does.
pub const INGEST_LEVEL0_LIMIT: usize = 20;

/// Blocks encoded by [`Store::encode_blocks`], waiting for
/// [`Store::ingest_encoded`]. Batches encoded apart may be joined with
/// [`EncodedBlocks::append`].
#[derive(Default)]
pub struct EncodedBlocks {
    /// (key, stored value).
    entries: Vec<(Vec<u8>, Vec<u8>)>,
    /// The blocks' size before encoding.
    raw_bytes: usize,
    /// The highest codec header among the values: the dictionaries up to
    /// it must be durable before the values are.
    max_tag: u8,
}

impl EncodedBlocks {
    /// Moves `other`'s blocks to the end of these.
    pub fn append(&mut self, other: &mut EncodedBlocks) {
        self.entries.append(&mut other.entries);
        self.raw_bytes += std::mem::take(&mut other.raw_bytes);
        self.max_tag = self.max_tag.max(std::mem::take(&mut other.max_tag));
    }

    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No blocks.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The blocks' size before encoding.
    pub fn raw_bytes(&self) -> usize {
        self.raw_bytes
    }
}

/// barn's on-disk state.
pub struct Store {
    pub(crate) db: Database,
    codec: Codec,
    pub(crate) meta: Keyspace,
    pub(crate) blocks: Keyspace,
    pub(crate) repos: Keyspace,
    pub(crate) commits: Keyspace,
    pub(crate) records: Keyspace,
    hosts: Keyspace,
    pub(crate) events: Keyspace,
    pub(crate) ops: Keyspace,
    pub(crate) blobs: Keyspace,
    pub(crate) blob_refs: Keyspace,
    pub(crate) blob_queue: Keyspace,
    /// Serializes every read-modify-write of blob states and queue entries
    /// (see the `blobs` module).
    pub(crate) blob_lock: std::sync::Mutex<()>,
    next_event: AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Our own model types always serialize (no maps with non-string keys,
    // no floats), so an error here is a programming mistake; keep it loud
    // but not a panic: store an empty value that fails to decode later.
    serde_ipld_dagcbor::to_vec(value).unwrap_or_default()
}

pub(crate) fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T> {
    serde_ipld_dagcbor::from_slice(bytes).map_err(|e| Error::Corrupt {
        what,
        detail: e.to_string(),
    })
}

fn dict_key(id: u8) -> Vec<u8> {
    let mut k = META_DICT.to_vec();
    k.push(id);
    k
}

/// `did ‖ 0`, and the bound just past every key under it: the range of
/// one account's entries in the keyspaces keyed `did ‖ 0 ‖ …`.
pub(crate) fn did_range(did: &str) -> (Vec<u8>, Vec<u8>) {
    let lo = key2(did, "");
    let mut hi = did.as_bytes().to_vec();
    hi.push(1);
    (lo, hi)
}

pub(crate) fn key2(a: &str, b: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(a.len() + 1 + b.len());
    k.extend_from_slice(a.as_bytes());
    k.push(SEP);
    k.extend_from_slice(b.as_bytes());
    k
}

fn prefix(a: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(a.len() + 1);
    k.extend_from_slice(a.as_bytes());
    k.push(SEP);
    k
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

impl Store {
    /// Opens (or creates) the store in `path`.
    pub fn open(path: &Path, opts: &StoreOptions) -> Result<Store> {
        let mut builder = Database::builder(path)
            .cache_size(opts.cache_bytes)
            // Durability is ours to decide: one fsync per group commit.
            .manual_journal_persist(true);
        if opts.worker_threads > 0 {
            builder = builder.worker_threads(opts.worker_threads);
        }
        let db = builder.open()?;
        let memtable = opts.memtable_bytes;
        let ks = |name: &str| {
            db.keyspace(name, || {
                KeyspaceCreateOptions::default().max_memtable_size(memtable)
            })
        };
        let blocks = db.keyspace("blocks", || {
            let leveled = fjall::compaction::Leveled::default()
                .with_l0_threshold(opts.blocks_l0_threshold.clamp(2, 16));
            let o = KeyspaceCreateOptions::default()
                .max_memtable_size(memtable)
                .compaction_strategy(Arc::new(leveled));
            if opts.blocks_lz4 {
                o
            } else {
                o.data_block_compression_policy(CompressionPolicy::disabled())
            }
        })?;
        let meta = ks("meta")?;
        match meta.get(META_FORMAT)? {
            Some(v) if v.as_ref() == [FORMAT] => {}
            Some(v) => {
                return Err(Error::Corrupt {
                    what: "store format",
                    detail: format!("{:?} (this barn reads {FORMAT})", v.as_ref()),
                });
            }
            None if blocks.first_key_value().is_some() => {
                return Err(Error::Corrupt {
                    what: "store format",
                    detail: "written before block values had a codec header; \
                             re-sync into an empty directory"
                        .into(),
                });
            }
            None => {
                meta.insert(META_FORMAT, [FORMAT])?;
            }
        }
        let mut stored = Vec::new();
        for guard in meta.prefix(META_DICT) {
            let (k, v) = guard.into_inner()?;
            match k.as_ref() {
                [.., id] if k.len() == META_DICT.len() + 1 => stored.push((*id, v.to_vec())),
                _ => {
                    return Err(Error::Corrupt {
                        what: "meta key",
                        detail: format!("{:?}", k.as_ref()),
                    });
                }
            }
        }
        let (codec, persist) = Codec::new(&opts.blocks, opts.compress_structure, stored)?;
        if let Some((id, bytes)) = persist {
            meta.insert(dict_key(id), bytes.as_ref())?;
        }
        db.persist(PersistMode::SyncAll)?;
        if let Some(dict) = codec.unpersisted() {
            codec.persisted(&dict);
        }
        let events = ks("events")?;
        let next_event = match events.last_key_value() {
            Some(guard) => {
                let key = guard.key()?;
                let arr: [u8; 8] = key.as_ref().try_into().map_err(|_| Error::Corrupt {
                    what: "events key",
                    detail: format!("{} bytes", key.len()),
                })?;
                u64::from_be_bytes(arr) + 1
            }
            None => 1,
        };
        Ok(Store {
            codec,
            meta,
            blocks,
            repos: ks("repos")?,
            commits: ks("commits")?,
            records: ks("records")?,
            hosts: ks("hosts")?,
            events,
            ops: ks("ops")?,
            blobs: ks("blobs")?,
            blob_refs: ks("blob_refs")?,
            blob_queue: ks("blob_queue")?,
            blob_lock: std::sync::Mutex::new(()),
            next_event: AtomicU64::new(next_event),
            db,
        })
        .and_then(|store| {
            // An import that crashed half-way through the record index.
            store.recover_pending()?;
            Ok(store)
        })
    }

    /// Applies `batch` atomically and durably (one fsync). When this
    /// returns `Ok`, everything in the batch survives a crash; when it
    /// fails, none of it is visible.
    pub fn write(&self, mut batch: Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        // In key order, as the map gave them before: the ingest bench's
        // store stage took 47.6–57.6 µs a commit unsorted, 37.5–38.3
        // sorted here, 40.6–45.9 with the map.
        // By reference: a key function would copy the 88-byte `Cid` twice
        // a comparison (39.0–39.6 µs a commit in the same bench).
        #[allow(clippy::unnecessary_sort_by)]
        batch.blocks.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
        batch.blocks.dedup_by(|a, b| a.0 == b.0);
        let encoded = self.encode_blocks(&batch.blocks);
        let mut wb = self.db.batch().durability(Some(PersistMode::SyncData));
        for (key, value) in encoded.entries {
            wb.insert(&self.blocks, key, value);
        }
        // A dictionary goes into the same atomic batch as the first values
        // that need it (and into every batch until one of them commits).
        // Asked after encoding: another thread may install one meanwhile.
        let dicts = self.codec.unpersisted_upto(encoded.max_tag);
        for d in &dicts {
            wb.insert(&self.meta, dict_key(d.id), d.bytes.as_ref());
        }
        for (did, entry) in &batch.commits {
            wb.insert(&self.commits, key2(did, &entry.rev), encode(entry));
            let seq = self.next_event.fetch_add(1, Ordering::SeqCst);
            wb.insert(
                &self.events,
                seq.to_be_bytes(),
                encode(&(did.as_str(), entry.rev.as_str())),
            );
        }
        for ((did, path), cid) in &batch.records {
            let key = key2(did, path);
            match cid {
                Some(cid) => wb.insert(&self.records, key, cid.to_bytes()),
                None => wb.remove(&self.records, key),
            }
        }
        for (did, state) in &batch.repos {
            wb.insert(&self.repos, did.as_bytes(), encode(state));
        }
        for (host, state) in &batch.hosts {
            wb.insert(&self.hosts, host.as_bytes(), encode(state));
        }
        for key in &batch.meta_remove {
            wb.remove(&self.meta, key.as_slice());
        }
        // Blob refs read the states they change: the lock is held until the
        // batch is committed (only by batches that carry refs).
        let _blob_guard = if batch.blob_refs.is_empty() && batch.blob_retry.is_empty() {
            None
        } else {
            let guard = self.blob_lock.lock().unwrap_or_else(|p| p.into_inner());
            self.stage_blob_refs(&batch, &mut wb)?;
            Some(guard)
        };
        wb.commit()?;
        for d in &dicts {
            self.codec.persisted(d);
        }
        crate::metrics::record_batch(&batch);
        Ok(())
    }

    /// Encodes blocks for [`Store::ingest_encoded`], on the calling
    /// thread: imports run it on several threads at once, while the
    /// encoded blocks before them are being written.
    pub fn encode_blocks(&self, blocks: &[(Cid, Bytes)]) -> EncodedBlocks {
        self.codec.observe(blocks.iter().map(|(_, b)| b.as_ref()));
        let mut out = EncodedBlocks::default();
        out.entries.reserve(blocks.len());
        let current = self.codec.current();
        for (cid, data) in blocks {
            let value = self.codec.encode_with(&current, data);
            out.max_tag = out.max_tag.max(value.first().copied().unwrap_or(0));
            out.raw_bytes += data.len();
            out.entries.push((cid.to_bytes(), value));
        }
        out
    }

    /// Writes encoded blocks straight into new tables (fjall's ingestion),
    /// bypassing the journal and the memtable, which a whole repository
    /// would otherwise go through twice. Durable when this returns (the
    /// tables are synced). `blocks` is emptied; duplicates are fine.
    ///
    /// The dictionaries the values name, if new, are made durable first:
    /// an ingested value must never name a dictionary a crash could lose.
    pub fn ingest_encoded(&self, blocks: &mut EncodedBlocks) -> Result<()> {
        if blocks.entries.is_empty() {
            return Ok(());
        }
        self.persist_dictionaries(&self.codec.unpersisted_upto(blocks.max_tag))?;
        let count = blocks.entries.len();
        let bytes = std::mem::take(&mut blocks.raw_bytes);
        blocks.max_tag = 0;
        let encoded = &mut blocks.entries;
        encoded.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        // Ingestion wants strictly increasing keys: a CAR may repeat a
        // block.
        encoded.dedup_by(|a, b| a.0 == b.0);
        // Many ingestions in a row stack up level-0 runs; wait for
        // compaction as fjall makes writers wait.
        while self.ingest_would_wait() {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let mut ingestion = self.blocks.start_ingestion()?;
        // Drained, not consumed: the caller's vector keeps its capacity
        // for the next batch instead of growing again from nothing (page
        // faults and copies, ~0.5% of an import).
        for (k, v) in encoded.drain(..) {
            ingestion.write(k, v)?;
        }
        ingestion.finish()?;
        crate::metrics::record_ingest(count, bytes);
        Ok(())
    }

    /// Whether [`Store::ingest_encoded`] would wait now for fjall to
    /// compact the `blocks` keyspace's level 0 ([`INGEST_LEVEL0_LIMIT`]
    /// tables). An import keeps gathering blocks meanwhile instead of
    /// stopping.
    pub fn ingest_would_wait(&self) -> bool {
        self.blocks.l0_table_count() >= INGEST_LEVEL0_LIMIT
    }

    /// The state of a repo, if tracked.
    pub fn repo(&self, did: &str) -> Result<Option<RepoState>> {
        self.repos
            .get(did.as_bytes())?
            .map(|v| decode("repo state", &v))
            .transpose()
    }

    /// Every tracked repo's DID and state.
    pub fn repos(&self) -> Result<Vec<(String, RepoState)>> {
        let mut out = Vec::new();
        for guard in self.repos.iter() {
            let (k, v) = guard.into_inner()?;
            out.push((
                String::from_utf8_lossy(&k).into_owned(),
                decode("repo state", &v)?,
            ));
        }
        Ok(out)
    }

    /// A host's durable stream state.
    pub fn host(&self, host: &str) -> Result<Option<HostState>> {
        self.hosts
            .get(host.as_bytes())?
            .map(|v| decode("host state", &v))
            .transpose()
    }

    /// A block by CID.
    pub fn block(&self, cid: &Cid) -> Result<Option<Bytes>> {
        self.blocks
            .get(cid.to_bytes())?
            .map(|v| self.codec.decode(&v))
            .transpose()
    }

    /// The stored form of a block under this store's codec: what
    /// [`Store::write`] puts in the `blocks` keyspace. For tools and
    /// benchmarks; it writes nothing.
    pub fn encode_block_value(&self, block: &[u8]) -> Vec<u8> {
        self.codec.encode(block)
    }

    /// The block a stored value holds (the inverse of
    /// [`Store::encode_block_value`]).
    pub fn decode_block_value(&self, value: &[u8]) -> Result<Bytes> {
        self.codec.decode(value)
    }

    /// The number of the zstd dictionary new block values are compressed
    /// with, if any.
    pub fn active_dictionary(&self) -> Option<u8> {
        self.codec.active_dictionary()
    }

    /// Waits for a block dictionary being trained (see
    /// [`DictionarySource::Train`]) and starts using it. Writes never wait
    /// for training; tests and benchmarks may.
    pub fn wait_for_dictionary(&self) -> Result<()> {
        self.codec.finish_training();
        // Durable now, not with the next batch: a store closed before its
        // next write would otherwise train again.
        let active: Vec<_> = self.codec.unpersisted().into_iter().collect();
        self.persist_dictionaries(&active)
    }

    /// Makes `dicts` durable on their own (one sync), outside any batch.
    fn persist_dictionaries(&self, dicts: &[Arc<crate::codec::Dict>]) -> Result<()> {
        if dicts.is_empty() {
            return Ok(());
        }
        for d in dicts {
            self.meta.insert(dict_key(d.id), d.bytes.as_ref())?;
        }
        self.db.persist(PersistMode::SyncAll)?;
        for d in dicts {
            self.codec.persisted(d);
        }
        Ok(())
    }

    /// A stored dictionary by number.
    pub fn dictionary(&self, id: u8) -> Result<Option<Bytes>> {
        Ok(self
            .meta
            .get(dict_key(id))?
            .map(|v| Bytes::copy_from_slice(&v)))
    }

    /// Whether a block is stored.
    pub fn has_block(&self, cid: &Cid) -> Result<bool> {
        Ok(self.blocks.contains_key(cid.to_bytes())?)
    }

    /// The revision `rev` of `did`.
    pub fn revision(&self, did: &str, rev: &str) -> Result<Option<CommitEntry>> {
        self.commits
            .get(key2(did, rev))?
            .map(|v| decode("commit entry", &v))
            .transpose()
    }

    /// Every stored revision of `did`, oldest first.
    pub fn history(&self, did: &str) -> Result<Vec<CommitEntry>> {
        let mut out = Vec::new();
        for guard in self.commits.prefix(prefix(did)) {
            let v = guard.value()?;
            out.push(decode("commit entry", &v)?);
        }
        Ok(out)
    }

    /// Every stored revision in the order barn stored them: (barn seq,
    /// DID, rev).
    pub fn events(&self) -> Result<Vec<(u64, String, String)>> {
        let mut out = Vec::new();
        for guard in self.events.iter() {
            let (k, v) = guard.into_inner()?;
            let seq = <[u8; 8]>::try_from(k.as_ref()).map_err(|_| Error::Corrupt {
                what: "events key",
                detail: format!("{} bytes", k.len()),
            })?;
            let (did, rev): (String, String) = decode("event", &v)?;
            out.push((u64::from_be_bytes(seq), did, rev));
        }
        Ok(out)
    }

    /// The current record index of `did`: (path, CID) in path order.
    pub fn records(&self, did: &str) -> Result<Vec<(String, Cid)>> {
        let p = prefix(did);
        let mut out = Vec::new();
        for guard in self.records.prefix(&p) {
            let (k, v) = guard.into_inner()?;
            let path = String::from_utf8_lossy(&k[p.len()..]).into_owned();
            let cid = Cid::try_from(v.as_ref()).map_err(|e| Error::Corrupt {
                what: "record cid",
                detail: e.to_string(),
            })?;
            out.push((path, cid));
        }
        Ok(out)
    }

    /// The current record index of `did`, (path, CID) in path order, read
    /// as it goes (for repos too large to hold as a `Vec`).
    pub fn records_iter(&self, did: &str) -> impl Iterator<Item = Result<(String, Cid)>> + '_ {
        let p = prefix(did);
        let skip = p.len();
        self.records.prefix(p).map(move |guard| {
            let (k, v) = guard.into_inner()?;
            let path = String::from_utf8_lossy(&k[skip..]).into_owned();
            let cid = Cid::try_from(v.as_ref()).map_err(|e| Error::Corrupt {
                what: "record cid",
                detail: e.to_string(),
            })?;
            Ok((path, cid))
        })
    }

    /// A full repository CAR of `did` at revision `rev` (the head when
    /// `None`), rebuilt from stored blocks: the commit, every MST node,
    /// every record.
    pub fn export_car(&self, did: &str, rev: Option<&str>) -> Result<Vec<u8>> {
        let entry = match rev {
            Some(rev) => self.revision(did, rev)?,
            None => {
                let state = self.repo(did)?.ok_or_else(|| Error::NotFound(did.into()))?;
                match state.rev {
                    Some(rev) => self.revision(did, &rev)?,
                    None => None,
                }
            }
        }
        .ok_or_else(|| Error::NotFound(format!("{did} at {rev:?}")))?;
        self.write_car(&entry, Vec::new(), usize::MAX)
    }

    /// Writes the full CAR of revision `entry` into `out`, block by block
    /// (the gateway's walk: the commit, then the tree in CAR order), each
    /// record once while fewer than `dedupe_cap` have been seen. Memory
    /// stays bounded with a bounded cap, whatever the repo's size.
    pub fn write_car<W: std::io::Write>(
        &self,
        entry: &CommitEntry,
        out: W,
        dedupe_cap: usize,
    ) -> Result<W> {
        let mut w = CarWriter::new(out, &[entry.cid]).map_err(barn_repo::Error::Io)?;
        for block in
            RepoBlocks::full(StoreBlocks(self), entry.cid, entry.data).with_dedupe_cap(dedupe_cap)
        {
            let (cid, data) = block?;
            w.write_block(&cid, &data).map_err(barn_repo::Error::Io)?;
        }
        Ok(w.finish().map_err(barn_repo::Error::Io)?)
    }

    /// Bytes on disk, all keyspaces and the journal.
    pub fn disk_space(&self) -> Result<u64> {
        Ok(self.db.disk_space()?)
    }

    /// Bytes on disk per keyspace (tables only), then `journal`.
    pub fn disk_space_by_keyspace(&self) -> Result<Vec<(&'static str, u64)>> {
        let mut out: Vec<(&'static str, u64)> = self
            .keyspaces()
            .iter()
            .map(|(name, ks)| (*name, ks.disk_space()))
            .collect();
        out.push(("journal", self.db.journal_disk_space()?));
        Ok(out)
    }

    fn keyspaces(&self) -> [(&'static str, &Keyspace); 11] {
        [
            ("blobs", &self.blobs),
            ("blob_refs", &self.blob_refs),
            ("blob_queue", &self.blob_queue),
            ("ops", &self.ops),
            ("blocks", &self.blocks),
            ("commits", &self.commits),
            ("records", &self.records),
            ("repos", &self.repos),
            ("hosts", &self.hosts),
            ("events", &self.events),
            ("meta", &self.meta),
        ]
    }

    /// Maintenance, not for the live path: writes every memtable out to
    /// tables and waits (the journal can then be dropped), then compacts
    /// each keyspace fully into its last level, blocking until done. What
    /// is left is the settled on-disk form (benchmarks, offline tools).
    pub fn compact(&self) -> Result<()> {
        self.flush()?;
        for (_, ks) in self.keyspaces() {
            ks.major_compact()?;
        }
        Ok(())
    }

    /// Writes every memtable out to tables and waits for it.
    pub fn flush(&self) -> Result<()> {
        for (_, ks) in self.keyspaces() {
            ks.rotate_memtable_and_wait()?;
        }
        Ok(())
    }

    /// Number of stored blocks (approximate: LSM estimate).
    pub fn approximate_blocks(&self) -> usize {
        self.blocks.approximate_len()
    }

    /// A [`BlockSource`] over the stored blocks.
    pub fn block_source(&self) -> StoreBlocks<'_> {
        StoreBlocks(self)
    }

    /// Forces everything written so far to disk (also done by every
    /// [`Store::write`]).
    pub fn sync(&self) -> Result<()> {
        Ok(self.db.persist(PersistMode::SyncAll)?)
    }
}

/// The stored blocks as a [`BlockSource`], for walking MSTs.
#[derive(Debug, Clone, Copy)]
pub struct StoreBlocks<'a>(&'a Store);

impl BlockSource for StoreBlocks<'_> {
    fn get_block(&self, cid: &Cid) -> barn_repo::Result<Option<Bytes>> {
        self.0
            .block(cid)
            .map_err(|e| barn_repo::Error::Io(std::io::Error::other(e.to_string())))
    }
}

/// Changes to apply together: one atomic, durable write.
///
/// Later changes to the same repo state, record or host replace earlier
/// ones in the same batch, so a batch can carry many commits of one repo.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    /// In the order put, repeats included; sorted and deduplicated when
    /// written. A map kept sorted as it fills cost ~3.5 µs a commit (~10
    /// blocks each) in the live path's profile.
    pub(crate) blocks: Vec<(Cid, Bytes)>,
    pub(crate) commits: Vec<(String, CommitEntry)>,
    pub(crate) records: BTreeMap<(String, String), Option<Cid>>,
    pub(crate) repos: BTreeMap<String, RepoState>,
    pub(crate) hosts: BTreeMap<String, HostState>,
    /// `meta` keys to remove (pending marks of large revisions).
    pub(crate) meta_remove: Vec<Vec<u8>>,
    /// Blobs referenced by the batch's records (see the `blobs` module).
    pub(crate) blob_refs: BTreeMap<(String, Cid), crate::blobs::BlobHint>,
    /// Accounts whose waiting blobs are to be tried now.
    pub(crate) blob_retry: BTreeSet<String>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
            && self.commits.is_empty()
            && self.records.is_empty()
            && self.repos.is_empty()
            && self.hosts.is_empty()
            && self.meta_remove.is_empty()
            && self.blob_refs.is_empty()
            && self.blob_retry.is_empty()
    }

    /// Stores a block (content-addressed; the caller has verified its hash).
    pub fn put_block(&mut self, cid: Cid, data: Bytes) {
        self.blocks.push((cid, data));
    }

    /// Records a new revision of `did`.
    pub fn put_revision(&mut self, did: &str, entry: CommitEntry) {
        self.commits.push((did.to_owned(), entry));
    }

    /// Sets (or, with `None`, removes) a record in the current index.
    pub fn set_record(&mut self, did: &str, path: &str, cid: Option<Cid>) {
        self.records.insert((did.to_owned(), path.to_owned()), cid);
    }

    /// Sets a repo's state.
    pub fn set_repo(&mut self, did: &str, state: RepoState) {
        self.repos.insert(did.to_owned(), state);
    }

    /// The state this batch will give `did`, if it sets one.
    pub fn repo(&self, did: &str) -> Option<&RepoState> {
        self.repos.get(did)
    }

    /// Sets a host's cursor (and last-event time).
    pub fn set_host(&mut self, host: &str, state: HostState) {
        self.hosts.insert(host.to_owned(), state);
    }

    /// Revisions in the batch.
    pub fn revisions(&self) -> usize {
        self.commits.len()
    }

    /// Block bytes in the batch.
    pub fn block_bytes(&self) -> usize {
        self.blocks.iter().map(|(_, b)| b.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Arc;

    use barn_repo::cid_for_cbor;

    use super::*;

    fn blocks(n: usize, seed: u64) -> Vec<(Cid, Bytes)> {
        crate::codec::tests::sample_blocks(n, seed)
            .into_iter()
            .map(|b| (cid_for_cbor(&b), Bytes::from(b)))
            .collect()
    }

    fn opts(blocks: BlockCodec) -> StoreOptions {
        StoreOptions {
            blocks,
            ..StoreOptions::default()
        }
    }

    fn train() -> BlockCodec {
        BlockCodec::ZstdDict {
            level: 3,
            dictionary: DictionarySource::Train {
                sample_bytes: 100_000,
                max_bytes: 4096,
            },
        }
    }

    fn write(store: &Store, blocks: &[(Cid, Bytes)]) {
        let mut batch = Batch::new();
        for (cid, data) in blocks {
            batch.put_block(*cid, data.clone());
        }
        store.write(batch).unwrap();
    }

    #[test]
    fn values_written_under_each_scheme_read_back_under_every_other() {
        let dir = tempfile::tempdir().unwrap();
        let schemes = [
            BlockCodec::Raw,
            BlockCodec::Zstd { level: 1 },
            train(),
            BlockCodec::Zstd { level: 9 },
            BlockCodec::Raw,
        ];
        let mut written = Vec::new();
        for (i, scheme) in schemes.iter().enumerate() {
            let store = Store::open(dir.path(), &opts(scheme.clone())).unwrap();
            for (cid, data) in &written {
                assert_eq!(store.block(cid).unwrap().as_ref(), Some(data), "{scheme:?}");
            }
            let new = blocks(1000, i as u64);
            for chunk in new.chunks(100) {
                write(&store, chunk);
                store.wait_for_dictionary().unwrap();
            }
            written.extend(new);
            for (cid, data) in &written {
                assert_eq!(store.block(cid).unwrap().as_ref(), Some(data));
            }
        }
        // The trained dictionary was stored and is used by a later
        // dictionary store without training again.
        let store = Store::open(dir.path(), &opts(train())).unwrap();
        assert_eq!(store.active_dictionary(), Some(2));
        assert!(store.dictionary(2).unwrap().is_some());
        assert!(store.dictionary(3).unwrap().is_none());
        // Values really are compressed with it.
        let (_, data) = &written[1];
        let value = store.encode_block_value(data);
        assert_eq!(value[0], 2);
        assert!(value.len() < data.len());
    }

    #[test]
    fn a_trained_dictionary_is_durable_with_the_values_that_use_it() {
        let dir = tempfile::tempdir().unwrap();
        let written = blocks(2000, 7);
        {
            let store = Store::open(dir.path(), &opts(train())).unwrap();
            for chunk in written.chunks(200) {
                write(&store, chunk);
                store.wait_for_dictionary().unwrap();
            }
            assert_eq!(store.active_dictionary(), Some(2));
        }
        let store = Store::open(dir.path(), &opts(BlockCodec::Raw)).unwrap();
        assert_eq!(store.active_dictionary(), None);
        let mut with_dict = 0;
        for (cid, data) in &written {
            assert_eq!(store.block(cid).unwrap().as_ref(), Some(data));
            let raw = store.blocks.get(cid.to_bytes()).unwrap().unwrap();
            with_dict += usize::from(raw[0] == 2);
        }
        assert!(with_dict > 1000, "{with_dict}");
    }

    /// Blocks encoded apart from their write (as imports do, on other
    /// threads) with a dictionary installed but not yet durable bring it
    /// along when ingested; so does a write. Reopened with no dictionary
    /// configured, every block reads back.
    #[test]
    fn values_encoded_with_a_dictionary_installed_meanwhile_stay_readable() {
        let dir = tempfile::tempdir().unwrap();
        let sample = blocks(2000, 13);
        let ingested = blocks(500, 14);
        let written = blocks(500, 15);
        {
            let store = Store::open(dir.path(), &opts(train())).unwrap();
            // Enough to start training; not written.
            drop(store.encode_blocks(&sample));
            // Installed, not durable: as if another thread's observe
            // had just finished it.
            store.codec.finish_training();
            assert_eq!(store.active_dictionary(), Some(2));
            let mut encoded = store.encode_blocks(&ingested);
            assert_eq!(encoded.max_tag, 2, "encoded with the new dictionary");
            assert_eq!(encoded.len(), ingested.len());
            store.ingest_encoded(&mut encoded).unwrap();
            assert!(encoded.is_empty());
        }
        {
            let store = Store::open(dir.path(), &opts(BlockCodec::Raw)).unwrap();
            for (cid, data) in &ingested {
                assert_eq!(store.block(cid).unwrap().as_ref(), Some(data));
            }
        }
        // The same through `write`, on a fresh store.
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), &opts(train())).unwrap();
            drop(store.encode_blocks(&sample));
            store.codec.finish_training();
            write(&store, &written);
        }
        let store = Store::open(dir.path(), &opts(BlockCodec::Raw)).unwrap();
        let mut with_dict = 0;
        for (cid, data) in &written {
            assert_eq!(store.block(cid).unwrap().as_ref(), Some(data));
            with_dict += usize::from(store.blocks.get(cid.to_bytes()).unwrap().unwrap()[0] == 2);
        }
        assert!(with_dict > 250, "{with_dict}");
    }

    #[test]
    fn a_dictionary_waited_for_is_durable_without_another_write() {
        let dir = tempfile::tempdir().unwrap();
        let written = blocks(2000, 12);
        {
            let store = Store::open(dir.path(), &opts(train())).unwrap();
            write(&store, &written);
            store.wait_for_dictionary().unwrap();
            assert_eq!(store.active_dictionary(), Some(2));
        }
        let store = Store::open(dir.path(), &opts(train())).unwrap();
        assert_eq!(store.active_dictionary(), Some(2));
        for (cid, data) in &written {
            assert_eq!(store.block(cid).unwrap().as_ref(), Some(data));
        }
    }

    #[test]
    fn a_given_dictionary_is_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let train = crate::codec::tests::sample_blocks(2000, 8);
        let sizes: Vec<usize> = train.iter().map(Vec::len).collect();
        let dict: Arc<[u8]> = zstd::dict::from_continuous(&train.concat(), &sizes, 4096)
            .unwrap()
            .into();
        let given = BlockCodec::ZstdDict {
            level: 3,
            dictionary: DictionarySource::Given(dict.clone()),
        };
        let written = blocks(300, 9);
        {
            let store = Store::open(dir.path(), &opts(given.clone())).unwrap();
            write(&store, &written);
        }
        let store = Store::open(dir.path(), &opts(given)).unwrap();
        assert_eq!(store.active_dictionary(), Some(2));
        assert_eq!(store.dictionary(2).unwrap().as_deref(), Some(&dict[..]));
        assert!(store.dictionary(3).unwrap().is_none());
        for (cid, data) in &written {
            assert_eq!(store.block(cid).unwrap().as_ref(), Some(data));
        }
    }

    #[test]
    fn a_bad_block_value_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &opts(BlockCodec::Zstd { level: 3 })).unwrap();
        let (cid, data) = blocks(2, 10).remove(1);
        write(&store, &[(cid, data)]);
        let mut value = store.blocks.get(cid.to_bytes()).unwrap().unwrap().to_vec();
        assert_eq!(value[0], crate::codec::ZSTD);
        value[0] = 77;
        store.blocks.insert(cid.to_bytes(), value).unwrap();
        assert!(matches!(store.block(&cid), Err(Error::Corrupt { .. })));
        assert!(store.block_source().get_block(&cid).is_err());
        store.blocks.insert(cid.to_bytes(), []).unwrap();
        assert!(matches!(store.block(&cid), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn a_store_from_before_value_headers_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Database::builder(dir.path()).open().unwrap();
            let ks = db
                .keyspace("blocks", KeyspaceCreateOptions::default)
                .unwrap();
            ks.insert([1u8; 36], [0xa0]).unwrap();
            db.persist(PersistMode::SyncAll).unwrap();
        }
        let err = Store::open(dir.path(), &StoreOptions::default()).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Corrupt {
                    what: "store format",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn compact_keeps_everything_readable() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &opts(BlockCodec::Zstd { level: 3 })).unwrap();
        let written = blocks(500, 11);
        write(&store, &written);
        store.compact().unwrap();
        assert!(store.disk_space().unwrap() > 0);
        for (cid, data) in &written {
            assert_eq!(store.block(cid).unwrap().as_ref(), Some(data));
        }
    }
}
