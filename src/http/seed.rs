//! The routes of the Go project "filestore-server", with its parameters, envelope
//! (`{code, msg, data}`, codes 10000-10006) and PascalCase keys, and without its holes
//! (SEED-API.md section 8): tokens are checked against the database and bound to the
//! `username` given, every file route acts only on the caller's own entries, and download
//! links carry a short-lived ticket instead of the token.
//!
//! Routes that name a file only by `filehash` act on the caller's most recently created
//! file with that content (ties broken by the newer id). `/file/meta`, `/file/query` and
//! `/file/update` answer with bare JSON as the seed did; every other success and every
//! error uses the envelope.

use std::collections::HashMap;

use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State};
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::content::{self, Presentation};
use super::error::{code, SeedError};
use super::{bearer, check_declared_length, client_ip, close_after_error, small_body, to_web_page, AppState};
use crate::drive::UploadTarget;
use crate::meta::{Conflict, Entry, Overwrite, User};
use crate::names::base_name;
use crate::util::seed_time;

/// `/file/query` answers at most this many files whatever `limit` says.
const QUERY_CAP: i64 = 1000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/user/signup", get(to_web_page_h).post(signup))
        .route("/user/signin", get(to_web_page_h).post(signin))
        .route("/user/signout", post(signout))
        .route("/user/info", get(info).post(info))
        .route(
            "/file/upload",
            get(to_web_page_h)
                .post(upload)
                .layer(DefaultBodyLimit::disable())
                .layer(axum::middleware::map_response(close_after_error)),
        )
        .route("/file/meta", get(meta).post(meta))
        .route("/file/query", get(query).post(query))
        .route("/file/download", get(download).post(download))
        .route("/file/downloadurl", get(download_url).post(download_url))
        .route("/file/update", post(update))
        .route("/file/delete", post(delete))
}

async fn to_web_page_h() -> Response {
    to_web_page()
}

/// Form values as Go's `FormValue` saw them: the query string, overridden by a urlencoded
/// body.
pub(super) struct Params(HashMap<String, String>);

impl Params {
    pub(super) fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|v| !v.is_empty())
    }

    pub(super) fn required(&self, k: &str) -> Result<&str, SeedError> {
        self.get(k)
            .ok_or_else(|| SeedError::param(format!("missing parameter `{k}`")))
    }

    /// `filehash`, as 40 lowercase hex digits.
    pub(super) fn file_hash(&self) -> Result<String, SeedError> {
        let h = self.required("filehash")?.to_ascii_lowercase();
        if !crate::blob::is_sha1_hex(&h) {
            return Err(SeedError::param("filehash must be 40 hexadecimal digits"));
        }
        Ok(h)
    }
}

