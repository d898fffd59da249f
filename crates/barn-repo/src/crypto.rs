//! atproto cryptography: K-256 and P-256 keys, `did:key` encoding, and
//! ECDSA signing/verification with atproto's low-S rule.
//!
//! Everything a repository needs to check a commit signature lives here:
//! parse the signing key out of a DID document (or a `did:key`), then call
//! [`PublicKey::verify`] on the unsigned commit bytes and the 64-byte
//! signature. [`PrivateKey`] exists so tests, benchmarks and tools can produce
//! commits too.
//!
//! # Terminology
//!
//! - **K-256** is the secp256k1 curve (JWT algorithm `ES256K`); **P-256** is
//!   NIST p256 / secp256r1 (JWT algorithm `ES256`). atproto allows exactly
//!   these two.
//! - **Compressed point**: 33 bytes, `0x02`/`0x03` (the parity of y) then x.
//!   The uncompressed form is 65 bytes: `0x04`, x, y.
//! - **Multicodec**: a varint tag saying what the following bytes are.
//!   `secp256k1-pub` is `0xe7` (bytes `e7 01`), `p256-pub` is `0x1200`
//!   (bytes `80 24`).
//! - **Multibase**: a one-character base prefix then the encoded bytes. atproto
//!   only uses `z`, i.e. base58btc.
//! - **`did:key`**: `did:key:` + multibase(multicodec prefix + compressed
//!   point). The **Multikey** `publicKeyMultibase` in a DID document is the
//!   same string without `did:key:`.
//! - **Compact signature**: the 64 bytes `r || s`, each a 32-byte big-endian
//!   integer. atproto never uses DER.
//!
//! # Tricky bits
//!
//! - **Low-S is mandatory.** If `(r, s)` is a valid ECDSA signature then so is
//!   `(r, n - s)`. atproto removes that malleability by accepting only the
//!   "low" half (`s <= n/2`) on *both* curves. The RustCrypto `p256` crate
//!   happily verifies high-S signatures, and libsecp256k1 rejects them but
//!   without saying why, so [`PublicKey::verify_prehash`] checks explicitly
//!   for both curves and reports [`CryptoError::HighS`]. Signing always
//!   normalises to low-S (p256 does not do that on its own).
//! - **Legacy vs Multikey key forms.** Older DID documents use the
//!   `EcdsaSecp256k1VerificationKey2019` / `EcdsaSecp256r1VerificationKey2019`
//!   suites, whose `publicKeyMultibase` is base58btc of the *raw* key bytes,
//!   with no multicodec prefix, and which may be compressed (33 bytes) or
//!   uncompressed (65 bytes). The curve comes from the suite name instead.
//!   `Multikey` (and `did:key`) carry the curve in the multicodec prefix and
//!   are always compressed. Mixing the two up fails in confusing ways, so each
//!   form has its own constructor and [`PublicKey::from_verification_method`]
//!   dispatches on the method type.
//! - **Why libsecp256k1 for K-256.** A firehose consumer verifies every commit
//!   it sees, and most atproto accounts use K-256 keys. The C library (through
//!   the `secp256k1` crate) verifies about 2.5x faster per core than the pure
//!   Rust `k256` crate, so it is used for K-256.
//! - **Why `ring` for P-256 verification.** RustCrypto's `p256` verifies
//!   about ten times slower than libsecp256k1, and it is what every peer
//!   uses, so barn was only at parity there. [`PublicKey::verify`] checks
//!   P-256 signatures with `ring` (BoringSSL's P-256 code), which is several
//!   times faster (see `benches/README.md`). `p256` still parses keys (ring
//!   needs the uncompressed point, so the key is decompressed once, at
//!   parse time), parses the signature (r and s in `1..n`) and decides
//!   low-S, exactly as before; ring only replaces the final check. ring has
//!   no API taking a digest, so [`PublicKey::verify_prehash`] stays on
//!   `p256` for P-256: both accept exactly the same signatures.
//! - **Hash first.** atproto signs SHA-256 of the message; the `*_prehash`
//!   variants take that digest directly for callers that already have it.

use std::fmt;
use std::hash::{Hash, Hasher};

use p256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use sha2::{Digest, Sha256};

/// Length of a compressed SEC1 public key: prefix byte plus 32-byte x.
const COMPRESSED_LEN: usize = 33;
/// Length of an uncompressed SEC1 public key: `0x04`, x and y.
const UNCOMPRESSED_LEN: usize = 65;
/// Length of a compact `r || s` signature.
const SIGNATURE_LEN: usize = 64;

/// Prefix of every `did:key` identifier.
const DID_KEY_PREFIX: &str = "did:key:";
/// The multibase code for base58btc, the only base atproto uses.
const BASE58BTC_CODE: char = 'z';

/// Verification method type of the current DID document key form.
pub const MULTIKEY_TYPE: &str = "Multikey";
/// Legacy verification method type for K-256 keys (raw key bytes, no multicodec).
pub const LEGACY_K256_TYPE: &str = "EcdsaSecp256k1VerificationKey2019";
/// Legacy verification method type for P-256 keys (raw key bytes, no multicodec).
pub const LEGACY_P256_TYPE: &str = "EcdsaSecp256r1VerificationKey2019";

