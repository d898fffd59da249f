//! A fake PDS on 127.0.0.1 that serves whatever the test tells it to, so a
//! consumer can be fed hostile input that no real PDS would produce.
//!
//! [`FakePds`] answers these requests on one port:
//! - `GET /xrpc/com.atproto.sync.subscribeRepos[?cursor=N]` (websocket):
//!   the frames queued with [`FakePds::push`], as raw bytes (so malformed
//!   ones are possible), each kept with the seq the test gave it. With a
//!   cursor only frames with a greater seq are sent; without one, only
//!   frames pushed after the connection opened. The socket stays open and
//!   frames pushed later are sent live.
//! - `GET /xrpc/com.atproto.sync.getRepo?did=…[&since=…]`: the CAR set with
//!   [`FakePds::set_repo`] (always whole, whatever `since` says: a real PDS
//!   may answer a superset too), after [`FakePds::set_get_repo_delay`];
//!   `RepoNotFound`, or `RepoDeactivated` / `RepoTakendown` /
//!   `RepoSuspended` for a repo made inactive with [`FakePds::set_status`].
//! - `GET /xrpc/com.atproto.sync.listRepos?limit=N&cursor=C`: the repos in
//!   DID order, `limit` (default 500) clamped to 1..=1000, the cursor the
//!   last DID of a full page (none on a shorter page): `did`, `head` and
//!   `rev` of the CAR's root commit, `active`, `status`.
//! - `GET /xrpc/com.atproto.sync.getLatestCommit?did=…`: `cid` and `rev`
//!   of the CAR's root commit, with getRepo's errors.
//! - `GET /xrpc/com.atproto.sync.getRepoStatus?did=…`: `did`, `active`,
//!   `status`, and `rev` when active; `RepoNotFound` for an unknown DID.
//! - `GET /xrpc/com.atproto.sync.getBlob?did=…&cid=…`: the bytes set with
//!   [`FakePds::set_blob`] (stored per DID and CID), with the PDS's
//!   `Content-Type`, `Content-Length` and security headers, streamed in
//!   chunks so a blob of hundreds of MB is held once; an unknown blob is
//!   answered as `@atproto/pds` answers it (400 `InvalidRequest`,
//!   "Blob not found"), with getRepo's account errors first. Faults
//!   scripted per CID with [`FakePds::script_blob`] ([`BlobFault`]) are
//!   spent one per request, then the blob is served normally.
//! - `GET /<did>`: a PLC directory. The DID document set with
//!   [`FakePds::set_did_doc`] (see [`did_doc`]), so the fake's URL can be a
//!   resolver's `plc_url`.
//!
//! It counts and logs what consumers asked: `getRepo` per DID with each
//! `since` ([`FakePds::get_repo_count`], [`FakePds::get_repo_since`]),
//! `listRepos` with each cursor ([`FakePds::list_repos_cursors`]),
//! `getBlob` per CID ([`FakePds::blob_requests`]) and each one's times and
//! body bytes sent ([`FakePds::blob_request_log`], [`peak_concurrency`]),
//! `subscribeRepos` connections.
//!
//! [`FakeAccount`] is the other half: a signing key and a repo built with
//! barn-repo, from which it drafts *valid* `#commit` events (new MST
//! nodes, record blocks and the signed commit as the CAR slice; ops,
//! `since`, `prevData`). A hostile case is then "a valid draft with one
//! thing broken" ([`DraftCommit::drop_block`],
//! [`DraftCommit::corrupt_block`], or any field of
//! [`DraftCommit::event`]); [`FakeAccount::apply`] advances the account
//! only for the drafts the test means to be legitimate.
//!
//! # Tricky bits
//! - The fake speaks just enough HTTP/1.1 itself (one request per
//!   connection, `Connection: close`) rather than pulling a web framework
//!   into the workspace; the websocket handshake is answered by hand and
//!   the socket handed to tungstenite.
//! - Its URL is `http://localhost:<port>`, the name DID documents use and
//!   the form barn keys hosts by; it listens on 127.0.0.1 only.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cid::Cid;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use barn_firehose::{CommitEvent, Event, Frame, IdentityEvent, OpAction, RepoOp, encode_frame};
use barn_repo::BlockMap;
use barn_repo::car::{CarLimits, read_car, write_car};
use barn_repo::commit::Commit;
use barn_repo::crypto::{KeyType, PrivateKey, PublicKey};
use barn_repo::mst::Mst;
use barn_repo::syntax::Tid;

use crate::error::{Error, Result};

/// Largest request head the fake reads; anything longer is answered 431.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// How much of a blob is written per call: small enough that a large blob
/// goes out as a stream (and a fault can cut or alter one piece), large
/// enough to keep loopback transfers fast.
const BLOB_CHUNK: usize = 64 * 1024;
/// `listRepos`'s `limit` bounds and default, from the lexicon.
const LIST_REPOS_DEFAULT: usize = 500;
const LIST_REPOS_MAX: i64 = 1000;

/// A repo `getRepo` serves.
struct Repo {
    car: Bytes,
    /// The CAR's root commit CID and rev, read when it was set; `None` when
    /// the CAR has no readable root commit (see [`FakePds::set_repo`]).
    head: Option<(Cid, String)>,
}

/// Hosting status, as [`FakePds::set_status`] set it.
#[derive(Clone)]
struct Status {
    active: bool,
    status: Option<String>,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            active: true,
            status: None,
        }
    }
}

/// A blob `getBlob` serves.
struct Blob {
    /// Shared, never copied: each request streams slices of it.
    bytes: Bytes,
    mime: String,
}

