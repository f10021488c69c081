-- Resumable chunked-upload sessions of the embedded default (production keeps them in
-- Redis). A session is bound to its owner; parts are recorded idempotently.
CREATE TABLE upload_sessions (
    id          CHAR(32)      NOT NULL PRIMARY KEY,
    owner       BIGINT        NOT NULL,
    sha1        CHAR(40)      NOT NULL,
    size        BIGINT        NOT NULL,
    chunk_size  BIGINT        NOT NULL,
    chunk_count BIGINT        NOT NULL,
    target      VARCHAR(4096) NOT NULL,
    created_at  BIGINT        NOT NULL,
    expires_at  BIGINT        NOT NULL,
    KEY upload_sessions_resume (owner, sha1, size),
    KEY upload_sessions_expiry (expires_at),
    CONSTRAINT upload_sessions_owner_fk FOREIGN KEY (owner) REFERENCES users(id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE upload_parts (
    session_id CHAR(32) NOT NULL,
    idx        BIGINT   NOT NULL,
    PRIMARY KEY (session_id, idx),
    CONSTRAINT upload_parts_session_fk FOREIGN KEY (session_id) REFERENCES upload_sessions(id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
