//! Recent attributes of directories, so that the getattr the kernel sends for a directory
//! after each create or unlink in it (the change drops the attributes it cached) is
//! answered here instead of by a round trip to the port. A burst of creates or unlinks in
//! one directory otherwise costs one extra request per file.
//!
//! Attributes are good for `ttl` after the port read them, the kernel's own attribute
//! TTL, and the kernel is told what is left of it: a change made elsewhere shows no later
//! than it would through the kernel's cache. This mount's own changes keep them exact:
//! - a create or mkdir sets the directory's mtime and ctime to the new entry's ctime (the
//!   server sets all three in one transaction);
//! - an unlink or rmdir answers with the directory as it left it (when the port says);
//! - any other change to a directory's entries (a rename, a create by upload, an unlink
//!   whose port did not say) drops them, and the next getattr asks the port.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::port::{Entry, EntryKind};

/// Directories held at most; beyond, the stale ones are dropped, then all.
const MAX_DIRS: usize = 4096;

struct Held {
    entry: Entry,
    /// When the port was asked (the attributes are at least this recent).
    read_at: Instant,
}

/// Attributes by directory id. See the module docs.
pub(crate) struct DirAttrs {
    ttl: Duration,
    dirs: Mutex<HashMap<i64, Held>>,
}

impl DirAttrs {
    /// Attributes valid for `ttl` (zero disables).
    pub(crate) fn new(ttl: Duration) -> DirAttrs {
        DirAttrs {
            ttl,
            dirs: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Held>> {
        self.dirs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The attributes of directory `id` if fresh, and for how much longer.
    pub(crate) fn get(&self, id: i64) -> Option<(Entry, Duration)> {
        let mut dirs = self.lock();
        let held = dirs.get(&id)?;
        let age = held.read_at.elapsed();
        if age < self.ttl {
            return Some((held.entry.clone(), self.ttl - age));
        }
        dirs.remove(&id);
        None
    }

    /// `e` as the port gave it in an answer to a request sent at `asked`. Only
    /// directories are kept.
    pub(crate) fn read(&self, e: &Entry, asked: Instant) {
        if e.kind != EntryKind::Dir || self.ttl.is_zero() {
            return;
        }
        let mut dirs = self.lock();
        if dirs.len() >= MAX_DIRS && !dirs.contains_key(&e.id) {
            let ttl = self.ttl;
            dirs.retain(|_, h| h.read_at.elapsed() < ttl);
            if dirs.len() >= MAX_DIRS {
                dirs.clear();
            }
        }
        match dirs.get(&e.id) {
            // An answer to an older request does not replace a newer one.
            Some(h) if h.read_at > asked => {}
            _ => {
                dirs.insert(
                    e.id,
                    Held {
                        entry: e.clone(),
                        read_at: asked,
                    },
                );
            }
        }
    }

    /// This mount created `child` in its directory: the directory's mtime and ctime are
    /// now the child's ctime. The attributes stay as old as they were otherwise.
    pub(crate) fn created(&self, child: &Entry) {
        if let Some(h) = self.lock().get_mut(&child.parent) {
            h.entry.mtime_ms = child.ctime_ms;
            h.entry.ctime_ms = child.ctime_ms;
        }
    }

    /// Drops what is held for `id` (changed in a way not known here, or gone).
    pub(crate) fn forget(&self, id: i64) {
        self.lock().remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: i64, parent: i64, kind: EntryKind, mtime_ms: i64) -> Entry {
        Entry {
            id,
            parent,
            name: format!("e{id}"),
            kind,
            size: 0,
            sha1: None,
            mode: 0o755,
            uid: None,
            gid: None,
            atime_ms: None,
            mtime_ms,
            ctime_ms: mtime_ms,
        }
    }

    #[test]
    fn fresh_directories_only_with_what_is_left_of_the_ttl() {
        let a = DirAttrs::new(Duration::from_secs(60));
        let asked = Instant::now() - Duration::from_secs(10);
        a.read(&entry(2, 1, EntryKind::Dir, 10), asked);
        a.read(&entry(3, 2, EntryKind::File, 10), asked);
        let (e, left) = a.get(2).expect("held");
        assert_eq!(e.mtime_ms, 10);
        assert!(left <= Duration::from_secs(50), "counted from when the port was asked");
        assert!(a.get(3).is_none(), "files are not held");

        let gone = DirAttrs::new(Duration::from_millis(1));
        gone.read(
            &entry(2, 1, EntryKind::Dir, 10),
            Instant::now() - Duration::from_millis(2),
        );
        assert!(gone.get(2).is_none(), "stale");
        let off = DirAttrs::new(Duration::ZERO);
        off.read(&entry(2, 1, EntryKind::Dir, 10), Instant::now());
        assert!(off.get(2).is_none(), "a zero TTL holds nothing");
    }

    #[test]
    fn own_changes_keep_the_times_exact_and_the_age() {
        let a = DirAttrs::new(Duration::from_secs(60));
        let asked = Instant::now();
        a.read(&entry(2, 1, EntryKind::Dir, 10), asked);
        let (_, before) = a.get(2).unwrap();
        a.created(&entry(7, 2, EntryKind::File, 25));
        let (e, after) = a.get(2).unwrap();
        assert_eq!((e.mtime_ms, e.ctime_ms), (25, 25));
        assert!(after <= before, "a create does not make the rest of them fresher");
        // An answer to an older request does not undo a newer one.
        a.read(&entry(2, 1, EntryKind::Dir, 5), asked - Duration::from_secs(1));
        assert_eq!(a.get(2).unwrap().0.mtime_ms, 25);
        a.read(&entry(2, 1, EntryKind::Dir, 30), Instant::now());
        assert_eq!(a.get(2).unwrap().0.mtime_ms, 30);
        a.forget(2);
        assert!(a.get(2).is_none());
        a.created(&entry(8, 2, EntryKind::File, 40));
        assert!(a.get(2).is_none(), "a create does not invent attributes");
    }
}
