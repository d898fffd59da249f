//! Node processes: the npm install, spawning a script, waiting for its
//! ready line, stopping it by pid.
//!
//! Tricky bits:
//! - Every script exits when its stdin closes (`lib.mjs` `stopOn`). We hold
//!   the write end; if the test process dies without stopping it (an
//!   aborting panic, SIGKILL), the kernel closes the pipe and the service
//!   goes away instead of lingering. `kill_on_drop` is the last resort.
//! - Test binaries run their tests on parallel threads, and several test
//!   binaries may share one checkout, so the npm install is serialised by a
//!   file lock and skipped once its stamp is newer than the lockfile.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use crate::error::{Error, Result};

/// The project's `interop/network` directory.
pub fn network_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../interop/network")
}

/// The Node 22 binary the network runs on (installed from the lockfile).
pub fn node_bin() -> PathBuf {
    network_dir().join("node_modules/.bin/node")
}

const STAMP: &str = "node_modules/.barn-installed";

/// Runs `interop/network/install.sh` unless its stamp is newer than the
/// lockfile and the script. Blocking; call it before starting services.
pub fn ensure_installed() -> Result<()> {
    let dir = network_dir();
    install_once(
        &dir,
        &dir,
        &dir.join(STAMP),
        &["package-lock.json", "install.sh"],
        &node_bin(),
    )
}

/// Runs `<script_dir>/install.sh` under a file lock in `lock_dir` (so that
/// test binaries starting together install once), unless `stamp` is newer
/// than every file of `inputs` (in `script_dir`) and `installed` exists.
pub(crate) fn install_once(
    lock_dir: &Path,
    script_dir: &Path,
    stamp: &Path,
    inputs: &[&str],
    installed: &Path,
) -> Result<()> {
    std::fs::create_dir_all(lock_dir)
        .map_err(Error::io(format!("creating {}", lock_dir.display())))?;
    let lock_path = lock_dir.join(".install.lock");
    let lock = std::fs::File::create(&lock_path)
        .map_err(Error::io(format!("creating {}", lock_path.display())))?;
    lock.lock()
        .map_err(Error::io(format!("locking {}", lock_path.display())))?;
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let fresh = modified(stamp).is_some_and(|stamp| {
        inputs
            .iter()
            .all(|f| modified(&script_dir.join(f)).is_some_and(|t| t <= stamp))
    }) && installed.exists();
    if fresh {
        return Ok(());
    }
    let script = script_dir.join("install.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .current_dir(script_dir)
        .stdin(Stdio::null())
        .output()
        .map_err(Error::io(format!("running {}", script.display())))?;
    if !out.status.success() {
        return Err(Error::Install {
            dir: script_dir.to_owned(),
            status: out.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    Ok(())
}

/// A running node script.
#[derive(Debug)]
pub struct NodeProcess {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    log: PathBuf,
}

impl NodeProcess {
    /// Starts `node <script> <args>` in `interop/network`, stderr (and
    /// stdout after the ready line) to `log`, and waits up to `timeout` for
    /// its first stdout line, which every service prints once it listens.
    /// Returns the process and that line.
    pub async fn spawn(
        name: &str,
        script: &str,
        args: &[String],
        log: PathBuf,
        timeout: Duration,
    ) -> Result<(NodeProcess, String)> {
        let log_file = std::fs::File::create(&log)
            .map_err(Error::io(format!("creating {}", log.display())))?;
        let mut child = Command::new(node_bin())
            .arg(script)
            .args(args)
            .current_dir(network_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .map_err(Error::io(format!("starting {name} ({script})")))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let mut proc = NodeProcess {
            name: name.to_owned(),
            child,
            stdin,
            log,
        };
        let Some(stdout) = stdout else {
            return Err(proc.start_error("no stdout pipe".into()));
        };
        let mut lines = BufReader::new(stdout).lines();
        let line = match tokio::time::timeout(timeout, lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => {
                let status = proc.child.wait().await.ok();
                return Err(proc.start_error(format!("exited before ready ({status:?})")));
            }
            Ok(Err(e)) => return Err(proc.start_error(format!("reading its stdout: {e}"))),
            Err(_) => return Err(proc.start_error(format!("not ready after {timeout:?}"))),
        };
        // Keep draining stdout so a chatty service never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok((proc, line))
    }

    fn start_error(&self, reason: String) -> Error {
        Error::Start {
            name: self.name.clone(),
            reason,
            log: self.log.clone(),
            tail: log_tail(&self.log, 40),
        }
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Stops the process: SIGTERM, then SIGKILL if it has not exited within
    /// `grace`. Waits for it (no zombie is left).
    pub async fn stop(&mut self, grace: Duration) -> Result<()> {
        self.stdin.take();
        if let Some(pid) = self
            .child
            .id()
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        {
            // The process may already be gone; then there is nothing to do.
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(res) => res
                .map(|_| ())
                .map_err(Error::io(format!("waiting for {}", self.name))),
            Err(_) => self.kill().await,
        }
    }

    /// Kills the process at once (SIGKILL), as a crash would, and reaps it.
    pub async fn kill(&mut self) -> Result<()> {
        self.stdin.take();
        self.child
            .kill()
            .await
            .map_err(Error::io(format!("killing {}", self.name)))
    }

    /// The log file (stderr, and stdout after the ready line).
    pub fn log(&self) -> &Path {
        &self.log
    }
}

/// The last `n` lines of a log file, for error messages.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A free TCP port on 127.0.0.1 (bound, then released for the service).
pub fn free_port() -> Result<u16> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(Error::io("binding a free port"))?;
    let port = listener
        .local_addr()
        .map_err(Error::io("reading a bound port"))?
        .port();
    Ok(port)
}
