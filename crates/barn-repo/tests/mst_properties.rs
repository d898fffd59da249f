//! Property tests of the MST against a BTreeMap model: incremental edits
//! and the bulk build agree on the root; lookups, ordered iteration, ranges,
//! diffs and inversion all match the model.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use barn_repo::mst::{self, Action, DiffOp, Mst, RecordOp};
use barn_repo::{BlockMap, Cid, cid_for_cbor};
use proptest::prelude::*;

fn value(n: u8) -> Cid {
    cid_for_cbor(&[0x18, n.max(24)])
}

fn key(i: u16) -> String {
    // Two collections and varied rkeys so keys share prefixes unevenly.
    format!(
        "com.example.{}/{:04x}",
        if i.is_multiple_of(3) { "a" } else { "bb" },
        i
    )
}

/// Stores a tree and returns its root and all blocks.
fn store(model: &BTreeMap<String, Cid>) -> (Cid, BlockMap) {
    let entries = model
        .iter()
        .map(|(k, v)| (k.clone().into_bytes(), *v))
        .collect();
    let mut t = Mst::from_sorted(BlockMap::new(), entries).unwrap();
    let root = t.root_cid();
    (root, t.take_new_blocks())
}

#[derive(Debug, Clone)]
enum Op {
    Put(u16, u8),
    Del(u16),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            3 => (0u16..600, any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
            1 => (0u16..600).prop_map(Op::Del),
        ],
        0..400,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn edits_match_bulk_build_and_model(initial in ops(), edits in ops()) {
        let mut model = BTreeMap::new();
        let mut tree = Mst::empty(BlockMap::new());
        for op in &initial {
            match *op {
                Op::Put(k, v) => { prop_assert_eq!(tree.insert(&key(k), value(v)).unwrap(), model.insert(key(k), value(v))); }
                Op::Del(k) => { prop_assert_eq!(tree.delete(&key(k)).unwrap(), model.remove(&key(k))); }
            }
        }
        let (root, blocks) = store(&model);
        prop_assert_eq!(tree.root_cid(), root);

        // Continue editing a tree *loaded from blocks*, so lazy loading,
        // splits and merges of stored nodes are exercised.
        let mut loaded = Mst::load(&blocks, root).unwrap();
        let old_model = model.clone();
        for op in &edits {
            match *op {
                Op::Put(k, v) => { prop_assert_eq!(loaded.insert(&key(k), value(v)).unwrap(), model.insert(key(k), value(v))); }
                Op::Del(k) => { prop_assert_eq!(loaded.delete(&key(k)).unwrap(), model.remove(&key(k))); }
            }
        }
        let new_root = loaded.root_cid();
        let (want_root, new_blocks) = store(&model);
        prop_assert_eq!(new_root, want_root);
        let listed: Vec<(Vec<u8>, Cid)> = loaded.entries().unwrap();
        let want: Vec<(Vec<u8>, Cid)> = model.iter().map(|(k, v)| (k.clone().into_bytes(), *v)).collect();
        prop_assert_eq!(listed, want);

        // Point lookups on the stored tree.
        for i in (0u16..600).step_by(7) {
            prop_assert_eq!(mst::get(&new_blocks, &new_root, &key(i)).unwrap(), model.get(&key(i)).copied());
        }

        // Diff against the model's difference.
        let mut want_diff = Vec::new();
        for (k, v) in &old_model {
            match model.get(k) {
                None => want_diff.push(DiffOp { key: k.clone(), old: Some(*v), new: None }),
                Some(n) if n != v => want_diff.push(DiffOp { key: k.clone(), old: Some(*v), new: Some(*n) }),
                _ => {}
            }
        }
        for (k, v) in &model {
            if !old_model.contains_key(k) {
                want_diff.push(DiffOp { key: k.clone(), old: None, new: Some(*v) });
            }
        }
        want_diff.sort();
        let got = mst::diff(&blocks, &root, &new_blocks, &new_root).unwrap();
        prop_assert_eq!(got, want_diff.clone());

        // Inversion of the same change, as a commit's ops, gives the old root.
        let ops: Vec<RecordOp> = want_diff.iter().map(|d| RecordOp {
            action: match (d.old, d.new) { (None, _) => Action::Create, (_, None) => Action::Delete, _ => Action::Update },
            path: d.key.clone(),
            cid: d.new,
            prev: d.old,
        }).collect();
        prop_assert_eq!(mst::invert_ops(&new_blocks, &new_root, &ops).unwrap(), root);
    }

