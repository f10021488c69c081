//! Every operation through the kernel: the in-memory tree mounted in a temp dir and
//! driven with std::fs and libc. Needs root and /dev/fuse.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::time::{Duration, UNIX_EPOCH};

use common::{assert_fuse, cstr, errno_of, wait_until, TestMount};

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8 ^ (i >> 12) as u8).collect()
}

#[test]
fn files_dirs_and_attributes() {
    let m = TestMount::new();
    // create, write, flush (close) and close-to-open: the tree has it when close returns
    fs::write(m.path("a.txt"), b"hello world").unwrap();
    assert_eq!(m.tree.content("a.txt").unwrap(), &b"hello world"[..]);
    assert_eq!(fs::read(m.path("a.txt")).unwrap(), b"hello world");

    // lookup / getattr
    let md = fs::metadata(m.path("a.txt")).unwrap();
    assert!(md.is_file());
    assert_eq!(md.len(), 11);
    assert_eq!(md.nlink(), 1);
    assert_eq!(errno_of(fs::metadata(m.path("missing"))), libc::ENOENT);

    // setattr: mode, mtime, truncate (shrink and grow)
    fs::set_permissions(m.path("a.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        fs::metadata(m.path("a.txt")).unwrap().permissions().mode() & 0o7777,
        0o600
    );
    let t = UNIX_EPOCH + Duration::from_millis(1_600_000_000_123);
    File::options()
        .write(true)
        .open(m.path("a.txt"))
        .unwrap()
        .set_modified(t)
        .unwrap();
    assert_eq!(fs::metadata(m.path("a.txt")).unwrap().modified().unwrap(), t);
    OpenOptions::new()
        .write(true)
        .open(m.path("a.txt"))
        .unwrap()
        .set_len(5)
        .unwrap();
    assert_eq!(fs::read(m.path("a.txt")).unwrap(), b"hello");
    let f = OpenOptions::new().write(true).open(m.path("a.txt")).unwrap();
    f.set_len(8).unwrap();
    drop(f);
    assert_eq!(m.tree.content("a.txt").unwrap(), &b"hello\0\0\0"[..]);

    // mkdir, rmdir (empty and not)
    fs::create_dir(m.path("d")).unwrap();
    fs::write(m.path("d/x"), b"x").unwrap();
    assert_eq!(errno_of(fs::remove_dir(m.path("d"))), libc::ENOTEMPTY);
    assert_eq!(errno_of(fs::create_dir(m.path("d"))), libc::EEXIST);
    fs::create_dir(m.path("e")).unwrap();
    fs::remove_dir(m.path("e")).unwrap();
    assert!(!m.path("e").exists());

    // unlink
    assert_eq!(errno_of(fs::remove_file(m.path("d"))), libc::EISDIR);
    fs::remove_file(m.path("d/x")).unwrap();
    assert_eq!(errno_of(fs::metadata(m.path("d/x"))), libc::ENOENT);

    // statfs
    let c = cstr(&m.mnt);
    // SAFETY: valid path, zeroed out-struct we own.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    assert!(st.f_blocks > 0 && st.f_bfree <= st.f_blocks);
    assert_eq!(st.f_namemax, 255);
    assert_fuse(&m.mnt);
}

#[test]
fn rename_replacing_and_noreplace() {
    let m = TestMount::new();
    fs::write(m.path("a"), b"A").unwrap();
    fs::write(m.path("b"), b"B").unwrap();
    let ino_a = fs::metadata(m.path("a")).unwrap().ino();
    fs::rename(m.path("a"), m.path("b")).unwrap();
    assert_eq!(fs::read(m.path("b")).unwrap(), b"A");
    assert_eq!(
        fs::metadata(m.path("b")).unwrap().ino(),
        ino_a,
        "rename keeps the inode"
    );
    assert!(!m.path("a").exists());

    fs::write(m.path("c"), b"C").unwrap();
    let renameat2 = |from: &str, to: &str, flags: u32| {
        let (f, t) = (cstr(&m.path(from)), cstr(&m.path(to)));
        // SAFETY: valid NUL-terminated paths; AT_FDCWD with absolute paths.
        let r = unsafe { libc::renameat2(libc::AT_FDCWD, f.as_ptr(), libc::AT_FDCWD, t.as_ptr(), flags) };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    assert_eq!(errno_of(renameat2("c", "b", libc::RENAME_NOREPLACE)), libc::EEXIST);
    assert_eq!(fs::read(m.path("b")).unwrap(), b"A");
    renameat2("c", "c2", libc::RENAME_NOREPLACE).unwrap();
    assert_eq!(errno_of(renameat2("c2", "b", libc::RENAME_EXCHANGE)), libc::EINVAL);

    // directories: into another dir, over an empty dir, not over a non-empty one, not under itself
    fs::create_dir_all(m.path("d1/sub")).unwrap();
    fs::create_dir(m.path("d2")).unwrap();
    fs::rename(m.path("d1/sub"), m.path("d2/moved")).unwrap();
    assert!(m.path("d2/moved").is_dir());
    fs::create_dir(m.path("empty")).unwrap();
    fs::rename(m.path("d1"), m.path("empty")).unwrap();
    assert_eq!(errno_of(fs::rename(m.path("empty"), m.path("d2"))), libc::ENOTEMPTY);
    assert_eq!(errno_of(fs::rename(m.path("d2"), m.path("d2/moved/x"))), libc::EINVAL);
    assert_eq!(errno_of(fs::rename(m.path("b"), m.path("d2"))), libc::EISDIR);
    assert_eq!(errno_of(fs::rename(m.path("d2"), m.path("b"))), libc::ENOTDIR);
}

#[test]
fn large_directory_is_listed_in_pages() {
    let m = TestMount::with(|c| c.list_page_size = 100);
    for i in 0..1500 {
        fs::create_dir(m.path(&format!("d{i:05}"))).unwrap();
    }
    let before = m.tree.list_calls();
    let mut names: Vec<String> = fs::read_dir(&m.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names.len(), 1500);
    assert_eq!(names[0], "d00000");
    assert_eq!(names[1499], "d01499");
    assert!(m.tree.list_calls() - before >= 15, "1500 entries need 15 pages of 100");
}

#[test]
fn random_writes_appends_and_fsync() {
    let m = TestMount::new();
    let mut model = pattern(1 << 20);
    fs::write(m.path("f"), &model).unwrap();
    let f = OpenOptions::new().read(true).write(true).open(m.path("f")).unwrap();
    for (i, off) in [7usize, 300_000, 1 << 19, (1 << 20) - 3].into_iter().enumerate() {
        let data = vec![i as u8 + 1; 4096];
        f.write_all_at(&data, off as u64).unwrap();
        if model.len() < off + data.len() {
            model.resize(off + data.len(), 0);
        }
        model[off..off + data.len()].copy_from_slice(&data);
    }
    // read-your-writes before the commit
    let mut buf = vec![0; 10];
    f.read_exact_at(&mut buf, 300_000).unwrap();
    assert_eq!(buf, &model[300_000..300_010]);
    f.sync_all().unwrap(); // fsync commits
    assert_eq!(m.tree.content("f").unwrap(), model);
    drop(f);

    let mut f = OpenOptions::new().append(true).open(m.path("f")).unwrap();
    f.write_all(b"appended").unwrap();
    drop(f);
    model.extend_from_slice(b"appended");
    assert_eq!(fs::read(m.path("f")).unwrap(), model);

    // O_TRUNC through the atomic open
    let mut f = OpenOptions::new().write(true).truncate(true).open(m.path("f")).unwrap();
    f.write_all(b"new").unwrap();
    f.seek(SeekFrom::Start(10)).unwrap();
    f.write_all(b"!").unwrap();
    drop(f);
    assert_eq!(m.tree.content("f").unwrap(), &b"new\0\0\0\0\0\0\0!"[..]);
}

fn drop_page_cache(f: &File) {
    // SAFETY: a valid open descriptor.
    assert_eq!(
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) },
        0
    );
}

