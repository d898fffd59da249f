#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `import_car` streams blocks into the store before it can check the
//! tree, so what it must never do is record a revision for a repo that is
//! not whole and genuine: a record block missing from the CAR, a commit
//! signed by another key, a block that is not DAG-CBOR. Each fails with
//! its reason and leaves no revision and no record index behind; the
//! genuine CAR then imports with every record.

use std::sync::Arc;

use barn_mirror::{Error, ImportLimits, ImportRequest, import_car};
use barn_repo::car::write_car;
use barn_repo::commit::build_repo;
use barn_repo::crypto::{KeyType, PrivateKey};
use barn_store::{RepoState, Source, Store, StoreOptions};

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
