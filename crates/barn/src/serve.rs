//! `barn serve`: the live mirror, until SIGTERM or SIGINT.

use std::sync::Arc;

use anyhow::Context;
use barn_identity::{Resolver, ResolverConfig};
use barn_mirror::{Metrics, Mirror};
use barn_store::{Store, StoreOptions};

use crate::config::Config;

/// Runs the mirror with `config` until a termination signal, then stops
/// intake, flushes every group commit with its cursor, and returns.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let store_dir = config.data_dir.join("store");
    std::fs::create_dir_all(&store_dir)
        .with_context(|| format!("creating {}", store_dir.display()))?;
    let store = Arc::new(
        Store::open(&store_dir, &StoreOptions::default())
            .with_context(|| format!("opening the store in {}", store_dir.display()))?,
    );
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

    let mirror = Mirror::new(store.clone(), resolver, config.mirror.clone(), metrics);
    mirror.start(&config.hosts).context("starting the mirror")?;
    for did in &config.accounts {
        match mirror.track_account(did).await {
            Ok(pds) => tracing::info!(%did, %pds, "tracking account"),
            // Not fatal: the other hosts and accounts go on.
            Err(e) => {
                tracing::error!(%did, error = %e, "cannot track account (does the DID resolve?)")
            }
        }
    }
    tracing::info!(
        data_dir = %config.data_dir.display(),
        hosts = ?config.hosts,
        accounts = config.accounts.len(),
        "barn is running"
    );

    wait_for_signal().await?;
    tracing::info!("stopping: flushing group commits and cursors");
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(20), mirror.shutdown()).await;
    if stopped.is_err() {
        tracing::warn!("host tasks did not stop within 20 s");
    }
    store.sync().context("final sync")?;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
