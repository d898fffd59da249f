//! Blob bookkeeping: which accounts reference which blobs, what barn holds
//! of each, and the durable fetch queue the blob workers drain.
//!
//! # Terminology
//! - **ref**: an account's record names a blob (`blob_refs`, DID ‖ 0 ‖ CID).
//!   Refs are only ever added: a deleted record's blob stays the account's.
//! - **state**: one [`BlobState`] per CID (`blobs`): queued, stored or
//!   missing, the account to fetch it through, attempts, the last reason.
//! - **queue entry**: `blob_queue` key `due_ms (u64 BE) ‖ CID`, no value.
//!   A queued or missing blob has exactly one, at [`BlobState::due_ms`].
//!
//! # Tricky bits
//! - **A ref and its queue entry are written with the revision that made
//!   the ref**, in the same atomic, fsynced batch ([`Batch::add_blob_ref`]).
//!   A commit is never durable while the blob it needs is not queued, so a
//!   crash cannot lose a blob to fetch.
//! - **Every change of a state and its queue entry happens under one lock**
//!   (`blob_lock`), read-modify-write, so that a commit queueing a CID and a
//!   worker settling it cannot interleave and leave two queue entries (or a
//!   stored blob marked queued). Commits without refs never take it.
//! - Workers' writes are not fsynced: losing one in a crash only means the
//!   blob is fetched again, and an object store `put` of the same bytes
//!   under the same content address is idempotent.

use cid::Cid;
use fjall::PersistMode;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::{Batch, Store, decode, encode, now_ms};

/// Where a blob is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobStatus {
    /// Waiting to be fetched (first try, or retrying after a transient
    /// failure: server error, rate limit, network, object store down).
    Queued,
    /// In the object store, hash-verified.
    Stored,
    /// The source did not give it (not found, wrong hash, too large,
    /// account not active, …); retried on a slower schedule.
    Missing,
}

impl BlobStatus {
    /// Lowercase name, as logged and served.
    pub fn as_str(self) -> &'static str {
        match self {
            BlobStatus::Queued => "queued",
            BlobStatus::Stored => "stored",
            BlobStatus::Missing => "missing",
        }
    }
}

/// What barn knows of one blob (by CID).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobState {
    /// Queued, stored or missing.
    pub status: BlobStatus,
    /// The account it is fetched through (`getBlob` needs one): the first
    /// to reference it, or the latest to reference it while it was missing.
    pub did: String,
    /// When barn first saw a reference to it (the referencing commit's
    /// write time).
    pub first_seen_ms: u64,
    /// Its queue entry's due time, while queued or missing.
    pub due_ms: Option<u64>,
    /// Fetch attempts that failed since the last success.
    pub attempts: u32,
    /// The last failure's reason label (`not_found`, `hash_mismatch`, …).
    pub reason: Option<String>,
    /// The last failure, in words.
    pub detail: Option<String>,
    /// Size in bytes: as stored, or as the record declared it.
    pub size: Option<u64>,
    /// MIME type: as served, or as the record declared it.
    pub mime: Option<String>,
    /// When it was stored.
    pub stored_ms: Option<u64>,
}

/// What a record says about a blob it references.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlobHint {
    /// Declared MIME type.
    pub mime: Option<String>,
    /// Declared size.
    pub size: Option<u64>,
}

/// How a fetch attempt ended, for [`Store::settle_blob`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobOutcome {
    /// Stored, verified.
    Stored {
        /// Bytes stored.
        size: u64,
        /// MIME type the source served.
        mime: Option<String>,
    },
    /// Failed; try again at `retry_at_ms`.
    Failed {
        /// `Missing` (the source does not give it) or `Queued` (transient).
        status: BlobStatus,
        /// Reason label.
        reason: String,
        /// In words.
        detail: String,
        /// Next attempt.
        retry_at_ms: u64,
    },
}

/// Blob counts of one account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlobCounts {
    /// Distinct blobs its records referenced, ever.
    pub referenced: u64,
    /// Of those, stored.
    pub stored: u64,
    /// Of those, missing.
    pub missing: u64,
    /// Of those, still queued.
    pub queued: u64,
}

/// A queue entry that is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueBlob {
    /// The blob.
    pub cid: Cid,
    /// Its due time (the queue key).
    pub due_ms: u64,
    /// Its state.
    pub state: BlobState,
}

