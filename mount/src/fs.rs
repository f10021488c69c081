//! Filesystem logic of the mount, not tied to fuser: inode numbers, open handles, reads
//! through the block cache with read-ahead, and write-back through spool files.
//!
//! [`crate::fuse`] is a thin layer over this module (parse, call one method, map the
//! error, reply), so everything here is tested without FUSE in the loop.
//!
//! Write-back model: opening a file for writing gives its entry a spool file (a local
//! copy, `<spool>/<id>.data`) shared by every handle of that entry; writes and truncates
//! go to it, reads of that entry are served from it, and `flush` (every close), `fsync`
//! and `release` hash it and `put_file` it, returning only once the port has committed.
//! The first change journals the spool, so a killed mount uploads it when restarted.
//!
//! Write-behind: a spool written front to back (the running SHA-1 follows it) sends its
//! full chunks while it is still being written, once it reaches `stream_min` bytes, if the
//! port can ([`RemoteTree::begin_stream`]); the commit then sends only the tail and
//! completes. Nothing is visible on the server before that commit, which checks the
//! whole against size and SHA-1. A write or truncate below what was streamed abandons the
//! stream and the commit uploads the spool whole; so does a failed chunk. A killed mount
//! uploads its journaled spools whole, as before (their sessions expire on the server).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use lru::LruCache;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::cache::{nz, BlockCache, Claimed, IfBusy, ReadAhead, BLOCK_SIZE};
use crate::dirattrs::DirAttrs;
use crate::dircache::{Cached, DirCache, Fetch};
use crate::disk::{DiskCache, Fill};
use crate::journal::{now_ms, sha1_file, Journal, Pending, RunningSha1};
use crate::port::{
    Entry, EntryKind, NewAttrs, PortError, PutFile, PutTarget, RemoteTree, RenameMode, SetAttrs, StreamEnd,
    StreamSession, EMPTY_SHA1, NAME_MAX,
};
use crate::MountConfig;

/// FUSE inode number of the root.
pub const ROOT_INO: u64 = 1;

/// Errors of the filesystem layer. [`FsError::errno`] is the one mapping to errno:
///
/// | variant | errno |
/// |---|---|
/// | `Port(e)` | [`PortError::errno`] |
/// | `NameTooLong` | `ENAMETOOLONG` |
/// | `InvalidName`, `Invalid` | `EINVAL` |
/// | `NotPermitted` (symlinks, hard links, device nodes, FIFOs, sockets) | `EPERM` |
/// | `Unsupported` (fallocate modes other than allocate) | `EOPNOTSUPP` |
/// | `BadHandle` (unknown handle, write on a read-only handle) | `EBADF` |
/// | `SpoolFull` (`max_spool_bytes` reached) | `ENOSPC` |
/// | `Spool` (local spool I/O) | the I/O error's errno, else `EIO` |
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The port said no.
    #[error(transparent)]
    Port(#[from] PortError),
    /// A name longer than 255 bytes.
    #[error("name too long")]
    NameTooLong,
    /// A name the tree cannot hold (not UTF-8).
    #[error("invalid name")]
    InvalidName,
    /// A malformed request.
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    /// A node type filestore does not have.
    #[error("not supported by filestore: {0}")]
    NotPermitted(&'static str),
    /// An operation mode filestore does not have.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// No such open handle, or not open for writing.
    #[error("bad file handle")]
    BadHandle,
    /// The spool directory reached `max_spool_bytes`.
    #[error("spool full")]
    SpoolFull,
    /// Reading or writing a local spool file failed.
    #[error("spool I/O: {0}")]
    Spool(#[from] io::Error),
}

impl FsError {
    /// The errno this error becomes (table on the type).
    pub fn errno(&self) -> i32 {
        match self {
            FsError::Port(e) => e.errno(),
            FsError::NameTooLong => libc::ENAMETOOLONG,
            FsError::InvalidName | FsError::Invalid(_) => libc::EINVAL,
            FsError::NotPermitted(_) => libc::EPERM,
            FsError::Unsupported(_) => libc::EOPNOTSUPP,
            FsError::BadHandle => libc::EBADF,
            FsError::SpoolFull => libc::ENOSPC,
            FsError::Spool(e) => e.raw_os_error().unwrap_or(libc::EIO),
        }
    }

    /// Expected answers are logged at debug level, failures at warn.
    pub fn is_expected(&self) -> bool {
        match self {
            FsError::Port(e) => e.is_expected(),
            FsError::Spool(_) => false,
            _ => true,
        }
    }
}

type Result<T, E = FsError> = std::result::Result<T, E>;

/// Attributes of an inode, as handed to the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// Directory or file.
    pub kind: EntryKind,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits.
    pub perm: u16,
    /// Link count (2 for directories, 1 for files, 0 for an unlinked open file).
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Access time.
    pub atime: SystemTime,
    /// Modification time.
    pub mtime: SystemTime,
    /// Change time.
    pub ctime: SystemTime,
}

/// Who is asking (for the owner of new entries).
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    /// Caller's uid.
    pub uid: u32,
    /// Caller's gid.
    pub gid: u32,
}

/// A change requested through setattr.
#[derive(Debug, Clone, Copy, Default)]
pub struct AttrChange {
    /// New permission bits.
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size (truncate).
    pub size: Option<u64>,
    /// New access time in ms.
    pub atime_ms: Option<i64>,
    /// New modification time in ms.
    pub mtime_ms: Option<i64>,
}

/// One directory entry handed to readdir, with the offset of the next one.
#[derive(Debug, Clone)]
pub struct DirItem {
    /// Offset to resume after this item.
    pub next_offset: u64,
    /// Inode number.
    pub ino: u64,
    /// Directory or file.
    pub kind: EntryKind,
    /// Name.
    pub name: String,
    /// Its attributes, for readdirplus (for `..`, those of the directory itself: the
    /// kernel takes only the name and inode of `.` and `..`).
    pub attr: Attr,
}

/// Result of an open: the handle and whether the kernel may keep its page cache.
#[derive(Debug, Clone)]
pub struct Opened {
    /// File handle.
    pub fh: u64,
    /// The content is the one the kernel last cached (same SHA-1): `FOPEN_KEEP_CACHE`.
    pub keep_cache: bool,
    /// A read-only handle of a content in the disk cache: that file (which the kernel may
    /// read itself, see `passthrough`) and the content's SHA-1.
    pub cached: Option<(Arc<File>, String)>,
    /// Opened for writing only: its writes bypass the kernel's page cache
    /// (`FOPEN_DIRECT_IO`), since nothing can read or map the file through it. Copying
    /// each write into pages first, and keeping them, cost the writer as much as the
    /// spool write on a large file (docs/BENCHMARKS.md).
    pub direct: bool,
}

/// statfs(2) figures.
#[derive(Debug, Clone, Copy)]
pub struct StatFs {
    /// Block size used for the counts.
    pub bsize: u32,
    /// Total blocks.
    pub blocks: u64,
    /// Free blocks.
    pub bfree: u64,
}

/// The local copy of an entry open for writing.
struct Spool {
    file: File,
    size: u64,
    /// Bytes counted against `max_spool_bytes` (the largest size reached).
    accounted: u64,
    /// Holds changes the port has not committed.
    dirty: bool,
    /// The journal knows about it.
    journaled: bool,
    mtime_ms: i64,
    /// An explicit utimens while dirty: the commit records this time, not the write time.
    explicit_mtime: Option<i64>,
    /// The SHA-1 of the spool so far while it is written front to back.
    running: Option<RunningSha1>,
    /// Its write-behind upload, while the bytes it has sent are still the spool's.
    stream: Option<Stream>,
    /// The SHA-1 the port committed for these bytes, while they are unchanged since.
    committed: Option<String>,
    /// Written through a direct-I/O handle: the kernel's pages of the file may not hold
    /// what it wrote (it drops those of each range written, but a read racing the write
    /// can cache the old bytes again), so they are not kept across opens any more.
    bypassed: bool,
}

