//! GET and HEAD of a file, answered without dav-server.
//!
//! dav-server's GET asks the file system for the path's metadata, opens the file, asks the
//! open file for its metadata again and evaluates the `If` header through the lock
//! system, with a handler built around it. Here it is one path resolution, the
//! conditionals on the entry row and one read. Answers are the same as dav-server's:
//! `ETag` (quoted content SHA-1), `Last-Modified`, `Accept-Ranges: bytes`,
//! `Content-Type` from the extension; `If-Match`, `If-Unmodified-Since`,
//! `If-None-Match` and `If-Modified-Since` by RFC 7232's order (with dav-server's strong
//! ETag comparison), `If-Range`, and one byte range.
//!
//! Left to dav-server ([`Plan::of`] says so before any port call, or [`answer`]
//! declines after the lookup): a WebDAV `If` header (lock tokens), several ranges
//! (multipart), a request body, collections and missing paths (redirect, index page,
//! 404).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use dav_server::davpath::DavPath;
use futures_util::StreamExt;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};

use crate::body::DavBody;
use crate::meta::{etag, to_system_time};
use crate::port::{DavPort, Entry, ReadBody};
use crate::propfind::mime_type;

/// Files up to this size are read into one buffer before the answer goes out.
const WHOLE_READ: u64 = 256 * 1024;

/// A GET or HEAD this module takes on, checked from the headers alone.
pub(crate) struct Plan {
    head: bool,
    path: DavPath,
}

impl Plan {
    /// `None` when dav-server must answer (see the module doc).
    pub(crate) fn of(
        method: &Method,
        uri: &http::Uri,
        headers: &HeaderMap,
        prefix: &str,
        no_body: bool,
    ) -> Option<Plan> {
        let head = match *method {
            Method::GET => false,
            Method::HEAD => true,
            _ => return None,
        };
        if !no_body || headers.contains_key("if") {
            return None;
        }
        if let Some(r) = headers.get(header::RANGE) {
            if r.as_bytes().contains(&b',') {
                return None;
            }
        }
        // Decoded and normalised as dav-server does (`DavPath::from_uri` keeps the escapes).
        let mut path = DavPath::new(uri.path()).ok()?;
        path.set_prefix(prefix).ok()?;
        Some(Plan { head, path })
    }
}

/// Answers the request, or `None` if the path is not a file (dav-server's case).
pub(crate) async fn answer(port: &Arc<dyn DavPort>, headers: &HeaderMap, plan: Plan) -> Option<Response<DavBody>> {
    let mut names = Vec::new();
    for seg in plan.path.as_bytes().split(|&b| b == b'/').filter(|s| !s.is_empty()) {
        names.push(std::str::from_utf8(seg).ok()?);
    }
    if names.is_empty() {
        return None;
    }
    let (entry, content) = match port.resolve_with_content(port.root_id(), &names).await {
        Ok(Some((e, content))) if !e.is_dir() => (e, content),
        Ok(_) => return None,
        Err(e) => return Some(status_only(e.status())),
    };
    Some(respond(port, headers, plan.head, entry, content).await)
}

/// `content`: the whole content, when the port read it with the entry.
async fn respond(
    port: &Arc<dyn DavPort>,
    headers: &HeaderMap,
    head: bool,
    entry: Entry,
    content: Option<Bytes>,
) -> Response<DavBody> {
    let len = u64::try_from(entry.size).unwrap_or(0);
    let tag = format!("\"{}\"", etag(&entry));
    let modified = to_system_time(entry.mtime);

    let mut res = Response::new(DavBody::empty());
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(modified)) {
        h.insert(header::LAST_MODIFIED, v);
    }
    if let Ok(v) = HeaderValue::from_str(&tag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime_type(&entry.name)));

    if let Some(status) = preconditions(headers, &tag, modified) {
        *res.status_mut() = status;
        // dav-server's lengths: the whole file for 304 and for HEAD, nothing for 412.
        let n = if head || status == StatusCode::NOT_MODIFIED {
            len
        } else {
            0
        };
        res.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        return res;
    }

    let mut start = 0;
    let mut count = len;
    if if_range_holds(headers, &tag, modified) {
        match range(headers, len) {
            Some(Ok((s, c))) => {
                start = s;
                count = c;
                *res.status_mut() = StatusCode::PARTIAL_CONTENT;
                let cr = format!("bytes {}-{}/{}", s, s + c - 1, len);
                if let Ok(v) = HeaderValue::from_str(&cr) {
                    res.headers_mut().insert(header::CONTENT_RANGE, v);
                }
            }
            Some(Err(())) => {
                *res.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    res.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                // The whole file's length for HEAD, as dav-server says.
                let n = if head { len } else { 0 };
                res.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(n));
                return res;
            }
            None => {}
        }
    }
    res.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    if head {
        return res;
    }
    if count == 0 {
        *res.body_mut() = DavBody::full(Bytes::new());
        return res;
    }
    if let Some(all) = content.filter(|c| c.len() as u64 == len) {
        port.sent_with_entry(count);
        *res.body_mut() = DavBody::full(all.slice(start as usize..(start + count) as usize));
        return res;
    }
    let mut stream = match port.read(&entry, start, count).await {
        Ok(s) => s,
        Err(e) => return status_only(e.status()),
    };
    if count <= WHOLE_READ {
        // Small content: read it all, so that a failure is still a clean 500 and the
        // body goes out as one buffer.
        match read_all(&mut stream, count).await {
            Ok(b) => *res.body_mut() = DavBody::full(b),
            Err(status) => return status_only(status),
        }
        return res;
    }
    let id = entry.id;
    let body = stream.map(move |r| {
        r.map_err(|e| {
            tracing::warn!(id, error = %e, "read failed mid-answer");
            std::io::Error::other(e.to_string())
        })
    });
    *res.body_mut() = DavBody::stream(Box::pin(body));
    res
}

