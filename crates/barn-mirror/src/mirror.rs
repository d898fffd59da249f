//! The live mirror: one task per tracked host, from websocket frames to
//! durable revisions.
//!
//! # Terminology
//! - **host task**: subscribes to one host's `subscribeRepos`, verifies
//!   every event for the repos it tracks, and group-commits the results
//!   together with the host's cursor.
//! - **whole host** / **accounts**: a host is tracked whole (every repo on
//!   it, the operator's case) or only for some DIDs (an account followed
//!   after it migrated there).
//! - **pending**: verified changes not yet written; they are visible to
//!   the next verifications of the same task through an overlay.
//!
//! # Tricky bits
//! - The cursor written with a batch is the seq of the last event whose
//!   effects are in that batch or that was decided to be ignored. An event
//!   that leads to a resync marks the repo desynchronized *in the same
//!   batch*; at start-up every desynchronized repo is resynced, so a crash
//!   between the batch and the resync loses nothing.
//! - Only the task of a repo's current host writes that repo. When the DID
//!   document names another host, the repo's `host` changes in a batch,
//!   and only after that batch is durable does the new host's task take the
//!   repo over (and resync it from there).
//! - Events replayed after a reconnect or restart carry revs barn already
//!   holds; they are dropped as duplicates, never applied twice.
//! - A resync asked for too soon after the repo's last one, or one that
//!   failed, is deferred, not dropped: it runs when `resync_retry` has
//!   passed even if no further event names the repo.
//! - Imports (backfill, resync, `#sync`, reconcile) run beside the stream,
//!   a few at a time. Before one starts, the repo is marked
//!   desynchronized and that mark is made durable; while it runs, the
//!   repo's commits are buffered (bounded) and replayed in stream order on
//!   the new head once it is stored. The cursor may pass buffered events:
//!   if barn crashes, the durable mark makes it import the repo again,
//!   which brings their content.
//! - A whole host is backfilled by listing it (`listRepos`); replaying
//!   its event log only finds repos with recent events. The listing's cursor is saved with the
//!   states of the repos it listed, so a restart resumes the pass. The
//!   same pass, run periodically or after `OutdatedCursor` /
//!   `FutureCursor`, compares every listed head with barn's; a repo still
//!   behind after `reconcile_grace` (the firehose had its chance) is
//!   fetched and its differences, deletes included, stored as one
//!   revision marked as a reconcile.
//! - Events about a DID barn holds nothing of, whose document names another
//!   host, are ignored (`wrong_host`): a host cannot make barn store or
//!   follow accounts that are not on it. Only a repo barn already holds is
//!   followed to its new host.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use barn_firehose::{
    AccountEvent, BytePermit, CommitEvent, Delivery, Event, Frame, IdentityEvent, SubscribeConfig,
    SyncEvent, subscribe, subscribe_source,
};
use barn_identity::{Identity, Resolver};
use barn_repo::car::{CarLimits, read_car};
use barn_repo::commit::Commit;
use barn_store::{
    Batch, CommitEntry, HostState, ListPass, Op, OpAction, PassKind, RepoState, Source, Store,
    SyncState, now_ms,
};
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;

use crate::error::{Error, Result};
use crate::import::{Job, Outcome};
use crate::listing::Page;
use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::verify::{
    CommitInput, Disposition, Head, Rejection, Verified, check_head, check_stale, prepare_commit,
    verify_commit,
};

/// Mirror settings.
#[derive(Debug, Clone)]
pub struct MirrorConfig {
    /// A group commit holds at most this many revisions; with a write
    /// still under way, intake waits.
    pub group_commit_max: usize,
    /// A group commit holds at most this many bytes of blocks; with a
    /// write still under way, intake waits.
    pub group_commit_bytes: usize,
    /// Verified commits are written as soon as the previous write is done
    /// and nothing else is ready; while frames keep arriving, no commit
    /// waits longer than this for its write to start.
    pub group_commit_delay: Duration,
    /// Threads that verify commits (hashes, signatures, inversions);
    /// 0 means one per core. Shared by all hosts.
    pub verify_threads: usize,
    /// Commits of one host being verified at once, ahead of the one
    /// being applied.
    pub pipeline_depth: usize,
    /// Cursor for a host barn has never followed. `Some(0)` (the default)
    /// replays the host's whole backlog: every commit it still holds for a
    /// repo created within it is kept as history, and any other repo is
    /// imported when it first appears (if the listing has not got to it
    /// yet). `None` starts live. Either way [`MirrorConfig::backfill`]
    /// lists the host to fetch every account.
    pub new_host_cursor: Option<i64>,
    /// List a whole host barn has never followed (`listRepos`) and import
    /// every account on it.
    pub backfill: bool,
    /// Imports running at once, all hosts together.
    pub max_imports: usize,
    /// Imports running at once on one host.
    pub max_imports_per_host: usize,
    /// `listRepos` page size (1..=1000).
    pub list_page: usize,
    /// The next `listRepos` page is fetched only while fewer imports than
    /// this are queued for the host.
    pub list_queue_max: usize,
    /// How often a whole host is listed again and every head compared
    /// with barn's; zero turns the periodic reconcile off.
    pub reconcile_interval: Duration,
    /// How long a listed head newer than barn's may stay unexplained by the
    /// firehose before the repo is fetched.
    pub reconcile_grace: Duration,
    /// Bytes of commits buffered for one repo while it is imported; past
    /// that they are dropped and the repo is imported once more after.
    pub repo_buffer_bytes: usize,
    /// Bytes of commits buffered for all repos of one host being imported.
    pub buffer_bytes: usize,
    /// Largest websocket frame.
    pub max_frame_bytes: usize,
    /// Byte budget of frames received but not yet processed, per host.
    pub queue_bytes: usize,
    /// Reconnect a socket silent for this long.
    pub watchdog: Duration,
    /// First reconnect delay.
    pub backoff_min: Duration,
    /// Largest `getRepo` accepted by a resync.
    pub max_repo_bytes: u64,
    /// Do not retry a failed resync of one repo sooner than this.
    pub resync_retry: Duration,
}

impl Default for MirrorConfig {
    fn default() -> Self {
        MirrorConfig {
            group_commit_max: 1000,
            group_commit_bytes: 32 << 20,
            group_commit_delay: Duration::from_millis(5),
            verify_threads: 0,
            pipeline_depth: 256,
            new_host_cursor: Some(0),
            backfill: true,
            max_imports: 4,
            max_imports_per_host: 2,
            list_page: 1000,
            list_queue_max: 1000,
            reconcile_interval: Duration::from_secs(24 * 3600),
            reconcile_grace: Duration::from_secs(30),
            repo_buffer_bytes: 4 << 20,
            buffer_bytes: 32 << 20,
            max_frame_bytes: 5 << 20,
            queue_bytes: 64 << 20,
            watchdog: Duration::from_secs(60),
            backoff_min: Duration::from_millis(500),
            max_repo_bytes: 1 << 30,
            resync_retry: Duration::from_secs(10),
        }
    }
}

/// `http(s)://host[:port]`, lowercase, without a trailing slash: the form
/// hosts are keyed by.
pub fn normalize_host(url: &str) -> String {
    url.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// What a record declares about a blob it references, for the store.
pub(crate) fn blob_hint(r: &barn_repo::data::BlobRef) -> barn_store::BlobHint {
    barn_store::BlobHint {
        mime: r.mime_type.clone(),
        size: r.size.and_then(|s| u64::try_from(s).ok()),
    }
}

/// A group commit became durable.
#[derive(Debug, Clone)]
pub struct Durable {
    /// The host whose events it carried.
    pub host: String,
    /// The host's cursor written with it.
    pub cursor: Option<i64>,
    /// Revisions it stored.
    pub revisions: usize,
    /// Repos it advanced, with their new rev (at most 100 listed).
    pub repos: Vec<(String, String)>,
}

/// How far a host's listing and imports are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostProgress {
    /// The host.
    pub host: String,
    /// Whether every repo of the host is tracked.
    pub whole: bool,
    /// The `listRepos` pass under way, if any.
    pub pass: Option<ListPass>,
    /// When the last pass finished, ms since the Unix epoch.
    pub last_pass_done_ms: Option<u64>,
    /// Imports waiting to start.
    pub queued: usize,
    /// Imports running.
    pub importing: usize,
    /// Imports finished since the task started (any outcome).
    pub imports_done: u64,
    /// Imports that failed since the task started (retried later).
    pub imports_failed: u64,
    /// The host's durable cursor.
    pub cursor: Option<i64>,
    /// The highest seq received (0 when none yet).
    pub seq: i64,
    /// Events received and not yet durable.
    pub lag_seq: i64,
    /// The host's event time to durable, at the last group commit, ms.
    pub lag_ms: u64,
    /// When the last event was received, ms since the Unix epoch (0 when
    /// never).
    pub last_event_ms: u64,
}

/// Messages to a host task.
// Rare (a few per import or page): boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Control {
    /// Start following `did` on this host and import it from here, for
    /// `reason`.
    Adopt(String, String),
    /// An import ended.
    Imported {
        did: String,
        result: Result<Outcome>,
    },
    /// A `listRepos` page; `ack` once its results are in the pending batch.
    Listed {
        page: Page,
        ack: oneshot::Sender<()>,
    },
    /// The listing reached its last page.
    ListDone,
    /// Start a listing pass (or queue one after the pass under way).
    StartPass(PassKind, String),
    /// `did` is no longer followed: answer once nothing of it is pending,
    /// being written or being imported.
    Forget(String, oneshot::Sender<()>),
    /// What the host said of one repo when asked directly (see
    /// [`crate::checks`]), for `reason`.
    Checked {
        did: String,
        answer: crate::checks::Answer,
        reason: String,
    },
}

struct HostEntry {
    whole: bool,
    /// Stops this host's task alone.
    cancel: CancellationToken,
    accounts: Arc<Mutex<HashSet<String>>>,
    control: mpsc::UnboundedSender<Control>,
    progress: Arc<Mutex<HostProgress>>,
    task: Option<JoinHandle<()>>,
}

pub(crate) struct Inner {
    pub(crate) store: Arc<Store>,
    pub(crate) resolver: Resolver,
    pub(crate) http: reqwest::Client,
    pub(crate) config: MirrorConfig,
    pub(crate) metrics: Metrics,
    hosts: Mutex<HashMap<String, HostEntry>>,
    shutdown: CancellationToken,
    pool: Pool,
    durable: broadcast::Sender<Durable>,
    /// Permits for imports, all hosts together.
    imports: Arc<Semaphore>,
    /// Accounts the operator untracked: never followed, whatever host
    /// they are on.
    dropped: Mutex<HashSet<String>>,
    /// Accounts tracked one by one (config or admin API): kept when their
    /// host stops being tracked whole.
    explicit: Mutex<HashSet<String>>,
}

