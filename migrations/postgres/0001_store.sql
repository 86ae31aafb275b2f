-- The store's trees (see src/store/mod.rs for each tree's keys and values):
-- one row per key, bytes as the store writes them, ordered bytewise.
CREATE TABLE kv (
    tree  text  NOT NULL,
    key   bytea NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (tree, key)
);

-- Ids that are never handed out twice (history entry keys).
CREATE SEQUENCE kv_ids;

-- One row rewritten by the store's write probe (proves writes commit).
CREATE TABLE probe (
    id integer     PRIMARY KEY,
    at timestamptz NOT NULL
);
