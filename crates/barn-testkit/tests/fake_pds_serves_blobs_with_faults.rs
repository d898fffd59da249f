#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The fake PDS's `getBlob`, which blob-fetching tests drive barn with: a
//! blob set on the fake comes back byte for byte under its raw CID with the
//! PDS's headers, errors are the reference PDS's (status, XRPC name),
//! each scripted fault is seen exactly once and in order before the blob
//! is served normally again, and every request is counted per CID.

use std::time::{Duration, Instant};

use bytes::Bytes;
use cid::Cid;
use serde_json::Value;

use barn_testkit::{BlobFault, FakeAccount, FakePds};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

async fn get_blob(fake: &FakePds, did: &str, cid: &Cid) -> reqwest::Response {
    client()
        .get(format!("{}/xrpc/com.atproto.sync.getBlob", fake.url()))
        .query(&[("did", did), ("cid", &cid.to_string())])
        .send()
        .await
        .unwrap()
}

/// The body, read chunk by chunk (as a streaming client does), or the
/// error that ended it and how many bytes came before.
async fn read_body(mut resp: reqwest::Response) -> Result<Vec<u8>, (usize, reqwest::Error)> {
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => return Ok(body),
            Err(e) => return Err((body.len(), e)),
        }
    }
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).map(|v| v.to_str().unwrap())
}

/// Status, `error` and `message` of an XRPC error answer.
async fn xrpc_error(resp: reqwest::Response) -> (u16, String, String) {
    let status = resp.status().as_u16();
    assert_eq!(header(&resp, "content-type"), Some("application/json"));
    let body: Value = resp.json().await.unwrap();
    (
        status,
        body["error"].as_str().unwrap().to_owned(),
        body["message"].as_str().unwrap().to_owned(),
    )
}

/// Bytes that are not all alike, so a flipped or missing piece shows.
fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect::<Vec<u8>>()
        .into()
}

#[tokio::test]
async fn blob_is_served_under_its_raw_cid_with_pds_headers() {
    let fake = FakePds::start().await.unwrap();
    let did = FakeAccount::plc_did(1);
    let bytes = pattern(300_000, 7);
    let cid = fake.set_blob(&did, bytes.clone(), "image/jpeg");
    assert_eq!(cid.version(), cid::Version::V1);
    assert_eq!(cid.codec(), 0x55, "raw codec");
    assert_eq!(cid.hash().code(), 0x12, "sha-256");
    assert_eq!(cid, barn_repo::cid_for_raw(&bytes));

    let resp = get_blob(&fake, &did, &cid).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), Some("image/jpeg"));
    assert_eq!(header(&resp, "content-length"), Some("300000"));
    assert_eq!(header(&resp, "x-content-type-options"), Some("nosniff"));
    assert_eq!(
        header(&resp, "content-disposition"),
        Some(format!("attachment; filename=\"{cid}\"").as_str())
    );
    let body = read_body(resp).await.unwrap();
    assert_eq!(body, bytes);
    assert_eq!(barn_repo::cid_for_raw(&body), cid);
    assert_eq!(fake.blob_requests(&cid), 1);

    // An empty MIME type is served as the PDS serves it.
    let other = fake.set_blob(&did, pattern(10, 1), "");
    let resp = get_blob(&fake, &did, &other).await;
    assert_eq!(
        header(&resp, "content-type"),
        Some("application/octet-stream")
    );
}

