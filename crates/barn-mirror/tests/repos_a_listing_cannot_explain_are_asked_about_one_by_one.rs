#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Reconcile passes that a `listRepos` listing cannot do alone:
//!
//! - a whole host whose listing no longer shows a repo barn holds (a
//!   deleted account drops out of `listRepos`): barn asks
//!   `getRepoStatus`, and on `RepoNotFound` marks the account deleted,
//!   keeping its backup; repos the listing did show are not asked about;
//! - a host followed for some accounts only (nothing to list): each
//!   account is asked about (`getRepoStatus`, `getLatestCommit`); a newer
//!   head is fetched and stored as a reconcile revision, a new status is
//!   applied, and an unchanged account is not fetched again.

mod common;

use common::wait_for;

use std::sync::Arc;
use std::time::Duration;

use barn_mirror::{Metrics, Mirror, MirrorConfig};
use barn_store::{Source, Store};
use barn_testkit::{FakeAccount, FakePds};

fn config() -> MirrorConfig {
    MirrorConfig {
        new_host_cursor: Some(0),
        backoff_min: Duration::from_millis(50),
        resync_retry: Duration::from_millis(100),
        reconcile_grace: Duration::from_millis(200),
        ..MirrorConfig::default()
    }
}

async fn wait_head(store: &Arc<Store>, acct: &FakeAccount) {
    let want = acct.head().unwrap().cid;
    let s = store.clone();
    let did = acct.did().to_owned();
    wait_for(&format!("{did} at its head"), || {
        s.repo(&did)
            .unwrap()
            .is_some_and(|st| st.head == Some(want))
    })
    .await;
}

/// Waits until barn holds `did` inactive with `status`.
async fn wait_status(store: &Arc<Store>, did: &str, status: &str) {
    let s = store.clone();
    wait_for(&format!("{did} {status}"), || {
        s.repo(did)
            .unwrap()
            .is_some_and(|st| !st.active && st.status.as_deref() == Some(status))
    })
    .await;
}

async fn wait_metric(metrics: &Metrics, what: &str, n: u64) {
    wait_for(&format!("{n} reconcile events {what:?}"), || {
        metrics.reconcile_events(what) >= n
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repo_the_listing_no_longer_shows_is_asked_about_and_marked_deleted() {
    common::logging();
    let fake = FakePds::start().await.unwrap();
    let host = fake.url().to_owned();
    let kept = fake.add_account(11, 4).unwrap();
    let gone = fake.add_account(12, 6).unwrap();
    let (_dir, store) = common::store();
    let (mirror, metrics): (Mirror, Metrics) = common::mirror_at(&host, &store, config());
    mirror.start(std::slice::from_ref(&host)).unwrap();
    wait_head(&store, &kept).await;
    wait_head(&store, &gone).await;
    wait_metric(&metrics, "pass_done", 1).await;
    // The backfill listed both: nothing to ask about.
    assert_eq!(metrics.reconcile_events("not_listed"), 0);
    assert_eq!(metrics.reconcile_events("checked"), 0);
    let records_before = store.records(gone.did()).unwrap();
    assert_eq!(records_before.len(), 6);
    let history_before = store.history(gone.did()).unwrap().len();

    // The account is deleted on the host while barn is not looking (no
    // `#account` event): listRepos leaves it out, getRepoStatus answers
    // RepoNotFound. Its DID document still names this host.
    fake.remove_repo(gone.did());
    assert!(mirror.reconcile(&host, "test"));
    wait_metric(&metrics, "gone", 1).await;
    wait_status(&store, gone.did(), "deleted").await;
    assert_eq!(metrics.reconcile_events("pass_done"), 2);
    assert_eq!(metrics.reconcile_events("not_listed"), 1);
    // Only the repo the listing left out was asked about.
    assert_eq!(metrics.reconcile_events("checked"), 1);
    // Its backup is kept whole: records, history, head.
    assert_eq!(store.records(gone.did()).unwrap(), records_before);
    assert_eq!(store.history(gone.did()).unwrap().len(), history_before);
    let st = store.repo(gone.did()).unwrap().unwrap();
    assert_eq!(st.head, Some(gone.head().unwrap().cid));
    // The listed account stays active and was not fetched again.
    let k = store.repo(kept.did()).unwrap().unwrap();
    assert!(k.active);
    assert_eq!(fake.get_repo_count(kept.did()), 1);

    // A second pass finds it deleted already: asked about, not re-marked.
    assert!(mirror.reconcile(&host, "again"));
    wait_metric(&metrics, "pass_done", 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(metrics.reconcile_events("gone"), 1);
    mirror.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_followed_one_by_one_are_checked_and_fetched_only_when_they_changed() {
    common::logging();
    let fake = FakePds::start().await.unwrap();
    let host = fake.url().to_owned();
    let mut moving = fake.add_account(21, 3).unwrap();
    let still = fake.add_account(22, 3).unwrap();
    let stopped = fake.add_account(23, 3).unwrap();
    let (_dir, store) = common::store();
    let (mirror, metrics): (Mirror, Metrics) = common::mirror_at(&host, &store, config());
    mirror.start(&[]).unwrap();
    for a in [&moving, &still, &stopped] {
        mirror.track_account(a.did()).await.unwrap();
    }
    for a in [&moving, &still, &stopped] {
        wait_head(&store, a).await;
    }
    // Never listed: the host is followed for these accounts only.
    assert_eq!(fake.list_repos_requests(), 0);

    // Where barn cannot see (no frames): one account gets two commits,
    // another is taken down, the third does nothing.
    for _ in 0..2 {
        let d = moving.draft(0).unwrap();
        moving.apply(&d);
    }
    fake.set_repo(moving.did(), moving.car());
    fake.set_status(stopped.did(), false, Some("takendown"));

    assert!(mirror.reconcile(&host, "test"));
    wait_head(&store, &moving).await;
    wait_status(&store, stopped.did(), "takendown").await;
    wait_metric(&metrics, "checked", 3).await;
    // The changed account: one reconcile revision with both commits'
    // records, fetched since barn's head.
    let history = store.history(moving.did()).unwrap();
    let last = history.last().unwrap();
    assert_eq!(last.source, Source::Reconcile);
    assert_eq!(last.rev, moving.head().unwrap().rev);
    assert_eq!(last.ops.len(), 2);
    assert!(
        last.reason.as_deref().unwrap_or_default().contains("test"),
        "{:?}",
        last.reason
    );
    assert_eq!(fake.get_repo_count(moving.did()), 2);
    assert_eq!(
        store.records(moving.did()).unwrap(),
        moving
            .records()
            .iter()
            .map(|(p, c)| (p.clone(), *c))
            .collect::<Vec<_>>()
    );
    // The unchanged and the taken-down accounts were asked, not fetched.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(fake.get_repo_count(still.did()), 1);
    assert_eq!(fake.get_repo_count(stopped.did()), 1);
    assert_eq!(store.history(still.did()).unwrap().len(), 1);
    assert_eq!(metrics.reconcile_events("suspect_fetched"), 1);
    assert_eq!(fake.list_repos_requests(), 0);
    mirror.shutdown().await;
}
