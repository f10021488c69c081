//! WebDAV behaviour driven in process through `WebDav::handle`, over the in-memory port.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::{sha1_hex, Harness};
use filestore_webdav::memory::MemoryPort;
use filestore_webdav::{DavPort, DeadProp, PropPatch, LIST_PAGE};
use futures_util::StreamExt;
use http::{Request, StatusCode};
use http_body_util::StreamBody;

const ALICE: &str = "alice";

fn port() -> Arc<MemoryPort> {
    Arc::new(MemoryPort::new())
}

const PROPFIND_ALL: &str =
    r#"<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>"#;

#[tokio::test]
async fn options_advertises_class_1_and_2_everywhere() {
    let h = Harness::new();
    let p = port();
    for path in ["/dav", "/dav/", "/dav/missing/file.txt"] {
        let r = h.send(ALICE, &p, "OPTIONS", path, &[], "").await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(r.header("dav"), Some("1, 2"), "{path}");
        assert_eq!(r.header("ms-author-via"), Some("DAV"), "{path}");
        assert!(r.header("allow").is_some_and(|a| a.contains("LOCK")), "{path}");
    }
}

#[tokio::test]
async fn propfind_depth_0_1_and_infinity() {
    let h = Harness::new();
    let p = port();
    let dir = p.insert_dir(p.root_id(), "docs").unwrap();
    p.insert_file(dir.id, "a.txt", b"hello").unwrap();
    p.insert_file(dir.id, "b.txt", b"world!").unwrap();
    p.insert_dir(dir.id, "sub").unwrap();

    let r = h
        .send(ALICE, &p, "PROPFIND", "/dav/docs/", &[("depth", "0")], PROPFIND_ALL)
        .await;
    assert_eq!(r.status, StatusCode::MULTI_STATUS);
    assert_eq!(r.responses(), 1, "{}", r.text());
    assert!(r.text().contains("<D:href>/dav/docs/</D:href>"));
    assert!(r.text().contains("<D:collection"));

    let r = h
        .send(ALICE, &p, "PROPFIND", "/dav/docs/", &[("depth", "1")], PROPFIND_ALL)
        .await;
    assert_eq!(r.status, StatusCode::MULTI_STATUS);
    assert_eq!(r.responses(), 4, "{}", r.text());
    let t = r.text();
    assert!(t.contains("<D:href>/dav/docs/a.txt</D:href>"));
    assert!(t.contains("<D:href>/dav/docs/sub/</D:href>"));
    // DAV:getetag is the entity tag of the ETag header, quotes included (RFC 4918
    // 15.6; dav-server leaves them out, this crate's own PROPFIND writes them).
    assert!(
        t.contains(&format!("<D:getetag>\"{}\"</D:getetag>", sha1_hex(b"hello"))),
        "{t}"
    );
    assert!(t.contains("<D:getcontentlength>6</D:getcontentlength>"));

    // No Depth header: answered as Depth 1 (target included).
    let r = h.send(ALICE, &p, "PROPFIND", "/dav/docs/", &[], "").await;
    assert_eq!(r.status, StatusCode::MULTI_STATUS);
    assert_eq!(r.responses(), 4);

    let r = h
        .send(ALICE, &p, "PROPFIND", "/dav/docs/", &[("depth", "infinity")], "")
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.text().contains("propfind-finite-depth"), "{}", r.text());

    let r = h.send(ALICE, &p, "PROPFIND", "/dav/nope/", &[("depth", "0")], "").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn propfind_on_10000_entries_lists_in_pages_without_per_entry_calls() {
    let h = Harness::new();
    let p = port();
    let dir = p.insert_dir(p.root_id(), "big").unwrap();
    for i in 0..10_000 {
        p.insert_file(dir.id, &format!("f{i:05}.bin"), format!("{i}").as_bytes())
            .unwrap();
    }
    // A few entries with dead properties: they must show without extra calls.
    for i in [0, 4_321, 9_999] {
        let e = p.lookup(dir.id, &format!("f{i:05}.bin")).await.unwrap().unwrap();
        let xml = format!(r#"<Z:color xmlns:Z="urn:test">c{i}</Z:color>"#).into_bytes();
        let prop = DeadProp {
            namespace: Some("urn:test".into()),
            name: "color".into(),
            xml,
        };
        p.patch_props(e.id, vec![PropPatch::Set(prop)]).await.unwrap();
    }
    p.reset_calls();

    let r = h
        .send(ALICE, &p, "PROPFIND", "/dav/big/", &[("depth", "1")], PROPFIND_ALL)
        .await;
    assert_eq!(r.status, StatusCode::MULTI_STATUS);
    assert_eq!(r.responses(), 10_001);
    let t = r.text();
    for i in [0, 4_321, 9_999] {
        assert!(t.contains(&format!("c{i}</Z:color>")), "dead property of f{i:05}");
    }

    let c = p.calls();
    let pages = (10_000 / LIST_PAGE + 1) as u64;
    assert!(c.list <= pages, "list calls: {c:?}");
    assert!(c.get_props_many <= pages, "batched property calls: {c:?}");
    // Resolving /big and reading its own properties: a handful, not 10,000.
    assert!(c.lookup + c.get <= 4, "{c:?}");
    assert!(c.get_props <= 2, "{c:?}");
    assert_eq!(c.read, 0);
}

#[tokio::test]
async fn put_with_length_then_get_with_etag_and_conditionals() {
    let h = Harness::new();
    let p = port();
    let r = h.send(ALICE, &p, "PUT", "/dav/note.txt", &[], "first").await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = h.send(ALICE, &p, "PUT", "/dav/note.txt", &[], "second version").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let etag = format!("\"{}\"", sha1_hex(b"second version"));
    assert_eq!(r.header("etag"), Some(etag.as_str()));

    let r = h.send(ALICE, &p, "GET", "/dav/note.txt", &[], "").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], b"second version");
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert!(r.header("last-modified").is_some());

    let r = h.send(ALICE, &p, "HEAD", "/dav/note.txt", &[], "").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-length"), Some("14"));
    assert!(r.body.is_empty());

    let r = h
        .send(ALICE, &p, "GET", "/dav/note.txt", &[("if-none-match", &etag)], "")
        .await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    let r = h
        .send(ALICE, &p, "PUT", "/dav/note.txt", &[("if-match", "\"0000\"")], "x")
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    let r = h
        .send(ALICE, &p, "PUT", "/dav/note.txt", &[("if-none-match", "*")], "x")
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);

    // A missing parent is a conflict; a partial PUT is refused.
    let r = h.send(ALICE, &p, "PUT", "/dav/no/such/dir.txt", &[], "x").await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = h
        .send(
            ALICE,
            &p,
            "PUT",
            "/dav/note.txt",
            &[("content-range", "bytes 0-0/1")],
            "x",
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = h.send(ALICE, &p, "GET", "/dav/note.txt", &[], "").await;
    assert_eq!(&r.body[..], b"second version", "refused writes left the file alone");
}

