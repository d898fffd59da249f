#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Every restricted method, asked by every kind of caller: anonymous, a
//! wrong token, the operator, the owner, the owner of another account, and
//! owner tokens that are expired, for another service, for another method
//! or forged. Only the operator and the right owner get data; everyone
//! else gets the right XRPC error and status. Deleted accounts are
//! unreachable anonymously through every method.

mod common;

use common::{ADMIN, Fixture, SERVICE_DID, jwt, outcome};

#[derive(Debug)]
struct Call {
    method: &'static str,
    query: Vec<(&'static str, String)>,
    /// The account it is about.
    did: String,
    /// What an anonymous caller gets.
    anonymous: (u16, &'static str),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_policy_holds_for_every_role() {
    let (fake, store, dir) = Fixture::parts().await;
    let alice = common::account(&fake, &store, 801, 3, 2);
    let bob = common::account(&fake, &store, 802, 1, 1);
    let dora = common::account(&fake, &store, 803, 2, 2);
    let tess = common::account(&fake, &store, 804, 1, 2);
    let dean = common::account(&fake, &store, 805, 1, 2);
    common::set_status(&store, dora.did(), Some("deleted"));
    common::set_status(&store, tess.did(), Some("takendown"));
    common::set_status(&store, dean.did(), Some("deactivated"));
    let dora_blob = common::stored_blob(
        &store,
        dir.path(),
        dora.did(),
        b"dora's picture",
        "image/png",
    );
    let first_rev = store.history(alice.did()).unwrap()[0].clone();
    let fx = Fixture::serve(fake, store, dir, common::config()).await;

    let (dora_path, _) = dora.records().iter().next().unwrap();
    let (coll, rkey) = dora_path.split_once('/').unwrap();
    let q = |pairs: &[(&'static str, &str)]| -> Vec<(&'static str, String)> {
        pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
    };
    let unauth = (401, "AuthenticationRequired");
    let gone = (400, "RepoNotFound");
    let mut calls = vec![
        Call {
            method: "dev.barn.sync.getRepoAt",
            query: q(&[("did", alice.did()), ("rev", &first_rev.rev)]),
            did: alice.did().into(),
            anonymous: unauth,
        },
        Call {
            method: "dev.barn.sync.getRepoAt",
            query: q(&[("did", alice.did()), ("at", "2099-01-01T00:00:00Z")]),
            did: alice.did().into(),
            anonymous: unauth,
        },
        Call {
            method: "dev.barn.sync.listCommits",
            query: q(&[("did", alice.did())]),
            did: alice.did().into(),
            anonymous: unauth,
        },
        Call {
            method: "dev.barn.backup.getStatus",
            query: q(&[("did", alice.did())]),
            did: alice.did().into(),
            anonymous: unauth,
        },
        Call {
            method: "dev.barn.backup.getStatus",
            query: q(&[("did", dora.did())]),
            did: dora.did().into(),
            anonymous: unauth,
        },
    ];
    // The deleted account, through every method that names an account.
    for (method, query) in [
        ("com.atproto.sync.getRepo", q(&[("did", dora.did())])),
        (
            "com.atproto.sync.getLatestCommit",
            q(&[("did", dora.did())]),
        ),
        ("com.atproto.sync.getRepoStatus", q(&[("did", dora.did())])),
        ("com.atproto.sync.listBlobs", q(&[("did", dora.did())])),
        (
            "com.atproto.sync.getBlob",
            q(&[("did", dora.did()), ("cid", &dora_blob.to_string())]),
        ),
        (
            "com.atproto.sync.getRecord",
            q(&[("did", dora.did()), ("collection", coll), ("rkey", rkey)]),
        ),
        (
            "com.atproto.repo.getRecord",
            q(&[("repo", dora.did()), ("collection", coll), ("rkey", rkey)]),
        ),
        (
            "com.atproto.repo.listRecords",
            q(&[("repo", dora.did()), ("collection", coll)]),
        ),
        ("com.atproto.repo.describeRepo", q(&[("repo", dora.did())])),
    ] {
        calls.push(Call {
            method,
            query,
            did: dora.did().into(),
            anonymous: gone,
        });
    }
    for (acct, answer) in [(&tess, "RepoTakendown"), (&dean, "RepoDeactivated")] {
        for method in [
            "com.atproto.sync.getRepo",
            "com.atproto.sync.getLatestCommit",
        ] {
            calls.push(Call {
                method,
                query: q(&[("did", acct.did())]),
                did: acct.did().into(),
                anonymous: (400, answer),
            });
        }
    }
    let owners = [&alice, &dora, &tess, &dean];
    let owner_of = |did: &str| *owners.iter().find(|a| a.did() == did).unwrap();

    let mut checked = 0;
    for call in &calls {
        let owner = owner_of(&call.did);
        let m = call.method;
        let roles: Vec<(&str, Option<String>, (u16, &str))> = vec![
            ("anonymous", None, call.anonymous),
            (
                "wrong token",
                Some("not-the-admin-token".into()),
                (401, "InvalidToken"),
            ),
            ("admin", Some(ADMIN.into()), (200, "")),
            (
                "owner",
                Some(jwt(owner, owner.did(), SERVICE_DID, Some(m), 60)),
                (200, ""),
            ),
            (
                "owner of another DID",
                Some(jwt(&bob, bob.did(), SERVICE_DID, Some(m), 60)),
                (403, "Forbidden"),
            ),
            (
                "expired",
                Some(jwt(owner, owner.did(), SERVICE_DID, Some(m), -10)),
                (401, "JwtExpired"),
            ),
            (
                "wrong aud",
                Some(jwt(
                    owner,
                    owner.did(),
                    "did:web:other.example",
                    Some(m),
                    60,
                )),
                (401, "BadJwtAudience"),
            ),
            (
                "wrong lxm",
                Some(jwt(
                    owner,
                    owner.did(),
                    SERVICE_DID,
                    Some("com.atproto.sync.listRepos"),
                    60,
                )),
                (401, "BadJwtLexiconMethod"),
            ),
            (
                "no lxm",
                Some(jwt(owner, owner.did(), SERVICE_DID, None, 60)),
                (401, "BadJwtLexiconMethod"),
            ),
            (
                "forged (owner's DID, another key)",
                Some(jwt(&bob, owner.did(), SERVICE_DID, Some(m), 60)),
                (401, "BadJwtSignature"),
            ),
        ];
        let query: Vec<(&str, &str)> = call.query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        for (role, token, (status, error)) in roles {
            let resp = fx.get(m, &query, token.as_deref()).await;
            let got = outcome(resp).await;
            assert_eq!(
                (got.0, got.1.as_str()),
                (status, error),
                "{m} {:?} as {role}",
                call.query
            );
            checked += 1;
        }
    }
    eprintln!("{checked} (method, role) pairs checked");

    // What the operator gets is the real thing: the first revision's CAR.
    let car = fx
        .get(
            "dev.barn.sync.getRepoAt",
            &[("did", alice.did()), ("rev", &first_rev.rev)],
            Some(ADMIN),
        )
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(common::car_root(&car), first_rev.cid);

    // The public view: active accounts are open; deleted ones are not
    // listed, inactive ones are listed as such.
    let resp = fx
        .get("com.atproto.sync.getRepo", &[("did", alice.did())], None)
        .await;
    assert_eq!(resp.status(), 200);
    let list: serde_json::Value = fx
        .get("com.atproto.sync.listRepos", &[], None)
        .await
        .json()
        .await
        .unwrap();
    let listed: Vec<&str> = list["repos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["did"].as_str().unwrap())
        .collect();
    assert!(!listed.contains(&dora.did()), "{list}");
    assert!(listed.contains(&alice.did()));
    let tess_entry = list["repos"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["did"] == tess.did())
        .unwrap();
    assert_eq!(tess_entry["active"], false);
    assert_eq!(tess_entry["status"], "takendown");
    let all: serde_json::Value = fx
        .get("com.atproto.sync.listRepos", &[], Some(ADMIN))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        all.to_string().contains(dora.did()),
        "the operator sees deleted accounts"
    );
    // The status of a takendown account is public, as on a PDS.
    let status: serde_json::Value = fx
        .get(
            "com.atproto.sync.getRepoStatus",
            &[("did", tess.did())],
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["active"], false);
    assert_eq!(status["status"], "takendown");
    assert!(fx.gateway.metrics().rejections("forbidden") >= calls.len() as u64);
}
