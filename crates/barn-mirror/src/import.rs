//! Whole-repo imports: `getRepo` → verify → store. Every path that has to
//! take a repo's state from its host rather than from the stream ends here:
//! the first backfill of an account, a resync after a desync, a `#sync`,
//! an account that moved in, and a reconcile that found a difference.
//!
//! # Tricky bits
//! - An import writes blocks (ingested into new tables, durable batch by
//!   batch), then the record
//!   index changes and the ops in chunks with an undo log, then the
//!   revision (barn-store's `LargeRevision`); never the repo's state: the
//!   host task owns that and sets the new head when the import reports
//!   back. A failed check or a crash half-way puts the index back. While an import
//!   runs, the host task buffers the repo's commits and writes no records
//!   for it, so the record index the import diffs against cannot move.
//! - A crash between the import's batch and the host task's leaves the
//!   repo desynchronized with its old head; the next import finds the
//!   revision already stored and does not write it twice.
//! - With a head in hand, barn asks `getRepo?since=<its rev>`. The
//!   reference PDS answers with the blocks stored after that rev (not a
//!   tree order, and possibly a superset); the tree is verified over those
//!   blocks layered on barn's store. When that is not enough (a PDS that
//!   reset, or answers something else), the import falls back to the full
//!   repo.
//! - The revision's ops are the difference between the record index and
//!   the fetched tree, deletes included: a reconcile records what the
//!   firehose missed, not just what was added.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender};

use bytes::Bytes;
use cid::Cid;
use futures_util::StreamExt;
use tokio::io::AsyncRead;
use tokio::sync::mpsc;

use barn_identity::Identity;
use barn_repo::BlockMap;
use barn_repo::blocks::Layered;
use barn_repo::car::{CarLimits, CarStream};
use barn_repo::commit::Commit;
use barn_repo::crypto::PublicKey;
use barn_repo::mst::{MstWalker, looks_like_node};
use barn_store::{CommitEntry, EncodedBlocks, Op, OpAction, RepoState, Source, Store, now_ms};

use crate::error::{Error, Result};
use crate::mirror::{Inner, normalize_host};
use crate::verify::Head;

/// The DAG-CBOR codec: every block of a repository.
const DAG_CBOR: u64 = 0x71;

/// One import to run.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub did: String,
    pub source: Source,
    pub reason: String,
    /// barn's state of the repo when the import started.
    pub state: RepoState,
}

/// How an import ended (failures are errors).
// One per import, moved once: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The host's repo is verified and stored: `head` is its head, `label`
    /// says whether it was new (`imported`), barn's own head
    /// (`unchanged`) or older than barn's (`older`, kept as is).
    Stored {
        label: &'static str,
        head: Head,
        handle: Option<String>,
        /// `full` or `since`: what was fetched.
        fetch: &'static str,
    },
    /// The host answers that the account cannot be served.
    Inactive { status: &'static str, error: String },
    /// The DID document names another host.
    Moved { pds: String },
}

/// Runs `job` for a repo of `host`.
pub(crate) async fn run(inner: &Arc<Inner>, host: &str, job: &Job) -> Result<Outcome> {
    let did = job.did.as_str();
    let id = inner.resolver.refresh(did).await?;
    let pds = pds_of(&id)?;
    if pds != normalize_host(host) {
        return Ok(Outcome::Moved { pds });
    }
    let since = job.state.rev.clone().filter(|_| job.state.data.is_some());
    if let Some(since) = since {
        match fetch_and_store(inner, &pds, job, &id, Some(&since)).await {
            Err(Error::Repo { source, .. }) => {
                tracing::info!(%did, %since, error = %source, "getRepo since barn's rev did not verify; fetching the whole repo");
            }
            other => return other,
        }
    }
    fetch_and_store(inner, &pds, job, &id, None).await
}

/// The PDS a DID document names, normalized; an error when it names none.
pub(crate) fn pds_of(id: &Identity) -> Result<String> {
    id.pds
        .as_deref()
        .map(normalize_host)
        .ok_or_else(|| Error::Fetch {
            url: id.did.clone(),
            message: "the DID document names no PDS".into(),
            xrpc_error: None,
        })
}

