//! The embedded default's transfer worker: with object storage but no RabbitMQ, the
//! server drains the outbox itself.

use std::time::Duration;

use futures_util::StreamExt;

use super::Transfers;
use crate::meta::now_ms;

/// Jobs handled at once.
const CONCURRENCY: usize = 4;

/// Runs until `stop` fires.
pub async fn run(t: Transfers, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        let idle = match drain(&t).await {
            Ok(n) => n == 0,
            Err(e) => {
                tracing::warn!(error = %e, "transfer outbox unavailable");
                true
            }
        };
        if idle {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = stop.changed() => return,
            }
        } else if *stop.borrow() {
            return;
        }
    }
}

/// Handles every due job once; returns how many there were.
pub async fn drain(t: &Transfers) -> Result<usize, crate::meta::MetaError> {
    let jobs = t.meta.jobs_due(now_ms(), 64).await?;
    let n = jobs.len();
    futures_util::stream::iter(jobs)
        .for_each_concurrent(CONCURRENCY, |job| async move {
            if let Err(e) = t.run_job(job.id, &job.sha1).await {
                if let Err(m) = t.failed(&job, &e).await {
                    tracing::warn!(error = %m, "cannot record a failed transfer");
                }
            }
        })
        .await;
    Ok(n)
}
