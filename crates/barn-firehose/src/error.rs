//! The crate's error type. Every variant says which part of a frame was
//! wrong, and [`Error::reason`] gives the stable, low-cardinality label the
//! metrics use (`reason="missing_field"`), so nobody parses messages.

use barn_repo::cbor::CborError;

/// Result alias for barn-firehose.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a frame could not be decoded, or a subscription could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The frame is larger than the configured limit.
    #[error("frame of {size} bytes exceeds the {limit} byte limit")]
    Oversized {
        /// Its size (as far as known).
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The header is not one strict DAG-CBOR value.
    #[error("invalid header dag-cbor: {0}")]
    HeaderCbor(CborError),
    /// The header is valid DAG-CBOR but not `{op: int, t?: string}`.
    #[error("invalid header: {0}")]
    Header(&'static str),
    /// The frame has a header and nothing after it.
    #[error("frame has a header but no body")]
    MissingBody,
    /// The header's `op` is neither 1 (message) nor -1 (error).
    #[error("unknown header op {0}")]
    UnknownOp(i64),
    /// Bytes follow the body.
    #[error("{0} trailing bytes after the body")]
    TrailingBytes(usize),
    /// The body is not strict DAG-CBOR.
    #[error("invalid body dag-cbor: {0}")]
    BodyCbor(barn_repo::Error),
    /// The body is not a map (payloads must be objects).
    #[error("body of {kind} is not a map")]
    BodyNotMap {
        /// The message type (`#commit`, `error`, …).
        kind: String,
    },
    /// A required field is absent.
    #[error("{kind}: missing required field {field:?}")]
    MissingField {
        /// The message type.
        kind: &'static str,
        /// The field's wire name (`ops[].action` for nested ones).
        field: &'static str,
    },
    /// A field of the wrong type.
    #[error("{kind}: field {field:?} must be {expected}")]
    WrongType {
        /// The message type.
        kind: &'static str,
        /// The field's wire name.
        field: &'static str,
        /// The type it must have.
        expected: &'static str,
    },
    /// A field of the right type with a value the protocol rules out.
    #[error("{kind}: field {field:?} is invalid: {reason}")]
    BadValue {
        /// The message type.
        kind: &'static str,
        /// The field's wire name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A host that cannot be turned into a `ws(s)://` URL.
    #[error("invalid host url {url:?}: {reason}")]
    BadHost {
        /// The configured host.
        url: String,
        /// Why.
        reason: &'static str,
    },
    /// Creating or registering a metric failed.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

impl Error {
    /// A stable label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Oversized { .. } => "oversized",
            Error::HeaderCbor(_) | Error::Header(_) => "bad_header",
            Error::MissingBody => "missing_body",
            Error::UnknownOp(_) => "unknown_op",
            Error::TrailingBytes(_) => "trailing_bytes",
            Error::BodyCbor(_) => "bad_body_cbor",
            Error::BodyNotMap { .. } => "body_not_map",
            Error::MissingField { .. } => "missing_field",
            Error::WrongType { .. } => "wrong_type",
            Error::BadValue { .. } => "bad_value",
            Error::BadHost { .. } => "bad_host",
            Error::Metrics(_) => "metrics",
        }
    }
}
