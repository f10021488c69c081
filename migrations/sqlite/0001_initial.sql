-- Initial schema: accounts, bearer tokens, deduplicated content, per-user tree.
-- Timestamps are milliseconds since the Unix epoch (portable between SQLite and MySQL).

CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    is_admin      INTEGER NOT NULL DEFAULT 0,
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    last_active   INTEGER NOT NULL
);

-- Only the SHA-256 of a token is stored: a database dump does not hand out sessions.
CREATE TABLE tokens (
    token_hash TEXT    NOT NULL PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX tokens_user ON tokens(user_id);
CREATE INDEX tokens_expiry ON tokens(expires_at);

-- One row per distinct content. sha256 is the second, collision-resistant hash compared
-- on every dedup hit. zero_since is set when refcount drops to 0 (start of the grace period).
CREATE TABLE files (
    sha1       TEXT    NOT NULL PRIMARY KEY,
    sha256     TEXT    NOT NULL,
    size       INTEGER NOT NULL,
    refcount   INTEGER NOT NULL,
    store      TEXT    NOT NULL DEFAULT 'local',
    object_key TEXT    NULL,
    zero_since INTEGER NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX files_gc ON files(refcount, zero_since);

-- The per-user tree. The root of each user has parent NULL and an empty name.
-- kind: 1 = directory, 2 = regular file. name is raw UTF-8 bytes so that ordering and
-- uniqueness are byte-exact in both databases.
CREATE TABLE entries (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    owner      INTEGER NOT NULL REFERENCES users(id),
    parent     INTEGER NULL,
    name       BLOB    NOT NULL,
    kind       INTEGER NOT NULL,
    sha1       TEXT    NULL REFERENCES files(sha1),
    size       INTEGER NOT NULL DEFAULT 0,
    mode       INTEGER NOT NULL,
    mtime      INTEGER NOT NULL,
    ctime      INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (owner, parent, name)
);
CREATE INDEX entries_recent ON entries(owner, kind, created_at);
CREATE INDEX entries_content ON entries(owner, sha1);
CREATE INDEX entries_sha1 ON entries(sha1);

-- Server-wide values shared by every gateway (for example the download-ticket key).
CREATE TABLE settings (
    name  TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
);
