//! Read-only traversal of a stored tree: point lookups, ordered iteration
//! from any key, and the cursor [`super::diff`] is built on.

use cid::Cid;

use super::MstLimits;
use super::node::{RawNode, check_node, load_raw, root_layer};
use crate::blocks::BlockSource;
use crate::{Error, Result};

/// The record CID at `key` in the tree rooted at `root`.
pub fn get(source: &impl BlockSource, root: &Cid, key: &str) -> Result<Option<Cid>> {
    let key = key.as_bytes();
    let mut cid = *root;
    let mut node = RawNode::default();
    for _ in 0..=MstLimits::default().max_layer {
        load_raw(source, &cid, &mut node)?;
        let i = match node.search(key) {
            Ok(i) => return Ok(node.value(i).copied()),
            Err(i) => i,
        };
        let slot = match i.checked_sub(1) {
            Some(j) => node.right(j),
            None => node.left.as_ref(),
        };
        match slot {
            Some(next) => cid = *next,
            None => return Ok(None),
        }
    }
    Err(Error::MstTooDeep(MstLimits::default().max_layer as usize))
}

/// Every `(key, value)` with `start <= key < end` (`end` `None`: to the
/// last key), in order.
pub fn range(
    source: &impl BlockSource,
    root: &Cid,
    start: &str,
    end: Option<&str>,
) -> Result<Vec<(String, Cid)>> {
    let mut w = MstWalker::new(source, root)?;
    w.seek(start.as_bytes())?;
    let mut out = Vec::new();
    while let Some((k, v)) = w.next_leaf()? {
        if end.is_some_and(|e| k.as_slice() >= e.as_bytes()) {
            break;
        }
        // Keys were checked to be ASCII when the node was decoded.
        out.push((String::from_utf8_lossy(&k).into_owned(), v));
    }
    Ok(out)
}

/// What the walker is looking at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkItem<'a> {
    /// A key and its value.
    Leaf(&'a [u8], &'a Cid),
    /// A subtree not yet entered, with its layer.
    Tree(&'a Cid, u32),
}

struct Frame {
    node: RawNode,
    layer: u32,
    /// 0 is the left slot, `2k+1` entry `k`, `2k+2` the slot right of it.
    pos: usize,
}

impl Frame {
    fn item(&self) -> Option<WalkItem<'_>> {
        let below = self.layer.wrapping_sub(1);
        if self.pos % 2 == 1 {
            let i = self.pos / 2;
            return Some(WalkItem::Leaf(self.node.key(i), self.node.value(i)?));
        }
        let slot = match (self.pos / 2).checked_sub(1) {
            None => self.node.left.as_ref(),
            Some(j) => self.node.right(j),
        };
        slot.map(|c| WalkItem::Tree(c, below))
    }

    fn done(&self) -> bool {
        self.pos > 2 * self.node.len()
    }
}

/// An in-order cursor over a stored tree that can skip whole subtrees.
pub struct MstWalker<S> {
    source: S,
    /// The path from the root: `frames[..depth]`. Frames past `depth` are
    /// finished ones kept for their buffers, so that entering a node
    /// decodes in place instead of allocating or moving a frame.
    frames: Vec<Frame>,
    depth: usize,
    limits: MstLimits,
    /// Whether every key's height is checked against its node's layer.
    check_heights: bool,
    /// The last leaf returned by `next_leaf`: leaves must come out strictly
    /// ascending across nodes, not only within one.
    last_leaf: Option<Vec<u8>>,
}

impl<S: BlockSource> MstWalker<S> {
    /// Opens the tree at `root`, checking every node fully (layers, key
    /// heights): for trees from outside.
    pub fn new(source: S, root: &Cid) -> Result<Self> {
        Self::open(source, root, true)
    }

    /// Opens a tree that was already verified with [`MstWalker::new`] (for
    /// example by [`crate::commit::verify_repo`] at import): structure and
    /// order are still checked, the per-key height hashes are not. A
    /// crafted tree can then give a wrong answer, but never a panic.
    pub fn new_trusted(source: S, root: &Cid) -> Result<Self> {
        Self::open(source, root, false)
    }

