//! The commands that talk to a running barn over its admin API: `track`,
//! `untrack`, `status`, `export`, `backup`, `delete-backup`, `watch`.
//!
//! They find barn the way `barn serve` was configured: the same config
//! file, `BARN_*` variables and data directory, so that on one machine
//! `barn serve` in one terminal and `barn status` in another just work
//! (the token is read from `<data-dir>/admin.token` unless
//! `BARN_ADMIN_TOKEN` says otherwise).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use barn_admin::pb;

/// How to reach the running barn.
#[derive(clap::Args, Debug)]
pub struct Connect {
    /// The admin API's URL (default: http://<admin.listen of the config>,
    /// i.e. http://127.0.0.1:2481).
    #[arg(long, env = "BARN_ADMIN_URL", global = true)]
    admin_url: Option<String>,
    /// barn's config file, to find its admin address and data directory.
    #[arg(long, short, env = "BARN_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// barn's data directory, where `barn serve` keeps admin.token
    /// (default ./data).
    #[arg(long, env = "BARN_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// A file holding the admin token (default: BARN_ADMIN_TOKEN, else
    /// <data-dir>/admin.token).
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
}

/// `barn track` / `barn untrack`.
#[derive(clap::Args, Debug)]
pub struct TrackArgs {
    #[command(subcommand)]
    what: What,
    #[command(flatten)]
    connect: Connect,
}

#[derive(clap::Subcommand, Debug)]
enum What {
    /// A PDS, backed up whole: e.g. https://pds.example.com.
    Host {
        /// The PDS URL.
        url: String,
    },
    /// One account, wherever it is hosted: a DID or a handle.
    Account {
        /// did:plc:…, did:web:… or a handle such as alice.example.com.
        account: String,
    },
}

/// `barn status`.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// An account (DID or handle): show its backup instead.
    account: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: Connect,
}

/// `barn export`.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// The account: a DID, or a handle barn holds.
    account: String,
    /// A past revision (a rev barn holds; `barn status <account>` and
    /// dev.barn.sync.listCommits list them).
    #[arg(long, conflicts_with = "at")]
    rev: Option<String>,
    /// The revision in force at this time (RFC 3339, e.g.
    /// 2026-11-21T10:00:00Z).
    #[arg(long)]
    at: Option<String>,
    /// Where to write the CAR (`-` for stdout).
    #[arg(long, short)]
    output: PathBuf,
    #[command(flatten)]
    connect: Connect,
}

/// `barn backup`.
#[derive(clap::Args, Debug)]
pub struct BackupArgs {
    /// A host URL (https://…), or an account (DID or handle).
    target: String,
    #[command(flatten)]
    connect: Connect,
}

/// `barn delete-backup`.
#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    /// The account's DID.
    did: String,
    /// Say yes: the deletion cannot be undone.
    #[arg(long)]
    yes: bool,
    #[command(flatten)]
    connect: Connect,
}

/// `barn watch`.
#[derive(clap::Args, Debug)]
pub struct WatchArgs {
    /// Only this host's group commits.
    #[arg(long)]
    host: Option<String>,
    #[command(flatten)]
    connect: Connect,
}

/// A command to run against the admin API.
pub enum Action {
    /// `barn track`.
    Track(TrackArgs),
    /// `barn untrack`.
    Untrack(TrackArgs),
    /// `barn status`.
    Status(StatusArgs),
    /// `barn export`.
    Export(ExportArgs),
    /// `barn backup`.
    Backup(BackupArgs),
    /// `barn delete-backup`.
    Delete(DeleteArgs),
    /// `barn watch`.
    Watch(WatchArgs),
}

/// Runs `action` and prints what happened.
pub fn run(action: Action) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        match action {
            Action::Track(a) => track(a, true).await,
            Action::Untrack(a) => track(a, false).await,
            Action::Status(a) => status(a).await,
            Action::Export(a) => export(a).await,
            Action::Backup(a) => backup(a).await,
            Action::Delete(a) => delete(a).await,
            Action::Watch(a) => watch(a).await,
        }
    })
}

