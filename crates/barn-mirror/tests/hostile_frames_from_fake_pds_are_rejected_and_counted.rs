#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A fake PDS (barn-testkit) feeds barn's mirror crafted frames: bad
//! signature, a key the DID document no longer names, a rev that does not
//! increase, a wrong prevData, ops that do not invert, a corrupted block,
//! missing blocks, an oversized frame, malformed CBOR, and events for a DID
//! hosted elsewhere. Each is rejected with its reason counted, the stored
//! repo (head, rev, record index, history) is unchanged, and the host task
//! keeps running: the next valid commit is applied.

mod common;

use common::wait_for;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cid::Cid;

use barn_firehose::OpAction;
use barn_identity::{Resolver, ResolverConfig};
use barn_mirror::{Metrics, Mirror, MirrorConfig};
use barn_repo::crypto::{KeyType, PrivateKey};
use barn_repo::syntax::Tid;
use barn_store::{CommitEntry, Store, StoreOptions, SyncState};
use barn_testkit::{DraftCommit, DraftOptions, FakeAccount, FakePds};

/// What barn holds of one repo, for before/after comparisons.
#[derive(Debug, PartialEq)]
struct Snapshot {
    head: Option<Cid>,
    rev: Option<String>,
    data: Option<Cid>,
    records: Vec<(String, Cid)>,
    history: Vec<CommitEntry>,
}

fn snapshot(store: &Store, did: &str) -> Snapshot {
    let state = store.repo(did).unwrap().expect("repo is stored");
    Snapshot {
        head: state.head,
        rev: state.rev,
        data: state.data,
        records: store.records(did).unwrap(),
        history: store.history(did).unwrap(),
    }
}

