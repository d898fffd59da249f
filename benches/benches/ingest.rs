//! Ingest: `#commit` frames through decode + verify + apply with group
//! commit, the way barn runs them live, on generated realistic repos and
//! no network.
//!
//! 1. **Stages, one core each**: the same frames through each stage alone
//!    (decode; verify = hashes + signature + inversion; store = the group
//!    commit batches written with fsync), to show where the time goes.
//! 2. **End to end, producer faster than barn**: a `barn_mirror::Mirror`
//!    over a real store on disk, fed from the frames file as fast as it
//!    takes them (`Mirror::track_host_source`). Commits/s from the first
//!    frame to the durable notice of the last; resident memory sampled
//!    all along; afterwards every account's head is checked against the
//!    generator's and every commit must have been applied.
//! 3. **Latency at a fixed rate**: frames handed over at 10,000/s; for
//!    each, the time from hand-over to the durable notice that covers it.
//! 4. **The floor**: what the design costs before any of barn's own code
//!    runs. The signature check, SHA-256 of every block, and fjall alone
//!    (barn's keyspaces and options, the same keys, values raw) taking the
//!    writes barn's store makes for the same commits; their CPU a commit,
//!    added up, bounds the commits/s any mirror built this way reaches on
//!    this machine.
//!
//! Baseline in the same run: K-256 signature checks alone, on every core,
//! with the key parsed once (the floor under any verifying mirror).
//!
//! Settings (environment): `BARN_INGEST_ACCOUNTS` (500),
//! `BARN_INGEST_BASE_RECORDS` (10000), `BARN_INGEST_COMMITS` (200000),
//! `BARN_INGEST_RATE` (10000), `BARN_INGEST_LATENCY_COMMITS` (60000),
//! `BARN_INGEST_PARTS` (`all`, or a comma list of `stages`, `floor`,
//! `e2e`, `latency`).
//! Frames are generated once per setting by a child process into
//! `target/tmp/` and reused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use barn_benches::firehose::{FinalHead, Start, StreamSpec, generate, read_frame, start};
use barn_benches::{BareFjall, process_cpu, store_key, thread_cpu, wait_quiet};
use barn_firehose::{Event, decode_frame};
use barn_identity::{Identity, Resolver, ResolverConfig};
use barn_mirror::verify::{CommitInput, prepare_commit};
use barn_mirror::{Metrics, Mirror, MirrorConfig};
use barn_repo::crypto::PublicKey;
use barn_store::{Batch, CommitEntry, RepoState, Source, Store, now_ms};
use bytes::Bytes;

// The allocator the barn binary uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const HOST: &str = "http://pds.bench.invalid";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if let Ok(path) = std::env::var("BARN_INGEST_GENERATE") {
        let spec = spec();
        let t = Instant::now();
        let s = start(&spec);
        let tmp = PathBuf::from(format!("{path}.tmp"));
        let mut out = BufWriter::new(File::create(&tmp).expect("create frames file"));
        let heads = generate(&spec, &s, &mut out).expect("write frames");
        out.flush().expect("flush frames");
        drop(out);
        let mut h = BufWriter::new(File::create(format!("{path}.heads")).expect("heads file"));
        for head in heads {
            writeln!(h, "{} {} {}", head.did, head.cid, head.rev).expect("write heads");
        }
        h.flush().expect("flush heads");
        std::fs::rename(&tmp, &path).expect("rename frames file");
        eprintln!(
            "generated {} commits in {:.1} s",
            spec.commits,
            t.elapsed().as_secs_f64()
        );
        return;
    }
    // `cargo bench -- <filter>`: run only when the filter matches "ingest".
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if filter.iter().any(|f| !"ingest".contains(f.as_str())) {
        return;
    }

    let spec = spec();
    let frames_path = ensure_frames(&spec);
    let heads = read_heads(&frames_path);
    let st = start(&spec);
    let keys: HashMap<String, PublicKey> = st
        .accounts
        .iter()
        .map(|g| (g.did.clone(), g.key.public_key()))
        .collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "ingest: {} accounts of {} base records, {} commits ({:.1} MB of frames), {} cores",
        spec.accounts,
        spec.base_records,
        spec.commits,
        std::fs::metadata(&frames_path).map_or(0, |m| m.len()) as f64 / 1e6,
        cores
    );

    let parts = std::env::var("BARN_INGEST_PARTS").unwrap_or_else(|_| "all".into());
    let part = |p: &str| parts == "all" || parts.split(',').any(|x| x == p);
    if part("stages") {
        stages(&spec, &st, &keys, &frames_path);
    }
    if part("floor") {
        floor(&spec, &st, &keys, &frames_path, cores);
    }
    if part("e2e") {
        let baseline = signature_baseline(&st, cores);
        println!(
            "baseline: K-256 signature checks alone on {cores} cores: {:.1} k/s",
            baseline / 1e3
        );
        let rate = end_to_end(&spec, &st, &frames_path, &heads);
        println!(
            "RATIO ingest: barn end to end {:.1} k commits/s = {:.2}x baseline signature checks alone on {cores} cores",
            rate / 1e3,
            rate / baseline
        );
    }
    if part("latency") {
        latency(&spec, &st, &frames_path);
    }
}

