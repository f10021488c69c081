//! Lock spaces: one WebDAV lock system per user.
//!
//! dav-server's lock systems key locks by URL path, and every user's tree is mounted at
//! the same URLs (`/dav/notes.txt` is a different file for each user). A lock system
//! shared by all users would let Alice's lock on `/dav/notes.txt` block Bob's PUT to
//! his own `/dav/notes.txt`. So each user gets a lock system of their own: two users
//! never see each other's locks, and within one user, clients still need the lock
//! token (dav-server checks token and principal).
//!
//! [`LockSpaces`] is the seam: the embedded default is [`MemLockSpaces`]; a deployment
//! with several gateways provides one backed by a shared store (for example a Redis
//! lock system keyed by `user/path`) through the same trait.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use dav_server::davpath::DavPath;
use dav_server::ls::{DavLock, DavLockSystem, LsFuture};
use dav_server::memls::MemLs;
use futures_util::FutureExt;
use xmltree::Element;

/// Longest lock lifetime granted, also for `Timeout: Infinite`. RFC 4918 10.7 lets the
/// server choose; clients refresh before it runs out. A client that crashed holding a
/// lock blocks the file for at most this long.
pub const MAX_LOCK_TIMEOUT: Duration = Duration::from_secs(3600);

/// Hands out the lock system of a user.
pub trait LockSpaces: Send + Sync + 'static {
    /// The lock system for `user_key` (a stable user id, not a display name that can
    /// be renamed). Called once per request: keep it cheap.
    fn for_user(&self, user_key: &str) -> Box<dyn DavLockSystem>;
}

/// In-process lock spaces: one [`ExpiringLs`] over a [`MemLs`] per user, created on
/// first use and kept for the life of the process (a few hundred bytes per user who
/// ever used WebDAV). Locks do not survive a restart and are not seen
/// by other gateways: fine for the embedded single-process default.
#[derive(Debug, Default)]
pub struct MemLockSpaces {
    spaces: Mutex<HashMap<String, ExpiringLs>>,
}

impl MemLockSpaces {
    /// No locks yet.
    pub fn new() -> Self {
        Self::default()
    }
}

impl LockSpaces for MemLockSpaces {
    fn for_user(&self, user_key: &str) -> Box<dyn DavLockSystem> {
        // The map only grows by whole entries, so a poisoned lock is still consistent.
        let mut spaces = self.spaces.lock().unwrap_or_else(|e| e.into_inner());
        // A handle (Arc inside): clones share the same locks.
        let ls = spaces
            .entry(user_key.to_owned())
            .or_insert_with(|| ExpiringLs::new(MemLs::new()));
        Box::new(ls.clone())
    }
}

/// Lock timeouts for a lock system that has none of its own.
///
/// dav-server's `MemLs` records each lock's timeout but never acts on it, so a client
/// that dies holding a lock would block the resource until the process restarts. This
/// decorator caps every timeout at [`MAX_LOCK_TIMEOUT`], remembers when each lock runs
/// out, and unlocks expired locks before every operation.
#[derive(Debug, Clone)]
pub struct ExpiringLs {
    inner: Box<dyn DavLockSystem>,
    /// Lock token to (locked path, expiry).
    expiry: Arc<Mutex<HashMap<String, (DavPath, SystemTime)>>>,
}

fn cap(timeout: Option<Duration>) -> Duration {
    timeout.map_or(MAX_LOCK_TIMEOUT, |t| t.min(MAX_LOCK_TIMEOUT))
}

impl ExpiringLs {
    /// Wraps `inner`.
    pub fn new(inner: Box<dyn DavLockSystem>) -> Self {
        Self {
            inner,
            expiry: Arc::default(),
        }
    }

    fn expiry(&self) -> MutexGuard<'_, HashMap<String, (DavPath, SystemTime)>> {
        // Entries are inserted and removed whole: a poisoned map is still consistent.
        self.expiry.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn purge(&self) {
        let now = SystemTime::now();
        let expired: Vec<(String, DavPath)> = {
            let mut map = self.expiry();
            let tokens: Vec<String> = map
                .iter()
                .filter(|(_, (_, at))| *at <= now)
                .map(|(t, _)| t.clone())
                .collect();
            tokens
                .into_iter()
                .filter_map(|t| map.remove(&t).map(|(p, _)| (t, p)))
                .collect()
        };
        for (token, path) in expired {
            // Already gone (UNLOCK, DELETE) is fine.
            let _ = self.inner.unlock(&path, &token).await;
        }
    }

    fn remember(&self, lock: &DavLock, timeout: Duration) {
        let at = SystemTime::now() + timeout;
        self.expiry().insert(lock.token.clone(), ((*lock.path).clone(), at));
    }
}

