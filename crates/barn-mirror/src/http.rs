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
    let resp = get_ok(inner, &url, query, Some(timeout)).await?;
    let err = |message: String| Error::Fetch {
        url: url.clone(),
        message,
        xrpc_error: None,
    };
    let body = read_limited(resp, limit).await.map_err(err)?;
    serde_json::from_slice(&body).map_err(|e| err(format!("not JSON: {e}")))
}

/// `GET {url}?{query}`: the response when its status is a success.
/// Otherwise an [`Error::Fetch`] with the status, the start of the body
/// and the XRPC error name the body gives, if any.
pub(crate) async fn get_ok(
    inner: &Inner,
    url: &str,
    query: &[(&str, &str)],
    timeout: Option<Duration>,
) -> Result<reqwest::Response> {
    let err = |message: String, xrpc_error: Option<String>| Error::Fetch {
        url: url.to_owned(),
        message,
        xrpc_error,
    };
    let mut req = inner.http.get(url).query(query);
    if let Some(t) = timeout {
        req = req.timeout(t);
    }
    let resp = req.send().await.map_err(|e| err(e.to_string(), None))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    // An error body is small; anything past 64 KiB is not one.
    let body = read_limited(resp, 64 << 10).await.unwrap_or_default();
    let name = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|j| j["error"].as_str().map(str::to_owned));
    Err(err(
        format!(
            "{status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(512)])
        ),
        name,
    ))
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
