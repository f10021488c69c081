//! A mount process killed with SIGKILL while a file has unsaved changes: the restarted
//! mount (same spool dir) uploads them before it appears. Runs the `memmount` example as
//! a child process with an on-disk tree, so the tree survives the kill as a server would.

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{assert_fuse, cstr, mount_fstype, wait_until};

fn memmount_bin() -> PathBuf {
    // target/<profile>/deps/kill-<hash> -> target/<profile>/examples/memmount
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("examples")
        .join("memmount");
    assert!(
        bin.exists(),
        "{} missing: cargo test builds examples; run cargo build --examples",
        bin.display()
    );
    bin
}

fn start(mnt: &Path, spool: &Path, state: &Path) -> Child {
    let child = Command::new(memmount_bin())
        .arg(mnt)
        .args([
            "--spool".as_ref(),
            spool.as_os_str(),
            "--state".as_ref(),
            state.as_os_str(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the child's mount", Duration::from_secs(30), || {
        mount_fstype(mnt).is_some_and(|t| t.starts_with("fuse"))
    });
    assert_fuse(mnt);
    child
}

fn detach(mnt: &Path) {
    let c = cstr(mnt);
    // SAFETY: a valid NUL-terminated path.
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    wait_until("the mount to go away", Duration::from_secs(10), || {
        mount_fstype(mnt).is_none()
    });
}

#[test]
fn sigkill_with_dirty_files_then_restart_completes_the_upload() {
    let dir = tempfile::tempdir().unwrap();
    let (mnt, spool, state) = (
        dir.path().join("mnt"),
        dir.path().join("spool"),
        dir.path().join("state"),
    );
    fs::create_dir(&mnt).unwrap();

    let mut child = start(&mnt, &spool, &state);
    fs::write(mnt.join("committed"), b"old").unwrap();
    fs::create_dir(mnt.join("d")).unwrap();
    // Two dirty files: a new one and an existing one rewritten, both left open.
    let mut a = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(mnt.join("d/new"))
        .unwrap();
    a.write_all(b"written but never closed").unwrap();
    let mut b = OpenOptions::new().write(true).open(mnt.join("committed")).unwrap();
    b.write_all(b"NEW").unwrap();

    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    drop((a, b)); // close on a dead connection fails; nothing to flush any more
                  // The dead mount is "Transport endpoint is not connected" until cleared.
    assert_eq!(fs::metadata(&mnt).unwrap_err().raw_os_error(), Some(libc::ENOTCONN));
    detach(&mnt);

    let mut child = start(&mnt, &spool, &state);
    assert_eq!(fs::read(mnt.join("d/new")).unwrap(), b"written but never closed");
    assert_eq!(fs::read(mnt.join("committed")).unwrap(), b"NEW");
    let left: Vec<_> = fs::read_dir(&spool)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".pending") || n.ends_with(".data"))
        .collect();
    assert!(left.is_empty(), "journal not emptied: {left:?}");

    // SIGTERM unmounts cleanly.
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    assert!(mount_fstype(&mnt).is_none(), "SIGTERM must unmount");
}
