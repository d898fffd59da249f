//! Configuration: raw (TOML file, `BARN_*` environment, flags), merged in
//! that order of precedence (flags win), then validated into [`Config`].
//! Errors name the key and the fix.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

/// The config file as written: every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Where the store lives (`./data/store` by default).
    pub data_dir: Option<PathBuf>,
    /// The PLC directory.
    pub plc_url: Option<String>,
    /// Hosts tracked whole.
    pub hosts: Option<Vec<String>>,
    /// Accounts (DIDs) tracked wherever they are hosted.
    pub accounts: Option<Vec<String>>,
    /// Accept `http://localhost` did:web documents (tests only).
    pub allow_http_localhost: Option<bool>,
    /// Mirror tuning.
    pub mirror: Option<RawMirror>,
    /// Blob fetching and storage.
    pub blobs: Option<RawBlobs>,
    /// The XRPC gateway.
    pub gateway: Option<RawGateway>,
    /// The admin gRPC API.
    pub admin: Option<RawAdmin>,
}

/// `[admin]` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Serve at all.
    pub enabled: Option<bool>,
    /// Address to listen on (`127.0.0.1:2481` by default).
    pub listen: Option<String>,
}

/// `[gateway]` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    /// Serve at all.
    pub enabled: Option<bool>,
    /// Address to listen on (`127.0.0.1:2480` by default).
    pub listen: Option<String>,
    /// barn's service DID (the `aud` of owner JWTs).
    pub service_did: Option<String>,
    /// The operator's bearer token (better: `BARN_ADMIN_TOKEN` or
    /// `admin_token_file`).
    pub admin_token: Option<String>,
    /// A file holding the operator's bearer token.
    pub admin_token_file: Option<PathBuf>,
    /// CAR exports streaming at once.
    pub max_concurrent_cars: Option<usize>,
    /// Wait for a CAR slot at most this long, ms.
    pub car_queue_timeout_ms: Option<u64>,
    /// Give up on a client that takes no data for this long, seconds.
    pub car_stall_timeout_secs: Option<u64>,
    /// Time to a response head, seconds.
    pub request_timeout_secs: Option<u64>,
    /// Requests per second per client address; 0 turns the limit off.
    pub rate_limit_per_second: Option<f64>,
    /// Requests at once per client address after idling.
    pub rate_limit_burst: Option<u32>,
    /// Take the client address from `X-Forwarded-For`.
    pub trust_forwarded_for: Option<bool>,
}

/// `[blobs]` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBlobs {
    /// Fetch blobs at all.
    pub enabled: Option<bool>,
    /// `local` (default) or `s3`.
    pub storage: Option<String>,
    /// The local directory (`<data_dir>/blobs` by default).
    pub dir: Option<PathBuf>,
    /// Largest blob fetched, in bytes.
    pub max_blob_bytes: Option<u64>,
    /// Fetches at once, all hosts together.
    pub concurrency: Option<usize>,
    /// Fetches at once from one host.
    pub per_host: Option<usize>,
    /// Queue polling interval when idle, ms.
    pub poll_ms: Option<u64>,
    /// First retry after a server or network error, ms (doubles).
    pub retry_transient_first_ms: Option<u64>,
    /// First retry of a missing blob, seconds (doubles).
    pub retry_missing_first_secs: Option<u64>,
    /// `[blobs.s3]`.
    pub s3: Option<RawS3>,
}

/// `[blobs.s3]` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawS3 {
    /// Endpoint URL of an S3-compatible server; absent for AWS.
    pub endpoint: Option<String>,
    /// Bucket.
    pub bucket: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// Access key id (else `AWS_ACCESS_KEY_ID`).
    pub access_key_id: Option<String>,
    /// Secret (else `AWS_SECRET_ACCESS_KEY`).
    pub secret_access_key: Option<String>,
    /// Allow an `http://` endpoint.
    pub allow_http: Option<bool>,
}

