//! Where blob bytes live: an [`object_store`] (a local directory by
//! default, S3 or any S3-compatible server at scale), under a
//! content-addressed key.
//!
//! Keys are `blobs/<shard>/<cid>`, where `shard` is the first 12 bits of
//! the sha-256 digest in hex (`000`–`fff`): a directory holds 1/4096th of
//! the blobs (24k at 100M), which local filesystems need and S3 does not
//! mind, and there are never more than 4096 directories to create (a
//! two-level 256×256 layout made a fresh store's first blobs pay a `mkdir`
//! each, a large part of the fetch profile).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cid::Cid;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{Attribute, Attributes, ObjectStore, ObjectStoreExt, RetryConfig};

use crate::error::{Error, Result};

/// Bytes a writer keeps in memory before it switches to a multipart
/// upload: blobs larger than this are streamed through in parts.
const WRITE_BUFFER: usize = 8 << 20;

/// Where to keep blobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageConfig {
    /// A local directory (created if missing). No server needed.
    Local {
        /// The directory.
        dir: PathBuf,
    },
    /// An S3 bucket, on AWS or any S3-compatible server.
    S3 {
        /// Endpoint URL for S3-compatible servers (`http://127.0.0.1:9000`);
        /// `None` for AWS.
        endpoint: Option<String>,
        /// The bucket (must exist).
        bucket: String,
        /// Region (`us-east-1` for most S3-compatible servers).
        region: String,
        /// Access key id; `None` to take it from the environment
        /// (`AWS_ACCESS_KEY_ID`, …).
        access_key_id: Option<String>,
        /// Secret access key; `None` to take it from the environment.
        secret_access_key: Option<String>,
        /// Allow a plain-HTTP endpoint.
        allow_http: bool,
    },
}

/// A blob read back.
pub struct StoredBlob {
    /// Its size in bytes.
    pub size: u64,
    /// Its bytes, streamed.
    pub stream: BoxStream<'static, Result<Bytes>>,
}

impl std::fmt::Debug for StoredBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredBlob")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// The blob object store. Cheap to clone.
#[derive(Clone)]
pub struct BlobStorage {
    store: Arc<dyn ObjectStore>,
    /// Local directories cannot keep a content type; S3 keeps it.
    keeps_attributes: bool,
    describe: String,
}

impl std::fmt::Debug for BlobStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe)
    }
}

impl BlobStorage {
    /// Opens the storage `config` names.
    pub fn open(config: &StorageConfig) -> Result<BlobStorage> {
        match config {
            StorageConfig::Local { dir } => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    Error::Config(format!("creating blob directory {}: {e}", dir.display()))
                })?;
                // fsync file and directory before the rename publishes it: a
                // blob marked stored must survive a power cut.
                let fs = LocalFileSystem::new_with_prefix(dir)?.with_fsync(true);
                Ok(BlobStorage {
                    store: Arc::new(fs),
                    keeps_attributes: false,
                    describe: format!("local directory {}", dir.display()),
                })
            }
            StorageConfig::S3 {
                endpoint,
                bucket,
                region,
                access_key_id,
                secret_access_key,
                allow_http,
            } => {
                let mut b = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_region(region)
                    .with_allow_http(*allow_http)
                    // barn retries a blob on its own schedule; the client
                    // must not hide an outage behind minutes of retries.
                    .with_retry(RetryConfig {
                        max_retries: 2,
                        retry_timeout: Duration::from_secs(10),
                        ..RetryConfig::default()
                    });
                if let Some(e) = endpoint {
                    b = b.with_endpoint(e);
                }
                if let Some(k) = access_key_id {
                    b = b.with_access_key_id(k);
                }
                if let Some(s) = secret_access_key {
                    b = b.with_secret_access_key(s);
                }
                let s3 = b.build()?;
                Ok(BlobStorage {
                    store: Arc::new(s3),
                    keeps_attributes: true,
                    describe: format!(
                        "s3 bucket {bucket} at {}",
                        endpoint.as_deref().unwrap_or("AWS")
                    ),
                })
            }
        }
    }

    /// The object key of blob `cid`.
    pub fn key(cid: &Cid) -> Path {
        let d = cid.hash().digest();
        let (a, b) = (
            d.first().copied().unwrap_or(0),
            d.get(1).copied().unwrap_or(0),
        );
        let shard = (u16::from(a) << 4) | u16::from(b >> 4);
        Path::from(format!("blobs/{shard:03x}/{cid}"))
    }

    /// A writer for blob `cid`: nothing is visible under its key until
    /// `shutdown` succeeds, and `abort` leaves nothing behind.
    pub(crate) fn writer(&self, cid: &Cid, mime: Option<&str>) -> BufWriter {
        let w = BufWriter::with_capacity(self.store.clone(), Self::key(cid), WRITE_BUFFER);
        match mime {
            Some(m) if self.keeps_attributes => {
                let mut attrs = Attributes::new();
                attrs.insert(Attribute::ContentType, m.to_owned().into());
                w.with_attributes(attrs)
            }
            _ => w,
        }
    }

    /// Blob `cid`'s size, if stored.
    pub async fn size(&self, cid: &Cid) -> Result<Option<u64>> {
        match self.store.head(&Self::key(cid)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Blob `cid`, streamed, if stored.
    pub async fn get(&self, cid: &Cid) -> Result<Option<StoredBlob>> {
        match self.store.get(&Self::key(cid)).await {
            Ok(r) => Ok(Some(StoredBlob {
                size: r.meta.size,
                stream: r.into_stream().map(|c| c.map_err(Error::from)).boxed(),
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes blob `cid` (an account's backup being removed); `false`
    /// when it was not stored.
    pub async fn delete(&self, cid: &Cid) -> Result<bool> {
        match self.store.delete(&Self::key(cid)).await {
            Ok(()) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Blob `cid`, whole, if stored (for tools and tests: small blobs).
    pub async fn read(&self, cid: &Cid) -> Result<Option<Bytes>> {
        match self.store.get(&Self::key(cid)).await {
            Ok(r) => Ok(Some(r.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

impl std::fmt::Display for BlobStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[tokio::test]
    async fn a_written_blob_is_found_read_and_sized_and_an_aborted_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let storage = BlobStorage::open(&StorageConfig::Local {
            dir: dir.path().join("b"),
        })
        .unwrap();
        let body = Bytes::from(vec![7u8; 1000]);
        let cid = Cid::new_v1(
            0x55,
            cid::multihash::Multihash::wrap(0x12, &[1u8; 32]).unwrap(),
        );
        assert_eq!(storage.size(&cid).await.unwrap(), None);
        let mut w = storage.writer(&cid, Some("image/png"));
        w.put(body.clone()).await.unwrap();
        tokio::io::AsyncWriteExt::shutdown(&mut w).await.unwrap();
        assert_eq!(storage.size(&cid).await.unwrap(), Some(1000));
        assert_eq!(storage.read(&cid).await.unwrap(), Some(body));

        let other = Cid::new_v1(
            0x55,
            cid::multihash::Multihash::wrap(0x12, &[2u8; 32]).unwrap(),
        );
        let mut w = storage.writer(&other, None);
        w.put(Bytes::from(vec![1u8; 100])).await.unwrap();
        w.abort().await.unwrap();
        assert_eq!(storage.size(&other).await.unwrap(), None);
    }
}
