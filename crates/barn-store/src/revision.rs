//! Revisions with too many ops to hold: an import's. The ops are written
//! in chunks while the record index is changed, so that memory stays
//! bounded whatever the repo's size, and the chunks double as an undo log
//! so that a crash or a failed check never leaves the index half-changed.
//!
//! # Terminology
//! - **chunk**: up to [`CHUNK_OPS`] ops of one revision, one value of the
//!   `ops` keyspace, keyed DID ‖ 0 ‖ rev ‖ 0 ‖ chunk number (u32 BE).
//! - **pending mark**: `meta` key `pending` ‖ DID, value the rev (‖ 0 ‖
//!   `tree` for a revision of its tree): a large revision of that repo is
//!   changing its record index.
//! - **revision of its tree** ([`Store::large_revision_of_tree`]): a first
//!   import, into an empty record index, so every op is a create of a
//!   record of the revision's tree, in key order. The ops are applied to
//!   the index but not stored: [`Store::revision_ops`] reads them back
//!   from the tree. That saves writing ~100 bytes an op that the tree's
//!   nodes already hold.
//!
//! # Tricky bits
//! - A chunk is written in the same atomic batch as the record-index
//!   changes of its ops, so the chunks stored are exactly the changes
//!   applied; each op keeps the CID it replaced (`prev`), which is what
//!   undoing needs.
//! - The pending mark is durable before the first chunk is written, and it
//!   is removed in the same durable batch that stores the revision entry.
//!   After a crash, either the revision is stored with every op applied,
//!   or the mark is there and [`Store::open`] undoes the chunks that made
//!   it to disk.
//! - Chunks are written without waiting for the disk. That is safe because
//!   fjall syncs the journal before it flushes a memtable to a table: a
//!   chunk's index changes never reach disk without the chunk itself.
//! - Only one large revision of a repo may be open at a time, and nothing
//!   else may write that repo's records meanwhile (the mirror imports a
//!   repo only while it holds back the repo's live commits).
//! - A revision of its tree has no chunks to undo with. It began on an
//!   empty index that nothing else wrote meanwhile, so undoing it removes
//!   every record of the repo. Its ops must be exactly the tree's records:
//!   creates, strictly ascending (checked as they come), with the entry's
//!   `data` the root of the tree they were walked from (the caller's word).

use crate::error::{Error, Result};
use crate::model::{ChunkedOps, CommitEntry, Op, OpAction, OpCounts};
use crate::store::{Batch, Store, decode, key2};

/// A chunk of ops as DAG-CBOR, written directly: the same bytes as
/// `serde_ipld_dagcbor` gives (a test checks), whose serializer buffers and
/// sorts every field of every op on its own. With that, encoding took
/// ~0.4 µs an op, as much as an import's whole writing of them.
fn encode_ops(ops: &[Op]) -> Vec<u8> {
    let mut e = barn_repo::cbor::Encoder::with_capacity(ops.len() * 112 + 8);
    e.array(ops.len());
    for op in ops {
        // DAG-CBOR map keys in canonical order: shorter first, then bytes.
        e.map(4);
        e.text("cid");
        e.nullable_link(op.cid.as_ref());
        e.text("path");
        e.text(&op.path);
        e.text("prev");
        e.nullable_link(op.prev.as_ref());
        e.text("action");
        e.text(match op.action {
            OpAction::Create => "create",
            OpAction::Update => "update",
            OpAction::Delete => "delete",
        });
    }
    e.into_bytes()
}

/// Ops per chunk: ~100 bytes each, so ~400 KB values.
pub const CHUNK_OPS: usize = 4096;

/// Chunks written together. A group in path order goes straight into new
/// tables (fjall's ingestion: no journal, no memtable, which would see
/// every op twice and stall on flushes); others as ordinary batches.
/// Eight (32k ops, a table of ~2 MB in the record index): an import's op
/// writer takes its ops from the tree walk through a short queue, and
/// while it writes a group the walk waits once the queue is full. With 32
/// a 1M-record import's last phase took 0.65–0.83 s, with 8 0.48–0.52 s
/// (`benches/README.md`, "Import").
// Unit tests use small groups so that debug builds cover several quickly.
const GROUP_CHUNKS: usize = if cfg!(test) { 3 } else { 8 };

