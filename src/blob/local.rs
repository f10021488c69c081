//! Committed content kept on the local staging disk, sharded by SHA-1.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::{BlobError, BlobStore, ByteStream};
use crate::meta::Content;

/// Read buffer for downloads: large enough that the per-read thread hand-off of tokio's
/// file I/O is amortised, small enough to keep memory per download bounded.
const READ_CHUNK: usize = 512 * 1024;

/// Reads up to this size are done in one blocking call (open, seek, read) and answered as
/// one chunk: for a small file the hops to the blocking pool of a streamed read (open, then
/// each read) cost more than the bytes.
const SMALL_READ: u64 = 64 * 1024;

/// How content files are spread over directories under `objects/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `objects/ab/<sha1>`: 256 directories, all made when the store is created. The
    /// layout of every store created since it was introduced.
    Flat256,
    /// `objects/ab/cd/<sha1>`: the first layout, kept by stores that already hold content
    /// in it. Its 65,536 directories were made as content arrived, so nearly every new
    /// content of a young store paid two directory creations and two more directory syncs
    /// (`perf` had about 30 % of a small-PUT benchmark's samples in ext4's inode allocation).
    TwoLevel,
}

/// What the layout marker (`objects.layout`, beside `objects/`) holds for [`Layout::Flat256`].
/// It sits outside `objects/` so that only content files live there.
const FLAT256_MARK: &str = "flat256\n";

/// Content files under `<staging>/objects/`, sharded by SHA-1 (see [`Layout`]).
#[derive(Debug, Clone)]
pub struct LocalStore {
    objects: PathBuf,
    layout: Layout,
}

impl LocalStore {
    /// Opens the store in `objects` (an existing directory), reading its layout from the
    /// marker beside it. A store without a marker whose shard directories hold directories
    /// predates the marker and keeps two levels; any other gets the current layout (its
    /// 256 directories made and synced first, then the marker written and synced).
    pub fn open(objects: PathBuf) -> std::io::Result<Self> {
        let marker = objects.with_file_name("objects.layout");
        let layout = match std::fs::read_to_string(&marker) {
            Ok(m) if m == FLAT256_MARK => Layout::Flat256,
            Ok(m) => {
                return Err(std::io::Error::new(
                    ErrorKind::InvalidData,
                    format!("{}: unknown object layout {:?}", marker.display(), m.trim()),
                ))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                if has_two_level_shards(&objects)? {
                    Layout::TwoLevel
                } else {
                    create_flat256(&objects, &marker)?;
                    Layout::Flat256
                }
            }
            Err(e) => return Err(e),
        };
        Ok(LocalStore { objects, layout })
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    pub fn root(&self) -> &Path {
        &self.objects
    }

    /// Where the bytes of `sha1` live. `sha1` must be 40 lowercase hex digits (it is always
    /// one the server computed, never a client's string).
    pub fn path(&self, sha1: &str) -> PathBuf {
        debug_assert!(is_sha1_hex(sha1));
        match self.layout {
            Layout::Flat256 => self.objects.join(&sha1[0..2]).join(sha1),
            Layout::TwoLevel => self.objects.join(&sha1[0..2]).join(&sha1[2..4]).join(sha1),
        }
    }

    /// Every stored content file (for the orphan sweep), with its SHA-1.
    pub fn files(&self) -> std::io::Result<Vec<(String, PathBuf)>> {
        let depth = match self.layout {
            Layout::Flat256 => 1,
            Layout::TwoLevel => 2,
        };
        let mut dirs = vec![(self.objects.clone(), 0)];
        let mut out = Vec::new();
        while let Some((dir, level)) = dirs.pop() {
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                if level < depth {
                    dirs.push((entry.path(), level + 1));
                } else {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if is_sha1_hex(&name) {
                        out.push((name, entry.path()));
                    }
                }
            }
        }
        Ok(out)
    }

    pub fn contains(&self, sha1: &str) -> bool {
        self.path(sha1).is_file()
    }

    /// Makes `staged` the stored copy of `sha1` unless one is there already. A hard link is
    /// atomic and never replaces a file that readers may have open; the temp file stays
    /// as it is, so that a transaction retry can place it again. (An anonymous temp file
    /// can be linked again only while it has a name: if the copy it was linked to were
    /// collected before the upload's transaction, this fails with `NotFound` and the
    /// upload with it. Collection needs the content unreferenced for the whole grace
    /// period, so that is a race of hours, not of a transaction.)
    ///
    /// The bytes and every directory entry on the way to them are synced before this
    /// returns: the row that points at them commits right after.
    ///
    /// If the process dies here: before the link, nothing is named (the temp file is the
    /// caller's); after the link but before the directory sync, a complete file (its
    /// bytes were synced first) whose name a power cut may lose; either way no row points
    /// at it yet, and an object without a row is an orphan for the stale sweep.
    pub fn place(&self, sha1: &str, staged: &Path) -> std::io::Result<()> {
        self.place_with(sha1, staged, None)
    }

