//! The per-user tree: lookups, listing, and the transactions that change it.
//!
//! Every query names the owner, so one user's ids are meaningless to another: an id that
//! belongs to someone else is simply `NotFound`.

use super::store::{entry_cols, file_cols, retry_txn};
use super::tx::{args, Arg, Tx};
use super::types::EntryRow;
use super::{
    now_ms, CommitFile, Conflict, Content, DeleteStats, Dialect, Entry, EntryKind, MetaError, MetaStore, NewContent,
    Overwrite, PlaceFn, STORE_INLINE, STORE_LOCAL,
};

/// Deletes and id lists are sent in batches of this many placeholders.
const BATCH: usize = 500;

/// Listings up to this many rows are read on the calling thread (`direct.rs`); longer
/// ones on the blocking pool, so that a worker is not held for milliseconds.
const INLINE_LIST: i64 = 64;

/// The entry `id` if the owner owns it.
pub(super) const ENTRY_BY_ID: &str = concat!("SELECT ", entry_cols!(), " FROM entries WHERE id = ? AND owner = ?");

/// A page of a directory listing (`MetaStore::list`).
pub(super) const LIST_SQL: &str = concat!(
    "SELECT ",
    entry_cols!(),
    " FROM entries WHERE owner = ? AND parent = ? AND name > ? ORDER BY name LIMIT ?"
);

impl MetaStore {
    /// The user's root directory.
    pub async fn root(&self, owner: i64) -> Result<Entry, MetaError> {
        let sql = concat!(
            "SELECT ",
            entry_cols!(),
            " FROM entries WHERE owner = ? AND parent IS NULL"
        );
        let row: Option<EntryRow> = sqlx::query_as(sql).bind(owner).fetch_optional(&self.pool).await?;
        row.map(Entry::from).ok_or(MetaError::NotFound)
    }

