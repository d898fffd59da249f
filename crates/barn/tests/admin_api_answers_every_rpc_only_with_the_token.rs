#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `barn serve`'s admin API over a real socket: every RPC refuses a call
//! without the token and with a wrong one (Unauthenticated), and with the
//! token does what it says — tracking a host backfills it, an untracked
//! account's new commits are not applied, exports at the head and at a
//! past rev verify, watch streams durable commits and admin actions, and
//! deleting an account's backup removes it (the gateway no longer serves
//! it, its only blob is gone) while the others stay whole. gRPC
//! reflection lists the service.

mod common;

use std::time::{Duration, Instant};

use barn_admin::pb;
use barn_blobs::BlobStorage;
use barn_repo::Cid;
use barn_repo::car::{CarLimits, read_car};
use barn_repo::commit::verify_repo;
use barn_testkit::{DraftOptions, FakeAccount, FakePds};
use bytes::Bytes;
use tonic::Code;

const ACCOUNTS: u64 = 3;

async fn until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(90);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn export(c: &mut barn_admin::Client, account: &str, rev: Option<&str>) -> (String, Vec<u8>) {
    let mut s = c
        .export_repo(pb::ExportRepoRequest {
            account: account.into(),
            at: rev.map(|r| pb::export_repo_request::At::Rev(r.into())),
        })
        .await
        .unwrap()
        .into_inner();
    let mut car = Vec::new();
    let mut got_rev = String::new();
    while let Some(m) = s.message().await.unwrap() {
        if !m.rev.is_empty() {
            got_rev = m.rev;
        }
        car.extend_from_slice(&m.data);
    }
    (got_rev, car)
}

