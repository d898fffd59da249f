//! The on-disk MST node: `{"e": [entries], "l": link | null}` with entries
//! `{"k": key suffix, "p": shared prefix length, "t": right subtree | null,
//! "v": value}`, keys prefix-compressed against the previous entry.
//!
//! Decoding is strict: exactly these fields, canonical CBOR, keys strictly
//! ascending, `p` equal to the real common prefix (a longer or shorter `p`
//! would still hash, but no reference implementation writes it, so it marks
//! a crafted node), every key a valid MST key.

use bytes::Bytes;
use cid::Cid;

use super::{MstLimits, check_key, common_prefix_len, key_height};
use crate::cbor::{CborError, Decoder, Encoder, MAJOR_ARRAY, MAJOR_MAP};
use crate::{Error, Result};

/// A decoded node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeData {
    /// Subtree left of the first entry.
    pub left: Option<Cid>,
    /// Entries in key order.
    pub entries: Vec<EntryData>,
}

/// One decoded entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryData {
    /// The full key (`collection/rkey`).
    pub key: Vec<u8>,
    /// The record CID.
    pub value: Cid,
    /// Subtree between this entry and the next.
    pub right: Option<Cid>,
}

impl NodeData {
    /// Decodes and validates a node block (`cid` is for error messages).
    pub fn decode(cid: &Cid, bytes: &[u8]) -> Result<NodeData> {
        decode_inner(bytes).map_err(|e| match e {
            NodeDecodeError::Cbor(c) => Error::MstNode {
                cid: *cid,
                reason: c.to_string(),
            },
            NodeDecodeError::Shape(reason) => Error::MstNode {
                cid: *cid,
                reason: reason.to_string(),
            },
            NodeDecodeError::Key(e) => e,
        })
    }

    /// Encodes the node canonically.
    pub fn encode(&self) -> Vec<u8> {
        encode_node(
            self.left.as_ref(),
            self.entries
                .iter()
                .map(|e| (e.key.as_slice(), &e.value, e.right.as_ref())),
            self.entries.len(),
        )
    }
}

/// Encodes a node from its parts, computing prefix compression.
pub(crate) fn encode_node<'a>(
    left: Option<&Cid>,
    entries: impl Iterator<Item = (&'a [u8], &'a Cid, Option<&'a Cid>)>,
    count: usize,
) -> Vec<u8> {
    let mut e = Encoder::with_capacity(16 + count * 80);
    e.head(MAJOR_MAP, 2);
    e.text("e");
    e.head(MAJOR_ARRAY, count as u64);
    let mut prev: &[u8] = &[];
    for (key, value, right) in entries {
        let p = common_prefix_len(prev, key);
        e.head(MAJOR_MAP, 4);
        e.text("k");
        e.bytes(&key[p..]);
        e.text("p");
        e.int(p as i64);
        e.text("t");
        e.nullable_link(right);
        e.text("v");
        e.link(value);
        prev = key;
    }
    e.text("l");
    e.nullable_link(left);
    e.out
}

enum NodeDecodeError {
    Cbor(CborError),
    Shape(&'static str),
    Key(Error),
}

impl From<CborError> for NodeDecodeError {
    fn from(e: CborError) -> Self {
        NodeDecodeError::Cbor(e)
    }
}

fn decode_inner(bytes: &[u8]) -> std::result::Result<NodeData, NodeDecodeError> {
    use NodeDecodeError::Shape;
    let mut d = Decoder::new(bytes);
    if d.map_len()? != 2 {
        return Err(Shape("node must have exactly the fields e and l"));
    }
    if d.key(None)? != b"e" {
        return Err(Shape("node must have exactly the fields e and l"));
    }
    let n = d.array_len()?;
    let mut entries: Vec<EntryData> = Vec::with_capacity(n as usize);
    for _ in 0..n {
        if d.map_len()? != 4 {
            return Err(Shape("entry must have exactly the fields k, p, t and v"));
        }
        let mut prev_field: Option<&[u8]> = None;
        let mut field = |d: &mut Decoder<'_>, want: &'static [u8]| {
            let k = d.key(prev_field)?;
            prev_field = Some(want);
            if k != want {
                return Err(Shape("entry must have exactly the fields k, p, t and v"));
            }
            Ok(())
        };
        field(&mut d, b"k")?;
        let suffix = d.bytes()?;
        field(&mut d, b"p")?;
        let p = d.int()?;
        field(&mut d, b"t")?;
        let right = d.nullable_link()?;
        field(&mut d, b"v")?;
        let value = d.link()?;

        let prev_key: &[u8] = entries.last().map_or(&[], |e| e.key.as_slice());
        let p = usize::try_from(p).map_err(|_| Shape("negative prefix length"))?;
        if p > prev_key.len() {
            return Err(Shape("prefix length longer than the previous key"));
        }
        let mut key = Vec::with_capacity(p + suffix.len());
        key.extend_from_slice(&prev_key[..p]);
        key.extend_from_slice(suffix);
        if common_prefix_len(prev_key, &key) != p {
            return Err(Shape("prefix length is not the shared prefix"));
        }
        if !entries.is_empty() && key.as_slice() <= prev_key {
            return Err(Shape("entries are not in ascending key order"));
        }
        check_key(&key).map_err(NodeDecodeError::Key)?;
        entries.push(EntryData { key, value, right });
    }
    if d.key(Some(b"e"))? != b"l" {
        return Err(Shape("node must have exactly the fields e and l"));
    }
    let left = d.nullable_link()?;
    d.finish()?;
    Ok(NodeData { left, entries })
}

/// Loads and decodes a node from a source.
pub(crate) fn load_node(source: &impl crate::BlockSource, cid: &Cid) -> Result<NodeData> {
    let bytes: Bytes = source.get_block(cid)?.ok_or(Error::MissingBlock(*cid))?;
    NodeData::decode(cid, &bytes)
}

/// The layer of a root node: its first key's height (0 for the empty
/// tree). A root with no entries but a subtree is not canonical (roots are
/// trimmed) and is rejected.
pub(crate) fn root_layer(cid: &Cid, node: &NodeData) -> Result<u32> {
    match node.entries.first() {
        Some(e) => Ok(key_height(&e.key)),
        None if node.left.is_none() => Ok(0),
        None => Err(Error::MstNode {
            cid: *cid,
            reason: "root node has no entries".into(),
        }),
    }
}

/// Checks that a node may sit on `layer`: within the layer cap, every key
/// of that height (when `check_heights`), no subtrees on layer 0, and not
/// empty unless it is the root. Shared by the editable tree and the walker
/// so that both accept exactly the same trees.
pub(crate) fn check_node(
    cid: &Cid,
    node: &NodeData,
    layer: u32,
    limits: &MstLimits,
    is_root: bool,
    check_heights: bool,
) -> Result<()> {
    let bad = |reason: String| Error::MstNode { cid: *cid, reason };
    if layer > limits.max_layer {
        return Err(Error::MstTooDeep(limits.max_layer as usize));
    }
    if check_heights {
        for e in &node.entries {
            let h = key_height(&e.key);
            if h != layer {
                return Err(bad(format!("key of height {h} in a layer {layer} node")));
            }
        }
    }
    if !is_root && node.entries.is_empty() && node.left.is_none() {
        return Err(bad("empty node below the root".into()));
    }
    if layer == 0 && (node.left.is_some() || node.entries.iter().any(|e| e.right.is_some())) {
        return Err(bad("layer 0 node has subtrees".into()));
    }
    Ok(())
}
