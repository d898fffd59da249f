#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Runs the shared atproto interop syntax vectors
//! (`testdata/interop/syntax/*.txt`) against `barn_repo::syntax`.
//!
//! Every line of a `*_valid.txt` file must be accepted and every line of a
//! `*_invalid.txt` file rejected, by both the allocation-free `validate`
//! function and the owning constructor. Lines starting with `#` and empty
//! lines are comments; all other lines are used verbatim, since leading and
//! trailing whitespace is part of several vectors.

use std::fmt::Display;

use barn_repo::syntax::{
    AtIdentifier, AtUri, Datetime, Did, Handle, Language, Nsid, RecordKey, SyntaxError, Tid,
    validate_cid_str, validate_uri,
};

/// A vector line and its 1-based line number in its file.
struct Vector {
    line: usize,
    text: String,
}

/// Reads the vectors of one file, failing if there are none so that a wrong
/// path or an emptied file cannot pass silently.
fn vectors(file: &str) -> Vec<Vector> {
    let path = format!(
        "{}/testdata/interop/syntax/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    let vectors: Vec<Vector> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(i, l)| Vector {
            line: i + 1,
            text: l.to_owned(),
        })
        .collect();
    assert!(!vectors.is_empty(), "{path} contains no vectors");
    vectors
}