fn chunked_put(
    path: &str,
    chunks: Vec<Result<Bytes, std::io::Error>>,
) -> Request<impl http_body::Body<Data = Bytes, Error = std::io::Error> + Send + 'static> {
    let frames = futures_util::stream::iter(chunks).map(|c| c.map(http_body::Frame::data));
    Request::builder()
        .method("PUT")
        .uri(path)
        .body(StreamBody::new(frames))
        .expect("request")
}

#[tokio::test]
async fn put_without_length_streams_chunks_to_the_port() {
    let h = Harness::new();
    let p = port();
    let chunks: Vec<Bytes> = (0..64).map(|i| Bytes::from(vec![i as u8; 16 * 1024])).collect();
    let whole: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
    let r = h
        .send_body(
            ALICE,
            &p,
            chunked_put("/dav/big.bin", chunks.into_iter().map(Ok).collect()),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let shape = p.last_upload();
    assert_eq!(shape.bytes, whole.len() as u64);
    assert!(shape.chunks >= 64, "the port saw the body as it came: {shape:?}");

    let r = h.send(ALICE, &p, "GET", "/dav/big.bin", &[], "").await;
    assert_eq!(r.body.len(), whole.len());
    assert!(r.body[..] == whole[..]);
    assert_eq!(
        r.header("etag").map(str::to_owned),
        Some(format!("\"{}\"", sha1_hex(&whole)))
    );
}

#[tokio::test]
async fn put_with_a_failing_body_stores_nothing() {
    let h = Harness::new();
    let p = port();
    let chunks = vec![
        Ok(Bytes::from_static(b"partial ")),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "client went away",
        )),
    ];
    let r = h.send_body(ALICE, &p, chunked_put("/dav/broken.txt", chunks)).await;
    assert!(r.status.is_client_error() || r.status.is_server_error(), "{}", r.status);
    let r = h.send(ALICE, &p, "GET", "/dav/broken.txt", &[], "").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(p.lookup(p.root_id(), "broken.txt").await.unwrap().is_none());
}

