//! Shared by the network tests of barn-mirror: a mirror over a fresh store
//! on the loopback network, and the checks that barn holds what the PDSes
//! hold.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use barn_identity::{Resolver, ResolverConfig};
use barn_mirror::{Metrics, Mirror, MirrorConfig, normalize_host};
use barn_store::{Store, StoreOptions};
use barn_testkit::{Client, Network, Summary, compare_with_pds};

pub mod blobs;

/// Logs to the test output, filtered by `BARN_TEST_LOG` (default `warn`).
pub fn logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BARN_TEST_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A store in a new temporary directory.
pub fn store() -> (tempfile::TempDir, Arc<Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), &StoreOptions::default()).unwrap());
    (dir, store)
}

/// A mirror over `store` resolving through the network's PLC.
pub fn mirror(net: &Network, store: &Arc<Store>, config: MirrorConfig) -> (Mirror, Metrics) {
    mirror_at(&net.plc.url, store, config)
}

/// A mirror over `store` resolving through the PLC directory at `plc_url`
/// (a `FakePds` serves one too).
pub fn mirror_at(plc_url: &str, store: &Arc<Store>, config: MirrorConfig) -> (Mirror, Metrics) {
    let resolver = Resolver::new(ResolverConfig {
        plc_url: plc_url.to_owned(),
        ttl: Duration::from_secs(5),
        allow_http_localhost: true,
        ..ResolverConfig::default()
    })
    .unwrap();
    let metrics = Metrics::new().unwrap();
    let mirror = Mirror::new(store.clone(), resolver, config, metrics.clone());
    (mirror, metrics)
}

/// Polls `done` every 20 ms; fails the test after 30 s, naming `what`.
pub async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every active repo PDS `pds` lists right now: (DID, head rev).
pub async fn listed(client: &Client, pds: &str) -> Vec<(String, String)> {
    let page = client
        .get_json(pds, "com.atproto.sync.listRepos", &[("limit", "1000")])
        .await
        .unwrap();
    page["repos"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["active"] == true)
        .map(|r| {
            (
                r["did"].as_str().unwrap().to_owned(),
                r["rev"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Waits until barn's head rev of each `(did, rev)` is `rev`.
pub async fn wait_for_revs(store: &Store, want: &[(String, String)], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let behind: Vec<_> = want
            .iter()
            .filter_map(|(did, rev)| {
                let s = store.repo(did).unwrap();
                let ok = s
                    .as_ref()
                    .is_some_and(|s| s.rev.as_deref() == Some(rev.as_str()) && s.active);
                (!ok).then(|| (did.clone(), rev.clone(), s.map(|s| (s.rev, s.sync))))
            })
            .collect();
        if behind.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "barn is still behind: {behind:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until barn holds every account of `summary` (its head, or the
/// status that explains why it cannot), then checks each active account
/// against its PDS: the exported CAR (compare helper), the head rev, the
/// host, and the record index against the workload's record list.
pub async fn wait_matched(store: &Store, net: &Network, summary: &Summary, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let mut behind = Vec::new();
        for acct in &summary.accounts {
            let state = store.repo(&acct.did).unwrap();
            let ok = match (&state, acct.status.as_str()) {
                (Some(s), "deleted") => !s.active,
                (Some(s), _) => s.rev == acct.rev && s.active,
                (None, _) => false,
            };
            if !ok {
                behind.push((
                    acct.name.clone(),
                    state.map(|s| (s.rev, s.active, s.status, s.host, s.sync)),
                ));
            }
        }
        if behind.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "barn is still behind: {behind:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let client = Client::new();
    for acct in summary.accounts.iter().filter(|a| a.status == "active") {
        let state = store.repo(&acct.did).unwrap().unwrap();
        assert_eq!(
            normalize_host(&state.host),
            normalize_host(&acct.pds),
            "{}",
            acct.name
        );
        let car = store.export_car(&acct.did, None).unwrap();
        let cmp = compare_with_pds(&client, &net.plc.url, &acct.did, Bytes::from(car))
            .await
            .unwrap();
        assert_eq!(Some(cmp.rev), acct.rev, "{}", acct.name);
        let records: Vec<(String, String)> = store
            .records(&acct.did)
            .unwrap()
            .into_iter()
            .map(|(p, c)| (p, c.to_string()))
            .collect();
        let expected: Vec<(String, String)> = acct
            .records
            .iter()
            .map(|r| (r.path.clone(), r.cid.to_string()))
            .collect();
        assert_eq!(records, expected, "{}", acct.name);
    }
}

/// The lifecycle part of the workload, as barn must show it: erin deleted
/// with her history kept, carol/dave/bob active again, bob's new handle,
/// frank followed to PDS b.
pub fn assert_lifecycle(store: &Store, mirror: &Mirror, net: &Network, summary: &Summary) {
    let erin = summary.account("erin").unwrap();
    let state = store.repo(&erin.did).unwrap().unwrap();
    assert_eq!(
        (state.active, state.status.as_deref()),
        (false, Some("deleted"))
    );
    assert!(!store.history(&erin.did).unwrap().is_empty());
    for name in ["carol", "dave", "bob"] {
        let s = store
            .repo(&summary.account(name).unwrap().did)
            .unwrap()
            .unwrap();
        assert!(s.active && s.status.is_none(), "{name}: {s:?}");
    }
    assert_eq!(
        store
            .repo(&summary.account("bob").unwrap().did)
            .unwrap()
            .unwrap()
            .handle
            .as_deref(),
        Some("bob-renamed.test")
    );
    let frank = summary.account("frank").unwrap();
    let s = store.repo(&frank.did).unwrap().unwrap();
    assert_eq!(normalize_host(&s.host), normalize_host(&net.pds_b.url));
    assert!(mirror.hosts().contains(&normalize_host(&net.pds_b.url)));
}
