//! `invert`: sync 1.1 inversion of a 10-op commit (4 creates, 4 updates,
//! 2 deletes) on a 100k-key tree, given only the blocks the commit would
//! carry: the new MST nodes (`Mst::take_new_blocks` after the edit) plus
//! the proof blocks an inversion reads (recorded once beforehand through
//! `barn_repo::blocks::Recording`).
//!
//! - barn `mst::invert_ops` over a `BlockMap` of those blocks.
//! - jacquard: the inversion core of `commit::firehose::validate_v1_1`
//!   (`Mst::load` + `Mst::invert_op` per op + `get_pointer`), over a
//!   `MemoryBlockStore` of the same blocks. `validate_v1_1` itself also
//!   parses the CAR and checks the signature; neither is timed here, for
//!   either library.
//! - atrium has no inversion. The closest: open its `Tree` on the same
//!   blocks, check each op's current value with `get`, undo it with
//!   `delete`/`update`/`add`, compare the root. Its tree writes every
//!   changed node to the store, so each iteration gets a fresh store
//!   (built untimed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use atrium_repo::blockstore::{AsyncBlockStoreWrite, MemoryBlockStore as AtriumStore};
use barn_benches::{Rng, Tally, Work, bench, gen_keys, report, sorted_entries};
use barn_repo::Cid;
use barn_repo::blocks::{BlockMap, Layered, Recording};
use barn_repo::mst::{Action, Mst, RecordOp, invert_ops};
use bytes::Bytes;
use criterion::{Criterion, SamplingMode};
use jacquard_common::SmolStr;
use jacquard_repo::mst::VerifiedWriteOp;

const KEYS: usize = 100_000;
const CREATES: usize = 4;
const UPDATES: usize = 4;
const DELETES: usize = 2;
const SAMPLES: usize = 10;

struct Input {
    old_root: Cid,
    new_root: Cid,
    ops: Vec<RecordOp>,
    /// What the commit carries: new MST nodes and proof blocks.
    commit_blocks: BlockMap,
}

fn make_input() -> Input {
    let all = gen_keys(KEYS + CREATES, 4);
    let mut rng = Rng::new(44);
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
    let mut tree = Mst::from_sorted(BlockMap::new(), sorted_entries(&old)).unwrap();
    let old_root = tree.root_cid();
    let old_blocks = tree.take_new_blocks();

    let mut tree = Mst::load(&old_blocks, old_root).unwrap();
    let mut ops = Vec::new();
    for (n, &i) in order.iter().enumerate() {
        let (path, value) = &all[i];
        let op = if n < CREATES {
            tree.insert(path, *value).unwrap();
            RecordOp {
                action: Action::Create,
                path: path.clone(),
                cid: Some(*value),
                prev: None,
            }
        } else if n < CREATES + UPDATES {
            let new = barn_repo::cid_for_cbor(format!("updated {n}").as_bytes());
            let prev = tree.insert(path, new).unwrap();
            RecordOp {
                action: Action::Update,
                path: path.clone(),
                cid: Some(new),
                prev,
            }
        } else {
            let prev = tree.delete(path).unwrap();
            RecordOp {
                action: Action::Delete,
                path: path.clone(),
                cid: None,
                prev,
            }
        };
        ops.push(op);
    }
    let new_root = tree.root_cid();
    let new_nodes = tree.take_new_blocks();

    // One inversion over everything, recording what it reads.
    let recording = Recording::new(Layered {
        first: &new_nodes,
        second: &old_blocks,
    });
    assert_eq!(invert_ops(&recording, &new_root, &ops).unwrap(), old_root);
    let mut commit_blocks = new_nodes.clone();
    for cid in recording.seen() {
        if let Some(b) = new_nodes.get(&cid).or_else(|| old_blocks.get(&cid)) {
            commit_blocks.insert(cid, b.clone());
        }
    }
    println!(
        "invert input: {} ops, {} new MST nodes, {} blocks carried ({} bytes); tree of {} keys",
        ops.len(),
        new_nodes.len(),
        commit_blocks.len(),
        commit_blocks.byte_len(),
        KEYS
    );
    Input {
        old_root,
        new_root,
        ops,
        commit_blocks,
    }
}

fn jacquard_ops(ops: &[RecordOp]) -> Vec<VerifiedWriteOp> {
    ops.iter()
        .map(|op| {
            let key = SmolStr::new(&op.path);
            match op.action {
                Action::Create => VerifiedWriteOp::Create {
                    key,
                    cid: op.cid.unwrap(),
                },
                Action::Update => VerifiedWriteOp::Update {
                    key,
                    cid: op.cid.unwrap(),
                    prev: op.prev.unwrap(),
                },
                Action::Delete => VerifiedWriteOp::Delete {
                    key,
                    prev: op.prev.unwrap(),
                },
            }
        })
        .collect()
}

