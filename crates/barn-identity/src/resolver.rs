//! The resolver: HTTP fetches behind a TTL cache, single-flight per DID and
//! a concurrency limit.

use std::collections::HashMap;
use std::error::Error as _;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{Semaphore, watch};

use crate::did::{Method, document_url};
use crate::document::Identity;
use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// The cache is swept of expired entries when it reaches this many entries
/// (and then whenever it doubles from the size left after a sweep), so it
/// holds roughly the DIDs seen within one TTL, at amortised O(1) cost.
const MIN_SWEEP_AT: usize = 1024;

/// Settings of a [`Resolver`].
#[derive(Debug, Clone)]
pub struct ResolverConfig {
    /// The PLC directory: did:plc documents are at `{plc_url}/{did}`.
    pub plc_url: String,
    /// Whole-request timeout (connect, headers and body).
    pub timeout: Duration,
    /// How long a resolved document is served from the cache; an older one
    /// is fetched again on the next [`Resolver::resolve`].
    pub ttl: Duration,
    /// HTTP requests allowed at once, across all DIDs.
    pub max_concurrency: usize,
    /// Largest document body accepted.
    pub max_doc_bytes: usize,
    /// Testing only: allow `did:web:localhost%3A<port>` (and `127.0.0.1`),
    /// fetched over plain http.
    pub allow_http_localhost: bool,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            plc_url: "https://plc.directory".into(),
            timeout: Duration::from_secs(10),
            ttl: Duration::from_secs(60 * 60),
            max_concurrency: 16,
            max_doc_bytes: 64 * 1024,
            allow_http_localhost: false,
        }
    }
}

/// Resolves DIDs to [`Identity`]s. Cheap to clone (an `Arc` inside); all
/// clones share one cache, one set of in-flight requests and one limit.
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

struct Inner {
    config: ResolverConfig,
    /// `config.plc_url` without trailing slashes.
    plc_url: String,
    http: reqwest::Client,
    permits: Semaphore,
    state: Mutex<State>,
    metrics: Metrics,
}

/// What a flight's waiters receive: nothing yet, then the outcome.
type Outcome = Option<Result<Arc<Identity>>>;

#[derive(Default)]
struct State {
    cache: HashMap<String, Arc<Identity>>,
    /// The newest request under way per DID. Only that one may write the
    /// cache when it lands: an older one (overtaken by a refresh, or
    /// orphaned by an invalidate) may carry a document from before the
    /// change that prompted the newer one.
    flights: HashMap<String, Flight>,
    next_flight: u64,
    sweep_at: usize,
}

struct Flight {
    id: u64,
    outcome: watch::Receiver<Outcome>,
}

