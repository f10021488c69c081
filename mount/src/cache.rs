//! Byte-bounded LRU cache of content blocks and the read-ahead window.
//!
//! Blocks are keyed by `(content SHA-1, block index)`. Content is immutable per SHA-1, so
//! a cached block is never stale: replacing a file changes its SHA-1 and the old blocks
//! simply age out.

use std::num::NonZeroUsize;
use std::sync::Mutex;

use bytes::Bytes;
use lru::LruCache;

/// Size of one cached block (and of the smallest read-ahead window).
pub const BLOCK_SIZE: u64 = 128 * 1024;

type Key = (String, u64);

/// LRU of blocks holding at most `capacity` bytes.
pub(crate) struct BlockCache {
    capacity: u64,
    inner: Mutex<Inner>,
}

struct Inner {
    lru: LruCache<Key, Bytes>,
    bytes: u64,
}

impl BlockCache {
    pub(crate) fn new(capacity: u64) -> Self {
        BlockCache {
            capacity,
            // Bounded by bytes below, not by count.
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded(),
                bytes: 0,
            }),
        }
    }

    pub(crate) fn get(&self, sha1: &str, block: u64) -> Option<Bytes> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.lru.get(&(sha1.to_owned(), block)).cloned()
    }

    pub(crate) fn insert(&self, sha1: &str, block: u64, data: Bytes) {
        let len = data.len() as u64;
        if len > self.capacity {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = inner.lru.put((sha1.to_owned(), block), data) {
            inner.bytes -= old.len() as u64;
        }
        inner.bytes += len;
        while inner.bytes > self.capacity {
            match inner.lru.pop_lru() {
                Some((_, evicted)) => inner.bytes -= evicted.len() as u64,
                None => break,
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn bytes(&self) -> u64 {
        self.inner.lock().unwrap().bytes
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
        assert_eq!(c.bytes(), 200);
        assert!(c.get("a", 1).is_none());
        assert!(c.get("a", 0).is_some());
        c.insert("b", 0, Bytes::from(vec![0; 1000])); // larger than the cache: not kept
        assert_eq!(c.bytes(), 200);
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