/// The running mirror. Cheap to clone.
#[derive(Clone)]
pub struct Mirror {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror").finish_non_exhaustive()
    }
}

impl Mirror {
    /// A mirror over `store`, resolving identities with `resolver`.
    pub fn new(
        store: Arc<Store>,
        resolver: Resolver,
        config: MirrorConfig,
        metrics: Metrics,
    ) -> Mirror {
        let config_threads = config.verify_threads;
        let max_imports = config.max_imports.max(1);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(300))
            .build()
            .unwrap_or_default();
        Mirror {
            inner: Arc::new(Inner {
                store,
                resolver,
                http,
                config,
                metrics,
                hosts: Mutex::new(HashMap::new()),
                shutdown: CancellationToken::new(),
                pool: Pool::new(config_threads),
                durable: broadcast::channel(1024).0,
                imports: Arc::new(Semaphore::new(max_imports)),
                dropped: Mutex::new(HashSet::new()),
                explicit: Mutex::new(HashSet::new()),
            }),
        }
    }

    /// Starts the host tasks: `whole_hosts` tracked whole, plus every host
    /// that stored repos name (tracked for those repos only).
    ///
    /// The operator's decisions through the admin API (stored) count too:
    /// hosts added are tracked whole, accounts removed are not followed,
    /// and repos of a host removed are followed only when tracked one by
    /// one. `whole_hosts` (the config) are tracked whatever was decided.
    pub fn start(&self, whole_hosts: &[String]) -> Result<()> {
        let tracking = self.inner.store.tracking()?;
        *lock(&self.inner.dropped) = tracking.dropped_accounts.iter().cloned().collect();
        lock(&self.inner.explicit).extend(tracking.accounts.iter().cloned());
        let config: HashSet<String> = whole_hosts.iter().map(|h| normalize_host(h)).collect();
        for host in whole_hosts.iter().chain(&tracking.hosts) {
            self.track_host(host);
        }
        let dropped_hosts: HashSet<String> = tracking
            .dropped_hosts
            .iter()
            .map(|h| normalize_host(h))
            .filter(|h| !config.contains(h))
            .collect();
        for (did, state) in self.inner.store.repos()? {
            if lock(&self.inner.dropped).contains(&did) {
                continue;
            }
            if dropped_hosts.contains(&normalize_host(&state.host))
                && !lock(&self.inner.explicit).contains(&did)
            {
                continue;
            }
            self.inner.follow(&state.host, &did, None);
        }
        Ok(())
    }

    /// The operator adds `host`, tracked whole from now on and at every
    /// start. `false` when it already was.
    pub fn add_host(&self, host: &str) -> Result<bool> {
        let host = normalize_host(host);
        self.inner.store.set_host_tracked(&host, true)?;
        let was = self.inner.lock_hosts().get(&host).is_some_and(|e| e.whole);
        self.track_host(&host);
        Ok(!was)
    }

    /// The operator removes `host`: no longer tracked whole, now or at the
    /// next start. Accounts tracked one by one there stay followed; the
    /// host's task stops when none is left. Returns whether it was
    /// tracked whole, and how many accounts stay followed there.
    pub async fn remove_host(&self, host: &str) -> Result<(bool, usize)> {
        let host = normalize_host(host);
        self.inner.store.set_host_tracked(&host, false)?;
        let explicit = lock(&self.inner.explicit).clone();
        let Some((was, kept, stop)) = self.inner.unwhole(&host, &explicit) else {
            return Ok((false, 0));
        };
        if let Some(entry) = stop {
            self.inner.stop_host(&host, entry).await;
        }
        Ok((was, kept))
    }

    /// The operator adds an account: tracked wherever it is hosted, now
    /// and at every start (see [`Mirror::track_account`]). Returns its
    /// PDS.
    pub async fn add_account(&self, did: &str) -> Result<String> {
        let pds = self.track_account(did).await?;
        self.inner.store.set_account_tracked(did, true)?;
        Ok(pds)
    }

    /// The operator removes an account: no longer followed, now or at the
    /// next start. Its backup is kept. Returns whether barn followed it.
    pub async fn remove_account(&self, did: &str) -> Result<bool> {
        let followed = self.follows(did);
        self.inner.store.set_account_tracked(did, false)?;
        lock(&self.inner.explicit).remove(did);
        lock(&self.inner.dropped).insert(did.to_owned());
        // Every task that may hold something of it lets go of it.
        let (waits, stop) = self.inner.forget_everywhere(did);
        for rx in waits {
            let _ = rx.await;
        }
        for (host, entry) in stop {
            self.inner.stop_host(&host, entry).await;
        }
        Ok(followed)
    }

    /// Removes everything barn holds of `did` (see
    /// [`Store::delete_account`]), after it stops being followed.
    pub async fn delete_account(&self, did: &str) -> Result<barn_store::DeleteReport> {
        self.remove_account(did).await?;
        let store = self.inner.store.clone();
        let did = did.to_owned();
        let report = tokio::task::spawn_blocking(move || store.delete_account(&did))
            .await
            .map_err(|e| Error::Task(e.to_string()))??;
        Ok(report)
    }

    /// Fetches `did` from the host barn follows it on now (an import
    /// since barn's head, or a full one), whatever the firehose said.
    /// Returns that host.
    pub async fn backup_account(&self, did: &str) -> Result<String> {
        let host = match self.inner.store.repo(did)? {
            Some(state) => normalize_host(&state.host),
            None => {
                let id = self.inner.resolver.refresh(did).await?;
                crate::import::pds_of(&id)?
            }
        };
        self.inner.follow(&host, did, Some("backup now".into()));
        Ok(host)
    }

    /// Accounts tracked one by one.
    pub fn tracked_accounts(&self) -> Vec<String> {
        let mut out: Vec<String> = lock(&self.inner.explicit).iter().cloned().collect();
        out.sort();
        out
    }

    /// Whether barn follows `did` now.
    pub fn follows(&self, did: &str) -> bool {
        if lock(&self.inner.dropped).contains(did) {
            return false;
        }
        let host = match self.inner.store.repo(did) {
            Ok(Some(state)) => normalize_host(&state.host),
            _ => return false,
        };
        self.inner
            .lock_hosts()
            .get(&host)
            .is_some_and(|e| e.whole || lock(&e.accounts).contains(did))
    }

    /// Tracks every repo of `host`. A host barn has never listed is
    /// backfilled (see [`MirrorConfig::backfill`]).
    pub fn track_host(&self, host: &str) {
        let host = normalize_host(host);
        let mut hosts = self.inner.lock_hosts();
        if let Some(entry) = hosts.get_mut(&host) {
            if !entry.whole {
                // Followed until now for some accounts only: list the rest.
                entry.whole = true;
                if self.inner.config.backfill {
                    let _ = entry
                        .control
                        .send(Control::StartPass(PassKind::Backfill, "backfill".into()));
                }
            }
            return;
        }
        let entry = self.inner.spawn_host(&host, true, None);
        hosts.insert(host, entry);
    }

    /// Tracks one account wherever it is hosted: resolves its PDS, follows
    /// that host for it, and imports the repo from there. It is followed
    /// when it migrates, like every repo barn holds.
    pub async fn track_account(&self, did: &str) -> Result<String> {
        let id = self.inner.resolver.refresh(did).await?;
        // An account followed again after a pause missed what happened
        // meanwhile: it is fetched (since barn's head).
        let resumed = lock(&self.inner.dropped).remove(did);
        lock(&self.inner.explicit).insert(did.to_owned());
        let pds = crate::import::pds_of(&id)?;
        // A repo barn already holds is followed where barn last saw it;
        // one it does not is imported from its PDS.
        match self.inner.store.repo(did)? {
            Some(state) => self.inner.follow(
                &state.host,
                did,
                resumed.then(|| "tracked again".to_owned()),
            ),
            None => self.inner.follow(&pds, did, Some("track account".into())),
        }
        Ok(pds)
    }

    /// Lists `host` again and reconciles every repo whose head differs
    /// from barn's (for a host tracked for some accounts only, imports each
    /// of them). `false` when barn does not follow the host.
    pub fn reconcile(&self, host: &str, reason: &str) -> bool {
        let hosts = self.inner.lock_hosts();
        match hosts.get(&normalize_host(host)) {
            Some(e) => e
                .control
                .send(Control::StartPass(PassKind::Sweep, reason.to_owned()))
                .is_ok(),
            None => false,
        }
    }

    /// Listing and import progress of every followed host.
    pub fn progress(&self) -> Vec<HostProgress> {
        let mut out: Vec<HostProgress> = self
            .inner
            .lock_hosts()
            .values()
            .map(|e| {
                let mut p = lock(&e.progress).clone();
                let g = self.inner.metrics.host(&p.host);
                p.seq = g.seq.get();
                p.lag_seq = g.lag_seq.get();
                p.lag_ms = (g.lag_seconds.get() * 1000.0) as u64;
                p.last_event_ms = (g.last_event.get() * 1000.0) as u64;
                p
            })
            .collect();
        out.sort_by(|a, b| a.host.cmp(&b.host));
        out
    }

    /// Tracks every repo of `host`, reading its event stream from `source`
    /// (binary `subscribeRepos` messages) instead of a websocket: replays
    /// of recorded streams, and benchmarks. The task ends when `source`
    /// closes; a host already tracked is left as it is.
    pub fn track_host_source(&self, host: &str, source: mpsc::Receiver<Bytes>) {
        let host = normalize_host(host);
        let mut hosts = self.inner.lock_hosts();
        if hosts.contains_key(&host) {
            return;
        }
        let entry = self.inner.spawn_host(&host, true, Some(source));
        hosts.insert(host, entry);
    }

    /// Notices of group commits becoming durable, for every host. A
    /// receiver that falls more than 1024 notices behind loses the oldest.
    pub fn subscribe_durable(&self) -> broadcast::Receiver<Durable> {
        self.inner.durable.subscribe()
    }

    /// Stops intake, flushes every host's group commit and cursor, and
    /// waits for the host tasks.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        let tasks: Vec<JoinHandle<()>> = self
            .inner
            .lock_hosts()
            .values_mut()
            .filter_map(|e| e.task.take())
            .collect();
        for task in tasks {
            let _ = task.await;
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.inner.store
    }

    /// Hosts with a running task.
    pub fn hosts(&self) -> Vec<String> {
        self.inner.lock_hosts().keys().cloned().collect()
    }
}