impl DavLockSystem for ExpiringLs {
    fn lock(
        &self,
        path: &DavPath,
        principal: Option<&str>,
        owner: Option<&Element>,
        timeout: Option<Duration>,
        shared: bool,
        deep: bool,
    ) -> LsFuture<'_, Result<DavLock, DavLock>> {
        let path = path.clone();
        let principal = principal.map(str::to_owned);
        let owner = owner.cloned();
        async move {
            self.purge().await;
            let t = cap(timeout);
            // dav-server's MemLs panics when the last lock on its tree's root is released
            // (and the panic poisons the user's lock table), so the root collection of a
            // user cannot be locked in memory: answered as held by an unnamed lock (423).
            if path.as_rel_ospath().as_os_str().is_empty() || path.as_rel_ospath() == std::path::Path::new("/") {
                return Err(DavLock {
                    token: "opaquelocktoken:00000000-0000-0000-0000-000000000000".into(),
                    path: Box::new(path.clone()),
                    principal: None,
                    owner: None,
                    timeout_at: None,
                    timeout: None,
                    shared: false,
                    deep: true,
                });
            }
            let lock = self
                .inner
                .lock(&path, principal.as_deref(), owner.as_ref(), Some(t), shared, deep)
                .await?;
            self.remember(&lock, t);
            Ok(lock)
        }
        .boxed()
    }

    fn unlock(&self, path: &DavPath, token: &str) -> LsFuture<'_, Result<(), ()>> {
        let path = path.clone();
        let token = token.to_owned();
        async move {
            self.purge().await;
            let res = self.inner.unlock(&path, &token).await;
            if res.is_ok() {
                self.expiry().remove(&token);
            }
            res
        }
        .boxed()
    }

    fn refresh(&self, path: &DavPath, token: &str, timeout: Option<Duration>) -> LsFuture<'_, Result<DavLock, ()>> {
        let path = path.clone();
        let token = token.to_owned();
        async move {
            self.purge().await;
            let t = cap(timeout);
            let lock = self.inner.refresh(&path, &token, Some(t)).await?;
            self.remember(&lock, t);
            Ok(lock)
        }
        .boxed()
    }

    fn check(
        &self,
        path: &DavPath,
        principal: Option<&str>,
        ignore_principal: bool,
        deep: bool,
        submitted_tokens: &[String],
    ) -> LsFuture<'_, Result<(), DavLock>> {
        let path = path.clone();
        let principal = principal.map(str::to_owned);
        let tokens = submitted_tokens.to_vec();
        async move {
            self.purge().await;
            self.inner
                .check(&path, principal.as_deref(), ignore_principal, deep, &tokens)
                .await
        }
        .boxed()
    }

    fn discover(&self, path: &DavPath) -> LsFuture<'_, Vec<DavLock>> {
        let path = path.clone();
        async move {
            self.purge().await;
            self.inner.discover(&path).await
        }
        .boxed()
    }

    fn delete(&self, path: &DavPath) -> LsFuture<'_, Result<(), ()>> {
        let path = path.clone();
        async move {
            let res = self.inner.delete(&path).await;
            // Forget the expiry of every lock at or below the path.
            let base = path.as_bytes().strip_suffix(b"/").unwrap_or(path.as_bytes()).to_vec();
            self.expiry().retain(|_, (p, _)| {
                !crate::hint::is_under(p.as_bytes().strip_suffix(b"/").unwrap_or(p.as_bytes()), &base)
            });
            res
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn expired_locks_are_released() {
        let ls = ExpiringLs::new(MemLs::new());
        let path = DavPath::new("/f.txt").unwrap();
        let lock = ls
            .lock(&path, Some("u"), None, Some(Duration::from_secs(60)), false, false)
            .await
            .unwrap();
        assert!(ls.check(&path, Some("u"), false, false, &[]).await.is_err(), "locked");
        // Make it run out now instead of waiting: the expiry map is the only clock.
        ls.expiry().get_mut(&lock.token).unwrap().1 = SystemTime::now() - Duration::from_secs(1);
        assert!(
            ls.check(&path, Some("u"), false, false, &[]).await.is_ok(),
            "expired lock released"
        );
        assert!(ls.discover(&path).await.is_empty());
    }

    #[tokio::test]
    async fn infinite_timeouts_are_capped() {
        let ls = ExpiringLs::new(MemLs::new());
        let path = DavPath::new("/g.txt").unwrap();
        let lock = ls.lock(&path, None, None, None, false, true).await.unwrap();
        assert_eq!(lock.timeout, Some(MAX_LOCK_TIMEOUT));
    }
}
