//! From a DID document (JSON) to the three things a mirror needs: the
//! `#atproto` signing key, the `#atproto_pds` endpoint and the claimed
//! handle. Pure: no IO.
//!
//! The rules follow the atproto DID spec (<https://atproto.com/specs/did>):
//! the first *valid* `#atproto` key and the first *valid* handle URI win,
//! later ones are ignored.

use std::time::Instant;

use serde_json::Value;

use barn_repo::crypto::{CryptoError, PublicKey};
use barn_repo::syntax::Handle;

use crate::error::{Error, Result};

/// The `type` a `#atproto_pds` service must have.
pub const PDS_SERVICE_TYPE: &str = "AtprotoPersonalDataServer";

/// What a DID document says, as far as a backup mirror cares.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The DID.
    pub did: String,
    /// The `#atproto` signing key: commits must verify against it.
    pub signing_key: PublicKey,
    /// The `#atproto_pds` service endpoint, trailing slash trimmed; `None`
    /// when the document names no usable PDS (the account is then broken
    /// for hosting, but its key still verifies whatever else carries its
    /// commits).
    pub pds: Option<String>,
    /// The first valid `at://` handle in `alsoKnownAs`, as written. Not
    /// verified: only a handle → DID lookup pointing back here would
    /// confirm it.
    pub handle: Option<String>,
    /// When the document was fetched (for [`Identity::parse`], when it was
    /// parsed); the cache's TTL counts from here.
    pub resolved_at: Instant,
}

impl Identity {
    /// Extracts the identity of `did` from its DID document. See
    /// [`crate::Resolver::parse_document`].
    pub fn parse(did: &str, doc: &Value) -> Result<Identity> {
        let Some(obj) = doc.as_object() else {
            return Err(Error::BadJson {
                url: format!("(document of {did})"),
                message: "not an object".into(),
            });
        };
        match obj.get("id").and_then(Value::as_str) {
            Some(id) if id == did => {}
            other => {
                return Err(Error::IdMismatch {
                    did: did.to_owned(),
                    id: other.unwrap_or_default().to_owned(),
                });
            }
        }
        let signing_key = signing_key(did, obj.get("verificationMethod"))?;
        let pds = pds_endpoint(did, obj.get("service"));
        let handle = handle(obj.get("alsoKnownAs"));
        Ok(Identity {
            did: did.to_owned(),
            signing_key,
            pds,
            handle,
            resolved_at: Instant::now(),
        })
    }
}

/// Whether a verification method or service `id` names `fragment` for
/// `did`: either the bare fragment (what `@did-plc` and older documents
/// write) or the DID followed by it (the DID Core form plc.directory uses).
fn is_fragment(did: &str, id: Option<&Value>, fragment: &str) -> bool {
    id.and_then(Value::as_str)
        .is_some_and(|id| id == fragment || id.strip_prefix(did) == Some(fragment))
}

/// The first `#atproto` verification method whose key parses.
fn signing_key(did: &str, methods: Option<&Value>) -> Result<PublicKey> {
    let mut first_problem: Option<CryptoError> = None;
    let candidates = methods
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|m| is_fragment(did, m.get("id"), "#atproto"));
    for method in candidates {
        let type_ = method.get("type").and_then(Value::as_str);
        let multibase = method.get("publicKeyMultibase").and_then(Value::as_str);
        // Deliberately not checked: `controller`. The spec says it must be
        // the DID, but the reference resolvers ignore it and the key is only
        // ever used for this DID's own commits, so rejecting on it would only
        // make barn disagree with the network.
        let parsed = match (type_, multibase) {
            (Some(t), Some(mb)) => PublicKey::from_verification_method(t, mb),
            (None, _) => Err(CryptoError::UnsupportedSuite(String::new())),
            (Some(_), None) => Err(CryptoError::BadMultibase("missing publicKeyMultibase")),
        };
        match parsed {
            Ok(key) => return Ok(key),
            Err(e) => {
                tracing::debug!(did, error = %e, "skipping unusable #atproto key");
                first_problem.get_or_insert(e);
            }
        }
    }
    Err(match first_problem {
        Some(source) => Error::BadSigningKey {
            did: did.to_owned(),
            source,
        },
        None => Error::NoSigningKey {
            did: did.to_owned(),
        },
    })
}