const META_PENDING: &[u8] = b"pending";

/// Records removed per batch when a revision of its tree is undone (unit
/// tests use small batches, so that they cover several).
const UNDO_KEYS: usize = if cfg!(test) { 1000 } else { 65_536 };

/// Ends the pending mark's value of a revision of its tree.
const PENDING_TREE: &[u8] = b"\0tree";

pub(crate) fn pending_key(did: &str) -> Vec<u8> {
    let mut k = META_PENDING.to_vec();
    k.extend_from_slice(did.as_bytes());
    k
}

fn chunk_prefix(did: &str, rev: &str) -> Vec<u8> {
    let mut k = key2(did, rev);
    k.push(0);
    k
}

fn chunk_key(did: &str, rev: &str, n: u32) -> Vec<u8> {
    let mut k = chunk_prefix(did, rev);
    k.extend_from_slice(&n.to_be_bytes());
    k
}

/// A revision being written op by op; see the module docs. Made by
/// [`Store::large_revision`]; ends with [`LargeRevision::commit`] or
/// [`LargeRevision::abort`] (dropping it aborts, logging any error).
#[derive(Debug)]
pub struct LargeRevision<'s> {
    store: &'s Store,
    did: String,
    rev: String,
    chunk: Vec<Op>,
    /// Full chunks not written yet.
    group: Vec<Vec<Op>>,
    /// Chunks written.
    chunks: u32,
    counts: OpCounts,
    /// The pending mark is on disk (so there may be something to undo).
    marked: bool,
    /// A revision of its tree (see the module docs): no chunks written.
    of_tree: bool,
    /// The last path pushed, in a revision of its tree (paths must
    /// ascend); reused, not reallocated, for every op.
    last_path: String,
    done: bool,
    /// Blobs the revision's records reference, written with its entry.
    blob_refs: Vec<(cid::Cid, crate::BlobHint)>,
}

impl Store {
    /// Starts a revision `rev` of `did` whose ops are pushed one by one and
    /// applied to the record index as they go, in chunks; see the
    /// `revision` module.
    pub fn large_revision(&self, did: &str, rev: &str) -> LargeRevision<'_> {
        LargeRevision {
            store: self,
            did: did.to_owned(),
            rev: rev.to_owned(),
            chunk: Vec::with_capacity(CHUNK_OPS),
            group: Vec::new(),
            chunks: 0,
            counts: OpCounts::default(),
            marked: false,
            of_tree: false,
            last_path: String::new(),
            done: false,
            blob_refs: Vec::new(),
        }
    }

    /// Starts a revision `rev` of `did` whose ops are every record of its
    /// tree, pushed in key order as creates, for a repo whose record index
    /// is empty (a first import): they are applied to the index but not
    /// stored (see the `revision` module). Refused when the index holds a
    /// record of `did`.
    pub fn large_revision_of_tree(&self, did: &str, rev: &str) -> Result<LargeRevision<'_>> {
        if let Some(first) = self.records_iter(did).next() {
            let (path, _) = first?;
            return Err(Error::Invalid(format!(
                "a revision of its tree for {did}, whose record index is not empty ({path})"
            )));
        }
        let mut revision = self.large_revision(did, rev);
        revision.of_tree = true;
        Ok(revision)
    }

    /// The ops of a stored revision, wherever they are kept.
    pub fn revision_ops(&self, did: &str, entry: &CommitEntry) -> Result<Vec<Op>> {
        let Some(chunked) = entry.chunked else {
            return Ok(entry.ops.clone());
        };
        let mut out = Vec::with_capacity(chunked.counts.total() as usize);
        if chunked.of_tree {
            self.tree_ops(&entry.data, |op| out.push(op))?;
            if out.len() as u64 != chunked.counts.total() {
                return Err(Error::Corrupt {
                    what: "commit entry",
                    detail: format!(
                        "{did} {}: its tree has {} records, its entry counts {}",
                        entry.rev,
                        out.len(),
                        chunked.counts.total()
                    ),
                });
            }
            return Ok(out);
        }
        for n in 0..chunked.chunks {
            let v = self
                .ops
                .get(chunk_key(did, &entry.rev, n))?
                .ok_or_else(|| Error::Corrupt {
                    what: "op chunk",
                    detail: format!("{did} {} chunk {n} is missing", entry.rev),
                })?;
            out.extend(decode::<Vec<Op>>("op chunk", &v)?);
        }
        Ok(out)
    }

    /// Calls `f` with every record of the tree at `root` as a create, in
    /// key order: the ops of a revision of its tree.
    pub(crate) fn tree_ops(&self, root: &cid::Cid, mut f: impl FnMut(Op)) -> Result<()> {
        // Checked in full when it was imported.
        for item in barn_repo::mst::MstWalker::new_trusted(self.block_source(), root)? {
            let (key, cid) = item?;
            let path = String::from_utf8(key).map_err(|e| Error::Corrupt {
                what: "mst node",
                detail: format!("a key that is not UTF-8: {e}"),
            })?;
            f(Op::create(path, cid));
        }
        Ok(())
    }

    /// Undoes every large revision a crash left half-applied.
    pub(crate) fn recover_pending(&self) -> Result<()> {
        let mut pending = Vec::new();
        for guard in self.meta.prefix(META_PENDING) {
            let (k, v) = guard.into_inner()?;
            let did = String::from_utf8_lossy(&k[META_PENDING.len()..]).into_owned();
            let (rev, of_tree) = match v.strip_suffix(PENDING_TREE) {
                Some(rev) => (rev, true),
                None => (&v[..], false),
            };
            let rev = String::from_utf8_lossy(rev).into_owned();
            pending.push((did, rev, of_tree));
        }
        for (did, rev, of_tree) in pending {
            tracing::warn!(%did, %rev, "undoing the record-index changes of an import cut short");
            undo(self, &did, &rev, of_tree)?;
        }
        Ok(())
    }
}

