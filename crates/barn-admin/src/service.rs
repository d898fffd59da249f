//! The `barn.admin.v1.Admin` service: each call turned into mirror and
//! store operations.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use barn_blobs::BlobStorage;
use barn_identity::Resolver;
use barn_mirror::Mirror;
use barn_repo::syntax::{Datetime, Did, Handle, Tid};
use barn_store::{BlobStatus, CommitEntry, Store, SyncState};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::pb;

/// CAR chunks sent to an export client at a time (64 KiB each): the
/// exporting thread waits when the client reads slower than that.
const EXPORT_CHUNK: usize = 64 * 1024;
const EXPORT_QUEUE: usize = 8;

/// What the admin service needs from the running barn.
pub struct AdminParts {
    /// The mirror (tracking, progress, deletes).
    pub mirror: Mirror,
    /// The store the mirror writes.
    pub store: Arc<Store>,
    /// Resolves DIDs (and checks handles).
    pub resolver: Resolver,
    /// Blob objects (deleted with an account's backup), unless blobs are
    /// off.
    pub blobs: Option<BlobStorage>,
    /// Hosts in the config file: untracking one says it comes back.
    pub config_hosts: Vec<String>,
    /// Accounts in the config file.
    pub config_accounts: Vec<String>,
    /// The admin metrics.
    pub metrics: Metrics,
}

/// The admin service. Cheap to clone.
#[derive(Clone)]
pub struct AdminService {
    inner: Arc<Inner>,
}

struct Inner {
    mirror: Mirror,
    store: Arc<Store>,
    resolver: Resolver,
    blobs: Option<BlobStorage>,
    config_hosts: HashSet<String>,
    config_accounts: HashSet<String>,
    metrics: Metrics,
    http: reqwest::Client,
    started: Instant,
    actions: broadcast::Sender<pb::AdminAction>,
}

impl AdminService {
    /// A service over the running barn's parts.
    pub fn new(parts: AdminParts) -> AdminService {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        AdminService {
            inner: Arc::new(Inner {
                config_hosts: parts
                    .config_hosts
                    .iter()
                    .map(|h| barn_mirror::normalize_host(h))
                    .collect(),
                config_accounts: parts.config_accounts.into_iter().collect(),
                mirror: parts.mirror,
                store: parts.store,
                resolver: parts.resolver,
                blobs: parts.blobs,
                metrics: parts.metrics,
                http,
                started: Instant::now(),
                actions: broadcast::channel(256).0,
            }),
        }
    }

    fn answer<T>(&self, method: &str, r: Result<T>) -> std::result::Result<Response<T>, Status> {
        match r {
            Ok(v) => {
                self.inner.metrics.answered(method, tonic::Code::Ok);
                Ok(Response::new(v))
            }
            Err(e) => {
                let status = Status::from(e);
                tracing::warn!(method, code = ?status.code(), error = %status.message(), "admin call failed");
                self.inner.metrics.answered(method, status.code());
                Err(status)
            }
        }
    }

    fn announce(&self, action: &str, target: &str) {
        tracing::info!(action, target, "admin action");
        let _ = self.inner.actions.send(pb::AdminAction {
            action: action.to_owned(),
            target: target.to_owned(),
        });
    }

