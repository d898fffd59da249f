//! `storage`: what barn's store costs on disk and in CPU under each block
//! value scheme (issue W1-3, "storage figures").
//!
//! Everything goes through the real `barn_store::Store`, opened with the
//! scheme's `StoreOptions`, and is written the way barn-mirror writes it:
//!
//! - **snapshot**: a signed 10,000-record repository (likes, posts, reposts,
//!   follows; TID keys), stored as one resync batch: every block, the record
//!   index, one revision whose ops create every record, the repo state and
//!   the host cursor. Compared with the size of its getRepo-order CAR.
//! - **edits**: then 1,000 commits on that repository, each one record
//!   created (60%), updated (20%) or deleted (20%) through `Mst`, a new
//!   signed commit, and stored the way a group commit of the mirror stores
//!   them, 100 to a batch (their new blocks, record index changes,
//!   revisions with one op each, repo state, host cursor). The
//!   growth of the store is compared with the summed raw size of the new
//!   blocks those edits made.
//!
//! Sizes are the directory's files, walked (journals, tables, fjall's
//! version and config files; everything in it), at three points: right
//! after writing (data in the journal, memtables in memory), after
//! `Store::flush` (memtables written out as tables) and after
//! `Store::compact` (everything compacted into the last level: the
//! settled size, where fjall's lz4 policy applies).
//!
//! CPU: `encode_block_value` / `decode_block_value` per block over the
//! snapshot's blocks, `Store::block` for every block, `export_car` of the
//! head, and the write rate of both phases (fsync included).
//!
//! Two what-ifs, not schemes the store has, run last (or alone with their
//! name as the filter): `packs` (records compressed n at a time) and
//! `params` (other zstd parameters for one record at a time).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use barn_benches::{DID, PathGen, Rng, car_in_walk_order, record, tid};
use barn_repo::commit::{Commit, build_repo};
use barn_repo::crypto::{KeyType, PrivateKey};
use barn_repo::mst::Mst;
use barn_repo::{BlockMap, BlockSource, Cid, cid_for_cbor};
use barn_store::{
    Batch, BlockCodec, CommitEntry, DictionarySource, HostState, Op, OpAction, RepoState, Source,
    Store, StoreOptions,
};
use bytes::Bytes;

const RECORDS: usize = 10_000;
const EDITS: usize = 1_000;
/// Revisions per group commit (barn-mirror commits up to 1,000 at once,
/// or whatever arrived within 5 ms).
const GROUP: usize = 100;
const SEED: u64 = 1;
/// The dictionary is trained on another repository, so it has not seen the
/// data it compresses.
const TRAIN_SEED: u64 = 2;
const HOST: &str = "https://morel.us-east.host.bsky.network";
const START_MICROS: u64 = 1_700_000_000_000_000;
const DAY_MICROS: u64 = 86_400_000_000;

struct Snapshot {
    key: PrivateKey,
    commit: Cid,
    rev: String,
    data: Cid,
    blocks: BlockMap,
    car: Bytes,
    records: Vec<(String, Cid)>,
    paths: PathGen,
    rng: Rng,
}

/// A signed repository of exactly `n` records (the record mix and sizes of
/// `barn_benches::generate_repo`).
fn snapshot(n: usize, seed: u64) -> Snapshot {
    let mut rng = Rng::new(seed ^ 0x5eed);
    let mut paths = PathGen::new(seed);
    let records: Vec<(String, Vec<u8>)> = (0..n)
        .map(|_| {
            let (collection, rkey, micros) = paths.next_path();
            (
                format!("{collection}/{rkey}"),
                record(&mut rng, collection, micros),
            )
        })
        .collect();
    let key = PrivateKey::from_seed(KeyType::K256, seed);
    let rev = tid(START_MICROS + 400 * DAY_MICROS, 7);
    let (commit, blocks) = build_repo(DID, &rev, &key, records.clone()).unwrap();
    let data = Commit::decode(&blocks.get_block(&commit).unwrap().unwrap())
        .unwrap()
        .data;
    let mut index: Vec<(String, Cid)> = records
        .iter()
        .map(|(p, b)| (p.clone(), cid_for_cbor(b)))
        .collect();
    index.sort();
    let car = Bytes::from(car_in_walk_order(&commit, &blocks));
    Snapshot {
        key,
        commit,
        rev,
        data,
        records: index,
        blocks,
        car,
        paths,
        rng,
    }
}

/// One commit on the repository: what the mirror stores for it.
struct Edit {
    rev: String,
    since: String,
    commit: Cid,
    data: Cid,
    blocks: BlockMap,
    op: Op,
}

