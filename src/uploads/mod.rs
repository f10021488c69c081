//! Resumable chunked uploads.
//!
//! `init` creates a session (or finds the caller's live session for the same content and
//! size, and says which chunks it already has) and a sparse file `staging/parts/<id>.data`
//! of the declared size. Each chunk is written at its offset in that file, fsynced, and
//! only then recorded in the session, so a recorded chunk is on disk. A recorded chunk is
//! never written again: a resend of it is read and dropped. Any gateway that shares the
//! staging directory and the session store can take any chunk or complete the upload.
//! Recorded chunks are hashed in order while the rest arrive ([`prefix_hash`]); `complete`
//! waits until no chunk is being written ([`data_file`]), hashes what is left, refuses the
//! file unless SHA-1 and size are the declared ones, and commits it like a streamed
//! upload: the file is hard-linked into the store, so its bytes are written once. An
//! open-ended session (started without size and SHA-1) may also complete without a SHA-1:
//! then only the size is checked, and the chunks' own checksums (`X-Chunk-Crc32`, checked
//! before a chunk is recorded) catch transfer errors without the client hashing the file.
//!
//! # What a crash leaves behind
//! - during a chunk: a partly written range of an unrecorded chunk; the client resends it;
//! - after a short chunk of an open-ended session is marked short and before it is
//!   recorded: the client resends it; if it resends it longer, the stale mark may make
//!   `complete` refuse the upload (422) and the client sends the file again (the mount
//!   does, as a whole upload);
//! - after the chunk is recorded: nothing to do, a resend is harmless;
//! - during `complete`, before the commit: the session and its data file, intact; the
//!   client retries `complete` (the running hash was in memory: the retry hashes the whole
//!   file);
//! - after the commit, before the session is deleted: the file is visible; a retried
//!   `complete` of a fixed-path upload replaces it with the same content, a seed upload
//!   gets a second entry `name (1)`; abandoned sessions expire and the sweep removes their
//!   data files.
//!
//! The locks of [`data_file`] belong to open files, so a dead process holds none.

mod data_file;
mod prefix_hash;

use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha1::Digest;

use crate::blob::{hash_rest, is_sha1_hex};
use crate::drive::{Drive, DriveError, UploadTarget};
use crate::meta::{now_ms, Entry, NewContent, User};
use crate::sessions::{SessionError, SessionStore, UploadSession};
use crate::util::{failpoint, random_hex};

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("no such upload session")]
    NoSession,
    #[error("invalid upload: {0}")]
    Invalid(String),
    #[error("chunk {index} must be {expected} bytes")]
    ChunkSize { index: i64, expected: i64 },
    #[error("chunk {0} does not match its SHA-1 or CRC-32")]
    ChunkHash(i64),
    #[error("chunks missing: {0:?}")]
    Incomplete(Vec<i64>),
    #[error("the uploaded bytes do not match the declared SHA-1 and size; the upload was discarded")]
    Mismatch,
    #[error("reading the request body: {0}")]
    Body(String),
    #[error(transparent)]
    Drive(#[from] DriveError),
    #[error("upload staging I/O: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = UploadError> = std::result::Result<T, E>;

/// A session and the chunks it has.
#[derive(Debug, Clone)]
pub struct Progress {
    pub session: UploadSession,
    pub received: Vec<i64>,
}

/// The chunks a session has, from what the session store recorded. A chunk of an
/// open-ended session shorter than `chunk_size` is recorded twice: as `index`, and as a
/// negative mark that also holds its length ([`short_mark`]), so that `complete` can tell
/// whether the declared size ends within the bytes received. Without that, a short chunk
/// before the last, or a last one shorter than the size needs, would leave zeros in the
/// file that no SHA-1 check catches when none was declared.
fn received(recorded: &[i64]) -> Vec<i64> {
    recorded.iter().copied().filter(|&i| i > 0).collect()
}

/// The mark of short chunk `index` of `len` bytes (`len` < `chunk_size` < 2^32).
fn short_mark(index: i64, len: u64) -> i64 {
    -((index << 32) | (len as i64 & 0xffff_ffff))
}

/// The short chunks among `recorded`: (index, length).
fn short_chunks(recorded: &[i64]) -> impl Iterator<Item = (i64, u64)> + '_ {
    recorded
        .iter()
        .filter(|&&i| i < 0)
        .map(|&i| (-i >> 32, (-i & 0xffff_ffff) as u64))
}

pub struct Uploads {
    drive: Arc<Drive>,
    sessions: Arc<dyn SessionStore>,
    parts: PathBuf,
    chunk_size: i64,
    ttl_ms: i64,
    prefix: Arc<prefix_hash::PrefixHashes>,
}