async fn fetch_and_store(
    inner: &Arc<Inner>,
    pds: &str,
    job: &Job,
    id: &Arc<Identity>,
    since: Option<&str>,
) -> Result<Outcome> {
    let resp = match fetch(inner, pds, &job.did, since).await {
        Ok(resp) => resp,
        Err(Error::Fetch {
            xrpc_error: Some(name),
            message,
            ..
        }) if matches!(
            name.as_str(),
            "RepoNotFound" | "RepoDeactivated" | "RepoTakendown" | "RepoSuspended"
        ) =>
        {
            let status = match name.as_str() {
                "RepoNotFound" => "deleted",
                "RepoDeactivated" => "deactivated",
                "RepoTakendown" => "takendown",
                _ => "suspended",
            };
            tracing::debug!(did = %job.did, %name, %message, "host will not serve the repo");
            return Ok(Outcome::Inactive {
                status,
                error: name,
            });
        }
        Err(e) => return Err(e),
    };
    let body = resp
        .bytes_stream()
        .map(|r| r.map_err(std::io::Error::other));
    let reader = tokio_util::io::StreamReader::new(body);
    let request = ImportRequest {
        did: job.did.clone(),
        key: id.signing_key.clone(),
        state: job.state.clone(),
        source: job.source,
        reason: job.reason.clone(),
    };
    let limits = ImportLimits {
        max_bytes: inner.config.max_repo_bytes,
        ..ImportLimits::default()
    };
    let report = import_car(inner.store.clone(), request, reader, limits).await?;
    if report.unreadable_records > 0 {
        // Each was logged as it streamed by.
        inner
            .metrics
            .unreadable_records(pds, report.unreadable_records);
    }
    Ok(Outcome::Stored {
        label: report.label,
        head: report.head,
        handle: id.handle.clone(),
        fetch: if since.is_some() { "since" } else { "full" },
    })
}

/// `GET getRepo`: the response, once its status says a CAR follows.
async fn fetch(
    inner: &Arc<Inner>,
    pds: &str,
    did: &str,
    since: Option<&str>,
) -> Result<reqwest::Response> {
    let url = format!(
        "{}/xrpc/com.atproto.sync.getRepo",
        pds.trim_end_matches('/')
    );
    let mut query = vec![("did", did)];
    if let Some(since) = since {
        query.push(("since", since));
    }
    let resp = crate::http::get_ok(inner, &url, &query, None).await?;
    let limit = inner.config.max_repo_bytes;
    if let Some(len) = resp.content_length()
        && len > limit
    {
        return Err(Error::Fetch {
            url,
            message: format!("repo of {len} bytes is over the limit of {limit}"),
            xrpc_error: None,
        });
    }
    Ok(resp)
}

/// Limits and buffer sizes of one import.
#[derive(Debug, Clone)]
pub struct ImportLimits {
    /// Largest CAR accepted, in bytes.
    pub max_bytes: u64,
    /// Blocks are written to the store (ingested into new tables) in
    /// batches of this many bytes (before encoding), or up to four times
    /// that while fjall compacts a full level 0. About as many bytes again
    /// wait in the queues between the stages of an import.
    pub spill_bytes: usize,
    /// MST node bytes kept in memory for the walk; past that, nodes are
    /// read back from the store. The default, 128 MiB, holds the tree of a
    /// repo of about a million records (that of the import bench's
    /// 1.05M-record repo is between 64 and 128 MiB); it only fills for
    /// repos that large, and reading nodes back instead fills the store's
    /// block cache, so the import's peak memory was lower with it, not
    /// higher (`benches/README.md`, "Import").
    pub node_cache_bytes: usize,
    /// Record CIDs remembered from the stream (16 bytes each, and as much
    /// again while the tree walk checks presence at its end) to check that
    /// every record the tree names was in it; past that, presence is
    /// checked in the store.
    pub max_seen_records: usize,
}

