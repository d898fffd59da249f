//! What the operator decides through the admin API, kept across restarts,
//! and the removal of one account's backup.
//!
//! # Terminology
//! - **tracked host / account**: added by the operator (`barn track …`);
//!   followed at every start, like the config's.
//! - **dropped host / account**: removed by the operator (`barn untrack …`):
//!   not followed at the next start even though stored repos name it.
//!
//! # Tricky bits
//! - Blocks are content-addressed and shared between accounts: deleting an
//!   account's backup must not delete a block another account's history
//!   holds. A commit block names its DID, so it is the account's alone. A
//!   record block is kept when another account's history (its ops) has the
//!   same CID. An MST node shared by two repos is in both trees, so each
//!   of its entries (path → record CID) is in both histories: a node is
//!   kept only when every entry is (rarely true of a node that is not
//!   shared itself; never false of one that is). The empty node is
//!   everyone's and always kept.
//! - Finding what other accounts share scans every other account's history
//!   and blob refs: slow on a big store, but it is a rare, explicit act.

use std::collections::HashSet;

use cid::Cid;
use fjall::PersistMode;

use crate::blobs::queue_key;
use crate::error::{Error, Result};
use crate::model::CommitEntry;
use crate::revision::pending_key;
use crate::store::{Store, decode, did_range};

const TRACK_HOST: &[u8] = b"track_host\0";
const TRACK_ACCOUNT: &[u8] = b"track_account\0";
const DROP_HOST: &[u8] = b"drop_host\0";
const DROP_ACCOUNT: &[u8] = b"drop_account\0";

/// The operator's tracking decisions (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tracking {
    /// Hosts tracked whole.
    pub hosts: Vec<String>,
    /// Accounts tracked one by one.
    pub accounts: Vec<String>,
    /// Hosts no longer tracked whole.
    pub dropped_hosts: Vec<String>,
    /// Accounts no longer followed.
    pub dropped_accounts: Vec<String>,
}

/// What [`Store::delete_account`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteReport {
    /// Revisions (history entries).
    pub revisions: u64,
    /// Current-state record index entries.
    pub records: u64,
    /// Blocks deleted.
    pub blocks: u64,
    /// Blocks kept because another account holds them too.
    pub blocks_shared: u64,
    /// Blobs only this account referenced: their states are gone; the
    /// caller deletes their objects.
    pub blobs: Vec<Cid>,
    /// Blobs kept because another account references them.
    pub blobs_shared: u64,
    /// Entries of the global event order.
    pub events: u64,
}

fn meta_key(prefix: &[u8], name: &str) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

impl Store {
    /// The operator's tracking decisions.
    pub fn tracking(&self) -> Result<Tracking> {
        let list = |prefix: &[u8]| -> Result<Vec<String>> {
            let mut out = Vec::new();
            for guard in self.meta.prefix(prefix) {
                let k = guard.key()?;
                out.push(String::from_utf8_lossy(&k[prefix.len()..]).into_owned());
            }
            Ok(out)
        };
        Ok(Tracking {
            hosts: list(TRACK_HOST)?,
            accounts: list(TRACK_ACCOUNT)?,
            dropped_hosts: list(DROP_HOST)?,
            dropped_accounts: list(DROP_ACCOUNT)?,
        })
    }

    /// Records that `host` is (or is no longer) tracked whole; durable on
    /// return.
    pub fn set_host_tracked(&self, host: &str, tracked: bool) -> Result<()> {
        self.set_tracked(TRACK_HOST, DROP_HOST, host, tracked)
    }

    /// Records that `did` is (or is no longer) tracked; durable on return.
    pub fn set_account_tracked(&self, did: &str, tracked: bool) -> Result<()> {
        self.set_tracked(TRACK_ACCOUNT, DROP_ACCOUNT, did, tracked)
    }

