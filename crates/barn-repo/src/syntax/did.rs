//! Decentralized identifiers (`did:method:identifier`).

use super::{SyntaxError, SyntaxKind, string_newtype};

/// Longest DID the spec allows (2 KB).
const MAX_LEN: usize = 2048;

const fn err(reason: &'static str) -> SyntaxError {
    SyntaxError::new(SyntaxKind::Did, reason)
}

/// A syntactically valid DID, such as `did:plc:7iza6de2dwap2sbkpav7c6c6`.
///
/// Only the generic DID syntax that atproto requires is checked; whether the
/// method is one atproto supports (`plc`, `web`) is a separate question, see
/// [`Did::is_plc`] and [`Did::is_web`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Did(String);

string_newtype!(Did, Did::validate);

impl Did {
    /// Checks `s` against the atproto DID syntax without allocating.
    ///
    /// Percent signs are only checked for not being last, not for being
    /// followed by two hex digits: the spec's rule and the reference
    /// implementations stop there, and being stricter would make this crate
    /// reject identifiers the rest of the network accepts.
    pub fn validate(s: &str) -> Result<(), SyntaxError> {
        let b = s.as_bytes();
        if b.len() > MAX_LEN {
            return Err(err("too long (max 2048 chars)"));
        }
        let Some(rest) = b.strip_prefix(b"did:") else {
            return Err(err("must start with \"did:\""));
        };
        let method_len = rest.iter().take_while(|c| c.is_ascii_lowercase()).count();
        if method_len == 0 {
            return Err(err("method must be lowercase letters"));
        }
        let ident = match rest[method_len..].split_first() {
            Some((b':', ident)) => ident,
            Some(_) => return Err(err("method must be lowercase letters")),
            None => return Err(err("missing identifier after method")),
        };
        let Some(&last) = ident.last() else {
            return Err(err("identifier is empty"));
        };
        if !ident.iter().all(|&c| is_ident_char(c)) {
            return Err(err("identifier has a disallowed character"));
        }
        if last == b':' || last == b'%' {
            return Err(err("identifier cannot end with \":\" or \"%\""));
        }
        Ok(())
    }

    /// The method name, e.g. `plc` for `did:plc:...`.
    pub fn method(&self) -> &str {
        let rest = &self.0[4..];
        rest.split_once(':').map_or(rest, |(method, _)| method)
    }

    /// The method-specific identifier, everything after the second colon.
    pub fn identifier(&self) -> &str {
        let rest = &self.0[4..];
        rest.split_once(':').map_or("", |(_, ident)| ident)
    }

    /// Whether this is a `did:plc` identifier.
    pub fn is_plc(&self) -> bool {
        self.0.starts_with("did:plc:")
    }

    /// Whether this is a `did:web` identifier.
    pub fn is_web(&self) -> bool {
        self.0.starts_with("did:web:")
    }
}

const fn is_ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'%' | b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_limit_is_inclusive() {
        let prefix = "did:plc:";
        let at_max = format!("{prefix}{}", "a".repeat(MAX_LEN - prefix.len()));
        assert_eq!(at_max.len(), MAX_LEN);
        assert!(Did::validate(&at_max).is_ok());
        let over = format!("{at_max}a");
        assert_eq!(Did::validate(&over), Err(err("too long (max 2048 chars)")));
    }

    #[test]
    fn accessors() {
        let did: Did = "did:plc:7iza6de2dwap2sbkpav7c6c6".parse().unwrap();
        assert_eq!(did.method(), "plc");
        assert_eq!(did.identifier(), "7iza6de2dwap2sbkpav7c6c6");
        assert!(did.is_plc());
        assert!(!did.is_web());

        let did = Did::try_from("did:web:example.com:user:alice").unwrap();
        assert_eq!(did.method(), "web");
        assert_eq!(did.identifier(), "example.com:user:alice");
        assert!(did.is_web());
        assert!(!did.is_plc());
    }

    #[test]
    fn rejects_edge_cases() {
        for bad in [
            "",
            "did:",
            "did::val",
            "did:plc",
            "did:plc:",
            "did:pl c:val",
            "did:plc:val ",
            "did:plc:vál",
            "did:plc:a/b",
        ] {
            assert!(Did::validate(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn serde_validates() {
        let did: Did = serde_json::from_str("\"did:plc:abc\"").unwrap();
        assert_eq!(serde_json::to_string(&did).unwrap(), "\"did:plc:abc\"");
        let e = serde_json::from_str::<Did>("\"did:PLC:abc\"").unwrap_err();
        assert!(e.to_string().contains("invalid did"), "{e}");
    }

    #[test]
    fn error_message_format() {
        let e = Did::validate("did:PLC:abc").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid did: method must be lowercase letters"
        );
    }
}
