//! Strict DAG-CBOR, as atproto restricts it: a validator, a small pull
//! decoder for hot structures (MST nodes, commits) and an encoder.
//!
//! serde_ipld_dagcbor decodes generic values (see [`crate::data`]) but is
//! lenient where atproto is not: it accepts floats, non-canonical integer
//! widths and unsorted map keys. Byte-exact CIDs depend on canonical bytes,
//! so every block barn interprets goes through [`validate`] first, or through
//! [`Decoder`], which enforces the same rules while it reads.
//!
//! # Terminology
//! - *head*: the initial byte (major type in the top 3 bits, "additional
//!   info" in the low 5) plus the argument that follows it.
//! - *canonical key order*: shorter keys first, then bytewise (RFC 7049
//!   canonical CBOR, which DAG-CBOR adopts).
//!
//! # Tricky bits
//! - A declared length is never trusted for allocation: a 9-byte input can
//!   claim 2^64 array elements (a "CBOR bomb"). Lengths are checked against
//!   the bytes that remain before anything loops or allocates.
//! - Nesting is bounded ([`DEFAULT_MAX_DEPTH`]) so hostile input cannot
//!   exhaust the stack.
//! - Integers must fit in i64 (the atproto data model), so `u64` values above
//!   `i64::MAX` and negatives below `i64::MIN` are rejected.

use cid::Cid;

/// Nesting limit for generic values; atproto records are shallow, and this
/// keeps recursion far from the stack limit. 127 is also the deepest that
/// serde_ipld_dagcbor decodes, so `validate` and `data::decode` agree.
pub const DEFAULT_MAX_DEPTH: usize = 127;

/// The CBOR tag DAG-CBOR uses for CID links.
const TAG_CID: u64 = 42;

/// Why a byte string is not valid atproto DAG-CBOR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CborError {
    /// Input ended inside an item.
    #[error("unexpected end of input at byte {0}")]
    UnexpectedEof(usize),
    /// Bytes follow the single top-level item.
    #[error("{0} trailing bytes after the value")]
    TrailingBytes(usize),
    /// An argument was encoded wider than needed.
    #[error("non-minimal integer or length encoding at byte {0}")]
    NonMinimal(usize),
    /// Indefinite-length items are not allowed in DAG-CBOR.
    #[error("indefinite-length item at byte {0}")]
    Indefinite(usize),
    /// Additional info 28..=30 is reserved.
    #[error("reserved additional info at byte {0}")]
    Reserved(usize),
    /// Floats are not part of the atproto data model.
    #[error("float at byte {0}")]
    Float(usize),
    /// A simple value other than false, true and null.
    #[error("unsupported simple value {value} at byte {at}")]
    Simple {
        /// The simple value.
        value: u64,
        /// Byte offset.
        at: usize,
    },
    /// A tag other than 42.
    #[error("unsupported tag {tag} at byte {at}")]
    Tag {
        /// The tag number.
        tag: u64,
        /// Byte offset.
        at: usize,
    },
    /// A tag-42 payload that is not `0x00` followed by a valid binary CID.
    #[error("invalid cid link at byte {0}")]
    BadLink(usize),
    /// A map key that is not a text string.
    #[error("non-string map key at byte {0}")]
    NonStringKey(usize),
    /// Map keys not in canonical order.
    #[error("map keys out of canonical order at byte {0}")]
    KeyOrder(usize),
    /// The same map key twice.
    #[error("duplicate map key at byte {0}")]
    DuplicateKey(usize),
    /// A text string that is not UTF-8.
    #[error("invalid utf-8 in text string at byte {0}")]
    Utf8(usize),
    /// An integer outside the i64 range.
    #[error("integer out of the 64-bit signed range at byte {0}")]
    IntegerRange(usize),
    /// A declared length larger than the input that remains.
    #[error("declared length {len} exceeds remaining input at byte {at}")]
    LengthExceedsInput {
        /// The declared length.
        len: u64,
        /// Byte offset.
        at: usize,
    },
    /// Nesting deeper than allowed.
    #[error("nesting too deep")]
    TooDeep,
    /// A typed decoder found another type than it needs.
    #[error("expected {expected} at byte {at}")]
    Unexpected {
        /// What the decoder wanted.
        expected: &'static str,
        /// Byte offset.
        at: usize,
    },
}

/// Result alias for this module.
pub type CborResult<T> = std::result::Result<T, CborError>;

