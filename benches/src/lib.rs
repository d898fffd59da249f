//! Shared input generation and reporting for the barn-repo benchmarks.
//!
//! Every input is generated deterministically with barn-repo itself (a
//! fixed-seed PRNG, `build_repo`, `Mst::from_sorted`, `write_car`), once per
//! bench process, and handed unchanged to every contender.
//!
//! Timing: criterion drives the measurement; each contender runs inside
//! `iter_custom` through [`Tally::run`], which also keeps the per-iteration
//! time of every criterion sample. After a group, [`report`] prints the
//! median of the measured samples and the ratios between contenders, all
//! from the same process and the same run.

pub mod firehose;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use barn_repo::blocks::{BlockMap, BlockSource};
use barn_repo::car::CarWriter;
use barn_repo::commit::build_repo;
use barn_repo::crypto::{KeyType, PrivateKey};
use barn_repo::data::Value;
use barn_repo::mst::NodeData;
use barn_repo::{Cid, cid_for_cbor};
use bytes::Bytes;
use criterion::BenchmarkGroup;
use criterion::measurement::WallTime;

// ---------------------------------------------------------------------------
// Deterministic randomness

/// A small deterministic PRNG (splitmix64): the same seed gives the same
/// inputs on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// `n` lowercase base32 characters (the alphabet of `did:plc`).
    pub fn base32(&mut self, n: usize) -> String {
        const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
        (0..n)
            .map(|_| ALPHABET[(self.next_u64() % 32) as usize] as char)
            .collect()
    }
}

// ---------------------------------------------------------------------------
// Keys and records

/// The collections of the generated repositories, with their share of the
/// records in percent (roughly a typical Bluesky account).
pub const COLLECTIONS: [(&str, u64); 4] = [
    ("app.bsky.feed.like", 45),
    ("app.bsky.feed.post", 30),
    ("app.bsky.feed.repost", 10),
    ("app.bsky.graph.follow", 15),
];

/// Microseconds since the epoch of the first generated record (2023-11-14).
const START_MICROS: u64 = 1_700_000_000_000_000;

/// barn's default store options, with fjall's background settings
/// overridden from the environment, to compare them in paired runs:
/// `BARN_BENCH_FJALL_WORKERS` (`StoreOptions::worker_threads`; 0 = fjall's
/// default, one per core) and `BARN_BENCH_BLOCKS_L0`
/// (`StoreOptions::blocks_l0_threshold`; fjall's default is 4) and
/// `BARN_BENCH_MEMTABLE_MIB` (`StoreOptions::memtable_bytes`).
pub fn store_options() -> barn_store::StoreOptions {
    let env = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
    };
    let mut o = barn_store::StoreOptions::default();
    if let Some(n) = env("BARN_BENCH_FJALL_WORKERS") {
        o.worker_threads = n;
    }
    if let Some(n) = env("BARN_BENCH_BLOCKS_L0") {
        o.blocks_l0_threshold = u8::try_from(n).unwrap_or(u8::MAX);
    }
    if let Some(n) = env("BARN_BENCH_MEMTABLE_MIB") {
        o.memtable_bytes = (n as u64) << 20;
    }
    eprintln!(
        "store: fjall worker threads {} (0 = one per core), blocks level-0 threshold {}, memtables {} MiB",
        o.worker_threads,
        o.blocks_l0_threshold,
        o.memtable_bytes >> 20
    );
    o
}

/// Process CPU time so far (user + system, every thread, exited ones
/// included), from `/proc/self/stat`: clock ticks of 10 ms (Linux's
/// `USER_HZ`).
pub fn process_cpu() -> Duration {
    cpu_of("/proc/self/stat")
}

/// The same for the calling thread alone.
pub fn thread_cpu() -> Duration {
    cpu_of("/proc/thread-self/stat")
}

fn cpu_of(stat: &str) -> Duration {
    let stat = std::fs::read_to_string(stat).unwrap_or_default();
    // After the command name, which is in parentheses and may hold spaces:
    // `utime` and `stime` are the line's fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|f| f.parse::<u64>().unwrap_or(0))
        .sum();
    Duration::from_millis(ticks * 10)
}

