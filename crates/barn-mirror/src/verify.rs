//! Verification of one `#commit` against barn's head, per the sync spec's
//! checklist, before anything is applied.
//!
//! # Terminology
//! - **head**: barn's newest stored revision of the repo (rev, commit CID,
//!   MST root `data`).
//! - **inversion**: undoing the commit's ops on its new MST (using only the
//!   blocks the commit carries) must give `prevData`, the MST root before
//!   the commit — proving the ops are the whole change (sync 1.1).
//!
//! # Tricky bits
//! - A commit is checked against itself first (hashes, DID, rev, the
//!   signature over its own bytes), then against barn's head (`since`,
//!   `prevData`), then inverted. Only a commit that passes all is applied.
//! - Not every failure means the same thing. A stale or duplicate rev is
//!   dropped quietly (streams replay after reconnects). Anything that makes
//!   barn's copy unprovable marks the repo desynchronized for a resync.
//! - The genesis commit has neither `since` nor `prevData`; its inversion
//!   must give the empty tree.

use bytes::Bytes;
use cid::Cid;

use barn_repo::BlockMap;
use barn_repo::car::{CarLimits, read_car};
use barn_repo::commit::Commit;
use barn_repo::crypto::PublicKey;
use barn_repo::mst::{Mst, RecordOp, invert_ops};
use barn_repo::syntax::Tid;
use barn_store::{Op, OpAction};

/// How far in the future a rev may be (clock skew allowance).
pub const MAX_FUTURE_MICROS: u64 = 5 * 60 * 1_000_000;

/// The fields of a `#commit` event that verification needs.
#[derive(Debug, Clone)]
pub struct CommitInput {
    /// The event's `repo`.
    pub repo: String,
    /// The event's `rev`.
    pub rev: String,
    /// The event's `since`.
    pub since: Option<String>,
    /// The event's `commit` CID.
    pub commit: Cid,
    /// The event's `blocks` (a CAR slice).
    pub blocks: Bytes,
    /// The event's ops.
    pub ops: Vec<Op>,
    /// The event's `prevData`.
    pub prev_data: Option<Cid>,
    /// The deprecated `tooBig` flag.
    pub too_big: bool,
}

impl From<&barn_firehose::CommitEvent> for CommitInput {
    fn from(ev: &barn_firehose::CommitEvent) -> Self {
        CommitInput {
            repo: ev.repo.clone(),
            rev: ev.rev.clone(),
            since: ev.since.clone(),
            commit: ev.commit,
            blocks: ev.blocks.clone(),
            ops: ev
                .ops
                .iter()
                .map(|op| Op {
                    action: match op.action {
                        barn_firehose::OpAction::Create => OpAction::Create,
                        barn_firehose::OpAction::Update => OpAction::Update,
                        barn_firehose::OpAction::Delete => OpAction::Delete,
                    },
                    path: op.path.clone(),
                    cid: op.cid,
                    prev: op.prev,
                })
                .collect(),
            prev_data: ev.prev_data,
            too_big: ev.too_big,
        }
    }
}

/// barn's head of a repo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Head rev.
    pub rev: String,
    /// Head commit CID.
    pub cid: Cid,
    /// Head MST root.
    pub data: Cid,
}

/// A commit that passed every check.
#[derive(Debug)]
pub struct Verified {
    /// The decoded commit.
    pub commit: Commit,
    /// Every block the event carried, hash-checked.
    pub blocks: BlockMap,
    /// The MST root the ops invert to: what `prevData` must be.
    pub inverted: Cid,
    /// Blobs referenced by the records the commit creates or updates.
    pub blob_refs: Vec<barn_repo::data::BlobRef>,
    /// Records (stored as they are) whose blob refs could not be read,
    /// with why.
    pub unreadable: Vec<(Cid, String)>,
}

/// What to do with a commit that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Drop it; barn's copy is still right (stale or duplicate rev, a
    /// rev from the future, an event about a repo hosted elsewhere).
    Ignore,
    /// barn's copy can no longer be proven to follow the source: mark the
    /// repo desynchronized and resync it.
    Desync,
    /// The signature did not verify: refresh the signing key once and try
    /// again before desynchronizing.
    RetryWithFreshKey,
}

/// Why a commit was not applied.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// Metric label.
    pub reason: &'static str,
    /// Human detail for the log.
    pub detail: String,
    /// What to do.
    pub disposition: Disposition,
}

