//! Identifiers that may be either a DID or a handle (`at-identifier`).

use std::fmt;
use std::str::FromStr;

use super::{Did, Handle, SyntaxError, SyntaxKind};

/// A DID or a handle, as accepted by `at-identifier` Lexicon fields and the
/// authority part of AT URIs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AtIdentifier {
    /// A DID, such as `did:plc:7iza6de2dwap2sbkpav7c6c6`.
    Did(Did),
    /// A handle, such as `alice.bsky.social`.
    Handle(Handle),
}

/// Handles never contain a colon, so the `did:` prefix decides which syntax
/// applies and there is no need to try both.
fn is_did_shaped(s: &str) -> bool {
    s.starts_with("did:")
}

/// Re-labels an inner error so callers see the type they asked for.
const fn relabel(e: SyntaxError) -> SyntaxError {
    SyntaxError::new(SyntaxKind::AtIdentifier, e.reason)
}

impl AtIdentifier {
    /// Checks that `s` is a valid DID or handle, without allocating.
    pub fn validate(s: &str) -> Result<(), SyntaxError> {
        if is_did_shaped(s) {
            Did::validate(s).map_err(relabel)
        } else {
            Handle::validate(s).map_err(relabel)
        }
    }

    /// The identifier as a string.
    pub fn as_str(&self) -> &str {
        match self {
            AtIdentifier::Did(did) => did.as_str(),
            AtIdentifier::Handle(handle) => handle.as_str(),
        }
    }

    /// Consumes the value and returns the identifier string.
    pub fn into_string(self) -> String {
        match self {
            AtIdentifier::Did(did) => did.into_string(),
            AtIdentifier::Handle(handle) => handle.into_string(),
        }
    }

    /// Whether this is a DID.
    pub fn is_did(&self) -> bool {
        matches!(self, AtIdentifier::Did(_))
    }

    /// The DID, if this is one.
    pub fn as_did(&self) -> Option<&Did> {
        match self {
            AtIdentifier::Did(did) => Some(did),
            AtIdentifier::Handle(_) => None,
        }
    }

    /// The handle, if this is one.
    pub fn as_handle(&self) -> Option<&Handle> {
        match self {
            AtIdentifier::Did(_) => None,
            AtIdentifier::Handle(handle) => Some(handle),
        }
    }
}

impl fmt::Display for AtIdentifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for AtIdentifier {
    type Error = SyntaxError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        if is_did_shaped(&s) {
            Did::try_from(s).map(AtIdentifier::Did).map_err(relabel)
        } else {
            Handle::try_from(s)
                .map(AtIdentifier::Handle)
                .map_err(relabel)
        }
    }
}

impl TryFrom<&str> for AtIdentifier {
    type Error = SyntaxError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        if is_did_shaped(s) {
            s.parse().map(AtIdentifier::Did).map_err(relabel)
        } else {
            s.parse().map(AtIdentifier::Handle).map_err(relabel)
        }
    }
}

impl FromStr for AtIdentifier {
    type Err = SyntaxError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AtIdentifier::try_from(s)
    }
}

impl AsRef<str> for AtIdentifier {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl From<Did> for AtIdentifier {
    fn from(did: Did) -> Self {
        AtIdentifier::Did(did)
    }
}

impl From<Handle> for AtIdentifier {
    fn from(handle: Handle) -> Self {
        AtIdentifier::Handle(handle)
    }
}

impl From<AtIdentifier> for String {
    fn from(id: AtIdentifier) -> String {
        id.into_string()
    }
}

impl serde::Serialize for AtIdentifier {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for AtIdentifier {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        AtIdentifier::try_from(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_variant() {
        let id: AtIdentifier = "did:plc:abc".parse().unwrap();
        assert!(id.is_did());
        assert_eq!(id.as_did().map(Did::as_str), Some("did:plc:abc"));
        assert!(id.as_handle().is_none());

        let id = AtIdentifier::try_from("alice.test").unwrap();
        assert!(!id.is_did());
        assert_eq!(id.as_handle().map(Handle::as_str), Some("alice.test"));
        assert_eq!(id.to_string(), "alice.test");
    }

    #[test]
    fn errors_carry_the_at_identifier_kind() {
        let e = AtIdentifier::validate("did:PLC:abc").unwrap_err();
        assert_eq!(e.kind, SyntaxKind::AtIdentifier);
        assert_eq!(
            e.to_string(),
            "invalid at-identifier: method must be lowercase letters"
        );
        let e = AtIdentifier::try_from(String::from("nodots")).unwrap_err();
        assert_eq!(e.kind, SyntaxKind::AtIdentifier);
    }

    #[test]
    fn serde_round_trip() {
        let ids: Vec<AtIdentifier> =
            serde_json::from_str(r#"["did:web:example.com","bob.example.com"]"#).unwrap();
        assert!(ids[0].is_did());
        assert!(!ids[1].is_did());
        assert_eq!(
            serde_json::to_string(&ids).unwrap(),
            r#"["did:web:example.com","bob.example.com"]"#
        );
        assert!(serde_json::from_str::<AtIdentifier>("\"bob\"").is_err());
    }
}
