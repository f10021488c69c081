//! Content bytes: the staging area where uploads land, and the stores reads come from.
//!
//! Uploads are streamed into a temp file under `staging/incoming/` while SHA-1 and SHA-256
//! are computed ([`Staging::receive`]); those of at most [`INLINE_MAX`] bytes stay in memory
//! (`Drive::upload` tells them apart with [`read_head`]) and are stored in their content row. When the metadata transaction commits the content,
//! the temp file is hard-linked to `staging/objects/ab/<sha1>` (if no copy is there yet)
//! and then dropped: content is written once, and never rewritten in place.

mod local;
mod router;
pub mod s3;
pub(crate) mod staging;

use std::pin::Pin;

use bytes::Bytes;
use futures_util::Stream;

pub use local::{is_sha1_hex, LocalStore};
pub use router::StoreRouter;
pub use s3::S3Store;
pub use staging::{hash_file, hash_rest, join_chunks, read_head, sha256_file, Digests, Head, StagedFile, Staging};

/// Contents up to this size are stored in their metadata row (`inline`) instead of as a
/// file on the staging disk: a small upload is then one transaction, with no temp file,
/// link or fsync, and its entry and bytes become visible (and durable) together. Most
/// files of a source tree or a document folder are this small.
pub const INLINE_MAX: u64 = 16 << 10;

use crate::meta::Content;

/// A stream of content bytes.
pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// Errors of the content layer.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The body went over the configured upload limit; nothing was stored.
    #[error("the upload exceeds the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    /// The client's body stream failed (disconnect, malformed chunking).
    #[error("reading the request body: {0}")]
    Body(String),
    /// A content row exists but its bytes are not where it says.
    #[error("content {0} is missing from the store")]
    Missing(String),
    #[error("content store I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The object store failed or refused (the message names the operation and key).
    /// `transient`: trying again later may succeed (network, timeouts, 5xx, throttling, a
    /// verification mismatch), so a transfer is retried; otherwise (denied, no such bucket,
    /// bad request) it is dead-lettered. See `BlobError::is_transient`.
    #[error("{message}")]
    Remote { transient: bool, message: String },
    /// The object store's configuration cannot work (no endpoint, no credentials...).
    #[error("object storage configuration: {0}")]
    Config(String),
}

/// Where reads of committed content come from. The local store serves content kept on the
/// staging disk; an object store serves content that was transferred there.
#[async_trait::async_trait]
pub trait BlobStore: Send + Sync {
    /// Streams `len` bytes of the content starting at `offset`.
    async fn read(&self, content: &Content, offset: u64, len: u64) -> Result<ByteStream, BlobError>;
}
