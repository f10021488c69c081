//! Byte-bounded LRU cache of content blocks, the fetches in flight, and the read-ahead
//! window.
//!
//! Blocks are keyed by `(content SHA-1, block index)`. Content is immutable per SHA-1, so
//! a cached block is never stale: replacing a file changes its SHA-1 and the old blocks
//! simply age out.
//!
//! The capacity bounds the blocks cached plus the blocks being fetched: a fetch reserves
//! its bytes before it starts (evicting to make room), so read-ahead cannot hold memory
//! beside a full cache. Read-ahead is further limited to a budget of bytes in flight, and
//! each block is fetched once: a read that needs a block already being fetched waits for
//! that fetch (concurrent kernel reads of one file otherwise fetched most bytes twice).

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use lru::LruCache;
use tokio::sync::watch;

/// Size of one cached block (and of the smallest read-ahead window).
pub const BLOCK_SIZE: u64 = 128 * 1024;

/// Most bytes of read-ahead in flight at once, whatever the cache's size.
const MAX_READ_AHEAD_IN_FLIGHT: u64 = 32 << 20;

/// Bytes evicted between two calls of [`return_free_memory`].
const TRIM_AFTER_EVICTING: u64 = 32 << 20;

type Key = (String, u64);

/// Asks the allocator to give memory it holds free back to the system. Blocks and the
/// buffers of fetches are allocated and freed in an interleaved order; glibc keeps the
/// freed ones (not at the top of a heap) resident: after a cold 1 GiB read through a
/// 256 MiB cache, 371 MB of heap for 272 MB in use, and `malloc_trim` took the RSS from
/// 378 to 284 MiB. A trim costs a walk over the free chunks; once per 32 MiB evicted, it
/// is a small part of fetching those bytes.
fn return_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free pages of the allocator's own heaps.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// LRU of blocks holding at most `capacity` bytes, counting the fetches in flight.
pub(crate) struct BlockCache {
    capacity: u64,
    /// Read-ahead (blocks beyond those a read needs) is claimed only while the bytes in
    /// flight stay within this: a quarter of the capacity, at most
    /// [`MAX_READ_AHEAD_IN_FLIGHT`]. A read's own blocks are fetched regardless.
    read_ahead_budget: u64,
    inner: Mutex<Inner>,
}

struct Inner {
    lru: LruCache<Key, Bytes>,
    /// Bytes of the cached blocks.
    bytes: u64,
    /// Bytes reserved by fetches in flight.
    reserved: u64,
    /// Blocks being fetched; each receiver sees its fetch end (the sender is dropped).
    fetching: HashMap<Key, watch::Receiver<()>>,
    /// Bytes evicted since the allocator was last asked to return free memory.
    evicted: u64,
}

impl Inner {
    /// Evicts least recently used blocks until cached plus reserved bytes fit.
    fn evict_to(&mut self, capacity: u64) {
        while self.bytes + self.reserved > capacity {
            match self.lru.pop_lru() {
                Some((_, evicted)) => {
                    self.bytes -= evicted.len() as u64;
                    self.evicted += evicted.len() as u64;
                }
                None => break,
            }
        }
    }
}

/// What a read does when the first block it wants is being fetched by someone else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IfBusy {
    /// Nothing (read-ahead).
    Skip,
    /// Wait for that fetch.
    Wait,
    /// Fetch it again (the reader waited once already and the block is still missing).
    Fetch,
}

/// Outcome of [`BlockCache::claim`].
pub(crate) enum Claimed {
    /// Fetch `claim.start..claim.start + claim.blocks` and [`Claim::fill`] it.
    Fetch(Claim),
    /// Another fetch has the first block: this receiver's `changed()` returns when it ends.
    Wait(watch::Receiver<()>),
    /// Nothing to fetch (cached, skipped when busy, or no read-ahead budget left).
    Nothing,
}

/// Blocks claimed for one fetch, their bytes reserved in the cache. Dropping it (after
/// [`Claim::fill`] or when the fetch failed) releases the reservation and wakes readers
/// waiting for these blocks.
pub(crate) struct Claim {
    cache: Arc<BlockCache>,
    sha1: String,
    /// First block.
    pub(crate) start: u64,
    /// Number of blocks.
    pub(crate) blocks: u64,
    /// First block registered as fetched by this claim (`start + 1` when `start` was
    /// already being fetched by another claim, with `IfBusy::Fetch`).
    owned_from: u64,
    reserved: u64,
    _done: watch::Sender<()>,
}

impl Claim {
    /// Byte offset and length of the range to fetch.
    pub(crate) fn range(&self) -> (u64, u64) {
        (self.start * BLOCK_SIZE, self.blocks * BLOCK_SIZE)
    }

