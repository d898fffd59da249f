#![allow(clippy::unwrap_used, clippy::expect_used)]
// tungstenite's handshake callback signature returns its large error type.
#![allow(clippy::result_large_err)]
//! The client against a tiny scripted websocket server on 127.0.0.1, for
//! the failures a real PDS will not produce on demand: oversized and
//! malformed frames, a silent socket, `FutureCursor`, `ConsumerTooSlow`,
//! `OutdatedCursor`, and a producer much faster than the consumer.
//!
//! Each server serves one script per connection, learns the cursor from
//! the request, and stops by itself (a deadline, and abort on drop).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use barn_firehose::{
    CancellationToken, CommitEvent, Delivery, ErrorFrame, Event, Frame, InfoEvent, Metrics,
    OpAction, RepoOp, SubscribeConfig, Subscription, encode_frame, subscribe,
};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

type Ws = WebSocketStream<TcpStream>;
type Script =
    Arc<dyn Fn(usize, Option<i64>, Ws) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// A websocket server on 127.0.0.1 that runs `script(connection index,
/// cursor, socket)` for each connection.
struct Server {
    host: String,
    cursors: Arc<Mutex<Vec<Option<i64>>>>,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve<F, Fut>(script: F) -> Server
where
    F: Fn(usize, Option<i64>, Ws) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let script: Script = Arc::new(move |i, c, ws| Box::pin(script(i, c, ws)));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = format!("http://{}", listener.local_addr().unwrap());
    let cursors: Arc<Mutex<Vec<Option<i64>>>> = Arc::default();
    let seen = cursors.clone();
    let task = tokio::spawn(async move {
        // Whatever happens, the server is gone after this.
        let _ = tokio::time::timeout(Duration::from_secs(60), async move {
            let mut conns = Vec::new();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let mut cursor = None;
                let ws =
                    tokio_tungstenite::accept_hdr_async(stream, |req: &Request, resp: Response| {
                        cursor = req.uri().query().and_then(|q| {
                            q.split('&')
                                .find_map(|kv| kv.strip_prefix("cursor="))
                                .and_then(|c| c.parse().ok())
                        });
                        Ok(resp)
                    })
                    .await
                    .unwrap();
                let index = {
                    let mut s = seen.lock().unwrap();
                    s.push(cursor);
                    s.len() - 1
                };
                conns.push(tokio::spawn(script(index, cursor, ws)));
            }
        })
        .await;
    });
    Server {
        host,
        cursors,
        task,
    }
}

fn commit(seq: i64, blocks: usize) -> Vec<u8> {
    let cid = barn_repo::cid_for_cbor(&seq.to_be_bytes());
    encode_frame(&Frame {
        seq: Some(seq),
        event: Event::Commit(CommitEvent {
            seq,
            repo: "did:plc:ewvi7nxzyoun6zhxrhs64oiz".into(),
            rev: format!("3l3qo2vuowo{seq:02}"),
            since: None,
            commit: cid,
            blocks: Bytes::from(vec![0u8; blocks]),
            ops: vec![RepoOp {
                action: OpAction::Create,
                path: format!("app.bsky.feed.post/{seq}"),
                cid: Some(cid),
                prev: None,
            }],
            prev_data: None,
            time: "2024-09-01T12:00:00.000Z".into(),
            too_big: false,
            rebase: false,
            blobs: vec![],
        }),
    })
}

fn error_frame(name: &str) -> Vec<u8> {
    encode_frame(&Frame {
        seq: None,
        event: Event::Error(ErrorFrame {
            error: name.into(),
            message: Some("scripted".into()),
        }),
    })
}

async fn send(ws: &mut Ws, bytes: Vec<u8>) {
    ws.send(Message::Binary(bytes.into())).await.unwrap();
}

/// Keeps reading (so pings are answered) for `d`.
async fn linger(ws: &mut Ws, d: Duration) {
    let _ = tokio::time::timeout(d, async { while let Some(Ok(_)) = ws.next().await {} }).await;
}