/// What a [`Store::due_blobs`] scan does with one due entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DueChoice {
    /// Leave it (in flight, or not to be fetched now) and look further.
    Skip,
    /// Return it and look further.
    Take,
    /// Return nothing more; a later scan may go on from this entry.
    Stop,
}

/// A place in the blob queue where a scan of due entries ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuePosition {
    due_ms: u64,
    cid: Cid,
}

/// What one [`Store::due_blobs`] scan found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DueScan {
    /// The entries taken, in scan order.
    pub blobs: Vec<DueBlob>,
    /// The first entry not looked at, when the budget ran out or the scan
    /// was stopped; `None` when the scan went round the whole due ring.
    pub next: Option<DuePosition>,
}

pub(crate) fn queue_key(due_ms: u64, cid: &Cid) -> Vec<u8> {
    let mut k = due_ms.to_be_bytes().to_vec();
    k.extend_from_slice(&cid.to_bytes());
    k
}

pub(crate) fn ref_key(did: &str, cid: &Cid) -> Vec<u8> {
    let mut k = Vec::with_capacity(did.len() + 40);
    k.extend_from_slice(did.as_bytes());
    k.push(0);
    k.extend_from_slice(&cid.to_bytes());
    k
}

/// A queue key's due time and CID.
fn parse_queue_key(key: &[u8]) -> Result<(u64, Cid)> {
    let Some((due, cid)) = key.split_first_chunk::<8>() else {
        return Err(Error::Corrupt {
            what: "blob queue key",
            detail: format!("{} bytes", key.len()),
        });
    };
    Ok((u64::from_be_bytes(*due), parse_cid("blob queue key", cid)?))
}

fn parse_cid(what: &'static str, bytes: &[u8]) -> Result<Cid> {
    Cid::try_from(bytes).map_err(|e| Error::Corrupt {
        what,
        detail: e.to_string(),
    })
}

impl Batch {
    /// Records that `did`'s records reference blob `cid`, and queues the
    /// blob for fetching if barn does not hold it (or holds it as missing:
    /// a new account referencing it is a new place to fetch it from).
    /// Durable with the rest of the batch.
    pub fn add_blob_ref(&mut self, did: &str, cid: Cid, hint: BlobHint) {
        self.blob_refs.entry((did.to_owned(), cid)).or_insert(hint);
    }

    /// Tries `did`'s waiting (queued or missing) blobs now: the account
    /// came back, or moved to a host that may have them.
    pub fn retry_blobs_of(&mut self, did: &str) {
        self.blob_retry.insert(did.to_owned());
    }

    /// Blob refs in the batch.
    pub fn blob_refs(&self) -> usize {
        self.blob_refs.len()
    }
}

impl Store {
    /// Adds the batch's blob refs to the fjall batch `wb`; the caller holds
    /// `blob_lock` until `wb` is committed.
    pub(crate) fn stage_blob_refs(
        &self,
        batch: &Batch,
        wb: &mut fjall::OwnedWriteBatch,
    ) -> Result<()> {
        let now = now_ms();
        let mut staged: std::collections::BTreeMap<Cid, BlobState> = Default::default();
        for ((did, cid), hint) in &batch.blob_refs {
            let rk = ref_key(did, cid);
            if !self.blob_refs.contains_key(&rk)? {
                wb.insert(&self.blob_refs, rk, now.to_be_bytes());
            }
            let current = match staged.get(cid) {
                Some(s) => Some(s.clone()),
                None => self.blob(cid)?,
            };
            let next = match current {
                None => {
                    let new = BlobState {
                        status: BlobStatus::Queued,
                        did: did.clone(),
                        first_seen_ms: now,
                        due_ms: None,
                        attempts: 0,
                        reason: None,
                        detail: None,
                        size: hint.size,
                        mime: hint.mime.clone(),
                        stored_ms: None,
                    };
                    self.requeue(wb, cid, new, now)
                }
                Some(mut s) if s.status == BlobStatus::Missing && s.did != *did => {
                    // Somewhere new to fetch it from: try now.
                    s.did = did.clone();
                    self.requeue(wb, cid, s, now)
                }
                Some(_) => continue,
            };
            staged.insert(*cid, next);
        }
        for did in &batch.blob_retry {
            for cid in self.blob_refs_of(did)? {
                let current = match staged.remove(&cid) {
                    Some(s) => Some(s),
                    None => self.blob(&cid)?,
                };
                let Some(mut s) = current else { continue };
                if s.due_ms.is_some_and(|due| due > now) {
                    s.did = did.clone();
                    s = self.requeue(wb, &cid, s, now);
                }
                staged.insert(cid, s);
            }
        }
        Ok(())
    }

