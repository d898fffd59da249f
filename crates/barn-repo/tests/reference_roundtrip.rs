//! Round trips with the reference implementation, `@atproto/repo` from npm
//! (the scripts in `interop/repo`, installed on first use):
//! - a CAR barn builds and writes is accepted by `@atproto/repo`'s full
//!   verification, with the same commit, root and records;
//! - a CAR `@atproto/repo` produced loads and verifies in barn, with the same
//!   commit, root and records;
//! - barn's MST edits reach the reference's exact root on random key sets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/reference.rs"]
mod reference;

use std::collections::BTreeMap;

use barn_repo::car::{CarLimits, CarStream, read_car};
use barn_repo::commit::{build_repo, verify_repo};
use barn_repo::crypto::{KeyType, PrivateKey, PublicKey};
use barn_repo::mst::Mst;
use barn_repo::{BlockMap, Cid, data};
use serde_json::{Value as Json, json};

/// A small deterministic PRNG (splitmix64) so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn records_json(v: &Json) -> Vec<(String, String)> {
    v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["path"].as_str().unwrap().to_string(),
                r["cid"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A file `name` in a new temporary directory, removed when the returned
/// guard drops.
fn tmp_file(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("barn-repo-roundtrip-")
        .tempdir()
        .unwrap();
    let path = dir.path().join(name);
    (dir, path)
}

#[test]
fn barn_written_car_is_accepted_by_reference_implementation() {
    let key = PrivateKey::from_seed(KeyType::K256, 7);
    let did = "did:plc:barnroundtriptest0000001";
    let mut rng = Rng(42);
    let blob = "bafkreiccldh766hwcnuxnf2wh6jgzepf2nlu2lvcllt63eww5p6chi4ity";
    let mut records = BTreeMap::new();
    for i in 0..400u64 {
        let (path, rec) = match i % 4 {
            0 => (
                format!("app.bsky.feed.post/3l{:011}", 10_000_000 + i),
                json!({"$type": "app.bsky.feed.post", "text": format!("post {i} ✨"), "createdAt": "2024-05-01T00:00:00.000Z",
                       "langs": ["en"], "n": rng.below(1 << 40) as i64 - (1 << 39)}),
            ),
            1 => (
                format!("app.bsky.feed.like/3l{:011}", 20_000_000 + i),
                json!({"$type": "app.bsky.feed.like", "subject": {"uri": "at://did:plc:abc/app.bsky.feed.post/3l2", "cid": blob}, "createdAt": "2024-05-01T00:00:00.000Z"}),
            ),
            2 => (
                format!("com.example.thing/k-{i}:x.y~z_{}", rng.below(1000)),
                json!({"$type": "com.example.thing", "bytes": {"$bytes": "AAECAwQ"}, "link": {"$link": blob}, "nested": {"a": [1, null, true, {}]}}),
            ),
            _ => (
                format!("app.bsky.graph.follow/3l{:011}", 30_000_000 + i),
                json!({"$type": "app.bsky.graph.follow", "subject": "did:plc:abc",
                       "img": {"$type": "blob", "ref": {"$link": blob}, "mimeType": "image/png", "size": 1234}}),
            ),
        };
        let bytes = data::encode(&data::record_from_json(&rec).unwrap()).unwrap();
        records.insert(path, bytes);
    }
    let rev = "3l2w5x7abcd22";
    let (root, blocks) = build_repo(did, rev, &key, records.clone()).unwrap();
    let car = barn_repo::car::write_car(&[root], blocks.iter().map(|(c, b)| (c, b.as_ref())));
    let (_dir, path) = tmp_file("barn.car");
    std::fs::write(&path, &car).unwrap();

    let pubkey = key.public_key().to_did_key();
    let out = reference::run_reference(
        "check-car.mjs",
        &[
            "--in",
            path.to_str().unwrap(),
            "--did",
            did,
            "--key",
            &pubkey,
        ],
        None,
    );
    assert_eq!(out["commit"], root.to_string());
    assert_eq!(out["rev"], rev);
    let ours = verify_repo(&blocks, &root, Some(did), Some(&key.public_key())).unwrap();
    assert_eq!(out["data"], ours.commit.data.to_string());
    let theirs = records_json(&out);
    assert_eq!(theirs.len(), records.len());
    let ours: Vec<(String, String)> = ours
        .records
        .iter()
        .map(|(p, c)| (p.clone(), c.to_string()))
        .collect();
    assert_eq!(theirs, ours);
    // barn writes nothing unreachable
    assert_eq!(out["unreachableBlocks"], 0);
}

#[test]
fn reference_written_car_loads_in_barn_with_same_root_and_records() {
    let (_dir, car_path) = tmp_file("reference.car");
    let out = reference::run_reference(
        "make-car.mjs",
        &[
            "--seed",
            "11",
            "--records",
            "300",
            "--out",
            car_path.to_str().unwrap(),
        ],
        None,
    );
    let bytes = std::fs::read(&car_path).unwrap();
    let did = out["did"].as_str().unwrap();
    let key = PublicKey::from_did_key(out["signingKey"].as_str().unwrap()).unwrap();

    // In-memory reader.
    let car = read_car(bytes.clone().into(), &CarLimits::default()).unwrap();
    let root = *car.root().unwrap();
    assert_eq!(root.to_string(), out["commit"].as_str().unwrap());
    let repo = verify_repo(&car.blocks, &root, Some(did), Some(&key)).unwrap();
    assert_eq!(repo.commit.data.to_string(), out["data"].as_str().unwrap());
    assert_eq!(repo.commit.rev, out["rev"].as_str().unwrap());
    let ours: Vec<(String, String)> = repo
        .records
        .iter()
        .map(|(p, c)| (p.clone(), c.to_string()))
        .collect();
    assert_eq!(ours, records_json(&out));

    // Streaming reader sees the same blocks.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let streamed = rt
        .block_on(async {
            CarStream::new(bytes.as_slice(), CarLimits::default())
                .await?
                .collect()
                .await
        })
        .unwrap();
    assert_eq!(streamed.roots, car.roots);
    assert_eq!(streamed.blocks.len(), car.blocks.len());

    // Rebuilding the MST from barn's view of the records gives their root,
    // and every record re-encodes to its own bytes.
    let entries: Vec<(Vec<u8>, Cid)> = repo
        .records
        .iter()
        .map(|(p, c)| (p.clone().into_bytes(), *c))
        .collect();
    let mut rebuilt = Mst::from_sorted(BlockMap::new(), entries).unwrap();
    assert_eq!(rebuilt.root_cid(), repo.commit.data);
    for (_, cid) in &repo.records {
        let b = car.blocks.get(cid).unwrap();
        assert_eq!(&data::encode(&data::decode(b).unwrap()).unwrap(), b);
    }
}

#[test]
fn mst_edits_reach_reference_roots_on_random_key_sets() {
    let leaf: Cid = "bafyreie5cvv4h45feadgeuwhbcutmh6t2ceseocckahdoe6uat64zmz454"
        .parse()
        .unwrap();
    let other: Cid = "bafyreidfayvfuwqa7qlnopdjiqrxzs6blmoeu4rujcjtnci5beludirz2a"
        .parse()
        .unwrap();
    for (seed, n) in [(1u64, 0usize), (2, 1), (3, 17), (4, 300), (5, 2500)] {
        let mut rng = Rng(seed);
        let mut keys: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    "com.example.c{}/{:x}{}",
                    rng.below(3),
                    rng.next() % 100_000,
                    i
                )
            })
            .collect();
        keys.sort();
        keys.dedup();
        let deletes: Vec<String> = keys.iter().filter(|_| rng.below(4) == 0).cloned().collect();
        let entries: Vec<(String, String)> = keys
            .iter()
            .map(|k| {
                (
                    k.clone(),
                    if k.len() % 2 == 0 { leaf } else { other }.to_string(),
                )
            })
            .collect();

        // barn: insert in a shuffled order, then delete.
        let mut order = entries.clone();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let mut tree = Mst::empty(BlockMap::new());
        for (k, c) in &order {
            tree.insert(k, c.parse().unwrap()).unwrap();
        }
        for k in &deletes {
            assert!(tree.delete(k).unwrap().is_some());
        }
        let ours = tree.root_cid();

        let input = json!({"entries": entries, "deletes": deletes}).to_string();
        let out = reference::run_reference("mst-root.mjs", &[], Some(&input));
        assert_eq!(out["root"], ours.to_string(), "seed {seed}, {n} keys");
    }
}