    /// Caches the fetched range `data` (which starts at block `start`) as blocks, each in
    /// an allocation of its own, and returns them. A slice of the response would keep the
    /// whole response buffer (often with spare capacity) alive while any of its blocks is
    /// cached, and the byte bound would then not bound the memory.
    pub(crate) fn fill(mut self, data: &Bytes) -> Vec<Bytes> {
        let blocks: Vec<Bytes> = data.chunks(BLOCK_SIZE as usize).map(Bytes::copy_from_slice).collect();
        let cache = self.cache.clone();
        let trim = {
            let mut inner = cache.lock();
            self.release(&mut inner);
            for (i, block) in blocks.iter().enumerate() {
                cache.insert_locked(&mut inner, &self.sha1, self.start + i as u64, block.clone());
            }
            let trim = inner.evicted >= TRIM_AFTER_EVICTING;
            if trim {
                inner.evicted = 0;
            }
            trim
        };
        if trim {
            return_free_memory();
        }
        blocks
    }

    fn release(&mut self, inner: &mut Inner) {
        inner.reserved -= std::mem::take(&mut self.reserved);
        for b in self.owned_from..self.start + self.blocks {
            inner.fetching.remove(&(self.sha1.clone(), b));
        }
        self.owned_from = self.start + self.blocks;
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let cache = self.cache.clone();
        let mut inner = cache.lock();
        self.release(&mut inner);
    }
}

impl BlockCache {
    pub(crate) fn new(capacity: u64) -> Self {
        BlockCache {
            capacity,
            read_ahead_budget: (capacity / 4).min(MAX_READ_AHEAD_IN_FLIGHT),
            // Bounded by bytes below, not by count.
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded(),
                bytes: 0,
                reserved: 0,
                fetching: HashMap::new(),
                evicted: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn get(&self, sha1: &str, block: u64) -> Option<Bytes> {
        self.lock().lru.get(&(sha1.to_owned(), block)).cloned()
    }

    #[cfg(test)]
    pub(crate) fn insert(&self, sha1: &str, block: u64, data: Bytes) {
        let mut inner = self.lock();
        self.insert_locked(&mut inner, sha1, block, data);
    }

    fn insert_locked(&self, inner: &mut Inner, sha1: &str, block: u64, data: Bytes) {
        let len = data.len() as u64;
        if len > self.capacity {
            return;
        }
        if let Some(old) = inner.lru.put((sha1.to_owned(), block), data) {
            inner.bytes -= old.len() as u64;
        }
        inner.bytes += len;
        inner.evict_to(self.capacity);
    }

    /// Claims blocks `from..=to` of `sha1` for one fetch, stopping before the first block
    /// that is cached or being fetched. The first `required` blocks are a read's own and
    /// are claimed whatever is in flight; the others are read-ahead, claimed only within
    /// the read-ahead budget. `if_busy` says what to do when block `from` is being fetched.
    pub(crate) fn claim(self: &Arc<Self>, sha1: &str, from: u64, to: u64, required: u64, if_busy: IfBusy) -> Claimed {
        let mut inner = self.lock();
        let key = |b: u64| (sha1.to_owned(), b);
        if inner.lru.contains(&key(from)) {
            return Claimed::Nothing;
        }
        let mut owned_from = from;
        if let Some(rx) = inner.fetching.get(&key(from)) {
            match if_busy {
                IfBusy::Skip => return Claimed::Nothing,
                IfBusy::Wait => return Claimed::Wait(rx.clone()),
                IfBusy::Fetch => owned_from = from + 1,
            }
        }
        let mut end = from;
        while end <= to {
            let read_ahead = end - from >= required;
            if end > from {
                let busy = inner.lru.contains(&key(end)) || inner.fetching.contains_key(&key(end));
                if busy || (read_ahead && inner.reserved + (end + 1 - from) * BLOCK_SIZE > self.read_ahead_budget) {
                    break;
                }
            } else if read_ahead && inner.reserved + BLOCK_SIZE > self.read_ahead_budget {
                return Claimed::Nothing;
            }
            end += 1;
        }
        let (tx, rx) = watch::channel(());
        for b in owned_from..end {
            inner.fetching.insert(key(b), rx.clone());
        }
        let reserved = (end - from) * BLOCK_SIZE;
        inner.reserved += reserved;
        inner.evict_to(self.capacity);
        Claimed::Fetch(Claim {
            cache: self.clone(),
            sha1: sha1.to_owned(),
            start: from,
            blocks: end - from,
            owned_from,
            reserved,
            _done: tx,
        })
    }

    /// Fetches in flight (blocks being fetched).
    #[cfg(test)]
    pub(crate) fn blocks_in_flight(&self) -> usize {
        self.lock().fetching.len()
    }

    /// Bytes of the cached blocks and bytes reserved by fetches in flight.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> (u64, u64) {
        let inner = self.lock();
        (inner.bytes, inner.reserved)
    }
}

/// Per-handle sequential-read detector. The window doubles while reads follow each
/// other and falls back to one block on a seek.
#[derive(Debug)]
pub(crate) struct ReadAhead {
    next_offset: u64,
    window: u64,
    max: u64,
}

impl ReadAhead {
    pub(crate) fn new(max: u64) -> Self {
        ReadAhead {
            next_offset: 0,
            window: BLOCK_SIZE,
            max: max.max(BLOCK_SIZE),
        }
    }

