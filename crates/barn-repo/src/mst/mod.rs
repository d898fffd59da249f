//! The Merkle Search Tree (MST) that maps a repository's record paths to
//! record CIDs, as the atproto repository spec defines it.
//!
//! # Terminology
//! - *key*: a record path, `collection/rkey`, as bytes.
//! - *height* of a key: the number of leading zero bits of `sha256(key)`,
//!   divided by two (fanout 4). A key lives in the node whose *layer*
//!   equals its height.
//! - *layer*: a node's level. Leaves are layer 0; the root's layer is the
//!   greatest key height in the tree. A child is always exactly one layer
//!   below its parent.
//! - *slot*: the subtree pointer left of an entry (`l` for the first, the
//!   previous entry's `t` otherwise). Empty slots are `null`.
//! - *pointer-only node*: a node with no entries, only `l`. Legitimate below
//!   the root (keys two layers down still need a node on every layer in
//!   between); never the root (the root is trimmed).
//!
//! # Tricky bits
//! - The tree's shape depends only on its key set, so every correct
//!   insert/delete sequence ends at the same root CID as the reference
//!   implementation. [`Mst::from_sorted`] builds bottom-up in one pass;
//!   [`Mst::insert`]/[`Mst::delete`] touch one path plus, for a split or
//!   merge, the nodes along the boundary. Property tests check the two
//!   against each other, and `tests/reference_roundtrip.rs` against
//!   `@atproto/repo`.
//! - Nodes are loaded lazily from a [`crate::BlockSource`]: inverting a
//!   firehose commit works with only the blocks the commit carries, and a
//!   missing block is an error ([`crate::Error::MissingBlock`]), never a
//!   guess.
//! - Key-mined trees: anyone can grind keys with large heights. Layers are
//!   capped ([`MstLimits::max_layer`]), and every loaded node is checked to
//!   be on the layer its keys say it is, so a crafted tree cannot smuggle a
//!   node into the wrong place.
//!
//! # Hacking
//! Reads of a stored tree ([`get`], [`MstWalker`], [`diff`]) work directly on
//! decoded blocks. Mutation goes through [`Mst`], an in-memory tree whose
//! untouched subtrees stay as CIDs.

mod diff;
mod invert;
mod node;
mod tree;
mod walk;

pub use diff::{DiffOp, diff};
pub use invert::{Action, RecordOp, invert_ops};
pub use node::{EntryData, NodeData, looks_like_node};
pub use tree::Mst;
pub use walk::{MstWalker, WalkItem, get, range};

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Longest key accepted (bytes). A repo path is an NSID (≤ 317) plus `/`
/// plus a record key (≤ 512); this leaves headroom without inviting abuse.
pub const MAX_KEY_LEN: usize = 1024;

/// Bounds against hostile trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MstLimits {
    /// Highest layer accepted. Default 32: reaching it needs a key whose
    /// hash starts with 64 zero bits, far beyond any honest repository
    /// (a 100 million record repo reaches about layer 14).
    pub max_layer: u32,
}

impl Default for MstLimits {
    fn default() -> Self {
        MstLimits { max_layer: 32 }
    }
}

/// The layer a key belongs on: leading zero bits of its SHA-256, halved.
pub fn key_height(key: &[u8]) -> u32 {
    let digest = Sha256::digest(key);
    let mut zeros = 0u32;
    for b in digest {
        if b == 0 {
            zeros += 8;
            continue;
        }
        zeros += b.leading_zeros();
        break;
    }
    zeros / 2
}

/// Number of leading bytes two keys share.
pub fn common_prefix_len(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[derive(Clone, Copy)]
enum CharClass {
    Ok,
    Slash,
    Bad,
}

/// Byte classes for [`check_key`]; a table because this runs for every key
/// of every node decoded.
const KEY_CHARS: [CharClass; 256] = {
    let mut t = [CharClass::Bad; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~' | b':') {
            t[c] = CharClass::Ok;
        }
        c += 1;
    }
    t[b'/' as usize] = CharClass::Slash;
    t
};

