//! WebDAV at `/dav/`: the webdav crate's port implemented over the drive, and the HTTP
//! glue (authentication, lock spaces).
//!
//! Clients send HTTP Basic credentials on every request. Verifying argon2id each time
//! would cap the server at a few dozen requests per second, so a verified header is
//! remembered for a minute, keyed by an HMAC of the header (never the password), with the
//! account and its root directory. Whether the account is still enabled is read again
//! from the database at most once a second per header ([`USER_RECHECK`]), not on every
//! request: a disabled account is refused within a second.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use filestore_webdav::{
    Conflict as DavConflict, DavPort, DavUser, DeadProp, Entry as DavEntry, EntryId, EntryKind as DavKind, LockSpaces,
    Millis, Overwrite as DavOverwrite, PortError, PropPatch, Quota, ReadBody, UploadBody, UploadOptions, WebDav,
};
use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::accounts::{Accounts, AuthError};
use crate::drive::{Drive, DriveError, UploadTarget};
use crate::meta::{Conflict, Content, Entry, EntryKind, MetaError, Overwrite, User, STORE_LOCAL};

/// The port of one user's tree.
pub struct CorePort {
    drive: Arc<Drive>,
    user: User,
    root: i64,
}

fn port_err(e: DriveError) -> PortError {
    use crate::blob::BlobError;
    match e {
        DriveError::Name(_) => PortError::InvalidName,
        DriveError::Meta(m) => meta_err(m),
        DriveError::Blob(BlobError::TooLarge { .. }) => PortError::TooLarge,
        DriveError::Blob(other) => PortError::other(other),
    }
}

fn meta_err(e: MetaError) -> PortError {
    match e {
        MetaError::NotFound => PortError::NotFound,
        MetaError::AlreadyExists => PortError::AlreadyExists,
        MetaError::NotADirectory => PortError::NotADirectory,
        MetaError::IsADirectory => PortError::IsADirectory,
        MetaError::NotEmpty => PortError::NotEmpty,
        MetaError::Cycle | MetaError::Root => PortError::Forbidden(e.to_string()),
        MetaError::TooManyProps => PortError::InsufficientStorage,
        other => PortError::other(other),
    }
}

fn dav_entry(e: Entry) -> DavEntry {
    DavEntry {
        id: e.id,
        parent: e.parent,
        name: e.name,
        kind: match e.kind {
            EntryKind::Dir => DavKind::Dir,
            EntryKind::File => DavKind::File,
        },
        size: e.size,
        sha1: e.sha1,
        mode: e.mode as u32,
        mtime: e.mtime,
        ctime: e.ctime,
        created: e.created_at,
    }
}

/// Property rows (ordered by entry id) grouped per entry.
fn group_props(rows: Vec<(i64, crate::meta::Prop)>) -> Vec<(EntryId, Vec<DeadProp>)> {
    let mut out: Vec<(EntryId, Vec<DeadProp>)> = Vec::new();
    for (id, (ns, name, xml)) in rows {
        let prop = DeadProp {
            namespace: (!ns.is_empty()).then(|| String::from_utf8_lossy(&ns).into_owned()),
            name: String::from_utf8_lossy(&name).into_owned(),
            xml,
        };
        match out.last_mut() {
            Some((last, props)) if *last == id => props.push(prop),
            _ => out.push((id, vec![prop])),
        }
    }
    out
}

fn overwrite(o: DavOverwrite) -> Overwrite {
    match o {
        DavOverwrite::No => Overwrite::No,
        DavOverwrite::Posix => Overwrite::Posix,
        DavOverwrite::Any => Overwrite::Any,
    }
}

impl CorePort {
    pub async fn new(drive: Arc<Drive>, user: User) -> Result<Self, MetaError> {
        let root = drive.meta().root(user.id).await?.id;
        Ok(CorePort { drive, user, root })
    }

    /// A port on a root directory id already known (a user's root never changes).
    pub fn with_root(drive: Arc<Drive>, user: User, root: i64) -> Self {
        CorePort { drive, user, root }
    }