fn no_spool_data(spool: &std::path::Path) -> bool {
    fs::read_dir(spool)
        .unwrap()
        .all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".data"))
}

fn read_from_start(mut f: &File) -> Vec<u8> {
    let mut out = Vec::new();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_to_end(&mut out).unwrap();
    out
}

#[test]
fn cached_reads_do_not_refetch() {
    let m = TestMount::new();
    let data = pattern(4 << 20);
    // Through a read-write handle, so through the page cache (a write-only one bypasses
    // it: `write_only_handles_bypass_the_page_cache`).
    let mut w = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.path("big"))
        .unwrap();
    w.write_all(&data).unwrap();
    drop(w);
    // close(2) returns after FLUSH (the upload), but the kernel sends RELEASE on its own
    // time; until it lands the writer's spool still serves reads, and no fetch would be
    // counted below. The spool file goes away with the last reference.
    wait_until("the writer's release", Duration::from_secs(10), || {
        no_spool_data(&m.spool)
    });
    let f = File::open(m.path("big")).unwrap();
    // The pages written are still cached (same SHA-1, FOPEN_KEEP_CACHE): nothing to fetch.
    let before = m.tree.read_calls();
    assert_eq!(read_from_start(&f), data);
    assert_eq!(m.tree.read_calls(), before);

    // Without the page cache the mount fetches, in few ranged reads thanks to read-ahead.
    drop_page_cache(&f);
    assert_eq!(read_from_start(&f), data);
    let first = m.tree.read_calls() - before;
    assert!(
        (1..=10).contains(&first),
        "read-ahead should need few fetches for 4 MiB, got {first}"
    );

    // And again: now the mount's block cache serves it.
    drop_page_cache(&f);
    assert_eq!(read_from_start(&f), data);
    drop(f);
    let f = File::open(m.path("big")).unwrap();
    drop_page_cache(&f);
    assert_eq!(read_from_start(&f), data);
    assert_eq!(
        m.tree.read_calls() - before,
        first,
        "cached reads must not reach the port"
    );
}

