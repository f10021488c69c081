//! The web page at `/`: what the server sends (status, types, caching, security headers),
//! and the browser test `tests/web/run.sh` (headless chromium against the real binary).

mod common;

use common::{Backend, TestServer};

const ASSETS: &[(&str, &str)] = &[
    ("/static/app.js", "text/javascript; charset=utf-8"),
    ("/static/sha1.js", "text/javascript; charset=utf-8"),
    ("/static/style.css", "text/css; charset=utf-8"),
    ("/static/favicon.svg", "image/svg+xml"),
];

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .unwrap_or_else(|| panic!("{} has no {name} header", r.url()))
        .to_str()
        .unwrap()
}

fn assert_hardened(r: &reqwest::Response) {
    let csp = header(r, "content-security-policy");
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(part), "{}: CSP `{csp}` lacks `{part}`", r.url());
    }
    assert!(!csp.contains("unsafe-"), "{}: CSP `{csp}` allows unsafe code", r.url());
    assert_eq!(header(r, "x-content-type-options"), "nosniff");
    assert_eq!(header(r, "referrer-policy"), "no-referrer");
    assert_eq!(header(r, "x-frame-options"), "DENY");
}

/// The `src`/`href` values of the page that point at `/static/`.
fn static_links(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for (i, _) in html.match_indices(attr) {
            let rest = &html[i + attr.len()..];
            let v = &rest[..rest.find('"').unwrap()];
            if v.starts_with("/static/") {
                out.push(v.to_string());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_and_assets_are_served_with_their_types_and_security_headers() {
    let s = TestServer::start_with(Backend::Sqlite, |c| c.sessions.chunk_size = 65536)
        .await
        .unwrap();

    let r = s.http.get(s.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&r, "cache-control"), "no-cache");
    assert_hardened(&r);
    let etag = header(&r, "etag").to_string();
    let html = r.text().await.unwrap();
    assert!(
        html.contains(r#"<meta name="filestore-chunk-size" content="65536">"#),
        "{html}"
    );
    assert!(!html.contains("{{"), "unfilled placeholder");
    // Scripts only from files: no inline code for the CSP to allow.
    assert_eq!(
        html.matches("<script").count(),
        html.matches("<script src=\"/static/").count()
    );

    // Revalidation.
    let r = s
        .http
        .get(s.url("/"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert_hardened(&r);

    let links = static_links(&html);
    for (path, ty) in ASSETS {
        let link = links
            .iter()
            .find(|l| l.split('?').next() == Some(*path))
            .unwrap_or_else(|| panic!("the page does not link {path}"));
        assert!(link.contains("?v="), "{link} is not versioned");
        let r = s.http.get(s.url(link)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{link}");
        assert_eq!(header(&r, "content-type"), *ty, "{link}");
        assert_eq!(
            header(&r, "cache-control"),
            "public, max-age=31536000, immutable",
            "{link}"
        );
        assert_hardened(&r);
        let etag = header(&r, "etag").to_string();
        let body = r.bytes().await.unwrap();
        let file = std::fs::read(format!(
            "{}/web/{}",
            env!("CARGO_MANIFEST_DIR"),
            &path["/static/".len()..]
        ))
        .unwrap();
        assert_eq!(body.as_ref(), file.as_slice(), "{path} is not web/ as built");

        // Without the current version: the same bytes, but not cached for long.
        let r = s.http.get(s.url(&format!("{path}?v=old"))).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "cache-control"), "no-cache");
        let r = s
            .http
            .get(s.url(path))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 304);
    }

    let r = s.http.head(s.url("/static/app.js")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "text/javascript; charset=utf-8");

    let r = s.http.get(s.url("/static/nothing.js")).send().await.unwrap();
    assert_eq!(r.status(), 404);

    // The seed's GET pages lead here.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for p in ["/user/signin", "/user/signup"] {
        let r = no_redirects.get(s.url(p)).send().await.unwrap();
        assert_eq!(r.status(), 302, "{p}");
        assert_eq!(header(&r, "location"), "/", "{p}");
    }
    s.stop().await;
}

/// The browser test: sign up, upload (single PUT, chunked, resumed after a reload, instant
/// with and without proof), list, folders, move, rename, download and compare bytes, the
/// dedup savings, a file name made of markup, delete; saves tests/web/screenshot.png.
/// Needs chromium and node (run.sh installs them with apt and playwright-core with npm);
/// fails, never skips, when they cannot run.
#[test]
fn browser_test_of_the_web_page() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/web/run.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .env("FILESTORE_BIN", env!("CARGO_BIN_EXE_filestore"))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run tests/web/run.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "tests/web/run.sh failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains(" passed, 0 failed"),
        "no summary line from the browser test"
    );
}
