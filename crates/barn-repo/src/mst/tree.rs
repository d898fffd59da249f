//! [`Mst`]: an editable tree whose untouched subtrees stay as CIDs.

use cid::Cid;

use super::node::{NodeData, check_node, encode_node, load_node, root_layer};
use super::{MstLimits, check_key, key_height};
use crate::blocks::{BlockMap, BlockSource};
use crate::{Error, Result, cid_for_cbor};

/// An editable MST over a [`BlockSource`].
///
/// Edits load only the nodes they touch. [`Mst::root_cid`] encodes changed
/// nodes; their blocks collect in [`Mst::take_new_blocks`] (a commit's new
/// MST blocks). Reading a block the source lacks is
/// [`Error::MissingBlock`].
pub struct Mst<S> {
    source: S,
    root: Node,
    limits: MstLimits,
    new_blocks: BlockMap,
}

struct Node {
    layer: u32,
    left: Slot,
    entries: Vec<Entry>,
    /// Set while the node is unchanged since it was loaded or encoded.
    cid: Option<Cid>,
}

struct Entry {
    key: Vec<u8>,
    value: Cid,
    right: Slot,
}

type Slot = Option<Child>;

enum Child {
    Stored(Cid),
    Loaded(Box<Node>),
}

impl Node {
    fn empty(layer: u32) -> Node {
        Node {
            layer,
            left: None,
            entries: Vec::new(),
            cid: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.left.is_none()
    }

    /// The slot left of entry `i` (`i == len` is the last entry's right).
    fn slot_mut(&mut self, i: usize) -> &mut Slot {
        match i.checked_sub(1).and_then(|j| self.entries.get_mut(j)) {
            Some(e) => &mut e.right,
            None => &mut self.left,
        }
    }

    fn from_data(cid: Cid, data: NodeData, layer: u32) -> Node {
        Node {
            layer,
            left: data.left.map(Child::Stored),
            entries: data
                .entries
                .into_iter()
                .map(|e| Entry {
                    key: e.key,
                    value: e.value,
                    right: e.right.map(Child::Stored),
                })
                .collect(),
            cid: Some(cid),
        }
    }

    fn into_slot(self) -> Slot {
        (!self.is_empty()).then(|| Child::Loaded(Box::new(self)))
    }
}

struct Ctx<'a, S> {
    source: &'a S,
    limits: MstLimits,
}

