-- The transfer outbox: one job per new content, written in the same transaction as the
-- content row. state: pending (not yet handed to the queue), published (in RabbitMQ),
-- done, dead (failed max_attempts times; `filestore transfer retry` revives it).
CREATE TABLE transfer_jobs (
    id              BIGINT        NOT NULL AUTO_INCREMENT PRIMARY KEY,
    sha1            CHAR(40)      NOT NULL,
    state           VARCHAR(16)   NOT NULL,
    attempts        BIGINT        NOT NULL DEFAULT 0,
    last_error      VARCHAR(1024) NULL,
    created_at      BIGINT        NOT NULL,
    updated_at      BIGINT        NOT NULL,
    next_attempt_at BIGINT        NOT NULL,
    KEY transfer_jobs_due (state, next_attempt_at),
    KEY transfer_jobs_sha1 (sha1, state)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
