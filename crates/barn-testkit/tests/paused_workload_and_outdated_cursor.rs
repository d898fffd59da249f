#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Two testkit knobs the reconcile and catch-up tests lean on, proven on a
//! real network:
//! - a workload paused before its deletes really stops there (no repo
//!   moves while paused) and finishes normally once resumed;
//! - PDSes started with a 2 s firehose backlog answer an old cursor with
//!   `#info OutdatedCursor`, and still do after a restart (the option is
//!   kept), then send only live events when nothing is inside the window;
//! - a driver that fails before its pause is reported, not waited for.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use barn_firehose::{Event, InfoEvent, decode_frame};
use barn_testkit::{Client, Error, Network, NetworkOptions, Pause, WorkloadOptions};

const BACKLOG: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_workload_resumes_and_an_old_cursor_is_outdated_after_the_backlog_window() {
    let t0 = Instant::now();
    let mut net = Network::start_with(&NetworkOptions {
        repo_backfill_limit: Some(BACKLOG),
    })
    .await
    .unwrap();
    let client = Client::new();

    // --- pause before the deletes --------------------------------------------
    let mut run = net
        .start_workload(&WorkloadOptions {
            posts: 2,
            lifecycle: false,
            pause_at: Some(Pause::Deletes),
            ..WorkloadOptions::default()
        })
        .await
        .unwrap();
    run.wait_paused().await.unwrap();
    let at_pause = heads(&client, &net).await;
    assert_eq!(at_pause.len(), 7, "{at_pause:?}");
    // Paused means paused: nothing commits while the test looks.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(heads(&client, &net).await, at_pause);
    run.wait_paused().await.unwrap(); // already paused: returns at once

    run.resume().await.unwrap();
    let summary = run.finish().await.unwrap();
    eprintln!(
        "network + paused workload ({} commits) in {:?}",
        summary.commits,
        t0.elapsed()
    );
    assert_eq!(summary.accounts.len(), 7);
    assert!(summary.migrations.is_empty());
    assert_eq!(summary.account("bob").unwrap().handle, "bob.test");
    let now = heads(&client, &net).await;
    for acct in &summary.accounts {
        assert_eq!(acct.status, "active", "{}", acct.name);
        let rev = acct.rev.clone().unwrap();
        assert_eq!(now[&acct.did], rev, "{}: summary vs listRepos", acct.name);
        // Every account deletes at least one plain post after the pause.
        assert_ne!(
            at_pause[&acct.did], rev,
            "{}: no commit after the pause",
            acct.name
        );
    }

    // --- an old cursor, once nothing is left inside the window ---------------
    tokio::time::sleep(BACKLOG + Duration::from_millis(500)).await;
    expect_outdated_then_quiet(&net.pds_a.url).await;

    net.pds_a.restart().await.unwrap();
    // With the default (one day) the restarted PDS would replay from seq 2.
    expect_outdated_then_quiet(&net.pds_a.url).await;

    // A driver that dies before its pause: wait_paused says so, with its
    // stderr (a second run on the same network fails at its first
    // createAccount, the handles being taken).
    let mut again = net
        .start_workload(&WorkloadOptions {
            pause_at: Some(Pause::Lifecycle),
            ..WorkloadOptions::default()
        })
        .await
        .unwrap();
    let err = again.wait_paused().await.unwrap_err();
    eprintln!("as expected: {err}");
    assert!(
        matches!(&err, Error::Workload { status, stderr }
            if status.contains("before pausing at lifecycle") && stderr.contains("workload.mjs: error")),
        "{err}"
    );

    net.stop().await.unwrap();
    eprintln!("whole scenario: {:?}", t0.elapsed());
}

/// `did → rev` of every repo on both PDSes, from `listRepos`.
async fn heads(client: &Client, net: &Network) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for pds in [&net.pds_a.url, &net.pds_b.url] {
        let page = client
            .get_json(pds, "com.atproto.sync.listRepos", &[("limit", "1000")])
            .await
            .unwrap();
        for repo in page["repos"].as_array().unwrap() {
            out.insert(
                repo["did"].as_str().unwrap().to_owned(),
                repo["rev"].as_str().unwrap().to_owned(),
            );
        }
    }
    out
}

/// Subscribes with `cursor=1`: the first frame must be `#info
/// OutdatedCursor`, and nothing may follow within a second (no event is
/// inside the window, so the PDS goes straight to live events).
async fn expect_outdated_then_quiet(pds: &str) {
    let port = pds.rsplit(':').next().unwrap();
    let tcp = TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    let url = format!("ws://localhost:{port}/xrpc/com.atproto.sync.subscribeRepos?cursor=1");
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("no frame within 10 s")
        .unwrap()
        .unwrap();
    let Message::Binary(bytes) = first else {
        panic!("not a binary frame: {first:?}");
    };
    let frame = decode_frame(&bytes).unwrap();
    assert!(
        matches!(&frame.event, Event::Info(InfoEvent { name, .. }) if name == "OutdatedCursor"),
        "{frame:?}"
    );
    let next = tokio::time::timeout(Duration::from_secs(1), ws.next()).await;
    assert!(next.is_err(), "a frame after OutdatedCursor: {next:?}");
}
