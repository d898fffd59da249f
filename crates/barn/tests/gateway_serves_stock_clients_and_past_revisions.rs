#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `barn serve` backs up PDS a while the whole workload runs, and its XRPC
//! gateway is then used the way people would use it:
//! - along the way the test captures every account's `getRepo` from the
//!   PDS again and again; barn's CAR of each captured revision, asked by
//!   rev and by the capture's time, equals the capture (the busiest repo
//!   must have at least 20 such revisions);
//! - stock clients, unchanged (`@atproto/api`, `@atproto/repo`'s
//!   `verifyRepoCar`, through `interop/network/stock-clients.mjs`), fetch
//!   and verify every account's repo and some blobs from barn, and restore
//!   an account onto PDS b from barn alone (createAccount with its DID,
//!   `importRepo` of barn's CAR, blobs from barn's `getBlob`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use barn_mirror::normalize_host;
use barn_repo::syntax::Tid;
use barn_testkit::{Client, Identity, Network, WorkloadOptions, compare_cars, process};
use bytes::Bytes;

const ADMIN: &str = "gateway-test-operator-token";

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// RFC 3339 with microseconds, UTC.
fn rfc3339(micros: u64) -> String {
    barn_repo::syntax::Datetime::from_unix_micros(micros as i64).into_string()
}

/// One `getRepo` from the PDS, with when it was asked and answered.
struct Capture {
    identity: Identity,
    rev: String,
    car: Bytes,
    started_us: u64,
    ended_us: u64,
}

