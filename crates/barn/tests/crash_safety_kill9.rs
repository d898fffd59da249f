#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Crash safety: `barn serve` follows PDS a while the workload runs and is
//! killed with SIGKILL at random moments, at least 20 times, and restarted
//! each time. Afterwards (one last run, stopped with SIGTERM, which must
//! exit 0 promptly):
//! - every commit PDS a's firehose still holds for a tracked account is in
//!   barn's history, and no revision was stored twice;
//! - each repo's firehose revisions chain (`since` = the previous rev);
//! - every account's state equals the PDS's (compare helper).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::{Rng, SeedableRng};

use barn_firehose::{CancellationToken, Delivery, Event, SubscribeConfig, subscribe};
use barn_store::{Source, Store, StoreOptions};
use barn_testkit::{Client, Network, WorkloadOptions, compare_with_pds};

fn barn(net: &Network, data: &Path, log: &Path) -> tokio::process::Child {
    let args: [&OsStr; 8] = [
        "serve".as_ref(),
        "--data-dir".as_ref(),
        data.as_os_str(),
        "--host".as_ref(),
        net.pds_a.url.as_ref(),
        "--plc-url".as_ref(),
        net.plc.url.as_ref(),
        "--allow-http-localhost".as_ref(),
    ];
    common::spawn_barn(args, log)
}

/// Every (did, rev) of a #commit PDS `host`'s backlog holds.
async fn pds_commits(host: &str) -> BTreeSet<(String, String)> {
    let mut cfg = SubscribeConfig::new(host.to_owned());
    cfg.cursor = Some(0);
    let stop = CancellationToken::new();
    let (mut sub, task) = subscribe(cfg, stop.clone());
    let mut out = BTreeSet::new();
    while let Ok(Some(d)) = tokio::time::timeout(Duration::from_secs(3), sub.recv()).await {
        if let Delivery::Frame { frame, .. } = d
            && let Event::Commit(c) = frame.event
        {
            out.insert((c.repo, c.rev));
        }
    }
    stop.cancel();
    let _ = task.await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_at_random_moments_loses_nothing_and_applies_nothing_twice() {
    let net = Network::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("barn.log");
    let done = Arc::new(AtomicBool::new(false));

    let killer = {
        let done = done.clone();
        let net_ref = &net;
        let data = data.clone();
        let log = log.clone();
        async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(9);
            let mut kills = 0;
            while kills < 20 || !done.load(Ordering::SeqCst) {
                let mut child = barn(net_ref, &data, &log);
                let wait = rng.random_range(150..900);
                tokio::time::sleep(Duration::from_millis(wait)).await;
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("barn exited by itself ({status}); see {}", log.display());
                }
                child.kill().await.unwrap(); // SIGKILL
                kills += 1;
            }
            kills
        }
    };
    let workload = async {
        let s = net
            .run_workload(&WorkloadOptions {
                seed: 3,
                posts: 8,
                lifecycle: true,
                ..WorkloadOptions::default()
            })
            .await
            .unwrap();
        done.store(true, Ordering::SeqCst);
        s
    };
    let (kills, summary) = tokio::join!(killer, workload);
    eprintln!("killed barn {kills} times during the workload");
    assert!(kills >= 20);

    // Let barn catch up, then stop it the polite way.
    let mut tracked: Vec<_> = summary
        .accounts
        .iter()
        .filter(|a| a.name != "gwen")
        .cloned()
        .collect();
    tracked.sort_by(|a, b| a.name.cmp(&b.name));
    let deadline = Instant::now() + Duration::from_secs(120);
    let store = loop {
        let started = common::log_count(&log, "barn is running");
        let mut child = barn(&net, &data, &log);
        common::wait_running(&log, started).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let pid = rustix::process::Pid::from_raw(child.id().unwrap() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let t = Instant::now();
        let status = tokio::time::timeout(Duration::from_secs(25), child.wait())
            .await
            .expect("barn ignored SIGTERM")
            .unwrap();
        assert!(status.success(), "barn exited with {status} on SIGTERM");
        eprintln!("graceful stop took {:?}", t.elapsed());
        let store = Store::open(&data.join("store"), &StoreOptions::default()).unwrap();
        let behind: Vec<_> = tracked
            .iter()
            .filter(|a| {
                let s = store.repo(&a.did).unwrap();
                match a.status.as_str() {
                    "deleted" => s.is_none_or(|s| s.active),
                    _ => s.is_none_or(|s| s.rev != a.rev),
                }
            })
            .map(|a| a.name.clone())
            .collect();
        if behind.is_empty() {
            break store;
        }
        assert!(
            Instant::now() < deadline,
            "barn never caught up: {behind:?}; log {}",
            log.display()
        );
    };

    // Nothing applied twice.
    let events = store.events().unwrap();
    let mut seen = HashSet::new();
    for (_, did, rev) in &events {
        assert!(
            seen.insert((did.clone(), rev.clone())),
            "{did} {rev} stored twice"
        );
    }
    // Chains hold; nothing the PDS still serves is missing.
    let dids: BTreeMap<String, String> = tracked
        .iter()
        .map(|a| (a.did.clone(), a.name.clone()))
        .collect();
    for did in dids.keys() {
        let history = store.history(did).unwrap();
        for pair in history.windows(2) {
            assert!(pair[0].rev < pair[1].rev);
            if pair[1].source == Source::Firehose {
                assert_eq!(
                    pair[1].since.as_deref(),
                    Some(pair[0].rev.as_str()),
                    "{did}: chain broken"
                );
            }
        }
    }
    let mut missing = Vec::new();
    let mut checked = 0;
    for (did, rev) in pds_commits(&net.pds_a.url).await {
        if !dids.contains_key(&did) {
            continue;
        }
        checked += 1;
        if store.revision(&did, &rev).unwrap().is_none() {
            missing.push((dids[&did].clone(), rev));
        }
    }
    assert!(checked > 100, "only {checked} commits in PDS a's backlog");
    assert!(missing.is_empty(), "missing from history: {missing:?}");
    let resyncs = events.len() - store_firehose_count(&store, &dids);
    eprintln!(
        "{checked} PDS commits all in history; {} revisions stored, {resyncs} not from the firehose",
        events.len()
    );

    // Current state equals the PDS's.
    let client = Client::new();
    for acct in tracked.iter().filter(|a| a.status == "active") {
        let car = store.export_car(&acct.did, None).unwrap();
        let cmp = compare_with_pds(&client, &net.plc.url, &acct.did, Bytes::from(car))
            .await
            .unwrap();
        assert_eq!(Some(cmp.rev), acct.rev, "{}", acct.name);
    }
    drop(store);
    net.stop().await.unwrap();
}

fn store_firehose_count(store: &Store, dids: &BTreeMap<String, String>) -> usize {
    dids.keys()
        .map(|d| {
            store
                .history(d)
                .unwrap()
                .iter()
                .filter(|e| e.source == Source::Firehose)
                .count()
        })
        .sum()
}
