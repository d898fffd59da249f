//! barn-repo: the atproto repository core barn stands on. Pure: no network,
//! no disk. Everything else in barn — verifying firehose commits, importing
//! `getRepo` CARs, reconcile diffs, point-in-time CARs — is a use of it.
//!
//! - [`syntax`]: validated identifiers (DID, handle, NSID, record key, TID,
//!   AT-URI, datetime, CID strings).
//! - [`cbor`] and [`data`]: strict DAG-CBOR and the atproto data model, with
//!   its JSON form (`$link`, `$bytes`).
//! - [`car`]: streaming CAR v1 reading with every block hash-checked, and
//!   writing.
//! - [`mst`]: the Merkle Search Tree: load, get, iterate, insert/delete with
//!   the reference implementation's exact CIDs, diff, and the sync 1.1
//!   inversion of a commit's ops.
//! - [`commit`] and [`crypto`]: v3 commits, signatures (K-256 and P-256,
//!   low-S only), `did:key` and Multikey.
//!
//! The one abstraction over storage is [`BlockSource`]: an MST can be read
//! from memory, from a CAR, or (later) from barn's store.

pub mod blocks;
pub mod car;
pub mod cbor;
pub mod commit;
pub mod crypto;
pub mod data;
mod error;
pub mod export;
pub mod mst;
pub mod syntax;

pub use blocks::{BlockMap, BlockSource};
pub use cid::Cid;
pub use error::{Error, Result};

use cid::multihash::Multihash;
use sha2::{Digest, Sha256};

/// Multicodec code of DAG-CBOR (records, MST nodes, commits).
pub const DAG_CBOR: u64 = 0x71;
/// Multicodec code of raw bytes (blobs).
pub const RAW: u64 = 0x55;
/// Multihash code of SHA2-256, the only hash atproto repositories use.
pub const SHA2_256: u64 = 0x12;

/// The CID of a DAG-CBOR block.
pub fn cid_for_cbor(bytes: &[u8]) -> Cid {
    cid_with_codec(DAG_CBOR, bytes)
}

/// The CID of a raw block (a blob).
pub fn cid_for_raw(bytes: &[u8]) -> Cid {
    cid_with_codec(RAW, bytes)
}

fn cid_with_codec(codec: u64, bytes: &[u8]) -> Cid {
    let digest: [u8; 32] = Sha256::digest(bytes).into();
    cid_from_digest(codec, &digest)
}

/// Builds a CIDv1 from a SHA2-256 digest.
pub fn cid_from_digest(codec: u64, digest: &[u8; 32]) -> Cid {
    // wrap only fails for digests over 64 bytes.
    let mh = Multihash::wrap(SHA2_256, digest).unwrap_or_default();
    Cid::new_v1(codec, mh)
}

/// Checks that a CID is one atproto repositories use (v1, DAG-CBOR or raw,
/// SHA2-256 with a 32-byte digest) and returns its digest.
pub fn check_cid(cid: &Cid) -> Result<&[u8; 32]> {
    if cid.version() != cid::Version::V1 {
        return Err(Error::UnsupportedCid {
            cid: *cid,
            reason: "not cidv1",
        });
    }
    if cid.codec() != DAG_CBOR && cid.codec() != RAW {
        return Err(Error::UnsupportedCid {
            cid: *cid,
            reason: "codec is neither dag-cbor nor raw",
        });
    }
    let mh = cid.hash();
    if mh.code() != SHA2_256 {
        return Err(Error::UnsupportedCid {
            cid: *cid,
            reason: "hash is not sha2-256",
        });
    }
    mh.digest().try_into().map_err(|_| Error::UnsupportedCid {
        cid: *cid,
        reason: "sha2-256 digest is not 32 bytes",
    })
}

/// Parses the binary CID at the start of `bytes`; returns it and its length.
/// The atproto shape (v1, dag-cbor or raw, sha2-256) is decoded directly;
/// anything else goes through the cid crate's general reader.
pub(crate) fn read_cid_prefix(bytes: &[u8]) -> std::result::Result<(Cid, usize), cid::Error> {
    if let [0x01, codec @ (0x71 | 0x55), 0x12, 0x20, rest @ ..] = bytes
        && let Some(digest) = rest.get(..32)
    {
        let mh = Multihash::wrap(SHA2_256, digest)?;
        return Ok((Cid::new_v1(u64::from(*codec), mh), 36));
    }
    let mut cursor = std::io::Cursor::new(bytes);
    let cid = Cid::read_bytes(&mut cursor)?;
    Ok((cid, cursor.position() as usize))
}

/// Verifies that `bytes` hash to `cid`.
pub fn verify_block(cid: &Cid, bytes: &[u8]) -> Result<()> {
    let want = check_cid(cid)?;
    let got: [u8; 32] = Sha256::digest(bytes).into();
    if &got != want {
        return Err(Error::HashMismatch(*cid));
    }
    Ok(())
}