fn rev_of(car: &Bytes) -> String {
    let file = barn_repo::car::read_car(car.clone(), &Default::default()).unwrap();
    let root = *file.root().unwrap();
    barn_repo::commit::Commit::decode(file.blocks.get(&root).unwrap())
        .unwrap()
        .rev
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_serves_stock_clients_and_past_revisions() {
    let net = Network::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("barn.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {data:?}\nplc_url = {:?}\nhosts = [{:?}]\nallow_http_localhost = true\n\
             [gateway]\nadmin_token = {ADMIN:?}\nrate_limit_per_second = 0\n",
            net.plc.url, net.pds_a.url
        ),
    )
    .unwrap();
    let log = dir.path().join("barn.log");
    let mut barn = common::spawn_barn(["serve", "--config", config.to_str().unwrap()], &log);
    let url = common::gateway_url(&log, 0).await;
    let http = reqwest::Client::new();
    let admin_get = |method: &str, query: Vec<(&str, String)>| {
        http.get(format!("{url}/xrpc/{method}"))
            .query(&query)
            .bearer_auth(ADMIN)
            .send()
    };

    // Captures straight from the PDS while the workload runs: every active
    // account, round after round.
    let capturer = {
        let client = Client::new();
        let pds = net.pds_a.url.clone();
        let plc = net.plc.url.clone();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = done.clone();
        let task = tokio::spawn(async move {
            let mut out: Vec<Capture> = Vec::new();
            let mut ids: BTreeMap<String, Identity> = BTreeMap::new();
            while !flag.load(std::sync::atomic::Ordering::SeqCst) && out.len() < 2000 {
                let Ok(page) = client
                    .get_json(&pds, "com.atproto.sync.listRepos", &[("limit", "100")])
                    .await
                else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let repos = page["repos"].as_array().cloned().unwrap_or_default();
                if repos.is_empty() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                for r in repos.iter().filter(|r| r["active"] == true) {
                    let did = r["did"].as_str().unwrap().to_owned();
                    if !ids.contains_key(&did) {
                        match Identity::resolve(&client, &plc, &did).await {
                            Ok(id) => ids.insert(did.clone(), id),
                            Err(_) => continue,
                        };
                    }
                    let id = ids[&did].clone();
                    if normalize_host(&id.pds) != normalize_host(&pds) {
                        continue;
                    }
                    let started_us = now_micros();
                    if let Ok(Ok(car)) = client
                        .get(&pds, "com.atproto.sync.getRepo", &[("did", &did)])
                        .await
                    {
                        let ended_us = now_micros();
                        out.push(Capture {
                            identity: id,
                            rev: rev_of(&car),
                            car,
                            started_us,
                            ended_us,
                        });
                    }
                }
            }
            out
        });
        (done, task)
    };
    let mut summary = net
        .run_workload(&WorkloadOptions {
            posts: 12,
            ..WorkloadOptions::default()
        })
        .await
        .unwrap();
    capturer.0.store(true, std::sync::atomic::Ordering::SeqCst);
    let captures = capturer.1.await.unwrap();
    summary.accounts.retain(|a| a.name != "gwen");

    // barn catches up with every account's last rev.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut behind = Vec::new();
        for a in &summary.accounts {
            let Some(rev) = &a.rev else { continue };
            let status: serde_json::Value = match admin_get(
                "com.atproto.sync.getRepoStatus",
                vec![("did", a.did.clone())],
            )
            .await
            {
                Ok(r) => r.json().await.unwrap_or_default(),
                Err(_) => serde_json::Value::Null,
            };
            if status["rev"].as_str() != Some(rev.as_str()) {
                behind.push((a.name.clone(), status["rev"].clone(), rev.clone()));
            }
        }
        if behind.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "barn never caught up: {behind:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Past revisions, by rev and by the capture's time.
    let mut by_rev: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut by_time: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut raced = 0;
    for c in &captures {
        let did = c.identity.did.clone();
        let resp = admin_get(
            "dev.barn.sync.getRepoAt",
            vec![("did", did.clone()), ("rev", c.rev.clone())],
        )
        .await
        .unwrap();
        assert_eq!(resp.status(), 200, "{did} at {}", c.rev);
        let car = resp.bytes().await.unwrap();
        compare_cars(&c.identity, car, c.car.clone())
            .unwrap_or_else(|e| panic!("{did} at rev {}: {e}", c.rev));
        by_rev.entry(did.clone()).or_default().insert(c.rev.clone());

        let resp = admin_get(
            "dev.barn.sync.getRepoAt",
            vec![("did", did.clone()), ("at", rfc3339(c.ended_us))],
        )
        .await
        .unwrap();
        assert_eq!(resp.status(), 200, "{did} at {}", rfc3339(c.ended_us));
        let got = resp.headers()["atproto-repo-rev"]
            .to_str()
            .unwrap()
            .to_owned();
        let car = resp.bytes().await.unwrap();
        if got == c.rev {
            compare_cars(&c.identity, car, c.car.clone())
                .unwrap_or_else(|e| panic!("{did} at {}: {e}", rfc3339(c.ended_us)));
            by_time.entry(did).or_default().insert(c.rev.clone());
        } else {
            // A commit made while the capture was under way: newer than
            // the capture, and stamped no earlier than a second before it
            // began (the PDS stamps a commit before it becomes visible).
            assert!(
                got > c.rev,
                "{did}: barn gave {got}, older than the capture {}",
                c.rev
            );
            let t = got.parse::<Tid>().unwrap().timestamp_micros();
            assert!(
                t + 1_000_000 >= c.started_us,
                "{did}: barn gave {got} for {}, but it predates the capture",
                rfc3339(c.ended_us)
            );
            raced += 1;
        }
    }
    let busiest = by_rev.iter().max_by_key(|(_, r)| r.len()).unwrap();
    let busiest_by_time = by_time.values().map(BTreeSet::len).max().unwrap_or(0);
    eprintln!(
        "{} captures; distinct revisions checked by rev {}, by time {}; busiest repo {} with {}; {raced} captures raced a commit",
        captures.len(),
        by_rev.values().map(BTreeSet::len).sum::<usize>(),
        by_time.values().map(BTreeSet::len).sum::<usize>(),
        busiest.0,
        busiest.1.len()
    );
    assert!(
        busiest.1.len() >= 20,
        "busiest repo had only {} revisions",
        busiest.1.len()
    );
    assert!(
        busiest_by_time >= 20,
        "only {busiest_by_time} revisions of one repo checked by time"
    );

    // Blobs of live records: wait for barn to hold a few.
    let mut blob_pairs: Vec<String> = Vec::new();
    for a in summary.accounts.iter().filter(|a| a.status == "active") {
        for cid in a.blobs.iter().take(2) {
            blob_pairs.push(format!("{}:{cid}", a.did));
        }
    }
    assert!(blob_pairs.len() >= 3, "{blob_pairs:?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    for pair in &blob_pairs {
        let (did, cid) = pair.rsplit_once(':').unwrap();
        loop {
            let r = http
                .get(format!("{url}/xrpc/com.atproto.sync.getBlob"))
                .query(&[("did", did), ("cid", cid)])
                .send()
                .await
                .unwrap();
            if r.status() == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "blob {pair} never served");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // Stock clients: every account's repo (the operator's token for the
    // ones no longer active), some blobs, and a restore onto PDS b.
    let restore = summary
        .accounts
        .iter()
        .find(|a| a.status == "active" && normalize_host(&a.pds) == normalize_host(&net.pds_a.url))
        .expect("an active account on PDS a");
    let dids: Vec<&str> = summary.accounts.iter().map(|a| a.did.as_str()).collect();
    let out = tokio::process::Command::new(process::node_bin())
        .current_dir(process::network_dir())
        .args([
            "stock-clients.mjs",
            "--source",
            &url,
            "--source-token",
            ADMIN,
            "--plc",
            &net.plc.url,
            "--dids",
            &dids.join(","),
            "--blobs",
            &blob_pairs.join(","),
            "--restore-did",
            &restore.did,
            "--restore-password",
            &format!("pw-{}", restore.name),
            "--restore-handle",
            &restore.handle,
            "--restore-email",
            &format!("{}@example.test", restore.name),
            "--restore-from",
            &net.pds_a.url,
            "--restore-to",
            &net.pds_b.url,
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stock-clients.mjs: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    eprintln!("stock clients: {report}");
    let repos = report["repos"].as_array().unwrap();
    assert_eq!(repos.len(), dids.len());
    for r in repos {
        assert_eq!(r["ok"], true, "verifyRepoCar on barn's CAR: {r}");
        let a = summary.accounts.iter().find(|a| a.did == r["did"]).unwrap();
        // A deleted account has no rev on the PDS any more; barn still
        // holds (and, to the operator, serves) its last one.
        if let Some(rev) = &a.rev {
            assert_eq!(r["rev"].as_str(), Some(rev.as_str()), "{r}");
        }
    }
    for b in report["blobs"].as_array().unwrap() {
        assert_eq!(b["ok"], true, "getBlob from barn: {b}");
    }
    let restored = &report["restore"];
    assert_eq!(restored["ok"], true, "restore onto PDS b: {restored}");
    assert_eq!(restored["importedRev"].as_str(), restore.rev.as_deref());
    assert_eq!(restored["missingBlobsAfter"], 0);

    rustix::process::kill_process(
        rustix::process::Pid::from_raw(barn.id().unwrap() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), barn.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    net.stop().await.unwrap();
}
