#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `barn backfill --host <fake PDS>` over 60 accounts (pages of 10, at
//! most 4 imports queued ahead, two `getRepo` at a time, each slowed down
//! so that the run lasts a few seconds) must:
//! - exit 0 on its own, within a bounded time, and not before every
//!   import is durable: the store holds, for every account, the head the
//!   fake PDS serves, with its records;
//! - print `backfill done: 60 repos imported, 0 failed, <S> s` on stdout
//!   and plain progress lines on stderr (stderr is a pipe: no bar);
//! - run again over the same data directory, fetch nothing and exit 0 at
//!   once with `0 repos imported`: the host's listing was finished.

mod common;

use std::time::Duration;

use barn_store::{Store, StoreOptions, SyncState};

const ACCOUNTS: u64 = 60;

/// `barn backfill --config <config> --host <host>`, to its end.
async fn run_backfill(
    config: &std::path::Path,
    host: &str,
    within: Duration,
    label: &str,
) -> (std::process::Output, String, String) {
    let args = [
        "backfill",
        "--config",
        config.to_str().unwrap(),
        "--host",
        host,
    ];
    common::finished(
        common::barn_command(args).output(),
        within,
        "barn backfill exits by itself",
        label,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_command_imports_every_repo_and_exits() {
    let (fake, accounts) = common::fake_host_with_accounts(ACCOUNTS, 20, 3000).await;
    let host = fake.url().to_owned();
    // 60 imports, two at a time, 150 ms each: 4.5 s at least, so the
    // plain progress line (every 2 s) has time to appear.
    fake.set_get_repo_delay(Duration::from_millis(150));

    let dir = tempfile::tempdir().unwrap();
    // The host comes as a flag; the rest from the file.
    let (data, config) = common::write_config(dir.path(), &host, false, common::SMALL_STEPS);

    let (out, stdout, stderr) =
        run_backfill(&config, &host, Duration::from_secs(120), "first run").await;
    assert!(out.status.success(), "{}", out.status);

    // The summary names every repo, nothing failed.
    let summary: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("backfill done: "))
        .collect();
    assert_eq!(summary.len(), 1, "{stdout}");
    assert!(
        summary[0].starts_with(&format!(
            "backfill done: {ACCOUNTS} repos imported, 0 failed, "
        )) && summary[0].ends_with(" s"),
        "{}",
        summary[0]
    );
    // Progress on stderr: at least one periodic line and the final one,
    // which shows everything done.
    let progress: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("backfill: "))
        .collect();
    assert!(progress.len() >= 2, "{stderr}");
    assert!(
        progress.last().unwrap().starts_with(&format!(
            "backfill: {ACCOUNTS}/{ACCOUNTS} repos done/listed, 0 running, 0 queued, 0 failed"
        )),
        "{progress:?}"
    );

    // Every import was durable before the exit: each head is the fake's.
    for a in &accounts {
        assert!(
            fake.get_repo_count(a.did()) >= 1,
            "{} never fetched",
            a.did()
        );
    }
    let fetched = fake.get_repo_requests();
    let lists = fake.list_repos_requests();
    {
        let store = Store::open(&data.join("store"), &StoreOptions::default()).unwrap();
        for a in &accounts {
            let s = store
                .repo(a.did())
                .unwrap()
                .unwrap_or_else(|| panic!("{} not in the store", a.did()));
            assert_eq!(s.sync, SyncState::Synchronized, "{}", a.did());
            assert_eq!(s.head, Some(a.head().unwrap().cid), "{}", a.did());
            let records: Vec<_> = a.records().iter().map(|(p, c)| (p.clone(), *c)).collect();
            assert_eq!(store.records(a.did()).unwrap(), records, "{}", a.did());
        }
        let hs = store
            .host(&barn_mirror::normalize_host(&host))
            .unwrap()
            .expect("the host's state is stored");
        assert!(
            hs.list.is_none() && hs.last_pass_done_ms.is_some(),
            "{hs:?}"
        );
    }

    // Again: nothing left to do.
    let (out, stdout, _) =
        run_backfill(&config, &host, Duration::from_secs(30), "second run").await;
    assert!(out.status.success(), "{}", out.status);
    assert!(
        stdout.starts_with("backfill done: 0 repos imported, 0 failed, "),
        "{stdout}"
    );
    assert_eq!(
        fake.get_repo_requests(),
        fetched,
        "a repo was fetched again"
    );
    assert_eq!(
        fake.list_repos_requests(),
        lists,
        "the host was listed again"
    );
}
