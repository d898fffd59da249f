//! The seeded workload driver (`interop/network/workload.mjs`) and its
//! JSON summary.

use std::collections::BTreeMap;
use std::process::Stdio;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::network::Network;
use crate::process::{network_dir, node_bin};

/// Knobs of a workload run.
#[derive(Debug, Clone)]
pub struct WorkloadOptions {
    /// PRNG seed: the same seed makes the same operations.
    pub seed: u64,
    /// Posting rounds (each account posts once per round, and may reply,
    /// like and repost).
    pub posts: u32,
    /// Run the lifecycle part (handle change, deactivate/reactivate,
    /// takedown/reversal, deletion, migration a → b).
    pub lifecycle: bool,
}

impl Default for WorkloadOptions {
    fn default() -> Self {
        WorkloadOptions {
            seed: 1,
            posts: 6,
            lifecycle: true,
        }
    }
}

/// What the workload did, and what each PDS should now hold.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// The seed used.
    pub seed: u64,
    /// Commits made (one per record write or applyWrites batch).
    pub commits: u64,
    /// Blobs uploaded.
    pub blobs_uploaded: u64,
    /// Account migrations done.
    pub migrations: Vec<Migration>,
    /// Every account created, in creation order.
    pub accounts: Vec<AccountSummary>,
}

/// One migration.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Migration {
    /// The migrated DID.
    pub did: String,
    /// `a` or `b`.
    pub from: String,
    /// `a` or `b`.
    pub to: String,
    /// Blobs copied by `listMissingBlobs` → `getBlob` → `uploadBlob`.
    pub blobs_moved: u64,
}

/// One account at the end of the workload.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountSummary {
    /// Workload name (`alice`, …).
    pub name: String,
    /// The DID.
    pub did: String,
    /// Current handle.
    pub handle: String,
    /// Current host: `a` or `b`.
    pub host: String,
    /// Current host's URL.
    pub pds: String,
    /// `active` or `deleted`.
    pub status: String,
    /// Head rev (`getLatestCommit`), none when deleted.
    pub rev: Option<String>,
    /// Head commit CID, none when deleted.
    pub commit: Option<String>,
    /// Live records per collection.
    pub collections: BTreeMap<String, u64>,
    /// Every live record (path, CID), sorted by path.
    pub records: Vec<RecordSummary>,
    /// Blob CIDs referenced by live records, sorted.
    pub blobs: Vec<String>,
    /// Every blob CID ever uploaded for the account (including those whose
    /// records were deleted or replaced), sorted.
    pub uploaded_blobs: Vec<String>,
}

/// A record path and CID.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct RecordSummary {
    /// `collection/rkey`.
    pub path: String,
    /// The record CID.
    pub cid: String,
}

impl Summary {
    /// The account with workload name `name`.
    pub fn account(&self, name: &str) -> Option<&AccountSummary> {
        self.accounts.iter().find(|a| a.name == name)
    }
}

pub(crate) async fn run(net: &Network, opts: &WorkloadOptions) -> Result<Summary> {
    let mut cmd = tokio::process::Command::new(node_bin());
    cmd.arg("workload.mjs")
        .arg(format!("--seed={}", opts.seed))
        .arg(format!("--posts={}", opts.posts))
        .args(["--plc", &net.plc.url])
        .args(["--pds-a", &net.pds_a.url])
        .arg("--pds-a-data")
        .arg(&net.pds_a.data_dir)
        .args(["--pds-b", &net.pds_b.url])
        .arg("--pds-b-data")
        .arg(&net.pds_b.data_dir)
        .args(["--admin-password", &net.pds_a.admin_password])
        .current_dir(network_dir())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if !opts.lifecycle {
        cmd.arg("--no-lifecycle");
    }
    let out = cmd
        .output()
        .await
        .map_err(Error::io("running workload.mjs"))?;
    if !out.status.success() {
        return Err(Error::Workload {
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).map_err(|e| Error::Json {
        what: "workload summary".into(),
        message: format!("{e}: {}", &line[..line.len().min(500)]),
    })
}
