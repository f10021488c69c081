-- WebDAV dead properties (PROPPATCH), per entry. Namespace and name are raw bytes so
-- that matching is exact; the value is the property's XML as the client sent it.
CREATE TABLE dead_props (
    entry_id BIGINT         NOT NULL,
    ns       VARBINARY(255) NOT NULL,
    name     VARBINARY(255) NOT NULL,
    xml      MEDIUMBLOB     NOT NULL,
    PRIMARY KEY (entry_id, ns, name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