/// Takes back what a large revision of `did`/`rev` changed in the record
/// index, then removes the pending mark (durably). A revision already
/// stored was complete (cannot happen while the mark and the entry are
/// written together; kept for safety): nothing is taken back.
fn undo(store: &Store, did: &str, rev: &str, of_tree: bool) -> Result<()> {
    if !store.commits.contains_key(key2(did, rev))? {
        if of_tree {
            remove_records(store, did)?;
        } else {
            undo_chunks(store, did, rev)?;
        }
    }
    let mut batch = Batch::new();
    batch.meta_remove.push(pending_key(did));
    store.write(batch)
}

/// Removes every record of `did`: the undo of a revision of its tree (the
/// index held none when it began).
fn remove_records(store: &Store, did: &str) -> Result<()> {
    let (mut lo, hi) = crate::store::did_range(did);
    let mut keys = Vec::new();
    loop {
        keys.clear();
        for guard in store.records.range(lo.clone()..hi.clone()).take(UNDO_KEYS) {
            keys.push(guard.key()?);
        }
        let Some(last) = keys.last() else {
            return Ok(());
        };
        // Go on after the last key removed rather than from the start,
        // which would step over every tombstone written so far again.
        lo = last.to_vec();
        lo.push(0);
        let mut wb = store.db.batch().durability(None);
        for key in &keys {
            wb.remove(&store.records, key.clone());
        }
        wb.commit()?;
    }
}

/// Puts back what the stored chunks of `did`/`rev` changed in the record
/// index, and removes them.
fn undo_chunks(store: &Store, did: &str, rev: &str) -> Result<()> {
    let mut keys = Vec::new();
    for guard in store.ops.prefix(chunk_prefix(did, rev)) {
        keys.push(guard.key()?.to_vec());
    }
    for key in keys {
        let Some(v) = store.ops.get(&key)? else {
            continue;
        };
        let ops: Vec<Op> = decode("op chunk", &v)?;
        let mut wb = store.db.batch().durability(None);
        for op in &ops {
            let rkey = key2(did, &op.path);
            match op.prev {
                Some(prev) => wb.insert(&store.records, rkey, prev.to_bytes()),
                None => wb.remove(&store.records, rkey),
            }
        }
        wb.remove(&store.ops, key);
        wb.commit()?;
    }
    Ok(())
}

