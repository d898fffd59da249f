#![allow(clippy::unwrap_used, clippy::expect_used)]
//! One host's backlog must not hold up another host's blobs. Host A's
//! blobs are queued first: two that it answers with 429 (so A is paused
//! for its Retry-After), then a slow backlog longer than the dispatcher's
//! cheap scans look at; host B's few blobs come last. B's are all stored
//! while A is paused and its backlog is barely begun; A is asked for
//! nothing while paused; and no host ever has more than `per_host`
//! getBlob under way, nor both together more than `concurrency`.

mod common;

use std::time::Duration;

use barn_blobs::{BlobConfig, BlobStorage, BlobWorkers, Metrics, StorageConfig};
use barn_testkit::{BlobFault, FakePds, peak_concurrency};
use bytes::Bytes;
use cid::Cid;

use common::{ALICE, asked_while_paused, fast_config, host_account, reference, stored, wait_until};

const BOB: &str = "did:plc:bob";
const RETRY_AFTER: Duration = Duration::from_secs(2);

fn blob(fake: &FakePds, did: &str, i: u32) -> Cid {
    let body = format!("{did} blob {i};").repeat(200);
    fake.set_blob(did, Bytes::from(body), "image/png")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_or_paused_host_does_not_hold_up_the_others() {
    let (_dir, store) = common::store();
    let blob_dir = tempfile::tempdir().unwrap();
    let a = FakePds::start().await.unwrap();
    let b = FakePds::start().await.unwrap();
    host_account(&store, ALICE, a.url());
    host_account(&store, BOB, b.url());

    let limited: Vec<Cid> = (0..2).map(|i| blob(&a, ALICE, i)).collect();
    let backlog: Vec<Cid> = (2..52).map(|i| blob(&a, ALICE, i)).collect();
    let bobs: Vec<Cid> = (0..6).map(|i| blob(&b, BOB, i)).collect();
    let slow = BlobFault::Delay(Duration::from_millis(100));
    for cid in &limited {
        a.script_blob(
            cid,
            vec![
                BlobFault::TooManyRequests {
                    retry_after_secs: RETRY_AFTER.as_secs(),
                },
                slow.clone(),
            ],
        );
    }
    for cid in &backlog {
        a.script_blob(cid, vec![slow.clone()]);
    }
    for cid in &bobs {
        b.script_blob(cid, vec![slow.clone()]);
    }
    // Oldest first: A's two 429s, A's backlog, B's blobs (each batch a
    // later due time than the one before).
    reference(&store, ALICE, &limited);
    tokio::time::sleep(Duration::from_millis(5)).await;
    reference(&store, ALICE, &backlog);
    tokio::time::sleep(Duration::from_millis(5)).await;
    reference(&store, BOB, &bobs);

    let config = BlobConfig {
        concurrency: 3,
        per_host: 2,
        scan_budget: 8,
        ..fast_config(1 << 20)
    };
    // The scans between deep ones look at the oldest `free * 8 + 16`
    // entries (the dispatcher's whole window before the fix): B's blobs
    // lie past that, so only skipping A's entries and going on round the
    // queue reaches them.
    assert!(limited.len() + backlog.len() > config.concurrency * 8 + 16);
    let (concurrency, per_host) = (config.concurrency, config.per_host);
    let storage = BlobStorage::open(&StorageConfig::Local {
        dir: blob_dir.path().to_owned(),
    })
    .unwrap();
    let metrics = Metrics::new().unwrap();
    let workers = BlobWorkers::start(store.clone(), storage.clone(), config, metrics).unwrap();

    wait_until(
        &store,
        &bobs,
        Duration::from_secs(10),
        "B's blobs stored",
        stored,
    )
    .await;
    let a_stored = limited
        .iter()
        .chain(&backlog)
        .filter(|c| store.blob(c).unwrap().is_some_and(|s| stored(&s)))
        .count();
    assert!(
        a_stored < 10,
        "B's blobs waited for {a_stored} of A's: B was held up behind A's backlog"
    );

    let all_a: Vec<Cid> = limited.iter().chain(&backlog).copied().collect();
    wait_until(
        &store,
        &all_a,
        Duration::from_secs(30),
        "A's blobs stored",
        stored,
    )
    .await;
    workers.stop(Duration::from_secs(1)).await.unwrap();

    // A was asked for nothing while its 429 pause lasted. The first 429
    // pauses it; a request already on its way then may still arrive.
    let a_log = a.blob_request_log();
    let paused_at = a_log
        .iter()
        .filter(|r| limited.contains(&r.cid))
        .filter_map(|r| r.answered)
        .min()
        .unwrap();
    let during = asked_while_paused(&a_log, paused_at, RETRY_AFTER);
    assert!(during.is_empty(), "A asked while paused: {during:?}");

    // The caps held, and A's was reached (so the check means something).
    let b_log = b.blob_request_log();
    assert_eq!(peak_concurrency(&a_log), per_host, "A's peak");
    assert!(peak_concurrency(&b_log) <= per_host, "B's peak");
    let overall = peak_concurrency(a_log.iter().chain(&b_log));
    assert!(overall <= concurrency, "{overall} getBlob at once");
    for cid in all_a.iter().chain(&bobs) {
        let bytes = storage.read(cid).await.unwrap().unwrap();
        assert_eq!(barn_repo::cid_for_raw(&bytes), *cid);
    }
}
