//! barn-mirror: from the hosts' firehoses to durable, verified history.
//!
//! - [`Mirror`] runs one task per tracked host: it subscribes
//!   (barn-firehose), checks every event (host authority, signature, rev
//!   order, `since` / `prevData`, MST inversion: [`verify`]), and writes
//!   what passes to barn-store in group commits that carry the host's
//!   cursor.
//! - A repo that fails a check is never applied: it is marked
//!   desynchronized in the same batch and imported again from a verified
//!   `getRepo` (`import`). `#sync` events, accounts that moved in, and
//!   reconciles end in the same path.
//! - A whole host is backfilled by listing it (`listRepos`, `listing`)
//!   and importing every account, while its live events keep flowing;
//!   the same listing, run periodically or after `OutdatedCursor` /
//!   `FutureCursor`, reconciles barn's heads with the host's, deletes
//!   included.
//! - `#account` sets a repo's status without deleting anything;
//!   `#identity` refreshes the DID document, and an account whose document
//!   names another host is followed there.

mod checks;
mod error;
mod http;
mod import;
mod listing;
pub mod metrics;
mod mirror;
mod pool;
pub mod verify;

pub use error::{Error, Result};
pub use import::{ImportLimits, ImportReport, ImportRequest, import_car};
pub use metrics::Metrics;
pub use mirror::{Durable, HostProgress, Mirror, MirrorConfig, normalize_host};