/// How a session's target string encodes the destination: `CONFLICT:PATH`, where PATH is
/// `/a/b` (a path), `#PARENT/NAME` (a name in a directory given by id), empty (the seed
/// names the file at completion), or `entry:#ID` (replace the file `ID` wherever it is).
pub fn encode_target(conflict: crate::meta::Conflict, path: &str) -> String {
    let c = match conflict {
        crate::meta::Conflict::Fail => "fail",
        crate::meta::Conflict::Replace => "replace",
        crate::meta::Conflict::Rename => "rename",
        crate::meta::Conflict::Entry(id) => return format!("entry:#{id}"),
    };
    format!("{c}:{path}")
}

pub fn decode_target(t: &str) -> (crate::meta::Conflict, &str) {
    use crate::meta::Conflict;
    match t.split_once(':') {
        Some(("fail", p)) => (Conflict::Fail, p),
        Some(("replace", p)) => (Conflict::Replace, p),
        Some(("entry", p)) => (Conflict::Entry(p.trim_start_matches('#').parse().unwrap_or(0)), p),
        Some((_, p)) => (Conflict::Rename, p),
        None => (Conflict::Rename, ""),
    }
}

impl Uploads {
    pub fn new(drive: Arc<Drive>, sessions: Arc<dyn SessionStore>, chunk_size: u64, ttl_secs: u64) -> Arc<Self> {
        let parts = drive.staging().parts_dir().to_path_buf();
        Arc::new(Uploads {
            drive,
            sessions,
            parts,
            chunk_size: chunk_size as i64,
            ttl_ms: ttl_secs as i64 * 1000,
            prefix: Arc::default(),
        })
    }

    pub fn sessions(&self) -> &Arc<dyn SessionStore> {
        &self.sessions
    }

    fn data_path(&self, id: &str) -> PathBuf {
        self.parts.join(format!("{id}.data"))
    }

    /// Starts (or resumes) an upload of `size` bytes hashing to `sha1`, to go to `target`.
    ///
    /// Without `sha1` the session is new, never a resumed one (nothing to find it by), and
    /// the SHA-1 is declared at `complete`: a client can send chunks while it is still
    /// hashing the file. Without `size` (an open-ended session, [`OPEN_SIZE`]) the size is
    /// declared at `complete` too: a client can send the chunks of a file while it is
    /// still being written (a FUSE mount's write-behind).
    pub async fn init(&self, user: &User, sha1: Option<&str>, size: Option<i64>, target: String) -> Result<Progress> {
        let sha1 = match sha1 {
            Some(h) => valid_sha1(h)?,
            None => String::new(),
        };
        let size = match size {
            Some(n) => {
                self.check_size(n)?;
                n
            }
            None => OPEN_SIZE,
        };
        let resumable = match (sha1.as_str(), size) {
            ("", _) | (_, OPEN_SIZE) => None,
            (h, n) => self.sessions.find(user.id, h, n).await?,
        };
        if let Some(s) = resumable {
            if s.target == target && self.data_path(&s.id).is_file() {
                let received = received(&self.sessions.parts(&s.id).await?);
                return Ok(Progress { session: s, received });
            }
        }
        let now = now_ms();
        let chunk_count = match size {
            OPEN_SIZE => OPEN_SIZE,
            n => (n + self.chunk_size - 1) / self.chunk_size,
        };
        let s = UploadSession {
            id: random_hex(16),
            owner: user.id,
            sha1,
            size,
            chunk_size: self.chunk_size,
            chunk_count,
            target,
            created_at: now,
            expires_at: now + self.ttl_ms,
        };
        // The data file first: a session without one would be unusable, a file without a
        // session is swept.
        let path = self.data_path(&s.id);
        let file = std::fs::OpenOptions::new().write(true).create_new(true).open(&path)?;
        // An open-ended session's file grows with its chunks.
        file.set_len(size.max(0) as u64)?;
        if let Err(e) = self.sessions.create(&s).await {
            let _ = std::fs::remove_file(&path);
            return Err(e.into());
        }
        Ok(Progress {
            session: s,
            received: Vec::new(),
        })
    }

