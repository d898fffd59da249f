#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A producer far faster than barn: a fake PDS with thousands of valid
//! commits queued on its firehose before barn connects.
//!
//! - `metrics_series_exist_and_move_during_ingest`: `/metrics` scraped
//!   while barn ingests has every key series (events, commits applied,
//!   seq / cursor / lag per host, frame and blob queues, group commit and
//!   latency histograms, store size, build info), and the counters, the
//!   cursor and the lag move; at the end the lag is back to zero.
//! - `sigterm_during_heavy_ingest_exits_cleanly_and_loses_nothing`: SIGTERM
//!   in the middle of the ingest ends barn with exit 0 within a bounded
//!   time; the restarted barn finishes, and every account's history holds
//!   each pushed revision exactly once, in order.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use barn_store::{Order, Store, StoreOptions};
use barn_testkit::{DraftOptions, FakeAccount, FakePds};
use bytes::Bytes;

const ACCOUNTS: u64 = 8;
const COMMITS_PER_ACCOUNT: usize = 200;

struct Workload {
    fake: FakePds,
    /// Each account's DID and its revs in order (genesis first).
    revs: Vec<(String, Vec<String>)>,
    last_seq: i64,
    /// The commits' frames, pushed by [`Workload::pour`].
    frames: Vec<(i64, Bytes)>,
}

impl Workload {
    /// Queues every commit on the firehose at once.
    fn pour(&self) {
        for (seq, frame) in &self.frames {
            self.fake.push(*seq, frame.clone());
        }
    }
}

