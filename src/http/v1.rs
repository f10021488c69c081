//! The JSON API with paths and directories, `/api/v1/...`, described by `openapi.json`.
//! Authentication is `Authorization: Bearer <token>` (from `/api/v1/auth/signin`).

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::content::{self, Presentation};
use super::error::ApiError;
use super::{bearer, check_declared_length, client_ip, close_after_error, small_body, AppState, AuthUser};
use crate::drive::UploadTarget;
use crate::meta::{Conflict, Entry, EntryKind, Overwrite};
use crate::util::rfc3339;

/// The OpenAPI document, checked against the router by a test.
pub const OPENAPI: &str = include_str!("openapi.json");

const LIST_DEFAULT: i64 = 100;
const LIST_MAX: i64 = 1000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/auth/signup", post(signup))
        .route("/auth/signin", post(signin))
        .route("/auth/signout", post(signout))
        .route("/me", get(me))
        .route("/stat", get(stat_root))
        .route("/stat/{*path}", get(stat))
        .route("/list", get(list_root))
        .route("/list/{*path}", get(list))
        .route(
            "/files/{*path}",
            get(download)
                .put(upload)
                .delete(remove)
                .layer(axum::extract::DefaultBodyLimit::disable())
                .layer(axum::middleware::map_response(close_after_error)),
        )
        .route("/dirs/{*path}", post(mkdir))
        .route("/move", post(move_entry))
        .route("/copy", post(copy_entry))
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// An entry as the API shows it.
#[derive(Debug, Serialize)]
pub struct EntryJson {
    pub id: i64,
    pub name: String,
    pub path: String,
    pub kind: &'static str,
    pub size: i64,
    pub sha1: Option<String>,
    pub mode: i64,
    pub mtime: String,
    pub created: String,
}

pub(super) fn entry_json(e: &Entry, path: &str) -> EntryJson {
    EntryJson {
        id: e.id,
        name: e.name.clone(),
        path: path.to_string(),
        kind: match e.kind {
            EntryKind::Dir => "dir",
            EntryKind::File => "file",
        },
        size: e.size,
        sha1: e.sha1.clone(),
        mode: e.mode,
        mtime: rfc3339(e.mtime),
        created: rfc3339(e.created_at),
    }
}

/// `/a/b` for a path parameter, whatever slashes the client used.
pub(super) fn normal(path: &str) -> String {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    format!("/{}", parts.join("/"))
}

fn child_path(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

pub(super) async fn json_body<T: DeserializeOwned>(body: Body) -> Result<T, ApiError> {
    let bytes = small_body(body).await?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

fn query<T: DeserializeOwned>(req_uri: &axum::http::Uri) -> Result<T, ApiError> {
    Query::<T>::try_from_uri(req_uri)
        .map(|q| q.0)
        .map_err(|e| ApiError::bad_request(format!("invalid query: {}", e.body_text())))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    username: String,
    password: String,
}

async fn signup(State(st): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let c: Credentials = json_body(body).await?;
    let u = st.accounts.signup(&c.username, &c.password).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "username": u.name, "created": rfc3339(u.created_at) })),
    )
        .into_response())
}

async fn signin(State(st): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let c: Credentials = json_body(body).await?;
    let s = st.accounts.signin(&c.username, &c.password, client_ip(&parts)).await?;
    Ok(Json(json!({ "token": s.token, "expires": rfc3339(s.expires_at), "username": s.user.name })).into_response())
}

