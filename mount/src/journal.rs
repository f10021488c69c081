//! The spool directory: write-back files and the journal of pending uploads.
//!
//! Layout of `spool_dir`:
//! - `lock`: held with `flock` by the one mount using the directory.
//! - `<id>.data`: the local copy of entry `id` while it is open for writing.
//! - the journal record of `<id>.data`: present while it holds changes not yet committed
//!   by the port. Set when a spool first becomes dirty, removed after the commit. It is an
//!   extended attribute of the data file itself (`user.filestore.pending`), set and removed
//!   atomically, where the file system has user attributes; elsewhere a file
//!   `<id>.pending` (written to a temp file, renamed). The attribute costs no file: each
//!   `.pending` file was one more inode to allocate and free per written file, and with
//!   the data file's own, they were most of what a small file's close did on this side.
//!   Not fsynced: like the spool data it guards against the mount process dying (the page
//!   cache survives that), not against a power loss, after which only what close/fsync
//!   committed to the server counts; two fsyncs per written file would cost more than the
//!   upload of a small one. A restarted mount uploads every `<id>.data` that has a record
//!   (either kind: a `.pending` file of an earlier version counts), and deletes every
//!   other `.data`.
//! - `lost/`: pending files whose entry was deleted while the mount was down, kept for the
//!   user instead of being resurrected in the tree.
//! - `free/`: emptied spool files kept for the next file opened for writing (at most
//!   [`FREE_SPOOLS`]): renaming one costs no inode, where a new spool file per written
//!   file cost one to allocate and one to free. They are truncated before they are moved
//!   here, so they never hold anyone's data; a new mount empties the directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use sha1::{Digest, Sha1};

/// What a `.pending` file records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pending {
    pub id: i64,
    /// Modification time to commit; `None` means the data file's own mtime.
    pub mtime_ms: Option<i64>,
}

impl Pending {
    fn encode(&self) -> String {
        let mut s = format!("id={}\n", self.id);
        if let Some(m) = self.mtime_ms {
            s.push_str(&format!("mtime_ms={m}\n"));
        }
        s
    }

    fn decode(text: &str) -> Option<Pending> {
        let mut id = None;
        let mut mtime_ms = None;
        for line in text.lines() {
            match line.split_once('=') {
                Some(("id", v)) => id = v.parse().ok(),
                Some(("mtime_ms", v)) => mtime_ms = v.parse().ok(),
                _ => {}
            }
        }
        Some(Pending { id: id?, mtime_ms })
    }
}

/// The spool directory of one mount.
pub(crate) struct Journal {
    dir: PathBuf,
    // Held for the life of the mount; closing it releases the flock.
    _lock: File,
    /// Whether records are extended attributes of the data files (else `.pending` files).
    xattrs: bool,
    /// Emptied spool files in `free/`, ready to become data files.
    free: std::sync::Mutex<Vec<PathBuf>>,
    /// Names the next file moved to `free/`.
    next_free: std::sync::atomic::AtomicU64,
}

/// Emptied spool files kept for reuse.
const FREE_SPOOLS: usize = 32;

/// The extended attribute holding a data file's journal record.
const PENDING_ATTR: &std::ffi::CStr = c"user.filestore.pending";

fn c_path(path: &Path) -> io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    Ok(std::ffi::CString::new(path.as_os_str().as_bytes())?)
}