/// `[mirror]` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMirror {
    /// Largest group commit, in revisions.
    pub group_commit_max: Option<usize>,
    /// Flush a group commit after this many ms without a new frame.
    pub group_commit_delay_ms: Option<u64>,
    /// Largest websocket frame in bytes.
    pub max_frame_bytes: Option<usize>,
    /// Reconnect a socket silent for this many seconds.
    pub watchdog_secs: Option<u64>,
    /// List a new whole host and import every account on it.
    pub backfill: Option<bool>,
    /// Imports at once, all hosts together.
    pub max_imports: Option<usize>,
    /// Imports at once on one host.
    pub max_imports_per_host: Option<usize>,
    /// `listRepos` page size.
    pub list_page: Option<usize>,
    /// Fetch the next `listRepos` page only while fewer imports than this
    /// are queued for the host.
    pub list_queue_max: Option<usize>,
    /// Seconds between reconcile passes over a whole host; 0 turns them off.
    pub reconcile_interval_secs: Option<u64>,
    /// Seconds the firehose gets to explain a listed head newer than barn's.
    pub reconcile_grace_secs: Option<u64>,
    /// Milliseconds before a failed import of a repo is tried again.
    pub resync_retry_ms: Option<u64>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Data directory.
    pub data_dir: PathBuf,
    /// PLC directory URL.
    pub plc_url: String,
    /// Hosts tracked whole, normalized.
    pub hosts: Vec<String>,
    /// Accounts tracked wherever hosted.
    pub accounts: Vec<String>,
    /// Tests only.
    pub allow_http_localhost: bool,
    /// Mirror settings.
    pub mirror: barn_mirror::MirrorConfig,
    /// Blob workers and storage; `None` when blobs are off.
    pub blobs: Option<(barn_blobs::BlobConfig, barn_blobs::StorageConfig)>,
    /// Where the gateway listens, and how it behaves; `None` when off.
    /// Its `admin_token` is filled at start-up from [`Config::admin_token`].
    pub gateway: Option<(std::net::SocketAddr, barn_xrpc::GatewayConfig)>,
    /// Where the admin API listens; `None` when off.
    pub admin_listen: Option<std::net::SocketAddr>,
    /// The operator's token, when the config gives one; otherwise `barn
    /// serve` keeps one in `<data_dir>/admin.token`.
    pub admin_token: Option<String>,
}