/// Checks a key is a plausible repo path: `collection/rkey`, both parts
/// non-empty, characters from the record-key set, at most [`MAX_KEY_LEN`].
/// The collection is not NSID-checked: the tree is agnostic of it, and the
/// official MST vectors use keys such as `A0/374913`.
pub fn check_key(key: &[u8]) -> Result<()> {
    let bad = |reason| Error::MstKey {
        key: String::from_utf8_lossy(key).into_owned(),
        reason,
    };
    if key.is_empty() {
        return Err(bad("empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(bad("too long"));
    }
    let mut slashes = 0;
    for &c in key {
        match KEY_CHARS[usize::from(c)] {
            CharClass::Ok => {}
            CharClass::Slash => slashes += 1,
            CharClass::Bad => return Err(bad("invalid character")),
        }
    }
    if slashes != 1 {
        return Err(bad("must be collection/rkey"));
    }
    if key.first() == Some(&b'/') || key.last() == Some(&b'/') {
        return Err(bad("empty collection or record key"));
    }
    Ok(())
}

/// Whether `prefix ++ suffix` passes [`check_key`], where `prefix` (of
/// `key_len - suffix.len()` bytes, holding a slash or not as
/// `prefix_has_slash` says) is a prefix of a key that passed it. Node
/// decoding uses this to check only the new bytes of each prefix-compressed
/// key; it only ever says yes when [`check_key`] would, and callers run
/// [`check_key`] for the error.
pub(crate) fn key_tail_ok(prefix_has_slash: bool, key_len: usize, suffix: &[u8]) -> bool {
    let (Some(&first), Some(&last)) = (suffix.first(), suffix.last()) else {
        return false;
    };
    // With no prefix the suffix's first byte is the key's; otherwise the
    // key starts like the earlier key, which did not start with '/'.
    if key_len > MAX_KEY_LEN || last == b'/' || (key_len == suffix.len() && first == b'/') {
        return false;
    }
    // Branch-free over the same table as `check_key`: this runs for every
    // entry of every node a diff reads.
    let mut bad = 0u8;
    let mut slashes = usize::from(prefix_has_slash);
    for &c in suffix {
        let class = KEY_CLASS[usize::from(c)];
        bad |= class & KEY_CLASS_BAD;
        slashes += usize::from(class & KEY_CLASS_SLASH);
    }
    bad == 0 && slashes == 1
}

const KEY_CLASS_SLASH: u8 = 1;
const KEY_CLASS_BAD: u8 = 2;

/// [`KEY_CHARS`] as bit flags, for [`key_tail_ok`].
const KEY_CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = match KEY_CHARS[c] {
            CharClass::Ok => 0,
            CharClass::Slash => KEY_CLASS_SLASH,
            CharClass::Bad => KEY_CLASS_BAD,
        };
        c += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_check_classes_every_byte_like_the_table() {
        for c in 0..=255u8 {
            let want = match KEY_CHARS[usize::from(c)] {
                CharClass::Ok => Some(false),
                CharClass::Slash => Some(true),
                CharClass::Bad => None,
            };
            // A lone byte as the rkey after "a/": fine exactly for `Ok`.
            assert_eq!(key_tail_ok(true, 3, &[c]), want == Some(false), "{c}");
            // As the slash itself, between "a" and "b".
            assert_eq!(key_tail_ok(false, 3, &[c, b'b']), want == Some(true), "{c}");
        }
    }

    #[test]
    fn key_checks() {
        check_key(b"app.bsky.feed.post/3jqfcqzm3fo2j").unwrap();
        check_key(b"A0/374913").unwrap();
        for bad in [
            &b""[..],
            b"nocollection",
            b"a/b/c",
            b"/rkey",
            b"coll/",
            b"a b/c",
            b"a/\xff",
        ] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
        assert!(check_key(&[b'a'; MAX_KEY_LEN + 1]).is_err());
    }
}
