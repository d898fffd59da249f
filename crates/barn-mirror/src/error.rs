//! The mirror's error type.

/// Result alias for barn-mirror.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Failures that stop a host task or a resync. Bad remote input is not an
/// error here: it is a rejection, counted and logged, and barn goes on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed; nothing more can be made durable.
    #[error("store: {0}")]
    Store(#[from] barn_store::Error),
    /// Identity resolution failed.
    #[error("identity: {0}")]
    Identity(#[from] barn_identity::Error),
    /// Fetching from a PDS failed.
    #[error("{url}: {message}")]
    Fetch {
        /// The URL.
        url: String,
        /// What happened.
        message: String,
        /// The XRPC error name when the PDS sent one (`RepoNotFound`, …).
        xrpc_error: Option<String>,
    },
    /// A fetched repository failed verification.
    #[error("repository {did}: {source}")]
    Repo {
        /// The DID.
        did: String,
        /// Why.
        #[source]
        source: Box<barn_repo::Error>,
    },
    /// A blocking task panicked or was cancelled.
    #[error("task: {0}")]
    Task(String),
}

impl Error {
    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Store(_) => "store",
            Error::Identity(e) => e.reason(),
            Error::Fetch { .. } => "fetch",
            Error::Repo { source, .. } => source.reason(),
            Error::Task(_) => "task",
        }
    }
}
