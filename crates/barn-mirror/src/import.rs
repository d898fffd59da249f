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
use barn_repo::mst::{MstWalker, WalkItem};
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
    let fetch_err = |message: String, xrpc_error: Option<String>| Error::Fetch {
        url: url.clone(),
        message,
        xrpc_error,
    };
    let mut query = vec![("did", did)];
    if let Some(since) = since {
        query.push(("since", since));
    }
    let resp = inner
        .http
        .get(&url)
        .query(&query)
        .send()
        .await
        .map_err(|e| fetch_err(e.to_string(), None))?;
    let status = resp.status();
    let limit = inner.config.max_repo_bytes;
    if let Some(len) = resp.content_length()
        && len > limit
    {
        return Err(fetch_err(
            format!("repo of {len} bytes is over the limit of {limit}"),
            None,
        ));
    }
    if !status.is_success() {
        // An error body is small; anything past 64 KiB is not one.
        let body = crate::http::read_limited(resp, 64 << 10)
            .await
            .unwrap_or_default();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let name = json["error"].as_str().map(str::to_owned);
        return Err(fetch_err(
            format!("{status}: {}", String::from_utf8_lossy(&body)),
            name,
        ));
    }
    Ok(resp)
}

/// Limits and buffer sizes of one import.
#[derive(Debug, Clone)]
pub struct ImportLimits {
    /// Largest CAR accepted, in bytes.
    pub max_bytes: u64,
    /// Blocks are written to the store (ingested into new tables) in
    /// batches of this many bytes (before encoding). About as many bytes
    /// again wait in the queues between the stages of an import.
    pub spill_bytes: usize,
    /// MST node bytes kept in memory for the walk; past that, nodes are
    /// read back from the store. The default, 128 MiB, holds the tree of a
    /// repo of about a million records (that of the import bench's
    /// 1.05M-record repo is between 64 and 128 MiB); it only fills for
    /// repos that large, and reading nodes back instead fills the store's
    /// block cache, so the import's peak memory was lower with it, not
    /// higher (`benches/README.md`, "Import").
    pub node_cache_bytes: usize,
    /// Record CIDs remembered from the stream (16 bytes each) to check
    /// that every record the tree names was in it; past that, presence is
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
/// `node_cache_bytes`) and 16 bytes per record (up to `max_seen_records`),
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
    let spill = {
        let store = store.clone();
        let did = request.did.clone();
        let limits = limits.clone();
        tokio::task::spawn_blocking(move || spill(&store, &did, root, rx, &limits))
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
                    if tx.send(std::mem::take(&mut chunk)).await.is_err() {
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

/// A canonical MST node is a DAG-CBOR map of exactly `e` then `l`; a
/// record always has `$type`, so it can never start like this.
fn looks_like_node(data: &[u8]) -> bool {
    data.starts_with(&[0xa2, 0x61, b'e'])
}

/// Stage 2 of an import: checks every block (on this thread), encodes them
/// on [`ENCODERS`] threads and writes them on another, so that checking,
/// compressing and writing (with its fsync) overlap instead of taking
/// turns. Returns once every block is durable.
fn spill(
    store: &Store,
    did: &str,
    root: Cid,
    mut rx: mpsc::Receiver<SpillBatch>,
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
                if pending.raw_bytes() >= spill_bytes {
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
            encoders.push(spawn_named(scope, "import-encode", move || {
                for chunk in chunks {
                    // A writer that stopped takes nothing more; its error
                    // says why.
                    if to_writer.send(store.encode_blocks(&chunk)).is_err() {
                        break;
                    }
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

/// Threads walking the tree. The walk (a SHA-256 of every key for its
/// layer, decoding every node, the presence check) is the longest part of
/// an import's finish; two walkers take the subtrees in turns.
const WALKERS: usize = 2;
/// The walkers' units are the subtrees this many layers below the root
/// (~4^4 = 256 of them: an MST node has four children on average)...
const UNIT_DEPTH: u32 = 4;
/// ...but none on a layer below this one (~4^5 = 1,024 records): a tree
/// whose root is no higher is walked whole, by one walker.
const MIN_UNIT_LAYER: u32 = 5;

/// A walker's unit: the whole tree (`None`), or a subtree and its layer.
type Unit = Option<(Cid, u32)>;

/// What the merge takes next, in key order.
enum Step {
    /// A record in a node above the units (seen while planning).
    Leaf(String, Cid),
    /// Everything the given walker sends for its next unit.
    Unit(usize),
}

/// The walk cut into units: the steps in key order, and each walker's
/// units in the order the merge will want them.
#[derive(Default)]
struct WalkPlan {
    steps: Vec<Step>,
    units: [Vec<Unit>; WALKERS],
}

/// Walks the top of the tree at `data` down to the units' layer (checking
/// those nodes fully), dealing the units out to the walkers in turn. Its
/// size depends on [`UNIT_DEPTH`], not on the tree's.
fn plan_walk<S: barn_repo::blocks::BlockSource>(
    blocks: S,
    data: &Cid,
) -> barn_repo::Result<WalkPlan> {
    let mut w = MstWalker::new(blocks, data)?;
    let mut plan = WalkPlan::default();
    let Some(top) = w.layer() else {
        return Ok(plan); // the empty tree
    };
    if top <= MIN_UNIT_LAYER {
        plan.units[0].push(None);
        plan.steps.push(Step::Unit(0));
        return Ok(plan);
    }
    let units_layer = top.saturating_sub(UNIT_DEPTH).max(MIN_UNIT_LAYER);
    let mut next = 0;
    while let Some(item) = w.peek() {
        match item {
            WalkItem::Leaf(key, cid) => {
                plan.steps
                    .push(Step::Leaf(String::from_utf8_lossy(key).into_owned(), *cid));
                w.advance();
            }
            WalkItem::Tree(cid, layer) if layer <= units_layer => {
                plan.units[next].push(Some((*cid, layer)));
                plan.steps.push(Step::Unit(next));
                next = (next + 1) % WALKERS;
                w.advance();
            }
            WalkItem::Tree(..) => w.step_into()?,
        }
    }
    Ok(plan)
}

/// A chunk of one unit's records in key order, and whether it is the
/// unit's last.
type Walked = Result<(Vec<(String, Cid)>, bool)>;

/// Whether a record's block is in the CAR or already in the store.
type Present<'a> = dyn Fn(&Cid) -> Result<bool> + Sync + 'a;

/// One walker of [`finish`]: every record of its units, in key order,
/// checked present, sent in chunks (each unit ends with a chunk marked
/// last, maybe empty). An error is sent as the last item; a closed channel
/// (the merge stopped) ends the walk.
fn walk_units<S: barn_repo::blocks::BlockSource + Copy>(
    blocks: S,
    data: &Cid,
    units: &[Unit],
    present: &Present<'_>,
    tx: SyncSender<Walked>,
    repo_err: &(dyn Fn(barn_repo::Error) -> Error + Sync),
) {
    let walk = || -> Result<()> {
        for unit in units {
            let walker = match unit {
                None => MstWalker::new(blocks, data),
                Some((cid, layer)) => MstWalker::subtree(blocks, cid, *layer),
            }
            .map_err(repo_err)?;
            let mut chunk = Vec::with_capacity(WALK_CHUNK);
            for item in walker {
                let (key, cid) = item.map_err(repo_err)?;
                if !present(&cid)? {
                    return Err(repo_err(barn_repo::Error::MissingBlock(cid)));
                }
                let path = String::from_utf8(key)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
                chunk.push((path, cid));
                if chunk.len() == WALK_CHUNK {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(WALK_CHUNK));
                    if tx.send(Ok((full, false))).is_err() {
                        return Ok(());
                    }
                }
            }
            if tx.send(Ok((chunk, true))).is_err() {
                return Ok(());
            }
        }
        Ok(())
    };
    if let Err(e) = walk() {
        let _ = tx.send(Err(e));
    }
}

/// The merge's state: the repo's record index read in key order beside
/// the walked records, and the ops found so far.
struct Merge<I> {
    current: I,
    cur: Option<(String, Cid)>,
    ops: Vec<Op>,
    out: SyncSender<Vec<Op>>,
    /// The last record merged: units are walked apart, so the order
    /// across them (and across the records above them) is checked here.
    last: String,
    records: u64,
}

impl<I: Iterator<Item = barn_store::Result<(String, Cid)>>> Merge<I> {
    /// Hands the ops on once a chunk is full; false when the writer is
    /// gone (its error says why).
    fn send(&mut self) -> bool {
        self.ops.len() < WALK_CHUNK
            || self
                .out
                .send(std::mem::replace(
                    &mut self.ops,
                    Vec::with_capacity(WALK_CHUNK),
                ))
                .is_ok()
    }

    /// One walked record; `Ok(false)` when the writer is gone.
    fn record(&mut self, path: String, cid: Cid, did: &str) -> Result<bool> {
        if self.records > 0 && path <= self.last {
            return Err(Error::Repo {
                did: did.to_owned(),
                source: Box::new(barn_repo::Error::MstKey {
                    key: path,
                    reason: "keys out of order across nodes",
                }),
            });
        }
        self.records += 1;
        self.last.clear();
        self.last.push_str(&path);
        while let Some((p, old)) = self.cur.take_if(|(p, _)| *p < path) {
            self.ops.push(delete(p, old));
            self.cur = self.current.next().transpose()?;
            // A tree that lost most of its records: the deletes between
            // two walked records are not bounded by a chunk.
            if !self.send() {
                return Ok(false);
            }
        }
        match self.cur.take_if(|(p, _)| *p == path) {
            Some((_, old)) => {
                if old != cid {
                    self.ops.push(Op {
                        action: OpAction::Update,
                        path,
                        cid: Some(cid),
                        prev: Some(old),
                    });
                }
                self.cur = self.current.next().transpose()?;
            }
            None => self.ops.push(Op {
                action: OpAction::Create,
                path,
                cid: Some(cid),
                prev: None,
            }),
        }
        Ok(self.send())
    }
}

/// The merging part of [`finish`]: takes the records in key order (those
/// of the plan, then each unit from the walker that has it), checks that
/// order, and merges them with the repo's record index into creates,
/// updates and deletes, sent in chunks to the revision's writer. Returns
/// the number of records walked; stops early (`Ok`) if the writer is gone.
fn merge_ops(
    store: &Store,
    did: &str,
    steps: Vec<Step>,
    walked: [Receiver<Walked>; WALKERS],
    present: &Present<'_>,
    out: SyncSender<Vec<Op>>,
) -> Result<u64> {
    let mut current = store.records_iter(did);
    let cur = current.next().transpose()?;
    let mut m = Merge {
        current,
        cur,
        ops: Vec::with_capacity(WALK_CHUNK),
        out,
        last: String::new(),
        records: 0,
    };
    for step in steps {
        match step {
            Step::Leaf(path, cid) => {
                if !present(&cid)? {
                    return Err(Error::Repo {
                        did: did.to_owned(),
                        source: Box::new(barn_repo::Error::MissingBlock(cid)),
                    });
                }
                if !m.record(path, cid, did)? {
                    return Ok(m.records);
                }
            }
            Step::Unit(w) => loop {
                let Some(rx) = walked.get(w) else {
                    return Err(Error::Task(format!("no tree walker {w}")));
                };
                let Ok(msg) = rx.recv() else {
                    return Err(Error::Task("tree walker stopped early".into()));
                };
                let (chunk, last) = msg?;
                for (path, cid) in chunk {
                    if !m.record(path, cid, did)? {
                        return Ok(m.records);
                    }
                }
                if last {
                    break;
                }
            },
        }
    }
    while let Some((p, old)) = m.cur.take() {
        m.ops.push(delete(p, old));
        m.cur = m.current.next().transpose()?;
        if !m.send() {
            return Ok(m.records);
        }
    }
    let _ = m.out.send(m.ops);
    Ok(m.records)
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
    let plan = plan_walk(blocks, &commit.data).map_err(repo_err)?;
    let present = |cid: &Cid| -> Result<bool> {
        Ok(spilled.seen.contains(hash_prefix(cid)) || store.has_block(cid)?)
    };
    let mut revision = store.large_revision(did, &head.rev);
    let records = std::thread::scope(|scope| -> Result<u64> {
        let WalkPlan { steps, units } = plan;
        let mut walkers = Vec::with_capacity(WALKERS);
        let mut receivers = Vec::with_capacity(WALKERS);
        for units in units {
            let (tx, rx) = std::sync::mpsc::sync_channel(WALK_QUEUE);
            let (present, repo_err, data) = (&present, &repo_err, &commit.data);
            walkers.push(spawn_named(scope, "import-walk", move || {
                walk_units(blocks, data, &units, present, tx, repo_err)
            })?);
            receivers.push(rx);
        }
        let walked: [Receiver<Walked>; WALKERS] = receivers
            .try_into()
            .map_err(|_| Error::Task("tree walkers not started".into()))?;
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
        let merged = merge_ops(store, did, steps, walked, &present, to_writer);
        let written = writer
            .join()
            .map_err(|_| Error::Task("op writer panicked".into()))?;
        for walker in walkers {
            walker
                .join()
                .map_err(|_| Error::Task("tree walker panicked".into()))?;
        }
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
