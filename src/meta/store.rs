//! Connection, migrations, accounts, tokens, settings and content rows.

use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{MigrateDatabase, Migrator};
use sqlx::{Any, AnyConnection, AnyPool, ConnectOptions};

use super::checkpoint::{Pending, WriteGate, BACKSTOP_PAGES};
use super::direct::DirectReads;
use super::error::unique;
use super::tx::{args, Gate, Tx};
use super::types::{EntryKind, UserRow};
use super::{now_ms, Content, MetaError, RemoveFn, User};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static MYSQL_MIGRATIONS: Migrator = sqlx::migrate!("migrations/mysql");

// Column lists as macros, so that `concat!` builds every query as a literal.
macro_rules! user_cols {
    () => {
        "id, name, password_hash, is_admin, disabled, created_at, last_active"
    };
}
macro_rules! file_cols {
    () => {
        "sha1, sha256, size, refcount, store, object_key, zero_since, created_at, data"
    };
}
macro_rules! entry_cols {
    () => {
        "id, owner, parent, name, kind, sha1, size, mode, mtime, ctime, created_at"
    };
}
pub(super) use {entry_cols, file_cols};

/// The enabled account holding an unexpired token, by the token's hash.
pub(super) const USER_BY_TOKEN: &str =
    "SELECT u.id, u.name, u.password_hash, u.is_admin, u.disabled, u.created_at, u.last_active \
     FROM tokens t JOIN users u ON u.id = t.user_id \
     WHERE t.token_hash = ? AND t.expires_at > ? AND u.disabled = 0";

/// Which SQL dialect the pool speaks; only upserts differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    MySql,
}

impl Dialect {
    /// Reads the dialect off a database URL.
    pub fn from_url(url: &str) -> Option<Dialect> {
        if url.starts_with("sqlite:") {
            Some(Dialect::Sqlite)
        } else if url.starts_with("mysql:") || url.starts_with("mariadb:") {
            Some(Dialect::MySql)
        } else {
            None
        }
    }
}

/// The metadata store. Cheap to clone.
#[derive(Clone)]
pub struct MetaStore {
    pub(super) pool: AnyPool,
    pub(super) dialect: Dialect,
    /// SQLite has one writer at a time: write transactions queue here instead of failing
    /// with SQLITE_BUSY when a deferred transaction upgrades to a write. The gate holds the
    /// connection they run on (tx.rs).
    pub(super) gate: Option<Arc<Gate>>,
    /// SQLite: write transactions counted for the background checkpoints (checkpoint.rs).
    pub(super) pending: Option<Arc<Pending>>,
    /// Whether new content gets a transfer job (object storage is configured).
    pub(super) outbox: bool,
    /// SQLite: lookups run on the calling thread instead of sqlx's (direct.rs).
    pub(super) direct: Option<Arc<DirectReads>>,
}

/// Runs a transaction body again when the database reports a deadlock (MySQL does when two
/// transactions upsert the same new content row at once). The body must be idempotent.
macro_rules! retry_txn {
    ($body:expr) => {{
        let mut attempt = 0u32;
        loop {
            match $body.await {
                Err(e) if e.is_retryable() && attempt < 10 => {
                    attempt += 1;
                    tracing::debug!(attempt, error = %e, "retrying transaction");
                    tokio::time::sleep(std::time::Duration::from_millis(5 << attempt.min(6))).await;
                }
                other => break other,
            }
        }
    }};
}
pub(super) use retry_txn;

