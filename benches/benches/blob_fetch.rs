//! Blob fetch benchmark (issue W1-5): blobs queued in barn's store are
//! fetched by `barn_blobs::BlobWorkers` from a local HTTP source (the
//! testkit's fake PDS on 127.0.0.1) into a local-directory object store.
//!
//! Throughput: blobs/s and MB/s for many small blobs and for a few large
//! ones, against baselines measured in the same run on the same blobs:
//! (1) the source alone: the same `getBlob` requests with the same
//! concurrency, bodies read and dropped; (2) the disk alone: the same
//! bytes written to files (write, fsync, rename, as the local object store
//! does). barn runs with `per_host` = `concurrency` = 16 (the baseline's;
//! `BARN_BLOB_CONC` changes both). The source is in this process, on the
//! same two cores.
//!
//! Latency: with an idle queue, one blob referenced at a time (a commit
//! with one ref, then the wake-up `barn serve` sends after each durable
//! group commit, and without it: the 200 ms poll only), from the commit's
//! write to the blob stored; p50 / p99.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use barn_blobs::{BlobConfig, BlobStorage, BlobWorkers, Metrics, StorageConfig};
use barn_store::{Batch, BlobHint, BlobStatus, RepoState, Store, StoreOptions};
use barn_testkit::FakePds;
use bytes::Bytes;
use cid::Cid;
use futures::StreamExt;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DID: &str = "did:plc:benchbenchbenchbenchbenc";

fn blob(n: usize, seed: u64) -> Bytes {
    // Incompressible, like media.
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    Bytes::from(v)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let fake = FakePds::start().await.unwrap();
    println!("== blob fetch: fake PDS getBlob (127.0.0.1) → BlobWorkers → local directory ==");
    println!(
        "{:<22} {:>8} {:>10} {:>9} {:>9} | {:>9} {:>9} | {:>8} {:>8}",
        "set", "blobs", "MB", "blobs/s", "MB/s", "http MB/s", "disk MB/s", "vs http", "vs disk"
    );
    for (label, n, size, seed) in [
        ("small: 2000 x 64 KiB", 2000usize, 64usize << 10, 1u64),
        ("large: 24 x 8 MiB", 24, 8 << 20, 100_000),
    ] {
        let cids: Vec<Cid> = (0..n)
            .map(|i| fake.set_blob(DID, blob(size, seed + i as u64), "image/jpeg"))
            .collect();
        let mb = (n * size) as f64 / 1e6;
        let http = http_baseline(fake.url(), &cids, 16).await;
        let disk = disk_baseline(&fake, &cids, size, seed);
        let barn = barn_run(fake.url(), &cids).await;
        println!(
            "{label:<22} {n:>8} {mb:>10.1} {:>9.0} {:>9.1} | {:>9.1} {:>9.1} | {:>7.2}x {:>7.2}x",
            n as f64 / barn,
            mb / barn,
            mb / http,
            mb / disk,
            http / barn,
            disk / barn,
        );
    }

    println!();
    println!("== commit → stored latency, idle queue, one 100 KB blob per commit ==");
    for (label, wake) in [
        ("woken after the commit", true),
        ("200 ms poll only", false),
    ] {
        let (p50, p99, max) = latency(&fake, wake, 200).await;
        println!("{label:<24} p50 {p50:>5} ms   p99 {p99:>5} ms   max {max:>5} ms   (200 commits)");
    }
}

/// Seconds for plain GETs of every blob, `concurrency` at once.
async fn http_baseline(url: &str, cids: &[Cid], concurrency: usize) -> f64 {
    let client = reqwest::Client::new();
    let started = Instant::now();
    futures::stream::iter(cids.iter().map(|cid| {
        let client = client.clone();
        async move {
            let resp = client
                .get(format!("{url}/xrpc/com.atproto.sync.getBlob"))
                .query(&[("did", DID), ("cid", &cid.to_string())])
                .send()
                .await
                .unwrap();
            let mut body = resp.bytes_stream();
            let mut n = 0;
            while let Some(chunk) = body.next().await {
                n += chunk.unwrap().len();
            }
            n
        }
    }))
    .buffer_unordered(concurrency)
    .for_each(|_| async {})
    .await;
    started.elapsed().as_secs_f64()
}

