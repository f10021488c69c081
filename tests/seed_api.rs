//! The seed's routes against the real server on an ephemeral port, on SQLite and MariaDB,
//! including the security holes of SEED-API.md section 8 that must stay closed.

mod common;

use common::{Backend, TestServer};
use reqwest::multipart::{Form, Part};
use reqwest::StatusCode;
use serde_json::Value;

fn sha1_hex(data: &[u8]) -> String {
    use sha1::Digest;
    hex::encode(sha1::Sha1::digest(data))
}

async fn seed_signin(s: &TestServer, user: &str, password: &str) -> (StatusCode, Value) {
    let r = s
        .http
        .post(s.url("/user/signin"))
        .form(&[("username", user), ("password", password)])
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap())
}

async fn seed_user(s: &TestServer, user: &str) -> String {
    let r = s
        .http
        .post(s.url("/user/signup"))
        .form(&[("username", user), ("password", "hunter2hunter2")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], 10000);
    let (status, v) = seed_signin(s, user, "hunter2hunter2").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["code"], 10000);
    assert_eq!(v["data"]["Username"], user);
    let token = v["data"]["Token"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 40, "160 random bits, the seed's token length");
    token
}

async fn upload(s: &TestServer, user: &str, token: &str, name: &str, data: &[u8]) -> Value {
    let form = Form::new()
        .text("username", user.to_string())
        .part("file", Part::bytes(data.to_vec()).file_name(name.to_string()));
    let r = s
        .http
        .post(s.url(&format!("/file/upload?username={user}&token={token}")))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], 10000, "{v}");
    v["data"].clone()
}

