//! Chunked and instant uploads through the seed routes and the JSON API, with sessions in
//! the database (SQLite, MariaDB) and in Redis; several gateways sharing one upload;
//! Redis unreachable.

mod common;

use common::{Backend, TestServer};
use filestore::config::Config;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha1::Digest;

const CHUNK: usize = 64 * 1024;

fn sha1_hex(data: &[u8]) -> String {
    hex::encode(sha1::Sha1::digest(data))
}

fn payload(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

fn redis_url() -> Option<String> {
    std::env::var("FILESTORE_TEST_REDIS_URL").ok().filter(|s| !s.is_empty())
}

/// Session store of a run: the metadata database, or Redis with a prefix of its own.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Sessions {
    Database,
    Redis,
}

fn configure(sessions: Sessions) -> Option<impl FnOnce(&mut Config)> {
    let redis = match sessions {
        Sessions::Database => None,
        Sessions::Redis => Some(redis_url().or_else(|| {
            eprintln!("FILESTORE_TEST_REDIS_URL is not set: skipping the Redis run");
            None
        })?),
    };
    Some(move |c: &mut Config| {
        c.sessions.chunk_size = CHUNK as u64;
        if let Some(url) = redis {
            c.sessions.redis_url = url;
            c.sessions.key_prefix = format!("fstest:{}:", filestore::util::random_hex(6));
        }
    })
}

async fn form(s: &TestServer, path: &str, token: &str, params: &[(&str, &str)]) -> (StatusCode, Value) {
    let r = s
        .http
        .post(s.url(path))
        .bearer_auth(token)
        .form(params)
        .send()
        .await
        .unwrap();
    let st = r.status();
    (st, r.json().await.unwrap_or(Value::Null))
}

async fn seed_part(
    s: &TestServer,
    token: &str,
    id: &str,
    index: usize,
    body: Vec<u8>,
    hash: Option<&str>,
) -> StatusCode {
    let mut url = format!("/file/mpupload/uppart?uploadid={id}&index={index}");
    if let Some(h) = hash {
        url.push_str(&format!("&chkhash={h}"));
    }
    s.http
        .post(s.url(&url))
        .bearer_auth(token)
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
}

/// `PUT /api/v1/uploads/{id}/parts/{index}`: the status.
async fn v1_part(s: &TestServer, token: &str, id: &str, index: usize, body: Vec<u8>) -> StatusCode {
    s.http
        .put(s.url(&format!("/api/v1/uploads/{id}/parts/{index}")))
        .bearer_auth(token)
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
}

/// `POST /api/v1/uploads/{id}/complete` with `body` (none: no JSON at all).
async fn v1_complete(s: &TestServer, token: &str, id: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = s
        .http
        .post(s.url(&format!("/api/v1/uploads/{id}/complete")))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    (r.status(), r.json::<Value>().await.unwrap_or(Value::Null))
}

fn objects(s: &TestServer) -> usize {
    walk(&s.db.dir.path().join("data/staging/objects"))
}

fn parts_files(s: &TestServer) -> usize {
    walk(&s.db.dir.path().join("data/staging/parts"))
}

fn walk(p: &std::path::Path) -> usize {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| if e.path().is_dir() { walk(&e.path()) } else { 1 })
                .sum()
        })
        .unwrap_or(0)
}