/// What one `getBlob` request for a CID gets instead of the blob (see
/// [`FakePds::script_blob`]). The answers that stand for the PDS's own
/// errors have the PDS's status, headers and XRPC body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobFault {
    /// What `@atproto/pds` 0.5.35 answers for a blob it does not have:
    /// 400 `{"error":"InvalidRequest","message":"Blob not found"}`. (Its
    /// handler throws `InvalidRequestError('Blob not found')` without the
    /// lexicon's error name; see [`BlobFault::NotFoundByLexicon`].)
    NotFound,
    /// 400 `{"error":"BlobNotFound",…}`: the error name the getBlob lexicon
    /// declares, which the reference PDS does not send but other PDS
    /// implementations may; a client must take both forms as not found.
    NotFoundByLexicon,
    /// 429 with `Retry-After: <secs>`, `RateLimit-Remaining: 0` and
    /// `RateLimit-Reset`, body `RateLimitExceeded` / "Rate Limit
    /// Exceeded", as the PDS's rate limiter answers.
    TooManyRequests {
        /// The `Retry-After` value, in seconds.
        retry_after_secs: u64,
    },
    /// 500 `{"error":"InternalServerError","message":"Internal Server
    /// Error"}` (the PDS hides a failure's details this way).
    ServerError,
    /// 200 with the right `Content-Length`, but one byte in the middle of
    /// the body flipped: the bytes no longer hash to the CID.
    WrongBody,
    /// 200 with the full `Content-Length`, then only this many body bytes
    /// (at most the blob's length), then the connection is closed.
    CutAfter(usize),
    /// Waits this long, then serves the blob normally.
    Delay(Duration),
    /// 200 with the full `Content-Length`; sends `bytes` of the body (at
    /// most the blob's length), waits `stall`, then sends the rest: a
    /// consumer is mid-body for as long as the test needs.
    StallAfter {
        /// Body bytes sent before the stall.
        bytes: usize,
        /// How long nothing is sent.
        stall: Duration,
    },
    /// 200 with the right body, but chunked (`Transfer-Encoding: chunked`)
    /// and without `Content-Length`: the client learns the size only by
    /// reading, as from a server that streams without knowing it.
    NoLength,
}

#[derive(Default)]
struct State {
    /// Frames in push order, each with the seq the cursor filter uses.
    frames: Vec<(i64, Bytes)>,
    /// Ordered by DID: `listRepos` pages through it in that order.
    repos: BTreeMap<String, Repo>,
    /// Kept apart from `repos`, so status and CAR can be set in any order.
    statuses: HashMap<String, Status>,
    docs: HashMap<String, Value>,
    /// The `since` of every `getRepo`, per DID, in arrival order.
    get_repo_since: HashMap<String, Vec<Option<String>>>,
    /// The `cursor` of every `listRepos`, in arrival order.
    list_repos_cursors: Vec<Option<String>>,
    get_repo_delay: Duration,
    /// Blobs by DID, then CID: a blob is served only for its own account,
    /// and a DID with blobs counts as an account even without a repo.
    blobs: HashMap<String, HashMap<Cid, Blob>>,
    /// Faults still to be spent, per CID, in order.
    blob_faults: HashMap<Cid, VecDeque<BlobFault>>,
    /// `getBlob` requests per CID (any DID, any outcome).
    blob_requests: HashMap<Cid, u64>,
    /// Every `getBlob` request, in arrival order.
    blob_log: Vec<BlobRequest>,
}

/// One `getBlob` request as the fake saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRequest {
    /// The `cid` asked for.
    pub cid: Cid,
    /// The `did` asked for.
    pub did: String,
    /// When its request head had been read.
    pub arrived: Instant,
    /// When the fake began to write its answer (after any
    /// [`BlobFault::Delay`]); `None` while it has not. The client cannot
    /// have had the answer before this, so a request that arrives later
    /// was sent after this one was under way, never instead of it.
    pub answered: Option<Instant>,
    /// Body bytes of a blob answer that the socket took so far (a client
    /// that hangs up stops it short of the blob's length).
    pub body_bytes: u64,
}

/// The most of `requests` that were under way at once, each from its
/// arrival to its answer (one not yet answered: until now). An answer and
/// an arrival at the same instant do not overlap.
pub fn peak_concurrency<'a>(requests: impl IntoIterator<Item = &'a BlobRequest>) -> usize {
    let now = Instant::now();
    let mut edges: Vec<(Instant, i64)> = Vec::new();
    for r in requests {
        edges.push((r.arrived, 1));
        edges.push((r.answered.unwrap_or(now), -1));
    }
    // At equal instants the ends (-1) sort before the starts (+1).
    edges.sort();
    let (mut open, mut peak) = (0i64, 0i64);
    for (_, delta) in edges {
        open += delta;
        peak = peak.max(open);
    }
    peak as usize
}

