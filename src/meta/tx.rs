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
//! The transaction bodies in `tree.rs` are written once against [`Tx`], which is either
//! such a transaction or an sqlx one (MySQL; an in-memory SQLite database, which has no
//! second way in; a file this connection could not open).

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::Connection;
use sqlx::any::AnyRow;
use sqlx::{Any, Row as _};

use super::checkpoint::BACKSTOP_PAGES;
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

/// What the write gate guards on SQLite: the connection write transactions run on.
pub(super) struct Writer {
    /// The database file, or `None` when there is no second way into it (in memory).
    path: Option<PathBuf>,
    conn: Option<Connection>,
    /// Set when the connection could not be opened: transactions then all go to sqlx.
    off: bool,
}

impl Writer {
    pub(super) fn new(path: Option<PathBuf>) -> Writer {
        Writer {
            path,
            conn: None,
            off: false,
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

/// A write transaction, begun by `MetaStore::begin_write`. Dropped without `commit`, it
/// rolls back.
pub(super) struct Tx<'g> {
    inner: Inner<'g>,
}

enum Inner<'g> {
    Pool(sqlx::Transaction<'static, Any>),
    Direct(Direct<'g>),
}

/// A transaction on the gate's connection, inside `BEGIN IMMEDIATE`; `open` until committed.
struct Direct<'g> {
    conn: &'g mut Connection,
    open: bool,
}

impl Drop for Direct<'_> {
    fn drop(&mut self) {
        if self.open {
            // Also reached when the request's future is dropped midway (a client that
            // went away): nothing of the transaction stays.
            if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                tracing::warn!(error = %e, "rollback failed");
            }
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

impl<'g> Tx<'g> {
    pub(super) fn pool(tx: sqlx::Transaction<'static, Any>) -> Tx<'g> {
        Tx { inner: Inner::Pool(tx) }
    }

    /// Begins a transaction on the gate's connection; `Ok(None)` when there is no such
    /// connection and the caller should use the pool.
    pub(super) async fn begin_direct(writer: &'g mut Writer) -> Result<Option<Tx<'g>>, MetaError> {
        let Some(conn) = writer.conn() else {
            return Ok(None);
        };
        match conn.execute_batch("BEGIN IMMEDIATE") {
            Ok(()) => {}
            Err(e) if is_busy(&e) => wait_for_lock(writer).await?,
            Err(e) => return Err(lite(e)),
        }
        let conn = writer.conn.as_mut().expect("the connection is back");
        Ok(Some(Tx {
            inner: Inner::Direct(Direct { conn, open: true }),
        }))
    }

    /// Runs a statement; returns the number of rows it changed.
    pub(super) async fn exec(&mut self, sql: impl Into<Sql>, args: &[Arg<'_>]) -> Result<u64, MetaError> {
        match &mut self.inner {
            Inner::Pool(tx) => Ok(pool_query(sql.into(), args).execute(&mut **tx).await?.rows_affected()),
            Inner::Direct(Direct { conn, .. }) => {
                with_stmt(conn, &sql.into(), args, |s| s.raw_execute().map(|n| n as u64))
            }
        }
    }

    /// Runs an INSERT; returns the id it generated.
    pub(super) async fn insert(&mut self, sql: impl Into<Sql>, args: &[Arg<'_>]) -> Result<i64, MetaError> {
        match &mut self.inner {
            Inner::Pool(tx) => {
                let res = pool_query(sql.into(), args).execute(&mut **tx).await?;
                super::store::last_id(tx, &res).await
            }
            Inner::Direct(Direct { conn, .. }) => {
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
            Inner::Direct(Direct { conn, .. }) => with_stmt(conn, &sql.into(), args, |s| {
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
            Inner::Direct(Direct { conn, .. }) => with_stmt(conn, &sql.into(), args, |s| {
                let mut rows = s.raw_query();
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    out.push(T::from_lite(row)?);
                }
                Ok(out)
            }),
        }
    }

    pub(super) async fn commit(self) -> Result<(), MetaError> {
        match self.inner {
            Inner::Pool(tx) => Ok(tx.commit().await?),
            Inner::Direct(mut d) => {
                // A failed COMMIT leaves the transaction open: the drop rolls it back.
                d.conn.execute_batch("COMMIT").map_err(lite)?;
                d.open = false;
                Ok(())
            }
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
