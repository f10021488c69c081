//! Operations endpoints: `/healthz` (the process answers), `/readyz` (every configured
//! dependency answers; the failing one is named), `/metrics` (Prometheus). They carry no
//! user data and are not authenticated, so probes and scrapers need no credentials; keep
//! them off the public internet with the reverse proxy if that matters.
//!
//! Also the request middleware: a request id (the client's `X-Request-Id` if it is sane,
//! else a random one) echoed in the response, one tracing span per request, and the
//! per-route metrics.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use tracing::Instrument;

use super::AppState;
use crate::meta::now_ms;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// How long one readiness check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

async fn check<F, E>(f: F) -> Result<(), String>
where
    F: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    match tokio::time::timeout(CHECK_TIMEOUT, f).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

async fn readyz(State(st): State<AppState>) -> Response {
    let mut checks = Map::new();
    let mut ready = true;
    let mut record = |name: &str, r: Result<(), String>| {
        ready &= r.is_ok();
        checks.insert(name.to_string(), json!(r.err().unwrap_or_else(|| "ok".into())));
    };
    record("database", check(st.drive.meta().ping()).await);
    if !st.config.sessions.redis_url.is_empty() {
        record("redis", check(st.uploads.sessions().ping()).await);
    }
    if let Some(t) = &st.transfers {
        record("s3", check(t.s3.ping()).await);
        if !st.config.queue.amqp_url.is_empty() {
            let q = st.config.queue.clone();
            record(
                "rabbitmq",
                check(async move { crate::transfer::amqp::queue_depths(&q).await.map(|_| ()) }).await,
            );
        }
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({ "ready": ready, "checks": checks }))).into_response()
}

async fn metrics(State(st): State<AppState>) -> Response {
    let meta = st.drive.meta();
    let mut extra: Vec<(&str, &str, f64)> = Vec::new();
    if let Ok(counts) = meta.job_counts().await {
        let n = |s: &str| {
            counts
                .iter()
                .find(|(k, _)| k == s)
                .map(|(_, v)| *v as f64)
                .unwrap_or(0.0)
        };
        extra.push((
            "filestore_transfer_backlog",
            "Transfer jobs not yet done (pending or published).",
            n("pending") + n("published"),
        ));
        extra.push((
            "filestore_transfer_dead_letters",
            "Transfer jobs that failed for good.",
            n("dead"),
        ));
    }
    if let Ok(n) = st.uploads.sessions().count_open(now_ms()).await {
        extra.push((
            "filestore_upload_sessions_open",
            "Chunked upload sessions in progress.",
            n as f64,
        ));
    }
    let body = crate::metrics::global().render(&extra);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// The request id, span and metrics of every request.
pub async fn observe(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_string)
        .unwrap_or_else(crate::util::request_id);
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let span = tracing::info_span!("request", id = %id, method = %method, route = %route);
    let started = Instant::now();
    let mut resp = next.run(req).instrument(span.clone()).await;
    let took = started.elapsed();
    let status = resp.status().as_u16();
    crate::metrics::global().request(&method, &route, status, took);
    span.in_scope(|| {
        if status >= 500 {
            tracing::error!(status, ms = took.as_millis() as u64, "request failed");
        } else {
            tracing::debug!(status, ms = took.as_millis() as u64, "request done");
        }
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}
