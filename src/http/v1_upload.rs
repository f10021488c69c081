//! JSON API for resumable chunked uploads (`/api/v1/uploads`) and instant upload with
//! proof of possession (`/api/v1/instant`). See `uploads.rs` and `instant.rs`.

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::v1::{entry_json, json_body, normal};
use super::{check_declared_length, close_after_error, AppState, AuthUser};
use crate::drive::UploadTarget;
use crate::instant::Outcome;
use crate::meta::{Conflict, User};
use crate::uploads::{decode_target, encode_target, Progress};
use crate::util::rfc3339;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/uploads", post(init))
        .route("/uploads/{id}", axum::routing::get(status).delete(cancel))
        .route(
            "/uploads/{id}/parts/{index}",
            put(part)
                .layer(axum::extract::DefaultBodyLimit::disable())
                .layer(axum::middleware::map_response(close_after_error)),
        )
        .route("/uploads/{id}/complete", post(complete))
        .route("/instant", post(instant))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InitBody {
    path: String,
    size: i64,
    sha1: String,
    #[serde(default = "yes")]
    overwrite: bool,
}

fn yes() -> bool {
    true
}

fn progress_json(p: &Progress) -> Value {
    let s = &p.session;
    let (_, path) = decode_target(&s.target);
    json!({
        "id": s.id,
        "path": path,
        "sha1": s.sha1,
        "size": s.size,
        "chunk_size": s.chunk_size,
        "chunk_count": s.chunk_count,
        "received": p.received,
        "expires": rfc3339(s.expires_at),
    })
}

/// Where a fixed-path upload goes; the parent must exist when the upload starts.
async fn target(st: &AppState, user: &User, path: &str, conflict: Conflict) -> Result<UploadTarget, ApiError> {
    let (dir, name) = st.drive.resolve_parent(user, path).await?;
    Ok(UploadTarget {
        parent: dir.id,
        name,
        conflict,
        mtime: None,
    })
}

/// `POST /api/v1/uploads`: starts an upload, or resumes the caller's upload of the same
/// content and size to the same path (then `received` lists the chunks already there).
async fn init(State(st): State<AppState>, AuthUser(u): AuthUser, body: Body) -> Result<Response, ApiError> {
    let b: InitBody = json_body(body).await?;
    let conflict = if b.overwrite { Conflict::Replace } else { Conflict::Fail };
    let path = normal(&b.path);
    st.drive
        .check_target(&u, &target(&st, &u, &path, conflict).await?)
        .await?;
    let p = st
        .uploads
        .init(&u, &b.sha1, b.size, encode_target(conflict, &path))
        .await?;
    let status = if p.received.is_empty() {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(progress_json(&p))).into_response())
}

async fn status(
    State(st): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(progress_json(&st.uploads.status(&u, &id).await?)))
}

async fn cancel(
    State(st): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    st.uploads.cancel(&u, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /api/v1/uploads/{id}/parts/{index}`: one chunk as the body; an optional
/// `X-Chunk-Sha1` header is verified.
async fn part(
    State(st): State<AppState>,
    AuthUser(u): AuthUser,
    Path((id, index)): Path<(String, i64)>,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    let (parts, body) = req.into_parts();
    check_declared_length(&parts, Some(st.uploads_chunk_limit()))?;
    let want = parts
        .headers
        .get("x-chunk-sha1")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let received = st
        .uploads
        .put_part(&u, &id, index, body.into_data_stream(), want.as_deref())
        .await?;
    Ok(Json(json!({ "received": received })))
}

async fn complete(
    State(st): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let s = st.uploads.session(&u, &id).await?;
    let (conflict, path) = decode_target(&s.target);
    let path = path.to_string();
    let e = st
        .uploads
        .complete(&u, &id, target(&st, &u, &path, conflict).await?)
        .await?;
    let etag = super::content::etag(e.sha1.as_deref().unwrap_or_default());
    Ok((StatusCode::CREATED, [(header::ETAG, etag)], Json(entry_json(&e, &path))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InstantBody {
    path: String,
    size: i64,
    sha1: String,
    #[serde(default = "yes")]
    overwrite: bool,
    nonce: Option<String>,
    proof: Option<String>,
}

/// `POST /api/v1/instant`: 201 `{linked: true, entry}` when the caller owns the content
/// or proved possession; 200 `{linked: false, challenge}` otherwise (answer it, or upload).
async fn instant(State(st): State<AppState>, AuthUser(u): AuthUser, body: Body) -> Result<Response, ApiError> {
    let b: InstantBody = json_body(body).await?;
    let conflict = if b.overwrite { Conflict::Replace } else { Conflict::Fail };
    let path = normal(&b.path);
    let t = target(&st, &u, &path, conflict).await?;
    let proof = match (&b.nonce, &b.proof) {
        (Some(n), Some(p)) => Some((n.as_str(), p.as_str())),
        _ => None,
    };
    Ok(match st.instant.try_link(&u, &b.sha1, b.size, t, proof).await? {
        Outcome::Linked(e) => (
            StatusCode::CREATED,
            Json(json!({ "linked": true, "entry": entry_json(&e, &path) })),
        )
            .into_response(),
        Outcome::Challenge(c) => Json(json!({
            "linked": false,
            "challenge": { "nonce": c.nonce, "offset": c.offset, "length": c.length, "expires": rfc3339(c.expires) },
        }))
        .into_response(),
        Outcome::Refused => Json(json!({ "linked": false })).into_response(),
    })
}