/// The first `#atproto_pds` service of the right type with an http(s)
/// endpoint, trailing slash trimmed.
fn pds_endpoint(did: &str, services: Option<&Value>) -> Option<String> {
    let service = services
        .and_then(Value::as_array)?
        .iter()
        .filter(|s| is_fragment(did, s.get("id"), "#atproto_pds"))
        .find(|s| s.get("type").and_then(Value::as_str) == Some(PDS_SERVICE_TYPE))?;
    let endpoint = service.get("serviceEndpoint").and_then(Value::as_str);
    match endpoint.map(valid_endpoint) {
        Some(Some(url)) => Some(url),
        _ => {
            // A broken PDS entry does not make the key useless, so it is
            // reported as "no PDS" rather than failing the whole document.
            tracing::debug!(did, endpoint = ?endpoint, "ignoring unusable #atproto_pds endpoint");
            None
        }
    }
}

/// `endpoint` without its trailing slash, if it is an absolute http(s) URL
/// with a host and no query, fragment or credentials (the spec allows only
/// scheme, host and port; a path prefix is tolerated because some
/// self-hosters use one and the endpoint is only ever joined with `/xrpc/`).
fn valid_endpoint(endpoint: &str) -> Option<String> {
    let url = reqwest::Url::parse(endpoint).ok()?;
    let ok = matches!(url.scheme(), "https" | "http")
        && url.host_str().is_some_and(|h| !h.is_empty())
        && url.query().is_none()
        && url.fragment().is_none()
        && url.username().is_empty()
        && url.password().is_none();
    ok.then(|| endpoint.trim_end_matches('/').to_owned())
}

