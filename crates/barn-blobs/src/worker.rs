//! The blob workers: one dispatcher drains the store's blob queue into
//! bounded concurrent fetches and records each outcome.
//!
//! # Terminology
//! - **due**: a queue entry whose time has come (see barn-store's `blobs`).
//! - **in flight**: dispatched, not yet settled; skipped by the next scans.
//! - **pause**: a host that answered 429 gets no request until its
//!   `Retry-After`; an object store that failed gets no blob until its
//!   backoff ends (fetching what cannot be kept only wastes the source).
//!
//! # Tricky bits
//! - The queue is the store's, not the dispatcher's: a crash, a stop or a
//!   dropped task loses nothing, because an entry leaves the queue only
//!   when its blob is settled as stored (or is moved to its next attempt).
//! - Settling is serialized in the dispatcher; fetches run concurrently,
//!   at most `concurrency` in all and `per_host` per host.
//! - Whether an account can be fetched from is read at dispatch time (its
//!   current host, its status), so a migrated account's blobs come from
//!   its new PDS and an inactive account's are not asked for.
//! - **One host never holds up the others.** The queue is ordered by due
//!   time, not by host, so a host with a backlog (at its `per_host` cap,
//!   or paused by a 429) can fill the oldest part of it. A scan skips the
//!   entries of hosts that cannot take a fetch now (looking each account's
//!   host up once per scan) and looks further; a deep scan, once per
//!   `poll`, goes on from where the last one ended, round the whole due
//!   queue, so the others' blobs are reached however long the backlog.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use barn_store::{
    BlobOutcome, BlobState, BlobStatus, DueBlob, DueChoice, DuePosition, Store, now_ms,
};
use cid::Cid;
use tokio::sync::{Notify, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::error::{Error, Result};
use crate::fetch::{Failure, Fetched, fetch};
use crate::metrics::Metrics;
use crate::storage::BlobStorage;

/// When to try a blob again after a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// First wait after a transient failure (server error, network);
    /// doubles per attempt.
    pub transient_first: Duration,
    /// Longest wait after transient failures.
    pub transient_max: Duration,
    /// Transient failures in a row after which the blob counts as missing
    /// (it is still retried, at `transient_max` at most).
    pub transient_until_missing: u32,
    /// First wait after the source said it has no such blob, sent wrong
    /// bytes, refused the request, or the blob is too large; doubles.
    pub missing_first: Duration,
    /// Longest wait for those.
    pub missing_max: Duration,
    /// Wait when the account is not active (deactivated, taken down, …);
    /// barn also retries an account's blobs at once when it comes back.
    pub inactive: Duration,
    /// Wait after a 429 without `Retry-After`.
    pub rate_limited: Duration,
    /// First wait after the object store failed; doubles.
    pub store_first: Duration,
    /// Longest wait after object store failures.
    pub store_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            transient_first: Duration::from_secs(2),
            transient_max: Duration::from_secs(3600),
            transient_until_missing: 8,
            missing_first: Duration::from_secs(600),
            missing_max: Duration::from_secs(24 * 3600),
            inactive: Duration::from_secs(6 * 3600),
            rate_limited: Duration::from_secs(60),
            store_first: Duration::from_secs(1),
            store_max: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// What a failure makes of the blob and how long to wait, `attempts`
    /// failures in a row counting this one.
    pub fn after(&self, failure: &Failure, attempts: u32) -> (BlobStatus, Duration) {
        let backoff = |first: Duration, max: Duration| {
            let doubled = first.saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
            jitter(doubled.min(max))
        };
        match failure {
            Failure::RateLimited(after) => (
                BlobStatus::Queued,
                after
                    .unwrap_or(self.rate_limited)
                    .max(Duration::from_millis(100)),
            ),
            Failure::Server(_) | Failure::Network(_) => {
                let status = if attempts >= self.transient_until_missing {
                    BlobStatus::Missing
                } else {
                    BlobStatus::Queued
                };
                (status, backoff(self.transient_first, self.transient_max))
            }
            Failure::Storage(_) => (
                BlobStatus::Queued,
                backoff(self.store_first, self.store_max),
            ),
            Failure::Inactive(_) | Failure::Untracked => (BlobStatus::Missing, self.inactive),
            Failure::NotFound(_)
            | Failure::HashMismatch(_)
            | Failure::Rejected(_)
            | Failure::TooLarge(_) => (
                BlobStatus::Missing,
                backoff(self.missing_first, self.missing_max),
            ),
            Failure::InvalidCid => (BlobStatus::Missing, self.missing_max),
        }
    }
}

/// ±25%, so that blobs failing together do not come back together.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.75 + fastrand::f64() * 0.5)
}

