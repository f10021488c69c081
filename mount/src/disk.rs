//! Optional disk cache of whole contents, keyed by SHA-1.
//!
//! Layout of the cache directory:
//! - `lock`: held with `flock` by the one mount using the directory.
//! - `state`: the boot the cache was last opened in, and whether it was closed cleanly.
//! - `objects/<sha1>`: one file per content, exactly its bytes.
//! - `tmp/`: contents being filled; emptied when a mount opens the cache.
//!
//! A file gets here two ways, both only for contents of at least [`MIN_SIZE`] (smaller
//! ones are served well by the memory block cache, and a file per small content would
//! cost an inode each): a spool whose upload the server committed is renamed in (the
//! mount just wrote those bytes and knows their SHA-1), and a content read front to back
//! from the server is written here as it is read, hashed, and kept only if the hash is
//! the content's. Content never changes under its SHA-1, so nothing here is ever stale.
//!
//! Files are not fsynced. A mount process that dies leaves them in the page cache,
//! where they are as good as on disk; only a crash of the machine can leave a renamed
//! file with bytes that never reached the disk. So `state` records the boot id: a cache
//! opened in another boot than the one it was last used in, without a clean close
//! (which syncs the file system first), is emptied.
//!
//! The cache holds at most `max_bytes`, and never fills its file system below
//! `min_free` free bytes: it evicts least recently used contents first, and stores
//! nothing rather than break either bound.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use lru::LruCache;
use sha1::{Digest, Sha1};
use tracing::{debug, info, warn};

use crate::journal::{hex, lock_dir};

/// Smallest content the disk cache keeps.
pub const MIN_SIZE: u64 = 1 << 20;

/// Bytes of read data a fill may hold out of order before it gives up.
const MAX_FILL_BACKLOG: u64 = 64 << 20;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn is_sha1(name: &str) -> bool {
    name.len() == 40 && name.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Free bytes on the file system of `path`, for an unprivileged user.
fn free_bytes(path: &Path) -> io::Result<u64> {
    let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `c` is a NUL-terminated path and `st` a zeroed statvfs we own.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// How a cache learns the free bytes of its file system.
type FreeSpace = Box<dyn Fn(&Path) -> io::Result<u64> + Send + Sync>;

struct Inner {
    /// Cached contents and their sizes, least recently used first out.
    lru: LruCache<String, u64>,
    /// Bytes of the cached contents.
    bytes: u64,
    /// Bytes promised to fills in progress.
    reserved: u64,
    /// Contents being filled.
    filling: HashSet<String>,
}

/// The disk cache of one mount.
pub(crate) struct DiskCache {
    objects: PathBuf,
    tmp: PathBuf,
    state: PathBuf,
    max_bytes: u64,
    min_free: u64,
    /// Free bytes of the cache's file system (a function so that tests can set it).
    free: FreeSpace,
    inner: Mutex<Inner>,
    next_tmp: AtomicU64,
    _lock: File,
}

impl std::fmt::Debug for DiskCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskCache")
            .field("objects", &self.objects)
            .finish_non_exhaustive()
    }
}

impl DiskCache {
    /// Opens (creating) the cache in `dir` and takes its lock; empties it if the machine
    /// may have lost some of its bytes (see the module docs).
    pub(crate) fn open(dir: &Path, max_bytes: u64, min_free: u64) -> io::Result<DiskCache> {
        Self::open_with(dir, max_bytes, min_free, Box::new(free_bytes))
    }

    pub(crate) fn open_with(dir: &Path, max_bytes: u64, min_free: u64, free: FreeSpace) -> io::Result<DiskCache> {
        let lock_file = lock_dir(dir, "disk cache")?;
        let objects = dir.join("objects");
        let tmp = dir.join("tmp");
        let state = dir.join("state");
        let boot = boot_id();
        let (last_boot, clean) = match fs::read_to_string(&state) {
            Ok(s) => (
                s.lines().find_map(|l| l.strip_prefix("boot=")).unwrap_or("").to_owned(),
                s.lines().any(|l| l == "clean=1"),
            ),
            Err(_) => (String::new(), false),
        };
        let trusted = clean || (!boot.is_empty() && last_boot == boot);
        if !trusted && objects.exists() {
            info!(dir = %dir.display(), "disk cache not closed cleanly before a reboot; emptying it");
            fs::remove_dir_all(&objects)?;
        }
        match fs::remove_dir_all(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        fs::create_dir_all(&objects)?;
        fs::create_dir(&tmp)?;
        // From now on a crash of the machine must empty the cache at the next open.
        fs::write(&state, format!("boot={boot}\nclean=0\n"))?;

        let mut found = Vec::new();
        for entry in fs::read_dir(&objects)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let meta = entry.metadata()?;
            if !is_sha1(&name) || !meta.is_file() {
                let _ = fs::remove_file(entry.path());
                continue;
            }
            let used = meta.accessed().or_else(|_| meta.modified()).ok();
            found.push((used, name, meta.len()));
        }
        // Oldest first, so that they are the first evicted.
        found.sort();
        let mut inner = Inner {
            lru: LruCache::unbounded(),
            bytes: 0,
            reserved: 0,
            filling: HashSet::new(),
        };
        for (_, name, len) in found {
            inner.bytes += len;
            inner.lru.put(name, len);
        }
        let cache = DiskCache {
            objects,
            tmp,
            state,
            max_bytes,
            min_free,
            free,
            inner: Mutex::new(inner),
            next_tmp: AtomicU64::new(0),
            _lock: lock_file,
        };
        // A smaller limit than last time applies at once.
        cache.make_room(0);
        Ok(cache)
    }