fn spec() -> StreamSpec {
    StreamSpec {
        accounts: env_usize("BARN_INGEST_ACCOUNTS", 500),
        base_records: env_usize("BARN_INGEST_BASE_RECORDS", 10_000),
        commits: env_usize("BARN_INGEST_COMMITS", 200_000),
        seed: 42,
    }
}

/// The frames file for `spec`, generated by a child process if missing
/// (so the generator's memory never counts in this process's).
fn ensure_frames(spec: &StreamSpec) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(spec.file_name());
    if path.exists() && Path::new(&format!("{}.heads", path.display())).exists() {
        return path;
    }
    eprintln!("generating {} (once) ...", path.display());
    let exe = std::env::current_exe().expect("current exe");
    let status = std::process::Command::new(exe)
        .env("BARN_INGEST_GENERATE", &path)
        .status()
        .expect("run the generator");
    assert!(status.success(), "generator failed");
    path
}

fn read_heads(path: &Path) -> Vec<FinalHead> {
    let text = std::fs::read_to_string(format!("{}.heads", path.display())).expect("heads");
    text.lines()
        .map(|l| {
            let mut it = l.split(' ');
            FinalHead {
                did: it.next().expect("did").to_owned(),
                cid: it.next().expect("cid").parse().expect("cid"),
                rev: it.next().expect("rev").to_owned(),
            }
        })
        .collect()
}

fn frames(path: &Path) -> impl Iterator<Item = Vec<u8>> {
    let mut r = BufReader::with_capacity(1 << 20, File::open(path).expect("frames file"));
    std::iter::from_fn(move || read_frame(&mut r).expect("read frame"))
}

fn signature_baseline(st: &Start, cores: usize) -> f64 {
    // Real commits: the genesis commits, each checked with its key.
    let commits: Vec<(barn_repo::commit::Commit, PublicKey)> = st
        .accounts
        .iter()
        .take(64)
        .map(|g| {
            (
                barn_repo::commit::Commit::decode(&g.bytes).expect("genesis"),
                g.key.public_key(),
            )
        })
        .collect();
    let commits = Arc::new(commits);
    let run = Duration::from_secs(2);
    let done = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..cores {
            let commits = commits.clone();
            let done = &done;
            s.spawn(move || {
                let t = Instant::now();
                let mut n = 0u64;
                while t.elapsed() < run {
                    for (c, k) in commits.iter() {
                        c.verify_signature(k).expect("valid signature");
                        n += 1;
                    }
                }
                done.fetch_add(n, Ordering::Relaxed);
            });
        }
    });
    done.load(Ordering::Relaxed) as f64 / run.as_secs_f64()
}