impl<S: BlockSource> Ctx<'_, S> {
    /// Loads a node that must sit on `layer` below the root.
    fn load(&self, cid: &Cid, layer: u32) -> Result<Node> {
        let data = load_node(self.source, cid)?;
        check_node(cid, &data, layer, &self.limits, false, true)?;
        Ok(Node::from_data(*cid, data, layer))
    }

    fn take(&self, child: Child, layer: u32) -> Result<Node> {
        match child {
            Child::Stored(cid) => self.load(&cid, layer),
            // Loaded children are never empty: `into_slot` drops empty nodes.
            Child::Loaded(n) => Ok(*n),
        }
    }

    fn loaded<'n>(&self, child: &'n mut Child, layer: u32) -> Result<&'n mut Node> {
        if let Child::Stored(cid) = child {
            *child = Child::Loaded(Box::new(self.load(cid, layer)?));
        }
        match child {
            Child::Loaded(n) => Ok(n),
            // Just replaced above.
            Child::Stored(cid) => Err(Error::MissingBlock(*cid)),
        }
    }

    fn insert(&self, node: &mut Node, key: &[u8], value: Cid, height: u32) -> Result<Option<Cid>> {
        let found = node.entries.binary_search_by(|e| e.key.as_slice().cmp(key));
        if height == node.layer {
            return match found {
                Ok(i) => {
                    let old = std::mem::replace(&mut node.entries[i].value, value);
                    if old != value {
                        node.cid = None;
                    }
                    Ok(Some(old))
                }
                Err(i) => {
                    let slot = node.slot_mut(i).take();
                    let (lo, hi) = self.split(slot, key, node.layer.wrapping_sub(1))?;
                    *node.slot_mut(i) = lo;
                    node.entries.insert(
                        i,
                        Entry {
                            key: key.to_vec(),
                            value,
                            right: hi,
                        },
                    );
                    node.cid = None;
                    Ok(None)
                }
            };
        }
        let Err(i) = found else {
            return Err(Error::MstNode {
                cid: node.cid.unwrap_or_default(),
                reason: "key found on the wrong layer".into(),
            });
        };
        let child_layer = node.layer - 1;
        let slot = node.slot_mut(i);
        let child = slot.get_or_insert_with(|| Child::Loaded(Box::new(Node::empty(child_layer))));
        let child = self.loaded(child, child_layer)?;
        let prev = self.insert(child, key, value, height)?;
        if prev != Some(value) {
            node.cid = None;
        }
        Ok(prev)
    }

    /// Splits a subtree into the keys below and above `key`.
    fn split(&self, slot: Slot, key: &[u8], layer: u32) -> Result<(Slot, Slot)> {
        let Some(child) = slot else {
            return Ok((None, None));
        };
        let mut node = self.take(child, layer)?;
        let i = node.entries.partition_point(|e| e.key.as_slice() < key);
        let mid = node.slot_mut(i).take();
        let (lo, hi) = self.split(mid, key, layer.wrapping_sub(1))?;
        *node.slot_mut(i) = lo;
        let right = Node {
            layer,
            left: hi,
            entries: node.entries.split_off(i),
            cid: None,
        };
        node.cid = None;
        Ok((node.into_slot(), right.into_slot()))
    }

    fn delete(&self, node: &mut Node, key: &[u8], height: u32) -> Result<Option<Cid>> {
        let found = node.entries.binary_search_by(|e| e.key.as_slice().cmp(key));
        if height == node.layer {
            let Ok(i) = found else {
                return Ok(None);
            };
            let removed = node.entries.remove(i);
            let before = node.slot_mut(i).take();
            *node.slot_mut(i) = self.merge(before, removed.right, node.layer.wrapping_sub(1))?;
            node.cid = None;
            return Ok(Some(removed.value));
        }
        if height > node.layer {
            return Ok(None);
        }
        let Err(i) = found else {
            return Ok(None);
        };
        let child_layer = node.layer - 1;
        let slot = node.slot_mut(i);
        let Some(child) = slot else {
            return Ok(None);
        };
        let child = self.loaded(child, child_layer)?;
        let prev = self.delete(child, key, height)?;
        if prev.is_some() {
            if child.is_empty() {
                *slot = None;
            }
            node.cid = None;
        }
        Ok(prev)
    }

    /// Joins two adjacent subtrees of the same layer.
    fn merge(&self, a: Slot, b: Slot, layer: u32) -> Result<Slot> {
        let (a, b) = match (a, b) {
            (None, x) | (x, None) => return Ok(x),
            (Some(a), Some(b)) => (a, b),
        };
        let mut a = self.take(a, layer)?;
        let mut b = self.take(b, layer)?;
        let last = a.entries.len();
        let a_edge = a.slot_mut(last).take();
        let merged = self.merge(a_edge, b.left.take(), layer.wrapping_sub(1))?;
        *a.slot_mut(last) = merged;
        a.entries.append(&mut b.entries);
        a.cid = None;
        Ok(a.into_slot())
    }

    fn get(&self, node: &Node, key: &[u8]) -> Result<Option<Cid>> {
        let i = match node.entries.binary_search_by(|e| e.key.as_slice().cmp(key)) {
            Ok(i) => return Ok(Some(node.entries[i].value)),
            Err(i) => i,
        };
        let slot = match i.checked_sub(1) {
            Some(j) => &node.entries[j].right,
            None => &node.left,
        };
        match slot {
            None => Ok(None),
            Some(Child::Loaded(n)) => self.get(n, key),
            Some(Child::Stored(cid)) => {
                let child = self.load(cid, node.layer.wrapping_sub(1))?;
                self.get(&child, key)
            }
        }
    }

    fn collect(&self, slot: &Slot, layer: u32, out: &mut Vec<(Vec<u8>, Cid)>) -> Result<()> {
        match slot {
            None => Ok(()),
            Some(Child::Loaded(n)) => self.collect_node(n, out),
            Some(Child::Stored(cid)) => self.collect_node(&self.load(cid, layer)?, out),
        }
    }

    fn collect_node(&self, node: &Node, out: &mut Vec<(Vec<u8>, Cid)>) -> Result<()> {
        let below = node.layer.wrapping_sub(1);
        self.collect(&node.left, below, out)?;
        for e in &node.entries {
            out.push((e.key.clone(), e.value));
            self.collect(&e.right, below, out)?;
        }
        Ok(())
    }
}

/// Encodes every changed node, children first, and returns the node's CID.
fn seal(node: &mut Node, out: &mut BlockMap) -> Cid {
    if let Some(cid) = node.cid {
        return cid;
    }
    let left = node.left.as_mut().map(|c| seal_child(c, out));
    let rights: Vec<Option<Cid>> = node
        .entries
        .iter_mut()
        .map(|e| e.right.as_mut().map(|c| seal_child(c, out)))
        .collect();
    let bytes = encode_node(
        left.as_ref(),
        node.entries
            .iter()
            .zip(&rights)
            .map(|(e, r)| (e.key.as_slice(), &e.value, r.as_ref())),
        node.entries.len(),
    );
    let cid = cid_for_cbor(&bytes);
    out.insert(cid, bytes.into());
    node.cid = Some(cid);
    cid
}

fn seal_child(child: &mut Child, out: &mut BlockMap) -> Cid {
    match child {
        Child::Stored(cid) => *cid,
        Child::Loaded(n) => seal(n, out),
    }
}

impl<S: BlockSource> Mst<S> {
    /// An empty tree.
    pub fn empty(source: S) -> Self {
        Mst {
            source,
            root: Node::empty(0),
            limits: MstLimits::default(),
            new_blocks: BlockMap::new(),
        }
    }

    /// Opens the tree whose root node is `root`.
    pub fn load(source: S, root: Cid) -> Result<Self> {
        Self::load_with_limits(source, root, MstLimits::default())
    }