impl Connect {
    async fn client(&self) -> anyhow::Result<barn_admin::Client> {
        let file = match &self.config {
            Some(p) => crate::config::RawConfig::from_file(p)?,
            None => crate::config::RawConfig::default(),
        };
        let url = match &self.admin_url {
            Some(u) => u.clone(),
            None => {
                let listen = std::env::var("BARN_ADMIN_LISTEN")
                    .ok()
                    .or_else(|| file.admin.as_ref().and_then(|a| a.listen.clone()));
                let listen =
                    listen.unwrap_or_else(|| crate::config::DEFAULT_ADMIN_LISTEN.to_owned());
                // A server on every address is reached on loopback.
                let listen = listen.replace("0.0.0.0:", "127.0.0.1:");
                format!("http://{listen}")
            }
        };
        let token = self.token(&file)?;
        Ok(barn_admin::connect(&url, &token).await?)
    }

    fn token(&self, file: &crate::config::RawConfig) -> anyhow::Result<String> {
        if let Some(f) = &self.token_file {
            return read_token(f);
        }
        if let Ok(t) = std::env::var("BARN_ADMIN_TOKEN") {
            return Ok(t);
        }
        if let Some(g) = &file.gateway {
            if let Some(t) = &g.admin_token {
                return Ok(t.clone());
            }
            if let Some(f) = &g.admin_token_file {
                return read_token(f);
            }
        }
        let dir = self
            .data_dir
            .clone()
            .or_else(|| file.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from("./data"));
        read_token(&dir.join(crate::serve::TOKEN_FILE)).with_context(|| {
            format!(
                "no admin token: run this where `barn serve` keeps its data ({}), or pass --data-dir, --token-file or BARN_ADMIN_TOKEN",
                dir.display()
            )
        })
    }
}

fn read_token(path: &std::path::Path) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("reading the admin token from {}", path.display()))?
        .trim()
        .to_owned())
}

/// A gRPC failure in words: its message is written for people already.
fn failed(what: &str, e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{what}: {e}")
}

async fn track(a: TrackArgs, on: bool) -> anyhow::Result<()> {
    let mut c = a.connect.client().await?;
    match (a.what, on) {
        (What::Host { url }, true) => {
            let r = c
                .track_host(pb::TrackHostRequest { host: url })
                .await
                .map_err(|e| failed("track host", e.message().to_owned()))?
                .into_inner();
            if r.added {
                println!(
                    "tracking {} whole: following its firehose and importing every account on it (see `barn status`)",
                    r.host
                );
            } else {
                println!("{} was already tracked whole", r.host);
            }
        }
        (What::Account { account }, true) => {
            let r = c
                .track_account(pb::TrackAccountRequest { account })
                .await
                .map_err(|e| failed("track account", e.message().to_owned()))?
                .into_inner();
            println!(
                "tracking {} (hosted on {}){}",
                r.did,
                r.pds,
                if r.added {
                    ""
                } else {
                    "; it was already followed"
                }
            );
        }
        (What::Host { url }, false) => {
            let r = c
                .untrack_host(pb::UntrackHostRequest { host: url })
                .await
                .map_err(|e| failed("untrack host", e.message().to_owned()))?
                .into_inner();
            if r.removed {
                println!(
                    "{} is no longer tracked whole; what barn stored is kept{}",
                    r.host,
                    if r.accounts_kept > 0 {
                        format!(
                            " ({} account(s) tracked one by one are still followed there)",
                            r.accounts_kept
                        )
                    } else {
                        String::new()
                    }
                );
            } else {
                println!("{} was not tracked whole; nothing changed", r.host);
            }
            if !r.warning.is_empty() {
                eprintln!("warning: {}", r.warning);
            }
        }
        (What::Account { account }, false) => {
            let r = c
                .untrack_account(pb::UntrackAccountRequest { account })
                .await
                .map_err(|e| failed("untrack account", e.message().to_owned()))?
                .into_inner();
            if r.removed {
                println!(
                    "{} is no longer followed; its backup is kept (barn delete-backup removes it)",
                    r.did
                );
            } else {
                println!("{} was not followed; nothing changed", r.did);
            }
            if !r.warning.is_empty() {
                eprintln!("warning: {}", r.warning);
            }
        }
    }
    Ok(())
}

