//! Tests of the filesystem logic over the in-memory port, without FUSE in the loop.

use std::ffi::OsStr;
use std::sync::Arc;

use crate::fs::{AttrChange, Caller, Fs, ROOT_INO};
use crate::memory::MemoryTree;
use crate::port::RemoteTree;
use crate::{MountConfig, BLOCK_SIZE};

const ME: Caller = Caller { uid: 0, gid: 0 };
const RDWR: i32 = libc::O_RDWR;

fn setup(spool: &std::path::Path) -> (Arc<MemoryTree>, Fs) {
    let tree = Arc::new(MemoryTree::new(0, 0));
    let fs = Fs::new(tree.clone(), MountConfig::new(spool), tokio::runtime::Handle::current()).unwrap();
    (tree, fs)
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 4096) as u8).collect()
}

async fn write_file(fs: &Fs, name: &str, data: &[u8]) -> u64 {
    let (attr, o) = fs.create(ROOT_INO, OsStr::new(name), 0o644, RDWR, ME).await.unwrap();
    for (i, chunk) in data.chunks(64 * 1024).enumerate() {
        fs.write(o.fh, (i * 64 * 1024) as u64, chunk).await.unwrap();
    }
    fs.flush(o.fh).await.unwrap();
    fs.release(o.fh).await.unwrap();
    attr.ino
}

/// truncate(2) of `ino` to `size`.
async fn truncate(fs: &Fs, ino: u64, size: u64) {
    let change = AttrChange {
        size: Some(size),
        ..Default::default()
    };
    fs.setattr(ino, change).await.unwrap();
}

