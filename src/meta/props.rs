//! WebDAV dead properties of entries.

use super::store::retry_txn;
use super::tx::args;
use super::{Dialect, MetaError, MetaStore};

/// One property: namespace (empty for none), local name, XML value.
pub type Prop = (Vec<u8>, Vec<u8>, Vec<u8>);

/// A change of PROPPATCH: set a value, or remove (value `None`).
pub type PropChange = (Vec<u8>, Vec<u8>, Option<Vec<u8>>);

/// Most properties one entry may carry, and the largest value: a client cannot turn the
/// metadata database into a blob store.
pub const MAX_PROPS: i64 = 256;
pub const MAX_PROP_BYTES: usize = 64 * 1024;

impl MetaStore {
    /// The dead properties of the owner's entries `ids` (entries without any are absent).
    pub async fn props(&self, owner: i64, ids: &[i64]) -> Result<Vec<(i64, Prop)>, MetaError> {
        let mut out = Vec::new();
        for chunk in ids.chunks(500) {
            let sql = format!(
                "SELECT p.entry_id, p.ns, p.name, p.xml FROM dead_props p JOIN entries e ON e.id = p.entry_id \
                 WHERE e.owner = ? AND p.entry_id IN ({}) ORDER BY p.entry_id, p.ns, p.name",
                super::tree::placeholders(chunk.len())
            );
            // Only `?` placeholders are interpolated; every value is bound.
            let mut q = sqlx::query_as::<_, (i64, Vec<u8>, Vec<u8>, Vec<u8>)>(sqlx::AssertSqlSafe(sql)).bind(owner);
            for id in chunk {
                q = q.bind(*id);
            }
            for (id, ns, name, xml) in q.fetch_all(&self.pool).await? {
                out.push((id, (ns, name, xml)));
            }
        }
        Ok(out)
    }

    /// The dead properties of directory `dir` and of each of its children, in one query
    /// (a WebDAV PROPFIND of a whole directory), ordered by entry id.
    pub async fn props_in_dir(&self, owner: i64, dir: i64) -> Result<Vec<(i64, Prop)>, MetaError> {
        let sql = "SELECT p.entry_id, p.ns, p.name, p.xml FROM dead_props p JOIN entries e ON e.id = p.entry_id \
                   WHERE e.owner = ? AND e.parent = ? \
                   UNION ALL \
                   SELECT p.entry_id, p.ns, p.name, p.xml FROM dead_props p JOIN entries e ON e.id = p.entry_id \
                   WHERE e.owner = ? AND e.id = ? \
                   ORDER BY 1, 2, 3";
        let rows = sqlx::query_as::<_, (i64, Vec<u8>, Vec<u8>, Vec<u8>)>(sql)
            .bind(owner)
            .bind(dir)
            .bind(owner)
            .bind(dir)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, ns, name, xml)| (id, (ns, name, xml)))
            .collect())
    }

    /// Applies a PROPPATCH to one of the owner's entries, all or nothing.
    pub async fn patch_props(&self, owner: i64, id: i64, changes: &[PropChange]) -> Result<(), MetaError> {
        retry_txn!(self.try_patch_props(owner, id, changes))
    }

    async fn try_patch_props(&self, owner: i64, id: i64, changes: &[PropChange]) -> Result<(), MetaError> {
        let mut tx = self.write_tx().await?;
        // Lock the entry (and check it is the owner's) before touching its properties.
        let locked = tx
            .exec(
                "UPDATE entries SET ctime = ctime WHERE id = ? AND owner = ?",
                args![id, owner],
            )
            .await?;
        if locked == 0 {
            return Err(MetaError::NotFound);
        }
        let upsert = match self.dialect {
            Dialect::Sqlite => {
                "INSERT INTO dead_props (entry_id, ns, name, xml) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (entry_id, ns, name) DO UPDATE SET xml = excluded.xml"
            }
            Dialect::MySql => {
                "INSERT INTO dead_props (entry_id, ns, name, xml) VALUES (?, ?, ?, ?) \
                 ON DUPLICATE KEY UPDATE xml = VALUES(xml)"
            }
        };
        for (ns, name, value) in changes {
            match value {
                Some(xml) => {
                    tx.exec(upsert, args![id, ns, name, xml]).await?;
                }
                None => {
                    tx.exec(
                        "DELETE FROM dead_props WHERE entry_id = ? AND ns = ? AND name = ?",
                        args![id, ns, name],
                    )
                    .await?;
                }
            }
        }
        let n: Option<i64> = tx
            .opt("SELECT COUNT(*) FROM dead_props WHERE entry_id = ?", args![id])
            .await?;
        if n.unwrap_or(0) > MAX_PROPS {
            return Err(MetaError::TooManyProps);
        }
        tx.commit().await?;
        Ok(())
    }
}
