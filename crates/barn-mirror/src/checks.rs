//! Asking a host about single repos, for the reconcile passes that a
//! `listRepos` listing cannot do: the accounts of a host followed for some
//! accounts only (no listing), and the repos barn holds for a listed host
//! that the listing no longer showed (a deleted account drops out of
//! `listRepos`; only `getRepoStatus` says what became of it).
//!
//! # Tricky bits
//! - The checker only asks. Each answer goes to the host task
//!   ([`Control::Checked`]), which compares it with the repo's state there
//!   (pending batch included) and decides: a status to apply, a newer head
//!   to fetch after the grace period, nothing. An unchanged account costs
//!   two small requests, not a `getRepo`.
//! - `RepoNotFound` is an answer, not a failure: the host task decides
//!   between "moved" (the DID document names another host) and "gone".
//!   Anything else (a timeout, a 5xx) is retried a few times, then counted
//!   and left for the next pass: no state is changed on a failed question.

use std::sync::Arc;
use std::time::Duration;

use cid::Cid;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use barn_repo::syntax::Tid;

use crate::error::{Error, Result};
use crate::mirror::{Control, Inner};

/// Questions in flight per host: each is two small requests.
const CONCURRENCY: usize = 4;
/// Attempts per repo before a failure is counted and left for the next pass.
const ATTEMPTS: u32 = 3;

/// What a host says of one repo when asked directly.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    /// `getRepoStatus` answered; `latest` (head CID and rev) comes from
    /// `getLatestCommit`, asked only of an active account.
    Status {
        active: bool,
        status: Option<String>,
        latest: Option<(Cid, String)>,
    },
    /// The host answered `RepoNotFound`: it does not have the repo.
    NotFound,
}

/// Asks `host` about every DID of `dids` (a few at a time) and hands each
/// answer to the host task through `control`, with `reason`.
pub(crate) async fn run(
    inner: Arc<Inner>,
    host: String,
    dids: Vec<String>,
    reason: String,
    control: mpsc::UnboundedSender<Control>,
    cancel: CancellationToken,
) {
    let total = dids.len();
    tracing::info!(%host, repos = total, %reason, "asking the host about repos one by one");
    let asked = futures_util::stream::iter(dids)
        .map(|did| {
            let inner = inner.clone();
            let host = host.clone();
            async move {
                let answer = ask_with_retries(&inner, &host, &did).await;
                (did, answer)
            }
        })
        .buffer_unordered(CONCURRENCY);
    tokio::pin!(asked);
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => return,
            n = asked.next() => n,
        };
        let Some((did, answer)) = next else {
            break;
        };
        match answer {
            Ok(answer) => {
                inner.metrics.reconcile(&host, "checked");
                let checked = Control::Checked {
                    did,
                    answer,
                    reason: reason.clone(),
                };
                if control.send(checked).is_err() {
                    return;
                }
            }
            Err(e) => {
                inner.metrics.reconcile(&host, "check_failed");
                tracing::warn!(%host, %did, error = %e, "could not ask the host about a repo; left for the next pass");
            }
        }
    }
    tracing::info!(%host, repos = total, "repo checks done");
}

async fn ask_with_retries(inner: &Inner, host: &str, did: &str) -> Result<Answer> {
    let mut attempt = 0;
    loop {
        match ask(inner, host, did).await {
            Ok(a) => return Ok(a),
            Err(e) if attempt + 1 >= ATTEMPTS => return Err(e),
            Err(_) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(500) * (1 << attempt)).await;
            }
        }
    }
}

/// `getRepoStatus`, then `getLatestCommit` if the account is active.
async fn ask(inner: &Inner, host: &str, did: &str) -> Result<Answer> {
    let status = match get_json(inner, host, "com.atproto.sync.getRepoStatus", did).await? {
        Reply::NotFound => return Ok(Answer::NotFound),
        Reply::Json(v) => v,
    };
    // An answer that does not say what it must.
    let bad = |method: &str, what: &str| Error::Fetch {
        url: format!("{host}/xrpc/{method}"),
        message: format!("answer for {did}: {what}"),
        xrpc_error: None,
    };
    let bad_status = |what| bad("com.atproto.sync.getRepoStatus", what);
    if status["did"].as_str() != Some(did) {
        return Err(bad_status("not about this DID"));
    }
    let active = status["active"]
        .as_bool()
        .ok_or_else(|| bad_status("no `active`"))?;
    let status_name = status["status"].as_str().map(str::to_owned);
    if !active {
        return Ok(Answer::Status {
            active,
            status: status_name,
            latest: None,
        });
    }
    let latest = match get_json(inner, host, "com.atproto.sync.getLatestCommit", did).await? {
        // Deleted between the two questions.
        Reply::NotFound => return Ok(Answer::NotFound),
        Reply::Json(v) => v,
    };
    let bad_latest = |what| bad("com.atproto.sync.getLatestCommit", what);
    let cid = latest["cid"]
        .as_str()
        .and_then(|c| Cid::try_from(c).ok())
        .ok_or_else(|| bad_latest("no valid `cid`"))?;
    let rev = latest["rev"]
        .as_str()
        .filter(|r| Tid::validate(r).is_ok())
        .ok_or_else(|| bad_latest("no valid `rev`"))?;
    Ok(Answer::Status {
        active,
        status: status_name,
        latest: Some((cid, rev.to_owned())),
    })
}

enum Reply {
    Json(serde_json::Value),
    NotFound,
}

/// One question; `RepoNotFound` is an answer, any other failure an error.
async fn get_json(inner: &Inner, host: &str, method: &str, did: &str) -> Result<Reply> {
    // Both answers are a few hundred bytes.
    let asked = crate::http::get_json(
        inner,
        host,
        method,
        &[("did", did)],
        64 << 10,
        Duration::from_secs(30),
    )
    .await;
    match asked {
        Ok(json) => Ok(Reply::Json(json)),
        Err(Error::Fetch {
            xrpc_error: Some(name),
            ..
        }) if name == "RepoNotFound" => Ok(Reply::NotFound),
        Err(e) => Err(e),
    }
}
