//! Hashing a chunked upload while its chunks arrive.
//!
//! `complete` needs the SHA-1 of the assembled file (the SHA-256 only on a dedup hit, see
//! `Drive::commit`). Hashing all of it there costs a full read and hash after the last
//! chunk, while the client waits. Instead, chunks recorded by this process are hashed in
//! order on a blocking thread while later chunks still arrive, and `complete` hashes only
//! what is left.
//!
//! This is sound because a recorded chunk is never written again (`put_part` leaves a
//! resent recorded chunk alone) and `complete` holds the data file's exclusive lock while
//! it hashes the rest. Chunks recorded by another process (a second gateway, or before a
//! restart) are not known here: the running hash stops in front of the first one and
//! `complete` reads the rest from the file.
//!
//! A chunk's bytes as received may be held in memory until its turn ([`PrefixHashes::hold`],
//! bounded by [`MAX_HELD`] over all sessions, and only for chunks at most [`HOLD_AHEAD`]
//! past the next one to hash): it is then hashed from them instead of read back from the
//! file, which saved a copy of every byte (the read-back was a sixth of the server's CPU on
//! a large upload, docs/BENCHMARKS.md). Without room, it is read back. Held bytes that
//! never get their turn (the chunk before them went elsewhere) are dropped at `complete`,
//! cancel or the sweep.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use bytes::Bytes;

use crate::blob::Digests;

/// Sessions tracked at once; further ones are hashed at `complete` only. Bounds the memory
/// that abandoned sessions can hold until the sweep.
const MAX_TRACKED: usize = 1024;

/// Received bytes held for hashing, over all sessions: a dozen 5 MiB chunks, enough for
/// the chunks a client has in flight and a few that overtook their predecessor.
pub const MAX_HELD: u64 = 64 << 20;

/// How far ahead of the next chunk to hash a chunk's bytes are held.
const HOLD_AHEAD: i64 = 8;

#[derive(Default)]
pub struct PrefixHashes {
    sessions: Mutex<HashMap<String, Arc<Prefix>>>,
    /// Bytes reserved by [`Held`] chunks now.
    held_bytes: Arc<AtomicU64>,
}

/// Room for one chunk's bytes in memory, taken before it is received.
pub struct Hold {
    bytes: u64,
    held: Arc<AtomicU64>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.held.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// A received chunk's bytes, in the pieces the body came in, kept until it is hashed.
pub struct Held {
    pieces: Vec<Bytes>,
    _room: Hold,
}

impl Held {
    /// `pieces` must fit in the room `hold` reserved.
    pub fn new(pieces: Vec<Bytes>, hold: Hold) -> Held {
        debug_assert!(pieces.iter().map(|b| b.len() as u64).sum::<u64>() <= hold.bytes);
        Held { pieces, _room: hold }
    }

    fn len(&self) -> u64 {
        self.pieces.iter().map(|b| b.len() as u64).sum()
    }
}

/// The chunk layout of one session.
#[derive(Clone)]
pub struct Layout {
    pub path: PathBuf,
    pub chunk_size: u64,
    /// `None` for an open-ended session (size declared at `complete`): only chunks that
    /// lie whole in the file are hashed, since a shorter one may be the last.
    pub size: Option<u64>,
}

struct Prefix {
    layout: Layout,
    state: Mutex<State>,
    idle: Condvar,
}

struct State {
    /// The next chunk (1-based) to hash; all before it are in `digests`.
    next: i64,
    /// Chunks recorded here and not yet hashed.
    waiting: BTreeSet<i64>,
    /// Taken by the hashing thread while it works.
    digests: Option<Digests>,
    running: bool,
    /// `complete` is taking the digests: the thread stops at the next chunk boundary.
    finishing: bool,
    /// Reading failed; `complete` hashes everything itself.
    broken: bool,
    /// Bytes of waiting chunks, as received.
    held: HashMap<i64, Held>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PrefixHashes {
    /// Reserves room to hold a chunk of up to `bytes` in memory, if there is some.
    pub fn hold(&self, bytes: u64) -> Option<Hold> {
        self.held_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
                (now + bytes <= MAX_HELD).then_some(now + bytes)
            })
            .ok()
            .map(|_| Hold {
                bytes,
                held: self.held_bytes.clone(),
            })
    }

