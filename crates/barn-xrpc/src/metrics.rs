//! barn-xrpc's Prometheus metrics. Rejections are logged where they are
//! counted.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

/// Handles to the gateway metrics; cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    requests: IntCounterVec,
    seconds: HistogramVec,
    car_bytes: IntCounterVec,
    cars_in_flight: IntGauge,
    rejected: IntCounterVec,
}

impl Metrics {
    /// Unregistered metrics (tests, benches).
    pub fn new() -> prometheus::Result<Metrics> {
        Ok(Metrics {
            requests: IntCounterVec::new(
                Opts::new(
                    "barn_xrpc_requests_total",
                    "Gateway requests, by XRPC method and answer (ok or the error name)",
                ),
                &["method", "answer"],
            )?,
            seconds: HistogramVec::new(
                HistogramOpts::new(
                    "barn_xrpc_request_seconds",
                    "Time to the response head, by XRPC method (CAR bodies stream after)",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ]),
                &["method"],
            )?,
            car_bytes: IntCounterVec::new(
                Opts::new(
                    "barn_xrpc_car_bytes_total",
                    "CAR bytes streamed, by kind (current, since, past, record)",
                ),
                &["kind"],
            )?,
            cars_in_flight: IntGauge::new("barn_xrpc_cars_in_flight", "CAR exports streaming now")?,
            rejected: IntCounterVec::new(
                Opts::new(
                    "barn_xrpc_rejected_total",
                    "Requests refused before a handler ran or while streaming, by reason",
                ),
                &["reason"],
            )?,
        })
    }

    /// Metrics registered in `registry`.
    pub fn registered(registry: &Registry) -> prometheus::Result<Metrics> {
        let m = Metrics::new()?;
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.seconds.clone()))?;
        registry.register(Box::new(m.car_bytes.clone()))?;
        registry.register(Box::new(m.cars_in_flight.clone()))?;
        registry.register(Box::new(m.rejected.clone()))?;
        Ok(m)
    }

    pub(crate) fn request(&self, method: &str, answer: &str, seconds: f64) {
        self.requests.with_label_values(&[method, answer]).inc();
        self.seconds.with_label_values(&[method]).observe(seconds);
    }

    pub(crate) fn car_bytes(&self, kind: &str, n: u64) {
        self.car_bytes.with_label_values(&[kind]).inc_by(n);
    }

    pub(crate) fn car_started(&self) {
        self.cars_in_flight.inc();
    }

    pub(crate) fn car_ended(&self) {
        self.cars_in_flight.dec();
    }

    pub(crate) fn rejected(&self, reason: &str) {
        self.rejected.with_label_values(&[reason]).inc();
    }

    /// Requests counted for `method` with `answer` (tests).
    pub fn requests(&self, method: &str, answer: &str) -> u64 {
        self.requests.with_label_values(&[method, answer]).get()
    }

    /// Rejections counted for `reason` (tests).
    pub fn rejections(&self, reason: &str) -> u64 {
        self.rejected.with_label_values(&[reason]).get()
    }
}
