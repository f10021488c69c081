//! [`RemoteTree`] over the HTTP API: a mount of a user's tree on a remote server, through
//! the id-based routes (`/api/v1/entries/...`), instant uploads and chunked uploads.
//!
//! Write-behind (`begin_stream`): the chunks of a file still being written go into an
//! open-ended upload session (`POST /uploads` without a size); at commit
//! (`finish_stream`) the rest is sent and the session completed with the size and SHA-1,
//! which the server checks against what it assembled. A session the server refuses (lost,
//! or bytes that are not the file's) is dropped and the file uploaded whole.
//!
//! Uploads (`put_file`): the mount hands over a finished spool file and its SHA-1. Files
//! of `instant_min` bytes or more first try an instant upload (the server asks for a hash
//! of a random range of the bytes, answered from the spool file); otherwise files under
//! `single_put_below` go in one streamed PUT and larger ones as a resumable chunked upload
//! (`client::transfer`), resumed where it stopped if the server restarts. A replace names
//! the file by id, so a rename racing the upload cannot send the bytes elsewhere.
//!
//! Failures a retry may cure (connection refused or broken, 5xx, 429) are retried with
//! backoff for `retry_for`; then the operation fails with [`PortError::Transient`] (EIO;
//! the mount keeps a failed upload in its journal). A request that may have taken effect
//! without its answer arriving is checked on retry: a mkdir or create that then finds its
//! own result, or a delete that finds the entry gone, succeeds.

use std::cell::RefCell;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use filestore_mount::{
    Entry, EntryKind, FsStats, NewAttrs, PortError, PutFile, PutTarget, RemoteTree, RenameMode, SetAttrs, StreamEnd,
    StreamSession,
};
use tracing::{info, warn};

use super::{port_entry, unsupported_owner, DEFAULT_RETRY_FOR, UNLIMITED_BYTES};
use crate::client::api::{Client, ClientError, EntryPatch, RemoteNode, UploadDest};
use crate::client::transfer::{self, Retry, UploadJob};

/// How the mount signs in.
#[derive(Clone)]
pub enum HttpAuth {
    /// A bearer token (from `filestore login`). When it expires, operations fail with
    /// EACCES until the mount is restarted with a fresh one.
    Token(String),
    /// A user name and password: the mount signs in at start and again whenever the
    /// server says the token is no longer valid.
    Password { user: String, password: String },
}

impl std::fmt::Debug for HttpAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpAuth::Token(_) => f.write_str("Token(..)"),
            HttpAuth::Password { user, .. } => write!(f, "Password {{ user: {user:?}, .. }}"),
        }
    }
}

/// Tuning of an [`HttpTree`].
#[derive(Debug, Clone)]
pub struct HttpTreeOptions {
    /// How long transient failures are retried before an operation fails (EIO).
    pub retry_for: Duration,
    /// Chunks in flight per chunked upload.
    pub parallel: usize,
    /// Smallest file for which an instant upload is tried (below, sending the bytes costs
    /// less than the extra round trips).
    pub instant_min: u64,
    /// Files under this size that the server does not have go in one PUT.
    pub single_put_below: u64,
}

impl Default for HttpTreeOptions {
    fn default() -> Self {
        HttpTreeOptions {
            retry_for: DEFAULT_RETRY_FOR,
            parallel: 4,
            instant_min: 64 << 10,
            // The server's default chunk size.
            single_put_below: 5 << 20,
        }
    }
}

/// A user's tree on a filestore server, as the mount's port.
pub struct HttpTree {
    base: String,
    auth: HttpAuth,
    /// The client with the current token, and a generation bumped on each new sign-in.
    client: RwLock<(Client, u64)>,
    signing_in: tokio::sync::Mutex<()>,
    root: i64,
    opts: HttpTreeOptions,
    /// The latest `content_token` per content SHA-1: what lets a file that was unlinked
    /// or replaced while open still be read (POSIX keeps it alive until closed).
    tokens: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// Tells this tree's clients in [`OWN_CLIENT`] from another tree's.
    serial: u64,
}

