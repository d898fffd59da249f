#![allow(clippy::unwrap_used, clippy::expect_used)]
//! barn is stopped for longer than PDS a keeps its firehose backlog (shrunk
//! to 3 s). Meanwhile the workload deletes posts. When barn comes back its
//! cursor is too old: the PDS says `OutdatedCursor` and skips the events
//! barn missed. barn must catch up by reconcile: list the host, find every
//! repo whose head moved, fetch it (`since` barn's rev), and store the
//! difference — deletes included — as one revision marked as a reconcile
//! naming `OutdatedCursor`. The deleted records are gone from barn's
//! current state and still in its history.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use barn_mirror::MirrorConfig;
use barn_repo::car::read_car;
use barn_repo::commit::verify_repo;
use barn_store::{OpAction, Source};
use barn_testkit::{Client, Network, NetworkOptions, Pause, WorkloadOptions};

const BACKLOG: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outdated_cursor_is_caught_up_by_reconcile_with_deletes() {
    common::logging();
    let net = Network::start_with(&NetworkOptions {
        repo_backfill_limit: Some(BACKLOG),
    })
    .await
    .unwrap();
    let (_dir, store) = common::store();
    let config = MirrorConfig {
        reconcile_grace: Duration::from_millis(500),
        ..MirrorConfig::default()
    };
    let (mirror, _) = common::mirror(&net, &store, config.clone());
    mirror.start(std::slice::from_ref(&net.pds_a.url)).unwrap();

    let mut run = net
        .start_workload(&WorkloadOptions {
            pause_at: Some(Pause::Deletes),
            lifecycle: false,
            posts: 3,
            ..WorkloadOptions::default()
        })
        .await
        .unwrap();
    run.wait_paused().await.unwrap();
    let client = Client::new();
    let listed = common::listed(&client, &net.pds_a.url).await;
    common::wait_for_revs(&store, &listed, Duration::from_secs(60)).await;
    // What barn holds before it stops.
    let mut before: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    for (did, rev) in &listed {
        let paths = store
            .records(did)
            .unwrap()
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        before.insert(did.clone(), (rev.clone(), paths));
    }
    mirror.shutdown().await;
    drop(mirror);

    // The deletes happen while barn is down, and age past the backlog.
    run.resume().await.unwrap();
    let mut summary = run.finish().await.unwrap();
    summary.accounts.retain(|a| a.name != "gwen");
    tokio::time::sleep(BACKLOG + Duration::from_secs(2)).await;

    let (mirror, metrics) = common::mirror(&net, &store, config);
    mirror.start(std::slice::from_ref(&net.pds_a.url)).unwrap();
    common::wait_matched(&store, &net, &summary, Duration::from_secs(90)).await;
    assert!(metrics.reconcile_events("outdated_cursor") >= 1);
    assert!(metrics.reconcile_events("suspect_fetched") >= 1);
    assert!(
        metrics.import_fetches("since") >= 1,
        "reconcile fetches only what changed"
    );
    assert_eq!(metrics.hard_verification_failures(), 0);

    let mut deleted_total = 0;
    for acct in &summary.accounts {
        let (old_rev, old_paths) = &before[&acct.did];
        let now: BTreeSet<String> = acct.records.iter().map(|r| r.path.clone()).collect();
        let deleted: Vec<&String> = old_paths.difference(&now).collect();
        deleted_total += deleted.len();
        let history = store.history(&acct.did).unwrap();
        let reconciles: Vec<_> = history
            .iter()
            .filter(|e| e.source == Source::Reconcile)
            .collect();
        assert_eq!(reconciles.len(), 1, "{}: {history:?}", acct.name);
        let entry = reconciles[0];
        let reason = entry.reason.as_deref().unwrap_or_default();
        assert!(reason.contains("OutdatedCursor"), "{reason}");
        assert_eq!(entry.since.as_deref(), Some(old_rev.as_str()));
        let current: BTreeSet<String> = store
            .records(&acct.did)
            .unwrap()
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        // The old revision, exported from barn's history, still has them.
        let old_car = store.export_car(&acct.did, Some(old_rev)).unwrap();
        let file = read_car(old_car.into(), &Default::default()).unwrap();
        let old = verify_repo(&file.blocks, file.root().unwrap(), Some(&acct.did), None).unwrap();
        let old_records: BTreeSet<&str> = old.records.iter().map(|(p, _)| p.as_str()).collect();
        for path in deleted {
            assert!(
                !current.contains(path),
                "{}: {path} still current",
                acct.name
            );
            assert!(
                store
                    .revision_ops(&acct.did, entry)
                    .unwrap()
                    .iter()
                    .any(|op| op.action == OpAction::Delete && &op.path == path),
                "{}: no delete of {path} in {entry:?}",
                acct.name
            );
            assert!(old_records.contains(path.as_str()), "{}: {path}", acct.name);
        }
    }
    assert!(
        deleted_total >= 6,
        "the workload deletes posts of every account"
    );
    mirror.shutdown().await;
    net.stop().await.unwrap();
}
