//! barn-blobs' Prometheus metrics. Each counter has a log line beside it
//! where it is incremented.

use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Handles to the blob metrics; cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    fetches: IntCounterVec,
    stored: IntCounter,
    stored_bytes: IntCounter,
    missing: IntCounterVec,
    queue_depth: IntGauge,
    queue_oldest_due_seconds: IntGauge,
    in_flight: IntGauge,
    fetch_seconds: Histogram,
    stored_latency_seconds: Histogram,
}

impl Metrics {
    /// Unregistered metrics (tests, benches).
    pub fn new() -> prometheus::Result<Metrics> {
        Ok(Metrics {
            fetches: IntCounterVec::new(
                Opts::new(
                    "barn_blob_fetches_total",
                    "getBlob attempts, by outcome (stored or the failure reason)",
                ),
                &["outcome"],
            )?,
            stored: IntCounter::new("barn_blobs_stored_total", "Blobs stored, hash-verified")?,
            stored_bytes: IntCounter::new("barn_blob_stored_bytes_total", "Bytes of blobs stored")?,
            missing: IntCounterVec::new(
                Opts::new(
                    "barn_blobs_missing_total",
                    "Blobs recorded as missing, by reason",
                ),
                &["reason"],
            )?,
            queue_depth: IntGauge::new(
                "barn_blob_queue_depth",
                "Queued and missing blobs waiting for an attempt (LSM estimate)",
            )?,
            queue_oldest_due_seconds: IntGauge::new(
                "barn_blob_queue_oldest_due_seconds",
                "How long the earliest queue entry has been due (0 when none is)",
            )?,
            in_flight: IntGauge::new("barn_blob_fetches_in_flight", "Fetches under way")?,
            fetch_seconds: Histogram::with_opts(
                HistogramOpts::new("barn_blob_fetch_seconds", "One getBlob, request to stored")
                    .buckets(prometheus::exponential_buckets(0.001, 2.0, 18)?),
            )?,
            stored_latency_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "barn_blob_stored_latency_seconds",
                    "From the referencing commit being durable to the blob being stored",
                )
                .buckets(prometheus::exponential_buckets(0.01, 2.0, 20)?),
            )?,
        })
    }

    /// Metrics registered into `registry`.
    pub fn registered(registry: &Registry) -> prometheus::Result<Metrics> {
        let m = Metrics::new()?;
        registry.register(Box::new(m.fetches.clone()))?;
        registry.register(Box::new(m.stored.clone()))?;
        registry.register(Box::new(m.stored_bytes.clone()))?;
        registry.register(Box::new(m.missing.clone()))?;
        registry.register(Box::new(m.queue_depth.clone()))?;
        registry.register(Box::new(m.queue_oldest_due_seconds.clone()))?;
        registry.register(Box::new(m.in_flight.clone()))?;
        registry.register(Box::new(m.fetch_seconds.clone()))?;
        registry.register(Box::new(m.stored_latency_seconds.clone()))?;
        Ok(m)
    }

    pub(crate) fn stored(&self, bytes: u64, took: Duration, since_commit: Duration) {
        self.fetches.with_label_values(&["stored"]).inc();
        self.stored.inc();
        self.stored_bytes.inc_by(bytes);
        self.fetch_seconds.observe(took.as_secs_f64());
        self.stored_latency_seconds
            .observe(since_commit.as_secs_f64());
    }

    pub(crate) fn failed(&self, reason: &str, became_missing: bool) {
        self.fetches.with_label_values(&[reason]).inc();
        if became_missing {
            self.missing.with_label_values(&[reason]).inc();
        }
    }

    pub(crate) fn queue(&self, depth: usize, oldest_due: Duration, in_flight: usize) {
        self.queue_depth.set(depth as i64);
        self.queue_oldest_due_seconds
            .set(oldest_due.as_secs() as i64);
        self.in_flight.set(in_flight as i64);
    }

    /// getBlob attempts that ended with `outcome` (`stored` or a reason).
    pub fn fetches(&self, outcome: &str) -> u64 {
        self.fetches.with_label_values(&[outcome]).get()
    }

    /// Blobs stored.
    pub fn blobs_stored(&self) -> u64 {
        self.stored.get()
    }

    /// Blobs that became missing for `reason`.
    pub fn missing(&self, reason: &str) -> u64 {
        self.missing.with_label_values(&[reason]).get()
    }

    /// Samples of fetch time, request to stored (count, sum in seconds).
    pub fn fetch_time(&self) -> (u64, f64) {
        (
            self.fetch_seconds.get_sample_count(),
            self.fetch_seconds.get_sample_sum(),
        )
    }

    /// Samples of commit-to-stored latency (count, sum in seconds).
    pub fn stored_latency(&self) -> (u64, f64) {
        (
            self.stored_latency_seconds.get_sample_count(),
            self.stored_latency_seconds.get_sample_sum(),
        )
    }
}
