#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The network proves itself before it judges barn: run the whole seeded
//! workload (content, lifecycle, migration a → b) on a fresh loopback
//! network, then ask the PDSes and the PLC directory — through their own
//! APIs — whether they hold exactly what the workload's model says.
//! Then the compare helper: a CAR barn-repo loaded and re-wrote must match
//! the PDS, and a tampered or stale one must not. Finally every process
//! must be gone.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use bytes::Bytes;

use barn_repo::car::{CarLimits, read_car, write_car};
use barn_testkit::{
    Client, Error, Identity, Network, WorkloadOptions, compare_cars, compare_with_pds,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_with_lifecycle_and_migration_is_what_the_pdses_serve() {
    let t0 = Instant::now();
    let net = Network::start().await.unwrap();
    let started = t0.elapsed();
    let summary = net.run_workload(&WorkloadOptions::default()).await.unwrap();
    let worked = t0.elapsed() - started;
    eprintln!(
        "network up in {started:?}; workload: {} commits, {} blobs in {worked:?}",
        summary.commits, summary.blobs_uploaded
    );
    let client = Client::new();

    // --- the workload did what it says ------------------------------------
    assert_eq!(summary.accounts.len(), 7);
    assert!(summary.commits > 100, "{} commits", summary.commits);
    let frank = summary.account("frank").unwrap();
    assert_eq!(summary.migrations.len(), 1);
    assert_eq!(summary.migrations[0].did, frank.did);
    assert_eq!(
        (frank.host.as_str(), frank.pds.as_str()),
        ("b", net.pds_b.url.as_str())
    );
    assert_eq!(summary.account("bob").unwrap().handle, "bob-renamed.test");
    assert_eq!(summary.account("erin").unwrap().status, "deleted");
    // Some blobs lost their last reference (replaced avatars, deleted posts).
    let alice = summary.account("alice").unwrap();
    assert!(alice.uploaded_blobs.len() > alice.blobs.len());

    for acct in &summary.accounts {
        let pds = acct.pds.as_str();
        let status = client
            .get(pds, "com.atproto.sync.getRepoStatus", &[("did", &acct.did)])
            .await
            .unwrap();
        if acct.status == "deleted" {
            let err = status.expect_err("a deleted account has no repo");
            assert_eq!(
                (err.status, err.error.as_str()),
                (400, "RepoNotFound"),
                "{}",
                acct.name
            );
            continue;
        }
        let status: serde_json::Value = serde_json::from_slice(&status.unwrap()).unwrap();
        assert_eq!(status["active"], true, "{}: {status}", acct.name);
        assert_eq!(status["rev"].as_str(), acct.rev.as_deref(), "{}", acct.name);

        // Records per collection, and every (path, cid), via listRecords.
        let mut listed = BTreeSet::new();
        let mut per_collection = BTreeMap::new();
        for collection in acct.collections.keys() {
            let records = client
                .list_records(pds, &acct.did, collection)
                .await
                .unwrap();
            per_collection.insert(collection.clone(), records.len() as u64);
            for (uri, cid) in records {
                let path = uri
                    .strip_prefix(&format!("at://{}/", acct.did))
                    .unwrap()
                    .to_owned();
                listed.insert((path, cid));
            }
        }
        assert_eq!(per_collection, acct.collections, "{}", acct.name);
        let expected: BTreeSet<_> = acct
            .records
            .iter()
            .map(|r| (r.path.clone(), r.cid.clone()))
            .collect();
        assert_eq!(listed, expected, "{}", acct.name);

        // The blobs the live records reference, and only those.
        let mut blobs = client.list_blobs(pds, &acct.did).await.unwrap();
        blobs.sort();
        assert_eq!(blobs, acct.blobs, "{}: listBlobs", acct.name);

        // The DID document names this host and handle.
        let id = Identity::resolve(&client, &net.plc.url, &acct.did)
            .await
            .unwrap();
        assert_eq!(id.pds, acct.pds, "{}", acct.name);
        assert_eq!(
            id.handle.as_deref(),
            Some(acct.handle.as_str()),
            "{}",
            acct.name
        );
    }

    // --- migration: PLC document and both hosts -----------------------------
    let doc = client.plc_document(&net.plc.url, &frank.did).await.unwrap();
    let id = Identity::from_document(&frank.did, &doc).unwrap();
    assert_eq!(id.pds, net.pds_b.url);
    let recommended = client
        .get(
            &net.pds_b.url,
            "com.atproto.identity.getRecommendedDidCredentials",
            &[],
        )
        .await
        .unwrap();
    // (needs auth; only the status code matters: the key check is below)
    assert!(recommended.is_err());
    let on_a = client
        .get(
            &net.pds_a.url,
            "com.atproto.sync.getRepoStatus",
            &[("did", &frank.did)],
        )
        .await
        .unwrap();
    let on_a: serde_json::Value = serde_json::from_slice(&on_a.unwrap()).unwrap();
    assert_eq!(
        on_a["active"], false,
        "old host keeps frank deactivated: {on_a}"
    );
    assert_eq!(on_a["status"], "deactivated");
    // The new host's repo is signed with the key the PLC document now names.
    let car = client
        .get_ok(
            &net.pds_b.url,
            "com.atproto.sync.getRepo",
            &[("did", &frank.did)],
        )
        .await
        .unwrap();
    barn_testkit::compare::verify_car(car, &id, "frank on pds-b").unwrap();

    // --- the compare helper --------------------------------------------------
    for acct in summary.accounts.iter().filter(|a| a.status == "active") {
        let car = client
            .get_ok(&acct.pds, "com.atproto.sync.getRepo", &[("did", &acct.did)])
            .await
            .unwrap();
        // barn-repo loads the CAR, then writes it again with its blocks in
        // a different order (the CAR carries no order guarantee).
        let file = read_car(car, &CarLimits::default()).unwrap();
        let mut blocks: Vec<_> = file.blocks.iter().collect();
        blocks.sort_by_key(|(cid, _)| std::cmp::Reverse(cid.to_bytes()));
        let rewritten = write_car(&file.roots, blocks.into_iter().map(|(c, d)| (c, &d[..])));
        let cmp = compare_with_pds(&client, &net.plc.url, &acct.did, Bytes::from(rewritten))
            .await
            .unwrap();
        assert_eq!(cmp.rev, acct.rev.clone().unwrap());
        assert_eq!(cmp.commit.to_string(), acct.commit.clone().unwrap());
        assert_eq!(cmp.records, acct.records.len());
    }

    // It must also be able to fail: another account's CAR, a CAR missing a
    // record block, a stale CAR (an older revision).
    let alice_id = Identity::resolve(&client, &net.plc.url, &alice.did)
        .await
        .unwrap();
    let alice_car = client
        .get_ok(
            &alice.pds,
            "com.atproto.sync.getRepo",
            &[("did", &alice.did)],
        )
        .await
        .unwrap();
    let bob = summary.account("bob").unwrap();
    let bob_car = client
        .get_ok(&bob.pds, "com.atproto.sync.getRepo", &[("did", &bob.did)])
        .await
        .unwrap();
    let err = compare_cars(&alice_id, bob_car, alice_car.clone()).unwrap_err();
    assert!(matches!(err, Error::Repo { .. }), "{err}");

    let file = read_car(alice_car.clone(), &CarLimits::default()).unwrap();
    let record_cid: barn_repo::Cid = alice.records[0].cid.parse().unwrap();
    let without = file
        .blocks
        .iter()
        .filter(|(c, _)| **c != record_cid)
        .map(|(c, d)| (c, &d[..]));
    let truncated = write_car(&file.roots, without);
    let err = compare_cars(&alice_id, Bytes::from(truncated), alice_car.clone()).unwrap_err();
    assert!(
        matches!(&err, Error::Repo { source, .. } if matches!(**source, barn_repo::Error::MissingBlock(c) if c == record_cid)),
        "{err}"
    );

    // Stale: the CAR from before one more post is behind the PDS.
    let stale = alice_car;
    let mut agent_post = tokio::process::Command::new(barn_testkit::process::node_bin());
    agent_post
        .current_dir(barn_testkit::process::network_dir())
        .args(["-e", &post_script(&alice.pds, &alice.handle)]);
    let out = agent_post.output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = compare_with_pds(&client, &net.plc.url, &alice.did, stale)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Mismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("rev") && msg.contains("records differ"),
        "{msg}"
    );

    // --- clean stop ----------------------------------------------------------
    let pids = net.pids();
    assert_eq!(pids.len(), 3);
    net.stop().await.unwrap();
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} still there"
        );
    }
    eprintln!("whole scenario: {:?}", t0.elapsed());
}

/// A one-off post through the reference client, as `alice` (password as the
/// workload sets it).
fn post_script(pds: &str, handle: &str) -> String {
    let name = handle.split('.').next().unwrap();
    format!(
        "const {{ AtpAgent }} = require('@atproto/api');
         (async () => {{
           const a = new AtpAgent({{ service: '{pds}' }});
           await a.login({{ identifier: '{handle}', password: 'pw-{name}' }});
           await a.post({{ text: 'one more', createdAt: new Date().toISOString() }});
         }})().catch((e) => {{ console.error(e); process.exit(1) }})"
    )
}
