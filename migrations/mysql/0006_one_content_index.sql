-- One index over entries' content instead of two (see the SQLite migration of the same
-- name). Created first: it takes over the foreign key on `sha1` from `entries_sha1`.
CREATE INDEX entries_by_content ON entries (sha1, owner, kind, created_at);
DROP INDEX entries_content ON entries;
DROP INDEX entries_sha1 ON entries;
