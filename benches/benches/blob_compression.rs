//! `blob_compression`: what zstd does to real blobs (issue W1-5,
//! "Compression: measure zstd on real blob types … and keep it only where
//! it pays").
//!
//! The inputs are real files of the kinds people attach to posts (JPEG,
//! PNG, WebP, GIF, MP4) and one JSON text for contrast, from
//! `benches/testdata/blobs/` (see `SOURCES.md` there). For each file and
//! zstd level 1, 3, 9 and 19 (one thread, the `zstd` crate barn-store
//! uses):
//!
//! - the compressed size over the original (deterministic);
//! - compress and decompress throughput, in MB/s of the original bytes;
//! - baselines measured in the same run on the same bytes: a memcpy into a
//!   buffer allocated beforehand, and SHA-256 on one core (barn hashes
//!   every blob it fetches anyway, so that is the cost already paid).
//!
//! It also measures a *probe*: level 1 on the first 64 KiB only, the
//! cheap test a writer could make before deciding to compress a blob of
//! unknown type, to see whether it predicts the whole file's ratio.
//!
//! Not a criterion bench: each figure is the median of 7 rounds, each
//! round repeating the operation for at least 100 ms (at least once).
//! Before timing, every level's output is decompressed and compared with
//! the input (`!!!!! MISMATCH` otherwise).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

const LEVELS: [i32; 4] = [1, 3, 9, 19];
const ROUNDS: usize = 7;
const MIN_ROUND: Duration = Duration::from_millis(100);
/// How much of a blob the probe compresses.
const PROBE: usize = 64 * 1024;
/// Saving below which compressing is judged not to pay (see README).
const PAYS: f64 = 0.10;

/// The median over [`ROUNDS`] of the mean time of one call of `f`.
fn time(mut f: impl FnMut()) -> Duration {
    let mut rounds: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            let mut n = 0u32;
            while n == 0 || start.elapsed() < MIN_ROUND {
                f();
                n += 1;
            }
            start.elapsed() / n
        })
        .collect();
    rounds.sort();
    rounds[ROUNDS / 2]
}

/// MB/s (10^6 bytes) of `len` bytes in `d`.
fn rate(len: usize, d: Duration) -> f64 {
    len as f64 / d.as_secs_f64() / 1e6
}

struct Level {
    level: i32,
    ratio: f64,
    compress: f64,
    decompress: f64,
}

struct Row {
    name: String,
    len: usize,
    memcpy: f64,
    sha256: f64,
    levels: Vec<Level>,
    probe_ratio: f64,
    probe_us: f64,
}

