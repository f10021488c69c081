//! Over a real socket: what an in-process test cannot show (HTTP/1.1 chunked framing,
//! `Expect: 100-continue`, Basic authentication at the test server).

use std::net::SocketAddr;

use filestore_webdav::testing::{serve, TestUser};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn start() -> (SocketAddr, TestUser) {
    let user = TestUser::new("finder", "pw");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(serve(listener, "/dav", vec![user.clone()]));
    (addr, user)
}

/// Sends raw bytes on a fresh connection (the request says `Connection: close`) and
/// returns the whole response.
async fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(raw).await.expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn chunked_put_without_length_like_macos_finder() {
    let (addr, user) = start().await;
    let auth = user.basic_auth();
    let put = format!(
        "PUT /dav/chunked.txt HTTP/1.1\r\nHost: t\r\nAuthorization: {auth}\r\n\
         Transfer-Encoding: chunked\r\nX-Expected-Entity-Length: 11\r\nConnection: close\r\n\r\n\
         5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    );
    let res = exchange(addr, put.as_bytes()).await;
    assert!(res.starts_with("HTTP/1.1 201"), "{res}");

    let get = format!("GET /dav/chunked.txt HTTP/1.1\r\nHost: t\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n");
    let res = exchange(addr, get.as_bytes()).await;
    assert!(res.starts_with("HTTP/1.1 200"), "{res}");
    assert!(res.ends_with("\r\n\r\nhello world"), "{res}");
}

#[tokio::test]
async fn truncated_body_stores_nothing() {
    let (addr, user) = start().await;
    let auth = user.basic_auth();
    // Announces 100 bytes, sends 5, then closes its side.
    let put =
        format!("PUT /dav/cut.txt HTTP/1.1\r\nHost: t\r\nAuthorization: {auth}\r\nContent-Length: 100\r\n\r\nhello");
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(put.as_bytes()).await.expect("write");
    s.shutdown().await.expect("half-close");
    let mut out = Vec::new();
    // The server may answer with an error or just close: either way nothing is stored.
    let _ = s.read_to_end(&mut out).await;
    let res = String::from_utf8_lossy(&out);
    assert!(!res.starts_with("HTTP/1.1 2"), "{res}");

    let get = format!("GET /dav/cut.txt HTTP/1.1\r\nHost: t\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n");
    let res = exchange(addr, get.as_bytes()).await;
    assert!(res.starts_with("HTTP/1.1 404"), "{res}");
}

#[tokio::test]
async fn credentials_are_required() {
    let (addr, _) = start().await;
    let res = exchange(addr, b"OPTIONS /dav/ HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await;
    assert!(res.starts_with("HTTP/1.1 401"), "{res}");
    assert!(res.to_ascii_lowercase().contains("www-authenticate: basic"), "{res}");
}
