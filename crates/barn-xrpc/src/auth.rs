//! Who is asking: the operator (admin bearer token) or an account's owner
//! (an atproto inter-service auth JWT signed with the account's current
//! signing key).
//!
//! # Terminology
//!
//! - **Service auth JWT**: `header.payload.signature`, base64url without
//!   padding; `alg` ES256K (secp256k1) or ES256 (P-256); the payload names
//!   the issuer DID (`iss`), the service it is for (`aud`, barn's service
//!   DID), an expiry (`exp`, seconds) and the one XRPC method it allows
//!   (`lxm`). The signature is the 64-byte compact `r ‖ s` over the bytes
//!   of `header.payload`.
//!
//! # Tricky bits
//!
//! - The key is the issuer's *current* `#atproto` key, from its DID
//!   document. A signature that fails against the cached key is checked
//!   once more against a freshly resolved document (the owner may have
//!   rotated it), never more: a flood of bad tokens costs one resolution
//!   each at most.
//! - Low-S is required (atproto; `barn_repo::crypto` enforces it).
//! - `lxm` is required here: a token without one would be valid for every
//!   method, which atproto allows but a backup's history should not.
//! - Credentials are only looked at where they grant something; a public
//!   read ignores them.

use barn_repo::crypto::KeyType;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use crate::error::{ErrorCode, XrpcError};

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The operator, by admin token: may see everything.
    Admin,
    /// The owner of this DID, by service auth JWT.
    Owner(String),
}

impl Caller {
    /// A label for logs and metrics.
    pub fn role(&self) -> &'static str {
        match self {
            Caller::Admin => "admin",
            Caller::Owner(_) => "owner",
        }
    }
}

/// Longest a service JWT may still live: an hour (what a PDS's
/// `getServiceAuth` grants at most for a method) plus clock skew.
const MAX_LIFETIME_SECS: i64 = 3600 + 300;

/// Longest token accepted (a service JWT is a few hundred bytes).
const MAX_TOKEN_LEN: usize = 8 * 1024;

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
}

#[derive(Deserialize)]
struct Payload {
    iss: String,
    aud: String,
    exp: i64,
    #[serde(default)]
    lxm: Option<String>,
}

/// The token from an `Authorization: Bearer …` header value.
pub(crate) fn bearer(value: &[u8]) -> Result<&str, XrpcError> {
    let v = std::str::from_utf8(value)
        .map_err(|_| XrpcError::new(ErrorCode::InvalidToken, "authorization header is not text"))?;
    let token = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
        .ok_or_else(|| {
            XrpcError::new(
                ErrorCode::InvalidToken,
                "authorization must be 'Bearer <admin token or service JWT>'",
            )
        })?
        .trim();
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(XrpcError::new(
            ErrorCode::InvalidToken,
            "empty or oversized bearer token",
        ));
    }
    Ok(token)
}

/// Compares without an early exit, so timing does not reveal how much of
/// the admin token a guess got right.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = (a.len() != b.len()) as u8;
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

/// A service JWT taken apart and checked for everything but the
/// signature.
#[derive(Debug)]
pub(crate) struct UnverifiedJwt {
    pub issuer: String,
    pub key_type: KeyType,
    pub signed: Vec<u8>,
    pub signature: Vec<u8>,
}

fn bad(code: ErrorCode, msg: impl Into<String>) -> XrpcError {
    XrpcError::new(code, msg)
}

