//! Import benchmark (issue W1-4): a whole-repository CAR imported into
//! barn's store through `barn_mirror::import_car` (the path of every
//! backfill, resync and reconcile), from a file, no network. Prints
//! records/s, MB/s and peak resident memory per input, with a baseline
//! measured in the same run: SHA-256 over the same bytes on one core.
//!
//! Inputs (generated once by a child process, so that generating never
//! counts in this process's memory, and cached under the target dir): a
//! signed repository of the `car_load` record mix at ~100k and ~1M
//! records, each written in two orders: the MST walk order, and the order
//! of the reference PDS's `getRepo` (commit first, then blocks by CID
//! descending: random with respect to the tree).
//!
//! `BARN_IMPORT_SIZES` (default `60000000,600000000`): target CAR sizes in
//! bytes. `BARN_IMPORT_ORDERS` (default `pds,walk`).
//!
//! `BARN_IMPORT_FLOOR=1` adds, after each import, the floor: what the
//! design costs a record before any of barn's own code runs. SHA-256 of
//! every block, the store's encoding of every block (zstd with the
//! dictionary for records), and fjall alone (opened with barn's options)
//! ingesting those values and the record index as the import does; their
//! CPU a record, added up, bounds the records/s any import built this way
//! reaches on this machine. Printed beside the CPU barn's import used.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use barn_benches::{BareFjall, DID, generate_repo_of, process_cpu, store_key, wait_quiet};
use barn_mirror::{ImportLimits, ImportReport, ImportRequest, import_car};
use barn_repo::crypto::{KeyType, PrivateKey, PublicKey};
use barn_store::{RepoState, Source, Store};
use sha2::{Digest, Sha256};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SEED: u64 = 11;
/// The warm-up repo: another account, ~10k records.
const WARMUP: u64 = 6_000_000;
const WARMUP_SEED: u64 = 12;
const WARMUP_DID: &str = "did:plc:warmupwarmupwarmupwarmu";

fn main() {
    if let Ok(spec) = std::env::var("BARN_IMPORT_GENERATE") {
        generate(&spec);
        return;
    }
    let sizes: Vec<u64> = std::env::var("BARN_IMPORT_SIZES")
        .unwrap_or_else(|_| "60000000,600000000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let orders: Vec<String> = std::env::var("BARN_IMPORT_ORDERS")
        .unwrap_or_else(|_| "pds,walk".into())
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let key = PrivateKey::from_seed(KeyType::K256, SEED).public_key();
    println!("== import: CAR file → barn_mirror::import_car → store (default options) ==");
    for size in &sizes {
        for order in &orders {
            let path = ensure_car(*size, order);
            let bytes = std::fs::metadata(&path).expect("car").len();
            let dir = tempfile::tempdir().expect("tempdir");
            let store =
                Arc::new(Store::open(dir.path(), &barn_benches::store_options()).expect("store"));
            // A store that has imported anything has its record dictionary
            // (trained once, from its first 4 MiB of records): import
            // another account first, untimed, as a backfill would have.
            let warm = ensure_car(WARMUP, "walk");
            let warm_key = PrivateKey::from_seed(KeyType::K256, WARMUP_SEED).public_key();
            rt.block_on(import_file(&store, &warm, warm_key, WARMUP_DID))
                .expect("warm-up import");
            store.wait_for_dictionary().expect("dictionary");
            let before = rss_bytes();
            let peak = Arc::new(AtomicU64::new(before));
            let stop = Arc::new(AtomicBool::new(false));
            let sampler = {
                let (peak, stop) = (peak.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        peak.fetch_max(rss_bytes(), Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(10));
                    }
                })
            };
            let cpu0 = process_cpu();
            let t = Instant::now();
            let report = rt
                .block_on(import_file(&store, &path, key.clone(), DID))
                .expect("import");
            let took = t.elapsed();
            let cpu = process_cpu() - cpu0;
            stop.store(true, Ordering::Relaxed);
            sampler.join().expect("sampler");
            // The import must have stored the whole repo.
            assert_eq!(report.label, "imported");
            assert_eq!(report.ops as u64, report.records);
            let stored = store.records_iter(DID).count() as u64;
            assert_eq!(stored, report.records, "record index");
            let peak = peak.load(Ordering::Relaxed);
            let sha = sha_baseline(&path);
            let rate = report.records as f64 / took.as_secs_f64();
            let mbs = bytes as f64 / took.as_secs_f64() / 1e6;
            println!(
                "  {order:>4} order, {:>9} records, CAR {:>6.1} MB: {:>7.2} s, {:>7.1} k records/s, {:>6.1} MB/s; RSS before {:.0} MiB, peak {:.0} MiB (+{:.0} MiB, {:.2} bytes per CAR byte)",
                report.records,
                bytes as f64 / 1e6,
                took.as_secs_f64(),
                rate / 1e3,
                mbs,
                before as f64 / 1048576.0,
                peak as f64 / 1048576.0,
                (peak.saturating_sub(before)) as f64 / 1048576.0,
                peak.saturating_sub(before) as f64 / bytes as f64,
            );
            println!(
                "       spill (read, hash, check, write blocks): {:.2} s; verify tree + record index + revision: {:.2} s",
                report.spill_time.as_secs_f64(),
                report.finish_time.as_secs_f64()
            );
            println!(
                "       CPU: {:.1} µs a record (the process, during the import)",
                cpu.as_secs_f64() * 1e6 / report.records as f64
            );
            println!(
                "RATIO import ({order} order, {} records): barn {:.1} k records/s = {:.2}x the 250 k/s goal; {mbs:.1} MB/s = {:.3}x baseline sha256 1 core ({sha:.0} MB/s)",
                report.records,
                rate / 1e3,
                rate / 250e3,
                mbs / sha
            );
            if std::env::var_os("BARN_IMPORT_FLOOR").is_some() {
                floor(&store, &path, report.records, cpu);
            }
            drop(store);
        }
    }
}

