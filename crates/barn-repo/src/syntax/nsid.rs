//! Namespaced identifiers for Lexicon schemas, such as `app.bsky.feed.post`.

use super::handle::check_label;
use super::{SyntaxError, SyntaxKind, string_newtype};

/// Longest NSID: a 253-char domain authority, a period and a 63-char name.
const MAX_LEN: usize = 317;
/// Longest name segment.
const MAX_NAME_LEN: usize = 63;

const fn err(reason: &'static str) -> SyntaxError {
    SyntaxError::new(SyntaxKind::Nsid, reason)
}

/// A syntactically valid NSID: a reversed domain authority followed by a
/// camel-case name, e.g. `com.atproto.repo.createRecord`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nsid(String);

string_newtype!(Nsid, Nsid::validate);

impl Nsid {
    /// Checks `s` against the NSID syntax without allocating.
    ///
    /// Only the overall length is capped: the interop vectors accept an
    /// authority longer than the 253 chars a domain may have, so no separate
    /// authority cap is applied.
    pub fn validate(s: &str) -> Result<(), SyntaxError> {
        let b = s.as_bytes();
        if b.len() > MAX_LEN {
            return Err(err("too long (max 317 chars)"));
        }
        let Some(dot) = b.iter().rposition(|&c| c == b'.') else {
            return Err(err("must have at least three segments"));
        };
        let (authority, name) = (&b[..dot], &b[dot + 1..]);

        let mut segments = 0usize;
        for label in authority.split(|&c| c == b'.') {
            check_label(label).map_err(err)?;
            segments += 1;
        }
        if segments < 2 {
            return Err(err("must have at least three segments"));
        }
        // The first segment is the domain's top-level label.
        if authority.first().is_some_and(u8::is_ascii_digit) {
            return Err(err("first segment cannot start with a digit"));
        }

        match name.first() {
            None => return Err(err("name is empty")),
            Some(c) if !c.is_ascii_alphabetic() => {
                return Err(err("name must start with a letter"));
            }
            Some(_) => {}
        }
        if name.len() > MAX_NAME_LEN {
            return Err(err("name too long (max 63 chars)"));
        }
        if !name.iter().all(u8::is_ascii_alphanumeric) {
            return Err(err("name may only contain ascii letters and digits"));
        }
        Ok(())
    }

    /// The domain authority in its reversed, dotted form: `app.bsky.feed`
    /// for `app.bsky.feed.post`.
    pub fn authority(&self) -> &str {
        self.0
            .rsplit_once('.')
            .map_or("", |(authority, _)| authority)
    }

    /// The final name segment: `post` for `app.bsky.feed.post`.
    pub fn name(&self) -> &str {
        self.0.rsplit_once('.').map_or("", |(_, name)| name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors() {
        let nsid: Nsid = "app.bsky.feed.post".parse().unwrap();
        assert_eq!(nsid.authority(), "app.bsky.feed");
        assert_eq!(nsid.name(), "post");
    }

    #[test]
    fn length_limits_are_inclusive() {
        let seg = "a".repeat(63);
        // 4 * 64 + 57 + 1 + 3 = 317
        let at_max = format!("{seg}.{seg}.{seg}.{seg}.{}.abc", "b".repeat(57));
        assert_eq!(at_max.len(), MAX_LEN);
        assert!(Nsid::validate(&at_max).is_ok());
        let over = format!("{at_max}d");
        assert_eq!(Nsid::validate(&over), Err(err("too long (max 317 chars)")));

        let name63 = format!("com.example.{}", "n".repeat(63));
        assert!(Nsid::validate(&name63).is_ok());
    }

    #[test]
    fn rejects_edge_cases() {
        for bad in [
            "", ".", "..", "a.b.", "a..b", "a.b.c-d", "a.b.1c", "a.b.c.", "-a.b.c", "a.b-.c",
            "a.b.c\n",
        ] {
            assert!(Nsid::validate(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
