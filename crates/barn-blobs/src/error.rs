//! barn-blobs' error type.

/// Result alias for barn-blobs.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Failures of the blob machinery itself. A source that does not give a
/// blob is not an error here: it is a fetch outcome, recorded on the
/// blob's state and counted.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] barn_store::Error),
    /// The object store failed (unreachable, refused, misconfigured).
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    /// The storage configuration is unusable.
    #[error("blob storage config: {0}")]
    Config(String),
    /// The dispatcher task failed.
    #[error("{0}")]
    Task(String),
    /// Building the HTTP client failed.
    #[error("http client: {0}")]
    Http(#[from] reqwest::Error),
}

impl Error {
    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Store(e) => e.reason(),
            Error::ObjectStore(_) => "object_store",
            Error::Config(_) => "config",
            Error::Http(_) => "http",
            Error::Task(_) => "task",
        }
    }
}
