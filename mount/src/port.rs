//! The port: what a FUSE mount asks of a remote file tree.
//!
//! This crate does not depend on the `filestore` core (the core depends on it), so it
//! names here the few operations it needs and the core implements them twice: over the
//! HTTP API (a remote mount from any machine) and directly over its namespace (a local
//! mount on a server). Everything the mount adds (inode numbers, block cache, read-ahead,
//! write-back spooling, the crash journal) lives on this side of the trait.
//!
//! Contract, shared by every implementation:
//! - Entry ids are stable positive `i64`s for the life of the entry and are never reused
//!   for another entry (they become FUSE inode numbers with generation 0). A content
//!   replace ([`PutTarget::Replace`]) and a rename keep the id.
//! - Names are UTF-8, 1..=255 bytes, never `.` or `..`, never containing `/` or NUL.
//! - A file's content is named by its SHA-1 (lowercase hex) and is immutable: reading
//!   `(sha1, offset, len)` returns the same bytes forever, which is what lets the mount
//!   cache blocks by `(sha1, block)` without invalidation.
//! - Times are milliseconds since the Unix epoch.
//! - A commit hands the implementation a complete local spool file with its size and
//!   SHA-1 ([`PutFile`]), and the call returns only once the new content is committed
//!   (close-to-open consistency). Nothing is visible before that: a file written front
//!   to back may have had its leading chunks sent while it was written
//!   ([`RemoteTree::begin_stream`], write-behind), but they become content only through
//!   [`RemoteTree::finish_stream`], which checks the whole against its size. Such a file
//!   is not hashed by the mount: the server computes its SHA-1 and each chunk travels
//!   with a checksum of its own.

use std::io;
use std::path::Path;

use async_trait::async_trait;
use bytes::Bytes;

/// Opaque error source carried by [`PortError::Transient`] and [`PortError::Other`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// SHA-1 of the empty content, the content of a freshly created file.
pub const EMPTY_SHA1: &str = "da39a3ee5e6b4b0d3255bfef95601890afd80709";

/// Longest name, in bytes, that an entry may have.
pub const NAME_MAX: usize = 255;

/// Directory or regular file. Symlinks, hard links, devices, FIFOs and sockets are not
/// part of the model: the mount answers `EPERM` when asked to create them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
}

/// One entry of the remote tree, as the mount sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Stable id; becomes the inode number (the root is shown as inode 1).
    pub id: i64,
    /// Id of the parent directory (the root's parent is itself).
    pub parent: i64,
    /// Name in the parent (empty for the root).
    pub name: String,
    /// Directory or file.
    pub kind: EntryKind,
    /// Content length in bytes (0 for directories).
    pub size: u64,
    /// Lowercase hex SHA-1 of the content, for files. `None` for directories.
    pub sha1: Option<String>,
    /// Permission bits (`0o7777` at most; the file type is taken from `kind`).
    pub mode: u32,
    /// Owner uid, if the implementation stores one. `None`: the mount shows its configured
    /// owner ([`crate::MountConfig::uid`]). The filestore core stores no owner.
    pub uid: Option<u32>,
    /// Owner gid, if stored (see `uid`).
    pub gid: Option<u32>,
    /// Last access time, if stored. `None`: the mount shows `mtime`.
    pub atime_ms: Option<i64>,
    /// Last content modification.
    pub mtime_ms: i64,
    /// Last change of content or metadata.
    pub ctime_ms: i64,
}

/// Mode and owner of an entry being created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewAttrs {
    /// Permission bits, after the caller's umask.
    pub mode: u32,
    /// Uid of the creating process (ignored by implementations that store no owner).
    pub uid: u32,
    /// Gid for the new entry (ignored likewise).
    pub gid: u32,
}

/// Where [`RemoteTree::put_file`] puts the content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutTarget<'a> {
    /// A new file `name` in `parent`; [`PortError::AlreadyExists`] if the name is taken.
    Create {
        /// Parent directory id.
        parent: i64,
        /// New name.
        name: &'a str,
        /// Mode and owner of the new file.
        attrs: NewAttrs,
    },
    /// Replace the content of the existing file `id`, wherever it now is; the id, mode
    /// and owner stay. [`PortError::NotFound`] if it was deleted meanwhile.
    Replace {
        /// The file to overwrite.
        id: i64,
    },
}