/// Waits until the process is quiet (a 200 ms window with at most one
/// 10 ms tick of CPU: fjall's flushes and compactions done), or `limit`
/// has passed; returns the process CPU then.
pub fn wait_quiet(limit: Duration) -> Duration {
    let t = Instant::now();
    let mut last = process_cpu();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = process_cpu();
        let quiet = now - last <= Duration::from_millis(10);
        last = now;
        if quiet || t.elapsed() > limit {
            return last;
        }
    }
}

/// A key as barn-store makes them for the record index and revisions:
/// `a`, a zero byte, `b` (the store's own helper is private to it).
pub fn store_key(a: &str, b: &str) -> Vec<u8> {
    [a.as_bytes(), &[0], b.as_bytes()].concat()
}

/// A bare fjall database opened the way barn-store opens its own, with
/// [`store_options`]: the baseline under barn's store in the floors of
/// the ingest and import benches.
pub struct BareFjall {
    /// The database.
    pub db: fjall::Database,
    /// `blocks`, with barn's level-0 threshold and compression.
    pub blocks: fjall::Keyspace,
    memtable_bytes: u64,
}

impl BareFjall {
    /// Opens (creates) it in `path`.
    pub fn open(path: &std::path::Path) -> fjall::Result<BareFjall> {
        use fjall::KeyspaceCreateOptions;
        use fjall::config::CompressionPolicy;
        let o = store_options();
        let mut builder = fjall::Database::builder(path)
            .cache_size(o.cache_bytes)
            .manual_journal_persist(true);
        if o.worker_threads > 0 {
            builder = builder.worker_threads(o.worker_threads);
        }
        let db = builder.open()?;
        let memtable_bytes = o.memtable_bytes;
        let blocks = db.keyspace("blocks", || {
            let leveled = fjall::compaction::Leveled::default()
                .with_l0_threshold(o.blocks_l0_threshold.clamp(2, 16));
            let k = KeyspaceCreateOptions::default()
                .max_memtable_size(memtable_bytes)
                .compaction_strategy(std::sync::Arc::new(leveled));
            if o.blocks_lz4 {
                k
            } else {
                k.data_block_compression_policy(CompressionPolicy::disabled())
            }
        })?;
        Ok(BareFjall {
            db,
            blocks,
            memtable_bytes,
        })
    }

    /// Another keyspace, with barn's memtable size and fjall's defaults
    /// otherwise (as barn-store's other keyspaces).
    pub fn keyspace(&self, name: &str) -> fjall::Result<fjall::Keyspace> {
        let memtable = self.memtable_bytes;
        self.db.keyspace(name, || {
            fjall::KeyspaceCreateOptions::default().max_memtable_size(memtable)
        })
    }
}

/// A 13-character TID (base32-sortable) from a timestamp in microseconds
/// and a clock id.
pub fn tid(micros: u64, clock_id: u64) -> String {
    const ALPHABET: &[u8; 32] = b"234567abcdefghijklmnopqrstuvwxyz";
    let v = ((micros & ((1 << 53) - 1)) << 10) | (clock_id & 0x3ff);
    (0..13)
        .rev()
        .map(|i| ALPHABET[((v >> (i * 5)) & 31) as usize] as char)
        .collect()
}

/// An RFC 3339 datetime (`2023-11-14T22:13:20.000Z`) for microseconds since
/// the epoch (millisecond precision).
pub fn datetime(micros: u64) -> String {
    barn_repo::syntax::Datetime::from_unix_millis((micros / 1000) as i64).into_string()
}

/// A generator of repository paths in time order: `collection/tid`, with
/// TIDs strictly increasing, so every path is unique.
#[derive(Debug, Clone)]
pub struct PathGen {
    rng: Rng,
    micros: u64,
}

impl PathGen {
    /// A path generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        PathGen {
            rng: Rng::new(seed),
            micros: START_MICROS,
        }
    }

    /// The next `(collection, rkey, micros)`.
    pub fn next_path(&mut self) -> (&'static str, String, u64) {
        // Up to a minute between two records.
        self.micros += self.rng.range(1, 60_000_000);
        let collection = pick_collection(&mut self.rng);
        (collection, tid(self.micros, 7), self.micros)
    }
}

