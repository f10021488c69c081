//! [`RemoteTree`] directly over the [`Drive`]: a mount on a server (`filestore mount -c
//! CONFIG --user NAME`), with no HTTP in between. Same rules as every other front end:
//! names are validated, uploads are hashed (SHA-1 and SHA-256) by the core and committed
//! in one transaction, contents are shared by reference.
//!
//! `put_file` hashes the spool file; when the store already holds exactly those bytes
//! (same SHA-1, SHA-256 and size) it links them without a copy, otherwise it streams the
//! spool into the staging area like an HTTP upload. The spool is never hard-linked into
//! the store: the mount keeps writing to it after the commit.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use filestore_mount::{
    Entry as PortEntry, FsStats, NewAttrs, PortError, PutFile, PutTarget, RemoteTree, RenameMode, SetAttrs,
};
use futures_util::StreamExt;
use tracing::warn;

use super::{port_entry, unsupported_owner, DEFAULT_RETRY_FOR, UNLIMITED_BYTES};
use crate::blob::BlobError;
use crate::drive::{Body, Drive, DriveError, UploadTarget};
use crate::meta::{Conflict, Entry, EntryKind, MetaError, NewContent, Overwrite, User};

/// A user's tree on this server's drive, as the mount's port.
pub struct DriveTree {
    drive: Arc<Drive>,
    user: User,
    root: i64,
    retry_for: Duration,
}

/// The one mapping of drive errors to port errors (then errno, in the mount).
fn port_err(e: DriveError) -> PortError {
    match e {
        DriveError::Name(n) => PortError::InvalidArgument(n.to_string()),
        DriveError::Meta(m) => meta_err(m),
        DriveError::Blob(BlobError::TooLarge { .. }) => PortError::NoSpace,
        DriveError::Blob(BlobError::Io(io)) if io.raw_os_error() == Some(libc::ENOSPC) => PortError::NoSpace,
        DriveError::Blob(BlobError::Remote {
            transient: true,
            message,
        }) => PortError::Transient(message.into()),
        DriveError::Blob(other) => PortError::Other(Box::new(other)),
    }
}

fn meta_err(e: MetaError) -> PortError {
    match e {
        MetaError::NotFound => PortError::NotFound,
        MetaError::AlreadyExists => PortError::AlreadyExists,
        MetaError::NotADirectory => PortError::NotADirectory,
        MetaError::IsADirectory => PortError::IsADirectory,
        MetaError::NotEmpty => PortError::NotEmpty,
        MetaError::Cycle => PortError::InvalidArgument(e.to_string()),
        MetaError::Root => PortError::PermissionDenied,
        MetaError::Io(io) if io.raw_os_error() == Some(libc::ENOSPC) => PortError::NoSpace,
        MetaError::Db(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed) => {
            PortError::Transient(Box::new(e))
        }
        other => PortError::Other(Box::new(other)),
    }
}

fn entry(e: Entry) -> PortEntry {
    let dir = e.is_dir();
    port_entry(e.id, e.parent, e.name, dir, e.size, e.sha1, e.mode, e.mtime, e.ctime)
}

impl DriveTree {
    /// The tree of `user` (who must exist and be enabled).
    pub async fn new(drive: Arc<Drive>, user: User) -> Result<DriveTree, MetaError> {
        let root = drive.meta().root(user.id).await?.id;
        Ok(DriveTree {
            drive,
            user,
            root,
            retry_for: DEFAULT_RETRY_FOR,
        })
    }

    /// How long an unavailable database is retried before an operation fails (EIO).
    pub fn retry_for(mut self, d: Duration) -> Self {
        self.retry_for = d;
        self
    }

    fn owner(&self) -> i64 {
        self.user.id
    }

