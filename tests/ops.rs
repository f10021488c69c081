//! Operations endpoints: `/healthz`, `/readyz` naming the failing dependency, `/metrics`
//! in the Prometheus text format, and request ids.

mod common;

use common::{Backend, TestServer};
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics() {
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    let r = s.http.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = s.http.get(s.url("/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["ready"], true);
    assert_eq!(v["checks"]["database"], "ok");

    // Traffic to count: an upload, the same bytes again (a dedup hit), a download, a 404.
    let t = s.user("alice").await;
    for name in ["a", "b"] {
        let r = s
            .http
            .put(s.url(&format!("/api/v1/files/{name}")))
            .bearer_auth(&t)
            .body(vec![7u8; 10_000])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let r = s
        .http
        .get(s.url("/api/v1/files/a"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().len(), 10_000);
    let r = s
        .http
        .get(s.url("/api/v1/stat/missing"))
        .bearer_auth(&t)
        .header("x-request-id", "probe-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        r.headers()["x-request-id"],
        "probe-42",
        "the client's request id is echoed"
    );
    let r = s.http.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(r.headers()["x-request-id"].len(), 16, "or a fresh one is made");

    let text = s
        .http
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
    };
    assert!(
        text.contains("filestore_http_requests_total{method=\"GET\",route=\"/api/v1/stat/{*path}\",status=\"404\"} 1"),
        "{text}"
    );
    assert!(text.contains("# TYPE filestore_http_request_duration_seconds histogram"));
    assert!(text.contains(
        "filestore_http_request_duration_seconds_bucket{method=\"PUT\",route=\"/api/v1/files/{*path}\",le=\"+Inf\"} 2"
    ));
    // Counters are process-wide (tests share the process), so they are at least ours.
    assert!(value("filestore_dedup_hits_total") >= 1.0);
    assert!(value("filestore_dedup_bytes_saved_total") >= 10_000.0);
    assert!(value("filestore_bytes_in_total") >= 20_000.0);
    assert!(value("filestore_bytes_out_total") >= 10_000.0);
    assert_eq!(value("filestore_upload_sessions_open"), 0.0);
    assert_eq!(value("filestore_transfer_backlog"), 0.0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_names_the_failing_dependency() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.sessions.redis_url = format!("redis://127.0.0.1:{port}")
    })
    .await
    .unwrap();
    let r = s.http.get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["ready"], false);
    assert_eq!(v["checks"]["database"], "ok");
    assert_ne!(v["checks"]["redis"], "ok", "{v}");
    assert_eq!(
        s.http.get(s.url("/healthz")).send().await.unwrap().status(),
        200,
        "the process itself is fine"
    );
    s.stop().await;
}
