//! `com.atproto.sync.*`: answered as a PDS answers them, from barn's copy.

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use barn_repo::Cid;
use barn_repo::blocks::Recording;
use barn_store::BlobStatus;
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::car::{Plan, small_car};
use crate::error::{ErrorCode, XrpcError};
use crate::{Gateway, Req, repo_not_found};

pub(crate) const GET_REPO: &str = "com.atproto.sync.getRepo";
pub(crate) const GET_RECORD: &str = "com.atproto.sync.getRecord";
pub(crate) const GET_BLOB: &str = "com.atproto.sync.getBlob";
pub(crate) const LIST_BLOBS: &str = "com.atproto.sync.listBlobs";
pub(crate) const LIST_REPOS: &str = "com.atproto.sync.listRepos";
pub(crate) const GET_LATEST_COMMIT: &str = "com.atproto.sync.getLatestCommit";
pub(crate) const GET_REPO_STATUS: &str = "com.atproto.sync.getRepoStatus";

/// A `since` diff names at most this many revisions or changed keys;
/// past that the full CAR is sent (a superset, and cheaper than holding
/// the list).
const MAX_DIFF_REVISIONS: usize = 1000;
const MAX_DIFF_KEYS: u64 = 100_000;

pub(crate) type Answer = Result<Response, XrpcError>;

/// The head of a repo, or `RepoNotFound` when nothing is stored yet.
pub(crate) fn head(
    did: &str,
    state: &barn_store::RepoState,
) -> Result<(Cid, String, Cid), XrpcError> {
    match (state.head, &state.rev, state.data) {
        (Some(c), Some(r), Some(d)) => Ok((c, r.clone(), d)),
        _ => Err(XrpcError::new(
            ErrorCode::RepoNotFound,
            format!("barn holds no revision of {did} yet"),
        )),
    }
}

pub(crate) async fn get_repo(gw: &Gateway, req: &Req) -> Answer {
    let did = req.params.did("did")?;
    let since = req.params.tid("since")?;
    let (state, _) = gw.visible_repo(req, &did).await?;
    let (commit, rev, data) = head(&did, &state)?;
    let plan = match since {
        None => Plan::Full { commit, data },
        Some(since) => {
            // Up to 1000 history entries and their ops: off the async
            // threads.
            let (gw2, did2, rev2) = (gw.clone(), did.clone(), rev.clone());
            tokio::task::spawn_blocking(move || diff_plan(&gw2, &did2, &since, &rev2, commit, data))
                .await
                .map_err(|_| XrpcError::new(ErrorCode::InternalServerError, "diff task failed"))??
        }
    };
    let kind = match plan {
        Plan::Full { .. } => "current",
        Plan::Diff { .. } => "since",
    };
    let permit = gw.car_slot().await?;
    Ok(gw.stream_car(permit, plan, kind, vec![("atproto-repo-rev", rev)]))
}

/// The keys changed after `since` up to the head, from barn's history;
/// the full export when there are too many (or `since` is older than
/// barn's first revision, whose ops are the whole repo).
fn diff_plan(
    gw: &Gateway,
    did: &str,
    since: &str,
    rev: &str,
    commit: Cid,
    data: Cid,
) -> Result<Plan, XrpcError> {
    if since >= rev {
        return Ok(Plan::Diff {
            commit,
            data,
            changed: Vec::new(),
        });
    }
    let entries = gw
        .store()
        .revisions_after(did, since, MAX_DIFF_REVISIONS + 1)?;
    let total: u64 = entries.iter().map(|e| e.op_counts().total()).sum();
    if entries.len() > MAX_DIFF_REVISIONS || total > MAX_DIFF_KEYS {
        return Ok(Plan::Full { commit, data });
    }
    let mut changed = Vec::new();
    for e in &entries {
        for op in gw.store().revision_ops(did, e)? {
            changed.push(op.path.into_bytes());
        }
    }
    Ok(Plan::Diff {
        commit,
        data,
        changed,
    })
}