    /// A DID from a DID or a handle: barn's own records first, then the
    /// followed hosts (`resolveHandle`), then the handle's domain
    /// (`/.well-known/atproto-did`). A handle is accepted only when the
    /// DID document names it back.
    async fn resolve_account(&self, account: &str) -> Result<String> {
        let a = account.trim().trim_start_matches('@');
        if a.is_empty() {
            return Err(Error::InvalidRequest(
                "account: give a DID (did:plc:…, did:web:…) or a handle".into(),
            ));
        }
        if a.starts_with("did:") {
            Did::validate(a).map_err(|e| Error::InvalidRequest(format!("account: {e}")))?;
            return Ok(a.to_owned());
        }
        Handle::validate(a)
            .map_err(|e| Error::InvalidRequest(format!("account: not a DID nor a handle: {e}")))?;
        let handle = a.to_ascii_lowercase();
        let store = self.inner.store.clone();
        let h = handle.clone();
        if let Some(did) = blocking(move || store.did_for_handle(&h)).await? {
            return Ok(did);
        }
        let mut candidates = Vec::new();
        for host in self.inner.mirror.hosts() {
            let url = format!("{host}/xrpc/com.atproto.identity.resolveHandle");
            if let Ok(r) = self
                .inner
                .http
                .get(&url)
                .query(&[("handle", &handle)])
                .send()
                .await
                && r.status().is_success()
                && let Ok(v) = r.json::<serde_json::Value>().await
                && let Some(did) = v.get("did").and_then(|d| d.as_str())
            {
                candidates.push(did.to_owned());
            }
        }
        if let Ok(r) = self
            .inner
            .http
            .get(format!("https://{handle}/.well-known/atproto-did"))
            .send()
            .await
            && r.status().is_success()
            && let Ok(text) = r.text().await
        {
            candidates.push(text.trim().to_owned());
        }
        for did in candidates {
            if Did::validate(&did).is_err() {
                continue;
            }
            if let Ok(id) = self.inner.resolver.refresh(&did).await
                && id.handle.as_deref().map(str::to_ascii_lowercase) == Some(handle.clone())
            {
                return Ok(did);
            }
        }
        Err(Error::NotFound(format!(
            "cannot resolve handle {handle} (asked barn's store, the followed hosts and \
             https://{handle}/.well-known/atproto-did); give the account's DID instead"
        )))
    }

    fn host_status(
        &self,
        repos_by_host: &std::collections::HashMap<String, u64>,
    ) -> Vec<pb::HostStatus> {
        self.inner
            .mirror
            .progress()
            .into_iter()
            .map(|p| pb::HostStatus {
                repos: repos_by_host.get(&p.host).copied().unwrap_or(0),
                host: p.host,
                whole: p.whole,
                cursor: p.cursor.unwrap_or(-1),
                seq: if p.seq > 0 { p.seq } else { -1 },
                lag_seq: p.lag_seq,
                lag_seconds: p.lag_ms as f64 / 1000.0,
                last_event_ms: p.last_event_ms,
                listing: p
                    .pass
                    .as_ref()
                    .map(|l| format!("{:?}", l.kind).to_ascii_lowercase())
                    .unwrap_or_default(),
                listed: p.pass.as_ref().map(|l| l.listed).unwrap_or(0),
                imports_queued: p.queued as u64,
                imports_running: p.importing as u64,
                imports_done: p.imports_done,
                imports_failed: p.imports_failed,
            })
            .collect()
    }

    /// Repos per host, and (all, active, desynchronized) counts.
    async fn repo_counts(&self) -> Result<(std::collections::HashMap<String, u64>, [u64; 3])> {
        let store = self.inner.store.clone();
        let repos = blocking(move || store.repos()).await?;
        let mut by_host = std::collections::HashMap::new();
        let mut counts = [0u64; 3];
        for (_, state) in repos {
            *by_host
                .entry(barn_mirror::normalize_host(&state.host))
                .or_insert(0) += 1;
            counts[0] += 1;
            counts[1] += u64::from(state.active);
            counts[2] += u64::from(state.sync == SyncState::Desynchronized);
        }
        Ok((by_host, counts))
    }

    async fn track_host(&self, req: pb::TrackHostRequest) -> Result<pb::TrackHostResponse> {
        let host = check_host(&req.host)?;
        let added = self.inner.mirror.add_host(&host)?;
        self.announce("track_host", &host);
        Ok(pb::TrackHostResponse { host, added })
    }

    async fn untrack_host(&self, req: pb::UntrackHostRequest) -> Result<pb::UntrackHostResponse> {
        let host = check_host(&req.host)?;
        let (removed, kept) = self.inner.mirror.remove_host(&host).await?;
        self.announce("untrack_host", &host);
        let warning = if self.inner.config_hosts.contains(&host) {
            format!(
                "{host} is in barn's config (hosts): it is tracked again at the next start unless removed there"
            )
        } else {
            String::new()
        };
        Ok(pb::UntrackHostResponse {
            host,
            removed,
            accounts_kept: kept as u64,
            warning,
        })
    }

