//! The port: what the WebDAV adapter asks of one user's file tree.
//!
//! The core implements [`DavPort`] over its per-user namespace; this crate ships an
//! in-memory implementation (feature `memory`) for its own tests. One port object is
//! bound to one authenticated user, so no method takes a user argument.
//!
//! The methods mirror what the core can do in one metadata query or transaction. The
//! adapter is written so that a WebDAV request costs a bounded number of port calls:
//! PROPFIND Depth 1 uses one [`DavPort::list`] per page of children and one
//! [`DavPort::get_props_dir`] (or one [`DavPort::get_props_many`] per page), never a call
//! per child.

use std::io;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;

use crate::error::PortError;

/// Entry id: stable for the life of the entry (the core's row id, also the FUSE inode).
pub type EntryId = i64;

/// Milliseconds since the Unix epoch (UTC).
pub type Millis = i64;

/// Request body handed to [`DavPort::upload`]. It yields `Err` if the client goes away
/// or the request is aborted before the end: the port must then store nothing.
pub type UploadBody = Pin<Box<dyn Stream<Item = Result<Bytes, io::Error>> + Send + 'static>>;

/// File content returned by [`DavPort::read`].
pub type ReadBody = Pin<Box<dyn Stream<Item = Result<Bytes, PortError>> + Send + 'static>>;

/// Directory or regular file. (No symlinks: WebDAV has no use for them.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A collection.
    Dir,
    /// A regular file with content.
    File,
}

/// One node of the user's tree, as the core's metadata row describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Stable id.
    pub id: EntryId,
    /// Parent directory; `None` only for the user's root.
    pub parent: Option<EntryId>,
    /// UTF-8, 1..=255 bytes, no `/` or NUL. Empty for the root.
    pub name: String,
    /// Directory or file.
    pub kind: EntryKind,
    /// Content length in bytes (0 for directories).
    pub size: i64,
    /// Lower-case hex SHA-1 of the content (files). Used verbatim as the ETag.
    pub sha1: Option<String>,
    /// Unix permission bits; the executable bit shows as `A:executable`.
    pub mode: u32,
    /// Last content change.
    pub mtime: Millis,
    /// Last metadata change.
    pub ctime: Millis,
    /// Creation time (`DAV:creationdate`).
    pub created: Millis,
}

impl Entry {
    /// Whether this entry is a directory.
    pub fn is_dir(&self) -> bool {
        self.kind == EntryKind::Dir
    }
}

/// What [`DavPort::upload`] does when the name is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    /// Replace the content of the existing file, keeping its id (and dead properties).
    /// An existing directory is [`PortError::IsADirectory`].
    Replace,
    /// Fail with [`PortError::AlreadyExists`] (PUT with `If-None-Match: *`, LOCK on an
    /// unmapped URL).
    Fail,
}

/// Options of one upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadOptions {
    /// What to do when the name is taken.
    pub conflict: Conflict,
    /// Modification time to record instead of "now" (clients that preserve mtimes).
    pub mtime: Option<Millis>,
    /// The length the client announced (`Content-Length`), when it did. A port may
    /// refuse early with [`PortError::TooLarge`]; the adapter itself checks that the
    /// body had exactly this length before it lets the upload end.
    pub expected_len: Option<u64>,
}

impl UploadOptions {
    /// Options with the given conflict rule and nothing else.
    pub fn new(conflict: Conflict) -> Self {
        Self {
            conflict,
            mtime: None,
            expected_len: None,
        }
    }
}

/// What [`DavPort::rename`] and [`DavPort::copy`] do when the destination name is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overwrite {
    /// Fail with [`PortError::AlreadyExists`] (WebDAV `Overwrite: F`).
    No,
    /// rename(2) rules: a file replaces a file, a directory replaces an empty directory;
    /// otherwise [`PortError::IsADirectory`], [`PortError::NotADirectory`] or
    /// [`PortError::NotEmpty`].
    Posix,
    /// Delete the destination first, whatever it is, recursively (WebDAV `Overwrite: T`).
    Any,
}

/// A dead property: stored and returned verbatim, never interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadProp {
    /// XML namespace URI (`None` for the empty namespace).
    pub namespace: Option<String>,
    /// Local name.
    pub name: String,
    /// The whole property element as serialized XML (`<ns:name xmlns:ns="...">value</ns:name>`).
    /// Opaque to the core; this crate produces and parses it.
    pub xml: Vec<u8>,
}

/// One change of a PROPPATCH, applied in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropPatch {
    /// Create or replace the property with this namespace and name.
    Set(DeadProp),
    /// Remove the property; removing an absent property is not an error.
    Remove {
        /// XML namespace URI.
        namespace: Option<String>,
        /// Local name.
        name: String,
    },
}

/// Space used by the user and the limit, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Bytes the user's files add up to (logical size, before dedup).
    pub used: u64,
    /// Total bytes allowed (used + available); `None` when unlimited.
    pub limit: Option<u64>,
}

