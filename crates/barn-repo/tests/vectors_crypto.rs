//! Interop vectors for `barn_repo::crypto`: the atproto signature fixtures
//! and the W3C did:key test keys, read from `testdata/interop/crypto/`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use barn_repo::crypto::{CryptoError, KeyType, PrivateKey, PublicKey};
use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::Value;

const SIGNATURE_FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/testdata/interop/crypto/signature-fixtures.json"
);
const W3C_K256: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/testdata/interop/crypto/w3c_didkey_K256.json"
);
const W3C_P256: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/testdata/interop/crypto/w3c_didkey_P256.json"
);

/// The fixtures use standard-alphabet base64 without padding; accept padding
/// too so a regenerated fixture file does not break the test for no reason.
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn load(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let cases: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert!(!cases.is_empty(), "{path} has no cases");
    cases
}

fn str_field<'a>(case: &'a Value, name: &str) -> &'a str {
    case[name]
        .as_str()
        .unwrap_or_else(|| panic!("missing string field {name} in {case}"))
}

/// One signature fixture, decoded.
struct SigCase {
    comment: String,
    key_type: KeyType,
    suite: String,
    did: String,
    legacy_multibase: String,
    message: Vec<u8>,
    signature: Vec<u8>,
    valid: bool,
    tags: Vec<String>,
}

fn signature_cases() -> Vec<SigCase> {
    load(SIGNATURE_FIXTURES)
        .iter()
        .map(|case| SigCase {
            comment: str_field(case, "comment").to_owned(),
            key_type: KeyType::from_jwt_alg(str_field(case, "algorithm")).unwrap(),
            suite: str_field(case, "didDocSuite").to_owned(),
            did: str_field(case, "publicKeyDid").to_owned(),
            legacy_multibase: str_field(case, "publicKeyMultibase").to_owned(),
            message: B64.decode(str_field(case, "messageBase64")).unwrap(),
            signature: B64.decode(str_field(case, "signatureBase64")).unwrap(),
            valid: case["validSignature"].as_bool().unwrap(),
            tags: case["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_owned())
                .collect(),
        })
        .collect()
}

#[test]
fn signature_fixtures_cover_both_curves_and_both_outcomes() {
    let cases = signature_cases();
    for kt in [KeyType::K256, KeyType::P256] {
        assert!(cases.iter().any(|c| c.key_type == kt && c.valid));
        assert!(cases.iter().any(|c| c.key_type == kt && !c.valid));
    }
}

#[test]
fn signature_fixtures_match_expected_validity_via_did_key() {
    for case in signature_cases() {
        let key = PublicKey::from_did_key(&case.did).unwrap();
        assert_eq!(key.key_type(), case.key_type, "{}", case.comment);
        let result = key.verify(&case.message, &case.signature);
        assert_eq!(result.is_ok(), case.valid, "{}: {result:?}", case.comment);
    }
}

#[test]
fn signature_fixtures_match_expected_validity_via_legacy_multibase() {
    for case in signature_cases() {
        // The fixture's publicKeyMultibase is the legacy form: raw key bytes,
        // no multicodec prefix, curve given by the suite.
        let by_type = PublicKey::from_legacy_multibase(case.key_type, &case.legacy_multibase)
            .unwrap_or_else(|e| panic!("{}: {e}", case.comment));
        let by_suite = PublicKey::from_verification_method(&case.suite, &case.legacy_multibase)
            .unwrap_or_else(|e| panic!("{}: {e}", case.comment));
        assert_eq!(by_type, by_suite, "{}", case.comment);
        for key in [by_type, by_suite] {
            let result = key.verify(&case.message, &case.signature);
            assert_eq!(result.is_ok(), case.valid, "{}: {result:?}", case.comment);
        }
    }
}

#[test]
fn signature_fixture_legacy_and_did_key_forms_are_the_same_key() {
    for case in signature_cases() {
        let from_did = PublicKey::from_did_key(&case.did).unwrap();
        let from_legacy =
            PublicKey::from_legacy_multibase(case.key_type, &case.legacy_multibase).unwrap();
        assert_eq!(from_did, from_legacy, "{}", case.comment);
        assert_eq!(from_legacy.to_did_key(), case.did, "{}", case.comment);
        assert_eq!(case.suite, case.key_type.legacy_suite(), "{}", case.comment);
        // The legacy string must not be mistaken for a Multikey.
        assert!(
            PublicKey::from_multikey(&case.legacy_multibase).is_err(),
            "{}",
            case.comment
        );
    }
}

#[test]
fn invalid_signature_fixtures_fail_for_the_tagged_reason() {
    let mut checked = 0;
    for case in signature_cases().into_iter().filter(|c| !c.valid) {
        let key = PublicKey::from_did_key(&case.did).unwrap();
        let err = key.verify(&case.message, &case.signature).unwrap_err();
        if case.tags.iter().any(|t| t == "high-s") {
            assert_eq!(err, CryptoError::HighS, "{}", case.comment);
            checked += 1;
        } else if case.tags.iter().any(|t| t == "der-encoded") {
            assert!(
                matches!(err, CryptoError::BadSignatureLength(n) if n != 64),
                "{}: {err:?}",
                case.comment
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "no tagged invalid fixtures found");
}

#[test]
fn w3c_k256_private_keys_yield_expected_did_keys() {
    for case in load(W3C_K256) {
        let hex = str_field(&case, "privateKeyBytesHex");
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let key = PrivateKey::from_bytes(KeyType::K256, &bytes).unwrap();
        let expected = str_field(&case, "publicDidKey");
        assert_eq!(key.public_key().to_did_key(), expected);
        assert_eq!(key.to_bytes().as_slice(), bytes.as_slice());
        let parsed = PublicKey::from_did_key(expected).unwrap();
        assert_eq!(parsed, key.public_key());
        parsed.verify(b"w3c", &key.sign(b"w3c")).unwrap();
    }
}

#[test]
fn w3c_p256_private_keys_yield_expected_did_keys() {
    for case in load(W3C_P256) {
        // This file gives the private key in base58btc (no multibase prefix).
        let bytes = multibase::Base::Base58Btc
            .decode(str_field(&case, "privateKeyBytesBase58"))
            .unwrap();
        let key = PrivateKey::from_bytes(KeyType::P256, &bytes).unwrap();
        let expected = str_field(&case, "publicDidKey");
        assert_eq!(key.public_key().to_did_key(), expected);
        let parsed = PublicKey::from_did_key(expected).unwrap();
        assert_eq!(parsed, key.public_key());
        parsed.verify(b"w3c", &key.sign(b"w3c")).unwrap();
    }
}