/// An XRPC error: its name and message.
type XrpcFailure = (&'static str, String);

impl State {
    fn status(&self, did: &str) -> Status {
        self.statuses.get(did).cloned().unwrap_or_default()
    }

    /// The repo of `did` if it may be served, else the error a PDS answers
    /// with (`assertRepoAvailability` in `@atproto/pds`).
    fn available(&self, did: &str) -> std::result::Result<&Repo, XrpcFailure> {
        let Some(repo) = self.repos.get(did) else {
            return Err(repo_not_found(did));
        };
        self.active(did)?;
        Ok(repo)
    }

    /// The inactive-account error for `did`, if it is inactive.
    fn active(&self, did: &str) -> std::result::Result<(), XrpcFailure> {
        let status = self.status(did);
        if status.active {
            return Ok(());
        }
        Err(match status.status.as_deref() {
            Some("takendown") => ("RepoTakendown", format!("Repo has been takendown: {did}")),
            Some("suspended") => ("RepoSuspended", format!("Repo has been suspended: {did}")),
            _ => (
                "RepoDeactivated",
                format!("Repo has been deactivated: {did}"),
            ),
        })
    }

    /// The blob `getBlob` serves for `did` and `cid`, or its error: the
    /// account checks first (as the PDS's handler runs
    /// `assertRepoAvailability` before it looks for the blob), then the
    /// blob. An account is known by its repo or by any blob of its.
    fn blob(&self, did: &str, cid: &Cid) -> std::result::Result<(Bytes, String), XrpcFailure> {
        let blobs = self.blobs.get(did);
        if blobs.is_none() && !self.repos.contains_key(did) {
            return Err(repo_not_found(did));
        }
        self.active(did)?;
        blobs
            .and_then(|b| b.get(cid))
            .map(|b| (b.bytes.clone(), b.mime.clone()))
            .ok_or(("InvalidRequest", "Blob not found".to_owned()))
    }

    fn latest_commit(&self, did: &str) -> std::result::Result<Value, XrpcFailure> {
        let repo = self.available(did)?;
        let Some((cid, rev)) = &repo.head else {
            return Err((
                "RepoNotFound",
                format!("Could not find root for DID: {did}"),
            ));
        };
        Ok(json!({"cid": cid.to_string(), "rev": rev}))
    }

    fn repo_status(&self, did: &str) -> std::result::Result<Value, XrpcFailure> {
        let Some(repo) = self.repos.get(did) else {
            return Err(repo_not_found(did));
        };
        let status = self.status(did);
        let mut body = json!({"did": did, "active": status.active});
        if let Some(s) = &status.status {
            body["status"] = json!(s);
        }
        // As the PDS does: the rev only of an active repo.
        if let (true, Some((_, rev))) = (status.active, &repo.head) {
            body["rev"] = json!(rev);
        }
        Ok(body)
    }

    /// One `listRepos` page: the repos after `cursor` in DID order. Repos
    /// without a readable commit are left out, as the PDS leaves out
    /// accounts without a repo root.
    fn list_repos(&self, cursor: Option<&str>, limit: usize) -> Value {
        let after = match cursor {
            Some(c) => Bound::Excluded(c),
            None => Bound::Unbounded,
        };
        let repos: Vec<(&String, Value)> = self
            .repos
            .range::<str, _>((after, Bound::Unbounded))
            .filter_map(|(did, repo)| {
                let (cid, rev) = repo.head.as_ref()?;
                let status = self.status(did);
                let mut entry = json!({
                    "did": did,
                    "head": cid.to_string(),
                    "rev": rev,
                    "active": status.active,
                });
                if let Some(s) = &status.status {
                    entry["status"] = json!(s);
                }
                Some((did, entry))
            })
            .take(limit)
            .collect();
        // A full page may have more after it; a shorter one is the last.
        let cursor = (repos.len() == limit)
            .then(|| repos.last().map(|(did, _)| (*did).clone()))
            .flatten();
        let mut body = json!({"repos": repos.into_iter().map(|(_, e)| e).collect::<Vec<_>>()});
        if let Some(c) = cursor {
            body["cursor"] = json!(c);
        }
        body
    }
}

fn repo_not_found(did: &str) -> XrpcFailure {
    (
        "RepoNotFound",
        format!("Could not find repo for DID: {did}"),
    )
}

/// The root commit CID and rev of a CAR, if it has a root and that root is
/// a commit (any hash-verified CAR barn-repo reads).
fn car_head(car: &Bytes) -> Option<(Cid, String)> {
    let file = read_car(car.clone(), &CarLimits::default()).ok()?;
    let root = *file.roots.first()?;
    let commit = Commit::decode(file.blocks.get(&root)?).ok()?;
    Some((root, commit.rev))
}

struct Shared {
    state: Mutex<State>,
    /// Bumped on every push so open sockets send the new frames.
    pushed: watch::Sender<usize>,
    get_repo_requests: AtomicU64,
    subscriptions: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the state from the others.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A fake PDS and PLC directory on 127.0.0.1. Stops when dropped.
pub struct FakePds {
    url: String,
    shared: Arc<Shared>,
    /// Dropped (closed) on drop: open sockets end.
    _stop: watch::Sender<()>,
    accept: JoinHandle<()>,
}

impl std::fmt::Debug for FakePds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakePds")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Drop for FakePds {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl FakePds {
    /// Starts the fake on a free port of 127.0.0.1 (on the current tokio
    /// runtime).
    pub async fn start() -> Result<FakePds> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(Error::io("binding the fake PDS"))?;
        let port = listener
            .local_addr()
            .map_err(Error::io("fake PDS address"))?
            .port();
        let (pushed, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            pushed,
            get_repo_requests: AtomicU64::new(0),
            subscriptions: AtomicU64::new(0),
        });
        let (stop, stopped) = watch::channel(());
        let accept = {
            let shared = shared.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let shared = shared.clone();
                    let stopped = stopped.clone();
                    // A client hanging up mid-request is the client's
                    // business; the fake has nobody to report it to.
                    tokio::spawn(async move {
                        let _ = serve(stream, shared, stopped).await;
                    });
                }
            })
        };
        Ok(FakePds {
            url: format!("http://localhost:{port}"),
            shared,
            _stop: stop,
            accept,
        })
    }

    /// `http://localhost:<port>`: the PDS URL for DID documents, the host
    /// to follow, and the PLC directory URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Queues a raw frame with the seq the cursor filter should see (for a
    /// malformed frame, whatever seq it stands for). Open sockets get it at
    /// once.
    pub fn push(&self, seq: i64, frame: impl Into<Bytes>) {
        self.shared.lock().frames.push((seq, frame.into()));
        self.shared.pushed.send_modify(|n| *n += 1);
    }

    /// Encodes `frame` with [`encode_frame`] and queues it under its seq
    /// (0 for a frame without one).
    pub fn push_frame(&self, frame: &Frame) {
        self.push(frame.seq.unwrap_or(0), encode_frame(frame));
    }

    /// What `getRepo` serves for `did`. The CAR's root commit gives
    /// `listRepos`'s `head` and `rev` and `getLatestCommit`'s answer; a CAR
    /// without a readable root commit (no root, a bad block, garbage) is
    /// still served by `getRepo`, but left out of `listRepos`, and
    /// `getLatestCommit` answers `RepoNotFound` for it (as a PDS does for an
    /// account without a repo root).
    pub fn set_repo(&self, did: &str, car: impl Into<Bytes>) {
        let car = car.into();
        let head = car_head(&car);
        self.shared
            .lock()
            .repos
            .insert(did.to_owned(), Repo { car, head });
    }

    /// A new account hosted here: `FakeAccount::new` with the DID of
    /// `seed`, a genesis commit of `records` records applied, its DID
    /// document naming this fake, its repo served by `getRepo` (no frame
    /// is pushed).
    pub fn add_account(&self, seed: u64, records: usize) -> Result<FakeAccount> {
        let mut acct = FakeAccount::new(&FakeAccount::plc_did(seed), seed);
        let genesis = acct.draft_with(
            0,
            &DraftOptions {
                records,
                ..DraftOptions::default()
            },
        )?;
        acct.apply(&genesis);
        self.set_did_doc(acct.did(), acct.did_doc(&self.url));
        self.set_repo(acct.did(), acct.car());
        Ok(acct)
    }

    /// Makes `getRepo`, `getLatestCommit` and `getRepoStatus` answer
    /// `RepoNotFound` for `did`, and `listRepos` leave it out.
    pub fn remove_repo(&self, did: &str) {
        self.shared.lock().repos.remove(did);
    }

    /// The hosting status `listRepos` and `getRepoStatus` report for `did`
    /// (default: active, no status). While inactive, `getRepo`,
    /// `getLatestCommit` and `getBlob` answer 400 by `status`: `RepoTakendown` for
    /// `takendown`, `RepoSuspended` for `suspended`, else `RepoDeactivated`.
    /// Kept by DID: it may be set before the repo and outlives
    /// [`FakePds::remove_repo`].
    pub fn set_status(&self, did: &str, active: bool, status: Option<&str>) {
        self.shared.lock().statuses.insert(
            did.to_owned(),
            Status {
                active,
                status: status.map(str::to_owned),
            },
        );
    }

    /// Makes every later `getRepo` wait this long before answering (after
    /// it was counted), so a test can stop a consumer mid-download.
    pub fn set_get_repo_delay(&self, delay: Duration) {
        self.shared.lock().get_repo_delay = delay;
    }

    /// Stores a blob of `did` for `getBlob` to serve with `Content-Type`
    /// `mime`, and returns its CID (CIDv1, raw codec, sha-256: what a
    /// record's blob ref names). The bytes are kept as given, not copied;
    /// setting the same blob again replaces its MIME type.
    pub fn set_blob(&self, did: &str, bytes: impl Into<Bytes>, mime: &str) -> Cid {
        let bytes = bytes.into();
        let cid = barn_repo::cid_for_raw(&bytes);
        self.shared
            .lock()
            .blobs
            .entry(did.to_owned())
            .or_default()
            .insert(
                cid,
                Blob {
                    bytes,
                    mime: mime.to_owned(),
                },
            );
        cid
    }

    /// Queues faults for `getBlob` requests of `cid` (whatever the DID):
    /// each request spends the next one, in order; once none is left the
    /// blob is served normally again. Appends to faults still queued.
    ///
    /// A fault is spent before the account and blob are looked up, as a
    /// rate limiter or a failing server answers before the handler; the
    /// body faults ([`BlobFault::WrongBody`], [`BlobFault::CutAfter`],
    /// [`BlobFault::NoLength`]) need the blob, so on a request that would
    /// fail anyway they are spent and the error is answered.
    pub fn script_blob(&self, cid: &Cid, faults: Vec<BlobFault>) {
        self.shared
            .lock()
            .blob_faults
            .entry(*cid)
            .or_default()
            .extend(faults);
    }

    /// Every `getBlob` request so far, in arrival order, with its times
    /// and the body bytes sent (see [`BlobRequest`]).
    pub fn blob_request_log(&self) -> Vec<BlobRequest> {
        self.shared.lock().blob_log.clone()
    }

    /// `getBlob` requests for `cid` so far (any DID, any outcome, faults
    /// included; counted when the request arrives).
    pub fn blob_requests(&self, cid: &Cid) -> u64 {
        self.shared
            .lock()
            .blob_requests
            .get(cid)
            .copied()
            .unwrap_or(0)
    }

    /// What `GET /<did>` serves (see [`did_doc`]).
    pub fn set_did_doc(&self, did: &str, doc: Value) {
        self.shared.lock().docs.insert(did.to_owned(), doc);
    }

    /// `getRepo` requests answered so far (any DID, any outcome).
    pub fn get_repo_requests(&self) -> u64 {
        self.shared.get_repo_requests.load(Ordering::Relaxed)
    }

    /// `getRepo` requests for `did` so far (any outcome; counted when the
    /// request arrives, before any delay).
    pub fn get_repo_count(&self, did: &str) -> u64 {
        self.shared
            .lock()
            .get_repo_since
            .get(did)
            .map_or(0, |v| v.len() as u64)
    }

    /// The `since` parameter of each `getRepo` for `did`, in arrival order
    /// (`None` when absent).
    pub fn get_repo_since(&self, did: &str) -> Vec<Option<String>> {
        self.shared
            .lock()
            .get_repo_since
            .get(did)
            .cloned()
            .unwrap_or_default()
    }

    /// The `cursor` parameter of each `listRepos` request, in arrival order
    /// (`None` when absent).
    pub fn list_repos_cursors(&self) -> Vec<Option<String>> {
        self.shared.lock().list_repos_cursors.clone()
    }

    /// `listRepos` requests so far (any outcome).
    pub fn list_repos_requests(&self) -> u64 {
        self.shared.lock().list_repos_cursors.len() as u64
    }

    /// `subscribeRepos` connections accepted so far.
    pub fn subscriptions(&self) -> u64 {
        self.shared.subscriptions.load(Ordering::Relaxed)
    }
}

