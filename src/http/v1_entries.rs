//! The id-based JSON API, `/api/v1/entries/...`: what a FUSE mount (or any client that
//! keeps entry ids, like inode numbers) needs. The path-based routes of `v1.rs` resolve a
//! path on every call; these name an entry by its id, which is stable across renames.
//!
//! Every route authenticates; ids of other users' entries are answered like missing ones
//! (404), as the metadata layer does. Errors go through [`ApiError`] like everywhere else.

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::content::{self, Presentation};
use super::error::ApiError;
use super::v1::json_body;
use super::{check_declared_length, close_after_error, AppState, AuthUser};
use crate::drive::{UploadTarget, DIR_MODE, FILE_MODE};
use crate::meta::{Conflict, Entry, EntryKind, MetaError, Overwrite, User};
use crate::names::validate_name;
use crate::util::rfc3339;

const LIST_DEFAULT: i64 = 100;
const LIST_MAX: i64 = 1000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/entries/{id}", get(get_entry).patch(patch_entry).delete(delete_entry))
        .route("/entries/{id}/children", get(children).post(create_child))
        .route("/entries/{id}/children/{name}", get(lookup_child).delete(delete_child))
        .route(
            "/entries/{id}/children/{name}/content",
            put(put_child)
                .layer(axum::extract::DefaultBodyLimit::disable())
                .layer(axum::middleware::map_response(close_after_error)),
        )
        .route(
            "/entries/{id}/content",
            get(read_content)
                .put(replace_content)
                .layer(axum::extract::DefaultBodyLimit::disable())
                .layer(axum::middleware::map_response(close_after_error)),
        )
}

/// How long a `content_token` lets its user read that content without an entry.
const CONTENT_TOKEN_SECS: u64 = 24 * 3600;

/// An entry as the id-based routes show it: no path (that would cost a walk to the root on
/// every answer), but the parent id and exact times in milliseconds. Files carry a
/// `content_token`: with it, `GET /entries/{id}/content?sha1=&token=` still serves that
/// content after the file was deleted or replaced (for as long as the server keeps it),
/// which is what a mount needs for files unlinked while open.
#[derive(Debug, Serialize)]
pub struct NodeJson {
    pub id: i64,
    /// `null` for the root.
    pub parent: Option<i64>,
    pub name: String,
    pub kind: &'static str,
    pub size: i64,
    pub sha1: Option<String>,
    pub mode: i64,
    pub mtime: String,
    pub mtime_ms: i64,
    pub ctime_ms: i64,
    pub created: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_token: Option<String>,
}

pub(super) fn node_json(st: &AppState, user: &User, e: &Entry) -> NodeJson {
    NodeJson {
        id: e.id,
        parent: e.parent,
        name: e.name.clone(),
        kind: match e.kind {
            EntryKind::Dir => "dir",
            EntryKind::File => "file",
        },
        size: e.size,
        sha1: e.sha1.clone(),
        mode: e.mode,
        mtime: rfc3339(e.mtime),
        mtime_ms: e.mtime,
        ctime_ms: e.ctime,
        created: rfc3339(e.created_at),
        content_token: e
            .sha1
            .as_deref()
            .map(|h| st.tickets.issue_content(user.id, h, CONTENT_TOKEN_SECS)),
    }
}

fn query<T: DeserializeOwned>(uri: &axum::http::Uri) -> Result<T, ApiError> {
    Query::<T>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| ApiError::bad_request(format!("invalid query: {}", e.body_text())))
}

/// An id from the URL. Not a number is a bad request; a number that is not one of the
/// caller's entries is a 404 further down.
fn parse_id(s: &str) -> Result<i64, ApiError> {
    s.parse::<i64>()
        .map_err(|_| ApiError::bad_request(format!("`{s}` is not an entry id")))
}

fn name_ok(name: &str) -> Result<(), ApiError> {
    validate_name(name).map_err(|e| ApiError::from(crate::drive::DriveError::Name(e)))
}

fn check_mode(mode: i64) -> Result<i64, ApiError> {
    if !(0..=0o7777).contains(&mode) {
        return Err(ApiError::bad_request("mode must be permission bits, 0 to 0o7777"));
    }
    Ok(mode)
}

