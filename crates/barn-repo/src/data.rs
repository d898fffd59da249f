//! The atproto data model: DAG-CBOR values, strictly decoded, and their
//! JSON form.
//!
//! Values are [`ipld_core::ipld::Ipld`] (re-exported as [`Value`]), decoded
//! by barn's strict decoder (the rules of [`crate::cbor::validate`]) and
//! encoded by serde_ipld_dagcbor; a value that decodes re-encodes to the
//! identical bytes, which is what keeps CIDs stable.
//!
//! # Tricky bits
//! - JSON has one number type. `123.0` is an integer in the data model
//!   (the interop vectors say so), `123.5` is rejected: atproto has no
//!   floats.
//! - `{"$link": …}` and `{"$bytes": …}` are special only with exactly that
//!   one key; anything else in the object makes it invalid, not a plain map.
//! - `$bytes` is base64 without padding; padded input is accepted, output is
//!   never padded.

use base64::Engine;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};
use cid::Cid;
pub use ipld_core::ipld::Ipld as Value;
use std::collections::BTreeMap;

use crate::{Error, Result, cbor};

/// Base64 for `$bytes`: standard alphabet, padding optional on input.
const BYTES_B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The largest integer JSON can carry exactly (2^53).
const MAX_SAFE_FLOAT_INT: f64 = 9_007_199_254_740_992.0;

/// Decodes one strict DAG-CBOR value: validated and built in one pass by
/// barn's own decoder (the strictness of [`cbor::validate`], without a
/// second, generic pass through serde).
pub fn decode(bytes: &[u8]) -> Result<Value> {
    let mut d = cbor::Decoder::new(bytes);
    let value = d.read_value(cbor::DEFAULT_MAX_DEPTH)?;
    d.finish()?;
    Ok(value)
}

/// Encodes a value as canonical DAG-CBOR. Floats are refused.
pub fn encode(value: &Value) -> Result<Vec<u8>> {
    check_no_floats(value)?;
    serde_ipld_dagcbor::to_vec(value).map_err(|e| Error::Data(e.to_string()))
}

fn check_no_floats(value: &Value) -> Result<()> {
    match value {
        Value::Float(_) => Err(Error::Data("floats are not allowed".into())),
        Value::Integer(i) if i64::try_from(*i).is_err() => {
            Err(Error::Data("integer out of the 64-bit signed range".into()))
        }
        Value::List(l) => l.iter().try_for_each(check_no_floats),
        Value::Map(m) => m.values().try_for_each(check_no_floats),
        _ => Ok(()),
    }
}

/// Converts a record's JSON form (an object at the top) to a value,
/// enforcing the data model's rules.
pub fn record_from_json(json: &serde_json::Value) -> Result<Value> {
    if !json.is_object() {
        return Err(Error::Data("a record must be an object".into()));
    }
    value_from_json(json)
}

/// Converts any JSON value to a data-model value.
pub fn value_from_json(json: &serde_json::Value) -> Result<Value> {
    use serde_json::Value as J;
    Ok(match json {
        J::Null => Value::Null,
        J::Bool(b) => Value::Bool(*b),
        J::Number(n) => Value::Integer(json_int(n)?.into()),
        J::String(s) => Value::String(s.clone()),
        J::Array(items) => Value::List(
            items
                .iter()
                .map(value_from_json)
                .collect::<Result<Vec<_>>>()?,
        ),
        J::Object(obj) => {
            if let Some(link) = obj.get("$link") {
                return special_single(obj.len(), "$link")
                    .and_then(|()| link_from_json(link).map(Value::Link));
            }
            if let Some(b) = obj.get("$bytes") {
                special_single(obj.len(), "$bytes")?;
                let s = b
                    .as_str()
                    .ok_or_else(|| Error::Data("$bytes must be a string".into()))?;
                let bytes = BYTES_B64
                    .decode(s)
                    .map_err(|e| Error::Data(format!("$bytes is not base64: {e}")))?;
                return Ok(Value::Bytes(bytes));
            }
            let mut map = BTreeMap::new();
            for (k, v) in obj {
                map.insert(k.clone(), value_from_json(v)?);
            }
            check_typed_object(&map)?;
            Value::Map(map)
        }
    })
}