impl Default for ImportLimits {
    fn default() -> Self {
        ImportLimits {
            max_bytes: 1 << 30,
            spill_bytes: 16 << 20,
            node_cache_bytes: 128 << 20,
            max_seen_records: 4 << 20,
        }
    }
}

/// One repo to import.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    /// The repo's DID.
    pub did: String,
    /// The account's signing key, from its DID document.
    pub key: PublicKey,
    /// barn's state of the repo before the import (its head is the base of
    /// the diff; its host is recorded with the revision).
    pub state: RepoState,
    /// What the revision is recorded as.
    pub source: Source,
    /// Why, recorded with the revision.
    pub reason: String,
}

/// What an import found and stored.
#[derive(Debug, Clone)]
pub struct ImportReport {
    /// `imported` (a new revision), `unchanged` (barn's own head) or
    /// `older` (older than barn's head, which is kept).
    pub label: &'static str,
    /// The CAR's head.
    pub head: Head,
    /// Blocks read from the CAR.
    pub blocks: u64,
    /// Bytes of blocks read from the CAR.
    pub bytes: u64,
    /// Records in the tree.
    pub records: u64,
    /// Ops of the revision (creates, updates, deletes).
    pub ops: usize,
    /// Records whose blob refs could not be read (stored as they are).
    pub unreadable_records: u64,
    /// Time to read, check and spill every block (until the last is
    /// durable).
    pub spill_time: std::time::Duration,
    /// Time to check the commit and walk the tree, then write the record
    /// index and the revision.
    pub finish_time: std::time::Duration,
}

/// What the spill stage keeps for the walk.
struct Spilled {
    commit: Option<Bytes>,
    nodes: BlockMap,
    /// First 16 bytes of the hash of every other block, sorted.
    /// Past `max_seen_records`, presence is checked in the store.
    seen: Seen,
    blocks: u64,
    bytes: u64,
    /// Blob refs of the records streamed by. A block the tree does not
    /// name contributes too: the refs only ever make barn try to fetch a
    /// blob through this account, which at worst records it missing.
    blob_refs: Vec<barn_repo::data::BlobRef>,
    /// Records whose blob refs could not be read (stored as they are).
    unreadable: u64,
}

/// Imports a repository CAR read from `reader`: every block hash-checked
/// and written to the store as it streams by (in batches, not waiting for
/// the disk), then the commit (DID, signature) and the whole tree checked
/// over those blocks and barn's, and the difference from barn's record
/// index stored as one revision. Memory holds the MST nodes (up to
/// `node_cache_bytes`) and 16 bytes per record, 32 during the walk (up to
/// `max_seen_records`),
/// a few chunks of blocks and ops; not the CAR, not the op list.
///
/// A CAR answering `getRepo?since=` holds only what changed: the rest of
/// the tree must already be in the store, or the import fails with a
/// missing block.
pub async fn import_car<R>(
    store: Arc<Store>,
    request: ImportRequest,
    reader: R,
    limits: ImportLimits,
) -> Result<ImportReport>
where
    R: AsyncRead + Unpin + Send,
{
    let repo_err = |e: barn_repo::Error| Error::Repo {
        did: request.did.clone(),
        source: Box::new(e),
    };
    let car_limits = CarLimits {
        max_total_bytes: limits.max_bytes,
        ..CarLimits::default()
    };
    let started = std::time::Instant::now();
    let mut car = CarStream::new(reader, car_limits).await.map_err(repo_err)?;
    let root = *car
        .roots()
        .first()
        .ok_or_else(|| repo_err(barn_repo::Error::CarHeader("no root".into())))?;

    // Stage 1 (here): read and hash-check; stage 2 (a blocking thread):
    // check, classify and spill. A few MiB in between.
    let (tx, rx) = mpsc::channel::<SpillBatch>(4);
    // The encoders hand emptied chunks back: a new vector for every chunk,
    // grown by doubling, cost ~2% of an import's CPU in copies and in the
    // kernel zeroing the fresh pages.
    let (recycle, recycled) = crossbeam_channel::bounded::<SpillBatch>(ENCODE_QUEUE + ENCODERS);
    let spill = {
        let store = store.clone();
        let did = request.did.clone();
        let limits = limits.clone();
        tokio::task::spawn_blocking(move || spill(&store, &did, root, rx, recycle, &limits))
    };
    let mut chunk = Vec::new();
    let mut chunk_bytes = 0usize;
    let read: std::result::Result<(), barn_repo::Error> = loop {
        match car.next_block().await {
            Ok(Some((cid, data))) => {
                chunk_bytes += data.len();
                chunk.push((cid, data));
                if chunk_bytes >= READ_CHUNK_BYTES {
                    chunk_bytes = 0;
                    let next = recycled
                        .try_recv()
                        .unwrap_or_else(|_| Vec::with_capacity(chunk.len() + chunk.len() / 4));
                    if tx.send(std::mem::replace(&mut chunk, next)).await.is_err() {
                        // The spill stage stopped; its error says why.
                        break Ok(());
                    }
                }
            }
            Ok(None) => {
                let _ = tx.send(chunk).await;
                break Ok(());
            }
            Err(e) => break Err(e),
        }
    };
    drop(tx);
    let spilled = spill.await.map_err(|e| Error::Task(e.to_string()))?;
    read.map_err(repo_err)?;
    let spilled = spilled?;
    let spill_time = started.elapsed();
    let mut report = tokio::task::spawn_blocking(move || finish(&store, &request, root, spilled))
        .await
        .map_err(|e| Error::Task(e.to_string()))??;
    report.spill_time = spill_time;
    report.finish_time = started.elapsed() - spill_time;
    Ok(report)
}

