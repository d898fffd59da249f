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

use super::{MstLimits, check_key, common_prefix_len, key_height, key_tail_ok};
use crate::cbor::{CborError, Decoder, Encoder, MAJOR_ARRAY, MAJOR_MAP};
use crate::{Error, Result};

/// Whether `block` starts as a canonical MST node does: a DAG-CBOR map of
/// exactly `e` then `l`. A record always has `$type` and a commit has
/// `did`, so neither can start like this; a cheap sort of blocks by kind
/// before (or instead of) decoding them.
pub fn looks_like_node(block: &[u8]) -> bool {
    block.starts_with(&[0xa2, 0x61, b'e'])
}

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
        let mut raw = RawNode::default();
        raw.decode(cid, bytes)?;
        Ok(NodeData {
            left: raw.left,
            entries: (0..raw.len())
                .map(|i| EntryData {
                    key: raw.key(i).to_vec(),
                    value: raw.values[i],
                    right: raw.rights[i],
                })
                .collect(),
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

/// A decoded node with all its keys in one buffer: what the read paths
/// (walker, diff, lookups) hold. Decoding into a reused `RawNode` allocates
/// nothing once its buffers have grown, where [`NodeData`] needs a `Vec`
/// per key; node decoding is most of what a diff does.
#[derive(Debug, Clone, Default)]
pub(crate) struct RawNode {
    pub(crate) left: Option<Cid>,
    /// Every full key, one after another.
    keys: Vec<u8>,
    /// Where each entry's key ends in `keys` (it starts where the previous
    /// one ends). Kept apart from the CIDs, like them, so that walking the
    /// keys touches one dense array.
    key_ends: Vec<usize>,
    values: Vec<Cid>,
    rights: Vec<Option<Cid>>,
    /// Where the slash is in the last key.
    last_slash: usize,
}

impl RawNode {
    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.key_ends.len()
    }

    /// The full key of entry `i`; empty when out of range.
    pub(crate) fn key(&self, i: usize) -> &[u8] {
        let start = match i.checked_sub(1) {
            Some(j) => self.key_ends.get(j).copied().unwrap_or(0),
            None => 0,
        };
        let end = self.key_ends.get(i).copied().unwrap_or(start);
        &self.keys[start..end]
    }

    /// The value of entry `i`.
    pub(crate) fn value(&self, i: usize) -> Option<&Cid> {
        self.values.get(i)
    }

    /// The subtree right of entry `i`.
    pub(crate) fn right(&self, i: usize) -> Option<&Cid> {
        self.rights.get(i).and_then(Option::as_ref)
    }

    /// Index of the first entry whose key is not below `key`, and whether
    /// it is equal.
    pub(crate) fn search(&self, key: &[u8]) -> std::result::Result<usize, usize> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.key(mid).cmp(key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }

    fn clear(&mut self) {
        self.left = None;
        self.keys.clear();
        self.key_ends.clear();
        self.values.clear();
        self.rights.clear();
    }

    /// Decodes and validates a node block into `self`, reusing its buffers
    /// (`cid` is for error messages).
    pub(crate) fn decode(&mut self, cid: &Cid, bytes: &[u8]) -> Result<()> {
        self.clear();
        if self.decode_canonical(bytes).is_some() {
            return Ok(());
        }
        // Not the exact shape every reference implementation writes, or
        // not valid at all: the general strict decoder decides, and gives
        // the precise error.
        self.clear();
        self.decode_general(bytes).map_err(|e| match e {
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

    /// Appends the entry whose key is `p` bytes of the previous key plus
    /// `suffix`, with every check on the key the format demands, in the
    /// order the general decoder reports them.
    ///
    /// The new key shares its first `p` bytes with the previous one, which
    /// passed the same checks, so each check looks only at what is new:
    /// the byte at `p` for the prefix and order rules, the suffix for the
    /// key rules. Each answer is the same as the whole-key check's (see
    /// the `incremental_checks_match_whole_key_checks` test).
    fn push_entry(
        &mut self,
        p: usize,
        suffix: &[u8],
        value: Cid,
        right: Option<Cid>,
    ) -> std::result::Result<(), NodeDecodeError> {
        use NodeDecodeError::Shape;
        let prev_start = match self.key_ends.len().checked_sub(2) {
            Some(j) => self.key_ends[j],
            None => 0,
        };
        let prev = &self.keys[prev_start..];
        if p > prev.len() {
            return Err(Shape("prefix length longer than the previous key"));
        }
        // The byte after the shared prefix, on each side.
        let (old_next, new_next) = (prev.get(p).copied(), suffix.first().copied());
        if let (Some(o), Some(n)) = (old_next, new_next)
            && o == n
        {
            return Err(Shape("prefix length is not the shared prefix"));
        }
        // With the prefix right, the new key is greater exactly when it
        // goes on past the prefix and the previous key either stopped
        // there or had a smaller byte there.
        let ascending = match (old_next, new_next) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(o), Some(n)) => n > o,
        };
        if !self.key_ends.is_empty() && !ascending {
            return Err(Shape("entries are not in ascending key order"));
        }
        // The shared prefix passed `check_key` as part of the previous key
        // (the first key has no prefix), whose one slash is at
        // `last_slash`.
        let prefix_has_slash = !self.key_ends.is_empty() && self.last_slash < p;
        let key_len = p + suffix.len();
        if !key_tail_ok(prefix_has_slash, key_len, suffix) {
            let mut key = prev[..p].to_vec();
            key.extend_from_slice(suffix);
            check_key(&key).map_err(NodeDecodeError::Key)?;
        }
        if !prefix_has_slash {
            // A valid key has exactly one slash, so it is in the suffix.
            match suffix.iter().position(|&c| c == b'/') {
                Some(i) => self.last_slash = p + i,
                None => return Err(Shape("key must be collection/rkey")),
            }
        }
        self.keys.extend_from_within(prev_start..prev_start + p);
        self.keys.extend_from_slice(suffix);
        self.key_ends.push(self.keys.len());
        self.values.push(value);
        self.rights.push(right);
        Ok(())
    }

    /// The strict general decoder: any canonical DAG-CBOR encoding of the
    /// node, with a precise error for anything else.
    fn decode_general(&mut self, bytes: &[u8]) -> std::result::Result<(), NodeDecodeError> {
        use NodeDecodeError::Shape;
        let mut d = Decoder::new(bytes);
        if d.map_len()? != 2 {
            return Err(Shape("node must have exactly the fields e and l"));
        }
        if d.key(None)? != b"e" {
            return Err(Shape("node must have exactly the fields e and l"));
        }
        let n = d.array_len()?;
        self.key_ends.reserve(n as usize);
        self.values.reserve(n as usize);
        self.rights.reserve(n as usize);
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
            let p = usize::try_from(p).map_err(|_| Shape("negative prefix length"))?;
            self.push_entry(p, suffix, value, right)?;
        }
        if d.key(Some(b"e"))? != b"l" {
            return Err(Shape("node must have exactly the fields e and l"));
        }
        self.left = d.nullable_link()?;
        d.finish()?;
        Ok(())
    }

    /// The fast path: byte patterns for exactly the canonical encoding
    /// every implementation writes (short heads, CIDv1 SHA-256 links).
    /// Accepts only what [`RawNode::decode_general`] accepts, with the same
    /// result; `None` on anything else, including every invalid node.
    fn decode_canonical(&mut self, bytes: &[u8]) -> Option<()> {
        let mut r = Canon::new(bytes);
        r.expect(b"\xa2\x61e")?;
        let n = r.head(0x80)?;
        for _ in 0..n {
            r.expect(b"\xa4\x61k")?;
            let len = r.head(0x40)?;
            let suffix = r.take(len)?;
            r.expect(b"\x61p")?;
            let p = r.head(0x00)?;
            r.expect(b"\x61t")?;
            let right = r.nullable_link()?;
            r.expect(b"\x61v")?;
            let value = r.link()?;
            self.push_entry(p, suffix, value, right).ok()?;
        }
        r.expect(b"\x61l")?;
        self.left = r.nullable_link()?;
        r.rest.is_empty().then_some(())
    }
}

/// A cursor for [`RawNode::decode_canonical`].
struct Canon<'a> {
    rest: &'a [u8],
}