/// A DID document in plc.directory's form: a Multikey `#atproto`
/// verification method with `key` and an `#atproto_pds` service at `pds`.
pub fn did_doc(did: &str, key: &PublicKey, pds: &str) -> Value {
    json!({
        "@context": [
            "https://www.w3.org/ns/did/v1",
            "https://w3id.org/security/multikey/v1",
        ],
        "id": did,
        "alsoKnownAs": [],
        "verificationMethod": [{
            "id": format!("{did}#atproto"),
            "type": "Multikey",
            "controller": did,
            "publicKeyMultibase": key.to_multikey(),
        }],
        "service": [{
            "id": "#atproto_pds",
            "type": "AtprotoPersonalDataServer",
            "serviceEndpoint": pds,
        }],
    })
}

type IoResult<T> = std::result::Result<T, std::io::Error>;

/// One request on one connection.
async fn serve(
    mut stream: TcpStream,
    shared: Arc<Shared>,
    stopped: watch::Receiver<()>,
) -> IoResult<()> {
    let Some(head) = read_head(&mut stream).await? else {
        return respond(&mut stream, "431 Request Header Fields Too Large", "", b"").await;
    };
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let ws_key = lines.find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("sec-websocket-key")
            .then(|| value.trim().to_owned())
    });
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let param = |name: &str| {
        query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == name).then(|| percent_decode(v))
        })
    };
    if method != "GET" {
        return respond(&mut stream, "405 Method Not Allowed", "", b"").await;
    }
    match path {
        "/xrpc/com.atproto.sync.subscribeRepos" => {
            let Some(key) = ws_key else {
                return xrpc_error(&mut stream, "InvalidRequest", "websocket only").await;
            };
            let cursor = match param("cursor").map(|c| c.parse::<i64>()) {
                Some(Ok(c)) => Some(c),
                Some(Err(_)) => {
                    return xrpc_error(&mut stream, "InvalidRequest", "bad cursor").await;
                }
                None => None,
            };
            let accept = derive_accept_key(key.as_bytes());
            let response = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            );
            stream.write_all(response.as_bytes()).await?;
            shared.subscriptions.fetch_add(1, Ordering::Relaxed);
            let ws = WebSocketStream::from_raw_socket(stream, Role::Server, None).await;
            stream_frames(ws, cursor, &shared, stopped).await
        }
        "/xrpc/com.atproto.sync.getRepo" => {
            shared.get_repo_requests.fetch_add(1, Ordering::Relaxed);
            let did = param("did").unwrap_or_default();
            let delay = {
                let mut state = shared.lock();
                state
                    .get_repo_since
                    .entry(did.clone())
                    .or_default()
                    .push(param("since"));
                state.get_repo_delay
            };
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            // Read after the delay: the answer is the state when it is sent.
            let car = shared.lock().available(&did).map(|r| r.car.clone());
            match car {
                Ok(car) => respond(&mut stream, "200 OK", "application/vnd.ipld.car", &car).await,
                Err((error, message)) => xrpc_error(&mut stream, error, &message).await,
            }
        }
        "/xrpc/com.atproto.sync.getBlob" => {
            let did = param("did").unwrap_or_default();
            // The PDS validates `cid` against the lexicon before its
            // handler runs.
            let Some(cid) = param("cid").and_then(|c| c.parse::<Cid>().ok()) else {
                return xrpc_error(&mut stream, "InvalidRequest", "cid must be a cid string").await;
            };
            let (fault, request) = {
                let mut state = shared.lock();
                *state.blob_requests.entry(cid).or_default() += 1;
                state.blob_log.push(BlobRequest {
                    cid,
                    did: did.clone(),
                    arrived: Instant::now(),
                    answered: None,
                    body_bytes: 0,
                });
                let request = state.blob_log.len() - 1;
                let fault = state
                    .blob_faults
                    .get_mut(&cid)
                    .and_then(VecDeque::pop_front);
                (fault, request)
            };
            let answer = BlobAnswer {
                shared: &shared,
                request,
            };
            serve_blob(&mut stream, answer, &did, &cid, fault).await
        }
        "/xrpc/com.atproto.sync.listRepos" => {
            // Logged first, so a refused request shows in the log too.
            let cursor = param("cursor");
            shared.lock().list_repos_cursors.push(cursor.clone());
            let limit = match param("limit").map(|l| l.parse::<i64>()) {
                None => LIST_REPOS_DEFAULT,
                // Clamped rather than refused: the fake is lenient here so
                // a test can ask for a page of any size.
                Some(Ok(n)) => n.clamp(1, LIST_REPOS_MAX) as usize,
                Some(Err(_)) => {
                    return xrpc_error(&mut stream, "InvalidRequest", "bad limit").await;
                }
            };
            let body = shared.lock().list_repos(cursor.as_deref(), limit);
            json_answer(&mut stream, Ok(body)).await
        }
        "/xrpc/com.atproto.sync.getLatestCommit" => {
            let did = param("did").unwrap_or_default();
            let answer = shared.lock().latest_commit(&did);
            json_answer(&mut stream, answer).await
        }
        "/xrpc/com.atproto.sync.getRepoStatus" => {
            let did = param("did").unwrap_or_default();
            let answer = shared.lock().repo_status(&did);
            json_answer(&mut stream, answer).await
        }
        _ => {
            let did = percent_decode(path.trim_start_matches('/'));
            let doc = shared.lock().docs.get(&did).cloned();
            match doc {
                Some(doc) => {
                    let body = doc.to_string();
                    respond(&mut stream, "200 OK", "application/json", body.as_bytes()).await
                }
                None => {
                    let body = json!({"message": format!("DID not registered: {did}")});
                    respond(
                        &mut stream,
                        "404 Not Found",
                        "application/json",
                        body.to_string().as_bytes(),
                    )
                    .await
                }
            }
        }
    }
}