    async fn track_account(
        &self,
        req: pb::TrackAccountRequest,
    ) -> Result<pb::TrackAccountResponse> {
        let did = self.resolve_account(&req.account).await?;
        let before = self.inner.mirror.follows(&did);
        let pds = self.inner.mirror.add_account(&did).await?;
        self.announce("track_account", &did);
        Ok(pb::TrackAccountResponse {
            did,
            pds,
            added: !before,
        })
    }

    async fn untrack_account(
        &self,
        req: pb::UntrackAccountRequest,
    ) -> Result<pb::UntrackAccountResponse> {
        let did = self.resolve_account(&req.account).await?;
        let removed = self.inner.mirror.remove_account(&did).await?;
        self.announce("untrack_account", &did);
        let warning = if self.inner.config_accounts.contains(&did) {
            format!(
                "{did} is in barn's config (accounts): it is tracked again at the next start unless removed there"
            )
        } else {
            String::new()
        };
        Ok(pb::UntrackAccountResponse {
            did,
            removed,
            warning,
        })
    }

    async fn list_tracked(&self) -> Result<pb::ListTrackedResponse> {
        let (by_host, _) = self.repo_counts().await?;
        Ok(pb::ListTrackedResponse {
            hosts: self.host_status(&by_host),
            accounts: self.inner.mirror.tracked_accounts(),
        })
    }

    async fn backup_now(&self, req: pb::BackupNowRequest) -> Result<pb::BackupNowResponse> {
        use pb::backup_now_request::Target;
        let started = match req.target {
            Some(Target::Host(h)) => {
                let host = check_host(&h)?;
                if !self.inner.mirror.reconcile(&host, "admin") {
                    return Err(Error::NotFound(format!(
                        "barn does not follow {host}; track it first (barn track host {host})"
                    )));
                }
                self.announce("backup_now", &host);
                format!("listing {host} and fetching every repo whose head differs from barn's")
            }
            Some(Target::Account(a)) => {
                let did = self.resolve_account(&a).await?;
                if !self.inner.mirror.follows(&did) {
                    return Err(Error::NotFound(format!(
                        "barn does not follow {did}; track it first (barn track account {did})"
                    )));
                }
                let pds = self.inner.mirror.backup_account(&did).await?;
                self.announce("backup_now", &did);
                format!("fetching {did} from {pds}")
            }
            None => {
                return Err(Error::InvalidRequest(
                    "target: give a host or an account".into(),
                ));
            }
        };
        Ok(pb::BackupNowResponse { started })
    }

