//! The compare helper: is barn's copy of a repository the same as the
//! PDS's?
//!
//! For a DID it resolves the DID document (signing key, PDS endpoint),
//! fetches the PDS's `com.atproto.sync.getRepo`, and checks both CARs the
//! same way: every block's hash, the commit's DID and signature against the
//! document's key, the whole MST (shape, order, layers) and every record
//! block. Then the two must agree on commit CID, rev and the set of
//! (path, record CID).

use bytes::Bytes;
use serde_json::Value;

use barn_repo::Cid;
use barn_repo::car::{CarLimits, read_car};
use barn_repo::commit::{VerifiedRepo, verify_repo};
use barn_repo::crypto::PublicKey;

use crate::error::{Error, Result};
use crate::xrpc::Client;

/// What a DID document says, as far as a backup cares.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The DID.
    pub did: String,
    /// The `#atproto` signing key.
    pub signing_key: PublicKey,
    /// The `#atproto_pds` service endpoint.
    pub pds: String,
    /// The first `at://` handle in `alsoKnownAs`, if any.
    pub handle: Option<String>,
}

impl Identity {
    /// Extracts signing key, PDS and handle from a DID document (Multikey
    /// and legacy verification methods).
    pub fn from_document(did: &str, doc: &Value) -> Result<Identity> {
        let bad = |message: &str| Error::DidDoc {
            did: did.to_owned(),
            message: message.to_owned(),
        };
        if doc["id"].as_str() != Some(did) {
            return Err(bad("its id is not the DID"));
        }
        let is_frag = |id: &Value, frag: &str| {
            id.as_str()
                .is_some_and(|s| s == frag || s.strip_prefix(did) == Some(frag))
        };
        let method = doc["verificationMethod"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| is_frag(&m["id"], "#atproto")))
            .ok_or_else(|| bad("no #atproto verification method"))?;
        let signing_key = PublicKey::from_verification_method(
            method["type"].as_str().unwrap_or_default(),
            method["publicKeyMultibase"].as_str().unwrap_or_default(),
        )
        .map_err(|e| bad(&format!("#atproto key: {e}")))?;
        let pds = doc["service"]
            .as_array()
            .and_then(|ss| ss.iter().find(|s| is_frag(&s["id"], "#atproto_pds")))
            .and_then(|s| s["serviceEndpoint"].as_str())
            .ok_or_else(|| bad("no #atproto_pds service"))?
            .trim_end_matches('/')
            .to_owned();
        let handle = doc["alsoKnownAs"].as_array().and_then(|aka| {
            aka.iter()
                .filter_map(Value::as_str)
                .find_map(|s| s.strip_prefix("at://").map(str::to_owned))
        });
        Ok(Identity {
            did: did.to_owned(),
            signing_key,
            pds,
            handle,
        })
    }

    /// Resolves a did:plc through the PLC directory at `plc`.
    pub async fn resolve(client: &Client, plc: &str, did: &str) -> Result<Identity> {
        let doc = client.plc_document(plc, did).await?;
        Identity::from_document(did, &doc)
    }
}

/// Loads and fully verifies a repository CAR for `identity`.
pub fn verify_car(car: Bytes, identity: &Identity, what: &str) -> Result<VerifiedCar> {
    let file = read_car(car, &CarLimits::default()).map_err(Error::repo(what))?;
    let root = *file
        .root()
        .ok_or_else(|| Error::repo(what)(barn_repo::Error::CarHeader("no root".into())))?;
    let repo = verify_repo(
        &file.blocks,
        &root,
        Some(&identity.did),
        Some(&identity.signing_key),
    )
    .map_err(Error::repo(what))?;
    Ok(VerifiedCar {
        blocks: file.blocks.len(),
        repo,
    })
}

/// A CAR that passed [`verify_car`].
#[derive(Debug, Clone)]
pub struct VerifiedCar {
    /// Distinct blocks in the CAR.
    pub blocks: usize,
    /// The verified repository.
    pub repo: VerifiedRepo,
}

/// The outcome of a successful comparison.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// The commit CID both hold.
    pub commit: Cid,
    /// The rev both hold.
    pub rev: String,
    /// Records in the repository.
    pub records: usize,
    /// Blocks in barn's CAR.
    pub barn_blocks: usize,
    /// Blocks in the PDS's CAR.
    pub pds_blocks: usize,
}

/// Compares barn's CAR of `did` with the PDS's current `getRepo`.
/// The PDS and signing key come from the DID document at `plc`.
pub async fn compare_with_pds(
    client: &Client,
    plc: &str,
    did: &str,
    barn_car: Bytes,
) -> Result<Comparison> {
    let identity = Identity::resolve(client, plc, did).await?;
    let pds_car = client
        .get_ok(&identity.pds, "com.atproto.sync.getRepo", &[("did", did)])
        .await?;
    compare_cars(&identity, barn_car, pds_car)
}

/// Compares two CARs of the same repository, both verified against
/// `identity`.
pub fn compare_cars(identity: &Identity, barn_car: Bytes, pds_car: Bytes) -> Result<Comparison> {
    let barn = verify_car(
        barn_car,
        identity,
        &format!("barn's CAR of {}", identity.did),
    )?;
    let pds = verify_car(
        pds_car,
        identity,
        &format!("the PDS's CAR of {}", identity.did),
    )?;
    let mut problems = Vec::new();
    if barn.repo.commit_cid != pds.repo.commit_cid {
        problems.push(format!(
            "commit {} (barn) vs {} (PDS)",
            barn.repo.commit_cid, pds.repo.commit_cid
        ));
    }
    if barn.repo.commit.rev != pds.repo.commit.rev {
        problems.push(format!(
            "rev {} (barn) vs {} (PDS)",
            barn.repo.commit.rev, pds.repo.commit.rev
        ));
    }
    if barn.repo.records != pds.repo.records {
        let only = |a: &VerifiedRepo, b: &VerifiedRepo| -> Vec<String> {
            a.records
                .iter()
                .filter(|r| !b.records.contains(r))
                .take(5)
                .map(|(p, c)| format!("{p} {c}"))
                .collect()
        };
        problems.push(format!(
            "records differ: {} (barn) vs {} (PDS); only in barn: {:?}; only in PDS: {:?}",
            barn.repo.records.len(),
            pds.repo.records.len(),
            only(&barn.repo, &pds.repo),
            only(&pds.repo, &barn.repo),
        ));
    }
    if !problems.is_empty() {
        return Err(Error::Mismatch {
            did: identity.did.clone(),
            message: problems.join("; "),
        });
    }
    Ok(Comparison {
        commit: pds.repo.commit_cid,
        rev: pds.repo.commit.rev.clone(),
        records: pds.repo.records.len(),
        barn_blocks: barn.blocks,
        pds_blocks: pds.blocks,
    })
}
