//! The web page at `/`: plain HTML, JavaScript and CSS from `web/`, compiled into the
//! binary, no build step. The page talks to the JSON API only (see `web/app.js`).
//!
//! Every response here carries a strict Content-Security-Policy (scripts only from this
//! origin, no inline script or style, no framing) and the usual hardening headers. Assets
//! are linked from the page as `/static/NAME?v=VERSION` (a hash of their content) and
//! cached for a year when the version matches; the page itself is revalidated (`no-cache`
//! with an ETag) because it carries settings of this server (the upload chunk size).

use std::sync::LazyLock;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha1::{Digest, Sha1};

use super::AppState;

/// The page's policy: everything from this origin only, no inline code, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const INDEX_HTML: &str = include_str!("../../web/index.html");

/// One embedded file.
struct Asset {
    body: &'static [u8],
    content_type: &'static str,
    /// The first 12 hex digits of the body's SHA-1: the `v` of its URL.
    version: String,
    etag: String,
}

impl Asset {
    fn new(body: &'static [u8], content_type: &'static str) -> Asset {
        let digest = hex::encode(Sha1::digest(body));
        Asset {
            body,
            content_type,
            version: digest[..12].to_string(),
            etag: format!("\"{digest}\""),
        }
    }
}

static APP_JS: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(include_bytes!("../../web/app.js"), "text/javascript; charset=utf-8"));
static SHA1_JS: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(include_bytes!("../../web/sha1.js"), "text/javascript; charset=utf-8"));
static STYLE_CSS: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(include_bytes!("../../web/style.css"), "text/css; charset=utf-8"));
static FAVICON_SVG: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(include_bytes!("../../web/favicon.svg"), "image/svg+xml"));

/// The page with the asset versions filled in; the server settings are added per request.
static INDEX_TEMPLATE: LazyLock<String> = LazyLock::new(|| {
    INDEX_HTML
        .replace("{{APP_V}}", &APP_JS.version)
        .replace("{{SHA1_V}}", &SHA1_JS.version)
        .replace("{{STYLE_V}}", &STYLE_CSS.version)
        .replace("{{FAVICON_V}}", &FAVICON_SVG.version)
});

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/static/app.js", get(|h, q| serve(&APP_JS, h, q)))
        .route("/static/sha1.js", get(|h, q| serve(&SHA1_JS, h, q)))
        .route("/static/style.css", get(|h, q| serve(&STYLE_CSS, h, q)))
        .route("/static/favicon.svg", get(|h, q| serve(&FAVICON_SVG, h, q)))
}

async fn index(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let html = INDEX_TEMPLATE
        .replace("{{CHUNK_SIZE}}", &st.config.sessions.chunk_size.to_string())
        .replace("{{MAX_UPLOAD}}", &st.drive.max_upload().unwrap_or(0).to_string());
    let etag = format!("\"{}\"", hex::encode(Sha1::digest(html.as_bytes())));
    respond(
        &headers,
        html.into_bytes(),
        "text/html; charset=utf-8",
        &etag,
        "no-cache",
    )
}

async fn serve(asset: &'static Asset, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    let versioned = query
        .as_deref()
        .is_some_and(|q| q.split('&').any(|kv| kv == format!("v={}", asset.version)));
    // A stale or missing version gets the current body, but must not be kept for long.
    let cache = if versioned {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    respond(&headers, asset.body.to_vec(), asset.content_type, &asset.etag, cache)
}

fn respond(req: &HeaderMap, body: Vec<u8>, content_type: &'static str, etag: &str, cache: &'static str) -> Response {
    let not_modified = req
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut resp = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = body.into_response();
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        r
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_no_inline_script_and_every_placeholder_is_filled() {
        let page = INDEX_TEMPLATE
            .replace("{{CHUNK_SIZE}}", "1")
            .replace("{{MAX_UPLOAD}}", "1");
        assert!(!page.contains("{{"), "unfilled placeholder in web/index.html");
        for tag in page.split("<script").skip(1) {
            let open = &tag[..tag.find('>').expect("closed tag")];
            assert!(
                open.contains(" src=\"/static/"),
                "inline script in web/index.html: <script{open}>"
            );
        }
        assert!(!page.contains(" style="), "inline style attribute in web/index.html");
        for (i, _) in page.match_indices(" on") {
            let rest = &page[i + 3..];
            let word = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            assert!(
                !rest[word..].starts_with('='),
                "inline event handler in web/index.html: {}",
                &page[i..i + 3 + word]
            );
        }
    }

    #[test]
    fn versions_are_content_hashes() {
        assert_eq!(APP_JS.version.len(), 12);
        assert_ne!(APP_JS.version, STYLE_CSS.version);
        assert!(INDEX_TEMPLATE.contains(&format!("/static/app.js?v={}", APP_JS.version)));
    }
}