/// What a write-behind task is told: how many leading bytes of the spool are final (sent
/// as they fill chunks), then to finish (send what is ready and stop) or to give up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamCmd {
    Ready(u64),
    Finish(u64),
    Abort,
}

/// A write-behind upload of a spool (see the module docs).
struct Stream {
    cmd: tokio::sync::watch::Sender<StreamCmd>,
    /// The leading bytes announced as final.
    ready: u64,
    /// What the task did; an error if it failed (then it has abandoned its session
    /// itself).
    task: tokio::task::JoinHandle<Result<Streamed, PortError>>,
}

impl Stream {
    /// Abandons the upload (bytes it sent are no longer the spool's).
    fn abort(self) {
        let _ = self.cmd.send(StreamCmd::Abort);
    }
}

/// A write-behind upload that sent all it was asked to.
struct Streamed {
    session: StreamSession,
    /// Chunks `0..sent` went.
    sent: u64,
}

/// Chunk buffers of write-behind uploads, reused: a fresh multi-MiB allocation is a fresh
/// mapping (above the allocator's mmap threshold), and faulting in and zeroing its pages
/// cost as much CPU as reading the chunk into it.
#[derive(Clone, Default)]
struct BufPool(Arc<Mutex<Vec<Vec<u8>>>>);

/// A pooled buffer lent to a request body; back to the pool when the body is dropped.
struct PooledBuf(Vec<u8>, BufPool);

impl AsRef<[u8]> for PooledBuf {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        let mut pool = lock(&(self.1).0);
        // As many as are in flight, and one being read.
        if pool.len() < 4 {
            pool.push(std::mem::take(&mut self.0));
        }
    }
}

impl BufPool {
    fn take(&self, len: usize) -> Vec<u8> {
        let mut buf = lock(&self.0).pop().unwrap_or_default();
        buf.resize(len, 0);
        buf
    }
}

/// The write-behind task: begins a session, then reads each chunk of the spool once the
/// spool's final bytes cover it and sends it, `parallel` at a time, until told to finish
/// or abort. It hashes nothing: the server computes the file's SHA-1, and the port sends
/// each chunk with a checksum of its own (a SHA-1 here as well cost a third of the
/// mount's CPU on a large write, docs/BENCHMARKS.md).
async fn run_stream(
    port: Arc<dyn RemoteTree>,
    id: i64,
    file: File,
    parallel: usize,
    mut cmd: tokio::sync::watch::Receiver<StreamCmd>,
) -> Result<Streamed, PortError> {
    let session = match port.begin_stream(id).await {
        Ok(Some(s)) => s,
        Ok(None) => return Err(PortError::Unsupported),
        Err(e) => return Err(e),
    };
    let cs = session.chunk_size.max(1);
    let file = Arc::new(file);
    let pool = BufPool::default();
    let mut next = 0u64;
    let mut inflight = tokio::task::JoinSet::new();
    let result = loop {
        let state = *cmd.borrow_and_update();
        let (ready, finishing) = match state {
            StreamCmd::Ready(n) => (n, false),
            StreamCmd::Finish(n) => (n, true),
            StreamCmd::Abort => break Err(PortError::Other("write-behind abandoned".into())),
        };
        if next < ready / cs && inflight.len() < parallel.max(1) {
            // Read here, in order; sent concurrently.
            let (f, p, index) = (file.clone(), pool.clone(), next);
            let read = tokio::task::spawn_blocking(move || {
                let mut buf = p.take(cs as usize);
                f.read_exact_at(&mut buf, index * cs)?;
                Ok::<_, io::Error>(Bytes::from_owner(PooledBuf(buf, p)))
            })
            .await;
            let data = match read {
                Ok(Ok(data)) => data,
                Ok(Err(e)) => break Err(PortError::Other(Box::new(e))),
                Err(e) => break Err(PortError::Other(e.to_string().into())),
            };
            let (port, session) = (port.clone(), session.clone());
            inflight.spawn(async move { port.stream_chunk(&session, index, data).await });
            next += 1;
            continue;
        }
        if finishing && inflight.is_empty() && next >= ready / cs {
            break Ok(next);
        }
        tokio::select! {
            Some(r) = inflight.join_next(), if !inflight.is_empty() => {
                match r {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => break Err(e),
                    Err(e) => break Err(PortError::Other(e.to_string().into())),
                }
            }
            changed = cmd.changed() => {
                if changed.is_err() {
                    // The spool went away without a word (a panic): give up.
                    break Err(PortError::Other("write-behind abandoned".into()));
                }
            }
        }
    };
    match result {
        Ok(sent) => Ok(Streamed { session, sent }),
        Err(e) => {
            inflight.abort_all();
            port.abort_stream(&session).await;
            Err(e)
        }
    }
}

/// What getattr needs without waiting on an upload in progress.
struct Shadow {
    entry: Entry,
    spool_size: Option<u64>,
    dirty_mtime: Option<i64>,
}

struct FileState {
    spool: Option<Spool>,
    writers: usize,
}

/// An entry with at least one open handle.
struct OpenFile {
    id: i64,
    refs: AtomicUsize,
    state: tokio::sync::Mutex<FileState>,
    shadow: Mutex<Shadow>,
}

struct FileHandle {
    file: Arc<OpenFile>,
    writable: bool,
    append: bool,
    /// See [`Opened::direct`].
    direct: bool,
    ra: Mutex<ReadAhead>,
    /// The content, whole in the disk cache when this read-only handle was opened.
    disk: Option<Arc<File>>,
    /// The disk cache's copy of the content being made from this handle's reads.
    fill: Mutex<Option<Fill>>,
}

struct Listing {
    items: Vec<Entry>,
    complete: bool,
    /// Read from the start: handed to the directory cache once complete.
    fetch: Option<Fetch>,
}

struct DirHandle {
    /// The directory as opendir found it.
    dir: Entry,
    listing: tokio::sync::Mutex<Listing>,
}

#[derive(Clone)]
enum Handle {
    File(Arc<FileHandle>),
    Dir(Arc<DirHandle>),
}

/// The filesystem: one per mount.
pub struct Fs {
    port: Arc<dyn RemoteTree>,
    root: i64,
    cfg: MountConfig,
    cache: Arc<BlockCache>,
    /// Recent directory listings answering lookups (see `dircache`).
    dirs: DirCache,
    /// Recent attributes of directories answering getattr (see `dirattrs`).
    dir_attrs: DirAttrs,
    journal: Journal,
    uploads: Semaphore,
    /// Write-behind uploads running at once, each with up to `stream_parallel` chunk
    /// buffers: at most `max_concurrent_uploads`. A file that finds none free is sent at
    /// close, or starts streaming at a later write once one is.
    stream_slots: Arc<Semaphore>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    open: Mutex<HashMap<i64, Arc<OpenFile>>>,
    /// SHA-1 the kernel's page cache last held for an entry (for `FOPEN_KEEP_CACHE`).
    kept: Mutex<LruCache<i64, String>>,
    spool_used: AtomicU64,
    /// Write-behind is on (`stream_min` is not `u64::MAX`).
    streams: bool,
    /// The disk cache of whole contents, if configured.
    disk: Option<Arc<DiskCache>>,
    /// The shared runtime: work that outlives a request (write-behind, read-ahead) is
    /// spawned here, never on the runtime of the FUSE thread that started it, which
    /// runs only while that thread serves a request.
    rt: tokio::runtime::Handle,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere must not take the whole mount down with poisoned locks.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn ms_to_time(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// `len` bytes of a local file (a spool, a disk cache file) from `offset`.
fn read_at(file: &File, offset: u64, len: u64) -> io::Result<Bytes> {
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, offset)?;
    Ok(Bytes::from(buf))
}

/// Milliseconds since the epoch of a time given by the kernel.
pub fn time_to_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis().min(i64::MAX as u128) as i64,
        Err(e) => -(e.duration().as_millis().min(i64::MAX as u128) as i64),
    }
}

