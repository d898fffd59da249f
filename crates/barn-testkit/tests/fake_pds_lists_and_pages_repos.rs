#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The fake PDS's host-wide endpoints, which backfill and reconcile tests
//! drive barn with: `listRepos` pages in DID order with the cursor echoed
//! back, `getLatestCommit` / `getRepoStatus` report each repo's head and
//! hosting status, an inactive repo is refused the way a PDS refuses it,
//! and the fake logs what was asked (cursors, `since`, per-DID counts) and
//! can hold `getRepo` answers back.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

use barn_testkit::{Client, FakeAccount, FakePds, XrpcError};

/// An account with `commits` applied commits, its CAR set on `fake`.
fn account(fake: &FakePds, n: u64, commits: usize) -> FakeAccount {
    let mut acct = FakeAccount::new(&FakeAccount::plc_did(n), n);
    for seq in 0..commits {
        let draft = acct.draft(seq as i64 + 1).unwrap();
        acct.apply(&draft);
    }
    fake.set_repo(acct.did(), acct.car());
    acct
}

async fn json(client: &Client, fake: &FakePds, nsid: &str, params: &[(&str, &str)]) -> Value {
    client.get_json(fake.url(), nsid, params).await.unwrap()
}

async fn xrpc_err(client: &Client, fake: &FakePds, nsid: &str, did: &str) -> XrpcError {
    client
        .get(fake.url(), nsid, &[("did", did)])
        .await
        .unwrap()
        .expect_err("an XRPC error")
}

fn dids(page: &Value) -> Vec<String> {
    page["repos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["did"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn list_repos_pages_in_did_order_and_echoes_cursors() {
    let fake = FakePds::start().await.unwrap();
    let client = Client::new();
    // Set in an order unlike DID order: plc_did spells the low digits first.
    let accounts: Vec<FakeAccount> = (1..=25).map(|n| account(&fake, n * 7, 1)).collect();
    let mut sorted: Vec<String> = accounts.iter().map(|a| a.did().to_owned()).collect();
    sorted.sort();
    let set_order: Vec<String> = accounts.iter().map(|a| a.did().to_owned()).collect();
    assert_ne!(set_order, sorted, "the test needs an unsorted insert order");

    // 25 repos, limit 10: 10, 10, 5; the cursor is echoed back; none on the last.
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut params = vec![("limit", "10")];
        if let Some(c) = &cursor {
            params.push(("cursor", c));
        }
        let page = json(&client, &fake, "com.atproto.sync.listRepos", &params).await;
        cursor = page["cursor"].as_str().map(str::to_owned);
        pages.push(page);
        if cursor.is_none() {
            break;
        }
        assert!(pages.len() < 10, "listRepos does not end");
    }
    let sizes: Vec<usize> = pages.iter().map(|p| dids(p).len()).collect();
    assert_eq!(sizes, [10, 10, 5]);
    assert_eq!(pages.iter().flat_map(dids).collect::<Vec<_>>(), sorted);
    // The cursor of a full page is its last DID.
    assert_eq!(pages[0]["cursor"].as_str(), Some(sorted[9].as_str()));
    assert_eq!(pages[1]["cursor"].as_str(), Some(sorted[19].as_str()));
    assert!(pages[2].get("cursor").is_none(), "{}", pages[2]);
    assert_eq!(
        fake.list_repos_cursors(),
        [None, Some(sorted[9].clone()), Some(sorted[19].clone())]
    );
    assert_eq!(fake.list_repos_requests(), 3);

    // Each entry: head and rev of the CAR's root commit, active, no status.
    for entry in pages
        .iter()
        .flat_map(|p| p["repos"].as_array().unwrap().clone())
    {
        let acct = accounts.iter().find(|a| entry["did"] == a.did()).unwrap();
        let head = acct.head().unwrap();
        assert_eq!(entry["head"].as_str(), Some(head.cid.to_string().as_str()));
        assert_eq!(entry["rev"].as_str(), Some(head.rev.as_str()));
        assert_eq!(entry["active"], true);
        assert!(entry.get("status").is_none(), "{entry}");
    }

    // A page exactly full has a cursor; the request after it gets an empty
    // page without one.
    let page = json(
        &client,
        &fake,
        "com.atproto.sync.listRepos",
        &[("limit", "5"), ("cursor", &sorted[14])],
    )
    .await;
    assert_eq!(dids(&page), &sorted[15..20]);
    assert_eq!(page["cursor"].as_str(), Some(sorted[19].as_str()));
    let page = json(
        &client,
        &fake,
        "com.atproto.sync.listRepos",
        &[("limit", "5"), ("cursor", &sorted[24])],
    )
    .await;
    assert!(dids(&page).is_empty());
    assert!(page.get("cursor").is_none(), "{page}");

    // Default 500 (all, no cursor); limits clamped to 1..=1000.
    let page = json(&client, &fake, "com.atproto.sync.listRepos", &[]).await;
    assert_eq!(dids(&page), sorted);
    assert!(page.get("cursor").is_none());
    let page = json(
        &client,
        &fake,
        "com.atproto.sync.listRepos",
        &[("limit", "0")],
    )
    .await;
    assert_eq!(dids(&page), &sorted[..1]);
    assert_eq!(page["cursor"].as_str(), Some(sorted[0].as_str()));
    let page = json(
        &client,
        &fake,
        "com.atproto.sync.listRepos",
        &[("limit", "5000")],
    )
    .await;
    assert_eq!(dids(&page).len(), 25);
    let err = client
        .get(
            fake.url(),
            "com.atproto.sync.listRepos",
            &[("limit", "ten")],
        )
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!((err.status, err.error.as_str()), (400, "InvalidRequest"));
    assert_eq!(fake.list_repos_requests(), 9);

    // A new commit moves head and rev; a repo without a commit is not listed
    // (getRepo still serves its CAR, getLatestCommit finds no root).
    let mut first = accounts.into_iter().next().unwrap();
    let draft = first.draft(2).unwrap();
    first.apply(&draft);
    fake.set_repo(first.did(), first.car());
    let empty = FakeAccount::new(&FakeAccount::plc_did(1_000_000), 9);
    fake.set_repo(empty.did(), empty.car());
    let page = json(&client, &fake, "com.atproto.sync.listRepos", &[]).await;
    assert_eq!(dids(&page), sorted, "the commitless repo is left out");
    let entry = page["repos"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["did"] == first.did())
        .unwrap()
        .clone();
    assert_eq!(entry["rev"].as_str(), Some(draft.event.rev.as_str()));
    assert_eq!(
        entry["head"].as_str(),
        Some(draft.commit_cid().to_string().as_str())
    );
    let car = client
        .get_ok(
            fake.url(),
            "com.atproto.sync.getRepo",
            &[("did", empty.did())],
        )
        .await
        .unwrap();
    assert_eq!(car, empty.car());
    let err = xrpc_err(
        &client,
        &fake,
        "com.atproto.sync.getLatestCommit",
        empty.did(),
    )
    .await;
    assert_eq!((err.status, err.error.as_str()), (400, "RepoNotFound"));
}

