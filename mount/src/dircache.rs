//! Recent complete listings of directories, so that a burst of lookups in one directory
//! (a stat of every file, `ls -l` or `find` after a readdir, the lookup the kernel sends
//! before each unlink) costs one listing instead of one round trip to the port per name.
//!
//! A listing answers lookups for at most `ttl` after it was fetched, the kernel's own
//! entry TTL: an entry changed or removed elsewhere shows here no later than it would
//! through the kernel's dentry cache (and an open always asks the port afresh). A name a
//! listing does not hold is [`Cached::Absent`], which the mount still asks the port
//! about: a file created elsewhere must show at once, as it does through the kernel, which
//! keeps no negative entries from this mount. This mount's own changes are applied to the
//! listings it holds as they complete, and replayed onto a listing that was being fetched
//! while they happened, so they show at once.
//!
//! When to fetch: a readdir that reads a whole directory leaves its listing here; and a
//! directory whose lookups keep finding names at the port gets listed once they have cost
//! about as much as the listing would (a few lookups for a small directory, one in 64
//! entries for a large one). Memory is bounded by `max_entries` over all listings.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::port::Entry;

/// Lookups that go to the port before even a small directory is listed.
const MIN_MISSES: u32 = 4;
/// A lookup costs about as much as listing this many entries.
const ENTRIES_PER_LOOKUP: u32 = 64;
/// Directories remembered (mostly for their lookup counts) before the idle ones are
/// forgotten.
const MAX_DIRS: usize = 4096;

/// The answer of [`DirCache::lookup`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Cached {
    /// A fresh listing holds the name; the listing is good for this much longer (what the
    /// kernel may cache the answer for, so that it goes no staler than `ttl` in all).
    Found(Entry, Duration),
    /// A fresh listing does not hold the name (which may have been created elsewhere
    /// since: ask the port, but it is no sign that the listing is missing).
    Absent,
    /// No fresh listing: ask the port.
    Unknown,
}

/// A change this mount made, kept while a listing of its directory is being fetched.
#[derive(Debug, Clone)]
enum Change {
    Put(Entry),
    Remove(String),
}

struct Listing {
    at: Instant,
    names: HashMap<String, Entry>,
}

#[derive(Default)]
struct Dir {
    listing: Option<Listing>,
    /// Lookups sent to the port since `since`.
    misses: u32,
    since: Option<Instant>,
    /// Size of the last listing seen (to weigh a new one against lookups).
    last_len: usize,
    /// Own changes since a fetch began (`Some` while one is running).
    during_fetch: Option<Vec<Change>>,
    /// When the running fetch began (it identifies the fetch).
    fetching: Option<Instant>,
}

struct Inner {
    dirs: HashMap<i64, Dir>,
    /// Entries held by all listings.
    held: usize,
}

/// Listings by directory id. See the module docs.
pub(crate) struct DirCache {
    ttl: Duration,
    max_entries: usize,
    inner: Arc<Mutex<Inner>>,
}

