//! Gateway benchmark (issue W1-6), two parts.
//!
//! 1. **barn vs the reference PDS, same repo, same run.** An account on a
//!    loopback reference PDS (`@atproto/pds` from npm) gets 10,000 posts
//!    (`applyWrites`, 200 a call), then 10 more commits that each delete
//!    100 posts and create 100 (so the repo keeps its size). barn imports
//!    the PDS's CAR before and after those commits (`import_car`, the
//!    backfill and reconcile path), so it holds a past revision and the
//!    head. Then 16 concurrent clients download `getRepo` from each
//!    server for a fixed time: MB/s and per-request p50/p99. barn's CAR of
//!    the past revision (`dev.barn.sync.getRepoAt`) against its current
//!    CAR, one client at a time: time per CAR and per MB.
//! 2. **Memory while serving a ≥ 1 GB repo.** A generated repository of
//!    ~1.1 GB of CAR is imported into a store (cached under the target
//!    dir); a child process opens the store and serves only the gateway;
//!    the parent downloads the CAR with 1 and then 4 clients and reads the
//!    child's peak resident memory (`VmHWM`) before and after.
//!
//! `BARN_GATEWAY_SECONDS` (default 10): each load phase of part 1.
//! `BARN_GATEWAY_BIG` (default 1100000000): part 2's CAR size; 0 skips it.
//! `BARN_GATEWAY_SKIP_PDS`: skip part 1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use barn_benches::{DID, generate_repo_of};
use barn_identity::{Resolver, ResolverConfig};
use barn_mirror::{ImportLimits, ImportRequest, import_car};
use barn_repo::crypto::{KeyType, PrivateKey, PublicKey};
use barn_store::{RepoState, Source, Store, StoreOptions};
use barn_testkit::{Identity, Network, compare_cars};
use barn_xrpc::{Gateway, GatewayConfig};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::json;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CLIENTS: usize = 16;
const ADMIN: &str = "bench-operator-token-000000";
const BIG_SEED: u64 = 21;

fn main() {
    if let Ok(dir) = std::env::var("BARN_GATEWAY_SERVE") {
        serve_child(Path::new(&dir));
        return;
    }
    if let Ok(size) = std::env::var("BARN_GATEWAY_GENERATE") {
        let size: u64 = size.parse().unwrap();
        let repo = generate_repo_of(DID, size, BIG_SEED);
        let path = big_car_path(size);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &repo.car).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        eprintln!(
            "generated {} records, {} bytes",
            repo.records,
            repo.car.len()
        );
        return;
    }
    let seconds: u64 = std::env::var("BARN_GATEWAY_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let big: u64 = std::env::var("BARN_GATEWAY_BIG")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_100_000_000);
    let clients_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // barn's server runs on a runtime of its own, as in `barn serve`.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if std::env::var_os("BARN_GATEWAY_SKIP_PDS").is_none() {
        clients_rt.block_on(versus_pds(&server_rt, Duration::from_secs(seconds)));
    }
    if big > 0 {
        clients_rt.block_on(big_repo(big));
    }
}

// ---------------------------------------------------------------------------
// Part 1

async fn post(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: serde_json::Value,
) -> serde_json::Value {
    let mut r = http.post(url).json(&body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status();
    let v: serde_json::Value = resp.json().await.unwrap_or_default();
    assert!(status.is_success(), "{url}: {status} {v}");
    v
}

fn post_record(i: usize) -> serde_json::Value {
    json!({
        "$type": "com.atproto.repo.applyWrites#create",
        "collection": "app.bsky.feed.post",
        "value": {
            "$type": "app.bsky.feed.post",
            "text": format!("bench post {i}: the quick brown fox jumps over the lazy dog, again and again"),
            "createdAt": "2026-01-01T00:00:00.000Z",
        }
    })
}

/// Results of one load phase.
struct Load {
    requests: usize,
    bytes: u64,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
}

impl Load {
    fn mb_s(&self) -> f64 {
        self.bytes as f64 / self.seconds / 1e6
    }
}

/// `clients` tasks fetch `url` (with `query`, `token`) back to back for
/// `duration`, reading every body to the end.
async fn load(
    http: &reqwest::Client,
    url: &str,
    query: Vec<(&'static str, String)>,
    token: Option<&'static str>,
    clients: usize,
    duration: Duration,
) -> Load {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let http = http.clone();
        let url = url.to_owned();
        let query = query.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut bytes = 0u64;
            // At least one request each, however short the phase.
            while lat.is_empty() || started.elapsed() < duration {
                let t = Instant::now();
                let mut r = http.get(&url).query(&query);
                if let Some(tok) = token {
                    r = r.bearer_auth(tok);
                }
                let resp = r.send().await.unwrap();
                assert!(resp.status().is_success(), "{url}: {}", resp.status());
                let mut stream = resp.bytes_stream();
                while let Some(chunk) = stream.next().await {
                    bytes += chunk.unwrap().len() as u64;
                }
                lat.push(t.elapsed().as_secs_f64() * 1e3);
            }
            (lat, bytes)
        }));
    }
    let mut all = Vec::new();
    let mut bytes = 0;
    for t in tasks {
        let (lat, b) = t.await.unwrap();
        all.extend(lat);
        bytes += b;
    }
    let seconds = started.elapsed().as_secs_f64();
    all.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Load {
        requests: all.len(),
        bytes,
        seconds,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    }
}