/// Serial numbers of trees, so that a thread's own client is never another tree's.
static TREES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// A FUSE thread's own client (with its own connection), for calls made on the
    /// thread's current-thread runtime (see [`RemoteTree::thread_runtime`]): its
    /// connection task lives on that runtime, so only that thread may use it. Keyed by
    /// the tree's serial and the sign-in generation of its token.
    static OWN_CLIENT: RefCell<Option<(u64, u64, Client)>> = const { RefCell::new(None) };
}

/// The one mapping of client errors to port errors (then errno, in the mount).
fn port_err(e: ClientError) -> PortError {
    use PortError as P;
    if e.is_transient() {
        return P::Transient(Box::new(e));
    }
    match &e {
        ClientError::Api { status, code, message } => match (*status, code.as_str()) {
            // An upload session that vanished (expired, or a session store that lost it)
            // must not read as "the file is gone": the mount would drop the data.
            (404, "no_such_upload") => P::Other(Box::new(e)),
            (404, _) => P::NotFound,
            (409, "already_exists") => P::AlreadyExists,
            (409, "not_a_directory") => P::NotADirectory,
            (409, "is_a_directory") => P::IsADirectory,
            (409, "not_empty") => P::NotEmpty,
            (409, "cycle") => P::InvalidArgument(message.clone()),
            (400, "root") | (401, _) | (403, _) => P::PermissionDenied,
            (400, _) => P::InvalidArgument(message.clone()),
            (413, _) | (507, _) => P::NoSpace,
            _ => P::Other(Box::new(e)),
        },
        _ => P::Other(Box::new(e)),
    }
}

fn node_entry(n: RemoteNode) -> Entry {
    let dir = n.is_dir();
    port_entry(
        n.id, n.parent, n.name, dir, n.size, n.sha1, n.mode, n.mtime_ms, n.ctime_ms,
    )
}

/// Content tokens kept at most; beyond, all are dropped (the next lookup or getattr of
/// a file renews its own).
const TOKENS_MAX: usize = 100_000;

impl HttpTree {
    /// Signs in if needed, finds the user's root and checks that the server has the
    /// id-based API. Transient failures are retried for `opts.retry_for`.
    pub async fn connect(base: &str, auth: HttpAuth, opts: HttpTreeOptions) -> Result<HttpTree, ClientError> {
        let base = base.trim_end_matches('/').to_string();
        let policy = Retry::within(opts.retry_for);
        let token = match &auth {
            HttpAuth::Token(t) => t.clone(),
            HttpAuth::Password { user, password } => {
                let anon = Client::new(&base, None)?;
                policy.run("signing in", || anon.signin(user, password)).await?.0
            }
        };
        let client = Client::new(&base, Some(token))?;
        let root = policy.run("finding the root", || client.stat("/")).await?.id;
        match policy.run("checking the server", || client.entry(root)).await {
            Ok(_) => {}
            Err(ClientError::Api { status: 404, .. }) => {
                return Err(ClientError::Protocol(format!(
                    "{base} has no id-based API (/api/v1/entries): upgrade the server"
                )))
            }
            Err(e) => return Err(e),
        }
        Ok(HttpTree {
            base,
            auth,
            client: RwLock::new((client, 0)),
            signing_in: tokio::sync::Mutex::new(()),
            root,
            opts,
            tokens: Default::default(),
            serial: TREES.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// The port's view of a node, remembering its content token.
    fn entry(&self, mut n: RemoteNode) -> Entry {
        if let (Some(sha1), Some(token)) = (&n.sha1, n.content_token.take()) {
            let mut t = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
            if t.len() >= TOKENS_MAX {
                t.clear();
            }
            t.insert(sha1.clone(), token);
        }
        node_entry(n)
    }

    fn token(&self, sha1: &str) -> Option<String> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner()).get(sha1).cloned()
    }

    /// The client to use here, and the sign-in generation of its token. On a
    /// current-thread runtime (a FUSE thread's, see [`RemoteTree::thread_runtime`]) it is
    /// the thread's own; elsewhere (the shared multi-thread runtime) the shared one.
    fn current(&self) -> (Client, u64) {
        let (shared, generation) = self.client.read().unwrap_or_else(|p| p.into_inner()).clone();
        let on_own_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread);
        if !on_own_thread {
            return (shared, generation);
        }
        OWN_CLIENT.with(|own| {
            let mut own = own.borrow_mut();
            match &*own {
                Some((serial, g, c)) if *serial == self.serial && *g == generation => (c.clone(), generation),
                _ => {
                    // A client of its own: same server and token, a pool of its own.
                    let c = shared.with_own_connections().unwrap_or(shared);
                    *own = Some((self.serial, generation, c.clone()));
                    (c, generation)
                }
            }
        })
    }

