//! The entry point: one HTTP request of one authenticated user in, one response out.
//!
//! The core authenticates (Basic or Bearer), builds the user's port, picks the user's
//! lock system and calls [`WebDav::handle`]. A dav-server handler is assembled per
//! request around those: that is a handful of small allocations, much less than the
//! metadata queries the request will make, and it keeps users apart by construction
//! (there is no shared file system in which to confuse them).
//!
//! A few answers are decided here rather than in dav-server:
//! - OPTIONS advertises exactly `DAV: 1, 2` (dav-server would add class 3 and SabreDAV
//!   partial updates, which this adapter does not offer).
//! - PROPFIND with `Depth: infinity` is refused with 403 and the
//!   `propfind-finite-depth` precondition (RFC 4918 9.1): its cost is unbounded. A
//!   PROPFIND without `Depth` is answered as `Depth: 1` (dav-server would otherwise
//!   leave out the target itself).
//! - PUT with `Content-Range` is refused with 400 (RFC 9110 14.5: partial PUT), and
//!   PATCH is not allowed: the port stores whole files.
//!
//! And two requests are answered here without dav-server whenever they can be, because
//! they are the ones clients send most: GET/HEAD of a file (`get`) and PROPFIND Depth 0
//! and 1 (`propfind`). Both modules say what they leave to dav-server.

use std::error::Error as StdError;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use dav_server::davpath::DavPath;
use dav_server::ls::DavLockSystem;
use dav_server::{DavHandler, DavMethod, DavMethodSet};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use tracing::Instrument;

pub use crate::body::DavBody;
use crate::fs::PortFs;
use crate::hint::{depth_is_infinity, has_content_range, Op};
use crate::port::DavPort;
use crate::{get, propfind};

/// Largest PROPFIND body read (dav-server's limit for request bodies too).
const MAX_XML_BODY: usize = 65_536;

/// Read size for GET: larger than dav-server's 16 KiB default to cut per-chunk
/// overhead on big files, small enough to keep many concurrent downloads cheap.
const READ_BUF_SIZE: usize = 256 * 1024;

/// One authenticated user, as the core hands them to [`WebDav::handle`].
pub struct DavUser {
    /// Name shown as lock owner (`DAV:principal`); also what dav-server checks lock
    /// tokens against. Use a stable user key.
    pub principal: String,
    /// The user's tree.
    pub port: Arc<dyn DavPort>,
    /// The user's own lock system (see [`crate::LockSpaces`]).
    pub locks: Box<dyn DavLockSystem>,
}

/// The WebDAV endpoint mounted at a path prefix (for example `/dav`). Cheap to share
/// (`Arc` or clone); holds no per-user state.
#[derive(Debug, Clone)]
pub struct WebDav {
    prefix: String,
}

impl WebDav {
    /// An endpoint under `prefix` (no trailing slash; `""` for the server root).
    pub fn new(prefix: impl Into<String>) -> Self {
        let mut prefix = prefix.into();
        while prefix.ends_with('/') {
            prefix.pop();
        }
        Self { prefix }
    }

    /// The prefix requests are expected under.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Handles one request of `user`. Never fails: errors are HTTP statuses. The
    /// request URI must start with the prefix (otherwise 502 from dav-server: route
    /// only the prefix here).
    pub async fn handle<B>(&self, req: Request<B>, user: DavUser) -> Response<DavBody>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Buf + Send + 'static,
        B::Error: StdError + Send + Sync + 'static,
    {
        let span = tracing::info_span!(
            "webdav",
            method = %req.method(),
            path = %req.uri().path(),
            user = %user.principal,
            status = tracing::field::Empty,
        );
        async move {
            let res = self.dispatch(req, user).await;
            let status = res.status();
            tracing::Span::current().record("status", status.as_u16());
            if status.is_server_error() {
                tracing::warn!("request failed");
            } else {
                tracing::debug!("request done");
            }
            res
        }
        .instrument(span)
        .await
    }

    async fn dispatch<B>(&self, mut req: Request<B>, user: DavUser) -> Response<DavBody>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Buf + Send + 'static,
        B::Error: StdError + Send + Sync + 'static,
    {
        let method = req.method().clone();
        if method.as_str() == "PROPFIND" {
            if depth_is_infinity(req.headers()) {
                return finite_depth_required();
            }
            if !req.headers().contains_key("depth") {
                req.headers_mut().insert("depth", HeaderValue::from_static("1"));
            }
            return self.propfind(req, user).await;
        }
        if method == Method::PUT && has_content_range(req.headers()) {
            return status_only(StatusCode::BAD_REQUEST);
        }
        let no_body = req.body().size_hint().exact() == Some(0);
        if let Some(plan) = get::Plan::of(&method, req.uri(), req.headers(), &self.prefix, no_body) {
            if let Some(res) = get::answer(&user.port, req.headers(), plan).await {
                return res;
            }
        }
        self.dav_server(req, user).await
    }

