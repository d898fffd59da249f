#![allow(clippy::unwrap_used, clippy::expect_used)]
//! barn follows PDS a while the whole workload runs (content, lifecycle,
//! migration to PDS b). Along the way the test snapshots repos straight
//! from the PDS; at the end barn must hold every one of those revisions
//! exactly, every account's current state must equal the PDS's, statuses
//! must be right, the migrated account must be followed on PDS b, and no
//! commit may have failed verification.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use barn_identity::{Resolver, ResolverConfig};
use barn_mirror::{Metrics, Mirror, MirrorConfig, normalize_host};
use barn_store::{Store, StoreOptions};
use barn_testkit::{Client, Identity, Network, WorkloadOptions, compare_cars, compare_with_pds};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_mirror_follows_the_workload_lifecycle_and_migration() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BARN_TEST_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
    let net = Network::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), &StoreOptions::default()).unwrap());
    let resolver = Resolver::new(ResolverConfig {
        plc_url: net.plc.url.clone(),
        ttl: Duration::from_secs(5),
        allow_http_localhost: true,
        ..ResolverConfig::default()
    })
    .unwrap();
    let metrics = Metrics::new().unwrap();
    let mirror = Mirror::new(
        store.clone(),
        resolver,
        MirrorConfig::default(),
        metrics.clone(),
    );
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

    // Wait until barn holds every account's head (or the status that
    // explains why it cannot).
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut behind = Vec::new();
        for acct in &summary.accounts {
            let state = store.repo(&acct.did).unwrap();
            let ok = match (&state, acct.status.as_str()) {
                (Some(s), "deleted") => !s.active,
                (Some(s), _) => s.rev == acct.rev && s.active,
                (None, _) => false,
            };
            if !ok {
                behind.push((
                    acct.name.clone(),
                    state.map(|s| (s.rev, s.active, s.status, s.host, s.sync)),
                ));
            }
        }
        if behind.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "barn is still behind: {behind:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Every account's current state equals the PDS's.
    for acct in summary.accounts.iter().filter(|a| a.status == "active") {
        let state = store.repo(&acct.did).unwrap().unwrap();
        assert_eq!(
            normalize_host(&state.host),
            normalize_host(&acct.pds),
            "{}",
            acct.name
        );
        let car = store.export_car(&acct.did, None).unwrap();
        let cmp = compare_with_pds(&client, &net.plc.url, &acct.did, Bytes::from(car))
            .await
            .unwrap();
        assert_eq!(Some(cmp.rev), acct.rev, "{}", acct.name);
        // The record index agrees with the tree.
        let records: Vec<(String, String)> = store
            .records(&acct.did)
            .unwrap()
            .into_iter()
            .map(|(p, c)| (p, c.to_string()))
            .collect();
        let expected: Vec<(String, String)> = acct
            .records
            .iter()
            .map(|r| (r.path.clone(), r.cid.to_string()))
            .collect();
        assert_eq!(records, expected, "{}", acct.name);
    }
    // Statuses: the deleted account keeps its history.
    let erin = summary.account("erin").unwrap();
    let state = store.repo(&erin.did).unwrap().unwrap();
    assert_eq!(
        (state.active, state.status.as_deref()),
        (false, Some("deleted"))
    );
    assert!(!store.history(&erin.did).unwrap().is_empty());
    for name in ["carol", "dave", "bob"] {
        let s = store
            .repo(&summary.account(name).unwrap().did)
            .unwrap()
            .unwrap();
        assert!(s.active && s.status.is_none(), "{name}: {s:?}");
    }
    assert_eq!(
        store
            .repo(&summary.account("bob").unwrap().did)
            .unwrap()
            .unwrap()
            .handle
            .as_deref(),
        Some("bob-renamed.test")
    );
    // The migrated account is followed on PDS b.
    let frank = summary.account("frank").unwrap();
    let s = store.repo(&frank.did).unwrap().unwrap();
    assert_eq!(normalize_host(&s.host), normalize_host(&net.pds_b.url));
    assert!(mirror.hosts().contains(&normalize_host(&net.pds_b.url)));
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