/// A write-only handle writes around the page cache (`FOPEN_DIRECT_IO`): after it, the
/// file's first read comes from the mount, and what that read cached serves the next.
#[test]
fn write_only_handles_bypass_the_page_cache() {
    let m = TestMount::new();
    let data = pattern(1 << 20);
    fs::write(m.path("w"), &data).unwrap();
    wait_until("the writer's release", Duration::from_secs(10), || {
        no_spool_data(&m.spool)
    });
    let before = m.tree.read_calls();
    let f = File::open(m.path("w")).unwrap();
    assert_eq!(read_from_start(&f), data);
    let first = m.tree.read_calls();
    assert!(
        first > before,
        "no page of a direct write was cached, so the mount read it"
    );
    assert_eq!(read_from_start(&f), data);
    assert_eq!(m.tree.read_calls(), first, "the first read's pages serve the second");
}

#[test]
fn unsupported_operations_answer_the_documented_errno() {
    let m = TestMount::new();
    fs::write(m.path("f"), b"x").unwrap();
    assert_eq!(errno_of(std::os::unix::fs::symlink("f", m.path("sl"))), libc::EPERM);
    assert_eq!(errno_of(fs::hard_link(m.path("f"), m.path("hl"))), libc::EPERM);
    let fifo = cstr(&m.path("fifo"));
    // SAFETY: valid path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, -1);
    assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::EPERM));
    let (p, n) = (cstr(&m.path("f")), c"user.test");
    // SAFETY: valid path and name; value pointer and length agree.
    let r = unsafe { libc::setxattr(p.as_ptr(), n.as_ptr(), b"1".as_ptr().cast(), 1, 0) };
    assert_eq!(r, -1);
    assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::EOPNOTSUPP));
    assert_eq!(errno_of(fs::read_link(m.path("f"))), libc::EINVAL);
    let f = OpenOptions::new().write(true).open(m.path("f")).unwrap();
    let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: a valid open descriptor.
    assert_eq!(unsafe { libc::fallocate(f.as_raw_fd(), punch, 0, 1) }, -1);
    assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::EOPNOTSUPP));
    // SAFETY: a valid open descriptor.
    assert_eq!(
        unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, 4096) },
        0,
        "plain allocation works"
    );
    drop(f);
    assert_eq!(fs::metadata(m.path("f")).unwrap().len(), 4096);
    assert_eq!(errno_of(fs::create_dir(m.path(&"n".repeat(256)))), libc::ENAMETOOLONG);
}

#[test]
fn unlinked_open_file_keeps_working_and_vanishes() {
    let m = TestMount::new();
    fs::write(m.path("f"), b"data").unwrap();
    let mut f = OpenOptions::new().read(true).write(true).open(m.path("f")).unwrap();
    f.seek(SeekFrom::End(0)).unwrap();
    fs::remove_file(m.path("f")).unwrap();
    f.write_all(b"more").unwrap();
    assert_eq!(f.metadata().unwrap().len(), 8);
    drop(f);
    assert!(m.tree.content("f").is_none());
    assert_eq!(fs::read_dir(&m.mnt).unwrap().count(), 0);
}