fn edits(s: &mut Snapshot, n: usize) -> Vec<Edit> {
    let mut live: Vec<String> = s.records.iter().map(|(p, _)| p.clone()).collect();
    let mut mst = Mst::load(&s.blocks, s.data).unwrap();
    let mut since = s.rev.clone();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let micros = START_MICROS + 400 * DAY_MICROS + (i as u64 + 1) * 1_000_000;
        let pick = s.rng.range(1, 100);
        let mut blocks = BlockMap::new();
        let op = if pick <= 60 {
            let (collection, rkey, _) = s.paths.next_path();
            let path = format!("{collection}/{rkey}");
            let bytes = record(&mut s.rng, collection, micros);
            let cid = blocks.put_cbor(bytes);
            assert!(mst.insert(&path, cid).unwrap().is_none());
            live.push(path.clone());
            Op {
                action: OpAction::Create,
                path,
                cid: Some(cid),
                prev: None,
            }
        } else {
            let at = (s.rng.next_u64() % live.len() as u64) as usize;
            if pick <= 80 {
                let path = live[at].clone();
                let collection = path.split('/').next().unwrap().to_string();
                let bytes = record(&mut s.rng, &collection, micros);
                let cid = blocks.put_cbor(bytes);
                let prev = mst.insert(&path, cid).unwrap();
                Op {
                    action: OpAction::Update,
                    path,
                    cid: Some(cid),
                    prev,
                }
            } else {
                let path = live.swap_remove(at);
                let prev = mst.delete(&path).unwrap();
                Op {
                    action: OpAction::Delete,
                    path,
                    cid: None,
                    prev,
                }
            }
        };
        let data = mst.root_cid();
        blocks.extend(mst.take_new_blocks());
        let rev = tid(micros, 7);
        let (_, bytes, commit) = Commit::create(DID, data, &rev, &s.key).unwrap();
        blocks.insert(commit, bytes.into());
        out.push(Edit {
            since: std::mem::replace(&mut since, rev.clone()),
            rev,
            commit,
            data,
            blocks,
            op,
        });
    }
    out
}

fn state(commit: Cid, rev: &str, data: Cid, revisions: u64) -> RepoState {
    let mut st = RepoState::new(HOST);
    st.advance(commit, rev.to_string(), data);
    st.revisions = revisions;
    st.handle = Some("alice.bsky.social".into());
    st
}

/// Stores a first import as barn-mirror does: the blocks, then the record
/// index and the revision through a revision of its tree (its ops are the
/// tree's records, not stored again), then the repo state and host cursor.
fn write_snapshot(store: &Store, s: &Snapshot) {
    let mut batch = Batch::new();
    for (cid, data) in s.blocks.iter() {
        batch.put_block(*cid, data.clone());
    }
    store.write(batch).unwrap();
    let mut revision = store.large_revision_of_tree(DID, &s.rev).unwrap();
    for (path, cid) in &s.records {
        revision.push(Op::create(path.clone(), *cid)).unwrap();
    }
    revision
        .commit(CommitEntry {
            rev: s.rev.clone(),
            cid: s.commit,
            data: s.data,
            since: None,
            seen_at_ms: 1_763_700_000_000,
            source: Source::Resync,
            seq: None,
            host: HOST.into(),
            ops: Vec::new(),
            reason: Some("new".into()),
            chunked: None,
        })
        .unwrap();
    let mut batch = Batch::new();
    batch.set_repo(DID, state(s.commit, &s.rev, s.data, 1));
    batch.set_host(
        HOST,
        HostState {
            cursor: Some(1_000_000),
            last_event_ms: 1_763_700_000_000,
            ..Default::default()
        },
    );
    store.write(batch).unwrap();
}

/// Adds one firehose commit to a group commit, as barn-mirror's `commit`
/// path does.
fn add_edit(batch: &mut Batch, e: &Edit, i: usize) {
    for (cid, data) in e.blocks.iter() {
        batch.put_block(*cid, data.clone());
    }
    batch.set_record(DID, &e.op.path, e.op.cid);
    let seq = 1_000_001 + i as i64;
    batch.put_revision(
        DID,
        CommitEntry {
            rev: e.rev.clone(),
            cid: e.commit,
            data: e.data,
            since: Some(e.since.clone()),
            seen_at_ms: 1_763_700_000_000 + i as u64 * 1000,
            source: Source::Firehose,
            seq: Some(seq),
            host: HOST.into(),
            ops: vec![e.op.clone()],
            reason: None,
            chunked: None,
        },
    );
    batch.set_repo(DID, state(e.commit, &e.rev, e.data, 2 + i as u64));
    batch.set_host(
        HOST,
        HostState {
            cursor: Some(seq),
            last_event_ms: 1_763_700_000_000 + i as u64 * 1000,
            ..Default::default()
        },
    );
}

