//! JSON API for resumable chunked uploads (`/api/v1/uploads`) and instant upload with
//! proof of possession (`/api/v1/instant`). See `uploads.rs` and `instant.rs`.
//!
//! The destination is a `path`, or `parent` (a directory id) with `name`, or `entry` (a
//! file id whose content is replaced wherever the file is, as a FUSE mount's write-back
//! needs). Answers for the id forms show the entry as `/entries/{id}` does.

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
use super::v1_entries::{entry_target, node_json};
use super::{check_declared_length, close_after_error, AppState, AuthUser};
use crate::drive::UploadTarget;
use crate::instant::Outcome;
use crate::meta::{Conflict, User};
use crate::uploads::{decode_target, encode_target, Progress, OPEN_SIZE};
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

/// Where an upload goes: a path, a name in a directory given by id, or (replacing its
/// content wherever it now is) a file given by id. The JSON bodies carry exactly one of
/// `path`, `parent` + `name`, or `entry`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Dest {
    Path(String),
    Child { parent: i64, name: String },
    Entry(i64),
}

impl Dest {
    fn from_fields(
        path: Option<String>,
        parent: Option<i64>,
        name: Option<String>,
        entry: Option<i64>,
    ) -> Result<Dest, String> {
        match (path, parent, name, entry) {
            (Some(p), None, None, None) => Ok(Dest::Path(normal(&p))),
            (None, Some(parent), Some(name), None) => Ok(Dest::Child { parent, name }),
            (None, None, None, Some(id)) => Ok(Dest::Entry(id)),
            _ => Err("give exactly one of `path`, `parent` with `name`, or `entry`".into()),
        }
    }

    /// The session's target string (see `uploads::encode_target`).
    fn encode(&self, conflict: Conflict) -> String {
        match self {
            Dest::Path(p) => encode_target(conflict, p),
            Dest::Child { parent, name } => encode_target(conflict, &format!("#{parent}/{name}")),
            Dest::Entry(id) => encode_target(Conflict::Entry(*id), ""),
        }
    }

    fn decode(target: &str) -> (Conflict, Dest) {
        let (conflict, p) = decode_target(target);
        let dest = match conflict {
            Conflict::Entry(id) => Dest::Entry(id),
            _ => match p.strip_prefix('#').and_then(|r| r.split_once('/')) {
                Some((parent, name)) => Dest::Child {
                    parent: parent.parse().unwrap_or(0),
                    name: name.to_string(),
                },
                None => Dest::Path(p.to_string()),
            },
        };
        (conflict, dest)
    }

    /// The destination fields of a JSON answer.
    fn describe(&self) -> Value {
        match self {
            Dest::Path(p) => json!({ "path": p }),
            Dest::Child { parent, name } => json!({ "path": null, "parent": parent, "name": name }),
            Dest::Entry(id) => json!({ "path": null, "entry": id }),
        }
    }

