//! `at://` URIs naming a repository, a collection or a record.

use super::{AtIdentifier, Nsid, RecordKey, SyntaxError, SyntaxKind, string_newtype};

/// Longest AT URI the spec allows (8 KB).
const MAX_LEN: usize = 8192;
const SCHEME: &str = "at://";

const fn err(reason: &'static str) -> SyntaxError {
    SyntaxError::new(SyntaxKind::AtUri, reason)
}

/// A valid AT URI in the restricted form Lexicon uses:
/// `at://AUTHORITY[/COLLECTION[/RKEY]]`.
///
/// The authority is a DID or handle, the collection an NSID and the last
/// segment a record key. Query strings, fragments, trailing slashes and
/// deeper paths are rejected, as the interop vectors require.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AtUri(String);

string_newtype!(AtUri, AtUri::validate);

/// Splits a string already known to start with `at://` into its parts.
fn split(rest: &str) -> (&str, Option<&str>, Option<&str>) {
    match rest.split_once('/') {
        None => (rest, None, None),
        Some((authority, path)) => match path.split_once('/') {
            None => (authority, Some(path), None),
            Some((collection, rkey)) => (authority, Some(collection), Some(rkey)),
        },
    }
}

impl AtUri {
    /// Checks `s` against the AT URI syntax without allocating.
    pub fn validate(s: &str) -> Result<(), SyntaxError> {
        if s.len() > MAX_LEN {
            return Err(err("too long (max 8192 chars)"));
        }
        let Some(rest) = s.strip_prefix(SCHEME) else {
            return Err(err("must start with \"at://\""));
        };
        let (authority, collection, rkey) = split(rest);
        if AtIdentifier::validate(authority).is_err() {
            return Err(err("authority is not a valid did or handle"));
        }
        if let Some(collection) = collection
            && Nsid::validate(collection).is_err()
        {
            return Err(err("collection is not a valid nsid"));
        }
        // A '/' inside the record key is also caught here: it is not a
        // record-key character, which is what rejects deeper paths.
        if let Some(rkey) = rkey
            && RecordKey::validate(rkey).is_err()
        {
            return Err(err("record key is not valid"));
        }
        Ok(())
    }

    /// Builds the URI of a repository, a collection or a record.
    ///
    /// Fails only when a record key is given without a collection.
    pub fn from_parts(
        authority: &AtIdentifier,
        collection: Option<&Nsid>,
        rkey: Option<&RecordKey>,
    ) -> Result<AtUri, SyntaxError> {
        // Lengths of valid parts (2048 + 317 + 512 plus separators) cannot
        // reach the 8 KB cap, so no length check is needed.
        let mut s = String::with_capacity(
            SCHEME.len()
                + authority.as_str().len()
                + collection.map_or(0, |c| c.as_str().len() + 1)
                + rkey.map_or(0, |r| r.as_str().len() + 1),
        );
        s.push_str(SCHEME);
        s.push_str(authority.as_str());
        match (collection, rkey) {
            (None, Some(_)) => return Err(err("record key requires a collection")),
            (None, None) => {}
            (Some(collection), rkey) => {
                s.push('/');
                s.push_str(collection.as_str());
                if let Some(rkey) = rkey {
                    s.push('/');
                    s.push_str(rkey.as_str());
                }
            }
        }
        Ok(AtUri(s))
    }

    fn parts(&self) -> (&str, Option<&str>, Option<&str>) {
        split(self.0.get(SCHEME.len()..).unwrap_or_default())
    }

    /// The authority: a DID or a handle.
    pub fn authority(&self) -> &str {
        self.parts().0
    }

    /// The collection NSID, if the URI has a path.
    pub fn collection(&self) -> Option<&str> {
        self.parts().1
    }

    /// The record key, if the URI names a record.
    pub fn rkey(&self) -> Option<&str> {
        self.parts().2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors() {
        let uri: AtUri = "at://did:plc:abc/app.bsky.feed.post/3jzfcijpj2z2a"
            .parse()
            .unwrap();
        assert_eq!(uri.authority(), "did:plc:abc");
        assert_eq!(uri.collection(), Some("app.bsky.feed.post"));
        assert_eq!(uri.rkey(), Some("3jzfcijpj2z2a"));

        let uri = AtUri::try_from("at://alice.test/app.bsky.feed.post").unwrap();
        assert_eq!(uri.authority(), "alice.test");
        assert_eq!(uri.collection(), Some("app.bsky.feed.post"));
        assert_eq!(uri.rkey(), None);

        let uri = AtUri::try_from("at://alice.test").unwrap();
        assert_eq!(uri.authority(), "alice.test");
        assert_eq!(uri.collection(), None);
        assert_eq!(uri.rkey(), None);
    }

    #[test]
    fn from_parts_round_trips() {
        let did = AtIdentifier::try_from("did:plc:abc").unwrap();
        let nsid = Nsid::try_from("app.bsky.feed.post").unwrap();
        let rkey = RecordKey::try_from("self").unwrap();

        let uri = AtUri::from_parts(&did, Some(&nsid), Some(&rkey)).unwrap();
        assert_eq!(uri.as_str(), "at://did:plc:abc/app.bsky.feed.post/self");
        assert_eq!(AtUri::validate(uri.as_str()), Ok(()));

        let uri = AtUri::from_parts(&did, Some(&nsid), None).unwrap();
        assert_eq!(uri.as_str(), "at://did:plc:abc/app.bsky.feed.post");

        let uri = AtUri::from_parts(&did, None, None).unwrap();
        assert_eq!(uri.as_str(), "at://did:plc:abc");

        assert_eq!(
            AtUri::from_parts(&did, None, Some(&rkey)),
            Err(err("record key requires a collection"))
        );
    }

    #[test]
    fn length_limits() {
        // The component limits keep any valid URI far below 8 KB, so the cap
        // only serves as an early, cheap reject of huge input.
        let max_parts = format!(
            "at://did:plc:{}/app.bsky.feed.post/{}",
            "a".repeat(2048 - "did:plc:".len()),
            "o".repeat(512)
        );
        assert!(AtUri::validate(&max_parts).is_ok());
        let over = format!(
            "at://did:plc:abc/app.bsky.feed.post/{}",
            "o".repeat(MAX_LEN)
        );
        assert_eq!(
            AtUri::validate(&over),
            Err(err("too long (max 8192 chars)"))
        );
        let rkey_513 = format!("at://did:plc:abc/app.bsky.feed.post/{}", "o".repeat(513));
        assert_eq!(
            AtUri::validate(&rkey_513),
            Err(err("record key is not valid"))
        );
    }

    #[test]
    fn rejects_edge_cases() {
        for bad in [
            "",
            "at://",
            "at:///",
            "at://alice.test?x=1",
            "at://did:plc:abc/app.bsky.feed.post?x=1",
            "at://did:plc:abc/app.bsky.feed.post/self#frag",
            "at://did:plc:abc/app.bsky.feed.post/self/",
            "at://did:plc:abc//self",
            // In the interop file, but read there as a comment line.
            "#at://did:plc:asdf123",
        ] {
            assert!(AtUri::validate(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