fn reject(reason: &'static str, disposition: Disposition, detail: impl Into<String>) -> Rejection {
    Rejection {
        reason,
        detail: detail.into(),
        disposition,
    }
}

/// The CID of the empty MST (a node with no entries).
pub fn empty_root() -> Cid {
    Mst::empty(BlockMap::new()).root_cid()
}

/// The bytes of the empty MST node, so an empty repo can be stored whole.
pub fn empty_node_bytes() -> Vec<u8> {
    let mut tree = Mst::empty(BlockMap::new());
    let root = tree.root_cid();
    tree.take_new_blocks()
        .get(&root)
        .map(|b| b.to_vec())
        .unwrap_or_default()
}

/// Verifies `input` signed by `key` against barn's `head` (`None`: barn
/// holds nothing of this repo). `now_micros` is the wall clock.
///
/// The same as [`check_stale`], then [`prepare_commit`], then
/// [`check_head`]; the live path runs the middle step, the expensive one,
/// on worker threads.
pub fn verify_commit(
    input: &CommitInput,
    key: &PublicKey,
    head: Option<&Head>,
    now_micros: u64,
) -> Result<Verified, Rejection> {
    check_stale(input, head)?;
    let verified = prepare_commit(input, key, now_micros)?;
    check_head(input, head, &verified)?;
    Ok(verified)
}

/// The cheap check that needs no decoding: a rev at or below barn's head
/// is a replay (`duplicate`) or stale (`rev_not_increasing`), dropped
/// quietly.
pub fn check_stale(input: &CommitInput, head: Option<&Head>) -> Result<(), Rejection> {
    if let Some(head) = head
        && input.rev.as_str() <= head.rev.as_str()
    {
        let what = if input.rev == head.rev && input.commit == head.cid {
            "duplicate"
        } else {
            "rev_not_increasing"
        };
        return Err(reject(
            what,
            Disposition::Ignore,
            format!("rev {} is not after barn's {}", input.rev, head.rev),
        ));
    }
    Ok(())
}

/// Every check of the commit against itself, none against barn's state:
/// the blocks' hashes, the commit's DID and rev, the signature, a rev not
/// from the future, the record blocks of the ops; and the inversion of the
/// ops ([`Verified::inverted`], compared by [`check_head`]). Safe to run
/// for many commits at once, in any order: this is the expensive part.
pub fn prepare_commit(
    input: &CommitInput,
    key: &PublicKey,
    now_micros: u64,
) -> Result<Verified, Rejection> {
    use Disposition::*;
    if input.too_big {
        return Err(reject(
            "too_big",
            Desync,
            "tooBig commit: ops are incomplete",
        ));
    }
    let tid: Tid = input
        .rev
        .parse()
        .map_err(|e| reject("bad_rev", Desync, format!("rev {}: {e}", input.rev)))?;
    if tid.timestamp_micros() > now_micros.saturating_add(MAX_FUTURE_MICROS) {
        return Err(reject(
            "rev_in_future",
            Ignore,
            format!("rev {} is in the future", input.rev),
        ));
    }

    // The commit itself.
    let car = read_car(input.blocks.clone(), &CarLimits::default())
        .map_err(|e| reject(e.reason(), Desync, format!("blocks: {e}")))?;
    let blocks = car.blocks;
    let commit_bytes = blocks.get(&input.commit).ok_or_else(|| {
        reject(
            "missing_block",
            Desync,
            format!("commit block {} not in blocks", input.commit),
        )
    })?;
    let commit =
        Commit::decode(commit_bytes).map_err(|e| reject("bad_commit", Desync, e.to_string()))?;
    if commit.did != input.repo {
        return Err(reject(
            "wrong_did",
            Desync,
            format!("commit is for {}", commit.did),
        ));
    }
    if commit.rev != input.rev {
        return Err(reject(
            "rev_mismatch",
            Desync,
            format!("commit rev {} vs event rev {}", commit.rev, input.rev),
        ));
    }
    if let Err(e) = commit.verify_signature(key) {
        return Err(reject("bad_signature", RetryWithFreshKey, e.to_string()));
    }

    // Record blocks for creates and updates must be there.
    for op in &input.ops {
        if let Some(cid) = op.cid
            && !blocks.contains(&cid)
        {
            return Err(reject(
                "missing_block",
                Desync,
                format!("record {} ({cid}) not in blocks", op.path),
            ));
        }
    }

    // The inversion, compared with prevData by check_head.
    let ops: Vec<RecordOp> = input.ops.iter().map(RecordOp::from).collect();
    let inverted = invert_ops(&blocks, &commit.data, &ops)
        .map_err(|e| reject("inversion_failed", Desync, e.to_string()))?;
    let (blob_refs, unreadable) =
        record_blob_refs(&blocks, input.ops.iter().filter_map(|op| op.cid));
    Ok(Verified {
        commit,
        blocks,
        inverted,
        blob_refs,
        unreadable,
    })
}