impl MetaStore {
    /// Starts a transaction, on a task of its own so that it runs to completion even when
    /// the caller is dropped (a client that disconnects). sqlx 0.9 counts a transaction
    /// as open only once the server has answered BEGIN; cancelled in between, the pooled
    /// connection goes back inside a server-side transaction that nothing rolls back, and
    /// everything later run on it reads an old snapshot and never commits (on MariaDB, a
    /// directory created since looked missing: a PUT into it answered 404). Completed
    /// here, an unwanted transaction is dropped with its rollback queued.
    pub(super) async fn begin(&self) -> Result<sqlx::Transaction<'static, Any>, MetaError> {
        let pool = self.pool.clone();
        tokio::spawn(async move { pool.begin().await })
            .await
            .map_err(|e| MetaError::Db(sqlx::Error::Io(std::io::Error::other(e.to_string()))))?
            .map_err(MetaError::from)
    }

    /// Begins a write transaction: on SQLite on the write gate's own connection, on this
    /// thread, committed together with those that queue behind it (tx.rs); on MySQL on
    /// the pool.
    pub(super) async fn write_tx(&self) -> Result<Tx<'_>, MetaError> {
        self.begin_write(self.enter_gate().await, false).await
    }

    /// A write transaction committed on its own, never in a batch with others: for one
    /// that deletes bytes before its commit, which a batch failing because of another
    /// transaction would then roll back.
    pub(super) async fn write_tx_alone(&self) -> Result<Tx<'_>, MetaError> {
        self.begin_write(self.write_gate().await, true).await
    }

    async fn begin_write<'a>(&'a self, gate: WriteGate<'a>, alone: bool) -> Result<Tx<'a>, MetaError> {
        match Tx::begin_direct(gate, alone).await? {
            Ok(tx) => Ok(tx),
            Err(gate) => Ok(Tx::pool(gate, self.begin().await?)),
        }
    }

    /// Connects (creating the database if it does not exist) and applies the migrations.
    pub async fn connect(url: &str, max_connections: u32) -> Result<MetaStore, MetaError> {
        let store = Self::connect_without_migrating(url, max_connections).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connects without touching the schema (for `filestore migrate --check` and tests).
    pub async fn connect_without_migrating(url: &str, max_connections: u32) -> Result<MetaStore, MetaError> {
        sqlx::any::install_default_drivers();
        let dialect = Dialect::from_url(url).ok_or_else(|| {
            MetaError::Db(sqlx::Error::Configuration(
                format!(
                    "unsupported database URL scheme (use sqlite:// or mysql://): {}",
                    redact_url(url)
                )
                .into(),
            ))
        })?;
        if !Any::database_exists(url).await? {
            tracing::info!(url = %redact_url(url), "creating database");
            Any::create_database(url).await?;
        }
        let options: AnyConnectOptions = url.parse::<AnyConnectOptions>()?.disable_statement_logging();
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(30))
            // A SQLite connection is a thread of this process: it cannot go away, and the
            // ping before each acquire would cost one more hop to that thread per query.
            .test_before_acquire(dialect != Dialect::Sqlite)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        // WAL lets readers run beside the writer; NORMAL is durable across
                        // process crashes in WAL mode (only an OS crash can lose the last
                        // commits, never corrupt the file). Checkpoints run in the
                        // background (checkpoint.rs): a connection does one only as a backstop.
                        let pragmas = format!(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
                             PRAGMA busy_timeout = 30000; PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES};"
                        );
                        sqlx::raw_sql(sqlx::AssertSqlSafe(pragmas)).execute(&mut *conn).await?;
                    } else {
                        // Names are VARBINARY; everything else is ASCII or utf8mb4.
                        sqlx::raw_sql("SET NAMES utf8mb4").execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        let direct = if dialect == Dialect::Sqlite {
            DirectReads::for_url(url).map(Arc::new)
        } else {
            None
        };
        let gate = (dialect == Dialect::Sqlite).then(|| Arc::new(Gate::new(direct.as_ref().map(|d| d.path.clone()))));
        let pending = (dialect == Dialect::Sqlite).then(|| Arc::new(Pending::default()));
        Ok(MetaStore {
            pool,
            dialect,
            gate,
            pending,
            outbox: false,
            direct,
        })
    }

    /// Applies pending migrations for this dialect.
    pub async fn migrate(&self) -> Result<(), MetaError> {
        let _g = self.write_gate().await;
        match self.dialect {
            Dialect::Sqlite => SQLITE_MIGRATIONS.run(&self.pool).await?,
            Dialect::MySql => MYSQL_MIGRATIONS.run(&self.pool).await?,
        }
        Ok(())
    }

    /// Makes every new content queue a transfer to object storage.
    pub fn with_transfers(mut self, on: bool) -> Self {
        self.outbox = on;
        self
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Checks that the database answers (for readiness probes).
    pub async fn ping(&self) -> Result<(), MetaError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The write gate with no batch open (tx.rs), for writes that go through the pool or
    /// must not join one: a batch left open holds SQLite's write lock.
    pub(super) async fn write_gate(&self) -> WriteGate<'_> {
        let mut g = self.enter_gate().await;
        if let Some(w) = g.lock.as_deref_mut() {
            if let Err(e) = w.flush() {
                tracing::warn!(error = %e, "commit of a batch of writes failed");
            }
        }
        g
    }

    /// The write gate as it is, a batch open or not.
    pub(super) async fn enter_gate(&self) -> WriteGate<'_> {
        WriteGate {
            lock: match &self.gate {
                Some(g) => Some(g.lock().await),
                None => None,
            },
            pending: self.pending.as_deref(),
            gate: self.gate.as_ref(),
        }
    }

    // ---- accounts -------------------------------------------------------------------

    /// Creates a user and their root directory in one transaction.
    pub async fn create_user(&self, name: &str, password_hash: &str, is_admin: bool) -> Result<User, MetaError> {
        let _g = self.write_gate().await;
        let now = now_ms();
        let mut tx = self.begin().await?;
        let res = sqlx::query(
            "INSERT INTO users (name, password_hash, is_admin, disabled, created_at, last_active) VALUES (?, ?, ?, 0, ?, ?)",
        )
        .bind(name)
        .bind(password_hash)
        .bind(is_admin as i64)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(unique)?;
        let id = last_id(&mut tx, &res).await?;
        sqlx::query(
            "INSERT INTO entries (owner, parent, name, kind, sha1, size, mode, mtime, ctime, created_at) VALUES (?, NULL, ?, ?, NULL, 0, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(Vec::<u8>::new())
        .bind(EntryKind::Dir.code())
        .bind(0o755_i64)
        .bind(now)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(User {
            id,
            name: name.to_string(),
            password_hash: password_hash.to_string(),
            is_admin,
            disabled: false,
            created_at: now,
            last_active: now,
        })
    }

    pub async fn user_by_name(&self, name: &str) -> Result<Option<User>, MetaError> {
        let sql = concat!("SELECT ", user_cols!(), " FROM users WHERE name = ?");
        let row: Option<UserRow> = sqlx::query_as(sql).bind(name).fetch_optional(&self.pool).await?;
        Ok(row.map(User::from))
    }

    pub async fn user_by_id(&self, id: i64) -> Result<Option<User>, MetaError> {
        let sql = concat!("SELECT ", user_cols!(), " FROM users WHERE id = ?");
        let row: Option<UserRow> = sqlx::query_as(sql).bind(id).fetch_optional(&self.pool).await?;
        Ok(row.map(User::from))
    }

    pub async fn list_users(&self) -> Result<Vec<User>, MetaError> {
        let sql = concat!("SELECT ", user_cols!(), " FROM users ORDER BY name");
        let rows: Vec<UserRow> = sqlx::query_as(sql).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(User::from).collect())
    }

    /// Enables or disables an account; disabling also ends its sessions.
    pub async fn set_user_disabled(&self, name: &str, disabled: bool) -> Result<(), MetaError> {
        let _g = self.write_gate().await;
        let mut tx = self.begin().await?;
        let res = sqlx::query("UPDATE users SET disabled = ? WHERE name = ?")
            .bind(disabled as i64)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if res.rows_affected() == 0 {
            return Err(MetaError::NotFound);
        }
        if disabled {
            sqlx::query("DELETE FROM tokens WHERE user_id = (SELECT id FROM users WHERE name = ?)")
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn set_password_hash(&self, name: &str, hash: &str) -> Result<(), MetaError> {
        let _g = self.write_gate().await;
        let res = sqlx::query("UPDATE users SET password_hash = ? WHERE name = ?")
            .bind(hash)
            .bind(name)
            .execute(&self.pool)
            .await?;
        if res.rows_affected() == 0 {
            return Err(MetaError::NotFound);
        }
        Ok(())
    }

    // ---- tokens ---------------------------------------------------------------------

    /// Stores the hash of a new bearer token and records the sign-in as activity.
    pub async fn insert_token(&self, token_hash: &str, user_id: i64, expires_at: i64) -> Result<(), MetaError> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        tx.exec(
            "INSERT INTO tokens (token_hash, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
            args![token_hash, user_id, now, expires_at],
        )
        .await?;
        tx.exec("UPDATE users SET last_active = ? WHERE id = ?", args![now, user_id])
            .await?;
        tx.commit().await
    }

    /// The enabled user a live token belongs to.
    pub async fn user_by_token(&self, token_hash: &str, now: i64) -> Result<Option<User>, MetaError> {
        if let Some(found) = self.direct_read(|d| d.user_by_token(token_hash, now)) {
            return found;
        }
        let row: Option<UserRow> = sqlx::query_as(USER_BY_TOKEN)
            .bind(token_hash)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(User::from))
    }

    pub async fn delete_token(&self, token_hash: &str) -> Result<bool, MetaError> {
        let _g = self.write_gate().await;
        let res = sqlx::query("DELETE FROM tokens WHERE token_hash = ?")
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(res.rows_affected() > 0)
    }

    pub async fn purge_expired_tokens(&self, now: i64) -> Result<u64, MetaError> {
        let _g = self.write_gate().await;
        let res = sqlx::query("DELETE FROM tokens WHERE expires_at <= ?")
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(res.rows_affected())
    }

    // ---- settings -------------------------------------------------------------------

    /// Returns the stored value, storing `init` first if there is none. Every gateway of a
    /// deployment gets the same value, whichever wrote it first.
    pub async fn setting_or_init(&self, name: &str, init: &str) -> Result<String, MetaError> {
        if let Some(v) = self.setting(name).await? {
            return Ok(v);
        }
        {
            let _g = self.write_gate().await;
            let res = sqlx::query("INSERT INTO settings (name, value) VALUES (?, ?)")
                .bind(name)
                .bind(init)
                .execute(&self.pool)
                .await;
            match res.map_err(unique) {
                Ok(_) | Err(MetaError::AlreadyExists) => {}
                Err(e) => return Err(e),
            }
        }
        self.setting(name).await?.ok_or(MetaError::NotFound)
    }

    async fn setting(&self, name: &str) -> Result<Option<String>, MetaError> {
        Ok(sqlx::query_scalar("SELECT value FROM settings WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?)
    }

    // ---- content --------------------------------------------------------------------

    pub async fn content(&self, sha1: &str) -> Result<Option<Content>, MetaError> {
        if let Some(found) = self.direct_read(|d| d.content(sha1)) {
            return found;
        }
        let sql = concat!("SELECT ", file_cols!(), " FROM files WHERE sha1 = ?");
        Ok(sqlx::query_as(sql).bind(sha1).fetch_optional(&self.pool).await?)
    }

    /// Records the second hash of stored content, computed from its bytes, unless one is
    /// recorded already. Returns the hash the row holds afterwards.
    pub async fn set_sha256(&self, sha1: &str, sha256: &str) -> Result<String, MetaError> {
        let mut tx = self.write_tx().await?;
        tx.exec(
            "UPDATE files SET sha256 = ? WHERE sha1 = ? AND sha256 = ''",
            args![sha256, sha1],
        )
        .await?;
        let stored: Option<String> = tx.opt("SELECT sha256 FROM files WHERE sha1 = ?", args![sha1]).await?;
        tx.commit().await?;
        stored.ok_or(MetaError::NotFound)
    }

    /// Contents whose last reference went away before `cutoff`.
    pub async fn gc_candidates(&self, cutoff: i64, limit: i64) -> Result<Vec<String>, MetaError> {
        Ok(sqlx::query_scalar(
            "SELECT sha1 FROM files WHERE refcount = 0 AND zero_since <= ? ORDER BY zero_since LIMIT ?",
        )
        .bind(cutoff)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Deletes a content row if it is still unreferenced and expired, calling `remove`
    /// to delete its bytes while the row is locked. A concurrent upload of the same bytes
    /// waits for this transaction, then finds the row gone and stores its own copy.
    /// Returns the collected content's row.
    pub async fn gc_collect(
        &self,
        sha1: &str,
        cutoff: i64,
        remove: &RemoveFn<'_>,
    ) -> Result<Option<Content>, MetaError> {
        retry_txn!(self.try_gc_collect(sha1, cutoff, remove))
    }

    async fn try_gc_collect(
        &self,
        sha1: &str,
        cutoff: i64,
        remove: &RemoveFn<'_>,
    ) -> Result<Option<Content>, MetaError> {
        let mut tx = self.write_tx_alone().await?;
        let sql = concat!("SELECT ", file_cols!(), " FROM files WHERE sha1 = ?");
        let Some(content): Option<Content> = tx.opt(sql, args![sha1]).await? else {
            return Ok(None);
        };
        // The DELETE is the write that takes the lock; its condition re-checks the state.
        let deleted = tx
            .exec(
                "DELETE FROM files WHERE sha1 = ? AND refcount = 0 AND zero_since <= ?",
                args![sha1, cutoff],
            )
            .await?;
        if deleted == 0 {
            return Ok(None);
        }
        remove(&content)?;
        tx.commit().await?;
        Ok(Some(content))
    }

    /// Whether a content row exists (for the orphan sweep of the staging directory).
    pub async fn content_exists(&self, sha1: &str) -> Result<bool, MetaError> {
        let n: Option<i64> = sqlx::query_scalar("SELECT 1 FROM files WHERE sha1 = ?")
            .bind(sha1)
            .fetch_optional(&self.pool)
            .await?;
        Ok(n.is_some())
    }

    /// Total bytes the user's files occupy, and bytes actually stored for them.
    pub async fn usage(&self, owner: i64) -> Result<(i64, i64), MetaError> {
        let logical: Option<i64> = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(size), 0) AS SIGNED) FROM entries WHERE owner = ? AND kind = 2",
        )
        .bind(owner)
        .fetch_optional(&self.pool)
        .await?;
        let distinct: Option<i64> = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(f.size), 0) AS SIGNED) FROM files f WHERE f.sha1 IN (SELECT sha1 FROM entries WHERE owner = ? AND kind = 2)",
        )
        .bind(owner)
        .fetch_optional(&self.pool)
        .await?;
        Ok((logical.unwrap_or(0), distinct.unwrap_or(0)))
    }
}

/// The id the last INSERT on `c` generated. The MySQL driver reports it in the result; the
/// SQLite driver does not through `Any`, so it is asked for on the same connection.
pub(super) async fn last_id(c: &mut AnyConnection, res: &sqlx::any::AnyQueryResult) -> Result<i64, MetaError> {
    if let Some(id) = res.last_insert_id() {
        return Ok(id);
    }
    Ok(sqlx::query_scalar("SELECT last_insert_rowid()")
        .fetch_one(&mut *c)
        .await?)
}

/// Hides the password of a database URL in logs and errors.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