async fn call(s: &TestServer, path: &str, params: &[(&str, &str)]) -> (StatusCode, Value) {
    let r = s.http.post(s.url(path)).form(params).send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn accounts(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let token = seed_user(&s, "alice").await;
    // Duplicate, invalid name, short password: 4xx with the envelope.
    let (st, v) = call(
        &s,
        "/user/signup",
        &[("username", "alice"), ("password", "hunter2hunter2")],
    )
    .await;
    assert_eq!((st, v["code"].as_i64()), (StatusCode::CONFLICT, Some(10003)));
    let (st, v) = call(
        &s,
        "/user/signup",
        &[("username", "a b"), ("password", "hunter2hunter2")],
    )
    .await;
    assert_eq!((st, v["code"].as_i64()), (StatusCode::BAD_REQUEST, Some(10001)));
    let (st, v) = call(&s, "/user/signup", &[("username", "bobby"), ("password", "short")]).await;
    assert_eq!((st, v["code"].as_i64()), (StatusCode::BAD_REQUEST, Some(10001)));
    let (st, v) = call(&s, "/user/signup", &[("username", "bobby")]).await;
    assert_eq!((st, v["code"].as_i64()), (StatusCode::BAD_REQUEST, Some(10001)));
    // Wrong password and unknown user look the same.
    let (st, v) = seed_signin(&s, "alice", "wrong-password").await;
    assert_eq!((st, v["code"].as_i64()), (StatusCode::UNAUTHORIZED, Some(10004)));
    let (st, v) = seed_signin(&s, "nobody", "wrong-password").await;
    assert_eq!((st, v["code"].as_i64()), (StatusCode::UNAUTHORIZED, Some(10004)));

    // Info with the token in the query, in the form, and as a Bearer header.
    let (st, v) = call(&s, &format!("/user/info?username=alice&token={token}"), &[]).await;
    assert_eq!((st, v["code"].as_i64()), (StatusCode::OK, Some(10000)));
    assert_eq!(v["data"]["Username"], "alice");
    assert!(v["data"]["SignupAt"].as_str().unwrap().len() == 19);
    let (st, _) = call(&s, "/user/info", &[("username", "alice"), ("token", &token)]).await;
    assert_eq!(st, 200);
    let r = s
        .http
        .get(s.url("/user/info"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Hole 8.1.1: any 40-character token, or a real token with another user's name.
    let _bob = seed_user(&s, "bob").await;
    let forged = "a".repeat(40);
    let (st, v) = call(&s, &format!("/user/info?username=alice&token={forged}"), &[]).await;
    assert_eq!((st, v["code"].as_i64()), (StatusCode::UNAUTHORIZED, Some(10005)));
    let (st, v) = call(&s, &format!("/user/info?username=bob&token={token}"), &[]).await;
    assert_eq!((st, v["code"].as_i64()), (StatusCode::UNAUTHORIZED, Some(10005)));
    let (st, _) = call(&s, "/user/info", &[]).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    // Disabled users cannot sign in and their tokens die.
    s.running()
        .services()
        .meta
        .set_user_disabled("bob", true)
        .await
        .unwrap();
    let (st, v) = seed_signin(&s, "bob", "hunter2hunter2").await;
    assert_eq!((st, v["code"].as_i64()), (StatusCode::FORBIDDEN, Some(10004)));

    // Sign-out ends the session.
    let (st, _) = call(&s, &format!("/user/signout?token={token}"), &[]).await;
    assert_eq!(st, 200);
    let (st, v) = call(&s, &format!("/user/info?token={token}"), &[]).await;
    assert_eq!((st, v["code"].as_i64()), (StatusCode::UNAUTHORIZED, Some(10005)));

    // GET of the form routes sends browsers to the web page, as the seed did.
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(s.url("/user/signin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    s.stop().await;
}

async fn files(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let t = seed_user(&s, "alice").await;
    let data = b"0123456789abcdefghij".repeat(1000);
    let hash = sha1_hex(&data);
    let f = upload(&s, "alice", &t, "report ü.txt", &data).await;
    assert_eq!(f["FileHash"], hash);
    assert_eq!(f["FileSize"], data.len());
    // Same name again: kept both, like a browser download.
    let f2 = upload(&s, "alice", &t, "report ü.txt", &data).await;
    assert_eq!(f2["FileName"], "report ü (1).txt");
    // A name with a path is reduced to its last component (hole 8.2.8).
    let f3 = upload(&s, "alice", &t, "../../etc/evil.txt", b"x").await;
    assert_eq!(f3["FileName"], "evil.txt");

    // Query: newest first, default 15, limit validated.
    let (st, v) = call(&s, &format!("/file/query?username=alice&token={t}"), &[("limit", "2")]).await;
    assert_eq!(st, 200);
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    assert_eq!(arr[0]["FileName"], "evil.txt");
    assert_eq!(arr[1]["FileName"], "report ü (1).txt");
    for bad in ["-1", "0", "ten"] {
        let (st, v) = call(&s, &format!("/file/query?token={t}"), &[("limit", bad)]).await;
        assert_eq!(
            (st, v["code"].as_i64()),
            (StatusCode::BAD_REQUEST, Some(10001)),
            "limit={bad}"
        );
    }
    let (_, v) = call(&s, &format!("/file/query?token={t}"), &[]).await;
    assert_eq!(v.as_array().unwrap().len(), 3);

    // Meta acts on the newest entry with that content.
    let (st, v) = call(&s, &format!("/file/meta?token={t}&filehash={hash}"), &[]).await;
    assert_eq!(st, 200);
    assert_eq!(v["FileName"], "report ü (1).txt");
    assert_eq!(v["FileSha1"], hash);
    assert!(
        !v["Location"].as_str().unwrap().contains('/'),
        "no server path is exposed"
    );
    let (st, _) = call(&s, &format!("/file/meta?token={t}&filehash=../../etc/passwd"), &[]).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    // Download: whole, ranged, with an RFC 5987 file name.
    let r = s
        .http
        .get(s.url(&format!("/file/download?token={t}&filehash={hash}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cd = r.headers()["content-disposition"].to_str().unwrap().to_string();
    assert!(cd.contains("filename*=UTF-8''report%20%C3%BC%20%281%29.txt"), "{cd}");
    assert_eq!(r.headers()["etag"], format!("\"{hash}\"").as_str());
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[..]);
    let r = s
        .http
        .get(s.url(&format!("/file/download?token={t}&filehash={hash}")))
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 10-19/{}", data.len()).as_str()
    );
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[10..20]);

    // downloadurl: a link that works without the token and does not contain it.
    let (st, url) = call(&s, &format!("/file/downloadurl?token={t}&filehash={hash}"), &[]).await;
    assert_eq!(st, 200);
    let url = url.as_str().unwrap().to_string();
    assert!(!url.contains(&t), "the token must not travel in links (hole 8.1.5)");
    let r = s.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), data.len());
    let tampered = url.replace("ticket=1.", "ticket=2.");
    let r = s.http.get(&tampered).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // Update renames the newest entry; op must be 0; GET is refused.
    let (st, v) = call(
        &s,
        &format!("/file/update?token={t}"),
        &[("op", "0"), ("filehash", &hash), ("filename", "final.txt")],
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["FileName"], "final.txt");
    let (st, _) = call(
        &s,
        &format!("/file/update?token={t}"),
        &[("op", "1"), ("filehash", &hash), ("filename", "x")],
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = call(
        &s,
        &format!("/file/update?token={t}"),
        &[("op", "0"), ("filehash", &hash), ("filename", "a/b")],
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = call(
        &s,
        &format!("/file/update?token={t}"),
        &[("op", "0"), ("filehash", &hash), ("filename", "evil.txt")],
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT);
    let r = s
        .http
        .get(s.url(&format!("/file/update?token={t}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(r.json::<Value>().await.is_ok(), "405 has a JSON body");

    // Delete removes one entry (the newest), then the other; bytes stay until the last.
    let (st, v) = call(&s, &format!("/file/delete?token={t}"), &[("filehash", &hash)]).await;
    assert_eq!((st, v["code"].as_i64()), (StatusCode::OK, Some(10000)));
    let (_, v) = call(&s, &format!("/file/meta?token={t}&filehash={hash}"), &[]).await;
    assert_eq!(v["FileName"], "report ü.txt");
    call(&s, &format!("/file/delete?token={t}"), &[("filehash", &hash)]).await;
    let (st, v) = call(&s, &format!("/file/meta?token={t}&filehash={hash}"), &[]).await;
    assert_eq!((st, v["code"].as_i64()), (StatusCode::NOT_FOUND, Some(10001)));
    let (_, v) = call(&s, &format!("/file/query?token={t}"), &[]).await;
    assert_eq!(
        v.as_array().unwrap().len(),
        1,
        "deleted files are not listed (hole 8.3.16)"
    );
    s.stop().await;
}

/// Hole 8.1.3: knowing a hash gives nothing. Bob cannot read, list, rename or delete
/// Alice's file, and his own copy of the same bytes does not touch hers.
async fn other_users_files(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let ta = seed_user(&s, "alice").await;
    let tb = seed_user(&s, "bob").await;
    let data = b"alice's private bytes".to_vec();
    let hash = sha1_hex(&data);
    upload(&s, "alice", &ta, "diary.txt", &data).await;
    for path in ["/file/meta", "/file/download", "/file/downloadurl", "/file/delete"] {
        let (st, v) = call(&s, &format!("{path}?username=bob&token={tb}&filehash={hash}"), &[]).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{path}: {v}");
    }
    let (st, _) = call(
        &s,
        &format!("/file/update?token={tb}"),
        &[("op", "0"), ("filehash", &hash), ("filename", "x")],
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // Bob's token with Alice's name is refused outright.
    let (st, _) = call(&s, &format!("/file/query?username=alice&token={tb}"), &[]).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (_, v) = call(&s, &format!("/file/query?token={tb}"), &[]).await;
    assert_eq!(v.as_array().unwrap().len(), 0);
    // Bob uploads the same bytes and deletes his copy: Alice's is intact.
    upload(&s, "bob", &tb, "mine.txt", &data).await;
    call(&s, &format!("/file/delete?token={tb}"), &[("filehash", &hash)]).await;
    let r = s
        .http
        .get(s.url(&format!("/file/download?token={ta}&filehash={hash}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[..]);
    // A ticket of Alice's cannot be bent to another file.
    let (_, url) = call(&s, &format!("/file/downloadurl?token={ta}&filehash={hash}"), &[]).await;
    let other = upload(&s, "bob", &tb, "b.txt", b"bob").await;
    let bent = url
        .as_str()
        .unwrap()
        .replace(&hash, other["FileHash"].as_str().unwrap());
    assert_eq!(s.http.get(&bent).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    s.stop().await;
}

async fn upload_limits(backend: Backend) {
    let Some(s) = TestServer::start_with(backend, |c| c.server.max_upload_bytes = 10_000).await else {
        return;
    };
    let t = seed_user(&s, "alice").await;
    // A declared length over the limit is refused before any body byte is read.
    let head = format!(
        "POST /file/upload?token={t} HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 50000\r\n\r\n"
    );
    let (status, body) = common::raw_request(&s.base, head.as_bytes()).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["code"], 10001);
    // Streamed (chunked) over the limit: refused once the limit is crossed. The server
    // answers and closes without reading the rest, so a client still sending may see the
    // connection reset instead of the 413; either way nothing is stored.
    let form = Form::new().part("file", Part::stream(vec![7u8; 50_000]).file_name("big.bin"));
    match s
        .http
        .post(s.url(&format!("/file/upload?token={t}")))
        .multipart(form)
        .send()
        .await
    {
        Ok(r) => assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE),
        Err(e) => assert!(e.is_request(), "{e}"),
    }
    // Not multipart at all.
    let r = s
        .http
        .post(s.url(&format!("/file/upload?token={t}")))
        .body("plain")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // No file field.
    let form = Form::new().text("other", "x");
    let r = s
        .http
        .post(s.url(&format!("/file/upload?token={t}")))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let (_, v) = call(&s, &format!("/file/query?token={t}"), &[]).await;
    assert_eq!(v.as_array().unwrap().len(), 0, "nothing was stored");
    let staging = s.running().services().staging.clone();
    assert!(staging.objects().files().unwrap().is_empty(), "no content was stored");
    s.stop().await;
}

both_backends! {
    seed_accounts => accounts;
    seed_files => files;
    seed_hashes_grant_nothing => other_users_files;
    seed_upload_limits => upload_limits;
}