/// Waits until barn has imported every account's genesis (the backfill
/// of the host), so that every later commit applies on top of it.
async fn backfilled(http: &reqwest::Client, gateway: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while total(
        &scrape(http, gateway).await,
        "barn_mirror_import_fetches_total",
    )
    .unwrap_or(0.0)
        < ACCOUNTS as f64
    {
        assert!(Instant::now() < deadline, "the backfill did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Accounts on a fake PDS, their genesis served by getRepo, and every
/// later commit drafted for the firehose (seqs 1..), round-robin; every
/// tenth commit references a blob of its own.
async fn workload(seed: u64) -> Workload {
    let fake = FakePds::start().await.unwrap();
    let mut accounts: Vec<FakeAccount> = Vec::new();
    let mut revs = Vec::new();
    for i in 0..ACCOUNTS {
        let acct = fake.add_account(seed + i, 5).unwrap();
        revs.push((
            acct.did().to_owned(),
            vec![acct.head().unwrap().rev.clone()],
        ));
        accounts.push(acct);
    }
    let mut seq = 0;
    let mut frames = Vec::new();
    for round in 0..COMMITS_PER_ACCOUNT {
        for (i, acct) in accounts.iter_mut().enumerate() {
            seq += 1;
            let blobs = if round % 10 == 0 {
                vec![fake.set_blob(
                    acct.did(),
                    Bytes::from(format!("{seed} {i} {round}").repeat(50)),
                    "image/jpeg",
                )]
            } else {
                Vec::new()
            };
            let draft = acct
                .draft_with(
                    seq,
                    &DraftOptions {
                        records: 1,
                        blobs,
                        ..DraftOptions::default()
                    },
                )
                .unwrap();
            acct.apply(&draft);
            revs[i].1.push(draft.event.rev.clone());
            frames.push((seq, draft.frame()));
        }
    }
    Workload {
        fake,
        revs,
        last_seq: seq,
        frames,
    }
}

/// One scrape: every sample, by its full series name with labels.
async fn scrape(http: &reqwest::Client, gateway: &str) -> HashMap<String, f64> {
    let text = http
        .get(format!("{gateway}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The sum of every series of metric `name` (any labels).
fn total(m: &HashMap<String, f64>, name: &str) -> Option<f64> {
    let mut found = None;
    for (k, v) in m {
        let bare = k.split('{').next().unwrap_or(k);
        if bare == name {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_series_exist_and_move_during_ingest() {
    let w = workload(4000).await;
    let dir = tempfile::tempdir().unwrap();
    let (_, config) = common::write_config(dir.path(), w.fake.url(), true, "");
    let log = dir.path().join("barn.log");
    let _barn = common::spawn_barn(["serve", "--config", config.to_str().unwrap()], &log);
    let gateway = common::gateway_url(&log, 0).await;
    let http = reqwest::Client::new();
    backfilled(&http, &gateway).await;
    w.pour();

    let mut scrapes = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let m = scrape(&http, &gateway).await;
        let cursor = total(&m, "barn_mirror_host_cursor").unwrap_or(0.0);
        // (The queue depth is the LSM's estimate, deletions included: it
        // is not expected to return to exactly 0.)
        let blobs_done =
            total(&m, "barn_blobs_stored_total").unwrap_or(0.0) >= (ACCOUNTS * 20) as f64;
        scrapes.push(m);
        if cursor >= w.last_seq as f64 && blobs_done {
            break;
        }
        if Instant::now() >= deadline {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let warns: Vec<&str> = text
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .collect();
            panic!(
                "ingest did not finish; {} warnings, last: {:#?}",
                warns.len(),
                &warns[warns.len().saturating_sub(15)..]
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("{} scrapes", scrapes.len());
    let last = scrapes.last().unwrap();

    // Every key series exists.
    for name in [
        "barn_build_info",
        "barn_firehose_frames_total",
        "barn_firehose_queued_bytes",
        "barn_mirror_events_total",
        "barn_mirror_commits_applied_total",
        "barn_mirror_host_seq",
        "barn_mirror_host_cursor",
        "barn_mirror_host_lag_seq",
        "barn_mirror_host_lag_seconds",
        "barn_mirror_host_last_event_timestamp_seconds",
        "barn_mirror_host_last_durable_timestamp_seconds",
        "barn_mirror_backfill_repos",
        "barn_mirror_group_commit_seconds_count",
        "barn_mirror_group_commit_revisions_count",
        "barn_mirror_durable_latency_seconds_bucket",
        "barn_mirror_import_fetches_total",
        "barn_store_revisions_total",
        "barn_store_disk_bytes",
        "barn_blob_queue_depth",
        "barn_blob_queue_oldest_due_seconds",
        "barn_blobs_stored_total",
        "barn_xrpc_requests_total",
    ] {
        assert!(total(last, name).is_some(), "no {name} series");
    }

    // They move: counters and the cursor grow across the scrapes, the lag
    // and the frame queue were above zero while barn was behind, and
    // everything is caught up at the end.
    let first = &scrapes[0];
    let grew = |name: &str| total(last, name).unwrap_or(0.0) > total(first, name).unwrap_or(0.0);
    for name in [
        "barn_mirror_events_total",
        "barn_mirror_commits_applied_total",
        "barn_mirror_host_cursor",
        "barn_mirror_host_seq",
        "barn_store_revisions_total",
        "barn_blobs_stored_total",
        "barn_mirror_group_commit_seconds_count",
    ] {
        assert!(
            grew(name),
            "{name} did not grow: {:?} -> {:?}",
            total(first, name),
            total(last, name)
        );
    }
    let distinct = |name: &str| {
        let mut v: Vec<i64> = scrapes
            .iter()
            .filter_map(|m| total(m, name))
            .map(|x| x as i64)
            .collect();
        v.dedup();
        v.len()
    };
    assert!(
        distinct("barn_mirror_host_cursor") >= 3,
        "the cursor moved in steps"
    );
    let max = |name: &str| {
        scrapes
            .iter()
            .filter_map(|m| total(m, name))
            .fold(0.0, f64::max)
    };
    assert!(max("barn_mirror_host_lag_seq") > 0.0, "never behind?");
    assert!(
        max("barn_firehose_queued_bytes") > 0.0,
        "frames never queued?"
    );
    assert!(max("barn_blob_queue_depth") > 0.0, "blobs never queued?");
    assert_eq!(total(last, "barn_mirror_host_lag_seq"), Some(0.0));
    assert_eq!(
        total(last, "barn_mirror_host_cursor"),
        Some(w.last_seq as f64)
    );
    assert_eq!(
        total(last, "barn_mirror_commits_applied_total"),
        Some(w.last_seq as f64)
    );
    assert!(total(last, "barn_store_disk_bytes").unwrap() > 0.0);
    assert!(total(last, "barn_mirror_host_last_event_timestamp_seconds").unwrap() > 1.7e9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_heavy_ingest_exits_cleanly_and_loses_nothing() {
    let w = workload(5000).await;
    let dir = tempfile::tempdir().unwrap();
    let (data, config) = common::write_config(dir.path(), w.fake.url(), true, "");
    let log = dir.path().join("barn.log");
    let args = ["serve", "--config", config.to_str().unwrap()];
    let http = reqwest::Client::new();

    // Stopped three times, each while commits are pouring in.
    let mut stops = 0;
    let mut applied_before = 0.0;
    for round in 0..3 {
        let started = common::log_count(&log, "barn is running");
        let gateways = common::log_count(&log, "gateway listening");
        let mut child = common::spawn_barn(args, &log);
        common::wait_running(&log, started).await;
        let gateway = common::gateway_url(&log, gateways).await;
        if round == 0 {
            backfilled(&http, &gateway).await;
            w.pour();
        }
        // Some commits in, many still queued.
        let target = (w.last_seq as f64) * f64::from(round + 1) / 4.0;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let m = scrape(&http, &gateway).await;
            let cursor = total(&m, "barn_mirror_host_cursor").unwrap_or(0.0);
            if cursor >= target {
                let lag = total(&m, "barn_mirror_host_lag_seq").unwrap_or(0.0);
                eprintln!(
                    "round {round}: SIGTERM at cursor {cursor}, {lag} received and not durable"
                );
                assert!(
                    cursor < w.last_seq as f64,
                    "ingest finished before the stop"
                );
                break;
            }
            assert!(Instant::now() < deadline, "ingest stalled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let pid = rustix::process::Pid::from_raw(child.id().unwrap() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let t = Instant::now();
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .expect("barn did not exit within 30 s of SIGTERM")
            .unwrap();
        assert!(status.success(), "barn exited with {status} on SIGTERM");
        eprintln!("round {round}: clean exit in {:?}", t.elapsed());
        stops += 1;
        // What was durable at the stop is still there.
        let store = Store::open(&data.join("store"), &StoreOptions::default()).unwrap();
        let cursor = store
            .host(w.fake.url().trim_end_matches('/'))
            .unwrap()
            .and_then(|h| h.cursor);
        let stored: usize = w
            .revs
            .iter()
            .map(|(did, _)| {
                store
                    .history_page(did, None, 10_000, Order::Ascending)
                    .unwrap()
                    .len()
            })
            .sum();
        assert!(stored as f64 >= applied_before, "history shrank");
        applied_before = stored as f64;
        eprintln!("round {round}: cursor {cursor:?}, {stored} revisions stored");
    }
    assert_eq!(stops, 3);

    // The last run finishes the stream.
    let started = common::log_count(&log, "barn is running");
    let gateways = common::log_count(&log, "gateway listening");
    let mut child = common::spawn_barn(args, &log);
    common::wait_running(&log, started).await;
    let gateway = common::gateway_url(&log, gateways).await;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let m = scrape(&http, &gateway).await;
        if total(&m, "barn_mirror_host_cursor").unwrap_or(0.0) >= w.last_seq as f64 {
            break;
        }
        assert!(Instant::now() < deadline, "the last run did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pid = rustix::process::Pid::from_raw(child.id().unwrap() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    assert!(child.wait().await.unwrap().success());

    // Every revision exactly once, in order; no verification failure but
    // the duplicates a restart replays.
    let store = Store::open(&data.join("store"), &StoreOptions::default()).unwrap();
    for (did, revs) in &w.revs {
        let history: Vec<String> = store
            .history_page(did, None, 10_000, Order::Ascending)
            .unwrap()
            .into_iter()
            .map(|e| e.rev)
            .collect();
        assert_eq!(&history, revs, "{did}: lost or repeated revisions");
        let state = store.repo(did).unwrap().unwrap();
        assert_eq!(state.rev.as_ref(), revs.last());
        assert_eq!(state.revisions as usize, revs.len());
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("panicked"), "{text}");
    assert_eq!(common::log_count(&log, "stopped following host"), 4);
}