    /// [`place`](Self::place) for a temp file the caller holds open as `open` (an
    /// anonymous upload temp file): its bytes are synced through that descriptor, not
    /// through one opened again by path. For an anonymous file the path is
    /// `/proc/self/fd/N`, and that open is a walk through procfs on every upload.
    pub fn place_open(&self, sha1: &str, staged: &Path, open: &std::fs::File) -> std::io::Result<()> {
        self.place_with(sha1, staged, Some(open))
    }

    fn place_with(&self, sha1: &str, staged: &Path, open: Option<&std::fs::File>) -> std::io::Result<()> {
        let dest = self.path(sha1);
        if dest.is_file() {
            return Ok(());
        }
        // Synced before it is linked, so that a file named by its SHA-1 is always
        // complete: a later upload of the same bytes finds it and does not store them.
        match open {
            Some(file) => file.sync_data()?,
            None => std::fs::File::open(staged)?.sync_data()?,
        }
        let dir = dest.parent().expect("sharded path has a parent");
        let linked = match link_following(staged, &dest) {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                // First object of a two-level shard (or a shard directory removed by hand):
                // create the missing directories, and sync each directory that gained one,
                // so the path itself survives a crash.
                let mut missing = Vec::new();
                let mut d = dir;
                while d != self.objects && !d.exists() {
                    missing.push(d);
                    d = d.parent().expect("below the objects directory");
                }
                std::fs::create_dir_all(dir)?;
                for created in missing {
                    std::fs::File::open(created.parent().expect("has a parent"))?.sync_all()?;
                }
                link_following(staged, &dest)
            }
            other => other,
        };
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(()),
            Err(e) => return Err(e),
        }
        std::fs::File::open(dir)?.sync_all()
    }

    /// Deletes the stored copy of `sha1`; missing is fine (the removal is idempotent).
    pub fn remove(&self, sha1: &str) -> std::io::Result<()> {
        match std::fs::remove_file(self.path(sha1)) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl BlobStore for LocalStore {
    async fn read(&self, content: &Content, offset: u64, len: u64) -> Result<ByteStream, BlobError> {
        if len <= SMALL_READ {
            let path = self.path(&content.sha1);
            let missing = |e: std::io::Error| match e.kind() {
                ErrorKind::NotFound => BlobError::Missing(content.sha1.clone()),
                _ => e.into(),
            };
            // From the page cache, right here: a few microseconds, less than the hop to the
            // blocking pool and back. Only bytes that would need the disk go there.
            let bytes = match read_cached(&path, offset, len).map_err(missing)? {
                Some(b) => b,
                None => tokio::task::spawn_blocking(move || read_small(&path, offset, len))
                    .await
                    .map_err(|e| std::io::Error::other(e.to_string()))?
                    .map_err(missing)?,
            };
            if bytes.is_empty() {
                return Ok(futures_util::stream::empty().boxed());
            }
            return Ok(futures_util::stream::once(async move { Ok(bytes) }).boxed());
        }
        let mut file = match tokio::fs::File::open(self.path(&content.sha1)).await {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(BlobError::Missing(content.sha1.clone())),
            Err(e) => return Err(e.into()),
        };
        file.set_max_buf_size(READ_CHUNK);
        if offset > 0 {
            file.seek(std::io::SeekFrom::Start(offset)).await?;
        }
        Ok(ReaderStream::with_capacity(file.take(len), READ_CHUNK).boxed())
    }
}

/// `len` bytes from `offset` (fewer if the file is shorter), in one blocking call.
fn read_small(path: &Path, offset: u64, len: u64) -> std::io::Result<bytes::Bytes> {
    use std::io::{Read, Seek};
    let mut file = std::fs::File::open(path)?;
    if offset > 0 {
        file.seek(std::io::SeekFrom::Start(offset))?;
    }
    let mut buf = Vec::with_capacity(len as usize);
    file.take(len).read_to_end(&mut buf)?;
    Ok(bytes::Bytes::from(buf))
}

/// `len` bytes from `offset` (fewer if the file is shorter) if they are all in the page
/// cache, `None` if reading them would wait for the disk. `preadv2(RWF_NOWAIT)` answers
/// EAGAIN instead of starting that I/O, so this never blocks an async worker on the
/// disk; only the open (a path lookup, cached for files read recently) can.
#[cfg(target_os = "linux")]
fn read_cached(path: &Path, offset: u64, len: u64) -> std::io::Result<Option<bytes::Bytes>> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path)?;
    let mut buf = Vec::<u8>::with_capacity(len as usize);
    while (buf.len() as u64) < len {
        let filled = buf.len();
        let spare = buf.spare_capacity_mut();
        let want = spare.len().min((len as usize) - filled);
        let iov = libc::iovec {
            iov_base: spare.as_mut_ptr().cast(),
            iov_len: want,
        };
        let at = (offset + filled as u64) as libc::off_t;
        // SAFETY: `iov` points at `want` bytes of `buf`'s spare capacity, which stays
        // allocated and unaliased for the call; `file` is an open descriptor.
        let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, at, libc::RWF_NOWAIT) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                // Not cached, or a kernel or file system without RWF_NOWAIT reads.
                Some(libc::EAGAIN) | Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) | Some(libc::EINVAL) => Ok(None),
                Some(libc::EINTR) => continue,
                _ => Err(e),
            };
        }
        if n == 0 {
            break;
        }
        // SAFETY: the kernel wrote `n` (<= `want`) bytes right after the initialised ones.
        unsafe { buf.set_len(filled + n as usize) };
    }
    Ok(Some(bytes::Bytes::from(buf)))
}

