//! dav-server's [`DavFileSystem`] over a [`DavPort`]: paths in, entry ids out.
//!
//! One [`PortFs`] serves one request (it is cheap to build). It walks paths with the
//! port and remembers, for the length of the request only, what each path resolved to:
//! dav-server asks for the same metadata several times per request (PUT: the target,
//! its parent, the If headers). Any mutation clears that memory, so a request never
//! acts on an answer older than its own last change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use dav_server::davpath::DavPath;
use dav_server::fs::{
    DavDirEntry, DavFile, DavFileSystem, DavMetaData, DavProp, FsError, FsFuture, FsResult, FsStream, OpenOptions,
    ReadDirMeta,
};
use futures_util::{FutureExt, StreamExt};
use http::StatusCode;

use crate::file::{ReadFile, WriteFile};
use crate::hint::{is_under, path_key, Op, PathKey};
use crate::meta::{EntryDirEntry, EntryMeta};
use crate::port::{Conflict, DavPort, DeadProp, Entry, EntryId, EntryKind, Overwrite, PropPatch, UploadOptions};

/// Children fetched per [`DavPort::list`] call.
pub(crate) const LIST_PAGE: usize = 1000;

/// Longest name the core stores, in bytes.
const MAX_NAME_BYTES: usize = 255;

#[derive(Default)]
struct Memo {
    /// Path key to what it resolved to (`None`: does not exist).
    entries: HashMap<PathKey, Option<Entry>>,
    /// Dead properties fetched in bulk with a listing page.
    props: HashMap<EntryId, Vec<DeadProp>>,
    /// A COPY of a collection was done in one port call: do not walk the source.
    copied_tree: bool,
}

struct Inner {
    port: Arc<dyn DavPort>,
    op: Op,
    memo: Mutex<Memo>,
}

/// The file system of one request. Clones share the request's memo (dav-server clones
/// the file system into its property writer).
#[derive(Clone)]
pub(crate) struct PortFs(Arc<Inner>);

fn segments(key: &[u8]) -> impl Iterator<Item = &[u8]> {
    key.split(|&b| b == b'/').filter(|s| !s.is_empty())
}

