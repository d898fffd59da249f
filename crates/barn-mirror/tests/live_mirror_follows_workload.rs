#![allow(clippy::unwrap_used, clippy::expect_used)]
//! barn follows PDS a while the whole workload runs (content, lifecycle,
//! migration to PDS b). Along the way the test snapshots repos straight
//! from the PDS; at the end barn must hold every one of those revisions
//! exactly, every account's current state must equal the PDS's, statuses
//! must be right, the migrated account must be followed on PDS b, and no
//! commit may have failed verification.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use barn_mirror::{MirrorConfig, normalize_host};
use barn_testkit::{Client, Identity, Network, WorkloadOptions, compare_cars};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_mirror_follows_the_workload_lifecycle_and_migration() {
    common::logging();
    let net = Network::start().await.unwrap();
    let (_dir, store) = common::store();
    let (mirror, metrics) = common::mirror(&net, &store, MirrorConfig::default());
    mirror.start(std::slice::from_ref(&net.pds_a.url)).unwrap();

    // Snapshots straight from the PDS while the workload runs.
    let client = Client::new();
    let snapper = {
        let client = client.clone();
        let pds = net.pds_a.url.clone();
        let plc = net.plc.url.clone();
        tokio::spawn(async move {
            let mut snaps: Vec<(Identity, Bytes)> = Vec::new();
            let started = Instant::now();
            let mut i = 0usize;
            while started.elapsed() < Duration::from_secs(120) {
                tokio::time::sleep(Duration::from_millis(150)).await;
                let Ok(page) = client
                    .get_json(&pds, "com.atproto.sync.listRepos", &[("limit", "100")])
                    .await
                else {
                    continue;
                };
                let repos = page["repos"].as_array().cloned().unwrap_or_default();
                let active: Vec<_> = repos.iter().filter(|r| r["active"] == true).collect();
                if active.is_empty() {
                    continue;
                }
                i += 1;
                let did = active[i % active.len()]["did"].as_str().unwrap().to_owned();
                let Ok(id) = Identity::resolve(&client, &plc, &did).await else {
                    continue;
                };
                if normalize_host(&id.pds) != normalize_host(&pds) {
                    continue;
                }
                if let Ok(Ok(car)) = client
                    .get(&pds, "com.atproto.sync.getRepo", &[("did", &did)])
                    .await
                {
                    snaps.push((id, car));
                }
                if snaps.len() >= 60 {
                    break;
                }
            }
            snaps
        })
    };
    let mut summary = net.run_workload(&WorkloadOptions::default()).await.unwrap();
    let snaps = snapper.await.unwrap();
    // barn tracks PDS a: every account created there (gwen lives on b).
    summary.accounts.retain(|a| a.name != "gwen");
    assert_eq!(summary.accounts.len(), 6);

    common::wait_matched(&store, &net, &summary, Duration::from_secs(90)).await;
    common::assert_lifecycle(&store, &mirror, &net, &summary);
    assert!(metrics.accounts_moved() >= 1);

    // Revisions seen along the way.
    let mut checked = BTreeMap::new();
    for (id, car) in &snaps {
        let file = barn_repo::car::read_car(car.clone(), &Default::default()).unwrap();
        let root = *file.root().unwrap();
        let commit = barn_repo::commit::Commit::decode(file.blocks.get(&root).unwrap()).unwrap();
        let ours = store
            .export_car(&id.did, Some(&commit.rev))
            .unwrap_or_else(|e| panic!("{} at {}: {e}", id.did, commit.rev));
        compare_cars(id, Bytes::from(ours), car.clone()).unwrap();
        checked.insert((id.did.clone(), commit.rev.clone()), ());
    }
    eprintln!(
        "{} snapshots, {} distinct revisions checked; {} commits applied; resyncs imported {}",
        snaps.len(),
        checked.len(),
        metrics.commits_applied(),
        metrics.resyncs("imported")
    );
    assert!(
        checked.len() >= 20,
        "only {} distinct revisions snapshotted",
        checked.len()
    );
    assert_eq!(metrics.hard_verification_failures(), 0);
    assert!(metrics.commits_applied() >= summary.commits / 2);

    mirror.shutdown().await;
    net.stop().await.unwrap();
}
