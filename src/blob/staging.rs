//! The staging area: uploads stream into temp files here while they are hashed.

use std::fmt::Display;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha1::Digest;

use super::{BlobError, LocalStore};

/// Chunks in flight between the request and the writer thread. Bounded so that a client
/// faster than the disk waits instead of filling memory.
const QUEUE: usize = 16;

/// How often the writer asks the kernel to start writing back, so that the final fsync does
/// not have to flush a whole large upload at once.
const WRITEBACK_EVERY: u64 = 8 << 20;

/// Bodies up to this size are received whole before anything is written: for a small file
/// the writer and hashing threads of a streamed upload cost more than the bytes.
pub const SMALL_BODY: u64 = 256 << 10;

/// `<root>/incoming` for uploads in progress, `<root>/parts` for chunked uploads (one
/// sparse file per session, chunks written at their offsets), `<root>/objects` for
/// committed content.
#[derive(Debug, Clone)]
pub struct Staging {
    incoming: PathBuf,
    parts: PathBuf,
    objects: LocalStore,
    /// Whether temp files are anonymous (see [`Temp`]).
    anonymous: bool,
}

/// The first bytes of a body, read by [`read_head`].
pub struct Head {
    pub chunks: Vec<Bytes>,
    pub size: u64,
    /// The body ended within the bytes asked for: `chunks` is all of it.
    pub ended: bool,
}

/// Reads `body` until it ends or more than `upto` bytes came, refusing it with `TooLarge`
/// past `limit`. How the drive tells a small body (stored in its row) from a large one,
/// and how [`Staging::receive`] tells one to write in one call from one to stream.
pub async fn read_head<S, E>(body: &mut S, upto: u64, limit: Option<u64>) -> Result<Head, BlobError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Display,
{
    let mut head = Head {
        chunks: Vec::new(),
        size: 0,
        ended: false,
    };
    while head.size <= upto {
        match body.next().await {
            None => {
                head.ended = true;
                break;
            }
            Some(Ok(chunk)) => {
                head.size += chunk.len() as u64;
                if let Some(limit) = limit.filter(|l| head.size > *l) {
                    return Err(BlobError::TooLarge { limit });
                }
                head.chunks.push(chunk);
            }
            Some(Err(e)) => return Err(BlobError::Body(e.to_string())),
        }
    }
    Ok(head)
}

/// A fully received upload with its SHA-1, not yet synced (`LocalStore::place` does that).
/// The temp file is deleted when this is dropped, so an upload that fails or is refused
/// leaves nothing behind.
///
/// The second hash (SHA-256) is not computed while the body streams in: it is only needed
/// when the SHA-1 matches stored content, and then the drive computes it from the temp
/// file (see `Drive::commit`).
#[derive(Debug)]
pub struct StagedFile {
    temp: Temp,
    pub sha1: String,
    pub size: u64,
}

impl StagedFile {
    /// A path that opens the temp file (and that `LocalStore::place` links from).
    pub fn path(&self) -> &Path {
        &self.temp.path
    }

    /// The temp file's open descriptor when it is anonymous (`None` for a named one):
    /// what `LocalStore::place_open` syncs it through.
    pub fn file(&self) -> Option<&std::fs::File> {
        self.temp.anonymous.as_ref()
    }
}

/// An upload's temp file. Where the file system allows, it is anonymous (`O_TMPFILE` in
/// `incoming/`): no name is created or removed, so concurrent uploads do not queue on the
/// `incoming/` directory's lock (under 16 concurrent small PUTs, `perf` had ~10 % of the
/// server's samples spinning on it, in create and unlink), and a crash leaves nothing for
/// the sweep: the kernel frees an anonymous file with its last descriptor. Its path is
/// `/proc/self/fd/N`, which opens it and which `linkat` with `AT_SYMLINK_FOLLOW` gives a
/// name in the object store. Elsewhere it is `incoming/<random>.part`.
#[derive(Debug)]
struct Temp {
    path: PathBuf,
    /// Keeps an anonymous file alive; `None` for a named one.
    anonymous: Option<std::fs::File>,
}

impl Temp {
    /// A new empty temp file in `dir`, and a handle to write it.
    fn create(dir: &Path, anonymous: bool) -> std::io::Result<(Temp, std::fs::File)> {
        if anonymous {
            let file = open_anonymous(dir)?;
            let writer = file.try_clone()?;
            let path = anonymous_path(&file);
            return Ok((
                Temp {
                    path,
                    anonymous: Some(file),
                },
                writer,
            ));
        }
        let path = dir.join(format!("{}.part", crate::util::random_hex(12)));
        let file = std::fs::OpenOptions::new().write(true).create_new(true).open(&path)?;
        Ok((Temp { path, anonymous: None }, file))
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        // An anonymous file goes with its descriptor; a named one is removed. Either way
        // an upload that fails or is refused, or was committed, leaves nothing behind.
        if self.anonymous.is_none() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(target_os = "linux")]
fn open_anonymous(dir: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o644)
        .custom_flags(libc::O_TMPFILE)
        .open(dir)
}

