//! WebDAV locks in Redis (`filestore::dav_locks`) against the real Redis at
//! `FILESTORE_TEST_REDIS_URL`: the same semantics as dav-server's `MemLs`, expiry, two
//! gateways sharing locks, users isolated, racing lockers, and Redis unreachable.
//!
//! Each test uses a key prefix of its own (`fstest:<random>:`) and deletes its keys when
//! it ends, also when it fails.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use filestore::dav_locks::{RedisLockSpaces, UNAVAILABLE_TOKEN};
use filestore_webdav::dav_server::davpath::DavPath;
use filestore_webdav::dav_server::ls::{DavLock, DavLockSystem};
use filestore_webdav::dav_server::memls::MemLs;
use filestore_webdav::locks::MAX_LOCK_TIMEOUT;
use filestore_webdav::{ExpiringLs, LockSpaces};
use redis::AsyncCommands;
use xmltree::Element;

fn redis_url() -> Option<String> {
    let url = std::env::var("FILESTORE_TEST_REDIS_URL").ok().filter(|s| !s.is_empty());
    if url.is_none() {
        eprintln!("FILESTORE_TEST_REDIS_URL is not set: skipping this Redis test");
    }
    url
}

/// A fresh key prefix, and the guard that deletes its keys when the test ends.
struct Keys {
    url: String,
    prefix: String,
}

impl Keys {
    fn new(url: &str) -> Keys {
        Keys {
            url: url.to_owned(),
            prefix: format!("fstest:{}:", filestore::util::random_hex(6)),
        }
    }

    fn spaces(&self) -> RedisLockSpaces {
        RedisLockSpaces::new(&self.url, &self.prefix).expect("lock spaces")
    }

    async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url.as_str())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("redis connection")
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        // A blocking client: Drop cannot await, and this also runs after a failed assert.
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection() else { return };
        let keys: Vec<String> = match redis::Commands::scan_match(&mut conn, format!("{}*", self.prefix)) {
            Ok(iter) => iter.filter_map(Result::ok).collect(),
            Err(_) => return,
        };
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::Commands::del(&mut conn, keys);
        }
    }
}

/// A path as dav-server hands it over for a request to `/dav<p>`.
fn dav(p: &str) -> DavPath {
    let mut path = DavPath::new(&format!("/dav{p}")).expect("path");
    path.set_prefix("/dav").expect("prefix");
    path
}

