//! Prometheus counters for one [`crate::Resolver`].
//!
//! The counters belong to the resolver (not process-wide statics) so that
//! two resolvers, e.g. in tests, never mix their numbers; a process exposes
//! its one resolver by calling [`Metrics::register`] (or
//! [`crate::Resolver::register_metrics`]) once.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::did::Method;

/// The resolver's counters. All are cheap atomic increments.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// `barn_identity_resolutions_total{method, outcome}`: completed network
    /// resolutions; `outcome` is `ok` or an [`crate::Error::reason`]. DIDs
    /// rejected before any request count under `method="none"`.
    pub resolutions: IntCounterVec,
    /// `barn_identity_requests_total{method}`: HTTP requests sent (one per
    /// single-flight, however many callers wait on it).
    pub requests: IntCounterVec,
    /// `barn_identity_cache_hits_total`: `resolve` calls answered from the
    /// cache.
    pub cache_hits: IntCounter,
    /// `barn_identity_cache_misses_total`: `resolve` calls that needed the
    /// network (missing or expired entry), including those that joined a
    /// request already under way.
    pub cache_misses: IntCounter,
    /// `barn_identity_singleflight_joins_total`: calls that waited on a
    /// request another call had started instead of sending their own.
    pub joins: IntCounter,
    /// `barn_identity_refreshes_total`: `refresh` calls.
    pub refreshes: IntCounter,
    /// `barn_identity_invalidations_total`: `invalidate` calls.
    pub invalidations: IntCounter,
    /// `barn_identity_requests_in_flight`: HTTP requests under way now.
    pub in_flight: IntGauge,
}

impl Metrics {
    /// Fresh, unregistered counters.
    pub(crate) fn new() -> prometheus::Result<Metrics> {
        let opts = |name: &str, help: &str| Opts::new(name, help);
        Ok(Metrics {
            resolutions: IntCounterVec::new(
                opts(
                    "barn_identity_resolutions_total",
                    "DID documents fetched and parsed, by DID method and outcome (ok or an error reason)",
                ),
                &["method", "outcome"],
            )?,
            requests: IntCounterVec::new(
                opts(
                    "barn_identity_requests_total",
                    "HTTP requests sent for DID documents, by DID method",
                ),
                &["method"],
            )?,
            cache_hits: IntCounter::with_opts(opts(
                "barn_identity_cache_hits_total",
                "DID resolutions answered from the cache",
            ))?,
            cache_misses: IntCounter::with_opts(opts(
                "barn_identity_cache_misses_total",
                "DID resolutions that needed the network (absent or expired)",
            ))?,
            joins: IntCounter::with_opts(opts(
                "barn_identity_singleflight_joins_total",
                "DID resolutions that waited on a request already under way",
            ))?,
            refreshes: IntCounter::with_opts(opts(
                "barn_identity_refreshes_total",
                "Forced DID re-resolutions (after a signature failure or an #identity event)",
            ))?,
            invalidations: IntCounter::with_opts(opts(
                "barn_identity_invalidations_total",
                "DID cache entries dropped on request",
            ))?,
            in_flight: IntGauge::with_opts(opts(
                "barn_identity_requests_in_flight",
                "HTTP requests for DID documents under way",
            ))?,
        })
    }

    /// Registers every counter with `registry`. Fails if the names are
    /// already registered there (e.g. a second resolver on one registry).
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.resolutions.clone()))?;
        registry.register(Box::new(self.requests.clone()))?;
        registry.register(Box::new(self.cache_hits.clone()))?;
        registry.register(Box::new(self.cache_misses.clone()))?;
        registry.register(Box::new(self.joins.clone()))?;
        registry.register(Box::new(self.refreshes.clone()))?;
        registry.register(Box::new(self.invalidations.clone()))?;
        registry.register(Box::new(self.in_flight.clone()))?;
        Ok(())
    }

    /// HTTP requests sent so far for `method`.
    pub fn requests_sent(&self, method: Method) -> u64 {
        self.requests.with_label_values(&[method.as_str()]).get()
    }

    /// HTTP requests sent so far, all methods.
    pub fn total_requests(&self) -> u64 {
        self.requests_sent(Method::Plc) + self.requests_sent(Method::Web)
    }

    /// A DID rejected before any request (bad syntax, unsupported method or
    /// did:web form): counted under `method="none"`.
    pub(crate) fn resolved_invalid(&self, outcome: &str) {
        self.resolutions.with_label_values(&["none", outcome]).inc();
    }

    pub(crate) fn resolved(&self, method: Method, outcome: &str) {
        self.resolutions
            .with_label_values(&[method.as_str(), outcome])
            .inc();
    }
}
