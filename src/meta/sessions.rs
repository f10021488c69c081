//! Upload sessions of the embedded default, in the metadata database.

use super::tx::args;
use super::{Dialect, MetaError, MetaStore};
use crate::sessions::UploadSession;

#[derive(sqlx::FromRow)]
struct SessionRow {
    id: String,
    owner: i64,
    sha1: String,
    size: i64,
    chunk_size: i64,
    chunk_count: i64,
    target: String,
    created_at: i64,
    expires_at: i64,
}

impl From<SessionRow> for UploadSession {
    fn from(r: SessionRow) -> Self {
        UploadSession {
            id: r.id,
            owner: r.owner,
            sha1: r.sha1,
            size: r.size,
            chunk_size: r.chunk_size,
            chunk_count: r.chunk_count,
            target: r.target,
            created_at: r.created_at,
            expires_at: r.expires_at,
        }
    }
}

macro_rules! session_cols {
    () => {
        "id, owner, sha1, size, chunk_size, chunk_count, target, created_at, expires_at"
    };
}

impl MetaStore {
    pub async fn session_create(&self, s: &UploadSession) -> Result<(), MetaError> {
        let mut tx = self.write_tx().await?;
        tx.exec(
            concat!(
                "INSERT INTO upload_sessions (",
                session_cols!(),
                ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ),
            args![
                &s.id,
                s.owner,
                &s.sha1,
                s.size,
                s.chunk_size,
                s.chunk_count,
                &s.target,
                s.created_at,
                s.expires_at
            ],
        )
        .await?;
        tx.commit().await
    }

    pub async fn session_get(&self, id: &str, now: i64) -> Result<Option<UploadSession>, MetaError> {
        let row: Option<SessionRow> = sqlx::query_as(concat!(
            "SELECT ",
            session_cols!(),
            " FROM upload_sessions WHERE id = ? AND expires_at > ?"
        ))
        .bind(id)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(Into::into))
    }

    pub async fn session_find(
        &self,
        owner: i64,
        sha1: &str,
        size: i64,
        now: i64,
    ) -> Result<Option<UploadSession>, MetaError> {
        let row: Option<SessionRow> = sqlx::query_as(concat!(
            "SELECT ",
            session_cols!(),
            " FROM upload_sessions WHERE owner = ? AND sha1 = ? AND size = ? AND expires_at > ? ORDER BY created_at DESC LIMIT 1"
        ))
        .bind(owner)
        .bind(sha1)
        .bind(size)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(Into::into))
    }

    /// Records a part and extends the session, unless it is gone or expired.
    pub async fn session_record_part(&self, id: &str, idx: i64, now: i64, ttl_ms: i64) -> Result<bool, MetaError> {
        let mut tx = self.write_tx().await?;
        let extended = tx
            .exec(
                "UPDATE upload_sessions SET expires_at = ? WHERE id = ? AND expires_at > ?",
                args![now + ttl_ms, id, now],
            )
            .await?;
        if extended == 0 {
            return Ok(false);
        }
        let sql = match self.dialect {
            Dialect::Sqlite => "INSERT INTO upload_parts (session_id, idx) VALUES (?, ?) ON CONFLICT DO NOTHING",
            Dialect::MySql => "INSERT IGNORE INTO upload_parts (session_id, idx) VALUES (?, ?)",
        };
        tx.exec(sql, args![id, idx]).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn session_parts(&self, id: &str) -> Result<Vec<i64>, MetaError> {
        Ok(
            sqlx::query_scalar("SELECT idx FROM upload_parts WHERE session_id = ? ORDER BY idx")
                .bind(id)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    pub async fn session_delete(&self, id: &str) -> Result<(), MetaError> {
        let mut tx = self.write_tx().await?;
        tx.exec("DELETE FROM upload_parts WHERE session_id = ?", args![id])
            .await?;
        tx.exec("DELETE FROM upload_sessions WHERE id = ?", args![id]).await?;
        tx.commit().await
    }

    pub async fn session_count(&self, now: i64) -> Result<u64, MetaError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM upload_sessions WHERE expires_at > ?")
            .bind(now)
            .fetch_one(&self.pool)
            .await?;
        Ok(n.max(0) as u64)
    }

    /// Deletes expired sessions; returns how many.
    pub async fn session_purge_expired(&self, now: i64) -> Result<u64, MetaError> {
        let mut tx = self.write_tx().await?;
        tx.exec(
            "DELETE FROM upload_parts WHERE session_id IN (SELECT id FROM upload_sessions WHERE expires_at <= ?)",
            args![now],
        )
        .await?;
        let purged = tx
            .exec("DELETE FROM upload_sessions WHERE expires_at <= ?", args![now])
            .await?;
        tx.commit().await?;
        Ok(purged)
    }
}
