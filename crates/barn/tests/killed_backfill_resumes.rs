#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A backfill killed half-way resumes where it was. `barn serve` lists a
//! fake PDS of 60 accounts (pages of 10, at most 4 imports queued ahead)
//! and imports them two at a time, each `getRepo` slowed down; it is
//! SIGKILLed after 20 of them. Restarted, it must:
//! - not fetch again any repo whose import was durable at the kill (only
//!   the ones in flight may be fetched twice);
//! - ask `listRepos` for the page after the last one whose repos were
//!   durable, not start the listing over;
//! - end with all 60 repos imported, each exactly as the PDS serves it.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::Path;
use std::time::{Duration, Instant};

use barn_store::{Source, Store, StoreOptions, SyncState};

const ACCOUNTS: u64 = 60;

fn barn(config: &Path, log: &Path) -> tokio::process::Child {
    common::spawn_barn(
        [
            OsStr::new("serve"),
            OsStr::new("--config"),
            config.as_os_str(),
        ],
        log,
    )
}

async fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_killed_half_way_resumes_without_refetching() {
    let (fake, accounts) = common::fake_host_with_accounts(ACCOUNTS, 50, 1000).await;
    let host = fake.url().to_owned();
    fake.set_get_repo_delay(Duration::from_millis(300));

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("barn.log");
    let (data, config) = common::write_config(dir.path(), &host, true, common::SMALL_STEPS);

    let mut child = barn(&config, &log);
    wait_for("20 getRepo", Duration::from_secs(60), || {
        fake.get_repo_requests() >= 20
    })
    .await;
    child.kill().await.unwrap(); // SIGKILL
    let lists_before = fake.list_repos_cursors().len();
    let fetched_before: BTreeMap<String, u64> = accounts
        .iter()
        .map(|a| (a.did().to_owned(), fake.get_repo_count(a.did())))
        .collect();

    // What was durable at the kill.
    let (done_before, saved_cursor) = {
        let store = Store::open(&data.join("store"), &StoreOptions::default()).unwrap();
        let done: Vec<String> = accounts
            .iter()
            .filter(|a| {
                store.repo(a.did()).unwrap().is_some_and(|s| {
                    s.sync == SyncState::Synchronized && s.head == Some(a.head().unwrap().cid)
                })
            })
            .map(|a| a.did().to_owned())
            .collect();
        let hs = store
            .host(&barn_mirror::normalize_host(&host))
            .unwrap()
            .expect("the host's state is stored");
        let pass = hs.list.expect("the listing pass was under way at the kill");
        (done, pass.cursor)
    };
    eprintln!(
        "at the kill: {} getRepo served, {} repos durable, listing cursor {saved_cursor:?}",
        fake.get_repo_requests(),
        done_before.len()
    );
    assert!(done_before.len() >= 10, "{done_before:?}");
    assert!((done_before.len() as u64) < ACCOUNTS);

    let mut child = barn(&config, &log);
    // Every repo fetched, then quiet: nothing left to import.
    let mut last = (0, Instant::now());
    wait_for("the backfill to finish", Duration::from_secs(120), || {
        let n = fake.get_repo_requests();
        if n != last.0 {
            last = (n, Instant::now());
        }
        accounts.iter().all(|a| fake.get_repo_count(a.did()) >= 1)
            && last.1.elapsed() > Duration::from_secs(2)
    })
    .await;
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id().unwrap() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("barn stops within 30 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}; see {}", log.display());

    // Finished repos were not fetched again; at most the two in flight were.
    for did in &done_before {
        assert_eq!(
            fake.get_repo_count(did),
            fetched_before[did],
            "{did} was fetched again"
        );
    }
    let total: u64 = accounts.iter().map(|a| fake.get_repo_count(a.did())).sum();
    assert!(
        total <= ACCOUNTS + 2,
        "{total} getRepo for {ACCOUNTS} repos"
    );
    // The listing resumed at the saved cursor.
    let cursors = fake.list_repos_cursors();
    assert!(
        cursors.len() > lists_before,
        "no listRepos after the restart"
    );
    assert_eq!(cursors[lists_before], saved_cursor, "{cursors:?}");

    let store = Store::open(&data.join("store"), &StoreOptions::default()).unwrap();
    for a in &accounts {
        let s = store.repo(a.did()).unwrap().unwrap();
        assert_eq!(s.sync, SyncState::Synchronized, "{}", a.did());
        assert_eq!(s.head, Some(a.head().unwrap().cid), "{}", a.did());
        let records: Vec<_> = a.records().iter().map(|(p, c)| (p.clone(), *c)).collect();
        assert_eq!(store.records(a.did()).unwrap(), records);
        let history = store.history(a.did()).unwrap();
        assert_eq!(history.len(), 1, "{}: {history:?}", a.did());
        assert_eq!(history[0].source, Source::Resync);
        assert_eq!(history[0].reason.as_deref(), Some("backfill"));
    }
    let hs = store
        .host(&barn_mirror::normalize_host(&host))
        .unwrap()
        .unwrap();
    assert!(
        hs.list.is_none() && hs.last_pass_done_ms.is_some(),
        "{hs:?}"
    );
}
