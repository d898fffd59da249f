//! Test support: runs the reference atproto implementation (`@atproto/repo`,
//! the Node scripts in `interop/repo`) from barn's integration tests.
//!
//! Include it from an integration test with
//!
//! ```ignore
//! #[path = "support/reference.rs"]
//! mod reference;
//!
//! let out = reference::run_reference("mst-root.mjs", &[], Some(r#"{"entries":[]}"#));
//! assert_eq!(out["root"], "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm");
//! ```
//!
//! The scripts and their JSON interfaces are described in `interop/repo/README.md`.
//! Before the first run, the npm dependencies are installed with `npm ci` if
//! they are missing or were installed from a different `package-lock.json`;
//! that is done once per process (a `OnceLock`) and by one process at a time
//! (an exclusive lock file, `interop/repo/.npm-ci.lock`). Nothing is ever
//! skipped: if npm or node fails, the calling test panics with its output.
//!
//! The scripts need Node >= 22, which the `node` npm package in that folder
//! provides; they are run with `interop/repo/node_modules/.bin/node`.
//! The folder is found from this crate's manifest directory
//! (`../../interop/repo`), or from the `BARN_INTEROP_REPO_DIR` environment
//! variable when it is set.
#![allow(dead_code)]

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// Environment variable that overrides where the `interop/repo` folder is.
pub const DIR_ENV: &str = "BARN_INTEROP_REPO_DIR";

/// Copy of the `package-lock.json` the current `node_modules` was installed
/// from, written after a successful `npm ci` (which deletes `node_modules` first).
const STAMP: &str = "node_modules/.barn-installed-package-lock.json";
/// Exclusive lock taken while installing; holds the installing process's id.
const LOCK: &str = ".npm-ci.lock";
/// A lock older than this is taken as left behind by a killed process when
/// its owner cannot be checked (no `/proc`).
const STALE_LOCK_AGE: Duration = Duration::from_secs(15 * 60);
/// How long to wait for another process's install before giving up.
const LOCK_WAIT: Duration = Duration::from_secs(20 * 60);

/// Runs `node <script> <args>` (a script of `interop/repo`, e.g. `"make-car.mjs"`),
/// feeding `stdin` if given, and returns the JSON value it prints on stdout.
///
/// Panics with the script's stderr if it fails or prints anything but JSON.
/// The script runs in the test's working directory (the crate's directory
/// under `cargo test`), so relative paths in `args` resolve from there.
pub fn run_reference(script: &str, args: &[&str], stdin: Option<&str>) -> serde_json::Value {
    let dir = interop_dir();
    let node = ensure_installed(&dir);
    let script_path = dir.join(script);
    let shown = format!("node {script} {}", args.join(" "));

    let mut child = Command::new(node)
        .arg(&script_path)
        .args(args)
        // The atproto libraries log to stdout when LOG_ENABLED is true.
        .env_remove("LOG_ENABLED")
        .stdin(stdin.map_or_else(Stdio::null, |_| Stdio::piped()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "reference: cannot start `{shown}` with {}: {e}",
                node.display()
            )
        });

    // Feed stdin from another thread so a large input cannot deadlock against
    // a full stdout pipe.
    let writer = match (stdin, child.stdin.take()) {
        (Some(input), Some(mut pipe)) => {
            let input = input.to_owned();
            Some(thread::spawn(move || pipe.write_all(input.as_bytes())))
        }
        _ => None,
    };
    let output = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("reference: waiting for `{shown}` failed: {e}"));
    let write_result = writer.map(|handle| {
        handle
            .join()
            .unwrap_or_else(|_| panic!("reference: stdin writer thread for `{shown}` panicked"))
    });

    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        panic!(
            "reference: `{shown}` failed ({}):\n{}",
            output.status,
            stderr.trim_end()
        );
    }
    if let Some(Err(e)) = write_result {
        panic!("reference: writing stdin to `{shown}` failed: {e}\nstderr:\n{stderr}");
    }
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "reference: `{shown}` printed no single JSON value ({e}):\nstdout:\n{}\nstderr:\n{stderr}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// The `interop/repo` folder: `$BARN_INTEROP_REPO_DIR` if set, else
/// `../../interop/repo` from this crate's manifest directory.
pub fn interop_dir() -> PathBuf {
    let dir = match std::env::var_os(DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../interop/repo"),
    };
    if !dir.join("package.json").is_file() || !dir.join("package-lock.json").is_file() {
        panic!(
            "reference: {} holds no package.json and package-lock.json (set {DIR_ENV} to the interop/repo folder)",
            dir.display()
        );
    }
    dir
}

