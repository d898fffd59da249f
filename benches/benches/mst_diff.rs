//! `mst_diff`: diff two 100k-key trees that differ in 100 keys (40 creates,
//! 40 updates, 20 deletes, spread over the key space), both held in memory
//! block maps.
//!
//! - barn `mst::diff` over two `BlockMap`s.
//! - jacquard `Mst::diff` over two `MemoryBlockStore`s (lazily loaded trees,
//!   opened fresh every iteration so no node cache carries over).
//! - atrium has no diff API. The closest an atrium user can do is list both
//!   trees (`Tree::entries`) and merge the two sorted lists, which reads
//!   every node of both trees: shown for reference, clearly not the same
//!   algorithm.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use atrium_repo::blockstore::{AsyncBlockStoreWrite, MemoryBlockStore as AtriumStore};
use barn_benches::{Rng, Tally, Work, bench, gen_keys, report, sorted_entries};
use barn_repo::Cid;
use barn_repo::blocks::BlockMap;
use barn_repo::mst::{Mst, diff};
use bytes::Bytes;
use criterion::{Criterion, SamplingMode};
use futures::TryStreamExt;

const KEYS: usize = 100_000;
const CREATES: usize = 40;
const UPDATES: usize = 40;
const DELETES: usize = 20;
const SAMPLES: usize = 10;

struct Input {
    old_root: Cid,
    old_blocks: BlockMap,
    new_root: Cid,
    new_blocks: BlockMap,
}

fn make_input() -> Input {
    let all = gen_keys(KEYS + CREATES, 3);
    // Distinct random positions: the first CREATES are keys only the new
    // tree has; then updates, then deletes, all among the old keys.
    let mut rng = Rng::new(33);
    let mut picked = BTreeSet::new();
    let mut order = Vec::new();
    while order.len() < CREATES + UPDATES + DELETES {
        let i = rng.range(0, (KEYS + CREATES - 1) as u64) as usize;
        if picked.insert(i) {
            order.push(i);
        }
    }
    let creates: BTreeSet<usize> = order[..CREATES].iter().copied().collect();
    let old: Vec<(String, Cid)> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| !creates.contains(i))
        .map(|(_, kv)| kv.clone())
        .collect();
    assert_eq!(old.len(), KEYS);
    let mut tree = Mst::from_sorted(BlockMap::new(), sorted_entries(&old)).unwrap();
    let old_root = tree.root_cid();
    let old_blocks = tree.take_new_blocks();

    let mut tree = Mst::load(&old_blocks, old_root).unwrap();
    for &i in &order[..CREATES] {
        assert!(tree.insert(&all[i].0, all[i].1).unwrap().is_none());
    }
    for (n, &i) in order[CREATES..CREATES + UPDATES].iter().enumerate() {
        let new_value = barn_repo::cid_for_cbor(format!("updated {n}").as_bytes());
        assert!(tree.insert(&all[i].0, new_value).unwrap().is_some());
    }
    for &i in &order[CREATES + UPDATES..] {
        assert!(tree.delete(&all[i].0).unwrap().is_some());
    }
    let new_root = tree.root_cid();
    let added = tree.take_new_blocks();
    let mut new_blocks = old_blocks.clone();
    new_blocks.extend(added);
    Input {
        old_root,
        old_blocks,
        new_root,
        new_blocks,
    }
}

fn to_btree(blocks: &BlockMap) -> BTreeMap<Cid, Bytes> {
    blocks.iter().map(|(c, b)| (*c, b.clone())).collect()
}

async fn to_atrium(blocks: &BlockMap) -> AtriumStore {
    let mut store = AtriumStore::new();
    for (cid, data) in blocks.iter() {
        let got = store
            .write_block(cid.codec(), atrium_repo::blockstore::SHA2_256, data)
            .await
            .unwrap();
        assert_eq!(&got, cid);
    }
    store
}

async fn jacquard_diff(
    old: &Arc<jacquard_repo::MemoryBlockStore>,
    old_root: Cid,
    new: &Arc<jacquard_repo::MemoryBlockStore>,
    new_root: Cid,
) -> jacquard_repo::MstDiff {
    let a = jacquard_repo::Mst::load(old.clone(), old_root, None);
    let b = jacquard_repo::Mst::load(new.clone(), new_root, None);
    a.diff(&b).await.unwrap()
}

