//! The command-line client's library side: the JSON API client, saved credentials, and
//! resumable transfers with progress.

pub mod api;
pub mod credentials;
pub mod progress;
pub mod transfer;

pub use api::{Client, ClientError};