/// Makes sure `npm ci` has installed `dir`'s dependencies from its current
/// `package-lock.json`, and returns the Node binary to run the scripts with.
/// Runs at most once per process; every caller waits for that one run.
fn ensure_installed(dir: &Path) -> &'static Path {
    static NODE: OnceLock<PathBuf> = OnceLock::new();
    NODE.get_or_init(|| {
        if !is_installed(dir) {
            let _lock = InstallLock::acquire(dir);
            // Another process may have installed while this one waited.
            if !is_installed(dir) {
                npm_ci(dir);
            }
        }
        let node = node_binary(dir);
        if !node.is_file() {
            panic!(
                "reference: {} is missing after `npm ci` in {} (did the `node` package's install script run?)",
                node.display(),
                dir.display()
            );
        }
        node
    })
    .as_path()
}

fn node_binary(dir: &Path) -> PathBuf {
    dir.join("node_modules/.bin/node")
}

/// True if `node_modules` was installed by a successful `npm ci` from the
/// current `package-lock.json`.
fn is_installed(dir: &Path) -> bool {
    let lock = read_package_lock(dir);
    matches!(fs::read(dir.join(STAMP)), Ok(stamp) if stamp == lock) && node_binary(dir).is_file()
}

fn read_package_lock(dir: &Path) -> Vec<u8> {
    let path = dir.join("package-lock.json");
    fs::read(&path).unwrap_or_else(|e| panic!("reference: cannot read {}: {e}", path.display()))
}

fn npm_ci(dir: &Path) {
    eprintln!("reference: running `npm ci` in {}", dir.display());
    let lock = read_package_lock(dir);
    let output = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "reference: cannot run `npm ci` in {} (is npm installed?): {e}",
                dir.display()
            )
        });
    if !output.status.success() {
        panic!(
            "reference: `npm ci` in {} failed ({}):\n{}\n{}",
            dir.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout).trim_end(),
            String::from_utf8_lossy(&output.stderr).trim_end()
        );
    }
    fs::write(dir.join(STAMP), lock)
        .unwrap_or_else(|e| panic!("reference: cannot write {}/{STAMP}: {e}", dir.display()));
}

/// Exclusive lock file across processes, removed on drop (also when the
/// install panics).
struct InstallLock {
    path: PathBuf,
}

impl InstallLock {
    fn acquire(dir: &Path) -> Self {
        let path = dir.join(LOCK);
        let started = Instant::now();
        loop {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    // The pid lets waiting processes tell a lock left by a killed process.
                    let _ = write!(file, "{}", std::process::id());
                    return Self { path };
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    if lock_is_stale(&path) {
                        eprintln!("reference: removing stale lock {}", path.display());
                        let _ = fs::remove_file(&path);
                        continue;
                    }
                    if started.elapsed() > LOCK_WAIT {
                        panic!(
                            "reference: waited {LOCK_WAIT:?} for {} (another `npm ci`); remove it if no install is running",
                            path.display()
                        );
                    }
                    thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("reference: cannot create lock file {}: {e}", path.display()),
            }
        }
    }
}

impl Drop for InstallLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// A lock is stale if its owner process is gone (checked through `/proc`
/// where there is one), or else if it is older than [`STALE_LOCK_AGE`].
fn lock_is_stale(path: &Path) -> bool {
    let Ok(content) = fs::read_to_string(path) else {
        return false; // just removed, or being written: try again
    };
    let proc = Path::new("/proc");
    if proc.join("self").exists()
        && let Ok(pid) = content.trim().parse::<u32>()
    {
        return !proc.join(pid.to_string()).exists();
    }
    let age = fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|modified| SystemTime::now().duration_since(modified).ok());
    matches!(age, Some(age) if age > STALE_LOCK_AGE)
}