    /// Signs in again after the server refused the token of generation `seen`, unless
    /// another call already did.
    async fn sign_in_again(&self, seen: u64) -> Result<bool, ClientError> {
        let HttpAuth::Password { user, password } = &self.auth else {
            warn!("the server refused the token (expired or signed out): run `filestore login` and restart the mount");
            return Ok(false);
        };
        let _one = self.signing_in.lock().await;
        if self.current().1 != seen {
            return Ok(true);
        }
        let anon = Client::new(&self.base, None)?;
        let (token, _) = Retry::within(self.opts.retry_for)
            .run("signing in", || anon.signin(user, password))
            .await?;
        let client = Client::new(&self.base, Some(token))?;
        *self.client.write().unwrap_or_else(|p| p.into_inner()) = (client, seen + 1);
        info!("signed in again");
        Ok(true)
    }

    /// Runs `op` with the current client under `policy`'s retries; a refused token is
    /// renewed once (password sign-in).
    async fn call_with<T, F, Fut>(&self, policy: &Retry, what: &str, op: F) -> Result<T, ClientError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let mut renewed = false;
        loop {
            let (client, generation) = self.current();
            match policy.run(what, || op(client.clone())).await {
                Err(ClientError::Api { status: 401, .. }) if !renewed && self.sign_in_again(generation).await? => {
                    renewed = true;
                }
                Err(e) if e.is_transient() => {
                    warn!(error = %e, "{what}: still failing after {:?}; giving up", policy.limit);
                    return Err(e);
                }
                other => return other,
            }
        }
    }

    async fn call<T, F, Fut>(&self, what: &str, op: F) -> Result<T, PortError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        self.call_with(&Retry::within(self.opts.retry_for), what, op)
            .await
            .map_err(port_err)
    }

    /// Runs the create `call` of `name` in `parent`. When an attempt's answer was lost and
    /// a retry finds the name taken, the entry there is the one that attempt made if
    /// `ours` says so.
    async fn create_with<F, Fut>(
        &self,
        what: &str,
        parent: i64,
        name: &str,
        call: F,
        ours: impl Fn(&Entry) -> bool,
    ) -> Result<Entry, PortError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<RemoteNode, ClientError>>,
    {
        let policy = Retry::within(self.opts.retry_for);
        match self.call_with(&policy, what, call).await {
            Ok(n) => Ok(self.entry(n)),
            Err(ClientError::Api {
                status: 409, ref code, ..
            }) if code == "already_exists" && policy.saw_transient() => {
                let e = self.lookup(parent, name).await?;
                if ours(&e) {
                    Ok(e)
                } else {
                    Err(PortError::AlreadyExists)
                }
            }
            Err(e) => Err(port_err(e)),
        }
    }

    /// Sets the mode (of a created file) and the mtime the upload could not carry.
    async fn fix_attrs(&self, n: RemoteNode, mode: Option<u32>, mtime: i64) -> Result<RemoteNode, PortError> {
        let patch = EntryPatch {
            mode: mode.filter(|m| i64::from(*m) != n.mode),
            mtime: (n.mtime_ms != mtime).then_some(mtime),
            ..EntryPatch::default()
        };
        if patch.mode.is_none() && patch.mtime.is_none() {
            return Ok(n);
        }
        let id = n.id;
        self.call("setting attributes", |c| {
            let patch = patch.clone();
            async move { c.patch_entry(id, &patch).await }
        })
        .await
    }
}