#[tokio::test]
async fn latest_commit_status_and_inactive_repos() {
    let fake = FakePds::start().await.unwrap();
    let client = Client::new();
    let acct = account(&fake, 1, 2);
    let did = acct.did();
    let head = acct.head().unwrap().clone();

    let latest = json(
        &client,
        &fake,
        "com.atproto.sync.getLatestCommit",
        &[("did", did)],
    )
    .await;
    assert_eq!(latest["cid"].as_str(), Some(head.cid.to_string().as_str()));
    assert_eq!(latest["rev"].as_str(), Some(head.rev.as_str()));
    let status = json(
        &client,
        &fake,
        "com.atproto.sync.getRepoStatus",
        &[("did", did)],
    )
    .await;
    assert_eq!(
        status,
        serde_json::json!({"did": did, "active": true, "rev": head.rev})
    );

    // Unknown DID: RepoNotFound everywhere, the getRepo error body shape.
    let unknown = FakeAccount::plc_did(99);
    for nsid in [
        "com.atproto.sync.getRepo",
        "com.atproto.sync.getLatestCommit",
        "com.atproto.sync.getRepoStatus",
    ] {
        let err = xrpc_err(&client, &fake, nsid, &unknown).await;
        assert_eq!(
            (err.status, err.error.as_str()),
            (400, "RepoNotFound"),
            "{nsid}"
        );
        assert!(err.message.contains(&unknown), "{nsid}: {}", err.message);
    }

    // Inactive, by status: refused by getRepo and getLatestCommit, reported
    // by getRepoStatus (without rev) and listRepos.
    for (status, error) in [
        (Some("takendown"), "RepoTakendown"),
        (Some("deactivated"), "RepoDeactivated"),
        (Some("suspended"), "RepoSuspended"),
        (None, "RepoDeactivated"),
    ] {
        fake.set_status(did, false, status);
        for nsid in [
            "com.atproto.sync.getRepo",
            "com.atproto.sync.getLatestCommit",
        ] {
            let err = xrpc_err(&client, &fake, nsid, did).await;
            assert_eq!(
                (err.status, err.error.as_str()),
                (400, error),
                "{nsid} {status:?}"
            );
        }
        let mut expected = serde_json::json!({"did": did, "active": false});
        if let Some(s) = status {
            expected["status"] = s.into();
        }
        let got = json(
            &client,
            &fake,
            "com.atproto.sync.getRepoStatus",
            &[("did", did)],
        )
        .await;
        assert_eq!(got, expected);
        let page = json(&client, &fake, "com.atproto.sync.listRepos", &[]).await;
        let entry = &page["repos"][0];
        assert_eq!(entry["active"], false);
        assert_eq!(entry.get("status").and_then(Value::as_str), status);
        assert_eq!(entry["rev"].as_str(), Some(head.rev.as_str()));
    }

    // Active again: served again.
    fake.set_status(did, true, None);
    let car = client
        .get_ok(fake.url(), "com.atproto.sync.getRepo", &[("did", did)])
        .await
        .unwrap();
    assert_eq!(car, acct.car());

    // A status set before the repo applies once it is there.
    let later = FakeAccount::new(&FakeAccount::plc_did(2), 2);
    fake.set_status(later.did(), false, Some("takendown"));
    let err = xrpc_err(
        &client,
        &fake,
        "com.atproto.sync.getRepoStatus",
        later.did(),
    )
    .await;
    assert_eq!(err.error, "RepoNotFound");
    let mut later = later;
    let draft = later.draft(1).unwrap();
    later.apply(&draft);
    fake.set_repo(later.did(), later.car());
    let got = json(
        &client,
        &fake,
        "com.atproto.sync.getRepoStatus",
        &[("did", later.did())],
    )
    .await;
    assert_eq!(got["status"], "takendown");
}