    /// [`Mst::load`] with explicit limits.
    pub fn load_with_limits(source: S, root: Cid, limits: MstLimits) -> Result<Self> {
        let data = load_node(&source, &root)?;
        let layer = root_layer(&root, &data)?;
        check_node(&root, &data, layer, &limits, true, true)?;
        let node = Node::from_data(root, data, layer);
        Ok(Mst {
            source,
            root: node,
            limits,
            new_blocks: BlockMap::new(),
        })
    }

    /// Builds a tree from entries sorted by key, in one bottom-up pass.
    /// Fails on unsorted or duplicate keys and on invalid keys.
    pub fn from_sorted(source: S, mut entries: Vec<(Vec<u8>, Cid)>) -> Result<Self> {
        let limits = MstLimits::default();
        let mut heights = Vec::with_capacity(entries.len());
        let mut max = 0;
        for (i, (key, _)) in entries.iter().enumerate() {
            check_key(key)?;
            if i > 0 && entries[i - 1].0 >= *key {
                return Err(Error::MstKey {
                    key: String::from_utf8_lossy(key).into_owned(),
                    reason: "keys not sorted and unique",
                });
            }
            let h = key_height(key);
            if h > limits.max_layer {
                return Err(Error::MstTooDeep(limits.max_layer as usize));
            }
            max = max.max(h);
            heights.push(h);
        }
        let root = build(&mut entries, &heights, max);
        Ok(Mst {
            source,
            root,
            limits,
            new_blocks: BlockMap::new(),
        })
    }

    fn ctx(&self) -> Ctx<'_, S> {
        Ctx {
            source: &self.source,
            limits: self.limits,
        }
    }

    /// The record CID at `key`.
    pub fn get(&self, key: &str) -> Result<Option<Cid>> {
        self.ctx().get(&self.root, key.as_bytes())
    }

    /// Sets `key` to `value`; returns the previous value.
    pub fn insert(&mut self, key: &str, value: Cid) -> Result<Option<Cid>> {
        let key = key.as_bytes();
        check_key(key)?;
        let height = key_height(key);
        if height > self.limits.max_layer {
            return Err(Error::MstTooDeep(self.limits.max_layer as usize));
        }
        if self.root.is_empty() {
            self.root.layer = self.root.layer.max(height);
        }
        while height > self.root.layer {
            let layer = self.root.layer + 1;
            let old = std::mem::replace(&mut self.root, Node::empty(layer));
            self.root.left = old.into_slot();
        }
        let ctx = Ctx {
            source: &self.source,
            limits: self.limits,
        };
        ctx.insert(&mut self.root, key, value, height)
    }

    /// Removes `key`; returns the value it had.
    pub fn delete(&mut self, key: &str) -> Result<Option<Cid>> {
        let key = key.as_bytes();
        let height = key_height(key);
        let ctx = Ctx {
            source: &self.source,
            limits: self.limits,
        };
        let prev = ctx.delete(&mut self.root, key, height)?;
        if prev.is_some() {
            // The root never is a pointer-only node: descend until it has
            // entries or the tree is empty.
            while self.root.entries.is_empty() {
                let Some(child) = self.root.left.take() else {
                    self.root = Node::empty(0);
                    break;
                };
                let layer = self.root.layer - 1;
                self.root = ctx.take(child, layer)?;
            }
        }
        Ok(prev)
    }

    /// The root CID, encoding changed nodes (their blocks go to
    /// [`Mst::take_new_blocks`]).
    pub fn root_cid(&mut self) -> Cid {
        seal(&mut self.root, &mut self.new_blocks)
    }

    /// Takes the blocks of nodes encoded so far.
    pub fn take_new_blocks(&mut self) -> BlockMap {
        std::mem::take(&mut self.new_blocks)
    }

    /// Every `(key, value)` in order, loading what is needed.
    pub fn entries(&self) -> Result<Vec<(Vec<u8>, Cid)>> {
        let mut out = Vec::new();
        self.ctx().collect_node(&self.root, &mut out)?;
        Ok(out)
    }

    /// The root node's layer.
    pub fn layer(&self) -> u32 {
        self.root.layer
    }

    /// The block source.
    pub fn source(&self) -> &S {
        &self.source
    }
}

/// Bottom-up build of the node on `layer` holding `entries` (all of height
/// ≤ `layer`).
fn build(entries: &mut [(Vec<u8>, Cid)], heights: &[u32], layer: u32) -> Node {
    let mut node = Node::empty(layer);
    let mut start = 0;
    for i in 0..entries.len() {
        if heights[i] != layer {
            continue;
        }
        if start < i {
            let child = build(
                &mut entries[start..i],
                &heights[start..i],
                layer.wrapping_sub(1),
            );
            *node.slot_mut(node.entries.len()) = child.into_slot();
        }
        node.entries.push(Entry {
            key: std::mem::take(&mut entries[i].0),
            value: entries[i].1,
            right: None,
        });
        start = i + 1;
    }
    if start < entries.len() {
        let child = build(
            &mut entries[start..],
            &heights[start..],
            layer.wrapping_sub(1),
        );
        *node.slot_mut(node.entries.len()) = child.into_slot();
    }
    node
}
