//! Write transactions that run, on SQLite, on the calling thread.
//!
//! sqlx runs each SQLite connection on a thread of its own, so every statement of a
//! transaction is a message to that thread and a reply back. A small PUT's transaction is
//! about nine statements, each a few microseconds of SQLite work but a round trip of two
//! thread switches, all of it with the write gate held: measured with `bench/api_ops.sh`,
//! those hops were most of the time of a 4 KiB PUT, a create or an unlink, and since
//! SQLite has one writer, the gate's hold time bounds how many of them run per second.
//!
//! Here the gate owns one rusqlite connection to the same database file (the same bundled
//! SQLite library as sqlx, see `direct.rs`), and a transaction holding the gate runs its
//! statements on it directly: `BEGIN IMMEDIATE`, the statements and `COMMIT` each take
//! microseconds on the Tokio worker that asked. The connection has no busy timeout, so it
//! never blocks that worker: if another process holds the database's write lock (a
//! `filestore mount` or a command-line tool on the same file), `BEGIN IMMEDIATE` fails at
//! once and is tried again on a blocking thread that waits for the lock. Once it succeeds
//! this connection is the writer, and nothing it runs waits on a lock. (Beginning with
//! the write lock also spares such a transaction what a deferred one risks: reading a
//! snapshot that another process's commit makes stale, and failing at its first write.)
//!
//! Group commit. Most of what a small write transaction costs SQLite is its `COMMIT`:
//! every page it changed is appended to the log, about ten for a 4 KiB PUT, several of
//! them the same pages as the last transaction's (the directory's, the index roots'),
//! and the background checkpoint copies each of those frames again later. So when a
//! transaction commits while others are queued at the gate, it leaves its work in an open
//! batch: each transaction runs inside `SAVEPOINT tx` of one `BEGIN IMMEDIATE`, and the
//! first member to get the gate back commits the whole batch at once (at most
//! [`MAX_BATCH`] transactions). A transaction that finds nobody queued gives the
//! scheduler one turn before it takes the gate back, so that requests already ready to
//! run (other connections' uploads) join it: under 16 concurrent 4 KiB PUTs the mean
//! batch went from 1.5 to 2.9 transactions and the server's CPU per PUT down 12 %. Nobody
//! is told of a commit before it happened: a member's `commit` returns only once its
//! batch is committed, and if that fails, or SQLite rolls the batch back under one
//! member (an I/O error, a full disk), every member fails. A member that fails on its
//! own (a name taken, a collision) rolls back to its savepoint, and the rest of the
//! batch stays; its answer (a 404, a 409) may then rest on earlier members' writes that a
//! failing `COMMIT` would undo, a case as rare as that failure. A lone writer pays that
//! one turn of the scheduler, and holds SQLite's write lock meanwhile (another process
//! writing the same file waits that long), until [`LONE_STREAK`] batches in a row had
//! nobody else in them: from then on it commits at once, until a batch has company again
//! (a transaction that finds others queued still leaves its batch open for them). A
//! member whose request goes away while it waits hands the commit to a task; only if the
//! runtime is shutting down does the batch stay open until the next write (or roll back
//! with the process, nobody answered). A transaction that deletes bytes before it
//! commits (garbage collection) runs alone, so that another member's failure cannot roll
//! back the row of bytes already gone; and every use of the gate that is not a
//! transaction here (sqlx statements on the pool) commits an open batch first.
//!
//! The transaction bodies in `tree.rs` are written once against [`Tx`], which is either
//! such a transaction or an sqlx one (MySQL; an in-memory SQLite database, which has no
//! second way in; a file this connection could not open).

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::Connection;
use sqlx::any::AnyRow;
use sqlx::{Any, Row as _};
use tokio::sync::{watch, Mutex, MutexGuard};

use super::checkpoint::{WriteGate, BACKSTOP_PAGES};
use super::direct::DirectError;
use super::types::EntryRow;
use super::{Content, MetaError};

/// Prepared statements kept on the writer: every statement of the tree's transactions,
/// with room for the batched deletes' few shapes.
const CACHED_STATEMENTS: usize = 64;

