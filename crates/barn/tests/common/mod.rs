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

/// A fake PDS holding `n` accounts of `records` records each (seeds from
/// `seed`), each served by `getRepo` and resolvable through the fake's
/// PLC endpoint.
pub async fn fake_host_with_accounts(
    n: u64,
    records: usize,
    seed: u64,
) -> (barn_testkit::FakePds, Vec<barn_testkit::FakeAccount>) {
    use barn_testkit::{DraftOptions, FakeAccount, FakePds};
    let fake = FakePds::start().await.unwrap();
    let host = fake.url().to_owned();
    let mut accounts = Vec::new();
    for i in 0..n {
        let mut acct = FakeAccount::new(&FakeAccount::plc_did(seed + i), seed + i);
        let genesis = acct
            .draft_with(
                0,
                &DraftOptions {
                    records,
                    ..DraftOptions::default()
                },
            )
            .unwrap();
        acct.apply(&genesis);
        fake.set_did_doc(acct.did(), acct.did_doc(&host));
        fake.set_repo(acct.did(), acct.car());
        accounts.push(acct);
    }
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
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}