/// Disk use of everything under `dir`, by what it is.
#[derive(Debug, Clone, Copy, Default)]
struct DirSize {
    /// Journal files (`*.jnl`): allocated bytes (fjall sizes each journal file to
    /// 64 MiB up front with `set_len`, a sparse file; the apparent length
    /// says nothing about the data in it).
    journal: u64,
    /// Every other file (tables, fjall's version and config files), by
    /// length.
    rest: u64,
    files: usize,
}

fn dir_size(dir: &Path) -> DirSize {
    use std::os::unix::fs::MetadataExt;
    fn walk(p: &Path, journal: bool, acc: &mut DirSize, list: bool) {
        for entry in std::fs::read_dir(p).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let j = journal || entry.file_name().to_string_lossy().ends_with(".jnl");
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                walk(&path, j, acc, list);
                continue;
            }
            acc.files += 1;
            if list {
                println!(
                    "    {:>10} {:>10} {}",
                    meta.len(),
                    meta.blocks() * 512,
                    path.display()
                );
            }
            if j {
                acc.journal += meta.blocks() * 512;
            } else {
                acc.rest += meta.len();
            }
        }
    }
    let mut acc = DirSize::default();
    walk(
        dir,
        false,
        &mut acc,
        std::env::var_os("STORAGE_LIST").is_some(),
    );
    acc
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Median over `runs` of `f`'s time.
fn time(runs: usize, mut f: impl FnMut()) -> Duration {
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

struct Figures {
    name: String,
    written: DirSize,
    flushed: DirSize,
    settled: DirSize,
    by_keyspace: Vec<(&'static str, u64)>,
    edits_written: DirSize,
    edits_flushed: DirSize,
    edits_settled: DirSize,
    growth_by_keyspace: Vec<(&'static str, i64)>,
    snapshot_write: Duration,
    edits_write: Duration,
    /// (raw, stored) bytes of records, MST nodes, commits; for the
    /// snapshot's blocks and for the edits' new blocks.
    kinds: [[(u64, u64); 3]; 2],
    /// Encode time per block of each kind (snapshot blocks, one pass).
    kind_enc_us: [f64; 3],
    enc_us: f64,
    dec_us: f64,
    read_us: f64,
    export: Duration,
}

impl Figures {
    /// Settled bytes of keyspace `name` after the snapshot.
    fn keyspace(&self, name: &str) -> u64 {
        self.by_keyspace
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, b)| *b)
    }

    /// What the edits added to keyspace `name`, settled.
    fn keyspace_growth(&self, name: &str) -> i64 {
        self.growth_by_keyspace
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, b)| *b)
    }
}

fn listing(name: &str, what: &str) {
    if std::env::var_os("STORAGE_LIST").is_some() {
        println!("  {name}: {what}");
    }
}

/// Compacts, closes and reopens the store: what is left is the settled
/// on-disk form. (fjall deletes the tables a major compaction replaced
/// only once no version refers to them, which without further writes
/// happens at close.)
fn settle(store: Store, dir: &Path, opts: &StoreOptions) -> Store {
    store.compact().unwrap();
    drop(store);
    Store::open(dir, opts).unwrap()
}

/// 0 record, 1 MST node, 2 commit.
fn kind(cid: &Cid, b: &[u8]) -> usize {
    if barn_repo::mst::NodeData::decode(cid, b).is_ok() {
        1
    } else if Commit::decode(b).is_ok() {
        2
    } else {
        0
    }
}