    pub async fn entry(&self, owner: i64, id: i64) -> Result<Option<Entry>, MetaError> {
        if let Some(found) = self.direct_read(|d| d.entry(owner, id)) {
            return found;
        }
        let row: Option<EntryRow> = sqlx::query_as(ENTRY_BY_ID)
            .bind(id)
            .bind(owner)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(Entry::from))
    }

    pub async fn lookup(&self, owner: i64, parent: i64, name: &str) -> Result<Option<Entry>, MetaError> {
        // One name is a path of one component: on SQLite, read on the calling thread.
        self.resolve_names(owner, parent, &[name]).await
    }

    /// Children of a directory in byte order of their names, after `after` (exclusive),
    /// at most `limit`. One query however large the directory.
    pub async fn list(&self, owner: i64, parent: i64, after: &str, limit: i64) -> Result<Vec<Entry>, MetaError> {
        if let Some(direct) = &self.direct {
            let read = if limit <= INLINE_LIST {
                direct.list(owner, parent, after, limit)
            } else {
                let (direct, after) = (direct.clone(), after.to_string());
                tokio::task::spawn_blocking(move || direct.list(owner, parent, &after, limit))
                    .await
                    .map_err(|e| MetaError::Io(std::io::Error::other(e.to_string())))?
            };
            match read {
                Ok(entries) => return Ok(entries),
                Err(e) if !e.fall_back() => return Err(e.into()),
                Err(_) => {}
            }
        }
        let rows: Vec<EntryRow> = sqlx::query_as(LIST_SQL)
            .bind(owner)
            .bind(parent)
            .bind(after.as_bytes().to_vec())
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(Entry::from).collect())
    }

    /// The user's files anywhere in the tree, newest upload first.
    pub async fn recent_files(&self, owner: i64, limit: i64) -> Result<Vec<Entry>, MetaError> {
        let sql = concat!(
            "SELECT ",
            entry_cols!(),
            " FROM entries WHERE owner = ? AND kind = ? ORDER BY created_at DESC, id DESC LIMIT ?"
        );
        let rows: Vec<EntryRow> = sqlx::query_as(sql)
            .bind(owner)
            .bind(EntryKind::File.code())
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(Entry::from).collect())
    }

    /// The user's most recently created file with this content: what the seed routes that
    /// name a file only by hash act on.
    pub async fn newest_with_content(&self, owner: i64, sha1: &str) -> Result<Option<Entry>, MetaError> {
        let row: Option<EntryRow> = sqlx::query_as(NEWEST_WITH_CONTENT_SQL)
            .bind(owner)
            .bind(sha1)
            .bind(EntryKind::File.code())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(Entry::from))
    }

    /// The path of an entry from the user's root, `/` for the root itself.
    pub async fn path_of(&self, owner: i64, id: i64) -> Result<String, MetaError> {
        let sql = "WITH RECURSIVE up(id, parent, name, depth) AS ( \
                     SELECT id, parent, name, 0 FROM entries WHERE id = ? AND owner = ? \
                     UNION ALL \
                     SELECT e.id, e.parent, e.name, up.depth + 1 FROM entries e JOIN up ON e.id = up.parent \
                   ) SELECT name FROM up ORDER BY depth DESC";
        let names: Vec<Vec<u8>> = sqlx::query_scalar(sql)
            .bind(id)
            .bind(owner)
            .fetch_all(&self.pool)
            .await?;
        if names.is_empty() {
            return Err(MetaError::NotFound);
        }
        let mut path = String::new();
        for n in names.iter().skip(1) {
            path.push('/');
            path.push_str(&String::from_utf8_lossy(n));
        }
        if path.is_empty() {
            path.push('/');
        }
        Ok(path)
    }

    /// Creates a directory.
    pub async fn mkdir(&self, owner: i64, parent: i64, name: &str, mode: i64) -> Result<Entry, MetaError> {
        retry_txn!(self.try_mkdir(owner, parent, name, mode))
    }

    async fn try_mkdir(&self, owner: i64, parent: i64, name: &str, mode: i64) -> Result<Entry, MetaError> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        dir(&mut tx, owner, parent).await?;
        let id = insert(&mut tx, owner, parent, name, EntryKind::Dir, None, 0, mode, now, now).await?;
        let e = get(&mut tx, owner, id).await?.ok_or(MetaError::NotFound)?;
        touch_dirs(&mut tx, owner, &[parent], now).await?;
        tx.commit().await?;
        Ok(e)
    }

    /// Creates or replaces a file entry pointing at `req.content`, raising the content's
    /// reference count (inserting its row if it is new) in the same transaction.
    ///
    /// `place` runs after every check has passed and before the commit, while the content
    /// row is locked: it must make sure the bytes are in the store (a no-op when they
    /// already are). If the process dies before the commit, nothing is visible; the bytes
    /// `place` stored are an orphan that the staging sweep removes.
    pub async fn commit_file(&self, req: &CommitFile, place: &PlaceFn<'_>) -> Result<Entry, MetaError> {
        retry_txn!(self.try_commit_file(req, place))
    }

    async fn try_commit_file(&self, req: &CommitFile, place: &PlaceFn<'_>) -> Result<Entry, MetaError> {
        let now = now_ms();
        let mtime = req.mtime.unwrap_or(now);
        let c = &req.content;
        let mut tx = self.write_tx().await?;
        // The upsert is the first statement so that it takes the content row's lock before
        // anything is read: a garbage collection of the same content cannot interleave.
        let content = upsert_content(&mut tx, self.dialect, c, now).await?;
        match &c.sha256 {
            Some(ours) if *ours == content.sha256 => {}
            // A link without bytes, to a row whose hash was recorded since it was read.
            Some(ours) if ours.is_empty() => {}
            // Stored content whose second hash nobody has computed yet.
            Some(_) if content.sha256.is_empty() => return Err(MetaError::Unverified),
            Some(_) => return Err(MetaError::Collision),
            // `upsert_content` inserted the row: it did not exist.
            None => {}
        }
        if content.size != c.size {
            return Err(MetaError::Collision);
        }
        let existing = match req.conflict {
            Conflict::Entry(id) => Some(get(&mut tx, req.owner, id).await?.ok_or(MetaError::NotFound)?),
            _ => {
                dir(&mut tx, req.owner, req.parent).await?;
                find(&mut tx, req.owner, req.parent, &req.name).await?
            }
        };
        let added = existing.is_none() || req.conflict == Conflict::Rename;
        let plain_insert = existing.is_none();
        let id = match (existing, req.conflict) {
            (None, Conflict::Entry(_)) => return Err(MetaError::NotFound),
            (None, _) => {
                insert(
                    &mut tx,
                    req.owner,
                    req.parent,
                    &req.name,
                    EntryKind::File,
                    Some(&c.sha1),
                    c.size,
                    req.mode,
                    now,
                    mtime,
                )
                .await?
            }
            (Some(_), Conflict::Fail) => return Err(MetaError::AlreadyExists),
            (Some(old), Conflict::Replace | Conflict::Entry(_)) => {
                if old.is_dir() {
                    return Err(MetaError::IsADirectory);
                }
                tx.exec(
                    "UPDATE entries SET sha1 = ?, size = ?, mtime = ?, ctime = ? WHERE id = ?",
                    args![&c.sha1, c.size, mtime, now, old.id],
                )
                .await?;
                if let Some(old_sha1) = &old.sha1 {
                    decref(&mut tx, old_sha1, 1, now).await?;
                }
                old.id
            }
            (Some(_), Conflict::Rename) => {
                let name = free_name(&mut tx, req.owner, req.parent, &req.name).await?;
                insert(
                    &mut tx,
                    req.owner,
                    req.parent,
                    &name,
                    EntryKind::File,
                    Some(&c.sha1),
                    c.size,
                    req.mode,
                    now,
                    mtime,
                )
                .await?
            }
        };
        let entry = if plain_insert {
            // Exactly the row just inserted: no need to read it back.
            Entry {
                id,
                owner: req.owner,
                parent: Some(req.parent),
                name: req.name.clone(),
                kind: EntryKind::File,
                sha1: Some(c.sha1.clone()),
                size: c.size,
                mode: req.mode,
                mtime,
                ctime: now,
                created_at: now,
            }
        } else {
            get(&mut tx, req.owner, id).await?.ok_or(MetaError::NotFound)?
        };
        if added {
            touch_dirs(&mut tx, req.owner, &[req.parent], now).await?;
        }
        place(&content)?;
        // New content goes on to object storage, from the staging disk or from its row.
        if self.outbox && (content.store == STORE_LOCAL || content.store == STORE_INLINE) {
            Self::enqueue_transfer(&mut tx, &c.sha1, now).await?;
        }
        tx.commit_marked(Some("upload.batched")).await?;
        Ok(entry)
    }

    /// Moves and/or renames an entry: one row update whatever its size or subtree.
    pub async fn rename(
        &self,
        owner: i64,
        id: i64,
        new_parent: i64,
        new_name: &str,
        overwrite: Overwrite,
    ) -> Result<Entry, MetaError> {
        retry_txn!(self.try_rename(owner, id, new_parent, new_name, overwrite))
    }

    async fn try_rename(
        &self,
        owner: i64,
        id: i64,
        new_parent: i64,
        new_name: &str,
        overwrite: Overwrite,
    ) -> Result<Entry, MetaError> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        // Lock the source row first (an UPDATE that changes nothing but ctime).
        tx.exec(
            "UPDATE entries SET ctime = ? WHERE id = ? AND owner = ? AND parent IS NOT NULL",
            args![now, id, owner],
        )
        .await?;
        let src = get(&mut tx, owner, id).await?.ok_or(MetaError::NotFound)?;
        if src.parent.is_none() {
            return Err(MetaError::Root);
        }
        dir(&mut tx, owner, new_parent).await?;
        if src.is_dir() && is_within(&mut tx, owner, new_parent, src.id).await? {
            return Err(MetaError::Cycle);
        }
        if let Some(dst) = find(&mut tx, owner, new_parent, new_name).await? {
            if dst.id == src.id {
                tx.commit().await?;
                return Ok(src);
            }
            clear_destination(&mut tx, owner, &src, &dst, overwrite, now).await?;
        }
        tx.exec(
            "UPDATE entries SET parent = ?, name = ? WHERE id = ?",
            args![new_parent, new_name.as_bytes(), id],
        )
        .await
        .map_err(|e| e.unique_as(MetaError::AlreadyExists))?;
        let e = get(&mut tx, owner, id).await?.ok_or(MetaError::NotFound)?;
        if let Some(old_parent) = src.parent {
            touch_dirs(&mut tx, owner, &[old_parent, new_parent], now).await?;
        }
        tx.commit().await?;
        Ok(e)
    }

    /// Copies an entry: new entries pointing at the same content (no bytes are copied).
    /// A directory is copied with its whole subtree.
    pub async fn copy(
        &self,
        owner: i64,
        id: i64,
        new_parent: i64,
        new_name: &str,
        overwrite: Overwrite,
    ) -> Result<Entry, MetaError> {
        retry_txn!(self.try_copy(owner, id, new_parent, new_name, overwrite))
    }

    async fn try_copy(
        &self,
        owner: i64,
        id: i64,
        new_parent: i64,
        new_name: &str,
        overwrite: Overwrite,
    ) -> Result<Entry, MetaError> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        // Lock the destination directory first so concurrent copies into it serialise.
        let locked = tx
            .exec(
                "UPDATE entries SET mtime = mtime WHERE id = ? AND owner = ? AND kind = ?",
                args![new_parent, owner, EntryKind::Dir.code()],
            )
            .await?;
        let src = get(&mut tx, owner, id).await?.ok_or(MetaError::NotFound)?;
        if locked == 0 {
            dir(&mut tx, owner, new_parent).await?;
        }
        if src.parent.is_none() {
            return Err(MetaError::Root);
        }
        if src.is_dir() && is_within(&mut tx, owner, new_parent, src.id).await? {
            return Err(MetaError::Cycle);
        }
        if let Some(dst) = find(&mut tx, owner, new_parent, new_name).await? {
            if dst.id == src.id {
                return Err(MetaError::AlreadyExists);
            }
            clear_destination(&mut tx, owner, &src, &dst, overwrite, now).await?;
        }
        let new_id = copy_one(&mut tx, &src, new_parent, new_name, now).await?;
        if src.is_dir() {
            // Breadth-first over the source subtree; each level is one query per directory.
            let mut queue = vec![(src.id, new_id)];
            while let Some((from, to)) = queue.pop() {
                let sql = concat!("SELECT ", entry_cols!(), " FROM entries WHERE owner = ? AND parent = ?");
                let children: Vec<EntryRow> = tx.all(sql, args![owner, from]).await?;
                for child in children.into_iter().map(Entry::from) {
                    let cid = copy_one(&mut tx, &child, to, &child.name, now).await?;
                    if child.is_dir() {
                        queue.push((child.id, cid));
                    }
                }
            }
        }
        let e = get(&mut tx, owner, new_id).await?.ok_or(MetaError::NotFound)?;
        touch_dirs(&mut tx, owner, &[new_parent], now).await?;
        tx.commit().await?;
        Ok(e)
    }

    /// Deletes an entry. A non-empty directory needs `recursive`. Contents whose last
    /// reference goes away start their grace period; their bytes are collected later.
    pub async fn delete(&self, owner: i64, id: i64, recursive: bool) -> Result<DeleteStats, MetaError> {
        retry_txn!(self.try_delete(owner, id, recursive))
    }

    async fn try_delete(&self, owner: i64, id: i64, recursive: bool) -> Result<DeleteStats, MetaError> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        // The update comes first so that it takes the row's lock before anything is read.
        tx.exec(
            "UPDATE entries SET ctime = ? WHERE id = ? AND owner = ? AND parent IS NOT NULL",
            args![now, id, owner],
        )
        .await?;
        let e = get(&mut tx, owner, id).await?.ok_or(MetaError::NotFound)?;
        let stats = remove_entry(&mut tx, &e, recursive, now).await?;
        tx.commit().await?;
        Ok(stats)
    }

    /// Deletes the entry `name` in directory `parent`, in one transaction, if it is of
    /// `kind` (a file where a directory is wanted is `NotADirectory`, the other way round
    /// `IsADirectory`): unlink(2) and rmdir(2) of a mount without a lookup first, so the
    /// entry deleted is the one that has the name when the transaction runs. Returns what
    /// was deleted and the directory as the deletion left it (its new mtime and ctime), so
    /// that a client need not ask for it again.
    pub async fn delete_child(
        &self,
        owner: i64,
        parent: i64,
        name: &str,
        kind: Option<EntryKind>,
    ) -> Result<(DeleteStats, Entry), MetaError> {
        retry_txn!(self.try_delete_child(owner, parent, name, kind))
    }

    async fn try_delete_child(
        &self,
        owner: i64,
        parent: i64,
        name: &str,
        kind: Option<EntryKind>,
    ) -> Result<(DeleteStats, Entry), MetaError> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        tx.exec(
            "UPDATE entries SET ctime = ? WHERE owner = ? AND parent = ? AND name = ?",
            args![now, owner, parent, name.as_bytes()],
        )
        .await?;
        let Some(e) = find(&mut tx, owner, parent, name).await? else {
            // Say why: no such directory, not a directory, or no such name in it.
            return Err(match get(&mut tx, owner, parent).await? {
                Some(p) if !p.is_dir() => MetaError::NotADirectory,
                _ => MetaError::NotFound,
            });
        };
        match (kind, e.kind) {
            (Some(EntryKind::Dir), EntryKind::File) => return Err(MetaError::NotADirectory),
            (Some(EntryKind::File), EntryKind::Dir) => return Err(MetaError::IsADirectory),
            _ => {}
        }
        let stats = remove_entry(&mut tx, &e, false, now).await?;
        let dir = get(&mut tx, owner, parent).await?.ok_or(MetaError::NotFound)?;
        tx.commit().await?;
        Ok((stats, dir))
    }

    /// Sets the mode and/or mtime of an entry.
    pub async fn set_attrs(
        &self,
        owner: i64,
        id: i64,
        mode: Option<i64>,
        mtime: Option<i64>,
    ) -> Result<Entry, MetaError> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        tx.exec(
            "UPDATE entries SET mode = COALESCE(?, mode), mtime = COALESCE(?, mtime), ctime = ? WHERE id = ? AND owner = ?",
            args![mode, mtime, now, id, owner],
        )
        .await?;
        let e = get(&mut tx, owner, id).await?.ok_or(MetaError::NotFound)?;
        tx.commit().await?;
        Ok(e)
    }
}