/// The seed's chunked-upload flow, and everything it got wrong (SEED-API.md 8.3.11-13).
async fn seed_chunked(backend: Backend, sessions: Sessions) {
    let Some(tweak) = configure(sessions) else { return };
    let Some(s) = TestServer::start_with(backend, tweak).await else {
        return;
    };
    let t = s.user("alice").await;
    let other = s.user("mallory").await;
    let data = payload(5 * CHUNK + 1234, 1);
    let hash = sha1_hex(&data);
    let size = data.len().to_string();

    let (st, v) = form(
        &s,
        "/file/mpupload/init",
        &t,
        &[("filehash", &hash), ("filesize", &size)],
    )
    .await;
    assert_eq!((st, v["code"].as_i64()), (StatusCode::OK, Some(10000)), "{v}");
    let id = v["data"]["UploadID"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 32, "128 random bits");
    assert_eq!(v["data"]["ChunkCount"], 6);
    assert_eq!(v["data"]["ChunkSize"], CHUNK);
    let chunk = |i: usize| data[(i - 1) * CHUNK..(i * CHUNK).min(data.len())].to_vec();

    // Out of order, one sent twice, with per-chunk hashes.
    for i in [3usize, 1, 6, 3] {
        assert_eq!(
            seed_part(&s, &t, &id, i, chunk(i), Some(&sha1_hex(&chunk(i)))).await,
            200,
            "chunk {i}"
        );
    }
    // Out-of-range indices, wrong sizes, corrupted chunks, someone else's id.
    for bad in [0usize, 7] {
        assert_eq!(
            seed_part(&s, &t, &id, bad, chunk(1), None).await,
            StatusCode::BAD_REQUEST,
            "index {bad}"
        );
    }
    let r = s
        .http
        .post(s.url(&format!("/file/mpupload/uppart?uploadid={id}&index=../../x")))
        .bearer_auth(&t)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        seed_part(&s, &t, &id, 2, chunk(2)[..100].to_vec(), None).await,
        StatusCode::BAD_REQUEST
    );
    let mut corrupt = chunk(2);
    corrupt[7] ^= 0xff;
    assert_eq!(
        seed_part(&s, &t, &id, 2, corrupt, Some(&sha1_hex(&chunk(2)))).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        seed_part(&s, &other, &id, 2, chunk(2), None).await,
        StatusCode::NOT_FOUND
    );
    let (st, _) = form(&s, "/file/mpupload/status", &other, &[("uploadid", &id)]).await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // Status, and completion refused while chunks are missing (an unknown id is a 404).
    let (_, v) = form(&s, "/file/mpupload/status", &t, &[("uploadid", &id)]).await;
    assert_eq!(v["data"]["ChunkExists"], json!([1, 3, 6]));
    let (st, v) = form(
        &s,
        "/file/mpupload/complete",
        &t,
        &[("uploadid", &id), ("filename", "f.bin")],
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    let (st, _) = form(
        &s,
        "/file/mpupload/complete",
        &t,
        &[("uploadid", &"0".repeat(32)), ("filename", "f.bin")],
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // Resuming: init again with the same hash and size names the same session.
    let (_, v) = form(
        &s,
        "/file/mpupload/init",
        &t,
        &[("filehash", &hash), ("filesize", &size)],
    )
    .await;
    assert_eq!(v["data"]["UploadID"], id.as_str());
    assert_eq!(v["data"]["ChunkExists"], json!([1, 3, 6]));
    for i in [2usize, 4, 5] {
        assert_eq!(seed_part(&s, &t, &id, i, chunk(i), None).await, 200);
    }
    let (st, v) = form(
        &s,
        "/file/mpupload/complete",
        &t,
        &[
            ("uploadid", &id),
            ("filename", "f.bin"),
            ("filehash", &hash),
            ("filesize", &size),
        ],
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["FileHash"], hash.as_str());
    let r = s
        .http
        .get(s.url(&format!("/file/download?filehash={hash}")))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert!(r.bytes().await.unwrap() == data, "assembled bytes are the file");
    assert_eq!(parts_files(&s), 0, "chunk data removed after completion");
    let (st, _) = form(&s, "/file/mpupload/status", &t, &[("uploadid", &id)]).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "the session is gone");

    // A wrong declared hash: refused at completion, nothing visible, staging cleaned.
    let liar = payload(2 * CHUNK, 2);
    let claimed = sha1_hex(b"something else");
    let (_, v) = form(
        &s,
        "/file/mpupload/init",
        &t,
        &[("filehash", &claimed), ("filesize", &liar.len().to_string())],
    )
    .await;
    let lid = v["data"]["UploadID"].as_str().unwrap().to_string();
    for i in 1..=2 {
        assert_eq!(
            seed_part(&s, &t, &lid, i, liar[(i - 1) * CHUNK..i * CHUNK].to_vec(), None).await,
            200
        );
    }
    let before = objects(&s);
    let (st, v) = form(
        &s,
        "/file/mpupload/complete",
        &t,
        &[("uploadid", &lid), ("filename", "liar.bin")],
    )
    .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (_, v) = form(&s, "/file/query", &t, &[]).await;
    assert_eq!(v.as_array().unwrap().len(), 1, "only f.bin is visible");
    assert_eq!(objects(&s), before);
    assert_eq!(parts_files(&s), 0);

    // Cancel removes the session and its bytes; a zero-byte upload has no chunks.
    let (_, v) = form(
        &s,
        "/file/mpupload/init",
        &t,
        &[("filehash", &sha1_hex(&liar)), ("filesize", &liar.len().to_string())],
    )
    .await;
    let cid = v["data"]["UploadID"].as_str().unwrap().to_string();
    assert_eq!(parts_files(&s), 1);
    let (st, _) = form(&s, "/file/mpupload/cancel", &t, &[("uploadid", &cid)]).await;
    assert_eq!(st, 200);
    assert_eq!(parts_files(&s), 0);
    let empty = sha1_hex(b"");
    let (_, v) = form(
        &s,
        "/file/mpupload/init",
        &t,
        &[("filehash", &empty), ("filesize", "0")],
    )
    .await;
    assert_eq!(v["data"]["ChunkCount"], 0);
    let eid = v["data"]["UploadID"].as_str().unwrap().to_string();
    let (st, v) = form(
        &s,
        "/file/mpupload/complete",
        &t,
        &[("uploadid", &eid), ("filename", "empty")],
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["FileSize"], 0);
    s.stop().await;
}

