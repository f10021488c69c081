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

use std::error::Error as StdError;
use std::sync::Arc;

use bytes::Buf;
use dav_server::body::Body;
use dav_server::ls::DavLockSystem;
use dav_server::{DavHandler, DavMethod, DavMethodSet};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use tracing::Instrument;

use crate::fs::PortFs;
use crate::hint::{depth_is_infinity, has_content_range, Op};
use crate::port::DavPort;

/// Response body: streams (GET content, PROPFIND multistatus) without buffering.
/// Implements `http_body::Body<Data = Bytes, Error = io::Error>`.
pub type DavBody = Body;

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
        }
        if method == Method::PUT && has_content_range(req.headers()) {
            return status_only(StatusCode::BAD_REQUEST);
        }

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
        let mut res = handler.handle(req).await;

        if method == Method::OPTIONS {
            let h = res.headers_mut();
            h.insert("dav", HeaderValue::from_static("1, 2"));
            h.insert("ms-author-via", HeaderValue::from_static("DAV"));
        }
        res
    }
}

fn status_only(status: StatusCode) -> Response<DavBody> {
    let mut res = Response::new(Body::empty());
    *res.status_mut() = status;
    res.headers_mut()
        .insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    res
}

/// 403 with the precondition element of RFC 4918 9.1.
fn finite_depth_required() -> Response<DavBody> {
    const BODY: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
        <D:error xmlns:D=\"DAV:\"><D:propfind-finite-depth/></D:error>\n";
    let mut res = Response::new(Body::from(BODY));
    *res.status_mut() = StatusCode::FORBIDDEN;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml; charset=utf-8"),
    );
    res
}
