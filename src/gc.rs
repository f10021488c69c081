//! Background housekeeping: deleting unreferenced content after its grace period, removing
//! what a crash left in the staging area, and purging expired tokens.

use std::path::Path;
use std::time::Duration;

use crate::blob::{staging::older_than, LocalStore, Staging};
use crate::meta::{now_ms, MetaError, MetaStore};
use crate::uploads::Uploads;

/// Collects every content whose grace period is over. Returns how many were deleted.
pub async fn collect_garbage(meta: &MetaStore, objects: &LocalStore, grace: Duration) -> Result<usize, MetaError> {
    let cutoff = now_ms() - grace.as_millis() as i64;
    let mut collected = 0;
    loop {
        let batch = meta.gc_candidates(cutoff, 100).await?;
        if batch.is_empty() {
            return Ok(collected);
        }
        let mut progressed = false;
        for sha1 in batch {
            let remove = |c: &crate::meta::Content| {
                if c.store == "local" {
                    objects.remove(&c.sha1)
                } else {
                    Ok(())
                }
            };
            if meta.gc_collect(&sha1, cutoff, &remove).await? {
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
    let root = staging.objects().root().to_path_buf();
    let candidates = tokio::task::spawn_blocking(move || stale_objects(&root, min_age))
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
fn stale_objects(root: &Path, min_age: Duration) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    for a in std::fs::read_dir(root)? {
        for b in std::fs::read_dir(a?.path())? {
            for f in std::fs::read_dir(b?.path())? {
                let f = f?;
                let name = f.file_name().to_string_lossy().into_owned();
                if crate::blob::is_sha1_hex(&name) && older_than(&f.path(), min_age) {
                    out.push(name);
                }
            }
        }
    }
    Ok(out)
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

/// One pass: collection, the staging sweep and the token purge (`filestore gc` runs this).
pub async fn run_once(
    meta: &MetaStore,
    staging: &Staging,
    uploads: &Uploads,
    grace: Duration,
    stale_after: Duration,
) -> Result<Pass, MetaError> {
    let collected = collect_garbage(meta, staging.objects(), grace).await?;
    let (temp_files, orphans) = sweep_staging(meta, staging, stale_after).await?;
    let tokens = meta.purge_expired_tokens(now_ms()).await?;
    meta.session_purge_expired(now_ms()).await?;
    // A session store that is down (Redis) only delays this part of the sweep.
    let upload_parts = match uploads.sweep(stale_after).await {
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
pub async fn run(
    meta: MetaStore,
    staging: Staging,
    uploads: std::sync::Arc<Uploads>,
    grace: Duration,
    stale_after: Duration,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
        match run_once(&meta, &staging, &uploads, grace, stale_after).await {
            Ok(p) if p == Pass::default() => {}
            Ok(p) => tracing::info!(
                collected = p.collected,
                temp_files = p.temp_files,
                orphans = p.orphans,
                "housekeeping"
            ),
            Err(e) => tracing::warn!(error = %e, "housekeeping failed"),
        }
    }
}
