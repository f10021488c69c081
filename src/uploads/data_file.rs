//! Locks on a chunked upload's data file, so that chunk writers and `complete` never
//! overlap.
//!
//! `complete` hard-links the data file into the store. A chunk write still running at
//! that moment (a resend, or a second client racing the first) would write into stored
//! content behind its SHA-1. So every chunk writer holds a shared `flock` on the data file
//! and `complete` an exclusive one; a writer that gets its lock after a `complete` finds
//! the path gone or pointing at another inode, and stops. Two writers of the same chunk
//! are serialised by an open-file-description byte-range lock on the chunk, so the
//! second one sees the chunk recorded and leaves it alone (see `Uploads::put_part`).
//!
//! Both kinds of lock are held by the open file: they go away when it is dropped, also
//! when the process dies. They are host-local on local disks; gateways on several hosts
//! sharing the staging directory need a filesystem with working `flock` and POSIX locks
//! (CephFS, NFSv4).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Opens the data file for writing chunk bytes `[offset, offset + len)` and takes the
/// locks for it. `Ok(None)`: the upload is gone (completed, cancelled or swept).
pub fn lock_chunk(path: &Path, offset: u64, len: u64) -> io::Result<Option<File>> {
    let file = match OpenOptions::new().write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    flock(&file, libc::LOCK_SH)?;
    if !still_the_data_file(&file, path)? {
        return Ok(None);
    }
    lock_range(&file, offset, len)?;
    Ok(Some(file))
}

/// Opens the data file for reading and waits until no chunk is being written.
/// `Ok(None)`: the upload is gone.
pub fn lock_exclusive(path: &Path) -> io::Result<Option<File>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    flock(&file, libc::LOCK_EX)?;
    if !still_the_data_file(&file, path)? {
        return Ok(None);
    }
    Ok(Some(file))
}

/// Whether `path` still names the inode `file` has open: a `complete` that held the
/// lock before us has removed the path (the inode now being stored content).
fn still_the_data_file(file: &File, path: &Path) -> io::Result<bool> {
    let open = file.metadata()?;
    match std::fs::metadata(path) {
        Ok(now) => Ok(now.ino() == open.ino() && now.dev() == open.dev()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Blocks until this open file holds the `flock` lock `op`. (std's `File::lock` is newer
/// than the crate's minimum Rust version.)
fn flock(file: &File, op: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: the descriptor is open for the duration of the call.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Blocks until this open file holds a write lock on `[offset, offset + len)`.
fn lock_range(file: &File, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: `flock` is a plain C struct; all-zero is a valid value of it.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = offset as libc::off_t;
    // A length of 0 would mean "to the end of the file".
    fl.l_len = len.max(1) as libc::off_t;
    loop {
        // SAFETY: the descriptor is open for the duration of the call and `fl` is a valid
        // `flock` we own; F_OFD_SETLKW reads it and writes nothing back.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLKW, &fl) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_of_one_chunk_and_complete_exclude_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.data");
        std::fs::write(&path, vec![0u8; 100]).unwrap();
        let a = lock_chunk(&path, 0, 50).unwrap().unwrap();
        // Another chunk: no wait. The same chunk, or the whole file: would block.
        let b = lock_chunk(&path, 50, 50).unwrap().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        let waiter = std::thread::spawn(move || {
            let f = lock_chunk(&p, 0, 50).unwrap();
            tx.send(()).unwrap();
            f
        });
        let p = path.clone();
        let (ctx, crx) = std::sync::mpsc::channel();
        let completer = std::thread::spawn(move || {
            let f = lock_exclusive(&p).unwrap();
            ctx.send(()).unwrap();
            // Like `complete`: the path goes away while the lock is held.
            std::fs::remove_file(&p).unwrap();
            f.is_some()
        });
        assert!(rx.try_recv().is_err() && crx.try_recv().is_err());
        drop(a);
        // The second writer of chunk 0 gets it once the first is done.
        let second = waiter.join().unwrap().expect("still the data file");
        assert!(crx.try_recv().is_err(), "complete waits for every writer");
        drop((b, second));
        assert!(completer.join().unwrap());
        // A writer arriving after `complete` finds the upload gone.
        assert!(lock_chunk(&path, 0, 50).unwrap().is_none());
    }

    #[test]
    fn a_writer_that_opened_before_complete_does_not_write_into_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.data");
        let stored = dir.path().join("stored");
        std::fs::write(&path, b"content").unwrap();
        let done = lock_exclusive(&path).unwrap().unwrap();
        let p = path.clone();
        let late = std::thread::spawn(move || lock_chunk(&p, 0, 7).unwrap());
        std::fs::hard_link(&path, &stored).unwrap();
        std::fs::remove_file(&path).unwrap();
        drop(done);
        assert!(late.join().unwrap().is_none());
        assert_eq!(std::fs::read(&stored).unwrap(), b"content");
    }
}
