#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `import_car` streams blocks into the store before it can check the
//! tree, so what it must never do is record a revision for a repo that is
//! not whole and genuine: a record block missing from the CAR, a commit
//! signed by another key, a block that is not DAG-CBOR. Each fails with
//! its reason and leaves no revision and no record index behind; the
//! genuine CAR then imports with every record.

use std::sync::Arc;

use barn_mirror::{Error, ImportLimits, ImportReport, ImportRequest, import_car};
use barn_repo::BlockMap;
use barn_repo::car::write_car;
use barn_repo::commit::build_repo;
use barn_repo::crypto::{KeyType, PrivateKey};
use barn_store::{RepoState, Source, Store, StoreOptions};
use cid::Cid;

const DID: &str = "did:plc:importtestimporttestimpo";

fn records(n: usize) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let json = serde_json::json!({"$type": "com.example.thing", "n": i});
            let value = barn_repo::data::record_from_json(&json).unwrap();
            (
                format!("com.example.thing/3l{i:011}"),
                barn_repo::data::encode(&value).unwrap(),
            )
        })
        .collect()
}

async fn import(store: &Arc<Store>, car: Vec<u8>, key: &PrivateKey) -> barn_mirror::Result<u64> {
    let request = ImportRequest {
        did: DID.to_owned(),
        key: key.public_key(),
        state: RepoState::new("https://pds.example"),
        source: Source::Resync,
        reason: "test".into(),
    };
    let report = import_car(
        store.clone(),
        request,
        std::io::Cursor::new(car),
        ImportLimits::default(),
    )
    .await?;
    Ok(report.records)
}

fn nothing_recorded(store: &Store) {
    assert!(store.history(DID).unwrap().is_empty());
    assert!(store.records(DID).unwrap().is_empty());
}

#[tokio::test]
async fn incomplete_or_forged_cars_leave_no_revision_and_the_genuine_one_imports() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), &StoreOptions::default()).unwrap());
    let key = PrivateKey::from_seed(KeyType::K256, 3);
    let (root, blocks) = build_repo(DID, "3l3qo2vuowo2b", &key, records(40)).unwrap();
    let all: Vec<_> = blocks.iter().map(|(c, b)| (*c, b.clone())).collect();
    let car = |skip: Option<cid::Cid>, extra: Option<(cid::Cid, bytes::Bytes)>| {
        let list: Vec<_> = all
            .iter()
            .filter(|(c, _)| Some(*c) != skip)
            .cloned()
            .chain(extra)
            .collect();
        write_car(&[root], list.iter().map(|(c, b)| (c, &b[..])))
    };

    // A record block left out.
    let commit = barn_repo::commit::Commit::decode(blocks.get(&root).unwrap()).unwrap();
    let (_, record) = barn_repo::mst::MstWalker::new(&blocks, &commit.data)
        .unwrap()
        .nth(7)
        .unwrap()
        .unwrap();
    match import(&store, car(Some(record), None), &key).await {
        Err(Error::Repo { source, .. }) => {
            assert_eq!(
                source.reason(),
                barn_repo::Error::MissingBlock(record).reason()
            )
        }
        other => panic!("a missing record must fail the import: {other:?}"),
    }
    nothing_recorded(&store);

    // Signed by a key that is not the account's.
    let other = PrivateKey::from_seed(KeyType::K256, 4);
    match import(&store, car(None, None), &other).await {
        Err(Error::Repo { source, .. }) => assert_eq!(source.reason(), "bad_signature"),
        other => panic!("a wrong key must fail the import: {other:?}"),
    }
    nothing_recorded(&store);

    // A raw (non-DAG-CBOR) block in the CAR.
    let raw = bytes::Bytes::from_static(b"not a repo block");
    let raw_cid = barn_repo::cid_for_raw(&raw);
    match import(&store, car(None, Some((raw_cid, raw))), &key).await {
        Err(Error::Repo { .. }) => {}
        other => panic!("a raw block must fail the import: {other:?}"),
    }
    nothing_recorded(&store);

    // The genuine CAR: every record, one revision.
    assert_eq!(import(&store, car(None, None), &key).await.unwrap(), 40);
    assert_eq!(store.records(DID).unwrap().len(), 40);
    let history = store.history(DID).unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].ops.len(), 40);
}

/// A repo of `n` records where record `i` says `version` when `i` is odd.
fn versioned(n: usize, skip_every: usize, version: u32) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .filter(|i| skip_every == 0 || i % skip_every != 0)
        .map(|i| {
            let v = if i % 2 == 1 { version } else { 0 };
            let json = serde_json::json!({"$type": "com.example.thing", "n": i, "v": v});
            let value = barn_repo::data::record_from_json(&json).unwrap();
            (
                format!("com.example.thing/3l{i:011}"),
                barn_repo::data::encode(&value).unwrap(),
            )
        })
        .collect()
}