    fn owner(&self) -> i64 {
        self.user.id
    }
}

#[async_trait]
impl DavPort for CorePort {
    fn root_id(&self) -> EntryId {
        self.root
    }

    async fn get(&self, id: EntryId) -> Result<DavEntry, PortError> {
        match self.drive.meta().entry(self.owner(), id).await.map_err(meta_err)? {
            Some(e) => Ok(dav_entry(e)),
            None => Err(PortError::NotFound),
        }
    }

    async fn lookup(&self, parent: EntryId, name: &str) -> Result<Option<DavEntry>, PortError> {
        Ok(self
            .drive
            .meta()
            .lookup(self.owner(), parent, name)
            .await
            .map_err(meta_err)?
            .map(dav_entry))
    }

    /// One query for the whole path instead of one per component.
    async fn resolve(&self, from: EntryId, names: &[&str]) -> Result<Option<DavEntry>, PortError> {
        if names.is_empty() {
            return self.get(from).await.map(Some);
        }
        Ok(self
            .drive
            .meta()
            .resolve_names(self.owner(), from, names)
            .await
            .map_err(meta_err)?
            .map(dav_entry))
    }

    /// Small content is stored in its row: read with the entry by the same query.
    async fn resolve_with_content(
        &self,
        from: EntryId,
        names: &[&str],
    ) -> Result<Option<(DavEntry, Option<Bytes>)>, PortError> {
        if names.is_empty() {
            return self.get(from).await.map(|e| Some((e, None)));
        }
        let found = self
            .drive
            .meta()
            .resolve_with_data(self.owner(), from, names)
            .await
            .map_err(meta_err)?;
        Ok(found.map(|(e, data)| (dav_entry(e), data.map(Bytes::from))))
    }

    fn sent_with_entry(&self, n: u64) {
        crate::metrics::add(&crate::metrics::global().bytes_out, n);
    }

    async fn list(&self, dir: EntryId, after: Option<&str>, limit: usize) -> Result<Vec<DavEntry>, PortError> {
        let page = self
            .drive
            .meta()
            .list(self.owner(), dir, after.unwrap_or(""), limit as i64)
            .await
            .map_err(meta_err)?;
        Ok(page.into_iter().map(dav_entry).collect())
    }

    async fn mkdir(&self, parent: EntryId, name: &str) -> Result<DavEntry, PortError> {
        self.drive
            .mkdir(&self.user, parent, name)
            .await
            .map(dav_entry)
            .map_err(port_err)
    }

    async fn upload(
        &self,
        parent: EntryId,
        name: &str,
        body: UploadBody,
        options: UploadOptions,
    ) -> Result<DavEntry, PortError> {
        let conflict = match options.conflict {
            DavConflict::Replace => Conflict::Replace,
            DavConflict::Fail => Conflict::Fail,
        };
        let target = UploadTarget {
            parent,
            name: name.to_string(),
            conflict,
            mtime: options.mtime,
        };
        self.drive
            .upload(&self.user, target, body)
            .await
            .map(dav_entry)
            .map_err(port_err)
    }

    async fn read(&self, entry: &DavEntry, offset: u64, len: u64) -> Result<ReadBody, PortError> {
        let sha1 = entry.sha1.as_deref().ok_or(PortError::IsADirectory)?;
        // Content on the local disk is read without its row: the file is named by its
        // SHA-1 and complete once it has that name, and the row would only say where it
        // is (one query per GET, most of a small GET's database time). Content moved to
        // object storage is no longer on the disk: then the row says where it went. Small
        // content is in its row, which is then read first.
        let size = entry.size.max(0) as u64;
        if size > crate::blob::INLINE_MAX {
            let offset = offset.min(size);
            let local = Content {
                sha1: sha1.to_owned(),
                sha256: String::new(),
                size: entry.size,
                refcount: 0,
                store: STORE_LOCAL.to_owned(),
                object_key: None,
                zero_since: None,
                created_at: 0,
                data: None,
            };
            match self.drive.read(&local, offset, len.min(size - offset)).await {
                Ok(stream) => return Ok(stream.map(|r| r.map_err(PortError::other)).boxed()),
                Err(DriveError::Blob(crate::blob::BlobError::Missing(_))) => {}
                Err(e) => return Err(port_err(e)),
            }
        }
        let content = self
            .drive
            .meta()
            .content(sha1)
            .await
            .map_err(meta_err)?
            .ok_or(PortError::NotFound)?;
        let size = content.size as u64;
        let offset = offset.min(size);
        let len = len.min(size - offset);
        let stream = self.drive.read(&content, offset, len).await.map_err(port_err)?;
        Ok(stream.map(|r| r.map_err(PortError::other)).boxed())
    }

