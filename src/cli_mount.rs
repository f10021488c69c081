//! `filestore mount`: a user's tree as a local directory (FUSE), in the foreground.
//!
//! - `filestore mount --server URL MOUNTPOINT`: over the HTTP API of a remote server,
//!   with the token of `filestore login` (for that server), or `--user NAME
//!   --password-file FILE` (signs in, and again when the token expires).
//! - `filestore mount -c CONFIG --user NAME MOUNTPOINT`: directly over the database and
//!   storage of a server's configuration, on that server.
//!
//! SIGINT/SIGTERM unmount and exit. Under systemd (`Type=notify`) readiness is reported
//! once the mount is live. A mount that was killed leaves "Transport endpoint is not
//! connected" behind: `fusermount3 -u MOUNTPOINT` clears it, and the next start with the
//! same spool directory uploads what the dead one had not committed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use sha1::Digest;

use filestore::client::credentials::Credentials;
use filestore::config::Config;
use filestore::mount_port::{DriveTree, HttpAuth, HttpTree, HttpTreeOptions};
use filestore::server::Services;
use filestore_mount::{MountConfig, RemoteTree};

#[derive(Args)]
pub struct MountArgs {
    /// Where to mount (an existing directory).
    mountpoint: PathBuf,
    /// Server URL (e.g. https://drive.example.org): mount its tree over the HTTP API.
    /// Without it, the tree is mounted directly from this machine's configuration (-c),
    /// which needs --user.
    #[arg(long)]
    server: Option<String>,
    /// Whose tree. With --server: sign in as this user with --password-file (default: the
    /// saved token of `filestore login`).
    #[arg(long)]
    user: Option<String>,
    /// File whose first line is the password (with --server and --user).
    #[arg(long, requires = "user", requires = "server")]
    password_file: Option<PathBuf>,
    #[command(flatten)]
    options: MountOptions,
}

#[derive(Args)]
#[command(next_help_heading = "Mount options")]
struct MountOptions {
    /// Let other local users use the mount (FUSE allow_other; for non-root mounts
    /// /etc/fuse.conf must say user_allow_other). Permissions are checked by the kernel
    /// against the mode bits either way.
    #[arg(long)]
    allow_other: bool,
    /// Memory for the block cache of file contents (e.g. 256MiB, 1GiB; 0 disables it).
    #[arg(long, default_value = "256MiB", value_parser = parse_bytes)]
    cache_bytes: u64,
    /// Directory for the write-back spool and upload journal; must survive restarts (not
    /// tmpfs) for a killed mount's changes to be uploaded when it starts again. Default:
    /// under the user's cache dir (remote), or the data dir (local), one per mount.
    #[arg(long)]
    spool_dir: Option<PathBuf>,
    /// Keep whole file contents (of 1 MiB and more) on disk, up to this many bytes (e.g.
    /// 20GiB; 0 for no disk cache): files written through the mount and files read
    /// front to back are then read again without the server. As root the kernel reads
    /// them itself (FUSE passthrough); see docs/SEMANTICS.md.
    #[arg(long, default_value = "0", value_parser = parse_bytes)]
    disk_cache: u64,
    /// Directory of the disk cache. Default: beside the spool directory, named after it
    /// with `.content` appended.
    #[arg(long)]
    disk_cache_dir: Option<PathBuf>,
    /// Free space the disk cache leaves on its file system: it evicts, or stores
    /// nothing, rather than go below.
    #[arg(long, default_value = "1GiB", value_parser = parse_bytes)]
    disk_cache_min_free: u64,
    /// Serve reads from the disk cache in the mount process, never by kernel passthrough
    /// (which refuses to open a file for writing while it is open for reading from the
    /// disk cache).
    #[arg(long)]
    no_passthrough: bool,
    /// Most bytes the files open for writing may hold in the spool (ENOSPC beyond).
    #[arg(long, default_value = "10GiB", value_parser = parse_bytes)]
    max_spool_bytes: u64,
    /// How long failures that a retry may cure (server or database restarting) are
    /// retried before an operation fails with EIO.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    retry_secs: u64,
}

