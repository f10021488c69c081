//! The JSON API against the real server on an ephemeral port, on SQLite and MariaDB.

mod common;

use common::{Backend, TestServer};
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};

struct Api<'a> {
    s: &'a TestServer,
    token: String,
}

impl Api<'_> {
    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.s
            .http
            .request(method, self.s.url(&format!("/api/v1{path}")))
            .bearer_auth(&self.token)
    }
    async fn put(&self, path: &str, body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
        let r = self
            .req(reqwest::Method::PUT, &format!("/files{path}"))
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap())
    }
    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self.req(reqwest::Method::GET, path).send().await.unwrap();
        let st = r.status();
        (st, r.json().await.unwrap_or(Value::Null))
    }
    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self.req(reqwest::Method::POST, path).json(&body).send().await.unwrap();
        let st = r.status();
        (st, r.json().await.unwrap_or(Value::Null))
    }
    async fn bytes(&self, path: &str) -> Vec<u8> {
        let r = self
            .req(reqwest::Method::GET, &format!("/files{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "GET {path}");
        r.bytes().await.unwrap().to_vec()
    }
    async fn names(&self, dir: &str) -> Vec<String> {
        let (st, v) = self.get(&format!("/list{dir}")).await;
        assert_eq!(st, 200, "{v}");
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect()
    }
}

fn objects_on_disk(s: &TestServer) -> usize {
    s.running().services().staging.objects().files().unwrap().len()
}

async fn tree_and_content(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let api = Api {
        s: &s,
        token: s.user("alice").await,
    };

    let (st, v) = api.post("/dirs/docs/2026/q1?parents=true", json!(null)).await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["path"], "/docs/2026/q1");
    let (st, _) = api.post("/dirs/docs", json!(null)).await;
    assert_eq!(st, StatusCode::CONFLICT);
    let (st, _) = api.post("/dirs/missing/child", json!(null)).await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // PUT streams; a body without Content-Length (chunked) works too.
    let (st, v) = api.put("/docs/a.txt", "alpha").await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["sha1"], "be76331b95dfc399cd776d2fc68021e0db03cc4f");
    let chunks: Vec<Result<&'static [u8], std::io::Error>> = vec![Ok(b"be"), Ok(b"ta")];
    let (st, _) = api
        .put(
            "/docs/b.txt",
            reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)),
        )
        .await;
    assert_eq!(st, 201);
    assert_eq!(api.bytes("/docs/b.txt").await, b"beta");
    // Replacing keeps the id; If-None-Match: * refuses; overwrite=false refuses.
    let (_, before) = api.get("/stat/docs/a.txt").await;
    let (st, v) = api.put("/docs/a.txt", "alpha 2").await;
    assert_eq!(st, 200);
    assert_eq!(v["id"], before["id"]);
    let r = api
        .req(reqwest::Method::PUT, "/files/docs/a.txt")
        .header("if-none-match", "*")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    let r = api
        .req(reqwest::Method::PUT, "/files/docs/a.txt?overwrite=false")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    let r = api
        .req(reqwest::Method::PUT, "/files/docs/a.txt")
        .header("if-match", "\"nope\"")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(api.bytes("/docs/a.txt").await, b"alpha 2");
    let (st, _) = api.put("/docs", "x").await;
    assert_eq!(st, StatusCode::CONFLICT, "a directory is not replaced by a file");
    let (st, _) = api.put("/nodir/x.txt", "x").await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // Download: ETag, conditional, ranges.
    let r = api.req(reqwest::Method::GET, "/files/docs/a.txt").send().await.unwrap();
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(r.headers()["content-type"], "text/plain");
    let r = api
        .req(reqwest::Method::GET, "/files/docs/a.txt")
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let r = api
        .req(reqwest::Method::GET, "/files/docs/a.txt")
        .header("range", "bytes=-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"2");
    let r = api
        .req(reqwest::Method::GET, "/files/docs/a.txt")
        .header("range", "bytes=100-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.headers()["content-range"], "bytes */7");
    let r = api
        .req(reqwest::Method::HEAD, "/files/docs/a.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-length"], "7");

    // Listing pages in byte order.
    for i in 0..25 {
        api.put(&format!("/docs/2026/f{i:02}"), format!("file {i}")).await;
    }
    let mut all = Vec::new();
    let mut after = String::new();
    loop {
        let (_, v) = api.get(&format!("/list/docs/2026?limit=10&after={after}")).await;
        for e in v["entries"].as_array().unwrap() {
            all.push(e["name"].as_str().unwrap().to_string());
        }
        match v["next"].as_str() {
            Some(n) => after = n.to_string(),
            None => break,
        }
    }
    let mut expected: Vec<String> = (0..25).map(|i| format!("f{i:02}")).collect();
    expected.push("q1".into());
    assert_eq!(all, expected);
    let (st, _) = api.get("/list/docs/2026?limit=0").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = api.get("/list/docs/a.txt").await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(api.names("").await, vec!["docs"]);

    // Move: atomic rename, same id, no bytes copied; overwrite follows rename(2).
    let (st, v) = api
        .post(
            "/move",
            json!({"from": "/docs/a.txt", "to": "/docs/2026/q1/a-moved.txt"}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["id"], before["id"]);
    let (st, _) = api
        .post(
            "/move",
            json!({"from": "/docs/b.txt", "to": "/docs/2026/q1/a-moved.txt"}),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    let (st, _) = api
        .post(
            "/move",
            json!({"from": "/docs/b.txt", "to": "/docs/2026/q1/a-moved.txt", "overwrite": true}),
        )
        .await;
    assert_eq!(st, 200);
    let (st, v) = api
        .post("/move", json!({"from": "/docs", "to": "/docs/2026/inside"}))
        .await;
    assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("cycle")));

    // Copy: a new entry on the same content.
    let objects = objects_on_disk(&s);
    let (st, v) = api.post("/copy", json!({"from": "/docs", "to": "/docs-copy"})).await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(api.bytes("/docs-copy/2026/q1/a-moved.txt").await, b"beta");
    assert_eq!(objects_on_disk(&s), objects, "copy stores no bytes");

    // Delete: directories need recursive=true.
    let r = api.req(reqwest::Method::DELETE, "/files/docs").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let r = api
        .req(reqwest::Method::DELETE, "/files/docs?recursive=true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (st, _) = api.get("/stat/docs").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(api.bytes("/docs-copy/2026/f03").await, b"file 3");
    let (st, v) = api.get("/me").await;
    assert_eq!(st, 200);
    assert!(v["usage"]["bytes"].as_i64().unwrap() > 0);
    s.stop().await;
}

async fn bad_input(backend: Backend) {
    let Some(s) = TestServer::start_with(backend, |c| c.server.max_upload_bytes = 100_000).await else {
        return;
    };
    let api = Api {
        s: &s,
        token: s.user("mallory").await,
    };
    let cases: Vec<(reqwest::RequestBuilder, StatusCode)> = vec![
        // Malformed JSON, wrong types, unknown fields.
        (
            s.http.post(s.url("/api/v1/auth/signin")).body("{not json"),
            StatusCode::BAD_REQUEST,
        ),
        (
            s.http
                .post(s.url("/api/v1/auth/signin"))
                .json(&json!({"username": 5, "password": []})),
            StatusCode::BAD_REQUEST,
        ),
        (
            s.http
                .post(s.url("/api/v1/auth/signup"))
                .json(&json!({"username": "x", "password": "y", "admin": true})),
            StatusCode::BAD_REQUEST,
        ),
        (
            api.req(reqwest::Method::POST, "/move").body("[]"),
            StatusCode::BAD_REQUEST,
        ),
        (
            api.req(reqwest::Method::GET, "/list?limit=many"),
            StatusCode::BAD_REQUEST,
        ),
        // Invalid names.
        (
            api.req(reqwest::Method::PUT, &format!("/files/{}", "n".repeat(256)))
                .body("x"),
            StatusCode::BAD_REQUEST,
        ),
        (api.req(reqwest::Method::POST, "/dirs/a%00b"), StatusCode::BAD_REQUEST),
        // Missing and bogus tokens.
        (s.http.get(s.url("/api/v1/me")), StatusCode::UNAUTHORIZED),
        (
            s.http.get(s.url("/api/v1/me")).bearer_auth("0".repeat(40)),
            StatusCode::UNAUTHORIZED,
        ),
        (
            s.http.get(s.url("/api/v1/me")).bearer_auth("x".repeat(5000)),
            StatusCode::UNAUTHORIZED,
        ),
        // Unknown routes and methods.
        (api.req(reqwest::Method::GET, "/nope"), StatusCode::NOT_FOUND),
        (
            api.req(reqwest::Method::PATCH, "/files/x"),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        // A JSON body over the small-body limit.
        (
            api.req(reqwest::Method::POST, "/move").body(vec![b' '; 200_000]),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ];
    for (i, (req, want)) in cases.into_iter().enumerate() {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), want, "case {i}");
        let v: Value = r
            .json()
            .await
            .unwrap_or_else(|e| panic!("case {i}: body is not JSON: {e}"));
        assert!(v["error"]["code"].is_string(), "case {i}: {v}");
    }
    let r = s.http.get(s.url("/api/v1/me")).send().await.unwrap();
    assert!(r.headers().contains_key("www-authenticate"));
    // After a 413 the connection is closed, and the answer says so: a client must not
    // send its next request on it (that request would fail with a broken pipe).
    let r = api
        .req(reqwest::Method::POST, "/move")
        .body(vec![b' '; 200_000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.headers()["connection"], "close");
    // Traversal: URL libraries resolve `..` (even percent-encoded) before sending, so these
    // go out raw, as an attacker would send them.
    for target in [
        "/api/v1/stat/a/../../etc",
        "/api/v1/stat/a/%2e%2e/%2e%2e/etc",
        "/api/v1/files/..",
    ] {
        let req = format!(
            "GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
            api.token
        );
        let (status, body) = common::raw_request(&s.base, req.as_bytes()).await;
        assert_eq!(status, 400, "{target}: {body}");
        assert!(body.contains("invalid_name"), "{target}: {body}");
    }

    // Over the upload limit: 413 (declared) and nothing stored either way.
    let head = format!(
        "PUT /api/v1/files/big HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 999999999999\r\n\r\n",
        api.token
    );
    let (status, body) = common::raw_request(&s.base, head.as_bytes()).await;
    assert_eq!(status, 413, "{body}");
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(
        (0..50).map(|_| Ok::<_, std::io::Error>(vec![1u8; 10_000])),
    ));
    if let Ok(r) = api.req(reqwest::Method::PUT, "/files/big").body(body).send().await {
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
    let (st, _) = api.get("/stat/big").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(objects_on_disk(&s), 0);
    // Malformed Content-Length is rejected by the HTTP layer, not a 500.
    let head = "PUT /api/v1/files/x HTTP/1.1\r\nHost: x\r\nContent-Length: lots\r\n\r\n";
    let (status, _) = common::raw_request(&s.base, head.as_bytes()).await;
    assert_eq!(status, 400);
    s.stop().await;
}

/// Users see only their own tree; the same path names different files.
async fn isolation(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let a = Api {
        s: &s,
        token: s.user("alice").await,
    };
    let b = Api {
        s: &s,
        token: s.user("bobby").await,
    };
    a.put("/secret.txt", "alice only").await;
    let (st, _) = b.get("/stat/secret.txt").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert!(b.names("").await.is_empty());
    let (st, _) = b.post("/copy", json!({"from": "/secret.txt", "to": "/mine"})).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    b.put("/secret.txt", "bob's").await;
    assert_eq!(a.bytes("/secret.txt").await, b"alice only");
    assert_eq!(b.bytes("/secret.txt").await, b"bob's");
    s.stop().await;
}

/// Identical bytes uploaded at once by many clients: one stored copy, every entry right;
/// a re-upload stores nothing; deleted content is collected after the grace period.
async fn dedup(backend: Backend) {
    let Some(s) = TestServer::start_with(backend, |c| c.storage.gc_grace_secs = 0).await else {
        return;
    };
    let api = Api {
        s: &s,
        token: s.user("alice").await,
    };
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (http, url, token, data) = (
            s.http.clone(),
            s.url(&format!("/api/v1/files/c{i}")),
            api.token.clone(),
            data.clone(),
        );
        tasks.push(tokio::spawn(async move {
            // Stream in small pieces so the uploads really overlap.
            let pieces: Vec<Result<Vec<u8>, std::io::Error>> = data.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
            let body = reqwest::Body::wrap_stream(futures_util::stream::iter(pieces));
            http.put(url)
                .bearer_auth(token)
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::CREATED);
    }
    assert_eq!(objects_on_disk(&s), 1, "one stored copy");
    let meta = &s.running().services().meta;
    let sha1 = {
        let (_, v) = api.get("/stat/c0").await;
        v["sha1"].as_str().unwrap().to_string()
    };
    assert_eq!(meta.content(&sha1).await.unwrap().unwrap().refcount, 8);
    for i in 0..8 {
        let mut stream = api
            .req(reqwest::Method::GET, &format!("/files/c{i}"))
            .send()
            .await
            .unwrap()
            .bytes_stream();
        let mut got = Vec::new();
        while let Some(c) = stream.next().await {
            got.extend_from_slice(&c.unwrap());
        }
        assert!(got == data, "c{i} intact");
    }
    // Re-upload: a dedup hit, nothing new on disk, no temp file left behind.
    api.put("/again", data.clone()).await;
    assert_eq!(objects_on_disk(&s), 1);
    let incoming = s.db.dir.path().join("data/staging/incoming");
    assert_eq!(std::fs::read_dir(&incoming).unwrap().count(), 0);
    // Delete all: the bytes stay until collection, then go.
    for name in ["c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "again"] {
        api.req(reqwest::Method::DELETE, &format!("/files/{name}"))
            .send()
            .await
            .unwrap();
    }
    assert_eq!(objects_on_disk(&s), 1, "kept during the grace period");
    let staging = s.running().services().staging.clone();
    let n = filestore::gc::collect_garbage(meta, staging.objects(), None, std::time::Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(objects_on_disk(&s), 0);
    assert!(meta.content(&sha1).await.unwrap().is_none());
    s.stop().await;
}

/// Gives alice a file "planted" whose content row claims `bytes`' SHA-1 and size, with the
/// second hash `sha256`; `place` puts whatever bytes the test wants behind it. Returns the
/// SHA-1.
async fn plant(s: &TestServer, bytes: &[u8], sha256: Option<String>, place: &filestore::meta::PlaceFn<'_>) -> String {
    let meta = &s.running().services().meta;
    let sha1 = {
        use sha1::Digest;
        hex::encode(sha1::Sha1::digest(bytes))
    };
    let owner = meta.user_by_name("alice").await.unwrap().unwrap();
    let root = meta.root(owner.id).await.unwrap();
    let planted = filestore::meta::CommitFile {
        owner: owner.id,
        parent: root.id,
        name: "planted".into(),
        content: filestore::meta::NewContent {
            sha1: sha1.clone(),
            sha256,
            size: bytes.len() as i64,
            inline: None,
        },
        conflict: filestore::meta::Conflict::Fail,
        mode: 0o644,
        mtime: None,
    };
    meta.commit_file(&planted, place).await.unwrap();
    sha1
}

/// A crafted SHA-1 collision (same SHA-1, other bytes) must not link to the stored copy.
/// Real colliding inputs are not reachable here, so the stored row is given a different
/// SHA-256, which is what such an input would produce.
async fn collision_refused(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let api = Api {
        s: &s,
        token: s.user("alice").await,
    };
    let meta = &s.running().services().meta;
    let bytes = b"the victim's document".to_vec();
    let sha1 = plant(&s, &bytes, Some("ab".repeat(32)), &|_| Ok(())).await;
    let (st, v) = api.put("/upload", bytes).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("content_collision"))
    );
    let (st, _) = api.get("/stat/upload").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(meta.content(&sha1).await.unwrap().unwrap().refcount, 1);
    s.stop().await;
}

/// Content uploaded once has no second hash yet: it is computed on the first dedup hit,
/// from the stored bytes and from the new upload's, and compared. Stored bytes that differ
/// behind the same SHA-1 (what a crafted collision would be) refuse the upload; equal ones
/// link it, and the stored hash is recorded once.
async fn second_hash_on_first_dedup_hit(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let api = Api {
        s: &s,
        token: s.user("alice").await,
    };
    let meta = &s.running().services().meta;
    let sha256 = |b: &[u8]| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(b))
    };

    // A fresh upload to the staging disk records no second hash (content kept in its row
    // does: see `small_content_in_its_row`).
    let bytes: Vec<u8> = b"uploaded twice, hashed twice only once"
        .iter()
        .cycle()
        .take(filestore::blob::INLINE_MAX as usize + 1)
        .copied()
        .collect();
    let (st, v) = api.put("/first", bytes.clone()).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let sha1 = v["sha1"].as_str().unwrap().to_string();
    assert_eq!(meta.content(&sha1).await.unwrap().unwrap().sha256, "");
    // The second upload of the same bytes hashes both sides, links, and records it.
    let (st, v) = api.put("/second", bytes.clone()).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let row = meta.content(&sha1).await.unwrap().unwrap();
    assert_eq!((row.sha256, row.refcount), (sha256(&bytes), 2));
    assert_eq!(objects_on_disk(&s), 1);

    // Stored bytes that are not the upload's, under the upload's SHA-1.
    let victim = b"the victim's other document".to_vec();
    let mut stored = b"something else entirely".to_vec();
    stored.resize(victim.len(), b'.');
    let objects = s.running().services().staging.objects().clone();
    let place = |c: &filestore::meta::Content| {
        let path = objects.path(&c.sha1);
        std::fs::create_dir_all(path.parent().unwrap())?;
        std::fs::write(path, &stored)
    };
    let victim_sha1 = plant(&s, &victim, None, &place).await;
    let (st, v) = api.put("/victim", victim).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("content_collision"))
    );
    let (st, _) = api.get("/stat/victim").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let row = meta.content(&victim_sha1).await.unwrap().unwrap();
    assert_eq!((row.sha256, row.refcount), (sha256(&stored), 1));
    s.stop().await;
}