impl RawConfig {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> anyhow::Result<RawConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("config file {}", path.display()))
    }

    /// Overlays `other`'s set fields on `self`.
    pub fn merge(mut self, other: RawConfig) -> RawConfig {
        self.data_dir = other.data_dir.or(self.data_dir);
        self.plc_url = other.plc_url.or(self.plc_url);
        self.hosts = other.hosts.or(self.hosts);
        self.accounts = other.accounts.or(self.accounts);
        self.allow_http_localhost = other.allow_http_localhost.or(self.allow_http_localhost);
        self.mirror = match (self.mirror, other.mirror) {
            (Some(a), Some(b)) => Some(RawMirror {
                group_commit_max: b.group_commit_max.or(a.group_commit_max),
                group_commit_delay_ms: b.group_commit_delay_ms.or(a.group_commit_delay_ms),
                max_frame_bytes: b.max_frame_bytes.or(a.max_frame_bytes),
                watchdog_secs: b.watchdog_secs.or(a.watchdog_secs),
                backfill: b.backfill.or(a.backfill),
                max_imports: b.max_imports.or(a.max_imports),
                max_imports_per_host: b.max_imports_per_host.or(a.max_imports_per_host),
                list_page: b.list_page.or(a.list_page),
                list_queue_max: b.list_queue_max.or(a.list_queue_max),
                reconcile_interval_secs: b.reconcile_interval_secs.or(a.reconcile_interval_secs),
                reconcile_grace_secs: b.reconcile_grace_secs.or(a.reconcile_grace_secs),
                resync_retry_ms: b.resync_retry_ms.or(a.resync_retry_ms),
            }),
            (a, b) => b.or(a),
        };
        // The blobs section is taken whole from whichever source sets it
        // (only the file does today).
        self.blobs = other.blobs.or(self.blobs);
        self.gateway = match (self.gateway, other.gateway) {
            (Some(a), Some(b)) => Some(RawGateway {
                enabled: b.enabled.or(a.enabled),
                listen: b.listen.or(a.listen),
                service_did: b.service_did.or(a.service_did),
                admin_token: b.admin_token.or(a.admin_token),
                admin_token_file: b.admin_token_file.or(a.admin_token_file),
                max_concurrent_cars: b.max_concurrent_cars.or(a.max_concurrent_cars),
                car_queue_timeout_ms: b.car_queue_timeout_ms.or(a.car_queue_timeout_ms),
                car_stall_timeout_secs: b.car_stall_timeout_secs.or(a.car_stall_timeout_secs),
                request_timeout_secs: b.request_timeout_secs.or(a.request_timeout_secs),
                rate_limit_per_second: b.rate_limit_per_second.or(a.rate_limit_per_second),
                rate_limit_burst: b.rate_limit_burst.or(a.rate_limit_burst),
                trust_forwarded_for: b.trust_forwarded_for.or(a.trust_forwarded_for),
            }),
            (a, b) => b.or(a),
        };
        self.admin = match (self.admin, other.admin) {
            (Some(a), Some(b)) => Some(RawAdmin {
                enabled: b.enabled.or(a.enabled),
                listen: b.listen.or(a.listen),
            }),
            (a, b) => b.or(a),
        };
        self
    }

    /// Checks every value and fills defaults.
    pub fn validate(self) -> anyhow::Result<Config> {
        let plc_url = self
            .plc_url
            .unwrap_or_else(|| "https://plc.directory".into());
        check_url("plc_url", &plc_url)?;
        let mut hosts = Vec::new();
        for h in self.hosts.unwrap_or_default() {
            check_url("hosts", &h)?;
            hosts.push(barn_mirror::normalize_host(&h));
        }
        let mut accounts = Vec::new();
        for did in self.accounts.unwrap_or_default() {
            if !did.starts_with("did:plc:") && !did.starts_with("did:web:") {
                bail!(
                    "accounts: {did:?} is not a DID; write it like did:plc:abc123 (a handle must be resolved to its DID first)"
                );
            }
            accounts.push(did);
        }
        let mut mirror = barn_mirror::MirrorConfig::default();
        if let Some(m) = self.mirror {
            if let Some(n) = m.group_commit_max {
                if n == 0 {
                    bail!("mirror.group_commit_max must be at least 1 (try 1000)");
                }
                mirror.group_commit_max = n;
            }
            if let Some(ms) = m.group_commit_delay_ms {
                if ms > 1000 {
                    bail!(
                        "mirror.group_commit_delay_ms = {ms} would delay durability past a second; use at most 1000 (default 5)"
                    );
                }
                mirror.group_commit_delay = Duration::from_millis(ms);
            }
            if let Some(b) = m.max_frame_bytes {
                if b < 1024 {
                    bail!(
                        "mirror.max_frame_bytes = {b} is too small for any commit; the default is 5242880"
                    );
                }
                mirror.max_frame_bytes = b;
            }
            if let Some(s) = m.watchdog_secs {
                if s == 0 {
                    bail!("mirror.watchdog_secs must be at least 1 (default 60)");
                }
                mirror.watchdog = Duration::from_secs(s);
            }
            if let Some(b) = m.backfill {
                mirror.backfill = b;
            }
            if let Some(n) = m.max_imports {
                if n == 0 {
                    bail!("mirror.max_imports must be at least 1 (default 4)");
                }
                mirror.max_imports = n;
            }
            if let Some(n) = m.max_imports_per_host {
                if n == 0 {
                    bail!("mirror.max_imports_per_host must be at least 1 (default 2)");
                }
                mirror.max_imports_per_host = n;
            }
            if let Some(n) = m.list_page {
                if !(1..=1000).contains(&n) {
                    bail!(
                        "mirror.list_page = {n}: listRepos pages hold 1 to 1000 repos (default 1000)"
                    );
                }
                mirror.list_page = n;
            }
            if let Some(n) = m.list_queue_max {
                if n == 0 {
                    bail!("mirror.list_queue_max must be at least 1 (default 1000)");
                }
                mirror.list_queue_max = n;
            }
            if let Some(s) = m.reconcile_interval_secs {
                if s != 0 && s < 60 {
                    bail!(
                        "mirror.reconcile_interval_secs = {s} would list every host more than once a minute; use 0 (off) or at least 60 (default 86400)"
                    );
                }
                mirror.reconcile_interval = Duration::from_secs(s);
            }
            if let Some(s) = m.reconcile_grace_secs {
                mirror.reconcile_grace = Duration::from_secs(s);
            }
            if let Some(ms) = m.resync_retry_ms {
                mirror.resync_retry = Duration::from_millis(ms);
            }
        }
        let data_dir = self.data_dir.unwrap_or_else(|| PathBuf::from("./data"));
        let blobs = validate_blobs(self.blobs.unwrap_or_default(), &data_dir)?;
        let mut raw_gateway = self.gateway.unwrap_or_default();
        let admin_token = validate_token(
            raw_gateway.admin_token.take(),
            raw_gateway.admin_token_file.take(),
        )?;
        let gateway = validate_gateway(raw_gateway)?;
        let admin_listen = validate_admin(self.admin.unwrap_or_default())?;
        Ok(Config {
            blobs,
            gateway,
            admin_listen,
            admin_token,
            data_dir,
            plc_url: plc_url.trim_end_matches('/').to_owned(),
            hosts,
            accounts,
            allow_http_localhost: self.allow_http_localhost.unwrap_or(false),
            mirror,
        })
    }
}

