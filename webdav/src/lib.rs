//! WebDAV (RFC 4918, classes 1 and 2) for filestore, on dav-server.
//!
//! This crate does not know the core. It defines the port it needs, [`DavPort`]: one
//! user's file tree with stable entry ids, paged listings, streaming upload and read,
//! rename/copy with overwrite rules, and dead properties. The core implements it over
//! its namespace and calls [`WebDav::handle`] for each authenticated request:
//!
//! ```ignore
//! let webdav = WebDav::new("/dav");
//! let locks = MemLockSpaces::new();            // or a shared (Redis) `LockSpaces`
//! // per request, after authentication:
//! let user = DavUser {
//!     principal: user_id.to_string(),
//!     port: Arc::new(CorePort::new(namespace.clone(), user_id)),
//!     locks: locks.for_user(&user_id.to_string()),
//! };
//! let response = webdav.handle(request, user).await;   // Response<DavBody>
//! ```
//!
//! Module map: [`port`] (the trait and its types), [`error`] (the port error and its
//! one mapping to statuses), `fs` (dav-server's file system over the port), `file`
//! (GET reads, streaming PUT), `meta` (entry metadata), `hint` (per-request
//! shortcuts), [`locks`] (per-user lock systems), `handler` (the entry point), `get` and
//! `propfind` (GET/HEAD of a file and PROPFIND Depth 0/1 answered without dav-server),
//! `body` (the response body).

mod body;
pub mod error;
mod file;
mod fs;
mod get;
mod handler;
mod hint;
pub mod locks;
mod meta;
pub mod port;
mod propfind;

#[cfg(feature = "memory")]
#[doc(hidden)]
pub mod memory;
#[cfg(feature = "memory")]
#[doc(hidden)]
pub mod testing;

/// The dav-server version this crate is built on, for implementing a shared lock
/// system (`dav_server::ls::DavLockSystem`) without a second copy of the crate.
pub use dav_server;
pub use dav_server::ls::DavLockSystem;
pub use error::PortError;
pub use handler::{DavBody, DavUser, WebDav};
pub use locks::{ExpiringLs, LockSpaces, MemLockSpaces};
pub use port::{
    Conflict, DavPort, DeadProp, Entry, EntryId, EntryKind, Millis, Overwrite, PropPatch, Quota, ReadBody, UploadBody,
    UploadOptions,
};

/// Children fetched per `list` call (PROPFIND Depth 1 makes `ceil(n / LIST_PAGE)`
/// listing calls, plus one when `n` is a multiple).
pub const LIST_PAGE: usize = fs::LIST_PAGE;