/// A name as the tree stores it. `for_create` decides what a non-UTF-8 name is: it cannot
/// exist (`ENOENT` on lookup), and cannot be created (`EINVAL`).
fn name_of(name: &OsStr, for_create: bool) -> Result<&str> {
    if name.len() > NAME_MAX {
        return Err(FsError::NameTooLong);
    }
    match name.to_str() {
        Some(s) => Ok(s),
        None if for_create => Err(FsError::InvalidName),
        None => Err(PortError::NotFound.into()),
    }
}

impl Fs {
    /// A filesystem over `port`, spooling into `cfg.spool_dir` (locked for this mount),
    /// spawning its background work on `rt`.
    pub fn new(port: Arc<dyn RemoteTree>, cfg: MountConfig, rt: tokio::runtime::Handle) -> io::Result<Fs> {
        let journal = Journal::open(&cfg.spool_dir)?;
        let disk = match &cfg.disk_cache_dir {
            Some(dir) => Some(Arc::new(DiskCache::open(
                dir,
                cfg.disk_cache_bytes,
                cfg.disk_cache_min_free,
            )?)),
            None => None,
        };
        Ok(Fs {
            disk,
            root: port.root_id(),
            port,
            cache: Arc::new(BlockCache::new(cfg.cache_bytes)),
            dirs: DirCache::new(cfg.entry_ttl, cfg.dir_cache_entries),
            dir_attrs: DirAttrs::new(cfg.attr_ttl),
            journal,
            uploads: Semaphore::new(cfg.max_concurrent_uploads.max(1)),
            stream_slots: Arc::new(Semaphore::new(cfg.max_concurrent_uploads.max(1))),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            open: Mutex::new(HashMap::new()),
            kept: Mutex::new(LruCache::new(nz(65536))),
            spool_used: AtomicU64::new(0),
            streams: cfg.stream_min != u64::MAX,
            cfg,
            rt,
        })
    }

    /// The port this filesystem is over.
    pub(crate) fn port(&self) -> &Arc<dyn RemoteTree> {
        &self.port
    }

    /// The settings of this mount.
    pub fn config(&self) -> &MountConfig {
        &self.cfg
    }

    /// A disk cache is configured (and opened).
    pub fn has_disk_cache(&self) -> bool {
        self.disk.is_some()
    }

    // ---- inode numbers ----

    /// Entry id to inode: the root becomes 1 and the entry with id 1 (if any) takes the
    /// root's id, so the mapping is a bijection on positive ids.
    pub fn ino_of(&self, id: i64) -> u64 {
        if id == self.root {
            ROOT_INO
        } else if id == ROOT_INO as i64 {
            self.root as u64
        } else {
            id as u64
        }
    }

    fn id_of(&self, ino: u64) -> Result<i64> {
        let id = if ino == ROOT_INO {
            self.root
        } else if ino == self.root as u64 {
            ROOT_INO as i64
        } else {
            ino as i64
        };
        if id <= 0 {
            return Err(PortError::NotFound.into());
        }
        Ok(id)
    }

    fn attr(&self, e: &Entry) -> Attr {
        let mtime = ms_to_time(e.mtime_ms);
        Attr {
            ino: self.ino_of(e.id),
            kind: e.kind,
            size: e.size,
            perm: (e.mode & 0o7777) as u16,
            nlink: if e.kind == EntryKind::Dir { 2 } else { 1 },
            uid: e.uid.unwrap_or(self.cfg.uid),
            gid: e.gid.unwrap_or(self.cfg.gid),
            atime: e.atime_ms.map(ms_to_time).unwrap_or(mtime),
            mtime,
            ctime: ms_to_time(e.ctime_ms),
        }
    }

    /// Attributes of `e`, just read from the port, with the size and mtime of a local spool
    /// if it has one; an open file takes `e` as its current entry.
    fn overlay(&self, e: Entry) -> Attr {
        self.shown(e, true)
    }

    /// Attributes of `e` from a listing read earlier: like `overlay`, but an open file
    /// keeps its own entry, which may be newer (read at its open).
    fn listed(&self, e: &Entry) -> Attr {
        self.shown(e.clone(), false)
    }

    fn shown(&self, e: Entry, fresh: bool) -> Attr {
        let open = lock(&self.open).get(&e.id).cloned();
        let Some(of) = open else { return self.attr(&e) };
        let mut sh = lock(&of.shadow);
        let mut a = self.attr(if fresh { &e } else { &sh.entry });
        if let Some(size) = sh.spool_size {
            a.size = size;
        }
        if let Some(m) = sh.dirty_mtime {
            a.mtime = ms_to_time(m);
            a.ctime = a.ctime.max(a.mtime);
        }
        if fresh {
            sh.entry = e;
        }
        a
    }

    // ---- metadata ----

    /// lookup(2): the entry `name` in directory `parent`.
    #[cfg(test)]
    pub async fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr> {
        Ok(self.lookup_for(parent, name).await?.0)
    }

    /// lookup(2), and how long the kernel may cache the answer: `entry_ttl`, or what is
    /// left of it when the answer comes from a listing fetched earlier.
    pub async fn lookup_for(&self, parent: u64, name: &OsStr) -> Result<(Attr, Duration)> {
        let name = name_of(name, false)?;
        let dir = self.id_of(parent)?;
        let e = match self.dirs.lookup(dir, name) {
            Cached::Found(e, left) => return Ok((self.listed(&e), left)),
            // Not trusted: a name created elsewhere must show at once (close-to-open), as it
            // does through the kernel, which caches no negative entries from this mount.
            Cached::Absent => self.port.lookup(dir, name).await?,
            Cached::Unknown => {
                let e = self.port.lookup(dir, name).await?;
                // Only names found count towards a listing: that is what one would have
                // saved (the negative lookups of a burst of creates would not).
                if let Some(f) = self.dirs.missed(dir) {
                    self.fetch_listing(f).await;
                }
                e
            }
        };
        Ok((self.overlay(e), self.cfg.entry_ttl))
    }

    /// Lists the directory of `f` whole (up to the cache's largest listing) for the
    /// directory cache. A failure only means the lookups keep going to the port.
    async fn fetch_listing(&self, f: Fetch) {
        let limit = self.cfg.list_page_size.max(1);
        let most = self.dirs.max_listing();
        let mut all: Vec<Entry> = Vec::new();
        loop {
            let after = all.last().map(|e| e.name.clone());
            match self.port.list(f.dir(), after.as_deref(), limit).await {
                Ok(page) => {
                    let done = page.len() < limit;
                    all.extend(page);
                    if done {
                        break;
                    }
                    if all.len() > most {
                        return f.too_large(all.len());
                    }
                }
                Err(e) => {
                    debug!(dir = f.dir(), error = %e, "listing for the directory cache failed");
                    return;
                }
            }
        }
        self.dirs.finish_fetch(f, all);
    }

    /// getattr: fresh attributes (the kernel caches them for `attr_ttl`).
    pub async fn getattr(&self, ino: u64) -> Result<Attr> {
        Ok(self.getattr_for(ino).await?.0)
    }

    /// getattr, and how long the kernel may cache the answer: `attr_ttl`, or what is left
    /// of it when a directory's attributes come from an answer read earlier.
    pub async fn getattr_for(&self, ino: u64) -> Result<(Attr, Duration)> {
        let id = self.id_of(ino)?;
        if let Some((e, left)) = self.dir_attrs.get(id) {
            return Ok((self.attr(&e), left));
        }
        Ok((self.fresh_attr(id).await?, self.cfg.attr_ttl))
    }

