//! The small XRPC queries barn asks a host (`listRepos`, `getRepoStatus`,
//! `getLatestCommit`): a GET whose answer is a bounded JSON body.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use crate::error::{Error, Result};
use crate::mirror::Inner;

/// `GET {host}/xrpc/{method}?{query}`, its body read up to `limit` bytes
/// and parsed as JSON. A status other than success is an
/// [`Error::Fetch`] carrying the XRPC error name the body gives, if any.
pub(crate) async fn get_json(
    inner: &Inner,
    host: &str,
    method: &str,
    query: &[(&str, &str)],
    limit: u64,
    timeout: Duration,
) -> Result<serde_json::Value> {
    let url = format!("{host}/xrpc/{method}");
    let err = |message: String, xrpc_error: Option<String>| Error::Fetch {
        url: url.clone(),
        message,
        xrpc_error,
    };
    let resp = inner
        .http
        .get(&url)
        .query(query)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| err(e.to_string(), None))?;
    let status = resp.status();
    let body = read_limited(resp, limit).await.map_err(|e| err(e, None))?;
    let json = serde_json::from_slice::<serde_json::Value>(&body);
    if !status.is_success() {
        let name = json
            .ok()
            .and_then(|j| j["error"].as_str().map(str::to_owned));
        return Err(err(
            format!(
                "{status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(512)])
            ),
            name,
        ));
    }
    json.map_err(|e| err(format!("not JSON: {e}"), None))
}

/// Reads a response body, refusing one that goes past `limit` bytes
/// whatever its headers said.
pub(crate) async fn read_limited(
    resp: reqwest::Response,
    limit: u64,
) -> std::result::Result<Bytes, String> {
    let mut body = BytesMut::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(format!("body over the limit of {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