#[cfg(not(target_os = "linux"))]
fn read_cached(_: &Path, _: u64, _: u64) -> std::io::Result<Option<bytes::Bytes>> {
    Ok(None)
}

/// 40 lowercase hexadecimal digits.
/// `link(2)` of `src` to `dest`, following `src` if it is a symbolic link: an anonymous
/// upload temp file is named `/proc/self/fd/N` (see `staging::Temp`), which must be
/// followed to reach the file. Never replaces `dest` (`AlreadyExists`).
fn link_following(src: &Path, dest: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let src = CString::new(src.as_os_str().as_bytes())?;
    let dest = CString::new(dest.as_os_str().as_bytes())?;
    // SAFETY: both pointers are NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            src.as_ptr(),
            libc::AT_FDCWD,
            dest.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether a shard directory of `objects` holds a directory: content stored in the
/// two-level layout (a store of the current layout has only files in its shards).
fn has_two_level_shards(objects: &Path) -> std::io::Result<bool> {
    for shard in std::fs::read_dir(objects)? {
        let shard = shard?;
        if !shard.file_type()?.is_dir() {
            continue;
        }
        for inner in std::fs::read_dir(shard.path())? {
            if inner?.file_type()?.is_dir() {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Makes the 256 shard directories of [`Layout::Flat256`] and then the marker, each synced
/// before the next step: a crash midway leaves no marker and an empty store (the shard
/// directories hold nothing yet), which the next open completes.
fn create_flat256(objects: &Path, marker: &Path) -> std::io::Result<()> {
    for i in 0..=255u8 {
        match std::fs::create_dir(objects.join(format!("{i:02x}"))) {
            Err(e) if e.kind() != ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
    }
    std::fs::File::open(objects)?.sync_all()?;
    let tmp = marker.with_extension("layout.tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(FLAT256_MARK.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, marker)?;
    std::fs::File::open(marker.parent().expect("the staging directory"))?.sync_all()
}

pub fn is_sha1_hex(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "ab00000000000000000000000000000000000001";
    const B: &str = "cd00000000000000000000000000000000000002";

    fn staged(dir: &Path, bytes: &[u8]) -> PathBuf {
        let p = dir.join(format!("staged-{}", bytes.len()));
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// A new store is flat: its 256 shards exist before any content, the marker records
    /// it, content lands one level down, and a reopen reads the same layout.
    #[test]
    fn a_new_store_has_one_level_of_shards() {
        let dir = tempfile::tempdir().unwrap();
        let objects = dir.path().join("objects");
        std::fs::create_dir(&objects).unwrap();
        let store = LocalStore::open(objects.clone()).unwrap();
        assert_eq!(store.layout(), Layout::Flat256);
        assert_eq!(std::fs::read_dir(&objects).unwrap().count(), 256);
        assert!(objects.join("00").is_dir() && objects.join("ff").is_dir());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("objects.layout")).unwrap(),
            FLAT256_MARK
        );

        store.place(A, &staged(dir.path(), b"first")).unwrap();
        assert_eq!(store.path(A), objects.join("ab").join(A));
        assert_eq!(std::fs::read(objects.join("ab").join(A)).unwrap(), b"first");
        assert!(store.contains(A));
        assert_eq!(
            store.files().unwrap(),
            vec![(A.to_string(), objects.join("ab").join(A))]
        );

        let again = LocalStore::open(objects.clone()).unwrap();
        assert_eq!(again.layout(), Layout::Flat256);
        assert!(again.contains(A));
    }

    /// A store that already holds two-level content and no marker keeps its layout: what
    /// it holds is found, new content goes beside it, and the sweep sees both.
    #[test]
    fn a_store_of_the_first_layout_keeps_two_levels() {
        let dir = tempfile::tempdir().unwrap();
        let objects = dir.path().join("objects");
        std::fs::create_dir_all(objects.join("ab").join("00")).unwrap();
        std::fs::write(objects.join("ab").join("00").join(A), b"old").unwrap();

        let store = LocalStore::open(objects.clone()).unwrap();
        assert_eq!(store.layout(), Layout::TwoLevel);
        assert!(!dir.path().join("objects.layout").exists());
        assert!(store.contains(A));
        store.place(B, &staged(dir.path(), b"new")).unwrap();
        assert_eq!(std::fs::read(objects.join("cd").join("00").join(B)).unwrap(), b"new");
        let mut names: Vec<String> = store.files().unwrap().into_iter().map(|(n, _)| n).collect();
        names.sort();
        assert_eq!(names, vec![A.to_string(), B.to_string()]);
    }

    /// A temp file held open and anonymous (how uploads arrive on Linux) is synced through
    /// its descriptor and linked under its SHA-1 with the bytes it was written with; placing
    /// the same content again changes nothing.
    #[cfg(target_os = "linux")]
    #[test]
    fn an_open_anonymous_temp_file_is_placed() {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        let dir = tempfile::tempdir().unwrap();
        let objects = dir.path().join("objects");
        std::fs::create_dir(&objects).unwrap();
        let store = LocalStore::open(objects.clone()).unwrap();
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o644)
            .custom_flags(libc::O_TMPFILE)
            .open(dir.path())
            .unwrap();
        file.write_all(b"anonymous bytes").unwrap();
        let path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));

        store.place_open(A, &path, &file).unwrap();
        assert_eq!(std::fs::read(objects.join("ab").join(A)).unwrap(), b"anonymous bytes");
        store.place_open(A, &path, &file).unwrap();
        assert_eq!(std::fs::read(store.path(A)).unwrap(), b"anonymous bytes");
    }

    /// Shards made by a creation that died before its marker: the next open completes it.
    #[test]
    fn an_interrupted_creation_is_completed() {
        let dir = tempfile::tempdir().unwrap();
        let objects = dir.path().join("objects");
        std::fs::create_dir_all(objects.join("00")).unwrap();
        std::fs::create_dir_all(objects.join("01")).unwrap();
        let store = LocalStore::open(objects.clone()).unwrap();
        assert_eq!(store.layout(), Layout::Flat256);
        assert_eq!(std::fs::read_dir(&objects).unwrap().count(), 256);
        assert!(dir.path().join("objects.layout").is_file());
    }

    /// A marker this version does not know is an error, not a guess.
    #[test]
    fn an_unknown_layout_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let objects = dir.path().join("objects");
        std::fs::create_dir(&objects).unwrap();
        std::fs::write(dir.path().join("objects.layout"), "flat65536\n").unwrap();
        let err = LocalStore::open(objects).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        assert!(err.to_string().contains("flat65536"), "{err}");
    }

    /// The page-cache read gives the same bytes as the blocking one, for any range,
    /// including past the end; a missing file is NotFound (the caller's `Missing`).
    #[test]
    fn cached_read_matches_blocking_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).expect("write");
        for (offset, len) in [
            (0, 10_000),
            (0, 4096),
            (123, 777),
            (9_990, 100),
            (10_000, 5),
            (20_000, 1),
        ] {
            let blocking = read_small(&path, offset, len).expect("blocking read");
            // Just written, so in the page cache: the direct read must not defer it.
            let cached = read_cached(&path, offset, len).expect("cached read");
            if cfg!(target_os = "linux") {
                assert_eq!(cached.as_deref(), Some(&blocking[..]), "offset {offset}, len {len}");
            }
        }
        let gone = read_cached(&dir.path().join("nope"), 0, 1).expect_err("missing file");
        assert_eq!(gone.kind(), ErrorKind::NotFound);
    }
}
