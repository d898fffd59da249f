//! `barn serve`: the live mirror, until SIGTERM or SIGINT. The start-up and
//! the clean stop are shared with `barn backfill`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use barn_blobs::{BlobStorage, BlobWorkers};
use barn_identity::{Resolver, ResolverConfig};
use barn_mirror::{Metrics, Mirror};
use barn_store::{Store, StoreOptions};

use crate::config::Config;

/// A mirror started over the store in the config's data directory.
pub struct Running {
    /// The store the mirror writes.
    pub store: Arc<Store>,
    /// The mirror, with its host tasks started.
    pub mirror: Mirror,
    /// Where the mirror's, the resolver's and the store's metrics are
    /// registered.
    pub registry: prometheus::Registry,
    /// Accounts of the config that could not be tracked, with why.
    pub untracked: Vec<(String, String)>,
    /// The blob workers, unless blobs are off.
    pub blobs: Option<BlobWorkers>,
    /// The blob storage the workers write (the gateway reads it).
    pub blob_storage: Option<BlobStorage>,
    /// The identity resolver the mirror uses.
    pub resolver: Resolver,
}

/// Runs the mirror with `config` until a termination signal, then stops
/// intake, flushes every group commit with its cursor, and returns.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    // Handlers first: a signal during start-up must not kill the process
    // with nothing flushed.
    let mut signals = Signals::new()?;
    let store = open_store(&config)?;
    let running = start(&config, store).await?;
    let token = admin_token(&config)?;
    let gateway = match &config.gateway {
        Some((listen, gw_config)) => {
            let mut gw_config = gw_config.clone();
            gw_config.admin_token = Some(token.clone());
            Some(start_gateway(&running, *listen, &gw_config).await?)
        }
        None => None,
    };
    let admin = match config.admin_listen {
        Some(listen) => Some(start_admin(&running, &config, listen, &token).await?),
        None => None,
    };
    tracing::info!(
        data_dir = %config.data_dir.display(),
        hosts = ?config.hosts,
        accounts = config.accounts.len(),
        "barn is running"
    );
    signals.recv().await;
    // Intake first (the mirror flushes), then the gateway: requests under
    // way get a few seconds to finish.
    // The admin API first: no track/untrack while the mirror stops.
    if let Some((tx, task)) = admin {
        let _ = tx.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    let stopped = stop(&running).await;
    if let Some((tx, task)) = gateway {
        let _ = tx.send(());
        if tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .is_err()
        {
            tracing::warn!("gateway requests still under way after 5 s; leaving them");
        }
    }
    stopped
}

/// Binds the XRPC gateway and serves it until the returned sender fires.
async fn start_gateway(
    running: &Running,
    listen: std::net::SocketAddr,
    config: &barn_xrpc::GatewayConfig,
) -> anyhow::Result<(
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
)> {
    let gateway = barn_xrpc::Gateway::new(
        running.store.clone(),
        running.blob_storage.clone(),
        running.resolver.clone(),
        config.clone(),
        Some(running.registry.clone()),
    )
    .context("starting the XRPC gateway")?;
    gateway.set_live_status(std::sync::Arc::new(crate::status::Live {
        mirror: running.mirror.clone(),
        started: std::time::Instant::now(),
    }));
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| {
        format!("gateway.listen: cannot listen on {listen} (in use? another barn?); set another with --listen or BARN_LISTEN")
    })?;
    let local = listener.local_addr().context("gateway address")?;
    tracing::info!(
        url = %format!("http://{local}"),
        service_did = %config.service_did,
        admin = config.admin_token.is_some(),
        "gateway listening"
    );
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let shutdown = async {
            let _ = rx.await;
        };
        if let Err(e) = gateway.serve(listener, shutdown).await {
            tracing::error!(error = %e, "gateway stopped");
        }
    });
    Ok((tx, task))
}

/// The file under the data directory where `barn serve` keeps the admin
/// token when the config gives none (the CLI reads it from there).
pub const TOKEN_FILE: &str = "admin.token";

/// The operator token: the config's, or the one kept in
/// `<data_dir>/admin.token` (created, readable by its owner only, on the
/// first start).
fn admin_token(config: &Config) -> anyhow::Result<String> {
    if let Some(t) = &config.admin_token {
        return Ok(t.clone());
    }
    let path = config.data_dir.join(TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let mut raw = [0u8; 24];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
        .map_err(|_| anyhow::anyhow!("no randomness for the admin token"))?;
    let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{token}").with_context(|| format!("writing {}", path.display()))?;
    f.sync_all()
        .with_context(|| format!("writing {}", path.display()))?;
    tracing::info!(path = %path.display(), "admin token created (barn's CLI reads it from there)");
    Ok(token)
}

/// Binds the admin API and serves it until the returned sender fires.
async fn start_admin(
    running: &Running,
    config: &Config,
    listen: std::net::SocketAddr,
    token: &str,
) -> anyhow::Result<(
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
)> {
    let metrics =
        barn_admin::Metrics::new(Some(&running.registry)).context("registering admin metrics")?;
    let service = barn_admin::AdminService::new(barn_admin::AdminParts {
        mirror: running.mirror.clone(),
        store: running.store.clone(),
        resolver: running.resolver.clone(),
        blobs: running.blob_storage.clone(),
        config_hosts: config.hosts.clone(),
        config_accounts: config.accounts.clone(),
        metrics: metrics.clone(),
    });
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| {
        format!("admin.listen: cannot listen on {listen} (in use? another barn?); set another with --admin-listen or BARN_ADMIN_LISTEN")
    })?;
    let local = listener.local_addr().context("admin address")?;
    tracing::info!(url = %format!("http://{local}"), "admin API listening");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let token = token.to_owned();
    let task = tokio::spawn(async move {
        let shutdown = async {
            let _ = rx.await;
        };
        if let Err(e) = barn_admin::serve(service, &token, metrics, listener, shutdown).await {
            tracing::error!(error = %e, "admin API stopped");
        }
    });
    Ok((tx, task))
}

