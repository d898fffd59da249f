//! Repository commits (version 3) and whole-repository verification.
//!
//! A commit is `{did, version: 3, data, rev, prev, sig}`; `sig` signs the
//! DAG-CBOR encoding of the same map without `sig`.
//!
//! # Tricky bits
//! - The signed bytes are cut out of the commit's *own* bytes (the map
//!   minus its `sig` entry), never re-encoded from parsed fields: a field
//!   barn does not know still counts, and a signature verified here is
//!   verified over exactly what the author signed.
//! - `prev` is required to be present (and is almost always null) in v3,
//!   so a missing `prev` is malformed, not "no previous commit".

use cid::Cid;

use crate::blocks::{BlockMap, BlockSource};
use crate::cbor::{Decoder, Encoder, MAJOR_MAP};
use crate::crypto::{PrivateKey, PublicKey};
use crate::mst::{Mst, MstWalker};
use crate::syntax::{Did, Tid};
use crate::{Error, Result, cid_for_cbor};

/// The commit version this crate reads and writes.
pub const COMMIT_VERSION: i64 = 3;

/// A decoded, structurally valid commit (signature not yet checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// The repository's DID.
    pub did: String,
    /// Always 3.
    pub version: i64,
    /// Root of the record MST.
    pub data: Cid,
    /// Revision: a TID, increasing with every commit.
    pub rev: String,
    /// Legacy previous-commit link (usually null).
    pub prev: Option<Cid>,
    /// The 64-byte compact signature.
    pub sig: Vec<u8>,
    /// The bytes that `sig` signs.
    unsigned: Vec<u8>,
}

impl Commit {
    /// Decodes a commit block strictly.
    pub fn decode(bytes: &[u8]) -> Result<Commit> {
        let bad = |m: &str| Error::Commit(m.to_string());
        crate::cbor::validate(bytes)?;
        let mut d = Decoder::new(bytes);
        let n = d.map_len()?;
        let mut did = None;
        let mut version = None;
        let mut data = None;
        let mut rev = None;
        let mut prev = None;
        let mut sig = None;
        let mut unsigned_body = Vec::with_capacity(bytes.len());
        let mut prev_key: Option<&[u8]> = None;
        for _ in 0..n {
            let start = d.position();
            let key = d.key(prev_key)?;
            prev_key = Some(key);
            match key {
                b"did" => did = Some(d.text()?.to_string()),
                b"version" => version = Some(d.int()?),
                b"data" => data = Some(d.link()?),
                b"rev" => rev = Some(d.text()?.to_string()),
                b"prev" => prev = Some(d.nullable_link()?),
                b"sig" => sig = Some(d.bytes()?.to_vec()),
                // Unknown fields are signed like the rest.
                _ => d.skip_value(crate::cbor::DEFAULT_MAX_DEPTH)?,
            }
            if key != b"sig" {
                unsigned_body.extend_from_slice(&bytes[start..d.position()]);
            }
        }
        d.finish()?;
        let version = version.ok_or_else(|| bad("missing version"))?;
        if version != COMMIT_VERSION {
            return Err(Error::Commit(format!("unsupported version {version}")));
        }
        let did = did.ok_or_else(|| bad("missing did"))?;
        Did::validate(&did)?;
        let rev = rev.ok_or_else(|| bad("missing rev"))?;
        Tid::validate(&rev)?;
        let sig = sig.ok_or_else(|| bad("missing sig"))?;
        let mut e = Encoder::with_capacity(unsigned_body.len() + 2);
        e.head(MAJOR_MAP, n - 1);
        e.out.extend_from_slice(&unsigned_body);
        Ok(Commit {
            did,
            version,
            data: data.ok_or_else(|| bad("missing data"))?,
            rev,
            prev: prev.ok_or_else(|| bad("missing prev"))?,
            sig,
            unsigned: e.out,
        })
    }

    /// Builds and signs a new commit; returns it with its block and CID.
    pub fn create(
        did: &str,
        data: Cid,
        rev: &str,
        key: &PrivateKey,
    ) -> Result<(Commit, Vec<u8>, Cid)> {
        Did::validate(did)?;
        Tid::validate(rev)?;
        let unsigned = encode_commit(did, rev, None, &data);
        let sig = key.sign(&unsigned).to_vec();
        let bytes = encode_commit(did, rev, Some(&sig), &data);
        let cid = cid_for_cbor(&bytes);
        let commit = Commit {
            did: did.to_string(),
            version: COMMIT_VERSION,
            data,
            rev: rev.to_string(),
            prev: None,
            sig,
            unsigned,
        };
        Ok((commit, bytes, cid))
    }

