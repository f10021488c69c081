//! An in-memory [`DavPort`] for this crate's tests, the `memdav` example and litmus.
//!
//! It follows the port contract closely (atomic operations, byte-ordered listings,
//! SHA-1 ETags, rename/copy overwrite rules, cycle refusal) so that the adapter is
//! tested against the same behaviour the core provides. It also counts calls per
//! method, which the tests use to prove that a request costs a bounded number of port
//! calls.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use sha1::{Digest, Sha1};

use crate::error::PortError;
use crate::port::{
    Conflict, DavPort, DeadProp, Entry, EntryId, EntryKind, Millis, Overwrite, PropPatch, Quota, ReadBody, UploadBody,
    UploadOptions,
};

const ROOT: EntryId = 1;
const READ_CHUNK: usize = 64 * 1024;

type PropKey = (Option<String>, String);

#[derive(Debug, Clone)]
struct Node {
    entry: Entry,
    children: BTreeMap<String, EntryId>,
    content: Bytes,
    props: BTreeMap<PropKey, Vec<u8>>,
}

#[derive(Debug)]
struct State {
    nodes: HashMap<EntryId, Node>,
    next_id: EntryId,
}

/// Number of calls of each port method since creation or [`MemoryPort::reset_calls`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CallCounts {
    /// [`DavPort::get`]
    pub get: u64,
    /// [`DavPort::lookup`] (also what the default `resolve` calls)
    pub lookup: u64,
    /// [`DavPort::list`]
    pub list: u64,
    /// [`DavPort::upload`]
    pub upload: u64,
    /// [`DavPort::read`]
    pub read: u64,
    /// [`DavPort::get_props`]
    pub get_props: u64,
    /// [`DavPort::get_props_many`]
    pub get_props_many: u64,
    /// Every mutating call (mkdir, rename, copy, delete, set_attrs, patch_props).
    pub mutations: u64,
}