#[tokio::test]
async fn get_repo_is_counted_per_did_with_its_since() {
    let fake = FakePds::start().await.unwrap();
    let client = Client::new();
    let a = account(&fake, 1, 2);
    let b = account(&fake, 2, 1);
    let rev = a.head().unwrap().rev.clone();

    let whole = client
        .get_ok(fake.url(), "com.atproto.sync.getRepo", &[("did", a.did())])
        .await
        .unwrap();
    // `since` is logged; the whole CAR is served anyway.
    let since = client
        .get_ok(
            fake.url(),
            "com.atproto.sync.getRepo",
            &[("did", a.did()), ("since", &rev)],
        )
        .await
        .unwrap();
    assert_eq!(whole, a.car());
    assert_eq!(since, whole);
    fake.set_status(b.did(), false, Some("deactivated"));
    let err = xrpc_err(&client, &fake, "com.atproto.sync.getRepo", b.did()).await;
    assert_eq!(err.error, "RepoDeactivated");

    assert_eq!(fake.get_repo_count(a.did()), 2);
    assert_eq!(fake.get_repo_since(a.did()), [None, Some(rev)]);
    // Refused requests count too.
    assert_eq!(fake.get_repo_count(b.did()), 1);
    assert_eq!(fake.get_repo_since(b.did()), [None]);
    let unknown = FakeAccount::plc_did(3);
    assert_eq!(fake.get_repo_count(&unknown), 0);
    assert!(fake.get_repo_since(&unknown).is_empty());
    assert_eq!(fake.get_repo_requests(), 3);
    // Other endpoints leave the getRepo log alone, and vice versa.
    assert_eq!(fake.list_repos_requests(), 0);
}

#[tokio::test]
async fn get_repo_delay_holds_the_answer_back() {
    let fake = FakePds::start().await.unwrap();
    let acct = account(&fake, 1, 1);
    let delay = Duration::from_millis(800);
    fake.set_get_repo_delay(delay);
    let url = format!(
        "{}/xrpc/com.atproto.sync.getRepo?did={}",
        fake.url(),
        acct.did()
    );

    // A consumer that gives up first gets nothing; the request was counted.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let err = impatient.get(&url).send().await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(fake.get_repo_count(acct.did()), 1);

    // A patient one gets the CAR, no sooner than the delay.
    let t0 = Instant::now();
    let body: Bytes = reqwest::get(&url).await.unwrap().bytes().await.unwrap();
    assert!(t0.elapsed() >= delay, "{:?}", t0.elapsed());
    assert_eq!(body, acct.car());

    // Other endpoints are not delayed; a zero delay turns it off.
    let t0 = Instant::now();
    let client = Client::new();
    json(
        &client,
        &fake,
        "com.atproto.sync.getLatestCommit",
        &[("did", acct.did())],
    )
    .await;
    assert!(t0.elapsed() < delay, "{:?}", t0.elapsed());
    fake.set_get_repo_delay(Duration::ZERO);
    let t0 = Instant::now();
    reqwest::get(&url).await.unwrap().bytes().await.unwrap();
    assert!(t0.elapsed() < delay, "{:?}", t0.elapsed());
    assert_eq!(fake.get_repo_count(acct.did()), 3);
}
