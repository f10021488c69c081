//! The HTTP front door: the seed's routes (`seed.rs`), the JSON API (`v1.rs`), and what
//! they share (state, authentication, errors, content serving).

mod content;
mod error;
mod ops;
mod seed;
mod seed_upload;
mod tickets;
mod v1;
mod v1_entries;
mod v1_upload;
mod web;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

pub use error::{ApiError, SeedError};
pub use tickets::TicketKey;

use crate::accounts::Accounts;
use crate::config::Config;
use crate::drive::Drive;
use crate::meta::User;

/// Largest JSON or form body accepted outside uploads.
pub const SMALL_BODY: usize = 64 * 1024;

/// What every handler can reach. One shared allocation: axum's `State` clones it for each
/// request, and cloning eight reference counts (shared by both cores' requests) was 1.7 %
/// of a small WebDAV GET's CPU.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    pub fn new(services: Services) -> Self {
        AppState(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct Services {
    pub drive: Arc<Drive>,
    pub accounts: Arc<Accounts>,
    pub uploads: Arc<crate::uploads::Uploads>,
    pub instant: Arc<crate::instant::Instant>,
    pub dav: Arc<crate::dav::DavService>,
    pub transfers: Option<crate::transfer::Transfers>,
    pub config: Arc<Config>,
    pub tickets: TicketKey,
}

impl Services {
    /// The largest body a chunk upload may declare.
    pub(crate) fn uploads_chunk_limit(&self) -> u64 {
        self.config.sessions.chunk_size
    }
}

/// The whole router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(web::routes())
        .merge(ops::routes())
        .merge(seed::routes())
        .merge(seed_upload::routes())
        .nest(
            "/api/v1",
            v1::routes().merge(v1_upload::routes()).merge(v1_entries::routes()),
        )
        // A wildcard does not match an empty rest, so the collection itself needs its routes.
        .route("/dav", dav_route())
        .route("/dav/", dav_route())
        .route("/dav/{*path}", dav_route())
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            )
        })
        .route_layer(axum::middleware::from_fn(ops::observe))
        .layer(TraceLayer::new_for_http())
        // A panic is a bug; the client still gets a JSON 500 and the process stays up.
        .layer(CatchPanicLayer::custom(|_: Box<dyn std::any::Any + Send>| {
            tracing::error!("request handler panicked");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error").into_response()
        }))
        .with_state(state)
}

fn dav_route() -> axum::routing::MethodRouter<AppState> {
    axum::routing::any(crate::dav::handle).layer(axum::extract::DefaultBodyLimit::disable())
}

/// The bearer token of a request: `Authorization: Bearer ...`.
pub(crate) fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
}

/// The client's address (the TCP peer).
pub(crate) fn client_ip(parts: &Parts) -> std::net::IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
}

/// The signed-in user of a JSON API request (bearer token only: tokens do not belong in URLs).
pub struct AuthUser(pub User);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or_else(|| ApiError::from(crate::accounts::AuthError::InvalidToken))?;
        Ok(AuthUser(state.accounts.authenticate(token).await?))
    }
}

/// Refuses a body whose declared length is over the upload limit before reading any of it.
pub(crate) fn check_declared_length(parts: &Parts, limit: Option<u64>) -> Result<(), ApiError> {
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match (declared, limit) {
        (Some(n), Some(l)) if n > l => Err(crate::blob::BlobError::TooLarge { limit: l }.into()),
        _ => Ok(()),
    }
}

/// Reads a small body whole, refusing more than [`SMALL_BODY`] bytes.
pub(crate) async fn small_body(body: Body) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, SMALL_BODY).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("request bodies here are limited to {SMALL_BODY} bytes"),
        )
    })
}

/// On routes that stream request bodies, an error answer may leave part of the body unread,
/// and the server then closes the connection; saying so keeps clients from reusing it.
pub(crate) async fn close_after_error(mut resp: Response) -> Response {
    if resp.status().is_client_error() || resp.status().is_server_error() {
        resp.headers_mut()
            .insert(header::CONNECTION, axum::http::HeaderValue::from_static("close"));
    }
    resp
}

/// `Response` with a `Location`-free redirect to the web page (the seed's GET routes).
pub(crate) fn to_web_page() -> Response {
    (StatusCode::FOUND, [(header::LOCATION, "/")]).into_response()
}
