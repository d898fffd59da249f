//! Shared by the tests that run the `barn` binary.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsStr;
use std::path::Path;
use std::process::Stdio;

/// Starts `barn <args>` with info logs appended to `log`; killed when
/// dropped.
pub fn spawn_barn<I, S>(args: I, log: &Path) -> tokio::process::Child
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    tokio::process::Command::new(env!("CARGO_BIN_EXE_barn"))
        .args(args)
        .env(
            "BARN_LOG",
            std::env::var("BARN_TEST_BARN_LOG").unwrap_or_else(|_| "info".into()),
        )
        // Tests run side by side: each gateway on a port of its own (the
        // log says which).
        .env("BARN_LISTEN", "127.0.0.1:0")
        .env("BARN_ADMIN_LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// A fake PDS holding `n` accounts of `records` records each (seeds from
/// `seed`), each served by `getRepo` and resolvable through the fake's
/// PLC endpoint.
pub async fn fake_host_with_accounts(
    n: u64,
    records: usize,
    seed: u64,
) -> (barn_testkit::FakePds, Vec<barn_testkit::FakeAccount>) {
    let fake = barn_testkit::FakePds::start().await.unwrap();
    let accounts = (0..n)
        .map(|i| fake.add_account(seed + i, records).unwrap())
        .collect();
    (fake, accounts)
}

/// `barn <args>` with stdout and stderr piped and default logging (no
/// BARN_LOG); killed when dropped.
pub fn barn_command<I, S>(args: I) -> tokio::process::Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_barn"));
    cmd.args(args)
        .env_remove("BARN_LOG")
        .env("BARN_LISTEN", "127.0.0.1:0")
        .env("BARN_ADMIN_LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// `[mirror]` settings that make a backfill take many small steps: pages
/// of 10, at most 4 imports queued and 2 running, failed imports retried
/// after 200 ms.
pub const SMALL_STEPS: &str = "list_page = 10\nlist_queue_max = 4\nmax_imports = 2\n\
                               max_imports_per_host = 2\nresync_retry_ms = 200\n";

/// Writes `dir/barn.toml` for the fake PDS at `host` (its PLC too), data
/// in `dir/data`, `host` tracked whole when `with_host`, and `mirror` as
/// the `[mirror]` table. Returns (data dir, config file).
pub fn write_config(
    dir: &Path,
    host: &str,
    with_host: bool,
    mirror: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let data = dir.join("data");
    let config = dir.join("barn.toml");
    let hosts = if with_host {
        format!("hosts = [{host:?}]\n")
    } else {
        String::new()
    };
    std::fs::write(
        &config,
        format!(
            "data_dir = {data:?}\nplc_url = {host:?}\n{hosts}allow_http_localhost = true\n\
             [mirror]\n{mirror}"
        ),
    )
    .unwrap();
    (data, config)
}

/// Waits up to `within` for a barn run to end (panicking with `what`
/// otherwise), prints its time and output under `label`, and returns the
/// output with stdout and stderr as text.
pub async fn finished<F>(
    run: F,
    within: std::time::Duration,
    what: &str,
    label: &str,
) -> (std::process::Output, String, String)
where
    F: std::future::Future<Output = std::io::Result<std::process::Output>>,
{
    let started = std::time::Instant::now();
    let out = tokio::time::timeout(within, run)
        .await
        .expect(what)
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!(
        "{label}: {:?}\n--- stdout\n{stdout}--- stderr\n{stderr}",
        started.elapsed()
    );
    (out, stdout, stderr)
}

/// How many times `needle` appears in the log file at `log` so far.
pub fn log_count(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches(needle)
        .count()
}

/// Waits until `barn serve` logged its start-up line more than `before`
/// times: its signal handlers are installed and the mirror started.
pub async fn wait_running(log: &Path, before: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while log_count(log, "barn is running") <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "barn never started:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The gateway URL of the barn run that logged "gateway listening" for the
/// `(before + 1)`th time in `log`.
pub async fn gateway_url(log: &Path, before: usize) -> String {
    listening_url(log, "gateway listening", before).await
}

/// The admin API URL of the barn run that logged "admin API listening"
/// for the `(before + 1)`th time in `log`.
#[allow(dead_code)]
pub async fn admin_url(log: &Path, before: usize) -> String {
    listening_url(log, "admin API listening", before).await
}

async fn listening_url(log: &Path, what: &str, before: usize) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().filter(|l| l.contains(what)).nth(before) {
            let url = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("url="))
                .expect("url= in the listening line");
            return url.trim_matches('"').to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {what:?} line:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