impl<'a> Canon<'a> {
    fn new(rest: &'a [u8]) -> Self {
        Canon { rest }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.rest.split_at_checked(n)?;
        self.rest = rest;
        Some(head)
    }

    fn expect(&mut self, want: &[u8]) -> Option<()> {
        (self.take(want.len())? == want).then_some(())
    }

    /// A head of major type `major_bits` (already shifted) with a minimal
    /// argument below 256.
    fn head(&mut self, major_bits: u8) -> Option<usize> {
        let [b] = *self.take(1)? else { return None };
        match b.checked_sub(major_bits)? {
            v @ 0..=23 => Some(usize::from(v)),
            24 => {
                let [v] = *self.take(1)? else { return None };
                (v >= 24).then_some(usize::from(v))
            }
            _ => None,
        }
    }

    /// Tag 42, a 37-byte byte string: `0x00`, then a CIDv1, DAG-CBOR or
    /// raw, SHA2-256.
    fn link(&mut self) -> Option<Cid> {
        let l = self.take(41)?;
        let (prefix, digest) = l.split_at(9);
        let codec = match prefix {
            [
                0xd8,
                0x2a,
                0x58,
                0x25,
                0x00,
                0x01,
                c @ (0x71 | 0x55),
                0x12,
                0x20,
            ] => *c,
            _ => return None,
        };
        let mh = cid::multihash::Multihash::wrap(crate::SHA2_256, digest).ok()?;
        Some(Cid::new_v1(u64::from(codec), mh))
    }

