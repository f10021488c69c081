//! HTTP errors: every lower-layer error is mapped to a status and a JSON body here, once.
//!
//! | error | status |
//! |---|---|
//! | invalid name, malformed body or parameter, client body aborted | 400 |
//! | missing/invalid/expired token, wrong password | 401 (`WWW-Authenticate`) |
//! | account disabled, sign-up disabled | 403 |
//! | unknown entry or one owned by someone else | 404 |
//! | name taken, not a directory, is a directory, not empty, cycle, SHA-1 collision | 409 |
//! | precondition (`If-Match`...) failed | 412 |
//! | upload over the limit | 413 |
//! | too many sign-in attempts | 429 (`Retry-After`) |
//! | database unreachable | 503 |
//! | anything else (a bug or a broken disk) | 500, logged |

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::accounts::AuthError;
use crate::blob::BlobError;
use crate::drive::DriveError;
use crate::meta::MetaError;

/// An error of the JSON API: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such file or directory")
    }

    fn internal(e: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %e, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        let mut resp = (self.status, axum::Json(body)).into_response();
        decorate(&mut resp, self.status, self.retry_after);
        resp
    }
}

/// Adds the headers some statuses call for.
pub(crate) fn decorate(resp: &mut Response, status: StatusCode, retry_after: Option<u64>) {
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"filestore\""),
        );
    }
    if let Some(s) = retry_after {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    // A body refused for its size is left unread, so the server closes the connection
    // after answering; saying so keeps a client from sending its next request on it.
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}

impl From<MetaError> for ApiError {
    fn from(e: MetaError) -> Self {
        use StatusCode as S;
        match e {
            MetaError::NotFound => ApiError::not_found(),
            MetaError::AlreadyExists => ApiError::new(S::CONFLICT, "already_exists", "an entry with that name exists"),
            MetaError::NotADirectory => ApiError::new(S::CONFLICT, "not_a_directory", "not a directory"),
            MetaError::IsADirectory => ApiError::new(S::CONFLICT, "is_a_directory", "is a directory"),
            MetaError::NotEmpty => ApiError::new(S::CONFLICT, "not_empty", "directory not empty"),
            MetaError::Cycle => ApiError::new(S::CONFLICT, "cycle", e.to_string()),
            MetaError::Root => ApiError::new(S::BAD_REQUEST, "root", e.to_string()),
            MetaError::Collision => {
                tracing::warn!("refused an upload whose SHA-1 collides with stored content");
                ApiError::new(S::CONFLICT, "content_collision", e.to_string())
            }
            MetaError::Db(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed) => {
                tracing::error!(error = %e, "database unavailable");
                ApiError::new(
                    S::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the metadata database is unavailable",
                )
            }
            other => ApiError::internal(&other),
        }
    }
}

impl From<BlobError> for ApiError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::TooLarge { .. } => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.to_string()),
            BlobError::Body(_) => ApiError::new(StatusCode::BAD_REQUEST, "bad_body", e.to_string()),
            other => ApiError::internal(&other),
        }
    }
}

