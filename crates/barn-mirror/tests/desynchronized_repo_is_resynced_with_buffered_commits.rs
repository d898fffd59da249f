#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A repo made desynchronized on purpose (the fake PDS sends a crafted
//! commit barn cannot chain to its head) is resynced automatically: barn
//! fetches the repo with `getRepo` and stores it as one resync revision.
//! Commits that arrive while that import runs are buffered and applied on
//! top of the imported head, in stream order; when they overflow the
//! buffer, the repo is simply imported once more.

mod common;

use common::wait_for;

use std::sync::Arc;
use std::time::Duration;

use barn_mirror::{Metrics, Mirror, MirrorConfig};
use barn_store::{Source, Store, SyncState};
use barn_testkit::{DraftOptions, FakeAccount, FakePds};

struct Setup {
    fake: FakePds,
    store: Arc<Store>,
    mirror: Mirror,
    metrics: Metrics,
    acct: FakeAccount,
    _dir: tempfile::TempDir,
}

/// barn follows the fake PDS and holds the account's genesis commit; then
/// the account moves three commits ahead where barn cannot see it (no
/// frames), and `getRepo` is made slow.
async fn setup(repo_buffer_bytes: usize) -> Setup {
    common::logging();
    let fake = FakePds::start().await.unwrap();
    let host = fake.url().to_owned();
    let mut acct = FakeAccount::new(&FakeAccount::plc_did(7), 7);
    let did = acct.did().to_owned();
    fake.set_did_doc(&did, acct.did_doc(&host));
    let (dir, store) = common::store();
    let config = MirrorConfig {
        new_host_cursor: Some(0),
        backfill: false,
        backoff_min: Duration::from_millis(50),
        resync_retry: Duration::from_millis(200),
        repo_buffer_bytes,
        ..MirrorConfig::default()
    };
    let (mirror, metrics) = common::mirror_at(&host, &store, config);
    mirror.start(std::slice::from_ref(&host)).unwrap();

    let genesis = acct
        .draft_with(
            1,
            &DraftOptions {
                records: 5,
                ..DraftOptions::default()
            },
        )
        .unwrap();
    fake.push(1, genesis.frame());
    let want = genesis.commit_cid();
    wait_for("the genesis commit", || {
        store
            .repo(&did)
            .unwrap()
            .is_some_and(|s| s.head == Some(want))
    })
    .await;
    acct.apply(&genesis);
    for _ in 0..3 {
        let d = acct.draft(0).unwrap();
        acct.apply(&d);
    }
    fake.set_repo(&did, acct.car());
    fake.set_get_repo_delay(Duration::from_millis(1500));
    Setup {
        fake,
        store,
        mirror,
        metrics,
        acct,
        _dir: dir,
    }
}

/// Pushes a crafted commit at seq 2: valid on the account's real head,
/// but barn holds an older one, so it cannot be chained (since and
/// prevData differ). Waits for barn to mark the repo desynchronized.
async fn desync(fake: &FakePds, store: &Store, acct: &FakeAccount) {
    let mut bad = acct.draft(2).unwrap();
    bad.event.prev_data = Some(barn_repo::cid_for_cbor(b"\xa0"));
    fake.push(2, bad.frame());
    wait_for("the repo to be marked desynchronized", || {
        store
            .repo(acct.did())
            .unwrap()
            .is_some_and(|s| s.sync == SyncState::Desynchronized)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desynchronized_repo_is_resynced_and_commits_buffered_meanwhile_are_applied() {
    let Setup {
        fake,
        store,
        mirror,
        metrics,
        mut acct,
        _dir,
    } = setup(4 << 20).await;
    let did = acct.did().to_owned();
    let imported_head = acct.head().unwrap().clone();

    desync(&fake, &store, &acct).await;
    // While getRepo is slow, two valid commits arrive: buffered.
    let next = acct.draft(3).unwrap();
    acct.apply(&next);
    let last = acct.draft(4).unwrap();
    acct.apply(&last);
    fake.push(3, next.frame());
    fake.push(4, last.frame());

    let want = last.commit_cid();
    let s = store.clone();
    wait_for("the buffered commits on top of the import", || {
        s.repo(&did)
            .unwrap()
            .is_some_and(|s| s.head == Some(want) && s.sync == SyncState::Synchronized)
    })
    .await;
    let history = store.history(&did).unwrap();
    let got: Vec<(Source, &str)> = history.iter().map(|e| (e.source, e.rev.as_str())).collect();
    assert_eq!(
        got,
        vec![
            (Source::Firehose, history[0].rev.as_str()),
            (Source::Resync, imported_head.rev.as_str()),
            (Source::Firehose, next.event.rev.as_str()),
            (Source::Firehose, last.event.rev.as_str()),
        ]
    );
    let reason = history[1].reason.as_deref().unwrap_or_default();
    assert!(reason.contains("mismatch"), "{reason}");
    // The resync recorded the three commits barn never saw as creates.
    assert_eq!(history[1].ops.len(), 3);
    assert_eq!(
        store.records(&did).unwrap(),
        acct.records()
            .iter()
            .map(|(p, c)| (p.clone(), *c))
            .collect::<Vec<_>>()
    );
    assert!(metrics.reconcile_events("buffered") >= 2);
    assert_eq!(metrics.resyncs("imported"), 1);
    assert_eq!(fake.get_repo_count(&did), 1);
    mirror.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_overflowing_the_import_buffer_lead_to_one_more_import() {
    let Setup {
        fake,
        store,
        mirror,
        metrics,
        mut acct,
        _dir,
    } = setup(1).await;
    let did = acct.did().to_owned();
    desync(&fake, &store, &acct).await;
    // Too big for a 1-byte buffer: dropped, and the repo imported again.
    let next = acct.draft(3).unwrap();
    acct.apply(&next);
    fake.push(3, next.frame());
    let s = store.clone();
    wait_for("the overflow", || {
        metrics.reconcile_events("buffer_overflow") >= 1
    })
    .await;
    fake.set_repo(&did, acct.car());
    wait_for("a second getRepo", || fake.get_repo_count(&did) >= 2).await;
    let want = next.commit_cid();
    wait_for("the second import", || {
        s.repo(&did)
            .unwrap()
            .is_some_and(|s| s.head == Some(want) && s.sync == SyncState::Synchronized)
    })
    .await;
    // The first import, then the one the overflow asked for.
    assert_eq!(fake.get_repo_count(&did), 2);
    assert_eq!(
        store.records(&did).unwrap(),
        acct.records()
            .iter()
            .map(|(p, c)| (p.clone(), *c))
            .collect::<Vec<_>>()
    );
    mirror.shutdown().await;
}