    /// PROPFIND: answered by `propfind` when it can, else by dav-server.
    async fn propfind<B>(&self, req: Request<B>, user: DavUser) -> Response<DavBody>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Buf + Send + 'static,
        B::Error: StdError + Send + Sync + 'static,
    {
        let (parts, body) = req.into_parts();
        let body = match read_body(body, MAX_XML_BODY).await {
            Ok(b) => b,
            Err(status) => return status_only(status),
        };
        let depth_one = match parts.headers.get("depth").map(HeaderValue::as_bytes) {
            Some(b"0") => Some(false),
            Some(b"1") => Some(true),
            _ => None,
        };
        let ua = parts
            .headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let path = DavPath::new(parts.uri.path()).and_then(|mut p| p.set_prefix(&self.prefix).map(|()| p));
        if let (Some(depth_one), Some(request), Ok(path)) = (depth_one, propfind::parse(&body, ua), path) {
            match propfind::answer(&user.port, user.locks.as_ref(), &self.prefix, path, depth_one, request).await {
                Ok(res) => return res,
                Err(propfind::Decline::ToDavServer) => {}
                Err(propfind::Decline::Port(e)) => {
                    tracing::debug!(error = %e, "PROPFIND failed");
                    return status_only(e.status());
                }
            }
        }
        let body = dav_server::body::Body::from(body);
        self.dav_server(Request::from_parts(parts, body), user).await
    }

    /// Everything else: dav-server over the port.
    pub(crate) async fn dav_server<B>(&self, req: Request<B>, user: DavUser) -> Response<DavBody>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Buf + Send + 'static,
        B::Error: StdError + Send + Sync + 'static,
    {
        let method = req.method().clone();
        let op = Op::of_request(&method, req.uri(), req.headers(), &self.prefix);
        let mut methods = DavMethodSet::all();
        methods.remove(DavMethod::Patch);
        let handler = DavHandler::builder()
            .filesystem(Box::new(PortFs::new(user.port, op)))
            .locksystem(user.locks)
            .strip_prefix(self.prefix.clone())
            .principal(user.principal)
            .methods(methods)
            .autoindex(true)
            .read_buf_size(READ_BUF_SIZE)
            .build_handler();
        let mut res = handler.handle(req).await.map(DavBody::from);

        if method == Method::OPTIONS {
            let h = res.headers_mut();
            h.insert("dav", HeaderValue::from_static("1, 2"));
            h.insert("ms-author-via", HeaderValue::from_static("DAV"));
        }
        res
    }
}

/// The whole request body, up to `max` bytes (413 beyond, 400 if it breaks off).
pub(crate) async fn read_body<B>(body: B, max: usize) -> Result<Bytes, StatusCode>
where
    B: http_body::Body,
    B::Data: Buf,
    B::Error: StdError,
{
    let mut body = std::pin::pin!(body);
    let mut buf = BytesMut::new();
    while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        let frame = frame.map_err(|e| {
            tracing::debug!(error = %e, "request body failed");
            StatusCode::BAD_REQUEST
        })?;
        if let Ok(mut data) = frame.into_data() {
            if buf.len() + data.remaining() > max {
                return Err(StatusCode::PAYLOAD_TOO_LARGE);
            }
            while data.has_remaining() {
                let chunk = data.chunk();
                let n = chunk.len();
                buf.extend_from_slice(chunk);
                data.advance(n);
            }
        }
    }
    Ok(buf.freeze())
}

fn status_only(status: StatusCode) -> Response<DavBody> {
    let mut res = Response::new(DavBody::empty());
    *res.status_mut() = status;
    res.headers_mut()
        .insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    res
}

/// 403 with the precondition element of RFC 4918 9.1.
fn finite_depth_required() -> Response<DavBody> {
    const BODY: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
        <D:error xmlns:D=\"DAV:\"><D:propfind-finite-depth/></D:error>\n";
    let mut res = Response::new(DavBody::from(BODY));
    *res.status_mut() = StatusCode::FORBIDDEN;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml; charset=utf-8"),
    );
    res
}