impl Inner {
    fn lock_hosts(&self) -> std::sync::MutexGuard<'_, HashMap<String, HostEntry>> {
        // A panic while holding this lock leaves the map itself intact.
        self.hosts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn spawn_host(
        self: &Arc<Self>,
        host: &str,
        whole: bool,
        source: Option<mpsc::Receiver<Bytes>>,
    ) -> HostEntry {
        let (tx, rx) = mpsc::unbounded_channel();
        let cancel = self.shutdown.child_token();
        let accounts = Arc::new(Mutex::new(HashSet::new()));
        let progress = Arc::new(Mutex::new(HostProgress {
            host: host.to_owned(),
            whole,
            ..HostProgress::default()
        }));
        let inner = self.clone();
        let link = HostLink {
            host: host.to_owned(),
            whole,
            accounts: accounts.clone(),
            me: tx.clone(),
            progress: progress.clone(),
            cancel: cancel.clone(),
        };
        let task = tokio::spawn(async move {
            let h = link.host.clone();
            if let Err(e) = run_host(inner.clone(), link, rx, source).await {
                inner.metrics.host_failed(&h, e.reason());
                tracing::error!(host = %h, error = %e, "host task stopped");
            }
        });
        HostEntry {
            whole,
            cancel,
            accounts,
            control: tx,
            progress,
            task: Some(task),
        }
    }

    /// Makes sure `host` has a task that follows `did`; with `adopt` (a
    /// reason), that task also imports it (the repo has just moved there,
    /// or was just added).
    fn follow(self: &Arc<Self>, host: &str, did: &str, adopt: Option<String>) {
        let host = normalize_host(host);
        let mut hosts = self.lock_hosts();
        let entry = match hosts.get_mut(&host) {
            Some(e) => e,
            None => {
                let e = self.spawn_host(&host, false, None);
                hosts.entry(host.clone()).or_insert(e)
            }
        };
        entry
            .accounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(did.to_owned());
        if let Some(reason) = adopt {
            let _ = entry.control.send(Control::Adopt(did.to_owned(), reason));
        }
    }

    fn tracks(&self, host: &str, accounts: &Mutex<HashSet<String>>, did: &str) -> bool {
        if lock(&self.dropped).contains(did) {
            return false;
        }
        let whole = self.lock_hosts().get(host).is_some_and(|e| e.whole);
        whole || lock(accounts).contains(did)
    }

    /// Tells every host task to let go of `did`, and takes out the host
    /// entries left with nothing to follow (for the caller to stop).
    #[allow(clippy::type_complexity)]
    fn forget_everywhere(
        &self,
        did: &str,
    ) -> (Vec<oneshot::Receiver<()>>, Vec<(String, HostEntry)>) {
        let mut hosts = self.lock_hosts();
        let mut waits = Vec::new();
        let mut stop = Vec::new();
        for (host, entry) in hosts.iter() {
            lock(&entry.accounts).remove(did);
            let (tx, rx) = oneshot::channel();
            if entry
                .control
                .send(Control::Forget(did.to_owned(), tx))
                .is_ok()
            {
                waits.push(rx);
            }
            if !entry.whole && lock(&entry.accounts).is_empty() {
                stop.push(host.clone());
            }
        }
        let stop = stop
            .into_iter()
            .filter_map(|h| hosts.remove(&h).map(|e| (h, e)))
            .collect();
        (waits, stop)
    }

    /// Takes host `host` out of the map when it is left with nothing to
    /// follow: not whole, and only `explicit` accounts kept. Returns
    /// whether it was whole, how many accounts it keeps, and the entry
    /// to stop.
    fn unwhole(
        &self,
        host: &str,
        explicit: &HashSet<String>,
    ) -> Option<(bool, usize, Option<HostEntry>)> {
        let mut hosts = self.lock_hosts();
        let entry = hosts.get_mut(host)?;
        let was = entry.whole;
        entry.whole = false;
        let kept = {
            let mut accounts = lock(&entry.accounts);
            accounts.retain(|d| explicit.contains(d));
            accounts.len()
        };
        lock(&entry.progress).whole = false;
        let stop = if kept == 0 { hosts.remove(host) } else { None };
        Some((was, kept, stop))
    }

    /// Stops one host's task (its pending batch is flushed with its
    /// cursor, as at shutdown) and drops its gauges.
    async fn stop_host(&self, host: &str, mut entry: HostEntry) {
        entry.cancel.cancel();
        if let Some(task) = entry.task.take() {
            let _ = task.await;
        }
        self.metrics.forget_host(host);
        tracing::info!(%host, "host no longer followed");
    }
}

// ---------------------------------------------------------------------------
// host task

struct Pending {
    batch: Batch,
    overlay: HashMap<String, RepoState>,
    cursor: Option<i64>,
    cursor_dirty: bool,
    first_at: Option<Instant>,
    /// Frame-received times of the revisions in the batch, for latency.
    received: Vec<Instant>,
    /// Repos whose host changed in this batch: (did, new host).
    moves: Vec<(String, String)>,
    /// The byte budget of the frames whose effects are in the batch:
    /// released only once the batch is durable, so the subscription's
    /// budget bounds every frame received but not yet durable.
    permits: Vec<BytePermit>,
    /// Block bytes in the batch.
    bytes: usize,
    /// The host's `time` of the last commit event in the batch.
    event_time: Option<String>,
}