fn ago(ms: u64) -> String {
    barn_xrpc::ago(barn_store::now_ms(), ms)
}

fn bytes(n: u64) -> String {
    barn_xrpc::human_bytes(n)
}

async fn status(a: StatusArgs) -> anyhow::Result<()> {
    let mut c = a.connect.client().await?;
    if let Some(account) = a.account {
        let s = c
            .get_account(pb::GetAccountRequest { account })
            .await
            .map_err(|e| failed("status", e.message().to_owned()))?
            .into_inner();
        if a.json {
            println!("{}", serde_json::to_string_pretty(&account_json(&s))?);
            return Ok(());
        }
        println!(
            "account  {}{}",
            s.did,
            if s.handle.is_empty() {
                String::new()
            } else {
                format!(" ({})", s.handle)
            }
        );
        println!("host     {}", s.host);
        println!(
            "state    {}{}, {}{}",
            if s.active { "active" } else { "inactive" },
            if s.status.is_empty() {
                String::new()
            } else {
                format!(" ({})", s.status)
            },
            s.sync,
            if s.sync_reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", s.sync_reason)
            },
        );
        println!("followed {}", if s.tracked { "yes" } else { "no" });
        println!("head     rev {} commit {}", s.rev, s.head);
        println!(
            "history  {} revisions, {} records now",
            s.revisions, s.records
        );
        println!(
            "blobs    {} referenced: {} stored, {} queued, {} missing",
            s.blobs, s.blobs_stored, s.blobs_queued, s.blobs_missing
        );
        for m in s.missing.iter().take(20) {
            println!(
                "  missing {} ({}, {} attempts)",
                m.cid, m.reason, m.attempts
            );
        }
        if s.missing.len() > 20 {
            println!("  … and {} more", s.missing.len() - 20);
        }
        return Ok(());
    }
    let s = c
        .get_status(pb::GetStatusRequest {})
        .await
        .map_err(|e| failed("status", e.message().to_owned()))?
        .into_inner();
    let tracked = c
        .list_tracked(pb::ListTrackedRequest {})
        .await
        .map_err(|e| failed("status", e.message().to_owned()))?
        .into_inner();
    if a.json {
        let hosts: Vec<serde_json::Value> = s.hosts.iter().map(host_json).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "version": s.version,
                "uptimeSeconds": s.uptime_seconds,
                "repos": s.repos,
                "reposActive": s.repos_active,
                "reposDesynchronized": s.repos_desynchronized,
                "storeBytes": s.store_bytes,
                "blobQueue": s.blob_queue,
                "blobQueueOldestDueSeconds": s.blob_queue_oldest_due_seconds,
                "hosts": hosts,
                "accounts": tracked.accounts,
            }))?
        );
        return Ok(());
    }
    println!(
        "barn {} up {}s: {} repos ({} active, {} waiting for a resync), store {}",
        s.version,
        s.uptime_seconds,
        s.repos,
        s.repos_active,
        s.repos_desynchronized,
        bytes(s.store_bytes)
    );
    match (s.blob_queue, s.blob_queue_oldest_due_seconds) {
        (0, _) => println!("blob queue: empty"),
        (n, due) if due > 0.0 => println!(
            "blob queue: {n} queued or waiting for a retry (the earliest was due {due:.0}s ago)"
        ),
        (n, _) => println!("blob queue: {n} waiting for a retry, none due yet"),
    }
    if s.hosts.is_empty() {
        println!(
            "no host is followed{}: `barn track host https://pds.example.com` or `barn track account <did|handle>`",
            if s.repos > 0 {
                " (what barn stored is kept)"
            } else {
                ""
            }
        );
    }
    for h in &s.hosts {
        println!(
            "{} [{}] {} repos, cursor {}, {} events not yet durable, lag {:.1}s, last event {}",
            h.host,
            if h.whole {
                "whole host"
            } else {
                "some accounts"
            },
            h.repos,
            if h.cursor < 0 {
                "none".into()
            } else {
                h.cursor.to_string()
            },
            h.lag_seq,
            h.lag_seconds,
            ago(h.last_event_ms),
        );
        if !h.listing.is_empty() || h.imports_queued + h.imports_running > 0 {
            println!(
                "    {}imports: {} running, {} queued, {} done, {} failed",
                if h.listing.is_empty() {
                    String::new()
                } else {
                    format!("listing ({}, {} listed), ", h.listing, h.listed)
                },
                h.imports_running,
                h.imports_queued,
                h.imports_done,
                h.imports_failed
            );
        }
    }
    if !tracked.accounts.is_empty() {
        println!(
            "accounts tracked one by one: {}",
            tracked.accounts.join(", ")
        );
    }
    Ok(())
}