async fn jacquard_invert(
    store: &Arc<jacquard_repo::MemoryBlockStore>,
    new_root: Cid,
    ops: Vec<VerifiedWriteOp>,
) -> Result<Cid, String> {
    let mut tree = jacquard_repo::Mst::load(store.clone(), new_root, None);
    for op in ops {
        match tree.invert_op(op.clone()).await {
            Ok(true) => {}
            Ok(false) => return Err(format!("op not invertible: {op:?}")),
            Err(e) => return Err(format!("{op:?}: {e}")),
        }
    }
    tree.get_pointer().await.map_err(|e| e.to_string())
}

async fn atrium_store(blocks: &BlockMap) -> AtriumStore {
    let mut store = AtriumStore::new();
    for (cid, data) in blocks.iter() {
        store
            .write_block(cid.codec(), atrium_repo::blockstore::SHA2_256, data)
            .await
            .unwrap();
    }
    store
}

async fn atrium_invert(
    mut store: AtriumStore,
    new_root: Cid,
    ops: &[RecordOp],
) -> Result<Cid, String> {
    let mut tree = atrium_repo::mst::Tree::open(&mut store, new_root);
    for op in ops {
        let current = tree.get(&op.path).await.map_err(|e| e.to_string())?;
        if current != op.cid {
            return Err(format!("{}: tree holds {current:?}", op.path));
        }
        let undone = match (op.action, op.prev) {
            (Action::Create, _) => tree.delete(&op.path).await,
            (Action::Update, Some(prev)) => tree.update(&op.path, prev).await,
            (Action::Delete, Some(prev)) => tree.add(&op.path, prev).await,
            _ => return Err("malformed op".into()),
        };
        undone.map_err(|e| format!("{}: {e}", op.path))?;
    }
    Ok(tree.root())
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let input = make_input();
    let rt = tokio::runtime::Builder::new_multi_thread().build().unwrap();
    let blocks: BTreeMap<Cid, Bytes> = input
        .commit_blocks
        .iter()
        .map(|(c, b)| (*c, b.clone()))
        .collect();
    let j_store = Arc::new(jacquard_repo::MemoryBlockStore::new_from_blocks(blocks));
    let j_ops = jacquard_ops(&input.ops);

    // Check every contender gets back to the old root from these blocks.
    let barn = invert_ops(&input.commit_blocks, &input.new_root, &input.ops).unwrap();
    assert_eq!(barn, input.old_root);
    println!("invert check: barn -> {barn} (the old root)");
    let mut run_jacquard = true;
    match rt.block_on(jacquard_invert(&j_store, input.new_root, j_ops.clone())) {
        Ok(root) if root == input.old_root => println!("  jacquard -> {root} (the old root)"),
        Ok(root) => {
            println!(
                "!!!!! MISMATCH: jacquard inverted to {root}, want {} !!!!!",
                input.old_root
            )
        }
        Err(e) => {
            println!("!!!!! jacquard failed to invert from the commit's blocks: {e} !!!!!");
            run_jacquard = false;
        }
    }
    let mut run_atrium = true;
    let store = rt.block_on(atrium_store(&input.commit_blocks));
    match rt.block_on(atrium_invert(store, input.new_root, &input.ops)) {
        Ok(root) if root == input.old_root => println!("  atrium -> {root} (the old root)"),
        Ok(root) => {
            println!(
                "!!!!! MISMATCH: atrium inverted to {root}, want {} !!!!!",
                input.old_root
            )
        }
        Err(e) => {
            println!("!!!!! atrium failed to invert from the commit's blocks: {e} !!!!!");
            run_atrium = false;
        }
    }

    let tally = Tally::new();
    let mut g = c.benchmark_group("invert");
    g.sample_size(SAMPLES)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    bench(
        &mut g,
        &tally,
        "barn invert_ops",
        || (),
        |()| invert_ops(&input.commit_blocks, &input.new_root, &input.ops).unwrap(),
    );
    if run_jacquard {
        bench(
            &mut g,
            &tally,
            "jacquard invert_op x10",
            || j_ops.clone(),
            |ops| {
                rt.block_on(jacquard_invert(&j_store, input.new_root, ops))
                    .unwrap()
            },
        );
    }
    if run_atrium {
        bench(
            &mut g,
            &tally,
            "atrium get+undo x10 (no inversion API)",
            || rt.block_on(atrium_store(&input.commit_blocks)),
            |store| {
                rt.block_on(atrium_invert(store, input.new_root, &input.ops))
                    .unwrap()
            },
        );
    }
    g.finish();

    report(
        "invert",
        Work::Ops(input.ops.len() as u64, "ops"),
        &tally,
        SAMPLES,
        &["barn invert_ops"],
        &[
            "jacquard invert_op x10",
            "atrium get+undo x10 (no inversion API)",
        ],
    );
    c.final_summary();
}
