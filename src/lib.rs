//! filestore: a cloud drive you can mount.
//!
//! Data flows one way: a protocol front end (`http`) calls the [`drive::Drive`], which
//! keeps the per-user tree and content references in the [`meta::MetaStore`] and the bytes
//! in the content store ([`blob`]).

#![deny(clippy::undocumented_unsafe_blocks)]

pub mod accounts;
pub mod blob;
pub mod client;
pub mod config;
pub mod dav;
pub mod dav_locks;
pub mod drive;
pub mod gc;
pub mod http;
pub mod instant;
pub mod meta;
pub mod metrics;
pub mod mount_port;
pub mod names;
pub mod ratelimit;
pub mod server;
pub mod sessions;
pub mod systemd;
pub mod transfer;
pub mod uploads;
pub mod util;