fn host_json(h: &pb::HostStatus) -> serde_json::Value {
    serde_json::json!({
        "host": h.host, "whole": h.whole, "cursor": h.cursor, "seq": h.seq,
        "lagSeq": h.lag_seq, "lagSeconds": h.lag_seconds, "lastEventMs": h.last_event_ms,
        "listing": h.listing, "listed": h.listed, "importsQueued": h.imports_queued,
        "importsRunning": h.imports_running, "importsDone": h.imports_done,
        "importsFailed": h.imports_failed, "repos": h.repos,
    })
}

fn account_json(s: &pb::AccountStatus) -> serde_json::Value {
    serde_json::json!({
        "did": s.did, "handle": s.handle, "host": s.host, "head": s.head, "rev": s.rev,
        "active": s.active, "status": s.status, "sync": s.sync, "syncReason": s.sync_reason,
        "tracked": s.tracked, "revisions": s.revisions, "records": s.records,
        "blobs": s.blobs, "blobsStored": s.blobs_stored, "blobsQueued": s.blobs_queued,
        "blobsMissing": s.blobs_missing,
        "missing": s.missing.iter().map(|m| serde_json::json!({"cid": m.cid, "reason": m.reason, "attempts": m.attempts})).collect::<Vec<_>>(),
    })
}

async fn export(a: ExportArgs) -> anyhow::Result<()> {
    use pb::export_repo_request::At;
    let mut c = a.connect.client().await?;
    let at = match (a.rev, a.at) {
        (Some(r), _) => Some(At::Rev(r)),
        (None, Some(t)) => Some(At::Time(t)),
        (None, None) => None,
    };
    let mut stream = c
        .export_repo(pb::ExportRepoRequest {
            account: a.account.clone(),
            at,
        })
        .await
        .map_err(|e| failed("export", e.message().to_owned()))?
        .into_inner();
    let to_stdout = a.output.as_os_str() == "-";
    // Written to a temporary name and renamed at the end: a cut export
    // never looks like a whole CAR.
    let tmp = a.output.with_extension("car.part");
    let mut out: Box<dyn Write> = if to_stdout {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::io::BufWriter::new(
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?,
        ))
    };
    let bar = if std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new_spinner();
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {msg} {bytes} ({bytes_per_sec}, {elapsed})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        b.enable_steady_tick(Duration::from_millis(120));
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let started = Instant::now();
    let mut written = 0u64;
    let mut rev = String::new();
    let mut commit = String::new();
    let mut last_line = Instant::now();
    loop {
        let msg = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(e) => {
                drop(out);
                if !to_stdout {
                    let _ = std::fs::remove_file(&tmp);
                }
                bail!("export cut short: {}", e.message());
            }
        };
        if !msg.rev.is_empty() {
            rev = msg.rev;
            commit = msg.commit;
            bar.set_message(format!("exporting {} at rev {rev}", a.account));
        }
        out.write_all(&msg.data).context("writing the CAR")?;
        written += msg.data.len() as u64;
        bar.set_position(written);
        if bar.is_hidden() && !to_stdout && last_line.elapsed() >= Duration::from_secs(2) {
            last_line = Instant::now();
            eprintln!("exporting: {} written", bytes(written));
        }
    }
    out.flush().context("writing the CAR")?;
    drop(out);
    bar.finish_and_clear();
    if !to_stdout {
        std::fs::rename(&tmp, &a.output)
            .with_context(|| format!("renaming {} to {}", tmp.display(), a.output.display()))?;
    }
    eprintln!(
        "exported {} at rev {rev} (commit {commit}): {} in {:.1}s{}",
        a.account,
        bytes(written),
        started.elapsed().as_secs_f64(),
        if to_stdout {
            String::new()
        } else {
            format!(" -> {}", a.output.display())
        }
    );
    Ok(())
}