impl Pending {
    fn new(cursor: Option<i64>) -> Pending {
        Pending {
            batch: Batch::new(),
            overlay: HashMap::new(),
            cursor,
            cursor_dirty: false,
            first_at: None,
            received: Vec::new(),
            moves: Vec::new(),
            permits: Vec::new(),
            bytes: 0,
            event_time: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.batch.is_empty() && !self.cursor_dirty
    }

    fn set_repo(&mut self, did: &str, state: RepoState) {
        self.batch.set_repo(did, state.clone());
        self.overlay.insert(did.to_owned(), state);
        self.first_at.get_or_insert_with(Instant::now);
    }

    fn put_block(&mut self, cid: cid::Cid, data: Bytes) {
        self.bytes += data.len();
        self.batch.put_block(cid, data);
    }
}

/// What a host task is to one DID.
// Returned and matched at once; boxing would allocate for every event.
#[allow(clippy::large_enum_variant)]
enum Local {
    /// Not followed by this task.
    Untracked,
    /// Followed, but barn holds it on another host.
    Elsewhere,
    /// This task's: its state, and whether barn holds anything of it.
    Here(RepoState, bool),
}

/// A group commit being written.
struct Writing {
    task: JoinHandle<barn_store::Result<()>>,
    /// The repo states it writes, still visible to the checks of later
    /// commits until it is durable.
    overlay: HashMap<String, RepoState>,
    received: Vec<Instant>,
    moves: Vec<(String, String)>,
    permits: Vec<BytePermit>,
    revisions: usize,
    cursor: Option<i64>,
    started: Instant,
    event_time: Option<String>,
}

/// A `#commit` on its way through verification.
struct Checking {
    input: Arc<CommitInput>,
    seq: i64,
    /// Host authority, looked up at intake: `None` when the DID did not
    /// resolve.
    authority: Option<(bool, Arc<Identity>)>,
    /// The verification job; `None` when there was nothing to verify (not
    /// this host's, or stale at intake).
    job: Option<tokio::sync::oneshot::Receiver<std::result::Result<Verified, Rejection>>>,
}

/// A frame in stream order, with what verification found.
struct Ready {
    frame: Frame,
    received: Instant,
    permit: BytePermit,
    checked: Option<Checked>,
}

struct Checked {
    input: Arc<CommitInput>,
    authority: Option<(bool, Arc<Identity>)>,
    /// `None`: not verified (see [`Checking::job`]).
    result: Option<std::result::Result<Verified, Rejection>>,
}

type InFlight = FuturesOrdered<futures_util::future::BoxFuture<'static, Ready>>;

/// What a host task is given about itself.
struct HostLink {
    host: String,
    whole: bool,
    accounts: Arc<Mutex<HashSet<String>>>,
    /// The task's own control channel: imports and the lister report here.
    me: mpsc::UnboundedSender<Control>,
    progress: Arc<Mutex<HostProgress>>,
    /// This host's stop signal (a child of the mirror's).
    cancel: CancellationToken,
}

/// A repo being imported, and what the stream brought meanwhile.
struct Importing {
    source: Source,
    reason: String,
    /// Commits received during the import, in stream order.
    buffer: Vec<(i64, Checked, Instant)>,
    bytes: usize,
    /// Commits were dropped (buffer full): import again after.
    overflowed: bool,
    /// Import again after this one, for this reason.
    again: Option<(Source, String)>,
    /// An `#account` event came during the import: its status stands.
    account_event: bool,
}

/// A listed head newer than barn's: checked again after the grace period.
struct Suspect {
    rev: String,
    head: cid::Cid,
    reason: String,
    at: Instant,
}

struct HostTask {
    inner: Arc<Inner>,
    host: String,
    link: HostLink,
    pending: Pending,
    writing: Option<Writing>,
    resyncs: VecDeque<(String, Source, String)>,
    last_resync: HashMap<String, Instant>,
    /// Resyncs put off: asked for within `resync_retry` of the repo's
    /// last one, or failed. Each runs when its time comes, whether or not
    /// another event for the repo arrives.
    deferred: HashMap<String, (Source, String, Instant)>,
    importing: HashMap<String, Importing>,
    imports: JoinSet<()>,
    /// Bytes buffered over all of `importing`.
    buffered_bytes: usize,
    imports_done: u64,
    imports_failed: u64,
    /// The listing pass under way (saved with every batch).
    list: Option<ListPass>,
    last_pass_done_ms: Option<u64>,
    lister: Option<(JoinHandle<()>, CancellationToken)>,
    /// A pass asked for while one was running.
    next_pass: Option<(PassKind, String)>,
    suspects: HashMap<String, Suspect>,
    /// Hashes of the DIDs the listing pass under way has shown, to find
    /// the repos it no longer shows when it ends. `None` for a pass
    /// resumed after a restart (what its first pages showed is gone).
    seen: Option<HashSet<u64>>,
    /// Repos being asked about one by one (see [`crate::checks`]).
    checks: JoinSet<()>,
    /// Imports queued or running, for the lister's back-pressure.
    queued: Arc<AtomicUsize>,
    started_ms: u64,
    /// When the next periodic pass is due (see [`HostTask::plan_sweep`]).
    sweep_at: Option<Instant>,
    /// Something [`HostTask::report`] publishes changed.
    changed: bool,
    last_progress_log: Instant,
    /// Untracked repos whose import is still running, with who waits.
    forgetting: HashMap<String, Vec<oneshot::Sender<()>>>,
    gauges: crate::metrics::HostGauges,
}

async fn run_host(
    inner: Arc<Inner>,
    link: HostLink,
    mut control: mpsc::UnboundedReceiver<Control>,
    source: Option<mpsc::Receiver<Bytes>>,
) -> Result<()> {
    let host = link.host.clone();
    let stored = inner.store.host(&host)?;
    // A host state can be durable before any event is (a listing pass
    // writes its progress): no cursor yet is still "new", not "live".
    let cursor = stored
        .as_ref()
        .and_then(|h| h.cursor)
        .or(inner.config.new_host_cursor);
    let mut cfg = SubscribeConfig::new(host.clone());
    cfg.cursor = cursor;
    cfg.max_frame_bytes = inner.config.max_frame_bytes;
    cfg.queue_bytes = inner.config.queue_bytes;
    cfg.watchdog = inner.config.watchdog;
    cfg.backoff_min = inner.config.backoff_min;
    cfg.metrics = inner.metrics.firehose.clone();
    let shutdown = link.cancel.clone();
    // A replay has no host to list.
    let replay = source.is_some();
    let (mut sub, sub_task) = match source {
        Some(source) => subscribe_source(cfg, source, shutdown.clone()),
        None => subscribe(cfg, shutdown.clone()),
    };
    tracing::info!(%host, ?cursor, "following host");

    let mut task = HostTask {
        inner: inner.clone(),
        host: host.clone(),
        pending: Pending::new(stored.as_ref().and_then(|h| h.cursor)),
        writing: None,
        resyncs: VecDeque::new(),
        last_resync: HashMap::new(),
        deferred: HashMap::new(),
        importing: HashMap::new(),
        imports: JoinSet::new(),
        buffered_bytes: 0,
        imports_done: 0,
        imports_failed: 0,
        list: None,
        last_pass_done_ms: stored.as_ref().and_then(|h| h.last_pass_done_ms),
        lister: None,
        next_pass: None,
        suspects: HashMap::new(),
        seen: None,
        checks: JoinSet::new(),
        queued: Arc::new(AtomicUsize::new(0)),
        started_ms: now_ms(),
        sweep_at: None,
        changed: true,
        last_progress_log: Instant::now(),
        forgetting: HashMap::new(),
        gauges: inner.metrics.host(&host),
        link,
    };
    if let Some(c) = stored.as_ref().and_then(|h| h.cursor) {
        task.gauges.cursor.set(c);
    }
    // Repos left desynchronized (by a failed check, or a crash before
    // their import finished) are imported first.
    for (did, state) in inner.store.repos()? {
        if normalize_host(&state.host) == host && state.sync == SyncState::Desynchronized {
            let reason = state.sync_reason.clone().unwrap_or_default();
            task.resyncs.push_back((did, source_for(&reason), reason));
        }
    }
    // A pass cut short by a restart resumes after its last durable page;
    // a whole host never seen before is backfilled.
    match stored.as_ref().and_then(|h| h.list.clone()) {
        Some(pass) => {
            tracing::info!(%host, kind = ?pass.kind, reason = %pass.reason, cursor = ?pass.cursor, listed = pass.listed, "resuming listRepos pass");
            let cursor = pass.cursor.clone();
            task.list = Some(pass);
            task.spawn_lister(cursor);
        }
        None if stored.is_none() && task.link.whole && inner.config.backfill && !replay => {
            task.start_pass(PassKind::Backfill, "backfill".into());
        }
        None => {}
    }
    task.plan_sweep();

    // The pipeline: frames enter `in_flight` in stream order, commits are
    // verified on the pool meanwhile, and come out in the same order to be
    // checked against the head and applied to the pending batch; the
    // pending batch is written while the next one fills.
    let mut in_flight: InFlight = FuturesOrdered::new();
    let depth = inner.config.pipeline_depth.max(1);
    let delay = inner.config.group_commit_delay;
    let mut source_done = false;
    loop {
        let retry_at = task.next_retry();
        let retry = async move {
            match retry_at {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        let sweep_at = task.sweep_at;
        let sweep = async move {
            match sweep_at {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        // A full batch waits for the write under way before taking more.
        let full = task.pending.batch.revisions() >= inner.config.group_commit_max
            || task.pending.bytes >= inner.config.group_commit_bytes;
        let blocked = full && task.writing.is_some();
        let can_write = task.writing.is_none() && !task.pending.is_empty();
        let due = task.pending.first_at.is_some_and(|t| t.elapsed() >= delay);
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            r = wait_write(&mut task.writing), if task.writing.is_some() => {
                task.finish_write(r)?;
            }
            _ = async {}, if can_write && (full || due) => {
                task.start_write();
            }
            ready = in_flight.next(), if !in_flight.is_empty() && !blocked => {
                if let Some(ready) = ready {
                    task.complete(ready).await?;
                }
            }
            d = sub.recv(), if !source_done && in_flight.len() < depth && !blocked => {
                match d {
                    Some(d) => task.intake(d, &mut in_flight).await?,
                    None => source_done = true,
                }
            }
            c = control.recv() => { if let Some(c) = c { task.control(c).await? } }
            _ = retry => task.promote_due()?,
            _ = sweep => task.start_pass(PassKind::Sweep, "periodic".into()),
            // Nothing else is ready and the disk is free: write now.
            _ = async {}, if can_write => task.start_write(),
        }
        if source_done
            && in_flight.is_empty()
            && task.pending.is_empty()
            && task.writing.is_none()
            && task.importing.is_empty()
            && task.resyncs.is_empty()
            && task.list.is_none()
        {
            // A finite source (a replay) is fully applied.
            break;
        }
        task.start_imports().await?;
        if task.changed {
            task.report();
        }
    }
    // Graceful stop: what was verified becomes durable with its cursor.
    // Frames still being verified are not covered by the cursor; they
    // come again after a restart. Imports under way are dropped: their
    // repos are durably desynchronized and imported after a restart.
    drop(in_flight);
    if let Some((lister, cancel)) = task.lister.take() {
        cancel.cancel();
        let _ = lister.await;
    }
    task.imports.shutdown().await;
    task.checks.shutdown().await;
    task.flush().await?;
    shutdown.cancel();
    let _ = sub_task.await;
    tracing::info!(%host, cursor = ?task.pending.cursor, "stopped following host");
    Ok(())
}

impl HostTask {
    async fn control(&mut self, c: Control) -> Result<()> {
        self.changed = true;
        match c {
            Control::Adopt(did, reason) => {
                if let Local::Here(state, false) = self.local(&did)? {
                    // Remembered from now on, even before its import ends.
                    self.pending.set_repo(&did, state);
                }
                self.queue_resync(&did, Source::Resync, &reason);
            }
            Control::Imported { did, result } => self.imported(did, result).await?,
            Control::Listed { page, ack } => {
                self.listed(page)?;
                let _ = ack.send(());
            }
            Control::ListDone => self.list_done(),
            Control::StartPass(kind, reason) => self.start_pass(kind, reason),
            Control::Checked {
                did,
                answer,
                reason,
            } => self.checked(&did, answer, &reason).await?,
            Control::Forget(did, done) => {
                self.resyncs.retain(|(d, _, _)| *d != did);
                self.deferred.remove(&did);
                self.suspects.remove(&did);
                // What was applied before is written now; nothing new
                // comes (`tracks` says no). An import under way answers
                // when it ends.
                self.flush().await?;
                if self.importing.contains_key(&did) {
                    self.forgetting.entry(did).or_default().push(done);
                } else {
                    let _ = done.send(());
                }
            }
        }
        Ok(())
    }

    /// Takes one delivery from the subscription: frames join the ordered
    /// pipeline (a tracked commit with its verification started), the
    /// rest is logged at once.
    async fn intake(&mut self, delivery: Delivery, in_flight: &mut InFlight) -> Result<()> {
        match delivery {
            Delivery::Frame { frame, permit, .. } => {
                let received = Instant::now();
                if let Some(seq) = frame.seq {
                    self.gauges.seq.set(seq);
                    let durable = self.gauges.cursor.get();
                    self.gauges.lag_seq.set((seq - durable).max(0));
                }
                self.gauges.last_event.set(unix_seconds());
                let checking = match &frame.event {
                    Event::Commit(ev) => self.start_check(ev).await?,
                    _ => None,
                };
                in_flight.push_back(Box::pin(async move {
                    let checked = match checking {
                        None => None,
                        Some(c) => {
                            let result = match c.job {
                                None => None,
                                Some(job) => Some(job.await.unwrap_or_else(|_| {
                                    Err(Rejection {
                                        reason: "verifier_panicked",
                                        detail: format!("verifying seq {} panicked", c.seq),
                                        disposition: Disposition::Desync,
                                    })
                                })),
                            };
                            Some(Checked {
                                input: c.input,
                                authority: c.authority,
                                result,
                            })
                        }
                    };
                    Ready {
                        frame,
                        received,
                        permit,
                        checked,
                    }
                }));
            }
            Delivery::Connected { cursor } => {
                tracing::info!(host = %self.host, ?cursor, "connected")
            }
            Delivery::Disconnected { reason } => {
                tracing::warn!(host = %self.host, %reason, "disconnected; reconnecting")
            }
            Delivery::Rejected { reason, detail, .. } => {
                self.inner.metrics.rejected(&self.host, reason);
                tracing::warn!(host = %self.host, reason, %detail, "frame rejected");
            }
            Delivery::Gap { after, next } => {
                tracing::debug!(host = %self.host, after, next, "sequence gap")
            }
        }
        Ok(())
    }

    /// For a commit of a tracked repo: looks up host authority and, when
    /// this host holds the repo and the rev is new, starts verifying the
    /// commit on the pool. Everything that depends on barn's head is
    /// decided later, in stream order.
    async fn start_check(&mut self, ev: &CommitEvent) -> Result<Option<Checking>> {
        if !self.tracks(&ev.repo) {
            return Ok(None);
        }
        let input = Arc::new(CommitInput::from(ev));
        let authority = self.authority(&ev.repo).await?;
        let mut job = None;
        if let Some((true, id)) = &authority {
            let head = self.state(&ev.repo)?.as_ref().and_then(head_of);
            if check_stale(&input, head.as_ref()).is_ok() {
                let input = input.clone();
                let key = id.signing_key.clone();
                let now = now_ms().saturating_mul(1000);
                job = Some(
                    self.inner
                        .pool
                        .run(move || prepare_commit(&input, &key, now)),
                );
            }
        }
        Ok(Some(Checking {
            input,
            seq: ev.seq,
            authority,
            job,
        }))
    }

    /// Applies the next frame in stream order.
    async fn complete(&mut self, ready: Ready) -> Result<()> {
        let Ready {
            frame,
            received,
            permit,
            checked,
        } = ready;
        let seq = frame.seq;
        self.inner.metrics.event(&self.host, frame.event.label());
        match frame.event {
            Event::Commit(ev) => {
                if let Some(checked) = checked {
                    self.commit(ev.seq, checked, received).await?
                }
                self.pending.event_time = Some(ev.time);
            }
            Event::Sync(ev) => self.sync(ev).await?,
            Event::Identity(ev) => self.identity(ev).await?,
            Event::Account(ev) => self.account(ev).await?,
            Event::Info(info) => {
                tracing::warn!(host = %self.host, name = %info.name, message = ?info.message, "info from host");
                if info.name == "OutdatedCursor" {
                    // Events were lost between barn's cursor and the
                    // oldest the host still has: compare every head.
                    self.inner.metrics.reconcile(&self.host, "outdated_cursor");
                    self.start_pass(PassKind::Sweep, "OutdatedCursor".into());
                }
            }
            Event::Error(err) => {
                tracing::warn!(host = %self.host, error = %err.error, message = ?err.message, "error frame from host");
                if err.error == "FutureCursor" {
                    // The host's sequence was reset: barn's cursor means
                    // nothing there any more (the subscription reconnects
                    // live), and whatever happened meanwhile is unknown.
                    self.inner.metrics.reconcile(&self.host, "future_cursor");
                    self.pending.cursor = None;
                    self.pending.cursor_dirty = true;
                    self.pending.first_at.get_or_insert_with(Instant::now);
                    self.start_pass(PassKind::Sweep, "FutureCursor".into());
                }
            }
            Event::Unknown { kind } => {
                tracing::debug!(host = %self.host, %kind, "unknown event type")
            }
        }
        if let Some(seq) = seq
            && self.pending.cursor.is_none_or(|c| seq > c)
        {
            self.pending.cursor = Some(seq);
            self.pending.cursor_dirty = true;
            self.pending.first_at.get_or_insert_with(Instant::now);
        }
        self.pending.permits.push(permit);
        Ok(())
    }

    fn tracks(&self, did: &str) -> bool {
        self.inner.tracks(&self.host, &self.link.accounts, did)
    }

    /// Whether this task answers for `did`, and if so its state (a new
    /// one when barn holds nothing of it) and whether barn holds it.
    fn local(&self, did: &str) -> Result<Local> {
        if !self.tracks(did) {
            return Ok(Local::Untracked);
        }
        let stored = self.state(did)?;
        let known = stored.is_some();
        let state = stored.unwrap_or_else(|| RepoState::new(&self.host));
        if normalize_host(&state.host) != self.host {
            return Ok(Local::Elsewhere);
        }
        Ok(Local::Here(state, known))
    }

    /// The repo's state as the next commit must see it: the pending
    /// batch, then the batch being written, then the store.
    fn state(&self, did: &str) -> Result<Option<RepoState>> {
        if let Some(s) = self.pending.overlay.get(did) {
            return Ok(Some(s.clone()));
        }
        if let Some(s) = self.writing.as_ref().and_then(|w| w.overlay.get(did)) {
            return Ok(Some(s.clone()));
        }
        Ok(self.inner.store.repo(did)?)
    }

    fn reject(&self, did: &str, r: &Rejection) {
        self.inner.metrics.verify_failed(&self.host, r.reason);
        match r.disposition {
            Disposition::Ignore => {
                tracing::debug!(host = %self.host, %did, reason = r.reason, detail = %r.detail, "event ignored")
            }
            _ => {
                tracing::warn!(host = %self.host, %did, reason = r.reason, detail = %r.detail, "commit rejected")
            }
        }
    }

    /// Host authority: is this host the DID's PDS? Re-resolves once before
    /// saying no. `Ok(None)` when the DID cannot be resolved.
    async fn authority(&mut self, did: &str) -> Result<Option<(bool, Arc<Identity>)>> {
        let resolver = &self.inner.resolver;
        let id = match resolver.resolve(did).await {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(host = %self.host, %did, error = %e, "cannot resolve DID");
                return Ok(None);
            }
        };
        if id.pds.as_deref().map(normalize_host).as_deref() == Some(self.host.as_str()) {
            return Ok(Some((true, id)));
        }
        let id = match resolver.refresh(did).await {
            Ok(id) => id,
            Err(_) => return Ok(Some((false, id))),
        };
        let here = id.pds.as_deref().map(normalize_host).as_deref() == Some(self.host.as_str());
        Ok(Some((here, id)))
    }

    /// An event about a DID whose document names another host: a repo barn
    /// holds is handed over (it moved); any other DID is not this host's
    /// to announce, so nothing is stored or followed for it.
    fn not_here(&mut self, did: &str, id: &Identity, state: RepoState, known: bool) {
        if known {
            self.moved(did, id, state);
        } else {
            self.inner.metrics.verify_failed(&self.host, "wrong_host");
            tracing::warn!(host = %self.host, %did, pds = ?id.pds, "event for a DID hosted elsewhere ignored");
        }
    }

    /// The DID document names another host: hand the repo over.
    fn moved(&mut self, did: &str, id: &Identity, mut state: RepoState) {
        let Some(pds) = id.pds.as_deref().map(normalize_host) else {
            return;
        };
        if normalize_host(&state.host) != self.host {
            return;
        }
        tracing::info!(%did, from = %self.host, to = %pds, "account moved; following it");
        self.inner.metrics.moved(&self.host);
        state.host = pds.clone();
        self.pending.set_repo(did, state);
        // Blobs the old host no longer gives are asked of the new one.
        self.pending.batch.retry_blobs_of(did);
        self.pending.moves.push((did.to_owned(), pds));
    }

    fn desync(&mut self, did: &str, mut state: RepoState, reason: &str, source: Source) {
        state.sync = SyncState::Desynchronized;
        state.sync_reason = Some(reason.to_owned());
        self.pending.set_repo(did, state);
        self.queue_resync(did, source, reason);
    }

    fn queue_resync(&mut self, did: &str, source: Source, reason: &str) {
        self.changed = true;
        if let Some(imp) = self.importing.get_mut(did) {
            imp.again.get_or_insert((source, reason.to_owned()));
            return;
        }
        if self.resyncs.iter().any(|(d, _, _)| d == did) {
            return;
        }
        if let Some(t) = self.last_resync.get(did)
            && t.elapsed() < self.inner.config.resync_retry
        {
            // Too soon after the last one; but never dropped, or a repo
            // desynchronized now would wait for an event that may not come.
            let at = *t + self.inner.config.resync_retry;
            self.deferred
                .entry(did.to_owned())
                .or_insert_with(|| (source, reason.to_owned(), at));
            return;
        }
        self.deferred.remove(did);
        self.resyncs
            .push_back((did.to_owned(), source, reason.to_owned()));
    }

    /// When the earliest deferred resync is due.
    fn next_retry(&self) -> Option<Instant> {
        let deferred = self.deferred.values().map(|(_, _, at)| *at);
        deferred.chain(self.suspects.values().map(|s| s.at)).min()
    }

    /// Queues the deferred resyncs whose time has come, and the suspects
    /// the firehose did not explain.
    fn promote_due(&mut self) -> Result<()> {
        let now = Instant::now();
        let due: Vec<String> = self
            .deferred
            .iter()
            .filter(|(_, (_, _, at))| *at <= now)
            .map(|(did, _)| did.clone())
            .collect();
        for did in due {
            if let Some((source, reason, _)) = self.deferred.remove(&did)
                && !self.resyncs.iter().any(|(d, _, _)| *d == did)
            {
                self.resyncs.push_back((did, source, reason));
            }
        }
        self.check_suspects()
    }

    /// A tracked `#commit`, in stream order, with what intake and the
    /// pool found.
    async fn commit(&mut self, seq: i64, checked: Checked, received: Instant) -> Result<()> {
        let Checked {
            input,
            authority,
            result,
        } = checked;
        let did = input.repo.clone();
        let (state, known) = match self.local(&did)? {
            Local::Here(state, known) => (state, known),
            Local::Untracked => return Ok(()),
            Local::Elsewhere => {
                self.inner.metrics.verify_failed(&self.host, "wrong_host");
                return Ok(());
            }
        };
        if let Some(imp) = self.importing.get_mut(&did) {
            // Applied on the imported head once the import is done.
            let size = input.blocks.len();
            let limits = &self.inner.config;
            if imp.overflowed {
                return Ok(());
            }
            if imp.bytes + size > limits.repo_buffer_bytes
                || self.buffered_bytes + size > limits.buffer_bytes
            {
                self.buffered_bytes -= imp.bytes;
                imp.buffer = Vec::new();
                imp.bytes = 0;
                imp.overflowed = true;
                imp.again.get_or_insert_with(|| {
                    (
                        Source::Resync,
                        "commits buffered during an import overflowed".into(),
                    )
                });
                self.inner.metrics.reconcile(&self.host, "buffer_overflow");
                tracing::warn!(host = %self.host, %did, "buffer full while importing; dropping its commits and importing again after");
                return Ok(());
            }
            imp.bytes += size;
            self.buffered_bytes += size;
            imp.buffer.push((
                seq,
                Checked {
                    input,
                    authority,
                    result,
                },
                received,
            ));
            self.inner.metrics.reconcile(&self.host, "buffered");
            return Ok(());
        }
        let head = head_of(&state);
        if state.sync == SyncState::Desynchronized && head.is_some() {
            // Waiting for a resync; it will bring this commit's content.
            self.inner
                .metrics
                .verify_failed(&self.host, "desynchronized");
            let reason = state.sync_reason.clone().unwrap_or_default();
            self.queue_resync(&did, Source::Resync, &reason);
            return Ok(());
        }
        let Some((here, id)) = authority else {
            self.desync(&did, state, "identity_unavailable", Source::Resync);
            return Ok(());
        };
        if !here {
            self.inner.metrics.verify_failed(&self.host, "wrong_host");
            if known {
                self.moved(&did, &id, state);
            }
            return Ok(());
        }
        let now = now_ms().saturating_mul(1000);
        let mut result = match result {
            Some(Ok(v)) => check_head(&input, head.as_ref(), &v).map(|()| v),
            Some(Err(r)) => Err(r),
            // Stale at intake (the head only moves forward, so it still is),
            // or, should it not be, verified here in full.
            None => verify_commit(&input, &id.signing_key, head.as_ref(), now),
        };
        if let Err(r) = &result
            && r.disposition == Disposition::RetryWithFreshKey
        {
            self.reject(&did, r);
            match self.inner.resolver.refresh(&did).await {
                Ok(fresh) => result = verify_commit(&input, &fresh.signing_key, head.as_ref(), now),
                Err(e) => tracing::warn!(%did, error = %e, "key refresh failed"),
            }
        }
        let verified = match result {
            Ok(v) => v,
            Err(r) => {
                self.reject(&did, &r);
                if r.disposition != Disposition::Ignore {
                    self.desync(&did, state, r.reason, Source::Resync);
                }
                return Ok(());
            }
        };

        // Apply into the pending batch.
        for (cid, data) in verified.blocks.iter() {
            self.pending.put_block(*cid, data.clone());
        }
        for op in &input.ops {
            self.pending.batch.set_record(&did, &op.path, op.cid);
        }
        // Queued with the commit, in the same batch: see barn-store's blobs.
        for r in &verified.blob_refs {
            self.pending.batch.add_blob_ref(&did, r.cid, blob_hint(r));
        }
        if !verified.unreadable.is_empty() {
            for (cid, error) in &verified.unreadable {
                tracing::warn!(%did, %cid, %error, "record stored, but its blob refs are unreadable");
            }
            self.inner
                .metrics
                .unreadable_records(&self.host, verified.unreadable.len() as u64);
        }
        self.pending.batch.put_revision(
            &did,
            CommitEntry {
                rev: input.rev.clone(),
                cid: input.commit,
                data: verified.commit.data,
                since: input.since.clone(),
                seen_at_ms: now_ms(),
                source: Source::Firehose,
                seq: Some(seq),
                host: self.host.clone(),
                ops: input.ops.clone(),
                reason: None,
                chunked: None,
            },
        );
        let mut state = state;
        state.advance(input.commit, input.rev.clone(), verified.commit.data);
        if state.handle.is_none() {
            // A repo first seen on the stream: its `#identity` came before
            // barn held it. The document just used is as good a source
            // (and lets handles find the account once its host is gone).
            state.handle = id.handle.clone();
        }
        self.pending.set_repo(&did, state);
        self.pending.received.push(received);
        self.inner.metrics.applied(&self.host);
        Ok(())
    }

    async fn sync(&mut self, ev: SyncEvent) -> Result<()> {
        let did = ev.did.clone();
        let Local::Here(state, known) = self.local(&did)? else {
            return Ok(());
        };
        if state.rev.as_deref().is_some_and(|r| ev.rev.as_str() <= r) {
            self.inner
                .metrics
                .verify_failed(&self.host, "sync_not_newer");
            return Ok(());
        }
        let Some((here, id)) = self.authority(&did).await? else {
            self.desync(&did, state, "identity_unavailable", Source::Sync);
            return Ok(());
        };
        if !here {
            self.not_here(&did, &id, state, known);
            return Ok(());
        }
        // The event carries the signed commit; check it before acting on it.
        let reject = |reason: &'static str| {
            self.inner.metrics.verify_failed(&self.host, reason);
            tracing::warn!(host = %self.host, %did, reason, "#sync rejected");
        };
        let (commit_cid, commit, blocks) = match check_sync_commit(&ev) {
            Ok(c) => c,
            Err(reason) => {
                reject(reason);
                return Ok(());
            }
        };
        if commit.rev != ev.rev {
            // The reference PDS does this on every account activated after
            // a migration: the event names the repo root's new rev, the
            // block is the imported commit with its old rev (and the old
            // host's signature, so barn must not check it when it brings
            // nothing new). The signed commit is what counts.
            self.inner
                .metrics
                .verify_failed(&self.host, "sync_rev_mismatch");
            tracing::debug!(host = %self.host, %did, event_rev = %ev.rev, commit_rev = %commit.rev, "#sync rev differs from its commit's");
            if state
                .rev
                .as_deref()
                .is_some_and(|r| commit.rev.as_str() <= r)
            {
                self.inner
                    .metrics
                    .verify_failed(&self.host, "sync_not_newer");
                return Ok(());
            }
        }
        if commit.verify_signature(&id.signing_key).is_err() {
            reject("bad_signature");
            return Ok(());
        }
        if let Some(imp) = self.importing.get_mut(&did) {
            // The import may have fetched the state before or after the
            // reset: fetch again once it ends.
            imp.again = Some((Source::Sync, "sync event".into()));
            return Ok(());
        }
        if commit.data != crate::verify::empty_root() {
            self.desync(&did, state, "sync event", Source::Sync);
            return Ok(());
        }
        // An empty repo (a new account announces its genesis this way): the
        // commit is the whole state, nothing to fetch.
        // The record index to clear is the stored one plus what the pending
        // batch changed: make the pending batch durable first.
        self.flush().await?;
        let mut state = state;
        let current = self.inner.store.records(&did)?;
        let mut ops = Vec::new();
        for (path, cid) in current {
            self.pending.batch.set_record(&did, &path, None);
            ops.push(Op {
                action: OpAction::Delete,
                path,
                cid: None,
                prev: Some(cid),
            });
        }
        for (cid, data) in blocks.iter() {
            self.pending.batch.put_block(*cid, data.clone());
        }
        self.pending
            .batch
            .put_block(commit.data, Bytes::from(crate::verify::empty_node_bytes()));
        self.pending.batch.put_revision(
            &did,
            CommitEntry {
                rev: commit.rev.clone(),
                cid: commit_cid,
                data: commit.data,
                since: state.rev.clone(),
                seen_at_ms: now_ms(),
                source: Source::Sync,
                seq: Some(ev.seq),
                host: self.host.clone(),
                ops,
                reason: Some("sync event (empty repo)".into()),
                chunked: None,
            },
        );
        state.advance(commit_cid, commit.rev.clone(), commit.data);
        self.pending.set_repo(&did, state);
        self.inner.metrics.applied(&self.host);
        Ok(())
    }

    async fn identity(&mut self, ev: IdentityEvent) -> Result<()> {
        let did = ev.did.clone();
        if !self.tracks(&did) {
            return Ok(());
        }
        let _ = self.inner.resolver.refresh(&did).await;
        let Some(state) = self.state(&did)? else {
            return Ok(());
        };
        if normalize_host(&state.host) != self.host {
            return Ok(());
        }
        match self.authority(&did).await? {
            Some((false, id)) => self.moved(&did, &id, state),
            Some((true, id)) => {
                let mut state = state;
                state.handle = ev.handle.clone().or_else(|| id.handle.clone());
                self.pending.set_repo(&did, state);
            }
            None => {}
        }
        Ok(())
    }

    async fn account(&mut self, ev: AccountEvent) -> Result<()> {
        let did = ev.did.clone();
        let Local::Here(state, known) = self.local(&did)? else {
            return Ok(());
        };
        // An account going inactive may be migrating away: look again.
        if !ev.active {
            let _ = self.inner.resolver.refresh(&did).await;
        }
        // A deleted account may no longer resolve; this host was its host
        // as far as barn knows, so its word stands then.
        if let Some((false, id)) = self.authority(&did).await? {
            self.not_here(&did, &id, state, known);
            return Ok(());
        }
        let mut state = state;
        if ev.active && !state.active {
            // Back: blobs it could not give while inactive, now.
            self.pending.batch.retry_blobs_of(&did);
        }
        state.active = ev.active;
        state.status = if ev.active { None } else { ev.status.clone() };
        self.pending.set_repo(&did, state);
        if let Some(imp) = self.importing.get_mut(&did) {
            imp.account_event = true;
        }
        Ok(())
    }

    /// Starts writing the pending batch, with the cursor (the caller
    /// makes sure no write is under way).
    fn start_write(&mut self) {
        if self.pending.is_empty() || self.writing.is_some() {
            return;
        }
        let cursor = self.pending.cursor;
        let pending = std::mem::replace(&mut self.pending, Pending::new(cursor));
        let mut batch = pending.batch;
        batch.set_host(
            &self.host,
            HostState {
                cursor: pending.cursor,
                last_event_ms: now_ms(),
                list: self.list.clone(),
                last_pass_done_ms: self.last_pass_done_ms,
            },
        );
        let revisions = batch.revisions();
        let store = self.inner.store.clone();
        let task = tokio::task::spawn_blocking(move || store.write(batch));
        self.writing = Some(Writing {
            task,
            overlay: pending.overlay,
            received: pending.received,
            moves: pending.moves,
            permits: pending.permits,
            revisions,
            cursor: pending.cursor,
            started: Instant::now(),
            event_time: pending.event_time,
        });
    }

    /// The write under way ended: count it, release its frames' budget,
    /// hand moved repos over, and announce it.
    fn finish_write(
        &mut self,
        r: std::result::Result<barn_store::Result<()>, tokio::task::JoinError>,
    ) -> Result<()> {
        let Some(w) = self.writing.take() else {
            return Ok(());
        };
        self.changed = true;
        r.map_err(|e| Error::Task(e.to_string()))??;
        let durable = Instant::now();
        self.inner
            .metrics
            .group_commit(w.revisions, durable - w.started);
        for r in w.received {
            self.inner.metrics.latency(durable - r);
        }
        drop(w.permits);
        for (did, host) in w.moves {
            self.inner
                .follow(&host, &did, Some(format!("moved to {host}")));
        }
        let g = &self.gauges;
        let now = unix_seconds();
        g.last_durable.set(now);
        if let Some(c) = w.cursor {
            g.cursor.set(c);
            g.lag_seq.set((g.seq.get() - c).max(0));
        }
        if let Some(t) = w
            .event_time
            .as_deref()
            .and_then(|t| barn_repo::syntax::Datetime::parse(t).ok())
        {
            let at = t.timestamp_micros() as f64 / 1e6;
            g.lag_seconds.set((now - at).max(0.0));
        }
        let repos = if w.revisions == 0 {
            Vec::new()
        } else {
            w.overlay
                .iter()
                .filter_map(|(d, s)| Some((d.clone(), s.rev.clone()?)))
                .take(100)
                .collect()
        };
        let _ = self.inner.durable.send(Durable {
            host: self.host.clone(),
            cursor: w.cursor,
            revisions: w.revisions,
            repos,
        });
        Ok(())
    }

    /// Waits for the write under way, if any.
    async fn settle(&mut self) -> Result<()> {
        if self.writing.is_some() {
            let r = wait_write(&mut self.writing).await;
            self.finish_write(r)?;
        }
        Ok(())
    }

    /// Makes everything applied so far durable, with the cursor.
    async fn flush(&mut self) -> Result<()> {
        self.settle().await?;
        self.start_write();
        self.settle().await
    }
}

/// The write under way, as a future (pending forever when there is none).
async fn wait_write(
    writing: &mut Option<Writing>,
) -> std::result::Result<barn_store::Result<()>, tokio::task::JoinError> {
    match writing {
        Some(w) => (&mut w.task).await,
        None => std::future::pending().await,
    }
}

/// barn's head of a repo, if it holds a revision.
fn head_of(state: &RepoState) -> Option<Head> {
    match (&state.rev, state.head, state.data) {
        (Some(rev), Some(cid), Some(data)) => Some(Head {
            rev: rev.clone(),
            cid,
            data,
        }),
        _ => None,
    }
}

type SyncCommit = (cid::Cid, Commit, barn_repo::BlockMap);

/// The commit a `#sync` carries, for its DID (the signature is checked by
/// the caller, once it knows the commit is newer than barn's head).
fn check_sync_commit(ev: &SyncEvent) -> std::result::Result<SyncCommit, &'static str> {
    let car = read_car(ev.blocks.clone(), &CarLimits::default()).map_err(|e| e.reason())?;
    let root = *car.root().ok_or("bad_car")?;
    let bytes = car.blocks.get(&root).ok_or("missing_block")?;
    let commit = Commit::decode(bytes).map_err(|_| "bad_commit")?;
    if commit.did != ev.did {
        return Err("wrong_did");
    }
    Ok((root, commit, car.blocks))
}

/// The history source of an import resumed after a restart, from the
/// reason stored with the repo's desynchronized mark.
fn source_for(reason: &str) -> Source {
    if reason.starts_with("reconcile") {
        Source::Reconcile
    } else if reason.starts_with("sync event") {
        Source::Sync
    } else {
        Source::Resync
    }
}

// ---------------------------------------------------------------------------
// imports and listing passes (see `import.rs` and `listing.rs`)

impl HostTask {
    /// Starts queued imports while this host and the whole mirror have
    /// room. Each repo is marked desynchronized and that mark made durable
    /// first (see the module's tricky bits).
    async fn start_imports(&mut self) -> Result<()> {
        while self.imports.try_join_next().is_some() {}
        let limit = self.inner.config.max_imports_per_host.max(1);
        if self.resyncs.is_empty() || self.importing.len() >= limit {
            return Ok(());
        }
        let mut jobs = Vec::new();
        let mut flush = false;
        while self.importing.len() < limit {
            let Some((did, source, reason)) = self.resyncs.pop_front() else {
                break;
            };
            if self.importing.contains_key(&did) {
                continue;
            }
            let mut state = match self.local(&did)? {
                Local::Here(state, _) => state,
                Local::Untracked | Local::Elsewhere => continue,
            };
            self.last_resync.insert(did.clone(), Instant::now());
            self.deferred.remove(&did);
            self.suspects.remove(&did);
            if state.sync != SyncState::Desynchronized
                || state.sync_reason.as_deref() != Some(reason.as_str())
            {
                state.sync = SyncState::Desynchronized;
                state.sync_reason = Some(reason.clone());
                self.pending.set_repo(&did, state.clone());
            }
            flush |= self.pending.overlay.contains_key(&did)
                || self
                    .writing
                    .as_ref()
                    .is_some_and(|w| w.overlay.contains_key(&did));
            self.importing.insert(
                did.clone(),
                Importing {
                    source,
                    reason: reason.clone(),
                    buffer: Vec::new(),
                    bytes: 0,
                    overflowed: false,
                    again: None,
                    account_event: false,
                },
            );
            jobs.push(Job {
                did,
                source,
                reason,
                state,
            });
        }
        if flush {
            // The import reads the record index and the mark must be
            // durable before anything is buffered past the cursor.
            self.flush().await?;
        }
        self.changed |= !jobs.is_empty();
        for job in jobs {
            let inner = self.inner.clone();
            let host = self.host.clone();
            let me = self.link.me.clone();
            tracing::debug!(host = %self.host, did = %job.did, reason = %job.reason, "import starting");
            self.imports.spawn(async move {
                let permit = inner.imports.clone().acquire_owned().await;
                let result = match permit {
                    Ok(_permit) => crate::import::run(&inner, &host, &job).await,
                    Err(e) => Err(Error::Task(e.to_string())),
                };
                let _ = me.send(Control::Imported {
                    did: job.did,
                    result,
                });
            });
        }
        Ok(())
    }