/// A collection drawn with the shares of [`COLLECTIONS`].
pub fn pick_collection(rng: &mut Rng) -> &'static str {
    let mut pick = rng.range(1, 100);
    for (name, share) in COLLECTIONS {
        if pick <= share {
            return name;
        }
        pick -= share;
    }
    COLLECTIONS[0].0
}

const WORDS: [&str; 32] = [
    "the",
    "a",
    "bluesky",
    "post",
    "today",
    "really",
    "what",
    "is",
    "going",
    "on",
    "with",
    "this",
    "timeline",
    "thread",
    "photo",
    "love",
    "weather",
    "coffee",
    "code",
    "rust",
    "protocol",
    "federation",
    "and",
    "of",
    "to",
    "in",
    "my",
    "new",
    "feed",
    "just",
    "reading",
    "about",
];

fn text(rng: &mut Rng, len: usize) -> String {
    let mut s = String::with_capacity(len + 12);
    while s.len() < len {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(WORDS[(rng.next_u64() % WORDS.len() as u64) as usize]);
    }
    s.truncate(len);
    s
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<BTreeMap<_, _>>(),
    )
}

fn s(v: impl Into<String>) -> Value {
    Value::String(v.into())
}

/// A DAG-CBOR record of `collection`, between about 100 and 2000 bytes.
pub fn record(rng: &mut Rng, collection: &str, micros: u64) -> Vec<u8> {
    let created = s(datetime(micros));
    let value = match collection {
        "app.bsky.feed.post" => {
            let len = rng.range(20, 1880) as usize;
            map(vec![
                ("$type", s(collection)),
                ("createdAt", created),
                ("langs", Value::List(vec![s("en")])),
                ("text", s(text(rng, len))),
            ])
        }
        "app.bsky.graph.follow" => map(vec![
            ("$type", s(collection)),
            ("createdAt", created),
            ("subject", s(format!("did:plc:{}", rng.base32(24)))),
        ]),
        // Likes and reposts: a strong ref to a post.
        _ => {
            let target = cid_for_cbor(&rng.next_u64().to_be_bytes());
            let uri = format!(
                "at://did:plc:{}/app.bsky.feed.post/{}",
                rng.base32(24),
                tid(micros - rng.range(0, 1 << 36), 0)
            );
            map(vec![
                ("$type", s(collection)),
                ("createdAt", created),
                (
                    "subject",
                    map(vec![("cid", s(target.to_string())), ("uri", s(uri))]),
                ),
            ])
        }
    };
    match barn_repo::data::encode(&value) {
        Ok(bytes) => bytes,
        Err(e) => panic!("encoding a generated record: {e}"),
    }
}

/// `n` unique repository paths in time (insertion) order, each with a
/// record CID. The MST benches use these; the records themselves are not
/// needed, only their CIDs.
pub fn gen_keys(n: usize, seed: u64) -> Vec<(String, Cid)> {
    let mut paths = PathGen::new(seed);
    (0..n)
        .map(|i| {
            let (collection, rkey, _) = paths.next_path();
            // The record CID: of a distinct small DAG-CBOR value.
            let value = [
                0x1a,
                (i >> 24) as u8,
                (i >> 16) as u8,
                (i >> 8) as u8,
                i as u8,
            ];
            (format!("{collection}/{rkey}"), cid_for_cbor(&value))
        })
        .collect()
}

/// The same keys sorted, as `Mst::from_sorted` takes them.
pub fn sorted_entries(keys: &[(String, Cid)]) -> Vec<(Vec<u8>, Cid)> {
    let mut entries: Vec<(Vec<u8>, Cid)> = keys
        .iter()
        .map(|(k, v)| (k.clone().into_bytes(), *v))
        .collect();
    entries.sort();
    entries
}

/// The DID of the generated repositories.
pub const DID: &str = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";

// ---------------------------------------------------------------------------
// A whole repository as a CAR

