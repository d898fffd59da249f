//! One `getBlob`, streamed: hashed and size-checked as it arrives, written
//! to the object store as it goes, kept only if the hash matches.
//!
//! # Tricky bits
//! - **Nothing wrong is ever stored.** The object store writer makes the
//!   object visible only when it is shut down, which happens after the
//!   whole body has been hashed and compared with the CID; any failure
//!   before that aborts it.
//! - A declared `Content-Length` over the limit is refused before reading;
//!   a body without one (or lying about it) is cut off at the limit.
//! - A blob already in the object store is not fetched again: its key is
//!   its hash, and only verified bytes ever appear under it.
//! - Errors are outcomes, sorted by what barn should do next ([`Failure`]):
//!   the source does not have it, the account is not active, slow down,
//!   the source or the network failed, the object store failed.

use std::time::Duration;

use bytes::Bytes;
use cid::Cid;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::storage::BlobStorage;

/// The raw codec: the only one blobs use.
const RAW: u64 = 0x55;
/// sha2-256's multihash code.
const SHA2_256: u64 = 0x12;
/// The most of an error body read, for its XRPC error name.
const ERROR_BODY_MAX: usize = 64 << 10;

/// Why a fetch did not store the blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The source says it has no such blob (`BlobNotFound`, a plain 404).
    NotFound(String),
    /// The account is not active on the source (`RepoDeactivated`,
    /// `RepoTakendown`, `RepoSuspended`, `RepoNotFound`), or barn knows it
    /// is not; the label is the status.
    Inactive(&'static str),
    /// 429: try again after the source's `Retry-After`.
    RateLimited(Option<Duration>),
    /// The source refused the request otherwise (another 4xx).
    Rejected(String),
    /// The source failed (5xx).
    Server(String),
    /// Connecting, or the body, failed (reset, cut, timeout).
    Network(String),
    /// The body's hash is not the CID's.
    HashMismatch(String),
    /// Over the size limit.
    TooLarge(u64),
    /// Not a blob CID (raw codec, sha-256).
    InvalidCid,
    /// barn does not track the account, or knows no host for it.
    Untracked,
    /// Writing to the object store failed.
    Storage(String),
}

impl Failure {
    /// Metric and state reason label.
    pub fn reason(&self) -> &'static str {
        match self {
            Failure::NotFound(_) => "not_found",
            Failure::Inactive("deactivated") => "account_deactivated",
            Failure::Inactive("takendown") => "account_takendown",
            Failure::Inactive("suspended") => "account_suspended",
            Failure::Inactive("deleted") => "account_deleted",
            Failure::Inactive(_) => "account_inactive",
            Failure::RateLimited(_) => "rate_limited",
            Failure::Rejected(_) => "rejected",
            Failure::Server(_) => "server_error",
            Failure::Network(_) => "network",
            Failure::HashMismatch(_) => "hash_mismatch",
            Failure::TooLarge(_) => "too_large",
            Failure::InvalidCid => "invalid_cid",
            Failure::Untracked => "untracked",
            Failure::Storage(_) => "store_unavailable",
        }
    }

    /// In words.
    pub fn detail(&self) -> String {
        match self {
            Failure::NotFound(s)
            | Failure::Rejected(s)
            | Failure::Server(s)
            | Failure::Network(s)
            | Failure::Storage(s) => s.clone(),
            Failure::HashMismatch(got) => format!("body hashes to {got}"),
            Failure::Inactive(status) => format!("account is {status}"),
            Failure::RateLimited(Some(d)) => format!("429, retry after {}s", d.as_secs()),
            Failure::RateLimited(None) => "429 without Retry-After".into(),
            Failure::TooLarge(n) => format!("{n} bytes or more, over the limit"),
            Failure::InvalidCid => "not a raw sha-256 CID".into(),
            Failure::Untracked => "account not tracked or has no host".into(),
        }
    }
}

/// A stored blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Bytes stored.
    pub size: u64,
    /// Content type the source served.
    pub mime: Option<String>,
}