    /// Puts `state`'s queue entry at `at` (removing the one it had) and
    /// writes the state, in `wb`; returns the state written.
    fn requeue(
        &self,
        wb: &mut fjall::OwnedWriteBatch,
        cid: &Cid,
        mut state: BlobState,
        at: u64,
    ) -> BlobState {
        if let Some(due) = state.due_ms {
            wb.remove(&self.blob_queue, queue_key(due, cid));
        }
        wb.insert(&self.blob_queue, queue_key(at, cid), []);
        state.due_ms = Some(at);
        wb.insert(&self.blobs, cid.to_bytes(), encode(&state));
        state
    }

    /// What barn knows of blob `cid`.
    pub fn blob(&self, cid: &Cid) -> Result<Option<BlobState>> {
        match self.blobs.get(cid.to_bytes())? {
            Some(v) => Ok(Some(decode("blob state", &v)?)),
            None => Ok(None),
        }
    }

    /// Looks at the queue entries due at or before `now_ms` as a ring:
    /// from `from` (or the oldest) to the newest due, then from the oldest
    /// up to `from`, at most `budget` entries in all. `choose` says of each
    /// (with its state) whether to take it, skip it or end the scan there.
    /// The scan's [`DueScan::next`] is where a later scan can go on from,
    /// so that entries past the budget are reached in turn rather than
    /// never (a caller skipping many entries, say of a host that is not to
    /// be asked now, would otherwise always stop short of the rest).
    pub fn due_blobs(
        &self,
        now_ms: u64,
        from: Option<&DuePosition>,
        budget: usize,
        choose: &mut dyn FnMut(&Cid, &BlobState) -> Result<DueChoice>,
    ) -> Result<DueScan> {
        let end = now_ms.saturating_add(1).to_be_bytes().to_vec();
        // The empty key is the oldest entry's lower bound (and the wrapped
        // part is then empty). A position at or past the due end (a clock
        // that went back) would make an inverted range: the oldest again.
        let start = from
            .map(|p| queue_key(p.due_ms, &p.cid))
            .filter(|k| *k < end)
            .unwrap_or_default();
        let entries = self
            .blob_queue
            .range(start.clone()..end)
            .chain(self.blob_queue.range(..start));
        let mut scan = DueScan::default();
        for (examined, guard) in entries.enumerate() {
            let key = guard.key()?;
            let (due_ms, cid) = parse_queue_key(&key)?;
            if examined >= budget {
                // One past the budget is read only to say where to go on.
                scan.next = Some(DuePosition { due_ms, cid });
                break;
            }
            let Some(state) = self.blob(&cid)? else {
                // Not reachable through the lock discipline; keep going
                // rather than wedge the queue on it.
                tracing::warn!(%cid, "blob queue entry without state");
                continue;
            };
            match choose(&cid, &state)? {
                DueChoice::Skip => {}
                DueChoice::Take => scan.blobs.push(DueBlob { cid, due_ms, state }),
                DueChoice::Stop => {
                    scan.next = Some(DuePosition { due_ms, cid });
                    break;
                }
            }
        }
        Ok(scan)
    }

    /// The earliest queue entry's due time, if any.
    pub fn next_blob_due(&self) -> Result<Option<u64>> {
        match self.blob_queue.first_key_value() {
            Some(guard) => Ok(Some(parse_queue_key(&guard.key()?)?.0)),
            None => Ok(None),
        }
    }

    /// Queue entries (approximate: LSM estimate, counts recent deletes).
    pub fn approximate_blob_queue(&self) -> usize {
        self.blob_queue.approximate_len()
    }

    /// Queue entries (queued and missing blobs), counted exactly up to
    /// `cap` (a scan of at most `cap` keys). The LSM's estimate counts
    /// deleted entries until compaction: not what a person asking "how
    /// many are queued" means.
    pub fn blob_queue_len(&self, cap: usize) -> Result<usize> {
        let mut n = 0;
        for guard in self.blob_queue.iter().take(cap) {
            guard.key()?;
            n += 1;
        }
        Ok(n)
    }