fn parse_urlencoded(s: &str, into: &mut HashMap<String, String>) {
    for pair in s.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let dec = |x: &str| {
            percent_encoding::percent_decode_str(&x.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        into.insert(dec(k), dec(v));
    }
}

pub(super) fn query_params(parts: &Parts) -> Params {
    let mut m = HashMap::new();
    parse_urlencoded(parts.uri.query().unwrap_or(""), &mut m);
    Params(m)
}

pub(super) async fn params(req: Request) -> Result<(Parts, Params), SeedError> {
    let (parts, body) = req.into_parts();
    let mut p = query_params(&parts);
    let form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if form {
        let bytes = small_body(body).await?;
        let text = std::str::from_utf8(&bytes).map_err(|_| SeedError::param("form body is not UTF-8"))?;
        parse_urlencoded(text, &mut p.0);
    }
    Ok((parts, p))
}

/// The caller, from `Authorization: Bearer` or the `token` parameter. When `username` is
/// given it must be the token's owner: a token is not a key to other accounts.
pub(super) async fn caller(st: &AppState, parts: &Parts, p: &Params) -> Result<User, SeedError> {
    let token = bearer(parts).or_else(|| p.get("token")).ok_or_else(SeedError::token)?;
    let user = st.accounts.authenticate(token).await.map_err(|e| match e {
        crate::accounts::AuthError::InvalidToken => SeedError::token(),
        other => other.into(),
    })?;
    match p.get("username") {
        Some(name) if name != user.name => Err(SeedError::token()),
        _ => Ok(user),
    }
}

pub(super) fn ok(msg: &str, data: Value) -> Response {
    Json(json!({ "code": code::OK, "msg": msg, "data": data })).into_response()
}

pub(super) fn user_file(user: &User, e: &Entry) -> Value {
    json!({
        "UserName": user.name,
        "FileHash": e.sha1,
        "FileName": e.name,
        "FileSize": e.size,
        "UploadAt": seed_time(e.created_at),
        "LastUpdated": seed_time(e.mtime),
    })
}

fn file_meta(e: &Entry, store: &str) -> Value {
    json!({
        "FileSha1": e.sha1,
        "FileName": e.name,
        "FileSize": e.size,
        // The seed exposed the server-side path here; the store kind is all a client needs.
        "Location": store,
        "UploadAt": seed_time(e.created_at),
    })
}

async fn signup(State(st): State<AppState>, req: Request) -> Result<Response, SeedError> {
    let (_, p) = params(req).await?;
    let user = st
        .accounts
        .signup(p.required("username")?, p.required("password")?)
        .await?;
    Ok(ok("signup succeeded", json!({ "Username": user.name })))
}

async fn signin(State(st): State<AppState>, req: Request) -> Result<Response, SeedError> {
    let (parts, p) = params(req).await?;
    let s = st
        .accounts
        .signin(p.required("username")?, p.required("password")?, client_ip(&parts))
        .await?;
    Ok(ok(
        "signin succeeded",
        json!({
            "Location": "/",
            "Username": s.user.name,
            "Token": s.token,
            "ExpiresAt": crate::util::rfc3339(s.expires_at),
        }),
    ))
}

async fn signout(State(st): State<AppState>, req: Request) -> Result<Response, SeedError> {
    let (parts, p) = params(req).await?;
    caller(&st, &parts, &p).await?;
    let token = bearer(&parts).or_else(|| p.get("token")).unwrap_or_default();
    st.accounts.signout(token).await?;
    Ok(ok("signed out", Value::Null))
}

async fn info(State(st): State<AppState>, req: Request) -> Result<Response, SeedError> {
    let (parts, p) = params(req).await?;
    let user = caller(&st, &parts, &p).await?;
    Ok(ok(
        "OK",
        json!({
            "Username": user.name,
            "Email": "",
            "Phone": "",
            "SignupAt": seed_time(user.created_at),
            "LastActiveAt": seed_time(user.last_active),
            "Status": if user.disabled { 1 } else { 0 },
        }),
    ))
}

/// `POST /file/upload`: multipart field `file`, streamed to the staging disk as it
/// arrives. The file goes to the user's root folder; a taken name gets a ` (n)` suffix.
async fn upload(State(st): State<AppState>, req: Request) -> Result<Response, SeedError> {
    let (parts, body) = req.into_parts();
    let p = query_params(&parts);
    let user = caller(&st, &parts, &p).await?;
    check_declared_length(&parts, st.drive.max_upload())?;
    let req = Request::from_parts(parts, body);
    let mut form = Multipart::from_request(req, &())
        .await
        .map_err(|e| SeedError::param(format!("expected a multipart/form-data body: {}", e.body_text())))?;
    let root = st.drive.meta().root(user.id).await?;
    while let Some(field) = form.next_field().await.map_err(|e| SeedError::param(e.body_text()))? {
        if field.name() != Some("file") {
            continue;
        }
        let name = base_name(field.file_name().unwrap_or_default()).to_string();
        let target = UploadTarget {
            parent: root.id,
            name,
            conflict: Conflict::Rename,
            mtime: None,
        };
        let entry = st.drive.upload(&user, target, field).await?;
        return Ok(ok("upload succeeded", user_file(&user, &entry)));
    }
    Err(SeedError::param("missing multipart field `file`"))
}

/// The caller's newest file with the content named by `filehash`.
async fn by_hash(st: &AppState, user: &User, p: &Params) -> Result<Entry, SeedError> {
    let hash = p.file_hash()?;
    st.drive
        .meta()
        .newest_with_content(user.id, &hash)
        .await?
        .ok_or_else(SeedError::no_file)
}

async fn meta(State(st): State<AppState>, req: Request) -> Result<Response, SeedError> {
    let (parts, p) = params(req).await?;
    let user = caller(&st, &parts, &p).await?;
    let e = by_hash(&st, &user, &p).await?;
    let c = st.drive.content_of(&e).await?;
    Ok(Json(file_meta(&e, &c.store)).into_response())
}

async fn query(State(st): State<AppState>, req: Request) -> Result<Response, SeedError> {
    let (parts, p) = params(req).await?;
    let user = caller(&st, &parts, &p).await?;
    let limit = match p.get("limit") {
        None => 15,
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| SeedError::param("limit must be a positive integer"))?
            .min(QUERY_CAP),
    };
    let files = st.drive.meta().recent_files(user.id, limit).await?;
    Ok(Json(files.iter().map(|e| user_file(&user, e)).collect::<Vec<_>>()).into_response())
}

