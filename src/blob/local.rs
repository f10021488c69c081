//! Committed content kept on the local staging disk, sharded by SHA-1.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::{BlobError, BlobStore, ByteStream};
use crate::meta::Content;

/// Read buffer for downloads: large enough that the per-read thread hand-off of tokio's
/// file I/O is amortised, small enough to keep memory per download bounded.
const READ_CHUNK: usize = 512 * 1024;

/// Reads up to this size are done in one blocking call (open, seek, read) and answered as
/// one chunk: for a small file the hops to the blocking pool of a streamed read (open, then
/// each read) cost more than the bytes.
const SMALL_READ: u64 = 64 * 1024;

/// Content files under `<staging>/objects/ab/cd/<sha1>`.
#[derive(Debug, Clone)]
pub struct LocalStore {
    objects: PathBuf,
}

impl LocalStore {
    pub fn new(objects: PathBuf) -> Self {
        LocalStore { objects }
    }

    pub fn root(&self) -> &Path {
        &self.objects
    }

    /// Where the bytes of `sha1` live. `sha1` must be 40 lowercase hex digits (it is always
    /// one the server computed, never a client's string).
    pub fn path(&self, sha1: &str) -> PathBuf {
        debug_assert!(is_sha1_hex(sha1));
        self.objects.join(&sha1[0..2]).join(&sha1[2..4]).join(sha1)
    }

    pub fn contains(&self, sha1: &str) -> bool {
        self.path(sha1).is_file()
    }

    /// Makes `staged` the stored copy of `sha1` unless one is there already. A hard link is
    /// atomic and never replaces a file that readers may have open; the temp file keeps its
    /// own name so that a transaction retry can place it again.
    ///
    /// The bytes and every directory entry on the way to them are synced before this
    /// returns: the row that points at them commits right after.
    pub fn place(&self, sha1: &str, staged: &Path) -> std::io::Result<()> {
        let dest = self.path(sha1);
        if dest.is_file() {
            return Ok(());
        }
        std::fs::File::open(staged)?.sync_data()?;
        let dir = dest.parent().expect("sharded path has a parent");
        let linked = match std::fs::hard_link(staged, &dest) {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                // First object of this shard: create the shard directories, and sync the
                // directories that gained an entry, so the path itself survives a crash.
                let top = dir.parent().expect("two-level shard");
                let new_top = !top.exists();
                std::fs::create_dir_all(dir)?;
                std::fs::File::open(top)?.sync_all()?;
                if new_top {
                    std::fs::File::open(&self.objects)?.sync_all()?;
                }
                std::fs::hard_link(staged, &dest)
            }
            other => other,
        };
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(()),
            Err(e) => return Err(e),
        }
        std::fs::File::open(dir)?.sync_all()
    }

    /// Deletes the stored copy of `sha1`; missing is fine (the removal is idempotent).
    pub fn remove(&self, sha1: &str) -> std::io::Result<()> {
        match std::fs::remove_file(self.path(sha1)) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl BlobStore for LocalStore {
    async fn read(&self, content: &Content, offset: u64, len: u64) -> Result<ByteStream, BlobError> {
        if len <= SMALL_READ {
            let path = self.path(&content.sha1);
            let sha1 = content.sha1.clone();
            let bytes = tokio::task::spawn_blocking(move || read_small(&path, offset, len))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?
                .map_err(|e| match e.kind() {
                    ErrorKind::NotFound => BlobError::Missing(sha1),
                    _ => e.into(),
                })?;
            if bytes.is_empty() {
                return Ok(futures_util::stream::empty().boxed());
            }
            return Ok(futures_util::stream::once(async move { Ok(bytes) }).boxed());
        }
        let mut file = match tokio::fs::File::open(self.path(&content.sha1)).await {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(BlobError::Missing(content.sha1.clone())),
            Err(e) => return Err(e.into()),
        };
        file.set_max_buf_size(READ_CHUNK);
        if offset > 0 {
            file.seek(std::io::SeekFrom::Start(offset)).await?;
        }
        Ok(ReaderStream::with_capacity(file.take(len), READ_CHUNK).boxed())
    }
}

/// `len` bytes from `offset` (fewer if the file is shorter), in one blocking call.
fn read_small(path: &Path, offset: u64, len: u64) -> std::io::Result<bytes::Bytes> {
    use std::io::{Read, Seek};
    let mut file = std::fs::File::open(path)?;
    if offset > 0 {
        file.seek(std::io::SeekFrom::Start(offset))?;
    }
    let mut buf = Vec::with_capacity(len as usize);
    file.take(len).read_to_end(&mut buf)?;
    Ok(bytes::Bytes::from(buf))
}

/// 40 lowercase hexadecimal digits.
pub fn is_sha1_hex(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
