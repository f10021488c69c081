//! `filestore mount` for real: the `filestore` binary serves, the `filestore` binary mounts
//! (FUSE, through the kernel), and the tests use the mount with `std::fs` and `libc` while
//! checking the server's side through the JSON API.
//!
//! Needs root, `/dev/fuse` and `fusermount3`; every test fails loudly without them, and
//! checks that its mountpoint really is the FUSE mount (never the directory beneath).
//! Synchronisation is by conditions with deadlines, never by sleeping.

mod common;

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Backend, TestDb};
use filestore::client::api::{Client, ClientError, RemoteEntry};
use sha1::Digest;

const BIN: &str = env!("CARGO_BIN_EXE_filestore");
const PASSWORD: &str = "correct horse battery";
/// `f_type` of every FUSE filesystem.
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

// ---- environment checks ---------------------------------------------------------------

/// The tests of this file run one at a time. A process holding a file of a FUSE mount
/// open flushes it whenever a child it forks execs (closing its copy of the descriptor),
/// and this mount commits on flush: a test that starts a process must not make another
/// test's files commit (the killed-mount test needs them uncommitted), nor wait for them
/// to commit against a server that is down.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn require_fuse() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: the mount tests need FUSE (modprobe fuse; in a container, --device /dev/fuse)"
    );
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("fusermount3").is_file()))
        .unwrap_or(false);
    assert!(found, "fusermount3 is missing: apt-get install fuse3");
    // SAFETY: geteuid cannot fail and touches no memory.
    assert_eq!(unsafe { libc::geteuid() }, 0, "the mount tests need root");
}

