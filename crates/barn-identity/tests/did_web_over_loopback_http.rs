#![allow(clippy::unwrap_used, clippy::expect_used)]
//! did:web against tiny HTTP servers on 127.0.0.1 (one per DID, since a
//! hostname-level did:web is only a host and port): a good document, then
//! every way a host can fail — 404, 410, 5xx, redirects, wrong id, a body
//! over the limit with and without Content-Length, a host slower than the
//! timeout — and the resolver's own machinery, observed from the server
//! side: TTL expiry, refresh after a key rotation, invalidate, single
//! flight, the concurrency limit, a flight finishing after its caller gave
//! up, and a stale flight that must not overwrite a fresher answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use barn_identity::{Error, Resolver, ResolverConfig};
use barn_repo::crypto::{KeyType, PrivateKey, PublicKey};

/// One canned answer.
#[derive(Clone)]
struct Reply {
    status: u16,
    body: Vec<u8>,
    delay: Duration,
    /// Send `Content-Length` (otherwise the body ends when the connection closes).
    content_length: bool,
    location: Option<String>,
}

impl Reply {
    fn json(doc: &Value) -> Reply {
        Reply {
            status: 200,
            body: serde_json::to_vec(doc).unwrap(),
            delay: Duration::ZERO,
            content_length: true,
            location: None,
        }
    }

    fn status(status: u16) -> Reply {
        Reply {
            status,
            body: b"{}".to_vec(),
            ..Reply::json(&json!({}))
        }
    }

