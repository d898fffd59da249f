#![allow(clippy::unwrap_used, clippy::expect_used)]
//! barn follows both PDSes through the whole workload with its blob
//! workers keeping blobs in a local directory (the default storage): every
//! blob of every account's live records ends up stored, byte-identical to
//! `getBlob`, and blobs whose records were deleted or replaced are kept.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_blobs_are_stored_in_a_local_directory() {
    let dir = tempfile::tempdir().unwrap();
    common::blobs::workload_blobs_are_stored(barn_blobs::StorageConfig::Local {
        dir: dir.path().join("blobs"),
    })
    .await;
}
