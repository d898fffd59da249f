//! Whole-repo imports: `getRepo` → verify → store. Every path that has to
//! take a repo's state from its host rather than from the stream ends here:
//! the first backfill of an account, a resync after a desync, a `#sync`,
//! an account that moved in, and a reconcile that found a difference.
//!
//! # Tricky bits
//! - An import writes blocks, the record index changes and the revision in
//!   one atomic batch, but never the repo's state: the host task owns that
//!   and sets the new head when the import reports back. While an import
//!   runs, the host task buffers the repo's commits and writes no records
//!   for it, so the record index the import diffs against cannot move.
//! - A crash between the import's batch and the host task's leaves the
//!   repo desynchronized with its old head; the next import finds the
//!   revision already stored and does not write it twice.
//! - With a head in hand, barn asks `getRepo?since=<its rev>`. The
//!   reference PDS answers with the blocks stored after that rev (not a
//!   tree order, and possibly a superset); the tree is verified over those
//!   blocks layered on barn's store. When that is not enough (a PDS that
//!   reset, or answers something else), the import falls back to the full
//!   repo.
//! - The revision's ops are the difference between the record index and
//!   the fetched tree, deletes included: a reconcile records what the
//!   firehose missed, not just what was added.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use cid::Cid;
use futures_util::StreamExt;

use barn_identity::Identity;
use barn_repo::blocks::Layered;
use barn_repo::car::{CarLimits, read_car};
use barn_repo::commit::verify_repo;
use barn_store::{Batch, CommitEntry, Op, OpAction, RepoState, Source, Store, now_ms};

use crate::error::{Error, Result};
use crate::mirror::{Inner, normalize_host};
use crate::verify::Head;

/// One import to run.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub did: String,
    pub source: Source,
    pub reason: String,
    /// barn's state of the repo when the import started.
    pub state: RepoState,
}

/// How an import ended (failures are errors).
// One per import, moved once: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The host's repo is verified and stored: `head` is its head, `label`
    /// says whether it was new (`imported`), barn's own head
    /// (`unchanged`) or older than barn's (`older`, kept as is).
    Stored {
        label: &'static str,
        head: Head,
        handle: Option<String>,
        /// `full` or `since`: what was fetched.
        fetch: &'static str,
    },
    /// The host answers that the account cannot be served.
    Inactive { status: &'static str, error: String },
    /// The DID document names another host.
    Moved { pds: String },
}

/// Runs `job` for a repo of `host`.
pub(crate) async fn run(inner: &Arc<Inner>, host: &str, job: &Job) -> Result<Outcome> {
    let did = job.did.as_str();
    let id = inner.resolver.refresh(did).await?;
    let pds = id.pds.clone().ok_or_else(|| Error::Fetch {
        url: did.to_owned(),
        message: "DID document names no PDS".into(),
        xrpc_error: None,
    })?;
    if normalize_host(&pds) != normalize_host(host) {
        return Ok(Outcome::Moved {
            pds: normalize_host(&pds),
        });
    }
    let since = job.state.rev.clone().filter(|_| job.state.data.is_some());
    if let Some(since) = since {
        match fetch_and_store(inner, &pds, job, &id, Some(&since)).await {
            Err(Error::Repo { source, .. }) => {
                tracing::info!(%did, %since, error = %source, "getRepo since barn's rev did not verify; fetching the whole repo");
            }
            other => return other,
        }
    }
    fetch_and_store(inner, &pds, job, &id, None).await
}

async fn fetch_and_store(
    inner: &Arc<Inner>,
    pds: &str,
    job: &Job,
    id: &Arc<Identity>,
    since: Option<&str>,
) -> Result<Outcome> {
    let car = match fetch(inner, pds, &job.did, since).await {
        Ok(car) => car,
        Err(Error::Fetch {
            xrpc_error: Some(name),
            message,
            ..
        }) if matches!(
            name.as_str(),
            "RepoNotFound" | "RepoDeactivated" | "RepoTakendown" | "RepoSuspended"
        ) =>
        {
            let status = match name.as_str() {
                "RepoNotFound" => "deleted",
                "RepoDeactivated" => "deactivated",
                "RepoTakendown" => "takendown",
                _ => "suspended",
            };
            tracing::debug!(did = %job.did, %name, %message, "host will not serve the repo");
            return Ok(Outcome::Inactive {
                status,
                error: name,
            });
        }
        Err(e) => return Err(e),
    };
    let store = inner.store.clone();
    let job = job.clone();
    let id = id.clone();
    let fetched = if since.is_some() { "since" } else { "full" };
    tokio::task::spawn_blocking(move || store_repo(&store, &job, &id, car, fetched))
        .await
        .map_err(|e| Error::Task(e.to_string()))?
}

