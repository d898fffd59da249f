//! Shared by barn-blobs' scenario tests: a store with accounts hosted on a
//! fake PDS, blob refs queued as a commit would queue them, and a fast
//! retry policy.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use barn_blobs::{BlobConfig, RetryPolicy};
use barn_store::{Batch, BlobHint, BlobState, BlobStatus, RepoState, Store, StoreOptions};
use barn_testkit::BlobRequest;
use cid::Cid;

pub const ALICE: &str = "did:plc:alice";

pub fn store() -> (tempfile::TempDir, Arc<Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), &StoreOptions::default()).unwrap());
    (dir, store)
}

/// `did` is hosted on `host` and active.
pub fn host_account(store: &Store, did: &str, host: &str) {
    let mut state = RepoState::new(host);
    state.active = true;
    let mut batch = Batch::new();
    batch.set_repo(did, state);
    store.write(batch).unwrap();
}

/// `did`'s records reference `cids` (written as a commit writes refs).
pub fn reference(store: &Store, did: &str, cids: &[Cid]) {
    let mut batch = Batch::new();
    for cid in cids {
        batch.add_blob_ref(did, *cid, BlobHint::default());
    }
    store.write(batch).unwrap();
}

/// Retries in tenths of a second instead of minutes.
pub fn fast_config(max_blob_bytes: u64) -> BlobConfig {
    BlobConfig {
        max_blob_bytes,
        poll: Duration::from_millis(20),
        retry: RetryPolicy {
            transient_first: Duration::from_millis(100),
            transient_max: Duration::from_millis(400),
            transient_until_missing: 8,
            missing_first: Duration::from_millis(200),
            missing_max: Duration::from_millis(400),
            inactive: Duration::from_millis(400),
            rate_limited: Duration::from_millis(100),
            store_first: Duration::from_millis(100),
            store_max: Duration::from_millis(400),
        },
        ..BlobConfig::default()
    }
}

/// Waits until `cond` holds of the states of `cids`, or panics with them.
pub async fn wait_until(
    store: &Store,
    cids: &[Cid],
    within: Duration,
    what: &str,
    cond: impl Fn(&BlobState) -> bool,
) {
    let deadline = Instant::now() + within;
    loop {
        let states: Vec<_> = cids.iter().map(|c| (c, store.blob(c).unwrap())).collect();
        if states.iter().all(|(_, s)| s.as_ref().is_some_and(&cond)) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {states:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn stored(s: &BlobState) -> bool {
    s.status == BlobStatus::Stored
}

/// The requests of `log` that arrived well inside a pause of `pause` from
/// `paused_at`: 300 ms of slack at each end, for a request already on its
/// way when the pause began and for the first one after it. A paused host
/// must get none.
pub fn asked_while_paused(
    log: &[BlobRequest],
    paused_at: Instant,
    pause: Duration,
) -> Vec<(Cid, Duration)> {
    let slack = Duration::from_millis(300);
    log.iter()
        .filter(|r| r.arrived > paused_at + slack && r.arrived < paused_at + pause - slack)
        .map(|r| (r.cid, r.arrived - paused_at))
        .collect()
}
