//! `sig_verify`: commit signature verifications per second, K-256 and
//! P-256, on one set of 64 signed commits per curve (16 keys x 4 commits,
//! made with barn's `Commit::create`). Every contender checks the same
//! signatures over the same unsigned commit bytes.
//!
//! - barn `PublicKey::verify`, key parsed once (the intended use: keys are
//!   cached per DID).
//! - barn `PublicKey::from_compressed` + `verify`: key parsed every call,
//!   like the two peers' APIs do.
//! - jacquard `Commit::verify`: its own path, which re-encodes the unsigned
//!   commit and parses the key on every call, then calls k256/p256.
//! - atrium: atrium-repo has no signature code; the atrium project's
//!   `atrium-crypto` `Verifier::verify` (key bytes parsed per call, k256 /
//!   p256 underneath) stands in for it.
//! - The RustCrypto `k256`/`p256` crates with a pre-parsed key: what both
//!   peers delegate to, without their per-call overhead.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use barn_benches::{DID, Tally, Work, bench, report, tid};
use barn_repo::commit::Commit;
use barn_repo::crypto::{KeyType, PrivateKey, PublicKey};
use criterion::{Criterion, SamplingMode};
use jacquard_common::SmolStr;

const KEYS: u64 = 16;
const COMMITS_PER_KEY: u64 = 4;
const SAMPLES: usize = 10;

enum RustCryptoKey {
    K256(k256::ecdsa::VerifyingKey),
    P256(p256::ecdsa::VerifyingKey),
}

impl RustCryptoKey {
    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        match self {
            RustCryptoKey::K256(k) => {
                use k256::ecdsa::signature::Verifier;
                let sig = k256::ecdsa::Signature::from_slice(sig).unwrap();
                k.verify(msg, &sig).is_ok()
            }
            RustCryptoKey::P256(k) => {
                use p256::ecdsa::signature::Verifier;
                let sig = p256::ecdsa::Signature::from_slice(sig).unwrap();
                k.verify(msg, &sig).is_ok()
            }
        }
    }
}

struct Case {
    key_type: KeyType,
    key: PublicKey,
    compressed: [u8; 33],
    unsigned: Vec<u8>,
    sig: Vec<u8>,
    jacquard_commit: jacquard_repo::commit::Commit<SmolStr>,
    jacquard_key: jacquard_common::types::crypto::PublicKey<'static>,
    rust_crypto: RustCryptoKey,
}

fn make_cases(key_type: KeyType) -> Vec<Case> {
    let mut out = Vec::new();
    for k in 0..KEYS {
        let private = PrivateKey::from_seed(key_type, 1000 + k);
        let public = private.public_key();
        for n in 0..COMMITS_PER_KEY {
            let data = barn_repo::cid_for_cbor(&(k * 100 + n).to_be_bytes());
            let rev = tid(1_700_000_000_000_000 + (k * 100 + n) * 1_000_000, 3);
            let (commit, bytes, _) = Commit::create(DID, data, &rev, &private).unwrap();
            let compressed = public.compressed_bytes();
            out.push(Case {
                key_type,
                key: public.clone(),
                compressed,
                unsigned: commit.unsigned_bytes().to_vec(),
                sig: commit.sig.clone(),
                jacquard_commit: jacquard_repo::commit::Commit::from_cbor(&bytes).unwrap(),
                jacquard_key: jacquard_common::types::crypto::PublicKey::decode(
                    &public.to_multikey(),
                )
                .unwrap(),
                rust_crypto: match key_type {
                    KeyType::K256 => RustCryptoKey::K256(
                        k256::ecdsa::VerifyingKey::from_sec1_bytes(&compressed).unwrap(),
                    ),
                    KeyType::P256 => RustCryptoKey::P256(
                        p256::ecdsa::VerifyingKey::from_sec1_bytes(&compressed).unwrap(),
                    ),
                },
            });
        }
    }
    out
}

fn atrium_alg(key_type: KeyType) -> atrium_crypto::Algorithm {
    match key_type {
        KeyType::K256 => atrium_crypto::Algorithm::Secp256k1,
        KeyType::P256 => atrium_crypto::Algorithm::P256,
    }
}

fn barn_cached(cases: &[Case]) -> usize {
    cases
        .iter()
        .filter(|c| c.key.verify(&c.unsigned, &c.sig).is_ok())
        .count()
}

fn barn_parse(cases: &[Case]) -> usize {
    cases
        .iter()
        .filter(|c| {
            PublicKey::from_compressed(c.key_type, &c.compressed)
                .is_ok_and(|k| k.verify(&c.unsigned, &c.sig).is_ok())
        })
        .count()
}

fn jacquard(cases: &[Case]) -> usize {
    cases
        .iter()
        .filter(|c| c.jacquard_commit.verify(&c.jacquard_key).is_ok())
        .count()
}

fn atrium(cases: &[Case]) -> usize {
    let verifier = atrium_crypto::verify::Verifier::default();
    cases
        .iter()
        .filter(|c| {
            verifier
                .verify(atrium_alg(c.key_type), &c.compressed, &c.unsigned, &c.sig)
                .is_ok()
        })
        .count()
}

fn rust_crypto(cases: &[Case]) -> usize {
    cases
        .iter()
        .filter(|c| c.rust_crypto.verify(&c.unsigned, &c.sig))
        .count()
}

/// Verifies every case, returns how many passed.
type Contender = fn(&[Case]) -> usize;

fn run_curve(c: &mut Criterion, key_type: KeyType, group: &str, crate_name: &str) {
    let cases = make_cases(key_type);
    let n = cases.len();
    let contenders: [(&str, Contender); 5] = [
        ("barn verify (key cached)", barn_cached),
        ("barn parse key + verify", barn_parse),
        ("jacquard Commit::verify", jacquard),
        ("atrium-crypto Verifier::verify", atrium),
        (crate_name, rust_crypto),
    ];
    for (name, f) in contenders {
        assert_eq!(f(&cases), n, "{group}: {name} rejected a valid signature");
    }
    // And all of them reject a wrong message.
    let mut bad: Vec<Case> = make_cases(key_type).into_iter().take(1).collect();
    bad[0].unsigned.push(0);
    assert_eq!(barn_cached(&bad), 0);
    assert_eq!(atrium(&bad), 0);
    assert_eq!(rust_crypto(&bad), 0);

    let tally = Tally::new();
    let mut g = c.benchmark_group(group);
    g.sample_size(SAMPLES)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for (name, f) in contenders {
        bench(&mut g, &tally, name, || (), |()| f(&cases));
    }
    g.finish();
    report(
        group,
        Work::Ops(n as u64, "verifies"),
        &tally,
        SAMPLES,
        &["barn verify (key cached)", "barn parse key + verify"],
        &[
            "jacquard Commit::verify",
            "atrium-crypto Verifier::verify",
            crate_name,
        ],
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    run_curve(
        &mut c,
        KeyType::K256,
        "sig_verify_k256",
        "k256 crate (key cached)",
    );
    run_curve(
        &mut c,
        KeyType::P256,
        "sig_verify_p256",
        "p256 crate (key cached)",
    );
    c.final_summary();
}
