#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The client against a real reference PDS on loopback: subscribe to PDS a,
//! run the seeded workload with its lifecycle part (handle change,
//! deactivation, takedown, deletion, migration), then kill the PDS (its
//! sockets drop without a close frame), restart it, write once more, and
//! check that the client:
//! - got every event the PDS still holds (compared with an independent
//!   raw replay from cursor 0) in strictly increasing seq order, with no
//!   gap and no duplicate delivered, and every account's head commit;
//! - saw `#identity`, `#account` and `#sync` as well as `#commit`;
//! - reconnected after the restart with the last seq as its cursor and
//!   received the new commit;
//! - and that every frame the PDS serves decodes and re-encodes to the
//!   identical bytes.
//!
//! Set `BARN_FIREHOSE_CAPTURE=<dir>` to write one raw frame of each kind
//! there (how `testdata/frames/` was made).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use barn_firehose::{
    CancellationToken, Delivery, Event, Metrics, OpAction, SubscribeConfig, decode_frame,
    encode_frame, subscribe, subscribe_url,
};
use barn_testkit::{Network, WorkloadOptions};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

/// What the collector saw, in order.
// Some fields are only read through Debug, in failure messages.
#[allow(dead_code)]
#[derive(Debug, Clone)]
enum Seen {
    Connected(Option<i64>),
    Disconnected(String),
    Frame {
        seq: Option<i64>,
        label: &'static str,
        did: String,
        commit: Option<String>,
    },
    Rejected(String),
    Gap(i64, i64),
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn last_seq(log: &Log) -> Option<i64> {
    log.lock().unwrap().iter().rev().find_map(|s| match s {
        Seen::Frame { seq: Some(s), .. } => Some(*s),
        _ => None,
    })
}

async fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every frame the PDS replays from cursor 0, raw, read until it has been
/// quiet for a second.
async fn raw_replay(host: &str) -> Vec<bytes::Bytes> {
    let url = subscribe_url(host, Some(0)).unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut frames = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(1), ws.next()).await {
        if let Message::Binary(b) = msg.unwrap() {
            frames.push(b);
        }
    }
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pds_workload_then_restart_is_received_whole_in_order_and_resumed() {
    let mut net = Network::start().await.unwrap();
    let registry = prometheus::Registry::new();
    let mut config = SubscribeConfig::new(net.pds_a.url.clone());
    config.backoff_min = Duration::from_millis(200);
    config.backoff_max = Duration::from_secs(1);
    config.metrics = Some(Metrics::register(&registry).unwrap());
    let shutdown = CancellationToken::new();
    let (mut sub, task) = subscribe(config, shutdown.clone());

    let log: Log = Arc::default();
    let collector = {
        let log = log.clone();
        tokio::spawn(async move {
            let mut last = None;
            while let Some(d) = sub.recv().await {
                let seen = match d {
                    Delivery::Connected { cursor } => Seen::Connected(cursor),
                    Delivery::Disconnected { reason } => Seen::Disconnected(reason),
                    Delivery::Rejected { detail, .. } => Seen::Rejected(detail),
                    Delivery::Gap { after, next } => Seen::Gap(after, next),
                    Delivery::Frame { frame, .. } => {
                        if let Some(seq) = frame.seq {
                            assert!(Some(seq) > last, "seq {seq} after {last:?}");
                            last = Some(seq);
                        }
                        let (did, commit) = match &frame.event {
                            Event::Commit(c) => (c.repo.clone(), Some(c.commit.to_string())),
                            Event::Sync(s) => (s.did.clone(), None),
                            Event::Identity(i) => (i.did.clone(), None),
                            Event::Account(a) => (a.did.clone(), None),
                            _ => (String::new(), None),
                        };
                        Seen::Frame {
                            seq: frame.seq,
                            label: frame.event.label(),
                            did,
                            commit,
                        }
                    }
                };
                log.lock().unwrap().push(seen);
            }
        })
    };
    wait_for("first connection", Duration::from_secs(20), || {
        !log.lock().unwrap().is_empty()
    })
    .await;
    assert!(matches!(log.lock().unwrap()[0], Seen::Connected(None)));

    let summary = net
        .run_workload(&WorkloadOptions {
            seed: 1,
            posts: 2,
            lifecycle: true,
            ..WorkloadOptions::default()
        })
        .await
        .unwrap();

    // --- an independent replay: decode, re-encode byte for byte ----------
    let replay = raw_replay(&net.pds_a.url).await;
    assert!(!replay.is_empty());
    let capture = std::env::var_os("BARN_FIREHOSE_CAPTURE").map(std::path::PathBuf::from);
    let mut captured = BTreeSet::new();
    let mut replayed = BTreeMap::new();
    for raw in &replay {
        let frame = decode_frame(raw).unwrap_or_else(|e| panic!("{e}: {raw:02x?}"));
        assert_eq!(encode_frame(&frame), raw.to_vec(), "{frame:?}");
        let name = fixture_name(&frame.event);
        if let (Some(dir), Some(name)) = (&capture, name)
            && captured.insert(name)
        {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join(format!("{name}.cbor")), raw).unwrap();
        }
        let seq = frame.seq.expect("replayed events have a seq");
        let commit = match &frame.event {
            Event::Commit(c) => Some(c.commit.to_string()),
            _ => None,
        };
        replayed.insert(seq, (frame.event.label(), commit));
    }

