//! Path resolution in one query: WebDAV resolves the path of every request, and one query
//! per path component cost one hop to the database per component.

use super::store::entry_cols;
use super::types::EntryRow;
use super::{Entry, MetaError, MetaStore};

/// Components resolved by one query; a deeper path takes one more query per this many.
const NAMES_PER_QUERY: usize = 8;

/// The query resolving `n` components (1..=[`NAMES_PER_QUERY`]). Its parameters: the
/// names of components 2..=n, then the owner, the starting directory and the first name.
/// Only numbers and fixed text are formatted in; every name is a bound parameter.
pub(super) fn resolve_sql(n: usize) -> String {
    let cols: Vec<String> = entry_cols!().split(", ").map(|c| format!("e{n}.{c}")).collect();
    let mut sql = format!("SELECT {} FROM entries e1", cols.join(", "));
    for i in 2..=n {
        sql.push_str(&format!(
            " JOIN entries e{i} ON e{i}.owner = e1.owner AND e{i}.parent = e{}.id AND e{i}.name = ?",
            i - 1
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

    /// One query: `names[0]` in `from`, `names[1]` in that, and so on.
    async fn resolve_some(&self, owner: i64, from: i64, names: &[&str]) -> Result<Option<Entry>, MetaError> {
        let sql = resolve_sql(names.len());
        let mut q = sqlx::query_as::<_, EntryRow>(sqlx::AssertSqlSafe(sql));
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