async fn read_all(stream: &mut ReadBody, count: u64) -> Result<Bytes, StatusCode> {
    let first = match stream.next().await {
        Some(Ok(b)) => b,
        Some(Err(e)) => return Err(e.status()),
        None => Bytes::new(),
    };
    if first.len() as u64 == count {
        return Ok(first);
    }
    let mut buf = BytesMut::with_capacity(count as usize);
    buf.extend_from_slice(&first);
    while (buf.len() as u64) < count {
        match stream.next().await {
            Some(Ok(b)) => buf.extend_from_slice(&b),
            Some(Err(e)) => return Err(e.status()),
            None => break,
        }
    }
    if buf.len() as u64 != count {
        // Shorter (or longer) than the entry says: no made-up bytes under a valid ETag.
        tracing::error!(
            expected = count,
            got = buf.len(),
            "content length differs from the entry"
        );
        return Err(StatusCode::INTERNAL_SERVER_ERROR);
    }
    Ok(buf.freeze())
}

fn status_only(status: StatusCode) -> Response<DavBody> {
    let mut res = Response::new(DavBody::empty());
    *res.status_mut() = status;
    res.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    res
}

/// Whole seconds: HTTP dates have no finer resolution.
fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn date_header(headers: &HeaderMap, name: header::HeaderName) -> Option<SystemTime> {
    let v = headers.get(name)?.to_str().ok()?;
    httpdate::parse_http_date(v.trim()).ok()
}

/// Whether an `If-Match` / `If-None-Match` list matches `tag` (a quoted strong ETag).
/// `*` matches any existing entity; weak tags never match (strong comparison, as
/// dav-server compares).
fn list_matches(value: &HeaderValue, tag: &str) -> bool {
    let Ok(s) = value.to_str() else { return false };
    if s.trim() == "*" {
        return true;
    }
    s.split(',').map(str::trim).any(|t| t == tag)
}

/// RFC 7232 section 6, as dav-server's `http_if_match`: the status that ends the
/// request, if any.
fn preconditions(headers: &HeaderMap, tag: &str, modified: SystemTime) -> Option<StatusCode> {
    if let Some(v) = headers.get(header::IF_MATCH) {
        if !list_matches(v, tag) {
            return Some(StatusCode::PRECONDITION_FAILED);
        }
    } else if let Some(t) = date_header(headers, header::IF_UNMODIFIED_SINCE) {
        if secs(modified) > secs(t) {
            return Some(StatusCode::PRECONDITION_FAILED);
        }
    }
    if let Some(v) = headers.get(header::IF_NONE_MATCH) {
        if list_matches(v, tag) {
            return Some(StatusCode::NOT_MODIFIED);
        }
    } else if let Some(t) = date_header(headers, header::IF_MODIFIED_SINCE) {
        if secs(modified) <= secs(t) {
            return Some(StatusCode::NOT_MODIFIED);
        }
    }
    None
}

/// Whether a `Range` applies: no `If-Range`, or one that matches the current entity.
fn if_range_holds(headers: &HeaderMap, tag: &str, modified: SystemTime) -> bool {
    let Some(v) = headers.get(header::IF_RANGE) else {
        return true;
    };
    let Ok(s) = v.to_str() else { return false };
    let s = s.trim();
    if s.starts_with('"') || s.starts_with("W/") {
        return s == tag;
    }
    match httpdate::parse_http_date(s) {
        Ok(t) => secs(t) == secs(modified),
        Err(_) => false,
    }
}