/// The blob refs of the records `cids` (those in `blocks`). A record that
/// is not valid DAG-CBOR is still the repo's content and is stored; only
/// its blobs cannot be known: those come back in the second list, for the
/// caller to log and count.
pub(crate) fn record_blob_refs(
    blocks: &BlockMap,
    cids: impl Iterator<Item = Cid>,
) -> (Vec<barn_repo::data::BlobRef>, Vec<(Cid, String)>) {
    let mut out = Vec::new();
    let mut unreadable = Vec::new();
    for cid in cids {
        let Some(bytes) = blocks.get(&cid) else {
            continue;
        };
        match barn_repo::data::record_blobs(bytes) {
            Ok(refs) => out.extend(refs),
            Err(e) => unreadable.push((cid, e.to_string())),
        }
    }
    (out, unreadable)
}

/// The checks against barn's head, for a commit [`prepare_commit`] passed:
/// not stale, `since` is barn's head rev, `prevData` is barn's head MST
/// root, and the ops invert to it (so the commit provably follows barn's
/// copy); a repo barn holds nothing of takes only a genesis commit, whose
/// ops invert to the empty tree.
///
/// The head is compared before the inversion so that a commit after one
/// barn missed is reported as that (`since` / `prevData`), not as a bad
/// inversion.
pub fn check_head(
    input: &CommitInput,
    head: Option<&Head>,
    prepared: &Verified,
) -> Result<(), Rejection> {
    check_stale(input, head)?;
    match head {
        Some(head) => {
            if input.since.as_deref() != Some(head.rev.as_str()) {
                return Err(reject(
                    "since_mismatch",
                    Disposition::Desync,
                    format!("since {:?}, barn holds {}", input.since, head.rev),
                ));
            }
            if input.prev_data != Some(head.data) {
                return Err(reject(
                    "prev_data_mismatch",
                    Disposition::Desync,
                    format!(
                        "prevData {:?}, barn holds {}",
                        input.prev_data.map(|c| c.to_string()),
                        head.data
                    ),
                ));
            }
        }
        None if input.since.is_some() || input.prev_data.is_some() => {
            return Err(reject(
                "unknown_repo",
                Disposition::Desync,
                "barn holds no earlier revision",
            ));
        }
        None => {}
    }
    let expected = input.prev_data.unwrap_or_else(empty_root);
    if prepared.inverted != expected {
        return Err(reject(
            "inversion_mismatch",
            Disposition::Desync,
            format!(
                "ops invert to {}, prevData is {expected}",
                prepared.inverted
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use barn_repo::car::write_car;
    use barn_repo::commit::build_repo;
    use barn_repo::crypto::{KeyType, PrivateKey};

    const DID: &str = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa";
    // 2026-ish TIDs, far from "now + 5 min" in either direction.
    const REV0: &str = "3m2aaaaaaaaa2";
    const REV1: &str = "3m2aaaaaaaab2";

    fn record(n: usize) -> Vec<u8> {
        barn_repo::data::encode(
            &barn_repo::data::record_from_json(
                &serde_json::json!({"$type": "com.example.thing", "n": n}),
            )
            .unwrap(),
        )
        .unwrap()
    }

    fn now() -> u64 {
        barn_store::now_ms() * 1000
    }

    /// A 20-record repo at REV0 and a commit at REV1 creating one more.
    fn fixture(key: &PrivateKey) -> (Head, CommitInput) {
        let records = (0..20).map(|i| (format!("com.example.thing/{i:04}"), record(i)));
        let (c0, blocks) = build_repo(DID, REV0, key, records).unwrap();
        let commit0 = Commit::decode(blocks.get(&c0).unwrap()).unwrap();
        let head = Head {
            rev: REV0.into(),
            cid: c0,
            data: commit0.data,
        };
        let mut tree = Mst::load(&blocks, head.data).unwrap();
        let rec = record(999);
        let rec_cid = barn_repo::cid_for_cbor(&rec);
        tree.insert("com.example.thing/zzzz", rec_cid).unwrap();
        let data = tree.root_cid();
        let mut new = tree.take_new_blocks();
        new.insert(rec_cid, rec.into());
        let (_, bytes, cid) = Commit::create(DID, data, REV1, key).unwrap();
        new.insert(cid, bytes.into());
        let car = write_car(&[cid], new.iter().map(|(c, d)| (c, &d[..])));
        let input = CommitInput {
            repo: DID.into(),
            rev: REV1.into(),
            since: Some(REV0.into()),
            commit: cid,
            blocks: car.into(),
            ops: vec![Op {
                action: OpAction::Create,
                path: "com.example.thing/zzzz".into(),
                cid: Some(rec_cid),
                prev: None,
            }],
            prev_data: Some(head.data),
            too_big: false,
        };
        (head, input)
    }

    fn reason(r: Result<Verified, Rejection>) -> (&'static str, Disposition) {
        let r = r.expect_err("must be rejected");
        (r.reason, r.disposition)
    }

    #[test]
    fn a_good_commit_passes_and_each_flaw_has_its_reason() {
        let key = PrivateKey::from_seed(KeyType::K256, 7);
        let pk = key.public_key();
        let (head, input) = fixture(&key);
        let ok = verify_commit(&input, &pk, Some(&head), now()).unwrap();
        assert_eq!(ok.commit.rev, REV1);

        let other = PrivateKey::from_seed(KeyType::K256, 8).public_key();
        assert_eq!(
            reason(verify_commit(&input, &other, Some(&head), now())),
            ("bad_signature", Disposition::RetryWithFreshKey)
        );
        let mut newer_head = head.clone();
        newer_head.rev = REV1.into();
        assert_eq!(
            reason(verify_commit(&input, &pk, Some(&newer_head), now())),
            ("rev_not_increasing", Disposition::Ignore)
        );
        // A prevData that is not barn's head.
        let mut bad = input.clone();
        bad.prev_data = Some(input.commit);
        assert_eq!(
            reason(verify_commit(&bad, &pk, Some(&head), now())),
            ("prev_data_mismatch", Disposition::Desync)
        );
        // The stages on their own: the stateless part passes whatever the
        // head; the head check catches the stale rev and the prevData
        // that the ops do not invert to.
        let prepared = prepare_commit(&input, &pk, now()).unwrap();
        assert_eq!(prepared.inverted, head.data);
        assert_eq!(
            check_head(&input, Some(&newer_head), &prepared)
                .unwrap_err()
                .reason,
            "rev_not_increasing"
        );
        let mut forged = head.clone();
        forged.data = input.commit;
        let mut bad = input.clone();
        bad.prev_data = Some(input.commit);
        assert_eq!(
            check_head(&bad, Some(&forged), &prepared)
                .unwrap_err()
                .reason,
            "inversion_mismatch"
        );
        let mut bad = input.clone();
        bad.since = Some("3m2aaaaaaaa22".into());
        assert_eq!(
            reason(verify_commit(&bad, &pk, Some(&head), now())).0,
            "since_mismatch"
        );
        // Ops that do not match the tree: claim an update instead of a create.
        let mut bad = input.clone();
        bad.ops[0].action = OpAction::Update;
        bad.ops[0].prev = Some(head.cid);
        assert_eq!(
            reason(verify_commit(&bad, &pk, Some(&head), now())),
            ("inversion_mismatch", Disposition::Desync)
        );
        // An op hidden from the list: the inversion no longer reaches prevData.
        let mut bad = input.clone();
        bad.ops.clear();
        assert_eq!(
            reason(verify_commit(&bad, &pk, Some(&head), now())).0,
            "inversion_mismatch"
        );
        // A corrupted block: its hash no longer matches.
        let mut bytes = input.blocks.to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let mut bad = input.clone();
        bad.blocks = bytes.into();
        assert_eq!(
            reason(verify_commit(&bad, &pk, Some(&head), now())).1,
            Disposition::Desync
        );
        // Unknown repo, not a genesis commit.
        assert_eq!(
            reason(verify_commit(&input, &pk, None, now())).0,
            "unknown_repo"
        );
        // A rev from the future.
        assert_eq!(
            reason(verify_commit(&input, &pk, Some(&head), 1_000_000)),
            ("rev_in_future", Disposition::Ignore)
        );
    }

    #[test]
    fn the_empty_tree_is_known_byte_for_byte() {
        let bytes = empty_node_bytes();
        assert_eq!(barn_repo::cid_for_cbor(&bytes), empty_root());
        assert_eq!(
            empty_root().to_string(),
            "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"
        );
    }
}
