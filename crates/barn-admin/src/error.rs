//! The admin API's errors, each with its place in the one error table
//! ([`barn_xrpc::ErrorCode`]: XRPC name, HTTP status, gRPC code).

use barn_xrpc::ErrorCode;

/// What can go wrong answering an admin call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A parameter is missing or malformed; the message says which.
    #[error("{0}")]
    InvalidRequest(String),
    /// No such account, revision or host.
    #[error("{0}")]
    NotFound(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] barn_store::Error),
    /// The mirror failed.
    #[error("mirror: {0}")]
    Mirror(#[from] barn_mirror::Error),
    /// The blob storage failed.
    #[error("blob storage: {0}")]
    Blobs(#[from] barn_blobs::Error),
    /// Serving failed (binding, transport).
    #[error("admin server: {0}")]
    Transport(String),
}

/// The crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Its row in the error table.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidRequest(_) => ErrorCode::InvalidRequest,
            Error::NotFound(_) => ErrorCode::NotFound,
            Error::Mirror(barn_mirror::Error::Identity(_)) => ErrorCode::InvalidRequest,
            _ => ErrorCode::InternalServerError,
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> tonic::Status {
        let code = tonic::Code::from_i32(e.code().grpc_code());
        tonic::Status::new(code, e.to_string())
    }
}
