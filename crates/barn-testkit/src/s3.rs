//! A real S3-compatible server on 127.0.0.1 for blob-store tests: moto's S3
//! (`interop/s3`, from PyPI), behind a small TCP relay that can take it off
//! the network and bring it back on the same port.
//!
//! Why moto rather than `s3s-fs` (a Rust S3 server on the filesystem):
//! moto installs from PyPI in about 15 s with the Python every machine has,
//! while `cargo install s3s-fs` would compile a few hundred crates on CI's
//! two cores; and moto is what many S3 clients test against, so its answers
//! are S3's (XML errors, ETags, multipart uploads).
//!
//! Using it from a test:
//! - [`S3Server::start`] installs moto on first use (see
//!   [`ensure_installed`]), starts it on a free port and returns once it
//!   answers. [`S3Server::endpoint`] is the URL for a client, path-style
//!   (`http://127.0.0.1:PORT/BUCKET/KEY`); [`S3Server::create_bucket`]
//!   makes a bucket.
//! - moto checks no signature: any access key, secret and region do (an
//!   `object_store` S3 client needs `allow_http`, the endpoint, and dummy
//!   credentials).
//! - Unsigned requests: moto accepts an unsigned bucket PUT and an unsigned
//!   PUT of a *new* key, but answers 403 to an unsigned GET, HEAD or
//!   overwrite of an existing key unless the key was put with
//!   `x-amz-acl: public-read` (it applies S3's anonymous-access rules to
//!   requests without an `Authorization` header). Any `Authorization`
//!   header, even a meaningless one, makes a request count as signed.
//!
//! # Tricky bits
//! - [`S3Server::stop`] is an outage, not a crash: the relay stops
//!   listening (new connections are refused) and cuts every open one, but
//!   moto keeps running, so buckets and objects survive to
//!   [`S3Server::start_again`]. moto keeps everything in memory, so killing
//!   it would lose every object, and its request recorder (the only way it
//!   has to restore state) cannot replay multipart uploads, whose ids are
//!   random. To a client the two look alike: refused connects, cut
//!   transfers.
//! - moto exits when its stdin closes (`interop/s3/serve.py`); we hold the
//!   write end, so a test process that dies without dropping the server
//!   leaves no moto behind. `kill_on_drop` is the last resort.
//! - The install is serialised by a file lock, since test binaries run in
//!   parallel and may all start a server at once, and skipped once its
//!   stamp is newer than `requirements.txt` and `install.sh`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use crate::error::{Error, Result};
use crate::process::{free_port, install_once, log_tail};

/// How long moto may take to answer after it was started: it starts in
/// one or two seconds; a loaded CI machine gets slack.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The project's `interop/s3` directory (requirements, install script,
/// server wrapper).
pub fn s3_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../interop/s3")
}

/// Where moto is installed: `<workspace>/target/testkit-s3/venv` (whatever
/// `CARGO_TARGET_DIR` says, so every build of the checkout shares it).
pub fn venv_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/testkit-s3/venv")
}

const STAMP: &str = ".barn-installed";

/// Runs `interop/s3/install.sh` unless its stamp is newer than the script
/// and `requirements.txt`. Blocking; [`S3Server::start`] calls it.
pub fn ensure_installed() -> Result<()> {
    let venv = venv_dir();
    let Some(base) = venv.parent() else {
        return Err(Error::Io {
            what: format!("no parent directory of {}", venv.display()),
            source: std::io::ErrorKind::NotFound.into(),
        });
    };
    install_once(
        base,
        &s3_dir(),
        &venv.join(STAMP),
        &["requirements.txt", "install.sh"],
        &python_bin(),
    )
}

fn python_bin() -> PathBuf {
    venv_dir().join("bin/python")
}

/// The relay from the public port to moto, while it runs.
struct Relay {
    /// Sent (or dropped) to make the relay close its listener and cut its
    /// connections.
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// moto's S3 on 127.0.0.1, reached through a relay on [`S3Server::port`].
/// Killed when dropped.
pub struct S3Server {
    port: u16,
    /// moto's own port; clients never see it.
    backend: SocketAddr,
    child: Child,
    /// Held open: moto exits when it closes.
    _stdin: Option<ChildStdin>,
    relay: Option<Relay>,
    log: PathBuf,
    /// Holds the log; removed with the server.
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl std::fmt::Debug for S3Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Server")
            .field("endpoint", &self.endpoint())
            .field("running", &self.relay.is_some())
            .field("log", &self.log)
            .finish_non_exhaustive()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(relay) = self.relay.take() {
            relay.task.abort();
        }
        // No await in drop: SIGKILL now, and tokio reaps the child. (Its
        // stdin closing would end it too.)
        let _ = self.child.start_kill();
    }
}