/// A bound parameter, for either kind of transaction.
#[derive(Debug, Clone, Copy)]
pub(super) enum Arg<'a> {
    Int(i64),
    OptInt(Option<i64>),
    Text(&'a str),
    OptText(Option<&'a str>),
    Bytes(&'a [u8]),
    OptBytes(Option<&'a [u8]>),
}

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::Int(v)
    }
}
impl From<Option<i64>> for Arg<'_> {
    fn from(v: Option<i64>) -> Self {
        Arg::OptInt(v)
    }
}
impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Arg::Text(v)
    }
}
impl<'a> From<&'a String> for Arg<'a> {
    fn from(v: &'a String) -> Self {
        Arg::Text(v)
    }
}
impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Arg::OptText(v)
    }
}
impl<'a> From<&'a [u8]> for Arg<'a> {
    fn from(v: &'a [u8]) -> Self {
        Arg::Bytes(v)
    }
}

impl<'a> From<Option<&'a [u8]>> for Arg<'a> {
    fn from(v: Option<&'a [u8]>) -> Self {
        Arg::OptBytes(v)
    }
}

impl<'a> From<&'a Vec<u8>> for Arg<'a> {
    fn from(v: &'a Vec<u8>) -> Self {
        Arg::Bytes(v)
    }
}

impl rusqlite::ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match *self {
            Arg::Int(v) | Arg::OptInt(Some(v)) => ValueRef::Integer(v),
            Arg::Text(s) | Arg::OptText(Some(s)) => ValueRef::Text(s.as_bytes()),
            Arg::Bytes(b) | Arg::OptBytes(Some(b)) => ValueRef::Blob(b),
            Arg::OptInt(None) | Arg::OptText(None) | Arg::OptBytes(None) => ValueRef::Null,
        }))
    }
}

/// `args![a, b, c]`: the parameters of a statement, each converted with `Arg::from`.
macro_rules! args {
    ($($a:expr),* $(,)?) => {
        &[$($crate::meta::tx::Arg::from($a)),*][..]
    };
}
pub(super) use args;

/// A row type both kinds of transaction can read.
pub(super) trait FromDb: Sized {
    fn from_any(row: &AnyRow) -> Result<Self, sqlx::Error>;
    fn from_lite(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self>;
}

impl FromDb for EntryRow {
    fn from_any(row: &AnyRow) -> Result<Self, sqlx::Error> {
        sqlx::FromRow::from_row(row)
    }
    fn from_lite(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        super::direct::entry_row(row)
    }
}

impl FromDb for Content {
    fn from_any(row: &AnyRow) -> Result<Self, sqlx::Error> {
        sqlx::FromRow::from_row(row)
    }
    fn from_lite(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        super::direct::content_row(row)
    }
}

impl FromDb for i64 {
    fn from_any(row: &AnyRow) -> Result<Self, sqlx::Error> {
        row.try_get(0)
    }
    fn from_lite(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        row.get(0)
    }
}

impl FromDb for Option<i64> {
    fn from_any(row: &AnyRow) -> Result<Self, sqlx::Error> {
        row.try_get(0)
    }
    fn from_lite(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        row.get(0)
    }
}

impl FromDb for String {
    fn from_any(row: &AnyRow) -> Result<Self, sqlx::Error> {
        row.try_get(0)
    }
    fn from_lite(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        row.get(0)
    }
}

/// An entry's id and content (the rows a delete removes).
impl FromDb for (i64, Option<String>) {
    fn from_any(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok((row.try_get(0)?, row.try_get(1)?))
    }
    fn from_lite(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok((row.get(0)?, row.get(1)?))
    }
}

/// Write transactions committed together at most (one `COMMIT` for the whole batch).
const MAX_BATCH: usize = 64;

/// Consecutive batches of one transaction after which a writer with nobody queued stops
/// giving the scheduler a turn before it commits (see [`Tx::commit`]).
const LONE_STREAK: u32 = 8;

/// The write gate on SQLite: the lock that serialises writers, with the connection they
/// run on, and a count of the tasks waiting for it.
pub(super) struct Gate {
    writer: Mutex<Writer>,
    /// Tasks waiting in [`Gate::lock`]. A transaction that commits while others wait
    /// leaves its batch open for them (see [`Tx::commit`]).
    queued: AtomicUsize,
}

impl Gate {
    pub(super) fn new(path: Option<PathBuf>) -> Gate {
        Gate {
            writer: Mutex::new(Writer::new(path)),
            queued: AtomicUsize::new(0),
        }
    }