fn owner(who: &str) -> Element {
    let xml = format!(r#"<D:owner xmlns:D="DAV:"><D:href>mailto:{who}@example.com</D:href></D:owner>"#);
    Element::parse(xml.as_bytes()).expect("owner xml")
}

fn owner_text(o: Option<&Element>) -> String {
    match o {
        None => "-".into(),
        Some(o) => format!(
            "{}:{}({})",
            o.namespace.as_deref().unwrap_or(""),
            o.name,
            o.get_child("href").and_then(|h| h.get_text()).unwrap_or_default()
        ),
    }
}

/// Polls until a condition holds, failing the test after a deadline.
struct Deadline {
    end: Instant,
    what: &'static str,
}

impl Deadline {
    fn new(what: &'static str, within: Duration) -> Deadline {
        Deadline {
            end: Instant::now() + within,
            what,
        }
    }

    async fn tick(&self) {
        assert!(Instant::now() < self.end, "timed out waiting for {}", self.what);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs steps against one lock system and writes down what it answered, with tokens
/// replaced by the step labels that got them.
struct Transcript<'a> {
    ls: &'a dyn DavLockSystem,
    tokens: HashMap<String, String>,
    lines: Vec<String>,
}

impl<'a> Transcript<'a> {
    fn new(ls: &'a dyn DavLockSystem) -> Self {
        Transcript {
            ls,
            tokens: HashMap::new(),
            lines: Vec::new(),
        }
    }

    fn label(&self, token: &str) -> String {
        self.tokens
            .iter()
            .find(|(_, t)| *t == token)
            .map_or_else(|| format!("unknown token {token}"), |(label, _)| label.clone())
    }

    fn token(&self, label: &str) -> String {
        self.tokens
            .get(label)
            .cloned()
            .unwrap_or_else(|| format!("never-granted-{label}"))
    }

    fn describe(&self, l: &DavLock) -> String {
        format!(
            "{} on {} {} depth {} timeout {:?} principal {:?} owner {}",
            self.label(&l.token),
            l.path.with_prefix().as_url_string(),
            if l.shared { "shared" } else { "exclusive" },
            if l.deep { "infinity" } else { "0" },
            l.timeout,
            l.principal,
            owner_text(l.owner.as_deref()),
        )
    }

    #[allow(clippy::too_many_arguments)]
    async fn lock(
        &mut self,
        label: &str,
        path: &str,
        principal: &str,
        owner: Option<&Element>,
        shared: bool,
        deep: bool,
        secs: u64,
    ) {
        let res = self
            .ls
            .lock(
                &dav(path),
                Some(principal),
                owner,
                Some(Duration::from_secs(secs)),
                shared,
                deep,
            )
            .await;
        let line = match res {
            Ok(l) => {
                self.tokens.insert(label.to_owned(), l.token.clone());
                format!("lock {label} {path}: granted {}", self.describe(&l))
            }
            Err(c) => format!("lock {label} {path}: conflicts with {}", self.label(&c.token)),
        };
        self.lines.push(line);
    }

    /// A lock that must be refused, without naming the conflicting lock: with several
    /// locks below a deep request `MemLs` names whichever its hash map yields first.
    async fn lock_refused(&mut self, path: &str, shared: bool, deep: bool) {
        let res = self.ls.lock(&dav(path), Some("u"), None, None, shared, deep).await;
        self.lines.push(format!(
            "lock {path} shared={shared} deep={deep}: refused={}",
            res.is_err()
        ));
    }

    async fn check(&mut self, path: &str, principal: &str, ignore_principal: bool, deep: bool, held: &[&str]) {
        let tokens: Vec<String> = held.iter().map(|l| self.token(l)).collect();
        let res = self
            .ls
            .check(&dav(path), Some(principal), ignore_principal, deep, &tokens)
            .await;
        let verdict = match res {
            Ok(()) => "ok".to_owned(),
            Err(c) => format!("blocked by {}", self.label(&c.token)),
        };
        self.lines.push(format!(
            "check {path} as {principal} ignore_principal={ignore_principal} deep={deep} holding {held:?}: {verdict}"
        ));
    }

    async fn discover(&mut self, path: &str) {
        let locks = self.ls.discover(&dav(path)).await;
        let found: Vec<String> = locks.iter().map(|l| self.describe(l)).collect();
        self.lines.push(format!("discover {path}: {found:#?}"));
    }

    async fn refresh(&mut self, path: &str, label: &str, secs: u64) {
        let res = self
            .ls
            .refresh(&dav(path), &self.token(label), Some(Duration::from_secs(secs)))
            .await;
        let line = match res {
            Ok(l) => format!("refresh {label} at {path}: {}", self.describe(&l)),
            Err(()) => format!("refresh {label} at {path}: failed"),
        };
        self.lines.push(line);
    }

    async fn unlock(&mut self, path: &str, label: &str) {
        let res = self.ls.unlock(&dav(path), &self.token(label)).await;
        self.lines.push(format!("unlock {label} at {path}: {res:?}"));
    }

    async fn delete(&mut self, path: &str) {
        let res = self.ls.delete(&dav(path)).await;
        self.lines.push(format!("delete {path}: {res:?}"));
    }
}

/// One scenario covering every method: exclusive and shared scopes, depth 0 and
/// infinity, trailing slashes, principals and submitted tokens, refresh, unlock below
/// the lock root, delete of a subtree and of everything.
async fn scenario(ls: &dyn DavLockSystem) -> Vec<String> {
    let mut t = Transcript::new(ls);
    let alice = owner("alice");

    // A deep exclusive lock covers its members, with or without a trailing slash.
    t.lock("A", "/a/", "u", Some(&alice), false, true, 600).await;
    t.lock("B", "/a/b", "u", None, false, false, 600).await;
    t.lock("B", "/a/b", "u", None, true, false, 600).await;
    t.lock("A2", "/a", "u", None, false, false, 600).await;
    t.check("/a/b/c", "u", false, false, &[]).await;
    t.check("/a/b/c", "u", false, false, &["A"]).await;
    t.check("/a/b/c", "v", false, false, &["A"]).await;
    t.check("/a/b/c", "v", true, false, &["A"]).await;
    t.check("/other", "u", false, true, &[]).await;

    // A depth-0 lock does not cover members; a deep check sees locks below.
    t.lock("C", "/c", "u", None, false, false, 300).await;
    t.lock("D", "/c/d", "u", None, false, false, 300).await;
    t.check("/c/d", "u", false, false, &[]).await;
    t.check("/c/d/e", "u", false, false, &[]).await;
    t.check("/c", "u", false, true, &["C"]).await;
    t.check("/c/", "u", false, true, &["C", "D"]).await;
    t.lock("E", "/c/", "u", None, true, true, 300).await;
    t.lock("F", "/f/g", "u", None, false, false, 300).await;
    t.lock("G", "/f/", "u", None, true, true, 300).await;
    t.lock("H", "/f", "u", None, false, false, 300).await;
    t.discover("/c/d/e").await;
    t.discover("/a/b").await;

    // Shared locks coexist; an exclusive request meets the first one on the path.
    t.lock("S1", "/s/", "u", None, true, true, 300).await;
    t.lock("S2", "/s/", "w", Some(&owner("w")), true, false, 300).await;
    t.lock("S3", "/s/t", "w", None, true, false, 300).await;
    t.lock("X", "/s/t", "u", None, false, false, 300).await;
    t.lock_refused("/", false, true).await;
    t.lock_refused("/", true, true).await;
    t.check("/s/t", "u", false, false, &[]).await;
    t.check("/s/t", "w", false, false, &["S3"]).await;
    t.check("/s/t", "w", false, false, &["S2"]).await;
    t.check("/s/", "u", false, false, &["S1"]).await;
    t.discover("/s/t").await;

    // Refresh and unlock find a token on the path or above it.
    t.refresh("/a/b", "A", 1200).await;
    t.refresh("/other", "A", 60).await;
    t.refresh("/a", "C", 60).await;
    t.refresh("/a", "nope", 60).await;
    t.discover("/a/").await;
    t.unlock("/c/d/e", "D").await;
    t.unlock("/c/d", "D").await;
    t.unlock("/x", "C").await;
    t.unlock("/c", "C").await;
    t.check("/c/d", "u", false, true, &[]).await;

    // Delete drops the locks at a path and below.
    t.delete("/s/").await;
    t.discover("/s/t").await;
    t.lock("X", "/s/t", "u", None, false, false, 300).await;
    t.delete("/nothing/here").await;
    t.delete("/a").await;
    t.delete("/f/").await;
    t.discover("/a/b").await;
    t.discover("/f/g").await;
    // (Not `delete("/")`: MemLs panics unlinking its root node. Redis deletes all; see
    // `users_never_see_each_others_locks`.)

    t.lines
}

/// Locks on a user's root collection: Redis handles them like any other path. (The
/// in-memory default refuses them, because dav-server's MemLs panics when it releases its
/// root node; see `ExpiringLs::lock`.)
async fn root_scenario(ls: &dyn DavLockSystem) -> Vec<String> {
    let mut t = Transcript::new(ls);
    t.lock("R", "/", "u", None, false, false, 300).await;
    t.check("/x", "u", false, false, &[]).await;
    t.check("/", "u", false, false, &[]).await;
    t.lock("Y", "/y", "u", None, false, false, 300).await;
    t.lock_refused("/", false, true).await;
    t.lines
}

#[tokio::test]
async fn same_answers_as_dav_servers_memls() {
    let Some(url) = redis_url() else { return };
    let keys = Keys::new(&url);
    let spaces = keys.spaces();

    let memls = scenario(&*MemLs::new()).await;
    let expiring = scenario(&ExpiringLs::new(MemLs::new())).await;
    let redis = scenario(&*spaces.for_user("42")).await;
    assert_eq!(memls, expiring, "ExpiringLs differs from MemLs");
    for (i, (m, r)) in memls.iter().zip(&redis).enumerate() {
        assert_eq!(m, r, "step {i}: MemLs and Redis disagree");
    }
    assert_eq!(memls.len(), redis.len());

    // The scenario must have exercised both outcomes, not agreed on nothing.
    let text = redis.join("\n");
    for expected in [
        "lock B /a/b: conflicts with A",
        "lock D /c/d: granted",
        "check /c as u ignore_principal=false deep=true holding [\"C\"]: blocked by D",
        "lock X /s/t: conflicts with S1",
        "check /s/t as w ignore_principal=false deep=false holding [\"S3\"]: ok",
        "unlock D at /c/d/e: Ok(())",
        "lock X /s/t: granted",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }

    // The root: Redis locks it; the in-memory default refuses, and stays usable.
    let redis_root = root_scenario(&*keys.spaces().for_user("43")).await.join("\n");
    assert!(
        redis_root.contains("check / as u ignore_principal=false deep=false holding []: blocked by R"),
        "{redis_root}"
    );
    let mem_root = root_scenario(&ExpiringLs::new(MemLs::new())).await.join("\n");
    assert!(mem_root.contains("lock R /: conflicts with"), "{mem_root}");
    assert!(mem_root.contains("lock Y /y: granted"), "{mem_root}");
}

#[tokio::test]
async fn locks_expire_and_refresh_extends_them() {
    let Some(url) = redis_url() else { return };
    let keys = Keys::new(&url);
    let spaces = keys.spaces();
    let ls = spaces.for_user("7");
    let (a, b) = (dav("/a.txt"), dav("/b.txt"));
    let two = Some(Duration::from_secs(2));

    let la = ls.lock(&a, Some("7"), None, two, false, false).await.expect("lock a");
    let lb = ls.lock(&b, Some("7"), None, two, false, false).await.expect("lock b");
    assert_eq!(la.timeout, two);
    let refreshed = ls
        .refresh(&a, &la.token, Some(Duration::from_secs(60)))
        .await
        .expect("refresh");
    assert_eq!(refreshed.timeout, Some(Duration::from_secs(60)));
    assert!(ls.check(&b, Some("7"), false, false, &[]).await.is_err(), "b is locked");

    // b was taken after a and not refreshed: once b ran out, a's first timeout has too.
    let deadline = Deadline::new("the unrefreshed lock to expire", Duration::from_secs(15));
    while ls.check(&b, Some("7"), false, false, &[]).await.is_err() {
        deadline.tick().await;
    }
    assert!(ls.discover(&b).await.is_empty());
    assert_eq!(ls.unlock(&b, &lb.token).await, Err(()), "an expired lock is gone");
    assert!(ls.refresh(&b, &lb.token, None).await.is_err());
    let held = ls
        .check(&a, Some("7"), false, false, &[])
        .await
        .expect_err("a still locked");
    assert_eq!(held.token, la.token);
    assert_eq!(held.timeout, Some(Duration::from_secs(60)));

    // The user's key carries the TTL of its longest lock, so it goes away on its own.
    let mut conn = keys.conn().await;
    let ttl: i64 = conn.pttl(spaces.redis_key("7")).await.expect("pttl");
    assert!(ttl > 50_000 && ttl <= 60_000, "key TTL follows the longest lock: {ttl}");
    let short = spaces.for_user("8");
    short
        .lock(&a, None, None, Some(Duration::from_secs(1)), false, false)
        .await
        .expect("lock");
    let key = spaces.redis_key("8");
    let deadline = Deadline::new("the key of expired locks to disappear", Duration::from_secs(15));
    while conn.exists::<_, bool>(&key).await.expect("exists") {
        deadline.tick().await;
    }
}

#[tokio::test]
async fn timeouts_are_capped_at_an_hour() {
    let Some(url) = redis_url() else { return };
    let keys = Keys::new(&url);
    let spaces = keys.spaces();
    let ls = spaces.for_user("7");

    let infinite = ls.lock(&dav("/i"), None, None, None, false, true).await.expect("lock");
    assert_eq!(infinite.timeout, Some(MAX_LOCK_TIMEOUT));
    let long = ls
        .lock(&dav("/l"), None, None, Some(Duration::from_secs(86400)), true, false)
        .await
        .expect("lock");
    assert_eq!(long.timeout, Some(MAX_LOCK_TIMEOUT));
    let refreshed = ls.refresh(&dav("/l"), &long.token, None).await.expect("refresh");
    assert_eq!(refreshed.timeout, Some(MAX_LOCK_TIMEOUT));
    let at = refreshed.timeout_at.expect("timeout_at");
    let left = at.duration_since(std::time::SystemTime::now()).unwrap_or_default();
    assert!(left <= MAX_LOCK_TIMEOUT && left > MAX_LOCK_TIMEOUT - Duration::from_secs(60));

    let mut conn = keys.conn().await;
    let ttl: i64 = conn.pttl(spaces.redis_key("7")).await.expect("pttl");
    let max = MAX_LOCK_TIMEOUT.as_millis() as i64;
    assert!(ttl > max - 60_000 && ttl <= max, "key TTL {ttl} ms");
}

#[tokio::test]
async fn two_gateways_share_locks() {
    let Some(url) = redis_url() else { return };
    let keys = Keys::new(&url);
    let (g1, g2) = (keys.spaces(), keys.spaces());
    let path = dav("/docs/report%20v2.odt");
    let bob = owner("bob");

    let lock = g1
        .for_user("5")
        .lock(
            &path,
            Some("5"),
            Some(&bob),
            Some(Duration::from_secs(300)),
            false,
            false,
        )
        .await
        .expect("lock through gateway 1");

    let other = g2.for_user("5");
    let seen = other
        .check(&path, Some("5"), false, false, &[])
        .await
        .expect_err("gateway 2 sees it");
    assert_eq!(seen.token, lock.token);
    assert!(other
        .check(&path, Some("5"), false, false, std::slice::from_ref(&lock.token))
        .await
        .is_ok());
    let conflict = other
        .lock(&path, Some("5"), None, None, false, false)
        .await
        .expect_err("no second exclusive lock");
    assert_eq!(conflict.token, lock.token);

    // Everything the lock carries survives the trip through Redis.
    let found = other.discover(&path).await;
    assert_eq!(found.len(), 1);
    let f = &found[0];
    assert_eq!(f.token, lock.token);
    assert_eq!(*f.path, path);
    assert_eq!(f.path.with_prefix().as_url_string(), "/dav/docs/report%20v2.odt");
    assert_eq!(f.path.as_url_string(), "/docs/report%20v2.odt");
    assert_eq!(f.principal.as_deref(), Some("5"));
    assert_eq!(f.owner.as_deref(), Some(&bob));
    assert_eq!(
        (f.shared, f.deep, f.timeout),
        (false, false, Some(Duration::from_secs(300)))
    );

    // Refresh on one, seen by the other; unlock on the other, free on the first.
    let r = other
        .refresh(&path, &lock.token, Some(Duration::from_secs(900)))
        .await
        .expect("refresh");
    assert_eq!(r.owner.as_deref(), Some(&bob));
    let again = g1.for_user("5").discover(&path).await;
    assert_eq!(again[0].timeout, Some(Duration::from_secs(900)));
    assert_eq!(other.unlock(&path, &lock.token).await, Ok(()));
    assert!(g1
        .for_user("5")
        .check(&path, Some("5"), false, false, &[])
        .await
        .is_ok());

    // A DELETE through one gateway clears the subtree for both.
    let dir = dav("/docs/");
    g2.for_user("5")
        .lock(&dir, Some("5"), None, None, false, true)
        .await
        .expect("lock dir");
    g1.for_user("5").delete(&dir).await.expect("delete");
    assert!(g2.for_user("5").discover(&path).await.is_empty());
}

#[tokio::test]
async fn users_never_see_each_others_locks() {
    let Some(url) = redis_url() else { return };
    let keys = Keys::new(&url);
    let spaces = keys.spaces();
    let (alice, bob) = (spaces.for_user("1"), spaces.for_user("2"));
    let file = dav("/notes.txt");

    let a = alice
        .lock(&dav("/"), Some("1"), None, None, false, true)
        .await
        .expect("alice locks her root");
    assert!(alice.check(&file, Some("1"), false, false, &[]).await.is_err());
    assert!(bob.check(&file, Some("2"), false, false, &[]).await.is_ok());
    let b = bob
        .lock(&file, Some("2"), None, None, false, false)
        .await
        .expect("bob locks his file");
    let found = bob.discover(&file).await;
    assert_eq!(
        found.iter().map(|l| l.token.as_str()).collect::<Vec<_>>(),
        [b.token.as_str()]
    );
    assert_eq!(
        bob.unlock(&file, &a.token).await,
        Err(()),
        "alice's token is nothing to bob"
    );
    bob.delete(&dav("/")).await.expect("delete");
    assert!(
        bob.discover(&file).await.is_empty(),
        "deleting the root drops every lock"
    );
    assert_eq!(alice.discover(&file).await.len(), 1, "bob's delete left alice's lock");
    assert_ne!(spaces.redis_key("1"), spaces.redis_key("2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_lockers_get_one_exclusive_lock() {
    let Some(url) = redis_url() else { return };
    let keys = Keys::new(&url);
    let gateways = [keys.spaces(), keys.spaces()];

    // Same path, and a deep lock on the parent racing locks on a member: one winner each.
    for (user, paths) in [("same", ["/race.txt", "/race.txt"]), ("tree", ["/dir/", "/dir/x"])] {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..40 {
            let ls = gateways[i % 2].for_user(user);
            let path = dav(paths[i % 2]);
            tasks.spawn(async move {
                ls.lock(&path, Some(user), None, Some(Duration::from_secs(60)), false, true)
                    .await
            });
        }
        let mut granted = Vec::new();
        while let Some(res) = tasks.join_next().await {
            if let Ok(lock) = res.expect("task") {
                granted.push(lock);
            }
        }
        assert_eq!(granted.len(), 1, "{user}: exactly one exclusive winner");
        let ls = gateways[0].for_user(user);
        let held = ls.discover(&dav("/dir/x")).await.len() + ls.discover(&dav("/race.txt")).await.len();
        assert_eq!(held, 1, "{user}: one lock stored");
    }

    // Shared locks all get in, and then keep an exclusive one out.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let ls = gateways[i % 2].for_user("shared");
        tasks.spawn(async move { ls.lock(&dav("/s"), None, None, None, true, false).await.is_ok() });
    }
    let mut ok = 0;
    while let Some(res) = tasks.join_next().await {
        ok += usize::from(res.expect("task"));
    }
    assert_eq!(ok, 20);
    let ls = gateways[1].for_user("shared");
    assert_eq!(ls.discover(&dav("/s")).await.len(), 20);
    assert!(ls.lock(&dav("/s"), None, None, None, false, false).await.is_err());
}

#[tokio::test]
async fn redis_unreachable_refuses_without_hanging() {
    // A port nobody listens on: bind one, then let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let spaces = RedisLockSpaces::new(&format!("redis://127.0.0.1:{port}"), "fstest:down:")
        .expect("constructing needs no connection");
    let ls = spaces.for_user("1");
    let path = dav("/f.txt");

    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(20), async {
        let refused = ls
            .lock(&path, Some("1"), None, None, false, false)
            .await
            .expect_err("lock refused");
        assert_eq!(refused.token, UNAVAILABLE_TOKEN);
        assert_eq!(*refused.path, path);
        let blocked = ls
            .check(&path, Some("1"), false, false, &[])
            .await
            .expect_err("check refused");
        assert_eq!(blocked.token, UNAVAILABLE_TOKEN);
        assert!(ls.discover(&path).await.is_empty());
        assert_eq!(ls.unlock(&path, "urn:uuid:x").await, Err(()));
        assert!(ls.refresh(&path, "urn:uuid:x", None).await.is_err());
        assert_eq!(ls.delete(&path).await, Err(()));
    })
    .await
    .expect("every call returns in bounded time");
    eprintln!("six refused calls took {:?}", started.elapsed());

    assert!(RedisLockSpaces::new("not a url", "p:").is_err());
}

/// A `redis-server` this test started, killed when the test ends (also on failure).
struct ChildServer(std::process::Child);

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn starts_while_redis_is_down_and_recovers() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let spaces = RedisLockSpaces::new(&format!("redis://127.0.0.1:{port}"), "fstest:back:").expect("spaces");
    let ls = spaces.for_user("1");
    let path = dav("/f.txt");
    assert!(ls.lock(&path, Some("1"), None, None, false, false).await.is_err());

    // Redis appears on that port (a throwaway server, nothing saved to disk).
    let server = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .spawn();
    let Ok(server) = server else {
        eprintln!("redis-server is not installed: skipping the recovery half of this test");
        return;
    };
    let _server = ChildServer(server);
    let deadline = Deadline::new("the lock store to reconnect", Duration::from_secs(20));
    let lock = loop {
        match ls.lock(&path, Some("1"), None, None, false, false).await {
            Ok(lock) => break lock,
            Err(_) => deadline.tick().await,
        }
    };
    assert!(ls.check(&path, Some("1"), false, false, &[]).await.is_err());
    assert_eq!(ls.unlock(&path, &lock.token).await, Ok(()));
}
