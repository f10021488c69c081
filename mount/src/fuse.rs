//! Links fuser's callbacks to [`crate::fs::Fs`]. Each callback parses its arguments,
//! runs one `Fs` method on the tokio runtime, maps the error once
//! ([`crate::fs::FsError::errno`]) and replies; nothing else lives here, so the logic is
//! tested without FUSE in the loop.

use std::ffi::OsStr;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
    WriteFlags,
};
use tokio::runtime::{Handle, Runtime};
use tracing::{debug, instrument, warn};

use crate::fs::{time_to_ms, Attr, AttrChange, Caller, Fs, FsError};
use crate::iomode::{Choice, IoModes};
use crate::port::EntryKind;

/// The fuser `Filesystem` of a mount.
pub(crate) struct FuseFs {
    fs: Arc<Fs>,
    rt: Handle,
    /// Each FUSE thread runs its calls on a runtime of its own (the port allows it:
    /// [`crate::port::RemoteTree::thread_runtime`]).
    thread_runtime: bool,
    ttl: Duration,
    entry_ttl: Duration,
    /// The kernel took passthrough at init, and registering backing files works so far.
    passthrough: std::sync::atomic::AtomicBool,
    modes: Mutex<IoModes<BackingId>>,
}

impl FuseFs {
    pub(crate) fn new(fs: Arc<Fs>, rt: Handle) -> Self {
        let (ttl, entry_ttl) = (fs.config().attr_ttl, fs.config().entry_ttl);
        FuseFs {
            thread_runtime: fs.port().thread_runtime(),
            fs,
            rt,
            ttl,
            entry_ttl,
            passthrough: false.into(),
            modes: Mutex::new(IoModes::default()),
        }
    }

    fn modes(&self) -> std::sync::MutexGuard<'_, IoModes<BackingId>> {
        self.modes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run<T>(&self, fut: impl Future<Output = Result<T, FsError>>) -> Result<T, Errno> {
        let r = if self.thread_runtime {
            THREAD_RT.with(|own| match own {
                Some(own) => own.block_on(fut),
                None => self.rt.block_on(fut),
            })
        } else {
            self.rt.block_on(fut)
        };
        r.map_err(errno)
    }
}

thread_local! {
    /// The current-thread runtime of a FUSE thread, started at its first request. None if
    /// it could not be started: that thread's calls then run on the shared runtime.
    static THREAD_RT: Option<Runtime> = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => Some(rt),
        Err(e) => {
            warn!(error = %e, "could not start a runtime for a FUSE thread; it uses the shared one");
            None
        }
    };
}

/// Logs an error at the level its kind deserves and turns it into the reply's errno.
fn errno(e: FsError) -> Errno {
    if e.is_expected() {
        debug!(error = %e, "failed");
    } else {
        warn!(error = %e, "failed");
    }
    Errno::from_i32(e.errno())
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: a.ctime,
        kind: match a.kind {
            EntryKind::Dir => FileType::Directory,
            EntryKind::File => FileType::RegularFile,
        },
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn ms(t: TimeOrNow) -> i64 {
    match t {
        TimeOrNow::SpecificTime(t) => time_to_ms(t),
        TimeOrNow::Now => time_to_ms(SystemTime::now()),
    }
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
    }
}