fn special_single(len: usize, key: &str) -> Result<()> {
    if len != 1 {
        return Err(Error::Data(format!("{key} object has extra fields")));
    }
    Ok(())
}

fn json_int(n: &serde_json::Number) -> Result<i64> {
    if let Some(i) = n.as_i64() {
        return Ok(i);
    }
    if n.as_u64().is_some() {
        return Err(Error::Data("integer out of the 64-bit signed range".into()));
    }
    match n.as_f64() {
        // JSON writers print integral numbers as `123.0`; exact below 2^53.
        Some(f) if f.fract() == 0.0 && f.abs() <= MAX_SAFE_FLOAT_INT => Ok(f as i64),
        _ => Err(Error::Data(format!("float {n} is not allowed"))),
    }
}

fn link_from_json(v: &serde_json::Value) -> Result<Cid> {
    let s = v
        .as_str()
        .ok_or_else(|| Error::Data("$link must be a string".into()))?;
    crate::syntax::validate_cid_str(s)?;
    s.parse::<Cid>()
        .map_err(|e| Error::Data(format!("$link is not a cid: {e}")))
}

/// `$type`, when present, is a non-empty string; a `blob` has a link `ref`,
/// a string `mimeType` and an integer `size`.
fn check_typed_object(map: &BTreeMap<String, Value>) -> Result<()> {
    let Some(t) = map.get("$type") else {
        return Ok(());
    };
    let Value::String(t) = t else {
        return Err(Error::Data("$type must be a string".into()));
    };
    if t.is_empty() {
        return Err(Error::Data("$type must not be empty".into()));
    }
    if t == "blob" {
        if !matches!(map.get("ref"), Some(Value::Link(_))) {
            return Err(Error::Data("blob ref must be a link".into()));
        }
        if !matches!(map.get("mimeType"), Some(Value::String(_))) {
            return Err(Error::Data("blob mimeType must be a string".into()));
        }
        if !matches!(map.get("size"), Some(Value::Integer(_))) {
            return Err(Error::Data("blob size must be an integer".into()));
        }
    }
    Ok(())
}

/// The JSON form of a value (`$link` for CIDs, `$bytes` for byte strings).
pub fn to_json(value: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Integer(i) => match i64::try_from(*i) {
            Ok(i) => J::from(i),
            Err(_) => J::String(i.to_string()),
        },
        // Unreachable for values from `decode`; kept total for callers that
        // build values by hand.
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Value::String(s) => J::String(s.clone()),
        Value::Bytes(b) => {
            serde_json::json!({ "$bytes": general_purpose::STANDARD_NO_PAD.encode(b) })
        }
        Value::List(l) => J::Array(l.iter().map(to_json).collect()),
        Value::Map(m) => J::Object(m.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()),
        Value::Link(c) => serde_json::json!({ "$link": c.to_string() }),
    }
}

/// A blob reference found in a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRef {
    /// The blob's CID (raw codec).
    pub cid: Cid,
    /// The declared MIME type.
    pub mime_type: Option<String>,
    /// The declared size (absent in the legacy form).
    pub size: Option<i64>,
}

/// Every blob reference in a value, in the current
/// (`{"$type":"blob","ref":…}`) and the legacy (`{"cid":…,"mimeType":…}`)
/// forms, at any depth.
pub fn find_blobs(value: &Value) -> Vec<BlobRef> {
    let mut out = Vec::new();
    collect_blobs(value, &mut out);
    out
}

/// The blob references of one record, from its DAG-CBOR bytes. Records
/// without any are recognised without decoding: a current-form ref has the
/// text `blob` (the `$type` value) and a legacy one the key `mimeType`, so
/// bytes with neither cannot hold one. Most records (likes, follows) take
/// this path.
pub fn record_blobs(bytes: &[u8]) -> Result<Vec<BlobRef>> {
    use memchr::memmem::Finder;
    use std::sync::LazyLock;
    // Built once: `memmem::find` builds a searcher on every call, which
    // cost ~1% of an import's CPU (one call per record).
    static BLOB_TEXT: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\x64blob"));
    static MIME_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\x68mimeType"));
    if BLOB_TEXT.find(bytes).is_none() && MIME_KEY.find(bytes).is_none() {
        return Ok(Vec::new());
    }
    Ok(find_blobs(&decode(bytes)?))
}