    /// The writer, counted among the waiters until it is ours. Tokio's mutex is fair:
    /// waiters get it in the order they asked.
    pub(super) async fn lock(&self) -> MutexGuard<'_, Writer> {
        struct Queued<'a>(&'a AtomicUsize);
        impl Drop for Queued<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.queued.fetch_add(1, Ordering::SeqCst);
        let _queued = Queued(&self.queued);
        self.writer.lock().await
    }

    /// Transactions waiting for the writer now.
    pub(super) fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }
}

/// How a batch ended, for every transaction in it: the error is a message, since one
/// failure is handed to many.
type Outcome = Option<Result<(), Arc<str>>>;

/// A batch of write transactions inside one `BEGIN IMMEDIATE`: each ran in a savepoint of
/// its own, and those that were released wait for the `COMMIT` of the whole.
struct Batch {
    /// Transactions released into it (their savepoints), waiting for its commit.
    released: usize,
    outcome: watch::Sender<Outcome>,
}

impl Drop for Batch {
    fn drop(&mut self) {
        // Every way a batch ends tells its transactions; this covers the ones that do not
        // say how (a connection dropped with it).
        self.outcome.send_if_modified(|o| {
            if o.is_none() {
                *o = Some(Err("the batch's connection was closed before its commit".into()));
                true
            } else {
                false
            }
        });
    }
}

/// What the write gate guards on SQLite: the connection write transactions run on, and
/// the batch open on it.
pub(super) struct Writer {
    /// The database file, or `None` when there is no second way into it (in memory).
    path: Option<PathBuf>,
    conn: Option<Connection>,
    /// Set when the connection could not be opened: transactions then all go to sqlx.
    off: bool,
    /// The open batch, if any: while it is, this connection holds the write lock.
    batch: Option<Batch>,
    /// Batches of a single transaction committed in a row: a lone writer (a mount, one
    /// request at a time) has nobody to wait for.
    lone_streak: u32,
    /// Batches committed, and the transactions they held (for the tests; the process-wide
    /// figures are metrics).
    #[cfg_attr(not(test), allow(dead_code))]
    committed: (u64, u64),
}

impl Writer {
    fn new(path: Option<PathBuf>) -> Writer {
        Writer {
            path,
            conn: None,
            off: false,
            batch: None,
            lone_streak: 0,
            committed: (0, 0),
        }
    }