#[cfg(not(target_os = "linux"))]
fn open_anonymous(_: &Path) -> std::io::Result<std::fs::File> {
    Err(std::io::ErrorKind::Unsupported.into())
}

fn anonymous_path(file: &std::fs::File) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// Whether anonymous temp files work in `dir`: `O_TMPFILE` is supported there, and
/// `/proc/self/fd` opens them (it is what names them to `open` and `linkat`).
fn anonymous_works(dir: &Path) -> bool {
    match open_anonymous(dir) {
        Ok(file) => std::fs::File::open(anonymous_path(&file)).is_ok(),
        Err(e) => {
            tracing::info!(dir = %dir.display(), error = %e, "no anonymous temp files here; uploads use named ones");
            false
        }
    }
}

impl Staging {
    /// Opens (creating if needed) the staging directory `root`.
    pub fn open(root: &Path) -> std::io::Result<Staging> {
        let incoming = root.join("incoming");
        let parts = root.join("parts");
        let objects = root.join("objects");
        for d in [&incoming, &parts, &objects] {
            std::fs::create_dir_all(d)?;
        }
        let anonymous = anonymous_works(&incoming);
        Ok(Staging {
            incoming,
            parts,
            objects: LocalStore::open(objects)?,
            anonymous,
        })
    }

    /// Where chunked uploads assemble.
    pub fn parts_dir(&self) -> &Path {
        &self.parts
    }

    /// The committed content kept on this disk.
    pub fn objects(&self) -> &LocalStore {
        &self.objects
    }

    /// Streams `body` into a new temp file, computing SHA-1 and size on the way. Over
    /// `limit` bytes the upload is refused with `TooLarge` and the temp file removed. Memory use is bounded by the queue, whatever the body's size.
    ///
    /// A body of at most [`SMALL_BODY`] bytes is gathered in memory first and then hashed
    /// and written in one blocking call; a larger one streams through a writer thread.
    /// (The drive keeps bodies of at most [`INLINE_MAX`](super::INLINE_MAX) bytes in
    /// memory and never calls this for them.)
    pub async fn receive<S, E>(&self, body: S, limit: Option<u64>) -> Result<StagedFile, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Display,
    {
        let mut body = std::pin::pin!(body);
        let head = read_head(&mut body, SMALL_BODY, limit).await?;
        if head.ended {
            return self.write_small(head.chunks, head.size).await;
        }
        let rest = futures_util::stream::iter(head.chunks.into_iter().map(Ok)).chain(body);
        self.receive_stream(rest, limit).await
    }

    /// Hashes and writes a body received whole, off the async threads.
    async fn write_small(&self, chunks: Vec<Bytes>, size: u64) -> Result<StagedFile, BlobError> {
        let (dir, anonymous) = (self.incoming.clone(), self.anonymous);
        let (temp, sha1) = tokio::task::spawn_blocking(move || -> std::io::Result<(Temp, String)> {
            // Dropped on an error, the temp file goes.
            let (temp, mut file) = Temp::create(&dir, anonymous)?;
            let mut sha1 = sha1::Sha1::new();
            for chunk in &chunks {
                sha1.update(chunk);
                file.write_all(chunk)?;
            }
            // Not synced here, like a streamed upload (see `write_and_hash`).
            Ok((temp, hex::encode(sha1.finalize())))
        })
        .await
        .map_err(|e| std::io::Error::other(format!("writer thread: {e}")))??;
        Ok(StagedFile { temp, sha1, size })
    }

    /// Streams `body` through the writer thread.
    async fn receive_stream<S, E>(&self, body: S, limit: Option<u64>) -> Result<StagedFile, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Display,
    {
        // Dropped on any error below, the temp file goes.
        let (temp, file) = Temp::create(&self.incoming, self.anonymous)?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(QUEUE);
        let writer = tokio::task::spawn_blocking(move || write_and_hash(file, rx));
        let mut size = 0u64;
        let mut failure = None;
        let mut body = std::pin::pin!(body);
        while let Some(item) = body.next().await {
            match item {
                Ok(chunk) => {
                    size += chunk.len() as u64;
                    if let Some(limit) = limit.filter(|l| size > *l) {
                        failure = Some(BlobError::TooLarge { limit });
                        break;
                    }
                    if tx.send(chunk).await.is_err() {
                        break; // the writer failed; its error is reported below
                    }
                }
                Err(e) => {
                    failure = Some(BlobError::Body(e.to_string()));
                    break;
                }
            }
        }
        drop(tx);
        let written = writer
            .await
            .map_err(|e| std::io::Error::other(format!("writer thread: {e}")))?;
        if let Some(f) = failure {
            return Err(f);
        }
        let (sha1, written) = written?;
        debug_assert_eq!(written, size);
        Ok(StagedFile {
            temp,
            sha1,
            size: written,
        })
    }