fn measure(name: String, data: &[u8]) -> Row {
    let len = data.len();
    let mut copy = vec![0u8; len];
    let memcpy = rate(
        len,
        time(|| {
            copy.copy_from_slice(std::hint::black_box(data));
            std::hint::black_box(&copy);
        }),
    );
    let sha256 = rate(
        len,
        time(|| {
            std::hint::black_box(Sha256::digest(std::hint::black_box(data)));
        }),
    );
    let bound = zstd::zstd_safe::compress_bound(len);
    let mut out = Vec::with_capacity(bound);
    let mut back = vec![0u8; len];
    let mut levels = Vec::new();
    for level in LEVELS {
        let mut c = zstd::bulk::Compressor::new(level).unwrap();
        let mut d = zstd::bulk::Decompressor::new().unwrap();
        out.clear();
        let n = c.compress_to_buffer(data, &mut out).unwrap();
        let m = d.decompress_to_buffer(&out, &mut back).unwrap();
        if m != len || back != data {
            println!("!!!!! MISMATCH {name} level {level}: round trip differs");
        }
        let compress = rate(
            len,
            time(|| {
                out.clear();
                std::hint::black_box(c.compress_to_buffer(data, &mut out).unwrap());
            }),
        );
        let decompress = rate(
            len,
            time(|| {
                std::hint::black_box(d.decompress_to_buffer(&out, &mut back).unwrap());
            }),
        );
        levels.push(Level {
            level,
            ratio: n as f64 / len as f64,
            compress,
            decompress,
        });
    }
    let head = &data[..len.min(PROBE)];
    let mut c = zstd::bulk::Compressor::new(1).unwrap();
    out.clear();
    let probe_len = c.compress_to_buffer(head, &mut out).unwrap();
    let probe = time(|| {
        out.clear();
        std::hint::black_box(c.compress_to_buffer(head, &mut out).unwrap());
    });
    Row {
        name,
        len,
        memcpy,
        sha256,
        levels,
        probe_ratio: probe_len as f64 / head.len() as f64,
        probe_us: probe.as_secs_f64() * 1e6,
    }
}

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/blobs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e != "md"))
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()))
        })
        .collect();
    // Media first (by name), the text last: the contrast row.
    files.sort_by_key(|p| {
        (
            p.extension().is_some_and(|e| e == "json"),
            p.file_name().map(|n| n.to_owned()),
        )
    });
    let started = Instant::now();
    let rows: Vec<Row> = files
        .iter()
        .map(|p| {
            let data = std::fs::read(p).unwrap();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let row = measure(name, &data);
            eprintln!("measured {} ({} bytes)", row.name, row.len);
            row
        })
        .collect();

    println!();
    println!(
        "== blob_compression: zstd on real blobs, one thread; median of {ROUNDS} rounds of >= {} ms; MB = 10^6 bytes ==",
        MIN_ROUND.as_millis()
    );
    println!(
        "{:<28} {:>9} {:>9} {:>9}  {:<44}  {:<44}  {:<44}  {:<44}  {:>12}",
        "file",
        "bytes",
        "memcpy",
        "sha256",
        "zstd 1: size, comp, decomp MB/s",
        "zstd 3",
        "zstd 9",
        "zstd 19",
        "probe 64KiB"
    );
    for r in &rows {
        let cells: Vec<String> = r
            .levels
            .iter()
            .map(|l| format!("{:>7.4} {:>8.1} {:>8.0}", l.ratio, l.compress, l.decompress))
            .collect();
        println!(
            "{:<28} {:>9} {:>9.0} {:>9.0}  {:<44}  {:<44}  {:<44}  {:<44}  {:>6.4} {:>4.0}us",
            r.name,
            r.len,
            r.memcpy,
            r.sha256,
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            r.probe_ratio,
            r.probe_us
        );
    }

    // Media in aggregate: what a mirror of mostly media would save.
    let media: Vec<&Row> = rows.iter().filter(|r| !r.name.ends_with(".json")).collect();
    let media_bytes: usize = media.iter().map(|r| r.len).sum();
    if !media.is_empty() {
        for (i, level) in LEVELS.iter().enumerate() {
            let stored: f64 = media.iter().map(|r| r.levels[i].ratio * r.len as f64).sum();
            let secs: f64 = media
                .iter()
                .map(|r| r.len as f64 / (r.levels[i].compress * 1e6))
                .sum();
            let sha_secs: f64 = media.iter().map(|r| r.len as f64 / (r.sha256 * 1e6)).sum();
            println!(
                "RATIO blob_compression media ({} files, {media_bytes} bytes): zstd {level} size {:.4}x ({:.2}% saved), compress {:.1} MB/s = {:.3}x baseline sha256 1 core",
                media.len(),
                stored / media_bytes as f64,
                100.0 * (1.0 - stored / media_bytes as f64),
                media_bytes as f64 / secs / 1e6,
                sha_secs / secs
            );
        }
    }
    for r in &rows {
        let best = r
            .levels
            .iter()
            .map(|l| format!("zstd {} {:.4}x", l.level, l.ratio))
            .collect::<Vec<_>>()
            .join(", ");
        let l3 = &r.levels[1];
        let verdict = if 1.0 - l3.ratio >= PAYS {
            "pays"
        } else {
            "does not pay"
        };
        println!(
            "RATIO blob_compression {}: {best}; zstd 3 compress {:.1} MB/s = {:.3}x baseline sha256 1 core, {:.4}x baseline memcpy; decompress {:.0} MB/s = {:.2}x baseline sha256 1 core; probe {:.4}x; {verdict} (saving >= {:.0}% at level 3)",
            r.name,
            l3.compress,
            l3.compress / r.sha256,
            l3.compress / r.memcpy,
            l3.decompress,
            l3.decompress / r.sha256,
            r.probe_ratio,
            PAYS * 100.0
        );
    }
    println!(
        "blob_compression: {} files in {:.1} s",
        rows.len(),
        started.elapsed().as_secs_f64()
    );
}