/// The fstype /proc/self/mountinfo gives for the mount whose target is exactly `path`.
fn mount_fstype(path: &Path) -> Option<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = path.to_str()?;
    info.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        if f.get(4) != Some(&want) {
            return None;
        }
        let dash = f.iter().position(|x| *x == "-")?;
        f.get(dash + 1).map(|s| s.to_string())
    })
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// Panics unless `path` is a live FUSE mount.
fn assert_fuse(path: &Path) {
    let fstype = mount_fstype(path).unwrap_or_default();
    assert!(
        fstype.starts_with("fuse"),
        "{} is not a FUSE mount (fstype {fstype:?})",
        path.display()
    );
    let c = cstr(path);
    // SAFETY: a valid NUL-terminated path and a zeroed statfs we own.
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

/// Polls `cond` until it holds, failing after `deadline`.
fn wait_until(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn errno<T: std::fmt::Debug>(r: std::io::Result<T>) -> i32 {
    r.expect_err("expected an error").raw_os_error().expect("an OS error")
}

fn sha1_hex(b: &[u8]) -> String {
    hex::encode(sha1::Sha1::digest(b))
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
fn pattern(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

// ---- the server -----------------------------------------------------------------------

/// `filestore serve` on a data dir (and a database), restartable on the same port.
struct Server {
    data: PathBuf,
    env: Vec<(String, String)>,
    addr: Option<String>,
    child: Option<Child>,
    base: String,
    runs: usize,
}

impl Server {
    fn start(data: &Path, env: &[(&str, &str)]) -> Server {
        let mut s = Server {
            data: data.to_path_buf(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            addr: None,
            child: None,
            base: String::new(),
            runs: 0,
        };
        s.spawn();
        s
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("FILESTORE_DATA_DIR", &self.data)
            .env("FILESTORE_LOG", "warn")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        c
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none());
        fs::create_dir_all(&self.data).unwrap();
        self.runs += 1;
        let out = self.data.join(format!("serve-{}.log", self.runs));
        let f = File::create(&out).unwrap();
        let listen = self.addr.clone().unwrap_or_else(|| "127.0.0.1:0".into());
        let child = self
            .cmd()
            .args(["serve", "--listen", &listen])
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("spawn filestore serve");
        // Kept in `self` at once, so that a panic below still kills it (Drop).
        self.child = Some(child);
        let mut url = None;
        wait_until("the server to announce its URL", Duration::from_secs(120), || {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "filestore serve exited ({st}): {}",
                    fs::read_to_string(&out).unwrap_or_default()
                );
            }
            url = fs::read_to_string(&out).ok().and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("filestore: serving "))
                    .map(|u| u.trim_end_matches('/').to_string())
            });
            url.is_some()
        });
        self.base = url.unwrap();
        self.addr = Some(self.base.trim_start_matches("http://").to_string());
    }

    /// SIGKILL: a crash, as far as clients can tell.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    fn add_user(&self, name: &str) {
        let mut c = self
            .cmd()
            .args(["user", "add", name, "--password-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        c.stdin
            .take()
            .unwrap()
            .write_all(format!("{PASSWORD}\n").as_bytes())
            .unwrap();
        assert!(c.wait().unwrap().success(), "user add {name}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---- the JSON API side ----------------------------------------------------------------

/// The server's view, through the library's HTTP client.
struct Api {
    rt: tokio::runtime::Runtime,
    c: Client,
}

impl Api {
    fn new(base: &str, user: &str) -> Api {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (token, _) = rt
            .block_on(Client::new(base, None).unwrap().signin(user, PASSWORD))
            .expect("sign in");
        Api {
            c: Client::new(base, Some(token)).unwrap(),
            rt,
        }
    }

    fn stat(&self, path: &str) -> Option<RemoteEntry> {
        match self.rt.block_on(self.c.stat(path)) {
            Ok(e) => Some(e),
            Err(ClientError::Api { status: 404, .. }) => None,
            Err(e) => panic!("stat {path}: {e}"),
        }
    }

    fn bytes(&self, path: &str) -> Vec<u8> {
        self.rt
            .block_on(async {
                let r = self.c.get(path, 0, None).await?;
                Ok::<_, ClientError>(r.bytes().await.map_err(ClientError::from)?.to_vec())
            })
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    fn put(&self, path: &str, data: &[u8]) -> RemoteEntry {
        let body = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(data))]);
        self.rt
            .block_on(self.c.put(path, body, data.len() as u64, true))
            .unwrap_or_else(|e| panic!("PUT {path}: {e}"))
    }

    fn names(&self, dir: &str) -> Vec<String> {
        let list = self.rt.block_on(self.c.list(dir)).unwrap();
        list.into_iter().map(|e| e.name).collect()
    }

    fn remove(&self, path: &str) {
        self.rt.block_on(self.c.remove(path, true)).unwrap();
    }

    fn mkdir(&self, path: &str) {
        self.rt.block_on(self.c.mkdir(path, true)).unwrap();
    }
}

// ---- the mount ------------------------------------------------------------------------

/// A `filestore mount` process.
struct Mount {
    mnt: PathBuf,
    spool: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    runs: usize,
}

impl Mount {
    /// `filestore mount --server URL --user NAME --password-file F --spool-dir S MNT`.
    fn remote(dir: &Path, name: &str, server: &Server, user: &str, extra: &[&str]) -> Mount {
        let pw = dir.join("password");
        fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
        let mut args: Vec<String> = ["mount", "--server", &server.base, "--user", user, "--password-file"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(pw.display().to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        Mount::start(dir, name, args, vec![])
    }

    /// `filestore mount -c CONFIG --user NAME --spool-dir S MNT` (directly on the server).
    fn local(dir: &Path, name: &str, config: &Path, user: &str) -> Mount {
        let args = ["mount", "-c", &config.display().to_string(), "--user", user]
            .iter()
            .map(|s| s.to_string())
            .collect();
        Mount::start(dir, name, args, vec![])
    }

    fn start(dir: &Path, name: &str, args: Vec<String>, env: Vec<(String, String)>) -> Mount {
        let mnt = dir.join(name);
        fs::create_dir_all(&mnt).unwrap();
        let mut m = Mount {
            spool: dir.join(format!("{name}.spool")),
            log: PathBuf::new(),
            mnt,
            args,
            env,
            child: None,
            runs: 0,
        };
        m.spawn();
        m
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none());
        self.runs += 1;
        self.log = self.spool.with_extension(format!("log{}", self.runs));
        let f = File::create(&self.log).unwrap();
        let child = Command::new(BIN)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("FILESTORE_LOG", "info,fuser=error")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .args(&self.args)
            .arg("--spool-dir")
            .arg(&self.spool)
            .arg(&self.mnt)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("spawn filestore mount");
        self.child = Some(child);
        let mnt = self.mnt.clone();
        wait_until("the mount to appear", Duration::from_secs(60), || {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("filestore mount exited ({st}): {}", self.log_text());
            }
            self.log_text().contains("filestore: mounted at") && mount_fstype(&mnt).is_some()
        });
        assert_fuse(&self.mnt);
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: sending a signal to our own child process.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// SIGTERM: unmounts and exits cleanly.
    fn stop(&mut self) {
        self.signal(libc::SIGTERM);
        if self.child.is_some() {
            let mut st = None;
            // On a timeout the child stays in `self`, and Drop kills it.
            wait_until(
                "the mount process to exit after SIGTERM",
                Duration::from_secs(30),
                || {
                    st = self.child.as_mut().and_then(|c| c.try_wait().unwrap());
                    st.is_some()
                },
            );
            self.child = None;
            let st = st.unwrap();
            assert!(st.success(), "filestore mount exit {st}: {}", self.log_text());
        }
        assert!(mount_fstype(&self.mnt).is_none(), "SIGTERM must unmount");
    }

    /// SIGKILL: the mountpoint is left as "Transport endpoint is not connected".
    fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        if let Some(mut c) = self.child.take() {
            c.wait().unwrap();
        }
        assert_eq!(
            fs::metadata(&self.mnt).unwrap_err().raw_os_error(),
            Some(libc::ENOTCONN),
            "a killed mount leaves 'Transport endpoint is not connected'"
        );
    }

    /// The documented recovery after a crash: `fusermount3 -u MOUNTPOINT`.
    fn clear_dead_mount(&mut self) {
        let st = Command::new("fusermount3").arg("-u").arg(&self.mnt).status().unwrap();
        assert!(st.success(), "fusermount3 -u clears a dead mount");
        assert!(mount_fstype(&self.mnt).is_none());
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: sending a signal to our own child process.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let end = Instant::now() + Duration::from_secs(20);
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if mount_fstype(&self.mnt).is_some() {
            let c = cstr(&self.mnt);
            // SAFETY: a valid NUL-terminated path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// A server with a user, its database, and a scratch directory for mounts.
struct Env {
    rt: tokio::runtime::Runtime,
    db: Option<TestDb>,
    server: Server,
    dir: PathBuf,
}

impl Env {
    fn new(backend: Backend) -> Option<Env> {
        Env::with(backend, &[])
    }

    /// Like `new`, with more `FILESTORE_*` settings for the server.
    fn with(backend: Backend, server_env: &[(String, String)]) -> Option<Env> {
        require_fuse();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let db = rt.block_on(TestDb::new(backend))?;
        let dir = db.dir.path().to_path_buf();
        let url = db.url.clone();
        let mut senv: Vec<(&str, &str)> = vec![("FILESTORE_DATABASE__URL", &url)];
        senv.extend(server_env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let server = Server::start(&dir.join("data"), &senv);
        server.add_user("alice");
        Some(Env {
            rt,
            db: Some(db),
            server,
            dir,
        })
    }

    fn api(&self) -> Api {
        Api::new(&self.server.base, "alice")
    }

    fn mount(&self, name: &str, extra: &[&str]) -> Mount {
        Mount::remote(&self.dir, name, &self.server, "alice", extra)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.server.kill();
        if let Some(db) = self.db.take() {
            self.rt.block_on(db.cleanup());
        }
    }
}

// ---- tests ----------------------------------------------------------------------------

/// Every operation of the mount through the kernel, checked against the server.
fn every_operation(backend: Backend) {
    let _serial = serial();
    let Some(env) = Env::new(backend) else { return };
    let api = env.api();
    let mut m = env.mount("m", &[]);
    let p = |rel: &str| m.path(rel);

    // mkdir, lookup, getattr.
    fs::create_dir(p("docs")).unwrap();
    let md = fs::metadata(p("docs")).unwrap();
    assert!(md.is_dir());
    assert_eq!(md.permissions().mode() & 0o7777, 0o755 & !umask());
    assert!(api.stat("/docs").unwrap().is_dir());
    assert_eq!(errno(fs::metadata(p("docs/missing"))), libc::ENOENT);

    // create, write, flush (close): committed when close returns, visible to the API.
    fs::write(p("docs/a.txt"), b"hello").unwrap();
    assert_eq!(api.bytes("/docs/a.txt"), b"hello");
    assert_eq!(fs::read(p("docs/a.txt")).unwrap(), b"hello");
    let ino = fs::metadata(p("docs/a.txt")).unwrap().ino();
    assert_eq!(
        api.stat("/docs/a.txt").unwrap().id as u64,
        ino,
        "inode numbers are entry ids"
    );

    // Names that need escaping in URLs.
    let odd = "spaced é #?%&+.txt";
    fs::write(p(&format!("docs/{odd}")), b"odd").unwrap();
    assert_eq!(api.bytes(&format!("/docs/{odd}")), b"odd");
    assert!(fs::read_dir(p("docs")).unwrap().any(|e| e.unwrap().file_name() == odd));
    fs::remove_file(p(&format!("docs/{odd}"))).unwrap();

    // open + random write + read-your-writes; fsync commits; release.
    let f = OpenOptions::new().read(true).write(true).open(p("docs/a.txt")).unwrap();
    f.write_at(b"J", 0).unwrap();
    let mut buf = [0u8; 5];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"Jello");
    assert_eq!(api.bytes("/docs/a.txt"), b"hello", "not committed before fsync/close");
    f.sync_all().unwrap();
    assert_eq!(
        api.bytes("/docs/a.txt"),
        b"Jello",
        "fsync returns once the server committed"
    );
    drop(f);
    // Append.
    let mut f = OpenOptions::new().append(true).open(p("docs/a.txt")).unwrap();
    f.write_all(b" world").unwrap();
    drop(f);
    assert_eq!(api.bytes("/docs/a.txt"), b"Jello world");
    assert_eq!(
        fs::metadata(p("docs/a.txt")).unwrap().ino(),
        ino,
        "a rewrite keeps the inode"
    );

    // A write-only handle writes around the page cache (FOPEN_DIRECT_IO): a handle that
    // read, and so cached, the file before still reads what it wrote.
    let reader = File::open(p("docs/a.txt")).unwrap();
    let mut seen = Vec::new();
    (&reader).read_to_end(&mut seen).unwrap();
    assert_eq!(seen, b"Jello world");
    let writer = OpenOptions::new().write(true).open(p("docs/a.txt")).unwrap();
    writer.write_at(b"Y", 0).unwrap();
    let mut first = [0u8; 5];
    reader.read_exact_at(&mut first, 0).unwrap();
    assert_eq!(&first, b"Yello", "a cached reader reads a direct write");
    drop(writer);
    assert_eq!(api.bytes("/docs/a.txt"), b"Yello world");
    drop(reader);
    // Back as it was, for what follows.
    let writer = OpenOptions::new().write(true).open(p("docs/a.txt")).unwrap();
    writer.write_at(b"J", 0).unwrap();
    drop(writer);
    assert_eq!(api.bytes("/docs/a.txt"), b"Jello world");

    // setattr: mode, truncate (ftruncate and truncate(2)), times.
    fs::set_permissions(p("docs/a.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        fs::metadata(p("docs/a.txt")).unwrap().permissions().mode() & 0o7777,
        0o600
    );
    assert_eq!(api.stat("/docs/a.txt").unwrap().mode, 0o600);
    let f = OpenOptions::new().write(true).open(p("docs/a.txt")).unwrap();
    f.set_len(3).unwrap();
    drop(f);
    assert_eq!(api.bytes("/docs/a.txt"), b"Jel");
    let c = cstr(&p("docs/a.txt"));
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::truncate(c.as_ptr(), 5) }, 0);
    assert_eq!(
        api.bytes("/docs/a.txt"),
        b"Jel\0\0",
        "truncate(2) without an open file commits at once"
    );
    let mtime = UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
    let f = File::options().write(true).open(p("docs/a.txt")).unwrap();
    f.set_times(
        fs::FileTimes::new()
            .set_accessed(UNIX_EPOCH + Duration::from_secs(1_600_000_000))
            .set_modified(mtime),
    )
    .unwrap();
    drop(f);
    assert_eq!(
        ms(fs::metadata(p("docs/a.txt")).unwrap().modified().unwrap()),
        1_700_000_000_250
    );
    let remote_mtime = api.stat("/docs/a.txt").unwrap().mtime;
    assert_eq!(remote_mtime, "2023-11-14T22:13:20.250Z");
    assert_eq!(
        fs::metadata(p("docs/a.txt")).unwrap().permissions().mode() & 0o7777,
        0o600,
        "mode survives writes"
    );

    // A file created with a mode keeps it.
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(p("docs/moded"))
        .unwrap();
    drop(f);
    assert_eq!(api.stat("/docs/moded").unwrap().mode, 0o640 & !umask() as i64);

    // Large (written front to back: its chunks are sent while it is written, the tail at
    // close), copy of it (instant upload), medium (one PUT).
    let big = pattern(12 << 20, 7);
    fs::write(p("big.bin"), &big).unwrap();
    assert_eq!(api.stat("/big.bin").unwrap().sha1.unwrap(), sha1_hex(&big));
    // Rewritten below what was already sent, then extended: the close commits the new
    // bytes, never the chunks sent before the rewrite.
    let mut model = pattern(11 << 20, 8);
    let mut f = File::create(p("rewritten.bin")).unwrap();
    f.write_all(&model).unwrap();
    assert!(
        api.stat("/rewritten.bin").unwrap().size == 0,
        "nothing visible before close"
    );
    f.write_all_at(b"changed", 100).unwrap();
    model[100..107].copy_from_slice(b"changed");
    f.seek(SeekFrom::End(0)).unwrap();
    f.write_all(&pattern(3 << 20, 9)).unwrap();
    model.extend_from_slice(&pattern(3 << 20, 9));
    drop(f);
    assert_eq!(api.stat("/rewritten.bin").unwrap().sha1.unwrap(), sha1_hex(&model));
    assert_eq!(sha1_hex(&fs::read(p("big.bin")).unwrap()), sha1_hex(&big));
    fs::copy(p("big.bin"), p("big-copy.bin")).unwrap();
    assert_eq!(api.stat("/big-copy.bin").unwrap().sha1.unwrap(), sha1_hex(&big));
    let medium = pattern(1 << 20, 9);
    fs::write(p("medium.bin"), &medium).unwrap();
    assert_eq!(api.bytes("/medium.bin"), medium);
    // Ranged reads through the block cache, from the middle.
    let mut f = File::open(p("big.bin")).unwrap();
    f.seek(SeekFrom::Start(5_000_000)).unwrap();
    let mut part = vec![0u8; 300_000];
    f.read_exact(&mut part).unwrap();
    assert_eq!(part, &big[5_000_000..5_300_000]);
    drop(f);

    // readdir in pages (the mount lists 1000 names per request), with attributes.
    api.mkdir("/many");
    let n = 1005;
    for i in 0..n {
        api.put(&format!("/many/f{i:04}"), format!("{i}").as_bytes());
    }
    let mut names: Vec<String> = fs::read_dir(p("many"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), n);
    names.sort();
    assert_eq!(names[0], "f0000");
    assert_eq!(names[n - 1], format!("f{:04}", n - 1));
    // Each entry's attributes, as readdirplus handed them to the kernel (or a lookup).
    for e in fs::read_dir(p("many")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        let i: usize = name[1..].parse().unwrap();
        let md = e.metadata().unwrap();
        assert!(md.is_file(), "{name}");
        assert_eq!(md.len(), format!("{i}").len() as u64, "{name}");
        assert_eq!(md.permissions().mode() & 0o7777, 0o644, "{name}");
        assert_eq!(
            md.ino(),
            e.ino(),
            "{name}: the listing and the entry agree on the inode"
        );
    }

    // rename replacing a file (keeps the moved inode), RENAME_NOREPLACE, RENAME_EXCHANGE.
    fs::write(p("docs/b.txt"), b"B").unwrap();
    let a_ino = fs::metadata(p("docs/a.txt")).unwrap().ino();
    fs::rename(p("docs/a.txt"), p("docs/b.txt")).unwrap();
    assert_eq!(errno(fs::metadata(p("docs/a.txt"))), libc::ENOENT);
    assert_eq!(fs::metadata(p("docs/b.txt")).unwrap().ino(), a_ino);
    assert_eq!(api.bytes("/docs/b.txt"), b"Jel\0\0");
    assert!(api.stat("/docs/a.txt").is_none());
    fs::write(p("docs/c.txt"), b"C").unwrap();
    let rename2 = |from: &str, to: &str, flags: u32| {
        let (a, b) = (cstr(&p(from)), cstr(&p(to)));
        // SAFETY: valid NUL-terminated paths.
        let r = unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), flags) };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    assert_eq!(
        errno(rename2("docs/c.txt", "docs/b.txt", libc::RENAME_NOREPLACE)),
        libc::EEXIST
    );
    assert_eq!(
        errno(rename2("docs/c.txt", "docs/b.txt", libc::RENAME_EXCHANGE)),
        libc::EINVAL
    );
    rename2("docs/c.txt", "docs/d.txt", libc::RENAME_NOREPLACE).unwrap();
    assert_eq!(api.bytes("/docs/d.txt"), b"C");
    // A directory moves with its contents; not onto a non-empty directory, not into itself.
    fs::rename(p("docs"), p("documents")).unwrap();
    assert_eq!(api.bytes("/documents/d.txt"), b"C");
    assert_eq!(errno(fs::rename(p("documents"), p("many"))), libc::ENOTEMPTY);
    assert_eq!(errno(fs::rename(p("documents"), p("documents/sub"))), libc::EINVAL);

    // unlink, rmdir.
    fs::remove_file(p("documents/d.txt")).unwrap();
    assert!(api.stat("/documents/d.txt").is_none());
    assert_eq!(errno(fs::remove_dir(p("documents"))), libc::ENOTEMPTY);
    fs::create_dir(p("empty")).unwrap();
    fs::remove_dir(p("empty")).unwrap();
    assert!(api.stat("/empty").is_none());

    // statfs.
    let c = cstr(&m.mnt);
    // SAFETY: a valid path and a zeroed statvfs we own.
    let mut sv: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut sv) }, 0);
    let used = (sv.f_blocks - sv.f_bfree) * sv.f_frsize;
    assert!(used >= 2 * big.len() as u64, "statfs counts the user's bytes ({used})");
    assert!(sv.f_bavail > 0);

    // Errors, and what is not supported (docs/SEMANTICS.md).
    assert_eq!(errno(fs::remove_file(p("documents"))), libc::EISDIR);
    assert_eq!(errno(fs::remove_dir(p("big.bin"))), libc::ENOTDIR);
    assert_eq!(
        errno(OpenOptions::new().write(true).create_new(true).open(p("big.bin"))),
        libc::EEXIST
    );
    assert_eq!(errno(File::open(p("nope"))), libc::ENOENT);
    assert_eq!(errno(fs::write(p(&"x".repeat(256)), b"x")), libc::ENAMETOOLONG);
    assert_eq!(errno(std::os::unix::fs::symlink("big.bin", p("link"))), libc::EPERM);
    assert_eq!(errno(fs::hard_link(p("big.bin"), p("hard"))), libc::EPERM);
    assert_eq!(errno(fs::read_link(p("big.bin"))), libc::EINVAL);
    let fifo = cstr(&p("fifo"));
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, -1);
    assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::EPERM));

    // The other direction: what the API writes shows in the mount.
    api.put("/from-api.txt", b"via the API");
    assert_eq!(fs::read(p("from-api.txt")).unwrap(), b"via the API");
    api.put("/from-api.txt", b"changed on the server");
    wait_until("the mount to show the new content", Duration::from_secs(10), || {
        fs::read(p("from-api.txt")).unwrap() == b"changed on the server"
    });
    api.remove("/from-api.txt");
    wait_until("the mount to see the delete", Duration::from_secs(10), || {
        fs::metadata(p("from-api.txt")).is_err()
    });

    // An unlinked open file keeps working through its descriptor.
    fs::write(p("doomed"), b"still here").unwrap();
    let mut f = File::open(p("doomed")).unwrap();
    fs::remove_file(p("doomed")).unwrap();
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "still here");
    drop(f);

    assert_fuse(&m.mnt);
    m.stop();
}