/// Blob worker settings.
#[derive(Debug, Clone)]
pub struct BlobConfig {
    /// Largest blob fetched (bytes).
    pub max_blob_bytes: u64,
    /// Fetches at once, in all.
    pub concurrency: usize,
    /// Fetches at once from one host.
    pub per_host: usize,
    /// How often the queue is looked at when nothing wakes the dispatcher;
    /// also how often a scan may look past the oldest due entries (see
    /// `scan_budget`).
    pub poll: Duration,
    /// Due entries one deep scan looks at, at most. Every scan skips
    /// entries whose host is paused or at `per_host`; a deep scan (once
    /// per `poll`) goes on from where the last one ended, round the whole
    /// due queue in turn, so one host's backlog cannot keep the others'
    /// blobs from ever being looked at. The scans in between look only at
    /// the oldest few, to stay cheap when many fetches end.
    pub scan_budget: usize,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Longest silence while reading a response.
    pub read_timeout: Duration,
    /// Retry schedule.
    pub retry: RetryPolicy,
}

impl Default for BlobConfig {
    fn default() -> Self {
        BlobConfig {
            max_blob_bytes: 100 * 1000 * 1000,
            concurrency: 16,
            per_host: 4,
            poll: Duration::from_millis(200),
            scan_budget: 1024,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
        }
    }
}

/// The running blob workers. Stop with [`BlobWorkers::stop`].
#[derive(Debug)]
pub struct BlobWorkers {
    /// `Some(grace)` once stopping.
    stop: watch::Sender<Option<Duration>>,
    wake: Arc<Notify>,
    task: std::sync::Mutex<Option<JoinHandle<Result<()>>>>,
}

type Done = (DueBlob, Instant, std::result::Result<Fetched, Failure>);

struct Dispatcher {
    store: Arc<Store>,
    storage: BlobStorage,
    config: BlobConfig,
    metrics: Metrics,
    client: reqwest::Client,
    tasks: JoinSet<Done>,
    /// Fetches under way, with the host each went to.
    in_flight: HashMap<Cid, String>,
    per_host: HashMap<String, usize>,
    host_paused: HashMap<String, Instant>,
    store_paused: Option<Instant>,
    store_failures: u32,
    /// Where the last deep scan of the queue ended.
    resume: Option<DuePosition>,
    /// When the last deep scan ran.
    last_deep: Option<Instant>,
}

/// Where a due blob's account sends it: a host to fetch from, or a failure
/// recorded without asking anyone.
#[derive(Debug, Clone)]
enum Route {
    Host(String),
    Fail(Failure),
}

/// The route of `did`'s blobs, read at dispatch time (see the module's
/// tricky bits).
fn route(store: &Store, did: &str) -> barn_store::Result<Route> {
    Ok(match store.repo(did)? {
        None => Route::Fail(Failure::Untracked),
        Some(r) if !r.active => {
            let status = match r.status.as_deref() {
                Some("deactivated") => "deactivated",
                Some("takendown") => "takendown",
                Some("suspended") => "suspended",
                Some("deleted") => "deleted",
                _ => "inactive",
            };
            Route::Fail(Failure::Inactive(status))
        }
        Some(r) => Route::Host(r.host),
    })
}

impl BlobWorkers {
    /// Starts draining `store`'s blob queue into `storage`.
    pub fn start(
        store: Arc<Store>,
        storage: BlobStorage,
        config: BlobConfig,
        metrics: Metrics,
    ) -> Result<BlobWorkers> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("barn/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            .build()?;
        let (stop, stopped) = watch::channel(None);
        let wake = Arc::new(Notify::new());
        let d = Dispatcher {
            store,
            storage,
            config,
            metrics,
            client,
            tasks: JoinSet::new(),
            in_flight: HashMap::new(),
            per_host: HashMap::new(),
            host_paused: HashMap::new(),
            store_paused: None,
            store_failures: 0,
            resume: None,
            last_deep: None,
        };
        let task = tokio::spawn(d.run(stopped, wake.clone()));
        Ok(BlobWorkers {
            stop,
            wake,
            task: std::sync::Mutex::new(Some(task)),
        })
    }

    /// Looks at the queue now (new refs were written).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// [`BlobWorkers::wake`] as a function to hand to whatever writes refs.
    pub fn waker(&self) -> impl Fn() + Send + Sync + 'static {
        let wake = self.wake.clone();
        move || wake.notify_one()
    }

    /// Stops dispatching, lets fetches under way finish for up to
    /// `grace`, and drops the rest (they stay queued). Later calls
    /// return at once.
    pub async fn stop(&self, grace: Duration) -> Result<()> {
        let _ = self.stop.send(Some(grace));
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        match task {
            Some(task) => match task.await {
                Ok(r) => r,
                Err(e) => Err(Error::Task(format!("blob dispatcher: {e}"))),
            },
            None => Ok(()),
        }
    }
}

