//! Errors of the port, and their one mapping to WebDAV.
//!
//! A port produces [`PortError`]; the adapter converts it once, with
//! [`PortError::fs_error`], into dav-server's [`FsError`], which dav-server turns into
//! the status of the request. Some statuses depend on the method (RFC 4918 wants 409 for
//! a missing parent but 404 for a missing target), so dav-server refines them: the
//! table on [`PortError`] gives both.

use dav_server::fs::FsError;
use http::StatusCode;

/// What a port operation can fail with. Only errors every implementation can produce
/// are modelled; everything else is [`PortError::Other`] and becomes a 500.
///
/// | variant | `FsError` | WebDAV status |
/// |---|---|---|
/// | `NotFound` | `NotFound` | 404; 409 when it is the parent of a PUT, MKCOL, COPY or MOVE target |
/// | `AlreadyExists` | `Exists` | 405 for MKCOL, 412 for PUT `If-None-Match: *` and `Overwrite: F` |
/// | `NotADirectory` | `Forbidden` | 403 |
/// | `IsADirectory` | `Forbidden` | 403 |
/// | `NotEmpty` | `Exists` | 409 for DELETE of a collection |
/// | `Forbidden` | `Forbidden` | 403 (deleting the root, moving a directory below itself) |
/// | `InvalidName` | `Forbidden` | 403 (`PathTooLong`, 414, for names over 255 bytes) |
/// | `TooLarge` | `TooLarge` | 413 |
/// | `InsufficientStorage` | `InsufficientStorage` | 507 |
/// | `PreconditionFailed` | `Exists` | 412 where dav-server checks preconditions |
/// | `Other` | `GeneralFailure` | 500 (logged with its source) |
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PortError {
    /// The entry (or a parent) does not exist.
    #[error("not found")]
    NotFound,
    /// The name is taken.
    #[error("already exists")]
    AlreadyExists,
    /// A directory was required.
    #[error("not a directory")]
    NotADirectory,
    /// A file was required.
    #[error("is a directory")]
    IsADirectory,
    /// A directory to delete or replace still has children.
    #[error("directory not empty")]
    NotEmpty,
    /// Not allowed, whoever asks: deleting the root, moving a directory into itself.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// A name that is empty, longer than 255 bytes, or holds `/` or NUL.
    #[error("invalid name")]
    InvalidName,
    /// The body is larger than the server accepts.
    #[error("too large")]
    TooLarge,
    /// The user's quota or the disk is full.
    #[error("insufficient storage")]
    InsufficientStorage,
    /// The entry changed under the request (optimistic concurrency in the core).
    #[error("precondition failed")]
    PreconditionFailed,
    /// Anything else (database down, I/O error...).
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl PortError {
    /// Wraps any error as [`PortError::Other`].
    pub fn other(e: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        PortError::Other(e.into())
    }

    /// The dav-server result code for this error (see the table on the type).
    pub fn fs_error(&self) -> FsError {
        match self {
            PortError::NotFound => FsError::NotFound,
            PortError::AlreadyExists | PortError::NotEmpty | PortError::PreconditionFailed => FsError::Exists,
            PortError::NotADirectory | PortError::IsADirectory | PortError::Forbidden(_) | PortError::InvalidName => {
                FsError::Forbidden
            }
            PortError::TooLarge => FsError::TooLarge,
            PortError::InsufficientStorage => FsError::InsufficientStorage,
            PortError::Other(_) => FsError::GeneralFailure,
        }
    }

    /// The HTTP status when no method-specific rule applies (PROPPATCH results).
    pub fn status(&self) -> StatusCode {
        match self {
            PortError::NotFound => StatusCode::NOT_FOUND,
            PortError::AlreadyExists | PortError::NotEmpty => StatusCode::CONFLICT,
            PortError::NotADirectory | PortError::IsADirectory | PortError::Forbidden(_) | PortError::InvalidName => {
                StatusCode::FORBIDDEN
            }
            PortError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            PortError::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
            PortError::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            PortError::Other(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Converts at the edge, logging what the client will not see.
impl From<PortError> for FsError {
    fn from(e: PortError) -> Self {
        match &e {
            PortError::Other(source) => tracing::error!(error = %source, "port failure"),
            _ => tracing::debug!(error = %e, "port refused"),
        }
        e.fs_error()
    }
}