/// The floor under any import that hash-checks every block, stores each
/// under its CID compressed as barn-store does, and writes the record
/// index: those three alone, each measured on its own, CPU a record.
/// Nothing of barn's own import (CAR parsing, DAG-CBOR checks, the tree
/// walk, the merge, the threads between them) is counted.
fn floor(store: &Store, path: &Path, records: u64, barn_cpu: Duration) {
    use barn_repo::car::{CarLimits, read_car};
    // Untimed: the CAR's blocks, and the record index the import built.
    let bytes = bytes::Bytes::from(std::fs::read(path).expect("read car"));
    let limits = CarLimits {
        max_total_bytes: u64::MAX,
        ..CarLimits::default()
    };
    let car = read_car(bytes, &limits).expect("car");
    let blocks: Vec<(barn_repo::Cid, bytes::Bytes)> =
        car.blocks.iter().map(|(c, b)| (*c, b.clone())).collect();
    drop(car);
    let index: Vec<(Vec<u8>, Vec<u8>)> = store
        .records_iter(DID)
        .map(|r| {
            let (path, cid) = r.expect("record index");
            (store_key(DID, &path), cid.to_bytes())
        })
        .collect();
    let per = |d: Duration| d.as_secs_f64() * 1e6 / records as f64;

    let t = Instant::now();
    let mut sink = 0u8;
    for (_, data) in &blocks {
        sink ^= Sha256::digest(data)[0];
    }
    std::hint::black_box(sink);
    let sha = per(t.elapsed());

    // The store's own encoding: zstd with its dictionary for records, MST
    // nodes and the commit as they are. One core.
    let t = Instant::now();
    let encoded: Vec<(Vec<u8>, Vec<u8>, usize)> = blocks
        .iter()
        .map(|(cid, data)| (cid.to_bytes(), store.encode_block_value(data), data.len()))
        .collect();
    let encode = per(t.elapsed());
    drop(blocks);

    // fjall alone: the values ingested in batches of the import's spill
    // size, each sorted, waiting while level 0 is as full as barn lets
    // it get; then the record index, in key order, ingested too.
    let dir = tempfile::tempdir().expect("tempdir");
    let bare = BareFjall::open(dir.path()).expect("open fjall");
    let records_ks = bare.keyspace("records").expect("keyspace");
    let spill = ImportLimits::default().spill_bytes;
    let cpu0 = process_cpu();
    let t = Instant::now();
    let mut rest = encoded.into_iter().peekable();
    while rest.peek().is_some() {
        let mut batch = Vec::new();
        let mut raw = 0usize;
        while raw < spill {
            let Some((k, v, n)) = rest.next() else { break };
            raw += n;
            batch.push((k, v));
        }
        batch.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        batch.dedup_by(|a, b| a.0 == b.0);
        while bare.blocks.l0_table_count() >= barn_store::INGEST_LEVEL0_LIMIT {
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut ingestion = bare.blocks.start_ingestion().expect("ingestion");
        for (k, v) in batch {
            ingestion.write(k, v).expect("ingest");
        }
        ingestion.finish().expect("finish ingestion");
    }
    let mut ingestion = records_ks.start_ingestion().expect("ingestion");
    for (k, v) in index {
        ingestion.write(k, v).expect("ingest");
    }
    ingestion.finish().expect("finish ingestion");
    let written = t.elapsed();
    let fjall = per(wait_quiet(Duration::from_secs(60)) - cpu0);
    let sum = sha + encode + fjall;
    let barn = per(barn_cpu);
    println!(
        "       floor: SHA-256 {sha:.2} + the store's encoding {encode:.2} + fjall alone {fjall:.2} (written in {:.2} s, until quiet) = {sum:.2} µs of CPU a record; barn's import used {barn:.2}",
        written.as_secs_f64()
    );
    println!(
        "RATIO import_floor: SHA-256 + encoding + fjall alone {sum:.2} µs of CPU a record = at most {:.1} k records/s on 2 cores = {:.2}x the 250 k/s goal; barn's import used {:.2}x the floor's CPU",
        2e3 / sum,
        2e6 / sum / 250e3,
        barn / sum
    );
}

/// Imports the CAR at `path` as a first import of `did`.
async fn import_file(
    store: &Arc<Store>,
    path: &Path,
    key: PublicKey,
    did: &str,
) -> barn_mirror::Result<ImportReport> {
    let request = ImportRequest {
        did: did.to_owned(),
        key,
        state: RepoState::new("https://pds.bench"),
        source: Source::Resync,
        reason: "bench".into(),
    };
    let file = tokio::fs::File::open(path).await.expect("open car");
    let reader = tokio::io::BufReader::with_capacity(1 << 20, file);
    let mut limits = ImportLimits {
        max_bytes: 4 << 30,
        ..ImportLimits::default()
    };
    // For experiments: `BARN_IMPORT_NODE_CACHE_MIB` (`node_cache_bytes`)
    // and `BARN_IMPORT_SPILL_MIB` (`spill_bytes`).
    let mib = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
    };
    if let Some(n) = mib("BARN_IMPORT_NODE_CACHE_MIB") {
        limits.node_cache_bytes = n << 20;
    }
    if let Some(n) = mib("BARN_IMPORT_SPILL_MIB") {
        limits.spill_bytes = n << 20;
    }
    import_car(store.clone(), request, reader, limits).await
}