/// One user's file tree, as WebDAV needs it.
///
/// Contract for implementors:
/// - Names are validated by the adapter (UTF-8, 1..=255 bytes, no `/` or NUL) but a
///   port should still refuse bad ones with [`PortError::InvalidName`].
/// - Every mutating method is atomic: it either happens completely or not at all.
/// - Errors are the small [`PortError`] set; anything else is [`PortError::Other`].
#[async_trait]
pub trait DavPort: Send + Sync + 'static {
    /// Id of the user's root directory. Cheap: the port knows it when it is built.
    fn root_id(&self) -> EntryId;

    /// The entry with this id.
    async fn get(&self, id: EntryId) -> Result<Entry, PortError>;

    /// The child `name` of directory `parent`, if there is one.
    async fn lookup(&self, parent: EntryId, name: &str) -> Result<Option<Entry>, PortError>;

    /// Walks `names` down from directory `from`. `Ok(None)` if a component is missing
    /// or is a file before the last one. The default does one [`Self::lookup`] per
    /// component; a port can answer in one query.
    async fn resolve(&self, from: EntryId, names: &[&str]) -> Result<Option<Entry>, PortError> {
        if names.is_empty() {
            return self.get(from).await.map(Some);
        }
        let mut dir = from;
        let mut found = None;
        for (i, name) in names.iter().enumerate() {
            let Some(e) = self.lookup(dir, name).await? else {
                return Ok(None);
            };
            if i + 1 < names.len() && !e.is_dir() {
                return Ok(None);
            }
            dir = e.id;
            found = Some(e);
        }
        Ok(found)
    }

    /// [`Self::resolve`] for a GET: the entry, and with it the whole content of a file
    /// when the port keeps small content with its metadata and can read both at once
    /// (one lookup instead of two). The default reads none; `None` also when the port
    /// has to read the content apart, through [`Self::read`].
    async fn resolve_with_content(
        &self,
        from: EntryId,
        names: &[&str],
    ) -> Result<Option<(Entry, Option<Bytes>)>, PortError> {
        Ok(self.resolve(from, names).await?.map(|e| (e, None)))
    }

    /// `n` bytes of content read by [`Self::resolve_with_content`] were sent in a GET
    /// body (for the port's accounting; [`Self::read`] counts its own).
    fn sent_with_entry(&self, _n: u64) {}

    /// One page of the children of `dir`, sorted by the bytes of their names, starting
    /// after `after` (exclusive), at most `limit` entries. A short page means the end.
    async fn list(&self, dir: EntryId, after: Option<&str>, limit: usize) -> Result<Vec<Entry>, PortError>;

    /// Creates directory `name` in `parent`.
    async fn mkdir(&self, parent: EntryId, name: &str) -> Result<Entry, PortError>;

    /// Stores the bytes of `body` as file `name` in `parent`, streaming (never holding the
    /// whole body). Nothing is visible until the body has ended without error.
    async fn upload(
        &self,
        parent: EntryId,
        name: &str,
        body: UploadBody,
        options: UploadOptions,
    ) -> Result<Entry, PortError>;

    /// `len` bytes of the file's content from `offset` (clamped to the size).
    async fn read(&self, entry: &Entry, offset: u64, len: u64) -> Result<ReadBody, PortError>;

    /// Moves/renames `id` to `new_name` in `new_parent`, keeping its id and dead
    /// properties. Moving a directory into itself or below is [`PortError::Forbidden`].
    async fn rename(
        &self,
        id: EntryId,
        new_parent: EntryId,
        new_name: &str,
        overwrite: Overwrite,
    ) -> Result<Entry, PortError>;

    /// Copies `id` to `new_name` in `new_parent` (new entries, same content: O(1) per
    /// file; directories recursively), with their dead properties.
    async fn copy(
        &self,
        id: EntryId,
        new_parent: EntryId,
        new_name: &str,
        overwrite: Overwrite,
    ) -> Result<Entry, PortError>;

    /// Deletes `id`; a non-empty directory needs `recursive`. The root cannot be deleted.
    async fn delete(&self, id: EntryId, recursive: bool) -> Result<(), PortError>;

    /// Changes the mode and/or the modification time.
    async fn set_attrs(&self, id: EntryId, mode: Option<u32>, mtime: Option<Millis>) -> Result<Entry, PortError>;

    /// Dead properties of one entry.
    async fn get_props(&self, id: EntryId) -> Result<Vec<DeadProp>, PortError>;

    /// Dead properties of many entries (a page of a listing), in one query. Entries
    /// without properties may be left out. The default calls [`Self::get_props`] per id.
    async fn get_props_many(&self, ids: &[EntryId]) -> Result<Vec<(EntryId, Vec<DeadProp>)>, PortError> {
        let mut out = Vec::with_capacity(ids.len());
        for &id in ids {
            out.push((id, self.get_props(id).await?));
        }
        Ok(out)
    }

    /// Dead properties of directory `dir` and of each of its children, in one query
    /// (PROPFIND Depth 1 of a whole directory). Entries without properties may be left
    /// out. The default lists the children and calls [`Self::get_props_many`].
    async fn get_props_dir(&self, dir: EntryId) -> Result<Vec<(EntryId, Vec<DeadProp>)>, PortError> {
        let mut ids = vec![dir];
        let mut after: Option<String> = None;
        loop {
            let page = self.list(dir, after.as_deref(), 1000).await?;
            ids.extend(page.iter().map(|e| e.id));
            match page.last() {
                Some(last) if page.len() == 1000 => after = Some(last.name.clone()),
                _ => break,
            }
        }
        self.get_props_many(&ids).await
    }

    /// Applies a PROPPATCH, all or nothing (RFC 4918 section 9.2).
    async fn patch_props(&self, id: EntryId, patch: Vec<PropPatch>) -> Result<(), PortError>;

    /// Space used and available.
    async fn quota(&self) -> Result<Quota, PortError>;
}
