#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `barn serve` backfills a host whose records reference 40 slow blobs and
//! is `kill -9`ed again and again while it fetches them. No queued blob is
//! lost: after the last restart every one is stored, byte for byte, and
//! the store says so.

mod common;

use std::time::{Duration, Instant};

use barn_blobs::BlobStorage;
use barn_repo::Cid;
use barn_store::{BlobStatus, Store, StoreOptions};
use barn_testkit::{BlobFault, DraftOptions, FakeAccount, FakePds};
use bytes::Bytes;
use rand::Rng;

const ACCOUNTS: u64 = 4;
const BLOBS_PER_ACCOUNT: usize = 10;
const KILLS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_fetches_killed_with_sigkill_lose_no_queued_blob() {
    let fake = FakePds::start().await.unwrap();
    let host = fake.url().to_owned();
    let mut blobs: Vec<Cid> = Vec::new();
    for i in 0..ACCOUNTS {
        let mut acct = FakeAccount::new(&FakeAccount::plc_did(700 + i), 700 + i);
        let mine: Vec<Cid> = (0..BLOBS_PER_ACCOUNT)
            .map(|j| {
                let body: Vec<u8> = (0..200_000u32)
                    .map(|k| (k ^ (i as u32 * 7919 + j as u32 * 104729)) as u8)
                    .collect();
                fake.set_blob(acct.did(), Bytes::from(body), "image/png")
            })
            .collect();
        let genesis = acct
            .draft_with(
                0,
                &DraftOptions {
                    records: BLOBS_PER_ACCOUNT + 5,
                    blobs: mine.clone(),
                    ..DraftOptions::default()
                },
            )
            .unwrap();
        acct.apply(&genesis);
        fake.set_did_doc(acct.did(), acct.did_doc(&host));
        fake.set_repo(acct.did(), acct.car());
        blobs.extend(mine);
    }

    let dir = tempfile::tempdir().unwrap();
    let (data, config) = common::write_config(dir.path(), &host, true, "");
    let log = dir.path().join("barn.log");
    let blob_path = |cid: &Cid| data.join("blobs").join(BlobStorage::key(cid).as_ref());
    let requests = |fake: &FakePds| blobs.iter().map(|c| fake.blob_requests(c)).sum::<u64>();
    let mut rng = rand::rng();

    // Every request is slow: a kill lands while several are under way.
    for cid in &blobs {
        fake.script_blob(
            cid,
            vec![BlobFault::Delay(Duration::from_millis(150)); KILLS + 1],
        );
    }
    let mut kills = 0;
    while kills < KILLS {
        let before = requests(&fake);
        let mut barn = common::spawn_barn(["serve", "--config", config.to_str().unwrap()], &log);
        let deadline = Instant::now() + Duration::from_secs(30);
        while requests(&fake) == before {
            assert!(Instant::now() < deadline, "barn never asked for a blob");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..600))).await;
        barn.start_kill().unwrap();
        barn.wait().await.unwrap();
        kills += 1;
        let stored = blobs.iter().filter(|c| blob_path(c).exists()).count();
        eprintln!(
            "kill {kills}: {stored} of {} blobs stored; {} requests",
            blobs.len(),
            requests(&fake) - before
        );
        if stored == blobs.len() {
            break;
        }
    }
    assert!(
        kills >= 3,
        "fetching finished before barn was killed 3 times"
    );

    // The last run: everything still queued is fetched.
    let started = common::log_count(&log, "barn is running");
    let mut barn = common::spawn_barn(["serve", "--config", config.to_str().unwrap()], &log);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !blobs.iter().all(|c| blob_path(c).exists()) {
        assert!(
            Instant::now() < deadline,
            "blobs lost: {:?}\n{}",
            blobs
                .iter()
                .filter(|c| !blob_path(c).exists())
                .collect::<Vec<_>>(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A clean stop, then the store's word. The SIGTERM waits for start-up
    // to finish: the last kill may already have left every blob stored,
    // and a signal before the handlers exist ends the process (15).
    common::wait_running(&log, started).await;
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(barn.id().unwrap() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), barn.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");

    let store = Store::open(&data.join("store"), &StoreOptions::default()).unwrap();
    for cid in &blobs {
        let state = store.blob(cid).unwrap().unwrap();
        assert_eq!(state.status, BlobStatus::Stored, "{cid}: {state:?}");
        let bytes = std::fs::read(blob_path(cid)).unwrap();
        assert_eq!(barn_repo::cid_for_raw(&bytes), *cid);
    }
    // Reported, not checked: an upload cut by a kill may leave its staging
    // file (never under a blob's key).
    let mut files = 0;
    let mut stack = vec![data.join("blobs")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                files += 1;
            }
        }
    }
    eprintln!("{kills} kills; {files} files under blobs/");
}
