//! Validated string types for the atproto identifier and value syntaxes.
//!
//! Every string-shaped identifier that appears in repositories, records and
//! event streams (DIDs, handles, NSIDs, record keys, TIDs, AT URIs, datetimes,
//! language tags, CID strings and generic URIs) gets an owned newtype here
//! that can only be built from a string that passed validation, so code that
//! holds one never has to re-check it.
//!
//! The rules follow the atproto specifications and, where prose and reference
//! behaviour differ, the shared interop test vectors (which the integration
//! tests run in full):
//!
//! - DID: <https://atproto.com/specs/did>
//! - handle: <https://atproto.com/specs/handle>
//! - NSID: <https://atproto.com/specs/nsid>
//! - record key: <https://atproto.com/specs/record-key>
//! - TID: <https://atproto.com/specs/tid>
//! - AT URI: <https://atproto.com/specs/at-uri-scheme>
//! - datetime, language, CID and URI string formats:
//!   <https://atproto.com/specs/lexicon#string-formats>
//!
//! Each type has a `validate(&str)` associated function that checks a
//! borrowed string without allocating; the validators are hand-written byte
//! scanners because they run on every firehose event.

use std::fmt;

mod atidentifier;
mod aturi;
mod cidstr;
mod datetime;
mod did;
mod handle;
mod language;
mod nsid;
mod rkey;
mod tid;
mod uri;

pub use atidentifier::AtIdentifier;
pub use aturi::AtUri;
pub use cidstr::validate_cid_str;
pub use datetime::Datetime;
pub use did::Did;
pub use handle::Handle;
pub use language::Language;
pub use nsid::Nsid;
pub use rkey::RecordKey;
pub use tid::Tid;
pub use uri::validate_uri;

/// Which syntax a [`SyntaxError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SyntaxKind {
    /// A decentralized identifier ([`Did`]).
    Did,
    /// A domain-name handle ([`Handle`]).
    Handle,
    /// A namespaced identifier ([`Nsid`]).
    Nsid,
    /// A record key ([`RecordKey`]).
    RecordKey,
    /// A timestamp identifier ([`Tid`]).
    Tid,
    /// An `at://` URI ([`AtUri`]).
    AtUri,
    /// A datetime string ([`Datetime`]).
    Datetime,
    /// A BCP-47 language tag ([`Language`]).
    Language,
    /// A CID in string form ([`validate_cid_str`]).
    Cid,
    /// A generic URI ([`validate_uri`]).
    Uri,
    /// A DID or handle ([`AtIdentifier`]).
    AtIdentifier,
}

impl SyntaxKind {
    /// Lower-case human name used in error messages.
    pub const fn name(self) -> &'static str {
        match self {
            SyntaxKind::Did => "did",
            SyntaxKind::Handle => "handle",
            SyntaxKind::Nsid => "nsid",
            SyntaxKind::RecordKey => "record key",
            SyntaxKind::Tid => "tid",
            SyntaxKind::AtUri => "at-uri",
            SyntaxKind::Datetime => "datetime",
            SyntaxKind::Language => "language tag",
            SyntaxKind::Cid => "cid",
            SyntaxKind::Uri => "uri",
            SyntaxKind::AtIdentifier => "at-identifier",
        }
    }
}

impl fmt::Display for SyntaxKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A string failed validation against one of the atproto syntaxes.
///
/// The reason is a static string so that rejecting input (which on a firehose
/// is routine, not exceptional) never allocates.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: {reason}")]
pub struct SyntaxError {
    /// The syntax that was being checked.
    pub kind: SyntaxKind,
    /// Why the input was rejected, lower-case and without trailing period.
    pub reason: &'static str,
}

impl SyntaxError {
    /// Builds an error of the given kind.
    pub const fn new(kind: SyntaxKind, reason: &'static str) -> Self {
        SyntaxError { kind, reason }
    }
}

/// Implements the shared string-newtype surface (accessors, conversions,
/// formatting and validating serde) for a `struct T(String)`.
///
/// `$check` is the function that decides whether a string may become a `T`;
/// it is usually `T::validate`, but types whose full check is stricter than
/// their cheap syntax check pass that stricter function instead.
macro_rules! string_newtype {
    ($ty:ident, $check:path) => {
        impl $ty {
            /// Returns the validated string.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Consumes the value and returns the validated string.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl ::std::str::FromStr for $ty {
            type Err = $crate::syntax::SyntaxError;

            fn from_str(s: &str) -> ::std::result::Result<Self, Self::Err> {
                $check(s)?;
                Ok($ty(s.to_owned()))
            }
        }

        impl ::std::convert::TryFrom<String> for $ty {
            type Error = $crate::syntax::SyntaxError;

            fn try_from(s: String) -> ::std::result::Result<Self, Self::Error> {
                $check(&s)?;
                Ok($ty(s))
            }
        }

        impl ::std::convert::TryFrom<&str> for $ty {
            type Error = $crate::syntax::SyntaxError;

            fn try_from(s: &str) -> ::std::result::Result<Self, Self::Error> {
                s.parse()
            }
        }

        impl ::std::convert::AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl ::std::borrow::Borrow<str> for $ty {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl ::std::convert::From<$ty> for String {
            fn from(value: $ty) -> String {
                value.0
            }
        }

        impl ::serde::Serialize for $ty {
            fn serialize<S: ::serde::Serializer>(
                &self,
                serializer: S,
            ) -> ::std::result::Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(
                deserializer: D,
            ) -> ::std::result::Result<Self, D::Error> {
                let s = <String as ::serde::Deserialize>::deserialize(deserializer)?;
                $ty::try_from(s).map_err(<D::Error as ::serde::de::Error>::custom)
            }
        }
    };
}

use string_newtype;