    async fn rename(
        &self,
        id: EntryId,
        new_parent: EntryId,
        new_name: &str,
        ow: DavOverwrite,
    ) -> Result<DavEntry, PortError> {
        self.drive
            .rename(&self.user, id, new_parent, new_name, overwrite(ow))
            .await
            .map(dav_entry)
            .map_err(port_err)
    }

    async fn copy(
        &self,
        id: EntryId,
        new_parent: EntryId,
        new_name: &str,
        ow: DavOverwrite,
    ) -> Result<DavEntry, PortError> {
        self.drive
            .copy(&self.user, id, new_parent, new_name, overwrite(ow))
            .await
            .map(dav_entry)
            .map_err(port_err)
    }

    async fn delete(&self, id: EntryId, recursive: bool) -> Result<(), PortError> {
        self.drive
            .delete(&self.user, id, recursive)
            .await
            .map(|_| ())
            .map_err(port_err)
    }

    async fn set_attrs(&self, id: EntryId, mode: Option<u32>, mtime: Option<Millis>) -> Result<DavEntry, PortError> {
        let e = self
            .drive
            .meta()
            .set_attrs(self.owner(), id, mode.map(i64::from), mtime)
            .await
            .map_err(meta_err)?;
        Ok(dav_entry(e))
    }

    async fn get_props(&self, id: EntryId) -> Result<Vec<DeadProp>, PortError> {
        Ok(self
            .get_props_many(&[id])
            .await?
            .into_iter()
            .flat_map(|(_, p)| p)
            .collect())
    }

    async fn get_props_many(&self, ids: &[EntryId]) -> Result<Vec<(EntryId, Vec<DeadProp>)>, PortError> {
        let rows = self.drive.meta().props(self.owner(), ids).await.map_err(meta_err)?;
        Ok(group_props(rows))
    }

    /// One query for the directory and all its children.
    async fn get_props_dir(&self, dir: EntryId) -> Result<Vec<(EntryId, Vec<DeadProp>)>, PortError> {
        let rows = self
            .drive
            .meta()
            .props_in_dir(self.owner(), dir)
            .await
            .map_err(meta_err)?;
        Ok(group_props(rows))
    }

    async fn patch_props(&self, id: EntryId, patch: Vec<PropPatch>) -> Result<(), PortError> {
        let mut changes = Vec::with_capacity(patch.len());
        for p in patch {
            changes.push(match p {
                PropPatch::Set(d) => {
                    if d.xml.len() > crate::meta::MAX_PROP_BYTES || d.name.len() > 255 {
                        return Err(PortError::InsufficientStorage);
                    }
                    (
                        d.namespace.unwrap_or_default().into_bytes(),
                        d.name.into_bytes(),
                        Some(d.xml),
                    )
                }
                PropPatch::Remove { namespace, name } => {
                    (namespace.unwrap_or_default().into_bytes(), name.into_bytes(), None)
                }
            });
        }
        self.drive
            .meta()
            .patch_props(self.owner(), id, &changes)
            .await
            .map_err(meta_err)
    }

    async fn quota(&self) -> Result<Quota, PortError> {
        let (used, _) = self.drive.meta().usage(self.owner()).await.map_err(meta_err)?;
        Ok(Quota {
            used: used.max(0) as u64,
            limit: None,
        })
    }
}