    async fn fresh_attr(&self, id: i64) -> Result<Attr> {
        let asked = Instant::now();
        match self.port.get(id).await {
            Ok(e) => {
                self.dir_attrs.read(&e, asked);
                Ok(self.overlay(e))
            }
            Err(PortError::NotFound) => {
                // Unlinked while open: fstat still works, with no links.
                let open = lock(&self.open).get(&id).cloned();
                let of = open.ok_or(PortError::NotFound)?;
                let sh = lock(&of.shadow);
                let mut a = self.attr(&sh.entry);
                a.size = sh.spool_size.unwrap_or(a.size);
                a.nlink = 0;
                Ok(a)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// setattr: truncate first, then mode, owner and times (so `utimens` in the same call
    /// wins over the truncate's own mtime).
    pub async fn setattr(&self, ino: u64, ch: AttrChange) -> Result<Attr> {
        let id = self.id_of(ino)?;
        if let Some(size) = ch.size {
            self.truncate(id, size).await?;
        }
        let mut sa = SetAttrs {
            mode: ch.mode.map(|m| m & 0o7777),
            atime_ms: ch.atime_ms,
            mtime_ms: ch.mtime_ms,
            ..Default::default()
        };
        if ch.uid.is_some() || ch.gid.is_some() {
            let cur = self.port.get(id).await?;
            // A port that stores no owner shows everything as the mount's owner; chown to
            // that same owner (cp -p, rsync) is then a no-op rather than an error.
            let same = |want: Option<u32>, have: Option<u32>, shown: u32| match (want, have) {
                (Some(w), None) => w == shown,
                (None, _) => true,
                _ => false,
            };
            if !(same(ch.uid, cur.uid, self.cfg.uid) && same(ch.gid, cur.gid, self.cfg.gid)) {
                sa.uid = ch.uid;
                sa.gid = ch.gid;
            }
        }
        if sa != SetAttrs::default() {
            let asked = Instant::now();
            let e = self.port.set_attrs(id, sa).await?;
            self.dirs.put(&e);
            self.dir_attrs.read(&e, asked);
            if let Some(m) = ch.mtime_ms {
                self.note_explicit_mtime(id, m).await?;
            }
            return Ok(self.overlay(e));
        }
        self.getattr(ino).await
    }

    async fn note_explicit_mtime(&self, id: i64, mtime: i64) -> Result<()> {
        let open = lock(&self.open).get(&id).cloned();
        let Some(of) = open else { return Ok(()) };
        let mut st = of.state.lock().await;
        if let Some(sp) = st.spool.as_mut().filter(|s| s.dirty) {
            sp.explicit_mtime = Some(mtime);
            self.journal.mark_pending(&Pending {
                id,
                mtime_ms: Some(mtime),
            })?;
            sp.journaled = true;
            lock(&of.shadow).dirty_mtime = Some(mtime);
        }
        Ok(())
    }

    async fn truncate(&self, id: i64, size: u64) -> Result<()> {
        let e = self.port.get(id).await?;
        if e.kind == EntryKind::Dir {
            return Err(PortError::IsADirectory.into());
        }
        let of = self.acquire(e);
        let res = async {
            let mut st = of.state.lock().await;
            self.ensure_spool(&of, &mut st, Some(size)).await?;
            let sp = st.spool.as_mut().ok_or(FsError::BadHandle)?;
            self.resize(sp, size)?;
            if !sp.running.as_ref().is_some_and(|r| r.keeps(size)) {
                sp.running = (size == 0).then(RunningSha1::new);
            }
            if size == 0 {
                self.journal.empty(of.id, &sp.file)?;
            } else {
                sp.file.set_len(size)?;
            }
            self.follow_stream(of.id, sp);
            sp.size = size;
            self.mark_dirty(&of, sp)?;
            // With no writer open, nobody will close it: commit now (truncate(2)).
            if st.writers == 0 {
                self.commit(&of, &mut st).await?;
            }
            Ok(())
        }
        .await;
        self.put_back(&of).await;
        res
    }

    /// mkdir(2).
    pub async fn mkdir(&self, parent: u64, name: &OsStr, mode: u32, who: Caller) -> Result<Attr> {
        let name = name_of(name, true)?;
        let attrs = NewAttrs {
            mode: mode & 0o7777,
            uid: who.uid,
            gid: who.gid,
        };
        let asked = Instant::now();
        let e = self.port.mkdir(self.id_of(parent)?, name, attrs).await?;
        self.dirs.put(&e);
        self.dir_attrs.created(&e);
        self.dir_attrs.read(&e, asked);
        Ok(self.attr(&e))
    }

    /// mknod(2): regular files only.
    pub async fn mknod(&self, parent: u64, name: &OsStr, mode: u32, who: Caller) -> Result<Attr> {
        if mode & libc::S_IFMT != libc::S_IFREG && mode & libc::S_IFMT != 0 {
            return Err(FsError::NotPermitted("device nodes, FIFOs and sockets"));
        }
        let e = self.create_entry(parent, name, mode, who).await?;
        Ok(self.attr(&e))
    }

    async fn create_entry(&self, parent: u64, name: &OsStr, mode: u32, who: Caller) -> Result<Entry> {
        let name = name_of(name, true)?;
        let attrs = NewAttrs {
            mode: mode & 0o7777,
            uid: who.uid,
            gid: who.gid,
        };
        let e = self
            .port
            .create_file(self.id_of(parent)?, name, attrs, now_ms())
            .await?;
        self.dirs.put(&e);
        self.dir_attrs.created(&e);
        Ok(e)
    }

    /// create(2) with open: an empty file, opened with `flags`. Without `O_EXCL`, a file
    /// that another client created since the kernel's lookup found the name free is
    /// opened instead (as open(2) with `O_CREAT` does when the name exists).
    pub async fn create(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
        who: Caller,
    ) -> Result<(Attr, Opened)> {
        let e = match self.create_entry(parent, name, mode, who).await {
            Err(FsError::Port(PortError::AlreadyExists)) if flags & libc::O_EXCL == 0 => {
                let e = self.port.lookup(self.id_of(parent)?, name_of(name, true)?).await?;
                if e.kind == EntryKind::Dir {
                    return Err(PortError::IsADirectory.into());
                }
                self.dirs.put(&e);
                e
            }
            other => other?,
        };
        let attr = self.attr(&e);
        let opened = self.open_entry(e, flags).await?;
        Ok((attr, opened))
    }

    /// unlink(2). An open file keeps its spool until closed; its commit then finds the
    /// entry gone and drops the data, as POSIX does with an unlinked file.
    pub async fn unlink(&self, parent: u64, name: &OsStr) -> Result<()> {
        let (dir, name) = (self.id_of(parent)?, name_of(name, false)?);
        let asked = Instant::now();
        let left = self.port.delete_child(dir, name, false).await?;
        self.dirs.remove(dir, name);
        self.deleted_from(dir, left, asked);
        Ok(())
    }

    /// Notes `dir` as a deletion left it: as the port answered, or unknown.
    fn deleted_from(&self, dir: i64, left: Option<Entry>, asked: Instant) {
        match left {
            Some(e) if e.id == dir => self.dir_attrs.read(&e, asked),
            _ => self.dir_attrs.forget(dir),
        }
    }

    /// rmdir(2).
    pub async fn rmdir(&self, parent: u64, name: &OsStr) -> Result<()> {
        let (dir, name) = (self.id_of(parent)?, name_of(name, false)?);
        let gone = match self.dirs.lookup(dir, name) {
            Cached::Found(e, _) => Some(e.id),
            _ => None,
        };
        let asked = Instant::now();
        let left = self.port.delete_child(dir, name, true).await?;
        self.dirs.remove(dir, name);
        self.deleted_from(dir, left, asked);
        if let Some(id) = gone {
            self.dirs.forget(id);
            self.dir_attrs.forget(id);
        }
        Ok(())
    }

    /// rename(2) / renameat2(2) with `RENAME_NOREPLACE`; `RENAME_EXCHANGE` and
    /// `RENAME_WHITEOUT` are `EINVAL`.
    pub async fn rename(&self, parent: u64, name: &OsStr, new_parent: u64, new_name: &OsStr, flags: u32) -> Result<()> {
        let mode = match flags {
            0 => RenameMode::Posix,
            f if f == libc::RENAME_NOREPLACE => RenameMode::NoReplace,
            _ => return Err(FsError::Invalid("rename flags other than RENAME_NOREPLACE")),
        };
        let (dir, name) = (self.id_of(parent)?, name_of(name, false)?);
        // The port, not the directory cache: the id renamed must be the one that has the
        // name now.
        let e = self.port.lookup(dir, name).await?;
        let new_name = name_of(new_name, true)?;
        let moved = self.port.rename(e.id, self.id_of(new_parent)?, new_name, mode).await?;
        self.dirs.remove(dir, name);
        self.dirs.put(&moved);
        // Both directories' times changed, and a moved directory's ctime: asked afresh.
        self.dir_attrs.forget(dir);
        self.dir_attrs.forget(moved.parent);
        if moved.kind == EntryKind::Dir {
            self.dir_attrs.forget(moved.id);
        }
        Ok(())
    }

    /// statfs(2).
    pub async fn statfs(&self) -> Result<StatFs> {
        let s = self.port.statfs().await?;
        let bsize = 4096u64;
        Ok(StatFs {
            bsize: bsize as u32,
            blocks: s.total_bytes / bsize,
            bfree: s.total_bytes.saturating_sub(s.used_bytes) / bsize,
        })
    }

    // ---- directories ----

    /// opendir: a handle whose listing is fetched page by page as readdir advances.
    pub async fn opendir(&self, ino: u64) -> Result<u64> {
        let e = self.port.get(self.id_of(ino)?).await?;
        if e.kind != EntryKind::Dir {
            return Err(PortError::NotADirectory.into());
        }
        let h = DirHandle {
            dir: e,
            listing: tokio::sync::Mutex::new(Listing {
                items: Vec::new(),
                complete: false,
                fetch: None,
            }),
        };
        Ok(self.insert_handle(Handle::Dir(Arc::new(h))))
    }

    /// readdir from `offset` (0 = start, which also refreshes the listing): up to
    /// `max` items, `.` and `..` first. Offsets are positions in the handle's listing.
    pub async fn readdir(&self, fh: u64, offset: u64, max: usize) -> Result<Vec<DirItem>> {
        let Some(Handle::Dir(h)) = lock(&self.handles).get(&fh).cloned() else {
            return Err(FsError::BadHandle);
        };
        let mut listing = h.listing.lock().await;
        if offset == 0 {
            // Drops an unfinished fetch first, so that a new one can begin.
            listing.fetch = None;
            *listing = Listing {
                items: Vec::new(),
                complete: false,
                fetch: self.dirs.begin_fetch(h.dir.id),
            };
        }
        let want = (offset as usize).saturating_sub(2) + max;
        while !listing.complete && listing.items.len() < want {
            let after = listing.items.last().map(|e| e.name.clone());
            let limit = self.cfg.list_page_size.max(1);
            let page = match self.port.list(h.dir.id, after.as_deref(), limit).await {
                Ok(page) => page,
                Err(e) => {
                    listing.fetch = None;
                    return Err(e.into());
                }
            };
            listing.complete = page.len() < limit;
            listing.items.extend(page);
            if listing.items.len() > self.dirs.max_listing() {
                if let Some(f) = listing.fetch.take() {
                    f.too_large(listing.items.len());
                }
            }
            if listing.complete {
                if let Some(f) = listing.fetch.take() {
                    self.dirs.finish_fetch(f, listing.items.clone());
                }
            }
        }
        let mut out = Vec::new();
        let mut pos = offset as usize;
        while out.len() < max {
            let (name, id, attr) = match pos {
                0 => (".", h.dir.id, self.attr(&h.dir)),
                1 => (
                    "..",
                    h.dir.parent,
                    Attr {
                        ino: self.ino_of(h.dir.parent),
                        ..self.attr(&h.dir)
                    },
                ),
                _ => match listing.items.get(pos - 2) {
                    Some(e) => (e.name.as_str(), e.id, self.listed(e)),
                    None => break,
                },
            };
            pos += 1;
            out.push(DirItem {
                next_offset: pos as u64,
                ino: self.ino_of(id),
                kind: attr.kind,
                name: name.to_owned(),
                attr,
            });
        }
        Ok(out)
    }

    /// releasedir.
    pub fn releasedir(&self, fh: u64) {
        // A listing not read to its end gives the directory cache nothing (its fetch is
        // dropped with the handle).
        lock(&self.handles).remove(&fh);
    }

    // ---- files ----

    fn insert_handle(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, h);
        fh
    }

    fn file_handle(&self, fh: u64) -> Result<Arc<FileHandle>> {
        match lock(&self.handles).get(&fh) {
            Some(Handle::File(h)) => Ok(h.clone()),
            _ => Err(FsError::BadHandle),
        }
    }

    /// The shared state of entry `e`, created on first use; `put_back` releases it.
    fn acquire(&self, e: Entry) -> Arc<OpenFile> {
        let mut open = lock(&self.open);
        let of = open.entry(e.id).or_insert_with(|| {
            Arc::new(OpenFile {
                id: e.id,
                refs: AtomicUsize::new(0),
                state: tokio::sync::Mutex::new(FileState {
                    spool: None,
                    writers: 0,
                }),
                shadow: Mutex::new(Shadow {
                    entry: e.clone(),
                    spool_size: None,
                    dirty_mtime: None,
                }),
            })
        });
        of.refs.fetch_add(1, Ordering::AcqRel);
        of.clone()
    }

    /// Drops one reference; the last one removes the spool (a dirty one stays journaled,
    /// retried on the next open or mount).
    async fn put_back(&self, of: &Arc<OpenFile>) {
        let mut st = of.state.lock().await;
        let mut open = lock(&self.open);
        if of.refs.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        open.remove(&of.id);
        if let Some(mut sp) = st.spool.take() {
            if let Some(stream) = sp.stream.take() {
                stream.abort();
            }
            self.spool_used.fetch_sub(sp.accounted, Ordering::AcqRel);
            if !sp.dirty {
                let (size, committed) = (sp.size, sp.committed.take());
                drop(sp);
                // The bytes just committed are that content: the disk cache takes the file
                // as it is, and the next read of it needs neither the server nor a copy.
                let adopted = match (&self.disk, committed) {
                    (Some(disk), Some(sha1)) => disk.adopt(&sha1, size, &self.journal.data_path(of.id)),
                    _ => false,
                };
                if !adopted {
                    self.journal.remove_data(of.id);
                }
            } else {
                warn!(id = of.id, "closed with an upload still pending; kept in the journal");
            }
        }
    }

    /// open(2). Writable opens get the spool (a copy of the content, or empty with
    /// `O_TRUNC`).
    pub async fn open(&self, ino: u64, flags: i32) -> Result<Opened> {
        let e = self.port.get(self.id_of(ino)?).await?;
        if e.kind == EntryKind::Dir {
            return Err(PortError::IsADirectory.into());
        }
        self.open_entry(e, flags).await
    }

    async fn open_entry(&self, e: Entry, flags: i32) -> Result<Opened> {
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let sha1 = e.sha1.clone();
        let disk = match (&self.disk, &sha1, writable) {
            (Some(d), Some(s), false) => d.open_content(s, e.size).map(Arc::new),
            _ => None,
        };
        let (id, size) = (e.id, e.size);
        let of = self.acquire(e);
        let res = async {
            let mut st = of.state.lock().await;
            if writable {
                let trunc = flags & libc::O_TRUNC != 0;
                self.ensure_spool(&of, &mut st, trunc.then_some(0)).await?;
                if trunc {
                    // Even an already empty file gets new mtime/ctime from O_TRUNC (POSIX).
                    let sp = st.spool.as_mut().ok_or(FsError::BadHandle)?;
                    sp.running = Some(RunningSha1::new());
                    // A spool made for this open is empty already: no truncation (see
                    // `Journal::empty`).
                    if sp.size != 0 || sp.file.metadata()?.len() != 0 {
                        self.journal.empty(of.id, &sp.file)?;
                    }
                    self.follow_stream(of.id, sp);
                    sp.size = 0;
                    self.mark_dirty(&of, sp)?;
                }
                st.writers += 1;
            } else if st.spool.is_none() && self.journal.is_pending(of.id) {
                // Changes a failed commit left behind are the file's current content.
                self.ensure_spool(&of, &mut st, None).await?;
            }
            // The kernel's cached pages are still right if it cached this same content,
            // or if a spool whose writes all went through the page cache is in use.
            let keep_cache = st.spool.as_ref().map(|sp| !sp.bypassed).unwrap_or_else(|| {
                let mut kept = lock(&self.kept);
                let same = sha1.is_some() && kept.get(&of.id) == sha1.as_ref();
                if let Some(s) = &sha1 {
                    kept.put(of.id, s.clone());
                }
                same
            });
            // The first read of a file follows its open: its first block is fetched now,
            // while the kernel answers the open and sends the read, which then waits for
            // this fetch instead of starting its own (a round trip less per small file,
            // as in `cp -r`). Not when the kernel's pages will serve the reads.
            if let (false, false, Some(sha1)) = (keep_cache, st.spool.is_some(), &sha1) {
                if size > 0 && disk.is_none() {
                    self.prefetch(id, sha1, 0, 0);
                }
            }
            // A spool (pending changes) is the content, not what the disk cache has.
            Ok::<_, FsError>((keep_cache, disk.filter(|_| st.spool.is_none())))
        }
        .await;
        match res {
            Ok((keep_cache, disk)) => {
                let cached = disk.clone().zip(sha1);
                let direct = flags & libc::O_ACCMODE == libc::O_WRONLY;
                let h = FileHandle {
                    file: of,
                    writable,
                    append: flags & libc::O_APPEND != 0,
                    direct,
                    ra: Mutex::new(ReadAhead::new(self.cfg.read_ahead_max)),
                    disk,
                    fill: Mutex::new(None),
                };
                Ok(Opened {
                    fh: self.insert_handle(Handle::File(Arc::new(h))),
                    keep_cache,
                    cached,
                    direct,
                })
            }
            Err(err) => {
                self.put_back(&of).await;
                Err(err)
            }
        }
    }

    fn reserve(&self, sp: &mut Spool, size: u64) -> Result<()> {
        if size <= sp.accounted {
            return Ok(());
        }
        self.reserve_bytes(size - sp.accounted)?;
        sp.accounted = size;
        Ok(())
    }

    fn resize(&self, sp: &mut Spool, size: u64) -> Result<()> {
        self.reserve(sp, size)
    }

    fn reserve_bytes(&self, n: u64) -> Result<()> {
        let max = self.cfg.max_spool_bytes;
        self.spool_used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|t| *t <= max)
            })
            .map(|_| ())
            .map_err(|_| FsError::SpoolFull)
    }

    /// Gives `of` a spool: adopts a journaled one left by a failed commit or a killed
    /// run, else copies the current content (only the first `keep` bytes when the caller
    /// is about to truncate to `keep`).
    async fn ensure_spool(&self, of: &OpenFile, st: &mut FileState, keep: Option<u64>) -> Result<()> {
        if st.spool.is_some() {
            return Ok(());
        }
        let path = self.journal.data_path(of.id);
        if self.journal.is_pending(of.id) {
            if let Ok(file) = OpenOptions::new().read(true).write(true).open(&path) {
                let size = file.metadata()?.len();
                self.reserve_bytes(size)?;
                info!(id = of.id, size, "adopting a pending upload from the journal");
                st.spool = Some(Spool {
                    file,
                    size,
                    accounted: size,
                    dirty: true,
                    journaled: true,
                    mtime_ms: now_ms(),
                    explicit_mtime: None,
                    running: None,
                    stream: None,
                    committed: None,
                    bypassed: false,
                });
                let mut sh = lock(&of.shadow);
                sh.spool_size = Some(size);
                sh.dirty_mtime = Some(now_ms());
                return Ok(());
            }
        }
        let e = lock(&of.shadow).entry.clone();
        let copy = keep.map_or(e.size, |k| k.min(e.size));
        self.reserve_bytes(copy)?;
        let made = async {
            let file = self.journal.create_data(of.id)?;
            let sha1 = e.sha1.as_deref().unwrap_or(EMPTY_SHA1);
            let mut running = RunningSha1::new();
            let mut off = 0;
            while off < copy {
                let chunk = (copy - off).min(8 << 20);
                let data = self.port.read(e.id, sha1, off, chunk).await?;
                if data.is_empty() {
                    return Err(FsError::Port(PortError::Other(
                        "content shorter than its entry's size".into(),
                    )));
                }
                file.write_all_at(&data, off)?;
                running.write(off, &data);
                off += data.len() as u64;
            }
            Ok::<_, FsError>((file, running))
        }
        .await;
        match made {
            Ok((file, running)) => {
                st.spool = Some(Spool {
                    file,
                    size: copy,
                    accounted: copy,
                    dirty: false,
                    journaled: false,
                    mtime_ms: e.mtime_ms,
                    explicit_mtime: None,
                    running: Some(running),
                    stream: None,
                    committed: None,
                    bypassed: false,
                });
                lock(&of.shadow).spool_size = Some(copy);
                Ok(())
            }
            Err(err) => {
                self.spool_used.fetch_sub(copy, Ordering::AcqRel);
                let _ = std::fs::remove_file(&path);
                Err(err)
            }
        }
    }

    fn mark_dirty(&self, of: &OpenFile, sp: &mut Spool) -> Result<()> {
        if !sp.journaled {
            self.journal.mark_pending(&Pending {
                id: of.id,
                mtime_ms: None,
            })?;
            sp.journaled = true;
        }
        sp.dirty = true;
        sp.committed = None;
        sp.mtime_ms = now_ms();
        sp.explicit_mtime = None;
        let mut sh = lock(&of.shadow);
        sh.spool_size = Some(sp.size);
        sh.dirty_mtime = Some(sp.mtime_ms);
        Ok(())
    }

    /// Uploads a dirty spool and waits for the port to commit it.
    async fn commit(&self, of: &OpenFile, st: &mut FileState) -> Result<()> {
        let Some(sp) = st.spool.as_mut().filter(|s| s.dirty) else {
            return Ok(());
        };
        // A stream that is still in step sends what it has ready, then the commit sends
        // the rest; one that failed has abandoned its session, and the spool goes whole.
        let stream = match sp.stream.take() {
            Some(st) if sp.running.is_some() => {
                let _ = st.cmd.send(StreamCmd::Finish(st.ready));
                match st.task.await {
                    Ok(Ok(done)) if done.sent.saturating_mul(done.session.chunk_size) <= sp.size => Some(done),
                    Ok(Ok(done)) => {
                        warn!(id = of.id, "write-behind sent past the end; uploading the file whole");
                        self.port.abort_stream(&done.session).await;
                        None
                    }
                    Ok(Err(e)) => {
                        debug!(id = of.id, error = %e, "write-behind failed; uploading the file whole");
                        None
                    }
                    Err(e) => {
                        warn!(id = of.id, error = %e, "write-behind task failed");
                        None
                    }
                }
            }
            Some(st) => {
                st.abort();
                None
            }
            None => None,
        };
        let path = self.journal.data_path(of.id);
        let mtime_ms = sp.explicit_mtime.unwrap_or(sp.mtime_ms);
        let result = match &stream {
            // Not hashed here: the port answers the SHA-1 the server computed.
            Some(done) => {
                let end = StreamEnd {
                    id: of.id,
                    source: &path,
                    size: sp.size,
                    mtime_ms,
                };
                let _permit = self.uploads.acquire().await;
                self.port.finish_stream(&done.session, end, done.sent).await
            }
            None => {
                let sha1 = match sp
                    .running
                    .as_ref()
                    .map(|r| r.finish(&sp.file, sp.size))
                    .transpose()?
                    .flatten()
                {
                    Some(h) => h,
                    None => sha1_file(&mut sp.file)?,
                };
                let put = PutFile {
                    target: PutTarget::Replace { id: of.id },
                    source: &path,
                    size: sp.size,
                    sha1: &sha1,
                    mtime_ms,
                };
                let _permit = self.uploads.acquire().await;
                self.port.put_file(put).await
            }
        };
        if stream.is_some() {
            // Nothing hashed the file: a later commit of this spool hashes it whole.
            sp.running = None;
        }
        match result {
            Ok(e) => {
                debug!(id = of.id, size = sp.size, sha1 = e.sha1.as_deref(), "committed");
                self.dirs.put(&e);
                sp.committed = e.sha1.clone();
                match e.sha1.clone() {
                    // The kernel's pages may miss some of a direct write: the next open
                    // drops them.
                    _ if sp.bypassed => {
                        lock(&self.kept).pop(&of.id);
                    }
                    Some(sha1) => {
                        lock(&self.kept).put(of.id, sha1);
                    }
                    None => {}
                }
                let mut sh = lock(&of.shadow);
                sh.entry = e;
                sh.dirty_mtime = None;
            }
            Err(PortError::NotFound) => {
                debug!(id = of.id, "entry deleted before its upload; dropping the data");
            }
            Err(err) => return Err(err.into()),
        }
        sp.dirty = false;
        sp.journaled = false;
        self.journal.clear_pending(of.id)?;
        Ok(())
    }

    /// read(2): from the spool if the entry has one, else through the block cache.
    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Bytes> {
        let h = self.file_handle(fh)?;
        let (sha1, file_size) = {
            let st = h.file.state.lock().await;
            if let Some(sp) = &st.spool {
                return Ok(read_at(
                    &sp.file,
                    offset,
                    sp.size.saturating_sub(offset).min(size as u64),
                )?);
            }
            let e = &lock(&h.file.shadow).entry;
            (e.sha1.clone().unwrap_or_else(|| EMPTY_SHA1.to_owned()), e.size)
        };
        if offset >= file_size || size == 0 {
            return Ok(Bytes::new());
        }
        let end = (offset + size as u64).min(file_size);
        if let Some(file) = &h.disk {
            return Ok(read_at(file, offset, end - offset)?);
        }
        let want = lock(&h.ra).advance(offset, end);
        if offset == 0 {
            if let Some(disk) = &self.disk {
                let mut fill = lock(&h.fill);
                if fill.is_none() {
                    *fill = disk.start_fill(&sha1, file_size);
                }
            }
        }
        let data = self
            .read_content(h.file.id, &sha1, file_size, offset, end, want)
            .await?;
        let mut fill = lock(&h.fill);
        if fill.as_ref().is_some_and(|f| !f.offer(offset, data.clone())) {
            // Behind or failed: given up, not waited for.
            *fill = None;
        }
        Ok(data)
    }

    /// Bytes `[offset, end)` of content `sha1`, fetching missing blocks plus read-ahead up
    /// to `offset + want` in one ranged read (as far as the cache's read-ahead budget
    /// allows); if only the read-ahead part is missing, it is fetched in the background.
    /// A block another read is fetching is waited for, not fetched again.
    async fn read_content(
        &self,
        id: i64,
        sha1: &str,
        file_size: u64,
        offset: u64,
        end: u64,
        want: u64,
    ) -> Result<Bytes> {
        let first = offset / BLOCK_SIZE;
        let last_needed = (end - 1) / BLOCK_SIZE;
        let fetch_end = (offset + want).min(file_size).max(end);
        let last_fetch = (fetch_end - 1) / BLOCK_SIZE;
        let mut blocks: Vec<Option<Bytes>> = vec![None; (last_needed + 1 - first) as usize];
        let mut waited_for = None;
        loop {
            for (b, slot) in (first..).zip(blocks.iter_mut()) {
                if slot.is_none() {
                    *slot = self.cache.get(sha1, b);
                }
            }
            let Some(miss) = blocks.iter().position(Option::is_none) else {
                break;
            };
            let start = first + miss as u64;
            // Wait once per block: a failed fetch or a block evicted before we got it
            // (a cache smaller than the reads) then has this read fetch it itself.
            let if_busy = if waited_for == Some(start) {
                IfBusy::Fetch
            } else {
                IfBusy::Wait
            };
            let claim = match self
                .cache
                .claim(sha1, start, last_fetch, last_needed + 1 - start, if_busy)
            {
                Claimed::Fetch(claim) => claim,
                Claimed::Wait(mut done) => {
                    waited_for = Some(start);
                    let _ = done.changed().await;
                    continue;
                }
                // Cached meanwhile.
                Claimed::Nothing => continue,
            };
            let (at, len) = claim.range();
            let data = self.port.read(id, sha1, at, len).await?;
            for (b, chunk) in (start..).zip(claim.fill(&data)) {
                if b <= last_needed {
                    blocks[(b - first) as usize] = Some(chunk);
                }
            }
            if blocks[miss].is_none() {
                return Err(PortError::Other("content shorter than its entry's size".into()).into());
            }
        }
        if last_fetch > last_needed {
            self.prefetch(id, sha1, last_needed + 1, last_fetch);
        }
        let mut out = BytesMut::with_capacity((end - offset) as usize);
        for (b, block) in (first..).zip(blocks) {
            let block = block.unwrap_or_default();
            let base = b * BLOCK_SIZE;
            let from = offset.saturating_sub(base) as usize;
            let to = ((end - base) as usize).min(block.len());
            if from < to {
                out.extend_from_slice(&block[from..to]);
            }
        }
        Ok(out.freeze())
    }

    /// Blocks being fetched (read-ahead or reads) right now.
    #[cfg(test)]
    pub(crate) fn prefetches_in_flight(&self) -> usize {
        self.cache.blocks_in_flight()
    }

    /// Background read-ahead of blocks `[from, to]` not already cached or in flight.
    fn prefetch(&self, id: i64, sha1: &str, from: u64, to: u64) {
        let Some(start) = (from..=to).find(|b| self.cache.get(sha1, *b).is_none()) else {
            return;
        };
        let Claimed::Fetch(claim) = self.cache.claim(sha1, start, to, 0, IfBusy::Skip) else {
            return;
        };
        let port = self.port.clone();
        let sha1 = sha1.to_owned();
        self.rt.spawn(async move {
            let (at, len) = claim.range();
            match port.read(id, &sha1, at, len).await {
                Ok(data) => {
                    claim.fill(&data);
                }
                Err(e) => debug!(id, error = %e, "read-ahead failed"),
            }
        });
    }

    /// write(2) into the spool. `O_APPEND` handles write at the end of the spool.
    pub async fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32> {
        let h = self.file_handle(fh)?;
        if !h.writable {
            return Err(FsError::BadHandle);
        }
        let of = &h.file;
        let mut st = of.state.lock().await;
        self.ensure_spool(of, &mut st, None).await?;
        let sp = st.spool.as_mut().ok_or(FsError::BadHandle)?;
        let offset = if h.append { sp.size } else { offset };
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or(FsError::Invalid("offset overflow"))?;
        self.reserve(sp, end)?;
        if sp.running.as_mut().is_some_and(|r| !r.write(offset, data)) {
            sp.running = None;
        }
        sp.bypassed |= h.direct;
        sp.file.write_all_at(data, offset)?;
        // Announced once written. A stream whose bytes this changed may have read some of
        // them: it is abandoned here, under the state lock, so no commit can complete it.
        self.follow_stream(of.id, sp);
        sp.size = sp.size.max(end);
        self.mark_dirty(of, sp)?;
        Ok(data.len() as u32)
    }

    /// Before an unprivileged write through a direct-I/O handle (`FUSE_WRITE_KILL_SUIDGID`):
    /// clears set-user-ID, and set-group-ID where group execute is set, as such a write
    /// does on a local file system; if that fails, so does the write, and nothing is
    /// written. (For writes through the page cache the kernel sends a setattr itself.)
    /// The mode changed is the port's current one, not the handle's: a chmod made since
    /// the open (here or elsewhere) is kept. One made between that read and this change
    /// is lost, as with two chmods at once.
    pub async fn kill_suid(&self, fh: u64) -> Result<()> {
        let h = self.file_handle(fh)?;
        let set_id = |mode: u32| libc::S_ISUID | if mode & libc::S_IXGRP != 0 { libc::S_ISGID } else { 0 };
        // Most files have neither bit: no request then.
        let shown = lock(&h.file.shadow).entry.mode;
        if shown & set_id(shown) == 0 {
            return Ok(());
        }
        let mode = self.port.get(h.file.id).await?.mode;
        let kill = set_id(mode);
        if mode & kill == 0 {
            return Ok(());
        }
        let sa = SetAttrs {
            mode: Some(mode & 0o7777 & !kill),
            ..Default::default()
        };
        let asked = Instant::now();
        let e = self.port.set_attrs(h.file.id, sa).await?;
        self.dirs.put(&e);
        self.dir_attrs.read(&e, asked);
        lock(&h.file.shadow).entry.mode = e.mode;
        Ok(())
    }

    /// Keeps the write-behind upload of `sp` in step with its running hash: starts one once
    /// the bytes written front to back reach `stream_min`, announces newly final bytes,
    /// and abandons it when bytes it may have sent are no longer final.
    fn follow_stream(&self, id: i64, sp: &mut Spool) {
        let upto = sp.running.as_ref().map_or(0, RunningSha1::upto);
        if let Some(ready) = sp.stream.as_ref().map(|st| st.ready) {
            if upto < ready {
                if let Some(st) = sp.stream.take() {
                    debug!(id, "write-behind abandoned: bytes it sent changed");
                    st.abort();
                }
            } else if let Some(st) = sp.stream.as_mut().filter(|_| upto > ready) {
                st.ready = upto;
                let _ = st.cmd.send(StreamCmd::Ready(upto));
            }
            return;
        }
        if upto < self.cfg.stream_min || !self.streams || !sp.running.as_ref().is_some_and(RunningSha1::is_hashing) {
            return;
        }
        let Ok(slot) = self.stream_slots.clone().try_acquire_owned() else {
            return;
        };
        // The task reads the spool through its own descriptor, never under the state lock.
        let Ok(file) = sp.file.try_clone() else { return };
        // The stream's file is not hashed here (see `run_stream`): writes only move `upto`.
        if let Some(r) = sp.running.as_mut() {
            r.stop_hashing();
        }
        let (cmd, rx) = tokio::sync::watch::channel(StreamCmd::Ready(upto));
        let stream = run_stream(self.port.clone(), id, file, self.cfg.stream_parallel, rx);
        let task = self.rt.spawn(async move {
            let _slot = slot;
            stream.await
        });
        sp.stream = Some(Stream { cmd, ready: upto, task });
    }

    /// fallocate(2): plain allocation extends the spool; `FALLOC_FL_KEEP_SIZE` has
    /// nothing to reserve remotely; other modes (punch hole, collapse...) are
    /// `EOPNOTSUPP`.
    pub async fn fallocate(&self, fh: u64, offset: u64, len: u64, mode: i32) -> Result<()> {
        let h = self.file_handle(fh)?;
        if !h.writable {
            return Err(FsError::BadHandle);
        }
        match mode {
            0 => {}
            libc::FALLOC_FL_KEEP_SIZE => return Ok(()),
            _ => return Err(FsError::Unsupported("fallocate mode")),
        }
        let of = &h.file;
        let mut st = of.state.lock().await;
        self.ensure_spool(of, &mut st, None).await?;
        let sp = st.spool.as_mut().ok_or(FsError::BadHandle)?;
        let end = offset.checked_add(len).ok_or(FsError::Invalid("offset overflow"))?;
        if end > sp.size {
            self.reserve(sp, end)?;
            sp.file.set_len(end)?;
            sp.size = end;
            self.mark_dirty(of, sp)?;
        }
        Ok(())
    }

    /// flush (every close(2)) and fsync(2): commit the entry's changes, if any.
    pub async fn flush(&self, fh: u64) -> Result<()> {
        let h = self.file_handle(fh)?;
        let mut st = h.file.state.lock().await;
        self.commit(&h.file, &mut st).await
    }

    /// release (last close of a handle): commit what is left (writes through a shared
    /// mapping can arrive after the last flush) and drop the handle.
    pub async fn release(&self, fh: u64) -> Result<()> {
        let h = match lock(&self.handles).remove(&fh) {
            Some(Handle::File(h)) => h,
            _ => return Err(FsError::BadHandle),
        };
        let res = {
            let mut st = h.file.state.lock().await;
            if h.writable {
                st.writers -= 1;
            }
            self.commit(&h.file, &mut st).await
        };
        if let Err(e) = &res {
            warn!(id = h.file.id, error = %e, "upload failed at close; kept in the journal");
        }
        self.put_back(&h.file).await;
        res
    }

    /// Uploads what a previous run left in the journal. Entries deleted meanwhile go to
    /// `lost/`; failures stay journaled (adopted by the next open of that file).
    pub async fn recover(&self) -> io::Result<usize> {
        let mut done = 0;
        for p in self.journal.recover()? {
            let path = self.journal.data_path(p.id);
            let mut file = File::open(&path)?;
            let meta = file.metadata()?;
            let mtime_ms = p
                .mtime_ms
                .unwrap_or_else(|| meta.modified().map(time_to_ms).unwrap_or_else(|_| now_ms()));
            let sha1 = sha1_file(&mut file)?;
            let put = PutFile {
                target: PutTarget::Replace { id: p.id },
                source: &path,
                size: meta.len(),
                sha1: &sha1,
                mtime_ms,
            };
            match self.port.put_file(put).await {
                Ok(_) => {
                    info!(id = p.id, size = meta.len(), "resumed a pending upload");
                    self.journal.clear_pending(p.id)?;
                    self.journal.remove_data(p.id);
                    done += 1;
                }
                Err(PortError::NotFound) => {
                    let kept = self.journal.move_to_lost(p.id)?;
                    warn!(id = p.id, path = %kept.display(), "pending upload's file was deleted; data kept aside");
                }
                Err(e) => warn!(id = p.id, error = %e, "pending upload still failing; left in the journal"),
            }
        }
        Ok(done)
    }
}
