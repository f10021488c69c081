//! The id-based JSON API (`/api/v1/entries/...`) and uploads by directory id or file id,
//! against the real server on an ephemeral port, on SQLite and MariaDB.

mod common;

use common::{Backend, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha1::Digest;

struct Api<'a> {
    s: &'a TestServer,
    token: String,
}

impl Api<'_> {
    fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.s
            .http
            .request(method, self.s.url(&format!("/api/v1{path}")))
            .bearer_auth(&self.token)
    }
    async fn send(&self, r: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let r = r.send().await.unwrap();
        let st = r.status();
        (st, r.json().await.unwrap_or(Value::Null))
    }
    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.req(Method::GET, path)).await
    }
    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(self.req(Method::POST, path).json(&body)).await
    }
    async fn patch(&self, id: i64, body: Value) -> (StatusCode, Value) {
        self.send(self.req(Method::PATCH, &format!("/entries/{id}")).json(&body))
            .await
    }
    async fn delete(&self, path: &str) -> StatusCode {
        self.req(Method::DELETE, path).send().await.unwrap().status()
    }
    async fn put(&self, path: &str, body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
        self.send(self.req(Method::PUT, path).body(body)).await
    }
    async fn mkdir(&self, parent: i64, name: &str) -> i64 {
        let (st, v) = self
            .post(
                &format!("/entries/{parent}/children"),
                json!({"name": name, "kind": "dir"}),
            )
            .await;
        assert_eq!(st, 201, "{v}");
        v["id"].as_i64().unwrap()
    }
    async fn file(&self, parent: i64, name: &str, body: &'static [u8]) -> Value {
        let (st, v) = self
            .put(&format!("/entries/{parent}/children/{}/content", enc(name)), body)
            .await;
        assert!(st == 201 || st == 200, "{st} {v}");
        v
    }
    async fn bytes(&self, id: i64) -> Vec<u8> {
        let r = self
            .req(Method::GET, &format!("/entries/{id}/content"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap().to_vec()
    }
    async fn root(&self) -> i64 {
        let (st, v) = self.get("/stat").await;
        assert_eq!(st, 200);
        v["id"].as_i64().unwrap()
    }
    async fn names(&self, dir: i64) -> Vec<String> {
        let (st, v) = self.get(&format!("/entries/{dir}/children?limit=1000")).await;
        assert_eq!(st, 200, "{v}");
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect()
    }
}

fn enc(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn sha1_hex(b: &[u8]) -> String {
    hex::encode(sha1::Sha1::digest(b))
}

/// Every route on a tree: lookups, pages, mkdir with a mode, uploads by directory id,
/// ranged reads, rename/move with both overwrite rules, attributes, replace by id, delete.
async fn entries_routes(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let api = Api {
        s: &s,
        token: s.user("alice").await,
    };
    let root = api.root().await;
    let (st, v) = api.get(&format!("/entries/{root}")).await;
    assert_eq!(st, 200);
    assert_eq!(v["kind"], "dir");
    assert_eq!(v["parent"], Value::Null);
    assert!(v["mtime_ms"].as_i64().unwrap() > 0 && v["ctime_ms"].as_i64().is_some());

    // mkdir with and without a mode; refusals.
    let docs = api.mkdir(root, "docs").await;
    let (st, v) = api
        .post(
            &format!("/entries/{root}/children"),
            json!({"name": "private", "kind": "dir", "mode": 0o700}),
        )
        .await;
    assert_eq!(st, 201);
    assert_eq!(v["mode"], 0o700);
    assert_eq!(v["parent"], root);
    let private = v["id"].as_i64().unwrap();
    let (st, v) = api
        .post(
            &format!("/entries/{root}/children"),
            json!({"name": "docs", "kind": "dir"}),
        )
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("already_exists"))
    );
    for body in [
        json!({"name": "f", "kind": "link"}),
        json!({"name": "f", "kind": "dir", "mtime": 1}),
    ] {
        let (st, v) = api.post(&format!("/entries/{root}/children"), body.clone()).await;
        assert_eq!(st, 400, "{body}: {v}");
    }
    for bad in ["..", "a/b", ""] {
        let (st, v) = api
            .post(
                &format!("/entries/{root}/children"),
                json!({"name": bad, "kind": "dir"}),
            )
            .await;
        assert_eq!(st, 400, "{bad}: {v}");
    }
    let (st, _) = api
        .post(
            &format!("/entries/{root}/children"),
            json!({"name": "m", "kind": "dir", "mode": 0o10000}),
        )
        .await;
    assert_eq!(st, 400);
    let (st, _) = api.get("/entries/notanumber").await;
    assert_eq!(st, 400);
    let (st, _) = api.get("/entries/999999999").await;
    assert_eq!(st, 404);

    // Files by directory id: create (mode, mtime), no-overwrite, replace keeps id and mode.
    let (st, a) = api
        .put(
            &format!("/entries/{docs}/children/a.txt/content?mode=384&mtime=1700000000123"),
            "alpha",
        )
        .await;
    assert_eq!(st, 201, "{a}");
    assert_eq!(a["sha1"], sha1_hex(b"alpha"));
    assert_eq!(a["mode"], 0o600);
    assert_eq!(a["mtime_ms"], 1_700_000_000_123i64);
    assert_eq!(a["parent"], docs);
    let a_id = a["id"].as_i64().unwrap();
    let (st, v) = api
        .put(&format!("/entries/{docs}/children/a.txt/content?overwrite=false"), "x")
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("already_exists"))
    );
    let (st, v) = api
        .put(&format!("/entries/{docs}/children/a.txt/content?mode=511"), "alpha 2")
        .await;
    assert_eq!(st, 200);
    assert_eq!(
        (v["id"].as_i64(), v["mode"].as_i64()),
        (Some(a_id), Some(0o600)),
        "mode is for new files"
    );
    assert_eq!(api.bytes(a_id).await, b"alpha 2");
    let (st, _) = api.put(&format!("/entries/{a_id}/children/x/content"), "x").await;
    assert_eq!(st, StatusCode::CONFLICT, "a file is not a directory");
    let (st, _) = api.put(&format!("/entries/{root}/children/docs/content"), "x").await;
    assert_eq!(st, StatusCode::CONFLICT, "a directory is not replaced by a file");
    let odd = "spaced é #?%.txt";
    let v = api.file(docs, odd, b"odd").await;
    assert_eq!(v["name"], odd);

    // Lookup.
    let (st, v) = api.get(&format!("/entries/{docs}/children/{}", enc(odd))).await;
    assert_eq!(st, 200);
    assert_eq!(v["name"], odd);
    let (st, _) = api.get(&format!("/entries/{docs}/children/missing")).await;
    assert_eq!(st, 404);
    let (st, v) = api.get(&format!("/entries/{a_id}/children/x")).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("not_a_directory"))
    );
    let (st, _) = api.get("/entries/999999999/children/x").await;
    assert_eq!(st, 404);

    // Ranged reads; If-Match guards against mixing versions.
    let r = api
        .req(Method::GET, &format!("/entries/{a_id}/content"))
        .header("range", "bytes=2-4")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"pha");
    let r = api
        .req(Method::GET, &format!("/entries/{a_id}/content"))
        .header("range", "bytes=0-0")
        .header("if-match", "\"0000000000000000000000000000000000000000\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    let r = api
        .req(Method::GET, &format!("/entries/{a_id}/content"))
        .header("range", "bytes=0-0")
        .header("if-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    let (st, v) = api.get(&format!("/entries/{docs}/content")).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("is_a_directory"))
    );

    // Pages in byte order.
    let many = api.mkdir(docs, "many").await;
    for i in 0..25 {
        api.file(many, &format!("f{i:02}"), b"x").await;
    }
    api.mkdir(many, "Z").await; // uppercase sorts first in byte order
    let mut all = Vec::new();
    let mut after = String::new();
    loop {
        let (st, v) = api
            .get(&format!("/entries/{many}/children?limit=10&after={}", enc(&after)))
            .await;
        assert_eq!(st, 200);
        assert_eq!(v["id"], many);
        for e in v["entries"].as_array().unwrap() {
            assert_eq!(e["parent"], many);
            all.push(e["name"].as_str().unwrap().to_string());
        }
        match v["next"].as_str() {
            Some(n) => after = n.to_string(),
            None => break,
        }
    }
    let mut expected: Vec<String> = vec!["Z".into()];
    expected.extend((0..25).map(|i| format!("f{i:02}")));
    assert_eq!(all, expected);
    let (st, _) = api.get(&format!("/entries/{many}/children?limit=0")).await;
    assert_eq!(st, 400);
    let (st, _) = api.get(&format!("/entries/{a_id}/children")).await;
    assert_eq!(st, StatusCode::CONFLICT);

    // Rename and move: same id; overwrite "no" refuses, "posix" replaces a file.
    let b = api.file(docs, "b.txt", b"beta").await;
    let b_id = b["id"].as_i64().unwrap();
    let (st, v) = api.patch(b_id, json!({"name": "b2.txt"})).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!((v["id"].as_i64(), v["name"].as_str()), (Some(b_id), Some("b2.txt")));
    let (st, v) = api.patch(b_id, json!({"parent": private})).await;
    assert_eq!(
        (st, v["parent"].as_i64(), v["name"].as_str()),
        (StatusCode::OK, Some(private), Some("b2.txt"))
    );
    let (st, v) = api.patch(b_id, json!({"parent": docs, "name": "a.txt"})).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("already_exists"))
    );
    let (st, v) = api
        .patch(b_id, json!({"parent": docs, "name": "a.txt", "overwrite": "posix"}))
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["id"], b_id);
    assert_eq!(api.bytes(b_id).await, b"beta");
    let (st, _) = api.get(&format!("/entries/{a_id}")).await;
    assert_eq!(st, 404, "the replaced file is gone");
    let (st, v) = api.patch(b_id, json!({"parent": docs, "name": "a.txt"})).await;
    assert_eq!(st, 200, "renaming onto itself does nothing: {v}");
    let (st, _) = api.patch(b_id, json!({"overwrite": "posix"})).await;
    assert_eq!(st, 400);
    let (st, _) = api.patch(b_id, json!({"overwrite": "any", "name": "q"})).await;
    assert_eq!(st, 400);
    // Directories: not under themselves, not onto a non-empty directory, not onto a file.
    let (st, v) = api.patch(docs, json!({"parent": many})).await;
    assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("cycle")));
    let (st, v) = api
        .patch(private, json!({"parent": docs, "name": "many", "overwrite": "posix"}))
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("not_empty"))
    );
    let (st, v) = api
        .patch(private, json!({"parent": docs, "name": "a.txt", "overwrite": "posix"}))
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("not_a_directory"))
    );
    let (st, _) = api.patch(root, json!({"name": "x"})).await;
    assert_eq!(st, 400, "the root is not renamed");

    // Attributes: mode, mtime in ms or RFC 3339; ctime moves.
    let (_, before) = api.get(&format!("/entries/{b_id}")).await;
    let (st, v) = api
        .patch(b_id, json!({"mode": 0o640, "mtime": 1_000_000_000_456i64}))
        .await;
    assert_eq!(st, 200);
    assert_eq!(
        (v["mode"].as_i64(), v["mtime_ms"].as_i64()),
        (Some(0o640), Some(1_000_000_000_456))
    );
    assert!(v["ctime_ms"].as_i64() >= before["ctime_ms"].as_i64());
    let (st, v) = api.patch(b_id, json!({"mtime": "2020-01-02T03:04:05.678Z"})).await;
    assert_eq!(st, 200);
    assert_eq!(v["mtime_ms"], 1_577_934_245_678i64);
    assert_eq!(v["mtime"], "2020-01-02T03:04:05.678Z");
    let (st, _) = api.patch(b_id, json!({"mode": -1})).await;
    assert_eq!(st, 400);
    let (st, _) = api.patch(b_id, json!({"mtime": "yesterday"})).await;
    assert_eq!(st, 400);
    let (st, _) = api.patch(b_id, json!({"colour": "red"})).await;
    assert_eq!(st, 400, "unknown fields are refused");

    // Replace by id follows the file wherever it went; id and mode stay.
    api.patch(b_id, json!({"parent": private, "name": "moved.txt"})).await;
    let (st, v) = api
        .put(&format!("/entries/{b_id}/content?mtime=1600000000000"), "gamma")
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (v["id"].as_i64(), v["name"].as_str(), v["mode"].as_i64()),
        (Some(b_id), Some("moved.txt"), Some(0o640))
    );
    assert_eq!(v["mtime_ms"], 1_600_000_000_000i64);
    assert_eq!(api.bytes(b_id).await, b"gamma");
    assert!(
        !api.names(docs).await.contains(&"a.txt".to_string()),
        "no stray file at the old name"
    );
    let (st, _) = api.put(&format!("/entries/{docs}/content"), "x").await;
    assert_eq!(st, StatusCode::CONFLICT);
    let (st, _) = api.put("/entries/999999999/content", "x").await;
    assert_eq!(st, 404);

    // Delete.
    let (st, v) = api.send(api.req(Method::DELETE, &format!("/entries/{docs}"))).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("not_empty"))
    );
    assert_eq!(api.delete(&format!("/entries/{docs}?recursive=true")).await, 204);
    assert_eq!(api.get(&format!("/entries/{many}")).await.0, 404);
    assert_eq!(api.delete(&format!("/entries/{b_id}")).await, 204);
    assert_eq!(api.delete(&format!("/entries/{b_id}")).await, 404);
    assert_eq!(api.delete(&format!("/entries/{root}")).await, 400);
    assert_eq!(api.names(root).await, vec!["private"]);
    s.stop().await;
}