impl From<DriveError> for ApiError {
    fn from(e: DriveError) -> Self {
        match e {
            DriveError::Name(n) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_name", n.to_string()),
            DriveError::Meta(m) => m.into(),
            DriveError::Blob(b) => b.into(),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        use StatusCode as S;
        let msg = e.to_string();
        match e {
            AuthError::InvalidUsername | AuthError::WeakPassword(_) => {
                ApiError::new(S::BAD_REQUEST, "invalid_account", msg)
            }
            AuthError::UserExists => ApiError::new(S::CONFLICT, "user_exists", msg),
            AuthError::SignupDisabled => ApiError::new(S::FORBIDDEN, "signup_disabled", msg),
            AuthError::InvalidCredentials => ApiError::new(S::UNAUTHORIZED, "invalid_credentials", msg),
            AuthError::Disabled => ApiError::new(S::FORBIDDEN, "account_disabled", msg),
            AuthError::RateLimited(wait) => ApiError {
                retry_after: Some(wait.as_secs().max(1)),
                ..ApiError::new(S::TOO_MANY_REQUESTS, "rate_limited", msg)
            },
            AuthError::InvalidToken => ApiError::new(S::UNAUTHORIZED, "invalid_token", msg),
            AuthError::Meta(m) => m.into(),
            AuthError::Hash(_) => ApiError::internal(&msg),
        }
    }
}

impl From<crate::uploads::UploadError> for ApiError {
    fn from(e: crate::uploads::UploadError) -> Self {
        use crate::sessions::SessionError;
        use crate::uploads::UploadError as U;
        use StatusCode as S;
        let msg = e.to_string();
        match e {
            U::Session(SessionError::Unavailable(_)) => {
                tracing::error!(error = %msg, "session store unavailable");
                ApiError::new(S::SERVICE_UNAVAILABLE, "sessions_unavailable", msg)
            }
            U::Session(SessionError::Other(_)) | U::Io(_) => ApiError::internal(&msg),
            U::NoSession => ApiError::new(S::NOT_FOUND, "no_such_upload", msg),
            U::Invalid(_) | U::Body(_) => ApiError::bad_request(msg),
            U::ChunkSize { .. } => ApiError::new(S::BAD_REQUEST, "bad_chunk_size", msg),
            U::ChunkHash(_) => ApiError::new(S::BAD_REQUEST, "chunk_hash_mismatch", msg),
            U::Incomplete(_) => ApiError::new(S::CONFLICT, "incomplete", msg),
            U::Mismatch => ApiError::new(S::UNPROCESSABLE_ENTITY, "hash_mismatch", msg),
            U::Drive(d) => d.into(),
        }
    }
}

/// An error of the seed API: the seed's `{code, msg, data}` envelope, with an HTTP status
/// that says the same thing (the seed answered 200 for most failures; clients that read
/// only `code` still work, and HTTP tools now see the failure).
#[derive(Debug)]
pub struct SeedError {
    pub status: StatusCode,
    pub code: i64,
    pub msg: String,
    pub retry_after: Option<u64>,
}

/// The seed's codes ([M] `common/code.go`).
pub mod code {
    pub const OK: i64 = 10000;
    pub const PARAM_INVALID: i64 = 10001;
    pub const SERVER_ERROR: i64 = 10002;
    pub const REGISTER_FAILED: i64 = 10003;
    pub const LOGIN_FAILED: i64 = 10004;
    pub const TOKEN_INVALID: i64 = 10005;
    // 10006 (UserNotExists) is never sent: telling which user names exist helps attackers,
    // so an unknown user is a failed sign-in (10004) like a wrong password.
}

impl SeedError {
    pub fn new(status: StatusCode, code: i64, msg: impl Into<String>) -> Self {
        SeedError {
            status,
            code,
            msg: msg.into(),
            retry_after: None,
        }
    }

    pub fn param(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code::PARAM_INVALID, msg)
    }

    pub fn token() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code::TOKEN_INVALID, "token invalid")
    }

    pub fn no_file() -> Self {
        Self::new(StatusCode::NOT_FOUND, code::PARAM_INVALID, "no such file")
    }
}

impl IntoResponse for SeedError {
    fn into_response(self) -> Response {
        let body = json!({ "code": self.code, "msg": self.msg, "data": null });
        let mut resp = (self.status, axum::Json(body)).into_response();
        decorate(&mut resp, self.status, self.retry_after);
        resp
    }
}

impl From<ApiError> for SeedError {
    fn from(e: ApiError) -> Self {
        let code = match (e.status.as_u16(), e.code) {
            (401, "invalid_token") => code::TOKEN_INVALID,
            (401, _) | (403, "account_disabled") | (429, _) => code::LOGIN_FAILED,
            (409, "user_exists") | (403, "signup_disabled") => code::REGISTER_FAILED,
            (404, _) => return SeedError::no_file(),
            (s, _) if s >= 500 => code::SERVER_ERROR,
            _ => code::PARAM_INVALID,
        };
        SeedError {
            status: e.status,
            code,
            msg: e.message,
            retry_after: e.retry_after,
        }
    }
}

macro_rules! seed_from {
    ($($t:ty),*) => {$(
        impl From<$t> for SeedError {
            fn from(e: $t) -> Self {
                ApiError::from(e).into()
            }
        }
    )*};
}
seed_from!(MetaError, DriveError, AuthError, BlobError, crate::uploads::UploadError);