/// Where one `getBlob` answer is logged.
#[derive(Clone, Copy)]
struct BlobAnswer<'a> {
    shared: &'a Shared,
    /// Its index in `blob_log`.
    request: usize,
}

impl BlobAnswer<'_> {
    fn log(&self, f: impl FnOnce(&mut BlobRequest)) {
        if let Some(r) = self.shared.lock().blob_log.get_mut(self.request) {
            f(r);
        }
    }
}

/// One `getBlob` answer: `fault` if there is one, else the blob or the
/// error the PDS would answer.
async fn serve_blob(
    stream: &mut TcpStream,
    answer: BlobAnswer<'_>,
    did: &str,
    cid: &Cid,
    fault: Option<BlobFault>,
) -> IoResult<()> {
    if let Some(BlobFault::Delay(delay)) = &fault {
        tokio::time::sleep(*delay).await;
    }
    // Before the first byte of any answer: see `BlobRequest::answered`.
    answer.log(|r| r.answered = Some(Instant::now()));
    let body = match fault {
        Some(BlobFault::NotFound) => {
            return xrpc_error(stream, "InvalidRequest", "Blob not found").await;
        }
        Some(BlobFault::NotFoundByLexicon) => {
            return xrpc_error(stream, "BlobNotFound", "Blob not found").await;
        }
        Some(BlobFault::TooManyRequests { retry_after_secs }) => {
            let reset = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
                + retry_after_secs;
            let headers = format!(
                "Retry-After: {retry_after_secs}\r\nRateLimit-Remaining: 0\r\n\
                 RateLimit-Reset: {reset}\r\n"
            );
            return xrpc_error_with(
                stream,
                "429 Too Many Requests",
                &headers,
                "RateLimitExceeded",
                "Rate Limit Exceeded",
            )
            .await;
        }
        Some(BlobFault::ServerError) => {
            return xrpc_error_with(
                stream,
                "500 Internal Server Error",
                "",
                "InternalServerError",
                "Internal Server Error",
            )
            .await;
        }
        Some(BlobFault::Delay(_)) | None => BlobBody::Whole,
        Some(BlobFault::WrongBody) => BlobBody::Flipped,
        Some(BlobFault::CutAfter(n)) => BlobBody::Cut(n),
        Some(BlobFault::StallAfter { bytes, stall }) => BlobBody::Stall(bytes, stall),
        Some(BlobFault::NoLength) => BlobBody::Chunked,
    };
    // Read after any delay: the answer is the state when it is sent.
    let found = answer.shared.lock().blob(did, cid);
    match found {
        Ok((bytes, mime)) => send_blob(stream, answer, cid, &bytes, &mime, body).await,
        Err((error, message)) => xrpc_error(stream, error, &message).await,
    }
}