/// Checks the JWT's form, type, expiry (against `now_secs`), audience and
/// method; the signature is the caller's to check with the issuer's key.
pub(crate) fn parse_service_jwt(
    token: &str,
    service_did: &str,
    lxm: &str,
    now_secs: i64,
) -> Result<UnverifiedJwt, XrpcError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad(
            ErrorCode::InvalidToken,
            "bearer token is neither the admin token nor a JWT",
        ));
    };
    let decode = |what: &str, part: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| bad(ErrorCode::BadJwt, format!("JWT {what} is not base64url")))
    };
    let header: Header = serde_json::from_slice(&decode("header", h)?)
        .map_err(|e| bad(ErrorCode::BadJwt, format!("JWT header: {e}")))?;
    let key_type = KeyType::from_jwt_alg(&header.alg).ok_or_else(|| {
        bad(
            ErrorCode::BadJwt,
            format!("JWT alg {:?} is not ES256K or ES256", header.alg),
        )
    })?;
    if let Some(typ) = &header.typ
        && matches!(typ.as_str(), "at+jwt" | "refresh+jwt" | "dpop+jwt")
    {
        return Err(bad(
            ErrorCode::BadJwt,
            format!("a {typ} token is not a service auth token"),
        ));
    }
    let payload: Payload = serde_json::from_slice(&decode("payload", p)?)
        .map_err(|e| bad(ErrorCode::BadJwt, format!("JWT payload: {e}")))?;
    if payload.exp <= now_secs {
        return Err(bad(ErrorCode::JwtExpired, "JWT has expired"));
    }
    if payload.exp > now_secs + MAX_LIFETIME_SECS {
        return Err(bad(
            ErrorCode::BadJwt,
            format!("JWT lives longer than {MAX_LIFETIME_SECS} s; ask for a shorter one"),
        ));
    }
    if payload.aud != service_did {
        return Err(bad(
            ErrorCode::BadJwtAudience,
            format!(
                "JWT is for {:?}, this service is {service_did}",
                payload.aud
            ),
        ));
    }
    match payload.lxm.as_deref() {
        Some(m) if m == lxm => {}
        Some(m) => {
            return Err(bad(
                ErrorCode::BadJwtLexiconMethod,
                format!("JWT is for method {m}, not {lxm}"),
            ));
        }
        None => {
            return Err(bad(
                ErrorCode::BadJwtLexiconMethod,
                format!("JWT has no lxm; barn requires one (here {lxm})"),
            ));
        }
    }
    if barn_repo::syntax::Did::validate(&payload.iss).is_err() {
        return Err(bad(
            ErrorCode::BadJwt,
            "JWT iss is not an account DID (service DIDs with a #fragment are not owners)",
        ));
    }
    let signature = decode("signature", s)?;
    let mut signed = Vec::with_capacity(h.len() + 1 + p.len());
    signed.extend_from_slice(h.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(p.as_bytes());
    Ok(UnverifiedJwt {
        issuer: payload.iss,
        key_type,
        signed,
        signature,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use barn_repo::crypto::PrivateKey;

    fn jwt(key: &PrivateKey, alg: &str, payload: serde_json::Value) -> String {
        let h = URL_SAFE_NO_PAD.encode(format!(r#"{{"typ":"JWT","alg":"{alg}"}}"#));
        let p = URL_SAFE_NO_PAD.encode(payload.to_string());
        let sig = key.sign(format!("{h}.{p}").as_bytes());
        format!("{h}.{p}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    #[test]
    fn a_good_token_parses_and_its_signature_verifies() {
        let key = PrivateKey::from_seed(KeyType::K256, 7);
        let t = jwt(
            &key,
            "ES256K",
            serde_json::json!({"iss": "did:plc:abc", "aud": "did:web:barn", "exp": 2000, "lxm": "m.n.o"}),
        );
        let j = parse_service_jwt(&t, "did:web:barn", "m.n.o", 1000).unwrap();
        assert_eq!(j.issuer, "did:plc:abc");
        key.public_key().verify(&j.signed, &j.signature).unwrap();
    }

    #[test]
    fn each_claim_is_checked_with_its_own_error() {
        let key = PrivateKey::from_seed(KeyType::K256, 7);
        let claims = |exp: i64, aud: &str, lxm: Option<&str>| {
            let mut v = serde_json::json!({"iss": "did:plc:abc", "aud": aud, "exp": exp});
            if let Some(l) = lxm {
                v["lxm"] = l.into();
            }
            jwt(&key, "ES256K", v)
        };
        let check = |t: &str| {
            parse_service_jwt(t, "did:web:barn", "m.n.o", 1000)
                .unwrap_err()
                .code
        };
        assert_eq!(
            check(&claims(999, "did:web:barn", Some("m.n.o"))),
            ErrorCode::JwtExpired
        );
        assert_eq!(
            check(&claims(2000, "did:web:other", Some("m.n.o"))),
            ErrorCode::BadJwtAudience
        );
        assert_eq!(
            check(&claims(2000, "did:web:barn", Some("x.y.z"))),
            ErrorCode::BadJwtLexiconMethod
        );
        assert_eq!(
            check(&claims(2000, "did:web:barn", None)),
            ErrorCode::BadJwtLexiconMethod
        );
        assert_eq!(check("not-a-jwt"), ErrorCode::InvalidToken);
        assert_eq!(check("a.b.c"), ErrorCode::BadJwt);
        let hs = jwt(
            &key,
            "HS256",
            serde_json::json!({"iss": "did:plc:abc", "aud": "did:web:barn", "exp": 2000, "lxm": "m.n.o"}),
        );
        assert_eq!(check(&hs), ErrorCode::BadJwt);
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
        assert!(!same_secret("", "a"));
    }

    #[test]
    fn bearer_header_forms() {
        assert_eq!(bearer(b"Bearer xyz").unwrap(), "xyz");
        assert_eq!(
            bearer(b"Basic xyz").unwrap_err().code,
            ErrorCode::InvalidToken
        );
        assert_eq!(
            bearer(b"Bearer ").unwrap_err().code,
            ErrorCode::InvalidToken
        );
    }
}
