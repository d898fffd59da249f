#![allow(clippy::unwrap_used, clippy::expect_used)]
//! barn's own methods against their lexicons in `lexicons/dev/barn/`: every
//! field answered is declared with that type, every required field is
//! there, every error answered is declared, and a CAR is answered as one.

mod common;

use std::path::PathBuf;

use serde_json::Value;

use common::{ADMIN, Fixture};

fn lexicon(nsid: &str) -> Value {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "..", "..", "lexicons"]
        .iter()
        .collect::<PathBuf>()
        .join(nsid.replace('.', "/") + ".json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(doc["id"], nsid, "{}", path.display());
    doc
}

/// Checks `value` against `schema` (a lexicon def within `doc`); returns
/// the problems, each with its path.
fn check(doc: &Value, schema: &Value, value: &Value, at: &str, problems: &mut Vec<String>) {
    let schema = match schema["type"].as_str() {
        Some("ref") => {
            let r = schema["ref"].as_str().unwrap();
            &doc["defs"][r.trim_start_matches('#')]
        }
        _ => schema,
    };
    match schema["type"].as_str().unwrap() {
        "object" => {
            let Some(obj) = value.as_object() else {
                problems.push(format!("{at}: not an object"));
                return;
            };
            for req in schema["required"].as_array().into_iter().flatten() {
                if !obj.contains_key(req.as_str().unwrap()) {
                    problems.push(format!("{at}: required {req} missing"));
                }
            }
            for (k, v) in obj {
                match schema["properties"].get(k) {
                    Some(s) => check(doc, s, v, &format!("{at}.{k}"), problems),
                    None => problems.push(format!("{at}.{k}: not declared")),
                }
            }
        }
        "array" => match value.as_array() {
            Some(items) => {
                for (i, v) in items.iter().enumerate() {
                    check(doc, &schema["items"], v, &format!("{at}[{i}]"), problems);
                }
            }
            None => problems.push(format!("{at}: not an array")),
        },
        "string" => {
            if !value.is_string() {
                problems.push(format!("{at}: not a string: {value}"));
            }
        }
        "integer" => {
            if !(value.is_i64() || value.is_u64()) {
                problems.push(format!("{at}: not an integer: {value}"));
            }
        }
        "boolean" => {
            if !value.is_boolean() {
                problems.push(format!("{at}: not a boolean: {value}"));
            }
        }
        other => problems.push(format!("{at}: schema type {other} not handled here")),
    }
}

fn declared_errors(doc: &Value) -> Vec<String> {
    doc["defs"]["main"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_methods_answer_what_their_lexicons_declare() {
    let (fake, store, dir) = Fixture::parts().await;
    let alice = common::account(&fake, &store, 841, 4, 3);
    common::stored_blob(&store, dir.path(), alice.did(), b"a picture", "image/png");
    // A blob the source would not give: listed as missing, with a reason.
    let missing = barn_repo::cid_for_raw(b"gone");
    let mut batch = barn_store::Batch::new();
    batch.add_blob_ref(alice.did(), missing, barn_store::BlobHint::default());
    store.write(batch).unwrap();
    store
        .settle_blob(
            &missing,
            barn_store::BlobOutcome::Failed {
                status: barn_store::BlobStatus::Missing,
                reason: "not_found".into(),
                detail: "404 from the source".into(),
                retry_at_ms: barn_store::now_ms() + 600_000,
            },
        )
        .unwrap();
    let fx = Fixture::serve(fake, store, dir, common::config()).await;
    let did = alice.did();

    for (nsid, query) in [
        (
            "dev.barn.sync.listCommits",
            vec![("did", did), ("limit", "2")],
        ),
        (
            "dev.barn.sync.listCommits",
            vec![("did", did), ("reverse", "true")],
        ),
        ("dev.barn.backup.getStatus", vec![("did", did)]),
    ] {
        let doc = lexicon(nsid);
        let resp = fx.get(nsid, &query, Some(ADMIN)).await;
        assert_eq!(resp.status(), 200, "{nsid}");
        let body: Value = resp.json().await.unwrap();
        let mut problems = Vec::new();
        check(
            &doc,
            &doc["defs"]["main"]["output"]["schema"],
            &body,
            nsid,
            &mut problems,
        );
        assert!(problems.is_empty(), "{nsid}: {problems:#?}\n{body:#}");
        if nsid == "dev.barn.backup.getStatus" {
            assert_eq!(body["blobs"]["stored"], 1);
            assert_eq!(body["blobs"]["missing"], 1);
            assert_eq!(body["missingBlobs"][0]["reason"], "not_found");
            assert_eq!(body["missingBlobs"][0]["cid"], missing.to_string());
            // The fake source knows nothing of the repo: said, not hidden.
            assert!(body["source"]["error"].is_string(), "{body:#}");
        }
    }

    // Errors answered are declared.
    for (nsid, query, token) in [
        (
            "dev.barn.sync.getRepoAt",
            vec![("did", did), ("rev", "3zzzzzzzzzzzz")],
            Some(ADMIN),
        ),
        (
            "dev.barn.sync.getRepoAt",
            vec![
                ("did", "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"),
                ("rev", "3zzzzzzzzzzzz"),
            ],
            Some(ADMIN),
        ),
        (
            "dev.barn.sync.getRepoAt",
            vec![("did", did), ("rev", "3zzzzzzzzzzzz")],
            None,
        ),
        (
            "dev.barn.sync.listCommits",
            vec![("did", "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa")],
            Some(ADMIN),
        ),
        ("dev.barn.backup.getStatus", vec![("did", did)], None),
    ] {
        let doc = lexicon(nsid);
        let (status, error) = common::outcome(fx.get(nsid, &query, token).await).await;
        assert!(status >= 400);
        assert!(
            declared_errors(&doc).contains(&error),
            "{nsid} answered {error}, which its lexicon does not declare"
        );
    }

    // The CAR method answers a CAR whose root is the head.
    let doc = lexicon("dev.barn.sync.getRepoAt");
    let rev = alice.head().unwrap().rev.clone();
    let resp = fx
        .get(
            "dev.barn.sync.getRepoAt",
            &[("did", did), ("rev", &rev)],
            Some(ADMIN),
        )
        .await;
    assert_eq!(
        resp.headers()["content-type"],
        doc["defs"]["main"]["output"]["encoding"].as_str().unwrap()
    );
    let car = resp.bytes().await.unwrap();
    assert_eq!(common::car_root(&car), alice.head().unwrap().cid);
}