#[allow(clippy::too_many_arguments)]
fn run(
    name: &str,
    opts: &StoreOptions,
    s: &Snapshot,
    edits: &[Edit],
    block_list: &[(Cid, Bytes)],
    snapshot_blocks: usize,
    edit_blocks: usize,
) -> Figures {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let store = Store::open(path, opts).unwrap();
    let t = Instant::now();
    write_snapshot(&store, s);
    let snapshot_write = t.elapsed();
    // An in-store dictionary trains on its own thread while the mirror
    // goes on writing; here nothing else would be written, so wait for it
    // (the snapshot itself was written before it existed).
    store.wait_for_dictionary().unwrap();
    listing(name, "after the snapshot write");
    let written = dir_size(path);
    store.flush().unwrap();
    listing(name, "after flush");
    let flushed = dir_size(path);
    let store = settle(store, path, opts);
    listing(name, "after compact + reopen");
    let settled = dir_size(path);
    let by_keyspace = store.disk_space_by_keyspace().unwrap();

    let t = Instant::now();
    for (g, group) in edits.chunks(GROUP).enumerate() {
        let mut batch = Batch::new();
        for (i, e) in group.iter().enumerate() {
            add_edit(&mut batch, e, g * GROUP + i);
        }
        store.write(batch).unwrap();
    }
    let edits_write = t.elapsed();
    let edits_written = dir_size(path);
    store.flush().unwrap();
    let edits_flushed = dir_size(path);
    let store = settle(store, path, opts);
    listing(name, "after the edits, compact + reopen");
    let edits_settled = dir_size(path);
    let after = store.disk_space_by_keyspace().unwrap();
    let growth_by_keyspace = after
        .iter()
        .zip(&by_keyspace)
        .map(|((n, a), (_, b))| (*n, *a as i64 - *b as i64))
        .collect();

    // What each kind of block costs as a stored value, under the codec
    // the store has now (an in-store trained dictionary counts for all).
    store.wait_for_dictionary().unwrap();
    let mut kinds = [[(0u64, 0u64); 3]; 2];
    let mut seen: HashSet<Cid> = HashSet::new();
    let mut kind_time = [(Duration::ZERO, 0u32); 3];
    for (cid, b) in block_list {
        seen.insert(*cid);
        let k = kind(cid, b);
        kinds[0][k].0 += b.len() as u64;
        let t = Instant::now();
        let v = store.encode_block_value(b);
        kind_time[k].0 += t.elapsed();
        kind_time[k].1 += 1;
        kinds[0][k].1 += v.len() as u64;
    }
    for e in edits {
        for (cid, b) in e.blocks.iter() {
            if seen.insert(*cid) {
                let k = kind(cid, b);
                kinds[1][k].0 += b.len() as u64;
                kinds[1][k].1 += store.encode_block_value(b).len() as u64;
            }
        }
    }

    // CPU per block, over the snapshot's blocks.
    let values: Vec<Vec<u8>> = block_list
        .iter()
        .map(|(_, b)| store.encode_block_value(b))
        .collect();
    let enc = time(5, || {
        for (_, b) in block_list {
            std::hint::black_box(store.encode_block_value(b));
        }
    });
    let dec = time(5, || {
        for v in &values {
            std::hint::black_box(store.decode_block_value(v).unwrap());
        }
    });
    for ((_, b), v) in block_list.iter().zip(&values) {
        assert_eq!(&store.decode_block_value(v).unwrap(), b);
    }
    let read = time(5, || {
        for (cid, _) in block_list {
            std::hint::black_box(store.block(cid).unwrap().unwrap());
        }
    });
    let mut car = Vec::new();
    let export = time(5, || car = store.export_car(DID, Some(&s.rev)).unwrap());
    assert_eq!(car.len(), s.car.len(), "{name}: export of the snapshot");
    let n = block_list.len() as f64;
    println!(
        "  {name}: snapshot written in {:.0} ms ({:.0} k blocks/s), {EDITS} edits in {:.0} ms ({:.0} edits/s, {:.1} k blocks/s, {GROUP} per group commit)",
        snapshot_write.as_secs_f64() * 1e3,
        snapshot_blocks as f64 / snapshot_write.as_secs_f64() / 1e3,
        edits_write.as_secs_f64() * 1e3,
        EDITS as f64 / edits_write.as_secs_f64(),
        edit_blocks as f64 / edits_write.as_secs_f64() / 1e3,
    );
    Figures {
        name: name.to_string(),
        written,
        flushed,
        settled,
        by_keyspace,
        edits_written,
        edits_flushed,
        edits_settled,
        growth_by_keyspace,
        snapshot_write,
        edits_write,
        kinds,
        kind_enc_us: kind_time.map(|(t, n)| t.as_secs_f64() * 1e6 / f64::from(n.max(1))),
        enc_us: enc.as_secs_f64() * 1e6 / n,
        dec_us: dec.as_secs_f64() * 1e6 / n,
        read_us: read.as_secs_f64() * 1e6 / n,
        export,
    }
}

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let t = Instant::now();
    let mut s = snapshot(RECORDS, SEED);
    let edits = edits(&mut s, EDITS);
    let car_len = s.car.len() as u64;
    let snapshot_block_bytes = s.blocks.byte_len();
    let mut seen: HashSet<Cid> = s.blocks.iter().map(|(c, _)| *c).collect();
    let (mut edit_blocks, mut edit_bytes) = (0usize, 0u64);
    for e in &edits {
        for (cid, b) in e.blocks.iter() {
            if seen.insert(*cid) {
                edit_blocks += 1;
                edit_bytes += b.len() as u64;
            }
        }
    }
    let block_list: Vec<(Cid, Bytes)> = s.blocks.iter().map(|(c, b)| (*c, b.clone())).collect();
    println!(
        "storage input: {} records, {} blocks ({} bytes), CAR {} bytes; {} edits make {} new blocks, {} bytes ({:.0} per edit); generated in {:.1} s",
        RECORDS,
        s.blocks.len(),
        snapshot_block_bytes,
        car_len,
        EDITS,
        edit_blocks,
        edit_bytes,
        edit_bytes as f64 / EDITS as f64,
        t.elapsed().as_secs_f64()
    );

    // The dictionaries: trained on another repository's blocks.
    let other = snapshot(RECORDS, TRAIN_SEED);
    let samples: Vec<&[u8]> = other.blocks.iter().map(|(_, b)| b.as_ref()).collect();
    let sizes: Vec<usize> = samples.iter().map(|b| b.len()).collect();
    let joined = samples.concat();
    let mut dicts = Vec::new();
    for max in [16 << 10, 64 << 10, 110 << 10] {
        let t = Instant::now();
        let d: Arc<[u8]> = zstd::dict::from_continuous(&joined, &sizes, max)
            .unwrap()
            .into();
        println!(
            "dictionary: {} bytes (max {}), trained on {} blocks / {} bytes of the seed-{TRAIN_SEED} repo in {:.0} ms",
            d.len(),
            max,
            sizes.len(),
            joined.len(),
            t.elapsed().as_secs_f64() * 1e3
        );
        dicts.push(d);
    }
    let dict = |i: usize| DictionarySource::Given(dicts[i].clone());

    // `structure`: MST nodes and commits compressed too.
    let o = |blocks: BlockCodec, lz4: bool, structure: bool| StoreOptions {
        blocks,
        blocks_lz4: lz4,
        compress_structure: structure,
        ..StoreOptions::default()
    };
    let zd = |level: i32, i: usize| BlockCodec::ZstdDict {
        level,
        dictionary: dict(i),
    };
    let z = |level: i32| BlockCodec::Zstd { level };
    let schemes: Vec<(&str, StoreOptions)> = vec![
        (
            "a raw + fjall lz4 (before)",
            o(BlockCodec::Raw, true, false),
        ),
        ("b raw, fjall none", o(BlockCodec::Raw, false, false)),
        ("c zstd 1", o(z(1), false, true)),
        ("c zstd 3", o(z(3), false, true)),
        ("d zstd -1 + dict 64k", o(zd(-1, 1), false, true)),
        ("d zstd 1 + dict 64k", o(zd(1, 1), false, true)),
        ("d zstd 3 + dict 16k", o(zd(3, 0), false, true)),
        ("d zstd 3 + dict 64k", o(zd(3, 1), false, true)),
        ("d zstd 3 + dict 110k", o(zd(3, 2), false, true)),
        ("d zstd 9 + dict 64k", o(zd(9, 1), false, true)),
        ("e zstd 3 + dict 64k + fjall lz4", o(zd(3, 1), true, true)),
        (
            "g zstd 3 + dict 64k, structure raw",
            o(zd(3, 1), false, false),
        ),
        (
            "g zstd 3 + dict 64k, structure raw, fjall lz4",
            o(zd(3, 1), true, false),
        ),
        (
            "default: g + fjall lz4, dict trained in-store",
            StoreOptions::default(),
        ),
    ];

    println!();
    println!("== storage: per scheme (write rates include the fsync) ==");
    let mut figures = Vec::new();
    for (name, opts) in &schemes {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        figures.push(run(
            name,
            opts,
            &s,
            &edits,
            &block_list,
            s.blocks.len(),
            edit_blocks,
        ));
    }

    // Baseline: the whole CAR through zstd, as a zstd-per-CAR backup does.
    println!();
    println!("== baseline: zstd of the whole CAR ==");
    let mut baseline = Vec::new();
    for level in [-1, 1, 3, 9, 19] {
        let t = Instant::now();
        let z = zstd::bulk::compress(&s.car, level).unwrap();
        let e = t.elapsed();
        println!(
            "  zstd -{level} of the CAR: {} bytes, {:.3} per CAR byte, {:.0} ms",
            z.len(),
            z.len() as f64 / car_len as f64,
            e.as_secs_f64() * 1e3
        );
        baseline.push((level, z.len() as f64 / car_len as f64));
    }
    let base = |level: i32| {
        baseline
            .iter()
            .find(|(l, _)| *l == level)
            .map(|(_, r)| *r)
            .unwrap_or(baseline[2].1)
    };

    let ratio = |a: u64, b: u64| a as f64 / b as f64;
    let diff = |a: u64, b: u64| (a as f64 - b as f64) / edit_bytes as f64;
    println!();
    println!(
        "== snapshot: bytes on disk per CAR byte (CAR {car_len} bytes); tables and fjall's files, the journal apart =="
    );
    println!(
        "  {:<48} {:>8} {:>8} {:>8} {:>8}  {:>9} {:>9}",
        "scheme", "journal", "flushed", "settled", "blocks", "write", "export"
    );
    for f in &figures {
        println!(
            "  {:<48} {:>8.3} {:>8.3} {:>8.3} {:>8.3}  {:>5.0} k/s {:>7.1}ms",
            f.name,
            ratio(f.written.journal, car_len),
            ratio(f.flushed.rest, car_len),
            ratio(f.settled.rest, car_len),
            ratio(f.keyspace("blocks"), car_len),
            s.blocks.len() as f64 / f.snapshot_write.as_secs_f64() / 1e3,
            f.export.as_secs_f64() * 1e3,
        );
    }
    println!();
    println!(
        "== {EDITS} edits: growth per byte of the new blocks they made ({edit_bytes} bytes) =="
    );
    println!(
        "  {:<48} {:>8} {:>8} {:>8} {:>8}  {:>10}",
        "scheme", "journal", "flushed", "settled", "blocks", "write"
    );
    for f in &figures {
        println!(
            "  {:<48} {:>8.3} {:>8.3} {:>8.3} {:>8.3}  {:>5.0} ed/s",
            f.name,
            diff(f.edits_written.journal, f.settled.journal),
            diff(f.edits_flushed.rest, f.settled.rest),
            diff(f.edits_settled.rest, f.settled.rest),
            f.keyspace_growth("blocks") as f64 / edit_bytes as f64,
            EDITS as f64 / f.edits_write.as_secs_f64(),
        );
    }
    println!();
    println!("== CPU per block (the snapshot's blocks; median of 5 passes) ==");
    for f in &figures {
        println!(
            "  {:<48} encode {:>6.2} µs (records {:.2}, nodes {:.2}, commit {:.2})  decode {:>5.2} µs  Store::block {:>5.2} µs",
            f.name,
            f.enc_us,
            f.kind_enc_us[0],
            f.kind_enc_us[1],
            f.kind_enc_us[2],
            f.dec_us,
            f.read_us
        );
    }
    println!();
    println!("== settled size by keyspace: snapshot bytes / growth from the edits ==");
    for f in &figures {
        let parts: Vec<String> = f
            .by_keyspace
            .iter()
            .zip(&f.growth_by_keyspace)
            .map(|((n, a), (_, g))| format!("{n} {a}/{g}"))
            .collect();
        println!("  {:<48} {}", f.name, parts.join(", "));
        println!(
            "  {:<48} files: {} then {}; journal allocated {} then {} bytes",
            "", f.settled.files, f.edits_settled.files, f.settled.journal, f.edits_settled.journal
        );
    }
    println!();
    println!("== stored value bytes per raw block byte, by kind: snapshot | edits ==");
    if let Some(f) = figures.first() {
        let k = &f.kinds;
        println!(
            "  raw bytes: records {} | {}, MST nodes {} | {}, commits {} | {}",
            k[0][0].0, k[1][0].0, k[0][1].0, k[1][1].0, k[0][2].0, k[1][2].0
        );
    }
    for f in &figures {
        let r = |x: (u64, u64)| x.1 as f64 / x.0.max(1) as f64;
        let k = &f.kinds;
        println!(
            "  {:<48} records {:.3} | {:.3}  MST nodes {:.3} | {:.3}  commits {:.3} | {:.3}",
            f.name,
            r(k[0][0]),
            r(k[1][0]),
            r(k[0][1]),
            r(k[1][1]),
            r(k[0][2]),
            r(k[1][2]),
        );
    }

    println!();
    for f in &figures {
        // The scheme's zstd level (3 for the schemes without zstd).
        let level = f
            .name
            .split_once("zstd ")
            .and_then(|(_, rest)| rest.split(' ').next()?.parse().ok())
            .unwrap_or(3);
        let settled = ratio(f.settled.rest, car_len);
        let growth = diff(f.edits_settled.rest, f.settled.rest);
        println!(
            "RATIO storage: {} {:.3} bytes/CAR byte = {} zstd -{level} of the CAR ({:.3}); goal 0.35 {}; {EDITS} edits grow it {:.2}x their new blocks, goal 1.2 {}; {:.2} µs encode, {:.2} µs decode per block",
            f.name,
            settled,
            fmt_ratio(base(level) / settled),
            base(level),
            if settled <= 0.35 { "met" } else { "NOT met" },
            growth,
            if growth <= 1.2 { "met" } else { "NOT met" },
            f.enc_us,
            f.dec_us,
        );
    }

    if filter.is_empty() || filter.iter().any(|f| f == "packs") {
        packs(&s, &dicts[1], car_len);
    }
    if filter.is_empty() || filter.iter().any(|f| f == "params") {
        params(&s, &dicts[1], car_len);
    }
}

