-- Small contents live in their row (store = 'inline'): one transaction stores the bytes and
-- the entry that names them, with no staging file and no fsync of its own (see
-- `blob::INLINE_MAX` and src/drive.rs). NULL for content kept elsewhere.
ALTER TABLE files ADD COLUMN data BLOB NULL;