/// Where a rejection is counted.
#[derive(Clone, Copy, Debug)]
enum Counted {
    /// `barn_mirror_verification_failures_total{reason}`.
    Verify(&'static str),
    /// `barn_mirror_rejected_frames_total{reason}` (never became an event).
    Frame(&'static str),
}

/// What happens after the rejection.
#[derive(Clone, Copy, Debug, PartialEq)]
enum After {
    /// Dropped; nothing else happens.
    Nothing,
    /// The repo is resynced by getRepo, which serves the legit head.
    ResyncUnchanged,
}

struct Harness {
    fake: FakePds,
    store: Arc<Store>,
    mirror: Mirror,
    metrics: Metrics,
    acct: FakeAccount,
    seq: i64,
    applied: u64,
}

impl Harness {
    fn next_seq(&mut self) -> i64 {
        self.seq += 1;
        self.seq
    }

    fn count(&self, c: Counted) -> u64 {
        match c {
            Counted::Verify(r) => self.metrics.verification_failures(r),
            Counted::Frame(r) => self.metrics.rejected_frames(r),
        }
    }

    /// Sends a valid next commit and waits until barn's head is it.
    async fn valid_commit(&mut self, why: &str) {
        let seq = self.next_seq();
        let draft = self.acct.draft(seq).unwrap();
        self.fake.push(seq, draft.frame());
        let did = self.acct.did().to_owned();
        let store = self.store.clone();
        let want = draft.commit_cid();
        wait_for(
            &format!("the valid commit after {why} to be applied"),
            || {
                store
                    .repo(&did)
                    .unwrap()
                    .is_some_and(|s| s.head == Some(want) && s.sync == SyncState::Synchronized)
            },
        )
        .await;
        self.acct.apply(&draft);
        // getRepo serves the legit head, so a resync has nothing to change.
        self.fake.set_repo(&did, self.acct.car());
        self.applied += 1;
        assert_eq!(self.metrics.commits_applied(), self.applied, "{why}");
        assert_eq!(
            self.store.records(&did).unwrap(),
            self.acct
                .records()
                .iter()
                .map(|(p, c)| (p.clone(), *c))
                .collect::<Vec<_>>(),
            "{why}"
        );
    }

    /// Pushes `frames` (the hostile case), waits for `counted` to grow and
    /// for what comes `after`, checks that the stored repo did not change
    /// and that `commit` (the hostile commit, if any) was not stored, then
    /// shows the subscriber goes on with a valid commit.
    async fn hostile(
        &mut self,
        case: &str,
        frames: Vec<(i64, Bytes)>,
        commit: Option<Cid>,
        counted: Counted,
        after: After,
    ) {
        let did = self.acct.did().to_owned();
        let before = snapshot(&self.store, &did);
        let count_before = self.count(counted);
        let unchanged_before = self.metrics.resyncs("unchanged");
        for (seq, frame) in frames {
            self.fake.push(seq, frame);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.count(counted) <= count_before {
            assert!(
                Instant::now() < deadline,
                "{case}: {counted:?} was never counted"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if after == After::ResyncUnchanged {
            let metrics = self.metrics.clone();
            wait_for(&format!("{case}: the resync"), || {
                metrics.resyncs("unchanged") > unchanged_before
            })
            .await;
            // The outcome is counted when the host task takes it; the state
            // it sets is durable with the next group commit.
            let store = self.store.clone();
            wait_for(&format!("{case}: the resync's state durable"), || {
                store.repo(&did).unwrap().unwrap().sync == SyncState::Synchronized
            })
            .await;
            assert_eq!(
                self.store.repo(&did).unwrap().unwrap().sync,
                SyncState::Synchronized,
                "{case}"
            );
        } else {
            // Give a wrongly applied commit the time to become durable.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(snapshot(&self.store, &did), before, "{case}: store changed");
        if let Some(cid) = commit {
            assert!(
                !self.store.has_block(&cid).unwrap(),
                "{case}: the hostile commit's block was stored"
            );
        }
        assert_eq!(self.metrics.host_task_failures(), 0, "{case}");
        self.valid_commit(case).await;
    }

    /// A valid draft of the next commit, to be broken by the caller.
    fn draft(&mut self) -> DraftCommit {
        let seq = self.next_seq();
        self.acct.draft(seq).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_from_a_fake_pds_are_rejected_counted_and_survived() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BARN_TEST_LOG")
                .unwrap_or_else(|_| "error".into()),
        )
        .with_test_writer()
        .try_init();
    let fake = FakePds::start().await.unwrap();
    let host = fake.url().to_owned();
    let acct = FakeAccount::new(&FakeAccount::plc_did(1), 1);
    let did = acct.did().to_owned();
    fake.set_did_doc(&did, acct.did_doc(&host));

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), &StoreOptions::default()).unwrap());
    let resolver = Resolver::new(ResolverConfig {
        plc_url: host.clone(),
        allow_http_localhost: true,
        ..ResolverConfig::default()
    })
    .unwrap();
    let metrics = Metrics::new().unwrap();
    let config = MirrorConfig {
        new_host_cursor: Some(0),
        // Frames are what is tested here; the accounts come from them.
        backfill: false,
        max_frame_bytes: 64 << 10,
        backoff_min: Duration::from_millis(50),
        resync_retry: Duration::from_millis(200),
        ..MirrorConfig::default()
    };
    let mirror = Mirror::new(store.clone(), resolver, config, metrics.clone());
    mirror.start(std::slice::from_ref(&host)).unwrap();

    let mut h = Harness {
        fake,
        store,
        mirror,
        metrics,
        acct,
        seq: 0,
        applied: 0,
    };

    // A genesis commit with five records, then a few valid commits.
    let seq = h.next_seq();
    let genesis = h
        .acct
        .draft_with(
            seq,
            &DraftOptions {
                records: 5,
                ..DraftOptions::default()
            },
        )
        .unwrap();
    h.fake.push(seq, genesis.frame());
    let store = h.store.clone();
    let want = genesis.commit_cid();
    wait_for("the genesis commit", || {
        store
            .repo(&did)
            .unwrap()
            .is_some_and(|s| s.head == Some(want))
    })
    .await;
    h.acct.apply(&genesis);
    h.fake.set_repo(&did, h.acct.car());
    h.applied += 1;
    for i in 0..3 {
        h.valid_commit(&format!("valid commit {i}")).await;
    }
    assert_eq!(h.store.records(&did).unwrap().len(), 8);
    assert_eq!(h.store.history(&did).unwrap().len(), 4);

    // Bad signature: signed by a key the DID document never named (the
    // key is refreshed once before giving up).
    let seq = h.next_seq();
    let stranger = PrivateKey::from_seed(KeyType::K256, 666);
    let bad = h
        .acct
        .draft_with(
            seq,
            &DraftOptions {
                key: Some(stranger.clone()),
                ..DraftOptions::default()
            },
        )
        .unwrap();
    h.hostile(
        "bad signature",
        vec![(seq, bad.frame())],
        Some(bad.commit_cid()),
        Counted::Verify("bad_signature"),
        After::ResyncUnchanged,
    )
    .await;

    // Wrong key: the DID document now names another key (announced by
    // #identity), the commit is signed by the old one. The resync cannot
    // verify the repo with the new key either, so the repo stays
    // desynchronized until the document names the right key again.
    let rotated = PrivateKey::from_seed(KeyType::K256, 777);
    h.fake.set_did_doc(
        &did,
        barn_testkit::did_doc(&did, &rotated.public_key(), &host),
    );
    let id_seq = h.next_seq();
    let bad = h.draft();
    let failed_resyncs = h.metrics.resyncs("bad_signature");
    h.hostile_wrong_key(id_seq, bad, failed_resyncs).await;

    // rev not increasing: a properly signed commit whose rev is older than
    // barn's head.
    let seq = h.next_seq();
    let head_rev: Tid = h.acct.head().unwrap().rev.parse().unwrap();
    let older = Tid::from_parts(head_rev.timestamp_micros() - 1, 0)
        .unwrap()
        .to_string();
    let bad = h
        .acct
        .draft_with(
            seq,
            &DraftOptions {
                rev: Some(older),
                ..DraftOptions::default()
            },
        )
        .unwrap();
    h.hostile(
        "rev not increasing",
        vec![(seq, bad.frame())],
        Some(bad.commit_cid()),
        Counted::Verify("rev_not_increasing"),
        After::Nothing,
    )
    .await;

    // prevData mismatch.
    let mut bad = h.draft();
    bad.event.prev_data = Some(bad.data);
    h.hostile(
        "prevData mismatch",
        vec![(bad.event.seq, bad.frame())],
        Some(bad.commit_cid()),
        Counted::Verify("prev_data_mismatch"),
        After::ResyncUnchanged,
    )
    .await;

    // Ops that do not invert: one op hidden.
    let mut bad = h.draft();
    bad.event.ops.clear();
    h.hostile(
        "op missing",
        vec![(bad.event.seq, bad.frame())],
        Some(bad.commit_cid()),
        Counted::Verify("inversion_mismatch"),
        After::ResyncUnchanged,
    )
    .await;

    // Ops that do not invert: a create claimed as an update.
    let mut bad = h.draft();
    let some_record = *h.acct.records().values().next().unwrap();
    bad.event.ops[0].action = OpAction::Update;
    bad.event.ops[0].prev = Some(some_record);
    h.hostile(
        "wrong op action",
        vec![(bad.event.seq, bad.frame())],
        Some(bad.commit_cid()),
        Counted::Verify("inversion_mismatch"),
        After::ResyncUnchanged,
    )
    .await;

    // Block hash mismatch: one bit flipped inside the record block.
    let mut bad = h.draft();
    let record = bad.records[0].1;
    bad.corrupt_block(&record);
    h.hostile(
        "block hash mismatch",
        vec![(bad.event.seq, bad.frame())],
        Some(bad.commit_cid()),
        Counted::Verify("hash_mismatch"),
        After::ResyncUnchanged,
    )
    .await;

    // Missing blocks: the record block left out.
    let mut bad = h.draft();
    let record = bad.records[0].1;
    bad.drop_block(&record);
    h.hostile(
        "record block missing",
        vec![(bad.event.seq, bad.frame())],
        Some(bad.commit_cid()),
        Counted::Verify("missing_block"),
        After::ResyncUnchanged,
    )
    .await;

    // Missing blocks: the new MST root left out (the proof is incomplete).
    let mut bad = h.draft();
    let root = bad.data;
    bad.drop_block(&root);
    h.hostile(
        "MST node missing",
        vec![(bad.event.seq, bad.frame())],
        Some(bad.commit_cid()),
        Counted::Verify("inversion_failed"),
        After::ResyncUnchanged,
    )
    .await;

    // Oversized frame: a valid commit carrying a record larger than
    // max_frame_bytes. The socket is dropped and the cursor skips it.
    let seq = h.next_seq();
    let big = h
        .acct
        .draft_with(
            seq,
            &DraftOptions {
                padding: 100 << 10,
                ..DraftOptions::default()
            },
        )
        .unwrap();
    assert!(big.frame().len() > 64 << 10);
    let subscriptions = h.fake.subscriptions();
    h.hostile(
        "oversized frame",
        vec![(seq, big.frame())],
        Some(big.commit_cid()),
        Counted::Frame("oversized"),
        After::Nothing,
    )
    .await;
    assert!(
        h.fake.subscriptions() > subscriptions,
        "the client reconnected"
    );

    // Malformed CBOR: a valid commit frame cut in half.
    let good = h.draft();
    let frame = good.frame();
    let cut = frame.slice(..frame.len() / 2);
    let reason = barn_firehose::decode_frame(&cut).unwrap_err().reason();
    h.hostile(
        "malformed CBOR",
        vec![(good.event.seq, cut)],
        Some(good.commit_cid()),
        Counted::Frame(reason),
        After::Nothing,
    )
    .await;

    // Events for a DID hosted elsewhere: a valid genesis commit of an
    // account whose DID document names another PDS.
    let stranger_acct = FakeAccount::new(&FakeAccount::plc_did(2), 2);
    let elsewhere = "http://localhost:9";
    h.fake
        .set_did_doc(stranger_acct.did(), stranger_acct.did_doc(elsewhere));
    let seq = h.next_seq();
    let foreign = stranger_acct.draft(seq).unwrap();
    h.hostile(
        "DID hosted elsewhere",
        vec![(seq, foreign.frame())],
        Some(foreign.commit_cid()),
        Counted::Verify("wrong_host"),
        After::Nothing,
    )
    .await;
    assert!(
        h.store.repo(stranger_acct.did()).unwrap().is_none(),
        "barn stored state for a DID it does not mirror"
    );
    assert!(h.store.records(stranger_acct.did()).unwrap().is_empty());
    assert_eq!(
        h.mirror.hosts(),
        vec![host.clone()],
        "barn followed a DID it does not mirror to its host"
    );

    // Still one running host task, every valid commit applied.
    assert_eq!(h.metrics.host_task_failures(), 0);
    let history = h.store.history(&did).unwrap();
    assert_eq!(history.len() as u64, h.applied);
    assert_eq!(
        h.store.repo(&did).unwrap().unwrap().head,
        Some(h.acct.head().unwrap().cid)
    );
    h.mirror.shutdown().await;
}

impl Harness {
    /// The wrong-key case, which needs the document changed around it.
    async fn hostile_wrong_key(&mut self, id_seq: i64, bad: DraftCommit, failed_before: u64) {
        let did = self.acct.did().to_owned();
        let before = snapshot(&self.store, &did);
        let count_before = self.metrics.verification_failures("bad_signature");
        self.fake.push(id_seq, self.acct.identity_frame(id_seq));
        self.fake.push(bad.event.seq, bad.frame());
        let metrics = self.metrics.clone();
        wait_for("wrong key: bad_signature counted", || {
            metrics.verification_failures("bad_signature") > count_before
        })
        .await;
        // The resync cannot verify the repo against the new key.
        wait_for("wrong key: the failed resync", || {
            metrics.resyncs("bad_signature") > failed_before
        })
        .await;
        assert_eq!(
            snapshot(&self.store, &did),
            before,
            "wrong key: store changed"
        );
        assert!(!self.store.has_block(&bad.commit_cid()).unwrap());
        assert_eq!(
            self.store.repo(&did).unwrap().unwrap().sync,
            SyncState::Desynchronized
        );
        // The document names the account's key again: the repo comes back
        // by itself (a retried resync), then commits apply again.
        let unchanged_before = self.metrics.resyncs("unchanged");
        self.fake
            .set_did_doc(&did, self.acct.did_doc(self.fake.url()));
        let seq = self.next_seq();
        self.fake.push(seq, self.acct.identity_frame(seq));
        wait_for("wrong key: the retried resync", || {
            metrics.resyncs("unchanged") > unchanged_before
        })
        .await;
        assert_eq!(
            snapshot(&self.store, &did),
            before,
            "wrong key: store changed"
        );
        self.valid_commit("wrong key").await;
    }
}