/// What-if: one record at a time with the 64 KiB dictionary, as the store
/// does, under other zstd parameters: the level, the sizes of the
/// dictionary's tables (zstd sizes them for a source of unknown size), and
/// whether the context attaches them (zstd's choice for small inputs:
/// every position is looked up in the context's tables and the
/// dictionary's) or copies them into its own. The baseline is the store's
/// setting, measured in the same run.
fn params(s: &Snapshot, dict: &[u8], car_len: u64) {
    use zstd::zstd_safe::{
        CCtx, CDict, CParameter, DictAttachPref, FrameFormat, ParamSwitch, ResetDirective,
    };
    let records: Vec<Bytes> = s
        .records
        .iter()
        .map(|(_, cid)| s.blocks.get(cid).unwrap().clone())
        .collect();
    let raw: usize = records.iter().map(|b| b.len()).sum();
    println!();
    println!(
        "== zstd parameters (what-if): {} records, {raw} bytes, one at a time, 64 KiB dictionary ==",
        records.len()
    );
    println!(
        "  {:<36} {:>14} {:>10} {:>15} {:>10}",
        "variant", "bytes per raw", "vs store", "µs per record", "vs store"
    );
    struct Variant {
        name: &'static str,
        level: i32,
        /// Hash and chain log of the dictionary's tables.
        tables: Option<u32>,
        copy: bool,
        raw_literals: bool,
        /// Only each record's first 16 bytes: what a frame costs whatever
        /// its size.
        tiny: bool,
        store_calls: bool,
    }
    let v = |name, level| Variant {
        name,
        level,
        tables: None,
        copy: false,
        raw_literals: false,
        tiny: false,
        store_calls: false,
    };
    let variants = [
        v("level 3 (the store's parameters)", 3),
        v("level 1", 1),
        v("level 2", 2),
        v("level 4", 4),
        Variant {
            tables: Some(14),
            ..v("level 3, tables 2^14", 3)
        },
        Variant {
            tables: Some(12),
            ..v("level 3, tables 2^12", 3)
        },
        Variant {
            tables: Some(14),
            copy: true,
            ..v("level 3, tables 2^14, copied", 3)
        },
        Variant {
            raw_literals: true,
            ..v("level 3, literals not compressed", 3)
        },
        Variant {
            tiny: true,
            ..v("level 3, 16 bytes of each record", 3)
        },
        Variant {
            store_calls: true,
            ..v("level 3, as the store calls it", 3)
        },
        v("level 3 (the store's parameters), again", 3),
    ];
    // The frame trimmed as the store trims it (`barn_store::codec`).
    let trim = |cctx: &mut CCtx| {
        for p in [
            CParameter::Format(FrameFormat::Magicless),
            CParameter::ContentSizeFlag(false),
            CParameter::ChecksumFlag(false),
            CParameter::DictIdFlag(false),
        ] {
            cctx.set_parameter(p).unwrap();
        }
    };
    let mut base = None;
    let mut out = Vec::with_capacity(64 << 10);
    for x in &variants {
        let mut cctx = CCtx::create();
        cctx.set_parameter(CParameter::CompressionLevel(x.level))
            .unwrap();
        trim(&mut cctx);
        if let Some(t) = x.tables {
            cctx.set_parameter(CParameter::HashLog(t)).unwrap();
            cctx.set_parameter(CParameter::ChainLog(t)).unwrap();
        }
        if x.copy {
            cctx.set_parameter(CParameter::ForceAttachDict(DictAttachPref::ForceCopy))
                .unwrap();
        }
        if x.raw_literals {
            cctx.set_parameter(CParameter::LiteralCompressionMode(ParamSwitch::Disable))
                .unwrap();
        }
        cctx.load_dictionary(dict).unwrap();
        let mut stored = 0usize;
        // The store's own calls: parameters set again and the shared
        // CDict referenced for every value (`barn_store::codec`).
        let cdict = CDict::create(dict, x.level);
        let took = time(5, || {
            stored = 0;
            for r in &records {
                let r = if x.tiny { &r[..16] } else { &r[..] };
                out.clear();
                if x.store_calls {
                    cctx.reset(ResetDirective::SessionAndParameters).unwrap();
                    trim(&mut cctx);
                    cctx.ref_cdict(&cdict).unwrap();
                } else {
                    cctx.reset(ResetDirective::SessionOnly).unwrap();
                }
                cctx.compress2(&mut out, r).unwrap();
                stored += out.len();
            }
        });
        let us = took.as_secs_f64() * 1e6 / records.len() as f64;
        let (b_stored, b_us) = *base.get_or_insert((stored, us));
        if x.tiny {
            println!(
                "  {:<36} {:>14} {:>10} {:>15.2} {:>10}",
                x.name,
                "-",
                "-",
                us,
                fmt_ratio(us / b_us),
            );
            println!(
                "RATIO storage_params: a frame of 16 bytes costs {us:.2} µs = {} of a whole record's",
                fmt_ratio(us / b_us),
            );
            continue;
        }
        println!(
            "  {:<36} {:>14.3} {:>10} {:>15.2} {:>10}",
            x.name,
            stored as f64 / raw as f64,
            fmt_ratio(stored as f64 / b_stored as f64),
            us,
            fmt_ratio(us / b_us),
        );
        if !x.name.starts_with("level 3 (the store's parameters)") {
            println!(
                "RATIO storage_params: {}: {us:.2} µs a record = {} of the store's setting; {:+.4} bytes per CAR byte",
                x.name,
                fmt_ratio(us / b_us),
                (stored as f64 - b_stored as f64) / car_len as f64,
            );
        }
    }
}