/// atrium: list both trees and merge; returns (creates, updates, deletes).
async fn atrium_list_and_merge(
    old: &mut AtriumStore,
    old_root: Cid,
    new: &mut AtriumStore,
    new_root: Cid,
) -> (usize, usize, usize) {
    let mut a = atrium_repo::mst::Tree::open(old, old_root);
    let a: Vec<(String, Cid)> = a.entries().try_collect().await.unwrap();
    let mut b = atrium_repo::mst::Tree::open(new, new_root);
    let b: Vec<(String, Cid)> = b.entries().try_collect().await.unwrap();
    let (mut i, mut j) = (0, 0);
    let (mut c, mut u, mut d) = (0, 0, 0);
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x.0 == y.0 => {
                u += usize::from(x.1 != y.1);
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x.0 < y.0 => {
                d += 1;
                i += 1;
            }
            (Some(_), None) => {
                d += 1;
                i += 1;
            }
            _ => {
                c += 1;
                j += 1;
            }
        }
    }
    (c, u, d)
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let input = make_input();
    let rt = tokio::runtime::Builder::new_multi_thread().build().unwrap();
    let j_old = Arc::new(jacquard_repo::MemoryBlockStore::new_from_blocks(to_btree(
        &input.old_blocks,
    )));
    let j_new = Arc::new(jacquard_repo::MemoryBlockStore::new_from_blocks(to_btree(
        &input.new_blocks,
    )));
    let mut a_old = rt.block_on(to_atrium(&input.old_blocks));
    let mut a_new = rt.block_on(to_atrium(&input.new_blocks));

    // Check every contender finds the same 100 changes.
    let ops = diff(
        &input.old_blocks,
        &input.old_root,
        &input.new_blocks,
        &input.new_root,
    )
    .unwrap();
    let count = |f: fn(&barn_repo::mst::DiffOp) -> bool| ops.iter().filter(|o| f(o)).count();
    let barn_counts = (
        count(|o| o.old.is_none()),
        count(|o| o.old.is_some() && o.new.is_some()),
        count(|o| o.new.is_none()),
    );
    println!(
        "mst_diff check: barn {} ops (creates, updates, deletes) = {barn_counts:?}",
        ops.len()
    );
    assert_eq!(ops.len(), CREATES + UPDATES + DELETES);
    assert_eq!(barn_counts, (CREATES, UPDATES, DELETES));
    let jd = rt.block_on(jacquard_diff(
        &j_old,
        input.old_root,
        &j_new,
        input.new_root,
    ));
    let j_counts = (jd.creates.len(), jd.updates.len(), jd.deletes.len());
    println!("  jacquard {} ops = {j_counts:?}", jd.op_count());
    if j_counts != barn_counts {
        println!(
            "!!!!! MISMATCH: jacquard's diff {j_counts:?} differs from barn's {barn_counts:?} !!!!!"
        );
    }
    let a_counts = rt.block_on(atrium_list_and_merge(
        &mut a_old,
        input.old_root,
        &mut a_new,
        input.new_root,
    ));
    println!("  atrium (list both + merge) = {a_counts:?}");
    if a_counts != barn_counts {
        println!("!!!!! MISMATCH: atrium's listing gives {a_counts:?}, barn {barn_counts:?} !!!!!");
    }

    let tally = Tally::new();
    let mut g = c.benchmark_group("mst_diff");
    g.sample_size(SAMPLES)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    bench(
        &mut g,
        &tally,
        "barn diff",
        || (),
        |()| {
            diff(
                &input.old_blocks,
                &input.old_root,
                &input.new_blocks,
                &input.new_root,
            )
            .unwrap()
        },
    );
    bench(
        &mut g,
        &tally,
        "jacquard Mst::diff",
        || (),
        |()| {
            rt.block_on(jacquard_diff(
                &j_old,
                input.old_root,
                &j_new,
                input.new_root,
            ))
        },
    );
    bench(
        &mut g,
        &tally,
        "atrium list both + merge (no diff API)",
        || (),
        |()| {
            rt.block_on(atrium_list_and_merge(
                &mut a_old,
                input.old_root,
                &mut a_new,
                input.new_root,
            ))
        },
    );
    g.finish();

    report(
        "mst_diff",
        Work::Ops((CREATES + UPDATES + DELETES) as u64, "changes"),
        &tally,
        SAMPLES,
        &["barn diff"],
        &[
            "jacquard Mst::diff",
            "atrium list both + merge (no diff API)",
        ],
    );
    c.final_summary();
}
