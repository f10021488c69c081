-- One index over entries' content instead of two. `entries_content (owner, sha1)` and
-- `entries_sha1 (sha1)` each put a page at a random place into every commit that adds or
-- removes a file (SHA-1s are random), and the pages written per small PUT are most of its
-- cost (docs/BENCHMARKS.md). This one serves both: the foreign key's lookups by `sha1`
-- (leftmost column), and a user's newest file with given content (`sha1 = ? AND owner = ?
-- AND kind = ?`, in `created_at` order), without sorting the many empty files one user
-- may have.
CREATE INDEX entries_by_content ON entries(sha1, owner, kind, created_at);
DROP INDEX entries_content;
DROP INDEX entries_sha1;