fn hash_prefix(cid: &Cid) -> u128 {
    let d = cid.hash().digest();
    let mut b = [0u8; 16];
    let n = d.len().min(16);
    b[..n].copy_from_slice(&d[..n]);
    u128::from_be_bytes(b)
}

/// Hash prefixes of the record blocks streamed by, for the walk's
/// presence check: sorted, with the start of each run of equal top 16
/// bits, so a lookup costs two cache misses instead of twenty (hashes are
/// uniform).
#[derive(Default)]
struct Seen {
    hashes: Vec<u128>,
    /// `starts[t]`: index of the first hash whose top 16 bits are ≥ `t`.
    starts: Vec<u32>,
    /// Some record blocks were left out (past `max_seen_records`).
    truncated: bool,
}

impl Seen {
    fn index(&mut self) {
        self.hashes.sort_unstable();
        self.starts = Vec::with_capacity(1 << 16 | 1);
        let mut i = 0usize;
        for top in 0..=(1u32 << 16) {
            while i < self.hashes.len() && ((self.hashes[i] >> 112) as u32) < top {
                i += 1;
            }
            self.starts.push(i as u32);
        }
    }

    fn contains(&self, hash: u128) -> bool {
        let top = (hash >> 112) as usize;
        match (self.starts.get(top), self.starts.get(top + 1)) {
            (Some(&a), Some(&b)) => self.hashes[a as usize..b as usize]
                .binary_search(&hash)
                .is_ok(),
            _ => false,
        }
    }
}

/// Blocks as read, handed on from stage to stage of the spill: one chunk
/// of about [`READ_CHUNK_BYTES`].
type SpillBatch = Vec<(Cid, Bytes)>;

/// Bytes of blocks the reading stage gathers before handing them on.
const READ_CHUNK_BYTES: usize = 1 << 20;

/// Threads encoding (compressing) blocks while the writer writes the ones
/// encoded before: record compression is the largest cost of an import.
const ENCODERS: usize = 2;
/// Read chunks waiting for an encoder.
const ENCODE_QUEUE: usize = 4;
/// Spill batches the block writer may gather while fjall compacts a full
/// level 0, before it waits too. Once per ~1M-record import the wait
/// lasted ~0.3 s with one core idle (`benches/README.md`, "Import").
const STALLED_BATCHES: usize = 4;

