//! A repository's blocks in CAR order, read one at a time: for serving a
//! repo of any size with memory that does not grow with it.
//!
//! # Terminology
//!
//! - **Full export**: the commit, every MST node, every record: what
//!   `getRepo` without `since` returns.
//! - **Diff export**: the commit, then only the nodes on the way to the
//!   keys that changed (their bounds included), and the records now at those keys: a superset of
//!   the blocks that are new since an older revision, which is what
//!   `getRepo?since=` promises.
//!
//! # Tricky bits
//!
//! - Order: the commit, then the tree depth-first in pre-order with every
//!   record right after the left subtree of its entry (so keys come out in
//!   order, and a streaming reader meets each node before its children).
//! - The walk keeps a stack of pending steps, not the tree: memory is the
//!   tree's depth times its fanout.
//! - The same record block can sit under two keys. Each is sent once as
//!   long as fewer than `dedupe_cap` distinct records were seen; past that
//!   a repeat may be sent twice (CAR readers accept repeated blocks), which
//!   keeps memory bounded on huge repos.

use std::collections::HashSet;

use bytes::Bytes;
use cid::Cid;

use crate::mst::NodeData;
use crate::{BlockSource, Error, Result};

/// Distinct record CIDs remembered for de-duplication by default (~4 MiB).
pub const DEFAULT_DEDUPE_CAP: usize = 64 * 1024;

enum Step {
    /// Send the block, no decoding.
    Block(Cid),
    /// Send and descend. `lo` / `hi` (exclusive) bound its keys; used only
    /// by diff exports.
    Node {
        cid: Cid,
        lo: Option<Vec<u8>>,
        hi: Option<Vec<u8>>,
    },
}

/// Iterates over the blocks of a repository at one commit, in CAR order.
pub struct RepoBlocks<S> {
    source: S,
    stack: Vec<Step>,
    /// Sorted keys that changed (diff exports only).
    only: Option<Vec<Vec<u8>>>,
    seen_records: HashSet<Cid>,
    dedupe_cap: usize,
    blocks: u64,
}

impl<S: BlockSource> RepoBlocks<S> {
    /// A full export of the commit `commit` whose MST root is `data`.
    pub fn full(source: S, commit: Cid, data: Cid) -> Self {
        RepoBlocks {
            source,
            stack: vec![
                Step::Node {
                    cid: data,
                    lo: None,
                    hi: None,
                },
                Step::Block(commit),
            ],
            only: None,
            seen_records: HashSet::new(),
            dedupe_cap: DEFAULT_DEDUPE_CAP,
            blocks: 0,
        }
    }

    /// A diff export: the commit, the nodes on the paths to `changed` keys
    /// (`collection/rkey`) and the records now at those keys.
    pub fn diff(source: S, commit: Cid, data: Cid, mut changed: Vec<Vec<u8>>) -> Self {
        changed.sort_unstable();
        changed.dedup();
        let mut out = Self::full(source, commit, data);
        out.only = Some(changed);
        out
    }

    /// Changes how many distinct record CIDs are remembered to avoid
    /// sending one twice.
    pub fn with_dedupe_cap(mut self, cap: usize) -> Self {
        self.dedupe_cap = cap;
        self
    }

    /// Blocks returned so far.
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    fn fetch(&self, cid: &Cid) -> Result<Bytes> {
        self.source.get_block(cid)?.ok_or(Error::MissingBlock(*cid))
    }