/// Errors from parsing keys and checking signatures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The string is not base58btc multibase (wrong prefix or bad characters).
    #[error("invalid multibase key: {0}")]
    BadMultibase(&'static str),
    /// The multicodec varint at the start of a Multikey is truncated or not minimal.
    #[error("malformed multicodec varint")]
    BadMulticodecVarint,
    /// The multicodec names something other than a K-256 or P-256 public key.
    #[error("unsupported multicodec 0x{0:x}")]
    UnknownMulticodec(u64),
    /// The key material has the wrong number of bytes for its form.
    #[error("bad public key length: expected {expected} bytes, got {actual}")]
    BadKeyLength {
        /// The accepted length(s), e.g. `"33"` or `"33 or 65"`.
        expected: &'static str,
        /// The length found.
        actual: usize,
    },
    /// The bytes have the right length but are not a point on the curve.
    #[error("invalid public key point")]
    InvalidPoint,
    /// The signature is not 64 bytes (atproto uses compact `r || s`, never DER).
    #[error("bad signature length: expected 64 bytes, got {0}")]
    BadSignatureLength(usize),
    /// The signature's `s` is in the upper half of the group order; atproto
    /// rejects these to rule out signature malleability.
    #[error("signature is not low-s")]
    HighS,
    /// The signature is malformed (`r` or `s` zero or out of range) or does not
    /// match the message and key.
    #[error("invalid signature")]
    InvalidSignature,
    /// The DID document verification method type is not one atproto supports.
    #[error("unsupported verification method type {0:?}")]
    UnsupportedSuite(String),
    /// The string does not start with `did:key:`.
    #[error("not a did:key identifier")]
    NotDidKey,
    /// The private key bytes are not a valid scalar (wrong length, zero, or
    /// not below the group order).
    #[error("invalid private key")]
    InvalidPrivateKey,
}

/// The two elliptic curves atproto allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyType {
    /// secp256k1, JWT algorithm `ES256K`.
    K256,
    /// NIST P-256 (secp256r1), JWT algorithm `ES256`.
    P256,
}

impl KeyType {
    /// The JWT `alg` name: `"ES256K"` or `"ES256"`.
    pub const fn jwt_alg(self) -> &'static str {
        match self {
            KeyType::K256 => "ES256K",
            KeyType::P256 => "ES256",
        }
    }

    /// Looks a curve up by its JWT `alg` name.
    pub fn from_jwt_alg(alg: &str) -> Option<Self> {
        match alg {
            "ES256K" => Some(KeyType::K256),
            "ES256" => Some(KeyType::P256),
            _ => None,
        }
    }

    /// The multicodec code of this curve's public key: `0xe7` (secp256k1-pub)
    /// or `0x1200` (p256-pub).
    pub const fn multicodec(self) -> u64 {
        match self {
            KeyType::K256 => 0xe7,
            KeyType::P256 => 0x1200,
        }
    }

    /// Looks a curve up by its public key multicodec code.
    pub const fn from_multicodec(code: u64) -> Option<Self> {
        match code {
            0xe7 => Some(KeyType::K256),
            0x1200 => Some(KeyType::P256),
            _ => None,
        }
    }

    /// The legacy DID document verification method type for this curve.
    pub const fn legacy_suite(self) -> &'static str {
        match self {
            KeyType::K256 => LEGACY_K256_TYPE,
            KeyType::P256 => LEGACY_P256_TYPE,
        }
    }

    /// The multicodec code as varint bytes. Both codes need exactly two bytes,
    /// so a fixed array avoids a general encoder.
    const fn multicodec_prefix(self) -> [u8; 2] {
        match self {
            KeyType::K256 => [0xe7, 0x01],
            KeyType::P256 => [0x80, 0x24],
        }
    }
}

/// The parsed key, kept alongside its compressed bytes so verification does
/// not have to decode the point again.
#[derive(Clone)]
enum PublicInner {
    K256(secp256k1::PublicKey),
    P256 {
        key: p256::ecdsa::VerifyingKey,
        /// The uncompressed SEC1 point (`0x04`, x, y), the only form ring's
        /// ECDSA verifier takes: decompressing is a square root, done once
        /// here rather than on every verification.
        uncompressed: [u8; UNCOMPRESSED_LEN],
    },
}

/// A K-256 or P-256 public key that can verify atproto signatures.
///
/// Equality and hashing use the curve and the compressed point, so a key
/// parsed from an uncompressed legacy encoding equals the same key parsed from
/// its `did:key`. Parsing (base58 plus point decompression) costs a small
/// fraction of a verification, but a long-lived consumer should still keep
/// parsed keys rather than re-parse per commit.
#[derive(Clone)]
pub struct PublicKey {
    inner: PublicInner,
    compressed: [u8; COMPRESSED_LEN],
}

impl PublicKey {
    /// Parses a `did:key:z...` identifier.
    pub fn from_did_key(s: &str) -> Result<Self, CryptoError> {
        let multikey = s
            .strip_prefix(DID_KEY_PREFIX)
            .ok_or(CryptoError::NotDidKey)?;
        Self::from_multikey(multikey)
    }

    /// Parses a Multikey `publicKeyMultibase` value: `z` + base58btc of a
    /// multicodec prefix and a 33-byte compressed point.
    pub fn from_multikey(multibase: &str) -> Result<Self, CryptoError> {
        let bytes = decode_base58btc(multibase)?;
        let (code, prefix_len) = read_uvarint(&bytes).ok_or(CryptoError::BadMulticodecVarint)?;
        let key_type =
            KeyType::from_multicodec(code).ok_or(CryptoError::UnknownMulticodec(code))?;
        Self::from_compressed(key_type, bytes.get(prefix_len..).unwrap_or_default())
    }

