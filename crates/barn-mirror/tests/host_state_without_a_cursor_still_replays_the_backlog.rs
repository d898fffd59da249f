#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A host whose state is durable but has no cursor yet (barn was killed
//! after its listing pass wrote progress, before any event was durable)
//! is still new: barn subscribes from the start of the backlog, as for a
//! host it never saw, and stores the commits made meanwhile from the
//! firehose, not only through an import.

mod common;

use std::time::{Duration, Instant};

use barn_mirror::MirrorConfig;
use barn_store::{Batch, HostState, Source};
use barn_testkit::{FakeAccount, FakePds};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_state_without_a_cursor_still_replays_the_backlog() {
    common::logging();
    let fake = FakePds::start().await.unwrap();
    let host = fake.url().to_owned();
    let mut acct = FakeAccount::new(&FakeAccount::plc_did(31), 31);
    fake.set_did_doc(acct.did(), acct.did_doc(&host));
    // Two commits in the backlog before barn (re)starts.
    for seq in 1..=2 {
        let d = acct.draft(seq).unwrap();
        fake.push(seq, d.frame());
        acct.apply(&d);
    }
    let (_dir, store) = common::store();
    let mut batch = Batch::new();
    batch.set_host(
        &barn_mirror::normalize_host(&host),
        HostState {
            cursor: None,
            ..HostState::default()
        },
    );
    store.write(batch).unwrap();

    let config = MirrorConfig {
        new_host_cursor: Some(0),
        backfill: false,
        ..MirrorConfig::default()
    };
    let (mirror, _metrics) = common::mirror_at(&host, &store, config);
    mirror.start(std::slice::from_ref(&host)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let history = store.history(acct.did()).unwrap();
        if history.len() == 2 {
            assert!(history.iter().all(|e| e.source == Source::Firehose));
            assert_eq!(
                history.iter().map(|e| e.seq).collect::<Vec<_>>(),
                vec![Some(1), Some(2)]
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "backlog not replayed: history {:?}, host {:?}",
            history
                .iter()
                .map(|e| (&e.rev, e.source, e.seq))
                .collect::<Vec<_>>(),
            store.host(&barn_mirror::normalize_host(&host)).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    mirror.shutdown().await;
}
