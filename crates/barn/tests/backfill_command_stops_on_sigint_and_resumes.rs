#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `barn backfill` interrupted by SIGINT (Ctrl-C) half-way through 40
//! slow imports must stop within a bounded time with exit 0 and say it was
//! interrupted; what it had imported is durable. Run again, it must import
//! exactly the repos the first run left (nothing already stored is
//! fetched again), exit 0 and leave every head equal to the fake PDS's.

mod common;

use std::time::{Duration, Instant};

use barn_store::{Store, StoreOptions, SyncState};

const ACCOUNTS: u64 = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_command_stops_on_sigint_and_resumes() {
    let (fake, accounts) = common::fake_host_with_accounts(ACCOUNTS, 10, 5000).await;
    let host = fake.url().to_owned();
    fake.set_get_repo_delay(Duration::from_millis(250));

    let dir = tempfile::tempdir().unwrap();
    let (data, config) = common::write_config(dir.path(), &host, true, common::SMALL_STEPS);
    let args = ["backfill", "--config", config.to_str().unwrap()];

    let child = common::barn_command(args).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while fake.get_repo_requests() < 12 {
        assert!(Instant::now() < deadline, "no progress: 12 getRepo in 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id().unwrap() as i32).unwrap(),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let (out, stdout, _) = common::finished(
        child.wait_with_output(),
        Duration::from_secs(30),
        "barn backfill stops within 30 s of SIGINT",
        "interrupted run",
    )
    .await;
    assert!(out.status.success(), "{}", out.status);
    assert!(stdout.starts_with("backfill interrupted: "), "{stdout}");

    let stored: Vec<String> = {
        let store = Store::open(&data.join("store"), &StoreOptions::default()).unwrap();
        accounts
            .iter()
            .filter(|a| {
                store
                    .repo(a.did())
                    .unwrap()
                    .is_some_and(|s| s.sync == SyncState::Synchronized)
            })
            .map(|a| a.did().to_owned())
            .collect()
    };
    assert!(stored.len() >= 8, "only {} repos stored", stored.len());
    assert!(
        (stored.len() as u64) < ACCOUNTS,
        "the run was not interrupted"
    );
    let fetched: Vec<u64> = accounts
        .iter()
        .map(|a| fake.get_repo_count(a.did()))
        .collect();

    let (out, stdout, _) = common::finished(
        common::barn_command(args).output(),
        Duration::from_secs(120),
        "barn backfill exits by itself",
        "resumed run",
    )
    .await;
    assert!(out.status.success(), "{}", out.status);
    let left = ACCOUNTS - stored.len() as u64;
    assert!(
        stdout.starts_with(&format!("backfill done: {left} repos imported, 0 failed, ")),
        "{left} were left: {stdout}"
    );
    for (a, before) in accounts.iter().zip(&fetched) {
        if stored.iter().any(|d| d == a.did()) {
            assert_eq!(
                fake.get_repo_count(a.did()),
                *before,
                "{} fetched again",
                a.did()
            );
        }
    }
    let store = Store::open(&data.join("store"), &StoreOptions::default()).unwrap();
    for a in &accounts {
        let s = store.repo(a.did()).unwrap().unwrap();
        assert_eq!(s.sync, SyncState::Synchronized, "{}", a.did());
        assert_eq!(s.head, Some(a.head().unwrap().cid), "{}", a.did());
    }
}