fn fopen(keep_cache: bool, direct: bool) -> FopenFlags {
    let mut f = FopenFlags::empty();
    if keep_cache {
        f |= FopenFlags::FOPEN_KEEP_CACHE;
    }
    if direct {
        f |= FopenFlags::FOPEN_DIRECT_IO;
    }
    f
}

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // O_TRUNC arrives with open(), so a truncating open needs no separate commit of
        // an empty file before the real content is written.
        if let Err(missing) = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC) {
            debug!(?missing, "kernel lacks atomic O_TRUNC");
        }
        // Listings come with attributes (readdirplus), so `ls -l` or a walk does not look
        // up every name again; "auto" lets the kernel use plain readdir where it sees no
        // use for them.
        let plus = InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO;
        if let Err(missing) = config.add_capabilities(plus) {
            debug!(?missing, "kernel lacks readdirplus");
        }
        // Files of the disk cache are read by the kernel itself. Stack depth 1: the
        // backing files must be on a plain file system (not overlayfs), and this mount
        // can still be the lower layer of one.
        if self.fs.config().passthrough && self.fs.has_disk_cache() {
            let ok =
                config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok() && config.set_max_stack_depth(1).is_ok();
            debug!(ok, "passthrough to the disk cache");
            self.passthrough.store(ok, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, parent = parent.0, ?name))]
    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.run(self.fs.lookup_for(parent.0, name)) {
            Ok((a, ttl)) => reply.entry(&ttl, &file_attr(&a), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, ino = ino.0))]
    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.run(self.fs.getattr_for(ino.0)) {
            Ok((a, ttl)) => reply.attr(&ttl, &file_attr(&a)),
            Err(e) => reply.error(e),
        }
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, ino = ino.0, ?mode, ?uid, ?gid, ?size))]
    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let change = AttrChange {
            mode,
            uid,
            gid,
            size,
            atime_ms: atime.map(ms),
            mtime_ms: mtime.map(ms),
        };
        match self.run(self.fs.setattr(ino.0, change)) {
            Ok(a) => reply.attr(&self.ttl, &file_attr(&a)),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, _ino: INodeNo, reply: ReplyData) {
        // No entry is ever a symlink, and readlink(2) on anything else is EINVAL.
        reply.error(Errno::EINVAL);
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, parent = parent.0, ?name, mode))]
    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        match self.run(self.fs.mknod(parent.0, name, mode, caller(req))) {
            Ok(a) => reply.entry(&self.entry_ttl, &file_attr(&a), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, parent = parent.0, ?name, mode))]
    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, _umask: u32, reply: ReplyEntry) {
        match self.run(self.fs.mkdir(parent.0, name, mode, caller(req))) {
            Ok(a) => reply.entry(&self.entry_ttl, &file_attr(&a), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, parent = parent.0, ?name))]
    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.run(self.fs.unlink(parent.0, name)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, parent = parent.0, ?name))]
    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.run(self.fs.rmdir(parent.0, name)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, _target: &Path, reply: ReplyEntry) {
        // symlink(2): EPERM "the filesystem does not support the creation of symbolic links".
        reply.error(Errno::EPERM);
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, parent = parent.0, ?name, newparent = newparent.0, ?newname, flags = flags.bits()))]
    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self.run(self.fs.rename(parent.0, name, newparent.0, newname, flags.bits())) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(&self, _req: &Request, _ino: INodeNo, _newparent: INodeNo, _newname: &OsStr, reply: ReplyEntry) {
        // link(2): EPERM "the filesystem does not support the creation of hard links".
        reply.error(Errno::EPERM);
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, ino = ino.0, flags = flags.0))]
    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let o = match self.run(self.fs.open(ino.0, flags.0)) {
            Ok(o) => o,
            Err(e) => return reply.error(e),
        };
        let writable = flags.0 & libc::O_ACCMODE != libc::O_RDONLY;
        let through = self.passthrough.load(std::sync::atomic::Ordering::Relaxed);
        let content = o.cached.as_ref().filter(|_| through);
        let mut modes = self.modes();
        let register = || {
            let (file, _) = content?;
            reply
                .open_backing(file.as_ref())
                .map_err(|e| {
                    // Not permitted (no CAP_SYS_ADMIN) or not possible here: the mount
                    // serves these reads itself from now on.
                    warn!(error = %e, "kernel passthrough unavailable; reading the disk cache in the mount");
                    self.passthrough.store(false, std::sync::atomic::Ordering::Relaxed);
                })
                .ok()
        };
        let (choice, backing) = modes.open(ino.0, o.fh, writable, content.map(|(_, s)| s.as_str()), register);
        match (choice, backing) {
            (Choice::Passthrough { direct }, Some(id)) => {
                let flags = if direct {
                    FopenFlags::FOPEN_DIRECT_IO
                } else {
                    FopenFlags::empty()
                };
                reply.opened_passthrough(FileHandle(o.fh), flags, id)
            }
            (Choice::Busy, _) => {
                drop(modes);
                let _ = self.run(self.fs.release(o.fh));
                reply.error(Errno::ETXTBSY)
            }
            _ => reply.opened(FileHandle(o.fh), fopen(o.keep_cache, o.direct)),
        }
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, ino = ino.0, fh = fh.0, offset, size))]
    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.run(self.fs.read(fh.0, offset, size)) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, ino = ino.0, fh = fh.0, offset, len = data.len()))]
    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        // Set on direct-I/O writes by a caller without CAP_FSETID (`Opened::direct`).
        let kill = write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        let write = async {
            if kill {
                self.fs.kill_suid(fh.0).await?;
            }
            self.fs.write(fh.0, offset, data).await
        };
        match self.run(write) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, ino = ino.0, fh = fh.0))]
    fn flush(&self, req: &Request, ino: INodeNo, fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        match self.run(self.fs.flush(fh.0)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, ino = ino.0, fh = fh.0))]
    fn release(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let res = self.run(self.fs.release(fh.0));
        // Closes the backing file of the inode's last passthrough handle.
        drop(self.modes().release(fh.0));
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, ino = ino.0, fh = fh.0))]
    fn fsync(&self, req: &Request, ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        match self.run(self.fs.flush(fh.0)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, ino = ino.0))]
    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.run(self.fs.opendir(ino.0)) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, ino = ino.0, fh = fh.0, offset))]
    fn readdir(&self, req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        match self.run(self.fs.readdir(fh.0, offset, 256)) {
            Ok(items) => {
                for it in items {
                    let kind = if it.kind == EntryKind::Dir {
                        FileType::Directory
                    } else {
                        FileType::RegularFile
                    };
                    if reply.add(INodeNo(it.ino), it.next_offset, kind, &it.name) {
                        break;
                    }
                }
                reply.ok()
            }
            Err(e) => reply.error(e),
        }
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, ino = ino.0, fh = fh.0, offset))]
    fn readdirplus(&self, req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        match self.run(self.fs.readdir(fh.0, offset, 256)) {
            Ok(items) => {
                for it in items {
                    let attr = file_attr(&it.attr);
                    if reply.add(
                        INodeNo(it.ino),
                        it.next_offset,
                        &it.name,
                        &self.entry_ttl,
                        &attr,
                        Generation(0),
                    ) {
                        break;
                    }
                }
                reply.ok()
            }
            Err(e) => reply.error(e),
        }
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        // Directory changes are committed by the port before each call returns.
        reply.ok();
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0))]
    fn statfs(&self, req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.run(self.fs.statfs()) {
            Ok(s) => reply.statfs(
                s.blocks,
                s.bfree,
                s.bfree,
                u64::from(u32::MAX),
                u64::from(u32::MAX),
                s.bsize,
                255,
                s.bsize,
            ),
            Err(e) => reply.error(e),
        }
    }

    // Extended attributes: ENOSYS makes the kernel stop asking and answer EOPNOTSUPP to
    // every later xattr call itself (the documented behaviour for callers).
    fn setxattr(&self, _: &Request, _: INodeNo, _: &OsStr, _: &[u8], _: i32, _: u32, reply: ReplyEmpty) {
        reply.error(Errno::ENOSYS);
    }

    fn getxattr(&self, _: &Request, _: INodeNo, _: &OsStr, _: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _: &Request, _: INodeNo, _: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn removexattr(&self, _: &Request, _: INodeNo, _: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::ENOSYS);
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        // No ioctls (tools probe TCGETS and friends): "not a terminal / not supported".
        reply.error(Errno::ENOTTY);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Only called without default_permissions, where the mount grants everything.
        reply.ok();
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, parent = parent.0, ?name, mode, flags))]
    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.run(self.fs.create(parent.0, name, mode, flags, caller(req))) {
            Ok((a, o)) => {
                self.modes().created(a.ino, o.fh);
                reply.created(
                    &self.entry_ttl,
                    &file_attr(&a),
                    Generation(0),
                    FileHandle(o.fh),
                    fopen(o.keep_cache, o.direct),
                )
            }
            Err(e) => reply.error(e),
        }
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, ino = ino.0, fh = fh.0, offset, length, mode))]
    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        match self.run(self.fs.fallocate(fh.0, offset, length, mode)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}