/// The one range of a `Range` header, as dav-server reads it: `None` when there is no
/// usable range (the whole file is sent), `Err` for 416, else (start, count).
fn range(headers: &HeaderMap, len: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = headers
        .get(header::RANGE)?
        .to_str()
        .ok()?
        .strip_prefix("bytes=")?
        .trim();
    let (a, b) = spec.split_once('-')?;
    let bound = |s: &str| -> Option<Option<u64>> {
        if s.is_empty() {
            Some(None)
        } else {
            s.parse().ok().map(Some)
        }
    };
    let (start, end) = (bound(a)?, bound(b)?);
    let (start, count) = match (start, end) {
        (Some(s), Some(e)) if e >= s => (s, e - s + 1),
        (Some(s), None) if s <= len => (s, len - s),
        // A suffix longer than the file is dropped (the whole file), as headers does.
        (None, Some(n)) if n > len => return None,
        (None, Some(n)) => (len - n, n),
        _ => return Some(Err(())),
    };
    if start >= len {
        return Some(Err(()));
    }
    Some(Ok((start, count.min(len - start))))
}

#[cfg(all(test, feature = "memory"))]
mod tests {
    //! The same GET/HEAD requests through this module and through dav-server: same
    //! status, validators, lengths, ranges and bytes.

    use std::sync::Arc;

    use http::Request;

    use crate::body::DavBody;
    use crate::handler::{read_body, DavUser, WebDav};
    use crate::locks::{LockSpaces, MemLockSpaces};
    use crate::memory::MemoryPort;
    use crate::port::DavPort;

    /// A request whose body is known to be empty, as hyper gives a GET without one
    /// (otherwise the handler leaves it to dav-server).
    fn request(method: &str, headers: &[(&str, String)]) -> Request<DavBody> {
        let mut b = Request::builder().method(method).uri("/dav/d/r%20x.html");
        for (k, v) in headers {
            b = b.header(*k, v.as_str());
        }
        let req = b.body(DavBody::full(bytes::Bytes::new())).expect("valid request");
        let no_body = http_body::Body::size_hint(req.body()).exact() == Some(0);
        assert!(super::Plan::of(req.method(), req.uri(), req.headers(), "/dav", no_body).is_some());
        req
    }

    #[tokio::test]
    async fn answers_as_dav_server_does() {
        let port = Arc::new(MemoryPort::new());
        let dir = port.insert_dir(port.root_id(), "d").expect("mkdir");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let e = port.insert_file(dir.id, "r x.html", &data).expect("file");
        let tag = format!("\"{}\"", e.sha1.clone().expect("sha1"));
        let locks = MemLockSpaces::new();
        let user = || DavUser {
            principal: "alice".into(),
            port: port.clone() as Arc<dyn DavPort>,
            locks: locks.for_user("alice"),
        };
        let webdav = WebDav::new("/dav");
        let probe = webdav.handle(request("HEAD", &[]), user()).await;
        let lm = probe.headers()["last-modified"].to_str().expect("date").to_owned();
        let old = "Mon, 01 Jan 2001 00:00:00 GMT".to_owned();
        let cases: Vec<Vec<(&str, String)>> = vec![
            vec![],
            vec![("range", "bytes=10-19".into())],
            vec![("range", "bytes=299990-".into())],
            vec![("range", "bytes=-5".into())],
            vec![("range", "bytes=-400000".into())],
            vec![("range", "bytes=300000-".into())],
            vec![("range", "bytes=20-10".into())],
            vec![("range", "bytes=0-999999".into())],
            vec![("range", "items=0-1".into())],
            vec![("if-none-match", tag.clone())],
            vec![("if-none-match", "\"other\"".into())],
            vec![("if-none-match", "*".into())],
            vec![("if-match", tag.clone())],
            vec![("if-match", "\"other\"".into())],
            vec![("if-match", format!("W/{tag}"))],
            vec![("if-modified-since", lm.clone())],
            vec![("if-modified-since", old.clone())],
            vec![("if-unmodified-since", old.clone())],
            vec![("if-unmodified-since", lm.clone())],
            vec![("range", "bytes=0-0".into()), ("if-range", tag.clone())],
            vec![("range", "bytes=0-0".into()), ("if-range", "\"old\"".into())],
            vec![("range", "bytes=0-0".into()), ("if-range", lm.clone())],
            vec![("range", "bytes=0-0".into()), ("if-range", old.clone())],
        ];
        for method in ["GET", "HEAD"] {
            for h in &cases {
                let ours = webdav.handle(request(method, h), user()).await;
                let theirs = webdav.dav_server(request(method, h), user()).await;
                let what = format!("{method} {h:?}");
                assert_eq!(ours.status(), theirs.status(), "{what}");
                for name in [
                    "etag",
                    "last-modified",
                    "content-length",
                    "content-range",
                    "content-type",
                    "accept-ranges",
                ] {
                    assert_eq!(ours.headers().get(name), theirs.headers().get(name), "{what}: {name}");
                }
                let a = read_body(ours.into_body(), usize::MAX).await.expect("body");
                let b = read_body(theirs.into_body(), usize::MAX).await.expect("body");
                assert!(a == b, "{what}: bodies differ ({} vs {} bytes)", a.len(), b.len());
            }
        }
    }
}