    /// Chunk `index` of session `id` is on disk and recorded: hash it when its turn comes,
    /// from `bytes` if given (they must be what was written).
    pub fn recorded(&self, id: &str, layout: impl FnOnce() -> Layout, index: i64, bytes: Option<Held>) {
        let prefix = {
            let mut sessions = lock(&self.sessions);
            if let Some(p) = sessions.get(id) {
                p.clone()
            } else if sessions.len() < MAX_TRACKED {
                let p = Arc::new(Prefix {
                    layout: layout(),
                    state: Mutex::new(State {
                        next: 1,
                        waiting: BTreeSet::new(),
                        digests: Some(Digests::default()),
                        running: false,
                        finishing: false,
                        broken: false,
                        held: HashMap::new(),
                    }),
                    idle: Condvar::new(),
                });
                sessions.insert(id.to_owned(), p.clone());
                p
            } else {
                return;
            }
        };
        let start = {
            let mut st = lock(&prefix.state);
            if index >= st.next {
                st.waiting.insert(index);
                // Only near its turn: a chunk far ahead may wait behind one that never
                // comes here (another gateway took it) until `complete`, and would keep
                // its room from other sessions all that time. It is read back instead.
                if let Some(b) = bytes.filter(|_| !st.broken && index < st.next + HOLD_AHEAD) {
                    st.held.insert(index, b);
                }
            }
            let go = !st.running && !st.finishing && !st.broken && st.waiting.contains(&st.next);
            st.running |= go;
            go
        };
        if start {
            tokio::task::spawn_blocking(move || prefix.run());
        }
    }

