//! barn's XRPC gateway: the way back out of the backup.
//!
//! It answers the `com.atproto.sync.*` and `com.atproto.repo.*` read
//! methods a PDS serves (so stock clients can fetch and restore an account
//! from barn), and barn's own methods under [`NAMESPACE`]: a repository as
//! it was at any past revision, its commit history, and an account's
//! backup status. Everything is read from barn-store and barn-blobs; the
//! gateway writes nothing.
//!
//! # Access policy
//!
//! | what | who |
//! | --- | --- |
//! | current state of an active account | anyone |
//! | current state of a deactivated / taken-down / suspended / deleted account | the operator and the owner; others get the error a PDS gives |
//! | history, past revisions, backup status | the operator and the owner |
//!
//! The operator shows the admin bearer token; the owner an atproto
//! service-auth JWT signed with the account's current key, for barn's
//! service DID and for the method called (see [`auth`]).
//!
//! # Limits
//!
//! A request timeout (to the response head), a cap on CAR exports
//! streaming at once (a request waits a little for a slot, then gets
//! `ServerBusy`), a per-address token bucket, and no buffering that grows
//! with a repository: CARs are written from a walk of the tree by a
//! blocking task into a small channel the socket drains.

pub mod auth;
mod car;
pub mod error;
mod limits;
pub mod metrics;
mod own;
mod params;
mod repo;
mod status;
mod sync;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use barn_blobs::BlobStorage;
use barn_identity::Resolver;
use barn_store::{RepoState, Store};
use tokio::sync::Semaphore;

pub use auth::same_secret;
pub use error::{Error, ErrorCode, Result, XrpcError};
pub use limits::RateLimit;
pub use metrics::Metrics;
pub use status::{ErrorLine, HostLine, LiveStatus, StatusSnapshot, ago, human_bytes};

use auth::Caller;
use limits::RateLimiter;
use params::Params;

/// A signature that fails against a cached key this old or older is
/// checked again against a freshly resolved document.
const KEY_REFRESH_AFTER: Duration = Duration::from_secs(60);

/// The reverse-DNS namespace of barn's own methods (see `lexicons/`).
pub const NAMESPACE: &str = "dev.barn";

/// How the gateway behaves.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// barn's service DID: the `aud` owner JWTs must name.
    pub service_did: String,
    /// The operator's bearer token; `None` turns operator access off.
    pub admin_token: Option<String>,
    /// CAR exports streaming at once.
    pub max_concurrent_cars: usize,
    /// How long a CAR request waits for a slot before `ServerBusy`.
    pub car_queue_timeout: Duration,
    /// How long a CAR stream waits for a client to take the next chunk
    /// before giving up on it (frees the slot held by a stalled reader).
    pub car_stall_timeout: Duration,
    /// Time allowed to produce a response head.
    pub request_timeout: Duration,
    /// Per-address rate limit; `None` for none.
    pub rate_limit: Option<RateLimit>,
    /// Take the client address from `X-Forwarded-For` (behind a proxy).
    pub trust_forwarded_for: bool,
    /// How long the backup status waits for the source PDS.
    pub source_timeout: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            service_did: "did:web:localhost".into(),
            admin_token: None,
            max_concurrent_cars: 32,
            car_queue_timeout: Duration::from_secs(10),
            car_stall_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            rate_limit: Some(RateLimit {
                per_second: 50.0,
                burst: 200.0,
            }),
            trust_forwarded_for: false,
            source_timeout: Duration::from_secs(5),
        }
    }
}

/// The gateway's shared state. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<Store>,
    blobs: Option<BlobStorage>,
    resolver: Resolver,
    config: GatewayConfig,
    metrics: Metrics,
    registry: Option<prometheus::Registry>,
    car_slots: Arc<Semaphore>,
    limiter: Option<RateLimiter>,
    http: reqwest::Client,
    /// The running barn's live view, for the status page.
    live: std::sync::OnceLock<Arc<dyn LiveStatus>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("service_did", &self.inner.config.service_did)
            .finish_non_exhaustive()
    }
}

/// One XRPC request, as the handlers see it.
pub(crate) struct Req {
    /// The method's NSID.
    pub method: &'static str,
    pub params: Params,
    pub headers: HeaderMap,
}