/// Major types.
pub(crate) const MAJOR_UINT: u8 = 0;
pub(crate) const MAJOR_NEGINT: u8 = 1;
pub(crate) const MAJOR_BYTES: u8 = 2;
pub(crate) const MAJOR_TEXT: u8 = 3;
pub(crate) const MAJOR_ARRAY: u8 = 4;
pub(crate) const MAJOR_MAP: u8 = 5;
pub(crate) const MAJOR_TAG: u8 = 6;
pub(crate) const MAJOR_SIMPLE: u8 = 7;

/// Checks that `bytes` is exactly one atproto DAG-CBOR value, canonical and
/// within the limits. Allocates nothing.
pub fn validate(bytes: &[u8]) -> CborResult<()> {
    validate_with_depth(bytes, DEFAULT_MAX_DEPTH)
}

/// [`validate`] with an explicit nesting limit.
pub fn validate_with_depth(bytes: &[u8], max_depth: usize) -> CborResult<()> {
    let mut d = Decoder::new(bytes);
    d.skip_value(max_depth)?;
    d.finish()
}

/// A pull decoder over a byte slice that enforces the strict rules while it
/// reads. Typed reads (`text`, `uint`, `link`, …) fail with
/// [`CborError::Unexpected`] on a different type.
pub(crate) struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Decoder { buf, pos: 0 }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    /// Fails unless every byte was consumed.
    pub(crate) fn finish(&self) -> CborResult<()> {
        let rest = self.buf.len() - self.pos;
        if rest != 0 {
            return Err(CborError::TrailingBytes(rest));
        }
        Ok(())
    }

    fn byte(&mut self) -> CborResult<u8> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or(CborError::UnexpectedEof(self.pos))?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: u64) -> CborResult<&'a [u8]> {
        let at = self.pos;
        let remaining = (self.buf.len() - self.pos) as u64;
        if n > remaining {
            return Err(CborError::LengthExceedsInput { len: n, at });
        }
        let n = n as usize;
        let s = &self.buf[at..at + n];
        self.pos += n;
        Ok(s)
    }

    /// Reads one head: `(major, additional info, argument)`. Rejects
    /// indefinite lengths, reserved infos and non-minimal arguments. For
    /// major 7 with info 25..=27 (floats) the argument is not read.
    fn head(&mut self) -> CborResult<(u8, u8, u64)> {
        let at = self.pos;
        let ib = self.byte()?;
        let major = ib >> 5;
        let info = ib & 0x1f;
        if major == MAJOR_SIMPLE && (25..=27).contains(&info) {
            return Err(CborError::Float(at));
        }
        let arg = match info {
            0..=23 => u64::from(info),
            24 => {
                let v = u64::from(self.byte()?);
                // Simple values 24..=31 are invalid per RFC 8949 and all
                // non-minimal for the others.
                if v < 24 {
                    return Err(CborError::NonMinimal(at));
                }
                v
            }
            25 => {
                let s = self.take(2)?;
                let v = u64::from(u16::from_be_bytes([s[0], s[1]]));
                if v <= 0xff {
                    return Err(CborError::NonMinimal(at));
                }
                v
            }
            26 => {
                let s = self.take(4)?;
                let v = u64::from(u32::from_be_bytes([s[0], s[1], s[2], s[3]]));
                if v <= 0xffff {
                    return Err(CborError::NonMinimal(at));
                }
                v
            }
            27 => {
                let s = self.take(8)?;
                let v = u64::from_be_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]);
                if v <= 0xffff_ffff {
                    return Err(CborError::NonMinimal(at));
                }
                v
            }
            31 => return Err(CborError::Indefinite(at)),
            _ => return Err(CborError::Reserved(at)),
        };
        Ok((major, info, arg))
    }

    fn peek_major(&self) -> Option<u8> {
        self.buf.get(self.pos).map(|b| b >> 5)
    }

    /// Skips one value, validating it fully.
    pub(crate) fn skip_value(&mut self, depth_left: usize) -> CborResult<()> {
        let at = self.pos;
        let (major, info, arg) = self.head()?;
        match major {
            MAJOR_UINT | MAJOR_NEGINT => {
                if arg > i64::MAX as u64 {
                    return Err(CborError::IntegerRange(at));
                }
            }
            MAJOR_BYTES => {
                self.take(arg)?;
            }
            MAJOR_TEXT => {
                let s = self.take(arg)?;
                if std::str::from_utf8(s).is_err() {
                    return Err(CborError::Utf8(at));
                }
            }
            MAJOR_ARRAY => {
                let depth_left = depth_left.checked_sub(1).ok_or(CborError::TooDeep)?;
                // Every element needs at least one byte.
                self.check_count(arg, 1, at)?;
                for _ in 0..arg {
                    self.skip_value(depth_left)?;
                }
            }
            MAJOR_MAP => {
                let depth_left = depth_left.checked_sub(1).ok_or(CborError::TooDeep)?;
                self.check_count(arg, 2, at)?;
                let mut prev: Option<&[u8]> = None;
                for _ in 0..arg {
                    prev = Some(self.key(prev)?);
                    self.skip_value(depth_left)?;
                }
            }
            MAJOR_TAG => {
                if arg != TAG_CID {
                    return Err(CborError::Tag { tag: arg, at });
                }
                self.link_payload(at)?;
            }
            _ => match info {
                20..=22 => {}
                _ => return Err(CborError::Simple { value: arg, at }),
            },
        }
        Ok(())
    }

    /// Reads one value into the data model, enforcing everything
    /// [`Decoder::skip_value`] does, in the same single pass.
    pub(crate) fn read_value(&mut self, depth_left: usize) -> CborResult<crate::data::Value> {
        use crate::data::Value;
        let at = self.pos;
        let (major, info, arg) = self.head()?;
        Ok(match major {
            MAJOR_UINT => {
                if arg > i64::MAX as u64 {
                    return Err(CborError::IntegerRange(at));
                }
                Value::Integer(i128::from(arg))
            }
            MAJOR_NEGINT => {
                if arg > i64::MAX as u64 {
                    return Err(CborError::IntegerRange(at));
                }
                Value::Integer(-1 - i128::from(arg))
            }
            MAJOR_BYTES => Value::Bytes(self.take(arg)?.to_vec()),
            MAJOR_TEXT => {
                let s = self.take(arg)?;
                match std::str::from_utf8(s) {
                    Ok(s) => Value::String(s.to_owned()),
                    Err(_) => return Err(CborError::Utf8(at)),
                }
            }
            MAJOR_ARRAY => {
                let depth_left = depth_left.checked_sub(1).ok_or(CborError::TooDeep)?;
                self.check_count(arg, 1, at)?;
                let mut list = Vec::with_capacity(arg as usize);
                for _ in 0..arg {
                    list.push(self.read_value(depth_left)?);
                }
                Value::List(list)
            }
            MAJOR_MAP => {
                let depth_left = depth_left.checked_sub(1).ok_or(CborError::TooDeep)?;
                self.check_count(arg, 2, at)?;
                let mut map = std::collections::BTreeMap::new();
                let mut prev: Option<&[u8]> = None;
                for _ in 0..arg {
                    let key = self.key(prev)?;
                    prev = Some(key);
                    let value = self.read_value(depth_left)?;
                    // key_bytes checked UTF-8.
                    map.insert(String::from_utf8_lossy(key).into_owned(), value);
                }
                Value::Map(map)
            }
            MAJOR_TAG => {
                if arg != TAG_CID {
                    return Err(CborError::Tag { tag: arg, at });
                }
                Value::Link(self.link_payload(at)?)
            }
            _ => match info {
                20 => Value::Bool(false),
                21 => Value::Bool(true),
                22 => Value::Null,
                _ => return Err(CborError::Simple { value: arg, at }),
            },
        })
    }

    fn check_count(&self, count: u64, min_item_bytes: u64, at: usize) -> CborResult<()> {
        let remaining = (self.buf.len() - self.pos) as u64;
        if count.saturating_mul(min_item_bytes) > remaining {
            return Err(CborError::LengthExceedsInput { len: count, at });
        }
        Ok(())
    }

    /// Reads a map key: must be a UTF-8 text string.
    fn key_bytes(&mut self) -> CborResult<&'a [u8]> {
        let at = self.pos;
        if self.peek_major() != Some(MAJOR_TEXT) {
            return Err(CborError::NonStringKey(at));
        }
        let (_, _, len) = self.head()?;
        let s = self.take(len)?;
        if std::str::from_utf8(s).is_err() {
            return Err(CborError::Utf8(at));
        }
        Ok(s)
    }

    /// After tag 42: a byte string `0x00 ‖ binary CID`, nothing more.
    fn link_payload(&mut self, at: usize) -> CborResult<Cid> {
        if self.peek_major() != Some(MAJOR_BYTES) {
            return Err(CborError::BadLink(at));
        }
        let (_, _, len) = self.head()?;
        let payload = self.take(len)?;
        parse_link_payload(payload).ok_or(CborError::BadLink(at))
    }

    // ---- typed reads used by the MST node and commit decoders ----

    /// Reads a map header and returns its entry count.
    pub(crate) fn map_len(&mut self) -> CborResult<u64> {
        let at = self.pos;
        if self.peek_major() != Some(MAJOR_MAP) {
            return Err(CborError::Unexpected {
                expected: "map",
                at,
            });
        }
        let (_, _, n) = self.head()?;
        self.check_count(n, 2, at)?;
        Ok(n)
    }

    /// Reads an array header and returns its element count.
    pub(crate) fn array_len(&mut self) -> CborResult<u64> {
        let at = self.pos;
        if self.peek_major() != Some(MAJOR_ARRAY) {
            return Err(CborError::Unexpected {
                expected: "array",
                at,
            });
        }
        let (_, _, n) = self.head()?;
        self.check_count(n, 1, at)?;
        Ok(n)
    }

    /// Reads a map key, checking canonical order against the previous key.
    pub(crate) fn key(&mut self, prev: Option<&[u8]>) -> CborResult<&'a [u8]> {
        let at = self.pos;
        let k = self.key_bytes()?;
        if let Some(p) = prev {
            check_key_order(p, k, at)?;
        }
        Ok(k)
    }

    /// Reads a text string.
    pub(crate) fn text(&mut self) -> CborResult<&'a str> {
        let at = self.pos;
        if self.peek_major() != Some(MAJOR_TEXT) {
            return Err(CborError::Unexpected {
                expected: "text string",
                at,
            });
        }
        let (_, _, len) = self.head()?;
        let s = self.take(len)?;
        std::str::from_utf8(s).map_err(|_| CborError::Utf8(at))
    }

    /// Reads a byte string.
    pub(crate) fn bytes(&mut self) -> CborResult<&'a [u8]> {
        let at = self.pos;
        if self.peek_major() != Some(MAJOR_BYTES) {
            return Err(CborError::Unexpected {
                expected: "byte string",
                at,
            });
        }
        let (_, _, len) = self.head()?;
        self.take(len)
    }

    /// Reads an integer in the i64 range.
    pub(crate) fn int(&mut self) -> CborResult<i64> {
        let at = self.pos;
        match self.peek_major() {
            Some(MAJOR_UINT) => {
                let (_, _, v) = self.head()?;
                i64::try_from(v).map_err(|_| CborError::IntegerRange(at))
            }
            Some(MAJOR_NEGINT) => {
                let (_, _, v) = self.head()?;
                let v = i64::try_from(v).map_err(|_| CborError::IntegerRange(at))?;
                Ok(-1 - v)
            }
            _ => Err(CborError::Unexpected {
                expected: "integer",
                at,
            }),
        }
    }

    /// Reads a CID link.
    pub(crate) fn link(&mut self) -> CborResult<Cid> {
        let at = self.pos;
        if self.peek_major() != Some(MAJOR_TAG) {
            return Err(CborError::Unexpected {
                expected: "cid link",
                at,
            });
        }
        let (_, _, tag) = self.head()?;
        if tag != TAG_CID {
            return Err(CborError::Tag { tag, at });
        }
        self.link_payload(at)
    }

    /// Reads `null` (returns `None`) or a CID link.
    pub(crate) fn nullable_link(&mut self) -> CborResult<Option<Cid>> {
        if self.buf.get(self.pos) == Some(&0xf6) {
            self.pos += 1;
            return Ok(None);
        }
        self.link().map(Some)
    }
}

