//! The `cid` string format: a CID written as multibase text.

use super::{SyntaxError, SyntaxKind};

/// Shortest accepted CID string; anything shorter cannot hold a version,
/// codec and multihash.
const MIN_LEN: usize = 8;
/// Longest accepted CID string.
const MAX_LEN: usize = 256;

const fn err(reason: &'static str) -> SyntaxError {
    SyntaxError::new(SyntaxKind::Cid, reason)
}

/// Checks that `s` looks like a CIDv1 in some multibase string encoding,
/// without allocating.
///
/// This is the loose syntax check the atproto `cid` string format defines
/// (8-256 chars of letters, digits, `+` and `=`, and not a legacy CIDv0),
/// not a decode: the interop vectors accept contrived strings in several
/// bases that a strict CID decoder would refuse, and records carrying such
/// strings must still validate. Code that needs the actual CID should decode
/// it with a CID library.
pub fn validate_cid_str(s: &str) -> Result<(), SyntaxError> {
    let b = s.as_bytes();
    if b.len() < MIN_LEN {
        return Err(err("too short (min 8 chars)"));
    }
    if b.len() > MAX_LEN {
        return Err(err("too long (max 256 chars)"));
    }
    if !b
        .iter()
        .all(|&c| c.is_ascii_alphanumeric() || c == b'+' || c == b'=')
    {
        return Err(err("only ascii letters, digits, + and = are allowed"));
    }
    // A bare base58 sha2-256 multihash always starts "Qm"; no multibase
    // prefix is 'Q', so this cannot reject a CIDv1.
    if b.starts_with(b"Qm") {
        return Err(err("cidv0 is not supported"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_limits_are_inclusive() {
        assert_eq!(
            validate_cid_str("b234567"),
            Err(err("too short (min 8 chars)"))
        );
        assert!(validate_cid_str("b2345678").is_ok());
        let max = format!("b{}", "a".repeat(MAX_LEN - 1));
        assert!(validate_cid_str(&max).is_ok());
        assert_eq!(
            validate_cid_str(&format!("{max}a")),
            Err(err("too long (max 256 chars)"))
        );
    }

    #[test]
    fn rejects_cidv0_and_odd_chars() {
        assert_eq!(
            validate_cid_str("QmbWqxBEKC3P8tqsKc98xmWNzrzDtRLMiMPL8wBuTGsMnR"),
            Err(err("cidv0 is not supported"))
        );
        for bad in [
            "bafy/beigdyrzt5sf",
            "bafybeig-dyrzt5sf",
            "bafybeigdyrzt5sf\n",
        ] {
            assert!(validate_cid_str(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
