//! The generic `uri` string format.

use super::{SyntaxError, SyntaxKind};

/// Longest accepted URI (8 KB).
const MAX_LEN: usize = 8192;

const fn err(reason: &'static str) -> SyntaxError {
    SyntaxError::new(SyntaxKind::Uri, reason)
}

/// Checks that `s` is a plausible absolute URI, without allocating.
///
/// The Lexicon `uri` format only asks for an RFC 3986 scheme (a letter, then
/// letters, digits, `+`, `-` or `.`), a colon, and a non-empty remainder with
/// no whitespace, at most 8 KB in total. The remainder is deliberately not
/// parsed further, and non-ASCII characters are tolerated there: the
/// reference implementation accepts them, so rejecting them would refuse
/// records the rest of the network accepts.
pub fn validate_uri(s: &str) -> Result<(), SyntaxError> {
    if s.len() > MAX_LEN {
        return Err(err("too long (max 8192 chars)"));
    }
    let Some((scheme, rest)) = s.split_once(':') else {
        return Err(err("missing scheme"));
    };
    let mut scheme_chars = scheme.bytes();
    if !scheme_chars.next().is_some_and(|c| c.is_ascii_alphabetic()) {
        return Err(err("scheme must start with a letter"));
    }
    if !scheme_chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.')) {
        return Err(err("scheme may only contain letters, digits, +, - and ."));
    }
    if rest.is_empty() {
        return Err(err("nothing after the scheme"));
    }
    if rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err("whitespace and control characters are not allowed"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_limit_is_inclusive() {
        let head = "https://example.com/";
        let at_max = format!("{head}{}", "x".repeat(MAX_LEN - head.len()));
        assert!(validate_uri(&at_max).is_ok());
        assert_eq!(
            validate_uri(&format!("{at_max}x")),
            Err(err("too long (max 8192 chars)"))
        );
    }

    #[test]
    fn edge_cases() {
        for good in [
            "a:b",
            "HTTPS://EXAMPLE.COM",
            "urn:isbn:0451450523",
            "https://例え.jp/パス",
        ] {
            assert!(validate_uri(good).is_ok(), "{good:?} should be accepted");
        }
        for bad in [
            "",
            ":",
            "a:",
            "1a:b",
            "a_b:c",
            "https://example.com/\t",
            "https://example.com/\u{7f}",
            "https://example.com/\u{a0}",
        ] {
            assert!(validate_uri(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