/// Content of at most `INLINE_MAX` bytes is stored in its row, not on the staging disk:
/// whole and ranged reads through both APIs, dedup against it, collection; one byte more
/// goes to the disk as before; a small upload restores a staging-disk copy gone missing.
async fn small_content_in_its_row(backend: Backend) {
    let Some(s) = TestServer::start_with(backend, |c| c.storage.gc_grace_secs = 0).await else {
        return;
    };
    let api = Api {
        s: &s,
        token: s.user("alice").await,
    };
    let meta = &s.running().services().meta;
    let max = filestore::blob::INLINE_MAX as usize;
    let small: Vec<u8> = (0..max as u32).map(|i| (i * 31 % 251) as u8).collect();
    let (st, v) = api.put("/small", small.clone()).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let sha1 = v["sha1"].as_str().unwrap().to_string();
    let row = meta.content(&sha1).await.unwrap().unwrap();
    assert_eq!(row.store, "inline");
    assert!(row.data.as_deref() == Some(&small[..]), "the row holds the bytes");
    assert_eq!(row.sha256, hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&small)));
    assert_eq!(objects_on_disk(&s), 0, "nothing on the staging disk");
    let incoming = s.db.dir.path().join("data/staging/incoming");
    assert_eq!(std::fs::read_dir(&incoming).unwrap().count(), 0);
    assert!(api.bytes("/small").await == small);
    let r = api
        .req(reqwest::Method::GET, "/files/small")
        .header("range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &small[100..200]);
    let r = s
        .http
        .get(s.url("/dav/small"))
        .bearer_auth(&api.token)
        .header("range", "bytes=-10")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "WebDAV range");
    assert_eq!(r.bytes().await.unwrap().as_ref(), &small[max - 10..]);
    // The same bytes again, over WebDAV: a dedup hit on the row.
    let r = s
        .http
        .put(s.url("/dav/again"))
        .bearer_auth(&api.token)
        .body(small.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(meta.content(&sha1).await.unwrap().unwrap().refcount, 2);
    // The empty file is content too.
    let (st, v) = api.put("/empty", Vec::new()).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let empty = meta.content(v["sha1"].as_str().unwrap()).await.unwrap().unwrap();
    assert_eq!((empty.store.as_str(), empty.data.as_deref()), ("inline", Some(&[][..])));
    assert!(api.bytes("/empty").await.is_empty());
    // One byte more is a file on the staging disk, as before.
    let mut larger = small.clone();
    larger.push(7);
    let (st, v) = api.put("/larger", larger.clone()).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let row = meta.content(v["sha1"].as_str().unwrap()).await.unwrap().unwrap();
    assert_eq!((row.store.as_str(), row.data.is_none()), ("local", true));
    assert_eq!(objects_on_disk(&s), 1);
    assert!(api.bytes("/larger").await == larger);
    // A staging-disk row that lost its file and has no second hash yet: a small upload
    // of its bytes puts them back, as a streamed upload would.
    let lost = b"bytes whose stored copy went missing".to_vec();
    let lost_sha1 = plant(&s, &lost, None, &|_| Ok(())).await;
    assert!(!s.running().services().staging.objects().contains(&lost_sha1));
    let (st, v) = api.put("/found", lost.clone()).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert!(s.running().services().staging.objects().contains(&lost_sha1));
    assert!(api.bytes("/found").await == lost);
    assert!(api.bytes("/planted").await == lost, "the older entry reads again");
    // Deleted and collected: the row goes, with its bytes.
    for name in ["small", "again", "larger", "empty", "found", "planted"] {
        let r = api
            .req(reqwest::Method::DELETE, &format!("/files/{name}"))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "delete {name}");
    }
    let staging = s.running().services().staging.clone();
    let n = filestore::gc::collect_garbage(meta, staging.objects(), None, std::time::Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(n, 4);
    assert!(meta.content(&sha1).await.unwrap().is_none());
    assert_eq!(objects_on_disk(&s), 0);
    s.stop().await;
}