#[async_trait]
impl RemoteTree for HttpTree {
    fn root_id(&self) -> i64 {
        self.root
    }

    /// Yes: a call's requests go through the thread's own client (`current`), whose
    /// connection task runs on the thread's runtime and only while a call does.
    fn thread_runtime(&self) -> bool {
        true
    }

    async fn lookup(&self, parent: i64, name: &str) -> Result<Entry, PortError> {
        self.call("lookup", |c| async move { c.lookup(parent, name).await })
            .await
            .map(|n| self.entry(n))
    }

    async fn get(&self, id: i64) -> Result<Entry, PortError> {
        self.call("getattr", |c| async move { c.entry(id).await })
            .await
            .map(|n| self.entry(n))
    }

    async fn list(&self, dir: i64, after: Option<&str>, limit: usize) -> Result<Vec<Entry>, PortError> {
        let mut out = Vec::new();
        let mut after = after.map(str::to_owned);
        while out.len() < limit {
            let want = (limit - out.len()).min(1000);
            let (page, next) = self
                .call("listing", |c| {
                    let after = after.clone();
                    async move { c.children(dir, after.as_deref(), want).await }
                })
                .await?;
            let n = page.len();
            out.extend(page.into_iter().map(|n| self.entry(n)));
            match next {
                Some(n2) if n == want => after = Some(n2),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn mkdir(&self, parent: i64, name: &str, attrs: NewAttrs) -> Result<Entry, PortError> {
        let mode = attrs.mode & 0o7777;
        let call = |c: Client| async move { c.mkdir_in(parent, name, Some(mode)).await };
        self.create_with("mkdir", parent, name, call, |e| e.kind == EntryKind::Dir)
            .await
    }

    async fn put_file(&self, put: PutFile<'_>) -> Result<Entry, PortError> {
        let (dest, overwrite, mode) = match put.target {
            PutTarget::Create { parent, name, attrs } => (
                UploadDest::Child {
                    parent,
                    name: name.to_owned(),
                },
                false,
                Some(attrs.mode & 0o7777),
            ),
            PutTarget::Replace { id } => (UploadDest::Entry(id), true, None),
        };
        let job = UploadJob {
            local: put.source,
            dest: dest.clone(),
            sha1: put.sha1,
            size: put.size,
            overwrite,
            mtime: Some(put.mtime_ms),
            mode,
            parallel: self.opts.parallel,
            instant_min: self.opts.instant_min,
            single_put_below: self.opts.single_put_below,
        };
        let policy = Retry::within(self.opts.retry_for);
        let mut attempt = 0;
        let uploaded = loop {
            attempt += 1;
            let r = self
                .call_with(&policy, "uploading", |c| {
                    let (job, policy) = (&job, &policy);
                    async move { transfer::upload_to::<RemoteNode>(&c, job, policy).await }
                })
                .await;
            match r {
                // The session went away under us (expired, or lost by a session store):
                // start the chunked upload over once.
                Err(ClientError::Api {
                    status: 404, ref code, ..
                }) if code == "no_such_upload" && attempt == 1 => {
                    warn!(sha1 = put.sha1, "upload session lost; starting over");
                }
                other => break other,
            }
        };
        let node = match uploaded {
            Ok(u) => u.entry,
            Err(ClientError::Api {
                status: 409, ref code, ..
            }) if code == "already_exists" && policy.saw_transient() => {
                // A create whose answer was lost: ours if it holds exactly these bytes.
                let UploadDest::Child { parent, name } = &dest else {
                    return Err(PortError::AlreadyExists);
                };
                let (parent, name) = (*parent, name.as_str());
                let n = self
                    .call("lookup", |c| async move { c.lookup(parent, name).await })
                    .await?;
                if n.sha1.as_deref() != Some(put.sha1) || n.size as u64 != put.size {
                    return Err(PortError::AlreadyExists);
                }
                n
            }
            Err(e) => return Err(port_err(e)),
        };
        let node = self.fix_attrs(node, mode, put.mtime_ms).await?;
        Ok(self.entry(node))
    }

    async fn begin_stream(&self, id: i64) -> Result<Option<StreamSession>, PortError> {
        let dest = UploadDest::Entry(id);
        let s = self
            .call("starting a write-behind upload", |c| {
                let dest = &dest;
                async move { c.upload_open(dest, true).await }
            })
            .await?;
        Ok(Some(StreamSession {
            id: s.id,
            chunk_size: s.chunk_size,
        }))
    }

    async fn stream_chunk(&self, stream: &StreamSession, index: u64, data: Bytes) -> Result<(), PortError> {
        let id = stream.id.as_str();
        self.call("sending a chunk", |c| {
            let data = data.clone();
            async move { c.upload_part(id, index + 1, data).await }
        })
        .await
    }

    async fn finish_stream(&self, stream: &StreamSession, end: StreamEnd<'_>, sent: u64) -> Result<Entry, PortError> {
        use futures_util::{StreamExt, TryStreamExt};
        let cs = stream.chunk_size.max(1);
        let count = end.size.div_ceil(cs);
        let id = stream.id.as_str();
        let sent_rest = futures_util::stream::iter(sent..count)
            .map(|index| async move {
                let (offset, len) = (index * cs, cs.min(end.size - index * cs));
                let path = end.source.to_path_buf();
                let data = tokio::task::spawn_blocking(move || {
                    use std::os::unix::fs::FileExt;
                    let mut buf = vec![0u8; len as usize];
                    std::fs::File::open(path)?.read_exact_at(&mut buf, offset)?;
                    Ok::<_, std::io::Error>(Bytes::from(buf))
                })
                .await
                .map_err(|e| ClientError::Protocol(e.to_string()))??;
                self.call_with(&Retry::within(self.opts.retry_for), "sending a chunk", |c| {
                    let data = data.clone();
                    async move { c.upload_part(id, index + 1, data).await }
                })
                .await
            })
            .buffer_unordered(self.opts.parallel.max(1))
            .try_collect::<Vec<()>>()
            .await;
        let completed = match sent_rest {
            Ok(_) => {
                self.call_with(
                    &Retry::within(self.opts.retry_for),
                    "completing the upload",
                    // No SHA-1: the mount did not hash the file, the server does; each
                    // chunk went with its CRC-32 (`upload_part`).
                    |c| async move { c.upload_complete_declared::<RemoteNode>(id, None, end.size).await },
                )
                .await
            }
            Err(e) => Err(e),
        };
        let node = match completed {
            Ok(n) => n,
            // The session is gone (expired, a session store that lost it), or what it
            // holds is not this file (refused and discarded by the server, or incomplete):
            // the file goes whole.
            Err(ClientError::Api { status, ref code, .. })
                if matches!(
                    (status, code.as_str()),
                    (404, "no_such_upload") | (422, _) | (409, "incomplete")
                ) =>
            {
                warn!(
                    upload = id,
                    code, "write-behind upload refused; uploading the file whole"
                );
                if status == 409 {
                    let _ = self.current().0.upload_cancel(id).await;
                }
                let source = end.source.to_path_buf();
                let (sha1, _) = tokio::task::spawn_blocking(move || crate::blob::hash_file(&source))
                    .await
                    .map_err(|e| PortError::Other(e.to_string().into()))?
                    .map_err(|e| PortError::Other(Box::new(e)))?;
                return self.put_file(end.as_put(&sha1)).await;
            }
            Err(e) => return Err(port_err(e)),
        };
        let node = self.fix_attrs(node, None, end.mtime_ms).await?;
        Ok(self.entry(node))
    }

    async fn abort_stream(&self, stream: &StreamSession) {
        // Best effort: an abandoned session also expires and is swept.
        let id = stream.id.as_str();
        if let Err(e) = self.current().0.upload_cancel(id).await {
            tracing::debug!(upload = id, error = %e, "cancelling a write-behind upload failed");
        }
    }

    async fn create_file(&self, parent: i64, name: &str, attrs: NewAttrs, mtime_ms: i64) -> Result<Entry, PortError> {
        let mode = attrs.mode & 0o7777;
        let call = |c: Client| async move { c.create_file_in(parent, name, mode, mtime_ms).await };
        // Still the empty file asked for: ours.
        let ours = |e: &Entry| e.kind == EntryKind::File && e.size == 0 && e.mtime_ms == mtime_ms;
        self.create_with("create", parent, name, call, ours).await
    }

    async fn read(&self, id: i64, sha1: &str, offset: u64, len: u64) -> Result<Bytes, PortError> {
        let policy = Retry::within(self.opts.retry_for);
        let token = self.token(sha1);
        match self
            .call_with(&policy, "reading", |c| {
                let token = token.clone();
                async move { c.read_entry(id, Some(sha1), token.as_deref(), offset, len).await }
            })
            .await
        {
            Ok(b) => Ok(b),
            // The file holds other bytes now and we hold no token for these.
            Err(ClientError::Api { status: 412, .. }) => Err(PortError::Other(
                format!("content {sha1} of entry {id} was replaced on the server").into(),
            )),
            Err(e) => Err(port_err(e)),
        }
    }

    async fn rename(&self, id: i64, new_parent: i64, new_name: &str, mode: RenameMode) -> Result<Entry, PortError> {
        let patch = EntryPatch {
            parent: Some(new_parent),
            name: Some(new_name.to_owned()),
            overwrite: Some(match mode {
                RenameMode::NoReplace => "no",
                RenameMode::Posix => "posix",
            }),
            ..EntryPatch::default()
        };
        // Idempotent: a retried rename finds the entry already there and does nothing.
        self.call("rename", |c| {
            let patch = patch.clone();
            async move { c.patch_entry(id, &patch).await }
        })
        .await
        .map(|n| self.entry(n))
    }

    async fn delete(&self, id: i64, recursive: bool) -> Result<(), PortError> {
        let policy = Retry::within(self.opts.retry_for);
        match self
            .call_with(
                &policy,
                "delete",
                |c| async move { c.delete_entry(id, recursive).await },
            )
            .await
        {
            Ok(()) => Ok(()),
            // An attempt whose answer was lost may have deleted it.
            Err(ClientError::Api { status: 404, .. }) if policy.saw_transient() => Ok(()),
            Err(e) => Err(port_err(e)),
        }
    }

    async fn delete_child(&self, parent: i64, name: &str, dir: bool) -> Result<Option<Entry>, PortError> {
        let policy = Retry::within(self.opts.retry_for);
        match self
            .call_with(
                &policy,
                "delete",
                |c| async move { c.delete_child(parent, name, dir).await },
            )
            .await
        {
            Ok(dir) => Ok(dir.map(|n| self.entry(n))),
            // An attempt whose answer was lost may have deleted it.
            Err(ClientError::Api { status: 404, .. }) if policy.saw_transient() => Ok(None),
            Err(e) => Err(port_err(e)),
        }
    }

    async fn set_attrs(&self, id: i64, attrs: SetAttrs) -> Result<Entry, PortError> {
        unsupported_owner(attrs.uid, attrs.gid)?;
        let patch = EntryPatch {
            mode: attrs.mode.map(|m| m & 0o7777),
            mtime: attrs.mtime_ms,
            ..EntryPatch::default()
        };
        if patch.mode.is_none() && patch.mtime.is_none() {
            // Only an atime, which the core does not store.
            return self.get(id).await;
        }
        self.call("setattr", |c| {
            let patch = patch.clone();
            async move { c.patch_entry(id, &patch).await }
        })
        .await
        .map(|n| self.entry(n))
    }

    async fn statfs(&self) -> Result<FsStats, PortError> {
        let me = self.call("statfs", |c| async move { c.me().await }).await?;
        let used = me["usage"]["bytes"].as_i64().unwrap_or(0).max(0) as u64;
        Ok(FsStats {
            total_bytes: used + UNLIMITED_BYTES,
            used_bytes: used,
        })
    }
}