pub(crate) async fn get_record(gw: &Gateway, req: &Req) -> Answer {
    let did = req.params.did("did")?;
    let collection = req.params.nsid("collection")?;
    let rkey = req.params.rkey("rkey")?;
    let (state, _) = gw.visible_repo(req, &did).await?;
    let (commit, _, data) = head(&did, &state)?;
    let path = format!("{collection}/{rkey}");
    let store = gw.store().clone();
    let metrics = gw.metrics().clone();
    let blocks =
        tokio::task::spawn_blocking(move || -> Result<Option<Vec<(Cid, Bytes)>>, XrpcError> {
            let source = Recording::new(store.block_source());
            let found = barn_repo::mst::get(&source, &data, &path).map_err(|e| {
                tracing::error!(error = %e, "gateway: record proof walk failed");
                XrpcError::new(ErrorCode::InternalServerError, "reading the tree failed")
            })?;
            let Some(record) = found else {
                return Ok(None);
            };
            let mut cids: Vec<Cid> = vec![commit];
            cids.extend(source.seen());
            cids.push(record);
            let mut out = Vec::with_capacity(cids.len());
            for cid in cids {
                let bytes = store.block(&cid)?.ok_or_else(|| {
                    tracing::error!(%cid, "gateway: a block of a stored revision is missing");
                    XrpcError::new(ErrorCode::InternalServerError, "a stored block is missing")
                })?;
                out.push((cid, bytes));
            }
            Ok(Some(out))
        })
        .await
        .map_err(|_| {
            XrpcError::new(ErrorCode::InternalServerError, "record proof task failed")
        })??;
    match blocks {
        Some(b) => Ok(small_car(commit, &b, &metrics)),
        None => Err(XrpcError::new(
            ErrorCode::RecordNotFound,
            format!("Could not locate record: at://{did}/{collection}/{rkey}"),
        )),
    }
}

pub(crate) async fn get_blob(gw: &Gateway, req: &Req) -> Answer {
    let did = req.params.did("did")?;
    let cid = req
        .params
        .cid("cid")?
        .ok_or_else(|| XrpcError::invalid("cid: required"))?;
    let (_, privileged) = gw.visible_repo(req, &did).await?;
    let not_found = |why: &str| {
        XrpcError::new(
            ErrorCode::BlobNotFound,
            format!("Blob not found: {cid} ({why})"),
        )
    };
    if !gw.store().has_blob_ref(&did, &cid)? {
        return Err(not_found("no record of this account references it"));
    }
    let Some(state) = gw.store().blob(&cid)? else {
        return Err(not_found("unknown to barn"));
    };
    match state.status {
        BlobStatus::Stored => {}
        BlobStatus::Queued => return Err(not_found("barn has not fetched it yet")),
        BlobStatus::Missing => {
            return Err(not_found(&format!(
                "barn could not fetch it: {}",
                state.reason.as_deref().unwrap_or("unknown")
            )));
        }
    }
    let Some(storage) = &gw.inner.blobs else {
        return Err(not_found("this barn keeps no blobs"));
    };
    let stored = match storage.get(&cid).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            gw.metrics().rejected("blob_object_missing");
            tracing::error!(%cid, "gateway: blob marked stored but absent from the object store");
            return Err(not_found("stored object is missing"));
        }
        Err(e) => {
            gw.metrics().rejected("blob_storage_failed");
            tracing::error!(%cid, error = %e, "gateway: object store read failed");
            return Err(XrpcError::new(
                ErrorCode::InternalServerError,
                "reading the blob store failed",
            ));
        }
    };
    let mime = state
        .mime
        .filter(|m| axum::http::HeaderValue::from_str(m).is_ok())
        .unwrap_or_else(|| "application/octet-stream".into());
    let body = Body::from_stream(
        stored
            .stream
            .map(|c| c.map_err(|e| std::io::Error::other(e.to_string()))),
    );
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    let mut set = |name: header::HeaderName, value: &str| {
        if let Ok(v) = axum::http::HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    };
    set(header::CONTENT_TYPE, &mime);
    set(header::CONTENT_LENGTH, &stored.size.to_string());
    // What a PDS sends: the bytes are someone's upload, never a page.
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; sandbox",
    );
    // Served on credentials (an inactive account): never from a shared
    // cache to someone else.
    if privileged.is_some() {
        set(header::CACHE_CONTROL, "private, no-store");
        set(header::VARY, "Authorization");
    } else {
        set(header::CACHE_CONTROL, "public, max-age=31536000, immutable");
    }
    Ok(resp)
}

