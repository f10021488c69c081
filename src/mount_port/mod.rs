//! The FUSE mount's port, [`filestore_mount::RemoteTree`], implemented twice: over the
//! HTTP API for a mount on any machine ([`remote::HttpTree`], what
//! `filestore mount --server URL` uses) and directly over the [`crate::drive::Drive`] for
//! a mount on a server ([`local::DriveTree`], `filestore mount -c CONFIG --user NAME`).
//!
//! Both map their errors to [`PortError`] once, in one function each; the mount turns
//! that into an errno. Both retry failures that a retry may cure (the server or the
//! database restarting) for a bounded time, then answer [`PortError::Transient`] (EIO; a
//! pending upload stays in the mount's journal and is retried).

pub mod local;
pub mod remote;

use std::time::Duration;

use filestore_mount::{Entry as PortEntry, EntryKind as PortKind, PortError};

pub use local::DriveTree;
pub use remote::{HttpAuth, HttpTree, HttpTreeOptions};

/// Default for how long transient failures are retried before an operation fails with
/// EIO: long enough to ride out a server restart, short enough that a dead server does
/// not hang every process that touches the mount for minutes.
pub const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(30);

/// Free space reported by statfs: the core has no quota, so the mount shows this much
/// room above what is used.
pub const UNLIMITED_BYTES: u64 = 1 << 50;

/// A core entry as the port shows it: no owner (the mount shows its own), no atime.
#[allow(clippy::too_many_arguments)] // one argument per field of the port's entry
pub(crate) fn port_entry(
    id: i64,
    parent: Option<i64>,
    name: String,
    dir: bool,
    size: i64,
    sha1: Option<String>,
    mode: i64,
    mtime_ms: i64,
    ctime_ms: i64,
) -> PortEntry {
    PortEntry {
        id,
        // The root's parent is itself.
        parent: parent.unwrap_or(id),
        name,
        kind: if dir { PortKind::Dir } else { PortKind::File },
        size: size.max(0) as u64,
        sha1,
        mode: (mode as u32) & 0o7777,
        uid: None,
        gid: None,
        atime_ms: None,
        mtime_ms,
        ctime_ms,
    }
}

/// The error of an operation that is not part of the model (owners are not stored).
pub(crate) fn unsupported_owner(uid: Option<u32>, gid: Option<u32>) -> Result<(), PortError> {
    if uid.is_some() || gid.is_some() {
        return Err(PortError::Unsupported);
    }
    Ok(())
}
