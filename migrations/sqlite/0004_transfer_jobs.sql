-- The transfer outbox: one job per new content, written in the same transaction as the
-- content row. state: pending (not yet handed to the queue), published (in RabbitMQ),
-- done, dead (failed max_attempts times; `filestore transfer retry` revives it).
CREATE TABLE transfer_jobs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    sha1            TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT    NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL
);
CREATE INDEX transfer_jobs_due ON transfer_jobs(state, next_attempt_at);
CREATE INDEX transfer_jobs_sha1 ON transfer_jobs(sha1, state);