pub(crate) async fn list_blobs(gw: &Gateway, req: &Req) -> Answer {
    let did = req.params.did("did")?;
    let since = req.params.tid("since")?;
    let limit = req.params.limit("limit", 500, 1000)?;
    let cursor = match req.params.cursor()? {
        Some(c) => Some(
            c.parse::<Cid>()
                .map_err(|_| XrpcError::invalid("cursor: not one barn gave"))?,
        ),
        None => None,
    };
    gw.visible_repo(req, &did).await?;
    // Blobs first seen after the `since` revision was stored.
    let since_ms = match since {
        Some(rev) => gw
            .store()
            .revision_at_or_before(&did, &rev)?
            .map(|e| e.seen_at_ms + 1)
            .unwrap_or(0),
        None => 0,
    };
    let page = gw.store().blob_refs_page(&did, cursor.as_ref(), limit)?;
    let next = (page.len() == limit).then(|| page.last().map(|(c, _)| c.to_string()));
    let cids: Vec<String> = page
        .iter()
        .filter(|(_, seen)| *seen >= since_ms)
        .map(|(c, _)| c.to_string())
        .collect();
    let mut out = json!({ "cids": cids });
    if let Some(Some(c)) = next {
        out["cursor"] = c.into();
    }
    Ok(axum::Json(out).into_response())
}

pub(crate) async fn list_repos(gw: &Gateway, req: &Req) -> Answer {
    let limit = req.params.limit("limit", 500, 1000)?;
    let cursor = req.params.cursor()?.map(str::to_owned);
    if let Some(c) = &cursor
        && barn_repo::syntax::Did::validate(c).is_err()
    {
        return Err(XrpcError::invalid("cursor: not one barn gave"));
    }
    // Credentials only matter here to see deleted accounts.
    let admin = gw.is_admin(req);
    let page = gw.store().repos_page(cursor.as_deref(), limit)?;
    let next = (page.len() == limit).then(|| page.last().map(|(d, _)| d.clone()));
    let repos: Vec<Value> = page
        .into_iter()
        .filter(|(_, s)| admin || s.status.as_deref() != Some("deleted"))
        .filter_map(|(did, s)| {
            let (head, rev) = (s.head?, s.rev?);
            let mut r =
                json!({ "did": did, "head": head.to_string(), "rev": rev, "active": s.active });
            if let Some(status) = s.status.filter(|_| !s.active) {
                r["status"] = status.into();
            }
            Some(r)
        })
        .collect();
    let mut out = json!({ "repos": repos });
    if let Some(Some(c)) = next {
        out["cursor"] = c.into();
    }
    Ok(axum::Json(out).into_response())
}

pub(crate) async fn get_latest_commit(gw: &Gateway, req: &Req) -> Answer {
    let did = req.params.did("did")?;
    let (state, _) = gw.visible_repo(req, &did).await?;
    let (commit, rev, _) = head(&did, &state)?;
    Ok(axum::Json(json!({ "cid": commit.to_string(), "rev": rev })).into_response())
}

pub(crate) async fn get_repo_status(gw: &Gateway, req: &Req) -> Answer {
    let did = req.params.did("did")?;
    let Some(state) = gw.store().repo(&did)? else {
        return Err(repo_not_found(&did));
    };
    // The status of an inactive account is public (a PDS shows it), except
    // that a deleted one is gone to the public.
    if state.status.as_deref() == Some("deleted") && !state.active {
        gw.visible_repo(req, &did).await?;
    }
    let mut out = json!({ "did": did, "active": state.active });
    if !state.active {
        out["status"] = state
            .status
            .clone()
            .unwrap_or_else(|| "deactivated".into())
            .into();
    }
    // As a PDS: the rev only while active.
    if state.active
        && let Some(rev) = &state.rev
    {
        out["rev"] = rev.clone().into();
    }
    Ok(axum::Json(out).into_response())
}
