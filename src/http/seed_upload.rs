//! The seed's instant and chunked upload routes: `/file/fastupload` and
//! `/file/mpupload/{init,uppart,complete,cancel,status}`, with the seed's parameters and
//! `MultipartUploadInfo` keys. Sessions are bound to their user (another user's upload id
//! is "no such upload"), chunk indices are checked, and `complete` verifies the bytes.
//!
//! `/file/fastupload` keeps the seed's own codes: 0 linked, -1 "use the normal upload".
//! A -1 answer carries a `Challenge` (nonce, offset, length); a client that returns
//! `nonce` and `proof` = SHA-1(nonce || those bytes) gets the file linked. The seed's
//! client, which sends only the hash, reads -1 and uploads normally.

use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::{any, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::error::SeedError;
use super::seed::{caller, ok, params, query_params, user_file, Params};
use super::{check_declared_length, close_after_error, AppState};
use crate::drive::UploadTarget;
use crate::instant::Outcome;
use crate::meta::{Conflict, User};
use crate::uploads::{encode_target, Progress};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/file/fastupload", any(fast_upload))
        .route("/file/mpupload/init", any(init))
        .route(
            "/file/mpupload/uppart",
            post(upload_part)
                .layer(axum::extract::DefaultBodyLimit::disable())
                .layer(axum::middleware::map_response(close_after_error)),
        )
        .route("/file/mpupload/complete", any(complete))
        .route("/file/mpupload/cancel", any(cancel))
        .route("/file/mpupload/status", any(status))
}

fn size_param(p: &Params) -> Result<i64, SeedError> {
    p.required("filesize")?
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| SeedError::param("filesize must be a non-negative integer"))
}

/// The root folder, named by `filename` (a taken name gets ` (n)`).
async fn root_target(st: &AppState, user: &User, p: &Params) -> Result<UploadTarget, SeedError> {
    let name = crate::names::base_name(p.required("filename")?).to_string();
    let root = st.drive.meta().root(user.id).await?;
    Ok(UploadTarget {
        parent: root.id,
        name,
        conflict: Conflict::Rename,
        mtime: None,
    })
}

async fn fast_upload(State(st): State<AppState>, req: Request) -> Result<Response, SeedError> {
    let (parts, p) = params(req).await?;
    let user = caller(&st, &parts, &p).await?;
    let hash = p.file_hash()?;
    let size = size_param(&p)?;
    let target = root_target(&st, &user, &p).await?;
    let proof = match (p.get("nonce"), p.get("proof")) {
        (Some(n), Some(a)) => Some((n, a)),
        _ => None,
    };
    let use_upload = "秒传失败，请访问普通上传接口";
    let reply = |code: i64, msg: &str, data: Value| Json(json!({ "code": code, "msg": msg, "data": data }));
    Ok(match st.instant.try_link(&user, &hash, size, target, proof).await? {
        Outcome::Linked(e) => axum::response::IntoResponse::into_response(reply(0, "秒传成功", user_file(&user, &e))),
        Outcome::Challenge(c) => axum::response::IntoResponse::into_response(reply(
            -1,
            use_upload,
            json!({ "Challenge": { "Nonce": c.nonce, "Offset": c.offset, "Length": c.length, "Expires": crate::util::rfc3339(c.expires) } }),
        )),
        Outcome::Refused => axum::response::IntoResponse::into_response(reply(-1, use_upload, Value::Null)),
    })
}

fn info(p: &Progress) -> Value {
    let s = &p.session;
    json!({
        "FileHash": s.sha1,
        "FileSize": s.size,
        "UploadID": s.id,
        "ChunkSize": s.chunk_size,
        "ChunkCount": s.chunk_count,
        "ChunkExists": p.received,
    })
}

async fn init(State(st): State<AppState>, req: Request) -> Result<Response, SeedError> {
    let (parts, p) = params(req).await?;
    let user = caller(&st, &parts, &p).await?;
    let hash = p.file_hash()?;
    let size = size_param(&p)?;
    let progress = st
        .uploads
        .init(&user, Some(&hash), Some(size), encode_target(Conflict::Rename, ""))
        .await?;
    Ok(ok("OK", info(&progress)))
}

/// `POST /file/mpupload/uppart?uploadid=..&index=..[&chkhash=..]`, the chunk as the raw body.
async fn upload_part(State(st): State<AppState>, req: Request) -> Result<Response, SeedError> {
    let (parts, body) = req.into_parts();
    let p = query_params(&parts);
    let user = caller(&st, &parts, &p).await?;
    let id = p.required("uploadid")?.to_string();
    let index: i64 = p
        .required("index")?
        .parse()
        .map_err(|_| SeedError::param("index must be an integer"))?;
    check_declared_length(&parts, Some(st.uploads_chunk_limit()))?;
    st.uploads
        .put_part(&user, &id, index, body.into_data_stream(), p.get("chkhash"), None)
        .await?;
    Ok(ok("OK", Value::Null))
}

async fn complete(State(st): State<AppState>, req: Request) -> Result<Response, SeedError> {
    let (parts, p) = params(req).await?;
    let user = caller(&st, &parts, &p).await?;
    let id = p.required("uploadid")?.to_string();
    let session = st.uploads.session(&user, &id).await?;
    // The seed's client repeats hash and size here; they must be the session's.
    if p.get("filehash")
        .is_some_and(|h| !h.eq_ignore_ascii_case(&session.sha1))
        || p.get("filesize")
            .is_some_and(|s| s.parse::<i64>().ok() != Some(session.size))
    {
        return Err(SeedError::param("filehash and filesize must be the ones given at init"));
    }
    let target = root_target(&st, &user, &p).await?;
    let entry = st.uploads.complete(&user, &id, target, None, None).await?;
    Ok(ok("OK", user_file(&user, &entry)))
}

async fn cancel(State(st): State<AppState>, req: Request) -> Result<Response, SeedError> {
    let (parts, p) = params(req).await?;
    let user = caller(&st, &parts, &p).await?;
    st.uploads.cancel(&user, p.required("uploadid")?).await?;
    Ok(ok("OK", Value::Null))
}

async fn status(State(st): State<AppState>, req: Request) -> Result<Response, SeedError> {
    let (parts, p) = params(req).await?;
    let user = caller(&st, &parts, &p).await?;
    let progress = st.uploads.status(&user, p.required("uploadid")?).await?;
    let mut v = info(&progress);
    let count = progress.session.chunk_count.max(1);
    v["Percent"] = json!((progress.received.len() as i64 * 100) / count);
    Ok(ok("OK", v))
}