    /// Whether a changed key lies between `lo` and `hi`, bounds included:
    /// a key inserted at a higher layer splits the nodes below it into
    /// halves whose ranges end exactly at that key, and those halves are
    /// new blocks.
    fn wanted(&self, lo: Option<&[u8]>, hi: Option<&[u8]>) -> bool {
        let Some(only) = &self.only else {
            return true;
        };
        let start = match lo {
            Some(lo) => only.partition_point(|k| k.as_slice() < lo),
            None => 0,
        };
        match (only.get(start), hi) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(k), Some(hi)) => k.as_slice() <= hi,
        }
    }

    fn record_wanted(&mut self, key: &[u8], cid: &Cid) -> bool {
        if let Some(only) = &self.only
            && only.binary_search_by(|k| k.as_slice().cmp(key)).is_err()
        {
            return false;
        }
        if self.seen_records.contains(cid) {
            return false;
        }
        if self.seen_records.len() < self.dedupe_cap {
            self.seen_records.insert(*cid);
        }
        true
    }

    fn expand(
        &mut self,
        cid: &Cid,
        bytes: &[u8],
        lo: Option<Vec<u8>>,
        hi: Option<Vec<u8>>,
    ) -> Result<()> {
        let node = NodeData::decode(cid, bytes)?;
        let diff = self.only.is_some();
        // Pushed in reverse so that they pop in order: left subtree, then
        // for each entry its record and its right subtree.
        let n = node.entries.len();
        for i in (0..n).rev() {
            let e = &node.entries[i];
            if let Some(right) = e.right {
                let (rlo, rhi) = if diff {
                    let next = node.entries.get(i + 1).map(|n| n.key.clone());
                    (Some(e.key.clone()), next.or_else(|| hi.clone()))
                } else {
                    (None, None)
                };
                if self.wanted(rlo.as_deref(), rhi.as_deref()) {
                    self.stack.push(Step::Node {
                        cid: right,
                        lo: rlo,
                        hi: rhi,
                    });
                }
            }
            if self.record_wanted(&e.key, &e.value) {
                self.stack.push(Step::Block(e.value));
            }
        }
        if let Some(left) = node.left {
            let (llo, lhi) = if diff {
                (lo, node.entries.first().map(|e| e.key.clone()).or(hi))
            } else {
                (None, None)
            };
            if self.wanted(llo.as_deref(), lhi.as_deref()) {
                self.stack.push(Step::Node {
                    cid: left,
                    lo: llo,
                    hi: lhi,
                });
            }
        }
        Ok(())
    }
}

impl<S: BlockSource> Iterator for RepoBlocks<S> {
    type Item = Result<(Cid, Bytes)>;