/// Every record of the tree that the commit `root` names, in key order.
fn walk(blocks: &BlockMap, root: &Cid) -> Vec<(Vec<u8>, Cid)> {
    let commit = barn_repo::commit::Commit::decode(blocks.get(root).unwrap()).unwrap();
    barn_repo::mst::MstWalker::new(blocks, &commit.data)
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

/// The repo's CAR, without the block `skip` when one is given.
fn car_without(root: Cid, blocks: &BlockMap, skip: Option<Cid>) -> Vec<u8> {
    write_car(
        &[root],
        blocks
            .iter()
            .filter(|(c, _)| Some(**c) != skip)
            .map(|(c, b)| (c, &b[..])),
    )
}

/// Imports `car` as the repo of `key`'s account, barn's state of it being
/// `state`.
async fn import_from(
    store: &Arc<Store>,
    key: &PrivateKey,
    state: RepoState,
    car: Vec<u8>,
) -> barn_mirror::Result<ImportReport> {
    let request = ImportRequest {
        did: DID.to_owned(),
        key: key.public_key(),
        state,
        source: Source::Resync,
        reason: "test".into(),
    };
    import_car(
        store.clone(),
        request,
        std::io::Cursor::new(car),
        ImportLimits::default(),
    )
    .await
}

/// barn's state of the repo after `report`'s import.
fn state_after(report: &ImportReport) -> RepoState {
    let mut state = RepoState::new("https://pds.example");
    state.advance(report.head.cid, report.head.rev.clone(), report.head.data);
    state
}

fn assert_missing(result: barn_mirror::Result<ImportReport>, record: Cid) {
    match result {
        Err(Error::Repo { source, .. }) => {
            assert_eq!(
                source.reason(),
                barn_repo::Error::MissingBlock(record).reason()
            )
        }
        other => panic!("a missing record must fail the import: {other:?}"),
    }
}

/// An import that fails late in a large repo has already applied thousands
/// of record-index changes (they go in chunks, bounded memory): they are
/// put back, so the index and history are as before, and the genuine CAR
/// then imports with the right creates, updates and deletes. Late in the
/// walk, record presence is checked at its end (`walk_tree`): a record
/// missing there fails the import as one missing early does.
#[tokio::test]
async fn a_large_import_failing_late_puts_the_record_index_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), &StoreOptions::default()).unwrap());
    let key = PrivateKey::from_seed(KeyType::K256, 5);
    let n = 6 * barn_store::CHUNK_OPS;
    let (root1, blocks1) = build_repo(DID, "3l3qo2vuowo2b", &key, versioned(n, 0, 1)).unwrap();
    let fresh = || RepoState::new("https://pds.example");
    // A first import failing late leaves no record and no revision (what
    // a longer one had indexed already is removed again: barn-store's
    // revision tests).
    let late1 = walk(&blocks1, &root1)[n - 10].1;
    let failed = import_from(
        &store,
        &key,
        fresh(),
        car_without(root1, &blocks1, Some(late1)),
    )
    .await;
    assert_missing(failed, late1);
    assert!(store.records(DID).unwrap().is_empty());
    assert!(store.history(DID).unwrap().is_empty());

    let first = import_from(&store, &key, fresh(), car_without(root1, &blocks1, None))
        .await
        .unwrap();
    let before = store.records(DID).unwrap();
    assert_eq!(before.len(), n);
    // A first import's ops are its tree's records, read back from the tree.
    let first_entry = &store.history(DID).unwrap()[0];
    assert!(
        first_entry
            .chunked
            .is_some_and(|c| c.of_tree && c.chunks == 0),
        "{:?}",
        first_entry.chunked
    );
    let first_ops = store.revision_ops(DID, first_entry).unwrap();
    assert!(
        first_ops
            .iter()
            .all(|o| o.action == barn_store::OpAction::Create && o.prev.is_none())
    );
    let created: Vec<_> = first_ops
        .into_iter()
        .map(|o| (o.path, o.cid.unwrap()))
        .collect();
    assert_eq!(created, before);
    let state = state_after(&first);

    // Second version: every odd record changed, every fifth removed.
    let (root2, blocks2) = build_repo(DID, "3l3qo2vuowo2c", &key, versioned(n, 5, 2)).unwrap();
    let walked = walk(&blocks2, &root2);
    // Leave out a changed record near the end of the walk.
    let late = walked[walked.len() - 10].1;
    assert!(!blocks1.contains(&late), "the left-out record must be new");
    let failed = import_from(
        &store,
        &key,
        state.clone(),
        car_without(root2, &blocks2, Some(late)),
    )
    .await;
    assert_missing(failed, late);
    assert_eq!(store.records(DID).unwrap(), before);
    assert_eq!(store.history(DID).unwrap().len(), 1);

    let second = import_from(&store, &key, state, car_without(root2, &blocks2, None))
        .await
        .unwrap();
    assert_eq!(second.label, "imported");
    let now: Vec<_> = walked
        .iter()
        .map(|(k, c)| (String::from_utf8(k.clone()).unwrap(), *c))
        .collect();
    assert_eq!(store.records(DID).unwrap(), now);
    let history = store.history(DID).unwrap();
    assert_eq!(history.len(), 2);
    let counts = history[1].op_counts();
    let removed = n.div_ceil(5) as u64;
    // Odd records not removed were changed.
    let changed = (0..n).filter(|i| i % 2 == 1 && i % 5 != 0).count() as u64;
    assert_eq!(
        (counts.creates, counts.updates, counts.deletes),
        (0, changed, removed)
    );
    // Not a first import: the ops are stored.
    assert!(
        history[1]
            .chunked
            .is_some_and(|c| !c.of_tree && c.chunks > 0)
    );
    assert_eq!(
        store.revision_ops(DID, &history[1]).unwrap().len() as u64,
        changed + removed
    );
}

