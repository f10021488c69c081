//! An in-memory [`RemoteTree`], for this crate's tests and the `memmount` example
//! (feature `memory`). It follows the port contract strictly (it re-hashes every upload
//! and refuses a wrong SHA-1), counts calls so tests can see what reached the "server",
//! can fail uploads on demand, and can persist itself to a directory so that a mount
//! process killed with SIGKILL finds the same tree when restarted.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;

use crate::journal::{now_ms, sha1_bytes};
use crate::port::{
    Entry, EntryKind, FsStats, NewAttrs, PortError, PutFile, PutTarget, RemoteTree, RenameMode, SetAttrs, StreamEnd,
    StreamSession, EMPTY_SHA1, NAME_MAX,
};

/// Id of the root; deliberately not 1, so the mount's inode remapping is exercised.
pub const MEMORY_ROOT_ID: i64 = 100;

#[derive(Default)]
struct State {
    next_id: i64,
    nodes: HashMap<i64, Entry>,
    children: HashMap<i64, BTreeMap<String, i64>>,
    blobs: HashMap<String, Bytes>,
    /// Unreferenced contents, dropped oldest first once there are more than `GC_GRACE`:
    /// a grace period (like the core's) so a reader of the old content is not cut off.
    garbage: std::collections::VecDeque<String>,
}

const GC_GRACE: usize = 16;

/// The in-memory tree. Cheap to share behind an `Arc`.
pub struct MemoryTree {
    state: Mutex<State>,
    persist: Option<PathBuf>,
    total_bytes: u64,
    reads: AtomicU64,
    lists: AtomicU64,
    lookups: AtomicU64,
    gets: AtomicU64,
    puts: AtomicU64,
    fail_puts: AtomicBool,
    /// Write-behind chunk size; 0: no write-behind (`begin_stream` answers `None`).
    stream_chunk: AtomicU64,
    streams: Mutex<Streams>,
}

/// Write-behind sessions and what happened to them, as a test wants to see it.
#[derive(Default)]
struct Streams {
    next: u64,
    /// Session id -> (file id, chunks received).
    open: HashMap<String, (i64, BTreeMap<u64, Bytes>)>,
    chunks: u64,
    /// Finished with the chunks sent making up the file (no whole upload needed).
    committed: u64,
    /// Finished with chunks that were not the file's (the server would refuse them).
    refused: u64,
    aborted: u64,
}

/// What write-behind did so far (see [`MemoryTree::stream_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamStats {
    /// Sessions begun.
    pub begun: u64,
    /// Chunks received through `stream_chunk`.
    pub chunks: u64,
    /// Sessions finished whose chunks held the file's bytes.
    pub committed: u64,
    /// Sessions finished with chunks that were not the file's bytes.
    pub refused: u64,
    /// Sessions abandoned.
    pub aborted: u64,
    /// Sessions neither finished nor abandoned.
    pub open: usize,
}

fn bad(msg: &str) -> PortError {
    PortError::InvalidArgument(msg.to_owned())
}

fn check_name(name: &str) -> Result<(), PortError> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) || name.len() > NAME_MAX {
        return Err(bad("bad name"));
    }
    Ok(())
}

impl MemoryTree {
    /// An empty tree whose root (mode 0755) belongs to `uid:gid`.
    pub fn new(uid: u32, gid: u32) -> Self {
        let now = now_ms();
        let root = Entry {
            id: MEMORY_ROOT_ID,
            parent: MEMORY_ROOT_ID,
            name: String::new(),
            kind: EntryKind::Dir,
            size: 0,
            sha1: None,
            mode: 0o755,
            uid: Some(uid),
            gid: Some(gid),
            atime_ms: Some(now),
            mtime_ms: now,
            ctime_ms: now,
        };
        let mut st = State {
            next_id: 1,
            ..Default::default()
        };
        st.nodes.insert(MEMORY_ROOT_ID, root);
        st.children.insert(MEMORY_ROOT_ID, BTreeMap::new());
        MemoryTree {
            state: Mutex::new(st),
            persist: None,
            total_bytes: 1 << 40,
            reads: AtomicU64::new(0),
            lists: AtomicU64::new(0),
            lookups: AtomicU64::new(0),
            gets: AtomicU64::new(0),
            puts: AtomicU64::new(0),
            fail_puts: AtomicBool::new(false),
            stream_chunk: AtomicU64::new(0),
            streams: Mutex::default(),
        }
    }