/// Every RPC once with a harmless request on client `$c`; each code it
/// answered.
macro_rules! call_all {
    ($c:expr) => {{
        let c = &mut $c;
        let code = |r: Result<(), tonic::Status>| r.err().map(|s| s.code()).unwrap_or(Code::Ok);
        vec![
            (
                "TrackHost",
                code(
                    c.track_host(pb::TrackHostRequest {
                        host: "https://x.invalid".into(),
                    })
                    .await
                    .map(drop),
                ),
            ),
            (
                "UntrackHost",
                code(
                    c.untrack_host(pb::UntrackHostRequest {
                        host: "https://x.invalid".into(),
                    })
                    .await
                    .map(drop),
                ),
            ),
            (
                "TrackAccount",
                code(
                    c.track_account(pb::TrackAccountRequest {
                        account: "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa".into(),
                    })
                    .await
                    .map(drop),
                ),
            ),
            (
                "UntrackAccount",
                code(
                    c.untrack_account(pb::UntrackAccountRequest {
                        account: "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa".into(),
                    })
                    .await
                    .map(drop),
                ),
            ),
            (
                "ListTracked",
                code(c.list_tracked(pb::ListTrackedRequest {}).await.map(drop)),
            ),
            (
                "BackupNow",
                code(
                    c.backup_now(pb::BackupNowRequest {
                        target: Some(pb::backup_now_request::Target::Host(
                            "https://x.invalid".into(),
                        )),
                    })
                    .await
                    .map(drop),
                ),
            ),
            (
                "GetStatus",
                code(c.get_status(pb::GetStatusRequest {}).await.map(drop)),
            ),
            (
                "GetAccount",
                code(
                    c.get_account(pb::GetAccountRequest {
                        account: "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa".into(),
                    })
                    .await
                    .map(drop),
                ),
            ),
            (
                "DeleteAccountBackup",
                code(
                    c.delete_account_backup(pb::DeleteAccountBackupRequest {
                        did: "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa".into(),
                        confirm: "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa".into(),
                    })
                    .await
                    .map(drop),
                ),
            ),
            (
                "WatchEvents",
                code(
                    c.watch_events(pb::WatchEventsRequest {
                        host: String::new(),
                    })
                    .await
                    .map(drop),
                ),
            ),
            (
                "ExportRepo",
                code(
                    c.export_repo(pb::ExportRepoRequest {
                        account: "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa".into(),
                        at: None,
                    })
                    .await
                    .map(drop),
                ),
            ),
        ]
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_answers_every_rpc_only_with_the_token() {
    let fake = FakePds::start().await.unwrap();
    let host = fake.url().to_owned();
    let mut accounts = Vec::new();
    let mut blobs: Vec<Cid> = Vec::new();
    for i in 0..ACCOUNTS {
        let mut acct = FakeAccount::new(&FakeAccount::plc_did(900 + i), 900 + i);
        let blob = fake.set_blob(
            acct.did(),
            Bytes::from(format!("blob of account {i}").repeat(100)),
            "image/png",
        );
        let genesis = acct
            .draft_with(
                0,
                &DraftOptions {
                    records: 8,
                    blobs: vec![blob],
                    ..DraftOptions::default()
                },
            )
            .unwrap();
        acct.apply(&genesis);
        fake.set_did_doc(acct.did(), acct.did_doc(&host));
        fake.set_repo(acct.did(), acct.car());
        accounts.push(acct);
        blobs.push(blob);
    }
    let dir = tempfile::tempdir().unwrap();
    // The host is not in the config: the admin API adds it.
    let (data, config) = common::write_config(dir.path(), &host, false, "");
    let log = dir.path().join("barn.log");
    let _barn = common::spawn_barn(["serve", "--config", config.to_str().unwrap()], &log);
    common::wait_running(&log, 0).await;
    let url = common::admin_url(&log, 0).await;
    let gateway = common::gateway_url(&log, 0).await;
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let token = token.trim();
    assert!(token.len() >= 32, "a generated token: {token:?}");

    // Without a token, and with a wrong one: every RPC is refused.
    let mut anonymous = pb::admin_client::AdminClient::connect(url.clone())
        .await
        .unwrap();
    let answers = call_all!(anonymous);
    assert_eq!(answers.len(), 11);
    for (rpc, code) in answers {
        assert_eq!(code, Code::Unauthenticated, "{rpc} without a token");
    }
    let mut wrong = barn_admin::connect(&url, "0123456789abcdef0123456789abcdef")
        .await
        .unwrap();
    for (rpc, code) in call_all!(wrong) {
        assert_eq!(code, Code::Unauthenticated, "{rpc} with a wrong token");
    }
    // The refusals changed nothing.
    let mut c = barn_admin::connect(&url, token).await.unwrap();
    let tracked = c
        .list_tracked(pb::ListTrackedRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(tracked.hosts.is_empty(), "{tracked:?}");

    // With the token, each RPC answers (for the unknown things above:
    // NotFound, never Unauthenticated).
    let mut watch = c
        .watch_events(pb::WatchEventsRequest {
            host: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let bad = c
        .track_host(pb::TrackHostRequest {
            host: "not a url".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("https://"), "{}", bad.message());

    // TrackHost: the host is backfilled whole.
    let r = c
        .track_host(pb::TrackHostRequest { host: host.clone() })
        .await
        .unwrap()
        .into_inner();
    assert!(r.added);
    let again = c
        .track_host(pb::TrackHostRequest { host: host.clone() })
        .await
        .unwrap()
        .into_inner();
    assert!(!again.added);
    until("the backfill", || {
        let mut c = c.clone();
        async move {
            let s = c
                .get_status(pb::GetStatusRequest {})
                .await
                .unwrap()
                .into_inner();
            s.repos == ACCOUNTS && s.repos_desynchronized == 0
        }
    })
    .await;
    let status = c
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.hosts.len(), 1);
    assert!(status.hosts[0].whole);
    assert_eq!(status.hosts[0].repos, ACCOUNTS);
    assert!(status.store_bytes > 0);
    // The admin action reached the watcher.
    let first = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let ev = watch.message().await.unwrap().unwrap();
            if let Some(pb::watch_event::Event::Admin(a)) = ev.event {
                return a;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(
        (first.action.as_str(), first.target.as_str()),
        ("track_host", host.trim_end_matches('/'))
    );

    // GetAccount: the backup of each account, blobs included.
    let did0 = accounts[0].did().to_owned();
    until("every blob", || {
        let mut c = c.clone();
        let did0 = did0.clone();
        async move {
            let a = c
                .get_account(pb::GetAccountRequest { account: did0 })
                .await
                .unwrap()
                .into_inner();
            a.blobs_stored == 1
        }
    })
    .await;
    let a0 = c
        .get_account(pb::GetAccountRequest {
            account: did0.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a0.records, 8);
    assert_eq!(a0.rev, accounts[0].head().unwrap().rev);
    assert!(
        a0.tracked && a0.active && a0.sync == "synchronized",
        "{a0:?}"
    );

    // A live commit: durable, announced on the watch stream.
    let old_rev = a0.rev.clone();
    let (_, old_car) = export(&mut c, &did0, None).await;
    let draft = accounts[0].draft(1).unwrap();
    accounts[0].apply(&draft);
    fake.push(1, draft.frame());
    let new_rev = draft.event.rev.clone();
    let seen = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let ev = watch.message().await.unwrap().unwrap();
            if let Some(pb::watch_event::Event::Durable(d)) = ev.event
                && d.repos.iter().any(|r| r.did == did0 && r.rev == new_rev)
            {
                return d;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(seen.cursor, 1);

    // ExportRepo: the head, and the past revision, each a verified CAR.
    let (rev, car) = export(&mut c, &did0, None).await;
    assert_eq!(rev, new_rev);
    let parsed = read_car(car.into(), &CarLimits::default()).unwrap();
    let repo = verify_repo(
        &parsed.blocks,
        parsed.root().unwrap(),
        Some(&did0),
        Some(&accounts[0].public_key()),
    )
    .unwrap();
    assert_eq!(repo.records.len(), accounts[0].records().len());
    let (rev, past) = export(&mut c, &did0, Some(&old_rev)).await;
    assert_eq!(rev, old_rev);
    assert_eq!(past, old_car, "the past revision, byte for byte");
    let missing = c
        .export_repo(pb::ExportRepoRequest {
            account: did0.clone(),
            at: Some(pb::export_repo_request::At::Rev("2222222222222".into())),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    // BackupNow: an account is fetched again from its PDS.
    let did1 = accounts[1].did().to_owned();
    let fetched = fake.get_repo_count(&did1);
    let r = c
        .backup_now(pb::BackupNowRequest {
            target: Some(pb::backup_now_request::Target::Account(did1.clone())),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.started.contains(&did1), "{}", r.started);
    until("the backup of account 1", || {
        let fake = &fake;
        let did1 = did1.clone();
        async move { fake.get_repo_count(&did1) > fetched }
    })
    .await;
    let r = c
        .backup_now(pb::BackupNowRequest {
            target: Some(pb::backup_now_request::Target::Host(host.clone())),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.started.contains("listing"), "{}", r.started);

    // UntrackAccount: its next commit is not applied; TrackAccount brings
    // it back, and the commit is fetched.
    let did2 = accounts[2].did().to_owned();
    let r = c
        .untrack_account(pb::UntrackAccountRequest {
            account: did2.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.removed);
    let a2 = c
        .get_account(pb::GetAccountRequest {
            account: did2.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!a2.tracked);
    let held = a2.rev.clone();
    let draft = accounts[2].draft(2).unwrap();
    accounts[2].apply(&draft);
    fake.set_repo(&did2, accounts[2].car());
    fake.push(2, draft.frame());
    // A later commit of another account is durable: seq 2 was passed over.
    let draft = accounts[0].draft(3).unwrap();
    accounts[0].apply(&draft);
    fake.push(3, draft.frame());
    let r0 = draft.event.rev.clone();
    until("seq 3", || {
        let mut c = c.clone();
        let did0 = did0.clone();
        let r0 = r0.clone();
        async move {
            c.get_account(pb::GetAccountRequest { account: did0 })
                .await
                .unwrap()
                .into_inner()
                .rev
                == r0
        }
    })
    .await;
    let a2 = c
        .get_account(pb::GetAccountRequest {
            account: did2.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a2.rev, held, "an untracked account's commit was applied");
    let r = c
        .track_account(pb::TrackAccountRequest {
            account: did2.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.did, did2);
    assert_eq!(r.pds.trim_end_matches('/'), host.trim_end_matches('/'));
    let want = accounts[2].head().unwrap().rev.clone();
    until("account 2 caught up", || {
        let mut c = c.clone();
        let did2 = did2.clone();
        let want = want.clone();
        async move {
            c.get_account(pb::GetAccountRequest { account: did2 })
                .await
                .unwrap()
                .into_inner()
                .rev
                == want
        }
    })
    .await;
    let tracked = c
        .list_tracked(pb::ListTrackedRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(tracked.accounts.contains(&did2), "{tracked:?}");

    // DeleteAccountBackup: confirmation required; then it is gone.
    let refused = c
        .delete_account_backup(pb::DeleteAccountBackupRequest {
            did: did1.clone(),
            confirm: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let blob1 = data
        .join("blobs")
        .join(BlobStorage::key(&blobs[1]).as_ref());
    assert!(blob1.exists());
    let r = c
        .delete_account_backup(pb::DeleteAccountBackupRequest {
            did: did1.clone(),
            confirm: did1.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    // The fake writes the same eight records into every account: those
    // blocks (and the MST nodes over them) are shared and kept; the
    // commit and the nodes of its own are deleted.
    assert!(r.revisions >= 1 && r.records == 8 && r.blocks >= 1, "{r:?}");
    assert!(r.blocks + r.blocks_shared > 8, "{r:?}");
    assert_eq!((r.blobs, r.blobs_shared), (1, 0));
    assert!(!blob1.exists(), "the account's only blob is deleted");
    let gone = c
        .get_account(pb::GetAccountRequest {
            account: did1.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{gateway}/xrpc/com.atproto.sync.getRepo"))
        .query(&[("did", &did1)])
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "RepoNotFound"
    );
    // The other accounts are whole.
    let (_, car) = export(&mut c, &did0, None).await;
    let parsed = read_car(car.into(), &CarLimits::default()).unwrap();
    verify_repo(
        &parsed.blocks,
        parsed.root().unwrap(),
        Some(&did0),
        Some(&accounts[0].public_key()),
    )
    .unwrap();

    // UntrackHost: no longer whole; the account tracked one by one stays.
    let r = c
        .untrack_host(pb::UntrackHostRequest { host: host.clone() })
        .await
        .unwrap()
        .into_inner();
    assert!(r.removed);
    assert_eq!(r.accounts_kept, 1);
    let tracked = c
        .list_tracked(pb::ListTrackedRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(tracked.hosts.iter().all(|h| !h.whole), "{tracked:?}");

    // Reflection: a plain gRPC client lists the admin service.
    let services = reflection_services(&url).await;
    assert!(
        services.contains(&"barn.admin.v1.Admin".to_owned()),
        "{services:?}"
    );

    // Every answer above was counted.
    let metrics = http
        .get(format!("{gateway}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("barn_admin_requests_total{code=\"Unauthenticated\",method=\"any\"} 22"),
        "{metrics}"
    );
    assert!(
        metrics.contains("barn_admin_requests_total{code=\"Ok\",method=\"DeleteAccountBackup\"} 1")
    );
}

async fn reflection_services(url: &str) -> Vec<String> {
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    );
    let codec =
        tonic_prost::ProstCodec::<ServerReflectionRequest, ServerReflectionResponse>::default();
    let mut stream = grpc
        .streaming(tonic::Request::new(tokio_stream::once(req)), path, codec)
        .await
        .unwrap()
        .into_inner();
    let msg = stream.message().await.unwrap().unwrap();
    match msg.message_response {
        Some(MessageResponse::ListServicesResponse(l)) => {
            l.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("not a service list: {other:?}"),
    }
}