    fn path(&self, sha1: &str) -> PathBuf {
        self.objects.join(sha1)
    }

    /// Bytes cached.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> u64 {
        lock(&self.inner).bytes
    }

    /// The cached content `sha1`, open for reading, if it is here whole.
    pub(crate) fn open_content(&self, sha1: &str, size: u64) -> Option<File> {
        if size < MIN_SIZE {
            return None;
        }
        let known = lock(&self.inner).lru.get(sha1).copied();
        if known != Some(size) {
            return None;
        }
        match File::open(self.path(sha1)) {
            Ok(f) if f.metadata().is_ok_and(|m| m.len() == size) => Some(f),
            _ => {
                // Removed by hand, or not what it should be: forget it.
                warn!(sha1, "disk cache file missing or of the wrong size; dropped");
                self.forget(sha1);
                None
            }
        }
    }

    fn forget(&self, sha1: &str) {
        let mut inner = lock(&self.inner);
        if let Some(len) = inner.lru.pop(sha1) {
            inner.bytes -= len;
        }
        drop(inner);
        let _ = fs::remove_file(self.path(sha1));
    }

    /// Evicts least recently used contents until `size` more bytes fit under both bounds;
    /// reserves them if so.
    fn make_room(&self, size: u64) -> bool {
        let mut victims = Vec::new();
        let fits = {
            let mut inner = lock(&self.inner);
            let free = (self.free)(&self.objects).unwrap_or(0);
            let mut freed = 0u64;
            loop {
                let under_max = inner.bytes + inner.reserved + size <= self.max_bytes;
                let keeps_free = (free + freed).saturating_sub(size) >= self.min_free;
                if under_max && keeps_free {
                    break true;
                }
                match inner.lru.pop_lru() {
                    Some((sha1, len)) => {
                        inner.bytes -= len;
                        freed += len;
                        victims.push(sha1);
                    }
                    None => break false,
                }
            }
        };
        for sha1 in &victims {
            let _ = fs::remove_file(self.path(sha1));
        }
        if !victims.is_empty() {
            debug!(evicted = victims.len(), "disk cache made room");
        }
        if fits && size > 0 {
            lock(&self.inner).reserved += size;
        }
        fits
    }

    fn tmp_path(&self) -> PathBuf {
        self.tmp.join(self.next_tmp.fetch_add(1, Ordering::Relaxed).to_string())
    }

    /// Moves `file` (whose bytes are content `sha1`, `size` long) into the cache. Returns
    /// false, leaving the file where it was, if the cache does not take it.
    pub(crate) fn adopt(&self, sha1: &str, size: u64, file: &Path) -> bool {
        if size < MIN_SIZE || !is_sha1(sha1) {
            return false;
        }
        if lock(&self.inner).lru.contains(sha1) {
            return false;
        }
        if !self.make_room(size) {
            return false;
        }
        // Renamed to a name of its own first: the final rename then cannot meet a file
        // that is not the cache's.
        let tmp = self.tmp_path();
        let moved = fs::rename(file, &tmp).is_ok();
        self.finish(sha1, size, moved.then_some(tmp.as_path()));
        moved
    }

    /// Ends a reservation of `size` bytes: places `tmp` as content `sha1`, or (None) gives
    /// the bytes back.
    fn finish(&self, sha1: &str, size: u64, tmp: Option<&Path>) {
        let placed = tmp.is_some_and(|t| match fs::rename(t, self.path(sha1)) {
            Ok(()) => true,
            Err(e) => {
                warn!(sha1, error = %e, "disk cache could not place a content");
                let _ = fs::remove_file(t);
                false
            }
        });
        let mut inner = lock(&self.inner);
        inner.reserved -= size;
        if placed && inner.lru.put(sha1.to_owned(), size).is_none() {
            inner.bytes += size;
        }
    }

    /// Starts filling content `sha1` of `size` bytes from reads of it, unless it is
    /// cached, being filled, too small, or does not fit.
    pub(crate) fn start_fill(self: &std::sync::Arc<Self>, sha1: &str, size: u64) -> Option<Fill> {
        if size < MIN_SIZE || !is_sha1(sha1) {
            return None;
        }
        {
            let mut inner = lock(&self.inner);
            if inner.lru.contains(sha1) || !inner.filling.insert(sha1.to_owned()) {
                return None;
            }
        }
        let started = self.make_room(size).then(|| {
            let path = self.tmp_path();
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => Some((path, file)),
                Err(e) => {
                    warn!(error = %e, "disk cache cannot create a file");
                    None
                }
            }
        });
        let Some(Some((path, file))) = started else {
            if started.is_some() {
                lock(&self.inner).reserved -= size;
            }
            lock(&self.inner).filling.remove(sha1);
            return None;
        };
        let (tx, rx) = std::sync::mpsc::sync_channel::<(u64, Bytes)>(64);
        let job = FillJob {
            cache: self.clone(),
            sha1: sha1.to_owned(),
            size,
            path,
            file: Some(file),
            good: false,
        };
        let spawned = std::thread::Builder::new()
            .name("disk-cache-fill".into())
            .spawn(move || job.run(rx));
        if let Err(e) = spawned {
            // The job was dropped with the closure, and gave its reservation back.
            warn!(error = %e, "disk cache cannot start a fill");
            return None;
        }
        Some(Fill { tx })
    }

    /// Syncs the cache's file system and records a clean close: the next open trusts the
    /// files even after a reboot.
    fn close_clean(&self) -> io::Result<()> {
        let dir = File::open(&self.objects)?;
        // SAFETY: syncfs on a descriptor we own; no memory is involved.
        if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        fs::write(&self.state, format!("boot={}\nclean=1\n", boot_id()))
    }
}

