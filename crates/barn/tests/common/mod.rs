//! Shared by the tests that run the `barn` binary.
#![allow(dead_code, clippy::unwrap_used)]

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
        .env("BARN_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}