    /// The connection, opened on first use; `None` when there is none to be had.
    fn conn(&mut self) -> Option<&mut Connection> {
        if self.conn.is_none() && !self.off {
            let path = self.path.as_deref()?;
            match open_writer(path) {
                Ok(c) => self.conn = Some(c),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "SQLite writes stay with the pool");
                    self.off = true;
                }
            }
        }
        self.conn.as_mut()
    }

    /// Commits the open batch, if any, and tells its transactions how that went.
    pub(super) fn flush(&mut self) -> Result<(), MetaError> {
        let Some(batch) = self.batch.take() else {
            return Ok(());
        };
        let conn = self.conn.as_mut().expect("a batch is open on a connection");
        let res = conn.execute_batch("COMMIT");
        if res.is_ok() {
            self.lone_streak = if batch.released <= 1 {
                self.lone_streak.saturating_add(1)
            } else {
                0
            };
            self.committed.0 += 1;
            self.committed.1 += batch.released as u64;
            let m = crate::metrics::global();
            crate::metrics::add(&m.sqlite_commits, 1);
            crate::metrics::add(&m.sqlite_committed_txs, batch.released as u64);
        } else {
            // A failed COMMIT leaves the transaction open.
            self.end_batch_transaction();
        }
        batch
            .outcome
            .send_replace(Some(res.as_ref().map(|_| ()).map_err(|e| e.to_string().into())));
        res.map_err(lite)
    }

    /// Opens a transaction's savepoint, in the open batch or a new one.
    async fn begin_member(&mut self) -> Result<(), MetaError> {
        if self.batch.is_none() {
            let conn = self.conn.as_mut().expect("an open connection");
            match conn.execute_batch("BEGIN IMMEDIATE") {
                Ok(()) => {}
                Err(e) if is_busy(&e) => wait_for_lock(self).await?,
                Err(e) => return Err(lite(e)),
            }
            self.batch = Some(Batch {
                released: 0,
                outcome: watch::Sender::new(None),
            });
        }
        let conn = self.conn.as_mut().expect("an open connection");
        if let Err(e) = conn.execute_batch("SAVEPOINT tx") {
            // No savepoint to roll back to: the batch goes only if SQLite ended it, or
            // if nothing was released into it.
            let gone = conn.is_autocommit();
            if gone || self.batch.as_ref().is_none_or(|b| b.released == 0) {
                self.fail_batch();
            }
            return Err(lite(e));
        }
        Ok(())
    }

    /// Rolls back whatever the connection has open. A connection that stays inside a
    /// transaction even so is closed (a new one is opened for the next transaction): left
    /// as it is, every later BEGIN would fail.
    fn end_batch_transaction(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if !conn.is_autocommit() {
            if let Err(e) = conn.execute_batch("ROLLBACK") {
                tracing::warn!(error = %e, "rollback failed");
            }
        }
        if !conn.is_autocommit() {
            tracing::warn!("the SQLite writer is stuck in a transaction; reopening it");
            self.conn = None;
        }
    }

    /// Ends the open batch without committing it: the transactions released into it fail.
    fn fail_batch(&mut self) {
        self.end_batch_transaction();
        if let Some(b) = self.batch.take() {
            if b.released > 0 {
                b.outcome.send_replace(Some(Err(
                    "rolled back with a failed transaction of the same batch".into()
                )));
            }
        }
    }

    /// Undoes the current transaction's savepoint; the rest of the batch stays. If SQLite
    /// already rolled back the whole batch (an I/O error, a full disk), the transactions
    /// released into it learn that it failed.
    fn abandon_member(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            self.batch = None;
            return;
        };
        let undone = conn.is_autocommit() || conn.execute_batch("ROLLBACK TO tx; RELEASE tx").is_err();
        let empty = self.batch.as_ref().is_none_or(|b| b.released == 0);
        if undone || empty {
            // Nothing of the batch can or need be kept: end it rather than hold the write
            // lock for nothing.
            self.fail_batch();
        }
    }
}

fn open_writer(path: &Path) -> rusqlite::Result<Connection> {
    use rusqlite::OpenFlags;
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags)?;
    // The same settings as the pool's connections (store.rs), except the busy timeout:
    // this connection must never wait (see the module comment). `synchronous` is per
    // connection, and FULL (the default) would sync the log at every commit.
    conn.busy_timeout(std::time::Duration::ZERO)?;
    conn.execute_batch(&format!(
        "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES};"
    ))?;
    conn.set_prepared_statement_cache_capacity(CACHED_STATEMENTS);
    Ok(conn)
}

/// A write transaction, begun by `MetaStore::write_tx`; it holds the write gate until it
/// ends. Dropped without `commit`, it rolls back.
pub(super) struct Tx<'a> {
    gate: WriteGate<'a>,
    inner: Inner,
}

enum Inner {
    Pool(sqlx::Transaction<'static, Any>),
    /// A savepoint in the writer's open batch; `open` until released. `alone`: committed
    /// at once, never left open for others to join.
    Direct {
        open: bool,
        alone: bool,
    },
    Ended,
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if let Inner::Direct { open: true, .. } = self.inner {
            // Also reached when the request's future is dropped midway (a client that
            // went away): nothing of the transaction stays.
            if let Some(w) = self.gate.lock.as_deref_mut() {
                w.abandon_member();
            }
        }
    }
}

/// A transaction waiting for its batch's commit without the gate. Dropped before the
/// batch ended (its request went away), it makes sure somebody commits the batch: the
/// transactions of others are in it, and it holds the database's write lock.
struct Waiting {
    gate: Option<Arc<Gate>>,
    outcome: watch::Receiver<Outcome>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let Some(gate) = self.gate.take() else {
            return;
        };
        if self.outcome.borrow().is_some() {
            return;
        }
        let outcome = self.outcome.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let mut writer = gate.lock().await;
                // Still open, the batch is the one open now: a batch ends only by
                // telling its outcome, and the next one opens after.
                if outcome.borrow().is_none() {
                    if let Err(e) = writer.flush() {
                        tracing::warn!(error = %e, "commit of an abandoned batch failed");
                    }
                }
            });
        }
    }
}

