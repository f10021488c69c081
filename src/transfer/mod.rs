//! Moving content from the staging disk to object storage.
//!
//! New content gets a job in the `transfer_jobs` outbox in the same transaction as its
//! row. With RabbitMQ configured, a relay publishes due jobs (persistent messages,
//! publisher confirms; a job is marked published only after the confirm) and
//! `filestore transfer` workers consume them with manual acks; without RabbitMQ, an
//! in-process worker drains the outbox directly. Either way one job is handled by
//! [`Transfers::run_job`]:
//!
//! 1. the content row is gone (deleted while queued): done, nothing uploaded;
//! 2. the row already says `s3` (a duplicate delivery): done, the staging copy removed;
//! 3. otherwise the staging copy (or, for `inline` content, the bytes in its row) is
//!    uploaded (multipart for large content) and verified, the row is pointed at the object
//!    (an inline row's bytes cleared) and the job marked done in one transaction, then the
//!    staging copy is removed; if the row vanished meanwhile the object is deleted.
//!
//! A worker killed at any step leaves a state the next delivery completes: before the
//! transaction the upload is redone (same key, same bytes); after it, step 2 applies.
//! Failures are recorded on the job (attempts, last error) and retried with exponential
//! backoff by republishing; after `queue.max_attempts` the job is dead-lettered: listed by
//! `filestore transfer status`, revived by `filestore transfer retry`.

pub mod amqp;
pub mod inprocess;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::blob::s3::S3Store;
use crate::blob::{BlobError, LocalStore};
use crate::config::QueueConfig;
use crate::meta::{Job, MetaError, MetaStore, Moved, STORE_INLINE, STORE_S3};

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("metadata: {0}")]
    Meta(#[from] MetaError),
    #[error("object storage: {0}")]
    Blob(#[from] BlobError),
    #[error("message broker: {0}")]
    Broker(String),
    #[error("content {0} has a row but no bytes in staging")]
    MissingBytes(String),
}

impl TransferError {
    /// Whether trying again later may help (network, broker, database, S3 5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            TransferError::Blob(b) => b.is_transient(),
            TransferError::MissingBytes(_) => false,
            _ => true,
        }
    }
}

/// The message body: the seed's field names (`FileHash`, `CurLocation`, `DestLocation`,
/// `DestStoreType`) plus the outbox job it carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TransferMessage {
    pub file_hash: String,
    pub cur_location: String,
    pub dest_location: String,
    /// The seed's store types: 2 = Ceph, 3 = OSS (we write 2 for path-style S3, 3 otherwise).
    pub dest_store_type: i32,
    pub job_id: i64,
}

/// What every worker and relay shares.
#[derive(Clone)]
pub struct Transfers {
    pub meta: MetaStore,
    pub local: LocalStore,
    pub s3: Arc<S3Store>,
    pub queue: QueueConfig,
    pub store_type: i32,
}

impl Transfers {
    pub fn message(&self, job: &Job) -> TransferMessage {
        TransferMessage {
            file_hash: job.sha1.clone(),
            cur_location: self.local.path(&job.sha1).display().to_string(),
            dest_location: self.s3.key(&job.sha1),
            dest_store_type: self.store_type,
            job_id: job.id,
        }
    }

    /// Backoff before attempt `attempts + 1`.
    pub fn backoff(&self, attempts: i64) -> Duration {
        let base = self.queue.retry_base_secs.max(1);
        Duration::from_secs(base.saturating_mul(1 << attempts.clamp(0, 10) as u32)).min(Duration::from_secs(3600))
    }

    /// Handles one job (see the module docs).
    pub async fn run_job(&self, job_id: i64, sha1: &str) -> Result<(), TransferError> {
        if !crate::blob::is_sha1_hex(sha1) {
            return Err(TransferError::MissingBytes(sha1.to_string()));
        }
        let Some(content) = self.meta.content(sha1).await? else {
            tracing::info!(sha1, "content deleted before its transfer; nothing to do");
            self.meta.job_done(job_id).await?;
            return Ok(());
        };
        if content.store == STORE_S3 {
            self.meta.job_done(job_id).await?;
            self.local.remove(sha1).map_err(BlobError::from)?;
            return Ok(());
        }
        let key = self.s3.key(sha1);
        if let Some(data) = content.data.filter(|_| content.store == STORE_INLINE) {
            // Small content moves from its row; the transaction below clears the row's copy.
            self.s3.put_bytes(&key, data.into()).await?;
            return self.moved(job_id, sha1, key).await;
        }
        let path = self.local.path(sha1);
        if !path.is_file() {
            // Deleted and collected between our read of the row and now, or lost.
            if self.meta.content(sha1).await?.is_none() {
                self.meta.job_done(job_id).await?;
                return Ok(());
            }
            return Err(TransferError::MissingBytes(sha1.to_string()));
        }
        self.s3.put_file(&key, &path, content.size as u64).await?;
        self.moved(job_id, sha1, key).await
    }

    /// Points the row at the object just uploaded to `key` and drops the staging copy (the
    /// last steps of `run_job`).
    async fn moved(&self, job_id: i64, sha1: &str, key: String) -> Result<(), TransferError> {
        crate::util::failpoint("transfer.uploaded");
        match self.meta.content_moved(job_id, sha1, &key).await? {
            Moved::Moved | Moved::Already => {
                crate::util::failpoint("transfer.moved");
                self.local.remove(sha1).map_err(BlobError::from)?;
                tracing::debug!(sha1, key, "content transferred");
            }
            Moved::Gone => {
                // Collected while we uploaded: the object must not outlive the row.
                self.s3.delete(&key).await?;
            }
        }
        Ok(())
    }

    /// Records a failed attempt; returns true if the job is now dead.
    pub async fn failed(&self, job: &Job, e: &TransferError) -> Result<bool, MetaError> {
        let max = if e.is_transient() {
            i64::from(self.queue.max_attempts.max(1))
        } else {
            0
        };
        let retry_in = self.backoff(job.attempts).as_millis() as i64;
        let state = self.meta.job_failed(job.id, &e.to_string(), retry_in, max).await?;
        let dead = state == crate::meta::job_state::DEAD;
        if dead {
            tracing::error!(sha1 = %job.sha1, error = %e, "transfer dead-lettered");
        } else {
            tracing::warn!(sha1 = %job.sha1, error = %e, attempts = job.attempts + 1, "transfer failed; will retry");
        }
        Ok(dead)
    }
}
