//! Configuration: defaults, then one TOML file, then `FILESTORE_<SECTION>__<KEY>` variables,
//! then command-line flags. Unknown keys, in the file or in the environment, are errors that
//! name the key.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole configuration. Every field has a default, so an empty file (or none) runs the
/// embedded default: SQLite and local content under `data_dir`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the embedded default keeps its SQLite database and staging area. Empty means
    /// `$XDG_DATA_HOME/filestore` when XDG_DATA_HOME is set, else `./filestore-data`.
    pub data_dir: String,
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub storage: StorageConfig,
    pub auth: AuthConfig,
    pub sessions: SessionsConfig,
    pub s3: S3Config,
    pub queue: QueueConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: String,
    /// Base URL clients reach this server at (used in generated download links). Empty
    /// means the request's Host header.
    pub public_url: String,
    /// Largest accepted upload in bytes; bigger bodies get 413 and nothing is stored.
    pub max_upload_bytes: u64,
    /// Seconds in-flight requests get to finish after SIGTERM.
    pub shutdown_grace_secs: u64,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite:///path/meta.db` or `mysql://user:pass@host:3306/db`. Empty means a SQLite
    /// file in the data dir.
    pub url: String,
    /// Connections in the pool.
    pub max_connections: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Staging directory (uploads land here; content stays here when no object store is
    /// configured). Several gateways must share it. Empty means `<data_dir>/staging`.
    pub staging_dir: String,
    /// Seconds unreferenced content is kept before its bytes are deleted, so that a
    /// re-upload in the meantime revives it instead of storing it again.
    pub gc_grace_secs: u64,
    /// Seconds between garbage-collection passes.
    pub gc_interval_secs: u64,
    /// Seconds after which an untouched temp file or an object without a database row is
    /// considered left over by a crash and removed.
    pub stale_after_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Lifetime of a bearer token in seconds.
    pub token_ttl_secs: u64,
    /// Whether anyone may create an account through the API (`filestore user add` always can).
    pub signup: bool,
    /// Shortest accepted password, in characters.
    pub min_password_len: usize,
    /// Failed sign-ins allowed per user name in a burst, and refilled per minute.
    pub signin_burst_per_user: u32,
    pub signin_per_minute_per_user: u32,
    /// Failed sign-ins allowed per client address in a burst, and refilled per minute.
    pub signin_burst_per_ip: u32,
    pub signin_per_minute_per_ip: u32,
    /// Lifetime of the links `/file/downloadurl` hands out, in seconds.
    pub download_link_ttl_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsConfig {
    /// Redis for chunked-upload sessions, shared by every gateway (`redis://host:6379/0`).
    /// Empty keeps them in the metadata database (the embedded default).
    pub redis_url: String,
    /// Prefix of every Redis key, so several deployments can share one Redis.
    pub key_prefix: String,
    /// Seconds an upload session lives without activity.
    pub ttl_secs: u64,
    /// Chunk size offered to clients, in bytes (the seed's 5 MiB).
    pub chunk_size: u64,
}

/// Object storage (Ceph RGW, Aliyun OSS, any S3). Content moves there from staging in the
/// background; with no endpoint, content stays on the staging disk.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// `http://127.0.0.1:7480` for a local Ceph RGW. Empty disables object storage.
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    /// Prepended to the content SHA-1 to form the object key.
    pub key_prefix: String,
    pub access_key: String,
    pub secret_key: String,
    /// Path-style addressing (Ceph RGW); false for virtual-hosted (Aliyun OSS).
    pub path_style: bool,
    /// Content at least this large goes up as a multipart upload of parts this size.
    pub part_size: u64,
    /// Parts uploaded at once per object.
    pub parallelism: usize,
    /// Whether `/file/downloadurl` hands out presigned S3 URLs for transferred content.
    pub presign_downloads: bool,
    pub presign_ttl_secs: u64,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            endpoint: String::new(),
            region: "us-east-1".into(),
            bucket: "filestore".into(),
            key_prefix: "objects/".into(),
            access_key: String::new(),
            secret_key: String::new(),
            path_style: true,
            part_size: 16 << 20,
            parallelism: 4,
            presign_downloads: false,
            presign_ttl_secs: 300,
        }
    }
}

