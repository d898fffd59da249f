#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The S3 server blob-store tests run against: it installs and starts on
//! its own, stores and returns objects byte for byte, refuses connections
//! while stopped, and comes back on the same port with its buckets and
//! objects, as an "object store unavailable for a while" test needs.
//! CI runs this binary's install path first (`.ci/run`).

use std::time::Duration;

use barn_testkit::S3Server;

/// Bytes of every value, so a dropped or reordered byte shows.
fn object(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// An unsigned PUT: moto takes it for a new key.
async fn put(url: &str, body: Vec<u8>) -> reqwest::StatusCode {
    client()
        .put(url)
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
}

/// A GET with a placeholder `Authorization` header: moto checks no
/// signature, but answers 403 to an anonymous GET of a private key.
async fn get(url: &str) -> reqwest::Result<reqwest::Response> {
    client()
        .get(url)
        .header("authorization", "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0")
        .send()
        .await
}

#[tokio::test]
async fn s3_server_starts_stops_and_serves() {
    let mut s3 = S3Server::start().await.unwrap();
    let endpoint = s3.endpoint();
    assert_eq!(endpoint, format!("http://127.0.0.1:{}", s3.port()));
    s3.create_bucket("blobs").await.unwrap();

    // Byte-identical round trip, a key with slashes as a blob store uses.
    let url = format!("{endpoint}/blobs/did/plc/abc/bafkrei-one");
    let body = object(3 * 1024 * 1024 + 17);
    assert_eq!(put(&url, body.clone()).await, 200);
    let resp = get(&url).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().to_vec(), body);

    // S3's answers, not a catch-all: a missing key is S3's NoSuchKey, and
    // an anonymous GET of a private key is refused.
    let resp = get(&format!("{endpoint}/blobs/missing")).await.unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.text().await.unwrap().contains("NoSuchKey"));
    assert_eq!(client().get(&url).send().await.unwrap().status(), 403);

    // Stopped: the port refuses connections.
    s3.stop().await;
    assert!(!s3.is_running());
    let err = get(&url)
        .await
        .expect_err("connection refused while stopped");
    assert!(err.is_connect(), "{err:?}");
    let refused = std::net::TcpStream::connect(("127.0.0.1", s3.port()))
        .expect_err("nothing listens on a stopped server's port");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);

    // Back on the same port, with the object it held.
    s3.start_again().await.unwrap();
    assert!(s3.is_running());
    assert_eq!(s3.endpoint(), endpoint);
    let resp = get(&url).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().to_vec(), body);
    let second = format!("{endpoint}/blobs/two");
    assert_eq!(put(&second, object(10)).await, 200);
    assert_eq!(
        get(&second).await.unwrap().bytes().await.unwrap().to_vec(),
        object(10)
    );

    // Stopping twice is harmless, and so is starting twice.
    s3.stop().await;
    s3.stop().await;
    s3.start_again().await.unwrap();
    s3.start_again().await.unwrap();
    assert_eq!(get(&url).await.unwrap().status(), 200);
}

/// A transfer in flight when the server stops is cut, not finished: the
/// client sees an error rather than a short body taken for a whole one.
#[tokio::test]
async fn stop_cuts_a_transfer_in_flight() {
    let mut s3 = S3Server::start().await.unwrap();
    s3.create_bucket("big").await.unwrap();
    let url = format!("{}/big/object", s3.endpoint());
    let body = object(48 * 1024 * 1024);
    assert_eq!(put(&url, body).await, 200);

    let mut resp = get(&url).await.unwrap();
    assert_eq!(resp.status(), 200);
    let first = resp.chunk().await.unwrap().expect("a first chunk");
    assert!(!first.is_empty());
    s3.stop().await;
    let mut received = first.len();
    let outcome = loop {
        match resp.chunk().await {
            Ok(Some(c)) => received += c.len(),
            Ok(None) => break Ok(received),
            Err(e) => break Err(e),
        }
    };
    assert!(
        outcome.is_err(),
        "the body must end in an error, got {outcome:?} of {} bytes",
        48 * 1024 * 1024
    );
    assert!(received < 48 * 1024 * 1024);
}

/// Several servers (as parallel test binaries start them) share one
/// install and run side by side, each with its own state.
#[tokio::test]
async fn servers_are_independent() {
    let (a, b) = tokio::join!(S3Server::start(), S3Server::start());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(a.port(), b.port());
    a.create_bucket("only-a").await.unwrap();
    let url = format!("{}/only-a/k", a.endpoint());
    assert_eq!(put(&url, object(5)).await, 200);
    let resp = get(&format!("{}/only-a/k", b.endpoint())).await.unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.text().await.unwrap().contains("NoSuchBucket"));
}