/// `123`, `64KiB`, `256MiB`, `10GiB`, `1T`... (binary multiples).
fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a size"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => return Err(format!("unknown unit `{other}` in `{s}` (use KiB, MiB, GiB, TiB)")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("`{s}` is too large"))
}

/// A spool directory name for this mount: readable, and unique per (source, user,
/// mountpoint) so that one mount's journal is never replayed against another tree.
fn spool_name(source: &str, user: &str, mountpoint: &Path) -> String {
    let mp = mountpoint.display().to_string();
    let readable: String = mp
        .trim_matches('/')
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(64)
        .collect();
    let digest = sha1::Sha1::digest(format!("{source}\n{user}\n{mp}").as_bytes());
    format!("{user}-{readable}-{}", &hex::encode(digest)[..12])
}

fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(d));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache"))
}

fn read_password(file: &Path) -> Result<String> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading the password from {}", file.display()))?;
    let pw = text.lines().next().unwrap_or("").to_string();
    if pw.is_empty() {
        bail!("{} holds no password", file.display());
    }
    Ok(pw)
}

/// Runs `filestore mount` until SIGINT/SIGTERM or an unmount from outside.
pub async fn run(args: &MountArgs, config: Option<&Path>, data_dir: Option<&Path>) -> Result<()> {
    // Cache blocks are allocated on one thread and freed on another. With glibc's default
    // of up to 8 arenas per core each thread's arena kept the blocks freed into it, and a
    // 256 MiB block cache held 600 MiB resident (bench/results/mount-2026-11-27-1108.md);
    // the threads started from here on share two arenas.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator (under its own lock).
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let mountpoint =
        std::fs::canonicalize(&args.mountpoint).with_context(|| format!("mountpoint {}", args.mountpoint.display()))?;
    if !mountpoint.is_dir() {
        bail!("mountpoint {} is not a directory", mountpoint.display());
    }
    let o = &args.options;
    let retry_for = Duration::from_secs(o.retry_secs);
    let (port, fs_name, default_spool): (Arc<dyn RemoteTree>, String, Option<PathBuf>) = match &args.server {
        Some(server) => {
            let server = server.trim_end_matches('/').to_string();
            let (auth, user) = match (&args.user, &args.password_file) {
                (Some(user), Some(file)) => (
                    HttpAuth::Password {
                        user: user.clone(),
                        password: read_password(file)?,
                    },
                    user.clone(),
                ),
                (Some(_), None) => bail!(
                    "--user with --server needs --password-file (or sign in with `filestore login` and omit --user)"
                ),
                _ => {
                    let c = Credentials::load()?
                        .context("not signed in: run `filestore login --server URL --user NAME`, or give --user and --password-file")?;
                    if c.server.trim_end_matches('/') != server {
                        bail!(
                            "the saved token is for {}, not {server}: run `filestore login --server {server} --user NAME`, or give --user and --password-file",
                            c.server
                        );
                    }
                    (HttpAuth::Token(c.token), c.user)
                }
            };
            let opts = HttpTreeOptions {
                retry_for,
                ..HttpTreeOptions::default()
            };
            let tree = HttpTree::connect(&server, auth, opts)
                .await
                .with_context(|| format!("connecting to {server}"))?;
            let spool = cache_dir().map(|d| {
                d.join("filestore")
                    .join("mount")
                    .join(spool_name(&server, &user, &mountpoint))
            });
            (Arc::new(tree), format!("filestore:{user}@{server}"), spool)
        }
        None => {
            let user = args
                .user
                .as_deref()
                .context("give --server URL to mount a remote tree, or --user NAME (with -c CONFIG) to mount one of this server's users")?;
            let mut cfg = Config::load(config, std::env::vars()).context("loading the configuration")?;
            if let Some(d) = data_dir {
                cfg.data_dir = d.display().to_string();
            }
            let services = Services::open(&cfg).await?;
            let u = services
                .meta
                .user_by_name(user)
                .await?
                .with_context(|| format!("no user {user}"))?;
            if u.disabled {
                bail!("user {user} is disabled");
            }
            let tree = DriveTree::new(services.drive.clone(), u).await?.retry_for(retry_for);
            let source = std::fs::canonicalize(cfg.data_dir()).unwrap_or_else(|_| cfg.data_dir());
            let spool =
                cfg.data_dir()
                    .join("mount-spool")
                    .join(spool_name(&source.display().to_string(), user, &mountpoint));
            (Arc::new(tree), format!("filestore:{user}"), Some(spool))
        }
    };
    let spool_dir = match (&o.spool_dir, default_spool) {
        (Some(d), _) => d.clone(),
        (None, Some(d)) => d,
        (None, None) => bail!("no cache dir (HOME is not set): give --spool-dir"),
    };
    std::fs::create_dir_all(&spool_dir).with_context(|| format!("spool directory {}", spool_dir.display()))?;
    let mut cfg = MountConfig::new(&spool_dir);
    cfg.allow_other = o.allow_other;
    // The kernel checks permissions against the mode bits (the server only knows that the
    // whole tree is this user's).
    cfg.default_permissions = true;
    cfg.cache_bytes = o.cache_bytes;
    cfg.max_spool_bytes = o.max_spool_bytes;
    if o.disk_cache > 0 {
        let dir = match &o.disk_cache_dir {
            Some(d) => d.clone(),
            None => {
                let mut name = spool_dir.file_name().unwrap_or_default().to_owned();
                name.push(".content");
                spool_dir.with_file_name(name)
            }
        };
        cfg.disk_cache_dir = Some(dir);
        cfg.disk_cache_bytes = o.disk_cache;
        cfg.disk_cache_min_free = o.disk_cache_min_free;
        cfg.passthrough = !o.no_passthrough;
    }
    cfg.fs_name = fs_name;
    let mp = mountpoint.clone();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let handle = filestore_mount::mount(port, &mp, cfg)?;
        println!(
            "filestore: mounted at {} (spool {}; {} pending uploads completed)",
            mp.display(),
            spool_dir.display(),
            handle.resumed_uploads()
        );
        filestore::systemd::notify(&format!("READY=1\nSTATUS=mounted at {}", mp.display()));
        let detacher = tokio::runtime::Handle::current().spawn(detach_on_signal(mp.clone()));
        let result = handle.run_until_signal();
        detacher.abort();
        filestore::systemd::notify("STOPPING=1");
        match result {
            Ok(()) => {}
            // Our lazy detach got there first; the session ended once the last file closed.
            Err(e) if !filestore_mount::is_mounted(&mp) => tracing::debug!(error = %e, "unmount after the detach"),
            Err(e) => return Err(e.into()),
        }
        println!("filestore: unmounted {}", mp.display());
        Ok(())
    })
    .await
    .context("the mount thread failed")??;
    Ok(())
}

/// On SIGINT/SIGTERM, detaches the mount lazily at once, from this task: the mount
/// crate's shutdown does the same, but only after its own signal handling has run.
/// After a lazy detach the tree is gone from the namespace and the session ends when the
/// last open file closes (changes not committed by then stay in the spool's journal).
async fn detach_on_signal(mountpoint: PathBuf) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    filestore_mount::detach_lazily(&mountpoint);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("0"), Ok(0));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("64KiB"), Ok(64 << 10));
        assert_eq!(parse_bytes("256MiB"), Ok(256 << 20));
        assert_eq!(parse_bytes("10G"), Ok(10 << 30));
        assert!(parse_bytes("ten").is_err());
        assert!(parse_bytes("1PB").is_err());
    }

    #[test]
    fn spool_names() {
        let a = spool_name("http://a", "alice", Path::new("/mnt/drive"));
        assert!(a.starts_with("alice-mnt-drive-"), "{a}");
        assert_ne!(a, spool_name("http://b", "alice", Path::new("/mnt/drive")));
        assert_ne!(a, spool_name("http://a", "bob", Path::new("/mnt/drive")));
    }
}
