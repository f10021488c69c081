//! Metadata: users, tokens, content rows and the per-user tree, in SQLite or MySQL/MariaDB.
//!
//! There is one implementation, [`MetaStore`], over sqlx's `Any` driver: the two databases
//! share every query except the few marked with [`Dialect`] (upserts). That is why this is
//! a concrete type and not a trait: the driver is the interface, and the conformance tests
//! (`tests.rs`) run the same scenarios against both databases.
//!
//! Every operation that touches several rows runs in one transaction. Write transactions
//! start with a write, so that in MySQL they take their row locks first, and on SQLite they
//! are serialised by an in-process gate (SQLite allows one writer; a deferred transaction
//! that reads and then writes can fail with SQLITE_BUSY instead of waiting).

mod checkpoint;
mod direct;
mod error;
mod outbox;
mod props;
mod resolve;
mod sessions;
mod store;
mod tree;
mod tx;
mod types;

pub use direct::DirectError;
pub use error::MetaError;
pub use outbox::{state as job_state, Job, Moved};
pub use props::{Prop, PropChange, MAX_PROPS, MAX_PROP_BYTES};
pub use resolve::EntryWithData;
pub use store::{redact_url as store_redact_url, Dialect, MetaStore};
pub use types::{
    CommitFile, Conflict, Content, DeleteStats, Entry, EntryKind, NewContent, Overwrite, User, STORE_INLINE,
    STORE_LOCAL, STORE_S3,
};

/// Milliseconds since the Unix epoch, the unit of every timestamp in the schema.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What a transaction calls, under the content row's lock, to make sure the bytes of a
/// content exist in the store before the row that points at them is committed.
pub type PlaceFn<'a> = dyn Fn(&Content) -> std::io::Result<()> + Send + Sync + 'a;

/// What a garbage-collection transaction calls, under the row's lock, to remove the bytes.
pub type RemoveFn<'a> = dyn Fn(&Content) -> std::io::Result<()> + Send + Sync + 'a;
