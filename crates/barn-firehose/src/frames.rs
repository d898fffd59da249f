//! The `com.atproto.sync.subscribeRepos` wire format: one websocket binary
//! message holds two DAG-CBOR values back to back, a header `{op, t}` and a
//! body (the event-stream spec, "Framing").
//!
//! Decoding is strict where the protocol is, and tolerant where the spec
//! asks consumers to be:
//! - Both values must be strict atproto DAG-CBOR (barn-repo's validator:
//!   canonical, no floats, no trailing bytes, bounded depth and lengths).
//!   The spec makes invalid DAG-CBOR a hard error.
//! - Unknown fields in header and body are ignored; an unknown `t` decodes
//!   to [`Event::Unknown`] (forward compatibility); an unknown `op` is an
//!   error the client counts and skips.
//! - Every field the lexicon requires must be present with its type; a
//!   missing or mistyped one is an error naming the field.
//! - Field *formats* (DID, TID, datetime) are not checked here: the
//!   verifier checks `repo` and `rev` against the signed commit, which is
//!   the only place they can be trusted from.
//!
//! # Tricky bits
//! - The header's length is not on the wire. It is found by validating the
//!   whole message as one value: the validator stops after the first item
//!   and reports how many bytes trail it, which is exactly the body.
//! - Optional fields (`prevData`, `ops[].prev`, `handle`, `status`,
//!   `message`) are accepted absent or `null` and written absent, as the
//!   reference PDS writes them. Required-but-nullable fields (`since`,
//!   `ops[].cid`) must be present and are written as `null`. So
//!   [`encode_frame`] gives back the exact bytes of every frame a PDS emits,
//!   but not of a frame that carried unknown fields or an explicit `null`
//!   for an optional one.

use std::collections::BTreeMap;

use barn_repo::cbor::{self, CborError};
use barn_repo::data::{self, Value};
use barn_repo::{Cid, check_cid};
use bytes::Bytes;

use crate::error::{Error, Result};

/// Default largest frame accepted: 5 MiB. A commit's `blocks` may be 2 MB
/// by the lexicon; the rest is headroom for ops and encoding.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 5 * 1024 * 1024;

/// One decoded websocket message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The stream sequence number, from the body of the types that have
    /// one (`#commit`, `#sync`, `#identity`, `#account`, and an unknown
    /// type whose body has an integer `seq`).
    pub seq: Option<i64>,
    /// What the frame says.
    pub event: Event,
}

/// The message types of `subscribeRepos`.
// Nearly every frame is a commit: boxing it would cost an allocation per
// frame to shrink the rare small variants.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `#commit`: a repo changed.
    Commit(CommitEvent),
    /// `#sync`: a repo's state was reset to a commit, without its diff.
    Sync(SyncEvent),
    /// `#identity`: refresh the DID document / handle.
    Identity(IdentityEvent),
    /// `#account`: hosting status changed.
    Account(AccountEvent),
    /// `#info`: an informational message (e.g. `OutdatedCursor`).
    Info(InfoEvent),
    /// An error frame (`op = -1`); the server closes the stream after it.
    Error(ErrorFrame),
    /// A message type this crate does not know. Consumers skip it; it is
    /// never an error (the spec asks for forward compatibility).
    Unknown {
        /// The header's `t`, e.g. `#handle`.
        kind: String,
    },
}

impl Event {
    /// A low-cardinality label for metrics: `commit`, `sync`, `identity`,
    /// `account`, `info`, `error` or `unknown`.
    pub fn label(&self) -> &'static str {
        match self {
            Event::Commit(_) => "commit",
            Event::Sync(_) => "sync",
            Event::Identity(_) => "identity",
            Event::Account(_) => "account",
            Event::Info(_) => "info",
            Event::Error(_) => "error",
            Event::Unknown { .. } => "unknown",
        }
    }
}

/// `#commit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitEvent {
    /// Stream sequence number.
    pub seq: i64,
    /// The repo's DID.
    pub repo: String,
    /// The rev of this commit.
    pub rev: String,
    /// The rev of the repo's previous commit; `None` for the first.
    pub since: Option<String>,
    /// The commit object's CID.
    pub commit: Cid,
    /// The CAR slice (commit, changed MST nodes, new records), unparsed.
    pub blocks: Bytes,
    /// The record operations.
    pub ops: Vec<RepoOp>,
    /// The previous commit's MST root (sync 1.1).
    pub prev_data: Option<Cid>,
    /// When the event was first broadcast (not validated).
    pub time: String,
    /// Deprecated: the commit's data did not fit in the event.
    pub too_big: bool,
    /// Deprecated, unused.
    pub rebase: bool,
    /// Deprecated: blobs newly referenced.
    pub blobs: Vec<Cid>,
}

/// What a [`RepoOp`] did to its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpAction {
    /// A new record.
    Create,
    /// A record replaced.
    Update,
    /// A record removed.
    Delete,
}

impl OpAction {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            OpAction::Create => "create",
            OpAction::Update => "update",
            OpAction::Delete => "delete",
        }
    }
}

/// One record operation of a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoOp {
    /// Create, update or delete.
    pub action: OpAction,
    /// `collection/rkey`.
    pub path: String,
    /// The new record's CID; `None` exactly for deletes.
    pub cid: Option<Cid>,
    /// The previous record's CID (updates and deletes, sync 1.1).
    pub prev: Option<Cid>,
}

impl From<OpAction> for barn_repo::mst::Action {
    fn from(a: OpAction) -> Self {
        match a {
            OpAction::Create => barn_repo::mst::Action::Create,
            OpAction::Update => barn_repo::mst::Action::Update,
            OpAction::Delete => barn_repo::mst::Action::Delete,
        }
    }
}