/// Inserts the content row, or takes a reference on the existing one, and returns the row
/// as it is now. The upsert is the transaction's first statement so that it takes the
/// row's lock before anything is read: a garbage collection of the same content cannot
/// interleave.
///
/// Without a second hash (`sha256: None`) the row must be new: it is a plain insert, and
/// an existing row is `Unverified` (the caller compares the bytes first).
async fn upsert_content(c: &mut Tx<'_>, dialect: Dialect, n: &NewContent, now: i64) -> Result<Content, MetaError> {
    let sha256 = n.sha256.as_deref().unwrap_or("");
    let on_conflict = match (dialect, n.sha256.is_some()) {
        (_, false) => "",
        (Dialect::Sqlite, true) => " ON CONFLICT (sha1) DO UPDATE SET refcount = refcount + 1, zero_since = NULL",
        (Dialect::MySql, true) => " ON DUPLICATE KEY UPDATE refcount = refcount + 1, zero_since = NULL",
    };
    let insert = format!(
        "INSERT INTO files (sha1, sha256, size, refcount, store, data, created_at) VALUES (?, ?, ?, 1, ?, ?, ?){on_conflict}{}",
        match dialect {
            // The row after the upsert, in the same statement: one round trip to the
            // database thread fewer while the write gate is held.
            Dialect::Sqlite => concat!(" RETURNING ", file_cols!()),
            Dialect::MySql => "",
        }
    );
    // Small content comes with its bytes and is stored in the row; any other kind was
    // placed on the staging disk before the transaction.
    let (store, data) = match &n.inline {
        Some(bytes) => (STORE_INLINE, Some(&bytes[..])),
        None => (STORE_LOCAL, None),
    };
    let values = args![&n.sha1, sha256, n.size, store, data, now];
    let refused = |e: MetaError| e.unique_as(MetaError::Unverified);
    let row = match dialect {
        Dialect::Sqlite => c.opt(insert, values).await.map_err(refused)?,
        Dialect::MySql => {
            c.exec(insert, values).await.map_err(refused)?;
            let sql = concat!("SELECT ", file_cols!(), " FROM files WHERE sha1 = ?");
            c.opt(sql, args![&n.sha1]).await?
        }
    };
    // The row was just written in this transaction.
    row.ok_or(MetaError::NotFound)
}