    async fn get_status(&self) -> Result<pb::GetStatusResponse> {
        let (by_host, counts) = self.repo_counts().await?;
        let store = &self.inner.store;
        let queue = {
            let store = store.clone();
            blocking(move || store.blob_queue_len(10_000_000)).await?
        };
        let oldest = match store.next_blob_due()? {
            Some(due) => barn_store::now_ms().saturating_sub(due) as f64 / 1000.0,
            None => 0.0,
        };
        Ok(pb::GetStatusResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_seconds: self.inner.started.elapsed().as_secs(),
            hosts: self.host_status(&by_host),
            repos: counts[0],
            repos_active: counts[1],
            repos_desynchronized: counts[2],
            store_bytes: store.disk_space()?,
            blob_queue: queue as u64,
            blob_queue_oldest_due_seconds: oldest,
        })
    }

    async fn get_account(&self, req: pb::GetAccountRequest) -> Result<pb::AccountStatus> {
        let did = self.resolve_account(&req.account).await?;
        let store = self.inner.store.clone();
        let d = did.clone();
        let (state, records, blobs, missing) = blocking(move || {
            let state = store.repo(&d)?;
            let records = store.records_count(&d)?;
            let blobs = store.blob_counts(&d)?;
            let missing = store.missing_blobs(&d)?;
            Ok::<_, barn_store::Error>((state, records, blobs, missing))
        })
        .await?;
        let Some(state) = state else {
            return Err(Error::NotFound(format!("barn holds nothing of {did}")));
        };
        Ok(pb::AccountStatus {
            tracked: self.inner.mirror.follows(&did),
            did,
            handle: state.handle.clone().unwrap_or_default(),
            host: state.host.clone(),
            head: state.head.map(|c| c.to_string()).unwrap_or_default(),
            rev: state.rev.clone().unwrap_or_default(),
            active: state.active,
            status: state.status.clone().unwrap_or_default(),
            sync: match state.sync {
                SyncState::Synchronized => "synchronized",
                SyncState::Desynchronized => "desynchronized",
            }
            .to_owned(),
            sync_reason: state.sync_reason.clone().unwrap_or_default(),
            revisions: state.revisions,
            records,
            blobs: blobs.referenced,
            blobs_stored: blobs.stored,
            blobs_missing: blobs.missing,
            blobs_queued: blobs.queued,
            missing: missing
                .into_iter()
                .filter(|(_, b)| b.status == BlobStatus::Missing)
                .take(1000)
                .map(|(cid, b)| pb::MissingBlob {
                    cid: cid.to_string(),
                    reason: b.reason.unwrap_or_default(),
                    attempts: b.attempts,
                })
                .collect(),
        })
    }

    async fn delete_account_backup(
        &self,
        req: pb::DeleteAccountBackupRequest,
    ) -> Result<pb::DeleteAccountBackupResponse> {
        let did = req.did.trim().to_owned();
        Did::validate(&did).map_err(|e| Error::InvalidRequest(format!("did: {e}")))?;
        if req.confirm != did {
            return Err(Error::InvalidRequest(
                "confirm: must repeat the DID exactly (deleting a backup cannot be undone)".into(),
            ));
        }
        if self.inner.store.repo(&did)?.is_none() {
            return Err(Error::NotFound(format!("barn holds nothing of {did}")));
        }
        let report = self.inner.mirror.delete_account(&did).await?;
        let mut deleted = 0u64;
        if let Some(blobs) = &self.inner.blobs {
            for cid in &report.blobs {
                // A blob whose object is already gone is fine; one that
                // cannot be deleted now is logged (its state is gone, so
                // barn no longer serves it either way).
                match blobs.delete(cid).await {
                    Ok(_) => deleted += 1,
                    Err(e) => tracing::warn!(%did, %cid, error = %e, "blob object not deleted"),
                }
            }
        }
        tracing::info!(%did, revisions = report.revisions, blocks = report.blocks, blobs = deleted, "account backup deleted");
        self.announce("delete_account_backup", &did);
        Ok(pb::DeleteAccountBackupResponse {
            did,
            revisions: report.revisions,
            records: report.records,
            blocks: report.blocks,
            blocks_shared: report.blocks_shared,
            blobs: report.blobs.len() as u64,
            blobs_shared: report.blobs_shared,
            events: report.events,
        })
    }

    fn watch(
        &self,
        req: pb::WatchEventsRequest,
    ) -> ReceiverStream<std::result::Result<pb::WatchEvent, Status>> {
        let filter = (!req.host.is_empty()).then(|| barn_mirror::normalize_host(&req.host));
        let mut durable = self.inner.mirror.subscribe_durable();
        let mut actions = self.inner.actions.subscribe();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            use broadcast::error::RecvError;
            loop {
                let event = tokio::select! {
                    d = durable.recv() => match d {
                        Ok(d) => {
                            if filter.as_ref().is_some_and(|h| *h != d.host) {
                                continue;
                            }
                            pb::watch_event::Event::Durable(pb::Durable {
                                host: d.host,
                                cursor: d.cursor.unwrap_or(-1),
                                revisions: d.revisions as u64,
                                repos: d.repos.into_iter().map(|(did, rev)| pb::RepoRev { did, rev }).collect(),
                            })
                        }
                        Err(RecvError::Lagged(n)) => {
                            tracing::debug!(skipped = n, "watch client fell behind");
                            continue;
                        }
                        Err(RecvError::Closed) => break,
                    },
                    a = actions.recv() => match a {
                        Ok(a) => pb::watch_event::Event::Admin(a),
                        Err(RecvError::Lagged(_)) => continue,
                        Err(RecvError::Closed) => break,
                    },
                    _ = tx.closed() => break,
                };
                let msg = pb::WatchEvent {
                    time_ms: barn_store::now_ms(),
                    event: Some(event),
                };
                if tx.send(Ok(msg)).await.is_err() {
                    break;
                }
            }
        });
        ReceiverStream::new(rx)
    }

    async fn export(
        &self,
        req: pb::ExportRepoRequest,
    ) -> Result<ReceiverStream<std::result::Result<pb::ExportChunk, Status>>> {
        use pb::export_repo_request::At;
        let did = self.resolve_account(&req.account).await?;
        let store = self.inner.store.clone();
        let entry = {
            let did = did.clone();
            let store = store.clone();
            blocking(move || -> Result<CommitEntry> {
                let found = match &req.at {
                    Some(At::Rev(rev)) => {
                        Tid::validate(rev)
                            .map_err(|e| Error::InvalidRequest(format!("rev: {e}")))?;
                        store.revision(&did, rev)?
                    }
                    Some(At::Time(t)) => {
                        let at = Datetime::parse(t).map_err(|e| {
                            Error::InvalidRequest(format!(
                                "time: {e} (use RFC 3339, e.g. 2026-11-21T10:00:00Z)"
                            ))
                        })?;
                        let micros = u64::try_from(at.timestamp_micros()).map_err(|_| {
                            Error::InvalidRequest(
                                "time: before 1970, older than any revision".into(),
                            )
                        })?;
                        let bound = Tid::from_parts(micros, 1023).map_err(|_| {
                            Error::InvalidRequest("time: too far in the future".into())
                        })?;
                        store.revision_at_or_before(&did, bound.as_str())?
                    }
                    None => match store.repo(&did)?.and_then(|s| s.rev) {
                        Some(rev) => store.revision(&did, &rev)?,
                        None => None,
                    },
                };
                found.ok_or_else(|| {
                    Error::NotFound(format!(
                        "barn holds no revision of {did} {}",
                        match &req.at {
                            Some(At::Rev(r)) => format!("with rev {r}"),
                            Some(At::Time(t)) => format!("at or before {t}"),
                            None => "(no head)".into(),
                        }
                    ))
                })
            })
            .await?
        };
        let (tx, rx) = mpsc::channel(EXPORT_QUEUE);
        let first = pb::ExportChunk {
            rev: entry.rev.clone(),
            commit: entry.cid.to_string(),
            data: Vec::new(),
        };
        tokio::task::spawn_blocking(move || {
            if tx.blocking_send(Ok(first)).is_err() {
                return;
            }
            let sink = ChunkSink {
                tx: tx.clone(),
                buf: Vec::with_capacity(EXPORT_CHUNK),
            };
            match store.write_car(&entry, sink, 65_536) {
                Ok(mut sink) => {
                    let _ = std::io::Write::flush(&mut sink);
                }
                Err(e) => {
                    tracing::warn!(did = %did, rev = %entry.rev, error = %e, "export failed");
                    let _ = tx.blocking_send(Err(Status::internal(format!("export failed: {e}"))));
                }
            }
        });
        Ok(ReceiverStream::new(rx))
    }
}