    /// Parses a legacy-suite `publicKeyMultibase` value: `z` + base58btc of the
    /// raw key bytes (no multicodec), compressed (33 bytes) or uncompressed
    /// (65 bytes). The curve is not in the bytes, so the caller supplies it
    /// from the verification method type.
    pub fn from_legacy_multibase(key_type: KeyType, multibase: &str) -> Result<Self, CryptoError> {
        let bytes = decode_base58btc(multibase)?;
        Self::from_sec1(key_type, &bytes)
    }

    /// Parses a DID document verification method from its `type` and
    /// `publicKeyMultibase`, accepting `Multikey` and the two legacy suites.
    pub fn from_verification_method(
        type_: &str,
        public_key_multibase: &str,
    ) -> Result<Self, CryptoError> {
        match type_ {
            MULTIKEY_TYPE => Self::from_multikey(public_key_multibase),
            LEGACY_K256_TYPE => Self::from_legacy_multibase(KeyType::K256, public_key_multibase),
            LEGACY_P256_TYPE => Self::from_legacy_multibase(KeyType::P256, public_key_multibase),
            other => Err(CryptoError::UnsupportedSuite(other.to_owned())),
        }
    }

    /// Parses a 33-byte compressed SEC1 point.
    pub fn from_compressed(key_type: KeyType, bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != COMPRESSED_LEN {
            return Err(CryptoError::BadKeyLength {
                expected: "33",
                actual: bytes.len(),
            });
        }
        Self::from_sec1(key_type, bytes)
    }

    /// Parses a compressed or uncompressed SEC1 point.
    fn from_sec1(key_type: KeyType, bytes: &[u8]) -> Result<Self, CryptoError> {
        // Check the tag ourselves: libsecp256k1 would also accept the obscure
        // "hybrid" 65-byte encodings (tags 0x06/0x07), which no atproto
        // implementation produces, and we want one strict rule for both curves.
        match (bytes.len(), bytes.first()) {
            (COMPRESSED_LEN, Some(0x02 | 0x03)) | (UNCOMPRESSED_LEN, Some(0x04)) => {}
            (COMPRESSED_LEN | UNCOMPRESSED_LEN, _) => return Err(CryptoError::InvalidPoint),
            (actual, _) => {
                return Err(CryptoError::BadKeyLength {
                    expected: "33 or 65",
                    actual,
                });
            }
        }
        match key_type {
            KeyType::K256 => {
                let key = secp256k1::PublicKey::from_slice(bytes)
                    .map_err(|_| CryptoError::InvalidPoint)?;
                Ok(Self::from_k256(key))
            }
            KeyType::P256 => {
                let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(bytes)
                    .map_err(|_| CryptoError::InvalidPoint)?;
                Self::from_p256(key)
            }
        }
    }

    fn from_k256(key: secp256k1::PublicKey) -> Self {
        Self {
            compressed: key.serialize(),
            inner: PublicInner::K256(key),
        }
    }

    fn from_p256(key: p256::ecdsa::VerifyingKey) -> Result<Self, CryptoError> {
        // A verifying key is never the identity, so this is always 33 bytes;
        // the error path only exists to avoid a panic.
        let compressed = <[u8; COMPRESSED_LEN]>::try_from(key.to_encoded_point(true).as_bytes())
            .map_err(|_| CryptoError::InvalidPoint)?;
        let uncompressed =
            <[u8; UNCOMPRESSED_LEN]>::try_from(key.to_encoded_point(false).as_bytes())
                .map_err(|_| CryptoError::InvalidPoint)?;
        Ok(Self {
            compressed,
            inner: PublicInner::P256 { key, uncompressed },
        })
    }

    /// Which curve this key is on.
    pub fn key_type(&self) -> KeyType {
        match self.inner {
            PublicInner::K256(_) => KeyType::K256,
            PublicInner::P256 { .. } => KeyType::P256,
        }
    }

    /// The `did:key:z...` identifier of this key.
    pub fn to_did_key(&self) -> String {
        format!("{DID_KEY_PREFIX}{}", self.to_multikey())
    }

    /// The Multikey `publicKeyMultibase` form: `z` + base58btc of the
    /// multicodec prefix and the compressed point.
    pub fn to_multikey(&self) -> String {
        let mut bytes = Vec::with_capacity(2 + COMPRESSED_LEN);
        bytes.extend_from_slice(&self.key_type().multicodec_prefix());
        bytes.extend_from_slice(&self.compressed);
        multibase::encode(multibase::Base::Base58Btc, bytes)
    }

    /// The 33-byte compressed SEC1 encoding of the point.
    pub fn compressed_bytes(&self) -> [u8; COMPRESSED_LEN] {
        self.compressed
    }

