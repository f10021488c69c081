//! WebDAV at `/dav/` on the real server: litmus, davfs2 and rclone as real clients, and
//! the protocol details clients rely on. litmus, davfs2 and rclone come from Debian
//! (scripts/test.sh installs them); a missing one fails the test.

mod common;

use std::process::Command;

use common::{Backend, TestServer};
use reqwest::{Method, StatusCode};

const PASSWORD: &str = "dav-password-1";

async fn dav_user(s: &TestServer, name: &str) {
    let creds = serde_json::json!({"username": name, "password": PASSWORD});
    let r = s
        .http
        .post(s.url("/api/v1/auth/signup"))
        .json(&creds)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

fn dav(s: &TestServer, method: &str, path: &str, user: &str) -> reqwest::RequestBuilder {
    s.http
        .request(
            Method::from_bytes(method.as_bytes()).unwrap(),
            s.url(&format!("/dav{path}")),
        )
        .basic_auth(user, Some(PASSWORD))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (is it installed? scripts/test.sh installs it)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// litmus: every test of its basic, copymove, props, locks and http suites passes.
async fn litmus(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    dav_user(&s, "litmus").await;
    let url = s.url("/dav/");
    let out = tokio::task::spawn_blocking(move || {
        let out = Command::new("litmus")
            .args(["-k", &url, "litmus", PASSWORD])
            .output()
            .expect("litmus is installed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .unwrap();
    let mut passed = 0;
    for line in out.lines().filter(|l| l.contains("<- summary for")) {
        let n: Vec<u32> = line
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|w| w.parse().ok())
            .collect();
        // "of N tests run: P passed, F failed. 100.0%"
        assert_eq!(n[2], 0, "litmus failures: {line}\n{out}");
        passed += n[1];
    }
    assert_eq!(passed, 104, "{out}");
    s.stop().await;
}

async fn protocol(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    dav_user(&s, "alice").await;
    dav_user(&s, "bob").await;
    // No credentials, wrong password: 401 with a Basic challenge, never a 500.
    let r = s
        .http
        .request(Method::from_bytes(b"PROPFIND").unwrap(), s.url("/dav/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"));
    let r = s
        .http
        .get(s.url("/dav/"))
        .basic_auth("alice", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = s
        .http
        .get(s.url("/dav/"))
        .basic_auth("nobody", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // OPTIONS, on the root and on a missing path.
    for path in ["/", "/no/such/thing"] {
        let r = dav(&s, "OPTIONS", path, "alice").send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["dav"].to_str().unwrap().replace(' ', ""), "1,2");
        assert_eq!(r.headers()["ms-author-via"], "DAV");
    }
    // Depth infinity is refused with the precondition RFC 4918 names.
    let r = dav(&s, "PROPFIND", "/", "alice")
        .header("depth", "infinity")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.unwrap().contains("propfind-finite-depth"));

    // A file over WebDAV is the same file the JSON API shows, deduplicated with it.
    let body = b"shared between protocols".to_vec();
    let r = dav(&s, "PUT", "/notes.txt", "alice")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let token = {
        let creds = serde_json::json!({"username": "alice", "password": PASSWORD});
        let v: serde_json::Value = s
            .http
            .post(s.url("/api/v1/auth/signin"))
            .json(&creds)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["token"].as_str().unwrap().to_string()
    };
    let r = s
        .http
        .get(s.url("/api/v1/files/notes.txt"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), &body[..]);
    let r = s
        .http
        .put(s.url("/api/v1/files/copy.txt"))
        .bearer_auth(&token)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let meta = &s.running().services().meta;
    let sha1 = hex::encode(<sha1::Sha1 as sha1::Digest>::digest(&body));
    assert_eq!(meta.content(&sha1).await.unwrap().unwrap().refcount, 2);
    // Bearer tokens work on /dav too; ETag is the content SHA-1; ranges.
    let r = s
        .http
        .get(s.url("/dav/notes.txt"))
        .bearer_auth(&token)
        .header("range", "bytes=0-5")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers()["etag"], format!("\"{sha1}\"").as_str());
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"shared");

    // Two users never see each other's files or locks.
    let r = dav(&s, "GET", "/notes.txt", "bob").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = dav(&s, "PROPFIND", "/", "bob")
        .header("depth", "1")
        .send()
        .await
        .unwrap();
    assert!(!r.text().await.unwrap().contains("notes.txt"));
    let lock = r#"<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype></D:lockinfo>"#;
    let r = dav(&s, "LOCK", "/notes.txt", "alice").body(lock).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = dav(&s, "PUT", "/notes.txt", "alice")
        .body("no token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::LOCKED, "the lock is honoured");
    let r = dav(&s, "PUT", "/notes.txt", "bob")
        .body("bob's own file")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "bob's tree is not locked by alice");

    // A disabled account is refused although its credentials are cached (the cache
    // re-reads the account at most once a second, so poll with a deadline).
    let r = dav(&s, "PROPFIND", "/", "bob")
        .header("depth", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::MULTI_STATUS);
    let meta = s.running().services().meta.clone();
    meta.set_user_disabled("bob", true).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let r = dav(&s, "PROPFIND", "/", "bob")
            .header("depth", "0")
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(r.status(), StatusCode::MULTI_STATUS);
        assert!(std::time::Instant::now() < deadline, "disabled account still served");
        tokio::task::yield_now().await;
    }
    meta.set_user_disabled("bob", false).await.unwrap();

    // Dead properties are stored in the database and survive a restart.
    let patch = r#"<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:test"><D:set><D:prop><Z:colour>blue</Z:colour></D:prop></D:set></D:propertyupdate>"#;
    let r = dav(&s, "PROPPATCH", "/copy.txt", "alice")
        .body(patch)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::MULTI_STATUS);
    let cfg = common::test_config(&s.db);
    let TestServer { running, db, http, .. } = s;
    running.unwrap().shutdown().await;
    let again = filestore::server::start(cfg).await.unwrap();
    let s = TestServer {
        base: format!("http://{}", again.addr),
        running: Some(again),
        db,
        http,
    };
    let find = r#"<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><Z:colour xmlns:Z="urn:test"/></D:prop></D:propfind>"#;
    let r = dav(&s, "PROPFIND", "/copy.txt", "alice")
        .header("depth", "0")
        .body(find)
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert!(text.contains("blue"), "{text}");
    s.stop().await;
}

