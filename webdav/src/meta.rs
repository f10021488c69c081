//! [`Entry`] seen through dav-server's metadata and directory-entry traits.
//!
//! Everything here is computed from the entry row alone, so PROPFIND on a listing needs
//! no further port calls for live properties.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dav_server::fs::{DavDirEntry, DavMetaData, FsFuture, FsResult};
use futures_util::FutureExt;

use crate::port::{Entry, Millis};

/// Metadata of one entry.
#[derive(Debug, Clone)]
pub(crate) struct EntryMeta(pub Entry);

pub(crate) fn to_system_time(ms: Millis) -> SystemTime {
    // Times before 1970 are clamped: HTTP dates cannot show them anyway.
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// The ETag of an entry, without quotes. Files: the content SHA-1, so equal bytes give
/// equal ETags across renames and re-uploads. Directories have no content hash; id and
/// mtime change whenever the core touches them.
pub(crate) fn etag(e: &Entry) -> String {
    match &e.sha1 {
        Some(sha1) if !e.is_dir() => sha1.clone(),
        _ => format!("{:x}-{:x}-{:x}", e.id, e.size, e.mtime),
    }
}

impl DavMetaData for EntryMeta {
    fn len(&self) -> u64 {
        u64::try_from(self.0.size).unwrap_or(0)
    }

    fn modified(&self) -> FsResult<SystemTime> {
        Ok(to_system_time(self.0.mtime))
    }

    fn is_dir(&self) -> bool {
        self.0.is_dir()
    }

    /// See [`etag`] (dav-server adds the quotes).
    fn etag(&self) -> Option<String> {
        Some(etag(&self.0))
    }

    fn created(&self) -> FsResult<SystemTime> {
        Ok(to_system_time(self.0.created))
    }

    fn status_changed(&self) -> FsResult<SystemTime> {
        Ok(to_system_time(self.0.ctime))
    }

    fn executable(&self) -> FsResult<bool> {
        Ok(!self.0.is_dir() && self.0.mode & 0o111 != 0)
    }
}

/// One child in a listing.
pub(crate) struct EntryDirEntry(pub Entry);

impl DavDirEntry for EntryDirEntry {
    fn name(&self) -> Vec<u8> {
        self.0.name.as_bytes().to_vec()
    }

    fn metadata(&self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let meta: Box<dyn DavMetaData> = Box::new(EntryMeta(self.0.clone()));
        futures_util::future::ready(Ok(meta)).boxed()
    }

    fn is_dir(&self) -> FsFuture<'_, bool> {
        futures_util::future::ready(Ok(self.0.is_dir())).boxed()
    }

    fn is_file(&self) -> FsFuture<'_, bool> {
        futures_util::future::ready(Ok(!self.0.is_dir())).boxed()
    }
}