/// A generated, signed repository and its CAR.
#[derive(Debug, Clone)]
pub struct GeneratedRepo {
    /// The commit CID (the CAR's root).
    pub commit: Cid,
    /// Every block: commit, MST nodes, records.
    pub blocks: BlockMap,
    /// The CAR v1 bytes, in getRepo order (commit, then a depth-first walk
    /// of the MST with each record after its entry).
    pub car: Bytes,
    /// Number of records.
    pub records: usize,
    /// Smallest and largest record, in bytes.
    pub record_size_range: (usize, usize),
    /// Total record bytes.
    pub record_bytes: u64,
}

/// Generates a repository of [`DID`] whose CAR is about
/// `target_car_bytes` long.
pub fn generate_repo(target_car_bytes: u64, seed: u64) -> GeneratedRepo {
    generate_repo_of(DID, target_car_bytes, seed)
}

/// [`generate_repo`] for another DID.
pub fn generate_repo_of(did: &str, target_car_bytes: u64, seed: u64) -> GeneratedRepo {
    let mut rng = Rng::new(seed ^ 0x5eed);
    let mut paths = PathGen::new(seed);
    let mut records = Vec::new();
    let mut estimate = 0u64;
    let (mut min, mut max, mut total) = (usize::MAX, 0usize, 0u64);
    while estimate < target_car_bytes {
        let (collection, rkey, micros) = paths.next_path();
        let bytes = record(&mut rng, collection, micros);
        min = min.min(bytes.len());
        max = max.max(bytes.len());
        total += bytes.len() as u64;
        // Record section (varint + 36-byte CID + data) plus its share of the
        // MST: ~1.33 entries of ~60 bytes and a node section per ~4 keys.
        estimate += bytes.len() as u64 + 38 + 92;
        records.push((format!("{collection}/{rkey}"), bytes));
    }
    let count = records.len();
    let key = PrivateKey::from_seed(KeyType::K256, seed);
    let rev = tid(START_MICROS + 86_400_000_000 * 400, 7);
    let (commit, blocks) = match build_repo(did, &rev, &key, records) {
        Ok(r) => r,
        Err(e) => panic!("building the generated repo: {e}"),
    };
    let car = car_in_walk_order(&commit, &blocks);
    GeneratedRepo {
        commit,
        blocks,
        car: Bytes::from(car),
        records: count,
        record_size_range: (min, max),
        record_bytes: total,
    }
}

/// Writes a repository CAR the way a PDS serves `getRepo`: the commit, then
/// the MST depth-first with each entry's record after the node.
pub fn car_in_walk_order(commit: &Cid, blocks: &BlockMap) -> Vec<u8> {
    let mut out = Vec::with_capacity(blocks.byte_len() as usize + blocks.len() * 40 + 64);
    let Ok(mut w) = CarWriter::new(&mut out, &[*commit]) else {
        return out;
    };
    let get = |cid: &Cid| blocks.get_block(cid).ok().flatten().unwrap_or_default();
    let commit_bytes = get(commit);
    let _ = w.write_block(commit, &commit_bytes);
    let data = barn_repo::commit::Commit::decode(&commit_bytes).map(|c| c.data);
    let mut stack: Vec<Cid> = data.into_iter().collect();
    while let Some(node_cid) = stack.pop() {
        let bytes = get(&node_cid);
        let _ = w.write_block(&node_cid, &bytes);
        let Ok(node) = NodeData::decode(&node_cid, &bytes) else {
            continue;
        };
        for e in &node.entries {
            let _ = w.write_block(&e.value, &get(&e.value));
        }
        // Children pushed in reverse so the walk goes left to right.
        for e in node.entries.iter().rev() {
            stack.extend(e.right);
        }
        stack.extend(node.left);
    }
    let _ = w.finish();
    out
}

// ---------------------------------------------------------------------------
// Timing and reporting

/// Per-iteration times of every contender, one entry per criterion sample.
#[derive(Debug, Default)]
pub struct Tally {
    samples: RefCell<BTreeMap<String, Vec<Duration>>>,
}

