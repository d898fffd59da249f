//! A gateway over a store filled from fake accounts, on a real socket.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use barn_blobs::{BlobStorage, StorageConfig};
use barn_identity::{Resolver, ResolverConfig};
use barn_repo::Cid;
use barn_store::{
    Batch, BlobHint, BlobOutcome, CommitEntry, Op, OpAction, RepoState, Source, Store, StoreOptions,
};
use barn_testkit::{DraftCommit, DraftOptions, FakeAccount, FakePds};
use barn_xrpc::{Gateway, GatewayConfig};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;

pub const ADMIN: &str = "operator-secret-token-0123";
pub const SERVICE_DID: &str = "did:web:barn.test";

pub struct Fixture {
    pub fake: FakePds,
    pub store: Arc<Store>,
    pub dir: tempfile::TempDir,
    pub url: String,
    pub gateway: Gateway,
    pub http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// The blob directory of the fixture's local storage.
pub fn blob_dir(dir: &std::path::Path) -> std::path::PathBuf {
    dir.join("blobs")
}

impl Fixture {
    /// An empty store and a fake PDS (whose PLC endpoint resolves the
    /// accounts' keys); the gateway starts with [`Fixture::serve`].
    pub async fn parts() -> (FakePds, Arc<Store>, tempfile::TempDir) {
        let fake = FakePds::start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(Store::open(&dir.path().join("store"), &StoreOptions::default()).unwrap());
        (fake, store, dir)
    }

