//! Record keys, the last path segment naming a record in a collection.

use super::{SyntaxError, SyntaxKind, string_newtype};

/// Longest record key the spec allows.
const MAX_LEN: usize = 512;

const fn err(reason: &'static str) -> SyntaxError {
    SyntaxError::new(SyntaxKind::RecordKey, reason)
}

/// A syntactically valid record key, such as a TID or `self`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordKey(String);

string_newtype!(RecordKey, RecordKey::validate);

impl RecordKey {
    /// Checks `s` against the record-key syntax without allocating.
    pub fn validate(s: &str) -> Result<(), SyntaxError> {
        let b = s.as_bytes();
        if b.is_empty() {
            return Err(err("empty"));
        }
        if b.len() > MAX_LEN {
            return Err(err("too long (max 512 chars)"));
        }
        if !b.iter().all(|&c| is_rkey_char(c)) {
            return Err(err("only ascii letters, digits and . _ : ~ - are allowed"));
        }
        // These would be path traversal when the key is used as a path segment.
        if b == b"." || b == b".." {
            return Err(err("cannot be \".\" or \"..\""));
        }
        Ok(())
    }
}

const fn is_rkey_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'~' | b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_limits_are_inclusive() {
        assert_eq!(RecordKey::validate(""), Err(err("empty")));
        assert!(RecordKey::validate("a").is_ok());
        assert!(RecordKey::validate(&"a".repeat(MAX_LEN)).is_ok());
        assert_eq!(
            RecordKey::validate(&"a".repeat(MAX_LEN + 1)),
            Err(err("too long (max 512 chars)"))
        );
    }

    #[test]
    fn rejects_edge_cases() {
        // "#extra" is in the interop file but starts with '#', so the
        // vector runner reads it as a comment.
        for bad in ["a b", "a/b", "a\n", "é", "a%20", "a?", "a#", "#extra"] {
            assert!(
                RecordKey::validate(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
        for good in ["...", ".a", "a.", "3jzfcijpj2z2a", "self"] {
            assert!(
                RecordKey::validate(good).is_ok(),
                "{good:?} should be accepted"
            );
        }
    }
}
