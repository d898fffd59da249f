//! Test support for barn: a real atproto network on loopback, driven by a
//! realistic workload, and a helper that judges barn's copy of a repository
//! against the PDS's.
//!
//! - [`Network`] starts a did:plc directory and two reference PDSes (the
//!   npm packages `@did-plc/server` and `@atproto/pds`, from
//!   `interop/network`'s lockfile, on Node 22 from npm) on 127.0.0.1, each
//!   with its own data directory; it installs them on first use.
//! - [`Network::run_workload`] runs the seeded workload driver (accounts,
//!   posts with images, replies, likes, reposts, follows, blocks, edits,
//!   deletes, `applyWrites`, non-Bluesky records, then handle change,
//!   deactivation, takedown, deletion and a full migration a → b) and
//!   returns its [`Summary`]; [`Network::start_workload`] runs it in the
//!   background and can stop it before a phase ([`Pause`]) so a test can
//!   act mid-workload. [`Network::start_with`] sets the PDSes' firehose
//!   backlog window ([`NetworkOptions`]), to provoke `OutdatedCursor`.
//! - [`compare_with_pds`] checks barn's CAR of a DID against the PDS's
//!   `getRepo`: same commit and rev, same records, every block hash, the
//!   signature against the DID document.
//! - [`FakePds`] serves crafted `subscribeRepos` frames, `getRepo` CARs,
//!   `listRepos` pages, `getLatestCommit` / `getRepoStatus` with settable
//!   hosting status, blobs (`getBlob`, with scripted faults: [`BlobFault`])
//!   and DID documents from 127.0.0.1, and logs what was asked;
//!   [`FakeAccount`] drafts valid commits to break one thing at a time
//!   (hostile-input and backfill tests).
//! - [`S3Server`] runs a real S3-compatible server (moto, from PyPI, via
//!   `interop/s3`) on 127.0.0.1 for blob-store tests, and can take it off
//!   the network and back, its objects kept, for outage tests.
//!
//! Nothing here is used by barn itself; it is a dev-dependency only.

mod error;

pub mod compare;
pub mod fake_pds;
pub mod network;
pub mod process;
pub mod s3;
pub mod workload;
pub mod xrpc;

pub use compare::{Comparison, Identity, compare_cars, compare_with_pds};
pub use error::{Error, Result};
pub use fake_pds::{
    AccountHead, BlobFault, BlobRequest, DraftCommit, DraftOptions, FakeAccount, FakePds, did_doc,
    peak_concurrency,
};
pub use network::{Network, NetworkOptions, Pds, Plc};
pub use s3::S3Server;
pub use workload::{AccountSummary, Pause, Summary, WorkloadOptions, WorkloadRun};
pub use xrpc::{Client, XrpcError};
