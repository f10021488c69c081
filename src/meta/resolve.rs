//! Path resolution in one query: WebDAV resolves the path of every request, and one query
//! per path component cost one hop to the database per component.

use std::sync::OnceLock;

use super::store::entry_cols;
use super::types::EntryRow;
use super::types::STORE_INLINE;
use super::{Entry, MetaError, MetaStore};

/// Components resolved by one query; a deeper path takes one more query per this many.
const NAMES_PER_QUERY: usize = 8;

/// The query resolving `n` components (1..=[`NAMES_PER_QUERY`]). Its parameters: the
/// names of components 2..=n, then the owner, the starting directory and the first name.
/// Only numbers and fixed text are formatted in; every name is a bound parameter. Built
/// once per length: a GET resolves its path with it, and formatting it each time was a
/// twentieth of such a request's CPU.
pub(super) fn resolve_sql(n: usize) -> &'static str {
    static SQL: [OnceLock<String>; NAMES_PER_QUERY] = [const { OnceLock::new() }; NAMES_PER_QUERY];
    SQL[n - 1].get_or_init(|| build_resolve_sql(n, false))
}

/// [`resolve_sql`] with one more column, last: the bytes of the entry's content when they
/// are stored in its row (`store = 'inline'`), else NULL. The same parameters.
pub(super) fn resolve_with_data_sql(n: usize) -> &'static str {
    static SQL: [OnceLock<String>; NAMES_PER_QUERY] = [const { OnceLock::new() }; NAMES_PER_QUERY];
    SQL[n - 1].get_or_init(|| build_resolve_sql(n, true))
}

/// An entry, and the bytes of its content when they were read with it.
pub type EntryWithData = (Entry, Option<Vec<u8>>);

fn build_resolve_sql(n: usize, data: bool) -> String {
    assert!((1..=NAMES_PER_QUERY).contains(&n));
    let cols: Vec<String> = entry_cols!().split(", ").map(|c| format!("e{n}.{c}")).collect();
    let mut sql = format!("SELECT {}", cols.join(", "));
    if data {
        sql.push_str(", f.data");
    }
    sql.push_str(" FROM entries e1");
    for i in 2..=n {
        sql.push_str(&format!(
            " JOIN entries e{i} ON e{i}.owner = e1.owner AND e{i}.parent = e{}.id AND e{i}.name = ?",
            i - 1
        ));
    }
    if data {
        sql.push_str(&format!(
            " LEFT JOIN files f ON f.sha1 = e{n}.sha1 AND f.store = '{STORE_INLINE}'"
        ));
    }
    sql.push_str(" WHERE e1.owner = ? AND e1.parent = ? AND e1.name = ?");
    sql
}

impl MetaStore {
    /// `read` on the calling thread ([`super::direct`]), on SQLite when its connections
    /// can answer without waiting; `None` when the caller should ask sqlx instead.
    pub(super) fn direct_read<T>(
        &self,
        read: impl FnOnce(&super::direct::DirectReads) -> Result<T, super::direct::DirectError>,
    ) -> Option<Result<T, MetaError>> {
        match self.direct.as_deref().map(read) {
            Some(Ok(v)) => Some(Ok(v)),
            Some(Err(e)) if !e.fall_back() => Some(Err(e.into())),
            _ => None,
        }
    }

    /// The entry reached from directory `from` by following `names`, each a child of the
    /// one before, or `None` if a component does not exist (a file has no children, so a
    /// file in the middle of the path also gives `None`). `names` must not be empty.
    ///
    /// On SQLite the lookup runs on the calling thread ([`super::direct`]): a few
    /// microseconds of indexed reads in the page cache, instead of a round trip to sqlx's
    /// connection thread.
    pub async fn resolve_names(&self, owner: i64, from: i64, names: &[&str]) -> Result<Option<Entry>, MetaError> {
        let mut dir = from;
        let mut found = None;
        for part in names.chunks(NAMES_PER_QUERY) {
            let step = match self.direct_read(|d| d.resolve_some(owner, dir, part)) {
                Some(found) => found?,
                None => self.resolve_some(owner, dir, part).await?,
            };
            match step {
                Some(e) => {
                    dir = e.id;
                    found = Some(e);
                }
                None => return Ok(None),
            }
        }
        Ok(found)
    }

    /// [`Self::resolve_names`], and with the entry the bytes of its content when they are
    /// stored in its row: one read for a small file's GET instead of two. `None` bytes
    /// when they are elsewhere, or when this store reads them apart (MySQL, a path of
    /// more than [`NAMES_PER_QUERY`] components).
    pub async fn resolve_with_data(
        &self,
        owner: i64,
        from: i64,
        names: &[&str],
    ) -> Result<Option<EntryWithData>, MetaError> {
        if !names.is_empty() && names.len() <= NAMES_PER_QUERY {
            if let Some(found) = self.direct_read(|d| d.resolve_with_data(owner, from, names)) {
                return found;
            }
        }
        Ok(self.resolve_names(owner, from, names).await?.map(|e| (e, None)))
    }

    /// One query: `names[0]` in `from`, `names[1]` in that, and so on.
    async fn resolve_some(&self, owner: i64, from: i64, names: &[&str]) -> Result<Option<Entry>, MetaError> {
        let sql = resolve_sql(names.len());
        let mut q = sqlx::query_as::<_, EntryRow>(sqlx::AssertSqlSafe(sql.to_owned()));
        for name in &names[1..] {
            q = q.bind(name.as_bytes().to_vec());
        }
        let row = q
            .bind(owner)
            .bind(from)
            .bind(names[0].as_bytes().to_vec())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(Entry::from))
    }
}