async fn get(c: &mut Tx<'_>, owner: i64, id: i64) -> Result<Option<Entry>, MetaError> {
    let row: Option<EntryRow> = c.opt(ENTRY_BY_ID, args![id, owner]).await?;
    Ok(row.map(Entry::from))
}

async fn find(c: &mut Tx<'_>, owner: i64, parent: i64, name: &str) -> Result<Option<Entry>, MetaError> {
    let sql = concat!(
        "SELECT ",
        entry_cols!(),
        " FROM entries WHERE owner = ? AND parent = ? AND name = ?"
    );
    let row: Option<EntryRow> = c.opt(sql, args![owner, parent, name.as_bytes()]).await?;
    Ok(row.map(Entry::from))
}

/// The entry `id` if it is one of the owner's directories.
async fn dir(c: &mut Tx<'_>, owner: i64, id: i64) -> Result<Entry, MetaError> {
    let e = get(c, owner, id).await?.ok_or(MetaError::NotFound)?;
    if !e.is_dir() {
        return Err(MetaError::NotADirectory);
    }
    Ok(e)
}

/// Directories whose entries changed (one added, removed or renamed): their mtime and
/// ctime become `now`, as POSIX says. Last in a transaction, and in id order, so that
/// the directory rows stay locked briefly and always in the same order.
async fn touch_dirs(c: &mut Tx<'_>, owner: i64, dirs: &[i64], now: i64) -> Result<(), MetaError> {
    let mut ids = dirs.to_vec();
    ids.sort_unstable();
    ids.dedup();
    for id in ids {
        c.exec(
            "UPDATE entries SET mtime = ?, ctime = ? WHERE id = ? AND owner = ? AND kind = ?",
            args![now, now, id, owner, EntryKind::Dir.code()],
        )
        .await?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn insert(
    c: &mut Tx<'_>,
    owner: i64,
    parent: i64,
    name: &str,
    kind: EntryKind,
    sha1: Option<&str>,
    size: i64,
    mode: i64,
    now: i64,
    mtime: i64,
) -> Result<i64, MetaError> {
    c.insert(
        "INSERT INTO entries (owner, parent, name, kind, sha1, size, mode, mtime, ctime, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        args![owner, parent, name.as_bytes(), kind.code(), sha1, size, mode, mtime, now, now],
    )
    .await
    .map_err(|e| e.unique_as(MetaError::AlreadyExists))
}

/// A new entry like `src` under `parent`/`name`, sharing its content.
async fn copy_one(c: &mut Tx<'_>, src: &Entry, parent: i64, name: &str, now: i64) -> Result<i64, MetaError> {
    if let Some(sha1) = &src.sha1 {
        c.exec(
            "UPDATE files SET refcount = refcount + 1, zero_since = NULL WHERE sha1 = ?",
            args![sha1],
        )
        .await?;
    }
    let id = insert(
        c,
        src.owner,
        parent,
        name,
        src.kind,
        src.sha1.as_deref(),
        src.size,
        src.mode,
        now,
        src.mtime,
    )
    .await?;
    // A copy carries the dead properties of its source (RFC 4918 section 9.8.2).
    c.exec(
        "INSERT INTO dead_props (entry_id, ns, name, xml) SELECT ?, ns, name, xml FROM dead_props WHERE entry_id = ?",
        args![id, src.id],
    )
    .await?;
    Ok(id)
}

/// Lowers a content's reference count by `by`; returns whether it reached zero.
async fn decref(c: &mut Tx<'_>, sha1: &str, by: i64, now: i64) -> Result<bool, MetaError> {
    // zero_since is assigned before refcount: MySQL evaluates SET clauses left to right with
    // the new values, SQLite with the old ones; this order reads the old count in both.
    c.exec(
        "UPDATE files SET zero_since = CASE WHEN refcount <= ? THEN ? ELSE zero_since END, refcount = refcount - ? WHERE sha1 = ?",
        args![by, now, by, sha1],
    )
    .await?;
    let left: Option<i64> = c.opt("SELECT refcount FROM files WHERE sha1 = ?", args![sha1]).await?;
    Ok(left.unwrap_or(0) <= 0)
}

async fn has_children(c: &mut Tx<'_>, owner: i64, id: i64) -> Result<bool, MetaError> {
    let n: Option<i64> = c
        .opt(
            "SELECT id FROM entries WHERE owner = ? AND parent = ? LIMIT 1",
            args![owner, id],
        )
        .await?;
    Ok(n.is_some())
}

/// Whether `candidate` is `ancestor` or lies below it.
async fn is_within(c: &mut Tx<'_>, owner: i64, candidate: i64, ancestor: i64) -> Result<bool, MetaError> {
    let mut cur = Some(candidate);
    while let Some(id) = cur {
        if id == ancestor {
            return Ok(true);
        }
        cur = c
            .opt::<Option<i64>>(
                "SELECT parent FROM entries WHERE id = ? AND owner = ?",
                args![id, owner],
            )
            .await?
            .flatten();
    }
    Ok(false)
}

/// Makes room for `src` at `dst`'s name according to the overwrite rule.
async fn clear_destination(
    c: &mut Tx<'_>,
    owner: i64,
    src: &Entry,
    dst: &Entry,
    overwrite: Overwrite,
    now: i64,
) -> Result<(), MetaError> {
    match overwrite {
        Overwrite::No => return Err(MetaError::AlreadyExists),
        Overwrite::Posix => match (src.is_dir(), dst.is_dir()) {
            (false, true) => return Err(MetaError::IsADirectory),
            (true, false) => return Err(MetaError::NotADirectory),
            (true, true) if has_children(c, owner, dst.id).await? => return Err(MetaError::NotEmpty),
            _ => {}
        },
        Overwrite::Any => {}
    }
    remove_subtree(c, owner, dst.id, now).await?;
    Ok(())
}

/// Deletes an entry and everything below it, releasing their contents.
/// Deletes `e` (read in this transaction), its subtree if `recursive`, and touches its
/// parent. A non-empty directory without `recursive` is `NotEmpty`; the root is `Root`.
async fn remove_entry(c: &mut Tx<'_>, e: &Entry, recursive: bool, now: i64) -> Result<DeleteStats, MetaError> {
    let Some(parent) = e.parent else {
        return Err(MetaError::Root);
    };
    let stats = if e.is_dir() {
        if !recursive && has_children(c, e.owner, e.id).await? {
            return Err(MetaError::NotEmpty);
        }
        remove_subtree(c, e.owner, e.id, now).await?
    } else {
        // A file has no subtree to walk.
        remove_rows(c, e.owner, &[(e.id, e.sha1.clone())], now).await?
    };
    touch_dirs(c, e.owner, &[parent], now).await?;
    Ok(stats)
}

/// A user's newest file with given content, by `entries_by_content` (sha1, owner, kind,
/// created_at), in index order: no sort even over the many empty files one user may have.
const NEWEST_WITH_CONTENT_SQL: &str = concat!(
    "SELECT ",
    entry_cols!(),
    " FROM entries WHERE owner = ? AND sha1 = ? AND kind = ? ORDER BY created_at DESC, id DESC LIMIT 1"
);

/// The entries of the subtree at `id` (parameters: id, owner, owner), with their contents.
/// `CROSS JOIN` makes SQLite take each subtree entry in turn and search its children by
/// `(owner, parent)`: planned freely (no statistics here), it walked the index
/// `entries_recent (owner, ...)`, every entry of the owner, for each entry of the subtree,
/// and a WebDAV DELETE of a directory of 30,000 files ran for minutes. (MySQL reads
/// `CROSS JOIN ... ON` as an inner join.)
const SUBTREE_SQL: &str = "WITH RECURSIVE sub(id, sha1) AS ( \
                 SELECT id, sha1 FROM entries WHERE id = ? AND owner = ? \
                 UNION ALL \
                 SELECT e.id, e.sha1 FROM sub CROSS JOIN entries e ON e.owner = ? AND e.parent = sub.id \
               ) SELECT id, sha1 FROM sub";

async fn remove_subtree(c: &mut Tx<'_>, owner: i64, id: i64, now: i64) -> Result<DeleteStats, MetaError> {
    let rows: Vec<(i64, Option<String>)> = c.all(SUBTREE_SQL, args![id, owner, owner]).await?;
    remove_rows(c, owner, &rows, now).await
}

/// Deletes the entries `rows` (id, content) with their dead properties and drops their
/// references on contents.
async fn remove_rows(
    c: &mut Tx<'_>,
    owner: i64,
    rows: &[(i64, Option<String>)],
    now: i64,
) -> Result<DeleteStats, MetaError> {
    let mut per_content: std::collections::BTreeMap<String, i64> = Default::default();
    for (_, sha1) in rows {
        if let Some(s) = sha1 {
            *per_content.entry(s.clone()).or_default() += 1;
        }
    }
    let ids: Vec<i64> = rows.iter().map(|(id, _)| *id).collect();
    for chunk in ids.chunks(BATCH) {
        let sql = format!(
            "DELETE FROM dead_props WHERE entry_id IN ({})",
            placeholders(chunk.len())
        );
        // Only `?` placeholders are interpolated; every value is bound.
        let ids: Vec<Arg<'_>> = chunk.iter().map(|id| Arg::Int(*id)).collect();
        c.exec(sql, &ids).await?;
        let sql = delete_entries_sql(chunk.len());
        let owner_and_ids: Vec<Arg<'_>> = std::iter::once(Arg::Int(owner))
            .chain(chunk.iter().map(|id| Arg::Int(*id)))
            .collect();
        c.exec(sql, &owner_and_ids).await?;
    }
    let mut released = 0;
    for (sha1, n) in per_content {
        if decref(c, &sha1, n, now).await? {
            released += 1;
        }
    }
    Ok(DeleteStats {
        entries: ids.len() as u64,
        released,
    })
}

/// Deletes `n` of the owner's entries by id (parameters: the owner, then the ids). The
/// owner's condition is written `+owner` so that no index is used for it: SQLite, which
/// has no statistics here, otherwise searched the index `entries_recent (owner, ...)`,
/// which holds every entry of the owner, for each batch of ids, instead of looking the ids
/// up by primary key: deleting a directory of 40,000 files took 15 to 40 s.
/// (`+owner` is the same value to MySQL, which looks ids up by primary key either way.)
fn delete_entries_sql(n: usize) -> String {
    // Only `?` placeholders are interpolated; every value is bound.
    format!("DELETE FROM entries WHERE +owner = ? AND id IN ({})", placeholders(n))
}

/// `name (1).ext`, `name (2).ext`, ...: the first name not taken in `parent`.
async fn free_name(c: &mut Tx<'_>, owner: i64, parent: i64, name: &str) -> Result<String, MetaError> {
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    for n in 1..10_000 {
        let candidate = format!("{stem} ({n}){ext}");
        if candidate.len() > 255 {
            break;
        }
        if find(c, owner, parent, &candidate).await?.is_none() {
            return Ok(candidate);
        }
    }
    Err(MetaError::AlreadyExists)
}

pub(super) fn placeholders(n: usize) -> String {
    let mut s = String::with_capacity(n * 3);
    for i in 0..n {
        if i > 0 {
            s.push_str(", ");
        }
        s.push('?');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn plan(m: &MetaStore, sql: &str, n: usize) -> Vec<String> {
        let mut q =
            sqlx::query_as::<_, (i64, i64, i64, String)>(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")));
        for i in 0..n {
            q = q.bind(i as i64 + 1);
        }
        q.fetch_all(&m.pool).await.unwrap().into_iter().map(|r| r.3).collect()
    }

    /// A fresh SQLite store (and the directory that holds it) for the plans below.
    async fn sqlite_store() -> (tempfile::TempDir, MetaStore) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("meta.db").display());
        let m = MetaStore::connect(&url, 2).await.unwrap();
        (dir, m)
    }

    /// The subtree walk searches children by index, and nothing scans a whole table.
    #[tokio::test]
    async fn walking_a_subtree_scans_no_table() {
        let (_dir, m) = sqlite_store().await;
        let steps = plan(&m, SUBTREE_SQL, 3).await;
        assert!(
            !steps
                .iter()
                .any(|s| s.starts_with("SCAN e") || s.starts_with("SCAN entries")),
            "{steps:?}"
        );
        assert!(steps.iter().any(|s| s.contains("(owner=? AND parent=?)")), "{steps:?}");
        // And the directory listing, by the same index.
        let steps = plan(&m, LIST_SQL, 4).await;
        assert!(
            steps.iter().any(|s| s.contains("(owner=? AND parent=? AND name>?)")),
            "{steps:?}"
        );
    }

    /// A user's newest file with given content is found in the one content index, in
    /// order (migration 0006).
    #[tokio::test]
    async fn newest_with_content_reads_the_content_index_in_order() {
        let (_dir, m) = sqlite_store().await;
        let steps = plan(&m, NEWEST_WITH_CONTENT_SQL, 3).await;
        assert!(
            steps
                .iter()
                .any(|s| s.contains("entries_by_content (sha1=? AND owner=? AND kind=?)")),
            "{steps:?}"
        );
        assert!(!steps.iter().any(|s| s.contains("TEMP B-TREE")), "{steps:?}");
    }

    /// What SQLite plans for the batched delete of a subtree's entries: a lookup per id,
    /// not a walk of an index holding all of the owner's entries per batch.
    #[tokio::test]
    async fn deleting_entries_looks_them_up_by_primary_key() {
        let (_dir, m) = sqlite_store().await;
        // The owner, then three ids.
        let steps = plan(&m, &delete_entries_sql(3), 4).await;
        assert!(
            steps.iter().any(|s| s.contains("INTEGER PRIMARY KEY")) && !steps.iter().any(|s| s.contains("(owner=?)")),
            "{steps:?}"
        );
    }
}
