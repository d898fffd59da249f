//! The mirror's Prometheus metrics. Each counter has a log line beside it
//! where it is incremented.

use std::time::Duration;

use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

/// Handles to the mirror's metrics; cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    events: IntCounterVec,
    rejected_frames: IntCounterVec,
    verify_failures: IntCounterVec,
    applied: IntCounterVec,
    resyncs: IntCounterVec,
    moved: IntCounterVec,
    host_failures: IntCounterVec,
    reconcile: IntCounterVec,
    import_fetches: IntCounterVec,
    list_failures: IntCounterVec,
    list_rejected: IntCounterVec,
    unreadable_records: IntCounterVec,
    group_commit_revisions: Histogram,
    group_commit_seconds: Histogram,
    durable_latency_seconds: HistogramVec,
    host_seq: IntGaugeVec,
    host_cursor: IntGaugeVec,
    host_lag_seq: IntGaugeVec,
    host_lag_seconds: GaugeVec,
    host_last_event: GaugeVec,
    host_last_durable: GaugeVec,
    backfill_repos: IntGaugeVec,
    import_failures: IntCounterVec,
    /// The firehose client's own metrics, shared by every subscription.
    pub firehose: Option<barn_firehose::Metrics>,
}

fn counter(name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntCounterVec> {
    IntCounterVec::new(Opts::new(name, help), labels)
}

impl Metrics {
    /// Unregistered metrics (tests, benches).
    pub fn new() -> prometheus::Result<Metrics> {
        Ok(Metrics {
            events: counter(
                "barn_mirror_events_total",
                "Firehose events received, by host and type",
                &["host", "type"],
            )?,
            rejected_frames: counter(
                "barn_mirror_rejected_frames_total",
                "Frames that did not decode, by host and reason",
                &["host", "reason"],
            )?,
            verify_failures: counter(
                "barn_mirror_verification_failures_total",
                "Events not applied, by host and reason (duplicates and stale revs included)",
                &["host", "reason"],
            )?,
            applied: counter(
                "barn_mirror_commits_applied_total",
                "Verified commits made durable, by host",
                &["host"],
            )?,
            resyncs: counter(
                "barn_mirror_resyncs_total",
                "Repo resyncs by getRepo, by host and outcome",
                &["host", "outcome"],
            )?,
            moved: counter(
                "barn_mirror_accounts_moved_total",
                "Accounts followed to a new host, by old host",
                &["host"],
            )?,
            host_failures: counter(
                "barn_mirror_host_task_failures_total",
                "Host tasks that stopped on an error",
                &["host", "reason"],
            )?,
            reconcile: counter(
                "barn_mirror_reconcile_total",
                "Listing and reconcile events, by host and what (listed, pass_started, pass_done, \
                 suspect_fetched, suspect_explained, host_behind, status_changed, buffered, \
                 buffer_overflow, outdated_cursor, future_cursor; repos asked about one by one: \
                 not_listed, checked, check_failed, gone)",
                &["host", "what"],
            )?,
            import_fetches: counter(
                "barn_mirror_import_fetches_total",
                "Imports stored, by host and what was fetched (full repo, or since barn's rev)",
                &["host", "kind"],
            )?,
            list_failures: counter(
                "barn_mirror_list_failures_total",
                "listRepos pages that failed (retried), by host and reason",
                &["host", "reason"],
            )?,
            list_rejected: counter(
                "barn_mirror_list_entries_rejected_total",
                "listRepos entries skipped as malformed, by host and reason",
                &["host", "reason"],
            )?,
            group_commit_revisions: Histogram::with_opts(
                HistogramOpts::new(
                    "barn_mirror_group_commit_revisions",
                    "Revisions per group commit",
                )
                .buckets(vec![
                    0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0,
                ]),
            )?,
            unreadable_records: counter(
                "barn_mirror_unreadable_records_total",
                "Records stored as they are whose blob refs could not be read (not DAG-CBOR), by host",
                &["host"],
            )?,
            group_commit_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "barn_mirror_group_commit_seconds",
                    "Time to write and fsync one group commit",
                )
                .buckets(prometheus::exponential_buckets(0.0001, 2.0, 16)?),
            )?,
            durable_latency_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "barn_mirror_durable_latency_seconds",
                    "From frame received to commit durable",
                )
                .buckets(prometheus::exponential_buckets(0.0001, 2.0, 18)?),
                &[],
            )?,
            host_seq: int_gauge(
                "barn_mirror_host_seq",
                "Highest sequence number received from the host",
                &["host"],
            )?,
            host_cursor: int_gauge(
                "barn_mirror_host_cursor",
                "The host's durable cursor: every event up to it is stored",
                &["host"],
            )?,
            host_lag_seq: int_gauge(
                "barn_mirror_host_lag_seq",
                "Events received from the host and not yet durable (seq minus cursor)",
                &["host"],
            )?,
            host_lag_seconds: GaugeVec::new(
                Opts::new(
                    "barn_mirror_host_lag_seconds",
                    "From the host's event time to durable, for the last event of the last group commit",
                ),
                &["host"],
            )?,
            host_last_event: GaugeVec::new(
                Opts::new(
                    "barn_mirror_host_last_event_timestamp_seconds",
                    "When the last event was received from the host (Unix time)",
                ),
                &["host"],
            )?,
            host_last_durable: GaugeVec::new(
                Opts::new(
                    "barn_mirror_host_last_durable_timestamp_seconds",
                    "When the host's last group commit became durable (Unix time)",
                ),
                &["host"],
            )?,
            backfill_repos: int_gauge(
                "barn_mirror_backfill_repos",
                "Imports (backfill, resync, reconcile) by host and state (queued, importing)",
                &["host", "state"],
            )?,
            import_failures: counter(
                "barn_mirror_import_failures_total",
                "Imports that failed (each retried later), by host",
                &["host"],
            )?,
            firehose: None,
        })
    }

    /// Metrics registered into `registry`, the firehose client's too.
    pub fn registered(registry: &Registry) -> prometheus::Result<Metrics> {
        let mut m = Metrics::new()?;
        m.register(registry)?;
        m.firehose = Some(
            barn_firehose::Metrics::register(registry)
                .map_err(|e| prometheus::Error::Msg(e.to_string()))?,
        );
        Ok(m)
    }

    fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.events.clone()))?;
        registry.register(Box::new(self.rejected_frames.clone()))?;
        registry.register(Box::new(self.verify_failures.clone()))?;
        registry.register(Box::new(self.applied.clone()))?;
        registry.register(Box::new(self.resyncs.clone()))?;
        registry.register(Box::new(self.moved.clone()))?;
        registry.register(Box::new(self.host_failures.clone()))?;
        registry.register(Box::new(self.reconcile.clone()))?;
        registry.register(Box::new(self.import_fetches.clone()))?;
        registry.register(Box::new(self.list_failures.clone()))?;
        registry.register(Box::new(self.list_rejected.clone()))?;
        registry.register(Box::new(self.unreadable_records.clone()))?;
        registry.register(Box::new(self.group_commit_revisions.clone()))?;
        registry.register(Box::new(self.group_commit_seconds.clone()))?;
        registry.register(Box::new(self.durable_latency_seconds.clone()))?;
        registry.register(Box::new(self.host_seq.clone()))?;
        registry.register(Box::new(self.host_cursor.clone()))?;
        registry.register(Box::new(self.host_lag_seq.clone()))?;
        registry.register(Box::new(self.host_lag_seconds.clone()))?;
        registry.register(Box::new(self.host_last_event.clone()))?;
        registry.register(Box::new(self.host_last_durable.clone()))?;
        registry.register(Box::new(self.backfill_repos.clone()))?;
        registry.register(Box::new(self.import_failures.clone()))?;
        Ok(())
    }

    pub(crate) fn event(&self, host: &str, kind: &str) {
        self.events.with_label_values(&[host, kind]).inc();
    }
    pub(crate) fn rejected(&self, host: &str, reason: &str) {
        self.rejected_frames
            .with_label_values(&[host, reason])
            .inc();
    }
    pub(crate) fn verify_failed(&self, host: &str, reason: &str) {
        self.verify_failures
            .with_label_values(&[host, reason])
            .inc();
    }
    pub(crate) fn applied(&self, host: &str) {
        self.applied.with_label_values(&[host]).inc();
    }
    pub(crate) fn resync(&self, host: &str, outcome: &str) {
        self.resyncs.with_label_values(&[host, outcome]).inc();
    }
    pub(crate) fn moved(&self, host: &str) {
        self.moved.with_label_values(&[host]).inc();
    }
    pub(crate) fn reconcile(&self, host: &str, what: &str) {
        self.reconcile.with_label_values(&[host, what]).inc();
    }
    pub(crate) fn import_fetch(&self, host: &str, kind: &str) {
        self.import_fetches.with_label_values(&[host, kind]).inc();
    }
    pub(crate) fn list_failed(&self, host: &str, reason: &str) {
        self.list_failures.with_label_values(&[host, reason]).inc();
    }
    pub(crate) fn list_entry_rejected(&self, host: &str, reason: &str) {
        self.list_rejected.with_label_values(&[host, reason]).inc();
    }
    pub(crate) fn host_failed(&self, host: &str, reason: &str) {
        self.host_failures.with_label_values(&[host, reason]).inc();
    }
    pub(crate) fn unreadable_records(&self, host: &str, n: u64) {
        self.unreadable_records.with_label_values(&[host]).inc_by(n);
    }
    pub(crate) fn group_commit(&self, revisions: usize, took: Duration) {
        self.group_commit_revisions.observe(revisions as f64);
        self.group_commit_seconds.observe(took.as_secs_f64());
    }
    /// The per-host gauges, looked up once per host task.
    pub(crate) fn host(&self, host: &str) -> HostGauges {
        HostGauges {
            seq: self.host_seq.with_label_values(&[host]),
            cursor: self.host_cursor.with_label_values(&[host]),
            lag_seq: self.host_lag_seq.with_label_values(&[host]),
            lag_seconds: self.host_lag_seconds.with_label_values(&[host]),
            last_event: self.host_last_event.with_label_values(&[host]),
            last_durable: self.host_last_durable.with_label_values(&[host]),
            queued: self.backfill_repos.with_label_values(&[host, "queued"]),
            importing: self.backfill_repos.with_label_values(&[host, "importing"]),
            import_failures: self.import_failures.with_label_values(&[host]),
        }
    }

    /// Drops a host's gauges (it is no longer followed): a stale lag must
    /// not keep an alert firing.
    pub(crate) fn forget_host(&self, host: &str) {
        for g in [&self.host_seq, &self.host_cursor, &self.host_lag_seq] {
            let _ = g.remove_label_values(&[host]);
        }
        for g in [
            &self.host_lag_seconds,
            &self.host_last_event,
            &self.host_last_durable,
        ] {
            let _ = g.remove_label_values(&[host]);
        }
        for state in ["queued", "importing"] {
            let _ = self.backfill_repos.remove_label_values(&[host, state]);
        }
    }

    pub(crate) fn latency(&self, d: Duration) {
        self.durable_latency_seconds
            .with_label_values(&[] as &[&str])
            .observe(d.as_secs_f64());
    }

    /// Verification failures for `reason`, summed over hosts.
    pub fn verification_failures(&self, reason: &str) -> u64 {
        sum_label(&self.verify_failures, "reason", Some(reason))
    }

    /// Every verification failure except the harmless ones (duplicates and
    /// stale revs replayed after a reconnect, events for other hosts'
    /// repos, repos waiting for a resync, a `#sync` whose rev differs from
    /// its signed commit's).
    pub fn hard_verification_failures(&self) -> u64 {
        let soft = [
            "duplicate",
            "rev_not_increasing",
            "wrong_host",
            "desynchronized",
            "sync_not_newer",
            "sync_rev_mismatch",
        ];
        let mut total = 0;
        for mf in prometheus::core::Collector::collect(&self.verify_failures) {
            for m in mf.get_metric() {
                let reason = m
                    .get_label()
                    .iter()
                    .find(|l| l.name() == "reason")
                    .map(|l| l.value().to_owned())
                    .unwrap_or_default();
                if !soft.contains(&reason.as_str()) {
                    total += m.get_counter().get_value() as u64;
                }
            }
        }
        total
    }

    /// Frames rejected before they became events (undecodable, oversized),
    /// for `reason` ([`barn_firehose::Error::reason`], `oversized`,
    /// `text_message`), summed over hosts.
    pub fn rejected_frames(&self, reason: &str) -> u64 {
        sum_label(&self.rejected_frames, "reason", Some(reason))
    }

    /// Host tasks that stopped on an error, summed over hosts and reasons.
    pub fn host_task_failures(&self) -> u64 {
        sum_label(&self.host_failures, "host", None)
    }

    /// Commits applied, summed over hosts.
    pub fn commits_applied(&self) -> u64 {
        sum_label(&self.applied, "host", None)
    }

    /// Resyncs with `outcome`, summed over hosts.
    pub fn resyncs(&self, outcome: &str) -> u64 {
        sum_label(&self.resyncs, "outcome", Some(outcome))
    }

    /// Accounts followed to another host.
    pub fn accounts_moved(&self) -> u64 {
        sum_label(&self.moved, "host", None)
    }

    /// Listing and reconcile events of kind `what` (see the metric's
    /// help), summed over hosts.
    pub fn reconcile_events(&self, what: &str) -> u64 {
        sum_label(&self.reconcile, "what", Some(what))
    }

    /// Imports stored after fetching `kind` (`full` or `since`), summed
    /// over hosts.
    pub fn import_fetches(&self, kind: &str) -> u64 {
        sum_label(&self.import_fetches, "kind", Some(kind))
    }
}

fn int_gauge(name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntGaugeVec> {
    IntGaugeVec::new(Opts::new(name, help), labels)
}

/// One host's gauges, resolved once (no label lookup per event).
#[derive(Clone, Debug)]
pub(crate) struct HostGauges {
    pub(crate) seq: IntGauge,
    pub(crate) cursor: IntGauge,
    pub(crate) lag_seq: IntGauge,
    pub(crate) lag_seconds: Gauge,
    pub(crate) last_event: Gauge,
    pub(crate) last_durable: Gauge,
    pub(crate) queued: IntGauge,
    pub(crate) importing: IntGauge,
    pub(crate) import_failures: IntCounter,
}

fn sum_label(v: &IntCounterVec, label: &str, value: Option<&str>) -> u64 {
    let mut total = 0;
    for mf in prometheus::core::Collector::collect(v) {
        for m in mf.get_metric() {
            let ok = value.is_none_or(|want| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == label && l.value() == want)
            });
            if ok {
                total += m.get_counter().get_value() as u64;
            }
        }
    }
    total
}