impl LargeRevision<'_> {
    /// Adds an op; every [`CHUNK_OPS`] ops, the chunk is written with its
    /// record-index changes (not waiting for the disk).
    pub fn push(&mut self, op: Op) -> Result<()> {
        if self.of_tree {
            let ascending = self.counts.total() == 0 || self.last_path < op.path;
            if op.action != OpAction::Create || op.prev.is_some() || !ascending {
                return Err(Error::Invalid(format!(
                    "{} {}: a revision of its tree takes creates in key order, not {:?} {}",
                    self.did, self.rev, op.action, op.path
                )));
            }
            self.last_path.clear();
            self.last_path.push_str(&op.path);
        }
        self.counts.add(op.action);
        self.chunk.push(op);
        if self.chunk.len() >= CHUNK_OPS {
            let full = std::mem::replace(&mut self.chunk, Vec::with_capacity(CHUNK_OPS));
            self.group.push(full);
            if self.group.len() >= GROUP_CHUNKS {
                self.write_group()?;
            }
        }
        Ok(())
    }

    /// Ops pushed so far.
    pub fn counts(&self) -> OpCounts {
        self.counts
    }

    /// Writes the chunks held, with their record-index changes.
    fn write_group(&mut self) -> Result<()> {
        if self.group.is_empty() {
            return Ok(());
        }
        let store = self.store;
        if !self.marked {
            let mut wb = store
                .db
                .batch()
                .durability(Some(fjall::PersistMode::SyncData));
            let mut mark = self.rev.as_bytes().to_vec();
            if self.of_tree {
                mark.extend_from_slice(PENDING_TREE);
            }
            wb.insert(&store.meta, pending_key(&self.did), mark);
            wb.commit()?;
            self.marked = true;
        }
        let group = std::mem::take(&mut self.group);
        let in_order = group
            .iter()
            .flatten()
            .zip(group.iter().flatten().skip(1))
            .all(|(a, b)| a.path < b.path);
        // A lone chunk (the tail of a small revision) is not worth a table
        // of its own.
        if in_order && group.len() > 1 {
            // The chunks first, durable, then the index changes they
            // undo: a crash between the two leaves chunks whose undo is a
            // no-op, never changes without their chunk.
            if !self.of_tree {
                let mut ingestion = store.ops.start_ingestion()?;
                for (i, chunk) in group.iter().enumerate() {
                    ingestion.write(
                        chunk_key(&self.did, &self.rev, self.chunks + i as u32),
                        encode_ops(chunk),
                    )?;
                }
                ingestion.finish()?;
                self.chunks += group.len() as u32;
            }
            let mut ingestion = store.records.start_ingestion()?;
            for op in group.iter().flatten() {
                let key = key2(&self.did, &op.path);
                match op.cid {
                    Some(cid) => ingestion.write(key, cid.to_bytes())?,
                    None => ingestion.write_tombstone(key)?,
                }
            }
            ingestion.finish()?;
            return Ok(());
        }
        for chunk in &group {
            let mut wb = store.db.batch().durability(None);
            for op in chunk {
                let key = key2(&self.did, &op.path);
                match op.cid {
                    Some(cid) => wb.insert(&store.records, key, cid.to_bytes()),
                    None => wb.remove(&store.records, key),
                }
            }
            if !self.of_tree {
                wb.insert(
                    &store.ops,
                    chunk_key(&self.did, &self.rev, self.chunks),
                    encode_ops(chunk),
                );
                self.chunks += 1;
            }
            wb.commit()?;
        }
        Ok(())
    }

    /// Stores the revision: the last chunk, then, durably and together,
    /// `entry` (its `ops` emptied, [`CommitEntry::chunked`] set) and the
    /// removal of the pending mark. A revision with few ops (at most one
    /// chunk's worth, never written out) keeps them inline.
    pub fn commit(mut self, entry: CommitEntry) -> Result<()> {
        match self.commit_inner(entry) {
            Ok(()) => {
                self.done = true;
                Ok(())
            }
            Err(e) => {
                // Put the index back now: a retry diffs against it.
                if let Err(undo) = self.abort_inner() {
                    tracing::error!(did = %self.did, error = %undo, "could not undo a failed import");
                }
                Err(e)
            }
        }
    }

    /// Notes that the revision's records reference blob `cid`: the ref and
    /// its queue entry are written with the revision's entry (see
    /// [`Batch::add_blob_ref`]).
    pub fn add_blob_ref(&mut self, cid: cid::Cid, hint: crate::BlobHint) {
        self.blob_refs.push((cid, hint));
    }

    fn commit_inner(&mut self, mut entry: CommitEntry) -> Result<()> {
        let mut batch = Batch::new();
        for (cid, hint) in self.blob_refs.drain(..) {
            batch.add_blob_ref(&self.did, cid, hint);
        }
        if !self.marked && self.group.is_empty() {
            // Nothing written yet: an ordinary revision.
            for op in &self.chunk {
                batch.set_record(&self.did, &op.path, op.cid);
            }
            entry.ops = std::mem::take(&mut self.chunk);
            entry.chunked = None;
        } else {
            if !self.chunk.is_empty() {
                self.group.push(std::mem::take(&mut self.chunk));
            }
            self.write_group()?;
            entry.ops = Vec::new();
            entry.chunked = Some(ChunkedOps {
                chunks: self.chunks,
                counts: self.counts,
                of_tree: self.of_tree,
            });
            batch.meta_remove.push(pending_key(&self.did));
        }
        batch.put_revision(&self.did, entry);
        self.store.write(batch)
    }

    /// Gives up: the record index is put back as it was before the first
    /// push, and nothing of the revision is left.
    pub fn abort(mut self) -> Result<()> {
        self.abort_inner()
    }

    fn abort_inner(&mut self) -> Result<()> {
        self.done = true;
        self.chunk.clear();
        self.group.clear();
        if self.marked {
            undo(self.store, &self.did, &self.rev, self.of_tree)?;
        }
        Ok(())
    }
}