fn umask() -> u32 {
    // SAFETY: umask only swaps the process mask; it is put back at once.
    unsafe {
        let m = libc::umask(0o022);
        libc::umask(m);
        m as u32
    }
}

#[test]
fn operations_sqlite() {
    every_operation(Backend::Sqlite);
}

#[test]
fn operations_mariadb() {
    every_operation(Backend::MySql);
}

/// Two mounts of the same user see each other's changes once the writer closed.
#[test]
fn two_mounts_see_each_other() {
    let _serial = serial();
    let env = Env::new(Backend::Sqlite).unwrap();
    let mut a = env.mount("a", &[]);
    let mut b = env.mount("b", &[]);

    fs::write(a.path("shared.txt"), b"from a").unwrap();
    assert_eq!(fs::read(b.path("shared.txt")).unwrap(), b"from a");
    // Open in b before a rewrites it: b's next open sees the new bytes.
    let old = File::open(b.path("shared.txt")).unwrap();
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(a.path("shared.txt"))
        .unwrap();
    f.write_all(b"rewritten by a").unwrap();
    drop(f);
    drop(old);
    wait_until("b to see a's rewrite", Duration::from_secs(10), || {
        fs::read(b.path("shared.txt")).unwrap() == b"rewritten by a"
    });
    // And the other way, with a large file.
    let data = pattern(6 << 20, 3);
    fs::write(b.path("big"), &data).unwrap();
    assert_eq!(sha1_hex(&fs::read(a.path("big")).unwrap()), sha1_hex(&data));
    // Directories, renames, deletes.
    fs::create_dir(b.path("dir")).unwrap();
    fs::rename(b.path("shared.txt"), b.path("dir/moved.txt")).unwrap();
    wait_until("a to see b's rename", Duration::from_secs(10), || {
        fs::read(a.path("dir/moved.txt")).ok().as_deref() == Some(b"rewritten by a".as_slice())
            && fs::metadata(a.path("shared.txt")).is_err()
    });
    fs::remove_file(a.path("big")).unwrap();
    wait_until("b to see a's delete", Duration::from_secs(10), || {
        fs::metadata(b.path("big")).is_err()
    });

    // SIGTERM while a file is open: the tree is detached at once, the open file keeps
    // working, and the process exits once it is closed.
    let mut open = OpenOptions::new()
        .read(true)
        .write(true)
        .open(a.path("dir/moved.txt"))
        .unwrap();
    a.signal(libc::SIGTERM);
    wait_until("the busy mount to be detached", Duration::from_secs(30), || {
        mount_fstype(&a.mnt).is_none()
    });
    assert!(
        a.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "still serving the open file"
    );
    open.write_all(b"R").unwrap();
    let mut s = String::new();
    open.seek(SeekFrom::Start(0)).unwrap();
    open.read_to_string(&mut s).unwrap();
    assert_eq!(s, "Rewritten by a");
    drop(open); // close commits, then the session ends
    a.stop();
    assert_eq!(fs::read(b.path("dir/moved.txt")).unwrap(), b"Rewritten by a");
    b.stop();
}

