#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A repository written through a batch comes back byte for byte, at its
//! revision, after the store is closed and reopened; cursors and states
//! survive; older revisions stay exportable after newer ones.

use barn_repo::car::{CarLimits, read_car};
use barn_repo::commit::{build_repo, verify_repo};
use barn_repo::crypto::{KeyType, PrivateKey};
use barn_store::{
    Batch, CommitEntry, HostState, Op, OpAction, RepoState, Source, Store, StoreOptions, SyncState,
};

fn record(text: &str) -> Vec<u8> {
    barn_repo::data::encode(
        &barn_repo::data::record_from_json(&serde_json::json!({
            "$type": "app.bsky.feed.post", "text": text, "createdAt": "2026-01-01T00:00:00Z"
        }))
        .unwrap(),
    )
    .unwrap()
}

fn snapshot(
    store: &Store,
    did: &str,
    rev: &str,
    key: &PrivateKey,
    n: usize,
) -> (barn_repo::Cid, Vec<(String, barn_repo::Cid)>) {
    let records: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| {
            (
                format!("app.bsky.feed.post/{i:06}"),
                record(&format!("{rev} {i}")),
            )
        })
        .collect();
    let (commit, blocks) = build_repo(did, rev, key, records).unwrap();
    let verified = verify_repo(&blocks, &commit, Some(did), Some(&key.public_key())).unwrap();
    let mut batch = Batch::new();
    for (cid, data) in blocks.iter() {
        batch.put_block(*cid, data.clone());
    }
    for (path, cid) in &verified.records {
        batch.set_record(did, path, Some(*cid));
    }
    batch.put_revision(
        did,
        CommitEntry {
            rev: rev.into(),
            cid: commit,
            data: verified.commit.data,
            since: None,
            seen_at_ms: 1,
            source: Source::Resync,
            seq: Some(7),
            host: "http://localhost:1".into(),
            ops: verified
                .records
                .iter()
                .map(|(p, c)| Op {
                    action: OpAction::Create,
                    path: p.clone(),
                    cid: Some(*c),
                    prev: None,
                })
                .collect(),
            reason: Some("test".into()),
            chunked: None,
        },
    );
    let mut state = RepoState::new("http://localhost:1");
    state.head = Some(commit);
    state.rev = Some(rev.into());
    state.data = Some(verified.commit.data);
    state.sync = SyncState::Synchronized;
    batch.set_repo(did, state);
    batch.set_host(
        "http://localhost:1",
        HostState {
            cursor: Some(42),
            last_event_ms: 5,
            ..Default::default()
        },
    );
    store.write(batch).unwrap();
    (commit, verified.records)
}

#[test]
fn revisions_survive_reopen_and_export_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let did = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa";
    let key = PrivateKey::from_seed(KeyType::K256, 3);
    let (c1, r1) = {
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let first = snapshot(&store, did, "3kaaaaaaaaaa2", &key, 300);
        let _second = snapshot(&store, did, "3kaaaaaaaaab2", &key, 10);
        first
    };
    let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    assert_eq!(
        store.host("http://localhost:1").unwrap().unwrap().cursor,
        Some(42)
    );
    let state = store.repo(did).unwrap().unwrap();
    assert_eq!(state.rev.as_deref(), Some("3kaaaaaaaaab2"));
    assert_eq!(store.history(did).unwrap().len(), 2);
    // The record index is the union here (the test never deleted): 300 paths.
    assert_eq!(store.records(did).unwrap().len(), 300);

    // The old revision is still complete.
    let car = store.export_car(did, Some("3kaaaaaaaaaa2")).unwrap();
    let file = read_car(car.into(), &CarLimits::default()).unwrap();
    assert_eq!(file.root(), Some(&c1));
    let verified = verify_repo(&file.blocks, &c1, Some(did), Some(&key.public_key())).unwrap();
    assert_eq!(verified.records, r1);
    // The head too.
    let car = store.export_car(did, None).unwrap();
    let file = read_car(car.into(), &CarLimits::default()).unwrap();
    let head = verify_repo(&file.blocks, file.root().unwrap(), Some(did), None).unwrap();
    assert_eq!(head.records.len(), 10);
    assert_eq!(head.commit.rev, "3kaaaaaaaaab2");
    assert!(store.export_car(did, Some("3kaaaaaaaaac2")).is_err());
}