/// SHA-256 of the file's bytes on one core, MB/s, read in 1 MiB chunks
/// (from the page cache: the import just read it).
fn sha_baseline(path: &Path) -> f64 {
    use std::io::Read;
    let mut f = std::fs::File::open(path).expect("open car");
    let mut buf = vec![0u8; 1 << 20];
    let mut h = Sha256::new();
    let mut n = 0usize;
    let t = Instant::now();
    loop {
        let got = f.read(&mut buf).expect("read car");
        if got == 0 {
            break;
        }
        h.update(&buf[..got]);
        n += got;
    }
    let _ = h.finalize();
    n as f64 / t.elapsed().as_secs_f64() / 1e6
}

fn seed_for(size: u64) -> u64 {
    if size == WARMUP { WARMUP_SEED } else { SEED }
}

fn car_path(size: u64, order: &str) -> PathBuf {
    let seed = seed_for(size);
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("import-{seed}-{size}-{order}.car"))
}

/// The CAR for `size` and `order`, generated by a child process if missing.
fn ensure_car(size: u64, order: &str) -> PathBuf {
    let path = car_path(size, order);
    if path.exists() {
        return path;
    }
    eprintln!("generating {} (once) ...", path.display());
    let exe = std::env::current_exe().expect("current exe");
    let status = std::process::Command::new(exe)
        .env("BARN_IMPORT_GENERATE", format!("{size}"))
        .status()
        .expect("run the generator");
    assert!(status.success(), "generator failed");
    path
}

/// Child process: writes both orders of the repo of `spec` (target bytes).
fn generate(spec: &str) {
    let size: u64 = spec.parse().expect("size");
    let t = Instant::now();
    let did = if size == WARMUP { WARMUP_DID } else { DID };
    let repo = generate_repo_of(did, size, seed_for(size));
    eprintln!(
        "generated {} records in {:.1} s",
        repo.records,
        t.elapsed().as_secs_f64()
    );
    write_atomic(&car_path(size, "walk"), &repo.car);
    // The reference PDS's order: its blocks by (rev, CID) descending; one
    // rev here, so the commit's group by CID descending.
    let mut blocks: Vec<(cid::Cid, bytes::Bytes)> = repo
        .blocks
        .iter()
        .filter(|(c, _)| **c != repo.commit)
        .map(|(c, b)| (*c, b.clone()))
        .collect();
    blocks.sort_by_key(|b| std::cmp::Reverse(b.0.to_bytes()));
    let commit = repo.blocks.get(&repo.commit).expect("commit block").clone();
    let car = barn_repo::car::write_car(
        &[repo.commit],
        std::iter::once((&repo.commit, &commit[..])).chain(blocks.iter().map(|(c, b)| (c, &b[..]))),
    );
    write_atomic(&car_path(size, "pds"), &car);
}

fn write_atomic(path: &Path, data: &[u8]) {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).expect("create");
    f.write_all(data).expect("write");
    f.sync_all().expect("sync");
    std::fs::rename(&tmp, path).expect("rename");
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}
