//! `mst_build`: build the MST of 100k keys (`collection/rkey` -> one record
//! CID) to a root CID.
//!
//! - barn `Mst::from_sorted` + `root_cid()` (bulk, bottom-up).
//! - barn `Mst::insert` x100k from empty + `root_cid()`.
//! - atrium `Tree::create` + `Tree::add` x100k (no bulk API; every add
//!   writes the changed nodes to its `MemoryBlockStore`).
//! - jacquard `Mst::new` + `Mst::add` x100k + `root()` (no bulk API).
//!
//! The timed inserts go in key order for every contender, so that all four
//! must reach the same root. Before timing, insertion in time order (TIDs
//! increase, collections interleave: how a repository grows) is checked
//! too. atrium-repo 0.2.0 gets time-order insertion wrong (its root then
//! depends on the order; atrium-rs/atrium issue #343 reports entries lost
//! under sequential inserts), which is printed loudly; in key order its
//! root is right, which is why the timed runs use key order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use barn_benches::{Tally, Work, bench, fmt_duration, gen_keys, report, sorted_entries};
use barn_repo::Cid;
use barn_repo::blocks::BlockMap;
use barn_repo::mst::Mst;
use criterion::{Criterion, SamplingMode};

const KEYS: usize = 100_000;
const SAMPLES: usize = 10;

fn barn_from_sorted(entries: Vec<(Vec<u8>, Cid)>) -> (Cid, Mst<BlockMap>) {
    let mut tree = Mst::from_sorted(BlockMap::new(), entries).unwrap();
    (tree.root_cid(), tree)
}

fn barn_insert(keys: &[(String, Cid)]) -> (Cid, Mst<BlockMap>) {
    let mut tree = Mst::empty(BlockMap::new());
    for (k, v) in keys {
        tree.insert(k, *v).unwrap();
    }
    (tree.root_cid(), tree)
}

async fn atrium_build(
    keys: &[(String, Cid)],
) -> (
    Cid,
    atrium_repo::mst::Tree<atrium_repo::blockstore::MemoryBlockStore>,
) {
    let store = atrium_repo::blockstore::MemoryBlockStore::new();
    let mut tree = atrium_repo::mst::Tree::create(store).await.unwrap();
    for (k, v) in keys {
        tree.add(k, *v).await.unwrap();
    }
    (tree.root(), tree)
}

async fn jacquard_build(
    keys: &[(String, Cid)],
) -> (Cid, jacquard_repo::Mst<jacquard_repo::MemoryBlockStore>) {
    let store = Arc::new(jacquard_repo::MemoryBlockStore::new());
    let mut tree = jacquard_repo::Mst::new(store);
    for (k, v) in keys {
        tree = tree.add(k, *v).await.unwrap();
    }
    (tree.root().await.unwrap(), tree)
}

fn check(name: &str, got: Cid, want: Cid, took: Duration) {
    if got == want {
        println!("  {name:<44} {got} ok ({})", fmt_duration(took));
    } else {
        println!(
            "!!!!! MISMATCH: {name}: root {got} differs from barn's {want} ({}) !!!!!",
            fmt_duration(took)
        );
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let time_order = gen_keys(KEYS, 2);
    let mut keys = time_order.clone();
    keys.sort();
    let entries = sorted_entries(&keys);
    let rt = tokio::runtime::Builder::new_multi_thread().build().unwrap();

    // Untimed checks that every contender reaches the reference root.
    let t = Instant::now();
    let (want, _) = barn_from_sorted(entries.clone());
    println!(
        "mst_build check: barn from_sorted root {want} ({})",
        fmt_duration(t.elapsed())
    );
    let t = Instant::now();
    let (got, _) = barn_insert(&time_order);
    check("barn insert, time order", got, want, t.elapsed());
    assert_eq!(
        got, want,
        "barn insert (time order) and from_sorted disagree"
    );
    let t = Instant::now();
    let (got, _) = barn_insert(&keys);
    check("barn insert, key order", got, want, t.elapsed());
    assert_eq!(
        got, want,
        "barn insert (key order) and from_sorted disagree"
    );
    let t = Instant::now();
    let (got, _) = rt.block_on(jacquard_build(&time_order));
    check("jacquard add, time order", got, want, t.elapsed());
    let t = Instant::now();
    let (got, _) = rt.block_on(jacquard_build(&keys));
    check("jacquard add, key order", got, want, t.elapsed());
    // atrium in time order: the first 1000 keys are enough to show it.
    let head = &time_order[..1000];
    let (head_want, _) = barn_from_sorted(sorted_entries(head));
    let t = Instant::now();
    let (got, _) = rt.block_on(atrium_build(head));
    check(
        "atrium add, time order, first 1000 keys",
        got,
        head_want,
        t.elapsed(),
    );
    let t = Instant::now();
    let (got, _) = rt.block_on(atrium_build(&keys));
    check("atrium add, key order", got, want, t.elapsed());

    let tally = Tally::new();
    let mut g = c.benchmark_group("mst_build");
    g.sample_size(SAMPLES)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    bench(
        &mut g,
        &tally,
        "barn from_sorted",
        || entries.clone(),
        barn_from_sorted,
    );
    bench(
        &mut g,
        &tally,
        "barn insert x100k",
        || (),
        |()| barn_insert(&keys),
    );
    bench(
        &mut g,
        &tally,
        "atrium add x100k",
        || (),
        |()| rt.block_on(atrium_build(&keys)),
    );
    bench(
        &mut g,
        &tally,
        "jacquard add x100k",
        || (),
        |()| rt.block_on(jacquard_build(&keys)),
    );
    g.finish();

    report(
        "mst_build",
        Work::Ops(KEYS as u64, "keys"),
        &tally,
        SAMPLES,
        &["barn from_sorted", "barn insert x100k"],
        &["atrium add x100k", "jacquard add x100k"],
    );
    c.final_summary();
}