fn collect_blobs(value: &Value, out: &mut Vec<BlobRef>) {
    match value {
        Value::Map(m) => {
            let mime = match m.get("mimeType") {
                Some(Value::String(s)) => Some(s.clone()),
                _ => None,
            };
            if let (Some(Value::String(t)), Some(Value::Link(cid))) = (m.get("$type"), m.get("ref"))
                && t == "blob"
            {
                let size = match m.get("size") {
                    Some(Value::Integer(i)) => i64::try_from(*i).ok(),
                    _ => None,
                };
                out.push(BlobRef {
                    cid: *cid,
                    mime_type: mime,
                    size,
                });
                return;
            }
            if let (Some(Value::String(c)), Some(_), None) = (m.get("cid"), &mime, m.get("$type"))
                && let Ok(cid) = c.parse::<Cid>()
            {
                out.push(BlobRef {
                    cid,
                    mime_type: mime,
                    size: None,
                });
                return;
            }
            m.values().for_each(|v| collect_blobs(v, out));
        }
        Value::List(l) => l.iter().for_each(|v| collect_blobs(v, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn record_blobs_finds_both_forms_and_skips_records_without_any() {
        let img = crate::cid_for_raw(b"image");
        let old = crate::cid_for_raw(b"legacy");
        let post = record_from_json(&json!({
            "$type": "app.bsky.feed.post",
            "text": "a blob and a mimeType, in words only",
            "embed": {"images": [{"image": {"$type": "blob", "ref": {"$link": img.to_string()},
                "mimeType": "image/png", "size": 5}}]},
            "avatar": {"cid": old.to_string(), "mimeType": "image/jpeg"},
        }))
        .unwrap();
        let bytes = encode(&post).unwrap();
        let mut found = record_blobs(&bytes).unwrap();
        found.sort_by_key(|b| b.cid);
        let mut want = vec![
            BlobRef {
                cid: img,
                mime_type: Some("image/png".into()),
                size: Some(5),
            },
            BlobRef {
                cid: old,
                mime_type: Some("image/jpeg".into()),
                size: None,
            },
        ];
        want.sort_by_key(|b| b.cid);
        assert_eq!(found, want);

        // Text that merely mentions the words is not a ref.
        let like = encode(
            &record_from_json(&json!({"$type": "x.y.z", "blob": "blob", "mimeType": 1})).unwrap(),
        )
        .unwrap();
        assert_eq!(record_blobs(&like).unwrap(), vec![]);
        // Bad bytes that pass the prefilter are an error, not a panic.
        assert!(record_blobs(b"\xa1\x64blob").is_err());
    }

    #[test]
    fn integral_float_is_an_integer_and_real_float_is_rejected() {
        assert_eq!(value_from_json(&json!(123.0)).unwrap(), Value::Integer(123));
        assert!(value_from_json(&json!(123.5)).is_err());
        assert!(value_from_json(&json!(u64::MAX)).is_err());
    }

    #[test]
    fn encode_refuses_floats() {
        assert!(encode(&Value::List(vec![Value::Float(1.5)])).is_err());
    }

    #[test]
    fn finds_current_and_legacy_blobs_at_any_depth() {
        let cid = "bafkreiccldh766hwcnuxnf2wh6jgzepf2nlu2lvcllt63eww5p6chi4ity";
        let rec = record_from_json(&json!({
            "$type": "app.bsky.feed.post",
            "embed": {"images": [{"image": {"$type": "blob", "ref": {"$link": cid}, "mimeType": "image/png", "size": 12}}]},
            "old": {"cid": cid, "mimeType": "image/jpeg"},
            "notablob": {"cid": cid}
        }))
        .unwrap();
        let blobs = find_blobs(&rec);
        assert_eq!(blobs.len(), 2);
        assert!(blobs.iter().all(|b| b.cid.to_string() == cid));
        assert!(blobs.iter().any(|b| b.size == Some(12)));
        assert!(
            blobs
                .iter()
                .any(|b| b.size.is_none() && b.mime_type.as_deref() == Some("image/jpeg"))
        );
    }
}