/// Verified Basic credentials, remembered briefly by HMAC of the header.
pub struct CredentialCache {
    key: [u8; 32],
    entries: Mutex<HashMap<[u8; 32], Verified>>,
    ttl: Duration,
    /// Verifications under way, by header digest. A client's connections all miss at
    /// once: on its first requests, and again each time the entry expires. Without this
    /// each of them ran argon2 (16 at once under 16 connections), and past the sign-in
    /// burst the rest were refused with 429. Now one verifies and the others wait for it,
    /// then find the entry.
    verifying: Mutex<HashMap<[u8; 32], Arc<tokio::sync::Mutex<()>>>>,
}

/// A verification of one header under way; the last holder ends it.
struct Flight<'a> {
    cache: &'a CredentialCache,
    digest: [u8; 32],
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        let mut map = self.cache.verifying.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(&self.digest).is_some_and(|t| Arc::ptr_eq(t, &self.turn)) {
            map.remove(&self.digest);
        }
    }
}

/// A verified header: the account as last read, its root directory, when the password was
/// verified and when the account was last read.
#[derive(Clone)]
struct Verified {
    user: User,
    root: i64,
    verified: Instant,
    checked: Instant,
}

const CACHE_MAX: usize = 10_000;

/// How long a cached account's `disabled` flag is trusted before it is read again.
pub const USER_RECHECK: Duration = Duration::from_secs(1);

impl CredentialCache {
    pub fn new(ttl: Duration) -> Self {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("OS random number generator");
        CredentialCache {
            key,
            entries: Mutex::new(HashMap::new()),
            ttl,
            verifying: Mutex::new(HashMap::new()),
        }
    }

    /// Joins (or starts) the verification of `header`; lock `turn` before verifying.
    fn flight(&self, header: &[u8]) -> Flight<'_> {
        let digest = self.digest(header);
        let mut map = self.verifying.lock().unwrap_or_else(|p| p.into_inner());
        let turn = map.entry(digest).or_default().clone();
        Flight {
            cache: self,
            digest,
            turn,
        }
    }

    fn digest(&self, header: &[u8]) -> [u8; 32] {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        m.update(header);
        m.finalize().into_bytes().into()
    }

    fn get(&self, header: &[u8]) -> Option<Verified> {
        let d = self.digest(header);
        let map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&d).filter(|v| v.verified.elapsed() < self.ttl).cloned()
    }

    fn put(&self, header: &[u8], user: User, root: i64) {
        let d = self.digest(header);
        let now = Instant::now();
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= CACHE_MAX {
            let ttl = self.ttl;
            map.retain(|_, v| v.verified.elapsed() < ttl);
            if map.len() >= CACHE_MAX {
                map.clear();
            }
        }
        map.insert(
            d,
            Verified {
                user,
                root,
                verified: now,
                checked: now,
            },
        );
    }

    /// Records a fresh read of the account behind `header` (the password stays verified).
    fn refresh(&self, header: &[u8], user: &User) {
        let d = self.digest(header);
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = map.get_mut(&d) {
            v.user = user.clone();
            v.checked = Instant::now();
        }
    }

    fn forget(&self, header: &[u8]) {
        let d = self.digest(header);
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).remove(&d);
    }
}

/// What `/dav/` needs besides the drive.
pub struct DavService {
    pub webdav: WebDav,
    pub locks: Box<dyn LockSpaces>,
    pub credentials: CredentialCache,
}

impl DavService {
    pub fn new(locks: Box<dyn LockSpaces>) -> Self {
        DavService {
            webdav: WebDav::new("/dav"),
            locks,
            credentials: CredentialCache::new(Duration::from_secs(60)),
        }
    }
}

fn unauthorized(msg: &str) -> Response {
    let mut r = (StatusCode::UNAUTHORIZED, msg.to_string()).into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"filestore\", charset=\"UTF-8\""),
    );
    r
}

