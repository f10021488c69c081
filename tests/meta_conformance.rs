//! The metadata store's contract, written once and run against SQLite and MariaDB.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{Backend, TestDb};
use filestore::meta::{CommitFile, Conflict, Content, Entry, MetaError, MetaStore, NewContent, Overwrite};

async fn store(backend: Backend) -> Option<(MetaStore, TestDb)> {
    let db = TestDb::new(backend).await?;
    let meta = MetaStore::connect(&db.url, 8).await.expect("connect and migrate");
    // Migrating twice is a no-op.
    meta.migrate().await.expect("second migrate");
    Some((meta, db))
}

fn content(tag: &str) -> NewContent {
    let sha1 = format!("{:0>40}", hex_of(tag));
    NewContent {
        sha1,
        sha256: Some(format!("{:0>64}", hex_of(tag))),
        size: tag.len() as i64,
        inline: None,
    }
}

fn hex_of(s: &str) -> String {
    s.bytes()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .chars()
        .take(40)
        .collect()
}

fn no_place(_: &Content) -> std::io::Result<()> {
    Ok(())
}

/// A commit of `c` as `parent`/`name`, mode 0644, mtime now.
fn file_req(owner: i64, parent: i64, name: &str, c: &NewContent, conflict: Conflict) -> CommitFile {
    CommitFile {
        owner,
        parent,
        name: name.into(),
        content: c.clone(),
        conflict,
        mode: 0o644,
        mtime: None,
    }
}

async fn put(meta: &MetaStore, owner: i64, parent: i64, name: &str, c: &NewContent) -> Result<Entry, MetaError> {
    meta.commit_file(&file_req(owner, parent, name, c, Conflict::Fail), &no_place)
        .await
}

async fn refcount(meta: &MetaStore, c: &NewContent) -> i64 {
    meta.content(&c.sha1).await.unwrap().map(|r| r.refcount).unwrap_or(-1)
}

async fn accounts_and_tokens(backend: Backend) {
    let Some((meta, db)) = store(backend).await else { return };
    let alice = meta.create_user("alice", "hash", false).await.unwrap();
    assert!(matches!(
        meta.create_user("alice", "x", false).await,
        Err(MetaError::AlreadyExists)
    ));
    // User names are case-sensitive and byte-exact.
    meta.create_user("Alice", "hash", false).await.unwrap();
    let root = meta.root(alice.id).await.unwrap();
    assert!(root.is_dir() && root.parent.is_none());

    let now = filestore::meta::now_ms();
    meta.insert_token("t-live", alice.id, now + 60_000).await.unwrap();
    meta.insert_token("t-dead", alice.id, now - 1).await.unwrap();
    assert_eq!(meta.user_by_token("t-live", now).await.unwrap().unwrap().id, alice.id);
    assert!(
        meta.user_by_token("t-dead", now).await.unwrap().is_none(),
        "expired tokens do not authenticate"
    );
    assert!(meta.user_by_token("t-none", now).await.unwrap().is_none());
    assert_eq!(meta.purge_expired_tokens(now).await.unwrap(), 1);

    meta.set_user_disabled("alice", true).await.unwrap();
    assert!(
        meta.user_by_token("t-live", now).await.unwrap().is_none(),
        "disabling ends sessions"
    );
    assert!(meta.user_by_name("alice").await.unwrap().unwrap().disabled);
    assert!(matches!(
        meta.set_user_disabled("nobody", true).await,
        Err(MetaError::NotFound)
    ));

    assert!(meta.delete_token("t-live").await.is_ok());
    let a = meta.setting_or_init("k", "first").await.unwrap();
    let b = meta.setting_or_init("k", "second").await.unwrap();
    assert_eq!((a.as_str(), b.as_str()), ("first", "first"));
    meta.close().await;
    db.cleanup().await;
}