impl From<&RepoOp> for barn_repo::mst::RecordOp {
    fn from(op: &RepoOp) -> Self {
        barn_repo::mst::RecordOp {
            action: op.action.into(),
            path: op.path.clone(),
            cid: op.cid,
            prev: op.prev,
        }
    }
}

/// `#sync`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncEvent {
    /// Stream sequence number.
    pub seq: i64,
    /// The account.
    pub did: String,
    /// A CAR holding just the commit block.
    pub blocks: Bytes,
    /// The commit's rev.
    pub rev: String,
    /// When the event was first broadcast.
    pub time: String,
}

/// `#identity`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityEvent {
    /// Stream sequence number.
    pub seq: i64,
    /// The account.
    pub did: String,
    /// When the event was first broadcast.
    pub time: String,
    /// The current handle, when the host says.
    pub handle: Option<String>,
}

/// `#account`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountEvent {
    /// Stream sequence number.
    pub seq: i64,
    /// The account.
    pub did: String,
    /// When the event was first broadcast.
    pub time: String,
    /// Whether the host serves the account's repo.
    pub active: bool,
    /// Why not, when inactive (`takendown`, `deactivated`, `deleted`, …).
    pub status: Option<String>,
}

/// `#info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoEvent {
    /// E.g. `OutdatedCursor`.
    pub name: String,
    /// Human-readable detail.
    pub message: Option<String>,
}

/// An error frame (`op = -1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFrame {
    /// The error name, e.g. `FutureCursor`, `ConsumerTooSlow`.
    pub error: String,
    /// Human-readable detail.
    pub message: Option<String>,
}

// ---------------------------------------------------------------------------
// Decoding

/// Decodes one websocket message, refusing anything over
/// [`DEFAULT_MAX_FRAME_BYTES`].
pub fn decode_frame(bytes: &[u8]) -> Result<Frame> {
    decode_frame_with_limit(bytes, DEFAULT_MAX_FRAME_BYTES)
}

/// Decodes one websocket message of at most `limit` bytes.
pub fn decode_frame_with_limit(bytes: &[u8], limit: usize) -> Result<Frame> {
    if bytes.len() > limit {
        return Err(Error::Oversized {
            size: bytes.len(),
            limit,
        });
    }
    let header_len = match cbor::validate(bytes) {
        Ok(()) => return Err(Error::MissingBody),
        Err(CborError::TrailingBytes(rest)) => bytes.len() - rest,
        Err(e) => return Err(Error::HeaderCbor(e)),
    };
    let (header, body) = bytes.split_at(header_len);
    let Value::Map(header) = data::decode(header).map_err(|e| match e {
        barn_repo::Error::Cbor(c) => Error::HeaderCbor(c),
        _ => Error::Header("not a data-model value"),
    })?
    else {
        return Err(Error::Header("not a map"));
    };
    let op = match header.get("op") {
        Some(Value::Integer(i)) => {
            i64::try_from(*i).map_err(|_| Error::Header("op out of range"))?
        }
        Some(_) => return Err(Error::Header("op is not an integer")),
        None => return Err(Error::Header("missing op")),
    };
    match op {
        1 => {
            let kind = match header.get("t") {
                Some(Value::String(t)) => t.as_str(),
                Some(_) => return Err(Error::Header("t is not a string")),
                None => return Err(Error::Header("missing t")),
            };
            let body = decode_body(body, kind)?;
            decode_message(kind, body)
        }
        -1 => {
            let mut f = decode_body(body, "error")?.fields("error");
            Ok(Frame {
                seq: None,
                event: Event::Error(ErrorFrame {
                    error: f.text("error")?,
                    message: f.opt_text("message")?,
                }),
            })
        }
        other => Err(Error::UnknownOp(other)),
    }
}

/// The body as an owned map (owned so that `blocks` moves out uncopied).
struct Body(BTreeMap<String, Value>);

impl Body {
    fn fields(self, kind: &'static str) -> Fields {
        Fields { kind, map: self.0 }
    }
}

fn decode_body(body: &[u8], kind: &str) -> Result<Body> {
    match data::decode(body) {
        Ok(Value::Map(map)) => Ok(Body(map)),
        Ok(_) => Err(Error::BodyNotMap {
            kind: kind.to_owned(),
        }),
        Err(barn_repo::Error::Cbor(CborError::TrailingBytes(n))) => Err(Error::TrailingBytes(n)),
        Err(e) => Err(Error::BodyCbor(e)),
    }
}

fn decode_message(kind: &str, body: Body) -> Result<Frame> {
    let event = match kind {
        "#commit" => Event::Commit(decode_commit(body.fields("#commit"))?),
        "#sync" => {
            let mut f = body.fields("#sync");
            Event::Sync(SyncEvent {
                seq: f.seq()?,
                did: f.text("did")?,
                blocks: f.bytes("blocks")?,
                rev: f.text("rev")?,
                time: f.text("time")?,
            })
        }
        "#identity" => {
            let mut f = body.fields("#identity");
            Event::Identity(IdentityEvent {
                seq: f.seq()?,
                did: f.text("did")?,
                time: f.text("time")?,
                handle: f.opt_text("handle")?,
            })
        }
        "#account" => {
            let mut f = body.fields("#account");
            Event::Account(AccountEvent {
                seq: f.seq()?,
                did: f.text("did")?,
                time: f.text("time")?,
                active: f.bool("active")?,
                status: f.opt_text("status")?,
            })
        }
        "#info" => {
            let mut f = body.fields("#info");
            Event::Info(InfoEvent {
                name: f.text("name")?,
                message: f.opt_text("message")?,
            })
        }
        other => {
            // Not ours to judge, but a stream-wide seq still orders it.
            let seq = match body.0.get("seq") {
                Some(Value::Integer(i)) => i64::try_from(*i).ok().filter(|s| *s > 0),
                _ => None,
            };
            return Ok(Frame {
                seq,
                event: Event::Unknown {
                    kind: other.to_owned(),
                },
            });
        }
    };
    let seq = match &event {
        Event::Commit(c) => Some(c.seq),
        Event::Sync(s) => Some(s.seq),
        Event::Identity(i) => Some(i.seq),
        Event::Account(a) => Some(a.seq),
        _ => None,
    };
    Ok(Frame { seq, event })
}