/// The user of a WebDAV request, and their root directory if already known: HTTP Basic
/// (the accounts' passwords) or a Bearer token.
async fn authenticate(
    accounts: &Accounts,
    dav: &DavService,
    value: Option<HeaderValue>,
    ip: std::net::IpAddr,
) -> Result<(User, Option<i64>), Response> {
    let Some(value) = value else {
        return Err(unauthorized("authentication required"));
    };
    let raw = value.as_bytes();
    let text = value
        .to_str()
        .map_err(|_| unauthorized("malformed Authorization header"))?;
    if let Some(token) = text.strip_prefix("Bearer ") {
        return accounts
            .authenticate(token.trim())
            .await
            .map(|u| (u, None))
            .map_err(|e| auth_failure(&e));
    }
    let Some(b64) = text.strip_prefix("Basic ") else {
        return Err(unauthorized("use Basic or Bearer authentication"));
    };
    let m = crate::metrics::global();
    if let Some(v) = dav.credentials.get(raw) {
        crate::metrics::add(&m.credential_cache_hits, 1);
        if v.checked.elapsed() < USER_RECHECK {
            return Ok((v.user, Some(v.root)));
        }
        // Still enabled? One indexed lookup, far cheaper than argon2.
        match accounts.meta().user_by_id(v.user.id).await {
            Ok(Some(u)) if !u.disabled => {
                dav.credentials.refresh(raw, &u);
                return Ok((u, Some(v.root)));
            }
            _ => dav.credentials.forget(raw),
        }
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()
        .and_then(|d| String::from_utf8(d).ok())
        .ok_or_else(|| unauthorized("malformed Basic credentials"))?;
    let (name, password) = decoded
        .split_once(':')
        .ok_or_else(|| unauthorized("malformed Basic credentials"))?;
    let flight = dav.credentials.flight(raw);
    let _turn = flight.turn.lock().await;
    // Verified by the request this one waited for?
    if let Some(v) = dav.credentials.get(raw) {
        if v.checked.elapsed() < USER_RECHECK {
            crate::metrics::add(&m.credential_cache_hits, 1);
            return Ok((v.user, Some(v.root)));
        }
    }
    crate::metrics::add(&m.credential_cache_misses, 1);
    let user = accounts
        .check_credentials(name, password, ip)
        .await
        .map_err(|e| auth_failure(&e))?;
    let root = match accounts.meta().root(user.id).await {
        Ok(r) => r.id,
        Err(e) => {
            tracing::error!(error = %e, "WebDAV: cannot open the user's tree");
            return Err((StatusCode::SERVICE_UNAVAILABLE, "storage unavailable").into_response());
        }
    };
    dav.credentials.put(raw, user.clone(), root);
    Ok((user, Some(root)))
}

fn auth_failure(e: &AuthError) -> Response {
    match e {
        AuthError::RateLimited(wait) => {
            let mut r = (StatusCode::TOO_MANY_REQUESTS, e.to_string()).into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(wait.as_secs().max(1)));
            r
        }
        AuthError::InvalidCredentials | AuthError::InvalidToken | AuthError::Disabled => unauthorized(&e.to_string()),
        other => {
            tracing::error!(error = %other, "WebDAV authentication failed");
            (StatusCode::SERVICE_UNAVAILABLE, "authentication unavailable").into_response()
        }
    }
}

/// Every request under `/dav`.
pub async fn handle(State(st): State<crate::http::AppState>, req: Request) -> Response {
    // Taken out of the request first: the body is not Sync, so no reference to the
    // request may live across an await.
    let value = req.headers().get(header::AUTHORIZATION).cloned();
    let ip = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let (user, root) = match authenticate(&st.accounts, &st.dav, value, ip).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let port = match root {
        Some(root) => CorePort::with_root(st.drive.clone(), user.clone(), root),
        None => match CorePort::new(st.drive.clone(), user.clone()).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "WebDAV: cannot open the user's tree");
                return (StatusCode::SERVICE_UNAVAILABLE, "storage unavailable").into_response();
            }
        },
    };
    let key = user.id.to_string();
    let dav_user = DavUser {
        principal: key.clone(),
        port: Arc::new(port),
        locks: st.dav.locks.for_user(&key),
    };
    st.dav.webdav.handle(req, dav_user).await.map(Body::new)
}
