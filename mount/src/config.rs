//! Mount settings.

use std::path::PathBuf;
use std::time::Duration;

/// Settings of one mount. Build with [`MountConfig::new`] and adjust fields.
#[derive(Debug, Clone)]
pub struct MountConfig {
    /// Bytes of file content kept in the in-memory block cache (LRU over 128 KiB blocks
    /// keyed by content SHA-1, so it never serves stale data). 0 disables it.
    pub cache_bytes: u64,
    /// Directory of the disk cache of whole contents (see `docs/SEMANTICS.md`), or `None`
    /// for no disk cache. Only one mount may use it at a time (a lock file enforces that).
    pub disk_cache_dir: Option<PathBuf>,
    /// Most bytes the disk cache holds.
    pub disk_cache_bytes: u64,
    /// Free bytes the disk cache leaves on its file system: it evicts, or caches
    /// nothing, rather than go below.
    pub disk_cache_min_free: u64,
    /// Let the kernel read contents in the disk cache itself (FUSE passthrough, Linux 6.9
    /// and later, needs `CAP_SYS_ADMIN`): reads of such files then never reach the mount.
    /// Without it they are served by the mount from the disk cache.
    pub passthrough: bool,
    /// Directory for write-back spool files and the upload journal. It must survive a
    /// restart (not tmpfs) for killed mounts to resume their uploads, and only one mount
    /// may use it at a time (a lock file enforces that).
    pub spool_dir: PathBuf,
    /// Most bytes all spool files together may hold; a write past it fails with `ENOSPC`.
    pub max_spool_bytes: u64,
    /// Most `put_file` calls in flight at once, and most write-behind uploads running at
    /// once (each holds up to `stream_parallel` chunks in memory).
    pub max_concurrent_uploads: usize,
    /// How long the kernel may cache attributes.
    pub attr_ttl: Duration,
    /// How long the kernel may cache name lookups.
    pub entry_ttl: Duration,
    /// Let users other than the mounting one use the mount (`allow_other`).
    pub allow_other: bool,
    /// Let the kernel check permissions against mode/uid/gid (`default_permissions`).
    /// Without it every user who can reach the mount may do anything.
    pub default_permissions: bool,
    /// Largest read-ahead window; the window starts at one block and doubles on each
    /// sequential read.
    pub read_ahead_max: u64,
    /// The kernel's read-ahead for this mount (the bdi's `read_ahead_kb`), which is also the
    /// size of its read requests: the kernel starts FUSE mounts at 128 KiB, one request
    /// per 128 KiB read. Set when the mount starts if the process may (root); 0 leaves the
    /// kernel's value.
    pub kernel_read_ahead: u64,
    /// Entries asked for per `list` call while reading a directory.
    pub list_page_size: usize,
    /// Most directory entries kept in recent listings that answer lookups for `entry_ttl`
    /// (see `dircache`); 0 sends every lookup to the port.
    pub dir_cache_entries: usize,
    /// A spool written front to back starts sending its chunks while it is still being
    /// written (write-behind, if the port has it) once it holds this many bytes; smaller
    /// files are sent whole at close. `u64::MAX` turns write-behind off.
    pub stream_min: u64,
    /// Chunks of one write-behind upload in flight at once (each a buffer of the port's
    /// chunk size, 5 MiB on a filestore server).
    pub stream_parallel: usize,
    /// Threads serving FUSE requests (each blocks on one request at a time).
    pub threads: usize,
    /// Owner shown for entries whose port stores none (default: the mounting user).
    pub uid: u32,
    /// Group shown likewise.
    pub gid: u32,
    /// Name shown as the mount's source in /proc/mounts.
    pub fs_name: String,
}

impl MountConfig {
    /// Defaults: 256 MiB cache, no disk cache (10 GiB, leaving 1 GiB free, with passthrough
    /// when one is set), 10 GiB spool, 4 uploads, 1 s TTLs, 8 MiB read-ahead (1 MiB
    /// in the kernel),
    /// pages of 1000 entries, 100,000 cached directory entries, write-behind from 8 MiB with 2
    /// chunks in flight, 8 threads, owned by the calling user.
    pub fn new(spool_dir: impl Into<PathBuf>) -> Self {
        // SAFETY: geteuid/getegid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        MountConfig {
            cache_bytes: 256 << 20,
            disk_cache_dir: None,
            disk_cache_bytes: 10 << 30,
            disk_cache_min_free: 1 << 30,
            passthrough: true,
            spool_dir: spool_dir.into(),
            max_spool_bytes: 10 << 30,
            max_concurrent_uploads: 4,
            attr_ttl: Duration::from_secs(1),
            entry_ttl: Duration::from_secs(1),
            allow_other: false,
            default_permissions: false,
            read_ahead_max: 8 << 20,
            kernel_read_ahead: 1 << 20,
            list_page_size: 1000,
            dir_cache_entries: 100_000,
            stream_min: 8 << 20,
            stream_parallel: 2,
            threads: 8,
            uid,
            gid,
            fs_name: "filestore".to_owned(),
        }
    }
}
