//! The real `filestore` binary: the embedded default from one command, the admin commands,
//! configuration errors, and what an upload leaves behind when the process dies at each
//! step (see the `drive` module docs for the contract).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_filestore");

struct Proc {
    child: Child,
    base: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cmd(data: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("FILESTORE_DATA_DIR", data)
        .env("FILESTORE_LOG", "warn")
        // Anything untouched counts as stale, so restarts clean up at once.
        .env("FILESTORE_STORAGE__STALE_AFTER_SECS", "0");
    c
}

/// Starts `filestore serve` on a free port and waits for the line announcing the URL.
fn serve(data: &Path, failpoints: &str) -> Proc {
    serve_on(data, failpoints, "127.0.0.1:0")
}

fn serve_on(data: &Path, failpoints: &str, listen: &str) -> Proc {
    let mut child = cmd(data)
        .args(["serve", "--listen", listen])
        .env("FILESTORE_SESSIONS__CHUNK_SIZE", "65536")
        .env("FILESTORE_FAILPOINTS", failpoints)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn filestore serve");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut base = None;
    let mut saw_data_dir = false;
    for line in lines.by_ref() {
        let line = line.expect("read stdout");
        saw_data_dir |= line.starts_with("filestore: data dir ");
        if let Some(url) = line.strip_prefix("filestore: serving ") {
            base = Some(url.trim_end_matches('/').to_string());
            break;
        }
    }
    assert!(saw_data_dir, "the data dir is printed at start");
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Proc {
        child,
        base: base.expect("server announced its URL"),
    }
}

fn add_user(data: &Path, name: &str) {
    let mut c = cmd(data)
        .args(["user", "add", name, "--password-stdin"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(b"correct horse battery\n").unwrap();
    assert!(c.wait().unwrap().success());
}

fn signin(base: &str, name: &str) -> String {
    let body = format!("{{\"username\":\"{name}\",\"password\":\"correct horse battery\"}}");
    let out = curl(&[
        "-sS",
        "-XPOST",
        &format!("{base}/api/v1/auth/signin"),
        "-H",
        "content-type: application/json",
        "-d",
        &body,
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.1).unwrap();
    v["token"].as_str().expect("token").to_string()
}

/// Runs curl; returns (HTTP status or 0 when the connection failed, body).
fn curl(args: &[&str]) -> (u16, Vec<u8>) {
    let out = Command::new("curl")
        .args(args)
        .args(["-w", "\n%{http_code}"])
        .output()
        .expect("curl");
    let mut body = out.stdout;
    let pos = body.iter().rposition(|b| *b == b'\n').unwrap_or(0);
    let code = String::from_utf8_lossy(&body[pos + 1..]).trim().parse().unwrap_or(0);
    body.truncate(pos);
    (code, body)
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                out.extend(files_under(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// The temp files process `pid` has open in the staging area's `incoming/`: named ones, or
/// anonymous ones (`O_TMPFILE`), which the kernel names `incoming/#<inode> (deleted)`.
fn open_temp_files(pid: u32, data: &Path) -> Vec<String> {
    let incoming = data.join("staging/incoming");
    let incoming = std::fs::canonicalize(&incoming).unwrap_or(incoming);
    let prefix = format!("{}/", incoming.display());
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.flatten()
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .map(|target| target.display().to_string())
                .filter(|t| t.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether an open temp file is anonymous (nothing of it outlives the process).
fn is_anonymous(temp: &str) -> bool {
    temp.rsplit('/').next().is_some_and(|name| name.starts_with('#'))
}

fn staging(data: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    (
        files_under(&data.join("staging/incoming")),
        files_under(&data.join("staging/objects")),
    )
}

#[test]
fn embedded_default_and_admin_commands() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("drive");
    add_user(&data, "alice");
    // Duplicate and weak passwords are refused with a message and a failure status.
    let mut c = cmd(&data)
        .args(["user", "add", "alice", "--password-stdin"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(b"another password\n").unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("taken"));
    assert!(data.join("meta.db").is_file(), "SQLite database in the data dir");

    let server = serve(&data, "");
    let token = signin(&server.base, "alice");
    let (code, _) = curl(&[
        "-sS",
        "-T",
        BIN,
        "-H",
        &format!("authorization: Bearer {token}"),
        &format!("{}/api/v1/files/bin", server.base),
    ]);
    assert_eq!(code, 201);
    let (code, body) = curl(&[
        "-sS",
        "-H",
        &format!("authorization: Bearer {token}"),
        &format!("{}/api/v1/files/bin", server.base),
    ]);
    assert_eq!(code, 200);
    assert!(body == std::fs::read(BIN).unwrap(), "bytes round-trip");
    drop(server);

    // Disabling ends sessions and refuses sign-in; list shows the state.
    assert!(cmd(&data)
        .args(["user", "disable", "alice"])
        .status()
        .unwrap()
        .success());
    let out = cmd(&data).args(["user", "list"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "alice disabled");
    let server = serve(&data, "");
    let (code, _) = curl(&[
        "-sS",
        "-H",
        &format!("authorization: Bearer {token}"),
        &format!("{}/api/v1/me", server.base),
    ]);
    assert_eq!(code, 401);
}

#[test]
fn configuration_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("filestore.toml");
    std::fs::write(&cfg, "[server]\nlisten = \"127.0.0.1:0\"\nlistne = \"typo\"\n").unwrap();
    let out = cmd(dir.path())
        .args(["-c", cfg.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("listne"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cmd(dir.path())
        .env("FILESTORE_DATABASE__URLL", "x")
        .arg("check-config")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("database.urll"));
    // The effective configuration lists every section, with the password redacted.
    let out = cmd(dir.path())
        .env("FILESTORE_DATABASE__URL", "mysql://u:hunter2@127.0.0.1/x")
        .arg("check-config")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for section in ["[server]", "[database]", "[storage]", "[auth]"] {
        assert!(text.contains(section), "{text}");
    }
    assert!(!text.contains("hunter2"));
}

/// The process aborts at each step of an upload; after a restart nothing partial is
/// visible, a committed upload is complete, and the staging area ends up clean. All three
/// write paths: a streamed body (2 MB), one received whole in memory and then staged
/// (100 kB), and one stored in its content row (4 KiB, no staging file, so no link step).
#[test]
fn crash_at_each_upload_step() {
    for size in [2_000_000u32, 100_000, 4096] {
        crash_at_each_upload_step_of(size);
    }
}

fn crash_at_each_upload_step_of(size: u32) {
    let payload: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
    let inline = u64::from(size) <= filestore::blob::INLINE_MAX;
    for (step, visible) in [
        ("upload.staged", false),
        ("upload.linked", false),
        ("upload.placed", false),
        ("upload.batched", false),
        ("upload.committed", true),
    ] {
        if inline && step == "upload.linked" {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("drive");
        add_user(&data, "alice");
        let file = dir.path().join("payload");
        std::fs::write(&file, &payload).unwrap();

        let mut server = serve(&data, step);
        let token = signin(&server.base, "alice");
        let url = format!("{}/api/v1/files/doc", server.base);
        let auth = format!("authorization: Bearer {token}");
        let (code, _) = curl(&["-sS", "-T", file.to_str().unwrap(), "-H", "Expect:", "-H", &auth, &url]);
        assert_eq!(code, 0, "{step}: the process died before answering");
        let status = server.child.wait().unwrap();
        assert!(!status.success(), "{step}: aborted");

        let server = serve(&data, "");
        let token = signin(&server.base, "alice");
        let auth = format!("authorization: Bearer {token}");
        let url = format!("{}/api/v1/files/doc", server.base);
        let (code, body) = curl(&["-sS", "-H", &auth, &url]);
        if visible {
            assert_eq!(code, 200, "{step}");
            assert!(body == payload, "{step}: committed upload is complete");
        } else {
            assert_eq!(code, 404, "{step}: nothing partial is visible");
        }
        drop(server);
        let out = cmd(&data).arg("gc").output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let (incoming, objects) = staging(&data);
        assert!(incoming.is_empty(), "{step}: temp files removed: {incoming:?}");
        assert_eq!(
            objects.len(),
            usize::from(visible && !inline),
            "{step}: no orphaned object, and none for content kept in its row: {objects:?}"
        );
    }
}

/// A crash on a dedup hit, after the second hashes are compared (the stored one recorded)
/// and before the commit: the first file is intact, the second invisible, one object.
#[test]
fn crash_on_a_dedup_hit() {
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("drive");
    add_user(&data, "alice");
    let file = dir.path().join("payload");
    std::fs::write(&file, &payload).unwrap();
    let put = |server: &Proc, name: &str| {
        let token = signin(&server.base, "alice");
        let url = format!("{}/api/v1/files/{name}", server.base);
        let auth = format!("authorization: Bearer {token}");
        curl(&["-sS", "-T", file.to_str().unwrap(), "-H", "Expect:", "-H", &auth, &url]).0
    };
    let server = serve(&data, "");
    assert_eq!(put(&server, "first"), 201);
    drop(server);
    let mut server = serve(&data, "upload.verified");
    assert_eq!(put(&server, "second"), 0, "the process died before answering");
    assert!(!server.child.wait().unwrap().success());

    let server = serve(&data, "");
    let token = signin(&server.base, "alice");
    let auth = format!("authorization: Bearer {token}");
    let get = |name: &str| curl(&["-sS", "-H", &auth, &format!("{}/api/v1/files/{name}", server.base)]);
    let (code, body) = get("first");
    assert!(code == 200 && body == payload, "the stored file is intact");
    assert_eq!(get("second").0, 404, "nothing of the second upload is visible");
    // The hit is taken again after the restart, against the recorded hash.
    assert_eq!(put(&server, "second"), 201);
    assert!(get("second").1 == payload);
    drop(server);
    let out = cmd(&data).arg("gc").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (incoming, objects) = staging(&data);
    assert!(incoming.is_empty(), "temp files removed: {incoming:?}");
    assert_eq!(objects.len(), 1, "one stored copy: {objects:?}");
}

/// SIGKILL while the body is still streaming in.
#[test]
fn killed_mid_body() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("drive");
    add_user(&data, "alice");
    let mut server = serve(&data, "");
    let token = signin(&server.base, "alice");
    let addr = server.base.trim_start_matches("http://").to_string();
    let mut sock = std::net::TcpStream::connect(&addr).unwrap();
    let head = format!("PUT /api/v1/files/half HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 10000000\r\n\r\n");
    sock.write_all(head.as_bytes()).unwrap();
    sock.write_all(&vec![b'x'; 1_000_000]).unwrap();
    // Wait (bounded) until the server has started writing the temp file.
    let deadline = Instant::now() + Duration::from_secs(30);
    let temps = loop {
        let temps = open_temp_files(server.child.id(), &data);
        if !temps.is_empty() {
            break temps;
        }
        assert!(Instant::now() < deadline, "the upload never reached the staging area");
        std::thread::yield_now();
    };
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    if is_anonymous(&temps[0]) {
        assert!(
            staging(&data).0.is_empty(),
            "an anonymous temp file goes with the process: {temps:?}"
        );
    } else {
        assert_eq!(staging(&data).0.len(), 1, "the named temp file is what a crash leaves");
    }

    let server = serve(&data, "");
    assert!(staging(&data).0.is_empty(), "swept at start");
    let token = signin(&server.base, "alice");
    let (code, _) = curl(&[
        "-sS",
        "-H",
        &format!("authorization: Bearer {token}"),
        &format!("{}/api/v1/files/half", server.base),
    ]);
    assert_eq!(code, 404);
}

/// A client command with its own config dir.
fn client(cfg: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("FILESTORE_CONFIG_DIR", cfg)
        .env("FILESTORE_LOG", "warn");
    c
}

fn login(cfg: &Path, base: &str, user: &str) {
    let mut c = client(cfg)
        .args(["login", "--server", base, "--user", user, "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(b"correct horse battery\n").unwrap();
    assert!(c.wait().unwrap().success());
}

fn run_ok(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        c,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn random_file(path: &Path, len: usize, seed: u32) -> Vec<u8> {
    let data: Vec<u8> = (0..len as u32)
        .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 11) as u8)
        .collect();
    std::fs::write(path, &data).unwrap();
    data
}

/// Starts an upload and returns the child once its progress passed `percent`.
fn upload_until(cfg: &Path, file: &Path, remote: &str, percent: u32) -> Child {
    let mut child = client(cfg)
        .args(["upload", file.to_str().unwrap(), remote, "--parallel", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    let lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut lines = lines.map_while(Result::ok);
    let reached = lines.by_ref().any(|l| {
        l.strip_prefix(&format!("{name}: "))
            .and_then(|rest| rest.split('%').next())
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|p| p >= percent)
    });
    assert!(reached, "the upload never reached {percent}%");
    std::thread::spawn(move || for _ in lines {});
    child
}

#[test]
fn client_commands() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("drive");
    let cfg = dir.path().join("cfg");
    add_user(&data_dir, "alice");
    let server = serve(&data_dir, "");
    login(&cfg, &server.base, "alice");
    let creds = cfg.join("credentials.toml");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&creds).unwrap().permissions().mode() & 0o777, 0o600);
    let file = dir.path().join("big.bin");
    let data = random_file(&file, 3_000_000, 1);
    // The parent does not exist yet: a clear error, then mkdir -p fixes that.
    let out = client(&cfg)
        .args(["upload", file.to_str().unwrap(), "/docs/", "--parallel", "4"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such file or directory"));
    run_ok(client(&cfg).args(["mkdir", "-p", "/docs/old"]));
    let out = run_ok(client(&cfg).args(["upload", file.to_str().unwrap(), "/docs/"]));
    assert!(out.starts_with("/docs/big.bin 3000000 bytes"), "{out}");
    // Same bytes again: instant, no bytes sent.
    let out = client(&cfg)
        .args(["upload", file.to_str().unwrap(), "/docs/again.bin"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("linked without sending"),
        "{out:?}"
    );
    run_ok(client(&cfg).args(["mv", "/docs/again.bin", "/docs/old/moved.bin"]));
    assert_eq!(run_ok(client(&cfg).args(["ls", "/docs"])), "big.bin\nold/\n");
    let local = dir.path().join("back.bin");
    run_ok(client(&cfg).args(["download", "/docs/old/moved.bin", local.to_str().unwrap()]));
    assert!(std::fs::read(&local).unwrap() == data);

    // Download resumes from a partial file, and refuses bytes that do not hash right.
    let part = dir.path().join("resumed.bin.filestore-part");
    std::fs::write(&part, &data[..1_000_000]).unwrap();
    let resumed = dir.path().join("resumed.bin");
    run_ok(client(&cfg).args(["download", "/docs/big.bin", resumed.to_str().unwrap()]));
    assert!(std::fs::read(&resumed).unwrap() == data);
    assert!(!part.exists());
    let mut wrong = data[..1_000_000].to_vec();
    wrong[5] ^= 1;
    std::fs::write(&part, &wrong).unwrap();
    let out = client(&cfg)
        .args(["download", "/docs/big.bin", resumed.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a corrupt partial download is detected");
    assert!(!part.exists(), "and discarded");
    run_ok(client(&cfg).args(["download", "/docs/big.bin", resumed.to_str().unwrap()]));
    assert!(std::fs::read(&resumed).unwrap() == data);

    run_ok(client(&cfg).args(["rm", "-r", "/docs"]));
    assert_eq!(run_ok(client(&cfg).args(["ls"])), "");
    run_ok(client(&cfg).args(["logout"]));
    assert!(!creds.exists());
    let out = client(&cfg).args(["ls"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("not signed in"));
}

/// The client killed mid-upload: running it again sends only the missing chunks.
#[test]
fn client_resumes_after_being_killed() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("drive");
    let cfg = dir.path().join("cfg");
    add_user(&data_dir, "alice");
    let server = serve(&data_dir, "");
    login(&cfg, &server.base, "alice");
    let file = dir.path().join("resume.bin");
    let data = random_file(&file, 24_000_000, 2);
    let mut first = upload_until(&cfg, &file, "/resume.bin", 20);
    first.kill().unwrap();
    first.wait().unwrap();
    let out = client(&cfg)
        .args(["upload", file.to_str().unwrap(), "/resume.bin"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("resuming: the server has"), "{err}");
    let back = dir.path().join("back.bin");
    run_ok(client(&cfg).args(["download", "/resume.bin", back.to_str().unwrap()]));
    assert!(std::fs::read(&back).unwrap() == data);
    // The chunks went out while the file was hashed; the local record of that session is
    // gone once it completed. Content the server has is linked as soon as it is hashed
    // (or, if the last chunk went out first, deduplicated when the upload completes:
    // which comes first depends on the machine, either way is right).
    let records = || std::fs::read_dir(cfg.join("uploads")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(records(), 0, "resume record removed after completion");
    let out = client(&cfg)
        .args(["upload", file.to_str().unwrap(), "/again.bin"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(records(), 0);
    assert_eq!(staging(&data_dir).1.len(), 1, "one stored copy");
    assert_eq!(files_under(&data_dir.join("staging/parts")), Vec::<PathBuf>::new());
    run_ok(client(&cfg).args(["download", "/again.bin", back.to_str().unwrap()]));
    assert!(std::fs::read(&back).unwrap() == data);
}

/// The server killed mid-upload and restarted: the client waits, resumes, and the file
/// is intact.
#[test]
fn server_restart_during_upload() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("drive");
    let cfg = dir.path().join("cfg");
    add_user(&data_dir, "alice");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut server = serve_on(&data_dir, "", &listen);
    login(&cfg, &server.base, "alice");
    let file = dir.path().join("restart.bin");
    let data = random_file(&file, 24_000_000, 3);
    let mut upload = upload_until(&cfg, &file, "/restart.bin", 20);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let _server = serve_on(&data_dir, "", &listen);
    let status = upload.wait().unwrap();
    assert!(status.success(), "the client finished after the restart");
    let back = dir.path().join("back.bin");
    run_ok(client(&cfg).args(["download", "/restart.bin", back.to_str().unwrap()]));
    assert!(std::fs::read(&back).unwrap() == data);
}

/// SIGTERM during an upload: the server stops accepting, lets the upload finish, and
/// exits 0; the file is there after a restart.
#[test]
fn sigterm_lets_uploads_finish() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("drive");
    add_user(&data, "alice");
    let mut server = serve(&data, "");
    let token = signin(&server.base, "alice");
    let addr = server.base.trim_start_matches("http://").to_string();
    let mut sock = std::net::TcpStream::connect(&addr).unwrap();
    let body = vec![b'z'; 4_000_000];
    let head = format!(
        "PUT /api/v1/files/inflight HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).unwrap();
    sock.write_all(&body[..1_000_000]).unwrap();
    // The upload is in progress once its temp file exists.
    let deadline = Instant::now() + Duration::from_secs(30);
    while open_temp_files(server.child.id(), &data).is_empty() {
        assert!(Instant::now() < deadline, "the upload never started");
        std::thread::yield_now();
    }
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    sock.write_all(&body[1_000_000..]).unwrap();
    let mut resp = String::new();
    std::io::Read::read_to_string(&mut sock, &mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 201"), "{resp}");
    let status = server.child.wait().unwrap();
    assert!(status.success(), "exit 0 after a graceful stop: {status:?}");
    let server = serve(&data, "");
    let token = signin(&server.base, "alice");
    let (code, got) = curl(&[
        "-sS",
        "-H",
        &format!("authorization: Bearer {token}"),
        &format!("{}/api/v1/files/inflight", server.base),
    ]);
    assert_eq!(code, 200);
    assert!(got == body);
}
