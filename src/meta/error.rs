//! Errors of the metadata layer.

/// What a metadata operation can fail with. The tree variants are the rules the store
/// enforces inside its transactions; `Db` is everything the database itself reports.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    AlreadyExists,
    #[error("not a directory")]
    NotADirectory,
    #[error("is a directory")]
    IsADirectory,
    #[error("directory not empty")]
    NotEmpty,
    #[error("a directory cannot be moved or copied into itself")]
    Cycle,
    #[error("the root directory cannot be moved, copied or deleted")]
    Root,
    /// Same SHA-1, different SHA-256 or size: a crafted SHA-1 collision. Refused so that
    /// it cannot poison the deduplicated copy.
    #[error("content collides with stored content of the same SHA-1")]
    Collision,
    /// Same SHA-1 as stored content whose second hash is not known on one side yet: the
    /// caller computes what is missing (`Drive::commit` does) and commits again.
    #[error("content of this SHA-1 is stored and must be compared first")]
    Unverified,
    #[error("too many dead properties on one entry")]
    TooManyProps,
    #[error("storing content bytes: {0}")]
    Io(#[from] std::io::Error),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// A lookup on the calling thread (SQLite, `direct.rs`) failed.
    #[error("database: {0}")]
    Direct(#[from] super::direct::DirectError),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl MetaError {
    /// A deadlock or serialisation failure: the whole transaction can simply run again.
    pub(crate) fn is_retryable(&self) -> bool {
        match self {
            MetaError::Db(sqlx::Error::Database(e)) => {
                matches!(e.code().as_deref(), Some("40001") | Some("1213") | Some("1205"))
            }
            _ => false,
        }
    }
}

impl MetaError {
    /// `to` when this is a UNIQUE or PRIMARY KEY violation (from an sqlx transaction or
    /// the SQLite writer's, tx.rs), otherwise itself.
    pub(crate) fn unique_as(self, to: MetaError) -> MetaError {
        if super::tx::is_unique_violation(&self) {
            to
        } else {
            self
        }
    }
}

/// Maps a unique-key violation to `AlreadyExists`, anything else to `Db`.
pub(crate) fn unique(e: sqlx::Error) -> MetaError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => MetaError::AlreadyExists,
        _ => MetaError::Db(e),
    }
}
