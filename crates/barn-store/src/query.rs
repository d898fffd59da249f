//! Paged reads for the gateway: pages of history, records, repos and blob
//! refs, and the revision in force at a given rev. Every read here is
//! bounded by its `limit`, so a request never scans a whole account.
//!
//! # Tricky bits
//!
//! - Revs are TIDs: base32-sortable, so byte order of `did ‖ 0 ‖ rev` keys
//!   is time order, and "the last revision at or before T" is one reverse
//!   range step from the TID of T.
//! - Cursors are exclusive: a page starts strictly after (or, newest
//!   first, strictly before) the cursor.

use std::ops::Bound;

use cid::Cid;

use crate::blobs::ref_key;
use crate::error::{Error, Result};
use crate::model::{CommitEntry, RepoState};
use crate::store::{Store, decode, did_range, key2};

/// Which way a page runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Smallest key first (oldest revision, lowest rkey, lowest DID).
    Ascending,
    /// Largest key first.
    Descending,
}

/// The key range of everything under `did ‖ 0`, starting after `cursor`
/// (exclusive) in the direction of `order`.
fn page_bounds(did: &str, cursor: Option<&str>, order: Order) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let (lo, hi) = did_range(did);
    match (cursor, order) {
        (None, _) => (Bound::Included(lo), Bound::Excluded(hi)),
        (Some(c), Order::Ascending) => (Bound::Excluded(key2(did, c)), Bound::Excluded(hi)),
        (Some(c), Order::Descending) => (Bound::Included(lo), Bound::Excluded(key2(did, c))),
    }
}

impl Store {
    /// How many records `did` has now (a scan of its record index).
    pub fn records_count(&self, did: &str) -> Result<u64> {
        let (lo, hi) = did_range(did);
        Ok(self.records.range(lo..hi).count() as u64)
    }