    /// Records a read of `[offset, end)` and returns how many bytes from `offset` are
    /// worth fetching now.
    pub(crate) fn advance(&mut self, offset: u64, end: u64) -> u64 {
        if offset == self.next_offset && offset != 0 {
            self.window = (self.window * 2).min(self.max);
        } else if offset != self.next_offset {
            self.window = BLOCK_SIZE;
        }
        self.next_offset = end;
        self.window.max(end - offset)
    }
}

/// Non-zero helper for LRU capacities elsewhere.
pub(crate) fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n.max(1)).unwrap_or(NonZeroUsize::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_by_bytes() {
        let c = BlockCache::new(250);
        c.insert("a", 0, Bytes::from(vec![0; 100]));
        c.insert("a", 1, Bytes::from(vec![0; 100]));
        assert!(c.get("a", 0).is_some()); // now most recent
        c.insert("a", 2, Bytes::from(vec![0; 100]));
        assert_eq!(c.bytes(), (200, 0));
        assert!(c.get("a", 1).is_none());
        assert!(c.get("a", 0).is_some());
        c.insert("b", 0, Bytes::from(vec![0; 1000])); // larger than the cache: not kept
        assert_eq!(c.bytes(), (200, 0));
    }

    fn block(fill: u8) -> Bytes {
        Bytes::from(vec![fill; BLOCK_SIZE as usize])
    }

    fn fetch(c: &Claimed) -> &Claim {
        match c {
            Claimed::Fetch(claim) => claim,
            _ => panic!("expected a claim"),
        }
    }

    #[test]
    fn fetches_in_flight_count_against_the_capacity() {
        // 16 blocks; read-ahead budget a quarter: 4 blocks.
        let c = Arc::new(BlockCache::new(16 * BLOCK_SIZE));
        for b in 0..16 {
            c.insert("old", b, block(1));
        }
        assert_eq!(c.bytes(), (16 * BLOCK_SIZE, 0));
        // A read needing 2 blocks and wanting 8 more gets its 2 and 2 of read-ahead (4
        // in flight); the cache makes room for them before the fetch starts.
        let claimed = c.claim("new", 0, 9, 2, IfBusy::Wait);
        let claim = fetch(&claimed);
        assert_eq!((claim.start, claim.blocks, claim.range()), (0, 4, (0, 4 * BLOCK_SIZE)));
        assert_eq!(c.bytes(), (12 * BLOCK_SIZE, 4 * BLOCK_SIZE));
        assert_eq!(c.blocks_in_flight(), 4);
        // The budget is spent: no more read-ahead, but a read's own block is fetched.
        assert!(matches!(c.claim("other", 0, 3, 0, IfBusy::Skip), Claimed::Nothing));
        let own = c.claim("other", 0, 3, 1, IfBusy::Wait);
        assert_eq!(fetch(&own).blocks, 1);
        assert_eq!(c.bytes(), (11 * BLOCK_SIZE, 5 * BLOCK_SIZE));
        drop(own); // failed fetch: its reservation goes
        assert_eq!(c.bytes(), (11 * BLOCK_SIZE, 4 * BLOCK_SIZE));
        // Another read of a block in flight waits for that fetch.
        let Claimed::Wait(done) = c.claim("new", 3, 9, 1, IfBusy::Wait) else {
            panic!("expected to wait");
        };
        let Claimed::Fetch(claim) = claimed else { unreachable!() };
        let data = Bytes::from(vec![7u8; 4 * BLOCK_SIZE as usize]);
        assert_eq!(claim.fill(&data).len(), 4);
        assert!(done.has_changed().is_err(), "the fetch ended");
        // Filled: reserved bytes became cached bytes; still within the capacity.
        assert_eq!(c.bytes(), (15 * BLOCK_SIZE, 0));
        assert_eq!(c.blocks_in_flight(), 0);
        assert_eq!(c.get("new", 3).as_deref(), Some(&data[..BLOCK_SIZE as usize]));
        assert!(matches!(c.claim("new", 3, 9, 1, IfBusy::Wait), Claimed::Nothing));
    }

    #[test]
    fn a_disabled_cache_fetches_no_read_ahead() {
        let c = Arc::new(BlockCache::new(0));
        let claimed = c.claim("a", 0, 63, 1, IfBusy::Wait);
        assert_eq!(fetch(&claimed).blocks, 1);
        let Claimed::Fetch(claim) = claimed else { unreachable!() };
        assert_eq!(claim.fill(&block(1)).len(), 1);
        assert_eq!(c.bytes(), (0, 0));
    }

    #[test]
    fn window_grows_on_sequential_reads_and_resets_on_seek() {
        let mut ra = ReadAhead::new(8 << 20);
        let mut off = 0;
        let mut windows = vec![];
        for _ in 0..8 {
            windows.push(ra.advance(off, off + 4096));
            off += 4096;
        }
        assert_eq!(windows[0], BLOCK_SIZE);
        assert_eq!(windows[1], 2 * BLOCK_SIZE);
        assert_eq!(*windows.last().unwrap(), 8 << 20);
        assert_eq!(ra.advance(1 << 30, (1 << 30) + 10), BLOCK_SIZE);
    }
}