impl Dispatcher {
    async fn run(
        mut self,
        mut stopped: watch::Receiver<Option<Duration>>,
        wake: Arc<Notify>,
    ) -> Result<()> {
        let grace = loop {
            if let Some(grace) = *stopped.borrow() {
                break grace;
            }
            self.dispatch()?;
            tokio::select! {
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    match done {
                        Ok(done) => self.settle(done)?,
                        Err(e) => tracing::error!(error = %e, "blob fetch task failed"),
                    }
                }
                _ = tokio::time::sleep(self.config.poll) => {}
                _ = wake.notified() => {}
                r = stopped.changed() => {
                    if r.is_err() {
                        // The handle was dropped without stop: stop now.
                        break Duration::ZERO;
                    }
                }
            }
        };
        // Let what is under way finish, briefly; the rest stays queued.
        let deadline = tokio::time::Instant::now() + grace;
        while !self.tasks.is_empty() {
            match tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
                Ok(Some(Ok(done))) => self.settle(done)?,
                Ok(Some(Err(_))) => {}
                Ok(None) | Err(_) => break,
            }
        }
        self.tasks.shutdown().await;
        Ok(())
    }

    fn dispatch(&mut self) -> Result<()> {
        let now = Instant::now();
        self.host_paused.retain(|_, until| *until > now);
        let store_ok = self.store_paused.is_none_or(|t| t <= now);
        let free = self.config.concurrency.saturating_sub(self.in_flight.len());
        if store_ok && free > 0 {
            let deep = self
                .last_deep
                .is_none_or(|t| now.duration_since(t) >= self.config.poll);
            let (from, budget) = if deep {
                self.last_deep = Some(now);
                (self.resume.take(), self.config.scan_budget.max(1))
            } else {
                (None, free * 8 + 16)
            };
            // Each account's route is read once per scan; the fetches
            // planned per host count against its cap as the scan goes, so
            // a host's entries past its free slots are skipped and the
            // scan reaches other hosts' blobs.
            let mut routes: HashMap<String, Route> = HashMap::new();
            let mut planned: HashMap<String, usize> = HashMap::new();
            let mut planned_all = 0;
            let scan = {
                let (store, in_flight, busy, paused) = (
                    &self.store,
                    &self.in_flight,
                    &self.per_host,
                    &self.host_paused,
                );
                let cap = self.config.per_host;
                let mut choose = |cid: &Cid, state: &BlobState| {
                    if in_flight.contains_key(cid) {
                        return Ok(DueChoice::Skip);
                    }
                    if !routes.contains_key(&state.did) {
                        routes.insert(state.did.clone(), route(store, &state.did)?);
                    }
                    let Some(Route::Host(host)) = routes.get(&state.did) else {
                        // Settled at once, without a fetch slot.
                        return Ok(DueChoice::Take);
                    };
                    if planned_all >= free {
                        return Ok(DueChoice::Stop);
                    }
                    if paused.contains_key(host) {
                        return Ok(DueChoice::Skip);
                    }
                    let n = planned
                        .entry(host.clone())
                        .or_insert_with(|| busy.get(host).copied().unwrap_or(0));
                    if *n >= cap {
                        return Ok(DueChoice::Skip);
                    }
                    *n += 1;
                    planned_all += 1;
                    Ok(DueChoice::Take)
                };
                store.due_blobs(now_ms(), from.as_ref(), budget, &mut choose)?
            };
            if deep {
                self.resume = scan.next;
            }
            for d in scan.blobs {
                match routes.get(&d.state.did).cloned() {
                    Some(Route::Host(host)) => self.start_one(d, host),
                    Some(Route::Fail(failure)) => self.record_failure(&d, failure)?,
                    None => {}
                }
            }
        }
        let oldest = self
            .store
            .next_blob_due()?
            .map(|due| Duration::from_millis(now_ms().saturating_sub(due)))
            .unwrap_or_default();
        self.metrics.queue(
            self.store.approximate_blob_queue(),
            oldest,
            self.in_flight.len(),
        );
        Ok(())
    }

    /// Starts fetching `d` from `host`; the scan that chose it checked the
    /// host's pause and cap.
    fn start_one(&mut self, d: DueBlob, host: String) {
        *self.per_host.entry(host.clone()).or_default() += 1;
        self.in_flight.insert(d.cid, host.clone());
        let (client, storage, max) = (
            self.client.clone(),
            self.storage.clone(),
            self.config.max_blob_bytes,
        );
        self.tasks.spawn(async move {
            let started = Instant::now();
            let r = fetch(&client, &storage, &host, &d.state.did, &d.cid, max).await;
            (d, started, r)
        });
    }

    fn settle(&mut self, (d, started, result): Done) -> Result<()> {
        if let Some(host) = self.in_flight.remove(&d.cid)
            && let Some(n) = self.per_host.get_mut(&host)
        {
            *n = n.saturating_sub(1);
            if let Err(Failure::RateLimited(after)) = &result {
                let wait = after.unwrap_or(self.config.retry.rate_limited);
                self.host_paused.insert(host, Instant::now() + wait);
            }
        }
        match result {
            Ok(f) => {
                self.store_failures = 0;
                let since = Duration::from_millis(now_ms().saturating_sub(d.state.first_seen_ms));
                self.metrics.stored(f.size, started.elapsed(), since);
                tracing::debug!(cid = %d.cid, did = %d.state.did, size = f.size, "blob stored");
                self.store.settle_blob(
                    &d.cid,
                    BlobOutcome::Stored {
                        size: f.size,
                        mime: f.mime,
                    },
                )?;
                Ok(())
            }
            Err(failure) => {
                if let Failure::Storage(_) = failure {
                    self.store_failures += 1;
                    let (_, wait) = self.config.retry.after(&failure, self.store_failures);
                    self.store_paused = Some(Instant::now() + wait);
                }
                self.record_failure(&d, failure)
            }
        }
    }

    fn record_failure(&mut self, d: &DueBlob, failure: Failure) -> Result<()> {
        let attempts = d.state.attempts.saturating_add(1);
        let (status, wait) = self.config.retry.after(&failure, attempts);
        let became_missing = status == BlobStatus::Missing && d.state.status != BlobStatus::Missing;
        let reason = failure.reason();
        let detail = failure.detail();
        self.metrics.failed(reason, became_missing);
        if became_missing {
            tracing::warn!(cid = %d.cid, did = %d.state.did, reason, %detail, attempts, retry_in = ?wait, "blob missing");
        } else {
            tracing::info!(cid = %d.cid, did = %d.state.did, reason, %detail, attempts, retry_in = ?wait, "blob fetch failed");
        }
        self.store.settle_blob(
            &d.cid,
            BlobOutcome::Failed {
                status,
                reason: reason.to_owned(),
                detail,
                retry_at_ms: now_ms().saturating_add(wait.as_millis() as u64),
            },
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_fit_the_reason() {
        let p = RetryPolicy::default();
        let (s, d) = p.after(&Failure::RateLimited(Some(Duration::from_secs(7))), 1);
        assert_eq!((s, d), (BlobStatus::Queued, Duration::from_secs(7)));
        let (s, d1) = p.after(&Failure::Server("500".into()), 1);
        assert_eq!(s, BlobStatus::Queued);
        let (_, d3) = p.after(&Failure::Server("500".into()), 3);
        assert!(
            d1 <= Duration::from_millis(2500) && d3 >= Duration::from_secs(6),
            "{d1:?} {d3:?}"
        );
        let (s, _) = p.after(&Failure::Network("cut".into()), p.transient_until_missing);
        assert_eq!(s, BlobStatus::Missing);
        let (s, d) = p.after(&Failure::NotFound("404".into()), 30);
        assert_eq!(s, BlobStatus::Missing);
        assert!(d <= p.missing_max.mul_f64(1.25));
        let (s, d) = p.after(&Failure::Storage("down".into()), 2);
        assert_eq!(s, BlobStatus::Queued);
        assert!(d <= Duration::from_millis(2500));
        assert_eq!(
            p.after(&Failure::Inactive("takendown"), 1),
            (BlobStatus::Missing, p.inactive)
        );
        // Wrong bytes or too large: missing at once, on the slow schedule
        // (the source will not change its mind in seconds).
        for failure in [
            Failure::HashMismatch("bafk".into()),
            Failure::TooLarge(1 << 30),
        ] {
            let (s, d) = p.after(&failure, 1);
            assert_eq!(s, BlobStatus::Missing, "{failure:?}");
            assert!(
                d >= p.missing_first.mul_f64(0.75) && d <= p.missing_first.mul_f64(1.25),
                "{failure:?}: {d:?}"
            );
            let (s, d) = p.after(&failure, 30);
            assert_eq!(s, BlobStatus::Missing, "{failure:?}");
            assert!(
                d >= p.missing_max.mul_f64(0.75) && d <= p.missing_max.mul_f64(1.25),
                "{failure:?}: {d:?}"
            );
        }
    }
}