    fn nullable_link(&mut self) -> Option<Option<Cid>> {
        if self.rest.first() == Some(&0xf6) {
            self.rest = &self.rest[1..];
            return Some(None);
        }
        self.link().map(Some)
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

/// Loads and decodes a node from a source.
pub(crate) fn load_node(source: &impl crate::BlockSource, cid: &Cid) -> Result<NodeData> {
    let bytes: Bytes = source.get_block(cid)?.ok_or(Error::MissingBlock(*cid))?;
    NodeData::decode(cid, &bytes)
}

/// Loads and decodes a node into `node`, reusing its buffers.
pub(crate) fn load_raw(
    source: &impl crate::BlockSource,
    cid: &Cid,
    node: &mut RawNode,
) -> Result<()> {
    let mut decoded = Ok(());
    if !source.with_block(cid, &mut |bytes| decoded = node.decode(cid, bytes))? {
        return Err(Error::MissingBlock(*cid));
    }
    decoded
}

/// What [`root_layer`] and [`check_node`] need to see of a decoded node.
pub(crate) trait NodeView {
    /// Number of entries.
    fn entry_count(&self) -> usize;
    /// The full key of entry `i`.
    fn key_at(&self, i: usize) -> &[u8];
    /// Whether the node has a left subtree.
    fn has_left(&self) -> bool;
    /// Whether entry `i` has a right subtree.
    fn has_right(&self, i: usize) -> bool;
}

impl NodeView for NodeData {
    fn entry_count(&self) -> usize {
        self.entries.len()
    }
    fn key_at(&self, i: usize) -> &[u8] {
        self.entries.get(i).map_or(&[], |e| e.key.as_slice())
    }
    fn has_left(&self) -> bool {
        self.left.is_some()
    }
    fn has_right(&self, i: usize) -> bool {
        self.entries.get(i).is_some_and(|e| e.right.is_some())
    }
}

impl NodeView for RawNode {
    fn entry_count(&self) -> usize {
        self.len()
    }
    fn key_at(&self, i: usize) -> &[u8] {
        self.key(i)
    }
    fn has_left(&self) -> bool {
        self.left.is_some()
    }
    fn has_right(&self, i: usize) -> bool {
        self.right(i).is_some()
    }
}

/// The layer of a root node: its first key's height (0 for the empty
/// tree). A root with no entries but a subtree is not canonical (roots are
/// trimmed) and is rejected.
pub(crate) fn root_layer(cid: &Cid, node: &impl NodeView) -> Result<u32> {
    if node.entry_count() > 0 {
        return Ok(key_height(node.key_at(0)));
    }
    if !node.has_left() {
        return Ok(0);
    }
    Err(Error::MstNode {
        cid: *cid,
        reason: "root node has no entries".into(),
    })
}

/// Checks that a node may sit on `layer`: within the layer cap, every key
/// of that height (when `check_heights`), no subtrees on layer 0, and not
/// empty unless it is the root. Shared by the editable tree and the walker
/// so that both accept exactly the same trees.
pub(crate) fn check_node(
    cid: &Cid,
    node: &impl NodeView,
    layer: u32,
    limits: &MstLimits,
    is_root: bool,
    check_heights: bool,
) -> Result<()> {
    let bad = |reason: String| Error::MstNode { cid: *cid, reason };
    if layer > limits.max_layer {
        return Err(Error::MstTooDeep(limits.max_layer as usize));
    }
    let n = node.entry_count();
    if check_heights {
        for i in 0..n {
            let h = key_height(node.key_at(i));
            if h != layer {
                return Err(bad(format!("key of height {h} in a layer {layer} node")));
            }
        }
    }
    if !is_root && n == 0 && !node.has_left() {
        return Err(bad("empty node below the root".into()));
    }
    if layer == 0 && (node.has_left() || (0..n).any(|i| node.has_right(i))) {
        return Err(bad("layer 0 node has subtrees".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mst::MAX_KEY_LEN;
    use crate::{cid_for_cbor, cid_for_raw};

    #[test]
    fn encoded_nodes_look_like_nodes_and_records_do_not() {
        let value = cid_for_raw(b"record");
        let empty = NodeData::default().encode();
        let full = NodeData {
            left: Some(value),
            entries: vec![EntryData {
                key: b"app.bsky.feed.post/3jzfcijpj2z2a".to_vec(),
                value,
                right: None,
            }],
        }
        .encode();
        assert!(looks_like_node(&empty));
        assert!(looks_like_node(&full));
        let record = crate::data::encode(&crate::data::Value::Map(
            [(
                "$type".to_owned(),
                crate::data::Value::String("app.bsky.feed.like".into()),
            )]
            .into_iter()
            .collect(),
        ))
        .unwrap();
        assert!(!looks_like_node(&record));
        assert!(!looks_like_node(&[]));
    }

    /// The checks as first written: build the whole key, then compare it
    /// with the previous one and check it from scratch.
    fn whole_key_checks(
        prev: Option<&[u8]>,
        p: usize,
        suffix: &[u8],
    ) -> std::result::Result<Vec<u8>, String> {
        let prev_key = prev.unwrap_or_default();
        if p > prev_key.len() {
            return Err("prefix length longer than the previous key".into());
        }
        let mut key = prev_key[..p].to_vec();
        key.extend_from_slice(suffix);
        if common_prefix_len(prev_key, &key) != p {
            return Err("prefix length is not the shared prefix".into());
        }
        if prev.is_some() && key.as_slice() <= prev_key {
            return Err("entries are not in ascending key order".into());
        }
        check_key(&key).map_err(|e| e.to_string())?;
        Ok(key)
    }

    fn incremental(
        prev: Option<&[u8]>,
        p: usize,
        suffix: &[u8],
    ) -> std::result::Result<Vec<u8>, String> {
        let mut node = RawNode::default();
        let v = cid_for_cbor(b"v");
        if let Some(prev) = prev {
            node.push_entry(0, prev, v, None)
                .map_err(|_| "bad test input")
                .unwrap();
        }
        let shown = |e: NodeDecodeError| match e {
            NodeDecodeError::Shape(s) => s.to_string(),
            NodeDecodeError::Key(e) => e.to_string(),
            NodeDecodeError::Cbor(e) => e.to_string(),
        };
        node.push_entry(p, suffix, v, None).map_err(shown)?;
        Ok(node.key(node.len() - 1).to_vec())
    }

    #[test]
    fn incremental_checks_match_whole_key_checks() {
        // Every key up to 4 bytes over an alphabet with valid characters,
        // the slash and two invalid bytes, against previous keys of the
        // same alphabet, at every prefix length.
        let alphabet = [b'a', b'b', b'/', b'.', b' ', 0xff];
        let mut words: Vec<Vec<u8>> = vec![Vec::new()];
        for len in 1..=4 {
            let mut next = Vec::new();
            for w in words.iter().filter(|w| w.len() == len - 1) {
                for &c in &alphabet {
                    let mut x = w.clone();
                    x.push(c);
                    next.push(x);
                }
            }
            words.extend(next);
        }
        let valid: Vec<&Vec<u8>> = words.iter().filter(|w| check_key(w).is_ok()).collect();
        assert!(valid.len() > 10);
        let mut checked = 0;
        for suffix in &words {
            assert_eq!(
                incremental(None, 0, suffix),
                whole_key_checks(None, 0, suffix),
                "first key {suffix:?}"
            );
            for prev in &valid {
                for p in 0..=prev.len() + 1 {
                    assert_eq!(
                        incremental(Some(prev), p, suffix),
                        whole_key_checks(Some(prev), p, suffix),
                        "prev {prev:?} p {p} suffix {suffix:?}"
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 10_000);
        // Length limit at the boundary.
        let long = vec![b'a'; MAX_KEY_LEN - 2];
        let mut prev = long.clone();
        prev.extend_from_slice(b"/a");
        for suffix in [&b"b"[..], b"bc"] {
            assert_eq!(
                incremental(Some(&prev), MAX_KEY_LEN - 1, suffix),
                whole_key_checks(Some(&prev), MAX_KEY_LEN - 1, suffix)
            );
        }
    }

    /// A node's bytes written by the general encoder, then altered.
    type Entries = Vec<(Vec<u8>, Cid, Option<Cid>)>;

    fn sample_node(n: usize, pad: usize) -> (Entries, Option<Cid>) {
        let entries = (0..n)
            .map(|i| {
                let key = format!("app.bsky.feed.post/{}3k{i:03}", "x".repeat(pad)).into_bytes();
                let right = (i % 2 == 0).then(|| cid_for_cbor(&key));
                (key.clone(), cid_for_raw(&key), right)
            })
            .collect();
        (entries, Some(cid_for_cbor(b"left")))
    }

    #[test]
    fn fast_and_general_decoders_agree() {
        let cid = cid_for_cbor(b"node");
        // 30 entries need a two-byte array head; 150-byte keys a two-byte
        // byte-string head and p above 23; 300-byte keys a three-byte
        // head, which only the general decoder reads.
        for (n, pad) in [(0, 0), (1, 0), (5, 0), (30, 0), (3, 150), (3, 300)] {
            let (entries, left) = sample_node(n, pad);
            let bytes = encode_node(
                left.as_ref(),
                entries
                    .iter()
                    .map(|(k, v, r)| (k.as_slice(), v, r.as_ref())),
                n,
            );
            let mut fast = RawNode::default();
            let want = (pad < 200).then_some(());
            assert_eq!(fast.decode_canonical(&bytes), want, "{n} {pad}");
            let mut general = RawNode::default();
            general
                .decode_general(&bytes)
                .map_err(|_| "general")
                .unwrap();
            if want.is_none() {
                fast.decode(&cid, &bytes).unwrap();
            }
            assert_eq!(fast.len(), n);
            assert_eq!(fast.left, left);
            for (i, (k, v, r)) in entries.iter().enumerate() {
                assert_eq!(fast.key(i), k.as_slice());
                assert_eq!(general.key(i), k.as_slice());
                assert_eq!(fast.value(i), Some(v));
                assert_eq!(fast.right(i), r.as_ref());
                assert_eq!(general.right(i), r.as_ref());
            }
            let data = NodeData::decode(&cid, &bytes).unwrap();
            assert_eq!(data.encode(), bytes);
        }
    }

    #[test]
    fn fast_decoder_declines_what_it_does_not_know_and_errors_are_unchanged() {
        let cid = cid_for_cbor(b"node");
        let (entries, left) = sample_node(3, 0);
        let bytes = encode_node(
            left.as_ref(),
            entries
                .iter()
                .map(|(k, v, r)| (k.as_slice(), v, r.as_ref())),
            3,
        );
        // Every single-byte change and every truncation: the fast path
        // never accepts what the general decoder rejects, and when both
        // accept they agree.
        let mut variants: Vec<Vec<u8>> = (0..bytes.len()).map(|n| bytes[..n].to_vec()).collect();
        for i in 0..bytes.len() {
            for delta in [1u8, 0x20, 0x80] {
                let mut b = bytes.clone();
                b[i] = b[i].wrapping_add(delta);
                variants.push(b);
            }
        }
        let mut extra = bytes.clone();
        extra.push(0);
        variants.push(extra);
        for b in variants {
            let mut fast = RawNode::default();
            let fast_ok = fast.decode_canonical(&b).is_some();
            let mut general = RawNode::default();
            let general_result = general.decode_general(&b);
            if fast_ok {
                assert!(general_result.is_ok(), "{b:x?}");
                assert_eq!(fast.len(), general.len());
                for i in 0..fast.len() {
                    assert_eq!(fast.key(i), general.key(i));
                    assert_eq!(fast.value(i), general.value(i));
                    assert_eq!(fast.right(i), general.right(i));
                }
                assert_eq!(fast.left, general.left);
            }
            // The public decoder reports exactly the general decoder's
            // error.
            let via_decode = RawNode::default()
                .decode(&cid, &b)
                .map_err(|e| e.to_string());
            match general_result {
                Ok(()) => assert!(via_decode.is_ok()),
                Err(NodeDecodeError::Key(e)) => assert_eq!(via_decode, Err(e.to_string())),
                Err(NodeDecodeError::Cbor(c)) => {
                    assert_eq!(
                        via_decode,
                        Err(format!(
                            "{}",
                            Error::MstNode {
                                cid,
                                reason: c.to_string()
                            }
                        ))
                    )
                }
                Err(NodeDecodeError::Shape(s)) => {
                    assert_eq!(
                        via_decode,
                        Err(format!(
                            "{}",
                            Error::MstNode {
                                cid,
                                reason: s.to_string()
                            }
                        ))
                    )
                }
            }
        }
    }
}