/// Stage 2 of an import: checks every block (on this thread), encodes them
/// on [`ENCODERS`] threads and writes them on another, so that checking,
/// compressing and writing (with its fsync) overlap instead of taking
/// turns. Returns once every block is durable.
fn spill(
    store: &Store,
    did: &str,
    root: Cid,
    mut rx: mpsc::Receiver<SpillBatch>,
    recycle: crossbeam_channel::Sender<SpillBatch>,
    limits: &ImportLimits,
) -> Result<Spilled> {
    let repo_err = |e: barn_repo::Error| Error::Repo {
        did: did.to_owned(),
        source: Box::new(e),
    };
    let mut out = Spilled {
        commit: None,
        nodes: BlockMap::new(),
        seen: Seen::default(),
        blocks: 0,
        bytes: 0,
        blob_refs: Vec::new(),
        unreadable: 0,
    };
    let (to_encoders, chunks) = crossbeam_channel::bounded::<SpillBatch>(ENCODE_QUEUE);
    // Room for one batch's worth of encoded chunks: the encoders go on
    // while the writer ingests the batch before.
    let write_queue = (limits.spill_bytes / READ_CHUNK_BYTES).max(1);
    let (to_writer, encoded) = crossbeam_channel::bounded::<EncodedBlocks>(write_queue);
    std::thread::scope(|scope| {
        let spill_bytes = limits.spill_bytes;
        let writer = spawn_named(scope, "import-blocks", move || -> Result<()> {
            let mut pending = EncodedBlocks::default();
            for mut e in encoded {
                pending.append(&mut e);
                let raw = pending.raw_bytes();
                // While fjall compacts a full level 0, the batch grows
                // (up to a bound) instead of the writer waiting: the
                // encoders and the checker, which would wait behind it,
                // go on using the cores.
                if raw >= spill_bytes
                    && (raw >= spill_bytes * STALLED_BATCHES || !store.ingest_would_wait())
                {
                    store.ingest_encoded(&mut pending)?;
                }
            }
            // Ingested blocks are durable when the writer is done with
            // them: the revision written next may refer to them.
            store.ingest_encoded(&mut pending)?;
            Ok(())
        })?;
        let mut encoders = Vec::with_capacity(ENCODERS);
        for _ in 0..ENCODERS {
            let chunks = chunks.clone();
            let to_writer = to_writer.clone();
            let recycle = recycle.clone();
            encoders.push(spawn_named(scope, "import-encode", move || {
                for mut chunk in chunks {
                    // A writer that stopped takes nothing more; its error
                    // says why.
                    if to_writer.send(store.encode_blocks(&chunk)).is_err() {
                        break;
                    }
                    chunk.clear();
                    // Full when the reader has enough: then it is freed.
                    let _ = recycle.try_send(chunk);
                }
            })?);
        }
        // The stages' own ends only: a stage that stops closes its
        // channels, and the stage before it sees that and stops too.
        drop((chunks, to_writer));
        let checked = check_blocks(root, &mut rx, limits, &mut out, &to_encoders, &repo_err);
        drop(to_encoders);
        let mut panicked = false;
        for e in encoders {
            panicked |= e.join().is_err();
        }
        let written = writer
            .join()
            .map_err(|_| Error::Task("block writer panicked".into()))?;
        if panicked {
            return Err(Error::Task("block encoder panicked".into()));
        }
        // A writer that failed stops taking blocks: its error says why.
        written?;
        checked
    })?;
    out.seen.index();
    Ok(out)
}

