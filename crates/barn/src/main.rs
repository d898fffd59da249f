//! The `barn` command line: `barn serve` runs the live mirror, `barn
//! backfill` brings hosts and accounts in once with a progress bar; the
//! offline repository tools sit beside them.

mod backfill;
mod cli;
mod config;
mod serve;
mod status;

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
    /// Back up the given hosts and accounts once, in the foreground, with a
    /// progress bar, and exit when everything is imported.
    ///
    /// Lists every `--host` (`com.atproto.sync.listRepos`) and imports each
    /// repo on it (`getRepo`, verified like everything barn stores), and
    /// imports each `--account`, into the same store as `barn serve` (same
    /// config file, flags and `BARN_*` variables). It exits 0 once every
    /// host's listing is finished and nothing is left to import; the store
    /// then holds a verified head for every repo, and a later `barn serve`
    /// on the same data directory follows the firehoses from there.
    ///
    /// It resumes: stopped by Ctrl-C or SIGTERM it saves what is done
    /// (exit 0), and the next run carries on at the listing page it had
    /// reached, without fetching again the repos already stored. A host
    /// whose listing was finished before is not listed again; only repos
    /// left unimported are fetched.
    ///
    /// Failed fetches are retried (every `mirror.resync_retry_ms`, and a
    /// failing listRepos page with a growing delay); the progress line
    /// counts them. When only failing imports are left, it gives up on them
    /// after `--retry-for`, prints the summary and exits 1; they stay
    /// marked, and the next `backfill` or `serve` tries them again.
    ///
    /// Progress: a bar on a terminal, otherwise a line on stderr every 2 s:
    /// repos done out of those listed so far (`+` while the listing goes
    /// on), imports running and queued, failed attempts (each retried),
    /// rate and ETA. At the end one line on stdout: `backfill done: <N>
    /// repos imported, <F> failed, <S> s`, where F counts the repos and
    /// accounts left without a copy. Logs go to stderr at level warn unless
    /// BARN_LOG says otherwise.
    Backfill(BackfillArgs),
    /// Start backing up a whole host or one account, in the running barn
    /// (remembered across restarts).
    ///
    /// `barn track host https://pds.example.com` follows the host's
    /// firehose and imports every account on it; `barn track account
    /// alice.example.com` (or a DID) follows one account wherever it is
    /// hosted, and follows it when it migrates.
    Track(cli::TrackArgs),
    /// Stop backing up a host or an account. What barn stored is kept
    /// (`barn delete-backup` removes an account's backup).
    Untrack(cli::TrackArgs),
    /// What the running barn is doing: every host with its lag and
    /// imports, the store, the blob queue; with an account, that
    /// account's backup (head, revisions, records, missing blobs).
    Status(cli::StatusArgs),
    /// Write an account's repository as a CAR file, as it is now or as it
    /// was at a past revision (`--rev`) or time (`--at`), from the running
    /// barn. The file is what `com.atproto.sync.getRepo` serves and what
    /// `com.atproto.repo.importRepo` takes to restore the account.
    Export(cli::ExportArgs),
    /// Fetch a host (every repo whose head differs from barn's) or an
    /// account from its PDS now, instead of waiting for the periodic
    /// reconcile.
    Backup(cli::BackupArgs),
    /// Delete everything barn holds of an account (history, records,
    /// blocks and blobs no other account shares) and stop following it.
    /// Cannot be undone.
    DeleteBackup(cli::DeleteArgs),
    /// Print what the running barn makes durable and every admin action,
    /// as it happens, until Ctrl-C.
    Watch(cli::WatchArgs),
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

/// Settings shared by `barn serve` and `barn backfill`; each flag also
/// reads a `BARN_*` variable and overrides the config file.
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
    /// Directory for blobs when they are kept locally (default
    /// <data-dir>/blobs).
    #[arg(long, env = "BARN_BLOB_DIR")]
    blob_dir: Option<PathBuf>,
    /// Resolve did:web:localhost over plain http (tests only).
    #[arg(long, env = "BARN_ALLOW_HTTP_LOCALHOST", hide = true)]
    allow_http_localhost: bool,
    /// Where `barn serve`'s XRPC gateway listens (default 127.0.0.1:2480;
    /// 0.0.0.0:2480 to serve other machines).
    #[arg(long, env = "BARN_LISTEN")]
    listen: Option<String>,
    /// Where the admin API (gRPC, used by `barn track`, `status`, …)
    /// listens (default 127.0.0.1:2481).
    #[arg(long, env = "BARN_ADMIN_LISTEN")]
    admin_listen: Option<String>,
    /// The operator's bearer token for the gateway (history, past
    /// revisions, inactive accounts) and the admin API. From the
    /// environment only, so that it never shows in `ps`; without it
    /// `barn serve` keeps one in <data-dir>/admin.token.
    #[arg(skip = std::env::var("BARN_ADMIN_TOKEN").ok())]
    admin_token: Option<String>,
}

