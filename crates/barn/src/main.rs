//! The `barn` command line. Today it carries the offline repository tools
//! built on barn-repo; the mirror itself (`barn serve`) arrives with the
//! live-mirror work.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use barn_repo::car::{CarLimits, CarStream};
use barn_repo::commit::verify_repo;
use barn_repo::crypto::PublicKey;
use clap::{Parser, Subcommand};

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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    match cli.command {
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