/// A whole-file upload from a local spool file.
#[derive(Debug, Clone, Copy)]
pub struct PutFile<'a> {
    /// What to create or replace.
    pub target: PutTarget<'a>,
    /// A complete local file holding the new content. It does not change during the call;
    /// the implementation may read it as often as it needs (resumable chunked uploads).
    pub source: &'a Path,
    /// Its length in bytes.
    pub size: u64,
    /// Its SHA-1 (lowercase hex), computed by the mount. A remote implementation may first
    /// try an instant upload by hash; the server still verifies what it stores.
    pub sha1: &'a str,
    /// Modification time to record.
    pub mtime_ms: i64,
}

/// What [`RemoteTree::finish_stream`] commits: file `id`, complete in `source` (which does
/// not change during the call). No SHA-1: the implementation learns it from what it
/// stores, and answers it in the entry.
#[derive(Debug, Clone, Copy)]
pub struct StreamEnd<'a> {
    pub id: i64,
    pub source: &'a Path,
    pub size: u64,
    /// Modification time to record.
    pub mtime_ms: i64,
}

impl StreamEnd<'_> {
    /// The whole-file upload to fall back on: it hashes `source` (on this thread).
    pub fn hash_for_put(&self) -> io::Result<String> {
        crate::journal::sha1_file(&mut std::fs::File::open(self.source)?)
    }

    /// As a [`PutFile`], with its SHA-1.
    pub fn as_put<'a>(&'a self, sha1: &'a str) -> PutFile<'a> {
        PutFile {
            target: PutTarget::Replace { id: self.id },
            source: self.source,
            size: self.size,
            sha1,
            mtime_ms: self.mtime_ms,
        }
    }
}

/// A write-behind upload in progress: chunks of a file sent while it is still being
/// written (see [`RemoteTree::begin_stream`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSession {
    /// The implementation's name for it.
    pub id: String,
    /// Length of every chunk but the last.
    pub chunk_size: u64,
}

/// What [`RemoteTree::rename`] does when the new name is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenameMode {
    /// Fail with [`PortError::AlreadyExists`] (`renameat2(RENAME_NOREPLACE)`).
    NoReplace,
    /// rename(2) rules: a file replaces a file, a directory replaces an empty directory
    /// ([`PortError::NotEmpty`] otherwise), a directory never replaces a file
    /// ([`PortError::NotADirectory`]) nor a file a directory ([`PortError::IsADirectory`]);
    /// moving a directory under itself is [`PortError::InvalidArgument`]; renaming an
    /// entry onto itself does nothing.
    Posix,
}

/// Attributes to change; `None` leaves one as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetAttrs {
    /// New permission bits.
    pub mode: Option<u32>,
    /// New owner uid ([`PortError::Unsupported`] where owners are not stored).
    pub uid: Option<u32>,
    /// New owner gid (likewise).
    pub gid: Option<u32>,
    /// New access time (implementations that store none ignore it).
    pub atime_ms: Option<i64>,
    /// New modification time.
    pub mtime_ms: Option<i64>,
}

/// Space accounting for statfs(2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsStats {
    /// Capacity (quota) in bytes.
    pub total_bytes: u64,
    /// Bytes used.
    pub used_bytes: u64,
}

