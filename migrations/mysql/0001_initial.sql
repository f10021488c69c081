-- Initial schema: accounts, bearer tokens, deduplicated content, per-user tree.
-- Timestamps are milliseconds since the Unix epoch (portable between SQLite and MySQL).
-- Every integer is BIGINT so that the sqlx Any driver decodes it as i64 in both dialects.

CREATE TABLE users (
    id            BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name          VARCHAR(64)  CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    password_hash VARCHAR(255) NOT NULL,
    is_admin      BIGINT       NOT NULL DEFAULT 0,
    disabled      BIGINT       NOT NULL DEFAULT 0,
    created_at    BIGINT       NOT NULL,
    last_active   BIGINT       NOT NULL,
    UNIQUE KEY users_name (name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- Only the SHA-256 of a token is stored: a database dump does not hand out sessions.
CREATE TABLE tokens (
    token_hash CHAR(64) NOT NULL PRIMARY KEY,
    user_id    BIGINT   NOT NULL,
    created_at BIGINT   NOT NULL,
    expires_at BIGINT   NOT NULL,
    KEY tokens_user (user_id),
    KEY tokens_expiry (expires_at),
    CONSTRAINT tokens_user_fk FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- One row per distinct content. sha256 is the second, collision-resistant hash compared
-- on every dedup hit. zero_since is set when refcount drops to 0 (start of the grace period).
CREATE TABLE files (
    sha1       CHAR(40)      NOT NULL PRIMARY KEY,
    sha256     CHAR(64)      NOT NULL,
    size       BIGINT        NOT NULL,
    refcount   BIGINT        NOT NULL,
    store      VARCHAR(16)   NOT NULL DEFAULT 'local',
    object_key VARCHAR(1024) NULL,
    zero_since BIGINT        NULL,
    created_at BIGINT        NOT NULL,
    KEY files_gc (refcount, zero_since)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- The per-user tree. The root of each user has parent NULL and an empty name.
-- kind: 1 = directory, 2 = regular file. name is VARBINARY so that ordering and
-- uniqueness are byte-exact (no case folding, no PAD SPACE).
CREATE TABLE entries (
    id         BIGINT         NOT NULL AUTO_INCREMENT PRIMARY KEY,
    owner      BIGINT         NOT NULL,
    parent     BIGINT         NULL,
    name       VARBINARY(255) NOT NULL,
    kind       BIGINT         NOT NULL,
    sha1       CHAR(40)       NULL,
    size       BIGINT         NOT NULL DEFAULT 0,
    mode       BIGINT         NOT NULL,
    mtime      BIGINT         NOT NULL,
    ctime      BIGINT         NOT NULL,
    created_at BIGINT         NOT NULL,
    UNIQUE KEY entries_name (owner, parent, name),
    KEY entries_recent (owner, kind, created_at),
    KEY entries_content (owner, sha1),
    KEY entries_sha1 (sha1),
    CONSTRAINT entries_owner_fk FOREIGN KEY (owner) REFERENCES users(id),
    CONSTRAINT entries_sha1_fk FOREIGN KEY (sha1) REFERENCES files(sha1)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- Server-wide values shared by every gateway (for example the download-ticket key).
CREATE TABLE settings (
    name  VARCHAR(64) NOT NULL PRIMARY KEY,
    value TEXT        NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
