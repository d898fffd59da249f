//! The crate's error type. Every variant has a short, stable label
//! ([`Error::reason`]) for the `outcome` metric label and for logs, so
//! callers never match on messages.
//!
//! The enum is `Clone` because one failed request is handed to every caller
//! that joined it (single-flight); transport errors are therefore kept as
//! their message rather than as the non-clonable `reqwest::Error`.

use barn_repo::crypto::CryptoError;

/// Result alias for barn-identity.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong resolving a DID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The string is not a valid DID (generic syntax, or the method's own
    /// identifier rules).
    #[error("invalid did {did:?}: {reason}")]
    InvalidDid {
        /// The input.
        did: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A syntactically valid DID whose method atproto does not use.
    #[error("unsupported did method in {did:?}")]
    UnsupportedMethod {
        /// The DID.
        did: String,
    },
    /// A `did:web` that atproto does not allow: path-based, a port on a
    /// host other than localhost, a reserved TLD, or localhost without
    /// [`crate::ResolverConfig::allow_http_localhost`].
    #[error("unsupported did:web {did:?}: {reason}")]
    UnsupportedDidWeb {
        /// The DID.
        did: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The directory or web host says the DID does not exist (HTTP 404).
    #[error("{did} not found (HTTP 404 from {url})")]
    DidNotFound {
        /// The DID.
        did: String,
        /// Where it was looked up.
        url: String,
    },
    /// The DID existed and was deactivated for good (HTTP 410; a did:plc
    /// tombstone).
    #[error("{did} is tombstoned (HTTP 410 from {url})")]
    DidTombstoned {
        /// The DID.
        did: String,
        /// Where it was looked up.
        url: String,
    },
    /// Any other non-success HTTP status (including redirects, which the
    /// resolver does not follow).
    #[error("HTTP {status} from {url}")]
    HttpStatus {
        /// The URL requested.
        url: String,
        /// The status code.
        status: u16,
    },
    /// No complete answer within [`crate::ResolverConfig::timeout`].
    #[error("timed out fetching {url}")]
    Timeout {
        /// The URL requested.
        url: String,
    },
    /// Connection, TLS or protocol failure.
    #[error("fetching {url}: {message}")]
    Transport {
        /// The URL requested.
        url: String,
        /// The underlying error, rendered.
        message: String,
    },
    /// The document is larger than
    /// [`crate::ResolverConfig::max_doc_bytes`].
    #[error("document at {url} exceeds {limit} bytes")]
    TooLarge {
        /// The URL requested.
        url: String,
        /// The configured limit.
        limit: usize,
    },
    /// The body is not a JSON object.
    #[error("document at {url} is not a JSON object: {message}")]
    BadJson {
        /// The URL requested.
        url: String,
        /// Why it did not parse.
        message: String,
    },
    /// The document's `id` is not the DID that was resolved. Accepting it
    /// would let one host speak for another's DID.
    #[error("document for {did} has id {id:?}")]
    IdMismatch {
        /// The DID resolved.
        did: String,
        /// The `id` found (empty when absent or not a string).
        id: String,
    },
    /// No `#atproto` verification method.
    #[error("document for {did} has no #atproto verification method")]
    NoSigningKey {
        /// The DID.
        did: String,
    },
    /// `#atproto` verification methods exist but none holds a usable key;
    /// this is the first one's problem.
    #[error("document for {did}: bad #atproto key: {source}")]
    BadSigningKey {
        /// The DID.
        did: String,
        /// Why the key did not parse.
        source: CryptoError,
    },
    /// The resolver's configuration is unusable.
    #[error("resolver configuration: {0}")]
    Config(String),
    /// The background request task ended without an answer (it panicked or
    /// the runtime is shutting down).
    #[error("resolution task for {did} ended without an answer")]
    Internal {
        /// The DID.
        did: String,
    },
}

impl Error {
    /// A short, stable, low-cardinality label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::InvalidDid { .. } => "invalid_did",
            Error::UnsupportedMethod { .. } => "unsupported_method",
            Error::UnsupportedDidWeb { .. } => "unsupported_did_web",
            Error::DidNotFound { .. } => "not_found",
            Error::DidTombstoned { .. } => "tombstoned",
            Error::HttpStatus { .. } => "http_status",
            Error::Timeout { .. } => "timeout",
            Error::Transport { .. } => "transport",
            Error::TooLarge { .. } => "too_large",
            Error::BadJson { .. } => "bad_json",
            Error::IdMismatch { .. } => "id_mismatch",
            Error::NoSigningKey { .. } => "no_signing_key",
            Error::BadSigningKey { .. } => "bad_signing_key",
            Error::Config(_) => "config",
            Error::Internal { .. } => "internal",
        }
    }

    /// Whether the DID is authoritatively gone (404 or 410), as opposed to
    /// unreachable: a mirror can stop following such an account, whereas a
    /// transport error only means "try again later".
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Error::DidNotFound { .. } | Error::DidTombstoned { .. }
        )
    }

    /// Whether retrying later may succeed: timeouts, transport failures,
    /// 429 and 5xx. Bad documents and bad DIDs stay bad until their owner
    /// changes them, so they are not transient.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Timeout { .. } | Error::Transport { .. } | Error::Internal { .. } => true,
            Error::HttpStatus { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}