    /// Up to `limit` revisions of `did` after `cursor` (a rev, exclusive)
    /// in `order`.
    pub fn history_page(
        &self,
        did: &str,
        cursor: Option<&str>,
        limit: usize,
        order: Order,
    ) -> Result<Vec<CommitEntry>> {
        let range = self.commits.range(page_bounds(did, cursor, order));
        let mut out = Vec::with_capacity(limit.min(1024));
        let mut push = |guard: fjall::Guard| -> Result<bool> {
            out.push(decode("commit entry", &guard.value()?)?);
            Ok(out.len() < limit)
        };
        match order {
            Order::Ascending => {
                for g in range {
                    if !push(g)? {
                        break;
                    }
                }
            }
            Order::Descending => {
                for g in range.rev() {
                    if !push(g)? {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    /// The newest revision of `did` whose rev is at or before `rev`
    /// (byte order, which for TIDs is time order).
    pub fn revision_at_or_before(&self, did: &str, rev: &str) -> Result<Option<CommitEntry>> {
        let lo = key2(did, "");
        let hi = key2(did, rev);
        match self.commits.range(lo..=hi).next_back() {
            Some(g) => Ok(Some(decode("commit entry", &g.value()?)?)),
            None => Ok(None),
        }
    }

    /// Revisions of `did` strictly after `rev`, oldest first, at most
    /// `limit` (the caller asks for one more than it can use to learn that
    /// there were too many).
    pub fn revisions_after(&self, did: &str, rev: &str, limit: usize) -> Result<Vec<CommitEntry>> {
        self.history_page(did, Some(rev), limit, Order::Ascending)
    }

    /// The current record at `path` (`collection/rkey`) of `did`.
    pub fn record(&self, did: &str, path: &str) -> Result<Option<Cid>> {
        match self.records.get(key2(did, path))? {
            Some(v) => Ok(Some(Cid::try_from(v.as_ref()).map_err(|e| {
                Error::Corrupt {
                    what: "record cid",
                    detail: e.to_string(),
                }
            })?)),
            None => Ok(None),
        }
    }

    /// Up to `limit` current records of `collection` in `did`, as (rkey,
    /// CID), after the rkey `cursor` (exclusive) in `order`.
    pub fn records_page(
        &self,
        did: &str,
        collection: &str,
        cursor: Option<&str>,
        limit: usize,
        order: Order,
    ) -> Result<Vec<(String, Cid)>> {
        let base = key2(did, &format!("{collection}/"));
        let mut hi = key2(did, collection);
        hi.push(b'/' + 1);
        let (lo, hi) = match (cursor, order) {
            (None, _) => (Bound::Included(base.clone()), Bound::Excluded(hi)),
            (Some(c), Order::Ascending) => {
                let mut k = base.clone();
                k.extend_from_slice(c.as_bytes());
                (Bound::Excluded(k), Bound::Excluded(hi))
            }
            (Some(c), Order::Descending) => {
                let mut k = base.clone();
                k.extend_from_slice(c.as_bytes());
                (Bound::Included(base.clone()), Bound::Excluded(k))
            }
        };
        let skip = base.len();
        let parse = |g: fjall::Guard| -> Result<(String, Cid)> {
            let (k, v) = g.into_inner()?;
            let rkey = String::from_utf8_lossy(&k[skip..]).into_owned();
            let cid = Cid::try_from(v.as_ref()).map_err(|e| Error::Corrupt {
                what: "record cid",
                detail: e.to_string(),
            })?;
            Ok((rkey, cid))
        };
        let range = self.records.range((lo, hi));
        let mut out = Vec::with_capacity(limit.min(1024));
        match order {
            Order::Ascending => {
                for g in range.take(limit) {
                    out.push(parse(g)?);
                }
            }
            Order::Descending => {
                for g in range.rev().take(limit) {
                    out.push(parse(g)?);
                }
            }
        }
        Ok(out)
    }

    /// The collections `did` currently has records in, in order. Skips
    /// from one collection to the next, so it costs one seek per
    /// collection, not one step per record.
    pub fn collections(&self, did: &str) -> Result<Vec<String>> {
        let mut out: Vec<String> = Vec::new();
        let mut hi = did.as_bytes().to_vec();
        hi.push(1);
        let mut from = key2(did, "");
        let skip = from.len();
        while let Some(g) = self
            .records
            .range((Bound::Included(from.clone()), Bound::Excluded(hi.clone())))
            .next()
        {
            let k = g.key()?;
            let path = String::from_utf8_lossy(&k[skip..]).into_owned();
            let Some((collection, _)) = path.split_once('/') else {
                return Err(Error::Corrupt {
                    what: "record path",
                    detail: path,
                });
            };
            // Everything of this collection sorts below `collection` + '0'
            // ('/' + 1).
            from = key2(did, collection);
            from.push(b'/' + 1);
            out.push(collection.to_owned());
        }
        Ok(out)
    }

    /// Up to `limit` repos after the DID `cursor` (exclusive), in DID
    /// order.
    pub fn repos_page(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, RepoState)>> {
        let lo = match cursor {
            Some(c) => Bound::Excluded(c.as_bytes().to_vec()),
            None => Bound::Unbounded,
        };
        let mut out = Vec::with_capacity(limit.min(1024));
        for g in self
            .repos
            .range::<Vec<u8>, _>((lo, Bound::Unbounded))
            .take(limit)
        {
            let (k, v) = g.into_inner()?;
            out.push((
                String::from_utf8_lossy(&k).into_owned(),
                decode("repo state", &v)?,
            ));
        }
        Ok(out)
    }

    /// The DID whose last seen handle is `handle` (case-insensitive), if
    /// barn tracks one; an active account before an inactive one that
    /// once had the handle. A scan of every repo: handles are not indexed.
    pub fn did_for_handle(&self, handle: &str) -> Result<Option<String>> {
        let mut inactive = None;
        for guard in self.repos.iter() {
            let (k, v) = guard.into_inner()?;
            let state: RepoState = decode("repo state", &v)?;
            if state
                .handle
                .as_deref()
                .is_some_and(|h| h.eq_ignore_ascii_case(handle))
            {
                let did = String::from_utf8_lossy(&k).into_owned();
                if state.active {
                    return Ok(Some(did));
                }
                inactive.get_or_insert(did);
            }
        }
        Ok(inactive)
    }

    /// Whether `did`'s records ever referenced blob `cid`.
    pub fn has_blob_ref(&self, did: &str, cid: &Cid) -> Result<bool> {
        Ok(self.blob_refs.contains_key(ref_key(did, cid))?)
    }

    /// Up to `limit` blobs `did` references, as (CID, first seen ms), in
    /// CID byte order after `cursor` (exclusive).
    pub fn blob_refs_page(
        &self,
        did: &str,
        cursor: Option<&Cid>,
        limit: usize,
    ) -> Result<Vec<(Cid, u64)>> {
        let mut prefix = did.as_bytes().to_vec();
        prefix.push(0);
        let mut hi = did.as_bytes().to_vec();
        hi.push(1);
        let lo = match cursor {
            Some(c) => Bound::Excluded(ref_key(did, c)),
            None => Bound::Included(prefix.clone()),
        };
        let mut out = Vec::with_capacity(limit.min(1024));
        for g in self.blob_refs.range((lo, Bound::Excluded(hi))).take(limit) {
            let (k, v) = g.into_inner()?;
            let cid = Cid::try_from(&k[prefix.len()..]).map_err(|e| Error::Corrupt {
                what: "blob ref key",
                detail: e.to_string(),
            })?;
            let seen = <[u8; 8]>::try_from(v.as_ref())
                .map(u64::from_be_bytes)
                .unwrap_or_default();
            out.push((cid, seen));
        }
        Ok(out)
    }
}