impl Gateway {
    /// A gateway over `store` (and `blobs`, when blobs are kept), checking
    /// owner JWTs with keys from `resolver`. `registry` is what `/metrics`
    /// exposes (the gateway registers its own metrics there too).
    pub fn new(
        store: Arc<Store>,
        blobs: Option<BlobStorage>,
        resolver: Resolver,
        config: GatewayConfig,
        registry: Option<prometheus::Registry>,
    ) -> Result<Gateway> {
        if config.max_concurrent_cars == 0 {
            return Err(Error::Config(
                "max_concurrent_cars must be at least 1".into(),
            ));
        }
        if let Some(l) = &config.rate_limit
            && !(l.per_second > 0.0 && l.burst >= 1.0)
        {
            return Err(Error::Config(
                "rate limit: per_second must be > 0 and burst >= 1".into(),
            ));
        }
        barn_repo::syntax::Did::validate(&config.service_did)
            .map_err(|e| Error::Config(format!("service_did {:?}: {e}", config.service_did)))?;
        let metrics = match &registry {
            Some(r) => Metrics::registered(r)?,
            None => Metrics::new()?,
        };
        let http = reqwest::Client::builder()
            .timeout(config.source_timeout)
            .user_agent(concat!("barn/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Gateway {
            inner: Arc::new(Inner {
                store,
                blobs,
                resolver,
                car_slots: Arc::new(Semaphore::new(config.max_concurrent_cars)),
                limiter: config.rate_limit.map(RateLimiter::new),
                config,
                metrics,
                registry,
                http,
                live: std::sync::OnceLock::new(),
            }),
        })
    }

    /// The gateway's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Gives the status page the running barn's live view (hosts,
    /// recent errors); without it the page shows the store only. Set once.
    pub fn set_live_status(&self, live: Arc<dyn LiveStatus>) {
        let _ = self.inner.live.set(live);
    }

    pub(crate) fn live_status(&self) -> Option<&Arc<dyn LiveStatus>> {
        self.inner.live.get()
    }

    /// The axum router: `/` (the status page), `/xrpc/*`, `/metrics`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/", get(status::page))
            .route("/xrpc/_health", get(health))
            .route("/xrpc/{method}", get(xrpc).fallback(wrong_method))
            .route("/metrics", get(metrics_text))
            .fallback(not_found)
            .layer(axum::middleware::from_fn_with_state(self.clone(), guard))
            .with_state(self.clone())
    }

    /// Serves on `listener` until `shutdown` completes, then lets requests
    /// under way finish.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let app = self
            .router()
            .into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await?;
        Ok(())
    }

    pub(crate) fn store(&self) -> &Arc<Store> {
        &self.inner.store
    }

    /// Who the request's credentials say it is, checked for `method` and
    /// for the account `did` (an owner token for another account is
    /// refused before its issuer is resolved: no lookups on behalf of
    /// tokens that could not grant anything); `None` without credentials.
    pub(crate) async fn authenticate(
        &self,
        req: &Req,
        did: &str,
    ) -> Result<Option<Caller>, XrpcError> {
        let Some(value) = req.headers.get(header::AUTHORIZATION) else {
            return Ok(None);
        };
        let token = auth::bearer(value.as_bytes())?;
        if let Some(admin) = &self.inner.config.admin_token
            && auth::same_secret(token, admin)
        {
            return Ok(Some(Caller::Admin));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        let jwt = auth::parse_service_jwt(token, &self.inner.config.service_did, req.method, now)?;
        if jwt.issuer != did {
            return permit(Caller::Owner(jwt.issuer), did, &self.inner.metrics).map(Some);
        }
        let bad_sig = |detail: String| XrpcError::new(ErrorCode::BadJwtSignature, detail);
        let check = |identity: &barn_identity::Identity| {
            if identity.signing_key.key_type() != jwt.key_type {
                return Err(bad_sig(format!(
                    "JWT alg does not match {}'s signing key type",
                    jwt.issuer
                )));
            }
            identity
                .signing_key
                .verify(&jwt.signed, &jwt.signature)
                .map_err(|e| bad_sig(format!("JWT signature does not verify: {e}")))
        };
        let unresolved = |e: barn_identity::Error| {
            bad_sig(format!(
                "could not resolve the issuer {}'s key: {e}",
                jwt.issuer
            ))
        };
        let identity = self
            .inner
            .resolver
            .resolve(&jwt.issuer)
            .await
            .map_err(unresolved)?;
        if let Err(e) = check(&identity) {
            // The owner may have rotated the key since it was cached; but
            // a flood of bad tokens must not become a flood of lookups.
            if identity.resolved_at.elapsed() < KEY_REFRESH_AFTER {
                return Err(e);
            }
            let fresh = self
                .inner
                .resolver
                .refresh(&jwt.issuer)
                .await
                .map_err(unresolved)?;
            check(&fresh)?;
        }
        Ok(Some(Caller::Owner(jwt.issuer)))
    }

    /// Whether the request carries the admin token (nothing else is
    /// looked at: for public methods where only the operator sees more).
    pub(crate) fn is_admin(&self, req: &Req) -> bool {
        self.is_admin_headers(&req.headers)
    }

    /// [`Gateway::is_admin`] for any request's headers.
    pub(crate) fn is_admin_headers(&self, headers: &HeaderMap) -> bool {
        let (Some(value), Some(admin)) = (
            headers.get(header::AUTHORIZATION),
            &self.inner.config.admin_token,
        ) else {
            return false;
        };
        auth::bearer(value.as_bytes()).is_ok_and(|t| auth::same_secret(t, admin))
    }

    /// For methods only the operator and the owner of `did` may call.
    pub(crate) async fn restricted(&self, req: &Req, did: &str) -> Result<Caller, XrpcError> {
        match self.authenticate(req, did).await? {
            None => {
                self.inner.metrics.rejected("auth_required");
                Err(XrpcError::new(
                    ErrorCode::AuthenticationRequired,
                    format!(
                        "{} is for the operator (admin token) or the account's owner (service auth JWT for {}, lxm {})",
                        req.method, self.inner.config.service_did, req.method
                    ),
                ))
            }
            Some(c) => permit(c, did, &self.inner.metrics),
        }
    }

    /// The state of `did` if the caller may read its current state: anyone
    /// for an active account; otherwise the operator or the owner, and the
    /// error a PDS would give to everyone else.
    pub(crate) async fn visible_repo(
        &self,
        req: &Req,
        did: &str,
    ) -> Result<(RepoState, Option<Caller>), XrpcError> {
        let Some(state) = self.inner.store.repo(did)? else {
            return Err(repo_not_found(did));
        };
        if state.active {
            return Ok((state, None));
        }
        match self.authenticate(req, did).await? {
            None => Err(status_error(did, &state)),
            Some(c) => {
                let c = permit(c, did, &self.inner.metrics)?;
                Ok((state, Some(c)))
            }
        }
    }

    /// Turns a DID or handle into a DID barn tracks.
    pub(crate) fn did_of(&self, repo: &str) -> Result<String, XrpcError> {
        if repo.starts_with("did:") {
            return Ok(repo.to_owned());
        }
        self.inner
            .store
            .did_for_handle(repo)?
            .ok_or_else(|| repo_not_found(repo))
    }
}