/// Strict canonical order: shorter first, then bytewise; equal is a
/// duplicate.
fn check_key_order(prev: &[u8], next: &[u8], at: usize) -> CborResult<()> {
    match prev.len().cmp(&next.len()).then_with(|| prev.cmp(next)) {
        std::cmp::Ordering::Less => Ok(()),
        std::cmp::Ordering::Equal => Err(CborError::DuplicateKey(at)),
        std::cmp::Ordering::Greater => Err(CborError::KeyOrder(at)),
    }
}

/// Parses `0x00 ‖ binary CID`, requiring the CID to use every byte.
fn parse_link_payload(payload: &[u8]) -> Option<Cid> {
    let (&first, rest) = payload.split_first()?;
    if first != 0 {
        return None;
    }
    let (cid, len) = crate::read_cid_prefix(rest).ok()?;
    (len == rest.len()).then_some(cid)
}

/// A canonical DAG-CBOR writer for values with a fixed shape (MST nodes,
/// commits, barn-store's op chunks): every head in its shortest form.
/// Callers write map keys in canonical order themselves (shorter keys
/// first, then bytewise).
#[derive(Debug, Default)]
pub struct Encoder {
    pub(crate) out: Vec<u8>,
}

impl Encoder {
    /// An empty writer with room for `n` bytes.
    pub fn with_capacity(n: usize) -> Self {
        Encoder {
            out: Vec::with_capacity(n),
        }
    }