    #[test]
    fn ranges_match_model(keys in prop::collection::btree_set(0u16..2000, 0..500), lo in 0u16..2000, len in 0u16..800) {
        let model: BTreeMap<String, Cid> = keys.iter().map(|&k| (key(k), value(k as u8))).collect();
        let (root, blocks) = store(&model);
        let (mut start, mut end) = (key(lo), key(lo.saturating_add(len)));
        if start > end {
            std::mem::swap(&mut start, &mut end);
        }
        let got = mst::range(&blocks, &root, &start, Some(&end)).unwrap();
        let want: Vec<(String, Cid)> = model.range(start.clone()..end.clone()).map(|(k, v)| (k.clone(), *v)).collect();
        prop_assert_eq!(got, want);
        let all = mst::range(&blocks, &root, "", None).unwrap();
        prop_assert_eq!(all.len(), model.len());
    }
}

#[test]
fn inversion_rejects_ops_that_do_not_match_the_tree() {
    let model: BTreeMap<String, Cid> = (0..50).map(|i| (key(i), value(i as u8))).collect();
    let (root, blocks) = store(&model);
    // Claims to have created a record that the tree holds with another CID.
    let ops = [RecordOp {
        action: Action::Create,
        path: key(3),
        cid: Some(value(99)),
        prev: None,
    }];
    assert_eq!(
        mst::invert_ops(&blocks, &root, &ops).unwrap_err().reason(),
        "inversion_failed"
    );
    // Claims to have deleted a record that is still there.
    let ops = [RecordOp {
        action: Action::Delete,
        path: key(4),
        cid: None,
        prev: Some(value(4)),
    }];
    assert_eq!(
        mst::invert_ops(&blocks, &root, &ops).unwrap_err().reason(),
        "inversion_failed"
    );
    // The same path twice.
    let op = RecordOp {
        action: Action::Update,
        path: key(5),
        cid: Some(value(5)),
        prev: Some(value(6)),
    };
    assert_eq!(
        mst::invert_ops(&blocks, &root, &[op.clone(), op])
            .unwrap_err()
            .reason(),
        "inversion_failed"
    );
    // An update without prev is malformed.
    let ops = [RecordOp {
        action: Action::Update,
        path: key(5),
        cid: Some(value(5)),
        prev: None,
    }];
    assert_eq!(
        mst::invert_ops(&blocks, &root, &ops).unwrap_err().reason(),
        "inversion_failed"
    );
}

#[test]
fn known_reference_roots() {
    // Roots printed by @atproto/repo (interop/repo/mst-root.mjs).
    let leaf: Cid = "bafyreie5cvv4h45feadgeuwhbcutmh6t2ceseocckahdoe6uat64zmz454"
        .parse()
        .unwrap();
    let mut t = Mst::empty(BlockMap::new());
    assert_eq!(
        t.root_cid().to_string(),
        "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"
    );
    t.insert("com.example.record/3jqfcqzm3fo2j", leaf).unwrap();
    assert_eq!(
        t.root_cid().to_string(),
        "bafyreibj4lsc3aqnrvphp5xmrnfoorvru4wynt6lwidqbm2623a6tatzdu"
    );
    t.insert("com.example.record/3jqfcqzm3fp2j", leaf).unwrap();
    assert_eq!(
        t.root_cid().to_string(),
        "bafyreih4xyll4kptbevqfyyykfazwn3l2u55gbvkvglkb3fafc7tnfqhsm"
    );
}
