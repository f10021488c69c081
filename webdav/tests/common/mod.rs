//! In-process harness: requests go straight to `WebDav::handle`, no sockets, as the
//! core will call it after authentication.

#![allow(dead_code)] // each test file uses a different part

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use filestore_webdav::memory::MemoryPort;
use filestore_webdav::{DavUser, LockSpaces, MemLockSpaces, WebDav};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};

pub struct Harness {
    pub webdav: WebDav,
    pub locks: MemLockSpaces,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Number of `<D:response>` elements in a multistatus body.
    pub fn responses(&self) -> usize {
        self.text().matches("<D:response>").count()
    }
}

impl Harness {
    pub fn new() -> Self {
        Self {
            webdav: WebDav::new("/dav"),
            locks: MemLockSpaces::new(),
        }
    }

    /// The lock system of user `name` (shared by every request of that user).
    pub fn locks_for(&self, name: &str) -> Box<dyn filestore_webdav::DavLockSystem> {
        self.locks.for_user(name)
    }

    fn user(&self, name: &str, port: &Arc<MemoryPort>) -> DavUser {
        DavUser {
            principal: name.into(),
            port: port.clone(),
            locks: self.locks.for_user(name),
        }
    }

    /// Sends a request with any body type as user `name`.
    pub async fn send_body<B>(&self, name: &str, port: &Arc<MemoryPort>, req: Request<B>) -> Reply
    where
        B: http_body::Body + Send + 'static,
        B::Data: bytes::Buf + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let res = self.webdav.handle(req, self.user(name, port)).await;
        let (parts, body) = res.into_parts();
        let body = match body.collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) => panic!("response body failed: {e}"),
        };
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// Sends `method path` with `headers` and a whole body.
    pub async fn send(
        &self,
        name: &str,
        port: &Arc<MemoryPort>,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        let body: Bytes = body.into();
        let mut b = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        if method == "PUT" && !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-length")) {
            b = b.header("content-length", body.len());
        }
        let req = b.body(Full::<Bytes>::new(body)).expect("valid request");
        self.send_body::<Full<Bytes>>(name, port, req).await
    }
}

/// A body type whose error is `Infallible` never fails: used to build streaming bodies.
pub type NoError = Infallible;

pub fn sha1_hex(data: &[u8]) -> String {
    use sha1::Digest;
    sha1::Sha1::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}