    /// Runs `op` until it succeeds, fails for good, or the database has been unavailable
    /// for `retry_for`.
    async fn retrying<T, F, Fut>(&self, what: &str, op: F) -> Result<T, PortError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, PortError>>,
    {
        let started = std::time::Instant::now();
        let mut delay = Duration::from_millis(100);
        loop {
            match op().await {
                Err(PortError::Transient(e)) if started.elapsed() < self.retry_for => {
                    if delay == Duration::from_millis(100) {
                        warn!(error = %e, "{what}: retrying");
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                other => return other,
            }
        }
    }

    async fn get_entry(&self, id: i64) -> Result<Entry, PortError> {
        self.drive
            .meta()
            .entry(self.owner(), id)
            .await
            .map_err(meta_err)?
            .ok_or(PortError::NotFound)
    }

    async fn put_once(&self, put: &PutFile<'_>) -> Result<Entry, PortError> {
        let (target, mode) = match put.target {
            PutTarget::Create { parent, name, attrs } => (
                UploadTarget {
                    parent,
                    name: name.to_owned(),
                    conflict: Conflict::Fail,
                    mtime: Some(put.mtime_ms),
                },
                Some(i64::from(attrs.mode & 0o7777)),
            ),
            PutTarget::Replace { id } => {
                let e = self.get_entry(id).await?;
                if e.is_dir() {
                    return Err(PortError::IsADirectory);
                }
                (
                    UploadTarget {
                        parent: e.parent.unwrap_or(id),
                        name: e.name,
                        conflict: Conflict::Entry(id),
                        mtime: Some(put.mtime_ms),
                    },
                    None,
                )
            }
        };
        let path = put.source.to_path_buf();
        let (sha1, size) = tokio::task::spawn_blocking(move || crate::blob::hash_file(&path))
            .await
            .map_err(|e| PortError::Other(e.to_string().into()))?
            .map_err(|e| PortError::Other(Box::new(e)))?;
        if sha1 != put.sha1 || size != put.size {
            return Err(PortError::Other(
                format!(
                    "spool file changed during the upload (expected {} bytes sha1 {})",
                    put.size, put.sha1
                )
                .into(),
            ));
        }
        let known = self.drive.meta().content(&sha1).await.map_err(meta_err)?;
        // Stored content of that SHA-1: link to it if the second hashes agree.
        let same = if known.is_some() {
            let ours = NewContent {
                sha1: sha1.clone(),
                sha256: None,
                size: size as i64,
                inline: None,
            };
            match self.drive.second_hash(&ours, Body::File(put.source)).await {
                Ok(_) => true,
                Err(DriveError::Meta(MetaError::Collision)) => false,
                Err(e) => return Err(port_err(e)),
            }
        } else {
            false
        };
        let linked = match known {
            Some(c) if same => {
                match self.drive.link(&self.user, target.clone(), &c).await {
                    Ok(e) => Some(e),
                    // The bytes went away (collected meanwhile): send them.
                    Err(DriveError::Meta(MetaError::Io(_))) => None,
                    Err(e) => return Err(port_err(e)),
                }
            }
            _ => None,
        };
        let mut e = match linked {
            Some(e) => e,
            None => {
                let file = tokio::fs::File::open(put.source)
                    .await
                    .map_err(|e| PortError::Other(Box::new(e)))?;
                let body = tokio_util::io::ReaderStream::with_capacity(file, 256 << 10);
                self.drive
                    .upload(&self.user, target, body.map(|r| r))
                    .await
                    .map_err(port_err)?
            }
        };
        if let Some(m) = mode.filter(|m| *m != e.mode) {
            e = self
                .drive
                .meta()
                .set_attrs(self.owner(), e.id, Some(m), None)
                .await
                .map_err(meta_err)?;
        }
        Ok(e)
    }
}

#[async_trait]
impl RemoteTree for DriveTree {
    fn root_id(&self) -> i64 {
        self.root
    }

    async fn lookup(&self, parent: i64, name: &str) -> Result<PortEntry, PortError> {
        self.retrying("lookup", || async {
            match self
                .drive
                .meta()
                .lookup(self.owner(), parent, name)
                .await
                .map_err(meta_err)?
            {
                Some(e) => Ok(entry(e)),
                None => {
                    // Say why: no such directory, not a directory, or no such name.
                    if !self.get_entry(parent).await?.is_dir() {
                        return Err(PortError::NotADirectory);
                    }
                    Err(PortError::NotFound)
                }
            }
        })
        .await
    }

    async fn get(&self, id: i64) -> Result<PortEntry, PortError> {
        self.retrying("getattr", || async { self.get_entry(id).await.map(entry) })
            .await
    }

    async fn list(&self, dir: i64, after: Option<&str>, limit: usize) -> Result<Vec<PortEntry>, PortError> {
        self.retrying("listing", || async {
            let d = self.get_entry(dir).await?;
            let page = self
                .drive
                .list(&self.user, &d, after.unwrap_or(""), limit.min(i64::MAX as usize) as i64)
                .await
                .map_err(port_err)?;
            Ok(page.into_iter().map(entry).collect())
        })
        .await
    }

    async fn mkdir(&self, parent: i64, name: &str, attrs: NewAttrs) -> Result<PortEntry, PortError> {
        crate::names::validate_name(name).map_err(|e| PortError::InvalidArgument(e.to_string()))?;
        let mode = i64::from(attrs.mode & 0o7777);
        self.retrying("mkdir", || async {
            self.drive
                .meta()
                .mkdir(self.owner(), parent, name, mode)
                .await
                .map(entry)
                .map_err(meta_err)
        })
        .await
    }

    async fn put_file(&self, put: PutFile<'_>) -> Result<PortEntry, PortError> {
        self.retrying("upload", || self.put_once(&put)).await.map(entry)
    }

    async fn create_file(
        &self,
        parent: i64,
        name: &str,
        attrs: NewAttrs,
        mtime_ms: i64,
    ) -> Result<PortEntry, PortError> {
        let mode = i64::from(attrs.mode & 0o7777);
        self.retrying("create", || async {
            self.drive
                .create_empty(&self.user, parent, name, mode, Some(mtime_ms))
                .await
                .map(entry)
                .map_err(port_err)
        })
        .await
    }

    async fn read(&self, _id: i64, sha1: &str, offset: u64, len: u64) -> Result<Bytes, PortError> {
        // The mount only asks for content this port showed it in this user's tree, so it
        // is read by SHA-1 even if the file was deleted or replaced meanwhile (a file
        // unlinked while open), for as long as the store keeps it.
        self.retrying("reading", || async {
            let c = self
                .drive
                .meta()
                .content(sha1)
                .await
                .map_err(meta_err)?
                .ok_or(PortError::NotFound)?;
            let size = c.size.max(0) as u64;
            let offset = offset.min(size);
            let len = len.min(size - offset);
            if len == 0 {
                return Ok(Bytes::new());
            }
            let mut stream = self.drive.read(&c, offset, len).await.map_err(port_err)?;
            let mut out = bytes::BytesMut::with_capacity(len as usize);
            while let Some(chunk) = stream.next().await {
                out.extend_from_slice(&chunk.map_err(|e| port_err(DriveError::Blob(e.into())))?);
            }
            Ok(out.freeze())
        })
        .await
    }

    async fn rename(&self, id: i64, new_parent: i64, new_name: &str, mode: RenameMode) -> Result<PortEntry, PortError> {
        let ow = match mode {
            RenameMode::NoReplace => Overwrite::No,
            RenameMode::Posix => Overwrite::Posix,
        };
        self.retrying("rename", || async {
            self.drive
                .rename(&self.user, id, new_parent, new_name, ow)
                .await
                .map(entry)
                .map_err(port_err)
        })
        .await
    }

    async fn delete(&self, id: i64, recursive: bool) -> Result<(), PortError> {
        self.retrying("delete", || async {
            self.drive
                .delete(&self.user, id, recursive)
                .await
                .map(|_| ())
                .map_err(port_err)
        })
        .await
    }

    async fn delete_child(&self, parent: i64, name: &str, dir: bool) -> Result<Option<PortEntry>, PortError> {
        let kind = if dir { EntryKind::Dir } else { EntryKind::File };
        self.retrying("delete", || async {
            self.drive
                .delete_child(&self.user, parent, name, Some(kind))
                .await
                .map(|(_, dir)| Some(entry(dir)))
                .map_err(port_err)
        })
        .await
    }

    async fn set_attrs(&self, id: i64, attrs: SetAttrs) -> Result<PortEntry, PortError> {
        unsupported_owner(attrs.uid, attrs.gid)?;
        let mode = attrs.mode.map(|m| i64::from(m & 0o7777));
        if mode.is_none() && attrs.mtime_ms.is_none() {
            // Only an atime, which the core does not store.
            return self.get(id).await;
        }
        self.retrying("setattr", || async {
            self.drive
                .meta()
                .set_attrs(self.owner(), id, mode, attrs.mtime_ms)
                .await
                .map(entry)
                .map_err(meta_err)
        })
        .await
    }

    async fn statfs(&self) -> Result<FsStats, PortError> {
        let (used, _) = self
            .retrying("statfs", || async {
                self.drive.meta().usage(self.owner()).await.map_err(meta_err)
            })
            .await?;
        let used = used.max(0) as u64;
        Ok(FsStats {
            total_bytes: used + UNLIMITED_BYTES,
            used_bytes: used,
        })
    }
}