/// PROPFIND depth 1 on a directory of 10,000 entries answers them all.
async fn large_directory(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    dav_user(&s, "alice").await;
    let meta = &s.running().services().meta;
    let u = meta.user_by_name("alice").await.unwrap().unwrap();
    let root = meta.root(u.id).await.unwrap();
    let big = meta.mkdir(u.id, root.id, "big", 0o755).await.unwrap();
    for i in 0..10_000 {
        meta.mkdir(u.id, big.id, &format!("d{i:05}"), 0o755).await.unwrap();
    }
    let r = dav(&s, "PROPFIND", "/big/", "alice")
        .header("depth", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::MULTI_STATUS);
    let text = r.text().await.unwrap();
    assert_eq!(
        text.matches("<D:href>").count(),
        10_001,
        "the directory and its 10,000 children"
    );
    assert!(text.contains("d09999/"));

    // A directory smaller than a listing page: its and its children's dead properties
    // come from one query (MetaStore::props_in_dir), on both backends.
    for i in 0..3 {
        meta.mkdir(u.id, root.id, &format!("x{i}"), 0o755).await.unwrap();
    }
    let set = |v: &str| {
        format!(
            r#"<?xml version="1.0" encoding="utf-8"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:t"><D:set><D:prop><Z:tag>{v}</Z:tag></D:prop></D:set></D:propertyupdate>"#
        )
    };
    for (path, v) in [("/x1/", "one"), ("/", "root")] {
        let r = dav(&s, "PROPPATCH", path, "alice").body(set(v)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::MULTI_STATUS);
    }
    let r = dav(&s, "PROPFIND", "/", "alice")
        .header("depth", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::MULTI_STATUS);
    let text = r.text().await.unwrap();
    assert!(
        text.contains(">one</Z:tag>") && text.contains(">root</Z:tag>"),
        "{text}"
    );
    assert_eq!(text.matches("<D:href>").count(), 5, "root, big and x0..x2: {text}");
    s.stop().await;
}

both_backends! {
    litmus_passes_every_suite => litmus;
    protocol_details => protocol;
    propfind_large_directory => large_directory;
}

/// A client's connections all present the same new Basic header at once (and again
/// whenever the cached verification expires): one argon2 verification serves them all,
/// so none is refused by the sign-in rate limit, however small its burst.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_requests_verify_once() {
    let s = TestServer::start_with(Backend::Sqlite, |cfg| cfg.auth.signin_burst_per_user = 2)
        .await
        .unwrap();
    dav_user(&s, "carol").await;
    let requests = (0..16).map(|_| dav(&s, "PROPFIND", "/", "carol").header("depth", "0").send());
    for r in futures_util::future::join_all(requests).await {
        assert_eq!(r.unwrap().status(), StatusCode::MULTI_STATUS);
    }
    s.stop().await;
}