    pub async fn serve(
        fake: FakePds,
        store: Arc<Store>,
        dir: tempfile::TempDir,
        config: GatewayConfig,
    ) -> Fixture {
        let resolver = Resolver::new(ResolverConfig {
            plc_url: fake.url().to_owned(),
            allow_http_localhost: true,
            ..ResolverConfig::default()
        })
        .unwrap();
        let storage = BlobStorage::open(&StorageConfig::Local {
            dir: blob_dir(dir.path()),
        })
        .unwrap();
        let registry = prometheus::Registry::new();
        let gateway = Gateway::new(
            store.clone(),
            Some(storage),
            resolver,
            config,
            Some(registry),
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let g = gateway.clone();
        tokio::spawn(async move {
            g.serve(listener, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Fixture {
            fake,
            store,
            dir,
            url,
            gateway,
            http: reqwest::Client::new(),
            stop: Some(tx),
        }
    }

    /// GET `/xrpc/<method>?<query>` with an optional bearer token.
    pub async fn get(
        &self,
        method: &str,
        query: &[(&str, &str)],
        token: Option<&str>,
    ) -> reqwest::Response {
        let mut r = self
            .http
            .get(format!("{}/xrpc/{method}", self.url))
            .query(query);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().await.unwrap()
    }
}

/// The config tests use: the admin token, the service DID, no rate limit.
pub fn config() -> GatewayConfig {
    GatewayConfig {
        service_did: SERVICE_DID.into(),
        admin_token: Some(ADMIN.into()),
        rate_limit: None,
        ..GatewayConfig::default()
    }
}

/// Stores `draft` (already applied to `acct`) as the next revision, as
/// the mirror would after verifying it.
pub fn store_draft(store: &Store, host: &str, acct: &FakeAccount, draft: &DraftCommit) {
    let did = acct.did();
    let mut batch = Batch::new();
    for (cid, bytes) in &draft.blocks {
        batch.put_block(*cid, bytes.clone());
    }
    let ops: Vec<Op> = draft
        .records
        .iter()
        .map(|(path, cid)| Op {
            action: OpAction::Create,
            path: path.clone(),
            cid: Some(*cid),
            prev: None,
        })
        .collect();
    for (path, cid) in &draft.records {
        batch.set_record(did, path, Some(*cid));
    }
    batch.put_revision(
        did,
        CommitEntry {
            rev: draft.event.rev.clone(),
            cid: draft.event.commit,
            data: draft.data,
            since: draft.event.since.clone(),
            seen_at_ms: barn_store::now_ms(),
            source: Source::Firehose,
            seq: Some(draft.event.seq),
            host: host.to_owned(),
            ops,
            reason: None,
            chunked: None,
        },
    );
    let mut state = store
        .repo(did)
        .unwrap()
        .unwrap_or_else(|| RepoState::new(host));
    state.advance(draft.event.commit, draft.event.rev.clone(), draft.data);
    batch.set_repo(did, state);
    store.write(batch).unwrap();
}

/// A new account with `revisions` commits of `per_commit` records each,
/// stored in `store` and resolvable at the fake PLC.
pub fn account(
    fake: &FakePds,
    store: &Store,
    n: u64,
    revisions: usize,
    per_commit: usize,
) -> FakeAccount {
    let mut acct = FakeAccount::new(&FakeAccount::plc_did(n), n);
    for seq in 0..revisions {
        let draft = acct
            .draft_with(
                seq as i64,
                &DraftOptions {
                    records: per_commit,
                    ..DraftOptions::default()
                },
            )
            .unwrap();
        acct.apply(&draft);
        store_draft(store, fake.url(), &acct, &draft);
    }
    fake.set_did_doc(acct.did(), acct.did_doc(fake.url()));
    acct
}

/// Sets an account's status as an `#account` event would.
pub fn set_status(store: &Store, did: &str, status: Option<&str>) {
    let mut state = store.repo(did).unwrap().unwrap();
    state.active = status.is_none();
    state.status = status.map(str::to_owned);
    let mut batch = Batch::new();
    batch.set_repo(did, state);
    store.write(batch).unwrap();
}

/// Puts `bytes` in the local blob directory under `dir` as a stored blob
/// referenced by `did`.
pub fn stored_blob(
    store: &Store,
    dir: &std::path::Path,
    did: &str,
    bytes: &[u8],
    mime: &str,
) -> Cid {
    let cid = barn_repo::cid_for_raw(bytes);
    let path = blob_dir(dir).join(BlobStorage::key(&cid).as_ref());
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    let mut batch = Batch::new();
    batch.add_blob_ref(
        did,
        cid,
        BlobHint {
            mime: Some(mime.into()),
            size: Some(bytes.len() as u64),
        },
    );
    store.write(batch).unwrap();
    store
        .settle_blob(
            &cid,
            BlobOutcome::Stored {
                size: bytes.len() as u64,
                mime: Some(mime.into()),
            },
        )
        .unwrap();
    cid
}

/// A service auth JWT signed with `acct`'s key.
pub fn jwt(
    acct: &FakeAccount,
    iss: &str,
    aud: &str,
    lxm: Option<&str>,
    exp_in_secs: i64,
) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut payload = serde_json::json!({
        "iss": iss,
        "aud": aud,
        "iat": now,
        "exp": now + exp_in_secs,
        "jti": format!("{now}-{iss}"),
    });
    if let Some(l) = lxm {
        payload["lxm"] = l.into();
    }
    let h = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"ES256K"}"#);
    let p = URL_SAFE_NO_PAD.encode(payload.to_string());
    let sig = acct.key().sign(format!("{h}.{p}").as_bytes());
    format!("{h}.{p}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// Status and XRPC error name of an answer (body consumed).
pub async fn outcome(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    if status == 200 {
        return (200, String::new());
    }
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    (
        status,
        body["error"]
            .as_str()
            .unwrap_or("<no error name>")
            .to_owned(),
    )
}

pub fn car_root(car: &Bytes) -> Cid {
    let file = barn_repo::car::read_car(car.clone(), &Default::default()).unwrap();
    *file.root().unwrap()
}

/// RFC 3339 with microseconds, UTC, for `micros` since the epoch.
pub fn rfc3339_micros(micros: u64) -> String {
    barn_repo::syntax::Datetime::from_unix_micros(micros as i64).into_string()
}

/// The testkit identity of a fake account (for `compare_cars`).
pub fn identity(fake: &FakePds, acct: &FakeAccount) -> barn_testkit::Identity {
    barn_testkit::Identity {
        did: acct.did().to_owned(),
        signing_key: acct.public_key(),
        pds: fake.url().to_owned(),
        handle: None,
    }
}