/// The default gateway address: loopback only, so that nothing is
/// exposed until the operator says so.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:2480";

fn validate_gateway(
    raw: RawGateway,
) -> anyhow::Result<Option<(std::net::SocketAddr, barn_xrpc::GatewayConfig)>> {
    if raw.enabled == Some(false) {
        return Ok(None);
    }
    let listen_text = raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen: std::net::SocketAddr = listen_text.parse().with_context(|| {
        format!("gateway.listen = {listen_text:?}: write an address and port like 127.0.0.1:2480 or 0.0.0.0:2480")
    })?;
    let mut c = barn_xrpc::GatewayConfig {
        service_did: match raw.service_did {
            Some(d) => d,
            // did:web of the listen address: right for a local barn; a
            // public one sets its own.
            None => format!("did:web:localhost%3A{}", listen.port()),
        },
        ..barn_xrpc::GatewayConfig::default()
    };
    if barn_repo::syntax::Did::validate(&c.service_did).is_err() {
        bail!(
            "gateway.service_did = {:?} is not a DID; use the DID clients put in `aud`, e.g. did:web:barn.example.com",
            c.service_did
        );
    }
    if let Some(n) = raw.max_concurrent_cars {
        if n == 0 {
            bail!("gateway.max_concurrent_cars must be at least 1 (default 32)");
        }
        c.max_concurrent_cars = n;
    }
    if let Some(ms) = raw.car_queue_timeout_ms {
        c.car_queue_timeout = Duration::from_millis(ms);
    }
    if let Some(s) = raw.car_stall_timeout_secs {
        if s == 0 {
            bail!("gateway.car_stall_timeout_secs must be at least 1 (default 60)");
        }
        c.car_stall_timeout = Duration::from_secs(s);
    }
    if let Some(s) = raw.request_timeout_secs {
        if s == 0 {
            bail!("gateway.request_timeout_secs must be at least 1 (default 30)");
        }
        c.request_timeout = Duration::from_secs(s);
    }
    match (raw.rate_limit_per_second, raw.rate_limit_burst) {
        (Some(0.0), _) => c.rate_limit = None,
        (Some(r), _) if !(r > 0.0 && r.is_finite()) => {
            bail!("gateway.rate_limit_per_second = {r}: use a positive number, or 0 for no limit")
        }
        (r, b) => {
            if let Some(l) = &mut c.rate_limit {
                if let Some(r) = r {
                    l.per_second = r;
                }
                if let Some(b) = b {
                    if b == 0 {
                        bail!("gateway.rate_limit_burst must be at least 1 (default 200)");
                    }
                    l.burst = f64::from(b);
                }
            }
        }
    }
    if let Some(t) = raw.trust_forwarded_for {
        c.trust_forwarded_for = t;
    }
    Ok(Some((listen, c)))
}

/// The default admin API address: loopback only.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:2481";