#[derive(Debug, Default)]
struct Counters {
    get: AtomicU64,
    lookup: AtomicU64,
    list: AtomicU64,
    upload: AtomicU64,
    read: AtomicU64,
    get_props: AtomicU64,
    get_props_many: AtomicU64,
    mutations: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The largest and the number of chunks of the last upload the port received.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UploadShape {
    /// Body chunks received.
    pub chunks: u64,
    /// Bytes received.
    pub bytes: u64,
}

/// One user's tree in memory.
#[derive(Debug)]
pub struct MemoryPort {
    state: Mutex<State>,
    counters: Counters,
    max_file_size: Option<u64>,
    quota_limit: Option<u64>,
    last_upload: Mutex<UploadShape>,
}

fn now() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn hex_sha1(data: &[u8]) -> String {
    Sha1::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

fn check_name(name: &str) -> Result<(), PortError> {
    if name.is_empty() || name.len() > 255 || name.contains(['/', '\0']) || name == "." || name == ".." {
        return Err(PortError::InvalidName);
    }
    Ok(())
}

impl Default for MemoryPort {
    fn default() -> Self {
        Self::new()
    }
}

impl State {
    fn node(&self, id: EntryId) -> Result<&Node, PortError> {
        self.nodes.get(&id).ok_or(PortError::NotFound)
    }

    fn node_mut(&mut self, id: EntryId) -> Result<&mut Node, PortError> {
        self.nodes.get_mut(&id).ok_or(PortError::NotFound)
    }

    fn dir(&self, id: EntryId) -> Result<&Node, PortError> {
        let n = self.node(id)?;
        if n.entry.kind != EntryKind::Dir {
            return Err(PortError::NotADirectory);
        }
        Ok(n)
    }

    fn child(&self, dir: EntryId, name: &str) -> Result<Option<EntryId>, PortError> {
        Ok(self.dir(dir)?.children.get(name).copied())
    }

    /// Whether `id` is `ancestor` or below it.
    fn is_within(&self, id: EntryId, ancestor: EntryId) -> bool {
        let mut cur = Some(id);
        while let Some(c) = cur {
            if c == ancestor {
                return true;
            }
            cur = self.nodes.get(&c).and_then(|n| n.entry.parent);
        }
        false
    }

    fn alloc(&mut self) -> EntryId {
        self.next_id += 1;
        self.next_id
    }

    fn remove_tree(&mut self, id: EntryId) {
        if let Some(node) = self.nodes.remove(&id) {
            if let Some(p) = node.entry.parent.and_then(|p| self.nodes.get_mut(&p)) {
                p.children.remove(&node.entry.name);
            }
            let mut stack: Vec<EntryId> = node.children.values().copied().collect();
            while let Some(c) = stack.pop() {
                if let Some(n) = self.nodes.remove(&c) {
                    stack.extend(n.children.values().copied());
                }
            }
        }
    }

    fn attach(&mut self, mut node: Node, parent: EntryId, name: &str) -> Result<Entry, PortError> {
        node.entry.parent = Some(parent);
        node.entry.name = name.to_owned();
        let entry = node.entry.clone();
        self.node_mut(parent)?.children.insert(name.to_owned(), entry.id);
        self.nodes.insert(entry.id, node);
        Ok(entry)
    }

    /// Makes room for `src` at `name` in `parent` according to `overwrite`.
    fn clear_destination(
        &mut self,
        src: EntryId,
        parent: EntryId,
        name: &str,
        overwrite: Overwrite,
    ) -> Result<(), PortError> {
        let Some(dest) = self.child(parent, name)? else {
            return Ok(());
        };
        let src_dir = self.node(src)?.entry.is_dir();
        let dest_node = self.node(dest)?;
        match overwrite {
            Overwrite::No => return Err(PortError::AlreadyExists),
            Overwrite::Posix => match (src_dir, dest_node.entry.is_dir()) {
                (false, true) => return Err(PortError::IsADirectory),
                (true, false) => return Err(PortError::NotADirectory),
                (true, true) if !dest_node.children.is_empty() => return Err(PortError::NotEmpty),
                _ => {}
            },
            Overwrite::Any => {}
        }
        if self.is_within(src, dest) {
            // Replacing an ancestor of the source would delete the source.
            return Err(PortError::Forbidden("destination contains the source".into()));
        }
        self.remove_tree(dest);
        Ok(())
    }

    fn clone_tree(&mut self, id: EntryId) -> Result<Node, PortError> {
        let mut node = self.node(id)?.clone();
        let t = now();
        node.entry.id = self.alloc();
        node.entry.ctime = t;
        node.entry.created = t;
        let children = std::mem::take(&mut node.children);
        for (name, child) in children {
            let mut c = self.clone_tree(child)?;
            c.entry.parent = Some(node.entry.id);
            node.children.insert(name, c.entry.id);
            self.nodes.insert(c.entry.id, c);
        }
        Ok(node)
    }
}

impl MemoryPort {
    /// An empty tree (just the root).
    pub fn new() -> Self {
        let t = now();
        let root = Node {
            entry: Entry {
                id: ROOT,
                parent: None,
                name: String::new(),
                kind: EntryKind::Dir,
                size: 0,
                sha1: None,
                mode: 0o755,
                mtime: t,
                ctime: t,
                created: t,
            },
            children: BTreeMap::new(),
            content: Bytes::new(),
            props: BTreeMap::new(),
        };
        Self {
            state: Mutex::new(State {
                nodes: HashMap::from([(ROOT, root)]),
                next_id: ROOT,
            }),
            counters: Counters::default(),
            max_file_size: None,
            quota_limit: None,
            last_upload: Mutex::new(UploadShape::default()),
        }
    }

    /// Refuse files larger than `n` bytes with [`PortError::TooLarge`].
    pub fn with_max_file_size(mut self, n: u64) -> Self {
        self.max_file_size = Some(n);
        self
    }

    /// Report a quota limit (and refuse uploads beyond it with `InsufficientStorage`).
    pub fn with_quota(mut self, limit: u64) -> Self {
        self.quota_limit = Some(limit);
        self
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Calls so far.
    pub fn calls(&self) -> CallCounts {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CallCounts {
            get: l(&c.get),
            lookup: l(&c.lookup),
            list: l(&c.list),
            upload: l(&c.upload),
            read: l(&c.read),
            get_props: l(&c.get_props),
            get_props_many: l(&c.get_props_many),
            mutations: l(&c.mutations),
        }
    }

    /// Sets every counter back to zero.
    pub fn reset_calls(&self) {
        let c = &self.counters;
        for a in [
            &c.get,
            &c.lookup,
            &c.list,
            &c.upload,
            &c.read,
            &c.get_props,
            &c.get_props_many,
            &c.mutations,
        ] {
            a.store(0, Ordering::Relaxed);
        }
    }

    /// How the last upload arrived.
    pub fn last_upload(&self) -> UploadShape {
        *self.last_upload.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Test set-up without the async API: a file with `content` (replaced if present).
    pub fn insert_file(&self, parent: EntryId, name: &str, content: &[u8]) -> Result<Entry, PortError> {
        self.store(
            parent,
            name,
            Bytes::copy_from_slice(content),
            UploadOptions::new(Conflict::Replace),
        )
    }

    /// Test set-up: a directory.
    pub fn insert_dir(&self, parent: EntryId, name: &str) -> Result<Entry, PortError> {
        check_name(name)?;
        let mut st = self.state();
        if st.child(parent, name)?.is_some() {
            return Err(PortError::AlreadyExists);
        }
        let t = now();
        let id = st.alloc();
        let node = Node {
            entry: Entry {
                id,
                parent: Some(parent),
                name: name.to_owned(),
                kind: EntryKind::Dir,
                size: 0,
                sha1: None,
                mode: 0o755,
                mtime: t,
                ctime: t,
                created: t,
            },
            children: BTreeMap::new(),
            content: Bytes::new(),
            props: BTreeMap::new(),
        };
        st.attach(node, parent, name)
    }

    /// The content of a file, for assertions.
    pub fn content(&self, id: EntryId) -> Option<Bytes> {
        self.state().nodes.get(&id).map(|n| n.content.clone())
    }

    fn used(st: &State) -> u64 {
        st.nodes
            .values()
            .map(|n| u64::try_from(n.entry.size).unwrap_or(0))
            .sum()
    }

    fn store(&self, parent: EntryId, name: &str, data: Bytes, options: UploadOptions) -> Result<Entry, PortError> {
        check_name(name)?;
        let mut st = self.state();
        st.dir(parent)?;
        let existing = st.child(parent, name)?;
        let old_size = match existing {
            Some(id) => {
                let n = st.node(id)?;
                if n.entry.is_dir() {
                    return Err(PortError::IsADirectory);
                }
                if options.conflict == Conflict::Fail {
                    return Err(PortError::AlreadyExists);
                }
                u64::try_from(n.entry.size).unwrap_or(0)
            }
            None => 0,
        };
        if let Some(limit) = self.quota_limit {
            if Self::used(&st) - old_size + data.len() as u64 > limit {
                return Err(PortError::InsufficientStorage);
            }
        }
        let t = now();
        let sha1 = Some(hex_sha1(&data));
        let size = i64::try_from(data.len()).map_err(|_| PortError::TooLarge)?;
        let mtime = options.mtime.unwrap_or(t);
        if let Some(id) = existing {
            let n = st.node_mut(id)?;
            n.content = data;
            n.entry.size = size;
            n.entry.sha1 = sha1;
            n.entry.mtime = mtime;
            n.entry.ctime = t;
            return Ok(n.entry.clone());
        }
        let id = st.alloc();
        let node = Node {
            entry: Entry {
                id,
                parent: Some(parent),
                name: name.to_owned(),
                kind: EntryKind::File,
                size,
                sha1,
                mode: 0o644,
                mtime,
                ctime: t,
                created: t,
            },
            children: BTreeMap::new(),
            content: data,
            props: BTreeMap::new(),
        };
        st.attach(node, parent, name)
    }
}

#[async_trait]
impl DavPort for MemoryPort {
    fn root_id(&self) -> EntryId {
        ROOT
    }

    async fn get(&self, id: EntryId) -> Result<Entry, PortError> {
        bump(&self.counters.get);
        Ok(self.state().node(id)?.entry.clone())
    }

    async fn lookup(&self, parent: EntryId, name: &str) -> Result<Option<Entry>, PortError> {
        bump(&self.counters.lookup);
        let st = self.state();
        let child = st.child(parent, name)?;
        Ok(child.and_then(|id| st.nodes.get(&id)).map(|n| n.entry.clone()))
    }

    async fn list(&self, dir: EntryId, after: Option<&str>, limit: usize) -> Result<Vec<Entry>, PortError> {
        bump(&self.counters.list);
        let st = self.state();
        let d = st.dir(dir)?;
        let lower = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        Ok(d.children
            .range::<str, _>((lower, Bound::Unbounded))
            .take(limit)
            .filter_map(|(_, id)| st.nodes.get(id).map(|n| n.entry.clone()))
            .collect())
    }

    async fn mkdir(&self, parent: EntryId, name: &str) -> Result<Entry, PortError> {
        bump(&self.counters.mutations);
        self.insert_dir(parent, name)
    }

    async fn upload(
        &self,
        parent: EntryId,
        name: &str,
        mut body: UploadBody,
        options: UploadOptions,
    ) -> Result<Entry, PortError> {
        bump(&self.counters.upload);
        check_name(name)?;
        if let (Some(max), Some(len)) = (self.max_file_size, options.expected_len) {
            if len > max {
                return Err(PortError::TooLarge);
            }
        }
        {
            // Fail before reading the body if the upload cannot succeed.
            let st = self.state();
            st.dir(parent)?;
            if let Some(id) = st.child(parent, name)? {
                if st.node(id)?.entry.is_dir() {
                    return Err(PortError::IsADirectory);
                }
                if options.conflict == Conflict::Fail {
                    return Err(PortError::AlreadyExists);
                }
            }
        }
        let mut buf = BytesMut::new();
        let mut shape = UploadShape::default();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(PortError::other)?;
            shape.chunks += 1;
            shape.bytes += chunk.len() as u64;
            buf.extend_from_slice(&chunk);
            if self.max_file_size.is_some_and(|max| buf.len() as u64 > max) {
                return Err(PortError::TooLarge);
            }
        }
        *self.last_upload.lock().unwrap_or_else(|e| e.into_inner()) = shape;
        self.store(parent, name, buf.freeze(), options)
    }

    async fn read(&self, entry: &Entry, offset: u64, len: u64) -> Result<ReadBody, PortError> {
        bump(&self.counters.read);
        let content = {
            let st = self.state();
            let n = st.node(entry.id)?;
            if n.entry.is_dir() {
                return Err(PortError::IsADirectory);
            }
            n.content.clone()
        };
        let size = content.len() as u64;
        let start = offset.min(size);
        let end = start.saturating_add(len).min(size);
        let slice = content.slice(usize::try_from(start).unwrap_or(0)..usize::try_from(end).unwrap_or(0));
        let chunks: Vec<Result<Bytes, PortError>> = (0..slice.len())
            .step_by(READ_CHUNK)
            .map(|i| Ok(slice.slice(i..(i + READ_CHUNK).min(slice.len()))))
            .collect();
        Ok(futures_util::stream::iter(chunks).boxed())
    }

    async fn rename(
        &self,
        id: EntryId,
        new_parent: EntryId,
        new_name: &str,
        overwrite: Overwrite,
    ) -> Result<Entry, PortError> {
        bump(&self.counters.mutations);
        check_name(new_name)?;
        let mut st = self.state();
        if id == ROOT {
            return Err(PortError::Forbidden("the root cannot move".into()));
        }
        st.dir(new_parent)?;
        let node = st.node(id)?;
        if node.entry.is_dir() && st.is_within(new_parent, id) {
            return Err(PortError::Forbidden("a directory cannot move below itself".into()));
        }
        if st.child(new_parent, new_name)? == Some(id) {
            return Ok(st.node(id)?.entry.clone());
        }
        st.clear_destination(id, new_parent, new_name, overwrite)?;
        let mut node = st.nodes.remove(&id).ok_or(PortError::NotFound)?;
        if let Some(p) = node.entry.parent.and_then(|p| st.nodes.get_mut(&p)) {
            p.children.remove(&node.entry.name);
        }
        node.entry.ctime = now();
        st.attach(node, new_parent, new_name)
    }

    async fn copy(
        &self,
        id: EntryId,
        new_parent: EntryId,
        new_name: &str,
        overwrite: Overwrite,
    ) -> Result<Entry, PortError> {
        bump(&self.counters.mutations);
        check_name(new_name)?;
        let mut st = self.state();
        st.dir(new_parent)?;
        let node = st.node(id)?;
        if node.entry.is_dir() && st.is_within(new_parent, id) {
            return Err(PortError::Forbidden("a directory cannot be copied below itself".into()));
        }
        if st.child(new_parent, new_name)? == Some(id) {
            return Err(PortError::Forbidden("source and destination are the same".into()));
        }
        st.clear_destination(id, new_parent, new_name, overwrite)?;
        let copy = st.clone_tree(id)?;
        st.attach(copy, new_parent, new_name)
    }

    async fn delete(&self, id: EntryId, recursive: bool) -> Result<(), PortError> {
        bump(&self.counters.mutations);
        let mut st = self.state();
        if id == ROOT {
            return Err(PortError::Forbidden("the root cannot be deleted".into()));
        }
        let node = st.node(id)?;
        if !recursive && !node.children.is_empty() {
            return Err(PortError::NotEmpty);
        }
        st.remove_tree(id);
        Ok(())
    }

    async fn set_attrs(&self, id: EntryId, mode: Option<u32>, mtime: Option<Millis>) -> Result<Entry, PortError> {
        bump(&self.counters.mutations);
        let mut st = self.state();
        let n = st.node_mut(id)?;
        if let Some(m) = mode {
            n.entry.mode = m;
        }
        if let Some(t) = mtime {
            n.entry.mtime = t;
        }
        n.entry.ctime = now();
        Ok(n.entry.clone())
    }

    async fn get_props(&self, id: EntryId) -> Result<Vec<DeadProp>, PortError> {
        bump(&self.counters.get_props);
        Ok(props_of(self.state().node(id)?))
    }

    async fn get_props_many(&self, ids: &[EntryId]) -> Result<Vec<(EntryId, Vec<DeadProp>)>, PortError> {
        bump(&self.counters.get_props_many);
        let st = self.state();
        Ok(ids
            .iter()
            .filter_map(|id| {
                st.nodes
                    .get(id)
                    .filter(|n| !n.props.is_empty())
                    .map(|n| (*id, props_of(n)))
            })
            .collect())
    }

    async fn patch_props(&self, id: EntryId, patch: Vec<PropPatch>) -> Result<(), PortError> {
        bump(&self.counters.mutations);
        let mut st = self.state();
        let n = st.node_mut(id)?;
        // Work on a copy so a failure leaves nothing half-applied.
        let mut props = n.props.clone();
        for p in patch {
            match p {
                PropPatch::Set(d) => {
                    props.insert((d.namespace, d.name), d.xml);
                }
                PropPatch::Remove { namespace, name } => {
                    props.remove(&(namespace, name));
                }
            }
        }
        n.props = props;
        Ok(())
    }

    async fn quota(&self) -> Result<Quota, PortError> {
        let st = self.state();
        Ok(Quota {
            used: Self::used(&st),
            limit: self.quota_limit,
        })
    }
}

fn props_of(n: &Node) -> Vec<DeadProp> {
    n.props
        .iter()
        .map(|((namespace, name), xml)| DeadProp {
            namespace: namespace.clone(),
            name: name.clone(),
            xml: xml.clone(),
        })
        .collect()
}
