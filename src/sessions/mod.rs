//! Resumable chunked-upload sessions: Redis in production, the metadata database on the
//! embedded default. The session says what is being uploaded and which chunks arrived;
//! the chunk bytes themselves live in the shared staging directory (see `chunked.rs`).

mod redis_store;
mod sql_store;

pub use redis_store::RedisSessions;
pub use sql_store::SqlSessions;

/// An upload in progress. `id` is 128 random bits, hex; it means nothing without the owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadSession {
    pub id: String,
    pub owner: i64,
    /// What the client says the whole file hashes to; checked at completion.
    pub sha1: String,
    pub size: i64,
    pub chunk_size: i64,
    pub chunk_count: i64,
    /// Where the file goes when complete: `<conflict>:<path>` (empty path: chosen at
    /// completion, as the seed's routes do).
    pub target: String,
    pub created_at: i64,
    pub expires_at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The session backend cannot be reached; the request can be retried later (503).
    #[error("the upload session store is unavailable: {0}")]
    Unavailable(String),
    #[error("upload session store: {0}")]
    Other(String),
}

impl From<sqlx::Error> for SessionError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                SessionError::Unavailable(e.to_string())
            }
            other => SessionError::Other(other.to_string()),
        }
    }
}

impl From<crate::meta::MetaError> for SessionError {
    fn from(e: crate::meta::MetaError) -> Self {
        match e {
            crate::meta::MetaError::Db(d) => d.into(),
            other => SessionError::Other(other.to_string()),
        }
    }
}

/// Where sessions are kept. Every method is atomic on its own; `record_part` is idempotent
/// and refreshes the session's expiry (activity keeps a session alive).
#[async_trait::async_trait]
pub trait SessionStore: Send + Sync {
    async fn create(&self, s: &UploadSession) -> Result<(), SessionError>;
    /// The session, if it exists and has not expired.
    async fn get(&self, id: &str) -> Result<Option<UploadSession>, SessionError>;
    /// The user's live session for this content and size, if any (to resume).
    async fn find(&self, owner: i64, sha1: &str, size: i64) -> Result<Option<UploadSession>, SessionError>;
    /// Marks chunk `index` (1-based) received. Returns false if the session is gone.
    async fn record_part(&self, id: &str, index: i64, ttl_ms: i64) -> Result<bool, SessionError>;
    /// Received chunk indices, ascending.
    async fn parts(&self, id: &str) -> Result<Vec<i64>, SessionError>;
    async fn delete(&self, id: &str) -> Result<(), SessionError>;
    /// Sessions alive now (for metrics).
    async fn count_open(&self, now: i64) -> Result<u64, SessionError>;
    /// Checks the backend answers (for readiness probes).
    async fn ping(&self) -> Result<(), SessionError>;
}
