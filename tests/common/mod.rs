//! Shared test support: fresh databases (SQLite in a temp dir, or a new MariaDB database),
//! and the real server on an ephemeral loopback port.
#![allow(dead_code)]

use std::time::Duration;

use filestore::config::Config;
use filestore::server::{self, Running};
use sqlx::Connection;

/// The databases a scenario runs against: SQLite always, MariaDB when
/// `FILESTORE_TEST_MYSQL_URL` names a server (the test command always sets it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    MySql,
}

pub fn mysql_base() -> Option<String> {
    std::env::var("FILESTORE_TEST_MYSQL_URL").ok().filter(|s| !s.is_empty())
}

/// A fresh, empty database; MariaDB databases are dropped by `cleanup`.
pub struct TestDb {
    pub url: String,
    mysql: Option<(String, String)>,
    pub dir: tempfile::TempDir,
}

impl TestDb {
    /// `None` when the backend is MySQL and no server is configured.
    pub async fn new(backend: Backend) -> Option<TestDb> {
        let dir = tempfile::tempdir().expect("tempdir");
        match backend {
            Backend::Sqlite => {
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("meta.db").display());
                Some(TestDb { url, mysql: None, dir })
            }
            Backend::MySql => {
                let Some(base) = mysql_base() else {
                    eprintln!("FILESTORE_TEST_MYSQL_URL is not set: skipping the MariaDB run");
                    return None;
                };
                let name = format!("fstest_{}", filestore::util::random_hex(6));
                let mut c = sqlx::mysql::MySqlConnection::connect(&base)
                    .await
                    .expect("connect to MariaDB");
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut c)
                    .await
                    .expect("create test database");
                let url = format!("{}/{}", base.trim_end_matches('/'), name);
                Some(TestDb {
                    url,
                    mysql: Some((base, name)),
                    dir,
                })
            }
        }
    }

    pub async fn cleanup(self) {
        if let Some((base, name)) = &self.mysql {
            if let Ok(mut c) = sqlx::mysql::MySqlConnection::connect(base).await {
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name}")))
                    .execute(&mut c)
                    .await;
            }
        }
    }
}

/// A configuration for a test server: ephemeral port, everything under the test's dir.
pub fn test_config(db: &TestDb) -> Config {
    let mut cfg = Config {
        data_dir: db.dir.path().join("data").display().to_string(),
        ..Default::default()
    };
    cfg.database.url = db.url.clone();
    cfg.database.max_connections = 8;
    cfg.server.listen = "127.0.0.1:0".into();
    cfg.server.shutdown_grace_secs = 5;
    // Tests sign in often from one address; the limiter has its own test.
    cfg.auth.signin_burst_per_ip = 10_000;
    cfg.auth.signin_burst_per_user = 10_000;
    cfg.auth.min_password_len = 8;
    cfg
}

pub struct TestServer {
    pub base: String,
    pub running: Option<Running>,
    pub db: TestDb,
    pub http: reqwest::Client,
}

impl TestServer {
    pub async fn start(backend: Backend) -> Option<TestServer> {
        Self::start_with(backend, |_| {}).await
    }

    pub async fn start_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Option<TestServer> {
        let db = TestDb::new(backend).await?;
        let mut cfg = test_config(&db);
        tweak(&mut cfg);
        let running = server::start(cfg).await.expect("server starts");
        let base = format!("http://{}", running.addr);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        Some(TestServer {
            base,
            running: Some(running),
            db,
            http,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("running")
    }

    /// Signs up and signs in through the JSON API; returns the token.
    pub async fn user(&self, name: &str) -> String {
        let creds = serde_json::json!({ "username": name, "password": "password-of-".to_string() + name });
        let r = self
            .http
            .post(self.url("/api/v1/auth/signup"))
            .json(&creds)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "signup {name}: {}", r.text().await.unwrap());
        let r = self
            .http
            .post(self.url("/api/v1/auth/signin"))
            .json(&creds)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().await.unwrap();
        v["token"].as_str().unwrap().to_string()
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
        self.db.cleanup().await;
    }
}

/// Runs a scenario against SQLite, then MariaDB.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident => $scenario:ident;)*) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$scenario($crate::common::Backend::Sqlite).await;
                }
            )*
        }
        mod mysql {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$scenario($crate::common::Backend::MySql).await;
                }
            )*
        }
    };
}

/// Sends raw bytes to the server and returns the status and body of the response (for
/// requests no well-behaved client library would send).
pub async fn raw_request(base: &str, request: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut sock = tokio::net::TcpStream::connect(addr).await.expect("connect");
    sock.write_all(request).await.expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // Read until the headers and the announced body have arrived (the server may keep the
    // connection open).
    loop {
        let n = sock.read(&mut chunk).await.expect("read");
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