/// davfs2, the Linux kernel-level client: copy in and out, rename, delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn davfs2_mount() {
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    dav_user(&s, "alice").await;
    let dir = tempfile::tempdir().unwrap();
    let (mnt, cache) = (dir.path().join("mnt"), dir.path().join("cache"));
    std::fs::create_dir_all(&mnt).unwrap();
    std::fs::create_dir_all(&cache).unwrap();
    // davfs2 drops to its own user: it must be able to write its cache (no setgid bit).
    run(Command::new("chown").args(["root:davfs2", cache.to_str().unwrap()]));
    run(Command::new("chmod").args(["0775", cache.to_str().unwrap()]));
    let secrets = dir.path().join("secrets");
    std::fs::write(&secrets, format!("{} alice {PASSWORD}\n", mnt.display())).unwrap();
    run(Command::new("chmod").args(["0600", secrets.to_str().unwrap()]));
    let conf = dir.path().join("davfs2.conf");
    // buf_size 64 is needed on current kernels; delay_upload 0 uploads at close.
    std::fs::write(
        &conf,
        format!(
            "secrets {}\ncache_dir {}\nbuf_size 64\ndelay_upload 0\n",
            secrets.display(),
            cache.display()
        ),
    )
    .unwrap();
    let url = s.url("/dav/");
    run(Command::new("mount").args([
        "-t",
        "davfs",
        "-o",
        &format!("conf={}", conf.display()),
        &url,
        mnt.to_str().unwrap(),
    ]));
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let guard = Unmount(mnt.clone());
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 9) as u8)
        .collect();
    let src = dir.path().join("src.bin");
    std::fs::write(&src, &data).unwrap();
    let m = mnt.clone();
    let src2 = src.clone();
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir(m.join("folder")).unwrap();
        std::fs::copy(&src2, m.join("folder/in.bin")).unwrap();
        std::fs::rename(m.join("folder/in.bin"), m.join("folder/renamed.bin")).unwrap();
        std::fs::write(m.join("gone.txt"), b"x").unwrap();
        std::fs::remove_file(m.join("gone.txt")).unwrap();
    })
    .await
    .unwrap();
    drop(guard); // umount waits for davfs2 to finish uploading
                 // The server has exactly what was written.
    let r = dav(&s, "GET", "/folder/renamed.bin", "alice").send().await.unwrap();
    assert!(r.bytes().await.unwrap() == data);
    assert_eq!(
        dav(&s, "GET", "/gone.txt", "alice").send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        dav(&s, "GET", "/folder/in.bin", "alice").send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    // And reading through a fresh mount gives the same bytes.
    std::fs::remove_dir_all(&cache).unwrap();
    std::fs::create_dir_all(&cache).unwrap();
    run(Command::new("chown").args(["root:davfs2", cache.to_str().unwrap()]));
    run(Command::new("chmod").args(["0775", cache.to_str().unwrap()]));
    run(Command::new("mount").args([
        "-t",
        "davfs",
        "-o",
        &format!("conf={}", conf.display()),
        &url,
        mnt.to_str().unwrap(),
    ]));
    let guard = Unmount(mnt.clone());
    let m = mnt.clone();
    let back = tokio::task::spawn_blocking(move || std::fs::read(m.join("folder/renamed.bin")).unwrap())
        .await
        .unwrap();
    drop(guard);
    assert!(back == data);
    s.stop().await;
}

/// rclone as a WebDAV client: `rclone copy` then `rclone check` agree with the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rclone_copy_and_check() {
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    dav_user(&s, "alice").await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("tree");
    for (i, sub) in ["", "a", "a/b", "c"].iter().enumerate() {
        let d = src.join(sub);
        std::fs::create_dir_all(&d).unwrap();
        for j in 0..5 {
            let data: Vec<u8> = (0..(1000 * (j + 1) + i)).map(|k| (k * 31 + j) as u8).collect();
            std::fs::write(d.join(format!("f{j}.bin")), data).unwrap();
        }
    }
    std::fs::write(src.join("a/same.bin"), b"duplicate").unwrap();
    std::fs::write(src.join("c/same.bin"), b"duplicate").unwrap();
    let url = s.url("/dav/");
    let src2 = src.clone();
    tokio::task::spawn_blocking(move || {
        let obscured = run(Command::new("rclone").args(["obscure", PASSWORD]))
            .trim()
            .to_string();
        let rclone = |args: &[&str]| {
            let mut c = Command::new("rclone");
            c.env("RCLONE_CONFIG", "/dev/null")
                .env("RCLONE_CONFIG_FS_TYPE", "webdav")
                .env("RCLONE_CONFIG_FS_URL", &url)
                .env("RCLONE_CONFIG_FS_VENDOR", "other")
                .env("RCLONE_CONFIG_FS_USER", "alice")
                .env("RCLONE_CONFIG_FS_PASS", &obscured)
                .args(args);
            run(&mut c)
        };
        rclone(&["copy", src2.to_str().unwrap(), "fs:backup"]);
        let out = rclone(&["check", src2.to_str().unwrap(), "fs:backup"]);
        assert!(out.contains("0 differences found"), "{out}");
    })
    .await
    .unwrap();
    let r = dav(&s, "GET", "/backup/a/b/f4.bin", "alice").send().await.unwrap();
    assert!(r.bytes().await.unwrap() == std::fs::read(src.join("a/b/f4.bin")).unwrap());
    s.stop().await;
}
