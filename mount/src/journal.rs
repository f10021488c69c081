//! The spool directory: write-back files and the journal of pending uploads.
//!
//! Layout of `spool_dir`:
//! - `lock`: held with `flock` by the one mount using the directory.
//! - `empty`: a zero-length file, the source of every `create`.
//! - `<id>.data`: the local copy of entry `id` while it is open for writing.
//! - `<id>.pending`: present while `<id>.data` holds changes not yet committed by the
//!   port. Written (temp file, rename) when a spool first becomes dirty, removed after the
//!   commit. Not fsynced: like the spool data it guards against the mount process dying
//!   (the page cache survives that), not against a power loss, after which only what
//!   close/fsync committed to the server counts; two fsyncs per written file would cost
//!   more than the upload of a small one. Its presence is the journal: a restarted mount
//!   uploads every `<id>.data` that has one, and deletes every other `.data`.
//! - `lost/`: pending files whose entry was deleted while the mount was down, kept for the
//!   user instead of being resurrected in the tree.

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
    empty: PathBuf,
}

impl Journal {
    /// Opens (creating) the directory and takes its lock.
    pub(crate) fn open(dir: &Path) -> io::Result<Journal> {
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
                format!("spool dir {} is used by another mount", dir.display()),
            ));
        }
        let empty = dir.join("empty");
        File::create(&empty)?;
        Ok(Journal {
            dir: dir.to_owned(),
            _lock: lock,
            empty,
        })
    }

    pub(crate) fn empty_file(&self) -> &Path {
        &self.empty
    }

    pub(crate) fn data_path(&self, id: i64) -> PathBuf {
        self.dir.join(format!("{id}.data"))
    }

    fn pending_path(&self, id: i64) -> PathBuf {
        self.dir.join(format!("{id}.pending"))
    }

    /// Records that `<id>.data` must be uploaded (atomically: a record is whole or absent).
    pub(crate) fn mark_pending(&self, p: &Pending) -> io::Result<()> {
        let tmp = self.dir.join(format!("{}.pending.tmp", p.id));
        File::create(&tmp)?.write_all(p.encode().as_bytes())?;
        fs::rename(&tmp, self.pending_path(p.id))
    }

    /// Whether `<id>.data` holds changes a previous run or a failed commit left.
    pub(crate) fn is_pending(&self, id: i64) -> bool {
        self.pending_path(id).exists()
    }

    /// The upload of `id` is committed (or abandoned): forget it.
    pub(crate) fn clear_pending(&self, id: i64) -> io::Result<()> {
        match fs::remove_file(self.pending_path(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    pub(crate) fn remove_data(&self, id: i64) {
        let _ = fs::remove_file(self.data_path(id));
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
            let Some(stem) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".data"))
            else {
                continue;
            };
            if !stem.parse::<i64>().is_ok_and(|id| pending.iter().any(|p| p.id == id)) {
                let _ = fs::remove_file(&path);
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

fn hex(bytes: &[u8]) -> String {
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
        j.clear_pending(7).unwrap();
        assert!(j.recover().unwrap().is_empty());
    }

    #[test]
    fn hashes() {
        assert_eq!(sha1_bytes(b""), crate::port::EMPTY_SHA1);
        assert_eq!(sha1_bytes(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
    }
}