/// The server dies and comes back while files are open for reading and writing: the
/// operations wait for it and succeed; with a short retry window they fail with EIO and
/// nothing that close or fsync confirmed is lost; a failed commit is retried later.
#[test]
fn server_restart_with_open_files() {
    let _serial = serial();
    let mut env = Env::new(Backend::Sqlite).unwrap();
    let api = env.api();
    let big = pattern(4 << 20, 11);
    api.put("/read.bin", &big);
    api.put("/write.txt", b"before the restart");

    // Phase 1: a long retry window; the server is back within it. The files are held
    // open across the restart by child processes: a process that holds a FUSE file open
    // flushes it (and the mount commits it) whenever a child it forks execs and closes its
    // copy, so this process must hold none when it starts the server again.
    let mut m = env.mount("m", &["--retry-secs", "120", "--cache-bytes", "0"]);
    let out = env.dir.join("rest.bin");
    let sh = |script: String| {
        Command::new("sh")
            .args(["-euc", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (read_bin, write_txt) = (
        m.path("read.bin").display().to_string(),
        m.path("write.txt").display().to_string(),
    );
    // Opens, reads the first 128 KiB, says so, and reads the rest when told to.
    let mut reader = sh(format!(
        "exec 3<'{read_bin}'; head -c 131072 <&3 >/dev/null; echo open; read go; cat <&3 >'{}'",
        out.display()
    ));
    // Opens with O_TRUNC, writes, says so; when told to: writes more and fsyncs.
    let mut writer = sh(format!(
        "exec 3>'{write_txt}'; printf 'written while the server ' >&3; echo open; read go; \
         printf 'was down' >&3; dd if=/dev/null of=/dev/fd/3 count=0 conv=notrunc,fsync status=none"
    ));
    let mut line = String::new();
    for child in [&mut reader, &mut writer] {
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        line.clear();
        std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
        assert_eq!(line, "open\n");
    }
    env.server.kill();
    for child in [&mut reader, &mut writer] {
        child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    }
    wait_until("the mount to retry", Duration::from_secs(60), || {
        m.log_text().contains("retrying")
    });
    env.server.spawn();
    assert!(reader.wait().unwrap().success(), "reading across the restart");
    assert!(writer.wait().unwrap().success(), "writing and fsync across the restart");
    assert_eq!(fs::read(&out).unwrap(), &big[128 << 10..]);
    let api = env.api();
    assert_eq!(api.bytes("/write.txt"), b"written while the server was down");
    m.stop();

    // Phase 2: a short retry window; the server stays down past it.
    let mut m = env.mount("m2", &["--retry-secs", "2", "--cache-bytes", "0"]);
    let mut w = OpenOptions::new().write(true).open(m.path("write.txt")).unwrap();
    let r = File::open(m.path("read.bin")).unwrap();
    env.server.kill();
    w.write_all(b"SURVIVES").unwrap(); // local: the spool
    assert_eq!(errno(w.sync_all()), libc::EIO, "fsync cannot commit: EIO");
    let mut buf = vec![0u8; 4096];
    assert_eq!(
        errno(r.read_exact_at(&mut buf, 3 << 20)),
        libc::EIO,
        "uncached read: EIO"
    );
    assert_eq!(errno(fs::metadata(m.path("not-cached-name"))), libc::EIO);
    env.server.spawn();
    // The changes stayed in the spool; the next fsync commits them.
    w.sync_all().unwrap();
    drop(w);
    let api = env.api();
    assert_eq!(api.bytes("/write.txt"), b"SURVIVESwhile the server was down");
    r.read_exact_at(&mut buf, 3 << 20).unwrap();
    assert_eq!(buf, &big[3 << 20..(3 << 20) + 4096]);
    drop(r);

    // A failed close keeps the data journaled; the next open of the file adopts it and
    // its close commits.
    let mut w = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.path("write.txt"))
        .unwrap();
    env.server.kill();
    w.write_all(b"closed while down").unwrap();
    // close(2) reports the failed commit (std's drop would hide it).
    let fd = std::os::unix::io::IntoRawFd::into_raw_fd(w);
    // SAFETY: we own fd, and close it once.
    assert_eq!(unsafe { libc::close(fd) }, -1);
    assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::EIO));
    // The last release tried again, failed, and left the changes in the journal.
    wait_until("the release to give up", Duration::from_secs(60), || {
        m.log_text().contains("closed with an upload still pending")
    });
    env.server.spawn();
    let api = env.api();
    assert_eq!(
        api.bytes("/write.txt"),
        b"SURVIVESwhile the server was down",
        "not committed yet"
    );
    // The next open adopts the journaled changes (they are the file's content), and its
    // close commits them.
    assert_eq!(fs::read(m.path("write.txt")).unwrap(), b"closed while down");
    assert_eq!(api.bytes("/write.txt"), b"closed while down");
    m.stop();
}