impl S3Server {
    /// Installs moto if needed, starts it on a free port of 127.0.0.1 and
    /// waits until it answers.
    pub async fn start() -> Result<S3Server> {
        tokio::task::spawn_blocking(ensure_installed)
            .await
            .map_err(|e| Error::Io {
                what: "installing moto".into(),
                source: std::io::Error::other(e),
            })??;
        let dir = tempfile::Builder::new()
            .prefix("barn-s3-")
            .tempdir()
            .map_err(Error::io("creating the S3 server's log directory"))?;
        let log = dir.path().join("moto.log");
        let log_file = std::fs::File::create(&log)
            .map_err(Error::io(format!("creating {}", log.display())))?;
        let log_err = log_file
            .try_clone()
            .map_err(Error::io(format!("opening {}", log.display())))?;
        let backend_port = free_port()?;
        let mut child = Command::new(python_bin())
            .arg(s3_dir().join("serve.py"))
            .arg("127.0.0.1")
            .arg(backend_port.to_string())
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::from(log_file))
            .stderr(Stdio::from(log_err))
            .kill_on_drop(true)
            .spawn()
            .map_err(Error::io("starting moto's S3 server"))?;
        let stdin = child.stdin.take();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(Error::io("binding the S3 relay"))?;
        let port = listener
            .local_addr()
            .map_err(Error::io("S3 relay address"))?
            .port();
        let backend = SocketAddr::from(([127, 0, 0, 1], backend_port));
        let mut server = S3Server {
            port,
            backend,
            child,
            _stdin: stdin,
            relay: None,
            log,
            _dir: dir,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap_or_default(),
        };
        server.wait_ready().await?;
        server.relay = Some(relay(listener, backend));
        Ok(server)
    }

    /// Polls moto's own port until it answers HTTP, failing early if it
    /// exits.
    async fn wait_ready(&mut self) -> Result<()> {
        let started = Instant::now();
        let url = format!("http://{}/", self.backend);
        loop {
            if self.http.get(&url).send().await.is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(self.start_error(format!("exited before ready ({status})")));
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(self.start_error(format!("not ready after {START_TIMEOUT:?}")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn start_error(&self, reason: String) -> Error {
        Error::Start {
            name: "s3 (moto)".into(),
            reason,
            log: self.log.clone(),
            tail: log_tail(&self.log, 40),
        }
    }

    /// `http://127.0.0.1:PORT`: the S3 endpoint (path-style).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port clients connect to; the same after [`S3Server::start_again`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// moto's log (its request lines and errors).
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Creates a bucket (an unsigned path-style `PUT /NAME`, which moto
    /// accepts). Creating one that exists succeeds, as in `us-east-1`.
    pub async fn create_bucket(&self, name: &str) -> Result<()> {
        let url = format!("{}/{name}", self.endpoint());
        let resp = self.http.put(&url).send().await.map_err(|e| Error::Http {
            url: url.clone(),
            message: e.to_string(),
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = resp.text().await.unwrap_or_default();
        Err(Error::Http {
            url,
            message: format!("{status}: {body}"),
        })
    }

    /// Takes S3 off the network, as an outage: the port refuses new
    /// connections and every open one is cut (requests in flight fail).
    /// Buckets and objects are kept for [`S3Server::start_again`]. Stopping
    /// a stopped server does nothing.
    pub async fn stop(&mut self) {
        if let Some(relay) = self.relay.take() {
            // Dropped sender or sent unit: the relay ends either way.
            let _ = relay.stop.send(());
            // Returns once the listener and every connection are closed.
            let _ = relay.task.await;
        }
    }

    /// Brings S3 back on the same port, with what it held when stopped.
    /// Fails if another process took the port meanwhile or moto has died.
    pub async fn start_again(&mut self) -> Result<()> {
        if self.relay.is_some() {
            return Ok(());
        }
        if let Ok(Some(status)) = self.child.try_wait() {
            return Err(self.start_error(format!("moto has exited ({status})")));
        }
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .map_err(Error::io(format!(
                "binding the S3 relay again on port {}",
                self.port
            )))?;
        self.relay = Some(relay(listener, self.backend));
        Ok(())
    }

    /// Whether the endpoint is up (started and not stopped).
    pub fn is_running(&self) -> bool {
        self.relay.is_some()
    }
}

/// Relays each connection on `listener` to `backend` until told to stop;
/// then closes the listener and every open connection before it returns.
fn relay(listener: TcpListener, backend: SocketAddr) -> Relay {
    let (stop, mut stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                accepted = listener.accept() => match accepted {
                    Ok((mut client, _)) => {
                        conns.spawn(async move {
                            // A backend refusing is seen by the client as a
                            // closed connection, as a dying server would be.
                            let Ok(mut server) = TcpStream::connect(backend).await else {
                                return;
                            };
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        });
                    }
                    // Out of descriptors or the like: the client sees a
                    // refused or reset connection; try again shortly.
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        drop(listener);
        // Aborts every connection and waits until their sockets are gone.
        conns.shutdown().await;
    });
    Relay { stop, task }
}
