//! barn-xrpc's errors. [`ErrorCode`] is the one table that maps each
//! answer barn gives to an XRPC error name, an HTTP status and a gRPC
//! code, so the gateway and the admin API say the same thing.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Result alias for barn-xrpc.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Failures of the gateway itself (binding, serving).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Binding or serving the socket failed.
    #[error("gateway socket: {0}")]
    Io(#[from] std::io::Error),
    /// The configuration is unusable.
    #[error("gateway config: {0}")]
    Config(String),
    /// Registering metrics failed.
    #[error("gateway metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Http(#[from] reqwest::Error),
}

/// Every error an XRPC answer can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A parameter is missing, malformed or out of range.
    InvalidRequest,
    /// No such repository (or a deleted one, to the public).
    RepoNotFound,
    /// The account is deactivated.
    RepoDeactivated,
    /// The account is taken down.
    RepoTakendown,
    /// The account is suspended.
    RepoSuspended,
    /// The repository has no record at that path.
    RecordNotFound,
    /// The blob is unknown to this account, or barn could not fetch it.
    BlobNotFound,
    /// barn holds no revision with that rev (or none at or before that
    /// time).
    RevisionNotFound,
    /// The method needs credentials and none came.
    AuthenticationRequired,
    /// The bearer token is neither the admin token nor a JWT.
    InvalidToken,
    /// The JWT is malformed or uses an unsupported algorithm or type.
    BadJwt,
    /// The JWT's signature does not verify against the issuer's key.
    BadJwtSignature,
    /// The JWT has expired.
    JwtExpired,
    /// The JWT is for another service.
    BadJwtAudience,
    /// The JWT is for another method.
    BadJwtLexiconMethod,
    /// Valid credentials, for someone else's account.
    Forbidden,
    /// Too many requests from this address.
    RateLimitExceeded,
    /// Too many CAR exports at once; try again shortly.
    ServerBusy,
    /// The request took longer than the configured timeout.
    RequestTimeout,
    /// No such XRPC method here.
    MethodNotImplemented,
    /// No such path.
    NotFound,
    /// barn failed (its store); logged with the detail.
    InternalServerError,
}

impl ErrorCode {
    /// The XRPC `error` name.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "InvalidRequest",
            ErrorCode::RepoNotFound => "RepoNotFound",
            ErrorCode::RepoDeactivated => "RepoDeactivated",
            ErrorCode::RepoTakendown => "RepoTakendown",
            ErrorCode::RepoSuspended => "RepoSuspended",
            ErrorCode::RecordNotFound => "RecordNotFound",
            ErrorCode::BlobNotFound => "BlobNotFound",
            ErrorCode::RevisionNotFound => "RevisionNotFound",
            ErrorCode::AuthenticationRequired => "AuthenticationRequired",
            ErrorCode::InvalidToken => "InvalidToken",
            ErrorCode::BadJwt => "BadJwt",
            ErrorCode::BadJwtSignature => "BadJwtSignature",
            ErrorCode::JwtExpired => "JwtExpired",
            ErrorCode::BadJwtAudience => "BadJwtAudience",
            ErrorCode::BadJwtLexiconMethod => "BadJwtLexiconMethod",
            ErrorCode::Forbidden => "Forbidden",
            ErrorCode::RateLimitExceeded => "RateLimitExceeded",
            ErrorCode::ServerBusy => "ServerBusy",
            ErrorCode::RequestTimeout => "RequestTimeout",
            ErrorCode::MethodNotImplemented => "MethodNotImplemented",
            ErrorCode::NotFound => "NotFound",
            ErrorCode::InternalServerError => "InternalServerError",
        }
    }

    /// The HTTP status. Repository and record errors are 400, as a PDS
    /// answers them (the lexicons declare them as method errors).
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::InvalidRequest
            | ErrorCode::RepoNotFound
            | ErrorCode::RepoDeactivated
            | ErrorCode::RepoTakendown
            | ErrorCode::RepoSuspended
            | ErrorCode::RecordNotFound
            | ErrorCode::BlobNotFound
            | ErrorCode::RevisionNotFound => StatusCode::BAD_REQUEST,
            ErrorCode::AuthenticationRequired
            | ErrorCode::InvalidToken
            | ErrorCode::BadJwt
            | ErrorCode::BadJwtSignature
            | ErrorCode::JwtExpired
            | ErrorCode::BadJwtAudience
            | ErrorCode::BadJwtLexiconMethod => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::RateLimitExceeded => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::ServerBusy => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::RequestTimeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::MethodNotImplemented => StatusCode::NOT_IMPLEMENTED,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::InternalServerError => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The gRPC status code (numeric, as in `google.rpc.Code`), for the
    /// admin API.
    pub fn grpc_code(self) -> i32 {
        const INVALID_ARGUMENT: i32 = 3;
        const DEADLINE_EXCEEDED: i32 = 4;
        const NOT_FOUND: i32 = 5;
        const PERMISSION_DENIED: i32 = 7;
        const RESOURCE_EXHAUSTED: i32 = 8;
        const FAILED_PRECONDITION: i32 = 9;
        const UNIMPLEMENTED: i32 = 12;
        const INTERNAL: i32 = 13;
        const UNAVAILABLE: i32 = 14;
        const UNAUTHENTICATED: i32 = 16;
        match self {
            ErrorCode::InvalidRequest => INVALID_ARGUMENT,
            ErrorCode::RepoNotFound
            | ErrorCode::RecordNotFound
            | ErrorCode::BlobNotFound
            | ErrorCode::RevisionNotFound
            | ErrorCode::NotFound => NOT_FOUND,
            ErrorCode::RepoDeactivated | ErrorCode::RepoTakendown | ErrorCode::RepoSuspended => {
                FAILED_PRECONDITION
            }
            ErrorCode::AuthenticationRequired
            | ErrorCode::InvalidToken
            | ErrorCode::BadJwt
            | ErrorCode::BadJwtSignature
            | ErrorCode::JwtExpired
            | ErrorCode::BadJwtAudience
            | ErrorCode::BadJwtLexiconMethod => UNAUTHENTICATED,
            ErrorCode::Forbidden => PERMISSION_DENIED,
            ErrorCode::RateLimitExceeded => RESOURCE_EXHAUSTED,
            ErrorCode::ServerBusy => UNAVAILABLE,
            ErrorCode::RequestTimeout => DEADLINE_EXCEEDED,
            ErrorCode::MethodNotImplemented => UNIMPLEMENTED,
            ErrorCode::InternalServerError => INTERNAL,
        }
    }
}