/// The read-ahead of the mount's backing device in sysfs, in KiB.
fn kernel_read_ahead_kb(mnt: &std::path::Path) -> u64 {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let want = mnt.to_str().unwrap();
    let dev = info
        .lines()
        .rev()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|f| f.get(4) == Some(&want))
        .map(|f| f[2].to_owned())
        .expect("the mount in mountinfo");
    let kb = fs::read_to_string(format!("/sys/class/bdi/{dev}/read_ahead_kb")).unwrap();
    kb.trim().parse().unwrap()
}

/// The mount raises the kernel's read-ahead (so that reads arrive as 1 MiB requests, not
/// 128 KiB ones) as configured, and 0 leaves the kernel's own value.
#[test]
fn kernel_read_ahead_is_configured() {
    let m = TestMount::with(|c| c.kernel_read_ahead = 2 << 20);
    assert_eq!(kernel_read_ahead_kb(&m.mnt), 2048);
    drop(m);
    let m = TestMount::with(|c| c.kernel_read_ahead = 0);
    assert_eq!(kernel_read_ahead_kb(&m.mnt), 128, "the kernel's default for FUSE");
}

fn cached_objects(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    fs::read_dir(dir.join("objects"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

#[test]
fn disk_cache_serves_what_was_written_and_what_was_read() {
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().to_owned();
    // No block cache: every read that the disk cache does not serve reaches the port.
    let m = TestMount::with(|c| {
        c.disk_cache_dir = Some(dir.clone());
        c.cache_bytes = 0;
    });
    let data = pattern(3 << 20);
    fs::write(m.path("f"), &data).unwrap();
    wait_until("the writer's release", Duration::from_secs(10), || {
        no_spool_data(&m.spool)
    });
    assert_eq!(
        cached_objects(&dir).len(),
        1,
        "the committed spool moved into the cache"
    );

    let before = m.tree.read_calls();
    let f = File::open(m.path("f")).unwrap();
    drop_page_cache(&f);
    assert_eq!(read_from_start(&f), data);
    assert_eq!(m.tree.read_calls(), before, "served from the disk cache");
    // As root the kernel reads the cache's file itself (passthrough), and then refuses a
    // writer while the reader is open, as documented.
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let w = OpenOptions::new().write(true).open(m.path("f"));
    if root {
        assert_eq!(errno_of(w), libc::ETXTBSY);
    } else {
        drop(w.unwrap());
    }
    drop(f);
    // The reader's release reaches the mount on the kernel's time.
    wait_until("the reader's release", Duration::from_secs(10), || {
        OpenOptions::new().write(true).open(m.path("f")).is_ok()
    });

    // A new content replaces the old one for new readers.
    let mut data2 = pattern(2 << 20);
    data2[12345] ^= 0xff;
    fs::write(m.path("f"), &data2).unwrap();
    wait_until("the writer's release", Duration::from_secs(10), || {
        no_spool_data(&m.spool)
    });
    assert_eq!(cached_objects(&dir).len(), 2);
    let f = File::open(m.path("f")).unwrap();
    assert_eq!(read_from_start(&f), data2);
    drop(f);

    // Files removed from the cache by hand are fetched again, and a content read front to
    // back is kept (checked against its SHA-1): the next reader needs no fetch.
    for p in cached_objects(&dir) {
        fs::remove_file(p).unwrap();
    }
    let f = File::open(m.path("f")).unwrap();
    drop_page_cache(&f);
    let before = m.tree.read_calls();
    assert_eq!(read_from_start(&f), data2);
    assert!(m.tree.read_calls() > before, "fetched from the port");
    drop(f);
    wait_until("the content filled into the cache", Duration::from_secs(10), || {
        cached_objects(&dir).len() == 1
    });
    let before = m.tree.read_calls();
    let f = File::open(m.path("f")).unwrap();
    drop_page_cache(&f);
    assert_eq!(read_from_start(&f), data2);
    assert_eq!(m.tree.read_calls(), before, "served from the disk cache");
}
