-- Resumable chunked-upload sessions of the embedded default (production keeps them in
-- Redis). A session is bound to its owner; parts are recorded idempotently.
CREATE TABLE upload_sessions (
    id          TEXT    NOT NULL PRIMARY KEY,
    owner       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    sha1        TEXT    NOT NULL,
    size        INTEGER NOT NULL,
    chunk_size  INTEGER NOT NULL,
    chunk_count INTEGER NOT NULL,
    target      TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX upload_sessions_resume ON upload_sessions(owner, sha1, size);
CREATE INDEX upload_sessions_expiry ON upload_sessions(expires_at);

CREATE TABLE upload_parts (
    session_id TEXT    NOT NULL REFERENCES upload_sessions(id) ON DELETE CASCADE,
    idx        INTEGER NOT NULL,
    PRIMARY KEY (session_id, idx)
);
