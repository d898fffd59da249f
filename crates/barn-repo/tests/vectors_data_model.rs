//! The official data-model vectors: JSON ↔ DAG-CBOR ↔ CID, and which JSON
//! values the data model accepts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use barn_repo::data::{self, Value};
use base64::Engine;
use serde_json::Value as Json;

fn fixture(name: &str) -> Vec<Json> {
    let path = format!(
        "{}/testdata/interop/data-model/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let cases: Vec<Json> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(!cases.is_empty(), "{name} is empty");
    cases
}

fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(s.trim_end_matches('='))
        .unwrap()
}

#[test]
fn fixtures_encode_to_the_exact_bytes_and_cid() {
    for case in fixture("data-model-fixtures.json") {
        let json = &case["json"];
        let want = b64(case["cbor_base64"].as_str().unwrap());
        let value = data::value_from_json(json).unwrap();
        let bytes = data::encode(&value).unwrap();
        assert_eq!(bytes, want, "encoding of {json}");
        assert_eq!(
            barn_repo::cid_for_cbor(&bytes).to_string(),
            case["cid"].as_str().unwrap(),
            "cid of {json}"
        );
    }
}

#[test]
fn fixtures_decode_strictly_and_round_trip_byte_for_byte() {
    for case in fixture("data-model-fixtures.json") {
        let bytes = b64(case["cbor_base64"].as_str().unwrap());
        let value: Value = data::decode(&bytes).unwrap();
        assert_eq!(data::encode(&value).unwrap(), bytes);
        // The JSON form comes back as the fixture's JSON.
        assert_eq!(data::to_json(&value), case["json"]);
    }
}

#[test]
fn valid_json_values_are_accepted() {
    for case in fixture("data-model-valid.json") {
        let v = data::record_from_json(&case["json"]);
        assert!(v.is_ok(), "{}: {:?}", case["note"], v.err());
        // and survive a CBOR round trip
        let bytes = data::encode(&v.unwrap()).unwrap();
        data::decode(&bytes).unwrap();
    }
}

#[test]
fn invalid_json_values_are_rejected() {
    for case in fixture("data-model-invalid.json") {
        let v = data::record_from_json(&case["json"]);
        assert!(v.is_err(), "{} was accepted", case["note"]);
    }
}
