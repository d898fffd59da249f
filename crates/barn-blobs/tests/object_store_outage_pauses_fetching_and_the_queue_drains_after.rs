#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A real S3 server (moto, started by the test suite on 127.0.0.1) goes
//! away while blobs are queued: fetches fail as `store_unavailable`, no
//! blob is marked missing or stored half, fetching backs off instead of
//! hammering the source, and once S3 is back the queue drains and every
//! object is the source's bytes.

mod common;

use std::time::Duration;

use barn_blobs::{BlobStorage, BlobWorkers, Metrics, StorageConfig};
use barn_store::BlobStatus;
use barn_testkit::{FakePds, S3Server};
use bytes::Bytes;

use common::{ALICE, fast_config, host_account, reference, stored, wait_until};

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
        let body: Vec<u8> = (0..n)
            .map(|j| (j as u32 ^ i.wrapping_mul(2654435761)) as u8)
            .collect();
        cids.push(fake.set_blob(ALICE, Bytes::from(body), "image/png"));
    }

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
    let workers = BlobWorkers::start(
        store.clone(),
        storage.clone(),
        fast_config(100 << 20),
        metrics.clone(),
    )
    .unwrap();

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

    // Then it is gone.
    s3.stop().await;
    reference(&store, ALICE, &cids[5..]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let failures = metrics.fetches("store_unavailable");
    assert!(failures >= 1, "the outage was not noticed");
    for cid in &cids[5..] {
        let s = store.blob(cid).unwrap().unwrap();
        assert_eq!(s.status, BlobStatus::Queued, "{cid}: {s:?}");
    }
    assert_eq!(store.blob_counts(ALICE).unwrap().missing, 0);
    // Backing off: far fewer source requests than 3 s of polling would make.
    let asked: u64 = cids[5..].iter().map(|c| fake.blob_requests(c)).sum();
    assert!(asked < 60, "{asked} getBlob requests during a 3 s outage");

    // Back: everything drains, byte for byte.
    s3.start_again().await.unwrap();
    wait_until(
        &store,
        &cids,
        Duration::from_secs(60),
        "stored after S3 came back",
        stored,
    )
    .await;
    for cid in &cids {
        let got = storage.read(cid).await.unwrap().unwrap();
        assert_eq!(barn_repo::cid_for_raw(&got), *cid);
        assert_eq!(storage.size(cid).await.unwrap(), Some(got.len() as u64));
    }
    eprintln!(
        "store_unavailable {}, getBlob during outage {asked}, stored {}",
        metrics.fetches("store_unavailable"),
        metrics.blobs_stored()
    );
    assert_eq!(metrics.blobs_stored(), cids.len() as u64);
    workers.stop(Duration::from_secs(1)).await.unwrap();
}