    fn delayed(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

/// What a server saw.
#[derive(Default)]
struct Seen {
    requests: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

struct Server {
    did: String,
    seen: Arc<Seen>,
}

impl Server {
    fn requests(&self) -> usize {
        self.seen.requests.load(Ordering::SeqCst)
    }
}

/// Serves `/.well-known/did.json` on a fresh port; `reply(did, n)` answers
/// the n-th request (from 0) for the DID `did:web:localhost%3A<port>`.
async fn serve(
    reply: impl Fn(&str, usize) -> Reply + Send + Sync + 'static,
    seen: Option<Arc<Seen>>,
) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let did = format!("did:web:localhost%3A{port}");
    let seen = seen.unwrap_or_default();
    let reply = Arc::new(reply);
    let (did2, seen2) = (did.clone(), seen.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let (reply, did, seen) = (reply.clone(), did2.clone(), seen2.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let request_line = String::from_utf8_lossy(&head);
                assert!(
                    request_line.starts_with("GET /.well-known/did.json HTTP/1.1\r\n"),
                    "{request_line}"
                );
                let n = seen.requests.fetch_add(1, Ordering::SeqCst);
                let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                seen.max_in_flight.fetch_max(now, Ordering::SeqCst);
                let r = reply(&did, n);
                tokio::time::sleep(r.delay).await;
                seen.in_flight.fetch_sub(1, Ordering::SeqCst);
                let mut out = format!(
                    "HTTP/1.1 {} X\r\nContent-Type: application/json\r\n",
                    r.status
                );
                if r.content_length {
                    out.push_str(&format!("Content-Length: {}\r\n", r.body.len()));
                }
                if let Some(loc) = &r.location {
                    out.push_str(&format!("Location: {loc}\r\n"));
                }
                out.push_str("Connection: close\r\n\r\n");
                let mut bytes = out.into_bytes();
                bytes.extend_from_slice(&r.body);
                let _ = conn.write_all(&bytes).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    Server { did, seen }
}

fn key(seed: u64) -> PublicKey {
    PrivateKey::from_seed(KeyType::P256, seed).public_key()
}

fn doc(did: &str, key: &PublicKey) -> Value {
    json!({
        "@context": ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/multikey/v1"],
        "id": did,
        "alsoKnownAs": ["at://web-user.test"],
        "verificationMethod": [{
            "id": format!("{did}#atproto"),
            "type": "Multikey",
            "controller": did,
            "publicKeyMultibase": key.to_multikey(),
        }],
        "service": [{
            "id": "#atproto_pds",
            "type": "AtprotoPersonalDataServer",
            "serviceEndpoint": "http://localhost:1/",
        }],
    })
}

fn config() -> ResolverConfig {
    ResolverConfig {
        allow_http_localhost: true,
        timeout: Duration::from_secs(5),
        ..ResolverConfig::default()
    }
}

fn resolver(config: ResolverConfig) -> Resolver {
    Resolver::new(config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_did_web_document_resolves_and_is_cached() {
    let k = key(1);
    let kc = k.clone();
    let server = serve(move |did, _| Reply::json(&doc(did, &kc)), None).await;
    let r = resolver(config());
    let id = r.resolve(&server.did).await.unwrap();
    assert_eq!(id.did, server.did);
    assert_eq!(id.signing_key, k);
    assert_eq!(id.pds.as_deref(), Some("http://localhost:1"));
    assert_eq!(id.handle.as_deref(), Some("web-user.test"));
    let again = r.resolve(&server.did).await.unwrap();
    assert!(Arc::ptr_eq(&id, &again));
    assert_eq!(server.requests(), 1);
    assert_eq!(r.metrics().requests_sent(barn_identity::Method::Web), 1);
    assert_eq!(r.metrics().cache_hits.get(), 1);
    assert_eq!(r.metrics().cache_misses.get(), 1);
    assert!(Arc::ptr_eq(&r.cached(&server.did).unwrap(), &id));

    // The same DID without the testing switch is refused before any request.
    let strict = resolver(ResolverConfig::default());
    let err = strict.resolve(&server.did).await.unwrap_err();
    assert_eq!(err.reason(), "unsupported_did_web", "{err}");
    assert_eq!(server.requests(), 1);
    // So is a path-based did:web, whatever the switch says.
    let path = format!("{}:user:alice", server.did);
    assert_eq!(
        r.resolve(&path).await.unwrap_err().reason(),
        "unsupported_did_web"
    );
    assert_eq!(server.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_hosts_give_distinct_errors() {
    let r = resolver(ResolverConfig {
        timeout: Duration::from_millis(400),
        max_doc_bytes: 4096,
        ..config()
    });

    let s = serve(|_, _| Reply::status(404), None).await;
    let err = r.resolve(&s.did).await.unwrap_err();
    assert!(matches!(err, Error::DidNotFound { .. }), "{err}");
    assert!(err.is_not_found() && !err.is_transient());

    let s = serve(|_, _| Reply::status(410), None).await;
    let err = r.resolve(&s.did).await.unwrap_err();
    assert!(matches!(err, Error::DidTombstoned { .. }), "{err}");
    assert_eq!(err.reason(), "tombstoned");
    assert!(err.is_not_found());

    let s = serve(|_, _| Reply::status(503), None).await;
    let err = r.resolve(&s.did).await.unwrap_err();
    assert!(
        matches!(err, Error::HttpStatus { status: 503, .. }),
        "{err}"
    );
    assert!(err.is_transient() && !err.is_not_found());
    // Failures are not cached: the next call asks again.
    let _ = r.resolve(&s.did).await.unwrap_err();
    assert_eq!(s.requests(), 2);

    // A redirect is not followed, even to a good document.
    let good = serve(|did, _| Reply::json(&doc(did, &key(2))), None).await;
    let target = format!(
        "http://localhost:{}/.well-known/did.json",
        good.did.rsplit("%3A").next().unwrap()
    );
    let s = serve(
        move |_, _| Reply {
            location: Some(target.clone()),
            ..Reply::status(302)
        },
        None,
    )
    .await;
    let err = r.resolve(&s.did).await.unwrap_err();
    assert!(
        matches!(err, Error::HttpStatus { status: 302, .. }),
        "{err}"
    );
    assert_eq!(good.requests(), 0);

    // A document for another DID (here: the good server's) is refused.
    let other = good.did.clone();
    let s = serve(move |_, _| Reply::json(&doc(&other, &key(2))), None).await;
    let err = r.resolve(&s.did).await.unwrap_err();
    assert!(
        matches!(&err, Error::IdMismatch { id, .. } if *id == good.did),
        "{err}"
    );

    // Not JSON.
    let s = serve(
        |_, _| Reply {
            body: b"<html>".to_vec(),
            ..Reply::status(200)
        },
        None,
    )
    .await;
    assert_eq!(r.resolve(&s.did).await.unwrap_err().reason(), "bad_json");

    // Too large, announced, and too large, only found out while reading.
    for content_length in [true, false] {
        let s = serve(
            move |did, _| {
                let mut d = doc(did, &key(3));
                d["padding"] = json!("x".repeat(8192));
                Reply {
                    content_length,
                    ..Reply::json(&d)
                }
            },
            None,
        )
        .await;
        let err = r.resolve(&s.did).await.unwrap_err();
        assert!(
            matches!(err, Error::TooLarge { limit: 4096, .. }),
            "content_length={content_length}: {err}"
        );
    }
    // A small body without Content-Length is fine.
    let s = serve(
        |did, _| Reply {
            content_length: false,
            ..Reply::json(&doc(did, &key(3)))
        },
        None,
    )
    .await;
    assert_eq!(r.resolve(&s.did).await.unwrap().signing_key, key(3));

    // Slower than the timeout.
    let s = serve(
        |did, _| Reply::json(&doc(did, &key(4))).delayed(Duration::from_secs(3)),
        None,
    )
    .await;
    let t0 = std::time::Instant::now();
    let err = r.resolve(&s.did).await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(err.is_transient());
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());

    // Nobody listening.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let err = r
        .resolve(&format!("did:web:localhost%3A{closed}"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err}");

    // Every failure was counted under its reason.
    let count = |outcome: &str| {
        r.metrics()
            .resolutions
            .with_label_values(&["web", outcome])
            .get()
    };
    assert_eq!(count("not_found"), 1);
    assert_eq!(count("tombstoned"), 1);
    assert_eq!(count("http_status"), 3);
    assert_eq!(count("too_large"), 2);
    assert_eq!(count("timeout"), 1);
    assert_eq!(count("ok"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_refresh_and_invalidate_go_back_to_the_host() {
    // The host rotates its key after the first answer.
    let s = serve(
        |did, n| Reply::json(&doc(did, &key(if n == 0 { 10 } else { 11 }))),
        None,
    )
    .await;
    let r = resolver(ResolverConfig {
        ttl: Duration::from_millis(300),
        ..config()
    });
    let first = r.resolve(&s.did).await.unwrap();
    assert_eq!(first.signing_key, key(10));
    // Within the TTL: the cache, even though the host has moved on.
    assert!(Arc::ptr_eq(&first, &r.resolve(&s.did).await.unwrap()));
    assert_eq!(s.requests(), 1);

    // A signature failure prompts refresh(): straight to the host.
    let refreshed = r.refresh(&s.did).await.unwrap();
    assert_eq!(refreshed.signing_key, key(11));
    assert_eq!(s.requests(), 2);
    assert_eq!(r.metrics().refreshes.get(), 1);
    let cached = r.resolve(&s.did).await.unwrap();
    assert!(Arc::ptr_eq(&refreshed, &cached), "refresh fills the cache");
    assert_eq!(s.requests(), 2);

    // Past the TTL: fetched again.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(r.cached(&s.did).is_none());
    let later = r.resolve(&s.did).await.unwrap();
    assert!(!Arc::ptr_eq(&later, &cached));
    assert_eq!(s.requests(), 3);

    // invalidate(): fetched again.
    r.invalidate(&s.did);
    assert!(r.cached(&s.did).is_none());
    let _ = r.resolve(&s.did).await.unwrap();
    assert_eq!(s.requests(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_one_request_and_the_limit_holds() {
    let s = serve(
        |did, _| Reply::json(&doc(did, &key(20))).delayed(Duration::from_millis(300)),
        None,
    )
    .await;
    let r = resolver(config());
    let calls = (0..50).map(|_| {
        let r = r.clone();
        let did = s.did.clone();
        tokio::spawn(async move { r.resolve(&did).await })
    });
    let ids: Vec<_> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|j| j.unwrap().unwrap())
        .collect();
    assert_eq!(s.requests(), 1);
    assert!(ids.iter().all(|i| Arc::ptr_eq(i, &ids[0])));
    assert_eq!(r.metrics().joins.get(), 49);
    assert_eq!(r.metrics().total_requests(), 1);

    // Six DIDs on six hosts, at most two requests at a time.
    let seen = Arc::new(Seen::default());
    let mut servers = Vec::new();
    for seed in 0..6 {
        servers.push(
            serve(
                move |did, _| {
                    Reply::json(&doc(did, &key(30 + seed))).delayed(Duration::from_millis(200))
                },
                Some(seen.clone()),
            )
            .await,
        );
    }
    let limited = resolver(ResolverConfig {
        max_concurrency: 2,
        ..config()
    });
    let t0 = std::time::Instant::now();
    let all = futures::future::join_all(servers.iter().map(|s| limited.resolve(&s.did))).await;
    assert!(all.iter().all(Result::is_ok));
    assert_eq!(seen.requests.load(Ordering::SeqCst), 6);
    assert_eq!(seen.max_in_flight.load(Ordering::SeqCst), 2);
    assert!(
        t0.elapsed() >= Duration::from_millis(550),
        "{:?}",
        t0.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flights_outlive_their_callers_and_stale_ones_do_not_win() {
    // A caller that gives up does not waste the request.
    let s = serve(
        |did, _| Reply::json(&doc(did, &key(40))).delayed(Duration::from_millis(300)),
        None,
    )
    .await;
    let r = resolver(config());
    let gave_up = tokio::time::timeout(Duration::from_millis(50), r.resolve(&s.did)).await;
    assert!(gave_up.is_err());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(r.cached(&s.did).unwrap().signing_key, key(40));
    let _ = r.resolve(&s.did).await.unwrap();
    assert_eq!(s.requests(), 1);

    // A slow resolve (old key) is overtaken by a fast refresh (new key):
    // the refresh's answer stays cached when the slow one lands.
    let s = serve(
        |did, n| {
            if n == 0 {
                Reply::json(&doc(did, &key(50))).delayed(Duration::from_millis(400))
            } else {
                Reply::json(&doc(did, &key(51)))
            }
        },
        None,
    )
    .await;
    let slow = {
        let (r, did) = (r.clone(), s.did.clone());
        tokio::spawn(async move { r.resolve(&did).await })
    };
    while s.requests() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let fresh = r.refresh(&s.did).await.unwrap();
    assert_eq!(fresh.signing_key, key(51));
    // The slow caller still gets the answer it waited for…
    assert_eq!(slow.await.unwrap().unwrap().signing_key, key(50));
    // …but the cache keeps the newer one.
    assert_eq!(r.cached(&s.did).unwrap().signing_key, key(51));
    assert!(Arc::ptr_eq(&r.resolve(&s.did).await.unwrap(), &fresh));
    assert_eq!(s.requests(), 2);
}