/// Opens (or creates) the store under the config's data directory.
pub fn open_store(config: &Config) -> anyhow::Result<Arc<Store>> {
    let store_dir = config.data_dir.join("store");
    std::fs::create_dir_all(&store_dir)
        .with_context(|| format!("creating {}", store_dir.display()))?;
    Ok(Arc::new(
        Store::open(&store_dir, &StoreOptions::default())
            .with_context(|| format!("opening the store in {}", store_dir.display()))?,
    ))
}

/// Starts the mirror over `store`: the config's whole hosts, every host
/// the store's repos name, and the config's accounts.
pub async fn start(config: &Config, store: Arc<Store>) -> anyhow::Result<Running> {
    let resolver = Resolver::new(ResolverConfig {
        plc_url: config.plc_url.clone(),
        allow_http_localhost: config.allow_http_localhost,
        ..ResolverConfig::default()
    })
    .context("identity resolver")?;
    let registry = prometheus::Registry::new();
    let metrics = Metrics::registered(&registry).context("registering metrics")?;
    resolver
        .register_metrics(&registry)
        .context("registering identity metrics")?;
    barn_store::metrics::register(&registry).context("registering store metrics")?;
    let build = prometheus::IntGaugeVec::new(
        prometheus::Opts::new("barn_build_info", "Always 1; the running barn's version"),
        &["version"],
    )
    .and_then(|g| {
        registry.register(Box::new(g.clone()))?;
        Ok(g)
    })
    .context("registering build info")?;
    build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);

    // Blob storage first: a misconfigured bucket stops start-up before any
    // host is followed.
    let mut blob_storage = None;
    let blobs = match &config.blobs {
        Some((blob_config, storage)) => {
            let storage = BlobStorage::open(storage).context("opening blob storage")?;
            blob_storage = Some(storage.clone());
            let blob_metrics =
                barn_blobs::Metrics::registered(&registry).context("registering blob metrics")?;
            tracing::info!(%storage, "blobs go to");
            Some(
                BlobWorkers::start(store.clone(), storage, blob_config.clone(), blob_metrics)
                    .context("starting blob workers")?,
            )
        }
        None => None,
    };
    let mirror = Mirror::new(
        store.clone(),
        resolver.clone(),
        config.mirror.clone(),
        metrics,
    );
    if let Some(workers) = &blobs {
        // Every durable group commit may have queued blobs: look now
        // rather than at the next poll.
        let mut durable = mirror.subscribe_durable();
        let wake = workers.waker();
        tokio::spawn(async move {
            // Lagged is a wake-up too; Closed (the mirror is gone) ends it.
            while let Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) =
                durable.recv().await
            {
                wake();
            }
        });
    }
    mirror.start(&config.hosts).context("starting the mirror")?;
    let mut untracked = Vec::new();
    for did in &config.accounts {
        match mirror.track_account(did).await {
            Ok(pds) => tracing::info!(%did, %pds, "tracking account"),
            // Not fatal: the other hosts and accounts go on.
            Err(e) => {
                tracing::error!(%did, error = %e, "cannot track account (does the DID resolve?)");
                untracked.push((did.clone(), e.to_string()));
            }
        }
    }
    Ok(Running {
        store,
        mirror,
        registry,
        untracked,
        blobs,
        blob_storage,
        resolver,
    })
}

/// Stops intake, flushes every host's group commit and cursor, and syncs
/// the store.
pub async fn stop(running: &Running) -> anyhow::Result<()> {
    tracing::info!("stopping: flushing group commits and cursors");
    let stopped = tokio::time::timeout(Duration::from_secs(20), running.mirror.shutdown()).await;
    if stopped.is_err() {
        tracing::warn!("host tasks did not stop within 20 s");
    }
    if let Some(blobs) = &running.blobs {
        // Fetches under way get a moment; what is cut stays queued.
        if let Err(e) = blobs.stop(Duration::from_secs(5)).await {
            tracing::warn!(error = %e, "blob workers did not stop cleanly");
        }
    }
    running.store.sync().context("final sync")?;
    tracing::info!("stopped");
    Ok(())
}

/// SIGTERM and SIGINT, listened to from creation on.
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers: from now on these signals no longer end the
    /// process, they are reported by [`Signals::recv`].
    pub fn new() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("SIGINT handler")?,
        })
    }

    /// Waits for the next SIGTERM or SIGINT.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