    fn next(&mut self) -> Option<Self::Item> {
        let step = self.stack.pop()?;
        let out = match step {
            Step::Block(cid) => self.fetch(&cid).map(|b| (cid, b)),
            Step::Node { cid, lo, hi } => self.fetch(&cid).and_then(|bytes| {
                self.expand(&cid, &bytes, lo, hi)?;
                Ok((cid, bytes))
            }),
        };
        match out {
            Ok(block) => {
                self.blocks += 1;
                Some(Ok(block))
            }
            Err(e) => {
                // One error ends the walk.
                self.stack.clear();
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::BlockMap;
    use crate::mst::Mst;

    fn tree(n: usize) -> (BlockMap, Cid, Cid, Vec<(String, Cid)>) {
        let mut mst = Mst::empty(BlockMap::default());
        let mut blocks = BlockMap::default();
        let mut records = Vec::new();
        for i in 0..n {
            // Every 10th record shares its bytes with the one before.
            let body = format!("record {}", i - (i % 10 == 9) as usize);
            let bytes = crate::data::encode(
                &crate::data::value_from_json(&serde_json::json!({ "text": body })).unwrap(),
            )
            .unwrap();
            let cid = crate::cid_for_cbor(&bytes);
            blocks.insert(cid, Bytes::from(bytes));
            let key = format!("app.test.post/{i:06}");
            mst.insert(&key, cid).unwrap();
            records.push((key, cid));
        }
        let root = mst.root_cid();
        for (cid, b) in mst.take_new_blocks().iter() {
            blocks.insert(*cid, b.clone());
        }
        let commit = Bytes::from_static(b"\xa0");
        let commit_cid = crate::cid_for_cbor(&commit);
        blocks.insert(commit_cid, commit);
        (blocks, commit_cid, root, records)
    }

    #[test]
    fn full_export_sends_every_block_once_in_key_order() {
        let (blocks, commit, root, records) = tree(500);
        let out: Vec<(Cid, Bytes)> = RepoBlocks::full(&blocks, commit, root)
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(out[0].0, commit);
        assert_eq!(out[1].0, root);
        let distinct: HashSet<Cid> = out.iter().map(|(c, _)| *c).collect();
        assert_eq!(distinct.len(), out.len(), "a block was sent twice");
        assert_eq!(distinct.len(), blocks.len(), "every block, nothing else");
        // Records come out in key order.
        let record_cids: HashSet<Cid> = records.iter().map(|(_, c)| *c).collect();
        let sent: Vec<Cid> = out
            .iter()
            .map(|(c, _)| *c)
            .filter(|c| record_cids.contains(c))
            .collect();
        let mut expected: Vec<Cid> = Vec::new();
        for (_, c) in &records {
            if !expected.contains(c) {
                expected.push(*c);
            }
        }
        assert_eq!(sent, expected);
    }

    #[test]
    fn a_tiny_dedupe_cap_repeats_blocks_but_misses_none() {
        let (blocks, commit, root, _) = tree(200);
        let out: Vec<(Cid, Bytes)> = RepoBlocks::full(&blocks, commit, root)
            .with_dedupe_cap(0)
            .collect::<Result<_>>()
            .unwrap();
        let distinct: HashSet<Cid> = out.iter().map(|(c, _)| *c).collect();
        assert_eq!(distinct.len(), blocks.len());
        assert!(
            out.len() > distinct.len(),
            "repeats expected without dedupe"
        );
    }

    #[test]
    fn diff_export_holds_the_changed_records_and_their_paths() {
        let (blocks, commit, root, records) = tree(400);
        let changed: Vec<Vec<u8>> = [3usize, 150, 151, 399]
            .iter()
            .map(|i| records[*i].0.as_bytes().to_vec())
            .collect();
        let out: Vec<(Cid, Bytes)> = RepoBlocks::diff(&blocks, commit, root, changed.clone())
            .collect::<Result<_>>()
            .unwrap();
        let sent: HashSet<Cid> = out.iter().map(|(c, _)| *c).collect();
        for i in [3usize, 150, 151, 399] {
            assert!(sent.contains(&records[i].1), "record {i} missing");
        }
        assert!(!sent.contains(&records[200].1));
        // The proof of every changed key is in the diff: a lookup over only
        // the sent blocks finds each.
        let mut map = BlockMap::default();
        for (c, b) in &out {
            map.insert(*c, b.clone());
        }
        for k in &changed {
            let key = std::str::from_utf8(k).unwrap();
            let found = crate::mst::get(&map, &root, key).unwrap();
            assert!(found.is_some(), "{key} not provable from the diff");
        }
        assert!(
            out.len() < blocks.len() / 4,
            "diff sent {} of {}",
            out.len(),
            blocks.len()
        );
    }

    /// Every block of the new tree that the old tree lacks is in the diff,
    /// whatever layers the changed keys sit on (keys on high layers split
    /// the nodes below them).
    #[test]
    fn diff_export_holds_every_block_the_old_tree_lacks() {
        let (blocks, commit, new_root, records) = tree(2000);
        for changed in [
            vec![7usize],
            vec![0, 1999],
            (0..2000).step_by(97).collect::<Vec<_>>(),
        ] {
            // The old tree: the same records minus the changed ones.
            let mut old = Mst::empty(BlockMap::default());
            for (i, (k, c)) in records.iter().enumerate() {
                if !changed.contains(&i) {
                    old.insert(k, *c).unwrap();
                }
            }
            let old_root = old.root_cid();
            let mut old_blocks = blocks.clone();
            old_blocks.extend(old.take_new_blocks());
            // (The old root stands in for a commit: skipped.)
            let old_set: HashSet<Cid> = RepoBlocks::full(&old_blocks, old_root, old_root)
                .skip(1)
                .map(|b| b.unwrap().0)
                .collect();
            let keys: Vec<Vec<u8>> = changed
                .iter()
                .map(|i| records[*i].0.as_bytes().to_vec())
                .collect();
            let sent: HashSet<Cid> = RepoBlocks::diff(&blocks, commit, new_root, keys)
                .map(|b| b.unwrap().0)
                .collect();
            let full: Vec<Cid> = RepoBlocks::full(&blocks, commit, new_root)
                .map(|b| b.unwrap().0)
                .collect();
            for cid in &full {
                let is_record = records.iter().any(|(_, c)| c == cid);
                let new_record = changed.iter().any(|i| records[*i].1 == *cid);
                let is_new_node = !is_record && !old_set.contains(cid);
                if is_new_node || new_record {
                    assert!(
                        sent.contains(cid),
                        "{cid} is new but not in the diff of {changed:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_missing_block_ends_the_walk_with_an_error() {
        let (blocks, commit, root, records) = tree(50);
        let mut partial = BlockMap::default();
        for (c, b) in blocks.iter() {
            if *c != records[25].1 {
                partial.insert(*c, b.clone());
            }
        }
        let out: Vec<Result<(Cid, Bytes)>> = RepoBlocks::full(&partial, commit, root).collect();
        assert!(matches!(out.last(), Some(Err(Error::MissingBlock(c))) if *c == records[25].1));
    }
}