/// The caller's entry `id`.
pub(super) async fn entry(st: &AppState, user: &User, id: i64) -> Result<Entry, ApiError> {
    Ok(st.drive.meta().entry(user.id, id).await?.ok_or(MetaError::NotFound)?)
}

/// The caller's directory `id`.
async fn dir(st: &AppState, user: &User, id: i64) -> Result<Entry, ApiError> {
    let e = entry(st, user, id).await?;
    if !e.is_dir() {
        return Err(MetaError::NotADirectory.into());
    }
    Ok(e)
}

/// An upload that replaces the content of file `id` wherever it is when the upload
/// commits (`Conflict::Entry`), keeping its id and mode.
pub(super) async fn entry_target(
    st: &AppState,
    user: &User,
    id: i64,
    mtime: Option<i64>,
) -> Result<UploadTarget, ApiError> {
    let e = entry(st, user, id).await?;
    if e.is_dir() {
        return Err(MetaError::IsADirectory.into());
    }
    Ok(UploadTarget {
        // Where it is now: only for the early checks; the commit finds it by id.
        parent: e.parent.unwrap_or(e.id),
        name: e.name,
        conflict: Conflict::Entry(id),
        mtime,
    })
}

async fn get_entry(
    State(st): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
) -> Result<Json<NodeJson>, ApiError> {
    Ok(Json(node_json(&st, &u, &entry(&st, &u, parse_id(&id)?).await?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<i64>,
    after: Option<String>,
}

/// One page of a directory in byte order of names; `next` is the `after` of the following
/// page, absent on the last one.
async fn children(
    State(st): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    let q: ListQuery = query(req.uri())?;
    let limit = q.limit.unwrap_or(LIST_DEFAULT);
    if !(1..=LIST_MAX).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit must be between 1 and {LIST_MAX}")));
    }
    let d = dir(&st, &u, parse_id(&id)?).await?;
    let page = st.drive.list(&u, &d, q.after.as_deref().unwrap_or(""), limit).await?;
    let next = (page.len() as i64 == limit)
        .then(|| page.last().map(|e| e.name.clone()))
        .flatten();
    let entries: Vec<NodeJson> = page.iter().map(|e| node_json(&st, &u, e)).collect();
    Ok(Json(json!({ "id": d.id, "entries": entries, "next": next })))
}

/// `GET /entries/{id}/children/{name}`: the entry `name` in directory `id` (404 if there
/// is none, 409 `not_a_directory` if `id` is a file).
async fn lookup_child(
    State(st): State<AppState>,
    AuthUser(u): AuthUser,
    Path((id, name)): Path<(String, String)>,
) -> Result<Json<NodeJson>, ApiError> {
    let id = parse_id(&id)?;
    name_ok(&name)?;
    if let Some(e) = st.drive.meta().lookup(u.id, id, &name).await? {
        return Ok(Json(node_json(&st, &u, &e)));
    }
    // Say why: no such directory, not a directory, or no such name in it.
    dir(&st, &u, id).await?;
    Err(ApiError::not_found())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    kind: String,
    mode: Option<i64>,
    /// Files only: the modification time to record (ms), else now.
    mtime: Option<i64>,
}

/// `POST /entries/{id}/children` `{name, kind, mode?, mtime?}`: a new directory (kind
/// `"dir"`) or a new empty file (kind `"file"`, what create(2) makes; its content is then
/// uploaded with `PUT /entries/{id}/content`). 409 `already_exists` if the name is taken.
async fn create_child(
    State(st): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let b: CreateBody = json_body(body).await?;
    name_ok(&b.name)?;
    let e = match b.kind.as_str() {
        "dir" if b.mtime.is_none() => {
            let mode = check_mode(b.mode.unwrap_or(DIR_MODE))?;
            st.drive.meta().mkdir(u.id, id, &b.name, mode).await?
        }
        "file" => {
            let mode = check_mode(b.mode.unwrap_or(FILE_MODE))?;
            st.drive.create_empty(&u, id, &b.name, mode, b.mtime).await?
        }
        "dir" => return Err(ApiError::bad_request("mtime is only taken for files")),
        _ => return Err(ApiError::bad_request("kind must be \"dir\" or \"file\"")),
    };
    Ok((StatusCode::CREATED, Json(node_json(&st, &u, &e))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteChildQuery {
    kind: Option<String>,
}

/// `DELETE /entries/{id}/children/{name}[?kind=file|dir]`: deletes the entry `name` of
/// directory `id` in one step (unlink(2) and rmdir(2) without a lookup first). With
/// `kind`, a directory where a file is wanted is 409 `is_a_directory`, a file where a
/// directory is wanted 409 `not_a_directory`. A directory must be empty (409
/// `not_empty`). Answers 200 with `{"parent": ...}`, the directory as the deletion left
/// it (new mtime and ctime): a mount then need not ask for it again.
async fn delete_child(
    State(st): State<AppState>,
    AuthUser(u): AuthUser,
    Path((id, name)): Path<(String, String)>,
    req: Request,
) -> Result<Json<ParentJson>, ApiError> {
    let id = parse_id(&id)?;
    name_ok(&name)?;
    let q: DeleteChildQuery = query(req.uri())?;
    let kind = match q.kind.as_deref() {
        None => None,
        Some("file") => Some(EntryKind::File),
        Some("dir") => Some(EntryKind::Dir),
        Some(_) => return Err(ApiError::bad_request("kind must be \"file\" or \"dir\"")),
    };
    let (_, dir) = st.drive.delete_child(&u, id, &name, kind).await?;
    Ok(Json(ParentJson {
        parent: node_json(&st, &u, &dir),
    }))
}

/// The answer of a change that names the directory it left behind.
#[derive(Serialize)]
struct ParentJson {
    parent: NodeJson,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum OverwriteMode {
    No,
    Posix,
}

/// A time as milliseconds since the epoch or an RFC 3339 string.
#[derive(Deserialize)]
#[serde(untagged)]
enum Time {
    Ms(i64),
    Text(String),
}

impl Time {
    fn ms(&self) -> Result<i64, ApiError> {
        match self {
            Time::Ms(ms) => Ok(*ms),
            Time::Text(t) => chrono::DateTime::parse_from_rfc3339(t)
                .map(|d| d.timestamp_millis())
                .map_err(|e| ApiError::bad_request(format!("mtime `{t}`: {e}"))),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    parent: Option<i64>,
    name: Option<String>,
    overwrite: Option<OverwriteMode>,
    mode: Option<i64>,
    mtime: Option<Time>,
}

/// `PATCH /entries/{id}`: move and/or rename (`parent`, `name`; `overwrite` "posix"
/// follows rename(2), the default "no" fails on a taken name), then set `mode` and
/// `mtime`. The move is one row update; the id stays.
async fn patch_entry(
    State(st): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<NodeJson>, ApiError> {
    let id = parse_id(&id)?;
    let b: PatchBody = json_body(body).await?;
    let mode = b.mode.map(check_mode).transpose()?;
    let mtime = b.mtime.as_ref().map(Time::ms).transpose()?;
    let mut e = entry(&st, &u, id).await?;
    if b.parent.is_some() || b.name.is_some() {
        let parent = b.parent.or(e.parent).ok_or(MetaError::Root)?;
        let name = b.name.clone().unwrap_or_else(|| e.name.clone());
        let ow = match b.overwrite.unwrap_or(OverwriteMode::No) {
            OverwriteMode::No => Overwrite::No,
            OverwriteMode::Posix => Overwrite::Posix,
        };
        e = st.drive.rename(&u, id, parent, &name, ow).await?;
    } else if b.overwrite.is_some() {
        return Err(ApiError::bad_request(
            "overwrite only applies to a move (parent or name)",
        ));
    }
    if mode.is_some() || mtime.is_some() {
        e = st.drive.meta().set_attrs(u.id, id, mode, mtime).await?;
    }
    Ok(Json(node_json(&st, &u, &e)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteQuery {
    recursive: Option<bool>,
}

async fn delete_entry(
    State(st): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
    req: Request,
) -> Result<StatusCode, ApiError> {
    let q: DeleteQuery = query(req.uri())?;
    st.drive
        .delete(&u, parse_id(&id)?, q.recursive.unwrap_or(false))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContentQuery {
    sha1: Option<String>,
    token: Option<String>,
}

/// `GET /entries/{id}/content`: the file's bytes, with Range, conditional requests and
/// the content SHA-1 as ETag. With `sha1`, only that content is served: the file's if it
/// still holds it, else (with the `content_token` of an earlier answer) that content
/// even though the file was deleted or replaced meanwhile, else 412 `content_changed`.
async fn read_content(
    State(st): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Result<Response, ApiError> {
    let q: ContentQuery = query(&uri)?;
    let current = match entry(&st, &u, parse_id(&id)?).await {
        Ok(e) => Some(e),
        Err(e) if e.status == StatusCode::NOT_FOUND => None,
        Err(e) => return Err(e),
    };
    if current.as_ref().is_some_and(Entry::is_dir) {
        return Err(MetaError::IsADirectory.into());
    }
    let (e, c) = match (current, q.sha1) {
        (Some(e), None) => {
            let c = st.drive.content_of(&e).await?;
            (e, c)
        }
        (Some(e), Some(want)) if e.sha1.as_deref() == Some(want.as_str()) => {
            let c = st.drive.content_of(&e).await?;
            (e, c)
        }
        (current, Some(want)) => {
            let granted = q
                .token
                .as_deref()
                .is_some_and(|t| st.tickets.verify_content(t, u.id, &want));
            if !granted {
                return Err(match current {
                    Some(_) => ApiError::new(
                        StatusCode::PRECONDITION_FAILED,
                        "content_changed",
                        "the file holds other content now",
                    ),
                    None => ApiError::not_found(),
                });
            }
            let c = st.drive.meta().content(&want).await?.ok_or(MetaError::NotFound)?;
            // The content as a nameless file of its own.
            let e = Entry {
                id: 0,
                owner: u.id,
                parent: None,
                name: current.map(|e| e.name).unwrap_or_default(),
                kind: EntryKind::File,
                sha1: Some(c.sha1.clone()),
                size: c.size,
                mode: crate::drive::FILE_MODE,
                mtime: c.created_at,
                ctime: c.created_at,
                created_at: c.created_at,
            };
            (e, c)
        }
        (None, None) => return Err(ApiError::not_found()),
    };
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
struct PutChildQuery {
    overwrite: Option<bool>,
    mode: Option<i64>,
    mtime: Option<i64>,
}

/// `PUT /entries/{parent}/children/{name}/content`: the body, streamed, becomes the file
/// `name` in directory `parent`. An existing file is replaced (keeping its id and mode)
/// unless `overwrite=false` (then 409 `already_exists`). `mode` is the mode of a file
/// this creates; `mtime` (ms) the modification time to record. 201 created, 200 replaced.
async fn put_child(
    State(st): State<AppState>,
    AuthUser(u): AuthUser,
    Path((parent, name)): Path<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    let parent = parse_id(&parent)?;
    let q: PutChildQuery = query(req.uri())?;
    let mode = q.mode.map(check_mode).transpose()?;
    let (parts, body) = req.into_parts();
    check_declared_length(&parts, st.drive.max_upload())?;
    let conflict = if q.overwrite == Some(false) {
        Conflict::Fail
    } else {
        Conflict::Replace
    };
    let target = UploadTarget {
        parent,
        name,
        conflict,
        mtime: q.mtime,
    };
    let mut e = st.drive.upload(&u, target, body.into_data_stream()).await?;
    let created = e.created_at == e.ctime;
    if let Some(m) = mode.filter(|m| created && *m != e.mode) {
        e = st.drive.meta().set_attrs(u.id, e.id, Some(m), None).await?;
    }
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    let etag = content::etag(e.sha1.as_deref().unwrap_or_default());
    Ok((status, [(header::ETAG, etag)], Json(node_json(&st, &u, &e))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplaceQuery {
    mtime: Option<i64>,
}

/// `PUT /entries/{id}/content`: the body, streamed, replaces the content of file `id`
/// wherever it is (a rename meanwhile does not matter); the id and mode stay.
async fn replace_content(
    State(st): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let q: ReplaceQuery = query(req.uri())?;
    let (parts, body) = req.into_parts();
    check_declared_length(&parts, st.drive.max_upload())?;
    let target = entry_target(&st, &u, id, q.mtime).await?;
    let e = st.drive.upload(&u, target, body.into_data_stream()).await?;
    let etag = content::etag(e.sha1.as_deref().unwrap_or_default());
    Ok(([(header::ETAG, etag)], Json(node_json(&st, &u, &e))).into_response())
}