    /// Records how a fetch of `cid` ended: stored, or failed and
    /// rescheduled. Not fsynced (see the module's tricky bits). A stored
    /// blob stays stored whatever a late failure says.
    pub fn settle_blob(&self, cid: &Cid, outcome: BlobOutcome) -> Result<BlobState> {
        let _guard = self.blob_lock.lock().unwrap_or_else(|p| p.into_inner());
        let Some(mut state) = self.blob(cid)? else {
            return Err(Error::NotFound(format!("blob {cid}")));
        };
        if state.status == BlobStatus::Stored {
            return Ok(state);
        }
        let mut wb = self.db.batch();
        if let Some(due) = state.due_ms.take() {
            wb.remove(&self.blob_queue, queue_key(due, cid));
        }
        let now = now_ms();
        match outcome {
            BlobOutcome::Stored { size, mime } => {
                state.status = BlobStatus::Stored;
                state.size = Some(size);
                if mime.is_some() {
                    state.mime = mime;
                }
                state.stored_ms = Some(now);
                state.attempts = 0;
                state.reason = None;
                state.detail = None;
            }
            BlobOutcome::Failed {
                status,
                reason,
                detail,
                retry_at_ms,
            } => {
                state.status = if status == BlobStatus::Stored {
                    BlobStatus::Queued
                } else {
                    status
                };
                state.attempts = state.attempts.saturating_add(1);
                state.reason = Some(reason);
                state.detail = Some(detail);
                state.due_ms = Some(retry_at_ms);
                wb.insert(&self.blob_queue, queue_key(retry_at_ms, cid), []);
            }
        }
        wb.insert(&self.blobs, cid.to_bytes(), encode(&state));
        wb.commit()?;
        Ok(state)
    }

    /// Moves every queued or missing blob's next attempt to now (an
    /// operator's "retry missing blobs"). Returns how many moved.
    pub fn retry_blobs_now(&self, did: Option<&str>) -> Result<u64> {
        let _guard = self.blob_lock.lock().unwrap_or_else(|p| p.into_inner());
        let now = now_ms();
        let cids: Vec<Cid> = match did {
            Some(did) => self.blob_refs_of(did)?,
            None => {
                let mut v = Vec::new();
                for guard in self.blob_queue.iter() {
                    let key = guard.key()?;
                    v.push(parse_queue_key(&key)?.1);
                }
                v
            }
        };
        let mut wb = self.db.batch().durability(Some(PersistMode::SyncData));
        let mut moved = 0;
        for cid in cids {
            let Some(state) = self.blob(&cid)? else {
                continue;
            };
            if state.due_ms.is_some_and(|due| due > now) {
                self.requeue(&mut wb, &cid, state, now);
                moved += 1;
            }
        }
        wb.commit()?;
        Ok(moved)
    }

    fn blob_refs_of(&self, did: &str) -> Result<Vec<Cid>> {
        let mut prefix = did.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for guard in self.blob_refs.prefix(&prefix) {
            let key = guard.key()?;
            out.push(parse_cid("blob ref key", &key[prefix.len()..])?);
        }
        Ok(out)
    }

    /// Every blob `did`'s records ever referenced, with what barn holds of
    /// each, in CID byte order.
    pub fn account_blobs(&self, did: &str) -> Result<Vec<(Cid, BlobState)>> {
        let mut out = Vec::new();
        for cid in self.blob_refs_of(did)? {
            // A ref is always written with its state; a missing state
            // would be corruption, reported rather than skipped.
            let state = self.blob(&cid)?.ok_or_else(|| Error::Corrupt {
                what: "blob ref",
                detail: format!("{did} references {cid}, which has no state"),
            })?;
            out.push((cid, state));
        }
        Ok(out)
    }

    /// Blob counts of `did`.
    pub fn blob_counts(&self, did: &str) -> Result<BlobCounts> {
        let mut c = BlobCounts::default();
        for (_, state) in self.account_blobs(did)? {
            c.referenced += 1;
            match state.status {
                BlobStatus::Stored => c.stored += 1,
                BlobStatus::Missing => c.missing += 1,
                BlobStatus::Queued => c.queued += 1,
            }
        }
        Ok(c)
    }