/// `barn backfill`: the mirror's settings, and when to give up.
#[derive(clap::Args)]
struct BackfillArgs {
    #[command(flatten)]
    mirror: MirrorArgs,
    /// Once nothing but failing imports is left, how many seconds to keep
    /// retrying them, counted from the last import that succeeded, before
    /// giving up (exit 1).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    retry_for: u64,
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
            blobs: None,
            gateway: (self.listen.is_some() || self.admin_token.is_some()).then(|| {
                config::RawGateway {
                    listen: self.listen,
                    admin_token: self.admin_token,
                    ..Default::default()
                }
            }),
            admin: self.admin_listen.map(|listen| config::RawAdmin {
                listen: Some(listen),
                ..Default::default()
            }),
        };
        let mut raw = file.merge(flags);
        if let Some(dir) = self.blob_dir {
            raw.blobs.get_or_insert_default().dir = Some(dir);
        }
        raw.validate()
    }
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The chain of causes on one line: what a person needs, not a
            // backtrace (BARN_LOG=debug and the logs have the rest).
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let command = match cli.command {
        Command::Serve(args) => return serve_main(args),
        Command::Backfill(args) => return backfill_main(args),
        Command::Track(args) => return cli::run(cli::Action::Track(args)),
        Command::Untrack(args) => return cli::run(cli::Action::Untrack(args)),
        Command::Status(args) => return cli::run(cli::Action::Status(args)),
        Command::Export(args) => return cli::run(cli::Action::Export(args)),
        Command::Backup(args) => return cli::run(cli::Action::Backup(args)),
        Command::DeleteBackup(args) => return cli::run(cli::Action::Delete(args)),
        Command::Watch(args) => return cli::run(cli::Action::Watch(args)),
        other => other,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    match command {
        Command::Serve(_)
        | Command::Backfill(_)
        | Command::Track(_)
        | Command::Untrack(_)
        | Command::Status(_)
        | Command::Export(_)
        | Command::Backup(_)
        | Command::DeleteBackup(_)
        | Command::Watch(_) => Ok(()),
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
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_env("BARN_LOG")
        // The storage engine's own info lines (table flushes) say nothing
        // an operator acts on.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(format!("{default},fjall=warn,lsm_tree=warn"))
        });
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(writer)
                // Colours for people at a terminal; plain text for files
                // and journald, where escape codes are noise.
                .with_ansi(std::io::stderr().is_terminal()),
        )
        // The status page's "recent warnings and errors".
        .with(status::RecentErrors)
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

fn backfill_main(args: BackfillArgs) -> anyhow::Result<()> {
    let bar = backfill::new_bar();
    // Default level warn, not serve's info: at info every import and page
    // logs a line (hundreds a second on a big host), which would bury the
    // bar and the plain progress lines; the bar and the counts say the
    // same thing. Warnings and errors (a failing host, an import that will
    // be retried) still show, written through `suspend` so that a line
    // never lands in the middle of the bar; BARN_LOG=info brings the rest.
    let writer = backfill::LogWriter::new(bar.clone());
    init_logging("warn", move || writer.clone());
    let mut config = args.mirror.config()?;
    // A backfill lists every host that has not been listed to the end,
    // whatever the config file says for `serve`.
    config.mirror.backfill = true;
    // The periodic reconcile is `serve`'s job: here it would only start
    // a sweep of a host listed more than a day ago, which is not what
    // this command was asked to wait for.
    config.mirror.reconcile_interval = std::time::Duration::ZERO;
    let options = backfill::Options {
        retry_for: std::time::Duration::from_secs(args.retry_for),
    };
    multi_thread_runtime()?.block_on(backfill::backfill(config, bar, options))
}
