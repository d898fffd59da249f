//! The admin API's Prometheus metrics.
//!
//! | metric | labels | counts |
//! | --- | --- | --- |
//! | `barn_admin_requests_total` | method, code | admin calls answered, by gRPC code name (`Ok`, `Unauthenticated`, …) |

use prometheus::{IntCounterVec, Opts, Registry};

/// Handles to the admin metrics; cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    requests: IntCounterVec,
}

impl Metrics {
    /// Metrics registered into `registry` (a fresh, unregistered set when
    /// `None`).
    pub fn new(registry: Option<&Registry>) -> prometheus::Result<Metrics> {
        let requests = IntCounterVec::new(
            Opts::new(
                "barn_admin_requests_total",
                "Admin API calls answered, by method and gRPC code",
            ),
            &["method", "code"],
        )?;
        if let Some(r) = registry {
            r.register(Box::new(requests.clone()))?;
        }
        Ok(Metrics { requests })
    }

    pub(crate) fn answered(&self, method: &str, code: tonic::Code) {
        self.requests
            .with_label_values(&[method, &format!("{code:?}")])
            .inc();
    }
}