/// A store holding every account at its genesis commit.
fn seeded_store(dir: &Path, st: &Start) -> Arc<Store> {
    let store = Store::open(dir, &barn_benches::store_options()).expect("open store");
    let mut batch = Batch::new();
    for (cid, bytes) in st.blocks.iter() {
        batch.put_block(*cid, bytes.clone());
    }
    for g in &st.accounts {
        batch.put_block(g.cid, g.bytes.clone());
        batch.put_revision(
            &g.did,
            CommitEntry {
                rev: g.rev.clone(),
                cid: g.cid,
                data: st.data,
                since: None,
                seen_at_ms: now_ms(),
                source: Source::Reconcile,
                seq: None,
                host: HOST.into(),
                ops: Vec::new(),
                reason: Some("bench seed".into()),
                chunked: None,
            },
        );
        let mut state = RepoState::new(HOST);
        state.advance(g.cid, g.rev.clone(), st.data);
        batch.set_repo(&g.did, state);
    }
    store.write(batch).expect("seed store");
    Arc::new(store)
}

fn stages(spec: &StreamSpec, st: &Start, keys: &HashMap<String, PublicKey>, path: &Path) {
    // In chunks of 1000, as the live path works, so that memory is reused
    // and the stages are timed in their steady state.
    let n = spec.commits.min(50_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = seeded_store(dir.path(), st);
    let mut states: HashMap<String, RepoState> = HashMap::new();
    let (mut decode, mut verify, mut write) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut bytes = 0usize;
    let mut source = frames(path).take(n);
    let now = now_ms() * 1000;
    loop {
        let raw: Vec<Vec<u8>> = source.by_ref().take(1000).collect();
        if raw.is_empty() {
            break;
        }
        bytes += raw.iter().map(Vec::len).sum::<usize>();

        let t = Instant::now();
        let decoded: Vec<barn_firehose::Frame> = raw
            .iter()
            .map(|f| decode_frame(f).expect("decode"))
            .collect();
        decode += t.elapsed();
        drop(raw);
        let inputs: Vec<(i64, CommitInput)> = decoded
            .iter()
            .map(|f| match &f.event {
                Event::Commit(ev) => (ev.seq, CommitInput::from(ev)),
                other => panic!("unexpected {}", other.label()),
            })
            .collect();
        drop(decoded);

        let t = Instant::now();
        let verified: Vec<_> = inputs
            .iter()
            .map(|(_, i)| prepare_commit(i, &keys[&i.repo], now).expect("valid commit"))
            .collect();
        verify += t.elapsed();

        // The store's share: the batch the mirror would write (blocks,
        // record index, revision, repo state, cursor), one fsync.
        let t = Instant::now();
        let mut batch = Batch::new();
        for ((seq, i), v) in inputs.iter().zip(&verified) {
            for (cid, data) in v.blocks.iter() {
                batch.put_block(*cid, data.clone());
            }
            for op in &i.ops {
                batch.set_record(&i.repo, &op.path, op.cid);
            }
            batch.put_revision(
                &i.repo,
                CommitEntry {
                    rev: i.rev.clone(),
                    cid: i.commit,
                    data: v.commit.data,
                    since: i.since.clone(),
                    seen_at_ms: now_ms(),
                    source: Source::Firehose,
                    seq: Some(*seq),
                    host: HOST.into(),
                    ops: i.ops.clone(),
                    reason: None,
                    chunked: None,
                },
            );
            let state = states
                .entry(i.repo.clone())
                .or_insert_with(|| RepoState::new(HOST));
            state.advance(i.commit, i.rev.clone(), v.commit.data);
            batch.set_repo(&i.repo, state.clone());
        }
        batch.set_host(
            HOST,
            barn_store::HostState {
                cursor: inputs.last().map(|(seq, _)| *seq),
                last_event_ms: now_ms(),
                ..Default::default()
            },
        );
        store.write(batch).expect("write");
        write += t.elapsed();
    }

    let per = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    let total = per(decode) + per(verify) + per(write);
    println!();
    println!(
        "== ingest stages: {n} commits ({:.0} bytes each on average), one core each ==",
        bytes as f64 / n as f64
    );
    for (name, d) in [
        ("decode frame", decode),
        ("verify (hashes, signature, inversion)", verify),
        ("store (batches of 1000, fsync each)", write),
    ] {
        println!(
            "  {:<40} {:>7.1} µs/commit  {:>7.1} k commits/s  {:>4.0}% of the work",
            name,
            per(d),
            n as f64 / d.as_secs_f64() / 1e3,
            per(d) / total * 100.0
        );
    }
    println!(
        "  {:<40} {:>7.1} µs/commit  -> at most {:.1} k commits/s on 2 cores if perfectly spread",
        "sum",
        total,
        2e6 / total / 1e3
    );
}

/// What barn's store writes for one commit, values raw (no zstd): every
/// block under its CID, the record index changes, the revision, its event
/// and the repo state. The revision and state values hold the fields a
/// firehose commit fills in barn's `CommitEntry` and `RepoState`, laid
/// end to end (not barn's encoding: about the same bytes).
struct Writes {
    commit: Vec<u8>,
    blocks: Vec<(Vec<u8>, Bytes)>,
    records: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    revision: (Vec<u8>, Vec<u8>),
    event: Vec<u8>,
    repo: (Vec<u8>, Vec<u8>),
}

fn writes_of(i: &CommitInput, v: &barn_mirror::verify::Verified, seq: i64) -> Writes {
    let commit = i.commit.to_bytes();
    let data = v.commit.data.to_bytes();
    let mut revision = [
        commit.as_slice(),
        &data,
        i.rev.as_bytes(),
        i.since.as_deref().unwrap_or("").as_bytes(),
        &seq.to_be_bytes(),
        &now_ms().to_be_bytes(),
        HOST.as_bytes(),
    ]
    .concat();
    let mut records = Vec::with_capacity(i.ops.len());
    for op in &i.ops {
        revision.extend_from_slice(op.path.as_bytes());
        for cid in [op.cid, op.prev].into_iter().flatten() {
            revision.extend_from_slice(&cid.to_bytes());
        }
        records.push((store_key(&i.repo, &op.path), op.cid.map(|c| c.to_bytes())));
    }
    Writes {
        commit: commit.clone(),
        blocks: v
            .blocks
            .iter()
            .map(|(cid, data)| (cid.to_bytes(), data.clone()))
            .collect(),
        records,
        revision: (store_key(&i.repo, &i.rev), revision),
        event: [i.repo.as_bytes(), i.rev.as_bytes()].concat(),
        repo: (
            i.repo.as_bytes().to_vec(),
            [commit.as_slice(), &data, i.rev.as_bytes(), HOST.as_bytes()].concat(),
        ),
    }
}

/// How [`fjall_alone`] lays a commit's blocks out.
#[derive(Clone, Copy)]
enum Layout {
    /// barn's: every block a value under its CID.
    Blocks,
    /// What-if: the same bytes, all of a commit's blocks in one value
    /// under the commit's CID (fewer inserts, the same bytes).
    OneValue,
    /// What-if: records and the commit only, MST nodes not stored (they
    /// can be rebuilt from the record index; fewer inserts and bytes).
    NoNodes,
}

/// What fjall alone cost for one layout.
struct FjallCost {
    /// From the first batch to the last one durable.
    durable: Duration,
    /// Process CPU over that time.
    cpu: Duration,
    /// Of which the writing thread.
    writer: Duration,
    /// Process CPU until fjall was quiet (flushes and compactions done).
    quiet_cpu: Duration,
}

/// fjall alone taking `commits`' writes: barn's keyspaces and options, one
/// writer, batches of 1000 commits each made durable with one fsync, as
/// the mirror's group commits are.
fn fjall_alone(commits: &[Writes], layout: Layout) -> FjallCost {
    use fjall::PersistMode;

    let dir = tempfile::tempdir().expect("tempdir");
    let bare = BareFjall::open(dir.path()).expect("open fjall");
    let (db, blocks) = (&bare.db, &bare.blocks);
    let (records, revisions, events, repos, hosts) = (
        bare.keyspace("records").expect("keyspace"),
        bare.keyspace("commits").expect("keyspace"),
        bare.keyspace("events").expect("keyspace"),
        bare.keyspace("repos").expect("keyspace"),
        bare.keyspace("hosts").expect("keyspace"),
    );

    let cpu0 = process_cpu();
    let writer0 = thread_cpu();
    let t = Instant::now();
    let mut seq = 0u64;
    for chunk in commits.chunks(1000) {
        let mut wb = db.batch().durability(Some(PersistMode::SyncData));
        match layout {
            Layout::Blocks | Layout::NoNodes => {
                // In key order, as barn's store sorts them: the memtable
                // takes sorted keys faster.
                let mut new: Vec<&(Vec<u8>, Bytes)> = chunk
                    .iter()
                    .flat_map(|w| &w.blocks)
                    .filter(|(_, data)| {
                        !matches!(layout, Layout::NoNodes) || !barn_repo::mst::looks_like_node(data)
                    })
                    .collect();
                new.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                new.dedup_by(|a, b| a.0 == b.0);
                for (key, value) in new {
                    wb.insert(blocks, key.as_slice(), value.as_ref());
                }
            }
            Layout::OneValue => {
                for w in chunk {
                    let value: Vec<u8> = w
                        .blocks
                        .iter()
                        .flat_map(|(_, d)| d.iter().copied())
                        .collect();
                    wb.insert(blocks, w.commit.as_slice(), value);
                }
            }
        }
        for w in chunk {
            seq += 1;
            wb.insert(&revisions, w.revision.0.as_slice(), w.revision.1.as_slice());
            wb.insert(&events, seq.to_be_bytes(), w.event.as_slice());
            for (key, cid) in &w.records {
                match cid {
                    Some(cid) => wb.insert(&records, key.as_slice(), cid.as_slice()),
                    None => wb.remove(&records, key.as_slice()),
                }
            }
            wb.insert(&repos, w.repo.0.as_slice(), w.repo.1.as_slice());
        }
        wb.insert(&hosts, HOST, seq.to_be_bytes());
        wb.commit().expect("commit");
    }
    let durable = t.elapsed();
    let cpu = process_cpu() - cpu0;
    let writer = thread_cpu() - writer0;
    let quiet_cpu = wait_quiet(Duration::from_secs(60)) - cpu0;
    FjallCost {
        durable,
        cpu,
        writer,
        quiet_cpu,
    }
}

/// Part 4: the floor under any mirror that verifies every commit and keeps
/// every block in fjall, as barn's design does. Nothing of barn's own
/// pipeline (decode, inversion, encoding, zstd, the host task) is counted,
/// so barn end to end can only be slower than the ceiling printed here.
fn floor(
    spec: &StreamSpec,
    st: &Start,
    keys: &HashMap<String, PublicKey>,
    path: &Path,
    cores: usize,
) {
    // Untimed: every commit verified as barn does, turned into its writes.
    let n = spec.commits;
    let now = now_ms() * 1000;
    let mut commits = Vec::with_capacity(n);
    let mut seq = 0i64;
    for raw in frames(path).take(n) {
        let frame = decode_frame(&raw).expect("decode");
        let Event::Commit(ev) = &frame.event else {
            panic!("unexpected {}", frame.event.label())
        };
        let i = CommitInput::from(ev);
        let v = prepare_commit(&i, &keys[&i.repo], now).expect("valid commit");
        seq += 1;
        commits.push(writes_of(&i, &v, seq));
    }

    let signatures = signature_baseline(st, cores);
    let signature_cpu = cores as f64 / signatures * 1e6;

    let per = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    let t = Instant::now();
    let mut sink = 0u8;
    for w in &commits {
        for (_, data) in &w.blocks {
            sink ^= <sha2::Sha256 as sha2::Digest>::digest(data)[0];
        }
    }
    std::hint::black_box(sink);
    let sha_cpu = per(t.elapsed());

    println!();
    println!("== ingest floor: {n} commits, what the design costs before barn's own code ==");
    println!(
        "  signature checks alone, {cores} cores: {:.1} k/s -> {signature_cpu:.1} µs of CPU a commit",
        signatures / 1e3
    );
    println!("  SHA-256 of every block, 1 core: {sha_cpu:.1} µs a commit");
    println!(
        "  fjall alone (barn's keyspaces and options, values raw, 1000 commits a batch + fsync, one writer):"
    );
    for (name, layout) in [
        ("every block a value (barn's design)", Layout::Blocks),
        ("what-if: a commit's blocks in one value", Layout::OneValue),
        ("what-if: MST nodes not stored", Layout::NoNodes),
    ] {
        let c = fjall_alone(&commits, layout);
        let (cpu, quiet) = (per(c.cpu), per(c.quiet_cpu));
        println!(
            "    {name}: {:.2} s ({:.1} k commits/s); CPU a commit {cpu:.1} µs to the last fsync (writing thread {:.1}, fjall's threads {:.1}), {quiet:.1} µs until quiet",
            c.durable.as_secs_f64(),
            n as f64 / c.durable.as_secs_f64() / 1e3,
            per(c.writer),
            cpu - per(c.writer),
        );
        let sum = signature_cpu + sha_cpu + quiet;
        println!(
            "RATIO ingest_floor: {name}: signature + SHA-256 + fjall alone {sum:.1} µs of CPU a commit = at most {:.1} k commits/s on {cores} cores = {:.2}x the 30 k goal",
            cores as f64 / sum * 1e3,
            cores as f64 / sum * 1e6 / 30_000.0
        );
    }
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

struct Run {
    mirror: Mirror,
    metrics: Metrics,
    store: Arc<Store>,
    _dir: tempfile::TempDir,
}

fn mirror(st: &Start) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = seeded_store(dir.path(), st);
    let resolver = Resolver::new(ResolverConfig {
        plc_url: "http://127.0.0.1:9".into(),
        ..ResolverConfig::default()
    })
    .expect("resolver");
    for g in &st.accounts {
        resolver.prime(Identity {
            did: g.did.clone(),
            signing_key: g.key.public_key(),
            pds: Some(HOST.into()),
            handle: None,
            resolved_at: Instant::now(),
        });
    }
    let metrics = Metrics::new().expect("metrics");
    let defaults = MirrorConfig::default();
    let config = MirrorConfig {
        pipeline_depth: env_usize("BARN_INGEST_DEPTH", defaults.pipeline_depth),
        group_commit_max: env_usize("BARN_INGEST_GROUP_MAX", defaults.group_commit_max),
        ..defaults
    };
    let mirror = Mirror::new(store.clone(), resolver, config, metrics.clone());
    Run {
        mirror,
        metrics,
        store,
        _dir: dir,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn end_to_end(spec: &StreamSpec, st: &Start, path: &Path, heads: &[FinalHead]) -> f64 {
    let rt = runtime();
    let run = mirror(st);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1024);
    let mut durable = run.mirror.subscribe_durable();
    let baseline_rss = rss_bytes();

    // Resident memory, sampled every 10 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let samples = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            let t = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                samples.push((t.elapsed(), rss_bytes()));
                std::thread::sleep(Duration::from_millis(10));
            }
            samples
        })
    };
    let last = spec.commits as i64;
    let t = Instant::now();
    let producer = {
        let path = path.to_owned();
        std::thread::spawn(move || {
            let mut blocked = Duration::ZERO;
            for f in frames(&path) {
                let s = Instant::now();
                if tx.blocking_send(Bytes::from(f)).is_err() {
                    break;
                }
                blocked += s.elapsed();
            }
            blocked
        })
    };
    rt.block_on(async {
        run.mirror.track_host_source(HOST, rx);
        loop {
            match durable.recv().await {
                Ok(d) if d.cursor == Some(last) => break,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("durable notices ended: {e}"),
            }
        }
    });
    let elapsed = t.elapsed();
    let blocked = producer.join().expect("producer");
    stop.store(true, Ordering::Relaxed);
    let samples = samples.join().expect("sampler");
    rt.block_on(run.mirror.shutdown());

    // Everything applied, nothing failed, every head right.
    assert_eq!(
        run.metrics.commits_applied(),
        spec.commits as u64,
        "commits applied"
    );
    assert_eq!(
        run.metrics.hard_verification_failures(),
        0,
        "verification failures"
    );
    for h in heads {
        let state = run.store.repo(&h.did).expect("repo").expect("tracked");
        assert_eq!(state.head, Some(h.cid), "{} head", h.did);
        assert_eq!(state.rev.as_deref(), Some(h.rev.as_str()), "{} rev", h.did);
    }
    let rate = spec.commits as f64 / elapsed.as_secs_f64();
    let half = elapsed / 2;
    let peak = |first: bool| {
        samples
            .iter()
            .filter(|(at, _)| (*at < half) == first)
            .map(|(_, r)| *r)
            .max()
            .unwrap_or(0)
    };
    let mb = |b: u64| b as f64 / (1 << 20) as f64;
    println!();
    println!(
        "== ingest end to end: {} commits, producer faster than barn ==",
        spec.commits
    );
    println!(
        "  {:.2} s, {:.1} k commits/s; all {} heads match the generator's, 0 verification failures",
        elapsed.as_secs_f64(),
        rate / 1e3,
        heads.len()
    );
    println!(
        "  producer blocked {:.0}% of the run (waiting for barn to take frames)",
        blocked.as_secs_f64() / elapsed.as_secs_f64() * 100.0
    );
    println!(
        "  resident memory: {:.0} MiB before, peak {:.0} MiB in the first half, {:.0} MiB in the second (queue budget {} MiB)",
        mb(baseline_rss),
        mb(peak(true)),
        mb(peak(false)),
        MirrorConfig::default().queue_bytes >> 20
    );
    rate
}

