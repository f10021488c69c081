//! Assembling the services from a [`Config`] and running the HTTP server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::accounts::Accounts;
use crate::blob::Staging;
use crate::config::Config;
use crate::drive::Drive;
use crate::http::{AppState, TicketKey};
use crate::instant::Instant;
use crate::meta::{store_redact_url, MetaError, MetaStore};
use crate::sessions::{RedisSessions, SessionStore, SqlSessions};
use crate::uploads::Uploads;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("metadata database: {0}")]
    Meta(#[from] MetaError),
    #[error("staging directory {path}: {source}")]
    Staging { path: String, source: std::io::Error },
    #[error("upload sessions: {0}")]
    Sessions(crate::sessions::SessionError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
}

/// Everything the front ends share.
#[derive(Clone)]
pub struct Services {
    pub meta: MetaStore,
    pub accounts: Arc<Accounts>,
    pub drive: Arc<Drive>,
    pub staging: Staging,
    pub uploads: Arc<Uploads>,
    pub instant: Arc<Instant>,
}

impl Services {
    /// Connects to the database (applying migrations) and opens the staging directory.
    pub async fn open(cfg: &Config) -> Result<Services, StartError> {
        let url = cfg.database_url();
        if url.starts_with("sqlite:") {
            let dir = cfg.data_dir();
            std::fs::create_dir_all(&dir).map_err(|source| StartError::Staging {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let meta = MetaStore::connect(&url, cfg.database.max_connections).await?;
        let staging_dir = cfg.staging_dir();
        let staging = Staging::open(&staging_dir).map_err(|source| StartError::Staging {
            path: staging_dir.display().to_string(),
            source,
        })?;
        let blobs = Arc::new(staging.objects().clone());
        let max_upload = Some(cfg.server.max_upload_bytes).filter(|n| *n > 0);
        let drive = Drive::new(meta.clone(), staging.clone(), blobs, max_upload);
        let accounts = Accounts::new(meta.clone(), cfg.auth.clone());
        let sessions: Arc<dyn SessionStore> = if cfg.sessions.redis_url.is_empty() {
            Arc::new(SqlSessions::new(meta.clone()))
        } else {
            Arc::new(
                RedisSessions::new(&cfg.sessions.redis_url, &cfg.sessions.key_prefix).map_err(StartError::Sessions)?,
            )
        };
        let uploads = Uploads::new(drive.clone(), sessions, cfg.sessions.chunk_size, cfg.sessions.ttl_secs);
        let key = meta
            .setting_or_init("instant_upload_key", &crate::util::random_hex(32))
            .await?;
        let instant = Arc::new(Instant::new(drive.clone(), hex::decode(key).unwrap_or_default()));
        Ok(Services {
            meta,
            accounts,
            drive,
            staging,
            uploads,
            instant,
        })
    }
}

/// A running server.
pub struct Running {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    http: JoinHandle<std::io::Result<()>>,
    grace: Duration,
    services: Services,
}

/// Starts serving `cfg.server.listen` (port 0 picks a free port; see [`Running::addr`]).
pub async fn start(cfg: Config) -> Result<Running, StartError> {
    let services = Services::open(&cfg).await?;
    let tickets = TicketKey::load(&services.meta).await?;
    let listener = tokio::net::TcpListener::bind(&cfg.server.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: cfg.server.listen.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: cfg.server.listen.clone(),
        source,
    })?;
    // Temp files of uploads a crash cut short are removed before serving (cheap: only
    // uploads in flight live there); the full sweep runs with the periodic housekeeping.
    let stale_after = Duration::from_secs(cfg.storage.stale_after_secs);
    match services.staging.sweep_incoming(stale_after) {
        Ok(0) => {}
        Ok(n) => tracing::info!(removed = n, "removed temp files of interrupted uploads"),
        Err(e) => tracing::warn!(error = %e, "cannot sweep the staging directory"),
    }
    let (stop, stop_rx) = watch::channel(false);
    tokio::spawn(crate::gc::run(
        services.meta.clone(),
        services.staging.clone(),
        services.uploads.clone(),
        Duration::from_secs(cfg.storage.gc_grace_secs),
        stale_after,
        Duration::from_secs(cfg.storage.gc_interval_secs.max(1)),
        stop_rx.clone(),
    ));
    tracing::info!(
        %addr,
        database = %store_redact_url(&cfg.database_url()),
        staging = %cfg.staging_dir().display(),
        "filestore listening"
    );
    let grace = Duration::from_secs(cfg.server.shutdown_grace_secs);
    let state = AppState {
        drive: services.drive.clone(),
        accounts: services.accounts.clone(),
        uploads: services.uploads.clone(),
        instant: services.instant.clone(),
        dav: Arc::new(crate::dav::DavService::new(Box::new(
            filestore_webdav::MemLockSpaces::new(),
        ))),
        config: Arc::new(cfg),
        tickets,
    };
    let app = crate::http::router(state);
    let mut rx = stop_rx;
    let http = tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                let _ = rx.wait_for(|stopped| *stopped).await;
            })
            .await
    });
    Ok(Running {
        addr,
        stop,
        http,
        grace,
        services,
    })
}

impl Running {
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// Stops accepting connections, lets in-flight requests finish within the grace period,
    /// then closes the database pool.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let mut http = self.http;
        match tokio::time::timeout(self.grace, &mut http).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "server error during shutdown"),
            Ok(_) => {}
            Err(_) => {
                tracing::warn!(grace = ?self.grace, "requests still running after the grace period; aborting them");
                http.abort();
            }
        }
        self.services.meta.close().await;
    }
}
