//! Minimal XRPC and PLC client calls the tests need to ask the PDSes and
//! the directory what they hold.

use bytes::Bytes;
use serde_json::Value;

use crate::error::{Error, Result};

/// An XRPC error answer: HTTP status and the `error` name of its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XrpcError {
    /// HTTP status.
    pub status: u16,
    /// The body's `error` field (empty when there was none).
    pub error: String,
    /// The body's `message` field.
    pub message: String,
}

/// A client for one service.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
}

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

impl Client {
    /// A client with a 60 s request timeout.
    pub fn new() -> Client {
        Client {
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(60))
                .build()
                .unwrap_or_default(),
        }
    }

    /// `GET {base}/xrpc/{nsid}?{params}`: the body on success, or the XRPC
    /// error the service answered with.
    pub async fn get(
        &self,
        base: &str,
        nsid: &str,
        params: &[(&str, &str)],
    ) -> Result<std::result::Result<Bytes, XrpcError>> {
        let url = format!("{base}/xrpc/{nsid}");
        let resp = self
            .http
            .get(&url)
            .query(params)
            .send()
            .await
            .map_err(|e| http_err(&url, e))?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| http_err(&url, e))?;
        if (200..300).contains(&status) {
            return Ok(Ok(body));
        }
        let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let field = |k: &str| {
            json.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Ok(Err(XrpcError {
            status,
            error: field("error"),
            message: field("message"),
        }))
    }

    /// Like [`Client::get`], but an XRPC error is an [`Error::Http`].
    pub async fn get_ok(&self, base: &str, nsid: &str, params: &[(&str, &str)]) -> Result<Bytes> {
        self.get(base, nsid, params)
            .await?
            .map_err(|e| Error::Http {
                url: format!("{base}/xrpc/{nsid}?{params:?}"),
                message: format!("{} {}: {}", e.status, e.error, e.message),
            })
    }

    /// [`Client::get_ok`], parsed as JSON.
    pub async fn get_json(&self, base: &str, nsid: &str, params: &[(&str, &str)]) -> Result<Value> {
        let body = self.get_ok(base, nsid, params).await?;
        serde_json::from_slice(&body).map_err(|e| Error::Json {
            what: nsid.to_owned(),
            message: e.to_string(),
        })
    }

    /// Every record of one collection via `com.atproto.repo.listRecords`
    /// paging: `(uri, cid)` pairs.
    pub async fn list_records(
        &self,
        pds: &str,
        did: &str,
        collection: &str,
    ) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        let mut cursor = String::new();
        loop {
            let mut params = vec![("repo", did), ("collection", collection), ("limit", "100")];
            if !cursor.is_empty() {
                params.push(("cursor", &cursor));
            }
            let page = self
                .get_json(pds, "com.atproto.repo.listRecords", &params)
                .await?;
            let records = page["records"].as_array().cloned().unwrap_or_default();
            for r in &records {
                let field = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
                out.push((field("uri"), field("cid")));
            }
            match page["cursor"].as_str() {
                Some(c) if !records.is_empty() => cursor = c.to_owned(),
                _ => return Ok(out),
            }
        }
    }

    /// Every blob CID of a repo via `com.atproto.sync.listBlobs` paging.
    pub async fn list_blobs(&self, pds: &str, did: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut cursor = String::new();
        loop {
            let mut params = vec![("did", did), ("limit", "500")];
            if !cursor.is_empty() {
                params.push(("cursor", &cursor));
            }
            let page = self
                .get_json(pds, "com.atproto.sync.listBlobs", &params)
                .await?;
            let cids = page["cids"].as_array().cloned().unwrap_or_default();
            out.extend(cids.iter().filter_map(|c| c.as_str().map(str::to_owned)));
            match page["cursor"].as_str() {
                Some(c) if !cids.is_empty() => cursor = c.to_owned(),
                _ => return Ok(out),
            }
        }
    }

    /// A DID document from the PLC directory (`GET {plc}/{did}`).
    pub async fn plc_document(&self, plc: &str, did: &str) -> Result<Value> {
        let url = format!("{plc}/{did}");
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| http_err(&url, e))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| http_err(&url, e))?;
        if !status.is_success() {
            return Err(Error::Http {
                url,
                message: format!("{status}: {}", String::from_utf8_lossy(&body)),
            });
        }
        serde_json::from_slice(&body).map_err(|e| Error::Json {
            what: url,
            message: e.to_string(),
        })
    }
}

fn http_err(url: &str, e: reqwest::Error) -> Error {
    Error::Http {
        url: url.to_owned(),
        message: e.to_string(),
    }
}
