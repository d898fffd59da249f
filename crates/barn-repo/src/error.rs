//! The crate's error type. Each variant is specific enough to log and to
//! count: [`Error::reason`] gives a stable, low-cardinality label for
//! metrics (`reason="hash_mismatch"`), so callers never parse messages.

use cid::Cid;

use crate::cbor::CborError;
use crate::crypto::CryptoError;
use crate::syntax::SyntaxError;

/// Result alias for barn-repo.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can be wrong with repository data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bytes that are not strict atproto DAG-CBOR.
    #[error("invalid dag-cbor: {0}")]
    Cbor(#[from] CborError),
    /// A syntax type (DID, NSID, record key, …) failed validation.
    #[error(transparent)]
    Syntax(#[from] SyntaxError),
    /// A key or signature problem.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// A value outside the atproto data model (JSON form).
    #[error("invalid data model value: {0}")]
    Data(String),
    /// A CID barn does not accept (version, codec or hash function).
    #[error("unsupported cid {cid}: {reason}")]
    UnsupportedCid {
        /// The CID.
        cid: Cid,
        /// Which part is unsupported.
        reason: &'static str,
    },
    /// A block whose bytes do not hash to its CID.
    #[error("block {0} does not match its hash")]
    HashMismatch(Cid),
    /// The CAR stream ended inside a header or block.
    #[error("car truncated: {0}")]
    CarTruncated(String),
    /// The CAR header is missing or malformed.
    #[error("invalid car header: {0}")]
    CarHeader(String),
    /// A CAR section (varint length, CID prefix) is malformed.
    #[error("malformed car: {0}")]
    CarMalformed(String),
    /// A block larger than the configured limit.
    #[error("block of {size} bytes exceeds the {limit} byte limit")]
    BlockTooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A CAR larger than the configured limit.
    #[error("car exceeds the {limit} byte limit")]
    CarTooLarge {
        /// The limit.
        limit: u64,
    },
    /// A CAR with more blocks than the configured limit.
    #[error("car exceeds the {limit} block limit")]
    TooManyBlocks {
        /// The limit.
        limit: u64,
    },
    /// Reading the CAR source failed.
    #[error("car read failed: {0}")]
    Io(#[from] std::io::Error),
    /// A block the operation needs is not available.
    #[error("missing block {0}")]
    MissingBlock(Cid),
    /// A structurally invalid MST node.
    #[error("invalid mst node {cid}: {reason}")]
    MstNode {
        /// The node's CID.
        cid: Cid,
        /// What is wrong.
        reason: String,
    },
    /// An MST deeper than the limit (a sign of a key-mined tree).
    #[error("mst deeper than {0} layers")]
    MstTooDeep(usize),
    /// An MST key that is not `collection/rkey` or too long.
    #[error("invalid mst key {key:?}: {reason}")]
    MstKey {
        /// The key, lossily decoded.
        key: String,
        /// Why.
        reason: &'static str,
    },
    /// A malformed commit object.
    #[error("invalid commit: {0}")]
    Commit(String),
    /// A commit signature that does not verify.
    #[error("commit signature invalid: {0}")]
    BadSignature(CryptoError),
    /// Commit ops that do not invert to the claimed previous tree.
    #[error("commit inversion failed: {0}")]
    Inversion(String),
    /// A storage backend behind a [`crate::BlockSource`] failed.
    #[error("block source failed: {0}")]
    Source(String),
}

impl Error {
    /// A stable label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Cbor(_) => "bad_cbor",
            Error::Syntax(_) => "bad_syntax",
            Error::Crypto(_) => "bad_key",
            Error::Data(_) => "bad_data",
            Error::UnsupportedCid { .. } => "unsupported_cid",
            Error::HashMismatch(_) => "hash_mismatch",
            Error::CarTruncated(_) => "car_truncated",
            Error::CarHeader(_) => "car_header",
            Error::CarMalformed(_) => "car_malformed",
            Error::BlockTooLarge { .. } => "block_too_large",
            Error::CarTooLarge { .. } => "car_too_large",
            Error::TooManyBlocks { .. } => "too_many_blocks",
            Error::Io(_) => "io",
            Error::MissingBlock(_) => "missing_block",
            Error::MstNode { .. } => "bad_mst_node",
            Error::MstTooDeep(_) => "mst_too_deep",
            Error::MstKey { .. } => "bad_mst_key",
            Error::Commit(_) => "bad_commit",
            Error::BadSignature(_) => "bad_signature",
            Error::Inversion(_) => "inversion_failed",
            Error::Source(_) => "source",
        }
    }
}