    /// The bytes written.
    pub fn into_bytes(self) -> Vec<u8> {
        self.out
    }

    /// The head of an array of `len` items (the items follow).
    pub fn array(&mut self, len: usize) {
        self.head(MAJOR_ARRAY, len as u64);
    }

    /// The head of a map of `len` entries (keys and values follow).
    pub fn map(&mut self, len: usize) {
        self.head(MAJOR_MAP, len as u64);
    }

    pub(crate) fn head(&mut self, major: u8, arg: u64) {
        let m = major << 5;
        if arg < 24 {
            self.out.push(m | arg as u8);
        } else if arg <= 0xff {
            self.out.push(m | 24);
            self.out.push(arg as u8);
        } else if arg <= 0xffff {
            self.out.push(m | 25);
            self.out.extend_from_slice(&(arg as u16).to_be_bytes());
        } else if arg <= 0xffff_ffff {
            self.out.push(m | 26);
            self.out.extend_from_slice(&(arg as u32).to_be_bytes());
        } else {
            self.out.push(m | 27);
            self.out.extend_from_slice(&arg.to_be_bytes());
        }
    }

    /// A text string.
    pub fn text(&mut self, s: &str) {
        self.head(MAJOR_TEXT, s.len() as u64);
        self.out.extend_from_slice(s.as_bytes());
    }