fn decode_commit(mut f: Fields) -> Result<CommitEvent> {
    let ops = f
        .list("ops")?
        .into_iter()
        .map(decode_op)
        .collect::<Result<Vec<_>>>()?;
    let blobs = f
        .list("blobs")?
        .into_iter()
        .map(|v| match v {
            Value::Link(cid) => checked_cid("#commit", "blobs[]", cid),
            _ => Err(Error::WrongType {
                kind: "#commit",
                field: "blobs[]",
                expected: "a cid link",
            }),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(CommitEvent {
        seq: f.seq()?,
        repo: f.text("repo")?,
        rev: f.text("rev")?,
        since: f.nullable_text("since")?,
        commit: f.link("commit")?,
        blocks: f.bytes("blocks")?,
        ops,
        prev_data: f.opt_link("prevData")?,
        time: f.text("time")?,
        too_big: f.bool("tooBig")?,
        rebase: f.bool("rebase")?,
        blobs,
    })
}

fn decode_op(v: Value) -> Result<RepoOp> {
    let Value::Map(map) = v else {
        return Err(Error::WrongType {
            kind: "#commit",
            field: "ops[]",
            expected: "a map",
        });
    };
    let mut f = Fields {
        kind: "#commit",
        map,
    };
    let action = match f.text_as("action", "ops[].action")?.as_str() {
        "create" => OpAction::Create,
        "update" => OpAction::Update,
        "delete" => OpAction::Delete,
        other => {
            return Err(Error::BadValue {
                kind: "#commit",
                field: "ops[].action",
                reason: format!("unknown action {other:?}"),
            });
        }
    };
    let path = f.text_as("path", "ops[].path")?;
    let cid = match f.map.remove("cid") {
        None => {
            return Err(Error::MissingField {
                kind: "#commit",
                field: "ops[].cid",
            });
        }
        Some(Value::Null) => None,
        Some(Value::Link(c)) => Some(checked_cid("#commit", "ops[].cid", c)?),
        Some(_) => {
            return Err(Error::WrongType {
                kind: "#commit",
                field: "ops[].cid",
                expected: "a cid link or null",
            });
        }
    };
    // A delete has no new record; a create or update must name one.
    if cid.is_some() == (action == OpAction::Delete) {
        return Err(Error::BadValue {
            kind: "#commit",
            field: "ops[].cid",
            reason: format!(
                "{} with {} cid",
                action.as_str(),
                if cid.is_some() { "a" } else { "a null" }
            ),
        });
    }
    let prev = match f.map.remove("prev") {
        None | Some(Value::Null) => None,
        Some(Value::Link(c)) => Some(checked_cid("#commit", "ops[].prev", c)?),
        Some(_) => {
            return Err(Error::WrongType {
                kind: "#commit",
                field: "ops[].prev",
                expected: "a cid link",
            });
        }
    };
    Ok(RepoOp {
        action,
        path,
        cid,
        prev,
    })
}

fn checked_cid(kind: &'static str, field: &'static str, cid: Cid) -> Result<Cid> {
    check_cid(&cid).map_err(|e| Error::BadValue {
        kind,
        field,
        reason: e.to_string(),
    })?;
    Ok(cid)
}

/// Typed, field-naming access to a body map. Fields are moved out, so each
/// is read once.
struct Fields {
    kind: &'static str,
    map: BTreeMap<String, Value>,
}

impl Fields {
    fn take(&mut self, key: &str, field: &'static str) -> Result<Value> {
        self.map.remove(key).ok_or(Error::MissingField {
            kind: self.kind,
            field,
        })
    }

    fn wrong(&self, field: &'static str, expected: &'static str) -> Error {
        Error::WrongType {
            kind: self.kind,
            field,
            expected,
        }
    }

    fn seq(&mut self) -> Result<i64> {
        let seq = match self.take("seq", "seq")? {
            Value::Integer(i) => i64::try_from(i).map_err(|_| self.wrong("seq", "an integer"))?,
            _ => return Err(self.wrong("seq", "an integer")),
        };
        if seq <= 0 {
            return Err(Error::BadValue {
                kind: self.kind,
                field: "seq",
                reason: format!("{seq} is not positive"),
            });
        }
        Ok(seq)
    }

    fn text(&mut self, field: &'static str) -> Result<String> {
        self.text_as(field, field)
    }

    /// `key` on the wire, reported as `field` (for nested names).
    fn text_as(&mut self, key: &str, field: &'static str) -> Result<String> {
        match self.take(key, field)? {
            Value::String(s) => Ok(s),
            _ => Err(self.wrong(field, "a string")),
        }
    }

    fn nullable_text(&mut self, field: &'static str) -> Result<Option<String>> {
        match self.take(field, field)? {
            Value::String(s) => Ok(Some(s)),
            Value::Null => Ok(None),
            _ => Err(self.wrong(field, "a string or null")),
        }
    }

    fn opt_text(&mut self, field: &'static str) -> Result<Option<String>> {
        match self.map.remove(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.wrong(field, "a string")),
        }
    }

    fn bool(&mut self, field: &'static str) -> Result<bool> {
        match self.take(field, field)? {
            Value::Bool(b) => Ok(b),
            _ => Err(self.wrong(field, "a boolean")),
        }
    }

    fn bytes(&mut self, field: &'static str) -> Result<Bytes> {
        match self.take(field, field)? {
            Value::Bytes(b) => Ok(Bytes::from(b)),
            _ => Err(self.wrong(field, "a byte string")),
        }
    }

    fn link(&mut self, field: &'static str) -> Result<Cid> {
        match self.take(field, field)? {
            Value::Link(c) => checked_cid(self.kind, field, c),
            _ => Err(self.wrong(field, "a cid link")),
        }
    }

    fn opt_link(&mut self, field: &'static str) -> Result<Option<Cid>> {
        match self.map.remove(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Link(c)) => checked_cid(self.kind, field, c).map(Some),
            Some(_) => Err(self.wrong(field, "a cid link")),
        }
    }

    fn list(&mut self, field: &'static str) -> Result<Vec<Value>> {
        match self.take(field, field)? {
            Value::List(l) => Ok(l),
            _ => Err(self.wrong(field, "an array")),
        }
    }
}