impl Tally {
    /// An empty tally.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `iters` iterations of `routine`, each on a fresh `setup()`
    /// value; times only `routine` (not setup, not dropping its output).
    /// Returns the total for criterion and keeps the mean per iteration.
    pub fn run<I, O>(
        &self,
        name: &str,
        iters: u64,
        mut setup: impl FnMut() -> I,
        mut routine: impl FnMut(I) -> O,
    ) -> Duration {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let input = setup();
            let start = Instant::now();
            let out = std::hint::black_box(routine(std::hint::black_box(input)));
            total += start.elapsed();
            drop(out);
        }
        let per_iter = total.div_f64(iters.max(1) as f64);
        self.samples
            .borrow_mut()
            .entry(name.to_string())
            .or_default()
            .push(per_iter);
        total
    }

    /// The median per-iteration time over the last `last` samples of
    /// `name` (criterion's measurement samples come after its warm-up).
    pub fn median(&self, name: &str, last: usize) -> Option<Duration> {
        let samples = self.samples.borrow();
        let all = samples.get(name)?;
        let mut v: Vec<Duration> = all[all.len().saturating_sub(last)..].to_vec();
        if v.is_empty() {
            return None;
        }
        v.sort();
        let mid = v.len() / 2;
        Some(if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2
        })
    }
}

/// Registers `name` in `group`: criterion measures it, `tally` keeps its
/// samples. `setup` runs untimed before every iteration.
pub fn bench<I, O>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    tally: &Tally,
    name: &str,
    mut setup: impl FnMut() -> I,
    mut routine: impl FnMut(I) -> O,
) {
    group.bench_function(name, |b| {
        b.iter_custom(|iters| tally.run(name, iters, &mut setup, &mut routine))
    });
}

/// What one iteration does, for throughput figures.
#[derive(Debug, Clone, Copy)]
pub enum Work {
    /// Bytes processed per iteration (printed as MB/s, 1 MB = 10^6 bytes).
    Bytes(u64),
    /// Operations per iteration, with their name (printed as ops/s).
    Ops(u64, &'static str),
}

/// Formats a duration with a readable unit.
pub fn fmt_duration(d: Duration) -> String {
    let ns = d.as_secs_f64() * 1e9;
    if ns >= 1e9 {
        format!("{:.3} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn fmt_rate(work: Work, d: Duration) -> String {
    let secs = d.as_secs_f64();
    match work {
        Work::Bytes(b) => format!("{:.0} MB/s", b as f64 / secs / 1e6),
        Work::Ops(n, what) => {
            let rate = n as f64 / secs;
            if rate >= 1e6 {
                format!("{:.2} M {what}/s", rate / 1e6)
            } else if rate >= 1e3 {
                format!("{:.1} k {what}/s", rate / 1e3)
            } else {
                format!("{rate:.1} {what}/s")
            }
        }
    }
}

fn fmt_ratio(r: f64) -> String {
    if r >= 10.0 {
        format!("{r:.0}x")
    } else if r >= 0.1 {
        format!("{r:.2}x")
    } else {
        format!("{r:.3}x")
    }
}

/// Prints the median time and rate of every contender in `order` that ran,
/// then one ratio line per barn contender: `Nx other` means barn's rate is
/// N times other's (N > 1: barn is faster). `samples` is the group's
/// criterion sample size.
pub fn report(
    group: &str,
    work: Work,
    tally: &Tally,
    samples: usize,
    barn: &[&str],
    others: &[&str],
) {
    let median = |name: &str| tally.median(name, samples);
    let what = match work {
        Work::Bytes(b) => format!("{:.1} MB", b as f64 / 1e6),
        Work::Ops(n, what) => format!("{n} {what}"),
    };
    println!();
    println!("== {group}: median of the last {samples} criterion samples, {what} per iteration ==");
    for name in barn.iter().chain(others) {
        if let Some(d) = median(name) {
            println!(
                "  {:<40} {:>12}  {:>20}",
                name,
                fmt_duration(d),
                fmt_rate(work, d)
            );
        }
    }
    for b in barn {
        let Some(tb) = median(b) else { continue };
        let ratios: Vec<String> = others
            .iter()
            .filter_map(|o| {
                let to = median(o)?;
                Some(format!(
                    "{} {o}",
                    fmt_ratio(to.as_secs_f64() / tb.as_secs_f64())
                ))
            })
            .collect();
        println!(
            "RATIO {group}: {b} {} = {}",
            fmt_rate(work, tb),
            if ratios.is_empty() {
                "(no other contender ran)".to_string()
            } else {
                ratios.join(", ")
            }
        );
    }
    println!();
}