    /// An import ended: set the head, replay the buffered commits, or
    /// schedule a retry.
    async fn imported(&mut self, did: String, result: Result<Outcome>) -> Result<()> {
        let Some(imp) = self.importing.remove(&did) else {
            return Ok(());
        };
        if !self.tracks(&did) {
            // Untracked (or deleted) while it ran: nothing more of it is
            // written. Whoever waits for it to be let go is told.
            self.buffered_bytes -= imp.bytes;
            self.imports_done += 1;
            for done in self.forgetting.remove(&did).unwrap_or_default() {
                let _ = done.send(());
            }
            return Ok(());
        }
        self.buffered_bytes -= imp.bytes;
        self.imports_done += 1;
        let mut state = self
            .state(&did)?
            .unwrap_or_else(|| RepoState::new(&self.host));
        match result {
            Ok(Outcome::Stored {
                label,
                head,
                handle,
                fetch,
            }) => {
                if state.rev.as_deref().is_none_or(|r| head.rev.as_str() > r) {
                    state.advance(head.cid, head.rev.clone(), head.data);
                }
                state.sync = SyncState::Synchronized;
                state.sync_reason = None;
                if !imp.account_event {
                    // The host served it: the account is active.
                    state.active = true;
                    state.status = None;
                }
                if state.handle.is_none() {
                    state.handle = handle;
                }
                self.pending.set_repo(&did, state);
                self.inner.metrics.resync(&self.host, label);
                self.inner.metrics.import_fetch(&self.host, fetch);
                tracing::info!(host = %self.host, %did, reason = %imp.reason, outcome = label, fetch, rev = %head.rev, buffered = imp.buffer.len(), "import");
                for (seq, checked, received) in imp.buffer {
                    self.commit(seq, checked, received).await?;
                }
            }
            Ok(Outcome::Inactive { status, error }) => {
                state.active = false;
                state.status = Some(status.to_owned());
                state.sync = SyncState::Synchronized;
                state.sync_reason = Some(error);
                self.pending.set_repo(&did, state);
                self.inner.metrics.resync(&self.host, "inactive");
                tracing::info!(host = %self.host, %did, status, "import: the host does not serve the repo; status recorded, nothing deleted");
            }
            Ok(Outcome::Moved { pds }) => {
                self.inner.metrics.resync(&self.host, "moved");
                if normalize_host(&state.host) == self.host {
                    tracing::info!(%did, from = %self.host, to = %pds, "account moved; following it");
                    self.inner.metrics.moved(&self.host);
                    state.host = pds.clone();
                    self.pending.set_repo(&did, state);
                    self.pending.moves.push((did.clone(), pds));
                }
                return Ok(());
            }
            Err(Error::Store(e)) => return Err(Error::Store(e)),
            Err(e) => {
                self.imports_failed += 1;
                self.gauges.import_failures.inc();
                self.inner.metrics.resync(&self.host, e.reason());
                tracing::warn!(host = %self.host, %did, reason = %imp.reason, error = %e, "import failed; will retry");
                // The repo stays desynchronized in the store; try again
                // after `resync_retry` even if no event names it.
                let at = Instant::now() + self.inner.config.resync_retry;
                self.deferred.insert(did, (imp.source, imp.reason, at));
                return Ok(());
            }
        }
        if let Some((source, reason)) = imp.again {
            self.queue_resync(&did, source, &reason);
        }
        Ok(())
    }

