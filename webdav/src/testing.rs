//! A loopback WebDAV server over [`MemoryPort`]s with fixed Basic credentials: what the
//! `memdav` example and the litmus test run. Not for production: passwords are
//! compared in plain text and nothing is persisted.

use std::convert::Infallible;
use std::io;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::handler::{DavBody, DavUser, WebDav};
use crate::locks::{LockSpaces, MemLockSpaces};
use crate::memory::MemoryPort;

/// One account of the test server.
#[derive(Clone)]
pub struct TestUser {
    /// User name (also the lock principal and lock-space key).
    pub name: String,
    /// Password.
    pub password: String,
    /// The user's tree.
    pub port: Arc<MemoryPort>,
}

impl TestUser {
    /// A user with an empty tree.
    pub fn new(name: &str, password: &str) -> Self {
        Self {
            name: name.into(),
            password: password.into(),
            port: Arc::new(MemoryPort::new()),
        }
    }

    /// The `Authorization` header value this user sends.
    pub fn basic_auth(&self) -> String {
        format!(
            "Basic {}",
            base64(format!("{}:{}", self.name, self.password).as_bytes())
        )
    }
}

/// Standard base64 with padding (RFC 4648), enough for Basic credentials.
pub fn base64(input: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(A[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

struct Server {
    webdav: WebDav,
    users: Vec<(String, TestUser)>,
    locks: MemLockSpaces,
}

impl Server {
    async fn serve_one(&self, req: http::Request<Incoming>) -> http::Response<DavBody> {
        let auth = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let Some(user) = auth
            .and_then(|a| self.users.iter().find(|(h, _)| h == a))
            .map(|(_, u)| u)
        else {
            let mut res = http::Response::new(DavBody::empty());
            *res.status_mut() = http::StatusCode::UNAUTHORIZED;
            res.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Basic realm=\"filestore\""),
            );
            return res;
        };
        let path = req.uri().path();
        let prefix = self.webdav.prefix();
        if !(path == prefix || path.starts_with(&format!("{prefix}/"))) {
            let mut res = http::Response::new(DavBody::empty());
            *res.status_mut() = http::StatusCode::NOT_FOUND;
            return res;
        }
        let dav_user = DavUser {
            principal: user.name.clone(),
            port: user.port.clone(),
            locks: self.locks.for_user(&user.name),
        };
        self.webdav.handle(req, dav_user).await
    }
}

/// Serves `users` under `prefix` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, prefix: &str, users: Vec<TestUser>) -> io::Result<()> {
    let server = Arc::new(Server {
        webdav: WebDav::new(prefix),
        users: users.into_iter().map(|u| (u.basic_auth(), u)).collect(),
        locks: MemLockSpaces::new(),
    });
    loop {
        let (stream, _) = listener.accept().await?;
        let server = server.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let server = server.clone();
                async move { Ok::<_, Infallible>(server.serve_one(req).await) }
            });
            if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_vectors() {
        assert_eq!(super::base64(b""), "");
        assert_eq!(super::base64(b"f"), "Zg==");
        assert_eq!(super::base64(b"fo"), "Zm8=");
        assert_eq!(super::base64(b"foo"), "Zm9v");
        assert_eq!(super::base64(b"foobar"), "Zm9vYmFy");
    }
}