    /// A tree saved in `dir` after every change (loaded from it if it holds one).
    pub fn persistent(dir: &Path, uid: u32, gid: u32) -> io::Result<Self> {
        fs::create_dir_all(dir.join("blobs"))?;
        let mut tree = MemoryTree::new(uid, gid);
        tree.persist = Some(dir.to_owned());
        let index = dir.join("tree");
        if index.exists() {
            let st = load(dir, &fs::read_to_string(&index)?)?;
            *tree.state.lock().unwrap_or_else(|p| p.into_inner()) = st;
        } else {
            tree.save(&tree.lock())?;
        }
        Ok(tree)
    }

    /// Number of `read` calls so far.
    pub fn read_calls(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Number of `list` calls so far.
    pub fn list_calls(&self) -> u64 {
        self.lists.load(Ordering::Relaxed)
    }

    /// Number of `lookup` calls so far.
    pub fn lookup_calls(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }

    /// Number of `get` calls so far.
    pub fn get_calls(&self) -> u64 {
        self.gets.load(Ordering::Relaxed)
    }

    /// Number of `put_file` calls so far.
    pub fn put_calls(&self) -> u64 {
        self.puts.load(Ordering::Relaxed)
    }

    /// Accepts write-behind uploads in chunks of `chunk_size` bytes (0: none, the default).
    pub fn enable_streams(&self, chunk_size: u64) {
        self.stream_chunk.store(chunk_size, Ordering::Relaxed);
    }

    /// What write-behind did so far.
    pub fn stream_stats(&self) -> StreamStats {
        let s = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        StreamStats {
            begun: s.next,
            chunks: s.chunks,
            committed: s.committed,
            refused: s.refused,
            aborted: s.aborted,
            open: s.open.len(),
        }
    }

    /// Makes every `put_file` fail with a transient error until called with `false`.
    pub fn fail_uploads(&self, fail: bool) {
        self.fail_puts.store(fail, Ordering::Relaxed);
    }

    /// The content of the file at `path` (names separated by `/`), straight from the tree.
    pub fn content(&self, path: &str) -> Option<Bytes> {
        let st = self.lock();
        st.blobs.get(st.node_at(path)?.sha1.as_ref()?).cloned()
    }

    /// The entry at `path` (names separated by `/`), straight from the tree.
    pub fn entry_at(&self, path: &str) -> Option<Entry> {
        self.lock().node_at(path).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save(&self, st: &State) -> io::Result<()> {
        let Some(dir) = &self.persist else { return Ok(()) };
        let mut out = format!("next_id {}\n", st.next_id);
        let opt = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
        for e in st.nodes.values() {
            out.push_str(&format!(
                "{} {} {} {} {} {} {} {} {} {} {} {}\n",
                e.id,
                e.parent,
                if e.kind == EntryKind::Dir { "d" } else { "f" },
                e.mode,
                opt(e.uid.map(|v| v.to_string())),
                opt(e.gid.map(|v| v.to_string())),
                opt(e.atime_ms.map(|v| v.to_string())),
                e.mtime_ms,
                e.ctime_ms,
                e.size,
                opt(e.sha1.clone()),
                hex(e.name.as_bytes()),
            ));
        }
        let tmp = dir.join("tree.tmp");
        fs::write(&tmp, out)?;
        fs::File::open(&tmp)?.sync_all()?;
        fs::rename(tmp, dir.join("tree"))
    }

    fn commit(&self, st: &State) -> Result<(), PortError> {
        self.save(st).map_err(|e| PortError::Other(Box::new(e)))
    }
}

fn hex(b: &[u8]) -> String {
    if b.is_empty() {
        return "-".to_owned();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if s == "-" {
        return Some(String::new());
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect();
    String::from_utf8(bytes?).ok()
}

fn load(dir: &Path, text: &str) -> io::Result<State> {
    let corrupt = || io::Error::new(io::ErrorKind::InvalidData, "corrupt memory tree");
    let mut st = State::default();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() == 2 && f[0] == "next_id" {
            st.next_id = f[1].parse().map_err(|_| corrupt())?;
            continue;
        }
        if f.len() != 12 {
            return Err(corrupt());
        }
        let num = |s: &str| s.parse::<i64>().map_err(|_| corrupt());
        let opt = |s: &str| if s == "-" { Ok(None) } else { num(s).map(Some) };
        let e = Entry {
            id: num(f[0])?,
            parent: num(f[1])?,
            kind: if f[2] == "d" { EntryKind::Dir } else { EntryKind::File },
            mode: num(f[3])? as u32,
            uid: opt(f[4])?.map(|v| v as u32),
            gid: opt(f[5])?.map(|v| v as u32),
            atime_ms: opt(f[6])?,
            mtime_ms: num(f[7])?,
            ctime_ms: num(f[8])?,
            size: num(f[9])? as u64,
            sha1: (f[10] != "-").then(|| f[10].to_owned()),
            name: unhex(f[11]).ok_or_else(corrupt)?,
        };
        if let Some(sha1) = &e.sha1 {
            if !st.blobs.contains_key(sha1) {
                st.blobs
                    .insert(sha1.clone(), Bytes::from(fs::read(dir.join("blobs").join(sha1))?));
            }
        }
        if e.kind == EntryKind::Dir {
            st.children.entry(e.id).or_default();
        }
        st.nodes.insert(e.id, e);
    }
    let links: Vec<(i64, String, i64)> = st
        .nodes
        .values()
        .filter(|e| e.id != MEMORY_ROOT_ID)
        .map(|e| (e.parent, e.name.clone(), e.id))
        .collect();
    for (parent, name, id) in links {
        st.children.entry(parent).or_default().insert(name, id);
    }
    Ok(st)
}

impl State {
    fn unref(&mut self, sha1: Option<String>) {
        let Some(sha1) = sha1 else { return };
        if self.nodes.values().any(|e| e.sha1.as_ref() == Some(&sha1)) {
            return;
        }
        self.garbage.push_back(sha1);
        while self.garbage.len() > GC_GRACE {
            if let Some(old) = self.garbage.pop_front() {
                if !self.nodes.values().any(|e| e.sha1.as_ref() == Some(&old)) {
                    self.blobs.remove(&old);
                }
            }
        }
    }

    fn entry(&self, id: i64) -> Result<&Entry, PortError> {
        self.nodes.get(&id).ok_or(PortError::NotFound)
    }

    fn dir(&self, id: i64) -> Result<&BTreeMap<String, i64>, PortError> {
        match self.entry(id)?.kind {
            EntryKind::Dir => self.children.get(&id).ok_or(PortError::NotFound),
            EntryKind::File => Err(PortError::NotADirectory),
        }
    }

    /// The entry at `path` (names separated by `/`).
    fn node_at(&self, path: &str) -> Option<&Entry> {
        let mut id = MEMORY_ROOT_ID;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            id = *self.children.get(&id)?.get(part)?;
        }
        self.nodes.get(&id)
    }

    fn touch_dir(&mut self, id: i64, now: i64) {
        if let Some(d) = self.nodes.get_mut(&id) {
            d.mtime_ms = now;
            d.ctime_ms = now;
        }
    }

    fn alloc_id(&mut self) -> i64 {
        if self.next_id == MEMORY_ROOT_ID {
            self.next_id += 1;
        }
        self.next_id += 1;
        self.next_id - 1
    }

    /// Adds a directory (`content` None) or a file with `(size, sha1)`.
    fn add(
        &mut self,
        parent: i64,
        name: &str,
        attrs: NewAttrs,
        content: Option<(u64, String)>,
        mtime: i64,
    ) -> Result<Entry, PortError> {
        check_name(name)?;
        if self.dir(parent)?.contains_key(name) {
            return Err(PortError::AlreadyExists);
        }
        let now = now_ms();
        let kind = if content.is_some() {
            EntryKind::File
        } else {
            EntryKind::Dir
        };
        let (size, sha1) = content.map_or((0, None), |(n, h)| (n, Some(h)));
        let e = Entry {
            id: self.alloc_id(),
            parent,
            name: name.to_owned(),
            kind,
            size,
            sha1,
            mode: attrs.mode & 0o7777,
            uid: Some(attrs.uid),
            gid: Some(attrs.gid),
            atime_ms: Some(now),
            mtime_ms: mtime,
            ctime_ms: now,
        };
        if kind == EntryKind::Dir {
            self.children.insert(e.id, BTreeMap::new());
        }
        self.children.entry(parent).or_default().insert(name.to_owned(), e.id);
        self.nodes.insert(e.id, e.clone());
        self.touch_dir(parent, now);
        Ok(e)
    }

    fn remove(&mut self, id: i64, now: i64) {
        let Some(e) = self.nodes.remove(&id) else { return };
        self.unref(e.sha1.clone());
        if let Some(kids) = self.children.remove(&id) {
            for kid in kids.into_values() {
                self.remove(kid, now);
            }
        }
        if let Some(c) = self.children.get_mut(&e.parent) {
            c.remove(&e.name);
        }
        self.touch_dir(e.parent, now);
    }
}

#[async_trait]
impl RemoteTree for MemoryTree {
    fn root_id(&self) -> i64 {
        MEMORY_ROOT_ID
    }

    async fn lookup(&self, parent: i64, name: &str) -> Result<Entry, PortError> {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        let st = self.lock();
        let id = *st.dir(parent)?.get(name).ok_or(PortError::NotFound)?;
        st.entry(id).cloned()
    }

    async fn get(&self, id: i64) -> Result<Entry, PortError> {
        self.gets.fetch_add(1, Ordering::Relaxed);
        self.lock().entry(id).cloned()
    }

    async fn list(&self, dir: i64, after: Option<&str>, limit: usize) -> Result<Vec<Entry>, PortError> {
        self.lists.fetch_add(1, Ordering::Relaxed);
        let st = self.lock();
        let lower = after.map_or(Bound::Unbounded, |a| Bound::Excluded(a.to_owned()));
        let kids = st.dir(dir)?.range((lower, Bound::Unbounded)).take(limit);
        kids.map(|(_, id)| st.entry(*id).cloned()).collect()
    }

    async fn mkdir(&self, parent: i64, name: &str, attrs: NewAttrs) -> Result<Entry, PortError> {
        let mut st = self.lock();
        let e = st.add(parent, name, attrs, None, now_ms())?;
        self.commit(&st)?;
        Ok(e)
    }

    async fn create_file(&self, parent: i64, name: &str, attrs: NewAttrs, mtime_ms: i64) -> Result<Entry, PortError> {
        if let Some(dir) = &self.persist {
            let path = dir.join("blobs").join(EMPTY_SHA1);
            if !path.exists() {
                fs::write(&path, b"").map_err(|e| PortError::Other(Box::new(e)))?;
            }
        }
        let mut st = self.lock();
        st.blobs.insert(EMPTY_SHA1.to_owned(), Bytes::new());
        let e = st.add(parent, name, attrs, Some((0, EMPTY_SHA1.to_owned())), mtime_ms)?;
        self.commit(&st)?;
        Ok(e)
    }

    async fn put_file(&self, put: PutFile<'_>) -> Result<Entry, PortError> {
        self.puts.fetch_add(1, Ordering::Relaxed);
        if self.fail_puts.load(Ordering::Relaxed) {
            return Err(PortError::Transient("injected upload failure".into()));
        }
        // Like the real server, trust nothing the client says about the bytes.
        let data = fs::read(put.source).map_err(|e| PortError::Other(Box::new(e)))?;
        if data.len() as u64 != put.size || sha1_bytes(&data) != put.sha1 {
            return Err(PortError::Other(
                "upload does not match its declared size and SHA-1".into(),
            ));
        }
        if let Some(dir) = &self.persist {
            let path = dir.join("blobs").join(put.sha1);
            if !path.exists() {
                fs::write(&path, &data).map_err(|e| PortError::Other(Box::new(e)))?;
            }
        }
        let mut st = self.lock();
        st.blobs.insert(put.sha1.to_owned(), Bytes::from(data));
        let e = match put.target {
            PutTarget::Create { parent, name, attrs } => {
                st.add(parent, name, attrs, Some((put.size, put.sha1.to_owned())), put.mtime_ms)?
            }
            PutTarget::Replace { id } => {
                let e = st.nodes.get_mut(&id).ok_or(PortError::NotFound)?;
                if e.kind == EntryKind::Dir {
                    return Err(PortError::IsADirectory);
                }
                e.size = put.size;
                let old = e.sha1.replace(put.sha1.to_owned());
                e.mtime_ms = put.mtime_ms;
                e.ctime_ms = now_ms().max(put.mtime_ms);
                let e = e.clone();
                if old.as_deref() != Some(put.sha1) {
                    st.unref(old);
                }
                e
            }
        };
        self.commit(&st)?;
        Ok(e)
    }

    async fn begin_stream(&self, id: i64) -> Result<Option<StreamSession>, PortError> {
        let chunk_size = self.stream_chunk.load(Ordering::Relaxed);
        if chunk_size == 0 {
            return Ok(None);
        }
        let mut s = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        s.next += 1;
        let sid = format!("s{}", s.next);
        s.open.insert(sid.clone(), (id, BTreeMap::new()));
        Ok(Some(StreamSession { id: sid, chunk_size }))
    }

    async fn stream_chunk(&self, stream: &StreamSession, index: u64, data: Bytes) -> Result<(), PortError> {
        if data.len() as u64 != stream.chunk_size {
            return Err(bad("a write-behind chunk must be chunk_size bytes"));
        }
        let mut s = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        s.chunks += 1;
        let (_, chunks) = s
            .open
            .get_mut(&stream.id)
            .ok_or(PortError::Other("no such stream".into()))?;
        // Like the server: a chunk received keeps its first bytes.
        chunks.entry(index).or_insert(data);
        Ok(())
    }

    async fn finish_stream(&self, stream: &StreamSession, end: StreamEnd<'_>, sent: u64) -> Result<Entry, PortError> {
        let session = self
            .streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .open
            .remove(&stream.id);
        // Assembled like the server does: the chunks it got, the rest from the source.
        let source = fs::read(end.source).map_err(|e| PortError::Other(Box::new(e)))?;
        let ours = match &session {
            Some((id, chunks)) if *id == end.id => {
                let mut data = Vec::with_capacity(source.len());
                for (i, (index, chunk)) in chunks.iter().enumerate() {
                    if *index != i as u64 {
                        break;
                    }
                    data.extend_from_slice(chunk);
                }
                let have = data.len().min(source.len());
                data.truncate(have);
                data.extend_from_slice(&source[have..]);
                // Stricter than the server, which has only the chunks' checksums: the bytes
                // the chunks hold must be the source's.
                (chunks.len() as u64) >= sent && data == source && data.len() as u64 == end.size
            }
            _ => false,
        };
        {
            let mut s = self.streams.lock().unwrap_or_else(|p| p.into_inner());
            if ours {
                s.committed += 1;
            } else {
                s.refused += 1;
            }
        }
        // Either way the bytes are now the source's: commit them as a whole upload would.
        let sha1 = sha1_bytes(&source);
        self.put_file(end.as_put(&sha1)).await
    }

    async fn abort_stream(&self, stream: &StreamSession) {
        let mut s = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        if s.open.remove(&stream.id).is_some() {
            s.aborted += 1;
        }
    }

    async fn read(&self, _id: i64, sha1: &str, offset: u64, len: u64) -> Result<Bytes, PortError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let st = self.lock();
        let blob = st.blobs.get(sha1).ok_or(PortError::NotFound)?;
        let start = (offset.min(blob.len() as u64)) as usize;
        let end = (offset.saturating_add(len).min(blob.len() as u64)) as usize;
        Ok(blob.slice(start..end))
    }

    async fn rename(&self, id: i64, new_parent: i64, new_name: &str, mode: RenameMode) -> Result<Entry, PortError> {
        check_name(new_name)?;
        let mut st = self.lock();
        let e = st.entry(id)?.clone();
        if id == MEMORY_ROOT_ID {
            return Err(PortError::PermissionDenied);
        }
        let existing = st.dir(new_parent)?.get(new_name).copied();
        if e.kind == EntryKind::Dir {
            let mut p = new_parent;
            loop {
                if p == id {
                    return Err(bad("cannot move a directory under itself"));
                }
                if p == MEMORY_ROOT_ID {
                    break;
                }
                p = st.entry(p)?.parent;
            }
        }
        let now = now_ms();
        if let Some(target) = existing {
            if target == id {
                return Ok(e);
            }
            if mode == RenameMode::NoReplace {
                return Err(PortError::AlreadyExists);
            }
            let t = st.entry(target)?;
            match (e.kind, t.kind) {
                (EntryKind::File, EntryKind::Dir) => return Err(PortError::IsADirectory),
                (EntryKind::Dir, EntryKind::File) => return Err(PortError::NotADirectory),
                (EntryKind::Dir, EntryKind::Dir) if !st.dir(target)?.is_empty() => return Err(PortError::NotEmpty),
                _ => {}
            }
            st.remove(target, now);
        }
        if let Some(c) = st.children.get_mut(&e.parent) {
            c.remove(&e.name);
        }
        st.children
            .entry(new_parent)
            .or_default()
            .insert(new_name.to_owned(), id);
        st.touch_dir(e.parent, now);
        st.touch_dir(new_parent, now);
        let moved = st.nodes.get_mut(&id).ok_or(PortError::NotFound)?;
        moved.parent = new_parent;
        moved.name = new_name.to_owned();
        moved.ctime_ms = now;
        let moved = moved.clone();
        self.commit(&st)?;
        Ok(moved)
    }

    async fn delete(&self, id: i64, recursive: bool) -> Result<(), PortError> {
        let mut st = self.lock();
        if id == MEMORY_ROOT_ID {
            return Err(PortError::PermissionDenied);
        }
        let e = st.entry(id)?;
        if e.kind == EntryKind::Dir && !recursive && !st.dir(id)?.is_empty() {
            return Err(PortError::NotEmpty);
        }
        st.remove(id, now_ms());
        self.commit(&st)
    }

    async fn delete_child(&self, parent: i64, name: &str, dir: bool) -> Result<Option<Entry>, PortError> {
        let mut st = self.lock();
        let id = *st.dir(parent)?.get(name).ok_or(PortError::NotFound)?;
        match (dir, st.entry(id)?.kind) {
            (true, EntryKind::File) => return Err(PortError::NotADirectory),
            (false, EntryKind::Dir) => return Err(PortError::IsADirectory),
            (true, EntryKind::Dir) if !st.dir(id)?.is_empty() => return Err(PortError::NotEmpty),
            _ => {}
        }
        st.remove(id, now_ms());
        let left = st.entry(parent)?.clone();
        self.commit(&st)?;
        Ok(Some(left))
    }

    async fn set_attrs(&self, id: i64, a: SetAttrs) -> Result<Entry, PortError> {
        let mut st = self.lock();
        let e = st.nodes.get_mut(&id).ok_or(PortError::NotFound)?;
        if let Some(m) = a.mode {
            e.mode = m & 0o7777;
        }
        if a.uid.is_some() {
            e.uid = a.uid;
        }
        if a.gid.is_some() {
            e.gid = a.gid;
        }
        if a.atime_ms.is_some() {
            e.atime_ms = a.atime_ms;
        }
        if let Some(m) = a.mtime_ms {
            e.mtime_ms = m;
        }
        e.ctime_ms = now_ms();
        let e = e.clone();
        self.commit(&st)?;
        Ok(e)
    }

    async fn statfs(&self) -> Result<FsStats, PortError> {
        let st = self.lock();
        let used = st.nodes.values().map(|e| e.size).sum();
        Ok(FsStats {
            total_bytes: self.total_bytes,
            used_bytes: used,
        })
    }
}
