//! The drive: per-user trees over the metadata store and the content store. Every protocol
//! (seed API, JSON API, WebDAV, FUSE) goes through here.
//!
//! # What an upload leaves behind if the process dies
//! 1. While the body streams in: a temp file in `staging/incoming/`, nothing in the
//!    database. The temp file is anonymous (`O_TMPFILE`) where the file system allows,
//!    and goes with the process; otherwise the stale sweep removes it.
//! 2. After the temp file is complete, before it is linked: the same.
//! 3. New content only: after the temp file is fsynced and hard-linked into
//!    `staging/objects/` (directory entries synced too), before the transaction: an object
//!    that no row points at, an orphan that the stale sweep removes; no entry.
//! 4. Inside the transaction, before the commit: the transaction rolls back, so no row and
//!    no entry; the object (linked in step 3, or by the transaction itself if a concurrent
//!    garbage collection removed it meanwhile) is an orphan that the stale sweep removes.
//!    On SQLite this includes the wait in a batch of transactions committed together
//!    (group commit, `meta/tx.rs`; failpoint `upload.batched`): the transaction is done
//!    and released into the batch, the batch not yet committed, the client not answered.
//!    The whole batch rolls back, with the same leftovers for each upload in it.
//! 5. After the commit: the entry is visible and complete; only the temp file is left
//!    (a named one, for the sweep; an anonymous one is gone).
//!
//! A dedup hit (the SHA-1 is stored) skips step 3 and compares second hashes instead: the
//! SHA-256 of the new bytes, and, if nobody has yet, that of the stored bytes, which is
//! recorded in the content row. A crash after that leaves the row with a hash computed
//! from its own bytes (true whatever happens next) and the temp file for the sweep.
//!
//! Step 3 runs outside the metadata store's write gate and off the async threads, so the
//! fsyncs of concurrent uploads overlap (the file system commits their journal entries
//! together) instead of queueing one after another behind SQLite's single writer.
//!
//! A body of at most [`INLINE_MAX`](crate::blob::INLINE_MAX) bytes takes none of the
//! staging steps: it stays in memory (step 1 leaves nothing at all), and the transaction
//! of step 4 stores it in its content row along with the entry. A crash before the commit
//! leaves nothing; after it, the entry and its bytes are there together. They are exactly
//! as durable as that transaction: on MySQL from the commit, on SQLite (`synchronous =
//! NORMAL`) a power loss may undo the last transactions, each one whole, like every other
//! change to the tree.
//!
//! At no point is an entry visible whose bytes are not all stored (and, on the staging
//! disk, fsynced).

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha1::Digest as _;

use crate::blob::{join_chunks, read_head, BlobError, BlobStore, ByteStream, Staging, INLINE_MAX};
use crate::meta::{
    CommitFile, Conflict, Content, DeleteStats, Entry, EntryKind, MetaError, MetaStore, NewContent, Overwrite, User,
    STORE_INLINE, STORE_LOCAL,
};
use crate::names::{split_path, validate_name, NameError};
use crate::util::failpoint;

#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    #[error("invalid name: {0}")]
    Name(#[from] NameError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Blob(#[from] BlobError),
}

pub type Result<T, E = DriveError> = std::result::Result<T, E>;

/// Default permission bits of new entries.
pub const FILE_MODE: i64 = 0o644;
/// SHA-1 of the empty content.
pub const EMPTY_SHA1: &str = "da39a3ee5e6b4b0d3255bfef95601890afd80709";
pub const DIR_MODE: i64 = 0o755;

pub struct Drive {
    meta: MetaStore,
    staging: Staging,
    blobs: Arc<dyn BlobStore>,
    max_upload: Option<u64>,
}

/// The bytes of an upload being committed: a file on the staging disk, or a small body in
/// memory.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    File(&'a Path),
    Memory(&'a Bytes),
}

/// Small content with its bytes, to be stored in its row if the row is new. Its second hash
/// costs nothing at this size, and is what a concurrent upload of the same bytes is
/// compared with, without reading anything back.
fn inline_content(sha1: String, data: &Bytes) -> NewContent {
    NewContent {
        sha1,
        sha256: Some(hex::encode(sha2::Sha256::digest(data))),
        size: data.len() as i64,
        inline: Some(data.clone()),
    }
}

