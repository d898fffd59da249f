#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `barn backfill` over a fake PDS of 6 accounts, one of which has a DID
//! document naming the wrong signing key: the import of that one fails its
//! signature check on every retry. The command must not wait forever:
//! after `--retry-for 2` without it succeeding, it stops cleanly, prints
//! `backfill done: 5 repos imported, 1 failed, …` and exits 1, with the
//! failures on its progress lines; the repo stays marked for import. Once
//! the document is right, a second run imports exactly that repo and exits
//! 0.

mod common;

use std::time::Duration;

use barn_store::{Store, StoreOptions, SyncState};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_command_gives_up_on_a_failing_repo_and_retries_it_next_run() {
    let (fake, accounts) = common::fake_host_with_accounts(6, 10, 9000).await;
    let host = fake.url().to_owned();
    let bad = &accounts[3];
    // (A broken CAR would not do: the fake leaves a repo whose CAR it
    // cannot read out of listRepos.)
    fake.set_did_doc(
        bad.did(),
        barn_testkit::did_doc(bad.did(), &accounts[0].public_key(), &host),
    );

    let dir = tempfile::tempdir().unwrap();
    let (data, config) = common::write_config(dir.path(), &host, true, "resync_retry_ms = 200\n");
    let args = [
        "backfill",
        "--config",
        config.to_str().unwrap(),
        "--retry-for",
        "2",
    ];

    let (out, stdout, stderr) = common::finished(
        common::barn_command(args).output(),
        Duration::from_secs(60),
        "barn backfill gives up by itself",
        "first run",
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", out.status);
    assert!(
        stdout.starts_with("backfill done: 5 repos imported, 1 failed, "),
        "{stdout}"
    );
    assert!(stderr.contains("1 repo could not be imported"), "{stderr}");
    // Every retry was a failed attempt the progress lines count.
    assert!(fake.get_repo_count(bad.did()) >= 3, "too few retries");
    let last = stderr
        .lines()
        .rfind(|l| l.starts_with("backfill: "))
        .expect("a progress line");
    assert!(
        !last.contains(" 0 failed") && last.contains(", 1 to retry"),
        "{last}"
    );
    {
        let store = Store::open(&data.join("store"), &StoreOptions::default()).unwrap();
        for a in &accounts {
            let s = store.repo(a.did()).unwrap().unwrap();
            if a.did() == bad.did() {
                assert_eq!(s.sync, SyncState::Desynchronized, "still marked");
                assert_eq!(s.head, None);
            } else {
                assert_eq!(s.head, Some(a.head().unwrap().cid), "{}", a.did());
            }
        }
    }

    fake.set_did_doc(bad.did(), bad.did_doc(&host));
    let (out, stdout, _) = common::finished(
        common::barn_command(args).output(),
        Duration::from_secs(60),
        "barn backfill exits by itself",
        "second run",
    )
    .await;
    assert!(out.status.success(), "{}", out.status);
    assert!(
        stdout.starts_with("backfill done: 1 repos imported, 0 failed, "),
        "{stdout}"
    );
    let store = Store::open(&data.join("store"), &StoreOptions::default()).unwrap();
    let s = store.repo(bad.did()).unwrap().unwrap();
    assert_eq!(s.sync, SyncState::Synchronized);
    assert_eq!(s.head, Some(bad.head().unwrap().cid));
}
