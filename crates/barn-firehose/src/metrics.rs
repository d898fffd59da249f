//! Prometheus counters for subscriptions, each labelled by `host`, and the
//! log line that goes with every increment: the crate-private `Recorder`'s
//! methods do both, so the two never drift apart.
//!
//! | metric | labels | counts |
//! | --- | --- | --- |
//! | `barn_firehose_frames_total` | host, type | frames delivered (commit, sync, identity, account, info, error, unknown) |
//! | `barn_firehose_bytes_total` | host | bytes of frames delivered |
//! | `barn_firehose_rejected_total` | host, reason | frames not delivered ([`crate::Error::reason`], `text_message`) |
//! | `barn_firehose_reconnects_total` | host, reason | connections ended or failed (`closed`, `watchdog`, `error_frame`, `oversized`, …) |
//! | `barn_firehose_gaps_total` | host | jumps in seq |
//! | `barn_firehose_gap_seqs_total` | host | seqs skipped by those jumps |
//! | `barn_firehose_duplicates_total` | host | frames dropped because seq ≤ the last seen |
//! | `barn_firehose_queued_bytes` | host | bytes held by frames not yet released by the consumer |

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::error::Result;

/// The firehose metric families. Cheap to clone (the families are shared).
#[derive(Clone, Debug)]
pub struct Metrics {
    frames: IntCounterVec,
    bytes: IntCounterVec,
    rejected: IntCounterVec,
    reconnects: IntCounterVec,
    gaps: IntCounterVec,
    gap_seqs: IntCounterVec,
    duplicates: IntCounterVec,
    queued_bytes: IntGaugeVec,
}

fn counter(name: &str, help: &str, labels: &[&str]) -> Result<IntCounterVec> {
    Ok(IntCounterVec::new(Opts::new(name, help), labels)?)
}

impl Metrics {
    /// Creates the metric families without registering them anywhere.
    pub fn new() -> Result<Metrics> {
        Ok(Metrics {
            frames: counter(
                "barn_firehose_frames_total",
                "firehose frames delivered, by message type",
                &["host", "type"],
            )?,
            bytes: counter(
                "barn_firehose_bytes_total",
                "bytes of firehose frames delivered",
                &["host"],
            )?,
            rejected: counter(
                "barn_firehose_rejected_total",
                "firehose frames rejected (malformed, oversized), by reason",
                &["host", "reason"],
            )?,
            reconnects: counter(
                "barn_firehose_reconnects_total",
                "firehose connections ended or failed, by reason",
                &["host", "reason"],
            )?,
            gaps: counter(
                "barn_firehose_gaps_total",
                "jumps in the firehose seq",
                &["host"],
            )?,
            gap_seqs: counter(
                "barn_firehose_gap_seqs_total",
                "seq numbers skipped by jumps in the firehose seq",
                &["host"],
            )?,
            duplicates: counter(
                "barn_firehose_duplicates_total",
                "firehose frames dropped as already seen (seq not above the last)",
                &["host"],
            )?,
            queued_bytes: IntGaugeVec::new(
                Opts::new(
                    "barn_firehose_queued_bytes",
                    "bytes of firehose frames received but not yet released by the consumer",
                ),
                &["host"],
            )?,
        })
    }

    /// Creates the metric families and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<Metrics> {
        let m = Metrics::new()?;
        registry.register(Box::new(m.frames.clone()))?;
        registry.register(Box::new(m.bytes.clone()))?;
        registry.register(Box::new(m.rejected.clone()))?;
        registry.register(Box::new(m.reconnects.clone()))?;
        registry.register(Box::new(m.gaps.clone()))?;
        registry.register(Box::new(m.gap_seqs.clone()))?;
        registry.register(Box::new(m.duplicates.clone()))?;
        registry.register(Box::new(m.queued_bytes.clone()))?;
        Ok(m)
    }
}

/// Counts and logs the events of one host's subscription.
#[derive(Clone, Debug)]
pub(crate) struct Recorder {
    host: String,
    metrics: Option<Metrics>,
}

impl Recorder {
    pub(crate) fn new(host: &str, metrics: Option<Metrics>) -> Recorder {
        Recorder {
            host: host.to_owned(),
            metrics,
        }
    }

    pub(crate) fn frame(&self, label: &'static str, seq: Option<i64>, bytes: usize) {
        tracing::trace!(host = %self.host, r#type = label, ?seq, bytes, "firehose frame");
        if let Some(m) = &self.metrics {
            m.frames.with_label_values(&[&self.host, label]).inc();
            m.bytes
                .with_label_values(&[&self.host])
                .inc_by(bytes as u64);
        }
    }

    pub(crate) fn rejected(&self, reason: &'static str, detail: &str, bytes: usize) {
        tracing::warn!(host = %self.host, reason, bytes, detail, "firehose frame rejected");
        if let Some(m) = &self.metrics {
            m.rejected.with_label_values(&[&self.host, reason]).inc();
        }
    }

    pub(crate) fn reconnect(&self, reason: &'static str, detail: &str, delay_ms: u128) {
        tracing::info!(host = %self.host, reason, detail, delay_ms, "firehose reconnecting");
        if let Some(m) = &self.metrics {
            m.reconnects.with_label_values(&[&self.host, reason]).inc();
        }
    }

    pub(crate) fn gap(&self, after: i64, next: i64) {
        tracing::info!(host = %self.host, after, next, "firehose seq gap");
        if let Some(m) = &self.metrics {
            m.gaps.with_label_values(&[&self.host]).inc();
            let skipped = next.saturating_sub(after).saturating_sub(1);
            m.gap_seqs
                .with_label_values(&[&self.host])
                .inc_by(u64::try_from(skipped).unwrap_or(0));
        }
    }

    pub(crate) fn duplicate(&self, seq: i64, last: i64) {
        tracing::debug!(host = %self.host, seq, last, "firehose duplicate dropped");
        if let Some(m) = &self.metrics {
            m.duplicates.with_label_values(&[&self.host]).inc();
        }
    }

    /// The gauge of bytes held by undelivered or unreleased frames.
    pub(crate) fn queued_gauge(&self) -> Option<IntGauge> {
        self.metrics
            .as_ref()
            .map(|m| m.queued_bytes.with_label_values(&[&self.host]))
    }
}