impl fmt::Debug for S3Config {
    // The secret key must not reach logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("key_prefix", &self.key_prefix)
            .field("access_key", &self.access_key)
            .field("secret_key", &if self.secret_key.is_empty() { "" } else { "***" })
            .field("path_style", &self.path_style)
            .field("part_size", &self.part_size)
            .field("parallelism", &self.parallelism)
            .finish()
    }
}

/// The transfer queue. With an AMQP URL, jobs go through RabbitMQ to `filestore transfer`
/// workers; without one (and with S3 configured), an in-process worker drains the outbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// `amqp://guest:guest@127.0.0.1:5672/%2f`. Empty: in-process transfers.
    pub amqp_url: String,
    /// The seed's names: exchange `uploadserver.trans`, queue `uploadserver.trans.oss`,
    /// routing key `oss`, dead letters in `uploadserver.trans.oss.err`.
    pub exchange: String,
    pub queue: String,
    pub routing_key: String,
    pub dead_letter_queue: String,
    /// Deliveries a worker takes at once.
    pub prefetch: u16,
    /// Attempts before a job is dead-lettered.
    pub max_attempts: u32,
    /// First retry delay in seconds; doubles per attempt.
    pub retry_base_secs: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            amqp_url: String::new(),
            exchange: "uploadserver.trans".into(),
            queue: "uploadserver.trans.oss".into(),
            routing_key: "oss".into(),
            dead_letter_queue: "uploadserver.trans.oss.err".into(),
            prefetch: 8,
            max_attempts: 5,
            retry_base_secs: 2,
        }
    }
}

impl Default for SessionsConfig {
    fn default() -> Self {
        SessionsConfig {
            redis_url: String::new(),
            key_prefix: "filestore:".into(),
            ttl_secs: 24 * 3600,
            chunk_size: 5 << 20,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            public_url: String::new(),
            max_upload_bytes: 64 << 30,
            shutdown_grace_secs: 30,
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: String::new(),
            max_connections: 16,
        }
    }
}

impl fmt::Debug for DatabaseConfig {
    // The URL may carry a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &crate::meta::store_redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            staging_dir: String::new(),
            gc_grace_secs: 3600,
            gc_interval_secs: 60,
            stale_after_secs: 3600,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            token_ttl_secs: 7 * 24 * 3600,
            signup: true,
            min_password_len: 8,
            signin_burst_per_user: 10,
            signin_per_minute_per_user: 5,
            signin_burst_per_ip: 30,
            signin_per_minute_per_ip: 30,
            download_link_ttl_secs: 300,
        }
    }
}

impl Config {
    /// Loads the layers: defaults, the file at `path` (if any), then `FILESTORE_*` variables
    /// from `env`.
    pub fn load(path: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let mut table = toml::Table::try_from(Config::default()).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if let Some(path) = path {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            // Deserialising the file on its own gives serde's message naming an unknown key.
            toml::from_str::<Config>(&text).map_err(|e| ConfigError::File {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
            let file: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::File {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
            merge(&mut table, file);
        }
        for (var, value) in env {
            apply_env(&mut table, &var, &value)?;
        }
        let cfg: Config = table
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !self.database.url.is_empty() && crate::meta::Dialect::from_url(&self.database.url).is_none() {
            return Err(ConfigError::Invalid(
                "database.url must start with sqlite:// or mysql://".into(),
            ));
        }
        if self.sessions.chunk_size < 64 * 1024 || self.sessions.chunk_size > 1 << 30 {
            return Err(ConfigError::Invalid(
                "sessions.chunk_size must be between 64 KiB and 1 GiB".into(),
            ));
        }
        if self.server.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::Invalid(format!(
                "server.listen `{}` is not an address:port",
                self.server.listen
            )));
        }
        Ok(())
    }

    /// The data directory after defaults are applied.
    pub fn data_dir(&self) -> PathBuf {
        if !self.data_dir.is_empty() {
            return PathBuf::from(&self.data_dir);
        }
        match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
            Some(x) => PathBuf::from(x).join("filestore"),
            None => PathBuf::from("filestore-data"),
        }
    }