async fn backup(a: BackupArgs) -> anyhow::Result<()> {
    use pb::backup_now_request::Target;
    let mut c = a.connect.client().await?;
    let target = if a.target.starts_with("http://") || a.target.starts_with("https://") {
        Target::Host(a.target)
    } else {
        Target::Account(a.target)
    };
    let r = c
        .backup_now(pb::BackupNowRequest {
            target: Some(target),
        })
        .await
        .map_err(|e| failed("backup", e.message().to_owned()))?
        .into_inner();
    println!("{} (see `barn status`)", r.started);
    Ok(())
}

async fn delete(a: DeleteArgs) -> anyhow::Result<()> {
    if !a.yes {
        bail!(
            "deleting {}'s backup cannot be undone: run again with --yes to confirm",
            a.did
        );
    }
    let mut c = a.connect.client().await?;
    let r = c
        .delete_account_backup(pb::DeleteAccountBackupRequest {
            did: a.did.clone(),
            confirm: a.did,
        })
        .await
        .map_err(|e| failed("delete-backup", e.message().to_owned()))?
        .into_inner();
    println!(
        "deleted {}'s backup: {} revisions, {} records, {} blocks ({} kept: other accounts hold them too), {} blobs ({} kept, shared); no longer followed",
        r.did, r.revisions, r.records, r.blocks, r.blocks_shared, r.blobs, r.blobs_shared
    );
    Ok(())
}

async fn watch(a: WatchArgs) -> anyhow::Result<()> {
    let mut c = a.connect.client().await?;
    let mut stream = c
        .watch_events(pb::WatchEventsRequest {
            host: a.host.unwrap_or_default(),
        })
        .await
        .map_err(|e| failed("watch", e.message().to_owned()))?
        .into_inner();
    eprintln!("watching (Ctrl-C to stop)");
    while let Some(ev) = stream
        .message()
        .await
        .map_err(|e| failed("watch", e.message().to_owned()))?
    {
        let t = barn_repo::syntax::Datetime::from_unix_millis(ev.time_ms as i64);
        match ev.event {
            Some(pb::watch_event::Event::Durable(d)) => {
                let repos: Vec<String> = d
                    .repos
                    .iter()
                    .take(5)
                    .map(|r| format!("{}@{}", r.did, r.rev))
                    .collect();
                println!(
                    "{} durable {} cursor {} revisions {}{}",
                    t.as_str(),
                    d.host,
                    d.cursor,
                    d.revisions,
                    if repos.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " [{}{}]",
                            repos.join(" "),
                            if d.repos.len() > 5 { " …" } else { "" }
                        )
                    }
                );
            }
            Some(pb::watch_event::Event::Admin(x)) => {
                println!("{} admin {} {}", t.as_str(), x.action, x.target);
            }
            None => {}
        }
    }
    Ok(())
}