    /// Starts a listing pass, or queues one behind the pass under way. A
    /// host followed for some accounts only cannot be listed: each of its
    /// accounts is imported instead (an unchanged one writes nothing).
    fn start_pass(&mut self, kind: PassKind, reason: String) {
        let whole = self
            .inner
            .lock_hosts()
            .get(&self.host)
            .is_some_and(|e| e.whole);
        if !whole {
            let accounts: Vec<String> = self
                .link
                .accounts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned()
                .collect();
            // No listing for some accounts: each is asked about
            // (`getRepoStatus`, `getLatestCommit`), and fetched only if
            // the host has something barn lacks.
            let known: Vec<String> = accounts
                .into_iter()
                .filter(|did| matches!(self.local(did), Ok(Local::Here(_, true))))
                .collect();
            self.inner.metrics.reconcile(&self.host, "pass_started");
            self.spawn_checks(known, reason);
            // That was the whole pass: the next periodic one is an
            // interval from now, not due again at once.
            self.last_pass_done_ms = Some(now_ms());
            self.pending.cursor_dirty = true;
            self.pending.first_at.get_or_insert_with(Instant::now);
            self.plan_sweep();
            return;
        }
        if self.list.is_some() {
            self.next_pass.get_or_insert((kind, reason));
            return;
        }
        tracing::info!(host = %self.host, ?kind, %reason, "listing host");
        self.inner.metrics.reconcile(&self.host, "pass_started");
        self.seen = Some(HashSet::new());
        self.list = Some(ListPass {
            kind,
            reason,
            cursor: None,
            started_ms: now_ms(),
            listed: 0,
        });
        self.pending.cursor_dirty = true;
        self.pending.first_at.get_or_insert_with(Instant::now);
        self.spawn_lister(None);
        self.plan_sweep();
    }