    /// Verifies a 64-byte compact signature over SHA-256 of `msg`.
    /// High-S signatures are rejected with [`CryptoError::HighS`].
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> Result<(), CryptoError> {
        match &self.inner {
            PublicInner::K256(_) => self.verify_prehash(&sha256(msg), sig),
            PublicInner::P256 { uncompressed, .. } => {
                // The same checks, in the same order, as `verify_prehash`;
                // only the final verification runs on ring (which hashes
                // `msg` itself).
                check_p256_signature(sig)?;
                ring::signature::UnparsedPublicKey::new(
                    &ring::signature::ECDSA_P256_SHA256_FIXED,
                    uncompressed,
                )
                .verify(msg, sig)
                .map_err(|_| CryptoError::InvalidSignature)
            }
        }
    }

    /// Verifies a 64-byte compact signature over an already computed SHA-256
    /// digest. High-S signatures are rejected with [`CryptoError::HighS`].
    pub fn verify_prehash(&self, digest: &[u8; 32], sig: &[u8]) -> Result<(), CryptoError> {
        if sig.len() != SIGNATURE_LEN {
            return Err(CryptoError::BadSignatureLength(sig.len()));
        }
        // For both curves: parse (which rejects r or s of zero or >= n), ask
        // the library whether normalising would flip s, and only then run the
        // expensive check, so a high-S signature gets a precise error.
        match &self.inner {
            PublicInner::K256(key) => {
                let parsed = secp256k1::ecdsa::Signature::from_compact(sig)
                    .map_err(|_| CryptoError::InvalidSignature)?;
                let mut normalized = parsed;
                normalized.normalize_s();
                if normalized.serialize_compact() != parsed.serialize_compact() {
                    return Err(CryptoError::HighS);
                }
                secp256k1::ecdsa::verify(&parsed, secp256k1::Message::from_digest(*digest), key)
                    .map_err(|_| CryptoError::InvalidSignature)
            }
            PublicInner::P256 { key, .. } => {
                let parsed = check_p256_signature(sig)?;
                key.verify_prehash(digest, &parsed)
                    .map_err(|_| CryptoError::InvalidSignature)
            }
        }
    }
}

/// Parses a compact P-256 signature and enforces low-S, before any backend
/// sees it. Neither backend checks low-S itself: both p256 and ring accept
/// `(r, n - s)` as readily as `(r, s)`.
fn check_p256_signature(sig: &[u8]) -> Result<p256::ecdsa::Signature, CryptoError> {
    if sig.len() != SIGNATURE_LEN {
        return Err(CryptoError::BadSignatureLength(sig.len()));
    }
    // Rejects r or s of zero or >= n.
    let parsed =
        p256::ecdsa::Signature::from_slice(sig).map_err(|_| CryptoError::InvalidSignature)?;
    // `normalize_s` returns `Some` exactly when s is high.
    if parsed.normalize_s().is_some() {
        return Err(CryptoError::HighS);
    }
    Ok(parsed)
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.key_type() == other.key_type() && self.compressed == other.compressed
    }
}

impl Eq for PublicKey {}

impl Hash for PublicKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key_type().hash(state);
        self.compressed.hash(state);
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_did_key())
    }
}

/// Formats as the `did:key` identifier.
impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_did_key())
    }
}

/// The secret half of a key pair.
#[derive(Clone)]
enum SecretInner {
    K256(secp256k1::SecretKey),
    P256(p256::ecdsa::SigningKey),
}

/// A K-256 or P-256 private key that produces atproto signatures (always
/// compact and low-S).
///
/// `Debug` shows only the curve and the public key, never the secret.
#[derive(Clone)]
pub struct PrivateKey {
    secret: SecretInner,
    /// Derived once: deriving it is a scalar multiplication.
    public: PublicKey,
}

