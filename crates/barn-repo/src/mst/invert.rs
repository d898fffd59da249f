//! Sync 1.1 inversion: proving a commit's `prevData` from the commit alone.
//!
//! A firehose commit carries its record ops (with `prev` CIDs for updates
//! and deletes) and the MST blocks a verifier needs. Undoing every op on the
//! new tree must give exactly the old root: creates are deleted, updates
//! restored to `prev`, deletes re-inserted. If a block is missing, the
//! commit did not carry its proof and is rejected; barn then resyncs the
//! repo instead of trusting it.

use std::collections::HashSet;

use cid::Cid;

use super::Mst;
use crate::blocks::BlockSource;
use crate::{Error, Result};

/// What an op did to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// A new record.
    Create,
    /// A changed record.
    Update,
    /// A removed record.
    Delete,
}

/// One record operation of a commit, as the firehose describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordOp {
    /// Create, update or delete.
    pub action: Action,
    /// `collection/rkey`.
    pub path: String,
    /// The new record CID (`None` for deletes).
    pub cid: Option<Cid>,
    /// The previous record CID (`None` for creates).
    pub prev: Option<Cid>,
}

/// Undoes `ops` on the tree at `root` (read from `source`, typically the
/// commit's own blocks) and returns the root the tree had before. The
/// caller compares it with the commit's `prevData`.
pub fn invert_ops(source: impl BlockSource, root: &Cid, ops: &[RecordOp]) -> Result<Cid> {
    let proof = |e: Error| match e {
        Error::MissingBlock(cid) => {
            Error::Inversion(format!("block {cid} needed to invert is not in the commit"))
        }
        other => other,
    };
    let mut seen = HashSet::with_capacity(ops.len());
    for op in ops {
        if !seen.insert(op.path.as_str()) {
            return Err(Error::Inversion(format!(
                "{} appears twice in the ops",
                op.path
            )));
        }
    }
    let mut tree = Mst::load(source, *root).map_err(proof)?;
    for op in ops {
        let path = &op.path;
        let current = match (op.action, op.cid, op.prev) {
            (Action::Create, Some(_), None) => tree.delete(path),
            (Action::Update, Some(_), Some(prev)) => tree.insert(path, prev),
            (Action::Delete, None, Some(prev)) => tree.insert(path, prev),
            (action, cid, prev) => {
                return Err(Error::Inversion(format!(
                    "{action:?} of {path} with cid {cid:?} and prev {prev:?} is malformed"
                )));
            }
        }
        .map_err(proof)?;
        if current != op.cid {
            return Err(Error::Inversion(format!(
                "{:?} of {path}: the new tree holds {current:?}, the op says {:?}",
                op.action, op.cid
            )));
        }
    }
    Ok(tree.root_cid())
}