impl Drop for LargeRevision<'_> {
    fn drop(&mut self) {
        if !self.done
            && let Err(e) = self.abort_inner()
        {
            // The pending mark stays: the next open undoes it.
            tracing::error!(did = %self.did, rev = %self.rev, error = %e, "could not undo an unfinished import");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use barn_repo::cid_for_cbor;
    use cid::Cid;

    use super::*;
    use crate::model::{OpAction, Source};
    use crate::store::{StoreOptions, encode};

    #[test]
    fn ops_encoded_by_hand_are_the_bytes_serde_gives() {
        let mut ops = Vec::new();
        for (i, path) in [
            "app.bsky.feed.post/3k2a",
            "",
            "c/é",
            &"x".repeat(23),
            &"y".repeat(24),
            &"z".repeat(300),
            &"w".repeat(70_000),
        ]
        .into_iter()
        .enumerate()
        {
            let i = i as u64;
            for (action, new, old) in [
                (OpAction::Create, Some(cid(i)), None),
                (OpAction::Update, Some(cid(i + 100)), Some(cid(i))),
                (OpAction::Delete, None, Some(cid(i + 100))),
            ] {
                ops.push(Op {
                    action,
                    path: path.to_owned(),
                    cid: new,
                    prev: old,
                });
            }
        }
        assert_eq!(ops.len(), 21);
        for n in [0, 1, 5, 21] {
            let chunk = &ops[..n];
            let bytes = encode_ops(chunk);
            assert_eq!(bytes, encode(&chunk.to_vec()), "{n} ops");
            assert_eq!(decode::<Vec<Op>>("op chunk", &bytes).unwrap(), chunk);
        }
        // Past 23, 255 and 65,535 ops the array head grows.
        let short = ops.iter().filter(|op| op.path.len() < 1000);
        let many: Vec<Op> = short.cycle().take(70_000).cloned().collect();
        assert_eq!(encode_ops(&many), encode(&many));
    }

    const DID: &str = "did:plc:large";

    fn cid(n: u64) -> Cid {
        cid_for_cbor(&serde_ipld_dagcbor::to_vec(&n).unwrap())
    }

    fn entry(rev: &str) -> CommitEntry {
        CommitEntry {
            rev: rev.into(),
            cid: cid(u64::MAX),
            data: cid(u64::MAX - 1),
            since: None,
            seen_at_ms: 1,
            source: Source::Resync,
            seq: None,
            host: "http://h".into(),
            ops: Vec::new(),
            reason: Some("test".into()),
            chunked: None,
        }
    }

    /// A record index of `n` paths, `p00000000` … (even numbers only, so
    /// that odd ones can be created between them).
    fn seed(store: &Store, n: u64) -> Vec<(String, Cid)> {
        let mut batch = Batch::new();
        let mut out = Vec::new();
        for i in 0..n {
            let path = format!("app.x/p{:08}", i * 2);
            batch.set_record(DID, &path, Some(cid(i)));
            out.push((path, cid(i)));
        }
        store.write(batch).unwrap();
        out
    }

    /// Ops over the seeded index: every third record deleted, every third
    /// updated, and a create beside each seeded record.
    fn ops(seeded: &[(String, Cid)]) -> Vec<Op> {
        let mut out = Vec::new();
        for (i, (path, old)) in seeded.iter().enumerate() {
            match i % 3 {
                0 => out.push(Op {
                    action: OpAction::Delete,
                    path: path.clone(),
                    cid: None,
                    prev: Some(*old),
                }),
                1 => out.push(Op {
                    action: OpAction::Update,
                    path: path.clone(),
                    cid: Some(cid(1_000_000 + i as u64)),
                    prev: Some(*old),
                }),
                _ => {}
            }
            out.push(Op {
                action: OpAction::Create,
                path: format!("app.x/p{:08}", i * 2 + 1),
                cid: Some(cid(2_000_000 + i as u64)),
                prev: None,
            });
        }
        out
    }

    fn applied(before: &[(String, Cid)], ops: &[Op]) -> Vec<(String, Cid)> {
        let mut map: std::collections::BTreeMap<String, Cid> = before.iter().cloned().collect();
        for op in ops {
            match op.cid {
                Some(c) => map.insert(op.path.clone(), c),
                None => map.remove(&op.path),
            };
        }
        map.into_iter().collect()
    }

    /// Enough seeded records for more than one group of ops.
    const SEEDED: u64 = (GROUP_CHUNKS * CHUNK_OPS) as u64 * 3 / 4;

    /// The ops in path order (ingested) or not (ordinary batches).
    fn ordered(before: &[(String, Cid)], in_order: bool) -> Vec<Op> {
        let mut ops = ops(before);
        if !in_order {
            ops.reverse();
        }
        ops
    }

    #[test]
    fn a_committed_large_revision_applies_every_op_and_reads_them_back() {
        for in_order in [true, false] {
            committed(in_order);
        }
    }

    fn committed(in_order: bool) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let before = seed(&store, SEEDED);
        let ops = ordered(&before, in_order);
        assert!(ops.len() > GROUP_CHUNKS * CHUNK_OPS);
        let mut rev = store.large_revision(DID, "3rev");
        for op in &ops {
            rev.push(op.clone()).unwrap();
        }
        rev.commit(entry("3rev")).unwrap();

        assert_eq!(store.records(DID).unwrap(), applied(&before, &ops));
        let stored = store.revision(DID, "3rev").unwrap().unwrap();
        assert!(stored.ops.is_empty());
        let counts = stored.op_counts();
        assert_eq!(
            (counts.creates, counts.updates, counts.deletes),
            (SEEDED, SEEDED / 3, SEEDED / 3)
        );
        assert_eq!(store.revision_ops(DID, &stored).unwrap(), ops);
        drop(store);
        // Still there after a reopen (no pending mark left to undo it).
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        assert_eq!(store.records(DID).unwrap(), applied(&before, &ops));
        assert_eq!(store.history(DID).unwrap().len(), 1);
    }

    #[test]
    fn a_small_revision_keeps_its_ops_inline() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let before = seed(&store, 10);
        let ops = ops(&before);
        let mut rev = store.large_revision(DID, "3rev");
        for op in &ops {
            rev.push(op.clone()).unwrap();
        }
        rev.commit(entry("3rev")).unwrap();
        let stored = store.revision(DID, "3rev").unwrap().unwrap();
        assert_eq!(stored.chunked, None);
        assert_eq!(stored.ops, ops);
        assert_eq!(store.records(DID).unwrap(), applied(&before, &ops));
    }

    #[test]
    fn an_aborted_or_dropped_large_revision_leaves_the_index_as_it_was() {
        for in_order in [true, false] {
            aborted(in_order);
        }
    }

    fn aborted(in_order: bool) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let before = seed(&store, SEEDED);
        let ops = ordered(&before, in_order);
        let mut rev = store.large_revision(DID, "3rev");
        for op in &ops[..ops.len() * 5 / 6] {
            rev.push(op.clone()).unwrap();
        }
        assert_ne!(store.records(DID).unwrap(), before, "chunks were applied");
        rev.abort().unwrap();
        assert_eq!(store.records(DID).unwrap(), before);
        assert!(store.revision(DID, "3rev").unwrap().is_none());
        assert_eq!(store.ops.prefix(chunk_prefix(DID, "3rev")).count(), 0);

        let mut rev = store.large_revision(DID, "3rev");
        for op in &ops[..ops.len() * 5 / 6] {
            rev.push(op.clone()).unwrap();
        }
        drop(rev);
        assert_eq!(store.records(DID).unwrap(), before);
        assert!(store.meta.get(pending_key(DID)).unwrap().is_none());
    }

    #[test]
    fn a_large_revision_cut_short_by_a_crash_is_undone_on_open() {
        for in_order in [true, false] {
            cut_short(in_order);
        }
    }

    fn cut_short(in_order: bool) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let before = seed(&store, SEEDED);
        let ops = ordered(&before, in_order);
        let mut rev = store.large_revision(DID, "3rev");
        for op in &ops[..ops.len() - 100] {
            rev.push(op.clone()).unwrap();
        }
        // Make what was written durable, then "crash": no abort, no drop.
        store.sync().unwrap();
        std::mem::forget(rev);
        assert_ne!(store.records(DID).unwrap(), before);
        drop(store);

        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        assert_eq!(store.records(DID).unwrap(), before);
        assert!(store.revision(DID, "3rev").unwrap().is_none());
        assert!(store.meta.get(pending_key(DID)).unwrap().is_none());
        assert_eq!(store.ops.prefix(chunk_prefix(DID, "3rev")).count(), 0);

        // The import runs again and completes.
        let mut rev = store.large_revision(DID, "3rev");
        for op in &ops {
            rev.push(op.clone()).unwrap();
        }
        rev.commit(entry("3rev")).unwrap();
        assert_eq!(store.records(DID).unwrap(), applied(&before, &ops));
    }

    /// Stores the nodes of a tree of `n` records and returns its root and
    /// its records as creates, in key order.
    fn stored_tree(store: &Store, n: u64) -> (Cid, Vec<Op>) {
        let entries: Vec<(Vec<u8>, Cid)> = (0..n)
            .map(|i| (format!("app.x/p{i:08}").into_bytes(), cid(i)))
            .collect();
        let mut mst =
            barn_repo::mst::Mst::from_sorted(barn_repo::blocks::BlockMap::new(), entries.clone())
                .unwrap();
        let root = mst.root_cid();
        let mut batch = Batch::new();
        for (c, b) in mst.take_new_blocks().iter() {
            batch.put_block(*c, b.clone());
        }
        store.write(batch).unwrap();
        let ops = entries
            .into_iter()
            .map(|(k, c)| Op::create(String::from_utf8(k).unwrap(), c))
            .collect();
        (root, ops)
    }

    fn tree_entry(rev: &str, root: Cid) -> CommitEntry {
        CommitEntry {
            data: root,
            ..entry(rev)
        }
    }

    #[test]
    fn a_revision_of_its_tree_stores_no_ops_and_reads_them_from_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let n = (GROUP_CHUNKS * CHUNK_OPS * 2 + 77) as u64;
        let (root, ops) = stored_tree(&store, n);
        let mut rev = store.large_revision_of_tree(DID, "3rev").unwrap();
        for op in &ops {
            rev.push(op.clone()).unwrap();
        }
        rev.commit(tree_entry("3rev", root)).unwrap();

        let stored = store.revision(DID, "3rev").unwrap().unwrap();
        let chunked = stored.chunked.unwrap();
        assert!(chunked.of_tree);
        assert_eq!(chunked.chunks, 0);
        assert_eq!(chunked.counts.creates, n);
        assert_eq!(store.ops.prefix(chunk_prefix(DID, "3rev")).count(), 0);
        assert_eq!(store.revision_ops(DID, &stored).unwrap(), ops);
        let records: Vec<(String, Cid)> = ops
            .iter()
            .map(|o| (o.path.clone(), o.cid.unwrap()))
            .collect();
        assert_eq!(store.records(DID).unwrap(), records);

        // An entry whose counts disagree with its tree is reported, not
        // trusted.
        let mut wrong = stored.clone();
        wrong.chunked = Some(ChunkedOps {
            counts: OpCounts {
                creates: n - 1,
                ..chunked.counts
            },
            ..chunked
        });
        assert!(matches!(
            store.revision_ops(DID, &wrong),
            Err(Error::Corrupt { .. })
        ));

        drop(store);
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        assert_eq!(store.records(DID).unwrap(), records);
        let stored = store.revision(DID, "3rev").unwrap().unwrap();
        assert_eq!(store.revision_ops(DID, &stored).unwrap(), ops);
    }

    #[test]
    fn a_revision_of_its_tree_takes_only_creates_in_order_on_an_empty_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let (_, ops) = stored_tree(&store, 10);

        let mut rev = store.large_revision_of_tree(DID, "3rev").unwrap();
        rev.push(ops[1].clone()).unwrap();
        assert!(matches!(rev.push(ops[0].clone()), Err(Error::Invalid(_))));
        assert!(matches!(rev.push(ops[1].clone()), Err(Error::Invalid(_))));
        let update = Op {
            action: OpAction::Update,
            prev: Some(cid(7)),
            ..ops[2].clone()
        };
        assert!(matches!(rev.push(update), Err(Error::Invalid(_))));
        rev.abort().unwrap();

        seed(&store, 1);
        assert!(matches!(
            store.large_revision_of_tree(DID, "3rev"),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn a_revision_of_its_tree_cut_short_or_dropped_leaves_no_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let n = (GROUP_CHUNKS * CHUNK_OPS * 2 + 77) as u64;
        let (root, ops) = stored_tree(&store, n);
        // Another repo's records are not touched by the undo.
        let mut batch = Batch::new();
        batch.set_record("did:plc:other", "app.x/p", Some(cid(1)));
        store.write(batch).unwrap();

        let mut rev = store.large_revision_of_tree(DID, "3rev").unwrap();
        for op in &ops[..ops.len() / 2] {
            rev.push(op.clone()).unwrap();
        }
        assert!(
            !store.records(DID).unwrap().is_empty(),
            "groups were applied"
        );
        drop(rev);
        assert!(store.records(DID).unwrap().is_empty());
        assert!(store.meta.get(pending_key(DID)).unwrap().is_none());

        let mut rev = store.large_revision_of_tree(DID, "3rev").unwrap();
        for op in &ops[..ops.len() - 100] {
            rev.push(op.clone()).unwrap();
        }
        store.sync().unwrap();
        std::mem::forget(rev);
        assert!(!store.records(DID).unwrap().is_empty());
        drop(store);

        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        assert!(store.records(DID).unwrap().is_empty());
        assert!(store.meta.get(pending_key(DID)).unwrap().is_none());
        assert_eq!(store.records("did:plc:other").unwrap().len(), 1);

        // The import runs again and completes.
        let mut rev = store.large_revision_of_tree(DID, "3rev").unwrap();
        for op in &ops {
            rev.push(op.clone()).unwrap();
        }
        rev.commit(tree_entry("3rev", root)).unwrap();
        assert_eq!(store.records(DID).unwrap().len(), ops.len());
    }
}
