//! FUSE adapter for filestore: mounts a remote file tree as a local directory.
//!
//! The crate depends on nothing of the filestore core (the core depends on it). It defines
//! the port it needs, [`RemoteTree`], and adapts [fuser] over it with a block cache,
//! read-ahead, and write-back on close through a crash-safe spool. The core implements the
//! port over its HTTP API (remote mount) and over its namespace (local mount) and calls
//! [`mount`]. The in-memory implementation used by the tests ships behind the `memory`
//! feature and is hidden from the docs.
//!
//! ```no_run
//! # fn port() -> std::sync::Arc<dyn filestore_mount::RemoteTree> { unimplemented!() }
//! let config = filestore_mount::MountConfig::new("/var/cache/filestore/spool");
//! let session = filestore_mount::mount(port(), "/mnt/drive", config)?;
//! session.run_until_signal()?; // SIGINT/SIGTERM, or `fusermount3 -u /mnt/drive`
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Semantics (consistency, errno per unsupported operation, pjdfstest results) are in
//! `docs/SEMANTICS.md`. A mount whose process died leaves "Transport endpoint is not
//! connected" behind: `fusermount3 -u MOUNTPOINT` (or `umount -l`) clears it, and the next
//! mount with the same spool directory uploads what the dead one had not committed.

#![deny(clippy::undocumented_unsafe_blocks)]

mod cache;
mod config;
mod dirattrs;
mod dircache;
mod disk;
mod fs;
mod fuse;
mod iomode;
mod journal;
#[cfg(feature = "memory")]
#[doc(hidden)]
pub mod memory;
pub mod port;
#[cfg(all(test, feature = "memory"))]
mod tests;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use fuser::{MountOption, SessionACL, SessionUnmounter};
use tokio::runtime::{Handle, Runtime};
use tracing::info;

pub use cache::BLOCK_SIZE;
pub use config::MountConfig;
pub use fs::FsError;
pub use port::{
    BoxError, Entry, EntryKind, FsStats, NewAttrs, PortError, PutFile, PutTarget, RemoteTree, RenameMode, SetAttrs,
    StreamEnd, StreamSession, EMPTY_SHA1,
};

/// Why a mount could not start.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The spool directory cannot be used (missing permissions, or another mount holds it).
    #[error("spool directory {path}: {source}")]
    Spool {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The kernel refused the mount (no /dev/fuse, not permitted, not a directory...).
    #[error("cannot mount {path}: {source}")]
    Mount {
        /// The mountpoint.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Starting the runtime or a thread failed.
    #[error("cannot start: {0}")]
    Start(#[source] io::Error),
}

/// A live mount. Dropping it unmounts (lazily, `MNT_DETACH`, so busy files don't block it)
/// and waits for the FUSE session to end.
pub struct MountHandle {
    mountpoint: PathBuf,
    unmounter: Option<SessionUnmounter>,
    thread: Option<JoinHandle<io::Result<()>>>,
    done: tokio::sync::watch::Receiver<bool>,
    rt: Handle,
    resumed: usize,
    // Declared last: dropped after the session thread has been joined.
    _own_rt: Option<Runtime>,
}

impl std::fmt::Debug for MountHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountHandle")
            .field("mountpoint", &self.mountpoint)
            .finish_non_exhaustive()
    }
}

/// Mounts `port` at `mountpoint` and serves it on background threads until the returned
/// handle is dropped, [`MountHandle::unmount`]ed, or the mount is removed from outside.
///
/// Before mounting it uploads what a previous run left in `config.spool_dir` (pending
/// writes of a killed mount), so the tree is up to date when the mount appears.
///
/// Call it from synchronous code: outside any tokio runtime (it then starts its own), or
/// from `tokio::task::spawn_blocking` in a multi-thread runtime (whose handle it then
/// uses; the port's futures run there). It must not be called from an async task.
pub fn mount(
    port: Arc<dyn RemoteTree>,
    mountpoint: impl AsRef<Path>,
    config: MountConfig,
) -> Result<MountHandle, MountError> {
    let mountpoint = mountpoint.as_ref().to_owned();
    let (own_rt, rt) = match Handle::try_current() {
        Ok(h) => (None, h),
        Err(_) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("filestore-mount")
                .enable_all()
                .build()
                .map_err(MountError::Start)?;
            let h = rt.handle().clone();
            (Some(rt), h)
        }
    };
    let spool_err = |source| MountError::Spool {
        path: config.spool_dir.clone(),
        source,
    };
    let fs = Arc::new(fs::Fs::new(port, config.clone(), rt.clone()).map_err(spool_err)?);
    let resumed = rt.block_on(fs.recover()).map_err(spool_err)?;

    let mut options = vec![
        MountOption::FSName(config.fs_name.clone()),
        MountOption::Subtype("filestore".to_owned()),
        MountOption::NoDev,
        MountOption::RW,
    ];
    if config.default_permissions {
        options.push(MountOption::DefaultPermissions);
    }
    // AutoUnmount is deliberately not used: with fuser 0.18.0 unmounting from inside the
    // process then hangs (fuser issue 407); we unmount ourselves on drop and on signals.
    let mut fcfg = fuser::Config::default();
    fcfg.mount_options = options;
    fcfg.acl = if config.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    fcfg.n_threads = Some(config.threads.max(1));

    let adapter = fuse::FuseFs::new(fs, rt.clone());
    let mut session = fuser::Session::new(adapter, &mountpoint, &fcfg).map_err(|source| MountError::Mount {
        path: mountpoint.clone(),
        source,
    })?;
    let unmounter = session.unmount_callable();
    let (done_tx, done) = tokio::sync::watch::channel(false);
    let thread = std::thread::Builder::new()
        .name("fuse-session".to_owned())
        .spawn(move || {
            let r = session.run();
            let _ = done_tx.send(true);
            r
        })
        .map_err(MountError::Start)?;
    if config.kernel_read_ahead > 0 {
        set_kernel_read_ahead(&mountpoint, config.kernel_read_ahead);
    }
    info!(mountpoint = %mountpoint.display(), resumed, "mounted");
    Ok(MountHandle {
        mountpoint,
        unmounter: Some(unmounter),
        thread: Some(thread),
        done,
        rt,
        resumed,
        _own_rt: own_rt,
    })
}

