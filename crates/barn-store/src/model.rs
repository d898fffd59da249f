//! What the store keeps, as Rust values. Values are stored as DAG-CBOR
//! (compact, deterministic, and CIDs stay binary).

use cid::Cid;
use serde::{Deserialize, Serialize};

/// How barn learned about a revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A verified `#commit` from the host's firehose.
    Firehose,
    /// A `#sync` event: the head was replaced from a verified full CAR.
    Sync,
    /// A full `getRepo` import (first sight of a repo, or after a desync).
    Resync,
    /// A periodic reconcile found a difference the firehose did not explain.
    Reconcile,
}

impl Source {
    /// Lowercase name, as logged and served.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Firehose => "firehose",
            Source::Sync => "sync",
            Source::Resync => "resync",
            Source::Reconcile => "reconcile",
        }
    }
}

/// What an op did (mirrors the firehose's `action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpAction {
    /// New record.
    Create,
    /// Changed record.
    Update,
    /// Removed record.
    Delete,
}

/// One record change of a revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Create, update or delete.
    pub action: OpAction,
    /// `collection/rkey`.
    pub path: String,
    /// New record CID (none for deletes).
    pub cid: Option<Cid>,
    /// Previous record CID (none for creates).
    pub prev: Option<Cid>,
}

impl Op {
    /// The op creating `path` with record `cid`.
    pub fn create(path: String, cid: Cid) -> Op {
        Op {
            action: OpAction::Create,
            path,
            cid: Some(cid),
            prev: None,
        }
    }
}

impl From<&Op> for barn_repo::mst::RecordOp {
    fn from(op: &Op) -> Self {
        barn_repo::mst::RecordOp {
            action: match op.action {
                OpAction::Create => barn_repo::mst::Action::Create,
                OpAction::Update => barn_repo::mst::Action::Update,
                OpAction::Delete => barn_repo::mst::Action::Delete,
            },
            path: op.path.clone(),
            cid: op.cid,
            prev: op.prev,
        }
    }
}

/// One revision of a repository, as barn saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitEntry {
    /// The commit's rev (a TID).
    pub rev: String,
    /// The commit CID.
    pub cid: Cid,
    /// The MST root of this revision.
    pub data: Cid,
    /// The `since` the event carried (firehose only).
    pub since: Option<String>,
    /// When barn stored it, milliseconds since the Unix epoch.
    pub seen_at_ms: u64,
    /// How barn got it.
    pub source: Source,
    /// The host's sequence number of the event, when it came from a stream.
    pub seq: Option<i64>,
    /// The host it came from.
    pub host: String,
    /// The record changes relative to the previous stored revision, when
    /// they are stored here; empty when [`CommitEntry::chunked`] says they
    /// are in the `ops` keyspace (read them with
    /// [`Store::revision_ops`](crate::Store::revision_ops)).
    pub ops: Vec<Op>,
    /// Why a resync / reconcile happened, when it did.
    pub reason: Option<String>,
    /// Set when the ops are too many to keep in this value (an import):
    /// they are stored in chunks beside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunked: Option<ChunkedOps>,
}

impl CommitEntry {
    /// How many ops of each kind the revision has, wherever they are stored.
    pub fn op_counts(&self) -> OpCounts {
        match &self.chunked {
            Some(c) => c.counts,
            None => OpCounts::of(&self.ops),
        }
    }
}

/// Where the ops of a revision with many of them are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkedOps {
    /// Chunks in the `ops` keyspace, numbered from 0.
    pub chunks: u32,
    /// The ops, counted by kind.
    pub counts: OpCounts,
    /// The ops are not stored (`chunks` is 0): they are every record of
    /// the revision's tree ([`CommitEntry::data`]), in key order, each a
    /// create: a first import, whose record index was empty before it.
    /// The tree's nodes, stored anyway, hold the same (path, CID) pairs
    /// that a list would repeat.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub of_tree: bool,
}