async fn read_all(fs: &Fs, ino: u64, chunk: u32) -> Vec<u8> {
    let o = fs.open(ino, libc::O_RDONLY).await.unwrap();
    let mut out = Vec::new();
    loop {
        let b = fs.read(o.fh, out.len() as u64, chunk).await.unwrap();
        if b.is_empty() {
            break;
        }
        out.extend_from_slice(&b);
    }
    fs.release(o.fh).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_commits_and_cached_reads_do_not_refetch() {
    let dir = tempfile::tempdir().unwrap();
    let (tree, fs) = setup(dir.path());
    let data = pattern(3 * 1024 * 1024 + 123);
    let ino = write_file(&fs, "f", &data).await;
    assert_eq!(tree.content("f").unwrap(), data, "flush returns only after the commit");
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "free")
        .collect();
    assert_eq!(left, vec!["lock".to_string()], "only the lock remains in the spool");
    for kept in std::fs::read_dir(dir.path().join("free")).unwrap() {
        assert_eq!(kept.unwrap().metadata().unwrap().len(), 0, "a kept spool file is empty");
    }

    let before = tree.read_calls();
    assert_eq!(read_all(&fs, ino, 128 * 1024).await, data);
    // The last read-ahead may still be on its way: it belongs to this read, not the next.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while fs.prefetches_in_flight() > 0 {
        assert!(std::time::Instant::now() < deadline, "read-ahead never finished");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let first = tree.read_calls() - before;
    // 3 MiB in 128 KiB reads: read-ahead doubles the window, so far fewer than 25 fetches.
    assert!(first <= 8, "read-ahead should batch fetches, got {first}");
    let before = tree.read_calls();
    assert_eq!(read_all(&fs, ino, 4096).await, data);
    assert_eq!(tree.read_calls(), before, "second read must come from the block cache");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_block_is_fetched_once_from_open_to_read() {
    let dir = tempfile::tempdir().unwrap();
    let (tree, fs) = setup(&dir.path().join("a"));
    let data = pattern(10_000);
    let ino = write_file(&fs, "small", &data).await;
    // A second mount of the same tree: nothing cached.
    let other = Fs::new(
        tree.clone(),
        MountConfig::new(dir.path().join("b")),
        tokio::runtime::Handle::current(),
    )
    .unwrap();
    let o = other.open(ino, libc::O_RDONLY).await.unwrap();
    // The open started the fetch; wait for it to land (no read has been asked for).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while tree.read_calls() == 0 || other.prefetches_in_flight() > 0 {
        assert!(std::time::Instant::now() < deadline, "open fetched nothing");
        tokio::task::yield_now().await;
    }
    assert_eq!(tree.read_calls(), 1);
    assert_eq!(other.read(o.fh, 0, 128 * 1024).await.unwrap(), data);
    other.release(o.fh).await.unwrap();
    assert_eq!(tree.read_calls(), 1, "the read found the block the open fetched");
    for _ in 0..20 {
        let o = other.open(ino, libc::O_RDONLY).await.unwrap();
        assert_eq!(other.read(o.fh, 0, 128 * 1024).await.unwrap(), data);
        other.release(o.fh).await.unwrap();
    }
    assert_eq!(tree.read_calls(), 1, "cached since: 21 opens, one fetch in all");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_writes_truncate_and_append() {
    let dir = tempfile::tempdir().unwrap();
    let (tree, fs) = setup(dir.path());
    let ino = write_file(&fs, "f", &pattern(300_000)).await;
    let mut model = pattern(300_000);

    let o = fs.open(ino, RDWR).await.unwrap();
    fs.write(o.fh, 10, b"hello").await.unwrap();
    model[10..15].copy_from_slice(b"hello");
    fs.write(o.fh, 400_000, b"tail").await.unwrap();
    model.resize(400_000, 0);
    model.extend_from_slice(b"tail");
    // Reads through another handle see the spool before the commit.
    let o2 = fs.open(ino, libc::O_RDONLY).await.unwrap();
    assert_eq!(&fs.read(o2.fh, 8, 9).await.unwrap()[..], &model[8..17]);
    fs.release(o2.fh).await.unwrap();
    assert_eq!(fs.getattr(ino).await.unwrap().size, 400_004);
    fs.release(o.fh).await.unwrap();
    assert_eq!(tree.content("f").unwrap(), model);

    truncate(&fs, ino, 5).await;
    assert_eq!(
        &tree.content("f").unwrap()[..],
        &model[..5],
        "truncate(2) without an open file commits at once"
    );

    let o = fs.open(ino, libc::O_WRONLY | libc::O_APPEND).await.unwrap();
    fs.write(o.fh, 0, b"+app").await.unwrap();
    fs.release(o.fh).await.unwrap();
    assert_eq!(
        &tree.content("f").unwrap()[..],
        [&model[..5], b"+app"].concat().as_slice()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readdir_pages_through_the_port() {
    let dir = tempfile::tempdir().unwrap();
    let tree = Arc::new(MemoryTree::new(0, 0));
    let mut cfg = MountConfig::new(dir.path());
    cfg.list_page_size = 10;
    let fs = Fs::new(tree.clone(), cfg, tokio::runtime::Handle::current()).unwrap();
    for i in 0..35 {
        fs.mkdir(ROOT_INO, OsStr::new(&format!("d{i:03}")), 0o755, ME)
            .await
            .unwrap();
    }
    let fh = fs.opendir(ROOT_INO).await.unwrap();
    let mut names = Vec::new();
    let mut off = 0;
    loop {
        let items = fs.readdir(fh, off, 7).await.unwrap();
        let Some(last) = items.last() else { break };
        off = last.next_offset;
        names.extend(items.into_iter().map(|i| i.name));
    }
    fs.releasedir(fh);
    assert_eq!(names.len(), 37);
    assert_eq!(&names[..3], [".", "..", "d000"]);
    assert_eq!(tree.list_calls(), 4, "35 entries in pages of 10");
    // What readdirplus hands the kernel: the attributes a lookup would give.
    let fh = fs.opendir(ROOT_INO).await.unwrap();
    for it in fs.readdir(fh, 2, 40).await.unwrap() {
        let a = fs.lookup(ROOT_INO, OsStr::new(&it.name)).await.unwrap();
        assert_eq!(it.attr, a, "{}", it.name);
        assert_eq!(it.ino, a.ino);
    }
    let dots = fs.readdir(fh, 0, 2).await.unwrap();
    assert_eq!((dots[0].ino, dots[0].attr.ino), (ROOT_INO, ROOT_INO));
    fs.releasedir(fh);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_in_a_busy_directory_come_from_one_listing() {
    let dir = tempfile::tempdir().unwrap();
    let tree = Arc::new(MemoryTree::new(0, 0));
    let mut cfg = MountConfig::new(dir.path());
    // Long enough that no listing expires during the test, however slow the machine.
    cfg.entry_ttl = std::time::Duration::from_secs(3600);
    cfg.list_page_size = 50;
    let fs = Fs::new(tree.clone(), cfg, tokio::runtime::Handle::current()).unwrap();
    let sub = fs.mkdir(ROOT_INO, OsStr::new("d"), 0o755, ME).await.unwrap().ino;
    let mut inos = Vec::new();
    for i in 0..200 {
        let name = format!("f{i:03}");
        // As the kernel does before each create.
        let e = fs.lookup(sub, OsStr::new(&name)).await.unwrap_err();
        assert_eq!(e.errno(), libc::ENOENT);
        let (a, o) = fs.create(sub, OsStr::new(&name), 0o644, RDWR, ME).await.unwrap();
        fs.release(o.fh).await.unwrap();
        inos.push(a.ino);
    }
    // The kernel's negative lookup before each create reaches the port (a name created
    // elsewhere must show at once), and fetches no listing: it would not have helped.
    assert_eq!((tree.lookup_calls(), tree.list_calls()), (200, 0));
    for (i, ino) in inos.iter().enumerate() {
        let a = fs.lookup(sub, OsStr::new(&format!("f{i:03}"))).await.unwrap();
        assert_eq!(a.ino, *ino);
    }
    // The first few found names at the port, then one listing (200 names in pages of 50,
    // and the empty page that ends it) answered the rest.
    assert_eq!((tree.lookup_calls() - 200, tree.list_calls()), (4, 5));
    let (lookups, lists) = (tree.lookup_calls(), tree.list_calls());
    for i in 0..200 {
        fs.lookup(sub, OsStr::new(&format!("f{i:03}"))).await.unwrap();
    }
    assert_eq!(tree.lookup_calls(), lookups, "every lookup answered by the listing");
    assert_eq!(tree.list_calls(), lists, "and no new listing was needed");
    // A name made by someone else is found although the listing does not hold it.
    let attrs = crate::port::NewAttrs {
        mode: 0o755,
        uid: 0,
        gid: 0,
    };
    let d_id = tree.lookup(crate::memory::MEMORY_ROOT_ID, "d").await.unwrap().id;
    tree.mkdir(d_id, "theirs", attrs).await.unwrap();
    fs.lookup(sub, OsStr::new("theirs")).await.unwrap();
    let e = fs.lookup(sub, OsStr::new("nothing")).await.unwrap_err();
    assert_eq!(e.errno(), libc::ENOENT);

    // This mount's own changes show at once.
    fs.unlink(sub, OsStr::new("f000")).await.unwrap();
    assert_eq!(
        fs.lookup(sub, OsStr::new("f000")).await.unwrap_err().errno(),
        libc::ENOENT
    );
    fs.rename(sub, OsStr::new("f001"), ROOT_INO, OsStr::new("moved"), 0)
        .await
        .unwrap();
    assert_eq!(
        fs.lookup(sub, OsStr::new("f001")).await.unwrap_err().errno(),
        libc::ENOENT
    );
    assert_eq!(fs.lookup(ROOT_INO, OsStr::new("moved")).await.unwrap().ino, inos[1]);
    let o = fs.open(inos[2], RDWR).await.unwrap();
    fs.write(o.fh, 0, b"hello").await.unwrap();
    fs.release(o.fh).await.unwrap();
    assert_eq!(fs.lookup(sub, OsStr::new("f002")).await.unwrap().size, 5);
    let kid = fs.mkdir(sub, OsStr::new("kid"), 0o755, ME).await.unwrap().ino;
    assert_eq!(fs.lookup(sub, OsStr::new("kid")).await.unwrap().ino, kid);
    fs.rmdir(sub, OsStr::new("kid")).await.unwrap();
    assert_eq!(
        fs.lookup(sub, OsStr::new("kid")).await.unwrap_err().errno(),
        libc::ENOENT
    );
    assert_eq!(tree.content("d/f002").unwrap(), b"hello".as_slice());
    assert!(tree.content("d/f000").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_file_keeps_what_its_open_saw_over_an_older_listing() {
    let dir = tempfile::tempdir().unwrap();
    let tree = Arc::new(MemoryTree::new(0, 0));
    let mut cfg = MountConfig::new(dir.path().join("spool"));
    cfg.entry_ttl = std::time::Duration::from_secs(3600);
    let fs = Fs::new(tree.clone(), cfg, tokio::runtime::Handle::current()).unwrap();
    let mut inos = Vec::new();
    for name in ["f", "g", "h", "i"] {
        inos.push(write_file(&fs, name, b"A").await);
    }
    // Lookups that find names at the port: the directory gets listed (with "f" = "A").
    for name in ["f", "g", "h", "i"] {
        fs.lookup(ROOT_INO, OsStr::new(name)).await.unwrap();
    }
    let lists = tree.list_calls();
    assert!(lists > 0, "the directory was listed");
    // Someone else replaces "f"; the listing still says "A".
    let src = dir.path().join("new");
    std::fs::write(&src, b"BB").unwrap();
    let f = tree.lookup(crate::memory::MEMORY_ROOT_ID, "f").await.unwrap();
    let sha1 = crate::journal::sha1_bytes(b"BB");
    let put = crate::port::PutFile {
        target: crate::port::PutTarget::Replace { id: f.id },
        source: &src,
        size: 2,
        sha1: &sha1,
        mtime_ms: 1,
    };
    tree.put_file(put).await.unwrap();
    // The open asks the port: "BB". A lookup answered by the older listing must not take
    // the open file back to "A".
    let o = fs.open(inos[0], libc::O_RDONLY).await.unwrap();
    assert_eq!(fs.lookup(ROOT_INO, OsStr::new("f")).await.unwrap().size, 2);
    assert_eq!(tree.list_calls(), lists, "answered by the listing");
    assert_eq!(fs.read(o.fh, 0, 100).await.unwrap(), b"BB".as_slice());
    let fh = fs.opendir(ROOT_INO).await.unwrap();
    let items = fs.readdir(fh, 0, 10).await.unwrap();
    let listed = items.iter().find(|it| it.name == "f").unwrap();
    assert_eq!(listed.attr.size, 2, "readdirplus too");
    fs.releasedir(fh);
    assert_eq!(fs.read(o.fh, 0, 100).await.unwrap(), b"BB".as_slice());
    fs.release(o.fh).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_listing_ttl_every_lookup_asks_the_port() {
    let dir = tempfile::tempdir().unwrap();
    let tree = Arc::new(MemoryTree::new(0, 0));
    let mut cfg = MountConfig::new(dir.path());
    cfg.entry_ttl = std::time::Duration::ZERO;
    let fs = Fs::new(tree.clone(), cfg, tokio::runtime::Handle::current()).unwrap();
    for i in 0..20 {
        fs.mkdir(ROOT_INO, OsStr::new(&format!("d{i}")), 0o755, ME)
            .await
            .unwrap();
    }
    let before = tree.lookup_calls();
    for i in 0..20 {
        fs.lookup(ROOT_INO, OsStr::new(&format!("d{i}"))).await.unwrap();
    }
    assert_eq!(tree.lookup_calls() - before, 20);
    // A change by someone else is seen by the next lookup.
    let attrs = crate::port::NewAttrs {
        mode: 0o755,
        uid: 0,
        gid: 0,
    };
    tree.mkdir(crate::memory::MEMORY_ROOT_ID, "other", attrs).await.unwrap();
    fs.lookup(ROOT_INO, OsStr::new("other")).await.unwrap();
}

/// A mount whose port takes write-behind uploads in 64 KiB chunks, from 128 KiB on.
fn setup_streams(spool: &std::path::Path) -> (Arc<MemoryTree>, Fs) {
    setup_streams_with(spool, |_| {})
}

/// A tree with write-behind in 64 KiB chunks and a mount streaming from 128 KiB, with
/// `tune` applied to the mount's settings.
fn setup_streams_with(spool: &std::path::Path, tune: impl FnOnce(&mut MountConfig)) -> (Arc<MemoryTree>, Fs) {
    let tree = Arc::new(MemoryTree::new(0, 0));
    tree.enable_streams(64 << 10);
    let mut cfg = MountConfig::new(spool);
    cfg.stream_min = 128 << 10;
    tune(&mut cfg);
    let fs = Fs::new(tree.clone(), cfg, tokio::runtime::Handle::current()).unwrap();
    (tree, fs)
}

/// A file written front to back sends its full chunks while it is written; the commit
/// sends the tail and completes the session, whose chunks are the file's bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_written_front_to_back_streams_its_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let (tree, fs) = setup_streams(dir.path());
    let data = pattern((1 << 20) + 1000);
    let ino = write_file(&fs, "big", &data).await;
    assert_eq!(tree.content("big").unwrap(), data);
    let s = tree.stream_stats();
    assert_eq!(
        (s.begun, s.committed, s.refused, s.aborted, s.open),
        (1, 1, 0, 0, 0),
        "{s:?}"
    );
    assert_eq!(
        s.chunks, 16,
        "every full chunk went through the stream, the tail with the commit"
    );
    // Small files are sent whole at close.
    write_file(&fs, "small", &pattern(100 << 10)).await;
    assert_eq!(tree.stream_stats().begun, 1);
    assert_eq!(read_all(&fs, ino, 1 << 20).await, data);
}

/// Write-behind uploads are bounded by `max_concurrent_uploads`: a file that finds no slot
/// free is sent whole at close (or streams once a slot frees), and its bytes arrive all the
/// same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_running_at_once_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (tree, fs) = setup_streams_with(dir.path(), |cfg| cfg.max_concurrent_uploads = 1);
    let (a, b) = (pattern(512 << 10), pattern(600 << 10));
    let (_, oa) = fs.create(ROOT_INO, OsStr::new("a"), 0o644, RDWR, ME).await.unwrap();
    let (_, ob) = fs.create(ROOT_INO, OsStr::new("b"), 0o644, RDWR, ME).await.unwrap();
    // Written side by side, front to back: both pass stream_min, only one may stream.
    for i in 0..10 {
        let at = i * (64 << 10);
        if let Some(c) = a.get(at..(at + (64 << 10)).min(a.len())) {
            fs.write(oa.fh, at as u64, c).await.unwrap();
        }
        if let Some(c) = b.get(at..(at + (64 << 10)).min(b.len())) {
            fs.write(ob.fh, at as u64, c).await.unwrap();
        }
    }
    assert_eq!(tree.stream_stats().begun, 1, "one slot, one stream");
    for o in [oa, ob] {
        fs.flush(o.fh).await.unwrap();
        fs.release(o.fh).await.unwrap();
    }
    assert_eq!(tree.content("a").unwrap(), a);
    assert_eq!(tree.content("b").unwrap(), b);
    // The slot is free again once its stream ended.
    write_file(&fs, "c", &pattern(300 << 10)).await;
    let s = tree.stream_stats();
    assert_eq!((s.begun, s.committed, s.open), (2, 2, 0), "{s:?}");
}

/// A write or truncate below what a stream has sent abandons it: the commit uploads the
/// file whole, with the new bytes, and never completes a session holding the old ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_streamed_bytes_abandons_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let (tree, fs) = setup_streams(dir.path());
    let mut model = pattern(512 << 10);
    let (attr, o) = fs.create(ROOT_INO, OsStr::new("f"), 0o644, RDWR, ME).await.unwrap();
    for (i, chunk) in model.chunks(64 << 10).enumerate() {
        fs.write(o.fh, (i << 16) as u64, chunk).await.unwrap();
    }
    fs.write(o.fh, 10, b"overwritten").await.unwrap();
    model[10..21].copy_from_slice(b"overwritten");
    fs.write(o.fh, model.len() as u64, b"more").await.unwrap();
    model.extend_from_slice(b"more");
    fs.flush(o.fh).await.unwrap();
    assert_eq!(tree.content("f").unwrap(), model);
    let s = tree.stream_stats();
    assert_eq!((s.begun, s.committed, s.refused), (1, 0, 0), "{s:?}");

    // Written again from the start: a new stream; then cut below what it sent.
    truncate(&fs, attr.ino, 0).await;
    let model = pattern(300 << 10);
    for (i, chunk) in model.chunks(64 << 10).enumerate() {
        fs.write(o.fh, (i << 16) as u64, chunk).await.unwrap();
    }
    truncate(&fs, attr.ino, 100).await;
    fs.release(o.fh).await.unwrap();
    assert_eq!(tree.content("f").unwrap(), &model[..100]);
    let s = tree.stream_stats();
    assert_eq!((s.begun, s.committed, s.refused), (2, 0, 0), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_mount_resumes_its_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let (tree, fs) = setup(dir.path());
    let (attr, o) = fs.create(ROOT_INO, OsStr::new("f"), 0o644, RDWR, ME).await.unwrap();
    fs.write(o.fh, 0, b"not yet uploaded").await.unwrap();
    // The process dies: no flush, no release. Only the spool directory survives.
    drop(fs);
    assert_eq!(tree.content("f").unwrap(), &b""[..]);
    let fs = Fs::new(
        tree.clone(),
        MountConfig::new(dir.path()),
        tokio::runtime::Handle::current(),
    )
    .unwrap();
    assert_eq!(fs.recover().await.unwrap(), 1);
    assert_eq!(tree.content("f").unwrap(), &b"not yet uploaded"[..]);
    assert_eq!(fs.getattr(attr.ino).await.unwrap().size, 16);
    assert_eq!(fs.recover().await.unwrap(), 0, "the journal is empty afterwards");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_upload_stays_journaled_and_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let (tree, fs) = setup(dir.path());
    let (attr, o) = fs.create(ROOT_INO, OsStr::new("f"), 0o644, RDWR, ME).await.unwrap();
    fs.write(o.fh, 0, b"v1").await.unwrap();
    tree.fail_uploads(true);
    assert_eq!(fs.flush(o.fh).await.unwrap_err().errno(), libc::EIO);
    assert!(fs.release(o.fh).await.is_err());
    tree.fail_uploads(false);
    // Reopening adopts the journaled spool; closing commits it.
    let o = fs.open(attr.ino, libc::O_RDONLY).await.unwrap();
    assert_eq!(&fs.read(o.fh, 0, 10).await.unwrap()[..], b"v1");
    fs.release(o.fh).await.unwrap();
    assert_eq!(tree.content("f").unwrap(), &b"v1"[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_map_to_the_documented_errno() {
    let dir = tempfile::tempdir().unwrap();
    let (_tree, fs) = setup(dir.path());
    fn e<T: std::fmt::Debug>(r: Result<T, crate::FsError>) -> i32 {
        r.unwrap_err().errno()
    }
    assert_eq!(e(fs.lookup(ROOT_INO, OsStr::new("nope")).await), libc::ENOENT);
    assert_eq!(
        e(fs.lookup(ROOT_INO, OsStr::new(&"x".repeat(256))).await),
        libc::ENAMETOOLONG
    );
    assert_eq!(
        e(fs.mknod(ROOT_INO, OsStr::new("fifo"), libc::S_IFIFO | 0o644, ME).await),
        libc::EPERM
    );
    let d = fs.mkdir(ROOT_INO, OsStr::new("d"), 0o755, ME).await.unwrap();
    fs.mkdir(d.ino, OsStr::new("sub"), 0o755, ME).await.unwrap();
    assert_eq!(e(fs.rmdir(ROOT_INO, OsStr::new("d")).await), libc::ENOTEMPTY);
    assert_eq!(e(fs.unlink(ROOT_INO, OsStr::new("d")).await), libc::EISDIR);
    assert_eq!(e(fs.mkdir(ROOT_INO, OsStr::new("d"), 0o755, ME).await), libc::EEXIST);
    assert_eq!(
        e(fs.rename(ROOT_INO, OsStr::new("d"), d.ino, OsStr::new("x"), 0).await),
        libc::EINVAL
    );
    write_file(&fs, "f", b"x").await;
    assert_eq!(
        e(fs.rename(ROOT_INO, OsStr::new("f"), ROOT_INO, OsStr::new("d"), 0).await),
        libc::EISDIR
    );
    assert_eq!(
        e(fs.rename(ROOT_INO, OsStr::new("d"), ROOT_INO, OsStr::new("f"), 0).await),
        libc::ENOTDIR
    );
    let noreplace = libc::RENAME_NOREPLACE;
    assert_eq!(
        e(
            fs.rename(ROOT_INO, OsStr::new("f"), d.ino, OsStr::new("sub"), noreplace)
                .await
        ),
        libc::EEXIST
    );
    assert_eq!(
        e(fs.rename(
            ROOT_INO,
            OsStr::new("f"),
            ROOT_INO,
            OsStr::new("g"),
            libc::RENAME_EXCHANGE
        )
        .await),
        libc::EINVAL
    );
}

#[test]
fn block_size_is_what_the_docs_say() {
    assert_eq!(BLOCK_SIZE, 128 * 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_without_excl_opens_a_file_made_elsewhere_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let (tree, fs) = setup(&dir.path().join("a"));
    let ino = write_file(&fs, "taken", b"theirs").await;
    // The kernel looked the name up and found it free; then another client made it. The
    // create that follows meets the name taken.
    let o_creat = libc::O_CREAT | RDWR;
    let (attr, o) = fs
        .create(ROOT_INO, OsStr::new("taken"), 0o644, o_creat, ME)
        .await
        .unwrap();
    assert_eq!(attr.ino, ino, "open(O_CREAT) opens the file that is there");
    assert_eq!(fs.read(o.fh, 0, 100).await.unwrap().as_ref(), b"theirs");
    fs.release(o.fh).await.unwrap();

    let (_, o) = fs
        .create(ROOT_INO, OsStr::new("taken"), 0o644, o_creat | libc::O_TRUNC, ME)
        .await
        .unwrap();
    fs.flush(o.fh).await.unwrap();
    fs.release(o.fh).await.unwrap();
    assert_eq!(tree.content("taken").unwrap().len(), 0, "O_TRUNC applies to it");

    let excl = fs
        .create(ROOT_INO, OsStr::new("taken"), 0o644, o_creat | libc::O_EXCL, ME)
        .await;
    assert_eq!(excl.err().map(|e| e.errno()), Some(libc::EEXIST), "O_EXCL still fails");
    fs.mkdir(ROOT_INO, OsStr::new("d"), 0o755, ME).await.unwrap();
    let on_dir = fs.create(ROOT_INO, OsStr::new("d"), 0o644, o_creat, ME).await;
    assert_eq!(on_dir.err().map(|e| e.errno()), Some(libc::EISDIR));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_changed_here_is_not_asked_for_again() {
    let dir = tempfile::tempdir().unwrap();
    let (tree, fs) = setup(dir.path());
    let d = fs.mkdir(ROOT_INO, OsStr::new("d"), 0o755, ME).await.unwrap();
    let times = |a: &crate::fs::Attr| (a.mtime, a.ctime);
    let port_times = |t: &MemoryTree| tree_times(t, "d");
    let gets = tree.get_calls();
    for i in 0..5 {
        let (_, o) = fs
            .create(d.ino, OsStr::new(&format!("f{i}")), 0o644, libc::O_CREAT | RDWR, ME)
            .await
            .unwrap();
        fs.release(o.fh).await.unwrap();
        // What the kernel asks after each create: the directory's new times, from here.
        let (a, left) = fs.getattr_for(d.ino).await.unwrap();
        assert_eq!(times(&a), port_times(&tree), "after create {i}");
        assert!(left <= fs.config().attr_ttl);
    }
    for i in 0..5 {
        fs.unlink(d.ino, OsStr::new(&format!("f{i}"))).await.unwrap();
        let (a, _) = fs.getattr_for(d.ino).await.unwrap();
        assert_eq!(times(&a), port_times(&tree), "after unlink {i}");
    }
    assert_eq!(
        tree.get_calls(),
        gets,
        "ten creates and unlinks, no getattr to the port"
    );

    // A rename drops them: the next getattr asks.
    let (_, o) = fs
        .create(d.ino, OsStr::new("r"), 0o644, libc::O_CREAT | RDWR, ME)
        .await
        .unwrap();
    fs.release(o.fh).await.unwrap();
    fs.rename(d.ino, OsStr::new("r"), ROOT_INO, OsStr::new("r2"), 0)
        .await
        .unwrap();
    let (a, _) = fs.getattr_for(d.ino).await.unwrap();
    assert_eq!(times(&a), port_times(&tree));
    assert_eq!(tree.get_calls(), gets + 1, "asked after the rename");
}

/// mtime and ctime of the directory `name` under the root, as the tree has them.
fn tree_times(t: &MemoryTree, name: &str) -> (std::time::SystemTime, std::time::SystemTime) {
    let ms = |m: i64| std::time::UNIX_EPOCH + std::time::Duration::from_millis(m as u64);
    let e = t.entry_at(name).expect("directory there");
    (ms(e.mtime_ms), ms(e.ctime_ms))
}

/// A write by a caller without CAP_FSETID through a direct-I/O handle: set-user-ID goes,
/// set-group-ID only where group execute is set, and a chmod made since the open counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unprivileged_writes_clear_set_id_bits() {
    let dir = tempfile::tempdir().unwrap();
    let (tree, fs) = setup(dir.path());
    for (mode, after) in [(0o4755, 0o755), (0o6755, 0o755), (0o2745, 0o2745), (0o644, 0o644)] {
        let name = format!("f{mode:o}");
        let (attr, o) = fs
            .create(ROOT_INO, OsStr::new(&name), mode, libc::O_WRONLY, ME)
            .await
            .unwrap();
        fs.kill_suid(o.fh).await.unwrap();
        fs.write(o.fh, 0, b"x").await.unwrap();
        assert_eq!(
            u32::from(fs.getattr(attr.ino).await.unwrap().perm) & 0o7777,
            after,
            "mode {mode:o}"
        );
        fs.release(o.fh).await.unwrap();
        let again = fs.lookup(ROOT_INO, OsStr::new(&name)).await.unwrap();
        assert_eq!(u32::from(again.perm) & 0o7777, after, "mode {mode:o} after close");
    }
    // chmod by another client while the handle is open: the handle's mode is stale.
    let (_, o) = fs
        .create(ROOT_INO, OsStr::new("g"), 0o4755, libc::O_WRONLY, ME)
        .await
        .unwrap();
    fs.flush(o.fh).await.unwrap();
    let id = tree.lookup(tree.root_id(), "g").await.unwrap().id;
    let chmod = crate::port::SetAttrs {
        mode: Some(0o4700),
        ..Default::default()
    };
    tree.set_attrs(id, chmod).await.unwrap();
    fs.kill_suid(o.fh).await.unwrap();
    fs.release(o.fh).await.unwrap();
    assert_eq!(tree.get(id).await.unwrap().mode & 0o7777, 0o700);
}