/// Errors a port can report. Each variant is something every implementation can
/// produce; anything else is `Transient` or `Other` with the cause as source.
///
/// Mapped to errno once, in [`PortError::errno`]:
///
/// | variant | errno |
/// |---|---|
/// | `NotFound` | `ENOENT` |
/// | `AlreadyExists` | `EEXIST` |
/// | `NotADirectory` | `ENOTDIR` |
/// | `IsADirectory` | `EISDIR` |
/// | `NotEmpty` | `ENOTEMPTY` |
/// | `PermissionDenied` | `EACCES` |
/// | `InvalidArgument` | `EINVAL` |
/// | `NoSpace` | `ENOSPC` |
/// | `Unsupported` | `EOPNOTSUPP` |
/// | `Transient` | `EIO` (the caller may retry; uploads stay journaled) |
/// | `Other` | `EIO` |
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// The entry (or a parent) does not exist.
    #[error("not found")]
    NotFound,
    /// The name is taken.
    #[error("already exists")]
    AlreadyExists,
    /// A directory was expected.
    #[error("not a directory")]
    NotADirectory,
    /// A file was expected.
    #[error("is a directory")]
    IsADirectory,
    /// The directory is not empty.
    #[error("directory not empty")]
    NotEmpty,
    /// The account may not do this.
    #[error("permission denied")]
    PermissionDenied,
    /// A bad name, or a directory moved under itself.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Quota or storage exhausted, or the upload is larger than the server accepts.
    #[error("no space left")]
    NoSpace,
    /// The implementation does not do this (for example changing owners).
    #[error("operation not supported")]
    Unsupported,
    /// A failure a retry may cure (network, 5xx, timeout).
    #[error("transient failure: {0}")]
    Transient(#[source] BoxError),
    /// Anything else.
    #[error("{0}")]
    Other(#[source] BoxError),
}

impl PortError {
    /// The errno this error becomes at the FUSE edge (table on the type).
    pub fn errno(&self) -> i32 {
        match self {
            PortError::NotFound => libc::ENOENT,
            PortError::AlreadyExists => libc::EEXIST,
            PortError::NotADirectory => libc::ENOTDIR,
            PortError::IsADirectory => libc::EISDIR,
            PortError::NotEmpty => libc::ENOTEMPTY,
            PortError::PermissionDenied => libc::EACCES,
            PortError::InvalidArgument(_) => libc::EINVAL,
            PortError::NoSpace => libc::ENOSPC,
            PortError::Unsupported => libc::EOPNOTSUPP,
            PortError::Transient(_) | PortError::Other(_) => libc::EIO,
        }
    }

    /// Whether this is an expected answer (logged at debug) rather than a failure (warn).
    pub fn is_expected(&self) -> bool {
        !matches!(self, PortError::Transient(_) | PortError::Other(_))
    }
}

/// The remote file tree behind a mount. All methods may be called concurrently.
#[async_trait]
pub trait RemoteTree: Send + Sync + 'static {
    /// Id of the root directory of the tree being mounted.
    fn root_id(&self) -> i64;

    /// Whether the mount may run each call on a current-thread runtime owned by the FUSE
    /// thread that took the request, instead of on the shared runtime. Then a call's I/O
    /// is driven by the thread waiting for it, with no hand-off to a runtime worker and
    /// back (two wake-ups per call). Say yes only if nothing a call leaves behind needs
    /// that runtime after the call returns: a call may spawn tasks that it awaits itself
    /// (an HTTP connection's task, polled while the call runs), but not work that others
    /// wait for later (a pool that returns its connections from a spawned task would hold
    /// them until the same thread took another request). Work that outlives a request
    /// (write-behind, read-ahead) always runs on the shared runtime.
    fn thread_runtime(&self) -> bool {
        false
    }

    /// The entry `name` in directory `parent`.
    async fn lookup(&self, parent: i64, name: &str) -> Result<Entry, PortError>;

    /// The entry `id`.
    async fn get(&self, id: i64) -> Result<Entry, PortError>;

    /// Up to `limit` children of `dir` whose names sort strictly after `after` in byte
    /// order, in that order. Fewer than `limit` means the listing is complete.
    async fn list(&self, dir: i64, after: Option<&str>, limit: usize) -> Result<Vec<Entry>, PortError>;

    /// Create directory `name` in `parent`.
    async fn mkdir(&self, parent: i64, name: &str, attrs: NewAttrs) -> Result<Entry, PortError>;

    /// Create or replace a file with the content of a local file (see [`PutFile`]).
    /// Creating an empty file is a `put_file` of [`EMPTY_SHA1`], size 0.
    async fn put_file(&self, put: PutFile<'_>) -> Result<Entry, PortError>;

    /// Starts a write-behind upload that will replace the content of file `id`: the mount
    /// sends the leading chunks of a spool written front to back while it is still being
    /// written, so that the commit at close has only the tail left to send. `Ok(None)`:
    /// the implementation has no such thing (the default); the mount then uploads at
    /// commit with [`RemoteTree::put_file`] alone.
    async fn begin_stream(&self, id: i64) -> Result<Option<StreamSession>, PortError> {
        let _ = id;
        Ok(None)
    }

    /// Sends chunk `index` (0-based: bytes `[index * chunk_size, (index + 1) * chunk_size)`
    /// of the final content; `data` is that long). Nothing becomes visible.
    async fn stream_chunk(&self, stream: &StreamSession, index: u64, data: Bytes) -> Result<(), PortError> {
        let _ = (stream, index, data);
        Err(PortError::Unsupported)
    }

    /// Commits `end` (the file the stream was begun for), whose chunks `0..sent` went
    /// through [`RemoteTree::stream_chunk`] with the bytes `end.source` holds now: sends the
    /// rest from `end.source` and completes, returning only once committed, as `put_file`
    /// does, with the entry's new SHA-1. If the session was lost or refused, it uploads
    /// the file whole instead.
    async fn finish_stream(&self, stream: &StreamSession, end: StreamEnd<'_>, sent: u64) -> Result<Entry, PortError> {
        let _ = (stream, sent);
        let sha1 = end.hash_for_put().map_err(|e| PortError::Other(Box::new(e)))?;
        self.put_file(end.as_put(&sha1)).await
    }

    /// Abandons a write-behind upload (best effort: an implementation may also let it
    /// expire). Nothing it sent becomes visible.
    async fn abort_stream(&self, stream: &StreamSession) {
        let _ = stream;
    }

    /// Create the empty file `name` in `parent` (create(2)), recording `mtime_ms`;
    /// [`PortError::AlreadyExists`] if the name is taken.
    async fn create_file(&self, parent: i64, name: &str, attrs: NewAttrs, mtime_ms: i64) -> Result<Entry, PortError>;

    /// Up to `len` bytes of the content `sha1` (belonging to file `id`) from `offset`.
    /// Shorter only at the end of the content; empty at or past the end.
    async fn read(&self, id: i64, sha1: &str, offset: u64, len: u64) -> Result<Bytes, PortError>;

    /// Move entry `id` to `new_name` in `new_parent` (see [`RenameMode`]).
    async fn rename(&self, id: i64, new_parent: i64, new_name: &str, mode: RenameMode) -> Result<Entry, PortError>;

    /// Delete entry `id`; a directory must be empty unless `recursive` (the mount always
    /// passes `false`: unlink(2) and rmdir(2)).
    async fn delete(&self, id: i64, recursive: bool) -> Result<(), PortError>;

    /// Delete the entry `name` in `parent` if it is a directory (`dir`, which must be
    /// empty: rmdir(2)) or a file (unlink(2)); the wrong kind is
    /// [`PortError::IsADirectory`] / [`PortError::NotADirectory`]. Implementations that
    /// can should do it in one step; this default looks the name up first. Returns
    /// `parent` as the deletion left it (its new mtime and ctime) when the implementation
    /// learns that in the same step, so that the mount need not ask for it.
    async fn delete_child(&self, parent: i64, name: &str, dir: bool) -> Result<Option<Entry>, PortError> {
        let e = self.lookup(parent, name).await?;
        match (dir, e.kind) {
            (true, EntryKind::File) => Err(PortError::NotADirectory),
            (false, EntryKind::Dir) => Err(PortError::IsADirectory),
            _ => self.delete(e.id, false).await.map(|()| None),
        }
    }

    /// Change mode, owner or times of `id`; returns the updated entry.
    async fn set_attrs(&self, id: i64, attrs: SetAttrs) -> Result<Entry, PortError>;

    /// Capacity and usage for statfs(2).
    async fn statfs(&self) -> Result<FsStats, PortError>;
}
