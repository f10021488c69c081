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
            let missing = |e: std::io::Error| match e.kind() {
                ErrorKind::NotFound => BlobError::Missing(content.sha1.clone()),
                _ => e.into(),
            };
            // From the page cache, right here: a few microseconds, less than the hop to the
            // blocking pool and back. Only bytes that would need the disk go there.
            let bytes = match read_cached(&path, offset, len).map_err(missing)? {
                Some(b) => b,
                None => tokio::task::spawn_blocking(move || read_small(&path, offset, len))
                    .await
                    .map_err(|e| std::io::Error::other(e.to_string()))?
                    .map_err(missing)?,
            };
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

/// `len` bytes from `offset` (fewer if the file is shorter) if they are all in the page
/// cache, `None` if reading them would wait for the disk. `preadv2(RWF_NOWAIT)` answers
/// EAGAIN instead of starting that I/O, so this never blocks an async worker on the
/// disk; only the open (a path lookup, cached for files read recently) can.
#[cfg(target_os = "linux")]
fn read_cached(path: &Path, offset: u64, len: u64) -> std::io::Result<Option<bytes::Bytes>> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path)?;
    let mut buf = Vec::<u8>::with_capacity(len as usize);
    while (buf.len() as u64) < len {
        let filled = buf.len();
        let spare = buf.spare_capacity_mut();
        let want = spare.len().min((len as usize) - filled);
        let iov = libc::iovec {
            iov_base: spare.as_mut_ptr().cast(),
            iov_len: want,
        };
        let at = (offset + filled as u64) as libc::off_t;
        // SAFETY: `iov` points at `want` bytes of `buf`'s spare capacity, which stays
        // allocated and unaliased for the call; `file` is an open descriptor.
        let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, at, libc::RWF_NOWAIT) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                // Not cached, or a kernel or file system without RWF_NOWAIT reads.
                Some(libc::EAGAIN) | Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) | Some(libc::EINVAL) => Ok(None),
                Some(libc::EINTR) => continue,
                _ => Err(e),
            };
        }
        if n == 0 {
            break;
        }
        // SAFETY: the kernel wrote `n` (<= `want`) bytes right after the initialised ones.
        unsafe { buf.set_len(filled + n as usize) };
    }
    Ok(Some(bytes::Bytes::from(buf)))
}

#[cfg(not(target_os = "linux"))]
fn read_cached(_: &Path, _: u64, _: u64) -> std::io::Result<Option<bytes::Bytes>> {
    Ok(None)
}

/// 40 lowercase hexadecimal digits.
pub fn is_sha1_hex(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page-cache read gives the same bytes as the blocking one, for any range,
    /// including past the end; a missing file is NotFound (the caller's `Missing`).
    #[test]
    fn cached_read_matches_blocking_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).expect("write");
        for (offset, len) in [
            (0, 10_000),
            (0, 4096),
            (123, 777),
            (9_990, 100),
            (10_000, 5),
            (20_000, 1),
        ] {
            let blocking = read_small(&path, offset, len).expect("blocking read");
            // Just written, so in the page cache: the direct read must not defer it.
            let cached = read_cached(&path, offset, len).expect("cached read");
            if cfg!(target_os = "linux") {
                assert_eq!(cached.as_deref(), Some(&blocking[..]), "offset {offset}, len {len}");
            }
        }
        let gone = read_cached(&dir.path().join("nope"), 0, 1).expect_err("missing file");
        assert_eq!(gone.kind(), ErrorKind::NotFound);
    }
}
