//! barn-admin: the operator's gRPC API (`proto/barn/admin/v1/admin.proto`),
//! served with tonic beside the XRPC gateway. The only crate that knows
//! tonic.
//!
//! - [`serve`] runs the service on a listener: every call needs
//!   `authorization: Bearer <admin token>`; the gRPC reflection service is
//!   open (it describes the schema, which is public in the repository) so
//!   that `grpcurl` can list and call methods.
//! - [`connect`] is the client the `barn` command line uses.
//!
//! Errors map through the one table of error codes
//! ([`barn_xrpc::ErrorCode`]) to gRPC codes.

mod error;
pub mod metrics;
mod service;

use std::future::Future;

pub use error::{Error, Result};
pub use metrics::Metrics;
pub use service::{AdminParts, AdminService};

/// The generated protobuf types and the client and server stubs.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("barn.admin.v1");

    /// The encoded file descriptor set (for reflection).
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("barn_admin_descriptor");
}

/// The client the command line uses, with the token on every call.
pub type Client = pb::admin_client::AdminClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, BearerToken>,
>;

/// Adds `authorization: Bearer <token>` to each call.
#[derive(Clone)]
pub struct BearerToken(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

/// Connects to a running barn's admin API at `url` (e.g.
/// `http://127.0.0.1:2481`).
pub async fn connect(url: &str, token: &str) -> Result<Client> {
    let value = format!("Bearer {token}").parse().map_err(|_| {
        Error::InvalidRequest("the admin token has characters a header cannot carry".into())
    })?;
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .map_err(|e| Error::InvalidRequest(format!("admin URL {url:?}: {e}")))?
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| Error::Transport(format!("cannot reach barn's admin API at {url} ({e}); is `barn serve` running, and is this its admin.listen?")))?;
    Ok(pb::admin_client::AdminClient::with_interceptor(
        channel,
        BearerToken(value),
    ))
}

/// Checks each call's bearer token against the admin token (in constant
/// time).
#[derive(Clone)]
struct Auth {
    token: std::sync::Arc<str>,
    metrics: Metrics,
}

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(t) if barn_xrpc::same_secret(t, &self.token) => Ok(req),
            Some(_) => {
                self.metrics.answered("any", tonic::Code::Unauthenticated);
                tracing::warn!("admin call with a wrong token");
                Err(tonic::Status::unauthenticated(
                    "wrong admin token (barn's admin token: BARN_ADMIN_TOKEN, gateway.admin_token_file, or <data_dir>/admin.token)",
                ))
            }
            None => {
                self.metrics.answered("any", tonic::Code::Unauthenticated);
                Err(tonic::Status::unauthenticated(
                    "missing `authorization: Bearer <admin token>`",
                ))
            }
        }
    }
}

/// Serves `service` (and reflection) on `listener` until `shutdown`
/// resolves. Calls need `authorization: Bearer <token>`.
pub async fn serve(
    service: AdminService,
    token: &str,
    metrics: Metrics,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::Transport(e.to_string()))?;
    let auth = Auth {
        token: token.into(),
        metrics,
    };
    tonic::transport::Server::builder()
        .add_service(reflection)
        .add_service(pb::admin_server::AdminServer::with_interceptor(
            service, auth,
        ))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await
        .map_err(|e| Error::Transport(e.to_string()))
}
