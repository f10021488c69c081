//! Rows and requests of the metadata layer.

/// An account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub password_hash: String,
    pub is_admin: bool,
    pub disabled: bool,
    pub created_at: i64,
    pub last_active: i64,
}

#[derive(sqlx::FromRow)]
pub(crate) struct UserRow {
    pub(super) id: i64,
    pub(super) name: String,
    pub(super) password_hash: String,
    pub(super) is_admin: i64,
    pub(super) disabled: i64,
    pub(super) created_at: i64,
    pub(super) last_active: i64,
}

impl From<UserRow> for User {
    fn from(r: UserRow) -> Self {
        User {
            id: r.id,
            name: r.name,
            password_hash: r.password_hash,
            is_admin: r.is_admin != 0,
            disabled: r.disabled != 0,
            created_at: r.created_at,
            last_active: r.last_active,
        }
    }
}

/// A distinct content, stored once whatever the number of entries that point at it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Content {
    pub sha1: String,
    /// The second hash, or empty while nobody has needed it yet: it is computed from the
    /// stored bytes on the first upload whose SHA-1 matches (see `Drive::commit`).
    pub sha256: String,
    pub size: i64,
    pub refcount: i64,
    /// Where the bytes live now: `local` (staging disk), `s3`, or `inline` (in `data`).
    pub store: String,
    pub object_key: Option<String>,
    pub zero_since: Option<i64>,
    pub created_at: i64,
    /// The bytes of an `inline` content; `None` for every other store.
    pub data: Option<Vec<u8>>,
}

/// `Content::store` of content on the staging disk.
pub const STORE_LOCAL: &str = "local";
/// `Content::store` of content in object storage.
pub const STORE_S3: &str = "s3";
/// `Content::store` of small content kept in its own row (`Content::data`).
pub const STORE_INLINE: &str = "inline";

/// The identity of content just received, hashed by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewContent {
    pub sha1: String,
    /// `None`: the caller expects the content to be new and has not computed the second
    /// hash; if a row of that SHA-1 exists after all, the commit fails with
    /// `MetaError::Unverified`. `Some`: compared with the stored row's. `Some("")` is only
    /// for a link without new bytes to a row read before its hash was recorded (a hash is
    /// recorded once, never changed); it matches the row whatever the row holds now.
    pub sha256: Option<String>,
    pub size: i64,
    /// The bytes themselves, for content small enough to be stored in its row: if the row
    /// is new, it is an `inline` one holding them. `None`: the bytes are on the staging
    /// disk (or already stored), and a new row is a `local` one.
    pub inline: Option<bytes::Bytes>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File,
}

impl EntryKind {
    pub(crate) fn code(self) -> i64 {
        match self {
            EntryKind::Dir => 1,
            EntryKind::File => 2,
        }
    }
    fn from_code(c: i64) -> Self {
        if c == 1 {
            EntryKind::Dir
        } else {
            EntryKind::File
        }
    }
}

/// A node of a user's tree. `id` is stable for the life of the entry (rename keeps it),
/// which is what lets FUSE use it as the inode number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: i64,
    pub owner: i64,
    /// `None` only for the user's root directory.
    pub parent: Option<i64>,
    pub name: String,
    pub kind: EntryKind,
    pub sha1: Option<String>,
    pub size: i64,
    pub mode: i64,
    pub mtime: i64,
    pub ctime: i64,
    pub created_at: i64,
}

impl Entry {
    pub fn is_dir(&self) -> bool {
        self.kind == EntryKind::Dir
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct EntryRow {
    pub(super) id: i64,
    pub(super) owner: i64,
    pub(super) parent: Option<i64>,
    pub(super) name: Vec<u8>,
    pub(super) kind: i64,
    pub(super) sha1: Option<String>,
    pub(super) size: i64,
    pub(super) mode: i64,
    pub(super) mtime: i64,
    pub(super) ctime: i64,
    pub(super) created_at: i64,
}

impl From<EntryRow> for Entry {
    fn from(r: EntryRow) -> Self {
        Entry {
            id: r.id,
            owner: r.owner,
            parent: r.parent,
            // Names are validated UTF-8 on the way in; a lossy decode only guards against
            // rows written by something else.
            name: String::from_utf8(r.name).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            kind: EntryKind::from_code(r.kind),
            sha1: r.sha1,
            size: r.size,
            mode: r.mode,
            mtime: r.mtime,
            ctime: r.ctime,
            created_at: r.created_at,
        }
    }
}

/// What to do when a file is committed under a name that is already taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    /// Fail with `AlreadyExists`.
    Fail,
    /// Replace the content of the existing file (it keeps its id); fail if it is a directory.
    Replace,
    /// Pick `name (1).ext`, `name (2).ext`, ... like a browser download.
    Rename,
    /// Replace the content of the file with this id wherever it now is (the request's
    /// parent and name are ignored); `NotFound` if it is gone, `IsADirectory` for a
    /// directory. What a FUSE mount's write-back needs: a rename racing the upload cannot
    /// send the bytes to another file.
    Entry(i64),
}

/// What to do when a move or copy lands on an existing name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overwrite {
    /// Fail with `AlreadyExists`.
    No,
    /// rename(2) rules: a file replaces a file, a directory replaces an empty directory.
    Posix,
    /// WebDAV `Overwrite: T`: the destination is deleted first, whatever it holds.
    Any,
}

/// A request to create or replace a file entry that points at (possibly new) content.
#[derive(Debug, Clone)]
pub struct CommitFile {
    pub owner: i64,
    pub parent: i64,
    pub name: String,
    pub content: NewContent,
    pub conflict: Conflict,
    pub mode: i64,
    /// The mtime to record; `None` means now.
    pub mtime: Option<i64>,
}

/// What a delete removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteStats {
    pub entries: u64,
    /// Contents whose reference count dropped to zero (collected after the grace period).
    pub released: u64,
}