/// The JSON API's uploads, and two clients uploading the same bytes at once.
async fn json_chunked(backend: Backend, sessions: Sessions) {
    let Some(tweak) = configure(sessions) else { return };
    let Some(s) = TestServer::start_with(backend, tweak).await else {
        return;
    };
    let t = s.user("alice").await;
    let data = payload(4 * CHUNK + 10, 3);
    let hash = sha1_hex(&data);
    let mut ids = Vec::new();
    for path in ["/one.bin", "/two.bin"] {
        let r = s
            .http
            .post(s.url("/api/v1/uploads"))
            .bearer_auth(&t)
            .json(&json!({"path": path, "size": data.len(), "sha1": hash}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["chunk_count"], 5);
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    // Both sessions' chunks interleaved and concurrent.
    let mut tasks = Vec::new();
    for i in 1..=5usize {
        for id in &ids {
            let (http, url, t, body) = (
                s.http.clone(),
                s.url(&format!("/api/v1/uploads/{id}/parts/{i}")),
                t.clone(),
                data[(i - 1) * CHUNK..(i * CHUNK).min(data.len())].to_vec(),
            );
            tasks.push(tokio::spawn(async move {
                http.put(url).bearer_auth(t).body(body).send().await.unwrap().status()
            }));
        }
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    let (a, b) = (ids[0].clone(), ids[1].clone());
    let done = |id: String| {
        let (http, url, t) = (
            s.http.clone(),
            s.url(&format!("/api/v1/uploads/{id}/complete")),
            t.clone(),
        );
        async move { http.post(url).bearer_auth(t).send().await.unwrap() }
    };
    let (ra, rb) = tokio::join!(done(a), done(b));
    assert_eq!((ra.status(), rb.status()), (StatusCode::CREATED, StatusCode::CREATED));
    assert_eq!(objects(&s), 1, "one stored copy");
    let meta = &s.running().services().meta;
    assert_eq!(meta.content(&hash).await.unwrap().unwrap().refcount, 2);
    for p in ["one.bin", "two.bin"] {
        let r = s
            .http
            .get(s.url(&format!("/api/v1/files/{p}")))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap();
        assert!(r.bytes().await.unwrap() == data);
    }
    // A part body longer than the chunk size is refused; a bad chunk hash too.
    let r = s
        .http
        .post(s.url("/api/v1/uploads"))
        .bearer_auth(&t)
        .json(&json!({"path": "/x", "size": 10, "sha1": hash}))
        .send()
        .await
        .unwrap();
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let r = s
        .http
        .put(s.url(&format!("/api/v1/uploads/{id}/parts/1")))
        .bearer_auth(&t)
        .body(vec![0u8; 11])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = s
        .http
        .put(s.url(&format!("/api/v1/uploads/{id}/parts/1")))
        .bearer_auth(&t)
        .header("x-chunk-sha1", sha1_hex(b"no"))
        .body(vec![0u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = s
        .http
        .get(s.url(&format!("/api/v1/uploads/{id}")))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["received"], json!([]));
    let r = s
        .http
        .delete(s.url(&format!("/api/v1/uploads/{id}")))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    s.stop().await;
}

/// Instant upload: the owner links at once; anyone else must prove possession; a hash
/// alone gets the seed's "use the normal upload".
async fn instant(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let alice = s.user("alice").await;
    let eve = s.user("eve").await;
    let data = payload(300_000, 4);
    let hash = sha1_hex(&data);
    let r = s
        .http
        .put(s.url("/api/v1/files/original.bin"))
        .bearer_auth(&alice)
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let instant = |token: &str, body: Value| {
        let (http, url, token) = (s.http.clone(), s.url("/api/v1/instant"), token.to_string());
        async move {
            let r = http.post(url).bearer_auth(token).json(&body).send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    };
    // The owner: linked without a challenge.
    let (st, v) = instant(&alice, json!({"path": "/again.bin", "sha1": hash, "size": data.len()})).await;
    assert_eq!((st, v["linked"].as_bool()), (StatusCode::CREATED, Some(true)), "{v}");
    // Eve knows the hash only: a challenge; a guessed proof fails; nothing is linked.
    let (st, v) = instant(&eve, json!({"path": "/stolen.bin", "sha1": hash, "size": data.len()})).await;
    assert_eq!((st, v["linked"].as_bool()), (StatusCode::OK, Some(false)));
    let c = v["challenge"].clone();
    let (offset, length) = (
        c["offset"].as_u64().unwrap() as usize,
        c["length"].as_u64().unwrap() as usize,
    );
    assert!(length > 0 && offset + length <= data.len());
    let nonce = c["nonce"].as_str().unwrap();
    let guess = filestore::instant::answer(nonce, &vec![0u8; length]);
    let (_, v) = instant(
        &eve,
        json!({"path": "/stolen.bin", "sha1": hash, "size": data.len(), "nonce": nonce, "proof": guess}),
    )
    .await;
    assert_eq!(v["linked"], false);
    let r = s
        .http
        .get(s.url("/api/v1/stat/stolen.bin"))
        .bearer_auth(&eve)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // A nonce issued to someone else, or for other content, does not work either.
    let (_, v2) = instant(&alice, json!({"path": "/x", "sha1": sha1_hex(b"zz"), "size": 2})).await;
    let foreign = v2["challenge"]["nonce"].as_str().unwrap();
    let (_, v) = instant(
        &eve,
        json!({"path": "/stolen.bin", "sha1": hash, "size": data.len(), "nonce": foreign, "proof": guess}),
    )
    .await;
    assert_eq!(v["linked"], false);
    // With the bytes, the proof works.
    let proof = filestore::instant::answer(nonce, &data[offset..offset + length]);
    let (st, v) = instant(
        &eve,
        json!({"path": "/mine.bin", "sha1": hash, "size": data.len(), "nonce": nonce, "proof": proof}),
    )
    .await;
    assert_eq!((st, v["linked"].as_bool()), (StatusCode::CREATED, Some(true)), "{v}");
    let r = s
        .http
        .get(s.url("/api/v1/files/mine.bin"))
        .bearer_auth(&eve)
        .send()
        .await
        .unwrap();
    assert!(r.bytes().await.unwrap() == data);
    // Content nobody has still gets a challenge (no existence oracle), which cannot succeed.
    let (_, v) = instant(
        &eve,
        json!({"path": "/nope", "sha1": sha1_hex(b"never uploaded"), "size": 14}),
    )
    .await;
    assert!(v["challenge"].is_object());

    // The seed route: the seed's client sends only the hash and reads code -1.
    let trudy = s.user("trudy").await;
    let (st, v) = form(
        &s,
        "/file/fastupload",
        &trudy,
        &[
            ("filehash", &hash),
            ("filesize", &data.len().to_string()),
            ("filename", "seed.bin"),
        ],
    )
    .await;
    assert_eq!((st, v["code"].as_i64()), (StatusCode::OK, Some(-1)), "{v}");
    assert_eq!(v["msg"], "秒传失败，请访问普通上传接口");
    let c = &v["data"]["Challenge"];
    let (o, l) = (
        c["Offset"].as_u64().unwrap() as usize,
        c["Length"].as_u64().unwrap() as usize,
    );
    let nonce = c["Nonce"].as_str().unwrap();
    let proof = filestore::instant::answer(nonce, &data[o..o + l]);
    let (_, v) = form(
        &s,
        "/file/fastupload",
        &trudy,
        &[
            ("filehash", &hash),
            ("filesize", &data.len().to_string()),
            ("filename", "seed.bin"),
            ("nonce", nonce),
            ("proof", &proof),
        ],
    )
    .await;
    assert_eq!(v["code"], 0, "{v}");
    // Alice owns it: the seed route links at once.
    let (_, v) = form(
        &s,
        "/file/fastupload",
        &alice,
        &[
            ("filehash", &hash),
            ("filesize", &data.len().to_string()),
            ("filename", "x.bin"),
        ],
    )
    .await;
    assert_eq!(v["code"], 0);
    assert_eq!(objects(&s), 1, "every link shares one stored copy");
    s.stop().await;
}

/// An upload started without a SHA-1 (a client that sends while it hashes): chunks go in,
/// `complete` needs the SHA-1 then; a wrong one discards the upload, the right one commits
/// it. Such a session is never offered as a resumed one.
async fn sha1_declared_at_complete(backend: Backend, sessions: Sessions) {
    let Some(tweak) = configure(sessions) else { return };
    let Some(s) = TestServer::start_with(backend, tweak).await else {
        return;
    };
    let t = s.user("alice").await;
    let data = payload(2 * CHUNK + 7, 5);
    let init = || async {
        let r = s
            .http
            .post(s.url("/api/v1/uploads"))
            .bearer_auth(&t)
            .json(&json!({"path": "/late.bin", "size": data.len()}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "a new session each time");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["sha1"], Value::Null);
        v["id"].as_str().unwrap().to_string()
    };
    let (sr, tr, dr) = (&s, &t, &data);
    let send_all = move |id: String| async move {
        for i in 1..=3usize {
            let chunk = dr[(i - 1) * CHUNK..(i * CHUNK).min(dr.len())].to_vec();
            assert_eq!(v1_part(sr, tr, &id, i, chunk).await, StatusCode::OK);
        }
        id
    };
    let id = send_all(init().await).await;
    let (st, v) = v1_complete(&s, &t, &id, None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let (st, v) = v1_complete(&s, &t, &id, Some(json!({"sha1": "xyz"}))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    // A wrong (well-formed) SHA-1 discards the upload: nothing visible, nothing staged.
    let (st, v) = v1_complete(&s, &t, &id, Some(json!({"sha1": sha1_hex(b"other bytes")}))).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(
        v1_complete(&s, &t, &id, None).await.0,
        StatusCode::NOT_FOUND,
        "session gone"
    );
    assert_eq!(parts_files(&s), 0);
    assert_eq!(objects(&s), 0);

    let id = send_all(init().await).await;
    let other = init().await;
    assert_ne!(id, other);
    let (st, v) = v1_complete(&s, &t, &id, Some(json!({"sha1": sha1_hex(&data).to_uppercase()}))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["sha1"], sha1_hex(&data));
    let r = s
        .http
        .get(s.url("/api/v1/files/late.bin"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert!(r.bytes().await.unwrap() == data);
    // A session started with a SHA-1 refuses a different one at completion.
    let r = s
        .http
        .post(s.url("/api/v1/uploads"))
        .bearer_auth(&t)
        .json(&json!({"path": "/early.bin", "size": data.len(), "sha1": sha1_hex(&data)}))
        .send()
        .await
        .unwrap();
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let id = send_all(id).await;
    let (st, v) = v1_complete(&s, &t, &id, Some(json!({"sha1": sha1_hex(b"other bytes")}))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let (st, v) = v1_complete(&s, &t, &id, Some(json!({"sha1": sha1_hex(&data)}))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    s.stop().await;
}

/// An open-ended upload (started without a size, as a FUSE mount's write-behind does):
/// chunks of up to `chunk_size` bytes go in while the file is still being written; size
/// and SHA-1 are declared at `complete`. Nothing is visible before it; chunks past the
/// declared size are dropped; a missing chunk, or a short one that is not the last, does
/// not commit anything.
async fn size_declared_at_complete(backend: Backend, sessions: Sessions) {
    let Some(tweak) = configure(sessions) else { return };
    let Some(s) = TestServer::start_with(backend, tweak).await else {
        return;
    };
    let t = s.user("alice").await;
    let data = payload(3 * CHUNK + 99, 9);
    let init = || async {
        let r = s
            .http
            .post(s.url("/api/v1/uploads"))
            .bearer_auth(&t)
            .json(&json!({"path": "/open.bin"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            (&v["size"], &v["chunk_count"], &v["sha1"]),
            (&Value::Null, &Value::Null, &Value::Null)
        );
        assert_eq!(v["chunk_size"], CHUNK);
        v["id"].as_str().unwrap().to_string()
    };
    let chunk = |i: usize| data[(i - 1) * CHUNK..(i * CHUNK).min(data.len())].to_vec();
    let visible = || async {
        s.http
            .get(s.url("/api/v1/files/open.bin"))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap()
            .status()
    };
    let sha1 = sha1_hex(&data);

    // Chunks out of order, one past the end (the file was cut after it went), and the
    // last one short.
    let id = init().await;
    for i in [2, 1, 5] {
        let bytes = if i == 5 { payload(CHUNK, 1) } else { chunk(i) };
        assert_eq!(v1_part(&s, &t, &id, i, bytes).await, StatusCode::OK);
    }
    assert_eq!(
        v1_part(&s, &t, &id, 3, vec![0; CHUNK + 1]).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "longer than a chunk"
    );
    assert_eq!(
        v1_part(&s, &t, &id, 3, Vec::new()).await,
        StatusCode::BAD_REQUEST,
        "empty"
    );
    assert_eq!(v1_part(&s, &t, &id, 3, chunk(3)).await, StatusCode::OK);
    assert_eq!(
        visible().await,
        StatusCode::NOT_FOUND,
        "nothing visible before complete"
    );
    let (st, v) = v1_complete(&s, &t, &id, Some(json!({"sha1": sha1}))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "the size is required: {v}");
    let (st, v) = v1_complete(&s, &t, &id, Some(json!({"sha1": sha1, "size": data.len()}))).await;
    assert_eq!(st, StatusCode::CONFLICT, "chunk 4 is missing: {v}");
    assert_eq!(v1_part(&s, &t, &id, 4, chunk(4)).await, StatusCode::OK);
    let status = s
        .http
        .get(s.url(&format!("/api/v1/uploads/{id}")))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(status["received"], json!([1, 2, 3, 4, 5]));
    assert_eq!(status["size"], Value::Null);
    let (st, v) = v1_complete(&s, &t, &id, Some(json!({"sha1": sha1, "size": data.len()}))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(
        (v["sha1"].as_str(), v["size"].as_u64()),
        (Some(sha1.as_str()), Some(data.len() as u64))
    );
    let got = s
        .http
        .get(s.url("/api/v1/files/open.bin"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(got == data, "the committed bytes are the file's, cut to its size");
    assert_eq!(parts_files(&s), 0);

    // A short chunk that is not the last leaves a hole: the SHA-1 check refuses it and
    // the upload is discarded.
    let id = init().await;
    for i in 1..=4 {
        let mut bytes = chunk(i);
        if i == 2 {
            bytes.truncate(100);
        }
        assert_eq!(v1_part(&s, &t, &id, i, bytes).await, StatusCode::OK);
    }
    let (st, v) = v1_complete(&s, &t, &id, Some(json!({"sha1": sha1, "size": data.len()}))).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(parts_files(&s), 0);
    // An empty file: no chunks at all.
    let id = init().await;
    let (st, v) = v1_complete(&s, &t, &id, Some(json!({"sha1": sha1_hex(b""), "size": 0}))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["size"], 0);
    // A session started with its size refuses another one at completion.
    let r = s
        .http
        .post(s.url("/api/v1/uploads"))
        .bearer_auth(&t)
        .json(&json!({"path": "/sized.bin", "size": CHUNK}))
        .send()
        .await
        .unwrap();
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    assert_eq!(v1_part(&s, &t, &id, 1, chunk(1)).await, StatusCode::OK);
    let (st, v) = v1_complete(
        &s,
        &t,
        &id,
        Some(json!({"sha1": sha1_hex(&chunk(1)), "size": CHUNK + 1})),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let (st, v) = v1_complete(&s, &t, &id, Some(json!({"sha1": sha1_hex(&chunk(1)), "size": CHUNK}))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");

    // Chunks with a CRC-32 each and no SHA-1 at all, as the mount's write-behind sends
    // them: a chunk that arrives otherwise is refused and not recorded, and the file's
    // SHA-1 is the server's.
    let id = init().await;
    let part = |id: &str, i: usize, crc: String, bytes: Vec<u8>| {
        let (s, t, id) = (&s, &t, id.to_string());
        async move {
            s.http
                .put(s.url(&format!("/api/v1/uploads/{id}/parts/{i}")))
                .bearer_auth(t)
                .header("x-chunk-crc32", crc)
                .body(bytes)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let crc = |b: &[u8]| format!("{:08x}", crc32fast::hash(b));
    let mut damaged = chunk(1);
    damaged[7] ^= 1;
    assert_eq!(part(&id, 1, crc(&chunk(1)), damaged).await, StatusCode::BAD_REQUEST);
    assert_eq!(part(&id, 1, "xyz".into(), chunk(1)).await, StatusCode::BAD_REQUEST);
    assert_eq!(part(&id, 1, "0000000g".into(), chunk(1)).await, StatusCode::BAD_REQUEST);
    // A sign is not a digit, even where it would parse to the right CRC.
    let signed = (0u8..=255)
        .map(|k| {
            let mut c = chunk(1);
            c[0] = k;
            c
        })
        .find(|c| crc32fast::hash(c) < 0x1000_0000)
        .unwrap();
    let sign = format!("+{}", &crc(&signed)[1..]);
    assert_eq!(part(&id, 1, sign, signed).await, StatusCode::BAD_REQUEST);
    let (st, v) = v1_complete(&s, &t, &id, Some(json!({"size": data.len()}))).await;
    assert_eq!(st, StatusCode::CONFLICT, "the refused chunk was not recorded: {v}");
    for i in 1..=4 {
        assert_eq!(part(&id, i, crc(&chunk(i)), chunk(i)).await, StatusCode::OK);
    }
    let (st, v) = v1_complete(&s, &t, &id, Some(json!({"size": data.len()}))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(
        (v["sha1"].as_str(), v["size"].as_u64()),
        (Some(sha1.as_str()), Some(data.len() as u64)),
        "the SHA-1 the server computed"
    );
    assert_eq!(parts_files(&s), 0);
    // Without a SHA-1 to catch it, a short chunk before the last (a hole) is refused by
    // itself, and the upload discarded.
    let id = init().await;
    let short = chunk(2)[..100].to_vec();
    assert_eq!(part(&id, 2, crc(&short), short).await, StatusCode::OK);
    for i in [1, 3, 4] {
        assert_eq!(part(&id, i, crc(&chunk(i)), chunk(i)).await, StatusCode::OK);
    }
    let (st, v) = v1_complete(&s, &t, &id, Some(json!({"size": data.len()}))).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(parts_files(&s), 0);
    // Nor may the size reach past the bytes of a short last chunk (the file would be padded
    // with zeros).
    let id = init().await;
    for i in 1..=4 {
        assert_eq!(part(&id, i, crc(&chunk(i)), chunk(i)).await, StatusCode::OK);
    }
    let (st, v) = v1_complete(&s, &t, &id, Some(json!({"size": data.len() + 100}))).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(parts_files(&s), 0);
    s.stop().await;
}

async fn open_size_db(b: Backend) {
    size_declared_at_complete(b, Sessions::Database).await
}
async fn open_size_redis(b: Backend) {
    size_declared_at_complete(b, Sessions::Redis).await
}

async fn declared_late_db(b: Backend) {
    sha1_declared_at_complete(b, Sessions::Database).await
}
async fn declared_late_redis(b: Backend) {
    sha1_declared_at_complete(b, Sessions::Redis).await
}

async fn seed_db(b: Backend) {
    seed_chunked(b, Sessions::Database).await
}
async fn seed_redis(b: Backend) {
    seed_chunked(b, Sessions::Redis).await
}
async fn json_db(b: Backend) {
    json_chunked(b, Sessions::Database).await
}
async fn json_redis(b: Backend) {
    json_chunked(b, Sessions::Redis).await
}

both_backends! {
    seed_chunked_db_sessions => seed_db;
    seed_chunked_redis_sessions => seed_redis;
    json_chunked_db_sessions => json_db;
    json_chunked_redis_sessions => json_redis;
    sha1_declared_at_complete_db_sessions => declared_late_db;
    sha1_declared_at_complete_redis_sessions => declared_late_redis;
    size_declared_at_complete_db_sessions => open_size_db;
    size_declared_at_complete_redis_sessions => open_size_redis;
    instant_upload => instant;
}

/// Two gateways sharing MariaDB, Redis and the staging directory take alternate chunks
/// of one upload, and the second completes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_share_one_upload() {
    let (Some(_), Some(redis)) = (common::mysql_base(), redis_url()) else {
        eprintln!("needs FILESTORE_TEST_MYSQL_URL and FILESTORE_TEST_REDIS_URL: skipping");
        return;
    };
    let db = common::TestDb::new(Backend::MySql).await.unwrap();
    let prefix = format!("fstest:{}:", filestore::util::random_hex(6));
    let mut servers = Vec::new();
    for _ in 0..2 {
        let mut cfg = common::test_config(&db);
        cfg.sessions.redis_url = redis.clone();
        cfg.sessions.key_prefix = prefix.clone();
        cfg.sessions.chunk_size = CHUNK as u64;
        servers.push(filestore::server::start(cfg).await.unwrap());
    }
    let http = reqwest::Client::new();
    let base: Vec<String> = servers.iter().map(|s| format!("http://{}/api/v1", s.addr)).collect();
    let creds = json!({"username": "alice", "password": "password-of-alice"});
    assert_eq!(
        http.post(format!("{}/auth/signup", base[0]))
            .json(&creds)
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    let v: Value = http
        .post(format!("{}/auth/signin", base[1]))
        .json(&creds)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let t = v["token"].as_str().unwrap().to_string();
    let data = payload(6 * CHUNK + 7, 5);
    let hash = sha1_hex(&data);
    let v: Value = http
        .post(format!("{}/uploads", base[0]))
        .bearer_auth(&t)
        .json(&json!({"path": "/shared.bin", "size": data.len(), "sha1": hash}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = v["id"].as_str().unwrap().to_string();
    for i in 1..=7usize {
        let body = data[(i - 1) * CHUNK..(i * CHUNK).min(data.len())].to_vec();
        let r = http
            .put(format!("{}/uploads/{id}/parts/{i}", base[i % 2]))
            .bearer_auth(&t)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "chunk {i} via gateway {}", i % 2);
    }
    let v: Value = http
        .get(format!("{}/uploads/{id}", base[0]))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["received"], json!([1, 2, 3, 4, 5, 6, 7]));
    let r = http
        .post(format!("{}/uploads/{id}/complete", base[1]))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let got = http
        .get(format!("{}/files/shared.bin", base[0]))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(got == data);
    for s in servers {
        s.shutdown().await;
    }
    db.cleanup().await;
}

/// Redis down: a clear 503 with a JSON error, and nothing half-written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unreachable_is_a_503() {
    // A port nothing listens on (bound then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let Some(s) = TestServer::start_with(Backend::Sqlite, |c| {
        c.sessions.redis_url = format!("redis://127.0.0.1:{port}")
    })
    .await
    else {
        return;
    };
    let t = s.user("alice").await;
    let r = s
        .http
        .post(s.url("/api/v1/uploads"))
        .bearer_auth(&t)
        .json(&json!({"path": "/f", "size": 10, "sha1": sha1_hex(b"0123456789")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "sessions_unavailable");
    let (st, v) = form(
        &s,
        "/file/mpupload/init",
        &t,
        &[("filehash", &sha1_hex(b"0123456789")), ("filesize", "10")],
    )
    .await;
    assert_eq!((st, v["code"].as_i64()), (StatusCode::SERVICE_UNAVAILABLE, Some(10002)));
    assert_eq!(parts_files(&s), 0, "no data file without a session");
    // Plain uploads do not need Redis.
    let r = s
        .http
        .put(s.url("/api/v1/files/plain"))
        .bearer_auth(&t)
        .body("fine")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    s.stop().await;
}

/// A chunk is final once recorded: a resend with other bytes changes nothing. And
/// `complete` waits for a chunk write in flight instead of hashing (and storing) a file
/// that is still being written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chunks_cannot_change_once_recorded_or_during_complete() {
    let Some(tweak) = configure(Sessions::Database) else {
        return;
    };
    let Some(s) = TestServer::start_with(Backend::Sqlite, tweak).await else {
        return;
    };
    let t = s.user("alice").await;
    let data = payload(3 * CHUNK, 9);
    let hash = sha1_hex(&data);
    let r = s
        .http
        .post(s.url("/api/v1/uploads"))
        .bearer_auth(&t)
        .json(&json!({"path": "/race.bin", "size": data.len(), "sha1": hash}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let part = |i: usize, body: reqwest::Body| {
        s.http
            .put(s.url(&format!("/api/v1/uploads/{id}/parts/{i}")))
            .bearer_auth(&t)
            .body(body)
            .send()
    };
    for i in 1..=2 {
        let body = data[(i - 1) * CHUNK..i * CHUNK].to_vec();
        assert_eq!(part(i, body.into()).await.unwrap().status(), 200);
    }
    let other = payload(CHUNK, 77);
    assert_ne!(other, data[..CHUNK]);
    assert_eq!(
        part(1, other.into()).await.unwrap().status(),
        200,
        "a resend is accepted"
    );

    // Chunk 3 in flight: half of it sent, and written (so its writer holds its lock).
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let body = reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let third = tokio::spawn(part(3, body));
    let (head, tail) = data[2 * CHUNK..].split_at(CHUNK / 2);
    tx.send(Ok(head.to_vec())).await.unwrap();
    let file = s.db.dir.path().join(format!("data/staging/parts/{id}.data"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let on_disk = std::fs::read(&file).unwrap();
        if on_disk[2 * CHUNK..2 * CHUNK + head.len()] == *head {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the first half never reached the data file"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let mut complete = tokio::spawn(
        s.http
            .post(s.url(&format!("/api/v1/uploads/{id}/complete")))
            .bearer_auth(&t)
            .send(),
    );
    // `complete` must not answer while chunk 3 is being written. Correct code never
    // answers here, so the window's length only bounds how long a broken one has to show.
    tokio::select! {
        r = &mut complete => panic!("complete answered during a chunk write: {:?}", r.unwrap().map(|r| r.status())),
        _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
    }
    tx.send(Ok(tail.to_vec())).await.unwrap();
    drop(tx);
    assert_eq!(third.await.unwrap().unwrap().status(), 200);
    let r = complete.await.unwrap().unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let got = s
        .http
        .get(s.url("/api/v1/files/race.bin"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(got == data, "the stored bytes are the first ones of every chunk");
    assert_eq!(parts_files(&s), 0);
    s.stop().await;
}
