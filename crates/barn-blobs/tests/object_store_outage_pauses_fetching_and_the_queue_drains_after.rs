#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A real S3 server (moto, started by the test suite on 127.0.0.1) goes
//! away in the middle of a large blob's multipart upload, with more blobs
//! queued behind it. The upload fails and leaves no object, whole or
//! partial; the others fail as `store_unavailable` without the source
//! being asked; no blob is marked missing; fetching backs off as a whole
//! (the attempts during the outage are bounded by the pauses, not by how
//! many blobs wait); and once S3 is back the queue drains and every
//! object is the source's bytes, the large one included.

mod common;

use std::time::{Duration, Instant};

use barn_blobs::{BlobStorage, BlobWorkers, Metrics, StorageConfig};
use barn_store::BlobStatus;
use barn_testkit::{BlobFault, FakePds, S3Server};
use bytes::Bytes;

use common::{ALICE, fast_config, host_account, reference, stored, wait_until};

/// How long S3 stays away.
const OUTAGE: Duration = Duration::from_secs(4);
/// The large blob: four 8 MiB parts' worth, with the body stalled after
/// the first two parts' worth, while S3 goes away.
const LARGE: usize = 30 << 20;
const STALL_AT: usize = 20 << 20;

fn body(n: usize, seed: u32) -> Bytes {
    Bytes::from(
        (0..n)
            .map(|j| (j as u32 ^ seed.wrapping_mul(2654435761)) as u8)
            .collect::<Vec<u8>>(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_store_outage_pauses_fetching_and_the_queue_drains_after() {
    let mut s3 = S3Server::start().await.unwrap();
    s3.create_bucket("barn").await.unwrap();
    let (_dir, store) = common::store();
    let fake = FakePds::start().await.unwrap();
    host_account(&store, ALICE, fake.url());
    // Small ones, and two large enough for multipart uploads (> 8 MiB).
    let mut cids = Vec::new();
    for i in 0..20u32 {
        let n = if i < 2 { 9 << 20 } else { 10_000 + i as usize };
        cids.push(fake.set_blob(ALICE, body(n, i), "image/png"));
    }
    let large = fake.set_blob(ALICE, body(LARGE, 99), "video/mp4");
    fake.script_blob(
        &large,
        vec![BlobFault::StallAfter {
            bytes: STALL_AT,
            stall: Duration::from_secs(3),
        }],
    );

    let storage = BlobStorage::open(&StorageConfig::S3 {
        endpoint: Some(s3.endpoint()),
        bucket: "barn".into(),
        region: "us-east-1".into(),
        access_key_id: Some("test".into()),
        secret_access_key: Some("test".into()),
        allow_http: true,
    })
    .unwrap();
    let metrics = Metrics::new().unwrap();
    let mut config = fast_config(100 << 20);
    config.retry.store_first = Duration::from_millis(100);
    config.retry.store_max = Duration::from_secs(2);
    let per_host = config.per_host as u64;
    let workers =
        BlobWorkers::start(store.clone(), storage.clone(), config, metrics.clone()).unwrap();

    // First, S3 works.
    reference(&store, ALICE, &cids[..5]);
    wait_until(
        &store,
        &cids[..5],
        Duration::from_secs(30),
        "stored while S3 is up",
        stored,
    )
    .await;

    // The large blob's body stalls after 20 MiB: by then barn has begun
    // its multipart upload. S3 goes away; more blobs are queued.
    reference(&store, ALICE, &[large]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fake
        .blob_request_log()
        .iter()
        .any(|r| r.cid == large && r.body_bytes >= STALL_AT as u64)
    {
        assert!(Instant::now() < deadline, "the large blob never got going");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Let barn take in what the sockets hold and upload those parts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    s3.stop().await;
    let stopped = Instant::now();
    reference(&store, ALICE, &cids[5..]);

    // The rest of the body arrives with nowhere to go: the upload fails.
    wait_until(
        &store,
        &[large],
        Duration::from_secs(15),
        "the large blob failed mid-upload",
        |s| s.status == BlobStatus::Queued && s.reason.as_deref() == Some("store_unavailable"),
    )
    .await;
    tokio::time::sleep(OUTAGE.saturating_sub(stopped.elapsed())).await;
    let failures = metrics.fetches("store_unavailable");
    for cid in &cids[5..] {
        let s = store.blob(cid).unwrap().unwrap();
        assert_eq!(s.status, BlobStatus::Queued, "{cid}: {s:?}");
    }
    assert_eq!(store.blob_counts(ALICE).unwrap().missing, 0);
    // The object store is looked at before the source is asked.
    let asked: u64 = cids[5..].iter().map(|c| fake.blob_requests(c)).sum();
    assert_eq!(asked, 0, "getBlob while the object store was away");
    // Backing off as a whole: after a failure nothing starts until the
    // pause ends, and the pause doubles with failures in a row (100 ms,
    // up to 2 s, ±25%), so the 4 s outage has at most four or five
    // windows of at most `per_host` attempts each, and the large blob's
    // failure. Retrying each blob on its own schedule alone would make
    // several times as many, as fast as the slots allow.
    assert!(failures >= 2, "the outage was not noticed: {failures}");
    let bound = 5 * per_host + 1;
    assert!(
        failures <= bound,
        "{failures} store_unavailable attempts in a {OUTAGE:?} outage (at most {bound})"
    );

    // Back: nothing of the failed upload shows (it is either not there
    // or, if already fetched again, whole), and everything drains.
    s3.start_again().await.unwrap();
    let size = storage.size(&large).await.unwrap();
    assert!(
        size.is_none() || size == Some(LARGE as u64),
        "a partial object: {size:?}"
    );
    let mut all = cids.clone();
    all.push(large);
    wait_until(
        &store,
        &all,
        Duration::from_secs(60),
        "stored after S3 came back",
        stored,
    )
    .await;
    for cid in &all {
        let got = storage.read(cid).await.unwrap().unwrap();
        assert_eq!(barn_repo::cid_for_raw(&got), *cid);
        assert_eq!(storage.size(cid).await.unwrap(), Some(got.len() as u64));
    }
    assert_eq!(storage.size(&large).await.unwrap(), Some(LARGE as u64));
    assert!(
        fake.blob_requests(&large) >= 2,
        "the failed upload was taken for the blob"
    );
    eprintln!(
        "store_unavailable {failures} during the outage, {} in all; stored {}",
        metrics.fetches("store_unavailable"),
        metrics.blobs_stored()
    );
    assert_eq!(metrics.blobs_stored(), all.len() as u64);
    workers.stop(Duration::from_secs(1)).await.unwrap();
}