    /// The caller's session `id` (someone else's is "no such session").
    pub async fn session(&self, user: &User, id: &str) -> Result<UploadSession> {
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(UploadError::NoSession);
        }
        match self.sessions.get(id).await? {
            Some(s) if s.owner == user.id => Ok(s),
            _ => Err(UploadError::NoSession),
        }
    }

    pub async fn status(&self, user: &User, id: &str) -> Result<Progress> {
        let session = self.session(user, id).await?;
        let received = received(&self.sessions.parts(id).await?);
        Ok(Progress { session, received })
    }

    /// Writes chunk `index` (1-based) from `body`. Every chunk but the last is exactly
    /// `chunk_size` bytes (in an open-ended session, where the last one is not known yet,
    /// 1 to `chunk_size` bytes: `complete` checks the whole); `chunk_sha1`, when given, is
    /// checked. Re-sending a chunk is harmless: once recorded, a chunk's bytes stay the
    /// first ones. Returns how many chunks the session now has.
    pub async fn put_part<S, E>(
        &self,
        user: &User,
        id: &str,
        index: i64,
        body: S,
        chunk_sha1: Option<&str>,
        chunk_crc32: Option<&str>,
    ) -> Result<usize>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let s = self.session(user, id).await?;
        let open = s.size == OPEN_SIZE;
        if open {
            if index < 1 {
                return Err(UploadError::Invalid("index must be 1 or more".into()));
            }
            // The chunk's first byte must lie within the largest upload accepted.
            self.check_size(index.saturating_sub(1).saturating_mul(s.chunk_size).saturating_add(1))?;
        } else if index < 1 || index > s.chunk_count {
            return Err(UploadError::Invalid(format!(
                "index must be between 1 and {}",
                s.chunk_count
            )));
        }
        // At most this many bytes; exactly this many unless the session is open-ended.
        let expected = if open || index < s.chunk_count {
            s.chunk_size
        } else {
            s.size - (s.chunk_count - 1) * s.chunk_size
        };
        let fits = |got: i64| got == expected || (open && (1..=expected).contains(&got));
        let want_hash = match chunk_sha1 {
            Some(h) if is_sha1_hex(&h.to_ascii_lowercase()) => Some(h.to_ascii_lowercase()),
            Some(_) => return Err(UploadError::Invalid("chkhash must be 40 hexadecimal digits".into())),
            None => None,
        };
        let want_crc = match chunk_crc32 {
            // Digits only: `from_str_radix` alone would take a leading `+`.
            Some(h) if h.len() == 8 && h.bytes().all(|b| b.is_ascii_hexdigit()) => u32::from_str_radix(h, 16).ok(),
            Some(_) => {
                return Err(UploadError::Invalid(
                    "the chunk's CRC-32 must be 8 hexadecimal digits".into(),
                ))
            }
            None => None,
        };
        let offset = (index - 1) * s.chunk_size;
        let path = self.data_path(id);
        let file = blocking(move || data_file::lock_chunk(&path, offset as u64, expected as u64))
            .await?
            .ok_or(UploadError::NoSession)?;
        // Under the chunk's lock, so no other writer of it can be between its write and
        // its record: recorded means final.
        if self.sessions.parts(id).await?.binary_search(&index).is_ok() {
            drop(file);
            let got = drain(body, expected).await?;
            if !fits(got) {
                return Err(UploadError::ChunkSize { index, expected });
            }
            return Ok(received(&self.sessions.parts(id).await?).len());
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(16);
        let (hash, crc) = (want_hash.is_some(), want_crc.is_some());
        // Kept for the running hash, if there is room, so it need not read them back.
        let hold = self.prefix.hold(expected as u64);
        // The file is written on a blocking thread, fed through a bounded queue. It comes
        // back with its locks, which are held until the chunk is recorded.
        struct Written {
            n: u64,
            digest: Option<String>,
            checksum: Option<u32>,
            file: std::fs::File,
            kept: Vec<Bytes>,
        }
        let keep = hold.is_some();
        let writer = tokio::task::spawn_blocking(move || -> std::io::Result<Written> {
            let mut file = file;
            file.seek(SeekFrom::Start(offset as u64))?;
            let mut sha1 = sha1::Sha1::new();
            let mut crc32 = crc32fast::Hasher::new();
            let mut n = 0u64;
            let mut kept = Vec::new();
            while let Some(chunk) = rx.blocking_recv() {
                if hash {
                    sha1.update(&chunk);
                }
                if crc {
                    crc32.update(&chunk);
                }
                file.write_all(&chunk)?;
                n += chunk.len() as u64;
                if keep {
                    kept.push(chunk);
                }
            }
            file.sync_data()?;
            Ok(Written {
                n,
                digest: hash.then(|| hex::encode(sha1.finalize())),
                checksum: crc.then(|| crc32.finalize()),
                file,
                kept,
            })
        });
        let mut got = 0i64;
        let mut failure = None;
        let mut body = std::pin::pin!(body);
        while let Some(item) = body.next().await {
            match item {
                Ok(chunk) => {
                    got += chunk.len() as i64;
                    if got > expected {
                        failure = Some(UploadError::ChunkSize { index, expected });
                        break;
                    }
                    if tx.send(chunk).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    failure = Some(UploadError::Body(e.to_string()));
                    break;
                }
            }
        }
        drop(tx);
        let written = writer.await.map_err(|e| std::io::Error::other(e.to_string()))?;
        if let Some(f) = failure {
            return Err(f);
        }
        let Written {
            n,
            digest,
            checksum,
            file,
            kept,
        } = written?;
        if !fits(n as i64) {
            return Err(UploadError::ChunkSize { index, expected });
        }
        if (want_hash.is_some() && digest != want_hash) || (want_crc.is_some() && checksum != want_crc) {
            return Err(UploadError::ChunkHash(index));
        }
        crate::metrics::add(&crate::metrics::global().bytes_in, n);
        failpoint("uppart.written");
        // Marked short before it is recorded: a recorded short chunk always has its mark.
        // (A mark whose chunk was then resent whole makes `complete` refuse the upload;
        // the client sends the file again.)
        if open
            && (n as i64) < s.chunk_size
            && !self.sessions.record_part(id, short_mark(index, n), self.ttl_ms).await?
        {
            return Err(UploadError::NoSession);
        }
        if !self.sessions.record_part(id, index, self.ttl_ms).await? {
            return Err(UploadError::NoSession);
        }
        let layout = || prefix_hash::Layout {
            path: self.data_path(id),
            chunk_size: s.chunk_size as u64,
            size: (!open).then_some(s.size as u64),
        };
        let held = hold.map(|room| prefix_hash::Held::new(kept, room));
        self.prefix.recorded(id, layout, index, held);
        drop(file);
        Ok(received(&self.sessions.parts(id).await?).len())
    }

    /// Verifies and commits the upload. `target` overrides the session's destination (the
    /// seed names the file only at completion). `declared` is the SHA-1 of a session
    /// started without one (required then); given for one that has one, it must agree.
    /// Likewise `declared_size`, required for an open-ended session: its chunks
    /// `1..=ceil(size / chunk_size)` must all be there; the file is cut to `size` (chunks
    /// past it are dropped) and then checked against SHA-1 and size like any other.
    pub async fn complete(
        &self,
        user: &User,
        id: &str,
        target: UploadTarget,
        declared: Option<&str>,
        declared_size: Option<i64>,
    ) -> Result<Entry> {
        let mut s = self.session(user, id).await?;
        let open = s.size == OPEN_SIZE;
        match (open, declared_size) {
            (true, None) => {
                return Err(UploadError::Invalid(
                    "this upload was started without a size: declare it when completing".into(),
                ))
            }
            (true, Some(n)) => {
                self.check_size(n)?;
                s.size = n;
                s.chunk_count = (n + s.chunk_size - 1) / s.chunk_size;
            }
            (false, Some(n)) if n != s.size => {
                return Err(UploadError::Invalid(
                    "the size differs from the one declared when the upload started".into(),
                ))
            }
            _ => {}
        }
        // Open-ended and completed without a SHA-1: the bytes received are the file,
        // whatever their SHA-1 (a client that checksums each chunk instead, like the
        // mount's write-behind, need not hash the whole file as well).
        let undeclared = open && s.sha1.is_empty() && declared.is_none();
        match (s.sha1.as_str(), declared) {
            ("", None) if undeclared => {}
            ("", None) => {
                return Err(UploadError::Invalid(
                    "this upload was started without a SHA-1: declare it when completing".into(),
                ))
            }
            ("", Some(h)) => s.sha1 = valid_sha1(h)?,
            (known, Some(h)) if !known.eq_ignore_ascii_case(h) => {
                return Err(UploadError::Invalid(
                    "the SHA-1 differs from the one declared when the upload started".into(),
                ))
            }
            _ => {}
        }
        self.drive.check_target(user, &target).await?;
        let path = self.data_path(id);
        let p = path.clone();
        // Waits for chunk writes in flight; none starts until this is dropped, after the
        // data file has left `parts/`.
        let mut file = blocking(move || data_file::lock_exclusive(&p))
            .await?
            .ok_or(UploadError::NoSession)?;
        let recorded = self.sessions.parts(id).await?;
        let parts = received(&recorded);
        let missing: Vec<i64> = (1..=s.chunk_count)
            .filter(|i| parts.binary_search(i).is_err())
            .collect();
        if !missing.is_empty() {
            return Err(UploadError::Incomplete(missing));
        }
        // Every short chunk must be the last one, holding at least what the size needs of
        // it (a stale mark, left by a crash before its chunk was recorded, refuses too).
        let needs = |k: i64| (s.size - (k - 1) * s.chunk_size).max(0) as u64;
        let short = |&(k, len): &(i64, u64)| k < s.chunk_count || (k == s.chunk_count && len < needs(k));
        if let Some((k, len)) = short_chunks(&recorded).find(short) {
            tracing::info!(
                upload = id,
                chunk = k,
                len,
                "refused an upload with a short chunk where the size needs more"
            );
            self.discard(id).await?;
            return Err(UploadError::Mismatch);
        }
        let (prefix, key) = (self.prefix.clone(), id.to_owned());
        let (p, want) = (path.clone(), s.size as u64);
        let (sha1, size, file) = blocking(move || {
            let mut hashed = prefix.take(&key);
            if open {
                // Chunks past the declared size (or a last chunk sent longer than it) are
                // not part of the file. Under the exclusive lock: nobody writes it now.
                std::fs::OpenOptions::new().write(true).open(&p)?.set_len(want)?;
                if hashed.size > want {
                    hashed = Default::default();
                }
            }
            let (sha1, size) = hash_rest(&mut file, hashed)?;
            Ok((sha1, size, file))
        })
        .await?;
        if (!undeclared && sha1 != s.sha1) || size as i64 != s.size {
            tracing::info!(upload = id, declared = %s.sha1, actual = %sha1, "refused a chunked upload whose bytes do not match");
            self.discard(id).await?;
            return Err(UploadError::Mismatch);
        }
        let entry = self
            .drive
            .commit(
                user,
                target,
                NewContent {
                    sha1,
                    sha256: None,
                    size: size as i64,
                    inline: None,
                },
                &path,
            )
            .await?;
        failpoint("complete.committed");
        self.discard(id).await?;
        drop(file);
        Ok(entry)
    }

    /// Cancels an upload: the session and its bytes are removed.
    pub async fn cancel(&self, user: &User, id: &str) -> Result<()> {
        self.session(user, id).await?;
        self.discard(id).await
    }

    async fn discard(&self, id: &str) -> Result<()> {
        self.prefix.forget(id);
        self.sessions.delete(id).await?;
        match std::fs::remove_file(self.data_path(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Removes data files whose session is gone (expired, or lost to a crash) and that
    /// nobody wrote for `min_age`. Returns how many.
    pub async fn sweep(&self, min_age: std::time::Duration) -> Result<usize> {
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.parts)? {
            let path = entry?.path();
            let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".data"))
            else {
                continue;
            };
            if crate::blob::staging::older_than(&path, min_age)
                && self.sessions.get(id).await?.is_none()
                && std::fs::remove_file(&path).is_ok()
            {
                self.prefix.forget(id);
                removed += 1;
            }
        }
        Ok(removed)
    }
}