async fn openapi_documents_every_route(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let doc: Value = s
        .http
        .get(s.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = doc["paths"].as_object().unwrap();
    // Every router merged under /api/v1.
    let sources = [
        include_str!("../src/http/v1.rs"),
        include_str!("../src/http/v1_upload.rs"),
        include_str!("../src/http/v1_entries.rs"),
    ];
    let mut seen = 0;
    for line in sources
        .iter()
        .flat_map(|src| src.lines())
        .map(str::trim)
        .filter(|l| l.starts_with(".route(\"/") || l.starts_with("\"/") && l.ends_with("\","))
    {
        let route = line.split('"').nth(1).unwrap().replace("{*path}", "{path}");
        assert!(paths.contains_key(&route), "route {route} is missing from openapi.json");
        seen += 1;
    }
    assert!(seen >= 23, "only {seen} routes found in the sources");
    assert!(paths.len() >= 23);
    s.stop().await;
}

/// Failed sign-ins are limited per user name and per client address; successes do not
/// count against the user.
async fn signin_rate_limit(backend: Backend) {
    let Some(s) = TestServer::start_with(backend, |c| {
        c.auth.signin_burst_per_user = 3;
        c.auth.signin_per_minute_per_user = 1;
        c.auth.signin_burst_per_ip = 6;
        c.auth.signin_per_minute_per_ip = 1;
    })
    .await
    else {
        return;
    };
    s.user("alice").await;
    s.user("bobby").await;
    let attempt = |user: &'static str, pw: &'static str| {
        let (http, url) = (s.http.clone(), s.url("/api/v1/auth/signin"));
        async move {
            let r = http
                .post(url)
                .json(&json!({"username": user, "password": pw}))
                .send()
                .await
                .unwrap();
            (
                r.status(),
                r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string()),
            )
        }
    };
    for _ in 0..5 {
        assert_eq!(
            attempt("alice", "password-of-alice").await.0,
            200,
            "successes are not limited"
        );
    }
    for _ in 0..3 {
        assert_eq!(attempt("alice", "wrong").await.0, StatusCode::UNAUTHORIZED);
    }
    let (st, retry) = attempt("alice", "password-of-alice").await;
    assert_eq!(
        st,
        StatusCode::TOO_MANY_REQUESTS,
        "even the right password waits once the user is locked"
    );
    assert!(retry.unwrap().parse::<u64>().unwrap() >= 1);
    // The address has used 3 of 6 failures; three more on another user exhaust it.
    for _ in 0..3 {
        assert_eq!(attempt("bobby", "wrong").await.0, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        attempt("bobby", "password-of-bobby").await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    s.stop().await;
}

both_backends! {
    signin_rate_limit => signin_rate_limit;
    tree_and_content => tree_and_content;
    bad_input_gets_4xx_json => bad_input;
    users_are_isolated => isolation;
    dedup_under_concurrency => dedup;
    sha1_collision_refused => collision_refused;
    second_hash_on_first_dedup_hit => second_hash_on_first_dedup_hit;
    small_content_in_its_row => small_content_in_its_row;
    openapi => openapi_documents_every_route;
}