fn permit(c: Caller, did: &str, metrics: &Metrics) -> Result<Caller, XrpcError> {
    match &c {
        Caller::Admin => Ok(c),
        Caller::Owner(o) if o == did => Ok(c),
        Caller::Owner(o) => {
            metrics.rejected("forbidden");
            tracing::info!(issuer = %o, did, "gateway: owner token for another account");
            Err(XrpcError::new(
                ErrorCode::Forbidden,
                format!("the token is {o}'s; only {did}'s owner or the operator may read this"),
            ))
        }
    }
}

pub(crate) fn repo_not_found(did: &str) -> XrpcError {
    XrpcError::new(
        ErrorCode::RepoNotFound,
        format!("Could not find repo for DID: {did}"),
    )
}

/// The public answer for an account that is not active, as a PDS gives
/// it.
pub(crate) fn status_error(did: &str, state: &RepoState) -> XrpcError {
    match state.status.as_deref() {
        Some("takendown") => XrpcError::new(
            ErrorCode::RepoTakendown,
            format!("Repo has been takendown: {did}"),
        ),
        Some("suspended") => XrpcError::new(
            ErrorCode::RepoSuspended,
            format!("Repo has been suspended: {did}"),
        ),
        Some("deleted") => repo_not_found(did),
        Some(other) => XrpcError::new(
            ErrorCode::RepoDeactivated,
            format!("Repo is not active ({other}): {did}"),
        ),
        None => XrpcError::new(
            ErrorCode::RepoDeactivated,
            format!("Repo has been deactivated: {did}"),
        ),
    }
}

/// The NSIDs the gateway answers; also the `method` metric labels.
const METHODS: &[&str] = &[
    sync::GET_REPO,
    sync::GET_RECORD,
    sync::GET_BLOB,
    sync::LIST_BLOBS,
    sync::LIST_REPOS,
    sync::GET_LATEST_COMMIT,
    sync::GET_REPO_STATUS,
    repo::GET_RECORD,
    repo::LIST_RECORDS,
    repo::DESCRIBE_REPO,
    own::GET_REPO_AT,
    own::LIST_COMMITS,
    own::GET_BACKUP_STATUS,
];

