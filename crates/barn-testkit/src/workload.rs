//! The seeded workload driver (`interop/network/workload.mjs`), a run of
//! it that can pause between phases, and its JSON summary.
//!
//! The driver speaks on stdout: at a pause one line `{"paused":"<phase>"}`,
//! at the end the summary as the last line. It reads stdin only while
//! paused: one line (or the end of stdin) resumes it.

use std::collections::BTreeMap;
use std::process::Stdio;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::task::JoinHandle;

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
    /// Stop at this phase until [`WorkloadRun::resume`] (none: run
    /// through).
    pub pause_at: Option<Pause>,
}

impl Default for WorkloadOptions {
    fn default() -> Self {
        WorkloadOptions {
            seed: 1,
            posts: 6,
            lifecycle: true,
            pause_at: None,
        }
    }
}

/// Where a workload can pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    /// Just before the deletes (per active account, a post with images and
    /// a plain post): every account exists and has all its other content.
    Deletes,
    /// Just before the lifecycle part (after the deletes); with
    /// [`WorkloadOptions::lifecycle`] off, just before the summary.
    Lifecycle,
}

impl Pause {
    /// The phase's name on the driver's command line and pause line.
    fn name(self) -> &'static str {
        match self {
            Pause::Deletes => "deletes",
            Pause::Lifecycle => "lifecycle",
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

/// A running workload driver (see [`Network::start_workload`]). Dropping it
/// kills the driver.
#[derive(Debug)]
pub struct WorkloadRun {
    child: Child,
    /// Held open for the whole run: a line on it resumes a pause, and its
    /// end (on drop or [`WorkloadRun::finish`]) resumes one too.
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    /// Drains stderr as the driver runs, so it never blocks on a full pipe;
    /// yields all of it once the driver exits.
    stderr: Option<JoinHandle<Vec<u8>>>,
    /// The last stdout line that was not a pause line: the summary, once
    /// the driver is done.
    last_line: Option<String>,
    pause_at: Option<Pause>,
    /// The pause line was read and no resume written since.
    paused: bool,
}

/// The pause line the driver prints.
#[derive(Deserialize)]
struct PausedLine {
    paused: String,
}

impl WorkloadRun {
    pub(crate) fn start(net: &Network, opts: &WorkloadOptions) -> Result<WorkloadRun> {
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
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if !opts.lifecycle {
            cmd.arg("--no-lifecycle");
        }
        if let Some(pause) = opts.pause_at {
            cmd.arg(format!("--pause-at={}", pause.name()));
        }
        let mut child = cmd.spawn().map_err(Error::io("starting workload.mjs"))?;
        let (Some(stdin), Some(stdout), Some(mut stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(Error::io("starting workload.mjs")(std::io::Error::other(
                "a standard stream was not piped",
            )));
        };
        let stderr = tokio::spawn(async move {
            let mut buf = Vec::new();
            // A read error only shortens the text reported on failure.
            let _ = stderr.read_to_end(&mut buf).await;
            buf
        });
        Ok(WorkloadRun {
            child,
            stdin: Some(stdin),
            stdout: BufReader::new(stdout).lines(),
            stderr: Some(stderr),
            last_line: None,
            pause_at: opts.pause_at,
            paused: false,
        })
    }

    /// Waits until the driver reaches [`WorkloadOptions::pause_at`] and
    /// stops there (at once if it already has and was not resumed since).
    /// An error if the driver exits first (with its stderr), prints another
    /// phase, or was started without a pause.
    pub async fn wait_paused(&mut self) -> Result<()> {
        let Some(pause) = self.pause_at else {
            return Err(Error::Workload {
                status: "wait_paused on a run started without pause_at".into(),
                stderr: String::new(),
            });
        };
        if self.paused {
            return Ok(());
        }
        loop {
            let line = self
                .stdout
                .next_line()
                .await
                .map_err(Error::io("reading workload.mjs's stdout"))?;
            let Some(line) = line else {
                return Err(self
                    .exited(&format!("before pausing at {}", pause.name()))
                    .await);
            };
            match serde_json::from_str::<PausedLine>(&line) {
                Ok(p) if p.paused == pause.name() => {
                    self.paused = true;
                    return Ok(());
                }
                Ok(p) => {
                    return Err(Error::Json {
                        what: "workload pause line".into(),
                        message: format!("paused at {}, expected {}", p.paused, pause.name()),
                    });
                }
                Err(_) => self.last_line = Some(line),
            }
        }
    }

    /// Lets a paused driver go on (one line on its stdin). Written before
    /// the pause, it is read at the pause, which then does not stop.
    pub async fn resume(&mut self) -> Result<()> {
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(Error::io("resuming workload.mjs")(std::io::Error::other(
                "its stdin is closed",
            )));
        };
        stdin
            .write_all(b"\n")
            .await
            .map_err(Error::io("resuming workload.mjs"))?;
        stdin
            .flush()
            .await
            .map_err(Error::io("resuming workload.mjs"))?;
        self.paused = false;
        Ok(())
    }

    /// Waits for the driver to finish and returns its summary. Closes its
    /// stdin first, which resumes a pause nobody resumed.
    pub async fn finish(mut self) -> Result<Summary> {
        self.stdin.take();
        while let Some(line) = self
            .stdout
            .next_line()
            .await
            .map_err(Error::io("reading workload.mjs's stdout"))?
        {
            if serde_json::from_str::<PausedLine>(&line).is_err() {
                self.last_line = Some(line);
            }
        }
        let status = self
            .child
            .wait()
            .await
            .map_err(Error::io("waiting for workload.mjs"))?;
        if !status.success() {
            return Err(Error::Workload {
                status: status.to_string(),
                stderr: self.stderr_text().await,
            });
        }
        let line = self.last_line.unwrap_or_default();
        serde_json::from_str(&line).map_err(|e| Error::Json {
            what: "workload summary".into(),
            message: format!("{e}: {}", &line[..line.len().min(500)]),
        })
    }

    /// The error for a driver whose stdout ended early: its exit status and
    /// stderr.
    async fn exited(&mut self, when: &str) -> Error {
        self.stdin.take();
        let status = match self.child.wait().await {
            Ok(s) => s.to_string(),
            Err(e) => format!("unknown ({e})"),
        };
        Error::Workload {
            status: format!("{status}, {when}"),
            stderr: self.stderr_text().await,
        }
    }

    /// Everything the driver wrote to stderr (it has exited).
    async fn stderr_text(&mut self) -> String {
        match self.stderr.take() {
            Some(task) => match task.await {
                Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                Err(e) => format!("(its stderr was lost: {e})"),
            },
            None => String::new(),
        }
    }
}