    /// The entry as the answer shows it: the path form keeps its historical shape.
    fn entry_json(&self, st: &AppState, user: &User, e: &crate::meta::Entry) -> Value {
        match self {
            Dest::Path(p) => json!(entry_json(e, p)),
            _ => json!(node_json(st, user, e)),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInit {
    path: Option<String>,
    parent: Option<i64>,
    name: Option<String>,
    entry: Option<i64>,
    /// Optional: without it, the size is declared at `complete` (an open-ended session,
    /// see `uploads::init`).
    size: Option<i64>,
    /// Optional: without it, the SHA-1 is declared at `complete` (see `uploads::init`).
    sha1: Option<String>,
    #[serde(default = "yes")]
    overwrite: bool,
}

#[derive(Deserialize)]
#[serde(try_from = "RawInit")]
struct InitBody {
    dest: Dest,
    size: Option<i64>,
    sha1: Option<String>,
    overwrite: bool,
}

impl TryFrom<RawInit> for InitBody {
    type Error = String;
    fn try_from(r: RawInit) -> Result<Self, String> {
        Ok(InitBody {
            dest: Dest::from_fields(r.path, r.parent, r.name, r.entry)?,
            size: r.size,
            sha1: r.sha1,
            overwrite: r.overwrite,
        })
    }
}

fn yes() -> bool {
    true
}

fn progress_json(p: &Progress) -> Value {
    let s = &p.session;
    let (_, dest) = Dest::decode(&s.target);
    // An open-ended session has neither yet.
    let declared = |n: i64| (s.size != OPEN_SIZE).then_some(n);
    let mut v = json!({
        "id": s.id,
        "sha1": (!s.sha1.is_empty()).then_some(&s.sha1),
        "size": declared(s.size),
        "chunk_size": s.chunk_size,
        "chunk_count": declared(s.chunk_count),
        "received": p.received,
        "expires": rfc3339(s.expires_at),
    });
    if let (Some(v), Value::Object(d)) = (v.as_object_mut(), dest.describe()) {
        v.extend(d);
    }
    v
}

/// Where an upload goes; the parent (or the file replaced by id) must exist when the
/// upload starts, and is looked up again when it completes.
async fn target(
    st: &AppState,
    user: &User,
    dest: &Dest,
    conflict: Conflict,
    mtime: Option<i64>,
) -> Result<UploadTarget, ApiError> {
    Ok(match dest {
        Dest::Path(path) => {
            let (dir, name) = st.drive.resolve_parent(user, path).await?;
            UploadTarget {
                parent: dir.id,
                name,
                conflict,
                mtime,
            }
        }
        Dest::Child { parent, name } => UploadTarget {
            parent: *parent,
            name: name.clone(),
            conflict,
            mtime,
        },
        Dest::Entry(id) => entry_target(st, user, *id, mtime).await?,
    })
}

/// `POST /api/v1/uploads`: starts an upload, or resumes the caller's upload of the same
/// content and size to the same destination (then `received` lists the chunks already
/// there).
async fn init(State(st): State<AppState>, AuthUser(u): AuthUser, body: Body) -> Result<Response, ApiError> {
    let b: InitBody = json_body(body).await?;
    let conflict = if b.overwrite { Conflict::Replace } else { Conflict::Fail };
    st.drive
        .check_target(&u, &target(&st, &u, &b.dest, conflict, None).await?)
        .await?;
    let p = st
        .uploads
        .init(&u, b.sha1.as_deref(), b.size, b.dest.encode(conflict))
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

/// `PUT /api/v1/uploads/{id}/parts/{index}`: one chunk as the body; optional
/// `X-Chunk-Sha1` and `X-Chunk-Crc32` (8 hex digits, CRC-32 as in gzip) headers are
/// verified before the chunk is recorded.
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
    let crc = parts
        .headers
        .get("x-chunk-crc32")
        .map(|v| v.to_str().map(str::to_string))
        .transpose()
        .map_err(|_| ApiError::bad_request("X-Chunk-Crc32 must be 8 hexadecimal digits"))?;
    let received = st
        .uploads
        .put_part(&u, &id, index, body.into_data_stream(), want.as_deref(), crc.as_deref())
        .await?;
    Ok(Json(json!({ "received": received })))
}

/// The optional body of `complete`: the SHA-1 and size of an upload started without
/// them (given for one started with them, they must agree).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CompleteBody {
    sha1: Option<String>,
    size: Option<i64>,
}

/// `POST /api/v1/uploads/{id}/complete`, with an empty body or `{sha1, size}`.
async fn complete(
    State(st): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = super::small_body(body).await?;
    // No body, `null` (what clients that send no fields post) or `{"sha1": ...}`.
    let declared: CompleteBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        CompleteBody::default()
    } else {
        serde_json::from_slice::<Option<CompleteBody>>(&bytes)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?
            .unwrap_or_default()
    };
    let s = st.uploads.session(&u, &id).await?;
    let (conflict, dest) = Dest::decode(&s.target);
    let e = st
        .uploads
        .complete(
            &u,
            &id,
            target(&st, &u, &dest, conflict, None).await?,
            declared.sha1.as_deref(),
            declared.size,
        )
        .await?;
    let etag = super::content::etag(e.sha1.as_deref().unwrap_or_default());
    Ok((
        StatusCode::CREATED,
        [(header::ETAG, etag)],
        Json(dest.entry_json(&st, &u, &e)),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInstant {
    path: Option<String>,
    parent: Option<i64>,
    name: Option<String>,
    entry: Option<i64>,
    size: i64,
    sha1: String,
    #[serde(default = "yes")]
    overwrite: bool,
    mtime: Option<i64>,
    nonce: Option<String>,
    proof: Option<String>,
}

#[derive(Deserialize)]
#[serde(try_from = "RawInstant")]
struct InstantBody {
    dest: Dest,
    size: i64,
    sha1: String,
    overwrite: bool,
    mtime: Option<i64>,
    nonce: Option<String>,
    proof: Option<String>,
}

impl TryFrom<RawInstant> for InstantBody {
    type Error = String;
    fn try_from(r: RawInstant) -> Result<Self, String> {
        Ok(InstantBody {
            dest: Dest::from_fields(r.path, r.parent, r.name, r.entry)?,
            size: r.size,
            sha1: r.sha1,
            overwrite: r.overwrite,
            mtime: r.mtime,
            nonce: r.nonce,
            proof: r.proof,
        })
    }
}

/// `POST /api/v1/instant`: 201 `{linked: true, entry}` when the caller owns the content
/// or proved possession; 200 `{linked: false, challenge}` otherwise (answer it, or upload).
async fn instant(State(st): State<AppState>, AuthUser(u): AuthUser, body: Body) -> Result<Response, ApiError> {
    let b: InstantBody = json_body(body).await?;
    let conflict = if b.overwrite { Conflict::Replace } else { Conflict::Fail };
    let t = target(&st, &u, &b.dest, conflict, b.mtime).await?;
    let proof = match (&b.nonce, &b.proof) {
        (Some(n), Some(p)) => Some((n.as_str(), p.as_str())),
        _ => None,
    };
    Ok(match st.instant.try_link(&u, &b.sha1, b.size, t, proof).await? {
        Outcome::Linked(e) => (
            StatusCode::CREATED,
            Json(json!({ "linked": true, "entry": b.dest.entry_json(&st, &u, &e) })),
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