async fn xrpc(
    State(gw): State<Gateway>,
    Path(method): Path<String>,
    headers: HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let Some(&method) = METHODS.iter().find(|m| **m == method) else {
        return if barn_repo::syntax::Nsid::validate(&method).is_ok() {
            XrpcError::new(
                ErrorCode::MethodNotImplemented,
                format!("barn does not serve {method}"),
            )
            .into_response()
        } else {
            XrpcError::invalid("not an XRPC method name").into_response()
        };
    };
    let req = Req {
        method,
        params: Params::parse(query.as_deref()),
        headers,
    };
    let out = match method {
        sync::GET_REPO => sync::get_repo(&gw, &req).await,
        sync::GET_RECORD => sync::get_record(&gw, &req).await,
        sync::GET_BLOB => sync::get_blob(&gw, &req).await,
        sync::LIST_BLOBS => sync::list_blobs(&gw, &req).await,
        sync::LIST_REPOS => sync::list_repos(&gw, &req).await,
        sync::GET_LATEST_COMMIT => sync::get_latest_commit(&gw, &req).await,
        sync::GET_REPO_STATUS => sync::get_repo_status(&gw, &req).await,
        repo::GET_RECORD => repo::get_record(&gw, &req).await,
        repo::LIST_RECORDS => repo::list_records(&gw, &req).await,
        repo::DESCRIBE_REPO => repo::describe_repo(&gw, &req).await,
        own::GET_REPO_AT => own::get_repo_at(&gw, &req).await,
        own::LIST_COMMITS => own::list_commits(&gw, &req).await,
        own::GET_BACKUP_STATUS => own::get_backup_status(&gw, &req).await,
        _ => Err(XrpcError::new(
            ErrorCode::MethodNotImplemented,
            format!("barn does not serve {method}"),
        )),
    };
    match out {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn health() -> Response {
    axum::Json(serde_json::json!({ "version": env!("CARGO_PKG_VERSION") })).into_response()
}

async fn metrics_text(State(gw): State<Gateway>) -> Response {
    barn_store::metrics::refresh(&gw.inner.store);
    let families = match &gw.inner.registry {
        Some(r) => r.gather(),
        None => Vec::new(),
    };
    match prometheus::TextEncoder::new().encode_to_string(&families) {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "gateway: encoding metrics failed");
            XrpcError::new(ErrorCode::InternalServerError, "encoding metrics failed")
                .into_response()
        }
    }
}

async fn wrong_method(method: axum::http::Method) -> Response {
    XrpcError::invalid(format!(
        "Incorrect HTTP method ({method}): barn serves queries only, with GET"
    ))
    .into_response()
}

async fn not_found() -> Response {
    XrpcError::new(ErrorCode::NotFound, "no such path").into_response()
}

/// The client's address: the socket's, or the first `X-Forwarded-For`
/// hop when configured to trust it.
fn client_ip(gw: &Gateway, req: &Request) -> IpAddr {
    // The last hop is the one the trusted proxy added; earlier ones are
    // whatever the client wrote.
    if gw.inner.config.trust_forwarded_for
        && let Some(ip) = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse().ok())
    {
        return bucket_of(ip);
    }
    bucket_of(
        req.extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
    )
}

/// An IPv6 client holds a whole /64: it is one bucket.
fn bucket_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut seg = v6.segments();
                seg[4..].fill(0);
                IpAddr::V6(std::net::Ipv6Addr::from(seg))
            }
        },
        v4 => v4,
    }
}

/// Around every request: the rate limit, the timeout, and the request
/// metrics (by method and answer).
async fn guard(State(gw): State<Gateway>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let path = req.uri().path();
    let method_label = path
        .strip_prefix("/xrpc/")
        .and_then(|m| METHODS.iter().find(|k| **k == m).copied())
        .unwrap_or(match path {
            "/xrpc/_health" => "_health",
            "/metrics" => "metrics",
            _ => "other",
        });
    let exempt = matches!(method_label, "_health" | "metrics");
    if !exempt && let Some(limiter) = &gw.inner.limiter {
        let ip = client_ip(&gw, &req);
        if let Err(wait) = limiter.check(ip, started) {
            gw.inner.metrics.rejected("rate_limited");
            tracing::debug!(%ip, "gateway: rate limited");
            let resp = XrpcError::new(
                ErrorCode::RateLimitExceeded,
                format!("too many requests from {ip}; retry in {wait} s"),
            )
            .retry_after(wait)
            .into_response();
            gw.inner.metrics.request(
                method_label,
                "RateLimitExceeded",
                started.elapsed().as_secs_f64(),
            );
            return resp;
        }
    }
    let resp = match tokio::time::timeout(gw.inner.config.request_timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            gw.inner.metrics.rejected("timeout");
            tracing::warn!(method = method_label, "gateway: request timed out");
            XrpcError::new(
                ErrorCode::RequestTimeout,
                format!(
                    "no answer within {} s",
                    gw.inner.config.request_timeout.as_secs_f64()
                ),
            )
            .into_response()
        }
    };
    let answer = resp
        .extensions()
        .get::<ErrorCode>()
        .map(|c| c.name())
        .unwrap_or("ok");
    gw.inner
        .metrics
        .request(method_label, answer, started.elapsed().as_secs_f64());
    resp
}