/// Asserts that `check` accepts every vector in `file`, listing every
/// offending line on failure.
fn assert_all_accepted<E: Display>(file: &str, check: impl Fn(&str) -> Result<(), E>) {
    let failures: Vec<String> = vectors(file)
        .iter()
        .filter_map(|v| {
            check(&v.text)
                .err()
                .map(|e| format!("  {file}:{}: {:?} was rejected: {e}", v.line, v.text))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "valid vectors rejected:\n{}",
        failures.join("\n")
    );
}

/// Asserts that `check` rejects every vector in `file`, listing every
/// offending line on failure.
fn assert_all_rejected<T>(file: &str, check: impl Fn(&str) -> Result<T, SyntaxError>) {
    let failures: Vec<String> = vectors(file)
        .iter()
        .filter(|v| check(&v.text).is_ok())
        .map(|v| format!("  {file}:{}: {:?} was accepted", v.line, v.text))
        .collect();
    assert!(
        failures.is_empty(),
        "invalid vectors accepted:\n{}",
        failures.join("\n")
    );
}

/// Checks a valid vector through `validate` and the owning constructor, and
/// that the constructed value keeps the input string unchanged.
fn accept<T>(
    s: &str,
    validate: fn(&str) -> Result<(), SyntaxError>,
    construct: fn(&str) -> Result<T, SyntaxError>,
    as_str: fn(&T) -> &str,
) -> Result<(), String> {
    validate(s).map_err(|e| format!("validate: {e}"))?;
    let value = construct(s).map_err(|e| format!("construct: {e}"))?;
    if as_str(&value) != s {
        return Err(format!("stored as {:?}", as_str(&value)));
    }
    Ok(())
}

#[test]
fn did_valid_vectors_accepted() {
    assert_all_accepted("did_syntax_valid.txt", |s| {
        accept(s, Did::validate, |s| s.parse::<Did>(), Did::as_str)
    });
}

#[test]
fn did_invalid_vectors_rejected() {
    assert_all_rejected("did_syntax_invalid.txt", Did::validate);
    assert_all_rejected("did_syntax_invalid.txt", |s| s.parse::<Did>());
}

#[test]
fn handle_valid_vectors_accepted() {
    assert_all_accepted("handle_syntax_valid.txt", |s| {
        accept(s, Handle::validate, |s| s.parse::<Handle>(), Handle::as_str)
    });
}

#[test]
fn handle_invalid_vectors_rejected() {
    assert_all_rejected("handle_syntax_invalid.txt", Handle::validate);
    assert_all_rejected("handle_syntax_invalid.txt", |s| s.parse::<Handle>());
}

#[test]
fn nsid_valid_vectors_accepted() {
    assert_all_accepted("nsid_syntax_valid.txt", |s| {
        accept(s, Nsid::validate, |s| s.parse::<Nsid>(), Nsid::as_str)
    });
}

#[test]
fn nsid_invalid_vectors_rejected() {
    assert_all_rejected("nsid_syntax_invalid.txt", Nsid::validate);
    assert_all_rejected("nsid_syntax_invalid.txt", |s| s.parse::<Nsid>());
}

#[test]
fn recordkey_valid_vectors_accepted() {
    assert_all_accepted("recordkey_syntax_valid.txt", |s| {
        accept(
            s,
            RecordKey::validate,
            |s| s.parse::<RecordKey>(),
            RecordKey::as_str,
        )
    });
}

#[test]
fn recordkey_invalid_vectors_rejected() {
    assert_all_rejected("recordkey_syntax_invalid.txt", RecordKey::validate);
    assert_all_rejected("recordkey_syntax_invalid.txt", |s| s.parse::<RecordKey>());
}

#[test]
fn tid_valid_vectors_accepted() {
    assert_all_accepted("tid_syntax_valid.txt", |s| {
        accept(s, Tid::validate, |s| s.parse::<Tid>(), Tid::as_str)?;
        // Decoding and re-encoding must give back the same string.
        let tid = s.parse::<Tid>().map_err(|e| e.to_string())?;
        match Tid::from_u64(tid.as_u64()) {
            again if again == tid => Ok(()),
            again => Err(format!("re-encoded as {again}")),
        }
    });
}

#[test]
fn tid_invalid_vectors_rejected() {
    assert_all_rejected("tid_syntax_invalid.txt", Tid::validate);
    assert_all_rejected("tid_syntax_invalid.txt", |s| s.parse::<Tid>());
}

#[test]
fn aturi_valid_vectors_accepted() {
    assert_all_accepted("aturi_syntax_valid.txt", |s| {
        accept(s, AtUri::validate, |s| s.parse::<AtUri>(), AtUri::as_str)
    });
}

#[test]
fn aturi_invalid_vectors_rejected() {
    assert_all_rejected("aturi_syntax_invalid.txt", AtUri::validate);
    assert_all_rejected("aturi_syntax_invalid.txt", |s| s.parse::<AtUri>());
}

#[test]
fn atidentifier_valid_vectors_accepted() {
    assert_all_accepted("atidentifier_syntax_valid.txt", |s| {
        accept(
            s,
            AtIdentifier::validate,
            |s| s.parse::<AtIdentifier>(),
            AtIdentifier::as_str,
        )
    });
}

#[test]
fn atidentifier_invalid_vectors_rejected() {
    assert_all_rejected("atidentifier_syntax_invalid.txt", AtIdentifier::validate);
    assert_all_rejected("atidentifier_syntax_invalid.txt", |s| {
        s.parse::<AtIdentifier>()
    });
}

#[test]
fn datetime_valid_vectors_accepted() {
    assert_all_accepted("datetime_syntax_valid.txt", |s| {
        accept(s, Datetime::validate, Datetime::parse, Datetime::as_str)
    });
}

#[test]
fn datetime_invalid_vectors_rejected() {
    assert_all_rejected("datetime_syntax_invalid.txt", Datetime::validate);
    assert_all_rejected("datetime_syntax_invalid.txt", Datetime::parse);
}

#[test]
fn datetime_parse_invalid_vectors_pass_syntax_but_fail_parse() {
    // These are well-formed, so the syntax-only check accepts them ...
    assert_all_accepted("datetime_parse_invalid.txt", Datetime::validate);
    // ... but they do not name a real instant.
    assert_all_rejected("datetime_parse_invalid.txt", Datetime::parse);
    assert_all_rejected("datetime_parse_invalid.txt", |s| Datetime::try_from(s));
}

#[test]
fn language_valid_vectors_accepted() {
    assert_all_accepted("language_syntax_valid.txt", |s| {
        accept(s, Language::validate, Language::parse, Language::as_str)
    });
}

#[test]
fn language_invalid_vectors_rejected() {
    assert_all_rejected("language_syntax_invalid.txt", Language::validate);
    assert_all_rejected("language_syntax_invalid.txt", Language::parse);
}

#[test]
fn language_parse_invalid_vectors_pass_syntax_but_fail_parse() {
    // Well-formed per the RFC 5646 grammar ...
    assert_all_accepted("language_parse_invalid.txt", Language::validate);
    // ... but invalid because a variant or extension singleton repeats.
    assert_all_rejected("language_parse_invalid.txt", Language::parse);
    assert_all_rejected("language_parse_invalid.txt", |s| Language::try_from(s));
}

#[test]
fn cid_valid_vectors_accepted() {
    assert_all_accepted("cid_syntax_valid.txt", validate_cid_str);
}

#[test]
fn cid_invalid_vectors_rejected() {
    assert_all_rejected("cid_syntax_invalid.txt", validate_cid_str);
}

#[test]
fn uri_valid_vectors_accepted() {
    assert_all_accepted("uri_syntax_valid.txt", validate_uri);
}

#[test]
fn uri_invalid_vectors_rejected() {
    assert_all_rejected("uri_syntax_invalid.txt", validate_uri);
}

#[test]
fn serde_validates_vectors() {
    // Deserializing goes through the same checks as parsing.
    for v in vectors("did_syntax_invalid.txt") {
        let json = serde_json::to_string(&v.text).unwrap();
        assert!(
            serde_json::from_str::<Did>(&json).is_err(),
            "did_syntax_invalid.txt:{}: {:?} deserialized",
            v.line,
            v.text
        );
    }
    for v in vectors("aturi_syntax_valid.txt") {
        let json = serde_json::to_string(&v.text).unwrap();
        let uri: AtUri = serde_json::from_str(&json)
            .unwrap_or_else(|e| panic!("aturi_syntax_valid.txt:{}: {e}", v.line));
        assert_eq!(serde_json::to_string(&uri).unwrap(), json);
    }
}
