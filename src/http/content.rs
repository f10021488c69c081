//! Serving file content: conditional requests (RFC 9110 section 13), single byte ranges
//! (RFC 9110 section 14), ETag from the content SHA-1, and `Content-Disposition` with an
//! RFC 5987 `filename*`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::error::ApiError;
use crate::drive::Drive;
use crate::meta::{Content, Entry};

/// What to send for a request, given its headers and the representation's validators.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    Full,
    /// Inclusive byte range.
    Partial(u64, u64),
    NotModified,
    PreconditionFailed,
    Unsatisfiable,
}

pub fn etag(sha1: &str) -> String {
    format!("\"{sha1}\"")
}

/// Decides between 200, 206, 304, 412 and 416.
pub fn plan(headers: &HeaderMap, method: &Method, etag: &str, modified: SystemTime, size: u64) -> Plan {
    let get_or_head = method == Method::GET || method == Method::HEAD;
    let modified_s = secs(modified);
    if let Some(v) = text(headers, header::IF_MATCH) {
        if !etag_list_matches(v, etag) {
            return Plan::PreconditionFailed;
        }
    } else if let Some(t) = date(headers, header::IF_UNMODIFIED_SINCE) {
        if modified_s > secs(t) {
            return Plan::PreconditionFailed;
        }
    }
    if let Some(v) = text(headers, header::IF_NONE_MATCH) {
        if etag_list_matches(v, etag) {
            return if get_or_head {
                Plan::NotModified
            } else {
                Plan::PreconditionFailed
            };
        }
    } else if let Some(t) = date(headers, header::IF_MODIFIED_SINCE) {
        if get_or_head && modified_s <= secs(t) {
            return Plan::NotModified;
        }
    }
    if method != Method::GET {
        return Plan::Full;
    }
    let Some(range) = text(headers, header::RANGE) else {
        return Plan::Full;
    };
    if let Some(v) = text(headers, header::IF_RANGE) {
        let fresh = if v.starts_with('"') {
            v == etag
        } else {
            httpdate::parse_http_date(v)
                .map(|t| secs(t) == modified_s)
                .unwrap_or(false)
        };
        if !fresh {
            return Plan::Full;
        }
    }
    parse_range(range, size)
}

/// One `bytes=` range; several ranges are answered with the whole representation, which
/// RFC 9110 allows and every client handles.
pub fn parse_range(v: &str, size: u64) -> Plan {
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return Plan::Full;
    };
    if spec.contains(',') {
        return Plan::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Plan::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let parsed = match (a.is_empty(), b.is_empty()) {
        (true, false) => b.parse::<u64>().ok().map(|n| {
            if n == 0 {
                None
            } else {
                Some((size.saturating_sub(n), size.saturating_sub(1)))
            }
        }),
        (false, _) => a.parse::<u64>().ok().and_then(|start| {
            let end = if b.is_empty() {
                Some(u64::MAX)
            } else {
                b.parse::<u64>().ok()
            }?;
            (end >= start).then(|| Some((start, end.min(size.saturating_sub(1)))))
        }),
        (true, true) => None,
    };
    match parsed {
        None => Plan::Full, // syntactically invalid: ignore the header
        Some(None) => Plan::Unsatisfiable,
        Some(Some((start, _))) if start >= size => Plan::Unsatisfiable,
        Some(Some((start, end))) => Plan::Partial(start, end),
    }
}

fn etag_list_matches(list: &str, etag: &str) -> bool {
    list.trim() == "*" || list.split(',').any(|t| t.trim().trim_start_matches("W/") == etag)
}

fn text(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn date(h: &HeaderMap, name: header::HeaderName) -> Option<SystemTime> {
    text(h, name).and_then(|v| httpdate::parse_http_date(v).ok())
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub fn mtime(entry: &Entry) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(entry.mtime.max(0) as u64)
}

/// Characters left as they are in an RFC 5987 value (its `attr-char` set).
const ATTR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// `attachment; filename="ascii fallback"; filename*=UTF-8''percent-encoded`.
pub fn disposition(name: &str) -> String {
    let fallback: String = name
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "attachment; filename=\"{fallback}\"; filename*=UTF-8''{}",
        utf8_percent_encode(name, ATTR)
    )
}

/// How the body is labelled.
pub struct Presentation {
    pub content_type: String,
    pub attachment: bool,
}