async fn tree_operations(backend: Backend) {
    let Some((meta, db)) = store(backend).await else { return };
    let u = meta.create_user("bob", "h", false).await.unwrap();
    let root = meta.root(u.id).await.unwrap();
    let docs = meta.mkdir(u.id, root.id, "docs", 0o755).await.unwrap();
    assert!(matches!(
        meta.mkdir(u.id, root.id, "docs", 0o755).await,
        Err(MetaError::AlreadyExists)
    ));

    // Names are byte-exact: case and trailing spaces make different names.
    for n in ["a", "A", "a ", "b", "é", "Z"] {
        put(&meta, u.id, docs.id, n, &content("x")).await.unwrap();
    }
    let names: Vec<String> = meta
        .list(u.id, docs.id, "", 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, vec!["A", "Z", "a", "a ", "b", "é"], "byte order, stable");
    // Paging: two at a time reproduces the full listing.
    let mut paged = Vec::new();
    let mut after = String::new();
    loop {
        let page = meta.list(u.id, docs.id, &after, 2).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().unwrap().name.clone();
        paged.extend(page.into_iter().map(|e| e.name));
    }
    assert_eq!(paged, names);
    assert_eq!(refcount(&meta, &content("x")).await, 6);

    // Rename is a row update: same id; a cycle is refused; the root cannot move.
    let sub = meta.mkdir(u.id, docs.id, "sub", 0o755).await.unwrap();
    let a = meta.lookup(u.id, docs.id, "a").await.unwrap().unwrap();
    let moved = meta.rename(u.id, a.id, sub.id, "renamed", Overwrite::No).await.unwrap();
    assert_eq!(
        (moved.id, moved.parent, moved.name.as_str()),
        (a.id, Some(sub.id), "renamed")
    );
    assert!(matches!(
        meta.rename(u.id, docs.id, sub.id, "loop", Overwrite::No).await,
        Err(MetaError::Cycle)
    ));
    assert!(matches!(
        meta.rename(u.id, root.id, docs.id, "r", Overwrite::No).await,
        Err(MetaError::Root)
    ));
    let b = meta.lookup(u.id, docs.id, "b").await.unwrap().unwrap();
    assert!(matches!(
        meta.rename(u.id, b.id, docs.id, "A", Overwrite::No).await,
        Err(MetaError::AlreadyExists)
    ));
    assert!(matches!(
        meta.rename(u.id, b.id, docs.id, "sub", Overwrite::Posix).await,
        Err(MetaError::IsADirectory)
    ));
    meta.rename(u.id, b.id, docs.id, "A", Overwrite::Posix).await.unwrap();
    assert_eq!(
        refcount(&meta, &content("x")).await,
        5,
        "the replaced file released its content"
    );
    assert_eq!(meta.path_of(u.id, moved.id).await.unwrap(), "/docs/sub/renamed");

    // Copy of a directory: new entries, same content, counts raised.
    let copy = meta.copy(u.id, docs.id, root.id, "docs2", Overwrite::No).await.unwrap();
    assert_ne!(copy.id, docs.id);
    assert_eq!(refcount(&meta, &content("x")).await, 10);
    let sub2 = meta.lookup(u.id, copy.id, "sub").await.unwrap().unwrap();
    assert!(meta.lookup(u.id, sub2.id, "renamed").await.unwrap().is_some());
    assert!(matches!(
        meta.copy(u.id, docs.id, sub.id, "x", Overwrite::No).await,
        Err(MetaError::Cycle)
    ));

    // Delete: not empty without recursion; recursive releases every reference.
    assert!(matches!(
        meta.delete(u.id, docs.id, false).await,
        Err(MetaError::NotEmpty)
    ));
    let stats = meta.delete(u.id, docs.id, true).await.unwrap();
    assert_eq!(stats.entries, 7, "docs, sub and five files");
    assert_eq!(refcount(&meta, &content("x")).await, 5);
    let stats = meta.delete(u.id, copy.id, true).await.unwrap();
    assert_eq!(stats.released, 1);
    let row = meta.content(&content("x").sha1).await.unwrap().unwrap();
    assert_eq!(row.refcount, 0);
    assert!(row.zero_since.is_some(), "grace period started");
    assert!(matches!(meta.delete(u.id, root.id, true).await, Err(MetaError::Root)));
    meta.close().await;
    db.cleanup().await;
}