#[tokio::test]
async fn errors_are_the_reference_pds_errors() {
    let fake = FakePds::start().await.unwrap();
    let did = FakeAccount::plc_did(2);
    let cid = fake.set_blob(&did, pattern(1000, 2), "image/png");
    let unknown_cid = barn_repo::cid_for_raw(b"never uploaded");

    // A known account without that blob: 400 InvalidRequest, as
    // @atproto/pds's getBlob handler answers (not the lexicon's name).
    let (status, error, message) = xrpc_error(get_blob(&fake, &did, &unknown_cid).await).await;
    assert_eq!(
        (status, error.as_str(), message.as_str()),
        (400, "InvalidRequest", "Blob not found")
    );

    // Blobs are per account: another account's CID is not found either,
    // and an account known only by its repo is a known account.
    let mut acct = FakeAccount::new(&FakeAccount::plc_did(3), 3);
    let draft = acct.draft(1).unwrap();
    acct.apply(&draft);
    fake.set_repo(acct.did(), acct.car());
    let (status, error, _) = xrpc_error(get_blob(&fake, acct.did(), &cid).await).await;
    assert_eq!((status, error.as_str()), (400, "InvalidRequest"));

    // An unknown account.
    let stranger = FakeAccount::plc_did(4);
    let (status, error, message) = xrpc_error(get_blob(&fake, &stranger, &cid).await).await;
    assert_eq!((status, error.as_str()), (400, "RepoNotFound"));
    assert!(message.contains(&stranger), "{message}");

    // Inactive accounts, by status, before the blob is looked at.
    for (status_name, expected) in [
        ("deactivated", "RepoDeactivated"),
        ("takendown", "RepoTakendown"),
        ("suspended", "RepoSuspended"),
    ] {
        fake.set_status(&did, false, Some(status_name));
        let (status, error, _) = xrpc_error(get_blob(&fake, &did, &cid).await).await;
        assert_eq!((status, error.as_str()), (400, expected), "{status_name}");
        let (_, error, _) = xrpc_error(get_blob(&fake, &did, &unknown_cid).await).await;
        assert_eq!(error, expected, "{status_name}, unknown blob");
    }
    fake.set_status(&did, true, None);
    assert_eq!(get_blob(&fake, &did, &cid).await.status(), 200);

    // A cid that does not parse is refused before anything is counted.
    let resp = client()
        .get(format!("{}/xrpc/com.atproto.sync.getBlob", fake.url()))
        .query(&[("did", did.as_str()), ("cid", "not-a-cid")])
        .send()
        .await
        .unwrap();
    let (status, error, _) = xrpc_error(resp).await;
    assert_eq!((status, error.as_str()), (400, "InvalidRequest"));

    assert_eq!(fake.blob_requests(&cid), 6);
    assert_eq!(fake.blob_requests(&unknown_cid), 4);
}

#[tokio::test]
async fn each_scripted_fault_is_seen_once_in_order_then_the_blob() {
    let fake = FakePds::start().await.unwrap();
    let did = FakeAccount::plc_did(5);
    // Several chunks long, so a cut and a flip land inside the body.
    let bytes = pattern(1_000_003, 5);
    let cid = fake.set_blob(&did, bytes.clone(), "video/mp4");
    let bystander = fake.set_blob(&did, pattern(100, 9), "image/gif");
    fake.script_blob(
        &cid,
        vec![
            BlobFault::NotFound,
            BlobFault::NotFoundByLexicon,
            BlobFault::TooManyRequests {
                retry_after_secs: 7,
            },
            BlobFault::ServerError,
        ],
    );
    // Appended after the first four.
    fake.script_blob(
        &cid,
        vec![
            BlobFault::WrongBody,
            BlobFault::CutAfter(70_000),
            BlobFault::Delay(Duration::from_millis(400)),
            BlobFault::NoLength,
        ],
    );

    let (status, error, message) = xrpc_error(get_blob(&fake, &did, &cid).await).await;
    assert_eq!(
        (status, error.as_str(), message.as_str()),
        (400, "InvalidRequest", "Blob not found")
    );

    let (status, error, _) = xrpc_error(get_blob(&fake, &did, &cid).await).await;
    assert_eq!((status, error.as_str()), (400, "BlobNotFound"));

    let resp = get_blob(&fake, &did, &cid).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(header(&resp, "retry-after"), Some("7"));
    assert_eq!(header(&resp, "ratelimit-remaining"), Some("0"));
    let (_, error, message) = xrpc_error(resp).await;
    assert_eq!(
        (error.as_str(), message.as_str()),
        ("RateLimitExceeded", "Rate Limit Exceeded")
    );

    let (status, error, message) = xrpc_error(get_blob(&fake, &did, &cid).await).await;
    assert_eq!(
        (status, error.as_str(), message.as_str()),
        (500, "InternalServerError", "Internal Server Error")
    );

    // WrongBody: a whole, well-framed 200 whose bytes do not hash to the CID.
    let resp = get_blob(&fake, &did, &cid).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-length"), Some("1000003"));
    let body = read_body(resp).await.unwrap();
    assert_eq!(body.len(), bytes.len());
    assert_ne!(body, bytes);
    let differing = body.iter().zip(bytes.iter()).filter(|(a, b)| a != b);
    assert_eq!(differing.count(), 1, "exactly one byte is altered");
    assert_ne!(barn_repo::cid_for_raw(&body), cid);

    // CutAfter: the full length is promised, 70,000 bytes come, then EOF.
    let resp = get_blob(&fake, &did, &cid).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-length"), Some("1000003"));
    let (received, _err) = read_body(resp).await.expect_err("the body is cut short");
    assert_eq!(received, 70_000);

    // Delay: late, then the right bytes.
    let started = Instant::now();
    let resp = get_blob(&fake, &did, &cid).await;
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(resp.status(), 200);
    assert_eq!(read_body(resp).await.unwrap(), bytes);

    // NoLength: chunked, no Content-Length, the right bytes.
    let resp = get_blob(&fake, &did, &cid).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-length"), None);
    assert_eq!(header(&resp, "transfer-encoding"), Some("chunked"));
    assert_eq!(resp.content_length(), None);
    assert_eq!(read_body(resp).await.unwrap(), bytes);

    // The script is spent: served normally from now on.
    for _ in 0..2 {
        let resp = get_blob(&fake, &did, &cid).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "content-type"), Some("video/mp4"));
        let body = read_body(resp).await.unwrap();
        assert_eq!(barn_repo::cid_for_raw(&body), cid);
    }

    assert_eq!(fake.blob_requests(&cid), 10);
    // Another CID's requests are its own, and it had no faults.
    assert_eq!(fake.blob_requests(&bystander), 0);
    assert_eq!(get_blob(&fake, &did, &bystander).await.status(), 200);
    assert_eq!(fake.blob_requests(&bystander), 1);
    assert_eq!(fake.blob_requests(&cid), 10);
}

