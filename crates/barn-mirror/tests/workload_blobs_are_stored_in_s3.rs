#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The same as `workload_blobs_are_stored_in_a_local_directory`, with the
//! blobs in a real S3-compatible server (moto, started by the test suite
//! on 127.0.0.1).

mod common;

use barn_testkit::S3Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_blobs_are_stored_in_s3() {
    let s3 = S3Server::start().await.unwrap();
    s3.create_bucket("barn-blobs").await.unwrap();
    common::blobs::workload_blobs_are_stored(barn_blobs::StorageConfig::S3 {
        endpoint: Some(s3.endpoint()),
        bucket: "barn-blobs".into(),
        region: "us-east-1".into(),
        access_key_id: Some("test".into()),
        secret_access_key: Some("test".into()),
        allow_http: true,
    })
    .await;
}