// ---------------------------------------------------------------------------
// Encoding

/// Encodes a frame as the two concatenated DAG-CBOR values a PDS sends.
/// For every frame [`decode_frame`] accepts from a reference PDS,
/// `encode_frame(&decode_frame(b)?) == b`. An [`Event::Unknown`] encodes
/// its header and a body holding only its `seq` (its fields are not kept).
pub fn encode_frame(frame: &Frame) -> Vec<u8> {
    let (header, body) = match &frame.event {
        Event::Error(e) => {
            let mut body = vec![("error", V::Text(&e.error))];
            push_opt_text(&mut body, "message", e.message.as_deref());
            (V::Map(vec![("op", V::Int(-1))]), V::Map(body))
        }
        event => {
            let (kind, body) = message_body(event, frame.seq);
            (
                V::Map(vec![("op", V::Int(1)), ("t", V::Text(kind))]),
                V::Map(body),
            )
        }
    };
    let mut out = Vec::with_capacity(estimate(&frame.event));
    header.write(&mut out);
    body.write(&mut out);
    out
}

fn estimate(event: &Event) -> usize {
    match event {
        Event::Commit(c) => c.blocks.len() + 128 + c.ops.len() * 96 + c.blobs.len() * 40,
        Event::Sync(s) => s.blocks.len() + 128,
        _ => 128,
    }
}

fn message_body<'a>(event: &'a Event, seq: Option<i64>) -> (&'a str, Vec<(&'a str, V<'a>)>) {
    match event {
        Event::Commit(c) => {
            let ops = c
                .ops
                .iter()
                .map(|op| {
                    let mut m = vec![
                        ("action", V::Text(op.action.as_str())),
                        ("path", V::Text(&op.path)),
                        ("cid", op.cid.as_ref().map_or(V::Null, V::Link)),
                    ];
                    if let Some(prev) = &op.prev {
                        m.push(("prev", V::Link(prev)));
                    }
                    V::Map(m)
                })
                .collect();
            let mut body = vec![
                ("seq", V::Int(c.seq)),
                ("repo", V::Text(&c.repo)),
                ("rev", V::Text(&c.rev)),
                ("since", c.since.as_deref().map_or(V::Null, V::Text)),
                ("commit", V::Link(&c.commit)),
                ("blocks", V::Bytes(&c.blocks)),
                ("ops", V::List(ops)),
                ("time", V::Text(&c.time)),
                ("tooBig", V::Bool(c.too_big)),
                ("rebase", V::Bool(c.rebase)),
                ("blobs", V::List(c.blobs.iter().map(V::Link).collect())),
            ];
            if let Some(p) = &c.prev_data {
                body.push(("prevData", V::Link(p)));
            }
            ("#commit", body)
        }
        Event::Sync(s) => (
            "#sync",
            vec![
                ("seq", V::Int(s.seq)),
                ("did", V::Text(&s.did)),
                ("blocks", V::Bytes(&s.blocks)),
                ("rev", V::Text(&s.rev)),
                ("time", V::Text(&s.time)),
            ],
        ),
        Event::Identity(i) => {
            let mut body = vec![
                ("seq", V::Int(i.seq)),
                ("did", V::Text(&i.did)),
                ("time", V::Text(&i.time)),
            ];
            push_opt_text(&mut body, "handle", i.handle.as_deref());
            ("#identity", body)
        }
        Event::Account(a) => {
            let mut body = vec![
                ("seq", V::Int(a.seq)),
                ("did", V::Text(&a.did)),
                ("time", V::Text(&a.time)),
                ("active", V::Bool(a.active)),
            ];
            push_opt_text(&mut body, "status", a.status.as_deref());
            ("#account", body)
        }
        Event::Info(i) => {
            let mut body = vec![("name", V::Text(&i.name))];
            push_opt_text(&mut body, "message", i.message.as_deref());
            ("#info", body)
        }
        Event::Unknown { kind } => (
            kind.as_str(),
            seq.map(|s| vec![("seq", V::Int(s))]).unwrap_or_default(),
        ),
        // Handled by the caller; an empty body keeps this total.
        Event::Error(_) => ("", Vec::new()),
    }
}