    fn set_tracked(&self, track: &[u8], drop: &[u8], name: &str, tracked: bool) -> Result<()> {
        let (add, remove) = if tracked {
            (track, drop)
        } else {
            (drop, track)
        };
        let mut wb = self.db.batch().durability(Some(PersistMode::SyncData));
        wb.insert(&self.meta, meta_key(add, name), []);
        wb.remove(&self.meta, meta_key(remove, name));
        wb.commit()?;
        Ok(())
    }

    /// Removes everything the store holds of `did`: its repo state,
    /// history, record index, blob refs, its entries in the event order,
    /// the blocks no other account holds, and the states of blobs no other
    /// account references (their objects are the caller's to delete). The
    /// account is also marked dropped so that no start follows it again.
    ///
    /// The caller stops the mirror from writing `did` first.
    pub fn delete_account(&self, did: &str) -> Result<DeleteReport> {
        let (lo, hi) = did_range(did);
        let mut report = DeleteReport::default();

        // The account's history: commit blocks, roots, record CIDs.
        let mut entries: Vec<CommitEntry> = Vec::new();
        for guard in self.commits.range(lo.clone()..hi.clone()) {
            entries.push(decode("commit entry", &guard.value()?)?);
        }
        let mut commits: Vec<Cid> = Vec::new();
        let mut records: HashSet<Cid> = HashSet::new();
        let mut paths: HashSet<(String, Cid)> = HashSet::new();
        let mut roots: Vec<Cid> = Vec::new();
        for entry in &entries {
            commits.push(entry.cid);
            roots.push(entry.data);
            for op in self.revision_ops(did, entry)? {
                if let Some(cid) = op.cid {
                    records.insert(cid);
                    paths.insert((op.path, cid));
                }
            }
        }
        report.revisions = entries.len() as u64;

        // Records another account's history holds too, and under which
        // paths (an MST entry is a path and a CID).
        let mut shared: HashSet<Cid> = HashSet::new();
        let mut shared_paths: HashSet<(String, Cid)> = HashSet::new();
        let mut note = |op: &crate::model::Op| {
            if let Some(c) = op.cid.filter(|c| records.contains(c)) {
                shared.insert(c);
                let pair = (op.path.clone(), c);
                if paths.contains(&pair) {
                    shared_paths.insert(pair);
                }
            }
        };
        let others = |key: &[u8]| !(key >= lo.as_slice() && key < hi.as_slice());
        for guard in self.commits.iter() {
            let (k, v) = guard.into_inner()?;
            if !others(&k) {
                continue;
            }
            let entry: CommitEntry = decode("commit entry", &v)?;
            entry.ops.iter().for_each(&mut note);
            if entry.chunked.is_some_and(|c| c.of_tree) {
                // Its ops are its tree's records, not in the `ops` keyspace.
                self.tree_ops(&entry.data, |op| note(&op))?;
            }
        }
        for guard in self.ops.iter() {
            let (k, v) = guard.into_inner()?;
            if !others(&k) {
                continue;
            }
            let ops: Vec<crate::model::Op> = decode("op chunk", &v)?;
            ops.iter().for_each(&mut note);
        }

        // MST nodes of every revision, each visited once.
        let empty = barn_repo::mst::NodeData::default().encode();
        let empty_cid = barn_repo::cid_for_cbor(&empty);
        let mut seen: HashSet<Cid> = HashSet::new();
        let mut stack = roots;
        let mut doomed: Vec<Cid> = commits;
        while let Some(cid) = stack.pop() {
            if cid == empty_cid || !seen.insert(cid) {
                continue;
            }
            let Some(bytes) = self.block(&cid)? else {
                continue;
            };
            let node =
                barn_repo::mst::NodeData::decode(&cid, &bytes).map_err(|e| Error::Corrupt {
                    what: "mst node",
                    detail: e.to_string(),
                })?;
            stack.extend(node.left);
            let mut keep = !node.entries.is_empty();
            for e in &node.entries {
                stack.extend(e.right);
                keep &=
                    shared_paths.contains(&(String::from_utf8_lossy(&e.key).into_owned(), e.value));
            }
            if keep {
                report.blocks_shared += 1;
            } else {
                doomed.push(cid);
            }
        }
        for cid in &records {
            if shared.contains(cid) {
                report.blocks_shared += 1;
            } else {
                doomed.push(*cid);
            }
        }

        let mut wb = self.db.batch().durability(Some(PersistMode::SyncData));
        for cid in &doomed {
            if self.blocks.contains_key(cid.to_bytes())? {
                wb.remove(&self.blocks, cid.to_bytes());
                report.blocks += 1;
            }
        }
        for ks in [&self.commits, &self.ops] {
            for guard in ks.range(lo.clone()..hi.clone()) {
                wb.remove(ks, guard.key()?);
            }
        }
        for guard in self.records.range(lo.clone()..hi.clone()) {
            wb.remove(&self.records, guard.key()?);
            report.records += 1;
        }
        wb.remove(&self.repos, did.as_bytes());
        wb.remove(&self.meta, pending_key(did));
        wb.remove(&self.meta, meta_key(TRACK_ACCOUNT, did));
        wb.insert(&self.meta, meta_key(DROP_ACCOUNT, did), []);
        for guard in self.events.iter() {
            let (k, v) = guard.into_inner()?;
            let (owner, _rev): (String, String) = decode("event", &v)?;
            if owner == did {
                wb.remove(&self.events, k);
                report.events += 1;
            }
        }

        // Blobs, under the lock every blob state change takes.
        let _guard = self.blob_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut mine: Vec<Cid> = Vec::new();
        for guard in self.blob_refs.range(lo.clone()..hi.clone()) {
            let k = guard.key()?;
            if let Ok(cid) = Cid::try_from(&k[lo.len()..]) {
                mine.push(cid);
            }
            wb.remove(&self.blob_refs, k);
        }
        let mine_set: HashSet<Cid> = mine.iter().copied().collect();
        let mut shared_blobs: HashSet<Cid> = HashSet::new();
        for guard in self.blob_refs.iter() {
            let k = guard.key()?;
            if !others(&k) {
                continue;
            }
            // did ‖ 0 ‖ CID: the CID is after the first 0 (DIDs hold none).
            if let Some(at) = k.iter().position(|b| *b == 0)
                && let Ok(cid) = Cid::try_from(&k[at + 1..])
                && mine_set.contains(&cid)
            {
                shared_blobs.insert(cid);
            }
        }
        for cid in mine {
            if shared_blobs.contains(&cid) {
                report.blobs_shared += 1;
                continue;
            }
            if let Some(state) = self.blob(&cid)?
                && let Some(due) = state.due_ms
            {
                wb.remove(&self.blob_queue, queue_key(due, &cid));
            }
            wb.remove(&self.blobs, cid.to_bytes());
            report.blobs.push(cid);
        }
        wb.commit()?;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracking_decisions_survive_a_reopen_and_undo_each_other() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), &crate::StoreOptions::default()).unwrap();
            store.set_host_tracked("https://a.test", true).unwrap();
            store.set_account_tracked("did:plc:x", true).unwrap();
            store.set_account_tracked("did:plc:y", true).unwrap();
            store.set_account_tracked("did:plc:y", false).unwrap();
            store.set_host_tracked("https://b.test", false).unwrap();
        }
        let store = Store::open(dir.path(), &crate::StoreOptions::default()).unwrap();
        let t = store.tracking().unwrap();
        assert_eq!(t.hosts, vec!["https://a.test"]);
        assert_eq!(t.accounts, vec!["did:plc:x"]);
        assert_eq!(t.dropped_accounts, vec!["did:plc:y"]);
        assert_eq!(t.dropped_hosts, vec!["https://b.test"]);
    }
}