/// Where an upload goes and what to do if the name is taken.
#[derive(Debug, Clone)]
pub struct UploadTarget {
    pub parent: i64,
    pub name: String,
    pub conflict: Conflict,
    pub mtime: Option<i64>,
}

impl Drive {
    pub fn new(meta: MetaStore, staging: Staging, blobs: Arc<dyn BlobStore>, max_upload: Option<u64>) -> Arc<Self> {
        Arc::new(Drive {
            meta,
            staging,
            blobs,
            max_upload,
        })
    }

    pub fn meta(&self) -> &MetaStore {
        &self.meta
    }

    pub fn staging(&self) -> &Staging {
        &self.staging
    }

    pub fn max_upload(&self) -> Option<u64> {
        self.max_upload
    }

    /// The entry at `path` (slash-separated, relative to the user's root).
    pub async fn resolve(&self, user: &User, path: &str) -> Result<Entry> {
        let mut cur = self.meta.root(user.id).await?;
        for part in split_path(path)? {
            if !cur.is_dir() {
                return Err(MetaError::NotADirectory.into());
            }
            cur = self
                .meta
                .lookup(user.id, cur.id, part)
                .await?
                .ok_or(MetaError::NotFound)?;
        }
        Ok(cur)
    }

    /// The directory that holds `path`, and the last component of `path`.
    pub async fn resolve_parent(&self, user: &User, path: &str) -> Result<(Entry, String)> {
        let parts = split_path(path)?;
        let (name, dirs) = parts.split_last().ok_or(NameError::Root)?;
        let mut cur = self.meta.root(user.id).await?;
        for part in dirs {
            cur = self
                .meta
                .lookup(user.id, cur.id, part)
                .await?
                .ok_or(MetaError::NotFound)?;
            if !cur.is_dir() {
                return Err(MetaError::NotADirectory.into());
            }
        }
        Ok((cur, name.to_string()))
    }

