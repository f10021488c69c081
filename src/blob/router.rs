//! Reads go to wherever the content lives now: the staging disk or object storage.

use std::sync::Arc;

use super::s3::S3Store;
use super::{BlobError, BlobStore, ByteStream, LocalStore};
use crate::meta::Content;

pub struct StoreRouter {
    pub local: LocalStore,
    pub s3: Option<Arc<S3Store>>,
}

#[async_trait::async_trait]
impl BlobStore for StoreRouter {
    async fn read(&self, content: &Content, offset: u64, len: u64) -> Result<ByteStream, BlobError> {
        match (content.store.as_str(), &self.s3) {
            ("s3", Some(s3)) => s3.read(content, offset, len).await,
            ("s3", None) => Err(BlobError::Missing(format!(
                "{} (in object storage, which is not configured)",
                content.sha1
            ))),
            _ => self.local.read(content, offset, len).await,
        }
    }
}
