//! Helpers shared by the FUSE tests: mount the in-memory tree in a temp dir, and make
//! sure a path really is that FUSE mount (a mount that went away silently leaves the
//! plain directory behind, and tests must never pass against it).

#![allow(dead_code)]

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use filestore_mount::memory::MemoryTree;
use filestore_mount::{mount, MountConfig, MountHandle};

/// `f_type` of every FUSE filesystem.
pub const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// The fstype /proc/self/mountinfo gives for the mount whose target is exactly `path`.
pub fn mount_fstype(path: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = path.to_str()?;
    // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
    info.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        if f.get(4) != Some(&want) {
            return None;
        }
        let dash = f.iter().position(|x| *x == "-")?;
        f.get(dash + 1).map(|s| s.to_string())
    })
}

/// Panics unless `path` is a live FUSE mount.
pub fn assert_fuse(path: &Path) {
    let fstype = mount_fstype(path).unwrap_or_default();
    assert!(
        fstype.starts_with("fuse"),
        "{} is not a FUSE mount (fstype {fstype:?})",
        path.display()
    );
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path and `st` a zeroed statfs we own.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    assert_eq!(
        unsafe { libc::statfs(c.as_ptr(), &mut st) },
        0,
        "statfs {}",
        path.display()
    );
    assert_eq!(
        st.f_type as i64,
        FUSE_SUPER_MAGIC,
        "{} is not served by FUSE",
        path.display()
    );
}

/// Waits (polling a condition, with a deadline) until `cond` holds.
pub fn wait_until(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An in-process mount of a fresh in-memory tree.
pub struct TestMount {
    pub tree: Arc<MemoryTree>,
    pub mnt: PathBuf,
    pub spool: PathBuf,
    handle: Option<MountHandle>,
    _dir: tempfile::TempDir,
}

impl TestMount {
    pub fn new() -> Self {
        Self::with(|_| {})
    }

    pub fn with(adjust: impl FnOnce(&mut MountConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("mnt");
        let spool = dir.path().join("spool");
        std::fs::create_dir(&mnt).unwrap();
        let tree = Arc::new(MemoryTree::new(0, 0));
        let mut cfg = MountConfig::new(&spool);
        adjust(&mut cfg);
        let handle = mount(tree.clone(), &mnt, cfg).expect("mount (needs root and /dev/fuse)");
        assert_fuse(&mnt);
        TestMount {
            tree,
            mnt,
            spool,
            handle: Some(handle),
            _dir: dir,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }
}

impl Drop for TestMount {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.unmount().expect("unmount");
        }
        assert!(mount_fstype(&self.mnt).is_none(), "still mounted after unmount");
    }
}

pub fn errno_of(r: std::io::Result<impl Sized>) -> i32 {
    r.map(|_| ())
        .expect_err("expected an error")
        .raw_os_error()
        .expect("an OS error")
}

pub fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}
