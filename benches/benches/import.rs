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
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use barn_benches::{DID, generate_repo_of};
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
            let t = Instant::now();
            let report = rt
                .block_on(import_file(&store, &path, key.clone(), DID))
                .expect("import");
            let took = t.elapsed();
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
                "RATIO import ({order} order, {} records): barn {:.1} k records/s = {:.2}x the 250 k/s goal; {mbs:.1} MB/s = {:.3}x baseline sha256 1 core ({sha:.0} MB/s)",
                report.records,
                rate / 1e3,
                rate / 250e3,
                mbs / sha
            );
            drop(store);
        }
    }
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