impl Resolver {
    /// Builds a resolver (and its HTTP client). Fails on an unusable
    /// configuration: a PLC URL that is not http(s), zero limits.
    pub fn new(config: ResolverConfig) -> Result<Resolver> {
        let plc_url = config.plc_url.trim_end_matches('/').to_owned();
        let parsed = reqwest::Url::parse(&plc_url)
            .map_err(|e| Error::Config(format!("plc_url {:?}: {e}", config.plc_url)))?;
        if !matches!(parsed.scheme(), "http" | "https")
            || parsed.query().is_some()
            || parsed.fragment().is_some()
        {
            return Err(Error::Config(format!(
                "plc_url {:?} must be a plain http(s) URL",
                config.plc_url
            )));
        }
        if config.timeout.is_zero() || config.max_concurrency == 0 || config.max_doc_bytes == 0 {
            return Err(Error::Config(
                "timeout, max_concurrency and max_doc_bytes must be non-zero".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            // A DID document is served where the DID says, or not at all:
            // following redirects would let a did:web host (or anyone who
            // can inject one) point barn at a document elsewhere, possibly
            // over plain http.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("barn-identity/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config(format!("building the HTTP client: {}", render(&e))))?;
        let metrics = Metrics::new().map_err(|e| Error::Config(format!("metrics: {e}")))?;
        Ok(Resolver {
            inner: Arc::new(Inner {
                permits: Semaphore::new(config.max_concurrency),
                plc_url,
                http,
                state: Mutex::new(State {
                    sweep_at: MIN_SWEEP_AT,
                    ..State::default()
                }),
                metrics,
                config,
            }),
        })
    }

    /// The DID's identity: from the cache if resolved within the TTL,
    /// otherwise from the network. Concurrent calls for one DID share one
    /// request; a call that arrives while a request for the DID is under
    /// way (a refresh included) waits for that request rather than taking
    /// the cached entry, so nothing resolved after a `refresh` started sees
    /// the document from before it.
    ///
    /// Failures are not cached: the next call tries again.
    pub async fn resolve(&self, did: &str) -> Result<Arc<Identity>> {
        let waiting = {
            let mut st = self.inner.lock();
            if let Some(flight) = st.flights.get(did) {
                self.inner.metrics.cache_misses.inc();
                self.inner.metrics.joins.inc();
                tracing::trace!(did, "joining a DID request under way");
                flight.outcome.clone()
            } else if let Some(identity) = st.cache.get(did).filter(|i| self.inner.is_fresh(i)) {
                self.inner.metrics.cache_hits.inc();
                tracing::trace!(did, "DID cache hit");
                return Ok(identity.clone());
            } else {
                self.inner.metrics.cache_misses.inc();
                let (method, url) = self.inner.document_url(did)?;
                self.start_flight(&mut st, did, method, url)
            }
        };
        wait(waiting, did).await
    }

    /// Resolves the DID from the network now, bypassing the cache, and
    /// caches the answer. For after a signature check failed against the
    /// cached key, or on an `#identity` event.
    ///
    /// Always sends a new request, even if one is under way (that one may
    /// have started before the change being reacted to); later `resolve`
    /// calls join this one. On a transport failure the old cache entry is
    /// kept (it expires by TTL as usual); on 404/410 it is dropped.
    pub async fn refresh(&self, did: &str) -> Result<Arc<Identity>> {
        self.inner.metrics.refreshes.inc();
        let waiting = {
            let mut st = self.inner.lock();
            let (method, url) = self.inner.document_url(did)?;
            tracing::debug!(did, "refreshing DID");
            self.start_flight(&mut st, did, method, url)
        };
        wait(waiting, did).await
    }

    /// Forgets the DID: drops its cache entry, and a request under way for
    /// it will answer its waiters but not fill the cache.
    pub fn invalidate(&self, did: &str) {
        self.inner.metrics.invalidations.inc();
        let mut st = self.inner.lock();
        st.cache.remove(did);
        st.flights.remove(did);
        tracing::debug!(did, "invalidated DID");
    }

    /// Extracts the identity from a DID document without any IO: `id` must
    /// be `did`; the first `#atproto` verification method that parses
    /// (`Multikey` or a legacy `EcdsaSecp256{k,r}1VerificationKey2019`) is
    /// the signing key; the first `#atproto_pds` service of type
    /// `AtprotoPersonalDataServer` with an http(s) endpoint is the PDS; the
    /// first valid `at://` handle in `alsoKnownAs` is the handle.
    /// `resolved_at` is now.
    pub fn parse_document(did: &str, doc: &Value) -> Result<Identity> {
        Identity::parse(did, doc)
    }

    /// The cached identity if it is within the TTL; never touches the
    /// network and does not count as a hit or miss.
    pub fn cached(&self, did: &str) -> Option<Arc<Identity>> {
        let st = self.inner.lock();
        st.cache
            .get(did)
            .filter(|i| self.inner.is_fresh(i))
            .cloned()
    }

    /// Puts an identity known by other means (a document read from a PLC
    /// export, a benchmark's generated accounts) into the cache, as if it
    /// had just been resolved: it expires by the TTL like any other entry,
    /// and a request under way for the DID still overrides it when it
    /// lands.
    pub fn prime(&self, identity: Identity) {
        let mut st = self.inner.lock();
        st.cache.insert(identity.did.clone(), Arc::new(identity));
    }

    /// The DID's document as published, fetched now and not cached (for
    /// `describeRepo`, which returns it verbatim). Counts no resolution.
    pub async fn document(&self, did: &str) -> Result<Value> {
        let (_, url) = self.inner.document_url(did)?;
        let _permit = self
            .inner
            .permits
            .acquire()
            .await
            .map_err(|_| Error::Internal {
                did: did.to_owned(),
            })?;
        self.inner.fetch_json(did, &url).await
    }

    /// Where the DID's document would be fetched from, after all the DID
    /// and method checks.
    pub fn document_url(&self, did: &str) -> Result<String> {
        self.inner.document_url(did).map(|(_, url)| url)
    }

    /// The configuration in use.
    pub fn config(&self) -> &ResolverConfig {
        &self.inner.config
    }

    /// This resolver's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Registers this resolver's counters with `registry`.
    pub fn register_metrics(&self, registry: &prometheus::Registry) -> prometheus::Result<()> {
        self.inner.metrics.register(registry)
    }

    /// Starts a request for `did` as the DID's newest flight, in its own
    /// task so that it finishes (and fills the cache) even if every caller
    /// waiting on it is cancelled.
    fn start_flight(
        &self,
        st: &mut State,
        did: &str,
        method: Method,
        url: String,
    ) -> watch::Receiver<Outcome> {
        let id = st.next_flight;
        st.next_flight += 1;
        let (tx, rx) = watch::channel(None);
        st.flights.insert(
            did.to_owned(),
            Flight {
                id,
                outcome: rx.clone(),
            },
        );
        let inner = self.inner.clone();
        let did = did.to_owned();
        tokio::spawn(async move {
            let result = inner.fetch(&did, method, &url).await.map(Arc::new);
            inner.land(&did, id, &result);
            // Waiters hold receivers; if all of them are gone, nobody needs
            // the value, so a send without receivers is fine.
            tx.send_replace(Some(result));
        });
        rx
    }
}

/// Waits for a flight's outcome.
async fn wait(mut outcome: watch::Receiver<Outcome>, did: &str) -> Result<Arc<Identity>> {
    let internal = || Error::Internal {
        did: did.to_owned(),
    };
    match outcome.wait_for(Option::is_some).await {
        Ok(value) => value.clone().unwrap_or_else(|| Err(internal())),
        // The sender was dropped without sending: the task panicked or the
        // runtime is shutting down.
        Err(_) => Err(internal()),
    }
}

impl Inner {
    /// The state lock. Poisoning is ignored: every critical section is a
    /// few map operations that leave the maps consistent even if one of
    /// them panicked.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_fresh(&self, identity: &Identity) -> bool {
        identity.resolved_at.elapsed() < self.config.ttl
    }

    fn document_url(&self, did: &str) -> Result<(Method, String)> {
        document_url(did, &self.plc_url, self.config.allow_http_localhost).inspect_err(|e| {
            self.metrics.resolved_invalid(e.reason());
            tracing::debug!(did, reason = e.reason(), error = %e, "DID not resolvable");
        })
    }

    /// Records a finished flight: if it is still the DID's newest, it
    /// leaves the in-flight map and its answer updates the cache.
    fn land(&self, did: &str, id: u64, result: &Result<Arc<Identity>>) {
        let mut st = self.lock();
        if st.flights.get(did).is_none_or(|f| f.id != id) {
            return;
        }
        st.flights.remove(did);
        match result {
            Ok(identity) => {
                st.cache.insert(did.to_owned(), identity.clone());
                if st.cache.len() >= st.sweep_at {
                    let ttl = self.config.ttl;
                    st.cache.retain(|_, i| i.resolved_at.elapsed() < ttl);
                    st.sweep_at = MIN_SWEEP_AT.max(st.cache.len() * 2);
                }
            }
            Err(e) if e.is_not_found() => {
                st.cache.remove(did);
            }
            Err(_) => {}
        }
    }

    /// One HTTP request and parse, within the concurrency limit.
    async fn fetch(&self, did: &str, method: Method, url: &str) -> Result<Identity> {
        // The semaphore is never closed, so acquire only fails if that
        // changes; treat it as an internal error rather than panic.
        let _permit = self.permits.acquire().await.map_err(|_| Error::Internal {
            did: did.to_owned(),
        })?;
        self.metrics
            .requests
            .with_label_values(&[method.as_str()])
            .inc();
        self.metrics.in_flight.inc();
        let started = Instant::now();
        let result = self
            .fetch_json(did, url)
            .await
            .and_then(|doc| Identity::parse(did, &doc));
        self.metrics.in_flight.dec();
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match &result {
            Ok(identity) => {
                self.metrics.resolved(method, "ok");
                tracing::debug!(
                    did,
                    method = method.as_str(),
                    pds = identity.pds.as_deref().unwrap_or(""),
                    handle = identity.handle.as_deref().unwrap_or(""),
                    elapsed_ms,
                    "resolved DID"
                );
            }
            Err(e) => {
                self.metrics.resolved(method, e.reason());
                if e.is_not_found() {
                    tracing::info!(
                        did,
                        method = method.as_str(),
                        reason = e.reason(),
                        elapsed_ms,
                        "DID is gone"
                    );
                } else {
                    tracing::warn!(did, method = method.as_str(), reason = e.reason(), error = %e, elapsed_ms, "DID resolution failed");
                }
            }
        }
        result
    }

    /// GETs `url` and parses the body as JSON, enforcing status, size and
    /// (through the client) time limits.
    async fn fetch_json(&self, did: &str, url: &str) -> Result<Value> {
        let mut resp = self
            .http
            .get(url)
            .header(
                reqwest::header::ACCEPT,
                "application/did+ld+json, application/json",
            )
            .send()
            .await
            .map_err(|e| transport(url, &e))?;
        let status = resp.status().as_u16();
        match status {
            200..=299 => {}
            404 => {
                return Err(Error::DidNotFound {
                    did: did.to_owned(),
                    url: url.to_owned(),
                });
            }
            410 => {
                return Err(Error::DidTombstoned {
                    did: did.to_owned(),
                    url: url.to_owned(),
                });
            }
            _ => {
                return Err(Error::HttpStatus {
                    url: url.to_owned(),
                    status,
                });
            }
        }
        let limit = self.config.max_doc_bytes;
        let too_large = || Error::TooLarge {
            url: url.to_owned(),
            limit,
        };
        // Content-Length is only a hint (it can be absent or, with
        // compression, differ), so the body is also counted as it arrives.
        if resp.content_length().is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| transport(url, &e))? {
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| Error::BadJson {
            url: url.to_owned(),
            message: e.to_string(),
        })
    }
}

/// A reqwest error as [`Error::Timeout`] or [`Error::Transport`], with its
/// causes (reqwest's own message is often just "error sending request").
fn transport(url: &str, e: &reqwest::Error) -> Error {
    if e.is_timeout() {
        Error::Timeout {
            url: url.to_owned(),
        }
    } else {
        Error::Transport {
            url: url.to_owned(),
            message: render(e),
        }
    }
}

fn render(e: &reqwest::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use barn_repo::crypto::{KeyType, PrivateKey};

    fn identity(did: &str, age: Duration) -> Arc<Identity> {
        Arc::new(Identity {
            did: did.to_owned(),
            signing_key: PrivateKey::from_seed(KeyType::K256, 1).public_key(),
            pds: None,
            handle: None,
            resolved_at: Instant::now().checked_sub(age).unwrap(),
        })
    }

    /// Registers a current flight for `did` and returns its id.
    fn fly(r: &Resolver, did: &str) -> u64 {
        let mut st = r.inner.lock();
        let id = st.next_flight;
        st.next_flight += 1;
        let (_tx, outcome) = watch::channel(None);
        st.flights.insert(did.to_owned(), Flight { id, outcome });
        id
    }

    #[test]
    fn resolver_is_clone_send_sync() {
        fn check<T: Clone + Send + Sync + 'static>() {}
        check::<Resolver>();
        fn check_identity<T: Send + Sync>() {}
        check_identity::<Identity>();
        check_identity::<Error>();
    }

    #[tokio::test]
    async fn a_primed_identity_is_served_without_a_request_and_expires_by_ttl() {
        // The PLC URL points nowhere: a request would fail.
        let r = Resolver::new(ResolverConfig {
            plc_url: "http://127.0.0.1:9".into(),
            ttl: Duration::from_secs(60),
            ..ResolverConfig::default()
        })
        .unwrap();
        let did = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa";
        r.prime((*identity(did, Duration::ZERO)).clone());
        let got = r.resolve(did).await.unwrap();
        assert_eq!(got.did, did);
        assert!(r.cached(did).is_some());
        // An entry primed as if resolved long ago is stale: resolve goes to
        // the network (and fails here).
        let old = "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb";
        r.prime((*identity(old, Duration::from_secs(120))).clone());
        assert!(r.cached(old).is_none());
        assert!(r.resolve(old).await.is_err());
    }

    #[test]
    fn unusable_configs_are_rejected() {
        for config in [
            ResolverConfig {
                plc_url: "plc.directory".into(),
                ..ResolverConfig::default()
            },
            ResolverConfig {
                plc_url: "ftp://plc.directory".into(),
                ..ResolverConfig::default()
            },
            ResolverConfig {
                plc_url: "https://plc.directory/?x=1".into(),
                ..ResolverConfig::default()
            },
            ResolverConfig {
                max_concurrency: 0,
                ..ResolverConfig::default()
            },
            ResolverConfig {
                timeout: Duration::ZERO,
                ..ResolverConfig::default()
            },
            ResolverConfig {
                max_doc_bytes: 0,
                ..ResolverConfig::default()
            },
        ] {
            let err = Resolver::new(config.clone()).unwrap_err();
            assert_eq!(err.reason(), "config", "{config:?}: {err}");
        }
        let r = Resolver::new(ResolverConfig {
            plc_url: "http://localhost:2582//".into(),
            ..ResolverConfig::default()
        })
        .unwrap();
        assert_eq!(
            r.document_url("did:plc:ewvi7nxzyoun6zhxrhs64oiz").unwrap(),
            "http://localhost:2582/did:plc:ewvi7nxzyoun6zhxrhs64oiz"
        );
    }

    #[test]
    fn only_the_current_flight_writes_the_cache() {
        let r = Resolver::new(ResolverConfig::default()).unwrap();
        let did = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";
        let old = fly(&r, did);
        let new = fly(&r, did);
        r.inner.land(did, old, &Ok(identity(did, Duration::ZERO)));
        assert!(r.cached(did).is_none(), "a superseded flight is ignored");
        assert!(r.inner.lock().flights.contains_key(did));
        let landed = identity(did, Duration::ZERO);
        r.inner.land(did, new, &Ok(landed.clone()));
        assert!(Arc::ptr_eq(&r.cached(did).unwrap(), &landed));
        assert!(r.inner.lock().flights.is_empty());

        // A transient failure keeps the last good answer; 404/410 drop it.
        let id = fly(&r, did);
        let transient = Error::Timeout { url: "u".into() };
        r.inner.land(did, id, &Err(transient));
        assert!(r.cached(did).is_some());
        let id = fly(&r, did);
        let gone = Error::DidTombstoned {
            did: did.into(),
            url: "u".into(),
        };
        r.inner.land(did, id, &Err(gone));
        assert!(r.cached(did).is_none());

        // invalidate() orphans the flight under way.
        let id = fly(&r, did);
        r.invalidate(did);
        r.inner.land(did, id, &Ok(identity(did, Duration::ZERO)));
        assert!(r.cached(did).is_none());
    }

    #[test]
    fn a_full_cache_is_swept_of_expired_entries() {
        let r = Resolver::new(ResolverConfig::default()).unwrap();
        let hours = |h: u64| Duration::from_secs(h * 3600);
        for i in 0..MIN_SWEEP_AT {
            let did = format!("did:web:host{i}.example.com");
            let id = fly(&r, &did);
            let age = if i % 2 == 0 { hours(2) } else { Duration::ZERO };
            r.inner.land(&did, id, &Ok(identity(&did, age)));
        }
        let st = r.inner.lock();
        assert_eq!(st.cache.len(), MIN_SWEEP_AT / 2);
        assert!(st.cache.values().all(|i| r.inner.is_fresh(i)));
        assert_eq!(st.sweep_at, MIN_SWEEP_AT);
    }
}
