//! SQLite lookups on the calling thread, without a hop to sqlx's connection thread.
//!
//! sqlx runs each SQLite connection on a thread of its own: every statement is a message
//! to that thread and a reply back (two thread switches, two futex wake-ups). For a
//! request whose whole database work is one indexed lookup, a WebDAV GET resolving its
//! path, those hops cost more than the query: under 16 concurrent GETs `perf` put ~40 %
//! of the server's samples in scheduler switches and wake-ups between the Tokio workers
//! and that thread. Here a few connections of our own (rusqlite, linked to the same
//! bundled SQLite library as sqlx: one `libsqlite3-sys` in the build) run such lookups
//! right where they are asked for.
//!
//! Always current: nothing is cached but prepared statements (which SQLite prepares
//! again itself after a schema change). In WAL mode each statement outside a transaction
//! reads a snapshot taken when it starts, which holds every transaction committed
//! before, by this process or by any other on the same file (a `filestore mount` beside
//! the server, the command-line tools), and a reader neither waits for the writer nor
//! holds it up.
//!
//! Never waits: the connections have no busy timeout. The rare reads that SQLite
//! answers with SQLITE_BUSY (another process recovering the log after a crash, a
//! connection holding the file in exclusive mode) come back as [`DirectError::Busy`],
//! and the caller asks sqlx instead, whose connections do wait, on their own thread.
//! If the file cannot be opened at all this way, the lookups stay with sqlx.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use rusqlite::{Connection, OpenFlags};

use super::store::{entry_cols, file_cols};
use super::types::{EntryRow, UserRow};
use super::{Content, Entry, User};

/// Connections kept open between lookups. The Tokio runtime has one worker per core, so
/// more than a few are seldom in use at once; extra ones opened under a burst are closed.
const MAX_IDLE: usize = 8;

/// Prepared statements kept per connection: the resolution queries of 1 to 8 components
/// and the single-row reads below.
const CACHED_STATEMENTS: usize = 16;

/// Why a direct lookup gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum DirectError {
    /// The database could not be read without waiting; sqlx's path waits instead.
    #[error("database busy")]
    Busy,
    /// Direct reads are off for this store (the file could not be opened this way).
    #[error("direct reads unavailable")]
    Unavailable,
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The commit of the batch a write transaction was in failed (tx.rs), or its batch
    /// was rolled back with another transaction of it.
    #[error("commit: {0}")]
    Commit(std::sync::Arc<str>),
}

impl DirectError {
    /// Whether the caller should run the same read through sqlx.
    pub(super) fn fall_back(&self) -> bool {
        matches!(self, DirectError::Busy | DirectError::Unavailable)
    }
}

/// A small pool of read-only-by-use connections to one SQLite file.
pub(super) struct DirectReads {
    pub(super) path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// Set when opening failed: every lookup then goes to sqlx without trying again.
    off: AtomicBool,
}

impl DirectReads {
    /// Direct reads of the database file behind a `sqlite:` URL; `None` for an in-memory
    /// database (another connection would be another, empty, database).
    pub(super) fn for_url(url: &str) -> Option<DirectReads> {
        use std::str::FromStr;
        if url.contains(":memory:") || url.contains("mode=memory") {
            return None;
        }
        let opts = sqlx::sqlite::SqliteConnectOptions::from_str(url).ok()?;
        let path = opts.get_filename();
        if path.as_os_str().is_empty() || path.to_string_lossy().starts_with("file:") {
            return None;
        }
        Some(DirectReads {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::new()),
            off: AtomicBool::new(false),
        })
    }

    fn open(&self) -> Result<Connection, DirectError> {
        // Read-write without create: a read-only handle cannot take part in the WAL
        // index's recovery, and `query_only` already refuses any write.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
        let conn = Connection::open_with_flags(&self.path, flags)?;
        conn.busy_timeout(std::time::Duration::ZERO)?;
        conn.pragma_update(None, "query_only", true)?;
        conn.set_prepared_statement_cache_capacity(CACHED_STATEMENTS);
        Ok(conn)
    }

    /// Runs `f` on an idle connection (or a new one), on this thread.
    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, DirectError> {
        if self.off.load(Ordering::Relaxed) {
            return Err(DirectError::Unavailable);
        }
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => match self.open() {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "SQLite direct reads off; using the pool");
                    self.off.store(true, Ordering::Relaxed);
                    return Err(DirectError::Unavailable);
                }
            },
        };
        let res = f(&conn);
        // A connection whose statement failed is still sound (the statement ended with
        // its error and no transaction is left open), so it goes back all the same.
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
        drop(idle);
        res.map_err(|e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy) | Some(rusqlite::ErrorCode::DatabaseLocked) => DirectError::Busy,
            _ => DirectError::Sqlite(e),
        })
    }

    /// The same lookup as `MetaStore::resolve_some`: `names[0]` in `from`, `names[1]` in
    /// that, and so on, in one statement. `names` must not be empty.
    pub(super) fn resolve_some(&self, owner: i64, from: i64, names: &[&str]) -> Result<Option<Entry>, DirectError> {
        let sql = super::resolve::resolve_sql(names.len());
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(sql)?;
            let mut rows = bind_resolve(&mut stmt, owner, from, names)?;
            match rows.next()? {
                Some(row) => Ok(Some(Entry::from(entry_row(row)?))),
                None => Ok(None),
            }
        })
    }

    /// `MetaStore::resolve_with_data`: [`Self::resolve_some`] with the content's bytes
    /// when its row holds them. At most `NAMES_PER_QUERY` names.
    pub(super) fn resolve_with_data(
        &self,
        owner: i64,
        from: i64,
        names: &[&str],
    ) -> Result<Option<super::resolve::EntryWithData>, DirectError> {
        let sql = super::resolve::resolve_with_data_sql(names.len());
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(sql)?;
            let mut rows = bind_resolve(&mut stmt, owner, from, names)?;
            match rows.next()? {
                Some(row) => {
                    let data: Option<Vec<u8>> = row.get(ENTRY_COLS)?;
                    Ok(Some((Entry::from(entry_row(row)?), data)))
                }
                None => Ok(None),
            }
        })
    }
}

