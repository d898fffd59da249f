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

    /// Queue entries due at or before `now_ms`, oldest first, at most
    /// `limit`, skipping the CIDs in `skip` (in flight).
    pub fn due_blobs(
        &self,
        now_ms: u64,
        limit: usize,
        skip: &dyn Fn(&Cid) -> bool,
    ) -> Result<Vec<DueBlob>> {
        let mut out = Vec::new();
        let end = (now_ms.saturating_add(1)).to_be_bytes();
        for guard in self.blob_queue.range(..end.as_slice()) {
            let key = guard.key()?;
            if key.len() < 8 {
                return Err(Error::Corrupt {
                    what: "blob queue key",
                    detail: format!("{} bytes", key.len()),
                });
            }
            let mut due = [0u8; 8];
            due.copy_from_slice(&key[..8]);
            let due_ms = u64::from_be_bytes(due);
            let cid = parse_cid("blob queue key", &key[8..])?;
            if skip(&cid) {
                continue;
            }
            let Some(state) = self.blob(&cid)? else {
                // Not reachable through the lock discipline; keep going
                // rather than wedge the queue on it.
                tracing::warn!(%cid, "blob queue entry without state");
                continue;
            };
            out.push(DueBlob { cid, due_ms, state });
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// The earliest queue entry's due time, if any.
    pub fn next_blob_due(&self) -> Result<Option<u64>> {
        match self.blob_queue.first_key_value() {
            Some(guard) => {
                let key = guard.key()?;
                let mut due = [0u8; 8];
                if key.len() < 8 {
                    return Err(Error::Corrupt {
                        what: "blob queue key",
                        detail: format!("{} bytes", key.len()),
                    });
                }
                due.copy_from_slice(&key[..8]);
                Ok(Some(u64::from_be_bytes(due)))
            }
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
                    v.push(parse_cid(
                        "blob queue key",
                        key.get(8..).unwrap_or_default(),
                    )?);
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

    fn due(store: &Store) -> Vec<Cid> {
        store
            .due_blobs(u64::MAX - 1, 100, &|_| false)
            .unwrap()
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
        assert!(
            store
                .due_blobs(now_ms(), 10, &|_| false)
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.next_blob_due().unwrap(), Some(later));
        assert_eq!(store.missing_blobs(ALICE).unwrap().len(), 1);

        // The same account again: no change. Another: due now, through it.
        refs(&store, &[(ALICE, a)]);
        assert!(
            store
                .due_blobs(now_ms(), 10, &|_| false)
                .unwrap()
                .is_empty()
        );
        refs(&store, &[(BOB, a)]);
        let d = store.due_blobs(now_ms(), 10, &|_| false).unwrap();
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
        let d = store.due_blobs(now_ms(), 10, &|_| false).unwrap();
        assert_eq!(d.iter().map(|d| d.cid).collect::<Vec<_>>(), vec![a]);
        assert_eq!(due(&store).len(), 2, "moved, not copied");
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
        let d = store.due_blobs(now_ms(), 10, &|_| false).unwrap();
        assert_eq!(d.iter().map(|d| d.cid).collect::<Vec<_>>(), vec![a]);
        assert_eq!(store.retry_blobs_now(None).unwrap(), 1);
        assert_eq!(store.due_blobs(now_ms(), 10, &|_| false).unwrap().len(), 2);
    }
}