/// How a found blob's body goes out.
#[derive(Clone, Copy)]
enum BlobBody {
    Whole,
    /// One byte in the middle flipped, same length.
    Flipped,
    /// `Content-Length` of the whole, then only this many bytes.
    Cut(usize),
    /// `Transfer-Encoding: chunked`, no `Content-Length`.
    Chunked,
    /// This many bytes, a pause this long, the rest.
    Stall(usize, Duration),
}

/// A 200 `getBlob` answer with the PDS's headers, the body written one
/// [`BLOB_CHUNK`] at a time from the shared bytes (only a chunk that is
/// altered is copied).
async fn send_blob(
    stream: &mut TcpStream,
    answer: BlobAnswer<'_>,
    cid: &Cid,
    bytes: &Bytes,
    mime: &str,
    body: BlobBody,
) -> IoResult<()> {
    let mime = if mime.is_empty() {
        "application/octet-stream"
    } else {
        mime
    };
    let length = match body {
        BlobBody::Chunked => "Transfer-Encoding: chunked\r\n".to_owned(),
        _ => format!("Content-Length: {}\r\n", bytes.len()),
    };
    // The security headers the PDS sets on every blob (getBlob.js).
    let head = format!(
        "HTTP/1.1 200 OK\r\n{length}Content-Type: {mime}\r\n\
         X-Content-Type-Options: nosniff\r\n\
         Content-Disposition: attachment; filename=\"{cid}\"\r\n\
         Content-Security-Policy: default-src 'none'; sandbox\r\n\
         Connection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    let (limit, flip_at) = match body {
        BlobBody::Cut(n) => (n.min(bytes.len()), None),
        BlobBody::Flipped => (bytes.len(), Some(bytes.len() / 2)),
        BlobBody::Whole | BlobBody::Chunked | BlobBody::Stall(..) => (bytes.len(), None),
    };
    let mut stall = match body {
        BlobBody::Stall(at, pause) => Some((at.min(bytes.len()), pause)),
        _ => None,
    };
    let mut offset = 0;
    // Chunks end at the stall point, so exactly that many bytes go first.
    let mut chunks = Vec::new();
    let mut start = 0;
    while start < limit {
        let mut end = (start + BLOB_CHUNK).min(limit);
        if let Some((at, _)) = stall
            && start < at
        {
            end = end.min(at);
        }
        chunks.push(&bytes[start..end]);
        start = end;
    }
    for chunk in chunks {
        if let Some((at, pause)) = stall
            && offset >= at
        {
            tokio::time::sleep(pause).await;
            stall = None;
        }
        let end = offset + chunk.len();
        let altered;
        let piece = match flip_at {
            Some(at) if (offset..end).contains(&at) => {
                let mut copy = chunk.to_vec();
                copy[at - offset] ^= 0x01;
                altered = copy;
                &altered[..]
            }
            _ => chunk,
        };
        if matches!(body, BlobBody::Chunked) {
            stream
                .write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                .await?;
            stream.write_all(piece).await?;
            stream.write_all(b"\r\n").await?;
        } else {
            stream.write_all(piece).await?;
        }
        answer.log(|r| r.body_bytes += piece.len() as u64);
        offset = end;
    }
    if matches!(body, BlobBody::Chunked) {
        stream.write_all(b"0\r\n\r\n").await?;
    }
    // For a cut body this FIN comes before the promised length: the client
    // sees the connection close mid-body.
    stream.shutdown().await
}

/// Sends the frames the cursor allows, then every later push, until the
/// client goes away or the fake stops.
async fn stream_frames(
    mut ws: WebSocketStream<TcpStream>,
    cursor: Option<i64>,
    shared: &Shared,
    mut stopped: watch::Receiver<()>,
) -> IoResult<()> {
    let mut pushed = shared.pushed.subscribe();
    // Without a cursor the stream is live: nothing from before.
    let mut next = match cursor {
        Some(_) => 0,
        None => shared.lock().frames.len(),
    };
    loop {
        pushed.borrow_and_update();
        let batch: Vec<Bytes> = {
            let state = shared.lock();
            let batch = state
                .frames
                .get(next..)
                .unwrap_or_default()
                .iter()
                .filter(|(seq, _)| cursor.is_none_or(|c| *seq > c))
                .map(|(_, b)| b.clone())
                .collect();
            next = state.frames.len();
            batch
        };
        for frame in batch {
            ws.send(Message::Binary(frame))
                .await
                .map_err(std::io::Error::other)?;
        }
        tokio::select! {
            r = pushed.changed() => if r.is_err() { return Ok(()) },
            _ = stopped.changed() => {
                let _ = ws.close(None).await;
                return Ok(());
            }
            msg = ws.next() => match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ok(()),
                // Pings are answered by tungstenite on the next write.
                Some(Ok(_)) => {}
            },
        }
    }
}

