//! Diff of two stored trees, skipping every subtree they share.
//!
//! Two walkers advance in key order. When both stand on a subtree with the
//! same CID, both skip it: every key before it has been consumed on both
//! sides, so the subtree's keys would pair up one for one. Otherwise the
//! walker standing on the higher (or only) subtree steps into it. The cost
//! is proportional to the changed paths, not to the tree size.

use cid::Cid;

use super::walk::{MstWalker, WalkItem};
use crate::Result;
use crate::blocks::BlockSource;

/// One difference between two trees.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DiffOp {
    /// The record path.
    pub key: String,
    /// Value in the old tree (`None`: created).
    pub old: Option<Cid>,
    /// Value in the new tree (`None`: deleted).
    pub new: Option<Cid>,
}

/// Every key whose value differs between the tree at `old_root` (read from
/// `old`) and the tree at `new_root` (read from `new`), in key order.
///
/// Both trees must have been verified before (barn verifies every tree it
/// imports): the walk checks structure and order but not each key's height
/// (see [`MstWalker::new_trusted`]), which would cost a SHA-256 per key.
pub fn diff(
    old: impl BlockSource,
    old_root: &Cid,
    new: impl BlockSource,
    new_root: &Cid,
) -> Result<Vec<DiffOp>> {
    let mut out = Vec::new();
    if old_root == new_root {
        return Ok(out);
    }
    let mut a = MstWalker::new_trusted(old, old_root)?;
    let mut b = MstWalker::new_trusted(new, new_root)?;
    let op = |k: &[u8], old: Option<Cid>, new: Option<Cid>| DiffOp {
        // Keys were checked to be ASCII when their node was decoded.
        key: String::from_utf8_lossy(k).into_owned(),
        old,
        new,
    };
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some(WalkItem::Leaf(k, v)), None) => {
                out.push(op(k, Some(*v), None));
                a.advance();
            }
            (None, Some(WalkItem::Leaf(k, v))) => {
                out.push(op(k, None, Some(*v)));
                b.advance();
            }
            (Some(WalkItem::Tree(..)), None) => a.step_into()?,
            (None, Some(WalkItem::Tree(..))) => b.step_into()?,
            (Some(WalkItem::Leaf(ka, va)), Some(WalkItem::Leaf(kb, vb))) => match ka.cmp(kb) {
                std::cmp::Ordering::Less => {
                    out.push(op(ka, Some(*va), None));
                    a.advance();
                }
                std::cmp::Ordering::Greater => {
                    out.push(op(kb, None, Some(*vb)));
                    b.advance();
                }
                std::cmp::Ordering::Equal => {
                    if va != vb {
                        out.push(op(ka, Some(*va), Some(*vb)));
                    }
                    a.advance();
                    b.advance();
                }
            },
            (Some(WalkItem::Tree(ca, la)), Some(WalkItem::Tree(cb, lb))) => {
                if ca == cb {
                    a.advance();
                    b.advance();
                } else if la > lb {
                    a.step_into()?;
                } else if lb > la {
                    b.step_into()?;
                } else {
                    a.step_into()?;
                    b.step_into()?;
                }
            }
            (Some(WalkItem::Tree(..)), Some(WalkItem::Leaf(..))) => a.step_into()?,
            (Some(WalkItem::Leaf(..)), Some(WalkItem::Tree(..))) => b.step_into()?,
        }
    }
    Ok(out)
}