/// A full response for a file entry: validators, range, streamed body.
pub async fn serve(
    drive: &Drive,
    method: &Method,
    headers: &HeaderMap,
    entry: &Entry,
    content: &Content,
    how: Presentation,
) -> Result<Response, ApiError> {
    let size = content.size as u64;
    let tag = etag(&content.sha1);
    let modified = mtime(entry);
    let plan = plan(headers, method, &tag, modified, size);
    let mut h = HeaderMap::new();
    h.insert(header::ETAG, hv(&tag));
    h.insert(header::LAST_MODIFIED, hv(&httpdate::fmt_http_date(modified)));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let (status, start, len) = match plan {
        Plan::NotModified => return Ok((StatusCode::NOT_MODIFIED, h).into_response()),
        Plan::PreconditionFailed => {
            return Err(ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                "precondition failed",
            ))
        }
        Plan::Unsatisfiable => {
            h.insert(header::CONTENT_RANGE, hv(&format!("bytes */{size}")));
            let err = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                "range not satisfiable",
            );
            let mut resp = err.into_response();
            resp.headers_mut().extend(h);
            return Ok(resp);
        }
        Plan::Full => (StatusCode::OK, 0, size),
        Plan::Partial(a, b) => {
            h.insert(header::CONTENT_RANGE, hv(&format!("bytes {a}-{b}/{size}")));
            (StatusCode::PARTIAL_CONTENT, a, b - a + 1)
        }
    };
    h.insert(header::CONTENT_TYPE, hv(&how.content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if how.attachment {
        h.insert(header::CONTENT_DISPOSITION, hv(&disposition(&entry.name)));
    }
    let body = if method == Method::HEAD || len == 0 {
        Body::empty()
    } else {
        Body::from_stream(drive.read(content, start, len).await?)
    };
    Ok((status, h, body).into_response())
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Plan::Partial(0, 9));
        assert_eq!(parse_range("bytes=90-", 100), Plan::Partial(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), Plan::Partial(90, 99));
        assert_eq!(parse_range("bytes=-200", 100), Plan::Partial(0, 99));
        assert_eq!(parse_range("bytes=50-1000", 100), Plan::Partial(50, 99));
        assert_eq!(parse_range("bytes=100-", 100), Plan::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Plan::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-0", 0), Plan::Unsatisfiable);
        assert_eq!(parse_range("bytes=5-2", 100), Plan::Full);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Plan::Full);
        assert_eq!(parse_range("items=0-1", 100), Plan::Full);
        assert_eq!(parse_range("bytes=x-1", 100), Plan::Full);
    }

    #[test]
    fn conditionals() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let later = httpdate::fmt_http_date(t + Duration::from_secs(10));
        let earlier = httpdate::fmt_http_date(t - Duration::from_secs(10));
        let g = Method::GET;
        assert_eq!(
            plan(&h(&[("if-none-match", "\"abc\"")]), &g, "\"abc\"", t, 10),
            Plan::NotModified
        );
        assert_eq!(
            plan(&h(&[("if-none-match", "\"x\", W/\"abc\"")]), &g, "\"abc\"", t, 10),
            Plan::NotModified
        );
        assert_eq!(
            plan(&h(&[("if-none-match", "\"x\"")]), &g, "\"abc\"", t, 10),
            Plan::Full
        );
        assert_eq!(
            plan(&h(&[("if-match", "\"x\"")]), &g, "\"abc\"", t, 10),
            Plan::PreconditionFailed
        );
        assert_eq!(
            plan(&h(&[("if-modified-since", &later)]), &g, "\"abc\"", t, 10),
            Plan::NotModified
        );
        assert_eq!(
            plan(&h(&[("if-modified-since", &earlier)]), &g, "\"abc\"", t, 10),
            Plan::Full
        );
        assert_eq!(
            plan(&h(&[("if-unmodified-since", &earlier)]), &g, "\"abc\"", t, 10),
            Plan::PreconditionFailed
        );
        let r = [("range", "bytes=0-1"), ("if-range", "\"old\"")];
        assert_eq!(plan(&h(&r), &g, "\"abc\"", t, 10), Plan::Full);
        let r = [("range", "bytes=0-1"), ("if-range", "\"abc\"")];
        assert_eq!(plan(&h(&r), &g, "\"abc\"", t, 10), Plan::Partial(0, 1));
    }

    #[test]
    fn dispositions() {
        assert_eq!(
            disposition("a b.txt"),
            "attachment; filename=\"a b.txt\"; filename*=UTF-8''a%20b.txt"
        );
        let d = disposition("résumé \"x\".pdf");
        assert!(d.starts_with("attachment; filename=\"r_sum_ _x_.pdf\""), "{d}");
        assert!(d.ends_with("filename*=UTF-8''r%C3%A9sum%C3%A9%20%22x%22.pdf"), "{d}");
    }
}
