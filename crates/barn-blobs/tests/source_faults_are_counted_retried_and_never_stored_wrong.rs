#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The source misbehaves in every way a PDS can: 404 (both forms), 429
//! with Retry-After, 500, a body that does not hash to the CID (once, or
//! always), a body over the limit (declared and undeclared), a connection
//! cut mid-body. Each is counted with its reason, nothing wrong is ever in
//! the object store, blobs the source never gives are listed as missing
//! for their account with the reason, and everything else is stored once
//! the source behaves. A 429's Retry-After (longer than the fallback wait)
//! is honoured for the blob, and its host is asked nothing meanwhile.

mod common;

use std::time::{Duration, Instant};

use barn_blobs::{BlobStorage, BlobWorkers, Metrics, StorageConfig};
use barn_store::BlobStatus;
use barn_testkit::{BlobFault, FakePds};
use bytes::Bytes;
use cid::Cid;

use common::{ALICE, asked_while_paused, fast_config, host_account, reference, stored, wait_until};

const LIMIT: u64 = 1 << 20;
/// The 429's Retry-After: twice `fast_config`'s fallback for a 429
/// without one would still be far shorter.
const RETRY_AFTER: Duration = Duration::from_secs(2);

fn bytes(n: usize, seed: u8) -> Bytes {
    Bytes::from(
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect::<Vec<u8>>(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_faults_are_counted_retried_and_never_stored_wrong() {
    let (_dir, store) = common::store();
    let blob_dir = tempfile::tempdir().unwrap();
    let fake = FakePds::start().await.unwrap();
    host_account(&store, ALICE, fake.url());

    let set = |n, seed| fake.set_blob(ALICE, bytes(n, seed), "image/jpeg");
    let not_found = set(1000, 1);
    let not_found_lexicon = set(1000, 2);
    let limited = set(2000, 3);
    let failing = set(3000, 4);
    let wrong = set(4000, 5);
    let always_wrong = set(4500, 10);
    let cut = set(300_000, 6);
    let unlengthed = set(5000, 7);
    let too_big = set(LIMIT as usize + 1, 8);
    let too_big_unlengthed = set(LIMIT as usize + 1000, 9);
    let never = barn_repo::cid_for_raw(b"never uploaded");
    let not_a_blob = barn_repo::cid_for_cbor(b"\xa0");

    fake.script_blob(&not_found, vec![BlobFault::NotFound, BlobFault::NotFound]);
    fake.script_blob(&not_found_lexicon, vec![BlobFault::NotFoundByLexicon]);
    fake.script_blob(
        &limited,
        vec![BlobFault::TooManyRequests {
            retry_after_secs: RETRY_AFTER.as_secs(),
        }],
    );
    fake.script_blob(
        &failing,
        vec![BlobFault::ServerError, BlobFault::ServerError],
    );
    fake.script_blob(&wrong, vec![BlobFault::WrongBody]);
    fake.script_blob(&always_wrong, vec![BlobFault::WrongBody; 1000]);
    fake.script_blob(&cut, vec![BlobFault::CutAfter(100_000)]);
    fake.script_blob(&unlengthed, vec![BlobFault::NoLength]);
    fake.script_blob(&too_big_unlengthed, vec![BlobFault::NoLength]);

    let storage = BlobStorage::open(&StorageConfig::Local {
        dir: blob_dir.path().to_owned(),
    })
    .unwrap();
    let metrics = Metrics::new().unwrap();
    let started = Instant::now();
    let config = fast_config(LIMIT);
    assert!(config.retry.rate_limited < RETRY_AFTER / 4);
    let workers =
        BlobWorkers::start(store.clone(), storage.clone(), config, metrics.clone()).unwrap();
    let good = [
        not_found,
        not_found_lexicon,
        limited,
        failing,
        wrong,
        cut,
        unlengthed,
    ];
    let bad = [too_big, too_big_unlengthed, never, not_a_blob, always_wrong];
    reference(&store, ALICE, &good);
    reference(&store, ALICE, &bad);

    wait_until(
        &store,
        &good,
        Duration::from_secs(20),
        "good blobs stored",
        stored,
    )
    .await;
    // 429: that blob not asked for again before its Retry-After (queue
    // times are whole milliseconds, hence the 10 ms), and its host asked
    // for nothing while paused (other blobs are retried every few hundred
    // ms, so a host that was not paused would be asked). The first
    // requests after the pause began may have been on their way already.
    let log = fake.blob_request_log();
    let asked: Vec<_> = log.iter().filter(|r| r.cid == limited).collect();
    assert!(asked.len() >= 2, "{asked:?}");
    let again = asked[1].arrived - asked[0].arrived;
    assert!(
        again >= RETRY_AFTER - Duration::from_millis(10),
        "asked again {again:?} after the 429"
    );
    let paused_at = asked[0].answered.unwrap();
    let during = asked_while_paused(&log, paused_at, RETRY_AFTER);
    assert!(during.is_empty(), "asked while paused: {during:?}");
    let limited_state = store.blob(&limited).unwrap().unwrap();
    let waited = limited_state.stored_ms.unwrap() - limited_state.first_seen_ms;
    assert!(
        waited >= RETRY_AFTER.as_millis() as u64,
        "stored {waited} ms after being queued, before Retry-After",
    );
    wait_until(
        &store,
        &bad,
        Duration::from_secs(10),
        "bad blobs missing",
        |s| s.status == BlobStatus::Missing,
    )
    .await;
    eprintln!("drained in {:?}", started.elapsed());

    // Good blobs: the PDS's bytes, under their CID.
    for cid in &good {
        let got = storage.read(cid).await.unwrap().unwrap();
        assert_eq!(barn_repo::cid_for_raw(&got), *cid);
    }
    // Nothing of the bad ones, and never the wrong body.
    for cid in &bad {
        assert!(storage.read(cid).await.unwrap().is_none(), "{cid} stored");
    }

    // Counted with their reasons.
    assert!(
        metrics.fetches("not_found") >= 3,
        "{}",
        metrics.fetches("not_found")
    );
    assert!(metrics.fetches("rate_limited") >= 1);
    assert!(metrics.fetches("server_error") >= 2);
    assert!(metrics.fetches("hash_mismatch") >= 1);
    assert!(metrics.fetches("network") >= 1);
    assert!(metrics.fetches("too_large") >= 2);
    assert!(metrics.fetches("invalid_cid") >= 1);
    assert_eq!(
        metrics.fetches("stored"),
        good.len() as u64,
        "each good blob stored once"
    );
    assert!(metrics.missing("too_large") >= 2 && metrics.missing("not_found") >= 1);
    // Wrong bytes make a blob missing at once: the one wrong once too,
    // before its retry got the right bytes.
    assert!(
        metrics.missing("hash_mismatch") >= 2,
        "{}",
        metrics.missing("hash_mismatch")
    );

    // The account's missing list, with reasons.
    let missing: Vec<(Cid, String)> = store
        .missing_blobs(ALICE)
        .unwrap()
        .into_iter()
        .map(|(c, s)| (c, s.reason.unwrap()))
        .collect();
    let reason = |cid: &Cid| {
        missing
            .iter()
            .find(|(c, _)| c == cid)
            .map(|(_, r)| r.as_str())
    };
    assert_eq!(missing.len(), 5, "{missing:?}");
    assert_eq!(reason(&always_wrong), Some("hash_mismatch"));
    assert_eq!(reason(&too_big), Some("too_large"));
    assert_eq!(reason(&too_big_unlengthed), Some("too_large"));
    assert_eq!(reason(&never), Some("not_found"));
    assert_eq!(reason(&not_a_blob), Some("invalid_cid"));
    let counts = store.blob_counts(ALICE).unwrap();
    assert_eq!(
        (counts.referenced, counts.stored, counts.missing),
        (12, 7, 5)
    );

    // The missing ones keep being retried, slowly.
    let before = fake.blob_requests(&never);
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(
        fake.blob_requests(&never) > before,
        "missing blobs are retried"
    );
    workers.stop(Duration::from_secs(1)).await.unwrap();
}

/// A blob whose `Content-Length` is over the limit is refused on its
/// headers: its body is not read (the fake could send only what the
/// sockets buffer before barn hung up, far less than the limit, which
/// reading up to the limit would have taken), and the reason names the
/// declared size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_declared_too_large_is_refused_before_its_body_is_read() {
    const LIMIT: u64 = 16 << 20;
    const SIZE: usize = 48 << 20;
    let (_dir, store) = common::store();
    let blob_dir = tempfile::tempdir().unwrap();
    let fake = FakePds::start().await.unwrap();
    host_account(&store, ALICE, fake.url());
    let huge = fake.set_blob(ALICE, bytes(SIZE, 11), "video/mp4");
    let storage = BlobStorage::open(&StorageConfig::Local {
        dir: blob_dir.path().to_owned(),
    })
    .unwrap();
    let metrics = Metrics::new().unwrap();
    let workers = BlobWorkers::start(
        store.clone(),
        storage.clone(),
        fast_config(LIMIT),
        metrics.clone(),
    )
    .unwrap();
    reference(&store, ALICE, &[huge]);
    wait_until(
        &store,
        &[huge],
        Duration::from_secs(10),
        "missing: too large",
        |s| s.status == BlobStatus::Missing,
    )
    .await;
    workers.stop(Duration::from_secs(1)).await.unwrap();
    let state = store.blob(&huge).unwrap().unwrap();
    assert_eq!(state.reason.as_deref(), Some("too_large"));
    assert_eq!(
        state.detail.as_deref(),
        Some(format!("{SIZE} bytes or more, over the limit").as_str()),
        "refused on the declared length, not after reading up to the limit"
    );
    let log = fake.blob_request_log();
    assert!(!log.is_empty());
    for r in &log {
        assert!(
            r.body_bytes < LIMIT / 2,
            "{} body bytes sent before barn hung up",
            r.body_bytes
        );
    }
    assert!(storage.read(&huge).await.unwrap().is_none());
    assert_eq!(metrics.missing("too_large"), 1);
}

/// The source says the account is taken down: its blobs are missing with
/// that reason (and not asked for again on the fast schedule); when the
/// mirror sees the account come back it retries them at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inactive_accounts_blobs_are_missing_until_it_comes_back() {
    let (_dir, store) = common::store();
    let blob_dir = tempfile::tempdir().unwrap();
    let fake = FakePds::start().await.unwrap();
    host_account(&store, ALICE, fake.url());
    let cids: Vec<Cid> = (0..3)
        .map(|i| fake.set_blob(ALICE, bytes(2000, 40 + i), "image/png"))
        .collect();
    fake.set_status(ALICE, false, Some("takendown"));

    let storage = BlobStorage::open(&StorageConfig::Local {
        dir: blob_dir.path().to_owned(),
    })
    .unwrap();
    let metrics = Metrics::new().unwrap();
    let mut config = fast_config(LIMIT);
    // Far longer than the test: only the comeback can bring them.
    config.retry.inactive = Duration::from_secs(3600);
    let workers =
        BlobWorkers::start(store.clone(), storage.clone(), config, metrics.clone()).unwrap();
    reference(&store, ALICE, &cids);
    wait_until(
        &store,
        &cids,
        Duration::from_secs(10),
        "missing: taken down",
        |s| s.status == BlobStatus::Missing && s.reason.as_deref() == Some("account_takendown"),
    )
    .await;
    assert_eq!(metrics.missing("account_takendown"), 3);
    let asked: u64 = cids.iter().map(|c| fake.blob_requests(c)).sum();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        cids.iter().map(|c| fake.blob_requests(c)).sum::<u64>(),
        asked
    );

    // Back, as an #account event makes the mirror write it.
    fake.set_status(ALICE, true, None);
    let mut batch = barn_store::Batch::new();
    batch.retry_blobs_of(ALICE);
    store.write(batch).unwrap();
    wait_until(
        &store,
        &cids,
        Duration::from_secs(10),
        "stored once back",
        stored,
    )
    .await;
    for cid in &cids {
        assert_eq!(
            barn_repo::cid_for_raw(&storage.read(cid).await.unwrap().unwrap()),
            *cid
        );
    }
    workers.stop(Duration::from_secs(1)).await.unwrap();
}