#[tokio::test]
async fn put_too_large_is_413_and_stores_nothing() {
    let h = Harness::new();
    let p = Arc::new(MemoryPort::new().with_max_file_size(1000));
    // Announced length over the limit: refused before the body is read.
    let r = h.send(ALICE, &p, "PUT", "/dav/a.bin", &[], vec![0u8; 2000]).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    // No length: refused when the limit is crossed.
    let chunks = (0..4).map(|_| Ok(Bytes::from(vec![1u8; 400]))).collect();
    let r = h.send_body(ALICE, &p, chunked_put("/dav/b.bin", chunks)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(p.lookup(p.root_id(), "a.bin").await.unwrap().is_none());
    assert!(p.lookup(p.root_id(), "b.bin").await.unwrap().is_none());
}

#[tokio::test]
async fn get_ranges() {
    let h = Harness::new();
    let p = port();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    p.insert_file(p.root_id(), "r.bin", &data).unwrap();

    let r = h
        .send(ALICE, &p, "GET", "/dav/r.bin", &[("range", "bytes=2-5")], "")
        .await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.header("content-range"), Some("bytes 2-5/200000"));
    assert_eq!(&r.body[..], &data[2..6]);

    let r = h
        .send(ALICE, &p, "GET", "/dav/r.bin", &[("range", "bytes=150000-")], "")
        .await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert!(r.body[..] == data[150_000..]);

    let r = h
        .send(ALICE, &p, "GET", "/dav/r.bin", &[("range", "bytes=-3")], "")
        .await;
    assert_eq!(&r.body[..], &data[199_997..]);

    let r = h
        .send(
            ALICE,
            &p,
            "GET",
            "/dav/r.bin",
            &[("range", "bytes=0-1,100000-100001")],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("multipart/byteranges")));

    let r = h
        .send(ALICE, &p, "GET", "/dav/r.bin", &[("range", "bytes=300000-")], "")
        .await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);

    // If-Range with a stale validator: the whole file.
    let r = h
        .send(
            ALICE,
            &p,
            "GET",
            "/dav/r.bin",
            &[("range", "bytes=0-0"), ("if-range", "\"old\"")],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body.len(), data.len());
}

