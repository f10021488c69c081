//! Background housekeeping: deleting unreferenced content after its grace period, removing
//! what a crash left in the staging area, and purging expired tokens.

use std::time::Duration;

use crate::blob::s3::S3Store;
use crate::blob::{staging::older_than, LocalStore, Staging};
use crate::meta::{now_ms, MetaError, MetaStore};
use crate::uploads::Uploads;

/// Collects every content whose grace period is over. Returns how many were deleted.
pub async fn collect_garbage(
    meta: &MetaStore,
    objects: &LocalStore,
    s3: Option<&S3Store>,
    grace: Duration,
) -> Result<usize, MetaError> {
    let cutoff = now_ms() - grace.as_millis() as i64;
    let mut collected = 0;
    loop {
        let batch = meta.gc_candidates(cutoff, 100).await?;
        if batch.is_empty() {
            return Ok(collected);
        }
        let mut progressed = false;
        for sha1 in batch {
            // Local bytes go inside the transaction, under the row lock (with the staging
            // copy of content still in transfer); an object in S3 is deleted after the
            // commit: a crash in between leaves an unreferenced object, never a row
            // without its bytes.
            let remove = |c: &crate::meta::Content| objects.remove(&c.sha1);
            if let Some(c) = meta.gc_collect(&sha1, cutoff, &remove).await? {
                if let (true, Some(s3)) = (c.store == "s3", s3) {
                    let key = c.object_key.clone().unwrap_or_else(|| s3.key(&c.sha1));
                    if let Err(e) = s3.delete(&key).await {
                        tracing::warn!(key, error = %e, "could not delete a collected object");
                    }
                }
                collected += 1;
                progressed = true;
            }
        }
        if !progressed {
            return Ok(collected);
        }
    }
}

/// Removes stale temp files and objects that no content row points at (left by a crash
/// between linking the bytes and committing the row). Only files untouched for `min_age`
/// are considered, so uploads in flight on other gateways are left alone.
pub async fn sweep_staging(
    meta: &MetaStore,
    staging: &Staging,
    min_age: Duration,
) -> Result<(usize, usize), MetaError> {
    let temps = {
        let s = staging.clone();
        tokio::task::spawn_blocking(move || s.sweep_incoming(min_age))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??
    };
    let objects = staging.objects().clone();
    let candidates = tokio::task::spawn_blocking(move || stale_objects(&objects, min_age))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
    let mut orphans = 0;
    for sha1 in candidates {
        if !meta.content_exists(&sha1).await? {
            staging.objects().remove(&sha1)?;
            orphans += 1;
        }
    }
    Ok((temps, orphans))
}

/// SHA-1s of object files older than `min_age`.
fn stale_objects(objects: &crate::blob::LocalStore, min_age: Duration) -> std::io::Result<Vec<String>> {
    Ok(objects
        .files()?
        .into_iter()
        .filter(|(_, path)| older_than(path, min_age))
        .map(|(sha1, _)| sha1)
        .collect())
}

/// What one housekeeping pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub collected: usize,
    pub temp_files: usize,
    pub orphans: usize,
    pub tokens: u64,
    /// Data files of abandoned chunked uploads.
    pub upload_parts: usize,
}

/// What a housekeeping pass works on.
pub struct Housekeeping {
    pub meta: MetaStore,
    pub staging: Staging,
    pub uploads: std::sync::Arc<Uploads>,
    pub s3: Option<std::sync::Arc<S3Store>>,
    /// How long unreferenced content is kept.
    pub grace: Duration,
    /// When untouched staging files count as left over by a crash.
    pub stale_after: Duration,
}

impl Housekeeping {
    /// One pass: collection, the staging sweep and the purges (`filestore gc` runs this).
    pub async fn run_once(&self) -> Result<Pass, MetaError> {
        let collected = collect_garbage(&self.meta, self.staging.objects(), self.s3.as_deref(), self.grace).await?;
        let (temp_files, orphans) = sweep_staging(&self.meta, &self.staging, self.stale_after).await?;
        let tokens = self.meta.purge_expired_tokens(now_ms()).await?;
        self.meta.session_purge_expired(now_ms()).await?;
        // A session store that is down (Redis) only delays this part of the sweep.
        let upload_parts = match self.uploads.sweep(self.stale_after).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "cannot sweep chunked-upload data");
                0
            }
        };
        Ok(Pass {
            collected,
            temp_files,
            orphans,
            tokens,
            upload_parts,
        })
    }

    /// Runs a pass every `interval` until `stop` fires. The first pass comes after one
    /// interval, so a server's start is not slowed by walking the whole staging tree.
    pub async fn run(self, interval: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.changed() => return,
            }
            match self.run_once().await {
                Ok(p) if p == Pass::default() => {}
                Ok(p) => tracing::info!(
                    collected = p.collected,
                    temp_files = p.temp_files,
                    orphans = p.orphans,
                    upload_parts = p.upload_parts,
                    "housekeeping"
                ),
                Err(e) => tracing::warn!(error = %e, "housekeeping failed"),
            }
        }
    }
}
