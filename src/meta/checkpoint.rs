//! SQLite write-ahead-log checkpoints on a background task instead of inside a request.
//!
//! Left to itself, SQLite checkpoints in the COMMIT that takes the log past 1000 pages:
//! that request syncs the log, copies its pages into the database file and syncs that
//! (3-4 ms on this machine), with the write gate held, and the next commit syncs the new
//! log header. An instant upload writes about 10 pages, so one request in about 100 paid
//! it: the p99 of the instant-upload benchmark was that checkpoint, on whichever size
//! happened to cross the line (issue 3, "the 1 MiB side has the heavier tail").
//!
//! Here the pooled connections checkpoint only as a backstop, at [`BACKSTOP_PAGES`], and
//! [`MetaStore::run_checkpoints`] runs passive checkpoints on a connection of its own,
//! after every [`WRITES_PER_CHECKPOINT`] write transactions and [`IDLE_CHECKPOINT`] after
//! the last one. A passive checkpoint takes no lock that readers or writers wait for; a
//! request running beside one only shares the disk with it.
//!
//! The log starts over only when a write begins after a checkpoint that caught up with it,
//! and under a steady stream of writes a passive pass never quite does (writes land while
//! it syncs). So once the log holds [`RESTART_PAGES`], the task runs a second pass with the
//! write gate held: it has only the pages logged during the first to copy, and a write
//! arriving meanwhile waits for that short pass, not for a whole checkpoint. The backstop
//! is for processes without the task (command-line tools, tests) or a task that fell behind.
//!
//! Durability is unchanged: commits go to the log as before (`synchronous = NORMAL`), and
//! every checkpoint still syncs the log before copying and the database file after.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::{AnyConnection, Connection};
use tokio::sync::{watch, MutexGuard, Notify};

use super::{MetaError, MetaStore};

/// Pages in the log at which a committing connection checkpoints itself (SQLite's default
/// is 1000). Reached only without the background task, or when it falls behind.
pub(super) const BACKSTOP_PAGES: u32 = 30_000;
/// Log size at which the task makes sure it catches up, so that the log starts over
/// (about 48 MB of log; a passive pass under steady writes leaves more than
/// [`WRITES_PER_CHECKPOINT`] writes' worth).
const RESTART_PAGES: i64 = 12_000;
/// A checkpoint copies each page once however many commits logged it, and most pages a
/// small write changes are the same few (the directory's row, the ends of the indexes
/// that grow in order): the longer the interval, the fewer copies per write. At 100 writes
/// (SQLite's own cadence of about 1000 pages) the checkpoint was 15 % of the server's CPU
/// under 16 concurrent 4 KiB PUTs; at 1000, PUTs ran 6-15 % faster (docs/BENCHMARKS.md).
const WRITES_PER_CHECKPOINT: u64 = 1000;
/// Writes that did not reach [`WRITES_PER_CHECKPOINT`] are checkpointed this long after.
const IDLE_CHECKPOINT: Duration = Duration::from_secs(1);

/// Counts write transactions and wakes the checkpoint task (SQLite only).
#[derive(Debug, Default)]
pub(super) struct Pending {
    writes: AtomicU64,
    bell: Notify,
}

impl Pending {
    /// A write transaction ended (committed or not: counting a rollback costs nothing).
    pub(super) fn wrote(&self) {
        let n = self.writes.fetch_add(1, Ordering::Relaxed) + 1;
        if n % WRITES_PER_CHECKPOINT == 0 {
            // Stores a permit if the task is busy checkpointing, so no wake-up is lost.
            self.bell.notify_one();
        }
    }
}

/// What [`MetaStore::write_gate`] returns: on SQLite the lock that serialises writers,
/// and on release, one more write transaction counted for the checkpoint task.
pub(super) struct WriteGate<'a> {
    pub(super) lock: Option<MutexGuard<'a, super::tx::Writer>>,
    pub(super) pending: Option<&'a Pending>,
    /// Where `lock` came from, to take it again (tx.rs).
    pub(super) gate: Option<&'a std::sync::Arc<super::tx::Gate>>,
}

impl Drop for WriteGate<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.pending {
            p.wrote();
        }
    }
}