/// The request head (up to the blank line); `None` when it is too long.
async fn read_head(stream: &mut TcpStream) -> IoResult<Option<String>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(end);
            return Ok(Some(String::from_utf8_lossy(&buf).into_owned()));
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Ok(None);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
) -> IoResult<()> {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if !content_type.is_empty() {
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}

/// A JSON body (200) or an XRPC error (400).
async fn json_answer(
    stream: &mut TcpStream,
    answer: std::result::Result<Value, XrpcFailure>,
) -> IoResult<()> {
    match answer {
        Ok(body) => {
            let body = body.to_string();
            respond(stream, "200 OK", "application/json", body.as_bytes()).await
        }
        Err((error, message)) => xrpc_error(stream, error, &message).await,
    }
}

/// An XRPC error as the PDS sends most of them: 400 with a JSON body.
async fn xrpc_error(stream: &mut TcpStream, error: &str, message: &str) -> IoResult<()> {
    xrpc_error_with(stream, "400 Bad Request", "", error, message).await
}

/// An XRPC error with another status line and extra header lines (each
/// ending in CRLF).
async fn xrpc_error_with(
    stream: &mut TcpStream,
    status: &str,
    headers: &str,
    error: &str,
    message: &str,
) -> IoResult<()> {
    let body = json!({"error": error, "message": message}).to_string();
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: application/json\r\n\
         {headers}Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// `%XX` decoding (enough for DIDs and integers in a query or path).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------
// accounts

/// The head of a [`FakeAccount`]'s repo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountHead {
    /// Commit CID.
    pub cid: Cid,
    /// Commit rev.
    pub rev: String,
    /// MST root.
    pub data: Cid,
}

/// An account with a signing key and a repo, drafting valid `#commit`
/// events one at a time.
#[derive(Debug)]
pub struct FakeAccount {
    did: String,
    key: PrivateKey,
    /// Every block of every revision: `getRepo` serves the reachable ones.
    blocks: BlockMap,
    head: Option<AccountHead>,
    records: BTreeMap<String, Cid>,
    /// Numbers the next record (its rkey and content).
    next_record: u64,
}

/// How to draft a commit; [`Default`] is one small record, signed with
/// the account's key, at the next rev.
#[derive(Debug, Clone)]
pub struct DraftOptions {
    /// Records to create.
    pub records: usize,
    /// Sign with this key instead of the account's.
    pub key: Option<PrivateKey>,
    /// Use this rev instead of the next one (the commit is signed with it).
    pub rev: Option<String>,
    /// Pad each record with a text of this many bytes.
    pub padding: usize,
    /// Record `i` references blob `blobs[i]` (an `image` blob ref), for
    /// the first `blobs.len()` records.
    pub blobs: Vec<Cid>,
    /// Write those refs in the legacy form, `{"cid": …, "mimeType": …}`
    /// (old records still carry it), instead of `{"$type": "blob", …}`.
    pub legacy_blobs: bool,
}

impl Default for DraftOptions {
    fn default() -> Self {
        DraftOptions {
            records: 1,
            key: None,
            rev: None,
            padding: 0,
            blobs: Vec::new(),
            legacy_blobs: false,
        }
    }
}

/// A drafted `#commit`: valid for the account's head until changed.
#[derive(Debug, Clone)]
pub struct DraftCommit {
    /// The event. Edit its fields to break it; [`DraftCommit::frame`]
    /// encodes whatever it holds.
    pub event: CommitEvent,
    /// The blocks of the CAR slice, in order: MST nodes, records, commit.
    pub blocks: Vec<(Cid, Bytes)>,
    /// The records created, `(path, cid)`.
    pub records: Vec<(String, Cid)>,
    /// The new MST root.
    pub data: Cid,
    /// The MST nodes written by this commit (the proof blocks).
    pub mst_nodes: Vec<Cid>,
}

impl DraftCommit {
    /// The encoded `#commit` frame.
    pub fn frame(&self) -> Bytes {
        Bytes::from(encode_frame(&Frame {
            seq: Some(self.event.seq),
            event: Event::Commit(self.event.clone()),
        }))
    }

    /// The commit CID.
    pub fn commit_cid(&self) -> Cid {
        self.event.commit
    }

    /// Rewrites `event.blocks` from [`DraftCommit::blocks`].
    pub fn rebuild_car(&mut self) {
        let car = write_car(
            &[self.event.commit],
            self.blocks.iter().map(|(c, d)| (c, &d[..])),
        );
        self.event.blocks = Bytes::from(car);
    }

    /// Leaves block `cid` out of the CAR slice.
    pub fn drop_block(&mut self, cid: &Cid) {
        self.blocks.retain(|(c, _)| c != cid);
        self.rebuild_car();
    }

    /// Flips one bit in the middle of block `cid` (its CID is kept, so its
    /// hash no longer matches).
    pub fn corrupt_block(&mut self, cid: &Cid) {
        for (c, data) in &mut self.blocks {
            if c == cid && !data.is_empty() {
                let mut bytes = data.to_vec();
                let mid = bytes.len() / 2;
                bytes[mid] ^= 0x01;
                *data = Bytes::from(bytes);
            }
        }
        self.rebuild_car();
    }
}

impl FakeAccount {
    /// A `did:plc` made from `n` (24 base32 characters).
    pub fn plc_did(n: u64) -> String {
        const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
        let mut s = String::from("did:plc:");
        let mut v = n;
        for _ in 0..24 {
            s.push(char::from(ALPHABET[(v % 32) as usize]));
            v /= 32;
        }
        s
    }

    /// An account with no repo yet, its key made from `seed` (K-256).
    pub fn new(did: &str, seed: u64) -> FakeAccount {
        FakeAccount {
            did: did.to_owned(),
            key: PrivateKey::from_seed(KeyType::K256, seed),
            blocks: BlockMap::new(),
            head: None,
            records: BTreeMap::new(),
            next_record: 0,
        }
    }

    /// The DID.
    pub fn did(&self) -> &str {
        &self.did
    }

    /// The signing key.
    pub fn key(&self) -> &PrivateKey {
        &self.key
    }

    /// The public signing key.
    pub fn public_key(&self) -> PublicKey {
        self.key.public_key()
    }

    /// The DID document naming this account's key and `pds`.
    pub fn did_doc(&self, pds: &str) -> Value {
        did_doc(&self.did, &self.key.public_key(), pds)
    }

    /// The repo head, once a draft was applied.
    pub fn head(&self) -> Option<&AccountHead> {
        self.head.as_ref()
    }

    /// Every record, path to CID.
    pub fn records(&self) -> &BTreeMap<String, Cid> {
        &self.records
    }

    /// The whole repo as a CAR rooted at the head commit (what `getRepo`
    /// serves); an empty CAR without roots before the first commit.
    pub fn car(&self) -> Bytes {
        let roots: Vec<Cid> = self.head.iter().map(|h| h.cid).collect();
        Bytes::from(write_car(
            &roots,
            self.blocks.iter().map(|(c, d)| (c, &d[..])),
        ))
    }

    /// The next rev: now, or just after the head if the clock is behind.
    pub fn next_rev(&self) -> Result<String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or_default();
        let after_head = self
            .head
            .as_ref()
            .and_then(|h| h.rev.parse::<Tid>().ok())
            .map_or(0, |t| t.timestamp_micros() + 1);
        let tid = Tid::from_parts(now.max(after_head), 0)
            .map_err(|e| Error::repo("next rev")(e.into()))?;
        Ok(tid.to_string())
    }

    /// A valid commit creating one record at `seq` (the genesis commit when
    /// the account has no repo yet).
    pub fn draft(&self, seq: i64) -> Result<DraftCommit> {
        self.draft_with(seq, &DraftOptions::default())
    }

    /// A commit as `options` say, at `seq`.
    pub fn draft_with(&self, seq: i64, options: &DraftOptions) -> Result<DraftCommit> {
        let what = format!("drafting a commit of {}", self.did);
        let rev = match &options.rev {
            Some(r) => r.clone(),
            None => self.next_rev()?,
        };
        let mut tree = match &self.head {
            Some(h) => Mst::load(&self.blocks, h.data).map_err(Error::repo(&what))?,
            None => Mst::empty(&self.blocks),
        };
        let mut records = Vec::new();
        let mut record_blocks = Vec::new();
        for i in 0..options.records as u64 {
            let n = self.next_record + i;
            let path = format!("com.example.thing/r{n:08}");
            let mut json = json!({
                "$type": "com.example.thing",
                "n": n,
                "text": "x".repeat(options.padding),
            });
            if let Some(blob) = options.blobs.get(i as usize) {
                json["image"] = if options.legacy_blobs {
                    json!({"cid": blob.to_string(), "mimeType": "image/jpeg"})
                } else {
                    json!({
                        "$type": "blob",
                        "ref": {"$link": blob.to_string()},
                        "mimeType": "application/octet-stream",
                        "size": 0,
                    })
                };
            }
            let value = barn_repo::data::record_from_json(&json).map_err(Error::repo(&what))?;
            let bytes = barn_repo::data::encode(&value).map_err(Error::repo(&what))?;
            let cid = barn_repo::cid_for_cbor(&bytes);
            tree.insert(&path, cid).map_err(Error::repo(&what))?;
            records.push((path, cid));
            record_blocks.push((cid, Bytes::from(bytes)));
        }
        let data = tree.root_cid();
        let nodes = tree.take_new_blocks();
        drop(tree);
        let key = options.key.as_ref().unwrap_or(&self.key);
        let (_, commit_bytes, commit_cid) =
            Commit::create(&self.did, data, &rev, key).map_err(Error::repo(&what))?;
        let mut blocks: Vec<(Cid, Bytes)> = nodes.iter().map(|(c, d)| (*c, d.clone())).collect();
        let mst_nodes = blocks.iter().map(|(c, _)| *c).collect();
        blocks.extend(record_blocks);
        blocks.push((commit_cid, Bytes::from(commit_bytes)));
        let event = CommitEvent {
            seq,
            repo: self.did.clone(),
            rev: rev.clone(),
            since: self.head.as_ref().map(|h| h.rev.clone()),
            commit: commit_cid,
            blocks: Bytes::new(),
            ops: records
                .iter()
                .map(|(path, cid)| RepoOp {
                    action: OpAction::Create,
                    path: path.clone(),
                    cid: Some(*cid),
                    prev: None,
                })
                .collect(),
            prev_data: self.head.as_ref().map(|h| h.data),
            time: "2026-01-01T00:00:00.000Z".into(),
            too_big: false,
            rebase: false,
            blobs: Vec::new(),
        };
        let mut draft = DraftCommit {
            event,
            blocks,
            records,
            data,
            mst_nodes,
        };
        draft.rebuild_car();
        Ok(draft)
    }

    /// Makes `draft` the account's new head (a draft of the current head,
    /// as a legitimate PDS would have committed it).
    pub fn apply(&mut self, draft: &DraftCommit) {
        for (cid, data) in &draft.blocks {
            self.blocks.insert(*cid, data.clone());
        }
        for (path, cid) in &draft.records {
            self.records.insert(path.clone(), *cid);
        }
        self.next_record += draft.records.len() as u64;
        self.head = Some(AccountHead {
            cid: draft.event.commit,
            rev: draft.event.rev.clone(),
            data: draft.data,
        });
    }

    /// An `#identity` frame for this account at `seq` (no handle).
    pub fn identity_frame(&self, seq: i64) -> Bytes {
        Bytes::from(encode_frame(&Frame {
            seq: Some(seq),
            event: Event::Identity(IdentityEvent {
                seq,
                did: self.did.clone(),
                time: "2026-01-01T00:00:00.000Z".into(),
                handle: None,
            }),
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn drafts_verify_as_whole_repos_once_applied() {
        let mut acct = FakeAccount::new(&FakeAccount::plc_did(1), 1);
        let genesis = acct
            .draft_with(
                1,
                &DraftOptions {
                    records: 5,
                    ..DraftOptions::default()
                },
            )
            .unwrap();
        assert!(genesis.event.since.is_none() && genesis.event.prev_data.is_none());
        acct.apply(&genesis);
        let next = acct.draft(2).unwrap();
        assert_eq!(
            next.event.since.as_deref(),
            Some(genesis.event.rev.as_str())
        );
        assert!(next.event.rev > genesis.event.rev);
        acct.apply(&next);
        let car = barn_repo::car::read_car(acct.car(), &Default::default()).unwrap();
        let verified = barn_repo::commit::verify_repo(
            &car.blocks,
            &next.event.commit,
            Some(acct.did()),
            Some(&acct.public_key()),
        )
        .unwrap();
        assert_eq!(verified.records.len(), 6);
        let decoded = barn_firehose::decode_frame(&next.frame()).unwrap();
        assert_eq!(decoded.event, Event::Commit(next.event.clone()));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("did%3Aplc%3Aabc"), "did:plc:abc");
        assert_eq!(percent_decode("a%2"), "a%2");
    }
}