/// The mount process killed (SIGKILL) with files written but not closed: after
/// `fusermount3 -u` and a restart with the same spool, they are uploaded.
#[test]
fn killed_mount_uploads_dirty_files_after_restart() {
    let _serial = serial();
    let env = Env::new(Backend::Sqlite).unwrap();
    let api = env.api();
    api.put("/existing.txt", b"old content");
    let mut m = env.mount("m", &[]);
    fs::create_dir(m.path("d")).unwrap();
    let mut new = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(m.path("d/new.txt"))
        .unwrap();
    new.write_all(b"written, never closed").unwrap();
    let big = pattern(7 << 20, 5);
    let mut large = File::create(m.path("d/large.bin")).unwrap();
    large.write_all(&big).unwrap();
    let mut old = OpenOptions::new().write(true).open(m.path("existing.txt")).unwrap();
    old.write_all(b"NEW").unwrap();
    assert_eq!(api.bytes("/existing.txt"), b"old content");

    m.kill();
    drop((new, large, old)); // closing on a dead connection: nothing left to flush here
    m.clear_dead_mount();

    m.spawn();
    assert!(
        m.log_text().contains("3 pending uploads completed"),
        "the restart uploads the journal: {}",
        m.log_text()
    );
    assert_eq!(api.bytes("/d/new.txt"), b"written, never closed");
    assert_eq!(api.bytes("/existing.txt"), b"NEW content");
    assert_eq!(api.stat("/d/large.bin").unwrap().sha1.unwrap(), sha1_hex(&big));
    assert_eq!(fs::read(m.path("existing.txt")).unwrap(), b"NEW content");
    let left: Vec<_> = fs::read_dir(&m.spool)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".pending") || n.ends_with(".data"))
        .collect();
    assert!(left.is_empty(), "journal emptied: {left:?}");
    m.stop();
}