    /// Stops hashing session `id` and returns what was hashed (from the start of the file);
    /// empty digests when nothing was. Blocks for at most one chunk's hashing: call it
    /// from a blocking thread.
    pub fn take(&self, id: &str) -> Digests {
        let Some(prefix) = lock(&self.sessions).remove(id) else {
            return Digests::default();
        };
        let mut st = lock(&prefix.state);
        st.finishing = true;
        while st.running {
            st = prefix.idle.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        st.held.clear();
        match st.digests.take() {
            Some(d) if !st.broken => d,
            _ => Digests::default(),
        }
    }

    /// Drops session `id` (cancelled, or its data file swept); a running thread stops
    /// after its current chunk.
    pub fn forget(&self, id: &str) {
        if let Some(prefix) = lock(&self.sessions).remove(id) {
            let mut st = lock(&prefix.state);
            st.finishing = true;
            st.held.clear();
        }
    }

    /// Waits until session `id`'s thread has hashed every consecutive chunk it has.
    #[cfg(test)]
    fn settle(&self, id: &str) {
        let Some(prefix) = lock(&self.sessions).get(id).cloned() else {
            return;
        };
        let mut st = lock(&prefix.state);
        while st.running {
            st = prefix.idle.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Sessions currently tracked.
    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.sessions).len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Prefix {
    /// The hashing thread: hashes consecutive recorded chunks until it reaches one that is
    /// not there yet, or `complete` wants the result.
    fn run(&self) {
        let mut file = File::open(&self.layout.path);
        loop {
            let (index, mut digests, held) = {
                let mut st = lock(&self.state);
                let next = st.next;
                if st.finishing || st.broken || !st.waiting.remove(&next) {
                    st.running = false;
                    self.idle.notify_all();
                    return;
                }
                let held = st.held.remove(&next);
                (
                    next,
                    st.digests.take().expect("digests are home while not running"),
                    held,
                )
            };
            let hashed = match (held, &mut file) {
                (Some(held), _) => Ok(self.hash_held(held, index, &mut digests)),
                (None, Ok(f)) => self.hash_chunk(f, index, &mut digests),
                (None, Err(_)) => Err(std::io::ErrorKind::NotFound.into()),
            };
            let mut st = lock(&self.state);
            st.digests = Some(digests);
            match hashed {
                Ok(true) => st.next = index + 1,
                Ok(false) => {
                    // A short chunk of an open-ended session: the last one, or one that
                    // the rest of the file will show to be wrong. `complete` hashes it.
                    st.waiting.insert(index);
                    st.running = false;
                    self.idle.notify_all();
                    return;
                }
                Err(_) => {
                    st.broken = true;
                    st.held.clear();
                }
            }
        }
    }

    /// Hashes chunk `index` from its bytes as received, like [`hash_chunk`](Self::hash_chunk)
    /// from the file.
    fn hash_held(&self, held: Held, index: i64, digests: &mut Digests) -> bool {
        let Layout { chunk_size, size, .. } = self.layout;
        let offset = (index as u64 - 1) * chunk_size;
        debug_assert_eq!(offset, digests.size);
        let whole = chunk_size.min(size.unwrap_or(u64::MAX).saturating_sub(offset));
        // Short in an open-ended session: maybe the last chunk, which `complete` hashes.
        // (In a sized one `put_part` recorded only a chunk of the right length.)
        if held.len() != whole {
            return false;
        }
        for piece in &held.pieces {
            digests.update(piece);
        }
        true
    }

    /// Hashes chunk `index`; `Ok(false)` (nothing hashed) for a chunk of an open-ended
    /// session that is shorter than `chunk_size` in the file.
    fn hash_chunk(&self, file: &mut File, index: i64, digests: &mut Digests) -> std::io::Result<bool> {
        let Layout { chunk_size, size, .. } = self.layout;
        let offset = (index as u64 - 1) * chunk_size;
        debug_assert_eq!(offset, digests.size);
        let size = match size {
            Some(n) => n,
            None if file.metadata()?.len() < offset + chunk_size => return Ok(false),
            None => offset + chunk_size,
        };
        let mut left = chunk_size.min(size.saturating_sub(offset));
        file.seek(SeekFrom::Start(offset))?;
        let mut buf = vec![0u8; (256 << 10).min(left.max(1) as usize)];
        while left > 0 {
            let want = buf.len().min(left as usize);
            file.read_exact(&mut buf[..want])?;
            digests.update(&buf[..want]);
            left -= want as u64;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha1::Digest;

    fn finish(d: Digests) -> (String, u64) {
        (hex::encode(d.sha1.finalize()), d.size)
    }

    /// What `take` returns once the hashing thread has done all it can.
    async fn settled(p: &Arc<PrefixHashes>, id: &'static str) -> Digests {
        let p = p.clone();
        tokio::task::spawn_blocking(move || {
            p.settle(id);
            p.take(id)
        })
        .await
        .unwrap()
    }

    /// `n` bytes of a pattern set by `k`.
    fn pattern(n: u32, k: u32) -> Vec<u8> {
        (0..n).map(|i| (i * k % 251) as u8).collect()
    }

    /// A data file holding `bytes`, in a directory that lives as long as the first value.
    fn data_file(bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.data");
        std::fs::write(&path, bytes).unwrap();
        (dir, path)
    }

    /// The layout of a test session: chunks of 3000 bytes in `path`.
    fn layout_of(path: &std::path::Path, size: Option<u64>) -> impl Fn() -> Layout + Copy + '_ {
        move || Layout {
            path: path.to_path_buf(),
            chunk_size: 3000,
            size,
        }
    }

    /// Runs on a current-thread runtime only to have `spawn_blocking`.
    #[tokio::test]
    async fn chunks_recorded_out_of_order_are_hashed_in_order() {
        let data = pattern(10_000, 7);
        let (_dir, path) = data_file(&data);
        let layout = layout_of(&path, Some(10_000));
        let p = Arc::new(PrefixHashes::default());
        for index in [2, 4, 1] {
            p.recorded("s", layout, index, None);
        }
        // Chunk 3 never arrives here (another gateway took it): the prefix stops at 2.
        let got = settled(&p, "s").await;
        assert_eq!(got.size, 6000);
        let mut whole = got.clone();
        let mut f = File::open(&path).unwrap();
        let rest = crate::blob::hash_rest(&mut f, got).unwrap();
        whole.update(&data[6000..]);
        assert_eq!(rest, finish(whole));
        assert_eq!(rest.0, hex::encode(sha1::Sha1::digest(&data)));
        assert!(p.is_empty());
    }

    /// In an open-ended session a chunk shorter than `chunk_size` may be the last one:
    /// the prefix stops in front of it, and goes on once the file shows it whole.
    #[tokio::test]
    async fn an_open_ended_session_hashes_whole_chunks_only() {
        let data = pattern(7_000, 13);
        let (_dir, path) = data_file(&data[..4500]);
        let layout = layout_of(&path, None);
        let p = Arc::new(PrefixHashes::default());
        p.recorded("s", layout, 1, None);
        p.recorded("s", layout, 2, None);
        p.settle("s");
        // Chunk 2 turns out not to be the last: the file grows past it.
        std::fs::write(&path, &data).unwrap();
        p.recorded("s", layout, 3, None);
        let got = settled(&p, "s").await;
        assert_eq!(got.size, 6000);
        let mut f = File::open(&path).unwrap();
        let rest = crate::blob::hash_rest(&mut f, got).unwrap();
        assert_eq!(rest.0, hex::encode(sha1::Sha1::digest(&data)));
    }

    /// Held chunks are hashed from memory: here the file holds other bytes, so a hash read
    /// from it would differ. A chunk without room is read back from the file.
    #[tokio::test]
    async fn held_chunks_are_hashed_from_their_bytes_and_release_their_room() {
        let data = pattern(9_000, 11);
        let mut on_disk = vec![0u8; 6000];
        on_disk.extend_from_slice(&data[6000..]);
        let (_dir, path) = data_file(&on_disk);
        let layout = layout_of(&path, Some(9000));
        let p = Arc::new(PrefixHashes::default());
        let held = |range: std::ops::Range<usize>| {
            let room = p.hold(3000).expect("room for a chunk");
            // In two pieces, as a body arrives.
            let mid = range.start + 1000;
            let pieces = vec![
                Bytes::copy_from_slice(&data[range.start..mid]),
                Bytes::copy_from_slice(&data[mid..range.end]),
            ];
            Held::new(pieces, room)
        };
        p.recorded("s", layout, 2, Some(held(3000..6000)));
        assert_eq!(p.held_bytes.load(Ordering::Relaxed), 3000);
        p.recorded("s", layout, 1, Some(held(0..3000)));
        p.recorded("s", layout, 3, None);
        let got = settled(&p, "s").await;
        assert_eq!(got.size, 9000);
        assert_eq!(finish(got).0, hex::encode(sha1::Sha1::digest(&data)));
        assert_eq!(
            p.held_bytes.load(Ordering::Relaxed),
            0,
            "hashed chunks give their room back"
        );

        // The room is bounded, and a chunk dropped unhashed (the session forgotten) gives
        // its room back too.
        let all = p.hold(MAX_HELD).expect("all the room");
        assert!(p.hold(1).is_none());
        drop(all);
        let room = p.hold(3000).unwrap();
        p.recorded("t", layout, 2, Some(Held::new(vec![Bytes::from_static(b"x")], room)));
        assert_eq!(p.held_bytes.load(Ordering::Relaxed), 3000);
        p.forget("t");
        assert_eq!(p.held_bytes.load(Ordering::Relaxed), 0);
        // A chunk far past the next one to hash is not held: its room comes back at once.
        let room = p.hold(3000).unwrap();
        p.recorded(
            "u",
            layout,
            1 + HOLD_AHEAD,
            Some(Held::new(vec![Bytes::from_static(b"x")], room)),
        );
        assert_eq!(p.held_bytes.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn an_unreadable_file_falls_back_to_hashing_everything() {
        let p = Arc::new(PrefixHashes::default());
        let layout = || Layout {
            path: PathBuf::from("/nonexistent/x.data"),
            chunk_size: 10,
            size: Some(20),
        };
        p.recorded("s", layout, 1, None);
        p.recorded("s", layout, 2, None);
        let got = settled(&p, "s").await;
        assert_eq!(got.size, 0);
    }
}