    /// Makes `data` the stored copy of `sha1` on this disk unless one is there: the rare
    /// case of a small upload whose content row is a staging-disk one that lost its file
    /// (see `Drive::upload`). Goes through a temp file like any upload, and is placed the
    /// same way.
    pub fn place_bytes(&self, sha1: &str, data: &[u8]) -> std::io::Result<()> {
        if self.objects.contains(sha1) {
            return Ok(());
        }
        let (temp, mut file) = Temp::create(&self.incoming, self.anonymous)?;
        file.write_all(data)?;
        match &temp.anonymous {
            Some(open) => self.objects.place_open(sha1, &temp.path, open),
            None => self.objects.place(sha1, &temp.path),
        }
    }

    /// Removes temp files of uploads that stopped (a crash, a killed client) more than
    /// `min_age` ago. An upload in progress keeps its file's mtime fresh.
    pub fn sweep_incoming(&self, min_age: Duration) -> std::io::Result<usize> {
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.incoming)? {
            let entry = entry?;
            if older_than(&entry.path(), min_age) && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// A small body's chunks as one buffer (no copy when it came in one).
pub fn join_chunks(chunks: Vec<Bytes>) -> Bytes {
    match <[Bytes; 1]>::try_from(chunks) {
        Ok([one]) => one,
        Err(chunks) => chunks.concat().into(),
    }
}

/// Whether the file at `path` was last modified more than `age` ago.
pub(crate) fn older_than(path: &Path, age: Duration) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map(|t| t.elapsed().map(|e| e >= age).unwrap_or(false))
        .unwrap_or(false)
}

/// The writer thread: hashes and writes each chunk.
fn write_and_hash(
    mut file: std::fs::File,
    mut rx: tokio::sync::mpsc::Receiver<Bytes>,
) -> std::io::Result<(String, u64)> {
    let mut sha1 = sha1::Sha1::new();
    let mut written = 0u64;
    let mut flushed = 0u64;
    while let Some(chunk) = rx.blocking_recv() {
        sha1.update(&chunk);
        file.write_all(&chunk)?;
        written += chunk.len() as u64;
        if written - flushed >= WRITEBACK_EVERY {
            start_writeback(&file, flushed, written - flushed);
            flushed = written;
        }
    }
    // No fsync here: if the content turns out to be stored already, these bytes are
    // dropped, and syncing them would only slow every dedup hit down to disk speed. The
    // copy that becomes the stored one is synced before it is linked (`LocalStore::place`).
    Ok((hex::encode(sha1.finalize()), written))
}

#[cfg(target_os = "linux")]
fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is open for the duration of the call, and SYNC_FILE_RANGE_WRITE
    // only starts asynchronous writeback of the given range; it touches no memory of ours.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset as i64, len as i64, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &std::fs::File, _offset: u64, _len: u64) {}

/// SHA-1 of the first `size` bytes of something, to be continued.
#[derive(Clone, Default)]
pub struct Digests {
    pub sha1: sha1::Sha1,
    pub size: u64,
}

impl Digests {
    pub fn update(&mut self, data: &[u8]) {
        self.sha1.update(data);
        self.size += data.len() as u64;
    }
}

/// SHA-1 and size of a file, read once.
pub fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    hash_rest(&mut std::fs::File::open(path)?, Digests::default())
}

/// Continues `digests` (over the first `digests.size` bytes of `file`) to the end of the
/// file.
pub fn hash_rest(file: &mut std::fs::File, digests: Digests) -> std::io::Result<(String, u64)> {
    use std::io::{Seek, SeekFrom};
    let Digests { mut sha1, mut size } = digests;
    file.seek(SeekFrom::Start(size))?;
    size += read_chunks(file, |chunk| sha1.update(chunk))?;
    Ok((hex::encode(sha1.finalize()), size))
}

/// SHA-256 of a file: the second hash, compared when a SHA-1 matches stored content.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut h = sha2::Sha256::new();
    read_chunks(&mut std::fs::File::open(path)?, |chunk| h.update(chunk))?;
    Ok(hex::encode(h.finalize()))
}

/// Feeds the rest of `file` to `f` in large reads; returns how many bytes it read.
fn read_chunks(file: &mut std::fs::File, mut f: impl FnMut(&[u8])) -> std::io::Result<u64> {
    use std::io::Read;
    // 512 KiB: below the allocator's mmap threshold, so the buffer comes from the heap.
    let mut buf = vec![0u8; 512 << 10];
    let mut total = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        f(&buf[..n]);
        total += n as u64;
    }
}