/// A name for a new entry, checked before the port sees it.
fn new_name(seg: &[u8]) -> FsResult<String> {
    if seg.len() > MAX_NAME_BYTES {
        return Err(FsError::PathTooLong);
    }
    // dav-server already refuses '/' and NUL inside a segment.
    std::str::from_utf8(seg)
        .map(str::to_owned)
        .map_err(|_| FsError::Forbidden)
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl PortFs {
    pub(crate) fn new(port: Arc<dyn DavPort>, op: Op) -> Self {
        PortFs(Arc::new(Inner {
            port,
            op,
            memo: Mutex::new(Memo::default()),
        }))
    }

    fn port(&self) -> &Arc<dyn DavPort> {
        &self.0.port
    }

    fn memo(&self) -> MutexGuard<'_, Memo> {
        // A panic while holding this lock cannot leave the memo inconsistent in a way
        // that matters (it is only a cache), so a poisoned lock is used as is.
        self.0.memo.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn forget(&self) {
        let mut m = self.memo();
        m.entries.clear();
        m.props.clear();
    }

    /// The entry at `key`, or `None` if nothing is there.
    async fn find(&self, key: &[u8]) -> FsResult<Option<Entry>> {
        if let Some(hit) = self.memo().entries.get(key) {
            return Ok(hit.clone());
        }
        let mut names = Vec::new();
        for seg in segments(key) {
            match std::str::from_utf8(seg) {
                Ok(s) => names.push(s),
                // No stored name is invalid UTF-8.
                Err(_) => return Ok(None),
            }
        }
        let port = self.port();
        let found = port.resolve(port.root_id(), &names).await?;
        self.memo().entries.insert(key.to_vec(), found.clone());
        Ok(found)
    }

    async fn resolve(&self, key: &[u8]) -> FsResult<Entry> {
        self.find(key).await?.ok_or(FsError::NotFound)
    }

    /// Parent directory and new name for a path to create. A missing parent (or one
    /// that is a file) is `NotFound`, which dav-server answers with 409 Conflict.
    async fn parent_and_name(&self, key: &[u8]) -> FsResult<(Entry, String)> {
        let Some(cut) = key.iter().rposition(|&b| b == b'/') else {
            // The root has no parent: it cannot be created, moved or replaced.
            return Err(FsError::Forbidden);
        };
        let name = new_name(&key[cut + 1..])?;
        let parent = self.resolve(&key[..cut]).await?;
        if !parent.is_dir() {
            return Err(FsError::NotFound);
        }
        Ok((parent, name))
    }

    /// Whether a directory listing can be skipped because the port already did the
    /// whole subtree in one call (see `remove_dir` and `create_dir`).
    fn skip_walk(&self, key: &[u8]) -> bool {
        match &self.0.op {
            Op::Delete => true,
            Op::CopyMove { src, dst, .. } => {
                dst.as_deref().is_some_and(|d| is_under(key, d)) || (self.memo().copied_tree && is_under(key, src))
            }
            _ => false,
        }
    }

    fn overwrite(&self) -> Overwrite {
        match &self.0.op {
            Op::CopyMove { overwrite: false, .. } => Overwrite::No,
            _ => Overwrite::Any,
        }
    }

    async fn list_dir(&self, key: PathKey) -> FsResult<FsStream<Box<dyn DavDirEntry>>> {
        let dir = self.resolve(&key).await?;
        if !dir.is_dir() {
            return Err(FsError::Forbidden);
        }
        if self.skip_walk(&key) {
            return Ok(futures_util::stream::empty().boxed());
        }
        let with_props = self.0.op == Op::Propfind;
        let fs = self.clone();
        // One state per page: (name to continue after, finished).
        let pages = futures_util::stream::unfold((None::<String>, false), move |(after, done)| {
            let fs = fs.clone();
            let key = key.clone();
            async move {
                if done {
                    return None;
                }
                match fs.fetch_page(&key, dir.id, after.as_deref(), with_props).await {
                    Ok(page) => {
                        let last = page.last().map(|e| e.name.clone());
                        let done = page.len() < LIST_PAGE || last.is_none();
                        let items: Vec<FsResult<Box<dyn DavDirEntry>>> = page
                            .into_iter()
                            .map(|e| Ok(Box::new(EntryDirEntry(e)) as Box<dyn DavDirEntry>))
                            .collect();
                        Some((items, (last, done)))
                    }
                    Err(e) => Some((vec![Err(e)], (None, true))),
                }
            }
        });
        Ok(pages.flat_map(futures_util::stream::iter).boxed())
    }

    /// One page of children, remembered by path (and with their dead properties, for
    /// PROPFIND) so that what dav-server asks next about each child costs no call.
    async fn fetch_page(
        &self,
        key: &[u8],
        dir: EntryId,
        after: Option<&str>,
        with_props: bool,
    ) -> FsResult<Vec<Entry>> {
        let page = self.port().list(dir, after, LIST_PAGE).await?;
        let props = if with_props && !page.is_empty() {
            let ids: Vec<EntryId> = page.iter().map(|e| e.id).collect();
            Some(self.port().get_props_many(&ids).await?)
        } else {
            None
        };
        let mut memo = self.memo();
        for e in &page {
            let mut child = key.to_vec();
            child.push(b'/');
            child.extend_from_slice(e.name.as_bytes());
            memo.entries.insert(child, Some(e.clone()));
            if props.is_some() {
                memo.props.insert(e.id, Vec::new());
            }
        }
        for (id, p) in props.into_iter().flatten() {
            memo.props.insert(id, p);
        }
        Ok(page)
    }

    async fn open_file(&self, key: PathKey, options: OpenOptions) -> FsResult<Box<dyn DavFile>> {
        if !options.write {
            let entry = self.resolve(&key).await?;
            if entry.is_dir() {
                return Err(FsError::Forbidden);
            }
            return Ok(Box::new(ReadFile::new(self.port().clone(), entry)));
        }
        let (parent, name) = self.parent_and_name(&key).await?;
        let existing = self.find(&key).await?;
        match &existing {
            // RFC 4918 has no PUT into a collection; 403 like Apache's mod_dav.
            Some(e) if e.is_dir() => return Err(FsError::Forbidden),
            Some(_) if options.create_new => return Err(FsError::Exists),
            None if !options.create && !options.create_new => return Err(FsError::NotFound),
            _ => {}
        }
        self.forget();
        if self.0.op == Op::Lock {
            // LOCK on an unmapped URL creates an empty resource (RFC 4918 7.3) and
            // dav-server never flushes that file: create it now.
            let entry = match existing {
                Some(e) => e,
                None => {
                    let body = futures_util::stream::empty().boxed();
                    let opts = UploadOptions::new(Conflict::Fail);
                    self.port().upload(parent.id, &name, body, opts).await?
                }
            };
            return Ok(Box::new(WriteFile::done(entry)));
        }
        let conflict = if options.create_new {
            Conflict::Fail
        } else {
            Conflict::Replace
        };
        let opts = UploadOptions {
            conflict,
            mtime: None,
            expected_len: options.size,
        };
        let now = millis(SystemTime::now());
        let placeholder = existing.unwrap_or(Entry {
            id: 0,
            parent: Some(parent.id),
            name: name.clone(),
            kind: EntryKind::File,
            size: 0,
            sha1: None,
            mode: 0o644,
            mtime: now,
            ctime: now,
            created: now,
        });
        Ok(Box::new(WriteFile::start(
            self.port().clone(),
            parent.id,
            name,
            opts,
            placeholder,
        )))
    }

    async fn make_dir(&self, key: PathKey) -> FsResult<()> {
        let (parent, name) = self.parent_and_name(&key).await?;
        // COPY of a collection with infinite depth: dav-server creates the destination
        // directory first, then walks the source. Do the whole copy here, in one port
        // call (O(1) per file, dead properties included), and let the walk see an
        // empty source (`skip_walk`).
        if let Op::CopyMove {
            is_copy: true,
            src,
            dst: Some(dst),
            deep: true,
            ..
        } = &self.0.op
        {
            if *dst == key {
                let source = self.resolve(src).await?;
                if source.is_dir() {
                    self.forget();
                    self.port().copy(source.id, parent.id, &name, Overwrite::No).await?;
                    self.memo().copied_tree = true;
                    return Ok(());
                }
            }
        }
        self.forget();
        self.port().mkdir(parent.id, &name).await?;
        Ok(())
    }

    async fn remove(&self, key: PathKey, dir: bool) -> FsResult<()> {
        let entry = self.resolve(&key).await?;
        if entry.is_dir() != dir {
            return Err(FsError::Forbidden);
        }
        // DELETE, and COPY/MOVE clearing their destination, remove whole subtrees:
        // dav-server has already checked the locks below (deep check), so one
        // recursive port call replaces its leaf-by-leaf walk (`skip_walk` hides the
        // children from it).
        let recursive = dir && matches!(self.0.op, Op::Delete | Op::CopyMove { .. });
        self.forget();
        self.port().delete(entry.id, recursive).await?;
        Ok(())
    }

    async fn rename_or_copy(&self, from: PathKey, to: PathKey, copy: bool) -> FsResult<()> {
        let entry = self.resolve(&from).await?;
        let (parent, name) = self.parent_and_name(&to).await?;
        let overwrite = self.overwrite();
        self.forget();
        if copy {
            self.port().copy(entry.id, parent.id, &name, overwrite).await?;
        } else {
            self.port().rename(entry.id, parent.id, &name, overwrite).await?;
        }
        Ok(())
    }

    async fn dead_props(&self, key: &[u8]) -> FsResult<Vec<DeadProp>> {
        let entry = self.resolve(key).await?;
        if let Some(p) = self.memo().props.get(&entry.id) {
            return Ok(p.clone());
        }
        let props = self.port().get_props(entry.id).await?;
        self.memo().props.insert(entry.id, props.clone());
        Ok(props)
    }

    async fn patch(&self, key: PathKey, patch: Vec<(bool, DavProp)>) -> FsResult<Vec<(StatusCode, DavProp)>> {
        let entry = self.resolve(&key).await?;
        let mut changes = Vec::with_capacity(patch.len());
        let mut answer = Vec::with_capacity(patch.len());
        for (set, prop) in patch {
            let namespace = prop.namespace.clone();
            let name = prop.name.clone();
            if set {
                let Some(xml) = prop.xml.clone() else {
                    return Err(FsError::GeneralFailure);
                };
                changes.push(PropPatch::Set(DeadProp { namespace, name, xml }));
            } else {
                changes.push(PropPatch::Remove { namespace, name });
            }
            // The answer names the property without its value (RFC 4918 9.2.1).
            answer.push(DavProp { xml: None, ..prop });
        }
        self.forget();
        let status = match self.port().patch_props(entry.id, changes).await {
            Ok(()) => StatusCode::OK,
            // All or nothing: every property gets the one failure's status.
            Err(e) => {
                tracing::debug!(error = %e, "PROPPATCH refused");
                e.status()
            }
        };
        Ok(answer.into_iter().map(|p| (status, p)).collect())
    }
}

fn to_davprop(p: DeadProp) -> DavProp {
    DavProp {
        name: p.name,
        prefix: None,
        namespace: p.namespace,
        xml: Some(p.xml),
    }
}

impl DavFileSystem for PortFs {
    fn open<'a>(&'a self, path: &'a DavPath, options: OpenOptions) -> FsFuture<'a, Box<dyn DavFile>> {
        self.open_file(path_key(path), options).boxed()
    }

    fn read_dir<'a>(&'a self, path: &'a DavPath, _meta: ReadDirMeta) -> FsFuture<'a, FsStream<Box<dyn DavDirEntry>>> {
        self.list_dir(path_key(path)).boxed()
    }

    fn metadata<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, Box<dyn DavMetaData>> {
        async move {
            let entry = self.resolve(&path_key(path)).await?;
            Ok(Box::new(EntryMeta(entry)) as Box<dyn DavMetaData>)
        }
        .boxed()
    }

    fn create_dir<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, ()> {
        self.make_dir(path_key(path)).boxed()
    }

    fn remove_dir<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, ()> {
        self.remove(path_key(path), true).boxed()
    }

    fn remove_file<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, ()> {
        self.remove(path_key(path), false).boxed()
    }

    fn rename<'a>(&'a self, from: &'a DavPath, to: &'a DavPath) -> FsFuture<'a, ()> {
        self.rename_or_copy(path_key(from), path_key(to), false).boxed()
    }

    fn copy<'a>(&'a self, from: &'a DavPath, to: &'a DavPath) -> FsFuture<'a, ()> {
        self.rename_or_copy(path_key(from), path_key(to), true).boxed()
    }

    fn set_modified<'a>(&'a self, path: &'a DavPath, tm: SystemTime) -> FsFuture<'a, ()> {
        async move {
            let entry = self.resolve(&path_key(path)).await?;
            self.forget();
            self.port().set_attrs(entry.id, None, Some(millis(tm))).await?;
            Ok(())
        }
        .boxed()
    }

    fn have_props<'a>(
        &'a self,
        _path: &'a DavPath,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>> {
        futures_util::future::ready(true).boxed()
    }

    fn patch_props<'a>(
        &'a self,
        path: &'a DavPath,
        patch: Vec<(bool, DavProp)>,
    ) -> FsFuture<'a, Vec<(StatusCode, DavProp)>> {
        self.patch(path_key(path), patch).boxed()
    }

    fn get_props<'a>(&'a self, path: &'a DavPath, _do_content: bool) -> FsFuture<'a, Vec<DavProp>> {
        async move {
            let props = self.dead_props(&path_key(path)).await?;
            Ok(props.into_iter().map(to_davprop).collect())
        }
        .boxed()
    }

    fn get_prop<'a>(&'a self, path: &'a DavPath, prop: DavProp) -> FsFuture<'a, Vec<u8>> {
        async move {
            let props = self.dead_props(&path_key(path)).await?;
            props
                .into_iter()
                .find(|p| p.name == prop.name && p.namespace == prop.namespace)
                .map(|p| p.xml)
                .ok_or(FsError::NotFound)
        }
        .boxed()
    }

    fn get_quota(&self) -> FsFuture<'_, (u64, Option<u64>)> {
        async move {
            let q = self.port().quota().await?;
            Ok((q.used, q.limit))
        }
        .boxed()
    }
}