fn validate_admin(raw: RawAdmin) -> anyhow::Result<Option<std::net::SocketAddr>> {
    if raw.enabled == Some(false) {
        return Ok(None);
    }
    let text = raw.listen.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN);
    let addr = text.parse().with_context(|| {
        format!("admin.listen = {text:?}: write an address and port like 127.0.0.1:2481 (or set BARN_ADMIN_LISTEN)")
    })?;
    Ok(Some(addr))
}

/// The operator token from `gateway.admin_token` / `BARN_ADMIN_TOKEN` or
/// `gateway.admin_token_file`.
fn validate_token(token: Option<String>, file: Option<PathBuf>) -> anyhow::Result<Option<String>> {
    let token = match (token, file) {
        (Some(_), Some(_)) => {
            bail!("gateway.admin_token and gateway.admin_token_file are both set; keep one")
        }
        (Some(t), None) => Some(t),
        (None, Some(f)) => Some(
            std::fs::read_to_string(&f)
                .with_context(|| format!("gateway.admin_token_file: reading {}", f.display()))?
                .trim()
                .to_owned(),
        ),
        (None, None) => None,
    };
    if let Some(t) = &token
        && (t.len() < 16 || t.chars().any(char::is_whitespace))
    {
        bail!(
            "gateway admin token: use at least 16 characters without spaces (e.g. the output of `openssl rand -hex 24`)"
        );
    }
    Ok(token)
}

fn validate_blobs(
    raw: RawBlobs,
    data_dir: &Path,
) -> anyhow::Result<Option<(barn_blobs::BlobConfig, barn_blobs::StorageConfig)>> {
    if raw.enabled == Some(false) {
        return Ok(None);
    }
    let mut c = barn_blobs::BlobConfig::default();
    if let Some(n) = raw.max_blob_bytes {
        if n == 0 {
            bail!("blobs.max_blob_bytes must be at least 1 (default 100000000)");
        }
        c.max_blob_bytes = n;
    }
    if let Some(n) = raw.concurrency {
        if n == 0 {
            bail!("blobs.concurrency must be at least 1 (default 16)");
        }
        c.concurrency = n;
    }
    if let Some(n) = raw.per_host {
        if n == 0 {
            bail!("blobs.per_host must be at least 1 (default 4)");
        }
        c.per_host = n;
    }
    if let Some(ms) = raw.poll_ms {
        if !(10..=10_000).contains(&ms) {
            bail!("blobs.poll_ms = {ms}: use 10 to 10000 (default 200)");
        }
        c.poll = Duration::from_millis(ms);
    }
    if let Some(ms) = raw.retry_transient_first_ms {
        c.retry.transient_first = Duration::from_millis(ms.max(1));
    }
    if let Some(s) = raw.retry_missing_first_secs {
        c.retry.missing_first = Duration::from_secs(s.max(1));
    }
    let storage = match raw.storage.as_deref().unwrap_or("local") {
        "local" => {
            if raw.s3.is_some() {
                bail!(
                    "blobs.s3 is set but blobs.storage is \"local\"; set storage = \"s3\" to use it"
                );
            }
            barn_blobs::StorageConfig::Local {
                dir: raw.dir.unwrap_or_else(|| data_dir.join("blobs")),
            }
        }
        "s3" => {
            if raw.dir.is_some() {
                bail!("blobs.dir is for storage = \"local\"; with s3, remove it");
            }
            let s3 = raw.s3.unwrap_or_default();
            let Some(bucket) = s3.bucket.filter(|b| !b.is_empty()) else {
                bail!(
                    "blobs.s3.bucket is required with storage = \"s3\" (an existing bucket's name)"
                );
            };
            if let Some(e) = &s3.endpoint {
                check_url("blobs.s3.endpoint", e)?;
                if e.starts_with("http://") && s3.allow_http != Some(true) {
                    bail!(
                        "blobs.s3.endpoint {e:?} is plain http; set blobs.s3.allow_http = true to allow it"
                    );
                }
            }
            barn_blobs::StorageConfig::S3 {
                endpoint: s3.endpoint,
                bucket,
                region: s3.region.unwrap_or_else(|| "us-east-1".into()),
                access_key_id: s3.access_key_id,
                secret_access_key: s3.secret_access_key,
                allow_http: s3.allow_http.unwrap_or(false),
            }
        }
        other => bail!("blobs.storage = {other:?}: use \"local\" (a directory) or \"s3\""),
    };
    Ok(Some((c, storage)))
}