async fn import(store: &Arc<Store>, did: &str, key: PublicKey, host: &str, car: Bytes) {
    let state = store
        .repo(did)
        .unwrap()
        .unwrap_or_else(|| RepoState::new(host));
    let request = ImportRequest {
        did: did.to_owned(),
        key,
        state,
        source: Source::Resync,
        reason: "bench".into(),
    };
    let report = import_car(
        store.clone(),
        request,
        std::io::Cursor::new(car.to_vec()),
        ImportLimits::default(),
    )
    .await
    .unwrap();
    set_head(store, did, host, &report);
}

/// What the mirror's host task does after an import: the repo's head.
fn set_head(store: &Store, did: &str, host: &str, report: &barn_mirror::ImportReport) {
    let mut state = store
        .repo(did)
        .unwrap()
        .unwrap_or_else(|| RepoState::new(host));
    state.advance(report.head.cid, report.head.rev.clone(), report.head.data);
    let mut batch = barn_store::Batch::new();
    batch.set_repo(did, state);
    store.write(batch).unwrap();
}

async fn versus_pds(server_rt: &tokio::runtime::Runtime, duration: Duration) {
    println!("== gateway: barn vs the reference PDS, getRepo of the same repo ==");
    let net = Network::start().await.unwrap();
    let http = reqwest::Client::new();
    let pds = net.pds_a.url.clone();
    let acct = post(
        &http,
        &format!("{pds}/xrpc/com.atproto.server.createAccount"),
        None,
        json!({"handle": "bench.test", "email": "bench@example.test", "password": "pw-bench"}),
    )
    .await;
    let did = acct["did"].as_str().unwrap().to_owned();
    let jwt = acct["accessJwt"].as_str().unwrap().to_owned();
    let apply = format!("{pds}/xrpc/com.atproto.repo.applyWrites");
    let mut uris: Vec<String> = Vec::new();
    let t = Instant::now();
    for call in 0..50 {
        let writes: Vec<_> = (0..200).map(|i| post_record(call * 200 + i)).collect();
        let out = post(
            &http,
            &apply,
            Some(&jwt),
            json!({"repo": did, "writes": writes}),
        )
        .await;
        for r in out["results"].as_array().unwrap() {
            uris.push(r["uri"].as_str().unwrap().to_owned());
        }
    }
    println!(
        "  10,000 posts written to the PDS in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let get_repo = |did: &str| {
        let http = http.clone();
        let url = format!("{pds}/xrpc/com.atproto.sync.getRepo");
        let did = did.to_owned();
        async move {
            http.get(url)
                .query(&[("did", did)])
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
        }
    };
    let past_car = get_repo(&did).await;
    for round in 0..10 {
        let mut writes: Vec<_> = uris
            .drain(..100)
            .map(|u| {
                let rkey = u.rsplit('/').next().unwrap().to_owned();
                json!({"$type": "com.atproto.repo.applyWrites#delete", "collection": "app.bsky.feed.post", "rkey": rkey})
            })
            .collect();
        writes.extend((0..100).map(|i| post_record(20_000 + round * 100 + i)));
        let out = post(
            &http,
            &apply,
            Some(&jwt),
            json!({"repo": did, "writes": writes}),
        )
        .await;
        for r in out["results"].as_array().unwrap() {
            if let Some(u) = r["uri"].as_str() {
                uris.push(u.to_owned());
            }
        }
    }
    let current_car = get_repo(&did).await;

    // barn: the same two states, imported.
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), &StoreOptions::default()).unwrap());
    let client = barn_testkit::Client::new();
    let id = Identity::resolve(&client, &net.plc.url, &did)
        .await
        .unwrap();
    import(&store, &did, id.signing_key.clone(), &pds, past_car.clone()).await;
    import(
        &store,
        &did,
        id.signing_key.clone(),
        &pds,
        current_car.clone(),
    )
    .await;
    let history = store.history(&did).unwrap();
    assert_eq!(history.len(), 2);
    let past_rev = history[0].rev.clone();

    let resolver = Resolver::new(ResolverConfig {
        plc_url: net.plc.url.clone(),
        allow_http_localhost: true,
        ..ResolverConfig::default()
    })
    .unwrap();
    let gateway = Gateway::new(
        store.clone(),
        None,
        resolver,
        GatewayConfig {
            admin_token: Some(ADMIN.into()),
            rate_limit: None,
            ..GatewayConfig::default()
        },
        None,
    )
    .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let barn = format!("http://{}", listener.local_addr().unwrap());
    server_rt.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        gateway.serve(listener, std::future::pending()).await
    });

    // Same repo on both sides, checked before anything is timed.
    let barn_car = http
        .get(format!("{barn}/xrpc/com.atproto.sync.getRepo"))
        .query(&[("did", &did)])
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let c = compare_cars(&id, barn_car.clone(), current_car.clone()).unwrap();
    let past = http
        .get(format!("{barn}/xrpc/dev.barn.sync.getRepoAt"))
        .query(&[("did", &did), ("rev", &past_rev)])
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    compare_cars(&id, past.clone(), past_car.clone()).unwrap();
    println!(
        "  repo: {} records; CAR {} bytes from the PDS, {} from barn (past revision: {} bytes)",
        c.records,
        current_car.len(),
        barn_car.len(),
        past.len()
    );

    let q = vec![("did", did.clone())];
    let pds_load = load(
        &http,
        &format!("{pds}/xrpc/com.atproto.sync.getRepo"),
        q.clone(),
        None,
        CLIENTS,
        duration,
    )
    .await;
    let barn_load = load(
        &http,
        &format!("{barn}/xrpc/com.atproto.sync.getRepo"),
        q.clone(),
        None,
        CLIENTS,
        duration,
    )
    .await;
    let qp = vec![("did", did.clone()), ("rev", past_rev.clone())];
    let past_load = load(
        &http,
        &format!("{barn}/xrpc/dev.barn.sync.getRepoAt"),
        qp.clone(),
        Some(ADMIN),
        CLIENTS,
        duration,
    )
    .await;
    println!("  {CLIENTS} clients, {} s each:", duration.as_secs());
    for (name, l) in [
        ("reference PDS getRepo", &pds_load),
        ("barn getRepo", &barn_load),
        ("barn getRepoAt (past)", &past_load),
    ] {
        println!(
            "    {name:<24} {:>8.1} MB/s  {:>6} CARs  p50 {:>8.1} ms  p99 {:>8.1} ms",
            l.mb_s(),
            l.requests,
            l.p50_ms,
            l.p99_ms
        );
    }
    println!(
        "  barn / PDS: {:.1}x MB/s (goal >= 5x); p99 {:.1}x lower",
        barn_load.mb_s() / pds_load.mb_s(),
        pds_load.p99_ms / barn_load.p99_ms
    );

    // Past vs current, one client, the same number of CARs each.
    let one =
        |query: Vec<(&'static str, String)>, method: &'static str, token: Option<&'static str>| {
            let http = http.clone();
            let url = format!("{barn}/xrpc/{method}");
            async move { load(&http, &url, query, token, 1, Duration::from_secs(3)).await }
        };
    let cur1 = one(q.clone(), "com.atproto.sync.getRepo", None).await;
    let past1 = one(qp.clone(), "dev.barn.sync.getRepoAt", Some(ADMIN)).await;
    let per_car = |l: &Load| l.seconds / l.requests as f64 * 1e3;
    println!(
        "  one client: current CAR {:.1} ms ({:.1} MB/s), past CAR {:.1} ms ({:.1} MB/s): past / current {:.2}x time per CAR, {:.2}x per MB (goal <= 1.3x)",
        per_car(&cur1),
        cur1.mb_s(),
        per_car(&past1),
        past1.mb_s(),
        per_car(&past1) / per_car(&cur1),
        cur1.mb_s() / past1.mb_s()
    );
    net.stop().await.unwrap();
}

