-- WebDAV dead properties (PROPPATCH), per entry. Namespace and name are raw bytes so
-- that matching is exact; the value is the property's XML as the client sent it.
CREATE TABLE dead_props (
    entry_id INTEGER NOT NULL,
    ns       BLOB    NOT NULL,
    name     BLOB    NOT NULL,
    xml      BLOB    NOT NULL,
    PRIMARY KEY (entry_id, ns, name)
);