/// Fetches `cid` of `did` from `host` into `storage`.
pub(crate) async fn fetch(
    client: &reqwest::Client,
    storage: &BlobStorage,
    host: &str,
    did: &str,
    cid: &Cid,
    max_bytes: u64,
) -> Result<Fetched, Failure> {
    if cid.codec() != RAW || cid.hash().code() != SHA2_256 || cid.hash().digest().len() != 32 {
        return Err(Failure::InvalidCid);
    }
    // Already there: an object appears only once its hash checked out, so
    // one that exists is this blob (stored before a crash that lost the
    // unsynced "stored" mark, or under another account).
    match storage.size(cid).await {
        Ok(Some(size)) => {
            tracing::debug!(%cid, "already in the object store");
            return Ok(Fetched { size, mime: None });
        }
        Ok(None) => {}
        Err(e) => return Err(Failure::Storage(e.to_string())),
    }
    let url = format!(
        "{}/xrpc/com.atproto.sync.getBlob",
        host.trim_end_matches('/')
    );
    let resp = client
        .get(&url)
        .query(&[("did", did), ("cid", &cid.to_string())])
        .send()
        .await
        .map_err(|e| Failure::Network(format!("{url}: {}", error_chain(&e))))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(refused(resp).await);
    }
    if let Some(len) = resp.content_length()
        && len > max_bytes
    {
        return Err(Failure::TooLarge(len));
    }
    let mime = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut writer = storage.writer(cid, mime.as_deref());
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut body = resp.bytes_stream();
    let failed = loop {
        let chunk: Bytes = match body.next().await {
            None => break None,
            Some(Ok(c)) => c,
            Some(Err(e)) => break Some(Failure::Network(format!("body: {}", error_chain(&e)))),
        };
        size += chunk.len() as u64;
        if size > max_bytes {
            break Some(Failure::TooLarge(size));
        }
        hasher.update(&chunk);
        if let Err(e) = writer.put(chunk).await {
            break Some(Failure::Storage(e.to_string()));
        }
    };
    let failed = failed.or_else(|| {
        let digest = hasher.finalize();
        (digest[..] != *cid.hash().digest()).then(|| Failure::HashMismatch(raw_cid_of(&digest)))
    });
    if let Some(failure) = failed {
        // Nothing of a failed fetch may stay behind; an abort that fails
        // leaves at most an unfinished upload, never an object.
        let _ = writer.abort().await;
        return Err(failure);
    }
    match writer.shutdown().await {
        Ok(()) => Ok(Fetched { size, mime }),
        Err(e) => Err(Failure::Storage(e.to_string())),
    }
}

/// The raw-codec CID string of a sha-256 digest (for the log).
fn raw_cid_of(digest: &[u8]) -> String {
    match cid::multihash::Multihash::<64>::wrap(SHA2_256, digest) {
        Ok(mh) => Cid::new_v1(RAW, mh).to_string(),
        Err(_) => "?".into(),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// Sorts a non-2xx answer by its status and XRPC error name.
async fn refused(resp: reqwest::Response) -> Failure {
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let body = read_some(resp).await;
    let (name, message) = xrpc_error(&body);
    let detail = format!(
        "{status}{}{}",
        name.as_deref().map(|n| format!(" {n}")).unwrap_or_default(),
        message
            .as_deref()
            .map(|m| format!(": {m}"))
            .unwrap_or_default()
    );
    // The reference PDS answers a blob it does not have with 400
    // InvalidRequest "Blob not found", not the lexicon's BlobNotFound.
    let blob_not_found = name.as_deref() == Some("BlobNotFound")
        || (name.as_deref() == Some("InvalidRequest")
            && message
                .as_deref()
                .is_some_and(|m| m.to_ascii_lowercase().contains("blob not found")));
    match (status.as_u16(), name.as_deref()) {
        (429, _) => Failure::RateLimited(retry_after),
        _ if blob_not_found => Failure::NotFound(detail),
        (_, Some("RepoDeactivated")) => Failure::Inactive("deactivated"),
        (_, Some("RepoTakendown")) => Failure::Inactive("takendown"),
        (_, Some("RepoSuspended")) => Failure::Inactive("suspended"),
        (_, Some("RepoNotFound")) => Failure::Inactive("deleted"),
        (404, _) => Failure::NotFound(detail),
        (500..=599, _) => Failure::Server(detail),
        _ => Failure::Rejected(detail),
    }
}

async fn read_some(resp: reqwest::Response) -> Vec<u8> {
    let mut out = Vec::new();
    let mut body = resp.bytes_stream();
    while let Some(Ok(chunk)) = body.next().await {
        out.extend_from_slice(&chunk);
        if out.len() >= ERROR_BODY_MAX {
            out.truncate(ERROR_BODY_MAX);
            break;
        }
    }
    out
}

/// The `error` and `message` of an XRPC error body, when it is one.
fn xrpc_error(body: &[u8]) -> (Option<String>, Option<String>) {
    let Ok(serde_json::Value::Object(o)) = serde_json::from_slice(body) else {
        return (None, None);
    };
    let field = |k: &str| o.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    (field("error"), field("message"))
}

/// `Retry-After`: delta-seconds or an HTTP date.
pub(crate) fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        let later = std::time::SystemTime::now() + Duration::from_secs(120);
        let d = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn error_names_come_from_the_body() {
        assert_eq!(
            xrpc_error(br#"{"error": "BlobNotFound","message":"x"}"#),
            (Some("BlobNotFound".into()), Some("x".into()))
        );
        assert_eq!(
            xrpc_error(br#"{"message":"error"}"#),
            (None, Some("error".into()))
        );
        assert_eq!(xrpc_error(b"<html>"), (None, None));
    }
}