#[tokio::test]
async fn a_body_fault_on_a_failing_request_is_spent_on_the_error() {
    let fake = FakePds::start().await.unwrap();
    let did = FakeAccount::plc_did(6);
    let cid = fake.set_blob(&did, pattern(5000, 6), "image/webp");
    fake.script_blob(&cid, vec![BlobFault::CutAfter(10)]);
    fake.set_status(&did, false, Some("takendown"));
    let (_, error, _) = xrpc_error(get_blob(&fake, &did, &cid).await).await;
    assert_eq!(error, "RepoTakendown");
    fake.set_status(&did, true, None);
    let body = read_body(get_blob(&fake, &did, &cid).await).await.unwrap();
    assert_eq!(barn_repo::cid_for_raw(&body), cid, "the cut was spent");
}

/// A blob far larger than any chunk is streamed from the one copy the fake
/// holds; the client reads it in pieces and gets every byte, and a cut in
/// the middle of it is seen as a short body.
#[tokio::test]
async fn a_large_blob_streams_out_whole_and_can_be_cut() {
    let fake = FakePds::start().await.unwrap();
    let did = FakeAccount::plc_did(7);
    let len = 24 * 1024 * 1024 + 5;
    let bytes = pattern(len, 3);
    let cid = fake.set_blob(&did, bytes.clone(), "video/mp4");
    fake.script_blob(&cid, vec![BlobFault::CutAfter(len / 2)]);

    let resp = get_blob(&fake, &did, &cid).await;
    assert_eq!(resp.content_length(), Some(len as u64));
    let (received, _) = read_body(resp).await.expect_err("cut");
    assert_eq!(received, len / 2);

    let mut resp = get_blob(&fake, &did, &cid).await;
    assert_eq!(resp.content_length(), Some(len as u64));
    let mut received = 0;
    let mut chunks = 0;
    let mut same = true;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        same &= chunk[..] == bytes[received..received + chunk.len()];
        received += chunk.len();
        chunks += 1;
    }
    assert_eq!(received, len);
    assert!(same);
    assert!(chunks > 1, "streamed in pieces");
}
