#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Malformed DIDs, unknown revs, huge limits, repeated and missing
//! parameters, path tricks, wrong HTTP methods: each gets the XRPC error a
//! client can act on, as JSON, and never a 5xx. Then the limits: the
//! per-address rate limit answers 429 with Retry-After, a full set of CAR
//! slots answers 503 ServerBusy, and a reader that stalls gives its slot
//! back.

mod common;

use std::time::Duration;

use barn_testkit::DraftOptions;
use barn_xrpc::{GatewayConfig, RateLimit};
use common::{ADMIN, Fixture, outcome};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_the_right_xrpc_error_never_a_5xx() {
    let (fake, store, dir) = Fixture::parts().await;
    let alice = common::account(&fake, &store, 811, 2, 3);
    let fx = Fixture::serve(fake, store, dir, common::config()).await;
    let did = alice.did();
    /// (method, query, token, status, error name)
    type Case<'a> = (
        &'a str,
        Vec<(&'a str, &'a str)>,
        Option<&'a str>,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "com.atproto.sync.getRepo",
            vec![("did", "not-a-did")],
            None,
            400,
            "InvalidRequest",
        ),
        (
            "com.atproto.sync.getRepo",
            vec![("did", "did:plc:")],
            None,
            400,
            "InvalidRequest",
        ),
        (
            "com.atproto.sync.getRepo",
            vec![],
            None,
            400,
            "InvalidRequest",
        ),
        (
            "com.atproto.sync.getRepo",
            vec![("did", did), ("did", did)],
            None,
            400,
            "InvalidRequest",
        ),
        (
            "com.atproto.sync.getRepo",
            vec![("did", did), ("since", "yesterday")],
            None,
            400,
            "InvalidRequest",
        ),
        (
            "com.atproto.sync.getRepo",
            vec![("did", "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa")],
            None,
            400,
            "RepoNotFound",
        ),
        (
            "com.atproto.sync.listRepos",
            vec![("limit", "100000000000000000000")],
            None,
            400,
            "InvalidRequest",
        ),
        (
            "com.atproto.sync.listRepos",
            vec![("limit", "1001")],
            None,
            400,
            "InvalidRequest",
        ),
        (
            "com.atproto.sync.listRepos",
            vec![("limit", "-1")],
            None,
            400,
            "InvalidRequest",
        ),
        (
            "com.atproto.sync.listRepos",
            vec![("cursor", "../../etc/passwd")],
            None,
            400,
            "InvalidRequest",
        ),
        (
            "com.atproto.repo.listRecords",
            vec![
                ("repo", did),
                ("collection", "com.example.thing"),
                ("limit", "101"),
            ],
            None,
            400,
            "InvalidRequest",
        ),
        (
            "com.atproto.repo.listRecords",
            vec![("repo", did), ("collection", "../../x")],
            None,
            400,
            "InvalidRequest",
        ),
        (
            "com.atproto.repo.getRecord",
            vec![
                ("repo", did),
                ("collection", "com.example.thing"),
                ("rkey", ".."),
            ],
            None,
            400,
            "InvalidRequest",
        ),
        (
            "com.atproto.repo.getRecord",
            vec![
                ("repo", did),
                ("collection", "com.example.thing"),
                ("rkey", "nope"),
            ],
            None,
            400,
            "RecordNotFound",
        ),
        (
            "com.atproto.repo.getRecord",
            vec![
                ("repo", "nobody.test"),
                ("collection", "com.example.thing"),
                ("rkey", "x"),
            ],
            None,
            400,
            "RepoNotFound",
        ),
        (
            "com.atproto.sync.getBlob",
            vec![("did", did), ("cid", "../../../etc/passwd")],
            None,
            400,
            "InvalidRequest",
        ),
        (
            "com.atproto.sync.getBlob",
            vec![
                ("did", did),
                (
                    "cid",
                    "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy",
                ),
            ],
            None,
            400,
            "BlobNotFound",
        ),
        (
            "com.atproto.sync.getRecord",
            vec![
                ("did", did),
                ("collection", "com.example.thing"),
                ("rkey", "absent"),
            ],
            None,
            400,
            "RecordNotFound",
        ),
        (
            "dev.barn.sync.getRepoAt",
            vec![("did", did), ("rev", "3zzzzzzzzzzzz")],
            Some(ADMIN),
            400,
            "RevisionNotFound",
        ),
        (
            "dev.barn.sync.getRepoAt",
            vec![("did", did), ("rev", "not-a-tid")],
            Some(ADMIN),
            400,
            "InvalidRequest",
        ),
        (
            "dev.barn.sync.getRepoAt",
            vec![("did", did), ("at", "1990-01-01T00:00:00Z")],
            Some(ADMIN),
            400,
            "RevisionNotFound",
        ),
        (
            "dev.barn.sync.getRepoAt",
            vec![("did", did), ("at", "2024-13-45T99:00:00Z")],
            Some(ADMIN),
            400,
            "InvalidRequest",
        ),
        (
            "dev.barn.sync.getRepoAt",
            vec![
                ("did", did),
                ("at", "2024-01-01T00:00:00Z"),
                ("rev", "3zzzzzzzzzzzz"),
            ],
            Some(ADMIN),
            400,
            "InvalidRequest",
        ),
        (
            "dev.barn.sync.getRepoAt",
            vec![("did", did)],
            Some(ADMIN),
            400,
            "InvalidRequest",
        ),
        (
            "dev.barn.sync.listCommits",
            vec![("did", did), ("limit", "0")],
            Some(ADMIN),
            400,
            "InvalidRequest",
        ),
        (
            "dev.barn.sync.listCommits",
            vec![("did", did), ("cursor", "x".repeat(600).leak())],
            Some(ADMIN),
            400,
            "InvalidRequest",
        ),
        (
            "dev.barn.backup.getStatus",
            vec![("did", "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa")],
            Some(ADMIN),
            400,
            "RepoNotFound",
        ),
        (
            "com.atproto.server.createSession",
            vec![],
            None,
            501,
            "MethodNotImplemented",
        ),
        (
            "com.atproto.repo.uploadBlob",
            vec![],
            None,
            501,
            "MethodNotImplemented",
        ),
    ];
    for (method, query, token, status, error) in &cases {
        let resp = fx.get(method, query, *token).await;
        let got = outcome(resp).await;
        assert_eq!(
            (got.0, got.1.as_str()),
            (*status, *error),
            "{method} {query:?}"
        );
    }

    // Raw paths: traversal, odd method names, wrong HTTP methods.
    for (path, status, error) in [
        ("/xrpc/..%2F..%2Fetc%2Fpasswd", 400, "InvalidRequest"),
        ("/xrpc/../../etc/passwd", 404, "NotFound"),
        ("/../../etc/passwd", 404, "NotFound"),
        ("/xrpc/", 404, "NotFound"),
        ("/xrpc/com.atproto.sync.getRepo/extra", 404, "NotFound"),
        ("/xrpc/%00", 400, "InvalidRequest"),
        ("/etc/passwd", 404, "NotFound"),
    ] {
        let resp = fx
            .http
            .get(format!("{}{path}", fx.url))
            .send()
            .await
            .unwrap();
        let got = outcome(resp).await;
        assert_eq!((got.0, got.1.as_str()), (status, error), "GET {path}");
    }
    let resp = fx
        .http
        .post(format!(
            "{}/xrpc/com.atproto.sync.getRepo?did={did}",
            fx.url
        ))
        .send()
        .await
        .unwrap();
    let got = outcome(resp).await;
    assert_eq!(
        (got.0, got.1.as_str()),
        (400, "InvalidRequest"),
        "POST to a query"
    );
    // A 60 kB query string (about the most a URI may hold) is an error,
    // not a crash.
    let huge = "a".repeat(60_000);
    let resp = fx
        .http
        .get(format!(
            "{}/xrpc/com.atproto.sync.getRepo?did={huge}",
            fx.url
        ))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_client_error(), "{}", resp.status());
    // Still serving.
    let resp = fx
        .get("com.atproto.sync.getRepo", &[("did", did)], None)
        .await;
    assert_eq!(resp.status(), 200);
    let errors_5xx: u64 = ["InternalServerError"]
        .iter()
        .map(|e| fx.gateway.metrics().requests("com.atproto.sync.getRepo", e))
        .sum();
    assert_eq!(errors_5xx, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_and_car_slots_refuse_politely_and_recover() {
    let (fake, store, dir) = Fixture::parts().await;
    // ~24 MB of records: more than socket buffers and the channel hold,
    // so an unread CAR keeps its slot.
    let mut big = barn_testkit::FakeAccount::new(&barn_testkit::FakeAccount::plc_did(821), 821);
    for seq in 0..4 {
        let draft = big
            .draft_with(
                seq,
                &DraftOptions {
                    records: 600,
                    padding: 10_000,
                    ..DraftOptions::default()
                },
            )
            .unwrap();
        big.apply(&draft);
        common::store_draft(&store, fake.url(), &big, &draft);
    }
    fake.set_did_doc(big.did(), big.did_doc(fake.url()));
    let fx = Fixture::serve(
        fake,
        store,
        dir,
        GatewayConfig {
            max_concurrent_cars: 1,
            car_queue_timeout: Duration::from_millis(200),
            car_stall_timeout: Duration::from_millis(800),
            rate_limit: Some(RateLimit {
                per_second: 5.0,
                burst: 10.0,
            }),
            ..common::config()
        },
    )
    .await;
    let did = big.did();

    // One reader takes the only slot and stops reading.
    let stalled = fx
        .get("com.atproto.sync.getRepo", &[("did", did)], None)
        .await;
    assert_eq!(stalled.status(), 200);
    let busy = fx
        .get("com.atproto.sync.getRepo", &[("did", did)], None)
        .await;
    assert_eq!(busy.headers().get("retry-after").unwrap(), "5");
    assert_eq!(outcome(busy).await, (503, "ServerBusy".into()));
    // The stalled reader's slot comes back after the stall timeout.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let again = fx
        .get("com.atproto.sync.getRepo", &[("did", did)], None)
        .await;
    assert_eq!(again.status(), 200);
    let car = again.bytes().await.unwrap();
    assert!(car.len() > 20_000_000, "{} bytes", car.len());
    assert_eq!(common::car_root(&car), big.head().unwrap().cid);
    drop(stalled);
    assert!(fx.gateway.metrics().rejections("busy") >= 1);
    assert!(fx.gateway.metrics().rejections("client_gone") >= 1);

    // Burst of 10 at 5/s: a tight loop of 30 gets refused, with Retry-After.
    let mut refused = 0;
    for _ in 0..30 {
        let r = fx
            .get("com.atproto.sync.getLatestCommit", &[("did", did)], None)
            .await;
        if r.status() == 429 {
            assert!(r.headers().get("retry-after").is_some());
            assert_eq!(outcome(r).await.1, "RateLimitExceeded");
            refused += 1;
        }
    }
    assert!(refused >= 10, "only {refused} of 30 refused");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = fx
        .get("com.atproto.sync.getLatestCommit", &[("did", did)], None)
        .await;
    assert_eq!(r.status(), 200, "the bucket refills");
    // Health and metrics are not rate limited.
    for _ in 0..20 {
        let r = fx
            .http
            .get(format!("{}/xrpc/_health", fx.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // The Prometheus page says what happened, by method and answer.
    let text = fx
        .http
        .get(format!("{}/metrics", fx.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        r#"barn_xrpc_requests_total{answer="RateLimitExceeded",method="com.atproto.sync.getLatestCommit"}"#,
        r#"barn_xrpc_requests_total{answer="ServerBusy",method="com.atproto.sync.getRepo"}"#,
        r#"barn_xrpc_rejected_total{reason="busy"}"#,
        r#"barn_xrpc_car_bytes_total{kind="current"}"#,
    ] {
        assert!(text.contains(needle), "{needle} not in /metrics:\n{text}");
    }
}