fn check_url(key: &str, url: &str) -> anyhow::Result<()> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.contains(' ') => Ok(()),
        _ => bail!("{key}: {url:?} is not an http(s) URL; write it like https://pds.example.com"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_compose_config_is_valid() {
        let raw: RawConfig =
            toml::from_str(include_str!("../../../deploy/compose/barn.toml")).unwrap();
        let c = raw.validate().unwrap();
        assert_eq!(c.admin_listen, Some("0.0.0.0:2481".parse().unwrap()));
        assert!(matches!(
            c.blobs,
            Some((_, barn_blobs::StorageConfig::S3 { .. }))
        ));
    }

    #[test]
    fn the_example_config_is_valid() {
        let raw: RawConfig =
            toml::from_str(include_str!("../../../deploy/barn.example.toml")).unwrap();
        let c = raw.validate().unwrap();
        assert_eq!(c.admin_listen, Some("127.0.0.1:2481".parse().unwrap()));
        assert_eq!(c.plc_url, "https://plc.directory");
        assert_eq!(c.mirror.group_commit_max, 1000);
        assert_eq!(c.mirror.max_frame_bytes, 5 << 20);
        let (blobs, storage) = c.blobs.unwrap();
        assert_eq!(blobs.max_blob_bytes, 100_000_000);
        assert_eq!(
            storage,
            barn_blobs::StorageConfig::Local {
                dir: PathBuf::from("./data/blobs")
            }
        );
    }

    #[test]
    fn blob_storage_errors_name_the_key_and_the_fix() {
        let err = |toml: &str| {
            toml::from_str::<RawConfig>(toml)
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string()
        };
        let e = err("[blobs]\nstorage = \"s3\"\n");
        assert!(e.contains("blobs.s3.bucket"), "{e}");
        let e = err(
            "[blobs]\nstorage = \"s3\"\n[blobs.s3]\nbucket = \"b\"\nendpoint = \"http://127.0.0.1:9\"\n",
        );
        assert!(e.contains("allow_http"), "{e}");
        let e = err("[blobs]\nstorage = \"gcs\"\n");
        assert!(e.contains("blobs.storage") && e.contains("s3"), "{e}");
        let c = toml::from_str::<RawConfig>("[blobs]\nenabled = false\n")
            .unwrap()
            .validate()
            .unwrap();
        assert!(c.blobs.is_none());
        let c = toml::from_str::<RawConfig>(
            "[blobs]\nstorage = \"s3\"\n[blobs.s3]\nbucket = \"b\"\nendpoint = \"http://127.0.0.1:9\"\nallow_http = true\n",
        )
        .unwrap()
        .validate()
        .unwrap();
        assert!(matches!(
            c.blobs,
            Some((
                _,
                barn_blobs::StorageConfig::S3 {
                    allow_http: true,
                    ..
                }
            ))
        ));
    }

    #[test]
    fn flags_win_over_file_and_errors_name_the_key() {
        let file: RawConfig = toml::from_str(
            "hosts = [\"https://A.example/\"]\nplc_url = \"https://plc.example\"\n[mirror]\ngroup_commit_max = 10\n",
        )
        .unwrap();
        let flags = RawConfig {
            plc_url: Some("http://localhost:1".into()),
            ..RawConfig::default()
        };
        let c = file.merge(flags).validate().unwrap();
        assert_eq!(c.plc_url, "http://localhost:1");
        assert_eq!(c.hosts, vec!["https://a.example".to_owned()]);
        assert_eq!(c.mirror.group_commit_max, 10);

        let bad = RawConfig {
            hosts: Some(vec!["pds.example".into()]),
            ..RawConfig::default()
        };
        let err = bad.validate().unwrap_err().to_string();
        assert!(
            err.starts_with("hosts:") && err.contains("https://"),
            "{err}"
        );
        let err = toml::from_str::<RawConfig>("hostz = []")
            .unwrap_err()
            .to_string();
        assert!(err.contains("hostz"), "{err}");
    }
}