/// Chunked and instant uploads by directory id and by file id; the path form still works;
/// a body naming two destinations is refused.
async fn uploads_by_id(backend: Backend) {
    let Some(s) = TestServer::start_with(backend, |c| c.sessions.chunk_size = 4).await else {
        return;
    };
    let api = Api {
        s: &s,
        token: s.user("alice").await,
    };
    let root = api.root().await;
    let dir = api.mkdir(root, "up").await;
    let data: &[u8] = b"0123456789";
    let hash = sha1_hex(data);

    let chunked = |dest: Value| {
        let api = &api;
        async move {
            let mut body = json!({"sha1": sha1_hex(data), "size": data.len()});
            body.as_object_mut().unwrap().extend(dest.as_object().unwrap().clone());
            let (st, v) = api.post("/uploads", body).await;
            assert!(st == 201 || st == 200, "{st} {v}");
            let id = v["id"].as_str().unwrap().to_string();
            assert_eq!(v["chunk_count"], 3);
            for (i, c) in data.chunks(4).enumerate() {
                let r = api
                    .req(Method::PUT, &format!("/uploads/{id}/parts/{}", i + 1))
                    .body(c.to_vec())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
            (id, v)
        }
    };
    let complete = |id: String| {
        let api = &api;
        async move { api.post(&format!("/uploads/{id}/complete"), json!(null)).await }
    };

    // By directory id.
    let (id, v) = chunked(json!({"parent": dir, "name": "c.bin", "overwrite": false})).await;
    assert_eq!((v["parent"].as_i64(), v["name"].as_str()), (Some(dir), Some("c.bin")));
    assert_eq!(v["path"], Value::Null);
    let (st, c) = complete(id).await;
    assert_eq!(st, 201, "{c}");
    assert_eq!(
        (c["parent"].as_i64(), c["name"].as_str(), c["sha1"].as_str()),
        (Some(dir), Some("c.bin"), Some(hash.as_str()))
    );
    let c_id = c["id"].as_i64().unwrap();

    // By file id: the file is renamed while the upload is in flight; the bytes follow it.
    let e = api.file(dir, "e.txt", b"old").await;
    let e_id = e["id"].as_i64().unwrap();
    let (id, v) = chunked(json!({"entry": e_id})).await;
    assert_eq!(v["entry"], e_id);
    let (st, _) = api.patch(e_id, json!({"name": "e-renamed.txt"})).await;
    assert_eq!(st, 200);
    let (st, done) = complete(id).await;
    assert_eq!(st, 201, "{done}");
    assert_eq!(
        (done["id"].as_i64(), done["name"].as_str()),
        (Some(e_id), Some("e-renamed.txt"))
    );
    assert_eq!(api.bytes(e_id).await, data);
    assert_eq!(
        api.names(dir).await,
        vec!["c.bin", "e-renamed.txt"],
        "nothing created at the old name"
    );
    // ...and deleted in flight: 404, nothing created.
    let (id, _) = chunked(json!({"entry": e_id})).await;
    assert_eq!(api.delete(&format!("/entries/{e_id}")).await, 204);
    let (st, _) = complete(id).await;
    assert_eq!(st, 404);
    assert_eq!(api.names(dir).await, vec!["c.bin"]);

    // Refused destinations.
    for bad in [
        json!({"path": "/x", "parent": dir, "name": "x"}),
        json!({"parent": dir}),
        json!({"entry": c_id, "path": "/y"}),
        json!({}),
    ] {
        let mut body = json!({"sha1": hash, "size": data.len()});
        body.as_object_mut().unwrap().extend(bad.as_object().unwrap().clone());
        let (st, v) = api.post("/uploads", body.clone()).await;
        assert_eq!(st, 400, "{body}: {v}");
        let (st, _) = api.post("/instant", body).await;
        assert_eq!(st, 400);
    }
    let (st, _) = api
        .post("/uploads", json!({"entry": dir, "sha1": hash, "size": data.len()}))
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "a directory's content is not replaced");

    // Instant by directory id (alice owns the content: linked at once), with an mtime.
    let (st, v) = api
        .post(
            "/instant",
            json!({"parent": dir, "name": "i.bin", "sha1": hash, "size": data.len(), "mtime": 1234}),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["linked"], true);
    assert_eq!(
        (v["entry"]["parent"].as_i64(), v["entry"]["mtime_ms"].as_i64()),
        (Some(dir), Some(1234))
    );
    let i_id = v["entry"]["id"].as_i64().unwrap();
    // Instant by file id replaces content, keeping the id.
    let small = api.file(dir, "s.txt", b"small").await;
    let s_id = small["id"].as_i64().unwrap();
    let (st, v) = api
        .post("/instant", json!({"entry": s_id, "sha1": hash, "size": data.len()}))
        .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["entry"]["id"], s_id);
    assert_eq!(api.bytes(s_id).await, data);
    let (st, v) = api
        .post(
            "/instant",
            json!({"parent": dir, "name": "i.bin", "overwrite": false, "sha1": hash, "size": data.len()}),
        )
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("already_exists")),
        "{v}"
    );
    assert_ne!(i_id, s_id);

    // The path form is unchanged.
    let (st, v) = api
        .post(
            "/instant",
            json!({"path": "/up/p.bin", "sha1": hash, "size": data.len()}),
        )
        .await;
    assert_eq!(st, 201);
    assert_eq!(v["entry"]["path"], "/up/p.bin");
    let (id, v) = chunked(json!({"path": "/up/q.bin"})).await;
    assert_eq!(v["path"], "/up/q.bin");
    let (st, v) = complete(id).await;
    assert_eq!((st, v["path"].as_str()), (StatusCode::CREATED, Some("/up/q.bin")));
    s.stop().await;
}

