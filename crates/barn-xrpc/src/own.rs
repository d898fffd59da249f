//! barn's own methods (lexicons in `lexicons/dev/barn/`): the repo at a
//! past revision, the commit history, the backup status. All of them are
//! for the operator and the account's owner only.
//!
//! # Tricky bits
//!
//! - `at` → revision: revs are TIDs whose timestamp is the signing PDS's
//!   clock when it made the commit, and they strictly increase per repo,
//!   so "the last revision at or before T" is the greatest stored rev
//!   ≤ the TID of T with the largest clock id. barn's own arrival time
//!   (`seenAt`) is not used: it is not monotonic across imports.

use axum::response::IntoResponse;
use barn_repo::syntax::Tid;
use barn_store::{BlobStatus, CommitEntry, Order};
use serde_json::{Value, json};

use crate::car::Plan;
use crate::error::{ErrorCode, XrpcError};
use crate::sync::Answer;
use crate::{Gateway, Req, repo_not_found};

pub(crate) const GET_REPO_AT: &str = "dev.barn.sync.getRepoAt";
pub(crate) const LIST_COMMITS: &str = "dev.barn.sync.listCommits";
pub(crate) const GET_BACKUP_STATUS: &str = "dev.barn.backup.getStatus";

/// The TID bound for "at or before `micros`": every clock id of that
/// microsecond is included.
fn tid_bound(micros: i64) -> Result<String, XrpcError> {
    let m = u64::try_from(micros)
        .map_err(|_| XrpcError::invalid("at: before 1970, older than any revision"))?;
    Tid::from_parts(m, 1023)
        .map(|t| t.as_str().to_owned())
        .map_err(|_| XrpcError::invalid("at: too far in the future"))
}

fn rev_millis(rev: &str) -> Option<u64> {
    rev.parse::<Tid>().ok().map(|t| t.timestamp_micros() / 1000)
}

/// A stored millisecond time as atproto writes datetimes.
fn iso(ms: u64) -> String {
    barn_repo::syntax::Datetime::from_unix_millis(ms as i64).into_string()
}

fn commit_json(e: &CommitEntry) -> Value {
    let counts = e.op_counts();
    let mut v = json!({
        "rev": e.rev,
        "cid": e.cid.to_string(),
        "data": e.data.to_string(),
        "seenAt": iso(e.seen_at_ms),
        "source": e.source.as_str(),
        "host": e.host,
        "ops": { "creates": counts.creates, "updates": counts.updates, "deletes": counts.deletes },
    });
    if let Some(s) = &e.since {
        v["since"] = s.clone().into();
    }
    if let Some(seq) = e.seq {
        v["seq"] = seq.into();
    }
    if let Some(r) = &e.reason {
        v["reason"] = r.clone().into();
    }
    v
}

pub(crate) async fn get_repo_at(gw: &Gateway, req: &Req) -> Answer {
    let did = req.params.did("did")?;
    let rev = req.params.tid("rev")?;
    let at = req.params.datetime_micros("at")?;
    let wanted = match (&rev, at) {
        (Some(_), Some(_)) => return Err(XrpcError::invalid("give rev or at, not both")),
        (None, None) => return Err(XrpcError::invalid("rev or at: one is required")),
        (Some(r), None) => Ok(r.clone()),
        (None, Some(m)) => Err(tid_bound(m)?),
    };
    gw.restricted(req, &did).await?;
    if gw.store().repo(&did)?.is_none() {
        return Err(repo_not_found(&did));
    }
    let entry = match &wanted {
        Ok(rev) => gw.store().revision(&did, rev)?.ok_or_else(|| {
            XrpcError::new(
                ErrorCode::RevisionNotFound,
                format!("barn holds no revision {rev} of {did}"),
            )
        })?,
        Err(bound) => gw
            .store()
            .revision_at_or_before(&did, bound)?
            .ok_or_else(|| {
                XrpcError::new(
                    ErrorCode::RevisionNotFound,
                    format!(
                        "barn holds no revision of {did} at or before {}",
                        req.params.opt("at").ok().flatten().unwrap_or_default()
                    ),
                )
            })?,
    };
    let permit = gw.car_slot().await?;
    Ok(gw.stream_car(
        permit,
        Plan::Full {
            commit: entry.cid,
            data: entry.data,
        },
        "past",
        vec![
            ("atproto-repo-rev", entry.rev.clone()),
            ("barn-seen-at", iso(entry.seen_at_ms)),
        ],
    ))
}

pub(crate) async fn list_commits(gw: &Gateway, req: &Req) -> Answer {
    let did = req.params.did("did")?;
    let limit = req.params.limit("limit", 100, 1000)?;
    let reverse = req.params.flag("reverse")?;
    let cursor = req.params.cursor()?.map(str::to_owned);
    if let Some(c) = &cursor
        && Tid::validate(c).is_err()
    {
        return Err(XrpcError::invalid("cursor: not one barn gave"));
    }
    gw.restricted(req, &did).await?;
    if gw.store().repo(&did)?.is_none() {
        return Err(repo_not_found(&did));
    }
    // Newest first, like listRecords; `reverse` for oldest first.
    let order = if reverse {
        Order::Ascending
    } else {
        Order::Descending
    };
    let page = gw
        .store()
        .history_page(&did, cursor.as_deref(), limit, order)?;
    let mut out = json!({ "commits": page.iter().map(commit_json).collect::<Vec<_>>() });
    if page.len() == limit
        && let Some(last) = page.last()
    {
        out["cursor"] = last.rev.clone().into();
    }
    Ok(axum::Json(out).into_response())
}

