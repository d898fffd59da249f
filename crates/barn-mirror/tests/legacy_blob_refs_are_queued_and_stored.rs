#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Old records name their blobs in the legacy form, `{"cid": "…",
//! "mimeType": "…"}`, not `{"$type": "blob", "ref": …}`. A commit from a
//! (fake) PDS whose records do so has those blobs queued with the commit
//! and stored by the blob workers, byte for byte, under the account.

mod common;

use std::time::{Duration, Instant};

use barn_blobs::{BlobConfig, BlobStorage, BlobWorkers, StorageConfig};
use barn_mirror::MirrorConfig;
use barn_store::BlobStatus;
use barn_testkit::{DraftOptions, FakeAccount, FakePds};
use bytes::Bytes;
use cid::Cid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_blob_refs_are_queued_and_stored() {
    let fake = FakePds::start().await.unwrap();
    let host = fake.url().to_owned();
    let mut acct = FakeAccount::new(&FakeAccount::plc_did(31), 31);
    let did = acct.did().to_owned();
    fake.set_did_doc(&did, acct.did_doc(&host));
    let blobs: Vec<Cid> = (0..2u8)
        .map(|i| fake.set_blob(&did, Bytes::from(vec![i; 5000]), "image/jpeg"))
        .collect();

    let (dir, store) = common::store();
    let config = MirrorConfig {
        new_host_cursor: Some(0),
        // The account comes from the stream.
        backfill: false,
        ..MirrorConfig::default()
    };
    let (mirror, _metrics) = common::mirror_at(&host, &store, config);
    let storage = BlobStorage::open(&StorageConfig::Local {
        dir: dir.path().join("blobs"),
    })
    .unwrap();
    let workers = BlobWorkers::start(
        store.clone(),
        storage.clone(),
        BlobConfig {
            poll: Duration::from_millis(20),
            ..BlobConfig::default()
        },
        barn_blobs::Metrics::new().unwrap(),
    )
    .unwrap();
    mirror.start(std::slice::from_ref(&host)).unwrap();

    let genesis = acct
        .draft_with(
            1,
            &DraftOptions {
                records: 3,
                blobs: blobs.clone(),
                legacy_blobs: true,
                ..DraftOptions::default()
            },
        )
        .unwrap();
    // The records really carry the legacy form, and only it.
    let (_, record) = genesis
        .blocks
        .iter()
        .find(|(c, _)| *c == genesis.records[0].1)
        .unwrap();
    let json = barn_repo::data::to_json(&barn_repo::data::decode(record).unwrap());
    assert_eq!(json["image"]["cid"], blobs[0].to_string(), "{json}");
    assert!(json["image"].get("$type").is_none(), "{json}");
    fake.push(1, genesis.frame());
    acct.apply(&genesis);
    fake.set_repo(&did, acct.car());

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let states: Vec<_> = blobs.iter().map(|c| store.blob(c).unwrap()).collect();
        if states
            .iter()
            .all(|s| s.as_ref().is_some_and(|s| s.status == BlobStatus::Stored))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "legacy blob refs not stored: {states:#?} (repo {:?})",
            store.repo(&did).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let listed: Vec<Cid> = store
        .account_blobs(&did)
        .unwrap()
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    for (i, cid) in blobs.iter().enumerate() {
        assert!(listed.contains(cid), "{cid} not listed for the account");
        let bytes = storage.read(cid).await.unwrap().unwrap();
        assert_eq!(bytes, Bytes::from(vec![i as u8; 5000]));
        assert_eq!(fake.blob_requests(cid), 1);
    }
    workers.stop(Duration::from_secs(1)).await.unwrap();
    mirror.shutdown().await;
}