// ---------------------------------------------------------------------------
// Part 2

fn big_car_path(size: u64) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("gateway-{BIG_SEED}-{size}.car"))
}

fn big_store_path(size: u64) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("gateway-store-{BIG_SEED}-{size}"))
}

fn status_kb(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn big_repo(size: u64) {
    println!("== gateway: peak memory serving a large repo ==");
    let car = big_car_path(size);
    if !car.exists() {
        eprintln!("generating {} (once) ...", car.display());
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .env("BARN_GATEWAY_GENERATE", size.to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }
    let store_dir = big_store_path(size);
    let stamp = store_dir.join(".imported");
    if !stamp.exists() {
        let _ = std::fs::remove_dir_all(&store_dir);
        let store = Arc::new(Store::open(&store_dir, &StoreOptions::default()).unwrap());
        let key = PrivateKey::from_seed(KeyType::K256, BIG_SEED).public_key();
        let t = Instant::now();
        let file = tokio::fs::File::open(&car).await.unwrap();
        let request = ImportRequest {
            did: DID.to_owned(),
            key,
            state: RepoState::new("https://pds.bench"),
            source: Source::Resync,
            reason: "bench".into(),
        };
        let report = import_car(
            store.clone(),
            request,
            tokio::io::BufReader::with_capacity(1 << 20, file),
            ImportLimits {
                max_bytes: 4 << 30,
                ..ImportLimits::default()
            },
        )
        .await
        .unwrap();
        eprintln!("imported in {:.1} s: {report:?}", t.elapsed().as_secs_f64());
        set_head(&store, DID, "https://pds.bench", &report);
        store.sync().unwrap();
        drop(store);
        std::fs::write(&stamp, b"").unwrap();
    }
    let car_bytes = std::fs::metadata(&car).unwrap().len();

    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .env("BARN_GATEWAY_SERVE", &store_dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().to_owned();
    let pid = child.id();
    let idle = status_kb(pid, "VmHWM:");
    let http = reqwest::Client::new();
    let q = vec![("did", DID.to_owned())];
    let one = load(
        &http,
        &format!("{url}/xrpc/com.atproto.sync.getRepo"),
        q.clone(),
        None,
        1,
        Duration::from_millis(1),
    )
    .await;
    let after_one = status_kb(pid, "VmHWM:");
    let four = load(
        &http,
        &format!("{url}/xrpc/com.atproto.sync.getRepo"),
        q,
        None,
        4,
        Duration::from_millis(1),
    )
    .await;
    let after_four = status_kb(pid, "VmHWM:");
    println!(
        "  repo CAR {:.2} GB (file {} bytes); served {:.2} GB to 1 client at {:.1} MB/s, then {:.2} GB to 4 at once at {:.1} MB/s",
        one.bytes as f64 / 1e9,
        car_bytes,
        one.bytes as f64 / 1e9,
        one.mb_s(),
        four.bytes as f64 / 1e9,
        four.mb_s()
    );
    println!(
        "  server peak RSS: {:.0} MB after opening the store, {:.0} MB after 1 client, {:.0} MB after 4 (fjall block cache: 256 MB)",
        idle as f64 / 1024.0,
        after_one as f64 / 1024.0,
        after_four as f64 / 1024.0
    );
    drop(child.stdin.take());
    let _ = child.wait();
}

/// Child: serves the gateway over the store in `dir` until stdin closes;
/// prints its URL first.
fn serve_child(dir: &Path) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Arc::new(Store::open(dir, &StoreOptions::default()).unwrap());
        let resolver = Resolver::new(ResolverConfig::default()).unwrap();
        let gateway = Gateway::new(
            store,
            None,
            resolver,
            GatewayConfig {
                rate_limit: None,
                ..GatewayConfig::default()
            },
            None,
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("http://{}", listener.local_addr().unwrap());
        std::io::stdout().flush().unwrap();
        let stdin_closed = tokio::task::spawn_blocking(|| {
            let mut s = String::new();
            while std::io::stdin()
                .read_line(&mut s)
                .map(|n| n > 0)
                .unwrap_or(false)
            {}
        });
        gateway
            .serve(listener, async {
                let _ = stdin_closed.await;
            })
            .await
            .unwrap();
    });
}
