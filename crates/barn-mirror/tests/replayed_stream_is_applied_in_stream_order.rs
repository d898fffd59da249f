//! A recorded stream replayed through the mirror's pipeline
//! (`Mirror::track_host_source`): commits of several repos interleaved,
//! verified on the pool out of order, must be applied in stream order,
//! each repo's history complete and in rev order, one bad commit must stop
//! only its own repo, and every durable notice's cursor must cover only
//! frames whose effects are stored.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use barn_identity::{Identity, Resolver, ResolverConfig};
use barn_mirror::{Metrics, Mirror, MirrorConfig};
use barn_repo::crypto::{KeyType, PrivateKey};
use barn_store::{Store, StoreOptions, SyncState};
use barn_testkit::fake_pds::{DraftOptions, FakeAccount};
use bytes::Bytes;

const HOST: &str = "http://replay.invalid";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_stream_is_applied_in_stream_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), &StoreOptions::default()).unwrap());
    // Nothing to resolve over the network: identities are primed, and a
    // refresh (after the bad signature) fails fast.
    let resolver = Resolver::new(ResolverConfig {
        plc_url: "http://127.0.0.1:9".into(),
        timeout: Duration::from_secs(2),
        ..ResolverConfig::default()
    })
    .unwrap();
    let mut accounts: Vec<FakeAccount> = (0..4)
        .map(|i| FakeAccount::new(&FakeAccount::plc_did(100 + i), 100 + i))
        .collect();
    for a in &accounts {
        resolver.prime(Identity {
            did: a.did().to_owned(),
            signing_key: a.public_key(),
            pds: Some(HOST.into()),
            handle: None,
            resolved_at: Instant::now(),
        });
    }
    let metrics = Metrics::new().unwrap();
    let config = MirrorConfig {
        pipeline_depth: 32,
        group_commit_max: 25,
        verify_threads: 2,
        resync_retry: Duration::from_secs(600),
        ..MirrorConfig::default()
    };
    let mirror = Mirror::new(store.clone(), resolver, config, metrics.clone());

    // The stream: a genesis per account, then commits of random accounts.
    // Account 3's 10th commit is signed with the wrong key.
    let mut frames: Vec<Bytes> = Vec::new();
    let mut seq = 0i64;
    let mut applied: HashMap<String, Vec<String>> = HashMap::new();
    let mut bad_at = None;
    let mut commits_of_3 = 0;
    let mut rng = 12345u64;
    for i in 0..(4 + 300) {
        seq += 1;
        let n = if i < 4 {
            i
        } else {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((rng >> 33) % 4) as usize
        };
        let acct = &mut accounts[n];
        if n == 3 && acct.head().is_some() {
            commits_of_3 += 1;
        }
        if n == 3 && commits_of_3 == 10 {
            let draft = acct
                .draft_with(
                    seq,
                    &DraftOptions {
                        key: Some(PrivateKey::from_seed(KeyType::K256, 999)),
                        ..DraftOptions::default()
                    },
                )
                .unwrap();
            frames.push(draft.frame());
            bad_at = Some(seq);
            // The PDS's real history goes on; barn must not follow it
            // past the bad commit.
            acct.apply(&draft);
            continue;
        }
        let draft = acct
            .draft_with(
                seq,
                &DraftOptions {
                    records: if i < 4 { 3 } else { 1 },
                    ..DraftOptions::default()
                },
            )
            .unwrap();
        frames.push(draft.frame());
        if !(n == 3 && bad_at.is_some()) {
            applied
                .entry(acct.did().to_owned())
                .or_default()
                .push(draft.event.rev.clone());
        }
        acct.apply(&draft);
    }
    let last = seq;
    assert!(bad_at.is_some());

    let mut durable = mirror.subscribe_durable();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    mirror.track_host_source(HOST, rx);
    let feeder = tokio::spawn(async move {
        for f in frames {
            tx.send(f).await.unwrap();
        }
    });
    let mut cursors = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let d = durable.recv().await.unwrap();
            assert_eq!(d.host, HOST);
            // What a notice announces is in the store.
            let stored = store.host(HOST).unwrap().unwrap().cursor;
            assert!(stored >= d.cursor, "{stored:?} < {:?}", d.cursor);
            cursors.push(d.cursor);
            if d.cursor == Some(last) {
                break;
            }
        }
    })
    .await
    .expect("the whole stream became durable");
    feeder.await.unwrap();
    assert!(
        cursors.windows(2).all(|w| w[0] < w[1]),
        "cursors only move forward: {cursors:?}"
    );
    assert!(cursors.len() > 1, "more than one group commit");

    // Every good commit applied once, in order; the bad one stopped only
    // account 3.
    let good: usize = applied.values().map(Vec::len).sum();
    assert_eq!(metrics.commits_applied(), good as u64);
    assert!(metrics.verification_failures("bad_signature") >= 1);
    for a in &accounts {
        let history = store.history(a.did()).unwrap();
        let revs: Vec<String> = history.iter().map(|e| e.rev.clone()).collect();
        assert_eq!(&revs, &applied[a.did()], "{} history", a.did());
        let seqs: Vec<i64> = history.iter().map(|e| e.seq.unwrap()).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seqs in order");
        let state = store.repo(a.did()).unwrap().unwrap();
        assert_eq!(state.rev.as_ref(), applied[a.did()].last());
        if a.did() == accounts[3].did() {
            assert_eq!(state.sync, SyncState::Desynchronized);
            assert_ne!(state.head, a.head().map(|h| h.cid));
        } else {
            assert_eq!(state.sync, SyncState::Synchronized);
            assert_eq!(state.head, a.head().map(|h| h.cid));
            assert_eq!(
                store.records(a.did()).unwrap(),
                a.records()
                    .iter()
                    .map(|(p, c)| (p.clone(), *c))
                    .collect::<Vec<_>>()
            );
        }
    }
    mirror.shutdown().await;
}
