//! Mounts the in-memory test tree: for pjdfstest, fsx and the kill-and-restart test.
//!
//! ```text
//! memmount MOUNTPOINT --spool DIR [--state DIR] [--allow-other] [--default-permissions]
//!          [--attr-ttl-ms N] [--cache-mb N]
//! ```
//! `--state DIR` keeps the tree on disk, so a mount killed with SIGKILL and restarted
//! with the same `--state` and `--spool` finds its tree and its pending uploads. Runs in
//! the foreground until SIGINT/SIGTERM or `fusermount3 -u MOUNTPOINT`. Logs follow
//! `FILESTORE_LOG` (e.g. `debug`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use filestore_mount::memory::MemoryTree;
use filestore_mount::{mount, MountConfig, RemoteTree};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("FILESTORE_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("memmount: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut mountpoint = None;
    let (mut spool, mut state) = (None, None);
    let (mut allow_other, mut default_permissions) = (false, false);
    let (mut ttl_ms, mut cache_mb) = (1000u64, 256u64);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--spool" => spool = Some(PathBuf::from(value()?)),
            "--state" => state = Some(PathBuf::from(value()?)),
            "--allow-other" => allow_other = true,
            "--default-permissions" => default_permissions = true,
            "--attr-ttl-ms" => ttl_ms = value()?.parse()?,
            "--cache-mb" => cache_mb = value()?.parse()?,
            _ if !a.starts_with('-') && mountpoint.is_none() => mountpoint = Some(PathBuf::from(a)),
            _ => return Err(format!("unknown argument {a}").into()),
        }
    }
    let mountpoint = mountpoint.ok_or("usage: memmount MOUNTPOINT --spool DIR [--state DIR] ...")?;
    let spool = spool.ok_or("--spool DIR is required")?;
    // SAFETY: geteuid/getegid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let tree: Arc<dyn RemoteTree> = match state {
        Some(dir) => Arc::new(MemoryTree::persistent(&dir, uid, gid)?),
        None => Arc::new(MemoryTree::new(uid, gid)),
    };
    let mut cfg = MountConfig::new(spool);
    cfg.allow_other = allow_other;
    cfg.default_permissions = default_permissions;
    cfg.attr_ttl = Duration::from_millis(ttl_ms);
    cfg.entry_ttl = Duration::from_millis(ttl_ms);
    cfg.cache_bytes = cache_mb << 20;
    cfg.fs_name = "memmount".to_owned();
    let session = mount(tree, &mountpoint, cfg)?;
    println!(
        "mounted {} (resumed {} uploads)",
        mountpoint.display(),
        session.resumed_uploads()
    );
    session.run_until_signal()?;
    Ok(())
}
