#![allow(clippy::unwrap_used, clippy::expect_used)]
//! barn starts AFTER the workload has written its content: it lists PDS a
//! (`listRepos`), imports every account with `getRepo` and must then hold
//! each one exactly as the PDS does. Then the workload goes on (handle
//! change, deactivation, takedown, deletion, migration to PDS b, more
//! posts) and barn, following the firehose from where the listing left
//! it, must stay matched.

mod common;

use std::time::Duration;

use barn_mirror::{MirrorConfig, normalize_host};
use barn_store::Source;
use barn_testkit::{Client, Network, Pause, WorkloadOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_after_the_workload_then_the_live_workload_stays_matched() {
    common::logging();
    let net = Network::start().await.unwrap();
    let mut run = net
        .start_workload(&WorkloadOptions {
            pause_at: Some(Pause::Lifecycle),
            ..WorkloadOptions::default()
        })
        .await
        .unwrap();
    run.wait_paused().await.unwrap();

    // barn has never seen PDS a: it starts live (no backlog replay) and
    // backfills by listing.
    let (_dir, store) = common::store();
    let config = MirrorConfig {
        new_host_cursor: None,
        ..MirrorConfig::default()
    };
    let (mirror, metrics) = common::mirror(&net, &store, config);
    mirror.start(std::slice::from_ref(&net.pds_a.url)).unwrap();

    let client = Client::new();
    let listed = common::listed(&client, &net.pds_a.url).await;
    assert_eq!(listed.len(), 6, "PDS a holds six active accounts");
    common::wait_for_revs(&store, &listed, Duration::from_secs(60)).await;
    // The pass is over and nothing is left to import.
    let pds_a = normalize_host(&net.pds_a.url);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let p = mirror
            .progress()
            .into_iter()
            .find(|p| p.host == pds_a)
            .unwrap();
        if p.pass.is_none() && p.last_pass_done_ms.is_some() && p.queued == 0 && p.importing == 0 {
            assert_eq!(p.imports_failed, 0, "{p:?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{p:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (did, rev) in &listed {
        let car = store.export_car(did, None).unwrap();
        let cmp = barn_testkit::compare_with_pds(&client, &net.plc.url, did, car.into())
            .await
            .unwrap();
        assert_eq!(&cmp.rev, rev);
        // One history entry: the backfill import, every record a create.
        let history = store.history(did).unwrap();
        assert_eq!(history.len(), 1, "{did}: {history:?}");
        assert_eq!(history[0].source, Source::Resync);
        assert_eq!(history[0].reason.as_deref(), Some("backfill"));
        assert_eq!(
            history[0].op_counts().creates,
            store.records(did).unwrap().len() as u64
        );
    }
    assert!(metrics.import_fetches("full") >= 6);
    assert_eq!(metrics.hard_verification_failures(), 0);

    // The live part: barn follows the rest of the workload.
    run.resume().await.unwrap();
    let mut summary = run.finish().await.unwrap();
    summary.accounts.retain(|a| a.name != "gwen");
    common::wait_matched(&store, &net, &summary, Duration::from_secs(90)).await;
    common::assert_lifecycle(&store, &mirror, &net, &summary);
    // Carol's post after the pause came from the firehose, on top of the
    // backfilled head.
    let carol = summary.account("carol").unwrap();
    let history = store.history(&carol.did).unwrap();
    assert!(history.len() > 1, "{history:?}");
    assert!(
        history[1..].iter().any(|e| e.source == Source::Firehose),
        "{history:?}"
    );
    assert_eq!(metrics.hard_verification_failures(), 0);
    mirror.shutdown().await;
    net.stop().await.unwrap();
}
