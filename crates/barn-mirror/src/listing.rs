//! Listing a host's repos with `com.atproto.sync.listRepos`, page by page:
//! the backfill of a whole host, and the reconcile sweeps that compare
//! every listed head with barn's.
//!
//! # Tricky bits
//! - The lister only fetches. Each page goes to the host task, which
//!   records what it found (new repos, heads to check) in the same batch as
//!   the pass's next cursor, so a saved cursor never leads the repos it
//!   listed; the lister waits for that before fetching the next page.
//! - Back-pressure: the next page is fetched only while the host has fewer
//!   than `list_queue_max` imports queued, so a host with millions of
//!   accounts never has millions in memory.
//! - A malformed entry is skipped and counted; a failed page is retried
//!   with a growing delay, forever (until shutdown): a host that is down
//!   for an hour resumes its pass where it was.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cid::Cid;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use barn_repo::syntax::{Did, Tid};

use crate::error::{Error, Result};
use crate::mirror::{Control, Inner};

/// One repo as `listRepos` describes it.
#[derive(Debug, Clone)]
pub(crate) struct Listed {
    pub did: String,
    pub head: Cid,
    pub rev: String,
    pub active: bool,
    pub status: Option<String>,
}

/// One page.
#[derive(Debug)]
pub(crate) struct Page {
    pub repos: Vec<Listed>,
    /// For the next page; `None` on the last.
    pub cursor: Option<String>,
}

/// Pages through `host`'s repos from `cursor`, handing each page to the
/// host task through `control`, until the last page or `cancel`.
pub(crate) async fn run(
    inner: Arc<Inner>,
    host: String,
    mut cursor: Option<String>,
    control: mpsc::UnboundedSender<Control>,
    queued: Arc<AtomicUsize>,
    cancel: CancellationToken,
) {
    let mut attempt = 0u32;
    loop {
        while queued.load(Ordering::Relaxed) >= inner.config.list_queue_max {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        let page = tokio::select! {
            _ = cancel.cancelled() => return,
            p = fetch_page(&inner, &host, cursor.as_deref()) => p,
        };
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                inner.metrics.list_failed(&host, e.reason());
                let delay = Duration::from_secs(1)
                    .saturating_mul(1 << attempt.min(8))
                    .min(Duration::from_secs(300));
                attempt += 1;
                tracing::warn!(%host, ?cursor, error = %e, retry_in = ?delay, "listRepos failed; will retry");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                continue;
            }
        };
        attempt = 0;
        // The last page: no cursor, or nothing on it (a host that keeps
        // returning its last cursor must not loop forever).
        let done = page.cursor.is_none() || page.repos.is_empty() || page.cursor == cursor;
        cursor = page.cursor.clone();
        let (ack, acked) = oneshot::channel();
        if control.send(Control::Listed { page, ack }).is_err() {
            return;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = acked => if r.is_err() { return },
        }
        if done {
            let _ = control.send(Control::ListDone);
            return;
        }
    }
}

async fn fetch_page(inner: &Inner, host: &str, cursor: Option<&str>) -> Result<Page> {
    let url = format!("{host}/xrpc/com.atproto.sync.listRepos");
    let fetch_err = |message: String| Error::Fetch {
        url: url.clone(),
        message,
        xrpc_error: None,
    };
    let limit = inner.config.list_page.clamp(1, 1000).to_string();
    let mut query = vec![("limit", limit.as_str())];
    if let Some(c) = cursor {
        query.push(("cursor", c));
    }
    // A page of 1000 entries is ~200 KB; anything far larger is not a page.
    let json = crate::http::get_json(
        inner,
        host,
        "com.atproto.sync.listRepos",
        &query,
        16 << 20,
        Duration::from_secs(60),
    )
    .await?;
    let entries = json["repos"]
        .as_array()
        .ok_or_else(|| fetch_err("no `repos` array".into()))?;
    let mut repos = Vec::with_capacity(entries.len());
    for entry in entries {
        match parse_entry(entry) {
            Ok(r) => repos.push(r),
            Err(why) => {
                inner.metrics.list_entry_rejected(host, why);
                tracing::warn!(%host, reason = why, entry = %entry, "listRepos entry skipped");
            }
        }
    }
    let cursor = json["cursor"]
        .as_str()
        .filter(|c| !c.is_empty())
        .map(str::to_owned);
    Ok(Page { repos, cursor })
}

fn parse_entry(v: &serde_json::Value) -> std::result::Result<Listed, &'static str> {
    let did = v["did"].as_str().ok_or("no_did")?;
    Did::validate(did).map_err(|_| "bad_did")?;
    let head = v["head"].as_str().ok_or("no_head")?;
    let head = Cid::try_from(head).map_err(|_| "bad_head")?;
    let rev = v["rev"].as_str().ok_or("no_rev")?;
    Tid::validate(rev).map_err(|_| "bad_rev")?;
    Ok(Listed {
        did: did.to_owned(),
        head,
        rev: rev.to_owned(),
        // Absent means active (the lexicon's default).
        active: v["active"].as_bool().unwrap_or(true),
        status: v["status"].as_str().map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn entries_are_checked() {
        let head = barn_repo::cid_for_cbor(b"\xa0").to_string();
        let ok = parse_entry(&json!({"did": "did:plc:abc", "head": head, "rev": "3l3qo2vuowo2b"}))
            .unwrap();
        assert!(ok.active);
        assert_eq!(ok.rev, "3l3qo2vuowo2b");
        let off = parse_entry(&json!({"did": "did:plc:abc", "head": head, "rev": "3l3qo2vuowo2b", "active": false, "status": "takendown"})).unwrap();
        assert!(!off.active);
        assert_eq!(off.status.as_deref(), Some("takendown"));
        for (v, why) in [
            (json!({"head": head, "rev": "3l3qo2vuowo2b"}), "no_did"),
            (
                json!({"did": "plc:abc", "head": head, "rev": "3l3qo2vuowo2b"}),
                "bad_did",
            ),
            (
                json!({"did": "did:plc:abc", "head": "xyz", "rev": "3l3qo2vuowo2b"}),
                "bad_head",
            ),
            (
                json!({"did": "did:plc:abc", "head": head, "rev": "../x"}),
                "bad_rev",
            ),
        ] {
            assert_eq!(parse_entry(&v).unwrap_err(), why);
        }
    }
}