/// Sends what is written in 64 KiB chunks; a gone client fails the write,
/// which ends the walk.
struct ChunkSink {
    tx: mpsc::Sender<std::result::Result<pb::ExportChunk, Status>>,
    buf: Vec<u8>,
}

impl std::io::Write for ChunkSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= EXPORT_CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(EXPORT_CHUNK));
        self.tx
            .blocking_send(Ok(pb::ExportChunk {
                rev: String::new(),
                commit: String::new(),
                data,
            }))
            .map_err(|_| std::io::Error::other("export client went away"))
    }
}

fn check_host(host: &str) -> Result<String> {
    let h = host.trim();
    let url = reqwest::Url::parse(h).map_err(|e| {
        Error::InvalidRequest(format!(
            "host: {h:?} is not a URL ({e}); give it as https://pds.example.com"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(Error::InvalidRequest(format!(
            "host: {h:?} must be an http(s) URL such as https://pds.example.com"
        )));
    }
    Ok(barn_mirror::normalize_host(h))
}

async fn blocking<T, E>(f: impl FnOnce() -> std::result::Result<T, E> + Send + 'static) -> Result<T>
where
    T: Send + 'static,
    E: Into<Error> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Transport(format!("task: {e}")))?
        .map_err(Into::into)
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn track_host(
        &self,
        r: Request<pb::TrackHostRequest>,
    ) -> std::result::Result<Response<pb::TrackHostResponse>, Status> {
        self.answer("TrackHost", self.track_host(r.into_inner()).await)
    }

    async fn untrack_host(
        &self,
        r: Request<pb::UntrackHostRequest>,
    ) -> std::result::Result<Response<pb::UntrackHostResponse>, Status> {
        self.answer("UntrackHost", self.untrack_host(r.into_inner()).await)
    }

    async fn track_account(
        &self,
        r: Request<pb::TrackAccountRequest>,
    ) -> std::result::Result<Response<pb::TrackAccountResponse>, Status> {
        self.answer("TrackAccount", self.track_account(r.into_inner()).await)
    }

    async fn untrack_account(
        &self,
        r: Request<pb::UntrackAccountRequest>,
    ) -> std::result::Result<Response<pb::UntrackAccountResponse>, Status> {
        self.answer("UntrackAccount", self.untrack_account(r.into_inner()).await)
    }

    async fn list_tracked(
        &self,
        _: Request<pb::ListTrackedRequest>,
    ) -> std::result::Result<Response<pb::ListTrackedResponse>, Status> {
        self.answer("ListTracked", self.list_tracked().await)
    }

    async fn backup_now(
        &self,
        r: Request<pb::BackupNowRequest>,
    ) -> std::result::Result<Response<pb::BackupNowResponse>, Status> {
        self.answer("BackupNow", self.backup_now(r.into_inner()).await)
    }

    async fn get_status(
        &self,
        _: Request<pb::GetStatusRequest>,
    ) -> std::result::Result<Response<pb::GetStatusResponse>, Status> {
        self.answer("GetStatus", self.get_status().await)
    }

    async fn get_account(
        &self,
        r: Request<pb::GetAccountRequest>,
    ) -> std::result::Result<Response<pb::AccountStatus>, Status> {
        self.answer("GetAccount", self.get_account(r.into_inner()).await)
    }

    async fn delete_account_backup(
        &self,
        r: Request<pb::DeleteAccountBackupRequest>,
    ) -> std::result::Result<Response<pb::DeleteAccountBackupResponse>, Status> {
        self.answer(
            "DeleteAccountBackup",
            self.delete_account_backup(r.into_inner()).await,
        )
    }

    type WatchEventsStream = ReceiverStream<std::result::Result<pb::WatchEvent, Status>>;

    async fn watch_events(
        &self,
        r: Request<pb::WatchEventsRequest>,
    ) -> std::result::Result<Response<Self::WatchEventsStream>, Status> {
        self.answer("WatchEvents", Ok(self.watch(r.into_inner())))
    }

    type ExportRepoStream = ReceiverStream<std::result::Result<pb::ExportChunk, Status>>;

    async fn export_repo(
        &self,
        r: Request<pb::ExportRepoRequest>,
    ) -> std::result::Result<Response<Self::ExportRepoStream>, Status> {
        self.answer("ExportRepo", self.export(r.into_inner()).await)
    }
}
