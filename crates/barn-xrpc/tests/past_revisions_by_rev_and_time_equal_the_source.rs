#![allow(clippy::unwrap_used, clippy::expect_used)]
//! An account commits 25 times; after each commit the source's own CAR is
//! captured. barn's CAR of every past revision, asked by rev and by
//! datetime, equals the capture (same commit, same records, both verified
//! against the account's key); a time just before a revision gives the
//! one before it. `getRepo?since=` sends what changed and proves it.

mod common;

use barn_repo::BlockMap;
use barn_repo::syntax::Tid;
use barn_testkit::{DraftOptions, FakeAccount, compare_cars};
use bytes::Bytes;
use common::{ADMIN, Fixture};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_revisions_by_rev_and_time_equal_the_source() {
    let (fake, store, dir) = Fixture::parts().await;
    let mut acct = FakeAccount::new(&FakeAccount::plc_did(831), 831);
    let mut captured: Vec<(String, Bytes)> = Vec::new();
    for seq in 0..25 {
        let draft = acct
            .draft_with(
                seq,
                &DraftOptions {
                    records: 1 + (seq as usize % 4) * 10,
                    ..DraftOptions::default()
                },
            )
            .unwrap();
        acct.apply(&draft);
        common::store_draft(&store, fake.url(), &acct, &draft);
        captured.push((draft.event.rev.clone(), acct.car()));
    }
    fake.set_did_doc(acct.did(), acct.did_doc(fake.url()));
    let id = common::identity(&fake, &acct);
    let fx = Fixture::serve(fake, store, dir, common::config()).await;
    let did = acct.did();

    let fetch = |query: Vec<(&'static str, String)>| {
        let fx = &fx;
        async move {
            let q: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let resp = fx.get("dev.barn.sync.getRepoAt", &q, Some(ADMIN)).await;
            assert_eq!(resp.status(), 200, "{query:?}");
            let rev = resp.headers()["atproto-repo-rev"]
                .to_str()
                .unwrap()
                .to_owned();
            (rev, resp.bytes().await.unwrap())
        }
    };
    for (i, (rev, source_car)) in captured.iter().enumerate() {
        let (got_rev, car) = fetch(vec![("did", did.into()), ("rev", rev.clone())]).await;
        assert_eq!(&got_rev, rev);
        let c = compare_cars(&id, car, source_car.clone()).unwrap();
        assert_eq!(&c.rev, rev);

        let micros = rev.parse::<Tid>().unwrap().timestamp_micros();
        let at = common::rfc3339_micros(micros);
        let (got_rev, car) = fetch(vec![("did", did.into()), ("at", at.clone())]).await;
        assert_eq!(&got_rev, rev, "at {at}");
        compare_cars(&id, car, source_car.clone()).unwrap();

        // Just before it: the previous revision, or none.
        let before = common::rfc3339_micros(micros - 1);
        let q = [("did", did), ("at", before.as_str())];
        let resp = fx.get("dev.barn.sync.getRepoAt", &q, Some(ADMIN)).await;
        if i == 0 {
            assert_eq!(
                common::outcome(resp).await,
                (400, "RevisionNotFound".into())
            );
        } else {
            assert_eq!(
                resp.headers()["atproto-repo-rev"],
                captured[i - 1].0.as_str()
            );
        }
    }

    // The history lists every revision, newest first, paged.
    let mut revs = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = vec![("did", did.to_owned()), ("limit", "7".to_owned())];
        if let Some(c) = &cursor {
            q.push(("cursor", c.clone()));
        }
        let q: Vec<(&str, &str)> = q.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let page: serde_json::Value = fx
            .get("dev.barn.sync.listCommits", &q, Some(ADMIN))
            .await
            .json()
            .await
            .unwrap();
        for c in page["commits"].as_array().unwrap() {
            revs.push(c["rev"].as_str().unwrap().to_owned());
            assert_eq!(c["source"], "firehose");
        }
        match page["cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let mut expected: Vec<String> = captured.iter().map(|(r, _)| r.clone()).collect();
    expected.reverse();
    assert_eq!(revs, expected);

    // A diff since revision 10: the head commit, every record created
    // since, and the nodes that prove them.
    let since = &captured[10].0;
    let resp = fx
        .get(
            "com.atproto.sync.getRepo",
            &[("did", did), ("since", since)],
            None,
        )
        .await;
    assert_eq!(resp.status(), 200);
    let diff = resp.bytes().await.unwrap();
    let full = fx
        .get("com.atproto.sync.getRepo", &[("did", did)], None)
        .await
        .bytes()
        .await
        .unwrap();
    assert!(
        diff.len() < full.len(),
        "diff {} vs full {}",
        diff.len(),
        full.len()
    );
    let file = barn_repo::car::read_car(diff, &Default::default()).unwrap();
    assert_eq!(*file.root().unwrap(), acct.head().unwrap().cid);
    let mut blocks = BlockMap::default();
    for (c, b) in file.blocks.iter() {
        blocks.insert(*c, b.clone());
    }
    let history = fx.store.history(did).unwrap();
    let mut checked = 0;
    for e in history.iter().filter(|e| e.rev.as_str() > since.as_str()) {
        for op in &e.ops {
            let found = barn_repo::mst::get(&blocks, &acct.head().unwrap().data, &op.path).unwrap();
            assert_eq!(found, op.cid, "{} not proven by the diff", op.path);
            assert!(
                blocks.contains(&op.cid.unwrap()),
                "{} record missing",
                op.path
            );
            checked += 1;
        }
    }
    assert!(checked > 50, "{checked}");
    // And nothing older: no record created at or before `since`.
    for e in history.iter().filter(|e| e.rev.as_str() <= since.as_str()) {
        for op in &e.ops {
            assert!(
                !blocks.contains(&op.cid.unwrap()),
                "old record {} in the diff",
                op.path
            );
        }
    }
}