/// `filestore mount -c CONFIG --user NAME`: directly over the server's database and
/// storage, beside the running server.
#[test]
fn local_mount_beside_the_server() {
    let _serial = serial();
    require_fuse();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("filestore.toml");
    fs::write(&config, format!("data_dir = \"{}\"\n", data.display())).unwrap();
    let config_s = config.display().to_string();
    let server = Server::start(&data, &[("FILESTORE_CONFIG", &config_s)]);
    server.add_user("alice");
    server.add_user("bobby");
    let api = Api::new(&server.base, "alice");
    api.put("/from-api.txt", b"written over HTTP");
    Api::new(&server.base, "bobby").put("/bobs.txt", b"not alice's");

    let mut m = Mount::local(dir.path(), "m", &config, "alice");
    assert!(m.log_text().contains("mount-spool") || m.spool.exists());
    assert_eq!(fs::read(m.path("from-api.txt")).unwrap(), b"written over HTTP");
    assert_eq!(
        errno(fs::metadata(m.path("bobs.txt"))),
        libc::ENOENT,
        "only alice's tree"
    );
    fs::create_dir(m.path("local")).unwrap();
    fs::write(m.path("local/a.txt"), b"written on the server's machine").unwrap();
    assert_eq!(api.bytes("/local/a.txt"), b"written on the server's machine");
    // The same content again is linked, not stored twice.
    fs::write(m.path("local/again.txt"), b"written on the server's machine").unwrap();
    assert_eq!(
        api.stat("/local/again.txt").unwrap().sha1,
        api.stat("/local/a.txt").unwrap().sha1
    );
    let data_big = pattern(3 << 20, 13);
    fs::write(m.path("local/big.bin"), &data_big).unwrap();
    assert_eq!(api.stat("/local/big.bin").unwrap().sha1.unwrap(), sha1_hex(&data_big));
    let mut f = OpenOptions::new().write(true).open(m.path("local/a.txt")).unwrap();
    f.write_all(b"W").unwrap();
    f.sync_all().unwrap();
    drop(f);
    assert_eq!(api.bytes("/local/a.txt"), b"Written on the server's machine");
    fs::set_permissions(m.path("local/a.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(api.stat("/local/a.txt").unwrap().mode, 0o600);
    fs::rename(m.path("local/a.txt"), m.path("local/b.txt")).unwrap();
    assert_eq!(api.names("/local"), vec!["again.txt", "b.txt", "big.bin"]);
    api.put("/local/b.txt", b"replaced over HTTP");
    wait_until(
        "the local mount to show the new content",
        Duration::from_secs(10),
        || fs::read(m.path("local/b.txt")).unwrap() == b"replaced over HTTP",
    );
    fs::remove_file(m.path("local/again.txt")).unwrap();
    assert!(api.stat("/local/again.txt").is_none());
    assert_eq!(errno(fs::remove_dir(m.path("local"))), libc::ENOTEMPTY);
    m.stop();
}

/// `scripts/ceph-rgw.sh start` (idempotent, shared by the test binaries): the server
/// settings for a bucket of the caller's own on the local Ceph RGW. Ceph must be installed
/// (`scripts/ceph-rgw.sh install`, which the test command runs): this fails, never skips.
fn ceph_s3_settings(bucket: &str) -> Vec<(String, String)> {
    let dir = std::env::var("FILESTORE_TEST_CEPH_DIR").unwrap_or_else(|_| "/tmp/filestore-ceph".into());
    let out = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ceph-rgw.sh"))
        .args(["start", &dir])
        .output()
        .expect("run scripts/ceph-rgw.sh");
    assert!(
        out.status.success(),
        "Ceph RGW did not start:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exports = String::from_utf8(out.stdout).unwrap();
    let var = |name: &str| {
        exports
            .lines()
            .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.trim_matches(|c| c == '\'' || c == '"').to_string())
            .unwrap_or_else(|| panic!("ceph-rgw.sh exported no {name}"))
    };
    [
        ("FILESTORE_S3__ENDPOINT", var("S3_ENDPOINT")),
        ("FILESTORE_S3__REGION", var("S3_REGION")),
        ("FILESTORE_S3__ACCESS_KEY", var("AWS_ACCESS_KEY_ID")),
        ("FILESTORE_S3__SECRET_KEY", var("AWS_SECRET_ACCESS_KEY")),
        ("FILESTORE_S3__BUCKET", bucket.to_string()),
        ("FILESTORE_S3__PART_SIZE", (5u64 << 20).to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Content the server has moved to S3 (Ceph RGW; its staging copy gone) read through a
/// mount started afterwards, so nothing is cached: whole files, and ranges (pread across
/// the 5 MiB part boundary and the mount's block boundaries, backwards, the tail, past
/// the end), each compared with the bytes written.
#[test]
fn reads_content_that_lives_in_s3() {
    let _serial = serial();
    let bucket = format!("fsmount-{}", filestore::util::random_hex(5));
    let env = Env::with(Backend::Sqlite, &ceph_s3_settings(&bucket)).unwrap();
    let api = env.api();
    let big = pattern((12 << 20) + 12_345, 61);
    let small = pattern(3000, 62);
    api.mkdir("/s3");
    api.put("/s3/big.bin", &big);
    api.put("/s3/small.txt", &small);

    let db_url = env.db.as_ref().unwrap().url.clone();
    let meta = env
        .rt
        .block_on(filestore::meta::MetaStore::connect(&db_url, 1))
        .unwrap();
    let staged = |b: &[u8]| {
        let h = sha1_hex(b);
        env.server.data.join("staging/objects").join(&h[..2]).join(&h)
    };
    let in_s3 = |b: &[u8]| {
        let c = env.rt.block_on(meta.content(&sha1_hex(b))).unwrap().unwrap();
        c.store == "s3" && !staged(b).exists()
    };
    wait_until(
        "both contents to be moved to S3 and their staging copies removed",
        Duration::from_secs(180),
        || in_s3(&big) && in_s3(&small),
    );

    let mut m = env.mount("m", &[]);
    assert_eq!(fs::read(m.path("s3/small.txt")).unwrap(), small);
    let f = File::open(m.path("s3/big.bin")).unwrap();
    let part = 5usize << 20;
    let block = filestore_mount::BLOCK_SIZE as usize;
    let ranges = [
        (big.len() - 100, 100),    // the tail first: a cold, non-sequential start
        (part - 10, 20),           // across the first multipart boundary
        (2 * part - 1, block + 2), // across a part and two blocks
        (block - 1, 2),
        (0, 1),
        (7_000_001, 1 << 20),
        (3 * block + 5, 1000),
    ];
    for (off, len) in ranges {
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, off as u64).unwrap();
        assert!(buf == big[off..off + len], "pread of {len} bytes at {off}");
    }
    let mut buf = [0u8; 10];
    assert_eq!(f.read_at(&mut buf, big.len() as u64 + 5).unwrap(), 0, "past the end");
    let mut tail = [0u8; 64];
    assert_eq!(
        f.read_at(&mut tail, big.len() as u64 - 7).unwrap(),
        7,
        "short read at the end"
    );
    assert_eq!(tail[..7], big[big.len() - 7..]);
    drop(f);
    let whole = fs::read(m.path("s3/big.bin")).unwrap();
    assert!(whole == big, "the whole file read back from S3");
    // Reading moved nothing back to staging.
    assert!(in_s3(&big) && in_s3(&small));
    m.stop();

    // With a disk cache, a content read front to back is kept there, checked against its
    // SHA-1 (`--disk-cache`, beside the spool by default); small ones are not.
    let mut m = env.mount("m2", &["--disk-cache", "64MiB", "--cache-bytes", "0"]);
    let cached = m.spool.with_extension("spool.content").join("objects");
    assert!(fs::read(m.path("s3/big.bin")).unwrap() == big);
    assert_eq!(fs::read(m.path("s3/small.txt")).unwrap(), small);
    let copy = cached.join(sha1_hex(&big));
    wait_until("the content kept in the disk cache", Duration::from_secs(30), || {
        copy.exists() && fs::metadata(&copy).unwrap().len() == big.len() as u64
    });
    assert_eq!(sha1_hex(&fs::read(&copy).unwrap()), sha1_hex(&big));
    assert!(!cached.join(sha1_hex(&small)).exists());
    let f = File::open(m.path("s3/big.bin")).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    f.read_exact_at(&mut buf, 7_000_001).unwrap();
    assert!(buf == big[7_000_001..7_000_001 + (1 << 20)]);
    drop(f);
    m.stop();
    env.rt.block_on(meta.close());
}

/// Peak resident memory (`VmHWM`) of process `pid`, in bytes.
fn vm_hwm(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM in /proc/PID/status");
    kib << 10
}

/// Issue 6: the mount's memory stays bounded by its block cache. A file eight times the
/// cache, read twice from cold through the mount, leaves the mount's peak RSS within the
/// cache plus a margin for the process itself (its RSS once mounted plus 40 MiB: buffers
/// of reads in flight and the allocator's slack). Before the fetches in flight counted
/// against the cache, concurrent kernel reads fetched blocks twice and freed buffers
/// stayed resident.
#[test]
fn reading_more_than_the_cache_keeps_memory_bounded() {
    use std::os::fd::AsRawFd;
    let _serial = serial();
    let Some(env) = Env::new(Backend::Sqlite) else { return };
    let data = pattern(128 << 20, 31);
    env.api().put("/big.bin", &data);
    const CACHE: u64 = 16 << 20;
    let mut m = env.mount("m", &["--cache-bytes", "16MiB"]);
    let pid = m.child.as_ref().unwrap().id();
    let base = vm_hwm(pid);
    let want = sha1_hex(&data);
    drop(data);
    for round in 0..2 {
        let mut f = File::open(m.path("big.bin")).unwrap();
        // Drop the kernel's pages of the file: every round reads through the mount.
        // SAFETY: an open descriptor; fadvise touches no memory of ours.
        assert_eq!(
            unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) },
            0
        );
        let mut h = sha1::Sha1::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        assert_eq!(hex::encode(h.finalize()), want, "round {round}");
    }
    let peak = vm_hwm(pid);
    assert!(
        peak <= base + CACHE + (40 << 20),
        "mount peak RSS {} MiB: more than its RSS once mounted ({} MiB) + cache (16 MiB) + 40 MiB",
        peak >> 20,
        base >> 20
    );
    m.stop();
}