async fn signout(State(st): State<AppState>, req: Request) -> Result<StatusCode, ApiError> {
    let (mut parts, _) = req.into_parts();
    let _user = <AuthUser as axum::extract::FromRequestParts<AppState>>::from_request_parts(&mut parts, &st).await?;
    st.accounts.signout(bearer(&parts).unwrap_or_default()).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn me(State(st): State<AppState>, AuthUser(u): AuthUser) -> Result<Json<Value>, ApiError> {
    let (logical, stored) = st.drive.meta().usage(u.id).await?;
    Ok(Json(json!({
        "username": u.name,
        "admin": u.is_admin,
        "created": rfc3339(u.created_at),
        "usage": { "bytes": logical, "stored_bytes": stored },
    })))
}

async fn stat_root(st: State<AppState>, user: AuthUser) -> Result<Json<EntryJson>, ApiError> {
    stat(st, user, Path(String::new())).await
}

async fn stat(
    State(st): State<AppState>,
    AuthUser(u): AuthUser,
    Path(path): Path<String>,
) -> Result<Json<EntryJson>, ApiError> {
    let e = st.drive.resolve(&u, &path).await?;
    Ok(Json(entry_json(&e, &normal(&path))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<i64>,
    after: Option<String>,
}

async fn list_root(st: State<AppState>, user: AuthUser, req: Request) -> Result<Json<Value>, ApiError> {
    list(st, user, Path(String::new()), req).await
}

/// One page of a directory, in byte order of names. `next` is the `after` value of the
/// following page, absent on the last one.
async fn list(
    State(st): State<AppState>,
    AuthUser(u): AuthUser,
    Path(path): Path<String>,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    let q: ListQuery = query(req.uri())?;
    let limit = q.limit.unwrap_or(LIST_DEFAULT);
    if !(1..=LIST_MAX).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit must be between 1 and {LIST_MAX}")));
    }
    let dir = st.drive.resolve(&u, &path).await?;
    let page = st.drive.list(&u, &dir, q.after.as_deref().unwrap_or(""), limit).await?;
    let base = normal(&path);
    let next = (page.len() as i64 == limit)
        .then(|| page.last().map(|e| e.name.clone()))
        .flatten();
    let entries: Vec<EntryJson> = page
        .iter()
        .map(|e| entry_json(e, &child_path(&base, &e.name)))
        .collect();
    Ok(Json(json!({ "path": base, "entries": entries, "next": next })))
}

async fn download(
    State(st): State<AppState>,
    AuthUser(u): AuthUser,
    Path(path): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let e = st.drive.resolve(&u, &path).await?;
    if e.is_dir() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "is_a_directory",
            "is a directory; list it with /api/v1/list",
        ));
    }
    let c = st.drive.content_of(&e).await?;
    let ct = mime_guess::from_path(&e.name).first_or_octet_stream().to_string();
    content::serve(
        &st.drive,
        &method,
        &headers,
        &e,
        &c,
        Presentation {
            content_type: ct,
            attachment: false,
        },
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutQuery {
    overwrite: Option<bool>,
}

/// `PUT /api/v1/files/{path}`: the body, streamed, becomes the file's content. Replaces an
/// existing file unless `overwrite=false` or `If-None-Match: *`; `If-Match` makes it
/// conditional on the current ETag. 201 when created, 200 when replaced.
async fn upload(
    State(st): State<AppState>,
    AuthUser(u): AuthUser,
    Path(path): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let q: PutQuery = query(req.uri())?;
    let (parts, body) = req.into_parts();
    check_declared_length(&parts, st.drive.max_upload())?;
    let (dir, name) = st.drive.resolve_parent(&u, &path).await?;
    let mut conflict = if q.overwrite == Some(false) {
        Conflict::Fail
    } else {
        Conflict::Replace
    };
    if let Some(v) = parts.headers.get(header::IF_NONE_MATCH) {
        if v.as_bytes() == b"*" {
            conflict = Conflict::Fail;
        }
    }
    if let Some(v) = parts.headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) {
        let current = st.drive.meta().lookup(u.id, dir.id, &name).await?;
        let tag = current.as_ref().and_then(|e| e.sha1.as_deref()).map(content::etag);
        let matches = match &tag {
            Some(t) => v.trim() == "*" || v.split(',').any(|x| x.trim() == t),
            None => false,
        };
        if !matches {
            return Err(ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                "If-Match does not match",
            ));
        }
    }
    let target = UploadTarget {
        parent: dir.id,
        name,
        conflict,
        mtime: None,
    };
    let e = st
        .drive
        .upload(&u, target, body.into_data_stream())
        .await
        .map_err(|e| match e {
            crate::drive::DriveError::Meta(crate::meta::MetaError::AlreadyExists) if conflict == Conflict::Fail => {
                ApiError::new(StatusCode::PRECONDITION_FAILED, "already_exists", "the file exists")
            }
            other => other.into(),
        })?;
    let status = if e.created_at == e.ctime {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let etag = content::etag(e.sha1.as_deref().unwrap_or_default());
    Ok((status, [(header::ETAG, etag)], Json(entry_json(&e, &normal(&path)))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteQuery {
    recursive: Option<bool>,
}

async fn remove(
    State(st): State<AppState>,
    AuthUser(u): AuthUser,
    Path(path): Path<String>,
    req: Request,
) -> Result<StatusCode, ApiError> {
    let q: DeleteQuery = query(req.uri())?;
    let e = st.drive.resolve(&u, &path).await?;
    st.drive.delete(&u, e.id, q.recursive.unwrap_or(false)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MkdirQuery {
    parents: Option<bool>,
}

async fn mkdir(
    State(st): State<AppState>,
    AuthUser(u): AuthUser,
    Path(path): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let q: MkdirQuery = query(req.uri())?;
    let e = st.drive.mkdir_path(&u, &path, q.parents.unwrap_or(false)).await?;
    Ok((StatusCode::CREATED, Json(entry_json(&e, &normal(&path)))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Transfer {
    from: String,
    to: String,
    #[serde(default)]
    overwrite: bool,
}

async fn move_entry(
    State(st): State<AppState>,
    AuthUser(u): AuthUser,
    body: Body,
) -> Result<Json<EntryJson>, ApiError> {
    let t: Transfer = json_body(body).await?;
    let src = st.drive.resolve(&u, &t.from).await?;
    let (dir, name) = st.drive.resolve_parent(&u, &t.to).await?;
    let ow = if t.overwrite { Overwrite::Posix } else { Overwrite::No };
    let e = st.drive.rename(&u, src.id, dir.id, &name, ow).await?;
    Ok(Json(entry_json(&e, &normal(&t.to))))
}

async fn copy_entry(State(st): State<AppState>, AuthUser(u): AuthUser, body: Body) -> Result<Response, ApiError> {
    let t: Transfer = json_body(body).await?;
    let src = st.drive.resolve(&u, &t.from).await?;
    let (dir, name) = st.drive.resolve_parent(&u, &t.to).await?;
    let ow = if t.overwrite { Overwrite::Any } else { Overwrite::No };
    let e = st.drive.copy(&u, src.id, dir.id, &name, ow).await?;
    Ok((StatusCode::CREATED, Json(entry_json(&e, &normal(&t.to)))).into_response())
}
