//! `com.atproto.repo.*` reads: records as JSON, from barn's current copy.

use axum::response::IntoResponse;
use barn_repo::Cid;
use barn_store::Order;
use serde_json::{Value, json};

use crate::error::{ErrorCode, XrpcError};
use crate::sync::Answer;
use crate::{Gateway, Req};

pub(crate) const GET_RECORD: &str = "com.atproto.repo.getRecord";
pub(crate) const LIST_RECORDS: &str = "com.atproto.repo.listRecords";
pub(crate) const DESCRIBE_REPO: &str = "com.atproto.repo.describeRepo";

/// A stored record block as atproto JSON.
fn record_json(gw: &Gateway, cid: &Cid) -> Result<Value, XrpcError> {
    let bytes = gw.store().block(cid)?.ok_or_else(|| {
        tracing::error!(%cid, "gateway: an indexed record's block is missing");
        XrpcError::new(ErrorCode::InternalServerError, "a stored record is missing")
    })?;
    match barn_repo::data::decode(&bytes) {
        Ok(v) => Ok(barn_repo::data::to_json(&v)),
        // Stored as received (barn never drops a record it cannot read);
        // it has no JSON form.
        Err(e) => Err(XrpcError::new(
            ErrorCode::InvalidRequest,
            format!("record {cid} is not valid DAG-CBOR and has no JSON form: {e}"),
        )),
    }
}

pub(crate) async fn get_record(gw: &Gateway, req: &Req) -> Answer {
    let repo = req.params.at_identifier("repo")?;
    let collection = req.params.nsid("collection")?;
    let rkey = req.params.rkey("rkey")?;
    let want = req.params.cid("cid")?;
    let did = gw.did_of(&repo)?;
    gw.visible_repo(req, &did).await?;
    let uri = format!("at://{did}/{collection}/{rkey}");
    let not_found = || {
        XrpcError::new(
            ErrorCode::RecordNotFound,
            format!("Could not locate record: {uri}"),
        )
    };
    let cid = gw
        .store()
        .record(&did, &format!("{collection}/{rkey}"))?
        .ok_or_else(not_found)?;
    if want.is_some_and(|w| w != cid) {
        return Err(not_found());
    }
    let value = record_json(gw, &cid)?;
    Ok(axum::Json(json!({ "uri": uri, "cid": cid.to_string(), "value": value })).into_response())
}

pub(crate) async fn list_records(gw: &Gateway, req: &Req) -> Answer {
    let repo = req.params.at_identifier("repo")?;
    let collection = req.params.nsid("collection")?;
    let limit = req.params.limit("limit", 50, 100)?;
    let reverse = req.params.flag("reverse")?;
    let cursor = req.params.cursor()?.map(str::to_owned);
    if let Some(c) = &cursor
        && barn_repo::syntax::RecordKey::validate(c).is_err()
    {
        return Err(XrpcError::invalid("cursor: not one barn gave"));
    }
    let did = gw.did_of(&repo)?;
    gw.visible_repo(req, &did).await?;
    // A PDS lists newest first (rkeys are mostly TIDs); `reverse` flips it.
    let order = if reverse {
        Order::Ascending
    } else {
        Order::Descending
    };
    let page = gw
        .store()
        .records_page(&did, &collection, cursor.as_deref(), limit, order)?;
    let mut records = Vec::with_capacity(page.len());
    for (rkey, cid) in &page {
        // A record barn stored as received but cannot read has no JSON
        // form: skipped (and logged), so the page and its cursor still
        // come back.
        let value = match record_json(gw, cid) {
            Ok(v) => v,
            Err(e) if e.code == ErrorCode::InternalServerError => return Err(e),
            Err(e) => {
                tracing::info!(did, %cid, error = %e, "gateway: listRecords skipped an unreadable record");
                continue;
            }
        };
        records.push(json!({
            "uri": format!("at://{did}/{collection}/{rkey}"),
            "cid": cid.to_string(),
            "value": value,
        }));
    }
    let mut out = json!({ "records": records });
    if page.len() == limit
        && let Some((rkey, _)) = page.last()
    {
        out["cursor"] = rkey.clone().into();
    }
    Ok(axum::Json(out).into_response())
}

pub(crate) async fn describe_repo(gw: &Gateway, req: &Req) -> Answer {
    let repo = req.params.at_identifier("repo")?;
    let did = gw.did_of(&repo)?;
    let (state, _) = gw.visible_repo(req, &did).await?;
    let collections = {
        let (store, did) = (gw.store().clone(), did.clone());
        tokio::task::spawn_blocking(move || store.collections(&did))
            .await
            .map_err(|_| {
                XrpcError::new(ErrorCode::InternalServerError, "collections task failed")
            })??
    };
    // The document as published now; when it cannot be had (the PLC
    // directory is unreachable), the DID alone, and the handle unconfirmed.
    let doc = match gw.inner.resolver.document(&did).await {
        Ok(doc) => doc,
        Err(e) => {
            tracing::info!(did, error = %e, "gateway: describeRepo without a DID document");
            json!({ "id": did })
        }
    };
    let doc_handle = barn_identity::Resolver::parse_document(&did, &doc)
        .ok()
        .and_then(|i| i.handle);
    let handle = state
        .handle
        .clone()
        .or_else(|| doc_handle.clone())
        .unwrap_or_else(|| "handle.invalid".into());
    let handle_is_correct = doc_handle
        .as_deref()
        .is_some_and(|h| h.eq_ignore_ascii_case(&handle));
    Ok(axum::Json(json!({
        "handle": handle,
        "did": did,
        "didDoc": doc,
        "collections": collections,
        "handleIsCorrect": handle_is_correct,
    }))
    .into_response())
}
