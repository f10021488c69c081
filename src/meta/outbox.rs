//! The transfer outbox: jobs that move content from the staging disk to object storage.

use super::store::retry_txn;
use super::tx::{args, Tx};
use super::{now_ms, MetaError, MetaStore};

/// A transfer job.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Job {
    pub id: i64,
    pub sha1: String,
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub next_attempt_at: i64,
}

macro_rules! job_cols {
    () => {
        "id, sha1, state, attempts, last_error, created_at, updated_at, next_attempt_at"
    };
}

/// Job states.
pub mod state {
    pub const PENDING: &str = "pending";
    pub const PUBLISHED: &str = "published";
    pub const DONE: &str = "done";
    pub const DEAD: &str = "dead";
}

/// What the worker found when it went to point a content row at its object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moved {
    /// The row now says the content is in S3.
    Moved,
    /// It already did (a duplicate delivery).
    Already,
    /// The content was deleted meanwhile: the object must go.
    Gone,
}

impl MetaStore {
    /// Queues a transfer of `sha1` unless one is already queued. Runs inside the
    /// transaction that commits the content (see `commit_file`).
    pub(super) async fn enqueue_transfer(c: &mut Tx<'_>, sha1: &str, now: i64) -> Result<(), MetaError> {
        let queued: Option<i64> = c
            .opt(
                "SELECT COUNT(*) FROM transfer_jobs WHERE sha1 = ? AND state IN ('pending', 'published')",
                args![sha1],
            )
            .await?;
        if queued.unwrap_or(0) == 0 {
            c.exec(
                "INSERT INTO transfer_jobs (sha1, state, attempts, created_at, updated_at, next_attempt_at) VALUES (?, 'pending', 0, ?, ?, ?)",
                args![sha1, now, now, now],
            )
            .await?;
        }
        Ok(())
    }

    pub async fn job(&self, id: i64) -> Result<Option<Job>, MetaError> {
        Ok(
            sqlx::query_as(concat!("SELECT ", job_cols!(), " FROM transfer_jobs WHERE id = ?"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Pending jobs whose time has come, oldest first.
    pub async fn jobs_due(&self, now: i64, limit: i64) -> Result<Vec<Job>, MetaError> {
        Ok(sqlx::query_as(concat!(
            "SELECT ",
            job_cols!(),
            " FROM transfer_jobs WHERE state = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?"
        ))
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Jobs in a state, newest first.
    pub async fn jobs_in(&self, state: &str, limit: i64) -> Result<Vec<Job>, MetaError> {
        Ok(sqlx::query_as(concat!(
            "SELECT ",
            job_cols!(),
            " FROM transfer_jobs WHERE state = ? ORDER BY id DESC LIMIT ?"
        ))
        .bind(state)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// How many jobs are in each state.
    pub async fn job_counts(&self) -> Result<Vec<(String, i64)>, MetaError> {
        Ok(
            sqlx::query_as("SELECT state, COUNT(*) FROM transfer_jobs GROUP BY state ORDER BY state")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Marks a pending job published (after the broker confirmed it).
    pub async fn job_published(&self, id: i64) -> Result<(), MetaError> {
        let _g = self.write_gate().await;
        sqlx::query("UPDATE transfer_jobs SET state = 'published', updated_at = ? WHERE id = ? AND state = 'pending'")
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records a failed attempt: back to pending after `retry_in_ms`, or dead after
    /// `max_attempts`. Returns the new state.
    pub async fn job_failed(
        &self,
        id: i64,
        error: &str,
        retry_in_ms: i64,
        max_attempts: i64,
    ) -> Result<String, MetaError> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        let error: String = error.chars().take(1000).collect();
        tx.exec(
            // state before attempts: MySQL evaluates SET clauses left to right with the new
            // values, SQLite with the old ones; this order reads the old count in both.
            "UPDATE transfer_jobs SET state = CASE WHEN attempts + 1 >= ? THEN 'dead' ELSE 'pending' END, \
             attempts = attempts + 1, last_error = ?, updated_at = ?, next_attempt_at = ? \
             WHERE id = ? AND state IN ('pending', 'published')",
            args![max_attempts, &error, now, now + retry_in_ms, id],
        )
        .await?;
        let state: Option<String> = tx
            .opt("SELECT state FROM transfer_jobs WHERE id = ?", args![id])
            .await?;
        tx.commit().await?;
        Ok(state.unwrap_or_default())
    }

    /// Marks a job done (nothing left to transfer: moved, duplicate, or content deleted).
    pub async fn job_done(&self, id: i64) -> Result<(), MetaError> {
        let _g = self.write_gate().await;
        sqlx::query("UPDATE transfer_jobs SET state = 'done', updated_at = ? WHERE id = ?")
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Points the content row at its object and marks the job done, in one transaction.
    pub async fn content_moved(&self, job: i64, sha1: &str, key: &str) -> Result<Moved, MetaError> {
        retry_txn!(self.try_content_moved(job, sha1, key))
    }

    async fn try_content_moved(&self, job: i64, sha1: &str, key: &str) -> Result<Moved, MetaError> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        let pointed = tx
            .exec(
                // An inline content's bytes leave its row with it.
                "UPDATE files SET store = 's3', object_key = ?, data = NULL WHERE sha1 = ? AND store IN ('local', 'inline')",
                args![key, sha1],
            )
            .await?;
        let outcome = if pointed == 1 {
            Moved::Moved
        } else {
            let store: Option<String> = tx.opt("SELECT store FROM files WHERE sha1 = ?", args![sha1]).await?;
            if store.as_deref() == Some("s3") {
                Moved::Already
            } else {
                Moved::Gone
            }
        };
        tx.exec(
            "UPDATE transfer_jobs SET state = 'done', updated_at = ? WHERE id = ?",
            args![now, job],
        )
        .await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// Revives dead jobs (all of them, or those of the given contents). Returns how many.
    pub async fn jobs_retry(&self, sha1s: &[String]) -> Result<u64, MetaError> {
        let _g = self.write_gate().await;
        let now = now_ms();
        if sha1s.is_empty() {
            let res = sqlx::query(
                "UPDATE transfer_jobs SET state = 'pending', attempts = 0, next_attempt_at = ?, updated_at = ? WHERE state = 'dead'",
            )
            .bind(now)
            .bind(now)
            .execute(&self.pool)
            .await?;
            return Ok(res.rows_affected());
        }
        let mut n = 0;
        for sha1 in sha1s {
            let res = sqlx::query(
                "UPDATE transfer_jobs SET state = 'pending', attempts = 0, next_attempt_at = ?, updated_at = ? WHERE state = 'dead' AND sha1 = ?",
            )
            .bind(now)
            .bind(now)
            .bind(sha1)
            .execute(&self.pool)
            .await?;
            n += res.rows_affected();
        }
        Ok(n)
    }
}