/// A whole-repo CAR that leaves out a record block barn already stores
/// imports: the record is there. Past the first chunk of the walk, the
/// import checks presence at the end, against the CAR's blocks first and
/// then, for those it did not hold, against the store.
#[tokio::test]
async fn a_car_leaving_out_a_record_already_stored_imports() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), &StoreOptions::default()).unwrap());
    let key = PrivateKey::from_seed(KeyType::K256, 7);
    let n = 3 * barn_store::CHUNK_OPS;
    let (root1, blocks1) = build_repo(DID, "3l3qo2vuowo2b", &key, versioned(n, 0, 1)).unwrap();
    let first = import_from(
        &store,
        &key,
        RepoState::new("https://pds.example"),
        car_without(root1, &blocks1, None),
    )
    .await
    .unwrap();

    // Every odd record changed; an even one near the end of the walk,
    // unchanged and so already stored, is left out of the CAR.
    let (root2, blocks2) = build_repo(DID, "3l3qo2vuowo2c", &key, versioned(n, 0, 2)).unwrap();
    let walked = walk(&blocks2, &root2);
    let kept = walked[walked.len() - 10].1;
    assert!(
        blocks1.contains(&kept),
        "the left-out record must be stored"
    );
    let second = import_from(
        &store,
        &key,
        state_after(&first),
        car_without(root2, &blocks2, Some(kept)),
    )
    .await
    .unwrap();
    assert_eq!(second.label, "imported");
    assert_eq!(second.records, n as u64);
    let now: Vec<_> = walked
        .iter()
        .map(|(k, c)| (String::from_utf8(k.clone()).unwrap(), *c))
        .collect();
    assert_eq!(store.records(DID).unwrap(), now);
}

/// A tree with two of the root's subtrees swapped: every node is still
/// well formed and on its layer, and every block is in the CAR; only the
/// order across nodes is wrong. The import must refuse it and record
/// nothing.
#[tokio::test]
async fn a_tree_with_subtrees_swapped_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), &StoreOptions::default()).unwrap());
    let key = PrivateKey::from_seed(KeyType::K256, 6);
    let n = 2000;
    let (root, mut blocks) = build_repo(DID, "3l3qo2vuowo2b", &key, records(n)).unwrap();
    let commit = barn_repo::commit::Commit::decode(blocks.get(&root).unwrap()).unwrap();

    let mut node =
        barn_repo::mst::NodeData::decode(&commit.data, blocks.get(&commit.data).unwrap()).unwrap();
    let mut slots: Vec<&mut Option<cid::Cid>> = std::iter::once(&mut node.left)
        .chain(node.entries.iter_mut().map(|e| &mut e.right))
        .filter(|s| s.is_some())
        .collect();
    assert!(slots.len() >= 2, "the root has {} subtrees", slots.len());
    let last = slots.len() - 1;
    let (a, b) = (*slots[0], *slots[last]);
    *slots[0] = b;
    *slots[last] = a;
    let forged = blocks.put_cbor(node.encode());
    let (_, commit_bytes, forged_root) =
        barn_repo::commit::Commit::create(DID, forged, "3l3qo2vuowo2c", &key).unwrap();
    blocks.insert(forged_root, bytes::Bytes::from(commit_bytes));
    let car = write_car(&[forged_root], blocks.iter().map(|(c, b)| (c, &b[..])));
    match import(&store, car, &key).await {
        Err(Error::Repo { source, .. }) => assert_eq!(source.reason(), "bad_mst_key"),
        other => panic!("subtrees out of order must fail the import: {other:?}"),
    }
    nothing_recorded(&store);

    // The genuine tree, from the same blocks, imports whole.
    let car = write_car(&[root], blocks.iter().map(|(c, b)| (c, &b[..])));
    assert_eq!(import(&store, car, &key).await.unwrap(), n as u64);
    assert_eq!(store.records(DID).unwrap().len(), n);
}