/// Sets the read-ahead of the mount's backing device (`/sys/class/bdi/MAJ:MIN`), found in
/// /proc/self/mountinfo so that nothing asks the FUSE session, which may not run yet.
/// Failure (not root, no sysfs) only costs speed.
fn set_kernel_read_ahead(mountpoint: &Path, bytes: u64) {
    let want = mountpoint.display().to_string();
    let dev = std::fs::read_to_string("/proc/self/mountinfo").ok().and_then(|info| {
        info.lines().rev().find_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.get(4).map(|m| m.replace("\\040", " ")) == Some(want.clone())).then(|| f[2].to_owned())
        })
    });
    let Some(dev) = dev else {
        tracing::debug!(mountpoint = %want, "not in mountinfo: kernel read-ahead left as is");
        return;
    };
    let path = format!("/sys/class/bdi/{dev}/read_ahead_kb");
    match std::fs::write(&path, format!("{}\n", bytes.div_ceil(1024))) {
        Ok(()) => tracing::debug!(path, bytes, "kernel read-ahead set"),
        Err(e) => tracing::debug!(path, error = %e, "kernel read-ahead left as is"),
    }
}

impl MountHandle {
    /// Where the tree is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// How many pending uploads of a previous run were completed before mounting.
    pub fn resumed_uploads(&self) -> usize {
        self.resumed
    }

    /// Serves until SIGINT or SIGTERM (then unmounts) or until the mount is removed from
    /// outside (`fusermount3 -u`, `umount`). The foreground mode for systemd.
    pub fn run_until_signal(mut self) -> io::Result<()> {
        let mut done = self.done.clone();
        self.rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = signal(SignalKind::terminate())?;
            let mut int = signal(SignalKind::interrupt())?;
            tokio::select! {
                _ = term.recv() => info!("SIGTERM: unmounting"),
                _ = int.recv() => info!("SIGINT: unmounting"),
                _ = done.wait_for(|d| *d) => info!("unmounted from outside"),
            }
            Ok::<_, io::Error>(())
        })?;
        self.shutdown()
    }

    /// Blocks until the mount is removed from outside.
    pub fn join(mut self) -> io::Result<()> {
        let mut done = self.done.clone();
        let _ = self.rt.block_on(done.wait_for(|d| *d));
        self.shutdown()
    }

    /// Unmounts and waits for the session to end.
    pub fn unmount(mut self) -> io::Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> io::Result<()> {
        let mut result = Ok(());
        if let Some(mut u) = self.unmounter.take() {
            if !*self.done.borrow() {
                // fuser's unmount is a plain umount(2): with a file open it fails with
                // EBUSY and the session then runs forever. Detached lazily, the tree
                // leaves the namespace at once and the session ends when the last open
                // file closes (changes not committed by then stay in the journal).
                detach_lazily(&self.mountpoint);
                if is_mounted(&self.mountpoint) {
                    result = u.unmount();
                }
            }
        }
        if let Some(t) = self.thread.take() {
            let joined = t.join().map_err(|_| io::Error::other("FUSE session thread panicked"))?;
            result = result.and(joined);
        }
        result
    }
}

/// Detaches the mount at `mountpoint` lazily: `umount2(MNT_DETACH)`, or, when that is not
/// permitted (not root), `fusermount3 -u -z`.
pub fn detach_lazily(mountpoint: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(mountpoint.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: a valid NUL-terminated path; umount2 touches no memory of ours.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        let _ = std::process::Command::new("fusermount3")
            .args(["-u", "-z", "-q", "--"])
            .arg(mountpoint)
            .status();
    }
}

/// Whether `path` is a mount point (in /proc/self/mountinfo).
pub fn is_mounted(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.display().to_string();
    info.lines().any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

impl Drop for MountHandle {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::warn!(mountpoint = %self.mountpoint.display(), error = %e, "unmount failed");
        }
    }
}
