//! Reads go to wherever the content lives now: its own row, the staging disk or object
//! storage.

use std::sync::Arc;

use super::s3::S3Store;
use super::{BlobError, BlobStore, ByteStream, LocalStore};
use crate::meta::{Content, STORE_INLINE};

pub struct StoreRouter {
    pub local: LocalStore,
    pub s3: Option<Arc<S3Store>>,
}

#[async_trait::async_trait]
impl BlobStore for StoreRouter {
    async fn read(&self, content: &Content, offset: u64, len: u64) -> Result<ByteStream, BlobError> {
        if let (STORE_INLINE, Some(data)) = (content.store.as_str(), &content.data) {
            return Ok(inline_read(data, offset, len));
        }
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

/// `len` bytes from `offset` of an inline content's bytes, as one chunk.
fn inline_read(data: &[u8], offset: u64, len: u64) -> ByteStream {
    let start = (offset as usize).min(data.len());
    let end = start
        .saturating_add(len.min(usize::MAX as u64) as usize)
        .min(data.len());
    let chunk = bytes::Bytes::copy_from_slice(&data[start..end]);
    Box::pin(futures_util::stream::once(async move { Ok(chunk) }))
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    #[tokio::test]
    async fn inline_reads_are_clamped_to_the_content() {
        let data = b"0123456789";
        for (offset, len, want) in [
            (0, 10, &b"0123456789"[..]),
            (3, 4, b"3456"),
            (8, 100, b"89"),
            (10, 5, b""),
            (50, 5, b""),
            (0, u64::MAX, b"0123456789"),
        ] {
            let got: Vec<_> = super::inline_read(data, offset, len).collect().await;
            let got: Vec<u8> = got.into_iter().flat_map(|c| c.unwrap()).collect();
            assert_eq!(got, want, "offset {offset} len {len}");
        }
    }
}