    /// Streams `body` into the store and commits it as a file entry. See the module docs
    /// for what a crash at each step leaves behind.
    pub async fn upload<S, E>(&self, user: &User, target: UploadTarget, body: S) -> Result<Entry>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        validate_name(&target.name)?;
        // The first bytes decide the path: a body that ends within `INLINE_MAX` goes into
        // its row, and its transaction checks the target like `check_target` would (one
        // round of reads fewer); a longer one is checked before the rest is received.
        let mut body = std::pin::pin!(body);
        let head = read_head(&mut body, INLINE_MAX, self.max_upload).await?;
        if head.ended {
            return self.upload_inline(user, target, join_chunks(head.chunks)).await;
        }
        self.check_target(user, &target).await?;
        let body = futures_util::stream::iter(head.chunks.into_iter().map(Ok)).chain(body);
        let mut staged = self.staging.receive(body, self.max_upload).await?;
        failpoint("upload.staged");
        let mut content = NewContent {
            sha1: staged.sha1.clone(),
            sha256: None,
            size: staged.size as i64,
            inline: None,
        };
        // New content is synced and linked into the object store here (step 3 above),
        // so that `place` in the transaction finds it there and has nothing to flush while
        // the write gate is held. A dedup hit skips it, and compares second hashes instead.
        let known = self.meta.content(&staged.sha1).await?;
        let m = crate::metrics::global();
        crate::metrics::add(&m.bytes_in, staged.size);
        match known {
            Some(c) if c.store != STORE_LOCAL || self.staging.objects().contains(&c.sha1) => {
                content.sha256 = Some(
                    self.second_hash_against(Some(c), &content, Body::File(staged.path()))
                        .await?,
                );
                failpoint("upload.verified");
                crate::metrics::add(&m.dedup_hits, 1);
                crate::metrics::add(&m.dedup_bytes_saved, staged.size);
            }
            _ => {
                // The staged file goes to the blocking thread and comes back: its open
                // descriptor is what gets synced (see `LocalStore::place_open`), and it
                // stays open until the link is made even if this request is dropped
                // meanwhile (a client that went away). Were it dropped here, its number
                // could be reused by another upload's temp file before the link, and
                // `/proc/self/fd/N` would then link that file's bytes under this SHA-1.
                // If placing fails, it is dropped there, and its temp file with it.
                let objects = self.staging.objects().clone();
                staged = tokio::task::spawn_blocking(move || {
                    match staged.file() {
                        Some(file) => objects.place_open(&staged.sha1, staged.path(), file)?,
                        None => objects.place(&staged.sha1, staged.path())?,
                    }
                    Ok::<_, std::io::Error>(staged)
                })
                .await
                .map_err(|e| BlobError::Io(std::io::Error::other(e.to_string())))?
                .map_err(BlobError::from)?;
                failpoint("upload.linked");
            }
        }
        let (entry, _) = self
            .commit_known(user, target, content, Body::File(staged.path()))
            .await?;
        failpoint("upload.committed");
        tracing::debug!(user = %user.name, sha1 = %staged.sha1, size = staged.size, "upload committed");
        Ok(entry)
    }

    /// `upload` of a body that ended within [`INLINE_MAX`]: hashed here, and stored in
    /// its content row by the transaction that makes the entry, unless that row exists
    /// (then the second hashes are compared, as for any dedup hit).
    async fn upload_inline(&self, user: &User, target: UploadTarget, data: Bytes) -> Result<Entry> {
        failpoint("upload.staged");
        let size = data.len() as u64;
        let content = inline_content(hex::encode(sha1::Sha1::digest(&data)), &data);
        let m = crate::metrics::global();
        crate::metrics::add(&m.bytes_in, size);
        let (entry, shared) = self.commit_known(user, target, content, Body::Memory(&data)).await?;
        if shared {
            crate::metrics::add(&m.dedup_hits, 1);
            crate::metrics::add(&m.dedup_bytes_saved, size);
        }
        failpoint("upload.committed");
        tracing::debug!(user = %user.name, sha1 = %entry.sha1.as_deref().unwrap_or(""), size, "upload committed");
        Ok(entry)
    }

    /// Fails early, before gigabytes are received, if `target` cannot take a file.
    pub async fn check_target(&self, user: &User, target: &UploadTarget) -> Result<()> {
        validate_name(&target.name)?;
        match self.meta.entry(user.id, target.parent).await? {
            None => return Err(MetaError::NotFound.into()),
            Some(p) if !p.is_dir() => return Err(MetaError::NotADirectory.into()),
            Some(_) => {}
        }
        if target.conflict == Conflict::Fail && self.meta.lookup(user.id, target.parent, &target.name).await?.is_some()
        {
            return Err(MetaError::AlreadyExists.into());
        }
        Ok(())
    }

    /// Commits bytes already on the staging disk at `path` (hashed by the server) as a file
    /// entry; `path` is hard-linked into the store if the content is new there, or, at
    /// most [`INLINE_MAX`](crate::blob::INLINE_MAX) bytes, stored in the content row.
    ///
    /// Without a second hash in `content`, the content is looked up first: if it is
    /// stored, the SHA-256 of `path` is compared with the stored bytes' (`second_hash`).
    pub async fn commit(
        &self,
        user: &User,
        target: UploadTarget,
        mut content: NewContent,
        path: &Path,
    ) -> Result<Entry> {
        if content.size >= 0 && content.size as u64 <= crate::blob::INLINE_MAX {
            let data = Bytes::from(tokio::fs::read(path).await.map_err(BlobError::from)?);
            if data.len() as i64 != content.size {
                return Err(BlobError::Io(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} has {} bytes, expected {}", path.display(), data.len(), content.size),
                ))
                .into());
            }
            let content = inline_content(content.sha1, &data);
            return Ok(self.commit_known(user, target, content, Body::Memory(&data)).await?.0);
        }
        let body = Body::File(path);
        if content.sha256.is_none() {
            if let Some(stored) = self.meta.content(&content.sha1).await? {
                content.sha256 = Some(self.second_hash_against(Some(stored), &content, body).await?);
            }
        }
        Ok(self.commit_known(user, target, content, body).await?.0)
    }

    /// `commit` once the caller has looked the content up. Also says whether the content
    /// row was referenced already (a dedup hit; one revived from its grace period does not
    /// count, its count was 0).
    async fn commit_known(
        &self,
        user: &User,
        target: UploadTarget,
        content: NewContent,
        body: Body<'_>,
    ) -> Result<(Entry, bool)> {
        self.commit_known_mode(user, target, content, body, FILE_MODE).await
    }

    /// `commit_known` of a new file with `mode`.
    async fn commit_known_mode(
        &self,
        user: &User,
        target: UploadTarget,
        mut content: NewContent,
        body: Body<'_>,
        mode: i64,
    ) -> Result<(Entry, bool)> {
        validate_name(&target.name)?;
        let staging = &self.staging;
        // The row the transaction found or made: a staging-disk one must have its file
        // (placed already, or again if a collection removed it meanwhile); an inline one
        // holds the bytes itself.
        let shared = std::sync::atomic::AtomicBool::new(false);
        let place = |c: &Content| -> std::io::Result<()> {
            shared.store(c.refcount > 1, std::sync::atomic::Ordering::Relaxed);
            if c.store == STORE_LOCAL {
                match body {
                    Body::File(path) => staging.objects().place(&c.sha1, path)?,
                    Body::Memory(data) => staging.place_bytes(&c.sha1, data)?,
                }
            }
            failpoint("upload.placed");
            Ok(())
        };
        // A content row can appear (a concurrent upload of the same bytes) or lose its
        // second hash (collected and uploaded anew) between the lookup and the
        // transaction; each time, the hashes are compared again. Three rounds are plenty:
        // it takes a race for each.
        let mut round = 0;
        loop {
            let req = CommitFile {
                owner: user.id,
                parent: target.parent,
                name: target.name.clone(),
                content: content.clone(),
                conflict: target.conflict,
                mode,
                mtime: target.mtime,
            };
            match self.meta.commit_file(&req, &place).await {
                Err(MetaError::Unverified) if round < 3 => {
                    round += 1;
                    if let Body::Memory(data) = body {
                        self.restore_lost_copy(&content.sha1, data).await?;
                    }
                    content.sha256 = Some(self.second_hash(&content, body).await?);
                }
                Ok(entry) => {
                    crate::metrics::add(&crate::metrics::global().uploads, 1);
                    return Ok((entry, shared.load(std::sync::atomic::Ordering::Relaxed)));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// A staging-disk row whose file is gone (a collection that removed it and then failed
    /// to commit, or a file deleted by hand) gets `data`, which has its SHA-1, as its copy:
    /// what a streamed upload does by placing its temp file before the transaction. Only
    /// then can the row's second hash be computed and compared.
    async fn restore_lost_copy(&self, sha1: &str, data: &Bytes) -> Result<()> {
        match self.meta.content(sha1).await? {
            Some(c) if c.store == STORE_LOCAL && !self.staging.objects().contains(sha1) => {
                tracing::warn!(
                    sha1,
                    "stored copy missing; restoring it from an upload of the same bytes"
                );
                let (staging, sha1, data) = (self.staging.clone(), sha1.to_owned(), data.clone());
                tokio::task::spawn_blocking(move || staging.place_bytes(&sha1, &data))
                    .await
                    .map_err(|e| BlobError::Io(std::io::Error::other(e.to_string())))?
                    .map_err(BlobError::from)?;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The SHA-256 of the bytes at `path`, once it is known to equal the stored content's
    /// of the same SHA-1 (`Collision` otherwise). The stored side's is computed from its
    /// bytes if nobody has yet, and recorded; both run at once on blocking threads.
    pub async fn second_hash(&self, content: &NewContent, body: Body<'_>) -> Result<String> {
        let stored = self.meta.content(&content.sha1).await?;
        self.second_hash_against(stored, content, body).await
    }

    /// `second_hash` with the stored row the caller has just read.
    async fn second_hash_against(
        &self,
        stored: Option<Content>,
        content: &NewContent,
        body: Body<'_>,
    ) -> Result<String> {
        let ours = async {
            if let Some(h) = &content.sha256 {
                return Ok(h.clone());
            }
            let p = match body {
                Body::Memory(data) => return Ok(hex::encode(sha2::Sha256::digest(data))),
                Body::File(path) => path.to_path_buf(),
            };
            let h = tokio::task::spawn_blocking(move || crate::blob::sha256_file(&p))
                .await
                .map_err(|e| BlobError::Io(std::io::Error::other(e.to_string())))?
                .map_err(BlobError::from)?;
            Ok::<_, DriveError>(h)
        };
        let theirs = async {
            match &stored {
                Some(c) if c.sha256.is_empty() => Some(self.stored_sha256(c).await).transpose(),
                Some(c) => Ok(Some(c.sha256.clone())),
                None => Ok(None),
            }
        };
        let (ours, theirs) = tokio::try_join!(ours, theirs)?;
        let (Some(c), Some(theirs)) = (stored, theirs) else {
            return Ok(ours); // gone meanwhile: the commit will store it as new
        };
        let theirs = if c.sha256.is_empty() {
            self.meta.set_sha256(&c.sha1, &theirs).await?
        } else {
            theirs
        };
        if theirs != ours || c.size != content.size {
            return Err(MetaError::Collision.into());
        }
        Ok(ours)
    }

    /// Hashes stored content from its bytes: from the local object directly, from S3
    /// through the blob store.
    async fn stored_sha256(&self, c: &Content) -> Result<String> {
        if let (STORE_INLINE, Some(data)) = (c.store.as_str(), &c.data) {
            return Ok(hex::encode(sha2::Sha256::digest(data)));
        }
        if c.store == STORE_LOCAL {
            let path = self.staging.objects().path(&c.sha1);
            return Ok(tokio::task::spawn_blocking(move || crate::blob::sha256_file(&path))
                .await
                .map_err(|e| BlobError::Io(std::io::Error::other(e.to_string())))?
                .map_err(BlobError::from)?);
        }
        let mut stream = self.blobs.read(c, 0, c.size.max(0) as u64).await?;
        let mut h = sha2::Sha256::new();
        while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
            h.update(&chunk.map_err(BlobError::from)?);
        }
        Ok(hex::encode(h.finalize()))
    }

    /// A new entry for content the store already holds (instant upload). The caller has
    /// established the user's right to it.
    pub async fn link(&self, user: &User, target: UploadTarget, content: &Content) -> Result<Entry> {
        let entry = self.link_with_mode(user, target, content, FILE_MODE).await?;
        let m = crate::metrics::global();
        crate::metrics::add(&m.dedup_hits, 1);
        crate::metrics::add(&m.dedup_bytes_saved, content.size.max(0) as u64);
        Ok(entry)
    }

    /// A new empty file `name` in `parent` with `mode` (`AlreadyExists` if the name is
    /// taken): create(2) of a mount. Once the empty content is stored this is one
    /// transaction that references it, with nothing written to the staging disk.
    pub async fn create_empty(
        &self,
        user: &User,
        parent: i64,
        name: &str,
        mode: i64,
        mtime: Option<i64>,
    ) -> Result<Entry> {
        let target = UploadTarget {
            parent,
            name: name.to_owned(),
            conflict: Conflict::Fail,
            mtime,
        };
        match self.meta.content(EMPTY_SHA1).await? {
            // Size 0 under the SHA-1 of nothing cannot be anything but the empty content.
            Some(c) if c.size == 0 && (c.store != STORE_LOCAL || self.staging.objects().contains(&c.sha1)) => {
                self.link_with_mode(user, target, &c, mode).await
            }
            // The first empty file: the content row is made in the same transaction, so
            // that the entry's ctime is its directory's new mtime, as for every create.
            _ => {
                let nothing = Bytes::new();
                let content = inline_content(EMPTY_SHA1.to_owned(), &nothing);
                let body = Body::Memory(&nothing);
                Ok(self.commit_known_mode(user, target, content, body, mode).await?.0)
            }
        }
    }

    async fn link_with_mode(&self, user: &User, target: UploadTarget, content: &Content, mode: i64) -> Result<Entry> {
        validate_name(&target.name)?;
        let req = CommitFile {
            owner: user.id,
            parent: target.parent,
            name: target.name,
            // The row's own second hash, compared with itself: the caller has established
            // the right to this content, there are no new bytes to compare. (Empty if none
            // was recorded when the caller read the row: see `NewContent::sha256`.)
            content: NewContent {
                sha1: content.sha1.clone(),
                sha256: Some(content.sha256.clone()),
                size: content.size,
                inline: None,
            },
            conflict: target.conflict,
            mode,
            mtime: target.mtime,
        };
        let objects = self.staging.objects();
        let present = |c: &Content| -> std::io::Result<()> {
            if c.store == STORE_LOCAL && !objects.contains(&c.sha1) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "content bytes are gone",
                ));
            }
            Ok(())
        };
        Ok(self.meta.commit_file(&req, &present).await?)
    }

    pub async fn mkdir(&self, user: &User, parent: i64, name: &str) -> Result<Entry> {
        validate_name(name)?;
        Ok(self.meta.mkdir(user.id, parent, name, DIR_MODE).await?)
    }

    /// Creates the directory at `path`, and with `parents` any missing directory above it
    /// (an existing directory at `path` is then not an error, like `mkdir -p`).
    pub async fn mkdir_path(&self, user: &User, path: &str, parents: bool) -> Result<Entry> {
        let parts = split_path(path)?;
        if parts.is_empty() {
            return Err(NameError::Root.into());
        }
        let mut cur = self.meta.root(user.id).await?;
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            match self.meta.lookup(user.id, cur.id, part).await? {
                Some(e) if e.is_dir() && (!last || parents) => cur = e,
                Some(_) if last => return Err(MetaError::AlreadyExists.into()),
                Some(_) => return Err(MetaError::NotADirectory.into()),
                None if !last && !parents => return Err(MetaError::NotFound.into()),
                None => {
                    cur = match self.meta.mkdir(user.id, cur.id, part, DIR_MODE).await {
                        // Created concurrently by someone else: fine for the parents.
                        Err(MetaError::AlreadyExists) if parents => self
                            .meta
                            .lookup(user.id, cur.id, part)
                            .await?
                            .ok_or(MetaError::NotFound)?,
                        other => other?,
                    }
                }
            }
        }
        Ok(cur)
    }

    pub async fn list(&self, user: &User, dir: &Entry, after: &str, limit: i64) -> Result<Vec<Entry>> {
        if !dir.is_dir() {
            return Err(MetaError::NotADirectory.into());
        }
        Ok(self.meta.list(user.id, dir.id, after, limit).await?)
    }

    pub async fn rename(&self, user: &User, id: i64, parent: i64, name: &str, ow: Overwrite) -> Result<Entry> {
        validate_name(name)?;
        Ok(self.meta.rename(user.id, id, parent, name, ow).await?)
    }

    pub async fn copy(&self, user: &User, id: i64, parent: i64, name: &str, ow: Overwrite) -> Result<Entry> {
        validate_name(name)?;
        Ok(self.meta.copy(user.id, id, parent, name, ow).await?)
    }

    pub async fn delete(&self, user: &User, id: i64, recursive: bool) -> Result<DeleteStats> {
        Ok(self.meta.delete(user.id, id, recursive).await?)
    }

    /// Deletes the entry `name` in directory `parent` if it is of `kind` (see
    /// `MetaStore::delete_child`); a directory must be empty. Returns the directory as
    /// the deletion left it.
    pub async fn delete_child(
        &self,
        user: &User,
        parent: i64,
        name: &str,
        kind: Option<EntryKind>,
    ) -> Result<(DeleteStats, Entry)> {
        validate_name(name)?;
        Ok(self.meta.delete_child(user.id, parent, name, kind).await?)
    }

    /// The content row of a file entry.
    pub async fn content_of(&self, entry: &Entry) -> Result<Content> {
        let sha1 = entry.sha1.as_deref().ok_or(MetaError::IsADirectory)?;
        Ok(self.meta.content(sha1).await?.ok_or(MetaError::NotFound)?)
    }

    /// Streams `len` bytes of a content from `offset`.
    pub async fn read(&self, content: &Content, offset: u64, len: u64) -> Result<ByteStream> {
        let stream = self.blobs.read(content, offset, len).await?;
        let m = crate::metrics::global();
        Ok(Box::pin(futures_util::StreamExt::inspect(stream, move |r| {
            if let Ok(b) = r {
                crate::metrics::add(&m.bytes_out, b.len() as u64);
            }
        })))
    }
}
