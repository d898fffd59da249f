//! The store's error type.

/// Result alias for barn-store.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A storage failure. None of these is caused by remote input: they mean
/// the disk, the database, or barn itself is wrong, and the caller stops
/// rather than guess.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// fjall failed (I/O, a poisoned database after a failed fsync, …).
    #[error("database: {0}")]
    Db(Box<fjall::Error>),
    /// A stored value does not decode: corruption or a format change.
    #[error("corrupt {what}: {detail}")]
    Corrupt {
        /// Which keyspace / value.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// A repository operation on stored blocks failed (e.g. a block missing
    /// while exporting a revision).
    #[error(transparent)]
    Repo(Box<barn_repo::Error>),
    /// The requested repo or revision is not stored.
    #[error("not found: {0}")]
    NotFound(String),
    /// barn asked the store for something its contract forbids (a bug in
    /// the caller, refused before anything is written).
    #[error("invalid use of the store: {0}")]
    Invalid(String),
}

// Boxed: these sit on every hot path's `Result`; keep it small.
impl From<fjall::Error> for Error {
    fn from(e: fjall::Error) -> Error {
        Error::Db(Box::new(e))
    }
}

impl From<barn_repo::Error> for Error {
    fn from(e: barn_repo::Error) -> Error {
        Error::Repo(Box::new(e))
    }
}

impl Error {
    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Db(_) => "db",
            Error::Corrupt { .. } => "corrupt",
            Error::Repo(e) => e.reason(),
            Error::NotFound(_) => "not_found",
            Error::Invalid(_) => "invalid",
        }
    }
}