impl Drop for DiskCache {
    fn drop(&mut self) {
        if let Err(e) = self.close_clean() {
            warn!(error = %e, "disk cache not closed cleanly; a reboot will empty it");
        }
    }
}

/// A fill in progress: the reads of a content are handed to it with [`Fill::offer`]; it
/// ends when it has all the bytes, or, abandoned, when this is dropped.
pub(crate) struct Fill {
    tx: std::sync::mpsc::SyncSender<(u64, Bytes)>,
}

impl Fill {
    /// Bytes `data` of the content at `offset`. Never blocks the read: if the fill is
    /// behind, it is abandoned (returns false) rather than slow the read down.
    pub(crate) fn offer(&self, offset: u64, data: Bytes) -> bool {
        self.tx.try_send((offset, data)).is_ok()
    }
}

struct FillJob {
    cache: std::sync::Arc<DiskCache>,
    sha1: String,
    size: u64,
    path: PathBuf,
    file: Option<File>,
    /// All bytes came and hashed to `sha1`: placed when the job is dropped.
    good: bool,
}

impl Drop for FillJob {
    /// Places the file or deletes it, and ends the reservation, however the job ended.
    fn drop(&mut self) {
        self.file = None;
        if !self.good {
            let _ = fs::remove_file(&self.path);
        }
        self.cache
            .finish(&self.sha1, self.size, self.good.then_some(self.path.as_path()));
        lock(&self.cache.inner).filling.remove(&self.sha1);
        if self.good {
            debug!(sha1 = self.sha1, size = self.size, "disk cache filled from reads");
        }
    }
}

