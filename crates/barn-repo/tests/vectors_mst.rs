//! The official MST vectors: key heights, common prefixes, and the sync 1.1
//! commit-proof fixtures (exact roots before and after, and inversion with
//! only the proof blocks).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use barn_repo::mst::{self, Action, Mst, RecordOp};
use barn_repo::{BlockMap, BlockSource, Cid};
use serde_json::Value as Json;

fn read(rel: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/testdata/interop/{rel}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn json(rel: &str) -> Vec<Json> {
    let v: Vec<Json> = serde_json::from_str(&read(rel)).unwrap();
    assert!(!v.is_empty());
    v
}

#[test]
fn key_heights_match_vectors() {
    for case in json("mst/key_heights.json") {
        let key = case["key"].as_str().unwrap();
        assert_eq!(
            u64::from(mst::key_height(key.as_bytes())),
            case["height"].as_u64().unwrap(),
            "{key}"
        );
    }
}

#[test]
fn example_keys_sit_on_the_layer_their_name_says() {
    // Keys are named `<letter><height>/<digits>`.
    let mut n = 0;
    for key in read("mst/example_keys.txt")
        .lines()
        .filter(|l| !l.is_empty())
    {
        let want: u32 = key[1..2].parse().unwrap();
        assert_eq!(mst::key_height(key.as_bytes()), want, "{key}");
        n += 1;
    }
    assert!(n > 100);
}

#[test]
fn common_prefix_lengths_match_vectors() {
    for case in json("mst/common_prefix.json") {
        let l = case["left"].as_str().unwrap();
        let r = case["right"].as_str().unwrap();
        assert_eq!(
            mst::common_prefix_len(l.as_bytes(), r.as_bytes()) as u64,
            case["len"].as_u64().unwrap(),
            "{l:?} {r:?}"
        );
    }
}

fn cid(s: &str) -> Cid {
    s.parse().unwrap()
}

fn strings(v: &Json) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn build(keys: &[String], leaf: Cid) -> (Cid, BlockMap) {
    let mut entries: Vec<(Vec<u8>, Cid)> = keys
        .iter()
        .map(|k| (k.clone().into_bytes(), leaf))
        .collect();
    entries.sort();
    let mut t = Mst::from_sorted(BlockMap::new(), entries).unwrap();
    let root = t.root_cid();
    (root, t.take_new_blocks())
}

#[test]
fn commit_proof_fixtures_roots_and_inversion() {
    for case in json("firehose/commit-proof-fixtures.json") {
        let name = case["comment"].as_str().unwrap();
        let leaf = cid(case["leafValue"].as_str().unwrap());
        let keys = strings(&case["keys"]);
        let adds = strings(&case["adds"]);
        let dels = strings(&case["dels"]);

        // Before: bulk build gives the reference root.
        let (before, before_blocks) = build(&keys, leaf);
        assert_eq!(
            before.to_string(),
            case["rootBeforeCommit"].as_str().unwrap(),
            "{name}: before"
        );

        // After, by editing the stored "before" tree op by op.
        let mut tree = Mst::load(&before_blocks, before).unwrap();
        for k in &adds {
            assert_eq!(tree.insert(k, leaf).unwrap(), None);
        }
        for k in &dels {
            assert_eq!(tree.delete(k).unwrap(), Some(leaf), "{name}: delete {k}");
        }
        let after = tree.root_cid();
        assert_eq!(
            after.to_string(),
            case["rootAfterCommit"].as_str().unwrap(),
            "{name}: after"
        );

        // And the same root from a fresh bulk build of the final key set.
        let mut final_keys: Vec<String> =
            keys.iter().filter(|k| !dels.contains(k)).cloned().collect();
        final_keys.extend(adds.iter().cloned());
        let (after_bulk, after_blocks) = build(&final_keys, leaf);
        assert_eq!(after_bulk, after, "{name}: bulk vs edit");

        // Inversion with nothing but the proof blocks.
        let proof: Vec<Cid> = strings(&case["blocksInProof"])
            .iter()
            .map(|s| cid(s))
            .collect();
        let mut partial = BlockMap::new();
        for c in &proof {
            partial.insert(
                *c,
                after_blocks
                    .get_block(c)
                    .unwrap()
                    .expect("proof block in after tree"),
            );
        }
        let mut ops: Vec<RecordOp> = adds
            .iter()
            .filter(|k| !dels.contains(k))
            .map(|k| RecordOp {
                action: Action::Create,
                path: k.clone(),
                cid: Some(leaf),
                prev: None,
            })
            .collect();
        ops.extend(dels.iter().filter(|k| !adds.contains(k)).map(|k| RecordOp {
            action: Action::Delete,
            path: k.clone(),
            cid: None,
            prev: Some(leaf),
        }));
        let recording = barn_repo::blocks::Recording::new(&partial);
        let inverted =
            mst::invert_ops(&recording, &after, &ops).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(inverted, before, "{name}: inverted root");
        // Inversion reads nothing outside the proof (anything else is
        // missing), and removing any block it did read makes it fail,
        // never produce a wrong root.
        let seen = recording.seen();
        assert!(seen.contains(&after), "{name}: root not read");
        for skip in seen.iter().filter(|c| proof.contains(c)) {
            let mut less = BlockMap::new();
            for (c, b) in partial.iter() {
                if c != skip {
                    less.insert(*c, b.clone());
                }
            }
            let r = mst::invert_ops(&less, &after, &ops);
            assert!(
                r.is_err(),
                "{name}: inversion without {skip} succeeded: {r:?}"
            );
        }
    }
}