fn config(host: &str, registry: &prometheus::Registry) -> SubscribeConfig {
    let mut c = SubscribeConfig::new(host);
    c.backoff_min = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(100);
    c.watchdog = Duration::from_secs(10);
    c.metrics = Some(Metrics::register(registry).unwrap());
    c
}

/// A delivery, simplified for comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
enum D {
    Connected(Option<i64>),
    Disconnected,
    Seq(i64),
    Info(String),
    Error(String),
    Rejected(&'static str),
    Gap(i64, i64),
}

fn simplify(d: &Delivery) -> D {
    match d {
        Delivery::Connected { cursor } => D::Connected(*cursor),
        Delivery::Disconnected { .. } => D::Disconnected,
        Delivery::Rejected { reason, .. } => D::Rejected(reason),
        Delivery::Gap { after, next } => D::Gap(*after, *next),
        Delivery::Frame { frame, .. } => match &frame.event {
            Event::Info(InfoEvent { name, .. }) => D::Info(name.clone()),
            Event::Error(e) => D::Error(e.error.clone()),
            _ => D::Seq(frame.seq.unwrap()),
        },
    }
}

/// Reads deliveries until `n` have arrived (with a per-delivery timeout).
async fn take(sub: &mut Subscription, n: usize) -> Vec<D> {
    let mut out = Vec::new();
    while out.len() < n {
        let d = tokio::time::timeout(Duration::from_secs(10), sub.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out after {out:?}"))
            .unwrap();
        out.push(simplify(&d));
    }
    out
}

fn counter(registry: &prometheus::Registry, name: &str, label: (&str, &str)) -> u64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric())
        .filter(|m| {
            m.get_label()
                .iter()
                .any(|l| l.name() == label.0 && l.value() == label.1)
        })
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

async fn stop(shutdown: CancellationToken, task: JoinHandle<()>) {
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn oversized_frame_is_rejected_and_the_stream_resumes_past_it() {
    // Seqs 1..=5 after the cursor; seq 3 is too big, on every connection.
    let server = serve(|_, cursor, mut ws| async move {
        for seq in cursor.unwrap_or(0) + 1..=5 {
            let size = if seq == 3 { 20_000 } else { 100 };
            send(&mut ws, commit(seq, size)).await;
        }
        linger(&mut ws, Duration::from_secs(5)).await;
    })
    .await;
    let registry = prometheus::Registry::new();
    let mut cfg = config(&server.host, &registry);
    cfg.max_frame_bytes = 4096;
    cfg.cursor = Some(0);
    let shutdown = CancellationToken::new();
    let (mut sub, task) = subscribe(cfg, shutdown.clone());
    let got = take(&mut sub, 9).await;
    assert_eq!(
        got,
        [
            D::Connected(Some(0)),
            D::Seq(1),
            D::Seq(2),
            D::Rejected("oversized"),
            D::Disconnected,
            // Resuming at 2 would get seq 3 again: the cursor moves past it.
            D::Connected(Some(3)),
            D::Gap(2, 4),
            D::Seq(4),
            D::Seq(5),
        ]
    );
    assert_eq!(*server.cursors.lock().unwrap(), [Some(0), Some(3)]);
    let rejected = ("reason", "oversized");
    assert_eq!(
        counter(&registry, "barn_firehose_rejected_total", rejected),
        1
    );
    assert_eq!(
        counter(&registry, "barn_firehose_reconnects_total", rejected),
        1
    );
    stop(shutdown, task).await;
}

#[tokio::test]
async fn malformed_frames_are_rejected_counted_and_the_stream_goes_on() {
    let server = serve(|_, _, mut ws| async move {
        send(&mut ws, commit(1, 10)).await;
        send(&mut ws, vec![0xff, 0x00]).await; // not a header
        let mut trailing = commit(2, 10);
        trailing.push(0);
        send(&mut ws, trailing).await;
        let mut truncated = commit(2, 10);
        truncated.truncate(truncated.len() - 4);
        send(&mut ws, truncated).await;
        ws.send(Message::text("{\"seq\": 2}")).await.unwrap();
        send(&mut ws, commit(2, 10)).await;
        linger(&mut ws, Duration::from_secs(5)).await;
    })
    .await;
    let registry = prometheus::Registry::new();
    let shutdown = CancellationToken::new();
    let (mut sub, task) = subscribe(config(&server.host, &registry), shutdown.clone());
    let got = take(&mut sub, 7).await;
    assert_eq!(
        got,
        [
            D::Connected(None),
            D::Seq(1),
            D::Rejected("bad_header"),
            D::Rejected("trailing_bytes"),
            D::Rejected("bad_body_cbor"),
            D::Rejected("text_message"),
            D::Seq(2),
        ]
    );
    for reason in [
        "bad_header",
        "trailing_bytes",
        "bad_body_cbor",
        "text_message",
    ] {
        assert_eq!(
            counter(
                &registry,
                "barn_firehose_rejected_total",
                ("reason", reason)
            ),
            1,
            "{reason}"
        );
    }
    // One connection throughout.
    assert_eq!(server.cursors.lock().unwrap().len(), 1);
    stop(shutdown, task).await;
}

#[tokio::test]
async fn silent_socket_is_replaced_by_the_watchdog_but_a_quiet_one_is_not() {
    let server = serve(|i, _, mut ws| async move {
        if i == 0 {
            send(&mut ws, commit(1, 10)).await;
            // Quiet but alive: reading answers the client's pings.
            linger(&mut ws, Duration::from_millis(2500)).await;
            // Then hung: nothing read, nothing sent, socket still open.
            tokio::time::sleep(Duration::from_secs(10)).await;
        } else {
            send(&mut ws, commit(2, 10)).await;
            linger(&mut ws, Duration::from_secs(5)).await;
        }
    })
    .await;
    let registry = prometheus::Registry::new();
    let mut cfg = config(&server.host, &registry);
    cfg.watchdog = Duration::from_secs(1);
    let shutdown = CancellationToken::new();
    let (mut sub, task) = subscribe(cfg, shutdown.clone());
    let start = tokio::time::Instant::now();
    let got = take(&mut sub, 2).await;
    assert_eq!(got, [D::Connected(None), D::Seq(1)]);
    let got = take(&mut sub, 3).await;
    // Not before the quiet phase ended: pongs kept it alive.
    assert!(
        start.elapsed() >= Duration::from_millis(2500),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(got, [D::Disconnected, D::Connected(Some(1)), D::Seq(2)]);
    assert_eq!(
        counter(
            &registry,
            "barn_firehose_reconnects_total",
            ("reason", "watchdog")
        ),
        1
    );
    stop(shutdown, task).await;
}

#[tokio::test]
async fn future_cursor_reconnects_without_a_cursor() {
    let server = serve(|_, cursor, mut ws| async move {
        if cursor.is_some() {
            send(&mut ws, error_frame("FutureCursor")).await;
            let _ = ws.close(None).await;
            return;
        }
        // The host's seq started again from 1.
        send(&mut ws, commit(1, 10)).await;
        send(&mut ws, commit(2, 10)).await;
        linger(&mut ws, Duration::from_secs(5)).await;
    })
    .await;
    let registry = prometheus::Registry::new();
    let mut cfg = config(&server.host, &registry);
    cfg.cursor = Some(100);
    let shutdown = CancellationToken::new();
    let (mut sub, task) = subscribe(cfg, shutdown.clone());
    let got = take(&mut sub, 6).await;
    assert_eq!(
        got,
        [
            D::Connected(Some(100)),
            D::Error("FutureCursor".into()),
            D::Disconnected,
            D::Connected(None),
            // Not dropped as duplicates of the old cursor.
            D::Seq(1),
            D::Seq(2),
        ]
    );
    assert_eq!(*server.cursors.lock().unwrap(), [Some(100), None]);
    stop(shutdown, task).await;
}

#[tokio::test]
async fn consumer_too_slow_resumes_and_replayed_duplicates_are_dropped() {
    let server = serve(|i, cursor, mut ws| async move {
        if i == 0 {
            send(&mut ws, commit(1, 10)).await;
            send(&mut ws, commit(2, 10)).await;
            send(&mut ws, error_frame("ConsumerTooSlow")).await;
            let _ = ws.close(None).await;
            return;
        }
        // A host that replays from the cursor inclusive.
        for seq in cursor.unwrap()..=3 {
            send(&mut ws, commit(seq, 10)).await;
        }
        linger(&mut ws, Duration::from_secs(5)).await;
    })
    .await;
    let registry = prometheus::Registry::new();
    let shutdown = CancellationToken::new();
    let (mut sub, task) = subscribe(config(&server.host, &registry), shutdown.clone());
    let got = take(&mut sub, 7).await;
    assert_eq!(
        got,
        [
            D::Connected(None),
            D::Seq(1),
            D::Seq(2),
            D::Error("ConsumerTooSlow".into()),
            D::Disconnected,
            D::Connected(Some(2)),
            D::Seq(3),
        ]
    );
    assert_eq!(
        counter(
            &registry,
            "barn_firehose_duplicates_total",
            ("host", &server.host)
        ),
        1
    );
    assert_eq!(
        counter(
            &registry,
            "barn_firehose_reconnects_total",
            ("reason", "error_frame")
        ),
        1
    );
    stop(shutdown, task).await;
}

#[tokio::test]
async fn outdated_cursor_info_is_passed_on_and_the_stream_continues() {
    let server = serve(|_, _, mut ws| async move {
        let info = encode_frame(&Frame {
            seq: None,
            event: Event::Info(InfoEvent {
                name: "OutdatedCursor".into(),
                message: None,
            }),
        });
        send(&mut ws, info).await;
        send(&mut ws, commit(10, 10)).await;
        send(&mut ws, commit(11, 10)).await;
        linger(&mut ws, Duration::from_secs(5)).await;
    })
    .await;
    let registry = prometheus::Registry::new();
    let mut cfg = config(&server.host, &registry);
    cfg.cursor = Some(5);
    let shutdown = CancellationToken::new();
    let (mut sub, task) = subscribe(cfg, shutdown.clone());
    let got = take(&mut sub, 5).await;
    assert_eq!(
        got,
        [
            D::Connected(Some(5)),
            D::Info("OutdatedCursor".into()),
            D::Gap(5, 10),
            D::Seq(10),
            D::Seq(11),
        ]
    );
    assert_eq!(
        counter(
            &registry,
            "barn_firehose_gap_seqs_total",
            ("host", &server.host)
        ),
        4
    );
    assert_eq!(server.cursors.lock().unwrap().len(), 1);
    stop(shutdown, task).await;
}

#[tokio::test]
async fn a_fast_producer_is_held_back_by_the_byte_budget() {
    const FRAMES: i64 = 1000;
    const BLOCKS: usize = 32 * 1024;
    const BUDGET: usize = 256 * 1024;
    let sent = Arc::new(AtomicUsize::new(0));
    let counted = sent.clone();
    let server = serve(move |_, _, mut ws| {
        let sent = counted.clone();
        async move {
            for seq in 1..=FRAMES {
                if ws
                    .send(Message::Binary(commit(seq, BLOCKS).into()))
                    .await
                    .is_err()
                {
                    return;
                }
                sent.fetch_add(1, Ordering::SeqCst);
            }
            linger(&mut ws, Duration::from_secs(10)).await;
        }
    })
    .await;
    let registry = prometheus::Registry::new();
    let mut cfg = config(&server.host, &registry);
    cfg.queue_bytes = BUDGET;
    let shutdown = CancellationToken::new();
    let (mut sub, task) = subscribe(cfg, shutdown.clone());
    assert_eq!(take(&mut sub, 1).await, [D::Connected(None)]);

    // The consumer stalls: the budget fills and the reader stops reading,
    // so the producer stops once the socket buffers are full.
    let frame = commit(1, BLOCKS).len();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while sub.queued_bytes() <= BUDGET - frame {
        assert!(
            tokio::time::Instant::now() < deadline,
            "budget never filled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut stalled = sent.load(Ordering::SeqCst);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = sent.load(Ordering::SeqCst);
        if now == stalled {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "producer never stalled"
        );
        stalled = now;
    }
    assert!(stalled < FRAMES as usize, "all {stalled} frames were sent");
    assert!(sub.queued_bytes() <= BUDGET, "{}", sub.queued_bytes());

    // Frames held by the consumer keep their bytes: holding a budget's
    // worth blocks the stream.
    let mut held = Vec::new();
    while held.len() < BUDGET / frame {
        let d = sub.recv().await.unwrap();
        assert!(matches!(d, Delivery::Frame { .. }));
        held.push(d);
    }
    assert!(sub.queued_bytes() <= BUDGET);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), sub.recv())
            .await
            .is_err(),
        "nothing more while the held frames keep the budget"
    );
    assert_eq!(
        registry
            .gather()
            .iter()
            .find(|f| f.name() == "barn_firehose_queued_bytes")
            .unwrap()
            .get_metric()[0]
            .get_gauge()
            .get_value() as usize,
        sub.queued_bytes()
    );
    held.into_iter().for_each(Delivery::done);

    // Releasing as it goes, the consumer gets every frame, in order.
    let mut next = 1 + (BUDGET / frame) as i64;
    while next <= FRAMES {
        let d = tokio::time::timeout(Duration::from_secs(10), sub.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(sub.queued_bytes() <= BUDGET);
        match simplify(&d) {
            D::Seq(s) => {
                assert_eq!(s, next);
                next += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(sent.load(Ordering::SeqCst), FRAMES as usize);
    stop(shutdown, task).await;
}

#[tokio::test]
async fn a_channel_source_gets_the_same_ordering_limits_and_budget_as_a_socket() {
    let registry = prometheus::Registry::new();
    let mut cfg = config("replay", &registry);
    cfg.cursor = Some(1);
    cfg.max_frame_bytes = 8 * 1024;
    cfg.queue_bytes = 64 * 1024;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let shutdown = CancellationToken::new();
    let (mut sub, task) = barn_firehose::subscribe_source(cfg, rx, shutdown.clone());
    tx.send(commit(1, 10).into()).await.unwrap(); // at the cursor: a replay
    tx.send(commit(2, 10).into()).await.unwrap();
    tx.send(commit(2, 10).into()).await.unwrap(); // duplicate
    tx.send(Bytes::from_static(&[0xff, 0x00])).await.unwrap(); // not a header
    tx.send(commit(3, 16 * 1024).into()).await.unwrap(); // over the limit
    tx.send(commit(5, 10).into()).await.unwrap(); // after a gap
    assert_eq!(
        take(&mut sub, 6).await,
        [
            D::Connected(Some(1)),
            D::Seq(2),
            D::Rejected("bad_header"),
            D::Rejected("oversized"),
            D::Gap(2, 5),
            D::Seq(5),
        ]
    );
    assert_eq!(
        counter(
            &registry,
            "barn_firehose_rejected_total",
            ("reason", "oversized")
        ),
        1
    );

    // The budget holds a fast producer back: with every frame kept by the
    // consumer, no more than the budget is accepted.
    let frame = commit(6, 4 * 1024).len();
    let mut held = Vec::new();
    let producer = tokio::spawn(async move {
        for seq in 6..100 {
            if tx.send(commit(seq, 4 * 1024).into()).await.is_err() {
                return;
            }
        }
    });
    while let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(300), sub.recv()).await {
        held.push(d);
    }
    assert_eq!(
        held.len(),
        64 * 1024 / frame,
        "frames accepted while all were held"
    );
    assert!(sub.queued_bytes() <= 64 * 1024);
    drop(held);
    // Released: the rest flows.
    let rest = take(&mut sub, 94 - 64 * 1024 / frame).await;
    assert_eq!(rest.last(), Some(&D::Seq(99)));
    producer.await.unwrap();
    stop(shutdown, task).await;
}