fn push_opt_text<'a>(body: &mut Vec<(&'a str, V<'a>)>, key: &'a str, value: Option<&'a str>) {
    if let Some(v) = value {
        body.push((key, V::Text(v)));
    }
}

/// A borrowed DAG-CBOR value: just what frames need. Maps sort their keys
/// canonically (length first, then bytewise) when written, so builders can
/// list fields in lexicon order.
enum V<'a> {
    Int(i64),
    Text(&'a str),
    Bytes(&'a [u8]),
    Bool(bool),
    Null,
    Link(&'a Cid),
    List(Vec<V<'a>>),
    Map(Vec<(&'a str, V<'a>)>),
}

const MAJOR_UINT: u8 = 0;
const MAJOR_NEGINT: u8 = 1;
const MAJOR_BYTES: u8 = 2;
const MAJOR_TEXT: u8 = 3;
const MAJOR_ARRAY: u8 = 4;
const MAJOR_MAP: u8 = 5;
const MAJOR_TAG: u8 = 6;
const TAG_CID: u64 = 42;

impl V<'_> {
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            V::Int(v) if *v >= 0 => head(out, MAJOR_UINT, v.unsigned_abs()),
            // -1 - v without overflow at i64::MIN.
            V::Int(v) => head(out, MAJOR_NEGINT, (-(v + 1)).unsigned_abs()),
            V::Text(s) => {
                head(out, MAJOR_TEXT, s.len() as u64);
                out.extend_from_slice(s.as_bytes());
            }
            V::Bytes(b) => {
                head(out, MAJOR_BYTES, b.len() as u64);
                out.extend_from_slice(b);
            }
            V::Bool(b) => out.push(if *b { 0xf5 } else { 0xf4 }),
            V::Null => out.push(0xf6),
            V::Link(cid) => {
                let bin = cid.to_bytes();
                head(out, MAJOR_TAG, TAG_CID);
                head(out, MAJOR_BYTES, bin.len() as u64 + 1);
                out.push(0);
                out.extend_from_slice(&bin);
            }
            V::List(items) => {
                head(out, MAJOR_ARRAY, items.len() as u64);
                items.iter().for_each(|v| v.write(out));
            }
            V::Map(entries) => {
                let mut sorted: Vec<&(&str, V)> = entries.iter().collect();
                sorted.sort_by(|(a, _), (b, _)| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
                head(out, MAJOR_MAP, sorted.len() as u64);
                for (k, v) in sorted {
                    V::Text(k).write(out);
                    v.write(out);
                }
            }
        }
    }
}

/// A CBOR head with the minimal-width argument.
fn head(out: &mut Vec<u8>, major: u8, arg: u64) {
    let m = major << 5;
    match arg {
        0..=23 => out.push(m | arg as u8),
        24..=0xff => out.extend_from_slice(&[m | 24, arg as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend_from_slice(&(arg as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(m | 26);
            out.extend_from_slice(&(arg as u32).to_be_bytes());
        }
        _ => {
            out.push(m | 27);
            out.extend_from_slice(&arg.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn cid(data: &[u8]) -> Cid {
        barn_repo::cid_for_cbor(data)
    }

    fn sample_commit() -> Frame {
        let c = CommitEvent {
            seq: 1234,
            repo: "did:plc:ewvi7nxzyoun6zhxrhs64oiz".into(),
            rev: "3l3qo2vuowo2b".into(),
            since: Some("3l3qo2vutsw2b".into()),
            commit: cid(b"commit"),
            blocks: Bytes::from_static(b"\x0a not really a car"),
            ops: vec![
                RepoOp {
                    action: OpAction::Create,
                    path: "app.bsky.feed.post/3l3qo2vuowo2b".into(),
                    cid: Some(cid(b"record")),
                    prev: None,
                },
                RepoOp {
                    action: OpAction::Update,
                    path: "app.bsky.actor.profile/self".into(),
                    cid: Some(cid(b"profile2")),
                    prev: Some(cid(b"profile1")),
                },
                RepoOp {
                    action: OpAction::Delete,
                    path: "app.bsky.feed.like/3l3qo2vuowo2a".into(),
                    cid: None,
                    prev: Some(cid(b"like")),
                },
            ],
            prev_data: Some(cid(b"mst root")),
            time: "2024-09-01T12:00:00.000Z".into(),
            too_big: false,
            rebase: false,
            blobs: vec![barn_repo::cid_for_raw(b"blob")],
        };
        Frame {
            seq: Some(c.seq),
            event: Event::Commit(c),
        }
    }

    fn samples() -> Vec<Frame> {
        let did = "did:plc:ewvi7nxzyoun6zhxrhs64oiz".to_owned();
        let time = "2024-09-01T12:00:00.000Z".to_owned();
        let mut first = sample_commit();
        if let Event::Commit(c) = &mut first.event {
            c.since = None;
            c.prev_data = None;
            c.ops.truncate(1);
            c.blobs.clear();
        }
        vec![
            sample_commit(),
            first,
            Frame {
                seq: Some(7),
                event: Event::Sync(SyncEvent {
                    seq: 7,
                    did: did.clone(),
                    blocks: Bytes::from_static(b"car"),
                    rev: "3l3qo2vuowo2b".into(),
                    time: time.clone(),
                }),
            },
            Frame {
                seq: Some(8),
                event: Event::Identity(IdentityEvent {
                    seq: 8,
                    did: did.clone(),
                    time: time.clone(),
                    handle: Some("alice.test".into()),
                }),
            },
            Frame {
                seq: Some(9),
                event: Event::Identity(IdentityEvent {
                    seq: 9,
                    did: did.clone(),
                    time: time.clone(),
                    handle: None,
                }),
            },
            Frame {
                seq: Some(10),
                event: Event::Account(AccountEvent {
                    seq: 10,
                    did: did.clone(),
                    time: time.clone(),
                    active: false,
                    status: Some("takendown".into()),
                }),
            },
            Frame {
                seq: None,
                event: Event::Info(InfoEvent {
                    name: "OutdatedCursor".into(),
                    message: Some("cursor too old".into()),
                }),
            },
            Frame {
                seq: None,
                event: Event::Error(ErrorFrame {
                    error: "FutureCursor".into(),
                    message: None,
                }),
            },
            Frame {
                seq: Some(11),
                event: Event::Unknown {
                    kind: "#labels".into(),
                },
            },
        ]
    }

    /// A frame from arbitrary header and body values.
    fn raw(header: Value, body: Value) -> Vec<u8> {
        let mut out = data::encode(&header).unwrap();
        out.extend(data::encode(&body).unwrap());
        out
    }

    fn header(t: &str) -> Value {
        Value::Map(BTreeMap::from([
            ("op".to_owned(), Value::Integer(1)),
            ("t".to_owned(), Value::String(t.to_owned())),
        ]))
    }

    /// The sample commit's body as a map to tamper with.
    fn commit_body() -> BTreeMap<String, Value> {
        let bytes = encode_frame(&sample_commit());
        let Err(CborError::TrailingBytes(rest)) = cbor::validate(&bytes) else {
            panic!("no body");
        };
        let Value::Map(m) = data::decode(&bytes[bytes.len() - rest..]).unwrap() else {
            panic!("body is not a map");
        };
        m
    }

    fn with(f: impl FnOnce(&mut BTreeMap<String, Value>)) -> Vec<u8> {
        let mut body = commit_body();
        f(&mut body);
        raw(header("#commit"), Value::Map(body))
    }

    fn first_op(body: &mut BTreeMap<String, Value>) -> &mut BTreeMap<String, Value> {
        let Some(Value::List(ops)) = body.get_mut("ops") else {
            panic!("no ops");
        };
        let Some(Value::Map(op)) = ops.first_mut() else {
            panic!("no op");
        };
        op
    }

    type Tamper = Box<dyn FnOnce(&mut BTreeMap<String, Value>)>;

    fn err(bytes: &[u8]) -> Error {
        decode_frame(bytes).unwrap_err()
    }

    /// Frames captured from the reference PDS (see testdata/README.md).
    const CAPTURED: &[(&str, &[u8])] = &[
        (
            "account-active",
            include_bytes!("../testdata/frames/account-active.cbor"),
        ),
        (
            "account-inactive",
            include_bytes!("../testdata/frames/account-inactive.cbor"),
        ),
        (
            "commit-create",
            include_bytes!("../testdata/frames/commit-create.cbor"),
        ),
        (
            "commit-delete",
            include_bytes!("../testdata/frames/commit-delete.cbor"),
        ),
        (
            "commit-first",
            include_bytes!("../testdata/frames/commit-first.cbor"),
        ),
        (
            "commit-update",
            include_bytes!("../testdata/frames/commit-update.cbor"),
        ),
        (
            "identity-handle",
            include_bytes!("../testdata/frames/identity-handle.cbor"),
        ),
        ("sync", include_bytes!("../testdata/frames/sync.cbor")),
    ];

    #[test]
    fn frames_captured_from_the_reference_pds_round_trip() {
        for (name, bytes) in CAPTURED {
            let frame = decode_frame(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(encode_frame(&frame), *bytes, "{name}");
            let label = name.split('-').next().unwrap();
            assert_eq!(frame.event.label(), label, "{name}");
            assert!(frame.seq.is_some_and(|s| s > 0), "{name}");
            match &frame.event {
                Event::Commit(c) => {
                    // The CAR slice's first root is the commit.
                    let car = barn_repo::car::read_car(c.blocks.clone(), &Default::default())
                        .unwrap_or_else(|e| panic!("{name}: {e}"));
                    assert_eq!(car.root(), Some(&c.commit), "{name}");
                    assert_eq!(c.since.is_none(), *name == "commit-first", "{name}");
                    // sync 1.1: prevData on all but the first commit, and
                    // prev on updates and deletes.
                    assert_eq!(c.prev_data.is_some(), c.since.is_some(), "{name}");
                    for op in &c.ops {
                        let wants_prev = op.action != OpAction::Create;
                        assert_eq!(op.prev.is_some(), wants_prev, "{name}: {op:?}");
                    }
                }
                Event::Sync(s) => {
                    let car = barn_repo::car::read_car(s.blocks.clone(), &Default::default())
                        .unwrap_or_else(|e| panic!("{name}: {e}"));
                    assert_eq!(car.blocks.len(), 1, "{name}");
                }
                Event::Account(a) => assert_eq!(a.active, a.status.is_none(), "{name}"),
                Event::Identity(i) => assert!(i.handle.is_some(), "{name}"),
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn every_kind_round_trips_byte_for_byte() {
        for frame in samples() {
            let bytes = encode_frame(&frame);
            // Two strict values back to back: the header and the body.
            let Err(CborError::TrailingBytes(rest)) = cbor::validate(&bytes) else {
                panic!("not two values");
            };
            cbor::validate(&bytes[bytes.len() - rest..]).unwrap();
            let back = decode_frame(&bytes).unwrap();
            assert_eq!(back, frame);
            assert_eq!(encode_frame(&back), bytes);
        }
    }

    #[test]
    fn encoding_matches_a_generic_canonical_encoder() {
        // The hand-written encoder agrees with serde_ipld_dagcbor's
        // canonical output for the same values.
        let bytes = encode_frame(&sample_commit());
        let body = commit_body();
        assert_eq!(bytes, raw(header("#commit"), Value::Map(body)));
    }

    #[test]
    fn header_errors_are_specific() {
        assert!(matches!(
            err(&[]),
            Error::HeaderCbor(CborError::UnexpectedEof(0))
        ));
        // A float where the header should start.
        assert!(matches!(
            err(&[0xf9, 0, 0, 0xa0]),
            Error::HeaderCbor(CborError::Float(0))
        ));
        let body = Value::Map(BTreeMap::new());
        assert!(matches!(
            err(&raw(Value::Integer(1), body.clone())),
            Error::Header("not a map")
        ));
        let no_op = Value::Map(BTreeMap::from([(
            "t".into(),
            Value::String("#commit".into()),
        )]));
        assert!(matches!(
            err(&raw(no_op, body.clone())),
            Error::Header("missing op")
        ));
        let text_op = Value::Map(BTreeMap::from([("op".into(), Value::String("1".into()))]));
        assert!(matches!(
            err(&raw(text_op, body.clone())),
            Error::Header("op is not an integer")
        ));
        let no_t = Value::Map(BTreeMap::from([("op".into(), Value::Integer(1))]));
        assert!(matches!(
            err(&raw(no_t, body.clone())),
            Error::Header("missing t")
        ));
        let int_t = Value::Map(BTreeMap::from([
            ("op".into(), Value::Integer(1)),
            ("t".into(), Value::Integer(3)),
        ]));
        assert!(matches!(
            err(&raw(int_t, body.clone())),
            Error::Header("t is not a string")
        ));
        let op2 = Value::Map(BTreeMap::from([("op".into(), Value::Integer(2))]));
        let e = err(&raw(op2, body));
        assert!(matches!(e, Error::UnknownOp(2)));
        assert_eq!(e.reason(), "unknown_op");
        // A header alone.
        let e = err(&data::encode(&header("#commit")).unwrap());
        assert!(matches!(e, Error::MissingBody));
    }

    #[test]
    fn body_errors_are_specific() {
        let mut bytes = encode_frame(&sample_commit());
        bytes.push(0x00);
        let e = err(&bytes);
        assert!(matches!(e, Error::TrailingBytes(1)), "{e}");
        assert_eq!(e.reason(), "trailing_bytes");

        let e = err(&raw(header("#commit"), Value::List(vec![])));
        assert_eq!(e.reason(), "body_not_map");

        // Non-canonical body: keys out of order.
        let mut bytes = data::encode(&header("#info")).unwrap();
        bytes.extend([0xa2, 0x61, b'b', 0x01, 0x61, b'a', 0x01]);
        let e = err(&bytes);
        assert!(matches!(e, Error::BodyCbor(_)), "{e}");
        assert_eq!(e.reason(), "bad_body_cbor");

        // Truncated body: the blocks byte string claims more than is left.
        let bytes = encode_frame(&sample_commit());
        assert_eq!(err(&bytes[..bytes.len() - 3]).reason(), "bad_body_cbor");
    }

    #[test]
    fn every_required_field_is_named_when_missing() {
        for field in [
            "seq", "repo", "rev", "since", "commit", "blocks", "ops", "time", "tooBig", "rebase",
            "blobs",
        ] {
            let e = err(&with(|b| {
                b.remove(field);
            }));
            assert!(
                matches!(e, Error::MissingField { kind: "#commit", field: f } if f == field),
                "{field}: {e}"
            );
            assert_eq!(e.reason(), "missing_field");
        }
        for field in ["action", "path", "cid"] {
            let e = err(&with(|b| {
                first_op(b).remove(field);
            }));
            assert!(
                matches!(&e, Error::MissingField { field: f, .. } if f.ends_with(field)),
                "{field}: {e}"
            );
        }
        let e = err(&raw(header("#account"), Value::Map(BTreeMap::new())));
        assert!(
            matches!(
                e,
                Error::MissingField {
                    kind: "#account",
                    field: "seq"
                }
            ),
            "{e}"
        );
        let e = err(&raw(
            Value::Map(BTreeMap::from([("op".into(), Value::Integer(-1))])),
            Value::Map(BTreeMap::new()),
        ));
        assert!(
            matches!(
                e,
                Error::MissingField {
                    kind: "error",
                    field: "error"
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn wrong_types_are_named() {
        let cases: Vec<(&str, Tamper)> = vec![
            (
                "seq",
                Box::new(|b| {
                    b.insert("seq".into(), Value::String("1".into()));
                }),
            ),
            (
                "repo",
                Box::new(|b| {
                    b.insert("repo".into(), Value::Integer(1));
                }),
            ),
            (
                "blocks",
                Box::new(|b| {
                    b.insert("blocks".into(), Value::String("car".into()));
                }),
            ),
            (
                "commit",
                Box::new(|b| {
                    b.insert("commit".into(), Value::String("bafy".into()));
                }),
            ),
            (
                "tooBig",
                Box::new(|b| {
                    b.insert("tooBig".into(), Value::Null);
                }),
            ),
            (
                "ops",
                Box::new(|b| {
                    b.insert("ops".into(), Value::Map(BTreeMap::new()));
                }),
            ),
            (
                "ops[]",
                Box::new(|b| {
                    b.insert("ops".into(), Value::List(vec![Value::Integer(1)]));
                }),
            ),
            (
                "ops[].cid",
                Box::new(|b| {
                    first_op(b).insert("cid".into(), Value::String("bafy".into()));
                }),
            ),
            (
                "ops[].prev",
                Box::new(|b| {
                    first_op(b).insert("prev".into(), Value::Bool(true));
                }),
            ),
            (
                "blobs[]",
                Box::new(|b| {
                    b.insert("blobs".into(), Value::List(vec![Value::Null]));
                }),
            ),
            (
                "prevData",
                Box::new(|b| {
                    b.insert("prevData".into(), Value::Integer(0));
                }),
            ),
            (
                "since",
                Box::new(|b| {
                    b.insert("since".into(), Value::Integer(0));
                }),
            ),
        ];
        for (field, tamper) in cases {
            let e = err(&with(tamper));
            assert!(
                matches!(e, Error::WrongType { field: f, .. } if f == field),
                "{field}: {e}"
            );
            assert_eq!(e.reason(), "wrong_type");
        }
    }

    #[test]
    fn values_the_protocol_rules_out() {
        let e = err(&with(|b| {
            b.insert("seq".into(), Value::Integer(0));
        }));
        assert!(matches!(e, Error::BadValue { field: "seq", .. }), "{e}");
        let e = err(&with(|b| {
            first_op(b).insert("action".into(), Value::String("upsert".into()));
        }));
        assert!(
            matches!(
                e,
                Error::BadValue {
                    field: "ops[].action",
                    ..
                }
            ),
            "{e}"
        );
        // A create without a record, a delete with one.
        let e = err(&with(|b| {
            first_op(b).insert("cid".into(), Value::Null);
        }));
        assert!(
            matches!(
                e,
                Error::BadValue {
                    field: "ops[].cid",
                    ..
                }
            ),
            "{e}"
        );
        let e = err(&with(|b| {
            first_op(b).insert("action".into(), Value::String("delete".into()));
        }));
        assert!(
            matches!(
                e,
                Error::BadValue {
                    field: "ops[].cid",
                    ..
                }
            ),
            "{e}"
        );
        // A CID atproto does not use (sha2-512).
        let mh = cid::multihash::Multihash::<64>::wrap(0x13, &[7; 64]).unwrap();
        let odd = Cid::new_v1(0x71, mh);
        let e = err(&with(|b| {
            b.insert("commit".into(), Value::Link(odd));
        }));
        assert!(
            matches!(
                e,
                Error::BadValue {
                    field: "commit",
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(e.reason(), "bad_value");
    }

    #[test]
    fn unknown_fields_and_null_optionals_are_accepted() {
        let bytes = with(|b| {
            b.insert("someFutureField".into(), Value::List(vec![]));
            b.insert("prevData".into(), Value::Null);
            first_op(b).insert("extra".into(), Value::Integer(1));
        });
        let Event::Commit(c) = decode_frame(&bytes).unwrap().event else {
            panic!("not a commit");
        };
        assert_eq!(c.prev_data, None);
        // Extra header fields too.
        let mut h = BTreeMap::from([
            ("op".to_owned(), Value::Integer(1)),
            ("t".to_owned(), Value::String("#info".into())),
        ]);
        h.insert("v".into(), Value::Integer(2));
        let info = BTreeMap::from([("name".to_owned(), Value::String("OutdatedCursor".into()))]);
        let f = decode_frame(&raw(Value::Map(h), Value::Map(info))).unwrap();
        assert_eq!(f.seq, None);
        assert!(
            matches!(f.event, Event::Info(InfoEvent { ref name, message: None }) if name == "OutdatedCursor")
        );
    }

    #[test]
    fn unknown_types_are_skippable_and_keep_their_seq() {
        let body = BTreeMap::from([
            ("seq".to_owned(), Value::Integer(77)),
            ("whatever".to_owned(), Value::Bool(true)),
        ]);
        let f = decode_frame(&raw(header("#labels"), Value::Map(body))).unwrap();
        assert_eq!(f.seq, Some(77));
        assert_eq!(
            f.event,
            Event::Unknown {
                kind: "#labels".into()
            }
        );
        // Still DAG-CBOR and still a map.
        let e = err(&raw(header("#labels"), Value::Integer(1)));
        assert_eq!(e.reason(), "body_not_map");
    }

    #[test]
    fn oversized_frames_are_refused_before_parsing() {
        let bytes = encode_frame(&sample_commit());
        let e = decode_frame_with_limit(&bytes, bytes.len() - 1).unwrap_err();
        assert!(matches!(e, Error::Oversized { size, .. } if size == bytes.len()));
        assert_eq!(e.reason(), "oversized");
        decode_frame_with_limit(&bytes, bytes.len()).unwrap();
    }

    #[test]
    fn hostile_mutations_never_panic() {
        // Deterministic xorshift: flips, truncations and splices of valid
        // frames. Each either decodes or fails with an error; none panics.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let seeds: Vec<Vec<u8>> = samples().iter().map(encode_frame).collect();
        for _ in 0..20_000 {
            let mut b = seeds[(next() % seeds.len() as u64) as usize].clone();
            match next() % 4 {
                0 => {
                    let i = (next() % b.len() as u64) as usize;
                    b[i] ^= 1 << (next() % 8);
                }
                1 => b.truncate((next() % b.len() as u64) as usize),
                2 => {
                    let i = (next() % b.len() as u64) as usize;
                    b[i] = (next() & 0xff) as u8;
                }
                _ => {
                    let i = (next() % b.len() as u64) as usize;
                    b.insert(i, (next() & 0xff) as u8);
                }
            }
            if let Ok(f) = decode_frame(&b) {
                // Whatever decodes must encode again without panicking.
                let _ = encode_frame(&f);
            }
        }
    }
}