impl Uploads {
    /// A declared size: not negative, and within the largest upload accepted.
    fn check_size(&self, size: i64) -> Result<()> {
        if size < 0 {
            return Err(UploadError::Invalid("the size must not be negative".into()));
        }
        if let Some(limit) = self.drive.max_upload() {
            if size as u64 > limit {
                return Err(DriveError::Blob(crate::blob::BlobError::TooLarge { limit }).into());
            }
        }
        Ok(())
    }
}

/// The `size` (and `chunk_count`) of an open-ended session, whose size is declared at
/// `complete`.
pub const OPEN_SIZE: i64 = -1;

/// A client's SHA-1, lowercased, or why it is not one.
fn valid_sha1(h: &str) -> Result<String> {
    let h = h.to_ascii_lowercase();
    if !is_sha1_hex(&h) {
        return Err(UploadError::Invalid("the SHA-1 must be 40 hexadecimal digits".into()));
    }
    Ok(h)
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> std::io::Result<T> + Send + 'static) -> Result<T> {
    Ok(tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??)
}

/// Reads a body to its end without keeping it; fails past `limit` bytes.
async fn drain<S, E>(body: S, limit: i64) -> Result<i64>
where
    S: Stream<Item = Result<Bytes, E>> + Send,
    E: std::fmt::Display,
{
    let mut body = std::pin::pin!(body);
    let mut got = 0i64;
    while let Some(item) = body.next().await {
        got += item.map_err(|e| UploadError::Body(e.to_string()))?.len() as i64;
        if got > limit {
            break;
        }
    }
    Ok(got)
}
