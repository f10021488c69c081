//! What the current request is about, for the file-system adapter.
//!
//! dav-server calls the file system one resource at a time: DELETE of a collection
//! walks it and removes leaf after leaf, COPY recreates it entry by entry, PROPFIND
//! asks for each child's dead properties separately. The port can do each of those in
//! one call (recursive delete, recursive O(1)-per-file copy, one batched property
//! query per listing page). Since the adapter is built per request, it is told the
//! method and paths up front and takes the short paths; each rule is documented where
//! `fs.rs` applies it.

use dav_server::davpath::DavPath;
use http::{header, HeaderMap, Method};

/// A request path without the prefix and without a trailing slash ("" is the root).
pub(crate) type PathKey = Vec<u8>;

/// The key of a path as dav-server gives it to the file system.
pub(crate) fn path_key(path: &DavPath) -> PathKey {
    trim(path.as_bytes()).to_vec()
}

fn trim(p: &[u8]) -> &[u8] {
    let mut p = p;
    while let Some(rest) = p.strip_suffix(b"/") {
        p = rest;
    }
    p
}

/// Whether `path` is `base` or below it.
pub(crate) fn is_under(path: &[u8], base: &[u8]) -> bool {
    path.starts_with(base) && (path.len() == base.len() || path[base.len()] == b'/')
}

/// The method-level facts the adapter uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// PROPFIND: prefetch dead properties per listing page.
    Propfind,
    /// LOCK: an unmapped URL becomes an empty file at open.
    Lock,
    /// DELETE: collections go in one recursive port call.
    Delete,
    /// COPY or MOVE: the destination is cleared recursively when it must go; a COPY
    /// of a collection with infinite depth is one port call.
    CopyMove {
        is_copy: bool,
        /// Source, as a key.
        src: PathKey,
        /// Destination, if the header parsed (otherwise dav-server rejects the request
        /// or the adapter falls back to the entry-by-entry walk).
        dst: Option<PathKey>,
        /// `Depth: infinity` (the default for COPY and the only value for MOVE).
        deep: bool,
        /// `Overwrite: T` (the default).
        overwrite: bool,
    },
    /// Anything else: no shortcut.
    Other,
}

/// Parses a URL path the way dav-server does (percent-decoding, dot segments) and
/// strips the prefix.
fn key_of_url_path(url_path: &str, prefix: &str) -> Option<PathKey> {
    let mut p = DavPath::new(url_path).ok()?;
    p.set_prefix(prefix).ok()?;
    Some(path_key(&p))
}

impl Op {
    /// Classifies a request. Never fails: anything unclear is [`Op::Other`] or has no
    /// destination, which only disables shortcuts.
    pub(crate) fn of_request(method: &Method, uri: &http::Uri, headers: &HeaderMap, prefix: &str) -> Op {
        match method.as_str() {
            "PROPFIND" => Op::Propfind,
            "LOCK" => Op::Lock,
            "DELETE" => Op::Delete,
            "COPY" | "MOVE" => {
                let Some(src) = key_of_url_path(uri.path(), prefix) else {
                    return Op::Other;
                };
                let dst = headers
                    .get("destination")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|s| {
                        if s.starts_with('/') {
                            Some(s.to_owned())
                        } else {
                            s.parse::<http::Uri>().ok().map(|u| u.path().to_owned())
                        }
                    })
                    .and_then(|p| key_of_url_path(&p, prefix));
                let deep = !headers
                    .get("depth")
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"0"));
                let overwrite = !headers
                    .get("overwrite")
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"F"));
                Op::CopyMove {
                    is_copy: method.as_str() == "COPY",
                    src,
                    dst,
                    deep,
                    overwrite,
                }
            }
            _ => Op::Other,
        }
    }
}

/// Whether the `Depth` header says infinity.
pub(crate) fn depth_is_infinity(headers: &HeaderMap) -> bool {
    headers
        .get("depth")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"infinity"))
}

/// Whether a PUT carries `Content-Range` (a partial PUT, which we refuse).
pub(crate) fn has_content_range(headers: &HeaderMap) -> bool {
    headers.contains_key(header::CONTENT_RANGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_ancestry() {
        assert_eq!(
            key_of_url_path("/dav/a%20b/c/", "/dav").as_deref(),
            Some(&b"/a b/c"[..])
        );
        assert_eq!(key_of_url_path("/dav/", "/dav").as_deref(), Some(&b""[..]));
        assert_eq!(key_of_url_path("/dav", "/dav").as_deref(), Some(&b""[..]));
        assert_eq!(key_of_url_path("/other/x", "/dav"), None);
        assert!(is_under(b"/a/b", b"/a"));
        assert!(is_under(b"/a", b"/a"));
        assert!(!is_under(b"/ab", b"/a"));
        assert!(is_under(b"/x", b""));
    }

    #[test]
    fn copy_destination_absolute_url() {
        let mut h = HeaderMap::new();
        h.insert("destination", "http://h:1/dav/x%2Fy/z".parse().unwrap());
        h.insert("depth", "0".parse().unwrap());
        let uri: http::Uri = "/dav/src/".parse().unwrap();
        match Op::of_request(&Method::from_bytes(b"COPY").unwrap(), &uri, &h, "/dav") {
            Op::CopyMove {
                is_copy,
                src,
                dst,
                deep,
                overwrite,
            } => {
                assert!(is_copy && !deep && overwrite);
                assert_eq!(src, b"/src");
                // %2F decodes to '/', which dav-server refuses inside a segment.
                assert_eq!(dst, None);
            }
            op => panic!("{op:?}"),
        }
    }
}
