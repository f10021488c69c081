//! A WebDAV server over in-memory trees, for litmus and manual tries:
//!
//! ```sh
//! cargo run -p filestore-webdav --features memory --example memdav -- 127.0.0.1:8090 litmus:litmus
//! litmus -k http://127.0.0.1:8090/dav/ litmus litmus
//! ```
//!
//! Arguments: listen address (default `127.0.0.1:8090`), then `user:password` pairs
//! (default `litmus:litmus`). Each user has an empty tree and locks of their own.

use filestore_webdav::testing::{serve, TestUser};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8090".into());
    let mut users: Vec<TestUser> = args
        .filter_map(|a| a.split_once(':').map(|(u, p)| TestUser::new(u, p)))
        .collect();
    if users.is_empty() {
        users.push(TestUser::new("litmus", "litmus"));
    }
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!(
        "serving http://{}/dav/ for {} user(s)",
        listener.local_addr()?,
        users.len()
    );
    serve(listener, "/dav", users).await
}
