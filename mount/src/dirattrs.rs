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
//!
//! Requests run concurrently, so an answer can arrive after a change this mount made
//! since it was asked for: such an answer may not show the change, and drops what is held
//! instead of replacing it (as the kernel discards attributes older than a change).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::port::{Entry, EntryKind};

/// Directories held at most; beyond, the stale ones are dropped, then all.
const MAX_DIRS: usize = 4096;
/// How long a change is remembered once its directory's attributes are gone: an answer
/// to a request sent before the change is refused for that long.
const CHANGE_MEMORY: Duration = Duration::from_secs(60);

struct Held {
    /// The attributes, with this mount's own changes applied; `None` once dropped.
    entry: Option<Entry>,
    /// When the port was asked for them (they are at least this recent).
    read_at: Instant,
    /// When this mount last changed the directory. An answer to a request sent before it
    /// may predate the change, and is not kept.
    changed_at: Option<Instant>,
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
        let held = dirs.get_mut(&id)?;
        let age = held.read_at.elapsed();
        if age < self.ttl {
            return Some((held.entry.clone()?, self.ttl - age));
        }
        held.entry = None;
        None
    }

    /// `e` as the port gave it in an answer to a request sent at `asked`. Only
    /// directories are kept, and not an answer that may be older than what is held or
    /// than a change this mount made since `asked` (that drops what is held instead).
    pub(crate) fn read(&self, e: &Entry, asked: Instant) {
        if e.kind != EntryKind::Dir || self.ttl.is_zero() {
            return;
        }
        let mut dirs = self.lock();
        self.make_room(&mut dirs, e.id);
        let held = dirs.entry(e.id).or_insert(Held {
            entry: None,
            read_at: asked,
            changed_at: None,
        });
        if held.changed_at.is_some_and(|c| c > asked) {
            held.entry = None;
        } else if held.entry.is_none() || held.read_at <= asked {
            held.entry = Some(e.clone());
            held.read_at = asked;
        }
    }

    /// This mount created `child` in its directory: the directory's mtime and ctime are
    /// now the child's ctime (or later, if another change was answered first). The
    /// attributes stay as old as they were otherwise.
    pub(crate) fn created(&self, child: &Entry) {
        let mut dirs = self.lock();
        let Some(held) = dirs.get_mut(&child.parent) else {
            return self.changed(&mut dirs, child.parent);
        };
        held.changed_at = Some(Instant::now());
        if let Some(e) = held.entry.as_mut() {
            e.mtime_ms = e.mtime_ms.max(child.ctime_ms);
            e.ctime_ms = e.ctime_ms.max(child.ctime_ms);
        }
    }

    /// Keeps the map within `MAX_DIRS` before `id` is added: stale attributes and old
    /// changes go first, then everything.
    fn make_room(&self, dirs: &mut HashMap<i64, Held>, id: i64) {
        if dirs.len() < MAX_DIRS || dirs.contains_key(&id) {
            return;
        }
        let ttl = self.ttl;
        dirs.retain(|_, h| {
            (h.entry.is_some() && h.read_at.elapsed() < ttl)
                || h.changed_at.is_some_and(|c| c.elapsed() < CHANGE_MEMORY)
        });
        if dirs.len() >= MAX_DIRS {
            dirs.clear();
        }
    }

    /// Drops what is held for `id` (changed in a way not known here, or gone).
    pub(crate) fn forget(&self, id: i64) {
        let mut dirs = self.lock();
        self.changed(&mut dirs, id);
    }

    fn changed(&self, dirs: &mut HashMap<i64, Held>, id: i64) {
        self.make_room(dirs, id);
        let now = Instant::now();
        let held = dirs.entry(id).or_insert(Held {
            entry: None,
            read_at: now,
            changed_at: None,
        });
        held.entry = None;
        held.changed_at = Some(now);
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
        a.created(&entry(6, 2, EntryKind::File, 20));
        assert_eq!(a.get(2).unwrap().0.mtime_ms, 25, "an earlier create answered late");
        a.read(&entry(2, 1, EntryKind::Dir, 30), Instant::now());
        assert_eq!(a.get(2).unwrap().0.mtime_ms, 30);
        a.forget(2);
        assert!(a.get(2).is_none());
        a.created(&entry(8, 2, EntryKind::File, 40));
        assert!(a.get(2).is_none(), "a create does not invent attributes");
    }

    #[test]
    fn answers_older_than_what_is_held_or_than_a_change_are_not_kept() {
        let a = DirAttrs::new(Duration::from_secs(60));
        let early = Instant::now() - Duration::from_millis(10);
        a.read(&entry(2, 1, EntryKind::Dir, 20), Instant::now());
        a.read(&entry(2, 1, EntryKind::Dir, 10), early);
        assert_eq!(a.get(2).unwrap().0.mtime_ms, 20, "the newer answer stays");

        // A getattr sent before a create, answered after it: it may not show the create.
        let sent = Instant::now() - Duration::from_millis(10);
        a.created(&entry(7, 2, EntryKind::File, 30));
        a.read(&entry(2, 1, EntryKind::Dir, 20), sent);
        assert!(a.get(2).is_none(), "dropped: the next getattr asks the port");
        // Likewise for a directory not held when it changed.
        let sent = Instant::now() - Duration::from_millis(10);
        a.forget(3);
        a.read(&entry(3, 1, EntryKind::Dir, 20), sent);
        assert!(a.get(3).is_none());
        a.read(&entry(3, 1, EntryKind::Dir, 40), Instant::now());
        assert_eq!(
            a.get(3).unwrap().0.mtime_ms,
            40,
            "an answer sent after the change is kept"
        );
    }
}