    fn spawn_lister(&mut self, cursor: Option<String>) {
        if let Some((_, cancel)) = self.lister.take() {
            cancel.cancel();
        }
        let cancel = self.link.cancel.child_token();
        let handle = tokio::spawn(crate::listing::run(
            self.inner.clone(),
            self.host.clone(),
            cursor,
            self.link.me.clone(),
            self.queued.clone(),
            cancel.clone(),
        ));
        self.lister = Some((handle, cancel));
    }

    /// A page of the listing: new repos are queued for import, changed
    /// statuses applied, newer heads become suspects. The pass's cursor
    /// goes into the same batch.
    fn listed(&mut self, page: Page) -> Result<()> {
        let Some(pass) = self.list.clone() else {
            return Ok(());
        };
        let now = Instant::now();
        for r in &page.repos {
            if let Some(seen) = self.seen.as_mut() {
                seen.insert(did_hash(&r.did));
            }
            let (mut state, known) = match self.local(&r.did)? {
                Local::Here(state, known) => (state, known),
                Local::Untracked | Local::Elsewhere => continue,
            };
            self.inner.metrics.reconcile(&self.host, "listed");
            if !known {
                let (source, reason) = match pass.kind {
                    PassKind::Backfill => (Source::Resync, pass.reason.clone()),
                    PassKind::Sweep => (
                        Source::Reconcile,
                        format!("reconcile ({}): not seen before", pass.reason),
                    ),
                };
                state.sync_reason = Some(reason.clone());
                state.active = r.active;
                state.status = if r.active { None } else { r.status.clone() };
                self.pending.set_repo(&r.did, state);
                self.queue_resync(&r.did, source, &reason);
                continue;
            }
            if self.importing.contains_key(&r.did) {
                continue;
            }
            let status = (!r.active).then(|| r.status.clone()).flatten();
            let latest = Some((r.head, r.rev.as_str()));
            self.compare(&r.did, state, r.active, status, latest, &pass.reason, now);
        }
        if let Some(list) = self.list.as_mut() {
            list.listed += page.repos.len() as u64;
            list.cursor = page.cursor;
        }
        self.pending.cursor_dirty = true;
        self.pending.first_at.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// Compares what the host says of a repo barn holds (from a listing
    /// or a direct question) with barn's state: a status barn missed is
    /// applied now; a newer head becomes a suspect, fetched after the grace
    /// period unless the firehose brings it meanwhile.
    #[allow(clippy::too_many_arguments)]
    fn compare(
        &mut self,
        did: &str,
        mut state: RepoState,
        active: bool,
        status: Option<String>,
        latest: Option<(cid::Cid, &str)>,
        reason: &str,
        now: Instant,
    ) {
        if state.active != active || (!active && status.is_some() && state.status != status) {
            // An `#account` event barn missed.
            tracing::info!(host = %self.host, %did, active, ?status, %reason, "account status from the host");
            self.inner.metrics.reconcile(&self.host, "status_changed");
            if active && !state.active {
                // Back: blobs it could not give while inactive, now.
                self.pending.batch.retry_blobs_of(did);
            }
            state.active = active;
            state.status = if active { None } else { status };
            self.pending.set_repo(did, state.clone());
        }
        let Some((head, rev)) = latest else {
            return;
        };
        if state.head == Some(head) {
            return;
        }
        match state.rev.as_deref() {
            Some(ours) if rev <= ours => {
                // The host has an older or forked head: barn keeps its
                // own (history only moves forward) and says so.
                self.inner.metrics.reconcile(&self.host, "host_behind");
                tracing::warn!(host = %self.host, %did, host_rev = %rev, barn_rev = ours, "host has an older or different head than barn's");
            }
            _ => {
                self.suspects.entry(did.to_owned()).or_insert(Suspect {
                    rev: rev.to_owned(),
                    head,
                    reason: reason.to_owned(),
                    at: now + self.inner.config.reconcile_grace,
                });
            }
        }
    }

    /// Asks the host about `dids` one by one, beside everything else.
    fn spawn_checks(&mut self, dids: Vec<String>, reason: String) {
        if dids.is_empty() {
            return;
        }
        let cancel = self.link.cancel.child_token();
        self.checks.spawn(crate::checks::run(
            self.inner.clone(),
            self.host.clone(),
            dids,
            reason,
            self.link.me.clone(),
            cancel,
        ));
    }

    /// An answer of [`crate::checks`]. `RepoNotFound` from a host barn
    /// holds the repo for means it moved (the DID document says so) or is
    /// gone: then it is marked deleted, its data kept, as an `#account`
    /// event would have.
    async fn checked(
        &mut self,
        did: &str,
        answer: crate::checks::Answer,
        reason: &str,
    ) -> Result<()> {
        let Local::Here(state, true) = self.local(did)? else {
            return Ok(());
        };
        if self.importing.contains_key(did) {
            return Ok(());
        }
        match answer {
            crate::checks::Answer::Status {
                active,
                status,
                latest,
            } => {
                let latest = latest.as_ref().map(|(c, r)| (*c, r.as_str()));
                self.compare(did, state, active, status, latest, reason, Instant::now());
            }
            crate::checks::Answer::NotFound => {
                let _ = self.inner.resolver.refresh(did).await;
                if let Some((false, id)) = self.authority(did).await? {
                    self.moved(did, &id, state);
                    return Ok(());
                }
                if marked_deleted(&state) {
                    return Ok(());
                }
                self.inner.metrics.reconcile(&self.host, "gone");
                tracing::warn!(host = %self.host, %did, %reason, "the host no longer has this repo: marked deleted, its backup kept");
                let mut state = state;
                state.active = false;
                state.status = Some("deleted".into());
                self.pending.set_repo(did, state);
            }
        }
        Ok(())
    }

    fn list_done(&mut self) {
        let Some(pass) = self.list.take() else {
            return;
        };
        // Repos barn holds for this host that the whole listing did not
        // show: deleted accounts drop out of `listRepos`, and only a
        // direct question says what became of them.
        if let Some(seen) = self.seen.take() {
            match self.inner.store.repos() {
                Ok(repos) => {
                    let absent: Vec<String> = repos
                        .into_iter()
                        .filter(|(did, st)| {
                            normalize_host(&st.host) == self.host
                                && !seen.contains(&did_hash(did))
                                && !marked_deleted(st)
                                && !self.importing.contains_key(did)
                                && self.tracks(did)
                        })
                        .map(|(did, _)| did)
                        .collect();
                    if !absent.is_empty() {
                        self.inner.metrics.reconcile(&self.host, "not_listed");
                        self.spawn_checks(
                            absent,
                            format!("reconcile ({}): not in listRepos", pass.reason),
                        );
                    }
                }
                Err(e) => {
                    tracing::warn!(host = %self.host, error = %e, "cannot read repos to find those the listing left out")
                }
            }
        } else {
            tracing::info!(host = %self.host, "pass resumed after a restart: repos it did not list are checked by the next pass");
        }
        self.lister = None;
        self.last_pass_done_ms = Some(now_ms());
        self.pending.cursor_dirty = true;
        self.pending.first_at.get_or_insert_with(Instant::now);
        self.inner.metrics.reconcile(&self.host, "pass_done");
        tracing::info!(host = %self.host, kind = ?pass.kind, reason = %pass.reason, listed = pass.listed, "listing done");
        if let Some((kind, reason)) = self.next_pass.take() {
            self.start_pass(kind, reason);
        }
        self.plan_sweep();
    }

    /// Sets when the next periodic pass is due (none while one runs):
    /// `reconcile_interval` after the last pass ended, or after start-up.
    fn plan_sweep(&mut self) {
        let every = self.inner.config.reconcile_interval;
        self.sweep_at = if every.is_zero() || self.list.is_some() {
            None
        } else {
            let base = self.last_pass_done_ms.unwrap_or(self.started_ms);
            let due_ms = base.saturating_add(every.as_millis().try_into().unwrap_or(u64::MAX));
            Some(Instant::now() + Duration::from_millis(due_ms.saturating_sub(now_ms())))
        };
    }

    /// Suspects whose grace period is over: fetched if the firehose has
    /// not brought barn to the listed rev meanwhile.
    fn check_suspects(&mut self) -> Result<()> {
        let now = Instant::now();
        let due: Vec<String> = self
            .suspects
            .iter()
            .filter(|(_, s)| s.at <= now)
            .map(|(d, _)| d.clone())
            .collect();
        for did in due {
            let Some(s) = self.suspects.remove(&did) else {
                continue;
            };
            let state = self.state(&did)?;
            let barn_rev = state.as_ref().and_then(|st| st.rev.clone());
            if barn_rev.as_deref().is_some_and(|r| r >= s.rev.as_str()) {
                self.inner
                    .metrics
                    .reconcile(&self.host, "suspect_explained");
                continue;
            }
            self.inner.metrics.reconcile(&self.host, "suspect_fetched");
            let reason = format!(
                "reconcile ({}): host at rev {} (head {}), barn at {} after {:?}",
                s.reason,
                s.rev,
                s.head,
                barn_rev.as_deref().unwrap_or("nothing"),
                self.inner.config.reconcile_grace
            );
            self.queue_resync(&did, Source::Reconcile, &reason);
        }
        Ok(())
    }

    /// Publishes progress (called when something changed, not per
    /// frame), and logs it at most every 10 s while there is work.
    fn report(&mut self) {
        self.changed = false;
        let queued = self.resyncs.len() + self.importing.len();
        self.queued.store(queued, Ordering::Relaxed);
        let mut p = self.link.progress.lock().unwrap_or_else(|p| p.into_inner());
        p.pass = self.list.clone();
        p.last_pass_done_ms = self.last_pass_done_ms;
        p.queued = self.resyncs.len();
        p.importing = self.importing.len();
        p.imports_done = self.imports_done;
        p.imports_failed = self.imports_failed;
        p.cursor = self.pending.cursor;
        drop(p);
        self.gauges.queued.set(self.resyncs.len() as i64);
        self.gauges.importing.set(self.importing.len() as i64);
        if (queued > 0 || self.list.is_some())
            && self.last_progress_log.elapsed() >= Duration::from_secs(10)
        {
            self.last_progress_log = Instant::now();
            tracing::info!(
                host = %self.host,
                listed = self.list.as_ref().map(|l| l.listed),
                queued = self.resyncs.len(),
                importing = self.importing.len(),
                done = self.imports_done,
                failed = self.imports_failed,
                "backfill/reconcile progress"
            );
        }
    }
}

/// The account is known to be deleted on its host (its backup is kept).
fn marked_deleted(state: &RepoState) -> bool {
    !state.active && state.status.as_deref() == Some("deleted")
}

/// A DID's place in a pass's set of listed repos: 8 bytes a repo instead
/// of the DID (a collision only skips one question until the next pass).
fn did_hash(did: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(did)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves the value intact.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}