    /// A byte string.
    pub fn bytes(&mut self, b: &[u8]) {
        self.head(MAJOR_BYTES, b.len() as u64);
        self.out.extend_from_slice(b);
    }

    /// An integer.
    pub fn int(&mut self, v: i64) {
        if v >= 0 {
            self.head(MAJOR_UINT, v as u64);
        } else {
            self.head(MAJOR_NEGINT, (-1 - v) as u64);
        }
    }

    /// `null`.
    pub fn null(&mut self) {
        self.out.push(0xf6);
    }

    /// A CID link (tag 42: a byte string of 0x00 then the CID).
    pub fn link(&mut self, cid: &Cid) {
        self.head(MAJOR_TAG, TAG_CID);
        let encoded = cid.encoded_len();
        self.head(MAJOR_BYTES, encoded as u64 + 1);
        self.out.push(0);
        // Writing into a Vec cannot fail.
        let _ = cid.write_bytes(&mut self.out);
    }

    /// A CID link, or `null`.
    pub fn nullable_link(&mut self, cid: Option<&Cid>) {
        match cid {
            Some(c) => self.link(c),
            None => self.null(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(bytes: &[u8]) -> CborError {
        validate(bytes).unwrap_err()
    }

    #[test]
    fn accepts_canonical_values() {
        // {"a": 1, "bb": [true, null, "x"]}
        let ok = [
            0xa2, 0x61, b'a', 0x01, 0x62, b'b', b'b', 0x83, 0xf5, 0xf6, 0x61, b'x',
        ];
        validate(&ok).unwrap();
    }

    #[test]
    fn rejects_floats_of_every_width() {
        assert_eq!(err(&[0xf9, 0x3c, 0x00]), CborError::Float(0));
        assert_eq!(err(&[0xfa, 0, 0, 0, 0]), CborError::Float(0));
        assert_eq!(err(&[0xfb, 0, 0, 0, 0, 0, 0, 0, 0]), CborError::Float(0));
    }

    #[test]
    fn rejects_non_minimal_integers() {
        assert_eq!(err(&[0x18, 0x05]), CborError::NonMinimal(0));
        assert_eq!(err(&[0x19, 0x00, 0x10]), CborError::NonMinimal(0));
        assert_eq!(err(&[0x1a, 0, 0, 0xff, 0xff]), CborError::NonMinimal(0));
        assert_eq!(
            err(&[0x1b, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]),
            CborError::NonMinimal(0)
        );
        // non-minimal string length
        assert_eq!(err(&[0x78, 0x01, b'a']), CborError::NonMinimal(0));
    }

    #[test]
    fn rejects_out_of_range_integers() {
        let mut big = vec![0x1b];
        big.extend_from_slice(&(i64::MAX as u64 + 1).to_be_bytes());
        assert_eq!(err(&big), CborError::IntegerRange(0));
        big[0] = 0x3b;
        assert_eq!(err(&big), CborError::IntegerRange(0));
    }

    #[test]
    fn rejects_bad_maps() {
        // integer key
        assert_eq!(err(&[0xa1, 0x01, 0x01]), CborError::NonStringKey(1));
        // "b" before "a"
        assert_eq!(
            err(&[0xa2, 0x61, b'b', 0x01, 0x61, b'a', 0x01]),
            CborError::KeyOrder(4)
        );
        // "aa" before "b": length-first order says "b" comes first
        assert_eq!(
            err(&[0xa2, 0x62, b'a', b'a', 0x01, 0x61, b'b', 0x01]),
            CborError::KeyOrder(5)
        );
        assert_eq!(
            err(&[0xa2, 0x61, b'a', 0x01, 0x61, b'a', 0x01]),
            CborError::DuplicateKey(4)
        );
    }

    #[test]
    fn rejects_trailing_bytes_and_truncation() {
        assert_eq!(err(&[0x01, 0x02]), CborError::TrailingBytes(1));
        assert_eq!(
            err(&[0x82, 0x01]),
            CborError::LengthExceedsInput { len: 2, at: 0 }
        );
        assert_eq!(
            err(&[0x62, b'a']),
            CborError::LengthExceedsInput { len: 2, at: 1 }
        );
        assert_eq!(err(&[]), CborError::UnexpectedEof(0));
    }

    #[test]
    fn rejects_bombs_without_allocating() {
        // array claiming 2^63 elements in 9 bytes
        let bomb = [0x9b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(err(&bomb), CborError::LengthExceedsInput { .. }));
        // byte string claiming 4 GiB
        let bomb = [0x5a, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(err(&bomb), CborError::LengthExceedsInput { .. }));
        // deep nesting: 10k nested arrays
        let mut deep = vec![0x81; 10_000];
        deep.push(0x01);
        assert!(matches!(err(&deep), CborError::TooDeep));
    }

    #[test]
    fn rejects_indefinite_simple_tags_and_bad_utf8() {
        assert_eq!(err(&[0x9f, 0xff]), CborError::Indefinite(0));
        assert_eq!(err(&[0xf7]), CborError::Simple { value: 23, at: 0 });
        assert_eq!(err(&[0xc1, 0x01]), CborError::Tag { tag: 1, at: 0 });
        assert_eq!(err(&[0x62, 0xff, 0xfe]), CborError::Utf8(0));
        assert_eq!(err(&[0x1c]), CborError::Reserved(0));
    }

    #[test]
    fn rejects_malformed_links() {
        // tag 42 over a text string
        assert_eq!(err(&[0xd8, 0x2a, 0x61, b'a']), CborError::BadLink(0));
        // tag 42 over bytes without the 0x00 prefix
        assert_eq!(err(&[0xd8, 0x2a, 0x42, 0x01, 0x71]), CborError::BadLink(0));
    }

    #[test]
    fn encoder_round_trips_through_decoder() {
        let cid = crate::cid_for_cbor(b"\x01");
        let mut e = Encoder::default();
        e.head(MAJOR_MAP, 3);
        e.text("a");
        e.int(-300);
        e.text("b");
        e.link(&cid);
        e.text("cc");
        e.nullable_link(None);
        validate(&e.out).unwrap();
        let mut d = Decoder::new(&e.out);
        assert_eq!(d.map_len().unwrap(), 3);
        assert_eq!(d.key(None).unwrap(), b"a");
        assert_eq!(d.int().unwrap(), -300);
        assert_eq!(d.key(Some(b"a")).unwrap(), b"b");
        assert_eq!(d.link().unwrap(), cid);
        assert_eq!(d.key(Some(b"b")).unwrap(), b"cc");
        assert_eq!(d.nullable_link().unwrap(), None);
        d.finish().unwrap();
    }
}