async fn isolation(backend: Backend) {
    let Some((meta, db)) = store(backend).await else { return };
    let a = meta.create_user("owner", "h", false).await.unwrap();
    let b = meta.create_user("intruder", "h", false).await.unwrap();
    let ra = meta.root(a.id).await.unwrap();
    let rb = meta.root(b.id).await.unwrap();
    let f = put(&meta, a.id, ra.id, "secret", &content("s")).await.unwrap();
    assert!(meta.entry(b.id, f.id).await.unwrap().is_none());
    assert!(matches!(meta.delete(b.id, f.id, false).await, Err(MetaError::NotFound)));
    assert!(matches!(
        meta.rename(b.id, f.id, rb.id, "mine", Overwrite::No).await,
        Err(MetaError::NotFound)
    ));
    assert!(matches!(
        meta.copy(b.id, f.id, rb.id, "mine", Overwrite::No).await,
        Err(MetaError::NotFound)
    ));
    assert!(matches!(
        meta.mkdir(b.id, ra.id, "x", 0o755).await,
        Err(MetaError::NotFound)
    ));
    assert!(meta
        .newest_with_content(b.id, &content("s").sha1)
        .await
        .unwrap()
        .is_none());
    assert!(matches!(
        put(&meta, b.id, ra.id, "x", &content("s")).await,
        Err(MetaError::NotFound)
    ));
    assert_eq!(
        refcount(&meta, &content("s")).await,
        1,
        "a refused commit raised no count"
    );
    meta.close().await;
    db.cleanup().await;
}

async fn content_lifecycle(backend: Backend) {
    let Some((meta, db)) = store(backend).await else { return };
    let u = meta.create_user("carol", "h", false).await.unwrap();
    let root = meta.root(u.id).await.unwrap();
    let c = content("payload");

    // Replace keeps the entry id and moves the reference.
    let f = put(&meta, u.id, root.id, "f", &c).await.unwrap();
    let c2 = content("other");
    let req = CommitFile {
        owner: u.id,
        parent: root.id,
        name: "f".into(),
        content: c2.clone(),
        conflict: Conflict::Replace,
        mode: 0o644,
        mtime: Some(1234),
    };
    let f2 = meta.commit_file(&req, &no_place).await.unwrap();
    assert_eq!(f2.id, f.id);
    assert_eq!((f2.sha1.as_deref(), f2.mtime), (Some(c2.sha1.as_str()), 1234));
    assert_eq!(refcount(&meta, &c).await, 0);
    assert_eq!(refcount(&meta, &c2).await, 1);
    // Rename conflict policy.
    let req = CommitFile {
        conflict: Conflict::Rename,
        name: "f".into(),
        ..req
    };
    assert_eq!(meta.commit_file(&req, &no_place).await.unwrap().name, "f (1)");

    // A dedup hit with a different SHA-256 is a collision: refused, counts unchanged.
    let evil = NewContent {
        sha256: Some("f".repeat(64)),
        ..c2.clone()
    };
    let req = CommitFile {
        content: evil,
        name: "evil".into(),
        ..req
    };
    assert!(matches!(
        meta.commit_file(&req, &no_place).await,
        Err(MetaError::Collision)
    ));
    assert_eq!(refcount(&meta, &c2).await, 2);
    assert!(meta.lookup(u.id, root.id, "evil").await.unwrap().is_none());

    // Garbage collection: nothing before the grace period ends; the bytes are removed
    // under the row lock; a re-upload during the grace period revives the row.
    assert!(meta.gc_candidates(0, 10).await.unwrap().is_empty());
    let far = filestore::meta::now_ms() + 60_000;
    assert_eq!(meta.gc_candidates(far, 10).await.unwrap(), vec![c.sha1.clone()]);
    let removed = AtomicUsize::new(0);
    let remove = |_: &Content| {
        removed.fetch_add(1, Ordering::SeqCst);
        Ok(())
    };
    put(&meta, u.id, root.id, "revived", &c).await.unwrap();
    assert!(
        meta.gc_collect(&c.sha1, far, &remove).await.unwrap().is_none(),
        "revived content is kept"
    );
    let rv = meta.lookup(u.id, root.id, "revived").await.unwrap().unwrap();
    meta.delete(u.id, rv.id, false).await.unwrap();
    assert!(meta.gc_collect(&c.sha1, far, &remove).await.unwrap().is_some());
    assert_eq!(removed.load(Ordering::SeqCst), 1);
    assert!(meta.content(&c.sha1).await.unwrap().is_none());
    // A failing removal keeps the row (the transaction rolls back).
    let f3 = put(&meta, u.id, root.id, "again", &c).await.unwrap();
    meta.delete(u.id, f3.id, false).await.unwrap();
    let fail = |_: &Content| Err(std::io::Error::other("disk on fire"));
    assert!(meta.gc_collect(&c.sha1, far, &fail).await.is_err());
    assert!(meta.content(&c.sha1).await.unwrap().is_some());
    // A commit whose placement fails leaves nothing, and the next write goes through (the
    // failed transaction was rolled back, not left open on the connection).
    let fresh = content("never placed");
    let req = file_req(u.id, root.id, "unplaced", &fresh, Conflict::Fail);
    assert!(matches!(meta.commit_file(&req, &fail).await, Err(MetaError::Io(_))));
    assert!(meta.lookup(u.id, root.id, "unplaced").await.unwrap().is_none());
    assert!(meta.content(&fresh.sha1).await.unwrap().is_none());
    put(&meta, u.id, root.id, "placed", &fresh).await.unwrap();
    assert_eq!(refcount(&meta, &fresh).await, 1);
    meta.close().await;
    db.cleanup().await;
}

