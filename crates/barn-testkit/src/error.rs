//! The testkit's error type.

use std::path::PathBuf;

/// Result alias for the testkit.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while running the loopback network or comparing repos.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `interop/network/install.sh` failed.
    #[error("installing {dir} failed (exit {status}); its output:\n{output}")]
    Install {
        /// The npm package directory.
        dir: PathBuf,
        /// Exit status.
        status: String,
        /// Combined output, for the test log.
        output: String,
    },
    /// A node service did not come up.
    #[error("{name} did not start: {reason}\n--- last lines of its log ({log}) ---\n{tail}")]
    Start {
        /// Service name (`plc`, `pds-a`, …).
        name: String,
        /// Why.
        reason: String,
        /// Its log file.
        log: PathBuf,
        /// The end of its log.
        tail: String,
    },
    /// The workload driver failed.
    #[error("workload failed ({status}):\n{stderr}")]
    Workload {
        /// Exit status.
        status: String,
        /// Its stderr.
        stderr: String,
    },
    /// An HTTP request failed or answered with an error.
    #[error("{url}: {message}")]
    Http {
        /// The URL requested.
        url: String,
        /// What happened (status and XRPC error body when there was one).
        message: String,
    },
    /// JSON that did not have the expected shape.
    #[error("unexpected JSON from {what}: {message}")]
    Json {
        /// Whose JSON.
        what: String,
        /// What was wrong.
        message: String,
    },
    /// A repository failed barn-repo's checks.
    #[error("{what}: {source}")]
    Repo {
        /// Which repository / CAR.
        what: String,
        /// The barn-repo error.
        #[source]
        source: Box<barn_repo::Error>,
    },
    /// A DID document without a usable signing key or PDS endpoint.
    #[error("DID document of {did}: {message}")]
    DidDoc {
        /// The DID.
        did: String,
        /// What was wrong.
        message: String,
    },
    /// Two repositories that should be the same are not.
    #[error("{did}: barn's copy differs from the PDS: {message}")]
    Mismatch {
        /// The DID compared.
        did: String,
        /// The differences found.
        message: String,
    },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }

    pub(crate) fn repo(what: impl Into<String>) -> impl FnOnce(barn_repo::Error) -> Error {
        let what = what.into();
        move |source| Error::Repo {
            what,
            source: Box::new(source),
        }
    }
}