    /// The bytes the signature covers.
    pub fn unsigned_bytes(&self) -> &[u8] {
        &self.unsigned
    }

    /// Checks the signature against `key`.
    pub fn verify_signature(&self, key: &PublicKey) -> Result<()> {
        key.verify(&self.unsigned, &self.sig)
            .map_err(Error::BadSignature)
    }
}

/// Encodes a v3 commit in canonical key order: did, rev, sig, data, prev,
/// version.
fn encode_commit(did: &str, rev: &str, sig: Option<&[u8]>, data: &Cid) -> Vec<u8> {
    let mut e = Encoder::with_capacity(160);
    e.head(MAJOR_MAP, if sig.is_some() { 6 } else { 5 });
    e.text("did");
    e.text(did);
    e.text("rev");
    e.text(rev);
    if let Some(sig) = sig {
        e.text("sig");
        e.bytes(sig);
    }
    e.text("data");
    e.link(data);
    e.text("prev");
    e.null();
    e.text("version");
    e.int(COMMIT_VERSION);
    e.out
}

/// A fully verified repository state.
#[derive(Debug, Clone)]
pub struct VerifiedRepo {
    /// The commit's CID.
    pub commit_cid: Cid,
    /// The commit.
    pub commit: Commit,
    /// Every record path and CID, in order.
    pub records: Vec<(String, Cid)>,
}

/// Verifies a whole repository: the commit at `root` (DID and signature
/// when given), every MST node (structure, layers, key order within and
/// across nodes, hence the canonical shape for its keys), and the presence
/// and DAG-CBOR validity of every record block.
pub fn verify_repo(
    blocks: &impl BlockSource,
    root: &Cid,
    did: Option<&str>,
    key: Option<&PublicKey>,
) -> Result<VerifiedRepo> {
    let commit_bytes = blocks.get_block(root)?.ok_or(Error::MissingBlock(*root))?;
    let commit = Commit::decode(&commit_bytes)?;
    if let Some(did) = did
        && commit.did != did
    {
        return Err(Error::Commit(format!(
            "commit is for {}, expected {did}",
            commit.did
        )));
    }
    if let Some(key) = key {
        commit.verify_signature(key)?;
    }
    // The full walk checks every node's layer against its keys' heights,
    // key order within and across nodes, no empty nodes below the root, a
    // root with entries, and canonical prefix compression (in the decoder).
    // A key set has exactly one tree meeting all of these, so a tree that
    // passes is the canonical tree of its keys without being rebuilt.
    let mut records = Vec::new();
    for item in MstWalker::new(blocks, &commit.data)? {
        let (key, cid) = item?;
        let record = blocks.get_block(&cid)?.ok_or(Error::MissingBlock(cid))?;
        crate::cbor::validate(&record)?;
        records.push((String::from_utf8_lossy(&key).into_owned(), cid));
    }
    Ok(VerifiedRepo {
        commit_cid: *root,
        commit,
        records,
    })
}

/// Builds a signed repository from scratch: an MST over `records` (path,
/// DAG-CBOR bytes) and one commit. Returns the commit CID and every block.
pub fn build_repo(
    did: &str,
    rev: &str,
    key: &PrivateKey,
    records: impl IntoIterator<Item = (String, Vec<u8>)>,
) -> Result<(Cid, BlockMap)> {
    let mut blocks = BlockMap::new();
    let mut entries: Vec<(Vec<u8>, Cid)> = Vec::new();
    for (path, bytes) in records {
        crate::cbor::validate(&bytes)?;
        let cid = blocks.put_cbor(bytes);
        entries.push((path.into_bytes(), cid));
    }
    entries.sort();
    let mut tree = Mst::from_sorted(BlockMap::new(), entries)?;
    let data = tree.root_cid();
    blocks.extend(tree.take_new_blocks());
    let (_, commit_bytes, commit_cid) = Commit::create(did, data, rev, key)?;
    blocks.insert(commit_cid, commit_bytes.into());
    Ok((commit_cid, blocks))
}