fn latency(spec: &StreamSpec, st: &Start, path: &Path) {
    let rate = env_usize("BARN_INGEST_RATE", 10_000) as f64;
    let n = env_usize("BARN_INGEST_LATENCY_COMMITS", 60_000).min(spec.commits);
    let rt = runtime();
    let run = mirror(st);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1 << 16);
    let mut durable = run.mirror.subscribe_durable();
    // Load the frames first so that reading the file does not pace them.
    let raw: Vec<Bytes> = frames(path).take(n).map(Bytes::from).collect();
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..=n).map(|_| AtomicU64::new(0)).collect());
    let t0 = Instant::now();
    let producer = {
        let sent = sent.clone();
        std::thread::spawn(move || {
            for (i, f) in raw.into_iter().enumerate() {
                let at = Duration::from_secs_f64(i as f64 / rate);
                let now = t0.elapsed();
                if at > now {
                    std::thread::sleep(at - now);
                }
                sent[i + 1].store(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
                if tx.blocking_send(f).is_err() {
                    break;
                }
            }
        })
    };
    let mut lat: Vec<Duration> = Vec::with_capacity(n);
    rt.block_on(async {
        run.mirror.track_host_source(HOST, rx);
        let mut covered = 0i64;
        while covered < n as i64 {
            match durable.recv().await {
                Ok(d) => {
                    let now = t0.elapsed().as_nanos() as u64;
                    let upto = d.cursor.unwrap_or(0).min(n as i64);
                    for seq in covered + 1..=upto {
                        let s = sent[seq as usize].load(Ordering::Relaxed);
                        lat.push(Duration::from_nanos(now.saturating_sub(s)));
                    }
                    covered = covered.max(upto);
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(k)) => {
                    panic!("missed {k} durable notices")
                }
                Err(e) => panic!("durable notices ended: {e}"),
            }
        }
    });
    let took = t0.elapsed();
    producer.join().expect("producer");
    rt.block_on(run.mirror.shutdown());
    assert_eq!(run.metrics.commits_applied(), n as u64);
    lat.sort();
    let q = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!();
    println!(
        "== ingest latency: {n} commits handed over at {:.0}/s (achieved {:.0}/s), frame to durable ==",
        rate,
        n as f64 / took.as_secs_f64()
    );
    println!(
        "  p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        q(0.5).as_secs_f64() * 1e3,
        q(0.9).as_secs_f64() * 1e3,
        q(0.99).as_secs_f64() * 1e3,
        q(0.999).as_secs_f64() * 1e3,
        lat[lat.len() - 1].as_secs_f64() * 1e3
    );
    println!(
        "RATIO ingest_latency: barn p99 {:.2} ms = {:.3}x the 100 ms goal",
        q(0.99).as_secs_f64() * 1e3,
        q(0.99).as_secs_f64() * 1e3 / 100.0
    );
}