/// How a SQLite failure of the writer surfaces.
fn lite(e: rusqlite::Error) -> MetaError {
    MetaError::Direct(DirectError::Sqlite(e))
}

/// The SQL of a statement: a literal, or one built from fixed text and placeholders only
/// (every value is a bound parameter).
pub(super) type Sql = Cow<'static, str>;

fn pool_query<'q>(sql: Sql, args: &'q [Arg<'q>]) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments> {
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for a in args {
        q = match *a {
            Arg::Int(v) => q.bind(v),
            Arg::OptInt(v) => q.bind(v),
            Arg::Text(s) => q.bind(s),
            Arg::OptText(s) => q.bind(s),
            Arg::Bytes(b) => q.bind(b),
            Arg::OptBytes(b) => q.bind(b),
        };
    }
    q
}

/// Runs `f` on the prepared statement `sql` with `args` bound.
fn with_stmt<T>(
    conn: &Connection,
    sql: &str,
    args: &[Arg<'_>],
    f: impl FnOnce(&mut rusqlite::Statement<'_>) -> rusqlite::Result<T>,
) -> Result<T, MetaError> {
    let mut stmt = conn.prepare_cached(sql).map_err(lite)?;
    for (i, a) in args.iter().enumerate() {
        stmt.raw_bind_parameter(i + 1, a).map_err(lite)?;
    }
    f(&mut stmt).map_err(lite)
}

impl<'a> Tx<'a> {
    pub(super) fn pool(gate: WriteGate<'a>, tx: sqlx::Transaction<'static, Any>) -> Tx<'a> {
        Tx {
            gate,
            inner: Inner::Pool(tx),
        }
    }

    /// Begins a transaction on the gate's connection, in the batch open there or a new
    /// one; gives the gate back when there is no such connection and the caller should
    /// use the pool.
    pub(super) async fn begin_direct(
        mut gate: WriteGate<'a>,
        alone: bool,
    ) -> Result<Result<Tx<'a>, WriteGate<'a>>, MetaError> {
        let Some(writer) = gate.lock.as_deref_mut() else {
            return Ok(Err(gate));
        };
        if writer.conn().is_none() {
            return Ok(Err(gate));
        }
        writer.begin_member().await?;
        Ok(Ok(Tx {
            gate,
            inner: Inner::Direct { open: true, alone },
        }))
    }

    /// The writer's connection, for a direct transaction.
    fn conn<'b>(gate: &'b mut WriteGate<'a>) -> &'b mut Connection {
        let writer = gate.lock.as_deref_mut().expect("a direct transaction holds the gate");
        writer.conn.as_mut().expect("and its connection")
    }

    /// Runs a statement; returns the number of rows it changed.
    pub(super) async fn exec(&mut self, sql: impl Into<Sql>, args: &[Arg<'_>]) -> Result<u64, MetaError> {
        match &mut self.inner {
            Inner::Pool(tx) => Ok(pool_query(sql.into(), args).execute(&mut **tx).await?.rows_affected()),
            Inner::Direct { .. } | Inner::Ended => with_stmt(Self::conn(&mut self.gate), &sql.into(), args, |s| {
                s.raw_execute().map(|n| n as u64)
            }),
        }
    }

    /// Runs an INSERT; returns the id it generated.
    pub(super) async fn insert(&mut self, sql: impl Into<Sql>, args: &[Arg<'_>]) -> Result<i64, MetaError> {
        match &mut self.inner {
            Inner::Pool(tx) => {
                let res = pool_query(sql.into(), args).execute(&mut **tx).await?;
                super::store::last_id(tx, &res).await
            }
            Inner::Direct { .. } | Inner::Ended => {
                let conn = Self::conn(&mut self.gate);
                with_stmt(conn, &sql.into(), args, |s| s.raw_execute())?;
                Ok(conn.last_insert_rowid())
            }
        }
    }

    /// The first row of a query, if any.
    pub(super) async fn opt<T: FromDb>(
        &mut self,
        sql: impl Into<Sql>,
        args: &[Arg<'_>],
    ) -> Result<Option<T>, MetaError> {
        match &mut self.inner {
            Inner::Pool(tx) => match pool_query(sql.into(), args).fetch_optional(&mut **tx).await? {
                Some(row) => Ok(Some(T::from_any(&row)?)),
                None => Ok(None),
            },
            Inner::Direct { .. } | Inner::Ended => with_stmt(Self::conn(&mut self.gate), &sql.into(), args, |s| {
                let mut rows = s.raw_query();
                rows.next()?.map(T::from_lite).transpose()
            }),
        }
    }

    /// Every row of a query.
    pub(super) async fn all<T: FromDb>(&mut self, sql: impl Into<Sql>, args: &[Arg<'_>]) -> Result<Vec<T>, MetaError> {
        match &mut self.inner {
            Inner::Pool(tx) => {
                let rows = pool_query(sql.into(), args).fetch_all(&mut **tx).await?;
                Ok(rows.iter().map(T::from_any).collect::<Result<_, _>>()?)
            }
            Inner::Direct { .. } | Inner::Ended => with_stmt(Self::conn(&mut self.gate), &sql.into(), args, |s| {
                let mut rows = s.raw_query();
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    out.push(T::from_lite(row)?);
                }
                Ok(out)
            }),
        }
    }

    /// Commits. On the SQLite writer the transaction's savepoint is released into its
    /// batch and the gate let go (after one turn of the scheduler when nobody is queued),
    /// so that others run inside the same batch; the first member to get the gate back
    /// commits all of them with one `COMMIT` (group commit). Each commit returns once its
    /// batch is committed, so that what a caller does after it (answering a client)
    /// follows the commit; a batch that fails fails for every transaction in it.
    pub(super) async fn commit(self) -> Result<(), MetaError> {
        self.commit_marked(None).await
    }

    /// [`Self::commit`], aborting the process at failpoint `mark` (crash tests,
    /// `util::failpoint`) while the transaction waits in an open batch: released into it,
    /// the batch not committed.
    pub(super) async fn commit_marked(mut self, mark: Option<&str>) -> Result<(), MetaError> {
        let alone = match std::mem::replace(&mut self.inner, Inner::Ended) {
            Inner::Pool(tx) => return Ok(tx.commit().await?),
            Inner::Direct { alone, .. } => alone,
            Inner::Ended => unreachable!("a transaction ends once"),
        };
        if let Err(e) = Self::conn(&mut self.gate).execute_batch("RELEASE tx") {
            self.inner = Inner::Direct { open: true, alone };
            return Err(lite(e));
        }
        let gate = self.gate.gate.expect("a direct transaction holds the gate");
        let writer = self
            .gate
            .lock
            .as_deref_mut()
            .expect("a direct transaction holds the gate");
        let lone = writer.lone_streak >= LONE_STREAK;
        let batch = writer.batch.as_mut().expect("a savepoint was released into a batch");
        batch.released += 1;
        if alone || batch.released >= MAX_BATCH {
            return writer.flush();
        }
        // The turn costs a lone writer about 0.05 ms of CPU here (it wakes the idle worker):
        // given only while recent batches have had company.
        let nobody_queued = gate.queued() == 0 && !lone;
        let outcome = batch.outcome.subscribe();
        self.gate.lock = None;
        if let Some(mark) = mark {
            crate::util::failpoint(mark);
        }
        let mut waiting = Waiting {
            gate: Some(gate.clone()),
            outcome,
        };
        if nobody_queued {
            // Requests that are ready to run (other connections' PUTs, whose bytes have
            // arrived) get one turn of the scheduler to reach the gate and join the
            // batch. Not a timer: alone, this task runs again at once.
            tokio::task::yield_now().await;
        }
        // Whichever comes first: the batch's outcome (another member, or a pool write's
        // `write_gate`, committed it), or the gate.
        let mut outcome = waiting.outcome.clone();
        let writer = tokio::select! {
            biased;
            _ = outcome.wait_for(|o| o.is_some()) => None,
            w = gate.lock() => Some(w),
        };
        waiting.gate = None;
        let ended = waiting.outcome.borrow().clone();
        match (ended, writer) {
            (Some(res), _) => res.map_err(|m| MetaError::Direct(DirectError::Commit(m))),
            // Still open: no member got the gate back before this one, so the batch is
            // this one's to commit.
            (None, Some(mut writer)) => writer.flush(),
            (None, None) => unreachable!("the outcome was waited for"),
        }
    }
}

/// How long a write waits for another process's write transaction, as the pool's
/// connections do (store.rs).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// `BEGIN IMMEDIATE` on the writer while another process holds the write lock: SQLite's
/// busy handler waits for it, on a blocking thread with the connection moved there. If
/// the caller goes away meanwhile, the connection is dropped with whatever it began
/// (closing it rolls back) and the next transaction opens a new one.
async fn wait_for_lock(writer: &mut Writer) -> Result<(), MetaError> {
    let conn = writer.conn.take().expect("an open connection");
    let (conn, begun) = tokio::task::spawn_blocking(move || {
        let begun = conn
            .busy_timeout(LOCK_WAIT)
            .and_then(|()| conn.execute_batch("BEGIN IMMEDIATE"))
            .and_then(|()| conn.busy_timeout(std::time::Duration::ZERO));
        (conn, begun)
    })
    .await
    .map_err(|e| MetaError::Io(std::io::Error::other(e.to_string())))?;
    match begun {
        Ok(()) => {
            writer.conn = Some(conn);
            Ok(())
        }
        // The connection may be left with the long timeout or inside the transaction:
        // dropped, and a fresh one opened next time.
        Err(e) => Err(lite(e)),
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy) | Some(rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Whether a failure is a UNIQUE or PRIMARY KEY violation, from either kind of transaction.
pub(super) fn is_unique_violation(e: &MetaError) -> bool {
    match e {
        MetaError::Db(sqlx::Error::Database(d)) => d.is_unique_violation(),
        MetaError::Direct(DirectError::Sqlite(rusqlite::Error::SqliteFailure(f, _))) => {
            const SQLITE_CONSTRAINT_PRIMARYKEY: i32 = 1555;
            const SQLITE_CONSTRAINT_UNIQUE: i32 = 2067;
            matches!(f.extended_code, SQLITE_CONSTRAINT_PRIMARYKEY | SQLITE_CONSTRAINT_UNIQUE)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::meta::MetaStore;

    async fn store(dir: &tempfile::TempDir) -> (MetaStore, i64, i64) {
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("meta.db").display());
        let m = MetaStore::connect(&url, 4).await.unwrap();
        let u = m.create_user("batch", "x", false).await.unwrap();
        let root = m.root(u.id).await.unwrap();
        (m, u.id, root.id)
    }

    /// Yields until `cond` holds (the spawned tasks run meanwhile on this test's thread).
    async fn until(what: &str, mut cond: impl FnMut() -> bool) {
        let wait = async {
            while !cond() {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .unwrap_or_else(|_| panic!("never happened: {what}"));
    }

    fn gate(m: &MetaStore) -> Arc<Gate> {
        m.gate.clone().expect("SQLite has a write gate")
    }

    /// Whether a directory is there for a reader on another connection: committed.
    async fn committed(m: &MetaStore, owner: i64, root: i64, name: &str) -> bool {
        let n: Option<i64> = sqlx::query_scalar("SELECT id FROM entries WHERE owner = ? AND parent = ? AND name = ?")
            .bind(owner)
            .bind(root)
            .bind(name.as_bytes())
            .fetch_optional(&m.pool)
            .await
            .unwrap();
        n.is_some()
    }

    #[tokio::test]
    async fn transactions_waiting_for_the_gate_commit_together() {
        let dir = tempfile::tempdir().unwrap();
        let (m, owner, root) = store(&dir).await;
        let g = gate(&m);
        let before = g.writer.lock().await.committed;
        // Thirty-two writers queue behind a held gate, as requests do behind a busy one.
        let hold = m.enter_gate().await;
        let mut tasks = Vec::new();
        for i in 0..32 {
            let m = m.clone();
            tasks.push(tokio::spawn(async move {
                let name = format!("d{i}");
                m.mkdir(owner, root, &name, 0o755).await.unwrap();
                // Committed before the call returned, not merely released into a batch.
                assert!(committed(&m, owner, root, &name).await, "{name} committed on return");
            }));
        }
        until("32 writers queued", || g.queued() == 32).await;
        drop(hold);
        for t in tasks {
            t.await.unwrap();
        }
        let after = g.writer.lock().await.committed;
        let (batches, txs) = (after.0 - before.0, after.1 - before.1);
        assert_eq!(txs, 32, "every transaction committed once");
        assert!(batches < 8, "32 queued transactions took {batches} commits");
        assert_eq!(m.list(owner, root, "", 100).await.unwrap().len(), 32);
    }

    #[tokio::test]
    async fn a_failed_transaction_leaves_the_rest_of_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (m, owner, root) = store(&dir).await;
        m.mkdir(owner, root, "taken", 0o755).await.unwrap();
        let g = gate(&m);
        let hold = m.enter_gate().await;
        let mut tasks = Vec::new();
        for name in ["a", "taken", "b", "c"] {
            let m = m.clone();
            tasks.push(tokio::spawn(async move { m.mkdir(owner, root, name, 0o755).await }));
            let n = tasks.len();
            until("writer queued", || g.queued() == n).await;
        }
        drop(hold);
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        assert!(results[0].is_ok() && results[2].is_ok() && results[3].is_ok());
        assert!(matches!(results[1], Err(MetaError::AlreadyExists)), "{:?}", results[1]);
        for name in ["a", "b", "c", "taken"] {
            assert!(committed(&m, owner, root, name).await, "{name}");
        }
        assert_eq!(m.list(owner, root, "", 100).await.unwrap().len(), 4);
    }

    /// Writers that are ready to run together, with nobody queued at the gate, still
    /// share a commit: each gives the others a turn before committing.
    #[tokio::test]
    async fn ready_writers_join_a_lone_writers_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (m, owner, root) = store(&dir).await;
        let g = gate(&m);
        let before = g.writer.lock().await.committed;
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let m = m.clone();
                tokio::spawn(async move { m.mkdir(owner, root, &format!("r{i}"), 0o755).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let after = g.writer.lock().await.committed;
        assert_eq!(after.1 - before.1, 8);
        assert!(
            after.0 - before.0 < 4,
            "8 ready writers took {} commits",
            after.0 - before.0
        );
        for i in 0..8 {
            assert!(committed(&m, owner, root, &format!("r{i}")).await);
        }
    }

    /// A writer alone for a while stops giving the scheduler a turn; company brings it back.
    #[tokio::test]
    async fn a_lone_writer_stops_waiting_for_company() {
        let dir = tempfile::tempdir().unwrap();
        let (m, owner, root) = store(&dir).await;
        let g = gate(&m);
        for i in 0..LONE_STREAK {
            m.mkdir(owner, root, &format!("s{i}"), 0o755).await.unwrap();
        }
        assert!(g.writer.lock().await.lone_streak >= LONE_STREAK);
        let hold = m.enter_gate().await;
        let tasks: Vec<_> = (0..4)
            .map(|i| {
                let m = m.clone();
                tokio::spawn(async move { m.mkdir(owner, root, &format!("q{i}"), 0o755).await })
            })
            .collect();
        until("4 writers queued", || g.queued() == 4).await;
        drop(hold);
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(g.writer.lock().await.lone_streak, 0, "a batch with company resets it");
    }

    /// A transaction whose request goes away while it waits for its batch's commit still
    /// gets the batch committed: here nobody else is left to do it.
    #[tokio::test]
    async fn an_abandoned_wait_still_commits_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (m, owner, root) = store(&dir).await;
        let g = gate(&m);
        let hold = m.enter_gate().await;
        let writer = {
            let m = m.clone();
            tokio::spawn(async move { m.mkdir(owner, root, "a", 0o755).await })
        };
        until("writer queued", || g.queued() == 1).await;
        // Someone else queues for the gate, so the writer leaves its batch open for them.
        let (got_tx, got_rx) = tokio::sync::oneshot::channel();
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let other = {
            let m = m.clone();
            tokio::spawn(async move {
                let held = m.enter_gate().await;
                got_tx.send(()).unwrap();
                go_rx.await.unwrap();
                drop(held);
            })
        };
        until("two queued", || g.queued() == 2).await;
        drop(hold);
        got_rx.await.unwrap();
        // The writer released its savepoint and waits for the gate again.
        until("writer waits for its commit", || g.queued() == 1).await;
        assert!(!committed(&m, owner, root, "a").await, "not committed yet");
        writer.abort();
        assert!(writer.await.unwrap_err().is_cancelled());
        go_tx.send(()).unwrap();
        other.await.unwrap();
        let seen = async {
            while !committed(&m, owner, root, "a").await {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), seen)
            .await
            .expect("the abandoned batch was committed");
    }
}