fn lock(m: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A fetch begun by [`DirCache::missed`] or [`DirCache::begin_fetch`], handed back to
/// [`DirCache::finish_fetch`] with the listing. Dropped unfinished (an error, a readdir
/// not read to its end), it lets the next fetch of its directory begin.
pub(crate) struct Fetch {
    dir: i64,
    started: Instant,
    inner: Arc<Mutex<Inner>>,
    /// Size seen so far, remembered when the fetch is dropped unfinished.
    len_seen: usize,
}

impl Fetch {
    /// The directory being listed.
    pub(crate) fn dir(&self) -> i64 {
        self.dir
    }

    /// Gives up on a listing found to hold more than the cache takes (`len` entries so
    /// far): lookups alone will not list this directory again.
    pub(crate) fn too_large(mut self, len: usize) {
        self.len_seen = len;
    }
}

impl Drop for Fetch {
    fn drop(&mut self) {
        let mut g = lock(&self.inner);
        if let Some(d) = g.dirs.get_mut(&self.dir) {
            if d.fetching == Some(self.started) {
                d.during_fetch = None;
                d.fetching = None;
                d.last_len = d.last_len.max(self.len_seen);
            }
        }
    }
}

impl DirCache {
    /// Listings valid for `ttl`, at most `max_entries` entries held (0 disables).
    pub(crate) fn new(ttl: Duration, max_entries: usize) -> DirCache {
        DirCache {
            ttl,
            max_entries,
            inner: Arc::new(Mutex::new(Inner {
                dirs: HashMap::new(),
                held: 0,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    fn start(&self, d: &mut Dir, dir: i64, now: Instant) -> Fetch {
        d.during_fetch = Some(Vec::new());
        d.fetching = Some(now);
        Fetch {
            dir,
            started: now,
            inner: self.inner.clone(),
            len_seen: 0,
        }
    }

    /// Largest listing worth holding.
    pub(crate) fn max_listing(&self) -> usize {
        self.max_entries / 2
    }

    /// What a fresh listing of `dir` says about `name`.
    pub(crate) fn lookup(&self, dir: i64, name: &str) -> Cached {
        let mut g = self.lock();
        let inner = &mut *g;
        let Some(d) = inner.dirs.get_mut(&dir) else {
            return Cached::Unknown;
        };
        match &d.listing {
            Some(l) if l.at.elapsed() < self.ttl => match l.names.get(name) {
                Some(e) => Cached::Found(e.clone(), self.ttl.saturating_sub(l.at.elapsed())),
                None => Cached::Absent,
            },
            Some(_) => {
                let l = d.listing.take().expect("checked above");
                inner.held -= l.names.len();
                Cached::Unknown
            }
            None => Cached::Unknown,
        }
    }

    /// Records a lookup in `dir` that went to the port and found its name; `Some` when it
    /// is time to list the directory (the caller then fetches it and calls
    /// `finish_fetch`).
    pub(crate) fn missed(&self, dir: i64) -> Option<Fetch> {
        if self.max_entries == 0 {
            return None;
        }
        let now = Instant::now();
        let mut g = self.lock();
        if g.dirs.len() >= MAX_DIRS {
            self.prune(&mut g);
        }
        let d = g.dirs.entry(dir).or_default();
        if d.since.is_none_or(|s| now.duration_since(s) >= self.ttl) {
            d.since = Some(now);
            d.misses = 0;
        }
        d.misses += 1;
        let worth = MIN_MISSES.max(u32::try_from(d.last_len).unwrap_or(u32::MAX) / ENTRIES_PER_LOOKUP);
        if d.misses < worth || d.during_fetch.is_some() || d.last_len > self.max_listing() {
            return None;
        }
        d.misses = 0;
        d.since = Some(now);
        Some(self.start(d, dir, now))
    }

    /// Starts a fetch of `dir` for a readdir that will read it whole; `None` if one is
    /// already running.
    pub(crate) fn begin_fetch(&self, dir: i64) -> Option<Fetch> {
        if self.max_entries == 0 {
            return None;
        }
        let mut g = self.lock();
        let d = g.dirs.entry(dir).or_default();
        if d.during_fetch.is_some() {
            return None;
        }
        Some(self.start(d, dir, Instant::now()))
    }

    /// Installs the complete listing `entries` of a fetch, with this mount's changes made
    /// meanwhile applied on top. It counts as fetched when the fetch began.
    pub(crate) fn finish_fetch(&self, f: Fetch, entries: Vec<Entry>) {
        let mut g = self.lock();
        let inner = &mut *g;
        let Some(d) = inner.dirs.get_mut(&f.dir) else { return };
        if d.fetching != Some(f.started) {
            return;
        }
        d.fetching = None;
        let changes = d.during_fetch.take().unwrap_or_default();
        d.last_len = entries.len();
        if entries.len() > self.max_listing() {
            return;
        }
        let mut names: HashMap<String, Entry> = entries.into_iter().map(|e| (e.name.clone(), e)).collect();
        for c in changes {
            match c {
                Change::Put(e) => {
                    names.insert(e.name.clone(), e);
                }
                Change::Remove(n) => {
                    names.remove(&n);
                }
            }
        }
        let new_len = names.len();
        let old = d.listing.replace(Listing { at: f.started, names });
        inner.held = inner.held + new_len - old.map_or(0, |l| l.names.len());
        self.shrink(inner, f.dir);
    }

    /// Drops expired listings, then others, until the bound holds (`keep` last).
    fn shrink(&self, inner: &mut Inner, keep: i64) {
        if inner.held <= self.max_entries {
            return;
        }
        let mut victims: Vec<(bool, Instant, i64)> = inner
            .dirs
            .iter()
            .filter_map(|(id, d)| d.listing.as_ref().map(|l| (*id == keep, l.at, *id)))
            .collect();
        // Not the one just installed, then oldest first.
        victims.sort();
        for (_, _, id) in victims {
            if inner.held <= self.max_entries {
                break;
            }
            if let Some(l) = inner.dirs.get_mut(&id).and_then(|d| d.listing.take()) {
                inner.held -= l.names.len();
            }
        }
        self.prune(inner);
    }

    /// Forgets directories with nothing worth remembering: no listing, no fetch, no
    /// recent lookups, and not known to be too large.
    fn prune(&self, inner: &mut Inner) {
        let (ttl, big) = (self.ttl, self.max_listing());
        inner.dirs.retain(|_, d| {
            d.listing.is_some()
                || d.fetching.is_some()
                || d.since.is_some_and(|s| s.elapsed() < ttl)
                || d.last_len > big
        });
    }

    fn change(&self, dir: i64, c: Change) {
        let mut g = self.lock();
        let inner = &mut *g;
        let Some(d) = inner.dirs.get_mut(&dir) else { return };
        if let Some(l) = d.listing.as_mut() {
            match &c {
                Change::Put(e) => {
                    if l.names.insert(e.name.clone(), e.clone()).is_none() {
                        inner.held += 1;
                    }
                }
                Change::Remove(n) => {
                    if l.names.remove(n).is_some() {
                        inner.held -= 1;
                    }
                }
            }
        }
        if let Some(pending) = d.during_fetch.as_mut() {
            pending.push(c);
        }
    }

    /// This mount created or changed `e` (in directory `e.parent`).
    pub(crate) fn put(&self, e: &Entry) {
        self.change(e.parent, Change::Put(e.clone()));
    }

    /// This mount removed `name` from `dir` (or renamed it away).
    pub(crate) fn remove(&self, dir: i64, name: &str) {
        self.change(dir, Change::Remove(name.to_owned()));
    }

    /// Forgets the listing of `dir` (it was removed).
    pub(crate) fn forget(&self, dir: i64) {
        let mut g = self.lock();
        let inner = &mut *g;
        if let Some(d) = inner.dirs.remove(&dir) {
            inner.held -= d.listing.map_or(0, |l| l.names.len());
        }
    }

    /// Entries held (for tests).
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.lock().held
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::EntryKind;

    fn file(parent: i64, id: i64, name: &str) -> Entry {
        Entry {
            id,
            parent,
            name: name.to_owned(),
            kind: EntryKind::File,
            size: 0,
            sha1: Some(crate::port::EMPTY_SHA1.to_owned()),
            mode: 0o644,
            uid: None,
            gid: None,
            atime_ms: None,
            mtime_ms: 0,
            ctime_ms: 0,
        }
    }

    fn found(c: Cached) -> Option<Entry> {
        match c {
            Cached::Found(e, left) => {
                assert!(left <= Duration::from_secs(60), "never more than the TTL");
                Some(e)
            }
            _ => None,
        }
    }

    fn fetch_now(c: &DirCache, dir: i64) -> Fetch {
        for _ in 0..MIN_MISSES - 1 {
            assert!(c.missed(dir).is_none());
        }
        c.missed(dir).expect("a listing is due after MIN_MISSES lookups")
    }

    #[test]
    fn answers_from_a_fetched_listing_while_fresh() {
        let c = DirCache::new(Duration::from_secs(60), 1000);
        assert_eq!(c.lookup(1, "a"), Cached::Unknown);
        let f = fetch_now(&c, 1);
        c.finish_fetch(f, vec![file(1, 10, "a")]);
        assert_eq!(found(c.lookup(1, "a")), Some(file(1, 10, "a")));
        assert_eq!(c.lookup(1, "b"), Cached::Absent);
        assert_eq!(c.lookup(2, "a"), Cached::Unknown);
        assert_eq!(c.held(), 1);
    }

    #[test]
    fn an_expired_listing_answers_nothing() {
        // A TTL of zero: expired as soon as it is installed.
        let c = DirCache::new(Duration::ZERO, 1000);
        let f = c.begin_fetch(1).unwrap();
        c.finish_fetch(f, vec![file(1, 10, "a")]);
        assert_eq!(c.lookup(1, "a"), Cached::Unknown);
        assert_eq!(c.lookup(1, "b"), Cached::Unknown);
        assert_eq!(c.held(), 0, "an expired listing is dropped when met");
    }

    #[test]
    fn own_changes_show_at_once_and_survive_a_fetch_in_flight() {
        let c = DirCache::new(Duration::from_secs(60), 1000);
        let f = fetch_now(&c, 1);
        // While the listing is on its way, this mount creates "new" and deletes "old";
        // the listing was read before either.
        c.put(&file(1, 11, "new"));
        c.remove(1, "old");
        c.finish_fetch(f, vec![file(1, 10, "old"), file(1, 12, "kept")]);
        assert_eq!(found(c.lookup(1, "new")), Some(file(1, 11, "new")));
        assert_eq!(c.lookup(1, "old"), Cached::Absent);
        assert_eq!(found(c.lookup(1, "kept")), Some(file(1, 12, "kept")));
        c.remove(1, "kept");
        assert_eq!(c.lookup(1, "kept"), Cached::Absent);
        assert_eq!(c.held(), 1);
        c.forget(1);
        assert_eq!(c.lookup(1, "new"), Cached::Unknown);
        assert_eq!(c.held(), 0);
    }

    #[test]
    fn large_directories_need_more_lookups_and_the_bound_holds() {
        let c = DirCache::new(Duration::from_secs(60), 100);
        let big: Vec<Entry> = (0..80).map(|i| file(1, 100 + i, &format!("f{i}"))).collect();
        let f = c.begin_fetch(1).unwrap();
        assert!(c.begin_fetch(1).is_none(), "one fetch per directory at a time");
        c.finish_fetch(f, big);
        assert_eq!(c.lookup(1, "f1"), Cached::Unknown, "over half the bound: not held");
        assert_eq!(c.held(), 0);
        let f = c.begin_fetch(2).unwrap();
        c.finish_fetch(f, (0..40).map(|i| file(2, 200 + i, &format!("g{i}"))).collect());
        let f = c.begin_fetch(3).unwrap();
        c.finish_fetch(f, (0..40).map(|i| file(3, 300 + i, &format!("h{i}"))).collect());
        let f = c.begin_fetch(4).unwrap();
        c.finish_fetch(f, (0..40).map(|i| file(4, 400 + i, &format!("k{i}"))).collect());
        assert!(c.held() <= 100, "{} entries held", c.held());
        assert!(
            matches!(c.lookup(4, "k1"), Cached::Found(..)),
            "the newest listing stays"
        );
        assert_eq!(c.lookup(2, "g1"), Cached::Unknown, "the oldest went");
        // A directory last seen with 80 entries (more than allowed) is not listed again on
        // lookups alone.
        for _ in 0..1000 {
            assert!(c.missed(1).is_none());
        }
    }

    #[test]
    fn disabled_with_no_room() {
        let c = DirCache::new(Duration::from_secs(60), 0);
        for _ in 0..100 {
            assert!(c.missed(1).is_none());
        }
        assert!(c.begin_fetch(1).is_none());
    }
}