impl MetaStore {
    /// Checkpoints the SQLite log in the background until `stop` fires (returns at once on
    /// MySQL). The server runs this beside its other background tasks.
    pub async fn run_checkpoints(self, mut stop: watch::Receiver<bool>) {
        let Some(pending) = self.pending.clone() else {
            return;
        };
        let mut conn: Option<AnyConnection> = None;
        let mut done = pending.writes.load(Ordering::Relaxed);
        loop {
            tokio::select! {
                _ = pending.bell.notified() => {}
                _ = tokio::time::sleep(IDLE_CHECKPOINT) => {}
                _ = stop.changed() => break,
            }
            let writes = pending.writes.load(Ordering::Relaxed);
            if writes == done {
                continue;
            }
            match self.checkpoint(&mut conn).await {
                Ok(()) => done = writes,
                Err(e) => {
                    tracing::warn!(error = %e, "background WAL checkpoint failed");
                    conn = None;
                }
            }
        }
        if let Some(c) = conn {
            let _ = c.close().await;
        }
    }

    /// A passive checkpoint; and when the log has grown to [`RESTART_PAGES`], a second one
    /// with writers held off, which has only the pages logged during the first to copy.
    async fn checkpoint(&self, conn: &mut Option<AnyConnection>) -> Result<(), MetaError> {
        let c = match conn {
            Some(c) => c,
            // Out of the pool for good: a checkpoint never holds a connection that
            // requests wait for.
            None => conn.insert(self.pool.acquire().await?.detach()),
        };
        let (_, log, copied) = passive(c).await?;
        if log >= RESTART_PAGES && copied < log {
            let mut gate = self.write_gate().await;
            gate.pending = None; // not a write of its own
            let (busy, log, copied) = passive(c).await?;
            tracing::debug!(busy, log, copied, "WAL checkpoint caught up");
        }
        Ok(())
    }
}

/// `PRAGMA wal_checkpoint(PASSIVE)`: (busy, pages in the log, pages copied so far).
async fn passive(c: &mut AnyConnection) -> Result<(i64, i64, i64), MetaError> {
    Ok(sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(&mut *c)
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store(dir: &tempfile::TempDir) -> MetaStore {
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("meta.db").display());
        MetaStore::connect(&url, 4).await.unwrap()
    }

    /// Enough directories that SQLite's default (1000 pages) would have checkpointed in a commit.
    async fn write_a_lot(m: &MetaStore) {
        let u = m.create_user("ckpt", "x", false).await.unwrap();
        let root = m.root(u.id).await.unwrap();
        for i in 0..300 {
            m.mkdir(u.id, root.id, &format!("d{i}"), 0o755).await.unwrap();
        }
    }

    #[tokio::test]
    async fn commits_leave_the_log_to_the_background_task() {
        let dir = tempfile::tempdir().unwrap();
        let m = store(&dir).await;
        write_a_lot(&m).await;
        let pending = m.pending.clone().unwrap();
        assert!(
            pending.writes.load(Ordering::Relaxed) >= 301,
            "every write transaction counted"
        );
        let mut conn = Some(m.pool.acquire().await.unwrap().detach());
        let c = conn.as_mut().unwrap();
        // A passive checkpoint reports the log as the commits left it: over 1000 pages, so
        // no commit checkpointed (the log would have started over), and it copies it all.
        let (busy, log, copied) = passive(c).await.unwrap();
        assert_eq!(busy, 0);
        assert!(log > 1000 && log < i64::from(BACKSTOP_PAGES), "log of {log} pages");
        assert_eq!(copied, log);
        // After a checkpoint that caught up, the next write starts the log over.
        let u = m.user_by_name("ckpt").await.unwrap().unwrap();
        let root = m.root(u.id).await.unwrap();
        m.mkdir(u.id, root.id, "after", 0o755).await.unwrap();
        m.checkpoint(&mut conn).await.unwrap();
        let (_, log, copied) = passive(conn.as_mut().unwrap()).await.unwrap();
        assert!(log < 100, "log of {log} pages after the restart");
        assert_eq!(copied, log);
    }

    #[tokio::test]
    async fn the_task_stops_when_told() {
        let dir = tempfile::tempdir().unwrap();
        let m = store(&dir).await;
        write_a_lot(&m).await;
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(m.clone().run_checkpoints(rx));
        stop.send(true).unwrap();
        task.await.unwrap();
        m.close().await;
    }
}