/// Another user's ids are 404 on every route, and nothing happens to them; no token is 401.
async fn isolation(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let alice = Api {
        s: &s,
        token: s.user("alice").await,
    };
    let bob = Api {
        s: &s,
        token: s.user("bobby").await,
    };
    let root = alice.root().await;
    let dir = alice.mkdir(root, "secret").await;
    let f = alice.file(dir, "f.txt", b"alice's").await;
    let f_id = f["id"].as_i64().unwrap();
    let sha = f["sha1"].as_str().unwrap().to_string();

    for path in [
        format!("/entries/{dir}"),
        format!("/entries/{dir}/children"),
        format!("/entries/{dir}/children/f.txt"),
        format!("/entries/{f_id}/content"),
        format!("/entries/{root}"),
    ] {
        let (st, _) = bob.get(&path).await;
        assert_eq!(st, 404, "GET {path}");
    }
    assert_eq!(bob.patch(f_id, json!({"name": "mine"})).await.0, 404);
    assert_eq!(bob.patch(f_id, json!({"mode": 0o777})).await.0, 404);
    let bob_root = bob.root().await;
    assert_eq!(bob.patch(f_id, json!({"parent": bob_root})).await.0, 404);
    assert_eq!(bob.delete(&format!("/entries/{f_id}")).await, 404);
    assert_eq!(bob.delete(&format!("/entries/{dir}?recursive=true")).await, 404);
    let (st, _) = bob
        .post(&format!("/entries/{dir}/children"), json!({"name": "x", "kind": "dir"}))
        .await;
    assert_eq!(st, 404);
    assert_eq!(bob.put(&format!("/entries/{dir}/children/x/content"), "x").await.0, 404);
    assert_eq!(bob.put(&format!("/entries/{f_id}/content"), "x").await.0, 404);
    let (st, _) = bob
        .post("/uploads", json!({"parent": dir, "name": "x", "sha1": sha, "size": 7}))
        .await;
    assert_eq!(st, 404);
    let (st, _) = bob
        .post("/uploads", json!({"entry": f_id, "sha1": sha, "size": 7}))
        .await;
    assert_eq!(st, 404);
    let (st, _) = bob
        .post("/instant", json!({"entry": f_id, "sha1": sha, "size": 7}))
        .await;
    assert_eq!(st, 404);
    // Moving one's own entry into someone else's directory is refused too.
    let mine = bob.mkdir(bob_root, "mine").await;
    assert_eq!(bob.patch(mine, json!({"parent": dir})).await.0, 404);

    assert_eq!(alice.bytes(f_id).await, b"alice's");
    assert_eq!(alice.names(dir).await, vec!["f.txt"]);
    let (_, v) = alice.get(&format!("/entries/{f_id}")).await;
    assert_eq!((v["name"].as_str(), v["mode"].as_i64()), (Some("f.txt"), Some(0o644)));

    let r = s
        .http
        .get(s.url(&format!("/api/v1/entries/{root}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = s
        .http
        .put(s.url(&format!("/api/v1/entries/{root}/children/x/content")))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    s.stop().await;
}

/// A `content_token` keeps a content readable through the entry it was read through,
/// after that file was replaced or deleted (a mount's file unlinked while open); only for
/// its user and that content.
async fn content_tokens(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let alice = Api {
        s: &s,
        token: s.user("alice").await,
    };
    let bob = Api {
        s: &s,
        token: s.user("bobby").await,
    };
    let root = alice.root().await;
    let f = alice.file(root, "f.txt", b"first version").await;
    let id = f["id"].as_i64().unwrap();
    let sha = f["sha1"].as_str().unwrap().to_string();
    let token = f["content_token"]
        .as_str()
        .expect("files carry a content token")
        .to_string();
    let (_, d) = alice.get(&format!("/entries/{root}")).await;
    assert!(d.get("content_token").is_none(), "directories have none");
    let read = |api: &Api<'_>, id: i64, q: String| {
        let r = api
            .req(Method::GET, &format!("/entries/{id}/content?{q}"))
            .header("range", "bytes=0-4");
        async move {
            let r = r.send().await.unwrap();
            let st = r.status();
            (st, r.bytes().await.unwrap().to_vec())
        }
    };
    let q = |sha: &str, token: Option<&str>| match token {
        Some(t) => format!("sha1={sha}&token={}", enc(t)),
        None => format!("sha1={sha}"),
    };
    assert_eq!(
        read(&alice, id, q(&sha, None)).await,
        (StatusCode::PARTIAL_CONTENT, b"first".to_vec())
    );

    // Replaced: the old content only with the token.
    alice.file(root, "f.txt", b"second version").await;
    assert_eq!(read(&alice, id, q(&sha, None)).await.0, StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        read(&alice, id, q(&sha, Some(&token))).await,
        (StatusCode::PARTIAL_CONTENT, b"first".to_vec())
    );
    assert_eq!(
        read(&alice, id, q(&sha, Some("1.00"))).await.0,
        StatusCode::PRECONDITION_FAILED
    );
    // Deleted: likewise, 404 without it.
    assert_eq!(alice.delete(&format!("/entries/{id}")).await, 204);
    assert_eq!(read(&alice, id, q(&sha, None)).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        read(&alice, id, q(&sha, Some(&token))).await,
        (StatusCode::PARTIAL_CONTENT, b"first".to_vec())
    );
    // The token is alice's, for that content.
    assert_eq!(read(&bob, id, q(&sha, Some(&token))).await.0, StatusCode::NOT_FOUND);
    let other = sha1_hex(b"second version");
    assert_eq!(read(&alice, id, q(&other, Some(&token))).await.0, StatusCode::NOT_FOUND);
    let (st, _) = alice.get(&format!("/entries/{id}/content?colour=red")).await;
    assert_eq!(st, 400);
    s.stop().await;
}

/// create(2) and unlink(2)/rmdir(2) of a mount in one request each: an empty file made
/// by `POST /entries/{id}/children` and an entry deleted by name.
async fn create_and_delete_by_name(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let api = Api {
        s: &s,
        token: s.user("alice").await,
    };
    let bob = Api {
        s: &s,
        token: s.user("bobby").await,
    };
    let root = api.root().await;
    let dir = api.mkdir(root, "d").await;
    let children = format!("/entries/{dir}/children");

    // Empty files: mode and mtime as asked, or the defaults; the name must be free.
    let (st, v) = api
        .post(
            &children,
            json!({"name": "new", "kind": "file", "mode": 0o600, "mtime": 1_700_000_000_456i64}),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!((v["kind"].as_str(), v["size"].as_i64()), (Some("file"), Some(0)));
    assert_eq!(v["sha1"], sha1_hex(b""));
    assert_eq!(
        (v["mode"].as_i64(), v["mtime_ms"].as_i64()),
        (Some(0o600), Some(1_700_000_000_456))
    );
    let new_id = v["id"].as_i64().unwrap();
    // A create sets its directory's mtime and ctime to the new entry's ctime (a mount
    // relies on it to know the directory's times without asking).
    let created_ms = v["ctime_ms"].as_i64().unwrap();
    let (_, d) = api.get(&format!("/entries/{dir}")).await;
    assert_eq!(
        (d["mtime_ms"].as_i64(), d["ctime_ms"].as_i64()),
        (Some(created_ms), Some(created_ms))
    );
    assert_eq!(api.bytes(new_id).await, b"");
    let (st, v) = api.post(&children, json!({"name": "plain", "kind": "file"})).await;
    assert_eq!((st, v["mode"].as_i64()), (StatusCode::CREATED, Some(0o644)));
    let (st, v) = api.post(&children, json!({"name": "new", "kind": "file"})).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("already_exists"))
    );
    let (st, _) = api
        .post(
            &format!("/entries/{new_id}/children"),
            json!({"name": "x", "kind": "file"}),
        )
        .await;
    assert_eq!(st, 409, "a file is no parent");
    let (st, _) = bob.post(&children, json!({"name": "intruder", "kind": "file"})).await;
    assert_eq!(st, 404, "another user's directory is not there");
    // Content uploaded afterwards replaces the empty one, keeping the id.
    let (st, v) = api.put(&format!("/entries/{new_id}/content"), "filled").await;
    assert_eq!((st, v["id"].as_i64()), (StatusCode::OK, Some(new_id)));

    // Deletes by name, checking the kind.
    let sub = api.mkdir(dir, "sub").await;
    api.file(sub, "inner", b"x").await;
    let del = |name: &str, kind: &str| format!("/entries/{dir}/children/{}?kind={kind}", enc(name));
    assert_eq!(bob.delete(&del("new", "file")).await, 404, "not bob's");
    assert_eq!(api.delete(&del("new", "dir")).await, 409);
    assert_eq!(api.delete(&del("sub", "file")).await, 409);
    assert_eq!(api.delete(&del("sub", "dir")).await, 409, "not empty");
    assert_eq!(api.delete(&del("new", "other")).await, 400);
    assert_eq!(
        api.delete(&format!("/entries/{new_id}/children/x")).await,
        409,
        "a file is no parent"
    );
    let (st, v) = api.send(api.req(Method::DELETE, &del("new", "file"))).await;
    assert_eq!(st, 200);
    // The answer carries the directory as the delete left it: what a mount shows next.
    let (_, after) = api.get(&format!("/entries/{dir}")).await;
    assert_eq!(v["parent"]["id"].as_i64(), Some(dir));
    assert_eq!(v["parent"]["mtime_ms"], after["mtime_ms"]);
    assert_eq!(v["parent"]["ctime_ms"], after["ctime_ms"]);
    assert!(
        v["parent"]["mtime_ms"].as_i64() >= Some(created_ms),
        "the delete touched it"
    );
    assert_eq!(api.delete(&del("new", "file")).await, 404);
    assert_eq!(api.get(&format!("/entries/{new_id}")).await.0, 404);
    assert_eq!(
        api.delete(&format!("/entries/{sub}/children/inner")).await,
        200,
        "kind is optional"
    );
    assert_eq!(api.delete(&del("sub", "dir")).await, 200);
    assert_eq!(api.names(dir).await, ["plain"]);
    s.stop().await;
}

both_backends! {
    by_name => create_and_delete_by_name;
    tokens => content_tokens;
    routes => entries_routes;
    uploads => uploads_by_id;
    other_users => isolation;
}