/// `/file/download`: with the caller's token, or with a ticket from `/file/downloadurl`.
async fn download(State(st): State<AppState>, req: Request) -> Result<Response, SeedError> {
    let method = req.method().clone();
    let (parts, p) = params(req).await?;
    let entry = match p.get("ticket") {
        Some(ticket) => {
            let hash = p.file_hash()?;
            let grant = st.tickets.verify(ticket).ok_or_else(|| {
                SeedError::new(
                    StatusCode::FORBIDDEN,
                    code::TOKEN_INVALID,
                    "download link invalid or expired",
                )
            })?;
            st.drive
                .meta()
                .entry(grant.user, grant.entry)
                .await?
                .filter(|e| e.sha1.as_deref() == Some(hash.as_str()))
                .ok_or_else(SeedError::no_file)?
        }
        None => {
            let user = caller(&st, &parts, &p).await?;
            by_hash(&st, &user, &p).await?
        }
    };
    let c = st.drive.content_of(&entry).await?;
    let how = Presentation {
        content_type: "application/octet-stream".into(),
        attachment: true,
    };
    let method = if method == Method::POST { Method::GET } else { method };
    Ok(content::serve(&st.drive, &method, &parts.headers, &entry, &c, how).await?)
}

/// `/file/downloadurl`: a link to `/file/download` that works without the token, for a few
/// minutes, for this one file.
async fn download_url(State(st): State<AppState>, req: Request) -> Result<Response, SeedError> {
    let (parts, p) = params(req).await?;
    let user = caller(&st, &parts, &p).await?;
    let e = by_hash(&st, &user, &p).await?;
    let sha1 = e.sha1.clone().unwrap_or_default();
    // Content already in object storage can be fetched from it directly, if the operator
    // allows: a short-lived presigned GET that saves the file under the user's name.
    if let (true, Some(t)) = (st.config.s3.presign_downloads, &st.transfers) {
        let c = st.drive.content_of(&e).await?;
        if c.store == "s3" {
            let key = c.object_key.clone().unwrap_or_else(|| t.s3.key(&c.sha1));
            let ttl = std::time::Duration::from_secs(st.config.s3.presign_ttl_secs);
            let url =
                t.s3.presign_get(&key, ttl, &e.name)
                    .await
                    .map_err(crate::drive::DriveError::from)?;
            return Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], url).into_response());
        }
    }
    let ticket = st.tickets.issue(user.id, e.id, st.config.auth.download_link_ttl_secs);
    let base = if st.config.server.public_url.is_empty() {
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if host.is_empty() || !host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b)) {
            return Err(SeedError::param("missing or malformed Host header"));
        }
        format!("http://{host}")
    } else {
        st.config.server.public_url.trim_end_matches('/').to_string()
    };
    let url = format!("{base}/file/download?filehash={sha1}&ticket={ticket}");
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], url).into_response())
}

/// `/file/update?op=0&filehash=..&filename=..`: renames the file in its folder.
async fn update(State(st): State<AppState>, req: Request) -> Result<Response, SeedError> {
    let (parts, p) = params(req).await?;
    let user = caller(&st, &parts, &p).await?;
    if p.get("op") != Some("0") {
        return Err(SeedError::new(
            StatusCode::FORBIDDEN,
            code::PARAM_INVALID,
            "op must be 0 (rename)",
        ));
    }
    let name = p.required("filename")?.to_string();
    let e = by_hash(&st, &user, &p).await?;
    let parent = e.parent.unwrap_or_default();
    let renamed = st.drive.rename(&user, e.id, parent, &name, Overwrite::No).await?;
    let c = st.drive.content_of(&renamed).await?;
    Ok(Json(file_meta(&renamed, &c.store)).into_response())
}

/// `/file/delete?filehash=..`: deletes the entry; the content's bytes go when no entry of
/// anyone points at them any more (after the grace period).
async fn delete(State(st): State<AppState>, req: Request) -> Result<Response, SeedError> {
    let (parts, p) = params(req).await?;
    let user = caller(&st, &parts, &p).await?;
    let e = by_hash(&st, &user, &p).await?;
    st.drive.delete(&user, e.id, false).await?;
    Ok(ok("deleted", Value::Null))
}
