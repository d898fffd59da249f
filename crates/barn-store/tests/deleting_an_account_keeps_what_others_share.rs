#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Deleting one account's backup removes its history, records, blocks and
//! blob states, and leaves another account that shares a record block and
//! a blob whole: its CAR still verifies and its blob is still known.

use barn_repo::car::{CarLimits, read_car};
use barn_repo::commit::{build_repo, verify_repo};
use barn_repo::crypto::{KeyType, PrivateKey};
use barn_store::{
    Batch, BlobHint, CommitEntry, Op, RepoState, Source, Store, StoreOptions, SyncState,
};

fn post(text: &str) -> Vec<u8> {
    barn_repo::data::encode(
        &barn_repo::data::record_from_json(&serde_json::json!({
            "$type": "app.bsky.feed.post", "text": text, "createdAt": "2026-01-01T00:00:00Z"
        }))
        .unwrap(),
    )
    .unwrap()
}

/// A first import's revision entry.
fn resync_entry(
    rev: &str,
    commit: barn_repo::Cid,
    data: barn_repo::Cid,
    ops: Vec<Op>,
) -> CommitEntry {
    CommitEntry {
        rev: rev.into(),
        cid: commit,
        data,
        since: None,
        seen_at_ms: 1,
        source: Source::Resync,
        seq: None,
        host: "http://localhost:1".into(),
        ops,
        reason: None,
        chunked: None,
    }
}

/// Stores `records` as `did`'s only revision, with `blob` referenced.
fn store_repo(
    store: &Store,
    did: &str,
    records: Vec<(String, Vec<u8>)>,
    blob: barn_repo::Cid,
) -> Vec<barn_repo::Cid> {
    let key = PrivateKey::from_seed(KeyType::K256, 5);
    let (commit, blocks) = build_repo(did, "3lbaaaaaaaa22", &key, records).unwrap();
    let verified = verify_repo(&blocks, &commit, Some(did), None).unwrap();
    let mut batch = Batch::new();
    for (cid, data) in blocks.iter() {
        batch.put_block(*cid, data.clone());
    }
    for (path, cid) in &verified.records {
        batch.set_record(did, path, Some(*cid));
    }
    let ops = verified
        .records
        .iter()
        .map(|(p, c)| Op::create(p.clone(), *c))
        .collect();
    batch.put_revision(
        did,
        resync_entry("3lbaaaaaaaa22", commit, verified.commit.data, ops),
    );
    batch.add_blob_ref(did, blob, BlobHint::default());
    let mut state = RepoState::new("http://localhost:1");
    state.advance(commit, "3lbaaaaaaaa22".into(), verified.commit.data);
    state.sync = SyncState::Synchronized;
    batch.set_repo(did, state);
    store.write(batch).unwrap();
    blocks.iter().map(|(c, _)| *c).collect()
}