    /// `did`'s missing blobs, with the reasons.
    pub fn missing_blobs(&self, did: &str) -> Result<Vec<(Cid, BlobState)>> {
        Ok(self
            .account_blobs(did)?
            .into_iter()
            .filter(|(_, s)| s.status == BlobStatus::Missing)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use barn_repo::cid_for_raw;

    use super::*;
    use crate::StoreOptions;

    const ALICE: &str = "did:plc:alice";
    const BOB: &str = "did:plc:bob";

    fn refs(store: &Store, refs: &[(&str, Cid)]) {
        let mut batch = Batch::new();
        for (did, cid) in refs {
            batch.add_blob_ref(did, *cid, BlobHint::default());
        }
        store.write(batch).unwrap();
    }

    /// A failed attempt at `cid`, next one at `retry_at_ms`.
    fn fail(
        store: &Store,
        cid: &Cid,
        status: BlobStatus,
        reason: &str,
        retry_at_ms: u64,
    ) -> BlobState {
        store
            .settle_blob(
                cid,
                BlobOutcome::Failed {
                    status,
                    reason: reason.into(),
                    detail: String::new(),
                    retry_at_ms,
                },
            )
            .unwrap()
    }

    /// Every entry due at `now`.
    fn due_at(store: &Store, now: u64) -> Vec<DueBlob> {
        store
            .due_blobs(now, None, usize::MAX, &mut |_, _| Ok(DueChoice::Take))
            .unwrap()
            .blobs
    }

    /// Every entry, due or not.
    fn due(store: &Store) -> Vec<Cid> {
        due_at(store, u64::MAX - 1)
            .into_iter()
            .map(|d| d.cid)
            .collect()
    }

    #[test]
    fn a_ref_queues_the_blob_once_and_refs_stay_after_it_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let a = cid_for_raw(b"a");
        let b = cid_for_raw(b"b");
        refs(&store, &[(ALICE, a), (BOB, a), (ALICE, b)]);
        refs(&store, &[(BOB, a)]);
        let mut queued = due(&store);
        queued.sort();
        let mut want = vec![a, b];
        want.sort();
        assert_eq!(queued, want, "each CID queued exactly once");
        assert_eq!(store.blob(&a).unwrap().unwrap().did, ALICE);

        store
            .settle_blob(
                &a,
                BlobOutcome::Stored {
                    size: 1,
                    mime: None,
                },
            )
            .unwrap();
        assert_eq!(due(&store), vec![b]);
        // A later ref to a stored blob does not queue it again.
        refs(&store, &[("did:plc:carol", a)]);
        assert_eq!(due(&store), vec![b]);
        let c = store.blob_counts(BOB).unwrap();
        assert_eq!((c.referenced, c.stored, c.queued), (1, 1, 0));
        let c = store.blob_counts(ALICE).unwrap();
        assert_eq!((c.referenced, c.stored, c.queued), (2, 1, 1));
    }

    #[test]
    fn a_failure_reschedules_and_a_new_account_retries_a_missing_blob_now() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let a = cid_for_raw(b"a");
        refs(&store, &[(ALICE, a)]);
        let later = now_ms() + 3_600_000;
        let s = fail(&store, &a, BlobStatus::Missing, "not_found", later);
        assert_eq!(
            (s.status, s.attempts, s.due_ms),
            (BlobStatus::Missing, 1, Some(later))
        );
        assert!(due_at(&store, now_ms()).is_empty());
        assert_eq!(store.next_blob_due().unwrap(), Some(later));
        assert_eq!(store.missing_blobs(ALICE).unwrap().len(), 1);

        // The same account again: no change. Another: due now, through it.
        refs(&store, &[(ALICE, a)]);
        assert!(due_at(&store, now_ms()).is_empty());
        refs(&store, &[(BOB, a)]);
        let d = due_at(&store, now_ms());
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].state.did, BOB);
        assert_eq!(due(&store).len(), 1, "the old entry was moved, not copied");

        // A late failure never un-stores a stored blob.
        store
            .settle_blob(
                &a,
                BlobOutcome::Stored {
                    size: 1,
                    mime: Some("image/png".into()),
                },
            )
            .unwrap();
        let s = fail(&store, &a, BlobStatus::Queued, "server_error", later);
        assert_eq!(s.status, BlobStatus::Stored);
        assert!(due(&store).is_empty());
    }

    #[test]
    fn an_account_coming_back_has_its_missing_blobs_tried_now() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let a = cid_for_raw(b"a");
        let b = cid_for_raw(b"b");
        refs(&store, &[(ALICE, a), (BOB, b)]);
        for cid in [a, b] {
            fail(
                &store,
                &cid,
                BlobStatus::Missing,
                "account_deactivated",
                now_ms() + 3_600_000,
            );
        }
        let mut batch = Batch::new();
        batch.retry_blobs_of(ALICE);
        store.write(batch).unwrap();
        let d = due_at(&store, now_ms());
        assert_eq!(d.iter().map(|d| d.cid).collect::<Vec<_>>(), vec![a]);
        assert_eq!(due(&store).len(), 2, "moved, not copied");
    }

    #[test]
    fn a_due_scan_goes_round_the_ring_within_its_budget() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        // c0..c9 due at 1001..1010: ALICE's first, then BOB's.
        let cids: Vec<Cid> = (0..10u8).map(|i| cid_for_raw(&[i])).collect();
        for (i, cid) in cids.iter().enumerate() {
            let did = if i < 6 { ALICE } else { BOB };
            refs(&store, &[(did, *cid)]);
            fail(&store, cid, BlobStatus::Queued, "x", 1001 + i as u64);
        }
        let bobs = |_: &Cid, s: &BlobState| -> Result<DueChoice> {
            Ok(if s.did == BOB {
                DueChoice::Take
            } else {
                DueChoice::Skip
            })
        };
        let taken = |scan: &DueScan| scan.blobs.iter().map(|d| d.cid).collect::<Vec<_>>();

        // The budget ends a scan among skipped entries; the next goes on
        // from there instead of looking at the same ones again.
        let first = store.due_blobs(2000, None, 4, &mut { bobs }).unwrap();
        assert!(first.blobs.is_empty());
        let second = store
            .due_blobs(2000, first.next.as_ref(), 4, &mut { bobs })
            .unwrap();
        assert_eq!(taken(&second), vec![cids[6], cids[7]]);
        // Past the newest due entry it wraps round to the oldest, once.
        let third = store
            .due_blobs(2000, second.next.as_ref(), 100, &mut { bobs })
            .unwrap();
        assert_eq!(
            taken(&third),
            vec![cids[8], cids[9], cids[6], cids[7]],
            "from c8 round to c7"
        );
        assert_eq!(third.next, None, "the whole ring was looked at");

        // Stop ends the scan before the entry, and the next one starts there.
        let mut n = 0;
        let stopped = store
            .due_blobs(2000, None, 100, &mut |_, _| {
                n += 1;
                Ok(if n == 1 {
                    DueChoice::Take
                } else {
                    DueChoice::Stop
                })
            })
            .unwrap();
        assert_eq!(taken(&stopped), vec![cids[0]]);
        let rest = store
            .due_blobs(2000, stopped.next.as_ref(), 100, &mut |_, _| {
                Ok(DueChoice::Take)
            })
            .unwrap();
        let mut ring = cids[1..].to_vec();
        ring.push(cids[0]);
        assert_eq!(taken(&rest), ring);

        // Only what is due; a place past the due end starts at the oldest.
        let early = store
            .due_blobs(1005, second.next.as_ref(), 100, &mut |_, _| {
                Ok(DueChoice::Take)
            })
            .unwrap();
        assert_eq!(taken(&early), cids[..5].to_vec());
    }

    #[test]
    fn queued_blobs_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let a = cid_for_raw(b"a");
        {
            let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
            refs(&store, &[(ALICE, a)]);
        }
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        assert_eq!(due(&store), vec![a]);
        assert_eq!(store.account_blobs(ALICE).unwrap().len(), 1);
    }

    #[test]
    fn retry_now_moves_an_accounts_scheduled_attempts_forward() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let a = cid_for_raw(b"a");
        let b = cid_for_raw(b"b");
        refs(&store, &[(ALICE, a), (BOB, b)]);
        for cid in [a, b] {
            fail(
                &store,
                &cid,
                BlobStatus::Missing,
                "not_found",
                now_ms() + 3_600_000,
            );
        }
        assert_eq!(store.retry_blobs_now(Some(ALICE)).unwrap(), 1);
        let d = due_at(&store, now_ms());
        assert_eq!(d.iter().map(|d| d.cid).collect::<Vec<_>>(), vec![a]);
        assert_eq!(store.retry_blobs_now(None).unwrap(), 1);
        assert_eq!(due_at(&store, now_ms()).len(), 2);
    }
}