/// What-if, not a scheme the store has: the snapshot's records compressed
/// `n` at a time (zstd 3, the 64 KiB dictionary), the records of a pack
/// concatenated, against one at a time as the store does (`n` = 1, the
/// baseline). In key order, as a tree walk would group them, and in CID
/// order, as the reference PDS's getRepo sends them. A record read from a
/// pack costs decompressing the whole pack.
fn packs(s: &Snapshot, dict: &[u8], car_len: u64) {
    let by_key: Vec<Bytes> = s
        .records
        .iter()
        .map(|(_, cid)| s.blocks.get(cid).unwrap().clone())
        .collect();
    let mut by_cid: Vec<(Cid, Bytes)> = s
        .records
        .iter()
        .map(|(_, cid)| (*cid, s.blocks.get(cid).unwrap().clone()))
        .collect();
    by_cid.sort_by_key(|(cid, _)| std::cmp::Reverse(cid.to_bytes()));
    let by_cid: Vec<Bytes> = by_cid.into_iter().map(|(_, b)| b).collect();
    let raw: usize = by_key.iter().map(|b| b.len()).sum();
    println!();
    println!(
        "== packs (what-if): {} records, {raw} bytes, compressed n at a time (zstd 3, 64 KiB dictionary) ==",
        by_key.len()
    );
    println!(
        "  {:<10} {:>5}  {:>14} {:>13} {:>16} {:>18}",
        "order", "n", "bytes per raw", "vs n = 1", "µs per record", "µs to read one"
    );
    let mut compressor = zstd::bulk::Compressor::with_dictionary(3, dict).unwrap();
    let mut decompressor = zstd::bulk::Decompressor::with_dictionary(dict).unwrap();
    for (order, records) in [("key", &by_key), ("cid", &by_cid)] {
        let mut single = 0usize;
        for n in [1usize, 4, 16, 64, 256] {
            let packs: Vec<Vec<u8>> = records.chunks(n).map(|c| c.concat()).collect();
            let mut stored = 0usize;
            let mut frames = Vec::with_capacity(packs.len());
            let took = time(3, || {
                frames.clear();
                for p in &packs {
                    frames.push(compressor.compress(p).unwrap());
                }
            });
            for f in &frames {
                stored += f.len();
            }
            if n == 1 {
                single = stored;
            }
            let read = time(3, || {
                for (f, p) in frames.iter().zip(&packs).take(200) {
                    let out = decompressor.decompress(f, p.len()).unwrap();
                    assert_eq!(out.len(), p.len());
                }
            });
            let reads = frames.len().min(200);
            println!(
                "  {:<10} {:>5}  {:>14.3} {:>13} {:>16.2} {:>18.2}",
                order,
                n,
                stored as f64 / raw as f64,
                fmt_ratio(stored as f64 / single as f64),
                took.as_secs_f64() * 1e6 / records.len() as f64,
                read.as_secs_f64() * 1e6 / reads as f64,
            );
            if order == "key" {
                println!(
                    "RATIO storage_packs: {n} records a pack in key order store {:.3} bytes per raw record byte = {} of one at a time; the snapshot's records alone would drop by {:.3} bytes per CAR byte",
                    stored as f64 / raw as f64,
                    fmt_ratio(stored as f64 / single as f64),
                    (single as f64 - stored as f64) / car_len as f64,
                );
            }
        }
    }
}

fn fmt_ratio(r: f64) -> String {
    format!("{r:.2}x")
}