pub(crate) async fn get_backup_status(gw: &Gateway, req: &Req) -> Answer {
    let did = req.params.did("did")?;
    let missing_limit = req.params.limit("missingLimit", 100, 1000)?;
    gw.restricted(req, &did).await?;
    let Some(state) = gw.store().repo(&did)? else {
        return Err(repo_not_found(&did));
    };
    let mut out = json!({
        "did": did,
        "host": state.host,
        "active": state.active,
        "sync": match state.sync {
            barn_store::SyncState::Synchronized => "synchronized",
            barn_store::SyncState::Desynchronized => "desynchronized",
        },
        "revisions": state.revisions,
    });
    if let Some(h) = &state.handle {
        out["handle"] = h.clone().into();
    }
    if let Some(s) = state.status.clone().filter(|_| !state.active) {
        out["status"] = s.into();
    }
    if let Some(r) = &state.sync_reason {
        out["syncReason"] = r.clone().into();
    }
    if let Some(rev) = &state.rev
        && let Some(e) = gw.store().revision(&did, rev)?
    {
        out["head"] = json!({
            "cid": e.cid.to_string(),
            "rev": e.rev,
            "data": e.data.to_string(),
            "seenAt": iso(e.seen_at_ms),
            "source": e.source.as_str(),
        });
    }
    if let Some(cursor) = gw.store().host(&state.host)?.and_then(|h| h.cursor) {
        out["hostCursor"] = cursor.into();
    }

    // The source's head now, to say how far behind barn is.
    let url = format!(
        "{}/xrpc/com.atproto.sync.getLatestCommit",
        state.host.trim_end_matches('/')
    );
    let source = async {
        let resp = gw
            .inner
            .http
            .get(&url)
            .query(&[("did", did.as_str())])
            .send()
            .await
            .map_err(|e| format!("unreachable: {e}"))?;
        let status = resp.status();
        let body: Value = resp.json().await.map_err(|e| format!("bad answer: {e}"))?;
        if !status.is_success() {
            return Err(format!(
                "{} {}",
                body["error"].as_str().unwrap_or("error"),
                body["message"].as_str().unwrap_or_default()
            ));
        }
        match (body["cid"].as_str(), body["rev"].as_str()) {
            (Some(c), Some(r)) => Ok((c.to_owned(), r.to_owned())),
            _ => Err("answer without cid and rev".to_owned()),
        }
    }
    .await;
    let now = barn_store::now_ms();
    match source {
        Ok((cid, rev)) => {
            let barn_rev = state.rev.clone().unwrap_or_default();
            let behind = rev > barn_rev;
            let lag_ms = match (behind, rev_millis(&rev), rev_millis(&barn_rev)) {
                (false, _, _) => 0,
                (true, Some(src), Some(ours)) => src.saturating_sub(ours),
                (true, Some(src), None) => now.saturating_sub(src),
                (true, None, _) => 0,
            };
            out["source"] = json!({ "cid": cid, "rev": rev, "checkedAt": iso(now) });
            out["behind"] = behind.into();
            out["lagMs"] = lag_ms.into();
        }
        Err(e) => {
            out["source"] = json!({ "error": e, "checkedAt": iso(now) });
        }
    }

    let mut counts = json!({ "referenced": 0, "stored": 0, "missing": 0, "queued": 0 });
    let mut missing = Vec::new();
    let mut n = [0u64; 4];
    // Every blob the account ever referenced: off the async threads.
    let all = {
        let (store, did) = (gw.store().clone(), did.clone());
        tokio::task::spawn_blocking(move || store.account_blobs(&did))
            .await
            .map_err(|_| {
                XrpcError::new(ErrorCode::InternalServerError, "blob count task failed")
            })??
    };
    for (cid, b) in all {
        n[0] += 1;
        match b.status {
            BlobStatus::Stored => n[1] += 1,
            BlobStatus::Missing => {
                n[2] += 1;
                if missing.len() < missing_limit {
                    let mut m = json!({
                        "cid": cid.to_string(),
                        "reason": b.reason.clone().unwrap_or_default(),
                        "attempts": b.attempts,
                        "firstSeenAt": iso(b.first_seen_ms),
                    });
                    if let Some(d) = &b.detail {
                        m["detail"] = d.clone().into();
                    }
                    if let Some(due) = b.due_ms {
                        m["nextAttemptAt"] = iso(due).into();
                    }
                    missing.push(m);
                }
            }
            BlobStatus::Queued => n[3] += 1,
        }
    }
    for (i, k) in ["referenced", "stored", "missing", "queued"]
        .iter()
        .enumerate()
    {
        counts[*k] = n[i].into();
    }
    out["blobs"] = counts;
    out["missingBlobs"] = missing.into();
    Ok(axum::Json(out).into_response())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn the_tid_bound_takes_every_clock_id_of_that_microsecond() {
        let at = 1_700_000_000_000_000i64;
        let bound = tid_bound(at).unwrap();
        let same = Tid::from_parts(at as u64, 0).unwrap();
        let later = Tid::from_parts(at as u64 + 1, 0).unwrap();
        assert!(same.as_str() <= bound.as_str());
        assert!(later.as_str() > bound.as_str());
        assert!(tid_bound(-1).is_err());
    }
}
