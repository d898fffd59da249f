//! barn-mirror: from the hosts' firehoses to durable, verified history.
//!
//! - [`Mirror`] runs one task per tracked host: it subscribes
//!   (barn-firehose), checks every event (host authority, signature, rev
//!   order, `since` / `prevData`, MST inversion: [`verify`]), and writes
//!   what passes to barn-store in group commits that carry the host's
//!   cursor.
//! - A repo that fails a check is never applied: it is marked
//!   desynchronized in the same batch and resynced from a full,
//!   verified `getRepo`. `#sync` events end in the same path.
//! - `#account` sets a repo's status without deleting anything;
//!   `#identity` refreshes the DID document, and an account whose document
//!   names another host is followed there.

mod error;
pub mod metrics;
mod mirror;
mod pool;
pub mod verify;

pub use error::{Error, Result};
pub use metrics::Metrics;
pub use mirror::{Durable, Mirror, MirrorConfig, normalize_host};