/// `GET getRepo`, read up to the configured size limit (a body that goes
/// past it is cut off, whatever the headers said).
async fn fetch(inner: &Arc<Inner>, pds: &str, did: &str, since: Option<&str>) -> Result<Bytes> {
    let url = format!(
        "{}/xrpc/com.atproto.sync.getRepo",
        pds.trim_end_matches('/')
    );
    let fetch_err = |message: String, xrpc_error: Option<String>| Error::Fetch {
        url: url.clone(),
        message,
        xrpc_error,
    };
    let mut query = vec![("did", did)];
    if let Some(since) = since {
        query.push(("since", since));
    }
    let resp = inner
        .http
        .get(&url)
        .query(&query)
        .send()
        .await
        .map_err(|e| fetch_err(e.to_string(), None))?;
    let status = resp.status();
    let limit = inner.config.max_repo_bytes;
    if let Some(len) = resp.content_length()
        && len > limit
    {
        return Err(fetch_err(
            format!("repo of {len} bytes is over the limit of {limit}"),
            None,
        ));
    }
    let body = read_limited(resp, limit)
        .await
        .map_err(|message| fetch_err(message, None))?;
    if !status.is_success() {
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let name = json["error"].as_str().map(str::to_owned);
        return Err(fetch_err(
            format!("{status}: {}", String::from_utf8_lossy(&body)),
            name,
        ));
    }
    Ok(body)
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

/// Verifies the fetched CAR and stores what barn lacks (blocking).
fn store_repo(
    store: &Store,
    job: &Job,
    id: &Identity,
    car: Bytes,
    fetched: &'static str,
) -> Result<Outcome> {
    let did = job.did.as_str();
    let repo_err = |e: barn_repo::Error| Error::Repo {
        did: did.to_owned(),
        source: Box::new(e),
    };
    let file = read_car(car, &CarLimits::default()).map_err(repo_err)?;
    let root = *file
        .root()
        .ok_or_else(|| repo_err(barn_repo::Error::CarHeader("no root".into())))?;
    // A `since` answer holds only what changed: the rest is barn's.
    let layered = Layered {
        first: &file.blocks,
        second: store.block_source(),
    };
    let verified =
        verify_repo(&layered, &root, Some(did), Some(&id.signing_key)).map_err(repo_err)?;
    let head = Head {
        rev: verified.commit.rev.clone(),
        cid: root,
        data: verified.commit.data,
    };
    let stored = |label| Outcome::Stored {
        label,
        head: head.clone(),
        handle: id.handle.clone(),
        fetch: fetched,
    };
    if job.state.head == Some(root) {
        return Ok(stored("unchanged"));
    }
    if job
        .state
        .rev
        .as_deref()
        .is_some_and(|r| head.rev.as_str() <= r)
    {
        // The host serves an older revision than barn holds: keep barn's.
        return Ok(stored("older"));
    }
    if store.revision(did, &head.rev)?.is_some() {
        // Written by an earlier run of this import that crashed before
        // the host task moved the head.
        return Ok(stored("imported"));
    }
    let current: HashMap<String, Cid> = store.records(did)?.into_iter().collect();
    let ops = diff_records(&current, &verified.records);
    let mut batch = Batch::new();
    for op in &ops {
        batch.set_record(did, &op.path, op.cid);
    }
    for (cid, data) in file.blocks.iter() {
        batch.put_block(*cid, data.clone());
    }
    batch.put_revision(
        did,
        CommitEntry {
            rev: head.rev.clone(),
            cid: root,
            data: head.data,
            since: job.state.rev.clone(),
            seen_at_ms: now_ms(),
            source: job.source,
            seq: None,
            host: normalize_host(&job.state.host),
            ops,
            reason: Some(job.reason.clone()),
        },
    );
    store.write(batch)?;
    Ok(stored("imported"))
}

/// The ops that turn the record index `current` into `records` (sorted by
/// path): creates, updates and deletes.
fn diff_records(current: &HashMap<String, Cid>, records: &[(String, Cid)]) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut seen = 0usize;
    for (path, cid) in records {
        match current.get(path) {
            None => ops.push(Op {
                action: OpAction::Create,
                path: path.clone(),
                cid: Some(*cid),
                prev: None,
            }),
            Some(old) => {
                seen += 1;
                if old != cid {
                    ops.push(Op {
                        action: OpAction::Update,
                        path: path.clone(),
                        cid: Some(*cid),
                        prev: Some(*old),
                    });
                }
            }
        }
    }
    if seen < current.len() {
        let new: std::collections::HashSet<&str> =
            records.iter().map(|(p, _)| p.as_str()).collect();
        for (path, old) in current {
            if !new.contains(path.as_str()) {
                ops.push(Op {
                    action: OpAction::Delete,
                    path: path.clone(),
                    cid: None,
                    prev: Some(*old),
                });
            }
        }
    }
    ops.sort_by(|a, b| a.path.cmp(&b.path));
    ops
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn cid(n: u8) -> Cid {
        barn_repo::cid_for_cbor(&[n])
    }

    #[test]
    fn diff_has_creates_updates_and_deletes_in_path_order() {
        let current: HashMap<String, Cid> = [
            ("a/1".to_owned(), cid(1)),
            ("a/2".to_owned(), cid(2)),
            ("b/1".to_owned(), cid(3)),
        ]
        .into();
        let new = vec![
            ("a/1".to_owned(), cid(1)),
            ("a/2".to_owned(), cid(9)),
            ("c/1".to_owned(), cid(4)),
        ];
        let ops = diff_records(&current, &new);
        let got: Vec<(OpAction, &str)> = ops.iter().map(|o| (o.action, o.path.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (OpAction::Update, "a/2"),
                (OpAction::Delete, "b/1"),
                (OpAction::Create, "c/1"),
            ]
        );
        assert_eq!(ops[0].prev, Some(cid(2)));
        assert_eq!(ops[1].prev, Some(cid(3)));
        assert_eq!(ops[1].cid, None);
        // Nothing changed: no ops.
        let same: Vec<(String, Cid)> = {
            let mut v: Vec<_> = current.clone().into_iter().collect();
            v.sort();
            v
        };
        assert!(diff_records(&current, &same).is_empty());
    }
}
