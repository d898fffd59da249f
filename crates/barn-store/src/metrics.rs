//! The store's Prometheus metrics.

use std::sync::LazyLock;

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};

use crate::store::Batch;

struct Metrics {
    batches: IntCounter,
    revisions: IntCounter,
    block_bytes: IntCounter,
    batch_revisions: Histogram,
    disk_bytes: IntGauge,
}

static METRICS: LazyLock<Option<Metrics>> = LazyLock::new(|| {
    Some(Metrics {
        batches: IntCounter::new(
            "barn_store_batches_total",
            "Atomic, fsynced write batches (group commits)",
        )
        .ok()?,
        revisions: IntCounter::new("barn_store_revisions_total", "Repository revisions stored")
            .ok()?,
        block_bytes: IntCounter::new(
            "barn_store_block_bytes_total",
            "Block bytes written (before compression)",
        )
        .ok()?,
        batch_revisions: Histogram::with_opts(
            HistogramOpts::new("barn_store_batch_revisions", "Revisions per group commit").buckets(
                vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0],
            ),
        )
        .ok()?,
        disk_bytes: IntGauge::new(
            "barn_store_disk_bytes",
            "Bytes the store takes on disk (tables and journal), as of the last scrape",
        )
        .ok()?,
    })
});

/// Updates the size gauge from `store` (called before each scrape: the
/// engine knows its size at no cost).
pub fn refresh(store: &crate::Store) {
    if let Some(m) = METRICS.as_ref()
        && let Ok(bytes) = store.disk_space()
    {
        m.disk_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
}

/// Registers the store's metrics into `registry`.
pub fn register(registry: &Registry) -> prometheus::Result<()> {
    if let Some(m) = METRICS.as_ref() {
        registry.register(Box::new(m.batches.clone()))?;
        registry.register(Box::new(m.revisions.clone()))?;
        registry.register(Box::new(m.block_bytes.clone()))?;
        registry.register(Box::new(m.batch_revisions.clone()))?;
        registry.register(Box::new(m.disk_bytes.clone()))?;
    }
    Ok(())
}

pub(crate) fn record_batch(batch: &Batch) {
    if let Some(m) = METRICS.as_ref() {
        m.batches.inc();
        m.revisions.inc_by(batch.revisions() as u64);
        m.block_bytes.inc_by(batch.block_bytes() as u64);
        m.batch_revisions.observe(batch.revisions() as f64);
    }
    tracing::trace!(
        revisions = batch.revisions(),
        block_bytes = batch.block_bytes(),
        "group commit"
    );
}

/// Counts blocks written by [`Store::ingest_encoded`](crate::Store::ingest_encoded).
pub(crate) fn record_ingest(blocks: usize, bytes: usize) {
    if let Some(m) = METRICS.as_ref() {
        m.block_bytes.inc_by(bytes as u64);
    }
    tracing::trace!(blocks, bytes, "blocks ingested");
}