/// The first `at://` entry of `alsoKnownAs` that is a valid handle.
fn handle(also_known_as: Option<&Value>) -> Option<String> {
    also_known_as
        .and_then(Value::as_array)?
        .iter()
        .filter_map(Value::as_str)
        .filter_map(|uri| uri.strip_prefix("at://"))
        .find(|h| Handle::validate(h).is_ok())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use barn_repo::crypto::{KeyType, PrivateKey};
    use serde_json::json;

    const DID: &str = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";

    /// A plc.directory-style document: Multikey, full-DID ids.
    fn multikey_doc(key: &PublicKey) -> Value {
        json!({
            "@context": ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/multikey/v1"],
            "id": DID,
            "alsoKnownAs": ["at://alice.example.com"],
            "verificationMethod": [{
                "id": format!("{DID}#atproto"),
                "type": "Multikey",
                "controller": DID,
                "publicKeyMultibase": key.to_multikey(),
            }],
            "service": [{
                "id": "#atproto_pds",
                "type": "AtprotoPersonalDataServer",
                "serviceEndpoint": "https://pds.example.com/",
            }],
        })
    }

    /// Raw key bytes in base58btc, no multicodec: the legacy suites' form.
    /// The spec says uncompressed; @did-plc/server 0.0.1 writes compressed.
    /// barn accepts both, so both are produced here.
    fn legacy_multibase(key: &PublicKey, compressed: bool) -> String {
        let raw = key.compressed_bytes();
        let bytes = match (compressed, key.key_type()) {
            (true, _) => raw.to_vec(),
            (false, KeyType::P256) => p256::ecdsa::VerifyingKey::from_sec1_bytes(&raw)
                .unwrap()
                .to_encoded_point(false)
                .as_bytes()
                .to_vec(),
            (false, KeyType::K256) => secp256k1::PublicKey::from_slice(&raw)
                .unwrap()
                .serialize_uncompressed()
                .to_vec(),
        };
        multibase::encode(multibase::Base::Base58Btc, bytes)
    }

    fn legacy_doc(key: &PublicKey, compressed: bool) -> Value {
        json!({
            "@context": ["https://www.w3.org/ns/did/v1"],
            "id": DID,
            "alsoKnownAs": ["https://not-a-handle.example", "at://bob.test"],
            "verificationMethod": [{
                "id": "#atproto",
                "type": key.key_type().legacy_suite(),
                "controller": DID,
                "publicKeyMultibase": legacy_multibase(key, compressed),
            }],
            "service": [{
                "id": "#atproto_pds",
                "type": "AtprotoPersonalDataServer",
                "serviceEndpoint": "http://localhost:2583",
            }],
        })
    }

    fn key(kt: KeyType, seed: u64) -> PublicKey {
        PrivateKey::from_seed(kt, seed).public_key()
    }

    #[test]
    fn multikey_documents_parse_on_both_curves() {
        for kt in [KeyType::K256, KeyType::P256] {
            let k = key(kt, 1);
            let id = Identity::parse(DID, &multikey_doc(&k)).unwrap();
            assert_eq!(id.did, DID);
            assert_eq!(id.signing_key, k);
            assert_eq!(id.signing_key.key_type(), kt);
            assert_eq!(id.pds.as_deref(), Some("https://pds.example.com"));
            assert_eq!(id.handle.as_deref(), Some("alice.example.com"));
        }
    }

    #[test]
    fn legacy_documents_parse_on_both_curves() {
        for kt in [KeyType::K256, KeyType::P256] {
            for compressed in [true, false] {
                let k = key(kt, 2);
                let id = Identity::parse(DID, &legacy_doc(&k, compressed)).unwrap();
                assert_eq!(id.signing_key, k);
                assert_eq!(id.pds.as_deref(), Some("http://localhost:2583"));
                // The first entry is not an at:// URI, so the second wins.
                assert_eq!(id.handle.as_deref(), Some("bob.test"));
            }
        }
    }

    #[test]
    fn the_spec_example_legacy_key_equals_its_multikey() {
        // Both encodings of one K-256 key, from the atproto DID spec.
        let legacy = "zQYEBzXeuTM9UR3rfvNag6L3RNAs5pQZyYPsomTsgQhsxLdEgCrPTLgFna8yqCnxPpNT7DBk6Ym3dgPKNu86vt9GR";
        let multikey = "zQ3shXjHeiBuRCKmM36cuYnm7YEMzhGnCmCyW92sRJ9pribSF";
        let mut doc = multikey_doc(&key(KeyType::K256, 0));
        doc["verificationMethod"][0]["type"] = json!("EcdsaSecp256k1VerificationKey2019");
        doc["verificationMethod"][0]["publicKeyMultibase"] = json!(legacy);
        let from_legacy = Identity::parse(DID, &doc).unwrap().signing_key;
        assert_eq!(from_legacy, PublicKey::from_multikey(multikey).unwrap());
    }

    #[test]
    fn wrong_or_missing_id_is_rejected() {
        let k = key(KeyType::K256, 3);
        let other = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa";
        let err = Identity::parse(other, &multikey_doc(&k)).unwrap_err();
        assert_eq!(
            err,
            Error::IdMismatch {
                did: other.into(),
                id: DID.into()
            }
        );
        assert_eq!(err.reason(), "id_mismatch");
        let mut doc = multikey_doc(&k);
        doc.as_object_mut().unwrap().remove("id");
        assert_eq!(
            Identity::parse(DID, &doc).unwrap_err().reason(),
            "id_mismatch"
        );
        assert_eq!(
            Identity::parse(DID, &json!([1, 2])).unwrap_err().reason(),
            "bad_json"
        );
    }

    #[test]
    fn missing_key_is_rejected() {
        let k = key(KeyType::K256, 4);
        let mut doc = multikey_doc(&k);
        doc.as_object_mut().unwrap().remove("verificationMethod");
        assert_eq!(
            Identity::parse(DID, &doc).unwrap_err(),
            Error::NoSigningKey { did: DID.into() }
        );
        // A key under another fragment, or another DID's #atproto, is not it.
        let mut doc = multikey_doc(&k);
        doc["verificationMethod"][0]["id"] = json!("#atproto_label");
        assert_eq!(
            Identity::parse(DID, &doc).unwrap_err().reason(),
            "no_signing_key"
        );
        doc["verificationMethod"][0]["id"] = json!("did:plc:bbbbbbbbbbbbbbbbbbbbbbbb#atproto");
        assert_eq!(
            Identity::parse(DID, &doc).unwrap_err().reason(),
            "no_signing_key"
        );
    }

    #[test]
    fn unusable_keys_are_skipped_then_reported() {
        let k = key(KeyType::P256, 5);
        let mut doc = multikey_doc(&k);
        let good = doc["verificationMethod"][0].clone();
        let mut bad = good.clone();
        bad["type"] = json!("Ed25519VerificationKey2020");
        // Only an unusable one: its problem is the error.
        doc["verificationMethod"] = json!([bad.clone()]);
        let err = Identity::parse(DID, &doc).unwrap_err();
        assert!(
            matches!(
                &err,
                Error::BadSigningKey { source: CryptoError::UnsupportedSuite(t), .. }
                    if t == "Ed25519VerificationKey2020"
            ),
            "{err}"
        );
        assert_eq!(err.reason(), "bad_signing_key");
        // An unusable one then a good one: the first valid key wins.
        doc["verificationMethod"] = json!([bad, good]);
        assert_eq!(Identity::parse(DID, &doc).unwrap().signing_key, k);
        // A legacy type with a Multikey value (multicodec prefix) is a length error.
        let mut doc = multikey_doc(&k);
        doc["verificationMethod"][0]["type"] = json!("EcdsaSecp256r1VerificationKey2019");
        assert!(matches!(
            Identity::parse(DID, &doc).unwrap_err(),
            Error::BadSigningKey {
                source: CryptoError::BadKeyLength { .. },
                ..
            }
        ));
    }

    #[test]
    fn missing_or_unusable_service_means_no_pds() {
        let k = key(KeyType::K256, 6);
        let mut doc = multikey_doc(&k);
        doc.as_object_mut().unwrap().remove("service");
        let id = Identity::parse(DID, &doc).unwrap();
        assert_eq!(id.pds, None);
        assert_eq!(id.signing_key, k, "the key is still usable");

        for (field, value) in [
            ("type", json!("AtprotoLabeler")),
            ("id", json!("#atproto_labeler")),
            ("serviceEndpoint", json!("ftp://pds.example.com")),
            ("serviceEndpoint", json!("not a url")),
            ("serviceEndpoint", json!("https://user:pw@pds.example.com")),
            ("serviceEndpoint", json!({"uri": "https://pds.example.com"})),
        ] {
            let mut doc = multikey_doc(&k);
            doc["service"][0][field] = value.clone();
            assert_eq!(
                Identity::parse(DID, &doc).unwrap().pds,
                None,
                "{field}: {value}"
            );
        }

        // The first *matching* service is used: a labeler entry before it is
        // skipped, and the DID-prefixed id form is accepted.
        let mut doc = multikey_doc(&k);
        doc["service"] = json!([
            {"id": "#atproto_labeler", "type": "AtprotoLabeler", "serviceEndpoint": "https://labeler.example"},
            {"id": format!("{DID}#atproto_pds"), "type": "AtprotoPersonalDataServer", "serviceEndpoint": "https://b.example:8443"},
            {"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": "https://c.example"},
        ]);
        assert_eq!(
            Identity::parse(DID, &doc).unwrap().pds.as_deref(),
            Some("https://b.example:8443")
        );
    }

    #[test]
    fn handle_is_the_first_valid_at_uri() {
        let k = key(KeyType::K256, 7);
        let mut doc = multikey_doc(&k);
        doc["alsoKnownAs"] = json!(["at://not_valid", "at://Carol.Example.com", "at://dave.test"]);
        assert_eq!(
            Identity::parse(DID, &doc).unwrap().handle.as_deref(),
            Some("Carol.Example.com")
        );
        doc["alsoKnownAs"] = json!([]);
        assert_eq!(Identity::parse(DID, &doc).unwrap().handle, None);
        doc.as_object_mut().unwrap().remove("alsoKnownAs");
        assert_eq!(Identity::parse(DID, &doc).unwrap().handle, None);
    }
}
