#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Every account the seeded workload made (including the one migrated from
//! PDS a to PDS b, the renamed one and the deleted one) resolves through
//! the real `@did-plc/server` on loopback, which serves legacy-suite keys:
//! the resolved key verifies the repo commit the PDS serves, the PDS is the
//! account's current host, and the handle is its current handle. Then the
//! resolver's cache, refresh and single-flight, counted by its metrics
//! against the real directory, and a DID the directory never saw.

use std::sync::Arc;
use std::time::{Duration, Instant};

use barn_identity::{Error, Method, Resolver, ResolverConfig};
use barn_testkit::{Client, Network, WorkloadOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_accounts_resolve_through_loopback_plc() {
    let t0 = Instant::now();
    let net = Network::start().await.unwrap();
    let summary = net
        .run_workload(&WorkloadOptions {
            seed: 1,
            posts: 1,
            lifecycle: true,
            ..WorkloadOptions::default()
        })
        .await
        .unwrap();
    eprintln!("network and workload: {:?}", t0.elapsed());

    let resolver = Resolver::new(ResolverConfig {
        plc_url: net.plc.url.clone(),
        timeout: Duration::from_secs(10),
        ..ResolverConfig::default()
    })
    .unwrap();
    let registry = prometheus::Registry::new();
    resolver.register_metrics(&registry).unwrap();
    let requests = || resolver.metrics().requests_sent(Method::Plc);
    let client = Client::new();

    // --- every account --------------------------------------------------
    let mut first = Vec::new();
    for acct in &summary.accounts {
        let id = resolver.resolve(&acct.did).await.unwrap();
        assert_eq!(id.did, acct.did);
        assert_eq!(id.pds.as_deref(), Some(acct.pds.as_str()), "{}", acct.name);
        assert_eq!(
            id.handle.as_deref(),
            Some(acct.handle.as_str()),
            "{}",
            acct.name
        );
        if acct.status == "active" {
            // The key from the document verifies what the PDS serves.
            let car = client
                .get_ok(
                    id.pds.as_deref().unwrap(),
                    "com.atproto.sync.getRepo",
                    &[("did", &acct.did)],
                )
                .await
                .unwrap();
            let as_testkit = barn_testkit::Identity {
                did: id.did.clone(),
                signing_key: id.signing_key.clone(),
                pds: id.pds.clone().unwrap(),
                handle: id.handle.clone(),
            };
            let verified = barn_testkit::compare::verify_car(car, &as_testkit, &acct.name).unwrap();
            assert_eq!(Some(&verified.repo.commit.rev), acct.rev.as_ref());
        }
        first.push(id);
    }
    let n = summary.accounts.len() as u64;
    assert_eq!(requests(), n);
    assert_eq!(resolver.metrics().cache_misses.get(), n);

    let frank = summary.account("frank").unwrap();
    let frank_id = resolver.resolve(&frank.did).await.unwrap();
    assert_eq!(frank_id.pds.as_deref(), Some(net.pds_b.url.as_str()));
    assert_eq!(
        summary.account("bob").unwrap().handle,
        "bob-renamed.test",
        "the workload renamed bob, and the resolver saw the new handle"
    );
    // The deleted account was resolved above too: deleting it on the PDS
    // leaves its PLC document in place.
    assert!(summary.accounts.iter().any(|a| a.status == "deleted"));

    // The test directory serves the legacy key suite, so the loop above
    // went through the legacy parsing path (plc.directory serves Multikey,
    // which the unit tests and the did:web test cover).
    let raw = client.plc_document(&net.plc.url, &frank.did).await.unwrap();
    assert_eq!(
        raw["verificationMethod"][0]["type"], "EcdsaSecp256k1VerificationKey2019",
        "{raw}"
    );
    assert_eq!(raw["verificationMethod"][0]["id"], "#atproto", "{raw}");

    // --- the cache: same Arc within the TTL, no request -------------------
    for (acct, id) in summary.accounts.iter().zip(&first) {
        let again = resolver.resolve(&acct.did).await.unwrap();
        assert!(Arc::ptr_eq(id, &again), "{}", acct.name);
    }
    assert_eq!(requests(), n);
    assert_eq!(resolver.metrics().cache_hits.get(), n + 1);

    // --- refresh: one request, a new Arc with the same content, cached ----
    let alice = summary.account("alice").unwrap();
    let cached = resolver.resolve(&alice.did).await.unwrap();
    let refreshed = resolver.refresh(&alice.did).await.unwrap();
    assert_eq!(requests(), n + 1);
    assert!(!Arc::ptr_eq(&cached, &refreshed));
    assert_eq!(refreshed.signing_key, cached.signing_key);
    assert_eq!(refreshed.pds, cached.pds);
    assert!(refreshed.resolved_at > cached.resolved_at);
    assert!(Arc::ptr_eq(
        &refreshed,
        &resolver.resolve(&alice.did).await.unwrap()
    ));
    assert_eq!(resolver.metrics().refreshes.get(), 1);

    // --- single flight: 50 concurrent resolves, one request ---------------
    let bob = summary.account("bob").unwrap();
    resolver.invalidate(&bob.did);
    let before = requests();
    let joins_before = resolver.metrics().joins.get();
    let calls = (0..50).map(|_| {
        let (r, did) = (resolver.clone(), bob.did.clone());
        tokio::spawn(async move { r.resolve(&did).await })
    });
    let ids: Vec<_> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|j| j.unwrap().unwrap())
        .collect();
    assert_eq!(requests(), before + 1);
    assert!(ids.iter().all(|i| Arc::ptr_eq(i, &ids[0])));
    assert_eq!(ids[0].handle.as_deref(), Some("bob-renamed.test"));
    // Every call but the one that started the request either joined it or
    // (if it arrived after it landed) hit the cache.
    let joined = resolver.metrics().joins.get() - joins_before;
    assert!(joined <= 49, "{joined}");

    // --- a DID the directory never saw: 404, distinct from transport ------
    let unknown = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa";
    let err = resolver.resolve(unknown).await.unwrap_err();
    assert!(matches!(err, Error::DidNotFound { .. }), "{err}");
    assert!(err.is_not_found() && !err.is_transient());

    // The counters are exported.
    let text = format!("{:?}", registry.gather());
    for name in [
        "barn_identity_resolutions_total",
        "barn_identity_requests_total",
        "barn_identity_cache_hits_total",
        "barn_identity_refreshes_total",
    ] {
        assert!(text.contains(name), "{name} not exported");
    }
    assert_eq!(
        resolver
            .metrics()
            .resolutions
            .with_label_values(&["plc", "not_found"])
            .get(),
        1
    );

    // --- the directory going away is a transport error, not "not found" ---
    net.stop().await.unwrap();
    let err = resolver.refresh(&alice.did).await.unwrap_err();
    assert!(
        matches!(err, Error::Transport { .. } | Error::Timeout { .. }),
        "{err}"
    );
    assert!(err.is_transient());
    // …and the last good answer stays cached.
    assert!(Arc::ptr_eq(
        &resolver.cached(&alice.did).unwrap(),
        &refreshed
    ));
    eprintln!("whole scenario: {:?}", t0.elapsed());
}