impl FillJob {
    /// Writes what arrives in order (buffering pieces that arrive early), hashing as it
    /// goes; places the file if all bytes came and their SHA-1 is the content's.
    fn run(mut self, rx: std::sync::mpsc::Receiver<(u64, Bytes)>) {
        let Some(file) = self.file.as_ref() else {
            return;
        };
        let mut hasher = Sha1::new();
        let mut next = 0u64;
        let mut early: std::collections::BTreeMap<u64, Bytes> = std::collections::BTreeMap::new();
        let mut early_bytes = 0u64;
        let mut failed = false;
        while next < self.size && !failed {
            let Ok((offset, data)) = rx.recv() else {
                break; // abandoned
            };
            if offset > next {
                early_bytes += data.len() as u64;
                early.insert(offset, data);
                if early_bytes > MAX_FILL_BACKLOG {
                    break;
                }
                continue;
            }
            let mut pieces = vec![(offset, data)];
            while let Some((off, data)) = pieces.pop() {
                let end = off + data.len() as u64;
                if end > next {
                    let part = data.slice((next - off) as usize..);
                    let part = part.slice(..part.len().min((self.size - next) as usize));
                    if let Err(e) = file.write_all_at(&part, next) {
                        debug!(error = %e, "disk cache fill failed");
                        failed = true;
                        break;
                    }
                    hasher.update(&part);
                    next += part.len() as u64;
                }
                // Pieces that arrived early and now join on.
                while let Some(entry) = early.first_entry() {
                    if *entry.key() > next {
                        break;
                    }
                    let (o, d) = entry.remove_entry();
                    early_bytes -= d.len() as u64;
                    pieces.push((o, d));
                }
            }
        }
        let whole = next == self.size && !failed;
        self.good = whole && hex(&hasher.finalize()) == self.sha1;
        if whole && !self.good {
            warn!(
                sha1 = self.sha1,
                "content read from the server does not match its SHA-1; not cached"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn content(n: usize, seed: u8) -> (Vec<u8>, String) {
        let data: Vec<u8> = (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
        let sha1 = hex(&Sha1::digest(&data));
        (data, sha1)
    }

    fn plenty() -> FreeSpace {
        Box::new(|_| Ok(u64::MAX / 2))
    }

    #[test]
    fn adopted_files_are_served_and_evicted_least_recently_used_first() {
        let dir = tempfile::tempdir().unwrap();
        let mib = MIN_SIZE as usize;
        let cache = DiskCache::open_with(dir.path(), 3 * MIN_SIZE, 0, plenty()).unwrap();
        let mut shas = Vec::new();
        for seed in 0..3u8 {
            let (data, sha1) = content(mib, seed);
            let f = dir.path().join(format!("spool{seed}"));
            fs::write(&f, &data).unwrap();
            assert!(cache.adopt(&sha1, MIN_SIZE, &f));
            assert!(!f.exists(), "the spool file moved in");
            shas.push((sha1, data));
        }
        assert_eq!(cache.bytes(), 3 * MIN_SIZE);
        // Use the first, so that the second is the least recently used.
        let mut got = vec![0u8; mib];
        cache
            .open_content(&shas[0].0, MIN_SIZE)
            .unwrap()
            .read_exact_at(&mut got, 0)
            .unwrap();
        assert_eq!(got, shas[0].1);
        let (data, sha1) = content(mib, 9);
        let f = dir.path().join("spool9");
        fs::write(&f, &data).unwrap();
        assert!(cache.adopt(&sha1, MIN_SIZE, &f));
        assert!(cache.open_content(&shas[1].0, MIN_SIZE).is_none(), "evicted");
        assert!(
            !dir.path().join("objects").join(&shas[1].0).exists(),
            "its file is gone"
        );
        assert!(cache.open_content(&shas[0].0, MIN_SIZE).is_some());
        assert!(cache.open_content(&sha1, MIN_SIZE).is_some());
        assert_eq!(cache.bytes(), 3 * MIN_SIZE);
        // Small contents and the wrong size are never served.
        assert!(cache.open_content(&sha1, MIN_SIZE - 1).is_none());
        let small = dir.path().join("small");
        fs::write(&small, b"x").unwrap();
        assert!(!cache.adopt(&hex(&Sha1::digest(b"x")), 1, &small));
        assert!(small.exists());
    }

    #[test]
    fn free_space_bounds_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let free = Arc::new(AtomicU64::new(10 * MIN_SIZE));
        let f2 = free.clone();
        let cache = DiskCache::open_with(
            dir.path(),
            100 * MIN_SIZE,
            9 * MIN_SIZE,
            Box::new(move |_| Ok(f2.load(Ordering::Relaxed))),
        )
        .unwrap();
        let (a, sha_a) = content(MIN_SIZE as usize, 1);
        let fa = dir.path().join("a");
        fs::write(&fa, &a).unwrap();
        assert!(cache.adopt(&sha_a, MIN_SIZE, &fa), "10 free, 1 used, 9 left");
        free.store(9 * MIN_SIZE, Ordering::Relaxed);
        let (b, sha_b) = content(MIN_SIZE as usize, 2);
        let fb = dir.path().join("b");
        fs::write(&fb, &b).unwrap();
        // Only by evicting `a` (which frees its MiB) does `b` keep 9 MiB free.
        assert!(cache.adopt(&sha_b, MIN_SIZE, &fb));
        assert!(cache.open_content(&sha_a, MIN_SIZE).is_none());
        free.store(8 * MIN_SIZE, Ordering::Relaxed);
        let (c, sha_c) = content(MIN_SIZE as usize, 3);
        let fc = dir.path().join("c");
        fs::write(&fc, &c).unwrap();
        assert!(
            !cache.adopt(&sha_c, MIN_SIZE, &fc),
            "even empty, the cache cannot keep 9 MiB free"
        );
        assert!(fc.exists(), "a refused file stays where it was");
        assert_eq!(cache.bytes(), 0);
    }

    #[test]
    fn reopening_keeps_files_in_the_same_boot_and_after_a_clean_close_only() {
        let dir = tempfile::tempdir().unwrap();
        let (data, sha1) = content(MIN_SIZE as usize, 5);
        {
            let cache = DiskCache::open_with(dir.path(), 10 * MIN_SIZE, 0, plenty()).unwrap();
            let f = dir.path().join("s");
            fs::write(&f, &data).unwrap();
            assert!(cache.adopt(&sha1, MIN_SIZE, &f));
            let err = DiskCache::open_with(dir.path(), 10 * MIN_SIZE, 0, plenty()).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "one mount per cache");
        }
        let cache = DiskCache::open_with(dir.path(), 10 * MIN_SIZE, 0, plenty()).unwrap();
        assert!(
            cache.open_content(&sha1, MIN_SIZE).is_some(),
            "kept after a clean close"
        );
        assert_eq!(cache.bytes(), MIN_SIZE);
        // A crash (no clean close) followed by a reboot (another boot id): emptied.
        std::mem::forget(cache);
        let state = dir.path().join("state");
        assert!(fs::read_to_string(&state).unwrap().contains("clean=0"));
        fs::write(&state, "boot=an-earlier-boot\nclean=0\n").unwrap();
        // The forgotten cache still holds the lock: a crashed process would not.
        let lock = dir.path().join("lock");
        fs::remove_file(&lock).unwrap();
        let cache = DiskCache::open_with(dir.path(), 10 * MIN_SIZE, 0, plenty()).unwrap();
        assert!(cache.open_content(&sha1, MIN_SIZE).is_none());
        assert_eq!(cache.bytes(), 0);
        assert_eq!(fs::read_dir(dir.path().join("objects")).unwrap().count(), 0);
    }

    fn wait_for(cache: &DiskCache, sha1: &str, size: u64) -> Option<File> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let done = !lock(&cache.inner).filling.contains(sha1);
            if done {
                return cache.open_content(sha1, size);
            }
            assert!(std::time::Instant::now() < deadline, "fill never ended");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    #[test]
    fn fills_from_reads_in_any_order_and_checks_the_hash() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(DiskCache::open_with(dir.path(), 10 * MIN_SIZE, 0, plenty()).unwrap());
        let n = MIN_SIZE as usize + 1000;
        let (data, sha1) = content(n, 7);
        let data = Bytes::from(data);
        let fill = cache.start_fill(&sha1, n as u64).unwrap();
        assert!(cache.start_fill(&sha1, n as u64).is_none(), "one fill per content");
        // Out of order and overlapping, as concurrent kernel reads arrive.
        assert!(fill.offer(300_000, data.slice(300_000..700_000)));
        assert!(fill.offer(0, data.slice(0..400_000)));
        assert!(fill.offer(650_000, data.slice(650_000..)));
        let mut got = vec![0u8; n];
        wait_for(&cache, &sha1, n as u64)
            .expect("filled")
            .read_exact_at(&mut got, 0)
            .unwrap();
        assert_eq!(got, &data[..]);
        assert!(cache.start_fill(&sha1, n as u64).is_none(), "cached already");
        drop(fill);

        // Bytes that are not the content's are never kept.
        let (other, sha_o) = content(n, 8);
        let fill = cache.start_fill(&sha_o, n as u64).unwrap();
        let mut wrong = other.clone();
        wrong[5] ^= 1;
        assert!(fill.offer(0, Bytes::from(wrong)));
        assert!(wait_for(&cache, &sha_o, n as u64).is_none());
        // An abandoned fill leaves nothing and gives its reservation back.
        let (_, sha_p) = content(n, 9);
        let fill = cache.start_fill(&sha_p, n as u64).unwrap();
        assert!(fill.offer(0, Bytes::from(vec![0u8; 1000])));
        drop(fill);
        assert!(wait_for(&cache, &sha_p, n as u64).is_none());
        assert_eq!(lock(&cache.inner).reserved, 0);
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        assert_eq!(cache.bytes(), n as u64);
    }
}