    /// The database URL after defaults are applied.
    pub fn database_url(&self) -> String {
        if !self.database.url.is_empty() {
            return self.database.url.clone();
        }
        let path = absolute(&self.data_dir().join("meta.db"));
        format!("sqlite://{}?mode=rwc", path.display())
    }

    pub fn staging_dir(&self) -> PathBuf {
        if !self.storage.staging_dir.is_empty() {
            return PathBuf::from(&self.storage.staging_dir);
        }
        self.data_dir().join("staging")
    }

    /// The configuration as TOML, with every option and its value (for `check-config`).
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        shown.database.url = crate::meta::store_redact_url(&shown.database.url);
        shown.sessions.redis_url = crate::meta::store_redact_url(&shown.sessions.redis_url);
        shown.queue.amqp_url = crate::meta::store_redact_url(&shown.queue.amqp_url);
        if !shown.s3.secret_key.is_empty() {
            shown.s3.secret_key = "***".into();
        }
        toml::to_string_pretty(&shown).unwrap_or_default()
    }
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Applies `FILESTORE_SECTION__KEY=value` to the table, typed like the default it replaces.
fn apply_env(table: &mut toml::Table, var: &str, value: &str) -> Result<(), ConfigError> {
    let Some(rest) = var.strip_prefix("FILESTORE_") else {
        return Ok(());
    };
    // Only SECTION__KEY variables override the file; other FILESTORE_* variables belong to
    // the command line (FILESTORE_DATA_DIR...), the client, tests or deployment scripts.
    if !rest.contains("__") || rest.starts_with("TEST_") {
        return Ok(());
    }
    let err = |message: String| ConfigError::Env {
        var: var.to_string(),
        message,
    };
    let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
    let (last, sections) = path.split_last().expect("split yields at least one part");
    let mut cur = &mut *table;
    for s in sections {
        cur = match cur.get_mut(s) {
            Some(toml::Value::Table(t)) => t,
            _ => return Err(err(format!("unknown section `{s}`"))),
        };
    }
    let new = match cur.get(last) {
        Some(toml::Value::String(_)) => toml::Value::String(value.to_string()),
        Some(toml::Value::Integer(_)) => {
            toml::Value::Integer(value.parse().map_err(|_| err(format!("`{value}` is not an integer")))?)
        }
        Some(toml::Value::Boolean(_)) => toml::Value::Boolean(
            value
                .parse()
                .map_err(|_| err(format!("`{value}` is not true or false")))?,
        ),
        Some(_) => return Err(err(format!("`{last}` cannot be set from the environment"))),
        None => return Err(err(format!("unknown key `{}`", path.join(".")))),
    };
    cur.insert(last.clone(), new);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn defaults_are_the_embedded_drive() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:8080");
        assert!(c.database_url().starts_with("sqlite://"));
        assert_eq!(c.auth.token_ttl_secs, 604800);
    }

    #[test]
    fn file_then_env() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.toml");
        std::fs::write(
            &p,
            "[database]\nurl = \"mysql://u:secret@127.0.0.1/x\"\n[auth]\nsignup = false\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&p),
            env(&[("FILESTORE_AUTH__TOKEN_TTL_SECS", "60"), ("FILESTORE_LOG", "debug")]),
        )
        .unwrap();
        assert_eq!(c.database.url, "mysql://u:secret@127.0.0.1/x");
        assert!(!c.auth.signup);
        assert_eq!(c.auth.token_ttl_secs, 60);
        assert!(
            !format!("{:?}", c).contains("u:secret@"),
            "Debug must not print the database password"
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.toml");
        std::fs::write(&p, "[server]\nlisten = \"127.0.0.1:1\"\nlisten_port = 3\n").unwrap();
        let e = Config::load(Some(&p), env(&[])).unwrap_err().to_string();
        assert!(e.contains("listen_port"), "{e}");
        let e = Config::load(None, env(&[("FILESTORE_SERVER__NOPE", "1")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("server.nope"), "{e}");
        let e = Config::load(None, env(&[("FILESTORE_AUTH__TOKEN_TTL_SECS", "soon")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not an integer"), "{e}");
    }
}