#[test]
fn deleting_an_account_keeps_what_others_share() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    let shared_blob = barn_repo::cid_for_raw(b"both");
    let own_blob = barn_repo::cid_for_raw(b"mine");
    let shared = post("the same bytes in both accounts");
    let gone_blocks = store_repo(
        &store,
        "did:plc:gone",
        vec![
            ("app.bsky.feed.post/a".into(), shared.clone()),
            ("app.bsky.feed.post/b".into(), post("only mine")),
        ],
        shared_blob,
    );
    {
        let mut b = Batch::new();
        b.add_blob_ref("did:plc:gone", own_blob, BlobHint::default());
        store.write(b).unwrap();
    }
    store_repo(
        &store,
        "did:plc:kept",
        vec![("app.bsky.feed.post/z".into(), shared.clone())],
        shared_blob,
    );
    let shared_cid = barn_repo::cid_for_cbor(&shared);
    let own_cid = barn_repo::cid_for_cbor(&post("only mine"));
    let before = store.export_car("did:plc:kept", None).unwrap();

    let report = store.delete_account("did:plc:gone").unwrap();

    assert_eq!(report.revisions, 1);
    assert_eq!(report.records, 2);
    assert_eq!(report.blobs, vec![own_blob]);
    assert_eq!(report.blobs_shared, 1);
    assert!(report.blocks_shared >= 1);
    // Every block of the deleted repo is gone except the shared record.
    for cid in &gone_blocks {
        assert_eq!(
            store.has_block(cid).unwrap(),
            *cid == shared_cid,
            "{cid} shared {shared_cid} {report:?}"
        );
    }
    assert!(!store.has_block(&own_cid).unwrap());
    assert_eq!(report.blocks, gone_blocks.len() as u64 - 1);
    assert!(store.repo("did:plc:gone").unwrap().is_none());
    assert!(
        store
            .revision("did:plc:gone", "3lbaaaaaaaa22")
            .unwrap()
            .is_none()
    );
    assert!(store.blob(&own_blob).unwrap().is_none());
    assert!(store.blob(&shared_blob).unwrap().is_some());
    assert_eq!(store.account_blobs("did:plc:gone").unwrap().len(), 0);
    assert_eq!(store.account_blobs("did:plc:kept").unwrap().len(), 1);
    assert_eq!(
        store.tracking().unwrap().dropped_accounts,
        vec!["did:plc:gone"]
    );
    // The other account is untouched, byte for byte, and still verifies.
    let after = store.export_car("did:plc:kept", None).unwrap();
    assert_eq!(before, after);
    let car = read_car(after.into(), &CarLimits::default()).unwrap();
    verify_repo(&car.blocks, car.root().unwrap(), Some("did:plc:kept"), None).unwrap();
}

/// The account kept was imported whole (a revision of its tree: its ops
/// are read from its tree, not stored). A record block it shares with the
/// deleted account is found there and kept.
#[test]
fn a_record_shared_with_a_first_import_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    let shared = post("the same bytes in both accounts");
    let shared_cid = barn_repo::cid_for_cbor(&shared);
    store_repo(
        &store,
        "did:plc:gone",
        vec![("app.bsky.feed.post/a".into(), shared.clone())],
        barn_repo::cid_for_raw(b"blob"),
    );

    let did = "did:plc:kept";
    let rev = "3lbaaaaaaaa22";
    let mut records: Vec<(String, Vec<u8>)> = (0..barn_store::CHUNK_OPS + 10)
        .map(|i| (format!("app.bsky.feed.post/k{i:06}"), post(&format!("{i}"))))
        .collect();
    records.push(("app.bsky.feed.post/z".into(), shared.clone()));
    let key = PrivateKey::from_seed(KeyType::K256, 6);
    let (commit, blocks) = build_repo(did, rev, &key, records).unwrap();
    let verified = verify_repo(&blocks, &commit, Some(did), None).unwrap();
    let mut batch = Batch::new();
    for (cid, data) in blocks.iter() {
        batch.put_block(*cid, data.clone());
    }
    let mut state = RepoState::new("http://localhost:1");
    state.advance(commit, rev.into(), verified.commit.data);
    batch.set_repo(did, state);
    store.write(batch).unwrap();
    let mut revision = store.large_revision_of_tree(did, rev).unwrap();
    for (path, cid) in &verified.records {
        revision.push(Op::create(path.clone(), *cid)).unwrap();
    }
    revision
        .commit(resync_entry(rev, commit, verified.commit.data, Vec::new()))
        .unwrap();
    let entry = store.revision(did, rev).unwrap().unwrap();
    assert!(entry.chunked.is_some_and(|c| c.of_tree), "{entry:?}");
    let before = store.export_car(did, None).unwrap();

    store.delete_account("did:plc:gone").unwrap();

    assert!(store.has_block(&shared_cid).unwrap());
    let after = store.export_car(did, None).unwrap();
    assert_eq!(before, after);
}
