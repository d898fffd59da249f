//! Domain-name handles such as `alice.bsky.social`.

use super::{SyntaxError, SyntaxKind, string_newtype};

/// Longest handle: the DNS limit on a full domain name.
const MAX_LEN: usize = 253;
/// Longest single label: the DNS limit.
const MAX_LABEL_LEN: usize = 63;

/// TLDs that are syntactically fine but that the spec says must not be used
/// for handles, because they can never resolve on the public internet.
const DISALLOWED_TLDS: [&str; 8] = [
    "alt",
    "arpa",
    "example",
    "internal",
    "invalid",
    "local",
    "localhost",
    "onion",
];

const fn err(reason: &'static str) -> SyntaxError {
    SyntaxError::new(SyntaxKind::Handle, reason)
}

/// A syntactically valid handle.
///
/// Handles are case-insensitive but this type keeps the original spelling so
/// that a value read from a record round-trips unchanged; compare handles
/// after [`Handle::to_lowercase`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handle(String);

string_newtype!(Handle, Handle::validate);

impl Handle {
    /// Checks `s` against the handle syntax without allocating.
    ///
    /// A disallowed TLD (see [`Handle::is_disallowed_tld`]) is not a syntax
    /// error: the spec keeps that policy check separate.
    pub fn validate(s: &str) -> Result<(), SyntaxError> {
        let b = s.as_bytes();
        if b.is_empty() {
            return Err(err("empty"));
        }
        if b.len() > MAX_LEN {
            return Err(err("too long (max 253 chars)"));
        }
        let mut labels = 0usize;
        let mut last_label: &[u8] = &[];
        for label in b.split(|&c| c == b'.') {
            check_label(label).map_err(err)?;
            labels += 1;
            last_label = label;
        }
        if labels < 2 {
            return Err(err("must have at least two segments"));
        }
        if last_label.first().is_some_and(u8::is_ascii_digit) {
            return Err(err("top-level domain cannot start with a digit"));
        }
        Ok(())
    }

    /// The handle normalized to lower case, the form used for comparison and
    /// resolution.
    pub fn to_lowercase(&self) -> Handle {
        Handle(self.0.to_ascii_lowercase())
    }

    /// Whether the handle ends in a TLD that the spec forbids for handles
    /// (`.alt`, `.arpa`, `.example`, `.internal`, `.invalid`, `.local`,
    /// `.localhost`, `.onion`).
    pub fn is_disallowed_tld(&self) -> bool {
        let tld = self.0.rsplit('.').next().unwrap_or_default();
        DISALLOWED_TLDS.iter().any(|d| d.eq_ignore_ascii_case(tld))
    }
}

/// Checks one DNS label: 1-63 letters, digits or hyphens, hyphens not at
/// either end. Shared with NSID authorities, hence the bare reason.
pub(super) fn check_label(label: &[u8]) -> Result<(), &'static str> {
    let (Some(&first), Some(&last)) = (label.first(), label.last()) else {
        return Err("empty segment");
    };
    if label.len() > MAX_LABEL_LEN {
        return Err("segment too long (max 63 chars)");
    }
    if !label
        .iter()
        .all(|&c| c.is_ascii_alphanumeric() || c == b'-')
    {
        return Err("only ascii letters, digits, hyphens and periods are allowed");
    }
    if first == b'-' || last == b'-' {
        return Err("segment cannot start or end with a hyphen");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_limits_are_inclusive() {
        let label = "a".repeat(MAX_LABEL_LEN);
        assert!(Handle::validate(&format!("{label}.test")).is_ok());
        assert_eq!(
            Handle::validate(&format!("{label}a.test")),
            Err(err("segment too long (max 63 chars)"))
        );

        // 63 + 1 + 63 + 1 + 63 + 1 + 61 = 253
        let at_max = format!("{label}.{label}.{label}.{}", "a".repeat(61));
        assert_eq!(at_max.len(), MAX_LEN);
        assert!(Handle::validate(&at_max).is_ok());
        let over = format!("{at_max}a");
        assert_eq!(
            Handle::validate(&over),
            Err(err("too long (max 253 chars)"))
        );
    }

    #[test]
    fn lowercase_and_disallowed_tlds() {
        let h: Handle = "Alice.Example.COM".parse().unwrap();
        assert_eq!(h.as_str(), "Alice.Example.COM");
        assert_eq!(h.to_lowercase().as_str(), "alice.example.com");
        assert!(!h.is_disallowed_tld());

        for tld in DISALLOWED_TLDS {
            let h = Handle::try_from(format!("laptop.{}", tld.to_ascii_uppercase())).unwrap();
            assert!(h.is_disallowed_tld(), "{h}");
        }
        // Only the last label counts.
        assert!(
            !Handle::try_from("local.example.com")
                .unwrap()
                .is_disallowed_tld()
        );
        assert!(!Handle::try_from("john.locals").unwrap().is_disallowed_tld());
    }

    #[test]
    fn rejects_edge_cases() {
        for bad in [
            "", ".", "a.", ".a", "a..b", "a.b\n", "a.b-", "a.-b", "a\u{0}.b",
        ] {
            assert!(Handle::validate(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
