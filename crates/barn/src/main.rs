//! The `barn` command line: `barn serve` runs the live mirror; the offline
//! repository tools sit beside it.

mod config;
mod serve;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use barn_repo::car::{CarLimits, CarStream};
use barn_repo::commit::verify_repo;
use barn_repo::crypto::PublicKey;
use clap::{Parser, Subcommand};

// The live path allocates many small, short-lived objects on several
// threads (decoded frames, MST nodes, batch entries); glibc's allocator
// spent about a fifth of the ingest benchmark's time on them
// (benches/README.md, "ingest").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "barn",
    version,
    about = "Real-time backup mirror for AT Protocol repositories"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the mirror: follow every configured host's firehose, verify each
    /// commit and store it durably with its history. Stops cleanly on
    /// SIGTERM / SIGINT. Logs go to stderr (level from BARN_LOG, e.g.
    /// `BARN_LOG=debug`).
    Serve(MirrorArgs),
    /// Verify a repository CAR file (as served by com.atproto.sync.getRepo):
    /// every block hash, the MST structure, every record present, and the
    /// commit signature when a key is given. Prints a JSON summary.
    VerifyCar {
        /// Path to the CAR file.
        path: PathBuf,
        /// Expected repository DID.
        #[arg(long)]
        did: Option<String>,
        /// The account's signing key, as `did:key:…`.
        #[arg(long)]
        key: Option<String>,
        /// Also list every record path and CID.
        #[arg(long)]
        records: bool,
    },
}

/// Settings for `barn serve`; each flag also reads a `BARN_*` variable and
/// overrides the config file.
#[derive(clap::Args)]
struct MirrorArgs {
    /// TOML config file (see deploy/barn.example.toml).
    #[arg(long, short, env = "BARN_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (default ./data).
    #[arg(long, env = "BARN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// A host to back up whole, e.g. https://pds.example.com (repeatable;
    /// in the environment, comma-separated).
    #[arg(long = "host", env = "BARN_HOSTS", value_delimiter = ',')]
    hosts: Vec<String>,
    /// An account (DID) to back up wherever it is hosted (repeatable; in
    /// the environment, comma-separated).
    #[arg(long = "account", env = "BARN_ACCOUNTS", value_delimiter = ',')]
    accounts: Vec<String>,
    /// PLC directory (default https://plc.directory).
    #[arg(long, env = "BARN_PLC_URL")]
    plc_url: Option<String>,
    /// Resolve did:web:localhost over plain http (tests only).
    #[arg(long, env = "BARN_ALLOW_HTTP_LOCALHOST", hide = true)]
    allow_http_localhost: bool,
}

impl MirrorArgs {
    /// The config file (if any) overlaid with the flags and `BARN_*`
    /// variables, validated.
    fn config(self) -> anyhow::Result<config::Config> {
        let file = match &self.config {
            Some(path) => config::RawConfig::from_file(path)?,
            None => config::RawConfig::default(),
        };
        let flags = config::RawConfig {
            data_dir: self.data_dir,
            plc_url: self.plc_url,
            hosts: (!self.hosts.is_empty()).then_some(self.hosts),
            accounts: (!self.accounts.is_empty()).then_some(self.accounts),
            allow_http_localhost: self.allow_http_localhost.then_some(true),
            mirror: None,
        };
        file.merge(flags).validate()
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let command = match cli.command {
        Command::Serve(args) => return serve_main(args),
        other => other,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    match command {
        Command::Serve(_) => Ok(()),
        Command::VerifyCar {
            path,
            did,
            key,
            records,
        } => rt.block_on(verify_car(path, did, key, records)),
    }
}

async fn verify_car(
    path: PathBuf,
    did: Option<String>,
    key: Option<String>,
    list_records: bool,
) -> anyhow::Result<()> {
    let key = key
        .map(|k| PublicKey::from_did_key(&k))
        .transpose()
        .context("parsing --key")?;
    let started = Instant::now();
    let file = tokio::fs::File::open(&path)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    // Streaming read: one block in memory at a time while hashing.
    let car = CarStream::new(file, CarLimits::default())
        .await?
        .collect()
        .await
        .with_context(|| format!("reading {}", path.display()))?;
    let Some(root) = car.root().copied() else {
        bail!("car has no root");
    };
    let repo = verify_repo(&car.blocks, &root, did.as_deref(), key.as_ref())?;
    let mut out = serde_json::json!({
        "ok": true,
        "commit": root.to_string(),
        "did": repo.commit.did,
        "rev": repo.commit.rev,
        "data": repo.commit.data.to_string(),
        "signature": if key.is_some() { "valid" } else { "not checked (no --key)" },
        "records": repo.records.len(),
        "blocks": car.blocks.len(),
        "bytes": car.blocks.byte_len(),
        "seconds": started.elapsed().as_secs_f64(),
    });
    if list_records {
        out["paths"] = repo
            .records
            .iter()
            .map(|(p, c)| serde_json::json!({"path": p, "cid": c.to_string()}))
            .collect();
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// Logs to stderr through `writer`, at BARN_LOG's level or `default`.
fn init_logging<W>(default: &str, writer: W)
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_writer(writer)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BARN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .init();
}

fn multi_thread_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

fn serve_main(args: MirrorArgs) -> anyhow::Result<()> {
    init_logging("info", std::io::stderr);
    let config = args.config()?;
    multi_thread_runtime()?.block_on(serve::serve(config))
}