/// An XRPC error answer: `{"error": name, "message": …}` with the code's
/// status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XrpcError {
    /// What went wrong.
    pub code: ErrorCode,
    /// For people.
    pub message: String,
    /// Seconds to wait, sent as `Retry-After` (rate limits, busy).
    pub retry_after: Option<u64>,
}

impl XrpcError {
    /// An error with a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> XrpcError {
        XrpcError {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// `InvalidRequest` with a message.
    pub fn invalid(message: impl Into<String>) -> XrpcError {
        XrpcError::new(ErrorCode::InvalidRequest, message)
    }

    /// Adds a `Retry-After`.
    pub fn retry_after(mut self, seconds: u64) -> XrpcError {
        self.retry_after = Some(seconds);
        self
    }

    /// A store failure: logged here with its detail; the client learns only
    /// that barn failed.
    pub fn store(e: barn_store::Error) -> XrpcError {
        tracing::error!(error = %e, reason = e.reason(), "gateway: store read failed");
        XrpcError::new(
            ErrorCode::InternalServerError,
            "barn failed to read its store",
        )
    }
}

impl From<barn_store::Error> for XrpcError {
    fn from(e: barn_store::Error) -> XrpcError {
        XrpcError::store(e)
    }
}

impl std::fmt::Display for XrpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.name(), self.message)
    }
}

impl IntoResponse for XrpcError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.code.name(), "message": self.message });
        let mut resp = (self.code.status(), axum::Json(body)).into_response();
        if let Some(s) = self.retry_after
            && let Ok(v) = axum::http::HeaderValue::from_str(&s.to_string())
        {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, v);
        }
        // Handlers return errors as values; the layer that counts requests
        // reads the code from here.
        resp.extensions_mut().insert(self.code);
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_distinct_name_and_a_non_success_status() {
        let all = [
            ErrorCode::InvalidRequest,
            ErrorCode::RepoNotFound,
            ErrorCode::RepoDeactivated,
            ErrorCode::RepoTakendown,
            ErrorCode::RepoSuspended,
            ErrorCode::RecordNotFound,
            ErrorCode::BlobNotFound,
            ErrorCode::RevisionNotFound,
            ErrorCode::AuthenticationRequired,
            ErrorCode::InvalidToken,
            ErrorCode::BadJwt,
            ErrorCode::BadJwtSignature,
            ErrorCode::JwtExpired,
            ErrorCode::BadJwtAudience,
            ErrorCode::BadJwtLexiconMethod,
            ErrorCode::Forbidden,
            ErrorCode::RateLimitExceeded,
            ErrorCode::ServerBusy,
            ErrorCode::RequestTimeout,
            ErrorCode::MethodNotImplemented,
            ErrorCode::NotFound,
            ErrorCode::InternalServerError,
        ];
        let names: std::collections::HashSet<_> = all.iter().map(|c| c.name()).collect();
        assert_eq!(names.len(), all.len());
        for c in all {
            assert!(c.status().as_u16() >= 400, "{c:?}");
            assert_ne!(c.grpc_code(), 0, "{c:?}");
        }
        // Only barn's own failure is a 5xx that is not about load.
        assert_eq!(ErrorCode::InternalServerError.status(), 500);
        assert_eq!(ErrorCode::Forbidden.grpc_code(), 7);
    }
}