#[tokio::test]
async fn copy_and_move_follow_the_overwrite_rules() {
    let h = Harness::new();
    let p = port();
    p.insert_file(p.root_id(), "src.txt", b"source").unwrap();
    p.insert_file(p.root_id(), "dst.txt", b"destination").unwrap();
    let dest = [("destination", "http://localhost/dav/dst.txt"), ("overwrite", "F")];

    let r = h.send(ALICE, &p, "COPY", "/dav/src.txt", &dest, "").await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    let r = h.send(ALICE, &p, "MOVE", "/dav/src.txt", &dest, "").await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);

    let r = h
        .send(
            ALICE,
            &p,
            "COPY",
            "/dav/src.txt",
            &[("destination", "/dav/dst.txt")],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "overwrote an existing resource");
    let r = h.send(ALICE, &p, "GET", "/dav/dst.txt", &[], "").await;
    assert_eq!(&r.body[..], b"source");

    let r = h
        .send(
            ALICE,
            &p,
            "COPY",
            "/dav/src.txt",
            &[("destination", "/dav/new.txt")],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = h
        .send(
            ALICE,
            &p,
            "MOVE",
            "/dav/new.txt",
            &[("destination", "/dav/moved.txt")],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        h.send(ALICE, &p, "GET", "/dav/new.txt", &[], "").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.send(ALICE, &p, "GET", "/dav/moved.txt", &[], "").await.status,
        StatusCode::OK
    );

    // Missing destination parent: 409. Onto itself: 403.
    let r = h
        .send(
            ALICE,
            &p,
            "MOVE",
            "/dav/moved.txt",
            &[("destination", "/dav/nope/x.txt")],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = h
        .send(
            ALICE,
            &p,
            "COPY",
            "/dav/moved.txt",
            &[("destination", "/dav/moved.txt")],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn collections_are_copied_moved_and_deleted_in_one_port_call() {
    let h = Harness::new();
    let p = port();
    let tree = p.insert_dir(p.root_id(), "tree").unwrap();
    let sub = p.insert_dir(tree.id, "sub").unwrap();
    for i in 0..50 {
        p.insert_file(tree.id, &format!("f{i}"), b"x").unwrap();
        p.insert_file(sub.id, &format!("g{i}"), b"y").unwrap();
    }
    let r = h
        .send(ALICE, &p, "PROPPATCH", "/dav/tree/sub/g7", &[], r#"<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:t"><D:set><D:prop><Z:tag>seven</Z:tag></D:prop></D:set></D:propertyupdate>"#)
        .await;
    assert_eq!(r.status, StatusCode::MULTI_STATUS);

    p.reset_calls();
    let r = h
        .send(ALICE, &p, "COPY", "/dav/tree/", &[("destination", "/dav/copy/")], "")
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(p.calls().mutations, 1, "{:?}", p.calls());
    let r = h
        .send(
            ALICE,
            &p,
            "PROPFIND",
            "/dav/copy/sub/g7",
            &[("depth", "0")],
            PROPFIND_ALL,
        )
        .await;
    assert!(
        r.text().contains("seven"),
        "dead properties travel with COPY: {}",
        r.text()
    );

    // COPY with Depth 0 makes an empty collection.
    let r = h
        .send(
            ALICE,
            &p,
            "COPY",
            "/dav/tree/",
            &[("destination", "/dav/shallow/"), ("depth", "0")],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = h
        .send(ALICE, &p, "PROPFIND", "/dav/shallow/", &[("depth", "1")], "")
        .await;
    assert_eq!(r.responses(), 1);

    // MOVE over an existing collection replaces it.
    p.reset_calls();
    let r = h
        .send(ALICE, &p, "MOVE", "/dav/copy/", &[("destination", "/dav/shallow/")], "")
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(p.calls().mutations, 2, "delete destination + rename: {:?}", p.calls());
    let r = h.send(ALICE, &p, "GET", "/dav/shallow/sub/g49", &[], "").await;
    assert_eq!(&r.body[..], b"y");

    // Moving a collection below itself is refused.
    let r = h
        .send(
            ALICE,
            &p,
            "MOVE",
            "/dav/tree/",
            &[("destination", "/dav/tree/sub/inner/")],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    p.reset_calls();
    let r = h.send(ALICE, &p, "DELETE", "/dav/tree/", &[], "").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(p.calls().mutations, 1, "{:?}", p.calls());
    assert!(p.lookup(p.root_id(), "tree").await.unwrap().is_none());
}

fn lock_body() -> &'static str {
    r#"<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype><D:owner>test</D:owner></D:lockinfo>"#
}

#[tokio::test]
async fn locks_are_honoured_by_put_delete_and_move() {
    let h = Harness::new();
    let p = port();
    p.insert_file(p.root_id(), "locked.txt", b"v1").unwrap();
    let r = h
        .send(
            ALICE,
            &p,
            "LOCK",
            "/dav/locked.txt",
            &[("timeout", "Second-600")],
            lock_body(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let token = r.header("lock-token").expect("Lock-Token header").to_owned();
    let with_token = format!("({token})");

    let r = h.send(ALICE, &p, "PUT", "/dav/locked.txt", &[], "v2").await;
    assert_eq!(r.status, StatusCode::LOCKED);
    let r = h.send(ALICE, &p, "DELETE", "/dav/locked.txt", &[], "").await;
    assert_eq!(r.status, StatusCode::LOCKED);
    let r = h
        .send(
            ALICE,
            &p,
            "MOVE",
            "/dav/locked.txt",
            &[("destination", "/dav/other.txt")],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::LOCKED);
    let r = h
        .send(ALICE, &p, "PUT", "/dav/locked.txt", &[("if", &with_token)], "v2")
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);

    // A locked collection protects its members (depth infinity).
    p.insert_dir(p.root_id(), "box").unwrap();
    let r = h.send(ALICE, &p, "LOCK", "/dav/box/", &[], lock_body()).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = h.send(ALICE, &p, "PUT", "/dav/box/inner.txt", &[], "x").await;
    assert_eq!(r.status, StatusCode::LOCKED);

    let r = h
        .send(ALICE, &p, "UNLOCK", "/dav/locked.txt", &[("lock-token", &token)], "")
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = h.send(ALICE, &p, "DELETE", "/dav/locked.txt", &[], "").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);

    // LOCK on an unmapped URL creates an empty resource.
    let r = h.send(ALICE, &p, "LOCK", "/dav/fresh.txt", &[], lock_body()).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = h.send(ALICE, &p, "GET", "/dav/fresh.txt", &[], "").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn two_users_see_neither_files_nor_locks_of_each_other() {
    let h = Harness::new();
    let alice = port();
    let bob = port();
    let r = h.send("alice", &alice, "PUT", "/dav/secret.txt", &[], "alice's").await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = h.send("bob", &bob, "GET", "/dav/secret.txt", &[], "").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // Alice locks /dav/shared.txt in her tree; Bob's same URL is his own, unlocked.
    alice.insert_file(alice.root_id(), "shared.txt", b"a").unwrap();
    bob.insert_file(bob.root_id(), "shared.txt", b"b").unwrap();
    let r = h
        .send("alice", &alice, "LOCK", "/dav/shared.txt", &[], lock_body())
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = h.send("bob", &bob, "PUT", "/dav/shared.txt", &[], "bob's").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = h
        .send(
            "bob",
            &bob,
            "PROPFIND",
            "/dav/shared.txt",
            &[("depth", "0")],
            PROPFIND_ALL,
        )
        .await;
    assert!(!r.text().contains("opaquelocktoken"), "{}", r.text());
    let r = h.send("alice", &alice, "PUT", "/dav/shared.txt", &[], "alice's").await;
    assert_eq!(r.status, StatusCode::LOCKED);
}

#[tokio::test]
async fn proppatch_sets_and_removes_dead_properties() {
    let h = Harness::new();
    let p = port();
    p.insert_file(p.root_id(), "p.txt", b"x").unwrap();
    let set = r#"<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:x"><D:set><D:prop><Z:author>Ada &amp; co</Z:author></D:prop></D:set></D:propertyupdate>"#;
    let r = h.send(ALICE, &p, "PROPPATCH", "/dav/p.txt", &[], set).await;
    assert_eq!(r.status, StatusCode::MULTI_STATUS);
    assert!(r.text().contains("200 OK"), "{}", r.text());
    let get =
        r#"<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:Z="urn:x"><D:prop><Z:author/></D:prop></D:propfind>"#;
    let r = h
        .send(ALICE, &p, "PROPFIND", "/dav/p.txt", &[("depth", "0")], get)
        .await;
    assert!(r.text().contains("Ada &amp; co"), "{}", r.text());

    let rm = r#"<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:x"><D:remove><D:prop><Z:author/></D:prop></D:remove></D:propertyupdate>"#;
    let r = h.send(ALICE, &p, "PROPPATCH", "/dav/p.txt", &[], rm).await;
    assert_eq!(r.status, StatusCode::MULTI_STATUS);
    let r = h
        .send(ALICE, &p, "PROPFIND", "/dav/p.txt", &[("depth", "0")], get)
        .await;
    assert!(!r.text().contains("Ada"), "{}", r.text());
    let e = p.lookup(p.root_id(), "p.txt").await.unwrap().unwrap();
    assert!(p.get_props(e.id).await.unwrap().is_empty());
}

#[tokio::test]
async fn mkcol_rules_and_bad_input() {
    let h = Harness::new();
    let p = port();
    assert_eq!(
        h.send(ALICE, &p, "MKCOL", "/dav/a/", &[], "").await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        h.send(ALICE, &p, "MKCOL", "/dav/a/", &[], "").await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        h.send(ALICE, &p, "MKCOL", "/dav/x/y/", &[], "").await.status,
        StatusCode::CONFLICT
    );
    assert_eq!(
        h.send(ALICE, &p, "MKCOL", "/dav/b/", &[], "body").await.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    assert_eq!(
        h.send(ALICE, &p, "PUT", "/dav/a/", &[], "x").await.status,
        StatusCode::FORBIDDEN
    );
    let long = format!("/dav/{}", "n".repeat(300));
    assert_eq!(
        h.send(ALICE, &p, "PUT", &long, &[], "x").await.status,
        StatusCode::URI_TOO_LONG
    );
    // Broken XML and paths escaping the root are client errors, not panics.
    assert_eq!(
        h.send(ALICE, &p, "PROPFIND", "/dav/", &[("depth", "0")], "<nope")
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        h.send(ALICE, &p, "GET", "/dav/../../etc/passwd", &[], "").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        h.send(ALICE, &p, "DELETE", "/dav/", &[], "").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        h.send(ALICE, &p, "PATCH", "/dav/a/", &[], "").await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
}