/// The checking part of [`spill`]: DAG-CBOR, commit / node / record,
/// chunks handed on to the encoders. Stops early (`Ok`) if they are gone.
fn check_blocks(
    root: Cid,
    rx: &mut mpsc::Receiver<SpillBatch>,
    limits: &ImportLimits,
    out: &mut Spilled,
    encoders: &crossbeam_channel::Sender<SpillBatch>,
    repo_err: &dyn Fn(barn_repo::Error) -> Error,
) -> Result<()> {
    let mut node_bytes = 0usize;
    while let Some(chunk) = rx.blocking_recv() {
        for (cid, data) in &chunk {
            // Every block of a repo is DAG-CBOR: commit, nodes, records.
            if cid.codec() != DAG_CBOR {
                return Err(repo_err(barn_repo::Error::UnsupportedCid {
                    cid: *cid,
                    reason: "repository blocks are DAG-CBOR",
                }));
            }
            barn_repo::cbor::validate(data).map_err(|e| repo_err(e.into()))?;
            if *cid == root {
                out.commit = Some(data.clone());
            } else if looks_like_node(data) {
                if node_bytes + data.len() <= limits.node_cache_bytes {
                    node_bytes += data.len();
                    out.nodes.insert(*cid, data.clone());
                }
            } else {
                if out.seen.hashes.len() < limits.max_seen_records {
                    out.seen.hashes.push(hash_prefix(cid));
                } else {
                    out.seen.truncated = true;
                }
                match barn_repo::data::record_blobs(data) {
                    Ok(refs) => out.blob_refs.extend(refs),
                    Err(e) => {
                        out.unreadable += 1;
                        tracing::warn!(%cid, error = %e, "record stored, but its blob refs are unreadable");
                    }
                }
            }
            out.blocks += 1;
            out.bytes += data.len() as u64;
        }
        if encoders.send(chunk).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// Records (or ops) per chunk handed from the tree walk to the merge, and
/// from the merge to the revision's writer.
const WALK_CHUNK: usize = 4096;
/// Chunks either may run ahead of the thread after it.
const WALK_QUEUE: usize = 8;

type Walked = Result<Vec<(String, Cid)>>;

/// The walking half of [`finish`]: every record of the tree at `data`, in
/// key order, checked present, sent in chunks. An error is sent as the
/// last item; a closed channel (the merge stopped) ends the walk.
///
/// Presence: a record must be among the blocks the CAR held (`seen`) or
/// already in the store. Looking each one up in `seen` as it is walked
/// costs a few cache misses a record, a third of the walk's time on a 1M
/// record import, and the walk is the longest thread of the finish. So
/// when the first chunk's records were all in `seen` (a full CAR, not
/// the answer to `getRepo?since=`) and `seen` holds every record block,
/// the rest are checked at the end: their hash prefixes sorted and
/// merged with `seen`'s, in one pass over each. Any not found there are
/// looked for in the store in a second walk; their error, like any other,
/// reaches the merge before the revision is committed.
fn walk_tree<S: barn_repo::blocks::BlockSource>(
    store: &Store,
    blocks: S,
    data: &Cid,
    seen: &Seen,
    tx: SyncSender<Walked>,
    repo_err: &(dyn Fn(barn_repo::Error) -> Error + Sync),
) {
    let walk = || -> Result<()> {
        let mut chunk = Vec::with_capacity(WALK_CHUNK);
        let mut deferred: Option<Vec<u128>> = None;
        let mut all_seen = !seen.truncated;
        for item in MstWalker::new(&blocks, data).map_err(repo_err)? {
            let (key, cid) = item.map_err(repo_err)?;
            let prefix = hash_prefix(&cid);
            match &mut deferred {
                Some(later) => later.push(prefix),
                None => {
                    let in_car = seen.contains(prefix);
                    all_seen &= in_car;
                    if !in_car && !store.has_block(&cid)? {
                        return Err(repo_err(barn_repo::Error::MissingBlock(cid)));
                    }
                }
            }
            let path = String::from_utf8(key)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
            chunk.push((path, cid));
            if chunk.len() == WALK_CHUNK {
                if deferred.is_none() && all_seen {
                    deferred = Some(Vec::with_capacity(seen.hashes.len()));
                }
                let next = Vec::with_capacity(WALK_CHUNK);
                if tx.send(Ok(std::mem::replace(&mut chunk, next))).is_err() {
                    return Ok(());
                }
            }
        }
        if let Some(later) = deferred {
            check_present(store, &blocks, data, seen, later, repo_err)?;
        }
        let _ = tx.send(Ok(chunk));
        Ok(())
    };
    if let Err(e) = walk() {
        let _ = tx.send(Err(e));
    }
}

/// The deferred half of [`walk_tree`]'s presence check: every hash prefix
/// in `later` must be in `seen` or, found again by walking the tree, its
/// block in the store.
fn check_present<S: barn_repo::blocks::BlockSource>(
    store: &Store,
    blocks: &S,
    data: &Cid,
    seen: &Seen,
    mut later: Vec<u128>,
    repo_err: &(dyn Fn(barn_repo::Error) -> Error + Sync),
) -> Result<()> {
    later.sort_unstable();
    let mut known = seen.hashes.iter().peekable();
    later.retain(|h| {
        while known.next_if(|k| *k < h).is_some() {}
        known.peek() != Some(&h)
    });
    if later.is_empty() {
        return Ok(());
    }
    for item in MstWalker::new(blocks, data).map_err(repo_err)? {
        let (_, cid) = item.map_err(repo_err)?;
        if later.binary_search(&hash_prefix(&cid)).is_ok() && !store.has_block(&cid)? {
            return Err(repo_err(barn_repo::Error::MissingBlock(cid)));
        }
    }
    Ok(())
}

/// The merging part of [`finish`]: merges the walked records with the
/// repo's record index (both in key order) into creates, updates and
/// deletes, sent in chunks to the revision's writer. Returns the number of
/// records walked; stops early (`Ok`) if the writer is gone.
fn merge_ops(
    store: &Store,
    did: &str,
    walked: Receiver<Walked>,
    out: SyncSender<Vec<Op>>,
) -> Result<u64> {
    let mut current = store.records_iter(did);
    let mut cur = current.next().transpose()?;
    let mut records = 0u64;
    let mut ops = Vec::with_capacity(WALK_CHUNK);
    let send = |ops: &mut Vec<Op>| -> bool {
        ops.len() < WALK_CHUNK
            || out
                .send(std::mem::replace(ops, Vec::with_capacity(WALK_CHUNK)))
                .is_ok()
    };
    for chunk in walked {
        let chunk = chunk?;
        records += chunk.len() as u64;
        for (path, cid) in chunk {
            while let Some((p, old)) = cur.take_if(|(p, _)| *p < path) {
                ops.push(delete(p, old));
                cur = current.next().transpose()?;
                // A tree that lost most of its records: the deletes
                // between two walked records are not bounded by a chunk.
                if !send(&mut ops) {
                    return Ok(records);
                }
            }
            match cur.take_if(|(p, _)| *p == path) {
                Some((_, old)) => {
                    if old != cid {
                        ops.push(Op {
                            action: OpAction::Update,
                            path,
                            cid: Some(cid),
                            prev: Some(old),
                        });
                    }
                    cur = current.next().transpose()?;
                }
                None => ops.push(Op::create(path, cid)),
            }
        }
        if !send(&mut ops) {
            return Ok(records);
        }
    }
    while let Some((p, old)) = cur {
        ops.push(delete(p, old));
        cur = current.next().transpose()?;
        if !send(&mut ops) {
            return Ok(records);
        }
    }
    let _ = out.send(ops);
    Ok(records)
}

/// Starts one of an import's threads, named so that `top -H` and profiles
/// tell them apart.
fn spawn_named<'s, T: Send + 's>(
    scope: &'s std::thread::Scope<'s, '_>,
    name: &str,
    f: impl FnOnce() -> T + Send + 's,
) -> Result<std::thread::ScopedJoinHandle<'s, T>> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn_scoped(scope, f)
        .map_err(|e| Error::Task(format!("cannot start thread {name}: {e}")))
}

/// The op removing a record the tree no longer has.
fn delete(path: String, old: Cid) -> Op {
    Op {
        action: OpAction::Delete,
        path,
        cid: None,
        prev: Some(old),
    }
}

/// Checks the commit and the tree, and stores the revision (blocking).
fn finish(store: &Store, req: &ImportRequest, root: Cid, spilled: Spilled) -> Result<ImportReport> {
    let did = req.did.as_str();
    let repo_err = |e: barn_repo::Error| Error::Repo {
        did: did.to_owned(),
        source: Box::new(e),
    };
    let commit_bytes = match spilled.commit {
        Some(b) => b,
        None => store
            .block(&root)?
            .ok_or_else(|| repo_err(barn_repo::Error::MissingBlock(root)))?,
    };
    let commit = Commit::decode(&commit_bytes).map_err(repo_err)?;
    if commit.did != did {
        return Err(repo_err(barn_repo::Error::Commit(format!(
            "commit is for {}, expected {did}",
            commit.did
        ))));
    }
    commit.verify_signature(&req.key).map_err(repo_err)?;
    let head = Head {
        rev: commit.rev.clone(),
        cid: root,
        data: commit.data,
    };
    let report = |label, records, ops| ImportReport {
        label,
        head: head.clone(),
        blocks: spilled.blocks,
        bytes: spilled.bytes,
        records,
        ops,
        unreadable_records: spilled.unreadable,
        spill_time: Default::default(),
        finish_time: Default::default(),
    };
    if req.state.head == Some(root) {
        return Ok(report("unchanged", 0, 0));
    }
    if req
        .state
        .rev
        .as_deref()
        .is_some_and(|r| head.rev.as_str() <= r)
    {
        // The host serves an older revision than barn holds: keep barn's.
        return Ok(report("older", 0, 0));
    }
    if store.revision(did, &head.rev)?.is_some() {
        // Written by an earlier run of this import that crashed before
        // the host task moved the head.
        return Ok(report("imported", 0, 0));
    }

    // The full walk checks every node (layers, key order, canonical
    // shape); each record must be in the CAR or already in the store.
    // Merged with the record index, in key order, it gives the ops. Three
    // threads hand chunks to each other: the walk, the merge, and the
    // revision's writer, whose every group ends with syncing tables; the
    // others go on meanwhile.
    let blocks = Layered {
        first: &spilled.nodes,
        second: store.block_source(),
    };
    // The ops go to the store in chunks as they are found, applied to the
    // record index with an undo log: an error below (a missing block, a
    // bad node) drops `revision`, which puts the index back.
    // A first import (nothing in the record index): every op is a create
    // of a record of the tree, which `revision_ops` reads back from the
    // tree, so the ops are not stored again.
    let mut revision = if store.records_iter(did).next().transpose()?.is_none() {
        store.large_revision_of_tree(did, &head.rev)?
    } else {
        store.large_revision(did, &head.rev)
    };
    let records = std::thread::scope(|scope| -> Result<u64> {
        let (tx, rx) = std::sync::mpsc::sync_channel(WALK_QUEUE);
        let walker = spawn_named(scope, "import-walk", || {
            walk_tree(store, blocks, &commit.data, &spilled.seen, tx, &repo_err)
        })?;
        let (to_writer, ops) = std::sync::mpsc::sync_channel::<Vec<Op>>(WALK_QUEUE);
        let revision = &mut revision;
        let writer = spawn_named(scope, "import-ops", move || -> Result<()> {
            for chunk in ops {
                for op in chunk {
                    revision.push(op)?;
                }
            }
            Ok(())
        })?;
        let merged = merge_ops(store, did, rx, to_writer);
        let written = writer
            .join()
            .map_err(|_| Error::Task("op writer panicked".into()))?;
        walker
            .join()
            .map_err(|_| Error::Task("tree walker panicked".into()))?;
        // A writer that failed stops taking ops: its error says why.
        written?;
        merged
    })?;
    for r in &spilled.blob_refs {
        revision.add_blob_ref(r.cid, crate::mirror::blob_hint(r));
    }
    let n_ops = revision.counts().total() as usize;
    revision.commit(CommitEntry {
        rev: head.rev.clone(),
        cid: root,
        data: head.data,
        since: req.state.rev.clone(),
        seen_at_ms: now_ms(),
        source: req.source,
        seq: None,
        host: normalize_host(&req.state.host),
        ops: Vec::new(),
        reason: Some(req.reason.clone()),
        chunked: None,
    })?;
    Ok(report("imported", records, n_ops))
}
