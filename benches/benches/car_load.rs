//! `car_load`: load a ~100 MiB repository CAR held in memory, checking the
//! SHA-256 of every block, into each library's block store.
//!
//! - barn `read_car`: in-memory path, zero-copy blocks, hashing spread over
//!   all cores.
//! - barn `CarStream`: streaming path on iroh-car, one block at a time, one
//!   core.
//! - atrium `CarStore::open`: builds its offset index and checks every
//!   block's SHA-256 itself (nothing added).
//! - jacquard `parse_car_bytes` (iroh-car, no hash check) into its
//!   `MemoryBlockStore`, plus a SHA-256 check of every block added by this
//!   bench so that it does the same work. Also shown without the check.
//! - Baselines on the same bytes: one SHA-256 over the whole buffer on one
//!   core, and a memcpy of the buffer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use barn_benches::{Tally, Work, bench, generate_repo, report};
use barn_repo::car::{CarLimits, CarStream, read_car};
use barn_repo::{BlockSource, Cid};
use criterion::{Criterion, SamplingMode, Throughput};
use sha2::{Digest, Sha256};

const TARGET_BYTES: u64 = 100 * 1024 * 1024;
const SAMPLES: usize = 10;

/// The check barn does for every block, done by hand for peers that skip it.
fn hash_ok(cid: &Cid, data: &[u8]) -> bool {
    let digest: [u8; 32] = Sha256::digest(data).into();
    cid.hash().code() == 0x12 && cid.hash().digest() == digest
}

fn main() {
    let mut c = Criterion::default().configure_from_args();

    let t = Instant::now();
    let repo = generate_repo(TARGET_BYTES, 1);
    let car = repo.car.clone();
    let len = car.len() as u64;
    println!(
        "car_load input: {} records ({}..={} bytes, {:.0} avg), {} blocks, CAR {} bytes ({:.1} MiB), generated in {:.1} s",
        repo.records,
        repo.record_size_range.0,
        repo.record_size_range.1,
        repo.record_bytes as f64 / repo.records as f64,
        repo.blocks.len(),
        len,
        len as f64 / 1024.0 / 1024.0,
        t.elapsed().as_secs_f64()
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();

    // Every contender must see every block before it is timed.
    let barn = read_car(car.clone(), &CarLimits::default()).unwrap();
    assert_eq!(barn.blocks.len(), repo.blocks.len());
    assert_eq!(barn.root(), Some(&repo.commit));
    let streamed = rt.block_on(async {
        CarStream::new(&car[..], CarLimits::default())
            .await
            .unwrap()
            .collect()
            .await
            .unwrap()
    });
    assert_eq!(streamed.blocks.len(), repo.blocks.len());
    let atrium = rt.block_on(atrium_repo::blockstore::CarStore::open(
        std::io::Cursor::new(&car[..]),
    ));
    let atrium = atrium.unwrap();
    assert_eq!(atrium.roots().next(), Some(repo.commit));
    let jacquard = rt
        .block_on(jacquard_repo::car::parse_car_bytes(&car))
        .unwrap();
    assert_eq!(jacquard.blocks.len(), repo.blocks.len());
    assert!(jacquard.blocks.iter().all(|(cid, d)| hash_ok(cid, d)));
    for (cid, data) in repo.blocks.iter() {
        assert_eq!(
            barn.blocks.get_block(cid).unwrap().as_ref(),
            Some(data),
            "barn read_car lost {cid}"
        );
    }
    drop((barn, streamed, atrium, jacquard));

    let tally = Tally::new();
    let mut g = c.benchmark_group("car_load");
    g.sample_size(SAMPLES)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Bytes(len));

    bench(
        &mut g,
        &tally,
        "barn read_car",
        || car.clone(),
        |bytes| read_car(bytes, &CarLimits::default()).unwrap(),
    );
    bench(
        &mut g,
        &tally,
        "barn CarStream",
        || (),
        |()| {
            rt.block_on(async {
                CarStream::new(&car[..], CarLimits::default())
                    .await
                    .unwrap()
                    .collect()
                    .await
                    .unwrap()
            })
        },
    );
    bench(
        &mut g,
        &tally,
        "atrium CarStore::open",
        || (),
        |()| {
            rt.block_on(atrium_repo::blockstore::CarStore::open(
                std::io::Cursor::new(&car[..]),
            ))
            .unwrap()
        },
    );
    bench(
        &mut g,
        &tally,
        "jacquard parse_car_bytes+sha256",
        || (),
        |()| {
            let parsed = rt
                .block_on(jacquard_repo::car::parse_car_bytes(&car))
                .unwrap();
            for (cid, data) in &parsed.blocks {
                assert!(hash_ok(cid, data), "hash mismatch {cid}");
            }
            jacquard_repo::MemoryBlockStore::new_from_blocks(parsed.blocks)
        },
    );
    bench(
        &mut g,
        &tally,
        "jacquard parse_car_bytes (no check)",
        || (),
        |()| {
            let parsed = rt
                .block_on(jacquard_repo::car::parse_car_bytes(&car))
                .unwrap();
            jacquard_repo::MemoryBlockStore::new_from_blocks(parsed.blocks)
        },
    );
    bench(
        &mut g,
        &tally,
        "baseline sha256 1 core",
        || (),
        |()| Sha256::digest(&car[..]),
    );
    let mut dst = vec![1u8; car.len()];
    bench(
        &mut g,
        &tally,
        "baseline memcpy",
        || (),
        |()| {
            dst.copy_from_slice(&car);
            std::hint::black_box(&mut dst);
        },
    );
    g.finish();

    report(
        "car_load",
        Work::Bytes(len),
        &tally,
        SAMPLES,
        &["barn read_car", "barn CarStream"],
        &[
            "atrium CarStore::open",
            "jacquard parse_car_bytes+sha256",
            "jacquard parse_car_bytes (no check)",
            "baseline sha256 1 core",
            "baseline memcpy",
        ],
    );
    c.final_summary();
}