fn set_attr(path: &Path, value: &[u8]) -> io::Result<()> {
    let p = c_path(path)?;
    // SAFETY: NUL-terminated path and name; `value` is valid for `value.len()` bytes.
    let rc = unsafe { libc::setxattr(p.as_ptr(), PENDING_ATTR.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The attribute's value, `None` if the file has none (or does not exist).
fn get_attr(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let p = c_path(path)?;
    // A record is a few dozen bytes ("id=..\nmtime_ms=..\n").
    let mut buf = vec![0u8; 256];
    // SAFETY: NUL-terminated path and name; `buf` is valid for `buf.len()` bytes.
    let n = unsafe { libc::getxattr(p.as_ptr(), PENDING_ATTR.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n >= 0 {
        buf.truncate(n as usize);
        return Ok(Some(buf));
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENODATA) | Some(libc::ENOENT) => Ok(None),
        _ => Err(e),
    }
}

fn remove_attr(path: &Path) -> io::Result<()> {
    let p = c_path(path)?;
    // SAFETY: NUL-terminated path and name.
    let rc = unsafe { libc::removexattr(p.as_ptr(), PENDING_ATTR.as_ptr()) };
    let e = io::Error::last_os_error();
    match rc {
        0 => Ok(()),
        _ if matches!(e.raw_os_error(), Some(libc::ENODATA) | Some(libc::ENOENT)) => Ok(()),
        _ => Err(e),
    }
}

/// Whether files in `dir` take user extended attributes (tried on `probe`, a file there).
fn attrs_work(probe: &Path) -> bool {
    match set_attr(probe, b"probe").and_then(|()| remove_attr(probe)) {
        Ok(()) => true,
        Err(e) => {
            tracing::info!(error = %e, "no user extended attributes in the spool dir; journal records are files");
            false
        }
    }
}

/// Creates `dir` if needed and takes its `lock` file (`flock`, held while the returned file
/// is open), so that one mount at a time uses it; `what` names it in the error.
pub(crate) fn lock_dir(dir: &Path, what: &str) -> io::Result<File> {
    fs::create_dir_all(dir)?;
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!("{what} {} is used by another mount", dir.display()),
        ));
    }
    Ok(lock)
}

impl Journal {
    /// Opens (creating) the directory and takes its lock.
    pub(crate) fn open(dir: &Path) -> io::Result<Journal> {
        let lock = lock_dir(dir, "spool dir")?;
        // Left by earlier versions, which uploaded it for every create.
        let _ = fs::remove_file(dir.join("empty"));
        let xattrs = attrs_work(&dir.join("lock"));
        // Free spool files of an earlier run are simply dropped.
        let free = dir.join("free");
        match fs::remove_dir_all(&free) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        fs::create_dir(&free)?;
        Ok(Journal {
            dir: dir.to_owned(),
            _lock: lock,
            xattrs,
            free: std::sync::Mutex::new(Vec::new()),
            next_free: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub(crate) fn data_path(&self, id: i64) -> PathBuf {
        self.dir.join(format!("{id}.data"))
    }

    fn pending_path(&self, id: i64) -> PathBuf {
        self.dir.join(format!("{id}.pending"))
    }

    /// Records that `<id>.data` (which exists) must be uploaded, atomically: a record is
    /// whole or absent.
    pub(crate) fn mark_pending(&self, p: &Pending) -> io::Result<()> {
        if self.xattrs {
            return set_attr(&self.data_path(p.id), p.encode().as_bytes());
        }
        let tmp = self.dir.join(format!("{}.pending.tmp", p.id));
        File::create(&tmp)?.write_all(p.encode().as_bytes())?;
        fs::rename(&tmp, self.pending_path(p.id))
    }

    /// Whether `<id>.data` holds changes a previous run or a failed commit left.
    pub(crate) fn is_pending(&self, id: i64) -> bool {
        (self.xattrs && get_attr(&self.data_path(id)).is_ok_and(|a| a.is_some())) || self.pending_path(id).exists()
    }

    /// The upload of `id` is committed (or abandoned): forget it.
    pub(crate) fn clear_pending(&self, id: i64) -> io::Result<()> {
        if self.xattrs {
            remove_attr(&self.data_path(id))?;
        }
        // A record file of an earlier version, or of this mount without attributes.
        match fs::remove_file(self.pending_path(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// A new, empty `<id>.data`, open for reading and writing: a free spool file renamed,
    /// or a new file.
    pub(crate) fn create_data(&self, id: i64) -> io::Result<File> {
        let path = self.data_path(id);
        let reused = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let renamed = reused.is_some_and(|free| fs::rename(&free, &path).is_ok());
        // Not opened with O_TRUNC, which is a truncation even of an empty file: see `empty`.
        let file = OpenOptions::new().read(true).write(true).create(!renamed).open(&path)?;
        // Empty already, unless a stale file had the name.
        if file.metadata()?.len() != 0 {
            self.empty(id, &file)?;
        }
        Ok(file)
    }

    /// Cuts `<id>.data`, open as `file`, to zero bytes.
    ///
    /// ext4 (`auto_da_alloc`) takes a file cut to zero for one about to be rewritten
    /// without fsync, and starts writing all its data to disk at the next close of any
    /// descriptor of it (XFS does so after any cut to a smaller size, which this does not
    /// avoid). For a spool that is pure cost: the upload reads it through a descriptor of
    /// its own, whose close wrote back the whole spool (0.2-0.3 s of a 1 GiB file's close,
    /// and a disk write and block allocation for every small file, docs/BENCHMARKS.md). A
    /// descriptor closed now, while there is nothing to write, takes the mark off.
    pub(crate) fn empty(&self, id: i64, file: &File) -> io::Result<()> {
        file.set_len(0)?;
        // Only a saving: the spool is empty whether or not this open succeeds.
        drop(File::open(self.data_path(id)));
        Ok(())
    }

    /// Drops `<id>.data` (its record, if any, is cleared already): emptied and kept in
    /// `free/` while there is room there, else deleted.
    pub(crate) fn remove_data(&self, id: i64) {
        let path = self.data_path(id);
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < FREE_SPOOLS {
            let n = self.next_free.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dest = self.dir.join("free").join(n.to_string());
            // Emptied before it moves, so that nothing in `free/` holds data.
            let emptied = OpenOptions::new().write(true).truncate(true).open(&path).is_ok();
            if emptied && fs::rename(&path, &dest).is_ok() {
                free.push(dest);
                return;
            }
        }
        drop(free);
        let _ = fs::remove_file(&path);
    }

    /// Pending uploads left by a previous run; deletes spool files that had none.
    pub(crate) fn recover(&self) -> io::Result<Vec<Pending>> {
        let mut pending = Vec::new();
        for dent in fs::read_dir(&self.dir)? {
            let path = dent?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if let Some(stem) = name.strip_suffix(".pending") {
                let text = fs::read_to_string(&path)?;
                match (stem.parse::<i64>(), Pending::decode(&text)) {
                    (Ok(id), Some(p)) if p.id == id && self.data_path(id).exists() => pending.push(p),
                    _ => {
                        tracing::warn!(path = %path.display(), "dropping unreadable journal record");
                        let _ = fs::remove_file(&path);
                    }
                }
            } else if name.ends_with(".pending.tmp") {
                let _ = fs::remove_file(&path);
            }
        }
        for dent in fs::read_dir(&self.dir)? {
            let path = dent?.path();
            let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".data"))
                .and_then(|stem| stem.parse::<i64>().ok())
            else {
                continue;
            };
            if pending.iter().any(|p| p.id == id) {
                continue;
            }
            let record = if self.xattrs { get_attr(&path)? } else { None };
            match record
                .as_deref()
                .map(String::from_utf8_lossy)
                .and_then(|t| Pending::decode(&t))
            {
                Some(p) if p.id == id => pending.push(p),
                _ => {
                    let _ = fs::remove_file(&path);
                }
            }
        }
        pending.sort_by_key(|p| p.id);
        Ok(pending)
    }

    /// Moves a pending upload whose entry no longer exists to `lost/`.
    pub(crate) fn move_to_lost(&self, id: i64) -> io::Result<PathBuf> {
        let lost = self.dir.join("lost");
        fs::create_dir_all(&lost)?;
        let dest = lost.join(format!("{id}-{}", now_ms()));
        fs::rename(self.data_path(id), &dest)?;
        self.clear_pending(id)?;
        if self.xattrs {
            // The record went along with the file.
            remove_attr(&dest)?;
        }
        Ok(dest)
    }
}

/// SHA-1 (lowercase hex) of a whole file.
pub(crate) fn sha1_file(file: &mut File) -> io::Result<String> {
    use std::io::Seek;
    file.seek(io::SeekFrom::Start(0))?;
    let mut hasher = Sha1::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// SHA-1 of a spool's bytes `[0, upto)`, fed by writes as they arrive, so that the commit
/// of a file written front to back does not read the whole spool again. The owner must
/// drop it when bytes below `upto` change (an overwrite, a truncate below `upto`); bytes
/// past `upto` may change freely (holes, writes out of order): they are read at the end.
///
/// Once a write-behind upload starts, the hashing stops ([`RunningSha1::stop_hashing`]): the
/// server computes the SHA-1 of a streamed file. Writes then only move `upto`, which still
/// says how far the spool is written front to back.
#[derive(Clone)]
pub(crate) struct RunningSha1 {
    /// `None` once stopped.
    hasher: Option<Sha1>,
    upto: u64,
}

impl RunningSha1 {
    pub(crate) fn new() -> Self {
        RunningSha1 {
            hasher: Some(Sha1::new()),
            upto: 0,
        }
    }

    /// Takes a write of `data` at `offset`; false if it invalidates the hash.
    pub(crate) fn write(&mut self, offset: u64, data: &[u8]) -> bool {
        if offset == self.upto {
            if let Some(h) = &mut self.hasher {
                h.update(data);
            }
            self.upto += data.len() as u64;
            return true;
        }
        offset > self.upto || data.is_empty()
    }

    /// Stops the hashing for good (a write-behind upload took the file over).
    pub(crate) fn stop_hashing(&mut self) {
        self.hasher = None;
    }

    /// Whether it still hashes (not stopped).
    pub(crate) fn is_hashing(&self) -> bool {
        self.hasher.is_some()
    }

    /// How many leading bytes of the file the hash covers.
    pub(crate) fn upto(&self) -> u64 {
        self.upto
    }

    /// Whether the file may be cut to `size` without invalidating the hash.
    pub(crate) fn keeps(&self, size: u64) -> bool {
        size >= self.upto
    }

    /// The SHA-1 of the first `size` bytes of `file`: the running hash plus what lies
    /// between `upto` and `size`, read from the file; `None` once stopped.
    pub(crate) fn finish(&self, file: &File, size: u64) -> io::Result<Option<String>> {
        let Some(hasher) = &self.hasher else { return Ok(None) };
        let mut hasher = hasher.clone();
        hash_range(&mut hasher, file, self.upto, size)?;
        Ok(Some(hex(&hasher.finalize())))
    }
}

/// Feeds bytes `[from, to)` of `file` to `hasher`.
pub(crate) fn hash_range(hasher: &mut Sha1, file: &File, from: u64, to: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut off = from;
    let mut buf = vec![0u8; (to.saturating_sub(off)).min(1 << 20) as usize];
    while off < to {
        let n = (to - off).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], off)?;
        hasher.update(&buf[..n]);
        off += n as u64;
    }
    Ok(())
}

/// Lowercase hex of a digest.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// SHA-1 (lowercase hex) of a byte slice (the in-memory port checks uploads with it).
#[cfg(any(test, feature = "memory"))]
pub(crate) fn sha1_bytes(data: &[u8]) -> String {
    hex(&Sha1::digest(data))
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the first extent of `file` still waits for its blocks (ext4's delayed
    /// allocation: it gets them when written back), by `FS_IOC_FIEMAP`. `None` where the
    /// file system does not say.
    fn delayed(file: &File) -> Option<bool> {
        #[repr(C)]
        struct Fiemap {
            start: u64,
            length: u64,
            flags: u32,
            mapped: u32,
            count: u32,
            reserved: u32,
            // One `struct fiemap_extent`: logical, physical, length, 2 reserved, flags, 3 reserved.
            extent: [u64; 5],
            extent_flags: u32,
            extent_reserved: [u32; 3],
        }
        const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
        const FIEMAP_EXTENT_DELALLOC: u32 = 0x4;
        let mut map = Fiemap {
            start: 0,
            length: u64::MAX,
            flags: 0,
            mapped: 0,
            count: 1,
            reserved: 0,
            extent: [0; 5],
            extent_flags: 0,
            extent_reserved: [0; 3],
        };
        // SAFETY: the kernel writes at most `count` (1) extents into the buffer given.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FIEMAP, &mut map as *mut Fiemap) };
        (r == 0 && map.mapped == 1).then_some(map.extent_flags & FIEMAP_EXTENT_DELALLOC != 0)
    }

    /// A spool emptied (reused, or cut to zero) and written again is not written back
    /// when another descriptor of it closes (see `Journal::empty`). Seen through delayed
    /// allocation: ext4 gives written bytes blocks only when it writes them back. Where a
    /// plain truncation shows no such write-back (another file system, or ext4 without
    /// delalloc or with `noauto_da_alloc`), there is nothing to observe.
    #[test]
    fn emptied_spools_are_not_written_back_when_a_reader_closes() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let data = vec![7u8; 1 << 20];
        // Whether the bytes still wait for write-back after a reader's close.
        let write_then_read = |file: &File, id: i64| {
            file.write_all_at(&data, 0).unwrap();
            // The upload reads the spool through a descriptor of its own.
            drop(File::open(j.data_path(id)).unwrap());
            delayed(file)
        };
        let control = j.create_data(3).unwrap();
        control.write_all_at(&data, 0).unwrap();
        control.set_len(0).unwrap();
        if write_then_read(&control, 3) != Some(false) {
            eprintln!("no write-back of a truncated file at close seen here: nothing to observe");
            return;
        }
        let first = j.create_data(1).unwrap();
        first.write_all_at(&data, 0).unwrap();
        drop(first);
        j.remove_data(1);
        let reused = j.create_data(2).unwrap();
        assert_eq!(
            write_then_read(&reused, 2),
            Some(true),
            "a reused spool was written back"
        );
        j.empty(2, &reused).unwrap();
        assert_eq!(
            write_then_read(&reused, 2),
            Some(true),
            "an emptied spool was written back"
        );
    }

    #[test]
    fn pending_roundtrip_and_recovery_sweeps_orphans() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        assert!(
            Journal::open(dir.path()).is_err(),
            "second mount must not share the spool"
        );
        fs::write(j.data_path(7), b"seven").unwrap();
        fs::write(j.data_path(8), b"clean copy").unwrap();
        j.mark_pending(&Pending {
            id: 7,
            mtime_ms: Some(42),
        })
        .unwrap();
        let p = j.recover().unwrap();
        assert_eq!(
            p,
            vec![Pending {
                id: 7,
                mtime_ms: Some(42)
            }]
        );
        assert!(!j.data_path(8).exists());
        assert!(j.is_pending(7));
        j.clear_pending(7).unwrap();
        assert!(!j.is_pending(7));
        assert!(j.recover().unwrap().is_empty());
    }

    /// Where the spool dir takes user attributes, a record costs no file; a `.pending`
    /// file left by an earlier version is still a record, and a record follows a rename
    /// only as far as `lost/`, where it is dropped.
    #[test]
    fn records_are_attributes_and_old_record_files_still_count() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        if !j.xattrs {
            eprintln!(
                "no user attributes on {}: only the file records run",
                dir.path().display()
            );
            return;
        }
        fs::write(j.data_path(3), b"three").unwrap();
        j.mark_pending(&Pending { id: 3, mtime_ms: None }).unwrap();
        assert!(!j.pending_path(3).exists(), "no record file");
        assert_eq!(get_attr(&j.data_path(3)).unwrap().as_deref(), Some(&b"id=3\n"[..]));
        j.mark_pending(&Pending {
            id: 3,
            mtime_ms: Some(9),
        })
        .unwrap();

        fs::write(j.data_path(4), b"four").unwrap();
        fs::write(j.pending_path(4), "id=4\n").unwrap();
        fs::write(j.data_path(5), b"five, committed").unwrap();
        drop(j);

        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(
            j.recover().unwrap(),
            vec![
                Pending {
                    id: 3,
                    mtime_ms: Some(9)
                },
                Pending { id: 4, mtime_ms: None }
            ]
        );
        assert!(!j.data_path(5).exists(), "a data file without a record is swept");
        let kept = j.move_to_lost(3).unwrap();
        assert_eq!(fs::read(&kept).unwrap(), b"three");
        assert_eq!(get_attr(&kept).unwrap(), None);
        j.clear_pending(4).unwrap();
        assert!(!j.pending_path(4).exists());
        assert_eq!(j.recover().unwrap(), vec![]);
    }

    /// A dropped spool file is emptied and reused for the next one; a reopened journal
    /// starts with an empty `free/`.
    #[test]
    fn spool_files_are_reused_empty() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let mut f = j.create_data(1).unwrap();
        f.write_all(b"secret bytes").unwrap();
        let ino = fs::metadata(j.data_path(1)).unwrap().ino();
        drop(f);
        j.remove_data(1);
        assert!(!j.data_path(1).exists());
        let kept: Vec<_> = fs::read_dir(dir.path().join("free")).unwrap().flatten().collect();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].metadata().unwrap().len(), 0, "emptied before it is kept");

        let mut g = j.create_data(2).unwrap();
        assert_eq!(
            fs::metadata(j.data_path(2)).unwrap().ino(),
            ino,
            "the same file, renamed"
        );
        let mut got = Vec::new();
        g.read_to_end(&mut got).unwrap();
        assert!(got.is_empty(), "nothing of the earlier file");
        assert_eq!(fs::read_dir(dir.path().join("free")).unwrap().count(), 0);
        j.remove_data(2);
        drop(j);
        let _j = Journal::open(dir.path()).unwrap();
        assert_eq!(fs::read_dir(dir.path().join("free")).unwrap().count(), 0);
    }

    #[test]
    fn hashes() {
        assert_eq!(sha1_bytes(b""), crate::port::EMPTY_SHA1);
        assert_eq!(sha1_bytes(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
    }

    /// The running hash agrees with a full hash of the file after sequential writes,
    /// writes out of order and holes, and refuses an overwrite of hashed bytes.
    #[test]
    fn running_sha1_follows_the_file() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut r = RunningSha1::new();
        let write = |r: &mut RunningSha1, off: usize, len: usize| {
            file.write_all_at(&data[off..off + len], off as u64).unwrap();
            r.write(off as u64, &data[off..off + len])
        };
        assert!(write(&mut r, 0, 1000));
        assert!(write(&mut r, 5000, 2000), "a write past the hashed part (out of order)");
        assert!(write(&mut r, 1000, 4000));
        assert!(write(&mut r, 2_000_000, 1000), "a hole");
        let mut f = file.try_clone().unwrap();
        let size = 2_001_000;
        assert_eq!(r.finish(&f, size).unwrap().unwrap(), sha1_file(&mut f).unwrap());
        assert!(r.keeps(size) && !r.keeps(4999));
        assert!(!r.write(10, &data[10..20]), "an overwrite of hashed bytes");
    }
}
