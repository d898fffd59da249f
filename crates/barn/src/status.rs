//! The running barn's live view for the status page: hosts' progress
//! from the mirror, and the latest warnings and errors, kept by a log
//! layer as they are written.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;

use barn_xrpc::{ErrorLine, HostLine, LiveStatus, StatusSnapshot};

/// Warnings and errors kept for the page.
const KEEP: usize = 50;

static RECENT: Mutex<VecDeque<ErrorLine>> = Mutex::new(VecDeque::new());

/// A log layer that keeps the last [`KEEP`] warnings and errors.
pub struct RecentErrors;

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        use std::fmt::Write;
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for RecentErrors {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let level = *event.metadata().level();
        if level > tracing::Level::WARN {
            return;
        }
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        let line = ErrorLine {
            at_ms: barn_store::now_ms(),
            level: level.to_string(),
            target: event.metadata().target().to_owned(),
            message: fields.0,
        };
        let mut recent = RECENT.lock().unwrap_or_else(|p| p.into_inner());
        recent.push_front(line);
        recent.truncate(KEEP);
    }
}

/// The live view over a running mirror.
pub struct Live {
    /// The mirror whose hosts are shown.
    pub mirror: barn_mirror::Mirror,
    /// When barn started.
    pub started: Instant,
}

impl LiveStatus for Live {
    fn snapshot(&self) -> StatusSnapshot {
        StatusSnapshot {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_secs: self.started.elapsed().as_secs(),
            hosts: self
                .mirror
                .progress()
                .into_iter()
                .map(|p| HostLine {
                    listing: p
                        .pass
                        .as_ref()
                        .map(|l| (format!("{:?}", l.kind).to_ascii_lowercase(), l.listed)),
                    host: p.host,
                    whole: p.whole,
                    cursor: p.cursor,
                    seq: p.seq,
                    lag_seq: p.lag_seq,
                    lag_ms: p.lag_ms,
                    last_event_ms: p.last_event_ms,
                    imports_queued: p.queued,
                    imports_running: p.importing,
                    imports_failed: p.imports_failed,
                })
                .collect(),
            recent_errors: RECENT
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned()
                .collect(),
        }
    }
}