/// Seconds to write the same bytes to files, written then renamed.
fn disk_baseline(_fake: &FakePds, cids: &[Cid], size: usize, seed: u64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let bodies: Vec<Bytes> = (0..cids.len())
        .map(|i| blob(size, seed + i as u64))
        .collect();
    let started = Instant::now();
    for (cid, body) in cids.iter().zip(&bodies) {
        let tmp = dir.path().join(format!("{cid}.tmp"));
        let mut f = std::fs::File::create(&tmp).unwrap();
        std::io::Write::write_all(&mut f, body).unwrap();
        f.sync_all().unwrap();
        std::fs::rename(&tmp, dir.path().join(cid.to_string())).unwrap();
    }
    started.elapsed().as_secs_f64()
}

fn fresh_store() -> (tempfile::TempDir, Arc<Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("store"), &StoreOptions::default()).unwrap());
    (dir, store)
}

fn host(store: &Store, url: &str) {
    let mut state = RepoState::new(url);
    state.active = true;
    let mut batch = Batch::new();
    batch.set_repo(DID, state);
    store.write(batch).unwrap();
}

/// Seconds for barn's workers to store every blob, all queued at once.
async fn barn_run(url: &str, cids: &[Cid]) -> f64 {
    let (dir, store) = fresh_store();
    host(&store, url);
    let storage = BlobStorage::open(&StorageConfig::Local {
        dir: dir.path().join("blobs"),
    })
    .unwrap();
    let metrics = Metrics::new().unwrap();
    // As many at once as the baseline (the default per host is 4: a
    // courtesy to a PDS, not a limit of barn's).
    let conc: usize = std::env::var("BARN_BLOB_CONC")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let config = BlobConfig {
        per_host: conc,
        concurrency: conc,
        ..BlobConfig::default()
    };
    let workers = BlobWorkers::start(store.clone(), storage, config, metrics.clone()).unwrap();
    let mut batch = Batch::new();
    for cid in cids {
        batch.add_blob_ref(DID, *cid, BlobHint::default());
    }
    let started = Instant::now();
    store.write(batch).unwrap();
    workers.wake();
    while metrics.blobs_stored() < cids.len() as u64 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let took = started.elapsed().as_secs_f64();
    let (n, sum) = metrics.fetch_time();
    eprintln!("  mean fetch {:.2} ms over {n}", sum * 1000.0 / n as f64);
    workers.stop(Duration::from_secs(5)).await.unwrap();
    assert_eq!(metrics.fetches("stored"), cids.len() as u64);
    took
}

/// (p50, p99, max) ms from a one-ref commit to its blob stored.
async fn latency(fake: &FakePds, wake: bool, commits: usize) -> (u64, u64, u64) {
    let (dir, store) = fresh_store();
    host(&store, fake.url());
    let storage = BlobStorage::open(&StorageConfig::Local {
        dir: dir.path().join("blobs"),
    })
    .unwrap();
    let workers = BlobWorkers::start(
        store.clone(),
        storage,
        BlobConfig::default(),
        Metrics::new().unwrap(),
    )
    .unwrap();
    let mut samples = Vec::with_capacity(commits);
    for i in 0..commits {
        let cid = fake.set_blob(
            DID,
            blob(100_000, 1_000_000 + i as u64 + wake as u64 * 10_000),
            "image/png",
        );
        let mut batch = Batch::new();
        batch.add_blob_ref(DID, cid, BlobHint::default());
        let started = Instant::now();
        store.write(batch).unwrap();
        if wake {
            workers.wake();
        }
        loop {
            if store
                .blob(&cid)
                .unwrap()
                .is_some_and(|s| s.status == BlobStatus::Stored)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        samples.push(started.elapsed().as_millis() as u64);
        // An idle queue between commits, at a random phase of the poll.
        tokio::time::sleep(Duration::from_millis(20 + (i as u64 * 37) % 180)).await;
    }
    workers.stop(Duration::from_secs(5)).await.unwrap();
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    (at(0.50), at(0.99), *samples.last().unwrap())
}