/// Columns of `entry_cols!`.
const ENTRY_COLS: usize = 11;

/// Binds the resolution query's parameters (see `resolve_sql`) and runs it.
fn bind_resolve<'s>(
    stmt: &'s mut rusqlite::CachedStatement<'_>,
    owner: i64,
    from: i64,
    names: &[&str],
) -> rusqlite::Result<rusqlite::Rows<'s>> {
    let mut i = 1;
    for name in &names[1..] {
        stmt.raw_bind_parameter(i, name.as_bytes())?;
        i += 1;
    }
    stmt.raw_bind_parameter(i, owner)?;
    stmt.raw_bind_parameter(i + 1, from)?;
    stmt.raw_bind_parameter(i + 2, names[0].as_bytes())?;
    Ok(stmt.raw_query())
}

impl DirectReads {
    /// `MetaStore::list`: children of `parent` in byte order of their names, after `after`,
    /// at most `limit`. Rows are mapped straight into entries: through sqlx's `Any` driver
    /// each of them was first a row of boxed values and then a message from its thread.
    pub(super) fn list(&self, owner: i64, parent: i64, after: &str, limit: i64) -> Result<Vec<Entry>, DirectError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(super::tree::LIST_SQL)?;
            let rows = stmt.query_map((owner, parent, after.as_bytes(), limit), entry_row)?;
            rows.map(|r| r.map(Entry::from)).collect()
        })
    }

    /// `MetaStore::entry`: the entry `id` if `owner` owns it.
    pub(super) fn entry(&self, owner: i64, id: i64) -> Result<Option<Entry>, DirectError> {
        self.one(super::tree::ENTRY_BY_ID, (id, owner), |row| {
            Ok(Entry::from(entry_row(row)?))
        })
    }

    /// `MetaStore::content`: the content row of `sha1`.
    pub(super) fn content(&self, sha1: &str) -> Result<Option<Content>, DirectError> {
        const SQL: &str = concat!("SELECT ", file_cols!(), " FROM files WHERE sha1 = ?");
        self.one(SQL, [sha1], content_row)
    }

    /// `MetaStore::user_by_token`: the enabled account holding the unexpired token whose
    /// hash is `token_hash`.
    pub(super) fn user_by_token(&self, token_hash: &str, now: i64) -> Result<Option<User>, DirectError> {
        self.one(super::store::USER_BY_TOKEN, (token_hash, now), |row| {
            Ok(User::from(UserRow {
                id: row.get(0)?,
                name: row.get(1)?,
                password_hash: row.get(2)?,
                is_admin: row.get(3)?,
                disabled: row.get(4)?,
                created_at: row.get(5)?,
                last_active: row.get(6)?,
            }))
        })
    }

    /// The first row of `sql` with `params`, mapped by `map`.
    fn one<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        map: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Option<T>, DirectError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(sql)?;
            let mut rows = stmt.query(params)?;
            rows.next()?.map(map).transpose()
        })
    }
}

/// A content row in `file_cols!` order.
pub(super) fn content_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Content> {
    Ok(Content {
        sha1: row.get(0)?,
        sha256: row.get(1)?,
        size: row.get(2)?,
        refcount: row.get(3)?,
        store: row.get(4)?,
        object_key: row.get(5)?,
        zero_since: row.get(6)?,
        created_at: row.get(7)?,
        data: row.get(8)?,
    })
}

/// An entry row in `entry_cols!` order.
pub(super) fn entry_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<EntryRow> {
    use rusqlite::types::ValueRef;
    // Names are bound as bytes, so stored as BLOBs; a TEXT name (a row written by hand)
    // reads as its bytes too.
    let name = match row.get_ref(3)? {
        ValueRef::Blob(b) | ValueRef::Text(b) => b.to_vec(),
        _ => Vec::new(),
    };
    Ok(EntryRow {
        id: row.get(0)?,
        owner: row.get(1)?,
        parent: row.get(2)?,
        name,
        kind: row.get(4)?,
        sha1: row.get(5)?,
        size: row.get(6)?,
        mode: row.get(7)?,
        mtime: row.get(8)?,
        ctime: row.get(9)?,
        created_at: row.get(10)?,
    })
}

// Keeps `entry_cols!` and the positions above in step.
const _: () = {
    let cols = entry_cols!().as_bytes();
    let expected = b"id, owner, parent, name, kind, sha1, size, mode, mtime, ctime, created_at";
    assert!(cols.len() == expected.len());
    let mut i = 0;
    while i < cols.len() {
        assert!(cols[i] == expected[i]);
        i += 1;
    }
};
