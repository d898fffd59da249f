//! barn-identity: DID resolution for barn. A DID (`did:plc` or `did:web`)
//! becomes an [`Identity`]: the key its repository commits must be signed
//! with, the PDS that hosts it, and the handle it claims.
//!
//! - [`Resolver`] fetches DID documents (the PLC directory for `did:plc`,
//!   `https://{host}/.well-known/did.json` for `did:web`), keeps them for a
//!   TTL, shares one request among concurrent callers for the same DID,
//!   and bounds the requests under way. [`Resolver::refresh`] bypasses the
//!   cache when a signature fails or an `#identity` event arrives.
//! - [`Resolver::parse_document`] is the pure part: document JSON to
//!   [`Identity`], usable on documents from anywhere.
//! - [`Error`] says what went wrong, with [`Error::reason`] as the metric
//!   label; "the DID is gone" (404/410) is distinct from "unreachable".
//! - [`Metrics`]: per-resolver prometheus counters.
//!
//! # Terminology
//!
//! - **DID document**: the JSON a DID resolves to. atproto reads three
//!   things from it: the `#atproto` verification method (signing key),
//!   the `#atproto_pds` service (hosting PDS) and `alsoKnownAs` (handle).
//! - **did:plc**: resolved by `GET {plc_url}/{did}` against a PLC
//!   directory (plc.directory in production, `@did-plc/server` in tests).
//!   A **tombstoned** did:plc answers 410 Gone.
//! - **did:web**: resolved from the host named in the DID. atproto allows
//!   only the hostname form (`did:web:example.com`), never path-based.
//! - **Multikey** / **legacy** verification methods: the current key form
//!   (multicodec-prefixed compressed point) and the older
//!   `EcdsaSecp256k1VerificationKey2019` / `EcdsaSecp256r1VerificationKey2019`
//!   suites (raw point). barn-repo's [`barn_repo::crypto::PublicKey`]
//!   parses both; this crate picks the right method out of the document.
//! - **Single-flight**: while a request for a DID is under way, further
//!   callers wait for it instead of sending their own. A **flight** is one
//!   such request.
//!
//! # Tricky bits
//!
//! - **Fragment ids come in two spellings.** plc.directory writes
//!   `did:plc:…#atproto`; `@did-plc/server` (the test directory) and older
//!   documents write `#atproto`. Both are accepted, for keys and services;
//!   the test directory also still serves the legacy key suites.
//! - **First valid wins.** The spec says to use the first *valid*
//!   `#atproto` key and the first valid handle, ignoring the rest; an
//!   unusable PDS entry yields `pds: None` rather than failing the whole
//!   document, because the key alone still verifies the account's commits.
//! - **Only the newest flight writes the cache.** `refresh` always starts a
//!   new request, because one already under way may have left before the
//!   key rotation that made a signature fail; a stale flight that lands
//!   late answers its own waiters but must not overwrite the fresher
//!   answer. `invalidate` orphans the current flight the same way.
//! - **Flights run in their own task**, so a request whose callers were all
//!   cancelled still completes and fills the cache instead of being
//!   dropped halfway (and later callers are not stuck behind a dead one).
//! - **No redirects.** A DID document must be served where the DID says;
//!   following a redirect would let the document come from elsewhere,
//!   possibly downgraded to http.
//! - **Size is checked as bytes arrive**, not only from `Content-Length`,
//!   which may be missing or wrong.
//! - **Failures are not cached**, so a PLC outage is retried on the next
//!   call; callers that resolve per event should back off themselves (see
//!   [`Error::is_transient`]).
//! - **`http` and ports are for tests only.** The spec reserves
//!   `did:web:localhost%3A<port>` for development, so it resolves (over
//!   http) only with [`ResolverConfig::allow_http_localhost`].

mod did;
mod document;
mod error;
pub mod metrics;
mod resolver;

pub use did::{Method, document_url};
pub use document::{Identity, PDS_SERVICE_TYPE};
pub use error::{Error, Result};
pub use metrics::Metrics;
pub use resolver::{Resolver, ResolverConfig};
