//! The loopback network: one PLC directory and two reference PDSes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::process::{NodeProcess, ensure_installed, free_port};
use crate::workload::{Summary, WorkloadOptions, WorkloadRun};

/// How long a service may take to print its ready line. Start-up takes
/// about a second; a loaded CI machine gets slack.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a service gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A did:plc directory (`@did-plc/server`, in memory).
#[derive(Debug)]
pub struct Plc {
    /// `http://localhost:<port>` (bound to 127.0.0.1).
    pub url: String,
    proc: NodeProcess,
}

/// One reference PDS (`@atproto/pds`).
#[derive(Debug)]
pub struct Pds {
    /// Short name: `pds-a` or `pds-b`.
    pub name: String,
    /// `http://localhost:<port>`: the URL DID documents name, so the one
    /// barn must be configured with (the PDS refuses IP-literal URLs).
    pub url: String,
    /// The PDS's own service DID, `did:web:localhost%3A<port>`.
    pub did: String,
    /// The admin password (HTTP basic auth as `admin`).
    pub admin_password: String,
    /// The PDS's data directory (account.sqlite, actor stores, blobs).
    pub data_dir: PathBuf,
    port: u16,
    plc_url: String,
    logs: PathBuf,
    repo_backfill_limit: Option<Duration>,
    proc: Option<NodeProcess>,
}

/// How to configure the network's PDSes; [`Default`] is the PDS's own
/// defaults.
#[derive(Debug, Clone, Default)]
pub struct NetworkOptions {
    /// The PDSes' firehose backlog window (`subscription.repoBackfillLimitMs`;
    /// the PDS's default, one day, when `None`), kept across
    /// [`Pds::restart`]. Passed in whole milliseconds.
    ///
    /// What `@atproto/pds` 0.5.35 does with a `subscribeRepos` cursor
    /// (`dist/api/com/atproto/sync/subscribeRepos.js`, lines 12–33): it
    /// looks up the first event after the cursor (`sequencer.next`).
    /// - A cursor past the newest event gets the error frame `FutureCursor`.
    /// - If that next event was sequenced more than the limit ago, the
    ///   subscriber first gets an `#info` frame named `OutdatedCursor`
    ///   ("Requested cursor exceeded limit. Possibly missing events"), then
    ///   the stream goes on from the oldest event sequenced inside the
    ///   window (`sequencer.earliestAfterTime`): the events in between are
    ///   skipped with nothing else to say so. When no event is inside the
    ///   window, only live events follow.
    /// - Otherwise (including a cursor at the newest event, however old)
    ///   the backlog after the cursor is replayed.
    ///
    /// So with a small limit, a subscriber reconnecting with a cursor whose
    /// next event is older than the limit gets `#info` `OutdatedCursor`.
    pub repo_backfill_limit: Option<Duration>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PdsReady {
    url: String,
    did: String,
    admin_password: String,
}

#[derive(Deserialize)]
struct PlcReady {
    url: String,
}

impl Pds {
    async fn start(
        name: &str,
        plc_url: &str,
        root: &Path,
        options: &NetworkOptions,
    ) -> Result<Pds> {
        let mut pds = Pds {
            name: name.to_owned(),
            url: String::new(),
            did: String::new(),
            admin_password: String::new(),
            data_dir: root.join(name),
            port: free_port()?,
            plc_url: plc_url.to_owned(),
            logs: root.to_owned(),
            repo_backfill_limit: options.repo_backfill_limit,
            proc: None,
        };
        pds.launch().await?;
        Ok(pds)
    }

    async fn launch(&mut self) -> Result<()> {
        let mut args = vec![
            "--port".to_owned(),
            self.port.to_string(),
            "--plc".to_owned(),
            self.plc_url.clone(),
            "--data-dir".to_owned(),
            self.data_dir.display().to_string(),
        ];
        // Built from the stored option on every launch, so a restart keeps it.
        if let Some(limit) = self.repo_backfill_limit {
            args.push("--repo-backfill-limit-ms".to_owned());
            args.push(limit.as_millis().to_string());
        }
        let log = self.logs.join(format!("{}.log", self.name));
        let (proc, line) =
            NodeProcess::spawn(&self.name, "pds.mjs", &args, log, START_TIMEOUT).await?;
        let ready: PdsReady = serde_json::from_str(&line).map_err(|e| Error::Json {
            what: format!("{} ready line", self.name),
            message: format!("{e}: {line}"),
        })?;
        self.url = ready.url;
        self.did = ready.did;
        self.admin_password = ready.admin_password;
        self.proc = Some(proc);
        Ok(())
    }

