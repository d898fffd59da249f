//! The blob half of the network tests: barn follows both PDSes through the
//! whole workload with blob workers running, into the storage given; at
//! the end every blob a live record of every account references (gwen's
//! on PDS b included) is stored, byte-identical to the PDS's `getBlob`,
//! and blobs whose records were deleted or replaced while barn was
//! watching are still there.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use barn_blobs::{BlobConfig, BlobStorage, BlobWorkers, StorageConfig};
use barn_mirror::MirrorConfig;
use barn_store::BlobStatus;
use barn_testkit::{Client, Network, WorkloadOptions};
use cid::Cid;

pub async fn workload_blobs_are_stored(storage: StorageConfig) {
    super::logging();
    let net = Network::start().await.unwrap();
    let (_dir, store) = super::store();
    let (mirror, _metrics) = super::mirror(&net, &store, MirrorConfig::default());
    let storage = BlobStorage::open(&storage).unwrap();
    let blob_metrics = barn_blobs::Metrics::new().unwrap();
    let workers = BlobWorkers::start(
        store.clone(),
        storage.clone(),
        BlobConfig::default(),
        blob_metrics.clone(),
    )
    .unwrap();
    mirror
        .start(&[net.pds_a.url.clone(), net.pds_b.url.clone()])
        .unwrap();

    // While the workload runs, remember every blob barn has stored: the
    // ones whose records go away later must still be there at the end.
    let watcher = {
        let store = store.clone();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut seen = BTreeSet::new();
            while !*stopped.borrow() {
                for (did, _) in store.repos().unwrap() {
                    for (cid, state) in store.account_blobs(&did).unwrap() {
                        if state.status == BlobStatus::Stored {
                            seen.insert(cid);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            seen
        });
        (stop, task)
    };
    let summary = net.run_workload(&WorkloadOptions::default()).await.unwrap();
    super::wait_matched(&store, &net, &summary, Duration::from_secs(90)).await;

    // Every blob of every live record: stored, and the PDS's bytes.
    let live: Vec<(String, String, Cid)> = summary
        .accounts
        .iter()
        .filter(|a| a.status == "active")
        .flat_map(|a| {
            a.blobs
                .iter()
                .map(|c| (a.did.clone(), a.pds.clone(), c.parse::<Cid>().unwrap()))
        })
        .collect();
    assert!(
        live.len() >= 5,
        "the workload references only {} blobs",
        live.len()
    );
    // Every account is checked: gwen, native to PDS b, too.
    for acct in summary.accounts.iter().filter(|a| a.status == "active") {
        assert!(
            live.iter().any(|(did, _, _)| *did == acct.did),
            "{} has no live blob to check",
            acct.name
        );
    }
    assert!(
        summary
            .account("gwen")
            .is_some_and(|g| g.status == "active")
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let waiting: Vec<_> = live
            .iter()
            .filter(|(_, _, cid)| {
                store.blob(cid).unwrap().map(|s| s.status) != Some(BlobStatus::Stored)
            })
            .map(|(did, _, cid)| (did.clone(), store.blob(cid).unwrap()))
            .collect();
        if waiting.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "blobs not stored: {waiting:#?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let client = Client::new();
    for (did, pds, cid) in &live {
        let ours = storage
            .read(cid)
            .await
            .unwrap()
            .expect("stored blob readable");
        let theirs = client
            .get(
                pds,
                "com.atproto.sync.getBlob",
                &[("did", did), ("cid", &cid.to_string())],
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ours, theirs, "{did} {cid}");
        assert_eq!(barn_repo::cid_for_raw(&ours), *cid);
        let refs: Vec<Cid> = store
            .account_blobs(did)
            .unwrap()
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        assert!(refs.contains(cid), "{did} lists {cid}");
    }

    let (stop, task) = watcher;
    let _ = stop.send(true);
    let seen = task.await.unwrap();
    // Stored once, referenced no more: still stored, still readable.
    let live_set: BTreeSet<Cid> = live.iter().map(|(_, _, c)| *c).collect();
    let gone: Vec<Cid> = seen.difference(&live_set).copied().collect();
    for cid in &gone {
        assert_eq!(store.blob(cid).unwrap().unwrap().status, BlobStatus::Stored);
        let bytes = storage.read(cid).await.unwrap().expect("kept");
        assert_eq!(barn_repo::cid_for_raw(&bytes), *cid);
    }
    let uploaded: usize = summary
        .accounts
        .iter()
        .map(|a| a.uploaded_blobs.len())
        .sum();
    eprintln!(
        "{} live blobs checked against getBlob; {} of {uploaded} uploaded were stored and later dereferenced, all kept; stored {}, fetches not_found {}, commit-to-stored (n, sum s) {:?}",
        live.len(),
        gone.len(),
        blob_metrics.blobs_stored(),
        blob_metrics.fetches("not_found"),
        blob_metrics.stored_latency(),
    );
    assert!(
        !gone.is_empty(),
        "no dereferenced blob was ever stored: the check above proved nothing"
    );

    workers.stop(Duration::from_secs(5)).await.unwrap();
    mirror.shutdown().await;
    net.stop().await.unwrap();
}