/// Many commits of the same new content at once: one placement wins per transaction that
/// saw it missing, every entry exists, the count is exact.
async fn concurrent_dedup(backend: Backend) {
    let Some((meta, db)) = store(backend).await else { return };
    let u = meta.create_user("dave", "h", false).await.unwrap();
    let root = meta.root(u.id).await.unwrap();
    let c = content("same bytes");
    let placed = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..24 {
        let (meta, c, placed) = (meta.clone(), c.clone(), placed.clone());
        tasks.push(tokio::spawn(async move {
            let req = CommitFile {
                owner: u.id,
                parent: root.id,
                name: format!("copy-{i}"),
                content: c,
                conflict: Conflict::Fail,
                mode: 0o644,
                mtime: None,
            };
            let place = move |_: &Content| {
                placed.fetch_add(1, Ordering::SeqCst);
                Ok(())
            };
            meta.commit_file(&req, &place).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(refcount(&meta, &c).await, 24);
    assert_eq!(meta.list(u.id, root.id, "", 100).await.unwrap().len(), 24);
    assert!(
        placed.load(Ordering::SeqCst) >= 24,
        "every commit made sure the bytes exist"
    );
    meta.close().await;
    db.cleanup().await;
}

/// A write dropped in the middle (a client that disconnects) must not leave its pooled
/// connection inside an open transaction: later reads on that connection would see an old
/// snapshot (a directory created since looks missing) and its writes would never commit.
async fn cancelled_writes(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    // One connection, so every statement below runs on the one the cancelled write used.
    let meta = MetaStore::connect(&db.url, 1).await.expect("connect");
    let other = MetaStore::connect(&db.url, 1).await.expect("connect");
    let u = meta.create_user("u", "h", false).await.unwrap();
    let root = meta.root(u.id).await.unwrap();
    for i in 0..20 {
        // Polled once, then dropped: cancelled wherever its first await leaves it.
        let name = format!("c{i}");
        let cancelled = meta.mkdir(u.id, root.id, &name, 0o755);
        let _ = futures_util::FutureExt::now_or_never(cancelled);
        assert!(meta.lookup(u.id, root.id, "x").await.unwrap().is_none());
        let made = other.mkdir(u.id, root.id, &format!("d{i}"), 0o755).await.unwrap();
        let seen = meta.lookup(u.id, root.id, &format!("d{i}")).await.unwrap();
        assert_eq!(
            seen.map(|e| e.id),
            Some(made.id),
            "round {i}: a committed directory is visible"
        );
        let mine = meta.mkdir(u.id, root.id, &format!("e{i}"), 0o755).await.unwrap();
        let seen = other.lookup(u.id, root.id, &format!("e{i}")).await.unwrap();
        assert_eq!(seen.map(|e| e.id), Some(mine.id), "round {i}: a write is committed");
    }
    meta.close().await;
    other.close().await;
    db.cleanup().await;
}

/// Adding, removing or renaming an entry sets its directory's mtime and ctime to the
/// time of the change (POSIX); replacing a file's content leaves the directory alone.
/// Each directory is first given an old mtime, so no clock has to tick between steps.
async fn directory_times(backend: Backend) {
    let Some((meta, db)) = store(backend).await else { return };
    let u = meta.create_user("times", "h", false).await.unwrap();
    let root = meta.root(u.id).await.unwrap();
    let a = meta.mkdir(u.id, root.id, "a", 0o755).await.unwrap();
    let b = meta.mkdir(u.id, root.id, "b", 0o755).await.unwrap();
    let age = |id: i64| {
        let meta = &meta;
        async move {
            meta.set_attrs(u.id, id, None, Some(1)).await.unwrap();
            filestore::meta::now_ms()
        }
    };
    let times = |id: i64| {
        let meta = &meta;
        async move {
            let e = meta.entry(u.id, id).await.unwrap().unwrap();
            (e.mtime, e.ctime)
        }
    };
    let changed = |(mtime, ctime): (i64, i64), since: i64, what: &str| {
        assert!(
            mtime >= since && ctime == mtime,
            "{what}: mtime {mtime}, ctime {ctime}, since {since}"
        );
    };

    let t = age(a.id).await;
    let sub = meta.mkdir(u.id, a.id, "sub", 0o755).await.unwrap();
    changed(times(a.id).await, t, "mkdir");
    let t = age(a.id).await;
    let f = put(&meta, u.id, a.id, "f", &content("one")).await.unwrap();
    changed(times(a.id).await, t, "create");
    age(a.id).await;
    let replace = CommitFile {
        owner: u.id,
        parent: a.id,
        name: "f".into(),
        content: content("two"),
        conflict: Conflict::Replace,
        mode: 0o644,
        mtime: None,
    };
    meta.commit_file(&replace, &no_place).await.unwrap();
    assert_eq!(times(a.id).await.0, 1, "a new content is no change of the directory");
    let (ta, tb) = (age(a.id).await, age(b.id).await);
    meta.rename(u.id, f.id, b.id, "g", Overwrite::Posix).await.unwrap();
    changed(times(a.id).await, ta, "rename out of");
    changed(times(b.id).await, tb, "rename into");
    let t = age(b.id).await;
    meta.rename(u.id, f.id, b.id, "h", Overwrite::Posix).await.unwrap();
    changed(times(b.id).await, t, "rename within");
    let t = age(b.id).await;
    meta.delete(u.id, f.id, false).await.unwrap();
    changed(times(b.id).await, t, "unlink");
    let t = age(a.id).await;
    meta.delete(u.id, sub.id, false).await.unwrap();
    changed(times(a.id).await, t, "rmdir");
    let t = age(root.id).await;
    meta.copy(u.id, a.id, root.id, "c", Overwrite::No).await.unwrap();
    changed(times(root.id).await, t, "copy into");
    meta.close().await;
    db.cleanup().await;
}

/// A path resolved in one query agrees with a lookup per component, at any depth.
async fn path_resolution(backend: Backend) {
    let Some((meta, db)) = store(backend).await else { return };
    let u = meta.create_user("walker", "h", false).await.unwrap();
    let other = meta.create_user("other", "h", false).await.unwrap();
    let root = meta.root(u.id).await.unwrap();
    // 19 nested directories (more than one query's worth), a file at the bottom.
    let mut names = Vec::new();
    let mut dir = root.clone();
    for i in 0..19 {
        let name = format!("d{i}");
        dir = meta.mkdir(u.id, dir.id, &name, 0o755).await.unwrap();
        names.push(name);
    }
    let file = put(&meta, u.id, dir.id, "f", &content("deep")).await.unwrap();
    names.push("f".into());
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    for depth in 1..=all.len() {
        let mut expect = root.clone();
        for name in &all[..depth] {
            expect = meta.lookup(u.id, expect.id, name).await.unwrap().unwrap();
        }
        let got = meta.resolve_names(u.id, root.id, &all[..depth]).await.unwrap();
        assert_eq!(got, Some(expect), "depth {depth}");
    }
    assert_eq!(
        meta.resolve_names(u.id, root.id, &all[..]).await.unwrap().unwrap().id,
        file.id
    );
    // A missing component, a file in the middle, another owner: nothing.
    assert_eq!(meta.resolve_names(u.id, root.id, &["d0", "nope"]).await.unwrap(), None);
    let mut through_file = all.clone();
    through_file.push("below");
    assert_eq!(meta.resolve_names(u.id, root.id, &through_file).await.unwrap(), None);
    assert_eq!(meta.resolve_names(other.id, root.id, &all[..3]).await.unwrap(), None);
    meta.close().await;
    db.cleanup().await;
}

/// A resolved path always reflects what another writer of the same database committed
/// before the lookup: another process (a `filestore mount` beside the server) or, on
/// MariaDB, another gateway. On SQLite the lookup runs on the calling thread through a
/// connection of its own (`meta/direct.rs`); it must see each change at once.
async fn resolution_sees_other_writers(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let meta = MetaStore::connect(&db.url, 2).await.expect("connect");
    let other = MetaStore::connect(&db.url, 2).await.expect("connect");
    let u = meta.create_user("reader", "h", false).await.unwrap();
    let root = meta.root(u.id).await.unwrap();
    let dir = other.mkdir(u.id, root.id, "d", 0o755).await.unwrap();
    for i in 0..20 {
        let name = format!("f{i}");
        let path = ["d", name.as_str()];
        assert_eq!(
            meta.resolve_names(u.id, root.id, &path).await.unwrap(),
            None,
            "round {i}"
        );
        let made = put(&other, u.id, dir.id, &name, &content(&format!("one{i}")))
            .await
            .unwrap();
        let seen = meta.resolve_names(u.id, root.id, &path).await.unwrap();
        assert_eq!(
            seen.as_ref().map(|e| (e.id, e.sha1.clone())),
            Some((made.id, made.sha1.clone()))
        );
        let replace = CommitFile {
            owner: u.id,
            parent: dir.id,
            name: name.clone(),
            content: content(&format!("two{i}")),
            conflict: Conflict::Replace,
            mode: 0o644,
            mtime: None,
        };
        let replaced = other.commit_file(&replace, &no_place).await.unwrap();
        let seen = meta.resolve_names(u.id, root.id, &path).await.unwrap().unwrap();
        assert_eq!(seen.sha1, replaced.sha1, "round {i}: the new content, not the old");
        assert_eq!(seen.size, replaced.size);
        other.delete(u.id, made.id, false).await.unwrap();
        assert_eq!(
            meta.resolve_names(u.id, root.id, &path).await.unwrap(),
            None,
            "round {i}: deleted"
        );
    }
    // Reads by id, of content rows and of tokens see the other store's writes at once too.
    let f = put(&other, u.id, dir.id, "by-id", &content("by id")).await.unwrap();
    let seen = meta.entry(u.id, f.id).await.unwrap().unwrap();
    assert_eq!((seen.name.as_str(), seen.sha1.clone()), ("by-id", f.sha1.clone()));
    assert_eq!(
        meta.lookup(u.id, dir.id, "by-id").await.unwrap().map(|e| e.id),
        Some(f.id)
    );
    let c = meta.content(f.sha1.as_deref().unwrap()).await.unwrap().unwrap();
    assert_eq!((c.size, c.refcount), (5, 1));
    // Listings too, short ones (read on the calling thread) and long ones (blocking pool).
    for limit in [10, 1000] {
        let names: Vec<String> = meta
            .list(u.id, dir.id, "", limit)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, vec!["by-id".to_string()], "limit {limit}");
        assert!(
            meta.list(u.id + 1, dir.id, "", limit).await.unwrap().is_empty(),
            "another owner's directory"
        );
    }
    assert!(
        meta.entry(u.id + 1, f.id).await.unwrap().is_none(),
        "another owner's id is not there"
    );
    other.delete(u.id, f.id, false).await.unwrap();
    assert!(meta.entry(u.id, f.id).await.unwrap().is_none());
    assert!(meta.lookup(u.id, dir.id, "by-id").await.unwrap().is_none());
    assert!(meta.list(u.id, dir.id, "", 10).await.unwrap().is_empty());
    assert!(meta.list(u.id, dir.id, "", 1000).await.unwrap().is_empty());
    let c = meta.content(f.sha1.as_deref().unwrap()).await.unwrap().unwrap();
    assert_eq!(c.refcount, 0, "the released reference shows at once");
    let now = filestore::meta::now_ms();
    other.insert_token("tokenhash", u.id, now + 60_000).await.unwrap();
    assert_eq!(
        meta.user_by_token("tokenhash", now).await.unwrap().map(|u| u.id),
        Some(u.id)
    );
    assert!(
        meta.user_by_token("tokenhash", now + 60_000).await.unwrap().is_none(),
        "expired"
    );
    other.delete_token("tokenhash").await.unwrap();
    assert!(
        meta.user_by_token("tokenhash", now).await.unwrap().is_none(),
        "signed out"
    );
    meta.close().await;
    other.close().await;
    db.cleanup().await;
}

/// A write transaction that finds another process's write transaction in progress (a
/// `filestore mount` or a command-line tool on the same database) waits for it and then
/// commits: on SQLite the store's writer connection never waits on the Tokio worker, so it
/// goes to wait elsewhere, and must not fail with SQLITE_BUSY instead.
async fn waits_for_another_writer(backend: Backend) {
    use sqlx::Connection as _;
    let Some((meta, db)) = store(backend).await else { return };
    let u = meta.create_user("waiter", "hash", false).await.unwrap();
    let root = meta.root(u.id).await.unwrap();

    let mut other = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    let begin = match backend {
        Backend::Sqlite => "BEGIN IMMEDIATE",
        Backend::MySql => "BEGIN",
    };
    sqlx::raw_sql(begin).execute(&mut other).await.unwrap();
    // On MariaDB this takes the root directory's row lock, which the mkdir's directory
    // touch needs; on SQLite the transaction holds the database's write lock.
    sqlx::query("UPDATE entries SET mtime = 7 WHERE id = ?")
        .bind(root.id)
        .execute(&mut other)
        .await
        .unwrap();

    let mkdir = meta.mkdir(u.id, root.id, "after", 0o755);
    tokio::pin!(mkdir);
    // One poll: the lock is held, so the mkdir cannot have finished (it would have, with
    // an error, if it gave up at once).
    tokio::select! {
        biased;
        done = &mut mkdir => panic!("a write finished while another held the lock: {done:?}"),
        _ = std::future::ready(()) => {}
    }
    sqlx::raw_sql("COMMIT").execute(&mut other).await.unwrap();
    let dir = mkdir.await.expect("the write commits once the other transaction has");
    let root_after = meta.root(u.id).await.unwrap();
    assert_eq!(
        root_after.mtime, dir.ctime,
        "the mkdir touched its parent after the other commit"
    );
    assert_ne!(root_after.mtime, 7);
    other.close().await.unwrap();
    meta.close().await;
    db.cleanup().await;
}

both_backends! {
    resolution_sees_other_writers_at_once => resolution_sees_other_writers;
    paths_resolve_in_one_query => path_resolution;
    cancelled_writes_leave_no_open_transaction => cancelled_writes;
    directory_times_follow_their_entries => directory_times;
    accounts => accounts_and_tokens;
    tree => tree_operations;
    owners_are_isolated => isolation;
    content => content_lifecycle;
    dedup_under_concurrency => concurrent_dedup;
    a_write_waits_for_another_writer => waits_for_another_writer;
}