impl PrivateKey {
    /// Builds a key from a 32-byte big-endian scalar, which must be in
    /// `1..n` for the curve's group order `n`.
    pub fn from_bytes(key_type: KeyType, bytes: &[u8]) -> Result<Self, CryptoError> {
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| CryptoError::InvalidPrivateKey)?;
        match key_type {
            KeyType::K256 => {
                let secret = secp256k1::SecretKey::from_secret_bytes(bytes)
                    .map_err(|_| CryptoError::InvalidPrivateKey)?;
                Ok(Self {
                    public: PublicKey::from_k256(secret.public_key()),
                    secret: SecretInner::K256(secret),
                })
            }
            KeyType::P256 => {
                let secret = p256::ecdsa::SigningKey::from_bytes(&bytes.into())
                    .map_err(|_| CryptoError::InvalidPrivateKey)?;
                Ok(Self {
                    public: PublicKey::from_p256(*secret.verifying_key())?,
                    secret: SecretInner::P256(secret),
                })
            }
        }
    }

    /// Derives a deterministic key from a number, for tests and benchmarks.
    ///
    /// **Not for production:** anyone who knows (or guesses) the seed has
    /// the key. The scalar is SHA-256 of the seed's 8 big-endian bytes,
    /// re-hashed until it is a valid scalar for the curve (in practice the
    /// first hash always is).
    pub fn from_seed(key_type: KeyType, seed: u64) -> Self {
        let mut candidate = sha256(&seed.to_be_bytes());
        loop {
            if let Ok(key) = Self::from_bytes(key_type, &candidate) {
                return key;
            }
            candidate = sha256(&candidate);
        }
    }

    /// Which curve this key is on.
    pub fn key_type(&self) -> KeyType {
        self.public.key_type()
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        self.public.clone()
    }

    /// Signs SHA-256 of `msg`, returning a compact low-S `r || s` signature.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.sign_prehash(&sha256(msg))
    }

    /// Signs an already computed SHA-256 digest, returning a compact low-S
    /// `r || s` signature. Nonces are deterministic (RFC 6979).
    ///
    /// # Panics
    ///
    /// Not in practice: the P-256 signer reports an error only if RFC 6979
    /// yields a nonce giving `r = 0` or `s = 0`, which has probability about
    /// 2^-256. (`p256`'s own infallible `Signer::sign` panics in the same
    /// case.)
    pub fn sign_prehash(&self, digest: &[u8; 32]) -> [u8; 64] {
        match &self.secret {
            SecretInner::K256(secret) => {
                let mut sig =
                    secp256k1::ecdsa::sign(secp256k1::Message::from_digest(*digest), secret);
                // libsecp256k1 already signs low-S; normalising again is free
                // and keeps the guarantee independent of the library.
                sig.normalize_s();
                sig.serialize_compact()
            }
            SecretInner::P256(secret) => {
                let sig: p256::ecdsa::Signature = match secret.sign_prehash(digest) {
                    Ok(sig) => sig,
                    Err(_) => unreachable!("P-256 RFC 6979 signing of a 32-byte digest failed"),
                };
                // p256 leaves s as computed, which is high half the time.
                let sig = sig.normalize_s().unwrap_or(sig);
                let (r, s) = sig.split_bytes();
                let mut out = [0u8; SIGNATURE_LEN];
                out[..32].copy_from_slice(&r);
                out[32..].copy_from_slice(&s);
                out
            }
        }
    }

    /// The 32-byte big-endian scalar. Handle with care: this is the secret.
    pub fn to_bytes(&self) -> [u8; 32] {
        match &self.secret {
            SecretInner::K256(secret) => secret.to_secret_bytes(),
            SecretInner::P256(secret) => secret.to_bytes().into(),
        }
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("key_type", &self.key_type())
            .field("public_key", &self.public.to_did_key())
            .finish_non_exhaustive()
    }
}

impl Drop for PrivateKey {
    fn drop(&mut self) {
        // p256's SigningKey zeroizes itself on drop. secp256k1's SecretKey is
        // a plain Copy array, so wipe our copy; best effort, as copies made
        // by moves are out of reach.
        if let SecretInner::K256(secret) = &mut self.secret {
            secret.non_secure_erase();
        }
    }
}

/// SHA-256 as a fixed-size array.
fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Decodes a `z`-prefixed base58btc multibase string. Other multibase
/// encodings are refused: atproto only ever uses base58btc for keys.
fn decode_base58btc(s: &str) -> Result<Vec<u8>, CryptoError> {
    let body = s
        .strip_prefix(BASE58BTC_CODE)
        .ok_or(CryptoError::BadMultibase("expected 'z' (base58btc) prefix"))?;
    multibase::Base::Base58Btc
        .decode(body)
        .map_err(|_| CryptoError::BadMultibase("invalid base58btc"))
}