    // --- the live stream has all of it ------------------------------------
    let max_replayed = *replayed.keys().last().unwrap();
    wait_for(
        "the live stream to catch up",
        Duration::from_secs(30),
        || last_seq(&log) >= Some(max_replayed),
    )
    .await;
    let live: BTreeMap<i64, (&'static str, Option<String>)> = log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|s| match s {
            Seen::Frame {
                seq: Some(seq),
                label,
                commit,
                ..
            } => Some((*seq, (*label, commit.clone()))),
            _ => None,
        })
        .collect();
    for (seq, event) in &replayed {
        assert_eq!(live.get(seq), Some(event), "seq {seq}");
    }
    // Live saw more than the replay: the deleted account's events are gone
    // from the PDS's log, but they were streamed.
    assert!(
        live.len() > replayed.len(),
        "{} vs {}",
        live.len(),
        replayed.len()
    );
    let labels: BTreeSet<_> = live.values().map(|(l, _)| *l).collect();
    for want in ["commit", "identity", "account", "sync"] {
        assert!(labels.contains(want), "no #{want} in {labels:?}");
    }
    // Each account still on a: its last commit on the stream is its head.
    for acct in summary
        .accounts
        .iter()
        .filter(|a| a.host == "a" && a.status == "active")
    {
        let last_commit = log.lock().unwrap().iter().rev().find_map(|s| match s {
            Seen::Frame {
                did,
                commit: Some(c),
                ..
            } if *did == acct.did => Some(c.clone()),
            _ => None,
        });
        assert_eq!(last_commit, acct.commit, "{}", acct.name);
    }

    // --- kill, restart, write: resumed from the last seq ------------------
    let before = last_seq(&log).unwrap();
    let seen_before = log.lock().unwrap().len();
    net.pds_a.kill().await.unwrap();
    wait_for("the disconnect", Duration::from_secs(20), || {
        log.lock().unwrap()[seen_before..]
            .iter()
            .any(|s| matches!(s, Seen::Disconnected(_)))
    })
    .await;
    net.pds_a.restart().await.unwrap();
    let alice = summary
        .accounts
        .iter()
        .find(|a| a.host == "a" && a.status == "active")
        .unwrap();
    post_as(&alice.pds, &alice.handle).await;
    wait_for(
        "the post after the restart",
        Duration::from_secs(30),
        || {
            log.lock().unwrap()[seen_before..].iter().any(|s| {
                matches!(s, Seen::Frame { label: "commit", did, seq: Some(seq), .. }
                if *did == alice.did && *seq > before)
            })
        },
    )
    .await;
    let after: Vec<Seen> = log.lock().unwrap()[seen_before..].to_vec();
    let reconnected: Vec<_> = after
        .iter()
        .filter_map(|s| match s {
            Seen::Connected(c) => Some(*c),
            _ => None,
        })
        .collect();
    assert!(!reconnected.is_empty(), "{after:?}");
    assert!(
        reconnected.iter().all(|c| *c == Some(before)),
        "every reconnect resumes from {before}: {reconnected:?}"
    );

    // --- nothing lost, repeated or refused on the whole run ---------------
    let all = log.lock().unwrap().clone();
    assert!(
        !all.iter()
            .any(|s| matches!(s, Seen::Gap(..) | Seen::Rejected(_))),
        "{all:?}"
    );

    let families = registry.gather();
    let total = |name: &str| -> f64 {
        families
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric())
            .map(|m| m.get_counter().get_value())
            .sum()
    };
    assert_eq!(
        total("barn_firehose_frames_total") as usize,
        all.iter()
            .filter(|s| matches!(s, Seen::Frame { .. }))
            .count()
    );
    assert!(total("barn_firehose_reconnects_total") >= 1.0);
    assert_eq!(total("barn_firehose_gaps_total"), 0.0);

    shutdown.cancel();
    task.await.unwrap();
    collector.await.unwrap();
    net.stop().await.unwrap();
}

/// Names the fixtures kept in `testdata/frames/`: the first frame of each
/// kind, and commits showing each op shape.
fn fixture_name(event: &Event) -> Option<&'static str> {
    Some(match event {
        Event::Commit(c) if c.since.is_none() => "commit-first",
        Event::Commit(c) if c.ops.iter().any(|o| o.action == OpAction::Delete) => "commit-delete",
        Event::Commit(c) if c.ops.iter().any(|o| o.action == OpAction::Update) => "commit-update",
        Event::Commit(c) if c.ops.len() > 1 => "commit-multi-op",
        Event::Commit(_) => "commit-create",
        Event::Sync(_) => "sync",
        Event::Identity(i) if i.handle.is_some() => "identity-handle",
        Event::Identity(_) => "identity",
        Event::Account(a) if a.status.is_some() => "account-inactive",
        Event::Account(_) => "account-active",
        _ => return None,
    })
}

/// One post through the reference client (password as the workload sets
/// it: `pw-<name>`).
async fn post_as(pds: &str, handle: &str) {
    let name = handle.split('.').next().unwrap();
    let script = format!(
        "const {{ AtpAgent }} = require('@atproto/api');
         (async () => {{
           const a = new AtpAgent({{ service: '{pds}' }});
           await a.login({{ identifier: '{handle}', password: 'pw-{name}' }});
           await a.post({{ text: 'after the restart', createdAt: new Date().toISOString() }});
         }})().catch((e) => {{ console.error(e); process.exit(1) }})"
    );
    let out = tokio::process::Command::new(barn_testkit::process::node_bin())
        .current_dir(barn_testkit::process::network_dir())
        .args(["-e", &script])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