    /// Stops the PDS gracefully (SIGTERM) and waits for it to exit.
    pub async fn stop(&mut self) -> Result<()> {
        match self.proc.as_mut() {
            Some(p) => p.stop(STOP_GRACE).await,
            None => Ok(()),
        }
    }

    /// Kills the PDS (SIGKILL): its websockets drop without a close frame.
    pub async fn kill(&mut self) -> Result<()> {
        match self.proc.as_mut() {
            Some(p) => p.kill().await,
            None => Ok(()),
        }
    }

    /// Starts the PDS again on the same port and data directory (after
    /// [`Pds::stop`] or [`Pds::kill`]).
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        self.launch().await
    }

    /// The pid of the running PDS process.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().and_then(NodeProcess::pid)
    }

    /// Its log file.
    pub fn log(&self) -> PathBuf {
        self.logs.join(format!("{}.log", self.name))
    }
}

/// PLC + PDS a + PDS b on 127.0.0.1, each with its own data directory in a
/// temporary directory removed on drop. Dropping a `Network` kills what is
/// still running; [`Network::stop`] stops it gracefully.
#[derive(Debug)]
pub struct Network {
    /// The PLC directory.
    pub plc: Plc,
    /// PDS a: where the workload creates most accounts.
    pub pds_a: Pds,
    /// PDS b: one native account, and the migration target.
    pub pds_b: Pds,
    dir: tempfile::TempDir,
}

impl Network {
    /// Installs the npm side if needed, then starts PLC and both PDSes with
    /// the PDS's defaults.
    pub async fn start() -> Result<Network> {
        Network::start_with(&NetworkOptions::default()).await
    }

    /// Installs the npm side if needed, then starts PLC and both PDSes
    /// configured as `options` say.
    pub async fn start_with(options: &NetworkOptions) -> Result<Network> {
        tokio::task::spawn_blocking(ensure_installed)
            .await
            .map_err(|e| Error::Io {
                what: "npm install task".into(),
                source: std::io::Error::other(e),
            })??;
        let dir = tempfile::Builder::new()
            .prefix("barn-network-")
            .tempdir()
            .map_err(Error::io("creating the network's temp dir"))?;
        let port = free_port()?;
        let (proc, line) = NodeProcess::spawn(
            "plc",
            "plc.mjs",
            &["--port".to_owned(), port.to_string()],
            dir.path().join("plc.log"),
            START_TIMEOUT,
        )
        .await?;
        let ready: PlcReady = serde_json::from_str(&line).map_err(|e| Error::Json {
            what: "plc ready line".into(),
            message: format!("{e}: {line}"),
        })?;
        let plc = Plc {
            url: ready.url,
            proc,
        };
        let (pds_a, pds_b) = tokio::try_join!(
            Pds::start("pds-a", &plc.url, dir.path(), options),
            Pds::start("pds-b", &plc.url, dir.path(), options),
        )?;
        Ok(Network {
            plc,
            pds_a,
            pds_b,
            dir,
        })
    }

    /// The directory holding the data directories and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Pids of every running service.
    pub fn pids(&self) -> Vec<u32> {
        [self.plc.proc.pid(), self.pds_a.pid(), self.pds_b.pid()]
            .into_iter()
            .flatten()
            .collect()
    }

    /// Runs the seeded workload driver against this network to the end.
    pub async fn run_workload(&self, opts: &WorkloadOptions) -> Result<Summary> {
        self.start_workload(opts).await?.finish().await
    }

    /// Starts the seeded workload driver against this network and returns
    /// at once; with [`WorkloadOptions::pause_at`], see
    /// [`WorkloadRun::wait_paused`] and [`WorkloadRun::resume`].
    pub async fn start_workload(&self, opts: &WorkloadOptions) -> Result<WorkloadRun> {
        WorkloadRun::start(self, opts)
    }

    /// Stops every service (SIGTERM, SIGKILL after a grace period) and
    /// waits for each to exit.
    pub async fn stop(mut self) -> Result<()> {
        let a = self.pds_a.stop().await;
        let b = self.pds_b.stop().await;
        let p = self.plc.proc.stop(STOP_GRACE).await;
        a.and(b).and(p)
    }
}