/// Reads an unsigned LEB128 varint as used by multicodec, returning the value
/// and how many bytes it took. Multicodec caps varints at 9 bytes and requires
/// the minimal encoding, so a redundant trailing zero group is refused.
fn read_uvarint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for (i, &byte) in bytes.iter().enumerate().take(9) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if i > 0 && byte == 0 {
                return None;
            }
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Group order of secp256k1, big-endian.
    const K256_ORDER: [u8; 32] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xfe, 0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36,
        0x41, 0x41,
    ];
    /// Group order of P-256, big-endian.
    const P256_ORDER: [u8; 32] = [
        0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63,
        0x25, 0x51,
    ];

    const BOTH: [KeyType; 2] = [KeyType::K256, KeyType::P256];

    fn order(key_type: KeyType) -> [u8; 32] {
        match key_type {
            KeyType::K256 => K256_ORDER,
            KeyType::P256 => P256_ORDER,
        }
    }

    /// Big-endian `a - b`, for `a > b`. Independent of both libraries so the
    /// high-S test does not trust the code under test to build its input.
    fn sub_be(a: &[u8; 32], b: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        let mut borrow = 0i16;
        for i in (0..32).rev() {
            let mut d = i16::from(a[i]) - i16::from(b[i]) - borrow;
            borrow = if d < 0 {
                d += 256;
                1
            } else {
                0
            };
            out[i] = u8::try_from(d).unwrap();
        }
        assert_eq!(borrow, 0);
        out
    }

    /// Returns the same signature with s replaced by n - s.
    fn flip_s(key_type: KeyType, sig: &[u8; 64]) -> [u8; 64] {
        let mut out = *sig;
        out[32..].copy_from_slice(&sub_be(&order(key_type), &sig[32..]));
        out
    }

    #[test]
    fn sign_then_verify_round_trips_on_both_curves() {
        for kt in BOTH {
            let key = PrivateKey::from_seed(kt, 1);
            let public = key.public_key();
            assert_eq!(public.key_type(), kt);
            let sig = key.sign(b"hello atproto");
            public.verify(b"hello atproto", &sig).unwrap();
            // The prehash path agrees with the message path.
            let digest = sha256(b"hello atproto");
            assert_eq!(key.sign_prehash(&digest), sig);
            public.verify_prehash(&digest, &sig).unwrap();
        }
    }

    #[test]
    fn signing_is_deterministic_and_always_low_s() {
        for kt in BOTH {
            let key = PrivateKey::from_seed(kt, 7);
            let half = {
                // n/2 rounded down: shift the order right by one bit.
                let n = order(kt);
                let mut half = [0u8; 32];
                let mut carry = 0u8;
                for (h, b) in half.iter_mut().zip(n) {
                    *h = (b >> 1) | carry;
                    carry = (b & 1) << 7;
                }
                half
            };
            for i in 0u32..64 {
                let msg = i.to_be_bytes();
                let sig = key.sign(&msg);
                assert_eq!(sig, key.sign(&msg));
                assert!(sig[32..] <= half[..], "{kt:?} signature {i} is high-S");
            }
        }
    }

    #[test]
    fn high_s_signature_is_rejected_and_low_s_accepted() {
        for kt in BOTH {
            let key = PrivateKey::from_seed(kt, 2);
            let public = key.public_key();
            let sig = key.sign(b"malleable?");
            assert_eq!(public.verify(b"malleable?", &sig), Ok(()));
            let high = flip_s(kt, &sig);
            assert_ne!(high, sig);
            assert_eq!(
                public.verify(b"malleable?", &high),
                Err(CryptoError::HighS),
                "{kt:?}"
            );
        }
    }

    #[test]
    fn p256_libraries_alone_would_accept_high_s() {
        // The reason for the explicit check: without it this forgery-free but
        // malleated signature would pass, with either backend.
        let key = PrivateKey::from_seed(KeyType::P256, 2);
        let high = flip_s(KeyType::P256, &key.sign(b"malleable?"));
        let PublicInner::P256 {
            key: vk,
            uncompressed,
        } = &key.public_key().inner
        else {
            panic!("expected a P-256 key");
        };
        let parsed = p256::ecdsa::Signature::from_slice(&high).unwrap();
        assert!(vk.verify_prehash(&sha256(b"malleable?"), &parsed).is_ok());
        let ring_key = ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_FIXED,
            uncompressed,
        );
        assert!(ring_key.verify(b"malleable?", &high).is_ok());
        // barn rejects it on both paths.
        let public = key.public_key();
        assert_eq!(public.verify(b"malleable?", &high), Err(CryptoError::HighS));
        assert_eq!(
            public.verify_prehash(&sha256(b"malleable?"), &high),
            Err(CryptoError::HighS)
        );
    }

    #[test]
    fn p256_message_path_and_prehash_path_agree() {
        // `verify` (ring) and `verify_prehash` (p256) must give the same
        // answer, error included, on valid, tampered and malformed input.
        let key = PrivateKey::from_seed(KeyType::P256, 11);
        let public = key.public_key();
        let other = PrivateKey::from_seed(KeyType::P256, 12).public_key();
        for i in 0u32..32 {
            let msg = i.to_be_bytes();
            let sig = key.sign(&msg);
            let mut bad_r = sig;
            bad_r[5] ^= 1;
            let mut bad_s = sig;
            bad_s[40] ^= 1;
            let mut zero_s = sig;
            zero_s[32..].fill(0);
            let mut big_s = sig;
            big_s[32..].copy_from_slice(&P256_ORDER);
            let high = flip_s(KeyType::P256, &sig);
            for (k, candidate) in [
                (&public, &sig),
                (&other, &sig),
                (&public, &bad_r),
                (&public, &bad_s),
                (&public, &zero_s),
                (&public, &big_s),
                (&public, &high),
            ] {
                assert_eq!(
                    k.verify(&msg, candidate),
                    k.verify_prehash(&sha256(&msg), candidate),
                    "message {i}"
                );
            }
            assert_eq!(public.verify(&msg, &sig), Ok(()));
            assert_eq!(public.verify(&msg, &high), Err(CryptoError::HighS));
            assert_eq!(
                public.verify(&msg, &big_s),
                Err(CryptoError::InvalidSignature)
            );
            assert_eq!(
                public.verify(&msg, &zero_s),
                Err(CryptoError::InvalidSignature)
            );
        }
    }

    #[test]
    fn tampered_message_is_rejected() {
        for kt in BOTH {
            let key = PrivateKey::from_seed(kt, 3);
            let sig = key.sign(b"original");
            assert_eq!(
                key.public_key().verify(b"originaL", &sig),
                Err(CryptoError::InvalidSignature)
            );
        }
    }

    #[test]
    fn signature_from_another_key_is_rejected() {
        for kt in BOTH {
            let sig = PrivateKey::from_seed(kt, 4).sign(b"msg");
            let other = PrivateKey::from_seed(kt, 5).public_key();
            assert_eq!(
                other.verify(b"msg", &sig),
                Err(CryptoError::InvalidSignature)
            );
        }
    }

    #[test]
    fn wrong_length_signature_is_rejected() {
        for kt in BOTH {
            let key = PrivateKey::from_seed(kt, 6);
            let sig = key.sign(b"msg");
            let public = key.public_key();
            assert_eq!(
                public.verify(b"msg", &sig[..63]),
                Err(CryptoError::BadSignatureLength(63))
            );
            let mut long = sig.to_vec();
            long.push(0);
            assert_eq!(
                public.verify(b"msg", &long),
                Err(CryptoError::BadSignatureLength(65))
            );
            assert_eq!(
                public.verify(b"msg", &[]),
                Err(CryptoError::BadSignatureLength(0))
            );
        }
    }

    #[test]
    fn out_of_range_signature_scalars_are_rejected() {
        for kt in BOTH {
            let key = PrivateKey::from_seed(kt, 8);
            let public = key.public_key();
            let sig = key.sign(b"msg");
            let mut zero_r = sig;
            zero_r[..32].fill(0);
            assert_eq!(
                public.verify(b"msg", &zero_r),
                Err(CryptoError::InvalidSignature)
            );
            let mut big_r = sig;
            big_r[..32].copy_from_slice(&order(kt));
            assert_eq!(
                public.verify(b"msg", &big_r),
                Err(CryptoError::InvalidSignature)
            );
        }
    }

    #[test]
    fn did_key_round_trips_with_expected_prefixes() {
        for (kt, prefix) in [
            (KeyType::K256, "did:key:zQ3s"),
            (KeyType::P256, "did:key:zDna"),
        ] {
            for seed in 0..8 {
                let public = PrivateKey::from_seed(kt, seed).public_key();
                let did = public.to_did_key();
                assert!(did.starts_with(prefix), "{did}");
                assert_eq!(did, format!("did:key:{}", public.to_multikey()));
                assert_eq!(public.to_string(), did);
                let parsed = PublicKey::from_did_key(&did).unwrap();
                assert_eq!(parsed, public);
                assert_eq!(parsed.key_type(), kt);
                assert_eq!(
                    PublicKey::from_multikey(&public.to_multikey()).unwrap(),
                    public
                );
                assert_eq!(
                    PublicKey::from_compressed(kt, &public.compressed_bytes()).unwrap(),
                    public
                );
            }
        }
    }

    #[test]
    fn multicodec_varints_match_the_registry() {
        assert_eq!(
            read_uvarint(&KeyType::K256.multicodec_prefix()),
            Some((0xe7, 2))
        );
        assert_eq!(
            read_uvarint(&KeyType::P256.multicodec_prefix()),
            Some((0x1200, 2))
        );
        assert_eq!(read_uvarint(&[0x05, 0xff]), Some((5, 1)));
        assert_eq!(read_uvarint(&[0x80]), None);
        assert_eq!(read_uvarint(&[0xe7, 0x00]), None, "non-minimal");
        assert_eq!(read_uvarint(&[]), None);
    }

    #[test]
    fn legacy_forms_parse_compressed_and_uncompressed() {
        for kt in BOTH {
            let public = PrivateKey::from_seed(kt, 9).public_key();
            let compressed = public.compressed_bytes();
            let uncompressed = match &public.inner {
                PublicInner::K256(k) => k.serialize_uncompressed().to_vec(),
                PublicInner::P256 { key, uncompressed } => {
                    assert_eq!(
                        key.to_encoded_point(false).as_bytes(),
                        uncompressed.as_slice()
                    );
                    uncompressed.to_vec()
                }
            };
            assert_eq!(uncompressed.len(), 65);
            for raw in [compressed.to_vec(), uncompressed] {
                let mb = multibase::encode(multibase::Base::Base58Btc, &raw);
                assert_eq!(PublicKey::from_legacy_multibase(kt, &mb).unwrap(), public);
                assert_eq!(
                    PublicKey::from_verification_method(kt.legacy_suite(), &mb).unwrap(),
                    public
                );
            }
            assert_eq!(
                PublicKey::from_verification_method("Multikey", &public.to_multikey()).unwrap(),
                public
            );
        }
    }

    #[test]
    fn legacy_key_with_multicodec_prefix_is_rejected() {
        let public = PrivateKey::from_seed(KeyType::K256, 10).public_key();
        assert_eq!(
            PublicKey::from_legacy_multibase(KeyType::K256, &public.to_multikey()),
            Err(CryptoError::BadKeyLength {
                expected: "33 or 65",
                actual: 35
            })
        );
    }

    #[test]
    fn unknown_verification_method_type_is_rejected() {
        let public = PrivateKey::from_seed(KeyType::K256, 11).public_key();
        assert_eq!(
            PublicKey::from_verification_method(
                "Ed25519VerificationKey2020",
                &public.to_multikey()
            ),
            Err(CryptoError::UnsupportedSuite(
                "Ed25519VerificationKey2020".into()
            ))
        );
    }

    #[test]
    fn bad_multicodec_is_rejected() {
        let public = PrivateKey::from_seed(KeyType::K256, 12).public_key();
        // ed25519-pub (0xed, varint ed 01) is a real codec atproto does not use.
        let mut bytes = vec![0xed, 0x01];
        bytes.extend_from_slice(&public.compressed_bytes());
        let mk = multibase::encode(multibase::Base::Base58Btc, &bytes);
        assert_eq!(
            PublicKey::from_multikey(&mk),
            Err(CryptoError::UnknownMulticodec(0xed))
        );
        let truncated = multibase::encode(multibase::Base::Base58Btc, [0x80]);
        assert_eq!(
            PublicKey::from_multikey(&truncated),
            Err(CryptoError::BadMulticodecVarint)
        );
    }

    #[test]
    fn did_key_with_wrong_curve_or_length_is_rejected() {
        let public = PrivateKey::from_seed(KeyType::K256, 13).public_key();
        // A K-256 point labelled as P-256 is (almost surely) not on P-256;
        // either way it must not parse back as the same key.
        let mut bytes = KeyType::P256.multicodec_prefix().to_vec();
        bytes.extend_from_slice(&public.compressed_bytes());
        let relabelled = multibase::encode(multibase::Base::Base58Btc, &bytes);
        match PublicKey::from_multikey(&relabelled) {
            Err(CryptoError::InvalidPoint) => {}
            Ok(other) => assert_ne!(other, public),
            Err(e) => panic!("unexpected error {e}"),
        }
        let mut short = KeyType::K256.multicodec_prefix().to_vec();
        short.extend_from_slice(&public.compressed_bytes()[..32]);
        let short = multibase::encode(multibase::Base::Base58Btc, &short);
        assert_eq!(
            PublicKey::from_multikey(&short),
            Err(CryptoError::BadKeyLength {
                expected: "33",
                actual: 32
            })
        );
    }

    #[test]
    fn invalid_point_is_rejected() {
        for kt in BOTH {
            // 0x05 is not a SEC1 tag at all.
            let mut bytes = [0u8; 33];
            bytes[0] = 0x05;
            assert_eq!(
                PublicKey::from_compressed(kt, &bytes),
                Err(CryptoError::InvalidPoint)
            );
            // x = 2^256 - 1 is larger than both field primes, so no point has it.
            let mut bytes = [0xffu8; 33];
            bytes[0] = 0x02;
            assert_eq!(
                PublicKey::from_compressed(kt, &bytes),
                Err(CryptoError::InvalidPoint)
            );
        }
    }

    #[test]
    fn garbage_base58_is_rejected() {
        // '0', 'O', 'I' and 'l' are not in the base58btc alphabet.
        assert_eq!(
            PublicKey::from_did_key("did:key:z0OIl"),
            Err(CryptoError::BadMultibase("invalid base58btc"))
        );
        assert!(matches!(
            PublicKey::from_multikey("zQ3sh!!"),
            Err(CryptoError::BadMultibase(_))
        ));
        assert!(matches!(
            PublicKey::from_multikey("Q3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme"),
            Err(CryptoError::BadMultibase(_))
        ));
        assert!(matches!(
            PublicKey::from_legacy_multibase(KeyType::P256, ""),
            Err(CryptoError::BadMultibase(_))
        ));
    }

    #[test]
    fn non_did_key_strings_are_rejected() {
        assert_eq!(
            PublicKey::from_did_key("did:plc:abc"),
            Err(CryptoError::NotDidKey)
        );
        assert_eq!(
            PublicKey::from_did_key("zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme"),
            Err(CryptoError::NotDidKey)
        );
    }

    #[test]
    fn private_key_bytes_round_trip_and_bad_scalars_are_rejected() {
        for kt in BOTH {
            let key = PrivateKey::from_seed(kt, 14);
            let again = PrivateKey::from_bytes(kt, &key.to_bytes()).unwrap();
            assert_eq!(again.public_key(), key.public_key());
            assert_eq!(
                PrivateKey::from_bytes(kt, &[0u8; 32]).unwrap_err(),
                CryptoError::InvalidPrivateKey
            );
            assert_eq!(
                PrivateKey::from_bytes(kt, &order(kt)).unwrap_err(),
                CryptoError::InvalidPrivateKey
            );
            assert_eq!(
                PrivateKey::from_bytes(kt, &[1u8; 31]).unwrap_err(),
                CryptoError::InvalidPrivateKey
            );
        }
    }

    #[test]
    fn from_seed_is_deterministic_and_distinct() {
        for kt in BOTH {
            assert_eq!(
                PrivateKey::from_seed(kt, 42).to_bytes(),
                PrivateKey::from_seed(kt, 42).to_bytes()
            );
            assert_ne!(
                PrivateKey::from_seed(kt, 42).to_bytes(),
                PrivateKey::from_seed(kt, 43).to_bytes()
            );
            // Documented derivation: SHA-256 of the big-endian seed.
            assert_eq!(
                PrivateKey::from_seed(kt, 42).to_bytes(),
                sha256(&42u64.to_be_bytes())
            );
        }
    }

    #[test]
    fn private_key_debug_hides_the_secret() {
        for kt in BOTH {
            let key = PrivateKey::from_seed(kt, 15);
            let debug = format!("{key:?}");
            let hex: String = key.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
            assert!(!debug.contains(&hex), "{debug}");
            assert!(!debug.contains(&format!("{:?}", key.to_bytes())), "{debug}");
            assert!(debug.contains(&key.public_key().to_did_key()), "{debug}");
        }
    }

    #[test]
    fn key_type_metadata() {
        assert_eq!(KeyType::K256.jwt_alg(), "ES256K");
        assert_eq!(KeyType::P256.jwt_alg(), "ES256");
        for kt in BOTH {
            assert_eq!(KeyType::from_jwt_alg(kt.jwt_alg()), Some(kt));
            assert_eq!(KeyType::from_multicodec(kt.multicodec()), Some(kt));
        }
        assert_eq!(KeyType::from_jwt_alg("EdDSA"), None);
    }

    #[test]
    fn equal_keys_hash_equally() {
        use std::collections::HashSet;
        let public = PrivateKey::from_seed(KeyType::P256, 16).public_key();
        let reparsed = PublicKey::from_did_key(&public.to_did_key()).unwrap();
        let set: HashSet<PublicKey> = [public, reparsed].into_iter().collect();
        assert_eq!(set.len(), 1);
    }
}