    fn open(source: S, root: &Cid, check_heights: bool) -> Result<Self> {
        let mut node = RawNode::default();
        load_raw(&source, root, &mut node)?;
        let layer = root_layer(root, &node)?;
        let limits = MstLimits::default();
        check_node(root, &node, layer, &limits, true, check_heights)?;
        let mut w = MstWalker {
            source,
            frames: vec![Frame {
                node,
                layer,
                pos: 0,
            }],
            depth: 1,
            limits,
            check_heights,
            last_leaf: None,
        };
        w.normalize();
        Ok(w)
    }

    fn top(&self) -> Option<&Frame> {
        self.frames.get(self.depth.checked_sub(1)?)
    }

    fn top_mut(&mut self) -> Option<&mut Frame> {
        self.frames.get_mut(self.depth.checked_sub(1)?)
    }

    /// Moves to the next real item, skipping empty slots and finished nodes.
    fn normalize(&mut self) {
        while let Some(top) = self.top_mut() {
            if top.done() {
                self.depth -= 1;
                if let Some(parent) = self.top_mut() {
                    parent.pos += 1;
                }
                continue;
            }
            if top.item().is_none() {
                top.pos += 1;
                continue;
            }
            break;
        }
    }

    /// The current item; `None` when the walk is over.
    pub fn peek(&self) -> Option<WalkItem<'_>> {
        self.top().and_then(Frame::item)
    }

    /// Moves past the current item (a whole subtree if it is one).
    pub fn advance(&mut self) {
        if let Some(top) = self.top_mut() {
            top.pos += 1;
        }
        self.normalize();
    }

    /// Enters the current subtree. Does nothing on a leaf.
    pub fn step_into(&mut self) -> Result<()> {
        let Some(WalkItem::Tree(cid, layer)) = self.peek() else {
            return Ok(());
        };
        let cid = *cid;
        if self.frames.len() == self.depth {
            self.frames.push(Frame {
                node: RawNode::default(),
                layer,
                pos: 0,
            });
        }
        let MstWalker { source, frames, .. } = self;
        let Some(frame) = frames.get_mut(self.depth) else {
            return Ok(());
        };
        load_raw(source, &cid, &mut frame.node)?;
        check_node(
            &cid,
            &frame.node,
            layer,
            &self.limits,
            false,
            self.check_heights,
        )?;
        frame.layer = layer;
        frame.pos = 0;
        // The parent's position stays on the slot; `normalize` bumps it
        // when this frame is left.
        self.depth += 1;
        self.normalize();
        Ok(())
    }

    /// The next leaf, entering subtrees as needed.
    pub fn next_leaf(&mut self) -> Result<Option<(Vec<u8>, Cid)>> {
        loop {
            match self.peek() {
                None => return Ok(None),
                Some(WalkItem::Leaf(k, v)) => {
                    if self.last_leaf.as_deref().is_some_and(|last| last >= k) {
                        return Err(Error::MstKey {
                            key: String::from_utf8_lossy(k).into_owned(),
                            reason: "keys out of order across nodes",
                        });
                    }
                    let out = (k.to_vec(), *v);
                    self.last_leaf = Some(out.0.clone());
                    self.advance();
                    return Ok(Some(out));
                }
                Some(WalkItem::Tree(..)) => self.step_into()?,
            }
        }
    }

    /// Positions the walker so that the next leaf is the first key ≥ `key`.
    /// Only valid on a fresh walker.
    pub fn seek(&mut self, key: &[u8]) -> Result<()> {
        loop {
            let Some(top) = self.top_mut() else {
                return Ok(());
            };
            let i = match top.node.search(key) {
                Ok(i) | Err(i) => i,
            };
            top.pos = 2 * i;
            match top.item() {
                Some(WalkItem::Tree(..)) => self.step_into()?,
                _ => {
                    self.normalize();
                    return Ok(());
                }
            }
            // After stepping in, the new top is positioned by the loop.
            if let Some(top) = self.top_mut() {
                top.pos = 0;
            }
        }
    }
}

impl<S: BlockSource> Iterator for MstWalker<S> {
    type Item = Result<(Vec<u8>, Cid)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_leaf().transpose()
    }
}