/// Ops of a revision, counted by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpCounts {
    /// Records created.
    pub creates: u64,
    /// Records changed.
    pub updates: u64,
    /// Records removed.
    pub deletes: u64,
}

impl OpCounts {
    /// Counts `ops`.
    pub fn of(ops: &[Op]) -> OpCounts {
        let mut c = OpCounts::default();
        for op in ops {
            c.add(op.action);
        }
        c
    }

    /// Counts one more op.
    pub fn add(&mut self, action: OpAction) {
        match action {
            OpAction::Create => self.creates += 1,
            OpAction::Update => self.updates += 1,
            OpAction::Delete => self.deletes += 1,
        }
    }

    /// All ops.
    pub fn total(&self) -> u64 {
        self.creates + self.updates + self.deletes
    }
}

/// Whether barn's copy can be trusted to follow the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncState {
    /// Following the firehose; every commit verified against the last.
    Synchronized,
    /// A commit failed verification or a gap was found; waiting for a
    /// resync. Events for the repo are not applied until then.
    Desynchronized,
}

/// The state of one repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoState {
    /// The host barn follows it on (`http(s)://host[:port]`).
    pub host: String,
    /// Head commit CID, if any revision is stored.
    pub head: Option<Cid>,
    /// Head rev.
    pub rev: Option<String>,
    /// Head MST root.
    pub data: Option<Cid>,
    /// Whether the host says the account is active.
    pub active: bool,
    /// The host's account status when not active (`deactivated`,
    /// `takendown`, `deleted`, `suspended`, …).
    pub status: Option<String>,
    /// Synchronized or waiting for a resync.
    pub sync: SyncState,
    /// Why it was desynchronized (the last reason).
    pub sync_reason: Option<String>,
    /// Last handle seen in an `#identity` event or DID document.
    pub handle: Option<String>,
    /// Revisions stored.
    pub revisions: u64,
}

impl RepoState {
    /// A repo barn has just started tracking on `host`, with nothing stored.
    pub fn new(host: &str) -> RepoState {
        RepoState {
            host: host.to_owned(),
            head: None,
            rev: None,
            data: None,
            active: true,
            status: None,
            sync: SyncState::Desynchronized,
            sync_reason: Some("new".into()),
            handle: None,
            revisions: 0,
        }
    }

    /// Moves the head to a newly stored revision; the repo follows its
    /// source again.
    pub fn advance(&mut self, head: Cid, rev: String, data: Cid) {
        self.head = Some(head);
        self.rev = Some(rev);
        self.data = Some(data);
        self.sync = SyncState::Synchronized;
        self.sync_reason = None;
        self.revisions += 1;
    }
}

/// A tracked host's stream position, and where its listing is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostState {
    /// The last sequence number whose effects are durable.
    pub cursor: Option<i64>,
    /// When the last event was processed, ms since the Unix epoch.
    pub last_event_ms: u64,
    /// The `listRepos` pass under way, if any: a restart resumes it.
    #[serde(default)]
    pub list: Option<ListPass>,
    /// When the last `listRepos` pass over the host finished, ms since
    /// the Unix epoch: the periodic reconcile counts from there.
    #[serde(default)]
    pub last_pass_done_ms: Option<u64>,
}

/// Why a host is being listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PassKind {
    /// First sight of a whole host: every account is fetched.
    Backfill,
    /// A reconcile: every listed head is compared with barn's.
    Sweep,
}

/// A `listRepos` pass over a host, saved with every page's results so
/// that a restart resumes after the last page whose repos are durable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListPass {
    /// Backfill or sweep.
    pub kind: PassKind,
    /// Why it runs (`backfill`, `periodic`, `OutdatedCursor`, …): the
    /// reason recorded with each revision it leads to.
    pub reason: String,
    /// The cursor for the next page; `None` before the first.
    pub cursor: Option<String>,
    /// When the pass started, ms since the Unix epoch.
    pub started_ms: u64,
    /// Repos listed so far.
    pub listed: u64,
}
