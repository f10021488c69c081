//! Assembling the services from a [`Config`] and running the HTTP server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::accounts::Accounts;
use crate::blob::s3::S3Store;
use crate::blob::{Staging, StoreRouter};
use crate::config::Config;
use crate::drive::Drive;
use crate::http::{AppState, TicketKey};
use crate::instant::Instant;
use crate::meta::{store_redact_url, MetaError, MetaStore};
use crate::sessions::{RedisSessions, SessionStore, SqlSessions};
use crate::transfer::Transfers;
use crate::uploads::Uploads;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("metadata database: {0}")]
    Meta(#[from] MetaError),
    #[error("staging directory {path}: {source}")]
    Staging { path: String, source: std::io::Error },
    #[error("object storage: {0}")]
    ObjectStore(crate::blob::BlobError),
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
    /// Object storage, when configured.
    pub s3: Option<Arc<S3Store>>,
    /// The transfer pipeline, when object storage is configured.
    pub transfers: Option<Transfers>,
}

impl Services {
    /// Housekeeping over these services, with the configured grace and staleness.
    pub fn housekeeping(&self, cfg: &Config) -> crate::gc::Housekeeping {
        crate::gc::Housekeeping {
            meta: self.meta.clone(),
            staging: self.staging.clone(),
            uploads: self.uploads.clone(),
            s3: self.s3.clone(),
            grace: Duration::from_secs(cfg.storage.gc_grace_secs),
            stale_after: Duration::from_secs(cfg.storage.stale_after_secs),
        }
    }

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
        let s3 = if cfg.s3.endpoint.is_empty() {
            None
        } else {
            Some(Arc::new(S3Store::new(&cfg.s3).await.map_err(StartError::ObjectStore)?))
        };
        let meta = MetaStore::connect(&url, cfg.database.max_connections)
            .await?
            .with_transfers(s3.is_some());
        let staging_dir = cfg.staging_dir();
        let staging = Staging::open(&staging_dir).map_err(|source| StartError::Staging {
            path: staging_dir.display().to_string(),
            source,
        })?;
        let blobs = Arc::new(StoreRouter {
            local: staging.objects().clone(),
            s3: s3.clone(),
        });
        let transfers = s3.clone().map(|s3| Transfers {
            meta: meta.clone(),
            local: staging.objects().clone(),
            s3,
            queue: cfg.queue.clone(),
            store_type: if cfg.s3.path_style { 2 } else { 3 },
        });
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
            s3,
            transfers,
        })
    }
}

/// A running server.
pub struct Running {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    stop_background: watch::Sender<bool>,
    background: Vec<JoinHandle<()>>,
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
    // Two stop signals: HTTP stops first (in-flight requests finish and may commit new
    // transfer jobs), then the background tasks, so the relay's last pass sees those jobs.
    let (stop, stop_rx) = watch::channel(false);
    let (stop_background, background_rx) = watch::channel(false);
    let mut background = Vec::new();
    if let Some(t) = &services.transfers {
        if let Err(e) = t.s3.ensure_bucket().await {
            tracing::warn!(error = %e, "object storage unreachable at start; transfers will retry");
        }
        background.push(if cfg.queue.amqp_url.is_empty() {
            tokio::spawn(crate::transfer::inprocess::run(t.clone(), background_rx.clone()))
        } else {
            tokio::spawn(crate::transfer::amqp::relay(t.clone(), background_rx.clone()))
        });
    }
    // SQLite's log is checkpointed here rather than inside whichever request crosses the line.
    background.push(tokio::spawn(
        services.meta.clone().run_checkpoints(background_rx.clone()),
    ));
    background.push(tokio::spawn(
        services
            .housekeeping(&cfg)
            .run(Duration::from_secs(cfg.storage.gc_interval_secs.max(1)), background_rx),
    ));
    let locks: Box<dyn filestore_webdav::LockSpaces> = if cfg.sessions.redis_url.is_empty() {
        Box::new(filestore_webdav::MemLockSpaces::new())
    } else {
        // Several gateways share WebDAV locks through the same Redis as upload sessions.
        Box::new(
            crate::dav_locks::RedisLockSpaces::new(&cfg.sessions.redis_url, &cfg.sessions.key_prefix)
                .map_err(|e| StartError::Sessions(crate::sessions::SessionError::Other(e.to_string())))?,
        )
    };
    tracing::info!(
        %addr,
        database = %store_redact_url(&cfg.database_url()),
        staging = %cfg.staging_dir().display(),
        "filestore listening"
    );
    let grace = Duration::from_secs(cfg.server.shutdown_grace_secs);
    let state = AppState::new(crate::http::Services {
        drive: services.drive.clone(),
        accounts: services.accounts.clone(),
        uploads: services.uploads.clone(),
        instant: services.instant.clone(),
        transfers: services.transfers.clone(),
        dav: Arc::new(crate::dav::DavService::new(locks)),
        config: Arc::new(cfg),
        tickets,
    });
    let app = crate::http::router(state);
    let mut rx = stop_rx;
    // A response goes out as headers, then body: with Nagle on, a small body waits behind
    // the headers for the client's delayed ACK (40 ms per ranged read of a FUSE mount).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY");
        }
    });
    let http = tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                let _ = rx.wait_for(|stopped| *stopped).await;
            })
            .await
    });
    // Listening and migrated: a Type=notify unit is now started. The watchdog is fed only
    // while the database answers, so a wedged server gets restarted.
    crate::systemd::notify("READY=1");
    if let Some(every) = crate::systemd::watchdog_interval() {
        let (meta, mut stop) = (services.meta.clone(), stop.subscribe());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every / 2) => {}
                    _ = stop.changed() => return,
                }
                if tokio::time::timeout(every / 2, meta.ping())
                    .await
                    .is_ok_and(|r| r.is_ok())
                {
                    crate::systemd::notify("WATCHDOG=1");
                }
            }
        });
    }
    Ok(Running {
        addr,
        stop,
        stop_background,
        background,
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
    /// then stops the background tasks (the transfer relay publishes what is due one last
    /// time) and closes the database pool.
    pub async fn shutdown(self) {
        crate::systemd::notify("STOPPING=1");
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
        let _ = self.stop_background.send(true);
        for task in self.background {
            if tokio::time::timeout(Duration::from_secs(10), task).await.is_err() {
                tracing::warn!("a background task did not stop in time");
            }
        }
        self.services.meta.close().await;
    }
}
